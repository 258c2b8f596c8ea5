/* http_server_resp.c: the request object as the handler sees it: accessors, body delivery,
 * response serialisation (simple and streamed), server-generated error answers, access log.
 *
 * Map
 *   accessors / refcount                 sg_http_req_*
 *   body pipeline                        sg_http_req_read_body / read_all, sg__http_req_body_*
 *   response head                        resp_head (framing, Date, X-Request-ID, Connection)
 *   writes                               sg_http_resp_write* -> conn->out (sg_bufq_t) -> flush
 *   finishing                            handler_finish: decides discard vs close for an unread
 *                                        body and drops the handler's reference
 *   server errors                        sg__http_conn_error (400/408/413/414/431/503 JSON) */
#include "http_server_int.h"
#include "sandgate/json.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ refcount, accessors */

void sg__http_req_set_id(sg_http_req_t *req, const char *rid)
{
    if (req->id && req->id != req->idbuf) free(req->id);
    req->id = req->idbuf;
    if (!rid) {
        snprintf(req->idbuf, sizeof(req->idbuf), "%016llx%016llx",
                 (unsigned long long)req->srv->id_salt, (unsigned long long)req->srv->req_seq);
    } else if (strlen(rid) < sizeof(req->idbuf)) {
        snprintf(req->idbuf, sizeof(req->idbuf), "%s", rid);
    } else {
        req->id = sg_xstrdup(rid);
    }
}

void sg__http_req_free(sg_http_req_t *req)
{
    if (req->id != req->idbuf) free(req->id);
    free(req->url);
    free(req->path);
    sg_hdrs_free(&req->hdrs);
    sg__http_str_free(&req->all);
    free(req);
}

sg_http_req_t *sg_http_req_ref(sg_http_req_t *req)
{
    req->refs++;
    return req;
}

void sg_http_req_unref(sg_http_req_t *req)
{
    if (--req->refs == 0) sg__http_req_free(req);
}

const char *sg_http_req_method(const sg_http_req_t *req) { return req->method; }
const char *sg_http_req_url(const sg_http_req_t *req) { return req->url; }
const char *sg_http_req_path(const sg_http_req_t *req) { return req->path; }
const char *sg_http_req_query(const sg_http_req_t *req) { return req->query; }
const sg_hdrs_t *sg_http_req_headers(const sg_http_req_t *req) { return &req->hdrs; }
const char *sg_http_req_id(const sg_http_req_t *req) { return req->id; }
const char *sg_http_req_peer(const sg_http_req_t *req) { return req->peer; }
int64_t sg_http_req_content_length(const sg_http_req_t *req) { return req->content_length; }
int sg_http_req_has_body(const sg_http_req_t *req) { return req->has_body; }
sg_http_server_t *sg_http_req_server(const sg_http_req_t *req) { return req->srv; }
void sg_http_req_set_data(sg_http_req_t *req, void *data) { req->data = data; }
void *sg_http_req_data(const sg_http_req_t *req) { return req->data; }
void sg_http_req_on_abort(sg_http_req_t *req, sg_http_req_cb cb) { req->abort_cb = cb; }
void sg_http_req_on_drain(sg_http_req_t *req, sg_http_req_cb cb) { req->drain_cb = cb; }
int sg_http_req_aborted(const sg_http_req_t *req) { return req->aborted || !req->conn; }

const char *sg_http_req_header(const sg_http_req_t *req, const char *name)
{
    return sg_hdrs_get(&req->hdrs, name);
}

int sg_http_req_query_param(const sg_http_req_t *req, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    const char *p = req->query;
    while (*p) {
        const char *end = strchr(p, '&');
        if (!end) end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : end;
            size_t vl = (size_t)(end - v);
            if (vl + 1 > len) return -1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return (int)vl;
        }
        p = *end ? end + 1 : end;
    }
    return -1;
}

size_t sg_http_resp_pending(const sg_http_req_t *req)
{
    return req->conn ? req->conn->out.bytes : 0;
}

