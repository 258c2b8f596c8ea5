/* config.c: option table parsing and --help text (see config.h). */
#include "sandgate/config.h"
#include "sandgate/common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int sg_config_parse_int(const char *s, int64_t *out)
{
    if (!s || !*s) return SG_EINVAL;
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (*p < '0' || *p > '9') return SG_EINVAL; /* strtoll would skip spaces and accept "" */
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return SG_EINVAL;
    *out = v;
    return 0;
}

/* Leading decimal digits into *v; returns the count (0: none, or overflow makes it fail). */
static size_t digits(const char *s, uint64_t *v, int *overflow)
{
    size_t i = 0;
    *v = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (*v > (UINT64_MAX - d) / 10) *overflow = 1;
        else *v = *v * 10 + d;
    }
    return i;
}

int sg_config_parse_size(const char *s, uint64_t *out)
{
    if (!s) return SG_EINVAL;
    uint64_t v;
    int ovf = 0;
    size_t i = digits(s, &v, &ovf);
    if (!i || ovf) return SG_EINVAL;
    const char *u = s + i;
    unsigned shift = 0;
    switch (*u) {
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    default: break;
    }
    if (shift) {
        u++;
        if (*u == 'i' || *u == 'I') {
            u++;
            if (*u != 'b' && *u != 'B') return SG_EINVAL;
        }
    }
    if (*u == 'b' || *u == 'B') u++;
    if (*u) return SG_EINVAL;
    if (shift && v > (UINT64_MAX >> shift)) return SG_EINVAL;
    *out = v << shift;
    return 0;
}

int sg_config_parse_duration(const char *s, uint64_t *ms)
{
    if (!s || !*s) return SG_EINVAL;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    uint64_t total = 0;
    const char *p = s;
    while (*p) {
        uint64_t v;
        int ovf = 0;
        size_t i = digits(p, &v, &ovf);
        if (!i || ovf) return SG_EINVAL;
        p += i;
        uint64_t mul;
        if (p[0] == 'm' && p[1] == 's') {
            mul = 1;
            p += 2;
        } else if (*p == 's') {
            mul = 1000;
            p++;
        } else if (*p == 'm') {
            mul = 60000;
            p++;
        } else if (*p == 'h') {
            mul = 3600000;
            p++;
        } else {
            return SG_EINVAL; /* no unit: "30" could mean seconds or milliseconds */
        }
        if (v > (UINT64_MAX - total) / mul) return SG_EINVAL;
        total += v * mul;
    }
    *ms = total;
    return 0;
}

