/* process.h: commands the gateway owns, their logs, and the subscribers that read them.
 *
 * Map
 *   sg_procs_t   one per api: the limits, its own HTTP client for the long-lived upstream
 *                command streams (many per sandbox, so not the proxy's small pool), and the
 *                timer lists its subscribers share (heartbeats, execd pings, blocked-write
 *                timeout, soft-lag duration).
 *   process      (private) one `POST .../proxy/44772/command`. The gateway sends the command
 *                upstream itself (always in the foreground and with sandgate's raw extension,
 *                so every byte is captured whatever the client asked), appends every upstream
 *                event to the process's sg_plog_t, and fans it out. Linked into its sandbox's
 *                list once `init` names it; freed when unlinked and unreferenced (the upstream
 *                exchange and each subscriber hold a reference).
 *   subscriber   (private) one response reading a process's log through a cursor (the next
 *                id). The client that started the command is the first, in execd framing;
 *                `GET .../processes/{pid}/stream` adds standard SSE ones at any time.
 *
 * The command's own client (the POST) is the one reader the producer waits for: it cannot
 * resume, so past origin_pause bytes behind, the gateway stops reading execd (which then stops
 * reading the command's pipes) until it catches up. No other subscriber is ever waited for.
 *
 * Delivery: appending an event pumps every subscriber that is not blocked: it writes log
 * chunks by reference until its connection's pending output passes the high-water mark
 * (sg_http_resp_write returns 1), then waits for the drain callback and resumes from its
 * cursor. So each subscriber has one gathered write in flight, the producer never waits, and
 * a subscriber's memory is bounded by the high-water mark whatever its lag. A blocked
 * subscriber is cut when its lag passes the hard limit, stays past the soft limit for the soft
 * duration, or its write makes no progress for the send timeout; its client resumes with the
 * SSE id it last received. A cursor that fell behind the log's window gets an explicit gap.
 *
 * Process states: running -> exited (execution_complete, or an error event carrying a numeric
 * exit code), killed (the command died of a signal: interrupt, signal API, timeout), failed
 * (the command could not start, or execd refused it), lost (the upstream stream broke before
 * the command's end, or the sandbox went away). */
#ifndef SANDGATE_GATEWAY_PROCESS_H
#define SANDGATE_GATEWAY_PROCESS_H

#include <stdint.h>
#include <uv.h>

#include "gwstats.h"
#include "sandbox.h"
#include "sandgate/http_server.h"

typedef struct sg_stream_config {
    uint64_t log_bytes;       /* events kept in memory per process, default 4 MiB */
    unsigned max_processes;   /* per sandbox (finished ones are evicted first), default 256 */
    uint64_t lag_soft;        /* bytes, default 2 MiB ... */
    uint64_t lag_soft_ms;     /* ... for this long, default 10 s */
    uint64_t lag_hard;        /* bytes, default 16 MiB */
    uint64_t send_timeout_ms; /* a blocked subscriber write, default 30 s */
    int sub_sndbuf;           /* SO_SNDBUF of subscriber sockets, default 64 KiB, 0 = kernel */
    uint64_t heartbeat_ms;    /* SSE comment heartbeat, default 15 s */
    uint64_t ping_ms;         /* execd-framing ping event, default 3 s (as execd) */
    uint32_t retry_ms;        /* SSE retry: sent first, default 2000 */
    int exact_output;         /* ask execd for raw events (byte-exact /output), default 1 */
    uint64_t origin_pause;    /* the POST /command client this far behind pauses the producer,
                                 default 1 MiB (capped at half of log_bytes); 0 = never */
    /* Durable logs (with a store): each process's events in segment files under
     * <data>/logs/<sandbox>/<process>/. */
    uint64_t disk_segment_bytes; /* a segment file is sealed at this size, default 8 MiB */
    uint64_t disk_process_bytes; /* kept per process (oldest segments go), default 64 MiB */
    uint64_t disk_total_bytes;   /* all logs: the oldest finished processes' output goes first,
                                    default 1 GiB */
    uint64_t disk_max_age_ms;    /* a finished process's output is kept this long, default 7 d,
                                    0 = no limit */
    uint32_t disk_flush_ms;      /* an appended event waits at most this long for its write
                                    (batching), default 10 ms; unwritten events stay in memory */
} sg_stream_config_t;

typedef struct sg_procs sg_procs_t;

void sg_stream_config_init(sg_stream_config_t *c);
int sg_procs_new(uv_loop_t *loop, const sg_stream_config_t *cfg, uint64_t connect_timeout_ms,
                 sg_procs_t **out);
struct sg_store;
struct sg_store_process;
struct sg_store_segment;
/* Where process records go (store.h): each process is written when execd names it and when
 * it ends; evicted ones are deleted. NULL: in memory only. */
void sg_procs_set_store(sg_procs_t *m, struct sg_store *st, const char *data_dir);
/* Restart: a stored process of the restored sandbox s, with its log's segment rows. Its log is
 * read back from the segment files (the newest --process-log-bytes into memory, the rest read
 * from the files on demand), so a finished one replays exactly as before; a running one is
 * then re-attached through execd's GET /command/{id}/stream?offset=<end of its stored output>
 * (sandgate-execd keeps a log of every command the gateway starts) and captured to the end,
 * its ids going on from the stored ones, or marked lost with the reason when that is
 * impossible (what it wrote so far is kept). */
void sg_procs_restore(sg_procs_t *m, sg_sandbox_t *s, const struct sg_store_process *r,
                      const struct sg_store_segment *segs, size_t nsegs);
/* Restored logs still being read back (serve waits for 0 before listening). */
unsigned sg_procs_loading(const sg_procs_t *m);
/* After the restores: log directories of no process restored (their records are gone) are
 * removed, on the thread pool. */
void sg_procs_reap_logs(sg_procs_t *m);
/* The gateway is stopping: process states are no longer written (running ones re-attach at
 * the next start). */
void sg_procs_shutting_down(sg_procs_t *m);

/* Call after sg_procs_drop_sandbox(m, s, 1) for every sandbox: cancels what is left, closes
 * the client and timers, frees m, then cb(ud). */
void sg_procs_close(sg_procs_t *m, void (*cb)(void *ud), void *ud);

/* POST .../proxy/44772/command on a sandbox with a handle: takes over req. */
void sg_procs_command(sg_procs_t *m, sg_sandbox_t *s, sg_http_req_t *req);
/* GET .../proxy/44772/command/status/{id} and .../command/{id}/logs for a process the gateway
 * owns: answers and returns 1; 0 when path is neither or names no process of s (proxy it). */
int sg_procs_execd_get(sg_procs_t *m, sg_sandbox_t *s, sg_http_req_t *req, const char *path);
/* The native API: sub is what follows "processes" ("", "/{pid}", "/{pid}/stream", ...). */
void sg_procs_route(sg_procs_t *m, sg_sandbox_t *s, sg_http_req_t *req, const char *sub);
/* The sandbox is going away: running processes become lost, their subscribers end once they
 * have the final event (cut != 0: at once, for shutdown), records are dropped. */
void sg_procs_drop_sandbox(sg_procs_t *m, sg_sandbox_t *s, int cut);

/* For test/fuzz/fuzz_gateway_events.c: data as an upstream execd event stream into a process
 * of a detached sandbox (log bound log_bytes), then its whole output read back; returns the
 * output's length. */
size_t sg__procs_fuzz_feed(const uint8_t *data, size_t len, uint64_t log_bytes);

const char *sg_proc_state_name(sg_proc_state_t st);
int sg_proc_state_parse(const char *s); /* -1 when unknown */

#endif
