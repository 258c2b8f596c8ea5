/* files_ops.c: the blocking bodies of the JSON file endpoints (2.11.1-2.11.6, 2.12). Each runs
 * on the libuv threadpool inside an fs job (files_util.c) and leaves its answer in the job:
 * status + JSON text, or nothing for an empty 200. Messages follow the Go agent's wording
 * where the reference quotes it; errno texts are lower-cased as Go prints them. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files_int.h"
#include "glob.h"
#include "sandgate/common.h"
#include "sandgate/json.h"
#include "sandgate/log.h"

/* Go prints errno texts in lower case ("no such file or directory"). */
static const char *goerr(int e, char *buf, size_t len)
{
    snprintf(buf, len, "%s", strerror(e));
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z')) buf[0] += 'a' - 'A';
    return buf;
}

/* Expands p (absolute); on error answers 400 and returns NULL. */
static char *expand_or_fail(sg__fjob_t *j, const char *p, int absolute)
{
    char msg[512];
    char *r = sg__files_expand(p, absolute, msg, sizeof(msg));
    if (!r) sg__fjob_error(j, 400, "INVALID_REQUEST_BODY", "invalid path: %s", msg);
    return r;
}

/* ------------------------------------------------------------------ info / delete */

void sg__fop_info(sg__fjob_t *j)
{
    json_t *out = json_object();
    char eb[128];
    for (size_t i = 0; i < j->npaths; i++) {
        char *abs = expand_or_fail(j, j->paths[i], 1);
        if (!abs) goto fail;
        struct stat st;
        if (lstat(abs, &st) < 0) {
            int e = errno;
            if (e == ENOENT || e == ENOTDIR)
                sg__fjob_error(j, 404, "FILE_NOT_FOUND",
                               "file not found. file not found: %s: lstat %s: %s", j->paths[i], abs,
                               goerr(e, eb, sizeof(eb)));
            else
                sg__fjob_error(j, 500, "RUNTIME_ERROR", "error getting file info %s: lstat %s: %s",
                               j->paths[i], abs, goerr(e, eb, sizeof(eb)));
            free(abs);
            goto fail;
        }
        json_object_set_new(out, j->paths[i], sg__files_info_json(abs, &st));
        free(abs);
    }
    sg__fjob_json(j, 200, out);
    return;
fail:
    json_decref(out);
}

void sg__fop_delete(sg__fjob_t *j)
{
    char eb[128];
    for (size_t i = 0; i < j->npaths; i++) {
        char *abs = expand_or_fail(j, j->paths[i], 1);
        if (!abs) return;
        struct stat st;
        if (lstat(abs, &st) < 0) {
            int e = errno;
            free(abs);
            if (e == ENOENT || e == ENOTDIR) continue; /* missing files are fine */
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "error removing file %s. lstat %s: %s",
                           j->paths[i], j->paths[i], goerr(e, eb, sizeof(eb)));
            return;
        }
        if (S_ISDIR(st.st_mode)) {
            sg__fjob_error(j, 500, "RUNTIME_ERROR",
                           "error removing file %s. path is a directory: %s", j->paths[i],
                           j->paths[i]);
            free(abs);
            return;
        }
        if (unlink(abs) < 0 && errno != ENOENT) {
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "error removing file %s. remove %s: %s",
                           j->paths[i], abs, goerr(errno, eb, sizeof(eb)));
            free(abs);
            return;
        }
        free(abs);
    }
}

/* ------------------------------------------------------------------ permissions / mkdir */

