/* commands.c: /ping, /command..., /session... on the runner engine (runner.h).
 *
 * Map
 *   gojson_*      a string escaper that writes what Go's encoding/json writes (HTML-safe
 *                 `<>&`, U+2028/9, \ufffd for each invalid UTF-8 byte), so events are
 *                 byte-compatible with the Go agent (opensandbox-protocol.md 2.4/2.5).
 *   ev_*          builders of one event frame (JSON + "\n\n") in the stream's scratch buffer,
 *                 field order type, text, execution_count, execution_time, timestamp, results,
 *                 error; the frame is then copied into the connection's queue (one chunk each).
 *   stream_t      one SSE response (POST /command, POST /session/{id}/run): it lives until
 *                 both the runner said on_done (or never started) AND the HTTP side finished
 *                 (ended, dropped or aborted), because runner callbacks carry it as ud.
 *                 Pings: one sg_tlist (3 s) for every stream, one sg_tentry each.
 *                 Backpressure (pull, like a shell pipe): when a write finds the connection's
 *                 output past the server's high-water mark, the stream holds the command's
 *                 output (sg_runner_hold: its pipes are not read, the child blocks on its
 *                 writes); the drain callback (output down to half the mark) releases it.
 *                 What arrives after the hold (the rest of one read per pipe, as events, and
 *                 pings) still queues; cfg.max_stream_buffer stays as a last-resort bound: past
 *                 it the client is dropped (its connection cut). A detached stream (client gone,
 *                 dropped) releases its hold, and the command runs on with its output
 *                 discarded, as with Go where the process outlives the request.
 *   follow_*      GET /command/{id}/stream (re-attach): a stream_t that rebuilds its events
 *                 from the command's log (sg_runner_log_read, 64 KiB at a time, none while the
 *                 client is past the high-water mark) and waits with sg_runner_log_wait when
 *                 caught up; it never holds the command.
 *   intr_t        DELETE /command?id= waiting for the group to be gone.
 *   id_ctx_t      an id (command or session) kept while a request body is read: POST
 *                 /command/{id}/signal (extension; the answer is immediate, 202 once kill(2)
 *                 delivered) and POST /session/{id}/run.
 *   logop_t       GET /command/{id}/logs and /command/{id}/raw: a fixed-length body streamed
 *                 from sg_runner_log_read in pieces, one read or one drain wait at a time.
 *   Every async object is on a list of the module so sg_execd_commands_stop (after the runner
 *   closed, when no runner callback can come any more) releases what is left.
 *
 * Extensions (docs/execd.md): "sandgate":{"raw":true} in the body, or X-Sandgate-Raw: 1, adds
 * {"type":"sandgate.raw",...,"data_b64":...} events carrying exactly the bytes read;
 * X-Sandgate-Keep-Log: 1 makes a foreground command write its log too, and
 * GET /command/{id}/stream?offset=N re-attaches to a command with a log;
 * POST /command/{id}/signal {"signal":"TERM"|15} signals a running command's process group
 * (its status then carries "signal": the last one sent). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "execd.h"
#include "sandgate/json.h"
#include "sandgate/log.h"
#include "sandgate/timer.h"

#define PING_MS   3000
#define LOG_PIECE (256 * 1024)
/* One log read of a re-attached stream: the size of one pipe read, so its raw events are the
 * size of a POST stream's. */
#define FOLLOW_PIECE (64 * 1024)
#define BODY_MAX     (1024 * 1024)

typedef struct jb {
    char *p;
    size_t len, cap;
} jb_t;
typedef struct stream stream_t;
typedef struct intr intr_t;
typedef struct logop logop_t;

struct sg_execd_cmds {
    sg_execd_t *x;
    sg_tlist_t pings;
    stream_t *streams;
    intr_t *intrs;
    logop_t *logops;
    int stopped;
};

struct stream {
    stream_t *prev, *next;
    struct sg_execd_cmds *m;
    sg_http_req_t *req; /* NULL once the HTTP side is finished */
    sg_tentry_t ping;
    char id[72];
    int raw;
    int run_done; /* on_done came, or the run never started */
    int held;     /* we asked the runner to hold the command's output */
    jb_t ev;      /* scratch for the event being sent */
    /* GET /command/{id}/stream (re-attach): events are rebuilt from the log, not from runner
     * callbacks; `held` then only means "past the high-water mark, do not read on". */
    int follow;
    int reading;    /* a log read is in flight (its callback carries this stream) */
    int waiting;    /* registered with sg_runner_log_wait */
    int trunc_sent; /* the sandgate.truncated event went out */
    uint64_t cursor;
    sg_run_split_t *split; /* line events (NULL with X-Sandgate-Lines: 0) */
};

struct intr {
    intr_t *prev, *next;
    struct sg_execd_cmds *m;
    sg_http_req_t *req;
};

struct logop {
    logop_t *prev, *next;
    struct sg_execd_cmds *m;
    sg_http_req_t *req;
    char id[72];
    uint64_t pos, end;
    int reading, waiting_drain, aborted;
};

/* ---------------------------------------------------------------- Go-compatible JSON */

/* Length of a valid UTF-8 sequence at s (Go's utf8.DecodeRune acceptance), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

static inline int plain_ascii(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&';
}

/* Length of the run of plain_ascii bytes at the start of s: eight bytes at a time while no
 * byte of the word needs escaping (bit tricks on a 64-bit word: a byte with the high bit, one
 * below 0x20, or one equal to " \ < > &), then bytewise. Output is mostly such runs. */
static size_t plain_run(const unsigned char *s, size_t n)
{
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
#define HAS_ZERO(v) (((v) - ONES) & ~(v) & HIGHS)
#define HAS_BYTE(x, c) HAS_ZERO((x) ^ (ONES * (uint64_t)(c)))
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if ((x & HIGHS) || (((x - ONES * 0x20) & ~x & HIGHS)) || HAS_BYTE(x, '"') ||
            HAS_BYTE(x, '\\') || HAS_BYTE(x, '<') || HAS_BYTE(x, '>') || HAS_BYTE(x, '&'))
            break;
    }
#undef ONES
#undef HIGHS
#undef HAS_ZERO
#undef HAS_BYTE
    while (i < n && plain_ascii(s[i]))
        i++;
    return i;
}

/* Escapes src the way Go's encoding/json does, quotes excluded. With dst NULL it only counts:
 * one pass for the length, one to write into dst (which must hold that many bytes). */
static size_t gojson_run(char *dst, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0;
#define PUT(ch) (dst ? (void)(dst[o] = (char)(ch)) : (void)0, o++)
    for (size_t i = 0; i < n;) {
        /* Fast path: a run of bytes written as they are (most output is plain ASCII). */
        size_t j = i + plain_run(s + i, n - i);
        if (j > i) {
            if (dst) memcpy(dst + o, s + i, j - i);
            o += j - i;
            i = j;
            continue;
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            PUT('\\');
            switch (c) {
            case '"': PUT('"'); break;
            case '\\': PUT('\\'); break;
            case '\n': PUT('n'); break;
            case '\r': PUT('r'); break;
            case '\t': PUT('t'); break;
            case '\b': PUT('b'); break;
            case '\f': PUT('f'); break;
            default:
                PUT('u');
                PUT('0');
                PUT('0');
                PUT(hex[c >> 4]);
                PUT(hex[c & 15]);
            }
            i++;
            continue;
        }
        size_t l = utf8_seq(s + i, n - i);
        if (l == 0) {
            const char *r = "\\ufffd";
            for (int k = 0; k < 6; k++)
                PUT(r[k]);
            i++;
            continue;
        }
        if (l == 3 && c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
            const char *r = s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
            for (int k = 0; k < 6; k++)
                PUT(r[k]);
            i += 3;
            continue;
        }
        for (size_t k = 0; k < l; k++)
            PUT(s[i + k]);
        i += l;
    }
#undef PUT
    return o;
}

