/* sse.c: SSE encoders and the incremental decoder (see sse.h for the rules).
 *
 * Encoding runs one writer twice when needed: once counting (w.p == NULL) to size the frame,
 * once copying. Decoding copies each line into d->line (bounded by max_line) and interprets
 * it when its terminator arrives, so the result cannot depend on where feeds split it. */
#include "sandgate/sse.h"
#include "sandgate/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoding */

typedef struct writer {
    char *p; /* NULL: only count */
    size_t n;
} writer_t;

static void put(writer_t *w, const void *s, size_t n)
{
    if (w->p && n) memcpy(w->p + w->n, s, n);
    w->n += n;
}

static void puts_(writer_t *w, const char *s)
{
    put(w, s, strlen(s));
}

/* One "<name>: <segment>\n" per line of s (CR, LF and CRLF all break lines); an empty segment
 * gets "<name>:\n" since the decoder strips only one space anyway. */
static void put_lines(writer_t *w, const char *name, const char *s, size_t n)
{
    size_t start = 0;
    for (;;) {
        size_t j = start;
        while (j < n && s[j] != '\r' && s[j] != '\n') j++;
        puts_(w, name);
        if (j > start) {
            put(w, ": ", 2);
            put(w, s + start, j - start);
        } else {
            put(w, ":", 1);
        }
        put(w, "\n", 1);
        if (j >= n) break;
        if (s[j] == '\r' && j + 1 < n && s[j + 1] == '\n') j++;
        start = j + 1;
    }
}

static int check_event(const sg_sse_event_t *ev)
{
    if (ev->id && strpbrk(ev->id, "\r\n")) return SG_EINVAL; /* C string: no NUL inside */
    if (ev->event && strpbrk(ev->event, "\r\n")) return SG_EINVAL;
    if (!ev->data && ev->data_len) return SG_EINVAL;
    return 0;
}

static void write_event(writer_t *w, const sg_sse_event_t *ev)
{
    if (ev->comment) put_lines(w, "", ev->comment, strlen(ev->comment));
    int fields = 0;
    if (ev->id) {
        put_lines(w, "id", ev->id, strlen(ev->id));
        fields = 1;
    }
    if (ev->event) {
        put_lines(w, "event", ev->event, strlen(ev->event));
        fields = 1;
    }
    if (ev->retry_ms) {
        char num[16];
        int k = snprintf(num, sizeof num, "retry: %u\n", (unsigned)ev->retry_ms);
        put(w, num, (size_t)k);
        fields = 1;
    }
    if (ev->data) {
        put_lines(w, "data", ev->data, ev->data_len);
        fields = 1;
    }
    if (fields) put(w, "\n", 1);
}

int sg_sse_encode_len(const sg_sse_event_t *ev, size_t *len)
{
    int rc = check_event(ev);
    if (rc) return rc;
    writer_t w = {NULL, 0};
    write_event(&w, ev);
    *len = w.n;
    return 0;
}

int sg_sse_encode_into(sg_buf_t *b, const sg_sse_event_t *ev)
{
    size_t len;
    int rc = sg_sse_encode_len(ev, &len);
    if (rc) return rc;
    if (b->cap - b->len < len) return SG_ETOOBIG;
    writer_t w = {b->data + b->len, 0};
    write_event(&w, ev);
    b->len += w.n;
    return 0;
}

int sg_sse_encode_new(const sg_sse_event_t *ev, sg_buf_t **out)
{
    size_t len;
    int rc = sg_sse_encode_len(ev, &len);
    if (rc) return rc;
    sg_buf_t *b = sg_buf_new(len);
    writer_t w = {b->data, 0};
    write_event(&w, ev);
    b->len = w.n;
    *out = b;
    return 0;
}

int sg_sse_encode_bufq(sg_bufq_t *q, const sg_sse_event_t *ev)
{
    size_t len;
    int rc = sg_sse_encode_len(ev, &len);
    if (rc) return rc;
    /* push_copy packs small frames into the queue's tail chunk (a fresh exact-size chunk would
     * cost one slice per event); big ones are pushed as the chunk they were encoded into. */
    char small[512];
    if (len <= sizeof small) {
        writer_t w = {small, 0};
        write_event(&w, ev);
        sg_bufq_push_copy(q, small, w.n);
        return 0;
    }
    sg_buf_t *b = sg_buf_new(len);
    writer_t w = {b->data, 0};
    write_event(&w, ev);
    b->len = w.n;
    sg_bufq_push(q, b, 0, b->len);
    sg_buf_unref(b);
    return 0;
}

