/* http_server.c: server lifecycle, listeners, connections and request parsing.
 *
 * Map
 *   config / new / listen / shutdown / close          server lifecycle (bottom of file)
 *   on_connection -> conn_new                         accept (503 over the cap)
 *   on_read -> conn_feed -> conn_exec (llhttp)        parsing; callbacks p_* fill the head
 *   conn_process -> conn_step                         the state machine, run outside llhttp:
 *                                                     dispatch, body flow, detach, next request
 *   sg__http_conn_flush / on_write                    one uv_write of everything queued
 *   on_rtimer / on_wtimer                             idle / header / body / send deadlines
 *   conn_close -> on_sock_closed -> conn_free         teardown (abort callbacks run here)
 *   conn_linger                                       lingering close (see below)
 *
 * Why the parser is always paused at message boundaries: llhttp callbacks run inside
 * llhttp_execute(); nothing that may free or re-enter the connection (the handler, detaching a
 * request, starting the next one) happens there. on_headers_complete (requests with a body) and
 * on_message_complete return HPE_PAUSED, and conn_step acts once execute has returned. Bytes
 * after the pause point are kept in c->in and reading stops until the parser may go on, so a
 * connection buffers at most about one read (64 KiB) of input.
 *
 * Lingering close: closing a socket whose receive queue still holds unread request bytes makes
 * the kernel send RST, which can destroy the response (a 413/408/400 answer) before the client
 * reads it. So when the server closes after a response and the client has not closed its side,
 * it shuts down its write side and reads and drops input until EOF or SG__HTTP_LINGER_MS
 * (nginx's lingering_close). Plaintext only: with TLS the socket layer owns the shutdown. */
#include "http_server_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SG__HTTP_IN_KEEP (64 * 1024) /* read ahead while a response is in progress */

static const llhttp_settings_t *parser_settings(void);
static void conn_process(sg__http_conn_t *c);
static void conn_close(sg__http_conn_t *c);
static void srv_maybe_finish(sg_http_server_t *srv);
static void srv_idle_start(sg_http_server_t *srv);

/* ------------------------------------------------------------------ small helpers */

void sg__http_str_append(sg__http_str_t *s, const char *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t nc = s->cap ? s->cap : 64;
        while (nc < s->len + n + 1) nc *= 2;
        s->p = sg_xrealloc(s->p, nc);
        s->cap = nc;
    }
    memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
}

void sg__http_str_free(sg__http_str_t *s)
{
    free(s->p);
    s->p = NULL;
    s->len = s->cap = 0;
}

