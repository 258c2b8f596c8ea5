/* serve.c: `sandgate serve` — configuration, the listener, routing, signals, shutdown.
 *
 * The daemon serves `GET /health`, `GET /metrics` (gwmetrics.c), the OpenSandbox lifecycle API
 * and the sandbox proxy (api.c, proxy.c) and answers everything else with a 404 JSON error. It
 * owns the loop, the HTTP server, the optional TLS context, the api (which owns the provider),
 * the metrics (lag monitor and rate timer) and the signal handles; SIGTERM or SIGINT start a
 * graceful shutdown (stop accepting, let requests finish up to --shutdown-grace, then close the
 * api), a second signal cuts it short.
 *
 * Repeatable flags (--image, --allow-host-volumes) are taken out of argv before the option
 * table (config.h, one value per option) sees the rest. */
#include "serve.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <uv.h>

#include "api.h"
#include "gwmetrics.h"
#include "image.h"
#include "provider_local.h"
#include "store.h"
#include "sandgate/common.h"
#include "sandgate/config.h"
#include "sandgate/http_server.h"
#include "sandgate/log.h"
#include "sandgate/tls.h"

typedef struct serve_config {
    const char *listen;
    const char *data;
    const char *log_level;
    const char *tls_cert;
    const char *tls_key;
    uint64_t shutdown_grace_ms;
    uint64_t max_header_bytes;
    int64_t max_header_count;
    uint64_t max_url_bytes;
    uint64_t max_body_bytes;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t send_timeout_ms;
    int64_t max_connections;
    const char *provider;
    const char *execd_bin;
    const char *api_key;
    uint64_t ready_timeout_ms;
    uint64_t health_interval_ms;
    int64_t max_sandboxes;
    uint64_t max_sandbox_timeout_ms;
    uint64_t failed_ttl_ms;
    uint64_t process_log_bytes;
    int64_t max_processes;
    uint64_t sub_lag_soft;
    uint64_t sub_lag_soft_ms;
    uint64_t sub_lag_hard;
    uint64_t sub_send_timeout_ms;
    uint64_t sub_sndbuf;
    uint64_t sse_heartbeat_ms;
    uint64_t origin_pause;
    const char *exact_output;
    const char *durable;
    uint64_t log_segment_bytes;
    uint64_t log_process_bytes;
    uint64_t log_total_bytes;
    uint64_t log_max_age_ms;
    uint64_t log_flush_ms;
} serve_config_t;

