/* bconn.h: the bench's minimal HTTP/1.1 client connection (uv_tcp_t + llhttp, no TLS).
 *
 * Why not sg_http_client: the bench holds tens of thousands of streams and wants the smallest
 * per-connection state it can get (one uv_tcp_t, one llhttp_t, a few counters: ~400 bytes)
 * and exact control over when a stream stops being read (the `slow` scenario). Reads go into
 * one static buffer shared by every connection (the loop is single-threaded and libuv calls
 * read_cb before the next alloc_cb), so an idle connection owns no buffer at all.
 *
 * Lifecycle: bc_connect() → on_connect(status) → bc_write() requests (copied; several may be
 * queued: the publisher pipelines) → on_headers / on_body / on_complete per response →
 * bc_close() (or an error: on_error, then the close) → on_close, after which the owner may
 * free the struct. Callbacks returning non-zero stop parsing (the caller usually closed).
 * Nothing here blocks except bc_url_parse's getaddrinfo, called before the loop runs (or with
 * numeric hosts, which do not touch the network). */
#ifndef SANDGATE_BENCH_BCONN_H
#define SANDGATE_BENCH_BCONN_H
#include <llhttp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct bc_url {
    char host[256];
    int port;
    char hostport[300]; /* for the Host header */
    char path[2048];    /* path and query, "/" at least */
    struct sockaddr_storage addr;
} bc_url_t;

/* "http://host[:port][/path]" or, as OpenSandbox endpoint strings come, "host[:port][/path]"
 * without a scheme. https is refused (SG_EINVAL). 0 or a negative code; err gets a message. */
int bc_url_parse(const char *url, bc_url_t *out, char *err, size_t errlen);

typedef struct bc_conn bc_conn_t;
typedef struct bc_ops {
    void (*on_connect)(bc_conn_t *c, int status); /* status < 0: failed, the close follows */
    int (*on_headers)(bc_conn_t *c);              /* c->status holds the HTTP status */
    int (*on_body)(bc_conn_t *c, const char *p, size_t n);
    int (*on_complete)(bc_conn_t *c);        /* one response finished */
    void (*on_error)(bc_conn_t *c, int err); /* EOF (UV_EOF), read/write/parse error */
    void (*on_close)(bc_conn_t *c);          /* handle closed: the owner may free c */
} bc_ops_t;

struct bc_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    llhttp_t parser;
    const bc_ops_t *ops;
    void *ud;
    int status; /* of the response being parsed */
    unsigned connected : 1, closing : 1, paused : 1, failed : 1;
    uint32_t writes_pending;
    uint64_t bytes_in;
};

int bc_connect(uv_loop_t *loop, bc_conn_t *c, const bc_url_t *url, const bc_ops_t *ops, void *ud);
/* Queues a copy of p. 0 or a negative code (the connection is not usable then). */
int bc_write(bc_conn_t *c, const char *p, size_t n);
void bc_pause(bc_conn_t *c); /* stop reading: the kernel buffers fill, the server sees it */
void bc_resume(bc_conn_t *c);
void bc_close(bc_conn_t *c); /* idempotent; on_close follows */

/* A request head (+ body) in a malloc'd string: method, url's path, Host, Content-Length when
 * body != NULL, then extra (already "Name: value\r\n" lines, or NULL). *len gets its length. */
char *bc_request(const char *method, const bc_url_t *url, const char *extra, const char *body,
                 size_t body_len, size_t *len);
#endif
