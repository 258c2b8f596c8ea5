/* provider_local.c: the `local` provider (bubblewrap sandboxes on this host).
 *
 * Map (the design is in provider_local.h):
 *   validate_spec()      image, entrypoint, env, volumes, id -> 400 with a code before anything
 *   build_argv()         bwrap's arguments: namespaces, filesystem, env, the sh init (INIT)
 *   local_create()       prep_work (pool): dirs, cgroups + limits; then uv_spawn(bwrap) detached
 *                        and unref'd
 *   on_info_read()       bwrap's --info-fd JSON -> attach_work (pool): pid-1 into the cgroups,
 *                        state.json; then one byte on --block-fd lets the sandbox start; the
 *                        create callback fires (a failure is undone on the pool first)
 *   op_* / on_op_tick()  destroy, pause, resume, check: steps on the thread pool (load
 *                        state.json, act, check), one per timer tick, until the kernel did what
 *                        was asked (bounded)
 *   state_save/load      state.json (jansson), sg_local_list_on_disk
 *   local_close()        waits for operations in flight, closes the process handles (kills
 *                        nothing), frees. */
#define _GNU_SOURCE /* nftw, pread */
#include "provider_local.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandgate/common.h"
#include "sandgate/log.h"

#define OP_TICK_MS 10
#define OP_MAX_TICKS                                                                               \
    1000 /* 10 s: a freeze, thaw or kill the kernel has not finished by then failed */

/* The sandbox's command, run by bwrap's pid 1 as `/bin/sh -c INIT sg-init TOKEN ARGV...`.
 * LIMITS is replaced by `ulimit` lines under the rlimit fallback. execd and the entrypoint
 * are siblings with the same env; the init lives as long as execd, so the sandbox stays up
 * (and reachable) after the entrypoint exits; bwrap's pid 1 reaps orphans. */
static const char INIT[] =
    "[ -e /.sandgate/run/go ] || exit 113\n"
    "%s"
    "t=$1; shift\n"
    "/.sandgate/execd --listen unix:/.sandgate/run/execd.sock --access-token \"$t\" &\n"
    "e=$!\n"
    "\"$@\" &\n"
    "wait $e\n";

typedef struct local_prov local_prov_t;

/* One spawned outer bwrap process: kept only so libuv reaps it when it exits. */
typedef struct local_child {
    uv_process_t proc;
    local_prov_t *p;
    struct local_child *next, **pprev;
    int closing;
} local_child_t;

struct local_prov {
    sg_provider_t base;
    char *data_dir, *sb_dir, *bwrap, *execd, *cg_name;
    const sg_image_registry_t *images;
    char **prefixes;
    size_t n_prefixes;
    sg_local_cgroups_t cgmode;
    sg__cg_host_t cg;
    int root;
    local_child_t *children;
    size_t n_ops;     /* operations in flight (close waits for them) */
    size_t n_closing; /* child handles being closed */
    int closing;
    void (*close_cb)(void *);
    void *close_ud;
};

static void prov_maybe_free(local_prov_t *p);
static void local_defer_create_err(local_prov_t *p, sg_prov_create_cb cb, void *ud, int err,
                                   const sg_prov_err_t *e);

/* ---------------------------------------------------------------- errors, small utilities */

static void set_err(sg_prov_err_t *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(sg_prov_err_t *e, int status, const char *code, const char *fmt, ...)
{
    e->status = status;
    snprintf(e->code, sizeof(e->code), "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

static int id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 63) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return id[0] != '-';
}

/* An absolute, normalized path inside the sandbox where a volume may go. */
static int mount_path_ok(const char *m)
{
    if (!m || m[0] != '/' || strlen(m) > 1024 || strcmp(m, "/") == 0) return 0;
    for (const char *s = m; *s;) {
        while (*s == '/')
            s++;
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if ((n == 0 && e) || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return 0;
        s += n;
    }
    if (strstr(m, "//") || m[strlen(m) - 1] == '/') return 0;
    static const char *const reserved[] = {"/proc", "/dev", "/.sandgate", "/sys", "/workspace"};
    for (size_t i = 0; i < SG_ARRAY_SIZE(reserved); i++) {
        size_t n = strlen(reserved[i]);
        /* /workspace itself is the sandbox's own; below it is fine. */
        if (strcmp(m, reserved[i]) == 0) return 0;
        if (i < 4 && strncmp(m, reserved[i], n) == 0 && m[n] == '/') return 0;
    }
    return 1;
}

int sg_local_volume_allowed(const char *const *prefixes, size_t n, const char *host_path, char *why,
                            size_t whylen)
{
    char real[PATH_MAX];
    if (!host_path || host_path[0] != '/') {
        snprintf(why, whylen, "host path must be absolute");
        return 0;
    }
    if (!realpath(host_path, real)) {
        snprintf(why, whylen, "host path %s: %s", host_path, strerror(errno));
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char pre[PATH_MAX];
        if (!prefixes[i] || !realpath(prefixes[i], pre)) continue;
        size_t pl = strlen(pre);
        if (strcmp(pre, "/") == 0) return 1;
        if (strncmp(real, pre, pl) == 0 && (real[pl] == 0 || real[pl] == '/')) return 1;
    }
    snprintf(why, whylen, "host path %s is not under an allowed volume prefix%s", host_path,
             n ? "" : " (none are configured)");
    return 0;
}

static void fmt_bytes(char *out, size_t n, uint64_t b)
{
    if (b && b % (1024 * 1024) == 0)
        snprintf(out, n, "%lluMi", (unsigned long long)(b >> 20));
    else
        snprintf(out, n, "%llu", (unsigned long long)b);
}

static void appendf(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t n, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 1 >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, n - len, fmt, ap);
    va_end(ap);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static int count_uid_procs(uid_t uid)
{
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char path[300];
        struct stat st;
        if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
        snprintf(path, sizeof(path), "/proc/%s", de->d_name);
        if (stat(path, &st) == 0 && st.st_uid == uid) n++;
    }
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------- state file */

static void sb_dir(const local_prov_t *p, const char *id, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", p->sb_dir, id);
}

static int state_save(const char *dir, const sg_local_state_t *st)
{
    json_t *cg1 = json_object();
    for (int c = 0; c < SG__CG_N; c++)
        if (st->cg_v1[c][0]) json_object_set_new(cg1, sg__cg_names[c], json_string(st->cg_v1[c]));
    json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:o, s:s, s:s, s:s, s:s}", "id", st->id,
                          "init_pid", (json_int_t)st->init_pid, "init_start",
                          (json_int_t)st->init_start, "bwrap_pid", (json_int_t)st->bwrap_pid,
                          "bwrap_start", (json_int_t)st->bwrap_start, "cgroup_v2", st->cg_v2,
                          "cgroup_v1", cg1, "freeze", st->freeze, "execd", st->execd,
                          "access_token", st->access_token, "enforced", st->enforced);
    if (!o) return SG_ENOMEM;
    char tmp[PATH_MAX], fin[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s/state.json.tmp", dir) >= (int)sizeof(tmp) ||
        snprintf(fin, sizeof(fin), "%s/state.json", dir) >= (int)sizeof(fin)) {
        json_decref(o);
        return -ENAMETOOLONG;
    }
    int r = json_dump_file(o, tmp, JSON_INDENT(1)) == 0 && rename(tmp, fin) == 0 ? 0 : -errno;
    json_decref(o);
    return r ? r : 0;
}

