/* test_gateway_metrics.c: what GET /metrics renders from a snapshot (gwmetrics.h).
 *
 * Every field of sg_gw_stats gets a distinct value and must show up under its metric name and
 * labels; the whole text must pass a strict line-by-line check of the 0.0.4 format (each
 * sample's family declared once, HELP and TYPE before its samples, `name{labels} value`). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gwmetrics.h"
#include "sandgate/common.h"

static int name_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Reads a metric or label name at *s; returns its length (0: none). */
static size_t read_name(const char *s, int label)
{
    size_t n = 0;
    while (name_char(s[n], n == 0) && !(label && s[n] == ':'))
        n++;
    return n;
}

#define MAXFAM 64
typedef struct fam {
    char name[128];
    char type[16];
    int help, samples;
} fam_t;

/* Strict check of the text format; fails the test with the offending line. Returns the
 * number of families. */
static int check_format(const char *text, fam_t *fams)
{
    int nf = 0;
    assert_true(*text != '\0');
    assert_int_equal(text[strlen(text) - 1], '\n');
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl);
        char l[1024];
        size_t len = (size_t)(nl - line);
        assert_true(len < sizeof(l));
        memcpy(l, line, len);
        l[len] = '\0';
        line = nl + 1;
        if (strncmp(l, "# HELP ", 7) == 0 || strncmp(l, "# TYPE ", 7) == 0) {
            int help = l[2] == 'H';
            size_t n = read_name(l + 7, 0);
            if (!n || l[7 + n] != ' ') fail_msg("bad comment line: %s", l);
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)n, l + 7);
            fam_t *f = NULL;
            for (int i = 0; i < nf; i++)
                if (strcmp(fams[i].name, name) == 0) f = &fams[i];
            if (!f) {
                assert_true(nf < MAXFAM);
                f = &fams[nf++];
                memset(f, 0, sizeof(*f));
                snprintf(f->name, sizeof(f->name), "%s", name);
            }
            if (f->samples) fail_msg("HELP/TYPE after samples: %s", l);
            if (help) {
                if (f->help++) fail_msg("second HELP: %s", l);
            } else {
                const char *t = l + 8 + n;
                if (f->type[0]) fail_msg("second TYPE: %s", l);
                if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "summary") &&
                    strcmp(t, "histogram") && strcmp(t, "untyped"))
                    fail_msg("bad type: %s", l);
                snprintf(f->type, sizeof(f->type), "%s", t);
            }
            continue;
        }
        if (l[0] == '#') fail_msg("unexpected comment: %s", l);
        size_t n = read_name(l, 0);
        if (!n) fail_msg("no metric name: %s", l);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)n, l);
        const char *p = l + n;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                size_t ln = read_name(p, 1);
                if (!ln || p[ln] != '=' || p[ln + 1] != '"') fail_msg("bad label: %s", l);
                p += ln + 2;
                while (*p && *p != '"') {
                    if (*p == '\\') {
                        if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                            fail_msg("bad escape: %s", l);
                        p++;
                    }
                    p++;
                }
                if (*p != '"') fail_msg("unterminated label value: %s", l);
                p++;
                if (*p == ',')
                    p++;
                else if (*p != '}')
                    fail_msg("bad label list: %s", l);
            }
            p++;
        }
        if (*p != ' ') fail_msg("no space before the value: %s", l);
        p++;
        if (strcmp(p, "NaN") && strcmp(p, "+Inf") && strcmp(p, "-Inf")) {
            char *end;
            strtod(p, &end);
            if (end == p || *end) fail_msg("bad value: %s", l);
        }
        /* The family: the name itself, or a summary's _sum / _count. */
        fam_t *f = NULL;
        for (int i = 0; i < nf; i++) {
            size_t fl = strlen(fams[i].name);
            if (strcmp(fams[i].name, name) == 0 ||
                (strcmp(fams[i].type, "summary") == 0 && strncmp(name, fams[i].name, fl) == 0 &&
                 (strcmp(name + fl, "_sum") == 0 || strcmp(name + fl, "_count") == 0)))
                f = &fams[i];
        }
        if (!f || !f->help || !f->type[0]) fail_msg("sample without HELP and TYPE: %s", l);
        f->samples++;
    }
    return nf;
}

static void expect_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (!strstr(text, want)) fail_msg("missing line: %s\n%s", line, text);
}