const char *sg__http_date(sg_http_server_t *srv)
{
    time_t now = time(NULL);
    if (now != srv->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(srv->date, sizeof(srv->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        srv->date_sec = now;
    }
    return srv->date;
}

static size_t high_water(const sg_http_server_t *srv)
{
    return srv->cfg.limits.write_high_water ? srv->cfg.limits.write_high_water : 256 * 1024;
}

/* ------------------------------------------------------------------ deferred pass */

void sg__http_conn_kick(sg__http_conn_t *c)
{
    if (c->closing) return;
    if (c->in_process) {
        c->again = 1;
        return;
    }
    if (c->deferred) return;
    sg_http_server_t *srv = c->srv;
    c->deferred = 1;
    c->dnext = NULL;
    c->dprev = srv->dtail;
    if (srv->dtail) srv->dtail->dnext = c; else srv->dhead = c;
    srv->dtail = c;
    srv_idle_start(srv);
}

static void defer_unlink(sg__http_conn_t *c)
{
    sg_http_server_t *srv = c->srv;
    if (!c->deferred) return;
    if (c->dprev) c->dprev->dnext = c->dnext; else srv->dhead = c->dnext;
    if (c->dnext) c->dnext->dprev = c->dprev; else srv->dtail = c->dprev;
    c->dprev = c->dnext = NULL;
    c->deferred = 0;
}

static void on_idle(uv_idle_t *h)
{
    sg_http_server_t *srv = h->data;
    /* Take one conn at a time: processing may kick others (they are appended) or close. */
    size_t budget = srv->nconns + 1;
    while (srv->dhead && budget--) {
        sg__http_conn_t *c = srv->dhead;
        defer_unlink(c);
        conn_process(c);
    }
    if (srv->shutting_down && !srv->shutdown_notified && srv->nconns == 0) {
        srv->shutdown_notified = 1;
        if (srv->grace_armed) {
            uv_timer_stop(&srv->grace);
            srv->grace_armed = 0;
        }
        if (srv->shutdown_cb) srv->shutdown_cb(srv, srv->cfg.data);
        /* srv may be closing now (sg_http_server_close from the callback): its handles are
         * closing, its memory lives until their close callbacks. */
        if (srv->closing) return;
    }
    if (!srv->dhead && !srv->closing) uv_idle_stop(&srv->idle);
}

static void srv_idle_start(sg_http_server_t *srv)
{
    if (!srv->closing) uv_idle_start(&srv->idle, on_idle);
}

/* ------------------------------------------------------------------ timers */

static void set_phase(sg__http_conn_t *c, sg__rt_phase_t ph)
{
    if (c->rphase == ph) return;
    c->rphase = ph;
    sg_http_server_t *srv = c->srv;
    switch (ph) {
    case SG__RT_IDLE: sg_tentry_arm(&srv->t_idle, &c->rt); break;
    case SG__RT_HEADER: sg_tentry_arm(&srv->t_header, &c->rt); break;
    case SG__RT_BODY: sg_tentry_arm(&srv->t_body, &c->rt); break;
    case SG__RT_LINGER: sg_tentry_arm(&srv->t_linger, &c->rt); break;
    default: sg_tentry_disarm(&c->rt); break;
    }
}

static void on_rtimer(sg_tentry_t *e)
{
    sg__http_conn_t *c = SG_CONTAINER_OF(e, sg__http_conn_t, rt);
    sg__rt_phase_t ph = c->rphase;
    c->rphase = SG__RT_NONE;
    if (c->closing) return;
    switch (ph) {
    case SG__RT_HEADER:
        if (c->got_bytes) {
            sg__http_conn_error(c, 408, "HEADER_TIMEOUT", "request headers not received in time");
            conn_process(c);
        } else {
            conn_close(c);
        }
        break;
    case SG__RT_BODY:
        sg__http_conn_error(c, 408, "BODY_TIMEOUT", "request body stalled");
        conn_process(c);
        break;
    default: conn_close(c); break; /* idle, linger */
    }
}

static void on_wtimer(sg_tentry_t *e)
{
    sg__http_conn_t *c = SG_CONTAINER_OF(e, sg__http_conn_t, wt);
    conn_close(c); /* the peer stopped reading */
}

/* ------------------------------------------------------------------ writing */

static void on_write(sg_sock_t *s, int status);

void sg__http_conn_flush(sg__http_conn_t *c)
{
    if (c->closing || sg_sock_writing(&c->sock) || c->out.bytes == 0) return;
    size_t total = 0;
    unsigned n = sg_bufq_iov(&c->out, c->srv->iov, SG__HTTP_IOV, 4u << 20, &total);
    /* Write before polling: most responses fit the socket buffer and are done here, without a
     * write request (whose completion would make libuv re-arm epoll once per response). */
    int w = sg_sock_try_write(&c->sock, c->srv->iov, n);
    if (w > 0) {
        sg_bufq_consume(&c->out, (size_t)w);
        if (c->out.bytes == 0) {
            sg_tentry_disarm(&c->wt);
            if (c->req && c->req->want_drain) sg__http_conn_kick(c); /* maybe_drain, later */
            return;
        }
        n = sg_bufq_iov(&c->out, c->srv->iov, SG__HTTP_IOV, 4u << 20, &total);
    } else if (w < 0 && w != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    int r = sg_sock_write(&c->sock, c->srv->iov, n, on_write);
    if (r < 0) {
        conn_close(c);
        return;
    }
    c->inflight = total;
    sg_tentry_arm(&c->srv->t_send, &c->wt);
}

/* Tells a paused producer it may go on once output fell to half the high-water mark. Runs
 * from write completions and from conn_process, never from inside a producer's own call. */
static void maybe_drain(sg__http_conn_t *c)
{
    sg_http_req_t *req = c->req;
    if (!req || !req->want_drain || c->out.bytes > high_water(c->srv) / 2) return;
    req->want_drain = 0;
    if (req->drain_cb && !req->aborted && !req->handler_done) {
        sg_http_req_ref(req);
        req->drain_cb(req);
        sg_http_req_unref(req); /* conn still holds one: never the last */
    }
}

static void on_write(sg_sock_t *s, int status)
{
    sg__http_conn_t *c = s->data;
    sg_bufq_consume(&c->out, c->inflight);
    c->inflight = 0;
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->out.bytes) sg__http_conn_flush(c);
    else sg_tentry_disarm(&c->wt);
    if (c->closing) return;
    maybe_drain(c);
    conn_process(c);
}

/* ------------------------------------------------------------------ llhttp callbacks */

static int head_limit(sg__http_conn_t *c, size_t add)
{
    c->head_bytes += add;
    if (c->head_bytes > c->srv->cfg.limits.max_header_bytes) {
        c->err_status = 431;
        c->err_code = "HEADERS_TOO_LARGE";
        c->err_msg = "request header section too large";
        return -1;
    }
    return 0;
}

static int p_message_begin(llhttp_t *p)
{
    sg__http_conn_t *c = p->data;
    c->head_bytes = 0;
    c->url.len = 0;
    c->field.len = 0;
    c->value.len = 0;
    return 0;
}

static int p_url(llhttp_t *p, const char *at, size_t n)
{
    sg__http_conn_t *c = p->data;
    if (c->url.len + n > c->srv->cfg.limits.max_url_bytes) {
        c->err_status = 414;
        c->err_code = "URL_TOO_LONG";
        c->err_msg = "request target too long";
        return -1;
    }
    if (head_limit(c, n)) return -1;
    sg__http_str_append(&c->url, at, n);
    return 0;
}

static int p_header_field(llhttp_t *p, const char *at, size_t n)
{
    sg__http_conn_t *c = p->data;
    if (head_limit(c, n)) return -1;
    sg__http_str_append(&c->field, at, n);
    return 0;
}

static int p_header_value(llhttp_t *p, const char *at, size_t n)
{
    sg__http_conn_t *c = p->data;
    if (head_limit(c, n)) return -1;
    sg__http_str_append(&c->value, at, n);
    return 0;
}

static int p_header_value_complete(llhttp_t *p)
{
    sg__http_conn_t *c = p->data;
    sg_hdrs_t *h = &c->hdrs; /* the request takes it over at headers-complete */
    if (h->n + 1 > c->srv->cfg.limits.max_header_count) {
        c->err_status = 431;
        c->err_code = "TOO_MANY_HEADERS";
        c->err_msg = "too many request header fields";
        return -1;
    }
    sg_hdrs_add(h, c->field.p ? c->field.p : "", c->field.len, c->value.p ? c->value.p : "",
                c->value.len);
    c->field.len = 0;
    c->value.len = 0;
    return 0;
}

static int sane_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (n >= 128) return 0;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return 0;
    }
    return n > 0;
}