static void jcopy(json_t *o, const char *k, char *out, size_t n)
{
    const char *s = json_string_value(json_object_get(o, k));
    snprintf(out, n, "%s", s ? s : "");
}

static int state_load_path(const char *path, sg_local_state_t *st)
{
    memset(st, 0, sizeof(*st));
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) return access(path, F_OK) == 0 ? SG_EPROTO : SG_ENOTFOUND;
    jcopy(o, "id", st->id, sizeof(st->id));
    st->init_pid = json_integer_value(json_object_get(o, "init_pid"));
    st->init_start = (uint64_t)json_integer_value(json_object_get(o, "init_start"));
    st->bwrap_pid = json_integer_value(json_object_get(o, "bwrap_pid"));
    st->bwrap_start = (uint64_t)json_integer_value(json_object_get(o, "bwrap_start"));
    jcopy(o, "cgroup_v2", st->cg_v2, sizeof(st->cg_v2));
    json_t *cg1 = json_object_get(o, "cgroup_v1");
    for (int c = 0; c < SG__CG_N; c++)
        jcopy(cg1, sg__cg_names[c], st->cg_v1[c], sizeof(st->cg_v1[c]));
    jcopy(o, "freeze", st->freeze, sizeof(st->freeze));
    jcopy(o, "execd", st->execd, sizeof(st->execd));
    jcopy(o, "access_token", st->access_token, sizeof(st->access_token));
    jcopy(o, "enforced", st->enforced, sizeof(st->enforced));
    json_decref(o);
    return 0;
}

int sg_local_state_load(const char *data_dir, const char *id, sg_local_state_t *st)
{
    if (!id_ok(id)) return SG_EINVAL;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/sandboxes/%s/state.json", data_dir, id);
    return state_load_path(path, st);
}

void sg_local_state_to_handle(const sg_local_state_t *st, sg_sandbox_handle_t *h)
{
    memset(h, 0, sizeof(*h));
    snprintf(h->provider_id, sizeof(h->provider_id), "%s", st->id);
    snprintf(h->execd, sizeof(h->execd), "%s", st->execd);
    snprintf(h->access_token, sizeof(h->access_token), "%s", st->access_token);
    snprintf(h->enforced, sizeof(h->enforced), "%s", st->enforced);
    h->pid = st->init_pid;
}

int sg_local_state_alive(const sg_local_state_t *st)
{
    return st->init_pid > 0 && st->init_start != 0 &&
           sg__proc_start(st->init_pid) == st->init_start;
}

int sg_local_list_on_disk(const char *data_dir, sg_local_state_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/sandboxes", data_dir);
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    size_t cap = 0;
    while ((de = readdir(d))) {
        if (!id_ok(de->d_name)) continue;
        sg_local_state_t st;
        if (sg_local_state_load(data_dir, de->d_name, &st) != 0) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = sg_xrealloc(*out, cap * sizeof(**out));
        }
        (*out)[(*n)++] = st;
    }
    closedir(d);
    return 0;
}

/* ---------------------------------------------------------------- argv */

typedef struct argv_b {
    char **v;
    size_t n, cap;
    size_t script_ix; /* the init script's entry (build_argv) */
} argv_b;

static void av_add(argv_b *a, const char *s)
{
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = sg_xrealloc(a->v, a->cap * sizeof(char *));
    }
    a->v[a->n++] = sg_xstrdup(s);
    a->v[a->n] = NULL;
}

static void av_add3(argv_b *a, const char *x, const char *y, const char *z)
{
    av_add(a, x);
    av_add(a, y);
    if (z) av_add(a, z);
}

static void av_free(argv_b *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

/* The image's entries, each bound read-only into bwrap's fresh (tmpfs) root. */
static void add_image(argv_b *a, const sg_image_t *img)
{
    char path[PATH_MAX], target[PATH_MAX];
    if (img->host) {
        for (size_t i = 0; sg_image_host_top[i]; i++) {
            const char *t = sg_image_host_top[i];
            struct stat st;
            if (lstat(t, &st) != 0) continue;
            if (S_ISLNK(st.st_mode)) {
                ssize_t n = readlink(t, target, sizeof(target) - 1);
                if (n <= 0) continue;
                target[n] = 0;
                av_add3(a, "--symlink", target, t);
            } else if (S_ISDIR(st.st_mode)) {
                av_add3(a, "--ro-bind", t, t);
            }
        }
        av_add3(a, "--dir", "/etc", NULL);
        for (size_t i = 0; sg_image_host_etc[i]; i++) {
            snprintf(path, sizeof(path), "/etc/%s", sg_image_host_etc[i]);
            av_add3(a, "--ro-bind-try", path, path);
        }
        return;
    }
    DIR *d = opendir(img->root);
    if (!d) return; /* bwrap then fails to find /bin/sh: reported as a create error */
    struct dirent *de;
    static const char *const skip[] = {".",   "..",  "proc",      "dev",
                                       "sys", "tmp", "workspace", ".sandgate"};
    while ((de = readdir(d))) {
        int skipped = 0;
        for (size_t i = 0; i < SG_ARRAY_SIZE(skip); i++)
            skipped |= strcmp(de->d_name, skip[i]) == 0;
        if (skipped) continue;
        char src[PATH_MAX], dst[PATH_MAX];
        snprintf(src, sizeof(src), "%s/%s", img->root, de->d_name);
        snprintf(dst, sizeof(dst), "/%s", de->d_name);
        struct stat st;
        if (lstat(src, &st) != 0) continue;
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(src, target, sizeof(target) - 1);
            if (n <= 0) continue;
            target[n] = 0;
            av_add3(a, "--symlink", target, dst);
        } else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
            av_add3(a, "--ro-bind", src, dst);
        }
    }
    closedir(d);
}

/* ---------------------------------------------------------------- create */

/* A create runs in three steps, the disk and cgroupfs work of each on the thread pool (the
 * cgroup.procs write alone can take over 10 ms):
 *   prep (pool)    the sandbox's directories, its log file, cgroups and limits
 *   spawn (loop)   uv_spawn(bwrap); bwrap reports the sandbox's pid-1 on --info-fd
 *   attach (pool)  pid-1 into the cgroups, state.json, the `go` file; then (loop) one byte on
 *                  --block-fd lets the sandbox start
 * A failure after prep is undone on the pool too (kill, wait for the cgroups to empty, remove
 * them and the directory) before the callback. */
