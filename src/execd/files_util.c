/* files_util.c: paths, query values, FileInfo, permissions and the threadpool fs job
 * (see files_int.h for the map). */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "files_int.h"
#include "sandgate/common.h"
#include "sandgate/json.h"
#include "sandgate/log.h"

const char *sg__files_errstr(int e)
{
    static __thread char buf[128];
    snprintf(buf, sizeof(buf), "%s", strerror(e < 0 ? -e : e));
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z')) buf[0] += 'a' - 'A';
    return buf;
}

/* ------------------------------------------------------------------ paths */

static int name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = sg_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sg__files_clean(char *p)
{
    int abs = p[0] == '/';
    size_t n = strlen(p), w = 0, i = 0;
    char *out = sg_xmalloc(n + 2);
    if (abs) out[w++] = '/';
    size_t floor_ = w; /* ".." may not climb above this in a relative path */
    while (i < n) {
        if (p[i] == '/') {
            i++;
            continue;
        }
        size_t s = i;
        while (i < n && p[i] != '/')
            i++;
        size_t len = i - s;
        if (len == 1 && p[s] == '.') continue;
        if (len == 2 && p[s] == '.' && p[s + 1] == '.') {
            if (w > floor_) { /* drop the last element */
                while (w > floor_ && out[w - 1] != '/')
                    w--;
                if (w > floor_)
                    w--;
                else if (abs)
                    w = 1;
                continue;
            }
            if (abs) continue; /* "/.." is "/" */
            if (w > 0) out[w++] = '/';
            out[w++] = '.';
            out[w++] = '.';
            floor_ = w;
            continue;
        }
        if (w > 0 && out[w - 1] != '/') out[w++] = '/';
        memcpy(out + w, p + s, len);
        w += len;
    }
    if (w == 0) out[w++] = '.';
    out[w] = 0;
    memcpy(p, out, w + 1);
    free(out);
}

char *sg__files_expand(const char *in, int absolute, char *msg, size_t msg_len)
{
    sbuf_t b = {NULL, 0, 0};
    sb_add(&b, "", 0);
    const char *s = in;
    if (s[0] == '~' && (s[1] == 0 || s[1] == '/')) {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd pw, *res = NULL;
            char tmp[1024];
            if (getpwuid_r(getuid(), &pw, tmp, sizeof(tmp), &res) == 0 && res) home = res->pw_dir;
        }
        if (!home) {
            snprintf(msg, msg_len, "cannot expand '~' in %s: no home directory", in);
            free(b.p);
            return NULL;
        }
        sb_add(&b, home, strlen(home));
        s++;
    }
    while (*s) {
        if (*s != '$') {
            const char *d = strchr(s, '$');
            size_t n = d ? (size_t)(d - s) : strlen(s);
            sb_add(&b, s, n);
            s += n;
            continue;
        }
        const char *nm;
        size_t nl;
        const char *next;
        if (s[1] == '{') {
            const char *e = strchr(s + 2, '}');
            if (!e || e == s + 2) {
                snprintf(msg, msg_len, "bad variable reference in path %s", in);
                free(b.p);
                return NULL;
            }
            nm = s + 2;
            nl = (size_t)(e - nm);
            next = e + 1;
        } else if (name_char(s[1])) {
            nm = s + 1;
            nl = 0;
            while (name_char(nm[nl]))
                nl++;
            next = nm + nl;
        } else { /* a lone '$' stays as it is */
            sb_add(&b, s, 1);
            s++;
            continue;
        }
        char *name = sg_xstrndup(nm, nl);
        const char *v = getenv(name);
        if (!v) {
            snprintf(msg, msg_len, "environment variable %s is not set (path %s)", name, in);
            free(name);
            free(b.p);
            return NULL;
        }
        free(name);
        sb_add(&b, v, strlen(v));
        s = next;
    }
    if (b.n == 0) {
        snprintf(msg, msg_len, "path is empty");
        free(b.p);
        return NULL;
    }
    if (!absolute) return b.p;
    if (b.p[0] != '/') {
        char cwd[4096];
        if (!getcwd(cwd, sizeof(cwd))) {
            snprintf(msg, msg_len, "getcwd: %s", sg__files_errstr(errno));
            free(b.p);
            return NULL;
        }
        sbuf_t a = {NULL, 0, 0};
        sb_add(&a, cwd, strlen(cwd));
        sb_add(&a, "/", 1);
        sb_add(&a, b.p, b.n);
        free(b.p);
        b = a;
    }
    sg__files_clean(b.p);
    return b.p;
}