/* {"owner"?,"group"?,"mode"?} -> fields; 0 or answers 400. */
static int perm_fields(sg__fjob_t *j, const char *key, json_t *v, const char **owner,
                       const char **group, int64_t *mode)
{
    sg_json_err_t err;
    sg_json_err_init(&err);
    if (!json_is_object(v)) {
        sg__fjob_error(j, 400, "INVALID_REQUEST_BODY", "value for %s must be an object", key);
        return -1;
    }
    sg_json_get_string(v, "owner", NULL, owner, &err);
    sg_json_get_string(v, "group", NULL, group, &err);
    sg_json_get_int64(v, "mode", 0, mode, &err);
    if (err.code) {
        sg__fjob_error(j, 400, "INVALID_REQUEST_BODY", "%s: %s", key, err.message);
        return -1;
    }
    if (*mode != 0 && sg__files_mode_from_digits(*mode) < 0) {
        sg__fjob_error(j, 400, "INVALID_REQUEST_BODY",
                       "%s: invalid mode %lld (octal digits expected, e.g. 755)", key,
                       (long long)*mode);
        return -1;
    }
    return 0;
}

static void perms_or_mkdir(sg__fjob_t *j, int mkdir_first)
{
    const char *key;
    json_t *v;
    char msg[1024], eb[128];
    json_object_foreach(j->body, key, v)
    {
        const char *owner = NULL, *group = NULL;
        int64_t mode = 0;
        if (perm_fields(j, key, v, &owner, &group, &mode) < 0) return;
        char *abs = expand_or_fail(j, key, 1);
        if (!abs) return;
        if (mkdir_first) {
            int r = sg__files_mkdir_p(abs, 0777);
            if (r < 0) {
                sg__fjob_error(j, 500, "RUNTIME_ERROR", "error creating directory %s: mkdir %s: %s",
                               key, abs, goerr(-r, eb, sizeof(eb)));
                free(abs);
                return;
            }
        }
        int r = sg__files_apply_perms(abs, mode, owner, group, msg, sizeof(msg));
        if (r < 0) /* 2.11.3: every failure, a missing file included, is a 500 */
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "error changing permissions of %s: %s", key,
                           msg);
        free(abs);
        if (r < 0) return;
    }
}

void sg__fop_perms(sg__fjob_t *j)
{
    perms_or_mkdir(j, 0);
}

void sg__fop_mkdirs(sg__fjob_t *j)
{
    perms_or_mkdir(j, 1);
}

/* ------------------------------------------------------------------ mv */

void sg__fop_mv(sg__fjob_t *j)
{
    size_t i;
    json_t *v;
    char eb[128];
    json_array_foreach(j->body, i, v)
    {
        const char *src = NULL, *dest = NULL;
        sg_json_err_t err;
        sg_json_err_init(&err);
        if (!json_is_object(v)) sg_json_err_set(&err, SG_EINVAL, "item %zu must be an object", i);
        sg_json_get_string(v, "src", NULL, &src, &err);
        sg_json_get_string(v, "dest", NULL, &dest, &err);
        if (!err.code && (!src || !*src || !dest || !*dest))
            sg_json_err_set(&err, SG_EINVAL, "item %zu: src and dest are required", i);
        if (err.code) {
            sg__fjob_error(j, 400, "INVALID_REQUEST_BODY", "%s", err.message);
            return;
        }
        char *s = expand_or_fail(j, src, 1);
        if (!s) return;
        char *d = expand_or_fail(j, dest, 1);
        if (!d) {
            free(s);
            return;
        }
        struct stat st;
        if (lstat(s, &st) < 0) {
            int e = errno;
            if (e == ENOENT || e == ENOTDIR)
                sg__fjob_error(j, 404, "FILE_NOT_FOUND", "file not found: %s", src);
            else
                sg__fjob_error(j, 500, "RUNTIME_ERROR", "lstat %s: %s", s,
                               goerr(e, eb, sizeof(eb)));
            goto out;
        }
        char *dcopy = sg_xstrdup(d);
        int r = sg__files_mkdir_p(dirname(dcopy), 0755);
        free(dcopy);
        if (r < 0) {
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "error creating parent of %s: %s", dest,
                           goerr(-r, eb, sizeof(eb)));
            goto out;
        }
        if (lstat(d, &st) == 0) {
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "destination path already exists: %s", dest);
            goto out;
        }
        if (rename(s, d) < 0) {
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "error renaming %s to %s: rename %s %s: %s",
                           src, dest, s, d, goerr(errno, eb, sizeof(eb)));
            goto out;
        }
        free(s);
        free(d);
        continue;
    out:
        free(s);
        free(d);
        return;
    }
}

