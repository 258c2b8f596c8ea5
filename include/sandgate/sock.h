/* sock.h: one byte stream (TCP, unix socket, optionally TLS over either) on the loop.
 *
 * This is the transport the HTTP server and client stand on. It hides whether bytes are
 * encrypted: reads deliver plaintext, writes take plaintext. Rules (h2o's):
 *   - exactly one write in flight: sg_sock_write() returns UV_EBUSY while one is pending;
 *     the caller gathers whatever is pending into the next write (see sg_bufq_t);
 *   - the buffers passed to sg_sock_write() must stay valid until its callback;
 *   - the write callback always runs, with UV_ECANCELED / SG_ECLOSED if the socket closes first;
 *   - a sg_sock_t is embedded in its owner; the owner is freed only from the close callback;
 *   - like every libuv server, a process using sg_sock must ignore SIGPIPE (writes to a peer
 *     that went away then fail with UV_EPIPE instead of killing the process).
 *
 * TLS: with a server context, sg_sock_accept() starts a server-side handshake; with a client
 * context, sg_sock_connect() finishes the handshake (including certificate and hostname checks)
 * before its callback reports success. Plaintext written before the handshake completes is
 * queued and flushed after it. A failed server handshake surfaces as a read error (SG_ETLS),
 * so a server should sg_sock_read_start() right after accepting. The TLS engine lives in
 * tls.c (map there); sock.c keeps the plaintext path free of it.
 *
 * Close order: sg_sock_close() may be called at any time, including while the name is being
 * resolved, the TCP connect is pending or the handshake runs. The pending connect callback
 * (with an error) and the pending write callback run before the close callback, and the close
 * callback runs only once nothing (resolver thread, timers) can touch s any more. */
#ifndef SANDGATE_SOCK_H
#define SANDGATE_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "sandgate/tls.h"

typedef struct sg_sock sg_sock_t;
typedef struct sg_tls_conn sg_tls_conn_t; /* private to sock.c / tls.c */

/* nread > 0: data[0..nread) is valid only during the call. nread < 0: UV_EOF or an error
 * (SG_ETLS, SG_ECERT, UV_ECONNRESET, ...); no more reads follow. */
typedef void (*sg_sock_read_cb)(sg_sock_t *s, ssize_t nread, const char *data);
typedef void (*sg_sock_write_cb)(sg_sock_t *s, int status);
typedef void (*sg_sock_connect_cb)(sg_sock_t *s, int status);
typedef void (*sg_sock_close_cb)(sg_sock_t *s);

typedef enum { SG_SOCK_TCP = 1, SG_SOCK_PIPE = 2 } sg_sock_kind_t;

struct sg_sock {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_loop_t *loop;
    void *data; /* the owner's */
    sg_sock_kind_t kind;
    sg_tls_conn_t *tls; /* NULL for plaintext */

    /* private */
    /* The uv_write_t of the write in flight is allocated per write (freed first thing in its
     * callback, which libuv also runs, with UV_ECANCELED, when the handle closes): an idle
     * socket does not carry one. */
    union { /* resolve, then connect: never both in flight (a connect starts in on_resolved) */
        uv_connect_t creq;
        uv_getaddrinfo_t gai;
    } u;
    sg_sock_read_cb read_cb;
    sg_sock_write_cb write_cb;
    sg_sock_connect_cb connect_cb;
    sg_sock_close_cb close_cb;
    unsigned writing : 1;
    unsigned reading : 1;
    unsigned closing : 1;
    unsigned connected : 1;
    unsigned resolving : 1;
    unsigned eof : 1;
    unsigned close_pending : 3; /* handle + resolver + TLS idle still to report back */
    char *host; /* for connect: name to resolve and, with TLS, to verify */
    uint16_t port;
};

/* Accepts one connection from listener into s (s is initialised here). tls may be NULL. */
int sg_sock_accept(uv_stream_t *listener, sg_sock_t *s, sg_tls_ctx_t *tls);

/* Connects s (initialised here) to host:port over TCP (host may be a name, resolved without
 * blocking) or, when host starts with "unix:", to that socket path (port ignored). With tls,
 * the handshake verifies the peer against sni (NULL = host). cb runs exactly once, with 0 when
 * the stream is ready for plaintext I/O; TLS failures report SG_ECERT (CA or hostname did not
 * verify) or SG_ETLS. Over a unix socket with TLS and sni NULL, only the CA chain is checked
 * (there is no host name). When this returns an error, cb never runs and the caller still
 * has to sg_sock_close(). */
int sg_sock_connect(uv_loop_t *loop, sg_sock_t *s, const char *host, uint16_t port,
                    sg_tls_ctx_t *tls, const char *sni, sg_sock_connect_cb cb);

int sg_sock_read_start(sg_sock_t *s, sg_sock_read_cb cb);
int sg_sock_read_stop(sg_sock_t *s);

/* One write in flight (UV_EBUSY otherwise). */
int sg_sock_write(sg_sock_t *s, const uv_buf_t *bufs, unsigned nbufs, sg_sock_write_cb cb);
static inline int sg_sock_writing(const sg_sock_t *s) { return s->writing; }

/* Writes what the kernel takes right now, synchronously, with no callback: returns the byte
 * count (possibly short), UV_EAGAIN when nothing can be written this way (TLS, a write in
 * flight, socket full), or another negative error. The fast path for small responses: a write
 * that completes here never arms the poller (Redis's write-before-poll). */
int sg_sock_try_write(sg_sock_t *s, const uv_buf_t *bufs, unsigned nbufs);

/* Bounds the kernel send buffer (SO_SNDBUF) and sets TCP_NODELAY; no-ops on unix sockets. */
int sg_sock_set_sndbuf(sg_sock_t *s, int bytes);
int sg_sock_nodelay(sg_sock_t *s, int on);

/* Closes the stream; pending writes complete with an error first, then cb runs. With TLS a
 * close_notify is attempted but never waited for. Idempotent. */
void sg_sock_close(sg_sock_t *s, sg_sock_close_cb cb);
static inline int sg_sock_is_closing(const sg_sock_t *s) { return s->closing; }

/* After a TLS failure (SG_ETLS / SG_ECERT): a human-readable reason, including mbedTLS's text
 * or the certificate verification flags. Empty for plaintext sockets or when nothing failed.
 * Valid until the close callback. Returns buf. */
const char *sg_sock_tls_error(const sg_sock_t *s, char *buf, size_t len);

/* Peer address as text ("1.2.3.4:5678", "[::1]:80", "unix"); returns buf. */
const char *sg_sock_peer(const sg_sock_t *s, char *buf, size_t len);

#endif
