/* test_seglog.c: segment files (src/lib/seglog.c) on a real loop and real files.
 *
 * Every test runs in a fresh temporary directory, ends with uv_loop_close() == 0 (no handle
 * left open) and with every thread-pool request the module issued called back (a request
 * issued without a callback would have run synchronously on the loop thread and never be
 * counted as done). Every callback asserts it runs on the loop thread. Events are generated
 * from their id (sizes, streams, kinds vary), so each record read back is checked field by
 * field, output offsets included.
 *
 *   round trip     10,000 events across many rotations: every field back, file bytes exact
 *   batching       far fewer writes than appends; the flush timer writes a small batch; sync
 *   backpressure   append says 1 at max_pending, drops past twice that, on_drain follows
 *   retention      the oldest segments are deleted and reported, the rest reads back
 *   torn tail      a cut + garbage tail of the last segment is ignored (torn = 1); reopening
 *                  truncates it and continues the ids and output offsets
 *   corruption     a bad CRC in a sealed segment is an error naming the file and offset
 *   kill -9        a forked writer syncs and reports; after SIGKILL everything reported reads
 *   close          flushes what is pending, even before the open completed
 *   failure        an impossible directory reports on_error; sync and close still answer
 *   remove         deletes the directory tree; a missing one is fine
 *   read from      resuming at a record's (seq, end) gives exactly the records after it
 *   set max bytes  a lower bound at runtime deletes the oldest segments, the rest reads */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/seglog.h"
#include "seglog_int.h"

#define MAX_ID 30000
static uint64_t out_at[MAX_ID + 2]; /* output offset of event id (ids from 1) */
static uv_thread_t loop_thread;

static void assert_loop_thread(void)
{
    uv_thread_t self = uv_thread_self();
    assert_true(uv_thread_equal(&self, &loop_thread));
}

/* Event id's fields. */
static size_t gen(uint64_t id, char *json, const char **type, int *kind, int *stream,
                  uint32_t *out_len)
{
    int st = (int)(id % 3);
    *type = st == 1 ? "stdout" : st == 2 ? "stderr" : "execution_count";
    *kind = id % 7 == 0;
    *stream = st;
    size_t pad = (size_t)(id * 37 % 400);
    int n = snprintf(json, 64, "{\"i\":%" PRIu64 ",\"t\":\"", id);
    memset(json + n, 'a' + (int)(id % 26), pad);
    memcpy(json + n + pad, "\"}", 2);
    *out_len = st ? (uint32_t)pad + 1 : 0;
    return (size_t)n + pad + 2;
}

static size_t rec_size(uint64_t id)
{
    char j[512];
    const char *t;
    int k, s;
    uint32_t o;
    size_t jl = gen(id, j, &t, &k, &s, &o);
    return sg__seg_record_size(strlen(t), jl);
}

static int append_id(sg_seglog_t *g, uint64_t id)
{
    char j[512];
    const char *t;
    int k, s;
    uint32_t o;
    size_t jl = gen(id, j, &t, &k, &s, &o);
    return sg_seglog_append(g, id, t, j, jl, k, s, o);
}

