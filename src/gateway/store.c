/* store.c: the durable store (store.h): SQLite on one worker thread, fed by the loop.
 *
 * Map
 *   loop side     sg_store_* copy their arguments into an op_t and append it to `in` (under
 *                 mu, signalling cv). on_async() takes the `done` list and runs callbacks in
 *                 order. `inflight` refs the async handle only while something is pending.
 *   worker        worker() owns the sqlite3 connection. It takes the next op, or the run of
 *                 consecutive writes at the head of the queue (group commit, at most
 *                 batch_max), runs them, appends them to `done` and wakes the loop.
 *   open          do_open(): header check by hand before SQLite sees the file (a foreign file
 *                 is never opened by SQLite, so never written), then user_version / quick_check
 *                 before anything writes, then WAL, pragmas, migrations, prepared statements.
 *   schema        migrations[v] takes the database from version v to v + 1 in one transaction
 *                 together with the user_version bump.
 *
 * Locking: mu guards in, done and the worker's counters. The worker never holds mu while it
 * runs SQL, so the loop thread waits for mu only as long as a list splice takes. Everything
 * an op carries is written before it is queued and read after it is dequeued (the mutex
 * orders both directions). */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandgate/common.h"

enum {
    OP_OPEN,
    OP_CLOSE,
    OP_LOAD,
    /* writes from here on: they share transactions */
    OP_PUT_SBX,
    OP_DEL_SBX,
    OP_PUT_PROC,
    OP_DEL_PROC,
    OP_PUT_SEG,
    OP_DEL_SEGS,
};
#define IS_WRITE(k) ((k) >= OP_PUT_SBX)

enum { ST_PUT_SBX, ST_DEL_SBX, ST_PUT_PROC, ST_DEL_PROC, ST_PUT_SEG, ST_DEL_SEGS, ST_N };

typedef struct op op_t;
struct op {
    op_t *next;
    int kind;
    sg_store_cb cb;
    sg_store_load_cb load_cb;
    void *ud;
    uint64_t submit_ns;
    int err;
    char *msg;
    union {
        sg_store_sandbox_t sbx;
        sg_store_process_t proc;
        sg_store_segment_t seg;
        struct {
            const char *a, *b;
            uint64_t below;
        } del;
    } u;
    sg_store_snapshot_t *snap; /* OP_LOAD result */
};

struct sg_store {
    uv_loop_t *loop;
    sg_store_config_t cfg;
    char *dir;
    char *path;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    uv_async_t async;

    /* under mu */
    op_t *in_head, *in_tail;
    op_t *done_head, *done_tail;
    sg_store_stats_t stats;

    /* loop thread only */
    unsigned inflight;
    int closing;
    int no_thread; /* the worker could not start (open failed before it) */
    void (*close_cb)(void *ud);
    void *close_ud;

    /* worker thread only */
    sqlite3 *db;
    int open_err;
    char *open_msg;
    sqlite3_stmt *stmt[ST_N];
};

void sg_store_config_init(sg_store_config_t *c)
{
    c->sync_full = 1;
    c->batch_max = 1024;
    c->queue_max = 65536;
    c->busy_timeout_ms = 5000;
}

/* --- helpers (worker) */

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return sg_xstrdup(buf);
}

static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return rc == SQLITE_CONSTRAINT_FOREIGNKEY ? SG_ENOTFOUND : SG_EINVAL;
    case SQLITE_FULL: return UV_ENOSPC;
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_AUTH: return UV_EACCES;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return UV_EBUSY;
    case SQLITE_NOMEM: return SG_ENOMEM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return SG_EINVAL;
    default: return UV_EIO;
    }
}

static int exec(sg_store_t *st, const char *sql, char **msg, const char *what)
{
    char *em = NULL;
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, &em);
    if (rc == SQLITE_OK) return 0;
    if (msg) *msg = fmt("%s: %s: %s", st->path, what, em ? em : sqlite3_errstr(rc));
    sqlite3_free(em);
    return map_rc(rc);
}

/* One integer from a pragma or a one-row query; SQLite's rc on failure. */
static int query_int(sg_store_t *st, const char *sql, int64_t *out)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* --- schema */

