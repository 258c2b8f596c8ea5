/* sock.c: TCP / unix-socket streams with an optional TLS layer (see sock.h).
 *
 * Map:
 *   - plaintext path: reads go straight from libuv (one reused 64 KiB buffer) to read_cb,
 *     writes straight to one uv_write of the caller's buffers (zero copy). Each I/O entry
 *     point tests s->tls once and hands TLS sockets to tls.c; that test is all the
 *     plaintext path pays for TLS.
 *   - TLS path: tls.c (sg__tls_*, see tls_internal.h) turns ciphertext from libuv into
 *     plaintext for read_cb and plaintext writes into one uv_write of records at a time.
 *   - connect: numeric hosts connect directly, names go through uv_getaddrinfo, "unix:" paths
 *     through uv_pipe_connect; with TLS the connect callback waits for the handshake.
 *   - close: this file owns the close sequence. close_pending counts the parties that still
 *     hold s: the stream handle, a running resolver request (its callback cannot be
 *     cancelled once the thread pool picked it up) and the TLS connection's idle handle.
 *     The last one to report (sg__sock_close_step) delivers a still-pending connect or write
 *     callback with SG_ECLOSED, frees what s owns and only then calls the owner's close_cb,
 *     after which the owner may free s.
 */
#include "sandgate/sock.h"
#include "sandgate/common.h"
#include "tls_internal.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SG_SOCK_READ_BUF (64 * 1024)

static void sock_init(uv_loop_t *loop, sg_sock_t *s)
{
    void *data = s->data;
    memset(s, 0, sizeof(*s));
    s->data = data;
    s->loop = loop;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sg_sock_t *s = (sg_sock_t *)h;
    (void)suggested;
    if (s->tls) {
        sg__tls_alloc(s, buf);
        return;
    }
    /* Plaintext reads land in one buffer per thread, not one per socket: read data is only
     * valid during read_cb (sock.h), every reader copies what it keeps, and libuv runs one
     * read callback at a time. An idle connection then costs no receive buffer at all. */
    static _Thread_local char *shared;
    if (!shared) shared = sg_xmalloc(SG_SOCK_READ_BUF);
    *buf = uv_buf_init(shared, SG_SOCK_READ_BUF);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sg_sock_t *s = (sg_sock_t *)st;
    if (s->tls) { /* the bytes landed in the TLS inbox (sg__tls_alloc) */
        sg__tls_on_read(s, nread);
        return;
    }
    if (nread == 0) return;
    if (nread < 0) {
        s->eof = 1;
        uv_read_stop(st);
        s->reading = 0;
        if (s->read_cb) s->read_cb(s, nread, NULL);
        return;
    }
    s->read_cb(s, nread, buf->base);
}

int sg_sock_accept(uv_stream_t *listener, sg_sock_t *s, sg_tls_ctx_t *tls)
{
    int r;
    sock_init(listener->loop, s);
    if (listener->type == UV_NAMED_PIPE) {
        s->kind = SG_SOCK_PIPE;
        r = uv_pipe_init(listener->loop, &s->h.pipe, 0);
    } else {
        s->kind = SG_SOCK_TCP;
        r = uv_tcp_init(listener->loop, &s->h.tcp);
    }
    if (r < 0) return r;
    s->h.handle.data = s;
    r = uv_accept(listener, &s->h.stream);
    if (r < 0) return r; /* caller closes */
    if (!tls) {
        s->connected = 1;
        return 0;
    }
    r = sg__tls_conn_new(s, tls, NULL);
    if (r < 0) return r;
    sg__tls_start(s);
    return 0;
}

int sg__sock_transport_read(sg_sock_t *s, int on)
{
    return on ? uv_read_start(&s->h.stream, on_alloc, on_read) : uv_read_stop(&s->h.stream);
}

void sg__sock_connect_done(sg_sock_t *s, int status)
{
    sg_sock_connect_cb cb = s->connect_cb;
    s->connect_cb = NULL;
    if (status == 0) s->connected = 1;
    if (cb) cb(s, status);
}

