/* test_http_client.c: the HTTP client against a scripted raw-libuv server on loopback.
 *
 * The server (srv_*) accepts TCP or unix-socket connections, parses requests with llhttp (so
 * it can count upload bytes) and, when a request is complete, calls the test's script, which
 * writes exact bytes, in chosen pieces, with chosen delays, or closes / resets. Each test runs
 * one loop, bounded by a watchdog, and ends by closing client and server and checking that
 * uv_loop_close() succeeds (no handle left open). */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "http_client_int.h"
#include "sandgate/common.h"
#include "sandgate/http_client.h"

/* ------------------------------------------------------------------ scripted server */

typedef struct srv srv_t;
typedef struct sconn sconn_t;
typedef void (*script_fn)(sconn_t *sc);

struct sconn {
    union {
        uv_handle_t h;
        uv_stream_t st;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    srv_t *s;
    sconn_t *next;
    llhttp_t p;
    int id;
    int nreq;         /* requests completed on this connection */
    uint64_t body;    /* body bytes of the current request */
    char method[16];
    char target[128];
    int refs;
    int closed;
    int eof;          /* the client closed its side */
    int at_headers;   /* the parser stopped after a request head */
};

struct srv {
    uv_loop_t *loop;
    union {
        uv_handle_t h;
        uv_stream_t st;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } l;
    int is_pipe;
    int port;
    char path[108];
    int accepts, open, max_open, requests, eofs;
    uint64_t body_total;
    script_fn on_request;
    script_fn on_headers; /* optional: runs when a request head is complete */
    script_fn on_accept;
    sconn_t *conns;
    int pause_reading_ms; /* on accept: do not read for this long (upload backpressure) */
    void *ud;
};

static llhttp_settings_t srv_settings;

static void sconn_unref(sconn_t *sc)
{
    if (--sc->refs == 0) free(sc);
}

static void on_sconn_closed(uv_handle_t *h)
{
    sconn_t *sc = h->data;
    sc->s->open--;
    sconn_unref(sc);
}

static void sconn_close(sconn_t *sc)
{
    if (sc->closed) return;
    sc->closed = 1;
    srv_t *s = sc->s;
    for (sconn_t **pp = &s->conns; *pp; pp = &(*pp)->next)
        if (*pp == sc) {
            *pp = sc->next;
            break;
        }
    uv_close(&sc->u.h, on_sconn_closed);
}

static void sconn_reset(sconn_t *sc)
{
    if (sc->closed) return;
    if (sc->s->is_pipe) {
        sconn_close(sc);
        return;
    }
    sc->closed = 1;
    srv_t *s = sc->s;
    for (sconn_t **pp = &s->conns; *pp; pp = &(*pp)->next)
        if (*pp == sc) {
            *pp = sc->next;
            break;
        }
    assert_int_equal(uv_tcp_close_reset(&sc->u.tcp, on_sconn_closed), 0);
}

typedef struct swrite {
    uv_write_t w;
    sconn_t *sc;
    void (*then)(sconn_t *sc);
    char data[];
} swrite_t;

static void on_swrite(uv_write_t *w, int status)
{
    swrite_t *sw = (swrite_t *)w;
    if (status == 0 && sw->then && !sw->sc->closed) sw->then(sw->sc);
    sconn_unref(sw->sc);
    free(sw);
}

static void srv_send_then(sconn_t *sc, const void *p, size_t n, void (*then)(sconn_t *sc))
{
    if (sc->closed) return;
    swrite_t *sw = malloc(sizeof(*sw) + n);
    memcpy(sw->data, p, n);
    sw->sc = sc;
    sw->then = then;
    sc->refs++;
    uv_buf_t b = uv_buf_init(sw->data, (unsigned)n);
    if (uv_write(&sw->w, &sc->u.st, &b, 1, on_swrite) != 0) {
        sconn_unref(sc);
        free(sw);
    }
}

static void srv_send(sconn_t *sc, const char *s) { srv_send_then(sc, s, strlen(s), NULL); }

typedef struct slater {
    uv_timer_t t;
    sconn_t *sc;
    void (*fn)(sconn_t *sc, void *arg);
    void *arg;
    size_t len;
    char data[];
} slater_t;

static void on_later_closed(uv_handle_t *h)
{
    slater_t *l = h->data;
    sconn_unref(l->sc);
    free(l);
}

static void on_later(uv_timer_t *t)
{
    slater_t *l = t->data;
    if (!l->sc->closed) l->fn(l->sc, l->arg);
    uv_close((uv_handle_t *)t, on_later_closed);
}

static slater_t *srv_later(sconn_t *sc, uint64_t ms, void (*fn)(sconn_t *sc, void *arg), void *arg,
                           const void *data, size_t len)
{
    slater_t *l = calloc(1, sizeof(*l) + len);
    l->sc = sc;
    l->fn = fn;
    l->arg = arg;
    l->len = len;
    if (len) memcpy(l->data, data, len);
    sc->refs++;
    uv_timer_init(sc->s->loop, &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, on_later, ms, 0);
    return l;
}

static void later_send_piece(sconn_t *sc, void *arg)
{
    slater_t *l = arg;
    srv_send_then(sc, l->data, l->len, NULL);
}

/* Sends text in pieces cut at the given offsets, gap_ms apart (each piece a separate read on
 * the client side in practice; correctness never depends on that). */
static void srv_send_pieces(sconn_t *sc, const char *text, const size_t *cuts, size_t ncuts, uint64_t gap_ms)
{
    size_t n = strlen(text), start = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        if (end > n) end = n;
        if (end <= start && i < ncuts) continue;
        slater_t *l = srv_later(sc, gap_ms * (i + 1), later_send_piece, NULL, text + start, end - start);
        l->arg = l;
        start = end;
    }
}

static void later_close(sconn_t *sc, void *arg) { sconn_close(sc); }
static void later_reset(sconn_t *sc, void *arg) { sconn_reset(sc); }

static int srv_on_body(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *sc = p->data;
    sc->body += n;
    sc->s->body_total += n;
    return 0;
}

static int srv_on_method(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *sc = p->data;
    size_t l = strlen(sc->method);
    if (l + n < sizeof(sc->method)) {
        memcpy(sc->method + l, at, n);
        sc->method[l + n] = 0;
    }
    return 0;
}

static int srv_on_url(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *sc = p->data;
    size_t l = strlen(sc->target);
    if (l + n < sizeof(sc->target)) {
        memcpy(sc->target + l, at, n);
        sc->target[l + n] = 0;
    }
    return 0;
}

static int srv_on_begin(llhttp_t *p)
{
    sconn_t *sc = p->data;
    sc->body = 0;
    sc->method[0] = sc->target[0] = 0;
    return 0;
}

static int srv_on_headers_complete(llhttp_t *p)
{
    sconn_t *sc = p->data;
    if (!sc->s->on_headers) return 0;
    sc->at_headers = 1;
    return HPE_PAUSED;
}

static int srv_on_complete(llhttp_t *p)
{
    sconn_t *sc = p->data;
    sc->nreq++;
    sc->s->requests++;
    return HPE_PAUSED; /* run the script after execute() returns */
}

