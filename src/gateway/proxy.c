/* proxy.c: streamed reverse proxy from a gateway request to a sandbox's execd (proxy.h).
 *
 * One proxy_t per request, alive until both ends are done: the upstream exchange (on_done,
 * its last callback) and the client request (finished from on_done or on abort). Abort and
 * drain callbacks find it through the request's data pointer, cleared before it is freed. */
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sandgate/common.h"
#include "sandgate/log.h"

typedef struct proxy {
    sg_http_req_t *req;
    sg_http_creq_t *creq; /* NULL once on_done ran */
    int started;          /* response head sent to the client */
    int creq_paused;      /* upstream reading paused for the client's output */
    int body_stream;      /* the request body is being streamed upstream */
    void (*on_status)(void *ud, int status);
    void (*release)(void *ud);
    void *ud;
} proxy_t;

static const char *const hop_by_hop[] = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
};

static int named_in_connection(const sg_hdrs_t *in, const char *name)
{
    for (size_t i = 0; i < in->n; i++) {
        if (strcasecmp(in->v[i].name, "connection") != 0) continue;
        const char *p = in->v[i].value;
        size_t n = strlen(name);
        while (*p) {
            while (*p == ' ' || *p == ',' || *p == '\t')
                p++;
            const char *s = p;
            while (*p && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - s) == n && strncasecmp(s, name, n) == 0) return 1;
        }
    }
    return 0;
}

static int dropped(const sg_hdrs_t *in, const char *name, const char *const *extra, size_t nextra)
{
    for (size_t i = 0; i < SG_ARRAY_SIZE(hop_by_hop); i++)
        if (strcasecmp(name, hop_by_hop[i]) == 0) return 1;
    for (size_t i = 0; i < nextra; i++)
        if (strcasecmp(name, extra[i]) == 0) return 1;
    return named_in_connection(in, name);
}

void sg_proxy_request_headers(const sg_hdrs_t *in, sg_hdrs_t *out, const char *peer, int tls,
                              const char *access_token)
{
    static const char *const extra[] = {"authorization",  "cookie", "open-sandbox-api-key", "host",
                                        "content-length", "expect", "x-execd-access-token"};
    for (size_t i = 0; i < in->n; i++)
        if (!dropped(in, in->v[i].name, extra, SG_ARRAY_SIZE(extra)))
            sg_hdrs_addz(out, in->v[i].name, in->v[i].value);
    if (!sg_hdrs_get(out, "X-Forwarded-Proto"))
        sg_hdrs_addz(out, "X-Forwarded-Proto", tls ? "https" : "http");
    const char *host = sg_hdrs_get(in, "host");
    if (host && !sg_hdrs_get(out, "X-Forwarded-Host")) sg_hdrs_addz(out, "X-Forwarded-Host", host);
    if (!sg_hdrs_get(out, "X-Forwarded-For") && peer && strcmp(peer, "unix") != 0) {
        char ip[64];
        const char *p = peer, *end;
        if (*p == '[') {
            p++;
            end = strchr(p, ']');
        } else {
            end = strrchr(p, ':');
        }
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n < sizeof(ip)) {
            memcpy(ip, p, n);
            ip[n] = '\0';
            sg_hdrs_addz(out, "X-Forwarded-For", ip);
        }
    }
    if (access_token && *access_token) sg_hdrs_addz(out, "X-EXECD-ACCESS-TOKEN", access_token);
}

void sg_proxy_response_headers(const sg_hdrs_t *in, sg_hdrs_t *out)
{
    /* Our server writes its own Date and X-Request-ID. */
    static const char *const extra[] = {"date", "x-request-id"};
    for (size_t i = 0; i < in->n; i++)
        if (!dropped(in, in->v[i].name, extra, SG_ARRAY_SIZE(extra)))
            sg_hdrs_addz(out, in->v[i].name, in->v[i].value);
}

static void detach(proxy_t *p)
{
    sg_http_req_set_data(p->req, NULL);
    sg_http_req_on_abort(p->req, NULL);
    sg_http_req_on_drain(p->req, NULL);
}

static void on_up_response(sg_http_creq_t *r, void *data, int status, const sg_hdrs_t *hdrs)
{
    proxy_t *p = data;
    (void)r;
    sg_hdrs_t out;
    sg_hdrs_init(&out);
    sg_proxy_response_headers(hdrs, &out);
    if (p->on_status) p->on_status(p->ud, status);
    p->started = 1;
    sg_http_resp_start(p->req, status, &out);
    sg_hdrs_free(&out);
}

