/* store.h: the gateway's durable store: one SQLite database (WAL) in the data directory.
 *
 * Map
 *   sg_store_t            one open database, owned by one dedicated worker thread. The loop
 *                         thread never touches SQLite or the disk: every call copies its
 *                         arguments into an operation, queues it and returns; the worker runs
 *                         operations in submission order and hands each back to the loop
 *                         (uv_async_t), where its callback runs.
 *   group commit          consecutive writes the worker finds queued run in one transaction
 *                         (at most batch_max); each write's callback runs after the transaction
 *                         holding it committed, so an acknowledged write is durable (see
 *                         `synchronous` below for what durable means).
 *   sg_store_sandbox_t    plain mirrors of the stored rows (no dependency on sandbox.h or
 *   sg_store_process_t    process.c: the caller maps its records onto these). Strings are
 *   sg_store_segment_t    NUL-terminated; optional ones may be NULL.
 *   schema                versioned by PRAGMA user_version, marked as sandgate's by PRAGMA
 *                         application_id (SG_STORE_APP_ID); older versions are migrated one step
 *                         at a time, newer ones and foreign or corrupt files are refused without
 *                         being written to.
 *
 * Ownership: what a call is given is copied before it returns (the caller may free it at once).
 * Results handed to a callback (a load snapshot, a message) are valid only during the callback.
 * Every submission returns 0, after which its callback runs exactly once on the loop thread, or
 * a negative error (SG_EINVAL: a required field missing; SG_ECLOSED: close was called;
 * SG_ETOOBIG: queue_max operations are already queued), after which it never runs.
 *
 * Lifecycle (libuv's): sg_store_open -> operations -> sg_store_close(cb) -> freed, then cb. A
 * store whose open failed (its callback says why) still has to be closed. Operations submitted
 * before the open completes run after it (and fail with its error if it failed). close() lets
 * every operation already queued finish and call back first. While no operation is in flight
 * the store does not keep the loop alive. */
#ifndef SANDGATE_GATEWAY_STORE_H
#define SANDGATE_GATEWAY_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SG_STORE_APP_ID         0x53476462 /* "SGdb": PRAGMA application_id of our databases */
#define SG_STORE_SCHEMA_VERSION 2          /* PRAGMA user_version this build writes */
#define SG_STORE_FILE           "sandgate.db"

typedef struct sg_store sg_store_t;

typedef struct sg_store_config {
    /* 1: PRAGMA synchronous=FULL, the WAL is fsync'ed at every commit: an acknowledged write
     * survives kill -9 and power loss. 0: NORMAL: the commit is written to the WAL (the OS
     * page cache) but not fsync'ed: it survives kill -9 of the gateway, not a host crash.
     * Default 1 (group commit pays one fsync per batch, on the worker thread). */
    int sync_full;
    unsigned batch_max;       /* writes per transaction, default 1024 */
    unsigned queue_max;       /* operations queued or in flight, default 65536 */
    unsigned busy_timeout_ms; /* another process holding the database lock, default 5000 */
} sg_store_config_t;

typedef struct sg_store_sandbox {
    const char *id;             /* required */
    const char *tenant;         /* required */
    const char *provider;       /* required: the provider's name */
    const char *provider_id;    /* the provider's own id of the sandbox */
    const char *execd;          /* how to reach its execd (endpoint / socket) */
    const char *access_token;   /* execd's access token */
    const char *create_request; /* JSON text */
    const char *state;          /* required: the state's name */
    const char *reason;
    const char *message;
    const char *metadata; /* JSON text */
    int64_t created_us;   /* wall clock, microseconds since the epoch */
    int64_t expires_us;   /* 0: none */
    int64_t transition_us;
    int64_t reap_us; /* 0: never (schema v2) */
} sg_store_sandbox_t;

typedef struct sg_store_process {
    const char *sandbox_id; /* required, must be stored (else SG_ENOTFOUND) */
    const char *id;         /* required */
    const char *command;    /* required */
    int background;
    const char *state; /* required */
    int has_exit_code; /* exit_code is NULL in the row when 0 */
    int exit_code;
    const char *error;
    int64_t created_us;
    int64_t finished_us; /* 0: running */
} sg_store_process_t;

