// glob.c: doublestar glob matching (see glob.h for the syntax and the bounds).
//
// Map: validate() checks the raw pattern; expand() removes braces, producing up to
// SG_GLOB_MAX_ALTS brace-free patterns; compile_flat() turns each into a token program
// (literal, ?, class, *, and three globstar forms); run() simulates the program as a set of
// states over the name's runes, so matching never backtracks.
#include "glob.h"

#include "sandgate/common.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD         "syntax error in pattern: "
#define WORK_BUDGET (1u << 20) /* bytes copied while expanding braces, all steps together */

enum {
    T_LIT,     // one rune
    T_ANY,     // ?: one non-'/' rune
    T_CLASS,   // [..]: one non-'/' rune in (or, negated, not in) the ranges
    T_STAR,    // *: any run of non-'/' runes
    T_GS_ANY,  // "**" alone, or after "**/": anything, '/' included
    T_GS_DIR,  // "**/" at a segment start: "" or anything that ends in '/'
    T_GS_TAIL, // "/**" at the end: "" or '/' followed by anything
};

typedef struct {
    uint8_t kind;
    uint8_t neg;
    uint32_t rune;           /* T_LIT */
    uint32_t cls_off, cls_n; /* T_CLASS: ranges[cls_off .. cls_off + cls_n) */
} tok_t;

typedef struct {
    tok_t *t;
    size_t n;
    uint32_t (*ranges)[2];
    size_t nranges;
} prog_t;

struct sg_glob {
    prog_t *progs;
    size_t nprogs;
    size_t maxn;
    uint8_t *scratch; /* 4 state arrays of maxn + 1 */
};

static int fail(char *msg, size_t msg_len, int err, const char *fmt, ...)
{
    if (msg && msg_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msg_len, fmt, ap);
        va_end(ap);
    }
    return err;
}

/* Decodes one UTF-8 rune. A byte that does not start a valid sequence stands for itself,
 * mapped above the Unicode range so it only ever equals the same byte. */
static uint32_t decode(const unsigned char *s, size_t len, size_t *w)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t r, min;
    if (c < 0x80) {
        *w = 1;
        return c;
    }
    if ((c & 0xE0) == 0xC0)
        n = 2, r = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        n = 3, r = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        n = 4, r = c & 0x07, min = 0x10000;
    else
        goto bad;
    if (n > len) goto bad;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        r = (r << 6) | (s[i] & 0x3F);
    }
    if (r < min || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF)) goto bad;
    *w = n;
    return r;
bad:
    *w = 1;
    return 0x110000u + c;
}

/* Skips a class starting at p[i] == '['; returns the index after its ']' or 0 if unclosed
 * or empty (*empty tells which). Same rule as Go's isValidPattern. */
static size_t skip_class(const char *p, size_t n, size_t i, int *empty)
{
    *empty = 0;
    i++;
    if (i < n && (p[i] == '!' || p[i] == '^')) i++;
    if (i >= n) return 0;
    if (p[i] == ']') {
        *empty = 1;
        return 0;
    }
    for (; i < n; i++) {
        if (p[i] == '\\')
            i++;
        else if (p[i] == ']')
            return i + 1;
    }
    return 0;
}

int sg_glob_validate(const char *p, size_t n, char *msg, size_t msg_len)
{
    size_t open[SG_GLOB_MAX_DEPTH];
    size_t depth = 0;
    if (n > SG_GLOB_MAX_PATTERN)
        return fail(msg, msg_len, SG_ETOOBIG, "pattern too long (%zu bytes, limit %d)", n,
                    SG_GLOB_MAX_PATTERN);
    for (size_t i = 0; i < n; i++) {
        switch (p[i]) {
        case '\\':
            if (++i >= n) return fail(msg, msg_len, SG_EINVAL, BAD "trailing '\\'");
            break;
        case '[': {
            int empty;
            size_t e = skip_class(p, n, i, &empty);
            if (!e)
                return fail(msg, msg_len, SG_EINVAL, BAD "%s '[' at offset %zu",
                            empty ? "empty character class" : "unclosed", i);
            i = e - 1;
            break;
        }
        case '{':
            if (depth == SG_GLOB_MAX_DEPTH)
                return fail(msg, msg_len, SG_ETOOBIG, "braces nested too deeply (limit %d)",
                            SG_GLOB_MAX_DEPTH);
            open[depth++] = i;
            break;
        case '}':
            if (!depth) return fail(msg, msg_len, SG_EINVAL, BAD "unmatched '}' at offset %zu", i);
            depth--;
            break;
        }
    }
    if (depth) return fail(msg, msg_len, SG_EINVAL, BAD "unclosed '{' at offset %zu", open[0]);
    return 0;
}

