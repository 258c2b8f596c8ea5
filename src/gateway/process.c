/* process.c: the gateway's processes, their logs, their subscribers and the upstream stream
 * (process.h); the routes are in process_api.c. */
#define _GNU_SOURCE /* memmem */
#include "process_int.h"
#include "store.h"

#include <errno.h>
#include <jansson.h>
#include <mbedtls/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sandgate/common.h"
#include "sandgate/http_client.h"
#include "sandgate/log.h"
#include "sandgate/plog.h"
#include "sandgate/sse.h"
#include "sandgate/timer.h"

static const char *const state_names[SG_PROC_NSTATES] = {"running", "exited", "failed", "killed",
                                                         "lost"};

const char *sg_proc_state_name(sg_proc_state_t st)
{
    return (unsigned)st < SG_PROC_NSTATES ? state_names[st] : "unknown";
}

int sg_proc_state_parse(const char *s)
{
    for (int i = 0; i < SG_PROC_NSTATES; i++)
        if (strcasecmp(s, state_names[i]) == 0) return i;
    return -1;
}

void sg_stream_config_init(sg_stream_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->log_bytes = 4u << 20;
    c->max_processes = 256;
    c->lag_soft = 2u << 20;
    c->lag_soft_ms = 10000;
    c->lag_hard = 16u << 20;
    c->send_timeout_ms = 30000;
    c->sub_sndbuf = 64 * 1024;
    c->heartbeat_ms = 15000;
    c->ping_ms = 3000;
    c->retry_ms = 2000;
    c->origin_pause = 1u << 20;
    c->exact_output = 1;
    c->disk_segment_bytes = 8u << 20;
    c->disk_process_bytes = 64u << 20;
    c->disk_total_bytes = 1ull << 30;
    c->disk_max_age_ms = 7ull * 24 * 3600 * 1000;
    c->disk_flush_ms = 10;
}

int64_t sg__wall_ms(void)
{
    return sg_sbx_now_us() / 1000;
}

/* ------------------------------------------------------------------ fast JSON field scan */

/* The raw (still escaped) string value of "key" in one compact JSON object. The pattern
 * `"key":"` cannot occur inside an encoded string value (its quotes would be escaped). */
int sg__scan_str(const char *j, size_t n, const char *key, const char **v, size_t *vl)
{
    char pat[64];
    size_t kl = strlen(key);
    if (kl + 4 > sizeof(pat)) return -1;
    pat[0] = '"';
    memcpy(pat + 1, key, kl);
    memcpy(pat + 1 + kl, "\":\"", 3);
    size_t pl = kl + 4;
    const char *p;
    /* execd writes "type" first: {"type":"... */
    if (n > pl && j[0] == '{' && memcmp(j + 1, pat, pl) == 0)
        p = j + 1;
    else if (!(p = memmem(j, n, pat, pl)))
        return -1;
    p += pl;
    const char *end = j + n;
    const char *q = p;
    for (;;) { /* the first quote not escaped by an odd run of backslashes */
        q = memchr(q, '"', (size_t)(end - q));
        if (!q) return -1;
        size_t bs = 0;
        while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0) break;
        q++;
    }
    *v = p;
    *vl = (size_t)(q - p);
    return 0;
}

static size_t b64_decoded_len(const char *s, size_t n)
{
    if (n < 4 || n % 4) return 0;
    size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
    return n / 4 * 3 - pad;
}

/* ------------------------------------------------------------------ processes */

static void sub_end(sub_t *s, int cut);
static uint64_t sub_lag(const sub_t *s);
static void origin_flow(proc_t *p);

static void stats_state(sg_proc_state_t from, sg_proc_state_t to)
{
    if ((int)from >= 0) sg_gw_stats.processes[from]--;
    sg_gw_stats.processes[to]++;
}

proc_t *sg__proc_ref(proc_t *p)
{
    p->refs++;
    return p;
}

void sg__proc_unref(proc_t *p)
{
    if (--p->refs > 0) return;
    if (p->linked || p->prev || p->next) return; /* cannot happen: linking holds a reference */
    sg_gw_stats.log_bytes -= p->log.bytes;
    sg_gw_stats.processes[p->state]--;
    sg_plog_free(&p->log);
    sg__disk_free(p);
    if (p->dec_init) sg_sse_decoder_free(&p->dec);
    if (p->sbx) sg_sbx_unref(p->sbx);
    free(p->command);
    free(p->error);
    free(p->errbody);
    free(p);
}

proc_t *sg__proc_find(sg_sandbox_t *s, const char *id)
{
    for (proc_t *p = s->procs; p; p = p->next)
        if (strcmp(p->id, id) == 0) return p;
    return NULL;
}

/* A store write's callback when nobody waits for it: ud is a malloc'd name of what was
 * written (a process id, a segment's path), logged on failure and freed. */
void sg__store_logged(void *ud, int err, const char *msg)
{
    char *what = ud;
    if (err < 0)
        sg_log_kv(SG_LOG_ERROR, "store: writing a process record or log segment row failed",
                  "what", what, "error", msg ? msg : sg_strerror(err), NULL);
    free(what);
}

void sg__proc_store(proc_t *p)
{
    sg_procs_t *m = p->m;
    if (!m->store || m->shutting_down || !p->linked) return;
    sg_store_process_t r = {
        .sandbox_id = p->sbx->id,
        .id = p->id,
        .command = p->command,
        .background = p->background,
        .state = sg_proc_state_name(p->state),
        .has_exit_code = p->has_exit,
        .exit_code = p->exit_code,
        .error = p->error,
        .created_us = p->created_us,
        .finished_us = p->finished_us,
    };
    char *id = sg_xstrdup(p->id);
    if (sg_store_put_process(m->store, &r, sg__store_logged, id) < 0) free(id);
}