int sg_sse_execd_len(const char *json, size_t len, size_t *out_len)
{
    if (len == 0 || json[0] != '{') return SG_EINVAL; /* the decoder only knows objects */
    if (memchr(json, '\n', len) || memchr(json, '\r', len)) return SG_EINVAL;
    *out_len = len + 2;
    return 0;
}

int sg_sse_execd_into(sg_buf_t *b, const char *json, size_t len)
{
    size_t n;
    int rc = sg_sse_execd_len(json, len, &n);
    if (rc) return rc;
    if (b->cap - b->len < n) return SG_ETOOBIG;
    memcpy(b->data + b->len, json, len);
    memcpy(b->data + b->len + len, "\n\n", 2);
    b->len += n;
    return 0;
}

int sg_sse_execd_new(const char *json, size_t len, sg_buf_t **out)
{
    size_t n;
    int rc = sg_sse_execd_len(json, len, &n);
    if (rc) return rc;
    sg_buf_t *b = sg_buf_new(n);
    rc = sg_sse_execd_into(b, json, len);
    *out = b;
    return rc;
}

int sg_sse_execd_bufq(sg_bufq_t *q, const char *json, size_t len)
{
    size_t n;
    int rc = sg_sse_execd_len(json, len, &n);
    if (rc) return rc;
    sg_bufq_push_copy(q, json, len);
    sg_bufq_push_copy(q, "\n\n", 2);
    return 0;
}

/* ---- decoding */

static const unsigned char BOM[3] = {0xEF, 0xBB, 0xBF};

/* Makes room for need bytes plus a NUL; hard is the most the buffer may ever hold, which
 * callers have already checked need against, so growth is bounded by the limits. */
static void sb_reserve(sg_sse_strbuf_t *b, size_t need, size_t hard)
{
    if (need + 1 <= b->cap) return;
    size_t ncap = b->cap ? b->cap * 2 : 128;
    if (ncap < need + 1) ncap = need + 1;
    if (ncap > hard + 1) ncap = hard + 1;
    b->p = sg_xrealloc(b->p, ncap);
    b->cap = ncap;
}

static void sb_set(sg_sse_strbuf_t *b, const char *s, size_t n, size_t hard)
{
    sb_reserve(b, n, hard);
    if (n) memcpy(b->p, s, n);
    b->len = n;
    b->p[n] = '\0';
}

