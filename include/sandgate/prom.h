/* prom.h: Prometheus text exposition format 0.0.4, appended to a growable buffer.
 *
 * Map
 *   sg_prom_t          the text being built (owned, grown with sg_xrealloc; sg_prom_free).
 *   families           sg_prom_family() writes `# HELP name text` and `# TYPE name type` once,
 *                      then any number of samples of that family follow.
 *   samples            `name{l1="v1",l2="v2"} value\n`. Labels are a NULL-terminated list of
 *                      name, value pairs (NULL for none). Values are uint64 (exact) or double
 *                      (an integer when it is whole and below 2^53, else the shortest text that
 *                      parses back to the same double; NaN, +Inf, -Inf).
 *   shorthands         counter / gauge with one unlabelled sample; a summary (quantile samples
 *                      + name_sum + name_count) from values the caller computed.
 *
 * Escaping (as the format says): HELP text escapes `\` and newline; label values escape `\`,
 * `"` and newline. Metric names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* and not start with "__" (reserved): a bad name appends nothing and
 * returns SG_EINVAL, so a typo shows in a unit test instead of breaking a scraper. Every line
 * ends with '\n'. Nothing here checks that a family's TYPE comes once or before its samples:
 * that is the caller's order of calls. */
#ifndef SANDGATE_PROM_H
#define SANDGATE_PROM_H

#include <stddef.h>
#include <stdint.h>

typedef enum sg_prom_type {
    SG_PROM_COUNTER = 0,
    SG_PROM_GAUGE,
    SG_PROM_SUMMARY,
    SG_PROM_HISTOGRAM,
    SG_PROM_UNTYPED
} sg_prom_type_t;

typedef struct sg_prom {
    char *data; /* NUL-terminated; NULL until something is appended */
    size_t len;
    size_t cap;
} sg_prom_t;

#define SG_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

void sg_prom_init(sg_prom_t *p);
void sg_prom_free(sg_prom_t *p);

/* `# HELP name help` + `# TYPE name type`. 0 or SG_EINVAL (bad name). */
int sg_prom_family(sg_prom_t *p, const char *name, sg_prom_type_t type, const char *help);
/* One sample line. labels: {"k1", "v1", "k2", "v2", NULL} or NULL. 0 or SG_EINVAL. */
int sg_prom_sample_u64(sg_prom_t *p, const char *name, const char *const *labels, uint64_t v);
int sg_prom_sample_f(sg_prom_t *p, const char *name, const char *const *labels, double v);

/* Family + one unlabelled sample. */
int sg_prom_counter(sg_prom_t *p, const char *name, const char *help, uint64_t v);
int sg_prom_gauge(sg_prom_t *p, const char *name, const char *help, double v);
/* Family (type summary), then name{quantile="q[i]"} v[i] for i < n, name_sum, name_count. */
int sg_prom_summary(sg_prom_t *p, const char *name, const char *help, const double *q,
                    const double *v, size_t n, double sum, uint64_t count);

/* Pure helpers (exported for the tests). */
int sg_prom_valid_name(const char *s);
int sg_prom_valid_label(const char *s);
/* The shortest decimal text that strtod() reads back as v, or NaN / +Inf / -Inf. out >= 32. */
void sg_prom_fmt_double(char *out, size_t len, double v);

#endif
