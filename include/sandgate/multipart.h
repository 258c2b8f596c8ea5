/* multipart.h: incremental multipart/form-data parser for POST /files/upload.
 *
 * The HTTP layer feeds body bytes as they arrive, in pieces of any size; the parser calls back
 * at each part's start (with its parsed headers), with spans of the part's content, at each
 * part's end, and once at the closing delimiter. Part content is never copied: a data span
 * points into the caller's buffer, except for the few bytes held back while a piece ends with
 * what may be the start of a delimiter ("\r\n--boundary", at most boundary length + 4 bytes,
 * plus up to SG_MP_MAX_PADDING spaces after the boundary); those come from the parser's own
 * storage. So a 1 GiB file part passes through in O(1) memory. Part headers are kept, bounded
 * (bytes and count per part), and dropped when the part ends.
 *
 * Framing (RFC 2046 with Go's leniency): the preamble before the first "--boundary" line and
 * the epilogue after "--boundary--" are ignored; a delimiter line may carry spaces/tabs after
 * the boundary; if the first delimiter line ends in a bare LF, later delimiters are "\n--b"
 * instead of "\r\n--b"; part header lines may end in CRLF or LF and may be folded. Inside a
 * part, "\r\n--boundary" followed by anything but "--", padding or a line end is data.
 *
 * Backpressure: a callback returns 0 to go on, SG_MP_PAUSE to stop after this event (the write
 * to disk is in flight), or a negative code to abort. sg_mp_feed() then returns SG_MP_PAUSED
 * with *consumed telling how much of the piece it used; to resume, call sg_mp_feed() with the
 * rest of the same piece (possibly empty: held-back events are delivered first). Events are
 * never repeated and never lost across a pause.
 *
 * Errors are negative SG_E* codes; sg_mp_errmsg() has the message for the HTTP response.
 * After an error every call returns the same code. Bounds: SG_MP_DEFAULT_* (override with
 * sg_mp_limits_t). Ownership: sg_mp_new() allocates, sg_mp_free() frees; the part passed to
 * on_part_begin (and its strings) stays valid until on_part_end returns. */
#ifndef SANDGATE_MULTIPART_H
#define SANDGATE_MULTIPART_H

#include <stddef.h>

#define SG_MP_PAUSE  1 /* callback return: pause the parser after this event */
#define SG_MP_PAUSED 1 /* sg_mp_feed/sg_mp_finish return: a callback paused */

#define SG_MP_MAX_BOUNDARY             200  /* RFC 2046 says 70; Go does not check, nor do we */
#define SG_MP_MAX_PADDING              32   /* spaces/tabs allowed after a delimiter's boundary */
#define SG_MP_DEFAULT_MAX_HEADER_BYTES 8192 /* per part, all header lines together */
#define SG_MP_DEFAULT_MAX_HEADERS      16   /* header lines per part */
#define SG_MP_DEFAULT_MAX_PARTS        1000 /* parts per body */

typedef struct sg_mp sg_mp_t;

typedef struct sg_mp_header {
    const char *name; /* as sent, trimmed; compare case-insensitively */
    const char *value;
} sg_mp_header_t;

typedef struct sg_mp_part {
    size_t index;             /* 0-based position in the body */
    const char *name;         /* Content-Disposition name, NULL if absent */
    const char *filename;     /* NULL if absent, "" if present but empty; filename* (RFC 5987,
                                 percent-decoded) wins over filename when both are sent */
    const char *content_type; /* NULL if absent */
    const sg_mp_header_t *headers;
    size_t nheaders;
} sg_mp_part_t;

typedef struct sg_mp_callbacks {
    int (*on_part_begin)(sg_mp_t *mp, const sg_mp_part_t *part, void *data);
    int (*on_part_data)(sg_mp_t *mp, const char *p, size_t n, void *data); /* n > 0 */
    int (*on_part_end)(sg_mp_t *mp, void *data);
    int (*on_body_end)(sg_mp_t *mp, void *data); /* the closing delimiter was parsed */
} sg_mp_callbacks_t;

typedef struct sg_mp_limits {
    size_t max_header_bytes; /* 0 = default */
    size_t max_headers;
    size_t max_parts;
} sg_mp_limits_t;

/* Extracts the boundary parameter of a Content-Type value ("multipart/form-data;
 * boundary=..." quoted or not, any case). Writes it NUL-terminated to out (out_size must be
 * > SG_MP_MAX_BOUNDARY) and its length to *out_len. SG_EINVAL with a message when the type is
 * not multipart/form-data or the boundary is missing, empty, too long or has bad characters. */
int sg_mp_boundary(const char *content_type, size_t len, char *out, size_t out_size,
                   size_t *out_len, char *msg, size_t msg_len);

/* boundary: the parameter value (without the leading "--"). limits may be NULL. */
int sg_mp_new(sg_mp_t **out, const char *boundary, size_t len, const sg_mp_callbacks_t *cb,
              void *data, const sg_mp_limits_t *limits);
void sg_mp_free(sg_mp_t *mp); /* NULL is fine; never from inside a callback */

/* 0: all n bytes used. SG_MP_PAUSED: a callback paused; *consumed bytes were used. <0: error.
 * Bytes after the closing delimiter (the epilogue) are used and ignored. */
int sg_mp_feed(sg_mp_t *mp, const char *p, size_t n, size_t *consumed);

/* The body has ended. 0 if the closing delimiter was seen (and its events delivered),
 * SG_MP_PAUSED if held-back events paused again, else SG_EPROTO ("body ended before ..."). */
int sg_mp_finish(sg_mp_t *mp);

const char *sg_mp_errmsg(const sg_mp_t *mp); /* "" when there is no error */
int sg_mp_done(const sg_mp_t *mp);           /* 1 once the closing delimiter was parsed */
size_t sg_mp_part_count(const sg_mp_t *mp);  /* parts begun so far */

#endif
