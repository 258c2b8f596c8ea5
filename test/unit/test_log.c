/* test_log.c: logfmt lines, escaping, levels, truncation, the request helper, and the real
 * stderr path through a pipe. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/log.h"

typedef struct sink {
    char lines[8][SG_LOG_LINE_MAX + 1];
    size_t lens[8];
    int n;
} sink_t;

static sink_t g;

static void mem_sink(void *ud, const char *line, size_t len)
{
    sink_t *s = ud;
    assert_true(s->n < 8);
    assert_true(len <= SG_LOG_LINE_MAX);
    memcpy(s->lines[s->n], line, len);
    s->lines[s->n][len] = '\0';
    s->lens[s->n++] = len;
}

/* 2026-11-22T03:00:00.123Z */
static uint64_t fixed_clock(void) { return 1795316400123ull; }

static int setup(void **state)
{
    (void)state;
    memset(&g, 0, sizeof g);
    sg_log_set_sink(mem_sink, &g);
    sg_log_set_clock(fixed_clock);
    sg_log_set_level(SG_LOG_INFO);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sg_log_set_sink(NULL, NULL);
    sg_log_set_clock(NULL);
    sg_log_set_level(SG_LOG_INFO);
    return 0;
}

static void test_format(void **state)
{
    (void)state;
    sg_log(SG_LOG_INFO, "listening on %s:%d", "127.0.0.1", 8080);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.lines[0], "ts=2026-11-22T03:00:00.123Z level=info msg=\"listening on 127.0.0.1:8080\"\n");
    assert_int_equal(g.lens[0], strlen(g.lines[0]));

    sg_log_kv(SG_LOG_WARN, "slow subscriber", "sub", "42", "queued", "1048576", "peer", "10.0.0.1:5555", NULL);
    assert_string_equal(g.lines[1], "ts=2026-11-22T03:00:00.123Z level=warn msg=\"slow subscriber\" sub=42 "
                                    "queued=1048576 peer=10.0.0.1:5555\n");

    /* quoting only when needed; escapes keep one event on one line and keys unforgeable */
    sg_log_kv(SG_LOG_ERROR, "x\ny", "a", "", "b", "has space", "c", "k=v", "d", "q\"\\", "e", "t\tr\r\x01\x7f",
              "f", "\xc3\xa9", "g", NULL, "bad key!", "1", "", "2", NULL);
    assert_string_equal(g.lines[2], "ts=2026-11-22T03:00:00.123Z level=error msg=\"x\\ny\" a=\"\" b=\"has space\" "
                                    "c=\"k=v\" d=\"q\\\"\\\\\" e=\"t\\tr\\r\\u0001\\u007f\" f=\xc3\xa9 g=\"\" "
                                    "badkey=1 _=2\n");
    for (int i = 0; i < g.n; i++) assert_ptr_equal(strchr(g.lines[i], '\n'), g.lines[i] + g.lens[i] - 1);
}

static void test_levels(void **state)
{
    (void)state;
    sg_log(SG_LOG_DEBUG, "hidden");
    assert_int_equal(g.n, 0);
    assert_false(sg_log_enabled(SG_LOG_DEBUG));
    assert_true(sg_log_enabled(SG_LOG_INFO));
    sg_log_set_level(SG_LOG_ERROR);
    sg_log(SG_LOG_WARN, "hidden");
    sg_log_kv(SG_LOG_INFO, "hidden", "k", "v", NULL);
    sg_log_request(&(sg_log_request_t){.status = 503});
    assert_int_equal(g.n, 0);
    sg_log(SG_LOG_ERROR, "shown");
    assert_int_equal(g.n, 1);
    sg_log_set_level(SG_LOG_DEBUG);
    sg_log(SG_LOG_DEBUG, "d");
    assert_int_equal(g.n, 2);
    assert_non_null(strstr(g.lines[1], " level=debug msg=\"d\"\n"));

    sg_log_level_t l;
    assert_int_equal(sg_log_level_parse("debug", &l), 0);
    assert_int_equal(l, SG_LOG_DEBUG);
    assert_int_equal(sg_log_level_parse("INFO", &l), 0);
    assert_int_equal(l, SG_LOG_INFO);
    assert_int_equal(sg_log_level_parse("warning", &l), 0);
    assert_int_equal(l, SG_LOG_WARN);
    assert_int_equal(sg_log_level_parse("error", &l), 0);
    assert_int_equal(l, SG_LOG_ERROR);
    assert_int_equal(sg_log_level_parse("verbose", &l), SG_EINVAL);
    assert_int_equal(sg_log_level_parse(NULL, &l), SG_EINVAL);
    assert_string_equal(sg_log_level_name(SG_LOG_WARN), "warn");
}

