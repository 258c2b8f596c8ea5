/* files_download.c: GET /files/download (opensandbox-protocol.md 2.11.8), streamed from disk.
 *
 * open + fstat run on the threadpool; the body is read with uv_fs_read into a fresh sg_buf_t
 * (128 KiB) and handed to sg_http_resp_write by reference: one read in flight, no read while
 * the response says 1 (past its high-water mark) until the drain callback. Memory per
 * download: one chunk plus what the connection queues (bounded by its high-water mark).
 *
 * Byte mode: 200 with Content-Length, Content-Type: application/octet-stream,
 * Content-Disposition: attachment; filename="<base>" (non-ASCII or quote-needing names:
 * filename="<pct>"; filename*=UTF-8''<pct>), Accept-Ranges: bytes, Last-Modified.
 * Range: one "bytes=a-b" / "a-" / "-n"; a list is accepted and only its first range served
 * (the Go agent's behaviour) -> 206 + Content-Range. Bad syntax -> 416 {"code":"UNKNOWN"};
 * a first range starting at or past the end (or "-0") -> 416 text/plain "invalid range: failed
 * to overlap" with Content-Range: bytes * /size, as Go's ServeContent answers. Conditional
 * requests (If-Modified-Since, If-Range...) are not evaluated: the full answer is sent.
 *
 * Line mode (offset / limit query, newer execd): 200 text/plain; charset=utf-8, chunked, the
 * selected lines (1-based offset, default 1; limit >= 1, absent = to the end) joined by "\n",
 * line endings ("\n", "\r\n") stripped, no trailing newline. Streamed from the start of the
 * file with O(chunk) memory; reading stops after the last selected line. Invalid values, or a
 * Range header with them -> 400 INVALID_REQUEST_BODY.
 *
 * A file that shrinks while it is sent makes the response end short: the connection is cut,
 * so the client sees a truncated body rather than wrong data. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "files_int.h"
#include "sandgate/common.h"
#include "sandgate/log.h"

#define CHUNK (128u * 1024)

typedef struct dl {
    sg_execd_t *x;
    sg_http_req_t *req;
    uv_fs_t fsreq;
    uv_work_t work;
    char *path;  /* absolute */
    char *given; /* as the client sent it */
    char *range; /* Range header copy, or NULL */
    int fd, open_err;
    struct stat st;
    uint64_t pos, remaining;
    sg_buf_t *b; /* chunk being read */
    int busy, want_drain, aborted, finished;
    /* line mode */
    int lines;
    int64_t offset, limit, line;
    int sep_pending, cr_pending;
} dl_t;

static void read_next(dl_t *d);

static void dl_free(dl_t *d)
{
    if (d->x->files) d->x->files->inflight--;
    sg_buf_unref(d->b);
    free(d->path);
    free(d->given);
    free(d->range);
    free(d);
}

static void on_closed(uv_fs_t *fs)
{
    dl_t *d = fs->data;
    uv_fs_req_cleanup(fs);
    dl_free(d);
}

/* Ends (or cuts, when !ok) the response, closes the file, frees. */
static void finish(dl_t *d, int ok)
{
    if (!d->finished) {
        d->finished = 1;
        sg_http_req_set_data(d->req, NULL); /* before the answer drops our reference */
        if (ok && !d->aborted)
            sg_http_resp_end(d->req);
        else
            sg_http_req_release(d->req);
    }
    if (d->fd >= 0) {
        d->fsreq.data = d;
        int fd = d->fd;
        d->fd = -1;
        if (uv_fs_close(d->x->loop, &d->fsreq, fd, on_closed) == 0) return;
    }
    dl_free(d);
}