typedef struct fixture {
    char dir[64];
    char logdir[128];
    uv_loop_t loop;
    uv_timer_t watchdog;
} fixture_t;

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    fail_msg("watchdog: the loop did not finish");
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof f->dir, "/tmp/sg-seglog-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->logdir, sizeof f->logdir, "%s/logs/sbx-1/proc-1", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->watchdog);
    uv_timer_start(&f->watchdog, on_watchdog, 120000, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    loop_thread = uv_thread_self();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    uint64_t started, done;
    sg__seglog_fs_counts(&started, &done);
    assert_true(started > 0);
    assert_int_equal(started, done); /* every request came back through its callback */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- what the writer reports */

typedef struct segs {
    int nnew, nsealed, ndeleted, nerror, ndrain, nwritten;
    uint64_t written; /* the last id on_written reported */
    sg_seglog_seg_t sealed[256];
    uint64_t deleted[256];
    char errmsg[1024];
    int err;
} segs_t;

static void on_segment(void *ud, const sg_seglog_seg_t *s)
{
    segs_t *r = ud;
    assert_loop_thread();
    assert_non_null(strstr(s->path, s->name));
    struct stat sb;
    switch (s->event) {
    case SG_SEGLOG_NEW:
        r->nnew++;
        assert_int_equal(stat(s->path, &sb), 0);
        assert_int_equal(s->bytes, 0);
        break;
    case SG_SEGLOG_SEALED:
        assert_true(r->nsealed < 256);
        assert_int_equal(stat(s->path, &sb), 0);
        assert_int_equal((uint64_t)sb.st_size, s->bytes); /* the file is complete */
        r->sealed[r->nsealed++] = *s;
        r->sealed[r->nsealed - 1].path = r->sealed[r->nsealed - 1].name = NULL;
        break;
    case SG_SEGLOG_DELETED:
        assert_true(r->ndeleted < 256);
        assert_int_not_equal(stat(s->path, &sb), 0); /* gone before it is reported */
        r->deleted[r->ndeleted++] = s->seq;
        break;
    }
}

static void on_drain(void *ud)
{
    assert_loop_thread();
    ((segs_t *)ud)->ndrain++;
}

static void on_written(void *ud, uint64_t last_id)
{
    segs_t *r = ud;
    assert_loop_thread();
    assert_true(last_id > r->written); /* every write moves it forward */
    r->written = last_id;
    r->nwritten++;
}

static void on_error(void *ud, int err, const char *msg)
{
    segs_t *r = ud;
    assert_loop_thread();
    assert_true(err < 0);
    r->nerror++;
    r->err = err;
    snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
}

static void cfg_for(sg_seglog_config_t *c, segs_t *r)
{
    sg_seglog_config_init(c);
    c->on_segment = on_segment;
    c->on_drain = on_drain;
    c->on_error = on_error;
    c->on_written = on_written;
    c->ud = r;
}

typedef struct flag {
    int called, err;
    char msg[1024];
} flag_t;

static void on_closed(void *ud)
{
    assert_loop_thread();
    ((flag_t *)ud)->called++;
}

static void on_synced(void *ud, int err, const char *msg)
{
    flag_t *fl = ud;
    assert_loop_thread();
    fl->called++;
    fl->err = err;
    if (err) {
        assert_non_null(msg);
        snprintf(fl->msg, sizeof fl->msg, "%s", msg);
    } else {
        assert_null(msg);
    }
}

static void run_until(uv_loop_t *loop, int *flag)
{
    while (!*flag)
        uv_run(loop, UV_RUN_ONCE);
}

static void close_log(fixture_t *f, sg_seglog_t *g)
{
    flag_t fl = {0};
    sg_seglog_close(g, on_closed, &fl);
    assert_int_equal(fl.called, 0); /* never from inside the call */
    run_until(&f->loop, &fl.called);
}

/* ---- reading back */

typedef struct rd {
    int done, err, torn, ordered, bad;
    uint64_t records, n, first_id, last_id, stop_after;
    char msg[1024];
} rd_t;

static int on_event(void *ud, const sg_seglog_rec_t *r)
{
    rd_t *x = ud;
    assert_loop_thread();
    if (x->n && r->id != x->last_id + 1) x->ordered = 0;
    if (!x->n) x->first_id = r->id;
    x->last_id = r->id;
    x->n++;
    char j[512];
    const char *t;
    int k, s;
    uint32_t o;
    assert_true(r->id >= 1 && r->id <= MAX_ID);
    size_t jl = gen(r->id, j, &t, &k, &s, &o);
    if (strcmp(r->type, t) || r->kind != k || r->stream != s || r->out_len != o ||
        r->json_len != jl || memcmp(r->json, j, jl) || r->out_off != out_at[r->id])
        x->bad++;
    if (x->stop_after && x->n == x->stop_after) return 42;
    return 0;
}

static void on_read_done(void *ud, int err, const char *msg, uint64_t records, int torn)
{
    rd_t *x = ud;
    assert_loop_thread();
    x->done = 1;
    x->err = err;
    x->torn = torn;
    x->records = records;
    if (err || torn) {
        assert_non_null(msg);
        snprintf(x->msg, sizeof x->msg, "%s", msg);
    } else {
        assert_null(msg);
    }
}

static void read_all(fixture_t *f, const char *dir, rd_t *x)
{
    memset(x, 0, sizeof(*x));
    x->ordered = 1;
    assert_int_equal(sg_seglog_read(&f->loop, dir, on_event, on_read_done, x), 0);
    assert_int_equal(x->done, 0);
    run_until(&f->loop, &x->done);
    assert_int_equal(x->records, x->n);
}

static uint64_t file_size(const char *dir, uint64_t seq)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%06" PRIu64 ".seg", dir, seq);
    struct stat sb;
    if (stat(p, &sb) != 0) return UINT64_MAX;
    return (uint64_t)sb.st_size;
}

/* ---- tests */

