/* serve.c: `sandgate serve` — configuration, the listener, routing, signals, shutdown.
 *
 * Foundation stage: the daemon serves `GET /health` and answers everything else with a JSON
 * error (404 for unknown routes, 501 for the lifecycle routes that later issues fill in). It
 * owns the loop, the HTTP server, the optional TLS context and the signal handles; SIGTERM or
 * SIGINT start a graceful shutdown (stop accepting, let requests finish up to
 * --shutdown-grace), a second signal cuts it short. */
#include "serve.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

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
};
#undef OPT

typedef struct gateway {
    uv_loop_t *loop;
    serve_config_t cfg;
    sg_http_server_t *http;
    sg_tls_ctx_t *tls;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    int stopping;
} gateway_t;

static int is_route(const char *path, const char *route)
{
    /* The OpenSandbox server mounts every route both at the root and under /v1. */
    if (strncmp(path, "/v1", 3) == 0 && (path[3] == '/' || path[3] == '\0')) path += 3;
    size_t n = strlen(route);
    return strncmp(path, route, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static void on_request(sg_http_req_t *req, void *data)
{
    (void)data;
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
    if (is_route(path, "/sandboxes") || is_route(path, "/metrics")) {
        sg_http_respond_error(req, 501, "NOT_IMPLEMENTED",
                              "the sandbox lifecycle API is not available in this build yet");
        return;
    }
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

static void on_server_closed(sg_http_server_t *srv, void *data)
{
    gateway_t *g = data;
    (void)srv;
    g->http = NULL;
    uv_close((uv_handle_t *)&g->sigterm, NULL);
    uv_close((uv_handle_t *)&g->sigint, NULL);
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

int sg_gateway_serve(int argc, char **argv)
{
    static gateway_t g; /* lives for the whole process; signal handles point at it */
    char err[512];
    memset(&g, 0, sizeof(g));

    int r = sg_config_parse(serve_opts, SG_ARRAY_SIZE(serve_opts), &g.cfg, argc, argv, err,
                            sizeof(err));
    if (r == SG_CONFIG_HELP) {
        char *help = sg_config_help(serve_opts, SG_ARRAY_SIZE(serve_opts),
                                    "sandgate serve [options]\n\n"
                                    "Runs the gateway on one event loop until SIGTERM/SIGINT.");
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
    if ((g.cfg.tls_cert == NULL) != (g.cfg.tls_key == NULL)) {
        fprintf(stderr, "sandgate serve: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if ((r = make_dir(g.cfg.data)) < 0) {
        fprintf(stderr, "sandgate serve: cannot create data directory %s: %s\n", g.cfg.data,
                sg_strerror(r));
        return 1;
    }

    g.loop = uv_default_loop();
    if (g.cfg.tls_cert) {
        r = sg_tls_ctx_new_server(&g.tls, g.cfg.tls_cert, g.cfg.tls_key, err, sizeof(err));
        if (r < 0) {
            fprintf(stderr, "sandgate serve: TLS: %s\n", err);
            return 1;
        }
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
        return 1;
    }
    if ((r = sg_http_server_listen(g.http, g.cfg.listen, err, sizeof(err))) < 0) {
        fprintf(stderr, "sandgate serve: cannot listen on %s: %s\n", g.cfg.listen, err);
        sg_http_server_close(g.http, NULL);
        uv_run(g.loop, UV_RUN_DEFAULT);
        return 1;
    }

    uv_signal_init(g.loop, &g.sigterm);
    uv_signal_init(g.loop, &g.sigint);
    g.sigterm.data = g.sigint.data = &g;
    uv_signal_start(&g.sigterm, on_signal, SIGTERM);
    uv_signal_start(&g.sigint, on_signal, SIGINT);

    sg_log_kv(SG_LOG_INFO, "listening", "addr", g.cfg.listen, "data", g.cfg.data, "tls",
              g.tls ? "on" : "off", "version", SG_VERSION, NULL);
    uv_run(g.loop, UV_RUN_DEFAULT);
    r = uv_loop_close(g.loop);
    if (r < 0) sg_log(SG_LOG_WARN, "loop closed with handles open: %s", sg_strerror(r));
    sg_tls_ctx_free(g.tls);
    return 0;
}