/* jb_t: a growable byte buffer for building one JSON text. */
static void jb_need(jb_t *b, size_t n)
{
    if (b->len + n <= b->cap) return;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + n)
        nc *= 2;
    b->p = sg_xrealloc(b->p, nc);
    b->cap = nc;
}
static void jb_raw(jb_t *b, const char *s, size_t n)
{
    jb_need(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}
static void jb_z(jb_t *b, const char *s)
{
    jb_raw(b, s, strlen(s));
}
static void jb_str(jb_t *b, const char *s, size_t n)
{
    size_t plain = plain_run((const unsigned char *)s, n);
    if (plain == n) { /* the common case: one scan and a copy */
        jb_need(b, n + 2);
        b->p[b->len++] = '"';
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len++] = '"';
        return;
    }
    size_t el = gojson_run(NULL, s, n);
    jb_need(b, el + 2);
    b->p[b->len++] = '"';
    gojson_run(b->p + b->len, s, n);
    b->len += el;
    b->p[b->len++] = '"';
}
static void jb_strz(jb_t *b, const char *s)
{
    jb_str(b, s, strlen(s));
}
static void jb_i64(jb_t *b, long long v)
{
    char t[32];
    jb_raw(b, t, (size_t)snprintf(t, sizeof(t), "%lld", v));
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Go's time.RFC3339Nano in UTC: fraction without trailing zeros, none when zero. */
static void rfc3339nano(uint64_t ns, char out[64])
{
    time_t sec = (time_t)(ns / 1000000000u);
    unsigned frac = (unsigned)(ns % 1000000000u);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char date[40], f[16] = "";
    if (strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) date[0] = '\0';
    if (frac) {
        snprintf(f, sizeof(f), ".%09u", frac);
        size_t fl = strlen(f);
        while (fl > 1 && f[fl - 1] == '0')
            f[--fl] = '\0';
    }
    snprintf(out, 64, "%s%sZ", date, f);
}

/* Event builders write one frame (JSON + "\n\n") into a stream's scratch buffer, which the
 * HTTP layer then copies into its output queue: small events then share the queue's chunks
 * instead of costing an allocation (and a mostly empty framing chunk) each. */
static void ev_simple(jb_t *bp, const char *type, const char *text, size_t tlen, uint64_t exec_ms)
{
    jb_t b = *bp;
    b.len = 0;
    jb_z(&b, "{\"type\":");
    jb_strz(&b, type);
    if (tlen) {
        jb_z(&b, ",\"text\":");
        jb_str(&b, text, tlen);
    }
    if (exec_ms) {
        jb_z(&b, ",\"execution_time\":");
        jb_i64(&b, (long long)exec_ms);
    }
    jb_z(&b, ",\"timestamp\":");
    jb_i64(&b, (long long)wall_ms());
    jb_z(&b, "}\n\n");
    *bp = b;
}

static void ev_error(jb_t *bp, const char *evalue, const char *trace)
{
    jb_t b = *bp;
    b.len = 0;
    jb_z(&b, "{\"type\":\"error\",\"timestamp\":");
    jb_i64(&b, (long long)wall_ms());
    jb_z(&b, ",\"error\":{\"ename\":\"CommandExecError\",\"evalue\":");
    jb_strz(&b, evalue);
    jb_z(&b, ",\"traceback\":[");
    jb_strz(&b, trace);
    jb_z(&b, "]}}\n\n");
    *bp = b;
}

static void b64(jb_t *b, const unsigned char *s, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    /* 12 bits -> two characters per lookup: half the table reads of the 6-bit loop. */
    static char pairs[4096][2];
    static int pairs_ready;
    if (!pairs_ready) {
        for (int k = 0; k < 4096; k++) {
            pairs[k][0] = t[k >> 6];
            pairs[k][1] = t[k & 63];
        }
        pairs_ready = 1;
    }
    jb_need(b, (n + 2) / 3 * 4);
    char *o = b->p + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        memcpy(o, pairs[v >> 12], 2);
        memcpy(o + 2, pairs[v & 4095], 2);
        o += 4;
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
        *o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
}

static void ev_raw(jb_t *bp, sg_run_stream_t st, const char *data, size_t len, uint64_t off,
                   uint64_t comb)
{
    jb_t b = *bp;
    b.len = 0;
    jb_z(&b, "{\"type\":\"sandgate.raw\",\"stream\":");
    jb_z(&b, st == SG_RUN_STDERR ? "\"stderr\"" : st ? "\"stdout\"" : "\"unknown\"");
    if (st) { /* 0: a re-attached stream past what the log's stream index knows */
        jb_z(&b, ",\"offset\":");
        jb_i64(&b, (long long)off);
    }
    jb_z(&b, ",\"combined_offset\":");
    jb_i64(&b, (long long)comb);
    jb_z(&b, ",\"data_b64\":\"");
    b64(&b, (const unsigned char *)data, len);
    jb_z(&b, "\",\"timestamp\":");
    jb_i64(&b, (long long)wall_ms());
    jb_z(&b, "}\n\n");
    *bp = b;
}

/* ---------------------------------------------------------------- small HTTP helpers */

static void respond_err(sg_http_req_t *req, int status, const char *code, const char *msg)
{
    jb_t b = {0};
    jb_z(&b, "{\"code\":");
    jb_strz(&b, code);
    if (msg && *msg) {
        jb_z(&b, ",\"message\":");
        jb_strz(&b, msg);
    }
    jb_z(&b, "}");
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/json; charset=utf-8");
    sg_http_respond(req, status, &h, b.p, b.len);
    sg_hdrs_free(&h);
    free(b.p);
}

static void respond_jb(sg_http_req_t *req, int status, jb_t *b)
{
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type", "application/json; charset=utf-8");
    sg_http_respond(req, status, &h, b->p, b->len);
    sg_hdrs_free(&h);
    free(b->p);
}

/* An integral double that fits int64 (casting anything else is undefined). */
static int real_is_int(double d)
{
    return d > -9.2e18 && d < 9.2e18 && d == floor(d);
}

/* Go's decoding error for a member of the wrong JSON type. */
static int want_type(const json_t *obj, const char *key, int type, const char *gostruct,
                     const char *gotype, char *msg, size_t mlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    int ok;
    switch (type) {
    case JSON_STRING: ok = json_is_string(v); break;
    case JSON_TRUE: ok = json_is_boolean(v); break;
    case JSON_OBJECT: ok = json_is_object(v); break;
    default: ok = json_is_integer(v) || (json_is_real(v) && real_is_int(json_real_value(v))); break;
    }
    if (ok) return 0;
    const char *got = json_is_string(v)    ? "string"
                      : json_is_boolean(v) ? "bool"
                      : json_is_array(v)   ? "array"
                      : json_is_object(v)  ? "object"
                                           : "number";
    snprintf(msg, mlen,
             "error parsing request, MAYBE invalid body format. json: cannot unmarshal %s into Go "
             "struct field %s.%s of type %s",
             got, gostruct, key, gotype);
    return -1;
}

static long long num_of(const json_t *v)
{
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_real(v) && real_is_int(json_real_value(v))) return (long long)json_real_value(v);
    return 0;
}