static int migrate_0_1(sg_store_t *st, char **msg)
{
    return exec(st,
                "CREATE TABLE sandboxes("
                " id TEXT PRIMARY KEY NOT NULL,"
                " tenant TEXT NOT NULL,"
                " provider TEXT NOT NULL,"
                " provider_id TEXT,"
                " execd TEXT,"
                " access_token TEXT,"
                " create_request TEXT,"
                " state TEXT NOT NULL,"
                " reason TEXT,"
                " message TEXT,"
                " metadata TEXT,"
                " created_us INTEGER NOT NULL,"
                " expires_us INTEGER NOT NULL DEFAULT 0,"
                " transition_us INTEGER NOT NULL DEFAULT 0);"
                "CREATE TABLE processes("
                " sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,"
                " id TEXT NOT NULL,"
                " command TEXT NOT NULL,"
                " background INTEGER NOT NULL DEFAULT 0,"
                " state TEXT NOT NULL,"
                " exit_code INTEGER,"
                " error TEXT,"
                " created_us INTEGER NOT NULL,"
                " finished_us INTEGER NOT NULL DEFAULT 0,"
                " PRIMARY KEY(sandbox_id, id));"
                "CREATE TABLE segments("
                " sandbox_id TEXT NOT NULL,"
                " process_id TEXT NOT NULL,"
                " seq INTEGER NOT NULL,"
                " path TEXT NOT NULL,"
                " first_event_id INTEGER NOT NULL,"
                " last_event_id INTEGER NOT NULL,"
                " first_out INTEGER NOT NULL,"
                " out_end INTEGER NOT NULL,"
                " bytes INTEGER NOT NULL,"
                " PRIMARY KEY(sandbox_id, process_id, seq),"
                " FOREIGN KEY(sandbox_id, process_id) REFERENCES processes(sandbox_id, id)"
                " ON DELETE CASCADE);",
                msg, "creating schema v1");
}

/* v2: failed records carry the time they are reaped (sg_sandbox_t.reap_us). */
static int migrate_1_2(sg_store_t *st, char **msg)
{
    return exec(st, "ALTER TABLE sandboxes ADD COLUMN reap_us INTEGER NOT NULL DEFAULT 0;", msg,
                "migrating schema v1 to v2");
}

static int (*const migrations[SG_STORE_SCHEMA_VERSION])(sg_store_t *, char **) = {migrate_0_1,
                                                                                  migrate_1_2};

static int migrate(sg_store_t *st, int64_t from, char **msg)
{
    for (int64_t v = from; v < SG_STORE_SCHEMA_VERSION; v++) {
        char sql[64];
        int r;
        if ((r = exec(st, "BEGIN IMMEDIATE", msg, "migration")) < 0) return r;
        if ((r = migrations[v](st, msg)) < 0) {
            exec(st, "ROLLBACK", NULL, NULL);
            return r;
        }
        /* PRAGMA takes no bound parameters; the value is our own integer, not data. */
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", (int)v + 1);
        if ((r = exec(st, sql, msg, "migration")) < 0 ||
            (r = exec(st, "COMMIT", msg, "migration commit")) < 0) {
            exec(st, "ROLLBACK", NULL, NULL);
            return r;
        }
    }
    return 0;
}

static const char *const stmt_sql[ST_N] = {
    [ST_PUT_SBX] = "INSERT INTO sandboxes(id, tenant, provider, provider_id, execd, access_token,"
                   " create_request, state, reason, message, metadata, created_us, expires_us,"
                   " transition_us, reap_us) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
                   " ?12, ?13, ?14, ?15) ON CONFLICT(id) DO UPDATE SET tenant = excluded.tenant,"
                   " provider = excluded.provider, provider_id = excluded.provider_id,"
                   " execd = excluded.execd, access_token = excluded.access_token,"
                   " create_request = excluded.create_request, state = excluded.state,"
                   " reason = excluded.reason, message = excluded.message,"
                   " metadata = excluded.metadata, created_us = excluded.created_us,"
                   " expires_us = excluded.expires_us, transition_us = excluded.transition_us,"
                   " reap_us = excluded.reap_us",
    [ST_DEL_SBX] = "DELETE FROM sandboxes WHERE id = ?1",
    [ST_PUT_PROC] = "INSERT INTO processes(sandbox_id, id, command, background, state, exit_code,"
                    " error, created_us, finished_us) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    " ON CONFLICT(sandbox_id, id) DO UPDATE SET command = excluded.command,"
                    " background = excluded.background, state = excluded.state,"
                    " exit_code = excluded.exit_code, error = excluded.error,"
                    " created_us = excluded.created_us, finished_us = excluded.finished_us",
    [ST_DEL_PROC] = "DELETE FROM processes WHERE sandbox_id = ?1 AND id = ?2",
    [ST_PUT_SEG] = "INSERT INTO segments(sandbox_id, process_id, seq, path, first_event_id,"
                   " last_event_id, first_out, out_end, bytes) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                   " ?8, ?9) ON CONFLICT(sandbox_id, process_id, seq) DO UPDATE SET"
                   " path = excluded.path, first_event_id = excluded.first_event_id,"
                   " last_event_id = excluded.last_event_id, first_out = excluded.first_out,"
                   " out_end = excluded.out_end, bytes = excluded.bytes",
    [ST_DEL_SEGS] = "DELETE FROM segments WHERE sandbox_id = ?1 AND process_id = ?2 AND seq < ?3",
};

static void db_close(sg_store_t *st)
{
    for (int i = 0; i < ST_N; i++) {
        sqlite3_finalize(st->stmt[i]);
        st->stmt[i] = NULL;
    }
    if (st->db) sqlite3_close_v2(st->db);
    st->db = NULL;
}