static void proc_unlink(proc_t *p)
{
    if (!p->linked) return;
    if (p->m->store && !p->m->shutting_down && p->sbx->linked) {
        char *id = sg_xstrdup(p->id);
        if (sg_store_delete_process(p->m->store, p->sbx->id, p->id, sg__store_logged, id) < 0)
            free(id);
    }
    SG_DLIST_DEL(p->sbx->procs, p);
    p->sbx->nprocs--;
    p->linked = 0;
    sg__disk_unlinked(p);
    sg__proc_unref(p);
}

/* Room for one more process in s: evicts the oldest finished one when at the bound. */
static int make_room(sg_procs_t *m, sg_sandbox_t *s)
{
    if (s->nprocs < m->cfg.max_processes) return 0;
    proc_t *victim = NULL;
    for (proc_t *p = s->procs; p; p = p->next) /* newest first: the last finished is oldest */
        if (p->finished) victim = p;
    if (!victim) return SG_ETOOBIG;
    proc_unlink(victim);
    return 0;
}

/* The client that started the command cannot resume (an OpenSandbox SDK reads one stream), so
 * it is the one reader the producer waits for: past origin_pause bytes behind, the gateway
 * stops reading the command's stream from execd (execd then stops reading the command's pipes:
 * the command waits, as in a shell pipe), and reads on once it caught up by half. Every other
 * subscriber is never waited for. */
static uint64_t origin_lag(const proc_t *p)
{
    return p->origin_sub ? p->log.cum - p->origin_sub->sent_cum : 0;
}

void sg__proc_flow(proc_t *p)
{
    if (!p->up) return;
    int want = p->origin_hold || p->disk_hold;
    if (want && !p->up_paused) {
        p->up_paused = 1;
        sg_http_creq_pause(p->up);
    } else if (!want && p->up_paused) {
        p->up_paused = 0;
        sg_http_creq_resume(p->up);
    }
}

static void origin_flow(proc_t *p)
{
    uint64_t mark = p->m->cfg.origin_pause;
    if (!mark)
        p->origin_hold = 0;
    else if (!p->origin_hold && p->origin_sub && origin_lag(p) > mark)
        p->origin_hold = 1;
    else if (p->origin_hold && origin_lag(p) <= mark / 2)
        p->origin_hold = 0;
    sg__proc_flow(p);
}

static void deliver(proc_t *p)
{
    sub_t *next;
    for (sub_t *s = p->subs; s; s = next) {
        next = s->next;
        sg__sub_pump(s);
    }
    origin_flow(p);
}

int64_t sg__proc_append(proc_t *p, const char *type, const char *json, size_t len,
                        sg_plog_kind_t kind, int stream, uint32_t out_len)
{
    int64_t delta = 0;
    uint64_t evicted = p->log.evicted;
    int64_t id = sg_plog_append(&p->log, type, json, len, kind, stream, out_len, &delta);
    if (id < 0) return id;
    sg_gw_stats.evicted_events += p->log.evicted - evicted;
    sg_gw_stats.log_bytes += (uint64_t)delta;
    sg_gw_stats.events_in++;
    sg_gw_stats.bytes_in += len;
    if (p->disk) sg__disk_append(p, (uint64_t)id, type, json, len, kind, stream, out_len);
    return id;
}

static void proc_finish(proc_t *p, sg_proc_state_t st, int has_exit, int code, const char *err)
{
    if (p->finished) return;
    p->finished = 1;
    stats_state(p->state, st);
    p->state = st;
    p->has_exit = has_exit;
    p->exit_code = code;
    if (err && *err) {
        free(p->error);
        p->error = sg_xstrdup(err);
    }
    p->finished_us = sg_sbx_now_us();
    if (p->disk)
        sg__disk_finished(p); /* the record says finished once the whole log is on disk */
    else
        sg__proc_store(p);
}

/* An error event: numeric evalue = the command's exit code; a traceback naming a signal (or a
 * signal we sent) = killed; anything else = it could not run. */
