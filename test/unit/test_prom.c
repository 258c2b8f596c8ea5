/* test_prom.c: the Prometheus text writer produces exactly the 0.0.4 text format.
 *
 * Every test compares the whole output with the expected text byte for byte: HELP/TYPE lines,
 * label syntax and escaping, number formatting, summaries, and that bad names append nothing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/prom.h"

static void test_counter_and_gauge(void **state)
{
    (void)state;
    sg_prom_t p;
    sg_prom_init(&p);
    assert_int_equal(sg_prom_counter(&p, "sandgate_requests_total", "Requests served.", 42), 0);
    assert_int_equal(sg_prom_gauge(&p, "sandgate_temp", "A gauge.", 0.5), 0);
    assert_int_equal(sg_prom_counter(&p, "big_total", "Max.", UINT64_MAX), 0);
    assert_string_equal(p.data, "# HELP sandgate_requests_total Requests served.\n"
                                "# TYPE sandgate_requests_total counter\n"
                                "sandgate_requests_total 42\n"
                                "# HELP sandgate_temp A gauge.\n"
                                "# TYPE sandgate_temp gauge\n"
                                "sandgate_temp 0.5\n"
                                "# HELP big_total Max.\n"
                                "# TYPE big_total counter\n"
                                "big_total 18446744073709551615\n");
    assert_int_equal(p.len, strlen(p.data));
    sg_prom_free(&p);
    assert_null(p.data);
}

static void test_labels(void **state)
{
    (void)state;
    sg_prom_t p;
    sg_prom_init(&p);
    assert_int_equal(sg_prom_family(&p, "sandgate_processes", SG_PROM_GAUGE, "Processes."), 0);
    const char *l1[] = {"state", "running", NULL};
    const char *l2[] = {"state", "exited", "tenant", "t1", NULL};
    assert_int_equal(sg_prom_sample_u64(&p, "sandgate_processes", l1, 3), 0);
    assert_int_equal(sg_prom_sample_u64(&p, "sandgate_processes", l2, 0), 0);
    const char *empty[] = {NULL};
    assert_int_equal(sg_prom_sample_f(&p, "x", empty, 1), 0); /* empty list: no braces */
    assert_string_equal(p.data, "# HELP sandgate_processes Processes.\n"
                                "# TYPE sandgate_processes gauge\n"
                                "sandgate_processes{state=\"running\"} 3\n"
                                "sandgate_processes{state=\"exited\",tenant=\"t1\"} 0\n"
                                "x 1\n");
    sg_prom_free(&p);
}

static void test_escaping(void **state)
{
    (void)state;
    sg_prom_t p;
    sg_prom_init(&p);
    /* HELP: backslash and newline escaped, a double quote is not. */
    assert_int_equal(sg_prom_family(&p, "m", SG_PROM_UNTYPED, "a \\ b\nc \"d\""), 0);
    /* Label values: backslash, double quote and newline escaped; UTF-8 passes through. */
    const char *l[] = {"path", "C:\\dir\\\"x\"\nend", "u", "h\xc3\xa9", NULL};
    assert_int_equal(sg_prom_sample_u64(&p, "m", l, 1), 0);
    assert_string_equal(p.data, "# HELP m a \\\\ b\\nc \"d\"\n"
                                "# TYPE m untyped\n"
                                "m{path=\"C:\\\\dir\\\\\\\"x\\\"\\nend\",u=\"h\xc3\xa9\"} 1\n");
    sg_prom_free(&p);

    sg_prom_init(&p);
    assert_int_equal(sg_prom_family(&p, "n", SG_PROM_COUNTER, NULL), 0); /* no help text */
    assert_string_equal(p.data, "# HELP n \n# TYPE n counter\n");
    sg_prom_free(&p);
}

static void test_numbers(void **state)
{
    (void)state;
    char b[32];
    static const struct {
        double v;
        const char *s;
    } cases[] = {
        {0, "0"},
        {1, "1"},
        {-2, "-2"},
        {0.1, "0.1"},
        {0.05, "0.05"},
        {1e-06, "1e-06"},
        {123456789, "123456789"},
        {2.5e+20, "2.5e+20"},
        {1.0 / 3, "0.3333333333333333"},
        {4096000, "4096000"},
        {-1e15, "-1000000000000000"},
        {1e300, "1e+300"},
    };
    for (size_t i = 0; i < SG_ARRAY_SIZE(cases); i++) {
        sg_prom_fmt_double(b, sizeof(b), cases[i].v);
        assert_string_equal(b, cases[i].s);
        assert_true(strtod(b, NULL) == cases[i].v);
    }
    sg_prom_fmt_double(b, sizeof(b), NAN);
    assert_string_equal(b, "NaN");
    sg_prom_fmt_double(b, sizeof(b), INFINITY);
    assert_string_equal(b, "+Inf");
    sg_prom_fmt_double(b, sizeof(b), -INFINITY);
    assert_string_equal(b, "-Inf");
}