/* The first 100 bytes of an existing, non-empty file must be an SQLite header carrying our
 * application_id. Checked with plain reads so that SQLite never opens (and so never writes,
 * journals or checkpoints) a file that is not ours. */
static int check_header(sg_store_t *st, char **msg)
{
    unsigned char h[100];
    int fd = open(st->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        *msg = fmt("%s: cannot open: %s", st->path, strerror(e));
        return -e;
    }
    ssize_t n = pread(fd, h, sizeof h, 0);
    int e = errno;
    close(fd);
    if (n < 0) {
        *msg = fmt("%s: cannot read: %s", st->path, strerror(e));
        return -e;
    }
    if (n < (ssize_t)sizeof h || memcmp(h, "SQLite format 3", 16) != 0) {
        *msg = fmt("%s is not a sandgate database (not an SQLite file); refusing to use or "
                   "overwrite it: move it away or choose another --data directory",
                   st->path);
        return SG_EINVAL;
    }
    uint32_t app = (uint32_t)h[68] << 24 | (uint32_t)h[69] << 16 | (uint32_t)h[70] << 8 | h[71];
    if (app != SG_STORE_APP_ID) {
        *msg = fmt("%s is an SQLite database but not sandgate's (application_id 0x%08x, expected "
                   "0x%08x); refusing to use or overwrite it",
                   st->path, app, (unsigned)SG_STORE_APP_ID);
        return SG_EINVAL;
    }
    return 0;
}

static int do_open(sg_store_t *st, char **msg)
{
    struct stat sb;
    int fresh = 0, r, rc;

    if (mkdir(st->dir, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        *msg = fmt("cannot create data directory %s: %s", st->dir, strerror(e));
        return -e;
    }
    if (stat(st->path, &sb) < 0) {
        int e = errno;
        if (e != ENOENT) {
            *msg = fmt("%s: %s", st->path, strerror(e));
            return -e;
        }
        /* Created here so the mode is 0600 (it holds access tokens); SQLite gives the -wal and
         * -shm files the database's mode. */
        int fd = open(st->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            e = errno;
            *msg = fmt("cannot create %s: %s", st->path, strerror(e));
            return -e;
        }
        close(fd);
        fresh = 1;
    } else if (!S_ISREG(sb.st_mode)) {
        *msg = fmt("%s is not a regular file; refusing to use it", st->path);
        return SG_EINVAL;
    } else if (sb.st_size == 0) {
        fresh = 1; /* nothing in it to lose: created by us before a crash, or by touch */
    } else if ((r = check_header(st, msg)) < 0) {
        return r;
    }

    rc = sqlite3_open_v2(st->path, &st->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, NULL);
    if (rc != SQLITE_OK) {
        *msg = fmt("%s: cannot open: %s", st->path,
                   st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        return map_rc(rc);
    }
    sqlite3_busy_timeout(st->db, (int)st->cfg.busy_timeout_ms);

    char sql[96];
    if (fresh) {
        /* Marks the file as ours in its very first (rollback-journal) transaction, so the
         * main file's header carries the id before anything goes to the WAL. */
        snprintf(sql, sizeof sql, "PRAGMA application_id = %d", (int)SG_STORE_APP_ID);
        if ((r = exec(st, sql, msg, "marking the database")) < 0) return r;
    }

    /* Read-only checks first: a refused database is not written to. */
    int64_t app = 0, ver = 0;
    if ((rc = query_int(st, "PRAGMA application_id", &app)) != SQLITE_OK ||
        (rc = query_int(st, "PRAGMA user_version", &ver)) != SQLITE_OK) {
        *msg = fmt("%s is not a usable sandgate database: %s", st->path, sqlite3_errmsg(st->db));
        return map_rc(rc);
    }
    if (app != SG_STORE_APP_ID) {
        *msg = fmt("%s is an SQLite database but not sandgate's (application_id 0x%08x); "
                   "refusing to use or overwrite it",
                   st->path, (unsigned)app);
        return SG_EINVAL;
    }
    if (ver > SG_STORE_SCHEMA_VERSION || ver < 0) {
        *msg = fmt("%s has schema version %lld, newer than this sandgate knows (%d): refusing "
                   "to use it; run a newer sandgate",
                   st->path, (long long)ver, SG_STORE_SCHEMA_VERSION);
        return SG_EINVAL;
    }
    if (!fresh) {
        sqlite3_stmt *s;
        rc = sqlite3_prepare_v2(st->db, "PRAGMA quick_check(1)", -1, &s, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(s);
            const unsigned char *t = rc == SQLITE_ROW ? sqlite3_column_text(s, 0) : NULL;
            if (t && strcmp((const char *)t, "ok") != 0) {
                *msg = fmt("%s is corrupt (%s); refusing to use or overwrite it", st->path, t);
                sqlite3_finalize(s);
                return SG_EINVAL;
            }
            sqlite3_finalize(s);
            rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
        }
        if (rc != SQLITE_OK) {
            *msg = fmt("%s is corrupt or unreadable (%s); refusing to use or overwrite it",
                       st->path, sqlite3_errmsg(st->db));
            return SG_EINVAL;
        }
    }

    /* journal_mode answers the mode in effect: anything but "wal" means WAL is unavailable
     * here (e.g. a file system without shared memory), which we do not run without. */
    sqlite3_stmt *s;
    rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const unsigned char *mode = sqlite3_column_text(s, 0);
        rc = mode && strcmp((const char *)mode, "wal") == 0 ? SQLITE_OK : SQLITE_CANTOPEN;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) {
        *msg = fmt("%s: cannot switch to WAL mode: %s", st->path,
                   rc == SQLITE_CANTOPEN ? "not supported here" : sqlite3_errmsg(st->db));
        return map_rc(rc);
    }
    if ((r = exec(st,
                  st->cfg.sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                  msg, "pragma")) < 0 ||
        (r = exec(st, "PRAGMA foreign_keys = ON", msg, "pragma")) < 0)
        return r;
    if ((r = migrate(st, ver, msg)) < 0) return r;

    for (int i = 0; i < ST_N; i++) {
        rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                                NULL);
        if (rc != SQLITE_OK) {
            *msg = fmt("%s: preparing statements: %s", st->path, sqlite3_errmsg(st->db));
            return map_rc(rc);
        }
    }
    return 0;
}

