/* gwmetrics.h: the gateway's GET /metrics (Prometheus text format 0.0.4).
 *
 * Map
 *   sg_gwmetrics_t    owns what is measured over time: the loop lag monitor (looplag.h) and a
 *                     once-a-second sampler that turns the stream counters of sg_gw_stats into
 *                     events-per-second gauges. Both timers are unref'd. Everything else is
 *                     read at scrape time: sg_gw_stats (gwstats.h), sandboxes by state
 *                     (sg_api_count_states), HTTP connections, /proc/self/statm.
 *   snapshot/render   sg_gwmetrics_snapshot() gathers those numbers into a plain struct and
 *                     sg_gwmetrics_render() writes the text from it alone (pure; unit-tested).
 *   sg_gwmetrics_respond  answers one request: GET or HEAD -> 200 text, other methods -> 405
 *                     JSON. With an API key configured, the request needs OPEN-SANDBOX-API-KEY
 *                     exactly as the lifecycle routes do (api.c authorized(): the same 401
 *                     codes, also from loopback, since the lifecycle routes make no loopback
 *                     exception either); without one, /metrics is open like /health.
 *
 * Lifecycle: sg_gwmetrics_new -> (respond)* -> sg_gwmetrics_close(cb): the handles close and
 * the object is freed before cb runs. */
#ifndef SANDGATE_GATEWAY_GWMETRICS_H
#define SANDGATE_GATEWAY_GWMETRICS_H

#include <stdint.h>
#include <uv.h>

#include "api.h"
#include "gwstats.h"
#include "sandbox.h"
#include "sandgate/http_server.h"
#include "sandgate/looplag.h"
#include "sandgate/prom.h"

typedef struct sg_gwmetrics_config {
    const char *api_key;       /* borrowed; NULL or "" = /metrics needs no key */
    uint64_t rate_interval_ms; /* the events-per-second sampler's period, default 1000 */
    sg_looplag_config_t lag;   /* loop lag monitor, looplag.h defaults */
} sg_gwmetrics_config_t;

typedef struct sg_gwmetrics sg_gwmetrics_t;

/* Everything one scrape renders. */
typedef struct sg_gwmetrics_snapshot {
    sg_gw_stats_t stats;
    int have_sandboxes; /* the api exists */
    uint64_t sandboxes[SG_SBX_NSTATES];
    int have_connections;
    uint64_t connections;
    int have_memory; /* /proc/self/statm was readable */
    uint64_t rss_bytes, vsize_bytes;
    sg_looplag_stats_t lag;
    uint64_t lag_interval_ms, lag_window_ms; /* the monitor's config, for the help text */
    double events_in_per_s, events_out_per_s;
    double start_time_s; /* unix time */
    double uptime_s;
    const char *version;
} sg_gwmetrics_snapshot_t;

void sg_gwmetrics_config_init(sg_gwmetrics_config_t *cfg);
/* Starts the lag monitor and the rate sampler. 0 or a negative error. */
int sg_gwmetrics_new(uv_loop_t *loop, const sg_gwmetrics_config_t *cfg, sg_gwmetrics_t **out);
void sg_gwmetrics_close(sg_gwmetrics_t *m, void (*cb)(void *ud), void *ud);

/* api and http may be NULL (their families are then left out). */
void sg_gwmetrics_snapshot(sg_gwmetrics_t *m, sg_api_t *api, const sg_http_server_t *http,
                           sg_gwmetrics_snapshot_t *out);
void sg_gwmetrics_render(const sg_gwmetrics_snapshot_t *s, sg_prom_t *p);
/* Answers GET/HEAD /metrics (see the map for auth and errors). */
void sg_gwmetrics_respond(sg_gwmetrics_t *m, sg_http_req_t *req, sg_api_t *api);
/* The loop lag monitor, for callers that want the numbers programmatically. */
sg_looplag_t *sg_gwmetrics_looplag(sg_gwmetrics_t *m);

#endif
