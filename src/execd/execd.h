/* execd.h: sandgate-execd's shared state and its route groups.
 *
 * execd.c owns the agent: configuration, the HTTP server (TCP or unix listener), the access
 * token check, routing and shutdown. Each route group lives in its own file and answers the
 * requests whose path is its own:
 *   commands.c  /ping, /command..., /session...          (on the runner engine, runner.h)
 *   metrics.c   /metrics, /metrics/watch
 *   files.c     /files..., /directories...               (multipart uploads, ranged downloads)
 *   proxy.c     /proxy/{port}/...                        (reverse proxy to 127.0.0.1:{port})
 * A route function returns 1 when it took the request (it then answers it, now or later) and
 * 0 when the path is not its own. Errors use {"code","message"} with the reference's codes
 * (opensandbox-protocol.md 2.1). */
#ifndef SANDGATE_EXECD_H
#define SANDGATE_EXECD_H

#include <stdint.h>
#include <uv.h>

#include "runner.h"
#include "sandgate/http_client.h"
#include "sandgate/http_server.h"

typedef struct sg_execd_config {
    const char *listen;       /* "127.0.0.1:44772", "0.0.0.0:44772" or "unix:/path" */
    const char *access_token; /* NULL / "" = no token required */
    const char *log_dir;      /* command logs and session state; NULL = $TMPDIR or /tmp */
    const char *log_level;
    uint64_t max_log_bytes;    /* per command log (runner log_cap) */
    int64_t max_log_index;     /* stream switches remembered per log (runner log_index_max) */
    uint64_t max_line_bytes;   /* longest line event before it is split (runner max_line) */
    uint64_t record_ttl_ms;    /* finished command records (and their logs) expire after this */
    uint64_t max_upload_bytes; /* request body bound for /files/upload, 0 = none */
    uint64_t shutdown_grace_ms;
    uint64_t max_stream_buffer; /* pending SSE bytes per client before it is dropped */
    int64_t max_walk_entries;   /* entries one /files/search or /directories/list may visit */
    const char *envs_file;      /* EXECD_ENVS: KEY=VALUE lines merged into every command's env */
    const char *shell;          /* NULL = bash from PATH, else sh (runner cfg.shell) */
    const char *port_file;      /* write the bound TCP port here once listening (tests) */
} sg_execd_config_t;

struct sg_execd_metrics;
struct sg_execd_files;
struct sg_execd_cmds;

typedef struct sg_execd {
    uv_loop_t *loop;
    sg_execd_config_t cfg;
    sg_http_server_t *http;
    sg_runner_t *runner;
    sg_http_client_t *client;         /* for /proxy/{port} */
    struct sg_execd_metrics *metrics; /* owned by metrics.c */
    struct sg_execd_files *files;     /* owned by files.c (may stay NULL) */
    struct sg_execd_cmds *cmds;       /* owned by commands.c; NULL once stopped */
    uint64_t started_ms;
} sg_execd_t;

int sg_execd_route_commands(sg_execd_t *x, sg_http_req_t *req);
int sg_execd_route_metrics(sg_execd_t *x, sg_http_req_t *req);
int sg_execd_route_files(sg_execd_t *x, sg_http_req_t *req);
int sg_execd_route_proxy(sg_execd_t *x, sg_http_req_t *req);

/* Route-group lifecycles, called by execd.c around the loop (each may be a no-op). */
int sg_execd_commands_start(sg_execd_t *x);
void sg_execd_commands_stop(sg_execd_t *x); /* after the runner closed */
int sg_execd_metrics_start(sg_execd_t *x);
void sg_execd_metrics_stop(sg_execd_t *x);
int sg_execd_files_start(sg_execd_t *x);
void sg_execd_files_stop(sg_execd_t *x);

#endif
