/* sandbox.c: sandbox records by tenant, their JSON shapes, filters and the metadata merge.
 * See sandbox.h for the map and the ownership rules. */
#include "sandbox.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "sandgate/common.h"

static const char *const state_names[SG_SBX_NSTATES] = {
    "Pending", "Running", "Pausing", "Paused", "Resuming", "Stopping", "Terminated", "Failed",
};

void sg_sbx_store_init(sg_sbx_store_t *st)
{
    st->tenants = NULL;
}

void sg_sbx_store_free(sg_sbx_store_t *st)
{
    sg_tenant_t *t = st->tenants;
    while (t) {
        sg_tenant_t *next = t->next;
        while (t->head)
            sg_sbx_unlink(t->head);
        free(t);
        t = next;
    }
    st->tenants = NULL;
}

sg_tenant_t *sg_sbx_tenant(sg_sbx_store_t *st, const char *name, int create)
{
    for (sg_tenant_t *t = st->tenants; t; t = t->next)
        if (strcmp(t->name, name) == 0) return t;
    if (!create || strlen(name) >= sizeof(st->tenants->name)) return NULL;
    sg_tenant_t *t = sg_xcalloc(1, sizeof(*t));
    strcpy(t->name, name);
    t->next = st->tenants;
    st->tenants = t;
    return t;
}

int64_t sg_sbx_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void sg_sbx_uuid4(char out[37])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof(b)) {
        ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
        if (n <= 0) abort(); /* no entropy source: nothing sane to do */
        got += (size_t)n;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}

sg_sandbox_t *sg_sbx_new(void)
{
    sg_sandbox_t *s = sg_xcalloc(1, sizeof(*s));
    s->refs = 1;
    sg_sbx_uuid4(s->id);
    s->created_us = s->transition_us = sg_sbx_now_us();
    s->state = SG_SBX_PENDING;
    s->metadata = json_object();
    s->env = json_object();
    s->entrypoint = json_array();
    return s;
}

sg_sandbox_t *sg_sbx_ref(sg_sandbox_t *s)
{
    s->refs++;
    return s;
}

void sg_sbx_unref(sg_sandbox_t *s)
{
    if (--s->refs > 0) return;
    free(s->image);
    json_decref(s->entrypoint);
    json_decref(s->env);
    json_decref(s->metadata);
    json_decref(s->platform);
    free(s);
}

void sg_sbx_link(sg_tenant_t *t, sg_sandbox_t *s)
{
    if (s->linked) return;
    /* Newest first: records are linked in creation order, so the head is the newest. A record
     * linked back (a failed delete) goes where its createdAt puts it. */
    sg_sandbox_t **pp = &t->head, *prev = NULL;
    while (*pp && (*pp)->created_us > s->created_us) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    s->next = *pp;
    s->prev = prev;
    if (*pp) (*pp)->prev = s;
    *pp = s;
    s->tenant = t;
    s->linked = 1;
    t->count++;
    sg_sbx_ref(s);
}

void sg_sbx_unlink(sg_sandbox_t *s)
{
    if (!s->linked) return;
    sg_tenant_t *t = s->tenant;
    if (s->prev)
        s->prev->next = s->next;
    else
        t->head = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->linked = 0;
    t->count--;
    sg_sbx_unref(s);
}

sg_sandbox_t *sg_sbx_find(sg_tenant_t *t, const char *id)
{
    /* Linear: the per-tenant count is bounded (--max-sandboxes); an index comes with SQLite. */
    if (!t) return NULL;
    for (sg_sandbox_t *s = t->head; s; s = s->next)
        if (strcmp(s->id, id) == 0) return s;
    return NULL;
}

void (*sg_sbx_changed_hook)(sg_sandbox_t *s);

void sg_sbx_set_state(sg_sandbox_t *s, sg_sbx_state_t st, const char *reason, const char *fmt, ...)
{
    if (s->state != st) s->transition_us = sg_sbx_now_us();
    s->state = st;
    snprintf(s->reason, sizeof(s->reason), "%s", reason ? reason : "");
    s->message[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->message, sizeof(s->message), fmt, ap);
        va_end(ap);
    }
    if (sg_sbx_changed_hook) sg_sbx_changed_hook(s);
}

