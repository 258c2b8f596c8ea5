/* prom.c: Prometheus text format writer (prom.h). Appends only; the buffer doubles as it grows,
 * so a whole scrape costs a handful of reallocations. */
#include "sandgate/prom.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"

void sg_prom_init(sg_prom_t *p)
{
    memset(p, 0, sizeof(*p));
}

void sg_prom_free(sg_prom_t *p)
{
    free(p->data);
    memset(p, 0, sizeof(*p));
}

static void reserve(sg_prom_t *p, size_t n)
{
    if (p->len + n + 1 <= p->cap) return;
    size_t cap = p->cap ? p->cap : 1024;
    while (cap < p->len + n + 1)
        cap *= 2;
    p->data = sg_xrealloc(p->data, cap);
    p->cap = cap;
}

static void put(sg_prom_t *p, const char *s, size_t n)
{
    reserve(p, n);
    memcpy(p->data + p->len, s, n);
    p->len += n;
    p->data[p->len] = '\0';
}

static void puts_(sg_prom_t *p, const char *s)
{
    put(p, s, strlen(s));
}

/* Escapes `\`, newline and, when quote, `"`. */
static void put_escaped(sg_prom_t *p, const char *s, int quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '\n')
            esc = "\\n";
        else if (quote && *s == '"')
            esc = "\\\"";
        if (!esc) continue;
        put(p, run, (size_t)(s - run));
        put(p, esc, 2);
        run = s + 1;
    }
    put(p, run, (size_t)(s - run));
}

int sg_prom_valid_name(const char *s)
{
    if (!s || !*s) return 0;
    for (const char *c = s; *c; c++) {
        int alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' || *c == ':';
        int digit = *c >= '0' && *c <= '9';
        if (!alpha && !(digit && c != s)) return 0;
    }
    return 1;
}

int sg_prom_valid_label(const char *s)
{
    if (!s || !*s || strncmp(s, "__", 2) == 0) return 0;
    for (const char *c = s; *c; c++) {
        int alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_';
        int digit = *c >= '0' && *c <= '9';
        if (!alpha && !(digit && c != s)) return 0;
    }
    return 1;
}

void sg_prom_fmt_double(char *out, size_t len, double v)
{
    if (isnan(v)) {
        snprintf(out, len, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, len, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* Whole numbers that a double holds exactly print as integers (4096000, not 4.096e+06). */
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(out, len, "%.0f", v);
        return;
    }
    /* %.17g always reads back exactly; fewer digits read more easily when they suffice. */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static const char *type_name(sg_prom_type_t t)
{
    switch (t) {
    case SG_PROM_COUNTER: return "counter";
    case SG_PROM_GAUGE: return "gauge";
    case SG_PROM_SUMMARY: return "summary";
    case SG_PROM_HISTOGRAM: return "histogram";
    case SG_PROM_UNTYPED: return "untyped";
    }
    return NULL;
}

int sg_prom_family(sg_prom_t *p, const char *name, sg_prom_type_t type, const char *help)
{
    const char *t = type_name(type);
    if (!sg_prom_valid_name(name) || !t) return SG_EINVAL;
    puts_(p, "# HELP ");
    puts_(p, name);
    puts_(p, " ");
    put_escaped(p, help ? help : "", 0);
    puts_(p, "\n# TYPE ");
    puts_(p, name);
    puts_(p, " ");
    puts_(p, t);
    puts_(p, "\n");
    return 0;
}

static int sample(sg_prom_t *p, const char *name, const char *const *labels, const char *value)
{
    if (!sg_prom_valid_name(name)) return SG_EINVAL;
    size_t n = 0;
    if (labels) {
        for (; labels[n]; n += 2) {
            if (!sg_prom_valid_label(labels[n]) || !labels[n + 1]) return SG_EINVAL;
            for (size_t j = 0; j < n; j += 2) /* a label name once per sample */
                if (strcmp(labels[j], labels[n]) == 0) return SG_EINVAL;
        }
    }
    puts_(p, name);
    if (n) {
        puts_(p, "{");
        for (size_t i = 0; i < n; i += 2) {
            if (i) puts_(p, ",");
            puts_(p, labels[i]);
            puts_(p, "=\"");
            put_escaped(p, labels[i + 1], 1);
            puts_(p, "\"");
        }
        puts_(p, "}");
    }
    puts_(p, " ");
    puts_(p, value);
    puts_(p, "\n");
    return 0;
}

int sg_prom_sample_u64(sg_prom_t *p, const char *name, const char *const *labels, uint64_t v)
{
    char b[32];
    snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
    return sample(p, name, labels, b);
}

int sg_prom_sample_f(sg_prom_t *p, const char *name, const char *const *labels, double v)
{
    char b[32];
    sg_prom_fmt_double(b, sizeof(b), v);
    return sample(p, name, labels, b);
}

int sg_prom_counter(sg_prom_t *p, const char *name, const char *help, uint64_t v)
{
    int r = sg_prom_family(p, name, SG_PROM_COUNTER, help);
    return r ? r : sg_prom_sample_u64(p, name, NULL, v);
}

int sg_prom_gauge(sg_prom_t *p, const char *name, const char *help, double v)
{
    int r = sg_prom_family(p, name, SG_PROM_GAUGE, help);
    return r ? r : sg_prom_sample_f(p, name, NULL, v);
}

int sg_prom_summary(sg_prom_t *p, const char *name, const char *help, const double *q,
                    const double *v, size_t n, double sum, uint64_t count)
{
    char sname[256], cname[256];
    if (!sg_prom_valid_name(name) || strlen(name) + 7 > sizeof(sname)) return SG_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!(q[i] >= 0 && q[i] <= 1)) return SG_EINVAL; /* also rejects NaN */
    snprintf(sname, sizeof(sname), "%s_sum", name);
    snprintf(cname, sizeof(cname), "%s_count", name);
    int r = sg_prom_family(p, name, SG_PROM_SUMMARY, help);
    if (r) return r;
    for (size_t i = 0; i < n; i++) {
        char qs[32];
        sg_prom_fmt_double(qs, sizeof(qs), q[i]);
        const char *labels[] = {"quantile", qs, NULL};
        sg_prom_sample_f(p, name, labels, v[i]);
    }
    sg_prom_sample_f(p, sname, NULL, sum);
    sg_prom_sample_u64(p, cname, NULL, count);
    return 0;
}
