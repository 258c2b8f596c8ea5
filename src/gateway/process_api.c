/* process_api.c: the native process routes, /output and execd's /logs and /status answered
 * from the log, the JSON shapes, and the signal route (process.h, process_int.h). */
#include <errno.h>
#include <jansson.h>
#include <mbedtls/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "process_int.h"
#include "sandgate/common.h"
#include "sandgate/log.h"

/* ------------------------------------------------------------------ output */

/* The output bytes an event carries (out_len > 0), decoded into out (out_len + 4 bytes):
 * a sandgate.raw event's data_b64, or a line event's text plus "\n". Returns how many. */
size_t sg__event_output(int kind, const char *json, size_t jl, uint32_t out_len,
                        unsigned char *out)
{
    size_t got = 0;
    if (kind == SG_PLOG_RAW) {
        const char *d;
        size_t dl;
        if (sg__scan_str(json, jl, "data_b64", &d, &dl) == 0)
            mbedtls_base64_decode(out, (size_t)out_len + 4, &got, (const unsigned char *)d, dl);
    } else {
        json_t *o = json_loadb(json, jl, 0, NULL);
        const char *txt = json_string_value(json_object_get(o, "text"));
        size_t tl = json_string_length(json_object_get(o, "text"));
        if (txt && tl + 1 <= out_len) {
            memcpy(out, txt, tl);
            out[tl] = '\n';
            got = tl + 1;
        }
        json_decref(o);
    }
    return got > out_len ? out_len : got;
}

/* The output bytes [from, end) still held, in one buffer (bounded by the log's size). */
sg_buf_t *sg__proc_collect_output(proc_t *p, uint64_t from)
{
    sg_plog_t *l = &p->log;
    uint64_t first = sg_plog_first_out(l);
    if (from < first) from = first;
    size_t cap = from < l->out_end ? (size_t)(l->out_end - from) : 0;
    sg_buf_t *b = sg_buf_new(cap ? cap : 1);
    const sg_plog_ent_t *e = sg_plog_find_out(l, from);
    for (; e; e = sg_plog_get(l, e->id + 1)) {
        if (e->out_len == 0) continue;
        const char *json = e->blk->data + e->off + e->json_off;
        size_t jl = e->len - e->json_off - 2;
        unsigned char *tmp = sg_xmalloc((size_t)e->out_len + 4);
        size_t got = sg__event_output(e->kind, json, jl, e->out_len, tmp);
        uint64_t skip = from > e->out_off ? from - e->out_off : 0;
        if (skip < got && b->len + (got - skip) <= b->cap) {
            memcpy(b->data + b->len, tmp + skip, got - skip);
            b->len += got - skip;
        }
        free(tmp);
    }
    return b;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s) return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || *s == '-') return -1;
    *out = v;
    return 0;
}

void sg__output_evicted(sg_http_req_t *req, uint64_t first)
{
    char fv[32], msg[256];
    snprintf(fv, sizeof(fv), "%llu", (unsigned long long)first);
    snprintf(msg, sizeof(msg),
             "output before byte %llu is no longer kept (retention); the first available byte "
             "is %llu",
             (unsigned long long)first, (unsigned long long)first);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "X-Sandgate-First-Offset", fv);
    json_t *body = json_pack("{s:s,s:s,s:I}", "code", "PROCESS::OUTPUT_EVICTED", "message", msg,
                             "first_offset", (json_int_t)first);
    char *txt = json_dumps(body, JSON_COMPACT);
    sg_hdrs_addz(&h, "Content-Type", "application/json");
    sg_http_respond(req, 410, &h, txt, strlen(txt));
    free(txt);
    json_decref(body);
    sg_hdrs_free(&h);
}

void sg__output_respond(proc_t *p, sg_http_req_t *req, int execd_logs, uint64_t first,
                        uint64_t next, sg_buf_t *b)
{
    char hv[32], fv[32];
    snprintf(fv, sizeof(fv), "%llu", (unsigned long long)first);
    snprintf(hv, sizeof(hv), "%llu", (unsigned long long)next);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type",
                 execd_logs ? "text/plain; charset=utf-8" : "application/octet-stream");
    sg_hdrs_addz(&h, execd_logs ? "EXECD-COMMANDS-TAIL-CURSOR" : "X-Sandgate-Next-Offset", hv);
    sg_hdrs_addz(&h, "X-Sandgate-Running", p->finished ? "0" : "1");
    sg_hdrs_addz(&h, "X-Sandgate-First-Offset", fv);
    if (b && b->len)
        sg_http_respond_buf(req, 200, &h, b, 0, b->len);
    else
        sg_http_respond(req, 200, &h, NULL, 0);
    sg_hdrs_free(&h);
}