static void test_request(void **state)
{
    (void)state;
    sg_log_request(&(sg_log_request_t){.request_id = "r-1", .method = "POST", .path = "/v1/sandboxes/abc/command",
                                        .status = 200, .bytes_in = 62, .bytes_out = 1234, .duration_ms = 1.25});
    assert_string_equal(g.lines[0], "ts=2026-11-22T03:00:00.123Z level=info msg=\"request\" rid=r-1 method=POST "
                                    "path=/v1/sandboxes/abc/command status=200 bytes_in=62 bytes_out=1234 "
                                    "dur_ms=1.250\n");
    sg_log_request(&(sg_log_request_t){.method = "GET", .path = "/a b\"", .status = 502, .duration_ms = 0.0004});
    assert_string_equal(g.lines[1], "ts=2026-11-22T03:00:00.123Z level=warn msg=\"request\" rid=\"\" method=GET "
                                    "path=\"/a b\\\"\" status=502 bytes_in=0 bytes_out=0 dur_ms=0.000\n");
}

static void test_truncation(void **state)
{
    (void)state;
    char *big = sg_xmalloc(3 * SG_LOG_LINE_MAX);
    memset(big, 'a', 3 * SG_LOG_LINE_MAX - 1);
    big[3 * SG_LOG_LINE_MAX - 1] = '\0';
    sg_log(SG_LOG_INFO, "%s", big);
    sg_log_kv(SG_LOG_INFO, "m", "k", big, NULL);
    memset(big, '\n', 3 * SG_LOG_LINE_MAX - 1); /* escapes double the size */
    sg_log_kv(SG_LOG_INFO, "m", "k", big, NULL);
    assert_int_equal(g.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_true(g.lens[i] <= SG_LOG_LINE_MAX);
        const char *t = " truncated=true\n";
        assert_string_equal(g.lines[i] + g.lens[i] - strlen(t), t);
        assert_ptr_equal(strchr(g.lines[i], '\n'), g.lines[i] + g.lens[i] - 1);
    }
    assert_true(g.lens[1] > SG_LOG_LINE_MAX - 64); /* cut at the bound, not earlier */
    free(big);
}

static void test_real_clock_shape(void **state)
{
    (void)state;
    sg_log_set_clock(NULL);
    sg_log(SG_LOG_INFO, "x");
    const char *s = g.lines[0];
    /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
    const char *shape = "ts=dddd-dd-ddTdd:dd:dd.dddZ level=info msg=\"x\"\n";
    assert_int_equal(strlen(s), strlen(shape));
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd') assert_true(s[i] >= '0' && s[i] <= '9');
        else assert_int_equal(s[i], shape[i]);
    }
    assert_true(strncmp(s + 3, "2020", 4) > 0);
}

/* The default sink: one write per line to fd 2, seen through a pipe. */
static void test_stderr_pipe(void **state)
{
    (void)state;
    sg_log_set_sink(NULL, NULL);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
    sg_log(SG_LOG_ERROR, "to the pipe");
    sg_log_kv(SG_LOG_INFO, "second", "k", "v", NULL);
    uint64_t dropped = sg_log_dropped();
    /* a full non-blocking stderr drops instead of blocking */
    assert_int_equal(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(fcntl(STDERR_FILENO, F_SETFL, O_NONBLOCK), 0);
    char junk[4096];
    memset(junk, 'j', sizeof junk);
    size_t filled = 0;
    while (write(fds[1], junk, sizeof junk) > 0 && filled < (64u << 20)) filled += sizeof junk;
    sg_log(SG_LOG_ERROR, "dropped");
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    close(fds[1]);
    assert_int_equal(sg_log_dropped(), dropped + 1);

    char buf[256];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    const char *want1 = " level=error msg=\"to the pipe\"\n";
    char *nl = strchr(buf, '\n');
    assert_non_null(nl);
    assert_memory_equal(nl + 1 - strlen(want1), want1, strlen(want1));
    assert_non_null(strstr(nl + 1, " level=info msg=\"second\" k=v\n"));
    close(fds[0]);
    sg_log_set_sink(mem_sink, &g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_clock_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stderr_pipe, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