#define OPT(n, e, t, f, d, lo, hi, mv, h) {n, e, t, offsetof(serve_config_t, f), d, lo, hi, mv, h}
static const sg_opt_t serve_opts[] = {
    OPT("listen", "SANDGATE_LISTEN", SG_OPT_STRING, listen, "127.0.0.1:8080", 0, 0, "ADDR",
        "address to serve on: host:port, [v6]:port or unix:/path"),
    OPT("data", "SANDGATE_DATA", SG_OPT_STRING, data, "sandgate-data", 0, 0, "DIR",
        "data directory (created if missing)"),
    OPT("log-level", "SANDGATE_LOG_LEVEL", SG_OPT_STRING, log_level, "info", 0, 0, "LEVEL",
        "debug, info, warn or error"),
    OPT("tls-cert", "SANDGATE_TLS_CERT", SG_OPT_STRING, tls_cert, NULL, 0, 0, "FILE",
        "serve HTTPS with this PEM certificate chain (needs --tls-key)"),
    OPT("tls-key", "SANDGATE_TLS_KEY", SG_OPT_STRING, tls_key, NULL, 0, 0, "FILE",
        "PEM private key for --tls-cert"),
    OPT("shutdown-grace", "SANDGATE_SHUTDOWN_GRACE", SG_OPT_DURATION, shutdown_grace_ms, "10s", 0,
        0, NULL, "on SIGTERM/SIGINT, how long requests in flight may finish"),
    OPT("max-header-bytes", "SANDGATE_MAX_HEADER_BYTES", SG_OPT_SIZE, max_header_bytes, "16K",
        1024, 1 << 20, NULL, "request line + headers bound (431 past it)"),
    OPT("max-header-count", "SANDGATE_MAX_HEADER_COUNT", SG_OPT_INT, max_header_count, "100", 1,
        10000, NULL, "header fields per request (431 past it)"),
    OPT("max-url-bytes", "SANDGATE_MAX_URL_BYTES", SG_OPT_SIZE, max_url_bytes, "8K", 256,
        1 << 20, NULL, "request target length (414 past it)"),
    OPT("max-body-bytes", "SANDGATE_MAX_BODY_BYTES", SG_OPT_SIZE, max_body_bytes, "1G", 0, 0,
        NULL, "request body bound, 0 = none (413 past it)"),
    OPT("header-timeout", "SANDGATE_HEADER_TIMEOUT", SG_OPT_DURATION, header_timeout_ms, "10s",
        0, 0, NULL, "time to receive a request head (408 past it)"),
    OPT("body-timeout", "SANDGATE_BODY_TIMEOUT", SG_OPT_DURATION, body_timeout_ms, "30s", 0, 0,
        NULL, "request body inactivity (408 past it)"),
    OPT("idle-timeout", "SANDGATE_IDLE_TIMEOUT", SG_OPT_DURATION, idle_timeout_ms, "60s", 0, 0,
        NULL, "idle keep-alive connections are closed after this"),
    OPT("send-timeout", "SANDGATE_SEND_TIMEOUT", SG_OPT_DURATION, send_timeout_ms, "60s", 0, 0,
        NULL, "a write that makes no progress this long closes the connection"),
    OPT("max-connections", "SANDGATE_MAX_CONNECTIONS", SG_OPT_INT, max_connections, "10000", 1,
        1000000, NULL, "concurrent connections (503 past it)"),
    OPT("provider", "SANDGATE_PROVIDER", SG_OPT_STRING, provider, "local", 0, 0, "NAME",
        "sandbox backend: local (bubblewrap on this host) or none (API without sandboxes)"),
    OPT("execd-bin", "SANDGATE_EXECD_BIN", SG_OPT_STRING, execd_bin, NULL, 0, 0, "FILE",
        "sandgate-execd to run in local sandboxes (default: next to this binary)"),
    OPT("api-key", "SANDGATE_API_KEY", SG_OPT_STRING, api_key, NULL, 0, 0, "KEY",
        "require OPEN-SANDBOX-API-KEY on the lifecycle API (not on /health or the proxy)"),
    OPT("ready-timeout", "SANDGATE_READY_TIMEOUT", SG_OPT_DURATION, ready_timeout_ms, "60s", 100,
        SG_OPT_NO_MAX, NULL, "a new sandbox whose execd does not answer /ping by then becomes Failed"),
    OPT("health-interval", "SANDGATE_HEALTH_INTERVAL", SG_OPT_DURATION, health_interval_ms,
        "10s", 0, 0, NULL, "ping running sandboxes' execd this often (jittered), 0 = never"),
    OPT("max-sandboxes", "SANDGATE_MAX_SANDBOXES", SG_OPT_INT, max_sandboxes, "100", 1, 1000000,
        NULL, "sandboxes per tenant (429 past it)"),
    OPT("max-sandbox-timeout", "SANDGATE_MAX_SANDBOX_TIMEOUT", SG_OPT_DURATION,
        max_sandbox_timeout_ms, "0", 0, 0, NULL, "largest `timeout` a create may ask, 0 = any"),
    OPT("failed-ttl", "SANDGATE_FAILED_TTL", SG_OPT_DURATION, failed_ttl_ms, "1h", 0, 0, NULL,
        "Failed sandboxes' records are removed after this, 0 = kept until deleted"),
    OPT("process-log-bytes", "SANDGATE_PROCESS_LOG_BYTES", SG_OPT_SIZE, process_log_bytes, "4M",
        4096, 1ull << 34, NULL,
        "events each process keeps in memory; older ones are dropped (readers get a gap)"),
    OPT("max-processes", "SANDGATE_MAX_PROCESSES", SG_OPT_INT, max_processes, "256", 1, 100000,
        NULL, "processes kept per sandbox (the oldest finished one is dropped first)"),
    OPT("sub-lag-soft", "SANDGATE_SUB_LAG_SOFT", SG_OPT_SIZE, sub_lag_soft, "2M", 0, 0, NULL,
        "a stream subscriber this far behind for --sub-lag-soft-time is disconnected"),
    OPT("sub-lag-soft-time", "SANDGATE_SUB_LAG_SOFT_TIME", SG_OPT_DURATION, sub_lag_soft_ms,
        "10s", 1, SG_OPT_NO_MAX, NULL, "how long a subscriber may stay past --sub-lag-soft"),
    OPT("sub-lag-hard", "SANDGATE_SUB_LAG_HARD", SG_OPT_SIZE, sub_lag_hard, "16M", 0, 0, NULL,
        "a stream subscriber this far behind is disconnected at once"),
    OPT("sub-send-timeout", "SANDGATE_SUB_SEND_TIMEOUT", SG_OPT_DURATION, sub_send_timeout_ms,
        "30s", 1, SG_OPT_NO_MAX, NULL, "a stream subscriber whose write makes no progress this long is cut"),
    OPT("sub-sndbuf", "SANDGATE_SUB_SNDBUF", SG_OPT_SIZE, sub_sndbuf, "64K", 0, 1u << 30, NULL,
        "kernel send buffer of stream subscriber sockets, 0 = kernel default"),
    OPT("sse-heartbeat", "SANDGATE_SSE_HEARTBEAT", SG_OPT_DURATION, sse_heartbeat_ms, "15s", 100,
        SG_OPT_NO_MAX, NULL, "comment heartbeat on idle process streams"),
    OPT("durable", "SANDGATE_DURABLE", SG_OPT_STRING, durable, "on", 0, 0, "on|off",
        "keep records in <data>/sandgate.db and reconcile them at start (off: in memory only, "
        "a restart forgets every sandbox; for measuring what durability costs)"),
    OPT("log-segment-bytes", "SANDGATE_LOG_SEGMENT_BYTES", SG_OPT_SIZE, log_segment_bytes, "8M",
        4096, 1ull << 34, NULL, "processes' output logs on disk go into segment files this big"),
    OPT("log-process-bytes", "SANDGATE_LOG_PROCESS_BYTES", SG_OPT_SIZE, log_process_bytes, "64M",
        4096, 1ull << 50, NULL,
        "output log kept on disk per process; its oldest segments go first (readers get a gap)"),
    OPT("log-total-bytes", "SANDGATE_LOG_TOTAL_BYTES", SG_OPT_SIZE, log_total_bytes, "1G", 4096,
        1ull << 50, NULL, "all output logs on disk; the oldest finished processes' output goes first"),
    OPT("log-max-age", "SANDGATE_LOG_MAX_AGE", SG_OPT_DURATION, log_max_age_ms, "168h", 0, 0, NULL,
        "a finished process's output log is removed this long after it ended, 0 = never"),
    OPT("log-flush", "SANDGATE_LOG_FLUSH", SG_OPT_DURATION, log_flush_ms, "10ms", 0, 1000, NULL,
        "longest an output event waits before it is written to its log file (batched writes; "
        "events not yet written stay in memory)"),
    OPT("exact-output", "SANDGATE_EXACT_OUTPUT", SG_OPT_STRING, exact_output, "on", 0, 0,
        "on|off", "capture commands' exact bytes (execd's raw events; off: /output is rebuilt "
        "from the lines, cheaper for bulk output)"),
    OPT("origin-pause", "SANDGATE_ORIGIN_PAUSE", SG_OPT_SIZE, origin_pause, "1M", 0, 0, NULL,
        "the client that started a command this far behind pauses the command (at most half "
        "of --process-log-bytes; 0 = never: it is cut like any reader)"),
};
#undef OPT

