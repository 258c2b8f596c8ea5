/* test_execd_runner.c: the execd command engine with real processes (no HTTP).
 *
 * Each test opens an engine on its own loop and a scratch log directory, runs commands until
 * their completion callback (every wait is bounded by a safety timer; no test asserts on
 * timing), and ends with sg_runner_close + uv_loop_close(loop) == 0. Covered: line events and
 * exit codes, \r / \r\n / blank-line splitting, bounded pieces of a 1 MiB line, byte-exact
 * chunks and offsets, timeout and interrupt killing the whole process group, validation and
 * start errors, shell fallback, concurrency without crosstalk, background logs with cursors,
 * the log cap and write backpressure, record expiry and eviction, sessions, signal state of
 * children, close with commands still running, sg_runner_signal (foreground, background,
 * trapped, STOP/CONT, errors), signal names, and the consumer hold (output stops, the child
 * blocks, all of it comes on release; timeout / interrupt / signal / session runs / log
 * backpressure while held). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner.h"

#define SAFETY_MS 60000

typedef struct line {
    int stream;
    char *text;
    size_t len;
} line_t;

typedef struct run {
    line_t *lines;
    size_t nlines, cap;
    char *bytes[3]; /* chunk concatenation per stream (1, 2) */
    size_t blen[3];
    uint64_t comb;
    int chunk_off_ok;
    int done;
    sg_run_result_t res;
    char id[64];
    char error[512];
    int waiter_calls, waiter_after_done;
} run_t;

typedef struct fx {
    uv_loop_t loop;
    uv_timer_t safety;
    int expired;
    sg_runner_t *r;
    char dir[64];
    sg_runner_cfg_t cfg;
    int closed;
} fx_t;

static void on_chunk(void *ud, sg_run_stream_t s, const char *d, size_t n, uint64_t so, uint64_t co)
{
    run_t *x = ud;
    if (so != x->blen[s] || co != x->comb) x->chunk_off_ok = 0;
    x->bytes[s] = realloc(x->bytes[s], x->blen[s] + n + 1);
    memcpy(x->bytes[s] + x->blen[s], d, n);
    x->blen[s] += n;
    x->bytes[s][x->blen[s]] = '\0';
    x->comb += n;
}

static void on_line(void *ud, sg_run_stream_t s, const char *t, size_t n)
{
    run_t *x = ud;
    if (x->nlines == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 16;
        x->lines = realloc(x->lines, x->cap * sizeof(line_t));
    }
    line_t *l = &x->lines[x->nlines++];
    l->stream = s;
    l->text = malloc(n + 1);
    memcpy(l->text, t, n);
    l->text[n] = '\0';
    l->len = n;
}

static void on_done(void *ud, const sg_run_result_t *res)
{
    run_t *x = ud;
    x->done++;
    x->res = *res;
    snprintf(x->id, sizeof(x->id), "%s", res->id);
    snprintf(x->error, sizeof(x->error), "%s", res->error);
    x->res.id = x->id;
    x->res.error = x->error;
}

static void on_waiter(void *ud)
{
    run_t *x = ud;
    x->waiter_calls++;
    x->waiter_after_done = x->done == 1;
}

static sg_run_cbs_t cbs_for(run_t *x)
{
    memset(x, 0, sizeof(*x));
    x->chunk_off_ok = 1;
    sg_run_cbs_t c = {on_chunk, on_line, on_done, x};
    return c;
}

static void run_free(run_t *x)
{
    for (size_t i = 0; i < x->nlines; i++)
        free(x->lines[i].text);
    free(x->lines);
    free(x->bytes[1]);
    free(x->bytes[2]);
}

/* Lines of one stream joined with '|' (blank lines show as "\n"). */
static void joined(run_t *x, int stream, char *out, size_t cap)
{
    out[0] = '\0';
    size_t n = 0;
    for (size_t i = 0; i < x->nlines; i++) {
        if (x->lines[i].stream != stream) continue;
        n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? "|" : "", x->lines[i].text);
        if (n >= cap) break;
    }
}

static void on_safety(uv_timer_t *t)
{
    fx_t *f = t->data;
    f->expired = 1;
}

static void spin_until(fx_t *f, const int *flag)
{
    f->expired = 0;
    uv_timer_start(&f->safety, on_safety, SAFETY_MS, 0);
    while (!*flag && !f->expired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->safety);
    assert_false(f->expired);
}

/* Runs the loop until x has at least n lines / n output bytes. */
static void spin_lines(fx_t *f, run_t *x, size_t n)
{
    f->expired = 0;
    uv_timer_start(&f->safety, on_safety, SAFETY_MS, 0);
    while (x->nlines < n && !x->done && !f->expired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->safety);
    assert_true(x->nlines >= n);
}

static void spin_bytes(fx_t *f, run_t *x, uint64_t n)
{
    f->expired = 0;
    uv_timer_start(&f->safety, on_safety, SAFETY_MS, 0);
    while (x->comb < n && !x->done && !f->expired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->safety);
    assert_true(x->comb >= n);
}

/* Runs the loop about ms milliseconds (only to let a background action happen). */
static void spin_ms(fx_t *f, uint64_t ms)
{
    f->expired = 0;
    uv_timer_start(&f->safety, on_safety, ms, 0);
    while (!f->expired)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void fx_open(fx_t *f, const sg_runner_cfg_t *cfg)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->safety);
    f->safety.data = f;
    snprintf(f->dir, sizeof(f->dir), "/tmp/sg-runner-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    if (cfg) f->cfg = *cfg;
    f->cfg.log_dir = f->dir;
    assert_int_equal(sg_runner_open(&f->loop, &f->cfg, &f->r), 0);
}

static void on_closed(void *ud)
{
    fx_t *f = ud;
    f->closed = 1;
}

static void fx_close(fx_t *f)
{
    sg_runner_close(f->r, on_closed, f);
    uv_close((uv_handle_t *)&f->safety, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->closed, 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
}

static sg_runner_stats_t stats(fx_t *f)
{
    sg_runner_stats_t st;
    sg_runner_get_stats(f->r, &st);
    return st;
}
static size_t n_records(fx_t *f)
{
    return stats(f).records;
}
static size_t n_live(fx_t *f)
{
    return stats(f).live;
}

static void start_ok(fx_t *f, const sg_run_req_t *req, run_t *x, char id[SG_RUN_ID_LEN + 1])
{
    sg_run_cbs_t cb = cbs_for(x);
    sg_run_err_t err;
    int rc = sg_runner_start(f->r, req, &cb, id, &err);
    if (rc != 0) fail_msg("start failed: %d %s", rc, err.msg);
    assert_int_equal(strlen(id), SG_RUN_ID_LEN);
    assert_int_equal(strspn(id, "0123456789abcdef"), SG_RUN_ID_LEN);
}

static void run_cmd(fx_t *f, const char *command, run_t *x, char id[SG_RUN_ID_LEN + 1])
{
    sg_run_req_t req = {.command = command};
    start_ok(f, &req, x, id);
    spin_until(f, &x->done);
    assert_int_equal(x->done, 1);
}

/* /proc/<pid> gone or a zombie (dead, waiting for a reaper that may not exist here). */
static int pid_dead(int pid)
{
    char p[64], buf[512];
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    FILE *fp = fopen(p, "r");
    if (!fp) return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

static int wait_dead(int pid)
{
    for (int i = 0; i < 1000; i++) {
        if (pid_dead(pid)) return 1;
        usleep(10000);
    }
    return 0;
}

static int has_line(const run_t *x, int stream, const char *text)
{
    for (size_t i = 0; i < x->nlines; i++)
        if (x->lines[i].stream == stream && strcmp(x->lines[i].text, text) == 0) return 1;
    return 0;
}

/* Waits (bounded) until /proc/<pid>/stat shows state st, e.g. 'T' for stopped. */
static int wait_state(int pid, char st)
{
    char p[64], buf[512];
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    for (int i = 0; i < 1000; i++) {
        FILE *fp = fopen(p, "r");
        if (!fp) return 0;
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        char *rp = strrchr(buf, ')');
        if (rp && rp[1] == ' ' && rp[2] == st) return 1;
        usleep(10000);
    }
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_execd_exit_and_lines(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1], s[256];
    run_cmd(&f, "echo hi; echo err >&2; exit 3", &x, id);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "hi");
    joined(&x, SG_RUN_STDERR, s, sizeof(s));
    assert_string_equal(s, "err");
    assert_int_equal(x.nlines, 2);
    assert_int_equal(x.res.exit_code, 3);
    assert_int_equal(x.res.term_signal, 0);
    assert_string_equal(x.error, "exit status 3");
    assert_string_equal(x.id, id);
    assert_true(x.res.finished_ns >= x.res.started_ns);
    assert_true(x.res.started_ns > 1600000000ull * 1000000000ull); /* wall clock */

    sg_run_status_t st;
    sg_run_err_t err;
    assert_int_equal(sg_runner_status(f.r, id, &st, &err), 0);
    assert_string_equal(st.id, id);
    assert_string_equal(st.content, "echo hi; echo err >&2; exit 3");
    assert_int_equal(st.running, 0);
    assert_int_equal(st.has_exit, 1);
    assert_int_equal(st.exit_code, 3);
    assert_string_equal(st.error, "exit status 3");
    assert_true(st.finished_ns >= st.started_ns);
    run_free(&x);

    /* Same order within a stream: three stdout lines in order. */
    char id2[SG_RUN_ID_LEN + 1];
    run_cmd(&f, "echo one; echo two; echo three", &x, id2);
    assert_string_not_equal(id, id2);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "one|two|three");
    assert_int_equal(x.res.exit_code, 0);
    assert_string_equal(x.error, "");
    assert_int_equal(sg_runner_status(f.r, id2, &st, &err), 0);
    assert_int_equal(st.exit_code, 0);
    assert_string_equal(st.error, "");
    run_free(&x);

    assert_int_equal(sg_runner_status(f.r, "0123", &st, &err), SG_ENOTFOUND);
    assert_string_equal(err.msg, "command not found: 0123");

    /* A death by signal: -1 and Go's text. */
    run_cmd(&f, "kill -SEGV $$", &x, id);
    assert_int_equal(x.res.exit_code, -1);
    assert_int_equal(x.res.term_signal, SIGSEGV);
    assert_string_equal(x.error, "signal: segmentation fault");
    run_free(&x);
    fx_close(&f);
}

