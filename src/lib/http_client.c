/* http_client.c: HTTP/1.1 client, per-origin pools (see http_client.h for the contract).
 *
 * Map of this file:
 *   objects     client -> origins (list) -> conns (idle LIFO list) and waiting requests (FIFO).
 *               A conn embeds its sg_sock_t, one sg_tentry_t and the response reader; it is
 *               freed only in the socket's close callback. A request is refcounted: one ref
 *               for its owner (dropped after on_done), one per socket write in flight (the
 *               iovecs point into its queue), one per entry point that runs callbacks, so a
 *               callback that cancels can never pull memory out from under the caller.
 *   dispatch    sg_http_request() only queues the request and kicks the uv_idle_t; dispatch()
 *               then hands waiting requests to idle conns or new conns within the cap. Doing
 *               it on the next turn keeps every user callback out of API calls.
 *   timeouts    each conn has one tentry, armed on the list its phase needs (conn_arm()):
 *               connecting -> connect list; sending -> body list while a write is pending;
 *               request sent, no headers -> response list; body -> body list, re-armed on
 *               every read, disarmed while the caller paused; pooled -> idle list.
 *   reading     on_read -> feed(): bytes go to the reader; a pause leaves unread bytes in
 *               conn->held, handed out on resume (from the idle callback, not from inside
 *               sg_http_creq_resume()). Completion is decided after llhttp returns.
 *   writing     the request's out queue (head + body framing + body slices) is flushed one
 *               uv_write at a time; a streamed body is pulled from the caller by on_drain.
 *   finishing   finish() detaches request and conn, pools or closes the conn, calls on_done,
 *               drops the owner ref, and kicks dispatch for the origin. */
#include "sandgate/http_client.h"
#include "sandgate/common.h"
#include "sandgate/sock.h"
#include "sandgate/timer.h"
#include "http_client_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONN_IOV 32
#define WRITE_MAX_BYTES (256 * 1024)

typedef struct origin origin_t;
typedef struct conn conn_t;

enum { C_CONNECTING, C_ACTIVE, C_IDLE, C_CLOSING };

struct conn {
    sg_sock_t sock;
    sg_http_client_t *c;
    origin_t *o;
    conn_t *prev, *next; /* origin's idle list */
    conn_t *kick_next;   /* client's resume list */
    conn_t *all_prev, *all_next; /* client's list of open connections */
    sg_tentry_t te;
    sg__hresp_t resp;
    sg_http_creq_t *req;   /* current exchange */
    sg_http_creq_t *wreq;  /* request whose bytes the in-flight write points into */
    size_t wbytes;
    sg_bufq_t orphan;      /* a retried request's old queue, while a write still uses it */
    uv_buf_t iov[CONN_IOV];
    char *held;            /* bytes read but not yet parsed (paused mid-buffer) */
    size_t held_len;
    int state;
    unsigned kicked : 1;
    unsigned reused : 1;
    unsigned no_reuse : 1;
    unsigned got_bytes : 1; /* any response byte for the current exchange */
    unsigned zombie : 1;    /* closed, waiting for the resolver to let go (on_conn_closed) */
};

struct origin {
    origin_t *next;
    sg_http_client_t *c;
    char *key;
    char *host; /* for sg_sock_connect: name, address or "unix:/path" */
    char *host_hdr;
    uint16_t port;
    int tls;
    unsigned nconns, nidle;
    conn_t *idle; /* most recently used first */
    sg_http_creq_t *wait_head, *wait_tail;
    unsigned nwait;
    unsigned want_dispatch : 1;
    uint64_t connects, reuses, retries;
};

struct sg_http_creq {
    sg_http_client_t *c;
    origin_t *o;
    conn_t *conn;
    sg_http_creq_t *wnext, *wprev;
    unsigned refs;
    char *method;
    char *target;
    sg_hdrs_t hdrs;
    sg_buf_t *body;
    char *sni;
    sg_bufq_t out;
    int64_t content_length; /* streamed: declared, or -1 */
    uint64_t body_written;  /* streamed: bytes accepted from the caller */
    int status;
    sg_http_creq_response_cb on_response;
    sg_http_creq_body_cb on_body;
    sg_http_creq_done_cb on_done;
    sg_http_creq_drain_cb on_drain;
    void *data;
    unsigned waiting : 1;
    unsigned streamed : 1;
    unsigned chunked : 1;
    unsigned ended : 1;     /* body complete (always true for non-streamed) */
    unsigned sent_all : 1;  /* everything including the end is on the wire */
    unsigned send_failed : 1;
    unsigned want_drain : 1;
    unsigned paused : 1;
    unsigned done : 1;
    unsigned retried : 1;
    unsigned fresh_only : 1;
    unsigned req_close : 1;
    unsigned idempotent : 1;
    unsigned no_body_timeout : 1;
};

struct sg_http_client {
    uv_loop_t *loop;
    sg_http_client_config_t cfg;
    sg_tlist_t t_connect, t_response, t_body, t_idle;
    uv_idle_t kick;
    origin_t *origins;
    conn_t *kick_list;
    conn_t *conns;   /* open (not closing) connections */
    unsigned nconns; /* not yet freed */
    unsigned pending_closes;
    unsigned closing : 1;
    unsigned want_dispatch : 1;
    void (*close_cb)(void *);
    void *close_data;
};

