/* files_upload.c: POST /files/upload (opensandbox-protocol.md 2.11.7), streamed to disk.
 *
 * Data path: each request body piece is copied once into the upload's input buffer (the
 * server's pointer is only valid during the body callback) and fed to the multipart parser
 * (multipart.h). File content spans go straight to uv_fs_write from that buffer (or from the
 * parser's held-back storage), one write in flight per upload; while a write or a threadpool
 * step is pending the parser is paused and so is the request body (sg_http_req_pause_body),
 * so TCP flow control holds the client back. Memory per upload: one body piece + bounded
 * metadata (64 KiB) + the pair table, whatever the file size.
 *
 * Pairing: metadata[i] goes with file[i] in order of appearance within each field name; both
 * parts are accepted with or without filename= (Go requires it on metadata; we are lenient).
 * A file part must come after its metadata part (the JS SDK always sends metadata first):
 * a file part whose metadata has not arrived yet is refused at once with
 * 400 INVALID_FILE_METADATA, because we stream to a temp file beside the target and do not
 * know the target yet. We chose refusing over spooling elsewhere: spooling needs a second copy
 * (across filesystems) for a client order no known SDK produces.
 *
 * Atomicity as in Go (which parses the whole form before writing any file): every file is
 * written to ".<name>.sgupload.XXXXXX" in its target directory (created with mkdir -p 0777),
 * fsynced and closed at its part end; only once the body ended well and the counts match are
 * the temps given their mode (an existing target's mode, else 0777 &~ umask, then the metadata
 * mode if not 0), chowned as 2.11.3 says, and renamed over the targets (parent directory
 * fsynced). On any error or abort the temps are unlinked. Other field names are ignored.
 *
 * Errors: 400 INVALID_FILE (not multipart, malformed, "multipart form is empty", "metadata and
 * file count mismatch: a vs b"), 400 INVALID_FILE_METADATA (missing, bad JSON, "metadata path
 * is empty", file before metadata), 400 INVALID_FILE_CONTENT "file is missing", 500
 * RUNTIME_ERROR (filesystem). An error answer stops reading the body (the server closes the
 * connection after it). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files_int.h"
#include "sandgate/common.h"
#include "sandgate/json.h"
#include "sandgate/log.h"
#include "sandgate/multipart.h"

#define META_MAX (64u * 1024)

typedef struct upair {
    char *target; /* expanded metadata.path */
    char *tmp;    /* temp file beside it, NULL until opened / after rename */
    char *owner, *group;
    int64_t mode;
} upair_t;

enum { PART_SKIP, PART_META, PART_FILE };
enum { JOB_OPEN, JOB_CLOSE, JOB_FINAL, JOB_CLEANUP };

typedef struct upload {
    sg_execd_t *x;
    sg_http_req_t *req;
    sg_mp_t *mp;
    upair_t *pairs;
    size_t cap, nmeta, nfile, cur_file;
    int part;
    char *meta;
    size_t meta_len;
    /* input piece */
    char *in;
    size_t in_len, in_off, in_cap;
    /* async state: at most one of write / job in flight */
    uv_fs_t fsreq;
    uv_work_t work;
    int busy;
    int job;
    int fd;
    uint64_t file_off;
    const char *wp;    /* rest of the write in flight */
    size_t wn;
    int body_paused, body_ended, finishing, responded, aborted, cleaning;
    /* result of a job or failure to answer */
    int err_status;
    const char *err_code;
    char err_msg[768];
    /* written by a threadpool step, read in its after-callback */
    int job_err;
    char job_msg[512];
} upload_t;

static void pump(upload_t *u);

static void set_err(upload_t *u, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(upload_t *u, int status, const char *code, const char *fmt, ...)
{
    if (u->err_status) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->err_msg, sizeof(u->err_msg), fmt, ap);
    va_end(ap);
    u->err_status = status;
    u->err_code = code;
}

