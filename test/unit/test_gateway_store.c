/* test_gateway_store.c: the durable store (src/gateway/store.c) on a real loop and real files.
 *
 * Every test runs a uv loop in a fresh temporary directory and ends with the loop closed and
 * no handle left open (the store's async handle is gone once its close callback ran); an
 * unref'd watchdog fails a hang. Every store callback asserts that it runs on the loop thread.
 *
 *   round trip       each record type written, read back field by field (NULLs included),
 *                    updated, deleted with its cascade, and read again after a reopen
 *   group commit     1000 puts submitted in one loop turn commit in fewer transactions than
 *                    puts, call back in submission order, and all load back
 *   crash            a forked child writes and reports each acknowledged write on a pipe; the
 *                    parent kill -9s it mid-stream and finds every acknowledged write on disk
 *                    (with synchronous=NORMAL, the weaker setting)
 *   refusals         garbage, a foreign SQLite database, a corrupt sandgate database and a newer
 *                    schema are refused with a clear message and left byte-identical
 *   migration        a v1 database written the way v1 wrote it opens as v2, data kept
 *   close            drains what is queued: every callback runs before close's, all on disk
 *   open             a missing, an empty and an existing directory; writes queued before the
 *                    open completes; the queue bound */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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
#include <jansson.h>
#include <sqlite3.h>

#include "sandgate/common.h"
#include "store.h"

static uv_thread_t loop_thread;

typedef struct fixture {
    char dir[64];
    char db[128];
    uv_loop_t loop;
    uv_timer_t watchdog;
} fixture_t;

typedef struct res {
    int called;
    int err;
    char msg[1024];
} res_t;

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    fail_msg("watchdog: the loop did not finish");
}

static void assert_loop_thread(void)
{
    uv_thread_t self = uv_thread_self();
    assert_true(uv_thread_equal(&self, &loop_thread));
}

static void on_res(void *ud, int err, const char *msg)
{
    res_t *r = ud;
    assert_loop_thread();
    r->called++;
    r->err = err;
    if (err) {
        assert_non_null(msg);
        snprintf(r->msg, sizeof r->msg, "%s", msg);
    } else {
        assert_null(msg);
        r->msg[0] = 0;
    }
}

static void on_closed(void *ud)
{
    assert_loop_thread();
    (*(int *)ud)++;
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sg-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/%s", f->dir, SG_STORE_FILE);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->watchdog), 0);
    assert_int_equal(uv_timer_start(&f->watchdog, on_watchdog, 60000, 0), 0);
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
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left open */
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void run(fixture_t *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static sg_store_t *open_at(fixture_t *f, const char *dir, const sg_store_config_t *cfg, res_t *r)
{
    sg_store_t *st = NULL;
    memset(r, 0, sizeof *r);
    assert_int_equal(sg_store_open(&f->loop, dir, cfg, on_res, r, &st), 0);
    run(f);
    assert_int_equal(r->called, 1);
    return st;
}

/* Opens f's directory and asserts success. */
static sg_store_t *open_ok(fixture_t *f, const sg_store_config_t *cfg)
{
    res_t r;
    sg_store_t *st = open_at(f, f->dir, cfg, &r);
    if (r.err) fail_msg("open: %d %s", r.err, r.msg);
    return st;
}

static void close_store(fixture_t *f, sg_store_t *st)
{
    int closed = 0;
    sg_store_close(st, on_closed, &closed);
    run(f);
    assert_int_equal(closed, 1);
}

/* --- snapshots as JSON, to compare whole stores at once */

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *snap_json(const sg_store_snapshot_t *sn)
{
    json_t *o = json_object(), *a;
    a = json_array();
    for (size_t i = 0; i < sn->nsandboxes; i++) {
        const sg_store_sandbox_t *x = &sn->sandboxes[i];
        json_array_append_new(
            a,
            json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:I,s:I,s:I}", "id",
                      jstr(x->id), "tenant", jstr(x->tenant), "provider", jstr(x->provider),
                      "provider_id", jstr(x->provider_id), "execd", jstr(x->execd), "access_token",
                      jstr(x->access_token), "create_request", jstr(x->create_request), "state",
                      jstr(x->state), "reason", jstr(x->reason), "message", jstr(x->message),
                      "metadata", jstr(x->metadata), "created_us", (json_int_t)x->created_us,
                      "expires_us", (json_int_t)x->expires_us, "transition_us",
                      (json_int_t)x->transition_us, "reap_us", (json_int_t)x->reap_us));
    }
    json_object_set_new(o, "sandboxes", a);
    a = json_array();
    for (size_t i = 0; i < sn->nprocesses; i++) {
        const sg_store_process_t *x = &sn->processes[i];
        json_array_append_new(
            a, json_pack("{s:o,s:o,s:o,s:b,s:o,s:o,s:o,s:I,s:I}", "sandbox_id", jstr(x->sandbox_id),
                         "id", jstr(x->id), "command", jstr(x->command), "background",
                         x->background, "state", jstr(x->state), "exit_code",
                         x->has_exit_code ? json_integer(x->exit_code) : json_null(), "error",
                         jstr(x->error), "created_us", (json_int_t)x->created_us, "finished_us",
                         (json_int_t)x->finished_us));
    }
    json_object_set_new(o, "processes", a);
    a = json_array();
    for (size_t i = 0; i < sn->nsegments; i++) {
        const sg_store_segment_t *x = &sn->segments[i];
        json_array_append_new(a, json_pack("{s:o,s:o,s:I,s:o,s:I,s:I,s:I,s:I,s:I}", "sandbox_id",
                                           jstr(x->sandbox_id), "process_id", jstr(x->process_id),
                                           "seq", (json_int_t)x->seq, "path", jstr(x->path),
                                           "first_event_id", (json_int_t)x->first_event_id,
                                           "last_event_id", (json_int_t)x->last_event_id,
                                           "first_out", (json_int_t)x->first_out, "out_end",
                                           (json_int_t)x->out_end, "bytes", (json_int_t)x->bytes));
    }
    json_object_set_new(o, "segments", a);
    return o;
}

