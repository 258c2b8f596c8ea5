/* tls_harness.h: an in-process loopback harness for the sg_sock tests (test_sock.c,
 * test_tls.c): one listener (TCP on 127.0.0.1:ephemeral or a unix socket), a server side that
 * echoes / greets / closes / stays silent, and one client sg_sock_t that writes a payload with
 * one write in flight and checks what comes back. Everything runs on one private loop; the
 * harness closes the listener once the client and every accepted connection are closed, so a
 * run ends with no handle open. A guard timer (unref'd, generous) bounds every run.
 *
 * Also: throwaway certificates made with the openssl CLI in a temp dir (a CA, a server
 * certificate for DNS:localhost + IP:127.0.0.1 signed by it, and an unrelated second CA).
 *
 * Header-only so both test binaries share it; every function is static inline. */
#ifndef SG_TEST_TLS_HARNESS_H
#define SG_TEST_TLS_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "sandgate/buf.h"
#include "sandgate/common.h"
#include "sandgate/sock.h"
#include "sandgate/tls.h"

#define H_GUARD_MS 60000 /* safety bound only; a healthy run takes well under a second */

typedef enum {
    SRV_ECHO = 0,        /* echo everything back, close after EOF once drained */
    SRV_GREET,           /* write a greeting right after accept (before any handshake), echo */
    SRV_CLOSE_AT_ACCEPT, /* accept and close at once (mid-handshake with TLS) */
    SRV_RAW_SILENT,      /* raw uv stream: reads, never answers; first bytes close the client */
    SRV_GREET_CLOSE,     /* write a greeting after accept, then close at once */
    SRV_GREET_EOF,       /* write a greeting, close once it is written */
    SRV_ECHO_STOPSTART,  /* stop reading after every read and restart from a 0 ms timer;
                            echo only once the whole payload arrived */
} h_srv_mode_t;

typedef struct harness harness_t;

typedef struct {
    sg_sock_t s;
    harness_t *h;
    sg_bufq_t q;
    size_t inflight;
    int eof;
    int broken; /* read error: close as soon as no write is in flight */
    int wcalls, wcbs; /* sg_sock_write calls / write callbacks seen */
} h_conn_t;

typedef struct {
    uv_tcp_t tcp;
    harness_t *h;
    char buf[4096];
} h_raw_t;

struct harness {
    uv_loop_t loop;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } lst;
    int use_pipe;
    char path[256];
    uint16_t port;
    h_srv_mode_t mode;
    sg_tls_ctx_t *sctx;
    int srv_open;       /* accepted connections not yet closed */
    int srv_accepts;
    int srv_read_err;   /* first nread < 0 seen by a server connection (0 = none yet) */
    uint64_t srv_bytes; /* plaintext the server read */
    int srv_write_err;  /* first failed server write status */
    int srv_read_stops; /* times the echo server applied backpressure */
    uv_timer_t restart; /* SRV_ECHO_STOPSTART */
    h_conn_t *restart_conn;
    int srv_unfinished_writes; /* writes whose callback had not run by the close callback */
    int listener_closing;

    /* client */
    sg_sock_t cli;
    sg_tls_ctx_t *cctx;
    const char *host;
    const char *sni;
    int cli_started;
    int cli_closed;
    int connect_calls;
    int connect_status;
    int connect_before_close; /* connect callback ran before the close callback */
    int cli_read_err;
    int cli_write_err;
    int busy_seen;            /* sg_sock_write returned UV_EBUSY while a write was in flight */
    int writes;
    const unsigned char *payload; /* what the client writes */
    size_t payload_len, sent;
    const unsigned char *expect; /* what the client expects to read back, then it closes */
    size_t expect_len;
    unsigned char *rbuf;
    size_t rlen, rcap;
    unsigned char rhead[256]; /* first bytes read, still there after h_run() */
    int match; /* rbuf == expect once expect_len bytes arrived */
    char tls_err[256];

    uv_timer_t guard;
    int timed_out;
};

