/* lifecycle.c: the `lifecycle` scenario against an OpenSandbox lifecycle API (protocol ref 1):
 * --sandboxes sandboxes, --concurrency at a time, each going through
 *   create    POST <url>/v1/sandboxes (202; the id from the body)
 *   endpoint  GET  <url>/v1/sandboxes/<id>/endpoints/<execd-port>[?use_server_proxy=true]
 *             -> {"endpoint":"host:port/path" (no scheme), "headers":{...}}
 *   ready     GET  http://<endpoint>/ping until 200, every --poll-interval, for at most
 *             --ready-timeout (a refused connection or a 5xx means "not yet")
 *   exec      POST http://<endpoint>/command {"command": --exec-command}, to the final event
 *   delete    DELETE <url>/v1/sandboxes/<id> (204)
 * A sandbox whose steps fail after create is still deleted (the bench must not leak them).
 * Every step's latency goes into its own histogram, "create_to_ready" is create start to the
 * first 200 /ping (what a user waits for before a sandbox is usable), and "total" is create
 * start to delete end. Requests carry OPEN-SANDBOX-API-KEY when --api-key is set, and the endpoint's headers
 * on the endpoint requests. */
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

enum { ST_CREATE, ST_ENDPOINT, ST_PING, ST_EXEC, ST_DELETE, ST_N };
static const char *step_names[ST_N] = {"create", "endpoint", "ready", "exec", "delete"};

typedef struct lc_cfg {
    const char *url, *api_key, *image, *exec_command, *create_body, *out;
    int64_t sandboxes, concurrency, execd_port, server_pid;
    uint64_t ready_timeout_ms, poll_ms, timeout_ms;
    bool server_proxy, quiet;
} lc_cfg_t;

typedef struct lc_run lc_run_t;
typedef struct lc_sb {
    breq_t q;
    lc_run_t *run;
    uv_timer_t retry;
    int step, busy, failed;
    char id[256];
    bc_url_t base_ep; /* the endpoint with its path, "/ping" or "/command" appended per step */
    char ep_prefix[2048];
    char *ep_headers;
    uint64_t t_begin, t_step, t_ready_start;
    uint32_t pings;
} lc_sb_t;

struct lc_run {
    lc_cfg_t cfg;
    uv_loop_t *loop;
    bc_url_t create_url;
    char *create_body, *api_extra;
    lc_sb_t *slots;
    uint32_t nslots, closed_timers;
    uint64_t started, finished, ok, deleted, leaked, ping_attempts;
    uint64_t step_errors[ST_N];
    bh_hist_t h[ST_N], total, to_ready;
    uv_timer_t sweep;
    int stopping;
    uint64_t t0, t1;
    bs_proc_t self0, self1, srv0, srv1;
};

static void lc_step(lc_sb_t *s);
static void lc_next(lc_run_t *r, lc_sb_t *s);

static void lc_fail(lc_sb_t *s, const char *why)
{
    lc_run_t *r = s->run;
    r->step_errors[s->step]++;
    if (r->step_errors[s->step] <= 3)
        fprintf(stderr, "sandgate-bench: lifecycle %s failed%s%s: %s\n", step_names[s->step],
                s->id[0] ? " for " : "", s->id, why);
    s->failed = 1;
}

/* url + "/v1/sandboxes" + tail, parsed; 0 or negative. */
static int api_url(lc_run_t *r, const char *tail, bc_url_t *out)
{
    char buf[4096], err[512];
    snprintf(buf, sizeof(buf), "%s/v1/sandboxes%s", r->cfg.url, tail);
    int rc = bc_url_parse(buf, out, err, sizeof(err));
    if (rc < 0) fprintf(stderr, "sandgate-bench: %s\n", err);
    return rc;
}

static int ep_url(lc_sb_t *s, const char *tail, bc_url_t *out)
{
    char buf[4096], err[512];
    snprintf(buf, sizeof(buf), "%s%s", s->ep_prefix, tail);
    int rc = bc_url_parse(buf, out, err, sizeof(err));
    if (rc < 0) fprintf(stderr, "sandgate-bench: %s\n", err);
    return rc;
}

static void lc_done(breq_t *q);

static void lc_finish_sandbox(lc_sb_t *s)
{
    lc_run_t *r = s->run;
    uint64_t now = sg_now_ns();
    r->finished++;
    if (!s->failed) {
        r->ok++;
        bh_record(&r->total, now - s->t_begin);
    }
    free(s->ep_headers);
    s->ep_headers = NULL;
    s->busy = 0;
    lc_next(r, s);
}

