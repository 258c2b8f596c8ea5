/* looplag.c: the loop lag monitor (looplag.h): the timer probe, the per-iteration busy probe,
 * the window ring and the fixed-bucket histogram. Clocks: uv_hrtime() (CLOCK_MONOTONIC) for
 * everything measured; the loop's cached millisecond time only decides when the timer fires. */
#include "sandgate/looplag.h"

#include <string.h>

#include "sandgate/common.h"

/* --- histogram: values below 2*SUB are their own bucket; above, a power of two is cut into
 * SUB buckets, so a bucket is at most 1/SUB of its values wide. */

void sg_looplag_hist_reset(sg_looplag_hist_t *h)
{
    memset(h, 0, sizeof(*h));
}

unsigned sg_looplag_bucket(uint64_t v)
{
    if (v < SG_LOOPLAG_SUB) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* floor(log2 v) >= SUB_BITS */
    if (e > SG_LOOPLAG_MAX_EXP) return SG_LOOPLAG_NBUCKETS - 1;
    unsigned shift = e - SG_LOOPLAG_SUB_BITS;
    unsigned sub = (unsigned)(v >> shift) - SG_LOOPLAG_SUB;
    return SG_LOOPLAG_SUB + shift * SG_LOOPLAG_SUB + sub;
}

uint64_t sg_looplag_bucket_low(unsigned idx)
{
    if (idx < SG_LOOPLAG_SUB) return idx;
    unsigned shift = (idx - SG_LOOPLAG_SUB) / SG_LOOPLAG_SUB;
    unsigned sub = (idx - SG_LOOPLAG_SUB) % SG_LOOPLAG_SUB;
    return (uint64_t)(SG_LOOPLAG_SUB + sub) << shift;
}

uint64_t sg_looplag_bucket_high(unsigned idx)
{
    if (idx < SG_LOOPLAG_SUB) return idx;
    if (idx >= SG_LOOPLAG_NBUCKETS - 1) return UINT64_MAX; /* the last bucket takes the rest */
    unsigned shift = (idx - SG_LOOPLAG_SUB) / SG_LOOPLAG_SUB;
    return sg_looplag_bucket_low(idx) + ((uint64_t)1 << shift) - 1;
}

void sg_looplag_hist_add(sg_looplag_hist_t *h, uint64_t v)
{
    h->count++;
    h->sum += v;
    if (v > h->max) h->max = v;
    h->counts[sg_looplag_bucket(v)]++;
}

void sg_looplag_hist_merge(sg_looplag_hist_t *dst, const sg_looplag_hist_t *src)
{
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->max > dst->max) dst->max = src->max;
    for (unsigned i = 0; i < SG_LOOPLAG_NBUCKETS; i++)
        dst->counts[i] += src->counts[i];
}

uint64_t sg_looplag_hist_quantile(const sg_looplag_hist_t *h, double q)
{
    if (!h->count) return 0;
    if (q >= 1) return h->max;
    if (q < 0) q = 0;
    double r = q * (double)h->count;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r) rank++;
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < SG_LOOPLAG_NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen < rank) continue;
        uint64_t lo = sg_looplag_bucket_low(i), hi = sg_looplag_bucket_high(i);
        if (hi > h->max) hi = h->max;
        if (lo > hi) lo = hi;
        return lo + (hi - lo) / 2;
    }
    return h->max;
}

/* --- the window ring */

static void rotate(sg_looplag_t *l, uint64_t now)
{
    if (now < l->slot_start_ns + l->slot_ns) return;
    uint64_t k = (now - l->slot_start_ns) / l->slot_ns;
    uint64_t steps = k < SG_LOOPLAG_SLOTS ? k : SG_LOOPLAG_SLOTS;
    for (uint64_t i = 0; i < steps; i++) {
        l->slot = (l->slot + 1) % SG_LOOPLAG_SLOTS;
        sg_looplag_hist_reset(&l->slots[l->slot]);
        l->slot_busy_max[l->slot] = 0;
    }
    l->slot_start_ns += k * l->slot_ns;
}

void sg_looplag_record(sg_looplag_t *l, uint64_t lag_us)
{
    rotate(l, uv_hrtime());
    sg_looplag_hist_add(&l->all, lag_us);
    sg_looplag_hist_add(&l->slots[l->slot], lag_us);
}

/* --- probes */

static void on_timer(uv_timer_t *t);

