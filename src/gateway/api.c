/* api.c: the lifecycle routes, the provider calls behind them, and the sandbox timers.
 * See api.h for the map. Request flow for every operation: validate -> look the record up in
 * the tenant -> (provider call, holding a reference to the record) -> answer. A record whose
 * provider operation is in flight is `busy`; conflicting operations get 409. */
#include "api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "provider_local.h"
#include "proxy.h"
#include "store.h"
#include "sandgate/common.h"
#include "sandgate/http_client.h"
#include "sandgate/json.h"
#include "sandgate/log.h"

#define EXECD_PORT 44772
#define NJITTER    5
/* WaitReady backoff (ms); the last step repeats until the deadline. */
static const uint64_t ready_steps[] = {50, 100, 200, 400, 800, 1000};
#define NSTEPS SG_ARRAY_SIZE(ready_steps)

struct sg_api {
    uv_loop_t *loop;
    sg_api_config_t cfg;
    sg_provider_t *prov;
    sg_sbx_store_t store;
    sg_http_client_t *ping_client;
    sg_http_client_t *proxy_client;
    sg_procs_t *procs;
    /* One list per (duration, jitter slot): entries pick a slot at random when armed. */
    sg_tlist_t ready_lists[NSTEPS][NJITTER];
    sg_tlist_t health_lists[NJITTER];
    uv_timer_t expiry_timer;
    uint64_t rng;
    unsigned ops;      /* provider operations in flight */
    unsigned creating; /* creates in flight (count toward max_sandboxes) */
    int closing;
    int restoring; /* records being recreated from the store: not written back */
    unsigned closes_pending;
    void (*close_cb)(void *ud);
    void *close_ud;
};

void sg_api_config_init(sg_api_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->tenant = "default";
    cfg->ready_timeout_ms = 60000;
    cfg->health_interval_ms = 10000;
    cfg->max_sandboxes = 100;
    cfg->proxy_timeout_ms = 180000;
    cfg->failed_ttl_ms = 3600000;
    cfg->listen = "127.0.0.1:8080";
    sg_stream_config_init(&cfg->stream);
}

/* --- small helpers */

static unsigned rnd(sg_api_t *a, unsigned n)
{
    /* xorshift64*: jitter only, no security role */
    a->rng ^= a->rng >> 12;
    a->rng ^= a->rng << 25;
    a->rng ^= a->rng >> 27;
    return (unsigned)((a->rng * 2685821657736338717ull) >> 33) % n;
}

static void respond_err(sg_http_req_t *req, const sg_api_err_t *e)
{
    json_t *b = sg_api_err_json(e);
    sg_http_respond_json(req, sg_api_err_status(e), b);
    json_decref(b);
}

static void respond_json(sg_http_req_t *req, int status, json_t *b)
{
    sg_http_respond_json(req, status, b);
    json_decref(b);
}

static void respond_prov_err(sg_http_req_t *req, const sg_prov_err_t *pe, int err, int status,
                             const char *code, const char *what)
{
    if (pe && pe->code[0]) {
        sg_http_respond_error(req, pe->status ? pe->status : status, pe->code, pe->message);
        return;
    }
    char m[256];
    snprintf(m, sizeof(m), "%s: %s", what, sg_strerror(err));
    sg_http_respond_error(req, status, code, m);
}

static void not_found(sg_http_req_t *req, const char *id)
{
    char m[256];
    snprintf(m, sizeof(m), "Sandbox %.64s not found.", id);
    sg_http_respond_error(req, 404, "SANDBOX::SANDBOX_NOT_FOUND", m);
}

static sg_tenant_t *tenant_of(sg_api_t *a, sg_http_req_t *req)
{
    /* One tenant for now; API keys will map to tenants. */
    (void)req;
    return sg_sbx_tenant(&a->store, a->cfg.tenant, 1);
}

/* --- timers */

static void arm_ready(sg_api_t *a, sg_sandbox_t *s)
{
    unsigned step = s->ping_step < NSTEPS ? s->ping_step : NSTEPS - 1;
    s->ping_step++;
    sg_tentry_arm(&a->ready_lists[step][rnd(a, NJITTER)], &s->ready_timer);
}

static void arm_health(sg_api_t *a, sg_sandbox_t *s)
{
    if (a->cfg.health_interval_ms)
        sg_tentry_arm(&a->health_lists[rnd(a, NJITTER)], &s->ready_timer);
}

static void stop_watch(sg_sandbox_t *s)
{
    sg_tentry_disarm(&s->ready_timer);
    if (s->ping) sg_http_creq_cancel(s->ping); /* ping_done clears s->ping */
}

static void on_expiry(uv_timer_t *t);

static void expiry_rearm(sg_api_t *a)
{
    if (a->closing) return;
    int64_t next = 0;
    for (sg_tenant_t *t = a->store.tenants; t; t = t->next)
        for (sg_sandbox_t *s = t->head; s; s = s->next)
            for (int k = 0; k < 2; k++) {
                int64_t at = k ? s->reap_us : s->expires_us;
                if (at && !s->busy && (!next || at < next)) next = at;
            }
    if (!next) {
        uv_timer_stop(&a->expiry_timer);
        return;
    }
    int64_t delay = (next - sg_sbx_now_us() + 999) / 1000;
    if (delay < 0) delay = 0;
    /* Wall-clock deadlines on a monotonic timer: wake at least once a minute to notice jumps. */
    if (delay > 60000) delay = 60000;
    uv_timer_start(&a->expiry_timer, on_expiry, (uint64_t)delay, 0);
}

/* --- durability (store.h): every record change is written; what a client is told was done
 * (create, delete, pause, resume, metadata, renew) is answered only once it is committed. */