static void srv_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
    static char buf[256 * 1024];
    *b = uv_buf_init(buf, sizeof(buf));
}

static void srv_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    sconn_t *sc = st->data;
    if (n < 0) {
        sc->eof = 1;
        sc->s->eofs++;
        sconn_close(sc);
        return;
    }
    const char *p = b->base;
    size_t left = (size_t)n;
    sc->refs++;
    while (left && !sc->closed) {
        llhttp_errno_t e = llhttp_execute(&sc->p, p, left);
        if (e == HPE_OK) break;
        if (e != HPE_PAUSED) {
            sconn_close(sc);
            break;
        }
        size_t used = (size_t)(llhttp_get_error_pos(&sc->p) - p);
        p += used;
        left -= used;
        llhttp_resume(&sc->p);
        if (sc->at_headers) {
            sc->at_headers = 0;
            sc->s->on_headers(sc);
        } else if (sc->s->on_request) {
            sc->s->on_request(sc);
        }
    }
    sconn_unref(sc);
}

static void later_start_reading(sconn_t *sc, void *arg) { uv_read_start(&sc->u.st, srv_alloc, srv_on_read); }

static void srv_on_conn(uv_stream_t *l, int status)
{
    srv_t *s = l->data;
    assert_int_equal(status, 0);
    sconn_t *sc = calloc(1, sizeof(*sc));
    sc->s = s;
    sc->refs = 1;
    if (s->is_pipe) uv_pipe_init(s->loop, &sc->u.pipe, 0);
    else uv_tcp_init(s->loop, &sc->u.tcp);
    sc->u.h.data = sc;
    assert_int_equal(uv_accept(l, &sc->u.st), 0);
    sc->id = ++s->accepts;
    s->open++;
    if (s->open > s->max_open) s->max_open = s->open;
    sc->next = s->conns;
    s->conns = sc;
    llhttp_init(&sc->p, HTTP_REQUEST, &srv_settings);
    sc->p.data = sc;
    if (s->on_accept) s->on_accept(sc);
    if (sc->closed) return;
    if (s->pause_reading_ms) srv_later(sc, (uint64_t)s->pause_reading_ms, later_start_reading, NULL, NULL, 0);
    else uv_read_start(&sc->u.st, srv_alloc, srv_on_read);
}

static void srv_start(uv_loop_t *loop, srv_t *s, int pipe)
{
    memset(s, 0, sizeof(*s));
    srv_settings.on_body = srv_on_body;
    srv_settings.on_method = srv_on_method;
    srv_settings.on_url = srv_on_url;
    srv_settings.on_message_begin = srv_on_begin;
    srv_settings.on_message_complete = srv_on_complete;
    srv_settings.on_headers_complete = srv_on_headers_complete;
    s->loop = loop;
    s->is_pipe = pipe;
    if (pipe) {
        snprintf(s->path, sizeof(s->path), "/tmp/sg-test-client-%d.sock", (int)getpid());
        unlink(s->path);
        assert_int_equal(uv_pipe_init(loop, &s->l.pipe, 0), 0);
        assert_int_equal(uv_pipe_bind(&s->l.pipe, s->path), 0);
    } else {
        struct sockaddr_in a;
        uv_ip4_addr("127.0.0.1", 0, &a);
        assert_int_equal(uv_tcp_init(loop, &s->l.tcp), 0);
        assert_int_equal(uv_tcp_bind(&s->l.tcp, (struct sockaddr *)&a, 0), 0);
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        uv_tcp_getsockname(&s->l.tcp, (struct sockaddr *)&ss, &len);
        s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    s->l.h.data = s;
    assert_int_equal(uv_listen(&s->l.st, 128, srv_on_conn), 0);
}

static void srv_stop(srv_t *s)
{
    while (s->conns) sconn_close(s->conns);
    uv_close(&s->l.h, NULL);
    if (s->is_pipe) unlink(s->path);
}

static void srv_origin(srv_t *s, char *buf, size_t n)
{
    if (s->is_pipe) snprintf(buf, n, "unix:%s", s->path);
    else snprintf(buf, n, "http://127.0.0.1:%d", s->port);
}

/* ------------------------------------------------------------------ client side helpers */

typedef struct res {
    sg_http_creq_t *r;
    int status;
    int done;
    int err;
    char msg[256];
    char *body;
    size_t body_len, body_cap;
    int count_only;
    uint64_t nbody;
    char hdr_x[64]; /* value of X-Test, if any */
    /* test hooks */
    void (*on_resp_hook)(struct res *x);
    void (*on_body_hook)(struct res *x);
    void (*on_done_hook)(struct res *x);
    void *ud;
    int body_while_paused;
    int paused;
} res_t;

static void c_on_response(sg_http_creq_t *r, void *data, int status, const sg_hdrs_t *h)
{
    res_t *x = data;
    x->status = status;
    const char *v = sg_hdrs_get(h, "x-test");
    if (v) snprintf(x->hdr_x, sizeof(x->hdr_x), "%s", v);
    if (x->on_resp_hook) x->on_resp_hook(x);
}

static void c_on_body(sg_http_creq_t *r, void *data, const char *p, size_t n)
{
    res_t *x = data;
    if (x->paused) x->body_while_paused++;
    x->nbody += n;
    if (!x->count_only) {
        if (x->body_len + n + 1 > x->body_cap) {
            x->body_cap = (x->body_len + n + 1) * 2;
            x->body = realloc(x->body, x->body_cap);
        }
        memcpy(x->body + x->body_len, p, n);
        x->body_len += n;
        x->body[x->body_len] = 0;
    }
    if (x->on_body_hook) x->on_body_hook(x);
}

static void c_on_done(sg_http_creq_t *r, void *data, int err, const char *msg)
{
    res_t *x = data;
    assert_int_equal(x->done, 0); /* exactly once */
    x->done = 1;
    x->err = err;
    snprintf(x->msg, sizeof(x->msg), "%s", msg ? msg : "");
    x->r = NULL;
    if (x->on_done_hook) x->on_done_hook(x); /* may free x */
}

static void res_free(res_t *x)
{
    free(x->body);
    x->body = NULL;
}

typedef struct env {
    uv_loop_t loop;
    uv_timer_t watchdog;
    int timed_out;
    srv_t srv;
    sg_http_client_t *c;
    char origin[160];
    int client_closed;
} env_t;

static void on_watchdog(uv_timer_t *t)
{
    env_t *e = t->data;
    e->timed_out = 1;
}

static void env_init(env_t *e, int pipe, const sg_http_client_config_t *cfg)
{
    memset(e, 0, sizeof(*e));
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->watchdog);
    e->watchdog.data = e;
    uv_timer_start(&e->watchdog, on_watchdog, 60000, 0); /* safety bound only */
    uv_unref((uv_handle_t *)&e->watchdog);
    srv_start(&e->loop, &e->srv, pipe);
    srv_origin(&e->srv, e->origin, sizeof(e->origin));
    assert_int_equal(sg_http_client_new(&e->loop, cfg, &e->c), 0);
}

