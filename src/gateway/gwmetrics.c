/* gwmetrics.c: GET /metrics (gwmetrics.h). The metric names, types and help texts are all in
 * sg_gwmetrics_render(); docs/operations.md "Metrics" lists the same set. */
#include "gwmetrics.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandgate/common.h"

/* Every field of sg_gw_stats_t is rendered below: a field added there without a line here
 * fails the build instead of going missing from /metrics. */
_Static_assert(sizeof(sg_gw_stats_t) == (SG_PROC_NSTATES + 15 + SG_CUT_NREASONS) * sizeof(uint64_t),
               "sg_gw_stats_t changed: render the new field in sg_gwmetrics_render()");

struct sg_gwmetrics {
    uv_loop_t *loop;
    sg_gwmetrics_config_t cfg;
    sg_looplag_t lag;
    uv_timer_t rate_timer;
    uint64_t rate_last_ns;
    uint64_t rate_last_in, rate_last_out;
    double rate_in, rate_out; /* events per second over the last period */
    uint64_t start_ns;
    double start_time_s;
    int pending;
    void (*close_cb)(void *ud);
    void *close_ud;
};

void sg_gwmetrics_config_init(sg_gwmetrics_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->rate_interval_ms = 1000;
    sg_looplag_config_init(&cfg->lag);
}

static void on_rate(uv_timer_t *t)
{
    sg_gwmetrics_t *m = t->data;
    uint64_t now = uv_hrtime();
    double dt = (double)(now - m->rate_last_ns) / 1e9;
    if (dt <= 0) return;
    m->rate_in = (double)(sg_gw_stats.events_in - m->rate_last_in) / dt;
    m->rate_out = (double)(sg_gw_stats.events_out - m->rate_last_out) / dt;
    m->rate_last_ns = now;
    m->rate_last_in = sg_gw_stats.events_in;
    m->rate_last_out = sg_gw_stats.events_out;
}

int sg_gwmetrics_new(uv_loop_t *loop, const sg_gwmetrics_config_t *cfg, sg_gwmetrics_t **out)
{
    if (cfg->rate_interval_ms == 0) return SG_EINVAL;
    sg_gwmetrics_t *m = sg_xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->cfg = *cfg;
    int r = sg_looplag_init(loop, &m->lag, &cfg->lag);
    if (r < 0) {
        free(m);
        return r;
    }
    m->lag.data = m;
    uv_timer_init(loop, &m->rate_timer);
    m->rate_timer.data = m;
    uv_unref((uv_handle_t *)&m->rate_timer);
    if ((r = sg_looplag_start(&m->lag)) < 0) {
        /* Only enabling UV_METRICS_IDLE_TIME can fail; the handles exist, so close them. */
        sg_gwmetrics_close(m, NULL, NULL);
        return r;
    }
    m->start_ns = m->rate_last_ns = uv_hrtime();
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) == 0) m->start_time_s = (double)tv.tv_sec + tv.tv_usec / 1e6;
    m->rate_last_in = sg_gw_stats.events_in;
    m->rate_last_out = sg_gw_stats.events_out;
    uv_timer_start(&m->rate_timer, on_rate, cfg->rate_interval_ms, cfg->rate_interval_ms);
    *out = m;
    return 0;
}

static void close_step(sg_gwmetrics_t *m)
{
    if (--m->pending) return;
    void (*cb)(void *) = m->close_cb;
    void *ud = m->close_ud;
    free(m);
    if (cb) cb(ud);
}

static void on_lag_closed(sg_looplag_t *l)
{
    close_step(l->data);
}

static void on_rate_closed(uv_handle_t *h)
{
    close_step(h->data);
}

void sg_gwmetrics_close(sg_gwmetrics_t *m, void (*cb)(void *ud), void *ud)
{
    m->close_cb = cb;
    m->close_ud = ud;
    m->pending = 2;
    sg_looplag_close(&m->lag, on_lag_closed);
    uv_close((uv_handle_t *)&m->rate_timer, on_rate_closed);
}

sg_looplag_t *sg_gwmetrics_looplag(sg_gwmetrics_t *m)
{
    return &m->lag;
}

/* /proc/self/statm: "size resident shared text lib data dt", in pages. procfs answers from
 * memory, never from a disk, so this runs on the loop thread (as execd's metrics do). */
static int read_statm(uint64_t *rss, uint64_t *vsize)
{
    char b[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, b, sizeof(b) - 1);
    close(fd);
    if (n <= 0) return -1;
    b[n] = '\0';
    unsigned long long size, resident;
    if (sscanf(b, "%llu %llu", &size, &resident) != 2) return -1;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) page = 4096;
    *rss = resident * (uint64_t)page;
    *vsize = size * (uint64_t)page;
    return 0;
}