static void on_up_body(sg_http_creq_t *r, void *data, const char *d, size_t n)
{
    proxy_t *p = data;
    int w = sg_http_resp_write_copy(p->req, d, n);
    if (w == 1) {
        p->creq_paused = 1;
        sg_http_creq_pause(r);
    } else if (w < 0) {
        sg_http_creq_cancel(r); /* the client is gone: on_done finishes */
    }
}

static void on_up_done(sg_http_creq_t *r, void *data, int err, const char *msg)
{
    proxy_t *p = data;
    (void)r;
    p->creq = NULL;
    sg_http_req_t *req = p->req;
    detach(p);
    if (err == 0) {
        sg_http_resp_end(req);
    } else if (!p->started) {
        char m[512];
        snprintf(m, sizeof(m), "Could not reach the sandbox's execd: %s",
                 msg ? msg : sg_strerror(err));
        sg_http_respond_error(req, 502, "GENERAL::UNKNOWN_ERROR", m);
    } else {
        if (err != SG_ECLOSED) /* not our own cancel (the client went away) */
            sg_log_kv(SG_LOG_WARN, "proxy: upstream failed mid-response", "rid",
                      sg_http_req_id(req), "error", msg ? msg : sg_strerror(err), NULL);
        sg_http_req_release(req); /* cuts the connection */
    }
    if (p->release) p->release(p->ud);
    free(p);
}

static void on_up_drain(sg_http_creq_t *r, void *data)
{
    proxy_t *p = data;
    (void)r;
    if (p->body_stream) sg_http_req_resume_body(p->req);
}

static void on_req_body(sg_http_req_t *req, const char *d, size_t n, void *ud)
{
    proxy_t *p = ud;
    if (!p->creq) return;
    if (n == 0) {
        p->body_stream = 0;
        sg_http_creq_end(p->creq);
        return;
    }
    int w = sg_http_creq_write(p->creq, d, n);
    if (w == 1) {
        sg_http_req_pause_body(req);
    } else if (w < 0) {
        /* Upstream stopped taking the body (it answered early or failed): stop reading; the
         * exchange's own outcome finishes the request. */
        p->body_stream = 0;
        sg_http_req_pause_body(req);
    }
}

static void on_req_abort(sg_http_req_t *req)
{
    proxy_t *p = sg_http_req_data(req);
    if (p && p->creq) sg_http_creq_cancel(p->creq); /* on_done frees p */
}

static void on_req_drain(sg_http_req_t *req)
{
    proxy_t *p = sg_http_req_data(req);
    if (p && p->creq && p->creq_paused) {
        p->creq_paused = 0;
        sg_http_creq_resume(p->creq);
    }
}

void sg_proxy_forward(sg_http_client_t *c, sg_http_req_t *req, const sg_proxy_target_t *t)
{
    proxy_t *p = sg_xcalloc(1, sizeof(*p));
    p->req = req;
    p->on_status = t->on_status;
    p->release = t->release;
    p->ud = t->ud;
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_proxy_request_headers(sg_http_req_headers(req), &h, sg_http_req_peer(req), t->tls,
                             t->access_token);
    int has_body = sg_http_req_has_body(req);
    sg_http_creq_opts_t o;
    memset(&o, 0, sizeof(o));
    o.method = sg_http_req_method(req);
    o.origin = t->origin;
    o.target = t->target;
    o.headers = &h;
    o.stream_body = has_body;
    o.content_length = sg_http_req_content_length(req);
    o.on_response = on_up_response;
    o.on_body = on_up_body;
    o.on_done = on_up_done;
    o.on_drain = on_up_drain;
    o.data = p;
    int r = sg_http_request(c, &o, &p->creq);
    sg_hdrs_free(&h);
    if (r < 0) {
        if (p->release) p->release(p->ud);
        free(p);
        if (r == SG_ETOOBIG)
            sg_http_respond_error(req, 503, "SANDBOX::PROXY_BUSY",
                                  "too many requests waiting for this sandbox's execd");
        else
            sg_http_respond_error(req, 502, "GENERAL::UNKNOWN_ERROR",
                                  "Could not connect to the backend sandbox");
        return;
    }
    sg_http_req_set_data(req, p);
    sg_http_req_on_abort(req, on_req_abort);
    sg_http_req_on_drain(req, on_req_drain);
    if (has_body) {
        p->body_stream = 1;
        sg_http_req_read_body(req, on_req_body, p);
    }
}
