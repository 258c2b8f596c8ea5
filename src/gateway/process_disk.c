/* process_disk.c: processes' durable logs: every event a process's log takes is also appended
 * to segment files (seglog.h) under <data>/logs/<sandbox>/<process>/, indexed in the store
 * (one row per segment file); subscribers behind the memory window read on from the files; a
 * restart reads each log back; retention keeps the files within their bounds.
 *
 * Flow: the writer is opened when execd names the process and closed when it finishes (the
 * process record says finished only once the last segment was sealed, so a finished record
 * always has its whole log on disk). When the writer's pending bytes are full the upstream is
 * paused (disk_hold) until it drained: the disk paces the command, never the loop.
 *
 * Retention, checked every second:
 *   - per process: disk_process_bytes, by the writer (its oldest segments go);
 *   - all logs: disk_total_bytes; the oldest finished processes' output goes first, then
 *     running processes are held to an equal share each (at least one segment);
 *   - age: a finished process's output older than disk_max_age_ms goes.
 * A process whose output went keeps its record; readers asking for its events get a gap.
 *
 * Nothing here touches the disk on the loop thread: writers, reads and removals are libuv
 * thread-pool requests (seglog.c), the reap scan a uv_queue_work item. */
#define _GNU_SOURCE
#include "process_int.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sandgate/common.h"
#include "sandgate/log.h"
#include "sandgate/seglog.h"
#include "store.h"

#define CATCH_UP_BYTES (256u * 1024u) /* frames one read from the files gathers */

/* ------------------------------------------------------------------ names and index */

/* A path component for an id: [A-Za-z0-9_-] as is, every other byte as %XX. */
static void key_enc(char *out, size_t cap, const char *id)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)id; *c && n + 4 < cap; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            *c == '_' || *c == '-') {
            out[n++] = (char)*c;
        } else {
            out[n++] = '%';
            out[n++] = hex[*c >> 4];
            out[n++] = hex[*c & 15];
        }
    }
    if (!n) out[n++] = '%'; /* never empty, never "." or ".." */
    out[n] = '\0';
}

static void set_logdir(proc_t *p)
{
    sg_procs_t *m = p->m;
    if (p->logdir) return;
    char sk[256], pk[256], rel[600];
    key_enc(sk, sizeof(sk), p->sbx->id);
    key_enc(pk, sizeof(pk), p->id);
    snprintf(rel, sizeof(rel), "logs/%s/%s", sk, pk);
    p->logrel = sg_xstrdup(rel);
    size_t n = strlen(m->logs_root) + strlen(rel) + 2;
    p->logdir = sg_xmalloc(n);
    snprintf(p->logdir, n, "%s/%s", m->logs_root, rel + 5);
    SG_DLIST_ADD_NAMED(m->disk_procs, p, dprev, dnext);
}

static void drop_logdir(proc_t *p)
{
    if (!p->logdir) return;
    SG_DLIST_DEL_NAMED(p->m->disk_procs, p, dprev, dnext);
    free(p->logdir);
    free(p->logrel);
    p->logdir = p->logrel = NULL;
    free(p->segs);
    p->segs = NULL;
    p->nsegs = p->segs_cap = 0;
}

static seg_ix_t *ix_get(proc_t *p, uint64_t seq)
{
    size_t i = p->nsegs;
    while (i > 0 && p->segs[i - 1].seq > seq)
        i--;
    if (i > 0 && p->segs[i - 1].seq == seq) return &p->segs[i - 1];
    if (p->nsegs == p->segs_cap) {
        p->segs_cap = p->segs_cap ? p->segs_cap * 2 : 8;
        p->segs = sg_xrealloc(p->segs, p->segs_cap * sizeof(*p->segs));
    }
    memmove(p->segs + i + 1, p->segs + i, (p->nsegs - i) * sizeof(*p->segs));
    p->nsegs++;
    memset(&p->segs[i], 0, sizeof(p->segs[i]));
    p->segs[i].seq = seq;
    return &p->segs[i];
}

static uint64_t ix_bytes(const proc_t *p)
{
    uint64_t b = 0;
    for (size_t i = 0; i < p->nsegs; i++)
        b += p->segs[i].bytes;
    return b;
}

static uint64_t disk_bytes(const proc_t *p)
{
    if (p->disk) {
        sg_seglog_stats_t st;
        sg_seglog_stats(p->disk, &st);
        return st.disk_bytes;
    }
    return ix_bytes(p); /* closed: what its index holds */
}

