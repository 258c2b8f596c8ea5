/* http_server.h: HTTP/1.1 server on llhttp + sg_sock (plaintext or TLS), one libuv loop.
 *
 * Map
 *   sg_http_server_t   listeners (TCP v4/v6, unix), the connection list, the shared timeout lists
 *                      (one uv_timer_t per duration, timer.h) and a deferred-work idle handle.
 *   connection         (private) one sg_sock_t + one llhttp_t + an output sg_bufq_t. Requests on
 *                      a connection are handled strictly one at a time, in order: the parser is
 *                      paused after a message completes until that request's response has been
 *                      fully queued (and the output is below the high-water mark), so pipelined
 *                      requests are answered in order and never buffered unboundedly.
 *   sg_http_req_t      one request + its response. Handed to the handler after the head is
 *                      parsed; the body is pulled by the handler (sg_http_req_read_body).
 *
 * Ownership and lifetimes
 *   - The handler owns a reference to req from the handler call until it *finishes*: a
 *     response ended (sg_http_respond*, sg_http_resp_end, even if they return SG_ECLOSED) or
 *     sg_http_req_release(). It may finish in a later loop iteration (asynchronous handlers).
 *     Extra references: sg_http_req_ref()/sg_http_req_unref().
 *   - The server holds its own reference while the request is on the connection; the server
 *     never frees a request or a connection from inside a callback chain that still uses it:
 *     state changes are applied after llhttp_execute() returns or from a deferred pass.
 *   - When the client goes away (reset, a failed write, EOF before the request was complete,
 *     a timeout, the shutdown deadline), the abort callback runs once (never nested inside a
 *     server call made by the handler); read_all's callback gets SG_ECLOSED first. Afterwards
 *     every call on req returns SG_ECLOSED, but the handler still has to finish (end or
 *     release) to drop its reference. A client that half-closes (EOF) after a complete
 *     request still gets its response (printf | nc); one that really closed is noticed at the
 *     next write, which fails (so idle streams should send heartbeats).
 *
 * Callback contracts
 *   - handler(req, data): called once per request after the head is parsed. It may respond at
 *     once or later. Until it calls sg_http_req_read_body()/read_all(), no body byte is read
 *     (the socket read side is stopped as soon as the parser has nothing more to do).
 *   - body_cb(req, data, len, ud): data valid only during the call; len == 0 with data == NULL
 *     marks the end of the body. Call sg_http_req_pause_body() from anywhere to stop reading
 *     the socket (TCP flow control then pushes back on the client); sg_http_req_resume_body()
 *     restarts delivery from a deferred pass (never synchronously inside the resume call).
 *     Pausing stops body *data*; the end mark (NULL, 0) may still arrive while paused when
 *     the body is already complete (nothing more is read from the socket for it), so a
 *     handler that paused to flush a write must remember the end and act on it when done.
 *   - If the handler finishes without consuming the whole body: when at most 64 KiB of a
 *     Content-Length body remain, the rest is read and discarded and the connection is kept;
 *     otherwise (chunked, larger, or `Expect: 100-continue` never answered) the connection is
 *     closed after the response (cheaper than reading a body nobody wants). Simple responses
 *     (sg_http_respond*) announce it with `Connection: close`; a streamed response whose head
 *     went out while the handler might still have read the body cannot, and just closes.
 *   - Writes: sg_http_resp_write*() return 0 (keep going), 1 (pending output is past the
 *     high-water mark: stop producing until the drain callback), or a negative error
 *     (SG_ECLOSED once the client is gone, SG_EINVAL on misuse). Data is queued, never lost, on
 *     return 1. The drain callback runs when pending output falls to half the mark.
 *   - access_log(entry, data): once per request that got a head parsed (or that was rejected
 *     with an error response before the handler saw it), when its response is fully queued
 *     and its body parsed (duration_us ends there), or when it is aborted.
 *   - Server callbacks: the shutdown callback gets the server (still valid: call
 *     sg_http_server_close from it); the close callback gets NULL (the server is freed).
 *     sg_http_server_close cancels a pending shutdown callback.
 *
 * Limits (sg_http_limits_t, defaults in sg_http_server_config_init) are answered with a JSON
 * body {"code":"...","message":"..."} and `Connection: close`: header bytes / count (431), URL
 * length (414), body size (413), malformed request (400), header timeout (408: measured from
 * the first byte of a request, or from accept; a connection that sent nothing is closed
 * silently), body inactivity timeout (408, only while the handler is reading and not paused),
 * idle keep-alive timeout (closed silently), send timeout (a write stuck that long: closed).
 * Connection cap: a connection over max_connections is accepted, answered `503` JSON
 * (`{"code":"OVERLOADED",...}`) with `Connection: close` and closed (clients get a reason
 * instead of a reset; the reject costs one write and no parsing).
 * Closing after a response (errors, Connection: close, an unread body) is a lingering close:
 * the write side is shut and input drained for up to 2 s so the kernel does not answer the
 * client's unsent bytes with a RST that would destroy the response (plaintext; TLS closes).
 *
 * Errors the server answers by itself use these codes: BAD_REQUEST (400), HEADER_TIMEOUT /
 * BODY_TIMEOUT (408), BODY_TOO_LARGE (413), URL_TOO_LONG (414), HEADERS_TOO_LARGE /
 * TOO_MANY_HEADERS (431), INTERNAL_ERROR (500: handler released without answering or gave
 * invalid headers), OVERLOADED (503).
 *
 * Parsing is covered by test/fuzz/fuzz_http_request.c, which drives real connections (unix
 * socket) with arbitrary bytes.
 *
 * Responses: `Date`, `X-Request-ID` (the client's if it is sane: 1..128 chars of
 * [A-Za-z0-9._:-], else generated), `Content-Length: 0` for every empty body except where
 * RFC 9110 forbids a body (1xx, 204, 304), HEAD answered without a body, chunked encoding for
 * streamed responses without a Content-Length (close-delimited for HTTP/1.0 clients),
 * `Connection: close` when the server knows at head time that it will close (client asked,
 * limits, shutdown, unread body with a simple response). Status must be 200..999 (no 1xx
 * besides the automatic `100 Continue`, sent when the handler starts reading a body whose
 * client sent `Expect: 100-continue`). */