typedef struct loaded {
    int called;
    int err;
    json_t *j;
} loaded_t;

static void on_loaded(void *ud, int err, const char *msg, const sg_store_snapshot_t *sn)
{
    loaded_t *l = ud;
    assert_loop_thread();
    l->called++;
    l->err = err;
    if (err) {
        assert_non_null(msg);
        assert_null(sn);
        return;
    }
    assert_null(msg);
    l->j = snap_json(sn);
}

/* The whole store as JSON (owned by the caller). */
static json_t *load(fixture_t *f, sg_store_t *st)
{
    loaded_t l = {0};
    assert_int_equal(sg_store_load_all(st, on_loaded, &l), 0);
    run(f);
    assert_int_equal(l.called, 1);
    assert_int_equal(l.err, 0);
    return l.j;
}

static void assert_json(json_t *got, const char *want_text)
{
    json_error_t je;
    json_t *want = json_loads(want_text, 0, &je);
    if (!want) fail_msg("bad test JSON: %s", je.text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
        char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("store holds\n  %s\nwanted\n  %s", g, w);
    }
    json_decref(want);
}

/* --- files */

static size_t slurp(const char *path, char **out)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *out = malloc((size_t)n + 1);
    assert_int_equal(fread(*out, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    return (size_t)n;
}

static void spit(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void sql(sqlite3 *db, const char *q)
{
    char *em = NULL;
    if (sqlite3_exec(db, q, NULL, NULL, &em) != SQLITE_OK) fail_msg("%s: %s", q, em);
}

static int64_t sql_int(const char *path, const char *q)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* Opening path must fail with SG_EINVAL, a message containing want, the file unchanged and no
 * -wal / -shm file left behind; writes after the failed open fail too, then close works. */
static void assert_refused(fixture_t *f, const char *want)
{
    char *before, *after, side[160];
    size_t nb = slurp(f->db, &before);
    res_t r;
    sg_store_t *st = open_at(f, f->dir, NULL, &r);
    assert_int_equal(r.err, SG_EINVAL);
    if (!strstr(r.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", r.msg, want);
    assert_non_null(strstr(r.msg, f->db)); /* it names the file */

    res_t w = {0};
    sg_store_sandbox_t s = {.id = "x", .tenant = "t", .provider = "p", .state = "Running"};
    assert_int_equal(sg_store_put_sandbox(st, &s, on_res, &w), 0);
    run(f);
    assert_int_equal(w.called, 1);
    assert_int_equal(w.err, SG_EINVAL);
    assert_non_null(strstr(w.msg, "store not open"));
    close_store(f, st);

    size_t na = slurp(f->db, &after);
    assert_int_equal(na, nb);
    assert_memory_equal(after, before, nb);
    snprintf(side, sizeof side, "%s-wal", f->db);
    assert_false(exists(side));
    snprintf(side, sizeof side, "%s-shm", f->db);
    assert_false(exists(side));
    free(before);
    free(after);
}

/* --- tests */

static void put_sbx(sg_store_t *st, const sg_store_sandbox_t *s, res_t *r)
{
    assert_int_equal(sg_store_put_sandbox(st, s, on_res, r), 0);
}

static void test_round_trip(void **state)
{
    fixture_t *f = *state;
    sg_store_t *st = open_ok(f, NULL);
    res_t r[12];
    memset(r, 0, sizeof r);

    sg_store_sandbox_t a = {.id = "sb-a",
                            .tenant = "default",
                            .provider = "local",
                            .provider_id = "pid-1",
                            .execd = "unix:/data/sandboxes/sb-a/run/execd.sock",
                            .access_token = "tok\"en'; DROP TABLE sandboxes; --",
                            .create_request = "{\"image\":{\"uri\":\"host\"}}",
                            .state = "Pending",
                            .reason = "SANDBOX_CREATING",
                            .message = "creating",
                            .metadata = "{\"k\":\"v\"}",
                            .created_us = 1700000000123456,
                            .expires_us = 1700000600000000,
                            .transition_us = 1700000000123456,
                            .reap_us = 0};
    sg_store_sandbox_t b = {.id = "sb-b",
                            .tenant = "other",
                            .provider = "local",
                            .state = "Failed",
                            .created_us = 1700000001000000,
                            .reap_us = 1700003600000000};
    put_sbx(st, &a, &r[0]);
    put_sbx(st, &b, &r[1]);
    sg_store_process_t p1 = {.sandbox_id = "sb-a",
                             .id = "cmd-1",
                             .command = "echo hi",
                             .background = 1,
                             .state = "exited",
                             .has_exit_code = 1,
                             .exit_code = 3,
                             .created_us = 1700000002000000,
                             .finished_us = 1700000003000000};
    sg_store_process_t p2 = {.sandbox_id = "sb-a",
                             .id = "cmd-2",
                             .command = "sleep 100",
                             .state = "running",
                             .created_us = 1700000004000000};
    sg_store_process_t orphan = {
        .sandbox_id = "nope", .id = "cmd-x", .command = "true", .state = "running"};
    assert_int_equal(sg_store_put_process(st, &p1, on_res, &r[2]), 0);
    assert_int_equal(sg_store_put_process(st, &p2, on_res, &r[3]), 0);
    assert_int_equal(sg_store_put_process(st, &orphan, on_res, &r[4]), 0);
    for (int i = 0; i < 3; i++) {
        char path[64];
        snprintf(path, sizeof path, "logs/sb-a/cmd-1/%d.seg", i);
        sg_store_segment_t g = {.sandbox_id = "sb-a",
                                .process_id = "cmd-1",
                                .seq = (uint64_t)i,
                                .path = path,
                                .first_event_id = 1 + 10 * (uint64_t)i,
                                .last_event_id = 10 + 10 * (uint64_t)i,
                                .first_out = 1000 * (uint64_t)i,
                                .out_end = 1000 * (uint64_t)i + 999,
                                .bytes = 4096 + (uint64_t)i};
        assert_int_equal(sg_store_put_segment(st, &g, on_res, &r[5 + i]), 0);
    }
    sg_store_segment_t lost = {.sandbox_id = "sb-a", .process_id = "cmd-9", .path = "x"};
    assert_int_equal(sg_store_put_segment(st, &lost, on_res, &r[8]), 0);
    /* required fields are checked at the call: no callback */
    sg_store_sandbox_t bad = {.id = "x"};
    assert_int_equal(sg_store_put_sandbox(st, &bad, on_res, &r[11]), SG_EINVAL);
    run(f);

    for (int i = 0; i < 9; i++)
        assert_int_equal(r[i].called, 1);
    assert_int_equal(r[11].called, 0);
    for (int i = 0; i < 8; i++)
        if (i != 4) assert_int_equal(r[i].err, 0);
    /* an unknown parent fails that write alone, with a message saying which */
    assert_int_equal(r[4].err, SG_ENOTFOUND);
    assert_string_equal(r[4].msg, "sandbox nope is not in the store");
    assert_int_equal(r[8].err, SG_ENOTFOUND);
    assert_string_equal(r[8].msg, "process cmd-9 of sandbox sb-a is not in the store");

    const char *full =
        "{\"sandboxes\":["
        "{\"id\":\"sb-a\",\"tenant\":\"default\",\"provider\":\"local\",\"provider_id\":\"pid-1\","
        "\"execd\":\"unix:/data/sandboxes/sb-a/run/execd.sock\","
        "\"access_token\":\"tok\\\"en'; DROP TABLE sandboxes; --\","
        "\"create_request\":\"{\\\"image\\\":{\\\"uri\\\":\\\"host\\\"}}\",\"state\":\"Pending\","
        "\"reason\":\"SANDBOX_CREATING\",\"message\":\"creating\",\"metadata\":\"{\\\"k\\\":"
        "\\\"v\\\"}\","
        "\"created_us\":1700000000123456,\"expires_us\":1700000600000000,"
        "\"transition_us\":1700000000123456,\"reap_us\":0},"
        "{\"id\":\"sb-b\",\"tenant\":\"other\",\"provider\":\"local\",\"provider_id\":null,"
        "\"execd\":null,\"access_token\":null,\"create_request\":null,\"state\":\"Failed\","
        "\"reason\":null,\"message\":null,\"metadata\":null,\"created_us\":1700000001000000,"
        "\"expires_us\":0,\"transition_us\":0,\"reap_us\":1700003600000000}],"
        "\"processes\":["
        "{\"sandbox_id\":\"sb-a\",\"id\":\"cmd-1\",\"command\":\"echo hi\",\"background\":true,"
        "\"state\":\"exited\",\"exit_code\":3,\"error\":null,\"created_us\":1700000002000000,"
        "\"finished_us\":1700000003000000},"
        "{\"sandbox_id\":\"sb-a\",\"id\":\"cmd-2\",\"command\":\"sleep 100\",\"background\":false,"
        "\"state\":\"running\",\"exit_code\":null,\"error\":null,\"created_us\":1700000004000000,"
        "\"finished_us\":0}],"
        "\"segments\":["
        "{\"sandbox_id\":\"sb-a\",\"process_id\":\"cmd-1\",\"seq\":0,\"path\":\"logs/sb-a/cmd-1/"
        "0.seg\","
        "\"first_event_id\":1,\"last_event_id\":10,\"first_out\":0,\"out_end\":999,\"bytes\":4096},"
        "{\"sandbox_id\":\"sb-a\",\"process_id\":\"cmd-1\",\"seq\":1,\"path\":\"logs/sb-a/cmd-1/"
        "1.seg\","
        "\"first_event_id\":11,\"last_event_id\":20,\"first_out\":1000,\"out_end\":1999,\"bytes\":"
        "4097},"
        "{\"sandbox_id\":\"sb-a\",\"process_id\":\"cmd-1\",\"seq\":2,\"path\":\"logs/sb-a/cmd-1/"
        "2.seg\","
        "\"first_event_id\":21,\"last_event_id\":30,\"first_out\":2000,\"out_end\":2999,\"bytes\":"
        "4098}]}";
    json_t *j = load(f, st);
    assert_json(j, full);
    json_decref(j);

    /* A state change is an upsert: the sandbox's processes stay. The process update fills
     * the exit code and error. */
    memset(r, 0, sizeof r);
    a.state = "Running";
    a.reason = "SANDBOX_READY";
    a.message = NULL;
    a.transition_us = 1700000005000000;
    put_sbx(st, &a, &r[0]);
    p2.state = "killed";
    p2.has_exit_code = 1;
    p2.exit_code = 137;
    p2.error = "signal 9";
    p2.finished_us = 1700000006000000;
    assert_int_equal(sg_store_put_process(st, &p2, on_res, &r[1]), 0);
    run(f);
    assert_int_equal(r[0].err, 0);
    assert_int_equal(r[1].err, 0);
    j = load(f, st);
    json_t *sa = json_array_get(json_object_get(j, "sandboxes"), 0);
    assert_string_equal(json_string_value(json_object_get(sa, "state")), "Running");
    assert_true(json_is_null(json_object_get(sa, "message")));
    assert_int_equal(json_integer_value(json_object_get(sa, "transition_us")), 1700000005000000);
    assert_int_equal(json_array_size(json_object_get(j, "processes")), 2);
    json_t *pp = json_array_get(json_object_get(j, "processes"), 1);
    assert_int_equal(json_integer_value(json_object_get(pp, "exit_code")), 137);
    assert_string_equal(json_string_value(json_object_get(pp, "error")), "signal 9");
    json_decref(j);

    /* Persisted: close, reopen the existing directory, same contents. */
    close_store(f, st);
    st = open_ok(f, NULL);
    j = load(f, st);
    assert_int_equal(json_array_size(json_object_get(j, "sandboxes")), 2);
    assert_int_equal(json_array_size(json_object_get(j, "segments")), 3);
    json_decref(j);

    /* Retention drops the oldest segments; deleting a process drops the rest of its segments;
     * deleting a sandbox drops its processes. */
    memset(r, 0, sizeof r);
    assert_int_equal(sg_store_delete_segments(st, "sb-a", "cmd-1", 2, on_res, &r[0]), 0);
    run(f);
    assert_int_equal(r[0].err, 0);
    j = load(f, st);
    assert_int_equal(json_array_size(json_object_get(j, "segments")), 1);
    assert_int_equal(json_integer_value(
                         json_object_get(json_array_get(json_object_get(j, "segments"), 0), "seq")),
                     2);
    json_decref(j);
    assert_int_equal(sg_store_delete_process(st, "sb-a", "cmd-1", on_res, &r[1]), 0);
    run(f);
    assert_int_equal(r[1].err, 0);
    j = load(f, st);
    assert_int_equal(json_array_size(json_object_get(j, "segments")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "processes")), 1);
    json_decref(j);

    /* A delete of a whole sandbox takes its processes and their segments with it. */
    sg_store_segment_t g = {.sandbox_id = "sb-a", .process_id = "cmd-2", .seq = 7, .path = "p"};
    assert_int_equal(sg_store_put_segment(st, &g, on_res, &r[2]), 0);
    assert_int_equal(sg_store_delete_sandbox(st, "sb-a", on_res, &r[3]), 0);
    assert_int_equal(sg_store_delete_sandbox(st, "never-stored", on_res, &r[4]), 0);
    run(f);
    assert_int_equal(r[2].err, 0);
    assert_int_equal(r[3].err, 0);
    assert_int_equal(r[4].err, 0);
    j = load(f, st);
    assert_int_equal(json_array_size(json_object_get(j, "sandboxes")), 1);
    assert_int_equal(json_array_size(json_object_get(j, "processes")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "segments")), 0);
    json_decref(j);
    close_store(f, st);
}

typedef struct order {
    int next; /* index the next callback must carry */
    int errors;
} order_t;

typedef struct seq_ud {
    order_t *o;
    int i;
} seq_ud_t;

static void on_seq(void *ud, int err, const char *msg)
{
    seq_ud_t *s = ud;
    assert_loop_thread();
    if (err) fail_msg("put %d: %s", s->i, msg);
    assert_int_equal(s->i, s->o->next);
    s->o->next++;
}

#define NGROUP 1000

static void test_group_commit(void **state)
{
    fixture_t *f = *state;
    sg_store_t *st = open_ok(f, NULL);
    sg_store_stats_t s0, s1;
    sg_store_stats(st, &s0);

    order_t o = {0, 0};
    seq_ud_t *u = calloc(NGROUP, sizeof *u);
    for (int i = 0; i < NGROUP; i++) {
        char id[32];
        snprintf(id, sizeof id, "sb-%04d", i);
        sg_store_sandbox_t s = {.id = id,
                                .tenant = "default",
                                .provider = "local",
                                .state = "Pending",
                                .created_us = i};
        u[i].o = &o;
        u[i].i = i;
        assert_int_equal(sg_store_put_sandbox(st, &s, on_seq, &u[i]), 0);
    }
    sg_store_stats(st, &s1);
    assert_int_equal(s1.queued, NGROUP);
    run(f);
    assert_int_equal(o.next, NGROUP); /* all called back, in submission order */

    sg_store_stats(st, &s1);
    uint64_t txns = s1.transactions - s0.transactions;
    print_message("group commit: %d puts in %llu transactions, largest batch %llu, worst "
                  "queue wait %.3f ms, worst transaction %.3f ms\n",
                  NGROUP, (unsigned long long)txns, (unsigned long long)s1.batch_max_seen,
                  s1.queue_wait_max_ns / 1e6, s1.txn_max_ns / 1e6);
    assert_true(txns >= 1);
    assert_true(txns < NGROUP);
    assert_true(s1.batch_max_seen > 1);
    assert_int_equal(s1.writes - s0.writes, NGROUP);
    assert_int_equal(s1.failed, 0);
    assert_int_equal(s1.queued, 0);
    assert_true(s1.txn_max_ns > 0);
    assert_true(s1.queue_wait_max_ns > 0);

    json_t *j = load(f, st);
    assert_int_equal(json_array_size(json_object_get(j, "sandboxes")), NGROUP);
    json_decref(j);
    close_store(f, st);
    free(u);
}

/* --- crash durability: the child's op j, for group k = j / 3:
 *   j % 3 == 0  put sandbox c-k (Pending)
 *   j % 3 == 1  put sandbox c-k (Running)
 *   j % 3 == 2  k odd: delete c-k; k even: put process c-k/p (exited 0) */

#define CRASH_KILL_AT 300 /* the parent kills the child once this many writes were acknowledged */
#define CRASH_WINDOW  64  /* writes the child keeps in flight */

typedef struct child {
    uv_loop_t loop;
    sg_store_t *st;
    int fd;
    int next;
} child_t;

static void child_submit(child_t *c);

typedef struct cop {
    child_t *c;
    int j;
} cop_t;

static void on_child_ack(void *ud, int err, const char *msg)
{
    cop_t *o = ud;
    int32_t v = err ? -1 : o->j;
    (void)msg;
    if (write(o->c->fd, &v, sizeof v) != sizeof v || err) _exit(3);
    child_t *c = o->c;
    free(o);
    child_submit(c);
}

static void child_submit(child_t *c)
{
    int j = c->next++;
    int k = j / 3;
    char id[32];
    snprintf(id, sizeof id, "c-%d", k);
    cop_t *o = malloc(sizeof *o);
    o->c = c;
    o->j = j;
    int r;
    if (j % 3 < 2) {
        sg_store_sandbox_t s = {.id = id,
                                .tenant = "default",
                                .provider = "local",
                                .state = j % 3 ? "Running" : "Pending",
                                .created_us = k};
        r = sg_store_put_sandbox(c->st, &s, on_child_ack, o);
    } else if (k % 2) {
        r = sg_store_delete_sandbox(c->st, id, on_child_ack, o);
    } else {
        sg_store_process_t p = {.sandbox_id = id,
                                .id = "p",
                                .command = "true",
                                .state = "exited",
                                .has_exit_code = 1,
                                .exit_code = 0};
        r = sg_store_put_process(c->st, &p, on_child_ack, o);
    }
    if (r) _exit(4);
}

static void on_child_open(void *ud, int err, const char *msg)
{
    child_t *c = ud;
    (void)msg;
    if (err) _exit(5);
    for (int i = 0; i < CRASH_WINDOW; i++)
        child_submit(c);
}

static void test_crash_durability(void **state)
{
    fixture_t *f = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child: its own loop and store, writing until it is killed. */
        child_t c = {.fd = fds[1]};
        close(fds[0]);
        sg_store_config_t cfg;
        sg_store_config_init(&cfg);
        cfg.sync_full = 0; /* NORMAL: the claim under test is that it survives kill -9 */
        if (uv_loop_init(&c.loop) != 0) _exit(6);
        if (sg_store_open(&c.loop, f->dir, &cfg, on_child_open, &c, &c.st) != 0) _exit(7);
        uv_run(&c.loop, UV_RUN_DEFAULT);
        _exit(8); /* never reached: the loop always has writes in flight */
    }
    close(fds[1]);
    int32_t acked = -1, v;
    int killed = 0;
    for (;;) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int n = poll(&p, 1, 60000);
        if (n <= 0) {
            kill(pid, SIGKILL);
            fail_msg("child made no progress");
        }
        ssize_t got = read(fds[0], &v, sizeof v);
        if (got == 0) break; /* the child is dead and everything it wrote is read */
        assert_int_equal(got, sizeof v);
        if (v < 0) fail_msg("child: a write failed");
        assert_int_equal(v, acked + 1); /* acknowledgements come in submission order */
        acked = v;
        if (!killed && acked + 1 >= CRASH_KILL_AT) {
            assert_int_equal(kill(pid, SIGKILL), 0);
            killed = 1;
        }
    }
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    /* Everything acknowledged is there. Groups whose three writes were all acknowledged are
     * checked exactly; later groups may hold unacknowledged writes that committed too. */
    sg_store_t *st = open_ok(f, NULL);
    json_t *j = load(f, st);
    json_t *sbxs = json_object_get(j, "sandboxes"), *procs = json_object_get(j, "processes");
    int full = (acked + 1) / 3, checked = 0;
    for (int k = 0; k < full; k++) {
        char id[32];
        snprintf(id, sizeof id, "c-%d", k);
        json_t *found = NULL, *proc = NULL, *e;
        size_t i;
        json_array_foreach(sbxs, i, e) if (!strcmp(json_string_value(json_object_get(e, "id")), id))
            found = e;
        json_array_foreach(procs, i,
                           e) if (!strcmp(json_string_value(json_object_get(e, "sandbox_id")), id))
            proc = e;
        if (k % 2) {
            if (found) fail_msg("%s was deleted (acknowledged) but is back", id);
        } else {
            if (!found) fail_msg("%s (acknowledged) is missing after kill -9", id);
            assert_string_equal(json_string_value(json_object_get(found, "state")), "Running");
            if (!proc) fail_msg("process of %s (acknowledged) is missing after kill -9", id);
        }
        checked++;
    }
    print_message("crash: %d writes acknowledged before kill -9, %d groups checked, %zu "
                  "sandboxes on disk\n",
                  acked + 1, checked, json_array_size(sbxs));
    assert_true(checked >= CRASH_KILL_AT / 3 - 1);
    json_decref(j);
    close_store(f, st);
}