/* Runs the loop until *flag becomes nonzero (bounded by the watchdog). */
static void run_until(env_t *e, const int *flag)
{
    for (int i = 0; !*flag && !e->timed_out && i < 100000000; i++) uv_run(&e->loop, UV_RUN_ONCE);
    assert_false(e->timed_out);
}

static void on_client_closed(void *d) { *(int *)d = 1; }

static void env_done(env_t *e)
{
    sg_http_client_close(e->c, on_client_closed, &e->client_closed);
    srv_stop(&e->srv);
    uv_close((uv_handle_t *)&e->watchdog, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(e->client_closed, 1);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

static sg_http_creq_t *get(env_t *e, const char *method, const char *target, res_t *x)
{
    sg_http_creq_opts_t o = {0};
    o.method = method;
    o.origin = e->origin;
    o.target = target;
    o.on_response = c_on_response;
    o.on_body = c_on_body;
    o.on_done = c_on_done;
    o.data = x;
    assert_int_equal(sg_http_request(e->c, &o, &x->r), 0);
    return x->r;
}

/* ------------------------------------------------------------------ tests: framing */

static const char RESP_CL[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Test: cl\r\n\r\nhello world";
static const char RESP_CHUNKED[] =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: chunked\r\n\r\n"
    "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n";

static void script_pieces(sconn_t *sc)
{
    const char *text = sc->s->ud;
    size_t n = strlen(text);
    /* Cut inside the status line, inside a header name, between CR and LF, inside the
     * chunk-size line, inside chunk data and inside the last chunk. */
    size_t cuts[] = {3, 12, 16, 17, n / 2, n / 2 + 1, n - 5, n - 1};
    srv_send_pieces(sc, text, cuts, SG_ARRAY_SIZE(cuts), 2);
}

static void check_framed(const char *resp, const char *xtest)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_pieces;
    e.srv.ud = (void *)resp;
    res_t x = {0};
    get(&e, "GET", "/a?b=c", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.status, 200);
    assert_string_equal(x.hdr_x, xtest);
    assert_string_equal(x.body, "hello world");
    res_free(&x);
    env_done(&e);
}

static void test_content_length(void **state) { check_framed(RESP_CL, "cl"); }
static void test_chunked(void **state) { check_framed(RESP_CHUNKED, "chunked"); }

static void script_close_delimited(sconn_t *sc)
{
    srv_send(sc, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ");
    slater_t *l = srv_later(sc, 10, later_send_piece, NULL, "the end", 7);
    l->arg = l;
    srv_later(sc, 20, later_close, NULL, NULL, 0);
}

static void test_close_delimited(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_close_delimited;
    res_t x = {0};
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body, "until the end");
    sg_http_client_stats_t st;
    sg_http_client_stats(e.c, NULL, &st);
    assert_int_equal(st.conns_idle, 0); /* never pooled */
    res_free(&x);
    env_done(&e);
}

/* The same reader the client uses, fed every 2-way and 3-way split of each response. */
typedef struct pres {
    char body[256];
    size_t n;
    int heads;
} pres_t;

static int p_head(sg__hresp_t *h)
{
    ((pres_t *)h->owner)->heads++;
    return 0;
}

static int p_body(sg__hresp_t *h, const char *p, size_t n)
{
    pres_t *r = h->owner;
    assert_true(r->n + n < sizeof(r->body));
    memcpy(r->body + r->n, p, n);
    r->n += n;
    return 0;
}

static int feed_split(const char *s, size_t n, size_t a, size_t b, pres_t *out)
{
    sg__hresp_t h;
    memset(out, 0, sizeof(*out));
    sg__hresp_init(&h, 4096, out, p_head, p_body);
    sg__hresp_reset(&h, 0);
    size_t cuts[3] = {a, b, n}, start = 0;
    int rc = SG__HR_OK;
    for (int i = 0; i < 3 && rc == SG__HR_OK; i++) {
        size_t used = 0;
        rc = sg__hresp_execute(&h, s + start, cuts[i] - start, &used);
        start = cuts[i];
    }
    sg__hresp_free(&h);
    return rc;
}

static void test_parser_every_split(void **state)
{
    const char *resps[] = {RESP_CL, RESP_CHUNKED};
    for (size_t k = 0; k < 2; k++) {
        size_t n = strlen(resps[k]);
        for (size_t a = 0; a <= n; a++)
            for (size_t b = a; b <= n; b++) {
                pres_t out;
                int rc = feed_split(resps[k], n, a, b, &out);
                assert_int_equal(rc, SG__HR_DONE);
                assert_int_equal(out.heads, 1);
                assert_int_equal(out.n, 11);
                assert_memory_equal(out.body, "hello world", 11);
            }
    }
}

/* 1xx interim responses are skipped; HEAD and 204 have no body yet keep the connection. */
static void script_interim(sconn_t *sc)
{
    if (strcmp(sc->method, "HEAD") == 0)
        srv_send(sc, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    else if (strcmp(sc->target, "/204") == 0)
        srv_send(sc, "HTTP/1.1 204 No Content\r\n\r\n");
    else
        srv_send(sc, "HTTP/1.1 100 Continue\r\nX-Test: interim\r\n\r\n"
                     "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
}

static void test_interim_head_204(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_interim;
    res_t x = {0}, y = {0}, z = {0};
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.status, 201);
    assert_string_equal(x.hdr_x, ""); /* the 100's headers are not the response's */
    assert_string_equal(x.body, "ok");
    get(&e, "HEAD", "/", &y);
    run_until(&e, &y.done);
    assert_int_equal(y.err, 0);
    assert_int_equal(y.status, 200);
    assert_int_equal(y.nbody, 0);
    get(&e, "GET", "/204", &z);
    run_until(&e, &z.done);
    assert_int_equal(z.err, 0);
    assert_int_equal(z.status, 204);
    assert_int_equal(e.srv.accepts, 1);
    res_free(&x);
    env_done(&e);
}

/* ------------------------------------------------------------------ keep-alive, cap, queue */

static void script_ok(sconn_t *sc)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Test: conn%d\r\n\r\n%s",
             (int)strlen(sc->target), sc->id, sc->target);
    srv_send(sc, buf);
}

static void test_keepalive_reuse(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_ok;
    for (int i = 0; i < 5; i++) {
        res_t x = {0};
        char target[32];
        snprintf(target, sizeof(target), "/req%d", i);
        get(&e, "GET", target, &x);
        run_until(&e, &x.done);
        assert_int_equal(x.err, 0);
        assert_string_equal(x.body, target);
        assert_string_equal(x.hdr_x, "conn1");
        res_free(&x);
    }
    assert_int_equal(e.srv.accepts, 1);
    assert_int_equal(e.srv.requests, 5);
    sg_http_client_stats_t st;
    sg_http_client_stats(e.c, e.origin, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 4);
    assert_int_equal(st.conns_idle, 1);
    env_done(&e);
}

static void later_ok(sconn_t *sc, void *arg) { script_ok(sc); }
static void script_slow_ok(sconn_t *sc) { srv_later(sc, 3, later_ok, NULL, NULL, 0); }

static void test_origin_cap(void **state)
{
    sg_http_client_config_t cfg = {0};
    cfg.max_conns_per_origin = 3;
    cfg.max_idle_per_origin = 3;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script_slow_ok;
    enum { N = 40 };
    res_t x[N];
    memset(x, 0, sizeof(x));
    for (int i = 0; i < N; i++) get(&e, "GET", "/cap", &x[i]);
    sg_http_client_stats_t st;
    sg_http_client_stats(e.c, NULL, &st);
    assert_int_equal(st.queued, N);
    for (int i = 0; i < N; i++) {
        run_until(&e, &x[i].done);
        assert_int_equal(x[i].err, 0);
        assert_string_equal(x[i].body, "/cap");
        sg_http_client_stats(e.c, NULL, &st);
        assert_true(st.conns_open <= 3);
    }
    assert_true(e.srv.max_open <= 3);
    assert_int_equal(e.srv.accepts, 3);
    assert_int_equal(e.srv.requests, N);
    for (int i = 0; i < N; i++) res_free(&x[i]);
    env_done(&e);
}

static void test_queue_bound(void **state)
{
    sg_http_client_config_t cfg = {0};
    cfg.max_conns_per_origin = 1;
    cfg.max_queue_per_origin = 2;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script_slow_ok;
    res_t x[4];
    memset(x, 0, sizeof(x));
    for (int i = 0; i < 3; i++) get(&e, "GET", "/q", &x[i]);
    sg_http_creq_opts_t o = {0};
    o.method = "GET";
    o.origin = e.origin;
    o.on_done = c_on_done;
    o.data = &x[3];
    sg_http_creq_t *r = NULL;
    assert_int_equal(sg_http_request(e.c, &o, &r), SG_ETOOBIG);
    assert_null(r);
    /* A cancelled queued request frees its place and completes with SG_ECLOSED. */
    sg_http_creq_cancel(x[2].r);
    assert_int_equal(x[2].done, 1);
    assert_int_equal(x[2].err, SG_ECLOSED);
    assert_int_equal(sg_http_request(e.c, &o, &r), 0);
    for (int i = 0; i < 4; i++) {
        if (i == 2) continue;
        run_until(&e, &x[i].done);
        assert_int_equal(x[i].err, 0);
    }
    /* Bad origins are refused up front. */
    o.origin = "ftp://x";
    assert_int_equal(sg_http_request(e.c, &o, &r), SG_EINVAL);
    o.origin = "https://127.0.0.1:1"; /* no TLS context configured */
    assert_int_equal(sg_http_request(e.c, &o, &r), SG_EINVAL);
    o.origin = "http://127.0.0.1:99999";
    assert_int_equal(sg_http_request(e.c, &o, &r), SG_EINVAL);
    for (int i = 0; i < 4; i++) res_free(&x[i]);
    env_done(&e);
}

/* ------------------------------------------------------------------ streamed upload */

typedef struct upl {
    env_t *e;
    sg_http_creq_t *r;
    uint64_t total, sent;
    size_t max_queued;
    int drains;
    int write_err;
    sg_buf_t *chunk;
    const int *stop;
} upl_t;

static void upl_pump(upl_t *u)
{
    if (u->stop && *u->stop) return; /* on_done ran: the handle is gone */
    for (int i = 0; i < 100000 && u->sent < u->total; i++) {
        size_t n = (size_t)SG_MIN((uint64_t)u->chunk->len, u->total - u->sent);
        int rc = sg_http_creq_write_buf(u->r, u->chunk, 0, n);
        if (rc < 0) {
            u->write_err = rc;
            return;
        }
        u->sent += n;
        size_t q = sg_http_creq_queued(u->r);
        if (q > u->max_queued) u->max_queued = q;
        if (rc == 1) return; /* wait for on_drain */
    }
    if (u->sent == u->total) sg_http_creq_end(u->r);
}

static void upl_drain(sg_http_creq_t *r, void *data)
{
    res_t *x = data;
    upl_t *u = x->ud;
    u->drains++;
    upl_pump(u);
}

static void script_count_body(sconn_t *sc)
{
    char buf[256];
    char body[32];
    snprintf(body, sizeof(body), "%llu", (unsigned long long)sc->body);
    snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    srv_send(sc, buf);
}

static void run_upload(int64_t declared, uint64_t total)
{
    sg_http_client_config_t cfg = {0};
    cfg.req_body_highwater = 256 * 1024;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script_count_body;
    e.srv.pause_reading_ms = 50; /* the server is slow to start reading: backpressure engages */
    upl_t u = {0};
    u.e = &e;
    u.total = total;
    u.chunk = sg_buf_new(64 * 1024);
    memset(u.chunk->data, 'u', u.chunk->cap);
    u.chunk->len = u.chunk->cap;
    res_t x = {0};
    x.ud = &u;
    sg_http_creq_opts_t o = {0};
    o.method = "PUT";
    o.origin = e.origin;
    o.target = "/upload";
    o.stream_body = 1;
    o.content_length = declared;
    o.on_response = c_on_response;
    o.on_body = c_on_body;
    o.on_done = c_on_done;
    o.on_drain = upl_drain;
    o.data = &x;
    assert_int_equal(sg_http_request(e.c, &o, &u.r), 0);
    upl_pump(&u);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_int_equal(u.write_err, 0);
    assert_int_equal(x.status, 200);
    char expect[32];
    snprintf(expect, sizeof(expect), "%llu", (unsigned long long)total);
    assert_string_equal(x.body, expect);
    assert_true(e.srv.body_total == total);
    assert_true(u.drains > 0);
    /* Bounded memory: never more than the high-water mark plus one chunk and its framing. */
    assert_true(u.max_queued <= cfg.req_body_highwater + u.chunk->len + 64);
    sg_buf_unref(u.chunk);
    res_free(&x);
    env_done(&e);
}

static void test_upload_100mib_chunked(void **state) { run_upload(-1, 100ull << 20); }
static void test_upload_content_length(void **state) { run_upload(8 << 20, 8ull << 20); }

static void test_upload_misuse(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_count_body;
    res_t x = {0};
    sg_http_creq_opts_t o = {0};
    o.method = "POST";
    o.origin = e.origin;
    o.stream_body = 1;
    o.content_length = 4;
    o.on_body = c_on_body;
    o.on_done = c_on_done;
    o.data = &x;
    sg_http_creq_t *r;
    assert_int_equal(sg_http_request(e.c, &o, &r), 0);
    assert_int_equal(sg_http_creq_write(r, "abc", 3), 0);
    assert_int_equal(sg_http_creq_end(r), SG_EINVAL);   /* short of the declared length */
    assert_int_equal(sg_http_creq_write(r, "de", 2), SG_EINVAL); /* past it */
    assert_int_equal(sg_http_creq_write(r, "d", 1), 0);
    assert_int_equal(sg_http_creq_write(r, "e", 1), SG_EINVAL);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body, "4");
    res_free(&x);
    env_done(&e);
}

