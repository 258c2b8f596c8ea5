/* test_sse.c: SSE encoders and decoder.
 *
 * The decoder is checked against hand-written WHATWG cases, the exact execd bytes of the
 * protocol reference (2.8), and against the encoder on random events split at random points
 * (seeded, reproducible) and at every split point of small inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/sse.h"

/* ---- collecting decoded events */

typedef struct ev {
    char *id, *type, *data;
    size_t data_len;
    int raw;
} ev_t;

typedef struct coll {
    ev_t v[512];
    size_t n;
    char comments[1024];
    size_t ncomments;
    int stop_after; /* >0: return -1 from the callback on that event */
} coll_t;

static int on_ev(void *ud, const sg_sse_msg_t *m)
{
    coll_t *c = ud;
    assert_true(c->n < SG_ARRAY_SIZE(c->v));
    assert_int_equal(strlen(m->id), m->id_len);
    assert_int_equal(m->data[m->data_len], '\0');
    ev_t *e = &c->v[c->n++];
    e->id = sg_xstrdup(m->id);
    e->type = sg_xstrdup(m->event);
    e->data = sg_xstrndup(m->data, m->data_len);
    e->data_len = m->data_len;
    e->raw = m->raw;
    if (c->stop_after && (int)c->n == c->stop_after) return -1;
    return 0;
}

static void on_comment(void *ud, const char *t, size_t n)
{
    coll_t *c = ud;
    size_t room = sizeof(c->comments) - strlen(c->comments) - 2;
    assert_true(n < room);
    strncat(c->comments, t, n);
    strcat(c->comments, "|");
    c->ncomments++;
}

static void coll_free(coll_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].id);
        free(c->v[i].type);
        free(c->v[i].data);
    }
    memset(c, 0, sizeof(*c));
}

/* Decodes in[0..n) cut at the given ascending offsets, then finishes. Returns the first error. */
static int decode_cuts(const char *in, size_t n, const size_t *cuts, size_t ncuts, size_t max_line, size_t max_event,
                       coll_t *c)
{
    sg_sse_decoder_t d;
    sg_sse_decoder_init(&d, max_line, max_event, on_ev, on_comment, c);
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncuts && !rc; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        rc = sg_sse_decoder_feed(&d, in + at, end - at);
        at = end;
    }
    if (!rc) rc = sg_sse_decoder_finish(&d);
    sg_sse_decoder_free(&d);
    return rc;
}

static int decode(const char *in, coll_t *c)
{
    return decode_cuts(in, strlen(in), NULL, 0, 0, 0, c);
}

static void assert_same(const coll_t *a, const coll_t *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_string_equal(a->v[i].id, b->v[i].id);
        assert_string_equal(a->v[i].type, b->v[i].type);
        assert_int_equal(a->v[i].data_len, b->v[i].data_len);
        assert_memory_equal(a->v[i].data, b->v[i].data, a->v[i].data_len);
        assert_int_equal(a->v[i].raw, b->v[i].raw);
    }
    assert_string_equal(a->comments, b->comments);
}