static void test_round_trip(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(sg__crc32(0, "123456789", 9), 0xCBF43926u); /* the zlib / IEEE CRC-32 */
    segs_t r = {0};
    sg_seglog_config_t c;
    cfg_for(&c, &r);
    c.segment_bytes = 64 * 1024;
    c.flush_bytes = 4096;
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    uint64_t want_bytes = 0;
    for (uint64_t id = 1; id <= 10000; id++) {
        assert_int_equal(append_id(g, id), 0);
        want_bytes += rec_size(id);
        if (id % 100 == 0) uv_run(&f->loop, UV_RUN_NOWAIT); /* writes overlap appends */
    }
    sg_seglog_stats_t st;
    sg_seglog_stats(g, &st);
    assert_int_equal(st.appends, 10000);
    assert_int_equal(st.next_out, out_at[10001]);
    close_log(f, g);
    assert_int_equal(r.nerror, 0);
    assert_true(r.nsealed >= 10); /* ~2 MB in 64 KiB segments */
    assert_int_equal(r.nnew, r.nsealed);
    assert_int_equal(r.ndeleted, 0);
    uint64_t total = 0, next_id = 1;
    for (int i = 0; i < r.nsealed; i++) {
        sg_seglog_seg_t *s = &r.sealed[i];
        assert_int_equal(s->seq, (uint64_t)i + 1);
        assert_int_equal(file_size(f->logdir, s->seq), s->bytes);
        assert_true(s->bytes <= c.segment_bytes); /* records never cross a segment */
        if (i + 1 < r.nsealed) assert_true(s->bytes > c.segment_bytes - 1024);
        assert_int_equal(s->first_id, next_id);
        assert_int_equal(s->first_out, out_at[s->first_id]);
        assert_int_equal(s->out_end, out_at[s->last_id + 1]);
        next_id = s->last_id + 1;
        total += s->bytes;
    }
    assert_int_equal(next_id, 10001);
    assert_int_equal(total, want_bytes); /* exactly the records, nothing else */
    assert_int_equal(file_size(f->logdir, (uint64_t)r.nsealed + 1), UINT64_MAX);

    rd_t x;
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.torn, 0);
    assert_int_equal(x.n, 10000);
    assert_int_equal(x.first_id, 1);
    assert_int_equal(x.last_id, 10000);
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);

    /* a reader that stops early gets its code back */
    memset(&x, 0, sizeof x);
    x.ordered = 1;
    x.stop_after = 5;
    assert_int_equal(sg_seglog_read(&f->loop, f->logdir, on_event, on_read_done, &x), 0);
    run_until(&f->loop, &x.done);
    assert_int_equal(x.err, 42);
    assert_int_equal(x.n, 5);
}

typedef struct poll_writes {
    sg_seglog_t *g;
    uint64_t above;
    int ticks, done;
} poll_writes_t;

/* until the log has done more than `above` writes (bounded: a slow shared machine) */
static void on_poll_writes(uv_timer_t *t)
{
    poll_writes_t *w = t->data;
    sg_seglog_stats_t st;
    sg_seglog_stats(w->g, &st);
    if (st.writes > w->above || ++w->ticks > 500) {
        w->done = 1;
        uv_close((uv_handle_t *)t, NULL);
    }
}

static void test_batching(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    sg_seglog_config_t c;
    cfg_for(&c, &r);
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    uint64_t bytes = 0;
    for (uint64_t id = 1; id <= 10000; id++) {
        assert_int_equal(append_id(g, id), 0);
        bytes += rec_size(id);
    }
    flag_t fl = {0};
    sg_seglog_sync(g, on_synced, &fl);
    assert_int_equal(fl.called, 0);
    run_until(&f->loop, &fl.called);
    assert_int_equal(fl.err, 0);
    sg_seglog_stats_t st;
    sg_seglog_stats(g, &st);
    assert_int_equal(st.appends, 10000);
    assert_int_equal(st.bytes_written, bytes);
    assert_int_equal(file_size(f->logdir, 1), bytes); /* synced = on disk, all of it */
    assert_true(st.writes >= 1);
    assert_true(st.writes <= 10000 / 100); /* batches, not one write per event */
    assert_int_equal(st.syncs, 1);
    assert_int_equal(st.pending, 0);
    assert_int_equal(r.written, 10000); /* one report per write, the last one names the end */
    assert_int_equal((uint64_t)r.nwritten, st.writes);

    /* below flush_bytes: the timer writes it within flush_ms, without a sync */
    uint64_t w0 = st.writes;
    assert_int_equal(append_id(g, 10001), 0);
    assert_int_equal(append_id(g, 10002), 0);
    uv_timer_t t;
    poll_writes_t pw = {.g = g, .above = w0};
    uv_timer_init(&f->loop, &t);
    t.data = &pw;
    uv_timer_start(&t, on_poll_writes, 10, 10);
    run_until(&f->loop, &pw.done);
    sg_seglog_stats(g, &st);
    assert_int_equal(st.writes, w0 + 1);
    assert_int_equal(file_size(f->logdir, 1), bytes + rec_size(10001) + rec_size(10002));
    assert_int_equal(r.written, 10002);

    /* a sync with nothing new answers too (and not from inside the call) */
    memset(&fl, 0, sizeof fl);
    sg_seglog_sync(g, on_synced, &fl);
    assert_int_equal(fl.called, 0);
    run_until(&f->loop, &fl.called);
    assert_int_equal(fl.err, 0);
    close_log(f, g);
    assert_int_equal(r.nsealed, 1);
}

