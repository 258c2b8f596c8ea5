/* api.h: the OpenSandbox lifecycle API (opensandbox-protocol.md part 1) on top of a provider.
 *
 * Map
 *   sg_api_t        routes (/v1 and root): POST/GET /sandboxes, GET/DELETE /sandboxes/{id},
 *                   PATCH .../metadata, POST .../pause|resume|renew-expiration,
 *                   GET .../endpoints/{port}, .../proxy/{port}/... (proxy.c),
 *                   POST /metrics/events. Owns the records (sandbox.h), the HTTP clients to
 *                   execd (pings; proxying) and the timers:
 *                     WaitReady  Pending -> poll execd /ping with jittered backoff -> Running;
 *                                past --ready-timeout -> Failed + provider destroy.
 *                     health     Running sandboxes are pinged every --health-interval
 *                                (jittered); a miss shows in status.reason, a sandbox whose
 *                                processes are gone (provider check) becomes Failed.
 *                     expiry     one uv_timer_t at the earliest expiresAt (or the reap time of
 *                                a Failed record, --failed-ttl); due -> delete.
 *                   Timers with many entries of one duration use sg_tlist (timer.h), one list
 *                   per (duration, jitter slot).
 *   pure parsers    create-request validation (422 pydantic-style `{"detail":[...]}` for
 *                   schema errors, 400 `{"code","message"}` for the rest, as the reference),
 *                   list query parsing, resource quantities. Unit-tested directly.
 *
 * Lifetime: sg_api_close() stops the timers, waits for provider operations in flight, closes
 * the HTTP clients and the provider, then calls back. Sandboxes outlive the gateway. */
#ifndef SANDGATE_GATEWAY_API_H
#define SANDGATE_GATEWAY_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "process.h"
#include "provider.h"
#include "sandbox.h"
#include "sandgate/http_server.h"

#define SG_API_MAX_HOST_PREFIXES 16

typedef struct sg_api_config {
    const char *tenant;          /* default "default" */
    const char *api_key;         /* OPEN-SANDBOX-API-KEY required when non-empty */
    uint64_t ready_timeout_ms;   /* WaitReady deadline, default 60 s */
    uint64_t health_interval_ms; /* default 10 s; 0 = no health checks */
    uint64_t max_timeout_s;      /* bound on `timeout`, 0 = none */
    int64_t max_sandboxes;       /* per tenant, default 100 */
    uint64_t proxy_timeout_ms;   /* upstream response / body idle, default 180 s */
    uint64_t failed_ttl_ms;      /* Failed records are removed after this, default 1 h; 0 = kept */
    const char *host_prefixes[SG_API_MAX_HOST_PREFIXES]; /* --allow-host-volumes */
    size_t n_host_prefixes;
    int tls;            /* the listener speaks TLS (X-Forwarded-Proto) */
    const char *listen; /* endpoint host when a request has no Host header */
    sg_stream_config_t stream; /* processes and their subscribers (process.h) */
    struct sg_store *store;    /* durable records (store.h), or NULL: in memory only */
    const char *data_dir;      /* for restart reconciliation of local sandboxes */
    const char *provider_name; /* stored with each sandbox, default "local" */
} sg_api_config_t;

typedef struct sg_api sg_api_t;

void sg_api_config_init(sg_api_config_t *cfg);
/* prov may be NULL: creating sandboxes then answers 503. The api does not own cfg's strings. */
int sg_api_new(uv_loop_t *loop, const sg_api_config_t *cfg, sg_provider_t *prov, sg_api_t **out);
/* 1 when the request is the API's (it answers it), 0 otherwise. */
int sg_api_route(sg_api_t *a, sg_http_req_t *req);
void sg_api_close(sg_api_t *a, void (*cb)(void *ud), void *ud);

struct sg_store_snapshot;
/* Restart: recreates the stored sandboxes and reconciles them with reality (local provider:
 * the state files under data_dir): alive ones resume their timers, gone ones become Failed,
 * expired ones are deleted, sandboxes on disk without a record are reaped. Call once, after
 * sg_api_new and before serving. Returns how many records were restored. */
size_t sg_api_restore(sg_api_t *a, const struct sg_store_snapshot *snap);
/* Restored process logs still being read back (serve listens once this is 0). */
unsigned sg_api_loading(const sg_api_t *a);

/* --- errors as the reference server writes them */
typedef struct sg_api_err {
    int status; /* 0 = none */
    char code[64];
    char message[512];
    json_t *detail; /* 422: [{"type","loc","msg","input"[,"ctx"]}], owned */
} sg_api_err_t;

void sg_api_err_init(sg_api_err_t *e);
void sg_api_err_free(sg_api_err_t *e);
/* A 400/404/409/... error: the first one set wins. */
void sg_api_err_set(sg_api_err_t *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends a pydantic-style item (422). loc and input are stolen (input may be NULL). */
void sg_api_err_422(sg_api_err_t *e, const char *type, json_t *loc, const char *msg, json_t *input);
/* The final status: 422 when any schema error was recorded, else the 400-style one, else 0. */
int sg_api_err_status(const sg_api_err_t *e);
/* The response body for sg_api_err_status(e). */
json_t *sg_api_err_json(const sg_api_err_t *e);

/* --- create request */
typedef struct sg_api_create {
    const char *image;  /* image.uri (borrowed from the body) */
    json_t *entrypoint; /* borrowed array of strings */
    json_t *env;        /* owned object string -> string (null values dropped) */
    json_t *metadata;   /* borrowed object or NULL */
    json_t *platform;   /* borrowed object or NULL */
    int64_t timeout_s;  /* 0 = no expiry */
    uint64_t cpu_millis, memory_bytes, pids;
    int network_allow;
    sg_volume_t *volumes; /* owned array; strings borrowed from the body */
    size_t n_volumes;
} sg_api_create_t;

/* Validates a CreateSandboxRequest body (any JSON value). Returns 0 and fills out, or the
 * error status with e filled (out is then freed already). */
int sg_api_parse_create(const json_t *body, const sg_api_config_t *cfg, sg_api_create_t *out,
                        sg_api_err_t *e);
void sg_api_create_free(sg_api_create_t *c);

/* "500m" -> 500, "2" -> 2000, "0.5" -> 500. 0 or SG_EINVAL. */
int sg_api_parse_cpu(const char *s, uint64_t *millis);
/* "512Mi", "2Gi", "1G", "512m" (docker: MiB), "1024", "100b". 0 or SG_EINVAL. */
int sg_api_parse_memory(const char *s, uint64_t *bytes);

/* --- query strings */
/* Next name=value pair of *q (advanced past it), both percent-decoded with '+' as space.
 * Returns 1 for a pair, 0 at the end, SG_ETOOBIG when a part does not fit its buffer. */
int sg_api_query_next(const char **q, char *name, size_t nlen, char *value, size_t vlen);
/* GET /sandboxes query: state (repeatable, case-insensitive), metadata (k=v&k2=v2 encoded
 * once more, parse_qsl strict), page >= 1, pageSize 1..200. Returns 0 or the error status;
 * f->metadata is owned by the caller (json_decref) in both cases. */
int sg_api_parse_list_query(const char *query, sg_sbx_filter_t *f, sg_api_err_t *e);

/* --- GET /metrics: how many sandboxes (every tenant) are in each state. */
void sg_api_count_states(sg_api_t *a, uint64_t out[SG_SBX_NSTATES]);

#endif