void sg_http_req_trim(sg_http_req_t *req)
{
    sg_hdrs_free(&req->hdrs);
    sg_hdrs_init(&req->hdrs);
    sg__http_conn_t *c = req->conn;
    if (!c) return;
    sg__http_str_free(&c->url);
    sg__http_str_free(&c->field);
    sg__http_str_free(&c->value);
}

int sg_http_req_set_sndbuf(sg_http_req_t *req, int bytes)
{
    if (!req->conn || req->aborted) return SG_ECLOSED;
    return sg_sock_set_sndbuf(&req->conn->sock, bytes);
}

/* Usable for I/O by the handler? */
static sg__http_conn_t *live_conn(const sg_http_req_t *req)
{
    sg__http_conn_t *c = req->conn;
    if (!c || c->closing || req->aborted) return NULL;
    return c;
}

/* ------------------------------------------------------------------ finishing */

static void handler_finish(sg_http_req_t *req)
{
    if (req->handler_done || !req->dispatched) return;
    req->handler_done = 1;
    sg__http_conn_t *c = req->conn;
    if (c && !c->closing && !req->msg_complete) {
        /* Body not fully read: discard a small known remainder, else close (see header). */
        uint64_t left = req->chunked || req->content_length < 0
                            ? UINT64_MAX
                            : (uint64_t)req->content_length - req->body_read;
        int no_continue = req->expect_continue && !req->continue_sent;
        if (req->resp_close || no_continue || left > SG__HTTP_DISCARD_MAX) {
            c->close_after = 1;
            req->msg_complete = 1; /* stop parsing this connection */
        }
        req->body_mode = SG__BODY_DISCARD;
        req->body_paused = 0;
    }
    if (c) sg__http_conn_kick(c);
    sg_http_req_unref(req);
}

void sg_http_req_release(sg_http_req_t *req)
{
    if (req->handler_done) return;
    sg__http_conn_t *c = live_conn(req);
    if (c && req->resp_state == SG__RESP_NONE) {
        sg_http_respond_error(req, 500, "INTERNAL_ERROR", "handler finished without a response");
        return;
    }
    if (c && req->resp_state == SG__RESP_STARTED) sg__http_conn_close(c);
    handler_finish(req);
}

/* ------------------------------------------------------------------ request body */

static void send_continue(sg_http_req_t *req, sg__http_conn_t *c)
{
    if (req->expect_continue && !req->continue_sent && req->resp_state == SG__RESP_NONE &&
        !req->msg_complete) {
        static const char k[] = "HTTP/1.1 100 Continue\r\n\r\n";
        sg_bufq_push_copy(&c->out, k, sizeof(k) - 1);
        req->continue_sent = 1;
        sg__http_conn_flush(c);
    }
}

int sg_http_req_read_body(sg_http_req_t *req, sg_http_body_cb cb, void *ud)
{
    sg__http_conn_t *c = live_conn(req);
    if (!c) return SG_ECLOSED;
    if (req->body_mode != SG__BODY_NONE || !cb) return SG_EINVAL;
    req->body_mode = SG__BODY_STREAM;
    req->body_cb = cb;
    req->body_ud = ud;
    send_continue(req, c);
    sg__http_conn_kick(c);
    return 0;
}

int sg_http_req_read_all(sg_http_req_t *req, size_t max_bytes, sg_http_body_all_cb cb, void *ud)
{
    sg__http_conn_t *c = live_conn(req);
    if (!c) return SG_ECLOSED;
    if (req->body_mode != SG__BODY_NONE || !cb) return SG_EINVAL;
    req->body_mode = SG__BODY_ALL;
    req->all_cb = cb;
    req->body_ud = ud;
    req->all_max = max_bytes;
    if (req->content_length > 0 && (uint64_t)req->content_length > max_bytes) {
        /* Known too big: answer now, never read it. */
        req->all_overflow = 1;
        req->body_end_sent = 1;
        sg_http_respond_error(req, 413, "BODY_TOO_LARGE", "request body too large");
        cb(req, SG_ETOOBIG, NULL, 0, ud);
        return 0;
    }
    send_continue(req, c);
    sg__http_conn_kick(c);
    return 0;
}

void sg_http_req_pause_body(sg_http_req_t *req)
{
    req->body_paused = 1;
    if (req->conn) sg__http_conn_kick(req->conn);
}