/* --- writes (worker) */

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static void bind_u64(sqlite3_stmt *s, int i, uint64_t v)
{
    sqlite3_bind_int64(s, i, v > INT64_MAX ? INT64_MAX : (int64_t)v);
}

/* Runs one write; SQLite's rc (SQLITE_OK when done). */
static int run_write(sg_store_t *st, op_t *op)
{
    sqlite3_stmt *s;
    switch (op->kind) {
    case OP_PUT_SBX: {
        const sg_store_sandbox_t *x = &op->u.sbx;
        s = st->stmt[ST_PUT_SBX];
        bind_text(s, 1, x->id);
        bind_text(s, 2, x->tenant);
        bind_text(s, 3, x->provider);
        bind_text(s, 4, x->provider_id);
        bind_text(s, 5, x->execd);
        bind_text(s, 6, x->access_token);
        bind_text(s, 7, x->create_request);
        bind_text(s, 8, x->state);
        bind_text(s, 9, x->reason);
        bind_text(s, 10, x->message);
        bind_text(s, 11, x->metadata);
        sqlite3_bind_int64(s, 12, x->created_us);
        sqlite3_bind_int64(s, 13, x->expires_us);
        sqlite3_bind_int64(s, 14, x->transition_us);
        sqlite3_bind_int64(s, 15, x->reap_us);
        break;
    }
    case OP_DEL_SBX:
        s = st->stmt[ST_DEL_SBX];
        bind_text(s, 1, op->u.del.a);
        break;
    case OP_PUT_PROC: {
        const sg_store_process_t *x = &op->u.proc;
        s = st->stmt[ST_PUT_PROC];
        bind_text(s, 1, x->sandbox_id);
        bind_text(s, 2, x->id);
        bind_text(s, 3, x->command);
        sqlite3_bind_int(s, 4, x->background ? 1 : 0);
        bind_text(s, 5, x->state);
        if (x->has_exit_code)
            sqlite3_bind_int(s, 6, x->exit_code);
        else
            sqlite3_bind_null(s, 6);
        bind_text(s, 7, x->error);
        sqlite3_bind_int64(s, 8, x->created_us);
        sqlite3_bind_int64(s, 9, x->finished_us);
        break;
    }
    case OP_DEL_PROC:
        s = st->stmt[ST_DEL_PROC];
        bind_text(s, 1, op->u.del.a);
        bind_text(s, 2, op->u.del.b);
        break;
    case OP_PUT_SEG: {
        const sg_store_segment_t *x = &op->u.seg;
        s = st->stmt[ST_PUT_SEG];
        bind_text(s, 1, x->sandbox_id);
        bind_text(s, 2, x->process_id);
        bind_u64(s, 3, x->seq);
        bind_text(s, 4, x->path);
        bind_u64(s, 5, x->first_event_id);
        bind_u64(s, 6, x->last_event_id);
        bind_u64(s, 7, x->first_out);
        bind_u64(s, 8, x->out_end);
        bind_u64(s, 9, x->bytes);
        break;
    }
    case OP_DEL_SEGS:
        s = st->stmt[ST_DEL_SEGS];
        bind_text(s, 1, op->u.del.a);
        bind_text(s, 2, op->u.del.b);
        bind_u64(s, 3, op->u.del.below);
        break;
    default: return SQLITE_MISUSE;
    }
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        /* errmsg before reset: a constraint's text names the constraint */
        if ((rc & 0xff) == SQLITE_CONSTRAINT) {
            if (rc == SQLITE_CONSTRAINT_FOREIGNKEY && op->kind == OP_PUT_PROC)
                op->msg = fmt("sandbox %s is not in the store", op->u.proc.sandbox_id);
            else if (rc == SQLITE_CONSTRAINT_FOREIGNKEY && op->kind == OP_PUT_SEG)
                op->msg = fmt("process %s of sandbox %s is not in the store", op->u.seg.process_id,
                              op->u.seg.sandbox_id);
            else
                op->msg = fmt("store: %s", sqlite3_errmsg(st->db));
        }
    } else {
        rc = SQLITE_OK;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

/* One transaction for the run of writes. A constraint failure fails only its write (SQLite
 * aborts that statement and keeps the transaction); anything else rolls the whole batch back
 * and fails every write in it: none of them is durable, so none may be acknowledged. */
static void run_batch(sg_store_t *st, op_t *head, unsigned n, uint64_t *txn_ns, int *committed)
{
    uint64_t t0 = sg_now_ns();
    char *msg = NULL;
    int r = exec(st, "BEGIN IMMEDIATE", &msg, "begin");
    op_t *op = head;
    for (unsigned i = 0; r == 0 && i < n; i++, op = op->next) {
        int rc = run_write(st, op);
        if (rc == SQLITE_OK) continue;
        if ((rc & 0xff) == SQLITE_CONSTRAINT) {
            op->err = map_rc(rc);
            continue;
        }
        r = map_rc(rc);
        msg = fmt("%s: write failed: %s", st->path, sqlite3_errmsg(st->db));
    }
    if (r == 0) r = exec(st, "COMMIT", &msg, "commit");
    if (r < 0) {
        if (!sqlite3_get_autocommit(st->db)) exec(st, "ROLLBACK", NULL, NULL);
        op = head;
        for (unsigned i = 0; i < n; i++, op = op->next) {
            free(op->msg);
            op->err = r;
            op->msg = sg_xstrdup(msg);
        }
    }
    free(msg);
    *committed = r == 0;
    *txn_ns = sg_now_ns() - t0;
}

/* --- load (worker) */

static char *col_str(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? sg_xstrdup((const char *)t) : NULL;
}

static uint64_t col_u64(sqlite3_stmt *s, int i)
{
    int64_t v = sqlite3_column_int64(s, i);
    return v < 0 ? 0 : (uint64_t)v;
}

/* Grows *v (elements of size sz) to hold one more; returns the new element, zeroed. */
static void *push(void **v, size_t *n, size_t *cap, size_t sz)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = sg_xrealloc(*v, *cap * sz);
    }
    void *e = (char *)*v + (*n)++ * sz;
    memset(e, 0, sz);
    return e;
}

