/* breq.c: one request per connection, collected or decoded as an execd stream (breq.h). */
#define _GNU_SOURCE /* memmem */
#include "breq.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"

/* The type of an execd event without parsing the JSON: Go writes "type" first, and our own
 * server does the same (protocol ref 2.5). Falls back to a full parse when it is elsewhere. */
static int event_type(const char *d, size_t n, char *out, size_t outlen)
{
    const char *p = memmem(d, n, "\"type\":\"", 8);
    if (!p) return -1;
    p += 8;
    size_t i = 0;
    while (p < d + n && *p != '"' && i + 1 < outlen)
        out[i++] = *p++;
    out[i] = 0;
    return 0;
}

static int64_t error_exit_code(const char *d, size_t n)
{
    json_error_t je;
    json_t *v = json_loadb(d, n, 0, &je);
    int64_t code = BREQ_NO_EXIT;
    const char *ev = json_string_value(json_object_get(json_object_get(v, "error"), "evalue"));
    if (ev && *ev) {
        char *end;
        long long x = strtoll(ev, &end, 10);
        if (!*end) code = x;
    }
    json_decref(v);
    return code;
}

static int q_on_event(void *ud, const sg_sse_msg_t *m)
{
    breq_t *q = ud;
    uint64_t now = sg_now_ns();
    char type[32];
    q->events++;
    if (!q->t_first_event) q->t_first_event = now;
    if (event_type(m->data, m->data_len, type, sizeof(type)) < 0) return 0;
    if (strcmp(type, "stdout") == 0) {
        q->out_lines++;
        q->out_bytes += m->data_len;
    } else if (strcmp(type, "stderr") == 0) {
        q->err_lines++;
        q->out_bytes += m->data_len;
    } else if (strcmp(type, "ping") == 0) {
        q->pings++;
    } else if (strcmp(type, "execution_complete") == 0 || strcmp(type, "error") == 0) {
        q->final = type[0] == 'e' && type[1] == 'x' ? 1 : 2;
        q->exit_code = q->final == 1 ? 0 : error_exit_code(m->data, m->data_len);
        q->t_final = now;
        q->complete = 1;
        return 1; /* stop decoding: the caller closes */
    }
    return 0;
}

static void q_on_connect(bc_conn_t *c, int status)
{
    breq_t *q = c->ud;
    if (status < 0) {
        if (!q->err) q->err = status;
        return;
    }
    if (q->err) {
        bc_close(c);
        return;
    }
    if (bc_write(c, q->req, q->req_len) < 0) {
        if (!q->err) q->err = SG_ECLOSED;
        bc_close(c);
    }
}

static int q_on_headers(bc_conn_t *c)
{
    breq_t *q = c->ud;
    q->status = c->status;
    q->t_headers = sg_now_ns();
    return 0;
}

static int q_on_body(bc_conn_t *c, const char *p, size_t n)
{
    breq_t *q = c->ud;
    if (q->sse && q->status >= 200 && q->status < 300) {
        int rc = sg_sse_decoder_feed(&q->dec, p, n);
        if (q->complete) {
            bc_close(c);
            return 1;
        }
        if (rc != 0) {
            if (!q->err) q->err = SG_EPROTO;
            bc_close(c);
            return 1;
        }
        return 0;
    }
    size_t room = q->body_len < BREQ_MAX_BODY ? BREQ_MAX_BODY - q->body_len : 0;
    size_t take = n < room ? n : room;
    if (take) {
        q->body = sg_xrealloc(q->body, q->body_len + take + 1);
        memcpy(q->body + q->body_len, p, take);
        q->body_len += take;
        q->body[q->body_len] = 0;
    }
    return 0;
}

static int q_on_complete(bc_conn_t *c)
{
    breq_t *q = c->ud;
    if (q->sse && q->status >= 200 && q->status < 300) {
        /* End of stream: a JSON line without its newline still counts (sse.h). */
        sg_sse_decoder_finish(&q->dec);
        if (!q->complete && !q->err) q->err = SG_EPROTO; /* stream ended without a final event */
    }
    q->complete = 1;
    if (!q->t_final) q->t_final = sg_now_ns();
    bc_close(c);
    return 1;
}

static void q_on_error(bc_conn_t *c, int err)
{
    breq_t *q = c->ud;
    if (!q->complete && !q->err) q->err = err;
}

static void q_on_close(bc_conn_t *c)
{
    breq_t *q = c->ud;
    q->t_end = sg_now_ns();
    q->wire_bytes = c->bytes_in;
    if (!q->complete && !q->err) q->err = SG_ECLOSED;
    sg_sse_decoder_free(&q->dec);
    q->done(q);
}

static const bc_ops_t q_ops = {
    .on_connect = q_on_connect,
    .on_headers = q_on_headers,
    .on_body = q_on_body,
    .on_complete = q_on_complete,
    .on_error = q_on_error,
    .on_close = q_on_close,
};

int breq_start(uv_loop_t *loop, breq_t *q, const bc_url_t *url, const char *method,
               const char *extra, const char *body, size_t body_len, int sse, breq_done_cb done,
               void *ud)
{
    free(q->req);
    free(q->body);
    memset(q, 0, sizeof(*q));
    q->sse = sse;
    q->done = done;
    q->ud = ud;
    q->exit_code = BREQ_NO_EXIT;
    q->t_start = sg_now_ns();
    sg_sse_decoder_init(&q->dec, BREQ_SSE_MAX_LINE, BREQ_SSE_MAX_EVENT, q_on_event, NULL, q);
    q->req = bc_request(method, url, extra, body, body_len, &q->req_len);
    if (!q->req) q->err = SG_ETOOBIG;
    int rc = bc_connect(loop, &q->c, url, &q_ops, q);
    if (rc < 0 && !q->err) q->err = rc;
    if (q->err && !q->c.closing) bc_close(&q->c);
    return q->err;
}

void breq_cancel(breq_t *q, int err)
{
    if (!q->err && !q->complete) q->err = err;
    bc_close(&q->c);
}

void breq_free(breq_t *q)
{
    free(q->req);
    free(q->body);
    q->req = NULL;
    q->body = NULL;
}
