/* metrics.c: GET /metrics and GET /metrics/watch (opensandbox-protocol.md 2.13).
 *
 * One uv_timer_t samples every second in the background: /proc/stat (CPU use since the last
 * sample), /proc/meminfo, and the cgroup limits when present (cgroup v2 cpu.max / memory.max,
 * v1 cpu.cfs_quota_us / memory.limit_in_bytes). /metrics answers at once from the latest
 * sample (Go blocks ~1 s per call); /metrics/watch gets each sample as raw JSON + "\n" (Go's
 * framing, one line per record, every 1 s instead of Go's ~2 s). The reads are a few small
 * files from procfs/cgroupfs, which never block on a disk, so they run on the loop thread.
 *
 * JSON: {"cpu_count":N,"cpu_used_pct":P,"mem_total_mib":T,"mem_used_mib":U,"timestamp":ms},
 * numbers formatted as Go's encoding/json formats float64 (shortest round-trip text). */
#define _GNU_SOURCE /* sched_getaffinity */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "execd.h"
#include "sandgate/log.h"

#define SAMPLE_MS         1000
#define WATCH_MAX_PENDING (1u << 20)

typedef struct watcher {
    struct watcher *prev, *next;
    sg_http_req_t *req;
} watcher_t;

struct sg_execd_metrics {
    sg_execd_t *x;
    uv_timer_t timer;
    unsigned long long prev_total, prev_idle;
    double cpu_count, cpu_pct, mem_total, mem_used;
    uint64_t ts;
    int ok;
    char json[256];
    size_t json_len;
    watcher_t *watchers;
};

static int read_small(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (int)n;
}

/* Go's strconv.FormatFloat(v, 'f', -1, 64) for the magnitudes metrics have. */
static void fmt_float(char *out, size_t len, double v)
{
    if (!isfinite(v)) v = 0;
    for (int p = 0; p <= 17; p++) {
        snprintf(out, len, "%.*f", p, v);
        if (strtod(out, NULL) == v) return;
    }
}

static double cpu_count(void)
{
    cpu_set_t set;
    double n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = (double)sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) n = 1;
    char b[128];
    double quota = 0, period = 0;
    if (read_small("/sys/fs/cgroup/cpu.max", b, sizeof(b)) > 0) {
        if (strncmp(b, "max", 3) != 0) sscanf(b, "%lf %lf", &quota, &period);
    } else if (read_small("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", b, sizeof(b)) > 0) {
        quota = strtod(b, NULL);
        if (read_small("/sys/fs/cgroup/cpu/cpu.cfs_period_us", b, sizeof(b)) > 0)
            period = strtod(b, NULL);
    }
    /* automaxprocs: floor(quota / period), at least 1, at most the CPUs we may run on. */
    if (quota > 0 && period > 0) {
        double q = floor(quota / period);
        if (q < 1) q = 1;
        if (q < n) n = q;
    }
    return n;
}

static int sample(struct sg_execd_metrics *m)
{
    char b[4096];
    if (read_small("/proc/stat", b, sizeof(b)) <= 0) return -1;
    unsigned long long v[10] = {0};
    if (sscanf(b, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 4)
        return -1;
    /* guest time is already counted in user/nice */
    unsigned long long total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    unsigned long long idle = v[3] + v[4];
    unsigned long long dt = total - m->prev_total, di = idle - m->prev_idle;
    m->cpu_pct = dt ? 100.0 * (double)(dt - SG_MIN(di, dt)) / (double)dt : 0;
    m->prev_total = total;
    m->prev_idle = idle;

    if (read_small("/proc/meminfo", b, sizeof(b)) <= 0) return -1;
    unsigned long long tot = 0, avail = 0;
    const char *p = strstr(b, "MemTotal:");
    if (p) tot = strtoull(p + 9, NULL, 10);
    p = strstr(b, "MemAvailable:");
    if (p) avail = strtoull(p + 13, NULL, 10);
    if (!tot) return -1;
    double total_b = (double)tot * 1024.0, used_b = (double)(tot - SG_MIN(avail, tot)) * 1024.0;
    /* A cgroup memory limit below the host's memory is what this sandbox really has. */
    char c[64];
    double lim = 0, cur = -1;
    if (read_small("/sys/fs/cgroup/memory.max", c, sizeof(c)) > 0) {
        if (strncmp(c, "max", 3) != 0) lim = strtod(c, NULL);
        if (read_small("/sys/fs/cgroup/memory.current", c, sizeof(c)) > 0) cur = strtod(c, NULL);
    } else if (read_small("/sys/fs/cgroup/memory/memory.limit_in_bytes", c, sizeof(c)) > 0) {
        lim = strtod(c, NULL);
        if (read_small("/sys/fs/cgroup/memory/memory.usage_in_bytes", c, sizeof(c)) > 0)
            cur = strtod(c, NULL);
    }
    if (lim > 0 && lim < total_b && cur >= 0) {
        total_b = lim;
        used_b = cur;
    }
    m->mem_total = total_b / (1024.0 * 1024.0);
    m->mem_used = used_b / (1024.0 * 1024.0);
    m->cpu_count = cpu_count();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->ts = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;

    char f[4][40];
    fmt_float(f[0], sizeof(f[0]), m->cpu_count);
    fmt_float(f[1], sizeof(f[1]), m->cpu_pct);
    fmt_float(f[2], sizeof(f[2]), m->mem_total);
    fmt_float(f[3], sizeof(f[3]), m->mem_used);
    int n = snprintf(m->json, sizeof(m->json),
                     "{\"cpu_count\":%s,\"cpu_used_pct\":%s,\"mem_total_mib\":%s,"
                     "\"mem_used_mib\":%s,\"timestamp\":%llu}",
                     f[0], f[1], f[2], f[3], (unsigned long long)m->ts);
    m->json_len = (size_t)n;
    return 0;
}

static void watcher_drop(struct sg_execd_metrics *m, watcher_t *w, int end)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        m->watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    sg_http_req_on_abort(w->req, NULL);
    sg_http_req_set_data(w->req, NULL);
    if (end)
        sg_http_resp_end(w->req);
    else
        sg_http_req_release(w->req);
    free(w);
}

