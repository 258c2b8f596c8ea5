/* test_buf.c: refcounted chunks and slice queues, checked against a flat byte model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandgate/buf.h"
#include "sandgate/common.h"

/* Concatenation of what sg_bufq_iov hands out (no caps). */
static size_t flatten(const sg_bufq_t *q, char *out, size_t cap)
{
    uv_buf_t iov[256];
    size_t tot;
    unsigned n = sg_bufq_iov(q, iov, 256, 0, &tot);
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        assert_true(iov[i].len > 0);
        assert_true(at + iov[i].len <= cap);
        memcpy(out + at, iov[i].base, iov[i].len);
        at += iov[i].len;
    }
    assert_int_equal(at, tot);
    return at;
}

static void assert_queue(const sg_bufq_t *q, const char *want, size_t n)
{
    char buf[8192];
    assert_int_equal(q->bytes, n);
    assert_int_equal(flatten(q, buf, sizeof buf), n);
    assert_memory_equal(buf, want, n);
}

static void test_refcounts(void **state)
{
    (void)state;
    sg_buf_t *b = sg_buf_new(16);
    assert_int_equal(b->refs, 1);
    assert_int_equal(b->len, 0);
    assert_int_equal(b->cap, 16);
    assert_ptr_equal(sg_buf_ref(b), b);
    assert_int_equal(b->refs, 2);
    sg_buf_unref(b);
    assert_int_equal(b->refs, 1);
    sg_buf_unref(b); /* freed: ASan would flag a leak otherwise, or a use after free below */
    sg_buf_unref(NULL);

    const char src[] = "hello";
    b = sg_buf_from(src, 5);
    assert_int_equal(b->len, 5);
    assert_int_equal(b->cap, 5);
    assert_ptr_not_equal(b->data, src);
    assert_memory_equal(b->data, "hello", 5);
    sg_buf_t *z = sg_buf_from(NULL, 0);
    assert_int_equal(z->len, 0);
    sg_buf_unref(z);

    /* queues hold their own references and drop them when consumed / reset / freed */
    sg_bufq_t q1, q2;
    sg_bufq_init(&q1);
    sg_bufq_init(&q2);
    sg_bufq_push(&q1, b, 0, 2);
    sg_bufq_push(&q2, b, 1, 4);
    assert_int_equal(b->refs, 3);
    sg_bufq_push(&q1, b, 2, 3); /* contiguous with the tail slice: extends it, no new ref */
    assert_int_equal(b->refs, 3);
    assert_int_equal(q1.count, 1);
    sg_bufq_push(&q1, b, 0, 1); /* not contiguous: a new slice */
    assert_int_equal(b->refs, 4);
    assert_int_equal(q1.count, 2);
    sg_bufq_push(&q1, b, 0, 0); /* empty: ignored */
    assert_int_equal(q1.count, 2);
    assert_queue(&q1, "helloh", 6);
    assert_queue(&q2, "ello", 4);
    sg_bufq_consume(&q1, 5);
    assert_int_equal(b->refs, 3);
    sg_bufq_reset(&q2);
    assert_int_equal(b->refs, 2);
    assert_int_equal(q2.bytes, 0);
    sg_bufq_push(&q2, b, 4, 1); /* still usable after reset */
    assert_queue(&q2, "o", 1);
    sg_bufq_free(&q2);
    sg_bufq_free(&q1);
    assert_int_equal(b->refs, 1);
    sg_buf_unref(b);
}