static void test_refuse_garbage(void **state)
{
    fixture_t *f = *state;
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 7 + 3);
    spit(f->db, junk, sizeof junk);
    assert_refused(f, "not a sandgate database (not an SQLite file)");
    spit(f->db, "hello\n", 6); /* shorter than a header */
    assert_refused(f, "not a sandgate database");
}

static void test_refuse_foreign_sqlite(void **state)
{
    fixture_t *f = *state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    sql(db, "CREATE TABLE sandboxes(id TEXT); INSERT INTO sandboxes VALUES('someone else')");
    sqlite3_close(db);
    assert_refused(f, "is an SQLite database but not sandgate's (application_id 0x00000000");
}

static void test_refuse_corrupt(void **state)
{
    fixture_t *f = *state;
    sg_store_t *st = open_ok(f, NULL);
    res_t r[200];
    memset(r, 0, sizeof r);
    char big[2000];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = 0;
    for (int i = 0; i < 200; i++) {
        char id[32];
        snprintf(id, sizeof id, "sb-%d", i);
        sg_store_sandbox_t s = {
            .id = id, .tenant = "t", .provider = "p", .state = "Running", .message = big};
        put_sbx(st, &s, &r[i]);
    }
    run(f);
    close_store(f, st);

    /* Scribble over a table page in the middle of the file (the header page stays intact). */
    char *data;
    size_t n = slurp(f->db, &data);
    assert_true(n > 8 * 4096);
    memset(data + 5 * 4096, 0xA5, 4096);
    spit(f->db, data, n);
    free(data);
    assert_refused(f, "is corrupt");
}