static char *request_json(const sg_sandbox_t *s)
{
    json_t *o = json_object();
    if (s->image) json_object_set_new(o, "image", json_string(s->image));
    if (s->entrypoint) json_object_set(o, "entrypoint", s->entrypoint);
    if (s->env) json_object_set(o, "env", s->env);
    if (s->platform) json_object_set(o, "platform", s->platform);
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

static void store_logged(void *ud, int err, const char *msg)
{
    char *id = ud;
    if (err < 0)
        sg_log_kv(SG_LOG_ERROR, "store: writing a sandbox record failed", "id", id, "error",
                  msg ? msg : sg_strerror(err), NULL);
    free(id);
}

/* Writes s; cb(ud, err, msg) once it is committed (cb NULL: errors are logged). Without a
 * store, cb runs at once. */
static void store_put(sg_api_t *a, sg_sandbox_t *s, sg_store_cb cb, void *ud)
{
    if (!a->cfg.store) {
        if (cb) cb(ud, 0, NULL);
        return;
    }
    char *req = request_json(s);
    char *meta = json_dumps(s->metadata, JSON_COMPACT);
    sg_store_sandbox_t r = {
        .id = s->id,
        .tenant = a->cfg.tenant,
        .provider = a->cfg.provider_name ? a->cfg.provider_name : "local",
        .provider_id = s->has_handle ? s->handle.provider_id : NULL,
        .execd = s->has_handle ? s->handle.execd : NULL,
        .access_token = s->has_handle ? s->handle.access_token : NULL,
        .create_request = req,
        .state = sg_sbx_state_name(s->state),
        .reason = s->reason,
        .message = s->message,
        .metadata = meta,
        .created_us = s->created_us,
        .expires_us = s->expires_us,
        .transition_us = s->transition_us,
        .reap_us = s->reap_us,
    };
    if (!cb) {
        cb = store_logged;
        ud = sg_xstrdup(s->id);
    }
    int rc = sg_store_put_sandbox(a->cfg.store, &r, cb, ud);
    free(req);
    free(meta);
    if (rc < 0) cb(ud, rc, "the store refused the write (closed or its queue is full)");
}

static void store_delete(sg_api_t *a, const char *id, sg_store_cb cb, void *ud)
{
    if (!a->cfg.store) {
        if (cb) cb(ud, 0, NULL);
        return;
    }
    if (!cb) {
        cb = store_logged;
        ud = sg_xstrdup(id);
    }
    int rc = sg_store_delete_sandbox(a->cfg.store, id, cb, ud);
    if (rc < 0) cb(ud, rc, "the store refused the write (closed or its queue is full)");
}

/* sg_sbx_changed_hook: state changes are written as they happen. */
static void on_sbx_changed(sg_sandbox_t *s)
{
    sg_api_t *a = s->api;
    if (a && !a->restoring) store_put(a, s, NULL, NULL);
}

/* Answering a request once the change it made is durable. */
typedef struct ack {
    sg_http_req_t *req;
    int status;
    json_t *body; /* NULL: an empty body */
} ack_t;

static void on_ack(void *ud, int err, const char *msg)
{
    ack_t *k = ud;
    if (err < 0) {
        char m[512];
        snprintf(m, sizeof(m), "the change could not be made durable: %s",
                 msg ? msg : sg_strerror(err));
        sg_http_respond_error(k->req, 500, "SANDBOX::STORE_FAILED", m);
    } else if (k->body) {
        sg_http_respond_json(k->req, k->status, k->body);
    } else {
        sg_http_respond(k->req, k->status, NULL, NULL, 0);
    }
    json_decref(k->body);
    free(k);
}

/* Writes s, then answers req with status and body (stolen; NULL = empty). */
static void persist_then_respond(sg_api_t *a, sg_sandbox_t *s, sg_http_req_t *req, int status,
                                 json_t *body)
{
    ack_t *k = sg_xcalloc(1, sizeof(*k));
    k->req = req;
    k->status = status;
    k->body = body;
    store_put(a, s, on_ack, k);
}

/* --- provider operations */

typedef struct op {
    sg_api_t *a;
    sg_sandbox_t *s;
    sg_http_req_t *req; /* NULL for timer-driven operations */
    sg_sbx_state_t prev;
} op_t;

static op_t *op_new(sg_api_t *a, sg_sandbox_t *s, sg_http_req_t *req)
{
    op_t *o = sg_xcalloc(1, sizeof(*o));
    o->a = a;
    o->s = s ? sg_sbx_ref(s) : NULL;
    o->req = req;
    if (s) o->prev = s->state;
    a->ops++;
    return o;
}

static void maybe_closed(sg_api_t *a);

static void op_free(op_t *o)
{
    sg_api_t *a = o->a;
    if (o->s) sg_sbx_unref(o->s);
    free(o);
    a->ops--;
    maybe_closed(a);
}

static void sandbox_delete(sg_api_t *a, sg_sandbox_t *s, sg_http_req_t *req);

/* Failed: the record stays (clients see why); whatever the provider made is destroyed. */
static void on_fail_destroyed(void *ud, int err, const sg_prov_err_t *e)
{
    op_t *o = ud;
    o->s->busy = 0;
    if (err < 0)
        sg_log_kv(SG_LOG_WARN, "destroy of a failed sandbox failed", "id", o->s->id, "error",
                  e && e->message[0] ? e->message : sg_strerror(err), NULL);
    else
        o->s->has_handle = 0;
    if (o->s->linked) expiry_rearm(o->a);
    op_free(o);
}

static void sandbox_fail(sg_api_t *a, sg_sandbox_t *s, const char *reason, const char *msg)
{
    stop_watch(s);
    sg_sbx_set_state(s, SG_SBX_FAILED, reason, "%s", msg);
    /* Kept so clients can see why, but not forever (the reference keeps them an hour). */
    if (a->cfg.failed_ttl_ms) s->reap_us = sg_sbx_now_us() + (int64_t)a->cfg.failed_ttl_ms * 1000;
    if (!a->restoring) store_put(a, s, NULL, NULL);
    expiry_rearm(a);
    sg_log_kv(SG_LOG_WARN, "sandbox failed", "id", s->id, "reason", reason, "message", msg, NULL);
    if (!s->has_handle || s->busy) return;
    s->busy = 1;
    op_t *o = op_new(a, s, NULL);
    int r = s->prov->ops->destroy(s->prov, &s->handle, on_fail_destroyed, o);
    if (r < 0) on_fail_destroyed(o, r, NULL);
}

/* --- pings (WaitReady and health) */

static void on_check(void *ud, int alive, const sg_prov_err_t *e)
{
    op_t *o = ud;
    sg_sandbox_t *s = o->s;
    if (s->linked && !o->a->closing && s->state == SG_SBX_RUNNING) {
        if (alive)
            arm_health(o->a, s);
        else
            sandbox_fail(o->a, s, "SANDBOX_EXITED",
                         e && e->message[0] ? e->message : "the sandbox's processes are gone");
    }
    op_free(o);
}

/* Running, with what the provider enforced in the message, so clients see the limits that
 * actually apply (cgroup v2/v1, rlimits, or unenforced) in the sandbox's status. */
static void set_running(sg_sandbox_t *s)
{
    if (s->handle.enforced[0])
        sg_sbx_set_state(s, SG_SBX_RUNNING, "SANDBOX_RUNNING", "Sandbox is running. Enforced: %s.",
                         s->handle.enforced);
    else
        sg_sbx_set_state(s, SG_SBX_RUNNING, "SANDBOX_RUNNING", "Sandbox is running.");
}

static void ping_done(sg_http_creq_t *r, void *data, int err, const char *msg)
{
    sg_sandbox_t *s = data;
    sg_api_t *a = s->api;
    int status = sg_http_creq_status(r);
    s->ping = NULL;
    int ok = err == 0 && status >= 200 && status < 300;
    if (!s->linked || a->closing || err == SG_ECLOSED) goto out;
    char why[256];
    if (!ok) snprintf(why, sizeof(why), "%s", err ? (msg ? msg : sg_strerror(err)) : "");
    if (!ok && !err) snprintf(why, sizeof(why), "/ping answered %d", status);
    if (s->state == SG_SBX_PENDING) {
        if (ok) {
            set_running(s);
            s->missed_pings = 0;
            arm_health(a, s);
        } else if ((int64_t)uv_now(a->loop) >= s->ready_deadline_ms) {
            char m[512];
            snprintf(m, sizeof(m), "execd did not answer /ping within %llu ms (last: %s)",
                     (unsigned long long)a->cfg.ready_timeout_ms, why);
            sandbox_fail(a, s, "READY_TIMEOUT", m);
        } else {
            arm_ready(a, s);
        }
    } else if (s->state == SG_SBX_RUNNING) {
        if (ok) {
            if (s->missed_pings)
                set_running(s);
            s->missed_pings = 0;
            arm_health(a, s);
        } else {
            s->missed_pings++;
            sg_sbx_set_state(s, SG_SBX_RUNNING, "EXECD_UNREACHABLE", "execd missed %u ping%s: %s",
                             s->missed_pings, s->missed_pings == 1 ? "" : "s", why);
            /* Is the sandbox still there at all? */
            op_t *o = op_new(a, s, NULL);
            int rc =
                s->prov->ops->check ? s->prov->ops->check(s->prov, &s->handle, on_check, o) : -1;
            if (rc < 0) {
                arm_health(a, s);
                op_free(o);
            }
        }
    }
out:
    sg_sbx_unref(s);
}

static void ping_body(sg_http_creq_t *r, void *data, const char *p, size_t n)
{
    (void)r, (void)data, (void)p, (void)n;
}

static void on_ping_timer(sg_tentry_t *e)
{
    sg_sandbox_t *s = SG_CONTAINER_OF(e, sg_sandbox_t, ready_timer);
    sg_api_t *a = s->api;
    if (!s->linked || !s->has_handle || s->ping || a->closing) return;
    if (s->state != SG_SBX_PENDING && s->state != SG_SBX_RUNNING) return;
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    if (s->handle.access_token[0]) sg_hdrs_addz(&h, "X-EXECD-ACCESS-TOKEN", s->handle.access_token);
    sg_http_creq_opts_t o;
    memset(&o, 0, sizeof(o));
    o.method = "GET";
    o.origin = s->handle.execd;
    o.target = "/ping";
    o.headers = &h;
    o.on_body = ping_body;
    o.on_done = ping_done;
    o.data = s;
    int r = sg_http_request(a->ping_client, &o, &s->ping);
    sg_hdrs_free(&h);
    if (r < 0) {
        s->ping = NULL;
        /* Cannot even start (bad origin): treat like a failed ping on the next tick. */
        if (s->state == SG_SBX_PENDING && (int64_t)uv_now(a->loop) >= s->ready_deadline_ms)
            sandbox_fail(a, s, "READY_TIMEOUT", "execd address is not usable");
        else if (s->state == SG_SBX_PENDING)
            arm_ready(a, s);
        else
            arm_health(a, s);
        return;
    }
    sg_sbx_ref(s);
}

static void start_wait_ready(sg_api_t *a, sg_sandbox_t *s)
{
    s->ping_step = 0;
    s->ready_deadline_ms = (int64_t)(uv_now(a->loop) + a->cfg.ready_timeout_ms);
    on_ping_timer(&s->ready_timer); /* first ping right away */
}

/* --- expiry */

static void on_expiry(uv_timer_t *t)
{
    sg_api_t *a = t->data;
    int64_t now = sg_sbx_now_us();
    for (sg_tenant_t *tn = a->store.tenants; tn; tn = tn->next) {
        sg_sandbox_t *s = tn->head;
        while (s) {
            sg_sandbox_t *next = s->next;
            int expired = s->expires_us && s->expires_us <= now;
            int reaped = s->reap_us && s->reap_us <= now;
            if ((expired || reaped) && !s->busy) {
                sg_log_kv(SG_LOG_INFO, expired ? "sandbox expired" : "failed sandbox reaped", "id",
                          s->id, NULL);
                sandbox_delete(a, s, NULL); /* unlinks s; next is still linked */
            }
            s = next;
        }
    }
    expiry_rearm(a);
}

/* --- create */

typedef struct create_op {
    op_t op;
    sg_api_create_t c;
    json_t *body;
} create_op_t;

static void on_created(void *ud, int err, const sg_prov_err_t *e, const sg_sandbox_handle_t *h)
{
    op_t *o = ud;
    sg_api_t *a = o->a;
    sg_sandbox_t *s = o->s;
    a->creating--;
    if (err < 0) {
        respond_prov_err(o->req, e, err, 500, "SANDBOX::CREATE_FAILED",
                         "cannot create the sandbox");
        op_free(o);
        return;
    }
    s->handle = *h;
    s->has_handle = 1;
    s->prov = a->prov;
    if (a->closing) {
        /* Shutting down: sandboxes outlive the gateway, but this one was never answered. */
        sg_http_respond_error(o->req, 503, "SANDBOX::SHUTTING_DOWN",
                              "the gateway is shutting down");
        op_free(o);
        return;
    }
    sg_sbx_set_state(s, SG_SBX_PENDING, "SANDBOX_STARTING", "Waiting for execd to answer /ping.");
    sg_sbx_link(sg_sbx_tenant(&a->store, a->cfg.tenant, 1), s);
    sg_log_kv(SG_LOG_INFO, "sandbox created", "id", s->id, "image", s->image, "execd",
              s->handle.execd, "enforced", s->handle.enforced, NULL);
    persist_then_respond(a, s, o->req, 202, sg_sbx_create_json(s));
    start_wait_ready(a, s);
    expiry_rearm(a);
    op_free(o);
}

/* The common start of every JSON-body route: 1 when the request was answered (or released)
 * here, 0 with *out parsed. Invalid JSON gets FastAPI's 422 json_invalid shape. */
static int read_json_body(sg_http_req_t *req, int err, const char *body, size_t len, json_t **out)
{
    if (err == SG_ETOOBIG) return 1; /* the server answered 413 */
    if (err < 0) {
        sg_http_req_release(req);
        return 1;
    }
    sg_json_err_t je;
    sg_json_err_init(&je);
    if (sg_json_parse(body, len, 0, out, &je) == 0) return 0;
    sg_api_err_t e;
    sg_api_err_init(&e);
    sg_api_err_422(&e, "json_invalid", json_pack("[s,i]", "body", 0), "JSON decode error",
                   json_object());
    json_object_set_new(json_array_get(e.detail, 0), "ctx", json_pack("{s:s}", "error", je.message));
    respond_err(req, &e);
    sg_api_err_free(&e);
    return 1;
}

static void on_create_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    sg_api_t *a = ud;
    json_t *j = NULL;
    if (read_json_body(req, err, body, len, &j)) return;
    sg_api_err_t e;
    sg_api_err_init(&e);
    sg_api_create_t c;
    if (sg_api_parse_create(j, &a->cfg, &c, &e)) {
        respond_err(req, &e);
        sg_api_err_free(&e);
        json_decref(j);
        return;
    }
    sg_tenant_t *t = tenant_of(a, req);
    if (!a->prov) {
        sg_http_respond_error(req, 503, "SANDBOX::NO_PROVIDER",
                              "this gateway has no sandbox provider (--provider)");
    } else if (a->closing) {
        sg_http_respond_error(req, 503, "SANDBOX::SHUTTING_DOWN", "the gateway is shutting down");
    } else if ((int64_t)(t->count + a->creating) >= a->cfg.max_sandboxes) {
        char m[160];
        snprintf(m, sizeof(m), "the tenant already has %zu sandboxes (--max-sandboxes %lld)",
                 t->count + a->creating, (long long)a->cfg.max_sandboxes);
        sg_http_respond_error(req, 429, "SANDBOX::QUOTA_EXCEEDED", m);
    } else {
        sg_sandbox_t *s = sg_sbx_new();
        s->api = a;
        sg_tentry_init(&s->ready_timer, on_ping_timer);
        s->image = sg_xstrdup(c.image);
        json_decref(s->entrypoint);
        s->entrypoint = json_incref(c.entrypoint);
        json_object_update(s->env, c.env);
        if (c.metadata) json_object_update(s->metadata, c.metadata);
        if (c.platform) s->platform = json_deep_copy(c.platform);
        if (c.timeout_s) s->expires_us = s->created_us + c.timeout_s * 1000000;

        size_t n_ep = json_array_size(c.entrypoint), n_env = json_object_size(c.env);
        const char **argv = sg_xcalloc(n_ep + 1, sizeof(char *));
        for (size_t i = 0; i < n_ep; i++)
            argv[i] = json_string_value(json_array_get(c.entrypoint, i));
        sg_kv_t *env = sg_xcalloc(n_env + 1, sizeof(sg_kv_t));
        const char *k;
        json_t *v;
        size_t i = 0;
        json_object_foreach(c.env, k, v)
        {
            env[i].key = k;
            env[i++].value = json_string_value(v);
        }
        sg_sandbox_spec_t spec = {
            .id = s->id,
            .tenant = t->name,
            .image = c.image,
            .entrypoint = argv,
            .n_entrypoint = n_ep,
            .env = env,
            .n_env = n_env,
            .cpu_millis = c.cpu_millis,
            .memory_bytes = c.memory_bytes,
            .pids = c.pids,
            .network_allow = c.network_allow,
            .volumes = c.volumes,
            .n_volumes = c.n_volumes,
        };
        op_t *o = op_new(a, s, req);
        sg_sbx_unref(s); /* the op holds it */
        a->creating++;
        int r = a->prov->ops->create(a->prov, &spec, on_created, o);
        free(argv);
        free(env);
        if (r < 0) {
            sg_prov_err_t pe;
            memset(&pe, 0, sizeof(pe));
            on_created(o, r, &pe, NULL);
        }
    }
    sg_api_create_free(&c);
    json_decref(j);
}

