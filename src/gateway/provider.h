/* provider.h: what a sandbox backend does for the gateway, behind one interface.
 *
 * Providers: `local` (bubblewrap sandboxes on this host, each running sandgate-execd on a unix
 * socket the gateway reaches; provider_local.c) and, later, `opensandbox` (an upstream
 * OpenSandbox server over HTTP/HTTPS). The lifecycle API keeps the records (ids, tenants,
 * states, metadata, expiry) and asks its provider to make, stop, freeze and check the real
 * thing. Every operation is asynchronous on the loop and reports exactly once through its
 * callback; none blocks the loop.
 *
 * Errors carry an HTTP status, an OpenSandbox-style code ("SANDBOX::INVALID_PARAMETER",
 * "SANDBOX::IMAGE_NOT_FOUND", ...) and a message for the {"code","message"} body, so a
 * validation failure in a provider reaches the client unchanged. */
#ifndef SANDGATE_GATEWAY_PROVIDER_H
#define SANDGATE_GATEWAY_PROVIDER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sg_provider sg_provider_t;

typedef struct sg_prov_err {
    int status;        /* HTTP status for the client: 400, 404, 409, 500, 503 */
    char code[64];     /* "SANDBOX::INVALID_PARAMETER", ... */
    char message[512];
} sg_prov_err_t;

typedef struct sg_kv {
    const char *key;
    const char *value;
} sg_kv_t;

typedef struct sg_volume {
    const char *name;
    const char *host_path;  /* volumes of kind host only; other kinds are refused by the API */
    const char *mount_path;
    const char *sub_path;   /* may be NULL */
    int read_only;
} sg_volume_t;

/* What to create; the API layer validated the OpenSandbox request into this. Strings are
 * valid during create() only (the provider copies what it keeps). */
typedef struct sg_sandbox_spec {
    const char *id;       /* the gateway's sandbox id (uuid with dashes) */
    const char *tenant;
    const char *image;    /* image.uri as the client sent it */
    const char *const *entrypoint; /* argv, n_entrypoint >= 1 */
    size_t n_entrypoint;
    const sg_kv_t *env;   /* reaches the entrypoint and every command */
    size_t n_env;
    /* Resource limits; 0 = not requested. */
    uint64_t cpu_millis;  /* "500m" -> 500, "2" -> 2000 */
    uint64_t memory_bytes;
    uint64_t pids;
    int network_allow;    /* 0: no network at all (deny, the default); 1: host network */
    const sg_volume_t *volumes;
    size_t n_volumes;
} sg_sandbox_spec_t;

/* What the provider made: how to reach the sandbox's execd and what it enforced. */
typedef struct sg_sandbox_handle {
    char provider_id[128];  /* the provider's own id (local: the sandbox id) */
    char execd[512];        /* "unix:/path/to/execd.sock" or "http://host:port" */
    char access_token[128]; /* X-EXECD-ACCESS-TOKEN, "" when none */
    char enforced[256];     /* e.g. "cgroup-v1: cpu=500m memory=512Mi pids=256" or "rlimit: ..." */
    int64_t pid;            /* local: the sandbox's init process (host pid), else 0 */
} sg_sandbox_handle_t;

typedef void (*sg_prov_create_cb)(void *ud, int err, const sg_prov_err_t *e,
                                  const sg_sandbox_handle_t *h);
typedef void (*sg_prov_done_cb)(void *ud, int err, const sg_prov_err_t *e);
/* alive: 1 the sandbox's processes exist, 0 gone (with a reason in e->message). */
typedef void (*sg_prov_check_cb)(void *ud, int alive, const sg_prov_err_t *e);

typedef struct sg_provider_ops {
    const char *name;
    /* Starts the sandbox. Success means its processes run; the API then waits for execd's
     * /ping (WaitReady) before calling it Running. */
    int (*create)(sg_provider_t *p, const sg_sandbox_spec_t *spec, sg_prov_create_cb cb, void *ud);
    /* Kills every process of the sandbox and removes what create made. Idempotent: destroying
     * a sandbox that is already gone succeeds. */
    int (*destroy)(sg_provider_t *p, const sg_sandbox_handle_t *h, sg_prov_done_cb cb, void *ud);
    int (*pause)(sg_provider_t *p, const sg_sandbox_handle_t *h, sg_prov_done_cb cb, void *ud);
    int (*resume)(sg_provider_t *p, const sg_sandbox_handle_t *h, sg_prov_done_cb cb, void *ud);
    /* Are the sandbox's processes still there (health checks, restart reconciliation)? */
    int (*check)(sg_provider_t *p, const sg_sandbox_handle_t *h, sg_prov_check_cb cb, void *ud);
    /* Kills nothing: sandboxes outlive the gateway. Frees the provider after its handles
     * closed, then cb. */
    void (*close)(sg_provider_t *p, void (*cb)(void *ud), void *ud);
} sg_provider_ops_t;

struct sg_provider {
    const sg_provider_ops_t *ops;
    uv_loop_t *loop;
};

#endif