/* Builds the database v1 of sandgate wrote (schema v1 is frozen history: copied here, not
 * taken from store.c, so a change to the migration code cannot hide a break). */
static void write_v1(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sql(db, "PRAGMA application_id = 1397187682");
    sql(db, "PRAGMA journal_mode = WAL");
    sql(db, "BEGIN;"
            "CREATE TABLE sandboxes( id TEXT PRIMARY KEY NOT NULL, tenant TEXT NOT NULL,"
            " provider TEXT NOT NULL, provider_id TEXT, execd TEXT, access_token TEXT,"
            " create_request TEXT, state TEXT NOT NULL, reason TEXT, message TEXT, metadata TEXT,"
            " created_us INTEGER NOT NULL, expires_us INTEGER NOT NULL DEFAULT 0,"
            " transition_us INTEGER NOT NULL DEFAULT 0);"
            "CREATE TABLE processes( sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE"
            " CASCADE, id TEXT NOT NULL, command TEXT NOT NULL, background INTEGER NOT NULL"
            " DEFAULT 0, state TEXT NOT NULL, exit_code INTEGER, error TEXT, created_us INTEGER"
            " NOT NULL, finished_us INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(sandbox_id, id));"
            "CREATE TABLE segments( sandbox_id TEXT NOT NULL, process_id TEXT NOT NULL, seq"
            " INTEGER NOT NULL, path TEXT NOT NULL, first_event_id INTEGER NOT NULL,"
            " last_event_id INTEGER NOT NULL, first_out INTEGER NOT NULL, out_end INTEGER NOT"
            " NULL, bytes INTEGER NOT NULL, PRIMARY KEY(sandbox_id, process_id, seq), FOREIGN"
            " KEY(sandbox_id, process_id) REFERENCES processes(sandbox_id, id) ON DELETE"
            " CASCADE);"
            "INSERT INTO sandboxes(id, tenant, provider, state, created_us, transition_us)"
            " VALUES('old-1', 'default', 'local', 'Running', 11, 12);"
            "INSERT INTO processes(sandbox_id, id, command, state, created_us)"
            " VALUES('old-1', 'cmd', 'ls', 'running', 13);"
            "PRAGMA user_version = 1;"
            "COMMIT");
    sqlite3_close(db);
}