static void conn_close(conn_t *k);
static void conn_flush(conn_t *k);
static void conn_arm(conn_t *k);
static void finish(sg_http_creq_t *r, int err, const char *msg);
static void kick(sg_http_client_t *c);
static void feed(conn_t *k, const char *p, size_t n);

/* ------------------------------------------------------------------ requests: refs */

static void req_ref(sg_http_creq_t *r) { r->refs++; }

static void req_unref(sg_http_creq_t *r)
{
    if (--r->refs) return;
    free(r->method);
    free(r->target);
    free(r->sni);
    sg_hdrs_free(&r->hdrs);
    sg_buf_unref(r->body);
    sg_bufq_free(&r->out);
    free(r);
}

/* ------------------------------------------------------------------ origins */

static int parse_origin(const char *s, char **host, uint16_t *port, int *tls, char **host_hdr)
{
    if (strncmp(s, "unix:", 5) == 0) {
        if (!s[5]) return SG_EINVAL;
        *host = sg_xstrdup(s);
        *port = 0;
        *tls = 0;
        *host_hdr = sg_xstrdup("localhost");
        return 0;
    }
    const char *p;
    unsigned def;
    if (strncasecmp(s, "http://", 7) == 0) p = s + 7, def = 80, *tls = 0;
    else if (strncasecmp(s, "https://", 8) == 0) p = s + 8, def = 443, *tls = 1;
    else return SG_EINVAL;
    size_t len = strcspn(p, "/");
    if (p[len] == '/' && p[len + 1]) return SG_EINVAL; /* an origin has no path */
    const char *hs = p, *he, *colon;
    if (*p == '[') {
        he = memchr(p, ']', len);
        if (!he) return SG_EINVAL;
        hs = p + 1;
        colon = he + 1 < p + len && he[1] == ':' ? he + 1 : NULL;
        if (!colon && he + 1 != p + len) return SG_EINVAL;
    } else {
        colon = memchr(p, ':', len);
        he = colon ? colon : p + len;
    }
    if (he == hs) return SG_EINVAL;
    unsigned long port_v = def;
    if (colon) {
        char *end;
        port_v = strtoul(colon + 1, &end, 10);
        if (end != p + len || end == colon + 1 || port_v == 0 || port_v > 65535) return SG_EINVAL;
    }
    *host = sg_xstrndup(hs, (size_t)(he - hs));
    *port = (uint16_t)port_v;
    *host_hdr = sg_xstrndup(p, len);
    return 0;
}

static origin_t *origin_get(sg_http_client_t *c, const char *key, int *err)
{
    size_t kl = strlen(key);
    while (kl > 0 && key[kl - 1] == '/' && strncmp(key, "unix:", 5) != 0) kl--;
    for (origin_t *o = c->origins; o; o = o->next)
        if (strlen(o->key) == kl && strncmp(o->key, key, kl) == 0) return o;
    char *k = sg_xstrndup(key, kl), *host = NULL, *hh = NULL;
    uint16_t port;
    int tls;
    *err = parse_origin(k, &host, &port, &tls, &hh);
    if (*err == 0 && tls && !c->cfg.tls) *err = SG_EINVAL;
    if (*err) {
        free(k);
        free(host);
        free(hh);
        return NULL;
    }
    origin_t *o = sg_xcalloc(1, sizeof(*o));
    o->c = c;
    o->key = k;
    o->host = host;
    o->host_hdr = hh;
    o->port = port;
    o->tls = tls;
    o->next = c->origins;
    c->origins = o;
    return o;
}

static void wait_push(origin_t *o, sg_http_creq_t *r, int front)
{
    r->waiting = 1;
    if (front) {
        r->wprev = NULL;
        r->wnext = o->wait_head;
        if (o->wait_head) o->wait_head->wprev = r; else o->wait_tail = r;
        o->wait_head = r;
    } else {
        r->wnext = NULL;
        r->wprev = o->wait_tail;
        if (o->wait_tail) o->wait_tail->wnext = r; else o->wait_head = r;
        o->wait_tail = r;
    }
    o->nwait++;
}

static void wait_remove(origin_t *o, sg_http_creq_t *r)
{
    if (!r->waiting) return;
    if (r->wprev) r->wprev->wnext = r->wnext; else o->wait_head = r->wnext;
    if (r->wnext) r->wnext->wprev = r->wprev; else o->wait_tail = r->wprev;
    r->wnext = r->wprev = NULL;
    r->waiting = 0;
    o->nwait--;
}

static void idle_remove(conn_t *k)
{
    origin_t *o = k->o;
    if (k->prev) k->prev->next = k->next; else o->idle = k->next;
    if (k->next) k->next->prev = k->prev;
    k->prev = k->next = NULL;
    o->nidle--;
}

/* ------------------------------------------------------------------ request bytes */

static int method_idempotent(const char *m)
{
    static const char *const ok[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < SG_ARRAY_SIZE(ok); i++)
        if (strcmp(m, ok[i]) == 0) return 1;
    return 0;
}