/* --- delete */

static void on_deleted(void *ud, int err, const sg_prov_err_t *e)
{
    op_t *o = ud;
    sg_sandbox_t *s = o->s;
    s->busy = 0;
    if (err < 0) {
        /* Keep the record so the client can see it and retry; an expiry-driven delete is
         * retried by the expiry timer in 30 s (never at once: that would spin). */
        sg_sbx_set_state(s, SG_SBX_FAILED, "DELETE_FAILED", "%s",
                         e && e->message[0] ? e->message : sg_strerror(err));
        s->expires_us = 0;
        if (!o->req)
            s->reap_us = sg_sbx_now_us() + 30000000;
        else if (o->a->cfg.failed_ttl_ms)
            s->reap_us = sg_sbx_now_us() + (int64_t)o->a->cfg.failed_ttl_ms * 1000;
        if (!o->a->closing) sg_sbx_link(sg_sbx_tenant(&o->a->store, o->a->cfg.tenant, 1), s);
        store_put(o->a, s, NULL, NULL);
        if (o->req)
            respond_prov_err(o->req, e, err, 500, "SANDBOX::SANDBOX_DELETE_FAILED",
                             "cannot delete the sandbox");
    } else {
        s->has_handle = 0;
        sg_log_kv(SG_LOG_INFO, "sandbox deleted", "id", s->id, NULL);
        if (o->req) {
            ack_t *k = sg_xcalloc(1, sizeof(*k));
            k->req = o->req;
            k->status = 204;
            store_delete(o->a, s->id, on_ack, k);
        } else {
            store_delete(o->a, s->id, NULL, NULL);
        }
    }
    expiry_rearm(o->a);
    op_free(o);
}

