/* seglog.c: segment files of a process's output log (seglog.h).
 *
 * Map
 *   codec        sg__crc32, sg__seg_encode, the incremental decoder sg__segdec_* (seglog_int.h)
 *   writer       sg_seglog_open / append / sync / close. One request in flight per log
 *                (g->busy): the open work item, a segment create or seal work item, a
 *                batch's write work item (its records' CRCs, then write(2): appends only
 *                copy), or a uv_fs_fdatasync for sync waiters. pump() picks
 *                the next step whenever one finishes or the caller adds something.
 *                Retention unlinks run beside it (g->unlinks), each with its own request.
 *   reader       sg_seglog_read: scandir, then per segment open / read chunks / close.
 *   remove       sg_seglog_remove: one work item doing a depth-first delete.
 *
 * User callbacks never run from inside the API call that causes them: a step that would call
 * back at once (a sync with nothing to write) is deferred to the flush timer (timeout 0). */
#define _GNU_SOURCE /* nftw */
#include "seglog_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandgate/common.h"

/* ---- codec ---------------------------------------------------------------------------- */

/* Slicing-by-8 (eight tables, eight bytes per step): several times the byte-at-a-time loop,
 * with the same result (IEEE / zlib CRC-32). */
static uint32_t crc_table[8][256];
static uv_once_t crc_once = UV_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] =
                crc_table[0][crc_table[t - 1][i] & 0xff] ^ (crc_table[t - 1][i] >> 8);
}