static sg_http_req_t *req_new(sg__http_conn_t *c)
{
    sg_http_server_t *srv = c->srv;
    sg_http_req_t *req = sg_xcalloc(1, sizeof(*req));
    req->refs = 1; /* the connection's */
    req->conn = c;
    req->srv = srv;
    req->content_length = -1;
    req->start_ns = c->req_start_ns ? c->req_start_ns : sg_now_ns();
    req->bytes_in = c->pending_in;
    c->pending_in = 0;
    req->keep_alive = 1;
    snprintf(req->peer, sizeof(req->peer), "%s", c->peer);
    req->url = sg_xstrdup("");
    req->path = sg_xstrdup("");
    req->query = req->url;
    sg_hdrs_init(&req->hdrs);
    srv->req_seq++;
    sg__http_req_set_id(req, NULL);
    return req;
}

static void req_set_url(sg_http_req_t *req, const char *url, size_t len)
{
    free(req->url);
    free(req->path);
    req->url = sg_xstrndup(url, len);
    const char *q = memchr(req->url, '?', len);
    req->path = sg_xstrndup(req->url, q ? (size_t)(q - req->url) : len);
    req->query = q ? q + 1 : req->url + len;
}

static int p_headers_complete(llhttp_t *p)
{
    sg__http_conn_t *c = p->data;
    sg_http_server_t *srv = c->srv;
    sg_http_req_t *req = req_new(c);
    c->req = req;
    req_set_url(req, c->url.p ? c->url.p : "", c->url.len);
    snprintf(req->method, sizeof(req->method), "%s", llhttp_method_name(llhttp_get_method(p)));
    req->hdrs = c->hdrs;
    sg_hdrs_init(&c->hdrs);
    req->http_minor = llhttp_get_http_minor(p);
    req->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    req->head = llhttp_get_method(p) == HTTP_HEAD;
    req->chunked = (p->flags & F_CHUNKED) ? 1 : 0;
    if (!req->chunked && (p->flags & F_CONTENT_LENGTH)) req->content_length = (int64_t)p->content_length;
    req->has_body = req->chunked || req->content_length > 0;
    const char *rid = sg_hdrs_get(&req->hdrs, "X-Request-ID");
    if (rid && sane_request_id(rid)) sg__http_req_set_id(req, rid);
    const char *exp = sg_hdrs_get(&req->hdrs, "Expect");
    if (exp && req->has_body && strcasecmp(exp, "100-continue") == 0) req->expect_continue = 1;
    if (llhttp_get_upgrade(p)) c->close_after = 1; /* no upgrades: never parse past it */
    uint64_t max = srv->cfg.limits.max_body_bytes;
    if (max && req->content_length > 0 && (uint64_t)req->content_length > max) {
        c->err_status = 413;
        c->err_code = "BODY_TOO_LARGE";
        c->err_msg = "request body too large";
        return -1;
    }
    /* Bodiless requests run on to on_message_complete, which pauses. */
    return req->has_body ? HPE_PAUSED : 0;
}