/* ------------------------------------------------------------------ walks */

typedef struct walk {
    sg__fjob_t *j;
    sg_glob_t *glob;   /* search: match base names of non-directories */
    int64_t max_depth; /* list: levels below the root (1 = children) */
    json_t *out;
    uint64_t seen, max;
    int failed;
} walk_t;

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entry names of dir (without . and ..), or NULL with *n = 0 on error (errno set). */
static char **read_names(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) return NULL;
    char **v = NULL;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            v = sg_xrealloc(v, cap * sizeof(*v));
        }
        v[(*n)++] = sg_xstrdup(e->d_name);
    }
    closedir(d);
    if (*n) qsort(v, *n, sizeof(*v), cmp_names);
    if (!v) v = sg_xmalloc(sizeof(*v)); /* empty but not an error */
    return v;
}

static void walk(walk_t *w, const char *dir, int64_t level)
{
    size_t n = 0;
    char **names = read_names(dir, &n);
    if (!names) { /* an unreadable subdirectory is skipped, not fatal */
        sg_log(SG_LOG_DEBUG, "files: cannot read %s: %s", dir, strerror(errno));
        return;
    }
    size_t dl = strlen(dir);
    for (size_t i = 0; i < n && !w->failed; i++) {
        if (++w->seen > w->max) {
            sg__fjob_error(w->j, 500, "RUNTIME_ERROR",
                           "too many entries: stopped after %llu (EXECD_MAX_WALK_ENTRIES); "
                           "narrow the path",
                           (unsigned long long)w->max);
            w->failed = 1;
            break;
        }
        char *p = sg_xmalloc(dl + strlen(names[i]) + 2);
        sprintf(p, "%s%s%s", dir, dir[dl - 1] == '/' ? "" : "/", names[i]);
        struct stat st;
        if (lstat(p, &st) == 0) {
            int isdir = S_ISDIR(st.st_mode);
            if (w->glob) {
                if (!isdir && sg_glob_match(w->glob, names[i], strlen(names[i])))
                    json_array_append_new(w->out, sg__files_info_json(p, &st));
                if (isdir) walk(w, p, level + 1);
            } else {
                json_array_append_new(w->out, sg__files_info_json(p, &st));
                if (isdir && level + 1 < w->max_depth) walk(w, p, level + 1);
            }
        }
        free(p);
    }
    sg__files_strv_free(names, n);
}

void sg__fop_search(sg__fjob_t *j)
{
    char msg[512], eb[128];
    const char *pat = j->arg && *j->arg ? j->arg : "**";
    sg_glob_t *g = NULL;
    if (sg_glob_compile(pat, strlen(pat), &g, msg, sizeof(msg)) < 0) {
        sg__fjob_error(j, 500, "RUNTIME_ERROR", "invalid pattern %s: %s", pat, msg);
        return;
    }
    char *abs = expand_or_fail(j, j->paths[0], 1);
    if (!abs) {
        sg_glob_free(g);
        return;
    }
    struct stat st;
    if (lstat(abs, &st) < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            sg__fjob_error(j, 404, "FILE_NOT_FOUND", "file not found: %s: lstat %s: %s",
                           j->paths[0], abs, goerr(e, eb, sizeof(eb)));
        else
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "lstat %s: %s", abs, goerr(e, eb, sizeof(eb)));
        goto out;
    }
    walk_t w = {j, g, 0, json_array(), 0, j->max_walk, 0};
    if (!S_ISDIR(st.st_mode)) { /* filepath.Walk on a file visits just that file */
        const char *base = strrchr(abs, '/');
        base = base ? base + 1 : abs;
        if (sg_glob_match(g, base, strlen(base)))
            json_array_append_new(w.out, sg__files_info_json(abs, &st));
    } else {
        walk(&w, abs, 0);
    }
    if (w.failed)
        json_decref(w.out);
    else
        sg__fjob_json(j, 200, w.out);