/* Parses a request body that must be a JSON object (an empty body allowed when empty_ok). */
static json_t *parse_body(sg_http_req_t *req, const char *body, size_t len, int empty_ok)
{
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (i == len) {
        if (empty_ok) return json_object();
        respond_err(req, 400, "INVALID_REQUEST_BODY",
                    "error parsing request, MAYBE invalid body format. EOF");
        return NULL;
    }
    json_t *j = NULL;
    sg_json_err_t je;
    sg_json_err_init(&je);
    char msg[512];
    if (sg_json_parse(body, len, BODY_MAX, &j, &je) < 0) {
        snprintf(msg, sizeof(msg), "error parsing request, MAYBE invalid body format. %s",
                 je.message);
        respond_err(req, 400, "INVALID_REQUEST_BODY", msg);
        return NULL;
    }
    if (!json_is_object(j)) {
        snprintf(msg, sizeof(msg),
                 "error parsing request, MAYBE invalid body format. json: cannot unmarshal %s "
                 "into Go value of type object",
                 sg_json_type_name(j));
        respond_err(req, 400, "INVALID_REQUEST_BODY", msg);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* ---------------------------------------------------------------- SSE streams */

static void stream_maybe_free(stream_t *s)
{
    if (s->req || !s->run_done || s->reading) return;
    sg_tentry_disarm(&s->ping);
    SG_DLIST_DEL(s->m->streams, s);
    sg_run_split_free(s->split);
    free(s->ev.p);
    free(s);
}

/* Holds / releases the command's output. Only while the run is on (afterwards the runner has
 * forgotten it) and the runner is open (sg_execd_commands_stop runs after it closed). */
static void stream_hold(stream_t *s, int hold)
{
    if (s->held == hold) return;
    s->held = hold;
    if (!s->run_done && !s->m->stopped && !s->follow) sg_runner_hold(s->m->x->runner, s, hold);
}

static void follow_pump(stream_t *s);

/* Output fell to half the high-water mark: read the command's pipes (or its log) again. */
static void stream_on_drain(sg_http_req_t *req)
{
    stream_t *s = sg_http_req_data(req);
    if (!s) return;
    stream_hold(s, 0);
    if (s->follow) follow_pump(s);
}

/* The HTTP side is over (ended, cut or aborted): no more writes. The hold goes too, or a
 * command whose client left would block on its pipes for good. */
static void stream_detach(stream_t *s, int release)
{
    sg_http_req_t *req = s->req;
    if (!req) return;
    stream_hold(s, 0);
    if (s->follow && s->waiting && !s->m->stopped) sg_runner_log_unwait(s->m->x->runner, s);
    s->waiting = 0;
    s->req = NULL;
    sg_tentry_disarm(&s->ping);
    sg_http_req_on_abort(req, NULL);
    sg_http_req_on_drain(req, NULL);
    sg_http_req_set_data(req, NULL);
    if (release)
        sg_http_req_release(req);
    else
        sg_http_resp_end(req);
}

/* Sends the frame in s->ev. */
static void stream_emit(stream_t *s)
{
    if (s->req) {
        int r = sg_http_resp_write_copy(s->req, s->ev.p, s->ev.len);
        if (r == 1) stream_hold(s, 1); /* queued; stop the command until the drain */
        if (r >= 0 && sg_http_resp_pending(s->req) > s->m->x->cfg.max_stream_buffer) {
            /* Only what came after a hold, e.g. one read of many short lines, or a huge line. */
            sg_log_kv(SG_LOG_WARN, "slow client dropped: stream buffer full", "id", s->id,
                      "request_id", sg_http_req_id(s->req), NULL);
            stream_detach(s, 1);
        }
        /* r < 0: the client is gone; the abort callback follows from the loop. */
    }
    /* A huge line's buffer is not kept for the rest of the stream. */
    if (s->ev.cap > 256 * 1024) {
        free(s->ev.p);
        memset(&s->ev, 0, sizeof(s->ev));
    }
}

static void emit_simple(stream_t *s, const char *type, const char *text, size_t tlen,
                        uint64_t exec_ms)
{
    ev_simple(&s->ev, type, text, tlen, exec_ms);
    stream_emit(s);
}
static void emit_error(stream_t *s, const char *evalue, const char *trace)
{
    ev_error(&s->ev, evalue, trace);
    stream_emit(s);
}
static void emit_raw(stream_t *s, sg_run_stream_t st, const char *data, size_t len, uint64_t off,
                     uint64_t comb)
{
    ev_raw(&s->ev, st, data, len, off, comb);
    stream_emit(s);
}

static void stream_on_abort(sg_http_req_t *req)
{
    stream_t *s = sg_http_req_data(req);
    if (!s) return;
    stream_detach(s, 1);
    stream_maybe_free(s);
}

static void stream_on_ping(sg_tentry_t *e)
{
    stream_t *s = SG_CONTAINER_OF(e, stream_t, ping);
    if (!s->req) return;
    emit_simple(s, "ping", "pong", 4, 0);
    if (s->req) sg_tentry_arm(&s->m->pings, &s->ping);
}

static void stream_on_chunk(void *ud, sg_run_stream_t st, const char *data, size_t len,
                            uint64_t off, uint64_t comb)
{
    stream_t *s = ud;
    if (s->raw && s->req) emit_raw(s, st, data, len, off, comb);
}

static void stream_on_line(void *ud, sg_run_stream_t st, const char *text, size_t len)
{
    stream_t *s = ud;
    if (!s->req || len == 0) return;
    emit_simple(s, st == SG_RUN_STDERR ? "stderr" : "stdout", text, len, 0);
}

static void stream_final(stream_t *s, int exit_code, const char *error, uint64_t exec_ms)
{
    if (s->req) {
        if (exit_code == 0 && (!error || !*error)) {
            emit_simple(s, "execution_complete", NULL, 0, exec_ms);
        } else {
            char ev[32];
            snprintf(ev, sizeof(ev), "%d", exit_code);
            emit_error(s, ev, error && *error ? error : ev);
        }
    }
    /* Go sleeps ApiGracefulShutdownTimeout here; we end at once (docs/execd.md). */
    stream_detach(s, 0);
}

static void stream_on_done(void *ud, const sg_run_result_t *res)
{
    stream_t *s = ud;
    s->run_done = 1;
    stream_final(s, res->exit_code, res->error, res->exec_ms);
    stream_maybe_free(s);
}

static stream_t *stream_new(struct sg_execd_cmds *m, sg_http_req_t *req, int raw)
{
    stream_t *s = sg_xcalloc(1, sizeof(*s));
    s->m = m;
    s->req = req;
    s->raw = raw;
    sg_tentry_init(&s->ping, stream_on_ping);
    SG_DLIST_ADD(m->streams, s);
    sg_http_req_set_data(req, s);
    sg_http_req_on_abort(req, stream_on_abort);
    sg_http_req_on_drain(req, stream_on_drain);
    return s;
}

/* Head (reference 2.4), init (text = id), ping, and the 3 s ping timer. */
static void stream_open_h(stream_t *s, const char *id, const char *xname, const char *xval)
{
    snprintf(s->id, sizeof(s->id), "%s", id);
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    if (xname) sg_hdrs_addz(&h, xname, xval);
    sg_hdrs_addz(&h, "Cache-Control", "no-cache");
    sg_hdrs_addz(&h, "Connection", "keep-alive");
    sg_hdrs_addz(&h, "Content-Type", "text/event-stream");
    sg_hdrs_addz(&h, "X-Accel-Buffering", "no");
    int r = sg_http_resp_start(s->req, 200, &h);
    sg_hdrs_free(&h);
    if (r < 0) {
        stream_detach(s, 1);
        return;
    }
    emit_simple(s, "init", id, strlen(id), 0);
    if (s->req) emit_simple(s, "ping", "pong", 4, 0);
    if (s->req) sg_tentry_arm(&s->m->pings, &s->ping);
}

static void stream_open(stream_t *s, const char *id)
{
    stream_open_h(s, id, NULL, NULL);
}

static const sg_run_cbs_t *stream_cbs(stream_t *s, sg_run_cbs_t *cbs)
{
    cbs->on_chunk = s->raw ? stream_on_chunk : NULL;
    cbs->on_line = stream_on_line;
    cbs->on_done = stream_on_done;
    cbs->ud = s;
    return cbs;
}

/* A boolean extension switch: header (1/true, 0/false) or "sandgate":{key:bool} in the body;
 * dflt when neither says. */
static int want_flag(sg_http_req_t *req, const char *header, const json_t *body, const char *key,
                     int dflt)
{
    const char *h = sg_http_req_header(req, header);
    if (h && (strcmp(h, "1") == 0 || strcasecmp(h, "true") == 0)) return 1;
    if (h && (strcmp(h, "0") == 0 || strcasecmp(h, "false") == 0)) return 0;
    json_t *sg = body ? json_object_get(body, "sandgate") : NULL;
    json_t *v = json_is_object(sg) ? json_object_get(sg, key) : NULL;
    if (json_is_boolean(v)) return json_is_true(v);
    return dflt;
}

static int want_raw(sg_http_req_t *req, const json_t *body)
{
    return want_flag(req, "X-Sandgate-Raw", body, "raw", 0);
}

/* ---------------------------------------------------------------- POST /command */

static void command_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    sg_execd_t *x = ud;
    struct sg_execd_cmds *m = x->cmds;
    if (err == SG_ETOOBIG) return;
    if (err < 0 || !m) {
        sg_http_req_release(req);
        return;
    }
    json_t *j = parse_body(req, body, len, 0);
    if (!j) return;
    char msg[512];
    static const char *GS = "RunCommandRequest";
    if (want_type(j, "command", JSON_STRING, GS, "string", msg, sizeof(msg)) ||
        want_type(j, "cwd", JSON_STRING, GS, "string", msg, sizeof(msg)) ||
        want_type(j, "background", JSON_TRUE, GS, "bool", msg, sizeof(msg)) ||
        want_type(j, "timeout", JSON_INTEGER, GS, "int64", msg, sizeof(msg)) ||
        want_type(j, "uid", JSON_INTEGER, GS, "uint32", msg, sizeof(msg)) ||
        want_type(j, "gid", JSON_INTEGER, GS, "uint32", msg, sizeof(msg)) ||
        want_type(j, "envs", JSON_OBJECT, GS, "map[string]string", msg, sizeof(msg))) {
        respond_err(req, 400, "INVALID_REQUEST_BODY", msg);
        json_decref(j);
        return;
    }
    sg_run_req_t rq;
    memset(&rq, 0, sizeof(rq));
    json_t *v;
    rq.command = json_string_value(json_object_get(j, "command"));
    if (!rq.command) rq.command = "";
    rq.cwd = json_string_value(json_object_get(j, "cwd"));
    if (rq.cwd && !*rq.cwd) rq.cwd = NULL;
    rq.background = json_is_true(json_object_get(j, "background"));
    rq.keep_log = want_flag(req, "X-Sandgate-Keep-Log", j, "keep_log", 0);
    msg[0] = '\0';
    if ((v = json_object_get(j, "timeout")) && !json_is_null(v)) {
        long long t = num_of(v);
        if (t < 0)
            snprintf(msg, sizeof(msg),
                     "invalid request, validation error timeout must be >= 0, got %lld", t);
        rq.timeout_ms = t > 0 ? (uint64_t)t : 0;
    }
    if ((v = json_object_get(j, "uid")) && !json_is_null(v)) {
        long long u = num_of(v);
        if (u < 0 || u > UINT32_MAX)
            snprintf(msg, sizeof(msg),
                     "error parsing request, MAYBE invalid body format. json: cannot unmarshal "
                     "number %lld into Go struct field %s.uid of type uint32",
                     u, GS);
        rq.has_uid = 1;
        rq.uid = (uint32_t)u;
    }
    if ((v = json_object_get(j, "gid")) && !json_is_null(v)) {
        long long g = num_of(v);
        if (g < 0 || g > UINT32_MAX)
            snprintf(msg, sizeof(msg),
                     "error parsing request, MAYBE invalid body format. json: cannot unmarshal "
                     "number %lld into Go struct field %s.gid of type uint32",
                     g, GS);
        rq.has_gid = 1;
        rq.gid = (uint32_t)g;
    }
    sg_run_env_t *envs = NULL;
    json_t *eo = json_object_get(j, "envs");
    if (json_is_object(eo) && json_object_size(eo)) {
        envs = sg_xcalloc(json_object_size(eo), sizeof(*envs));
        const char *k;
        json_object_foreach(eo, k, v)
        {
            if (json_is_null(v)) continue;
            if (!json_is_string(v)) {
                snprintf(msg, sizeof(msg),
                         "error parsing request, MAYBE invalid body format. json: cannot "
                         "unmarshal %s into Go struct field %s.envs of type string",
                         sg_json_type_name(v), GS);
                break;
            }
            envs[rq.n_envs].key = k;
            envs[rq.n_envs].value = json_string_value(v);
            rq.n_envs++;
        }
    }
    rq.envs = envs;
    if (msg[0]) {
        respond_err(req, 400, "INVALID_REQUEST_BODY", msg);
        goto out;
    }
    int raw = want_raw(req, j);

    stream_t *s = stream_new(m, req, raw);
    sg_run_cbs_t cbs;
    char id[SG_RUN_ID_LEN + 1] = "";
    sg_run_err_t rerr;
    memset(&rerr, 0, sizeof(rerr));
    int r = sg_runner_start(x->runner, &rq, rq.background ? NULL : stream_cbs(s, &cbs), id, &rerr);
    if (r == 0 && !rq.background) {
        stream_open(s, id);
        goto out; /* on_done finishes the stream */
    }
    s->run_done = 1;
    if (r == 0) {
        /* Background (2.6): init, ping, execution_complete at once; output only via logs. */
        stream_open(s, id);
        if (s->req) emit_simple(s, "execution_complete", NULL, 0, 0);
        stream_detach(s, 0);
    } else if (id[0]) {
        /* Start failure after the record exists (missing shell, bad uid): an error event, so
         * a client's exit code is null (evalue is not numeric), as with Go. */
        stream_open(s, id);
        if (s->req) emit_error(s, rerr.msg, rerr.msg);
        stream_detach(s, 0);
    } else {
        sg_http_req_on_abort(req, NULL);
        sg_http_req_on_drain(req, NULL);
        sg_http_req_set_data(req, NULL);
        s->req = NULL;
        if (r == SG_EINVAL)
            respond_err(req, 400, "INVALID_REQUEST_BODY", rerr.msg);
        else if (r == SG_ETOOBIG)
            respond_err(req, 503, "RUNTIME_ERROR", rerr.msg);
        else
            respond_err(req, 500, "RUNTIME_ERROR", rerr.msg);
    }
    stream_maybe_free(s);
out:
    free(envs);
    json_decref(j);
}

/* ---------------------------------------------------------------- DELETE /command?id= */

static void intr_free(intr_t *it)
{
    SG_DLIST_DEL(it->m->intrs, it);
    free(it);
}

static void intr_done(void *ud)
{
    intr_t *it = ud;
    sg_http_req_on_abort(it->req, NULL);
    sg_http_req_set_data(it->req, NULL);
    sg_http_respond(it->req, 200, NULL, NULL, 0);
    intr_free(it);
}

static void intr_on_abort(sg_http_req_t *req)
{
    intr_t *it = sg_http_req_data(req);
    if (!it) return;
    sg_runner_forget(it->m->x->runner, it);
    sg_http_req_set_data(req, NULL);
    sg_http_req_release(req);
    intr_free(it);
}

static void command_interrupt(sg_execd_t *x, sg_http_req_t *req)
{
    char id[128];
    if (sg_http_req_query_param(req, "id", id, sizeof(id)) <= 0) {
        respond_err(req, 400, "MISSING_QUERY", "missing query parameter 'id'");
        return;
    }
    intr_t *it = sg_xcalloc(1, sizeof(*it));
    it->m = x->cmds;
    it->req = req;
    SG_DLIST_ADD(x->cmds->intrs, it);
    sg_http_req_set_data(req, it);
    sg_http_req_on_abort(req, intr_on_abort);
    sg_run_err_t err;
    int r = sg_runner_interrupt(x->runner, id, intr_done, it, &err);
    if (r < 0) {
        sg_http_req_on_abort(req, NULL);
        sg_http_req_set_data(req, NULL);
        intr_free(it);
        respond_err(req, 500, "RUNTIME_ERROR", err.msg);
    }
    /* r == 0: intr_done answers, maybe already did (a session with no run in progress). */
}

/* ---------------------------------------------------------------- POST /command/{id}/signal */

typedef struct id_ctx {
    sg_execd_t *x;
    char id[72];
} id_ctx_t;

/* Reads req's whole body, then cb(req, ..., ud) with ud an id_ctx_t for id (id_ctx_take). */
static void read_body_with_id(sg_execd_t *x, sg_http_req_t *req, const char *id,
                              sg_http_body_all_cb cb)
{
    id_ctx_t *c = sg_xcalloc(1, sizeof(*c));
    c->x = x;
    snprintf(c->id, sizeof(c->id), "%s", id);
    if (sg_http_req_read_all(req, BODY_MAX, cb, c) < 0) {
        free(c);
        sg_http_req_release(req);
    }
}

/* Copies the id out of ud, frees it, returns the execd. */
static sg_execd_t *id_ctx_take(void *ud, char id[72])
{
    id_ctx_t *c = ud;
    sg_execd_t *x = c->x;
    memcpy(id, c->id, sizeof(c->id));
    free(c);
    return x;
}

/* The body's "signal": a name (sg_runner_signum) or a JSON integer; SG_EINVAL with msg set. */
static int signal_of(const json_t *j, char *msg, size_t mlen)
{
    json_t *v = json_object_get(j, "signal");
    if (!v || json_is_null(v)) {
        snprintf(msg, mlen, "invalid request, validation error signal is required");
        return SG_EINVAL;
    }
    int n = SG_EINVAL;
    if (json_is_string(v)) {
        n = sg_runner_signum(json_string_value(v));
        if (n < 0)
            snprintf(msg, mlen,
                     "invalid request, validation error unknown signal \"%.64s\": want a name "
                     "like \"TERM\" or \"SIGTERM\", or a number 1..%d",
                     json_string_value(v), SG_RUN_SIG_MAX);
        return n;
    }
    if (json_is_integer(v) || (json_is_real(v) && real_is_int(json_real_value(v)))) {
        long long k = num_of(v);
        if (k >= 1 && k <= SG_RUN_SIG_MAX) return (int)k;
        snprintf(msg, mlen, "invalid request, validation error signal %lld is not in 1..%d", k,
                 SG_RUN_SIG_MAX);
        return SG_EINVAL;
    }
    snprintf(msg, mlen,
             "invalid request, validation error signal must be a name or an integer, got %s",
             sg_json_type_name(v));
    return SG_EINVAL;
}

static void command_signal_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    char id[72];
    sg_execd_t *x = id_ctx_take(ud, id);
    if (err == SG_ETOOBIG) return;
    if (err < 0 || !x->cmds) {
        sg_http_req_release(req);
        return;
    }
    json_t *j = parse_body(req, body, len, 0);
    if (!j) return;
    char msg[512];
    int signo = signal_of(j, msg, sizeof(msg));
    json_decref(j);
    if (signo < 0) {
        respond_err(req, 400, "INVALID_REQUEST_BODY", msg);
        return;
    }
    sg_run_err_t rerr;
    int r = sg_runner_signal(x->runner, id, signo, &rerr);
    if (r == SG_ENOTFOUND)
        respond_err(req, 404, "COMMAND_NOT_FOUND", rerr.msg);
    else if (r == UV_ESRCH)
        respond_err(req, 409, "COMMAND_NOT_RUNNING", rerr.msg);
    else if (r == SG_EINVAL)
        respond_err(req, 400, "INVALID_REQUEST_BODY", rerr.msg);
    else if (r < 0)
        respond_err(req, 500, "RUNTIME_ERROR", rerr.msg);
    else {
        /* 202: delivered to the group; what the command does with it shows in its stream. */
        jb_t b = {0};
        jb_z(&b, "{\"id\":");
        jb_strz(&b, id);
        jb_z(&b, ",\"signal\":");
        jb_i64(&b, signo);
        jb_z(&b, "}");
        respond_jb(req, 202, &b);
    }
}