/* ---- brace expansion */

typedef struct {
    char **s;
    size_t *len;
    size_t n, cap;
    size_t total; /* bytes in s */
    size_t work;  /* bytes copied so far */
} strvec_t;

/* Expands the first top-level brace of p (valid, so every '{' has its '}'), recursively. */
static int expand(const char *p, size_t n, strvec_t *v, char *msg, size_t msg_len)
{
    size_t i, open = SIZE_MAX;
    for (i = 0; i < n && open == SIZE_MAX; i++) {
        int empty;
        if (p[i] == '\\')
            i++;
        else if (p[i] == '[')
            i = skip_class(p, n, i, &empty) - 1;
        else if (p[i] == '{')
            open = i;
    }
    if (open == SIZE_MAX) {
        if (v->n == SG_GLOB_MAX_ALTS)
            return fail(msg, msg_len, SG_ETOOBIG, "too many brace alternatives (limit %d)",
                        SG_GLOB_MAX_ALTS);
        if (v->total + n > SG_GLOB_MAX_EXPANDED)
            return fail(msg, msg_len, SG_ETOOBIG, "brace expansion too large (limit %d bytes)",
                        SG_GLOB_MAX_EXPANDED);
        if (v->n == v->cap) {
            v->cap = v->cap ? v->cap * 2 : 8;
            v->s = sg_xrealloc(v->s, v->cap * sizeof(*v->s));
            v->len = sg_xrealloc(v->len, v->cap * sizeof(*v->len));
        }
        v->s[v->n] = sg_xstrndup(p, n);
        v->len[v->n++] = n;
        v->total += n;
        return 0;
    }
    /* Walk the alternatives: each starts after '{' or a depth-1 ',' and ends at the next one
     * or at the matching '}'. */
    size_t depth = 1, alt = open + 1;
    for (i = open + 1; i < n; i++) {
        char c = p[i];
        int empty;
        if (c == '\\') {
            i++;
            continue;
        }
        if (c == '[') {
            i = skip_class(p, n, i, &empty) - 1;
            continue;
        }
        if (c == '{') {
            depth++;
            continue;
        }
        if (c == '}' && --depth > 0) continue;
        if (c == ',' && depth > 1) continue;
        if (c != ',' && c != '}') continue;
        /* p[alt..i) is one alternative; the suffix after the matching '}' is found below. */
        size_t close = i;
        if (c == ',') { /* find the matching '}' for the suffix */
            size_t d = 1;
            for (close = i + 1; close < n; close++) {
                if (p[close] == '\\')
                    close++;
                else if (p[close] == '[')
                    close = skip_class(p, n, close, &empty) - 1;
                else if (p[close] == '{')
                    d++;
                else if (p[close] == '}' && --d == 0)
                    break;
            }
        }
        size_t alen = i - alt, slen = n - close - 1;
        size_t m = open + alen + slen;
        if ((v->work += m) > WORK_BUDGET)
            return fail(msg, msg_len, SG_ETOOBIG, "brace expansion too complex");
        char *q = sg_xmalloc(m + 1);
        memcpy(q, p, open);
        memcpy(q + open, p + alt, alen);
        memcpy(q + open + alen, p + close + 1, slen);
        int rc = expand(q, m, v, msg, msg_len);
        free(q);
        if (rc) return rc;
        if (c == '}') break;
        alt = i + 1;
    }
    return 0;
}