static void op_done(sg_procs_t *m)
{
    if (--m->disk_ops == 0 && m->close_waiting) sg__procs_close_step(m);
}

static int store_on(const proc_t *p)
{
    return p->m->store && !p->m->shutting_down && p->linked && p->sbx->linked;
}

static void store_segment(proc_t *p, const seg_ix_t *x, const char *name)
{
    if (!store_on(p)) return;
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", p->logrel, name);
    sg_store_segment_t g = {
        .sandbox_id = p->sbx->id,
        .process_id = p->id,
        .seq = x->seq,
        .path = path,
        .first_event_id = x->first_id,
        .last_event_id = x->last_id,
        .bytes = x->bytes,
    };
    char *what = sg_xstrdup(path);
    if (sg_store_put_segment(p->m->store, &g, sg__store_logged, what) < 0) free(what);
}

static void store_drop_segments(proc_t *p, uint64_t below)
{
    if (!store_on(p)) return;
    char *what = sg_xstrdup(p->logrel);
    if (sg_store_delete_segments(p->m->store, p->sbx->id, p->id, below, sg__store_logged, what) < 0)
        free(what);
}

/* ------------------------------------------------------------------ removal */

typedef struct rm_ctx {
    sg_procs_t *m;
    uv_fs_t req;
    char *parent; /* the sandbox's directory: removed too once empty */
} rm_ctx_t;

static void on_parent_rmdir(uv_fs_t *req)
{
    rm_ctx_t *c = SG_CONTAINER_OF(req, rm_ctx_t, req);
    uv_fs_req_cleanup(req); /* ENOTEMPTY: other processes of the sandbox still have logs */
    sg_procs_t *m = c->m;
    free(c->parent);
    free(c);
    op_done(m);
}

static void on_removed(void *ud, int err, const char *msg)
{
    rm_ctx_t *c = ud;
    if (err < 0)
        sg_log_kv(SG_LOG_WARN, "logs: could not remove a process's log directory", "error",
                  msg ? msg : sg_strerror(err), NULL);
    if (uv_fs_rmdir(c->m->loop, &c->req, c->parent, on_parent_rmdir) < 0) {
        free(c->parent);
        sg_procs_t *m = c->m;
        free(c);
        op_done(m);
    }
}

static void remove_dir(sg_procs_t *m, const char *dir)
{
    rm_ctx_t *c = sg_xcalloc(1, sizeof(*c));
    c->m = m;
    c->parent = sg_xstrdup(dir);
    char *slash = strrchr(c->parent, '/');
    if (slash) *slash = '\0';
    m->disk_ops++;
    if (sg_seglog_remove(m->loop, dir, on_removed, c) < 0) {
        free(c->parent);
        free(c);
        op_done(m);
    }
}

/* The process's output is gone (retention): files, rows, and the events held in memory. */
static void evict_output(proc_t *p, const char *why)
{
    char b[32];
    snprintf(b, sizeof(b), "%llu", (unsigned long long)disk_bytes(p));
    sg_log_kv(SG_LOG_INFO, "logs: a finished process's output evicted", "sandbox", p->sbx->id,
              "process", p->id, "reason", why, "bytes", b, NULL);
    store_drop_segments(p, UINT64_MAX);
    int64_t delta = 0;
    sg_plog_skip_to(&p->log, p->log.next_id, p->log.out_end, &delta);
    sg_gw_stats.log_bytes += (uint64_t)delta;
    sg_gw_stats.outputs_evicted++;
    char *dir = sg_xstrdup(p->logdir);
    drop_logdir(p);
    remove_dir(p->m, dir);
    free(dir);
}

/* ------------------------------------------------------------------ writer */