static void fill(sg_gwmetrics_snapshot_t *s)
{
    memset(s, 0, sizeof(*s));
    uint64_t *f = (uint64_t *)&s->stats; /* every field a distinct value: 101, 102, ... */
    for (size_t i = 0; i < sizeof(s->stats) / sizeof(uint64_t); i++)
        f[i] = 101 + i;
    s->have_sandboxes = 1;
    for (int i = 0; i < SG_SBX_NSTATES; i++)
        s->sandboxes[i] = 10 + (uint64_t)i;
    s->have_connections = 1;
    s->connections = 7;
    s->have_memory = 1;
    s->rss_bytes = 4096 * 1000;
    s->vsize_bytes = 4096 * 5000;
    s->lag.samples = 600;
    s->lag.sum_us = 1500000;
    s->lag.max_us = 80000;
    s->lag.window_samples = 300;
    s->lag.window_p50_us = 250;
    s->lag.window_p99_us = 12000;
    s->lag.window_max_us = 40000;
    s->lag.busy_max_us = 95000;
    s->lag.busy_window_max_us = 45000;
    s->lag.iterations = 12345;
    s->lag.idle_us = 55500000;
    s->lag_interval_ms = 100;
    s->lag_window_ms = 60000;
    s->events_in_per_s = 2500;
    s->events_out_per_s = 0.5;
    s->start_time_s = 1700000000.25;
    s->uptime_s = 60.5;
    s->version = "9.8.7";
}

static void test_every_field(void **state)
{
    (void)state;
    sg_gwmetrics_snapshot_t s;
    fill(&s);
    sg_prom_t p;
    sg_prom_init(&p);
    sg_gwmetrics_render(&s, &p);
    fam_t fams[MAXFAM];
    int nf = check_format(p.data, fams);
    for (int i = 0; i < nf; i++)
        assert_true(fams[i].samples > 0);

    const sg_gw_stats_t *st = &s.stats;
    char l[256];
    static const char *const ps[] = {"running", "exited", "failed", "killed", "lost"};
    for (int i = 0; i < SG_PROC_NSTATES; i++) {
        snprintf(l, sizeof(l), "sandgate_processes{state=\"%s\"} %llu", ps[i],
                 (unsigned long long)st->processes[i]);
        expect_line(p.data, l);
    }
    static const char *const cr[] = {"hard", "soft", "timeout"};
    for (int i = 0; i < SG_CUT_NREASONS; i++) {
        snprintf(l, sizeof(l), "sandgate_slow_subscribers_disconnected_total{reason=\"%s\"} %llu",
                 cr[i], (unsigned long long)st->cut[i]);
        expect_line(p.data, l);
    }
    static const struct {
        const char *name;
        size_t off;
    } scalars[] = {
        {"sandgate_subscribers", offsetof(sg_gw_stats_t, subscribers)},
        {"sandgate_process_log_bytes", offsetof(sg_gw_stats_t, log_bytes)},
        {"sandgate_processes_started_total", offsetof(sg_gw_stats_t, processes_started)},
        {"sandgate_subscribers_total", offsetof(sg_gw_stats_t, subscribers_total)},
        {"sandgate_stream_events_in_total", offsetof(sg_gw_stats_t, events_in)},
        {"sandgate_stream_bytes_in_total", offsetof(sg_gw_stats_t, bytes_in)},
        {"sandgate_stream_events_out_total", offsetof(sg_gw_stats_t, events_out)},
        {"sandgate_stream_bytes_out_total", offsetof(sg_gw_stats_t, bytes_out)},
        {"sandgate_stream_gaps_total", offsetof(sg_gw_stats_t, gaps)},
        {"sandgate_stream_evicted_events_total", offsetof(sg_gw_stats_t, evicted_events)},
        {"sandgate_log_disk_bytes", offsetof(sg_gw_stats_t, disk_bytes)},
        {"sandgate_log_disk_reads_total", offsetof(sg_gw_stats_t, disk_reads)},
        {"sandgate_log_segments_deleted_total", offsetof(sg_gw_stats_t, segments_deleted)},
        {"sandgate_log_outputs_evicted_total", offsetof(sg_gw_stats_t, outputs_evicted)},
        {"sandgate_log_write_errors_total", offsetof(sg_gw_stats_t, disk_errors)},
    };
    /* 5 states + 15 scalars + 3 reasons = every field (gwmetrics.c asserts the size too). */
    assert_int_equal(SG_PROC_NSTATES + SG_ARRAY_SIZE(scalars) + SG_CUT_NREASONS,
                     sizeof(sg_gw_stats_t) / sizeof(uint64_t));
    for (size_t i = 0; i < SG_ARRAY_SIZE(scalars); i++) {
        uint64_t v = *(const uint64_t *)((const char *)st + scalars[i].off);
        snprintf(l, sizeof(l), "%s %llu", scalars[i].name, (unsigned long long)v);
        expect_line(p.data, l);
    }
    for (int i = 0; i < SG_SBX_NSTATES; i++) {
        snprintf(l, sizeof(l), "sandgate_sandboxes{state=\"%s\"} %d",
                 sg_sbx_state_name((sg_sbx_state_t)i), 10 + i);
        expect_line(p.data, l);
    }
    expect_line(p.data, "sandgate_sandboxes{state=\"Running\"} 11");
    expect_line(p.data, "sandgate_http_connections 7");
    expect_line(p.data, "process_resident_memory_bytes 4096000");
    expect_line(p.data, "process_virtual_memory_bytes 20480000");
    expect_line(p.data, "process_start_time_seconds 1700000000.25");
    expect_line(p.data, "sandgate_uptime_seconds 60.5");
    expect_line(p.data, "sandgate_build_info{version=\"9.8.7\"} 1");
    expect_line(p.data, "sandgate_stream_events_in_per_second 2500");
    expect_line(p.data, "sandgate_stream_events_out_per_second 0.5");
    expect_line(p.data, "# TYPE sandgate_loop_lag_seconds summary");
    expect_line(p.data, "sandgate_loop_lag_seconds{quantile=\"0.5\"} 0.00025");
    expect_line(p.data, "sandgate_loop_lag_seconds{quantile=\"0.99\"} 0.012");
    expect_line(p.data, "sandgate_loop_lag_seconds{quantile=\"1\"} 0.04");
    expect_line(p.data, "sandgate_loop_lag_seconds_sum 1.5");
    expect_line(p.data, "sandgate_loop_lag_seconds_count 600");
    expect_line(p.data, "sandgate_loop_lag_max_seconds 0.08");
    expect_line(p.data, "sandgate_loop_lag_recent_max_seconds 0.04");
    expect_line(p.data, "sandgate_loop_busy_max_seconds 0.095");
    expect_line(p.data, "sandgate_loop_busy_recent_max_seconds 0.045");
    expect_line(p.data, "sandgate_loop_iterations_total 12345");
    expect_line(p.data, "sandgate_loop_idle_seconds_total 55.5");
    /* Types the docs promise. */
    expect_line(p.data, "# TYPE sandgate_stream_events_in_total counter");
    expect_line(p.data, "# TYPE sandgate_subscribers gauge");
    expect_line(p.data, "# TYPE sandgate_slow_subscribers_disconnected_total counter");
    expect_line(p.data, "# TYPE sandgate_sandboxes gauge");
    sg_prom_free(&p);
}