/* ------------------------------------------------------------------ query strings */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *sg__files_qdecode(const char *src, size_t n)
{
    char *out = sg_xmalloc(n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (src[i] == '%' && i + 2 < n && (h = hexval(src[i + 1])) >= 0 &&
            (l = hexval(src[i + 2])) >= 0) {
            out[w++] = (char)(h * 16 + l);
            i += 2;
        } else if (src[i] == '+') {
            out[w++] = ' ';
        } else {
            out[w++] = src[i];
        }
    }
    out[w] = 0;
    return out;
}

char **sg__files_qvalues(const char *query, const char *name, size_t *count)
{
    char **v = NULL;
    size_t n = 0, nl = strlen(name);
    const char *s = query ? query : "";
    while (*s) {
        const char *e = strchr(s, '&');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        size_t kl = eq ? (size_t)(eq - s) : len;
        char *key = sg__files_qdecode(s, kl);
        if (strlen(key) == nl && memcmp(key, name, nl) == 0) {
            v = sg_xrealloc(v, (n + 1) * sizeof(*v));
            v[n++] = eq ? sg__files_qdecode(eq + 1, len - kl - 1) : sg_xstrdup("");
        }
        free(key);
        s += len;
        if (*s == '&') s++;
    }
    *count = n;
    return v;
}

char *sg__files_qvalue(const char *query, const char *name)
{
    size_t n = 0;
    char **v = sg__files_qvalues(query, name, &n);
    char *r = n ? v[0] : NULL;
    for (size_t i = 1; i < n; i++)
        free(v[i]);
    free(v);
    return r;
}

void sg__files_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ------------------------------------------------------------------ FileInfo */

void sg__files_rfc3339nano(char *out, size_t len, time_t sec, long nsec)
{
    struct tm tm;
    gmtime_r(&sec, &tm);
    char frac[32] = "";
    if (nsec > 0) {
        snprintf(frac, sizeof(frac), ".%09ld", nsec);
        size_t l = strlen(frac);
        while (l > 1 && frac[l - 1] == '0')
            frac[--l] = 0;
    }
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

static void id_name(char *out, size_t len, int user, unsigned id)
{
    char tmp[4096];
    if (user) {
        struct passwd pw, *res = NULL;
        if (getpwuid_r(id, &pw, tmp, sizeof(tmp), &res) == 0 && res) {
            snprintf(out, len, "%s", res->pw_name);
            return;
        }
    } else {
        struct group gr, *res = NULL;
        if (getgrgid_r(id, &gr, tmp, sizeof(tmp), &res) == 0 && res) {
            snprintf(out, len, "%s", res->gr_name);
            return;
        }
    }
    snprintf(out, len, "%u", id);
}

json_t *sg__files_info_json(const char *abs_path, const struct stat *st)
{
    const char *type = S_ISREG(st->st_mode)   ? "file"
                       : S_ISDIR(st->st_mode) ? "directory"
                       : S_ISLNK(st->st_mode) ? "symlink"
                                              : "other";
    char mt[64], ct[64], owner[256], group[256], modes[16];
    sg__files_rfc3339nano(mt, sizeof(mt), st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    sg__files_rfc3339nano(ct, sizeof(ct), st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
    id_name(owner, sizeof(owner), 1, st->st_uid);
    id_name(group, sizeof(group), 0, st->st_gid);
    snprintf(modes, sizeof(modes), "%o", (unsigned)(st->st_mode & 0777));
    json_t *o = json_object();
    json_object_set_new(o, "path", sg_json_string_lossy(abs_path, strlen(abs_path)));
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "size", json_integer((json_int_t)st->st_size));
    json_object_set_new(o, "modified_at", json_string(mt));
    json_object_set_new(o, "created_at", json_string(ct));
    json_object_set_new(o, "owner", sg_json_string_lossy(owner, strlen(owner)));
    json_object_set_new(o, "group", sg_json_string_lossy(group, strlen(group)));
    json_object_set_new(o, "mode", json_integer(atoi(modes)));
    return o;
}

int sg__files_mode_from_digits(int64_t digits)
{
    if (digits < 0 || digits > 77777) return -1;
    int mode = 0;
    char s[16];
    snprintf(s, sizeof(s), "%lld", (long long)digits);
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '7') return -1;
        mode = mode * 8 + (*c - '0');
    }
    return mode;
}

