/* proxy.c: /proxy/{port}/{path...} -> http://127.0.0.1:{port}/{path...}?query (2.1, 1.7).
 *
 * One sg_http_creq_t per request on the proxy's own HTTP client (created on first use; execd's
 * shared x->client keeps the library defaults, whose 8 connections per origin would make the
 * 9th concurrent stream to one port, e.g. a 9th /command SSE through /proxy/44772, wait for
 * one of the others to end). Its limits: PROXY_MAX_CONNS connections per port (then requests
 * queue, PROXY_MAX_QUEUE deep, then 503), no response timeout (as Go's ReverseProxy: the
 * client's own disconnect ends a wait). It is closed by sg__execd_proxy_stop(), which
 * sg_execd_files_stop() calls (the proxy has no lifecycle hook of its own in execd.c yet).
 * Both bodies are streamed:
 *   up:   request body pieces go to sg_http_creq_write (copied); a return of 1 pauses the
 *         request body (sg_http_req_pause_body) until the client's on_drain resumes it.
 *   down: upstream body pieces go to sg_http_resp_write_copy; a return of 1 pauses the
 *         upstream (sg_http_creq_pause) until the downstream drain callback resumes it.
 * Headers: hop-by-hop ones (Connection and what it names, Keep-Alive, Proxy-*, TE, Trailer,
 * Transfer-Encoding, Upgrade) are dropped both ways, and Expect going up (our server
 * handles 100-continue; the response's Date and X-Request-ID are our server's); Host is kept (as
 * Go's ReverseProxy does); X-Forwarded-For (appended), X-Forwarded-Proto: http and X-Forwarded-Host
 * are added. The upstream's Content-Length is passed on (fixed-length response), else the answer is
 * chunked.
 *
 * Failures: a bad port (not 1..65535) -> 400 INVALID_REQUEST_BODY; upstream unreachable or
 * failing before its head -> 502 {"code":"RUNTIME_ERROR","message":"bad gateway: ..."}; an
 * upstream failing mid-body cuts the downstream connection (the client sees a truncated
 * response, never a clean end); a downstream disconnect cancels the upstream exchange.
 * No WebSocket upgrade (the Go agent has it): Upgrade is dropped like any hop-by-hop header.
 * The body idle timeout is off for proxied responses (long polls, SSE): the downstream's own
 * disconnect ends them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "execd.h"
#include "files_int.h"
#include "sandgate/common.h"
#include "sandgate/log.h"

#define PROXY_MAX_CONNS 512
#define PROXY_MAX_QUEUE 1024
#define PROXY_MAX_IDLE  16

static sg_http_client_t *g_client;

static void on_client_closed(void *data)
{
    (void)data;
}

void sg__execd_proxy_stop(sg_execd_t *x)
{
    (void)x;
    if (g_client) sg_http_client_close(g_client, on_client_closed, NULL);
    g_client = NULL;
}

static sg_http_client_t *proxy_client(sg_execd_t *x)
{
    if (g_client) return g_client;
    sg_http_client_config_t cc;
    memset(&cc, 0, sizeof(cc));
    cc.max_conns_per_origin = PROXY_MAX_CONNS;
    cc.max_queue_per_origin = PROXY_MAX_QUEUE;
    cc.max_idle_per_origin = PROXY_MAX_IDLE;
    cc.response_timeout_ms = SG_HTTP_CLIENT_NO_TIMEOUT;
    if (sg_http_client_new(x->loop, &cc, &g_client) < 0) g_client = NULL;
    return g_client;
}

typedef struct px {
    sg_execd_t *x;
    sg_http_req_t *req;
    sg_http_creq_t *up;
    int port;
    int started;        /* downstream head sent */
    int finished;       /* downstream answered / released */
    int body_paused;    /* request body paused for the upstream */
    int up_paused;      /* upstream paused for the downstream */
    int up_body_closed; /* upstream no longer takes the request body */
    int body_ended;     /* sg_http_creq_end done */
} px_t;

