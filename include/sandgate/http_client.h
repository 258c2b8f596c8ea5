/* http_client.h: HTTP/1.1 client with per-origin connection pools, on one libuv loop.
 *
 * The gateway uses it to talk to each sandbox's execd (usually over a unix socket) and to
 * upstream servers (http / https), proxying bodies both ways with streaming and backpressure.
 *
 * Map
 *   sg_http_client_t   one per loop (or per purpose). Owns the origins, their connections, the
 *                      four timeout lists (connect / response / body idle / pool idle: one
 *                      uv_timer_t each, see timer.h) and one uv_idle_t that runs deferred work.
 *   origin             "http://host:port", "https://host:port" or "unix:/path/to.sock". Each has
 *                      at most max_conns_per_origin connections (connecting + busy + idle), a
 *                      FIFO of waiting requests bounded by max_queue_per_origin, and a LIFO pool
 *                      of at most max_idle_per_origin idle keep-alive connections.
 *   sg_http_creq_t     one request/response exchange; created by sg_http_request(), freed by the
 *                      client right after its on_done callback returns.
 *
 * Request body: none, a buffer (copied or referenced, sent with Content-Length), or streamed by
 * the caller (opts.stream_body) with sg_http_creq_write*() and sg_http_creq_end(), sent with
 * Content-Length when opts.content_length >= 0, else chunked. Streaming is pull-style: a write
 * returns 1 once more than req_body_highwater bytes wait to be sent; the caller then stops and
 * waits for on_drain (fired once everything queued has been written to the socket). Writes past
 * 4 x highwater are refused with SG_ETOOBIG, so a caller that ignores backpressure fails loudly
 * instead of growing memory. Only one socket write is ever in flight per connection.
 *
 * Response: on_response(status, headers) once, then on_body(data) as bytes arrive (Content-
 * Length, chunked, or close-delimited: EOF ends the body), then on_done(0, NULL). 1xx interim
 * responses are skipped. sg_http_creq_pause() stops reading the connection (the server, and
 * only this request's server, is then held back by TCP flow control); sg_http_creq_resume()
 * continues, delivering bytes already read but not yet handed out first.
 *
 * Errors: on_done(err, msg) with err < 0 and a human-readable msg: SG_ETIMEDOUT (connect,
 * response or body idle timeout), UV_ECONNREFUSED / UV_ENOENT (connect), UV_ECONNRESET (reset),
 * SG_EPROTO (malformed response, or the server closed before the response was complete),
 * SG_ETOOBIG (response headers past max_header_bytes), SG_ECLOSED (cancelled or client closed).
 * A request that fails on a reused keep-alive connection before any response byte arrived is
 * retried once on a fresh connection if that is safe: idempotent method (GET HEAD PUT DELETE
 * OPTIONS TRACE) and a body that can be replayed (none or buffered, never a streamed one).
 *
 * Connection reuse: a connection returns to the pool only after a complete response that allows
 * keep-alive, with the whole request sent and no stray bytes after the response. Cancelled,
 * failed or abandoned exchanges close their connection. Idle pooled connections keep reading,
 * so a server close is noticed at once; those still idle after idle_timeout_ms are closed.
 *
 * Callback contracts (all callbacks run on the loop thread, never from inside an API call
 * except on_done from sg_http_creq_cancel() and sg_http_client_close()):
 *   - on_done runs exactly once per request, and is the last callback; after it returns the
 *     handle is invalid (it is freed once the current callback chain has unwound, so using it
 *     *inside* on_done is fine).
 *   - From any callback the caller may cancel, pause, resume or write to the request, start new
 *     requests, or close the client; the client never frees an object a callback chain on the
 *     stack still uses.
 *   - hdrs in on_response, and data in on_body, are valid only during the call.
 *   - sg_http_creq_pause() called inside on_body takes effect at once: no further on_body
 *     runs (even for bytes of the same read) until sg_http_creq_resume(); on_done(0) for a
 *     response whose end was held back also waits for the resume.
 *   - sg_http_creq_cancel() delivers on_done(SG_ECLOSED, "cancelled") before it returns
 *     (unless on_done already ran, in which case the handle must not be used at all).
 *
 * Ownership: the client owns every sg_http_creq_t and connection. sg_http_client_close()
 * completes every pending request with SG_ECLOSED, closes every connection and handle, frees
 * the client, then calls its callback; the loop then has none of the client's handles left. */
#ifndef SANDGATE_HTTP_CLIENT_H
#define SANDGATE_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sandgate/buf.h"
#include "sandgate/http.h"
#include "sandgate/tls.h"

typedef struct sg_http_client sg_http_client_t;
typedef struct sg_http_creq sg_http_creq_t;

