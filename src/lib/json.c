/* json.c: parse with a bound, typed getters, compact dumps, error bodies (see json.h). */
#include "sandgate/json.h"
#include "sandgate/common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sg_json_err_init(sg_json_err_t *err)
{
    err->code = 0;
    err->message[0] = '\0';
}

int sg_json_err_set(sg_json_err_t *err, int code, const char *fmt, ...)
{
    if (err->code) return err->code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

int sg_json_parse(const char *p, size_t len, size_t max_bytes, json_t **out, sg_json_err_t *err)
{
    *out = NULL;
    if (!max_bytes) max_bytes = SG_JSON_DEFAULT_MAX_BYTES;
    if (len > max_bytes)
        return sg_json_err_set(err, SG_ETOOBIG, "JSON body is %zu bytes, the limit is %zu", len, max_bytes);
    if (len == 0) return sg_json_err_set(err, SG_EPROTO, "empty body, expected JSON");
    json_error_t je;
    json_t *v = json_loadb(p, len, JSON_DECODE_ANY, &je);
    if (!v) return sg_json_err_set(err, SG_EPROTO, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
    *out = v;
    return 0;
}

const char *sg_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* The member, or NULL when absent / null; sets err when obj is not an object. */
static json_t *member(const json_t *obj, const char *key, sg_json_err_t *err)
{
    if (err->code) return NULL;
    if (!json_is_object(obj)) {
        sg_json_err_set(err, SG_EINVAL, "expected a JSON object, not %s", obj ? sg_json_type_name(obj) : "nothing");
        return NULL;
    }
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static int wrong_type(sg_json_err_t *err, const char *key, const char *want, const json_t *v)
{
    return sg_json_err_set(err, SG_EINVAL, "field '%s' must be %s, not %s", key, want, sg_json_type_name(v));
}

int sg_json_get_string(const json_t *obj, const char *key, const char *def, const char **out, sg_json_err_t *err)
{
    *out = def;
    json_t *v = member(obj, key, err);
    if (err->code) return err->code;
    if (!v) return 0;
    if (!json_is_string(v)) return wrong_type(err, key, "a string", v);
    *out = json_string_value(v);
    return 0;
}

int sg_json_get_int64(const json_t *obj, const char *key, int64_t def, int64_t *out, sg_json_err_t *err)
{
    *out = def;
    json_t *v = member(obj, key, err);
    if (err->code) return err->code;
    if (!v) return 0;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
            *out = (int64_t)d;
            return 0;
        }
    }
    return wrong_type(err, key, "an integer", v);
}

int sg_json_get_bool(const json_t *obj, const char *key, bool def, bool *out, sg_json_err_t *err)
{
    *out = def;
    json_t *v = member(obj, key, err);
    if (err->code) return err->code;
    if (!v) return 0;
    if (!json_is_boolean(v)) return wrong_type(err, key, "a boolean", v);
    *out = json_is_true(v);
    return 0;
}

int sg_json_get_object(const json_t *obj, const char *key, json_t **out, sg_json_err_t *err)
{
    *out = NULL;
    json_t *v = member(obj, key, err);
    if (err->code) return err->code;
    if (!v) return 0;
    if (!json_is_object(v)) return wrong_type(err, key, "an object", v);
    *out = v;
    return 0;
}

int sg_json_get_array(const json_t *obj, const char *key, json_t **out, sg_json_err_t *err)
{
    *out = NULL;
    json_t *v = member(obj, key, err);
    if (err->code) return err->code;
    if (!v) return 0;
    if (!json_is_array(v)) return wrong_type(err, key, "an array", v);
    *out = v;
    return 0;
}

#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17))

char *sg_json_dumps(const json_t *v, size_t *len)
{
    if (!v) return NULL;
    char *s = json_dumps(v, DUMP_FLAGS);
    if (!s) { /* jansson only fails on allocation */
        fprintf(stderr, "sandgate: out of memory serializing JSON\n");
        abort();
    }
    if (len) *len = strlen(s);
    return s;
}

static int dump_cb(const char *buf, size_t size, void *data)
{
    sg_bufq_push_copy(data, buf, size);
    return 0;
}

int sg_json_dump_bufq(sg_bufq_t *q, const json_t *v)
{
    if (!v) return SG_EINVAL;
    return json_dump_callback(v, dump_cb, q, DUMP_FLAGS) == 0 ? 0 : SG_ENOMEM;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < k) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return k;
}

json_t *sg_json_string_lossy(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);
        if (!k) break;
        i += k;
    }
    if (i == n) return json_stringn(s, n);
    char *o = sg_xmalloc(n * 3 + 1); /* each bad byte becomes 3 */
    size_t m = 0;
    for (i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        if (k) {
            memcpy(o + m, s + i, k);
            m += k;
            i += k;
        } else {
            memcpy(o + m, "\xEF\xBF\xBD", 3);
            m += 3;
            i++;
        }
    }
    json_t *v = json_stringn(o, m);
    free(o);
    return v;
}

char *sg_json_error_body(const char *code, const char *message)
{
    json_t *o = json_object();
    json_object_set_new(o, "code", sg_json_string_lossy(code ? code : "", code ? strlen(code) : 0));
    json_object_set_new(o, "message", sg_json_string_lossy(message ? message : "", message ? strlen(message) : 0));
    char *s = sg_json_dumps(o, NULL);
    json_decref(o);
    return s;
}