static void test_execd_line_splitting(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1], s[256];
    run_cmd(&f, "printf 'a\\r\\nb\\rc'", &x, id);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "a|b|c");
    assert_int_equal(x.nlines, 3);
    run_free(&x);

    /* Blank lines are "\n". After "y\n": "\r" ends an empty line, "\r\n" another one. */
    run_cmd(&f, "printf 'x\\n\\n\\ny\\n\\r\\r\\nz\\n'", &x, id);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "x|\n|\n|y|\n|\n|z");
    run_free(&x);

    /* \r\n split across two reads stays one terminator; the sleep only separates the writes,
     * the expected lines are the same however the reads fall. */
    run_cmd(&f, "printf 'a\\r'; sleep 0.2; printf '\\nb\\r'; sleep 0.2; printf '\\n'", &x, id);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "a|b");
    run_free(&x);

    /* Unterminated tails of both streams are flushed at completion. */
    run_cmd(&f, "printf out; printf err >&2", &x, id);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "out");
    joined(&x, SG_RUN_STDERR, s, sizeof(s));
    assert_string_equal(s, "err");
    run_free(&x);

    /* No output, no lines. */
    run_cmd(&f, "true", &x, id);
    assert_int_equal(x.nlines, 0);
    run_free(&x);
    fx_close(&f);
}

static void check_pieces(run_t *x, size_t total, size_t max)
{
    size_t sum = 0;
    for (size_t i = 0; i < x->nlines; i++) {
        assert_int_equal(x->lines[i].stream, SG_RUN_STDOUT);
        assert_true(x->lines[i].len <= max);
        for (size_t k = 0; k < x->lines[i].len; k++)
            if (x->lines[i].text[k] != 'x') fail_msg("piece %zu byte %zu", i, k);
        sum += x->lines[i].len;
    }
    assert_int_equal(sum, total);
}

static void test_execd_long_line_pieces(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    /* 1 MiB without a newline: sixteen 64 KiB pieces, nothing left for the tail. */
    run_cmd(&f, "head -c 1048576 /dev/zero | tr '\\0' x", &x, id);
    assert_int_equal(x.nlines, 16);
    check_pieces(&x, 1048576, 65536);
    for (size_t i = 0; i < x.nlines; i++)
        assert_int_equal(x.lines[i].len, 65536);
    assert_int_equal(x.blen[1], 1048576);
    run_free(&x);

    /* 1 MiB + 5 and a newline: the newline ends the last piece without a blank line. */
    run_cmd(&f, "head -c 1048581 /dev/zero | tr '\\0' x; echo; echo next", &x, id);
    assert_int_equal(x.nlines, 18);
    assert_int_equal(x.lines[16].len, 5);
    assert_string_equal(x.lines[17].text, "next");
    x.nlines = 17;
    check_pieces(&x, 1048581, 65536);
    x.nlines = 18;
    run_free(&x);

    /* 3-byte characters: 65536 is not a multiple of 3, yet no piece splits a character. */
    run_cmd(&f,
            "for i in $(seq 1 1000); do printf '%s' "
            "'\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
            "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac'"
            "'\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
            "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac'"
            "'\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
            "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac'; done",
            &x, id);
    assert_int_equal(x.blen[1], 90000);
    assert_true(x.nlines >= 2);
    size_t sum = 0;
    for (size_t i = 0; i < x.nlines; i++) {
        assert_true(x.lines[i].len <= 65536);
        assert_int_equal(x.lines[i].len % 3, 0);
        assert_int_equal((unsigned char)x.lines[i].text[0], 0xe2);
        assert_memory_equal(x.lines[i].text, x.bytes[1] + sum, x.lines[i].len);
        sum += x.lines[i].len;
    }
    assert_int_equal(sum, 90000);
    run_free(&x);

    /* Exactly max then newline: one piece, no blank line. */
    run_cmd(&f, "head -c 65536 /dev/zero | tr '\\0' x; echo", &x, id);
    assert_int_equal(x.nlines, 1);
    check_pieces(&x, 65536, 65536);
    run_free(&x);
    fx_close(&f);
}

static void test_execd_byte_exact_chunks(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    run_cmd(&f, "printf '\\x00\\xff\\r\\nno-newline'", &x, id);
    static const char want[] = "\0\xff\r\nno-newline";
    assert_int_equal(x.blen[1], sizeof(want) - 1);
    assert_memory_equal(x.bytes[1], want, sizeof(want) - 1);
    assert_int_equal(x.blen[2], 0);
    assert_true(x.chunk_off_ok);
    /* Line view of the same bytes: "\0\xff" then the tail. */
    assert_int_equal(x.nlines, 2);
    assert_int_equal(x.lines[0].len, 2);
    assert_memory_equal(x.lines[0].text, "\0\xff", 2);
    assert_string_equal(x.lines[1].text, "no-newline");
    run_free(&x);

    /* Both streams, several reads each (the sleeps force separate reads): per-stream bytes
     * exact, per-stream and combined offsets continuous in callback order. */
    run_cmd(&f,
            "printf 'ab'; sleep 0.05; printf 'cde' >&2; sleep 0.05; printf 'f\\r'; sleep 0.05; "
            "printf 'g\\n' >&2",
            &x, id);
    assert_int_equal(x.blen[1], 4);
    assert_memory_equal(x.bytes[1], "abf\r", 4);
    assert_int_equal(x.blen[2], 5);
    assert_memory_equal(x.bytes[2], "cdeg\n", 5);
    assert_int_equal(x.comb, 9);
    assert_true(x.chunk_off_ok);
    run_free(&x);
    fx_close(&f);
}

static void test_execd_timeout_kills_group(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    sg_run_req_t req = {.command = "sleep 100 & echo $!; sleep 100", .timeout_ms = 300};
    start_ok(&f, &req, &x, id);
    spin_until(&f, &x.done);
    assert_int_equal(x.res.timed_out, 1);
    assert_int_equal(x.res.exit_code, -1);
    assert_int_equal(x.res.term_signal, SIGKILL);
    assert_string_equal(x.error, "signal: killed");
    assert_true(x.nlines >= 1);
    int gpid = atoi(x.lines[0].text);
    assert_true(gpid > 1);
    assert_true(wait_dead(gpid));
    sg_run_status_t st;
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.exit_code, -1);
    assert_string_equal(st.error, "signal: killed");
    run_free(&x);
    fx_close(&f);
}

static void test_execd_interrupt(void **state)
{
    (void)state;
    sg_runner_cfg_t cfg = {.kill_grace_ms = 300};
    fx_t f;
    fx_open(&f, &cfg);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    sg_run_err_t err;

    /* Plain interrupt: SIGTERM is enough. */
    sg_run_req_t req = {.command = "echo ready; sleep 100; echo never"};
    start_ok(&f, &req, &x, id);
    spin_lines(&f, &x, 1);
    assert_int_equal(sg_runner_interrupt(f.r, id, on_waiter, &x, &err), 0);
    spin_until(&f, &x.waiter_calls);
    assert_int_equal(x.done, 1);
    assert_int_equal(x.waiter_calls, 1);
    assert_int_equal(x.waiter_after_done, 1);
    assert_int_equal(x.res.interrupted, 1);
    assert_int_equal(x.res.exit_code, -1);
    assert_int_equal(x.res.term_signal, SIGTERM);
    assert_string_equal(x.error, "signal: terminated");
    /* Finished: the reference's "not running" text. */
    assert_int_equal(sg_runner_interrupt(f.r, id, NULL, NULL, &err), SG_EINVAL);
    char want[256];
    snprintf(want, sizeof(want),
             "error interruptting code context. command session %s is not running", id);
    assert_string_equal(err.msg, want);
    run_free(&x);

    /* A command that ignores SIGTERM (and its child inherits that) dies after the grace. */
    sg_run_req_t req2 = {.command = "trap '' TERM; echo ready; sleep 100 & echo $!; sleep 100"};
    start_ok(&f, &req2, &x, id);
    spin_lines(&f, &x, 2);
    int gpid = atoi(x.lines[1].text);
    assert_int_equal(sg_runner_interrupt(f.r, id, on_waiter, &x, &err), 0);
    /* A second interrupt while escalating just waits too. */
    assert_int_equal(sg_runner_interrupt(f.r, id, on_waiter, &x, &err), 0);
    spin_until(&f, &x.done);
    assert_int_equal(x.waiter_calls, 2);
    assert_int_equal(x.res.term_signal, SIGKILL);
    assert_string_equal(x.error, "signal: killed");
    assert_true(wait_dead(gpid));
    run_free(&x);

    assert_int_equal(sg_runner_interrupt(f.r, "nope", NULL, NULL, &err), SG_ENOTFOUND);
    assert_string_equal(err.msg, "error interruptting code context. no such session");

    /* sg_runner_forget drops a waiter. */
    sg_run_req_t req3 = {.command = "sleep 100"};
    start_ok(&f, &req3, &x, id);
    assert_int_equal(sg_runner_interrupt(f.r, id, on_waiter, &x, &err), 0);
    sg_runner_forget(f.r, &x);
    spin_until(&f, &x.done);
    assert_int_equal(x.waiter_calls, 0);
    run_free(&x);
    fx_close(&f);
}