static void snap_free(sg_store_snapshot_t *sn)
{
    if (!sn) return;
    for (size_t i = 0; i < sn->nsandboxes; i++) {
        sg_store_sandbox_t *x = &sn->sandboxes[i];
        const char *f[] = {x->id,     x->tenant,       x->provider,       x->provider_id,
                           x->execd,  x->access_token, x->create_request, x->state,
                           x->reason, x->message,      x->metadata};
        for (size_t k = 0; k < SG_ARRAY_SIZE(f); k++)
            free((void *)f[k]);
    }
    for (size_t i = 0; i < sn->nprocesses; i++) {
        sg_store_process_t *x = &sn->processes[i];
        free((void *)x->sandbox_id);
        free((void *)x->id);
        free((void *)x->command);
        free((void *)x->state);
        free((void *)x->error);
    }
    for (size_t i = 0; i < sn->nsegments; i++) {
        sg_store_segment_t *x = &sn->segments[i];
        free((void *)x->sandbox_id);
        free((void *)x->process_id);
        free((void *)x->path);
    }
    free(sn->sandboxes);
    free(sn->processes);
    free(sn->segments);
    free(sn);
}

static int run_load(sg_store_t *st, op_t *op)
{
    static const char *const q[3] = {
        "SELECT id, tenant, provider, provider_id, execd, access_token, create_request, state,"
        " reason, message, metadata, created_us, expires_us, transition_us, reap_us"
        " FROM sandboxes ORDER BY created_us, id",
        "SELECT sandbox_id, id, command, background, state, exit_code, error, created_us,"
        " finished_us FROM processes ORDER BY sandbox_id, created_us, id",
        "SELECT sandbox_id, process_id, seq, path, first_event_id, last_event_id, first_out,"
        " out_end, bytes FROM segments ORDER BY sandbox_id, process_id, seq",
    };
    sg_store_snapshot_t *sn = sg_xcalloc(1, sizeof *sn);
    size_t cap[3] = {0, 0, 0};
    int r = exec(st, "BEGIN", &op->msg, "load");
    for (int t = 0; r == 0 && t < 3; t++) {
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(st->db, q[t], -1, &s, NULL);
        while (rc == SQLITE_OK || rc == SQLITE_ROW) {
            if ((rc = sqlite3_step(s)) != SQLITE_ROW) break;
            if (t == 0) {
                sg_store_sandbox_t *x =
                    push((void **)&sn->sandboxes, &sn->nsandboxes, &cap[0], sizeof *x);
                x->id = col_str(s, 0);
                x->tenant = col_str(s, 1);
                x->provider = col_str(s, 2);
                x->provider_id = col_str(s, 3);
                x->execd = col_str(s, 4);
                x->access_token = col_str(s, 5);
                x->create_request = col_str(s, 6);
                x->state = col_str(s, 7);
                x->reason = col_str(s, 8);
                x->message = col_str(s, 9);
                x->metadata = col_str(s, 10);
                x->created_us = sqlite3_column_int64(s, 11);
                x->expires_us = sqlite3_column_int64(s, 12);
                x->transition_us = sqlite3_column_int64(s, 13);
                x->reap_us = sqlite3_column_int64(s, 14);
            } else if (t == 1) {
                sg_store_process_t *x =
                    push((void **)&sn->processes, &sn->nprocesses, &cap[1], sizeof *x);
                x->sandbox_id = col_str(s, 0);
                x->id = col_str(s, 1);
                x->command = col_str(s, 2);
                x->background = sqlite3_column_int(s, 3);
                x->state = col_str(s, 4);
                x->has_exit_code = sqlite3_column_type(s, 5) != SQLITE_NULL;
                x->exit_code = sqlite3_column_int(s, 5);
                x->error = col_str(s, 6);
                x->created_us = sqlite3_column_int64(s, 7);
                x->finished_us = sqlite3_column_int64(s, 8);
            } else {
                sg_store_segment_t *x =
                    push((void **)&sn->segments, &sn->nsegments, &cap[2], sizeof *x);
                x->sandbox_id = col_str(s, 0);
                x->process_id = col_str(s, 1);
                x->seq = col_u64(s, 2);
                x->path = col_str(s, 3);
                x->first_event_id = col_u64(s, 4);
                x->last_event_id = col_u64(s, 5);
                x->first_out = col_u64(s, 6);
                x->out_end = col_u64(s, 7);
                x->bytes = col_u64(s, 8);
            }
        }
        if (rc != SQLITE_DONE) {
            r = map_rc(rc);
            op->msg = fmt("%s: load failed: %s", st->path, sqlite3_errmsg(st->db));
        }
        sqlite3_finalize(s);
    }
    if (!sqlite3_get_autocommit(st->db)) exec(st, r == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL);
    if (r < 0) {
        snap_free(sn);
        return r;
    }
    op->snap = sn;
    return 0;
}