static int method_expects_body(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
}

static void push_str(sg_bufq_t *q, const char *s) { sg_bufq_push_copy(q, s, strlen(s)); }

/* Head (and a buffered body) into r->out; used again for a retry. */
static void build_out(sg_http_creq_t *r)
{
    sg_bufq_t *q = &r->out;
    char line[64];
    push_str(q, r->method);
    push_str(q, " ");
    push_str(q, r->target);
    push_str(q, " HTTP/1.1\r\n");
    int have_host = 0;
    for (size_t i = 0; i < r->hdrs.n; i++) {
        const sg_hdr_t *h = &r->hdrs.v[i];
        if (strcasecmp(h->name, "content-length") == 0 || strcasecmp(h->name, "transfer-encoding") == 0)
            continue;
        if (strcasecmp(h->name, "host") == 0) have_host = 1;
        push_str(q, h->name);
        push_str(q, ": ");
        push_str(q, h->value);
        push_str(q, "\r\n");
    }
    if (!have_host) {
        push_str(q, "Host: ");
        push_str(q, r->o->host_hdr);
        push_str(q, "\r\n");
    }
    if (r->streamed) {
        if (r->chunked) push_str(q, "Transfer-Encoding: chunked\r\n");
        else {
            snprintf(line, sizeof(line), "Content-Length: %lld\r\n", (long long)r->content_length);
            push_str(q, line);
        }
    } else if (r->body || method_expects_body(r->method)) {
        snprintf(line, sizeof(line), "Content-Length: %zu\r\n", r->body ? r->body->len : 0);
        push_str(q, line);
    }
    push_str(q, "\r\n");
    if (r->body && r->body->len) sg_bufq_push(q, r->body, 0, r->body->len);
}

/* ------------------------------------------------------------------ timers */

static void on_conn_timeout(sg_tentry_t *e)
{
    conn_t *k = SG_CONTAINER_OF(e, conn_t, te);
    sg_http_client_t *c = k->c;
    sg_http_creq_t *r = k->req;
    char msg[128];
    if (k->state == C_IDLE || !r) {
        conn_close(k);
        return;
    }
    if (k->state == C_CONNECTING) {
        snprintf(msg, sizeof(msg), "connect to %s timed out after %llu ms", k->o->key,
                 (unsigned long long)c->t_connect.duration_ms);
    } else if (!r->sent_all && !k->resp.headers_done) {
        snprintf(msg, sizeof(msg), "sending the request to %s stalled for %llu ms", k->o->key,
                 (unsigned long long)c->t_body.duration_ms);
    } else if (!k->resp.headers_done) {
        snprintf(msg, sizeof(msg), "no response from %s within %llu ms", k->o->key,
                 (unsigned long long)c->t_response.duration_ms);
    } else {
        snprintf(msg, sizeof(msg), "response body from %s idle for %llu ms", k->o->key,
                 (unsigned long long)c->t_body.duration_ms);
    }
    req_ref(r);
    finish(r, SG_ETIMEDOUT, msg);
    req_unref(r);
}

static void conn_arm(conn_t *k)
{
    sg_http_client_t *c = k->c;
    sg_http_creq_t *r = k->req;
    switch (k->state) {
    case C_CONNECTING: sg_tentry_arm(&c->t_connect, &k->te); return;
    case C_IDLE: sg_tentry_arm(&c->t_idle, &k->te); return;
    case C_CLOSING: sg_tentry_disarm(&k->te); return;
    default: break;
    }
    if (!r) {
        sg_tentry_disarm(&k->te);
    } else if (k->resp.headers_done) {
        if (r->paused || r->no_body_timeout) sg_tentry_disarm(&k->te);
        else sg_tentry_arm(&c->t_body, &k->te);
    } else if (r->sent_all || r->send_failed) {
        /* Response timeout runs from the moment the request is on the wire; do not restart
         * it on every partial header read. */
        if (k->te.list != &c->t_response) sg_tentry_arm(&c->t_response, &k->te);
    } else if (sg_sock_writing(&k->sock)) {
        sg_tentry_arm(&c->t_body, &k->te); /* upload progress */
    } else {
        sg_tentry_disarm(&k->te); /* waiting for the caller's body bytes */
    }
}

/* ------------------------------------------------------------------ connections */

static void on_part_closed(sg_http_client_t *c);

static void on_conn_closed(sg_sock_t *s)
{
    conn_t *k = s->data;
    sg_http_client_t *c = k->c;
    sg__hresp_free(&k->resp);
    sg_bufq_free(&k->orphan);
    free(k->held);
    k->held = NULL;
    /* sg_sock runs its close callback before a cancelled name lookup returns, and the lookup
     * (a threadpool request embedded in k->sock) still reads k and calls on_connect: free k
     * there instead. Everything else is released now; k must not touch c after this. */
    if (k->sock.resolving) k->zombie = 1;
    else free(k);
    c->nconns--;
    if (c->closing) on_part_closed(c);
}