static void test_execd_validation_and_start_errors(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    char id[SG_RUN_ID_LEN + 1];
    sg_run_err_t err;
    run_t x;
    sg_run_cbs_t cb = cbs_for(&x);

    sg_run_req_t req = {.command = "echo hi", .cwd = "/nonexistent/dir"};
    assert_int_equal(sg_runner_start(f.r, &req, &cb, id, &err), SG_EINVAL);
    assert_string_equal(err.msg, "invalid request, validation error working directory does not "
                                 "exist: /nonexistent/dir");
    assert_string_equal(id, "");
    req.cwd = "/etc/passwd"; /* exists, not a directory */
    assert_int_equal(sg_runner_start(f.r, &req, &cb, id, &err), SG_EINVAL);
    req.cwd = NULL;
    req.has_gid = 1;
    req.gid = 1;
    assert_int_equal(sg_runner_start(f.r, &req, &cb, id, &err), SG_EINVAL);
    assert_string_equal(err.msg, "uid is required when gid is provided");
    sg_run_req_t empty = {.command = ""};
    assert_int_equal(sg_runner_start(f.r, &empty, &cb, id, &err), SG_EINVAL);
    assert_int_equal(n_records(&f), 0);

    /* A valid cwd is used, envs are merged over the agent's environment. */
    sg_run_env_t envs[] = {{"SG_T_A", "one"}, {"HOME", "/custom-home"}};
    sg_run_req_t ok = {.command = "pwd; echo \"$SG_T_A $HOME\"; test -n \"$PATH\" && echo path",
                       .cwd = f.dir,
                       .envs = envs,
                       .n_envs = 2};
    start_ok(&f, &ok, &x, id);
    spin_until(&f, &x.done);
    char s[512], want[512];
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    char real[256];
    assert_non_null(realpath(f.dir, real));
    snprintf(want, sizeof(want), "%s|one /custom-home|path", real);
    assert_string_equal(s, want);
    run_free(&x);
    fx_close(&f);

    /* A configured shell that does not exist: a Go-like start error and a finished record. */
    sg_runner_cfg_t cfg = {.shell = "/nonexistent/bash"};
    fx_open(&f, &cfg);
    cb = cbs_for(&x);
    sg_run_req_t req2 = {.command = "echo hi"};
    int rc = sg_runner_start(f.r, &req2, &cb, id, &err);
    assert_int_equal(rc, UV_ENOENT);
    assert_string_equal(err.msg, "fork/exec /nonexistent/bash: no such file or directory");
    assert_int_equal(strlen(id), SG_RUN_ID_LEN);
    sg_run_status_t st;
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.exit_code, 255);
    assert_string_equal(st.error, err.msg);
    spin_ms(&f, 50);
    assert_int_equal(x.done, 0); /* no callbacks for a start failure */
    fx_close(&f);
}

static void test_execd_env_layers(void **state)
{
    (void)state;
    sg_run_env_t extra[] = {{"SG_X_BASE", "base"}, {"SG_X_OVR", "base"}, {"HOME", "/x-home"}};
    sg_runner_cfg_t cfg = {.extra_env = extra, .n_extra_env = 3};
    fx_t f;
    fx_open(&f, &cfg);
    extra[0].value = "changed-after-open"; /* the engine copied them */
    run_t x;
    char id[SG_RUN_ID_LEN + 1], s[256];
    sg_run_env_t envs[] = {{"SG_X_OVR", "first"}, {"SG_X_OVR", "req"}};
    sg_run_req_t req = {.command =
                            "echo \"$SG_X_BASE $SG_X_OVR $HOME\"; env | grep -c '^SG_X_OVR='",
                        .envs = envs,
                        .n_envs = 2};
    start_ok(&f, &req, &x, id);
    spin_until(&f, &x.done);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "base req /x-home|1");
    run_free(&x);
    fx_close(&f);
}

static void test_execd_shell_fallback(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    char *old = strdup(getenv("PATH"));
    char bin[128], sh[160];
    snprintf(bin, sizeof(bin), "%s/bin", f.dir);
    assert_int_equal(mkdir(bin, 0755), 0);
    snprintf(sh, sizeof(sh), "%s/sh", bin);
    assert_int_equal(symlink("/bin/sh", sh), 0);

    /* PATH without bash: sh from PATH runs the command. */
    setenv("PATH", bin, 1);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    sg_run_req_t req = {.command = "echo \"$0\""};
    start_ok(&f, &req, &x, id);
    spin_until(&f, &x.done);
    assert_int_equal(x.nlines, 1);
    assert_string_equal(x.lines[0].text, sh);
    run_free(&x);

    /* PATH with neither. */
    setenv("PATH", "/nonexistent", 1);
    sg_run_cbs_t cb = cbs_for(&x);
    sg_run_err_t err;
    assert_int_equal(sg_runner_start(f.r, &req, &cb, id, &err), UV_ENOENT);
    assert_string_equal(err.msg, "exec: \"sh\": executable file not found in $PATH");
    setenv("PATH", old, 1);
    free(old);
    fx_close(&f);
}

#define NCONC 40

static void test_execd_concurrent_no_crosstalk(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    static run_t xs[NCONC];
    char ids[NCONC][SG_RUN_ID_LEN + 1];
    char cmds[NCONC][160];
    for (int i = 0; i < NCONC; i++) {
        snprintf(cmds[i], sizeof(cmds[i]),
                 "for k in 1 2 3; do echo m%d-$k; echo e%d-$k >&2; done; printf t%d; exit %d", i, i,
                 i, i % 7);
        sg_run_req_t req = {.command = cmds[i]};
        start_ok(&f, &req, &xs[i], ids[i]);
    }
    for (int i = 0; i < NCONC; i++)
        spin_until(&f, &xs[i].done);
    for (int i = 0; i < NCONC; i++) {
        char s[256], want[256];
        joined(&xs[i], SG_RUN_STDOUT, s, sizeof(s));
        snprintf(want, sizeof(want), "m%d-1|m%d-2|m%d-3|t%d", i, i, i, i);
        assert_string_equal(s, want);
        joined(&xs[i], SG_RUN_STDERR, s, sizeof(s));
        snprintf(want, sizeof(want), "e%d-1|e%d-2|e%d-3", i, i, i);
        assert_string_equal(s, want);
        assert_int_equal(xs[i].res.exit_code, i % 7);
        assert_string_equal(xs[i].id, ids[i]);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(ids[i], ids[j]);
        run_free(&xs[i]);
    }
    fx_close(&f);
}

typedef struct rd {
    int calls, err;
    char *data;
    size_t len;
    uint64_t next;
} rd_t;

static void on_log(void *ud, int err, const char *data, size_t len, uint64_t next)
{
    rd_t *r = ud;
    r->calls++;
    r->err = err;
    free(r->data);
    r->data = malloc(len + 1);
    if (len) memcpy(r->data, data, len);
    r->data[len] = '\0';
    r->len = len;
    r->next = next;
}

static void read_log(fx_t *f, const char *id, uint64_t cursor, size_t max, rd_t *r)
{
    r->calls = 0;
    sg_run_err_t err;
    assert_int_equal(sg_runner_log_read(f->r, id, cursor, max, on_log, r, &err), 0);
    assert_int_equal(r->calls, 0); /* never inside the call */
    spin_until(f, &r->calls);
    assert_int_equal(r->err, 0);
}

/* Reads from cursor until no more bytes come, appending to out. */
static size_t read_all(fx_t *f, const char *id, uint64_t cursor, size_t max, char *out, size_t cap,
                       uint64_t *end)
{
    rd_t r = {0};
    size_t n = 0;
    for (int i = 0; i < 100000; i++) {
        read_log(f, id, cursor, max, &r);
        if (r.len == 0) break;
        assert_int_equal(r.next, cursor + r.len);
        assert_true(n + r.len <= cap);
        memcpy(out + n, r.data, r.len);
        n += r.len;
        cursor = r.next;
    }
    *end = cursor;
    free(r.data);
    return n;
}

