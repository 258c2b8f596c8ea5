/* provider_local.h: the `local` provider: each sandbox is a bubblewrap sandbox on this host.
 *
 * Launch (provider_local.c): uv_spawn(bwrap ...) detached in its own session, handle unref'd,
 * no --die-with-parent, so sandboxes outlive the gateway. bwrap unshares pid, mount, ipc, uts
 * and net (net only under networkPolicy deny; user too when not root), drops every capability
 * and builds the root from the image (image.h) read-only, plus /workspace (rw, on the host under
 * <data_dir>/sandboxes/<id>/workspace), a private /tmp, /proc, a minimal /dev, operator-allowed
 * volumes, and /.sandgate (execd binary ro, run/ dir rw where execd's socket appears). bwrap's
 * own pid-1 reaps orphans; the command it runs is a tiny /bin/sh init (see INIT in
 * provider_local.c) that applies rlimits when cgroups are unavailable, starts
 * `sandgate-execd --listen unix:/.sandgate/run/execd.sock` and the entrypoint, both with the
 * spec's env, and lives as long as execd does. bwrap waits on --block-fd until the gateway has
 * put its pid-1 (reported on --info-fd) into the sandbox's cgroups and written state.json and
 * run/go; bwrap also proceeds on EOF (the gateway died in between), and INIT then finds no `go`
 * and exits, so nothing of the sandbox ever runs outside its cgroups or without a state file.
 *
 * Limits: cgroup v2 where the controller is enabled, else v1, else rlimits (RLIMIT_AS for
 * memory, RLIMIT_NPROC for pids; cpu has no rlimit equivalent and is then not enforced); what
 * was enforced is spelled out in the handle's `enforced`. Pause/resume: cgroup v2 cgroup.freeze,
 * else v1 freezer.state, else SIGSTOP/SIGCONT to every process of the sandbox's pid namespace.
 *
 * Durability: <data_dir>/sandboxes/<id>/state.json holds the pids (with their start times, so a
 * reused pid is never mistaken for the sandbox), the cgroup directories and the execd address.
 * Every operation after create works from that file, so a restarted gateway destroys, pauses
 * and checks sandboxes it did not create; sg_local_list_on_disk() enumerates them.
 *
 * Blocking: spawn is uv_spawn; the per-sandbox mkdirs, the state file (< 2 KiB, written once)
 * and cgroup control files are tiny synchronous writes on the loop (documented tradeoff); the
 * recursive removal of a sandbox's directories runs on the threadpool (uv_queue_work). */
#ifndef SANDGATE_GATEWAY_PROVIDER_LOCAL_H
#define SANDGATE_GATEWAY_PROVIDER_LOCAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "image.h"
#include "provider.h"

typedef enum sg_local_cgroups {
    SG_LOCAL_CG_AUTO = 0, /* detect: v2, else v1, else rlimits */
    SG_LOCAL_CG_OFF = 1,  /* never use cgroups (forces the rlimit / signal fallbacks) */
} sg_local_cgroups_t;

typedef struct sg_local_config {
    const char *data_dir;               /* required; the provider uses <data_dir>/sandboxes */
    const char *bwrap;                  /* NULL: "bwrap" from PATH */
    const char *execd;                  /* required: host path of sandgate-execd */
    const sg_image_registry_t *images;  /* required, not owned, must outlive the provider */
    const char *const *volume_prefixes; /* host directories volumes may come from; none = */
    size_t n_volume_prefixes;           /* every host volume is refused */
    sg_local_cgroups_t cgroups;
    const char *cgroup_name; /* parent cgroup dir name, NULL: "sandgate" */
} sg_local_config_t;

/* Makes the provider (copies the config strings; `images` is borrowed). Creates
 * <data_dir>/sandboxes. 0 or a negative code with err filled. */
int sg_local_provider_new(uv_loop_t *loop, const sg_local_config_t *cfg, sg_provider_t **out,
                          char *err, size_t errlen);