void sg_http_req_resume_body(sg_http_req_t *req)
{
    if (!req->body_paused) return;
    req->body_paused = 0;
    if (req->conn) sg__http_conn_kick(req->conn);
}

int sg__http_req_body_data(sg_http_req_t *req, const char *p, size_t n)
{
    switch (req->body_mode) {
    case SG__BODY_STREAM:
        if (req->handler_done || req->aborted) return 0;
        req->body_cb(req, p, n, req->body_ud);
        return req->body_paused && req->body_mode == SG__BODY_STREAM;
    case SG__BODY_ALL:
        if (req->all_overflow) return 0;
        if (req->all.len + n > req->all_max) {
            req->all_overflow = 1;
            req->body_end_sent = 1;
            sg__http_str_free(&req->all);
            sg_http_respond_error(req, 413, "BODY_TOO_LARGE", "request body too large");
            req->all_cb(req, SG_ETOOBIG, NULL, 0, req->body_ud);
            return 1; /* handler_finish stopped this connection's parsing */
        }
        sg__http_str_append(&req->all, p, n);
        return 0;
    default: return 0;
    }
}

void sg__http_req_body_end(sg_http_req_t *req)
{
    if (req->body_end_sent) return;
    req->body_end_sent = 1;
    if (req->handler_done) return;
    if (req->body_mode == SG__BODY_STREAM) {
        req->body_cb(req, NULL, 0, req->body_ud);
    } else if (req->body_mode == SG__BODY_ALL) {
        req->all_cb(req, 0, req->all.p ? req->all.p : "", req->all.len, req->body_ud);
        sg__http_str_free(&req->all);
    }
}

/* ------------------------------------------------------------------ response head */

static int bad_field(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n') return 1;
    return 0;
}

static int skip_user_header(const char *name)
{
    return strcasecmp(name, "Connection") == 0 || strcasecmp(name, "Transfer-Encoding") == 0 ||
           strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Keep-Alive") == 0;
}

static void push_str(sg__http_conn_t *c, sg_http_req_t *req, const char *s, size_t n)
{
    sg_bufq_push_copy(&c->out, s, n);
    req->bytes_out += n;
}

static void push_z(sg__http_conn_t *c, sg_http_req_t *req, const char *s)
{
    push_str(c, req, s, strlen(s));
}

/* body_len >= 0: fixed length known by the server (simple responses); -1: streamed, framed by
 * the handler's Content-Length if any, else chunked. final: the handler finishes with this
 * response (simple responses), so an unread body is known to stay unread and the head can
 * announce the close; a streaming handler may still read it (echo), so then the decision
 * waits for handler_finish and the close goes unannounced. */
