/* test_gateway_proxy.c: sg_proxy_forward between real parts on one loop:
 *
 *   test client (sg_http_client) -> gateway (sg_http_server, handler = sg_proxy_forward)
 *                                -> upstream (sg_http_server on a unix socket, like execd)
 *
 * Proves: a 1 GiB streamed upload and a 256 MiB download pass with bounded queues and flat
 * memory (backpressure both ways), SSE events pass one at a time (the upstream only writes the
 * second event after the client has seen the first: a buffering proxy deadlocks the test),
 * request/response headers are filtered and X-Forwarded-* / the access token added, and a gone
 * upstream gives 502 JSON. Every test ends with uv_loop_close() == 0. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy.h"
#include "sandgate/common.h"
#include "sandgate/http_client.h"
#include "sandgate/http_server.h"

/* Freed chunks must not pile up in ASan's quarantine, or RSS measures ASan, not us. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=16";
}

#define UPLOAD_BYTES   (1024ull << 20)
#define DOWNLOAD_BYTES (256ull << 20)
#define CHUNK          (64u << 10)

typedef struct env {
    uv_loop_t loop;
    uv_timer_t watchdog;
    int timed_out;
    sg_http_server_t *up;  /* the "execd" */
    sg_http_server_t *gw;  /* the proxy */
    sg_http_client_t *gwc; /* gateway -> upstream */
    sg_http_client_t *c;   /* test client -> gateway */
    char dir[64];
    char up_origin[128];
    char gw_origin[64];
    int closed;

    /* upstream state */
    uint64_t up_bytes;
    sg_http_req_t *sse_req; /* an SSE response waiting for the client's go-ahead */
    sg_http_req_t *dl_req;
    uint64_t dl_sent;
    sg_buf_t *chunk;
    char seen_headers[2048];

    /* client state */
    int status;
    int done;
    int err;
    char body[4096];
    size_t body_len;
    uint64_t got;
    uint64_t sent;
    size_t max_queued; /* worst of client upload queue + gateway output seen */
    int sse_events;
    sg_http_creq_t *creq;
    int cancel_after_init; /* the client goes away once the first event arrived */
    int up_saw_close;      /* the upstream's writes failed: the proxy let go of it */
    uv_timer_t tick;
} env_t;

static env_t *g_env;

static void on_watchdog(uv_timer_t *t)
{
    env_t *e = t->data;
    e->timed_out = 1;
}

/* --- upstream ("execd") */

static void up_body(sg_http_req_t *req, const char *d, size_t n, void *ud)
{
    env_t *e = ud;
    if (n) {
        e->up_bytes += n;
        return;
    }
    char b[64];
    int l = snprintf(b, sizeof(b), "{\"bytes\":%llu}", (unsigned long long)e->up_bytes);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/json");
    sg_hdrs_addz(&h, "Keep-Alive", "timeout=5");
    sg_hdrs_addz(&h, "Trailer", "X-Nothing");
    sg_http_respond(req, 200, &h, b, (size_t)l);
    sg_hdrs_free(&h);
}

static void up_dl_write(sg_http_req_t *req)
{
    env_t *e = g_env;
    while (e->dl_sent < DOWNLOAD_BYTES) {
        int w = sg_http_resp_write(req, e->chunk, 0, CHUNK);
        if (w < 0) return;
        e->dl_sent += CHUNK;
        if (w == 1) return; /* on_drain continues */
    }
    sg_http_resp_end(req);
    e->dl_req = NULL;
}

static void up_handler(sg_http_req_t *req, void *data)
{
    env_t *e = data;
    const char *path = sg_http_req_path(req);
    if (strcmp(path, "/upload") == 0) {
        e->up_bytes = 0;
        sg_http_req_read_body(req, up_body, e);
    } else if (strcmp(path, "/download") == 0) {
        sg_hdrs_t h;
        sg_hdrs_init(&h);
        char cl[32];
        snprintf(cl, sizeof(cl), "%llu", (unsigned long long)DOWNLOAD_BYTES);
        sg_hdrs_addz(&h, "Content-Length", cl);
        sg_http_resp_start(req, 200, &h);
        sg_hdrs_free(&h);
        e->dl_req = req;
        e->dl_sent = 0;
        sg_http_req_on_drain(req, up_dl_write);
        up_dl_write(req);
    } else if (strcmp(path, "/sse") == 0) {
        sg_hdrs_t h;
        sg_hdrs_init(&h);
        sg_hdrs_addz(&h, "Content-Type", "text/event-stream");
        sg_http_resp_start(req, 200, &h);
        sg_hdrs_free(&h);
        static const char ev1[] = "data: {\"type\":\"init\"}\n\n";
        sg_http_resp_write_copy(req, ev1, sizeof(ev1) - 1);
        e->sse_req = req; /* the second event waits for the client */
    } else if (strcmp(path, "/headers") == 0) {
        const sg_hdrs_t *in = sg_http_req_headers(req);
        size_t n = 0;
        for (size_t i = 0; i < in->n && n < sizeof(e->seen_headers) - 1; i++)
            n += (size_t)snprintf(e->seen_headers + n, sizeof(e->seen_headers) - n, "%s: %s\n",
                                  in->v[i].name, in->v[i].value);
        char b[512];
        int l = snprintf(b, sizeof(b), "%s?%s", path, sg_http_req_query(req));
        sg_http_respond(req, 201, NULL, b, (size_t)l);
    } else {
        sg_http_respond_error(req, 404, "NOT_FOUND", "no");
    }
}