static void test_migrate_v1(void **state)
{
    fixture_t *f = *state;
    write_v1(f->db);
    assert_int_equal(sql_int(f->db, "PRAGMA user_version"), 1);

    sg_store_t *st = open_ok(f, NULL);
    json_t *j = load(f, st);
    json_t *s = json_array_get(json_object_get(j, "sandboxes"), 0);
    assert_string_equal(json_string_value(json_object_get(s, "id")), "old-1");
    assert_int_equal(json_integer_value(json_object_get(s, "transition_us")), 12);
    assert_int_equal(json_integer_value(json_object_get(s, "reap_us")), 0); /* v2's default */
    assert_int_equal(json_array_size(json_object_get(j, "processes")), 1);
    json_decref(j);

    /* the new column is written and read */
    res_t r = {0};
    sg_store_sandbox_t n = {.id = "old-1",
                            .tenant = "default",
                            .provider = "local",
                            .state = "Failed",
                            .created_us = 11,
                            .reap_us = 99};
    put_sbx(st, &n, &r);
    run(f);
    assert_int_equal(r.err, 0);
    j = load(f, st);
    s = json_array_get(json_object_get(j, "sandboxes"), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "reap_us")), 99);
    assert_int_equal(json_array_size(json_object_get(j, "processes")), 1); /* upsert kept it */
    json_decref(j);
    close_store(f, st);
    assert_int_equal(sql_int(f->db, "PRAGMA user_version"), SG_STORE_SCHEMA_VERSION);
    assert_int_equal(sql_int(f->db, "PRAGMA application_id"), SG_STORE_APP_ID);
}

