/* bstat.h: what the bench measures besides latency: CPU time and memory of itself and of the
 * server under test (a --server-pid and its descendants, so `nginx` master + workers count as
 * one server), the kernel's socket counters, and the shared shape of the result document.
 *
 * Server figures come from /proc/<pid>/stat (utime + stime, clock ticks) and
 * /proc/<pid>/status (VmRSS); descendants from /proc/<pid>/task/<pid>/children. Kernel socket
 * memory from /proc/net/sockstat ("TCP: ... mem N" is pages charged to all TCP sockets on the
 * host, both ends of a loopback benchmark included: the report says so), and, when
 * /proc/slabinfo is readable, the slab bytes of the per-socket kernel objects (TCP,
 * sock_inode_cache, eventpoll_epi): what an idle socket costs, since it queues no data. */
#ifndef SANDGATE_BENCH_BSTAT_H
#define SANDGATE_BENCH_BSTAT_H
#include <jansson.h>
#include <stdint.h>

typedef struct bs_proc {
    int ok;            /* 0: no pid given or it vanished */
    int nprocs;        /* the pid and its descendants */
    uint64_t rss_kb;   /* summed VmRSS */
    double cpu_user_s; /* summed */
    double cpu_sys_s;
} bs_proc_t;

typedef struct bs_sock {
    int ok;
    int64_t sockets_used;
    int64_t tcp_inuse, tcp_orphan, tcp_tw, tcp_alloc, tcp_mem_pages;
    int64_t slab_bytes; /* TCP + sock_inode_cache + eventpoll_epi objects (-1: unreadable) */
} bs_sock_t;

/* pid <= 0 gives ok = 0. bs_proc_sample counts descendants 5 levels deep;
 * bs_proc_sample_depth(pid, 0, out) the process alone (a gateway whose sandboxes are its
 * children: their processes are the publisher, not the server). */
void bs_proc_sample(int pid, bs_proc_t *out);
void bs_proc_sample_depth(int pid, int max_depth, bs_proc_t *out);
void bs_self_sample(bs_proc_t *out); /* this process (getrusage + VmRSS) */
void bs_sock_sample(bs_sock_t *out);
long bs_page_size(void);

/* {"user_s","sys_s","total_s","util"} for the CPU used between a and b over wall seconds
 * (util = cores busy on average: 1.0 = one core saturated). */
json_t *bs_cpu_json(const bs_proc_t *a, const bs_proc_t *b, double wall_s);
json_t *bs_sock_json(const bs_sock_t *s);

/* Writes doc (pretty, 2 spaces, newline-terminated) to path, or stdout when path is NULL/""
 * or "-". 0 or a negative code. Steals nothing. */
int bs_write_json(const json_t *doc, const char *path);

/* Raises RLIMIT_NOFILE's soft limit to the hard one; returns the new soft limit. */
long bs_raise_nofile(void);

/* ISO-8601 UTC wall time now ("2026-11-22T04:00:00Z"), in buf. */
const char *bs_utc_now(char *buf, size_t n);
#endif
