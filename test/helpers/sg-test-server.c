/* sg-test-server: a small program on the sandgate HTTP server for integration tests.
 *
 * Usage: sg-test-server --listen ADDR [--listen ADDR...] [--port-file F] [--grace MS]
 *          [--max-body N] [--max-header-bytes N] [--max-header-count N] [--max-url N]
 *          [--header-timeout MS] [--body-timeout MS] [--idle-timeout MS] [--send-timeout MS]
 *          [--max-conns N] [--high-water N] [--access-log]
 *
 * Routes
 *   /hello                  200 "hello\n"
 *   /echo                   streams the request body back (flow-controlled both ways)
 *   /sink                   consumes the body as it arrives: {"bytes":N,"sha256":"..."}
 *   /read-all?max=N         whole body through sg_http_req_read_all: {"bytes":N}
 *   /noread                 answers 200 without reading the body
 *   /stream?bytes=N         N bytes ('a'..'z' repeating) streamed by reference, chunked
 *   /slow-sse?events=N&interval_ms=M   an SSE stream, one event every M ms, then ends
 *   /status?code=N          empty answer with that status
 *   /stats                  {"rss_kb":..,"hwm_kb":..,"connections":..}
 * SIGTERM / SIGINT: graceful shutdown (--grace, default 5000 ms), then exit 0 if the loop
 * closes with no handle left open (exit 3 otherwise). */
#include "sandgate/common.h"
#include "sandgate/http_server.h"

#include <jansson.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uv_loop_t *loop;
static sg_http_server_t *srv;
static uv_signal_t sig_term, sig_int;
static uint64_t grace_ms = 5000;
static int access_log;
static sg_buf_t *pattern; /* 64 KiB shared by every /stream response */

/* ------------------------------------------------------------------ /echo */

static void echo_drain(sg_http_req_t *req)
{
    sg_http_req_resume_body(req);
}

static void echo_abort(sg_http_req_t *req)
{
    sg_http_req_release(req);
}

static void echo_body(sg_http_req_t *req, const char *data, size_t len, void *ud)
{
    (void)ud;
    if (!data) {
        sg_http_resp_end(req);
        return;
    }
    if (sg_http_resp_write_copy(req, data, len) == 1) sg_http_req_pause_body(req);
}

static void route_echo(sg_http_req_t *req)
{
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/octet-stream");
    const char *cl = sg_http_req_header(req, "Content-Length");
    if (cl) sg_hdrs_addz(&h, "Content-Length", cl);
    sg_http_req_on_drain(req, echo_drain);
    sg_http_req_on_abort(req, echo_abort);
    sg_http_resp_start(req, 200, &h);
    sg_hdrs_free(&h);
    sg_http_req_read_body(req, echo_body, NULL);
}

/* ------------------------------------------------------------------ /sink */

typedef struct {
    mbedtls_sha256_context sha;
    uint64_t bytes;
} sink_t;

static void sink_abort(sg_http_req_t *req)
{
    sink_t *s = sg_http_req_data(req);
    mbedtls_sha256_free(&s->sha);
    free(s);
    sg_http_req_release(req);
}