static void test_refuse_newer(void **state)
{
    fixture_t *f = *state;
    sg_store_t *st = open_ok(f, NULL);
    res_t r = {0};
    sg_store_sandbox_t s = {.id = "keep", .tenant = "t", .provider = "p", .state = "Running"};
    put_sbx(st, &s, &r);
    run(f);
    assert_int_equal(r.err, 0);
    close_store(f, st);

    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    sql(db, "PRAGMA user_version = 3");
    sqlite3_close(db);
    assert_refused(f, "schema version 3, newer than this sandgate knows (2)");
    assert_int_equal(sql_int(f->db, "PRAGMA user_version"), 3);
    assert_int_equal(sql_int(f->db, "SELECT count(*) FROM sandboxes WHERE id = 'keep'"), 1);
}

static void test_close_drains(void **state)
{
    fixture_t *f = *state;
    sg_store_t *st = open_ok(f, NULL);
    order_t o = {0, 0};
    seq_ud_t *u = calloc(500, sizeof *u);
    for (int i = 0; i < 500; i++) {
        char id[32];
        snprintf(id, sizeof id, "d-%d", i);
        sg_store_sandbox_t s = {.id = id, .tenant = "t", .provider = "p", .state = "Pending"};
        u[i].o = &o;
        u[i].i = i;
        assert_int_equal(sg_store_put_sandbox(st, &s, on_seq, &u[i]), 0);
    }
    /* closed in the same loop turn, before the worker could have finished */
    int closed = 0;
    sg_store_close(st, on_closed, &closed);
    sg_store_sandbox_t late = {.id = "late", .tenant = "t", .provider = "p", .state = "Pending"};
    assert_int_equal(sg_store_put_sandbox(st, &late, on_res, NULL), SG_ECLOSED);
    assert_int_equal(sg_store_load_all(st, on_loaded, NULL), SG_ECLOSED);
    run(f);
    assert_int_equal(closed, 1);
    assert_int_equal(o.next, 500);
    free(u);
    assert_int_equal(sql_int(f->db, "SELECT count(*) FROM sandboxes"), 500);
}

