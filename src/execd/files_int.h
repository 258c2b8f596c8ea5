/* files_int.h: what the /files and /directories modules share (internal to src/execd).
 *
 * Map
 *   files.c           routing, start/stop, the JSON-body endpoints' request side
 *   files_util.c      path expansion (~, $VAR, ${VAR}, made absolute and cleaned), query
 *                     parameter decoding, FileInfo JSON, chmod/chown per 2.11.3, and the
 *                     "fs job": blocking filesystem work run on the libuv threadpool
 *                     (uv_queue_work) whose result (status + JSON body) is answered on the loop
 *   files_ops.c       the job bodies: info, delete, permissions, mv, search, replace,
 *                     directories list / create / delete
 *   files_upload.c    POST /files/upload: multipart streamed to disk (uv_fs_write)
 *   files_download.c  GET /files/download: uv_fs_read into sg_buf_t with backpressure, Range,
 *                     line mode
 *
 * Threads: job bodies run on the threadpool and touch only their own job (and read-only
 * configuration); everything else runs on the loop thread. */
#ifndef SANDGATE_EXECD_FILES_INT_H
#define SANDGATE_EXECD_FILES_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "execd.h"

#define SG__FILES_DEFAULT_MAX_WALK 200000 /* entries one search / list may visit */

struct sg_execd_files {
    uint64_t max_walk; /* EXECD_MAX_WALK_ENTRIES */
    mode_t umask;      /* read once at start: new uploads get 0777 &~ umask, as Go's */
    unsigned inflight; /* uploads + downloads + jobs in progress (for stop) */
};

/* errno text as Go prints it ("no such file or directory"); e may be negative. Thread-local
 * buffer: use before the next call on the same thread. */
const char *sg__files_errstr(int e);

/* --- paths */
/* Expands a leading "~" / "~/" (HOME) and $VAR / ${VAR} (an unset variable is an error),
 * then, when absolute is set, makes the result absolute against the cwd and cleans it
 * (Go's filepath.Abs). Returns a malloc'd string, or NULL with msg set. */
char *sg__files_expand(const char *in, int absolute, char *msg, size_t msg_len);
/* Lexical clean of an absolute or relative path, in place (filepath.Clean). */
void sg__files_clean(char *p);

/* --- query strings */
/* Percent-decodes (and '+' -> ' ') src[0..n) into a malloc'd NUL-terminated string. */
char *sg__files_qdecode(const char *src, size_t n);
/* Every decoded value of name in the query, in order; *count gets how many. Free with
 * sg__files_strv_free. */
char **sg__files_qvalues(const char *query, const char *name, size_t *count);
/* The first decoded value, or NULL. */
char *sg__files_qvalue(const char *query, const char *name);
void sg__files_strv_free(char **v, size_t n);

/* --- FileInfo */
/* {"path","type","size","modified_at","created_at","owner","group","mode"} from st. */
json_t *sg__files_info_json(const char *abs_path, const struct stat *st);
/* Go's RFC3339Nano in UTC: 2026-06-12T08:30:00.123456789Z (trailing zeros trimmed). */
void sg__files_rfc3339nano(char *out, size_t len, time_t sec, long nsec);
/* 755 (decimal digits read as octal) -> 0755; -1 if a digit is 8 or 9 or it is negative. */
int sg__files_mode_from_digits(int64_t digits);

/* chmod (when mode_digits != 0) then chown by names as 2.11.3 says (unresolvable names are
 * ignored; uid/gid default to execd's own). Returns 0 or -errno with msg set. Blocking. */
int sg__files_apply_perms(const char *path, int64_t mode_digits, const char *owner,
                          const char *group, char *msg, size_t msg_len);
/* mkdir -p with mode for every created component. Returns 0 or -errno. Blocking. */
int sg__files_mkdir_p(const char *path, mode_t mode);

/* --- fs jobs */
typedef struct sg__fjob sg__fjob_t;
typedef void (*sg__fjob_fn)(sg__fjob_t *j); /* runs on the threadpool */

struct sg__fjob {
    uv_work_t work;
    sg_execd_t *x;
    sg_http_req_t *req;
    sg__fjob_fn fn;
    /* inputs */
    json_t *body; /* parsed JSON body (owned) */
    char **paths; /* decoded query values (owned) */
    size_t npaths;
    char *arg;   /* one more decoded query value (pattern), owned */
    int64_t num; /* depth */
    int flag;    /* verbose */
    uint64_t max_walk;
    /* result, set by fn: status 200 with body NULL = empty 200 */
    int status;
    char *resp; /* malloc'd JSON text */
    size_t resp_len;
};

/* Sets the job's result to {"code","message"} with status. */
void sg__fjob_error(sg__fjob_t *j, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sets the result to status + json (consumed: decref'd). */
void sg__fjob_json(sg__fjob_t *j, int status, json_t *json);
/* Queues j (fn on the pool, answer on the loop, then frees j and its inputs). */
void sg__fjob_submit(sg__fjob_t *j);
sg__fjob_t *sg__fjob_new(sg_execd_t *x, sg_http_req_t *req, sg__fjob_fn fn);

/* empty 200 with Content-Length: 0 */
int sg__files_ok(sg_http_req_t *req);

/* --- job bodies (files_ops.c) */
void sg__fop_info(sg__fjob_t *j);
void sg__fop_delete(sg__fjob_t *j);
void sg__fop_perms(sg__fjob_t *j);
void sg__fop_mv(sg__fjob_t *j);
void sg__fop_search(sg__fjob_t *j);
void sg__fop_replace(sg__fjob_t *j);
void sg__fop_list(sg__fjob_t *j);
void sg__fop_mkdirs(sg__fjob_t *j);
void sg__fop_rmdirs(sg__fjob_t *j);

/* proxy.c: closes the proxy's HTTP client (called from sg_execd_files_stop). */
void sg__execd_proxy_stop(sg_execd_t *x);

/* --- streaming endpoints */
/* The first range of a Range header ("bytes=a-b", "a-", "-n", lists: the first one) against
 * size: 0 and [*start, *end] inclusive, -1 bad syntax (416 {"code":"UNKNOWN"}), -2 not
 * satisfiable (416 "failed to overlap"). */
int sg__files_parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *end);
void sg__files_upload(sg_execd_t *x, sg_http_req_t *req);
void sg__files_download(sg_execd_t *x, sg_http_req_t *req);

#endif