#ifndef SANDGATE_HTTP_SERVER_H
#define SANDGATE_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sandgate/buf.h"
#include "sandgate/http.h"
#include "sandgate/tls.h"

struct json_t;
typedef struct sg_http_server sg_http_server_t;
typedef struct sg_http_req sg_http_req_t;

/* A timeout, max_body_bytes or max_connections of 0 disables that bound; zero header / URL /
 * high-water sizes take the default. */
typedef struct sg_http_limits {
    size_t max_header_bytes;    /* request line + header names/values, default 16 KiB -> 431 */
    size_t max_header_count;    /* default 100 -> 431 */
    size_t max_url_bytes;       /* default 8 KiB -> 414 */
    uint64_t max_body_bytes;    /* default 1 GiB -> 413 (0 = unlimited) */
    uint64_t header_timeout_ms; /* default 10 s -> 408 */
    uint64_t body_timeout_ms;   /* body inactivity, default 30 s -> 408 */
    uint64_t idle_timeout_ms;   /* keep-alive idle, default 60 s -> silent close */
    uint64_t send_timeout_ms;   /* a write making no progress, default 60 s -> close */
    size_t max_connections;     /* default 10000 -> 503 + close */
    size_t write_high_water;    /* pending output per connection, default 256 KiB */
} sg_http_limits_t;