static int p_body(llhttp_t *p, const char *at, size_t n)
{
    sg__http_conn_t *c = p->data;
    sg_http_req_t *req = c->req;
    if (n == 0) return 0; /* llhttp flushes an open body span at the end of every execute */
    uint64_t max = c->srv->cfg.limits.max_body_bytes;
    req->body_read += n;
    if (max && req->body_read > max) {
        c->err_status = 413;
        c->err_code = "BODY_TOO_LARGE";
        c->err_msg = "request body too large";
        return -1;
    }
    if (c->rphase == SG__RT_BODY) sg_tentry_arm(&c->srv->t_body, &c->rt);
    if (sg__http_req_body_data(req, at, n)) {
        /* The handler paused on these bytes. If they were the last of a Content-Length body,
         * llhttp has not reached on_message_complete yet and no more input may ever come: the
         * parser must run again (with no bytes) after the resume. */
        c->exec_after_pause = 1;
        return HPE_PAUSED;
    }
    return 0;
}

static int p_message_complete(llhttp_t *p)
{
    sg__http_conn_t *c = p->data;
    sg_http_req_t *req = c->req;
    req->msg_complete = 1;
    c->got_bytes = 0;
    return HPE_PAUSED; /* conn_step delivers the end of the body, outside the parser */
}

static const llhttp_settings_t *parser_settings(void)
{
    static llhttp_settings_t s;
    static int init;
    if (!init) {
        llhttp_settings_init(&s);
        s.on_message_begin = p_message_begin;
        s.on_url = p_url;
        s.on_header_field = p_header_field;
        s.on_header_value = p_header_value;
        s.on_header_value_complete = p_header_value_complete;
        s.on_headers_complete = p_headers_complete;
        s.on_body = p_body;
        s.on_message_complete = p_message_complete;
        init = 1;
    }
    return &s;
}

/* ------------------------------------------------------------------ parsing driver */

/* May the parser consume more input right now? */
static int parse_allowed(const sg__http_conn_t *c)
{
    if (c->closing || c->err_status) return 0;
    const sg_http_req_t *req = c->req;
    if (!req) {
        if (c->got_bytes) return 1; /* finish the head in progress */
        if (c->close_after) return 0;
        return c->out.bytes <= high_water(c->srv);
    }
    if (!req->dispatched || req->msg_complete) return 0;
    switch (req->body_mode) {
    case SG__BODY_STREAM:
    case SG__BODY_ALL: return !req->body_paused;
    case SG__BODY_DISCARD: return 1;
    default: return 0;
    }
}

/* Runs llhttp over p[0..n); returns how many bytes it consumed. Errors answer and stop. */
static size_t conn_exec(sg__http_conn_t *c, const char *p, size_t n)
{
    c->exec_after_pause = 0;
    if (!c->req && !c->got_bytes && n) {
        c->got_bytes = 1;
        c->req_start_ns = sg_now_ns();
        set_phase(c, SG__RT_HEADER); /* from the first byte: dribbling does not extend it */
    }
    llhttp_errno_t err = llhttp_execute(&c->parser, p, n);
    size_t used = n;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        used = (size_t)(llhttp_get_error_pos(&c->parser) - p);
        if (err == HPE_PAUSED) llhttp_resume(&c->parser);
        else c->close_after = 1;
    } else if (err != HPE_OK) {
        if (!c->err_status) {
            c->err_status = 400;
            c->err_code = "BAD_REQUEST";
            c->err_msg = llhttp_get_error_reason(&c->parser);
            if (!c->err_msg) c->err_msg = "malformed request";
        }
    }
    if (c->req) c->req->bytes_in += used;
    else c->pending_in += used;
    if (c->err_status) {
        int st = c->err_status;
        c->err_status = 0; /* conn_error sets its own stop flag */
        sg__http_conn_error(c, st, c->err_code, c->err_msg);
        return n;
    }
    return used;
}

static void in_drop(sg__http_conn_t *c)
{
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_off = c->in_cap = 0;
}