/* Closes k; its current request (if any) must already be detached or finished. */
static void conn_close(conn_t *k)
{
    if (k->state == C_CLOSING) return;
    origin_t *o = k->o;
    if (k->state == C_IDLE) idle_remove(k);
    k->state = C_CLOSING;
    if (k->all_prev) k->all_prev->all_next = k->all_next; else k->c->conns = k->all_next;
    if (k->all_next) k->all_next->all_prev = k->all_prev;
    k->all_prev = k->all_next = NULL;
    if (k->kicked) {
        /* The idle callback must not see it: it is freed before that runs again. */
        for (conn_t **pp = &k->c->kick_list; *pp; pp = &(*pp)->kick_next)
            if (*pp == k) {
                *pp = k->kick_next;
                break;
            }
        k->kicked = 0;
        k->kick_next = NULL;
    }
    sg_tentry_disarm(&k->te);
    o->nconns--;
    k->req = NULL;
    sg_sock_close(&k->sock, on_conn_closed);
    /* A slot freed up: a waiting request may proceed. */
    if (o->nwait) {
        o->want_dispatch = 1;
        kick(k->c);
    }
}

static void on_read(sg_sock_t *s, ssize_t nread, const char *data);

static void conn_to_pool(conn_t *k)
{
    origin_t *o = k->o;
    sg_http_client_t *c = k->c;
    k->req = NULL;
    if (c->closing || k->no_reuse || o->nidle >= c->cfg.max_idle_per_origin || k->held_len) {
        conn_close(k);
        return;
    }
    k->state = C_IDLE;
    k->reused = 1;
    sg__hresp_reset(&k->resp, 0);
    k->prev = NULL;
    k->next = o->idle;
    if (o->idle) o->idle->prev = k;
    o->idle = k;
    o->nidle++;
    conn_arm(k);
    /* Keep reading while idle: a server close (EOF) is then seen at once. */
    if (sg_sock_read_start(&k->sock, on_read) < 0) {
        conn_close(k);
        return;
    }
    if (o->nwait) {
        o->want_dispatch = 1;
        kick(c);
    }
}

static int retry_safe(sg_http_creq_t *r, conn_t *k)
{
    return k->reused && !k->got_bytes && !r->retried && r->idempotent && !r->streamed &&
           !r->done && !r->c->closing;
}

/* The connection failed under r before any response byte: replay r on a fresh connection. */
static void retry(sg_http_creq_t *r)
{
    conn_t *k = r->conn;
    origin_t *o = r->o;
    r->conn = NULL;
    k->req = NULL;
    conn_close(k);
    /* An in-flight write still points into r->out: the closing conn keeps those chunks alive
     * (its write callback then only drops its ref to r), and r starts a fresh queue. */
    if (k->wreq == r) {
        k->orphan = r->out;
        sg_bufq_init(&r->out);
    } else {
        sg_bufq_reset(&r->out);
    }
    build_out(r);
    r->sent_all = 0;
    r->send_failed = 0;
    r->retried = 1;
    r->fresh_only = 1;
    o->retries++;
    wait_push(o, r, 1);
    o->want_dispatch = 1;
    kick(r->c);
}

static void conn_fail(conn_t *k, int err, const char *msg)
{
    sg_http_creq_t *r = k->req;
    if (!r) {
        conn_close(k);
        return;
    }
    if (retry_safe(r, k)) {
        retry(r);
        return;
    }
    req_ref(r);
    finish(r, err, msg);
    req_unref(r);
}

static void on_write(sg_sock_t *s, int status)
{
    conn_t *k = s->data;
    sg_http_creq_t *r = k->wreq;
    size_t n = k->wbytes;
    k->wreq = NULL;
    k->wbytes = 0;
    if (!r) return;
    if (r->conn == k && !r->done) {
        sg_bufq_consume(&r->out, n);
        if (status < 0) {
            /* The server may have answered and closed (e.g. 413 before reading the whole
             * upload); let the read side report what happened. */
            r->send_failed = 1;
            k->no_reuse = 1;
            sg_bufq_reset(&r->out);
            conn_arm(k);
        } else {
            conn_flush(k);
        }
    }
    req_unref(r);
}

static void conn_flush(conn_t *k)
{
    sg_http_creq_t *r = k->req;
    if (!r || k->state != C_ACTIVE || sg_sock_writing(&k->sock) || r->send_failed) return;
    if (r->out.bytes == 0) {
        if (r->ended && !r->sent_all) {
            r->sent_all = 1;
            conn_arm(k);
        }
        if (r->want_drain && !r->ended) {
            r->want_drain = 0;
            conn_arm(k);
            if (r->on_drain) {
                req_ref(r);
                r->on_drain(r, r->data);
                req_unref(r);
            }
        } else {
            conn_arm(k);
        }
        return;
    }
    size_t total = 0;
    unsigned n = sg_bufq_iov(&r->out, k->iov, CONN_IOV, WRITE_MAX_BYTES, &total);
    int e = sg_sock_write(&k->sock, k->iov, n, on_write);
    if (e < 0) {
        r->send_failed = 1;
        k->no_reuse = 1;
        sg_bufq_reset(&r->out);
        conn_arm(k);
        return;
    }
    k->wreq = r;
    k->wbytes = total;
    req_ref(r);
    conn_arm(k);
}