typedef struct gateway {
    uv_loop_t *loop;
    serve_config_t cfg;
    sg_http_server_t *http;
    sg_tls_ctx_t *tls;
    sg_api_t *api;
    sg_gwmetrics_t *metrics;
    sg_image_registry_t *registry;
    const char *images[64]; /* --image NAME=DIR|host */
    size_t n_images;
    sg_api_config_t api_cfg;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    int stopping;
    sg_store_t *store;
    int store_done; /* the open / load in progress has called back */
    int store_err;
    char store_msg[512];
    size_t restored;
} gateway_t;

static void on_request(sg_http_req_t *req, void *data)
{
    gateway_t *g = data;
    const char *method = sg_http_req_method(req);
    const char *path = sg_http_req_path(req);

    if (strcmp(path, "/health") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            sg_http_respond_error(req, 405, "METHOD_NOT_ALLOWED", "use GET /health");
            return;
        }
        static const char body[] = "{\"status\":\"healthy\"}";
        sg_hdrs_t h;
        sg_hdrs_init(&h);
        sg_hdrs_addz(&h, "Content-Type", "application/json");
        sg_http_respond(req, 200, &h, body, sizeof(body) - 1);
        sg_hdrs_free(&h);
        return;
    }
    if (strcmp(path, "/metrics") == 0 && g->metrics) {
        sg_gwmetrics_respond(g->metrics, req, g->api);
        return;
    }
    if (g->api && sg_api_route(g->api, req)) return;
    sg_http_respond_error(req, 404, "NOT_FOUND", "no such route");
}

