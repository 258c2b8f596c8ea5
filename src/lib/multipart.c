/* multipart.c: the incremental multipart/form-data parser (see multipart.h).
 *
 * Map: sg_mp_boundary() reads the Content-Type; sg_mp_feed() runs a byte state machine:
 *   PREAMBLE  discard until "--boundary" at a line start
 *   AFTER     after a boundary: "--" closes the body, [ \t]* (CR)LF starts a part, anything
 *             else means it was not a delimiter (data, or preamble)
 *   HEADERS   collect bounded header lines, then parse them and announce the part
 *   BODY      emit data spans straight from the input; a possible delimiter "\r\n--b" is
 *             tracked by its matched length only (the held-back bytes are a prefix of the
 *             delimiter itself, so they need no copy; CR/LF never occur in a boundary, so on a
 *             mismatch the only place a new match can start is the current byte)
 *   DONE      epilogue, ignored
 * Events that a callback may pause between (held-back data, part end, part begin, body end) are
 * flags delivered by flush() in that order before any further input is looked at. */
#include "sandgate/multipart.h"

#include "sandgate/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { S_PREAMBLE, S_AFTER, S_HEADERS, S_BODY, S_DONE, S_ERROR };
enum { A_NONE, A_DASH, A_PAD, A_CR };

struct sg_mp {
    sg_mp_callbacks_t cb;
    void *data;
    size_t max_hbytes, max_headers, max_parts;
    int state, sub;
    int first;         /* no delimiter line completed yet (still in the preamble) */
    int at_line_start; /* preamble: the previous byte was LF (or none yet) */
    int in_part;
    char delim[4 + SG_MP_MAX_BOUNDARY]; /* "\r\n--" boundary */
    size_t blen, doff;                  /* doff 1: delimiters are "\n--b" (bare-LF body) */
    size_t m;                           /* matched length of the delimiter (or "--b") */
    char tail[SG_MP_MAX_PADDING + 2];   /* what followed a boundary that was not a delimiter */
    size_t ntail;
    /* pending events, delivered in this order by flush() */
    size_t pend_d, pend_tail;
    int pend_end, pend_begin, pend_body_end;
    /* current part's headers: lines stored NUL-terminated in hbuf */
    char *hbuf, *dec;
    size_t hlen, cur_len, nlines;
    int cont, hcr;
    size_t *line_off;
    sg_mp_header_t *hdrs;
    sg_mp_part_t part;
    size_t nparts;
    int err;
    char errmsg[192];
};

static int set_err(sg_mp_t *mp, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mp->errmsg, sizeof(mp->errmsg), fmt, ap);
    va_end(ap);
    mp->state = S_ERROR;
    mp->err = err;
    return err;
}

static int msg_err(char *msg, size_t msg_len, const char *text)
{
    if (msg && msg_len) snprintf(msg, msg_len, "%s", text);
    return SG_EINVAL;
}

static const char *check_boundary(const char *b, size_t n)
{
    if (n == 0) return "empty multipart boundary";
    if (n > SG_MP_MAX_BOUNDARY) return "multipart boundary too long";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)b[i] < 0x20 || (unsigned char)b[i] > 0x7e)
            return "multipart boundary has invalid characters";
    if (b[n - 1] == ' ') return "multipart boundary ends in a space";
    return NULL;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* ---- Content-Type */