static int resp_head(sg_http_req_t *req, sg__http_conn_t *c, int status, const sg_hdrs_t *hdrs,
                     int64_t body_len, int final)
{
    if (req->resp_state != SG__RESP_NONE) return SG_EINVAL;
    if (status < 200 || status > 999) return SG_EINVAL;
    int64_t cl = body_len;
    if (hdrs) {
        for (size_t i = 0; i < hdrs->n; i++)
            if (bad_field(hdrs->v[i].name) || bad_field(hdrs->v[i].value)) return SG_EINVAL;
        const char *v = sg_hdrs_get(hdrs, "Content-Length");
        if (v && cl < 0) {
            char *end;
            unsigned long long n = strtoull(v, &end, 10);
            if (*v < '0' || *v > '9' || *end) return SG_EINVAL;
            cl = (int64_t)n;
        }
    }
    sg_http_server_t *srv = c->srv;
    int no_body_status = status == 204 || status == 304;
    req->resp_no_body = no_body_status || req->head;
    int close = c->close_after || !req->keep_alive || srv->shutting_down;
    if (final && !req->msg_complete && req->body_mode != SG__BODY_DISCARD) {
        uint64_t left = req->chunked || req->content_length < 0
                            ? UINT64_MAX
                            : (uint64_t)req->content_length - req->body_read;
        if (left > SG__HTTP_DISCARD_MAX || (req->expect_continue && !req->continue_sent)) close = 1;
    }
    req->resp_fixed = cl >= 0;
    req->resp_remaining = cl >= 0 ? (uint64_t)cl : 0;
    req->resp_chunked = 0;
    if (!no_body_status && cl < 0) {
        if (req->http_minor == 0) close = 1; /* HTTP/1.0: the close delimits the body */
        else req->resp_chunked = 1;
    }
    if (no_body_status) req->resp_fixed = 0;

    char line[256];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                     sg_http_status_text(status), sg__http_date(srv));
    push_str(c, req, line, (size_t)n);
    int have_rid = 0;
    if (hdrs) {
        for (size_t i = 0; i < hdrs->n; i++) {
            const sg_hdr_t *h = &hdrs->v[i];
            if (skip_user_header(h->name) || strcasecmp(h->name, "Date") == 0) continue;
            if (strcasecmp(h->name, "X-Request-ID") == 0) have_rid = 1;
            push_z(c, req, h->name);
            push_str(c, req, ": ", 2);
            push_z(c, req, h->value);
            push_str(c, req, "\r\n", 2);
        }
    }
    if (!have_rid) {
        push_str(c, req, "X-Request-ID: ", 14);
        push_z(c, req, req->id);
        push_str(c, req, "\r\n", 2);
    }
    if (!no_body_status) {
        if (cl >= 0) {
            n = snprintf(line, sizeof(line), "Content-Length: %lld\r\n", (long long)cl);
            push_str(c, req, line, (size_t)n);
        } else if (req->resp_chunked && !req->head) {
            push_z(c, req, "Transfer-Encoding: chunked\r\n");
        }
    }
    if (close) push_z(c, req, "Connection: close\r\n");
    else if (req->http_minor == 0 || (hdrs && sg_hdrs_has_token(hdrs, "Connection", "keep-alive")))
        push_z(c, req, "Connection: keep-alive\r\n"); /* explicit: execd's SSE head (Go's) */
    push_str(c, req, "\r\n", 2);
    if (req->head && req->resp_chunked) req->resp_chunked = 0;
    req->status = status;
    req->resp_close = close;
    if (close) c->close_after = 1;
    req->resp_state = SG__RESP_STARTED;
    return 0;
}

static int resp_write(sg_http_req_t *req, sg__http_conn_t *c, sg_buf_t *b, size_t off,
                      const void *p, size_t len)
{
    if (req->resp_state != SG__RESP_STARTED) return SG_EINVAL;
    if (len == 0 || req->resp_no_body) return c->out.bytes > c->srv->cfg.limits.write_high_water;
    if (req->resp_fixed) {
        if (len > req->resp_remaining) return SG_EINVAL;
        req->resp_remaining -= len;
    }
    if (req->resp_chunked) {
        char hex[24];
        size_t n = sg_u64_hex(hex, len);
        hex[n++] = '\r';
        hex[n++] = '\n';
        push_str(c, req, hex, n);
    }
    if (b) sg_bufq_push(&c->out, b, off, len);
    else sg_bufq_push_copy(&c->out, p, len);
    req->bytes_out += len;
    if (req->resp_chunked) push_str(c, req, "\r\n", 2);
    /* No write here: a producer emitting many small pieces in one loop turn (a command's
     * output lines) gets them gathered into one write by the deferred pass (Redis writes in
     * beforeSleep for the same reason). */
    sg__http_conn_kick(c);
    if (c->out.bytes > c->srv->cfg.limits.write_high_water) {
        req->want_drain = 1;
        return 1;
    }
    return 0;
}

static int resp_end(sg_http_req_t *req, sg__http_conn_t *c)
{
    if (req->resp_state != SG__RESP_STARTED) return SG_EINVAL;
    if (req->resp_chunked) push_str(c, req, "0\r\n\r\n", 5);
    if (req->resp_fixed && req->resp_remaining && !req->resp_no_body)
        c->close_after = 1; /* short body: only a close tells the client */
    req->resp_state = SG__RESP_ENDED;
    sg__http_conn_kick(c);
    return 0;
}

/* ------------------------------------------------------------------ public responses */