static int on_head(sg__hresp_t *h)
{
    conn_t *k = h->owner;
    sg_http_creq_t *r = k->req;
    if (!r || r->done) return -1;
    r->status = h->status;
    conn_arm(k);
    if (r->on_response) r->on_response(r, r->data, h->status, &h->hdrs);
    if (r->done || k->req != r) return -1;
    return r->paused ? 1 : 0;
}

static int on_body(sg__hresp_t *h, const char *p, size_t n)
{
    conn_t *k = h->owner;
    sg_http_creq_t *r = k->req;
    if (!r || r->done) return -1;
    if (r->on_body) r->on_body(r, r->data, p, n);
    if (r->done || k->req != r) return -1;
    return r->paused ? 1 : 0;
}

static void complete(conn_t *k, size_t stray)
{
    sg_http_creq_t *r = k->req;
    if (stray || !llhttp_should_keep_alive(&k->resp.parser) || !r->sent_all || r->req_close)
        k->no_reuse = 1;
    finish(r, 0, NULL);
}

/* Parses n bytes for the current exchange; keeps what a pause left unparsed in k->held. */
static void feed(conn_t *k, const char *p, size_t n)
{
    sg_http_creq_t *r = k->req;
    req_ref(r);
    size_t used = 0;
    int e = sg__hresp_execute(&k->resp, p, n, &used);
    if (r->done || k->req != r) {
        /* cancelled from a callback: nothing more to do */
    } else if (e == SG__HR_DONE) {
        complete(k, n - used);
    } else if (e == SG__HR_PAUSED) {
        size_t rest = n - used;
        if (rest) {
            /* p may point into k->held itself (resume path): move, don't copy over. */
            char *nb = sg_xmalloc(rest);
            memcpy(nb, p + used, rest);
            free(k->held);
            k->held = nb;
            k->held_len = rest;
        }
        if (r->paused) sg_sock_read_stop(&k->sock);
        conn_arm(k);
    } else if (e < 0) {
        k->no_reuse = 1;
        char msg[200];
        snprintf(msg, sizeof(msg), "%s: %s", k->o->key, k->resp.err);
        finish(r, e, msg);
    }
    req_unref(r);
}

static void on_read(sg_sock_t *s, ssize_t nread, const char *data)
{
    conn_t *k = s->data;
    if (k->state == C_IDLE) {
        /* EOF, reset, or bytes nobody asked for: this connection is done. */
        conn_close(k);
        return;
    }
    sg_http_creq_t *r = k->req;
    if (k->state != C_ACTIVE || !r) return;
    if (nread < 0) {
        char msg[200];
        if (nread == UV_EOF) {
            if (!k->got_bytes && retry_safe(r, k)) {
                retry(r);
                return;
            }
            req_ref(r);
            int e = sg__hresp_finish(&k->resp);
            if (!r->done && k->req == r) {
                if (e == SG__HR_DONE) {
                    k->no_reuse = 1;
                    finish(r, 0, NULL);
                } else if (e < 0) {
                    snprintf(msg, sizeof(msg), "%s: %s", k->o->key, k->resp.err);
                    finish(r, e, msg);
                }
            }
            req_unref(r);
            return;
        }
        snprintf(msg, sizeof(msg), "%s: connection %s: %s", k->o->key,
                 nread == UV_ECONNRESET ? "reset by the server" : "failed", sg_strerror((int)nread));
        conn_fail(k, (int)nread, msg);
        return;
    }
    k->got_bytes = 1;
    if (k->resp.headers_done) conn_arm(k);
    feed(k, data, (size_t)nread);
}

static void start_exchange(conn_t *k)
{
    sg_http_creq_t *r = k->req;
    k->state = C_ACTIVE;
    k->got_bytes = 0;
    k->no_reuse = 0;
    sg__hresp_reset(&k->resp, strcmp(r->method, "HEAD") == 0);
    if (r->paused) sg_sock_read_stop(&k->sock);
    else if (sg_sock_read_start(&k->sock, on_read) < 0) {
        conn_fail(k, UV_EOF, "connection closed before the request was sent");
        return;
    }
    conn_flush(k);
    if (k->req == r) conn_arm(k);
}

static void on_connect(sg_sock_t *s, int status)
{
    conn_t *k = s->data;
    if (k->zombie) {
        free(k);
        return;
    }
    if (k->state == C_CLOSING) return;
    sg_http_creq_t *r = k->req;
    if (status < 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "connect to %s failed: %s", k->o->key, sg_strerror(status));
        if (r) {
            req_ref(r);
            finish(r, status, msg);
            req_unref(r);
        } else {
            conn_close(k);
        }
        return;
    }
    if (!r) {
        conn_close(k);
        return;
    }
    if (k->c->cfg.sndbuf > 0) sg_sock_set_sndbuf(&k->sock, k->c->cfg.sndbuf);
    sg_sock_nodelay(&k->sock, 1);
    start_exchange(k);
}