static int hop_by_hop(const sg_hdrs_t *all, const char *name)
{
    static const char *const hop[] = {"Connection",
                                      "Keep-Alive",
                                      "Proxy-Connection",
                                      "Proxy-Authenticate",
                                      "Proxy-Authorization",
                                      "TE",
                                      "Trailer",
                                      "Transfer-Encoding",
                                      "Upgrade"};
    for (size_t i = 0; i < SG_ARRAY_SIZE(hop); i++)
        if (!strcasecmp(name, hop[i])) return 1;
    if (!strncasecmp(name, "Proxy-", 6)) return 1;
    return sg_hdrs_has_token(all, "Connection", name);
}

static void copy_headers(sg_hdrs_t *out, const sg_hdrs_t *in, int response)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *n = in->v[i].name;
        if (hop_by_hop(in, n)) continue;
        if (response && (!strcasecmp(n, "Date") || !strcasecmp(n, "X-Request-ID"))) continue;
        /* Our server already answered the client's 100-continue; the upstream gets the body
         * streamed as it comes, without a second handshake. */
        if (!response && !strcasecmp(n, "Expect")) continue;
        sg_hdrs_addz(out, n, in->v[i].value);
    }
}

static void px_finish(px_t *p)
{
    if (p->finished) return;
    p->finished = 1;
    sg_http_req_set_data(p->req, NULL);
}

/* ------------------------------------------------------------------ upstream callbacks */

static void up_response(sg_http_creq_t *r, void *data, int status, const sg_hdrs_t *hdrs)
{
    px_t *p = data;
    (void)r;
    if (p->finished) return;
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    copy_headers(&h, hdrs, 1);
    p->started = 1;
    if (status < 200) status = 502; /* 1xx never reach us; 101 would need an upgrade */
    if (sg_http_resp_start(p->req, status, &h) < 0) sg_http_creq_cancel(p->up);
    sg_hdrs_free(&h);
}

static void up_body(sg_http_creq_t *r, void *data, const char *b, size_t n)
{
    px_t *p = data;
    if (p->finished) return;
    int w = sg_http_resp_write_copy(p->req, b, n);
    if (w < 0) {
        sg_http_creq_cancel(r);
    } else if (w == 1 && !p->up_paused) {
        p->up_paused = 1;
        sg_http_creq_pause(r);
    }
}

static void up_done(sg_http_creq_t *r, void *data, int err, const char *msg)
{
    px_t *p = data;
    (void)r;
    p->up = NULL;
    if (!p->finished) {
        px_finish(p); /* before the answer: it may drop our last reference to req */
        if (err == 0) {
            sg_http_resp_end(p->req);
        } else if (!p->started) {
            char m[512];
            snprintf(m, sizeof(m), "bad gateway: upstream 127.0.0.1:%d: %s", p->port,
                     msg ? msg : sg_strerror(err));
            sg_http_respond_error(p->req, 502, "RUNTIME_ERROR", m);
        } else {
            sg_log(SG_LOG_INFO, "proxy to port %d cut mid-response: %s", p->port,
                   msg ? msg : sg_strerror(err));
            sg_http_req_release(p->req); /* cuts the downstream connection */
        }
    }
    free(p);
}

static void up_drain(sg_http_creq_t *r, void *data)
{
    px_t *p = data;
    (void)r;
    if (p->body_paused && !p->finished) {
        p->body_paused = 0;
        sg_http_req_resume_body(p->req);
    }
}

/* ------------------------------------------------------------------ downstream callbacks */

static void down_body(sg_http_req_t *req, const char *data, size_t len, void *ud)
{
    px_t *p = ud;
    if (!p->up || p->up_body_closed) return; /* upstream stopped reading: discard */
    if (len == 0 && p->body_ended) return;
    int w = len ? sg_http_creq_write(p->up, data, len) : sg_http_creq_end(p->up);
    if (len == 0) p->body_ended = 1;
    if (w < 0) {
        p->up_body_closed = 1; /* it answered already or went away; its answer decides */
        return;
    }
    if (w == 1 && len && !p->body_paused) {
        p->body_paused = 1;
        sg_http_req_pause_body(req);
    }
}

static void down_drain(sg_http_req_t *req)
{
    px_t *p = sg_http_req_data(req);
    if (p && p->up && p->up_paused) {
        p->up_paused = 0;
        sg_http_creq_resume(p->up);
    }
}

