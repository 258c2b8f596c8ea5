/* http_client_resp.c: the HTTP client's response reader (see http_client_int.h).
 *
 * llhttp calls back with spans that may be split across reads; names and values are
 * accumulated here and committed on the *_complete callbacks. The reader never frees anything
 * from inside llhttp: hooks tell it to pause (return 1) or that the owner is gone (-1), and it
 * reports that after llhttp_execute() returns. Every message ends with HPE_PAUSED from
 * on_message_complete so the caller learns exactly where the response ended (stray bytes
 * after it make the connection unfit for reuse). */
#include "http_client_int.h"
#include "sandgate/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sg__hresp_t *H(llhttp_t *p) { return p->data; }

static int grow_append(char **s, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 64;
        while (nc < *len + n + 1) nc *= 2;
        *s = sg_xrealloc(*s, nc);
        *cap = nc;
    }
    memcpy(*s + *len, p, n);
    *len += n;
    (*s)[*len] = '\0';
    return 0;
}

static int add_head_bytes(sg__hresp_t *h, size_t n)
{
    h->head_bytes += n;
    if (h->head_bytes > h->max_header_bytes) {
        h->too_big = 1;
        h->failed = 1;
        return HPE_USER;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    sg__hresp_t *h = H(p);
    h->headers_done = 0;
    h->msg_done = 0;
    h->interim = 0;
    h->name_len = h->value_len = 0;
    sg_hdrs_reset(&h->hdrs);
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
    return add_head_bytes(H(p), n);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    sg__hresp_t *h = H(p);
    if (add_head_bytes(h, n)) return HPE_USER;
    return grow_append(&h->name, &h->name_len, &h->name_cap, at, n);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    sg__hresp_t *h = H(p);
    if (add_head_bytes(h, n)) return HPE_USER;
    return grow_append(&h->value, &h->value_len, &h->value_cap, at, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    sg__hresp_t *h = H(p);
    /* A field with an empty value never gets an on_header_value span. */
    sg_hdrs_add(&h->hdrs, h->name ? h->name : "", h->name_len, h->value ? h->value : "",
                h->value_len);
    h->name_len = h->value_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    sg__hresp_t *h = H(p);
    int st = p->status_code;
    if (st == 101) {
        snprintf(h->err, sizeof(h->err), "unexpected 101 Switching Protocols (upgrades are not supported)");
        h->failed = 1;
        return HPE_USER;
    }
    if (st < 100) {
        snprintf(h->err, sizeof(h->err), "malformed response: status code %d", st);
        h->failed = 1;
        return HPE_USER;
    }
    if (st >= 100 && st < 200) {
        /* Interim response: skip it, the real one follows on the same connection. */
        h->interim = 1;
        return 1;
    }
    h->status = st;
    h->headers_done = 1;
    int r = h->on_head ? h->on_head(h) : 0;
    if (r < 0) return HPE_USER;
    /* Responses to HEAD, 204 and 304 have no body whatever their headers say. */
    if (h->head_request || st == 204 || st == 304) return 1;
    return r == 1 ? HPE_PAUSED : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    sg__hresp_t *h = H(p);
    h->body_bytes += n;
    int r = h->on_body ? h->on_body(h, at, n) : 0;
    if (r < 0) return HPE_USER;
    return r == 1 ? HPE_PAUSED : 0;
}

static int on_message_complete(llhttp_t *p)
{
    sg__hresp_t *h = H(p);
    if (h->interim) {
        h->interim = 0;
        h->head_bytes = 0;
        return 0;
    }
    h->msg_done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void sg__hresp_init(sg__hresp_t *h, size_t max_header_bytes, void *owner,
                    sg__hresp_head_cb on_head, sg__hresp_body_cb on_body_cb)
{
    memset(h, 0, sizeof(*h));
    llhttp_init(&h->parser, HTTP_RESPONSE, &settings);
    h->parser.data = h;
    sg_hdrs_init(&h->hdrs);
    h->max_header_bytes = max_header_bytes;
    h->owner = owner;
    h->on_head = on_head;
    h->on_body = on_body_cb;
}

void sg__hresp_reset(sg__hresp_t *h, int head_request)
{
    llhttp_reset(&h->parser);
    sg_hdrs_reset(&h->hdrs);
    h->name_len = h->value_len = 0;
    h->head_bytes = 0;
    h->status = 0;
    h->head_request = head_request ? 1 : 0;
    h->headers_done = h->msg_done = h->interim = h->too_big = h->failed = 0;
    h->body_bytes = 0;
    h->err[0] = '\0';
}

void sg__hresp_free(sg__hresp_t *h)
{
    sg_hdrs_free(&h->hdrs);
    free(h->name);
    free(h->value);
    h->name = h->value = NULL;
    h->name_cap = h->value_cap = 0;
}

static int proto_error(sg__hresp_t *h, llhttp_errno_t e)
{
    if (h->too_big) {
        snprintf(h->err, sizeof(h->err), "response head larger than %zu bytes", h->max_header_bytes);
        return SG_ETOOBIG;
    }
    if (!h->err[0]) {
        const char *reason = llhttp_get_error_reason(&h->parser);
        snprintf(h->err, sizeof(h->err), "malformed response: %s (%s)", reason ? reason : "?",
                 llhttp_errno_name(e));
    }
    return SG_EPROTO;
}

int sg__hresp_execute(sg__hresp_t *h, const char *p, size_t n, size_t *used)
{
    llhttp_errno_t e = llhttp_execute(&h->parser, p, n);
    switch (e) {
    case HPE_OK:
        *used = n;
        return SG__HR_OK;
    case HPE_PAUSED: {
        const char *pos = llhttp_get_error_pos(&h->parser);
        *used = pos ? (size_t)(pos - p) : n;
        if (*used > n) *used = n;
        if (h->msg_done) return SG__HR_DONE;
        llhttp_resume(&h->parser); /* the state is saved; the next execute() goes on */
        return SG__HR_PAUSED;
    }
    case HPE_USER:
        *used = 0;
        /* HPE_USER is both "the owner went away" and our own limit checks. */
        return h->failed ? proto_error(h, e) : SG__HR_ABORT;
    default:
        *used = 0;
        return proto_error(h, e);
    }
}

int sg__hresp_finish(sg__hresp_t *h)
{
    if (h->msg_done) return SG__HR_DONE;
    llhttp_errno_t e = llhttp_finish(&h->parser);
    if (h->msg_done) return SG__HR_DONE; /* close-delimited body ended */
    if (e == HPE_USER && !h->failed) return SG__HR_ABORT;
    if (h->headers_done)
        snprintf(h->err, sizeof(h->err), "connection closed before the response body was complete");
    else
        snprintf(h->err, sizeof(h->err), "connection closed before a response was received");
    return SG_EPROTO;
}