static void respond_output(proc_t *p, sg_http_req_t *req, int execd_logs)
{
    char q[32];
    uint64_t off = 0;
    int n = sg_http_req_query_param(req, execd_logs ? "cursor" : "offset", q, sizeof(q));
    if (n > 0 && parse_u64(q, &off) < 0) {
        if (execd_logs) {
            off = 0; /* unparsable -> 0, as Go */
        } else {
            sg_http_respond_error(req, 400, "PROCESS::INVALID_OFFSET",
                                  "offset must be a non-negative integer");
            return;
        }
    }
    uint64_t first = sg_plog_first_out(&p->log);
    /* Below the memory window: from the log files (answered when the read is done). */
    if (off < first && sg__disk_output(p, req, off, execd_logs)) return;
    if (!execd_logs && off < first) {
        sg__output_evicted(req, first);
        return;
    }
    sg_buf_t *b = off < p->log.out_end ? sg__proc_collect_output(p, off) : NULL;
    uint64_t next = off < p->log.out_end ? p->log.out_end : off;
    sg__output_respond(p, req, execd_logs, first, next, b);
    sg_buf_unref(b);
}

/* ------------------------------------------------------------------ JSON shapes */

static json_t *time_or_null(int64_t us)
{
    if (!us) return json_null();
    char t[40];
    sg_sbx_format_time(us, t);
    return json_string(t);
}

static json_t *proc_json(const proc_t *p)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(p->id));
    json_object_set_new(o, "sandbox_id", json_string(p->sbx->id));
    json_object_set_new(o, "command", json_string(p->command));
    json_object_set_new(o, "background", json_boolean(p->background));
    json_object_set_new(o, "state", json_string(sg_proc_state_name(p->state)));
    json_object_set_new(o, "exit_code", p->has_exit ? json_integer(p->exit_code) : json_null());
    if (p->error) json_object_set_new(o, "error", json_string(p->error));
    json_object_set_new(o, "created_at", time_or_null(p->created_us));
    json_object_set_new(o, "finished_at", time_or_null(p->finished_us));
    json_object_set_new(o, "first_event_id", json_integer((json_int_t)p->log.first_id));
    json_object_set_new(o, "last_event_id", json_integer((json_int_t)(p->log.next_id - 1)));
    json_object_set_new(o, "output_bytes", json_integer((json_int_t)p->log.out_end));
    json_object_set_new(o, "first_output_offset",
                        json_integer((json_int_t)sg_plog_first_out(&p->log)));
    json_object_set_new(o, "subscribers", json_integer(p->nsubs));
    return o;
}

static void respond_json(sg_http_req_t *req, int status, json_t *b)
{
    sg_http_respond_json(req, status, b);
    json_decref(b);
}

/* execd's GET /command/status/{id} shape (reference 2.7). */
static void respond_status(proc_t *p, sg_http_req_t *req)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(p->id));
    if (*p->command) json_object_set_new(o, "content", json_string(p->command));
    json_object_set_new(o, "running", json_boolean(!p->finished));
    if (p->finished && (p->has_exit || p->state != SG_PROC_EXITED))
        json_object_set_new(o, "exit_code", json_integer(p->has_exit ? p->exit_code : 255));
    if (p->error) json_object_set_new(o, "error", json_string(p->error));
    json_object_set_new(o, "started_at", time_or_null(p->created_us));
    if (p->finished_us) json_object_set_new(o, "finished_at", time_or_null(p->finished_us));
    respond_json(req, 200, o);
}

int sg_procs_execd_get(sg_procs_t *m, sg_sandbox_t *s, sg_http_req_t *req, const char *path)
{
    (void)m;
    char id[80];
    int logs = 0;
    if (strncmp(path, "/command/status/", 16) == 0 && !strchr(path + 16, '/')) {
        snprintf(id, sizeof(id), "%s", path + 16);
    } else if (strncmp(path, "/command/", 9) == 0) {
        const char *a = path + 9, *sl = strchr(a, '/');
        if (!sl || strcmp(sl, "/logs") != 0 || (size_t)(sl - a) >= sizeof(id)) return 0;
        memcpy(id, a, (size_t)(sl - a));
        id[sl - a] = '\0';
        logs = 1;
    } else {
        return 0;
    }
    proc_t *p = sg__proc_find(s, id);
    if (!p) return 0;
    if (logs)
        respond_output(p, req, 1);
    else
        respond_status(p, req);
    return 1;
}

/* ------------------------------------------------------------------ native API */

