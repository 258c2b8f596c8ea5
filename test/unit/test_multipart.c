/* test_multipart.c: the streaming multipart/form-data parser (include/sandgate/multipart.h).
 *
 * A recorder turns the callbacks into a text log (part begin with name/filename/type, the
 * part's data merged, part end, body end); every test compares logs. The same body fed whole,
 * split at every byte position, byte by byte, at seeded random positions, and with callbacks
 * that pause on every event must give the same log. Also: the exact JS SDK layout from the
 * protocol reference, framing corner cases, a 100 MiB part streamed through in 64 KiB pieces
 * (count + checksum, every span inside the piece just fed or the few held-back bytes), and
 * each error with its message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"
#include "sandgate/multipart.h"

#include <uv.h>

/* ---- recorder */

typedef struct {
    char *log;
    size_t len, cap;
    char *part; /* current part's data */
    size_t plen, pcap;
    int pause_every;  /* return SG_MP_PAUSE from every callback */
    int fail_on_data; /* return this (negative) from the first data callback */
    int events;
} rec_t;

static void rec_put(rec_t *r, const char *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        r->cap = (r->len + n + 1) * 2;
        r->log = realloc(r->log, r->cap);
    }
    memcpy(r->log + r->len, p, n);
    r->len += n;
    r->log[r->len] = 0;
}

static void rec_printf(rec_t *r, const char *fmt, ...)
{
    char b[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof(b), fmt, ap);
    va_end(ap);
    rec_put(r, b, (size_t)n);
}

static int ret(rec_t *r)
{
    r->events++;
    return r->pause_every ? SG_MP_PAUSE : 0;
}

static int on_begin(sg_mp_t *mp, const sg_mp_part_t *p, void *data)
{
    rec_t *r = data;
    rec_printf(r, "[begin %zu name=%s filename=%s type=%s nh=%zu]", p->index,
               p->name ? p->name : "(null)", p->filename ? p->filename : "(null)",
               p->content_type ? p->content_type : "(null)", p->nheaders);
    r->plen = 0;
    return ret(r);
}

static int on_data(sg_mp_t *mp, const char *p, size_t n, void *data)
{
    rec_t *r = data;
    assert_true(n > 0);
    if (r->fail_on_data) return r->fail_on_data;
    if (r->plen + n > r->pcap) {
        r->pcap = (r->plen + n) * 2;
        r->part = realloc(r->part, r->pcap);
    }
    memcpy(r->part + r->plen, p, n);
    r->plen += n;
    return ret(r);
}

static int on_end(sg_mp_t *mp, void *data)
{
    rec_t *r = data;
    rec_printf(r, "[data %zu:", r->plen);
    for (size_t i = 0; i < r->plen; i++) /* NUL as "\\0" so logs are C strings */
        rec_put(r, r->part[i] ? r->part + i : "\\0", r->part[i] ? 1 : 2);
    rec_printf(r, "][end]");
    r->plen = 0;
    return ret(r);
}

static int on_body_end(sg_mp_t *mp, void *data)
{
    rec_t *r = data;
    rec_printf(r, "[body end]");
    return ret(r);
}

static const sg_mp_callbacks_t cbs = {on_begin, on_data, on_end, on_body_end};

static void rec_free(rec_t *r)
{
    free(r->log);
    free(r->part);
}

/* Feeds body in pieces ending at cuts[0..ncuts) (ascending), resuming after every pause,
 * then finishes. Returns the final code; the log ends with "[rc N: message]". */
static char *run_cuts(const char *boundary, const char *body, size_t len, const size_t *cuts,
                      size_t ncuts, int pause_every, const sg_mp_limits_t *lim)
{
    rec_t r = {0};
    r.pause_every = pause_every;
    sg_mp_t *mp;
    assert_int_equal(sg_mp_new(&mp, boundary, strlen(boundary), &cbs, &r, lim), 0);
    size_t pos = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && rc >= 0; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        size_t guard = 0;
        while (rc >= 0) {
            size_t used = 0;
            rc = sg_mp_feed(mp, body + pos, end - pos, &used);
            assert_true(used <= end - pos);
            pos += used;
            if (rc != SG_MP_PAUSED) break;
            assert_true(pause_every);
            assert_true(++guard < 10 * len + 100);
        }
        if (rc == SG_MP_PAUSED) rc = 0;
    }
    if (rc >= 0) {
        size_t guard = 0;
        while ((rc = sg_mp_finish(mp)) == SG_MP_PAUSED)
            assert_true(++guard < 100);
    }
    rec_printf(&r, "[rc %d: %s]", rc, sg_mp_errmsg(mp));
    sg_mp_free(mp);
    char *out = r.log;
    r.log = NULL;
    rec_free(&r);
    return out;
}