/* ------------------------------------------------------------------ pause / resume */

typedef struct big {
    uint64_t left;
} big_t;

static void big_next(sconn_t *sc)
{
    big_t *b = sc->s->ud;
    static char chunk[64 * 1024];
    if (!b->left) return;
    size_t n = (size_t)SG_MIN((uint64_t)sizeof(chunk), b->left);
    for (size_t i = 0; i < n; i++) chunk[i] = (char)('a' + i % 26);
    b->left -= n;
    srv_send_then(sc, chunk, n, big_next); /* one write in flight: the server feels backpressure */
}

static void script_big(sconn_t *sc)
{
    big_t *b = sc->s->ud;
    char head[128];
    snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n", (unsigned long long)b->left);
    srv_send_then(sc, head, strlen(head), big_next);
}

typedef struct pz {
    uv_timer_t t;
    res_t *x;
    uint64_t next_pause;
    int pauses;
} pz_t;

static void pz_resume(uv_timer_t *t)
{
    pz_t *p = t->data;
    p->x->paused = 0;
    sg_http_creq_resume(p->x->r);
}

static void pz_on_body(res_t *x)
{
    pz_t *p = x->ud;
    if (x->nbody >= p->next_pause && !x->paused) {
        p->next_pause = x->nbody + 512 * 1024;
        p->pauses++;
        x->paused = 1;
        sg_http_creq_pause(x->r);
        uv_timer_start(&p->t, pz_resume, 5, 0);
    }
}