static void command_signal(sg_execd_t *x, sg_http_req_t *req, const char *id)
{
    read_body_with_id(x, req, id, command_signal_body);
}

/* ---------------------------------------------------------------- GET /command/status/{id} */

static void command_status(sg_execd_t *x, sg_http_req_t *req, const char *id)
{
    sg_run_status_t st;
    sg_run_err_t err;
    if (sg_runner_status(x->runner, id, &st, &err) < 0) {
        respond_err(req, 404, "INVALID_REQUEST_BODY", err.msg);
        return;
    }
    char t[64];
    jb_t b = {0};
    jb_z(&b, "{\"id\":");
    jb_strz(&b, st.id);
    if (st.content && *st.content) {
        jb_z(&b, ",\"content\":");
        jb_strz(&b, st.content);
    }
    jb_z(&b, st.running ? ",\"running\":true" : ",\"running\":false");
    if (st.has_exit) {
        jb_z(&b, ",\"exit_code\":");
        jb_i64(&b, st.exit_code);
    }
    if (st.error && *st.error) {
        jb_z(&b, ",\"error\":");
        jb_strz(&b, st.error);
    }
    if (st.signalled) { /* extension, only after POST /command/{id}/signal */
        jb_z(&b, ",\"signal\":");
        jb_i64(&b, st.signalled);
    }
    rfc3339nano(st.started_ns, t);
    jb_z(&b, ",\"started_at\":");
    jb_strz(&b, t);
    if (st.finished_ns) {
        rfc3339nano(st.finished_ns, t);
        jb_z(&b, ",\"finished_at\":");
        jb_strz(&b, t);
    }
    jb_z(&b, "}");
    respond_jb(req, 200, &b);
}