static void on_access(const sg_http_access_t *e, void *data)
{
    (void)data;
    sg_log_request_t r = {
        .request_id = e->request_id,
        .method = e->method,
        .path = e->path,
        .status = e->status,
        .bytes_in = e->bytes_in,
        .bytes_out = e->bytes_out,
        .duration_ms = (double)e->duration_us / 1000.0,
    };
    sg_log_request(&r);
}

static void on_store_opened(void *ud, int err, const char *msg)
{
    gateway_t *g = ud;
    g->store_done = 1;
    g->store_err = err;
    snprintf(g->store_msg, sizeof(g->store_msg), "%s", msg ? msg : "");
}

static void on_store_loaded(void *ud, int err, const char *msg, const sg_store_snapshot_t *snap)
{
    gateway_t *g = ud;
    g->store_done = 1;
    g->store_err = err;
    snprintf(g->store_msg, sizeof(g->store_msg), "%s", msg ? msg : "");
    if (err == 0) g->restored = sg_api_restore(g->api, snap);
}

/* Runs the loop until the store's pending call answered (the worker thread does the disk
 * work; the loop only waits for its completion). */
static int store_wait(gateway_t *g)
{
    while (!g->store_done)
        uv_run(g->loop, UV_RUN_ONCE);
    g->store_done = 0;
    return g->store_err;
}

static void on_api_closed(void *data)
{
    gateway_t *g = data;
    g->api = NULL;
    if (g->metrics) sg_gwmetrics_close(g->metrics, NULL, NULL);
    g->metrics = NULL;
    if (g->store) sg_store_close(g->store, NULL, NULL); /* after the api's last write */
    g->store = NULL;
    uv_close((uv_handle_t *)&g->sigterm, NULL);
    uv_close((uv_handle_t *)&g->sigint, NULL);
}

static void on_server_closed(sg_http_server_t *srv, void *data)
{
    gateway_t *g = data;
    (void)srv;
    g->http = NULL;
    if (g->api) sg_api_close(g->api, on_api_closed, g);
    else on_api_closed(g);
}

static void on_drained(sg_http_server_t *srv, void *data)
{
    gateway_t *g = data;
    sg_log(SG_LOG_INFO, "shutdown complete");
    sg_http_server_close(srv, on_server_closed);
    (void)g;
}

static void on_signal(uv_signal_t *h, int signum)
{
    gateway_t *g = h->data;
    if (g->stopping) {
        sg_log(SG_LOG_WARN, "second signal %d: stopping now", signum);
        if (g->http) sg_http_server_close(g->http, on_server_closed);
        g->http = NULL;
        return;
    }
    g->stopping = 1;
    sg_log(SG_LOG_INFO, "signal %d: graceful shutdown (grace %llu ms)", signum,
           (unsigned long long)g->cfg.shutdown_grace_ms);
    sg_http_server_shutdown(g->http, g->cfg.shutdown_grace_ms, on_drained);
}

