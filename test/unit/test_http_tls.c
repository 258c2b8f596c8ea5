/* test_http_tls.c: our HTTP client and our HTTP server speaking HTTPS to each other.
 *
 * The sock/TLS layer has its own tests (test_tls.c); this proves the two HTTP modules work
 * over it end to end: a keep-alive exchange with a body both ways, verification against the
 * right CA, and SG_ECERT for the wrong CA and for the wrong host name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/http_client.h"
#include "sandgate/http_server.h"
#include "sandgate/tls.h"

#include "../helpers/tls_harness.h"

typedef struct {
    uv_loop_t loop;
    sg_http_server_t *srv;
    sg_http_client_t *cli;
    sg_tls_ctx_t *srv_tls;
    sg_tls_ctx_t *cli_tls;
    int port;
    int done;     /* requests finished */
    int want;     /* requests to finish before shutting down */
    int err[4];   /* on_done err per request */
    int status[4];
    size_t body_len[4];
    char body[4][256];
    uv_timer_t guard;
} t_env_t;

static void on_body_all(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    (void)ud;
    if (err) {
        sg_http_req_release(req);
        return;
    }
    char out[300];
    int n = snprintf(out, sizeof(out), "echo:%.*s", (int)SG_MIN(len, 200), body);
    sg_http_respond(req, 200, NULL, out, (size_t)n);
}

static void handler(sg_http_req_t *req, void *data)
{
    (void)data;
    sg_http_req_read_all(req, 4096, on_body_all, NULL);
}

static void closed_srv(sg_http_server_t *s, void *d)
{
    (void)s;
    (void)d;
}

static void closed_cli(void *d)
{
    (void)d;
}

static void finish(t_env_t *e)
{
    sg_http_client_close(e->cli, closed_cli, NULL);
    sg_http_server_close(e->srv, closed_srv);
    uv_close((uv_handle_t *)&e->guard, NULL);
}

/* Request slots: data points at an int index; the env is found through a global (one test
 * runs at a time). */
static t_env_t *g_env;

static void on_response(sg_http_creq_t *r, void *data, int status, const sg_hdrs_t *h)
{
    (void)r;
    (void)h;
    g_env->status[(intptr_t)data] = status;
}

static void on_body(sg_http_creq_t *r, void *data, const char *p, size_t n)
{
    (void)r;
    int i = (int)(intptr_t)data;
    size_t room = sizeof(g_env->body[i]) - 1 - g_env->body_len[i];
    memcpy(g_env->body[i] + g_env->body_len[i], p, SG_MIN(n, room));
    g_env->body_len[i] += SG_MIN(n, room);
}

static void on_done(sg_http_creq_t *r, void *data, int err, const char *msg)
{
    (void)r;
    (void)msg;
    g_env->err[(intptr_t)data] = err;
    if (++g_env->done == g_env->want) finish(g_env);
}

static void on_guard(uv_timer_t *t)
{
    (void)t;
    fail_msg("guard timeout: the exchange did not finish");
}

static void env_start(t_env_t *e, const h_certs_t *c, const char *ca, int want)
{
    char err[256];
    memset(e, 0, sizeof(*e));
    g_env = e;
    e->want = want;
    assert_int_equal(uv_loop_init(&e->loop), 0);
    assert_int_equal(sg_tls_ctx_new_server(&e->srv_tls, c->cert, c->key, err, sizeof(err)), 0);
    assert_int_equal(sg_tls_ctx_new_client(&e->cli_tls, ca, 1, err, sizeof(err)), 0);
    sg_http_server_config_t sc;
    sg_http_server_config_init(&sc);
    sc.tls = e->srv_tls;
    sc.handler = handler;
    assert_int_equal(sg_http_server_new(&e->loop, &sc, &e->srv), 0);
    assert_int_equal(sg_http_server_listen(e->srv, "127.0.0.1:0", err, sizeof(err)), 0);
    e->port = sg_http_server_port(e->srv);
    assert_true(e->port > 0);
    sg_http_client_config_t cc;
    memset(&cc, 0, sizeof(cc));
    cc.tls = e->cli_tls;
    assert_int_equal(sg_http_client_new(&e->loop, &cc, &e->cli), 0);
    uv_timer_init(&e->loop, &e->guard);
    uv_timer_start(&e->guard, on_guard, 30000, 0);
}

static void request(t_env_t *e, int i, const char *host, const char *sni, const char *body)
{
    char origin[128];
    snprintf(origin, sizeof(origin), "https://%s:%d", host, e->port);
    sg_http_creq_opts_t o;
    memset(&o, 0, sizeof(o));
    o.method = "POST";
    o.origin = origin;
    o.target = "/x";
    o.body = body;
    o.body_len = strlen(body);
    o.sni = sni;
    o.on_response = on_response;
    o.on_body = on_body;
    o.on_done = on_done;
    o.data = (void *)(intptr_t)i;
    assert_int_equal(sg_http_request(e->cli, &o, NULL), 0);
}

static void env_finish(t_env_t *e)
{
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    sg_tls_ctx_free(e->srv_tls);
    sg_tls_ctx_free(e->cli_tls);
}

static h_certs_t certs;

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    h_certs_make(&certs);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_certs_remove(&certs);
    return 0;
}

static void test_https_keepalive_roundtrip(void **state)
{
    (void)state;
    t_env_t e;
    env_start(&e, &certs, certs.ca, 2);
    request(&e, 0, "127.0.0.1", NULL, "first");
    request(&e, 1, "127.0.0.1", NULL, "second");
    env_finish(&e);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(e.err[i], 0);
        assert_int_equal(e.status[i], 200);
    }
    assert_string_equal(e.body[0], "echo:first");
    assert_string_equal(e.body[1], "echo:second");
}

static void test_https_by_name(void **state)
{
    (void)state;
    t_env_t e;
    env_start(&e, &certs, certs.ca, 1);
    /* Connect to the IP, verify the name the certificate carries. */
    request(&e, 0, "127.0.0.1", "localhost", "named");
    env_finish(&e);
    assert_int_equal(e.err[0], 0);
    assert_string_equal(e.body[0], "echo:named");
}

static void test_https_wrong_ca(void **state)
{
    (void)state;
    t_env_t e;
    env_start(&e, &certs, certs.other_ca, 1);
    request(&e, 0, "127.0.0.1", NULL, "x");
    env_finish(&e);
    assert_int_equal(e.err[0], SG_ECERT);
    assert_int_equal(e.status[0], 0);
}

static void test_https_wrong_host(void **state)
{
    (void)state;
    t_env_t e;
    env_start(&e, &certs, certs.ca, 1);
    request(&e, 0, "127.0.0.1", "not-this-host.example", "x");
    env_finish(&e);
    assert_int_equal(e.err[0], SG_ECERT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_https_keepalive_roundtrip),
        cmocka_unit_test(test_https_by_name),
        cmocka_unit_test(test_https_wrong_ca),
        cmocka_unit_test(test_https_wrong_host),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