int sg_config_parse_bool(const char *s, bool *out)
{
    static const char *const T[] = {"true", "1", "yes", "on"};
    static const char *const F[] = {"false", "0", "no", "off"};
    if (!s) return SG_EINVAL;
    for (size_t i = 0; i < SG_ARRAY_SIZE(T); i++) {
        if (strcasecmp(s, T[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, F[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return SG_EINVAL;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return SG_EINVAL;
}

static const char *unit_of(sg_opt_type_t t)
{
    return t == SG_OPT_SIZE ? " bytes" : t == SG_OPT_DURATION ? " ms" : "";
}

/* Parses value for o into cfg; src names where it came from for the message. */
static int apply(const sg_opt_t *o, void *cfg, const char *value, const char *src, char *err, size_t errlen)
{
    char *field = (char *)cfg + o->offset;
    int64_t iv = 0;
    uint64_t uv = 0;
    int rc = 0;
    switch (o->type) {
    case SG_OPT_STRING:
        *(const char **)field = value;
        return 0;
    case SG_OPT_BOOL: {
        bool b;
        if (sg_config_parse_bool(value, &b))
            return fail(err, errlen, "%s: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)", src, value);
        *(bool *)field = b;
        return 0;
    }
    case SG_OPT_INT:
        if (sg_config_parse_int(value, &iv)) return fail(err, errlen, "%s: '%s' is not an integer", src, value);
        break;
    case SG_OPT_SIZE:
        rc = sg_config_parse_size(value, &uv);
        if (rc) return fail(err, errlen, "%s: '%s' is not a size (like 512, 64K, 16M, 1G)", src, value);
        break;
    case SG_OPT_DURATION:
        rc = sg_config_parse_duration(value, &uv);
        if (rc) return fail(err, errlen, "%s: '%s' is not a duration (like 250ms, 30s, 5m, 1h)", src, value);
        break;
    }
    if (o->min || o->max) {
        int out;
        if (o->type == SG_OPT_INT) out = iv < o->min || iv > o->max;
        else out = uv > (uint64_t)INT64_MAX || (int64_t)uv < o->min || (int64_t)uv > o->max;
        if (out && o->max == SG_OPT_NO_MAX)
            return fail(err, errlen, "%s: %s is below the minimum (%" PRId64 "%s)", src, value, o->min,
                        unit_of(o->type));
        if (out) {
            return fail(err, errlen, "%s: %s is out of range (%" PRId64 "..%" PRId64 "%s)", src, value, o->min, o->max,
                        unit_of(o->type));
        }
    }
    if (o->type == SG_OPT_INT) *(int64_t *)field = iv;
    else *(uint64_t *)field = uv;
    return 0;
}

static void clear(const sg_opt_t *o, void *cfg)
{
    char *field = (char *)cfg + o->offset;
    switch (o->type) {
    case SG_OPT_STRING: *(const char **)field = NULL; break;
    case SG_OPT_BOOL: *(bool *)field = false; break;
    case SG_OPT_INT: *(int64_t *)field = 0; break;
    case SG_OPT_SIZE:
    case SG_OPT_DURATION: *(uint64_t *)field = 0; break;
    }
}

/* The option called name[0..len), or NULL. */
static const sg_opt_t *find(const sg_opt_t *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0) return &opts[i];
    return NULL;
}

int sg_config_parse(const sg_opt_t *opts, size_t n, void *cfg, int argc, char **argv, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return SG_CONFIG_HELP;
    }
    char src[128];
    for (size_t i = 0; i < n; i++) {
        const sg_opt_t *o = &opts[i];
        clear(o, cfg);
        if (!o->def) continue;
        snprintf(src, sizeof src, "default of --%s", o->name);
        int rc = apply(o, cfg, o->def, src, err, errlen);
        if (rc) return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const sg_opt_t *o = &opts[i];
        const char *v = o->env ? getenv(o->env) : NULL;
        if (!v) continue;
        int rc = apply(o, cfg, v, o->env, err, errlen);
        if (rc) return rc;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            if (i + 1 < argc) return fail(err, errlen, "unexpected argument '%s'", argv[i + 1]);
            break;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0' || a[2] == '=')
            return fail(err, errlen, "unexpected argument '%s' (options are --name or --name=value)", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const sg_opt_t *o = find(opts, n, name, nlen);
        const char *value = eq ? eq + 1 : NULL;
        if (!o && !eq && nlen > 3 && strncmp(name, "no-", 3) == 0) {
            const sg_opt_t *b = find(opts, n, name + 3, nlen - 3);
            if (b && b->type == SG_OPT_BOOL) {
                o = b;
                value = "false";
            }
        }
        if (!o) return fail(err, errlen, "unknown option '--%.*s' (see --help)", (int)nlen, name);
        if (!value && o->type == SG_OPT_BOOL) value = "true";
        if (!value) {
            /* "--listen --port 1" is a forgotten value, not a listen address of "--port" */
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)
                return fail(err, errlen, "option '--%s' needs a value", o->name);
            value = argv[++i];
        }
        snprintf(src, sizeof src, "--%s", o->name);
        int rc = apply(o, cfg, value, src, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

typedef struct text {
    char *p;
    size_t len, cap;
} text_t;

static void tprintf(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(text_t *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < t->cap - t->len) {
            t->len += (size_t)k;
            return;
        }
        t->cap = t->cap * 2 + (k > 0 ? (size_t)k : 0);
        t->p = sg_xrealloc(t->p, t->cap);
    }
}

char *sg_config_help(const sg_opt_t *opts, size_t n, const char *usage)
{
    text_t t = {sg_xmalloc(1024), 0, 1024};
    t.p[0] = '\0';
    tprintf(&t, "Usage: %s\n\nOptions:\n", usage ? usage : "[options]");
    for (size_t i = 0; i < n; i++) {
        const sg_opt_t *o = &opts[i];
        char flag[96];
        if (o->type == SG_OPT_BOOL) {
            snprintf(flag, sizeof flag, "--%s, --no-%s", o->name, o->name);
        } else {
            static const char *const MV[] = {"TEXT", "N", "SIZE", "DURATION", ""};
            snprintf(flag, sizeof flag, "--%s %s", o->name, o->metavar ? o->metavar : MV[o->type]);
        }
        if (strlen(flag) > 26) tprintf(&t, "  %s\n  %-26s %s\n", flag, "", o->help ? o->help : "");
        else tprintf(&t, "  %-26s %s\n", flag, o->help ? o->help : "");
        int extra = o->env || o->def || o->min || o->max;
        if (!extra) continue;
        tprintf(&t, "  %-26s", "");
        if (o->env) tprintf(&t, " [env %s]", o->env);
        if (o->def) tprintf(&t, " [default %s]", o->def[0] ? o->def : "\"\"");
        if (o->max == SG_OPT_NO_MAX)
            tprintf(&t, " [min %" PRId64 "%s]", o->min, unit_of(o->type));
        else if (o->min || o->max)
            tprintf(&t, " [range %" PRId64 "..%" PRId64 "%s]", o->min, o->max, unit_of(o->type));
        tprintf(&t, "\n");
    }
    tprintf(&t, "  %-26s %s\n", "-h, --help", "show this help and exit");
    return t.p;
}