/* Every subscriber is a socket: take the file-descriptor allowance the administrator granted
 * (the hard limit, as nginx's worker_rlimit_nofile would), capped so sandboxes, which inherit
 * it, keep a conventional value. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 1048576 ? 1048576 : rl.rlim_max;
    if (rl.rlim_cur >= want) return;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
        char v[32];
        snprintf(v, sizeof(v), "%llu", (unsigned long long)want);
        sg_log_kv(SG_LOG_DEBUG, "raised the open file limit", "nofile", v, NULL);
    }
}

static int make_dir(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf)) return SG_EINVAL;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0700) < 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST) return -errno;
    return 0;
}

/* Takes --image and --allow-host-volumes (repeatable) out of argv into g; 0 or 2 (usage). */
static int take_repeatable(gateway_t *g, int *argc, char **argv)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            while (i < *argc) argv[out++] = argv[i++];
            break;
        }
        const char *val = NULL;
        int is_image = 0;
        size_t n = 0;
        if (strncmp(a, "--image", 7) == 0 && (a[7] == '\0' || a[7] == '=')) is_image = 1, n = 7;
        else if (strncmp(a, "--allow-host-volumes", 20) == 0 && (a[20] == '\0' || a[20] == '=')) n = 20;
        if (!n) {
            argv[out++] = argv[i];
            continue;
        }
        if (a[n] == '=') val = a + n + 1;
        else if (i + 1 < *argc) val = argv[++i];
        else {
            fprintf(stderr, "sandgate serve: option '%s' needs a value\n", a);
            return 2;
        }
        if (is_image) {
            const char *eq = strchr(val, '=');
            if (!eq || eq == val || !eq[1] || (strcmp(eq + 1, "host") != 0 && eq[1] != '/')) {
                fprintf(stderr,
                        "sandgate serve: --image '%s': expected NAME=DIR (an absolute rootfs "
                        "directory) or NAME=host\n",
                        val);
                return 2;
            }
            if (g->n_images == SG_ARRAY_SIZE(g->images)) {
                fprintf(stderr, "sandgate serve: at most %zu --image flags\n", SG_ARRAY_SIZE(g->images));
                return 2;
            }
            g->images[g->n_images++] = val;
        } else {
            if (val[0] != '/') {
                fprintf(stderr, "sandgate serve: --allow-host-volumes '%s' must be an absolute path\n", val);
                return 2;
            }
            if (g->api_cfg.n_host_prefixes == SG_API_MAX_HOST_PREFIXES) {
                fprintf(stderr, "sandgate serve: at most %d --allow-host-volumes flags\n", SG_API_MAX_HOST_PREFIXES);
                return 2;
            }
            g->api_cfg.host_prefixes[g->api_cfg.n_host_prefixes++] = val;
        }
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

