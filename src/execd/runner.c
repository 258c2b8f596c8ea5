/* runner.c: the command engine (see runner.h for the behaviour).
 *
 * Map:
 *   ids, clocks, shell lookup, environment building         (top)
 *   line splitter                                            split_*
 *   line splitter, also public for log readers               sg_run_split_*
 *   command log (background, keep_log): buffered async writes, cursor reads, the
 *     stdout/stderr switch index, followers woken as it grows  log_*
 *   command object: spawn, pipes, exit, timer, completion    cmd_*
 *   record table, expiry (sg_tlist), eviction                rec_*
 *   public API: start / interrupt / signal / status / log read
 *   sessions                                                 sess_*, sg_runner_session_*
 *   engine open / close
 *
 * Lifetime of a command object (cmd_t): created by start, it holds up to four handles
 * (process, two pipes, one timer) and in-flight fs requests (one log write, any number of log
 * reads). `nhandles` and `reqs` count what is still open; `hold` is raised while user callbacks
 * run so a callback that evicts this very record cannot free it under our feet. The object is
 * freed by cmd_maybe_free once it is done, released (out of the table, or never in it) and
 * nothing is open. The process handle is closed only from its exit callback (closing it
 * earlier would leave a zombie libuv never reaps). */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sandgate/timer.h"

extern char **environ;

#define RBUF_SIZE (64 * 1024)

enum { T_NONE, T_TIMEOUT, T_KILL, T_EOF };

typedef struct split {
    char *buf;
    size_t len;
    int pending_cr;  /* last byte seen was '\r': a following '\n' belongs to it */
    int after_piece; /* the last emission was a max_line piece: a terminator now ends it */
} split_t;

typedef struct waiter {
    struct waiter *next;
    void (*cb)(void *ud);
    void *ud;
} waiter_t;

typedef struct session session_t;
typedef struct cmd cmd_t;

struct cmd {
    sg_runner_t *r;
    cmd_t *prev, *next;   /* r->cmds: every object not yet freed */
    cmd_t *tprev, *tnext; /* r->recs: the record table */
    char id[SG_RUN_SID_LEN + 1];
    char *content;
    int in_table, released, background, session_run;
    sg_run_cbs_t cbs;
    int cbs_off; /* after on_done or engine close: no more user callbacks */

    uv_process_t proc;
    uv_pipe_t pipes[2]; /* [0] stdout, [1] stderr */
    uv_timer_t timer;
    int pipe_open[2], pipe_eof[2], proc_open, timer_open;
    int nhandles, reqs, hold;
    int spawned, exited, done, timer_kind, timed_out, interrupted;
    int signalled; /* last signal sg_runner_signal sent, 0 = none */
    int paused;    /* the pipes are stopped (either reason below) */
    int log_wait;  /* the background log buffer is full */
    int out_held;  /* the consumer asked to hold (sg_runner_hold) */
    int pid;

    uint64_t off[2], comb_off;
    split_t sp[2];

    int exit_code, term_signal, has_exit;
    char error[512];
    uint64_t started_ns, finished_ns, mono_start, exec_ms;
    waiter_t *waiters;
    sg_tentry_t ttl;
    session_t *sess;

    /* background log */
    int log_fd;
    char *log_path;
    uint64_t log_size;    /* bytes accepted (on disk + in memory) */
    uint64_t log_written; /* bytes confirmed on disk */
    int log_trunc, log_err;
    char *pend, *infl;
    size_t pend_len, pend_cap, infl_len, infl_done, infl_cap;
    int writing;
    uv_fs_t wreq;
    /* Which stream each log byte came from: the offsets where the stream switches (the stream
     * alternates, so entry i is stream idx_first ^ (i & 1)), with that stream's own offset
     * there. Bounded by cfg.log_index_max; past it idx_end says where knowledge stops. */
    struct lidx {
        uint64_t comb, soff;
    } * idx;
    size_t idx_len, idx_cap;
    int idx_first, idx_full;
    uint64_t idx_end;
    waiter_t *log_waiters; /* sg_runner_log_wait: one-shot, fired when the log moves */
};

struct session {
    session_t *prev, *next;
    char id[SG_RUN_SID_LEN + 1];
    char *cwd;
    char *envf, *cwdf;
    cmd_t *run;
};

struct sg_runner {
    uv_loop_t *loop;
    sg_runner_cfg_t cfg;
    char *log_dir, *shell;
    sg_run_env_t *extra_env; /* deep copy of cfg.extra_env */
    cmd_t *cmds;
    cmd_t *recs, *recs_tail;
    size_t nrecs, nlive;
    session_t *sessions;
    size_t nsessions;
    sg_tlist_t ttl;
    int ttl_open;
    uint64_t seed[2], counter;
    sg_runner_stats_t stats;
    char rbuf[RBUF_SIZE];
    int closing;
    void (*close_cb)(void *ud);
    void *close_ud;
};

/* ---- ids, clocks, helpers ---------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    /* splitmix64's finalizer: a bijection, so distinct counters give distinct ids. */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void gen_hex(sg_runner_t *r, char out[SG_RUN_ID_LEN + 1])
{
    uint64_t c = ++r->counter;
    uint64_t hi = r->seed[0] ^ mix64(c), lo = r->seed[1] ^ mix64(c ^ 0x5bd1e995u);
    snprintf(out, SG_RUN_ID_LEN + 1, "%016llx%016llx", (unsigned long long)hi,
             (unsigned long long)lo);
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int set_err(sg_run_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_err(sg_run_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *sg_runner_signame(int sig)
{
    /* Go's syscall signal strings on Linux. */
    /* clang-format off */
    static const char *names[] = {
        NULL, "hangup", "interrupt", "quit", "illegal instruction", "trace/breakpoint trap",
        "aborted", "bus error", "floating point exception", "killed", "user defined signal 1",
        "segmentation fault", "user defined signal 2", "broken pipe", "alarm clock", "terminated",
        "stack fault", "child exited", "continued", "stopped (signal)", "stopped",
        "stopped (tty input)", "stopped (tty output)", "urgent I/O condition",
        "CPU time limit exceeded", "file size limit exceeded", "virtual timer expired",
        "profiling timer expired", "window changed", "I/O possible", "power failure",
        "bad system call"};
    /* clang-format on */
    if (sig > 0 && sig < (int)SG_ARRAY_SIZE(names)) return names[sig];
    return NULL;
}

/* Looks `name` up in $PATH like Go's exec.LookPath. Returns a malloc'd path or NULL. */
static char *look_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path) return NULL;
    const char *p = path;
    for (;;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char cand[4096];
        if (n == 0)
            snprintf(cand, sizeof(cand), "./%s", name);
        else
            snprintf(cand, sizeof(cand), "%.*s/%s", (int)n, p, name);
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
            return sg_xstrdup(cand);
        if (!e) break;
        p = e + 1;
    }
    return NULL;
}

/* The shell for `-c`. *is_bash tells whether bash-only flags may be passed. */
static int find_shell(sg_runner_t *r, char **out, int *is_bash, sg_run_err_t *err)
{
    if (r->shell) {
        *out = sg_xstrdup(r->shell);
        const char *b = strrchr(r->shell, '/');
        *is_bash = strcmp(b ? b + 1 : r->shell, "bash") == 0;
        return 0;
    }
    if ((*out = look_path("bash"))) {
        *is_bash = 1;
        return 0;
    }
    if ((*out = look_path("sh"))) {
        *is_bash = 0;
        return 0;
    }
    return set_err(err, UV_ENOENT, "exec: \"sh\": executable file not found in $PATH");
}

static int env_key_eq(const char *entry, const char *key)
{
    size_t n = strlen(key);
    return strncmp(entry, key, n) == 0 && entry[n] == '=';
}

/* environ with envs replacing same-named keys; base NULL = the agent's environ. */
static char **build_env(char **base, const sg_run_env_t *envs, size_t n)
{
    size_t nb = 0;
    if (base)
        while (base[nb])
            nb++;
    char **out = sg_xcalloc(nb + n + 1, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < nb; i++) {
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++)
            dup = env_key_eq(base[i], envs[j].key);
        if (!dup) out[k++] = sg_xstrdup(base[i]);
    }
    for (size_t j = 0; j < n; j++) {
        /* A later duplicate key wins, like a map. */
        int later = 0;
        for (size_t m = j + 1; m < n && !later; m++)
            later = strcmp(envs[j].key, envs[m].key) == 0;
        if (later) continue;
        size_t len = strlen(envs[j].key) + strlen(envs[j].value) + 2;
        out[k] = sg_xmalloc(len);
        snprintf(out[k], len, "%s=%s", envs[j].key, envs[j].value);
        k++;
    }
    out[k] = NULL;
    return out;
}

