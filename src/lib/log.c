/* log.c: logfmt lines built on the stack, one sink call each (see log.h).
 *
 * A line_t is a fixed buffer that refuses bytes past SG_LOG_LINE_MAX - TAIL_RESERVE; the
 * reserve always leaves room for " truncated=true\n", so cutting is simple and safe. */
#include "sandgate/log.h"
#include "sandgate/common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static sg_log_level_t g_level = SG_LOG_INFO;
static sg_log_sink_fn g_sink;
static void *g_sink_ud;
static uint64_t (*g_clock)(void);
static uint64_t g_dropped;

static const char *const NAMES[] = {"debug", "info", "warn", "error"};

int sg_log_level_parse(const char *s, sg_log_level_t *out)
{
    if (!s) return SG_EINVAL;
    for (size_t i = 0; i < SG_ARRAY_SIZE(NAMES); i++) {
        if (strcasecmp(s, NAMES[i]) == 0) {
            *out = (sg_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = SG_LOG_WARN;
        return 0;
    }
    return SG_EINVAL;
}

const char *sg_log_level_name(sg_log_level_t level)
{
    return (unsigned)level < SG_ARRAY_SIZE(NAMES) ? NAMES[level] : "unknown";
}

void sg_log_set_level(sg_log_level_t level) { g_level = level; }
sg_log_level_t sg_log_get_level(void) { return g_level; }
int sg_log_enabled(sg_log_level_t level) { return level >= g_level; }

void sg_log_set_sink(sg_log_sink_fn fn, void *ud)
{
    g_sink = fn;
    g_sink_ud = ud;
}

void sg_log_set_clock(uint64_t (*now_ms)(void)) { g_clock = now_ms; }
uint64_t sg_log_dropped(void) { return g_dropped; }

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void stderr_sink(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            g_dropped++; /* EAGAIN on a full non-blocking stderr, or stderr closed */
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

#define TAIL_RESERVE 24 /* " truncated=true\n" */

typedef struct line {
    char buf[SG_LOG_LINE_MAX];
    size_t len;
    int cut;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    size_t room = SG_LOG_LINE_MAX - TAIL_RESERVE - l->len;
    if (l->cut) return;
    if (n > room) {
        n = room;
        l->cut = 1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void putc_(line_t *l, char c) { put(l, &c, 1); }

static int needs_quote(const char *s, size_t n)
{
    if (n == 0) return 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\') return 1;
    }
    return 0;
}

static void put_value(line_t *l, const char *s, size_t n, int force_quote)
{
    if (!force_quote && !needs_quote(s, n)) {
        put(l, s, n);
        return;
    }
    putc_(l, '"');
    size_t run = 0; /* bytes copied as they are, flushed in one put */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char hex[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(hex, sizeof hex, "\\u%04x", c);
            esc = hex;
        }
        if (!esc) {
            run++;
            continue;
        }
        put(l, s + i - run, run);
        run = 0;
        put(l, esc, strlen(esc));
    }
    put(l, s + n - run, run);
    putc_(l, '"');
}

static void put_key(line_t *l, const char *k)
{
    putc_(l, ' ');
    size_t n = 0;
    for (const char *p = k; *p; p++) {
        char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
            c == '-') {
            putc_(l, c);
            n++;
        }
    }
    if (!n) putc_(l, '_');
    putc_(l, '=');
}

static void begin(line_t *l, sg_log_level_t level, const char *msg, size_t msg_len)
{
    l->len = 0;
    l->cut = 0;
    uint64_t ms = g_clock ? g_clock() : wall_ms();
    time_t sec = (time_t)(ms / 1000u);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char ts[64];
    int n = snprintf(ts, sizeof ts, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03uZ level=%s msg=", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000u),
                     sg_log_level_name(level));
    put(l, ts, (size_t)n);
    put_value(l, msg, msg_len, 1);
}

static void finish(line_t *l)
{
    if (l->cut) {
        static const char T[] = " truncated=true";
        memcpy(l->buf + l->len, T, sizeof T - 1);
        l->len += sizeof T - 1;
    }
    l->buf[l->len++] = '\n';
    if (g_sink) g_sink(g_sink_ud, l->buf, l->len);
    else stderr_sink(l->buf, l->len);
}

void sg_logv(sg_log_level_t level, const char *fmt, va_list ap)
{
    if (!sg_log_enabled(level)) return;
    char msg[4096];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0) n = 0;
    line_t l;
    begin(&l, level, msg, SG_MIN((size_t)n, sizeof msg - 1));
    if ((size_t)n >= sizeof msg) l.cut = 1;
    finish(&l);
}

void sg_log(sg_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sg_logv(level, fmt, ap);
    va_end(ap);
}

void sg_log_kv(sg_log_level_t level, const char *msg, ...)
{
    if (!sg_log_enabled(level)) return;
    line_t l;
    begin(&l, level, msg, strlen(msg));
    va_list ap;
    va_start(ap, msg);
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        put_key(&l, k);
        if (v) put_value(&l, v, strlen(v), 0);
        else put(&l, "\"\"", 2);
    }
    va_end(ap);
    finish(&l);
}

void sg_log_request(const sg_log_request_t *r)
{
    sg_log_level_t level = r->status >= 500 ? SG_LOG_WARN : SG_LOG_INFO;
    if (!sg_log_enabled(level)) return;
    line_t l;
    begin(&l, level, "request", 7);
    const char *rid = r->request_id ? r->request_id : "";
    const char *method = r->method ? r->method : "";
    const char *path = r->path ? r->path : "";
    put_key(&l, "rid");
    put_value(&l, rid, strlen(rid), 0);
    put_key(&l, "method");
    put_value(&l, method, strlen(method), 0);
    put_key(&l, "path");
    put_value(&l, path, strlen(path), 0);
    char num[160];
    double d = r->duration_ms >= 0 ? r->duration_ms : 0;
    int n = snprintf(num, sizeof num, " status=%d bytes_in=%llu bytes_out=%llu dur_ms=%.3f", r->status,
                     (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out, d);
    put(&l, num, (size_t)SG_MIN((size_t)n, sizeof num - 1));
    finish(&l);
}