static void upload_free(upload_t *u)
{
    if (!u->responded) {
        sg_http_req_set_data(u->req, NULL);
        sg_http_req_release(u->req);
    }
    for (size_t i = 0; i < u->cap; i++) {
        free(u->pairs[i].target);
        free(u->pairs[i].tmp);
        free(u->pairs[i].owner);
        free(u->pairs[i].group);
    }
    if (u->x->files) u->x->files->inflight--;
    free(u->pairs);
    free(u->meta);
    free(u->in);
    sg_mp_free(u->mp);
    free(u);
}

/* ------------------------------------------------------------------ threadpool steps */

static int tmp_for(upair_t *p, char *msg, size_t len, int *fd)
{
    char *d = sg_xstrdup(p->target);
    char *dir = dirname(d);
    int r = sg__files_mkdir_p(dir, 0777);
    if (r < 0) {
        snprintf(msg, len, "mkdir %s: %s", dir, sg__files_errstr(-r));
        free(d);
        return r;
    }
    const char *base = strrchr(p->target, '/');
    base = base ? base + 1 : p->target;
    p->tmp = sg_xmalloc(strlen(dir) + strlen(base) + 32);
    sprintf(p->tmp, "%s/.%s.sgupload.XXXXXX", dir, base);
    free(d);
    *fd = mkostemp(p->tmp, O_CLOEXEC);
    if (*fd < 0) {
        r = -errno;
        snprintf(msg, len, "create temp file for %s: %s", p->target, sg__files_errstr(-r));
        free(p->tmp);
        p->tmp = NULL;
        return r;
    }
    return 0;
}

static int finalize(upload_t *u, upair_t *p, char *msg, size_t len)
{
    struct stat st;
    mode_t mode = 0777 & ~(u->x->files ? u->x->files->umask : 022);
    if (stat(p->target, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            snprintf(msg, len, "open %s: is a directory", p->target);
            return -EISDIR;
        }
        mode = st.st_mode & 07777; /* an existing file keeps its mode */
    }
    if (chmod(p->tmp, mode) < 0) {
        snprintf(msg, len, "chmod %s: %s", p->tmp, sg__files_errstr(errno));
        return -errno;
    }
    int r = sg__files_apply_perms(p->tmp, p->mode, p->owner, p->group, msg, len);
    if (r < 0) {
        usleep(20000); /* Go retries once after 20 ms */
        r = sg__files_apply_perms(p->tmp, p->mode, p->owner, p->group, msg, len);
        if (r < 0) return r;
    }
    if (rename(p->tmp, p->target) < 0) {
        r = -errno;
        snprintf(msg, len, "rename %s: %s", p->target, sg__files_errstr(-r));
        return r;
    }
    free(p->tmp);
    p->tmp = NULL;
    char *d = sg_xstrdup(p->target);
    int dfd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(d);
    return 0;
}

static void job_work(uv_work_t *w)
{
    upload_t *u = w->data;
    char msg[512] = "";
    int r = 0;
    switch (u->job) {
    case JOB_OPEN: r = tmp_for(&u->pairs[u->cur_file], msg, sizeof(msg), &u->fd); break;
    case JOB_CLOSE:
        if (fsync(u->fd) < 0) {
            r = -errno;
            snprintf(msg, sizeof(msg), "fsync %s: %s", u->pairs[u->cur_file].target,
                     sg__files_errstr(errno));
        }
        close(u->fd);
        u->fd = -1;
        break;
    case JOB_FINAL:
        for (size_t i = 0; i < u->nfile && r == 0; i++)
            r = finalize(u, &u->pairs[i], msg, sizeof(msg));
        break;
    case JOB_CLEANUP:
        if (u->fd >= 0) close(u->fd);
        u->fd = -1;
        for (size_t i = 0; i < u->cap; i++)
            if (u->pairs[i].tmp) unlink(u->pairs[i].tmp);
        break;
    }
    /* Only job_* fields are written here; job_after (loop thread) takes them over. */
    u->job_err = r;
    if (r < 0) snprintf(u->job_msg, sizeof(u->job_msg), "%s", msg);
}