static void proc_error_event(proc_t *p, const char *json, size_t len)
{
    json_t *j = json_loadb(json, len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *ev = json_string_value(json_object_get(e, "evalue"));
    json_t *tb = json_object_get(e, "traceback");
    const char *t0 = json_string_value(json_array_get(tb, 0));
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", t0 ? t0 : ev ? ev : "error");
    char *end = NULL;
    long code = ev ? strtol(ev, &end, 10) : 0;
    int numeric = ev && *ev && end && *end == '\0';
    if ((t0 && strncmp(t0, "signal:", 7) == 0) || (p->signalled && numeric && code != 0) ||
        (numeric && code == -1))
        proc_finish(p, SG_PROC_KILLED, numeric, (int)code, msg);
    else if (numeric)
        proc_finish(p, SG_PROC_EXITED, 1, (int)code, msg);
    else
        proc_finish(p, SG_PROC_FAILED, 0, 0, msg);
    json_decref(j);
}

/* An event of our own (the upstream broke): an error event, so execd-framing clients see the
 * end, as an SDK would from execd. */
void sg__proc_lost(proc_t *p, const char *why)
{
    if (p->finished) return;
    json_t *j = json_pack("{s:s,s:I,s:{s:s,s:s,s:[s]}}", "type", "error", "timestamp",
                          (json_int_t)sg__wall_ms(), "error", "ename", "GatewayError", "evalue",
                          "lost", "traceback", why);
    char *txt = json_dumps(j, JSON_COMPACT);
    sg__proc_append(p, "error", txt, strlen(txt), SG_PLOG_EVENT, 0, 0);
    free(txt);
    json_decref(j);
    proc_finish(p, SG_PROC_LOST, 0, 0, why);
    deliver(p);
}

/* ------------------------------------------------------------------ subscribers */

static void sub_on_abort(sg_http_req_t *req)
{
    sub_t *s = sg_http_req_data(req);
    if (s) sub_end(s, 1);
}

static void sub_on_drain(sg_http_req_t *req)
{
    sub_t *s = sg_http_req_data(req);
    if (!s || !s->blocked) return;
    s->blocked = 0;
    sg_tentry_disarm(&s->stall);
    proc_t *p = sg__proc_ref(s->p);
    int origin = p->origin_sub == s;
    sg__sub_pump(s);
    if (origin) origin_flow(p);
    sg__proc_unref(p);
}

static void sub_end(sub_t *s, int cut)
{
    proc_t *p = s->p;
    sg_http_req_t *req = s->req;
    sg_http_req_set_data(req, NULL);
    sg_http_req_on_abort(req, NULL);
    sg_http_req_on_drain(req, NULL);
    sg_tentry_disarm(&s->hb);
    sg_tentry_disarm(&s->stall);
    sg_tentry_disarm(&s->soft);
    if (s->rd) sg__disk_sub_ended(s);
    if (cut)
        sg_http_req_release(req);
    else
        sg_http_resp_end(req);
    SG_DLIST_DEL(p->subs, s);
    p->nsubs--;
    sg_gw_stats.subscribers--;
    if (p->origin_sub == s) {
        p->origin_sub = NULL;
        origin_flow(p); /* nobody to wait for any more */
    }
    free(s);
    sg__proc_unref(p);
}

static void sub_cut(sub_t *s, sg_cut_reason_t why)
{
    static const char *const names[] = {"lag past the hard limit", "lag past the soft limit",
                                        "write blocked past the send timeout"};
    char last[32], lag[32];
    snprintf(last, sizeof(last), "%llu", (unsigned long long)(s->next_id - 1));
    snprintf(lag, sizeof(lag), "%llu", (unsigned long long)sub_lag(s));
    sg_log_kv(SG_LOG_WARN, "stream: slow subscriber disconnected", "rid", sg_http_req_id(s->req),
              "process", s->p->id, "reason", names[why], "last_queued_id", last, "lag_bytes", lag,
              NULL);
    sg_gw_stats.cut[why]++;
    sub_end(s, 1);
}

/* Returns 1 when s was cut. */
static uint64_t sub_lag(const sub_t *s)
{
    uint64_t from = s->sent_cum > s->base_cum ? s->sent_cum : s->base_cum;
    return s->p->log.cum - from;
}

static int sub_check_lag(sub_t *s)
{
    sg_procs_t *m = s->p->m;
    if (s->p->origin_sub == s && m->cfg.origin_pause) return 0; /* it holds the producer */
    uint64_t lag = sub_lag(s);
    if (lag > m->cfg.lag_hard) {
        sub_cut(s, SG_CUT_HARD);
        return 1;
    }
    if (lag > m->cfg.lag_soft) {
        if (!s->over_soft) {
            s->over_soft = 1;
            sg_tentry_arm(&m->soft, &s->soft);
        }
    } else if (s->over_soft) {
        s->over_soft = 0;
        sg_tentry_disarm(&s->soft);
    }
    return 0;
}

static void sub_blocked(sub_t *s)
{
    s->blocked = 1;
    sg_tentry_arm(&s->p->m->stall, &s->stall);
}

/* Writes a small frame of our own (gap, heartbeat). 0, or -1 when s was ended. */
int sg__sub_write_small(sub_t *s, const char *p, size_t n)
{
    int r = sg_http_resp_write_copy(s->req, p, n);
    if (r < 0) {
        sub_end(s, 1);
        return -1;
    }
    sg_gw_stats.bytes_out += n;
    if (r == 1) sub_blocked(s);
    return 0;
}

/* A run of frames read from the log files, as one write. */
int sg__sub_write_buf(sub_t *s, sg_buf_t *b, uint64_t events)
{
    sg_slice_t v = {b, 0, b->len};
    int r = sg_http_resp_writev(s->req, &v, 1);
    if (r < 0) {
        sub_end(s, 1);
        return -1;
    }
    sg_gw_stats.events_out += events;
    sg_gw_stats.bytes_out += b->len;
    if (r == 1) sub_blocked(s);
    return 0;
}

int sg__sub_gap(sub_t *s, uint64_t to)
{
    char b[256];
    int n;
    if (s->execd)
        n = snprintf(b, sizeof(b),
                     "{\"type\":\"sandgate.gap\",\"first_id\":%llu,\"requested_id\":%llu,"
                     "\"timestamp\":%lld}\n\n",
                     (unsigned long long)to, (unsigned long long)s->next_id,
                     (long long)sg__wall_ms());
    else
        n = snprintf(b, sizeof(b),
                     "event: gap\ndata: {\"type\":\"sandgate.gap\",\"first_id\":%llu,"
                     "\"requested_id\":%llu,\"timestamp\":%lld}\n\n",
                     (unsigned long long)to, (unsigned long long)s->next_id,
                     (long long)sg__wall_ms());
    sg_gw_stats.gaps++;
    s->next_id = to;
    return sg__sub_write_small(s, b, (size_t)n);
}

void sg__sub_pump(sub_t *s)
{
    proc_t *p = s->p;
    sg_plog_t *l = &p->log;
    if (s->blocked) {
        sub_check_lag(s);
        return;
    }
    if (s->rd) return; /* a read from the log files is under way: it pumps on at its end */
    while (!s->blocked && s->next_id < l->next_id) {
        if (s->next_id < l->first_id) {
            /* Behind the memory window: from the log files, else an explicit gap. */
            int k = sg__disk_catch_up(s);
            if (k == 2) continue; /* a gap moved the cursor */
            if (k != 0) return;
            if (sg__sub_gap(s, l->first_id) < 0) return;
            continue;
        }
        /* A run of events as one write: adjacent frames in a block (SSE readers) merge into
         * one slice, and the run is one HTTP chunk. */
        sg_slice_t v[PUMP_SLICES];
        size_t nv = 0, total = 0, events = 0;
        while (nv < PUMP_SLICES && total < PUMP_BYTES && s->next_id < l->next_id) {
            const sg_plog_ent_t *e = sg_plog_get(l, s->next_id);
            s->next_id++;
            s->sent_cum = e->cum;
            if (e->kind == SG_PLOG_RAW && !s->raw) continue;
            size_t off = e->off + (s->execd ? e->json_off : 0);
            size_t n = e->len - (s->execd ? e->json_off : 0);
            if (nv && v[nv - 1].buf == e->blk && v[nv - 1].off + v[nv - 1].len == off) {
                v[nv - 1].len += n;
            } else {
                v[nv].buf = e->blk;
                v[nv].off = off;
                v[nv].len = n;
                nv++;
            }
            total += n;
            events++;
        }
        if (!nv) continue;
        int r = sg_http_resp_writev(s->req, v, nv);
        if (r < 0) {
            sub_end(s, 1);
            return;
        }
        sg_gw_stats.events_out += events;
        sg_gw_stats.bytes_out += total;
        if (r == 1) sub_blocked(s);
    }
    if (s->blocked) {
        sub_check_lag(s);
        return;
    }
    if (s->over_soft) {
        s->over_soft = 0;
        sg_tentry_disarm(&s->soft);
    }
    if (p->finished) sub_end(s, 0);
}

static void on_hb(sg_tentry_t *e)
{
    sub_t *s = SG_CONTAINER_OF(e, sub_t, hb);
    sg_procs_t *m = s->p->m;
    if (!s->blocked) {
        if (s->execd) {
            char b[96];
            int n = snprintf(b, sizeof(b),
                             "{\"type\":\"ping\",\"text\":\"pong\",\"timestamp\":%lld}\n\n",
                             (long long)sg__wall_ms());
            if (sg__sub_write_small(s, b, (size_t)n) < 0) return;
        } else if (sg__sub_write_small(s, ":\n\n", 3) < 0) {
            return;
        }
    }
    sg_tentry_arm(s->execd ? &m->ping : &m->hb, &s->hb);
}

static void on_stall(sg_tentry_t *e)
{
    sub_t *s = SG_CONTAINER_OF(e, sub_t, stall);
    if (s->blocked) sub_cut(s, SG_CUT_TIMEOUT);
}

static void on_soft(sg_tentry_t *e)
{
    sub_t *s = SG_CONTAINER_OF(e, sub_t, soft);
    s->over_soft = 0;
    if (s->blocked && sub_lag(s) > s->p->m->cfg.lag_soft) sub_cut(s, SG_CUT_SOFT);
}

/* A subscriber on a response whose head the caller already started. */
sub_t *sg__sub_new(proc_t *p, sg_http_req_t *req, int execd, int raw, uint64_t next_id)
{
    sg_procs_t *m = p->m;
    sub_t *s = sg_xcalloc(1, sizeof(*s));
    s->p = sg__proc_ref(p);
    s->req = req;
    s->execd = (uint8_t)execd;
    s->raw = (uint8_t)raw;
    s->next_id = next_id;
    const sg_plog_ent_t *prev = sg_plog_get(&p->log, next_id - 1);
    s->sent_cum = prev ? prev->cum : (next_id >= p->log.next_id ? p->log.cum : 0);
    s->base_cum = p->log.cum;
    sg_tentry_init(&s->hb, on_hb);
    sg_tentry_init(&s->stall, on_stall);
    sg_tentry_init(&s->soft, on_soft);
    SG_DLIST_ADD(p->subs, s);
    p->nsubs++;
    sg_gw_stats.subscribers++;
    sg_gw_stats.subscribers_total++;
    sg_http_req_set_data(req, s);
    sg_http_req_on_abort(req, sub_on_abort);
    sg_http_req_on_drain(req, sub_on_drain);
    /* Fan-out readers get a small kernel buffer; the command's own client (execd framing) is a
     * bulk reader and keeps the kernel's. */
    if (!execd && m->cfg.sub_sndbuf > 0) sg_http_req_set_sndbuf(req, m->cfg.sub_sndbuf);
    sg_http_req_trim(req); /* headers were read: an idle subscriber keeps only its cursor */
    sg_tentry_arm(execd ? &m->ping : &m->hb, &s->hb);
    return s;
}

int sg__start_event_stream(sg_http_req_t *req, int execd)
{
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Cache-Control", "no-cache");
    if (execd) sg_hdrs_addz(&h, "Connection", "keep-alive");
    sg_hdrs_addz(&h, "Content-Type", "text/event-stream");
    sg_hdrs_addz(&h, "X-Accel-Buffering", "no");
    int r = sg_http_resp_start(req, 200, &h);
    sg_hdrs_free(&h);
    return r;
}

/* ------------------------------------------------------------------ upstream */

static void origin_detach(proc_t *p)
{
    if (!p->origin) return;
    sg_http_req_set_data(p->origin, NULL);
    sg_http_req_on_abort(p->origin, NULL);
    p->origin = NULL;
}

static void origin_on_abort(sg_http_req_t *req)
{
    proc_t *p = sg_http_req_data(req);
    if (!p) return;
    origin_detach(p);
    sg_http_req_release(req); /* the command goes on: its output is still captured */
}

/* init named the process: link it and turn the origin client into its first subscriber. */
static void proc_named(proc_t *p, const char *json, size_t len)
{
    json_t *j = json_loadb(json, len, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "text"));
    snprintf(p->id, sizeof(p->id), "%s", id && *id ? id : "unnamed");
    json_decref(j);
    sg_procs_t *m = p->m;
    SG_DLIST_DEL(m->pending, p);
    sg_sandbox_t *s = p->sbx;
    proc_t *dup = sg__proc_find(s, p->id);
    if (dup) proc_unlink(dup); /* execd reused an id (a restarted execd): the newest wins */
    /* At the bound with every process running, it is kept anyway (the command runs); the
     * bound is enforced when a request arrives. */
    (void)make_room(m, s);
    SG_DLIST_ADD(s->procs, p);
    s->nprocs++;
    p->linked = 1;
    sg__proc_ref(p);
    sg__proc_store(p); /* the record before its segment rows */
    sg__disk_start(p);
    sg__proc_append(p, "init", json, len, SG_PLOG_EVENT, 0, 0);

    sg_http_req_t *req = p->origin;
    if (!req) return;
    origin_detach(p);
    if (sg__start_event_stream(req, 1) < 0) {
        sg_http_req_release(req);
        return;
    }
    if (p->background) {
        /* execd's background answer (reference 2.6): init, ping, execution_complete, end. */
        char b[160];
        sg_http_resp_write_copy(req, json, len);
        sg_http_resp_write_copy(req, "\n\n", 2);
        int n = snprintf(b, sizeof(b),
                         "{\"type\":\"ping\",\"text\":\"pong\",\"timestamp\":%lld}\n\n"
                         "{\"type\":\"execution_complete\",\"timestamp\":%lld}\n\n",
                         (long long)sg__wall_ms(), (long long)sg__wall_ms());
        sg_http_resp_write_copy(req, b, (size_t)n);
        sg_http_resp_end(req);
        return;
    }
    sub_t *sub = sg__sub_new(p, req, 1, p->origin_raw, 1);
    p->origin_sub = sub;
    sg__sub_pump(sub); /* init */
    if (sg_http_req_data(req) == sub) {
        /* execd sends ping right after init (docs/execd.md): so does the gateway. */
        char b[96];
        int n =
            snprintf(b, sizeof(b), "{\"type\":\"ping\",\"text\":\"pong\",\"timestamp\":%lld}\n\n",
                     (long long)sg__wall_ms());
        sg__sub_write_small(sub, b, (size_t)n);
    }
}