static void sandbox_delete(sg_api_t *a, sg_sandbox_t *s, sg_http_req_t *req)
{
    stop_watch(s);
    sg_sbx_ref(s);
    sg_sbx_unlink(s); /* gone for every lookup from now on */
    sg_procs_drop_sandbox(a->procs, s, 0);
    sg_sbx_set_state(s, SG_SBX_STOPPING, "SANDBOX_DELETING", NULL);
    if (s->has_handle) {
        s->busy = 1;
        op_t *o = op_new(a, s, req);
        int r = s->prov->ops->destroy(s->prov, &s->handle, on_deleted, o);
        if (r < 0) on_deleted(o, r, NULL);
    } else if (req) {
        ack_t *k = sg_xcalloc(1, sizeof(*k));
        k->req = req;
        k->status = 204;
        store_delete(a, s->id, on_ack, k);
    } else {
        store_delete(a, s->id, NULL, NULL);
    }
    sg_sbx_unref(s);
}

/* --- pause / resume */

static void on_paused_resumed(void *ud, int err, const sg_prov_err_t *e)
{
    op_t *o = ud;
    sg_sandbox_t *s = o->s;
    sg_api_t *a = o->a;
    int pausing = o->prev == SG_SBX_RUNNING;
    s->busy = 0;
    if (err < 0) {
        sg_sbx_set_state(s, o->prev, s->reason, "%s", s->message);
        respond_prov_err(o->req, e, err, 500,
                         pausing ? "SANDBOX::SANDBOX_PAUSE_FAILED"
                                 : "SANDBOX::SANDBOX_RESUME_FAILED",
                         pausing ? "cannot pause the sandbox" : "cannot resume the sandbox");
        if (!pausing || o->prev == SG_SBX_RUNNING) arm_health(a, s);
    } else if (pausing) {
        sg_sbx_set_state(s, SG_SBX_PAUSED, "SANDBOX_PAUSED", "Sandbox is paused.");
        persist_then_respond(a, s, o->req, 202, NULL);
    } else {
        set_running(s);
        s->missed_pings = 0;
        arm_health(a, s);
        persist_then_respond(a, s, o->req, 202, NULL);
    }
    if (s->linked) expiry_rearm(a); /* an expiry that came due while busy */
    op_free(o);
}

static void pause_resume(sg_api_t *a, sg_http_req_t *req, sg_sandbox_t *s, int pause)
{
    if (s->busy || s->state != (pause ? SG_SBX_RUNNING : SG_SBX_PAUSED)) {
        char m[160];
        snprintf(m, sizeof(m), "Sandbox %s is %s%s.", s->id, sg_sbx_state_name(s->state),
                 pause ? ", not Running" : ", not Paused");
        sg_http_respond_error(
            req, 409, pause ? "SANDBOX::SANDBOX_NOT_RUNNING" : "SANDBOX::SANDBOX_NOT_PAUSED", m);
        return;
    }
    int (*fn)(sg_provider_t *, const sg_sandbox_handle_t *, sg_prov_done_cb, void *) =
        pause ? s->prov->ops->pause : s->prov->ops->resume;
    if (!fn) {
        sg_http_respond_error(req, 400, "SANDBOX::API_NOT_SUPPORTED",
                              "this provider cannot pause or resume sandboxes");
        return;
    }
    stop_watch(s);
    op_t *o = op_new(a, s, req);
    s->busy = 1;
    sg_sbx_set_state(s, pause ? SG_SBX_PAUSING : SG_SBX_RESUMING,
                     pause ? "SANDBOX_PAUSING" : "SANDBOX_RESUMING", NULL);
    int r = fn(s->prov, &s->handle, on_paused_resumed, o);
    if (r < 0) on_paused_resumed(o, r, NULL);
}

