/* sandbox.h: the gateway's sandbox records, grouped by tenant, and their JSON shapes.
 *
 * Map
 *   sg_sandbox_t     one record: id, tenant, provider + handle, what it was created from,
 *                    metadata, status (state / reason / message / lastTransitionAt), createdAt,
 *                    expiresAt, plus the timer entries and in-flight requests api.c drives.
 *   sg_tenant_t      the records one tenant sees, newest first (list order for free). Every
 *                    lookup and listing goes through a tenant; for now there is one ("default").
 *   sg_sbx_store_t   the tenants (in memory; SQLite persistence is a later issue).
 *   pure helpers     uuid4, RFC 3339 time format/parse, state names, label rules, the RFC 7396
 *                    metadata merge, list filtering + pagination, the OpenSandbox JSON shapes
 *                    (field order as the reference server writes them). Unit-tested directly.
 *
 * Ownership: the store owns linked records; a record is freed when it is unlinked and its
 * last reference (sg_sbx_ref / sg_sbx_unref, taken by every asynchronous operation that holds
 * it) is gone, so a callback never sees a freed record, only an unlinked one (s->linked == 0).
 * JSON members (entrypoint, env, metadata, platform) are owned references. */
#ifndef SANDGATE_GATEWAY_SANDBOX_H
#define SANDGATE_GATEWAY_SANDBOX_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "provider.h"
#include "sandgate/http_client.h"
#include "sandgate/timer.h"

typedef enum sg_sbx_state {
    SG_SBX_PENDING = 0,
    SG_SBX_RUNNING,
    SG_SBX_PAUSING,
    SG_SBX_PAUSED,
    SG_SBX_RESUMING,
    SG_SBX_STOPPING,
    SG_SBX_TERMINATED,
    SG_SBX_FAILED,
    SG_SBX_NSTATES
} sg_sbx_state_t;

typedef struct sg_tenant sg_tenant_t;

typedef struct sg_sandbox {
    struct sg_sandbox *prev, *next; /* tenant list, newest first */
    sg_tenant_t *tenant;
    int linked;
    int refs;

    char id[37];
    char *image;        /* image.uri */
    json_t *entrypoint; /* array of strings */
    json_t *env;        /* object string -> string */
    json_t *metadata;   /* object string -> string */
    json_t *platform;   /* object or NULL: echoed only when requested */

    sg_sbx_state_t state;
    char reason[64];
    char message[512];
    int64_t transition_us; /* wall clock, microseconds since the epoch */
    int64_t created_us;
    int64_t expires_us; /* 0: no expiry (manual cleanup) */
    int64_t reap_us;    /* Failed records: removed at this time (not shown), 0 = never */

    sg_provider_t *prov;
    sg_sandbox_handle_t handle;
    int has_handle; /* the provider made it and it was not destroyed */
    int busy;       /* a provider operation (pause / resume / destroy) is in flight */

    /* api.c's per-sandbox machinery */
    sg_tentry_t ready_timer;   /* WaitReady polls and health checks */
    int64_t ready_deadline_ms; /* loop time; WaitReady gives up after it */
    unsigned ping_step;        /* backoff step */
    unsigned missed_pings;
    sg_http_creq_t *ping; /* a /ping in flight, or NULL */
    void *api;
    struct proc *procs; /* process.c's records, newest first */
    unsigned nprocs;
} sg_sandbox_t;

struct sg_tenant {
    sg_tenant_t *next;
    char name[64];
    sg_sandbox_t *head;
    size_t count;
};

typedef struct sg_sbx_store {
    sg_tenant_t *tenants;
} sg_sbx_store_t;

void sg_sbx_store_init(sg_sbx_store_t *st);
/* Unlinks every record (records still referenced are freed by their last unref). */
void sg_sbx_store_free(sg_sbx_store_t *st);
/* The tenant called name; created when create != 0, else NULL when unknown. */
sg_tenant_t *sg_sbx_tenant(sg_sbx_store_t *st, const char *name, int create);

/* A new record (refs 1, not linked) with a fresh uuid4 id, createdAt now, state Pending. */
sg_sandbox_t *sg_sbx_new(void);
sg_sandbox_t *sg_sbx_ref(sg_sandbox_t *s);
void sg_sbx_unref(sg_sandbox_t *s);
/* link takes a reference; unlink drops it. */
void sg_sbx_link(sg_tenant_t *t, sg_sandbox_t *s);
void sg_sbx_unlink(sg_sandbox_t *s);
sg_sandbox_t *sg_sbx_find(sg_tenant_t *t, const char *id);

/* Runs after every sg_sbx_set_state (the api persists the record from it); NULL = none. */
extern void (*sg_sbx_changed_hook)(sg_sandbox_t *s);
/* Sets state, reason and message; lastTransitionAt moves only when the state changes. */
void sg_sbx_set_state(sg_sandbox_t *s, sg_sbx_state_t st, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* --- pure helpers */
void sg_sbx_uuid4(char out[37]);
int64_t sg_sbx_now_us(void); /* wall clock */
/* "2026-06-12T08:30:00.123456Z", fraction only when non-zero (pydantic's format). */
void sg_sbx_format_time(int64_t us, char out[40]);
/* RFC 3339 / ISO 8601: date 'T' time, optional fraction (any digits, kept to microseconds),
 * 'Z', '+hh:mm', '-hh:mm' or nothing (naive = UTC). 0 or SG_EINVAL. */
int sg_sbx_parse_time(const char *s, int64_t *us);
const char *sg_sbx_state_name(sg_sbx_state_t st);
/* Case-insensitive; -1 when s names no state. */
int sg_sbx_state_parse(const char *s);

/* Kubernetes label rules (the reference's metadata rules). 0, or SG_EINVAL with a message. */
int sg_sbx_label_check(const char *key, const char *value, char *msg, size_t len);
/* RFC 7396 merge of patch (an object of string | null) into meta, all or nothing. Returns 0,
 * or an HTTP status (400 / 422) with code and message filled. */
int sg_sbx_metadata_patch(json_t *meta, const json_t *patch, char code[64], char *msg, size_t len);

/* --- JSON shapes */
json_t *sg_sbx_status_json(const sg_sandbox_t *s);
/* Sandbox: id, image, platform, status, metadata, entrypoint, expiresAt, createdAt. */
json_t *sg_sbx_json(const sg_sandbox_t *s);
/* CreateSandboxResponse: id, status, metadata, platform, expiresAt, createdAt, entrypoint. */
json_t *sg_sbx_create_json(const sg_sandbox_t *s);

/* --- listing */
typedef struct sg_sbx_filter {
    unsigned states;   /* bit per sg_sbx_state_t; 0 = any */
    json_t *metadata;  /* object k -> v that must all match; NULL = any (owned) */
    int64_t page;      /* >= 1 */
    int64_t page_size; /* 1..200 */
} sg_sbx_filter_t;

/* ListSandboxesResponse for t (NULL: empty) under f. */
json_t *sg_sbx_list_json(const sg_tenant_t *t, const sg_sbx_filter_t *f);

#endif
