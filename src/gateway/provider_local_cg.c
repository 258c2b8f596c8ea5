/* provider_local_cg.c: the local provider's cgroup, freezer and process helpers.
 *
 * Probe: find the cgroup2 mount and the v1 hierarchies of cpu, memory, pids and freezer in
 * /proc/self/mounts, place our base directory under the gateway's own cgroup in each
 * (/proc/self/cgroup) and make a throw-away child to see which control files a sandbox would
 * get. A controller is taken from v2 when a v2 child has its files, else from v1. On a hybrid
 * host whose v2 tree has no controllers (like a cgroup-v1 machine with a `unified` mount), v2
 * still gives cgroup.freeze and cgroup.kill.
 *
 * All control-file I/O is a few bytes, synchronous (cgroupfs never waits on a disk). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "provider_local.h"
#include "sandgate/common.h"

const char *const sg__cg_names[SG__CG_N] = {"cpu", "memory", "pids", "freezer"};
static const char *const v1_probe_file[SG__CG_N] = {"cpu.cfs_quota_us", "memory.limit_in_bytes",
                                                    "pids.max", "freezer.state"};
static const char *const v2_probe_file[SG__CG_N] = {"cpu.max", "memory.max", "pids.max",
                                                    "cgroup.freeze"};

int sg__cg_write(const char *dir, const char *file, const char *val)
{
    char path[1024];
    if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path)) return -ENAMETOOLONG;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t n = strlen(val);
    ssize_t w = write(fd, val, n);
    int r = w == (ssize_t)n ? 0 : (w < 0 ? -errno : -EIO);
    close(fd);
    return r;
}

int sg__cg_read(const char *dir, const char *file, char *buf, size_t n)
{
    char path[1024];
    if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path)) return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t r = read(fd, buf, n - 1);
    int e = errno;
    close(fd);
    if (r < 0) return -e;
    buf[r] = 0;
    return (int)r;
}

static int file_exists(const char *dir, const char *file)
{
    char path[1024];
    if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path)) return -ENAMETOOLONG;
    return access(path, F_OK) == 0;
}

/* Our own cgroup path in the hierarchy with this controller list entry ("" = v2). */
static int own_cgroup(const char *ctrl, char *out, size_t n)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f) return -1;
    char line[1024];
    int found = -1;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        *c1 = 0;
        const char *list = c1 + 1;
        int match = 0;
        if (!*ctrl) {
            match = strcmp(line, "0") == 0 && *list == 0;
        } else {
            char tmp[256];
            snprintf(tmp, sizeof(tmp), "%s", list);
            for (char *s, *tok = strtok_r(tmp, ",", &s); tok; tok = strtok_r(NULL, ",", &s))
                if (strcmp(tok, ctrl) == 0) match = 1;
        }
        if (match) {
            snprintf(out, n, "%s", strcmp(c2 + 1, "/") == 0 ? "" : c2 + 1);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static int mounted(const char *fstype, const char *ctrl, char *out, size_t n)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    if (!f) return -1;
    char dev[256], dir[512], type[64], opts[1024];
    int found = -1;
    while (fscanf(f, "%255s %511s %63s %1023s %*d %*d", dev, dir, type, opts) == 4) {
        if (strcmp(type, fstype) != 0) continue;
        int match = !ctrl;
        if (ctrl) {
            for (char *s, *tok = strtok_r(opts, ",", &s); tok; tok = strtok_r(NULL, ",", &s))
                if (strcmp(tok, ctrl) == 0) match = 1;
        }
        if (match) {
            found = snprintf(out, n, "%s", dir) < (int)n ? 0 : -1;
            break;
        }
    }
    fclose(f);
    return found;
}

static void note(char *notes, size_t n, const char *fmt, const char *a, const char *b)
{
    size_t len = strlen(notes);
    if (len + 1 >= n) return;
    snprintf(notes + len, n - len, fmt, a, b);
}