/* --- metadata, renew */

static void on_patch_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    char *id = ud;
    sg_api_t *a = sg_http_req_data(req);
    sg_http_req_set_data(req, NULL);
    json_t *j = NULL;
    if (read_json_body(req, err, body, len, &j)) goto out;
    sg_api_err_t e;
    sg_api_err_init(&e);
    sg_sandbox_t *s = sg_sbx_find(tenant_of(a, req), id);
    char code[64], msg[512];
    int st;
    if (!s)
        not_found(req, id);
    else if ((st = sg_sbx_metadata_patch(s->metadata, j, code, msg, sizeof(msg))) == 422) {
        sg_api_err_422(&e, "dict_type", json_pack("[s]", "body"), msg, json_incref(j));
        respond_err(req, &e);
        sg_api_err_free(&e);
    } else if (st) {
        sg_http_respond_error(req, st, code, msg);
    } else {
        persist_then_respond(a, s, req, 200, sg_sbx_json(s));
    }
    json_decref(j);
out:
    free(id);
}

static void on_renew_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    char *id = ud;
    sg_api_t *a = sg_http_req_data(req);
    sg_http_req_set_data(req, NULL);
    json_t *j = NULL;
    if (read_json_body(req, err, body, len, &j)) goto out;
    sg_api_err_t e;
    sg_api_err_init(&e);
    int64_t us = 0;
    if (!json_is_object(j)) {
        sg_api_err_422(&e, "model_attributes_type", json_pack("[s]", "body"),
                       "Input should be a valid dictionary or object to extract fields from",
                       json_incref(j));
    } else {
        json_t *v = json_object_get(j, "expiresAt");
        if (!v)
            sg_api_err_422(&e, "missing", json_pack("[s,s]", "body", "expiresAt"), "Field required",
                           json_incref(j));
        else if (!json_is_string(v) || sg_sbx_parse_time(json_string_value(v), &us) < 0)
            sg_api_err_422(&e, "datetime_from_date_parsing",
                           json_pack("[s,s]", "body", "expiresAt"),
                           "Input should be a valid datetime", json_incref(v));
    }
    if (sg_api_err_status(&e)) {
        respond_err(req, &e);
        sg_api_err_free(&e);
        json_decref(j);
        goto out;
    }
    json_decref(j);
    sg_sandbox_t *s = sg_sbx_find(tenant_of(a, req), id);
    if (!s) {
        not_found(req, id);
    } else if (!s->expires_us) {
        sg_http_respond_error(req, 409, "SANDBOX::INVALID_EXPIRATION",
                              "Sandbox has no expiration (it was created without a timeout).");
    } else if (us <= sg_sbx_now_us()) {
        sg_http_respond_error(req, 400, "SANDBOX::INVALID_EXPIRATION",
                              "New expiration time must be in the future.");
    } else {
        s->expires_us = us;
        expiry_rearm(a);
        char t[40];
        sg_sbx_format_time(us, t);
        persist_then_respond(a, s, req, 200, json_pack("{s:s}", "expiresAt", t));
    }
out:
    free(id);
}

/* --- endpoints, proxy */

static int parse_port(const char *s, size_t n, unsigned *port)
{
    if (n == 0 || n > 9) return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *port = v;
    return 0;
}

static void get_endpoint(sg_api_t *a, sg_http_req_t *req, sg_sandbox_t *s, const char *port_s)
{
    unsigned port;
    char v[64];
    if (parse_port(port_s, strlen(port_s), &port) < 0) {
        sg_api_err_t e;
        sg_api_err_init(&e);
        sg_api_err_422(&e, "int_parsing", json_pack("[s,s]", "path", "port"),
                       "Input should be a valid integer, unable to parse string as an integer",
                       json_string(port_s));
        respond_err(req, &e);
        sg_api_err_free(&e);
        return;
    }
    if (port < 1 || port > 65535) {
        sg_http_respond_error(req, 400, "SANDBOX::INVALID_PORT", "Port must be in 1..65535.");
        return;
    }
    int proxy = 0, has_expires = 0;
    if (sg_http_req_query_param(req, "use_server_proxy", v, sizeof(v)) >= 0) {
        if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") ||
            !strcasecmp(v, "on"))
            proxy = 1;
        else if (strcasecmp(v, "false") && strcmp(v, "0") && strcasecmp(v, "no") &&
                 strcasecmp(v, "off")) {
            sg_api_err_t e;
            sg_api_err_init(&e);
            sg_api_err_422(&e, "bool_parsing", json_pack("[s,s]", "query", "use_server_proxy"),
                           "Input should be a valid boolean, unable to interpret input",
                           json_string(v));
            respond_err(req, &e);
            sg_api_err_free(&e);
            return;
        }
    }
    if (sg_http_req_query_param(req, "expires", v, sizeof(v)) >= 0) has_expires = 1;
    if (has_expires) {
        if (proxy)
            sg_http_respond_error(req, 400, "SANDBOX::INVALID_PARAMETER",
                                  "use_server_proxy and expires cannot be combined.");
        else
            sg_http_respond_error(req, 400, "SANDBOX::API_NOT_SUPPORTED",
                                  "Signed endpoints (expires) are not supported by this server.");
        return;
    }
    /* Every port goes through this server's proxy: it is the one address the client is known
     * to reach. The host is the one the client used (no scheme: the SDK adds its own). */
    const char *host = sg_http_req_header(req, "Host");
    if (!host || !*host || strlen(host) > 255 || strpbrk(host, "/ \t\r\n")) host = a->cfg.listen;
    char ep[512];
    snprintf(ep, sizeof(ep), "%s/sandboxes/%s/proxy/%u", host, s->id, port);
    respond_json(req, 200, json_pack("{s:s}", "endpoint", ep));
}

static void unref_sandbox(void *ud)
{
    sg_sbx_unref(ud);
}

static void on_proxied_ping(void *ud, int status)
{
    sg_sandbox_t *s = ud;
    sg_api_t *a = s->api;
    if (status < 200 || status >= 300 || !s->linked || s->state != SG_SBX_PENDING || a->closing)
        return;
    stop_watch(s);
    set_running(s);
    s->missed_pings = 0;
    arm_health(a, s);
}

static int method_is(sg_http_req_t *req, const char *m);