/* --- worker thread */

static void worker(void *arg)
{
    sg_store_t *st = arg;
    for (;;) {
        uv_mutex_lock(&st->mu);
        while (!st->in_head)
            uv_cond_wait(&st->cv, &st->mu);
        op_t *head = st->in_head, *last = head;
        unsigned n = 1;
        if (IS_WRITE(head->kind))
            while (n < st->cfg.batch_max && last->next && IS_WRITE(last->next->kind)) {
                last = last->next;
                n++;
            }
        st->in_head = last->next;
        if (!st->in_head) st->in_tail = NULL;
        last->next = NULL;
        uint64_t now = sg_now_ns();
        for (op_t *o = head; o; o = o->next)
            if (now - o->submit_ns > st->stats.queue_wait_max_ns)
                st->stats.queue_wait_max_ns = now - o->submit_ns;
        uv_mutex_unlock(&st->mu);

        uint64_t txn_ns = 0;
        int committed = 0, stop = 0;
        if (head->kind == OP_OPEN) {
            st->open_err = do_open(st, &head->msg);
            if (st->open_err < 0) {
                db_close(st);
                st->open_msg = sg_xstrdup(head->msg ? head->msg : "open failed");
            }
            head->err = st->open_err;
        } else if (head->kind == OP_CLOSE) {
            db_close(st);
            stop = 1;
        } else if (!st->db) {
            for (op_t *o = head; o; o = o->next) {
                o->err = st->open_err < 0 ? st->open_err : SG_ECLOSED;
                o->msg = fmt("store not open: %s", st->open_msg ? st->open_msg : "closed");
            }
        } else if (head->kind == OP_LOAD) {
            head->err = run_load(st, head);
        } else {
            run_batch(st, head, n, &txn_ns, &committed);
        }

        uv_mutex_lock(&st->mu);
        for (op_t *o = head; o; o = o->next) {
            st->stats.ops++;
            if (IS_WRITE(o->kind)) st->stats.writes++;
            if (o->err < 0) st->stats.failed++;
        }
        if (committed) {
            st->stats.transactions++;
            if (n > st->stats.batch_max_seen) st->stats.batch_max_seen = n;
        }
        if (txn_ns > st->stats.txn_max_ns) st->stats.txn_max_ns = txn_ns;
        if (st->done_tail)
            st->done_tail->next = head;
        else
            st->done_head = head;
        st->done_tail = last;
        uv_mutex_unlock(&st->mu);
        uv_async_send(&st->async);
        if (stop) break;
    }
    free(st->open_msg);
    st->open_msg = NULL;
}

/* --- loop side */