void sg__cg_probe(const char *name, sg__cg_host_t *h, char *notes, size_t noteslen)
{
    memset(h, 0, sizeof(*h));
    if (notes && noteslen) notes[0] = 0;
    char mnt[256], own[512], base[1024], probe[1100];
    char dummy[8];
    size_t nl = notes ? noteslen : 0;
    char *nt = notes ? notes : dummy;
    if (!notes) {
        dummy[0] = 0;
        nl = sizeof(dummy);
    }

    if (mounted("cgroup2", NULL, mnt, sizeof(mnt)) == 0 && own_cgroup("", own, sizeof(own)) == 0) {
        snprintf(base, sizeof(base), "%s%s/%s", mnt, own, name);
        if (mkdir(base, 0755) != 0 && errno != EEXIST) {
            note(nt, nl, "cgroup v2 at %s not writable (%s); ", mnt, strerror(errno));
        } else {
            /* Enabling controllers for our children only works where the cgroup has no
             * processes of its own (or is the root); failures just mean "not in v2". */
            char parent[1024];
            snprintf(parent, sizeof(parent), "%s%s", mnt, own);
            for (int c = 0; c < SG__CG_FREEZER; c++) {
                char plus[32];
                snprintf(plus, sizeof(plus), "+%s", sg__cg_names[c]);
                sg__cg_write(parent, "cgroup.subtree_control", plus);
                sg__cg_write(base, "cgroup.subtree_control", plus);
            }
            snprintf(probe, sizeof(probe), "%s/probe-%ld", base, (long)getpid());
            if (mkdir(probe, 0755) == 0 || errno == EEXIST) {
                if (snprintf(h->v2_base, sizeof(h->v2_base), "%s", base) >= (int)sizeof(h->v2_base))
                    h->v2_base[0] = 0;
                for (int c = 0; c < SG__CG_N; c++)
                    h->v2_has[c] = file_exists(probe, v2_probe_file[c]);
                h->v2_kill = file_exists(probe, "cgroup.kill");
                rmdir(probe);
            } else {
                note(nt, nl, "cgroup v2 base %s: cannot make a child (%s); ", base,
                     strerror(errno));
            }
        }
    } else {
        note(nt, nl, "no cgroup2 mount%s%s; ", "", "");
    }

    for (int c = 0; c < SG__CG_N; c++) {
        if (h->v2_has[c]) continue;
        if (mounted("cgroup", sg__cg_names[c], mnt, sizeof(mnt)) != 0 ||
            own_cgroup(sg__cg_names[c], own, sizeof(own)) != 0) {
            note(nt, nl, "no cgroup v1 %s hierarchy%s; ", sg__cg_names[c], "");
            continue;
        }
        snprintf(base, sizeof(base), "%s%s/%s", mnt, own, name);
        if (mkdir(base, 0755) != 0 && errno != EEXIST) {
            note(nt, nl, "cgroup v1 %s not writable (%s); ", sg__cg_names[c], strerror(errno));
            continue;
        }
        snprintf(probe, sizeof(probe), "%s/probe-%ld", base, (long)getpid());
        if (mkdir(probe, 0755) != 0 && errno != EEXIST) {
            note(nt, nl, "cgroup v1 %s: cannot make a child (%s); ", sg__cg_names[c],
                 strerror(errno));
            continue;
        }
        if (file_exists(probe, v1_probe_file[c]))
            if (snprintf(h->v1_base[c], sizeof(h->v1_base[c]), "%s", base) >=
                (int)sizeof(h->v1_base[c]))
                h->v1_base[c][0] = 0;
        rmdir(probe);
    }
}

void sg__cg_dirs(const sg_local_state_t *st, const char *dirs[6])
{
    int n = 0;
    if (st->cg_v2[0]) dirs[n++] = st->cg_v2;
    for (int c = 0; c < SG__CG_N; c++) {
        if (!st->cg_v1[c][0]) continue;
        int dup = 0;
        for (int i = 0; i < n; i++)
            dup |= strcmp(dirs[i], st->cg_v1[c]) == 0;
        if (!dup) dirs[n++] = st->cg_v1[c];
    }
    dirs[n] = NULL;
}