/* ---- compile one brace-free pattern */

static void push(prog_t *g, size_t *cap, tok_t t)
{
    if (g->n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        g->t = sg_xrealloc(g->t, *cap * sizeof(*g->t));
    }
    g->t[g->n++] = t;
}

static void push_range(prog_t *g, size_t *cap, uint32_t lo, uint32_t hi)
{
    if (g->nranges == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        g->ranges = sg_xrealloc(g->ranges, *cap * sizeof(*g->ranges));
    }
    g->ranges[g->nranges][0] = lo;
    g->ranges[g->nranges][1] = hi;
    g->nranges++;
}

static uint32_t rune_at(const char *p, size_t n, size_t *i)
{
    size_t w;
    uint32_t r = decode((const unsigned char *)p + *i, n - *i, &w);
    *i += w;
    return r;
}

static void compile_flat(const char *p, size_t n, prog_t *g)
{
    size_t tcap = 0, rcap = 0, i = 0;
    int at_seg = 1; /* the next token starts a path component */
    memset(g, 0, sizeof(*g));
    while (i < n) {
        tok_t t = {0};
        char c = p[i];
        if (c == '*') {
            int two = i + 1 < n && p[i + 1] == '*';
            if (two && at_seg && i + 2 == n) {
                tok_t *last = g->n ? &g->t[g->n - 1] : NULL;
                if (last && last->kind == T_LIT && last->rune == '/')
                    last->kind = T_GS_TAIL;
                else
                    push(g, &tcap, (tok_t){.kind = T_GS_ANY});
                i += 2;
                continue;
            }
            if (two && at_seg && p[i + 2] == '/') {
                push(g, &tcap, (tok_t){.kind = T_GS_DIR});
                i += 3;
                continue; /* still at a segment start */
            }
            i += two ? 2 : 1;
            if (!g->n || g->t[g->n - 1].kind != T_STAR) push(g, &tcap, (tok_t){.kind = T_STAR});
            at_seg = 0;
            continue;
        }
        if (c == '?') {
            t.kind = T_ANY;
            i++;
        } else if (c == '[') {
            t.kind = T_CLASS;
            i++;
            if (p[i] == '!' || p[i] == '^') t.neg = 1, i++;
            t.cls_off = (uint32_t)g->nranges;
            int have_last = 0;
            uint32_t last = 0;
            /* Validated: an unescaped ']' follows and the class is not empty. */
            while (p[i] != ']') {
                if (p[i] == '-' && have_last && p[i + 1] != ']') {
                    i++;
                    if (p[i] == '\\') i++;
                    push_range(g, &rcap, last, rune_at(p, n, &i));
                    have_last = 0;
                    continue;
                }
                if (p[i] == '\\') i++;
                last = rune_at(p, n, &i);
                have_last = 1;
                push_range(g, &rcap, last, last);
            }
            i++;
            t.cls_n = (uint32_t)(g->nranges - t.cls_off);
        } else {
            if (c == '\\') i++;
            t.kind = T_LIT;
            t.rune = rune_at(p, n, &i);
        }
        push(g, &tcap, t);
        at_seg = t.kind == T_LIT && t.rune == '/';
    }
}

static int class_has(const prog_t *g, const tok_t *t, uint32_t c)
{
    for (uint32_t k = 0; k < t->cls_n; k++) {
        const uint32_t *r = g->ranges[t->cls_off + k];
        if (r[0] <= c && c <= r[1]) return 1;
    }
    return 0;
}

/* Epsilon moves only go forward (i -> i + 1), so one ascending pass closes the set. */
static void closure(const prog_t *g, uint8_t *a, const uint8_t *b)
{
    for (size_t i = 0; i < g->n; i++) {
        uint8_t k = g->t[i].kind;
        if ((a[i] && (k == T_STAR || k == T_GS_ANY || k == T_GS_DIR || k == T_GS_TAIL)) ||
            (b[i] && k == T_GS_TAIL))
            a[i + 1] = 1;
    }
}