/* One finished request, for the access log. Strings valid during the call only. */
typedef struct sg_http_access {
    const char *request_id;
    const char *method; /* "" when the request was rejected before its method was known */
    const char *path;   /* without the query string; "" when unknown */
    const char *peer;   /* "1.2.3.4:5678", "[::1]:80", "unix" */
    int status;         /* 0 when no response head was sent */
    int aborted;        /* connection lost before the response completed */
    uint64_t bytes_in;  /* request head + body bytes read for this request */
    uint64_t bytes_out; /* response bytes queued (head + body + framing) */
    uint64_t duration_us; /* first byte of the request (or dispatch) to response done */
} sg_http_access_t;

typedef void (*sg_http_handler_cb)(sg_http_req_t *req, void *data);
typedef void (*sg_http_access_cb)(const sg_http_access_t *entry, void *data);
typedef void (*sg_http_server_cb)(sg_http_server_t *srv, void *data);
typedef void (*sg_http_req_cb)(sg_http_req_t *req);
typedef void (*sg_http_body_cb)(sg_http_req_t *req, const char *data, size_t len, void *ud);
/* err: 0 -> body[0..len) is the whole body (valid during the call); SG_ETOOBIG -> the server has
 * already answered 413 and the request is finished (do not respond); SG_ECLOSED -> aborted
 * (the handler still finishes: sg_http_req_release). */
typedef void (*sg_http_body_all_cb)(sg_http_req_t *req, int err, const char *body, size_t len,
                                    void *ud);

typedef struct sg_http_server_config {
    sg_http_limits_t limits;
    sg_tls_ctx_t *tls;          /* NULL = plaintext; passed to sg_sock_accept() */
    sg_http_handler_cb handler; /* required */
    sg_http_access_cb access_log; /* optional */
    void *data;                 /* for handler, access_log and server callbacks */
    int sndbuf;                 /* SO_SNDBUF for accepted TCP sockets, 0 = kernel default */
} sg_http_server_config_t;

void sg_http_server_config_init(sg_http_server_config_t *cfg);

int sg_http_server_new(uv_loop_t *loop, const sg_http_server_config_t *cfg,
                       sg_http_server_t **out);
/* addr: "host:port" (IPv4 literal, "[v6]:port", "localhost", "*:port"), or "unix:/path" (an
 * existing socket file at path is replaced). Port 0 picks a free port (sg_http_server_port).
 * May be called several times. err gets a human message on failure. */
int sg_http_server_listen(sg_http_server_t *srv, const char *addr, char *err, size_t errlen);
/* Port of the first TCP listener, or 0. */
int sg_http_server_port(const sg_http_server_t *srv);
size_t sg_http_server_connections(const sg_http_server_t *srv);

/* Graceful: stop accepting, close idle keep-alive connections, let requests in flight finish
 * (their responses carry `Connection: close`) for up to grace_ms, then cut the rest (abort
 * callbacks run). cb runs once no connection is left (from a fresh loop callback). */
void sg_http_server_shutdown(sg_http_server_t *srv, uint64_t grace_ms, sg_http_server_cb cb);
/* Immediate: closes listeners and every connection, then every handle the server owns; srv is
 * freed and cb runs after the last close callback. Requests still referenced by handlers stay
 * valid (every call on them returns SG_ECLOSED) until released. */
void sg_http_server_close(sg_http_server_t *srv, sg_http_server_cb cb);

/* --- request */
const char *sg_http_req_method(const sg_http_req_t *req);
const char *sg_http_req_url(const sg_http_req_t *req);   /* raw request target */
const char *sg_http_req_path(const sg_http_req_t *req);  /* target up to '?' */
const char *sg_http_req_query(const sg_http_req_t *req); /* after '?', "" if none */
/* Copies the (undecoded) value of query parameter name into buf; returns its length, or -1
 * when absent or too long. */