static void on_connect(uv_connect_t *req, int status)
{
    sg_sock_t *s = req->data;
    if (status == UV_ECANCELED || s->closing) {
        sg__sock_connect_done(s, status == 0 ? SG_ECLOSED : status);
        return;
    }
    if (status == 0 && s->tls) {
        sg__tls_start(s); /* the connect callback waits for the handshake */
        return;
    }
    sg__sock_connect_done(s, status);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    sg_sock_t *s = req->data;
    s->resolving = 0;
    if (s->closing) {
        /* The handle is already closing and may have reported; s stays valid because
         * close_pending counted this request. */
        if (res) uv_freeaddrinfo(res);
        sg__sock_connect_done(s, SG_ECLOSED);
        sg__sock_close_step(s);
        return;
    }
    if (status < 0) {
        if (res) uv_freeaddrinfo(res);
        sg__sock_connect_done(s, status);
        return;
    }
    struct sockaddr_storage ss;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    if (ss.ss_family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = htons(s->port);
    else ((struct sockaddr_in6 *)&ss)->sin6_port = htons(s->port);
    s->u.creq.data = s;
    int r = uv_tcp_connect(&s->u.creq, &s->h.tcp, (struct sockaddr *)&ss, on_connect);
    if (r < 0) sg__sock_connect_done(s, r);
}

static int connect_start(uv_loop_t *loop, sg_sock_t *s, const char *host, uint16_t port,
                         sg_tls_ctx_t *tls, const char *sni)
{
    int r;
    if (strncmp(host, "unix:", 5) == 0) {
        s->kind = SG_SOCK_PIPE;
        r = uv_pipe_init(loop, &s->h.pipe, 0);
        if (r < 0) return r;
        s->h.handle.data = s;
        s->host = sg_xstrdup(host + 5);
        if (tls && (r = sg__tls_conn_new(s, tls, sni)) < 0) return r;
        s->u.creq.data = s;
        uv_pipe_connect(&s->u.creq, &s->h.pipe, s->host, on_connect);
    } else {
        s->kind = SG_SOCK_TCP;
        r = uv_tcp_init(loop, &s->h.tcp);
        if (r < 0) return r;
        s->h.handle.data = s;
        s->host = sg_xstrdup(host);
        s->port = port;
        if (tls && (r = sg__tls_conn_new(s, tls, sni ? sni : host)) < 0) return r;
        /* Numeric addresses skip the resolver thread pool. */
        struct sockaddr_in6 a6;
        struct sockaddr_in a4;
        s->u.creq.data = s;
        if (uv_ip4_addr(host, port, &a4) == 0) {
            r = uv_tcp_connect(&s->u.creq, &s->h.tcp, (struct sockaddr *)&a4, on_connect);
        } else if (uv_ip6_addr(host, port, &a6) == 0) {
            r = uv_tcp_connect(&s->u.creq, &s->h.tcp, (struct sockaddr *)&a6, on_connect);
        } else {
            struct addrinfo hints;
            memset(&hints, 0, sizeof(hints));
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            s->u.gai.data = s;
            s->resolving = 1;
            r = uv_getaddrinfo(loop, &s->u.gai, on_resolved, host, NULL, &hints);
            if (r < 0) s->resolving = 0;
        }
        if (r < 0) return r;
    }
    return 0;
}

int sg_sock_connect(uv_loop_t *loop, sg_sock_t *s, const char *host, uint16_t port,
                    sg_tls_ctx_t *tls, const char *sni, sg_sock_connect_cb cb)
{
    sock_init(loop, s);
    s->connect_cb = cb;
    int r = connect_start(loop, s, host, port, tls, sni);
    if (r < 0) s->connect_cb = NULL; /* reported here; the callback never runs */
    return r;
}

int sg_sock_read_start(sg_sock_t *s, sg_sock_read_cb cb)
{
    s->read_cb = cb;
    if (s->closing) return SG_ECLOSED;
    if (s->eof) return UV_EOF;
    if (s->tls) return sg__tls_read_start(s);
    if (s->reading) return 0;
    int r = uv_read_start(&s->h.stream, on_alloc, on_read);
    if (r == 0) s->reading = 1;
    return r;
}

int sg_sock_read_stop(sg_sock_t *s)
{
    if (s->tls) return sg__tls_read_stop(s);
    if (!s->reading) return 0;
    s->reading = 0;
    return uv_read_stop(&s->h.stream);
}

static void on_write(uv_write_t *req, int status)
{
    sg_sock_t *s = req->data;
    free(req);
    sg_sock_write_cb cb = s->write_cb;
    s->writing = 0;
    s->write_cb = NULL;
    if (cb) cb(s, status);
}

int sg_sock_write(sg_sock_t *s, const uv_buf_t *bufs, unsigned nbufs, sg_sock_write_cb cb)
{
    if (s->closing) return SG_ECLOSED;
    if (s->writing) return UV_EBUSY;
    if (s->tls) return sg__tls_write(s, bufs, nbufs, cb);
    uv_write_t *w = sg_xmalloc(sizeof(*w));
    w->data = s;
    s->write_cb = cb;
    int r = uv_write(w, &s->h.stream, bufs, nbufs, on_write);
    if (r < 0) {
        free(w);
        s->write_cb = NULL;
        return r;
    }
    s->writing = 1;
    return 0;
}

int sg_sock_try_write(sg_sock_t *s, const uv_buf_t *bufs, unsigned nbufs)
{
    /* TLS records are produced by tls.c and go out through its own write path. */
    if (s->tls || s->writing || s->closing || !s->connected) return UV_EAGAIN;
    return uv_try_write(&s->h.stream, bufs, nbufs);
}

int sg_sock_set_sndbuf(sg_sock_t *s, int bytes)
{
    if (s->kind != SG_SOCK_TCP) return 0;
    int v = bytes;
    return uv_send_buffer_size(&s->h.handle, &v);
}

int sg_sock_nodelay(sg_sock_t *s, int on)
{
    if (s->kind != SG_SOCK_TCP) return 0;
    return uv_tcp_nodelay(&s->h.tcp, on);
}

void sg__sock_close_step(sg_sock_t *s)
{
    if (--s->close_pending > 0) return;
    /* Callbacks libuv had no request left to cancel for (resolver already reported, TLS
     * handshake or queued TLS write) still run exactly once, before close_cb. */
    if (s->connect_cb) sg__sock_connect_done(s, SG_ECLOSED);
    if (s->writing) {
        sg_sock_write_cb wcb = s->write_cb;
        s->writing = 0;
        s->write_cb = NULL;
        if (wcb) wcb(s, SG_ECLOSED);
    }
    if (s->tls) sg__tls_conn_free(s);
    free(s->host);
    s->host = NULL;
    if (s->close_cb) s->close_cb(s);
}

static void on_close(uv_handle_t *h)
{
    sg__sock_close_step((sg_sock_t *)h);
}

void sg_sock_close(sg_sock_t *s, sg_sock_close_cb cb)
{
    if (s->closing) return;
    s->closing = 1;
    s->close_cb = cb;
    s->reading = 0;
    s->close_pending = 1;
    if (s->resolving) {
        /* Cancelled or not, on_resolved still runs and must find s alive. */
        s->close_pending++;
        uv_cancel((uv_req_t *)&s->u.gai);
    }
    if (s->tls) s->close_pending += sg__tls_close(s);
    uv_close(&s->h.handle, on_close);
}

const char *sg_sock_tls_error(const sg_sock_t *s, char *buf, size_t len)
{
    if (!s->tls) {
        if (len) buf[0] = '\0';
        return buf;
    }
    return sg__tls_error(s, buf, len);
}

const char *sg_sock_peer(const sg_sock_t *s, char *buf, size_t len)
{
    if (s->kind != SG_SOCK_TCP) {
        snprintf(buf, len, "unix");
        return buf;
    }
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    char ip[64] = "?";
    if (uv_tcp_getpeername(&s->h.tcp, (struct sockaddr *)&ss, &n) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
            snprintf(buf, len, "%s:%u", ip, ntohs(((struct sockaddr_in *)&ss)->sin_port));
        } else {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
            snprintf(buf, len, "[%s]:%u", ip, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
        }
        return buf;
    }
    snprintf(buf, len, "?");
    return buf;
}