uint32_t sg__crc32(uint32_t crc, const void *p, size_t n)
{
    uv_once(&crc_once, crc_init); /* the recovery work item may be the first user */
    const uint8_t *b = p;
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                             (uint32_t)b[3] << 24);
        uint32_t hi = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
                      (uint32_t)b[7] << 24;
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        b += 8;
        n -= 8;
    }
    while (n--)
        crc = crc_table[0][(crc ^ *b++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void encode(uint8_t *out, uint64_t id, uint64_t out_off, uint32_t out_len, int kind,
                   int stream, const char *type, size_t type_len, const char *json,
                   size_t json_len, int with_crc);

void sg__seg_encode(uint8_t *out, uint64_t id, uint64_t out_off, uint32_t out_len, int kind,
                    int stream, const char *type, size_t type_len, const char *json,
                    size_t json_len)
{
    encode(out, id, out_off, out_len, kind, stream, type, type_len, json, json_len, 1);
}

/* The CRC of every record in buf (encoded without one): the writer leaves this to the pool
 * thread that writes the batch, so the loop thread only copies. */
static void fill_crcs(uint8_t *buf, size_t len)
{
    for (size_t off = 0; off + SG__SEG_HDR <= len;) {
        uint8_t *h = buf + off;
        uint32_t plen = rd32(h + 1);
        wr32(h + 5, sg__crc32(0, h + SG__SEG_HDR, plen));
        off += SG__SEG_HDR + (size_t)plen;
    }
}

static void encode(uint8_t *out, uint64_t id, uint64_t out_off, uint32_t out_len, int kind,
                   int stream, const char *type, size_t type_len, const char *json,
                   size_t json_len, int with_crc)
{
    uint8_t *p = out + SG__SEG_HDR;
    size_t plen = SG__SEG_FIXED + type_len + json_len;
    wr64(p, id);
    wr64(p + 8, out_off);
    wr32(p + 16, out_len);
    p[20] = (uint8_t)kind;
    p[21] = (uint8_t)stream;
    p[22] = (uint8_t)type_len;
    if (type_len) memcpy(p + 23, type, type_len);
    wr32(p + 23 + type_len, (uint32_t)json_len);
    if (json_len) memcpy(p + 27 + type_len, json, json_len);
    out[0] = SG__SEG_MAGIC;
    wr32(out + 1, (uint32_t)plen);
    wr32(out + 5, with_crc ? sg__crc32(0, p, plen) : 0);
}

void sg__segdec_init(sg__segdec_t *d)
{
    memset(d, 0, sizeof(*d));
}

void sg__segdec_reset(sg__segdec_t *d)
{
    d->start = d->end = 0;
    d->off = 0;
    d->need = 0;
}

void sg__segdec_free(sg__segdec_t *d)
{
    free(d->buf);
    memset(d, 0, sizeof(*d));
}

void sg__segdec_space(sg__segdec_t *d, size_t min, uint8_t **p, size_t *n)
{
    size_t have = d->end - d->start;
    if (d->start) { /* keep the partial record at the front */
        memmove(d->buf, d->buf + d->start, have);
        d->start = 0;
        d->end = have;
    }
    size_t want = have + min;
    if (d->need > want) want = d->need;
    if (want < 64) want = 64; /* a buffer even for min 0 */
    if (d->cap < want) {
        d->buf = sg_xrealloc(d->buf, want);
        d->cap = want;
    }
    *p = d->buf + d->end;
    *n = d->cap - d->end;
}

void sg__segdec_commit(sg__segdec_t *d, size_t n)
{
    d->end += n;
}

int sg__segdec_next(sg__segdec_t *d, sg_seglog_rec_t *r, const char **why)
{
    size_t avail = d->end - d->start;
    const uint8_t *h = d->buf + d->start;
    if (avail == 0) return 0;
    if (h[0] != SG__SEG_MAGIC) {
        *why = "bad magic byte";
        return SG_EPROTO;
    }
    if (avail < SG__SEG_HDR) {
        d->need = SG__SEG_HDR;
        return 0;
    }
    uint32_t plen = rd32(h + 1);
    if (plen < SG__SEG_FIXED || plen > SG_SEGLOG_MAX_RECORD) {
        *why = "bad record length";
        return SG_EPROTO;
    }
    if (avail < SG__SEG_HDR + (size_t)plen) {
        d->need = SG__SEG_HDR + (size_t)plen;
        return 0;
    }
    const uint8_t *p = h + SG__SEG_HDR;
    if (sg__crc32(0, p, plen) != rd32(h + 5)) {
        *why = "bad CRC";
        return SG_EPROTO;
    }
    size_t tl = p[22];
    if (SG__SEG_FIXED + tl > plen || memchr(p + 23, 0, tl)) {
        *why = "bad event type";
        return SG_EPROTO;
    }
    uint32_t jl = rd32(p + 23 + tl);
    if (SG__SEG_FIXED + tl + jl != plen) {
        *why = "bad json length";
        return SG_EPROTO;
    }
    memcpy(d->type, p + 23, tl);
    d->type[tl] = '\0';
    r->id = rd64(p);
    r->out_off = rd64(p + 8);
    r->out_len = rd32(p + 16);
    r->kind = p[20];
    r->stream = p[21];
    r->type = d->type;
    r->json = (const char *)p + 27 + tl;
    r->json_len = jl;
    r->seq = 0;
    r->off = d->off;
    r->end = d->off + SG__SEG_HDR + plen;
    d->start += SG__SEG_HDR + plen;
    d->off += SG__SEG_HDR + plen;
    d->need = 0;
    return 1;
}

/* ---- requests on the thread pool -------------------------------------------------------- */

static uint64_t fs_started, fs_done; /* loop thread only */

void sg__seglog_fs_counts(uint64_t *started, uint64_t *done)
{
    *started = fs_started;
    *done = fs_done;
}

/* Every request goes through these: a NULL callback (a synchronous call on the loop thread)
 * cannot be written, and the counters show each request came back. */
#define FS_CALL(fn, ...)                                                                           \
    do {                                                                                           \
        fs_started++;                                                                              \
        int rc_ = fn(__VA_ARGS__);                                                                 \
        if (rc_ < 0) {                                                                             \
            fprintf(stderr, "seglog: %s: %s\n", #fn, uv_strerror(rc_));                            \
            abort(); /* only EINVAL on a bad argument: a bug */                                    \
        }                                                                                          \
    } while (0)

static void seg_name(char *out, size_t n, uint64_t seq)
{
    snprintf(out, n, "%06" PRIu64 ".seg", seq);
}

/* seq of a segment file name, or 0 when name is not one. */
static uint64_t seg_seq(const char *name)
{
    size_t n = strlen(name), dl = 0;
    while (dl < n && name[dl] >= '0' && name[dl] <= '9')
        dl++;
    if (dl < 6 || dl > 19 || strcmp(name + dl, ".seg") != 0) return 0;
    return strtoull(name, NULL, 10);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- writer ----------------------------------------------------------------------------- */

typedef struct seg_info {
    uint64_t seq, bytes, first_id, last_id, first_out, out_end, nrec;
} seg_info_t;

typedef struct waiter {
    struct waiter *next;
    void (*cb)(void *ud, int err, const char *msg);
    void *ud;
} waiter_t;

enum { OP_OPEN = 1, OP_CREATE, OP_SEAL };

typedef struct unlink_req {
    uv_fs_t req;
    sg_seglog_t *g;
    seg_info_t info;
    char path[];
} unlink_req_t;

struct sg_seglog {
    uv_loop_t *loop;
    char *dir;
    size_t path_cap;
    sg_seglog_config_t cfg;
    uv_timer_t timer;
    int timer_armed;
    int flush_due;
    uv_fs_t req; /* the write or fdatasync in flight */
    uv_work_t work;
    /* the work item in flight (the loop thread does not touch these meanwhile) */
    int op, op_err, op_fd, op_nosync;
    char op_msg[512];
    char *op_path;
    seg_info_t *op_segs, *op_gone;
    size_t op_nsegs, op_ngone;
    int op_recovered;
    uint64_t op_next_seq;

    int busy, opened, closing, finished, in_api, backpressured;
    int err;
    char *errmsg;
    void (*close_cb)(void *ud);
    void *close_ud;

    uint8_t *pend, *wbuf;
    size_t pend_len, pend_cap, wbuf_len, wbuf_cap, wbuf_done;
    seg_info_t w;    /* the records of the write in flight */
    ssize_t w_result; /* write_work: bytes written, or a negative error */

    int fd;
    seg_info_t cur;
    uint64_t next_seq, next_out;
    seg_info_t *sealed; /* oldest first */
    size_t nsealed, sealed_cap;
    uint64_t sealed_bytes;
    unsigned unlinks;
    waiter_t *waiters, *syncing;
    sg_seglog_stats_t st;
};

static void pump(sg_seglog_t *g);

void sg_seglog_config_init(sg_seglog_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->segment_bytes = 8u << 20;
    c->max_bytes = 64u << 20;
    c->flush_bytes = 64u * 1024u;
    c->flush_ms = 50;
    c->max_pending = 4u << 20;
}

static void seg_path(const sg_seglog_t *g, char *out, uint64_t seq)
{
    char name[32];
    seg_name(name, sizeof name, seq);
    snprintf(out, g->path_cap, "%s/%s", g->dir, name);
}

static void emit(sg_seglog_t *g, sg_seglog_seg_event_t ev, const seg_info_t *s)
{
    if (!g->cfg.on_segment) return;
    char path[g->path_cap], name[32];
    seg_path(g, path, s->seq);
    seg_name(name, sizeof name, s->seq);
    sg_seglog_seg_t e = {.event = ev,
                         .seq = s->seq,
                         .path = path,
                         .name = name,
                         .first_id = s->first_id,
                         .last_id = s->last_id,
                         .first_out = s->first_out,
                         .out_end = s->out_end,
                         .bytes = s->bytes};
    g->cfg.on_segment(g->cfg.ud, &e);
}

static void check_drain(sg_seglog_t *g)
{
    if (g->backpressured && g->pend_len < g->cfg.max_pending / 2) {
        g->backpressured = 0;
        if (g->cfg.on_drain) g->cfg.on_drain(g->cfg.ud);
    }
}

static void fail(sg_seglog_t *g, int err, const char *msg)
{
    if (g->err) return;
    g->err = err;
    g->errmsg = sg_xstrdup(msg);
    g->pend_len = 0; /* nothing more will be written */
    if (g->cfg.on_error) g->cfg.on_error(g->cfg.ud, err, msg);
    check_drain(g);
}

static void arm_timer(sg_seglog_t *g, uint64_t ms);

/* Calls back the waiters of *list; from inside an API call, defers that to the timer instead
 * (returns 1). */
static int complete(sg_seglog_t *g, waiter_t **list, int err, const char *msg)
{
    if (!*list) return 0;
    if (g->in_api) {
        arm_timer(g, 0);
        return 1;
    }
    while (*list) {
        waiter_t *w = *list;
        *list = w->next;
        w->cb(w->ud, err, msg);
        free(w);
    }
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    sg_seglog_t *g = SG_CONTAINER_OF(t, sg_seglog_t, timer);
    g->timer_armed = 0;
    g->flush_due = g->pend_len > 0;
    pump(g);
}

static void arm_timer(sg_seglog_t *g, uint64_t ms)
{
    uv_timer_start(&g->timer, on_timer, ms, 0);
    g->timer_armed = 1;
}

static void on_closed(uv_handle_t *h)
{
    sg_seglog_t *g = SG_CONTAINER_OF(h, sg_seglog_t, timer);
    void (*cb)(void *) = g->close_cb;
    void *ud = g->close_ud;
    while (g->waiters) { /* sync called after close: not allowed, but answered */
        waiter_t *w = g->waiters;
        g->waiters = w->next;
        w->cb(w->ud, SG_ECLOSED, "the segment log was closed");
        free(w);
    }
    free(g->pend);
    free(g->wbuf);
    free(g->sealed);
    free(g->errmsg);
    free(g->op_path);
    free(g->dir);
    free(g);
    if (cb) cb(ud);
}

static void maybe_finish(sg_seglog_t *g)
{
    if (g->finished || g->busy || g->unlinks || g->fd >= 0 || g->waiters) return;
    g->finished = 1;
    uv_timer_stop(&g->timer);
    uv_close((uv_handle_t *)&g->timer, on_closed);
}

/* -- retention */

static void on_unlink(uv_fs_t *req)
{
    unlink_req_t *u = SG_CONTAINER_OF(req, unlink_req_t, req);
    sg_seglog_t *g = u->g;
    fs_done++;
    int r = (int)req->result;
    uv_fs_req_cleanup(req);
    g->unlinks--;
    if (r < 0 && r != UV_ENOENT) {
        char msg[600];
        snprintf(msg, sizeof msg, "unlink %s: %s", u->path, uv_strerror(r));
        fail(g, r, msg);
    } else {
        g->st.segments_deleted++;
        emit(g, SG_SEGLOG_DELETED, &u->info);
    }
    free(u);
    pump(g);
}

static void unlink_seg(sg_seglog_t *g, const seg_info_t *s)
{
    unlink_req_t *u = sg_xmalloc(sizeof(*u) + g->path_cap);
    u->g = g;
    u->info = *s;
    seg_path(g, u->path, s->seq);
    g->unlinks++;
    FS_CALL(uv_fs_unlink, g->loop, &u->req, u->path, on_unlink);
}

static void retention(sg_seglog_t *g)
{
    while (g->nsealed && g->sealed_bytes + g->cur.bytes > g->cfg.max_bytes) {
        seg_info_t s = g->sealed[0];
        memmove(g->sealed, g->sealed + 1, (g->nsealed - 1) * sizeof(*g->sealed));
        g->nsealed--;
        g->sealed_bytes -= s.bytes;
        unlink_seg(g, &s);
    }
}

static void push_sealed(sg_seglog_t *g, const seg_info_t *s)
{
    if (g->nsealed == g->sealed_cap) {
        g->sealed_cap = g->sealed_cap ? g->sealed_cap * 2 : 16;
        g->sealed = sg_xrealloc(g->sealed, g->sealed_cap * sizeof(*g->sealed));
    }
    g->sealed[g->nsealed++] = *s;
    g->sealed_bytes += s->bytes;
}

/* -- work items (thread pool: only op_* fields, g->dir and g->path_cap are touched) */

static void op_error(sg_seglog_t *g, int err, const char *what, const char *path)
{
    g->op_err = err;
    snprintf(g->op_msg, sizeof g->op_msg, "%s %s: %s", what, path, uv_strerror(err));
}

static int mkdir_p(sg_seglog_t *g)
{
    char *p = sg_xstrdup(g->dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            op_error(g, -errno, "mkdir", p);
            rc = -1;
            break;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    return rc;
}

/* Reads one segment and fills *s (first / last id, output range, records) up to its last
 * valid record, whose end goes to *valid. */
static int scan_file(sg_seglog_t *g, const char *path, seg_info_t *s, uint64_t *valid)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        op_error(g, -errno, "open", path);
        return -1;
    }
    sg__segdec_t d;
    sg__segdec_init(&d);
    int rc = 0, stop = 0;
    *valid = 0;
    s->nrec = 0;
    while (!stop) {
        uint8_t *p;
        size_t n;
        sg__segdec_space(&d, SG__SEG_CHUNK, &p, &n);
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            op_error(g, -errno, "read", path);
            rc = -1;
            break;
        }
        if (r == 0) break;
        sg__segdec_commit(&d, (size_t)r);
        for (;;) {
            sg_seglog_rec_t rec;
            const char *why;
            int k = sg__segdec_next(&d, &rec, &why);
            if (k == 0) break;
            if (k < 0) { /* a torn tail: what follows is cut off */
                stop = 1;
                break;
            }
            if (!s->nrec) {
                s->first_id = rec.id;
                s->first_out = rec.out_off;
            }
            s->last_id = rec.id;
            s->out_end = rec.out_off + rec.out_len;
            s->nrec++;
            *valid = d.off;
        }
    }
    sg__segdec_free(&d);
    close(fd);
    return rc;
}

static int truncate_to(sg_seglog_t *g, const char *path, uint64_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)len) != 0 || fdatasync(fd) != 0) {
        op_error(g, -errno, "truncate", path);
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int sync_dir(sg_seglog_t *g)
{
    int fd = open(g->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        op_error(g, -errno, "fsync", g->dir);
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static void open_work(sg_seglog_t *g)
{
    if (mkdir_p(g)) return;
    DIR *dp = opendir(g->dir);
    if (!dp) {
        op_error(g, -errno, "opendir", g->dir);
        return;
    }
    uint64_t *seqs = NULL, maxseq = 0;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        uint64_t q = seg_seq(de->d_name);
        if (!q) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            seqs = sg_xrealloc(seqs, cap * sizeof(*seqs));
        }
        seqs[n++] = q;
        if (q > maxseq) maxseq = q;
    }
    closedir(dp);
    if (n) qsort(seqs, n, sizeof(*seqs), cmp_u64);
    g->op_next_seq = maxseq + 1;
    g->op_segs = sg_xcalloc(n ? n : 1, sizeof(seg_info_t));
    g->op_gone = sg_xcalloc(n ? n : 1, sizeof(seg_info_t));
    char *path = sg_xmalloc(g->path_cap);
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        seg_path(g, path, seqs[i]);
        if (stat(path, &sb) != 0) {
            op_error(g, -errno, "stat", path);
            goto out;
        }
        g->op_segs[i].seq = seqs[i];
        g->op_segs[i].bytes = (uint64_t)sb.st_size;
    }
    g->op_nsegs = n;
    /* Recovery: only the last segment can end torn (sealed ones were synced before the next
     * was created); cut it back to its last whole record, and drop it if none is left. */
    while (g->op_nsegs) {
        seg_info_t *s = &g->op_segs[g->op_nsegs - 1];
        uint64_t valid;
        seg_path(g, path, s->seq);
        if (scan_file(g, path, s, &valid)) goto out;
        if (!s->nrec) {
            if (unlink(path) != 0 && errno != ENOENT) {
                op_error(g, -errno, "unlink", path);
                goto out;
            }
            g->op_gone[g->op_ngone++] = *s;
            g->op_nsegs--;
            continue;
        }
        if (valid < s->bytes) {
            if (truncate_to(g, path, valid)) goto out;
            s->bytes = valid;
        }
        g->op_recovered = 1;
        break;
    }
out:
    free(path);
    free(seqs);
}