static void test_pause_resume(void **state)
{
    sg_http_client_config_t cfg = {0};
    cfg.body_idle_timeout_ms = 1000; /* must not fire while the consumer is paused */
    env_t e;
    env_init(&e, 0, &cfg);
    big_t b = {.left = 16ull << 20};
    e.srv.ud = &b;
    e.srv.on_request = script_big;
    pz_t p = {0};
    uv_timer_init(&e.loop, &p.t);
    p.t.data = &p;
    p.next_pause = 100 * 1024;
    res_t x = {0};
    x.count_only = 1;
    x.ud = &p;
    x.on_body_hook = pz_on_body;
    p.x = &x;
    get(&e, "GET", "/big", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_true(x.nbody == 16ull << 20);
    assert_int_equal(x.body_while_paused, 0); /* pause is immediate, even mid-read */
    assert_true(p.pauses >= 16);
    uv_close((uv_handle_t *)&p.t, NULL);
    env_done(&e);
}

/* A pause held across the very end of a response: completion waits for resume. */
static void pz_pause_always(res_t *x)
{
    pz_t *p = x->ud;
    p->pauses++;
    x->paused = 1;
    sg_http_creq_pause(x->r);
    uv_timer_start(&p->t, pz_resume, 20, 0);
}

static void test_pause_at_end(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_ok;
    pz_t p = {0};
    uv_timer_init(&e.loop, &p.t);
    p.t.data = &p;
    res_t x = {0};
    x.ud = &p;
    x.on_body_hook = pz_pause_always;
    p.x = &x;
    get(&e, "GET", "/pause-at-the-end", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body, "/pause-at-the-end");
    assert_true(p.pauses >= 1);
    /* and the connection still went back to the pool */
    res_t y = {0};
    get(&e, "GET", "/again", &y);
    run_until(&e, &y.done);
    assert_int_equal(y.err, 0);
    assert_int_equal(e.srv.accepts, 1);
    uv_close((uv_handle_t *)&p.t, NULL);
    res_free(&x);
    res_free(&y);
    env_done(&e);
}

/* Many chunks in one read: a pause from on_body must hold back the rest of that read. */
static void script_many_chunks(sconn_t *sc)
{
    static char buf[64 * 1024];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 500; i++) n += (size_t)snprintf(buf + n, sizeof(buf) - n, "a\r\n%010d\r\n", i);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "0\r\n\r\n");
    srv_send_then(sc, buf, n, NULL);
}

static void pz_pause_each(res_t *x)
{
    pz_t *p = x->ud;
    p->pauses++;
    x->paused = 1;
    sg_http_creq_pause(x->r);
    uv_timer_start(&p->t, pz_resume, 0, 0);
}

static void test_pause_mid_read(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_many_chunks;
    pz_t p = {0};
    uv_timer_init(&e.loop, &p.t);
    p.t.data = &p;
    res_t x = {0};
    x.ud = &p;
    x.on_body_hook = pz_pause_each;
    p.x = &x;
    get(&e, "GET", "/chunks", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.body_while_paused, 0);
    assert_int_equal(x.nbody, 5000);
    assert_int_equal(p.pauses, 500);
    assert_memory_equal(x.body + 4990, "0000000499", 10);
    /* the connection is reusable afterwards */
    res_t y = {0};
    get(&e, "GET", "/chunks", &y);
    run_until(&e, &y.done);
    assert_int_equal(y.nbody, 5000);
    assert_int_equal(e.srv.accepts, 1);
    uv_close((uv_handle_t *)&p.t, NULL);
    res_free(&x);
    res_free(&y);
    env_done(&e);
}

/* ------------------------------------------------------------------ errors */

static void test_connect_refused(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    /* A port that was just free: bind, read the port, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    snprintf(e.origin, sizeof(e.origin), "http://127.0.0.1:%d", ntohs(a.sin_port));
    res_t x = {0};
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, UV_ECONNREFUSED);
    assert_non_null(strstr(x.msg, "connect"));
    /* unix socket that does not exist */
    snprintf(e.origin, sizeof(e.origin), "unix:/tmp/sg-test-no-such-%d.sock", (int)getpid());
    res_t y = {0};
    get(&e, "GET", "/", &y);
    run_until(&e, &y.done);
    assert_int_equal(y.err, UV_ENOENT);
    env_done(&e);
}

static void test_connect_timeout(void **state)
{
    /* A listener with a full accept queue that never accepts: further SYNs are dropped, so
     * the client's connect hangs. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t len = sizeof(a);
    getsockname(lfd, (struct sockaddr *)&a, &len);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof(a));
    }
    sg_http_client_config_t cfg = {0};
    cfg.connect_timeout_ms = 200;
    env_t e;
    env_init(&e, 0, &cfg);
    snprintf(e.origin, sizeof(e.origin), "http://127.0.0.1:%d", ntohs(a.sin_port));
    res_t x = {0};
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, SG_ETIMEDOUT);
    assert_non_null(strstr(x.msg, "connect"));
    env_done(&e);
    for (int i = 0; i < 4; i++) close(fillers[i]);
    close(lfd);
}

static void script_silent(sconn_t *sc) {}

static void test_response_timeout(void **state)
{
    sg_http_client_config_t cfg = {0};
    cfg.response_timeout_ms = 150;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script_silent;
    res_t x = {0};
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, SG_ETIMEDOUT);
    assert_non_null(strstr(x.msg, "no response"));
    assert_int_equal(e.srv.requests, 1);
    env_done(&e);
}

static void script_stall_body(sconn_t *sc) { srv_send(sc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"); }

static void test_body_idle_timeout(void **state)
{
    sg_http_client_config_t cfg = {0};
    cfg.body_idle_timeout_ms = 150;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script_stall_body;
    res_t x = {0};
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, SG_ETIMEDOUT);
    assert_non_null(strstr(x.msg, "idle"));
    assert_int_equal(x.status, 200);
    assert_string_equal(x.body, "0123456789");
    /* the connection was closed, not pooled: the server sees EOF */
    for (int i = 0; i < 1000 && e.srv.eofs == 0 && !e.timed_out; i++) uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(e.srv.eofs, 1);
    res_free(&x);
    env_done(&e);
}