static void proxy_request(sg_api_t *a, sg_http_req_t *req, const char *id, size_t id_len,
                          const char *rest)
{
    /* rest: "{port}" or "{port}/path..." */
    const char *slash = strchr(rest, '/');
    size_t pn = slash ? (size_t)(slash - rest) : strlen(rest);
    unsigned port;
    if (parse_port(rest, pn, &port) < 0 || port < 1 || port > 65535) {
        sg_http_respond_error(req, 400, "SANDBOX::INVALID_PORT", "Port must be in 1..65535.");
        return;
    }
    char idbuf[64];
    if (id_len >= sizeof(idbuf)) {
        sg_http_respond_error(req, 502, "GENERAL::UNKNOWN_ERROR", "no such sandbox");
        return;
    }
    memcpy(idbuf, id, id_len);
    idbuf[id_len] = '\0';
    sg_sandbox_t *s = sg_sbx_find(tenant_of(a, req), idbuf);
    if (!s || !s->has_handle || (s->state != SG_SBX_RUNNING && s->state != SG_SBX_PENDING)) {
        char m[256];
        snprintf(m, sizeof(m), "Could not connect to the backend sandbox %s: %s", idbuf,
                 !s               ? "no such sandbox"
                 : !s->has_handle ? "it has no running processes"
                                  : sg_sbx_state_name(s->state));
        sg_http_respond_error(req, 502, "GENERAL::UNKNOWN_ERROR", m);
        return;
    }
    const char *path = slash ? slash : "/";
    if (port == EXECD_PORT && s->state == SG_SBX_RUNNING) {
        /* Commands become processes the gateway owns (process.h); their status and logs are
         * answered from its own log. */
        if (strcmp(path, "/command") == 0 && method_is(req, "POST")) {
            sg_procs_command(a->procs, s, req);
            return;
        }
        if (method_is(req, "GET") && sg_procs_execd_get(a->procs, s, req, path)) return;
    }
    const char *q = sg_http_req_query(req);
    char *target;
    size_t tl = strlen(path) + strlen(q) + 32;
    target = sg_xmalloc(tl);
    if (port == EXECD_PORT)
        snprintf(target, tl, "%s%s%s", path, *q ? "?" : "", q);
    else
        snprintf(target, tl, "/proxy/%u%s%s%s", port, path, *q ? "?" : "", q);
    sg_proxy_target_t t = {
        .origin = s->handle.execd,
        .access_token = s->handle.access_token,
        .target = target,
        .tls = a->cfg.tls,
    };
    if (port == EXECD_PORT && strcmp(path, "/ping") == 0 && s->state == SG_SBX_PENDING) {
        /* A client's own readiness poll (the SDK's) went through: when execd says yes, the
         * sandbox is Running before the client hears it, so its next GET agrees. */
        t.on_status = on_proxied_ping;
        t.release = unref_sandbox;
        t.ud = sg_sbx_ref(s);
    }
    sg_proxy_forward(a->proxy_client, req, &t);
    free(target);
}

/* --- routing */

static int method_is(sg_http_req_t *req, const char *m)
{
    return strcmp(sg_http_req_method(req), m) == 0;
}

static void bad_method(sg_http_req_t *req)
{
    sg_http_respond_error(req, 405, "METHOD_NOT_ALLOWED", "Method Not Allowed");
}

static void list_sandboxes(sg_api_t *a, sg_http_req_t *req)
{
    sg_sbx_filter_t f;
    sg_api_err_t e;
    sg_api_err_init(&e);
    if (sg_api_parse_list_query(sg_http_req_query(req), &f, &e))
        respond_err(req, &e);
    else
        respond_json(req, 200, sg_sbx_list_json(tenant_of(a, req), &f));
    json_decref(f.metadata);
    sg_api_err_free(&e);
}

static int authorized(sg_api_t *a, sg_http_req_t *req)
{
    if (!a->cfg.api_key || !*a->cfg.api_key) return 1;
    const char *k = sg_http_req_header(req, "OPEN-SANDBOX-API-KEY");
    if (!k || !*k) {
        sg_http_respond_error(req, 401, "MISSING_API_KEY",
                              "Authentication credentials are missing. Provide API key via "
                              "OPEN-SANDBOX-API-KEY header.");
        return 0;
    }
    /* Constant time over the configured key's length. */
    size_t n = strlen(a->cfg.api_key), m = strlen(k);
    unsigned char d = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a->cfg.api_key[i] ^ (i < m ? k[i] : 0));
    if (d) {
        sg_http_respond_error(req, 401, "INVALID_API_KEY",
                              "Authentication credentials are invalid. Check your API key and try "
                              "again.");
        return 0;
    }
    return 1;
}

int sg_api_route(sg_api_t *a, sg_http_req_t *req)
{
    const char *path = sg_http_req_path(req);
    if (strncmp(path, "/v1", 3) == 0 && (path[3] == '/' || path[3] == '\0')) path += 3;

    if (strcmp(path, "/metrics/events") == 0) {
        if (!authorized(a, req)) return 1;
        if (!method_is(req, "POST"))
            bad_method(req);
        else
            sg_http_respond(req, 204, NULL, NULL, 0); /* telemetry: accepted and dropped */
        return 1;
    }
    if (strncmp(path, "/sandboxes", 10) != 0 || (path[10] != '\0' && path[10] != '/')) return 0;
    const char *p = path + 10;
    if (*p == '\0' || strcmp(p, "/") == 0) {
        if (!authorized(a, req)) return 1;
        if (method_is(req, "POST"))
            sg_http_req_read_all(req, 1 << 20, on_create_body, a);
        else if (method_is(req, "GET"))
            list_sandboxes(a, req);
        else
            bad_method(req);
        return 1;
    }
    p++; /* at the id */
    const char *id = p;
    const char *slash = strchr(p, '/');
    size_t id_len = slash ? (size_t)(slash - id) : strlen(id);
    const char *sub = slash ? slash + 1 : "";

    /* The proxy needs no API key (reference: auth-exempt). */
    if (strncmp(sub, "proxy/", 6) == 0 || strcmp(sub, "proxy") == 0) {
        if (strcmp(sub, "proxy") == 0)
            sg_http_respond_error(req, 404, "NOT_FOUND", "no such route");
        else
            proxy_request(a, req, id, id_len, sub + 6);
        return 1;
    }
    if (!authorized(a, req)) return 1;
    char idbuf[64];
    if (id_len == 0 || id_len >= sizeof(idbuf)) {
        sg_http_respond_error(req, 404, "SANDBOX::SANDBOX_NOT_FOUND", "Sandbox not found.");
        return 1;
    }
    memcpy(idbuf, id, id_len);
    idbuf[id_len] = '\0';
    sg_sandbox_t *s = sg_sbx_find(tenant_of(a, req), idbuf);

    if (*sub == '\0') {
        if (!method_is(req, "GET") && !method_is(req, "DELETE"))
            bad_method(req);
        else if (!s)
            not_found(req, idbuf);
        else if (method_is(req, "GET"))
            respond_json(req, 200, sg_sbx_json(s));
        else if (s->busy)
            sg_http_respond_error(req, 409, "SANDBOX::INVALID_STATE",
                                  "Sandbox has an operation in progress; retry.");
        else
            sandbox_delete(a, s, req);
        return 1;
    }
    if (strncmp(sub, "processes", 9) == 0 && (sub[9] == '\0' || sub[9] == '/')) {
        if (!s)
            not_found(req, idbuf);
        else
            sg_procs_route(a->procs, s, req, sub + 9);
        return 1;
    }
    if (strcmp(sub, "metadata") == 0) {
        if (!method_is(req, "PATCH"))
            bad_method(req);
        else if (!s)
            not_found(req, idbuf);
        else {
            sg_http_req_set_data(req, a);
            sg_http_req_read_all(req, 1 << 20, on_patch_body, sg_xstrdup(idbuf));
        }
        return 1;
    }
    if (strcmp(sub, "renew-expiration") == 0) {
        if (!method_is(req, "POST"))
            bad_method(req);
        else if (!s)
            not_found(req, idbuf);
        else {
            sg_http_req_set_data(req, a);
            sg_http_req_read_all(req, 1 << 20, on_renew_body, sg_xstrdup(idbuf));
        }
        return 1;
    }
    if (strcmp(sub, "pause") == 0 || strcmp(sub, "resume") == 0) {
        if (!method_is(req, "POST"))
            bad_method(req);
        else if (!s)
            not_found(req, idbuf);
        else
            pause_resume(a, req, s, sub[0] == 'p');
        return 1;
    }
    if (strncmp(sub, "endpoints/", 10) == 0 && !strchr(sub + 10, '/')) {
        if (!method_is(req, "GET"))
            bad_method(req);
        else if (!s)
            not_found(req, idbuf);
        else
            get_endpoint(a, req, s, sub + 10);
        return 1;
    }
    sg_http_respond_error(req, 404, "NOT_FOUND", "no such route");
    return 1;
}