static void test_push_copy(void **state)
{
    (void)state;
    sg_bufq_t q;
    sg_bufq_init(&q);
    sg_bufq_push_copy(&q, "ab", 2);
    sg_bufq_push_copy(&q, "cd", 2);
    assert_int_equal(q.count, 1); /* packed into the same chunk */
    sg_bufq_push_copy(&q, "", 0);
    assert_int_equal(q.count, 1);
    assert_queue(&q, "abcd", 4);
    sg_buf_t *scratch = q.scratch;
    assert_non_null(scratch);

    /* a shared chunk is never written into, even with spare room; copies between shared
     * slices all land in the one scratch chunk */
    sg_buf_t *shared = sg_buf_new(64);
    memcpy(shared->data, "SH", 2);
    shared->len = 2;
    sg_bufq_push(&q, shared, 0, 2);
    sg_bufq_push_copy(&q, "gh", 2);
    sg_bufq_push(&q, shared, 0, 2);
    sg_bufq_push_copy(&q, "ij", 2);
    assert_int_equal(shared->len, 2);
    assert_int_equal(q.count, 5);
    assert_ptr_equal(q.scratch, scratch);
    assert_ptr_equal(q.v[(q.head + 2) % q.cap].buf, scratch);
    assert_ptr_equal(q.v[(q.head + 4) % q.cap].buf, scratch);
    assert_queue(&q, "abcdSHghSHij", 12);
    /* someone else holding the scratch chunk sees only its own slice, never later bytes */
    sg_buf_ref(scratch);
    size_t seen = scratch->len;
    sg_bufq_push_copy(&q, "kl", 2);
    assert_memory_equal(scratch->data, "abcdghij", seen);
    sg_buf_unref(scratch);
    /* an emptied queue lets its scratch chunk go */
    sg_bufq_consume(&q, q.bytes);
    assert_null(q.scratch);
    assert_int_equal(shared->refs, 1);
    sg_buf_unref(shared);
    sg_bufq_push_copy(&q, "mn", 2);
    assert_queue(&q, "mn", 2);
    sg_bufq_free(&q);
    assert_null(q.scratch);

    /* a copy bigger than the default chunk gets a chunk of its own size */
    char big[10000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)('a' + i % 26);
    sg_bufq_init(&q);
    sg_bufq_push_copy(&q, big, sizeof big);
    assert_int_equal(q.count, 1);
    char out[sizeof big];
    assert_int_equal(flatten(&q, out, sizeof out), sizeof big);
    assert_memory_equal(out, big, sizeof big);
    sg_bufq_free(&q);
}

static void test_iov_caps(void **state)
{
    (void)state;
    sg_bufq_t q;
    sg_bufq_init(&q);
    sg_buf_t *b = sg_buf_from("0123456789", 10);
    sg_bufq_push(&q, b, 0, 3); /* "012" */
    sg_bufq_push(&q, b, 5, 2); /* "56"  */
    sg_bufq_push(&q, b, 8, 2); /* "89"  */
    sg_buf_unref(b);
    uv_buf_t iov[4];
    size_t tot = 99;

    /* count cap */
    assert_int_equal(sg_bufq_iov(&q, iov, 2, 0, &tot), 2);
    assert_int_equal(tot, 5);
    /* byte cap inside a slice: the last iovec is cut */
    assert_int_equal(sg_bufq_iov(&q, iov, 4, 4, &tot), 2);
    assert_int_equal(tot, 4);
    assert_int_equal(iov[1].len, 1);
    assert_memory_equal(iov[1].base, "5", 1);
    /* byte cap exactly at a slice boundary: no empty iovec after it */
    assert_int_equal(sg_bufq_iov(&q, iov, 4, 5, &tot), 2);
    assert_int_equal(tot, 5);
    assert_int_equal(sg_bufq_iov(&q, iov, 4, 1, &tot), 1);
    assert_int_equal(tot, 1);
    /* cap larger than the queue */
    assert_int_equal(sg_bufq_iov(&q, iov, 4, 1000, &tot), 3);
    assert_int_equal(tot, 7);
    assert_int_equal(sg_bufq_iov(&q, iov, 0, 0, &tot), 0);
    assert_int_equal(tot, 0);
    assert_int_equal(sg_bufq_iov(&q, iov, 4, 0, NULL), 3);

    /* consume across slice boundaries, then the iovecs start mid-slice */
    sg_bufq_consume(&q, 4);
    assert_int_equal(q.count, 2);
    assert_queue(&q, "689", 3);
    sg_bufq_consume(&q, 0);
    assert_queue(&q, "689", 3);
    sg_bufq_consume(&q, 3);
    assert_int_equal(q.count, 0);
    assert_int_equal(sg_bufq_iov(&q, iov, 4, 0, &tot), 0);
    sg_bufq_free(&q);

    /* empty queue that never had a ring */
    sg_bufq_init(&q);
    assert_int_equal(sg_bufq_iov(&q, iov, 4, 0, &tot), 0);
    sg_bufq_consume(&q, 0);
    sg_bufq_free(&q);
}