/* One sandbox as its state file describes it. */
typedef struct sg_local_state {
    char id[64];
    int64_t init_pid;    /* host pid of the sandbox's pid-namespace init (bwrap's pid 1) */
    uint64_t init_start; /* its start time (/proc/pid/stat field 22) */
    int64_t bwrap_pid;   /* the outer bwrap process (may be long gone) */
    uint64_t bwrap_start;
    char cg_v2[256];    /* cgroup v2 directory or "" */
    char cg_v1[4][256]; /* v1 directories: cpu, memory, pids, freezer ("" = unused) */
    char freeze[16];    /* "cgroup-v2", "cgroup-v1" or "signals" */
    char execd[512];
    char access_token[128];
    char enforced[256];
} sg_local_state_t;

/* Reads <data_dir>/sandboxes/<id>/state.json. SG_ENOTFOUND when there is none. */
int sg_local_state_load(const char *data_dir, const char *id, sg_local_state_t *st);
/* Fills a handle from a state (what create reported), for reconnecting after a restart. */
void sg_local_state_to_handle(const sg_local_state_t *st, sg_sandbox_handle_t *h);
/* 1 when the sandbox's init process (same pid and start time) still exists, else 0. */
int sg_local_state_alive(const sg_local_state_t *st);

/* Every sandbox with a state file under <data_dir>/sandboxes (alive or not): an array the
 * caller frees with free(). 0 or a negative code. */
int sg_local_list_on_disk(const char *data_dir, sg_local_state_t **out, size_t *n);

/* Whether a host path may be bind-mounted: its real path lies under one of the prefixes
 * (component-wise; the prefixes are real-pathed too). 1 yes, 0 no (reason in why). */
int sg_local_volume_allowed(const char *const *prefixes, size_t n, const char *host_path, char *why,
                            size_t whylen);

/* --- shared with doctor.c (provider_local_cg.c) --- */

enum { SG__CG_CPU = 0, SG__CG_MEMORY, SG__CG_PIDS, SG__CG_FREEZER, SG__CG_N };
extern const char *const sg__cg_names[SG__CG_N];

/* What this host offers: the cgroup v2 mount and per-controller v1 mounts, and the base
 * directories (our own cgroup + "/<name>") under which sandboxes' cgroups are made. */
typedef struct sg__cg_host {
    char v2_base[256];           /* "" when no writable cgroup2 */
    int v2_has[SG__CG_N];        /* controller usable in v2 children (freezer: cgroup.freeze) */
    int v2_kill;                 /* cgroup.kill exists */
    char v1_base[SG__CG_N][256]; /* "" when that v1 controller is not mounted / writable */
} sg__cg_host_t;

/* Probes by making (and removing) a test child cgroup; never fails, fills what works. */
void sg__cg_probe(const char *name, sg__cg_host_t *h, char *notes, size_t noteslen);

/* Tiny synchronous control-file I/O (a few bytes each). 0 or -errno. */
int sg__cg_write(const char *dir, const char *file, const char *val);
int sg__cg_read(const char *dir, const char *file, char *buf, size_t n);
/* Every directory of the sandbox's cgroups (v2 first), NULL-terminated into dirs[6]. */
void sg__cg_dirs(const sg_local_state_t *st, const char *dirs[6]);
/* Puts pid into every cgroup of the sandbox. 0 or -errno. */
int sg__cg_attach(const sg_local_state_t *st, int64_t pid);
/* SIGKILLs every task (cgroup.kill when v2 offers it). */
void sg__cg_kill(const sg_local_state_t *st);
/* 1 when no task is left in any of the sandbox's cgroups. */
int sg__cg_empty(const sg_local_state_t *st);
/* rmdir of every cgroup directory (they must be empty). */
void sg__cg_remove(const sg_local_state_t *st);
/* Freezes (on=1) or thaws; sg__cg_frozen: 1 once the requested state is reached. */
int sg__cg_freeze(const sg_local_state_t *st, int on);
int sg__cg_frozen(const sg_local_state_t *st, int on);
/* Signals every process in the pid namespace of the sandbox's init (the fallback freezer and
 * the belt-and-braces kill). Returns how many were signalled. */
int sg__ns_signal(const sg_local_state_t *st, int sig);
/* Start time of pid (/proc/pid/stat field 22), 0 when gone or a zombie. */
uint64_t sg__proc_start(int64_t pid);

#endif