static void on_retry(uv_timer_t *t)
{
    lc_step(t->data);
}

static void lc_done(breq_t *q)
{
    lc_sb_t *s = q->ud;
    lc_run_t *r = s->run;
    uint64_t now = sg_now_ns();
    char why[512];
    int st = q->status;
    switch (s->step) {
    case ST_CREATE: {
        json_t *v = NULL;
        if (!q->err && st >= 200 && st < 300 && q->body)
            v = json_loadb(q->body, q->body_len, 0, NULL);
        const char *id = json_string_value(json_object_get(v, "id"));
        if (id && strlen(id) < sizeof(s->id)) {
            snprintf(s->id, sizeof(s->id), "%s", id);
            bh_record(&r->h[ST_CREATE], now - s->t_step);
            s->step = ST_ENDPOINT;
        } else {
            snprintf(why, sizeof(why), "status %d %s %.200s", st, q->err ? sg_strerror(q->err) : "",
                     q->body ? q->body : "");
            lc_fail(s, why);
            json_decref(v);
            breq_free(q);
            lc_finish_sandbox(s); /* nothing to delete */
            return;
        }
        json_decref(v);
        break;
    }
    case ST_ENDPOINT: {
        json_t *v = NULL;
        if (!q->err && st == 200 && q->body) v = json_loadb(q->body, q->body_len, 0, NULL);
        const char *ep = json_string_value(json_object_get(v, "endpoint"));
        if (ep && strlen(ep) < sizeof(s->ep_prefix) - 16) {
            /* The endpoint has no scheme (protocol ref 1.7); headers go on every call to it. */
            snprintf(s->ep_prefix, sizeof(s->ep_prefix), "http://%s", ep);
            size_t n = strlen(s->ep_prefix);
            while (n && s->ep_prefix[n - 1] == '/')
                s->ep_prefix[--n] = 0;
            json_t *hs = json_object_get(v, "headers");
            size_t cap = 256;
            const char *k;
            json_t *hv;
            json_object_foreach(hs, k, hv) cap +=
                strlen(k) + (json_string_value(hv) ? strlen(json_string_value(hv)) : 0) + 4;
            s->ep_headers = sg_xmalloc(cap);
            s->ep_headers[0] = 0;
            size_t len = 0;
            json_object_foreach(hs, k, hv)
            {
                if (!json_string_value(hv)) continue;
                len += (size_t)snprintf(s->ep_headers + len, cap - len, "%s: %s\r\n", k,
                                        json_string_value(hv));
            }
            bh_record(&r->h[ST_ENDPOINT], now - s->t_step);
            s->step = ST_PING;
            s->t_ready_start = now;
        } else {
            snprintf(why, sizeof(why), "status %d %s %.200s", st, q->err ? sg_strerror(q->err) : "",
                     q->body ? q->body : "");
            lc_fail(s, why);
            s->step = ST_DELETE;
        }
        json_decref(v);
        break;
    }
    case ST_PING:
        r->ping_attempts++;
        if (!q->err && st == 200) {
            bh_record(&r->h[ST_PING], now - s->t_ready_start);
            bh_record(&r->to_ready, now - s->t_begin);
            s->step = ST_EXEC;
        } else if (now - s->t_ready_start < r->cfg.ready_timeout_ms * 1000000u &&
                   (q->err || st >= 500 || st == 404)) {
            breq_free(q);
            uv_timer_start(&s->retry, on_retry, r->cfg.poll_ms, 0);
            return;
        } else {
            snprintf(why, sizeof(why), "not ready: status %d %s", st,
                     q->err ? sg_strerror(q->err) : "");
            lc_fail(s, why);
            s->step = ST_DELETE;
        }
        break;
    case ST_EXEC:
        if (!q->err && st == 200 && q->final) {
            bh_record(&r->h[ST_EXEC], now - s->t_step);
        } else {
            snprintf(why, sizeof(why), "status %d %s %.200s", st,
                     q->err ? sg_strerror(q->err) : "no final event", q->body ? q->body : "");
            lc_fail(s, why);
        }
        s->step = ST_DELETE;
        break;
    case ST_DELETE:
        if (!q->err && st >= 200 && st < 300) {
            bh_record(&r->h[ST_DELETE], now - s->t_step);
            r->deleted++;
        } else {
            snprintf(why, sizeof(why), "status %d %s %.200s", st, q->err ? sg_strerror(q->err) : "",
                     q->body ? q->body : "");
            lc_fail(s, why);
            r->leaked++;
        }
        breq_free(q);
        lc_finish_sandbox(s);
        return;
    }
    breq_free(q);
    lc_step(s);
}