static void test_backpressure(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    sg_seglog_config_t c;
    cfg_for(&c, &r);
    c.flush_bytes = 4096;
    c.max_pending = 16384;
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    /* the open is still on the thread pool: everything stays pending */
    uint64_t id = 1;
    int rc;
    while ((rc = append_id(g, id)) == 0)
        id++;
    assert_int_equal(rc, 1); /* kept, but pause */
    sg_seglog_stats_t st;
    sg_seglog_stats(g, &st);
    assert_true(st.pending >= c.max_pending);
    uint64_t kept = id;
    while ((rc = append_id(g, ++id)) == 1)
        kept = id;
    assert_int_equal(rc, SG_ETOOBIG); /* a producer that ignored 1 is cut off */
    sg_seglog_stats(g, &st);
    assert_int_equal(st.dropped, 1);
    assert_true(st.pending_max <= 2 * c.max_pending);
    assert_int_equal(r.ndrain, 0);
    flag_t fl = {0};
    sg_seglog_sync(g, on_synced, &fl);
    run_until(&f->loop, &fl.called);
    assert_int_equal(r.ndrain, 1);
    close_log(f, g);
    rd_t x;
    read_all(f, f->logdir, &x);
    assert_int_equal(x.n, kept);
    assert_int_equal(x.last_id, kept);
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);
}

static void test_retention(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    sg_seglog_config_t c;
    cfg_for(&c, &r);
    c.segment_bytes = 8192;
    c.max_bytes = 32768;
    c.flush_bytes = 2048;
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    for (uint64_t id = 1; id <= 2000; id++) {
        assert_true(append_id(g, id) >= 0);
        if (id % 20 == 0) uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    close_log(f, g);
    assert_int_equal(r.nerror, 0);
    assert_true(r.nsealed > 20);
    assert_true(r.ndeleted > 10);
    for (int i = 0; i < r.ndeleted; i++) { /* oldest first, and gone */
        assert_int_equal(r.deleted[i], (uint64_t)i + 1);
        assert_int_equal(file_size(f->logdir, r.deleted[i]), UINT64_MAX);
    }
    uint64_t total = 0;
    for (uint64_t q = (uint64_t)r.ndeleted + 1; q <= (uint64_t)r.nsealed; q++) {
        assert_int_not_equal(file_size(f->logdir, q), UINT64_MAX);
        total += file_size(f->logdir, q);
    }
    assert_true(total <= c.max_bytes);
    assert_true(total + 2 * c.segment_bytes > c.max_bytes); /* not more deleted than needed */
    rd_t x;
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.torn, 0);
    assert_int_equal(x.first_id, r.sealed[r.ndeleted].first_id);
    assert_int_equal(x.last_id, 2000);
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0); /* output offsets survive the deletion of older segments */
}

static void write_log(fixture_t *f, segs_t *r, uint64_t seg_bytes, uint64_t n)
{
    sg_seglog_config_t c;
    cfg_for(&c, r);
    c.segment_bytes = seg_bytes;
    c.flush_bytes = 4096;
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    for (uint64_t id = 1; id <= n; id++)
        assert_true(append_id(g, id) >= 0);
    close_log(f, g);
    assert_int_equal(r->nerror, 0);
}

