/* test_http_server.c: the HTTP server in-process, clients on the same loop (sg_sock).
 *
 * Each test builds a loop, a server and raw clients, runs the loop until a condition holds
 * (bounded in iterations and by a safety timer), closes the server and asserts the loop
 * closes with no handle left open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/http_server.h"
#include "sandgate/sock.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct client {
    sg_sock_t s;
    char *out;
    size_t out_len;
    char in[1 << 16];
    size_t in_len;
    int connected;
    int eof;
    int closed;
    uint64_t total_in;
    int close_after; /* close once this many bytes arrived (0 = never) */
    int no_read;     /* never read: a peer that stalls */
} client_t;

typedef struct fixture {
    uv_loop_t loop;
    sg_http_server_t *srv;
    int port;
    int srv_closed;
    int shutdown_done;
    int nlog;
    sg_http_access_t log[32];
    char log_ids[32][64];
    char log_paths[32][64];
    /* per-test knobs */
    int aborts;
    int releases;
    sg_http_req_t *held;
    uv_timer_t later;
    sg_http_req_t *later_req;
} fixture_t;

static fixture_t *F;

/* ------------------------------------------------------------------ clients */

static void c_on_close(sg_sock_t *s)
{
    client_t *c = s->data;
    c->closed = 1;
}

static void c_on_read(sg_sock_t *s, ssize_t n, const char *data)
{
    client_t *c = s->data;
    if (n < 0) {
        c->eof = 1;
        return;
    }
    size_t take = SG_MIN((size_t)n, sizeof(c->in) - 1 - c->in_len);
    memcpy(c->in + c->in_len, data, take);
    c->in_len += take;
    c->in[c->in_len] = '\0';
    c->total_in += (uint64_t)n;
    if (c->close_after && c->total_in >= (uint64_t)c->close_after) sg_sock_close(&c->s, c_on_close);
}

static void c_on_write(sg_sock_t *s, int status)
{
    (void)s;
    (void)status;
}

static void c_on_connect(sg_sock_t *s, int status)
{
    client_t *c = s->data;
    assert_int_equal(status, 0);
    c->connected = 1;
    if (!c->no_read) sg_sock_read_start(s, c_on_read);
    if (c->out_len) {
        uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
        assert_int_equal(sg_sock_write(s, &b, 1, c_on_write), 0);
    }
}

static client_t *client_new_opt(const char *host, int port, const char *req, int no_read)
{
    client_t *c = sg_xcalloc(1, sizeof(*c));
    c->no_read = no_read;
    c->out = sg_xstrdup(req);
    c->out_len = strlen(req);
    c->s.data = c;
    assert_int_equal(sg_sock_connect(&F->loop, &c->s, host, (uint16_t)port, NULL, NULL, c_on_connect), 0);
    return c;
}

static client_t *client_new(const char *host, int port, const char *req)
{
    return client_new_opt(host, port, req, 0);
}

static void client_free(client_t *c)
{
    free(c->out);
    free(c);
}

static void on_safety(uv_timer_t *t)
{
    (void)t;
    fail_msg("safety timeout");
}

/* Runs the loop until *flag (or cond()) holds; bounded. */
#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        uv_timer_t safety_;                                                                        \
        uv_timer_init(&F->loop, &safety_);                                                         \
        uv_timer_start(&safety_, on_safety, 20000, 0);                                             \
        for (int i_ = 0; i_ < 100000 && !(cond); i_++) uv_run(&F->loop, UV_RUN_ONCE);              \
        assert_true(cond);                                                                         \
        uv_close((uv_handle_t *)&safety_, NULL);                                                   \
        uv_run(&F->loop, UV_RUN_NOWAIT);                                                           \
    } while (0)

static int count_substr(const char *h, const char *n)
{
    int k = 0;
    for (const char *p = h; (p = strstr(p, n)); p += strlen(n)) k++;
    return k;
}