/* ------------------------------------------------------------------ headers */

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static void disposition(sg_hdrs_t *h, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    int plain = 1;
    for (const unsigned char *c = (const unsigned char *)base; *c; c++)
        if (*c < 0x20 || *c >= 0x7f || *c == '"' || *c == '\\' || *c == '%') plain = 0;
    size_t n = strlen(base);
    char *v = sg_xmalloc(n * 6 + 64);
    if (plain) {
        sprintf(v, "attachment; filename=\"%s\"", base);
    } else {
        char *pct = sg_xmalloc(n * 3 + 1), *w = pct;
        for (const unsigned char *c = (const unsigned char *)base; *c; c++) {
            if (unreserved(*c))
                *w++ = (char)*c;
            else
                w += sprintf(w, "%%%02X", *c);
        }
        *w = 0;
        sprintf(v, "attachment; filename=\"%s\"; filename*=UTF-8''%s", pct, pct);
        free(pct);
    }
    sg_hdrs_addz(h, "Content-Disposition", v);
    free(v);
}

static void http_date(char *out, size_t len, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

int sg__files_parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *end)
{
    if (strncmp(h, "bytes=", 6) != 0) return -1;
    const char *s = h + 6;
    while (*s == ' ' || *s == '\t')
        s++;
    const char *e = strchr(s, ',');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    char spec[64];
    if (n == 0 || n >= sizeof(spec)) return -1;
    memcpy(spec, s, n);
    spec[n] = 0;
    char *dash = strchr(spec, '-');
    if (!dash) return -1;
    *dash = 0;
    const char *a = spec, *b = dash + 1;
    for (const char *c = a; *c; c++)
        if (*c < '0' || *c > '9') return -1;
    for (const char *c = b; *c; c++)
        if (*c < '0' || *c > '9') return -1;
    if (strlen(a) > 19 || strlen(b) > 19) return -1;
    if (!*a) { /* suffix */
        if (!*b) return -1;
        uint64_t k = strtoull(b, NULL, 10);
        if (k == 0 || size == 0) return -2;
        if (k > size) k = size;
        *start = size - k;
        *end = size - 1;
        return 0;
    }
    uint64_t x = strtoull(a, NULL, 10);
    uint64_t y = *b ? strtoull(b, NULL, 10) : UINT64_MAX;
    if (*b && y < x) return -1;
    if (x >= size) return -2;
    if (y >= size) y = size - 1;
    *start = x;
    *end = y;
    return 0;
}

/* ------------------------------------------------------------------ open */

static void open_work(uv_work_t *w)
{
    dl_t *d = w->data;
    d->fd = open(d->path, O_RDONLY | O_CLOEXEC);
    if (d->fd < 0) {
        d->open_err = -errno;
        return;
    }
    if (fstat(d->fd, &d->st) < 0) {
        d->open_err = -errno;
        close(d->fd);
        d->fd = -1;
    }
}

static void on_drain(sg_http_req_t *req)
{
    dl_t *d = sg_http_req_data(req);
    if (!d || !d->want_drain || d->finished) return;
    d->want_drain = 0;
    read_next(d);
}

static void on_abort(sg_http_req_t *req)
{
    dl_t *d = sg_http_req_data(req);
    if (!d || d->finished) return;
    d->aborted = 1;
    if (!d->busy) finish(d, 0);
}

static void respond_error(dl_t *d, int status, const char *code, const char *msg)
{
    d->finished = 1;
    sg_http_req_set_data(d->req, NULL); /* before the answer drops our reference */
    sg_http_respond_error(d->req, status, code, msg);
    finish(d, 0);
}