static void test_execd_background_log(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    sg_run_req_t req = {.command = "for i in 1 2 3; do echo line$i; done; printf tail",
                        .background = 1};
    start_ok(&f, &req, &x, id);
    spin_until(&f, &x.done);
    const char *want = "line1\nline2\nline3\ntail";
    size_t wl = strlen(want);

    rd_t r = {0};
    read_log(&f, id, 0, 1 << 20, &r);
    assert_int_equal(r.len, wl);
    assert_memory_equal(r.data, want, wl);
    assert_int_equal(r.next, wl);
    read_log(&f, id, 6, 1 << 20, &r);
    assert_string_equal(r.data, want + 6);
    assert_int_equal(r.next, wl);
    read_log(&f, id, 6, 3, &r); /* a bounded answer */
    assert_string_equal(r.data, "lin");
    assert_int_equal(r.next, 9);
    read_log(&f, id, wl, 100, &r); /* at the end: empty, cursor echoed */
    assert_int_equal(r.len, 0);
    assert_int_equal(r.next, wl);
    read_log(&f, id, 1000, 100, &r); /* past the end: same */
    assert_int_equal(r.len, 0);
    assert_int_equal(r.next, 1000);
    free(r.data);

    /* The file holds the bytes. */
    struct stat sb;
    const char *path = sg_runner_log_path(f.r, id);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, (off_t)wl);
    sg_run_status_t st;
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.background, 1);
    assert_int_equal(st.log_size, wl);
    assert_int_equal(st.log_truncated, 0);
    run_free(&x);

    /* A read still pending when the engine closes completes with SG_ECLOSED. */
    {
        fx_t g;
        fx_open(&g, NULL);
        run_t gx;
        char gid[SG_RUN_ID_LEN + 1];
        sg_run_req_t greq = {.command = "echo hi", .background = 1};
        start_ok(&g, &greq, &gx, gid);
        spin_until(&g, &gx.done);
        rd_t gr = {0};
        assert_int_equal(sg_runner_log_read(g.r, gid, 0, 100, on_log, &gr, NULL), 0);
        fx_close(&g);
        assert_int_equal(gr.calls, 1);
        assert_int_equal(gr.err, SG_ECLOSED);
        free(gr.data);
        run_free(&gx);
    }

    /* Errors: a foreground id, an unknown id. */
    char fid[SG_RUN_ID_LEN + 1];
    run_cmd(&f, "echo fg", &x, fid);
    sg_run_err_t err;
    assert_int_equal(sg_runner_log_read(f.r, fid, 0, 10, on_log, &r, &err), SG_EINVAL);
    char w[128];
    snprintf(w, sizeof(w), "command %s is not running in background", fid);
    assert_string_equal(err.msg, w);
    assert_int_equal(sg_runner_log_read(f.r, "zz", 0, 10, on_log, &r, &err), SG_ENOTFOUND);
    assert_string_equal(err.msg, "command not found: zz");
    run_free(&x);

    /* stderr goes to the same log; reads while it runs see what was produced so far. */
    sg_run_req_t req2 = {.command = "echo a; echo b >&2; sleep 100", .background = 1};
    start_ok(&f, &req2, &x, id);
    spin_bytes(&f, &x, 4);
    char buf[64];
    uint64_t end;
    size_t n = read_all(&f, id, 0, 1 << 20, buf, sizeof(buf), &end);
    assert_int_equal(n, 4);
    assert_true(memcmp(buf, "a\nb\n", 4) == 0 || memcmp(buf, "b\na\n", 4) == 0);
    assert_int_equal(end, 4);
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.has_exit, 0);
    assert_int_equal(st.finished_ns, 0);
    assert_int_equal(sg_runner_interrupt(f.r, id, NULL, NULL, &err), 0);
    spin_until(&f, &x.done);
    run_free(&x);
    fx_close(&f);
}

static void test_execd_log_cap_and_backpressure(void **state)
{
    (void)state;
    /* A tiny in-memory buffer forces the pipes to pause and resume many times. */
    sg_runner_cfg_t cfg = {.log_cap = 1000, .log_buf = 4096};
    fx_t f;
    fx_open(&f, &cfg);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    sg_run_req_t req = {.command = "head -c 5000 /dev/zero | tr '\\0' y", .background = 1};
    start_ok(&f, &req, &x, id);
    spin_until(&f, &x.done);
    sg_run_status_t st;
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.log_size, 1000);
    assert_int_equal(st.log_truncated, 1);
    assert_int_equal(x.blen[1], 5000); /* the callbacks still saw everything */
    static char buf[8192];
    uint64_t end;
    size_t n = read_all(&f, id, 0, 300, buf, sizeof(buf), &end);
    assert_int_equal(n, 1000);
    assert_int_equal(end, 1000);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(buf[i], 'y');
    assert_true(stats(&f).log_bytes == 1000);
    spin_ms(&f, 50);
    struct stat sb;
    assert_int_equal(stat(sg_runner_log_path(f.r, id), &sb), 0);
    assert_int_equal(sb.st_size, 1000);
    run_free(&x);
    fx_close(&f);

    /* Under the cap with a 4 KiB buffer: 3 MiB of distinct bytes land in the file exactly. */
    sg_runner_cfg_t cfg2 = {.log_buf = 4096};
    fx_open(&f, &cfg2);
    sg_run_req_t req2 = {.command = "seq 1 400000", .background = 1};
    start_ok(&f, &req2, &x, id);
    spin_until(&f, &x.done);
    assert_int_equal(x.res.exit_code, 0);
    size_t total = x.blen[1];
    assert_true(total > 2000000);
    char *all = malloc(total + 1);
    n = read_all(&f, id, 0, 1 << 20, all, total, &end);
    assert_int_equal(n, total);
    assert_memory_equal(all, x.bytes[1], total);
    free(all);
    assert_true(stats(&f).read_pauses > 0); /* the backpressure path really ran */
    run_free(&x);
    fx_close(&f);
}

static void test_execd_record_expiry_and_eviction(void **state)
{
    (void)state;
    sg_runner_cfg_t cfg = {.record_ttl_ms = 200};
    fx_t f;
    fx_open(&f, &cfg);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    sg_run_req_t req = {.command = "echo x", .background = 1};
    start_ok(&f, &req, &x, id);
    spin_until(&f, &x.done);
    char path[256];
    snprintf(path, sizeof(path), "%s", sg_runner_log_path(f.r, id));
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(n_records(&f), 1);
    for (int i = 0; i < 600 && n_records(&f) > 0; i++)
        spin_ms(&f, 100);
    assert_int_equal(n_records(&f), 0);
    spin_ms(&f, 20);
    assert_int_equal(stat(path, &sb), -1);
    assert_int_equal(errno, ENOENT);
    sg_run_status_t st;
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), SG_ENOTFOUND);
    assert_int_equal(n_live(&f), 0);
    assert_int_equal(stats(&f).expired, 1);
    run_free(&x);
    fx_close(&f);

    /* Bounded table: the oldest finished record goes first; all running -> SG_ETOOBIG. */
    sg_runner_cfg_t cfg2 = {.max_records = 2};
    fx_open(&f, &cfg2);
    char a[SG_RUN_ID_LEN + 1], b[SG_RUN_ID_LEN + 1], c[SG_RUN_ID_LEN + 1];
    run_cmd(&f, "true", &x, a);
    run_free(&x);
    run_cmd(&f, "true", &x, b);
    run_free(&x);
    run_cmd(&f, "true", &x, c);
    run_free(&x);
    assert_int_equal(sg_runner_status(f.r, a, &st, NULL), SG_ENOTFOUND);
    assert_int_equal(stats(&f).evicted, 1);
    assert_int_equal(sg_runner_status(f.r, b, &st, NULL), 0);
    assert_int_equal(sg_runner_status(f.r, c, &st, NULL), 0);
    run_t y, z;
    sg_run_req_t slp = {.command = "sleep 100"};
    start_ok(&f, &slp, &y, a);
    start_ok(&f, &slp, &z, b);
    sg_run_cbs_t cb = cbs_for(&x);
    sg_run_err_t err;
    assert_int_equal(sg_runner_start(f.r, &slp, &cb, c, &err), SG_ETOOBIG);
    fx_close(&f);                /* closing with two commands running */
    assert_int_equal(y.done, 0); /* no callbacks after close */
    run_free(&y);
    run_free(&z);
}

static void sess_run(fx_t *f, const char *sid, const char *cmd, const char *cwd, run_t *x)
{
    sg_run_cbs_t cb = cbs_for(x);
    sg_run_err_t err;
    int rc = sg_runner_session_run(f->r, sid, cmd, cwd, 0, &cb, &err);
    if (rc) fail_msg("session run: %d %s", rc, err.msg);
    spin_until(f, &x->done);
}