int sg_http_req_query_param(const sg_http_req_t *req, const char *name, char *buf, size_t len);
const sg_hdrs_t *sg_http_req_headers(const sg_http_req_t *req);
const char *sg_http_req_header(const sg_http_req_t *req, const char *name);
const char *sg_http_req_id(const sg_http_req_t *req);
const char *sg_http_req_peer(const sg_http_req_t *req);
/* Declared Content-Length, or -1 (chunked, or no body framing). */
int64_t sg_http_req_content_length(const sg_http_req_t *req);
int sg_http_req_has_body(const sg_http_req_t *req);
sg_http_server_t *sg_http_req_server(const sg_http_req_t *req);
void sg_http_req_set_data(sg_http_req_t *req, void *data);
void *sg_http_req_data(const sg_http_req_t *req);
void sg_http_req_on_abort(sg_http_req_t *req, sg_http_req_cb cb);
void sg_http_req_on_drain(sg_http_req_t *req, sg_http_req_cb cb);
/* Nonzero once req is no longer on a connection (aborted, or finished and detached). */
int sg_http_req_aborted(const sg_http_req_t *req);
sg_http_req_t *sg_http_req_ref(sg_http_req_t *req);
void sg_http_req_unref(sg_http_req_t *req);
/* Finishes the handler's ownership without (further) response: if no response was started
 * the server answers 500; a started stream is cut (connection closed). */
void sg_http_req_release(sg_http_req_t *req);

/* --- request body (at most one of read_body / read_all per request) */
int sg_http_req_read_body(sg_http_req_t *req, sg_http_body_cb cb, void *ud);
int sg_http_req_read_all(sg_http_req_t *req, size_t max_bytes, sg_http_body_all_cb cb, void *ud);
void sg_http_req_pause_body(sg_http_req_t *req);
void sg_http_req_resume_body(sg_http_req_t *req);

/* --- responses (hdrs may be NULL). Transfer-Encoding in hdrs is ignored (the server frames the
 * body); Connection in hdrs is ignored except that "keep-alive" is echoed when the connection
 * does stay open (execd's SSE head carries it, as Go's does). */
int sg_http_respond(sg_http_req_t *req, int status, const sg_hdrs_t *hdrs, const void *body,
                    size_t len);
int sg_http_respond_buf(sg_http_req_t *req, int status, const sg_hdrs_t *hdrs, sg_buf_t *b,
                        size_t off, size_t len);
/* Serialises json (compact) with Content-Type: application/json. */
int sg_http_respond_json(sg_http_req_t *req, int status, const struct json_t *json);
/* {"code": code, "message": message} */
int sg_http_respond_error(sg_http_req_t *req, int status, const char *code, const char *message);

/* Streaming: a Content-Length in hdrs makes the body fixed-length (writing more is SG_EINVAL,
 * ending short closes the connection); otherwise chunked. */
int sg_http_resp_start(sg_http_req_t *req, int status, const sg_hdrs_t *hdrs);
int sg_http_resp_write(sg_http_req_t *req, sg_buf_t *b, size_t off, size_t len); /* by ref */
int sg_http_resp_write_copy(sg_http_req_t *req, const void *p, size_t len);
/* Several slices as one piece of body: one chunk when chunked. Slices of up to 256 bytes are
 * copied (they merge into one iovec), longer ones are queued by reference. */
int sg_http_resp_writev(sg_http_req_t *req, const sg_slice_t *v, size_t n);
int sg_http_resp_end(sg_http_req_t *req);
/* For a response that stays open long (a stream): frees the request's header table (every
 * sg_http_req_header() then answers NULL) and the connection's parse scratch, so an idle
 * stream holds only what it needs. */
void sg_http_req_trim(sg_http_req_t *req);
/* SO_SNDBUF of the request's connection (TCP only; others: 0): long-lived streams bound the
 * kernel memory a stalled reader can pin (it only ever shrinks when set below the default). */
int sg_http_req_set_sndbuf(sg_http_req_t *req, int bytes);
/* Bytes queued on the connection and not yet written. */
size_t sg_http_resp_pending(const sg_http_req_t *req);

#endif
