/* fuzz_multipart.c: libFuzzer target for the multipart parser (include/sandgate/multipart.h).
 *
 * Input: byte 0 = flags (bit 0: callbacks pause on every event, bit 1: tiny limits, bit 2: also
 * parse the rest as a Content-Type value), bytes 1..4 = seed for the split points, the rest =
 * a body with boundary "XyZ". The body is parsed whole and then cut at seeded positions (and
 * byte by byte when short); the event stream, hashed so that span boundaries do not matter,
 * and the final code must be identical. Events must also come in a legal order. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"
#include "sandgate/multipart.h"

typedef struct {
    uint64_t h;
    int pause, in_part, body_end, begins;
} st_t;

static void mix(st_t *s, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        s->h = (s->h ^ b[i]) * 0x100000001b3ull;
}

static void mix_str(st_t *s, const char *p)
{
    if (p)
        mix(s, p, strlen(p) + 1);
    else
        mix(s, "\xff", 1);
}

static int on_begin(sg_mp_t *mp, const sg_mp_part_t *p, void *d)
{
    st_t *s = d;
    if (s->in_part || s->body_end) abort();
    if (p->index != (size_t)s->begins++) abort();
    s->in_part = 1;
    mix(s, "B", 1);
    mix_str(s, p->name);
    mix_str(s, p->filename);
    mix_str(s, p->content_type);
    for (size_t i = 0; i < p->nheaders; i++) {
        mix_str(s, p->headers[i].name);
        mix_str(s, p->headers[i].value);
    }
    return s->pause ? SG_MP_PAUSE : 0;
}

static int on_data(sg_mp_t *mp, const char *p, size_t n, void *d)
{
    st_t *s = d;
    if (!s->in_part || n == 0) abort();
    mix(s, p, n);
    return s->pause ? SG_MP_PAUSE : 0;
}

static int on_end(sg_mp_t *mp, void *d)
{
    st_t *s = d;
    if (!s->in_part) abort();
    s->in_part = 0;
    mix(s, "E", 1);
    return s->pause ? SG_MP_PAUSE : 0;
}

static int on_body_end(sg_mp_t *mp, void *d)
{
    st_t *s = d;
    if (s->in_part || s->body_end++) abort();
    mix(s, "Z", 1);
    return s->pause ? SG_MP_PAUSE : 0;
}

static const sg_mp_callbacks_t cbs = {on_begin, on_data, on_end, on_body_end};

static uint64_t run(const char *body, size_t len, const size_t *cuts, size_t ncuts, int pause,
                    const sg_mp_limits_t *lim)
{
    st_t s = {.h = 0xcbf29ce484222325ull, .pause = pause};
    sg_mp_t *mp;
    if (sg_mp_new(&mp, "XyZ", 3, &cbs, &s, lim)) abort();
    size_t pos = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && rc >= 0; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        for (size_t guard = 0; rc >= 0; guard++) {
            size_t used = 0;
            rc = sg_mp_feed(mp, body + pos, end - pos, &used);
            if (used > end - pos || guard > 4 * len + 64) abort();
            pos += used;
            if (rc != SG_MP_PAUSED) break;
            if (!pause) abort();
        }
        if (rc == SG_MP_PAUSED) rc = 0;
    }
    if (rc >= 0)
        for (int guard = 0; (rc = sg_mp_finish(mp)) == SG_MP_PAUSED; guard++)
            if (guard > 16) abort();
    if (rc == 0 && (!s.body_end || !sg_mp_done(mp))) abort();
    if (rc < 0 && !sg_mp_errmsg(mp)[0]) abort();
    mix(&s, &rc, sizeof(rc));
    sg_mp_free(mp);
    return s.h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5) return 0;
    int flags = data[0];
    uint32_t seed;
    memcpy(&seed, data + 1, 4);
    const char *body = (const char *)data + 5;
    size_t len = size - 5;
    sg_mp_limits_t tiny = {.max_header_bytes = 48, .max_headers = 2, .max_parts = 3};
    const sg_mp_limits_t *lim = (flags & 2) ? &tiny : NULL;
    if (flags & 4) {
        char b[SG_MP_MAX_BOUNDARY + 1], msg[128];
        size_t bl;
        if (sg_mp_boundary(body, len, b, sizeof(b), &bl, msg, sizeof(msg)) == 0) {
            if (bl == 0 || bl > SG_MP_MAX_BOUNDARY || strlen(b) != bl) abort();
            sg_mp_t *mp;
            if (sg_mp_new(&mp, b, bl, &cbs, NULL, NULL)) abort(); /* what it returns is usable */
            sg_mp_free(mp);
        } else if (!msg[0]) {
            abort();
        }
    }
    uint64_t want = run(body, len, NULL, 0, 0, lim);
    size_t ncuts = 1 + seed % 16, cuts[16];
    uint64_t r = seed | 1;
    for (size_t k = 0; k < ncuts; k++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        cuts[k] = len ? r % (len + 1) : 0;
    }
    for (size_t a = 1; a < ncuts; a++)
        for (size_t c = a; c > 0 && cuts[c - 1] > cuts[c]; c--) {
            size_t x = cuts[c];
            cuts[c] = cuts[c - 1];
            cuts[c - 1] = x;
        }
    if (run(body, len, cuts, ncuts, flags & 1, lim) != want) abort();
    if (len <= 512) {
        size_t *all = malloc((len + 1) * sizeof(*all));
        for (size_t k = 0; k < len; k++)
            all[k] = k;
        if (run(body, len, all, len, !(flags & 1), lim) != want) abort();
        free(all);
    }
    return 0;
}