static const char h_greeting[] = "hello before the handshake finished";

static inline void h_maybe_finish(harness_t *h);

/* ---------------------------------------------------------------- server */

static inline void h_conn_close_cb(sg_sock_t *s)
{
    h_conn_t *c = (h_conn_t *)s;
    harness_t *h = c->h;
    h->srv_unfinished_writes += c->wcalls - c->wcbs;
    sg_bufq_free(&c->q);
    free(c);
    if (h->restart_conn == c) {
        h->restart_conn = NULL;
        uv_timer_stop(&h->restart);
    }
    h->srv_open--;
    h_maybe_finish(h);
}

static inline void h_conn_kick(h_conn_t *c);

static inline void h_conn_write_cb(sg_sock_t *s, int status)
{
    h_conn_t *c = (h_conn_t *)s;
    c->wcbs++;
    if (status < 0 && !c->h->srv_write_err) c->h->srv_write_err = status;
    sg_bufq_consume(&c->q, c->inflight);
    c->inflight = 0;
    if (status < 0 || c->broken || c->h->mode == SRV_GREET_EOF) {
        sg_sock_close(s, h_conn_close_cb);
        return;
    }
    if (!c->eof && c->q.bytes < (256u << 10) && c->h->mode != SRV_ECHO_STOPSTART)
        sg_sock_read_start(s, s->read_cb);
    h_conn_kick(c);
}

static inline void h_conn_kick(h_conn_t *c)
{
    if (sg_sock_is_closing(&c->s) || sg_sock_writing(&c->s)) return;
    /* STOPSTART echoes only once everything arrived: no write completion may drive reads. */
    if (c->h->mode == SRV_ECHO_STOPSTART && !c->eof && c->h->srv_bytes < c->h->payload_len) return;
    if (c->q.bytes == 0) {
        if (c->eof) sg_sock_close(&c->s, h_conn_close_cb);
        return;
    }
    uv_buf_t iov[64];
    size_t total;
    unsigned n = sg_bufq_iov(&c->q, iov, 64, 1u << 20, &total);
    c->inflight = total;
    if (sg_sock_write(&c->s, iov, n, h_conn_write_cb) < 0) {
        c->inflight = 0;
        sg_sock_close(&c->s, h_conn_close_cb);
        return;
    }
    c->wcalls++;
}

static inline void h_conn_read_cb(sg_sock_t *s, ssize_t nread, const char *data);

static inline void h_restart_cb(uv_timer_t *t)
{
    harness_t *h = t->data;
    h_conn_t *c = h->restart_conn;
    if (c && !sg_sock_is_closing(&c->s) && !c->eof) sg_sock_read_start(&c->s, h_conn_read_cb);
}

static inline void h_conn_read_cb(sg_sock_t *s, ssize_t nread, const char *data)
{
    h_conn_t *c = (h_conn_t *)s;
    harness_t *h = c->h;
    if (nread < 0) {
        if (!h->srv_read_err) h->srv_read_err = (int)nread;
        c->eof = 1;
        if (nread != UV_EOF) {
            c->broken = 1;
            if (!sg_sock_writing(s)) sg_sock_close(s, h_conn_close_cb);
            return;
        }
        h_conn_kick(c);
        return;
    }
    h->srv_bytes += (uint64_t)nread;
    sg_bufq_push_copy(&c->q, data, (size_t)nread);
    if (h->mode == SRV_ECHO_STOPSTART) {
        sg_sock_read_stop(s);
        h->srv_read_stops++;
        h->restart_conn = c;
        uv_timer_start(&h->restart, h_restart_cb, 0, 0);
    }
    if (c->q.bytes > (1u << 20) && s->reading) { /* backpressure: one echo buffer */
        sg_sock_read_stop(s);
        h->srv_read_stops++;
    }
    h_conn_kick(c);
}