static void test_execd_sessions(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    char cwd[128], sid[SG_RUN_SID_LEN + 1], s[1024], want[512];
    snprintf(cwd, sizeof(cwd), "%s/sess/a/b", f.dir);
    sg_run_err_t err;
    assert_int_equal(sg_runner_session_create(f.r, cwd, sid, &err), 0);
    assert_int_equal(strlen(sid), SG_RUN_SID_LEN);
    assert_int_equal(sid[8], '-');
    struct stat sb;
    assert_int_equal(stat(cwd, &sb), 0); /* created */
    run_t x;

    sess_run(&f, sid, "pwd; mkdir -p sub && cd sub && export SG_FOO=bar && echo to-err >&2", NULL,
             &x);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    snprintf(want, sizeof(want), "%s|to-err", cwd);
    assert_string_equal(s, want);
    assert_int_equal(x.res.exit_code, 0);
    assert_string_equal(x.id, sid);
    run_free(&x);

    sess_run(&f, sid, "echo \"$SG_FOO\"; pwd; unset SG_FOO; exit 4", NULL, &x);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    snprintf(want, sizeof(want), "bar|%s/sub", cwd);
    assert_string_equal(s, want);
    assert_int_equal(x.res.exit_code, 4);
    assert_string_equal(x.error, "exit status 4");
    run_free(&x);

    /* The unset persisted, the cwd too; a run's own cwd overrides and then persists. */
    sess_run(&f, sid, "echo \"[${SG_FOO-unset}]\"; pwd", NULL, &x);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    snprintf(want, sizeof(want), "[unset]|%s/sub", cwd);
    assert_string_equal(s, want);
    for (size_t i = 0; i < x.nlines; i++)
        assert_null(strstr(x.lines[i].text, "__sg"));
    run_free(&x);
    sess_run(&f, sid, "pwd", f.dir, &x);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, f.dir);
    run_free(&x);
    sess_run(&f, sid, "pwd", NULL, &x);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, f.dir);
    run_free(&x);

    /* A syntax error is the command's own failure; the session keeps working. */
    sess_run(&f, sid, "echo (", NULL, &x);
    assert_int_equal(x.res.exit_code, 2);
    assert_true(x.nlines >= 1);
    assert_non_null(strstr(x.lines[0].text, "syntax error"));
    run_free(&x);
    sess_run(&f, sid, "pwd", NULL, &x);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, f.dir);
    run_free(&x);

    /* A second session does not see the first one's state. */
    char sid2[SG_RUN_SID_LEN + 1];
    assert_int_equal(sg_runner_session_create(f.r, NULL, sid2, &err), 0);
    assert_string_not_equal(sid, sid2);
    sess_run(&f, sid, "export SG_ONLY1=1", NULL, &x);
    run_free(&x);
    sess_run(&f, sid2, "echo \"[${SG_ONLY1-no}]\"", NULL, &x);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "[no]");
    run_free(&x);

    /* Busy, then delete kills the current run. */
    sg_run_cbs_t cb = cbs_for(&x);
    assert_int_equal(sg_runner_session_run(f.r, sid, "echo go; sleep 100", NULL, 0, &cb, &err), 0);
    run_t y;
    sg_run_cbs_t cb2 = cbs_for(&y);
    assert_int_equal(sg_runner_session_run(f.r, sid, "true", NULL, 0, &cb2, &err), UV_EBUSY);
    spin_lines(&f, &x, 1);
    assert_int_equal(sg_runner_session_delete(f.r, sid, &err), 0);
    spin_until(&f, &x.done);
    assert_int_equal(x.res.exit_code, -1);
    assert_string_equal(x.error, "signal: killed");
    run_free(&x);
    assert_int_equal(sg_runner_session_run(f.r, sid, "true", NULL, 0, &cb2, &err), SG_ENOTFOUND);
    assert_string_equal(err.msg, "context not found");
    assert_int_equal(sg_runner_session_delete(f.r, sid, &err), SG_ENOTFOUND);
    snprintf(want, sizeof(want), "session %s not found", sid);
    assert_string_equal(err.msg, want);

    /* The session's directory vanished: a well-formed start error, no callbacks. */
    char gone[128], sid3[SG_RUN_SID_LEN + 1];
    snprintf(gone, sizeof(gone), "%s/gone", f.dir);
    assert_int_equal(sg_runner_session_create(f.r, gone, sid3, &err), 0);
    assert_int_equal(rmdir(gone), 0);
    cb2 = cbs_for(&y);
    assert_int_equal(sg_runner_session_run(f.r, sid3, "true", NULL, 0, &cb2, &err), UV_ENOENT);
    snprintf(want, sizeof(want), "chdir %s: no such file or directory", gone);
    assert_string_equal(err.msg, want);
    spin_ms(&f, 20);
    assert_int_equal(y.done, 0);

    /* Interrupt by session id deletes the session (no run: done right away). */
    assert_int_equal(sg_runner_interrupt(f.r, sid2, on_waiter, &y, &err), 0);
    assert_int_equal(y.waiter_calls, 1);
    assert_int_equal(sg_runner_session_delete(f.r, sid2, &err), SG_ENOTFOUND);
    fx_close(&f);
}

static void test_execd_child_signal_state(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    /* The agent ignores SIGPIPE; block a signal too: children must see neither. */
    struct sigaction sa;
    assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
    assert_true(sa.sa_handler == SIG_IGN);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    assert_int_equal(sigprocmask(SIG_BLOCK, &set, &old), 0);
    run_t x;
    char id[SG_RUN_ID_LEN + 1], s[256];
    run_cmd(&f, "exec grep -E '^Sig(Blk|Ign)' /proc/self/status", &x, id);
    sigprocmask(SIG_SETMASK, &old, NULL);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "SigBlk:\t0000000000000000|SigIgn:\t0000000000000000");
    run_free(&x);

    /* The child leads its own process group and session. */
    run_cmd(&f, "echo $$; cut -d' ' -f5,6 /proc/$$/stat", &x, id);
    assert_true(x.nlines >= 2);
    int pid = atoi(x.lines[0].text), pg = 0, sid = 0;
    assert_int_equal(sscanf(x.lines[1].text, "%d %d", &pg, &sid), 2);
    assert_int_equal(pg, pid);
    assert_int_equal(sid, pid);
    run_free(&x);
    fx_close(&f);
}

static void test_execd_uid_gid(void **state)
{
    (void)state;
    if (getuid() != 0) skip();
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1], s[256];
    /* uid only: primary gid from passwd, supplementary groups cleared. */
    sg_run_req_t req = {.command = "id -u; id -g; id -G", .cwd = "/", .has_uid = 1, .uid = 65534};
    struct passwd *pw = getpwuid(65534);
    if (!pw) skip();
    char want[128];
    snprintf(want, sizeof(want), "65534|%u|%u", (unsigned)pw->pw_gid, (unsigned)pw->pw_gid);
    start_ok(&f, &req, &x, id);
    spin_until(&f, &x.done);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, want);
    run_free(&x);
    /* Explicit gid. */
    sg_run_req_t req2 = {.command = "id -u; id -g",
                         .cwd = "/",
                         .has_uid = 1,
                         .uid = 65534,
                         .has_gid = 1,
                         .gid = 4242};
    start_ok(&f, &req2, &x, id);
    spin_until(&f, &x.done);
    joined(&x, SG_RUN_STDOUT, s, sizeof(s));
    assert_string_equal(s, "65534|4242");
    run_free(&x);
    /* Unknown uid without gid: start error with a record. */
    sg_run_cbs_t cb = cbs_for(&x);
    sg_run_err_t err;
    sg_run_req_t req3 = {.command = "true", .has_uid = 1, .uid = 3999999};
    assert_int_equal(sg_runner_start(f.r, &req3, &cb, id, &err), UV_EINVAL);
    assert_string_equal(err.msg, "user: unknown userid 3999999");
    sg_run_status_t st;
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.exit_code, 255);
    fx_close(&f);
}

static void test_execd_grace_and_close(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    /* A grandchild keeps the pipes open: completion still comes (after the EOF grace). */
    run_cmd(&f, "sleep 100 & echo $!", &x, id);
    assert_int_equal(x.res.exit_code, 0);
    int gpid = atoi(x.lines[0].text);
    assert_false(pid_dead(gpid)); /* left running, as Go leaves it */
    assert_int_equal(n_live(&f), 1);
    run_free(&x);

    /* Still running at close: a foreground and a background command. */
    run_t y, z;
    char a[SG_RUN_ID_LEN + 1], b[SG_RUN_ID_LEN + 1];
    sg_run_req_t r1 = {.command = "echo $$; sleep 100"};
    sg_run_req_t r2 = {.command = "echo $$; sleep 100", .background = 1};
    start_ok(&f, &r1, &y, a);
    start_ok(&f, &r2, &z, b);
    spin_lines(&f, &y, 1);
    spin_lines(&f, &z, 1);
    int p1 = atoi(y.lines[0].text), p2 = atoi(z.lines[0].text);
    fx_close(&f);
    assert_int_equal(y.done, 0);
    assert_true(wait_dead(gpid));
    assert_true(wait_dead(p1));
    assert_true(wait_dead(p2));
    run_free(&y);
    run_free(&z);
}