static int up_on_event(void *ud, const sg_sse_msg_t *msg)
{
    proc_t *p = ud;
    if (!msg->raw || p->finished) return 0;
    const char *j = msg->data;
    size_t n = msg->data_len;
    const char *t;
    size_t tl;
    if (sg__scan_str(j, n, "type", &t, &tl) < 0 || tl == 0 || tl > 48) return 0;
    char type[64];
    memcpy(type, t, tl);
    type[tl] = '\0';
    if (!p->linked) {
        if (strcmp(type, "init") == 0) proc_named(p, j, n);
        return 0; /* nothing comes before init */
    }
    if (strcmp(type, "init") == 0) return 0; /* a re-attached stream starts with it again */
    if (strcmp(type, "ping") == 0) return 0; /* we send our own */
    if (strcmp(type, "sandgate.raw") == 0) {
        const char *st, *d;
        size_t stl, dl;
        int stream =
            sg__scan_str(j, n, "stream", &st, &stl) == 0 && stl == 6 && memcmp(st, "stderr", 6) == 0
                ? 2
                : 1;
        uint32_t out =
            sg__scan_str(j, n, "data_b64", &d, &dl) == 0 ? (uint32_t)b64_decoded_len(d, dl) : 0;
        p->raw_seen = 1;
        sg__proc_append(p, type, j, n, SG_PLOG_RAW, stream, out);
    } else if (strcmp(type, "stdout") == 0 || strcmp(type, "stderr") == 0) {
        uint32_t out = 0;
        if (!p->raw_seen) {
            json_t *o = json_loadb(j, n, 0, NULL);
            out = (uint32_t)json_string_length(json_object_get(o, "text")) + 1;
            json_decref(o);
        }
        sg__proc_append(p, type, j, n, SG_PLOG_EVENT, type[3] == 'e' ? 2 : 1, out);
    } else {
        sg__proc_append(p, type, j, n, SG_PLOG_EVENT, 0, 0);
        if (strcmp(type, "execution_complete") == 0)
            proc_finish(p, p->signalled ? SG_PROC_KILLED : SG_PROC_EXITED, 1, 0, NULL);
        else if (strcmp(type, "error") == 0)
            proc_error_event(p, j, n);
    }
    deliver(p);
    return 0;
}