static void in_append(sg__http_conn_t *c, const char *p, size_t n)
{
    if (c->in_off == c->in_len) c->in_off = c->in_len = 0;
    if (c->in_off && c->in_len + n > c->in_cap) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_len + n > c->in_cap) {
        size_t nc = c->in_cap ? c->in_cap : 4096;
        while (nc < c->in_len + n) nc *= 2;
        c->in = sg_xrealloc(c->in, nc);
        c->in_cap = nc;
    }
    memcpy(c->in + c->in_len, p, n);
    c->in_len += n;
}

static void update_reading(sg__http_conn_t *c)
{
    if (c->closing) return;
    size_t buffered = c->in_len - c->in_off;
    int want;
    if (c->peer_eof) want = 0;
    else if (buffered == 0 && parse_allowed(c)) want = 1;
    /* While a response is in progress keep reading a little so a client that goes away is
     * noticed (EOF/RST) and pipelined requests wait in c->in; beyond that, TCP pushes back. */
    else if (c->req && c->req->msg_complete && buffered < SG__HTTP_IN_KEEP) want = 1;
    else want = 0;
    if (want && !c->reading) {
        c->reading = 1;
        if (sg_sock_read_start(&c->sock, sg__http_on_read) < 0) {
            c->reading = 0;
            c->peer_eof = 1;
        }
    } else if (!want && c->reading) {
        c->reading = 0;
        sg_sock_read_stop(&c->sock);
    }
}

static void update_timers(sg__http_conn_t *c)
{
    if (c->closing) return;
    sg_http_req_t *req = c->req;
    if (!req) {
        if (c->got_bytes) set_phase(c, SG__RT_HEADER);
        else if (c->close_after || c->peer_eof) set_phase(c, SG__RT_NONE);
        else if (c->rphase != SG__RT_HEADER) set_phase(c, SG__RT_IDLE);
        return;
    }
    if (req->dispatched && !req->msg_complete && req->body_mode != SG__BODY_NONE &&
        !req->body_paused)
        set_phase(c, SG__RT_BODY);
    else set_phase(c, SG__RT_NONE);
}

/* The request is done on this connection (response queued, message parsed): log, let go. */
static void req_detach(sg__http_conn_t *c, int aborted)
{
    sg_http_req_t *req = c->req;
    c->req = NULL;
    c->exec_after_pause = 0; /* only meaningful for the request in progress */
    req->conn = NULL;
    if (aborted && req->resp_state != SG__RESP_ENDED) req->aborted = 1;
    if (req->aborted) sg__http_req_notify_abort(req);
    sg__http_req_log(req);
    sg_http_req_unref(req);
}

/* One step of the connection state machine; sets c->again when another step may do more. */
static void conn_step(sg__http_conn_t *c)
{
    sg_http_server_t *srv = c->srv;
    sg_http_req_t *req = c->req;
    if (req && req->aborted && req->dispatched && !req->handler_done && !req->abort_notified) {
        sg__http_req_notify_abort(req);
        c->again = 1;
        return;
    }
    if (req && !req->dispatched && !req->server_answered) {
        req->dispatched = 1;
        req->refs++; /* the handler's */
        srv->cfg.handler(req, srv->cfg.data);
        c->again = 1;
        return;
    }
    if (req && req->dispatched && req->msg_complete && !req->body_end_sent && !req->aborted &&
        (req->body_mode == SG__BODY_STREAM || req->body_mode == SG__BODY_ALL)) {
        sg__http_req_body_end(req);
        c->again = 1;
        return;
    }
    if (req && req->msg_complete && req->resp_state == SG__RESP_ENDED) {
        if (!req->keep_alive || req->resp_close) c->close_after = 1;
        req_detach(c, 0);
        c->req_start_ns = 0;
        if (c->close_after) in_drop(c); /* nothing more will be parsed */
        c->again = 1;
        return;
    }
    if (c->in_len > c->in_off && parse_allowed(c)) {
        size_t used = conn_exec(c, c->in + c->in_off, c->in_len - c->in_off);
        c->in_off += used;
        if (c->in_off == c->in_len) in_drop(c);
        c->again = 1;
        return;
    }
    if (c->exec_after_pause && c->req && parse_allowed(c)) {
        static const char none[1] = "";
        conn_exec(c, none, 0); /* lets llhttp finish a message whose last bytes it paused on */
        c->again = 1;
        return;
    }
}

static int conn_finished(const sg__http_conn_t *c)
{
    if (c->req) return 0;
    if (c->close_after) return 1;
    return c->peer_eof && c->in_len == c->in_off;
}

static void on_linger_shutdown(uv_shutdown_t *r, int status)
{
    /* Runs before the handle's close callback, also when closing cancelled it. */
    sg__http_conn_t *c = r->data;
    free(r);
    if (status < 0 && !c->closing) conn_close(c);
}