/* ------------------------------------------------------------------ server side */

static void on_access(const sg_http_access_t *e, void *data)
{
    fixture_t *f = data;
    if (f->nlog >= 32) return;
    f->log[f->nlog] = *e;
    snprintf(f->log_ids[f->nlog], 64, "%s", e->request_id);
    snprintf(f->log_paths[f->nlog], 64, "%s", e->path);
    f->nlog++;
}

static void on_later(uv_timer_t *t)
{
    fixture_t *f = t->data;
    assert_int_equal(sg_http_respond(f->later_req, 200, NULL, "late\n", 5), 0);
    f->later_req = NULL;
}

static sg_buf_t *big;

static void stream_drain(sg_http_req_t *req)
{
    while (sg_http_resp_write(req, big, 0, big->len) == 0) {
    }
}

static void stream_abort(sg_http_req_t *req)
{
    F->aborts++;
    /* Calls on an aborted request fail but are safe; ending drops our reference. */
    assert_int_equal(sg_http_resp_write_copy(req, "x", 1), SG_ECLOSED);
    assert_int_equal(sg_http_resp_end(req), SG_ECLOSED);
}

/* /pausing: pauses the body on every piece and resumes it from a timer, so the pause can
 * land on the very last bytes of a Content-Length body. */
static void pausing_resume(uv_timer_t *t)
{
    fixture_t *f = t->data;
    sg_http_req_resume_body(f->later_req);
}

static void pausing_body(sg_http_req_t *req, const char *data, size_t len, void *ud)
{
    fixture_t *f = ud;
    (void)data;
    if (data == NULL) {
        char out[64];
        int n = snprintf(out, sizeof(out), "got %d bytes\n", f->releases);
        f->later_req = NULL;
        sg_http_respond(req, 200, NULL, out, (size_t)n);
        return;
    }
    f->releases += (int)len; /* reused as the byte counter */
    sg_http_req_pause_body(req);
    f->later_req = req;
    f->later.data = f;
    uv_timer_start(&f->later, pausing_resume, 1, 0);
}

static void handler(sg_http_req_t *req, void *data)
{
    fixture_t *f = data;
    const char *path = sg_http_req_path(req);
    if (strcmp(path, "/pausing") == 0) {
        sg_http_req_read_body(req, pausing_body, f);
    } else if (strcmp(path, "/hello") == 0) {
        sg_http_respond(req, 200, NULL, "hello\n", 5 + 1);
    } else if (strcmp(path, "/later") == 0) {
        /* Answer on a later loop iteration. */
        f->later_req = req;
        uv_timer_start(&f->later, on_later, 10, 0);
    } else if (strcmp(path, "/forever") == 0) {
        /* Streams until the client goes away. */
        sg_http_req_on_drain(req, stream_drain);
        sg_http_req_on_abort(req, stream_abort);
        assert_int_equal(sg_http_resp_start(req, 200, NULL), 0);
        stream_drain(req);
    } else if (strcmp(path, "/hold") == 0) {
        /* Keeps an extra reference past the server's life. */
        f->held = sg_http_req_ref(req);
        sg_http_respond(req, 200, NULL, "held\n", 5);
    } else if (strcmp(path, "/release") == 0) {
        f->releases++;
        sg_http_req_release(req); /* no response: the server answers 500 */
    } else if (strcmp(path, "/json") == 0) {
        json_t *j = json_pack("{s:s}", "q", sg_http_req_query(req));
        sg_http_respond_json(req, 201, j);
        json_decref(j);
    } else if (strcmp(path, "/badhdr") == 0) {
        sg_hdrs_t h;
        sg_hdrs_init(&h);
        sg_hdrs_addz(&h, "X-Evil", "a\r\nSet-Cookie: x");
        assert_int_equal(sg_http_respond(req, 200, &h, "x", 1), SG_EINVAL);
        sg_hdrs_free(&h);
    } else {
        sg_http_respond_error(req, 404, "NOT_FOUND", "no such route");
    }
}