static void up_on_response(sg_http_creq_t *r, void *data, int status, const sg_hdrs_t *hdrs)
{
    proc_t *p = data;
    (void)r;
    p->up_status = status;
    const char *ct = sg_hdrs_get(hdrs, "content-type");
    snprintf(p->errctype, sizeof(p->errctype), "%s", ct ? ct : "application/json");
    if (status == 200) {
        sg_sse_decoder_init(&p->dec, MAX_UPSTREAM_EVENT, MAX_UPSTREAM_EVENT, up_on_event, NULL, p);
        p->dec_init = 1;
    }
}

static void up_on_body(sg_http_creq_t *r, void *data, const char *d, size_t n)
{
    proc_t *p = data;
    if (p->up_status != 200) {
        if (p->errlen + n > MAX_ERROR_BODY) n = MAX_ERROR_BODY - p->errlen;
        p->errbody = sg_xrealloc(p->errbody, p->errlen + n + 1);
        memcpy(p->errbody + p->errlen, d, n);
        p->errlen += n;
        return;
    }
    if (sg_sse_decoder_feed(&p->dec, d, n) < 0) {
        sg__proc_lost(p, "the command's event stream from execd was malformed");
        sg_http_creq_cancel(r);
    }
}

static void up_on_done(sg_http_creq_t *r, void *data, int err, const char *msg)
{
    proc_t *p = data;
    (void)r;
    p->up = NULL;
    if (err == 0 && p->dec_init) sg_sse_decoder_finish(&p->dec);
    if (!p->linked) {
        /* No init: execd refused the command or could not be reached. */
        SG_DLIST_DEL(p->m->pending, p);
        sg_http_req_t *req = p->origin;
        origin_detach(p);
        stats_state(p->state, SG_PROC_FAILED);
        p->state = SG_PROC_FAILED;
        if (req) {
            if (err == 0 && p->up_status != 200) {
                sg_hdrs_t h;
                sg_hdrs_init(&h);
                sg_hdrs_addz(&h, "Content-Type", p->errctype);
                sg_http_respond(req, p->up_status, &h, p->errbody, p->errlen);
                sg_hdrs_free(&h);
            } else {
                char m[512];
                snprintf(m, sizeof(m), "Could not reach the sandbox's execd: %s",
                         err ? (msg ? msg : sg_strerror(err)) : "its answer had no init event");
                sg_http_respond_error(req, 502, "GENERAL::UNKNOWN_ERROR", m);
            }
        }
    } else if (!p->finished && err == 0 && p->up_status != 200) {
        char why[512];
        snprintf(why, sizeof(why), "could not re-attach to the command after a restart: execd "
                 "answered %d %.*s", p->up_status, (int)(p->errlen > 300 ? 300 : p->errlen),
                 p->errbody ? p->errbody : "");
        sg__proc_lost(p, why);
    } else if (!p->finished) {
        char why[512];
        snprintf(why, sizeof(why),
                 "the stream from the sandbox's execd ended before the command: %s",
                 err ? (msg ? msg : sg_strerror(err)) : "no final event");
        sg__proc_lost(p, why);
    }
    sg__proc_unref(p);
}