/* --- life cycle */

int sg_api_new(uv_loop_t *loop, const sg_api_config_t *cfg, sg_provider_t *prov, sg_api_t **out)
{
    sg_api_t *a = sg_xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->cfg = *cfg;
    a->prov = prov;
    sg_sbx_store_init(&a->store);
    sg_sbx_changed_hook = on_sbx_changed;
    if (getrandom(&a->rng, sizeof(a->rng), 0) != sizeof(a->rng) || !a->rng)
        a->rng = 0x9e3779b97f4a7c15ull ^ sg_now_ns();

    sg_http_client_config_t pc;
    memset(&pc, 0, sizeof(pc));
    pc.connect_timeout_ms = 2000;
    pc.response_timeout_ms = 5000;
    pc.max_idle_per_origin = 1;
    int r = sg_http_client_new(loop, &pc, &a->ping_client);
    if (r < 0) {
        free(a);
        return r;
    }
    sg_http_client_config_t xc;
    memset(&xc, 0, sizeof(xc));
    xc.max_conns_per_origin = 64;
    xc.max_idle_per_origin = 8;
    xc.response_timeout_ms = cfg->proxy_timeout_ms;
    xc.body_idle_timeout_ms = cfg->proxy_timeout_ms;
    if ((r = sg_http_client_new(loop, &xc, &a->proxy_client)) < 0) {
        sg_http_client_close(a->ping_client, NULL, NULL);
        free(a);
        return r;
    }
    if ((r = sg_procs_new(loop, &cfg->stream, 0, &a->procs)) < 0) {
        sg_http_client_close(a->ping_client, NULL, NULL);
        sg_http_client_close(a->proxy_client, NULL, NULL);
        free(a);
        return r;
    }
    sg_procs_set_store(a->procs, cfg->store, cfg->data_dir);
    static const unsigned jitter_pct[NJITTER] = {80, 90, 100, 110, 120};
    for (size_t i = 0; i < NSTEPS; i++)
        for (int j = 0; j < NJITTER; j++)
            sg_tlist_init(loop, &a->ready_lists[i][j], ready_steps[i] * jitter_pct[j] / 100);
    for (int j = 0; j < NJITTER; j++)
        sg_tlist_init(loop, &a->health_lists[j], cfg->health_interval_ms * jitter_pct[j] / 100);
    uv_timer_init(loop, &a->expiry_timer);
    a->expiry_timer.data = a;
    *out = a;
    return 0;
}

static void close_step(sg_api_t *a)
{
    if (--a->closes_pending) return;
    sg_sbx_changed_hook = NULL;
    sg_sbx_store_free(&a->store);
    void (*cb)(void *) = a->close_cb;
    void *ud = a->close_ud;
    free(a);
    if (cb) cb(ud);
}

static void on_tlist_closed(sg_tlist_t *l)
{
    /* The lists live inside sg_api_t; their timers' data was set to it before closing. */
    close_step(l->timer.data);
}

static void on_expiry_closed(uv_handle_t *h)
{
    close_step(h->data);
}

static void on_client_closed(void *ud)
{
    close_step(ud);
}

static void on_prov_closed(void *ud)
{
    close_step(ud);
}

static void maybe_closed(sg_api_t *a)
{
    if (!a->closing || a->ops || a->closes_pending) return;
    /* Every provider operation has reported: now close what the api owns. */
    a->closes_pending = 1; /* held until everything below was started */
    for (sg_tenant_t *t = a->store.tenants; t; t = t->next)
        for (sg_sandbox_t *s = t->head; s; s = s->next)
            stop_watch(s);
    for (size_t i = 0; i < NSTEPS; i++)
        for (int j = 0; j < NJITTER; j++) {
            a->closes_pending++;
            a->ready_lists[i][j].timer.data = a;
            sg_tlist_close(&a->ready_lists[i][j], on_tlist_closed);
        }
    for (int j = 0; j < NJITTER; j++) {
        a->closes_pending++;
        a->health_lists[j].timer.data = a;
        sg_tlist_close(&a->health_lists[j], on_tlist_closed);
    }
    sg_procs_shutting_down(a->procs); /* running commands re-attach at the next start */
    for (sg_tenant_t *t = a->store.tenants; t; t = t->next)
        for (sg_sandbox_t *s = t->head; s; s = s->next)
            sg_procs_drop_sandbox(a->procs, s, 1);
    a->closes_pending += 4;
    sg_procs_close(a->procs, on_client_closed, a);
    uv_close((uv_handle_t *)&a->expiry_timer, on_expiry_closed);
    sg_http_client_close(a->ping_client, on_client_closed, a);
    sg_http_client_close(a->proxy_client, on_client_closed, a);
    if (a->prov) {
        a->closes_pending++;
        a->prov->ops->close(a->prov, on_prov_closed, a);
    }
    close_step(a);
}

void sg_api_close(sg_api_t *a, void (*cb)(void *ud), void *ud)
{
    a->closing = 1;
    a->close_cb = cb;
    a->close_ud = ud;
    uv_timer_stop(&a->expiry_timer);
    for (sg_tenant_t *t = a->store.tenants; t; t = t->next)
        for (sg_sandbox_t *s = t->head; s; s = s->next)
            stop_watch(s);
    maybe_closed(a);
}

/* --- GET /metrics (gwmetrics.c): sandboxes by state over every tenant */
void sg_api_count_states(sg_api_t *a, uint64_t out[SG_SBX_NSTATES])
{
    memset(out, 0, sizeof(uint64_t) * SG_SBX_NSTATES);
    for (sg_tenant_t *t = a->store.tenants; t; t = t->next)
        for (sg_sandbox_t *s = t->head; s; s = s->next)
            if ((unsigned)s->state < SG_SBX_NSTATES) out[s->state]++;
}

