/* fuzz_sse.c: the SSE decoder on arbitrary bytes.
 *
 * Input layout: byte 0 picks the bounds (small ones so the limit paths run), bytes 1..8 seed
 * the PRNG that chooses feed sizes, the rest is the stream. Checks, by abort():
 *   - decoding the stream whole and in random-sized pieces gives the same events, comments,
 *     retry value and error code;
 *   - the stream used as event data survives encode -> decode (line breaks normalised). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"
#include "sandgate/sse.h"

typedef struct rec {
    char *p; /* every event and comment, length-prefixed, in order */
    size_t len, cap;
} rec_t;

static void rec_put(rec_t *r, const void *p, size_t n)
{
    if (r->len + n + sizeof(size_t) > r->cap) {
        r->cap = (r->len + n + sizeof(size_t)) * 2;
        r->p = sg_xrealloc(r->p, r->cap);
    }
    memcpy(r->p + r->len, &n, sizeof n);
    r->len += sizeof n;
    if (n) memcpy(r->p + r->len, p, n);
    r->len += n;
}

static int on_ev(void *ud, const sg_sse_msg_t *m)
{
    rec_t *r = ud;
    if (m->data[m->data_len] != '\0' || strlen(m->id) != m->id_len) abort();
    rec_put(r, "E", 1);
    rec_put(r, m->id, m->id_len);
    rec_put(r, m->event, strlen(m->event));
    rec_put(r, m->data, m->data_len);
    rec_put(r, m->raw ? "r" : "s", 1);
    return 0;
}

static void on_comment(void *ud, const char *t, size_t n)
{
    rec_put(ud, "C", 1);
    rec_put(ud, t, n);
}

static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static int run(const uint8_t *p, size_t n, size_t max_line, size_t max_event, int split, rec_t *r, int64_t *retry)
{
    sg_sse_decoder_t d;
    sg_sse_decoder_init(&d, max_line, max_event, on_ev, on_comment, r);
    int rc = 0;
    size_t at = 0;
    while (at < n && !rc) {
        size_t k = n - at;
        if (split) {
            uint64_t x = rnd();
            k = (x & 3) == 0 ? (size_t)(x >> 8) % 64 : (size_t)(x >> 8) % 4; /* many tiny pieces, some empty */
            if (k > n - at) k = n - at;
        }
        rc = sg_sse_decoder_feed(&d, p + at, k);
        at += k;
    }
    if (!rc) rc = sg_sse_decoder_finish(&d);
    *retry = d.retry_ms;
    sg_sse_decoder_free(&d);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9) return 0;
    size_t max_line = data[0] & 0x80 ? 0 : 1 + (data[0] & 0x3f);
    size_t max_event = data[0] & 0x40 ? 0 : 1 + (data[0] & 0x3f) * 2;
    memcpy(&rng, data + 1, 8);
    rng |= 1;
    const uint8_t *p = data + 9;
    size_t n = size - 9;

    rec_t whole = {0}, part = {0};
    int64_t r1, r2;
    int rc1 = run(p, n, max_line, max_event, 0, &whole, &r1);
    for (int rep = 0; rep < 3; rep++) {
        part.len = 0;
        int rc2 = run(p, n, max_line, max_event, 1, &part, &r2);
        if (rc1 != rc2 || r1 != r2 || whole.len != part.len || (whole.len && memcmp(whole.p, part.p, whole.len))) {
            fprintf(stderr, "split changed the result: rc %d vs %d, %zu vs %zu record bytes\n", rc1, rc2, whole.len,
                    part.len);
            abort();
        }
    }
    free(whole.p);
    free(part.p);

    /* the stream as one event's data */
    sg_buf_t *b;
    if (sg_sse_encode_new(&(sg_sse_event_t){.data = (const char *)p, .data_len = n}, &b) != 0) abort();
    rec_t got = {0};
    int64_t rr;
    if (run((const uint8_t *)b->data, b->len, 0, 0, 0, &got, &rr) != 0) abort();
    char *want = sg_xmalloc(n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r') {
            want[m++] = '\n';
            if (i + 1 < n && p[i + 1] == '\n') i++;
        } else {
            want[m++] = (char)p[i];
        }
    }
    rec_t exp = {0};
    rec_put(&exp, "E", 1);
    rec_put(&exp, "", 0);
    rec_put(&exp, "message", 7);
    rec_put(&exp, want, m);
    rec_put(&exp, "s", 1);
    if (exp.len != got.len || memcmp(exp.p, got.p, exp.len)) abort();
    free(exp.p);
    free(got.p);
    free(want);
    sg_buf_unref(b);
    return 0;
}