int sg_gateway_serve(int argc, char **argv)
{
    static gateway_t g; /* lives for the whole process; signal handles point at it */
    char err[512];
    memset(&g, 0, sizeof(g));
    sg_api_config_init(&g.api_cfg);

    int r = take_repeatable(&g, &argc, argv);
    if (r) return r;
    r = sg_config_parse(serve_opts, SG_ARRAY_SIZE(serve_opts), &g.cfg, argc, argv, err,
                        sizeof(err));
    if (r == SG_CONFIG_HELP) {
        char *help = sg_config_help(serve_opts, SG_ARRAY_SIZE(serve_opts),
                                    "sandgate serve [options]\n\n"
                                    "Runs the gateway on one event loop until SIGTERM/SIGINT.\n\n"
                                    "Repeatable:\n"
                                    "  --image NAME=DIR|host       image NAME (as in image.uri) is the "
                                    "rootfs DIR,\n"
                                    "                              or the host's / read-only\n"
                                    "  --allow-host-volumes PREFIX host volumes may mount paths under "
                                    "PREFIX");
        fputs(help, stdout);
        free(help);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "sandgate serve: %s\n", err);
        return 2;
    }
    sg_log_level_t level;
    if (sg_log_level_parse(g.cfg.log_level, &level) < 0) {
        fprintf(stderr, "sandgate serve: --log-level: '%s' is not debug, info, warn or error\n",
                g.cfg.log_level);
        return 2;
    }
    sg_log_set_level(level);
    if (strcmp(g.cfg.durable, "on") != 0 && strcmp(g.cfg.durable, "off") != 0) {
        fprintf(stderr, "sandgate serve: --durable must be on or off, not '%s'\n", g.cfg.durable);
        return 2;
    }
    if (strcmp(g.cfg.exact_output, "on") != 0 && strcmp(g.cfg.exact_output, "off") != 0) {
        fprintf(stderr, "sandgate serve: --exact-output must be on or off, not '%s'\n",
                g.cfg.exact_output);
        return 2;
    }
    raise_nofile();
    if ((g.cfg.tls_cert == NULL) != (g.cfg.tls_key == NULL)) {
        fprintf(stderr, "sandgate serve: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if (strcmp(g.cfg.provider, "none") != 0 && strcmp(g.cfg.provider, "local") != 0) {
        fprintf(stderr, "sandgate serve: --provider '%s': expected local or none\n", g.cfg.provider);
        return 2;
    }
    g.registry = sg_image_registry_new();
    for (size_t i = 0; i < g.n_images; i++) {
        if (sg_image_registry_add(g.registry, g.images[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "sandgate serve: --image %s: %s\n", g.images[i], err);
            sg_image_registry_free(g.registry);
            return 2;
        }
    }
    if ((r = make_dir(g.cfg.data)) < 0) {
        fprintf(stderr, "sandgate serve: cannot create data directory %s: %s\n", g.cfg.data,
                sg_strerror(r));
        goto fail;
    }

    g.loop = uv_default_loop();
    if (g.cfg.tls_cert) {
        r = sg_tls_ctx_new_server(&g.tls, g.cfg.tls_cert, g.cfg.tls_key, err, sizeof(err));
        if (r < 0) {
            fprintf(stderr, "sandgate serve: TLS: %s\n", err);
            goto fail;
        }
    }

    /* The durable store first: a foreign or corrupt file stops the start, untouched. */
    if (strcmp(g.cfg.durable, "on") != 0) {
        /* in memory only */
    } else if ((r = sg_store_open(g.loop, g.cfg.data, NULL, on_store_opened, &g, &g.store)) < 0) {
        fprintf(stderr, "sandgate serve: cannot start the store: %s\n", sg_strerror(r));
        goto fail;
    }
    if (g.store && store_wait(&g) < 0) {
        fprintf(stderr, "sandgate serve: %s\n", g.store_msg);
        sg_store_close(g.store, NULL, NULL);
        uv_run(g.loop, UV_RUN_DEFAULT);
        goto fail;
    }

    sg_http_server_config_t hc;
    sg_http_server_config_init(&hc);
    hc.limits.max_header_bytes = g.cfg.max_header_bytes;
    hc.limits.max_header_count = (size_t)g.cfg.max_header_count;
    hc.limits.max_url_bytes = g.cfg.max_url_bytes;
    hc.limits.max_body_bytes = g.cfg.max_body_bytes;
    hc.limits.header_timeout_ms = g.cfg.header_timeout_ms;
    hc.limits.body_timeout_ms = g.cfg.body_timeout_ms;
    hc.limits.idle_timeout_ms = g.cfg.idle_timeout_ms;
    hc.limits.send_timeout_ms = g.cfg.send_timeout_ms;
    hc.limits.max_connections = (size_t)g.cfg.max_connections;
    hc.tls = g.tls;
    hc.handler = on_request;
    hc.access_log = on_access;
    hc.data = &g;
    if ((r = sg_http_server_new(g.loop, &hc, &g.http)) < 0) {
        fprintf(stderr, "sandgate serve: %s\n", sg_strerror(r));
        goto fail;
    }

    g.api_cfg.api_key = g.cfg.api_key;
    g.api_cfg.ready_timeout_ms = g.cfg.ready_timeout_ms;
    g.api_cfg.health_interval_ms = g.cfg.health_interval_ms;
    g.api_cfg.max_sandboxes = g.cfg.max_sandboxes;
    g.api_cfg.max_timeout_s = g.cfg.max_sandbox_timeout_ms / 1000;
    g.api_cfg.failed_ttl_ms = g.cfg.failed_ttl_ms;
    g.api_cfg.stream.log_bytes = g.cfg.process_log_bytes;
    g.api_cfg.stream.max_processes = (unsigned)g.cfg.max_processes;
    g.api_cfg.stream.lag_soft = g.cfg.sub_lag_soft;
    g.api_cfg.stream.lag_soft_ms = g.cfg.sub_lag_soft_ms;
    g.api_cfg.stream.lag_hard = g.cfg.sub_lag_hard;
    g.api_cfg.stream.send_timeout_ms = g.cfg.sub_send_timeout_ms;
    g.api_cfg.stream.sub_sndbuf = (int)g.cfg.sub_sndbuf;
    g.api_cfg.stream.heartbeat_ms = g.cfg.sse_heartbeat_ms;
    g.api_cfg.stream.origin_pause = g.cfg.origin_pause;
    g.api_cfg.stream.disk_segment_bytes = g.cfg.log_segment_bytes;
    g.api_cfg.stream.disk_process_bytes = g.cfg.log_process_bytes;
    g.api_cfg.stream.disk_total_bytes = g.cfg.log_total_bytes;
    g.api_cfg.stream.disk_max_age_ms = g.cfg.log_max_age_ms;
    g.api_cfg.stream.disk_flush_ms = (uint32_t)g.cfg.log_flush_ms;
    g.api_cfg.store = g.store;
    g.api_cfg.data_dir = g.cfg.data;
    g.api_cfg.provider_name = g.cfg.provider;
    g.api_cfg.stream.exact_output = strcmp(g.cfg.exact_output, "on") == 0;
    g.api_cfg.tls = g.tls != NULL;
    g.api_cfg.listen = g.cfg.listen;
    sg_provider_t *prov = NULL;
    if (strcmp(g.cfg.provider, "local") == 0) {
        char execd[4096];
        if (g.cfg.execd_bin) {
            snprintf(execd, sizeof(execd), "%s", g.cfg.execd_bin);
        } else {
            size_t n = sizeof(execd);
            if (uv_exepath(execd, &n) < 0) snprintf(execd, sizeof(execd), "sandgate");
            char *slash = strrchr(execd, '/');
            size_t dir = slash ? (size_t)(slash - execd) : 0;
            snprintf(execd + dir, sizeof(execd) - dir, "%ssandgate-execd", slash ? "/" : "");
        }
        sg_local_config_t lc;
        memset(&lc, 0, sizeof(lc));
        lc.data_dir = g.cfg.data;
        lc.execd = execd;
        lc.images = g.registry;
        lc.volume_prefixes = g.api_cfg.host_prefixes;
        lc.n_volume_prefixes = g.api_cfg.n_host_prefixes;
        if ((r = sg_local_provider_new(g.loop, &lc, &prov, err, sizeof(err))) < 0) {
            fprintf(stderr, "sandgate serve: local provider: %s (see `sandgate doctor`; "
                            "--provider none serves the API without sandboxes)\n", err);
            sg_http_server_close(g.http, NULL);
            uv_run(g.loop, UV_RUN_DEFAULT);
            goto fail;
        }
    }
    if ((r = sg_api_new(g.loop, &g.api_cfg, prov, &g.api)) < 0) {
        fprintf(stderr, "sandgate serve: %s\n", sg_strerror(r));
        return 1;
    }
    /* Restart: the stored records, reconciled with what still runs, before the first request. */
    if (g.store && (sg_store_load_all(g.store, on_store_loaded, &g) < 0 || store_wait(&g) < 0)) {
        fprintf(stderr, "sandgate serve: cannot load the store: %s\n", g.store_msg);
        return 1;
    }
    /* Restored process logs are read back (thread pool) before the first request. */
    while (sg_api_loading(g.api))
        uv_run(g.loop, UV_RUN_ONCE);
    if (g.restored) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", g.restored);
        sg_log_kv(SG_LOG_INFO, "restored sandboxes from the store", "count", n, NULL);
    }
    if ((r = sg_http_server_listen(g.http, g.cfg.listen, err, sizeof(err))) < 0) {
        fprintf(stderr, "sandgate serve: cannot listen on %s: %s\n", g.cfg.listen, err);
        sg_http_server_close(g.http, NULL);
        uv_run(g.loop, UV_RUN_DEFAULT);
        return 1;
    }

    sg_gwmetrics_config_t mc;
    sg_gwmetrics_config_init(&mc);
    mc.api_key = g.cfg.api_key;
    if ((r = sg_gwmetrics_new(g.loop, &mc, &g.metrics)) < 0)
        sg_log(SG_LOG_WARN, "GET /metrics disabled: %s", sg_strerror(r));

    uv_signal_init(g.loop, &g.sigterm);
    uv_signal_init(g.loop, &g.sigint);
    g.sigterm.data = g.sigint.data = &g;
    uv_signal_start(&g.sigterm, on_signal, SIGTERM);
    uv_signal_start(&g.sigint, on_signal, SIGINT);

    sg_log_kv(SG_LOG_INFO, "listening", "addr", g.cfg.listen, "data", g.cfg.data, "tls",
              g.tls ? "on" : "off", "provider", g.cfg.provider, "version", SG_VERSION, NULL);
    uv_run(g.loop, UV_RUN_DEFAULT);
    r = uv_loop_close(g.loop);
    if (r < 0) sg_log(SG_LOG_WARN, "loop closed with handles open: %s", sg_strerror(r));
    sg_tls_ctx_free(g.tls);
    sg_image_registry_free(g.registry); /* after the provider that borrowed it */
    return 0;
fail:
    sg_tls_ctx_free(g.tls);
    sg_image_registry_free(g.registry);
    return 1;
}