static inline void h_raw_close_cb(uv_handle_t *hd)
{
    h_raw_t *r = (h_raw_t *)hd;
    harness_t *h = r->h;
    free(r);
    h->srv_open--;
    h_maybe_finish(h);
}

static inline void h_raw_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b)
{
    h_raw_t *r = (h_raw_t *)hd;
    (void)sz;
    *b = uv_buf_init(r->buf, sizeof(r->buf));
}

static inline void h_cli_close_cb(sg_sock_t *s);

static inline void h_raw_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    h_raw_t *r = (h_raw_t *)st;
    harness_t *h = r->h;
    (void)b;
    if (nread > 0) {
        h->srv_bytes += (uint64_t)nread;
        /* The client's first flight arrived: its handshake is now waiting for us. */
        if (h->cli_started && !sg_sock_is_closing(&h->cli)) sg_sock_close(&h->cli, h_cli_close_cb);
        return;
    }
    if (nread < 0) {
        if (!h->srv_read_err) h->srv_read_err = (int)nread;
        uv_close((uv_handle_t *)st, h_raw_close_cb);
    }
}

static inline void h_on_connection(uv_stream_t *lst, int status)
{
    harness_t *h = lst->data;
    assert_int_equal(status, 0);
    h->srv_accepts++;
    if (h->mode == SRV_RAW_SILENT) {
        h_raw_t *r = calloc(1, sizeof(*r));
        r->h = h;
        assert_int_equal(uv_tcp_init(&h->loop, &r->tcp), 0);
        h->srv_open++;
        assert_int_equal(uv_accept(lst, (uv_stream_t *)&r->tcp), 0);
        assert_int_equal(uv_read_start((uv_stream_t *)&r->tcp, h_raw_alloc, h_raw_read), 0);
        return;
    }
    h_conn_t *c = calloc(1, sizeof(*c));
    c->h = h;
    sg_bufq_init(&c->q);
    h->srv_open++;
    int r = sg_sock_accept(lst, &c->s, h->sctx);
    assert_int_equal(r, 0);
    if (h->mode == SRV_CLOSE_AT_ACCEPT) {
        sg_sock_close(&c->s, h_conn_close_cb);
        return;
    }
    assert_int_equal(sg_sock_read_start(&c->s, h_conn_read_cb), 0);
    if (h->mode == SRV_GREET || h->mode == SRV_GREET_CLOSE || h->mode == SRV_GREET_EOF) {
        /* Queued until the handshake completes (TLS) or written at once (plaintext). */
        sg_bufq_push_copy(&c->q, h_greeting, sizeof(h_greeting) - 1);
        h_conn_kick(c);
        if (h->mode == SRV_GREET_CLOSE) sg_sock_close(&c->s, h_conn_close_cb);
    }
}

/* ---------------------------------------------------------------- client */

static inline void h_cli_close_cb(sg_sock_t *s)
{
    harness_t *h = SG_CONTAINER_OF(s, harness_t, cli);
    h->cli_closed++;
    h_maybe_finish(h);
}

static inline void h_cli_write_next(harness_t *h);

static inline void h_cli_write_cb(sg_sock_t *s, int status)
{
    harness_t *h = SG_CONTAINER_OF(s, harness_t, cli);
    if (status < 0) {
        if (!h->cli_write_err) h->cli_write_err = status;
        return;
    }
    h_cli_write_next(h);
}

/* Writes the payload in pieces of varying shape (tiny + large + tiny iovecs, single huge
 * buffers), always exactly one write in flight. */