static void respond_err(upload_t *u)
{
    if (u->responded) return;
    u->responded = 1;
    sg_http_req_set_data(u->req, NULL);
    sg_http_respond_error(u->req, u->err_status, u->err_code, u->err_msg);
}

static void start_job(upload_t *u, int job);

/* Failure or abort: answer (unless gone), remove the temps, free. */
static void fail(upload_t *u)
{
    if (!u->aborted) respond_err(u);
    if (u->busy || u->cleaning) return; /* the step in flight comes back here */
    u->cleaning = 1;
    start_job(u, JOB_CLEANUP);
}

static void job_after(uv_work_t *w, int status)
{
    upload_t *u = w->data;
    (void)status;
    u->busy = 0;
    if (u->job_err < 0) set_err(u, 500, "RUNTIME_ERROR", "%s", u->job_msg);
    if (u->job == JOB_CLEANUP) {
        upload_free(u);
        return;
    }
    if (u->aborted || u->err_status) {
        fail(u);
        return;
    }
    switch (u->job) {
    case JOB_OPEN: u->file_off = 0; break;
    case JOB_CLOSE: break;
    case JOB_FINAL:
        u->responded = 1;
        sg_http_req_set_data(u->req, NULL);
        sg__files_ok(u->req);
        u->cleaning = 1;
        start_job(u, JOB_CLEANUP); /* nothing left to unlink; frees on the loop */
        return;
    }
    pump(u);
}

static void start_job(upload_t *u, int job)
{
    u->job = job;
    u->busy = 1;
    u->work.data = u;
    int r = uv_queue_work(u->x->loop, &u->work, job_work, job_after);
    if (r < 0) { /* only with a broken loop: run inline rather than hang */
        job_work(&u->work);
        job_after(&u->work, r);
    }
}

/* ------------------------------------------------------------------ writes */

static void on_write(uv_fs_t *fs)
{
    upload_t *u = fs->data;
    ssize_t n = fs->result;
    uv_fs_req_cleanup(fs);
    u->busy = 0;
    if (n < 0 && !u->err_status)
        set_err(u, 500, "RUNTIME_ERROR", "write %s: %s", u->pairs[u->cur_file].target,
                uv_strerror((int)n));
    if (u->aborted || u->err_status) {
        fail(u);
        return;
    }
    u->file_off += (uint64_t)n;
    u->wp += n;
    u->wn -= (size_t)n;
    if (u->wn > 0) { /* short write: the rest, same buffer */
        uv_buf_t b = uv_buf_init((char *)u->wp, (unsigned)u->wn);
        u->busy = 1;
        uv_fs_write(u->x->loop, &u->fsreq, u->fd, &b, 1, (int64_t)u->file_off, on_write);
        return;
    }
    pump(u);
}

/* ------------------------------------------------------------------ multipart callbacks */

static int on_part_begin(sg_mp_t *mp, const sg_mp_part_t *part, void *data)
{
    upload_t *u = data;
    (void)mp;
    if (part->name && !strcmp(part->name, "metadata")) {
        u->part = PART_META;
        u->meta_len = 0;
        return 0;
    }
    if (!part->name || strcmp(part->name, "file") != 0) {
        u->part = PART_SKIP;
        return 0;
    }
    u->part = PART_FILE;
    size_t i = u->nfile++;
    if (i >= u->nmeta) {
        set_err(u, 400, "INVALID_FILE_METADATA",
                "metadata file is missing: file part #%zu came before its metadata part "
                "(send each metadata part before its file part)",
                i + 1);
        return SG_EPROTO;
    }
    u->cur_file = i;
    start_job(u, JOB_OPEN);
    return SG_MP_PAUSE;
}