/* xorshift64*: reproducible across platforms */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static size_t rndn(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* ---- encoder */

static char *encode_str(const sg_sse_event_t *ev)
{
    sg_buf_t *b = NULL;
    assert_int_equal(sg_sse_encode_new(ev, &b), 0);
    char *s = sg_xstrndup(b->data, b->len);
    sg_buf_unref(b);
    return s;
}

static void test_encode_exact(void **state)
{
    (void)state;
    sg_sse_event_t ev = {.id = "42", .event = "stdout", .data = "a\nb\r\nc\rd", .data_len = 8,
                         .comment = "hi", .retry_ms = 3000};
    char *s = encode_str(&ev);
    assert_string_equal(s, ": hi\nid: 42\nevent: stdout\nretry: 3000\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
    free(s);

    /* trailing newline and empty data keep their meaning */
    s = encode_str(&(sg_sse_event_t){.data = "x\n", .data_len = 2});
    assert_string_equal(s, "data: x\ndata:\n\n");
    free(s);
    s = encode_str(&(sg_sse_event_t){.data = "", .data_len = 0});
    assert_string_equal(s, "data:\n\n");
    free(s);
    /* heartbeat: comment only, no blank line */
    s = encode_str(&(sg_sse_event_t){.comment = ""});
    assert_string_equal(s, ":\n");
    free(s);
    s = encode_str(&(sg_sse_event_t){.comment = "a\nb"});
    assert_string_equal(s, ": a\n: b\n");
    free(s);
    s = encode_str(&(sg_sse_event_t){.id = ""});
    assert_string_equal(s, "id:\n\n");
    free(s);
    /* binary-ish data with NUL and colon survives */
    s = encode_str(&(sg_sse_event_t){.data = " :x", .data_len = 3});
    assert_string_equal(s, "data:  :x\n\n");
    free(s);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    sg_bufq_t q;
    sg_bufq_init(&q);
    sg_sse_event_t bad[] = {
        {.id = "a\nb", .data = "x", .data_len = 1},
        {.id = "a\rb", .data = "x", .data_len = 1},
        {.event = "ev\n", .data = "x", .data_len = 1},
        {.event = "\rev", .data = "x", .data_len = 1},
        {.data = NULL, .data_len = 3},
    };
    for (size_t i = 0; i < SG_ARRAY_SIZE(bad); i++) {
        size_t len = 99;
        assert_int_equal(sg_sse_encode_len(&bad[i], &len), SG_EINVAL);
        assert_int_equal(len, 99);
        assert_int_equal(sg_sse_encode_bufq(&q, &bad[i]), SG_EINVAL);
        sg_buf_t *b = NULL;
        assert_int_equal(sg_sse_encode_new(&bad[i], &b), SG_EINVAL);
        assert_null(b);
    }
    assert_int_equal(q.bytes, 0);
    assert_int_equal(q.count, 0);

    const char *execd_bad[] = {"{\"a\":\n1}", "{\"a\":\r1}", "[1]", " {}", ""};
    for (size_t i = 0; i < SG_ARRAY_SIZE(execd_bad); i++) {
        size_t n;
        assert_int_equal(sg_sse_execd_len(execd_bad[i], strlen(execd_bad[i]), &n), SG_EINVAL);
        assert_int_equal(sg_sse_execd_bufq(&q, execd_bad[i], strlen(execd_bad[i])), SG_EINVAL);
    }
    assert_int_equal(q.bytes, 0);
    sg_bufq_free(&q);
}

static void test_encode_sinks(void **state)
{
    (void)state;
    sg_sse_event_t ev = {.id = "7", .data = "hello", .data_len = 5};
    size_t len;
    assert_int_equal(sg_sse_encode_len(&ev, &len), 0);
    assert_int_equal(len, strlen("id: 7\ndata: hello\n\n"));

    /* into: fits exactly, then no room and untouched */
    sg_buf_t *b = sg_buf_new(len + 3);
    memcpy(b->data, "xyz", 3);
    b->len = 3;
    assert_int_equal(sg_sse_encode_into(b, &ev), 0);
    assert_int_equal(b->len, len + 3);
    assert_memory_equal(b->data, "xyzid: 7\ndata: hello\n\n", len + 3);
    assert_int_equal(sg_sse_encode_into(b, &ev), SG_ETOOBIG);
    assert_int_equal(b->len, len + 3);
    sg_buf_unref(b);

    /* new: one chunk shared by two subscribers' queues */
    sg_buf_t *shared = NULL;
    assert_int_equal(sg_sse_encode_new(&ev, &shared), 0);
    assert_int_equal(shared->len, len);
    assert_int_equal(shared->cap, len);
    sg_bufq_t q1, q2;
    sg_bufq_init(&q1);
    sg_bufq_init(&q2);
    sg_bufq_push(&q1, shared, 0, shared->len);
    sg_bufq_push(&q2, shared, 0, shared->len);
    assert_int_equal(shared->refs, 3);
    sg_buf_unref(shared);
    uv_buf_t iov[2];
    size_t tot;
    assert_int_equal(sg_bufq_iov(&q2, iov, 2, 0, &tot), 1);
    assert_int_equal(tot, len);
    assert_memory_equal(iov[0].base, "id: 7\ndata: hello\n\n", len);
    sg_bufq_free(&q1);
    sg_bufq_free(&q2);

    /* bufq: appended after whatever is queued */
    sg_bufq_t q;
    sg_bufq_init(&q);
    sg_bufq_push_copy(&q, "A", 1);
    assert_int_equal(sg_sse_encode_bufq(&q, &ev), 0);
    assert_int_equal(sg_sse_execd_bufq(&q, "{\"a\":1}", 7), 0);
    assert_int_equal(q.bytes, 1 + len + 9);
    char flat[64];
    size_t at = 0;
    unsigned k = sg_bufq_iov(&q, iov, 2, 0, &tot);
    for (unsigned i = 0; i < k; i++) {
        memcpy(flat + at, iov[i].base, iov[i].len);
        at += iov[i].len;
    }
    assert_int_equal(at, q.bytes);
    assert_memory_equal(flat, "Aid: 7\ndata: hello\n\n{\"a\":1}\n\n", at);
    sg_bufq_free(&q);

    /* a frame bigger than the stack buffer takes the by-reference path; same bytes */
    char big[3000];
    memset(big, 'z', sizeof big);
    sg_sse_event_t bev = {.event = "big", .data = big, .data_len = sizeof big};
    sg_bufq_init(&q);
    assert_int_equal(sg_sse_encode_bufq(&q, &bev), 0);
    assert_int_equal(sg_sse_encode_bufq(&q, &ev), 0);
    assert_int_equal(sg_sse_encode_len(&bev, &tot), 0);
    assert_int_equal(q.bytes, tot + len);
    sg_buf_t *want = NULL;
    assert_int_equal(sg_sse_encode_new(&bev, &want), 0);
    k = sg_bufq_iov(&q, iov, 2, 0, NULL);
    assert_int_equal(k, 2);
    assert_int_equal(iov[0].len, want->len);
    assert_memory_equal(iov[0].base, want->data, want->len);
    assert_memory_equal(iov[1].base, "id: 7\ndata: hello\n\n", len);
    sg_buf_unref(want);
    sg_bufq_free(&q);

    /* execd into / new */
    b = sg_buf_new(8);
    assert_int_equal(sg_sse_execd_into(b, "{\"a\":1}", 7), SG_ETOOBIG);
    assert_int_equal(b->len, 0);
    sg_buf_unref(b);
    assert_int_equal(sg_sse_execd_new("{}", 2, &b), 0);
    assert_int_equal(b->len, 4);
    assert_memory_equal(b->data, "{}\n\n", 4);
    sg_buf_unref(b);
}

/* ---- decoder: WHATWG rules */

static void test_decode_basic(void **state)
{
    (void)state;
    coll_t c = {0};
    /* the spec's own examples */
    assert_int_equal(decode("data: YHOO\ndata: +2\ndata: 10\n\n", &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].data, "YHOO\n+2\n10");
    assert_string_equal(c.v[0].type, "message");
    assert_string_equal(c.v[0].id, "");
    assert_int_equal(c.v[0].raw, 0);
    coll_free(&c);

    assert_int_equal(decode(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
                            &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.v[0].data, "first event");
    assert_string_equal(c.v[0].id, "1");
    assert_string_equal(c.v[1].data, "second event");
    assert_string_equal(c.v[1].id, "");
    assert_string_equal(c.v[2].data, " third event");
    assert_string_equal(c.comments, "test stream|");
    coll_free(&c);

    /* "data" with no colon is an empty data line; incomplete last event is dropped */
    assert_int_equal(decode("data\n\ndata\ndata\n\ndata:\n", &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[0].data, "");
    assert_string_equal(c.v[1].data, "\n");
    coll_free(&c);

    /* event type applies to one event; unknown fields ignored; event without data dropped */
    assert_int_equal(decode("event: add\nfoo: bar\ndata: 1\n\nevent: x\n\ndata: 2\n\n", &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[0].type, "add");
    assert_string_equal(c.v[1].type, "message");
    coll_free(&c);

    /* id persists across events; an id with NUL is ignored */
    static const char nul_id[] = "id: 5\ndata: a\n\nid: 6\0x\ndata: b\n\nid: 7\ndata: c\n\n";
    assert_int_equal(decode_cuts(nul_id, sizeof(nul_id) - 1, NULL, 0, 0, 0, &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.v[0].id, "5");
    assert_string_equal(c.v[1].id, "5");
    assert_string_equal(c.v[2].id, "7");
    coll_free(&c);

    /* data may hold NUL bytes */
    static const char nul_data[] = "data: a\0b\n\n";
    assert_int_equal(decode_cuts(nul_data, sizeof(nul_data) - 1, NULL, 0, 0, 0, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.v[0].data_len, 3);
    assert_memory_equal(c.v[0].data, "a\0b", 3);
    coll_free(&c);
}

static void test_decode_retry(void **state)
{
    (void)state;
    coll_t c = {0};
    sg_sse_decoder_t d;
    sg_sse_decoder_init(&d, 0, 0, on_ev, NULL, &c);
    assert_int_equal(d.retry_ms, -1);
    const char *in = "retry: 2500\n\n";
    assert_int_equal(sg_sse_decoder_feed(&d, in, strlen(in)), 0);
    assert_int_equal(d.retry_ms, 2500);
    const char *ignored[] = {"retry: 12a\n", "retry: -5\n", "retry:\n", "retry: 1 \n", "retry:  7\n"};
    for (size_t i = 0; i < SG_ARRAY_SIZE(ignored); i++) {
        assert_int_equal(sg_sse_decoder_feed(&d, ignored[i], strlen(ignored[i])), 0);
        assert_int_equal(d.retry_ms, 2500);
    }
    in = "retry:99999999999999999999999999\n";
    assert_int_equal(sg_sse_decoder_feed(&d, in, strlen(in)), 0);
    assert_true(d.retry_ms > 2500); /* saturated, not wrapped */
    assert_int_equal(c.n, 0);
    sg_sse_decoder_free(&d);
}

static void test_decode_line_endings(void **state)
{
    (void)state;
    coll_t c = {0};
    assert_int_equal(decode("data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\rdata: e\n\n", &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.v[0].data, "a\nb\nc");
    assert_string_equal(c.v[1].data, "d");
    assert_string_equal(c.v[2].data, "e");
    coll_free(&c);

    /* CRLF split across two feeds is one line end, not two (which would dispatch early) */
    const char *in = "data: a\r\ndata: b\r\n\r\n";
    size_t cut = strlen("data: a\r");
    assert_int_equal(decode_cuts(in, strlen(in), &cut, 1, 0, 0, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].data, "a\nb");
    coll_free(&c);

    /* CR then LF in separate feeds at the blank line, and byte-by-byte */
    size_t cuts[64];
    size_t n = strlen(in);
    for (size_t i = 1; i < n; i++) cuts[i - 1] = i;
    assert_int_equal(decode_cuts(in, n, cuts, n - 1, 0, 0, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].data, "a\nb");
    coll_free(&c);
}

static void test_decode_bom(void **state)
{
    (void)state;
    coll_t c = {0};
    const char *in = "\xEF\xBB\xBF"
                     "data: a\n\n\xEF\xBB\xBF"
                     "data: b\n\n";
    size_t n = strlen(in);
    /* every single split point, including inside the BOM */
    for (size_t cut = 0; cut <= n; cut++) {
        assert_int_equal(decode_cuts(in, n, &cut, 1, 0, 0, &c), 0);
        assert_int_equal(c.n, 1); /* a BOM after the start makes "\xEF\xBB\xBFdata" an unknown field */
        assert_string_equal(c.v[0].data, "a");
        coll_free(&c);
    }
    /* a partial BOM is ordinary bytes: here it makes the first line an unknown field */
    in = "\xEF\xBB"
         "data: a\n\ndata: b\n\n";
    n = strlen(in);
    for (size_t cut = 0; cut <= n; cut++) {
        assert_int_equal(decode_cuts(in, n, &cut, 1, 0, 0, &c), 0);
        assert_int_equal(c.n, 1);
        assert_string_equal(c.v[0].data, "b");
        coll_free(&c);
    }
    /* partial BOM then a raw JSON line at EOF: the replayed bytes are part of the line */
    assert_int_equal(decode("\xEF{}", &c), 0);
    assert_int_equal(c.n, 0);
    coll_free(&c);
    assert_int_equal(decode("\xEF\xBB\xBF{}", &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].data, "{}");
    coll_free(&c);
}

static void test_decode_comments_and_stop(void **state)
{
    (void)state;
    coll_t c = {0};
    assert_int_equal(decode(":\n: ping\n:  two\ndata: x\n:mid\n\n", &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].data, "x");
    assert_string_equal(c.comments, "|ping| two|mid|");
    coll_free(&c);

    /* comments are optional */
    sg_sse_decoder_t d;
    sg_sse_decoder_init(&d, 0, 0, on_ev, NULL, &c);
    const char *in = ": hb\ndata: y\n\n";
    assert_int_equal(sg_sse_decoder_feed(&d, in, strlen(in)), 0);
    assert_int_equal(c.n, 1);
    sg_sse_decoder_free(&d);
    coll_free(&c);

    /* a callback's non-zero return stops decoding and sticks */
    c.stop_after = 2;
    sg_sse_decoder_init(&d, 0, 0, on_ev, NULL, &c);
    in = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    assert_int_equal(sg_sse_decoder_feed(&d, in, strlen(in)), -1);
    assert_int_equal(c.n, 2);
    assert_int_equal(sg_sse_decoder_feed(&d, in, strlen(in)), -1);
    assert_int_equal(sg_sse_decoder_finish(&d), -1);
    assert_int_equal(c.n, 2);
    sg_sse_decoder_free(&d);
    coll_free(&c);
}

static void test_decode_limits(void **state)
{
    (void)state;
    coll_t c = {0};
    /* max_line 16: "data: " + 10 bytes = 16 is fine, 17 is not */
    assert_int_equal(decode_cuts("data: 0123456789\n\n", 18, NULL, 0, 16, 0, &c), 0);
    assert_int_equal(c.n, 1);
    coll_free(&c);
    const char *in = "data: x\n\ndata: 0123456789A\n\ndata: y\n\n";
    size_t n = strlen(in);
    for (size_t cut = 0; cut <= n; cut++) {
        assert_int_equal(decode_cuts(in, n, &cut, 1, 16, 0, &c), SG_ETOOBIG);
        assert_int_equal(c.n, 1); /* events before the bad line still came out */
        coll_free(&c);
    }
    /* an unterminated long line fails as soon as it is too long, not at its end */
    sg_sse_decoder_t d;
    sg_sse_decoder_init(&d, 16, 0, on_ev, NULL, &c);
    char big[100];
    memset(big, 'a', sizeof big);
    assert_int_equal(sg_sse_decoder_feed(&d, big, 10), 0);
    assert_int_equal(sg_sse_decoder_feed(&d, big, 10), SG_ETOOBIG);
    assert_true(d.line.cap <= 17);
    assert_int_equal(sg_sse_decoder_feed(&d, "\n\n", 2), SG_ETOOBIG); /* sticky */
    assert_int_equal(sg_sse_decoder_finish(&d), SG_ETOOBIG);
    sg_sse_decoder_free(&d);

    /* max_event 8 on the joined data: "1234\n567" = 8 ok, one more byte is not */
    assert_int_equal(decode_cuts("data: 1234\ndata: 567\n\n", 22, NULL, 0, 0, 8, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].data, "1234\n567");
    coll_free(&c);
    assert_int_equal(decode_cuts("data: 1234\ndata: 5678\n\n", 23, NULL, 0, 0, 8, &c), SG_ETOOBIG);
    assert_int_equal(c.n, 0);
    coll_free(&c);
    /* many short data lines cannot grow the buffer past the bound */
    sg_sse_decoder_init(&d, 0, 64, on_ev, NULL, &c);
    int rc = 0;
    for (int i = 0; i < 1000 && !rc; i++) rc = sg_sse_decoder_feed(&d, "data\n", 5);
    assert_int_equal(rc, SG_ETOOBIG);
    assert_true(d.data.cap <= 66);
    sg_sse_decoder_free(&d);
    /* a raw JSON line is bounded by max_event too */
    assert_int_equal(decode_cuts("{\"a\":12345}\n\n", 13, NULL, 0, 0, 8, &c), SG_ETOOBIG);
    coll_free(&c);
}

/* ---- execd dialect */

/* Protocol reference 2.8: the de-chunked body Go's execd sends for
 * `echo hi; echo err >&2; exit 3`, byte for byte. */
static const char *const EXECD_EVENTS[] = {
    "{\"type\":\"init\",\"text\":\"9f1c2e7a4b3d4e5f8a6b7c8d9e0f1a2b\",\"timestamp\":1781253000123}",
    "{\"type\":\"ping\",\"text\":\"pong\",\"timestamp\":1781253000123}",
    "{\"type\":\"stdout\",\"text\":\"hi\",\"timestamp\":1781253000131}",
    "{\"type\":\"stderr\",\"text\":\"err\",\"timestamp\":1781253000131}",
    ("{\"type\":\"error\",\"timestamp\":1781253000132,\"error\":{\"ename\":\"CommandExecError\",\"evalue\":\"3\","
     "\"traceback\":[\"exit status 3\"]}}"),
};
/* chunk sizes from the reference: each chunk is exactly one event + "\n\n" */
static const size_t EXECD_CHUNK[] = {0x55, 0x39, 0x39, 0x3a, 0x7c};

static char *execd_body(size_t *len)
{
    char *body = sg_xmalloc(1024);
    size_t at = 0;
    for (size_t i = 0; i < SG_ARRAY_SIZE(EXECD_EVENTS); i++) {
        size_t n = strlen(EXECD_EVENTS[i]);
        assert_int_equal(n + 2, EXECD_CHUNK[i]);
        memcpy(body + at, EXECD_EVENTS[i], n);
        memcpy(body + at + n, "\n\n", 2);
        at += n + 2;
    }
    *len = at;
    return body;
}

static void check_execd(const coll_t *c)
{
    assert_int_equal(c->n, SG_ARRAY_SIZE(EXECD_EVENTS));
    for (size_t i = 0; i < c->n; i++) {
        assert_string_equal(c->v[i].data, EXECD_EVENTS[i]);
        assert_int_equal(c->v[i].raw, 1);
        assert_string_equal(c->v[i].type, "message");
    }
}

static void test_execd_reference_bytes(void **state)
{
    (void)state;
    size_t n;
    char *body = execd_body(&n);
    assert_int_equal(n, 0x55 + 0x39 + 0x39 + 0x3a + 0x7c);

    /* our encoder produces the same bytes */
    sg_bufq_t q;
    sg_bufq_init(&q);
    for (size_t i = 0; i < SG_ARRAY_SIZE(EXECD_EVENTS); i++)
        assert_int_equal(sg_sse_execd_bufq(&q, EXECD_EVENTS[i], strlen(EXECD_EVENTS[i])), 0);
    assert_int_equal(q.bytes, n);
    uv_buf_t iov[8];
    size_t tot;
    unsigned k = sg_bufq_iov(&q, iov, 8, 0, &tot);
    size_t at = 0;
    for (unsigned i = 0; i < k; i++) {
        assert_memory_equal(iov[i].base, body + at, iov[i].len);
        at += iov[i].len;
    }
    assert_int_equal(at, n);
    sg_bufq_free(&q);

    /* whole, and split at every pair of points (three feeds) */
    coll_t c = {0};
    assert_int_equal(decode_cuts(body, n, NULL, 0, 0, 0, &c), 0);
    check_execd(&c);
    coll_free(&c);
    for (size_t a = 0; a <= n; a += 3) {
        for (size_t b = a; b <= n; b++) {
            size_t cuts[2] = {a, b};
            assert_int_equal(decode_cuts(body, n, cuts, 2, 0, 0, &c), 0);
            check_execd(&c);
            coll_free(&c);
        }
    }
    /* byte by byte */
    sg_sse_decoder_t d;
    sg_sse_decoder_init(&d, 0, 0, on_ev, NULL, &c);
    for (size_t i = 0; i < n; i++) assert_int_equal(sg_sse_decoder_feed(&d, body + i, 1), 0);
    assert_int_equal(sg_sse_decoder_finish(&d), 0);
    sg_sse_decoder_free(&d);
    check_execd(&c);
    coll_free(&c);

    /* CRLF line ends (a proxy rewrote them) give the same events */
    char crlf[1024];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (body[i] == '\n') crlf[m++] = '\r';
        crlf[m++] = body[i];
    }
    assert_int_equal(decode_cuts(crlf, m, NULL, 0, 0, 0, &c), 0);
    check_execd(&c);
    coll_free(&c);
    free(body);
}

static void test_execd_rules(void **state)
{
    (void)state;
    coll_t c = {0};
    /* an unterminated raw line is dispatched at end of stream (what the SDK does; also how a
     * Gin error object appended without newline arrives) */
    assert_int_equal(decode("{\"type\":\"init\"}\n\n{\"code\":\"RUNTIME_ERROR\"}", &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[1].data, "{\"code\":\"RUNTIME_ERROR\"}");
    coll_free(&c);
    /* ...but an unterminated standard event is not (WHATWG) */
    assert_int_equal(decode("data: a\n", &c), 0);
    assert_int_equal(c.n, 0);
    coll_free(&c);
    /* two raw lines without a blank line are two events, like the SDK's per-line JSON.parse */
    assert_int_equal(decode("{\"a\":1}\n{\"b\":2}\n", &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[0].data, "{\"a\":1}");
    assert_string_equal(c.v[1].data, "{\"b\":2}");
    coll_free(&c);
    /* mixing dialects: a raw line leaves the pending standard event alone, and carries the id */
    assert_int_equal(decode("id: 9\nevent: e\ndata: x\n{\"r\":1}\ndata: y\n\ndata: {\"s\":2}\n\n", &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.v[0].data, "{\"r\":1}");
    assert_int_equal(c.v[0].raw, 1);
    assert_string_equal(c.v[0].type, "message");
    assert_string_equal(c.v[0].id, "9");
    assert_string_equal(c.v[1].data, "x\ny");
    assert_string_equal(c.v[1].type, "e");
    assert_int_equal(c.v[1].raw, 0);
    assert_string_equal(c.v[2].data, "{\"s\":2}");
    assert_int_equal(c.v[2].raw, 0);
    coll_free(&c);
    /* only a '{' in the first byte makes a raw line */
    assert_int_equal(decode(" {\"a\":1}\n\n[1,2]\n\n", &c), 0);
    assert_int_equal(c.n, 0);
    coll_free(&c);
}

/* ---- encoder vs decoder on random inputs */

static void rnd_text(char *out, size_t n, const char *alphabet)
{
    size_t k = strlen(alphabet);
    for (size_t i = 0; i < n; i++) out[i] = alphabet[rndn(k)];
    out[n] = '\0';
}

/* What a decoder must return for data: every CR, LF and CRLF becomes LF. */
static size_t normalise(const char *s, size_t n, char *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            out[m++] = '\n';
            if (i + 1 < n && s[i + 1] == '\n') i++;
        } else {
            out[m++] = s[i];
        }
    }
    return m;
}

static void test_roundtrip_random(void **state)
{
    (void)state;
    rng_state = 0x5eed5eed12345678ull;
    static const char DATA_ALPHA[] = "ab :{}\r\n\r\n\"x\xEF\xBB\xBF";
    static const char NAME_ALPHA[] = "abc:{ 09-";
    for (int iter = 0; iter < 400; iter++) {
        sg_bufq_t q;
        sg_bufq_init(&q);
        coll_t want = {0};
        size_t nev = 1 + rndn(12);
        char last_id[32] = "";
        for (size_t i = 0; i < nev; i++) {
            char id[32], type[32], data[200], comment[40], json[64];
            int kind = (int)rndn(4);
            if (kind == 0) { /* execd frame */
                rnd_text(json + 1, rndn(30), "ab\":,x{} ");
                json[0] = '{';
                assert_int_equal(sg_sse_execd_bufq(&q, json, strlen(json)), 0);
                ev_t *e = &want.v[want.n++];
                e->id = sg_xstrdup(last_id);
                e->type = sg_xstrdup("message");
                e->data = sg_xstrdup(json);
                e->data_len = strlen(json);
                e->raw = 1;
                continue;
            }
            sg_sse_event_t ev = {0};
            if (rndn(2)) {
                rnd_text(id, rndn(10), NAME_ALPHA);
                ev.id = id;
                strcpy(last_id, id);
            }
            if (rndn(2)) {
                rnd_text(type, 1 + rndn(10), NAME_ALPHA);
                ev.event = type;
            }
            if (rndn(4) == 0) {
                rnd_text(comment, rndn(20), DATA_ALPHA);
                ev.comment = comment;
                for (char *p = comment; *p; p++) { /* keep comment text flat for the check */
                    if (*p == '\r' || *p == '\n' || *p == '|') *p = '.';
                }
                strcat(want.comments, comment); /* the encoder adds the space the decoder strips */
                strcat(want.comments, "|");
            }
            if (rndn(8)) ev.retry_ms = (uint32_t)rndn(3);
            size_t dl = rndn(kind == 3 ? 199 : 20);
            rnd_text(data, dl, DATA_ALPHA);
            ev.data = data;
            ev.data_len = dl;
            assert_int_equal(sg_sse_encode_bufq(&q, &ev), 0);
            ev_t *e = &want.v[want.n++];
            e->id = sg_xstrdup(last_id);
            e->type = sg_xstrdup(ev.event && ev.event[0] ? ev.event : "message");
            e->data = sg_xmalloc(dl + 1);
            e->data_len = normalise(data, dl, e->data);
            e->data[e->data_len] = '\0';
            e->raw = 0;
        }
        /* flatten the queue */
        char *stream = sg_xmalloc(q.bytes + 1);
        size_t n = 0;
        uv_buf_t iov[64];
        size_t tot;
        unsigned k = sg_bufq_iov(&q, iov, 64, 0, &tot);
        assert_int_equal(tot, q.bytes);
        for (unsigned i = 0; i < k; i++) {
            memcpy(stream + n, iov[i].base, iov[i].len);
            n += iov[i].len;
        }
        sg_bufq_free(&q);

        /* whole, then with random cuts */
        coll_t got = {0};
        assert_int_equal(decode_cuts(stream, n, NULL, 0, 0, 0, &got), 0);
        assert_same(&want, &got);
        coll_free(&got);
        if (n < 160) { /* small stream (about a quarter of them): every single split point */
            for (size_t cut = 0; cut <= n; cut++) {
                assert_int_equal(decode_cuts(stream, n, &cut, 1, 0, 0, &got), 0);
                assert_same(&want, &got);
                coll_free(&got);
            }
        }
        for (int rep = 0; rep < 8; rep++) {
            size_t cuts[16];
            size_t nc = rndn(16);
            for (size_t i = 0; i < nc; i++) cuts[i] = rndn(n + 1);
            for (size_t i = 1; i < nc; i++) { /* insertion sort */
                for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                    size_t t = cuts[j];
                    cuts[j] = cuts[j - 1];
                    cuts[j - 1] = t;
                }
            }
            assert_int_equal(decode_cuts(stream, n, cuts, nc, 0, 0, &got), 0);
            assert_same(&want, &got);
            coll_free(&got);
        }
        free(stream);
        coll_free(&want);
    }
}

/* Random bytes (not necessarily valid SSE): any split decodes like the whole. */
static void test_split_invariance_garbage(void **state)
{
    (void)state;
    rng_state = 0xabcdef0123456789ull;
    static const char ALPHA[] = "data:id:event:retry:{}\r\n\r\n\n\n 01\xEF\xBB\xBF";
    for (int iter = 0; iter < 300; iter++) {
        char in[48];
        size_t n = rndn(sizeof in);
        for (size_t i = 0; i < n; i++) in[i] = ALPHA[rndn(sizeof ALPHA - 1)];
        coll_t whole = {0}, part = {0};
        int rc = decode_cuts(in, n, NULL, 0, 12, 16, &whole);
        for (size_t cut = 0; cut <= n; cut++) { /* every split point */
            assert_int_equal(decode_cuts(in, n, &cut, 1, 12, 16, &part), rc);
            assert_same(&whole, &part);
            coll_free(&part);
        }
        coll_free(&whole);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_exact),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_encode_sinks),
        cmocka_unit_test(test_decode_basic),
        cmocka_unit_test(test_decode_retry),
        cmocka_unit_test(test_decode_line_endings),
        cmocka_unit_test(test_decode_bom),
        cmocka_unit_test(test_decode_comments_and_stop),
        cmocka_unit_test(test_decode_limits),
        cmocka_unit_test(test_execd_reference_bytes),
        cmocka_unit_test(test_execd_rules),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_split_invariance_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
