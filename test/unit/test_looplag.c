/* test_looplag.c: the loop lag monitor sees a deliberate stall, reports an idle loop as idle,
 * and keeps its numbers in fixed memory.
 *
 * The stall tests block the loop thread for STALL_MS inside a timer callback and inside an I/O
 * (async) callback and assert that the per-iteration busy time is at least that long (it
 * cannot be shorter: the blocking happened inside one iteration), and that the timer probe,
 * which fires every INTERVAL_MS, was late by at least STALL_MS - INTERVAL_MS (a due time falls
 * inside the first INTERVAL_MS of the stall). The idle test asserts only on the median, with a
 * bound far above what an idle loop shows, so a busy CI machine does not make it flaky. Every
 * loop test ends with the loop closed and no handle left open; a watchdog fails a hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/looplag.h"

#define INTERVAL_MS 10
#define STALL_MS    50

typedef struct fixture {
    uv_loop_t loop;
    uv_timer_t watchdog;
    uv_timer_t stall;
    uv_timer_t stop;
    uv_async_t async;
    sg_looplag_t lag;
    sg_looplag_stats_t st;
    int closed;
} fixture_t;

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    fail_msg("watchdog: the loop did not finish");
}

static void on_lag_closed(sg_looplag_t *l)
{
    fixture_t *f = l->data;
    f->closed = 1;
}

static void on_stall(uv_timer_t *t)
{
    (void)t;
    usleep(STALL_MS * 1000);
}

static void on_async(uv_async_t *a)
{
    (void)a;
    usleep(STALL_MS * 1000);
}

static void fire_async(uv_timer_t *t)
{
    fixture_t *f = t->data;
    uv_async_send(&f->async); /* its callback runs in the poll phase, like a socket read */
}

static void on_stop(uv_timer_t *t)
{
    fixture_t *f = t->data;
    sg_looplag_stats(&f->lag, &f->st);
    sg_looplag_close(&f->lag, on_lag_closed);
    uv_close((uv_handle_t *)&f->stall, NULL);
    uv_close((uv_handle_t *)&f->stop, NULL);
    uv_close((uv_handle_t *)&f->async, NULL);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
}

/* Runs a loop with the monitor (INTERVAL_MS) for run_ms; at_ms > 0 schedules cb then. */
static void run(fixture_t *f, uint64_t at_ms, uv_timer_cb cb, uint64_t run_ms)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->watchdog);
    uv_timer_start(&f->watchdog, on_watchdog, 20000, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    sg_looplag_config_t cfg;
    sg_looplag_config_init(&cfg);
    cfg.interval_ms = INTERVAL_MS;
    assert_int_equal(sg_looplag_init(&f->loop, &f->lag, &cfg), 0);
    f->lag.data = f;
    assert_int_equal(sg_looplag_start(&f->lag), 0);
    assert_int_equal(sg_looplag_start(&f->lag), SG_EINVAL); /* once */
    uv_timer_init(&f->loop, &f->stall);
    uv_timer_init(&f->loop, &f->stop);
    uv_async_init(&f->loop, &f->async, on_async);
    uv_unref((uv_handle_t *)&f->async);
    f->stall.data = f->stop.data = f;
    if (cb) uv_timer_start(&f->stall, cb, at_ms, 0);
    uv_timer_start(&f->stop, on_stop, run_ms, 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_true(f->closed);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void test_stall_in_timer(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof(*f));
    run(f, 55, on_stall, 200);
    const sg_looplag_stats_t *s = &f->st;
    assert_true(s->busy_max_us >= STALL_MS * 1000);
    assert_true(s->busy_window_max_us >= STALL_MS * 1000);
    assert_true(s->max_us >= (STALL_MS - INTERVAL_MS) * 1000);
    assert_true(s->window_max_us == s->max_us);
    assert_true(s->worst_us >= STALL_MS * 1000);
    assert_true(s->samples >= 5);
    assert_true(s->iterations >= 5);
    /* The idle time is what the loop was not busy: at most the run minus the stall. */
    assert_true(s->idle_us <= (200 - STALL_MS) * 1000 + 5000);
    free(f);
}

static void test_stall_in_io_callback(void **state)
{
    (void)state;
    /* A prepare/check pair would see this stall as time spent "in the poll"; the busy probe
     * subtracts only the time the poll really waited. */
    fixture_t *f = malloc(sizeof(*f));
    run(f, 55, fire_async, 200);
    assert_true(f->st.busy_max_us >= STALL_MS * 1000);
    assert_true(f->st.max_us >= (STALL_MS - INTERVAL_MS) * 1000);
    free(f);
}

static void test_idle(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof(*f));
    run(f, 0, NULL, 300);
    const sg_looplag_stats_t *s = &f->st;
    assert_true(s->samples >= 10); /* ~30 at 10 ms; fewer only if the machine starves us */
    assert_true(s->samples == s->window_samples);
    /* An idle loop fires its timer within the loop clock's millisecond granularity. */
    assert_true(s->p50_us < 10000);
    assert_true(s->window_p50_us < 10000);
    assert_true(s->p50_us <= s->p99_us && s->p99_us <= s->max_us);
    /* The loop waited most of the time. */
    assert_true(s->idle_us >= 150 * 1000);
    free(f);
}