typedef struct create_op {
    local_prov_t *p;
    sg_prov_create_cb cb;
    void *ud;
    local_child_t *child;
    uv_pipe_t info;  /* bwrap --info-fd (we read) */
    uv_pipe_t block; /* bwrap --block-fd (we write one byte to release it) */
    int n_open;      /* pipes not yet closed + pool requests in flight */
    uv_work_t work;
    argv_b argv;
    sg_sandbox_spec_t lim; /* the spec's id and limits (setup_limits, on the pool) */
    char ulimits[256];
    int logfd;
    int made_dir; /* prep created op->dir: undo removes it */
    int want_tail; /* the error message wants sandbox.log's tail (read by undo) */
    char buf[4096];
    size_t len;
    int done;
    sg_local_state_t st;
    char dir[PATH_MAX];
    int err;
    sg_prov_err_t e;
} create_op_t;

static void child_on_close(uv_handle_t *h)
{
    local_child_t *c = h->data;
    local_prov_t *p = c->p;
    if (c->pprev) {
        *c->pprev = c->next;
        if (c->next) c->next->pprev = c->pprev;
    }
    free(c);
    if (p->n_closing) p->n_closing--;
    prov_maybe_free(p);
}

static void child_on_exit(uv_process_t *proc, int64_t status, int sig)
{
    local_child_t *c = proc->data;
    if (c->closing) return;
    c->closing = 1;
    c->p->n_closing++;
    uv_close((uv_handle_t *)proc, child_on_close);
}

static void create_finish_free(create_op_t *op)
{
    local_prov_t *p = op->p;
    free(op);
    p->n_ops--;
    prov_maybe_free(p);
}

static void create_release(create_op_t *op)
{
    if (--op->n_open == 0) create_finish_free(op);
}

static void create_pipe_closed(uv_handle_t *h)
{
    create_release(h->data);
}

static void read_log_tail(const char *dir, char *out, size_t n);

/* Pool: undo a half-made sandbox. It still waits on --block-fd, so nothing of the user's ran
 * yet; the kill is asynchronous, and rmdir of a cgroup with dying tasks fails, so wait for the
 * cgroups to empty (bounded: an empty directory left behind is removed by the next probe or
 * an operator). The directories are small: nothing ran in them. */
static void undo_work(uv_work_t *w)
{
    create_op_t *op = w->data;
    if (op->want_tail) {
        char tail[400];
        read_log_tail(op->dir, tail, sizeof(tail));
        set_err(&op->e, 500, "SANDBOX::START_FAILED", "bubblewrap did not start the sandbox: %s",
                tail[0] ? tail : "no output");
    }
    if (op->st.init_pid > 0 && sg__proc_start(op->st.init_pid) == op->st.init_start)
        kill((pid_t)op->st.init_pid, SIGKILL);
    sg__cg_kill(&op->st);
    for (int i = 0; i < 100 && !sg__cg_empty(&op->st); i++)
        usleep(1000);
    sg__cg_remove(&op->st);
    if (op->made_dir) rm_rf(op->dir);
}

static void undo_after(uv_work_t *w, int status)
{
    create_op_t *op = w->data;
    (void)status;
    op->cb(op->ud, op->err, &op->e, NULL);
    create_release(op);
}

/* Reports once; a failure is undone (undo_work) before the callback. */
static void create_report(create_op_t *op, int err)
{
    if (op->done) return;
    op->done = 1;
    uv_read_stop((uv_stream_t *)&op->info);
    if (!uv_is_closing((uv_handle_t *)&op->info))
        uv_close((uv_handle_t *)&op->info, create_pipe_closed);
    if (!uv_is_closing((uv_handle_t *)&op->block))
        uv_close((uv_handle_t *)&op->block, create_pipe_closed);
    if (err < 0) {
        if (op->child && !op->child->closing) uv_process_kill(&op->child->proc, SIGKILL);
        op->err = err;
        op->n_open++;
        op->work.data = op;
        if (uv_queue_work(op->p->base.loop, &op->work, undo_work, undo_after) < 0) {
            undo_work(&op->work); /* cannot happen (the loop is alive); stay correct */
            undo_after(&op->work, 0);
        }
        return;
    }
    sg_sandbox_handle_t h;
    sg_local_state_to_handle(&op->st, &h);
    op->cb(op->ud, 0, NULL, &h);
}

static void on_info_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    create_op_t *op = h->data;
    b->base = op->buf + op->len;
    b->len = sizeof(op->buf) - 1 - op->len;
}

static void read_log_tail(const char *dir, char *out, size_t n)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/sandbox.log", dir) >= (int)sizeof(path)) return;
    out[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > (off_t)(n - 1) ? end - (off_t)(n - 1) : 0;
    ssize_t r = pread(fd, out, n - 1, from);
    close(fd);
    out[r > 0 ? r : 0] = 0;
    for (char *s = out; *s; s++)
        if (*s == '\n') *s = ' ';
}