static void test_execd_signal(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    run_t x;
    char id[SG_RUN_ID_LEN + 1];
    sg_run_err_t err;
    sg_run_status_t st;

    /* TERM ends a sleep long before its 30 s: a signal death with Go's text, recorded. */
    sg_run_req_t req = {.command = "sleep 30"};
    start_ok(&f, &req, &x, id);
    assert_int_equal(sg_runner_signal(f.r, id, SIGTERM, &err), 0);
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.signalled, SIGTERM);
    spin_until(&f, &x.done);
    assert_int_equal(x.res.exit_code, -1);
    assert_int_equal(x.res.term_signal, SIGTERM);
    assert_string_equal(x.error, "signal: terminated");
    assert_int_equal(x.res.signalled, SIGTERM);
    assert_int_equal(x.res.interrupted, 0);
    assert_int_equal(x.res.timed_out, 0);
    assert_true(x.res.exec_ms < 20000);
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.exit_code, -1);
    assert_int_equal(st.term_signal, SIGTERM);
    assert_int_equal(st.signalled, SIGTERM);
    assert_string_equal(st.error, "signal: terminated");
    /* Finished: not running, nothing sent. */
    assert_int_equal(sg_runner_signal(f.r, id, SIGTERM, &err), UV_ESRCH);
    char want[128];
    snprintf(want, sizeof(want), "command %s is not running", id);
    assert_string_equal(err.msg, want);
    run_free(&x);

    /* Unknown ids (a session id is not a command) and numbers outside 1..64. */
    assert_int_equal(sg_runner_signal(f.r, "nope", SIGTERM, &err), SG_ENOTFOUND);
    assert_string_equal(err.msg, "command not found: nope");
    char sid[SG_RUN_SID_LEN + 1];
    assert_int_equal(sg_runner_session_create(f.r, NULL, sid, NULL), 0);
    assert_int_equal(sg_runner_signal(f.r, sid, SIGTERM, &err), SG_ENOTFOUND);
    assert_int_equal(sg_runner_signal(f.r, id, 0, &err), SG_EINVAL);
    assert_string_equal(err.msg, "invalid signal 0 (1..64)");
    assert_int_equal(sg_runner_signal(f.r, id, 65, &err), SG_EINVAL);

    /* A trapped signal is just an event for the command: it keeps running. The whole group
     * gets it, so the `sleep` child dies of USR1 and the loop goes on. Then TERM ends it. */
    sg_run_req_t req2 = {.command = "trap 'echo got-usr1' USR1; echo ready; "
                                    "while :; do sleep 0.05; done"};
    start_ok(&f, &req2, &x, id);
    spin_lines(&f, &x, 1);
    assert_string_equal(x.lines[0].text, "ready");
    assert_int_equal(sg_runner_signal(f.r, id, SIGUSR1, &err), 0);
    /* bash reports the sleep's death on stderr ("User defined signal 1"), in any order. */
    while (!has_line(&x, SG_RUN_STDOUT, "got-usr1") && !x.done)
        spin_lines(&f, &x, x.nlines + 1);
    assert_true(has_line(&x, SG_RUN_STDOUT, "got-usr1"));
    assert_int_equal(x.done, 0);
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.signalled, SIGUSR1);
    assert_int_equal(sg_runner_signal(f.r, id, SIGTERM, &err), 0);
    spin_until(&f, &x.done);
    assert_int_equal(x.res.term_signal, SIGTERM);
    assert_string_equal(x.error, "signal: terminated");
    assert_int_equal(x.res.signalled, SIGTERM); /* the last one sent */
    run_free(&x);

    /* STOP holds a command (the shell shows state T), CONT resumes it; it then exits
     * normally with the signal recorded. */
    sg_run_req_t req3 = {.command = "echo $$; sleep 2; echo after"};
    start_ok(&f, &req3, &x, id);
    spin_lines(&f, &x, 1);
    int spid = atoi(x.lines[0].text);
    assert_true(spid > 1);
    assert_int_equal(sg_runner_signal(f.r, id, SIGSTOP, &err), 0);
    assert_true(wait_state(spid, 'T'));
    assert_int_equal(x.done, 0);
    assert_int_equal(sg_runner_signal(f.r, id, SIGCONT, &err), 0);
    spin_until(&f, &x.done);
    assert_int_equal(x.res.exit_code, 0);
    assert_string_equal(x.error, "");
    assert_int_equal(x.res.signalled, SIGCONT);
    assert_int_equal(x.nlines, 2);
    assert_string_equal(x.lines[1].text, "after");
    run_free(&x);

    /* Background commands too; KILL reaches the grandchild in the group. */
    sg_run_req_t req4 = {.command = "sleep 100 & echo $!; sleep 100", .background = 1};
    start_ok(&f, &req4, &x, id);
    spin_lines(&f, &x, 1);
    int gpid = atoi(x.lines[0].text);
    assert_true(gpid > 1);
    assert_int_equal(sg_runner_signal(f.r, id, SIGKILL, &err), 0);
    spin_until(&f, &x.done);
    assert_int_equal(x.res.term_signal, SIGKILL);
    assert_string_equal(x.error, "signal: killed");
    assert_true(wait_dead(gpid));
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.background, 1);
    assert_int_equal(st.signalled, SIGKILL);
    assert_string_equal(st.error, "signal: killed");
    run_free(&x);

    /* Without sg_runner_signal nothing is recorded, even for a signal death (timeout). */
    sg_run_req_t req5 = {.command = "sleep 30", .timeout_ms = 100};
    start_ok(&f, &req5, &x, id);
    spin_until(&f, &x.done);
    assert_int_equal(x.res.signalled, 0);
    assert_string_equal(x.error, "signal: killed");
    run_free(&x);
    fx_close(&f);
}

static void test_execd_signal_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int num;
    } ok[] = {{"SIGTERM", SIGTERM}, {"TERM", SIGTERM},    {"term", SIGTERM},   {"SigTerm", SIGTERM},
              {"sigterm", SIGTERM}, {"HUP", SIGHUP},      {"INT", SIGINT},     {"QUIT", SIGQUIT},
              {"KILL", SIGKILL},    {"USR1", SIGUSR1},    {"usr2", SIGUSR2},   {"CONT", SIGCONT},
              {"STOP", SIGSTOP},    {"ALRM", SIGALRM},    {"WINCH", SIGWINCH}, {"PIPE", SIGPIPE},
              {"SIGIOT", SIGABRT},  {"SIGCHLD", SIGCHLD}, {"SYS", SIGSYS},     {"1", 1},
              {"15", 15},           {"015", 15},          {"64", 64}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (sg_runner_signum(ok[i].name) != ok[i].num)
            fail_msg("%s: got %d, want %d", ok[i].name, sg_runner_signum(ok[i].name), ok[i].num);
    }
    static const char *bad[] = {
        "",   "SIG", "FOO", "SIGSIGTERM", "SIG15", "0",     "65",
        "-1", "+15", "15x", "1.5",        " TERM", "TERM ", "999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (sg_runner_signum(bad[i]) != SG_EINVAL)
            fail_msg("\"%s\": got %d, want SG_EINVAL", bad[i], sg_runner_signum(bad[i]));
    }
    assert_int_equal(sg_runner_signum(NULL), SG_EINVAL);
}

/* ---- consumer hold (sg_runner_hold) ------------------------------------------------------- */

/* A consumer that checks `seq` output as it comes (no per-line storage) and can hold the
 * command from inside its callbacks, as the HTTP layer does when its connection is full. */
typedef struct seqc {
    sg_runner_t *r;
    uint64_t bytes;
    long next;        /* the number the next line must carry */
    int bad;          /* lines that were not `next` */
    int pid;          /* first line, when the command prints $$ first */
    uint64_t hold_at; /* hold once this many bytes were seen (0 = never) */
    int held;
    int done;
    sg_run_result_t res;
} seqc_t;

static void seqc_chunk(void *ud, sg_run_stream_t s, const char *d, size_t n, uint64_t so,
                       uint64_t co)
{
    (void)s, (void)d, (void)so, (void)co;
    seqc_t *q = ud;
    q->bytes += n;
    if (q->hold_at && !q->held && q->bytes >= q->hold_at) {
        q->held = 1;
        assert_int_equal(sg_runner_hold(q->r, q, 1), 1);
    }
}

static void seqc_line(void *ud, sg_run_stream_t s, const char *t, size_t n)
{
    (void)s;
    seqc_t *q = ud;
    char buf[32];
    if (n >= sizeof(buf)) {
        q->bad++;
        return;
    }
    memcpy(buf, t, n);
    buf[n] = '\0';
    long v = strtol(buf, NULL, 10);
    if (q->pid == -1) {
        q->pid = (int)v;
        return;
    }
    if (v != q->next) q->bad++;
    q->next++;
}

static void seqc_done(void *ud, const sg_run_result_t *res)
{
    seqc_t *q = ud;
    q->done++;
    q->res = *res;
    q->res.id = NULL;
    q->res.error = NULL;
}

static sg_run_cbs_t seqc_init(seqc_t *q, sg_runner_t *r, uint64_t hold_at, int want_pid)
{
    memset(q, 0, sizeof(*q));
    q->r = r;
    q->next = 1;
    q->pid = want_pid ? -1 : 0;
    q->hold_at = hold_at;
    sg_run_cbs_t c = {seqc_chunk, seqc_line, seqc_done, q};
    return c;
}