static void op_free(op_t *op)
{
    switch (op->kind) {
    case OP_PUT_SBX: {
        sg_store_sandbox_t *x = &op->u.sbx;
        const char *f[] = {x->id,     x->tenant,       x->provider,       x->provider_id,
                           x->execd,  x->access_token, x->create_request, x->state,
                           x->reason, x->message,      x->metadata};
        for (size_t k = 0; k < SG_ARRAY_SIZE(f); k++)
            free((void *)f[k]);
        break;
    }
    case OP_PUT_PROC:
        free((void *)op->u.proc.sandbox_id);
        free((void *)op->u.proc.id);
        free((void *)op->u.proc.command);
        free((void *)op->u.proc.state);
        free((void *)op->u.proc.error);
        break;
    case OP_PUT_SEG:
        free((void *)op->u.seg.sandbox_id);
        free((void *)op->u.seg.process_id);
        free((void *)op->u.seg.path);
        break;
    case OP_DEL_SBX:
    case OP_DEL_PROC:
    case OP_DEL_SEGS:
        free((void *)op->u.del.a);
        free((void *)op->u.del.b);
        break;
    default: break;
    }
    snap_free(op->snap);
    free(op->msg);
    free(op);
}

static void on_closed(uv_handle_t *h)
{
    sg_store_t *st = SG_CONTAINER_OF(h, sg_store_t, async);
    void (*cb)(void *) = st->close_cb;
    void *ud = st->close_ud;
    /* The worker queued the close op as its last act: it has returned or is about to. */
    if (!st->no_thread) uv_thread_join(&st->thread);
    uv_cond_destroy(&st->cv);
    uv_mutex_destroy(&st->mu);
    free(st->dir);
    free(st->path);
    free(st);
    if (cb) cb(ud);
}

static void on_async(uv_async_t *a)
{
    sg_store_t *st = SG_CONTAINER_OF(a, sg_store_t, async);
    uv_mutex_lock(&st->mu);
    op_t *op = st->done_head;
    st->done_head = st->done_tail = NULL;
    uv_mutex_unlock(&st->mu);
    while (op) {
        op_t *next = op->next;
        st->inflight--;
        if (op->kind == OP_CLOSE) {
            op_free(op);
            uv_close((uv_handle_t *)&st->async, on_closed);
            return; /* the last op: nothing follows it */
        }
        if (op->kind == OP_LOAD) {
            if (op->load_cb) op->load_cb(op->ud, op->err, op->err ? op->msg : NULL, op->snap);
        } else if (op->cb) {
            op->cb(op->ud, op->err, op->err ? (op->msg ? op->msg : sg_strerror(op->err)) : NULL);
        }
        op_free(op);
        op = next;
    }
    if (st->inflight == 0) uv_unref((uv_handle_t *)&st->async);
}

static void submit(sg_store_t *st, op_t *op)
{
    op->submit_ns = sg_now_ns();
    if (st->inflight++ == 0) uv_ref((uv_handle_t *)&st->async);
    uv_mutex_lock(&st->mu);
    if (st->in_tail)
        st->in_tail->next = op;
    else
        st->in_head = op;
    st->in_tail = op;
    uv_cond_signal(&st->cv);
    uv_mutex_unlock(&st->mu);
}

/* 0 when st takes another operation, else why not. */
static int admit(sg_store_t *st)
{
    if (st->closing) return SG_ECLOSED;
    if (st->inflight >= st->cfg.queue_max) return SG_ETOOBIG;
    return 0;
}

static op_t *op_new(int kind, sg_store_cb cb, void *ud)
{
    op_t *op = sg_xcalloc(1, sizeof *op);
    op->kind = kind;
    op->cb = cb;
    op->ud = ud;
    return op;
}

static char *sdup(const char *s)
{
    return s ? sg_xstrdup(s) : NULL;
}

int sg_store_open(uv_loop_t *loop, const char *data_dir, const sg_store_config_t *cfg,
                  sg_store_cb cb, void *ud, sg_store_t **out)
{
    if (!data_dir || !*data_dir) return SG_EINVAL;
    sg_store_t *st = sg_xcalloc(1, sizeof *st);
    st->loop = loop;
    if (cfg)
        st->cfg = *cfg;
    else
        sg_store_config_init(&st->cfg);
    if (!st->cfg.batch_max) st->cfg.batch_max = 1;
    if (!st->cfg.queue_max) st->cfg.queue_max = 1;
    st->dir = sg_xstrdup(data_dir);
    size_t n = strlen(data_dir) + sizeof(SG_STORE_FILE) + 2;
    st->path = sg_xmalloc(n);
    snprintf(st->path, n, "%s/%s", data_dir, SG_STORE_FILE);
    int r;
    if ((r = uv_mutex_init(&st->mu)) < 0) goto fail_mu;
    if ((r = uv_cond_init(&st->cv)) < 0) goto fail_cv;
    if ((r = uv_async_init(loop, &st->async, on_async)) < 0) goto fail_async;
    uv_unref((uv_handle_t *)&st->async);
    if ((r = uv_thread_create(&st->thread, worker, st)) < 0) {
        /* st is freed in the handle's close callback, without a join (no thread). */
        st->no_thread = 1;
        uv_close((uv_handle_t *)&st->async, on_closed);
        return r;
    }
    submit(st, op_new(OP_OPEN, cb, ud));
    *out = st;
    return 0;

fail_async:
    uv_cond_destroy(&st->cv);
fail_cv:
    uv_mutex_destroy(&st->mu);
fail_mu:
    free(st->dir);
    free(st->path);
    free(st);
    return r;
}