/* Opens a connection for r; on synchronous failure r is finished with the error. */
static void conn_open(origin_t *o, sg_http_creq_t *r)
{
    sg_http_client_t *c = o->c;
    conn_t *k = sg_xcalloc(1, sizeof(*k));
    k->c = c;
    k->o = o;
    k->sock.data = k;
    sg_bufq_init(&k->orphan);
    k->all_next = c->conns;
    if (c->conns) c->conns->all_prev = k;
    c->conns = k;
    sg_tentry_init(&k->te, on_conn_timeout);
    sg__hresp_init(&k->resp, c->cfg.max_header_bytes, k, on_head, on_body);
    k->state = C_CONNECTING;
    k->req = r;
    r->conn = k;
    o->nconns++;
    o->connects++;
    c->nconns++;
    int e = sg_sock_connect(c->loop, &k->sock, o->host, o->port, o->tls ? c->cfg.tls : NULL,
                            r->sni ? r->sni : (o->tls ? o->host : NULL), on_connect);
    k->sock.data = k;
    if (e < 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "connect to %s failed: %s", o->key, sg_strerror(e));
        req_ref(r);
        finish(r, e, msg);
        req_unref(r);
        return;
    }
    conn_arm(k);
}

static void dispatch(origin_t *o)
{
    sg_http_client_t *c = o->c;
    while (o->wait_head && !c->closing) {
        sg_http_creq_t *r = o->wait_head;
        if (!r->fresh_only && o->idle) {
            conn_t *k = o->idle;
            idle_remove(k);
            wait_remove(o, r);
            k->req = r;
            r->conn = k;
            o->reuses++;
            start_exchange(k);
        } else if (o->nconns < c->cfg.max_conns_per_origin) {
            wait_remove(o, r);
            conn_open(o, r);
        } else if (o->idle) {
            /* At the cap with an idle connection a retry may not use: trade it for a fresh one. */
            conn_close(o->idle);
        } else {
            break;
        }
    }
}

/* ------------------------------------------------------------------ deferred work */

static void on_kick(uv_idle_t *h)
{
    sg_http_client_t *c = h->data;
    /* Resumed connections: hand out held bytes, then read again. */
    while (c->kick_list) {
        conn_t *k = c->kick_list;
        c->kick_list = k->kick_next;
        k->kick_next = NULL;
        k->kicked = 0;
        sg_http_creq_t *r = k->req;
        if (k->state != C_ACTIVE || !r || r->paused) continue;
        if (k->resp.headers_done) {
            /* Even with nothing held: a pause at the very end of a body left the parser short
             * of its message-complete step, which a zero-byte execute() takes. */
            char *held = k->held;
            size_t n = k->held_len;
            k->held = NULL;
            k->held_len = 0;
            req_ref(r);
            feed(k, held ? held : "", n);
            free(held);
            int stop = r->done || k->req != r || r->paused;
            req_unref(r);
            if (stop) continue;
        }
        if (k->state == C_ACTIVE && sg_sock_read_start(&k->sock, on_read) == UV_EOF) {
            /* EOF was seen while paused (close-delimited end or early close): report it. */
            on_read(&k->sock, UV_EOF, NULL);
        } else {
            conn_arm(k);
        }
    }
    if (c->want_dispatch) {
        c->want_dispatch = 0;
        for (origin_t *o = c->origins; o && !c->closing; o = o->next) {
            if (!o->want_dispatch) continue;
            o->want_dispatch = 0;
            dispatch(o);
        }
    }
    if (!c->kick_list && !c->want_dispatch) uv_idle_stop(&c->kick);
}

static void kick(sg_http_client_t *c)
{
    if (c->closing) return;
    c->want_dispatch = 1;
    uv_idle_start(&c->kick, on_kick);
}

/* ------------------------------------------------------------------ finishing */

static void finish(sg_http_creq_t *r, int err, const char *msg)
{
    if (r->done) return;
    r->done = 1;
    conn_t *k = r->conn;
    if (k) {
        r->conn = NULL;
        k->req = NULL;
        if (err == 0 && !k->no_reuse) conn_to_pool(k);
        else conn_close(k);
    } else if (r->waiting) {
        wait_remove(r->o, r);
    }
    if (r->on_done) r->on_done(r, r->data, err, msg);
    req_unref(r); /* the owner's */
}

/* ------------------------------------------------------------------ public API */

static uint64_t dur(uint64_t v, uint64_t def)
{
    if (v == SG_HTTP_CLIENT_NO_TIMEOUT) return 0;
    return v ? v : def;
}