out:
    free(abs);
    sg_glob_free(g);
}

void sg__fop_list(sg__fjob_t *j)
{
    char eb[128];
    char *abs = expand_or_fail(j, j->paths[0], 1);
    if (!abs) return;
    struct stat st;
    if (lstat(abs, &st) < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            sg__fjob_error(j, 404, "FILE_NOT_FOUND", "directory not found: %s: lstat %s: %s",
                           j->paths[0], abs, goerr(e, eb, sizeof(eb)));
        else
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "lstat %s: %s", abs, goerr(e, eb, sizeof(eb)));
    } else if (S_ISLNK(st.st_mode)) {
        sg__fjob_error(j, 400, "INVALID_REQUEST_BODY",
                       "path is a symbolic link, refusing to traverse: %s", j->paths[0]);
    } else if (!S_ISDIR(st.st_mode)) {
        sg__fjob_error(j, 400, "INVALID_REQUEST_BODY", "path is not a directory: %s", j->paths[0]);
    } else {
        walk_t w = {j, NULL, j->num, json_array(), 0, j->max_walk, 0};
        if (j->num > 0) walk(&w, abs, 0);
        if (w.failed)
            json_decref(w.out);
        else
            sg__fjob_json(j, 200, w.out);
    }
    free(abs);
}

/* ------------------------------------------------------------------ rm -rf */

static __thread int rm_errno;
static __thread char rm_path[1024];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = flag == FTW_DP ? rmdir(p) : unlink(p);
    if (r < 0 && errno != ENOENT) {
        rm_errno = errno;
        snprintf(rm_path, sizeof(rm_path), "%s", p);
        return 1;
    }
    return 0;
}

void sg__fop_rmdirs(sg__fjob_t *j)
{
    char eb[128];
    for (size_t i = 0; i < j->npaths; i++) {
        char *abs = expand_or_fail(j, j->paths[i], 1);
        if (!abs) return;
        struct stat st;
        if (lstat(abs, &st) < 0) { /* missing is fine */
            free(abs);
            continue;
        }
        int r;
        rm_errno = 0;
        if (!S_ISDIR(st.st_mode)) {
            r = unlink(abs) < 0 && errno != ENOENT ? (rm_errno = errno, 1) : 0;
            snprintf(rm_path, sizeof(rm_path), "%s", abs);
        } else {
            r = nftw(abs, rm_one, 32, FTW_DEPTH | FTW_PHYS);
            if (r < 0 && !rm_errno) {
                rm_errno = errno;
                snprintf(rm_path, sizeof(rm_path), "%s", abs);
            }
        }
        if (r != 0 && rm_errno) {
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "error removing directory %s: unlinkat %s: %s",
                           j->paths[i], rm_path, goerr(rm_errno, eb, sizeof(eb)));
            free(abs);
            return;
        }
        free(abs);
    }
}

/* ------------------------------------------------------------------ replace */

/* Streams path through old -> new into a temp file next to it, renamed over it when anything
 * was replaced (mode and, when permitted, owner kept). Memory: one 64 KiB window + len(old). */