static void sink_body(sg_http_req_t *req, const char *data, size_t len, void *ud)
{
    sink_t *s = ud;
    if (data) {
        mbedtls_sha256_update_ret(&s->sha, (const unsigned char *)data, len);
        s->bytes += len;
        return;
    }
    unsigned char d[32];
    char hex[65];
    mbedtls_sha256_finish_ret(&s->sha, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    json_t *j = json_pack("{s:I,s:s}", "bytes", (json_int_t)s->bytes, "sha256", hex);
    mbedtls_sha256_free(&s->sha);
    free(s);
    sg_http_respond_json(req, 200, j);
    json_decref(j);
}

static void route_sink(sg_http_req_t *req)
{
    sink_t *s = sg_xcalloc(1, sizeof(*s));
    mbedtls_sha256_init(&s->sha);
    mbedtls_sha256_starts_ret(&s->sha, 0);
    sg_http_req_set_data(req, s);
    sg_http_req_on_abort(req, sink_abort);
    sg_http_req_read_body(req, sink_body, s);
}

/* ------------------------------------------------------------------ /read-all */

static void readall_done(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    (void)body;
    (void)ud;
    if (err == SG_ETOOBIG) return; /* 413 already sent */
    if (err < 0) {
        sg_http_req_release(req);
        return;
    }
    json_t *j = json_pack("{s:I}", "bytes", (json_int_t)len);
    sg_http_respond_json(req, 200, j);
    json_decref(j);
}

/* ------------------------------------------------------------------ /stream */

typedef struct {
    uint64_t left;
} stream_t;

static void stream_done(sg_http_req_t *req)
{
    free(sg_http_req_data(req));
    sg_http_req_set_data(req, NULL);
    sg_http_resp_end(req);
}

static void stream_pump(sg_http_req_t *req)
{
    stream_t *st = sg_http_req_data(req);
    while (st->left) {
        size_t n = st->left < pattern->len ? (size_t)st->left : pattern->len;
        int r = sg_http_resp_write(req, pattern, 0, n);
        if (r < 0) break;
        st->left -= n;
        if (r == 1 && st->left) return; /* wait for the drain callback */
    }
    stream_done(req);
}

static void route_stream(sg_http_req_t *req)
{
    char v[32];
    stream_t *st = sg_xcalloc(1, sizeof(*st));
    st->left = sg_http_req_query_param(req, "bytes", v, sizeof(v)) > 0 ? strtoull(v, NULL, 10) : 1024;
    sg_http_req_set_data(req, st);
    sg_http_req_on_drain(req, stream_pump);
    sg_http_req_on_abort(req, stream_done);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/octet-stream");
    sg_http_resp_start(req, 200, &h);
    sg_hdrs_free(&h);
    stream_pump(req);
}

/* ------------------------------------------------------------------ /slow-sse */

typedef struct {
    uv_timer_t timer;
    sg_http_req_t *req;
    int left;
    int n;
} sse_t;

static void sse_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sse_finish(sse_t *s)
{
    sg_http_req_t *req = s->req;
    sg_http_req_set_data(req, NULL);
    uv_close((uv_handle_t *)&s->timer, sse_closed);
    sg_http_resp_end(req);
}

static void sse_tick(uv_timer_t *t)
{
    sse_t *s = t->data;
    char ev[64];
    int n = snprintf(ev, sizeof(ev), "id: %d\ndata: tick %d\n\n", s->n, s->n);
    s->n++;
    if (sg_http_resp_write_copy(s->req, ev, (size_t)n) < 0 || --s->left <= 0) sse_finish(s);
}

static void sse_abort(sg_http_req_t *req)
{
    sse_t *s = sg_http_req_data(req);
    if (s) sse_finish(s);
}

static void route_sse(sg_http_req_t *req)
{
    char v[32];
    sse_t *s = sg_xcalloc(1, sizeof(*s));
    s->req = req;
    s->left = sg_http_req_query_param(req, "events", v, sizeof(v)) > 0 ? atoi(v) : 5;
    int interval = sg_http_req_query_param(req, "interval_ms", v, sizeof(v)) > 0 ? atoi(v) : 100;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    sg_http_req_set_data(req, s);
    sg_http_req_on_abort(req, sse_abort);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "text/event-stream");
    sg_hdrs_addz(&h, "Cache-Control", "no-store");
    sg_hdrs_addz(&h, "X-Accel-Buffering", "no");
    sg_http_resp_start(req, 200, &h);
    sg_hdrs_free(&h);
    sg_http_resp_write_copy(req, "retry: 1000\n\n", 13);
    uv_timer_start(&s->timer, sse_tick, (uint64_t)interval, (uint64_t)interval);
}

/* ------------------------------------------------------------------ misc routes */

static long proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    if (!f) return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') v = atol(line + kl + 1);
    fclose(f);
    return v;
}

static void handler(sg_http_req_t *req, void *data)
{
    (void)data;
    const char *path = sg_http_req_path(req);
    char v[32];
    if (strcmp(path, "/hello") == 0) {
        sg_hdrs_t h;
        sg_hdrs_init(&h);
        sg_hdrs_addz(&h, "Content-Type", "text/plain");
        sg_http_respond(req, 200, &h, "hello\n", 6);
        sg_hdrs_free(&h);
    } else if (strcmp(path, "/echo") == 0) {
        route_echo(req);
    } else if (strcmp(path, "/sink") == 0) {
        route_sink(req);
    } else if (strcmp(path, "/read-all") == 0) {
        size_t max = sg_http_req_query_param(req, "max", v, sizeof(v)) > 0 ? strtoull(v, NULL, 10) : 65536;
        /* No abort callback on purpose: read_all reports SG_ECLOSED to readall_done. */
        sg_http_req_read_all(req, max, readall_done, NULL);
    } else if (strcmp(path, "/noread") == 0) {
        sg_http_respond(req, 200, NULL, "ignored\n", 8);
    } else if (strcmp(path, "/stream") == 0) {
        route_stream(req);
    } else if (strcmp(path, "/slow-sse") == 0) {
        route_sse(req);
    } else if (strcmp(path, "/status") == 0) {
        int code = sg_http_req_query_param(req, "code", v, sizeof(v)) > 0 ? atoi(v) : 200;
        sg_http_respond(req, code, NULL, NULL, 0);
    } else if (strcmp(path, "/stats") == 0) {
        json_t *j = json_pack("{s:I,s:I,s:I}", "rss_kb", (json_int_t)proc_status_kb("VmRSS"),
                              "hwm_kb", (json_int_t)proc_status_kb("VmHWM"), "connections",
                              (json_int_t)sg_http_server_connections(srv));
        sg_http_respond_json(req, 200, j);
        json_decref(j);
    } else {
        sg_http_respond_error(req, 404, "NOT_FOUND", "no such route");
    }
}

