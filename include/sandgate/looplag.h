/* looplag.h: how late the event loop runs its callbacks, measured two ways, in fixed memory.
 *
 * Map
 *   lag (timer)   a uv_timer_t fires every interval_ms (default 100); each firing records how
 *                 late it ran: lag = now - (arm time + interval), in microseconds, clamped at
 *                 0 (the loop's millisecond clock can run it up to 1 ms early). That is the
 *                 delay any timer or I/O callback saw at that moment (Node's
 *                 monitorEventLoopDelay measures the same). Sampling at a fixed rate makes the
 *                 quantiles mean "at a random time, the loop was this late". It under-reports a
 *                 single stall: a stall that starts right after a firing and ends before the
 *                 next due time is not seen at all, and one that straddles a due time shows
 *                 only its part after that time (a 50 ms stall reads as 0..50 ms).
 *   busy (stall)  the truer measure of one stall, chosen over a uv_check/uv_prepare pair: I/O
 *                 callbacks (where request handlers run) execute inside the poll phase, between
 *                 prepare and check, so such a pair cannot tell waiting from working. Instead a
 *                 uv_prepare_t (runs once per iteration, right before the poll) reads
 *                 uv_metrics_idle_time(): busy = (time since the previous prepare) - (idle time
 *                 the poll added in between). That is the time the loop thread spent running
 *                 callbacks in one iteration, i.e. the longest any event that became ready
 *                 during it could have waited. A callback that blocks 50 ms makes an iteration
 *                 of >= 50 ms busy, whenever it happens. Under load one iteration runs many
 *                 callbacks, and busy is their sum: still the wait the last of them saw. It
 *                 costs a clock read per iteration, and enabling UV_METRICS_IDLE_TIME
 *                 (uv_loop_configure, done by sg_looplag_start, not undoable) makes libuv 1.44
 *                 try a non-blocking epoll_wait before each blocking one.
 *   storage       a log-linear histogram (16 sub-buckets per power of two, so a quantile is
 *                 within 1/16 of the true sample; values above ~19 h land in the last bucket)
 *                 for the whole run and one per window slot: the window (window_ms, default
 *                 60 s) is a ring of SG_LOOPLAG_SLOTS slots; reading merges them, so "the last
 *                 window" covers between (SLOTS-1)/SLOTS and all of window_ms. Max, sum and
 *                 count are exact. Nothing grows: ~25 KiB per monitor.
 *
 * Lifecycle (libuv style): the struct is embedded by the caller; sg_looplag_init -> start ->
 * sg_looplag_close(cb); the memory may be freed in cb. Both handles are unref'd: the monitor
 * never keeps a loop alive. Times between two uv_run() calls count as busy (run the loop once,
 * as a server does). Single-threaded: read the stats on the loop thread. */
#ifndef SANDGATE_LOOPLAG_H
#define SANDGATE_LOOPLAG_H

#include <stdint.h>
#include <uv.h>

#define SG_LOOPLAG_SUB_BITS 4
#define SG_LOOPLAG_SUB      (1u << SG_LOOPLAG_SUB_BITS)
#define SG_LOOPLAG_MAX_EXP  35 /* up to 2^36 - 1 us (~19 h) in their own bucket; above: the last */
#define SG_LOOPLAG_NBUCKETS                                                                        \
    (SG_LOOPLAG_SUB + (SG_LOOPLAG_MAX_EXP - SG_LOOPLAG_SUB_BITS + 1) * SG_LOOPLAG_SUB)
#define SG_LOOPLAG_SLOTS 5

typedef struct sg_looplag_config {
    uint64_t interval_ms; /* timer period, default 100; >= 1 */
    uint64_t window_ms;   /* "recent" window for window max and quantiles, default 60000 */
    int measure_busy;     /* per-iteration busy time (prepare + idle time), default 1 */
} sg_looplag_config_t;

typedef struct sg_looplag_hist {
    uint64_t count;
    uint64_t sum; /* us */
    uint64_t max; /* us */
    uint64_t counts[SG_LOOPLAG_NBUCKETS];
} sg_looplag_hist_t;

/* What sg_looplag_stats() reads; all times in microseconds. */
typedef struct sg_looplag_stats {
    /* timer lag since start */
    uint64_t samples;
    uint64_t sum_us;
    uint64_t max_us;
    uint64_t p50_us, p99_us;
    /* timer lag over the last window */
    uint64_t window_samples;
    uint64_t window_max_us;
    uint64_t window_p50_us, window_p99_us;
    /* busy iterations (0 when measure_busy is off) */
    uint64_t busy_max_us;        /* the longest iteration since start */
    uint64_t busy_window_max_us; /* the longest over the last window */
    uint64_t iterations;         /* iterations measured */
    uint64_t idle_us;            /* time spent waiting in the poll since start */
    /* the loop's worst stall: max(max_us, busy_max_us); the figure to quote */
    uint64_t worst_us;
} sg_looplag_stats_t;

typedef struct sg_looplag {
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_prepare_t prepare;
    sg_looplag_config_t cfg;
    uint64_t expected_ns; /* hrtime the timer is due */
    /* busy */
    uint64_t last_prepare_ns;
    uint64_t last_idle_ns;
    uint64_t idle_base_ns; /* idle time when started */
    uint64_t busy_max_us;
    uint64_t iterations;
    /* window ring */
    uint64_t slot_ns;
    uint64_t slot_start_ns;
    unsigned slot; /* the current slot */
    uint64_t slot_busy_max[SG_LOOPLAG_SLOTS];
    sg_looplag_hist_t slots[SG_LOOPLAG_SLOTS];
    sg_looplag_hist_t all;
    int started;
    int closing;
    int pending;
    void (*close_cb)(struct sg_looplag *l);
    void *data; /* the caller's */
} sg_looplag_t;

void sg_looplag_config_init(sg_looplag_config_t *cfg);
/* cfg NULL = defaults. 0 or SG_EINVAL (interval 0, window shorter than SLOTS * 1 ms). */
int sg_looplag_init(uv_loop_t *loop, sg_looplag_t *l, const sg_looplag_config_t *cfg);
int sg_looplag_start(sg_looplag_t *l);
/* Stops and closes both handles; cb (may be NULL) runs when l may be freed. */
void sg_looplag_close(sg_looplag_t *l, void (*cb)(sg_looplag_t *l));
/* Reads everything (rotating out window slots that have aged). */
void sg_looplag_stats(sg_looplag_t *l, sg_looplag_stats_t *out);
/* Records one lag sample as if the timer had measured it (tests, and callers with their own
 * probe). */
void sg_looplag_record(sg_looplag_t *l, uint64_t lag_us);

/* --- the histogram (pure; exported for the tests) */
void sg_looplag_hist_reset(sg_looplag_hist_t *h);
void sg_looplag_hist_add(sg_looplag_hist_t *h, uint64_t v);
void sg_looplag_hist_merge(sg_looplag_hist_t *dst, const sg_looplag_hist_t *src);
/* The sample of rank ceil(q * count) (>= 1), as the middle of its bucket clamped to max, so
 * q = 1 gives max exactly; 0 when empty. */
uint64_t sg_looplag_hist_quantile(const sg_looplag_hist_t *h, double q);
unsigned sg_looplag_bucket(uint64_t v);
uint64_t sg_looplag_bucket_low(unsigned idx);
uint64_t sg_looplag_bucket_high(unsigned idx); /* inclusive */

#endif
