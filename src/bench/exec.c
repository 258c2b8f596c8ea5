/* exec.c: the command scenarios against an execd API (OpenSandbox protocol ref 2.3-2.8):
 *   exec   --requests short commands (default `true`) at --concurrency, each POST /command on
 *          its own connection; latency to the response headers ("first_byte"), to the first
 *          event ("first_event", execd's `init`) and to the final event ("completion":
 *          execution_complete or error; the bench does not wait for execd's ~1 s end-of-stream
 *          grace, it closes at the final event).
 *   relay  --streams bulk-output commands at once (default 200k lines of 50 bytes each);
 *          stdout lines/s and MB/s as received by the client.
 * --url may list several base URLs separated by commas (e.g. the endpoints of existing
 * sandboxes, "host:port/sandboxes/<id>/proxy/44772"); requests go round-robin. The command is
 * sent as {"command": ...} (JSON-escaped). Results: see bench_doc_new() plus counts, errors,
 * throughput, latency_ms, exit_codes, cpu. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bconn.h"
#include "bench.h"
#include "breq.h"
#include "bstat.h"
#include "hist.h"
#include "sandgate/common.h"
#include "sandgate/config.h"

typedef struct ex_cfg {
    const char *url, *command, *header, *token, *out;
    int64_t requests, concurrency, server_pid;
    uint64_t timeout_ms;
    bool quiet, server_descendants;
} ex_cfg_t;

typedef struct ex_run ex_run_t;
typedef struct ex_slot {
    breq_t q;
    ex_run_t *run;
    int busy;
} ex_slot_t;

struct ex_run {
    int relay;
    ex_cfg_t cfg;
    uv_loop_t *loop;
    bc_url_t *urls;
    size_t nurls;
    char *body, *extra;
    size_t body_len;
    ex_slot_t *slots;
    uint32_t nslots;
    uint64_t started, finished, ok, errors, http_errors, conn_errors, proto_errors, timeouts,
        nonzero_exit;
    uint64_t out_lines, err_lines, out_bytes, wire_bytes, events;
    json_t *exit_codes;
    bh_hist_t first_byte, first_event, completion;
    uv_timer_t sweep;
    int stopping;
    uint64_t t0, t1;
    bs_proc_t self0, self1, srv0, srv1;
};

static void ex_next(ex_run_t *r, ex_slot_t *s);

static void ex_done(breq_t *q)
{
    ex_slot_t *s = q->ud;
    ex_run_t *r = s->run;
    r->finished++;
    r->out_lines += q->out_lines;
    r->err_lines += q->err_lines;
    r->out_bytes += q->out_bytes;
    r->wire_bytes += q->wire_bytes;
    r->events += q->events;
    if (q->t_headers) bh_record(&r->first_byte, q->t_headers - q->t_start);
    if (q->t_first_event) bh_record(&r->first_event, q->t_first_event - q->t_start);
    int good = !q->err && q->status == 200 && q->final;
    if (good) {
        bh_record(&r->completion, q->t_final - q->t_start);
        r->ok++;
        char k[32];
        if (q->exit_code == BREQ_NO_EXIT)
            snprintf(k, sizeof(k), "unknown");
        else
            snprintf(k, sizeof(k), "%lld", (long long)q->exit_code);
        json_t *v = json_object_get(r->exit_codes, k);
        json_object_set_new(r->exit_codes, k, json_integer(v ? json_integer_value(v) + 1 : 1));
        if (q->exit_code != 0) r->nonzero_exit++;
    } else {
        r->errors++;
        if (q->err == SG_ETIMEDOUT)
            r->timeouts++;
        else if (q->status && q->status != 200)
            r->http_errors++;
        else if (q->err == SG_EPROTO || (q->status == 200 && !q->final))
            r->proto_errors++;
        else
            r->conn_errors++;
        if (r->errors <= 5)
            fprintf(stderr, "sandgate-bench: request failed: status %d, %s%s%.200s\n", q->status,
                    q->err ? sg_strerror(q->err) : "no final event", q->body_len ? ": " : "",
                    q->body ? q->body : "");
    }
    breq_free(q);
    s->busy = 0;
    ex_next(r, s);
}

static void ex_maybe_end(ex_run_t *r)
{
    if (r->finished < r->started || r->started < (uint64_t)r->cfg.requests) return;
    if (r->stopping) return;
    r->stopping = 1;
    r->t1 = sg_now_ns();
    bs_self_sample(&r->self1);
    bs_proc_sample_depth((int)r->cfg.server_pid, r->cfg.server_descendants ? 5 : 0, &r->srv1);
    uv_close((uv_handle_t *)&r->sweep, NULL);
}

static void ex_next(ex_run_t *r, ex_slot_t *s)
{
    if (r->started >= (uint64_t)r->cfg.requests) {
        ex_maybe_end(r);
        return;
    }
    const bc_url_t *u = &r->urls[r->started % r->nurls];
    r->started++;
    s->busy = 1;
    breq_start(r->loop, &s->q, u, "POST", r->extra, r->body, r->body_len, 1, ex_done, s);
}

static void ex_sweep(uv_timer_t *t)
{
    ex_run_t *r = t->data;
    uint64_t now = sg_now_ns();
    for (uint32_t i = 0; i < r->nslots; i++) {
        ex_slot_t *s = &r->slots[i];
        if (s->busy && !s->q.c.closing && now - s->q.t_start > r->cfg.timeout_ms * 1000000u)
            breq_cancel(&s->q, SG_ETIMEDOUT);
    }
}

#define OPT(name, type, field, def, min, max, help)                                                \
    {                                                                                              \
        name, NULL, type, offsetof(ex_cfg_t, field), def, min, max, NULL, help                     \
    }

static const sg_opt_t exec_opts[] = {
    OPT("url", SG_OPT_STRING, url, "http://127.0.0.1:44772", 0, 0,
        "execd base URL(s), comma-separated (POST <url>/command)"),
    OPT("command", SG_OPT_STRING, command, "true", 0, 0, "shell command each request runs"),
    OPT("requests", SG_OPT_INT, requests, "1000", 1, 100000000, "commands to run in total"),
    OPT("concurrency", SG_OPT_INT, concurrency, "16", 1, 100000, "commands in flight"),
    OPT("timeout", SG_OPT_DURATION, timeout_ms, "60s", 1, 86400000, "per request"),
    OPT("header", SG_OPT_STRING, header, NULL, 0, 0, "one extra request header, 'Name: value'"),
    OPT("token", SG_OPT_STRING, token, NULL, 0, 0, "X-EXECD-ACCESS-TOKEN value"),
    OPT("server-pid", SG_OPT_INT, server_pid, "0", 0, 0,
        "server process for CPU time (with descendants)"),
    OPT("server-descendants", SG_OPT_BOOL, server_descendants, "true", 0, 0,
        "count the server's descendants"),
    OPT("out", SG_OPT_STRING, out, "-", 0, 0, "result JSON file ('-': stdout)"),
    OPT("quiet", SG_OPT_BOOL, quiet, "false", 0, 0, "no human summary on stderr"),
};

static const sg_opt_t relay_opts[] = {
    OPT("url", SG_OPT_STRING, url, "http://127.0.0.1:44772", 0, 0,
        "execd base URL(s), comma-separated (POST <url>/command)"),
    OPT("command", SG_OPT_STRING, command,
        "yes 'sandgate relay benchmark line 0123456789abcdef' | head -n 200000", 0, 0,
        "bulk-output shell command each stream runs"),
    OPT("streams", SG_OPT_INT, concurrency, "1", 1, 100000, "commands streamed at once"),
    OPT("requests", SG_OPT_INT, requests, "0", 0, 100000000, "commands in total (0: = --streams)"),
    OPT("timeout", SG_OPT_DURATION, timeout_ms, "300s", 1, 86400000, "per stream"),
    OPT("header", SG_OPT_STRING, header, NULL, 0, 0, "one extra request header, 'Name: value'"),
    OPT("token", SG_OPT_STRING, token, NULL, 0, 0, "X-EXECD-ACCESS-TOKEN value"),
    OPT("server-pid", SG_OPT_INT, server_pid, "0", 0, 0,
        "server process for CPU time (with descendants)"),
    OPT("server-descendants", SG_OPT_BOOL, server_descendants, "true", 0, 0,
        "count the server's descendants (off: a gateway whose children are the sandboxes, or an "
        "execd whose children are the commands)"),
    OPT("out", SG_OPT_STRING, out, "-", 0, 0, "result JSON file ('-': stdout)"),
    OPT("quiet", SG_OPT_BOOL, quiet, "false", 0, 0, "no human summary on stderr"),
};

/* Splits the comma list and appends "/command" to each base. */
static int parse_urls(ex_run_t *r)
{
    char err[512];
    char *list = sg_xmalloc(strlen(r->cfg.url) + 1);
    strcpy(list, r->cfg.url);
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        size_t n = strlen(tok);
        while (n && tok[n - 1] == '/')
            tok[--n] = 0;
        char *full = sg_xmalloc(n + 16);
        snprintf(full, n + 16, "%s/command", tok);
        r->urls = sg_xrealloc(r->urls, (r->nurls + 1) * sizeof(*r->urls));
        rc = bc_url_parse(full, &r->urls[r->nurls], err, sizeof(err));
        free(full);
        if (rc < 0) {
            fprintf(stderr, "sandgate-bench: %s\n", err);
            break;
        }
        r->nurls++;
    }
    free(list);
    if (!rc && !r->nurls) {
        fprintf(stderr, "sandgate-bench: --url is empty\n");
        rc = SG_EINVAL;
    }
    return rc;
}