static void after_open(uv_work_t *w, int status)
{
    dl_t *d = w->data;
    char m[1024];
    (void)status;
    d->busy = 0;
    if (d->aborted) {
        finish(d, 0);
        return;
    }
    if (d->open_err) {
        int e = d->open_err;
        if (e == -ENOENT || e == -ENOTDIR) {
            snprintf(m, sizeof(m), "file not found: %s", d->given);
            respond_error(d, 404, "FILE_NOT_FOUND", m);
        } else {
            snprintf(m, sizeof(m), "error opening %s: %s", d->given, sg__files_errstr(-e));
            respond_error(d, 500, "RUNTIME_ERROR", m);
        }
        return;
    }
    if (!S_ISREG(d->st.st_mode)) {
        snprintf(m, sizeof(m), "not a regular file: %s", d->given);
        respond_error(d, 400, "INVALID_REQUEST_BODY", m);
        return;
    }
    uint64_t size = (uint64_t)d->st.st_size;
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    int st = 200;
    if (d->lines) {
        sg_hdrs_addz(&h, "Content-Type", "text/plain; charset=utf-8");
        d->pos = 0;
        d->remaining = size;
        d->line = 1;
    } else {
        uint64_t a = 0, b = size ? size - 1 : 0;
        char v[128];
        if (d->range) {
            int r = sg__files_parse_range(d->range, size, &a, &b);
            if (r == -1) {
                sg_hdrs_free(&h);
                d->finished = 1;
                sg_http_req_set_data(d->req, NULL); /* before the answer drops our reference */
                sg_hdrs_init(&h);
                sg_hdrs_addz(&h, "Content-Type", "application/json");
                static const char body[] = "{\"code\":\"UNKNOWN\"}";
                sg_http_respond(d->req, 416, &h, body, sizeof(body) - 1);
                sg_hdrs_free(&h);
                finish(d, 0);
                return;
            }
            if (r == -2) {
                d->finished = 1;
                sg_http_req_set_data(d->req, NULL); /* before the answer drops our reference */
                snprintf(v, sizeof(v), "bytes */%llu", (unsigned long long)size);
                sg_hdrs_addz(&h, "Content-Range", v);
                sg_hdrs_addz(&h, "Content-Type", "text/plain; charset=utf-8");
                static const char body[] = "invalid range: failed to overlap\n";
                sg_http_respond(d->req, 416, &h, body, sizeof(body) - 1);
                sg_hdrs_free(&h);
                finish(d, 0);
                return;
            }
            st = 206;
            snprintf(v, sizeof(v), "bytes %llu-%llu/%llu", (unsigned long long)a,
                     (unsigned long long)b, (unsigned long long)size);
            sg_hdrs_addz(&h, "Content-Range", v);
        }
        d->pos = a;
        d->remaining = size ? b - a + 1 : 0;
        sg_hdrs_addz(&h, "Content-Type", "application/octet-stream");
        disposition(&h, d->path);
        sg_hdrs_addz(&h, "Accept-Ranges", "bytes");
        http_date(v, sizeof(v), d->st.st_mtim.tv_sec);
        sg_hdrs_addz(&h, "Last-Modified", v);
        snprintf(v, sizeof(v), "%llu", (unsigned long long)d->remaining);
        sg_hdrs_addz(&h, "Content-Length", v);
    }
    int r = sg_http_resp_start(d->req, st, &h);
    sg_hdrs_free(&h);
    if (r < 0) {
        finish(d, 0);
        return;
    }
    read_next(d);
}

/* ------------------------------------------------------------------ body */

static int selected(const dl_t *d, int64_t line)
{
    return line >= d->offset && (d->limit <= 0 || line < d->offset + d->limit);
}

/* Line mode: turns raw bytes into the selected lines; returns the output length; sets *stop
 * once the last selected line ended. */
static size_t filter_lines(dl_t *d, const char *in, size_t n, char *out, int *stop)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        int sel = selected(d, d->line);
        if (c == '\n') {
            d->cr_pending = 0; /* "\r\n": the \r belonged to the line ending */
            if (sel) {
                if (d->sep_pending) out[w++] = '\n';
                d->sep_pending = 0;
            }
            d->line++;
            if (d->limit > 0 && d->line >= d->offset + d->limit) {
                *stop = 1;
                return w;
            }
            if (selected(d, d->line) && d->line > d->offset) d->sep_pending = 1;
            continue;
        }
        if (!sel) continue;
        if (d->sep_pending) {
            out[w++] = '\n';
            d->sep_pending = 0;
        }
        if (d->cr_pending) {
            out[w++] = '\r';
            d->cr_pending = 0;
        }
        if (c == '\r')
            d->cr_pending = 1;
        else
            out[w++] = c;
    }
    return w;
}