/* ---------------------------------------------------------------- logs / raw */

static void logop_free(logop_t *op)
{
    SG_DLIST_DEL(op->m->logops, op);
    free(op);
}

static void logop_next(logop_t *op);

static void logop_on_read(void *ud, int err, const char *data, size_t len, uint64_t next)
{
    logop_t *op = ud;
    op->reading = 0;
    if (op->aborted) {
        logop_free(op);
        return;
    }
    if (err < 0 || len == 0) {
        /* Cannot happen for bytes the record accepted; cut rather than send a short body. */
        sg_log_kv(SG_LOG_WARN, "log read ended early", "id", op->id, "error",
                  err < 0 ? sg_strerror(err) : "eof", NULL);
        sg_http_req_on_abort(op->req, NULL);
        sg_http_req_release(op->req);
        logop_free(op);
        return;
    }
    size_t take = (size_t)SG_MIN((uint64_t)len, op->end - op->pos);
    int r = sg_http_resp_write_copy(op->req, data, take);
    op->pos = next > op->pos + take ? op->pos + take : next;
    if (r < 0) return; /* the abort callback frees */
    if (r == 1) {
        op->waiting_drain = 1;
        return;
    }
    logop_next(op);
}

static void logop_next(logop_t *op)
{
    if (op->pos >= op->end) {
        sg_http_req_on_abort(op->req, NULL);
        sg_http_req_on_drain(op->req, NULL);
        sg_http_resp_end(op->req);
        logop_free(op);
        return;
    }
    sg_run_err_t err;
    size_t want = (size_t)SG_MIN((uint64_t)LOG_PIECE, op->end - op->pos);
    if (sg_runner_log_read(op->m->x->runner, op->id, op->pos, want, logop_on_read, op, &err) < 0) {
        /* The record expired under us. */
        sg_http_req_on_abort(op->req, NULL);
        sg_http_req_release(op->req);
        logop_free(op);
        return;
    }
    op->reading = 1;
}