static void on_segment(void *ud, const sg_seglog_seg_t *g)
{
    proc_t *p = ud;
    if (!p->logdir) return;
    if (g->event == SG_SEGLOG_DELETED) {
        size_t i = 0;
        while (i < p->nsegs && p->segs[i].seq != g->seq)
            i++;
        if (i == p->nsegs) return;
        memmove(p->segs + i, p->segs + i + 1, (p->nsegs - i - 1) * sizeof(*p->segs));
        p->nsegs--;
        /* The store deletes rows below a seq: below the oldest segment still held, which is
         * exact whatever order the deletions are reported in (retention takes the oldest). */
        if (i == 0) store_drop_segments(p, p->nsegs ? p->segs[0].seq : g->seq + 1);
        sg_gw_stats.segments_deleted++;
        return;
    }
    seg_ix_t *x = ix_get(p, g->seq);
    if (g->first_id) x->first_id = g->first_id;
    if (g->event == SG_SEGLOG_SEALED) {
        x->last_id = g->last_id;
        x->bytes = g->bytes;
        if (g->first_id) {
            x->first_out = g->first_out;
            x->has_out = 1;
        }
    }
    store_segment(p, x, g->name);
}

/* The memory log keeps what the writer has not written yet (plog keep_from): an event leaves
 * memory only once it is in the files, so a reader behind memory never finds a hole there. */
static void pin(proc_t *p, uint64_t from)
{
    int64_t delta = 0;
    uint64_t evicted = p->log.evicted;
    sg_plog_keep_from(&p->log, from, &delta);
    sg_gw_stats.log_bytes += (uint64_t)delta;
    sg_gw_stats.evicted_events += p->log.evicted - evicted; /* the bound's, held back until now */
}

static void on_written(void *ud, uint64_t last_id)
{
    proc_t *p = ud;
    if (last_id + 1 > p->log.keep_from) pin(p, last_id + 1);
}

static void on_drain(void *ud)
{
    proc_t *p = ud;
    p->disk_hold = 0;
    sg__proc_flow(p);
}

static void on_error(void *ud, int err, const char *msg)
{
    proc_t *p = ud;
    sg_log_kv(SG_LOG_ERROR,
              "logs: writing a process's log failed; its output is kept in memory"
              " only from here",
              "sandbox", p->sbx->id, "process", p->id, "error", msg ? msg : sg_strerror(err), NULL);
    sg_gw_stats.disk_errors++;
    pin(p, 0);
    p->disk_hold = 0;
    sg__proc_flow(p);
}

static void open_writer(proc_t *p)
{
    sg_procs_t *m = p->m;
    sg_seglog_config_t c;
    sg_seglog_config_init(&c);
    c.segment_bytes = m->cfg.disk_segment_bytes;
    c.max_bytes = SG_MIN(m->cfg.disk_process_bytes, m->cfg.disk_total_bytes);
    if (c.max_bytes < c.segment_bytes) c.max_bytes = c.segment_bytes;
    c.on_segment = on_segment;
    c.on_drain = on_drain;
    c.on_error = on_error;
    c.on_written = on_written;
    c.flush_ms = m->cfg.disk_flush_ms;
    c.ud = p;
    if (sg_seglog_open(m->loop, p->logdir, &c, &p->disk) < 0) {
        p->disk = NULL;
        return;
    }
    pin(p, p->log.next_id);
    sg__proc_ref(p); /* the writer's, until it closed */
}

void sg__disk_start(proc_t *p)
{
    sg_procs_t *m = p->m;
    if (!m->logs_root || m->shutting_down || p->disk || p->disk_closing) return;
    set_logdir(p);
    open_writer(p);
}

void sg__disk_append(proc_t *p, uint64_t id, const char *type, const char *json, size_t len,
                     sg_plog_kind_t kind, int stream, uint32_t out_len)
{
    /* Stopping: what the shutdown adds (the "lost" end) is not the command's; a restart
     * re-attaches and goes on from what is on disk. */
    if (p->m->shutting_down) {
        if (p->log.keep_from) pin(p, 0);
        return;
    }
    int r = sg_seglog_append(p->disk, id, type, json, len, (int)kind, stream, out_len);
    if (r == 1 && !p->disk_hold) {
        p->disk_hold = 1;
        sg__proc_flow(p);
    }
}

static void on_writer_closed(void *ud)
{
    proc_t *p = ud;
    sg_procs_t *m = p->m;
    p->disk_closing = 0;
    pin(p, 0);
    if (p->remove_log) {
        if (p->logdir && !m->shutting_down) remove_dir(m, p->logdir);
        drop_logdir(p);
    } else {
        sg__proc_store(p); /* finished, now that its whole log is on disk */
    }
    sg__proc_unref(p);
    op_done(m);
}