void sg_gwmetrics_snapshot(sg_gwmetrics_t *m, sg_api_t *api, const sg_http_server_t *http,
                           sg_gwmetrics_snapshot_t *out)
{
    memset(out, 0, sizeof(*out));
    out->stats = sg_gw_stats;
    if (api) {
        out->have_sandboxes = 1;
        sg_api_count_states(api, out->sandboxes);
    }
    if (http) {
        out->have_connections = 1;
        out->connections = sg_http_server_connections(http);
    }
    out->have_memory = read_statm(&out->rss_bytes, &out->vsize_bytes) == 0;
    sg_looplag_stats(&m->lag, &out->lag);
    out->events_in_per_s = m->rate_in;
    out->events_out_per_s = m->rate_out;
    out->start_time_s = m->start_time_s;
    out->uptime_s = (double)(uv_hrtime() - m->start_ns) / 1e9;
    out->version = SG_VERSION;
    out->lag_interval_ms = m->cfg.lag.interval_ms;
    out->lag_window_ms = m->cfg.lag.window_ms;
}

static double sec(uint64_t us)
{
    return (double)us / 1e6;
}

/* Family + one sample per state, labelled state="<name>". */
static void by_state(sg_prom_t *p, const char *name, const char *help, const uint64_t *v, size_t n,
                     const char *(*state_name)(size_t))
{
    sg_prom_family(p, name, SG_PROM_GAUGE, help);
    for (size_t i = 0; i < n; i++) {
        const char *l[] = {"state", state_name(i), NULL};
        sg_prom_sample_u64(p, name, l, v[i]);
    }
}

static const char *proc_state(size_t i)
{
    static const char *const names[SG_PROC_NSTATES] = {"running", "exited", "failed", "killed",
                                                       "lost"};
    return names[i];
}

static const char *sbx_state(size_t i)
{
    return sg_sbx_state_name((sg_sbx_state_t)i);
}

void sg_gwmetrics_render(const sg_gwmetrics_snapshot_t *s, sg_prom_t *p)
{
    const sg_gw_stats_t *st = &s->stats;

    /* --- the gateway process */
    sg_prom_family(p, "sandgate_build_info", SG_PROM_GAUGE,
                   "Always 1; the version label says which sandgate is running.");
    const char *vl[] = {"version", s->version ? s->version : "", NULL};
    sg_prom_sample_u64(p, "sandgate_build_info", vl, 1);
    sg_prom_gauge(p, "process_start_time_seconds",
                  "Start time of the gateway since the Unix epoch, in seconds.", s->start_time_s);
    sg_prom_gauge(p, "sandgate_uptime_seconds", "Seconds since the gateway started.", s->uptime_s);
    if (s->have_memory) {
        sg_prom_gauge(p, "process_resident_memory_bytes",
                      "Resident set size of the gateway (/proc/self/statm), in bytes.",
                      (double)s->rss_bytes);
        sg_prom_gauge(p, "process_virtual_memory_bytes",
                      "Virtual memory size of the gateway (/proc/self/statm), in bytes.",
                      (double)s->vsize_bytes);
    }
    if (s->have_connections)
        sg_prom_gauge(p, "sandgate_http_connections",
                      "HTTP connections open on the gateway's listeners now.",
                      (double)s->connections);

    /* --- sandboxes */
    if (s->have_sandboxes)
        by_state(p, "sandgate_sandboxes", "Sandbox records the gateway holds, by state.",
                 s->sandboxes, SG_SBX_NSTATES, sbx_state);

    /* --- processes and their streams (gwstats.h) */
    by_state(p, "sandgate_processes", "Processes the gateway holds, by state.", st->processes,
             SG_PROC_NSTATES, proc_state);
    sg_prom_counter(p, "sandgate_processes_started_total", "Processes started since start.",
                    st->processes_started);
    sg_prom_gauge(p, "sandgate_process_log_bytes", "Bytes held in memory by process logs now.",
                  (double)st->log_bytes);
    sg_prom_gauge(p, "sandgate_subscribers", "Stream subscribers connected now.",
                  (double)st->subscribers);
    sg_prom_counter(p, "sandgate_subscribers_total", "Stream subscribers since start.",
                    st->subscribers_total);
    sg_prom_counter(p, "sandgate_stream_events_in_total", "Events appended to process logs.",
                    st->events_in);
    sg_prom_counter(p, "sandgate_stream_bytes_in_total",
                    "Bytes of the events appended to process logs (their JSON).", st->bytes_in);
    sg_prom_counter(p, "sandgate_stream_events_out_total",
                    "Event deliveries queued to stream subscribers.", st->events_out);
    sg_prom_counter(p, "sandgate_stream_bytes_out_total",
                    "Bytes queued to stream subscribers, framing included.", st->bytes_out);
    sg_prom_gauge(p, "sandgate_stream_events_in_per_second",
                  "Events appended to process logs per second, over the last second.",
                  s->events_in_per_s);
    sg_prom_gauge(p, "sandgate_stream_events_out_per_second",
                  "Event deliveries to subscribers per second, over the last second.",
                  s->events_out_per_s);
    sg_prom_counter(p, "sandgate_stream_gaps_total",
                    "Gap notices sent: a subscriber asked for history already evicted.", st->gaps);
    sg_prom_counter(p, "sandgate_stream_evicted_events_total",
                    "Events dropped from memory by the process log bound.", st->evicted_events);
    sg_prom_gauge(p, "sandgate_log_disk_bytes",
                  "Bytes of process output log files on disk (at the last retention check).",
                  (double)st->disk_bytes);
    sg_prom_counter(p, "sandgate_log_disk_reads_total",
                    "Reads from log files for subscribers behind the memory window.",
                    st->disk_reads);
    sg_prom_counter(p, "sandgate_log_segments_deleted_total",
                    "Log segment files deleted by the per-process bound.", st->segments_deleted);
    sg_prom_counter(p, "sandgate_log_outputs_evicted_total",
                    "Finished processes whose output log retention removed (total bytes, age).",
                    st->outputs_evicted);
    sg_prom_counter(p, "sandgate_log_write_errors_total",
                    "Process output logs whose writer failed (disk errors).", st->disk_errors);
    static const char *const reasons[SG_CUT_NREASONS] = {"hard", "soft", "timeout"};
    sg_prom_family(p, "sandgate_slow_subscribers_disconnected_total", SG_PROM_COUNTER,
                   "Slow stream subscribers disconnected, by reason: hard (lag past the hard "
                   "limit), soft (past the soft limit for too long), timeout (a write blocked "
                   "past the send timeout).");
    for (size_t i = 0; i < SG_CUT_NREASONS; i++) {
        const char *l[] = {"reason", reasons[i], NULL};
        sg_prom_sample_u64(p, "sandgate_slow_subscribers_disconnected_total", l, st->cut[i]);
    }

    /* --- the event loop (looplag.h) */
    const sg_looplag_stats_t *lag = &s->lag;
    const double q[] = {0.5, 0.99, 1};
    double qv[] = {sec(lag->window_p50_us), sec(lag->window_p99_us), sec(lag->window_max_us)};
    if (!lag->window_samples) qv[0] = qv[1] = qv[2] = NAN;
    char help[256];
    snprintf(help, sizeof(help),
             "How late the loop ran a timer due every %llu ms: quantiles over the last %llu s, "
             "sum and count since start.",
             (unsigned long long)s->lag_interval_ms, (unsigned long long)s->lag_window_ms / 1000);
    sg_prom_summary(p, "sandgate_loop_lag_seconds", help, q, qv, SG_ARRAY_SIZE(q), sec(lag->sum_us),
                    lag->samples);
    sg_prom_gauge(p, "sandgate_loop_lag_max_seconds", "The largest loop lag since start.",
                  sec(lag->max_us));
    sg_prom_gauge(p, "sandgate_loop_lag_recent_max_seconds",
                  "The largest loop lag over the last window (as the summary's quantiles).",
                  sec(lag->window_max_us));
    sg_prom_gauge(p, "sandgate_loop_busy_max_seconds",
                  "The longest loop iteration spent running callbacks (the worst single stall) "
                  "since start.",
                  sec(lag->busy_max_us));
    sg_prom_gauge(p, "sandgate_loop_busy_recent_max_seconds",
                  "The longest loop iteration spent running callbacks over the last window.",
                  sec(lag->busy_window_max_us));
    sg_prom_counter(p, "sandgate_loop_iterations_total", "Loop iterations since start.",
                    lag->iterations);
    sg_prom_family(p, "sandgate_loop_idle_seconds_total", SG_PROM_COUNTER,
                   "Time the loop spent waiting for events since start, in seconds.");
    sg_prom_sample_f(p, "sandgate_loop_idle_seconds_total", NULL, sec(lag->idle_us));
}

