/* test_bench_hist.c: the bench's log-linear histogram against exact percentiles of sorted
 * arrays (uniform, exponential-ish, bimodal, constant, tiny and huge values), its bucket
 * geometry, merge, and the JSON shape; plus bc_url_parse and bench_subst_run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bconn.h"
#include "bench.h"
#include "hist.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t exact(const uint64_t *sorted, size_t n, double q)
{
    if (q >= 1) return sorted[n - 1];
    if (q <= 0) return sorted[0];
    size_t rank = (size_t)__builtin_ceil(q * (double)n);
    if (rank < 1) rank = 1;
    return sorted[rank - 1];
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void check_against_sorted(uint64_t *v, size_t n)
{
    bh_hist_t *h = malloc(sizeof(*h));
    bh_init(h);
    for (size_t i = 0; i < n; i++)
        bh_record(h, v[i]);
    qsort(v, n, sizeof(*v), cmp_u64);
    assert_int_equal(h->count, n);
    assert_int_equal(h->min, v[0]);
    assert_int_equal(h->max, v[n - 1]);
    const double qs[] = {0.0, 0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        uint64_t want = exact(v, n, qs[i]);
        uint64_t got = bh_percentile(h, qs[i]);
        uint64_t diff = got > want ? got - want : want - got;
        /* within the bucket: at most 1/256 of the value (1/128 wide, middle returned) */
        if (diff > want / 256 + 1)
            fail_msg("q=%g n=%zu want %llu got %llu", qs[i], n, (unsigned long long)want,
                     (unsigned long long)got);
    }
    free(h);
}

static void test_uniform(void **st)
{
    size_t n = 100000;
    uint64_t *v = malloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = rnd() % 10000000u; /* 0..10 ms in ns */
    check_against_sorted(v, n);
    free(v);
}

static void test_long_tail(void **st)
{
    size_t n = 50000;
    uint64_t *v = malloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        unsigned shift = (unsigned)(rnd() % 40); /* values from 1 to 2^40 */
        v[i] = 1 + (rnd() & ((1ull << shift) - 1));
    }
    check_against_sorted(v, n);
    free(v);
}

static void test_bimodal_and_small(void **st)
{
    uint64_t v[1001];
    for (size_t i = 0; i < 1000; i++)
        v[i] = i % 2 ? 150000 + i : 7 + i % 5;
    v[1000] = UINT64_MAX; /* the largest value has a bucket too */
    check_against_sorted(v, 1001);
    uint64_t one[1] = {42};
    check_against_sorted(one, 1);
    uint64_t same[300];
    for (size_t i = 0; i < 300; i++)
        same[i] = 123456789;
    check_against_sorted(same, 300);
}

static void test_small_values_exact(void **st)
{
    /* below 2*128 every value has its own bucket: percentiles are exact */
    bh_hist_t *h = malloc(sizeof(*h));
    bh_init(h);
    for (uint64_t i = 1; i <= 200; i++)
        bh_record(h, i);
    assert_int_equal(bh_percentile(h, 0.5), 100);
    assert_int_equal(bh_percentile(h, 0.99), 198);
    assert_int_equal(bh_percentile(h, 0.999), 200);
    assert_int_equal(bh_percentile(h, 0.001), 1);
    free(h);
}

static void test_geometry(void **st)
{
    /* buckets tile the whole range without gaps or overlaps, each at most 1/128 wide */
    uint64_t next = 0;
    for (unsigned i = 0; i < BH_NCOUNTS; i++) {
        assert_int_equal(bh_bucket_low(i), next);
        uint64_t hi = bh_bucket_high(i);
        assert_true(hi >= bh_bucket_low(i));
        assert_true(hi - bh_bucket_low(i) <= bh_bucket_low(i) / 128);
        assert_int_equal(bh_index(bh_bucket_low(i)), i);
        assert_int_equal(bh_index(hi), i);
        next = hi + 1;
    }
    assert_int_equal(next, 0); /* wrapped: the last bucket ends at UINT64_MAX */
    assert_int_equal(bh_index(UINT64_MAX), BH_NCOUNTS - 1);
}