static void stream_process(sg_procs_t *m, proc_t *p, sg_http_req_t *req)
{
    char v[32];
    uint64_t next = 1;
    const char *lei = sg_http_req_header(req, "Last-Event-ID");
    int have_lei = 0;
    if (sg_http_req_query_param(req, "last_event_id", v, sizeof(v)) >= 0) {
        lei = v;
    }
    if (lei && *lei) {
        uint64_t id;
        if (parse_u64(lei, &id) < 0) {
            sg_http_respond_error(req, 400, "PROCESS::INVALID_EVENT_ID",
                                  "Last-Event-ID / last_event_id must be an event id (a "
                                  "non-negative integer)");
            return;
        }
        next = id + 1;
        have_lei = 1;
    }
    char from[16];
    if (!have_lei && sg_http_req_query_param(req, "from", from, sizeof(from)) >= 0) {
        if (strcmp(from, "end") == 0)
            next = p->log.next_id;
        else if (strcmp(from, "start") != 0) {
            sg_http_respond_error(req, 400, "PROCESS::INVALID_FROM", "from must be start or end");
            return;
        }
    }
    if (next > p->log.next_id) next = p->log.next_id; /* an id from the future: live from now */
    char rv[8];
    int raw = sg_http_req_query_param(req, "raw", rv, sizeof(rv)) >= 0 &&
              (strcmp(rv, "1") == 0 || strcmp(rv, "true") == 0);
    if (strcmp(sg_http_req_method(req), "HEAD") == 0) {
        /* The head of a stream, without one: a HEAD never holds a subscriber. */
        sg_hdrs_t h;
        sg_hdrs_init(&h);
        sg_hdrs_addz(&h, "Cache-Control", "no-cache");
        sg_hdrs_addz(&h, "Content-Type", "text/event-stream");
        sg_http_respond(req, p->finished && next >= p->log.next_id ? 204 : 200, &h, NULL, 0);
        sg_hdrs_free(&h);
        return;
    }
    if (p->finished && next >= p->log.next_id) {
        /* Nothing more will come: 204 tells an EventSource to stop reconnecting. */
        sg_http_respond(req, 204, NULL, NULL, 0);
        return;
    }
    if (sg__start_event_stream(req, 0) < 0) {
        sg_http_req_release(req);
        return;
    }
    char r[48];
    int n = snprintf(r, sizeof(r), "retry: %u\n\n", (unsigned)m->cfg.retry_ms);
    sg_http_resp_write_copy(req, r, (size_t)n);
    sub_t *s = sg__sub_new(p, req, 0, raw, next);
    sg__sub_pump(s);
}

typedef struct sig_ctx {
    sg_http_req_t *req;
    proc_t *p;
    int status;
    char *body;
    size_t len;
    char ctype[128];
} sig_ctx_t;

static void sig_on_response(sg_http_creq_t *r, void *data, int status, const sg_hdrs_t *hdrs)
{
    sig_ctx_t *c = data;
    (void)r;
    c->status = status;
    const char *ct = sg_hdrs_get(hdrs, "content-type");
    snprintf(c->ctype, sizeof(c->ctype), "%s", ct ? ct : "application/json");
}

static void sig_on_body(sg_http_creq_t *r, void *data, const char *d, size_t n)
{
    sig_ctx_t *c = data;
    (void)r;
    if (c->len + n > MAX_ERROR_BODY) n = MAX_ERROR_BODY - c->len;
    c->body = sg_xrealloc(c->body, c->len + n + 1);
    memcpy(c->body + c->len, d, n);
    c->len += n;
}

static void sig_on_done(sg_http_creq_t *r, void *data, int err, const char *msg)
{
    sig_ctx_t *c = data;
    (void)r;
    if (err < 0) {
        char m[512];
        snprintf(m, sizeof(m), "Could not reach the sandbox's execd: %s",
                 msg ? msg : sg_strerror(err));
        sg_http_respond_error(c->req, 502, "GENERAL::UNKNOWN_ERROR", m);
    } else {
        if (c->status >= 200 && c->status < 300) c->p->signalled = 1;
        sg_hdrs_t h;
        sg_hdrs_init(&h);
        sg_hdrs_addz(&h, "Content-Type", c->ctype);
        sg_http_respond(c->req, c->status, &h, c->body, c->len);
        sg_hdrs_free(&h);
    }
    sg__proc_unref(c->p);
    free(c->body);
    free(c);
}