/* Same rule, codes and messages as the lifecycle routes' check in api.c. */
static int authorized(const char *key, sg_http_req_t *req)
{
    if (!key || !*key) return 1;
    const char *k = sg_http_req_header(req, "OPEN-SANDBOX-API-KEY");
    if (!k || !*k) {
        sg_http_respond_error(req, 401, "MISSING_API_KEY",
                              "Authentication credentials are missing. Provide API key via "
                              "OPEN-SANDBOX-API-KEY header.");
        return 0;
    }
    /* Constant time over the configured key's length. */
    size_t n = strlen(key), m = strlen(k);
    unsigned char d = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(key[i] ^ (i < m ? k[i] : 0));
    if (d) {
        sg_http_respond_error(req, 401, "INVALID_API_KEY",
                              "Authentication credentials are invalid. Check your API key and try "
                              "again.");
        return 0;
    }
    return 1;
}

void sg_gwmetrics_respond(sg_gwmetrics_t *m, sg_http_req_t *req, sg_api_t *api)
{
    const char *method = sg_http_req_method(req);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        sg_http_respond_error(req, 405, "METHOD_NOT_ALLOWED", "use GET /metrics");
        return;
    }
    if (!authorized(m->cfg.api_key, req)) return;
    sg_gwmetrics_snapshot_t snap;
    sg_gwmetrics_snapshot(m, api, sg_http_req_server(req), &snap);
    sg_prom_t p;
    sg_prom_init(&p);
    sg_gwmetrics_render(&snap, &p);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", SG_PROM_CONTENT_TYPE);
    sg_hdrs_addz(&h, "Cache-Control", "no-store");
    sg_http_respond(req, 200, &h, p.data, p.len);
    sg_hdrs_free(&h);
    sg_prom_free(&p);
}