static inline void h_cli_write_next(harness_t *h)
{
    if (sg_sock_is_closing(&h->cli) || h->sent >= h->payload_len) return;
    static const size_t big[] = {1u << 20, 70000, 16384, 3, 300000, 16383, 2u << 20};
    size_t left = h->payload_len - h->sent;
    uv_buf_t iov[3];
    unsigned n = 0;
    size_t want = big[h->writes % SG_ARRAY_SIZE(big)];
    size_t a = SG_MIN(left, (size_t)7);
    iov[n++] = uv_buf_init((char *)h->payload + h->sent, (unsigned)a);
    size_t b = SG_MIN(left - a, want);
    if (b) iov[n++] = uv_buf_init((char *)h->payload + h->sent + a, (unsigned)b);
    size_t c = SG_MIN(left - a - b, (size_t)100);
    if (c) iov[n++] = uv_buf_init((char *)h->payload + h->sent + a + b, (unsigned)c);
    int r = sg_sock_write(&h->cli, iov, n, h_cli_write_cb);
    assert_int_equal(r, 0);
    h->sent += a + b + c;
    h->writes++;
    if (sg_sock_write(&h->cli, iov, n, h_cli_write_cb) == UV_EBUSY) h->busy_seen = 1;
}

static inline void h_cli_read_cb(sg_sock_t *s, ssize_t nread, const char *data)
{
    harness_t *h = SG_CONTAINER_OF(s, harness_t, cli);
    if (nread < 0) {
        h->cli_read_err = (int)nread;
        sg_sock_close(s, h_cli_close_cb);
        return;
    }
    if (h->rlen + (size_t)nread > h->rcap) {
        h->rcap = SG_MAX(h->rcap * 2, h->rlen + (size_t)nread);
        h->rbuf = realloc(h->rbuf, h->rcap);
    }
    memcpy(h->rbuf + h->rlen, data, (size_t)nread);
    if (h->rlen < sizeof(h->rhead))
        memcpy(h->rhead + h->rlen, data, SG_MIN((size_t)nread, sizeof(h->rhead) - h->rlen));
    h->rlen += (size_t)nread;
    if (h->expect_len && h->rlen >= h->expect_len) {
        h->match = h->rlen == h->expect_len && memcmp(h->rbuf, h->expect, h->expect_len) == 0;
        sg_sock_close(s, h_cli_close_cb);
    }
}

static inline void h_cli_connect_cb(sg_sock_t *s, int status)
{
    harness_t *h = SG_CONTAINER_OF(s, harness_t, cli);
    h->connect_calls++;
    h->connect_status = status;
    h->connect_before_close = !h->cli_closed;
    sg_sock_tls_error(s, h->tls_err, sizeof(h->tls_err));
    if (status < 0) {
        sg_sock_close(s, h_cli_close_cb);
        return;
    }
    assert_int_equal(sg_sock_read_start(s, h_cli_read_cb), 0);
    h_cli_write_next(h);
}

/* ---------------------------------------------------------------- run */

static inline void h_maybe_finish(harness_t *h)
{
    if (h->listener_closing || !h->cli_closed || h->srv_open > 0) return;
    h->listener_closing = 1;
    uv_close(&h->lst.handle, NULL);
    uv_close((uv_handle_t *)&h->restart, NULL);
}

static inline void h_guard_cb(uv_timer_t *t)
{
    harness_t *h = t->data;
    h->timed_out = 1;
    uv_stop(&h->loop);
}

/* Sets up the loop and the listener (unix socket when pipe_path is set). */
static inline void h_init(harness_t *h, const char *pipe_path)
{
    memset(h, 0, sizeof(*h));
    assert_int_equal(uv_loop_init(&h->loop), 0);
    h->lst.handle.data = h;
    if (pipe_path) {
        h->use_pipe = 1;
        snprintf(h->path, sizeof(h->path), "%s", pipe_path);
        unlink(h->path);
        assert_int_equal(uv_pipe_init(&h->loop, &h->lst.pipe, 0), 0);
        assert_int_equal(uv_pipe_bind(&h->lst.pipe, h->path), 0);
    } else {
        struct sockaddr_in a;
        uv_ip4_addr("127.0.0.1", 0, &a);
        assert_int_equal(uv_tcp_init(&h->loop, &h->lst.tcp), 0);
        assert_int_equal(uv_tcp_bind(&h->lst.tcp, (struct sockaddr *)&a, 0), 0);
        struct sockaddr_in b;
        int len = sizeof(b);
        assert_int_equal(uv_tcp_getsockname(&h->lst.tcp, (struct sockaddr *)&b, &len), 0);
        h->port = ntohs(b.sin_port);
    }
    h->lst.handle.data = h;
    assert_int_equal(uv_listen(&h->lst.stream, 128, h_on_connection), 0);
    assert_int_equal(uv_timer_init(&h->loop, &h->guard), 0);
    h->guard.data = h;
    uv_timer_start(&h->guard, h_guard_cb, H_GUARD_MS, 0);
    uv_unref((uv_handle_t *)&h->guard);
    assert_int_equal(uv_timer_init(&h->loop, &h->restart), 0);
    h->restart.data = h;
}