/* /proc/<pid>/wchan (the kernel function a sleeping task waits in), "" if unreadable. */
static void pid_wchan(int pid, char *out, size_t cap)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/wchan", pid);
    out[0] = '\0';
    FILE *fp = fopen(p, "r");
    if (!fp) return;
    size_t n = fread(out, 1, cap - 1, fp);
    fclose(fp);
    out[n] = '\0';
}

/* The state letter of /proc/<pid>/stat (R, S, D, Z, ...), 0 if unreadable. */
static int pid_state(int pid)
{
    char p[64], buf[512];
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    FILE *fp = fopen(p, "r");
    if (!fp) return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

static void test_execd_hold(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    sg_run_err_t err;
    char id[SG_RUN_ID_LEN + 1];
    seqc_t q;
    const long N = 2000000;
    const uint64_t AT = 1 << 20;

    /* Held from inside a callback at 1 MiB: the output stops (at most the rest of that read,
     * 64 KiB), the command blocks writing its pipe, and on release it all comes, in order. */
    sg_run_cbs_t cb = seqc_init(&q, f.r, AT, 1);
    sg_run_req_t req = {.command = "echo $$; exec seq 1 2000000"};
    assert_int_equal(sg_runner_start(f.r, &req, &cb, id, &err), 0);
    while (!q.held && !q.done)
        spin_ms(&f, 5);
    assert_int_equal(q.held, 1);
    spin_ms(&f, 300);
    uint64_t seen = q.bytes;
    assert_true(seen < AT + 64 * 1024);
    spin_ms(&f, 300);
    assert_int_equal(q.bytes, seen); /* nothing read while held */
    assert_int_equal(q.done, 0);
    assert_true(q.pid > 0);
    /* Asleep in its write: libuv's stdio "pipes" are socketpairs, so the kernel shows a socket
     * send wait (sock_alloc_send_pskb), or a pipe write on other setups. */
    assert_int_equal(pid_state(q.pid), 'S');
    char wchan[128];
    pid_wchan(q.pid, wchan, sizeof(wchan));
    if (wchan[0] && strcmp(wchan, "0") != 0 && !strstr(wchan, "sock") && !strstr(wchan, "pipe"))
        fail_msg("pid %d sleeps in %s, not a write", q.pid, wchan); /* "0": wchan hidden */
    sg_run_status_t st;
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.running, 1);
    assert_int_equal(stats(&f).out_holds, 1);
    assert_int_equal(sg_runner_hold(f.r, &q, 0), 1);
    spin_until(&f, &q.done);
    assert_int_equal(q.res.exit_code, 0);
    assert_int_equal(q.bad, 0);
    assert_int_equal(q.next, N + 1);
    assert_int_equal(sg_runner_hold(f.r, &q, 1), 0); /* finished: nothing to hold */

    /* Exited with its output still in the pipe: completion waits for the reader, then comes
     * with the exit status. */
    cb = seqc_init(&q, f.r, 0, 0);
    req.command = "seq 1 1000; exit 3";
    assert_int_equal(sg_runner_start(f.r, &req, &cb, id, &err), 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 1), 1);
    spin_ms(&f, 400); /* well past the EOF grace (100 ms) */
    assert_int_equal(q.done, 0);
    assert_int_equal(q.bytes, 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 0), 1);
    spin_until(&f, &q.done);
    assert_int_equal(q.res.exit_code, 3);
    assert_int_equal(q.next, 1001);
    assert_int_equal(q.bad, 0);

    /* Timeout and interrupt still work while held and need no release: once the killed
     * leader exited, the rest of the pipes is read and the command completes. */
    cb = seqc_init(&q, f.r, 0, 0);
    sg_run_req_t treq = {.command = "seq 1 100000000", .timeout_ms = 300};
    assert_int_equal(sg_runner_start(f.r, &treq, &cb, id, &err), 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 1), 1);
    spin_until(&f, &q.done);
    assert_int_equal(q.res.timed_out, 1);
    assert_int_equal(q.res.term_signal, SIGKILL);
    assert_true(q.bytes <= 1 << 20); /* at most what the socketpair held */
    assert_true(q.bad <= 1);         /* the kill may cut the last line */

    run_t w;
    memset(&w, 0, sizeof(w));
    cb = seqc_init(&q, f.r, 0, 0);
    req.command = "seq 1 100000000";
    assert_int_equal(sg_runner_start(f.r, &req, &cb, id, &err), 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 1), 1);
    spin_ms(&f, 100);
    assert_int_equal(sg_runner_interrupt(f.r, id, on_waiter, &w, &err), 0);
    spin_until(&f, &q.done);
    assert_int_equal(q.res.interrupted, 1);
    assert_int_equal(q.res.term_signal, SIGTERM);
    assert_int_equal(w.waiter_calls, 1);

    /* A signal reaches a held command; its death completes once the pipe is drained. */
    cb = seqc_init(&q, f.r, 0, 0);
    assert_int_equal(sg_runner_start(f.r, &req, &cb, id, &err), 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 1), 1);
    spin_ms(&f, 100);
    assert_int_equal(sg_runner_signal(f.r, id, SIGUSR1, &err), 0);
    spin_ms(&f, 200);
    assert_int_equal(q.done, 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 0), 1);
    spin_until(&f, &q.done);
    assert_int_equal(q.res.term_signal, SIGUSR1);
    assert_true(q.bytes > 0);
    assert_true(q.bad <= 1);

    /* Session runs are held the same way (matched by the callbacks' ud). */
    char sid[SG_RUN_SID_LEN + 1];
    assert_int_equal(sg_runner_session_create(f.r, NULL, sid, &err), 0);
    cb = seqc_init(&q, f.r, 0, 0);
    assert_int_equal(sg_runner_session_run(f.r, sid, "seq 1 300000", NULL, 0, &cb, &err), 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 1), 1);
    spin_ms(&f, 300);
    assert_int_equal(q.bytes, 0);
    assert_int_equal(q.done, 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 0), 1);
    spin_until(&f, &q.done);
    assert_int_equal(q.res.exit_code, 0);
    assert_int_equal(q.next, 300001);
    assert_int_equal(q.bad, 0);
    fx_close(&f);

    /* With the log backpressure too (4 KiB log buffer): a log write completing does not
     * resume a held command, and the log still gets every byte. */
    sg_runner_cfg_t cfg = {.log_buf = 4096};
    fx_open(&f, &cfg);
    cb = seqc_init(&q, f.r, 256 * 1024, 0);
    sg_run_req_t breq = {.command = "seq 1 400000", .background = 1};
    assert_int_equal(sg_runner_start(f.r, &breq, &cb, id, &err), 0);
    while (!q.held && !q.done)
        spin_ms(&f, 5);
    spin_ms(&f, 200);
    seen = q.bytes;
    spin_ms(&f, 300);
    assert_int_equal(q.bytes, seen);
    assert_int_equal(q.done, 0);
    assert_int_equal(sg_runner_hold(f.r, &q, 0), 1);
    spin_until(&f, &q.done);
    assert_int_equal(q.bad, 0);
    assert_int_equal(q.next, 400001);
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.log_size, q.bytes);
    assert_true(stats(&f).read_pauses > 0);
    fx_close(&f);
}

/* ---- foreground log (keep_log), the stream index, log followers ---- */

typedef struct kchunk {
    int stream;
    uint64_t so, co;
    size_t off, len; /* into kl_t.all */
} kchunk_t;

typedef struct kl {
    run_t x; /* lines, done, result */
    kchunk_t *ch;
    size_t nch, cap;
    char *all;
    size_t alen;
    sg_runner_t *r;
    int hold_first; /* hold the output at the first chunk */
    int held;
    int wakes;
} kl_t;

static void kl_chunk(void *ud, sg_run_stream_t s, const char *d, size_t n, uint64_t so, uint64_t co)
{
    kl_t *k = ud;
    if (k->nch == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->ch = realloc(k->ch, k->cap * sizeof(*k->ch));
    }
    k->ch[k->nch++] = (kchunk_t){(int)s, so, co, k->alen, n};
    k->all = realloc(k->all, k->alen + n);
    memcpy(k->all + k->alen, d, n);
    k->alen += n;
    k->x.comb += n;
    if (k->hold_first && !k->held) {
        k->held = 1;
        assert_int_equal(sg_runner_hold(k->r, k, 1), 1);
    }
}
static void kl_line(void *ud, sg_run_stream_t s, const char *t, size_t n)
{
    on_line(&((kl_t *)ud)->x, s, t, n);
}
static void kl_done(void *ud, const sg_run_result_t *res)
{
    on_done(&((kl_t *)ud)->x, res);
}
static void kl_wake(void *ud)
{
    ((kl_t *)ud)->wakes++;
}

static void kl_start(fx_t *f, kl_t *k, const char *command, char id[SG_RUN_ID_LEN + 1])
{
    memset(k, 0, sizeof(*k));
    k->r = f->r;
    sg_run_cbs_t cb = {kl_chunk, kl_line, kl_done, k};
    sg_run_req_t req = {.command = command, .keep_log = 1};
    sg_run_err_t err;
    int rc = sg_runner_start(f->r, &req, &cb, id, &err);
    if (rc != 0) fail_msg("start failed: %d %s", rc, err.msg);
}