/* Output is flushed and the connection is done: close, lingering when the peer may still be
 * sending (see the top of the file). */
static void conn_finish_close(sg__http_conn_t *c)
{
    if (c->peer_eof || c->sock.tls || c->srv->closing) {
        conn_close(c);
        return;
    }
    c->lingering = 1;
    uv_shutdown_t *sr = sg_xmalloc(sizeof(*sr)); /* only closing connections need one */
    sr->data = c;
    if (uv_shutdown(sr, &c->sock.h.stream, on_linger_shutdown) < 0) {
        free(sr);
        conn_close(c);
        return;
    }
    in_drop(c);
    set_phase(c, SG__RT_LINGER);
    if (!c->reading) {
        c->reading = 1;
        if (sg_sock_read_start(&c->sock, sg__http_on_read) < 0) conn_close(c);
    }
}

static void conn_process(sg__http_conn_t *c)
{
    if (c->closing || c->lingering) return;
    if (c->in_process) {
        c->again = 1;
        return;
    }
    maybe_drain(c);
    if (c->closing) return;
    c->in_process = 1;
    unsigned guard = 0;
    do {
        c->again = 0;
        conn_step(c);
    } while (c->again && !c->closing && ++guard < 10000);
    c->in_process = 0;
    if (c->closing) return;
    if (c->again) sg__http_conn_kick(c); /* fairness: continue in a later pass */
    sg__http_conn_flush(c);
    if (c->peer_eof && c->in_len == c->in_off &&
        (c->got_bytes || (c->req && !c->req->msg_complete))) {
        conn_close(c); /* the client half-closed inside a request: it can never complete */
        return;
    }
    if (conn_finished(c) && c->out.bytes == 0 && !sg_sock_writing(&c->sock)) {
        conn_finish_close(c);
        return;
    }
    if (c->srv->shutting_down && !c->req && !c->got_bytes) c->close_after = 1;
    update_reading(c);
    update_timers(c);
}

void sg__http_on_read(sg_sock_t *s, ssize_t nread, const char *data)
{
    sg__http_conn_t *c = s->data;
    if (c->closing) return;
    if (c->lingering) {
        if (nread < 0) conn_close(c); /* the client saw our close: done */
        return;                       /* input after the last response is dropped */
    }
    if (nread < 0) {
        c->reading = 0;
        c->peer_eof = 1;
        if (nread != UV_EOF) {
            conn_close(c); /* reset or TLS failure: the client is gone */
            return;
        }
        /* A half-close after a complete request still gets its answer (printf | nc clients);
         * conn_process cuts a request that can no longer complete. */
        conn_process(c);
        return;
    }
    if (c->in_len > c->in_off || c->in_process || !parse_allowed(c)) {
        in_append(c, data, (size_t)nread);
    } else {
        /* Fast path: parse straight from the socket's buffer; copy only what a pause leaves. */
        c->in_process = 1;
        size_t used = conn_exec(c, data, (size_t)nread);
        c->in_process = 0;
        if (used < (size_t)nread && !c->closing) in_append(c, data + used, (size_t)nread - used);
    }
    conn_process(c);
}

/* ------------------------------------------------------------------ connection lifecycle */

static void conn_free(sg__http_conn_t *c)
{
    sg_http_server_t *srv = c->srv;
    defer_unlink(c);
    if (c->prev) c->prev->next = c->next; else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    sg_tentry_disarm(&c->rt);
    sg_tentry_disarm(&c->wt);
    if (c->req) req_detach(c, 1);
    in_drop(c);
    sg__http_str_free(&c->url);
    sg__http_str_free(&c->field);
    sg__http_str_free(&c->value);
    sg_hdrs_free(&c->hdrs);
    sg_bufq_free(&c->out);
    free(c);
    srv->nconns--;
    if (srv->shutting_down && srv->nconns == 0) srv_idle_start(srv); /* notify from a fresh pass */
    srv_maybe_finish(srv);
}

static void on_sock_closed(sg_sock_t *s)
{
    conn_free(s->data);
}

static void conn_close(sg__http_conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    c->reading = 0;
    sg_tentry_disarm(&c->rt);
    sg_tentry_disarm(&c->wt);
    c->rphase = SG__RT_NONE;
    defer_unlink(c);
    if (c->req && c->req->resp_state != SG__RESP_ENDED) c->req->aborted = 1;
    sg_sock_close(&c->sock, on_sock_closed);
}

