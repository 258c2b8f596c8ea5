/* bstat.c: /proc readers, CPU and socket JSON, result output (see bstat.h). */
#include "bstat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "sandgate/common.h"

long bs_page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? p : 4096;
}

static uint64_t read_rss_kb(const char *status_path)
{
    FILE *f = fopen(status_path, "r");
    if (!f) return 0;
    char line[256];
    uint64_t kb = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtoull(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* utime and stime in ticks from /proc/<pid>/stat; 0 when the process vanished. */
static int read_stat(int pid, uint64_t *ut, uint64_t *st)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    /* comm may hold spaces and parens: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    p += 2; /* field 3 (state) */
    for (int field = 3; field < 14 && *p; field++) {
        p = strchr(p, ' ');
        if (!p) return -1;
        p++;
    }
    char *end;
    *ut = strtoull(p, &end, 10);
    *st = strtoull(end, NULL, 10);
    return 0;
}

static void add_proc(int pid, bs_proc_t *out, int depth, int max_depth)
{
    uint64_t ut, st;
    if (read_stat(pid, &ut, &st) < 0) return;
    long tck = sysconf(_SC_CLK_TCK);
    if (tck <= 0) tck = 100;
    char path[96];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    out->rss_kb += read_rss_kb(path);
    out->cpu_user_s += (double)ut / (double)tck;
    out->cpu_sys_s += (double)st / (double)tck;
    out->nprocs++;
    out->ok = 1;
    if (depth >= max_depth) return;
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", pid, pid);
    FILE *f = fopen(path, "r");
    if (!f) return;
    int child;
    while (fscanf(f, "%d", &child) == 1)
        add_proc(child, out, depth + 1, max_depth);
    fclose(f);
}

void bs_proc_sample(int pid, bs_proc_t *out)
{
    bs_proc_sample_depth(pid, 5, out);
}

void bs_proc_sample_depth(int pid, int max_depth, bs_proc_t *out)
{
    memset(out, 0, sizeof(*out));
    if (pid <= 0) return;
    add_proc(pid, out, 0, max_depth);
}

void bs_self_sample(bs_proc_t *out)
{
    memset(out, 0, sizeof(*out));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    out->cpu_user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    out->cpu_sys_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    out->rss_kb = read_rss_kb("/proc/self/status");
    out->nprocs = 1;
    out->ok = 1;
}

void bs_sock_sample(bs_sock_t *out)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen("/proc/net/sockstat", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        long long a, b, c, d, e;
        if (sscanf(line, "sockets: used %lld", &a) == 1) out->sockets_used = a;
        if (sscanf(line, "TCP: inuse %lld orphan %lld tw %lld alloc %lld mem %lld", &a, &b, &c, &d,
                   &e) == 5) {
            out->tcp_inuse = a;
            out->tcp_orphan = b;
            out->tcp_tw = c;
            out->tcp_alloc = d;
            out->tcp_mem_pages = e;
            out->ok = 1;
        }
    }
    fclose(f);
    out->slab_bytes = -1;
    f = fopen("/proc/slabinfo", "r");
    if (!f) return;
    int64_t sum = 0;
    while (fgets(line, sizeof(line), f)) {
        char name[64];
        long long active, num, objsize;
        if (sscanf(line, "%63s %lld %lld %lld", name, &active, &num, &objsize) != 4) continue;
        if (strcmp(name, "TCP") == 0 || strcmp(name, "sock_inode_cache") == 0 ||
            strcmp(name, "eventpoll_epi") == 0)
            sum += active * objsize;
    }
    fclose(f);
    out->slab_bytes = sum;
}

json_t *bs_cpu_json(const bs_proc_t *a, const bs_proc_t *b, double wall_s)
{
    if (!a->ok || !b->ok) return json_null();
    double u = b->cpu_user_s - a->cpu_user_s, s = b->cpu_sys_s - a->cpu_sys_s;
    return json_pack("{s:f,s:f,s:f,s:f,s:i}", "user_s", u, "sys_s", s, "total_s", u + s, "util",
                     wall_s > 0 ? (u + s) / wall_s : 0.0, "processes", b->nprocs);
}

json_t *bs_sock_json(const bs_sock_t *s)
{
    if (!s->ok) return json_null();
    json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "sockets_used", (json_int_t)s->sockets_used,
                          "tcp_inuse", (json_int_t)s->tcp_inuse, "tcp_alloc",
                          (json_int_t)s->tcp_alloc, "tcp_orphan", (json_int_t)s->tcp_orphan,
                          "tcp_mem_pages", (json_int_t)s->tcp_mem_pages, "tcp_mem_bytes",
                          (json_int_t)(s->tcp_mem_pages * bs_page_size()));
    json_object_set_new(j, "socket_slab_bytes",
                        s->slab_bytes >= 0 ? json_integer((json_int_t)s->slab_bytes) : json_null());
    return j;
}

int bs_write_json(const json_t *doc, const char *path)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    if (!s) return SG_ENOMEM;
    int rc = 0;
    if (!path || !*path || strcmp(path, "-") == 0) {
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    } else {
        FILE *f = fopen(path, "w");
        if (!f) {
            rc = -errno;
        } else {
            fputs(s, f);
            fputc('\n', f);
            if (fclose(f) != 0) rc = -errno;
        }
    }
    free(s);
    return rc;
}

long bs_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

const char *bs_utc_now(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}