static void kl_free(kl_t *k)
{
    run_free(&k->x);
    free(k->ch);
    free(k->all);
}

/* Every chunk the consumer saw is at its combined_offset in the log, and the log's stream
 * index gives the chunk's stream and stream offset. */
static void kl_check_log(fx_t *f, kl_t *k, const char *id)
{
    char *log = malloc(k->alen + 1);
    uint64_t end;
    size_t n = read_all(f, id, 0, 1 << 20, log, k->alen, &end);
    assert_int_equal(n, k->alen);
    assert_memory_equal(log, k->all, n);
    for (size_t i = 0; i < k->nch; i++) {
        kchunk_t *c = &k->ch[i];
        assert_int_equal(c->co, c->off); /* combined_offset = log offset */
        assert_memory_equal(log + c->co, k->all + c->off, c->len);
        sg_run_stream_t st = 0;
        uint64_t so = 0, run_end = 0;
        assert_int_equal(sg_runner_log_stream(f->r, id, c->co, &st, &so, &run_end), 0);
        assert_int_equal(st, c->stream);
        assert_int_equal(so, c->so);
        assert_true(run_end >= c->co + c->len);
        assert_int_equal(sg_runner_log_stream(f->r, id, c->co + c->len - 1, &st, &so, &run_end), 0);
        assert_int_equal(st, c->stream);
        assert_int_equal(so, c->so + c->len - 1);
    }
    free(log);
}

static void test_execd_keep_log(void **state)
{
    (void)state;
    fx_t f;
    fx_open(&f, NULL);
    kl_t k;
    char id[SG_RUN_ID_LEN + 1];

    /* Foreground with keep_log: streamed as usual AND logged, stderr interleaved. */
    kl_start(&f, &k, "for i in $(seq 1 300); do echo out$i; echo err$i >&2; done", id);
    spin_until(&f, &k.x.done);
    assert_int_equal(k.x.res.exit_code, 0);
    assert_int_equal(k.x.nlines, 600);
    sg_run_status_t st;
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.background, 0);
    assert_int_equal(st.has_log, 1);
    assert_int_equal(st.log_size, k.alen);
    assert_true(k.nch > 2);
    kl_check_log(&f, &k, id);
    struct stat sb;
    spin_ms(&f, 30); /* the last write lands */
    assert_int_equal(stat(sg_runner_log_path(f.r, id), &sb), 0);
    assert_int_equal(sb.st_size, (off_t)k.alen);
    /* Completed: a follower has something to do at once. */
    assert_int_equal(sg_runner_log_wait(f.r, id, k.alen, kl_wake, &k, NULL), 1);
    kl_free(&k);

    /* Without keep_log a foreground command has no log. */
    run_t x;
    char fid[SG_RUN_ID_LEN + 1];
    run_cmd(&f, "echo fg", &x, fid);
    assert_int_equal(sg_runner_status(f.r, fid, &st, NULL), 0);
    assert_int_equal(st.has_log, 0);
    assert_string_equal(sg_runner_log_path(f.r, fid), "");
    sg_run_err_t err;
    assert_int_equal(sg_runner_log_wait(f.r, fid, 0, kl_wake, &k, &err), SG_EINVAL);
    assert_int_equal(sg_runner_log_wait(f.r, "zz", 0, kl_wake, &k, &err), SG_ENOTFOUND);
    run_free(&x);

    /* A follower caught up with a running command is woken when the log grows, then when it
     * completes; unwait drops a registration. */
    kl_start(&f, &k, "echo a; sleep 0.3; echo b; sleep 0.3", id);
    spin_bytes(&f, &k.x, 2);
    assert_int_equal(sg_runner_log_wait(f.r, id, 0, kl_wake, &k, NULL), 1); /* 2 bytes > 0 */
    assert_int_equal(sg_runner_log_wait(f.r, id, 2, kl_wake, &k, NULL), 0);
    spin_until(&f, &k.wakes);
    assert_int_equal(k.x.comb, 4);
    assert_int_equal(k.x.done, 0);
    k.wakes = 0;
    assert_int_equal(sg_runner_log_wait(f.r, id, 4, kl_wake, &k, NULL), 0);
    spin_until(&f, &k.wakes); /* completion */
    assert_int_equal(k.x.done, 1);
    k.wakes = 0;
    kl_free(&k);
    kl_start(&f, &k, "sleep 0.2; echo late", id);
    assert_int_equal(sg_runner_log_wait(f.r, id, 0, kl_wake, &k, NULL), 0);
    sg_runner_log_unwait(f.r, &k);
    spin_until(&f, &k.x.done);
    assert_int_equal(k.wakes, 0);
    kl_free(&k);
    fx_close(&f);

    /* A held consumer and log backpressure together: nothing is lost, the log keeps every
     * byte the consumer gets, and both pauses really happened. */
    sg_runner_cfg_t cfg = {.log_buf = 4096};
    fx_open(&f, &cfg);
    kl_start(&f, &k, "seq 1 200000", id);
    k.hold_first = 1;
    spin_until(&f, &k.held);
    spin_ms(&f, 200);
    size_t at_hold = k.alen;
    assert_true(at_hold <= 2 * 65536); /* at most the read under way per pipe */
    assert_int_equal(sg_runner_status(f.r, id, &st, NULL), 0);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.log_size, k.alen); /* the log kept up with what was read */
    assert_int_equal(sg_runner_hold(f.r, &k, 0), 1);
    spin_until(&f, &k.x.done);
    assert_int_equal(k.x.res.exit_code, 0);
    assert_int_equal(k.x.nlines, 200000);
    assert_true(stats(&f).out_holds >= 1);
    assert_true(stats(&f).read_pauses > 0);
    kl_check_log(&f, &k, id);
    kl_free(&k);
    fx_close(&f);

    /* The stream index is bounded: past log_index_max switches the stream is not known. */
    sg_runner_cfg_t cfg2 = {.log_index_max = 4};
    fx_open(&f, &cfg2);
    kl_start(&f, &k,
             "for i in 1 2 3 4 5 6; do echo o$i; sleep 0.02; echo e$i >&2; sleep 0.02; done", id);
    spin_until(&f, &k.x.done);
    sg_run_stream_t s = 0;
    uint64_t so = 0, re = 0;
    assert_int_equal(sg_runner_log_stream(f.r, id, 0, &s, &so, &re), 0);
    assert_int_equal(s, SG_RUN_STDOUT);
    assert_int_equal(re, 3); /* "o1\n", then stderr */
    assert_int_equal(sg_runner_log_stream(f.r, id, 3, &s, &so, &re), 0);
    assert_int_equal(s, SG_RUN_STDERR);
    assert_int_equal(so, 0);
    assert_int_equal(sg_runner_log_stream(f.r, id, 12, &s, &so, &re), 1); /* 5th switch on */
    assert_int_equal(re, UINT64_MAX);
    assert_int_equal(sg_runner_log_stream(f.r, "zz", 0, &s, &so, &re), SG_ENOTFOUND);
    kl_free(&k);
    fx_close(&f);
}

static void split_line(void *ud, sg_run_stream_t s, const char *t, size_t n)
{
    on_line(ud, s, t, n);
}

static void test_execd_split_public(void **state)
{
    (void)state;
    run_t x;
    cbs_for(&x);
    sg_run_split_t *p = sg_run_split_new(4, split_line, &x);
    sg_run_split_feed(p, SG_RUN_STDOUT, "ab\r", 3);
    sg_run_split_feed(p, SG_RUN_STDERR, "e1\n\nlong", 8);
    sg_run_split_feed(p, SG_RUN_STDOUT, "\ncd", 3);
    sg_run_split_flush(p);
    sg_run_split_free(p);
    char b[128];
    joined(&x, 1, b, sizeof(b));
    assert_string_equal(b, "ab|cd");
    joined(&x, 2, b, sizeof(b));
    assert_string_equal(b, "e1|\n|long");
    run_free(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_execd_exit_and_lines),
        cmocka_unit_test(test_execd_line_splitting),
        cmocka_unit_test(test_execd_long_line_pieces),
        cmocka_unit_test(test_execd_byte_exact_chunks),
        cmocka_unit_test(test_execd_timeout_kills_group),
        cmocka_unit_test(test_execd_interrupt),
        cmocka_unit_test(test_execd_validation_and_start_errors),
        cmocka_unit_test(test_execd_env_layers),
        cmocka_unit_test(test_execd_shell_fallback),
        cmocka_unit_test(test_execd_concurrent_no_crosstalk),
        cmocka_unit_test(test_execd_background_log),
        cmocka_unit_test(test_execd_log_cap_and_backpressure),
        cmocka_unit_test(test_execd_record_expiry_and_eviction),
        cmocka_unit_test(test_execd_sessions),
        cmocka_unit_test(test_execd_child_signal_state),
        cmocka_unit_test(test_execd_uid_gid),
        cmocka_unit_test(test_execd_grace_and_close),
        cmocka_unit_test(test_execd_signal),
        cmocka_unit_test(test_execd_signal_names),
        cmocka_unit_test(test_execd_hold),
        cmocka_unit_test(test_execd_keep_log),
        cmocka_unit_test(test_execd_split_public),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