int sg_http_resp_start(sg_http_req_t *req, int status, const sg_hdrs_t *hdrs)
{
    sg__http_conn_t *c = live_conn(req);
    if (!c) return SG_ECLOSED;
    int r = resp_head(req, c, status, hdrs, -1, 0);
    if (r == 0) sg__http_conn_kick(c); /* the head goes out with the first chunk or alone */
    return r;
}

int sg_http_resp_write(sg_http_req_t *req, sg_buf_t *b, size_t off, size_t len)
{
    sg__http_conn_t *c = live_conn(req);
    if (!c) return SG_ECLOSED;
    return resp_write(req, c, b, off, NULL, len);
}

#define SMALL_SLICE 256

int sg_http_resp_writev(sg_http_req_t *req, const sg_slice_t *v, size_t n)
{
    sg__http_conn_t *c = live_conn(req);
    if (!c) return SG_ECLOSED;
    if (req->resp_state != SG__RESP_STARTED) return SG_EINVAL;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += v[i].len;
    if (len == 0 || req->resp_no_body) return c->out.bytes > c->srv->cfg.limits.write_high_water;
    if (req->resp_fixed) {
        if (len > req->resp_remaining) return SG_EINVAL;
        req->resp_remaining -= len;
    }
    if (req->resp_chunked) { /* one chunk for the whole run */
        char hex[24];
        size_t k = sg_u64_hex(hex, len);
        hex[k++] = '\r';
        hex[k++] = '\n';
        push_str(c, req, hex, k);
    }
    /* Small slices are copied into the queue's scratch chunk, where they merge: an iovec
     * costs the kernel more than copying a short event does. */
    for (size_t i = 0; i < n; i++) {
        if (v[i].len <= SMALL_SLICE)
            sg_bufq_push_copy(&c->out, v[i].buf->data + v[i].off, v[i].len);
        else
            sg_bufq_push(&c->out, v[i].buf, v[i].off, v[i].len);
    }
    req->bytes_out += len;
    if (req->resp_chunked) push_str(c, req, "\r\n", 2);
    sg__http_conn_kick(c);
    if (c->out.bytes > c->srv->cfg.limits.write_high_water) {
        req->want_drain = 1;
        return 1;
    }
    return 0;
}

int sg_http_resp_write_copy(sg_http_req_t *req, const void *p, size_t len)
{
    sg__http_conn_t *c = live_conn(req);
    if (!c) return SG_ECLOSED;
    return resp_write(req, c, NULL, 0, p, len);
}

int sg_http_resp_end(sg_http_req_t *req)
{
    if (req->handler_done) return SG_EINVAL;
    sg__http_conn_t *c = live_conn(req);
    int r;
    if (!c) {
        r = SG_ECLOSED;
    } else if (req->resp_state == SG__RESP_NONE) {
        sg_http_req_release(req); /* ending nothing: the server answers 500 */
        return SG_EINVAL;
    } else {
        r = resp_end(req, c);
    }
    handler_finish(req);
    return r;
}

static int respond(sg_http_req_t *req, int status, const sg_hdrs_t *hdrs, sg_buf_t *b,
                   size_t off, const void *p, size_t len)
{
    if (req->handler_done) return SG_EINVAL;
    sg__http_conn_t *c = live_conn(req);
    if (!c) {
        handler_finish(req);
        return SG_ECLOSED;
    }
    int r = resp_head(req, c, status, hdrs, (int64_t)len, 1);
    if (r < 0) {
        if (req->resp_state == SG__RESP_NONE) {
            /* Bad headers from the handler: still answer, so the client is not left hanging. */
            sg_http_respond_error(req, 500, "INTERNAL_ERROR", "handler produced an invalid response");
        }
        return r;
    }
    if (len) resp_write(req, c, b, off, p, len);
    resp_end(req, c);
    handler_finish(req);
    return 0;
}

int sg_http_respond(sg_http_req_t *req, int status, const sg_hdrs_t *hdrs, const void *body,
                    size_t len)
{
    return respond(req, status, hdrs, NULL, 0, body, len);
}

int sg_http_respond_buf(sg_http_req_t *req, int status, const sg_hdrs_t *hdrs, sg_buf_t *b,
                        size_t off, size_t len)
{
    return respond(req, status, hdrs, b, off, NULL, len);
}

