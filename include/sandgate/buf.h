/* buf.h: refcounted byte chunks and queues of slices over them.
 *
 * A sg_buf_t is written once by its producer and then only read; any number of readers hold a
 * reference instead of a copy (the stream log hands the same chunk to every subscriber). The
 * last sg_buf_unref() frees it.
 *
 * A sg_bufq_t is an ordered queue of (chunk, offset, length) slices, each holding one reference.
 * It is what a connection keeps as "bytes not yet written": sg_bufq_iov() gathers the head of the
 * queue into a uv_buf_t array for one uv_write(), and sg_bufq_consume() drops what was written.
 * The iovecs point into the chunks, which the queue keeps alive until they are consumed, so the
 * queue may grow while a write of its head is in flight. */
#ifndef SANDGATE_BUF_H
#define SANDGATE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sg_buf {
    uint32_t refs;
    size_t len; /* bytes written so far */
    size_t cap;
    char data[];
} sg_buf_t;

sg_buf_t *sg_buf_new(size_t cap); /* refs = 1, len = 0 */
sg_buf_t *sg_buf_from(const void *p, size_t n);
sg_buf_t *sg_buf_ref(sg_buf_t *b);
void sg_buf_unref(sg_buf_t *b); /* NULL is fine */

typedef struct sg_slice {
    sg_buf_t *buf;
    size_t off;
    size_t len;
} sg_slice_t;

typedef struct sg_bufq {
    sg_slice_t *v; /* ring of cap slices */
    size_t head;
    size_t count;
    size_t cap;
    size_t bytes; /* total bytes queued */
    sg_buf_t *scratch; /* private chunk small copies are appended to (see push_copy) */
} sg_bufq_t;

void sg_bufq_init(sg_bufq_t *q);
void sg_bufq_reset(sg_bufq_t *q); /* drops every slice; the queue stays usable */
void sg_bufq_free(sg_bufq_t *q);  /* reset + release the ring */
/* Appends a slice of b, taking a new reference (the caller keeps its own). */
void sg_bufq_push(sg_bufq_t *q, sg_buf_t *b, size_t off, size_t len);
/* Appends a copy of p into the queue's private scratch chunk (a new one of at least 1 KiB when
 * it lacks room). Only the queue ever writes into its scratch chunk, past every slice already
 * taken from it, so the chunk can take the framing of many events interleaved with slices of
 * shared chunks (chunk sizes between log events cost a memcpy, not an allocation). The scratch
 * chunk is let go when the queue empties, so an idle queue holds no chunk. For small framing
 * bytes (headers, chunk sizes); bulk data should be pushed by reference. */
void sg_bufq_push_copy(sg_bufq_t *q, const void *p, size_t n);
/* Fills at most max iovecs, totalling at most max_bytes (0 = no byte cap), from the head.
 * Returns the count; *total gets their byte sum. */
unsigned sg_bufq_iov(const sg_bufq_t *q, uv_buf_t *iov, unsigned max, size_t max_bytes, size_t *total);
/* Drops n bytes from the head (n <= q->bytes). A queue emptied this way frees its ring and
 * scratch chunk (many idle connections then cost nothing here). */
void sg_bufq_consume(sg_bufq_t *q, size_t n);

#endif
