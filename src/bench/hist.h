/* hist.h: a bounded-memory log-linear latency histogram (HdrHistogram's layout, simplified).
 *
 * Every recorded value (any uint64_t, the bench records nanoseconds) lands in one counter:
 * values below 2*SUB are counted exactly, larger ones in buckets whose width is
 * 2^(floor(log2 v) - SUB_BITS), i.e. at most 1/SUB of the value. So a percentile read back is
 * within 1/128 (0.78 %) of the exact sample at that rank, whatever the count of samples,
 * and the memory is fixed (BH_NCOUNTS counters, ~58 KiB). min, max, count and sum are exact.
 *
 * Percentile definition (the one the unit test checks against a sorted array): the sample
 * of rank ceil(q * count) (at least 1) in ascending order; the value returned is the middle
 * of that sample's bucket, clamped to [min, max], so q = 1 gives max exactly. */
#ifndef SANDGATE_BENCH_HIST_H
#define SANDGATE_BENCH_HIST_H
#include <jansson.h>
#include <stdint.h>

#define BH_SUB_BITS 7
#define BH_SUB      (1u << BH_SUB_BITS)                    /* 128 sub-buckets per power of two */
#define BH_NCOUNTS  ((64 - BH_SUB_BITS) * BH_SUB + BH_SUB) /* index of UINT64_MAX + 1 */

typedef struct bh_hist {
    uint64_t count, min, max;
    double sum;
    uint64_t counts[BH_NCOUNTS];
} bh_hist_t;

void bh_init(bh_hist_t *h);
void bh_record(bh_hist_t *h, uint64_t v);
void bh_merge(bh_hist_t *dst, const bh_hist_t *src);
/* q in [0, 1]; 0 when empty. */
uint64_t bh_percentile(const bh_hist_t *h, double q);
/* Bucket index and bounds (exported for the tests). */
unsigned bh_index(uint64_t v);
uint64_t bh_bucket_low(unsigned idx);
uint64_t bh_bucket_high(unsigned idx); /* inclusive */
/* {"count","min","mean","p50","p90","p99","p99_9","max"}, values divided by scale (1e6: ns to
 * ms). An empty histogram gives count 0 and nulls. */
json_t *bh_to_json(const bh_hist_t *h, double scale);
/* The histogram itself, so runs of separate processes can be merged afterwards (two load
 * generators sharing one fan-out): {"count","min_ns","max_ns","buckets":[[low_ns, high_ns,
 * count], ...]} with only the non-empty buckets, ascending. A percentile of the merged
 * buckets taken as bh_percentile does (rank ceil(q * count), bucket middle clamped to
 * [min, max]) equals the merged histogram's. */
json_t *bh_buckets_json(const bh_hist_t *h);
#endif