static void on_signal_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    proc_t *p = ud;
    if (err == SG_ETOOBIG) goto out;
    if (err < 0) {
        sg_http_req_release(req);
        goto out;
    }
    json_t *j = json_loadb(body, len, 0, NULL);
    json_t *sig = json_object_get(j, "signal");
    if (!json_is_string(sig) && !json_is_integer(sig)) {
        sg_http_respond_error(req, 400, "PROCESS::INVALID_SIGNAL",
                              "body must be {\"signal\": name or number}, e.g. "
                              "{\"signal\":\"SIGTERM\"}");
        json_decref(j);
        goto out;
    }
    if (p->finished || !p->sbx->has_handle) {
        json_decref(j);
        sg_http_respond_error(req, 409, "PROCESS::NOT_RUNNING", "the process is not running");
        goto out;
    }
    json_t *up = json_pack("{s:O}", "signal", sig);
    char *txt = json_dumps(up, JSON_COMPACT);
    json_decref(up);
    json_decref(j);
    char target[160];
    snprintf(target, sizeof(target), "/command/%s/signal", p->id);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/json");
    if (p->sbx->handle.access_token[0])
        sg_hdrs_addz(&h, "X-EXECD-ACCESS-TOKEN", p->sbx->handle.access_token);
    sig_ctx_t *c = sg_xcalloc(1, sizeof(*c));
    c->req = req;
    c->p = sg__proc_ref(p);
    sg_http_creq_opts_t o;
    memset(&o, 0, sizeof(o));
    o.method = "POST";
    o.origin = p->sbx->handle.execd;
    o.target = target;
    o.headers = &h;
    o.body = txt;
    o.body_len = strlen(txt);
    o.on_response = sig_on_response;
    o.on_body = sig_on_body;
    o.on_done = sig_on_done;
    o.data = c;
    int r = sg_http_request(p->m->client, &o, NULL);
    sg_hdrs_free(&h);
    free(txt);
    if (r < 0) {
        sg__proc_unref(c->p);
        free(c);
        sg_http_respond_error(req, 502, "GENERAL::UNKNOWN_ERROR",
                              "Could not connect to the backend sandbox");
    }
out:
    sg__proc_unref(p);
}

static int method_is(sg_http_req_t *req, const char *m)
{
    return strcmp(sg_http_req_method(req), m) == 0;
}

void sg_procs_route(sg_procs_t *m, sg_sandbox_t *s, sg_http_req_t *req, const char *sub)
{
    if (*sub == '\0' || strcmp(sub, "/") == 0) {
        if (!method_is(req, "GET")) {
            sg_http_respond_error(req, 405, "METHOD_NOT_ALLOWED", "Method Not Allowed");
            return;
        }
        char st[32];
        int want = -1;
        if (sg_http_req_query_param(req, "state", st, sizeof(st)) >= 0 &&
            (want = sg_proc_state_parse(st)) < 0) {
            sg_http_respond_error(req, 400, "PROCESS::INVALID_STATE",
                                  "state must be running, exited, failed, killed or lost");
            return;
        }
        json_t *items = json_array();
        for (proc_t *p = s->procs; p; p = p->next)
            if (want < 0 || (int)p->state == want) json_array_append_new(items, proc_json(p));
        respond_json(req, 200, json_pack("{s:o}", "items", items));
        return;
    }
    const char *id = sub + 1;
    const char *sl = strchr(id, '/');
    size_t idl = sl ? (size_t)(sl - id) : strlen(id);
    const char *rest = sl ? sl : "";
    char idbuf[80];
    proc_t *p = NULL;
    if (idl > 0 && idl < sizeof(idbuf)) {
        memcpy(idbuf, id, idl);
        idbuf[idl] = '\0';
        p = sg__proc_find(s, idbuf);
    }
    int known =
        !*rest || !strcmp(rest, "/stream") || !strcmp(rest, "/output") || !strcmp(rest, "/signal");
    if (!known) {
        sg_http_respond_error(req, 404, "NOT_FOUND", "no such route");
        return;
    }
    const char *want_m = strcmp(rest, "/signal") == 0 ? "POST" : "GET";
    if (!method_is(req, want_m) && !(strcmp(want_m, "GET") == 0 && method_is(req, "HEAD"))) {
        sg_http_respond_error(req, 405, "METHOD_NOT_ALLOWED", "Method Not Allowed");
        return;
    }
    if (!p) {
        sg_http_respond_error(req, 404, "PROCESS::NOT_FOUND", "Process not found.");
        return;
    }
    if (!*rest)
        respond_json(req, 200, proc_json(p));
    else if (strcmp(rest, "/stream") == 0)
        stream_process(m, p, req);
    else if (strcmp(rest, "/output") == 0)
        respond_output(p, req, 0);
    else if (sg_http_req_read_all(req, MAX_SIGNAL_BODY, on_signal_body, sg__proc_ref(p)) < 0) {
        sg__proc_unref(p);
        sg_http_req_release(req);
    }
}