static int want_raw(sg_http_req_t *req, const json_t *body)
{
    const char *h = sg_http_req_header(req, "X-Sandgate-Raw");
    if (h && (strcmp(h, "1") == 0 || strcasecmp(h, "true") == 0)) return 1;
    json_t *sg = json_object_get(body, "sandgate");
    return json_is_object(sg) && json_is_true(json_object_get(sg, "raw"));
}

typedef struct cmd_ctx {
    sg_procs_t *m;
    sg_sandbox_t *sbx;
} cmd_ctx_t;

static void on_command_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    cmd_ctx_t *c = ud;
    sg_procs_t *m = c->m;
    sg_sandbox_t *s = c->sbx;
    free(c);
    if (err == SG_ETOOBIG) goto out;
    if (err < 0) {
        sg_http_req_release(req);
        goto out;
    }
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    if (!json_is_object(j)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "error parsing request MAYBE invalid body format. %s",
                 j ? "the body is not a JSON object" : je.text);
        sg_http_respond_error(req, 400, "INVALID_REQUEST_BODY", msg);
        json_decref(j);
        goto out;
    }
    if (m->closing || !s->linked || !s->has_handle) {
        sg_http_respond_error(req, 502, "GENERAL::UNKNOWN_ERROR",
                              "Could not connect to the backend sandbox: it is going away");
        json_decref(j);
        goto out;
    }
    if (make_room(m, s) < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "sandbox has %u running processes (--max-processes)", s->nprocs);
        sg_http_respond_error(req, 503, "SANDBOX::TOO_MANY_PROCESSES", msg);
        json_decref(j);
        goto out;
    }
    proc_t *p = sg_xcalloc(1, sizeof(*p));
    p->m = m;
    p->sbx = sg_sbx_ref(s);
    p->refs = 1; /* the upstream exchange */
    p->state = SG_PROC_RUNNING;
    sg_gw_stats.processes[SG_PROC_RUNNING]++;
    sg_gw_stats.processes_started++;
    p->created_us = sg_sbx_now_us();
    const char *cmd = json_string_value(json_object_get(j, "command"));
    p->command = sg_xstrdup(cmd ? cmd : "");
    p->background = json_is_true(json_object_get(j, "background"));
    p->origin_raw = want_raw(req, j);
    sg_plog_init(&p->log, m->cfg.log_bytes);
    /* Upstream always in the foreground (the gateway captures a background command's output
     * itself) and with raw events (exact bytes for /output). */
    json_object_set_new(j, "background", json_false());
    char *up_body = json_dumps(j, JSON_COMPACT);
    json_decref(j);

    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/json");
    sg_hdrs_addz(&h, "Accept", "text/event-stream");
    /* Raw events make /output byte-exact; without them it is rebuilt from the lines (each
     * line's text plus "\n": CR and invalid UTF-8 are not kept). A client that asked for raw
     * events gets them either way. */
    if (m->cfg.exact_output || p->origin_raw) sg_hdrs_addz(&h, "X-Sandgate-Raw", "1");
    /* execd keeps a log of the command, so a restarted gateway can re-attach to it. */
    sg_hdrs_addz(&h, "X-Sandgate-Keep-Log", "1");
    if (s->handle.access_token[0]) sg_hdrs_addz(&h, "X-EXECD-ACCESS-TOKEN", s->handle.access_token);
    const char *rid = sg_http_req_header(req, "X-Request-ID");
    if (rid) sg_hdrs_addz(&h, "X-Request-ID", rid);
    sg_http_creq_opts_t o;
    memset(&o, 0, sizeof(o));
    o.method = "POST";
    o.origin = s->handle.execd;
    o.target = "/command";
    o.headers = &h;
    o.body = up_body;
    o.body_len = strlen(up_body);
    o.no_body_idle_timeout = 1; /* a paused sandbox sends nothing; the health check decides */
    o.on_response = up_on_response;
    o.on_body = up_on_body;
    o.on_done = up_on_done;
    o.data = p;
    int r = sg_http_request(m->client, &o, &p->up);
    sg_hdrs_free(&h);
    free(up_body);
    if (r < 0) {
        stats_state(SG_PROC_RUNNING, SG_PROC_FAILED);
        p->state = SG_PROC_FAILED;
        sg__proc_unref(p);
        sg_http_respond_error(req, r == SG_ETOOBIG ? 503 : 502, "GENERAL::UNKNOWN_ERROR",
                              "Could not connect to the backend sandbox");
        goto out;
    }
    SG_DLIST_ADD(m->pending, p);
    p->origin = req;
    sg_http_req_set_data(req, p);
    sg_http_req_on_abort(req, origin_on_abort);
