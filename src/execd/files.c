/* files.c: /files... and /directories... routing (opensandbox-protocol.md 2.11, 2.12).
 *
 * The request side runs on the loop: query values are decoded, JSON bodies are read (bounded)
 * and parsed, then the blocking filesystem work runs as an fs job on the threadpool
 * (files_util.c, bodies in files_ops.c). Uploads and downloads stream (files_upload.c,
 * files_download.c). An unknown method on a known path falls through to the 404 the Go agent
 * (gin, no MethodNotAllowed) gives too.
 *
 * --max-walk-entries (EXECD_MAX_WALK_ENTRIES) bounds the entries /files/search and
 * /directories/list visit before they stop with 500 RUNTIME_ERROR "too many entries". */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "files_int.h"
#include "sandgate/common.h"
#include "sandgate/json.h"
#include "sandgate/log.h"

#define BODY_MAX (8u * 1024 * 1024) /* JSON bodies of the file endpoints */

int sg_execd_files_start(sg_execd_t *x)
{
    static struct sg_execd_files g_files; /* static: jobs may outlive stop */
    struct sg_execd_files *f = &g_files;
    mode_t m = umask(0);
    umask(m);
    f->umask = m;
    f->max_walk = x->cfg.max_walk_entries > 0 ? (uint64_t)x->cfg.max_walk_entries
                                              : SG__FILES_DEFAULT_MAX_WALK;
    x->files = f;
    return 0;
}

void sg_execd_files_stop(sg_execd_t *x)
{
    /* Nothing to release: the state is static, and jobs and transfers still in flight hold
     * their requests until the loop runs them to completion (the server is closed by then, so
     * their answers return SG_ECLOSED). */
    sg__execd_proxy_stop(x); /* the proxy's client: no hook of its own in execd.c yet */
}

typedef enum { BODY_OBJECT, BODY_ARRAY } body_kind_t;

static void on_json_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    sg__fjob_t *j = ud;
    body_kind_t kind = (body_kind_t)j->num;
    if (err == SG_ETOOBIG || err == SG_ECLOSED) { /* answered by the server / gone */
        if (err == SG_ECLOSED) sg_http_req_release(req);
        sg__files_strv_free(j->paths, j->npaths);
        free(j);
        return;
    }
    sg_json_err_t jerr;
    sg_json_err_init(&jerr);
    json_t *v = NULL;
    if (sg_json_parse(body, len, BODY_MAX, &v, &jerr) < 0 ||
        (kind == BODY_OBJECT && !json_is_object(v)) || (kind == BODY_ARRAY && !json_is_array(v))) {
        if (!jerr.code)
            sg_json_err_set(&jerr, SG_EINVAL, "request body must be a JSON %s, not %s",
                            kind == BODY_OBJECT ? "object" : "array", sg_json_type_name(v));
        sg_http_respond_error(req, 400, "INVALID_REQUEST_BODY", jerr.message);
        json_decref(v);
        free(j->arg);
        free(j);
        return;
    }
    j->body = v;
    j->num = 0;
    sg__fjob_submit(j);
}

static void with_body(sg_execd_t *x, sg_http_req_t *req, sg__fjob_fn fn, body_kind_t kind, int flag)
{
    sg__fjob_t *j = sg__fjob_new(x, req, fn);
    j->num = kind;
    j->flag = flag;
    if (sg_http_req_read_all(req, BODY_MAX, on_json_body, j) < 0) {
        sg_http_req_release(req);
        free(j);
    }
}

static void with_paths(sg_execd_t *x, sg_http_req_t *req, sg__fjob_fn fn)
{
    sg__fjob_t *j = sg__fjob_new(x, req, fn);
    j->paths = sg__files_qvalues(sg_http_req_query(req), "path", &j->npaths);
    sg__fjob_submit(j);
}

/* The one required `path` query value, or answers 400 MISSING_QUERY. */
static sg__fjob_t *with_path(sg_execd_t *x, sg_http_req_t *req, sg__fjob_fn fn)
{
    char *p = sg__files_qvalue(sg_http_req_query(req), "path");
    if (!p || !*p) {
        free(p);
        sg_http_respond_error(req, 400, "MISSING_QUERY", "missing query parameter 'path'");
        return NULL;
    }
    sg__fjob_t *j = sg__fjob_new(x, req, fn);
    j->paths = sg_xmalloc(sizeof(char *));
    j->paths[0] = p;
    j->npaths = 1;
    return j;
}

static void list_dir(sg_execd_t *x, sg_http_req_t *req)
{
    char *d = sg__files_qvalue(sg_http_req_query(req), "depth");
    int64_t depth = 1;
    if (d && *d) {
        char *end;
        long long v = strtoll(d, &end, 10);
        if (*end || v < 0) {
            char m[256];
            snprintf(m, sizeof(m), "invalid depth '%.100s': a non-negative integer is required", d);
            free(d);
            sg_http_respond_error(req, 400, "INVALID_REQUEST_BODY", m);
            return;
        }
        depth = v;
    }
    free(d);
    sg__fjob_t *j = with_path(x, req, sg__fop_list);
    if (!j) return;
    j->num = depth;
    sg__fjob_submit(j);
}

int sg_execd_route_files(sg_execd_t *x, sg_http_req_t *req)
{
    const char *p = sg_http_req_path(req);
    const char *m = sg_http_req_method(req);
    int get = !strcmp(m, "GET"), post = !strcmp(m, "POST"), del = !strcmp(m, "DELETE");
    if (!strncmp(p, "/files", 6)) {
        const char *s = p + 6;
        if (!*s && del) {
            with_paths(x, req, sg__fop_delete);
        } else if (!strcmp(s, "/info") && get) {
            with_paths(x, req, sg__fop_info);
        } else if (!strcmp(s, "/permissions") && post) {
            with_body(x, req, sg__fop_perms, BODY_OBJECT, 0);
        } else if (!strcmp(s, "/mv") && post) {
            with_body(x, req, sg__fop_mv, BODY_ARRAY, 0);
        } else if (!strcmp(s, "/replace") && post) {
            char *v = sg__files_qvalue(sg_http_req_query(req), "verbose");
            int verbose = v && (!strcmp(v, "true") || !strcmp(v, "1"));
            free(v);
            with_body(x, req, sg__fop_replace, BODY_OBJECT, verbose);
        } else if (!strcmp(s, "/search") && get) {
            sg__fjob_t *j = with_path(x, req, sg__fop_search);
            if (j) {
                j->arg = sg__files_qvalue(sg_http_req_query(req), "pattern");
                sg__fjob_submit(j);
            }
        } else if (!strcmp(s, "/upload") && post) {
            sg__files_upload(x, req);
        } else if (!strcmp(s, "/download") && get) {
            sg__files_download(x, req);
        } else {
            return 0;
        }
        return 1;
    }
    if (!strncmp(p, "/directories", 12)) {
        const char *s = p + 12;
        if (!*s && post)
            with_body(x, req, sg__fop_mkdirs, BODY_OBJECT, 0);
        else if (!*s && del)
            with_paths(x, req, sg__fop_rmdirs);
        else if (!strcmp(s, "/list") && get)
            list_dir(x, req);
        else
            return 0;
        return 1;
    }
    return 0;
}