static void on_srv_closed(sg_http_server_t *s, void *data)
{
    (void)s;
    fixture_t *f = data;
    f->srv_closed = 1;
}

static void on_shutdown(sg_http_server_t *s, void *data)
{
    fixture_t *f = data;
    f->shutdown_done = 1;
    sg_http_server_close(s, on_srv_closed);
}

static int setup(void **state)
{
    fixture_t *f = sg_xcalloc(1, sizeof(*f));
    F = f;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    sg_http_server_config_t cfg;
    sg_http_server_config_init(&cfg);
    cfg.handler = handler;
    cfg.access_log = on_access;
    cfg.data = f;
    cfg.limits.write_high_water = 64 * 1024;
    assert_int_equal(sg_http_server_new(&f->loop, &cfg, &f->srv), 0);
    char err[256];
    assert_int_equal(sg_http_server_listen(f->srv, "127.0.0.1:0", err, sizeof(err)), 0);
    f->port = sg_http_server_port(f->srv);
    assert_true(f->port > 0);
    uv_timer_init(&f->loop, &f->later);
    f->later.data = f;
    if (!big) {
        big = sg_buf_new(32 * 1024);
        memset(big->data, 'b', big->cap);
        big->len = big->cap;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (!f->srv_closed) {
        sg_http_server_close(f->srv, on_srv_closed);
        RUN_UNTIL(f->srv_closed);
    }
    uv_close((uv_handle_t *)&f->later, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left open */
    free(f);
    F = NULL;
    return 0;
}

/* ------------------------------------------------------------------ tests */

static void test_defaults(void **state)
{
    (void)state;
    sg_http_server_config_t cfg;
    sg_http_server_config_init(&cfg);
    assert_int_equal(cfg.limits.max_header_bytes, 16 * 1024);
    assert_int_equal(cfg.limits.max_url_bytes, 8 * 1024);
    assert_true(cfg.limits.header_timeout_ms > 0 && cfg.limits.idle_timeout_ms > 0);
    sg_http_server_t *s;
    assert_int_equal(sg_http_server_new(&F->loop, &cfg, &s), SG_EINVAL); /* no handler */
    char err[128];
    assert_int_equal(sg_http_server_listen(F->srv, "nonsense", err, sizeof(err)), SG_EINVAL);
    assert_true(strlen(err) > 0);
    assert_int_equal(sg_http_server_listen(F->srv, "999.1.1.1:80", err, sizeof(err)), SG_EINVAL);
}

static void test_pause_on_last_body_bytes(void **state)
{
    fixture_t *f = *state;
    /* The whole request in one write: the handler pauses on the body's last (only) piece,
     * after which the client sends nothing more (nothing is left unparsed to restart the
     * parser). The body must still end and be answered on the kept-alive connection. */
    const char *reqs = "POST /pausing HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    client_t *c = client_new("127.0.0.1", f->port, reqs);
    RUN_UNTIL(strstr(c->in, "got 5 bytes"));
    assert_null(strstr(c->in, "Connection: close"));
    sg_sock_close(&c->s, c_on_close);
    RUN_UNTIL(c->closed);
    client_free(c);
}

static void test_keepalive_pipelining_order(void **state)
{
    fixture_t *f = *state;
    const char *reqs = "GET /later HTTP/1.1\r\nHost: x\r\nX-Request-ID: r1\r\n\r\n"
                       "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-ID: r2\r\n\r\n"
                       "GET /json?a=b HTTP/1.1\r\nHost: x\r\nX-Request-ID: r3\r\n\r\n"
                       "GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-ID: r4\r\n\r\n";
    client_t *c = client_new("127.0.0.1", f->port, reqs);
    RUN_UNTIL(count_substr(c->in, "HTTP/1.1 ") == 4 && strstr(c->in, "no such route"));
    /* In order although the first one was answered on a later iteration. */
    const char *p1 = strstr(c->in, "late\n"), *p2 = strstr(c->in, "hello\n");
    const char *p3 = strstr(c->in, "{\"q\":\"a=b\"}"), *p4 = strstr(c->in, "no such route");
    assert_non_null(p1);
    assert_non_null(p2);
    assert_non_null(p3);
    assert_true(p1 < p2 && p2 < p3 && p3 < p4);
    assert_non_null(strstr(c->in, "HTTP/1.1 201 Created"));
    assert_int_equal(c->eof, 0); /* still open: keep-alive */
    assert_int_equal(f->nlog, 4);
    assert_string_equal(f->log_ids[0], "r1");
    assert_string_equal(f->log_ids[3], "r4");
    assert_int_equal(f->log[3].status, 404);
    assert_true(f->log[0].bytes_out > 0 && f->log[0].bytes_in > 0);
    assert_int_equal(sg_http_server_connections(f->srv), 1);
    sg_sock_close(&c->s, c_on_close);
    RUN_UNTIL(c->closed && sg_http_server_connections(f->srv) == 0);
    client_free(c);
}

static void test_abort_mid_stream(void **state)
{
    fixture_t *f = *state;
    client_t *c = client_new("127.0.0.1", f->port, "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n");
    c->close_after = 1 << 20; /* read 1 MiB of the endless stream, then go away */
    RUN_UNTIL(f->aborts == 1 && sg_http_server_connections(f->srv) == 0);
    assert_true(c->closed);
    assert_int_equal(f->nlog, 1);
    assert_int_equal(f->log[0].aborted, 1);
    assert_int_equal(f->log[0].status, 200);
    client_free(c);
}

static void test_release_without_response_and_bad_headers(void **state)
{
    fixture_t *f = *state;
    client_t *c = client_new("127.0.0.1", f->port,
                             "GET /release HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET /badhdr HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(count_substr(c->in, "HTTP/1.1 500") == 2);
    assert_null(strstr(c->in, "Set-Cookie"));
    assert_non_null(strstr(c->in, "\"code\":\"INTERNAL_ERROR\""));
    assert_int_equal(f->releases, 1);
    sg_sock_close(&c->s, c_on_close);
    RUN_UNTIL(c->closed);
    client_free(c);
}

static void test_ref_outlives_server(void **state)
{
    fixture_t *f = *state;
    client_t *c = client_new("127.0.0.1", f->port, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(strstr(c->in, "held\n") != NULL);
    sg_http_server_close(f->srv, on_srv_closed);
    RUN_UNTIL(f->srv_closed && c->eof);
    /* The server is gone; the request we hold is still readable and inert. */
    assert_string_equal(sg_http_req_path(f->held), "/hold");
    assert_true(sg_http_req_aborted(f->held));
    assert_int_equal(sg_http_resp_write_copy(f->held, "x", 1), SG_ECLOSED);
    sg_http_req_unref(f->held);
    sg_sock_close(&c->s, c_on_close);
    RUN_UNTIL(c->closed);
    client_free(c);
}

static void test_graceful_shutdown(void **state)
{
    fixture_t *f = *state;
    client_t *idle = client_new("127.0.0.1", f->port, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(strstr(idle->in, "hello\n") != NULL);
    client_t *slow = client_new("127.0.0.1", f->port, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(f->later_req != NULL);
    sg_http_server_shutdown(f->srv, 10000, on_shutdown);
    /* The idle keep-alive connection is closed, the in-flight one answered (with close). */
    RUN_UNTIL(f->shutdown_done && f->srv_closed);
    assert_true(idle->eof);
    assert_non_null(strstr(slow->in, "late\n"));
    assert_non_null(strstr(slow->in, "Connection: close"));
    assert_true(slow->eof);
    sg_sock_close(&idle->s, c_on_close);
    sg_sock_close(&slow->s, c_on_close);
    RUN_UNTIL(idle->closed && slow->closed);
    client_free(idle);
    client_free(slow);
}

static void test_shutdown_deadline_cuts(void **state)
{
    fixture_t *f = *state;
    client_t *c = client_new("127.0.0.1", f->port, "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(c->total_in > 100000);
    sg_http_server_shutdown(f->srv, 50, on_shutdown);
    RUN_UNTIL(f->shutdown_done && f->srv_closed);
    assert_int_equal(f->aborts, 1);
    sg_sock_close(&c->s, c_on_close);
    RUN_UNTIL(c->closed);
    client_free(c);
}

static void test_ipv6_and_unix(void **state)
{
    fixture_t *f = *state;
    char err[256];
    char path[128];
    snprintf(path, sizeof(path), "unix:/tmp/sg-test-http-%d.sock", (int)getpid());
    assert_int_equal(sg_http_server_listen(f->srv, path, err, sizeof(err)), 0);
    client_t *u = client_new(path, 0, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(strstr(u->in, "hello\n") != NULL);
    sg_sock_close(&u->s, c_on_close);
    RUN_UNTIL(u->closed);
    client_free(u);
    /* IPv6: a second server listening only on [::1]. */
    sg_http_server_config_t cfg;
    sg_http_server_config_init(&cfg);
    cfg.handler = handler;
    cfg.data = f;
    sg_http_server_t *s6;
    int closed6 = 0;
    assert_int_equal(sg_http_server_new(&f->loop, &cfg, &s6), 0);
    if (sg_http_server_listen(s6, "[::1]:0", err, sizeof(err)) != 0) {
        print_message("no IPv6 loopback here: %s\n", err);
    } else {
        client_t *c = client_new("::1", sg_http_server_port(s6), "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        RUN_UNTIL(strstr(c->in, "hello\n") != NULL);
        sg_sock_close(&c->s, c_on_close);
        RUN_UNTIL(c->closed);
        client_free(c);
    }
    f->srv_closed = 0;
    sg_http_server_close(s6, on_srv_closed);
    RUN_UNTIL(f->srv_closed);
    (void)closed6;
    f->srv_closed = 0;
}

static void test_send_timeout_cuts_stalled_reader(void **state)
{
    fixture_t *f = *state;
    sg_http_server_config_t cfg;
    sg_http_server_config_init(&cfg);
    cfg.handler = handler;
    cfg.data = f;
    cfg.access_log = on_access;
    cfg.sndbuf = 16 * 1024;
    cfg.limits.write_high_water = 16 * 1024;
    cfg.limits.send_timeout_ms = 200;
    sg_http_server_t *s2;
    assert_int_equal(sg_http_server_new(&f->loop, &cfg, &s2), 0);
    char err[256];
    assert_int_equal(sg_http_server_listen(s2, "127.0.0.1:0", err, sizeof(err)), 0);
    client_t *c = client_new_opt("127.0.0.1", sg_http_server_port(s2),
                                 "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n", 1);
    /* The client never reads: kernel buffers fill, the write stalls, the send timeout cuts
     * the connection and the handler is told (abort). Pending output stayed bounded. */
    RUN_UNTIL(f->aborts == 1 && sg_http_server_connections(s2) == 0);
    assert_int_equal(f->nlog, 1);
    assert_int_equal(f->log[0].aborted, 1);
    assert_true(f->log[0].bytes_out < 64u * 1024 * 1024);
    sg_http_server_close(s2, on_srv_closed);
    RUN_UNTIL(f->srv_closed);
    f->srv_closed = 0;
    sg_sock_close(&c->s, c_on_close);
    RUN_UNTIL(c->closed);
    client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_pipelining_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_on_last_body_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_without_response_and_bad_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ref_outlives_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_graceful_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_deadline_cuts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_and_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_timeout_cuts_stalled_reader, setup, teardown),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    sg_buf_unref(big);
    return r;
}