static void test_optional_parts(void **state)
{
    (void)state;
    /* No api, no server, no /proc, no lag samples yet: those families are left out, the
     * summary's quantiles are NaN, and the text is still valid. */
    sg_gwmetrics_snapshot_t s;
    fill(&s);
    s.have_sandboxes = s.have_connections = s.have_memory = 0;
    memset(&s.lag, 0, sizeof(s.lag));
    s.version = NULL;
    sg_prom_t p;
    sg_prom_init(&p);
    sg_gwmetrics_render(&s, &p);
    fam_t fams[MAXFAM];
    check_format(p.data, fams);
    assert_null(strstr(p.data, "sandgate_sandboxes"));
    assert_null(strstr(p.data, "sandgate_http_connections"));
    assert_null(strstr(p.data, "process_resident_memory_bytes"));
    expect_line(p.data, "sandgate_loop_lag_seconds{quantile=\"0.99\"} NaN");
    expect_line(p.data, "sandgate_loop_lag_seconds_count 0");
    expect_line(p.data, "sandgate_build_info{version=\"\"} 1");
    sg_prom_free(&p);
}

static void on_closed(void *ud)
{
    *(int *)ud = 1;
}

static void test_live_snapshot(void **state)
{
    (void)state;
    /* The object on a real loop: the snapshot reads this process's memory and the monitor,
     * and closing leaves no handle open. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    sg_gwmetrics_config_t cfg;
    sg_gwmetrics_config_init(&cfg);
    assert_int_equal(cfg.rate_interval_ms, 1000);
    sg_gwmetrics_t *m;
    cfg.rate_interval_ms = 0;
    assert_int_equal(sg_gwmetrics_new(&loop, &cfg, &m), SG_EINVAL);
    cfg.rate_interval_ms = 1000;
    assert_int_equal(sg_gwmetrics_new(&loop, &cfg, &m), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* unref'd: nothing keeps it alive */
    sg_gwmetrics_snapshot_t s;
    sg_gwmetrics_snapshot(m, NULL, NULL, &s);
    assert_true(s.have_memory);
    assert_true(s.rss_bytes > 0 && s.vsize_bytes >= s.rss_bytes);
    assert_true(s.start_time_s > 1.6e9);
    assert_string_equal(s.version, SG_VERSION);
    assert_non_null(sg_gwmetrics_looplag(m));
    int closed = 0;
    sg_gwmetrics_close(m, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(closed);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field),
        cmocka_unit_test(test_optional_parts),
        cmocka_unit_test(test_live_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