static char *run_whole(const char *boundary, const char *body, size_t len)
{
    return run_cuts(boundary, body, len, NULL, 0, 0, NULL);
}

/* Whole, every single split, byte by byte, and paused variants all give the same log. */
static char *check_all_splits(const char *boundary, const char *body, size_t len)
{
    char *want = run_whole(boundary, body, len);
    for (size_t k = 0; k <= len; k++) {
        for (int pe = 0; pe < 2; pe++) {
            char *got = run_cuts(boundary, body, len, &k, 1, pe, NULL);
            if (strcmp(got, want))
                fprintf(stderr, "split at %zu pause %d:\n%s\nwant\n%s\n", k, pe, got, want);
            assert_string_equal(got, want);
            free(got);
        }
    }
    size_t *cuts = malloc((len + 1) * sizeof(*cuts));
    for (size_t k = 0; k < len; k++)
        cuts[k] = k;
    for (int pe = 0; pe < 2; pe++) {
        char *got = run_cuts(boundary, body, len, cuts, len, pe, NULL);
        assert_string_equal(got, want);
        free(got);
    }
    free(cuts);
    return want;
}

/* ---- the exact JS SDK layout (reference §2.11.7) */

#define SDK_B "----formdata-undici-070131299245"
static const char sdk_body[] =
    "--" SDK_B "\r\n"
    "Content-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"\r\n"
    "Content-Type: application/json\r\n"
    "\r\n"
    "{\"path\":\"/tmp/demo/hello.txt\",\"mode\":644}\r\n"
    "--" SDK_B "\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"hello.txt\"\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "hello world\n\r\n"
    "--" SDK_B "--\r\n";

static const char sdk_log[] =
    "[begin 0 name=metadata filename=metadata type=application/json nh=2]"
    "[data 41:{\"path\":\"/tmp/demo/hello.txt\",\"mode\":644}][end]"
    "[begin 1 name=file filename=hello.txt type=text/plain; charset=utf-8 nh=2]"
    "[data 12:hello world\n][end][body end][rc 0: ]";

static void test_sdk_layout(void **state)
{
    (void)state;
    assert_int_equal(sizeof(sdk_body) - 1, 381); /* the captured content-length */
    char b[SG_MP_MAX_BOUNDARY + 1], msg[128];
    size_t bl;
    const char *ct = "multipart/form-data; boundary=" SDK_B;
    assert_int_equal(sg_mp_boundary(ct, strlen(ct), b, sizeof(b), &bl, msg, sizeof(msg)), 0);
    assert_string_equal(b, SDK_B);
    assert_int_equal(bl, strlen(SDK_B));
    char *log = check_all_splits(b, sdk_body, sizeof(sdk_body) - 1);
    assert_string_equal(log, sdk_log);
    free(log);
}

/* metadata as a plain field (no filename=), a Blob file part, and several pairs. */
static void test_pairs_and_plain_field(void **state)
{
    (void)state;
    static const char lit[] =
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"metadata\"\r\n"
        "Content-Type: application/json\r\n\r\n"
        "{\"path\":\"/a\"}\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename=\"blob\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
        "\x00\x01\r\n--XyZz\r\n\r\r\n-\r\n"
        "--XyZ\r\n"
        "content-disposition: form-data; name=metadata; filename=\"m\"\r\n\r\n"
        "{\"path\":\"/b\"}\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename=\"\"\r\n\r\n"
        "\r\n"
        "--XyZ--";
    size_t len = sizeof(lit) - 1; /* the body has NULs in it */
    char *log = check_all_splits("XyZ", lit, len);
    static const char want[] =
        "[begin 0 name=metadata filename=(null) type=application/json nh=2]"
        "[data 13:{\"path\":\"/a\"}][end]"
        "[begin 1 name=file filename=blob type=application/octet-stream nh=2]"
        "[data 16:\\0\x01\r\n--XyZz\r\n\r\r\n-][end]"
        "[begin 2 name=metadata filename=m type=(null) nh=1]"
        "[data 13:{\"path\":\"/b\"}][end]"
        "[begin 3 name=file filename= type=(null) nh=1]"
        "[data 0:][end][body end][rc 0: ]";
    assert_string_equal(log, want);
    free(log);
}