const char *sg_sbx_state_name(sg_sbx_state_t st)
{
    return (unsigned)st < SG_SBX_NSTATES ? state_names[st] : "Unknown";
}

int sg_sbx_state_parse(const char *s)
{
    for (int i = 0; i < SG_SBX_NSTATES; i++)
        if (strcasecmp(s, state_names[i]) == 0) return i;
    return -1;
}

/* --- time */

void sg_sbx_format_time(int64_t us, char out[40])
{
    time_t sec = (time_t)(us / 1000000);
    int64_t frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        sec--;
    }
    struct tm tm;
    gmtime_r(&sec, &tm);
    /* Not strftime's %Y: years below 1000 must keep four digits to parse back. */
    int n = snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n < 0 || n >= 40) n = 0;
    if (frac)
        snprintf(out + n, 40 - (size_t)n, ".%06lldZ", (long long)frac);
    else
        snprintf(out + n, 40 - (size_t)n, "Z");
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p)) return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int sg_sbx_parse_time(const char *s, int64_t *us)
{
    const char *p = s;
    int y, mo, d, h, mi, se;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
        return SG_EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ') return SG_EINVAL;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &se))
        return SG_EINVAL;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 59)
        return SG_EINVAL;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap) return SG_EINVAL;
    int64_t frac = 0;
    if (*p == '.' || *p == ',') {
        p++;
        int nd = 0;
        if (!isdigit((unsigned char)*p)) return SG_EINVAL;
        while (isdigit((unsigned char)*p)) {
            if (nd < 6) frac = frac * 10 + (*p - '0');
            nd++;
            p++;
        }
        for (; nd < 6; nd++)
            frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh)) return SG_EINVAL;
        if (*p == ':') p++;
        if (digits(&p, 2, &om) || oh > 23 || om > 59) return SG_EINVAL;
        off = sign * (oh * 3600 + om * 60);
    }
    if (*p) return SG_EINVAL;
    int64_t secs =
        days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se - off;
    *us = secs * 1000000 + frac;
    return 0;
}

/* --- labels and metadata */

static int label_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 63) return 0;
    if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1])) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') return 0;
    return 1;
}

static int dns_subdomain_ok(const char *s, size_t n)
{
    if (n == 0 || n > 253) return 0;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-') return 0;
            label = 0;
            continue;
        }
        if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '-')) return 0;
        if (label == 0 && c == '-') return 0;
        if (++label > 63) return 0;
    }
    return label > 0 && s[n - 1] != '-';
}

int sg_sbx_label_check(const char *key, const char *value, char *msg, size_t len)
{
    const char *slash = strchr(key, '/');
    const char *name = key;
    if (slash) {
        size_t pn = (size_t)(slash - key);
        if (!dns_subdomain_ok(key, pn)) {
            snprintf(msg, len, "metadata key '%s': the prefix must be a DNS subdomain", key);
            return SG_EINVAL;
        }
        if (pn == strlen("opensandbox.io") && memcmp(key, "opensandbox.io", pn) == 0) {
            snprintf(msg, len, "metadata key '%s': the opensandbox.io/ prefix is reserved", key);
            return SG_EINVAL;
        }
        name = slash + 1;
    }
    if (!label_name_ok(name, strlen(name))) {
        snprintf(msg, len,
                 "metadata key '%s': the name must be 1..63 characters of [A-Za-z0-9-_.], "
                 "starting and ending with an alphanumeric",
                 key);
        return SG_EINVAL;
    }
    size_t vn = strlen(value);
    if (vn > 0 && !label_name_ok(value, vn)) {
        snprintf(msg, len,
                 "metadata value for '%s': at most 63 characters of [A-Za-z0-9-_.], starting "
                 "and ending with an alphanumeric",
                 key);
        return SG_EINVAL;
    }
    return 0;
}

