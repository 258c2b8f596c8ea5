/* execd.c: the agent: flags, listener, access token, routing, signals, shutdown.
 *
 * Shutdown (SIGTERM/SIGINT): metrics watchers end at once (they never finish by themselves),
 * the HTTP server stops accepting and lets requests in flight finish for --shutdown-grace,
 * then closes; then the runner closes (SIGKILL to every command group still alive), then the
 * command module releases what it still holds. A second signal cuts the grace short. */
#include "execd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"
#include "sandgate/config.h"
#include "sandgate/log.h"

#define OPT(n, e, t, f, d, lo, hi, mv, h)                                                          \
    {                                                                                              \
        n, e, t, offsetof(sg_execd_config_t, f), d, lo, hi, mv, h                                  \
    }
static const sg_opt_t execd_opts[] = {
    OPT("listen", "EXECD_LISTEN", SG_OPT_STRING, listen, "127.0.0.1:44772", 0, 0, "ADDR",
        "host:port or unix:/path"),
    OPT("access-token", "EXECD_ACCESS_TOKEN", SG_OPT_STRING, access_token, NULL, 0, 0, "TOKEN",
        "require X-EXECD-ACCESS-TOKEN on every request"),
    OPT("log-dir", "EXECD_LOG_DIR", SG_OPT_STRING, log_dir, NULL, 0, 0, "DIR",
        "command logs and session state (default $TMPDIR or /tmp)"),
    OPT("log-level", "EXECD_LOG_LEVEL", SG_OPT_STRING, log_level, "info", 0, 0, "LEVEL",
        "debug, info, warn or error"),
    OPT("max-log-bytes", "EXECD_MAX_LOG_BYTES", SG_OPT_SIZE, max_log_bytes, "64M", 1, SG_OPT_NO_MAX,
        NULL, "output kept per logged command (background, or X-Sandgate-Keep-Log)"),
    OPT("max-log-index", "EXECD_MAX_LOG_INDEX", SG_OPT_INT, max_log_index, "16384", 1,
        SG_OPT_NO_MAX, NULL,
        "stdout/stderr switches remembered per command log (re-attached streams)"),
    OPT("max-line-bytes", "EXECD_MAX_LINE_BYTES", SG_OPT_SIZE, max_line_bytes, "64K", 1024,
        64 << 20, NULL, "a longer output line is sent as several events"),
    OPT("record-ttl", "EXECD_RECORD_TTL", SG_OPT_DURATION, record_ttl_ms, "1h", 1000, SG_OPT_NO_MAX,
        NULL, "finished command records and their logs are removed after this"),
    OPT("max-upload-bytes", "EXECD_MAX_UPLOAD_BYTES", SG_OPT_SIZE, max_upload_bytes, "0", 0, 0,
        NULL, "bound on one /files/upload body, 0 = none"),
    OPT("shutdown-grace", "EXECD_SHUTDOWN_GRACE", SG_OPT_DURATION, shutdown_grace_ms, "5s", 0, 0,
        NULL, "on SIGTERM/SIGINT, how long requests in flight may finish"),
    OPT("max-walk-entries", "EXECD_MAX_WALK_ENTRIES", SG_OPT_INT, max_walk_entries, "200000", 1,
        SG_OPT_NO_MAX, NULL,
        "entries one /files/search or /directories/list may visit (500 past it)"),
    OPT("max-stream-buffer", "EXECD_MAX_STREAM_BUFFER", SG_OPT_SIZE, max_stream_buffer, "16M",
        64 << 10, SG_OPT_NO_MAX, NULL,
        "output queued for one slow SSE client before it is dropped (the command goes on)"),
    OPT("envs-file", "EXECD_ENVS", SG_OPT_STRING, envs_file, NULL, 0, 0, "FILE",
        "KEY=VALUE lines added to every command's environment (read at start)"),
    OPT("shell", "EXECD_SHELL", SG_OPT_STRING, shell, NULL, 0, 0, "PATH",
        "shell run as `SHELL -c COMMAND` (default: bash from PATH, else sh)"),
    OPT("port-file", "EXECD_PORT_FILE", SG_OPT_STRING, port_file, NULL, 0, 0, "FILE",
        "write the bound TCP port here once listening (for --listen host:0)"),
};
#undef OPT

static sg_execd_t g_execd;
static uv_signal_t g_sigterm, g_sigint;
static int g_stopping;