typedef struct sg_http_client_config {
    unsigned max_conns_per_origin; /* default 8 */
    unsigned max_queue_per_origin; /* requests waiting for a connection; default 256 */
    unsigned max_idle_per_origin;  /* pooled keep-alive connections; default 4; 0 disables reuse */
    uint64_t idle_timeout_ms;      /* pooled connection lifetime; default 30000 */
    uint64_t connect_timeout_ms;   /* connect (and TLS handshake); default 10000 */
    uint64_t response_timeout_ms;  /* request fully sent -> response headers; default 30000 */
    uint64_t body_idle_timeout_ms; /* no response bytes (or no upload progress) for this long;
                                      default 60000. Not counted while the caller paused. */
    size_t max_header_bytes;       /* response head; default 64 KiB */
    size_t req_body_highwater;     /* streamed upload backpressure threshold; default 256 KiB */
    int sndbuf;                    /* SO_SNDBUF for TCP connections, 0 = kernel default */
    sg_tls_ctx_t *tls;             /* client context for https:// origins (NULL: https refused) */
} sg_http_client_config_t;

/* Zeroed fields of cfg take the defaults above; a duration of 0 cannot be expressed through
 * the defaults, so pass SG_HTTP_CLIENT_NO_TIMEOUT to disable a timeout. cfg may be NULL. */
#define SG_HTTP_CLIENT_NO_TIMEOUT UINT64_MAX
int sg_http_client_new(uv_loop_t *loop, const sg_http_client_config_t *cfg, sg_http_client_t **out);
/* Fails every pending request with SG_ECLOSED, closes everything, frees the client, then calls
 * cb(data) (cb may be NULL). The client must not be used after this call. */
void sg_http_client_close(sg_http_client_t *c, void (*cb)(void *data), void *data);

typedef struct sg_http_client_stats {
    uint64_t connects;   /* connections opened, ever */
    uint64_t reuses;     /* requests served by a pooled connection */
    uint64_t retries;    /* stale-connection retries */
    unsigned conns_open; /* connecting + busy + idle, now */
    unsigned conns_idle; /* pooled, now */
    unsigned queued;     /* requests waiting for a connection, now */
} sg_http_client_stats_t;
/* Totals over every origin, or only origin's when origin != NULL. */
void sg_http_client_stats(const sg_http_client_t *c, const char *origin, sg_http_client_stats_t *st);

typedef void (*sg_http_creq_response_cb)(sg_http_creq_t *r, void *data, int status, const sg_hdrs_t *hdrs);
typedef void (*sg_http_creq_body_cb)(sg_http_creq_t *r, void *data, const char *p, size_t n);
typedef void (*sg_http_creq_done_cb)(sg_http_creq_t *r, void *data, int err, const char *msg);
typedef void (*sg_http_creq_drain_cb)(sg_http_creq_t *r, void *data);

typedef struct sg_http_creq_opts {
    const char *method;       /* "GET", "POST", ... */
    const char *origin;       /* "http://host:port", "https://host:port", "unix:/path" */
    const char *target;       /* "/path?query" (default "/") */
    const sg_hdrs_t *headers; /* copied; Content-Length / Transfer-Encoding are the client's
                                 (derived from the body mode); Host is added when missing */
    const void *body;         /* buffered body, copied ... */
    size_t body_len;
    sg_buf_t *body_buf;       /* ... or referenced (whole chunk); takes its own reference */
    int stream_body;          /* 1: the caller writes the body (sg_http_creq_write / _end) */
    int64_t content_length;   /* with stream_body: the exact length, or -1 for chunked */
    const char *sni;          /* https: name to verify and send as SNI (NULL = origin host) */
    int no_body_idle_timeout; /* 1: no body idle timeout once headers arrived (long-lived
                                 streams such as SSE, whose liveness the caller checks) */
    sg_http_creq_response_cb on_response;
    sg_http_creq_body_cb on_body;
    sg_http_creq_done_cb on_done;  /* required */
    sg_http_creq_drain_cb on_drain;
    void *data;
} sg_http_creq_opts_t;

/* Starts a request; the exchange begins on a later loop turn (no callback runs from here).
 * Returns SG_EINVAL (bad origin / options, https without a TLS context), SG_ETOOBIG (the
 * origin's wait queue is full: the caller should answer 503) or SG_ECLOSED (client closing);
 * on error *out is untouched and no callback runs. */
int sg_http_request(sg_http_client_t *c, const sg_http_creq_opts_t *o, sg_http_creq_t **out); /* out may be NULL */

/* Streamed request body. Returns 0 (keep writing), 1 (accepted, but wait for on_drain before
 * writing more), SG_ETOOBIG (refused: past 4 x highwater), SG_EINVAL (after end, or more than
 * content_length), SG_ECLOSED (the request body can no longer be sent: the server stopped
 * reading or already answered). _buf takes its own reference to b. */
int sg_http_creq_write(sg_http_creq_t *r, const void *p, size_t n);
int sg_http_creq_write_buf(sg_http_creq_t *r, sg_buf_t *b, size_t off, size_t n);
/* Ends a streamed body (SG_EINVAL if content_length was declared and not reached). */
int sg_http_creq_end(sg_http_creq_t *r);
size_t sg_http_creq_queued(const sg_http_creq_t *r); /* request bytes not yet written */

void sg_http_creq_pause(sg_http_creq_t *r);
void sg_http_creq_resume(sg_http_creq_t *r);
void sg_http_creq_cancel(sg_http_creq_t *r);
void *sg_http_creq_data(const sg_http_creq_t *r);
int sg_http_creq_status(const sg_http_creq_t *r); /* 0 until on_response */

#endif
