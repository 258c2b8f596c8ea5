/* doctor.c: `sandgate doctor`. Synchronous on purpose: a one-shot command, no loop. Each check
 * actually runs bubblewrap (a trivial sandbox per namespace) rather than trusting version
 * strings, and probes cgroups with the provider's own code (provider_local_cg.c), so what it
 * reports is what the local provider will do on this host. */
#define _GNU_SOURCE /* pipe2 */
#include "doctor.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image.h"
#include "provider_local.h"

extern char **environ;

typedef struct check {
    const char *name;
    int ok;
    char detail[512];
    char advice[512];
} check_t;

/* Runs argv, returns its exit status (or -1), with the first bytes of its stderr in err. */
static int run(char *const argv[], char *out, size_t outlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    size_t len = 0;
    if (out && outlen) out[0] = 0;
    ssize_t n;
    char sink[512];
    for (;;) {
        int to_out = out && len + 1 < outlen;
        char *dst = to_out ? out + len : sink;
        n = read(pfd[0], dst, to_out ? outlen - 1 - len : sizeof(sink));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (to_out) len += (size_t)n;
    }
    close(pfd[0]);
    if (out && outlen) {
        out[len < outlen ? len : outlen - 1] = 0;
        for (char *s = out; *s; s++)
            if (*s == '\n') *s = ' ';
    }
    if (r != 0) {
        if (out) snprintf(out, outlen, "%s", strerror(r));
        return -1;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A trivial sandbox like the provider's, plus `extra` (one namespace flag or NULL). */
static int try_bwrap(const char *bwrap, const char *extra, char *out, size_t outlen)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = bwrap;
    for (size_t i = 0; sg_image_host_top[i]; i++) {
        struct stat st;
        static char links[8][512];
        const char *t = sg_image_host_top[i];
        if (lstat(t, &st) != 0) continue;
        if (S_ISLNK(st.st_mode)) {
            ssize_t k = readlink(t, links[i], sizeof(links[i]) - 1);
            if (k <= 0) continue;
            links[i][k] = 0;
            argv[n++] = "--symlink", argv[n++] = links[i], argv[n++] = t;
        } else if (S_ISDIR(st.st_mode)) {
            argv[n++] = "--ro-bind", argv[n++] = t, argv[n++] = t;
        }
    }
    argv[n++] = "--proc", argv[n++] = "/proc", argv[n++] = "--dev", argv[n++] = "/dev";
    if (geteuid() == 0)
        argv[n++] = "--cap-drop", argv[n++] = "ALL";
    else if (!extra || strcmp(extra, "--unshare-user") != 0)
        argv[n++] = "--unshare-user";
    if (extra) argv[n++] = extra;
    argv[n++] = "true";
    argv[n] = NULL;
    return run((char *const *)argv, out, outlen);
}

int sg_gateway_doctor(int argc, char **argv)
{
    int json = 0;
    const char *bwrap = "bwrap";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--bwrap") == 0 && i + 1 < argc)
            bwrap = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: sandgate doctor [--json] [--bwrap PATH]\n\n"
                   "Reports what this host offers the local provider (bubblewrap, namespaces,\n"
                   "cgroups, rlimits) and what to do about what is missing.\n");
            return 0;
        } else {
            fprintf(stderr, "sandgate doctor: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    check_t c[16];
    int nc = 0;
    memset(c, 0, sizeof(c));
    char out[512];

    check_t *b = &c[nc++];
    b->name = "bubblewrap";
    const char *ver[] = {bwrap, "--version", NULL};
    int rv = run((char *const *)ver, out, sizeof(out));
    if (rv != 0) {
        snprintf(b->detail, sizeof(b->detail), "%.100s not runnable: %.300s", bwrap, out);
        snprintf(b->advice, sizeof(b->advice),
                 "install bubblewrap (apt-get install bubblewrap) "
                 "or pass its path; local sandboxes cannot run without it");
    } else {
        char vs[128];
        snprintf(vs, sizeof(vs), "%.100s", out);
        rv = try_bwrap(bwrap, "--unshare-pid", out, sizeof(out));
        b->ok = rv == 0;
        snprintf(b->detail, sizeof(b->detail), "%.100s; trial sandbox %s%.300s%s", vs,
                 b->ok ? "ran" : "failed: ", b->ok ? "" : out, "");
        if (!b->ok)
            snprintf(b->advice, sizeof(b->advice),
                     "bubblewrap is installed but cannot make a sandbox: run the gateway as root, "
                     "or enable unprivileged user namespaces (sysctl "
                     "kernel.unprivileged_userns_clone=1, "
                     "user.max_user_namespaces > 0) or install bwrap setuid");
    }
    static const char *const ns_flag[] = {"--unshare-pid", "--unshare-net",  "--unshare-ipc",
                                          "--unshare-uts", "--unshare-user", "--unshare-cgroup"};
    static const char *const ns_name[] = {"namespace pid", "namespace net",  "namespace ipc",
                                          "namespace uts", "namespace user", "namespace cgroup"};
    for (size_t i = 0; i < sizeof(ns_flag) / sizeof(ns_flag[0]); i++) {
        check_t *k = &c[nc++];
        k->name = ns_name[i];
        if (!b->ok) {
            snprintf(k->detail, sizeof(k->detail), "not tried (bubblewrap does not work)");
            continue;
        }
        k->ok = try_bwrap(bwrap, ns_flag[i], out, sizeof(out)) == 0;
        snprintf(k->detail, sizeof(k->detail), "%.400s", k->ok ? "works" : out);
        int needed = i < 4 || (i == 4 && geteuid() != 0);
        if (!k->ok)
            snprintf(k->advice, sizeof(k->advice), "%s",
                     needed
                         ? "required by the local provider: enable this namespace in the kernel / "
                           "container runtime (e.g. run the gateway's container with --privileged "
                           "or a seccomp profile that allows unshare)"
                         : "optional: the provider works without it");
    }

    sg__cg_host_t h;
    char notes[1024];
    sg__cg_probe("sandgate", &h, notes, sizeof(notes));
    const char *how[SG__CG_N];
    int any_cg = 0;
    for (int i = 0; i < SG__CG_N; i++) {
        how[i] = h.v2_has[i] ? "cgroup-v2" : h.v1_base[i][0] ? "cgroup-v1" : NULL;
        any_cg |= how[i] != NULL;
        check_t *k = &c[nc++];
        static const char *const nm[SG__CG_N] = {"limit cpu", "limit memory", "limit pids",
                                                 "pause (freezer)"};
        static const char *const fb[SG__CG_N] = {
            "not enforced (RLIMIT_CPU is total seconds, not a rate)",
            "rlimit fallback: RLIMIT_AS (address space, not resident memory)",
            "rlimit fallback: RLIMIT_NPROC (counts the uid's processes host-wide)",
            "fallback: SIGSTOP/SIGCONT to every process of the sandbox's pid namespace"};
        k->name = nm[i];
        k->ok = how[i] != NULL;
        if (how[i])
            snprintf(k->detail, sizeof(k->detail), "%s (%s)", how[i],
                     h.v2_has[i] ? h.v2_base : h.v1_base[i]);
        else
            snprintf(k->detail, sizeof(k->detail), "%s", fb[i]);
        if (!how[i])
            snprintf(k->advice, sizeof(k->advice),
                     "give the gateway a writable cgroup with the %s controller (cgroup v2: a "
                     "delegated subtree with +%s in cgroup.subtree_control, e.g. systemd "
                     "Delegate=yes; cgroup v1: a writable /sys/fs/cgroup/%s)",
                     sg__cg_names[i], sg__cg_names[i], sg__cg_names[i]);
    }
    check_t *k = &c[nc++];
    k->name = "rlimits";
    struct rlimit rl;
    k->ok = getrlimit(RLIMIT_AS, &rl) == 0;
    snprintf(k->detail, sizeof(k->detail), "available (fallback for memory and pids)%s%.400s",
             notes[0] ? "; cgroup notes: " : "", notes);

    if (json) {
        json_t *arr = json_array();
        for (int i = 0; i < nc; i++)
            json_array_append_new(arr,
                                  json_pack("{s:s, s:b, s:s, s:s}", "name", c[i].name, "ok",
                                            c[i].ok, "detail", c[i].detail, "advice", c[i].advice));
        json_t *o = json_pack("{s:b, s:o, s:{s:s, s:s, s:s, s:s}}", "ok", b->ok, "checks", arr,
                              "local_provider", "cpu", how[0] ? how[0] : "unenforced", "memory",
                              how[1] ? how[1] : "rlimit", "pids", how[2] ? how[2] : "rlimit",
                              "freeze", how[3] ? how[3] : "signals");
        char *s = json_dumps(o, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("sandgate doctor: can this host run local sandboxes?\n\n");
        for (int i = 0; i < nc; i++) {
            printf("  %-8s %-18s %s\n", c[i].ok ? "OK" : (i == 0 ? "MISSING" : "--"), c[i].name,
                   c[i].detail);
            if (c[i].advice[0]) printf("  %-8s %-18s -> %s\n", "", "", c[i].advice);
        }
        printf("\n%s\n", b->ok ? (any_cg ? "Local sandboxes can run here."
                                         : "Local sandboxes can run here, with rlimit fallbacks.")
                               : "Local sandboxes cannot run here until bubblewrap works.");
    }
    return b->ok ? 0 : 1;
}