static void on_request(sg_http_req_t *req, void *data)
{
    sg_execd_t *x = data;
    const char *token = x->cfg.access_token;
    if (token && *token) {
        const char *got = sg_http_req_header(req, "X-EXECD-ACCESS-TOKEN");
        if (!got || strcmp(got, token) != 0) {
            /* The Go agent's shape here is {"error": ...}, not {code,message}. */
            static const char body[] =
                "{\"error\":\"Unauthorized: invalid or missing header X-EXECD-ACCESS-TOKEN\"}";
            sg_hdrs_t h;
            sg_hdrs_init(&h);
            sg_hdrs_addz(&h, "Content-Type", "application/json; charset=utf-8");
            sg_http_respond(req, 401, &h, body, sizeof(body) - 1);
            sg_hdrs_free(&h);
            return;
        }
    }
    if (sg_execd_route_commands(x, req)) return;
    if (sg_execd_route_files(x, req)) return;
    if (sg_execd_route_proxy(x, req)) return;
    if (sg_execd_route_metrics(x, req)) return;
    sg_http_respond_error(req, 404, "NOT_FOUND", "no such route");
}

static void on_access(const sg_http_access_t *e, void *data)
{
    (void)data;
    sg_log_request_t r = {e->request_id,
                          e->method,
                          e->path,
                          e->status,
                          e->bytes_in,
                          e->bytes_out,
                          (double)e->duration_us / 1000.0};
    sg_log_request(&r);
}

/* EXECD_ENVS file: KEY=VALUE per line; blank lines, '#' comments and lines without '=' are
 * skipped, a trailing CR is dropped. Read once at start (a blocking read before the loop). */
static sg_run_env_t *g_envs;
static size_t g_nenvs;
static char *g_envs_text;

static int load_envs(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) {
            sg_log_kv(SG_LOG_WARN, "envs file not found, ignored", "path", path, NULL);
            return 0;
        }
        fprintf(stderr, "sandgate-execd: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 0, len = 0;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            g_envs_text = sg_xrealloc(g_envs_text, cap);
        }
        memcpy(g_envs_text + len, buf, n);
        len += n;
    }
    fclose(f);
    if (!g_envs_text) return 0;
    g_envs_text[len] = '\0';
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += g_envs_text[i] == '\n';
    g_envs = sg_xcalloc(lines, sizeof(*g_envs));
    char *save = NULL;
    for (char *ln = strtok_r(g_envs_text, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        size_t l = strlen(ln);
        if (l && ln[l - 1] == '\r') ln[--l] = '\0';
        while (*ln == ' ' || *ln == '\t')
            ln++;
        char *eq = strchr(ln, '=');
        if (!*ln || *ln == '#' || !eq || eq == ln) continue;
        *eq = '\0';
        g_envs[g_nenvs].key = ln;
        g_envs[g_nenvs].value = eq + 1;
        g_nenvs++;
    }
    return 0;
}

static void on_client_closed(void *data)
{
    (void)data;
}

static void on_runner_closed(void *data)
{
    sg_execd_commands_stop(data);
}

static void on_server_closed(sg_http_server_t *srv, void *data)
{
    sg_execd_t *x = data;
    (void)srv;
    x->http = NULL;
    sg_execd_metrics_stop(x);
    sg_execd_files_stop(x);
    sg_http_client_close(x->client, on_client_closed, NULL);
    sg_runner_close(x->runner, on_runner_closed, x);
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
}

static void on_drained(sg_http_server_t *srv, void *data)
{
    sg_http_server_close(srv, on_server_closed);
    (void)data;
}

static void on_signal(uv_signal_t *h, int signum)
{
    sg_execd_t *x = h->data;
    if (g_stopping) {
        if (x->http) sg_http_server_close(x->http, on_server_closed);
        return;
    }
    g_stopping = 1;
    sg_log(SG_LOG_INFO, "signal %d: graceful shutdown", signum);
    sg_execd_metrics_stop(x);
    sg_http_server_shutdown(x->http, x->cfg.shutdown_grace_ms, on_drained);
}