static void rearm(sg_looplag_t *l)
{
    /* The loop's cached time may be a whole iteration old inside a callback; refresh it so the
     * timer is due interval_ms from now, which is what expected_ns says. (Not the loop's own
     * due time, which is in whole milliseconds: the poll sleeps interval_ms from about now, so
     * measuring from the truncated due time would add 0..1 ms to every sample.) */
    uv_update_time(l->loop);
    l->expected_ns = uv_hrtime() + l->cfg.interval_ms * 1000000u;
    uv_timer_start(&l->timer, on_timer, l->cfg.interval_ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    sg_looplag_t *l = SG_CONTAINER_OF(t, sg_looplag_t, timer);
    uint64_t now = uv_hrtime();
    /* The loop's clock is in whole milliseconds, so the timer may run up to 1 ms before
     * expected_ns when something else woke the loop: that is no lag, not a negative one. */
    uint64_t lag_ns = now > l->expected_ns ? now - l->expected_ns : 0;
    sg_looplag_record(l, lag_ns / 1000);
    rearm(l);
}

static void on_prepare(uv_prepare_t *p)
{
    sg_looplag_t *l = SG_CONTAINER_OF(p, sg_looplag_t, prepare);
    uint64_t now = uv_hrtime();
    uint64_t idle = uv_metrics_idle_time(l->loop);
    if (l->last_prepare_ns) {
        uint64_t span = now - l->last_prepare_ns, waited = idle - l->last_idle_ns;
        uint64_t busy_us = (span > waited ? span - waited : 0) / 1000;
        rotate(l, now);
        if (busy_us > l->busy_max_us) l->busy_max_us = busy_us;
        if (busy_us > l->slot_busy_max[l->slot]) l->slot_busy_max[l->slot] = busy_us;
        l->iterations++;
    }
    l->last_prepare_ns = now;
    l->last_idle_ns = idle;
}

/* --- life cycle */

void sg_looplag_config_init(sg_looplag_config_t *cfg)
{
    cfg->interval_ms = 100;
    cfg->window_ms = 60000;
    cfg->measure_busy = 1;
}

int sg_looplag_init(uv_loop_t *loop, sg_looplag_t *l, const sg_looplag_config_t *cfg)
{
    sg_looplag_config_t def;
    if (!cfg) {
        sg_looplag_config_init(&def);
        cfg = &def;
    }
    if (cfg->interval_ms == 0 || cfg->window_ms < SG_LOOPLAG_SLOTS) return SG_EINVAL;
    memset(l, 0, sizeof(*l));
    l->loop = loop;
    l->cfg = *cfg;
    l->slot_ns = cfg->window_ms * 1000000u / SG_LOOPLAG_SLOTS;
    l->slot_start_ns = uv_hrtime();
    uv_timer_init(loop, &l->timer);
    uv_prepare_init(loop, &l->prepare);
    uv_unref((uv_handle_t *)&l->timer);
    uv_unref((uv_handle_t *)&l->prepare);
    return 0;
}

int sg_looplag_start(sg_looplag_t *l)
{
    if (l->started || l->closing) return SG_EINVAL;
    l->started = 1;
    if (l->cfg.measure_busy) {
        int r = uv_loop_configure(l->loop, UV_METRICS_IDLE_TIME);
        if (r < 0) return r;
        l->idle_base_ns = uv_metrics_idle_time(l->loop);
        uv_prepare_start(&l->prepare, on_prepare);
    }
    rearm(l);
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    sg_looplag_t *l = h->data;
    if (--l->pending) return;
    if (l->close_cb) l->close_cb(l);
}

void sg_looplag_close(sg_looplag_t *l, void (*cb)(sg_looplag_t *l))
{
    if (l->closing) return;
    l->closing = 1;
    l->close_cb = cb;
    l->pending = 2;
    l->timer.data = l->prepare.data = l;
    uv_close((uv_handle_t *)&l->timer, on_closed);
    uv_close((uv_handle_t *)&l->prepare, on_closed);
}

void sg_looplag_stats(sg_looplag_t *l, sg_looplag_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    rotate(l, uv_hrtime());
    out->samples = l->all.count;
    out->sum_us = l->all.sum;
    out->max_us = l->all.max;
    out->p50_us = sg_looplag_hist_quantile(&l->all, 0.5);
    out->p99_us = sg_looplag_hist_quantile(&l->all, 0.99);

    sg_looplag_hist_t w;
    sg_looplag_hist_reset(&w);
    for (unsigned i = 0; i < SG_LOOPLAG_SLOTS; i++) {
        sg_looplag_hist_merge(&w, &l->slots[i]);
        if (l->slot_busy_max[i] > out->busy_window_max_us)
            out->busy_window_max_us = l->slot_busy_max[i];
    }
    out->window_samples = w.count;
    out->window_max_us = w.max;
    out->window_p50_us = sg_looplag_hist_quantile(&w, 0.5);
    out->window_p99_us = sg_looplag_hist_quantile(&w, 0.99);

    out->busy_max_us = l->busy_max_us;
    out->iterations = l->iterations;
    if (l->started && l->cfg.measure_busy)
        out->idle_us = (uv_metrics_idle_time(l->loop) - l->idle_base_ns) / 1000;
    out->worst_us = SG_MAX(out->max_us, out->busy_max_us);
}