static int replace_one(const char *path, const char *old, size_t ol, const char *nw, size_t nl,
                       long long *count, char *msg, size_t msg_len)
{
    char eb[128];
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        int e = errno;
        snprintf(msg, msg_len, "open %s: %s", path, goerr(e, eb, sizeof(eb)));
        return -e;
    }
    struct stat st;
    if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? EISDIR : errno ? errno : EINVAL;
        snprintf(msg, msg_len, "read %s: %s", path, goerr(e, eb, sizeof(eb)));
        close(in);
        return -e;
    }
    char *dcopy = sg_xstrdup(path);
    char *tmp = sg_xmalloc(strlen(path) + 32);
    const char *base = strrchr(path, '/');
    sprintf(tmp, "%s/.%s.sgreplace.XXXXXX", dirname(dcopy), base ? base + 1 : path);
    free(dcopy);
    int outfd = mkostemp(tmp, O_CLOEXEC);
    if (outfd < 0) {
        int e = errno;
        snprintf(msg, msg_len, "create temp file for %s: %s", path, goerr(e, eb, sizeof(eb)));
        close(in);
        free(tmp);
        return -e;
    }
    FILE *out = fdopen(outfd, "w");
    size_t win = 64 * 1024, cap = win + ol;
    char *buf = sg_xmalloc(cap);
    size_t carry = 0;
    int err = 0;
    *count = 0;
    for (;;) {
        ssize_t n = read(in, buf + carry, win);
        if (n < 0) {
            if (errno == EINTR) continue;
            err = errno;
            break;
        }
        size_t len = carry + (size_t)n, pos = 0;
        char *hit;
        while (pos < len && (hit = memmem(buf + pos, len - pos, old, ol))) {
            fwrite(buf + pos, 1, (size_t)(hit - (buf + pos)), out);
            fwrite(nw, 1, nl, out);
            (*count)++;
            pos = (size_t)(hit - buf) + ol;
        }
        size_t keep = n == 0 ? 0 : SG_MIN(len - pos, ol - 1);
        fwrite(buf + pos, 1, len - pos - keep, out);
        memmove(buf, buf + len - keep, keep);
        carry = keep;
        if (n == 0) break;
    }
    free(buf);
    close(in);
    if (!err && fflush(out) != 0) err = errno;
    if (!err && *count > 0) {
        if (fchmod(outfd, st.st_mode & 07777) < 0) err = errno;
        if (!err && fchown(outfd, st.st_uid, st.st_gid) < 0 && errno != EPERM) err = errno;
        if (!err && fsync(outfd) < 0) err = errno;
    }
    fclose(out);
    if (!err && *count > 0 && rename(tmp, path) < 0) err = errno;
    if (err || *count == 0) unlink(tmp);
    if (err) snprintf(msg, msg_len, "rewrite %s: %s", path, goerr(err, eb, sizeof(eb)));
    free(tmp);
    return -err;
}

void sg__fop_replace(sg__fjob_t *j)
{
    const char *key;
    json_t *v;
    json_t *out = json_object();
    char msg[1024];
    /* Validate every item before touching any file. */
    json_object_foreach(j->body, key, v)
    {
        const char *old = NULL, *nw = NULL;
        sg_json_err_t err;
        sg_json_err_init(&err);
        if (!json_is_object(v))
            sg_json_err_set(&err, SG_EINVAL, "value for %s must be an object", key);
        sg_json_get_string(v, "old", NULL, &old, &err);
        sg_json_get_string(v, "new", "", &nw, &err);
        if (err.code) {
            sg__fjob_error(j, 400, "INVALID_REQUEST_BODY", "%s", err.message);
            goto fail;
        }
        if (!old || !*old) {
            sg__fjob_error(j, 400, "INVALID_REQUEST_BODY", "old content must not be empty");
            goto fail;
        }
    }
    json_object_foreach(j->body, key, v)
    {
        json_t *jo = json_object_get(v, "old"), *jn = json_object_get(v, "new");
        char *abs = expand_or_fail(j, key, 1);
        if (!abs) goto fail;
        long long count = 0;
        int r = replace_one(abs, json_string_value(jo), json_string_length(jo),
                            jn && json_is_string(jn) ? json_string_value(jn) : "",
                            jn && json_is_string(jn) ? json_string_length(jn) : 0, &count, msg,
                            sizeof(msg));
        free(abs);
        if (r == -ENOENT || r == -ENOTDIR) {
            sg__fjob_error(j, 404, "FILE_NOT_FOUND", "file not found: %s", key);
            goto fail;
        }
        if (r < 0) {
            sg__fjob_error(j, 500, "RUNTIME_ERROR", "error replacing content in %s: %s", key, msg);
            goto fail;
        }
        json_t *o = json_object();
        json_object_set_new(o, "replacedCount", json_integer(count));
        json_object_set_new(out, key, o);
    }
    if (j->flag)
        sg__fjob_json(j, 200, out);
    else
        json_decref(out);
    return;
fail:
    json_decref(out);
}