static void close_writer(proc_t *p)
{
    sg_seglog_t *g = p->disk;
    if (!g) return;
    p->disk = NULL;
    p->disk_closing = 1;
    p->disk_hold = 0;
    p->m->disk_ops++;
    sg_seglog_close(g, on_writer_closed, p);
}

void sg__disk_finished(proc_t *p)
{
    close_writer(p);
}

void sg__disk_unlinked(proc_t *p)
{
    if (!p->logdir || p->m->shutting_down) return;
    p->remove_log = 1;
    if (p->disk) close_writer(p);
    if (p->disk_closing) return; /* removed once closed */
    remove_dir(p->m, p->logdir);
    drop_logdir(p);
}

void sg__disk_free(proc_t *p)
{
    drop_logdir(p);
}

/* ------------------------------------------------------------------ catch-up reads */

enum { RD_ALL = 0, RD_FULL, RD_MEMORY, RD_HOLE };

struct disk_rd {
    sub_t *s; /* NULL once the subscriber ended */
    proc_t *p;
    sg_buf_t *out;
    uint64_t start;    /* next id when the read began */
    uint64_t want;     /* the next id the subscriber needs */
    uint64_t seq, off; /* where a read after want-1 resumes */
    uint64_t events;
    uint64_t hole; /* the id found where want was missing */
    int why;
};

static int rd_event(void *ud, const sg_seglog_rec_t *r)
{
    disk_rd_t *rd = ud;
    sub_t *s = rd->s;
    if (!s) return 1;
    if (r->id < rd->want) return 0;
    if (r->id > rd->want) {
        rd->hole = r->id;
        rd->why = RD_HOLE;
        return 1;
    }
    if (r->id >= rd->p->log.first_id) {
        rd->why = RD_MEMORY;
        return 1;
    }
    if (r->kind != SG_PLOG_RAW || s->raw) {
        char head[SG_PLOG_HEAD_MAX];
        size_t hn = 0;
        if (!s->execd && !(hn = sg_plog_head(head, r->id, r->type))) hn = 0;
        size_t flen = hn + r->json_len + 2;
        if (rd->out->cap - rd->out->len < flen) {
            if (rd->out->len) {
                rd->why = RD_FULL;
                return 1;
            }
            sg_buf_unref(rd->out);
            rd->out = sg_buf_new(flen);
        }
        char *d = rd->out->data + rd->out->len;
        memcpy(d, head, hn);
        memcpy(d + hn, r->json, r->json_len);
        memcpy(d + hn + r->json_len, "\n\n", 2);
        rd->out->len += flen;
        rd->events++;
    }
    rd->want = r->id + 1;
    rd->seq = r->seq;
    rd->off = r->end;
    if (rd->out->len >= CATCH_UP_BYTES) {
        rd->why = RD_FULL;
        return 1;
    }
    return 0;
}

static void rd_done(void *ud, int err, const char *msg, uint64_t records, int torn)
{
    disk_rd_t *rd = ud;
    proc_t *p = rd->p;
    sub_t *s = rd->s;
    (void)records;
    (void)torn; /* the segment being written ends mid-record: the memory has the rest */
    if (!s) goto out;
    s->rd = NULL;
    s->rd_seq = rd->seq;
    s->rd_off = rd->off;
    s->rd_next = rd->want;
    if (err < 0 && err != UV_ENOENT)
        sg_log_kv(SG_LOG_WARN, "logs: reading a process's log for a subscriber failed", "process",
                  p->id, "error", msg ? msg : sg_strerror(err), NULL);
    if (rd->out->len) {
        if (sg__sub_write_buf(s, rd->out, rd->events) < 0) goto out;
    }
    s->next_id = rd->want;
    if (rd->why == RD_HOLE) {
        if (sg__sub_gap(s, rd->hole) < 0) goto out;
    } else if (rd->why == RD_ALL && s->next_id < p->log.first_id && rd->want == rd->start) {
        /* The files end before the memory window starts and a read made no progress (a failed
         * writer): a gap. A read that made progress goes on with a new one instead: the
         * writer may have started a segment this read did not list. */
        if (sg__sub_gap(s, p->log.first_id) < 0) goto out;
    }
    sg__sub_pump(s);
out:
    sg_buf_unref(rd->out);
    sg_procs_t *m = p->m;
    sg__proc_unref(p);
    free(rd);
    op_done(m);
}