int sg_sbx_metadata_patch(json_t *meta, const json_t *patch, char code[64], char *msg, size_t len)
{
    if (!json_is_object(patch)) {
        snprintf(code, 64, "INVALID_METADATA_FORMAT");
        snprintf(msg, len, "the metadata patch must be a JSON object of string or null values");
        return 422;
    }
    const char *k;
    json_t *v;
    /* Validate everything first so a bad member leaves the metadata untouched. */
    json_object_foreach((json_t *)patch, k, v)
    {
        if (json_is_null(v)) {
            if (strncmp(k, "opensandbox.io/", 15) == 0) {
                snprintf(code, 64, "INVALID_METADATA_LABEL");
                snprintf(msg, len, "metadata key '%s': the opensandbox.io/ prefix is reserved", k);
                return 400;
            }
            continue;
        }
        if (!json_is_string(v)) {
            snprintf(code, 64, "INVALID_METADATA_FORMAT");
            snprintf(msg, len, "metadata '%s' must be a string or null, not %s", k,
                     json_is_object(v)  ? "an object"
                     : json_is_array(v) ? "an array"
                                        : "a scalar");
            return 422;
        }
        if (sg_sbx_label_check(k, json_string_value(v), msg, len) < 0) {
            snprintf(code, 64, "INVALID_METADATA_LABEL");
            return 400;
        }
    }
    json_object_foreach((json_t *)patch, k, v)
    {
        if (json_is_null(v))
            json_object_del(meta, k);
        else
            json_object_set(meta, k, v);
    }
    return 0;
}

/* --- JSON shapes */

static void set_time(json_t *o, const char *key, int64_t us)
{
    char buf[40];
    sg_sbx_format_time(us, buf);
    json_object_set_new(o, key, json_string(buf));
}

json_t *sg_sbx_status_json(const sg_sandbox_t *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "state", json_string(sg_sbx_state_name(s->state)));
    if (s->reason[0]) json_object_set_new(o, "reason", json_string(s->reason));
    if (s->message[0]) json_object_set_new(o, "message", json_string(s->message));
    set_time(o, "lastTransitionAt", s->transition_us);
    return o;
}

json_t *sg_sbx_json(const sg_sandbox_t *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(s->id));
    if (s->image) json_object_set_new(o, "image", json_pack("{s:s}", "uri", s->image));
    if (s->platform) json_object_set(o, "platform", s->platform);
    json_object_set_new(o, "status", sg_sbx_status_json(s));
    json_object_set(o, "metadata", s->metadata);
    json_object_set(o, "entrypoint", s->entrypoint);
    if (s->expires_us) set_time(o, "expiresAt", s->expires_us);
    set_time(o, "createdAt", s->created_us);
    return o;
}

json_t *sg_sbx_create_json(const sg_sandbox_t *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(s->id));
    json_object_set_new(o, "status", sg_sbx_status_json(s));
    json_object_set(o, "metadata", s->metadata);
    if (s->platform) json_object_set(o, "platform", s->platform);
    if (s->expires_us) set_time(o, "expiresAt", s->expires_us);
    set_time(o, "createdAt", s->created_us);
    json_object_set(o, "entrypoint", s->entrypoint);
    return o;
}

/* --- listing */

static int matches(const sg_sandbox_t *s, const sg_sbx_filter_t *f)
{
    if (f->states && !(f->states & (1u << s->state))) return 0;
    if (f->metadata) {
        const char *k;
        json_t *v;
        json_object_foreach(f->metadata, k, v)
        {
            json_t *have = json_object_get(s->metadata, k);
            if (!have || !json_equal(have, v)) return 0;
        }
    }
    return 1;
}

json_t *sg_sbx_list_json(const sg_tenant_t *t, const sg_sbx_filter_t *f)
{
    json_t *items = json_array();
    int64_t total = 0;
    int64_t first = (f->page - 1) * f->page_size;
    for (const sg_sandbox_t *s = t ? t->head : NULL; s; s = s->next) {
        if (!matches(s, f)) continue;
        if (total >= first && total < first + f->page_size)
            json_array_append_new(items, sg_sbx_json(s));
        total++;
    }
    int64_t pages = total ? (total + f->page_size - 1) / f->page_size : 0;
    return json_pack("{s:o,s:{s:I,s:I,s:I,s:I,s:b}}", "items", items, "pagination", "page",
                     (json_int_t)f->page, "pageSize", (json_int_t)f->page_size, "totalItems",
                     (json_int_t)total, "totalPages", (json_int_t)pages, "hasNextPage",
                     f->page < pages);
}