static void free_env(char **env)
{
    if (!env) return;
    for (size_t i = 0; env[i]; i++)
        free(env[i]);
    free(env);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- line splitter ----------------------------------------------------------------------- */

static void emit_line(cmd_t *c, int s, const char *text, size_t len)
{
    if (c->cbs_off || !c->cbs.on_line) return;
    c->cbs.on_line(c->cbs.ud, c->session_run ? SG_RUN_STDOUT : (sg_run_stream_t)(s + 1), text, len);
}

typedef void (*split_emit_fn)(void *ud, int s, const char *text, size_t len);

static void cmd_emit(void *ud, int s, const char *text, size_t len)
{
    emit_line(ud, s, text, len);
}

/* Where to end a max_line piece so it does not stop inside a UTF-8 sequence (the HTTP layer
 * would turn both halves into U+FFFD): before a trailing lead byte whose sequence is
 * incomplete. Invalid bytes are not our business; at most 3 bytes move to the next piece. */
static size_t utf8_cut(const char *b, size_t len)
{
    size_t i = len;
    while (i > 0 && len - i < 3 && ((unsigned char)b[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0) return len;
    unsigned char lead = (unsigned char)b[i - 1];
    size_t need = lead >= 0xF0 && lead <= 0xF7   ? 4
                  : lead >= 0xE0 && lead <= 0xEF ? 3
                  : lead >= 0xC2 && lead <= 0xDF ? 2
                                                 : 0;
    if (need && (i - 1) + need > len && i - 1 > 0) return i - 1;
    return len;
}

/* Feeds bytes; whole lines that lie entirely inside data are emitted without copying. */
static void split_run(split_t *sp, size_t max, int s, const char *data, size_t n,
                      split_emit_fn emit, void *ud)
{
    size_t i = 0;
    while (i < n) {
        char ch = data[i];
        if (ch == '\n' || ch == '\r') {
            if (ch == '\n' && sp->pending_cr) {
                sp->pending_cr = 0;
                i++;
                continue;
            }
            if (sp->len > 0)
                emit(ud, s, sp->buf, sp->len);
            else if (!sp->after_piece)
                emit(ud, s, "\n", 1);
            sp->len = 0;
            sp->after_piece = 0;
            sp->pending_cr = ch == '\r';
            i++;
            continue;
        }
        sp->pending_cr = 0;
        /* A run of text up to the next terminator or the end of data. */
        size_t j = i;
        while (j < n && data[j] != '\n' && data[j] != '\r')
            j++;
        const char *p = data + i;
        size_t run = j - i;
        while (run > 0) {
            if (sp->len == 0 && j < n && run <= max) {
                /* Complete line in the read buffer: emit in place at the terminator. */
                break;
            }
            size_t room = max - sp->len;
            size_t take = SG_MIN(room, run);
            if (!sp->buf) sp->buf = sg_xmalloc(max);
            memcpy(sp->buf + sp->len, p, take);
            sp->len += take;
            p += take;
            run -= take;
            sp->after_piece = 0;
            if (sp->len == max) {
                size_t cut = utf8_cut(sp->buf, max);
                emit(ud, s, sp->buf, cut);
                memmove(sp->buf, sp->buf + cut, max - cut);
                sp->len = max - cut;
                sp->after_piece = sp->len == 0;
            }
        }
        if (run > 0) {
            /* In-place complete line (j < n, so data[j] is its terminator). */
            emit(ud, s, p, run);
            sp->after_piece = 0;
            sp->pending_cr = data[j] == '\r';
            i = j + 1;
            continue;
        }
        i = j;
    }
}

static void split_feed(cmd_t *c, int s, const char *data, size_t n)
{
    split_run(&c->sp[s], c->r->cfg.max_line, s, data, n, cmd_emit, c);
}

static void split_flush(cmd_t *c, int s)
{
    split_t *sp = &c->sp[s];
    if (sp->len > 0) emit_line(c, s, sp->buf, sp->len);
    sp->len = 0;
}

/* The public splitter (sg_run_split_t) is the same code for readers of a log. */
struct sg_run_split {
    split_t sp[2];
    size_t max;
    sg_run_line_fn emit;
    void *ud;
};

static void pub_emit(void *ud, int s, const char *text, size_t len)
{
    sg_run_split_t *p = ud;
    p->emit(p->ud, (sg_run_stream_t)(s + 1), text, len);
}

sg_run_split_t *sg_run_split_new(size_t max_line, sg_run_line_fn emit, void *ud)
{
    sg_run_split_t *p = sg_xcalloc(1, sizeof(*p));
    p->max = max_line ? max_line : 64 * 1024;
    p->emit = emit;
    p->ud = ud;
    return p;
}

void sg_run_split_feed(sg_run_split_t *p, sg_run_stream_t st, const char *data, size_t n)
{
    int s = st == SG_RUN_STDERR;
    split_run(&p->sp[s], p->max, s, data, n, pub_emit, p);
}

void sg_run_split_flush(sg_run_split_t *p)
{
    for (int s = 0; s < 2; s++) {
        split_t *sp = &p->sp[s];
        if (sp->len > 0) pub_emit(p, s, sp->buf, sp->len);
        sp->len = 0;
    }
}

void sg_run_split_free(sg_run_split_t *p)
{
    if (!p) return;
    free(p->sp[0].buf);
    free(p->sp[1].buf);
    free(p);
}

/* ---- background log ---------------------------------------------------------------------- */

static void cmd_maybe_free(cmd_t *c);
static void engine_maybe_free(sg_runner_t *r);
static void pipes_update(cmd_t *c);

static void log_write_cb(uv_fs_t *req);

static void log_kick(cmd_t *c)
{
    if (c->writing || c->log_err || c->released) return;
    if (c->infl_done >= c->infl_len) {
        if (c->pend_len == 0) return;
        /* Swap the pending buffer in as the one being written. */
        char *t = c->infl;
        size_t tc = c->infl_cap;
        c->infl = c->pend;
        c->infl_cap = c->pend_cap;
        c->infl_len = c->pend_len;
        c->infl_done = 0;
        c->pend = t;
        c->pend_cap = tc;
        c->pend_len = 0;
    }
    uv_buf_t b = uv_buf_init(c->infl + c->infl_done, (unsigned)(c->infl_len - c->infl_done));
    int rc =
        uv_fs_write(c->r->loop, &c->wreq, c->log_fd, &b, 1, (int64_t)c->log_written, log_write_cb);
    if (rc < 0) {
        c->log_err = rc;
        return;
    }
    c->wreq.data = c;
    c->writing = 1;
    c->reqs++;
}

static void log_fire(cmd_t *c);

static void log_fail(cmd_t *c, int rc)
{
    /* The file is unusable: keep what is on disk, forget the rest, stop logging. */
    c->log_err = rc;
    c->log_size = c->log_written;
    c->infl_len = c->infl_done = c->pend_len = 0;
    log_fire(c);
}

/* Wakes every sg_runner_log_wait caller once (they re-check status and read on). */
static void log_fire(cmd_t *c)
{
    if (!c->log_waiters || c->r->closing) return;
    waiter_t *w = c->log_waiters;
    c->log_waiters = NULL;
    c->hold++;
    while (w) {
        waiter_t *next = w->next;
        void (*cb)(void *) = w->cb;
        void *ud = w->ud;
        free(w);
        cb(ud);
        w = next;
    }
    c->hold--;
}

/* Notes that the next log byte (at log_size) comes from stream s, if that is a switch. */
static void log_index(cmd_t *c, int s)
{
    if (c->log_fd < 0 || c->log_err || c->idx_full || c->log_size >= c->r->cfg.log_cap) return;
    if (c->idx_len && (c->idx_first ^ (int)((c->idx_len - 1) & 1)) == s) return;
    if (c->idx_len >= c->r->cfg.log_index_max) {
        c->idx_full = 1;
        c->idx_end = c->log_size;
        return;
    }
    if (c->idx_len == c->idx_cap) {
        c->idx_cap = c->idx_cap ? c->idx_cap * 2 : 16;
        if (c->idx_cap > c->r->cfg.log_index_max) c->idx_cap = c->r->cfg.log_index_max;
        c->idx = sg_xrealloc(c->idx, c->idx_cap * sizeof(*c->idx));
    }
    if (!c->idx_len) c->idx_first = s;
    c->idx[c->idx_len].comb = c->log_size;
    c->idx[c->idx_len].soff = c->off[s];
    c->idx_len++;
}

static void log_write_cb(uv_fs_t *req)
{
    cmd_t *c = req->data;
    ssize_t res = req->result;
    uv_fs_req_cleanup(req);
    c->writing = 0;
    c->reqs--;
    if (res < 0) {
        log_fail(c, (int)res);
    } else {
        c->log_written += (uint64_t)res;
        c->infl_done += (size_t)res;
        log_kick(c);
    }
    if (c->log_wait && (c->pend_len < c->r->cfg.log_buf || c->log_err || c->released)) {
        c->log_wait = 0;
        pipes_update(c);
    }
    cmd_maybe_free(c);
}

static void log_append(cmd_t *c, const char *data, size_t n)
{
    if (c->log_fd < 0 || c->log_err) return;
    uint64_t cap = c->r->cfg.log_cap;
    if (c->log_size >= cap) {
        c->log_trunc = 1;
        return;
    }
    size_t take = (size_t)SG_MIN((uint64_t)n, cap - c->log_size);
    if (take < n) c->log_trunc = 1;
    c->r->stats.log_bytes += take;
    if (c->pend_len + take > c->pend_cap) {
        size_t nc = c->pend_cap ? c->pend_cap : 16384;
        while (nc < c->pend_len + take)
            nc *= 2;
        c->pend = sg_xrealloc(c->pend, nc);
        c->pend_cap = nc;
    }
    memcpy(c->pend + c->pend_len, data, take);
    c->pend_len += take;
    c->log_size += take;
    log_kick(c);
    if (c->pend_len >= c->r->cfg.log_buf && c->writing && !c->log_wait) {
        c->log_wait = 1;
        c->r->stats.read_pauses++;
        pipes_update(c);
    }
}

/* Copies log bytes [from, to) that are still in memory (from >= log_written). */
static size_t log_copy_mem(cmd_t *c, uint64_t from, uint64_t to, char *dst)
{
    size_t n = 0;
    size_t inmem_infl = c->infl_len - c->infl_done;
    for (uint64_t o = from; o < to; o++) {
        uint64_t idx = o - c->log_written;
        if (idx < inmem_infl)
            dst[n++] = c->infl[c->infl_done + idx];
        else if (idx - inmem_infl < c->pend_len)
            dst[n++] = c->pend[idx - inmem_infl];
        else
            break;
    }
    return n;
}

typedef struct lread {
    uv_fs_t fs;
    cmd_t *c;
    uint64_t cursor;
    size_t max, want, room, got;
    char *buf;
    sg_run_log_cb cb;
    void *ud;
} lread_t;

static void log_read_cb(uv_fs_t *req)
{
    lread_t *lr = req->data;
    cmd_t *c = lr->c;
    ssize_t res = req->result;
    uv_fs_req_cleanup(req);
    c->reqs--;
    int err = 0;
    if (res < 0) {
        err = (int)res;
    } else {
        lr->got += (size_t)res;
        uint64_t pos = lr->cursor + lr->got;
        if ((size_t)res == lr->want && lr->got < lr->room && !c->r->closing) {
            if (pos < c->log_written) {
                /* Writes landed while we read: the next bytes are on disk now. */
                lr->want = (size_t)SG_MIN((uint64_t)(lr->room - lr->got), c->log_written - pos);
                uv_buf_t b = uv_buf_init(lr->buf + lr->got, (unsigned)lr->want);
                int rc =
                    uv_fs_read(c->r->loop, &lr->fs, c->log_fd, &b, 1, (int64_t)pos, log_read_cb);
                if (rc == 0) {
                    c->reqs++;
                    return;
                }
                err = rc;
            } else if (pos < c->log_size) {
                uint64_t to = SG_MIN(c->log_size, lr->cursor + lr->room);
                lr->got += log_copy_mem(c, pos, to, lr->buf + lr->got);
            }
        }
    }
    if (c->r->closing) err = SG_ECLOSED;
    c->hold++;
    if (err)
        lr->cb(lr->ud, err, NULL, 0, lr->cursor);
    else
        lr->cb(lr->ud, 0, lr->buf, lr->got, lr->cursor + lr->got);
    c->hold--;
    free(lr->buf);
    free(lr);
    cmd_maybe_free(c);
}

/* ---- command object ---------------------------------------------------------------------- */

static void cmd_finish(cmd_t *c);
static void rec_release(cmd_t *c);

static void cmd_free(cmd_t *c)
{
    sg_runner_t *r = c->r;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->cmds = c->next;
    if (c->next) c->next->prev = c->prev;
    r->nlive--;
    if (c->log_fd >= 0) {
        uv_fs_t req;
        uv_fs_close(NULL, &req, c->log_fd, NULL);
        uv_fs_req_cleanup(&req);
    }
    if (c->log_path && c->released && c->in_table) {
        /* Expired or evicted: the log goes with the record. A synchronous unlink: one
         * syscall, and this path is off the request path (timer / eviction). */
        unlink(c->log_path);
    }
    while (c->waiters) {
        waiter_t *w = c->waiters;
        c->waiters = w->next;
        free(w);
    }
    while (c->log_waiters) {
        waiter_t *w = c->log_waiters;
        c->log_waiters = w->next;
        free(w);
    }
    free(c->idx);
    free(c->log_path);
    free(c->pend);
    free(c->infl);
    free(c->sp[0].buf);
    free(c->sp[1].buf);
    free(c->content);
    free(c);
    engine_maybe_free(r);
}

static void cmd_maybe_free(cmd_t *c)
{
    if (c->hold || c->nhandles || c->reqs || !c->done) return;
    if (c->in_table && !c->released) return;
    cmd_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    cmd_t *c = h->data;
    c->nhandles--;
    cmd_maybe_free(c);
}

static void close_pipe(cmd_t *c, int s)
{
    if (!c->pipe_open[s]) return;
    c->pipe_open[s] = 0;
    uv_close((uv_handle_t *)&c->pipes[s], on_handle_closed);
}

static void close_timer(cmd_t *c)
{
    if (!c->timer_open) return;
    c->timer_open = 0;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void kill_group(cmd_t *c, int sig)
{
    /* The leader is the session/group leader (UV_PROCESS_DETACHED -> setsid), pgid == pid. */
    if (c->pid > 0) kill(-c->pid, sig);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    cmd_t *c = h->data;
    /* One engine-wide buffer: every read is consumed inside its read callback. */
    *buf = uv_buf_init(c->r->rbuf, RBUF_SIZE);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    cmd_t *c = st->data;
    int s = st == (uv_stream_t *)&c->pipes[1];
    if (nread > 0) {
        size_t n = (size_t)nread;
        uint64_t before = c->log_size;
        int trunc_before = c->log_trunc;
        log_index(c, s);
        log_append(c, buf->base, n);
        c->hold++;
        if (!c->done) {
            if (!c->cbs_off && c->cbs.on_chunk)
                c->cbs.on_chunk(c->cbs.ud,
                                c->session_run ? SG_RUN_STDOUT : (sg_run_stream_t)(s + 1),
                                buf->base, n, c->off[s], c->comb_off);
            split_feed(c, s, buf->base, n);
        }
        /* Counted after done too (bytes drained into the log), so offsets stay log offsets. */
        c->off[s] += n;
        c->comb_off += n;
        if (c->log_size != before || c->log_trunc != trunc_before) log_fire(c);
        c->hold--;
        cmd_maybe_free(c);
        return;
    }
    if (nread == 0) return;
    /* EOF or a read error: this pipe is finished either way. */
    c->pipe_eof[s] = 1;
    close_pipe(c, s);
    if (!c->done && c->exited && c->pipe_eof[0] && c->pipe_eof[1]) cmd_finish(c);
    cmd_maybe_free(c);
}

/* Whether the consumer's hold still applies. It ends with completion (no more callbacks), and
 * once an interrupted or timed-out command's leader is gone: its group was killed, so what is
 * left is what sits in the pipes, and holding it would make DELETE /command (which answers at
 * completion) wait for the slowest reader. */
static int out_hold_applies(const cmd_t *c)
{
    return c->out_held && !c->done && !c->cbs_off &&
           !(c->exited && (c->interrupted || c->timed_out));
}

/* The pipes are read only while neither the log nor the consumer wants a pause. */
static void pipes_update(cmd_t *c)
{
    int pause = !c->released && (c->log_wait || out_hold_applies(c));
    if (pause == c->paused) return;
    for (int s = 0; s < 2; s++) {
        if (!c->pipe_open[s]) continue;
        if (pause)
            uv_read_stop((uv_stream_t *)&c->pipes[s]);
        else
            uv_read_start((uv_stream_t *)&c->pipes[s], on_alloc, on_read);
    }
    c->paused = pause;
}

static void arm_timer(cmd_t *c, int kind, uint64_t ms);

static void on_timer(uv_timer_t *t)
{
    cmd_t *c = t->data;
    int kind = c->timer_kind;
    c->timer_kind = T_NONE;
    switch (kind) {
    case T_TIMEOUT:
        c->timed_out = 1;
        kill_group(c, SIGKILL);
        break;
    case T_KILL: kill_group(c, SIGKILL); break;
    case T_EOF:
        if (c->paused) {
            /* We are holding the pipes (log or consumer backpressure), not a grandchild: the
             * data is still to be read, wait more. */
            arm_timer(c, T_EOF, c->r->cfg.eof_grace_ms);
            break;
        }
        /* Grandchildren hold the pipes: complete now, keep draining (runner.h). */
        if (!c->done) cmd_finish(c);
        cmd_maybe_free(c);
        break;
    default: break;
    }
}

static void arm_timer(cmd_t *c, int kind, uint64_t ms)
{
    if (!c->timer_open) return;
    c->timer_kind = kind;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    cmd_t *c = p->data;
    c->exited = 1;
    c->has_exit = 1;
    if (sig) {
        c->exit_code = -1;
        c->term_signal = sig;
        const char *nm = sg_runner_signame(sig);
        if (nm)
            snprintf(c->error, sizeof(c->error), "signal: %s", nm);
        else
            snprintf(c->error, sizeof(c->error), "signal %d", sig);
    } else {
        c->exit_code = (int)status;
        if (status)
            snprintf(c->error, sizeof(c->error), "exit status %d", (int)status);
        else
            c->error[0] = '\0';
    }
    c->proc_open = 0;
    uv_close((uv_handle_t *)p, on_handle_closed);
    if (c->r->closing || c->done) {
        c->done = 1;
        cmd_maybe_free(c);
        return;
    }
    if (c->timer_open) uv_timer_stop(&c->timer);
    c->timer_kind = T_NONE;
    pipes_update(c); /* an interrupted / timed-out command's hold ends here */
    if (c->pipe_eof[0] && c->pipe_eof[1])
        cmd_finish(c);
    else
        arm_timer(c, T_EOF, c->r->cfg.eof_grace_ms);
    cmd_maybe_free(c);
}

static void cmd_finish(cmd_t *c)
{
    sg_runner_t *r = c->r;
    c->done = 1;
    c->finished_ns = wall_ns();
    c->exec_ms = (uv_hrtime() - c->mono_start) / 1000000u;
    close_timer(c);
    if (c->interrupted || c->timed_out) kill_group(c, SIGKILL);
    c->hold++;
    split_flush(c, 0);
    split_flush(c, 1);
    if (c->sess) {
        c->sess->run = NULL;
        c->sess = NULL;
    }
    if (c->in_table) sg_tentry_arm(&r->ttl, &c->ttl);
    if (!c->cbs_off && c->cbs.on_done) {
        sg_run_result_t res = {
            .id = c->id,
            .exit_code = c->exit_code,
            .term_signal = c->term_signal,
            .error = c->error,
            .timed_out = c->timed_out,
            .interrupted = c->interrupted,
            .signalled = c->signalled,
            .started_ns = c->started_ns,
            .finished_ns = c->finished_ns,
            .exec_ms = c->exec_ms,
        };
        c->cbs.on_done(c->cbs.ud, &res);
    }
    c->cbs_off = 1;
    while (c->waiters) {
        waiter_t *w = c->waiters;
        c->waiters = w->next;
        void (*cb)(void *) = w->cb;
        void *ud = w->ud;
        free(w);
        cb(ud);
    }
    log_fire(c);
    c->hold--;
    pipes_update(c); /* the consumer's hold ends with completion: keep draining */
    /* Draining pipes without a log file would keep the record busy for nothing useful, but
     * closing them would SIGPIPE a `cmd &` left behind, so both cases keep reading. */
}

static cmd_t *cmd_new(sg_runner_t *r, const char *content)
{
    cmd_t *c = sg_xcalloc(1, sizeof(*c));
    c->r = r;
    c->content = sg_xstrdup(content);
    c->log_fd = -1;
    sg_tentry_init(&c->ttl, NULL);
    c->next = r->cmds;
    if (r->cmds) r->cmds->prev = c;
    r->cmds = c;
    r->nlive++;
    return c;
}

typedef struct spawn_args {
    const char *file;
    char **args;
    char **env;
    const char *cwd;
    int merge; /* session run: only a stdout pipe */
    int has_uid, has_gid;
    uint32_t uid, gid;
    uint64_t timeout_ms;
} spawn_args_t;

/* Spawns c. On failure c is marked done (exit 255, error = message) and its handles close. */
static int cmd_spawn(cmd_t *c, const spawn_args_t *a, sg_run_err_t *err)
{
    sg_runner_t *r = c->r;
    uv_loop_t *loop = r->loop;
    c->started_ns = wall_ns();
    c->mono_start = uv_hrtime();
    int np = a->merge ? 1 : 2;
    for (int s = 0; s < np; s++) {
        uv_pipe_init(loop, &c->pipes[s], 0);
        c->pipes[s].data = c;
        c->pipe_open[s] = 1;
        c->nhandles++;
    }
    if (a->merge) c->pipe_eof[1] = 1;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->timer_open = 1;
    c->nhandles++;

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&c->pipes[0];
    if (a->merge) {
        stdio[2].flags = UV_IGNORE; /* the session script does exec 2>&1 */
    } else {
        stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
        stdio[2].data.stream = (uv_stream_t *)&c->pipes[1];
    }
    uv_process_options_t o;
    memset(&o, 0, sizeof(o));
    o.exit_cb = on_exit_cb;
    o.file = a->file;
    o.args = a->args;
    o.env = a->env;
    o.cwd = a->cwd;
    o.flags = UV_PROCESS_DETACHED;
    o.stdio_count = 3;
    o.stdio = stdio;
    int rc = 0;
    if (a->has_uid) {
        uint32_t gid = a->gid;
        if (!a->has_gid) {
            struct passwd pw, *res = NULL;
            char pbuf[4096];
            if (getpwuid_r(a->uid, &pw, pbuf, sizeof(pbuf), &res) != 0 || !res) {
                rc = set_err(err, UV_EINVAL, "user: unknown userid %u", (unsigned)a->uid);
                goto fail;
            }
            gid = pw.pw_gid;
        }
        o.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
        o.uid = a->uid;
        o.gid = gid;
    }
    c->proc.data = c;
    rc = uv_spawn(loop, &c->proc, &o);
    if (rc < 0) {
        if (a->cwd && !is_dir(a->cwd)) /* the child's chdir failed, not the exec */
            set_err(err, rc, "chdir %s: %s", a->cwd, uv_strerror(rc));
        else
            set_err(err, rc, "fork/exec %s: %s", a->file, uv_strerror(rc));
        /* uv_spawn failures leave an initialized handle that must be closed (process.rst). */
        c->nhandles++;
        uv_close((uv_handle_t *)&c->proc, on_handle_closed);
        goto fail;
    }
    c->spawned = 1;
    c->proc_open = 1;
    c->nhandles++;
    c->pid = c->proc.pid;
    for (int s = 0; s < np; s++)
        uv_read_start((uv_stream_t *)&c->pipes[s], on_alloc, on_read);
    if (a->timeout_ms) arm_timer(c, T_TIMEOUT, a->timeout_ms);
    return 0;

fail:
    c->done = 1;
    c->cbs_off = 1;
    c->has_exit = 1;
    c->exit_code = 255;
    snprintf(c->error, sizeof(c->error), "%s", err ? err->msg : "start failed");
    c->finished_ns = wall_ns();
    close_pipe(c, 0);
    close_pipe(c, 1);
    close_timer(c);
    return rc;
}

/* ---- record table ------------------------------------------------------------------------ */

static void rec_expire_cb(sg_tentry_t *e)
{
    cmd_t *c = SG_CONTAINER_OF(e, cmd_t, ttl);
    c->r->stats.expired++;
    rec_release(c);
}

static void rec_add(sg_runner_t *r, cmd_t *c)
{
    c->in_table = 1;
    sg_tentry_init(&c->ttl, rec_expire_cb);
    c->tprev = r->recs_tail;
    if (r->recs_tail)
        r->recs_tail->tnext = c;
    else
        r->recs = c;
    r->recs_tail = c;
    r->nrecs++;
}

/* Takes c out of the table; it is freed once nothing of it is open. Draining pipes close. */
static void rec_release(cmd_t *c)
{
    sg_runner_t *r = c->r;
    if (c->released) return;
    c->released = 1;
    if (c->in_table) {
        if (c->tprev)
            c->tprev->tnext = c->tnext;
        else
            r->recs = c->tnext;
        if (c->tnext)
            c->tnext->tprev = c->tprev;
        else
            r->recs_tail = c->tprev;
        c->tprev = c->tnext = NULL;
        r->nrecs--;
    }
    sg_tentry_disarm(&c->ttl);
    close_pipe(c, 0);
    close_pipe(c, 1);
    c->hold++;
    log_fire(c); /* log readers see the record gone */
    c->hold--;
    cmd_maybe_free(c);
}

static cmd_t *rec_find(sg_runner_t *r, const char *id)
{
    for (cmd_t *c = r->recs; c; c = c->tnext)
        if (strcmp(c->id, id) == 0) return c;
    return NULL;
}

/* Makes room for one record: evicts the oldest finished one if the table is full. */
static int rec_make_room(sg_runner_t *r)
{
    if (r->nrecs < r->cfg.max_records) return 0;
    if (!r->ttl.head) return SG_ETOOBIG;
    cmd_t *old = SG_CONTAINER_OF(r->ttl.head, cmd_t, ttl);
    r->stats.evicted++;
    rec_release(old);
    return 0;
}

/* ---- public: commands -------------------------------------------------------------------- */

int sg_runner_start(sg_runner_t *r, const sg_run_req_t *req, const sg_run_cbs_t *cbs,
                    char id_out[SG_RUN_ID_LEN + 1], sg_run_err_t *err)
{
    id_out[0] = '\0';
    if (err) err->code = 0, err->msg[0] = '\0';
    if (r->closing) return set_err(err, SG_ECLOSED, "runner is closing");
    if (!req->command || !*req->command)
        return set_err(err, SG_EINVAL, "invalid request, validation error command is required");
    if (req->has_gid && !req->has_uid)
        return set_err(err, SG_EINVAL, "uid is required when gid is provided");
    if (req->cwd && *req->cwd && !is_dir(req->cwd))
        return set_err(err, SG_EINVAL,
                       "invalid request, validation error working directory does not exist: %s",
                       req->cwd);
    if (rec_make_room(r) < 0)
        return set_err(err, SG_ETOOBIG, "too many commands (%zu running)", r->nrecs);

    char id[SG_RUN_ID_LEN + 1];
    gen_hex(r, id);
    int log_fd = -1;
    char *log_path = NULL;
    if (req->background || req->keep_log) {
        size_t n = strlen(r->log_dir) + SG_RUN_ID_LEN + 16;
        log_path = sg_xmalloc(n);
        snprintf(log_path, n, "%s/%s.output", r->log_dir, id);
        uv_fs_t fr;
        log_fd =
            uv_fs_open(NULL, &fr, log_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600, NULL);
        uv_fs_req_cleanup(&fr);
        if (log_fd < 0) {
            int rc = set_err(err, log_fd, "error running commands open %s: %s", log_path,
                             uv_strerror(log_fd));
            free(log_path);
            return rc;
        }
    }
    cmd_t *c = cmd_new(r, req->command);
    memcpy(c->id, id, sizeof(id));
    memcpy(id_out, id, sizeof(id));
    c->background = req->background;
    c->log_fd = log_fd;
    c->log_path = log_path;
    if (cbs) c->cbs = *cbs;
    rec_add(r, c);

    char *shell = NULL;
    int is_bash = 0;
    int rc = find_shell(r, &shell, &is_bash, err);
    if (rc < 0) {
        c->done = 1;
        c->cbs_off = 1;
        c->has_exit = 1;
        c->exit_code = 255;
        snprintf(c->error, sizeof(c->error), "%s", err ? err->msg : "no shell");
        c->started_ns = c->finished_ns = wall_ns();
        sg_tentry_arm(&r->ttl, &c->ttl);
        return rc;
    }
    char *args[] = {shell, "-c", (char *)req->command, NULL};
    char **base = r->extra_env ? build_env(environ, r->cfg.extra_env, r->cfg.n_extra_env) : NULL;
    char **env = build_env(base ? base : environ, req->envs, req->n_envs);
    free_env(base);
    spawn_args_t a = {
        .file = shell,
        .args = args,
        .env = env,
        .cwd = (req->cwd && *req->cwd) ? req->cwd : NULL,
        .has_uid = req->has_uid,
        .has_gid = req->has_gid,
        .uid = req->uid,
        .gid = req->gid,
        .timeout_ms = req->timeout_ms,
    };
    rc = cmd_spawn(c, &a, err);
    free_env(env);
    free(shell);
    if (rc < 0) sg_tentry_arm(&r->ttl, &c->ttl);
    return rc;
}

static session_t *sess_find(sg_runner_t *r, const char *sid)
{
    for (session_t *s = r->sessions; s; s = s->next)
        if (strcmp(s->id, sid) == 0) return s;
    return NULL;
}

static void add_waiter(cmd_t *c, void (*done)(void *), void *ud)
{
    if (!done) return;
    waiter_t *w = sg_xmalloc(sizeof(*w));
    w->cb = done;
    w->ud = ud;
    w->next = c->waiters;
    c->waiters = w;
}

static void add_log_waiter(cmd_t *c, void (*cb)(void *), void *ud)
{
    waiter_t *w = sg_xmalloc(sizeof(*w));
    w->cb = cb;
    w->ud = ud;
    w->next = c->log_waiters;
    c->log_waiters = w;
}

int sg_runner_interrupt(sg_runner_t *r, const char *id, void (*done)(void *ud), void *ud,
                        sg_run_err_t *err)
{
    if (err) err->code = 0, err->msg[0] = '\0';
    cmd_t *c = rec_find(r, id);
    if (!c) {
        session_t *s = sess_find(r, id);
        if (!s)
            return set_err(err, SG_ENOTFOUND, "error interruptting code context. no such session");
        cmd_t *run = s->run;
        if (run) add_waiter(run, done, ud);
        sg_runner_session_delete(r, id, NULL);
        if (!run && done) done(ud);
        return 0;
    }
    if (c->done)
        return set_err(err, SG_EINVAL,
                       "error interruptting code context. command session %s is not running", id);
    add_waiter(c, done, ud);
    if (!c->interrupted) {
        c->interrupted = 1;
        kill_group(c, SIGTERM);
        if (!c->exited) arm_timer(c, T_KILL, r->cfg.kill_grace_ms);
    }
    return 0;
}

void sg_runner_forget(sg_runner_t *r, void *ud)
{
    for (cmd_t *c = r->cmds; c; c = c->next) {
        waiter_t **pp = &c->waiters;
        while (*pp) {
            if ((*pp)->ud == ud) {
                waiter_t *w = *pp;
                *pp = w->next;
                free(w);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

int sg_runner_signal(sg_runner_t *r, const char *id, int signo, sg_run_err_t *err)
{
    if (err) err->code = 0, err->msg[0] = '\0';
    if (signo < 1 || signo > SG_RUN_SIG_MAX)
        return set_err(err, SG_EINVAL, "invalid signal %d (1..%d)", signo, SG_RUN_SIG_MAX);
    cmd_t *c = rec_find(r, id);
    if (!c) return set_err(err, SG_ENOTFOUND, "command not found: %s", id);
    /* Not done = still reported running, which includes a leader that exited while the EOF
     * grace waits for grandchildren: they are still in the group and can be signalled. */
    if (c->done || !c->spawned || c->pid <= 0)
        return set_err(err, UV_ESRCH, "command %s is not running", id);
    if (kill(-c->pid, signo) != 0) {
        int e = -errno;
        if (e == UV_ESRCH) return set_err(err, UV_ESRCH, "command %s is not running", id);
        return set_err(err, e, "signal %d to command %s: %s", signo, id, uv_strerror(e));
    }
    c->signalled = signo;
    return 0;
}

int sg_runner_hold(sg_runner_t *r, void *ud, int hold)
{
    int n = 0;
    for (cmd_t *c = r->cmds; c; c = c->next) {
        if (c->done || c->cbs_off || c->cbs.ud != ud) continue;
        if (hold && !c->out_held) r->stats.out_holds++;
        c->out_held = hold ? 1 : 0;
        pipes_update(c);
        n++;
    }
    return n;
}

int sg_runner_signum(const char *name)
{
    /* Linux numbers from <signal.h>; the first name of a number is the one we accept first. */
    /* clang-format off */
    static const struct { const char *name; int num; } names[] = {
        {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL},
        {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"IOT", SIGIOT}, {"BUS", SIGBUS},
        {"FPE", SIGFPE}, {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},
        {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM},
        {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
        {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU}, {"URG", SIGURG},
        {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
        {"WINCH", SIGWINCH}, {"IO", SIGIO}, {"POLL", SIGPOLL}, {"PWR", SIGPWR},
        {"SYS", SIGSYS}};
    /* clang-format on */
    if (!name || !*name) return SG_EINVAL;
    if (name[0] >= '0' && name[0] <= '9') {
        int n = 0;
        for (const char *p = name; *p; p++) {
            if (*p < '0' || *p > '9' || n > SG_RUN_SIG_MAX) return SG_EINVAL;
            n = n * 10 + (*p - '0');
        }
        return n >= 1 && n <= SG_RUN_SIG_MAX ? n : SG_EINVAL;
    }
    if (strncasecmp(name, "SIG", 3) == 0) name += 3;
    for (size_t i = 0; i < SG_ARRAY_SIZE(names); i++)
        if (strcasecmp(name, names[i].name) == 0) return names[i].num;
    return SG_EINVAL;
}

int sg_runner_status(sg_runner_t *r, const char *id, sg_run_status_t *out, sg_run_err_t *err)
{
    if (err) err->code = 0, err->msg[0] = '\0';
    cmd_t *c = rec_find(r, id);
    if (!c) return set_err(err, SG_ENOTFOUND, "command not found: %s", id);
    memset(out, 0, sizeof(*out));
    memcpy(out->id, c->id, SG_RUN_ID_LEN);
    out->id[SG_RUN_ID_LEN] = '\0';
    out->content = c->content;
    out->running = !c->done;
    out->background = c->background;
    out->has_exit = c->done && c->has_exit;
    out->exit_code = c->exit_code;
    out->term_signal = c->term_signal;
    out->signalled = c->signalled;
    out->error = c->done ? c->error : "";
    out->started_ns = c->started_ns;
    out->finished_ns = c->done ? c->finished_ns : 0;
    out->log_size = c->log_size;
    out->log_truncated = c->log_trunc;
    out->has_log = c->log_fd >= 0;
    out->log_failed = c->log_err != 0;
    out->start_failed = c->done && !c->spawned;
    out->exec_ms = c->done ? c->exec_ms : 0;
    return 0;
}

int sg_runner_log_read(sg_runner_t *r, const char *id, uint64_t cursor, size_t max,
                       sg_run_log_cb cb, void *ud, sg_run_err_t *err)
{
    if (err) err->code = 0, err->msg[0] = '\0';
    cmd_t *c = rec_find(r, id);
    if (!c) return set_err(err, SG_ENOTFOUND, "command not found: %s", id);
    if (c->log_fd < 0)
        return set_err(err, SG_EINVAL, "command %s is not running in background", id);
    if (max == 0) max = 1;
    lread_t *lr = sg_xcalloc(1, sizeof(*lr));
    lr->c = c;
    lr->cursor = cursor;
    lr->max = max;
    lr->cb = cb;
    lr->ud = ud;
    lr->want = cursor < c->log_written ? (size_t)SG_MIN((uint64_t)max, c->log_written - cursor) : 0;
    /* Room for the file part and whatever is still in memory behind it. */
    size_t room = (size_t)SG_MIN((uint64_t)max, c->log_size > cursor ? c->log_size - cursor : 0);
    lr->room = room;
    lr->buf = sg_xmalloc(room + 1);
    uv_buf_t b = uv_buf_init(lr->buf, (unsigned)lr->want);
    lr->fs.data = lr;
    /* Always through the threadpool, even for 0 bytes, so cb never runs inside this call. */
    int rc = uv_fs_read(r->loop, &lr->fs, c->log_fd, &b, 1, (int64_t)cursor, log_read_cb);
    if (rc < 0) {
        free(lr->buf);
        free(lr);
        return set_err(err, rc, "error reading log of %s: %s", id, uv_strerror(rc));
    }
    c->reqs++;
    return 0;
}

int sg_runner_log_stream(sg_runner_t *r, const char *id, uint64_t off, sg_run_stream_t *st,
                         uint64_t *stream_off, uint64_t *run_end)
{
    cmd_t *c = rec_find(r, id);
    *run_end = UINT64_MAX;
    if (!c) return SG_ENOTFOUND;
    if (!c->idx_len || (c->idx_full && off >= c->idx_end) || off < c->idx[0].comb) return 1;
    size_t lo = 0, hi = c->idx_len; /* the last entry with comb <= off */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->idx[mid].comb <= off)
            lo = mid;
        else
            hi = mid;
    }
    *st = (sg_run_stream_t)((c->idx_first ^ (int)(lo & 1)) + 1);
    *stream_off = c->idx[lo].soff + (off - c->idx[lo].comb);
    if (lo + 1 < c->idx_len)
        *run_end = c->idx[lo + 1].comb;
    else if (c->idx_full)
        *run_end = c->idx_end;
    return 0;
}

int sg_runner_log_wait(sg_runner_t *r, const char *id, uint64_t have, void (*cb)(void *ud),
                       void *ud, sg_run_err_t *err)
{
    if (err) err->code = 0, err->msg[0] = '\0';
    cmd_t *c = rec_find(r, id);
    if (!c) return set_err(err, SG_ENOTFOUND, "command not found: %s", id);
    if (c->log_fd < 0) return set_err(err, SG_EINVAL, "command %s has no log", id);
    if (c->done || c->log_size > have) return 1;
    add_log_waiter(c, cb, ud);
    return 0;
}

void sg_runner_log_unwait(sg_runner_t *r, void *ud)
{
    for (cmd_t *c = r->cmds; c; c = c->next) {
        waiter_t **pp = &c->log_waiters;
        while (*pp) {
            if ((*pp)->ud == ud) {
                waiter_t *w = *pp;
                *pp = w->next;
                free(w);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

const char *sg_runner_log_path(sg_runner_t *r, const char *id)
{
    cmd_t *c = rec_find(r, id);
    return c && c->log_path ? c->log_path : "";
}

void sg_runner_get_stats(const sg_runner_t *r, sg_runner_stats_t *out)
{
    *out = r->stats;
    out->live = r->nlive;
    out->records = r->nrecs;
    out->sessions = r->nsessions;
}

/* ---- sessions ---------------------------------------------------------------------------- */

/* Runs in `bash --noprofile --norc -c`; $1 env file, $2 cwd file, $3 command, $4 "1" when
 * the run has its own cwd. State is written from the EXIT trap so `exit N` saves it too. */
static const char SESSION_SCRIPT[] =
    "exec 2>&1\n"
    "__sg_E=$1 __sg_C=$2 __sg_cmd=$3 __sg_own=$4\n"
    "shift 4\n"
    "if [ -r \"$__sg_E\" ]; then . \"$__sg_E\" 2>/dev/null; fi\n"
    "if [ -z \"$__sg_own\" ] && [ -r \"$__sg_C\" ]; then\n"
    "  IFS= read -r __sg_d < \"$__sg_C\" && cd -- \"$__sg_d\" 2>/dev/null\n"
    "fi\n"
    "trap '__sg_s=$?; export -p > \"$__sg_E\"; pwd > \"$__sg_C\"; exit $__sg_s' EXIT\n"
    "eval \"$__sg_cmd\"\n";

static int mkdir_p(const char *path)
{
    char *p = sg_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char save = *s;
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                rc = -errno;
                break;
            }
            *s = save;
            if (!save) break;
        }
    }
    free(p);
    if (rc == 0 && !is_dir(path)) rc = UV_ENOTDIR;
    return rc;
}

int sg_runner_session_create(sg_runner_t *r, const char *cwd, char sid_out[SG_RUN_SID_LEN + 1],
                             sg_run_err_t *err)
{
    sid_out[0] = '\0';
    if (err) err->code = 0, err->msg[0] = '\0';
    if (r->closing) return set_err(err, SG_ECLOSED, "runner is closing");
    if (r->nsessions >= r->cfg.max_sessions)
        return set_err(err, SG_ETOOBIG, "too many sessions (%zu)", r->nsessions);
    if (cwd && *cwd) {
        int rc = mkdir_p(cwd);
        if (rc < 0)
            return set_err(err, rc, "error creating session. mkdir %s: %s", cwd, uv_strerror(rc));
    }
    session_t *s = sg_xcalloc(1, sizeof(*s));
    char hex[SG_RUN_ID_LEN + 1];
    gen_hex(r, hex);
    snprintf(s->id, sizeof(s->id), "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
             hex + 20);
    s->cwd = (cwd && *cwd) ? sg_xstrdup(cwd) : NULL;
    size_t n = strlen(r->log_dir) + SG_RUN_SID_LEN + 32;
    s->envf = sg_xmalloc(n);
    s->cwdf = sg_xmalloc(n);
    snprintf(s->envf, n, "%s/sg-sess-%s.env", r->log_dir, s->id);
    snprintf(s->cwdf, n, "%s/sg-sess-%s.cwd", r->log_dir, s->id);
    s->next = r->sessions;
    if (r->sessions) r->sessions->prev = s;
    r->sessions = s;
    r->nsessions++;
    memcpy(sid_out, s->id, sizeof(s->id));
    return 0;
}

int sg_runner_session_run(sg_runner_t *r, const char *sid, const char *command, const char *cwd,
                          uint64_t timeout_ms, const sg_run_cbs_t *cbs, sg_run_err_t *err)
{
    if (err) err->code = 0, err->msg[0] = '\0';
    if (r->closing) return set_err(err, SG_ECLOSED, "runner is closing");
    session_t *s = sess_find(r, sid);
    if (!s) return set_err(err, SG_ENOTFOUND, "context not found");
    if (!command || !*command)
        return set_err(err, SG_EINVAL, "invalid request, validation error command is required");
    if (cwd && *cwd && !is_dir(cwd))
        return set_err(err, SG_EINVAL,
                       "invalid request, validation error working directory does not exist: %s",
                       cwd);
    if (s->run) return set_err(err, UV_EBUSY, "session %s is busy", sid);

    char *shell = NULL;
    int is_bash = 0;
    int rc = find_shell(r, &shell, &is_bash, err);
    if (rc < 0) return rc;
    cmd_t *c = cmd_new(r, command);
    memcpy(c->id, s->id, sizeof(s->id));
    c->session_run = 1;
    if (cbs) c->cbs = *cbs;
    c->sess = s;
    s->run = c;

    char *args[12];
    int k = 0;
    args[k++] = shell;
    if (is_bash) {
        args[k++] = "--noprofile";
        args[k++] = "--norc";
    }
    args[k++] = "-c";
    args[k++] = (char *)SESSION_SCRIPT;
    args[k++] = "sg-session";
    args[k++] = s->envf;
    args[k++] = s->cwdf;
    args[k++] = (char *)command;
    args[k++] = (cwd && *cwd) ? "1" : "";
    args[k] = NULL;
    /* After the first run the env file is the whole environment, so unsets persist. */
    char *empty[] = {NULL};
    char **base = r->extra_env ? build_env(environ, r->cfg.extra_env, r->cfg.n_extra_env) : NULL;
    char **env = access(s->envf, R_OK) == 0 ? empty : base ? base : environ;
    spawn_args_t a = {
        .file = shell,
        .args = args,
        .env = env,
        .cwd = (cwd && *cwd) ? cwd : s->cwd,
        .merge = 1,
        .timeout_ms = timeout_ms ? timeout_ms : r->cfg.session_timeout_ms,
    };
    rc = cmd_spawn(c, &a, err);
    free(shell);
    free_env(base);
    if (rc < 0) {
        s->run = NULL;
        c->sess = NULL;
        cmd_maybe_free(c);
    }
    return rc;
}

static void sess_free(sg_runner_t *r, session_t *s, int remove_files)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        r->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    r->nsessions--;
    if (s->run) {
        s->run->sess = NULL;
        s->run->interrupted = 1;
        kill_group(s->run, SIGKILL);
    }
    if (remove_files) {
        unlink(s->envf);
        unlink(s->cwdf);
    }
    free(s->envf);
    free(s->cwdf);
    free(s->cwd);
    free(s);
}

int sg_runner_session_delete(sg_runner_t *r, const char *sid, sg_run_err_t *err)
{
    if (err) err->code = 0, err->msg[0] = '\0';
    session_t *s = sess_find(r, sid);
    if (!s) return set_err(err, SG_ENOTFOUND, "session %s not found", sid);
    sess_free(r, s, 1);
    return 0;
}

/* ---- engine ------------------------------------------------------------------------------ */

static void free_extra_env(sg_runner_t *r);

int sg_runner_open(uv_loop_t *loop, const sg_runner_cfg_t *cfg, sg_runner_t **out)
{
    sg_runner_t *r = sg_xcalloc(1, sizeof(*r));
    r->loop = loop;
    if (cfg) r->cfg = *cfg;
    if (!r->cfg.max_line) r->cfg.max_line = 64 * 1024;
    if (!r->cfg.log_cap) r->cfg.log_cap = 64ull << 20;
    if (!r->cfg.log_buf) r->cfg.log_buf = 256 * 1024;
    if (!r->cfg.log_index_max) r->cfg.log_index_max = 16384;
    if (!r->cfg.eof_grace_ms) r->cfg.eof_grace_ms = 100;
    if (!r->cfg.kill_grace_ms) r->cfg.kill_grace_ms = 3000;
    if (!r->cfg.record_ttl_ms) r->cfg.record_ttl_ms = 3600 * 1000;
    if (!r->cfg.max_records) r->cfg.max_records = 1024;
    if (!r->cfg.max_sessions) r->cfg.max_sessions = 256;
    if (!r->cfg.session_timeout_ms) r->cfg.session_timeout_ms = 24ull * 3600 * 1000;
    const char *dir = r->cfg.log_dir;
    if (!dir || !*dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    r->log_dir = sg_xstrdup(dir);
    r->cfg.log_dir = r->log_dir;
    r->shell = r->cfg.shell ? sg_xstrdup(r->cfg.shell) : NULL;
    r->cfg.shell = r->shell;
    if (r->cfg.n_extra_env) {
        r->extra_env = sg_xcalloc(r->cfg.n_extra_env, sizeof(sg_run_env_t));
        for (size_t i = 0; i < r->cfg.n_extra_env; i++) {
            r->extra_env[i].key = sg_xstrdup(r->cfg.extra_env[i].key);
            r->extra_env[i].value = sg_xstrdup(r->cfg.extra_env[i].value);
        }
    }
    r->cfg.extra_env = r->extra_env;
    if (getrandom(r->seed, sizeof(r->seed), 0) != (ssize_t)sizeof(r->seed)) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, r->seed, sizeof(r->seed)) : -1;
        if (fd >= 0) close(fd);
        if (n != (ssize_t)sizeof(r->seed)) {
            free_extra_env(r);
            free(r->log_dir);
            free(r->shell);
            free(r);
            return SG_EINVAL;
        }
    }
    /* A peer that goes away mid-write must give EPIPE, not kill the agent. Children get
     * SIG_DFL back: libuv resets dispositions and the mask between fork and exec. */
    signal(SIGPIPE, SIG_IGN);
    sg_tlist_init(loop, &r->ttl, r->cfg.record_ttl_ms);
    r->ttl.timer.data = r;
    r->ttl_open = 1;
    *out = r;
    return 0;
}

static void free_extra_env(sg_runner_t *r)
{
    for (size_t i = 0; r->extra_env && i < r->cfg.n_extra_env; i++) {
        free((char *)r->extra_env[i].key);
        free((char *)r->extra_env[i].value);
    }
    free(r->extra_env);
}

static void engine_maybe_free(sg_runner_t *r)
{
    if (!r->closing || r->nlive || r->ttl_open) return;
    if (r->close_cb) r->close_cb(r->close_ud);
    free_extra_env(r);
    free(r->log_dir);
    free(r->shell);
    free(r);
}

static void ttl_closed(sg_tlist_t *l)
{
    sg_runner_t *r = l->timer.data;
    r->ttl_open = 0;
    engine_maybe_free(r);
}

void sg_runner_close(sg_runner_t *r, void (*cb)(void *ud), void *ud)
{
    if (r->closing) return;
    r->closing = 1;
    r->close_cb = cb;
    r->close_ud = ud;
    while (r->sessions)
        sess_free(r, r->sessions, 0);
    /* Walk a snapshot: rec_release may free objects. Every object is pinned first. */
    for (cmd_t *c = r->cmds; c; c = c->next)
        c->hold++;
    cmd_t *c = r->cmds;
    while (c) {
        cmd_t *next = c->next;
        c->cbs_off = 1;
        while (c->waiters) {
            waiter_t *w = c->waiters;
            c->waiters = w->next;
            free(w);
        }
        /* Running groups, and finished ones whose grandchildren still hold the pipes. */
        if (c->spawned && (!c->done || c->pipe_open[0] || c->pipe_open[1])) kill_group(c, SIGKILL);
        close_timer(c);
        if (c->exited || !c->spawned) c->done = 1;
        rec_release(c);
        c->released = 1;
        c = next;
    }
    c = r->cmds;
    while (c) {
        cmd_t *next = c->next;
        c->hold--;
        /* Objects not in the table (session runs) are released by being done. */
        cmd_maybe_free(c);
        c = next;
    }
    /* The last of ttl_closed / cmd_free calls cb and frees r. */
    sg_tlist_close(&r->ttl, ttl_closed);
}