static void on_access(const sg_http_access_t *e, void *data)
{
    (void)data;
    if (!access_log) return;
    fprintf(stderr,
            "{\"id\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,\"aborted\":%d,"
            "\"in\":%llu,\"out\":%llu,\"us\":%llu}\n",
            e->request_id, e->method, e->path, e->status, e->aborted,
            (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out,
            (unsigned long long)e->duration_us);
}

/* ------------------------------------------------------------------ lifecycle */

static void on_server_closed(sg_http_server_t *s, void *data)
{
    (void)s;
    (void)data;
    srv = NULL;
}

static void on_drained(sg_http_server_t *s, void *data)
{
    (void)data;
    fprintf(stderr, "sg-test-server: drained, closing\n");
    sg_http_server_close(s, on_server_closed);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    fprintf(stderr, "sg-test-server: signal %d, graceful shutdown\n", signum);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    if (srv) sg_http_server_shutdown(srv, grace_ms, on_drained);
}

int main(int argc, char **argv)
{
    sg_http_server_config_t cfg;
    sg_http_server_config_init(&cfg);
    cfg.handler = handler;
    cfg.access_log = on_access;
    const char *listen[8];
    int nlisten = 0;
    const char *port_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NUMOPT(name, field)                                                                        \
    if (strcmp(a, name) == 0 && v) {                                                               \
        field = strtoull(v, NULL, 10);                                                             \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        if (strcmp(a, "--listen") == 0 && v && nlisten < 8) {
            listen[nlisten++] = v;
            i++;
            continue;
        }
        if (strcmp(a, "--port-file") == 0 && v) {
            port_file = v;
            i++;
            continue;
        }
        if (strcmp(a, "--access-log") == 0) {
            access_log = 1;
            continue;
        }
        NUMOPT("--grace", grace_ms)
        NUMOPT("--max-body", cfg.limits.max_body_bytes)
        NUMOPT("--max-header-bytes", cfg.limits.max_header_bytes)
        NUMOPT("--max-header-count", cfg.limits.max_header_count)
        NUMOPT("--max-url", cfg.limits.max_url_bytes)
        NUMOPT("--header-timeout", cfg.limits.header_timeout_ms)
        NUMOPT("--body-timeout", cfg.limits.body_timeout_ms)
        NUMOPT("--idle-timeout", cfg.limits.idle_timeout_ms)
        NUMOPT("--send-timeout", cfg.limits.send_timeout_ms)
        NUMOPT("--max-conns", cfg.limits.max_connections)
        NUMOPT("--high-water", cfg.limits.write_high_water)
        fprintf(stderr, "sg-test-server: bad argument '%s'\n", a);
        return 2;
    }
    if (!nlisten) listen[nlisten++] = "127.0.0.1:0";
    loop = uv_default_loop();
    pattern = sg_buf_new(64 * 1024);
    for (size_t i = 0; i < pattern->cap; i++) pattern->data[i] = (char)('a' + i % 26);
    pattern->len = pattern->cap;
    if (sg_http_server_new(loop, &cfg, &srv) < 0) return 1;
    for (int i = 0; i < nlisten; i++) {
        char err[256];
        if (sg_http_server_listen(srv, listen[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "sg-test-server: %s\n", err);
            return 1;
        }
    }
    if (port_file) {
        char tmp[512];
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f) return 1;
        fprintf(f, "%d\n", sg_http_server_port(srv));
        fclose(f);
        rename(tmp, port_file);
    }
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    fprintf(stderr, "sg-test-server: listening (port %d)\n", sg_http_server_port(srv));
    uv_run(loop, UV_RUN_DEFAULT);
    sg_buf_unref(pattern);
    int r = uv_loop_close(loop);
    if (r != 0) {
        fprintf(stderr, "sg-test-server: loop did not close cleanly: %s\n", uv_strerror(r));
        return 3;
    }
    fprintf(stderr, "sg-test-server: clean exit\n");
    return 0;
}