static void sb_free(sg_sse_strbuf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void sg_sse_decoder_init(sg_sse_decoder_t *d, size_t max_line, size_t max_event, sg_sse_event_cb on_event,
                         sg_sse_comment_cb on_comment, void *ud)
{
    memset(d, 0, sizeof(*d));
    d->on_event = on_event;
    d->on_comment = on_comment;
    d->ud = ud;
    d->max_line = max_line ? max_line : SG_SSE_DEFAULT_MAX_LINE;
    d->max_event = max_event ? max_event : SG_SSE_DEFAULT_MAX_EVENT;
    d->retry_ms = -1;
    /* the buffers hold a bound + 2 bytes (LF, NUL): keep that from wrapping */
    if (d->max_line > SIZE_MAX / 4) d->max_line = SIZE_MAX / 4;
    if (d->max_event > SIZE_MAX / 4) d->max_event = SIZE_MAX / 4;
}

void sg_sse_decoder_free(sg_sse_decoder_t *d)
{
    sb_free(&d->line);
    sb_free(&d->data);
    sb_free(&d->type);
    sb_free(&d->id);
}

static int emit(sg_sse_decoder_t *d, const char *data, size_t len, int raw)
{
    sg_sse_msg_t m;
    m.id = d->id.p ? d->id.p : "";
    m.id_len = d->id.len;
    m.event = (!raw && d->type.len) ? d->type.p : "message";
    m.data = data;
    m.data_len = len;
    m.raw = raw;
    int rc = d->on_event ? d->on_event(d->ud, &m) : 0;
    if (rc) d->err = rc;
    return rc;
}

static int dispatch(sg_sse_decoder_t *d)
{
    int rc = 0;
    if (d->data.len) {
        d->data.len--; /* the LF after the last data line */
        d->data.p[d->data.len] = '\0';
        rc = emit(d, d->data.p, d->data.len, 0);
    }
    d->data.len = 0;
    d->type.len = 0;
    return rc;
}

static int field_is(const char *f, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(f, name, n) == 0;
}

/* Interprets one complete line (terminator excluded), held NUL-terminated in d->line. */
static int process_line(sg_sse_decoder_t *d)
{
    const char *s = d->line.p;
    size_t n = d->line.len;
    if (n == 0) return dispatch(d);
    if (s[0] == '{') {
        if (n > d->max_event) return d->err = SG_ETOOBIG;
        return emit(d, s, n, 1);
    }
    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = (size_t)(s + n - v);
    if (vlen && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (flen == 0) {
        if (d->on_comment) d->on_comment(d->ud, v, vlen);
    } else if (field_is(s, flen, "data")) {
        if (d->data.len + vlen > d->max_event) return d->err = SG_ETOOBIG;
        sb_reserve(&d->data, d->data.len + vlen + 1, d->max_event + 1);
        memcpy(d->data.p + d->data.len, v, vlen);
        d->data.len += vlen;
        d->data.p[d->data.len++] = '\n';
        d->data.p[d->data.len] = '\0';
    } else if (field_is(s, flen, "event")) {
        sb_set(&d->type, v, vlen, d->max_line);
    } else if (field_is(s, flen, "id")) {
        if (!memchr(v, '\0', vlen)) sb_set(&d->id, v, vlen, d->max_line);
    } else if (field_is(s, flen, "retry")) {
        int64_t r = 0;
        size_t i;
        for (i = 0; i < vlen && v[i] >= '0' && v[i] <= '9'; i++) {
            if (r < INT64_MAX / 10 - 10) r = r * 10 + (v[i] - '0'); /* saturates, never overflows */
        }
        if (vlen && i == vlen) d->retry_ms = r;
    }
    return 0;
}

static int line_append(sg_sse_decoder_t *d, const char *p, size_t n)
{
    if (n > d->max_line - d->line.len) return d->err = SG_ETOOBIG;
    sb_reserve(&d->line, d->line.len + n, d->max_line);
    if (n) memcpy(d->line.p + d->line.len, p, n);
    d->line.len += n;
    d->line.p[d->line.len] = '\0';
    return 0;
}

static int feed_bytes(sg_sse_decoder_t *d, const char *p, size_t n)
{
    while (n) {
        if (d->after_cr) {
            d->after_cr = 0;
            if (*p == '\n') {
                p++;
                n--;
                continue;
            }
        }
        /* Line end: the first LF or CR (memchr twice beats a byte loop on long JSON lines). */
        const char *lf = memchr(p, '\n', n);
        size_t i = lf ? (size_t)(lf - p) : n;
        const char *cr = memchr(p, '\r', i);
        if (cr) i = (size_t)(cr - p);
        int rc = line_append(d, p, i);
        if (rc) return rc;
        if (i == n) return 0;
        d->after_cr = p[i] == '\r';
        rc = process_line(d);
        d->line.len = 0;
        if (rc) return rc;
        p += i + 1;
        n -= i + 1;
    }
    return 0;
}

/* The BOM bytes matched so far turned out not to be a BOM: they are ordinary input. */
static int bom_replay(sg_sse_decoder_t *d)
{
    unsigned k = d->bom;
    d->bom = 3;
    return k ? feed_bytes(d, (const char *)BOM, k) : 0;
}

int sg_sse_decoder_feed(sg_sse_decoder_t *d, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    if (d->err) return d->err;
    while (d->bom < 3 && n) {
        if (*p == BOM[d->bom]) {
            d->bom++;
            p++;
            n--;
        } else {
            int rc = bom_replay(d);
            if (rc) return rc;
        }
    }
    return feed_bytes(d, (const char *)p, n);
}

int sg_sse_decoder_finish(sg_sse_decoder_t *d)
{
    if (d->err) return d->err;
    if (d->bom < 3) {
        int rc = bom_replay(d);
        if (rc) return rc;
    }
    int rc = 0;
    if (d->line.len && d->line.p[0] == '{') rc = process_line(d);
    d->line.len = 0;
    d->data.len = 0;
    d->type.len = 0;
    d->after_cr = 0;
    return rc;
}