/* Preamble, epilogue, LF framing, padding, folded headers, boundary-like data, escapes. */
static void test_framing(void **state)
{
    (void)state;
    static const struct {
        const char *boundary, *body, *want;
    } t[] = {
        {"b",
         "preamble --b junk\r\n--bX not yet\r\n--b \t\r\nA: 1\r\n\r\nx\r\n--b--\r\nepilogue "
         "--b\r\n",
         "[begin 0 name=(null) filename=(null) type=(null) nh=1][data 1:x][end][body end][rc 0: ]"},
        /* bare LF everywhere (Go accepts this) */
        {"b",
         "--b\nContent-Disposition: form-data; name=\"f\"\n\nline1\nline2\n--b\nX:y\n\n\n--b--\n",
         "[begin 0 name=f filename=(null) type=(null) nh=1][data 11:line1\nline2][end]"
         "[begin 1 name=(null) filename=(null) type=(null) nh=1][data 0:][end][body end][rc 0: ]"},
        /* CRLF framing, LF header lines */
        {"b", "--b\r\nContent-Type: a/b\n\n--b\r\n\r\n--b--",
         "[begin 0 name=(null) filename=(null) type=a/b nh=1][data 5:--b\r\n][end][body end]"},
        /* the boundary prefix inside data, "--b-" not a close, "\r\n--b" + spaces + junk */
        {"bound", "--bound\r\n\r\n--bound-x\r\n--boun\r\n--bound  x\r\n--bound\r--\r\n--bound--",
         "[begin 0 name=(null) filename=(null) type=(null) nh=0]"
         "[data 41:--bound-x\r\n--boun\r\n--bound  x\r\n--bound\r--][end][body end][rc 0: ]"},
        /* folded header, quoted escapes, filename* wins, unquoted values, odd case */
        {"b",
         "--b\r\nCONTENT-DISPOSITION: form-data;\r\n name=\"a\\\"b\";  FILENAME=\"x.txt\";"
         " filename*=UTF-8''na%C3%AFve%20f.txt\r\ncontent-type:   text/x  \r\n\r\nz\r\n--b--",
         "[begin 0 name=a\"b filename=na\xc3\xafve f.txt type=text/x nh=2][data 1:z][end]"
         "[body end][rc 0: ]"},
        {"b", "--b\r\nContent-Disposition: form-data; name=n; filename=f.bin\r\n\r\n\r\n--b--",
         "[begin 0 name=n filename=f.bin type=(null) nh=1][data 0:][end][body end][rc 0: ]"},
        /* empty form */
        {"b", "--b--\r\n", "[body end][rc 0: ]"},
        /* padding beyond the bound is not a delimiter (so the body never closes) */
        {"b", "--b\r\n\r\nx\r\n--b                                  \r\n--b--",
         "[begin 0 name=(null) filename=(null) type=(null) nh=0][data 40:x\r\n--b       "
         "                           ][end][body end][rc 0: ]"},
    };
    for (size_t i = 0; i < SG_ARRAY_SIZE(t); i++) {
        char *log = check_all_splits(t[i].boundary, t[i].body, strlen(t[i].body));
        if (strncmp(log, t[i].want, strlen(t[i].want)))
            fprintf(stderr, "framing case %zu:\n got %s\nwant %s\n", i, log, t[i].want);
        assert_int_equal(strncmp(log, t[i].want, strlen(t[i].want)), 0);
        free(log);
    }
}