int sg_execd_main(int argc, char **argv);
int sg_execd_main(int argc, char **argv)
{
    sg_execd_t *x = &g_execd;
    char err[512];
    int r = sg_config_parse(execd_opts, SG_ARRAY_SIZE(execd_opts), &x->cfg, argc, argv, err,
                            sizeof(err));
    if (r == SG_CONFIG_HELP) {
        char *help = sg_config_help(execd_opts, SG_ARRAY_SIZE(execd_opts),
                                    "sandgate-execd [options]\n\n"
                                    "The in-sandbox agent: OpenSandbox's execd API on one loop.\n"
                                    "Routes: /ping, /command (SSE), /command/status/{id},\n"
                                    "/command/{id}/logs, /command/{id}/raw, /session...,\n"
                                    "/files..., /directories..., /proxy/{port}/..., /metrics,\n"
                                    "/metrics/watch. SIGTERM/SIGINT: graceful shutdown.\n"
                                    "See docs/execd.md.");
        fputs(help, stdout);
        free(help);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "sandgate-execd: %s\n", err);
        return 2;
    }
    sg_log_level_t level;
    if (sg_log_level_parse(x->cfg.log_level, &level) < 0) {
        fprintf(stderr, "sandgate-execd: bad --log-level '%s'\n", x->cfg.log_level);
        return 2;
    }
    sg_log_set_level(level);

    x->loop = uv_default_loop();
    x->started_ms = sg_now_ms();

    sg_runner_cfg_t rc;
    memset(&rc, 0, sizeof(rc));
    rc.log_dir = x->cfg.log_dir;
    rc.shell = x->cfg.shell && *x->cfg.shell ? x->cfg.shell : NULL;
    rc.log_cap = x->cfg.max_log_bytes;
    rc.log_index_max = (size_t)x->cfg.max_log_index;
    rc.max_line = (size_t)x->cfg.max_line_bytes;
    rc.record_ttl_ms = x->cfg.record_ttl_ms;
    if (x->cfg.envs_file && *x->cfg.envs_file && load_envs(x->cfg.envs_file) < 0) return 1;
    rc.extra_env = g_envs;
    rc.n_extra_env = g_nenvs;
    if ((r = sg_runner_open(x->loop, &rc, &x->runner)) < 0) {
        fprintf(stderr, "sandgate-execd: cannot start the command engine: %s\n", sg_strerror(r));
        return 1;
    }
    sg_http_client_config_t cc;
    memset(&cc, 0, sizeof(cc));
    if ((r = sg_http_client_new(x->loop, &cc, &x->client)) < 0) {
        fprintf(stderr, "sandgate-execd: http client: %s\n", sg_strerror(r));
        return 1;
    }

    sg_http_server_config_t hc;
    sg_http_server_config_init(&hc);
    hc.limits.max_body_bytes = x->cfg.max_upload_bytes;
    hc.limits.idle_timeout_ms = 0; /* the gateway keeps pooled connections to execd */
    hc.handler = on_request;
    hc.access_log = on_access;
    hc.data = x;
    if ((r = sg_http_server_new(x->loop, &hc, &x->http)) < 0 ||
        (r = sg_http_server_listen(x->http, x->cfg.listen, err, sizeof(err))) < 0) {
        fprintf(stderr, "sandgate-execd: cannot listen on %s: %s\n", x->cfg.listen,
                r == 0 ? "" : err);
        return 1;
    }
    if (x->cfg.port_file && *x->cfg.port_file) {
        FILE *pf = fopen(x->cfg.port_file, "w");
        if (!pf || fprintf(pf, "%d\n", sg_http_server_port(x->http)) < 0 || fclose(pf) != 0) {
            fprintf(stderr, "sandgate-execd: cannot write %s\n", x->cfg.port_file);
            return 1;
        }
    }
    if ((r = sg_execd_commands_start(x)) < 0 || (r = sg_execd_metrics_start(x)) < 0 ||
        (r = sg_execd_files_start(x)) < 0) {
        fprintf(stderr, "sandgate-execd: start: %s\n", sg_strerror(r));
        return 1;
    }
    uv_signal_init(x->loop, &g_sigterm);
    uv_signal_init(x->loop, &g_sigint);
    g_sigterm.data = g_sigint.data = x;
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_signal, SIGINT);
    sg_log_kv(SG_LOG_INFO, "listening", "addr", x->cfg.listen, "version", SG_VERSION, NULL);

    uv_run(x->loop, UV_RUN_DEFAULT);
    /* Every handle must be gone after a shutdown; anything left is a bug tests should see. */
    int status = 0;
    if ((r = uv_loop_close(x->loop)) < 0) {
        sg_log(SG_LOG_ERROR, "loop closed with handles open: %s", sg_strerror(r));
        status = 3;
    }
    free(g_envs);
    free(g_envs_text);
    return status;
}