int sg_http_client_new(uv_loop_t *loop, const sg_http_client_config_t *cfg, sg_http_client_t **out)
{
    sg_http_client_t *c = sg_xcalloc(1, sizeof(*c));
    if (cfg) c->cfg = *cfg;
    sg_http_client_config_t *f = &c->cfg;
    if (!f->max_conns_per_origin) f->max_conns_per_origin = 8;
    if (!f->max_queue_per_origin) f->max_queue_per_origin = 256;
    if (!cfg || !cfg->max_idle_per_origin) f->max_idle_per_origin = 4;
    if (!f->max_header_bytes) f->max_header_bytes = 64 * 1024;
    if (!f->req_body_highwater) f->req_body_highwater = 256 * 1024;
    c->loop = loop;
    sg_tlist_init(loop, &c->t_connect, dur(f->connect_timeout_ms, 10000));
    sg_tlist_init(loop, &c->t_response, dur(f->response_timeout_ms, 30000));
    sg_tlist_init(loop, &c->t_body, dur(f->body_idle_timeout_ms, 60000));
    sg_tlist_init(loop, &c->t_idle, dur(f->idle_timeout_ms, 30000));
    uv_idle_init(loop, &c->kick);
    c->kick.data = c;
    *out = c;
    return 0;
}

static void on_part_closed(sg_http_client_t *c)
{
    if (!c->closing) return;
    if (--c->pending_closes) return;
    void (*cb)(void *) = c->close_cb;
    void *d = c->close_data;
    while (c->origins) {
        origin_t *o = c->origins;
        c->origins = o->next;
        free(o->key);
        free(o->host);
        free(o->host_hdr);
        free(o);
    }
    free(c);
    if (cb) cb(d);
}

static void on_tlist_closed(sg_tlist_t *l)
{
    on_part_closed(l->timer.data);
}

static void on_kick_closed(uv_handle_t *h)
{
    on_part_closed(h->data);
}

void sg_http_client_close(sg_http_client_t *c, void (*cb)(void *data), void *data)
{
    if (c->closing) return;
    c->closing = 1;
    c->close_cb = cb;
    c->close_data = data;
    /* Finishing a request may close its connection (never frees it synchronously). */
    for (origin_t *o = c->origins; o; o = o->next) {
        while (o->wait_head) {
            sg_http_creq_t *r = o->wait_head;
            req_ref(r);
            finish(r, SG_ECLOSED, "client closed");
            req_unref(r);
        }
    }
    /* Active requests, then every connection left (idle ones, orphaned connecting ones). */
    for (conn_t *k = c->conns, *next; k; k = next) {
        next = k->all_next;
        sg_http_creq_t *r = k->req;
        if (!r) continue;
        req_ref(r);
        finish(r, SG_ECLOSED, "client closed");
        req_unref(r);
        next = c->conns; /* the list changed under us; restart (closed conns left it) */
    }
    while (c->conns) conn_close(c->conns);
    /* Count: 4 tlists + the idle handle + every connection not yet freed. */
    c->pending_closes = 5 + c->nconns;
    c->t_connect.timer.data = c;
    c->t_response.timer.data = c;
    c->t_body.timer.data = c;
    c->t_idle.timer.data = c;
    sg_tlist_close(&c->t_connect, on_tlist_closed);
    sg_tlist_close(&c->t_response, on_tlist_closed);
    sg_tlist_close(&c->t_body, on_tlist_closed);
    sg_tlist_close(&c->t_idle, on_tlist_closed);
    uv_close((uv_handle_t *)&c->kick, on_kick_closed);
    /* Origins are freed with the client: a callback chain that closed the client may still be
     * walking them (dispatch). */
}

void sg_http_client_stats(const sg_http_client_t *c, const char *origin, sg_http_client_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    for (const origin_t *o = c->origins; o; o = o->next) {
        if (origin && strcmp(origin, o->key) != 0) continue;
        st->connects += o->connects;
        st->reuses += o->reuses;
        st->retries += o->retries;
        st->conns_open += o->nconns;
        st->conns_idle += o->nidle;
        st->queued += o->nwait;
    }
}

int sg_http_request(sg_http_client_t *c, const sg_http_creq_opts_t *opt, sg_http_creq_t **out)
{
    if (c->closing) return SG_ECLOSED;
    if (!opt || !opt->method || !opt->origin || !opt->on_done || !opt->method[0]) return SG_EINVAL;
    if (opt->target && opt->target[0] != '/' && opt->target[0] != '*') return SG_EINVAL;
    if (opt->stream_body && (opt->body || opt->body_buf)) return SG_EINVAL;
    for (const char *m = opt->method; *m; m++)
        if (*m <= ' ' || *m >= 127) return SG_EINVAL;
    if (opt->target)
        for (const char *t = opt->target; *t; t++)
            if (*t <= ' ' || *t >= 127) return SG_EINVAL;
    /* No CR / LF / NUL smuggled into the head through a header the caller forwards. */
    if (opt->headers)
        for (size_t i = 0; i < opt->headers->n; i++) {
            const sg_hdr_t *h = &opt->headers->v[i];
            if (!h->name[0] || strpbrk(h->name, "\r\n: \t") || strpbrk(h->value, "\r\n"))
                return SG_EINVAL;
        }
    int err = 0;
    origin_t *o = origin_get(c, opt->origin, &err);
    if (!o) return err;
    unsigned avail = o->nidle + (c->cfg.max_conns_per_origin - o->nconns);
    if (o->nwait >= avail + c->cfg.max_queue_per_origin) return SG_ETOOBIG;

    sg_http_creq_t *r = sg_xcalloc(1, sizeof(*r));
    r->c = c;
    r->o = o;
    r->refs = 1;
    r->method = sg_xstrdup(opt->method);
    r->target = sg_xstrdup(opt->target ? opt->target : "/");
    r->sni = opt->sni ? sg_xstrdup(opt->sni) : NULL;
    sg_hdrs_init(&r->hdrs);
    if (opt->headers)
        for (size_t i = 0; i < opt->headers->n; i++)
            sg_hdrs_addz(&r->hdrs, opt->headers->v[i].name, opt->headers->v[i].value);
    r->req_close = sg_hdrs_has_token(&r->hdrs, "connection", "close");
    if (opt->body_buf) r->body = sg_buf_ref(opt->body_buf);
    else if (opt->body) r->body = sg_buf_from(opt->body, opt->body_len);
    r->streamed = opt->stream_body ? 1 : 0;
    r->content_length = opt->stream_body ? opt->content_length : -1;
    r->chunked = r->streamed && r->content_length < 0;
    r->ended = !r->streamed || r->content_length == 0;
    r->idempotent = method_idempotent(r->method);
    r->no_body_timeout = opt->no_body_idle_timeout ? 1 : 0;
    r->on_response = opt->on_response;
    r->on_body = opt->on_body;
    r->on_done = opt->on_done;
    r->on_drain = opt->on_drain;
    r->data = opt->data;
    sg_bufq_init(&r->out);
    build_out(r);
    wait_push(o, r, 0);
    o->want_dispatch = 1;
    kick(c);
    if (out) *out = r; /* NULL: fire-and-forget, on_done still runs */
    return 0;
}