/* The ring wraps (head moved by consume) and then grows while slices are queued. */
static void test_ring_growth(void **state)
{
    (void)state;
    sg_bufq_t q;
    sg_bufq_init(&q);
    sg_buf_t *chunks[40];
    char want[64];
    for (int i = 0; i < 40; i++) {
        char c = (char)('A' + (i % 26));
        chunks[i] = sg_buf_from(&c, 1);
    }
    for (int i = 0; i < 6; i++) sg_bufq_push(&q, chunks[i], 0, 1);
    assert_int_equal(q.cap, 8);
    sg_bufq_consume(&q, 5); /* head = 5 */
    for (int i = 6; i < 12; i++) sg_bufq_push(&q, chunks[i], 0, 1); /* wraps: 7 slices in 8 */
    assert_int_equal(q.cap, 8);
    assert_true(q.head + q.count > q.cap);
    /* pointers handed out before growth stay valid: they point into chunks, not the ring */
    uv_buf_t before[8];
    size_t tot;
    unsigned nb = sg_bufq_iov(&q, before, 8, 0, &tot);
    for (int i = 12; i < 40; i++) sg_bufq_push(&q, chunks[i], 0, 1); /* grows twice */
    assert_true(q.cap >= 35);
    size_t n = 0;
    for (int i = 5; i < 40; i++) want[n++] = (char)('A' + (i % 26));
    assert_queue(&q, want, n);
    for (unsigned i = 0; i < nb; i++) assert_int_equal(before[i].base[0], want[i]);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(chunks[i]->refs, i < 5 ? 1 : 2);
        sg_buf_unref(chunks[i]);
    }
    sg_bufq_free(&q);
}

/* Random pushes / copies / consumes against a flat model. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static void test_model(void **state)
{
    (void)state;
    enum { MAXB = 6000 };
    static char model[MAXB * 4];
    size_t mlen = 0; /* model = bytes queued, from model[mstart] */
    size_t mstart = 0;
    sg_bufq_t q;
    sg_bufq_init(&q);
    sg_buf_t *pool = sg_buf_new(256);
    for (int i = 0; i < 256; i++) pool->data[i] = (char)i;
    pool->len = 256;
    for (int step = 0; step < 20000; step++) {
        int op = (int)(rnd() % 4);
        if (mstart > MAXB) { /* keep the model window small */
            memmove(model, model + mstart, mlen);
            mstart = 0;
        }
        if (op == 0 && mlen < MAXB) {
            size_t off = rnd() % 256, len = rnd() % (257 - off);
            sg_bufq_push(&q, pool, off, len);
            memcpy(model + mstart + mlen, pool->data + off, len);
            mlen += len;
        } else if (op == 1 && mlen < MAXB) {
            char tmp[300];
            size_t len = rnd() % 300;
            for (size_t i = 0; i < len; i++) tmp[i] = (char)rnd();
            sg_bufq_push_copy(&q, tmp, len);
            memcpy(model + mstart + mlen, tmp, len);
            mlen += len;
        } else if (op == 2) {
            size_t n = mlen ? rnd() % (mlen + 1) : 0;
            sg_bufq_consume(&q, n);
            mstart += n;
            mlen -= n;
        } else {
            uv_buf_t iov[16];
            size_t cap = rnd() % 1000, tot;
            unsigned k = sg_bufq_iov(&q, iov, 16, cap, &tot);
            assert_true(k <= 16);
            if (cap) assert_true(tot <= cap);
            size_t at = 0;
            for (unsigned i = 0; i < k; i++) {
                assert_true(iov[i].len > 0);
                assert_memory_equal(iov[i].base, model + mstart + at, iov[i].len);
                at += iov[i].len;
            }
            assert_int_equal(at, tot);
            if (k < 16 && (!cap || cap > mlen)) assert_int_equal(tot, mlen); /* nothing held back */
        }
        assert_int_equal(q.bytes, mlen);
    }
    sg_bufq_free(&q);
    assert_int_equal(pool->refs, 1);
    sg_buf_unref(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refcounts),
        cmocka_unit_test(test_push_copy),
        cmocka_unit_test(test_iov_caps),
        cmocka_unit_test(test_ring_growth),
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