static void test_torn_tail(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    write_log(f, &r, 16384, 1000);
    uint64_t last = (uint64_t)r.nsealed;
    assert_true(last >= 3);
    assert_int_equal(r.sealed[last - 1].last_id, 1000);
    char p[256];
    snprintf(p, sizeof p, "%s/%06" PRIu64 ".seg", f->logdir, last);
    uint64_t sz = file_size(f->logdir, last);
    assert_int_equal(truncate(p, (off_t)(sz - 3)), 0); /* kill -9 in the middle of a write */
    FILE *fp = fopen(p, "ab");
    for (int i = 0; i < 50; i++)
        fputc((i * 73) & 0xff, fp);
    fclose(fp);

    rd_t x;
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.torn, 1);
    assert_int_equal(x.n, 999);
    assert_int_equal(x.last_id, 999);
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);
    assert_non_null(strstr(x.msg, p));
    char off[64];
    snprintf(off, sizeof off, "offset %" PRIu64, sz - rec_size(1000));
    assert_non_null(strstr(x.msg, off));

    /* reopening recovers: the tail is cut, the ids and output offsets go on */
    segs_t r2 = {0};
    sg_seglog_config_t c;
    cfg_for(&c, &r2);
    c.segment_bytes = 16384;
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    for (uint64_t id = 1000; id <= 1010; id++) /* appended while the recovery runs */
        assert_int_equal(append_id(g, id), 0);
    close_log(f, g);
    assert_int_equal(r2.nerror, 0);
    assert_int_equal(r2.nsealed, 2); /* the recovered segment, then the new one */
    assert_int_equal(r2.sealed[0].seq, last);
    assert_int_equal(r2.sealed[0].last_id, 999);
    assert_int_equal(r2.sealed[0].bytes, sz - rec_size(1000));
    assert_int_equal(r2.sealed[0].out_end, out_at[1000]);
    assert_int_equal(r2.sealed[1].seq, last + 1);
    assert_int_equal(r2.sealed[1].first_id, 1000);
    assert_int_equal(r2.sealed[1].first_out, out_at[1000]);
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.torn, 0);
    assert_int_equal(x.n, 1010);
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);

    /* an empty last segment (a crash right after creating it) is dropped on reopen */
    snprintf(p, sizeof p, "%s/%06" PRIu64 ".seg", f->logdir, last + 2);
    fclose(fopen(p, "wb"));
    segs_t r3 = {0};
    cfg_for(&c, &r3);
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    assert_int_equal(append_id(g, 1011), 0);
    close_log(f, g);
    assert_int_equal(r3.ndeleted, 1);
    assert_int_equal(r3.deleted[0], last + 2);
    assert_int_equal(r3.nsealed, 2);
    assert_int_equal(r3.sealed[1].seq, last + 3);
    read_all(f, f->logdir, &x);
    assert_int_equal(x.n, 1011);
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);
}

static void test_bad_crc_middle(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    write_log(f, &r, 8192, 500);
    assert_true(r.nsealed >= 3);
    /* the third record of 000002.seg */
    uint64_t id = r.sealed[1].first_id, off = rec_size(id) + rec_size(id + 1);
    char p[256];
    snprintf(p, sizeof p, "%s/000002.seg", f->logdir);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off + 9 + 30), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off + 9 + 30), 1);
    close(fd);

    rd_t x;
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, SG_EPROTO);
    assert_int_equal(x.torn, 0);
    assert_int_equal(x.n, id + 1); /* everything before the bad record */
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);
    assert_non_null(strstr(x.msg, p));
    assert_non_null(strstr(x.msg, "bad CRC"));
    char want[64];
    snprintf(want, sizeof want, "offset %" PRIu64 " ", off);
    assert_non_null(strstr(x.msg, want));

    /* a sealed segment cut short is an error as well */
    assert_int_equal(truncate(p, (off_t)off + 5), 0);
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, SG_EPROTO);
    assert_non_null(strstr(x.msg, "truncated record"));
    assert_int_equal(x.n, id + 1);
}

/* kill -9: the child appends and syncs in rounds, reporting each synced id on a pipe */
typedef struct child {
    sg_seglog_t *g;
    uint64_t id;
    int wfd;
} child_t;

static void child_round(void *ud, int err, const char *msg)
{
    child_t *c = ud;
    (void)msg;
    if (err) _exit(3);
    if (c->id) {
        if (write(c->wfd, &c->id, sizeof c->id) != sizeof c->id) _exit(4);
    }
    for (int i = 0; i < 37; i++) {
        c->id++;
        if (c->id > MAX_ID || append_id(c->g, c->id) < 0) _exit(5);
    }
    sg_seglog_sync(c->g, child_round, c);
}

static void test_kill9(void **state)
{
    fixture_t *f = *state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        uv_loop_t loop;
        if (uv_loop_init(&loop)) _exit(2);
        sg_seglog_config_t c;
        sg_seglog_config_init(&c);
        c.segment_bytes = 64 * 1024;
        child_t ch = {.wfd = pfd[1]};
        if (sg_seglog_open(&loop, f->logdir, &c, &ch.g)) _exit(2);
        child_round(&ch, 0, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        _exit(6); /* never: the parent kills it */
    }
    close(pfd[1]);
    uint64_t synced = 0, v;
    int reports = 0;
    while (synced < 3000 && read(pfd[0], &v, sizeof v) == (ssize_t)sizeof v) {
        assert_true(v > synced);
        synced = v;
        reports++;
    }
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    close(pfd[0]);
    assert_true(synced >= 3000);

    rd_t x;
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.first_id, 1);
    assert_true(x.last_id >= synced); /* everything acknowledged survived */
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);
    print_message("kill -9: %d syncs reported, last %" PRIu64 ", read back to %" PRIu64
                  " (torn %d)\n",
                  reports, synced, x.last_id, x.torn);
}