/* ---- random bodies at random splits */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Data made of pieces that look like delimiters: near-misses exercise the held-back path. */
static size_t make_data(char *p, size_t n, const char *b)
{
    static const char *bits[] = {"\r", "\n", "\r\n", "-", "--", "\r\n-", "\r\n--", " ", "x", "\t"};
    size_t len = 0, bl = strlen(b);
    while (len + 64 + bl < n) {
        uint64_t r = rnd() % 14;
        if (r < 10) {
            size_t l = strlen(bits[r]);
            memcpy(p + len, bits[r], l);
            len += l;
        } else if (r < 12) { /* a prefix of the boundary, or all of it but not followed right */
            size_t l = rnd() % (bl + 1);
            memcpy(p + len, "\r\n--", 4);
            memcpy(p + len + 4, b, l);
            len += 4 + l;
            p[len++] = "xX-\r"[rnd() % 4];
            if (l == bl && p[len - 1] == '-') p[len - 1] = 'y'; /* "--b-" then 'y' is data... */
            if (l == bl && p[len - 1] == '\r') p[len - 1] = 'z';
        } else {
            p[len++] = (char)(rnd() & 0xff);
        }
    }
    return len;
}

static void test_random_splits(void **state)
{
    (void)state;
    const char *b = "----formdata-undici-0123";
    size_t cap = 300000;
    char *body = malloc(cap);
    for (int round = 0; round < 6; round++) {
        rng_state = 0x9e3779b97f4a7c15ull + (uint64_t)round;
        size_t len = 0;
        int parts = 1 + (int)(rnd() % 5);
        len += (size_t)sprintf(body + len, "preamble\r\n");
        for (int k = 0; k < parts; k++) {
            len += (size_t)sprintf(body + len,
                                   "--%s\r\nContent-Disposition: form-data; name=\"f%d\"; "
                                   "filename=\"f%d.bin\"\r\n\r\n",
                                   b, k, k);
            len += make_data(body + len, 40000, b);
            len += (size_t)sprintf(body + len, "\r\n");
        }
        len += (size_t)sprintf(body + len, "--%s--\r\n", b);
        char *want = run_whole(b, body, len);
        if (!strstr(want, "[body end][rc 0: ]"))
            fprintf(stderr, "round %d: %s\n", round, strstr(want, "[rc"));
        assert_non_null(strstr(want, "[body end][rc 0: ]"));
        for (int trial = 0; trial < 20; trial++) {
            size_t ncuts = 1 + rnd() % 200, *cuts = malloc(ncuts * sizeof(*cuts));
            for (size_t k = 0; k < ncuts; k++)
                cuts[k] = rnd() % (len + 1);
            for (size_t a = 1; a < ncuts; a++) /* insertion sort */
                for (size_t c = a; c > 0 && cuts[c - 1] > cuts[c]; c--) {
                    size_t x = cuts[c];
                    cuts[c] = cuts[c - 1];
                    cuts[c - 1] = x;
                }
            char *got = run_cuts(b, body, len, cuts, ncuts, trial & 1, NULL);
            assert_int_equal(strlen(want), strlen(got));
            assert_memory_equal(got, want, strlen(want));
            free(got);
            free(cuts);
        }
        free(want);
    }
    free(body);
}

/* ---- 100 MiB through 64 KiB pieces */

typedef struct {
    const char *piece;
    size_t piece_len;
    uint64_t sum, count;
    size_t held; /* bytes delivered from outside the piece */
    int begins, ends, body_ends;
} big_t;

static int big_begin(sg_mp_t *mp, const sg_mp_part_t *p, void *data)
{
    big_t *b = data;
    b->begins++;
    assert_string_equal(p->name, "file");
    return 0;
}

static int big_data(sg_mp_t *mp, const char *p, size_t n, void *data)
{
    big_t *b = data;
    if (p < b->piece || p + n > b->piece + b->piece_len) {
        b->held += n;
        assert_true(n <= 64); /* held back: a delimiter prefix, never part content at large */
    }
    for (size_t i = 0; i < n; i++)
        b->sum = (b->sum ^ (unsigned char)p[i]) * 0x100000001b3ull;
    b->count += n;
    return 0;
}

static int big_end(sg_mp_t *mp, void *data)
{
    ((big_t *)data)->ends++;
    return 0;
}

static int big_body_end(sg_mp_t *mp, void *data)
{
    ((big_t *)data)->body_ends++;
    return 0;
}