static int body_accept(sg_http_creq_t *r, size_t n)
{
    if (r->done || r->send_failed) return SG_ECLOSED;
    if (!r->streamed || r->ended) return SG_EINVAL;
    if (r->content_length >= 0 && r->body_written + n > (uint64_t)r->content_length) return SG_EINVAL;
    if (r->out.bytes > 4 * r->c->cfg.req_body_highwater) return SG_ETOOBIG;
    return 0;
}

static int body_queued(sg_http_creq_t *r, size_t n)
{
    r->body_written += n;
    if (r->content_length >= 0 && r->body_written == (uint64_t)r->content_length) r->ended = 1;
    if (r->conn) conn_flush(r->conn);
    if (r->out.bytes > r->c->cfg.req_body_highwater && !r->ended) {
        r->want_drain = 1;
        return 1;
    }
    return 0;
}

int sg_http_creq_write_buf(sg_http_creq_t *r, sg_buf_t *b, size_t off, size_t n)
{
    int e = body_accept(r, n);
    if (e) return e;
    if (n == 0) return 0;
    if (r->chunked) {
        char line[32];
        snprintf(line, sizeof(line), "%zx\r\n", n);
        push_str(&r->out, line);
    }
    sg_bufq_push(&r->out, b, off, n);
    if (r->chunked) push_str(&r->out, "\r\n");
    return body_queued(r, n);
}

int sg_http_creq_write(sg_http_creq_t *r, const void *p, size_t n)
{
    int e = body_accept(r, n);
    if (e || n == 0) return e;
    sg_buf_t *b = sg_buf_from(p, n);
    e = sg_http_creq_write_buf(r, b, 0, n);
    sg_buf_unref(b);
    return e;
}

int sg_http_creq_end(sg_http_creq_t *r)
{
    if (r->done || r->send_failed) return SG_ECLOSED;
    if (!r->streamed) return SG_EINVAL;
    if (r->content_length >= 0) {
        if (r->body_written != (uint64_t)r->content_length) return SG_EINVAL;
        return 0; /* ended when the last byte was written */
    }
    if (r->ended) return SG_EINVAL;
    r->ended = 1;
    push_str(&r->out, "0\r\n\r\n");
    if (r->conn) conn_flush(r->conn);
    return 0;
}

size_t sg_http_creq_queued(const sg_http_creq_t *r) { return r->out.bytes; }

void sg_http_creq_pause(sg_http_creq_t *r)
{
    if (r->done || r->paused) return;
    r->paused = 1;
    conn_t *k = r->conn;
    if (k && k->state == C_ACTIVE) {
        sg_sock_read_stop(&k->sock);
        conn_arm(k);
    }
}

void sg_http_creq_resume(sg_http_creq_t *r)
{
    if (r->done || !r->paused) return;
    r->paused = 0;
    conn_t *k = r->conn;
    if (k && k->state == C_ACTIVE && !k->kicked) {
        /* Deferred: resume may be called from inside on_body, and held bytes must be
         * delivered in order, after the current callback returns. */
        k->kicked = 1;
        k->kick_next = r->c->kick_list;
        r->c->kick_list = k;
        uv_idle_start(&r->c->kick, on_kick);
    }
}

void sg_http_creq_cancel(sg_http_creq_t *r)
{
    if (r->done) return;
    req_ref(r);
    if (r->conn) r->conn->no_reuse = 1;
    finish(r, SG_ECLOSED, "cancelled");
    req_unref(r);
}

void *sg_http_creq_data(const sg_http_creq_t *r) { return r->data; }
int sg_http_creq_status(const sg_http_creq_t *r) { return r->status; }