/* --- gateway */

static const char *g_origin; /* where the gateway forwards */

static void gw_handler(sg_http_req_t *req, void *data)
{
    env_t *e = data;
    sg_proxy_target_t t = {
        .origin = g_origin,
        .access_token = "tok",
        .target = sg_http_req_url(req),
        .tls = 0,
    };
    sg_proxy_forward(e->gwc, req, &t);
}

static void env_init(env_t *e)
{
    memset(e, 0, sizeof(*e));
    g_env = e;
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->watchdog);
    e->watchdog.data = e;
    uv_timer_start(&e->watchdog, on_watchdog, 240000, 0); /* safety bound only */
    uv_unref((uv_handle_t *)&e->watchdog);
    snprintf(e->dir, sizeof(e->dir), "/tmp/sg-proxy-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->up_origin, sizeof(e->up_origin), "unix:%s/execd.sock", e->dir);
    g_origin = e->up_origin;
    e->chunk = sg_buf_new(CHUNK);
    memset(e->chunk->data, 'x', CHUNK);
    e->chunk->len = CHUNK;

    char err[256];
    sg_http_server_config_t sc;
    sg_http_server_config_init(&sc);
    sc.handler = up_handler;
    sc.data = e;
    sc.limits.max_body_bytes = 0;
    assert_int_equal(sg_http_server_new(&e->loop, &sc, &e->up), 0);
    assert_int_equal(sg_http_server_listen(e->up, e->up_origin, err, sizeof(err)), 0);

    sg_http_server_config_init(&sc);
    sc.handler = gw_handler;
    sc.data = e;
    sc.limits.max_body_bytes = 0;
    assert_int_equal(sg_http_server_new(&e->loop, &sc, &e->gw), 0);
    assert_int_equal(sg_http_server_listen(e->gw, "127.0.0.1:0", err, sizeof(err)), 0);
    snprintf(e->gw_origin, sizeof(e->gw_origin), "http://127.0.0.1:%d", sg_http_server_port(e->gw));

    assert_int_equal(sg_http_client_new(&e->loop, NULL, &e->gwc), 0);
    assert_int_equal(sg_http_client_new(&e->loop, NULL, &e->c), 0);
}

static void on_closed(void *d)
{
    (*(int *)d)++;
}

static void on_srv_closed(sg_http_server_t *s, void *d)
{
    (void)s;
    ((env_t *)d)->closed++;
}

