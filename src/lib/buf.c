/* buf.c: refcounted chunks and slice queues (see buf.h). */
#include "sandgate/buf.h"
#include "sandgate/common.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define SG_BUFQ_COPY_CHUNK 1024

sg_buf_t *sg_buf_new(size_t cap)
{
    sg_buf_t *b = sg_xmalloc(sizeof(*b) + cap);
    b->refs = 1;
    b->len = 0;
    b->cap = cap;
    return b;
}

sg_buf_t *sg_buf_from(const void *p, size_t n)
{
    sg_buf_t *b = sg_buf_new(n);
    if (n) memcpy(b->data, p, n);
    b->len = n;
    return b;
}

sg_buf_t *sg_buf_ref(sg_buf_t *b)
{
    assert(b->refs > 0);
    b->refs++;
    return b;
}

void sg_buf_unref(sg_buf_t *b)
{
    if (!b) return;
    assert(b->refs > 0);
    if (--b->refs == 0) free(b);
}

void sg_bufq_init(sg_bufq_t *q)
{
    memset(q, 0, sizeof(*q));
}

static sg_slice_t *slot(const sg_bufq_t *q, size_t i)
{
    return &q->v[(q->head + i) % q->cap];
}

void sg_bufq_reset(sg_bufq_t *q)
{
    for (size_t i = 0; i < q->count; i++) sg_buf_unref(slot(q, i)->buf);
    q->head = q->count = q->bytes = 0;
    sg_buf_unref(q->scratch);
    q->scratch = NULL;
}

void sg_bufq_free(sg_bufq_t *q)
{
    sg_bufq_reset(q);
    free(q->v);
    q->v = NULL;
    q->cap = 0;
}

static void grow(sg_bufq_t *q)
{
    size_t ncap = q->cap ? q->cap * 2 : 8;
    sg_slice_t *nv = sg_xmalloc(ncap * sizeof(*nv));
    for (size_t i = 0; i < q->count; i++) nv[i] = *slot(q, i);
    free(q->v);
    q->v = nv;
    q->cap = ncap;
    q->head = 0;
}

void sg_bufq_push(sg_bufq_t *q, sg_buf_t *b, size_t off, size_t len)
{
    if (len == 0) return;
    assert(off + len <= b->len);
    if (q->count) { /* extend the tail slice when it is the same chunk, contiguous */
        sg_slice_t *t = slot(q, q->count - 1);
        if (t->buf == b && t->off + t->len == off) {
            t->len += len;
            q->bytes += len;
            return;
        }
    }
    if (q->count == q->cap) grow(q);
    sg_slice_t *s = slot(q, q->count++);
    s->buf = sg_buf_ref(b);
    s->off = off;
    s->len = len;
    q->bytes += len;
}

void sg_bufq_push_copy(sg_bufq_t *q, const void *p, size_t n)
{
    if (n == 0) return;
    sg_buf_t *b = q->scratch;
    if (!b || b->cap - b->len < n) {
        sg_buf_unref(b);
        b = q->scratch = sg_buf_new(n > SG_BUFQ_COPY_CHUNK ? n : SG_BUFQ_COPY_CHUNK);
    }
    size_t off = b->len;
    memcpy(b->data + off, p, n);
    b->len += n;
    sg_bufq_push(q, b, off, n); /* extends the tail slice when it ends at off in b */
}

unsigned sg_bufq_iov(const sg_bufq_t *q, uv_buf_t *iov, unsigned max, size_t max_bytes, size_t *total)
{
    unsigned n = 0;
    size_t sum = 0;
    for (size_t i = 0; i < q->count && n < max; i++) {
        const sg_slice_t *s = slot(q, i);
        size_t len = s->len;
        if (max_bytes && sum + len > max_bytes) {
            len = max_bytes - sum;
            if (len == 0) break;
        }
        iov[n++] = uv_buf_init(s->buf->data + s->off, (unsigned)len);
        sum += len;
    }
    if (total) *total = sum;
    return n;
}

void sg_bufq_consume(sg_bufq_t *q, size_t n)
{
    assert(n <= q->bytes);
    q->bytes -= n;
    while (n) {
        sg_slice_t *s = slot(q, 0);
        if (n < s->len) {
            s->off += n;
            s->len -= n;
            return;
        }
        n -= s->len;
        sg_buf_unref(s->buf);
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
    if (q->count == 0) { /* an idle queue holds nothing: no chunk, no ring */
        sg_buf_unref(q->scratch);
        q->scratch = NULL;
        free(q->v);
        q->v = NULL;
        q->cap = q->head = 0;
    }
}