static int on_part_data(sg_mp_t *mp, const char *p, size_t n, void *data)
{
    upload_t *u = data;
    (void)mp;
    if (u->part == PART_META) {
        if (u->meta_len + n > META_MAX) {
            set_err(u, 400, "INVALID_FILE_METADATA", "metadata part larger than %u bytes",
                    META_MAX);
            return SG_ETOOBIG;
        }
        if (!u->meta) u->meta = sg_xmalloc(META_MAX);
        memcpy(u->meta + u->meta_len, p, n);
        u->meta_len += n;
        return 0;
    }
    if (u->part != PART_FILE) return 0;
    u->wp = p;
    u->wn = n;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    u->fsreq.data = u;
    u->busy = 1;
    int r = uv_fs_write(u->x->loop, &u->fsreq, u->fd, &b, 1, (int64_t)u->file_off, on_write);
    if (r < 0) {
        u->busy = 0;
        set_err(u, 500, "RUNTIME_ERROR", "write: %s", uv_strerror(r));
        return r;
    }
    return SG_MP_PAUSE;
}

static int add_meta(upload_t *u)
{
    sg_json_err_t err;
    sg_json_err_init(&err);
    json_t *v = NULL;
    const char *path = NULL, *owner = NULL, *group = NULL;
    int64_t mode = 0;
    if (sg_json_parse(u->meta ? u->meta : "", u->meta_len, META_MAX, &v, &err) == 0) {
        if (!json_is_object(v)) sg_json_err_set(&err, SG_EINVAL, "metadata must be a JSON object");
        sg_json_get_string(v, "path", NULL, &path, &err);
        sg_json_get_string(v, "owner", NULL, &owner, &err);
        sg_json_get_string(v, "group", NULL, &group, &err);
        sg_json_get_int64(v, "mode", 0, &mode, &err);
    }
    if (err.code) {
        set_err(u, 400, "INVALID_FILE_METADATA", "invalid metadata: %s", err.message);
    } else if (!path || !*path) {
        set_err(u, 400, "INVALID_FILE_METADATA", "metadata path is empty");
    } else if (mode != 0 && sg__files_mode_from_digits(mode) < 0) {
        set_err(u, 400, "INVALID_FILE_METADATA", "invalid mode %lld (octal digits, e.g. 644)",
                (long long)mode);
    } else {
        char msg[512];
        char *target = sg__files_expand(path, 0, msg, sizeof(msg));
        if (!target) {
            set_err(u, 400, "INVALID_FILE_METADATA", "invalid metadata path: %s", msg);
        } else {
            if (u->nmeta == u->cap) {
                size_t nc = u->cap ? u->cap * 2 : 4;
                u->pairs = sg_xrealloc(u->pairs, nc * sizeof(*u->pairs));
                memset(u->pairs + u->cap, 0, (nc - u->cap) * sizeof(*u->pairs));
                u->cap = nc;
            }
            upair_t *p = &u->pairs[u->nmeta++];
            p->target = target;
            p->owner = owner ? sg_xstrdup(owner) : NULL;
            p->group = group ? sg_xstrdup(group) : NULL;
            p->mode = mode;
        }
    }
    json_decref(v);
    return u->err_status ? SG_EINVAL : 0;
}

static int on_part_end(sg_mp_t *mp, void *data)
{
    upload_t *u = data;
    (void)mp;
    int part = u->part;
    u->part = PART_SKIP;
    if (part == PART_META) return add_meta(u);
    if (part == PART_FILE) {
        start_job(u, JOB_CLOSE);
        return SG_MP_PAUSE;
    }
    return 0;
}

static const sg_mp_callbacks_t mp_cbs = {on_part_begin, on_part_data, on_part_end, NULL};

/* ------------------------------------------------------------------ driving */

/* The body ended and the parser delivered everything: check the form, then finalize. */
static void form_done(upload_t *u)
{
    if (sg_mp_part_count(u->mp) == 0)
        set_err(u, 400, "INVALID_FILE", "multipart form is empty");
    else if (u->nmeta == 0)
        set_err(u, 400, "INVALID_FILE_METADATA", "metadata file is missing");
    else if (u->nfile == 0)
        set_err(u, 400, "INVALID_FILE_CONTENT", "file is missing");
    else if (u->nmeta != u->nfile)
        set_err(u, 400, "INVALID_FILE", "metadata and file count mismatch: %zu vs %zu", u->nmeta,
                u->nfile);
    if (u->err_status) {
        fail(u);
        return;
    }
    start_job(u, JOB_FINAL);
}