static void test_merge_and_json(void **st)
{
    bh_hist_t *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *all = malloc(sizeof(*all));
    bh_init(a);
    bh_init(b);
    bh_init(all);
    for (uint64_t i = 0; i < 5000; i++) {
        uint64_t x = rnd() % 1000000;
        bh_record(i % 2 ? a : b, x);
        bh_record(all, x);
    }
    bh_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_memory_equal(a->counts, all->counts, sizeof(a->counts));
    assert_int_equal(bh_percentile(a, 0.99), bh_percentile(all, 0.99));
    json_t *j = bh_to_json(all, 1e6);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 5000);
    const char *keys[] = {"min", "mean", "p50", "p90", "p99", "p99_9", "max"};
    for (size_t i = 0; i < 7; i++)
        assert_true(json_is_real(json_object_get(j, keys[i])));
    assert_true(json_real_value(json_object_get(j, "p50")) <=
                json_real_value(json_object_get(j, "p99")));
    json_decref(j);
    /* The exported buckets sum to the count, ascend, and give back the same percentile. */
    j = bh_buckets_json(all);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 5000);
    assert_int_equal(json_integer_value(json_object_get(j, "max_ns")), (json_int_t)all->max);
    json_t *bk = json_object_get(j, "buckets");
    uint64_t total = 0, rank = (uint64_t)ceil(0.99 * 5000), p99 = 0, prev_hi = 0;
    for (size_t i = 0; i < json_array_size(bk); i++) {
        json_t *e = json_array_get(bk, i);
        uint64_t lo = (uint64_t)json_integer_value(json_array_get(e, 0));
        uint64_t hi = (uint64_t)json_integer_value(json_array_get(e, 1));
        uint64_t n = (uint64_t)json_integer_value(json_array_get(e, 2));
        assert_true(n > 0 && lo <= hi && (i == 0 || lo > prev_hi));
        prev_hi = hi;
        if (total < rank && total + n >= rank) {
            p99 = lo + (hi - lo) / 2;
            if (p99 < all->min) p99 = all->min;
            if (p99 > all->max) p99 = all->max;
        }
        total += n;
    }
    assert_int_equal(total, 5000);
    assert_int_equal(p99, bh_percentile(all, 0.99));
    json_decref(j);
    bh_init(b);
    j = bh_buckets_json(b);
    assert_int_equal(json_array_size(json_object_get(j, "buckets")), 0);
    json_decref(j);
    j = bh_to_json(b, 1e6);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 0);
    assert_true(json_is_null(json_object_get(j, "p99")));
    assert_int_equal(bh_percentile(b, 0.5), 0);
    json_decref(j);
    free(a);
    free(b);
    free(all);
}

static void test_url_and_run_id(void **st)
{
    bc_url_t u;
    char err[256];
    assert_int_equal(bc_url_parse("http://127.0.0.1:8080/sub?id=x", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 8080);
    assert_string_equal(u.path, "/sub?id=x");
    assert_string_equal(u.hostport, "127.0.0.1:8080");
    /* endpoint strings come without a scheme (OpenSandbox) */
    assert_int_equal(bc_url_parse("127.0.0.1:9/sandboxes/a/proxy/44772", &u, err, sizeof(err)), 0);
    assert_string_equal(u.path, "/sandboxes/a/proxy/44772");
    assert_int_equal(bc_url_parse("localhost", &u, err, sizeof(err)), 0);
    assert_int_equal(u.port, 80);
    assert_string_equal(u.path, "/");
    assert_true(bc_url_parse("https://127.0.0.1/", &u, err, sizeof(err)) < 0);
    assert_true(bc_url_parse("http://127.0.0.1:99999/", &u, err, sizeof(err)) < 0);
    assert_true(bc_url_parse("http:///x", &u, err, sizeof(err)) < 0);
    char *a = bench_subst_run("/sub?id=c{run}&x={run}");
    char *b = bench_subst_run("{run}");
    assert_null(strstr(a, "{run}"));
    char want[256];
    snprintf(want, sizeof(want), "/sub?id=c%s&x=%s", b, b); /* one id per process */
    assert_string_equal(a, want);
    free(a);
    free(b);
}

static void test_event_fields(void **st)
{
    int f;
    const char *plain = "{\"seq\":42,\"sched\":1000,\"sent\":1005,\"pad\":\"xxxx\"}";
    assert_int_equal(bench_event_u64(plain, strlen(plain), "seq", &f), 42);
    assert_int_equal(f, 1);
    assert_int_equal(bench_event_u64(plain, strlen(plain), "sched", &f), 1000);
    assert_int_equal(bench_event_u64(plain, strlen(plain), "sent", &f), 1005);
    /* the same body relayed as a process's stdout line inside a JSON string */
    const char *wrapped =
        "{\"type\":\"stdout\",\"text\":\"{\\\"seq\\\":7,\\\"sched\\\":1,\\\"sent\\\":2}\"}";
    assert_int_equal(bench_event_u64(wrapped, strlen(wrapped), "seq", &f), 7);
    assert_int_equal(f, 1);
    assert_int_equal(bench_event_u64(wrapped, strlen(wrapped), "sent", &f), 2);
    /* a key that only appears as part of another word or value is not a match */
    const char *other = "{\"subseq\":3,\"x\":\"seq\",\"seqs\":4}";
    bench_event_u64(other, strlen(other), "seq", &f);
    assert_int_equal(f, 0);
    /* bounded by n: a value cut off by the length is not read past it */
    assert_int_equal(bench_event_u64(plain, 5, "seq", &f), 0);
    assert_int_equal(f, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform),           cmocka_unit_test(test_long_tail),
        cmocka_unit_test(test_bimodal_and_small), cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_geometry),          cmocka_unit_test(test_merge_and_json),
        cmocka_unit_test(test_url_and_run_id),    cmocka_unit_test(test_event_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