int sg__disk_catch_up(sub_t *s)
{
    proc_t *p = s->p;
    sg_procs_t *m = p->m;
    if (s->rd) return 1;
    if (!p->logdir || !p->nsegs || m->closing) return 0;
    const seg_ix_t *f = &p->segs[0];
    if (f->first_id && s->next_id < f->first_id) {
        /* Older than the oldest segment kept: retention took it. */
        if (sg__sub_gap(s, f->first_id) < 0) return -1;
        return 2;
    }
    uint64_t seq = 0, off = 0;
    if (s->rd_next == s->next_id && s->rd_seq) {
        seq = s->rd_seq;
        off = s->rd_off;
    } else {
        size_t i = 0;
        while (i < p->nsegs && p->segs[i].last_id && p->segs[i].last_id < s->next_id)
            i++;
        if (i == p->nsegs) return 0;
        seq = p->segs[i].seq;
    }
    disk_rd_t *rd = sg_xcalloc(1, sizeof(*rd));
    rd->s = s;
    rd->p = sg__proc_ref(p);
    rd->out = sg_buf_new(CATCH_UP_BYTES + 4096);
    rd->want = rd->start = s->next_id;
    rd->seq = seq;
    rd->off = off;
    m->disk_ops++;
    if (sg_seglog_read_from(m->loop, p->logdir, seq, off, rd_event, rd_done, rd) < 0) {
        sg_buf_unref(rd->out);
        sg__proc_unref(p);
        free(rd);
        op_done(m);
        return 0;
    }
    s->rd = rd;
    sg_gw_stats.disk_reads++;
    return 1;
}

void sg__disk_sub_ended(sub_t *s)
{
    if (s->rd) s->rd->s = NULL;
    s->rd = NULL;
}

/* ------------------------------------------------------------------ /output from the files */

#define OUTPUT_DISK_MAX (8u << 20) /* output bytes one answer reads from the files */

typedef struct out_rd {
    proc_t *p;
    sg_http_req_t *req;
    int execd_logs;
    uint64_t off;   /* asked for */
    uint64_t pos;   /* the next output byte wanted */
    uint64_t first; /* first output byte the files hold (UINT64_MAX: none seen yet) */
    int evicted;    /* off is below what the files hold */
    uint64_t hole;  /* where output resumes after a hole, 0: none met */
    sg_buf_t *b;
} out_rd_t;

static int out_event(void *ud, const sg_seglog_rec_t *r)
{
    out_rd_t *o = ud;
    if (o->first == UINT64_MAX) {
        o->first = r->out_off;
        if (o->off < r->out_off) {
            o->evicted = 1;
            return 1;
        }
    }
    if (r->out_len == 0 || r->out_off + r->out_len <= o->pos) return 0;
    if (r->out_off > o->pos) { /* a hole (events the writer dropped): stop before it */
        o->hole = r->out_off;
        return 1;
    }
    if (o->pos >= sg_plog_first_out(&o->p->log) || o->b->len >= OUTPUT_DISK_MAX) return 1;
    unsigned char *tmp = sg_xmalloc((size_t)r->out_len + 4);
    size_t got = sg__event_output(r->kind, r->json, r->json_len, r->out_len, tmp);
    uint64_t skip = o->pos - r->out_off;
    if (skip < got) {
        size_t n = got - (size_t)skip;
        if (o->b->cap - o->b->len < n) {
            size_t nc = o->b->cap * 2;
            while (nc - o->b->len < n)
                nc *= 2;
            sg_buf_t *nb = sg_buf_new(nc);
            memcpy(nb->data, o->b->data, o->b->len);
            nb->len = o->b->len;
            sg_buf_unref(o->b);
            o->b = nb;
        }
        memcpy(o->b->data + o->b->len, tmp + skip, n);
        o->b->len += n;
    }
    o->pos = r->out_off + r->out_len;
    free(tmp);
    return 0;
}