static void test_open_dirs(void **state)
{
    fixture_t *f = *state;
    char sub[128], path[160];
    struct stat sb;

    /* a missing directory is created (0700), the database file is 0600 */
    snprintf(sub, sizeof sub, "%s/data", f->dir);
    res_t r;
    sg_store_t *st = open_at(f, sub, NULL, &r);
    assert_int_equal(r.err, 0);
    close_store(f, st);
    assert_int_equal(stat(sub, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    snprintf(path, sizeof path, "%s/%s", sub, SG_STORE_FILE);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sql_int(path, "PRAGMA user_version"), SG_STORE_SCHEMA_VERSION);
    assert_int_equal(sql_int(path, "PRAGMA application_id"), SG_STORE_APP_ID);

    /* an existing empty directory; writes queued before the open completes run after it */
    res_t ro = {0}, rw = {0};
    st = NULL;
    assert_int_equal(sg_store_open(&f->loop, f->dir, NULL, on_res, &ro, &st), 0);
    sg_store_sandbox_t s = {.id = "early", .tenant = "t", .provider = "p", .state = "Pending"};
    put_sbx(st, &s, &rw);
    run(f);
    assert_int_equal(ro.called, 1);
    assert_int_equal(ro.err, 0);
    assert_int_equal(rw.called, 1);
    assert_int_equal(rw.err, 0);
    close_store(f, st);

    /* the existing database, and an empty file (what a crash right after creating it leaves) */
    st = open_ok(f, NULL);
    json_t *j = load(f, st);
    assert_int_equal(json_array_size(json_object_get(j, "sandboxes")), 1);
    json_decref(j);
    close_store(f, st);
    spit(path, "", 0);
    st = open_at(f, sub, NULL, &r);
    assert_int_equal(r.err, 0);
    close_store(f, st);

    /* a data directory that cannot be created */
    snprintf(path, sizeof path, "%s/file", f->dir);
    spit(path, "x", 1);
    snprintf(sub, sizeof sub, "%s/file/data", f->dir);
    st = open_at(f, sub, NULL, &r);
    assert_int_equal(r.err, UV_ENOTDIR);
    assert_non_null(strstr(r.msg, "cannot create data directory"));
    close_store(f, st);
}

static void test_queue_bound(void **state)
{
    fixture_t *f = *state;
    sg_store_config_t cfg;
    sg_store_config_init(&cfg);
    cfg.queue_max = 8;
    sg_store_t *st = open_ok(f, &cfg);
    res_t r[9];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 8; i++) {
        char id[16];
        snprintf(id, sizeof id, "q-%d", i);
        sg_store_sandbox_t s = {.id = id, .tenant = "t", .provider = "p", .state = "Pending"};
        put_sbx(st, &s, &r[i]);
    }
    sg_store_sandbox_t s = {.id = "q-8", .tenant = "t", .provider = "p", .state = "Pending"};
    assert_int_equal(sg_store_put_sandbox(st, &s, on_res, &r[8]), SG_ETOOBIG);
    run(f);
    for (int i = 0; i < 8; i++)
        assert_int_equal(r[i].called, 1);
    assert_int_equal(r[8].called, 0);
    /* room again once they called back */
    put_sbx(st, &s, &r[8]);
    run(f);
    assert_int_equal(r[8].err, 0);
    close_store(f, st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_durability, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_foreign_sqlite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_newer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_drains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_dirs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