out:
    sg_sbx_unref(s);
}

void sg_procs_command(sg_procs_t *m, sg_sandbox_t *s, sg_http_req_t *req)
{
    cmd_ctx_t *c = sg_xcalloc(1, sizeof(*c));
    c->m = m;
    c->sbx = sg_sbx_ref(s);
    if (sg_http_req_read_all(req, MAX_COMMAND_BODY, on_command_body, c) < 0) {
        sg_sbx_unref(s);
        free(c);
        sg_http_req_release(req);
    }
}

/* ------------------------------------------------------------------ sandbox removal */

void sg_procs_drop_sandbox(sg_procs_t *m, sg_sandbox_t *s, int cut)
{
    while (s->procs) {
        proc_t *p = s->procs; /* the list's reference keeps it alive until proc_unlink */
        sg__proc_lost(p, cut ? "the gateway shut down" : "the sandbox was deleted");
        if (p->up) sg_http_creq_cancel(p->up);
        if (cut)
            while (p->subs)
                sub_end(p->subs, 1);
        proc_unlink(p);
    }
    /* Commands not yet named by execd: cancelled the same way. */
    proc_t *next;
    for (proc_t *p = m->pending; p; p = next) {
        next = p->next;
        if (p->sbx == s && p->up) sg_http_creq_cancel(p->up);
    }
}

/* ------------------------------------------------------------------ life cycle */

int sg_procs_new(uv_loop_t *loop, const sg_stream_config_t *cfg, uint64_t connect_timeout_ms,
                 sg_procs_t **out)
{
    sg_procs_t *m = sg_xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->cfg = *cfg;
    if (m->cfg.origin_pause > m->cfg.log_bytes / 2) m->cfg.origin_pause = m->cfg.log_bytes / 2;
    sg_http_client_config_t xc;
    memset(&xc, 0, sizeof(xc));
    xc.max_conns_per_origin = cfg->max_processes + 16; /* one stream per process + signals */
    xc.max_queue_per_origin = 64;
    xc.max_idle_per_origin = 2;
    xc.connect_timeout_ms = connect_timeout_ms ? connect_timeout_ms : 10000;
    xc.response_timeout_ms = 60000;
    int r = sg_http_client_new(loop, &xc, &m->client);
    if (r < 0) {
        free(m);
        return r;
    }
    sg_tlist_init(loop, &m->hb, cfg->heartbeat_ms);
    sg_tlist_init(loop, &m->ping, cfg->ping_ms);
    sg_tlist_init(loop, &m->stall, cfg->send_timeout_ms);
    sg_tlist_init(loop, &m->soft, cfg->lag_soft_ms);
    *out = m;
    return 0;
}

void sg__procs_close_step(sg_procs_t *m)
{
    if (m->open && --m->open > 0) return;
    if (m->disk_ops) { /* writers sealing their last segment, removals: called again at 0 */
        m->close_waiting = 1;
        return;
    }
    void (*cb)(void *) = m->close_cb;
    void *ud = m->close_ud;
    free(m->logs_root);
    free(m);
    if (cb) cb(ud);
}

static void close_step(sg_procs_t *m)
{
    sg__procs_close_step(m);
}

static void on_list_closed(sg_tlist_t *l)
{
    close_step(l->timer.data);
}

static void on_client_closed(void *ud)
{
    close_step(ud);
}

void sg_procs_close(sg_procs_t *m, void (*cb)(void *ud), void *ud)
{
    m->closing = 1;
    m->close_cb = cb;
    m->close_ud = ud;
    m->open = 6;
    sg__disk_close(m);
    /* Upstream exchanges end (on_done: lost, subscribers end with the log). */
    sg_http_client_close(m->client, on_client_closed, m);
    sg_tlist_t *lists[] = {&m->hb, &m->ping, &m->stall, &m->soft};
    for (size_t i = 0; i < SG_ARRAY_SIZE(lists); i++) {
        lists[i]->timer.data = m;
        sg_tlist_close(lists[i], on_list_closed);
    }
}

/* ------------------------------------------------------------------ fuzzing */