static void env_done(env_t *e)
{
    sg_http_client_close(e->c, on_closed, &e->closed);
    sg_http_client_close(e->gwc, on_closed, &e->closed);
    sg_http_server_close(e->gw, on_srv_closed);
    sg_http_server_close(e->up, on_srv_closed);
    uv_close((uv_handle_t *)&e->watchdog, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(e->closed, 4);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    sg_buf_unref(e->chunk);
    char p[128];
    snprintf(p, sizeof(p), "%s/execd.sock", e->dir);
    unlink(p);
    rmdir(e->dir);
}

static void run_until_done(env_t *e)
{
    for (long i = 0; !e->done && !e->timed_out && i < 100000000; i++)
        uv_run(&e->loop, UV_RUN_ONCE);
    assert_false(e->timed_out);
}

/* --- client */

static void c_response(sg_http_creq_t *r, void *data, int status, const sg_hdrs_t *h)
{
    env_t *e = data;
    (void)r;
    e->status = status;
    if (sg_hdrs_get(h, "Keep-Alive") || sg_hdrs_get(h, "Trailer")) e->err = -1;
}

static void note_queues(env_t *e)
{
    size_t q = e->creq ? sg_http_creq_queued(e->creq) : 0;
    if (q > e->max_queued) e->max_queued = q;
}

static void c_body(sg_http_creq_t *r, void *data, const char *p, size_t n)
{
    env_t *e = data;
    (void)r;
    e->got += n;
    if (e->body_len + n < sizeof(e->body)) {
        memcpy(e->body + e->body_len, p, n);
        e->body_len += n;
        e->body[e->body_len] = '\0';
    }
    if (e->cancel_after_init && strstr(e->body, "\"init\"")) {
        e->cancel_after_init = 0;
        sg_http_creq_cancel(r); /* c_done runs now */
        return;
    }
    if (e->sse_req && strstr(e->body, "\"init\"") && e->sse_events == 0) {
        /* The first event reached the client: only now does the upstream send the next. */
        e->sse_events = 1;
        static const char ev2[] = "data: {\"type\":\"execution_complete\"}\n\n";
        sg_http_resp_write_copy(e->sse_req, ev2, sizeof(ev2) - 1);
        sg_http_resp_end(e->sse_req);
        e->sse_req = NULL;
    }
}

static void c_done(sg_http_creq_t *r, void *data, int err, const char *msg)
{
    env_t *e = data;
    (void)r;
    (void)msg;
    if (err) e->err = err;
    e->creq = NULL;
    e->done = 1;
}

static void c_drain(sg_http_creq_t *r, void *data);

static void c_pump(env_t *e)
{
    while (e->creq && e->sent < UPLOAD_BYTES) {
        int w = sg_http_creq_write_buf(e->creq, e->chunk, 0, CHUNK);
        note_queues(e);
        if (w < 0) {
            e->err = w;
            return;
        }
        e->sent += CHUNK;
        if (e->sent == UPLOAD_BYTES) sg_http_creq_end(e->creq);
        if (w == 1) return;
    }
}

static void c_drain(sg_http_creq_t *r, void *data)
{
    (void)r;
    c_pump(data);
}

static void request(env_t *e, const char *method, const char *target, const sg_hdrs_t *h,
                    int stream, int64_t cl)
{
    e->done = e->err = e->status = 0;
    e->body_len = 0;
    e->body[0] = '\0';
    e->got = e->sent = 0;
    sg_http_creq_opts_t o;
    memset(&o, 0, sizeof(o));
    o.method = method;
    o.origin = e->gw_origin;
    o.target = target;
    o.headers = h;
    o.stream_body = stream;
    o.content_length = cl;
    o.on_response = c_response;
    o.on_body = c_body;
    o.on_done = c_done;
    o.on_drain = c_drain;
    o.data = e;
    assert_int_equal(sg_http_request(e->c, &o, &e->creq), 0);
}

static long maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_upload_1g(void **state)
{
    (void)state;
    env_t *e = sg_xcalloc(1, sizeof(*e));
    env_init(e);
    long rss0 = maxrss_kb();
    request(e, "POST", "/upload", NULL, 1, (int64_t)UPLOAD_BYTES);
    c_pump(e);
    run_until_done(e);
    assert_int_equal(e->err, 0);
    assert_int_equal(e->status, 200);
    assert_int_equal(e->up_bytes, UPLOAD_BYTES);
    assert_string_equal(e->body, "{\"bytes\":1073741824}");
    /* Flat memory: the queues stay near their marks; RSS grows far less than what passed. */
    fprintf(stderr, "upload: %llu bytes upstream, max queued %zu, rss +%ld KiB\n",
            (unsigned long long)e->up_bytes, e->max_queued, maxrss_kb() - rss0);
    assert_true(e->max_queued <= (4u << 20));
    long grown_mb = (maxrss_kb() - rss0) / 1024;
    if (grown_mb > 128) fail_msg("RSS grew %ld MiB for a 1 GiB upload", grown_mb);

    /* chunked upload (no Content-Length) passes too */
    request(e, "POST", "/upload", NULL, 1, -1);
    e->sent = UPLOAD_BYTES - 4 * CHUNK;
    c_pump(e);
    run_until_done(e);
    assert_int_equal(e->status, 200);
    assert_int_equal(e->up_bytes, 4 * CHUNK);
    env_done(e);
    free(e);
}

static void test_download(void **state)
{
    (void)state;
    env_t *e = sg_xcalloc(1, sizeof(*e));
    env_init(e);
    long rss0 = maxrss_kb();
    request(e, "GET", "/download", NULL, 0, -1);
    run_until_done(e);
    assert_int_equal(e->err, 0);
    assert_int_equal(e->status, 200);
    assert_int_equal(e->got, DOWNLOAD_BYTES);
    long grown_mb = (maxrss_kb() - rss0) / 1024;
    if (grown_mb > 128) fail_msg("RSS grew %ld MiB for a 256 MiB download", grown_mb);
    env_done(e);
    free(e);
}

static void test_sse_unbuffered(void **state)
{
    (void)state;
    env_t *e = sg_xcalloc(1, sizeof(*e));
    env_init(e);
    request(e, "GET", "/sse", NULL, 0, -1);
    run_until_done(e);
    if (!strstr(e->body, "execution_complete")) fail_msg("err %d body '%s'", e->err, e->body);
    assert_int_equal(e->err, 0);
    assert_int_equal(e->sse_events, 1);
    assert_non_null(strstr(e->body, "execution_complete"));
    env_done(e);
    free(e);
}

/* The upstream keeps streaming events until a write fails (bounded by count). */
static void on_tick(uv_timer_t *t)
{
    env_t *e = t->data;
    static const char ping[] = "data: {\"type\":\"ping\"}\n\n";
    if (!e->sse_req) return;
    if (sg_http_resp_write_copy(e->sse_req, ping, sizeof(ping) - 1) < 0 ||
        sg_http_req_aborted(e->sse_req)) {
        e->up_saw_close = 1;
        sg_http_req_release(e->sse_req);
        e->sse_req = NULL;
        uv_timer_stop(t);
    }
}

static void test_client_gone_mid_stream(void **state)
{
    (void)state;
    env_t *e = sg_xcalloc(1, sizeof(*e));
    env_init(e);
    uv_timer_init(&e->loop, &e->tick);
    e->tick.data = e;
    e->cancel_after_init = 1;
    request(e, "GET", "/sse", NULL, 0, -1);
    run_until_done(e);
    assert_int_equal(e->err, SG_ECLOSED);
    /* The gateway cancels its upstream exchange: the upstream's stream fails soon. */
    uv_timer_start(&e->tick, on_tick, 10, 10);
    for (long i = 0; !e->up_saw_close && !e->timed_out && i < 100000000; i++)
        uv_run(&e->loop, UV_RUN_ONCE);
    assert_int_equal(e->up_saw_close, 1);
    uv_close((uv_handle_t *)&e->tick, NULL);
    env_done(e);
    free(e);
}

static void test_headers_and_target(void **state)
{
    (void)state;
    env_t *e = sg_xcalloc(1, sizeof(*e));
    env_init(e);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "OPEN-SANDBOX-API-KEY", "secret");
    sg_hdrs_addz(&h, "Cookie", "a=b");
    sg_hdrs_addz(&h, "X-Custom", "kept");
    sg_hdrs_addz(&h, "X-EXECD-ACCESS-TOKEN", "forged");
    request(e, "GET", "/headers?path=%2Ftmp&x=1", &h, 0, -1);
    sg_hdrs_free(&h);
    run_until_done(e);
    assert_int_equal(e->err, 0);
    assert_int_equal(e->status, 201);
    assert_string_equal(e->body, "/headers?path=%2Ftmp&x=1");
    const char *s = e->seen_headers;
    assert_non_null(strstr(s, "X-Custom: kept"));
    assert_null(strcasestr(s, "open-sandbox-api-key"));
    assert_null(strcasestr(s, "cookie"));
    assert_null(strstr(s, "forged"));
    assert_non_null(strstr(s, "X-EXECD-ACCESS-TOKEN: tok"));
    assert_non_null(strstr(s, "X-Forwarded-Proto: http"));
    assert_non_null(strstr(s, "X-Forwarded-For: 127.0.0.1"));
    assert_non_null(strstr(s, "X-Forwarded-Host: 127.0.0.1:"));
    env_done(e);
    free(e);
}