static void logop_on_drain(sg_http_req_t *req)
{
    logop_t *op = sg_http_req_data(req);
    if (!op || !op->waiting_drain) return;
    op->waiting_drain = 0;
    logop_next(op);
}

static void logop_on_abort(sg_http_req_t *req)
{
    logop_t *op = sg_http_req_data(req);
    if (!op) return;
    sg_http_req_set_data(req, NULL);
    sg_http_req_release(req);
    op->aborted = 1;
    if (!op->reading) logop_free(op);
}

/* GET /command/{id}/logs?cursor=N (text, Go's semantics) and the extension
 * GET /command/{id}/raw?offset=N (octet-stream): bytes [cursor, size at request time). */
static void command_logs(sg_execd_t *x, sg_http_req_t *req, const char *id, int raw)
{
    char q[64];
    long long cursor = 0;
    int n = sg_http_req_query_param(req, raw ? "offset" : "cursor", q, sizeof(q));
    if (n > 0) {
        char *end;
        errno = 0;
        long long c = strtoll(q, &end, 10);
        if (*end == '\0' && errno == 0) cursor = c; /* unparsable -> 0, as Go */
        if (cursor < 0) {
            respond_err(req, 400, "INVALID_REQUEST_BODY", "cursor must be a non-negative integer");
            return;
        }
    }
    sg_run_status_t st;
    sg_run_err_t err;
    if (sg_runner_status(x->runner, id, &st, &err) < 0) {
        respond_err(req, 400, "INVALID_REQUEST_BODY", err.msg);
        return;
    }
    if (raw ? !st.has_log : !st.background) {
        snprintf(err.msg, sizeof(err.msg), "command %s is not running in background", id);
        respond_err(req, 400, "INVALID_REQUEST_BODY", err.msg);
        return;
    }
    uint64_t end = st.log_size;
    uint64_t pos = (uint64_t)cursor;
    char hv[32], lv[32];
    snprintf(hv, sizeof(hv), "%llu", (unsigned long long)(pos >= end ? pos : end));
    snprintf(lv, sizeof(lv), "%llu", (unsigned long long)(pos >= end ? 0 : end - pos));
    sg_hdrs_t h;
    sg_hdrs_init(&h);
    sg_hdrs_addz(&h, "Content-Type",
                 raw ? "application/octet-stream" : "text/plain; charset=utf-8");
    sg_hdrs_addz(&h, "EXECD-COMMANDS-TAIL-CURSOR", hv);
    if (raw) sg_hdrs_addz(&h, "X-Sandgate-Running", st.running ? "1" : "0");
    if (pos >= end) {
        sg_http_respond(req, 200, &h, NULL, 0);
        sg_hdrs_free(&h);
        return;
    }
    sg_hdrs_addz(&h, "Content-Length", lv);
    int r = sg_http_resp_start(req, 200, &h);
    sg_hdrs_free(&h);
    if (r < 0) {
        sg_http_req_release(req);
        return;
    }
    logop_t *op = sg_xcalloc(1, sizeof(*op));
    op->m = x->cmds;
    op->req = req;
    snprintf(op->id, sizeof(op->id), "%s", id);
    op->pos = pos;
    op->end = end;
    SG_DLIST_ADD(x->cmds->logops, op);
    sg_http_req_set_data(req, op);
    sg_http_req_on_abort(req, logop_on_abort);
    sg_http_req_on_drain(req, logop_on_drain);
    logop_next(op);
}

/* ---------------------------------------------------------------- GET /command/{id}/stream */

/* The record went away under a re-attached stream (expiry, eviction) or its log cannot be
 * read: cut the connection (no terminating chunk), so the client knows it did not get the
 * end and can ask again. */
static void follow_lost(stream_t *s, const char *why)
{
    sg_log_kv(SG_LOG_WARN, "re-attached stream cut", "id", s->id, "reason", why, NULL);
    stream_detach(s, 1);
}

static void follow_line(void *ud, sg_run_stream_t st, const char *text, size_t len)
{
    stream_on_line(ud, st, text, len);
}