int sg__files_apply_perms(const char *path, int64_t mode_digits, const char *owner,
                          const char *group, char *msg, size_t msg_len)
{
    if (mode_digits != 0) {
        int mode = sg__files_mode_from_digits(mode_digits);
        if (mode < 0) {
            snprintf(msg, msg_len, "invalid mode %lld for %s: not octal digits",
                     (long long)mode_digits, path);
            return -EINVAL;
        }
        /* Go turns the number into an os.FileMode, whose chmod keeps only the 0777 bits. */
        if (chmod(path, (mode_t)mode & 0777) < 0) {
            int e = errno;
            snprintf(msg, msg_len, "chmod %s: %s", path, sg__files_errstr(e));
            return -e;
        }
    }
    uid_t uid = getuid();
    gid_t gid = getgid();
    char tmp[4096];
    if (owner && *owner) {
        struct passwd pw, *res = NULL;
        if (getpwnam_r(owner, &pw, tmp, sizeof(tmp), &res) == 0 && res)
            uid = res->pw_uid;
        else
            sg_log(SG_LOG_WARN, "files: unknown owner '%s' for %s, ignored", owner, path);
    }
    if (group && *group) {
        struct group gr, *res = NULL;
        if (getgrnam_r(group, &gr, tmp, sizeof(tmp), &res) == 0 && res)
            gid = res->gr_gid;
        else
            sg_log(SG_LOG_WARN, "files: unknown group '%s' for %s, ignored", group, path);
    }
    if (lchown(path, uid, gid) < 0) {
        int e = errno;
        snprintf(msg, msg_len, "chown %s: %s", path, sg__files_errstr(e));
        return -e;
    }
    return 0;
}

int sg__files_mkdir_p(const char *path, mode_t mode)
{
    char *p = sg_xstrdup(path);
    size_t n = strlen(p);
    int r = 0;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && p[i] != '/') continue;
        char c = p[i];
        p[i] = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            r = -errno;
            p[i] = c;
            break;
        }
        p[i] = c;
    }
    if (r == 0) {
        struct stat st;
        if (stat(path, &st) < 0)
            r = -errno;
        else if (!S_ISDIR(st.st_mode))
            r = -ENOTDIR;
    }
    free(p);
    return r;
}

/* ------------------------------------------------------------------ fs jobs */

void sg__fjob_error(sg__fjob_t *j, int status, const char *code, const char *fmt, ...)
{
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof(m), fmt, ap);
    va_end(ap);
    free(j->resp);
    j->status = status;
    j->resp = sg_json_error_body(code, m);
    j->resp_len = strlen(j->resp);
}

void sg__fjob_json(sg__fjob_t *j, int status, json_t *json)
{
    free(j->resp);
    j->status = status;
    j->resp = sg_json_dumps(json, &j->resp_len);
    json_decref(json);
}

int sg__files_ok(sg_http_req_t *req)
{
    return sg_http_respond(req, 200, NULL, "", 0);
}

sg__fjob_t *sg__fjob_new(sg_execd_t *x, sg_http_req_t *req, sg__fjob_fn fn)
{
    sg__fjob_t *j = sg_xcalloc(1, sizeof(*j));
    j->x = x;
    j->req = req;
    j->fn = fn;
    j->status = 200;
    j->work.data = j;
    j->max_walk = x->files ? x->files->max_walk : SG__FILES_DEFAULT_MAX_WALK;
    return j;
}

static void fjob_work(uv_work_t *w)
{
    sg__fjob_t *j = w->data;
    j->fn(j);
}

static void fjob_after(uv_work_t *w, int status)
{
    sg__fjob_t *j = w->data;
    (void)status;
    if (!j->resp) {
        sg__files_ok(j->req);
    } else {
        sg_hdrs_t h;
        sg_hdrs_init(&h);
        sg_hdrs_addz(&h, "Content-Type", "application/json");
        sg_http_respond(j->req, j->status, &h, j->resp, j->resp_len);
        sg_hdrs_free(&h);
    }
    if (j->x->files) j->x->files->inflight--;
    json_decref(j->body);
    sg__files_strv_free(j->paths, j->npaths);
    free(j->arg);
    free(j->resp);
    free(j);
}

void sg__fjob_submit(sg__fjob_t *j)
{
    if (j->x->files) j->x->files->inflight++;
    int r = uv_queue_work(j->x->loop, &j->work, fjob_work, fjob_after);
    if (r < 0) { /* cannot happen with a valid loop; answer rather than leak */
        sg__fjob_error(j, 500, "RUNTIME_ERROR", "cannot queue work: %s", uv_strerror(r));
        fjob_after(&j->work, r);
    }
}