static void lc_step(lc_sb_t *s)
{
    lc_run_t *r = s->run;
    bc_url_t u;
    char tail[512], extra[4096];
    s->t_step = sg_now_ns();
    switch (s->step) {
    case ST_CREATE:
        snprintf(extra, sizeof(extra), "Content-Type: application/json\r\nConnection: close\r\n%s",
                 r->api_extra);
        breq_start(r->loop, &s->q, &r->create_url, "POST", extra, r->create_body,
                   strlen(r->create_body), 0, lc_done, s);
        return;
    case ST_ENDPOINT:
        snprintf(tail, sizeof(tail), "/%s/endpoints/%lld%s", s->id, (long long)r->cfg.execd_port,
                 r->cfg.server_proxy ? "?use_server_proxy=true" : "");
        break;
    case ST_DELETE: snprintf(tail, sizeof(tail), "/%s", s->id); break;
    case ST_PING:
    case ST_EXEC:
        if (ep_url(s, s->step == ST_PING ? "/ping" : "/command", &u) < 0) {
            lc_fail(s, "bad endpoint");
            s->step = ST_DELETE;
            lc_step(s);
            return;
        }
        if (s->step == ST_PING) {
            s->pings++;
            snprintf(extra, sizeof(extra), "Connection: close\r\n%s",
                     s->ep_headers ? s->ep_headers : "");
            breq_start(r->loop, &s->q, &u, "GET", extra, NULL, 0, 0, lc_done, s);
        } else {
            json_t *b = json_pack("{s:s}", "command", r->cfg.exec_command);
            char *body = json_dumps(b, JSON_COMPACT);
            json_decref(b);
            snprintf(extra, sizeof(extra),
                     "Content-Type: application/json\r\nAccept: text/event-stream\r\nConnection: "
                     "close\r\n%s",
                     s->ep_headers ? s->ep_headers : "");
            breq_start(r->loop, &s->q, &u, "POST", extra, body, strlen(body), 1, lc_done, s);
            free(body);
        }
        return;
    }
    if (api_url(r, tail, &u) < 0) {
        lc_fail(s, "bad url");
        lc_finish_sandbox(s);
        return;
    }
    snprintf(extra, sizeof(extra), "Connection: close\r\n%s", r->api_extra);
    breq_start(r->loop, &s->q, &u, s->step == ST_DELETE ? "DELETE" : "GET", extra, NULL, 0, 0,
               lc_done, s);
}

static void lc_maybe_end(lc_run_t *r)
{
    if (r->stopping || r->finished < r->started || r->started < (uint64_t)r->cfg.sandboxes) return;
    r->stopping = 1;
    r->t1 = sg_now_ns();
    bs_self_sample(&r->self1);
    bs_proc_sample((int)r->cfg.server_pid, &r->srv1);
    for (uint32_t i = 0; i < r->nslots; i++)
        uv_close((uv_handle_t *)&r->slots[i].retry, NULL);
    uv_close((uv_handle_t *)&r->sweep, NULL);
}

static void lc_next(lc_run_t *r, lc_sb_t *s)
{
    if (r->started >= (uint64_t)r->cfg.sandboxes) {
        lc_maybe_end(r);
        return;
    }
    r->started++;
    s->busy = 1;
    s->failed = 0;
    s->id[0] = 0;
    s->pings = 0;
    s->step = ST_CREATE;
    s->t_begin = sg_now_ns();
    lc_step(s);
}

static void lc_sweep(uv_timer_t *t)
{
    lc_run_t *r = t->data;
    uint64_t now = sg_now_ns();
    for (uint32_t i = 0; i < r->nslots; i++) {
        lc_sb_t *s = &r->slots[i];
        if (s->busy && s->q.req && !s->q.c.closing &&
            now - s->q.t_start > r->cfg.timeout_ms * 1000000u)
            breq_cancel(&s->q, SG_ETIMEDOUT);
    }
}

#define OPT(name, type, field, def, min, max, help)                                                \
    {                                                                                              \
        name, NULL, type, offsetof(lc_cfg_t, field), def, min, max, NULL, help                     \
    }