static void mp_failed(upload_t *u, int r)
{
    if (!u->err_status)
        set_err(u, 400, "INVALID_FILE", "invalid multipart form: %s",
                *sg_mp_errmsg(u->mp) ? sg_mp_errmsg(u->mp) : sg_strerror(r));
    fail(u);
}

/* Feeds the rest of the current piece (or finishes the form once the body ended). Called
 * after every completed step; the parser resumes where it paused. */
static void pump(upload_t *u)
{
    if (u->finishing) {
        int r = sg_mp_finish(u->mp);
        if (r == SG_MP_PAUSED) return;
        if (r < 0)
            mp_failed(u, r);
        else
            form_done(u);
        return;
    }
    size_t used = 0;
    int r = sg_mp_feed(u->mp, u->in + u->in_off, u->in_len - u->in_off, &used);
    u->in_off += used;
    if (r == SG_MP_PAUSED) {
        if (!u->body_paused) {
            u->body_paused = 1;
            sg_http_req_pause_body(u->req);
        }
        return;
    }
    if (r < 0) {
        mp_failed(u, r);
        return;
    }
    u->in_off = u->in_len = 0;
    if (u->body_ended) {
        u->finishing = 1;
        pump(u);
    } else if (u->body_paused) {
        u->body_paused = 0;
        sg_http_req_resume_body(u->req);
    }
}

static void on_body(sg_http_req_t *req, const char *data, size_t len, void *ud)
{
    upload_t *u = ud;
    if (u->err_status || u->aborted) return; /* cannot happen: finished */
    if (len == 0) {
        /* The server delivers the end even while the body is paused (the socket is not read
         * for it); pump() picks it up once the piece in hand is used. */
        u->body_ended = 1;
        if (!u->busy && u->in_off == u->in_len) {
            u->finishing = 1;
            pump(u);
        }
        return;
    }
    if (u->busy || u->in_off < u->in_len) { /* data while paused: would be a server bug */
        set_err(u, 500, "RUNTIME_ERROR", "internal: body data while paused");
        if (!u->busy) fail(u);
        return;
    }
    if (len > u->in_cap) {
        free(u->in);
        u->in_cap = SG_MAX(len, 64 * 1024);
        u->in = sg_xmalloc(u->in_cap);
    }
    memcpy(u->in, data, len);
    u->in_len = len;
    u->in_off = 0;
    pump(u);
}

static void on_abort(sg_http_req_t *req)
{
    upload_t *u = sg_http_req_data(req);
    if (!u || u->aborted || u->responded) return;
    u->aborted = 1;
    fail(u);
}

void sg__files_upload(sg_execd_t *x, sg_http_req_t *req)
{
    const char *ct = sg_http_req_header(req, "Content-Type");
    char boundary[SG_MP_MAX_BOUNDARY + 1], msg[256];
    size_t blen = 0;
    if (!ct ||
        sg_mp_boundary(ct, strlen(ct), boundary, sizeof(boundary), &blen, msg, sizeof(msg)) < 0) {
        char m[400];
        snprintf(m, sizeof(m), "invalid multipart form: %s",
                 ct ? msg : "request Content-Type isn't multipart/form-data");
        sg_http_respond_error(req, 400, "INVALID_FILE", m);
        return;
    }
    upload_t *u = sg_xcalloc(1, sizeof(*u));
    u->x = x;
    u->req = req;
    u->fd = -1;
    if (sg_mp_new(&u->mp, boundary, blen, &mp_cbs, u, NULL) < 0) {
        free(u);
        sg_http_respond_error(req, 400, "INVALID_FILE", "invalid multipart boundary");
        return;
    }
    if (x->files) x->files->inflight++;
    sg_http_req_set_data(req, u);
    sg_http_req_on_abort(req, on_abort);
    int r = sg_http_req_read_body(req, on_body, u);
    if (r < 0) {
        u->aborted = 1;
        fail(u);
    }
}