/* Takes ownership of s (a malloc'd JSON text). */
static int respond_json_text(sg_http_req_t *req, int status, char *s)
{
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/json");
    int r = sg_http_respond(req, status, &h, s, strlen(s));
    sg_hdrs_free(&h);
    free(s);
    return r;
}

int sg_http_respond_json(sg_http_req_t *req, int status, const struct json_t *json)
{
    char *s = sg_json_dumps((const json_t *)json, NULL);
    if (!s) return SG_EINVAL;
    return respond_json_text(req, status, s);
}

int sg_http_respond_error(sg_http_req_t *req, int status, const char *code, const char *message)
{
    return respond_json_text(req, status, sg_json_error_body(code, message));
}

/* Tells the handler its request is gone: read_all's callback gets SG_ECLOSED (so read_all
 * users need no abort callback), then the abort callback runs. Once per request. */
void sg__http_req_notify_abort(sg_http_req_t *req)
{
    if (req->abort_notified || !req->dispatched || req->handler_done) return;
    req->abort_notified = 1;
    if (req->body_mode == SG__BODY_ALL && !req->body_end_sent) {
        req->body_end_sent = 1;
        sg__http_str_free(&req->all);
        req->all_cb(req, SG_ECLOSED, NULL, 0, req->body_ud);
    }
    if (!req->handler_done && req->abort_cb) req->abort_cb(req);
}

/* ------------------------------------------------------------------ server-side errors */

void sg__http_conn_error(sg__http_conn_t *c, int status, const char *code, const char *msg)
{
    if (c->closing) return;
    sg_http_req_t *req = c->req;
    if (req && req->resp_state != SG__RESP_NONE) {
        /* A response is already on the wire: nothing sane can follow it. */
        sg__http_conn_close(c);
        return;
    }
    if (!req) {
        req = sg_xcalloc(1, sizeof(*req));
        req->refs = 1;
        req->conn = c;
        req->srv = c->srv;
        req->content_length = -1;
        req->start_ns = c->req_start_ns ? c->req_start_ns : sg_now_ns();
        req->bytes_in = c->pending_in;
        c->pending_in = 0;
        req->http_minor = 1;
        req->url = sg_xstrndup(c->url.p ? c->url.p : "", c->url.len);
        const char *q = strchr(req->url, '?');
        req->path = sg_xstrndup(req->url, q ? (size_t)(q - req->url) : strlen(req->url));
        req->query = q ? q + 1 : req->url + strlen(req->url);
        sg_hdrs_init(&req->hdrs);
        c->srv->req_seq++;
        sg__http_req_set_id(req, NULL);
        snprintf(req->peer, sizeof(req->peer), "%s", c->peer);
        c->req = req;
    }
    if (!req->dispatched) req->server_answered = 1;
    else if (!req->handler_done) req->aborted = 1; /* the handler's calls now fail */
    c->close_after = 1;
    req->keep_alive = 0;
    char *body = sg_json_error_body(code, msg);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/json");
    size_t len = strlen(body);
    if (resp_head(req, c, status, &h, (int64_t)len, 1) == 0) {
        resp_write(req, c, NULL, 0, body, len);
        resp_end(req, c);
    }
    sg_hdrs_free(&h);
    free(body);
    req->msg_complete = 1;
    c->got_bytes = 0;
    sg__http_conn_kick(c);
}

/* ------------------------------------------------------------------ access log */

void sg__http_req_log(sg_http_req_t *req)
{
    if (req->logged) return;
    req->logged = 1;
    sg_http_server_t *srv = req->srv;
    if (!srv->cfg.access_log) return;
    sg_http_access_t e;
    e.request_id = req->id;
    e.method = req->method;
    e.path = req->path ? req->path : "";
    e.peer = req->peer;
    e.status = req->status;
    e.aborted = req->aborted || req->resp_state != SG__RESP_ENDED;
    e.bytes_in = req->bytes_in;
    e.bytes_out = req->bytes_out;
    e.duration_us = (sg_now_ns() - req->start_ns) / 1000;
    srv->cfg.access_log(&e, srv->cfg.data);
}