static int ex_main(int relay, int argc, char **argv)
{
    ex_run_t *r = sg_xcalloc(1, sizeof(*r));
    r->relay = relay;
    int code;
    const sg_opt_t *opts = relay ? relay_opts : exec_opts;
    size_t nopts = relay ? sizeof(relay_opts) / sizeof(relay_opts[0])
                         : sizeof(exec_opts) / sizeof(exec_opts[0]);
    const char *usage =
        relay
            ? "sandgate-bench relay [flags]: bulk command output streamed to the client"
            : "sandgate-bench exec [flags]: many short commands, first-byte and completion latency";
    if (bench_parse(opts, nopts, &r->cfg, argc, argv, usage, &code)) {
        free(r);
        return code;
    }
    if (relay && r->cfg.requests == 0) r->cfg.requests = r->cfg.concurrency;
    if (parse_urls(r) < 0) {
        free(r->urls);
        free(r);
        return 2;
    }
    bs_raise_nofile();
    json_t *b = json_pack("{s:s}", "command", r->cfg.command);
    r->body = json_dumps(b, JSON_COMPACT);
    r->body_len = strlen(r->body);
    json_decref(b);
    size_t xl = 256 + (r->cfg.header ? strlen(r->cfg.header) : 0) +
                (r->cfg.token ? strlen(r->cfg.token) : 0);
    r->extra = sg_xmalloc(xl);
    snprintf(r->extra, xl,
             "Content-Type: application/json\r\nAccept: text/event-stream\r\nConnection: "
             "close\r\n%s%s%s%s%s",
             r->cfg.header ? r->cfg.header : "", r->cfg.header ? "\r\n" : "",
             r->cfg.token ? "X-EXECD-ACCESS-TOKEN: " : "", r->cfg.token ? r->cfg.token : "",
             r->cfg.token ? "\r\n" : "");
    r->exit_codes = json_object();
    bh_init(&r->first_byte);
    bh_init(&r->first_event);
    bh_init(&r->completion);
    r->nslots =
        (uint32_t)(r->cfg.concurrency < r->cfg.requests ? r->cfg.concurrency : r->cfg.requests);
    r->slots = sg_xcalloc(r->nslots, sizeof(*r->slots));

    uv_loop_t loop;
    uv_loop_init(&loop);
    r->loop = &loop;
    uv_timer_init(&loop, &r->sweep);
    r->sweep.data = r;
    uv_timer_start(&r->sweep, ex_sweep, 100, 100);
    bs_self_sample(&r->self0);
    bs_proc_sample_depth((int)r->cfg.server_pid, r->cfg.server_descendants ? 5 : 0, &r->srv0);
    r->t0 = sg_now_ns();
    for (uint32_t i = 0; i < r->nslots; i++) {
        r->slots[i].run = r;
        ex_next(r, &r->slots[i]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int loop_dirty = uv_loop_close(&loop) != 0;
    if (loop_dirty) fprintf(stderr, "sandgate-bench: internal: loop not closed cleanly\n");

    double wall = (double)(r->t1 - r->t0) / 1e9;
    json_t *params =
        json_pack("{s:s,s:s,s:I,s:I,s:I,s:I}", "url", r->cfg.url, "command", r->cfg.command,
                  "requests", (json_int_t)r->cfg.requests, relay ? "streams" : "concurrency",
                  (json_int_t)r->cfg.concurrency, "timeout_ms", (json_int_t)r->cfg.timeout_ms,
                  "server_pid", (json_int_t)r->cfg.server_pid);
    json_t *doc = bench_doc_new(relay ? "relay" : "exec", params);
    json_object_set_new(
        doc, "counts",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "requests", (json_int_t)r->finished, "completed",
                  (json_int_t)r->ok, "nonzero_exit", (json_int_t)r->nonzero_exit, "events",
                  (json_int_t)r->events, "stdout_lines", (json_int_t)r->out_lines, "stderr_lines",
                  (json_int_t)r->err_lines, "output_event_bytes", (json_int_t)r->out_bytes));
    json_object_set_new(doc, "exit_codes", r->exit_codes);
    json_object_set_new(doc, "errors",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "total", (json_int_t)r->errors,
                                  "connect", (json_int_t)r->conn_errors, "http_status",
                                  (json_int_t)r->http_errors, "protocol",
                                  (json_int_t)r->proto_errors, "timeout", (json_int_t)r->timeouts));
    json_object_set_new(
        doc, "throughput",
        json_pack("{s:f,s:f,s:f,s:f,s:f}", "duration_s", wall, "requests_per_s",
                  wall > 0 ? (double)r->ok / wall : 0.0, "lines_per_s",
                  wall > 0 ? (double)(r->out_lines + r->err_lines) / wall : 0.0, "output_mb_per_s",
                  wall > 0 ? (double)r->out_bytes / wall / 1e6 : 0.0, "wire_mb_per_s",
                  wall > 0 ? (double)r->wire_bytes / wall / 1e6 : 0.0));
    json_t *lat = json_object();
    json_object_set_new(lat, "first_byte", bh_to_json(&r->first_byte, 1e6));
    json_object_set_new(lat, "first_event", bh_to_json(&r->first_event, 1e6));
    json_object_set_new(lat, "completion", bh_to_json(&r->completion, 1e6));
    json_object_set_new(doc, "latency_ms", lat);
    json_object_set_new(doc, "cpu",
                        json_pack("{s:o,s:o}", "bench", bs_cpu_json(&r->self0, &r->self1, wall),
                                  "server", bs_cpu_json(&r->srv0, &r->srv1, wall)));
    int ok = r->errors == 0 && r->ok == (uint64_t)r->cfg.requests;
    json_object_set_new(doc, "ok", json_boolean(ok));
    int wrc = bs_write_json(doc, r->cfg.out);
    if (!r->cfg.quiet) {
        fprintf(stderr,
                "%s: %llu/%llu commands completed (%llu non-zero exit), %llu errors, %.2f s\n",
                relay ? "relay" : "exec", (unsigned long long)r->ok,
                (unsigned long long)r->cfg.requests, (unsigned long long)r->nonzero_exit,
                (unsigned long long)r->errors, wall);
        if (r->completion.count)
            fprintf(stderr, "  completion ms: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f\n",
                    bh_percentile(&r->completion, 0.5) / 1e6,
                    bh_percentile(&r->completion, 0.9) / 1e6,
                    bh_percentile(&r->completion, 0.99) / 1e6,
                    bh_percentile(&r->completion, 0.999) / 1e6, r->completion.max / 1e6);
        if (relay && wall > 0)
            fprintf(stderr, "  %.0f lines/s, %.1f MB/s of output events (%.1f MB/s on the wire)\n",
                    (double)(r->out_lines + r->err_lines) / wall, (double)r->out_bytes / wall / 1e6,
                    (double)r->wire_bytes / wall / 1e6);
        fprintf(stderr, "  cpu: bench %.2f s",
                (r->self1.cpu_user_s + r->self1.cpu_sys_s) -
                    (r->self0.cpu_user_s + r->self0.cpu_sys_s));
        if (r->srv0.ok && r->srv1.ok)
            fprintf(stderr, ", server %.2f s",
                    (r->srv1.cpu_user_s + r->srv1.cpu_sys_s) -
                        (r->srv0.cpu_user_s + r->srv0.cpu_sys_s));
        fprintf(stderr, "\n  %s\n", ok ? "ok" : "NOT OK (see errors in the JSON document)");
    }
    json_decref(doc);
    free(r->slots);
    free(r->urls);
    free(r->body);
    free(r->extra);
    free(r);
    return loop_dirty ? 3 : wrc < 0 ? 1 : ok ? 0 : 1;
}

int bench_exec_main(int argc, char **argv)
{
    return ex_main(0, argc, argv);
}
int bench_relay_main(int argc, char **argv)
{
    return ex_main(1, argc, argv);
}
