/* sse.h: Server-Sent Events framing, both directions, in two dialects.
 *
 * Dialects
 *   standard  WHATWG text/event-stream: `id:`, `event:`, `data:` (one line per line of data),
 *             `retry:` and `:` comment lines, each event ended by a blank line. What the gateway
 *             sends to its own subscribers (ids are resumable offsets, heartbeats are comments).
 *   execd     What the OpenSandbox Go agent sends (protocol ref 2.4): one serialized JSON object
 *             on one line, then "\n\n". No `data:` prefix, no other fields.
 *
 * Encoding (who frees what)
 *   The encoders write the exact bytes of one frame. sg_sse_encode_len() sizes it,
 *   sg_sse_encode_into() appends it to a caller's sg_buf_t, sg_sse_encode_new() returns a fresh
 *   refcounted sg_buf_t holding exactly that frame (refs = 1, the caller unrefs it) and
 *   sg_sse_encode_bufq() copies it onto a queue. The stream log encodes an event once with
 *   sg_sse_encode_new() and sg_bufq_push()es the same chunk to every subscriber.
 *   Output uses LF line ends; data containing CR, LF or CRLF becomes several `data:` lines, so
 *   a decoder gives back the data with every line break normalised to LF. id and event names
 *   containing CR or LF (and ids containing NUL, which decoders ignore) are rejected with
 *   SG_EINVAL; nothing is written then. The sg_sse_execd_* variants do the same for the execd
 *   dialect and reject JSON text that does not start with '{' or contains CR / LF.
 *
 * Decoding
 *   sg_sse_decoder_t is incremental: feed it bytes split anywhere (a CRLF across two feeds, a
 *   BOM across three) and it calls on_event once per complete event, in order, with the same
 *   results whatever the split. Rules are WHATWG's ("interpreting an event stream"), on bytes:
 *     - LF, CR and CRLF end lines; a UTF-8 BOM at the very start is skipped;
 *     - empty line: dispatch when the data buffer is non-empty (trailing LF removed), event
 *       type "message" unless `event:` set it; the data and type buffers are then reset;
 *     - `:` first: a comment, given to on_comment (one leading space removed) when set;
 *     - `field:value` (one space after the colon removed), or a whole line as a field name
 *       with an empty value; `data` appends value + LF, `event` sets the type, `id` sets the
 *       last event id unless the value contains NUL (it persists across events, as in a
 *       browser), `retry` sets retry_ms when the value is all ASCII digits; other fields are
 *       ignored.
 *   Extension for execd (the one rule we add): a line whose FIRST byte is '{' is a raw JSON
 *   event. It is dispatched by itself as soon as its line ends, with type "message", the
 *   current last event id and the line as data; it does not touch the pending data / type
 *   buffers, and the blank line after it then dispatches nothing. So "{...}\n\n" is one event,
 *   and two JSON lines without a blank line between them are two events. This matches the
 *   JS SDK (protocol ref 3.4), which splits on LF and JSON.parses every line on its own
 *   (after stripping a `data:` prefix); the SDK additionally trims whitespace and accepts any
 *   JSON value, whereas a line starting with a space or '[' is an (ignored) field here.
 *   Bytes are passed through as they are (no UTF-8 validation or replacement).
 *   sg_sse_decoder_finish() is end of stream: an unterminated raw JSON line is dispatched (the
 *   SDK parses a final line at EOF, and Gin may append an error object without newline); a
 *   pending standard event is discarded, as WHATWG says.
 *
 *   Bounds: a line longer than max_line bytes (terminator excluded) or an event whose data
 *   would exceed max_event bytes fails with SG_ETOOBIG; memory never grows past those. Errors
 *   are sticky: after one, every feed returns it again. A non-zero return from on_event stops
 *   decoding and is returned by feed (and sticks) the same way.
 *   The strings a callback receives are NUL-terminated and valid only during the call; a
 *   callback must not feed, finish or free its own decoder (return non-zero to stop). */
#ifndef SANDGATE_SSE_H
#define SANDGATE_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "sandgate/buf.h"

/* ---- encoding */

typedef struct sg_sse_event {
    const char *id;      /* NULL: no `id:` line ("" resets the client's last event id) */
    const char *event;   /* NULL: no `event:` line */
    const char *data;    /* NULL: no `data:` line (a client then dispatches nothing) */
    size_t data_len;
    const char *comment; /* NULL: none; else one `:` line per line of it, before the fields */
    uint32_t retry_ms;   /* 0: no `retry:` line */
} sg_sse_event_t;

/* A frame ends with a blank line when it has an id, event, data or retry line; a comment-only
 * frame (a heartbeat: `.comment = ""` gives ":\n") is just its comment lines. */
int sg_sse_encode_len(const sg_sse_event_t *ev, size_t *len);
/* SG_ETOOBIG (b untouched) when b->cap - b->len is smaller than the frame. */
int sg_sse_encode_into(sg_buf_t *b, const sg_sse_event_t *ev);
int sg_sse_encode_new(const sg_sse_event_t *ev, sg_buf_t **out);
int sg_sse_encode_bufq(sg_bufq_t *q, const sg_sse_event_t *ev);

/* execd dialect: json (len bytes, one object) + "\n\n". */
int sg_sse_execd_len(const char *json, size_t len, size_t *out_len);
int sg_sse_execd_into(sg_buf_t *b, const char *json, size_t len);
int sg_sse_execd_new(const char *json, size_t len, sg_buf_t **out);
int sg_sse_execd_bufq(sg_bufq_t *q, const char *json, size_t len);

/* ---- decoding */

typedef struct sg_sse_msg {
    const char *id;     /* last event id ("" when none yet) */
    size_t id_len;
    const char *event;  /* "message" unless an `event:` line named it */
    const char *data;
    size_t data_len;
    int raw;            /* 1: an execd raw JSON line, 0: a standard event */
} sg_sse_msg_t;

typedef int (*sg_sse_event_cb)(void *ud, const sg_sse_msg_t *m);
typedef void (*sg_sse_comment_cb)(void *ud, const char *text, size_t len);

#define SG_SSE_DEFAULT_MAX_LINE (64u * 1024u)
#define SG_SSE_DEFAULT_MAX_EVENT (1024u * 1024u)

typedef struct sg_sse_strbuf {
    char *p;
    size_t len;
    size_t cap;
} sg_sse_strbuf_t;

typedef struct sg_sse_decoder {
    sg_sse_event_cb on_event;
    sg_sse_comment_cb on_comment; /* may be NULL */
    void *ud;
    size_t max_line;
    size_t max_event;
    int64_t retry_ms; /* last valid `retry:` value, -1 when none seen */
    /* internal state */
    sg_sse_strbuf_t line;  /* a line not yet terminated */
    sg_sse_strbuf_t data;
    sg_sse_strbuf_t type;
    sg_sse_strbuf_t id;
    unsigned bom;          /* BOM bytes matched so far; 3 = past the start */
    int after_cr;          /* the last line ended with CR: a leading LF is its CRLF */
    int err;
} sg_sse_decoder_t;

/* max_line / max_event of 0 take the defaults above. Allocates nothing until fed. */
void sg_sse_decoder_init(sg_sse_decoder_t *d, size_t max_line, size_t max_event, sg_sse_event_cb on_event,
                         sg_sse_comment_cb on_comment, void *ud);
/* 0, SG_ETOOBIG (a bound), or what on_event returned. */
int sg_sse_decoder_feed(sg_sse_decoder_t *d, const void *p, size_t n);
int sg_sse_decoder_finish(sg_sse_decoder_t *d);
void sg_sse_decoder_free(sg_sse_decoder_t *d);

#endif
