/* log.h: one logfmt line per event, on stderr.
 *
 *   ts=2026-11-22T03:00:00.123Z level=info msg="listening" addr=127.0.0.1:8080
 *
 * ts is UTC wall time with milliseconds; msg is always quoted; other values are quoted only
 * when they are empty or hold a space, '=', '"', '\\' or a control byte. Inside quotes, '"'
 * and '\\' are backslash-escaped, \n \r \t are written as such, other control bytes as
 * \u00XX; bytes >= 0x80 pass through. So a line never contains a raw newline and a value
 * cannot forge another key. Keys are written as given minus any byte outside [A-Za-z0-9_.-].
 *
 * Levels: debug < info < warn < error; lines below the level (default info) cost one compare.
 * sg_log_level_parse() reads the config value ("debug", "info", "warn"/"warning", "error").
 *
 * Output: the line is built on the stack (at most SG_LOG_LINE_MAX bytes; longer ones are cut
 * and end with `truncated=true`) and handed to the sink in one call. The default sink is one
 * write(2) to fd 2: no stdio buffering, no fsync, never more than that one system call (plus
 * EINTR retries); if stderr is non-blocking and full the line is dropped and counted in
 * sg_log_dropped(). One write per line keeps lines whole even from uv_queue_work threads;
 * the setters are for startup and tests. */
#ifndef SANDGATE_LOG_H
#define SANDGATE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sg_log_level {
    SG_LOG_DEBUG = 0,
    SG_LOG_INFO = 1,
    SG_LOG_WARN = 2,
    SG_LOG_ERROR = 3,
} sg_log_level_t;

#define SG_LOG_LINE_MAX 8192

int sg_log_level_parse(const char *s, sg_log_level_t *out); /* 0 or SG_EINVAL */
const char *sg_log_level_name(sg_log_level_t level);
void sg_log_set_level(sg_log_level_t level);
sg_log_level_t sg_log_get_level(void);
int sg_log_enabled(sg_log_level_t level);

/* line is len bytes ending with a newline, valid during the call. NULL fn restores stderr. */
typedef void (*sg_log_sink_fn)(void *ud, const char *line, size_t len);
void sg_log_set_sink(sg_log_sink_fn fn, void *ud);
/* Wall clock for ts, ms since the epoch; NULL restores the real clock (for tests). */
void sg_log_set_clock(uint64_t (*now_ms)(void));
uint64_t sg_log_dropped(void);

/* msg = the printf-formatted text. */
void sg_log(sg_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sg_logv(sg_log_level_t level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* msg, then (const char *key, const char *value) pairs, then NULL. A NULL value is written
 * as an empty quoted string. */
void sg_log_kv(sg_log_level_t level, const char *msg, ...) __attribute__((sentinel));

/* One HTTP request, after its response finished:
 *   msg="request" rid=... method=GET path=/v1/sandboxes status=200 bytes_in=0 bytes_out=512
 *   dur_ms=1.250
 * at level info, or warn for status >= 500. */
typedef struct sg_log_request {
    const char *request_id;
    const char *method;
    const char *path;
    int status;
    uint64_t bytes_in;
    uint64_t bytes_out;
    double duration_ms;
} sg_log_request_t;
void sg_log_request(const sg_log_request_t *r);

#endif