static void test_close_flushes(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    sg_seglog_config_t c;
    cfg_for(&c, &r);
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    for (uint64_t id = 1; id <= 100; id++) /* the open has not completed yet */
        assert_int_equal(append_id(g, id), 0);
    flag_t fl = {0};
    sg_seglog_close(g, on_closed, &fl);
    run_until(&f->loop, &fl.called);
    assert_int_equal(r.nnew, 1);
    assert_int_equal(r.nsealed, 1);
    assert_int_equal(r.sealed[0].last_id, 100);
    rd_t x;
    read_all(f, f->logdir, &x);
    assert_int_equal(x.n, 100);
    assert_int_equal(x.torn, 0);
    assert_int_equal(x.bad, 0);

    /* append after close is refused (g is still valid until close completes) */
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    memset(&fl, 0, sizeof fl);
    sg_seglog_close(g, on_closed, &fl);
    assert_int_equal(append_id(g, 101), SG_ECLOSED);
    run_until(&f->loop, &fl.called);
    assert_int_equal(r.nnew, 1); /* nothing to write: no empty segment either */

    /* bad configurations */
    sg_seglog_config_init(&c);
    c.segment_bytes = 100;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), SG_EINVAL);
    assert_int_equal(sg_seglog_open(&f->loop, "relative/dir", NULL, &g), SG_EINVAL);
}

static void test_failure(void **state)
{
    fixture_t *f = *state;
    char file[128], dir[160];
    snprintf(file, sizeof file, "%s/plain", f->dir);
    fclose(fopen(file, "w"));
    snprintf(dir, sizeof dir, "%s/sub", file); /* below a regular file: cannot exist */
    segs_t r = {0};
    sg_seglog_config_t c;
    cfg_for(&c, &r);
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, dir, &c, &g), 0);
    assert_int_equal(append_id(g, 1), 0);
    flag_t fl = {0};
    sg_seglog_sync(g, on_synced, &fl);
    run_until(&f->loop, &fl.called);
    assert_int_equal(r.nerror, 1);
    assert_int_equal(fl.err, r.err);
    assert_non_null(strstr(r.errmsg, dir));
    assert_non_null(strstr(fl.msg, "mkdir"));
    assert_int_equal(append_id(g, 2), r.err);
    memset(&fl, 0, sizeof fl);
    sg_seglog_sync(g, on_synced, &fl); /* answered, not from inside the call */
    assert_int_equal(fl.called, 0);
    run_until(&f->loop, &fl.called);
    assert_int_equal(fl.err, r.err);
    close_log(f, g);

    rd_t x;
    read_all(f, dir, &x);
    assert_int_equal(x.err, UV_ENOTDIR);
    assert_non_null(strstr(x.msg, dir));
}

static void on_removed(void *ud, int err, const char *msg)
{
    flag_t *fl = ud;
    assert_loop_thread();
    fl->called++;
    fl->err = err;
    if (err) snprintf(fl->msg, sizeof fl->msg, "%s", msg);
}

static void test_remove(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    write_log(f, &r, 8192, 300);
    char sbx[128];
    snprintf(sbx, sizeof sbx, "%s/logs/sbx-1", f->dir);
    flag_t fl = {0};
    assert_int_equal(sg_seglog_remove(&f->loop, sbx, on_removed, &fl), 0); /* the sandbox's */
    assert_int_equal(fl.called, 0);
    run_until(&f->loop, &fl.called);
    assert_int_equal(fl.err, 0);
    struct stat sb;
    assert_int_not_equal(stat(sbx, &sb), 0);
    char logs[128];
    snprintf(logs, sizeof logs, "%s/logs", f->dir);
    assert_int_equal(stat(logs, &sb), 0);
    memset(&fl, 0, sizeof fl);
    assert_int_equal(sg_seglog_remove(&f->loop, sbx, on_removed, &fl), 0); /* missing: fine */
    run_until(&f->loop, &fl.called);
    assert_int_equal(fl.err, 0);
}

/* ---- reading from a position, changing the bound */

#define MAX_POS 4096
typedef struct rdpos {
    rd_t rd; /* first: on_event checks each record's fields */
    uint64_t n;
    uint64_t id[MAX_POS], seq[MAX_POS], off[MAX_POS], end[MAX_POS];
} rdpos_t;

static int on_event_pos(void *ud, const sg_seglog_rec_t *r)
{
    rdpos_t *x = ud;
    assert_true(x->n < MAX_POS);
    x->id[x->n] = r->id;
    x->seq[x->n] = r->seq;
    x->off[x->n] = r->off;
    x->end[x->n] = r->end;
    x->n++;
    return on_event(&x->rd, r);
}