int sg_mp_boundary(const char *ct, size_t len, char *out, size_t out_size, size_t *out_len,
                   char *msg, size_t msg_len)
{
    static const char want[] = "multipart/form-data";
    size_t i = 0, s, e;
    while (i < len && is_ws(ct[i]))
        i++;
    s = i;
    while (i < len && ct[i] != ';')
        i++;
    e = i;
    while (e > s && is_ws(ct[e - 1]))
        e--;
    if (e - s != sizeof(want) - 1 || strncasecmp(ct + s, want, e - s) != 0)
        return msg_err(msg, msg_len, "Content-Type is not multipart/form-data");
    int found = 0;
    size_t blen = 0;
    char b[SG_MP_MAX_BOUNDARY + 1];
    while (i < len) {
        i++; /* ';' */
        while (i < len && is_ws(ct[i]))
            i++;
        size_t ns = i;
        while (i < len && ct[i] != '=' && ct[i] != ';')
            i++;
        size_t ne = i;
        while (ne > ns && is_ws(ct[ne - 1]))
            ne--;
        if (i >= len || ct[i] != '=') continue; /* valueless parameter */
        i++;
        while (i < len && is_ws(ct[i]))
            i++;
        int is_b = !found && ne - ns == 8 && strncasecmp(ct + ns, "boundary", 8) == 0;
        size_t vl = 0;
        int too_long = 0;
        if (i < len && ct[i] == '"') {
            int closed = 0;
            for (i++; i < len; i++) {
                char c = ct[i];
                if (c == '"') {
                    closed = 1;
                    i++;
                    break;
                }
                if (c == '\\' && i + 1 < len) c = ct[++i];
                if (!is_b) continue;
                if (vl < SG_MP_MAX_BOUNDARY)
                    b[vl++] = c;
                else
                    too_long = 1;
            }
            if (!closed && is_b) return msg_err(msg, msg_len, "unterminated quoted boundary");
            while (i < len && ct[i] != ';')
                i++;
        } else {
            size_t vs = i;
            while (i < len && ct[i] != ';')
                i++;
            size_t ve = i;
            while (ve > vs && is_ws(ct[ve - 1]))
                ve--;
            if (is_b) {
                vl = SG_MIN(ve - vs, (size_t)SG_MP_MAX_BOUNDARY);
                too_long = ve - vs > SG_MP_MAX_BOUNDARY;
                memcpy(b, ct + vs, vl);
            }
        }
        if (is_b) {
            if (too_long) return msg_err(msg, msg_len, "multipart boundary too long");
            found = 1;
            blen = vl;
        }
    }
    if (!found) return msg_err(msg, msg_len, "missing boundary in multipart Content-Type");
    const char *bad = check_boundary(b, blen);
    if (bad) return msg_err(msg, msg_len, bad);
    if (out_size <= blen) return msg_err(msg, msg_len, "boundary buffer too small");
    memcpy(out, b, blen);
    out[blen] = 0;
    *out_len = blen;
    return 0;
}

/* ---- lifecycle */

int sg_mp_new(sg_mp_t **out, const char *boundary, size_t len, const sg_mp_callbacks_t *cb,
              void *data, const sg_mp_limits_t *limits)
{
    *out = NULL;
    if (check_boundary(boundary, len)) return SG_EINVAL;
    sg_mp_t *mp = sg_xcalloc(1, sizeof(*mp));
    if (cb) mp->cb = *cb;
    mp->data = data;
    mp->max_hbytes = limits && limits->max_header_bytes ? limits->max_header_bytes
                                                        : SG_MP_DEFAULT_MAX_HEADER_BYTES;
    mp->max_headers =
        limits && limits->max_headers ? limits->max_headers : SG_MP_DEFAULT_MAX_HEADERS;
    mp->max_parts = limits && limits->max_parts ? limits->max_parts : SG_MP_DEFAULT_MAX_PARTS;
    memcpy(mp->delim, "\r\n--", 4);
    memcpy(mp->delim + 4, boundary, len);
    mp->blen = len;
    mp->state = S_PREAMBLE;
    mp->first = 1;
    mp->at_line_start = 1;
    mp->hbuf = sg_xmalloc(mp->max_hbytes);
    mp->dec = sg_xmalloc(mp->max_hbytes);
    mp->line_off = sg_xmalloc(mp->max_headers * sizeof(*mp->line_off));
    mp->hdrs = sg_xmalloc(mp->max_headers * sizeof(*mp->hdrs));
    mp->errmsg[0] = 0;
    *out = mp;
    return 0;
}

void sg_mp_free(sg_mp_t *mp)
{
    if (!mp) return;
    free(mp->hbuf);
    free(mp->dec);
    free(mp->line_off);
    free(mp->hdrs);
    free(mp);
}

const char *sg_mp_errmsg(const sg_mp_t *mp)
{
    return mp->errmsg;
}
int sg_mp_done(const sg_mp_t *mp)
{
    return mp->state == S_DONE;
}
size_t sg_mp_part_count(const sg_mp_t *mp)
{
    return mp->nparts;
}

/* ---- events */

static int cb_rc(sg_mp_t *mp, int rc, const char *what)
{
    if (rc == 0) return 0;
    if (rc > 0) return SG_MP_PAUSED;
    return set_err(mp, rc, "multipart upload aborted in %s: %s", what, sg_strerror(rc));
}

static int emit(sg_mp_t *mp, const char *p, size_t n)
{
    if (!n || !mp->cb.on_part_data) return 0;
    return cb_rc(mp, mp->cb.on_part_data(mp, p, n, mp->data), "part data");
}