static const sg_opt_t lc_opts[] = {
    OPT("url", SG_OPT_STRING, url, "http://127.0.0.1:8080", 0, 0,
        "lifecycle API base (without /v1)"),
    OPT("api-key", SG_OPT_STRING, api_key, NULL, 0, 0, "OPEN-SANDBOX-API-KEY value"),
    OPT("sandboxes", SG_OPT_INT, sandboxes, "10", 1, 10000000,
        "sandboxes to take through the cycle"),
    OPT("concurrency", SG_OPT_INT, concurrency, "4", 1, 100000, "sandboxes in flight"),
    OPT("image", SG_OPT_STRING, image, "ubuntu:22.04", 0, 0, "image.uri of the create request"),
    OPT("create-body", SG_OPT_STRING, create_body, NULL, 0, 0,
        "raw JSON create request (overrides --image)"),
    OPT("exec-command", SG_OPT_STRING, exec_command, "true", 0, 0, "command run in each sandbox"),
    OPT("execd-port", SG_OPT_INT, execd_port, "44772", 1, 65535,
        "port asked from the endpoints API"),
    OPT("server-proxy", SG_OPT_BOOL, server_proxy, "true", 0, 0,
        "ask for use_server_proxy=true endpoints"),
    OPT("ready-timeout", SG_OPT_DURATION, ready_timeout_ms, "60s", 1, 86400000,
        "bound on /ping polling"),
    OPT("poll-interval", SG_OPT_DURATION, poll_ms, "50ms", 1, 86400000, "between /ping attempts"),
    OPT("timeout", SG_OPT_DURATION, timeout_ms, "120s", 1, 86400000, "per request"),
    OPT("server-pid", SG_OPT_INT, server_pid, "0", 0, 0,
        "server process for CPU time (with descendants)"),
    OPT("out", SG_OPT_STRING, out, "-", 0, 0, "result JSON file ('-': stdout)"),
    OPT("quiet", SG_OPT_BOOL, quiet, "false", 0, 0, "no human summary on stderr"),
};

