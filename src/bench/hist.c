/* hist.c: log-linear histogram (see hist.h for the layout and the percentile definition). */
#include "hist.h"

#include <math.h>
#include <string.h>

void bh_init(bh_hist_t *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

unsigned bh_index(uint64_t v)
{
    if (v < 2 * BH_SUB) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS + 1 */
    unsigned shift = e - BH_SUB_BITS;                /* >= 1 */
    return shift * BH_SUB + (unsigned)(v >> shift);  /* v >> shift in [SUB, 2*SUB) */
}

uint64_t bh_bucket_low(unsigned idx)
{
    if (idx < 2 * BH_SUB) return idx;
    unsigned shift = idx / BH_SUB - 1;
    uint64_t sub = idx - shift * BH_SUB; /* in [SUB, 2*SUB) */
    return sub << shift;
}

uint64_t bh_bucket_high(unsigned idx)
{
    if (idx < 2 * BH_SUB) return idx;
    unsigned shift = idx / BH_SUB - 1;
    return bh_bucket_low(idx) + ((uint64_t)1 << shift) - 1;
}

void bh_record(bh_hist_t *h, uint64_t v)
{
    h->counts[bh_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

void bh_merge(bh_hist_t *dst, const bh_hist_t *src)
{
    if (!src->count) return;
    for (unsigned i = 0; i < BH_NCOUNTS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
}

uint64_t bh_percentile(const bh_hist_t *h, double q)
{
    if (!h->count) return 0;
    if (q <= 0) return h->min;
    if (q >= 1) return h->max;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BH_NCOUNTS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo = bh_bucket_low(i), hi = bh_bucket_high(i);
            uint64_t mid = lo + (hi - lo) / 2;
            if (mid < h->min) mid = h->min;
            if (mid > h->max) mid = h->max;
            return mid;
        }
    }
    return h->max;
}

json_t *bh_to_json(const bh_hist_t *h, double scale)
{
    if (!h->count)
        return json_pack("{s:I,s:n,s:n,s:n,s:n,s:n,s:n,s:n}", "count", (json_int_t)0, "min", "mean",
                         "p50", "p90", "p99", "p99_9", "max");
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)h->count, "min",
                     (double)h->min / scale, "mean", h->sum / (double)h->count / scale, "p50",
                     (double)bh_percentile(h, 0.50) / scale, "p90",
                     (double)bh_percentile(h, 0.90) / scale, "p99",
                     (double)bh_percentile(h, 0.99) / scale, "p99_9",
                     (double)bh_percentile(h, 0.999) / scale, "max", (double)h->max / scale);
}

json_t *bh_buckets_json(const bh_hist_t *h)
{
    json_t *b = json_array();
    for (unsigned i = 0; i < BH_NCOUNTS; i++) {
        if (!h->counts[i]) continue;
        json_array_append_new(b,
                              json_pack("[I,I,I]", (json_int_t)bh_bucket_low(i),
                                        (json_int_t)bh_bucket_high(i), (json_int_t)h->counts[i]));
    }
    return json_pack("{s:I,s:I,s:I,s:o}", "count", (json_int_t)h->count, "min_ns",
                     (json_int_t)(h->count ? h->min : 0), "max_ns",
                     (json_int_t)(h->count ? h->max : 0), "buckets", b);
}