static void work_cb(uv_work_t *w)
{
    sg_seglog_t *g = SG_CONTAINER_OF(w, sg_seglog_t, work);
    g->op_err = 0;
    switch (g->op) {
    case OP_OPEN: open_work(g); break;
    case OP_CREATE:
        g->op_fd = open(g->op_path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
        if (g->op_fd < 0) {
            op_error(g, -errno, "create", g->op_path);
        } else if (sync_dir(g)) { /* the new name must outlive a host crash */
            close(g->op_fd);
            g->op_fd = -1;
        }
        break;
    case OP_SEAL:
        /* a failed log only closes its file */
        if (!g->op_nosync && fdatasync(g->op_fd) != 0) op_error(g, -errno, "fdatasync", g->op_path);
        close(g->op_fd);
        break;
    }
}

/* Adds base to the out_off of every pending record (appended before open found where the
 * output continues). */
static void rebase_pending(sg_seglog_t *g, uint64_t base)
{
    for (size_t at = 0; at < g->pend_len;) {
        uint8_t *h = g->pend + at, *p = h + SG__SEG_HDR;
        uint32_t plen = rd32(h + 1);
        wr64(p + 8, rd64(p + 8) + base);
        wr32(h + 5, sg__crc32(0, p, plen));
        at += SG__SEG_HDR + plen;
    }
}

static void after_open(sg_seglog_t *g)
{
    if (g->op_err) {
        fail(g, g->op_err, g->op_msg);
    } else {
        g->next_seq = g->op_next_seq;
        for (size_t i = 0; i < g->op_ngone; i++) {
            g->st.segments_deleted++;
            emit(g, SG_SEGLOG_DELETED, &g->op_gone[i]);
        }
        for (size_t i = 0; i < g->op_nsegs; i++)
            push_sealed(g, &g->op_segs[i]);
        if (g->op_recovered) {
            const seg_info_t *last = &g->op_segs[g->op_nsegs - 1];
            rebase_pending(g, last->out_end);
            g->next_out += last->out_end;
            emit(g, SG_SEGLOG_SEALED, last);
        }
        retention(g);
    }
    free(g->op_segs);
    free(g->op_gone);
    g->op_segs = g->op_gone = NULL;
    g->opened = 1;
}

static void after_work(uv_work_t *w, int status)
{
    sg_seglog_t *g = SG_CONTAINER_OF(w, sg_seglog_t, work);
    fs_done++;
    g->busy = 0;
    (void)status; /* never cancelled */
    switch (g->op) {
    case OP_OPEN: after_open(g); break;
    case OP_CREATE:
        if (g->op_err) {
            fail(g, g->op_err, g->op_msg);
            break;
        }
        g->fd = g->op_fd;
        memset(&g->cur, 0, sizeof(g->cur));
        g->cur.seq = g->next_seq++;
        g->st.segments_created++;
        {
            /* the first pending record is the segment's first */
            const uint8_t *p = g->pend + SG__SEG_HDR;
            seg_info_t s = g->cur;
            if (g->pend_len) {
                s.first_id = rd64(p);
                s.first_out = rd64(p + 8);
                s.out_end = s.first_out;
            }
            emit(g, SG_SEGLOG_NEW, &s);
        }
        break;
    case OP_SEAL:
        g->fd = -1;
        if (g->op_err) {
            fail(g, g->op_err, g->op_msg);
            break;
        }
        if (!g->err) {
            push_sealed(g, &g->cur);
            emit(g, SG_SEGLOG_SEALED, &g->cur);
        }
        memset(&g->cur, 0, sizeof(g->cur));
        retention(g);
        break;
    }
    pump(g);
}

static void start_work(sg_seglog_t *g, int op)
{
    g->op = op;
    g->busy = 1;
    FS_CALL(uv_queue_work, g->loop, &g->work, work_cb, after_work);
}

static void start_create(sg_seglog_t *g)
{
    seg_path(g, g->op_path, g->next_seq);
    start_work(g, OP_CREATE);
}

static void start_seal(sg_seglog_t *g)
{
    seg_path(g, g->op_path, g->cur.seq);
    g->op_fd = g->fd;
    g->op_nosync = g->err != 0;
    start_work(g, OP_SEAL);
}

/* -- writes */

static void issue_write(sg_seglog_t *g);

/* Pool: the batch's CRCs (the loop thread only copied the records), then the whole batch
 * written. */
static void write_work(uv_work_t *w)
{
    sg_seglog_t *g = SG_CONTAINER_OF(w, sg_seglog_t, work);
    fill_crcs(g->wbuf, g->wbuf_len);
    size_t done = 0;
    while (done < g->wbuf_len) {
        ssize_t r = write(g->fd, g->wbuf + done, g->wbuf_len - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            /* no progress on a regular file: do not spin */
            g->w_result = r < 0 ? -errno : UV_EIO;
            g->wbuf_done = done;
            return;
        }
        done += (size_t)r;
    }
    g->wbuf_done = done;
    g->w_result = (ssize_t)done;
}

static void on_write(uv_work_t *w, int status)
{
    sg_seglog_t *g = SG_CONTAINER_OF(w, sg_seglog_t, work);
    fs_done++;
    ssize_t r = status < 0 ? status : g->w_result;
    if (r < 0) {
        char msg[600], path[g->path_cap];
        seg_path(g, path, g->cur.seq);
        snprintf(msg, sizeof msg, "write %s: %s", path, uv_strerror((int)r));
        /* what reached the file may end in a partial record: the reader and a later open
         * treat it as the torn tail it is */
        g->busy = 0;
        fail(g, (int)r, msg);
        pump(g);
        return;
    }
    g->busy = 0;
    if (!g->cur.nrec) {
        g->cur.first_id = g->w.first_id;
        g->cur.first_out = g->w.first_out;
    }
    g->cur.last_id = g->w.last_id;
    g->cur.out_end = g->w.out_end;
    g->cur.nrec += g->w.nrec;
    g->cur.bytes += g->wbuf_len;
    g->st.writes++;
    g->st.bytes_written += g->wbuf_len;
    if (g->cfg.on_written) g->cfg.on_written(g->cfg.ud, g->w.last_id);
    check_drain(g);
    retention(g);
    pump(g);
}

static void issue_write(sg_seglog_t *g)
{
    g->busy = 1;
    g->wbuf_done = 0;
    FS_CALL(uv_queue_work, g->loop, &g->work, write_work, on_write);
}

static void start_write(sg_seglog_t *g)
{
    /* the records that fit in the current segment (at least one) */
    uint64_t room = g->cfg.segment_bytes - g->cur.bytes;
    size_t n = 0;
    memset(&g->w, 0, sizeof(g->w));
    while (n < g->pend_len) {
        const uint8_t *h = g->pend + n, *p = h + SG__SEG_HDR;
        size_t rs = SG__SEG_HDR + rd32(h + 1);
        if (n && n + rs > room) break;
        if (!g->w.nrec) {
            g->w.first_id = rd64(p);
            g->w.first_out = rd64(p + 8);
        }
        g->w.last_id = rd64(p);
        g->w.out_end = rd64(p + 8) + rd32(p + 16);
        g->w.nrec++;
        n += rs;
    }
    /* the batch goes out from wbuf; what did not fit stays pending */
    uint8_t *tb = g->wbuf;
    size_t tc = g->wbuf_cap, rest = g->pend_len - n;
    g->wbuf = g->pend;
    g->wbuf_cap = g->pend_cap;
    g->wbuf_len = n;
    g->wbuf_done = 0;
    g->pend = tb;
    g->pend_cap = tc;
    if (rest > g->pend_cap) {
        g->pend = sg_xrealloc(g->pend, rest);
        g->pend_cap = rest;
    }
    if (rest) memcpy(g->pend, g->wbuf + n, rest);
    g->pend_len = rest;
    if (!rest) {
        g->flush_due = 0;
        if (g->timer_armed) {
            uv_timer_stop(&g->timer);
            g->timer_armed = 0;
        }
    }
    issue_write(g);
}

/* -- sync */

static void on_sync(uv_fs_t *req)
{
    sg_seglog_t *g = SG_CONTAINER_OF(req, sg_seglog_t, req);
    fs_done++;
    int r = (int)req->result;
    uv_fs_req_cleanup(req);
    g->busy = 0;
    g->st.syncs++;
    if (r < 0) {
        char msg[600], path[g->path_cap];
        seg_path(g, path, g->cur.seq);
        snprintf(msg, sizeof msg, "fdatasync %s: %s", path, uv_strerror(r));
        fail(g, r, msg);
    }
    complete(g, &g->syncing, g->err, g->errmsg);
    pump(g);
}

static void pump(sg_seglog_t *g)
{
    if (g->busy || !g->opened || g->finished) return;
    if (g->err) {
        g->pend_len = 0;
        if (complete(g, &g->waiters, g->err, g->errmsg)) return;
        if (g->closing) {
            if (g->fd >= 0)
                start_seal(g); /* closes the file only */
            else
                maybe_finish(g);
        }
        return;
    }
    if (g->fd >= 0 && g->cur.bytes >= g->cfg.segment_bytes) {
        start_seal(g);
        return;
    }
    int force = g->flush_due || g->waiters || g->closing;
    if (g->pend_len && (g->pend_len >= g->cfg.flush_bytes || force)) {
        if (g->fd < 0)
            start_create(g);
        else if (g->cur.bytes &&
                 g->cur.bytes + SG__SEG_HDR + rd32(g->pend + 1) > g->cfg.segment_bytes)
            start_seal(g); /* the next record does not fit: it opens the next segment */
        else
            start_write(g);
        return;
    }
    if (g->waiters) {
        if (g->fd >= 0) {
            g->syncing = g->waiters;
            g->waiters = NULL;
            g->busy = 1;
            FS_CALL(uv_fs_fdatasync, g->loop, &g->req, g->fd, on_sync);
            return;
        }
        /* no open segment: everything written was sealed, i.e. synced */
        if (complete(g, &g->waiters, 0, NULL)) return;
    }
    if (g->closing) {
        if (g->fd >= 0)
            start_seal(g);
        else
            maybe_finish(g);
        return;
    }
    if (g->pend_len && !g->timer_armed) arm_timer(g, g->cfg.flush_ms);
}

/* -- API */

int sg_seglog_open(uv_loop_t *loop, const char *dir, const sg_seglog_config_t *cfg,
                   sg_seglog_t **out)
{
    sg_seglog_config_t c;
    if (cfg)
        c = *cfg;
    else
        sg_seglog_config_init(&c);
    size_t dl = dir ? strlen(dir) : 0;
    if (!dl || dir[0] != '/' || dl > 4000 || c.segment_bytes < 4096 || c.flush_bytes == 0 ||
        c.max_pending < c.flush_bytes || c.max_bytes < c.segment_bytes)
        return SG_EINVAL;
    sg_seglog_t *g = sg_xcalloc(1, sizeof(*g));
    g->loop = loop;
    g->dir = sg_xstrndup(dir, dl > 1 && dir[dl - 1] == '/' ? dl - 1 : dl);
    g->path_cap = dl + 32;
    g->op_path = sg_xmalloc(g->path_cap);
    g->cfg = c;
    g->fd = -1;
    g->next_seq = 1;
    uv_timer_init(loop, &g->timer);
    start_work(g, OP_OPEN);
    *out = g;
    return 0;
}

int sg_seglog_append(sg_seglog_t *g, uint64_t id, const char *type, const char *json,
                     size_t json_len, int kind, int stream, uint32_t out_len)
{
    if (g->closing) return SG_ECLOSED;
    if (g->err) return g->err;
    size_t tl = strlen(type);
    if (tl > SG_SEGLOG_MAX_TYPE) return SG_EINVAL;
    if (json_len > SG_SEGLOG_MAX_RECORD - SG__SEG_FIXED - tl) return SG_ETOOBIG;
    size_t rs = sg__seg_record_size(tl, json_len);
    if (g->pend_len && g->pend_len + rs > 2 * g->cfg.max_pending) {
        g->st.dropped++;
        return SG_ETOOBIG;
    }
    if (g->pend_len + rs > g->pend_cap) {
        size_t nc = g->pend_cap ? g->pend_cap : g->cfg.flush_bytes * 2;
        while (nc < g->pend_len + rs)
            nc *= 2;
        g->pend = sg_xrealloc(g->pend, nc);
        g->pend_cap = nc;
    }
    encode(g->pend + g->pend_len, id, g->next_out, out_len, kind, stream, type, tl, json,
           json_len, 0); /* its CRC: write_work, on the pool */
    g->next_out += out_len;
    g->pend_len += rs;
    g->st.appends++;
    if (g->pend_len > g->st.pending_max) g->st.pending_max = g->pend_len;
    if (!g->busy && g->opened && g->pend_len >= g->cfg.flush_bytes) {
        g->in_api++;
        pump(g);
        g->in_api--;
    } else if (!g->timer_armed) {
        arm_timer(g, g->cfg.flush_ms);
    }
    if (g->pend_len >= g->cfg.max_pending) {
        g->backpressured = 1;
        return 1;
    }
    return 0;
}

void sg_seglog_sync(sg_seglog_t *g, void (*cb)(void *ud, int err, const char *msg), void *ud)
{
    waiter_t *w = sg_xcalloc(1, sizeof(*w));
    w->cb = cb;
    w->ud = ud;
    waiter_t **t = &g->waiters; /* in call order */
    while (*t)
        t = &(*t)->next;
    *t = w;
    g->in_api++;
    pump(g);
    g->in_api--;
}

void sg_seglog_close(sg_seglog_t *g, void (*cb)(void *ud), void *ud)
{
    g->closing = 1;
    g->close_cb = cb;
    g->close_ud = ud;
    g->in_api++;
    pump(g);
    g->in_api--;
}

void sg_seglog_set_max_bytes(sg_seglog_t *g, uint64_t max_bytes)
{
    g->cfg.max_bytes = SG_MAX(max_bytes, g->cfg.segment_bytes); /* as open requires */
    if (g->opened && !g->err && !g->finished) retention(g);
}

void sg_seglog_stats(const sg_seglog_t *g, sg_seglog_stats_t *out)
{
    *out = g->st;
    out->pending = g->pend_len;
    out->disk_bytes = g->sealed_bytes + g->cur.bytes;
    out->next_out = g->next_out;
}

/* ---- reader ----------------------------------------------------------------------------- */

typedef struct reader {
    uv_loop_t *loop;
    uv_fs_t req;
    char *dir;
    char *path;
    uint64_t *seqs;
    size_t n, i;
    uv_file fd;
    uint64_t from_seq, from_off; /* where to start: earlier segments skipped, offset in it */
    int64_t pos;                 /* next read's file offset */
    sg__segdec_t d;
    sg_seglog_event_cb on_event;
    sg_seglog_done_cb done;
    void *ud;
    uint64_t records;
    int torn, err;
    char msg[700];
} reader_t;

static void rd_next_file(reader_t *r);

static void rd_finish(reader_t *r)
{
    r->done(r->ud, r->err, r->err || r->torn ? r->msg : NULL, r->records, r->torn);
    sg__segdec_free(&r->d);
    free(r->seqs);
    free(r->path);
    free(r->dir);
    free(r);
}

static void rd_on_close(uv_fs_t *req)
{
    reader_t *r = SG_CONTAINER_OF(req, reader_t, req);
    fs_done++;
    uv_fs_req_cleanup(req);
    r->fd = -1;
    if (r->err || r->i + 1 >= r->n) {
        rd_finish(r);
        return;
    }
    r->i++;
    rd_next_file(r);
}

static void rd_close(reader_t *r)
{
    FS_CALL(uv_fs_close, r->loop, &r->req, r->fd, rd_on_close);
}

static void rd_fail(reader_t *r, int err, const char *what)
{
    r->err = err;
    snprintf(r->msg, sizeof r->msg, "%s %s: %s", what, r->path, uv_strerror(err));
}

static void rd_on_read(uv_fs_t *req);

static void rd_read(reader_t *r)
{
    uint8_t *p;
    size_t n;
    sg__segdec_space(&r->d, SG__SEG_CHUNK, &p, &n);
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    FS_CALL(uv_fs_read, r->loop, &r->req, r->fd, &b, 1, r->pos, rd_on_read);
}

static void rd_on_read(uv_fs_t *req)
{
    reader_t *r = SG_CONTAINER_OF(req, reader_t, req);
    fs_done++;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    int last = r->i + 1 == r->n;
    if (n < 0) {
        rd_fail(r, (int)n, "read");
        rd_close(r);
        return;
    }
    if (n == 0) { /* end of file: a partial record left is a tear */
        size_t left = sg__segdec_left(&r->d);
        if (left) {
            if (last) {
                r->torn = 1;
                snprintf(r->msg, sizeof r->msg,
                         "%s: torn tail at offset %" PRIu64 " (%zu bytes of a partial record)"
                         " ignored",
                         r->path, r->d.off, left);
            } else {
                r->err = SG_EPROTO;
                snprintf(r->msg, sizeof r->msg,
                         "%s: truncated record at offset %" PRIu64 " (%zu bytes) in a sealed"
                         " segment",
                         r->path, r->d.off, left);
            }
        }
        rd_close(r);
        return;
    }
    sg__segdec_commit(&r->d, (size_t)n);
    r->pos += n;
    for (;;) {
        sg_seglog_rec_t rec;
        const char *why = NULL;
        int k = sg__segdec_next(&r->d, &rec, &why);
        if (k == 0) break;
        if (k < 0) {
            if (last) {
                r->torn = 1;
                snprintf(r->msg, sizeof r->msg,
                         "%s: torn tail at offset %" PRIu64 " (%s); the rest of the file is"
                         " ignored",
                         r->path, r->d.off, why);
            } else {
                r->err = SG_EPROTO;
                snprintf(r->msg, sizeof r->msg,
                         "%s: corrupt record at offset %" PRIu64 " (%s) in a sealed segment",
                         r->path, r->d.off, why);
            }
            r->i = r->n; /* nothing after a tear or corruption is read */
            rd_close(r);
            return;
        }
        rec.seq = r->seqs[r->i];
        r->records++;
        int stop = r->on_event(r->ud, &rec);
        if (stop) {
            r->err = stop;
            snprintf(r->msg, sizeof r->msg, "the reader stopped at %s offset %" PRIu64, r->path,
                     rec.off);
            rd_close(r);
            return;
        }
    }
    rd_read(r);
}

static void rd_on_open(uv_fs_t *req)
{
    reader_t *r = SG_CONTAINER_OF(req, reader_t, req);
    fs_done++;
    int fd = (int)req->result;
    uv_fs_req_cleanup(req);
    if (fd == UV_ENOENT) { /* deleted by retention since the listing */
        if (r->i + 1 >= r->n) {
            rd_finish(r);
            return;
        }
        r->i++;
        rd_next_file(r);
        return;
    }
    if (fd < 0) {
        rd_fail(r, fd, "open");
        rd_finish(r);
        return;
    }
    r->fd = fd;
    sg__segdec_reset(&r->d);
    r->pos = 0;
    if (r->seqs[r->i] == r->from_seq && r->from_off) {
        r->pos = (int64_t)r->from_off;
        r->d.off = r->from_off;
    }
    rd_read(r);
}

static void rd_next_file(reader_t *r)
{
    char name[32];
    seg_name(name, sizeof name, r->seqs[r->i]);
    snprintf(r->path, strlen(r->dir) + 32, "%s/%s", r->dir, name);
    FS_CALL(uv_fs_open, r->loop, &r->req, r->path, O_RDONLY | O_CLOEXEC, 0, rd_on_open);
}

static void rd_on_scandir(uv_fs_t *req)
{
    reader_t *r = SG_CONTAINER_OF(req, reader_t, req);
    fs_done++;
    int n = (int)req->result;
    if (n < 0) {
        uv_fs_req_cleanup(req);
        r->err = n;
        snprintf(r->msg, sizeof r->msg, "scandir %s: %s", r->dir, uv_strerror(n));
        rd_finish(r);
        return;
    }
    uv_dirent_t e;
    size_t cap = 0;
    while (uv_fs_scandir_next(req, &e) != UV_EOF) {
        uint64_t q = seg_seq(e.name);
        if (!q || q < r->from_seq) continue;
        if (r->n == cap) {
            cap = cap ? cap * 2 : 16;
            r->seqs = sg_xrealloc(r->seqs, cap * sizeof(*r->seqs));
        }
        r->seqs[r->n++] = q;
    }
    uv_fs_req_cleanup(req);
    if (!r->n) {
        rd_finish(r);
        return;
    }
    qsort(r->seqs, r->n, sizeof(*r->seqs), cmp_u64);
    rd_next_file(r);
}

int sg_seglog_read(uv_loop_t *loop, const char *dir, sg_seglog_event_cb on_event,
                   sg_seglog_done_cb done, void *ud)
{
    return sg_seglog_read_from(loop, dir, 0, 0, on_event, done, ud);
}

int sg_seglog_read_from(uv_loop_t *loop, const char *dir, uint64_t seq, uint64_t off,
                        sg_seglog_event_cb on_event, sg_seglog_done_cb done, void *ud)
{
    if (!dir || !*dir || !on_event || !done || strlen(dir) > 4000) return SG_EINVAL;
    reader_t *r = sg_xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->dir = sg_xstrdup(dir);
    r->path = sg_xmalloc(strlen(dir) + 32);
    snprintf(r->path, strlen(dir) + 32, "%s", dir);
    r->fd = -1;
    r->from_seq = seq;
    r->from_off = off;
    sg__segdec_init(&r->d);
    r->on_event = on_event;
    r->done = done;
    r->ud = ud;
    FS_CALL(uv_fs_scandir, loop, &r->req, r->dir, 0, rd_on_scandir);
    return 0;
}

/* ---- remove ----------------------------------------------------------------------------- */

typedef struct remover {
    uv_work_t w;
    char *dir;
    int err;
    char msg[600];
    void (*cb)(void *ud, int err, const char *msg);
    void *ud;
} remover_t;

static _Thread_local remover_t *rm_cur; /* nftw's callback has no user pointer */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if ((flag == FTW_DP ? rmdir(path) : unlink(path)) != 0 && errno != ENOENT) {
        rm_cur->err = -errno;
        snprintf(rm_cur->msg, sizeof rm_cur->msg, "remove %s: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

static void rm_work(uv_work_t *w)
{
    remover_t *m = SG_CONTAINER_OF(w, remover_t, w);
    rm_cur = m;
    if (nftw(m->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && !m->err && errno != ENOENT) {
        m->err = -errno;
        snprintf(m->msg, sizeof m->msg, "remove %s: %s", m->dir, strerror(errno));
    }
    rm_cur = NULL;
}

static void rm_done(uv_work_t *w, int status)
{
    remover_t *m = SG_CONTAINER_OF(w, remover_t, w);
    fs_done++;
    (void)status;
    if (m->cb) m->cb(m->ud, m->err, m->err ? m->msg : NULL);
    free(m->dir);
    free(m);
}

int sg_seglog_remove(uv_loop_t *loop, const char *dir,
                     void (*cb)(void *ud, int err, const char *msg), void *ud)
{
    if (!dir || !*dir || !strcmp(dir, "/")) return SG_EINVAL;
    remover_t *m = sg_xcalloc(1, sizeof(*m));
    m->dir = sg_xstrdup(dir);
    m->cb = cb;
    m->ud = ud;
    FS_CALL(uv_queue_work, loop, &m->w, rm_work, rm_done);
    return 0;
}