static void test_100mib_stream(void **state)
{
    (void)state;
    const size_t total = 100u << 20, chunk = 64u << 10;
    const char *bnd = "opensandbox_0123456789abcdef_1781253000123";
    sg_mp_callbacks_t cb = {big_begin, big_data, big_end, big_body_end};
    big_t st = {0};
    sg_mp_t *mp;
    assert_int_equal(sg_mp_new(&mp, bnd, strlen(bnd), &cb, &st, NULL), 0);
    char *buf = malloc(chunk + 256);
    uint64_t want_sum = 0xcbf29ce484222325ull;
    st.sum = want_sum;
    int n = sprintf(buf,
                    "--%s\r\nContent-Disposition: form-data; name=\"file\"; "
                    "filename=\"big\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                    bnd);
    st.piece = buf;
    st.piece_len = (size_t)n;
    assert_int_equal(sg_mp_feed(mp, buf, (size_t)n, NULL), 0);
    rng_state = 42;
    size_t sent = 0, near = 0, pieces = 0;
    while (sent < total) {
        size_t len = SG_MIN(chunk, total - sent);
        for (size_t i = 0; i < len; i += 8) {
            uint64_t r = rnd();
            memcpy(buf + i, &r, SG_MIN((size_t)8, len - i));
        }
        /* a near-miss delimiter across the piece boundary now and then */
        if (len > 100 && (sent / chunk) % 7 == 3) {
            memcpy(buf + len - 20, "\r\n--opensandbox_0123", 20);
            near++;
        }
        pieces++;
        for (size_t i = 0; i < len; i++)
            want_sum = (want_sum ^ (unsigned char)buf[i]) * 0x100000001b3ull;
        st.piece = buf;
        st.piece_len = len;
        size_t used;
        assert_int_equal(sg_mp_feed(mp, buf, len, &used), 0);
        assert_int_equal(used, len);
        sent += len;
    }
    n = sprintf(buf, "\r\n--%s--\r\n", bnd);
    st.piece_len = (size_t)n;
    assert_int_equal(sg_mp_feed(mp, buf, (size_t)n, NULL), 0);
    assert_int_equal(sg_mp_finish(mp), 0);
    assert_int_equal(st.count, total);
    assert_true(st.sum == want_sum);
    /* the near-misses, plus at most a delimiter's length at the end of any other piece */
    assert_true(near > 0);
    assert_true(st.held >= 20 * near && st.held <= 20 * near + 64 * pieces);
    assert_int_equal(st.begins, 1);
    assert_int_equal(st.ends, 1);
    assert_int_equal(st.body_ends, 1);
    sg_mp_free(mp);
    free(buf);
}

/* ---- errors */

static void test_boundary_header(void **state)
{
    (void)state;
    static const struct {
        const char *ct;
        const char *want; /* boundary, or NULL + message part */
        const char *msg;
    } t[] = {
        {"multipart/form-data; boundary=abc", "abc", NULL},
        {"Multipart/Form-Data ;charset=utf-8;  BOUNDARY = \"a b\\\"c\" ; x=y", "a b\"c", NULL},
        {"multipart/form-data; boundary=\"q;=,\"", "q;=,", NULL},
        {"multipart/form-data; x=\"boundary=no\"; boundary=yes", "yes", NULL},
        {"multipart/form-data; boundary=yes; x=\"zz\"; boundary=no", "yes", NULL},
        {"multipart/form-data", NULL, "missing boundary"},
        {"multipart/form-data; boundary", NULL, "missing boundary"},
        {"multipart/form-data; boundary=", NULL, "empty"},
        {"multipart/form-data; boundary=\"\"", NULL, "empty"},
        {"multipart/form-data; boundary=\"abc", NULL, "unterminated"},
        {"multipart/form-data; boundary=\"a\x01\"", NULL, "invalid characters"},
        {"multipart/form-data; boundary=\"ab \"", NULL, "ends in a space"},
        {"application/json; boundary=abc", NULL, "not multipart/form-data"},
        {"multipart/mixed; boundary=abc", NULL, "not multipart/form-data"},
        {"", NULL, "not multipart/form-data"},
    };
    for (size_t i = 0; i < SG_ARRAY_SIZE(t); i++) {
        char b[SG_MP_MAX_BOUNDARY + 1] = "", msg[128] = "";
        size_t bl = 0;
        int rc = sg_mp_boundary(t[i].ct, strlen(t[i].ct), b, sizeof(b), &bl, msg, sizeof(msg));
        if (t[i].want) {
            assert_int_equal(rc, 0);
            assert_string_equal(b, t[i].want);
            assert_int_equal(bl, strlen(t[i].want));
        } else {
            if (rc != SG_EINVAL || !strstr(msg, t[i].msg))
                fprintf(stderr, "ct case %zu: %s\n", i, msg);
            assert_int_equal(rc, SG_EINVAL);
            assert_non_null(strstr(msg, t[i].msg));
        }
    }
    char ct[400], b[SG_MP_MAX_BOUNDARY + 1], msg[128];
    size_t bl;
    int n = sprintf(ct, "multipart/form-data; boundary=");
    memset(ct + n, 'x', SG_MP_MAX_BOUNDARY + 1);
    ct[n + SG_MP_MAX_BOUNDARY + 1] = 0;
    assert_int_equal(sg_mp_boundary(ct, strlen(ct), b, sizeof(b), &bl, msg, sizeof(msg)),
                     SG_EINVAL);
    assert_non_null(strstr(msg, "too long"));
    ct[n + SG_MP_MAX_BOUNDARY] = 0;
    assert_int_equal(sg_mp_boundary(ct, strlen(ct), b, sizeof(b), &bl, msg, sizeof(msg)), 0);
    assert_int_equal(bl, SG_MP_MAX_BOUNDARY);
    /* sg_mp_new refuses what sg_mp_boundary refuses */
    sg_mp_t *mp = (sg_mp_t *)1;
    assert_int_equal(sg_mp_new(&mp, "", 0, &cbs, NULL, NULL), SG_EINVAL);
    assert_null(mp);
    assert_int_equal(sg_mp_new(&mp, "a\r\n", 3, &cbs, NULL, NULL), SG_EINVAL);
}

static void expect_error(const char *boundary, const char *body, const sg_mp_limits_t *lim,
                         int code, const char *msg_part, const char *log_prefix)
{
    size_t len = strlen(body);
    char *want = run_cuts(boundary, body, len, NULL, 0, 0, lim);
    char rc[64];
    snprintf(rc, sizeof(rc), "[rc %d: ", code);
    if (!strstr(want, rc) || !strstr(want, msg_part) ||
        strncmp(want, log_prefix, strlen(log_prefix)))
        fprintf(stderr, "error case: %s\n", want);
    assert_non_null(strstr(want, rc));
    assert_non_null(strstr(want, msg_part));
    assert_int_equal(strncmp(want, log_prefix, strlen(log_prefix)), 0);
    /* the same error at every split, with or without pauses */
    for (size_t k = 0; k <= len; k++) {
        char *got = run_cuts(boundary, body, len, &k, 1, (int)(k & 1), lim);
        assert_string_equal(got, want);
        free(got);
    }
    free(want);
}

static void test_errors(void **state)
{
    (void)state;
    sg_mp_limits_t lim = {.max_header_bytes = 64, .max_headers = 2, .max_parts = 2};
    expect_error("b", "", NULL, SG_EPROTO, "before the first boundary", "");
    expect_error("b", "no boundary here\r\n--c\r\n", NULL, SG_EPROTO, "before the first boundary",
                 "");
    expect_error("b", "--b", NULL, SG_EPROTO, "before the first boundary", "");
    expect_error("b", "--b\r\nA: b\r\n", NULL, SG_EPROTO, "inside part headers", "");
    expect_error("b", "--b\r\n\r\ndata\r\n--b-", NULL, SG_EPROTO, "before the closing boundary",
                 "[begin 0");
    expect_error("b", "--b\r\n\r\ndata", NULL, SG_EPROTO, "before the closing boundary",
                 "[begin 0");
    expect_error("b", "--b\r\nno colon\r\n\r\n--b--", NULL, SG_EPROTO, "no ':'", "");
    expect_error("b", "--b\r\n: empty name\r\n\r\n--b--", NULL, SG_EPROTO, "header name", "");
    expect_error("b", "--b\r\nA: 1\rB: 2\r\n\r\n--b--", NULL, SG_EPROTO, "bare CR", "");
    expect_error("b", "--b\r\nA: \x01\r\n\r\n--b--", NULL, SG_EPROTO, "control character", "");
    expect_error(
        "b", "--b\r\nA: 0123456789012345678901234567890123456789012345678901234567890\r\n\r\n--b--",
        &lim, SG_ETOOBIG, "headers too large (limit 64 bytes)", "");
    expect_error("b",
                 "--b\r\nA: 1\r\n "
                 "0123456789012345678901234567890123456789012345678901234567890\r\n\r\n--b--",
                 &lim, SG_ETOOBIG, "headers too large", "");
    expect_error("b", "--b\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n--b--", &lim, SG_ETOOBIG,
                 "too many multipart part headers (limit 2)", "");
    expect_error("b", "--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b\r\n\r\n3\r\n--b--", &lim, SG_ETOOBIG,
                 "too many multipart parts (limit 2)",
                 "[begin 0 name=(null) filename=(null) type=(null) nh=0][data 1:1][end]"
                 "[begin 1 name=(null) filename=(null) type=(null) nh=0]");
    /* within the limits the same shapes pass */
    char *ok = run_cuts("b", "--b\r\nA: 1\r\nB: 2\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b--", 37, NULL, 0,
                        0, &lim);
    assert_non_null(strstr(ok, "[body end][rc 0: ]"));
    free(ok);
}

static void test_callback_abort_and_sticky_error(void **state)
{
    (void)state;
    rec_t r = {0};
    r.fail_on_data = UV_ENOSPC;
    sg_mp_t *mp;
    assert_int_equal(sg_mp_new(&mp, "b", 1, &cbs, &r, NULL), 0);
    const char *body = "--b\r\n\r\nabc\r\n--b--";
    size_t used;
    assert_int_equal(sg_mp_feed(mp, body, strlen(body), &used), UV_ENOSPC);
    assert_non_null(strstr(sg_mp_errmsg(mp), "aborted in part data"));
    assert_int_equal(sg_mp_feed(mp, "x", 1, &used), UV_ENOSPC); /* sticky */
    assert_int_equal(sg_mp_finish(mp), UV_ENOSPC);
    assert_int_equal(sg_mp_done(mp), 0);
    assert_int_equal(sg_mp_part_count(mp), 1);
    sg_mp_free(mp);
    rec_free(&r);
    sg_mp_free(NULL);
}

/* Pause semantics in detail: each event pauses once, feed reports how much it used, and a
 * resume with an empty piece delivers what was held (here: body end after part end). */
static void test_pause_resume(void **state)
{
    (void)state;
    rec_t r = {0};
    r.pause_every = 1;
    sg_mp_t *mp;
    assert_int_equal(sg_mp_new(&mp, "b", 1, &cbs, &r, NULL), 0);
    const char *body = "--b\r\n\r\nabc\r\n--b--\r\nepilogue";
    size_t len = strlen(body), pos = 0, used;
    int rc;
    rc = sg_mp_feed(mp, body, len, &used); /* part begin */
    assert_int_equal(rc, SG_MP_PAUSED);
    assert_int_equal(used, 7);
    pos += used;
    assert_int_equal(r.events, 1);
    rc = sg_mp_feed(mp, body + pos, len - pos, &used); /* data "abc" (+ the delimiter seen) */
    assert_int_equal(rc, SG_MP_PAUSED);
    assert_int_equal(used, 8);
    pos += used;
    assert_int_equal(r.plen, 3);
    rc = sg_mp_feed(mp, body + pos, len - pos, &used); /* part end at the closing "--" */
    assert_int_equal(rc, SG_MP_PAUSED);
    assert_int_equal(used, 2);
    pos += used;
    assert_int_equal(sg_mp_done(mp), 1);
    assert_int_equal(r.events, 3);
    rc = sg_mp_feed(mp, body + pos, 0, &used); /* body end, held */
    assert_int_equal(rc, SG_MP_PAUSED);
    assert_int_equal(used, 0);
    assert_int_equal(r.events, 4);
    assert_int_equal(sg_mp_feed(mp, body + pos, len - pos, &used), 0); /* epilogue */
    assert_int_equal(used, len - pos);
    assert_int_equal(sg_mp_finish(mp), 0);
    assert_int_equal(r.events, 4);
    assert_string_equal(
        r.log, "[begin 0 name=(null) filename=(null) type=(null) nh=0][data 3:abc][end][body end]");
    sg_mp_free(mp);
    rec_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sdk_layout),
        cmocka_unit_test(test_pairs_and_plain_field),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_random_splits),
        cmocka_unit_test(test_100mib_stream),
        cmocka_unit_test(test_boundary_header),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_callback_abort_and_sticky_error),
        cmocka_unit_test(test_pause_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