/* --- restart (store.h) */

static void on_orphan_destroyed(void *ud, int err, const sg_prov_err_t *e)
{
    op_t *o = ud;
    if (err < 0)
        sg_log_kv(SG_LOG_WARN, "could not reap a sandbox without a record", "error",
                  e && e->message[0] ? e->message : sg_strerror(err), NULL);
    op_free(o);
}

static void restore_one(sg_api_t *a, const sg_store_sandbox_t *r, int64_t now)
{
    sg_sandbox_t *s = sg_sbx_new();
    snprintf(s->id, sizeof(s->id), "%s", r->id);
    s->api = a;
    s->prov = a->prov;
    json_t *req = r->create_request ? json_loads(r->create_request, 0, NULL) : NULL;
    const char *image = json_string_value(json_object_get(req, "image"));
    s->image = sg_xstrdup(image ? image : "");
    json_t *v;
    if ((v = json_object_get(req, "entrypoint")) && json_is_array(v)) {
        json_decref(s->entrypoint);
        s->entrypoint = json_incref(v);
    }
    if ((v = json_object_get(req, "env")) && json_is_object(v)) {
        json_decref(s->env);
        s->env = json_incref(v);
    }
    if ((v = json_object_get(req, "platform")) && json_is_object(v)) s->platform = json_incref(v);
    json_decref(req);
    json_t *meta = r->metadata ? json_loads(r->metadata, 0, NULL) : NULL;
    if (json_is_object(meta)) {
        json_decref(s->metadata);
        s->metadata = meta;
    } else {
        json_decref(meta);
    }
    int st = sg_sbx_state_parse(r->state ? r->state : "");
    s->state = st < 0 ? SG_SBX_FAILED : (sg_sbx_state_t)st;
    snprintf(s->reason, sizeof(s->reason), "%s", r->reason ? r->reason : "");
    snprintf(s->message, sizeof(s->message), "%s", r->message ? r->message : "");
    s->created_us = r->created_us;
    s->expires_us = r->expires_us;
    s->transition_us = r->transition_us;
    s->reap_us = r->reap_us;

    /* The real thing: the local provider's state file says how to reach it and whether its
     * processes are still there. */
    int alive = 0;
    sg_local_state_t ls;
    if (a->prov && a->cfg.data_dir && sg_local_state_load(a->cfg.data_dir, s->id, &ls) == 0) {
        sg_local_state_to_handle(&ls, &s->handle);
        s->has_handle = 1;
        alive = sg_local_state_alive(&ls);
    }
    sg_sbx_link(sg_sbx_tenant(&a->store, r->tenant ? r->tenant : a->cfg.tenant, 1), s);
    sg_sbx_unref(s); /* the tenant list holds it */

    if (s->state == SG_SBX_STOPPING || s->state == SG_SBX_TERMINATED ||
        (s->expires_us && s->expires_us <= now)) {
        /* Deleted or expired while the gateway was down: finish the deletion. */
        sg_log_kv(SG_LOG_INFO, "restart: deleting a sandbox that expired or was being deleted",
                  "id", s->id, NULL);
        sandbox_delete(a, s, NULL);
        return;
    }
    if (s->state == SG_SBX_FAILED) {
        if (s->has_handle && !alive) s->has_handle = 0; /* nothing left to destroy */
        return;                                           /* kept until its reap time */
    }
    if (!s->has_handle || !alive) {
        sandbox_fail(a, s, "SANDBOX_LOST",
                     "the sandbox's processes were gone when the gateway restarted");
        return;
    }
    switch (s->state) {
    case SG_SBX_PENDING: start_wait_ready(a, s); break;
    case SG_SBX_PAUSED: break;
    case SG_SBX_PAUSING:
    case SG_SBX_RESUMING:
        /* An operation the crash interrupted: the health check settles it. */
        set_running(s);
        arm_health(a, s);
        break;
    default: arm_health(a, s); break;
    }
}

static int seg_cmp(const sg_store_segment_t *g, const sg_store_process_t *p)
{
    int c = strcmp(g->sandbox_id, p->sandbox_id);
    return c ? c : strcmp(g->process_id, p->id);
}

/* The process's segment rows (the snapshot orders them by sandbox, process and seq). */
static const sg_store_segment_t *segments_of(const sg_store_snapshot_t *snap,
                                             const sg_store_process_t *p, size_t *n)
{
    size_t lo = 0, hi = snap->nsegments;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (seg_cmp(&snap->segments[mid], p) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < snap->nsegments && seg_cmp(&snap->segments[end], p) == 0)
        end++;
    *n = end - lo;
    return *n ? &snap->segments[lo] : NULL;
}

unsigned sg_api_loading(const sg_api_t *a)
{
    return sg_procs_loading(a->procs);
}

size_t sg_api_restore(sg_api_t *a, const sg_store_snapshot_t *snap)
{
    int64_t now = sg_sbx_now_us();
    a->restoring = 1;
    for (size_t i = 0; i < snap->nsandboxes; i++)
        restore_one(a, &snap->sandboxes[i], now);
    a->restoring = 0;
    /* Their processes: finished ones listed again, running ones re-attached. */
    for (size_t i = 0; i < snap->nprocesses; i++) {
        const sg_store_process_t *pr = &snap->processes[i];
        sg_sandbox_t *s = NULL;
        for (sg_tenant_t *t = a->store.tenants; t && !s; t = t->next)
            s = sg_sbx_find(t, pr->sandbox_id);
        if (!s) continue; /* its sandbox was deleted above: its log directory is reaped */
        size_t nseg = 0;
        const sg_store_segment_t *seg = segments_of(snap, pr, &nseg);
        sg_procs_restore(a->procs, s, pr, seg, nseg);
    }
    sg_procs_reap_logs(a->procs);
    /* What restore decided (Failed, deleted) is written now, in one batch. */
    for (sg_tenant_t *t = a->store.tenants; t; t = t->next)
        for (sg_sandbox_t *s = t->head; s; s = s->next)
            store_put(a, s, NULL, NULL);
    /* Sandboxes this gateway made that have no record (created, then the gateway died before
     * the record was committed and the client was answered): reaped. */
    sg_local_state_t *disk = NULL;
    size_t n = 0;
    if (a->prov && a->cfg.data_dir && sg_local_list_on_disk(a->cfg.data_dir, &disk, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            int known = 0;
            for (size_t k = 0; k < snap->nsandboxes && !known; k++)
                known = strcmp(snap->sandboxes[k].id, disk[i].id) == 0;
            if (known) continue;
            sg_log_kv(SG_LOG_WARN, "restart: reaping a sandbox that has no record", "id",
                      disk[i].id, NULL);
            sg_sandbox_handle_t h;
            sg_local_state_to_handle(&disk[i], &h);
            op_t *o = op_new(a, NULL, NULL);
            int r = a->prov->ops->destroy(a->prov, &h, on_orphan_destroyed, o);
            if (r < 0) on_orphan_destroyed(o, r, NULL);
        }
    }
    free(disk);
    expiry_rearm(a);
    return snap->nsandboxes;
}