static void test_upstream_gone(void **state)
{
    (void)state;
    env_t *e = sg_xcalloc(1, sizeof(*e));
    env_init(e);
    char gone[160];
    snprintf(gone, sizeof(gone), "unix:%s/nobody.sock", e->dir);
    g_origin = gone;
    request(e, "GET", "/ping", NULL, 0, -1);
    run_until_done(e);
    assert_int_equal(e->status, 502);
    assert_non_null(strstr(e->body, "\"code\":\"GENERAL::UNKNOWN_ERROR\""));
    assert_non_null(strstr(e->body, "\"message\":\"Could not reach the sandbox's execd"));
    /* with a request body: still 502, the body is not needed */
    request(e, "POST", "/upload", NULL, 1, 4 * CHUNK);
    e->sent = UPLOAD_BYTES - 4 * CHUNK;
    c_pump(e);
    run_until_done(e);
    assert_int_equal(e->status, 502);
    g_origin = e->up_origin;
    env_done(e);
    free(e);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as sandgate's main: a write to a gone peer is an error */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_and_target), cmocka_unit_test(test_sse_unbuffered),
        cmocka_unit_test(test_upstream_gone),      cmocka_unit_test(test_download),
        cmocka_unit_test(test_upload_1g),          cmocka_unit_test(test_client_gone_mid_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