void sg__http_conn_close(sg__http_conn_t *c)
{
    conn_close(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    sg_http_server_t *srv = ls->data;
    if (status < 0 || srv->shutting_down || srv->closing) return;
    sg__http_conn_t *c = sg_xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->sock.data = c;
    int r = sg_sock_accept(ls, &c->sock, srv->cfg.tls);
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    sg_bufq_init(&c->out);
    sg_hdrs_init(&c->hdrs);
    sg_tentry_init(&c->rt, on_rtimer);
    sg_tentry_init(&c->wt, on_wtimer);
    llhttp_init(&c->parser, HTTP_REQUEST, parser_settings());
    c->parser.data = c;
    if (r < 0) {
        /* uv_accept failed or TLS setup failed: the handle was initialised, close it. */
        c->closing = 1;
        if (c->sock.h.handle.type != UV_UNKNOWN_HANDLE) sg_sock_close(&c->sock, on_sock_closed);
        else conn_free(c);
        return;
    }
    sg_sock_peer(&c->sock, c->peer, sizeof(c->peer));
    if (srv->cfg.sndbuf > 0) sg_sock_set_sndbuf(&c->sock, srv->cfg.sndbuf);
    sg_sock_nodelay(&c->sock, 1);
    if (srv->cfg.limits.max_connections && srv->nconns > srv->cfg.limits.max_connections) {
        c->reject = 1;
        sg__http_conn_error(c, 503, "OVERLOADED", "too many connections, retry later");
        conn_process(c);
        return;
    }
    set_phase(c, SG__RT_HEADER); /* a new connection must send its request in time */
    conn_process(c);
}

/* ------------------------------------------------------------------ server lifecycle */

void sg_http_server_config_init(sg_http_server_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->limits.max_header_bytes = 16 * 1024;
    cfg->limits.max_header_count = 100;
    cfg->limits.max_url_bytes = 8 * 1024;
    cfg->limits.max_body_bytes = 1024ull * 1024 * 1024;
    cfg->limits.header_timeout_ms = 10000;
    cfg->limits.body_timeout_ms = 30000;
    cfg->limits.idle_timeout_ms = 60000;
    cfg->limits.send_timeout_ms = 60000;
    cfg->limits.max_connections = 10000;
    cfg->limits.write_high_water = 256 * 1024;
}

int sg_http_server_new(uv_loop_t *loop, const sg_http_server_config_t *cfg, sg_http_server_t **out)
{
    *out = NULL;
    if (!cfg || !cfg->handler) return SG_EINVAL;
    sg_http_server_t *srv = sg_xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = *cfg;
    sg_http_limits_t *l = &srv->cfg.limits;
    if (!l->max_header_bytes) l->max_header_bytes = 16 * 1024;
    if (!l->max_header_count) l->max_header_count = 100;
    if (!l->max_url_bytes) l->max_url_bytes = 8 * 1024;
    if (!l->write_high_water) l->write_high_water = 256 * 1024;
    uv_idle_init(loop, &srv->idle);
    srv->idle.data = srv;
    uv_timer_init(loop, &srv->grace);
    srv->grace.data = srv;
    sg_tlist_init(loop, &srv->t_idle, l->idle_timeout_ms);
    sg_tlist_init(loop, &srv->t_header, l->header_timeout_ms);
    sg_tlist_init(loop, &srv->t_body, l->body_timeout_ms);
    sg_tlist_init(loop, &srv->t_send, l->send_timeout_ms);
    sg_tlist_init(loop, &srv->t_linger, SG__HTTP_LINGER_MS);
    srv->handles_open = 7;
    srv->id_salt = sg_now_ns() ^ ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)srv;
    *out = srv;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    sg_http_server_t *srv = h->data;
    srv->handles_open--;
    srv_maybe_finish(srv);
}

static void on_tlist_closed(sg_tlist_t *l)
{
    on_handle_closed((uv_handle_t *)&l->timer);
}

static void srv_maybe_finish(sg_http_server_t *srv)
{
    if (!srv->closing || srv->handles_open || srv->nconns) return;
    sg_http_server_cb cb = srv->close_cb;
    void *data = srv->cfg.data;
    free(srv);
    if (cb) cb(NULL, data);
}

static int parse_hostport(const char *addr, char *host, size_t hlen, int *port)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb || rb[1] != ':') return SG_EINVAL;
        if ((size_t)(rb - addr - 1) >= hlen) return SG_EINVAL;
        memcpy(host, addr + 1, (size_t)(rb - addr - 1));
        host[rb - addr - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= hlen) return SG_EINVAL;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535) return SG_EINVAL;
    *port = (int)p;
    return 0;
}