int sg__cg_attach(const sg_local_state_t *st, int64_t pid)
{
    const char *dirs[6];
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)pid);
    sg__cg_dirs(st, dirs);
    for (int i = 0; dirs[i]; i++) {
        int r = sg__cg_write(dirs[i], "cgroup.procs", v);
        if (r < 0) return r;
    }
    return 0;
}

void sg__cg_kill(const sg_local_state_t *st)
{
    const char *dirs[6];
    sg__cg_dirs(st, dirs);
    if (st->cg_v2[0] && file_exists(st->cg_v2, "cgroup.kill"))
        sg__cg_write(st->cg_v2, "cgroup.kill", "1");
    for (int i = 0; dirs[i]; i++) {
        char buf[8192];
        if (sg__cg_read(dirs[i], "cgroup.procs", buf, sizeof(buf)) <= 0) continue;
        for (char *s, *tok = strtok_r(buf, "\n", &s); tok; tok = strtok_r(NULL, "\n", &s)) {
            long pid = strtol(tok, NULL, 10);
            if (pid > 1) kill((pid_t)pid, SIGKILL);
        }
    }
}

int sg__cg_empty(const sg_local_state_t *st)
{
    const char *dirs[6];
    sg__cg_dirs(st, dirs);
    for (int i = 0; dirs[i]; i++) {
        char buf[64];
        int r = sg__cg_read(dirs[i], "cgroup.procs", buf, sizeof(buf));
        if (r > 0) return 0;
    }
    return 1;
}

void sg__cg_remove(const sg_local_state_t *st)
{
    const char *dirs[6];
    sg__cg_dirs(st, dirs);
    for (int i = 0; dirs[i]; i++)
        rmdir(dirs[i]);
}

int sg__cg_freeze(const sg_local_state_t *st, int on)
{
    if (strcmp(st->freeze, "cgroup-v2") == 0)
        return sg__cg_write(st->cg_v2, "cgroup.freeze", on ? "1" : "0");
    if (strcmp(st->freeze, "cgroup-v1") == 0)
        return sg__cg_write(st->cg_v1[SG__CG_FREEZER], "freezer.state", on ? "FROZEN" : "THAWED");
    return SG_EINVAL;
}

int sg__cg_frozen(const sg_local_state_t *st, int on)
{
    char buf[256];
    if (strcmp(st->freeze, "cgroup-v2") == 0) {
        if (sg__cg_read(st->cg_v2, "cgroup.events", buf, sizeof(buf)) < 0) return 0;
        return strstr(buf, on ? "frozen 1" : "frozen 0") != NULL;
    }
    if (sg__cg_read(st->cg_v1[SG__CG_FREEZER], "freezer.state", buf, sizeof(buf)) < 0) return 0;
    return strncmp(buf, on ? "FROZEN" : "THAWED", on ? 6 : 6) == 0;
}

uint64_t sg__proc_start(int64_t pid)
{
    if (pid <= 0) return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%lld/stat", (long long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p || p[1] != ' ') return 0;
    p += 2;
    if (*p == 'Z' || *p == 'X') return 0;
    /* p is field 3 (state); the start time is field 22. */
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    return p ? strtoull(p, NULL, 10) : 0;
}

int sg__ns_signal(const sg_local_state_t *st, int sig)
{
    char path[64], want[64], got[64];
    snprintf(path, sizeof(path), "/proc/%lld/ns/pid", (long long)st->init_pid);
    ssize_t n = readlink(path, want, sizeof(want) - 1);
    if (n <= 0 || sg__proc_start(st->init_pid) != st->init_start) return 0;
    want[n] = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 1) continue;
        snprintf(path, sizeof(path), "/proc/%ld/ns/pid", pid);
        n = readlink(path, got, sizeof(got) - 1);
        if (n <= 0) continue;
        got[n] = 0;
        if (strcmp(got, want) == 0 && kill((pid_t)pid, sig) == 0) count++;
    }
    closedir(d);
    return count;
}