static void test_summary(void **state)
{
    (void)state;
    sg_prom_t p;
    sg_prom_init(&p);
    const double q[] = {0.5, 0.99, 1};
    const double v[] = {0.001, 0.0125, 0.05};
    assert_int_equal(
        sg_prom_summary(&p, "sandgate_loop_lag_seconds", "Loop lag.", q, v, 3, 1.25, 400), 0);
    assert_string_equal(p.data, "# HELP sandgate_loop_lag_seconds Loop lag.\n"
                                "# TYPE sandgate_loop_lag_seconds summary\n"
                                "sandgate_loop_lag_seconds{quantile=\"0.5\"} 0.001\n"
                                "sandgate_loop_lag_seconds{quantile=\"0.99\"} 0.0125\n"
                                "sandgate_loop_lag_seconds{quantile=\"1\"} 0.05\n"
                                "sandgate_loop_lag_seconds_sum 1.25\n"
                                "sandgate_loop_lag_seconds_count 400\n");
    sg_prom_free(&p);

    /* A summary with no observations: quantiles NaN (what client libraries write). */
    sg_prom_init(&p);
    const double nan1[] = {NAN};
    assert_int_equal(sg_prom_summary(&p, "s", "", q, nan1, 1, 0, 0), 0);
    assert_string_equal(p.data, "# HELP s \n# TYPE s summary\ns{quantile=\"0.5\"} NaN\n"
                                "s_sum 0\ns_count 0\n");
    sg_prom_free(&p);
}

static void test_invalid_names(void **state)
{
    (void)state;
    assert_true(sg_prom_valid_name("a"));
    assert_true(sg_prom_valid_name("_a:b_9"));
    assert_true(sg_prom_valid_name(":x"));
    assert_false(sg_prom_valid_name(""));
    assert_false(sg_prom_valid_name(NULL));
    assert_false(sg_prom_valid_name("9a"));
    assert_false(sg_prom_valid_name("a-b"));
    assert_false(sg_prom_valid_name("a b"));
    assert_false(sg_prom_valid_name("a{"));
    assert_true(sg_prom_valid_label("state"));
    assert_true(sg_prom_valid_label("_x9"));
    assert_false(sg_prom_valid_label("__name__")); /* reserved */
    assert_false(sg_prom_valid_label("a:b"));      /* colons are for metric names only */
    assert_false(sg_prom_valid_label("1a"));
    assert_false(sg_prom_valid_label(""));

    sg_prom_t p;
    sg_prom_init(&p);
    assert_int_equal(sg_prom_family(&p, "bad-name", SG_PROM_GAUGE, "x"), SG_EINVAL);
    assert_int_equal(sg_prom_family(&p, "ok", (sg_prom_type_t)99, "x"), SG_EINVAL);
    assert_int_equal(sg_prom_counter(&p, "0bad", "x", 1), SG_EINVAL);
    assert_int_equal(sg_prom_gauge(&p, "bad name", "x", 1), SG_EINVAL);
    const char *badl[] = {"__reserved", "v", NULL};
    assert_int_equal(sg_prom_sample_u64(&p, "ok", badl, 1), SG_EINVAL);
    const char *dup[] = {"a", "1", "a", "2", NULL};
    assert_int_equal(sg_prom_sample_u64(&p, "ok", dup, 1), SG_EINVAL);
    const char *noval[] = {"a", NULL};
    assert_int_equal(sg_prom_sample_u64(&p, "ok", noval, 1), SG_EINVAL);
    const double q[] = {1.5};
    const double v[] = {1};
    assert_int_equal(sg_prom_summary(&p, "s", "x", q, v, 1, 0, 0), SG_EINVAL);
    const double qn[] = {NAN};
    assert_int_equal(sg_prom_summary(&p, "s", "x", qn, v, 1, 0, 0), SG_EINVAL);
    assert_int_equal(p.len, 0); /* nothing was appended by any of them */
    sg_prom_free(&p);
}

static void test_growth(void **state)
{
    (void)state;
    /* Many samples: the buffer grows and keeps every line intact. */
    sg_prom_t p;
    sg_prom_init(&p);
    assert_int_equal(sg_prom_family(&p, "g", SG_PROM_GAUGE, "h"), 0);
    char idx[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(idx, sizeof(idx), "%d", i);
        const char *l[] = {"i", idx, NULL};
        assert_int_equal(sg_prom_sample_u64(&p, "g", l, (uint64_t)i * 7), 0);
    }
    assert_int_equal(p.len, strlen(p.data));
    int lines = 0;
    const char *s = p.data;
    for (const char *nl; (nl = strchr(s, '\n')); s = nl + 1) {
        if (lines >= 2) {
            char want[64];
            snprintf(want, sizeof(want), "g{i=\"%d\"} %d\n", lines - 2, (lines - 2) * 7);
            assert_memory_equal(s, want, strlen(want));
        }
        lines++;
    }
    assert_int_equal(lines, 5002);
    assert_int_equal(*s, '\0'); /* ends with a newline */
    sg_prom_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