static void script_slow_body(sconn_t *sc)
{
    srv_send(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na");
    slater_t *l = srv_later(sc, 400, later_send_piece, NULL, "b", 1);
    l->arg = l;
}

static void test_body_idle_timeout_opt_out(void **state)
{
    sg_http_client_config_t cfg = {0};
    cfg.body_idle_timeout_ms = 100;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script_slow_body;
    res_t x = {0};
    sg_http_creq_opts_t o = {0};
    o.method = "GET";
    o.origin = e.origin;
    o.no_body_idle_timeout = 1;
    o.on_body = c_on_body;
    o.on_done = c_on_done;
    o.data = &x;
    assert_int_equal(sg_http_request(e.c, &o, &x.r), 0);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body, "ab");
    /* and without the opt-out the same exchange times out */
    res_t y = {0};
    get(&e, "GET", "/", &y);
    run_until(&e, &y.done);
    assert_int_equal(y.err, SG_ETIMEDOUT);
    res_free(&x);
    res_free(&y);
    env_done(&e);
}

static void script_reset_mid_body(sconn_t *sc)
{
    srv_send(sc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    srv_later(sc, 20, later_reset, NULL, NULL, 0);
}

static void test_reset_mid_body(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_reset_mid_body;
    res_t x = {0};
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, UV_ECONNRESET);
    assert_string_equal(x.body, "0123456789");
    res_free(&x);
    env_done(&e);
}