static int flush(sg_mp_t *mp)
{
    int rc;
    if (mp->pend_d) {
        size_t k = mp->pend_d;
        mp->pend_d = 0;
        if ((rc = emit(mp, mp->delim + mp->doff, k))) return rc;
    }
    if (mp->pend_tail) {
        size_t k = mp->pend_tail;
        mp->pend_tail = 0;
        if ((rc = emit(mp, mp->tail, k))) return rc;
    }
    if (mp->pend_end) {
        mp->pend_end = 0;
        mp->in_part = 0;
        if (mp->cb.on_part_end && (rc = cb_rc(mp, mp->cb.on_part_end(mp, mp->data), "part end")))
            return rc;
    }
    if (mp->pend_begin) {
        mp->pend_begin = 0;
        mp->in_part = 1;
        if (mp->cb.on_part_begin &&
            (rc = cb_rc(mp, mp->cb.on_part_begin(mp, &mp->part, mp->data), "part begin")))
            return rc;
    }
    if (mp->pend_body_end) {
        mp->pend_body_end = 0;
        if (mp->cb.on_body_end && (rc = cb_rc(mp, mp->cb.on_body_end(mp, mp->data), "body end")))
            return rc;
    }
    return 0;
}

/* ---- part headers */

/* Reads a Content-Disposition parameter value (token or quoted-string) at v[*i] into dec. */
static char *param_value(const char *v, size_t *i, char **dec)
{
    char *out = *dec;
    size_t k = *i;
    if (v[k] == '"') {
        for (k++; v[k] && v[k] != '"'; k++) {
            if (v[k] == '\\' && v[k + 1]) k++;
            *(*dec)++ = v[k];
        }
        if (v[k] == '"') k++;
    } else {
        while (v[k] && v[k] != ';' && !is_ws(v[k]))
            *(*dec)++ = v[k++];
    }
    *(*dec)++ = 0;
    *i = k;
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* RFC 5987 ext-value: charset'lang'pct-encoded, decoded in place (bytes kept as sent). */
static char *ext_value(char *s)
{
    char *q = strchr(s, '\'');
    char *r = q ? strchr(q + 1, '\'') : NULL;
    char *src = r ? r + 1 : s, *dst = s;
    for (; *src; src++) {
        int h, l;
        if (*src == '%' && (h = hexval(src[1])) >= 0 && (l = hexval(src[2])) >= 0) {
            *dst++ = (char)(h * 16 + l);
            src += 2;
        } else {
            *dst++ = *src;
        }
    }
    *dst = 0;
    return s;
}

/* form-data; name="x"; filename="y"; filename*=UTF-8''z. Lenient: stops at what it cannot
 * read, leaving the fields it did not find NULL (Go then treats the part as unnamed). */
static void parse_disposition(sg_mp_t *mp, const char *v)
{
    char *dec = mp->dec;
    const char *filename = NULL, *filename_ext = NULL;
    size_t i = 0;
    while (v[i] && v[i] != ';')
        i++;
    while (v[i] == ';') {
        i++;
        while (is_ws(v[i]))
            i++;
        size_t ns = i;
        while (v[i] && v[i] != '=' && v[i] != ';' && !is_ws(v[i]))
            i++;
        size_t nl = i - ns;
        while (is_ws(v[i]))
            i++;
        if (v[i] != '=') continue;
        i++;
        while (is_ws(v[i]))
            i++;
        char *val = param_value(v, &i, &dec);
        if (nl == 4 && !strncasecmp(v + ns, "name", 4) && !mp->part.name)
            mp->part.name = val;
        else if (nl == 8 && !strncasecmp(v + ns, "filename", 8) && !filename)
            filename = val;
        else if (nl == 9 && !strncasecmp(v + ns, "filename*", 9) && !filename_ext)
            filename_ext = ext_value(val);
        while (is_ws(v[i]))
            i++;
        if (v[i] && v[i] != ';') break; /* junk after a value */
    }
    mp->part.filename = filename_ext ? filename_ext : filename;
}

static int headers_done(sg_mp_t *mp)
{
    memset(&mp->part, 0, sizeof(mp->part));
    for (size_t k = 0; k < mp->nlines; k++) {
        char *line = mp->hbuf + mp->line_off[k];
        char *colon = strchr(line, ':');
        if (!colon) return set_err(mp, SG_EPROTO, "malformed multipart part header (no ':')");
        char *ne = colon;
        while (ne > line && is_ws(ne[-1]))
            ne--;
        if (ne == line) return set_err(mp, SG_EPROTO, "malformed multipart part header name");
        *ne = 0;
        char *val = colon + 1;
        while (is_ws(*val))
            val++;
        char *ve = val + strlen(val);
        while (ve > val && is_ws(ve[-1]))
            ve--;
        *ve = 0;
        mp->hdrs[k].name = line;
        mp->hdrs[k].value = val;
    }
    for (size_t k = 0; k < mp->nlines; k++) {
        if (!strcasecmp(mp->hdrs[k].name, "Content-Disposition") && !mp->part.name &&
            !mp->part.filename)
            parse_disposition(mp, mp->hdrs[k].value);
        else if (!strcasecmp(mp->hdrs[k].name, "Content-Type") && !mp->part.content_type)
            mp->part.content_type = mp->hdrs[k].value;
    }
    mp->part.index = mp->nparts++;
    mp->part.headers = mp->hdrs;
    mp->part.nheaders = mp->nlines;
    mp->pend_begin = 1;
    mp->state = S_BODY;
    mp->m = 0;
    return 0;
}

/* One byte of part headers. */
static int header_byte(sg_mp_t *mp, char c)
{
    if (c == '\n') {
        mp->hcr = 0;
        if (mp->cur_len == 0) return headers_done(mp);
        if (!mp->cont) mp->nlines++;
        mp->hbuf[mp->hlen++] = 0; /* room was reserved when the byte before was stored */
        mp->cur_len = 0;
        mp->cont = 0;
        return 0;
    }
    if (mp->hcr || c == '\r') {
        if (mp->hcr) return set_err(mp, SG_EPROTO, "malformed multipart part header (bare CR)");
        mp->hcr = 1;
        return 0;
    }
    if (((unsigned char)c < 0x20 && c != '\t') || c == 0x7f)
        return set_err(mp, SG_EPROTO, "malformed multipart part header (control character)");
    if (mp->cur_len == 0) {
        if (is_ws(c) && mp->nlines > 0) { /* folded: continue the previous line */
            if (mp->hlen + 1 > mp->max_hbytes)
                return set_err(mp, SG_ETOOBIG, "multipart part headers too large (limit %zu bytes)",
                               mp->max_hbytes);
            mp->hbuf[mp->hlen - 1] = ' ';
            mp->cont = 1;
            mp->cur_len = 1;
            return 0;
        }
        if (mp->nlines == mp->max_headers)
            return set_err(mp, SG_ETOOBIG, "too many multipart part headers (limit %zu)",
                           mp->max_headers);
        mp->line_off[mp->nlines] = mp->hlen;
    }
    if (mp->hlen + 2 > mp->max_hbytes)
        return set_err(mp, SG_ETOOBIG, "multipart part headers too large (limit %zu bytes)",
                       mp->max_hbytes);
    mp->hbuf[mp->hlen++] = c;
    mp->cur_len++;
    return 0;
}

/* A delimiter line ended: a part starts. */
static int delimiter_line(sg_mp_t *mp, int crlf)
{
    if (mp->first) {
        mp->first = 0;
        mp->doff = crlf ? 0 : 1;
    }
    if (mp->in_part) mp->pend_end = 1;
    if (mp->nparts == mp->max_parts)
        return set_err(mp, SG_ETOOBIG, "too many multipart parts (limit %zu)", mp->max_parts);
    mp->state = S_HEADERS;
    mp->hlen = mp->cur_len = mp->nlines = 0;
    mp->cont = mp->hcr = 0;
    return 0;
}

int sg_mp_feed(sg_mp_t *mp, const char *p, size_t n, size_t *consumed)
{
    size_t i = 0, dummy;
    int rc;
    if (!consumed) consumed = &dummy;
    *consumed = 0;
    if (mp->state == S_ERROR) return mp->err;
    if ((rc = flush(mp))) return rc;
    while (i < n) {
        switch (mp->state) {
        case S_DONE: i = n; break;
        case S_PREAMBLE: {
            const char *db = mp->delim + 2; /* "--boundary" */
            if (mp->m == 0 && !mp->at_line_start) {
                const char *q = memchr(p + i, '\n', n - i);
                i = q ? (size_t)(q - p) + 1 : n;
                mp->at_line_start = q != NULL;
                break;
            }
            if (p[i] == db[mp->m]) {
                i++;
                if (++mp->m == mp->blen + 2) {
                    mp->m = 0;
                    mp->at_line_start = 0;
                    mp->state = S_AFTER;
                    mp->sub = A_NONE;
                    mp->ntail = 0;
                }
            } else if (mp->m == 0) {
                mp->at_line_start = p[i++] == '\n';
            } else {
                mp->m = 0; /* look at this byte again, not at a line start */
                mp->at_line_start = 0;
            }
            break;
        }
        case S_BODY: {
            const char *d = mp->delim + mp->doff;
            size_t dl = 4 + mp->blen - mp->doff;
            if (mp->m == 0) {
                /* One span per piece or per delimiter: near misses inside this piece stay
                 * in the span; only a match cut by the piece's end is held back. */
                size_t s = i, j = i, e;
                for (;;) {
                    const char *q = memchr(p + j, d[0], n - j);
                    if (!q) {
                        i = e = n;
                        break;
                    }
                    size_t qi = (size_t)(q - p), k = 1;
                    while (k < dl && qi + k < n && p[qi + k] == d[k])
                        k++;
                    if (k == dl) {
                        e = qi;
                        i = qi + dl;
                        mp->state = S_AFTER;
                        mp->sub = A_NONE;
                        mp->ntail = 0;
                        break;
                    }
                    if (qi + k == n) {
                        e = qi;
                        i = n;
                        mp->m = k;
                        break;
                    }
                    j = qi + k; /* a new match can only start at a CR (LF): not before here */
                }
                if (e > s && (rc = emit(mp, p + s, e - s))) goto out;
                break;
            }
            if (p[i] == d[mp->m]) {
                i++;
                if (++mp->m == dl) {
                    mp->m = 0;
                    mp->state = S_AFTER;
                    mp->sub = A_NONE;
                    mp->ntail = 0;
                }
                break;
            }
            mp->pend_d = mp->m; /* held back, not a delimiter after all; see p[i] again */
            mp->m = 0;
            if ((rc = flush(mp))) goto out;
            break;
        }
        case S_AFTER: {
            char c = p[i];
            if (mp->sub == A_DASH) {
                if (c != '-') goto not_delim;
                i++;
                mp->state = S_DONE;
                if (mp->in_part) mp->pend_end = 1;
                mp->pend_body_end = 1;
                if ((rc = flush(mp))) goto out;
                break;
            }
            if (c == '-' && mp->sub == A_NONE) {
                mp->sub = A_DASH;
                i++;
                break;
            }
            if (is_ws(c) && (mp->sub == A_NONE || mp->sub == A_PAD) &&
                mp->ntail < SG_MP_MAX_PADDING) {
                mp->tail[mp->ntail++] = c;
                mp->sub = A_PAD;
                i++;
                break;
            }
            if (c == '\r' && mp->sub != A_CR) {
                mp->sub = A_CR;
                i++;
                break;
            }
            if (c == '\n') {
                i++;
                if ((rc = delimiter_line(mp, mp->sub == A_CR))) goto out;
                if ((rc = flush(mp))) goto out;
                break;
            }
        not_delim:
            if (mp->first) { /* a "--boundaryX" line in the preamble */
                mp->state = S_PREAMBLE;
                mp->m = 0;
                mp->at_line_start = 0;
                break;
            }
            if (mp->sub == A_DASH) mp->tail[mp->ntail++] = '-';
            if (mp->sub == A_CR) mp->tail[mp->ntail++] = '\r';
            mp->pend_d = 4 + mp->blen - mp->doff;
            mp->pend_tail = mp->ntail;
            mp->state = S_BODY;
            mp->m = 0;
            if ((rc = flush(mp))) goto out;
            break;
        }
        case S_HEADERS:
            if ((rc = header_byte(mp, p[i++]))) goto out;
            if (mp->pend_begin && (rc = flush(mp))) goto out;
            break;
        default: rc = mp->err; goto out;
        }
    }
    *consumed = n;
    return 0;
out:
    *consumed = i;
    return rc;
}

int sg_mp_finish(sg_mp_t *mp)
{
    if (mp->state == S_ERROR) return mp->err;
    int rc = flush(mp);
    if (rc) return rc;
    switch (mp->state) {
    case S_DONE: return 0;
    case S_HEADERS: return set_err(mp, SG_EPROTO, "multipart body ended inside part headers");
    case S_PREAMBLE:
        return set_err(mp, SG_EPROTO, "multipart body ended before the first boundary");
    default:
        if (mp->first)
            return set_err(mp, SG_EPROTO, "multipart body ended before the first boundary");
        return set_err(mp, SG_EPROTO, "multipart body ended before the closing boundary");
    }
}