static void on_tick(uv_timer_t *t)
{
    struct sg_execd_metrics *m = t->data;
    m->ok = sample(m) == 0;
    char line[300];
    size_t n;
    if (m->ok) {
        memcpy(line, m->json, m->json_len);
        n = m->json_len;
    } else {
        n = (size_t)snprintf(line, sizeof(line), "{\"error\":\"cannot read /proc\"}");
    }
    line[n++] = '\n';
    for (watcher_t *w = m->watchers, *next; w; w = next) {
        next = w->next;
        /* A watcher that does not read loses samples instead of growing our memory. */
        if (sg_http_resp_pending(w->req) > WATCH_MAX_PENDING) continue;
        sg_http_resp_write_copy(w->req, line, n);
    }
}

static void watch_on_abort(sg_http_req_t *req)
{
    struct sg_execd_metrics *m = sg_http_req_data(req);
    if (!m) return;
    for (watcher_t *w = m->watchers; w; w = w->next)
        if (w->req == req) {
            watcher_drop(m, w, 0);
            return;
        }
}

int sg_execd_metrics_start(sg_execd_t *x)
{
    struct sg_execd_metrics *m = sg_xcalloc(1, sizeof(*m));
    m->x = x;
    m->ok = sample(m) == 0; /* CPU over the time since boot until the first tick */
    uv_timer_init(x->loop, &m->timer);
    m->timer.data = m;
    uv_timer_start(&m->timer, on_tick, SAMPLE_MS, SAMPLE_MS);
    x->metrics = m;
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void sg_execd_metrics_stop(sg_execd_t *x)
{
    struct sg_execd_metrics *m = x->metrics;
    if (!m) return;
    x->metrics = NULL;
    while (m->watchers)
        watcher_drop(m, m->watchers, 1);
    uv_close((uv_handle_t *)&m->timer, timer_closed);
}

int sg_execd_route_metrics(sg_execd_t *x, sg_http_req_t *req)
{
    const char *path = sg_http_req_path(req);
    int watch = strcmp(path, "/metrics/watch") == 0;
    if (!watch && strcmp(path, "/metrics") != 0) return 0;
    struct sg_execd_metrics *m = x->metrics;
    if (!m) {
        sg_http_respond_error(req, 503, "RUNTIME_ERROR", "shutting down");
        return 1;
    }
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    if (!watch) {
        if (!m->ok) {
            sg_http_respond_error(req, 500, "RUNTIME_ERROR", "error reading metrics from /proc");
        } else {
            sg_hdrs_addz(&h, "Content-Type", "application/json; charset=utf-8");
            sg_http_respond(req, 200, &h, m->json, m->json_len);
        }
        sg_hdrs_free(&h);
        return 1;
    }
    sg_hdrs_addz(&h, "Cache-Control", "no-cache");
    sg_hdrs_addz(&h, "Connection", "keep-alive");
    sg_hdrs_addz(&h, "Content-Type", "text/event-stream");
    sg_hdrs_addz(&h, "X-Accel-Buffering", "no");
    int r = sg_http_resp_start(req, 200, &h);
    sg_hdrs_free(&h);
    if (r < 0) {
        sg_http_req_release(req);
        return 1;
    }
    watcher_t *w = sg_xcalloc(1, sizeof(*w));
    w->req = req;
    w->next = m->watchers;
    if (m->watchers) m->watchers->prev = w;
    m->watchers = w;
    sg_http_req_set_data(req, m);
    sg_http_req_on_abort(req, watch_on_abort);
    return 1;
}
