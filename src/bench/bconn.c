/* bconn.c: raw HTTP/1.1 client connections for the bench (see bconn.h).
 * Map: URL parsing, request formatting, connect / read / parse / write, close. */
#include "bconn.h"

#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"

int bc_url_parse(const char *url, bc_url_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *p = url;
    if (strncmp(p, "https://", 8) == 0) {
        snprintf(err, errlen, "%s: https is not supported by the bench client", url);
        return SG_EINVAL;
    }
    if (strncmp(p, "http://", 7) == 0) p += 7;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof(out->hostport)) {
        snprintf(err, errlen, "%s: bad host", url);
        return SG_EINVAL;
    }
    memcpy(out->hostport, p, hl);
    const char *path = slash ? slash : "/";
    if (strlen(path) >= sizeof(out->path)) {
        snprintf(err, errlen, "%s: path too long", url);
        return SG_EINVAL;
    }
    strcpy(out->path, path);
    out->port = 80;
    const char *colon = strrchr(out->hostport, ':');
    size_t hostlen = hl;
    if (colon && !strchr(out->hostport, ']')) {
        out->port = atoi(colon + 1);
        hostlen = (size_t)(colon - out->hostport);
    }
    if (out->port <= 0 || out->port > 65535 || hostlen == 0 || hostlen >= sizeof(out->host)) {
        snprintf(err, errlen, "%s: bad host or port", url);
        return SG_EINVAL;
    }
    memcpy(out->host, out->hostport, hostlen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", out->port);
    int rc = getaddrinfo(out->host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "%s: cannot resolve %s: %s", url, out->host, gai_strerror(rc));
        return SG_EINVAL;
    }
    memcpy(&out->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

char *bc_request(const char *method, const bc_url_t *url, const char *extra, const char *body,
                 size_t body_len, size_t *len)
{
    char head[4096 + 2048];
    int n;
    if (body)
        n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n%s\r\n", method,
                     url->path, url->hostport, body_len, extra ? extra : "");
    else
        n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", method, url->path,
                     url->hostport, extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof(head)) return NULL;
    size_t total = (size_t)n + (body ? body_len : 0);
    char *out = sg_xmalloc(total + 1);
    memcpy(out, head, (size_t)n);
    if (body && body_len) memcpy(out + n, body, body_len);
    out[total] = 0;
    *len = total;
    return out;
}

/* ---- parsing */

static int p_on_headers(llhttp_t *p)
{
    bc_conn_t *c = p->data;
    c->status = p->status_code;
    if (c->ops->on_headers && c->ops->on_headers(c)) return HPE_USER;
    return c->closing ? HPE_USER : 0;
}

static int p_on_body(llhttp_t *p, const char *at, size_t n)
{
    bc_conn_t *c = p->data;
    if (c->ops->on_body && c->ops->on_body(c, at, n)) return HPE_USER;
    return c->closing ? HPE_USER : 0;
}

static int p_on_complete(llhttp_t *p)
{
    bc_conn_t *c = p->data;
    if (c->ops->on_complete && c->ops->on_complete(c)) return HPE_USER;
    return c->closing ? HPE_USER : 0;
}

static llhttp_settings_t g_settings;
static int g_settings_ready;

static const llhttp_settings_t *settings(void)
{
    if (!g_settings_ready) {
        llhttp_settings_init(&g_settings);
        g_settings.on_headers_complete = p_on_headers;
        g_settings.on_body = p_on_body;
        g_settings.on_message_complete = p_on_complete;
        g_settings_ready = 1;
    }
    return &g_settings;
}

/* ---- I/O */

static void on_closed(uv_handle_t *h)
{
    bc_conn_t *c = h->data;
    if (c->ops->on_close) c->ops->on_close(c);
}

void bc_close(bc_conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void fail(bc_conn_t *c, int err)
{
    if (c->closing) return;
    c->failed = 1;
    if (c->ops->on_error) c->ops->on_error(c, err);
    bc_close(c);
}

static char g_rbuf[256 * 1024];

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    b->base = g_rbuf;
    b->len = sizeof(g_rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    bc_conn_t *c = s->data;
    if (c->closing) return;
    if (n < 0) {
        if (n == UV_EOF) {
            llhttp_errno_t e = llhttp_finish(&c->parser);
            if (c->closing) return;
            (void)e;
        }
        fail(c, (int)n);
        return;
    }
    if (n == 0) return;
    c->bytes_in += (uint64_t)n;
    llhttp_errno_t e = llhttp_execute(&c->parser, b->base, (size_t)n);
    if (c->closing) return;
    if (e != HPE_OK) fail(c, SG_EPROTO);
}

static void on_connected(uv_connect_t *req, int status)
{
    bc_conn_t *c = req->data;
    if (c->closing) return;
    if (status < 0) {
        if (c->ops->on_connect) c->ops->on_connect(c, status);
        c->failed = 1;
        bc_close(c);
        return;
    }
    c->connected = 1;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        fail(c, rc);
        return;
    }
    if (c->ops->on_connect) c->ops->on_connect(c, 0);
}

int bc_connect(uv_loop_t *loop, bc_conn_t *c, const bc_url_t *url, const bc_ops_t *ops, void *ud)
{
    c->ops = ops;
    c->ud = ud;
    c->status = 0;
    c->connected = c->closing = c->paused = c->failed = 0;
    c->writes_pending = 0;
    c->bytes_in = 0;
    llhttp_init(&c->parser, HTTP_RESPONSE, settings());
    c->parser.data = c;
    int rc = uv_tcp_init(loop, &c->tcp);
    if (rc < 0) return rc;
    c->tcp.data = c;
    c->creq.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&url->addr, on_connected);
    if (rc < 0) {
        /* Close so the owner gets on_close as for any other failure. */
        c->failed = 1;
        bc_close(c);
        return rc;
    }
    return 0;
}

typedef struct bc_wreq {
    uv_write_t req;
    bc_conn_t *c;
    char data[];
} bc_wreq_t;

static void on_written(uv_write_t *req, int status)
{
    bc_wreq_t *w = (bc_wreq_t *)req;
    bc_conn_t *c = w->c;
    c->writes_pending--;
    free(w);
    if (status < 0 && status != UV_ECANCELED) fail(c, status);
}

int bc_write(bc_conn_t *c, const char *p, size_t n)
{
    if (c->closing || !c->connected) return SG_ECLOSED;
    bc_wreq_t *w = sg_xmalloc(sizeof(*w) + n);
    w->c = c;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        free(w);
        return rc;
    }
    c->writes_pending++;
    return 0;
}

void bc_pause(bc_conn_t *c)
{
    if (c->closing || c->paused || !c->connected) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->paused = 1;
}

void bc_resume(bc_conn_t *c)
{
    if (c->closing || !c->paused) return;
    c->paused = 0;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) fail(c, rc);
}