static void on_read(uv_fs_t *fs)
{
    dl_t *d = fs->data;
    ssize_t n = fs->result;
    uv_fs_req_cleanup(fs);
    d->busy = 0;
    sg_buf_t *b = d->b;
    d->b = NULL;
    if (d->aborted || n <= 0) { /* gone, read error, or the file shrank */
        if (n < 0 && !d->aborted)
            sg_log(SG_LOG_WARN, "download %s: read: %s", d->path, uv_strerror((int)n));
        sg_buf_unref(b);
        finish(d, d->lines && n == 0 && !d->aborted);
        return;
    }
    d->pos += (uint64_t)n;
    d->remaining -= (uint64_t)n;
    int r = 0, stop = 0;
    if (d->lines) {
        sg_buf_t *o = sg_buf_new((size_t)n + 2);
        o->len = filter_lines(d, b->data, (size_t)n, o->data, &stop);
        if (o->len) r = sg_http_resp_write(d->req, o, 0, o->len);
        sg_buf_unref(o);
    } else {
        b->len = (size_t)n;
        r = sg_http_resp_write(d->req, b, 0, (size_t)n);
    }
    sg_buf_unref(b);
    if (r < 0) {
        finish(d, 0);
        return;
    }
    if (stop) d->remaining = 0;
    if (r == 1) {
        d->want_drain = 1; /* read_next from the drain callback */
        return;
    }
    read_next(d);
}

static void read_next(dl_t *d)
{
    if (d->remaining == 0) {
        finish(d, 1);
        return;
    }
    size_t n = (size_t)SG_MIN(d->remaining, (uint64_t)CHUNK);
    d->b = sg_buf_new(n);
    uv_buf_t ub = uv_buf_init(d->b->data, (unsigned)n);
    d->fsreq.data = d;
    d->busy = 1;
    int r = uv_fs_read(d->x->loop, &d->fsreq, d->fd, &ub, 1, (int64_t)d->pos, on_read);
    if (r < 0) {
        d->busy = 0;
        finish(d, 0);
    }
}

/* ------------------------------------------------------------------ entry */

static int parse_pos_int(const char *s, int64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno || v < 1) return -1;
    *out = v;
    return 0;
}

void sg__files_download(sg_execd_t *x, sg_http_req_t *req)
{
    const char *q = sg_http_req_query(req);
    char *path = sg__files_qvalue(q, "path");
    if (!path || !*path) {
        free(path);
        sg_http_respond_error(req, 400, "MISSING_QUERY", "missing query parameter 'path'");
        return;
    }
    char *off = sg__files_qvalue(q, "offset"), *lim = sg__files_qvalue(q, "limit");
    const char *range = sg_http_req_header(req, "Range");
    char msg[512];
    int lines = off || lim;
    int64_t offset = 1, limit = 0;
    int bad = 0;
    if (off && parse_pos_int(off, &offset) < 0) {
        snprintf(msg, sizeof(msg), "invalid offset '%.100s': a line number >= 1 is required", off);
        bad = 1;
    } else if (lim && parse_pos_int(lim, &limit) < 0) {
        snprintf(msg, sizeof(msg), "invalid limit '%.100s': a line count >= 1 is required", lim);
        bad = 1;
    } else if (lines && range) {
        snprintf(msg, sizeof(msg), "offset/limit cannot be combined with a Range header");
        bad = 1;
    }
    free(off);
    free(lim);
    char *abs = bad ? NULL : sg__files_expand(path, 1, msg, sizeof(msg));
    if (!abs) {
        char m2[600];
        snprintf(m2, sizeof(m2), "%s%s", bad ? "" : "invalid path: ", msg);
        free(path);
        sg_http_respond_error(req, 400, "INVALID_REQUEST_BODY", m2);
        return;
    }
    dl_t *d = sg_xcalloc(1, sizeof(*d));
    d->x = x;
    d->req = req;
    d->path = abs;
    d->given = path;
    d->range = range ? sg_xstrdup(range) : NULL;
    d->fd = -1;
    d->lines = lines;
    d->offset = offset;
    d->limit = limit;
    if (x->files) x->files->inflight++;
    sg_http_req_set_data(req, d);
    sg_http_req_on_abort(req, on_abort);
    sg_http_req_on_drain(req, on_drain);
    d->work.data = d;
    d->busy = 1;
    if (uv_queue_work(x->loop, &d->work, open_work, after_open) < 0) {
        d->busy = 0;
        respond_error(d, 500, "RUNTIME_ERROR", "cannot queue work");
    }
}
