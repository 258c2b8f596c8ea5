/* http.h: what the HTTP server and client share: header lists, status texts, limits.
 *
 * A sg_hdrs_t owns copies of its names and values (NUL-terminated). Lookups are
 * case-insensitive, as HTTP field names are. */
#ifndef SANDGATE_HTTP_H
#define SANDGATE_HTTP_H

#include <stddef.h>

typedef struct sg_hdr {
    char *name;
    char *value;
} sg_hdr_t;

typedef struct sg_hdrs {
    sg_hdr_t *v;
    size_t n;
    size_t cap;
    size_t bytes; /* sum of name + value lengths, for limits */
} sg_hdrs_t;

void sg_hdrs_init(sg_hdrs_t *h);
void sg_hdrs_free(sg_hdrs_t *h);
void sg_hdrs_reset(sg_hdrs_t *h);
void sg_hdrs_add(sg_hdrs_t *h, const char *name, size_t name_len, const char *value, size_t value_len);
void sg_hdrs_addz(sg_hdrs_t *h, const char *name, const char *value);
/* Replaces every field called name by one with value. */
void sg_hdrs_set(sg_hdrs_t *h, const char *name, const char *value);
void sg_hdrs_del(sg_hdrs_t *h, const char *name);
/* First value of name, or NULL. */
const char *sg_hdrs_get(const sg_hdrs_t *h, const char *name);
/* Does a comma-separated field (Connection, Transfer-Encoding, ...) contain token? */
int sg_hdrs_has_token(const sg_hdrs_t *h, const char *name, const char *token);

const char *sg_http_status_text(int status);

#endif