static inline void h_connect(harness_t *h)
{
    char addr[300];
    const char *host = h->host;
    if (h->use_pipe) {
        snprintf(addr, sizeof(addr), "unix:%s", h->path);
        host = addr;
    } else if (!host) {
        host = "127.0.0.1";
    }
    h->cli_started = 1;
    int r = sg_sock_connect(&h->loop, &h->cli, host, h->port, h->cctx, h->sni, h_cli_connect_cb);
    assert_int_equal(r, 0);
}

/* Runs the loop to completion; asserts no timeout and that the loop closes with no handle. */
static inline void h_run(harness_t *h)
{
    uv_run(&h->loop, UV_RUN_DEFAULT);
    assert_false(h->timed_out);
    uv_close((uv_handle_t *)&h->guard, NULL);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    if (h->use_pipe) unlink(h->path);
    free(h->rbuf);
    h->rbuf = NULL;
}

static inline unsigned char *h_pattern(size_t n, uint32_t seed)
{
    unsigned char *p = malloc(n);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
    return p;
}

/* ---------------------------------------------------------------- certificates */

typedef struct {
    char dir[256];
    char ca[300], other_ca[300], cert[300], key[300];
} h_certs_t;

static inline int h_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static inline void h_certs_make(h_certs_t *c)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(c->dir, sizeof(c->dir), "%s/sg-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(c->dir));
    snprintf(c->ca, sizeof(c->ca), "%s/ca.crt", c->dir);
    snprintf(c->other_ca, sizeof(c->other_ca), "%s/other-ca.crt", c->dir);
    snprintf(c->cert, sizeof(c->cert), "%s/server.crt", c->dir);
    snprintf(c->key, sizeof(c->key), "%s/server.key", c->dir);
    int r = h_sh(
        "set -e; cd '%s'; exec >openssl.log 2>&1;"
        "printf '[req]\\ndistinguished_name=dn\\nprompt=no\\n[dn]\\nCN=sandgate test CA\\n"
        "[v3_ca]\\nbasicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n"
        "subjectKeyIdentifier=hash\\n' > ca.cnf;"
        "printf '[req]\\ndistinguished_name=dn\\nprompt=no\\n[dn]\\nCN=localhost\\n' > srv.cnf;"
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n"
        "keyUsage=critical,digitalSignature\\nextendedKeyUsage=serverAuth\\n' > srv.ext;"
        "for ca in ca other-ca; do openssl req -x509 -new -newkey ec -pkeyopt "
        "ec_paramgen_curve:prime256v1 -nodes -keyout $ca.key -out $ca.crt -days 2 -config ca.cnf "
        "-extensions v3_ca; done;"
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout server.key -out server.csr -config srv.cnf;"
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out server.crt -days 2 -extfile srv.ext",
        c->dir);
    if (r != 0) h_sh("cat '%s/openssl.log' >&2", c->dir);
    assert_int_equal(r, 0);
}

static inline void h_certs_remove(h_certs_t *c)
{
    if (c->dir[0]) h_sh("rm -rf '%s'", c->dir);
}

#endif