/* Log bytes [cursor, cursor + len) as events: one raw event per stream run (the log's stream
 * index says where the stream switches), then the lines they complete, as a POST stream
 * orders them. */
static void follow_emit(stream_t *s, const char *data, size_t len)
{
    sg_runner_t *r = s->m->x->runner;
    uint64_t off = s->cursor;
    size_t i = 0;
    while (i < len && s->req) {
        sg_run_stream_t st = SG_RUN_STDOUT;
        uint64_t soff = 0, run_end = UINT64_MAX;
        int known = sg_runner_log_stream(r, s->id, off, &st, &soff, &run_end) == 0;
        size_t n = len - i;
        if (known && run_end > off && run_end - off < n) n = (size_t)(run_end - off);
        if (s->raw) emit_raw(s, known ? st : 0, data + i, n, soff, off);
        if (s->split && s->req)
            sg_run_split_feed(s->split, known ? st : SG_RUN_STDOUT, data + i, n);
        i += n;
        off += n;
    }
}

static void follow_final(stream_t *s, const sg_run_status_t *st)
{
    if (s->split) sg_run_split_flush(s->split);
    if (!s->req) return;
    if (st->start_failed) {
        /* As the POST stream: a non-numeric evalue, so an SDK's exit code is null. */
        emit_error(s, st->error, st->error);
        stream_detach(s, 0);
        return;
    }
    stream_final(s, st->exit_code, st->error, st->exec_ms);
}

static void follow_on_read(void *ud, int err, const char *data, size_t len, uint64_t next);
static void follow_on_log(void *ud);

/* Reads on while the client keeps up: one log read at a time, none while the connection's
 * output is past the high-water mark (the drain callback pumps again). Caught up with a
 * running command, it waits for the log to move. The stream may be freed on return. */
static void follow_pump(stream_t *s)
{
    sg_runner_t *r = s->m->x->runner;
    while (s->req && !s->reading && !s->held && !s->waiting && !s->m->stopped) {
        sg_run_status_t st;
        sg_run_err_t err;
        if (sg_runner_status(r, s->id, &st, &err) < 0) {
            follow_lost(s, "record expired");
            break;
        }
        if (s->cursor < st.log_size) {
            size_t want = (size_t)SG_MIN((uint64_t)FOLLOW_PIECE, st.log_size - s->cursor);
            if (sg_runner_log_read(r, s->id, s->cursor, want, follow_on_read, s, &err) < 0) {
                follow_lost(s, err.msg);
                break;
            }
            s->reading = 1;
            break;
        }
        if ((st.log_truncated || st.log_failed) && !s->trunc_sent) {
            /* The log ends here though the output went on: say so rather than stop quietly. */
            char b[192];
            int n = snprintf(b, sizeof(b),
                             "{\"type\":\"sandgate.truncated\",\"at\":%llu,\"reason\":\"%s\","
                             "\"timestamp\":%llu}\n\n",
                             (unsigned long long)st.log_size, st.log_failed ? "error" : "cap",
                             (unsigned long long)wall_ms());
            s->ev.len = 0;
            jb_raw(&s->ev, b, (size_t)n);
            stream_emit(s);
            s->trunc_sent = 1;
            continue;
        }
        if (!st.running) {
            follow_final(s, &st);
            break;
        }
        int w = sg_runner_log_wait(r, s->id, s->cursor, follow_on_log, s, &err);
        if (w < 0) {
            follow_lost(s, err.msg);
            break;
        }
        if (w == 0) s->waiting = 1;
    }
    stream_maybe_free(s);
}

static void follow_on_read(void *ud, int err, const char *data, size_t len, uint64_t next)
{
    stream_t *s = ud;
    (void)next;
    s->reading = 0;
    if (!s->req || s->m->stopped) {
        stream_maybe_free(s);
        return;
    }
    if (err < 0 || len == 0) {
        follow_lost(s, err < 0 ? sg_strerror(err) : "log read ended early");
        stream_maybe_free(s);
        return;
    }
    follow_emit(s, data, len);
    s->cursor += len;
    follow_pump(s);
}

static void follow_on_log(void *ud)
{
    stream_t *s = ud;
    s->waiting = 0;
    follow_pump(s);
}

/* Re-attach: the command's log from byte `offset` as sandgate.raw events (and line events),
 * then its live output as it reaches the log, then the final event. */
static void command_follow(sg_execd_t *x, sg_http_req_t *req, const char *id)
{
    char q[64];
    long long offset = 0;
    if (sg_http_req_query_param(req, "offset", q, sizeof(q)) > 0) {
        char *end;
        errno = 0;
        offset = strtoll(q, &end, 10);
        if (*end != '\0' || errno != 0 || offset < 0) {
            respond_err(req, 400, "INVALID_REQUEST_BODY", "offset must be a non-negative integer");
            return;
        }
    }
    sg_run_status_t st;
    sg_run_err_t err;
    if (sg_runner_status(x->runner, id, &st, &err) < 0) {
        respond_err(req, 404, "COMMAND_NOT_FOUND", err.msg);
        return;
    }
    if (!st.has_log) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "command %s has no log: run it in background, or with X-Sandgate-Keep-Log: 1", id);
        respond_err(req, 409, "COMMAND_HAS_NO_LOG", msg);
        return;
    }
    /* Past the end: start at the end (only possible once the cap dropped bytes, which the
     * truncated event then says, or for an offset no stream ever gave). */
    uint64_t start = SG_MIN((uint64_t)offset, st.log_size);
    stream_t *s = stream_new(x->cmds, req, want_flag(req, "X-Sandgate-Raw", NULL, "raw", 1));
    s->follow = 1;
    s->run_done = 1; /* no runner callbacks carry it; `reading` keeps it alive instead */
    s->cursor = start;
    if (want_flag(req, "X-Sandgate-Lines", NULL, "lines", 1))
        s->split = sg_run_split_new(x->cfg.max_line_bytes, follow_line, s);
    char sv[32];
    snprintf(sv, sizeof(sv), "%llu", (unsigned long long)start);
    stream_open_h(s, id, "X-Sandgate-Offset", sv);
    follow_pump(s);
}

/* ---------------------------------------------------------------- sessions */

static void session_create_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    sg_execd_t *x = ud;
    if (err == SG_ETOOBIG) return;
    if (err < 0 || !x->cmds) {
        sg_http_req_release(req);
        return;
    }
    json_t *j = parse_body(req, body, len, 1);
    if (!j) return;
    char msg[512];
    if (want_type(j, "cwd", JSON_STRING, "CreateSessionRequest", "string", msg, sizeof(msg))) {
        respond_err(req, 400, "INVALID_REQUEST_BODY", msg);
        json_decref(j);
        return;
    }
    const char *cwd = json_string_value(json_object_get(j, "cwd"));
    if (cwd && !*cwd) cwd = NULL;
    char sid[SG_RUN_SID_LEN + 1];
    sg_run_err_t rerr;
    if (sg_runner_session_create(x->runner, cwd, sid, &rerr) < 0) {
        respond_err(req, 500, "RUNTIME_ERROR", rerr.msg);
    } else {
        jb_t b = {0};
        jb_z(&b, "{\"session_id\":");
        jb_strz(&b, sid);
        jb_z(&b, "}");
        respond_jb(req, 200, &b);
    }
    json_decref(j);
}

