/* json.h: the thin layer over jansson every HTTP handler uses.
 *
 * Errors travel as a sg_json_err_t: a negative code (SG_EPROTO for bad JSON, SG_ETOOBIG for a
 * body over the bound, SG_EINVAL for a wrong type) and a message written for a client, ready
 * for the 400 body `{"code":"...","message":"..."}` that sg_json_error_body() builds.
 *
 * Parsing: sg_json_parse() refuses more than max_bytes before jansson sees a byte, accepts
 * any JSON value at the top (handlers check for an object with the getters), and reports
 * syntax errors as "invalid JSON at line L, column C: <what>". The caller owns the result
 * (json_decref).
 *
 * Getters: sg_json_get_*(obj, key, def, &out, err) store the member's value, or def when the
 * member is missing or JSON null; a member of the wrong type (or obj not being an object) is
 * an error "field 'key' must be <type>, not <type>". The error is sticky: once err->code is
 * set, further getters only store def and return it, so a handler can read every field and
 * check once. Strings and containers returned are borrowed from obj (no new reference).
 * int64 accepts JSON integers and integral reals that are exact in a double (|x| <= 2^53).
 *
 * Serialization is compact (no spaces) and keeps member order: sg_json_dumps() returns a
 * malloc'd NUL-terminated string, sg_json_dump_bufq() appends to a queue. Strings with invalid
 * UTF-8 cannot be stored in jansson values; sg_json_string_lossy() replaces the bad bytes with
 * U+FFFD so paths, command text and error texts can always be reported. */
#ifndef SANDGATE_JSON_H
#define SANDGATE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandgate/buf.h"

#define SG_JSON_DEFAULT_MAX_BYTES (1024u * 1024u)

typedef struct sg_json_err {
    int code;          /* 0, or a negative SG_E* code */
    char message[256]; /* NUL-terminated, for a client */
} sg_json_err_t;

void sg_json_err_init(sg_json_err_t *err);
/* Sets err (when not already set, the first error wins); returns err->code. */
int sg_json_err_set(sg_json_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* max_bytes 0 = SG_JSON_DEFAULT_MAX_BYTES. Returns 0 and *out, or the error (and *out = NULL). */
int sg_json_parse(const char *p, size_t len, size_t max_bytes, json_t **out, sg_json_err_t *err);

int sg_json_get_string(const json_t *obj, const char *key, const char *def, const char **out, sg_json_err_t *err);
int sg_json_get_int64(const json_t *obj, const char *key, int64_t def, int64_t *out, sg_json_err_t *err);
int sg_json_get_bool(const json_t *obj, const char *key, bool def, bool *out, sg_json_err_t *err);
/* def is NULL for these two: "absent" reads as NULL. */
int sg_json_get_object(const json_t *obj, const char *key, json_t **out, sg_json_err_t *err);
int sg_json_get_array(const json_t *obj, const char *key, json_t **out, sg_json_err_t *err);
/* "object", "array", "string", "integer", "number", "boolean", "null". */
const char *sg_json_type_name(const json_t *v);

/* Compact text; *len (optional) gets its length. NULL only if v is NULL. */
char *sg_json_dumps(const json_t *v, size_t *len);
int sg_json_dump_bufq(sg_bufq_t *q, const json_t *v);

json_t *sg_json_string_lossy(const char *s, size_t n);

/* {"code":"<code>","message":"<message>"}, malloc'd; either may hold any bytes. */
char *sg_json_error_body(const char *code, const char *message);

#endif