size_t sg__procs_fuzz_feed(const uint8_t *data, size_t len, uint64_t log_bytes)
{
    sg_procs_t m;
    memset(&m, 0, sizeof(m));
    sg_stream_config_init(&m.cfg);
    m.cfg.log_bytes = log_bytes;
    sg_sandbox_t *s = sg_sbx_new();
    s->linked = 1;
    proc_t *p = sg_xcalloc(1, sizeof(*p));
    p->m = &m;
    p->sbx = sg_sbx_ref(s);
    p->refs = 1;
    p->state = SG_PROC_RUNNING;
    sg_gw_stats.processes[SG_PROC_RUNNING]++;
    p->command = sg_xstrdup("fuzz");
    sg_plog_init(&p->log, m.cfg.log_bytes);
    SG_DLIST_ADD(m.pending, p);
    p->up_status = 200;
    sg_sse_decoder_init(&p->dec, MAX_UPSTREAM_EVENT, MAX_UPSTREAM_EVENT, up_on_event, NULL, p);
    p->dec_init = 1;
    /* Fed in two pieces split where the first byte says, as reads would split it. */
    size_t cut = len ? data[0] % (len + 1) : 0;
    if (sg_sse_decoder_feed(&p->dec, data, cut) == 0)
        sg_sse_decoder_feed(&p->dec, data + cut, len - cut);
    sg_sse_decoder_finish(&p->dec);
    size_t got = 0;
    if (p->linked) {
        sg_buf_t *b = sg__proc_collect_output(p, 0);
        got = b->len;
        sg_buf_unref(b);
        sg_procs_drop_sandbox(&m, s, 1);
    } else {
        SG_DLIST_DEL(m.pending, p);
        stats_state(p->state, SG_PROC_FAILED);
        p->state = SG_PROC_FAILED;
    }
    sg__proc_unref(p);
    s->linked = 0;
    sg_sbx_unref(s);
    return got;
}

/* ------------------------------------------------------------------ restart */

void sg_procs_set_store(sg_procs_t *m, struct sg_store *st, const char *data_dir)
{
    m->store = st;
    if (st && data_dir) sg__disk_init(m, data_dir);
}

unsigned sg_procs_loading(const sg_procs_t *m)
{
    return m->loading;
}

void sg_procs_shutting_down(sg_procs_t *m)
{
    m->shutting_down = 1;
}

void sg_procs_restore(sg_procs_t *m, sg_sandbox_t *s, const sg_store_process_t *r,
                      const sg_store_segment_t *segs, size_t nsegs)
{
    int st = sg_proc_state_parse(r->state ? r->state : "");
    proc_t *p = sg_xcalloc(1, sizeof(*p));
    p->m = m;
    p->sbx = sg_sbx_ref(s);
    p->refs = 1; /* the list's */
    snprintf(p->id, sizeof(p->id), "%s", r->id);
    p->command = sg_xstrdup(r->command ? r->command : "");
    p->background = r->background;
    p->state = st < 0 ? SG_PROC_LOST : (sg_proc_state_t)st;
    sg_gw_stats.processes[p->state]++;
    p->has_exit = r->has_exit_code;
    p->exit_code = r->exit_code;
    p->error = r->error ? sg_xstrdup(r->error) : NULL;
    p->created_us = r->created_us;
    p->finished_us = r->finished_us;
    p->finished = p->state != SG_PROC_RUNNING;
    sg_plog_init(&p->log, m->cfg.log_bytes);
    SG_DLIST_ADD(s->procs, p);
    s->nprocs++;
    p->linked = 1;
    if (m->logs_root) {
        sg__disk_restore(p, segs, nsegs); /* then re-attaches a running one */
        return;
    }
    if (!p->finished) sg__proc_reattach(p);
}

void sg__proc_reattach(proc_t *p)
{
    sg_procs_t *m = p->m;
    sg_sandbox_t *s = p->sbx;
    if (p->finished || !p->linked) return;
    if (!s->has_handle || s->state == SG_SBX_FAILED) {
        sg__proc_lost(p, "the gateway restarted and the sandbox was gone");
        return;
    }
    /* Re-attach: execd replays the command's output from where the stored log ends, then
     * follows it. */
    char target[160];
    snprintf(target, sizeof(target), "/command/%s/stream?offset=%llu", p->id,
             (unsigned long long)p->log.out_end);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Accept", "text/event-stream");
    if (m->cfg.exact_output) sg_hdrs_addz(&h, "X-Sandgate-Raw", "1");
    else sg_hdrs_addz(&h, "X-Sandgate-Raw", "0");
    if (s->handle.access_token[0]) sg_hdrs_addz(&h, "X-EXECD-ACCESS-TOKEN", s->handle.access_token);
    sg_http_creq_opts_t o;
    memset(&o, 0, sizeof(o));
    o.method = "GET";
    o.origin = s->handle.execd;
    o.target = target;
    o.headers = &h;
    o.no_body_idle_timeout = 1;
    o.on_response = up_on_response;
    o.on_body = up_on_body;
    o.on_done = up_on_done;
    o.data = sg__proc_ref(p); /* the exchange's reference */
    int rc = sg_http_request(m->client, &o, &p->up);
    sg_hdrs_free(&h);
    if (rc < 0) {
        p->up = NULL;
        sg__proc_unref(p);
        sg__proc_lost(p, "the gateway restarted and could not re-attach to the command");
        return;
    }
    char off[32];
    snprintf(off, sizeof(off), "%llu", (unsigned long long)p->log.out_end);
    sg_log_kv(SG_LOG_INFO, "restart: re-attaching to a running command", "sandbox", s->id,
              "process", p->id, "offset", off, NULL);
}