/* One output log segment file of a process (the files themselves are not the store's). */
typedef struct sg_store_segment {
    const char *sandbox_id; /* required; the process must be stored (else SG_ENOTFOUND) */
    const char *process_id; /* required */
    uint64_t seq;           /* per process, increasing */
    const char *path;       /* required; relative to the data directory */
    uint64_t first_event_id, last_event_id;
    uint64_t first_out, out_end; /* output offsets [first_out, out_end) */
    uint64_t bytes;              /* the file's size */
} sg_store_segment_t;

/* Everything stored, for a restart. Processes are ordered by sandbox and creation time,
 * segments by sandbox, process and seq. Valid during the callback only. */
typedef struct sg_store_snapshot {
    sg_store_sandbox_t *sandboxes;
    size_t nsandboxes;
    sg_store_process_t *processes;
    size_t nprocesses;
    sg_store_segment_t *segments;
    size_t nsegments;
} sg_store_snapshot_t;

typedef struct sg_store_stats {
    uint64_t ops;               /* operations completed */
    uint64_t writes;            /* write operations completed (ok or not) */
    uint64_t transactions;      /* write transactions committed */
    uint64_t failed;            /* operations that completed with an error */
    uint64_t queued;            /* operations submitted and not yet called back */
    uint64_t batch_max_seen;    /* most writes committed by one transaction */
    uint64_t queue_wait_max_ns; /* worst time an operation waited before the worker took it */
    uint64_t txn_max_ns;        /* worst write transaction, BEGIN to COMMIT (fsync included) */
} sg_store_stats_t;

/* msg: NULL when err == 0, else what went wrong (for the log or a {"code","message"} body). */
typedef void (*sg_store_cb)(void *ud, int err, const char *msg);
typedef void (*sg_store_load_cb)(void *ud, int err, const char *msg,
                                 const sg_store_snapshot_t *snap);

void sg_store_config_init(sg_store_config_t *c);

/* Starts the worker, which opens (creating if needed) <data_dir>/sandgate.db, checks it is
 * sandgate's, migrates it and calls cb. Returns 0 with *out set, or a negative error (the
 * thread could not start; nothing to close). cfg NULL: defaults. */
int sg_store_open(uv_loop_t *loop, const char *data_dir, const sg_store_config_t *cfg,
                  sg_store_cb cb, void *ud, sg_store_t **out);
/* Runs what is queued, closes the database, joins the worker, frees st, then cb(ud). */
void sg_store_close(sg_store_t *st, void (*cb)(void *ud), void *ud);

/* Insert or update (by id; updating never touches the sandbox's processes). */
int sg_store_put_sandbox(sg_store_t *st, const sg_store_sandbox_t *s, sg_store_cb cb, void *ud);
/* Deletes the sandbox, its processes and their segments (no error when it is not stored). */
int sg_store_delete_sandbox(sg_store_t *st, const char *id, sg_store_cb cb, void *ud);
/* Insert or update by (sandbox_id, id). */
int sg_store_put_process(sg_store_t *st, const sg_store_process_t *p, sg_store_cb cb, void *ud);
/* Deletes the process and its segments. */
int sg_store_delete_process(sg_store_t *st, const char *sandbox_id, const char *id, sg_store_cb cb,
                            void *ud);
/* Insert or update by (sandbox_id, process_id, seq). */
int sg_store_put_segment(sg_store_t *st, const sg_store_segment_t *g, sg_store_cb cb, void *ud);
/* Deletes the process's segments with seq < below_seq (UINT64_MAX: all of them). */
int sg_store_delete_segments(sg_store_t *st, const char *sandbox_id, const char *process_id,
                             uint64_t below_seq, sg_store_cb cb, void *ud);
/* Reads everything in one read transaction (a consistent view). */
int sg_store_load_all(sg_store_t *st, sg_store_load_cb cb, void *ud);

/* Counters and worst times since open (loop thread; takes the queue lock briefly). */
void sg_store_stats(sg_store_t *st, sg_store_stats_t *out);

#endif