int bench_lifecycle_main(int argc, char **argv)
{
    lc_run_t *r = sg_xcalloc(1, sizeof(*r));
    int code;
    if (bench_parse(lc_opts, sizeof(lc_opts) / sizeof(lc_opts[0]), &r->cfg, argc, argv,
                    "sandgate-bench lifecycle [flags]: create -> ready -> exec -> delete", &code)) {
        free(r);
        return code;
    }
    size_t n = strlen(r->cfg.url);
    char *base = sg_xmalloc(n + 1);
    memcpy(base, r->cfg.url, n + 1);
    while (n && base[n - 1] == '/')
        base[--n] = 0;
    r->cfg.url = base;
    if (api_url(r, "", &r->create_url) < 0) {
        free(base);
        free(r);
        return 2;
    }
    bs_raise_nofile();
    if (r->cfg.create_body) {
        r->create_body = sg_xmalloc(strlen(r->cfg.create_body) + 1);
        strcpy(r->create_body, r->cfg.create_body);
    } else {
        json_t *b =
            json_pack("{s:{s:s},s:[s,s,s],s:{s:s,s:s},s:{},s:{},s:i}", "image", "uri", r->cfg.image,
                      "entrypoint", "tail", "-f", "/dev/null", "resourceLimits", "cpu", "1",
                      "memory", "2Gi", "env", "metadata", "timeout", 600);
        r->create_body = json_dumps(b, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(b);
    }
    size_t xl = 64 + (r->cfg.api_key ? strlen(r->cfg.api_key) : 0);
    r->api_extra = sg_xmalloc(xl);
    snprintf(r->api_extra, xl, "%s%s%s", r->cfg.api_key ? "OPEN-SANDBOX-API-KEY: " : "",
             r->cfg.api_key ? r->cfg.api_key : "", r->cfg.api_key ? "\r\n" : "");
    for (int i = 0; i < ST_N; i++)
        bh_init(&r->h[i]);
    bh_init(&r->total);
    bh_init(&r->to_ready);
    r->nslots =
        (uint32_t)(r->cfg.concurrency < r->cfg.sandboxes ? r->cfg.concurrency : r->cfg.sandboxes);
    r->slots = sg_xcalloc(r->nslots, sizeof(*r->slots));

    uv_loop_t loop;
    uv_loop_init(&loop);
    r->loop = &loop;
    uv_timer_init(&loop, &r->sweep);
    r->sweep.data = r;
    uv_timer_start(&r->sweep, lc_sweep, 100, 100);
    for (uint32_t i = 0; i < r->nslots; i++) {
        uv_timer_init(&loop, &r->slots[i].retry);
        r->slots[i].retry.data = &r->slots[i];
        r->slots[i].run = r;
    }
    bs_self_sample(&r->self0);
    bs_proc_sample((int)r->cfg.server_pid, &r->srv0);
    r->t0 = sg_now_ns();
    for (uint32_t i = 0; i < r->nslots; i++)
        lc_next(r, &r->slots[i]);
    uv_run(&loop, UV_RUN_DEFAULT);
    int loop_dirty = uv_loop_close(&loop) != 0;
    if (loop_dirty) fprintf(stderr, "sandgate-bench: internal: loop not closed cleanly\n");

    double wall = (double)(r->t1 - r->t0) / 1e9;
    json_t *params = json_pack(
        "{s:s,s:I,s:I,s:s,s:s,s:I,s:b,s:I,s:I}", "url", r->cfg.url, "sandboxes",
        (json_int_t)r->cfg.sandboxes, "concurrency", (json_int_t)r->cfg.concurrency, "image",
        r->cfg.image, "exec_command", r->cfg.exec_command, "execd_port",
        (json_int_t)r->cfg.execd_port, "server_proxy", r->cfg.server_proxy, "ready_timeout_ms",
        (json_int_t)r->cfg.ready_timeout_ms, "server_pid", (json_int_t)r->cfg.server_pid);
    json_t *doc = bench_doc_new("lifecycle", params);
    uint64_t errs = 0;
    json_t *errors = json_object();
    for (int i = 0; i < ST_N; i++) {
        errs += r->step_errors[i];
        json_object_set_new(errors, step_names[i], json_integer((json_int_t)r->step_errors[i]));
    }
    json_object_set_new(errors, "total", json_integer((json_int_t)errs));
    json_object_set_new(doc, "counts",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "sandboxes", (json_int_t)r->finished,
                                  "completed", (json_int_t)r->ok, "deleted", (json_int_t)r->deleted,
                                  "not_deleted", (json_int_t)r->leaked, "ping_attempts",
                                  (json_int_t)r->ping_attempts));
    json_object_set_new(doc, "errors", errors);
    json_object_set_new(doc, "throughput",
                        json_pack("{s:f,s:f}", "duration_s", wall, "sandboxes_per_s",
                                  wall > 0 ? (double)r->ok / wall : 0.0));
    json_t *lat = json_object();
    for (int i = 0; i < ST_N; i++)
        json_object_set_new(lat, step_names[i], bh_to_json(&r->h[i], 1e6));
    json_object_set_new(lat, "create_to_ready", bh_to_json(&r->to_ready, 1e6));
    json_object_set_new(lat, "total", bh_to_json(&r->total, 1e6));
    json_object_set_new(doc, "latency_ms", lat);
    json_object_set_new(doc, "cpu",
                        json_pack("{s:o,s:o}", "bench", bs_cpu_json(&r->self0, &r->self1, wall),
                                  "server", bs_cpu_json(&r->srv0, &r->srv1, wall)));
    int ok = errs == 0 && r->ok == (uint64_t)r->cfg.sandboxes;
    json_object_set_new(doc, "ok", json_boolean(ok));
    int wrc = bs_write_json(doc, r->cfg.out);
    if (!r->cfg.quiet) {
        fprintf(stderr,
                "lifecycle: %llu/%lld sandboxes completed, %llu deleted, %llu errors, %.2f s\n",
                (unsigned long long)r->ok, (long long)r->cfg.sandboxes,
                (unsigned long long)r->deleted, (unsigned long long)errs, wall);
        for (int i = 0; i < ST_N; i++)
            if (r->h[i].count)
                fprintf(stderr, "  %-8s ms: p50 %.3f p99 %.3f max %.3f\n", step_names[i],
                        bh_percentile(&r->h[i], 0.5) / 1e6, bh_percentile(&r->h[i], 0.99) / 1e6,
                        r->h[i].max / 1e6);
        if (r->to_ready.count)
            fprintf(stderr, "  create->ready ms: p50 %.3f p99 %.3f max %.3f\n",
                    bh_percentile(&r->to_ready, 0.5) / 1e6, bh_percentile(&r->to_ready, 0.99) / 1e6,
                    r->to_ready.max / 1e6);
        fprintf(stderr, "  %s\n", ok ? "ok" : "NOT OK (see errors in the JSON document)");
    }
    json_decref(doc);
    free(r->slots);
    free(r->create_body);
    free(r->api_extra);
    free(base);
    free(r);
    return loop_dirty ? 3 : wrc < 0 ? 1 : ok ? 0 : 1;
}
