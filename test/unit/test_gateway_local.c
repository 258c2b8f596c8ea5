/* test_gateway_local.c: the local provider with real bubblewrap sandboxes and the real
 * sandgate-execd inside, reached over its unix socket (curl --unix-socket).
 *
 * The isolation checks run inside the sandbox as its entrypoint, which writes what it saw to
 * /workspace; the test reads that from the host side. No assertion is about timing: waits are
 * bounded polls (safety bounds only). Limit tests read the handle's `enforced` string: with
 * cgroups they assert the cgroup outcome, without (or with cgroups forced off, which runs here
 * too) the rlimit outcome. Every test ends with the provider closed and uv_loop_close() == 0. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "provider_local.h"
#include "sandgate/common.h"

typedef struct fx {
    uv_loop_t loop;
    char data[256];
    char allowed[256];
    char execd[512];
    sg_image_registry_t *images;
    sg_provider_t *p;
    /* results of the last operation */
    int fired, err, alive;
    sg_prov_err_t e;
    sg_sandbox_handle_t h;
    int closed;
} fx_t;

/* Sleeps the whole duration even when a signal (SIGCHLD of a sandbox's bwrap) interrupts. */
static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Seconds since `start` (uv_hrtime), for safety bounds measured in real time. */
static double since(uint64_t start)
{
    return (double)(uv_hrtime() - start) / 1e9;
}

/* Data dirs of this run, so sandboxes a failed test left behind are killed at exit. */
static char g_dirs[32][256];
static int g_ndirs;

static void cleanup_leftovers(void)
{
    for (int i = 0; i < g_ndirs; i++) {
        sg_local_state_t *list;
        size_t n;
        if (sg_local_list_on_disk(g_dirs[i], &list, &n) != 0) continue;
        for (size_t k = 0; k < n; k++) {
            fprintf(stderr, "cleanup: killing leftover sandbox %s\n", list[k].id);
            if (strcmp(list[k].freeze, "signals") != 0) sg__cg_freeze(&list[k], 0);
            sg__ns_signal(&list[k], SIGCONT);
            if (sg_local_state_alive(&list[k])) kill((pid_t)list[k].init_pid, SIGKILL);
            for (int t = 0; t < 200 && !sg__cg_empty(&list[k]); t++) {
                sg__cg_kill(&list[k]);
                sleep_ms(10);
            }
            sg__cg_remove(&list[k]);
        }
        free(list);
        char cmd[2 * 8192 + 64];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s-vol'", g_dirs[i], g_dirs[i]);
        if (system(cmd) != 0) fprintf(stderr, "cleanup: %s failed\n", cmd);
    }
}

static void fx_open(fx_t *f, sg_local_cgroups_t cg)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(f->data, sizeof(f->data), "/tmp/sgl-XXXXXX");
    assert_non_null(mkdtemp(f->data));
    if (g_ndirs < 32) snprintf(g_dirs[g_ndirs++], sizeof(g_dirs[0]), "%s", f->data);
    assert_true(snprintf(f->allowed, sizeof(f->allowed), "%s-vol", f->data) <
                (int)sizeof(f->allowed));
    assert_int_equal(mkdir(f->allowed, 0755), 0);
    const char *bin = getenv("SG_BIN_DIR");
    snprintf(f->execd, sizeof(f->execd), "%s/sandgate-execd", bin ? bin : ".");
    f->images = sg_image_registry_new();
    sg_local_config_t c;
    memset(&c, 0, sizeof(c));
    c.data_dir = f->data;
    c.execd = f->execd;
    c.images = f->images;
    const char *pre[] = {f->allowed};
    c.volume_prefixes = pre;
    c.n_volume_prefixes = 1;
    c.cgroups = cg;
    c.cgroup_name = "sandgate-test";
    char err[256];
    int r = sg_local_provider_new(&f->loop, &c, &f->p, err, sizeof(err));
    if (r) fprintf(stderr, "provider: %s\n", err);
    assert_int_equal(r, 0);
}

static void on_closed(void *ud)
{
    ((fx_t *)ud)->closed = 1;
}