/* Pool: pid-1 into the cgroups, the state file, the `go` file. */
static void attach_work(uv_work_t *w)
{
    create_op_t *op = w->data;
    int r = 0;
    op->err = 0;
    op->st.init_start = sg__proc_start(op->st.init_pid);
    if (op->st.bwrap_pid > 0) sg__cg_attach(&op->st, op->st.bwrap_pid); /* may have exited */
    if ((r = sg__cg_attach(&op->st, op->st.init_pid)) < 0) {
        set_err(&op->e, 500, "SANDBOX::START_FAILED", "cannot put the sandbox into its cgroup: %s",
                strerror(-r));
        op->err = r;
        return;
    }
    if (op->st.init_start == 0 || (r = state_save(op->dir, &op->st)) < 0) {
        set_err(&op->e, 500, "SANDBOX::START_FAILED", "%s",
                op->st.init_start == 0 ? "the sandbox exited while starting"
                                       : "cannot write the sandbox's state file");
        op->err = r < 0 ? r : SG_EPROTO;
        return;
    }
    /* bwrap also proceeds when --block-fd reads EOF, i.e. when the gateway dies right here:
     * INIT then finds no `go` file and exits, so no sandbox ever runs outside its cgroups or
     * without a state file. */
    char gopath[PATH_MAX];
    int gofd = -1;
    if (snprintf(gopath, sizeof(gopath), "%s/run/go", op->dir) < (int)sizeof(gopath))
        gofd = open(gopath, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (gofd < 0) {
        set_err(&op->e, 500, "SANDBOX::START_FAILED", "cannot write %s", gopath);
        op->err = SG_EPROTO;
        return;
    }
    close(gofd);
}

static void attach_after(uv_work_t *w, int status)
{
    create_op_t *op = w->data;
    (void)status;
    int r = op->err;
    if (r == 0 && !op->done) {
        uv_buf_t go = uv_buf_init("g", 1);
        if ((r = uv_try_write((uv_stream_t *)&op->block, &go, 1)) != 1) {
            set_err(&op->e, 500, "SANDBOX::START_FAILED", "cannot release the sandbox: %s",
                    uv_strerror(r));
            r = r < 0 ? r : SG_EPROTO;
        } else {
            r = 0;
        }
    }
    create_report(op, r);
    create_release(op);
}

static void on_info_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    create_op_t *op = s->data;
    (void)b;
    if (op->done) return;
    if (nread > 0) op->len += (size_t)nread;
    op->buf[op->len] = 0;
    json_t *o = op->len ? json_loadb(op->buf, op->len, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    json_int_t pid = o ? json_integer_value(json_object_get(o, "child-pid")) : 0;
    json_decref(o);
    if (pid <= 0) {
        if (nread >= 0 && op->len < sizeof(op->buf) - 1) return; /* more to come */
        op->want_tail = 1;
        create_report(op, SG_EPROTO);
        return;
    }
    uv_read_stop(s);
    op->st.init_pid = pid;
    op->n_open++;
    op->work.data = op;
    if (uv_queue_work(op->p->base.loop, &op->work, attach_work, attach_after) < 0) {
        attach_work(&op->work);
        attach_after(&op->work, 0);
    }
}

static int validate_spec(local_prov_t *p, const sg_sandbox_spec_t *spec, const sg_image_t **img,
                         sg_prov_err_t *e)
{
    if (!id_ok(spec->id)) {
        set_err(e, 400, "SANDBOX::INVALID_PARAMETER", "sandbox id must be 1-63 of [A-Za-z0-9_-]");
        return SG_EINVAL;
    }
    *img = sg_image_lookup(p->images, spec->image);
    if (!*img) {
        set_err(e, 400, "SANDBOX::IMAGE_NOT_FOUND",
                "image '%s' is not registered on this gateway (register it with --image NAME=DIR "
                "or NAME=host)",
                spec->image ? spec->image : "");
        return SG_ENOTFOUND;
    }
    if (spec->n_entrypoint < 1 || !spec->entrypoint || !spec->entrypoint[0] ||
        !spec->entrypoint[0][0]) {
        set_err(e, 400, "SANDBOX::INVALID_PARAMETER", "entrypoint must have at least one element");
        return SG_EINVAL;
    }
    for (size_t i = 0; i < spec->n_env; i++) {
        const char *k = spec->env[i].key;
        if (!k || !*k || strchr(k, '=') || !spec->env[i].value) {
            set_err(e, 400, "SANDBOX::INVALID_PARAMETER", "env key '%s' is not valid", k ? k : "");
            return SG_EINVAL;
        }
    }
    for (size_t i = 0; i < spec->n_volumes; i++) {
        const sg_volume_t *v = &spec->volumes[i];
        char why[PATH_MAX + 128], hp[PATH_MAX];
        if (!mount_path_ok(v->mount_path)) {
            set_err(e, 400, "VOLUME::INVALID_MOUNT_PATH",
                    "volume '%s': mountPath '%s' must be an absolute normalized path outside "
                    "/, /proc, /dev, /sys, /.sandgate",
                    v->name ? v->name : "", v->mount_path ? v->mount_path : "");
            return SG_EINVAL;
        }
        if (v->sub_path && (strstr(v->sub_path, "..") || v->sub_path[0] == '/')) {
            set_err(e, 400, "VOLUME::INVALID_SUB_PATH",
                    "volume '%s': subPath must be relative "
                    "without '..'",
                    v->name ? v->name : "");
            return SG_EINVAL;
        }
        snprintf(hp, sizeof(hp), "%s%s%s", v->host_path ? v->host_path : "", v->sub_path ? "/" : "",
                 v->sub_path ? v->sub_path : "");
        if (!v->host_path || !sg_local_volume_allowed((const char *const *)p->prefixes,
                                                      p->n_prefixes, hp, why, sizeof(why))) {
            set_err(e, 400, "VOLUME::HOST_PATH_NOT_ALLOWED", "volume '%s': %s",
                    v->name ? v->name : "", v->host_path ? why : "host path missing");
            return SG_EINVAL;
        }
    }
    char sock[PATH_MAX];
    snprintf(sock, sizeof(sock), "%s/%s/run/execd.sock", p->sb_dir, spec->id);
    if (strlen(sock) >= 108) {
        set_err(e, 500, "SANDBOX::START_FAILED",
                "execd socket path %s is longer than a unix "
                "socket allows; use a shorter data dir",
                sock);
        return SG_EINVAL;
    }
    return 0;
}

/* Makes the cgroups and applies the limits; fills st (cgroup dirs, freeze kind) and returns
 * the shell lines for whatever falls back to rlimits. */
static int setup_limits(local_prov_t *p, const sg_sandbox_spec_t *spec, sg_local_state_t *st,
                        char *ulimits, size_t ulen, sg_prov_err_t *e)
{
    const sg__cg_host_t *h = &p->cg;
    int use = p->cgmode != SG_LOCAL_CG_OFF;
    char *enf = st->enforced;
    size_t en = sizeof(st->enforced);
    enf[0] = 0;
    ulimits[0] = 0;
    if (use && h->v2_base[0]) {
        int n = snprintf(st->cg_v2, sizeof(st->cg_v2), "%s/%s", h->v2_base, spec->id);
        if (n < 0 || (size_t)n >= sizeof(st->cg_v2) ||
            (mkdir(st->cg_v2, 0755) != 0 && errno != EEXIST))
            st->cg_v2[0] = 0; /* a truncated path would name another cgroup: go without */
    }
    int where[SG__CG_N]; /* 2, 1 or 0 (none) */
    for (int c = 0; c < SG__CG_N; c++) {
        where[c] = 0;
        if (!use) continue;
        if (st->cg_v2[0] && h->v2_has[c]) {
            where[c] = 2;
        } else if (h->v1_base[c][0]) {
            /* Only the controllers we need (limits requested, and the freezer). */
            uint64_t want = c == SG__CG_CPU      ? spec->cpu_millis
                            : c == SG__CG_MEMORY ? spec->memory_bytes
                            : c == SG__CG_PIDS   ? spec->pids
                                                 : 1;
            if (!want) continue;
            int n = snprintf(st->cg_v1[c], sizeof(st->cg_v1[c]), "%s/%s", h->v1_base[c], spec->id);
            if (n < 0 || (size_t)n >= sizeof(st->cg_v1[c]) ||
                (mkdir(st->cg_v1[c], 0755) != 0 && errno != EEXIST))
                st->cg_v1[c][0] = 0;
            else
                where[c] = 1;
        }
    }
    char v[64], hb[32];
    int r = 0;
    if (spec->cpu_millis) {
        if (where[SG__CG_CPU] == 2) {
            snprintf(v, sizeof(v), "%llu 100000", (unsigned long long)spec->cpu_millis * 100);
            r = sg__cg_write(st->cg_v2, "cpu.max", v);
        } else if (where[SG__CG_CPU] == 1) {
            snprintf(v, sizeof(v), "%llu", (unsigned long long)spec->cpu_millis * 100);
            r = sg__cg_write(st->cg_v1[SG__CG_CPU], "cpu.cfs_period_us", "100000");
            if (r == 0) r = sg__cg_write(st->cg_v1[SG__CG_CPU], "cpu.cfs_quota_us", v);
        }
        if (r < 0) goto fail_write;
        appendf(enf, en, "cpu=%s(%llum) ",
                where[SG__CG_CPU] == 2   ? "cgroup-v2"
                : where[SG__CG_CPU] == 1 ? "cgroup-v1"
                                         : "unenforced",
                (unsigned long long)spec->cpu_millis);
    }
    if (spec->memory_bytes) {
        fmt_bytes(hb, sizeof(hb), spec->memory_bytes);
        snprintf(v, sizeof(v), "%llu", (unsigned long long)spec->memory_bytes);
        if (where[SG__CG_MEMORY] == 2) {
            r = sg__cg_write(st->cg_v2, "memory.max", v);
            if (r == 0) sg__cg_write(st->cg_v2, "memory.swap.max", "0");
        } else if (where[SG__CG_MEMORY] == 1) {
            r = sg__cg_write(st->cg_v1[SG__CG_MEMORY], "memory.limit_in_bytes", v);
            if (r == 0) sg__cg_write(st->cg_v1[SG__CG_MEMORY], "memory.memsw.limit_in_bytes", v);
        } else {
            appendf(ulimits, ulen, "ulimit -v %llu || exit 111\n",
                    (unsigned long long)(spec->memory_bytes / 1024));
        }
        if (r < 0) goto fail_write;
        appendf(enf, en, "memory=%s(%s) ",
                where[SG__CG_MEMORY] == 2   ? "cgroup-v2"
                : where[SG__CG_MEMORY] == 1 ? "cgroup-v1"
                                            : "rlimit-as",
                hb);
    }
    if (spec->pids) {
        snprintf(v, sizeof(v), "%llu", (unsigned long long)spec->pids);
        if (where[SG__CG_PIDS] == 2)
            r = sg__cg_write(st->cg_v2, "pids.max", v);
        else if (where[SG__CG_PIDS] == 1)
            r = sg__cg_write(st->cg_v1[SG__CG_PIDS], "pids.max", v);
        else if (p->root) {
            /* The kernel never applies RLIMIT_NPROC to uid 0 of the initial user namespace,
             * and sandboxes of a root gateway run as that uid: say so instead of pretending. */
            where[SG__CG_PIDS] = -1;
        } else {
            /* RLIMIT_NPROC counts every process of the uid on the host, so the sandbox gets
             * its own count on top of what the uid already runs. */
            unsigned long long n = spec->pids + (unsigned long long)count_uid_procs(geteuid());
            appendf(ulimits, ulen,
                    "{ ulimit -p %llu || ulimit -u %llu; } 2>/dev/null || exit 112\n", n, n);
        }
        if (r < 0) goto fail_write;
        appendf(enf, en, "pids=%s(%llu) ",
                where[SG__CG_PIDS] == 2    ? "cgroup-v2"
                : where[SG__CG_PIDS] == 1  ? "cgroup-v1"
                : where[SG__CG_PIDS] == -1 ? "unenforced-root-exempt-from-rlimit-nproc"
                                           : "rlimit-nproc-per-uid",
                (unsigned long long)spec->pids);
    }
    if (where[SG__CG_FREEZER] == 2)
        snprintf(st->freeze, sizeof(st->freeze), "cgroup-v2");
    else if (where[SG__CG_FREEZER] == 1)
        snprintf(st->freeze, sizeof(st->freeze), "cgroup-v1");
    else
        snprintf(st->freeze, sizeof(st->freeze), "signals");
    appendf(enf, en, "freeze=%s", st->freeze);
    if (st->cg_v2[0] && h->v2_kill) appendf(enf, en, " kill=cgroup-v2");
    return 0;
fail_write:
    set_err(e, 500, "SANDBOX::START_FAILED", "cannot apply a resource limit: %s", strerror(-r));
    return r;
}

/* The init script with the rlimit lines setup_limits chose (known only after it ran). */
static void set_script(argv_b *a, const char *ulimits)
{
    size_t n = sizeof(INIT) + strlen(ulimits);
    free(a->v[a->script_ix]);
    a->v[a->script_ix] = sg_xmalloc(n);
    snprintf(a->v[a->script_ix], n, INIT, ulimits);
}

static void build_argv(local_prov_t *p, const sg_sandbox_spec_t *spec, const sg_image_t *img,
                       const char *dir, const char *token, argv_b *a)
{
    char buf[PATH_MAX + 64];
    av_add(a, p->bwrap);
    if (!p->root) av_add(a, "--unshare-user");
    av_add(a, "--unshare-pid");
    av_add(a, "--unshare-ipc");
    av_add(a, "--unshare-uts");
    av_add(a, "--unshare-cgroup-try");
    if (!spec->network_allow) av_add(a, "--unshare-net");
    if (p->root) av_add3(a, "--cap-drop", "ALL", NULL);
    av_add(a, "--new-session");
    av_add3(a, "--hostname", "sandbox", NULL);
    add_image(a, img);
    av_add3(a, "--proc", "/proc", NULL);
    av_add3(a, "--dev", "/dev", NULL);
    av_add3(a, "--tmpfs", "/tmp", NULL);
    snprintf(buf, sizeof(buf), "%s/workspace", dir);
    av_add3(a, "--bind", buf, "/workspace");
    av_add3(a, "--dir", "/.sandgate", NULL);
    av_add3(a, "--ro-bind", p->execd, "/.sandgate/execd");
    snprintf(buf, sizeof(buf), "%s/run", dir);
    av_add3(a, "--bind", buf, "/.sandgate/run");
    for (size_t i = 0; i < spec->n_volumes; i++) {
        const sg_volume_t *v = &spec->volumes[i];
        snprintf(buf, sizeof(buf), "%s%s%s", v->host_path, v->sub_path ? "/" : "",
                 v->sub_path ? v->sub_path : "");
        av_add3(a, v->read_only ? "--ro-bind" : "--bind", buf, v->mount_path);
    }
    av_add3(a, "--remount-ro", "/", NULL);
    av_add3(a, "--chdir", "/workspace", NULL);
    av_add(a, "--clearenv");
    av_add3(a, "--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    av_add3(a, "--setenv", "HOME", "/workspace");
    av_add3(a, "--setenv", "TMPDIR", "/tmp");
    for (size_t i = 0; i < spec->n_env; i++)
        av_add3(a, "--setenv", spec->env[i].key, spec->env[i].value);
    av_add3(a, "--info-fd", "3", NULL);
    av_add3(a, "--block-fd", "4", NULL);
    av_add3(a, "/bin/sh", "-c", NULL);
    a->script_ix = a->n;
    av_add(a, ""); /* the init script: set_script() */
    av_add(a, "sg-init");
    av_add(a, token);
    for (size_t i = 0; i < spec->n_entrypoint; i++)
        av_add(a, spec->entrypoint[i]);
}

static void random_hex(char *out, size_t nbytes)
{
    unsigned char b[64];
    if (nbytes > sizeof(b)) nbytes = sizeof(b);
    if (uv_random(NULL, NULL, b, nbytes, 0, NULL) != 0)
        for (size_t i = 0; i < nbytes; i++)
            b[i] = (unsigned char)(rand() & 0xff);
    for (size_t i = 0; i < nbytes; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* Pool: the sandbox's directories, log file, cgroups and limits; undone here on failure. */
static void prep_work(uv_work_t *w)
{
    create_op_t *op = w->data;
    op->err = 0;
    op->logfd = -1;
    if (mkdir(op->dir, 0700) != 0) {
        op->err = -errno;
        if (errno == EEXIST)
            set_err(&op->e, 409, "SANDBOX::ALREADY_EXISTS",
                    "sandbox %s already exists on this host", op->st.id);
        else
            set_err(&op->e, 500, "SANDBOX::START_FAILED", "mkdir %s: %s", op->dir, strerror(errno));
        return; /* not ours to remove */
    }
    op->made_dir = 1;
    char sub[PATH_MAX + 32];
    snprintf(sub, sizeof(sub), "%s/workspace", op->dir);
    int ok = mkdir(sub, 0755) == 0;
    snprintf(sub, sizeof(sub), "%s/run", op->dir);
    ok = ok && mkdir(sub, 0700) == 0;
    snprintf(sub, sizeof(sub), "%s/sandbox.log", op->dir);
    op->logfd = ok ? open(sub, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    if (op->logfd < 0) {
        op->err = -errno;
        set_err(&op->e, 500, "SANDBOX::START_FAILED", "cannot prepare %s: %s", op->dir,
                strerror(errno));
    } else {
        op->err = setup_limits(op->p, &op->lim, &op->st, op->ulimits, sizeof(op->ulimits), &op->e);
    }
    if (op->err < 0) {
        if (op->logfd >= 0) close(op->logfd);
        op->logfd = -1;
        sg__cg_remove(&op->st);
        rm_rf(op->dir);
    }
}

static void prep_after(uv_work_t *w, int status)
{
    create_op_t *op = w->data;
    local_prov_t *p = op->p;
    (void)status;
    int r = op->err;
    if (r < 0) {
        av_free(&op->argv);
        op->cb(op->ud, r, &op->e, NULL);
        create_finish_free(op);
        return;
    }
    set_script(&op->argv, op->ulimits);
    uv_pipe_init(p->base.loop, &op->info, 0);
    uv_pipe_init(p->base.loop, &op->block, 0);
    op->info.data = op->block.data = op;
    op->n_open = 2;
    local_child_t *c = sg_xcalloc(1, sizeof(*c));
    c->p = p;
    c->proc.data = c;
    uv_stdio_container_t io[5];
    io[0].flags = UV_IGNORE;
    io[1].flags = io[2].flags = UV_INHERIT_FD;
    io[1].data.fd = io[2].data.fd = op->logfd;
    io[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[3].data.stream = (uv_stream_t *)&op->info;
    io[4].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    io[4].data.stream = (uv_stream_t *)&op->block;
    uv_process_options_t po;
    memset(&po, 0, sizeof(po));
    po.file = op->argv.v[0];
    po.args = op->argv.v;
    po.exit_cb = child_on_exit;
    po.flags = UV_PROCESS_DETACHED; /* own session: a signal to the gateway's group misses it */
    po.stdio = io;
    po.stdio_count = 5;
    r = p->closing ? SG_ECLOSED : uv_spawn(p->base.loop, &c->proc, &po);
    close(op->logfd);
    op->logfd = -1;
    av_free(&op->argv);
    if (r < 0) {
        set_err(&op->e, 503, "SANDBOX::START_FAILED", "cannot run %s: %s (see `sandgate doctor`)",
                p->bwrap, uv_strerror(r));
        free(c);
        create_report(op, r);
        return;
    }
    uv_unref((uv_handle_t *)&c->proc); /* sandboxes never keep the gateway's loop alive */
    c->next = p->children;
    if (c->next) c->next->pprev = &c->next;
    c->pprev = &p->children;
    p->children = c;
    op->child = c;
    op->st.bwrap_pid = c->proc.pid;
    op->st.bwrap_start = sg__proc_start(c->proc.pid);
    uv_read_start((uv_stream_t *)&op->info, on_info_alloc, on_info_read);
}

static int local_create(sg_provider_t *base, const sg_sandbox_spec_t *spec, sg_prov_create_cb cb,
                        void *ud)
{
    local_prov_t *p = (local_prov_t *)base;
    if (p->closing) return SG_ECLOSED;
    create_op_t *op = sg_xcalloc(1, sizeof(*op));
    op->p = p;
    op->cb = cb;
    op->ud = ud;
    op->logfd = -1;
    p->n_ops++;
    const sg_image_t *img = NULL;
    int r = validate_spec(p, spec, &img, &op->e);
    if (r < 0) {
        /* Reported through the callback like every other outcome, but never from inside
         * create(): the caller may not be ready for re-entry. */
        sg_prov_err_t e = op->e;
        free(op);
        p->n_ops--;
        local_defer_create_err(p, cb, ud, r, &e);
        return 0;
    }
    sb_dir(p, spec->id, op->dir, sizeof(op->dir));
    snprintf(op->st.id, sizeof(op->st.id), "%s", spec->id);
    if (snprintf(op->st.execd, sizeof(op->st.execd), "unix:%s/run/execd.sock", op->dir) >=
        (int)sizeof(op->st.execd))
        op->st.execd[0] = 0; /* cannot happen: validate_spec bounded the socket path */
    random_hex(op->st.access_token, 16);
    build_argv(p, spec, img, op->dir, op->st.access_token, &op->argv);
    /* What setup_limits reads on the pool: the id and the limits, nothing the caller owns. */
    memset(&op->lim, 0, sizeof(op->lim));
    op->lim.id = op->st.id;
    op->lim.cpu_millis = spec->cpu_millis;
    op->lim.memory_bytes = spec->memory_bytes;
    op->lim.pids = spec->pids;
    op->work.data = op;
    if ((r = uv_queue_work(p->base.loop, &op->work, prep_work, prep_after)) < 0) {
        av_free(&op->argv);
        free(op);
        p->n_ops--;
        return r;
    }
    return 0;
}

/* ---------------------------------------------------------------- destroy, pause, resume, check */

enum { OP_DESTROY, OP_PAUSE, OP_RESUME, OP_CHECK, OP_CREATE_ERR };

typedef struct local_op {
    local_prov_t *p;
    int kind;
    uv_timer_t timer;
    uv_work_t work;
    sg_local_state_t st;
    char dir[PATH_MAX];
    int have_state;
    int ticks;
    int err;
    sg_prov_err_t e;
    sg_prov_done_cb done;
    sg_prov_check_cb check;
    sg_prov_create_cb create;
    void *ud;
    int alive;
    int started; /* the first step ran (state loaded, the kind's first action taken) */
    int step;    /* what the last step said: STEP_AGAIN or STEP_DONE */
    char id[128];
} local_op_t;

static void op_on_close(uv_handle_t *h)
{
    local_op_t *op = h->data;
    local_prov_t *p = op->p;
    free(op);
    p->n_ops--;
    prov_maybe_free(p);
}

static void op_finish(local_op_t *op, int err)
{
    uv_timer_stop(&op->timer);
    const sg_prov_err_t *e = err < 0 ? &op->e : NULL;
    switch (op->kind) {
    case OP_CHECK: op->check(op->ud, op->alive, op->alive ? NULL : &op->e); break;
    case OP_CREATE_ERR: op->create(op->ud, op->err, &op->e, NULL); break;
    default: op->done(op->ud, err, e); break;
    }
    uv_close((uv_handle_t *)&op->timer, op_on_close);
}

/* Every step of an operation touches state.json and cgroupfs (a cgroup write or rmdir can take
 * milliseconds), so each runs on the thread pool: the timer fires, op_work does the step,
 * op_after finishes the operation or arms the timer for the next step. */
enum { STEP_AGAIN = 0, STEP_DONE };

static int op_start_step(local_op_t *op)
{
    if (op->id[0]) {
        if (id_ok(op->id)) sb_dir(op->p, op->id, op->dir, sizeof(op->dir));
        op->have_state = id_ok(op->id) && sg_local_state_load(op->p->data_dir, op->id, &op->st) == 0;
    }
    if (op->kind == OP_DESTROY) {
        if (op->have_state) {
            /* A frozen v1 cgroup holds SIGKILLed tasks until thawed. */
            if (strcmp(op->st.freeze, "signals") != 0)
                sg__cg_freeze(&op->st, 0);
            else
                sg__ns_signal(&op->st, SIGCONT);
            if (sg_local_state_alive(&op->st)) kill((pid_t)op->st.init_pid, SIGKILL);
            if (op->st.bwrap_pid > 0 && op->st.bwrap_start &&
                sg__proc_start(op->st.bwrap_pid) == op->st.bwrap_start)
                kill((pid_t)op->st.bwrap_pid, SIGKILL);
            sg__cg_kill(&op->st);
        }
    } else if (op->kind == OP_PAUSE || op->kind == OP_RESUME) {
        if (!op->have_state || !sg_local_state_alive(&op->st)) {
            set_err(&op->e, 404, "SANDBOX::NOT_FOUND", "%s",
                    op->have_state ? "the sandbox's processes are gone"
                                   : "no such sandbox on this host");
            op->err = SG_ENOTFOUND;
            return STEP_DONE;
        }
        if (strcmp(op->st.freeze, "signals") != 0) {
            int r = sg__cg_freeze(&op->st, op->kind == OP_PAUSE);
            if (r < 0) {
                set_err(&op->e, 500, "SANDBOX::PAUSE_FAILED", "cgroup freezer: %s", strerror(-r));
                op->err = r;
                return STEP_DONE;
            }
        }
    }
    return STEP_AGAIN;
}

/* Pool: one step; op->err is the outcome once it says STEP_DONE. */
static int op_step(local_op_t *op)
{
    if (!op->started) {
        op->started = 1;
        if (op_start_step(op) == STEP_DONE) return STEP_DONE;
    }
    if (op->kind == OP_CHECK) {
        op->alive = op->have_state && sg_local_state_alive(&op->st);
        if (!op->alive)
            set_err(&op->e, 404, "SANDBOX::NOT_FOUND", "%s",
                    op->have_state ? "the sandbox's processes are gone"
                                   : "no such sandbox on this host");
        return STEP_DONE;
    }
    if (op->kind == OP_PAUSE || op->kind == OP_RESUME) {
        int on = op->kind == OP_PAUSE;
        if (strcmp(op->st.freeze, "signals") == 0) {
            sg__ns_signal(&op->st, on ? SIGSTOP : SIGCONT);
            return STEP_DONE;
        }
        if (sg__cg_frozen(&op->st, on)) return STEP_DONE;
        if (++op->ticks > OP_MAX_TICKS) {
            set_err(&op->e, 500, "SANDBOX::PAUSE_FAILED", "the cgroup freezer did not reach %s",
                    on ? "frozen" : "thawed");
            op->err = SG_ETIMEDOUT;
            return STEP_DONE;
        }
        return STEP_AGAIN;
    }
    /* destroy: keep killing until the init is gone and the cgroups are empty, then remove. */
    int init_alive = sg_local_state_alive(&op->st);
    int empty = sg__cg_empty(&op->st);
    if (!init_alive && empty) {
        sg__cg_remove(&op->st);
        if (op->dir[0]) rm_rf(op->dir);
        return STEP_DONE;
    }
    if (init_alive) kill((pid_t)op->st.init_pid, SIGKILL);
    sg__cg_kill(&op->st);
    if (++op->ticks > OP_MAX_TICKS) {
        set_err(&op->e, 500, "SANDBOX::DESTROY_FAILED",
                "processes of the sandbox did not exit (init %s, cgroups %s)",
                init_alive ? "alive" : "gone", empty ? "empty" : "not empty");
        op->err = SG_ETIMEDOUT;
        return STEP_DONE;
    }
    return STEP_AGAIN;
}

static void op_work(uv_work_t *w)
{
    local_op_t *op = w->data;
    op->step = op_step(op);
}

static void on_op_tick(uv_timer_t *t);

static void op_after(uv_work_t *w, int status)
{
    local_op_t *op = w->data;
    (void)status;
    if (op->step == STEP_DONE)
        op_finish(op, op->err);
    else
        uv_timer_start(&op->timer, on_op_tick, OP_TICK_MS, 0);
}

static void on_op_tick(uv_timer_t *t)
{
    local_op_t *op = t->data;
    if (op->kind == OP_CREATE_ERR) {
        op_finish(op, op->err);
        return;
    }
    op->work.data = op;
    if (uv_queue_work(op->p->base.loop, &op->work, op_work, op_after) < 0) {
        op_work(&op->work); /* cannot happen (the loop is alive); stay correct */
        op_after(&op->work, 0);
    }
}

static local_op_t *op_new(local_prov_t *p, int kind, const char *id, void *ud)
{
    local_op_t *op = sg_xcalloc(1, sizeof(*op));
    op->p = p;
    op->kind = kind;
    op->ud = ud;
    uv_timer_init(p->base.loop, &op->timer);
    op->timer.data = op;
    p->n_ops++;
    if (id) snprintf(op->id, sizeof(op->id), "%s", id);
    uv_timer_start(&op->timer, on_op_tick, 0, 0);
    return op;
}

static void local_defer_create_err(local_prov_t *p, sg_prov_create_cb cb, void *ud, int err,
                                   const sg_prov_err_t *e)
{
    local_op_t *op = op_new(p, OP_CREATE_ERR, NULL, ud);
    op->create = cb;
    op->err = err < 0 ? err : SG_EINVAL;
    op->e = *e;
}

static int local_destroy(sg_provider_t *base, const sg_sandbox_handle_t *h, sg_prov_done_cb cb,
                         void *ud)
{
    local_prov_t *p = (local_prov_t *)base;
    if (p->closing) return SG_ECLOSED;
    local_op_t *op = op_new(p, OP_DESTROY, h->provider_id, ud);
    op->done = cb;
    return 0;
}

static int local_pause(sg_provider_t *b, const sg_sandbox_handle_t *h, sg_prov_done_cb cb, void *ud)
{
    local_prov_t *p = (local_prov_t *)b;
    if (p->closing) return SG_ECLOSED;
    op_new(p, OP_PAUSE, h->provider_id, ud)->done = cb;
    return 0;
}

static int local_resume(sg_provider_t *b, const sg_sandbox_handle_t *h, sg_prov_done_cb cb,
                        void *ud)
{
    local_prov_t *p = (local_prov_t *)b;
    if (p->closing) return SG_ECLOSED;
    op_new(p, OP_RESUME, h->provider_id, ud)->done = cb;
    return 0;
}

static int local_check(sg_provider_t *b, const sg_sandbox_handle_t *h, sg_prov_check_cb cb,
                       void *ud)
{
    local_prov_t *p = (local_prov_t *)b;
    if (p->closing) return SG_ECLOSED;
    op_new(p, OP_CHECK, h->provider_id, ud)->check = cb;
    return 0;
}

static void prov_maybe_free(local_prov_t *p)
{
    if (!p->closing || p->n_ops) return;
    /* Operations are done: close the process handles (the sandboxes keep running). */
    for (local_child_t *c = p->children; c; c = c->next) {
        if (c->closing) continue;
        c->closing = 1;
        p->n_closing++;
        uv_close((uv_handle_t *)&c->proc, child_on_close);
    }
    if (p->n_closing || p->children) return;
    void (*cb)(void *) = p->close_cb;
    void *ud = p->close_ud;
    for (size_t i = 0; i < p->n_prefixes; i++)
        free(p->prefixes[i]);
    free(p->prefixes);
    free(p->data_dir);
    free(p->sb_dir);
    free(p->bwrap);
    free(p->execd);
    free(p->cg_name);
    p->closing = 2; /* guards against re-entry from the last child_on_close */
    free(p);
    if (cb) cb(ud);
}

static void local_close(sg_provider_t *b, void (*cb)(void *ud), void *ud)
{
    local_prov_t *p = (local_prov_t *)b;
    p->closing = 1;
    p->close_cb = cb;
    p->close_ud = ud;
    prov_maybe_free(p);
}

static const sg_provider_ops_t local_ops = {
    .name = "local",
    .create = local_create,
    .destroy = local_destroy,
    .pause = local_pause,
    .resume = local_resume,
    .check = local_check,
    .close = local_close,
};

int sg_local_provider_new(uv_loop_t *loop, const sg_local_config_t *cfg, sg_provider_t **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->data_dir || !cfg->execd || !cfg->images) {
        snprintf(err, errlen,
                 "local provider: data dir, execd path and image registry are required");
        return SG_EINVAL;
    }
    char real[PATH_MAX], sbd[PATH_MAX + 16];
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "local provider: mkdir %s: %s", cfg->data_dir, strerror(errno));
        return -errno;
    }
    if (!realpath(cfg->data_dir, real)) {
        snprintf(err, errlen, "local provider: data dir %s: %s", cfg->data_dir, strerror(errno));
        return -errno;
    }
    snprintf(sbd, sizeof(sbd), "%s/sandboxes", real);
    if (mkdir(sbd, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "local provider: mkdir %s: %s", sbd, strerror(errno));
        return -errno;
    }
    char ex[PATH_MAX];
    if (!realpath(cfg->execd, ex) || access(ex, X_OK) != 0) {
        snprintf(err, errlen, "local provider: execd %s is not an executable file", cfg->execd);
        return SG_EINVAL;
    }
    local_prov_t *p = sg_xcalloc(1, sizeof(*p));
    p->base.ops = &local_ops;
    p->base.loop = loop;
    p->data_dir = sg_xstrdup(real);
    p->sb_dir = sg_xstrdup(sbd);
    p->bwrap = sg_xstrdup(cfg->bwrap ? cfg->bwrap : "bwrap");
    p->execd = sg_xstrdup(ex);
    p->cg_name = sg_xstrdup(cfg->cgroup_name ? cfg->cgroup_name : "sandgate");
    p->images = cfg->images;
    p->cgmode = cfg->cgroups;
    p->root = geteuid() == 0;
    if (cfg->n_volume_prefixes) {
        p->prefixes = sg_xcalloc(cfg->n_volume_prefixes, sizeof(char *));
        for (size_t i = 0; i < cfg->n_volume_prefixes; i++)
            p->prefixes[i] = sg_xstrdup(cfg->volume_prefixes[i]);
        p->n_prefixes = cfg->n_volume_prefixes;
    }
    if (p->cgmode != SG_LOCAL_CG_OFF) {
        char notes[1024];
        sg__cg_probe(p->cg_name, &p->cg, notes, sizeof(notes));
        if (notes[0]) sg_log(SG_LOG_INFO, "local provider: cgroups: %s", notes);
    }
    *out = &p->base;
    return 0;
}