static void read_pos(fixture_t *f, uint64_t seq, uint64_t off, rdpos_t *x)
{
    memset(x, 0, sizeof(*x));
    x->rd.ordered = 1;
    assert_int_equal(
        sg_seglog_read_from(&f->loop, f->logdir, seq, off, on_event_pos, on_read_done, x), 0);
    assert_int_equal(x->rd.done, 0); /* never from inside the call */
    run_until(&f->loop, &x->rd.done);
    assert_int_equal(x->rd.records, x->n);
    assert_int_equal(x->rd.n, x->n);
}

/* Bytes and number of the segment files in dir, as the file system sees them. */
static uint64_t dir_bytes(const char *dir, int *nfiles)
{
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    uint64_t total = 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        size_t l = strlen(de->d_name);
        if (l < 4 || strcmp(de->d_name + l - 4, ".seg") != 0) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat sb;
        assert_int_equal(stat(p, &sb), 0);
        total += (uint64_t)sb.st_size;
        n++;
    }
    closedir(dp);
    if (nfiles) *nfiles = n;
    return total;
}

static void test_read_from(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    write_log(f, &r, 8192, 600);
    uint64_t nseg = (uint64_t)r.nsealed;
    assert_true(nseg >= 5);
    assert_int_equal(r.sealed[nseg - 1].last_id, 600);

    /* where every record is: the full read, from (0, 0) */
    rdpos_t *all = calloc(1, sizeof(*all)), *x = calloc(1, sizeof(*x));
    read_pos(f, 0, 0, all);
    assert_int_equal(all->rd.err, 0);
    assert_int_equal(all->rd.torn, 0);
    assert_int_equal(all->n, 600);
    assert_true(all->rd.ordered);
    assert_int_equal(all->rd.bad, 0);
    for (uint64_t i = 0; i < all->n; i++) {
        uint64_t q = all->seq[i];
        assert_int_equal(all->id[i], i + 1);
        assert_true(q >= 1 && q <= nseg);
        assert_true(all->id[i] >= r.sealed[q - 1].first_id);
        assert_true(all->id[i] <= r.sealed[q - 1].last_id);
        assert_int_equal(all->end[i] - all->off[i], rec_size(all->id[i]));
        if (i == 0 || all->seq[i - 1] != q)
            assert_int_equal(all->off[i], 0); /* a segment's first record */
        else
            assert_int_equal(all->off[i], all->end[i - 1]); /* records are back to back */
        if (i + 1 == all->n || all->seq[i + 1] != q)
            assert_int_equal(all->end[i], file_size(f->logdir, q)); /* its last one ends it */
    }

    /* resuming after record j delivers exactly the records after it, from where they are */
    for (uint64_t j = 0; j < all->n; j++) {
        int seg_last = j + 1 == all->n || all->seq[j + 1] != all->seq[j];
        if (j % 41 != 3 && !seg_last) continue;
        read_pos(f, all->seq[j], all->end[j], x);
        assert_int_equal(x->rd.err, 0);
        assert_int_equal(x->rd.torn, 0);
        assert_int_equal(x->n, all->n - j - 1);
        assert_true(x->rd.ordered);
        assert_int_equal(x->rd.bad, 0);
        if (x->n) assert_int_equal(x->id[0], all->id[j] + 1);
        for (uint64_t i = 0; i < x->n; i++) {
            assert_true(x->seq[i] >= all->seq[j]); /* nothing from an earlier segment */
            assert_int_equal(x->id[i], all->id[j + 1 + i]);
            assert_int_equal(x->seq[i], all->seq[j + 1 + i]);
            assert_int_equal(x->off[i], all->off[j + 1 + i]);
            assert_int_equal(x->end[i], all->end[j + 1 + i]);
        }
    }

    /* offset 0: the whole of that segment and everything after it */
    read_pos(f, 3, 0, x);
    assert_int_equal(x->rd.err, 0);
    assert_int_equal(x->id[0], r.sealed[2].first_id);
    assert_int_equal(x->seq[0], 3);
    assert_int_equal(x->off[0], 0);
    assert_int_equal(x->n, 600 - r.sealed[2].first_id + 1);
    assert_int_equal(x->rd.last_id, 600);
    assert_true(x->rd.ordered);
    assert_int_equal(x->rd.bad, 0);

    /* past the last segment: nothing, and a clean end */
    read_pos(f, nseg + 1, 0, x);
    assert_int_equal(x->rd.err, 0);
    assert_int_equal(x->rd.torn, 0);
    assert_int_equal(x->n, 0);
    assert_int_equal(x->rd.records, 0);
    read_pos(f, nseg + 100, 12345, x);
    assert_int_equal(x->rd.err, 0);
    assert_int_equal(x->rd.torn, 0);
    assert_int_equal(x->n, 0);
    free(all);
    free(x);
}