static void out_done(void *ud, int err, const char *msg, uint64_t records, int torn)
{
    out_rd_t *o = ud;
    proc_t *p = o->p;
    sg_procs_t *m = p->m;
    (void)records;
    (void)torn;
    if (err < 0 && err != UV_ENOENT && err != 1)
        sg_log_kv(SG_LOG_WARN, "logs: reading a process's output log failed", "process", p->id,
                  "error", msg ? msg : sg_strerror(err), NULL);
    uint64_t mem_first = sg_plog_first_out(&p->log);
    if (o->hole && !o->b->len) {
        /* Output missing in the middle (never written): past it, like below the oldest. */
        o->first = o->hole;
        o->evicted = 1;
    }
    if (o->evicted || (o->first == UINT64_MAX && o->off < mem_first)) {
        /* Nothing older than what is asked for is left on disk: what is held is the answer. */
        uint64_t first = o->first == UINT64_MAX ? mem_first : SG_MIN(o->first, mem_first);
        if (o->execd_logs) {
            sg_buf_t *b = sg__proc_collect_output(p, first);
            sg__output_respond(p, o->req, 1, first, p->log.out_end, b);
            sg_buf_unref(b);
        } else {
            sg__output_evicted(o->req, first);
        }
    } else {
        /* The files' part, then memory's when the files reached it and the answer has room. */
        if (o->pos >= mem_first && o->b->len < OUTPUT_DISK_MAX && o->pos < p->log.out_end) {
            sg_buf_t *rest = sg__proc_collect_output(p, o->pos);
            sg_buf_t *nb = sg_buf_new(o->b->len + rest->len + 1);
            memcpy(nb->data, o->b->data, o->b->len);
            memcpy(nb->data + o->b->len, rest->data, rest->len);
            nb->len = o->b->len + rest->len;
            o->pos += rest->len;
            sg_buf_unref(rest);
            sg_buf_unref(o->b);
            o->b = nb;
        }
        sg__output_respond(p, o->req, o->execd_logs, o->first, o->pos, o->b);
    }
    sg_buf_unref(o->b);
    free(o);
    sg__proc_unref(p);
    op_done(m);
}

int sg__disk_output(proc_t *p, sg_http_req_t *req, uint64_t off, int execd_logs)
{
    sg_procs_t *m = p->m;
    if (!p->logdir || !p->nsegs || m->closing) return 0;
    out_rd_t *o = sg_xcalloc(1, sizeof(*o));
    o->p = sg__proc_ref(p);
    o->req = req;
    o->execd_logs = execd_logs;
    o->off = o->pos = off;
    o->first = UINT64_MAX;
    o->b = sg_buf_new(64 * 1024);
    /* Start at the newest segment known to begin at or before off (the oldest otherwise). */
    size_t i = 0;
    for (size_t k = 1; k < p->nsegs; k++)
        if (p->segs[k].has_out && p->segs[k].first_out <= off) i = k;
    if (i > 0 && p->segs[0].has_out)
        o->first = p->segs[0].first_out;
    else
        i = 0; /* the oldest's start is what a 410 names: read it */
    m->disk_ops++;
    if (sg_seglog_read_from(m->loop, p->logdir, p->segs[i].seq, 0, out_event, out_done, o) < 0) {
        sg_buf_unref(o->b);
        free(o);
        sg__proc_unref(p);
        op_done(m);
        return 0;
    }
    sg_gw_stats.disk_reads++;
    return 1;
}

/* ------------------------------------------------------------------ restart */

static int load_event(void *ud, const sg_seglog_rec_t *r)
{
    proc_t *p = ud;
    seg_ix_t *x = ix_get(p, r->seq);
    if (!x->first_id || r->id < x->first_id) x->first_id = r->id;
    if (!x->has_out || r->out_off < x->first_out) {
        x->first_out = r->out_off;
        x->has_out = 1;
    }
    if (r->id > x->last_id) x->last_id = r->id;
    if (r->end > x->bytes) x->bytes = r->end;
    sg_plog_t *l = &p->log;
    if (r->id < l->next_id) return 0;
    int64_t delta = 0;
    if (r->id > l->next_id || r->out_off > l->out_end) {
        sg_plog_skip_to(l, r->id, r->out_off, &delta);
        sg_gw_stats.log_bytes += (uint64_t)delta;
    }
    if (sg_plog_append(l, r->type, r->json, r->json_len, (sg_plog_kind_t)r->kind, r->stream,
                       r->out_len, &delta) > 0)
        sg_gw_stats.log_bytes += (uint64_t)delta;
    if (r->kind == SG_PLOG_RAW) p->raw_seen = 1;
    return 0;
}