void sg_store_close(sg_store_t *st, void (*cb)(void *ud), void *ud)
{
    if (st->closing) return;
    st->closing = 1;
    st->close_cb = cb;
    st->close_ud = ud;
    submit(st, op_new(OP_CLOSE, NULL, NULL));
}

int sg_store_put_sandbox(sg_store_t *st, const sg_store_sandbox_t *s, sg_store_cb cb, void *ud)
{
    int r;
    if (!s->id || !s->tenant || !s->provider || !s->state) return SG_EINVAL;
    if ((r = admit(st)) < 0) return r;
    op_t *op = op_new(OP_PUT_SBX, cb, ud);
    sg_store_sandbox_t *x = &op->u.sbx;
    *x = *s;
    x->id = sdup(s->id);
    x->tenant = sdup(s->tenant);
    x->provider = sdup(s->provider);
    x->provider_id = sdup(s->provider_id);
    x->execd = sdup(s->execd);
    x->access_token = sdup(s->access_token);
    x->create_request = sdup(s->create_request);
    x->state = sdup(s->state);
    x->reason = sdup(s->reason);
    x->message = sdup(s->message);
    x->metadata = sdup(s->metadata);
    submit(st, op);
    return 0;
}

static int submit_del(sg_store_t *st, int kind, const char *a, const char *b, uint64_t below,
                      sg_store_cb cb, void *ud)
{
    int r;
    if ((r = admit(st)) < 0) return r;
    op_t *op = op_new(kind, cb, ud);
    op->u.del.a = sdup(a);
    op->u.del.b = sdup(b);
    op->u.del.below = below;
    submit(st, op);
    return 0;
}

int sg_store_delete_sandbox(sg_store_t *st, const char *id, sg_store_cb cb, void *ud)
{
    if (!id) return SG_EINVAL;
    return submit_del(st, OP_DEL_SBX, id, NULL, 0, cb, ud);
}

int sg_store_put_process(sg_store_t *st, const sg_store_process_t *p, sg_store_cb cb, void *ud)
{
    int r;
    if (!p->sandbox_id || !p->id || !p->command || !p->state) return SG_EINVAL;
    if ((r = admit(st)) < 0) return r;
    op_t *op = op_new(OP_PUT_PROC, cb, ud);
    sg_store_process_t *x = &op->u.proc;
    *x = *p;
    x->sandbox_id = sdup(p->sandbox_id);
    x->id = sdup(p->id);
    x->command = sdup(p->command);
    x->state = sdup(p->state);
    x->error = sdup(p->error);
    submit(st, op);
    return 0;
}

int sg_store_delete_process(sg_store_t *st, const char *sandbox_id, const char *id, sg_store_cb cb,
                            void *ud)
{
    if (!sandbox_id || !id) return SG_EINVAL;
    return submit_del(st, OP_DEL_PROC, sandbox_id, id, 0, cb, ud);
}

int sg_store_put_segment(sg_store_t *st, const sg_store_segment_t *g, sg_store_cb cb, void *ud)
{
    int r;
    if (!g->sandbox_id || !g->process_id || !g->path) return SG_EINVAL;
    if ((r = admit(st)) < 0) return r;
    op_t *op = op_new(OP_PUT_SEG, cb, ud);
    sg_store_segment_t *x = &op->u.seg;
    *x = *g;
    x->sandbox_id = sdup(g->sandbox_id);
    x->process_id = sdup(g->process_id);
    x->path = sdup(g->path);
    submit(st, op);
    return 0;
}

int sg_store_delete_segments(sg_store_t *st, const char *sandbox_id, const char *process_id,
                             uint64_t below_seq, sg_store_cb cb, void *ud)
{
    if (!sandbox_id || !process_id) return SG_EINVAL;
    return submit_del(st, OP_DEL_SEGS, sandbox_id, process_id, below_seq, cb, ud);
}

int sg_store_load_all(sg_store_t *st, sg_store_load_cb cb, void *ud)
{
    int r;
    if ((r = admit(st)) < 0) return r;
    op_t *op = op_new(OP_LOAD, NULL, ud);
    op->load_cb = cb;
    submit(st, op);
    return 0;
}

void sg_store_stats(sg_store_t *st, sg_store_stats_t *out)
{
    uv_mutex_lock(&st->mu);
    *out = st->stats;
    uv_mutex_unlock(&st->mu);
    out->queued = st->inflight;
}