static void script_close_mid_body(sconn_t *sc)
{
    srv_send(sc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    srv_later(sc, 20, later_close, NULL, NULL, 0);
}

static void script_malformed(sconn_t *sc) { srv_send(sc, "HTTP/1.1 2x0 OK\r\nContent-Length: 1\r\n\r\nx"); }
static void script_bad_chunk(sconn_t *sc)
{
    srv_send(sc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n");
}
static void script_huge_head(sconn_t *sc)
{
    static char buf[8192];
    memset(buf, 0, sizeof(buf));
    strcpy(buf, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(buf + strlen(buf), 'b', 6000);
    strcat(buf, "\r\nContent-Length: 0\r\n\r\n");
    srv_send(sc, buf);
}

static void check_error(script_fn script, size_t max_head, int expect, const char *needle)
{
    sg_http_client_config_t cfg = {0};
    cfg.max_header_bytes = max_head;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script;
    res_t x = {0};
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    if (x.err != expect) fail_msg("err %d (%s), expected %d", x.err, x.msg, expect);
    if (!strstr(x.msg, needle)) fail_msg("message '%s' lacks '%s'", x.msg, needle);
    res_free(&x);
    env_done(&e);
}

static void test_errors(void **state)
{
    check_error(script_close_mid_body, 0, SG_EPROTO, "before the response body was complete");
    check_error(script_malformed, 0, SG_EPROTO, "malformed");
    check_error(script_bad_chunk, 0, SG_EPROTO, "malformed");
    check_error(script_huge_head, 1024, SG_ETOOBIG, "larger than 1024");
}

/* ------------------------------------------------------------------ cancel */

static void cancel_in_body(res_t *x)
{
    sg_http_creq_t *r = x->r;
    sg_http_creq_cancel(r);
    assert_int_equal(x->done, 1); /* on_done ran from inside cancel */
    assert_int_equal(x->err, SG_ECLOSED);
    sg_http_creq_cancel(r); /* still safe within this callback chain: a no-op */
}

static void cancel_in_response(res_t *x) { sg_http_creq_cancel(x->r); }

static void test_cancel(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_stall_body;
    res_t x = {0};
    x.on_body_hook = cancel_in_body;
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, SG_ECLOSED);
    /* the connection is closed, never reused */
    for (int i = 0; i < 1000 && e.srv.eofs == 0 && !e.timed_out; i++) uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(e.srv.eofs, 1);
    sg_http_client_stats_t st;
    sg_http_client_stats(e.c, NULL, &st);
    assert_int_equal(st.conns_open, 0);

    res_t y = {0};
    y.on_resp_hook = cancel_in_response;
    get(&e, "GET", "/", &y);
    run_until(&e, &y.done);
    assert_int_equal(y.err, SG_ECLOSED);
    assert_int_equal(y.nbody, 0);

    /* cancel while waiting for a response, from outside any callback */
    e.srv.on_request = script_silent;
    res_t z = {0};
    get(&e, "GET", "/", &z);
    for (int i = 0; i < 1000 && e.srv.requests < 3 && !e.timed_out; i++) uv_run(&e.loop, UV_RUN_ONCE);
    sg_http_creq_cancel(z.r);
    assert_int_equal(z.done, 1);
    assert_int_equal(z.err, SG_ECLOSED);

    /* requests still pending when the client closes complete with SG_ECLOSED */
    res_t w = {0};
    get(&e, "GET", "/", &w);
    for (int i = 0; i < 1000 && e.srv.requests < 4 && !e.timed_out; i++) uv_run(&e.loop, UV_RUN_ONCE);
    env_done(&e);
    assert_int_equal(w.done, 1);
    assert_int_equal(w.err, SG_ECLOSED);
    res_free(&x);
    res_free(&y);
}

/* ------------------------------------------------------------------ stale pooled connection */

/* First request on a connection gets an answer; the second one sees the server close
 * without a byte, as when a keep-alive timeout races the request. */
static void script_close_second(sconn_t *sc)
{
    if (sc->nreq >= 2) sconn_close(sc);
    else script_ok(sc);
}

static void script_reset_second(sconn_t *sc)
{
    if (sc->nreq >= 2) sconn_reset(sc);
    else script_ok(sc);
}

static void run_stale(const char *method, int expect_retry, script_fn script)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script;
    res_t x = {0}, y = {0};
    get(&e, method, "/one", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    get(&e, method, "/two", &y);
    run_until(&e, &y.done);
    sg_http_client_stats_t st;
    sg_http_client_stats(e.c, NULL, &st);
    if (expect_retry) {
        assert_int_equal(y.err, 0);
        assert_string_equal(y.body, "/two");
        assert_int_equal(st.retries, 1);
        assert_int_equal(e.srv.accepts, 2);
    } else if (script == script_close_second) {
        assert_int_equal(y.err, SG_EPROTO);
        assert_non_null(strstr(y.msg, "before a response"));
        assert_int_equal(st.retries, 0);
        assert_int_equal(e.srv.accepts, 1);
    } else {
        assert_int_equal(y.err, UV_ECONNRESET);
        assert_int_equal(st.retries, 0);
        assert_int_equal(e.srv.accepts, 1);
    }
    res_free(&x);
    res_free(&y);
    env_done(&e);
}

static void test_stale_retry_get(void **state) { run_stale("GET", 1, script_close_second); }
static void test_stale_no_retry_post(void **state) { run_stale("POST", 0, script_close_second); }
static void test_stale_reset_retry(void **state)
{
    run_stale("GET", 1, script_reset_second);
    run_stale("POST", 0, script_reset_second);
}

static void test_max_idle(void **state)
{
    sg_http_client_config_t cfg = {0};
    cfg.max_idle_per_origin = 1;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script_slow_ok;
    res_t x[3];
    memset(x, 0, sizeof(x));
    for (int i = 0; i < 3; i++) get(&e, "GET", "/i", &x[i]);
    for (int i = 0; i < 3; i++) {
        run_until(&e, &x[i].done);
        assert_int_equal(x[i].err, 0);
        res_free(&x[i]);
    }
    assert_int_equal(e.srv.accepts, 3);
    for (int i = 0; i < 1000 && e.srv.eofs < 2 && !e.timed_out; i++) uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(e.srv.eofs, 2);
    sg_http_client_stats_t st;
    sg_http_client_stats(e.c, NULL, &st);
    assert_int_equal(st.conns_idle, 1);
    assert_int_equal(st.conns_open, 1);
    env_done(&e);
}

/* A server that closes an idle pooled connection: the client notices and uses a new one. */
static void script_ok_then_close(sconn_t *sc)
{
    script_ok(sc);
    srv_later(sc, 10, later_close, NULL, NULL, 0);
}

static void test_idle_closed_by_server(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_ok_then_close;
    res_t x = {0}, y = {0};
    get(&e, "GET", "/one", &x);
    run_until(&e, &x.done);
    sg_http_client_stats_t st;
    for (int i = 0; i < 1000 && !e.timed_out; i++) {
        sg_http_client_stats(e.c, NULL, &st);
        if (st.conns_open == 0) break;
        uv_run(&e.loop, UV_RUN_ONCE);
    }
    assert_int_equal(st.conns_open, 0);
    get(&e, "GET", "/two", &y);
    run_until(&e, &y.done);
    assert_int_equal(y.err, 0);
    assert_string_equal(y.body, "/two");
    assert_int_equal(e.srv.accepts, 2);
    res_free(&x);
    res_free(&y);
    env_done(&e);
}

static void test_idle_timeout(void **state)
{
    sg_http_client_config_t cfg = {0};
    cfg.idle_timeout_ms = 100;
    env_t e;
    env_init(&e, 0, &cfg);
    e.srv.on_request = script_ok;
    res_t x = {0};
    get(&e, "GET", "/one", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    for (int i = 0; i < 1000 && e.srv.eofs == 0 && !e.timed_out; i++) uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(e.srv.eofs, 1); /* the client closed its pooled connection */
    res_free(&x);
    env_done(&e);
}

/* ------------------------------------------------------------------ unix socket, bodies */

static void test_unix_socket(void **state)
{
    env_t e;
    env_init(&e, 1, NULL);
    e.srv.on_request = script_count_body;
    for (int i = 0; i < 3; i++) {
        res_t x = {0};
        sg_http_creq_opts_t o = {0};
        o.method = "POST";
        o.origin = e.origin;
        o.target = "/run";
        o.body = "{\"cmd\":\"ls\"}";
        o.body_len = 12;
        o.on_body = c_on_body;
        o.on_done = c_on_done;
        o.data = &x;
        assert_int_equal(sg_http_request(e.c, &o, &x.r), 0);
        run_until(&e, &x.done);
        assert_int_equal(x.err, 0);
        assert_string_equal(x.body, "12");
        res_free(&x);
    }
    assert_int_equal(e.srv.accepts, 1);
    env_done(&e);
}

/* Callbacks may start new requests, and on_done may free what it likes. */
static env_t *chain_env;
static int chain_left;
static void chain_done(res_t *x);
static void chain_next(void)
{
    res_t *x = calloc(1, sizeof(*x));
    x->on_done_hook = chain_done;
    get(chain_env, "GET", "/chain", x);
}
static void chain_done(res_t *x)
{
    assert_int_equal(x->err, 0);
    res_free(x);
    free(x); /* the client never touches our data after on_done */
    if (--chain_left > 0) chain_next();
}

static void test_request_from_callback(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_ok;
    chain_env = &e;
    chain_left = 10;
    chain_next();
    for (int i = 0; i < 100000 && chain_left > 0 && !e.timed_out; i++) uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(chain_left, 0);
    assert_int_equal(e.srv.accepts, 1);
    env_done(&e);
}

/* The server answers 413 as soon as it sees the head and discards the upload: the client
 * delivers the response, stops sending, and does not pool the connection. */
static void script_413(sconn_t *sc)
{
    srv_send(sc, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n");
}

static void test_early_response_during_upload(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_headers = script_413;
    upl_t u = {0};
    u.e = &e;
    u.total = 64ull << 20;
    u.chunk = sg_buf_new(64 * 1024);
    memset(u.chunk->data, 'u', u.chunk->cap);
    u.chunk->len = u.chunk->cap;
    res_t x = {0};
    x.ud = &u;
    u.stop = &x.done;
    sg_http_creq_opts_t o = {0};
    o.method = "POST";
    o.origin = e.origin;
    o.stream_body = 1;
    o.content_length = -1;
    o.on_response = c_on_response;
    o.on_done = c_on_done;
    o.on_drain = upl_drain;
    o.data = &x;
    assert_int_equal(sg_http_request(e.c, &o, &u.r), 0);
    upl_pump(&u);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.status, 413);
    assert_true(u.sent < u.total);
    for (int i = 0; i < 1000 && e.srv.eofs == 0 && !e.timed_out; i++) uv_run(&e.loop, UV_RUN_ONCE);
    assert_int_equal(e.srv.eofs, 1); /* closed, not pooled */
    sg_buf_unref(u.chunk);
    env_done(&e);
}

/* Cancel while a large upload write is in flight: the write's buffers stay valid until its
 * callback (ASan would see otherwise), and the connection is closed. */
static void later_cancel(uv_timer_t *t)
{
    upl_t *u = t->data;
    res_t *x = sg_http_creq_data(u->r);
    if (!x->done) sg_http_creq_cancel(u->r);
}

static void test_cancel_mid_upload(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_count_body;
    e.srv.pause_reading_ms = 10000; /* never reads within the test */
    upl_t u = {0};
    u.total = 64ull << 20;
    u.chunk = sg_buf_new(64 * 1024);
    memset(u.chunk->data, 'u', u.chunk->cap);
    u.chunk->len = u.chunk->cap;
    res_t x = {0};
    x.ud = &u;
    u.stop = &x.done;
    sg_http_creq_opts_t o = {0};
    o.method = "PUT";
    o.origin = e.origin;
    o.stream_body = 1;
    o.content_length = (int64_t)u.total;
    o.on_done = c_on_done;
    o.on_drain = upl_drain;
    o.data = &x;
    assert_int_equal(sg_http_request(e.c, &o, &u.r), 0);
    upl_pump(&u);
    uv_timer_t t;
    uv_timer_init(&e.loop, &t);
    t.data = &u;
    uv_timer_start(&t, later_cancel, 100, 0);
    run_until(&e, &x.done);
    assert_int_equal(x.err, SG_ECLOSED);
    assert_true(u.sent < u.total);
    uv_close((uv_handle_t *)&t, NULL);
    sg_buf_unref(u.chunk);
    env_done(&e);
}

/* Pause, resume and cancel from one on_body: the pending resume must not outlive the
 * connection. */
static void pause_resume_cancel(res_t *x)
{
    sg_http_creq_t *r = x->r;
    sg_http_creq_pause(r);
    sg_http_creq_resume(r);
    sg_http_creq_cancel(r);
}

static void test_pause_resume_cancel(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_stall_body;
    res_t x = {0};
    x.on_body_hook = pause_resume_cancel;
    get(&e, "GET", "/", &x);
    run_until(&e, &x.done);
    assert_int_equal(x.err, SG_ECLOSED);
    /* a few more turns: the idle callback runs after the connection is gone */
    for (int i = 0; i < 5; i++) uv_run(&e.loop, UV_RUN_NOWAIT);
    res_free(&x);
    env_done(&e);
}

/* Closing the client from inside a body callback completes everything with SG_ECLOSED. */
static env_t *close_env;
static void close_client_in_body(res_t *x)
{
    sg_http_client_close(close_env->c, on_client_closed, &close_env->client_closed);
    assert_int_equal(x->done, 1);
    assert_int_equal(x->err, SG_ECLOSED);
}

static void test_close_client_in_callback(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_stall_body;
    close_env = &e;
    res_t x = {0}, y = {0};
    x.on_body_hook = close_client_in_body;
    get(&e, "GET", "/", &x);
    get(&e, "GET", "/queued", &y); /* still waiting for its connection */
    run_until(&e, &x.done);
    assert_int_equal(y.done, 1);
    assert_int_equal(y.err, SG_ECLOSED);
    srv_stop(&e.srv);
    uv_close((uv_handle_t *)&e.watchdog, NULL);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.client_closed, 1);
    assert_int_equal(uv_loop_close(&e.loop), 0);
    res_free(&x);
}

static void test_header_injection_refused(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "X-Evil", "a\r\nContent-Length: 0");
    res_t x = {0};
    sg_http_creq_opts_t o = {0};
    o.method = "GET";
    o.origin = e.origin;
    o.headers = &h;
    o.on_done = c_on_done;
    o.data = &x;
    sg_http_creq_t *r = NULL;
    assert_int_equal(sg_http_request(e.c, &o, &r), SG_EINVAL);
    sg_hdrs_reset(&h);
    sg_hdrs_addz(&h, "Bad Name", "v");
    assert_int_equal(sg_http_request(e.c, &o, &r), SG_EINVAL);
    o.headers = NULL;
    o.target = "/a b";
    assert_int_equal(sg_http_request(e.c, &o, &r), SG_EINVAL);
    o.target = "/ok";
    o.method = "GE T";
    assert_int_equal(sg_http_request(e.c, &o, &r), SG_EINVAL);
    sg_hdrs_free(&h);
    assert_int_equal(x.done, 0);
    env_done(&e);
}

/* Caller headers go out as given; Host is added; Content-Length comes from the body. */
static void script_echo_head(sconn_t *sc) { }
static char echo_buf[4096];
static size_t echo_len;
static void echo_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    sconn_t *sc = st->data;
    if (n < 0) {
        sconn_close(sc);
        return;
    }
    if (echo_len + (size_t)n < sizeof(echo_buf)) {
        memcpy(echo_buf + echo_len, b->base, (size_t)n);
        echo_len += (size_t)n;
    }
    if (strstr(echo_buf, "\r\n\r\nbody")) srv_send(sc, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}
static void echo_accept(sconn_t *sc)
{
    uv_read_start(&sc->u.st, srv_alloc, echo_read);
    sc->s->pause_reading_ms = 0;
}

static void test_request_head(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_echo_head;
    e.srv.on_accept = echo_accept;
    e.srv.pause_reading_ms = 0;
    echo_len = 0;
    memset(echo_buf, 0, sizeof(echo_buf));
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "X-Api-Key", "k1");
    sg_hdrs_addz(&h, "Content-Length", "999"); /* ignored: the body decides */
    res_t x = {0};
    sg_http_creq_opts_t o = {0};
    o.method = "POST";
    o.origin = e.origin;
    o.target = "/v1/sandboxes?x=1";
    o.headers = &h;
    o.body = "body";
    o.body_len = 4;
    o.on_done = c_on_done;
    o.data = &x;
    assert_int_equal(sg_http_request(e.c, &o, &x.r), 0);
    run_until(&e, &x.done);
    assert_int_equal(x.err, 0);
    char expect[256];
    snprintf(expect, sizeof(expect),
             "POST /v1/sandboxes?x=1 HTTP/1.1\r\nX-Api-Key: k1\r\nHost: 127.0.0.1:%d\r\n"
             "Content-Length: 4\r\n\r\nbody", e.srv.port);
    assert_string_equal(echo_buf, expect);
    sg_hdrs_free(&h);
    env_done(&e);
}