static void load_done(void *ud, int err, const char *msg, uint64_t records, int torn)
{
    proc_t *p = ud;
    sg_procs_t *m = p->m;
    char n[32];
    snprintf(n, sizeof(n), "%llu", (unsigned long long)records);
    if (err < 0 && err != UV_ENOENT)
        sg_log_kv(SG_LOG_WARN, "restart: reading a process's log failed; it keeps what was read",
                  "process", p->id, "records", n, "error", msg ? msg : sg_strerror(err), NULL);
    else if (torn)
        sg_log_kv(SG_LOG_INFO, "restart: a process's log ended in a partial record (cut off)",
                  "process", p->id, "detail", msg ? msg : "", NULL);
    if (!p->finished && p->linked && !m->closing) {
        sg__disk_start(p); /* the writer recovers the files and goes on after their end */
        sg__proc_reattach(p);
    }
    m->loading--;
    sg__proc_unref(p);
    op_done(m);
}

void sg__disk_restore(proc_t *p, const sg_store_segment_t *segs, size_t nsegs)
{
    sg_procs_t *m = p->m;
    set_logdir(p);
    for (size_t i = 0; i < nsegs; i++) {
        seg_ix_t *x = ix_get(p, segs[i].seq);
        x->first_id = segs[i].first_event_id;
        x->last_id = segs[i].last_event_id;
        x->bytes = segs[i].bytes;
    }
    /* Into memory: the newest segments holding at least the memory bound (older ones are read
     * from the files when a subscriber asks). */
    uint64_t from = 0, acc = 0;
    for (size_t i = p->nsegs; i > 0; i--) {
        acc += p->segs[i - 1].bytes;
        if (acc >= m->cfg.log_bytes) {
            from = p->segs[i - 1].seq;
            break;
        }
    }
    m->loading++;
    m->disk_ops++;
    sg__proc_ref(p);
    if (sg_seglog_read_from(m->loop, p->logdir, from, 0, load_event, load_done, p) < 0)
        load_done(p, SG_EINVAL, "cannot read the log", 0, 0);
}

/* Orphans: log directories with no process record (its sandbox expired while the gateway was
 * down, or the record was dropped before the files). Listed on the thread pool, removed with
 * sg_seglog_remove. */
typedef struct reap {
    uv_work_t w;
    sg_procs_t *m;
    char **keep; /* "sandbox/process" keys, sorted */
    size_t nkeep;
    char **gone;
    size_t ngone, gone_cap;
} reap_t;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void reap_push(reap_t *r, const char *path)
{
    if (r->ngone == r->gone_cap) {
        r->gone_cap = r->gone_cap ? r->gone_cap * 2 : 16;
        r->gone = sg_xrealloc(r->gone, r->gone_cap * sizeof(*r->gone));
    }
    r->gone[r->ngone++] = sg_xstrdup(path);
}

static int is_dir(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static void reap_work(uv_work_t *w)
{
    reap_t *r = SG_CONTAINER_OF(w, reap_t, w);
    const char *root = r->m->logs_root;
    DIR *top = opendir(root);
    if (!top) return;
    struct dirent *e;
    char path[1200], key[600];
    while ((e = readdir(top))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof(path), "%s/%s", root, e->d_name);
        if (!is_dir(path)) continue;
        DIR *sd = opendir(path);
        if (!sd) continue;
        struct dirent *pe;
        int kept = 0;
        size_t mark = r->ngone;
        while ((pe = readdir(sd))) {
            if (pe->d_name[0] == '.') continue;
            snprintf(key, sizeof(key), "%s/%s", e->d_name, pe->d_name);
            const char *k = key;
            if (r->nkeep && bsearch(&k, r->keep, r->nkeep, sizeof(*r->keep), cmp_str)) {
                kept = 1;
                continue;
            }
            size_t n = strlen(path) + strlen(pe->d_name) + 2;
            char *pp = sg_xmalloc(n);
            snprintf(pp, n, "%s/%s", path, pe->d_name);
            reap_push(r, pp);
            free(pp);
        }
        closedir(sd);
        if (!kept) { /* nothing of it is kept: the sandbox's whole directory instead */
            while (r->ngone > mark)
                free(r->gone[--r->ngone]);
            reap_push(r, path);
        }
    }
    closedir(top);
}