static void session_run_body(sg_http_req_t *req, int err, const char *body, size_t len, void *ud)
{
    char sid[72];
    sg_execd_t *x = id_ctx_take(ud, sid);
    if (err == SG_ETOOBIG) return;
    if (err < 0 || !x->cmds) {
        sg_http_req_release(req);
        return;
    }
    json_t *j = parse_body(req, body, len, 0);
    if (!j) return;
    char msg[512];
    static const char *GS = "RunInSessionRequest";
    if (want_type(j, "command", JSON_STRING, GS, "string", msg, sizeof(msg)) ||
        want_type(j, "cwd", JSON_STRING, GS, "string", msg, sizeof(msg)) ||
        want_type(j, "timeout", JSON_INTEGER, GS, "int64", msg, sizeof(msg))) {
        respond_err(req, 400, "INVALID_REQUEST_BODY", msg);
        json_decref(j);
        return;
    }
    const char *command = json_string_value(json_object_get(j, "command"));
    const char *cwd = json_string_value(json_object_get(j, "cwd"));
    if (cwd && !*cwd) cwd = NULL;
    long long t = num_of(json_object_get(j, "timeout"));
    if (t < 0) {
        respond_err(req, 400, "INVALID_REQUEST_BODY",
                    "invalid request, validation error timeout must be >= 0");
        json_decref(j);
        return;
    }
    stream_t *s = stream_new(x->cmds, req, want_raw(req, j));
    sg_run_cbs_t cbs;
    sg_run_err_t rerr;
    int r = sg_runner_session_run(x->runner, sid, command ? command : "", cwd, (uint64_t)t,
                                  stream_cbs(s, &cbs), &rerr);
    if (r == 0) {
        stream_open(s, sid);
    } else {
        s->run_done = 1;
        sg_http_req_on_abort(req, NULL);
        sg_http_req_on_drain(req, NULL);
        sg_http_req_set_data(req, NULL);
        s->req = NULL;
        if (r == SG_EINVAL)
            respond_err(req, 400, "INVALID_REQUEST_BODY", rerr.msg);
        else
            respond_err(req, 500, "RUNTIME_ERROR", rerr.msg);
        stream_maybe_free(s);
    }
    json_decref(j);
}

/* ---------------------------------------------------------------- routing */

static int valid_id(const char *s, size_t n)
{
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
              c == '-'))
            return 0;
    }
    return 1;
}

int sg_execd_route_commands(sg_execd_t *x, sg_http_req_t *req)
{
    const char *path = sg_http_req_path(req);
    const char *meth = sg_http_req_method(req);
    int get = strcmp(meth, "GET") == 0, post = strcmp(meth, "POST") == 0,
        del = strcmp(meth, "DELETE") == 0;
    if (strcmp(path, "/ping") == 0) {
        sg_http_respond(req, 200, NULL, NULL, 0);
        return 1;
    }
    if (strcmp(path, "/command") == 0) {
        if (post) {
            if (sg_http_req_read_all(req, BODY_MAX, command_body, x) < 0) sg_http_req_release(req);
        } else if (del)
            command_interrupt(x, req);
        else
            respond_err(req, 405, "NOT_SUPPORTED", "method not allowed");
        return 1;
    }
    if (strncmp(path, "/command/", 9) == 0) {
        const char *rest = path + 9;
        char id[72];
        if (get && strncmp(rest, "status/", 7) == 0 && valid_id(rest + 7, strlen(rest + 7))) {
            command_status(x, req, rest + 7);
            return 1;
        }
        const char *sl = strchr(rest, '/');
        if (get && sl && valid_id(rest, (size_t)(sl - rest)) &&
            (strcmp(sl, "/logs") == 0 || strcmp(sl, "/raw") == 0)) {
            memcpy(id, rest, (size_t)(sl - rest));
            id[sl - rest] = '\0';
            command_logs(x, req, id, strcmp(sl, "/raw") == 0);
            return 1;
        }
        if (sl && valid_id(rest, (size_t)(sl - rest)) && strcmp(sl, "/stream") == 0) {
            memcpy(id, rest, (size_t)(sl - rest));
            id[sl - rest] = '\0';
            if (get)
                command_follow(x, req, id);
            else
                respond_err(req, 405, "NOT_SUPPORTED", "method not allowed");
            return 1;
        }
        if (sl && valid_id(rest, (size_t)(sl - rest)) && strcmp(sl, "/signal") == 0) {
            memcpy(id, rest, (size_t)(sl - rest));
            id[sl - rest] = '\0';
            if (post)
                command_signal(x, req, id);
            else
                respond_err(req, 405, "NOT_SUPPORTED", "method not allowed");
            return 1;
        }
        return 0;
    }
    if (strcmp(path, "/session") == 0 && post) {
        if (sg_http_req_read_all(req, BODY_MAX, session_create_body, x) < 0)
            sg_http_req_release(req);
        return 1;
    }
    if (strncmp(path, "/session/", 9) == 0) {
        const char *rest = path + 9;
        const char *sl = strchr(rest, '/');
        size_t n = sl ? (size_t)(sl - rest) : strlen(rest);
        if (!valid_id(rest, n)) return 0;
        char sid[72];
        memcpy(sid, rest, n);
        sid[n] = '\0';
        if (!sl && del) {
            sg_run_err_t err;
            if (sg_runner_session_delete(x->runner, sid, &err) < 0)
                respond_err(req, 404, "CONTEXT_NOT_FOUND", err.msg);
            else
                sg_http_respond(req, 200, NULL, NULL, 0);
            return 1;
        }
        if (sl && strcmp(sl, "/run") == 0 && post) {
            read_body_with_id(x, req, sid, session_run_body);
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- lifecycle */

int sg_execd_commands_start(sg_execd_t *x)
{
    struct sg_execd_cmds *m = sg_xcalloc(1, sizeof(*m));
    m->x = x;
    sg_tlist_init(x->loop, &m->pings, PING_MS);
    x->cmds = m;
    return 0;
}

static void pings_closed(sg_tlist_t *l)
{
    free(SG_CONTAINER_OF(l, struct sg_execd_cmds, pings));
}

/* After the runner closed: no runner callback can come, so whatever is left is released. */
void sg_execd_commands_stop(sg_execd_t *x)
{
    struct sg_execd_cmds *m = x->cmds;
    if (!m) return;
    x->cmds = NULL;
    m->stopped = 1;
    while (m->streams) {
        stream_t *s = m->streams;
        stream_detach(s, 1);
        s->run_done = 1;
        s->reading = 0; /* the runner closed: every log read has called back */
        stream_maybe_free(s);
    }
    while (m->intrs) {
        intr_t *it = m->intrs;
        sg_http_req_on_abort(it->req, NULL);
        sg_http_req_set_data(it->req, NULL);
        sg_http_req_release(it->req);
        intr_free(it);
    }
    while (m->logops) {
        logop_t *op = m->logops;
        if (!op->aborted) {
            sg_http_req_on_abort(op->req, NULL);
            sg_http_req_on_drain(op->req, NULL);
            sg_http_req_set_data(op->req, NULL);
            sg_http_req_release(op->req);
        }
        logop_free(op);
    }
    sg_tlist_close(&m->pings, pings_closed);
}