/* Names are resolved off the loop; cancelling while the resolver runs must not leave the
 * resolver's callback pointing at freed memory. */
static void test_cancel_while_resolving(void **state)
{
    env_t e;
    env_init(&e, 0, NULL);
    e.srv.on_request = script_ok;
    snprintf(e.origin, sizeof(e.origin), "http://localhost:%d", e.srv.port);
    for (int i = 0; i < 20; i++) {
        res_t x = {0};
        get(&e, "GET", "/r", &x);
        uv_run(&e.loop, UV_RUN_NOWAIT); /* dispatch: the connection starts resolving */
        if (!x.done) sg_http_creq_cancel(x.r);
        assert_int_equal(x.done, 1);
    }
    /* and a resolved name works */
    res_t y = {0};
    get(&e, "GET", "/r", &y);
    run_until(&e, &y.done);
    if (y.err == 0) assert_string_equal(y.body, "/r");
    else assert_int_equal(y.err, UV_ECONNREFUSED); /* localhost resolved to ::1 first */
    res_free(&y);
    env_done(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_parser_every_split),
        cmocka_unit_test(test_interim_head_204),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_origin_cap),
        cmocka_unit_test(test_queue_bound),
        cmocka_unit_test(test_upload_100mib_chunked),
        cmocka_unit_test(test_upload_content_length),
        cmocka_unit_test(test_upload_misuse),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_pause_at_end),
        cmocka_unit_test(test_pause_mid_read),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_response_timeout),
        cmocka_unit_test(test_body_idle_timeout),
        cmocka_unit_test(test_body_idle_timeout_opt_out),
        cmocka_unit_test(test_reset_mid_body),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_stale_retry_get),
        cmocka_unit_test(test_stale_no_retry_post),
        cmocka_unit_test(test_stale_reset_retry),
        cmocka_unit_test(test_max_idle),
        cmocka_unit_test(test_idle_closed_by_server),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_request_from_callback),
        cmocka_unit_test(test_early_response_during_upload),
        cmocka_unit_test(test_cancel_mid_upload),
        cmocka_unit_test(test_pause_resume_cancel),
        cmocka_unit_test(test_close_client_in_callback),
        cmocka_unit_test(test_header_injection_refused),
        cmocka_unit_test(test_request_head),
        cmocka_unit_test(test_cancel_while_resolving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