static void down_abort(sg_http_req_t *req)
{
    px_t *p = sg_http_req_data(req);
    if (!p || p->finished) return;
    px_finish(p);
    sg_http_req_release(req);
    if (p->up) sg_http_creq_cancel(p->up); /* up_done frees p */
}

/* ------------------------------------------------------------------ entry */

int sg_execd_route_proxy(sg_execd_t *x, sg_http_req_t *req)
{
    const char *path = sg_http_req_path(req);
    if (strncmp(path, "/proxy/", 7) != 0) return 0;
    const char *s = path + 7, *e = s;
    long port = 0;
    while (*e >= '0' && *e <= '9' && e - s < 6)
        port = port * 10 + (*e++ - '0');
    if (e == s || (*e && *e != '/') || port < 1 || port > 65535) {
        char m[300];
        snprintf(m, sizeof(m), "invalid proxy port in %.200s: expected /proxy/{1-65535}/...", path);
        sg_http_respond_error(req, 400, "INVALID_REQUEST_BODY", m);
        return 1;
    }
    const char *rest = *e ? e : "/";
    const char *q = sg_http_req_query(req);
    size_t tl = strlen(rest) + strlen(q) + 2;
    char *target = sg_xmalloc(tl);
    snprintf(target, tl, "%s%s%s", rest, *q ? "?" : "", q);
    char origin[64];
    snprintf(origin, sizeof(origin), "http://127.0.0.1:%ld", port);

    const sg_hdrs_t *in = sg_http_req_headers(req);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    copy_headers(&h, in, 0);
    sg_hdrs_del(&h, "Content-Length"); /* the client derives it from the body mode */
    const char *peer = sg_http_req_peer(req);
    char ip[80];
    snprintf(ip, sizeof(ip), "%s", peer ? peer : "");
    if (ip[0] == '[') { /* "[::1]:80" -> "::1" */
        char *b = strchr(ip, ']');
        memmove(ip, ip + 1, strlen(ip));
        if (b) *(b - 1) = 0;
    } else {
        char *c = strrchr(ip, ':');
        if (c) *c = 0;
    }
    const char *xff = sg_hdrs_get(in, "X-Forwarded-For");
    if (xff && *xff) {
        size_t n = strlen(xff) + strlen(ip) + 3;
        char *v = sg_xmalloc(n);
        snprintf(v, n, "%s, %s", xff, ip);
        sg_hdrs_set(&h, "X-Forwarded-For", v);
        free(v);
    } else if (strcmp(ip, "unix") != 0 && *ip) {
        sg_hdrs_set(&h, "X-Forwarded-For", ip);
    }
    sg_hdrs_set(&h, "X-Forwarded-Proto", "http");
    const char *host = sg_hdrs_get(in, "Host");
    if (host) sg_hdrs_set(&h, "X-Forwarded-Host", host);

    px_t *p = sg_xcalloc(1, sizeof(*p));
    p->x = x;
    p->req = req;
    p->port = (int)port;
    int has_body = sg_http_req_has_body(req);
    sg_http_creq_opts_t o;
    memset(&o, 0, sizeof(o));
    o.method = sg_http_req_method(req);
    o.origin = origin;
    o.target = target;
    o.headers = &h;
    o.stream_body = has_body;
    o.content_length = has_body ? sg_http_req_content_length(req) : 0;
    o.no_body_idle_timeout = 1;
    o.on_response = up_response;
    o.on_body = up_body;
    o.on_done = up_done;
    o.on_drain = up_drain;
    o.data = p;
    sg_http_client_t *client = proxy_client(x);
    int r = client ? sg_http_request(client, &o, &p->up) : SG_ECLOSED;
    sg_hdrs_free(&h);
    free(target);
    if (r < 0) {
        free(p);
        if (r == SG_ETOOBIG)
            sg_http_respond_error(req, 503, "RUNTIME_ERROR",
                                  "proxy: too many requests waiting for this upstream");
        else
            sg_http_respond_error(req, 502, "RUNTIME_ERROR", "bad gateway: cannot start request");
        return 1;
    }
    sg_http_req_set_data(req, p);
    sg_http_req_on_abort(req, down_abort);
    sg_http_req_on_drain(req, down_drain);
    if (has_body && sg_http_req_read_body(req, down_body, p) < 0) down_abort(req);
    return 1;
}