static void reap_after(uv_work_t *w, int status)
{
    reap_t *r = SG_CONTAINER_OF(w, reap_t, w);
    sg_procs_t *m = r->m;
    (void)status;
    for (size_t i = 0; i < r->ngone; i++) {
        sg_log_kv(SG_LOG_INFO, "restart: removing a log directory that has no process record",
                  "path", r->gone[i], NULL);
        remove_dir(m, r->gone[i]);
        free(r->gone[i]);
    }
    for (size_t i = 0; i < r->nkeep; i++)
        free(r->keep[i]);
    free(r->keep);
    free(r->gone);
    free(r);
    m->loading--;
    op_done(m);
}

void sg_procs_reap_logs(sg_procs_t *m)
{
    if (!m->logs_root) return;
    reap_t *r = sg_xcalloc(1, sizeof(*r));
    r->m = m;
    size_t cap = 0;
    for (proc_t *p = m->disk_procs; p; p = p->dnext) {
        if (r->nkeep == cap) {
            cap = cap ? cap * 2 : 64;
            r->keep = sg_xrealloc(r->keep, cap * sizeof(*r->keep));
        }
        r->keep[r->nkeep++] = sg_xstrdup(p->logrel + 5); /* past "logs/" */
    }
    if (r->nkeep) qsort(r->keep, r->nkeep, sizeof(*r->keep), cmp_str);
    m->loading++;
    m->disk_ops++;
    if (uv_queue_work(m->loop, &r->w, reap_work, reap_after) < 0) reap_after(&r->w, 0);
}

/* ------------------------------------------------------------------ retention */

static int cmp_finished(const void *a, const void *b)
{
    const proc_t *x = *(proc_t *const *)a, *y = *(proc_t *const *)b;
    return x->finished_us < y->finished_us ? -1 : x->finished_us > y->finished_us;
}

static void retention_check(sg_procs_t *m)
{
    int64_t now = sg_sbx_now_us();
    uint64_t total = 0;
    size_t nfin = 0, nrun = 0;
    proc_t *next;
    for (proc_t *p = m->disk_procs; p; p = next) {
        next = p->dnext;
        uint64_t b = disk_bytes(p);
        int idle = p->finished && !p->disk && !p->disk_closing && !p->remove_log;
        if (idle && m->cfg.disk_max_age_ms &&
            p->finished_us + (int64_t)m->cfg.disk_max_age_ms * 1000 < now) {
            evict_output(p, "age");
            continue;
        }
        total += b;
        if (idle) nfin++;
        if (p->disk) nrun++;
    }
    sg_gw_stats.disk_bytes = total;
    uint64_t limit = m->cfg.disk_total_bytes;
    if (total > limit && nfin) {
        proc_t **v = sg_xmalloc(nfin * sizeof(*v));
        size_t n = 0;
        for (proc_t *p = m->disk_procs; p; p = p->dnext)
            if (p->finished && !p->disk && !p->disk_closing && !p->remove_log) v[n++] = p;
        qsort(v, n, sizeof(*v), cmp_finished);
        for (size_t i = 0; i < n && total > limit; i++) {
            total -= SG_MIN(total, disk_bytes(v[i]));
            evict_output(v[i], "total bytes");
        }
        free(v);
        sg_gw_stats.disk_bytes = total;
    }
    /* Running processes: each held to an equal share while the total is over. */
    if (!nrun) return;
    uint64_t per = SG_MIN(m->cfg.disk_process_bytes, limit);
    if (total > limit) per = SG_MIN(per, limit / nrun);
    if (per < m->cfg.disk_segment_bytes) per = m->cfg.disk_segment_bytes;
    for (proc_t *p = m->disk_procs; p; p = p->dnext)
        if (p->disk) sg_seglog_set_max_bytes(p->disk, per);
}

static void on_retention(uv_timer_t *t)
{
    retention_check(t->data);
}

void sg__disk_init(sg_procs_t *m, const char *data_dir)
{
    size_t n = strlen(data_dir) + 8;
    m->logs_root = sg_xmalloc(n);
    snprintf(m->logs_root, n, "%s/logs", data_dir);
    uv_timer_init(m->loop, &m->retention);
    m->retention.data = m;
    uv_timer_start(&m->retention, on_retention, 1000, 1000);
    uv_unref((uv_handle_t *)&m->retention);
}

static void on_retention_closed(uv_handle_t *h)
{
    sg__procs_close_step(h->data);
}

void sg__disk_close(sg_procs_t *m)
{
    if (!m->logs_root) {
        sg__procs_close_step(m);
        return;
    }
    uv_close((uv_handle_t *)&m->retention, on_retention_closed);
}