static void test_config(void **state)
{
    (void)state;
    uv_loop_t loop;
    sg_looplag_t l;
    sg_looplag_config_t cfg;
    uv_loop_init(&loop);
    sg_looplag_config_init(&cfg);
    assert_int_equal(cfg.interval_ms, 100);
    assert_int_equal(cfg.window_ms, 60000);
    assert_int_equal(cfg.measure_busy, 1);
    cfg.interval_ms = 0;
    assert_int_equal(sg_looplag_init(&loop, &l, &cfg), SG_EINVAL);
    cfg.interval_ms = 1;
    cfg.window_ms = SG_LOOPLAG_SLOTS - 1;
    assert_int_equal(sg_looplag_init(&loop, &l, &cfg), SG_EINVAL);

    /* Defaults, never started: the handles are unref'd, so the loop does not wait for them,
     * and closing works without a start. Stats are all zero. */
    assert_int_equal(sg_looplag_init(&loop, &l, NULL), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    sg_looplag_stats_t st;
    sg_looplag_stats(&l, &st);
    assert_int_equal(st.samples, 0);
    assert_int_equal(st.max_us, 0);
    assert_int_equal(st.p99_us, 0);
    assert_int_equal(st.idle_us, 0);
    sg_looplag_close(&l, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_started_monitor_does_not_keep_loop_alive(void **state)
{
    (void)state;
    uv_loop_t loop;
    sg_looplag_t l;
    uv_loop_init(&loop);
    assert_int_equal(sg_looplag_init(&loop, &l, NULL), 0);
    assert_int_equal(sg_looplag_start(&l), 0);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* returns at once */
    assert_true(uv_hrtime() - t0 < 90 * 1000000ull);    /* before the first 100 ms firing */
    sg_looplag_close(&l, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_window(void **state)
{
    (void)state;
    /* A window of 50 ms (5 slots of 10 ms): an old sample leaves the window but stays the
     * maximum since start. */
    uv_loop_t loop;
    sg_looplag_t l;
    sg_looplag_config_t cfg;
    uv_loop_init(&loop);
    sg_looplag_config_init(&cfg);
    cfg.window_ms = 50;
    assert_int_equal(sg_looplag_init(&loop, &l, &cfg), 0);
    sg_looplag_record(&l, 70000);
    sg_looplag_record(&l, 10);
    sg_looplag_stats_t st;
    sg_looplag_stats(&l, &st);
    assert_int_equal(st.window_max_us, 70000);
    assert_int_equal(st.window_samples, 2);
    usleep(60 * 1000);
    sg_looplag_record(&l, 5);
    sg_looplag_stats(&l, &st);
    assert_int_equal(st.window_samples, 1);
    assert_int_equal(st.window_max_us, 5);
    assert_int_equal(st.window_p99_us, 5);
    assert_int_equal(st.max_us, 70000);
    assert_int_equal(st.samples, 3);
    assert_int_equal(st.sum_us, 70015);
    assert_int_equal(st.worst_us, 70000);
    usleep(60 * 1000);
    sg_looplag_stats(&l, &st); /* reading alone ages the window */
    assert_int_equal(st.window_samples, 0);
    assert_int_equal(st.window_max_us, 0);
    sg_looplag_close(&l, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_buckets(void **state)
{
    (void)state;
    /* Buckets tile the value range: consecutive, no gap, no overlap, each at most 1/SUB of
     * its low value wide (above the exact range). */
    assert_int_equal(sg_looplag_bucket_low(0), 0);
    for (unsigned i = 0; i + 1 < SG_LOOPLAG_NBUCKETS; i++) {
        uint64_t lo = sg_looplag_bucket_low(i), hi = sg_looplag_bucket_high(i);
        assert_true(lo <= hi);
        assert_int_equal(sg_looplag_bucket_low(i + 1), hi + 1);
        assert_int_equal(sg_looplag_bucket(lo), i);
        assert_int_equal(sg_looplag_bucket(hi), i);
        if (lo >= 2 * SG_LOOPLAG_SUB) assert_true((hi - lo + 1) * SG_LOOPLAG_SUB <= lo);
    }
    for (uint64_t v = 0; v < 2 * SG_LOOPLAG_SUB; v++) {
        assert_int_equal(sg_looplag_bucket(v), v);
    }
    /* Past the range: the last bucket, which takes everything. */
    assert_int_equal(sg_looplag_bucket(UINT64_MAX), SG_LOOPLAG_NBUCKETS - 1);
    assert_int_equal(sg_looplag_bucket((uint64_t)1 << 40), SG_LOOPLAG_NBUCKETS - 1);
    assert_int_equal(sg_looplag_bucket_high(SG_LOOPLAG_NBUCKETS - 1), UINT64_MAX);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_quantiles(void **state)
{
    (void)state;
    sg_looplag_hist_t h;
    sg_looplag_hist_reset(&h);
    assert_int_equal(sg_looplag_hist_quantile(&h, 0.5), 0);
    assert_int_equal(sg_looplag_hist_quantile(&h, 1), 0);

    enum { N = 10000 };
    uint64_t *v = malloc(N * sizeof(*v));
    uint64_t x = 88172645463325252ull, sum = 0;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        v[i] = (x % 1000) * (x % 1000) + x % 7; /* skewed: 0 .. ~1e6 us */
        sum += v[i];
        sg_looplag_hist_add(&h, v[i]);
    }
    qsort(v, N, sizeof(*v), cmp_u64);
    assert_int_equal(h.count, N);
    assert_int_equal(h.sum, sum);
    assert_int_equal(h.max, v[N - 1]);
    static const double qs[] = {0.01, 0.25, 0.5, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < SG_ARRAY_SIZE(qs); i++) {
        size_t rank = (size_t)(qs[i] * N + 0.999999); /* ceil */
        uint64_t exact = v[rank - 1], got = sg_looplag_hist_quantile(&h, qs[i]);
        uint64_t err = got > exact ? got - exact : exact - got;
        assert_true(err * SG_LOOPLAG_SUB <= exact + SG_LOOPLAG_SUB); /* within 1/SUB */
    }
    assert_int_equal(sg_looplag_hist_quantile(&h, 1), v[N - 1]); /* the max, exactly */

    /* Merge = adding both sets. */
    sg_looplag_hist_t a, b;
    sg_looplag_hist_reset(&a);
    sg_looplag_hist_reset(&b);
    for (int i = 0; i < N; i++)
        sg_looplag_hist_add(i % 2 ? &a : &b, v[i]);
    sg_looplag_hist_merge(&a, &b);
    assert_int_equal(a.count, h.count);
    assert_int_equal(a.sum, h.sum);
    assert_int_equal(a.max, h.max);
    assert_memory_equal(a.counts, h.counts, sizeof(h.counts));
    free(v);

    /* One huge sample: q=1 is exact, the bucket midpoint never exceeds max. */
    sg_looplag_hist_reset(&h);
    sg_looplag_hist_add(&h, (uint64_t)1 << 50);
    assert_int_equal(sg_looplag_hist_quantile(&h, 1), (uint64_t)1 << 50);
    assert_true(sg_looplag_hist_quantile(&h, 0.5) <= ((uint64_t)1 << 50));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_started_monitor_does_not_keep_loop_alive),
        cmocka_unit_test(test_idle),
        cmocka_unit_test(test_stall_in_timer),
        cmocka_unit_test(test_stall_in_io_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