int sg_http_server_listen(sg_http_server_t *srv, const char *addr, char *err, size_t errlen)
{
    int r;
    if (srv->shutting_down || srv->closing) return SG_ECLOSED;
    if (srv->nls >= SG__HTTP_MAX_LISTENERS) {
        snprintf(err, errlen, "too many listeners");
        return SG_ETOOBIG;
    }
    uv_handle_t *h = &srv->ls[srv->nls].handle;
    if (strncmp(addr, "unix:", 5) == 0) {
        const char *path = addr + 5;
        struct stat st;
        if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
        uv_pipe_init(srv->loop, &srv->ls[srv->nls].pipe, 0);
        h->data = srv;
        srv->handles_open++;
        r = uv_pipe_bind(&srv->ls[srv->nls].pipe, path);
    } else {
        char host[256];
        int port;
        struct sockaddr_storage ss;
        if (parse_hostport(addr, host, sizeof(host), &port) < 0) {
            snprintf(err, errlen, "bad listen address '%s' (want host:port or unix:/path)", addr);
            return SG_EINVAL;
        }
        if (!host[0] || strcmp(host, "*") == 0) strcpy(host, "0.0.0.0");
        if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
        if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
            snprintf(err, errlen, "bad listen host '%s' (numeric address expected)", host);
            return SG_EINVAL;
        }
        uv_tcp_init(srv->loop, &srv->ls[srv->nls].tcp);
        h->data = srv;
        srv->handles_open++;
        r = uv_tcp_bind(&srv->ls[srv->nls].tcp, (struct sockaddr *)&ss, 0);
    }
    if (r == 0) r = uv_listen(&srv->ls[srv->nls].stream, 4096, on_connection);
    if (r < 0) {
        snprintf(err, errlen, "listen on %s: %s", addr, uv_strerror(r));
        uv_close(h, on_handle_closed);
        return r;
    }
    srv->nls++;
    return 0;
}

int sg_http_server_port(const sg_http_server_t *srv)
{
    for (int i = 0; i < srv->nls; i++) {
        if (srv->ls[i].handle.type != UV_TCP) continue;
        struct sockaddr_storage ss;
        int n = sizeof(ss);
        if (uv_tcp_getsockname(&srv->ls[i].tcp, (struct sockaddr *)&ss, &n) < 0) continue;
        if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return 0;
}

size_t sg_http_server_connections(const sg_http_server_t *srv)
{
    return srv->nconns;
}

static void close_listeners(sg_http_server_t *srv)
{
    for (int i = 0; i < srv->nls; i++) uv_close(&srv->ls[i].handle, on_handle_closed);
    srv->nls = 0;
}

static void on_grace(uv_timer_t *t)
{
    sg_http_server_t *srv = t->data;
    srv->grace_armed = 0;
    for (sg__http_conn_t *c = srv->conns; c; c = c->next) conn_close(c);
}

void sg_http_server_shutdown(sg_http_server_t *srv, uint64_t grace_ms, sg_http_server_cb cb)
{
    if (srv->shutting_down || srv->closing) return;
    srv->shutting_down = 1;
    srv->shutdown_cb = cb;
    close_listeners(srv);
    for (sg__http_conn_t *c = srv->conns, *n; c; c = n) {
        n = c->next;
        if (!c->req && !c->got_bytes && c->out.bytes == 0) conn_close(c);
        else c->close_after = 1;
    }
    if (srv->nconns) {
        uv_timer_start(&srv->grace, on_grace, grace_ms, 0);
        srv->grace_armed = 1;
    }
    srv_idle_start(srv);
}

void sg_http_server_close(sg_http_server_t *srv, sg_http_server_cb cb)
{
    if (srv->closing) return;
    srv->closing = 1;
    srv->shutting_down = 1;
    srv->shutdown_notified = 1;
    srv->close_cb = cb;
    close_listeners(srv);
    for (sg__http_conn_t *c = srv->conns; c; c = c->next) conn_close(c);
    uv_close((uv_handle_t *)&srv->idle, on_handle_closed);
    uv_close((uv_handle_t *)&srv->grace, on_handle_closed);
    srv->t_idle.timer.data = srv;
    srv->t_header.timer.data = srv;
    srv->t_body.timer.data = srv;
    srv->t_send.timer.data = srv;
    srv->t_linger.timer.data = srv;
    sg_tlist_close(&srv->t_idle, on_tlist_closed);
    sg_tlist_close(&srv->t_header, on_tlist_closed);
    sg_tlist_close(&srv->t_body, on_tlist_closed);
    sg_tlist_close(&srv->t_send, on_tlist_closed);
    sg_tlist_close(&srv->t_linger, on_tlist_closed);
}