static void fx_close(fx_t *f)
{
    f->p->ops->close(f->p, on_closed, f);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->closed, 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    sg_image_registry_free(f->images);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", f->data, f->allowed);
    assert_int_equal(system(cmd), 0);
}

static void on_created(void *ud, int err, const sg_prov_err_t *e, const sg_sandbox_handle_t *h)
{
    fx_t *f = ud;
    f->fired++;
    f->err = err;
    if (e) f->e = *e;
    if (h) f->h = *h;
}

static void on_done(void *ud, int err, const sg_prov_err_t *e)
{
    fx_t *f = ud;
    f->fired++;
    f->err = err;
    if (e) f->e = *e;
}

static void on_checked(void *ud, int alive, const sg_prov_err_t *e)
{
    fx_t *f = ud;
    f->fired++;
    f->alive = alive;
}

/* Runs the loop until the operation reported (its handles keep the loop alive until then). */
static void wait_op(fx_t *f)
{
    for (int i = 0; i < 100000 && !f->fired; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(f->fired, 1);
}

static int create(fx_t *f, const sg_sandbox_spec_t *s)
{
    f->fired = 0;
    memset(&f->h, 0, sizeof(f->h));
    memset(&f->e, 0, sizeof(f->e));
    assert_int_equal(f->p->ops->create(f->p, s, on_created, f), 0);
    assert_int_equal(f->fired, 0); /* never reported from inside create() */
    wait_op(f);
    if (f->err) fprintf(stderr, "create: %d %s %s\n", f->e.status, f->e.code, f->e.message);
    return f->err;
}

static int op(fx_t *f, int which)
{
    f->fired = 0;
    int r = which == 0   ? f->p->ops->destroy(f->p, &f->h, on_done, f)
            : which == 1 ? f->p->ops->pause(f->p, &f->h, on_done, f)
            : which == 2 ? f->p->ops->resume(f->p, &f->h, on_done, f)
                         : f->p->ops->check(f->p, &f->h, on_checked, f);
    assert_int_equal(r, 0);
    wait_op(f);
    if (f->err) fprintf(stderr, "op %d: %s %s\n", which, f->e.code, f->e.message);
    return f->err;
}

static void ws_path(fx_t *f, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/sandboxes/%s/workspace/%s", f->data, f->h.provider_id, name);
}

/* Contents of a workspace file once it exists (bounded wait), "" if it never appears. */
static char *wait_ws(fx_t *f, const char *name, char *buf, size_t n)
{
    char path[700];
    ws_path(f, name, path, sizeof(path));
    buf[0] = 0;
    for (uint64_t t0 = uv_hrtime(); since(t0) < 60;) { /* safety bound */
        FILE *fp = fopen(path, "r");
        if (fp) {
            size_t k = fread(buf, 1, n - 1, fp);
            buf[k] = 0;
            fclose(fp);
            if (k) return buf;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "wait_ws: %s did not appear (%s)\n", name, path);
    return buf;
}

static int ping(fx_t *f)
{
    char cmd[1200], out[256] = "";
    snprintf(cmd, sizeof(cmd),
             "curl -s -m 5 --unix-socket '%s' -H 'X-EXECD-ACCESS-TOKEN: %s' -o /dev/null "
             "-w '%%{http_code}' http://sandbox/ping",
             f->h.execd + 5, f->h.access_token);
    for (uint64_t t0 = uv_hrtime(); since(t0) < 30;) { /* execd starts within the bound */
        FILE *fp = popen(cmd, "r");
        size_t k = fread(out, 1, sizeof(out) - 1, fp);
        out[k] = 0;
        pclose(fp);
        if (strcmp(out, "200") == 0) return 200;
        sleep_ms(20);
    }
    return atoi(out);
}

/* Sandbox ids carry the test's pid: cgroup directories are named by id, so two runs (or a
 * sandbox a crashed run left behind) never share one. */
static void spec_init(sg_sandbox_spec_t *s, const char *id, const char *const *argv, size_t n)
{
    static char ids[16][64];
    static int nid;
    char *mine = ids[nid++ % 16];
    snprintf(mine, sizeof(ids[0]), "%s-%ld", id, (long)getpid());
    memset(s, 0, sizeof(*s));
    s->id = mine;
    s->tenant = "t";
    s->image = "host";
    s->entrypoint = argv;
    s->n_entrypoint = n;
}

static void assert_gone(fx_t *f, int64_t pid, const char *id)
{
    char path[600];
    struct stat st;
    assert_int_equal(sg__proc_start(pid), 0);
    snprintf(path, sizeof(path), "%s/sandboxes/%s", f->data, id);
    assert_int_not_equal(stat(path, &st), 0);
}

/* ---------------------------------------------------------------- isolation, env, execd */

static const char ISO[] =
    "exec > /workspace/iso.tmp 2>&1\n"
    "echo \"foo=$FOO\"\n"
    "[ -e /root ] && echo root=visible || echo root=hidden\n"
    "[ -e /home ] && echo home=visible || echo home=hidden\n"
    "[ -e /etc/shadow ] && echo shadow=visible || echo shadow=hidden\n"
    "[ -e \"$DATADIR\" ] && echo datadir=visible || echo datadir=hidden\n"
    "touch /usr/sgtest 2>/dev/null && echo usr=writable || echo usr=readonly\n"
    "echo procs=$(ls /proc | grep -c '^[0-9]')\n"
    "echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)\n"
    "curl -s -m 3 -o /dev/null http://127.0.0.1:$PORT/; echo curl=$?\n"
    "echo ok > /workspace/by-entrypoint\n"
    "cat /vol/in.txt; (echo > /vol/new) 2>/dev/null && echo vol=writable || echo vol=readonly\n"
    "mv /workspace/iso.tmp /workspace/iso\n"
    "exec sleep 600\n";

static int listen_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

/* The environment of the sandbox's execd (found by its comm in the sandbox's pid namespace):
 * commands execd starts inherit it. */
static int execd_env_has(const sg_local_state_t *st, const char *kv)
{
    char path[64], want[64], got[64], comm[64];
    snprintf(path, sizeof(path), "/proc/%lld/ns/pid", (long long)st->init_pid);
    ssize_t n = readlink(path, want, sizeof(want) - 1);
    if (n <= 0) return 0;
    want[n] = 0;
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *de;
    long found = 0;
    while (!found && (de = readdir(d))) {
        long pid = atol(de->d_name);
        if (pid <= 1) continue;
        snprintf(path, sizeof(path), "/proc/%ld/ns/pid", pid);
        n = readlink(path, got, sizeof(got) - 1);
        if (n <= 0) continue;
        got[n] = 0;
        if (strcmp(got, want) != 0) continue;
        snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
        FILE *fp = fopen(path, "r");
        if (!fp) continue;
        size_t k = fread(comm, 1, sizeof(comm) - 1, fp);
        fclose(fp);
        comm[k] = 0;
        if (strcmp(comm, "execd\n") == 0) found = pid;
    }
    closedir(d);
    if (!found) return 0;
    {
        long pid = found;
        static char env[65536];
        size_t k;
        FILE *fp;
        snprintf(path, sizeof(path), "/proc/%ld/environ", pid);
        fp = fopen(path, "r");
        if (!fp) return 0;
        k = fread(env, 1, sizeof(env) - 1, fp);
        fclose(fp);
        env[k] = 0;
        for (size_t i = 0; i < k; i += strlen(env + i) + 1)
            if (strcmp(env + i, kv) == 0) return 1;
        return 0;
    }
    return 0;
}

static void run_iso(int allow_net)
{
    static fx_t f; /* static: a failed assertion must not free a loop libuv still knows */
    fx_open(&f, SG_LOCAL_CG_AUTO);
    int port, lfd = listen_port(&port);
    char ports[16], volfile[400];
    snprintf(ports, sizeof(ports), "%d", port);
    snprintf(volfile, sizeof(volfile), "%s/in.txt", f.allowed);
    FILE *fp = fopen(volfile, "w");
    fputs("volume-content\n", fp);
    fclose(fp);
    const char *argv[] = {"/bin/sh", "-c", ISO};
    sg_kv_t env[] = {{"FOO", "bar baz"}, {"DATADIR", f.data}, {"PORT", ports}};
    sg_volume_t vol = {"v", f.allowed, "/vol", NULL, 1};
    sg_sandbox_spec_t s;
    spec_init(&s, allow_net ? "iso-allow" : "iso-deny", argv, 3);
    s.env = env;
    s.n_env = 3;
    s.volumes = &vol;
    s.n_volumes = 1;
    s.network_allow = allow_net;
    assert_int_equal(create(&f, &s), 0);
    assert_true(strncmp(f.h.execd, "unix:/", 6) == 0);
    assert_true(f.h.pid > 1);
    assert_int_equal(ping(&f), 200);
    char out[2048];
    wait_ws(&f, "iso", out, sizeof(out));
    fprintf(stderr, "inside (%s):\n%s", allow_net ? "allow" : "deny", out);
    assert_non_null(strstr(out, "foo=bar baz\n"));
    assert_non_null(strstr(out, "root=hidden\n"));
    assert_non_null(strstr(out, "home=hidden\n"));
    assert_non_null(strstr(out, "shadow=hidden\n"));
    assert_non_null(strstr(out, "datadir=hidden\n"));
    assert_non_null(strstr(out, "usr=readonly\n"));
    assert_non_null(strstr(out, "volume-content\nvol=readonly\n"));
    /* bwrap's pid 1, sh init, execd, the entrypoint and the `ls` itself. */
    const char *pr = strstr(out, "procs=");
    assert_non_null(pr);
    assert_true(atoi(pr + 6) >= 3 && atoi(pr + 6) <= 8);
    if (!allow_net) {
        assert_non_null(strstr(out, "ifaces=lo,\n"));
        assert_non_null(strstr(out, "curl=7\n")); /* could not connect */
    } else {
        assert_null(strstr(out, "curl=7\n")); /* connected (then timed out: nobody answers) */
    }
    wait_ws(&f, "by-entrypoint", out, sizeof(out));
    assert_string_equal(out, "ok\n");
    close(lfd);

    /* destroy kills everything and removes the dirs; twice is fine. */
    int64_t pid = f.h.pid;
    sg_local_state_t st;
    assert_int_equal(sg_local_state_load(f.data, f.h.provider_id, &st), 0);
    int has = 0;
    for (uint64_t t0 = uv_hrtime(); since(t0) < 10 && !(has = execd_env_has(&st, "FOO=bar baz"));)
        sleep_ms(20);
    assert_int_equal(has, 1);
    assert_int_equal(execd_env_has(&st, "FOO=other"), 0);
    assert_int_equal(op(&f, 0), 0);
    assert_gone(&f, pid, s.id);
    const char *dirs[6];
    sg__cg_dirs(&st, dirs);
    for (int i = 0; dirs[i]; i++)
        assert_int_not_equal(access(dirs[i], F_OK), 0);
    assert_int_equal(sg__ns_signal(&st, 0), 0);
    assert_int_equal(op(&f, 0), 0);
    assert_int_equal(op(&f, 3), 0);
    assert_int_equal(f.alive, 0);
    fx_close(&f);
}

static void test_isolation_deny(void **state)
{
    run_iso(0);
}

static void test_network_allow(void **state)
{
    run_iso(1);
}

/* ---------------------------------------------------------------- limits */

static const char HOG[] =
    "tail /dev/zero; echo hog=$? > /workspace/hog\n"
    /* a subshell: a non-interactive sh exits when a fork fails */
    "(i=0; while [ $i -lt 200 ]; do sleep 600 & i=$((i+1)); done) 2>/dev/null\n"
    "echo forked > /workspace/bomb\n"
    "exec sleep 600\n";

static void run_limits(sg_local_cgroups_t cg)
{
    static fx_t f; /* static: a failed assertion must not free a loop libuv still knows */
    fx_open(&f, cg);
    const char *argv[] = {"/bin/sh", "-c", HOG};
    sg_sandbox_spec_t s;
    spec_init(&s, "limits", argv, 3);
    s.memory_bytes = 64 << 20;
    s.pids = 32;
    s.cpu_millis = 500;
    assert_int_equal(create(&f, &s), 0);
    fprintf(stderr, "enforced: %s\n", f.h.enforced);
    int cg_mem = strstr(f.h.enforced, "memory=cgroup") != NULL;
    int cg_pids = strstr(f.h.enforced, "pids=cgroup") != NULL;
    if (cg == SG_LOCAL_CG_OFF) assert_false(cg_mem || cg_pids);
    if (!cg_mem) assert_non_null(strstr(f.h.enforced, "memory=rlimit-as(64Mi)"));
    /* uid 0 is exempt from RLIMIT_NPROC: the handle must say the pids limit is not enforced */
    int pids_unenforced = !cg_pids && geteuid() == 0;
    if (!cg_pids)
        assert_non_null(strstr(f.h.enforced, pids_unenforced ? "pids=unenforced-root-exempt"
                                                             : "pids=rlimit-nproc"));
    char out[256];
    wait_ws(&f, "hog", out, sizeof(out));
    fprintf(stderr, "hog: %s", out);
    assert_true(strncmp(out, "hog=", 4) == 0);
    /* killed by the OOM killer (137) or refused by RLIMIT_AS (tail: memory exhausted, 1) */
    assert_int_not_equal(atoi(out + 4), 0);
    if (cg_mem) assert_int_equal(atoi(out + 4), 137);
    wait_ws(&f, "bomb", out, sizeof(out));
    assert_string_equal(out, "forked\n");
    sg_local_state_t st;
    assert_int_equal(sg_local_state_load(f.data, s.id, &st), 0);
    int n = sg__ns_signal(&st, 0); /* processes in the sandbox's pid namespace */
    fprintf(stderr, "processes in the sandbox after the fork bomb: %d\n", n);
    assert_true(n > 5);                         /* the bomb did fork */
    if (!pids_unenforced) assert_true(n < 200); /* and was stopped short of what it tried */
    if (cg_pids) assert_true(n <= 32);
    if (!cg_mem || !cg_pids) {
        /* The rlimits sit on the sandbox's processes. */
        char path[64], lim[4096];
        snprintf(path, sizeof(path), "/proc/%lld/task/%lld/children", (long long)st.init_pid,
                 (long long)st.init_pid);
        FILE *fp = fopen(path, "r");
        long child = 0;
        assert_non_null(fp);
        assert_int_equal(fscanf(fp, "%ld", &child), 1);
        fclose(fp);
        snprintf(path, sizeof(path), "/proc/%ld/limits", child);
        fp = fopen(path, "r");
        size_t k = fread(lim, 1, sizeof(lim) - 1, fp);
        lim[k] = 0;
        fclose(fp);
        if (!cg_mem) assert_non_null(strstr(lim, "Max address space         67108864"));
        if (!cg_pids && !pids_unenforced) assert_non_null(strstr(lim, "Max processes"));
    }
    assert_int_equal(op(&f, 0), 0);
    assert_gone(&f, st.init_pid, s.id);
    assert_int_equal(sg__ns_signal(&st, 0), 0);
    fx_close(&f);
}

static void test_limits(void **state)
{
    run_limits(SG_LOCAL_CG_AUTO);
}

static void test_limits_rlimit_fallback(void **state)
{
    run_limits(SG_LOCAL_CG_OFF);
}

/* ---------------------------------------------------------------- pause / resume */

static const char COUNTER[] =
    "i=0; while :; do i=$((i+1)); echo $i > /workspace/c.tmp; mv /workspace/c.tmp /workspace/c; "
    "sleep 0.02; done\n";

static long read_counter(fx_t *f)
{
    char out[64];
    wait_ws(f, "c", out, sizeof(out));
    return atol(out);
}

static void run_pause(sg_local_cgroups_t cg)
{
    static fx_t f; /* static: a failed assertion must not free a loop libuv still knows */
    fx_open(&f, cg);
    const char *argv[] = {"/bin/sh", "-c", COUNTER};
    sg_sandbox_spec_t s;
    spec_init(&s, "pause", argv, 3);
    assert_int_equal(create(&f, &s), 0);
    fprintf(stderr, "enforced: %s\n", f.h.enforced);
    if (cg == SG_LOCAL_CG_OFF) assert_non_null(strstr(f.h.enforced, "freeze=signals"));
    long a = read_counter(&f);
    for (uint64_t t0 = uv_hrtime(); since(t0) < 30 && read_counter(&f) == a;)
        sleep_ms(10);
    assert_true(read_counter(&f) > a); /* it counts */
    assert_int_equal(op(&f, 1), 0);
    long p1 = read_counter(&f);
    sleep_ms(300);
    long p2 = read_counter(&f);
    assert_int_equal(p1, p2); /* frozen: no progress */
    assert_int_equal(op(&f, 3), 0);
    assert_int_equal(f.alive, 1);
    assert_int_equal(op(&f, 2), 0);
    for (uint64_t t0 = uv_hrtime(); since(t0) < 30 && read_counter(&f) == p2;)
        sleep_ms(10);
    assert_true(read_counter(&f) > p2); /* thawed */
    /* destroy while paused also works */
    assert_int_equal(op(&f, 1), 0);
    int64_t pid = f.h.pid;
    assert_int_equal(op(&f, 0), 0);
    assert_gone(&f, pid, s.id);
    fx_close(&f);
}

static void test_pause_freezer(void **state)
{
    run_pause(SG_LOCAL_CG_AUTO);
}

static void test_pause_signals(void **state)
{
    run_pause(SG_LOCAL_CG_OFF);
}

/* ---------------------------------------------------------------- survives its creator */

static void test_survives_creator(void **state)
{
    static fx_t f; /* static: a failed assertion must not free a loop libuv still knows */
    char data[256];
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    snprintf(data, sizeof(data), "/tmp/sgl-XXXXXX");
    assert_non_null(mkdtemp(data));
    if (g_ndirs < 32) snprintf(g_dirs[g_ndirs++], sizeof(g_dirs[0]), "%s", data);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* The creator: makes the sandbox, says so, then waits to be SIGKILLed. */
        close(pfd[0]);
        fx_open(&f, SG_LOCAL_CG_AUTO);
        const char *argv[] = {"/bin/sh", "-c", "echo up > /workspace/up; exec sleep 600"};
        sg_sandbox_spec_t s;
        spec_init(&s, "orphan", argv, 3);
        /* fx_open made its own data dir; use the parent's */
        f.p->ops->close(f.p, on_closed, &f);
        uv_run(&f.loop, UV_RUN_DEFAULT);
        char rm[600];
        snprintf(rm, sizeof(rm), "rm -rf '%s' '%s'", f.data, f.allowed);
        if (system(rm) != 0) _exit(6);
        sg_local_config_t c;
        memset(&c, 0, sizeof(c));
        c.data_dir = data;
        c.execd = f.execd;
        c.images = f.images;
        char err[256];
        if (sg_local_provider_new(&f.loop, &c, &f.p, err, sizeof(err)) != 0) _exit(3);
        if (create(&f, &s) != 0) _exit(4);
        if (write(pfd[1], "k", 1) != 1) _exit(5);
        for (;;)
            pause();
    }
    close(pfd[1]);
    char b;
    assert_int_equal(read(pfd[0], &b, 1), 1);
    close(pfd[0]);
    kill(child, SIGKILL);
    int wst;
    assert_int_equal(waitpid(child, &wst, 0), child);
    assert_true(WIFSIGNALED(wst));

    fx_open(&f, SG_LOCAL_CG_AUTO);
    sg_local_state_t *list;
    size_t n;
    assert_int_equal(sg_local_list_on_disk(data, &list, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(strncmp(list[0].id, "orphan-", 7), 0);
    assert_int_equal(sg_local_state_alive(&list[0]), 1);
    sg_local_state_to_handle(&list[0], &f.h);
    free(list);
    /* The provider works from the state on disk: point this one at the creator's data dir. */
    f.p->ops->close(f.p, on_closed, &f);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    sg_local_config_t c;
    memset(&c, 0, sizeof(c));
    c.data_dir = data;
    c.execd = f.execd;
    c.images = f.images;
    char err[256];
    assert_int_equal(sg_local_provider_new(&f.loop, &c, &f.p, err, sizeof(err)), 0);
    char saved[256];
    snprintf(saved, sizeof(saved), "%s", f.data);
    snprintf(f.data, sizeof(f.data), "%s", data);
    char out[64];
    wait_ws(&f, "up", out, sizeof(out));
    assert_string_equal(out, "up\n");
    assert_int_equal(ping(&f), 200);
    assert_int_equal(op(&f, 3), 0);
    assert_int_equal(f.alive, 1);
    int64_t pid = f.h.pid;
    assert_int_equal(op(&f, 0), 0);
    assert_gone(&f, pid, f.h.provider_id);
    assert_int_equal(op(&f, 3), 0);
    assert_int_equal(f.alive, 0);
    assert_int_equal(sg_local_list_on_disk(data, &list, &n), 0);
    assert_int_equal(n, 0);
    free(list);
    snprintf(f.data, sizeof(f.data), "%s", saved);
    fx_close(&f);
    rmdir(data);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", data);
    assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- refusals, registry */

static void test_refusals(void **state)
{
    static fx_t f; /* static: a failed assertion must not free a loop libuv still knows */
    fx_open(&f, SG_LOCAL_CG_AUTO);
    const char *argv[] = {"/bin/true"};
    sg_sandbox_spec_t s;
    spec_init(&s, "refused", argv, 1);
    s.image = "ubuntu:22.04";
    assert_int_not_equal(create(&f, &s), 0);
    assert_int_equal(f.e.status, 400);
    assert_string_equal(f.e.code, "SANDBOX::IMAGE_NOT_FOUND");
    assert_non_null(strstr(f.e.message, "ubuntu:22.04"));

    s.image = "host";
    sg_volume_t vol = {"v", "/etc", "/mnt/etc", NULL, 1};
    s.volumes = &vol;
    s.n_volumes = 1;
    assert_int_not_equal(create(&f, &s), 0);
    assert_int_equal(f.e.status, 400);
    assert_string_equal(f.e.code, "VOLUME::HOST_PATH_NOT_ALLOWED");
    /* a path that only looks like it is under the prefix */
    char sneaky[300];
    snprintf(sneaky, sizeof(sneaky), "%s/../", f.allowed);
    vol.host_path = sneaky;
    assert_int_not_equal(create(&f, &s), 0);
    assert_string_equal(f.e.code, "VOLUME::HOST_PATH_NOT_ALLOWED");
    vol.host_path = f.allowed;
    vol.mount_path = "/proc/x";
    assert_int_not_equal(create(&f, &s), 0);
    assert_string_equal(f.e.code, "VOLUME::INVALID_MOUNT_PATH");
    char why[256];
    const char *none[] = {NULL};
    assert_int_equal(sg_local_volume_allowed(none, 0, "/tmp", why, sizeof(why)), 0);
    assert_non_null(strstr(why, "none are configured"));
    /* nothing was left behind by the refusals */
    sg_local_state_t *list;
    size_t n;
    assert_int_equal(sg_local_list_on_disk(f.data, &list, &n), 0);
    assert_int_equal(n, 0);
    free(list);
    /* destroying what does not exist succeeds */
    snprintf(f.h.provider_id, sizeof(f.h.provider_id), "never-made");
    assert_int_equal(op(&f, 0), 0);
    assert_int_equal(op(&f, 3), 0);
    assert_int_equal(f.alive, 0);
    assert_int_not_equal(op(&f, 1), 0);
    assert_int_equal(f.e.status, 404);

    /* registry parsing */
    char err[256];
    assert_int_equal(sg_image_registry_add(f.images, "ubuntu:22.04=host", err, sizeof(err)), 0);
    const sg_image_t *img = sg_image_lookup(f.images, "ubuntu:22.04");
    assert_non_null(img);
    assert_int_equal(img->host, 1);
    assert_int_equal(sg_image_registry_add(f.images, "noequals", err, sizeof(err)), SG_EINVAL);
    assert_int_equal(sg_image_registry_add(f.images, "x=/does/not/exist", err, sizeof(err)),
                     SG_EINVAL);
    assert_int_equal(sg_image_registry_add(f.images, "x=/", err, sizeof(err)), SG_EINVAL);
    assert_int_equal(sg_image_registry_add(f.images, "mine=/usr/../usr", err, sizeof(err)), 0);
    assert_string_equal(sg_image_lookup(f.images, "mine")->root, "/usr");
    assert_null(sg_image_lookup(f.images, "x"));
    fx_close(&f);
}

/* ---------------------------------------------------------------- a DIR image */

static char g_img_mount[400];

static void test_dir_image(void **state)
{
    /* A root filesystem directory: its own /etc (a marker, no hosts file) and the host's /usr
     * bind-mounted in so /bin/sh and execd's libraries exist. Removed with unlink/rmdir only,
     * never recursively, so the /usr bind can never be deleted through. */
    char img[256], path[400];
    snprintf(img, sizeof(img), "/tmp/sgl-img-XXXXXX");
    assert_non_null(mkdtemp(img));
    snprintf(path, sizeof(path), "%s/usr", img);
    assert_int_equal(mkdir(path, 0755), 0);
    if (mount("/usr", path, NULL, MS_BIND, NULL) != 0) {
        fprintf(stderr, "test_dir_image: cannot bind /usr (%s): needs root; not run\n",
                strerror(errno));
        rmdir(path);
        rmdir(img);
        return;
    }
    /* Read-only, and unmounted at exit even if an assertion fails below: nothing may ever
     * delete the host's /usr through this mount. */
    snprintf(g_img_mount, sizeof(g_img_mount), "%s", path);
    assert_int_equal(mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL), 0);
    for (size_t i = 0; sg_image_host_top[i]; i++) {
        char target[256];
        ssize_t n = readlink(sg_image_host_top[i], target, sizeof(target) - 1);
        if (n <= 0) continue; /* this test expects a usr-merged host */
        target[n] = 0;
        snprintf(path, sizeof(path), "%s%s", img, sg_image_host_top[i]);
        assert_int_equal(symlink(target, path), 0);
    }
    snprintf(path, sizeof(path), "%s/etc", img);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/etc/marker", img);
    FILE *fp = fopen(path, "w");
    fputs("from-dir-image\n", fp);
    fclose(fp);

    static fx_t f; /* static: a failed assertion must not free a loop libuv still knows */
    fx_open(&f, SG_LOCAL_CG_AUTO);
    char spec[300], err[256];
    snprintf(spec, sizeof(spec), "mini:1=%s", img);
    assert_int_equal(sg_image_registry_add(f.images, spec, err, sizeof(err)), 0);
    const char *argv[] = {
        "/bin/sh", "-c",
        "(cat /etc/marker; [ -e /etc/hosts ] && echo hosts=visible || "
        "echo hosts=hidden; (touch /etc/x) 2>/dev/null && echo etc=writable || "
        "echo etc=readonly) > /workspace/o.tmp; mv /workspace/o.tmp /workspace/o; "
        "exec sleep 600"};
    sg_sandbox_spec_t s;
    spec_init(&s, "dirimg", argv, 3);
    s.image = "mini:1";
    assert_int_equal(create(&f, &s), 0);
    char out[256];
    wait_ws(&f, "o", out, sizeof(out));
    assert_string_equal(out, "from-dir-image\nhosts=hidden\netc=readonly\n");
    assert_int_equal(ping(&f), 200);
    int64_t pid = f.h.pid;
    assert_int_equal(op(&f, 0), 0);
    assert_gone(&f, pid, s.id);
    fx_close(&f);

    snprintf(path, sizeof(path), "%s/usr", img);
    assert_int_equal(umount2(path, MNT_DETACH), 0);
    g_img_mount[0] = 0;
    assert_int_equal(rmdir(path), 0);
    for (size_t i = 0; sg_image_host_top[i]; i++) {
        snprintf(path, sizeof(path), "%s%s", img, sg_image_host_top[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/etc/marker", img);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/etc", img);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(rmdir(img), 0);
}

int main(void)
{
    if (access("/usr/bin/bwrap", X_OK) != 0 && system("command -v bwrap >/dev/null") != 0) {
        fprintf(stderr,
                "bubblewrap is required for the local provider tests (see `sandgate doctor`)\n");
        return 1; /* not a silent skip */
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_isolation_deny),
        cmocka_unit_test(test_network_allow),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_limits_rlimit_fallback),
        cmocka_unit_test(test_pause_freezer),
        cmocka_unit_test(test_pause_signals),
        cmocka_unit_test(test_survives_creator),
        cmocka_unit_test(test_dir_image),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    cleanup_leftovers();
    if (g_img_mount[0]) umount2(g_img_mount, MNT_DETACH);
    return failed;
}
