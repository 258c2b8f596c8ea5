/* fuzz_seglog.c: the segment record decoder (src/lib/seglog.c) on arbitrary file contents.
 *
 * Input layout: bytes 0..7 seed the PRNG that chooses feed sizes, the rest is a segment file.
 * Checks, by abort():
 *   - decoding the file whole and in random-sized pieces (the reader's chunking) gives the same
 *     records, the same end (error and its offset, or the partial tail left);
 *   - every record decoded re-encodes to exactly the bytes it was read from;
 *   - the file's bytes used as one event's json (and its head as the type) survive
 *     encode -> decode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"
#include "seglog_int.h"

typedef struct rec {
    uint8_t *p; /* every record's fields, then the end state */
    size_t len, cap;
} rec_t;

static void put(rec_t *r, const void *p, size_t n)
{
    if (r->len + n > r->cap) {
        r->cap = (r->len + n) * 2;
        r->p = sg_xrealloc(r->p, r->cap);
    }
    if (n) memcpy(r->p + r->len, p, n);
    r->len += n;
}

static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static void run(const uint8_t *f, size_t n, int split, rec_t *out)
{
    sg__segdec_t d;
    sg__segdec_init(&d);
    size_t at = 0;
    int rc = 0;
    const char *why = "";
    while (!rc) {
        size_t k = n - at;
        if (split) {
            uint64_t x = rnd();
            k = (x & 3) == 0 ? (size_t)(x >> 8) % 4096 : (size_t)(x >> 8) % 16;
            if (k > n - at) k = n - at;
        }
        if (at == n && k == 0) break;
        uint8_t *p;
        size_t room;
        sg__segdec_space(&d, k, &p, &room);
        if (room < k) abort();
        memcpy(p, f + at, k);
        sg__segdec_commit(&d, k);
        at += k;
        for (;;) {
            sg_seglog_rec_t r;
            int got = sg__segdec_next(&d, &r, &why);
            if (got == 0) break;
            if (got < 0) {
                rc = got;
                break;
            }
            /* the record re-encodes to the bytes it came from */
            size_t tl = strlen(r.type), sz = sg__seg_record_size(tl, r.json_len);
            if (r.off + sz > n) abort();
            uint8_t *e = sg_xmalloc(sz);
            sg__seg_encode(e, r.id, r.out_off, r.out_len, r.kind, r.stream, r.type, tl, r.json,
                           r.json_len);
            if (memcmp(e, f + r.off, sz)) abort();
            free(e);
            put(out, &r.id, sizeof r.id);
            put(out, &r.off, sizeof r.off);
            put(out, &sz, sizeof sz);
        }
        if (at == n && !rc) break;
    }
    put(out, &rc, sizeof rc);
    put(out, &d.off, sizeof d.off);
    size_t left = sg__segdec_left(&d);
    if (!rc) put(out, &left, sizeof left);
    put(out, why, strlen(why));
    sg__segdec_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8) return 0;
    memcpy(&rng, data, 8);
    rng |= 1;
    const uint8_t *f = data + 8;
    size_t n = size - 8;

    rec_t whole = {0}, part = {0};
    run(f, n, 0, &whole);
    for (int rep = 0; rep < 3; rep++) {
        part.len = 0;
        run(f, n, 1, &part);
        if (whole.len != part.len || memcmp(whole.p, part.p, whole.len)) {
            fprintf(stderr, "split reading changed the result\n");
            abort();
        }
    }
    free(whole.p);
    free(part.p);

    /* the input as an event: its head (up to a NUL, at most 255 bytes) as type, all as json */
    size_t tl = 0;
    while (tl < n && tl < SG_SEGLOG_MAX_TYPE && f[tl])
        tl++;
    char type[SG_SEGLOG_MAX_TYPE + 1];
    memcpy(type, f, tl);
    type[tl] = '\0';
    size_t sz = sg__seg_record_size(tl, n);
    uint8_t *e = sg_xmalloc(sz);
    uint64_t id = rng, out_off = rng >> 3;
    sg__seg_encode(e, id, out_off, (uint32_t)n, (int)(n & 1), (int)(n % 3), type, tl,
                   (const char *)f, n);
    sg__segdec_t d;
    sg__segdec_init(&d);
    uint8_t *p;
    size_t room;
    sg__segdec_space(&d, sz, &p, &room);
    memcpy(p, e, sz);
    sg__segdec_commit(&d, sz);
    sg_seglog_rec_t r;
    const char *why;
    if (sg__segdec_next(&d, &r, &why) != 1) abort();
    if (r.id != id || r.out_off != out_off || r.out_len != n || r.kind != (int)(n & 1) ||
        r.stream != (int)(n % 3) || strcmp(r.type, type) || r.json_len != n ||
        (n && memcmp(r.json, f, n)) || sg__segdec_left(&d))
        abort();
    sg__segdec_free(&d);
    free(e);
    return 0;
}