static int cmp_seq(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_set_max_bytes(void **state)
{
    fixture_t *f = *state;
    segs_t r = {0};
    sg_seglog_config_t c;
    cfg_for(&c, &r);
    c.segment_bytes = 8192;
    c.flush_bytes = 2048; /* max_bytes: the default 64 MiB, nothing is deleted yet */
    sg_seglog_t *g;
    assert_int_equal(sg_seglog_open(&f->loop, f->logdir, &c, &g), 0);
    for (uint64_t id = 1; id <= 600; id++) {
        assert_int_equal(append_id(g, id), 0);
        if (id % 20 == 0) uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    flag_t fl = {0};
    sg_seglog_sync(g, on_synced, &fl);
    run_until(&f->loop, &fl.called);
    assert_int_equal(fl.err, 0);
    assert_int_equal(r.nerror, 0);
    assert_int_equal(r.ndeleted, 0);
    int nfiles;
    uint64_t before = dir_bytes(f->logdir, &nfiles);
    assert_int_equal(nfiles, r.nnew);
    assert_true(r.nsealed >= 10);
    sg_seglog_stats_t st;
    sg_seglog_stats(g, &st);
    assert_int_equal(st.disk_bytes, before);

    /* a larger bound deletes nothing */
    sg_seglog_set_max_bytes(g, 128u << 20);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.ndeleted, 0);
    assert_int_equal(dir_bytes(f->logdir, NULL), before);

    /* about two segments: the oldest sealed ones go until the rest fits */
    uint64_t bound = 2 * c.segment_bytes + c.segment_bytes / 2, left = before;
    int want = 0;
    while (want < r.nsealed && left > bound)
        left -= file_size(f->logdir, (uint64_t)++want);
    assert_true(want >= 8);
    assert_true(left <= bound);
    sg_seglog_set_max_bytes(g, bound);
    assert_int_equal(r.ndeleted, 0);  /* reported once gone, not from inside the call */
    uv_run(&f->loop, UV_RUN_DEFAULT); /* until the unlinks came back */
    assert_int_equal(r.nerror, 0);
    assert_int_equal(r.ndeleted, want);
    /* each deleted segment is reported once: the oldest `want`. The unlinks run side by side
     * on the thread pool, so the reports come in completion order, not seq order. */
    uint64_t gone[256];
    memcpy(gone, r.deleted, (size_t)want * sizeof(*gone));
    qsort(gone, (size_t)want, sizeof(*gone), cmp_seq);
    for (int i = 0; i < want; i++) {
        assert_int_equal(gone[i], (uint64_t)i + 1);
        assert_int_equal(file_size(f->logdir, (uint64_t)i + 1), UINT64_MAX);
    }
    for (int q = want + 1; q <= r.nnew; q++)
        assert_int_not_equal(file_size(f->logdir, (uint64_t)q), UINT64_MAX);
    uint64_t after = dir_bytes(f->logdir, &nfiles);
    assert_int_equal(after, left);
    assert_true(after < before);
    assert_int_equal(nfiles, r.nnew - want);
    sg_seglog_stats(g, &st);
    assert_int_equal(st.segments_deleted, (uint64_t)want);
    assert_int_equal(st.disk_bytes, after);

    /* the newest records read back, from the start or from a deleted segment alike */
    rd_t x;
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.torn, 0);
    assert_int_equal(x.first_id, r.sealed[want].first_id);
    assert_int_equal(x.last_id, 600);
    assert_int_equal(x.n, 600 - r.sealed[want].first_id + 1);
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);
    rdpos_t *xp = calloc(1, sizeof(*xp));
    read_pos(f, 1, 100, xp); /* 000001.seg is gone: skipped, the offset with it */
    assert_int_equal(xp->rd.err, 0);
    assert_int_equal(xp->n, x.n);
    assert_int_equal(xp->id[0], r.sealed[want].first_id);
    assert_int_equal(xp->seq[0], (uint64_t)want + 1);
    assert_int_equal(xp->off[0], 0);
    free(xp);

    /* the new bound holds for what is written next */
    for (uint64_t id = 601; id <= 1200; id++) {
        assert_int_equal(append_id(g, id), 0);
        if (id % 20 == 0) uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    close_log(f, g);
    assert_int_equal(r.nerror, 0);
    assert_true(r.ndeleted > want);
    assert_true(dir_bytes(f->logdir, NULL) <= bound);
    read_all(f, f->logdir, &x);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.last_id, 1200);
    assert_true(x.ordered);
    assert_int_equal(x.bad, 0);
}

int main(void)
{
    for (uint64_t id = 1; id <= MAX_ID; id++) {
        char j[512];
        const char *t;
        int k, s;
        uint32_t o;
        gen(id, j, &t, &k, &s, &o);
        out_at[id + 1] = out_at[id] + o;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_crc_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_from, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_max_bytes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