/* a[i]: about to match token i (a[n]: done). b[i]: inside the globstar token i. */
static int run(const prog_t *g, uint8_t *scratch, const unsigned char *s, size_t len)
{
    size_t n = g->n;
    uint8_t *a = scratch, *b = a + n + 1, *a2 = b + n + 1, *b2 = a2 + n + 1;
    memset(a, 0, 2 * (n + 1));
    a[0] = 1;
    closure(g, a, b);
    size_t pos = 0;
    while (pos < len) {
        size_t w;
        uint32_t c = decode(s + pos, len - pos, &w);
        pos += w;
        int slash = c == '/', any = 0;
        memset(a2, 0, 2 * (n + 1));
        for (size_t i = 0; i < n; i++) {
            const tok_t *t = &g->t[i];
            if (a[i]) {
                switch (t->kind) {
                case T_LIT: a2[i + 1] |= c == t->rune; break;
                case T_ANY: a2[i + 1] |= !slash; break;
                case T_CLASS: a2[i + 1] |= !slash && class_has(g, t, c) != t->neg; break;
                case T_STAR: a2[i] |= !slash; break;
                case T_GS_ANY: a2[i] = 1; break;
                case T_GS_DIR:
                    b2[i] = 1;
                    a2[i + 1] |= slash;
                    break;
                case T_GS_TAIL: b2[i] |= slash; break;
                }
            }
            if (b[i]) {
                b2[i] = 1;
                if (t->kind == T_GS_DIR) a2[i + 1] |= slash;
            }
        }
        closure(g, a2, b2);
        uint8_t *x = a;
        a = a2, a2 = x;
        x = b, b = b2, b2 = x;
        for (size_t i = 0; i <= n && !any; i++)
            any = a[i] | b[i];
        if (!any) return 0;
    }
    return a[n];
}

void sg_glob_free(sg_glob_t *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->nprogs; i++) {
        free(g->progs[i].t);
        free(g->progs[i].ranges);
    }
    free(g->progs);
    free(g->scratch);
    free(g);
}

int sg_glob_compile(const char *p, size_t n, sg_glob_t **out, char *msg, size_t msg_len)
{
    *out = NULL;
    int rc = sg_glob_validate(p, n, msg, msg_len);
    if (rc) return rc;
    strvec_t v = {0};
    rc = expand(p, n, &v, msg, msg_len);
    sg_glob_t *g = NULL;
    if (!rc) {
        g = sg_xcalloc(1, sizeof(*g));
        g->nprogs = v.n;
        g->progs = sg_xcalloc(v.n, sizeof(*g->progs));
        for (size_t i = 0; i < v.n; i++) {
            compile_flat(v.s[i], v.len[i], &g->progs[i]);
            g->maxn = SG_MAX(g->maxn, g->progs[i].n);
        }
        g->scratch = sg_xmalloc(4 * (g->maxn + 1));
    }
    for (size_t i = 0; i < v.n; i++)
        free(v.s[i]);
    free(v.s);
    free(v.len);
    *out = g;
    return rc;
}

int sg_glob_match(sg_glob_t *g, const char *name, size_t len)
{
    for (size_t i = 0; i < g->nprogs; i++)
        if (run(&g->progs[i], g->scratch, (const unsigned char *)name, len)) return 1;
    return 0;
}

int sg_glob_match_base(sg_glob_t *g, const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/')
        b--;
    if (b == n && n > 0) b = n - 1; /* the path is "/" (or a run of them): its name is "/" */
    return sg_glob_match(g, path + b, n - b);
}

int sg_glob_match_once(const char *pattern, const char *name, char *msg, size_t msg_len)
{
    sg_glob_t *g;
    int rc = sg_glob_compile(pattern, strlen(pattern), &g, msg, msg_len);
    if (rc) return rc;
    rc = sg_glob_match(g, name, strlen(name));
    sg_glob_free(g);
    return rc;
}
