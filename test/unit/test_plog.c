/* test_plog.c: the process event log (plog.h): frames, ids, the memory bound, output offsets,
 * skipping to an id (a log rebuilt from disk), the SSE frame head. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/plog.h"

static int64_t add(sg_plog_t *l, const char *type, const char *json, sg_plog_kind_t kind,
                   uint32_t out)
{
    return sg_plog_append(l, type, json, strlen(json), kind, 1, out, NULL);
}

static void test_frames_and_ids(void **state)
{
    (void)state;
    sg_plog_t l;
    sg_plog_init(&l, 1 << 20);
    assert_null(sg_plog_get(&l, 1));
    assert_int_equal(add(&l, "init", "{\"type\":\"init\",\"text\":\"x\"}", SG_PLOG_EVENT, 0), 1);
    assert_int_equal(add(&l, "stdout", "{\"type\":\"stdout\",\"text\":\"hi\"}", SG_PLOG_EVENT, 3),
                     2);
    const sg_plog_ent_t *e = sg_plog_get(&l, 2);
    assert_non_null(e);
    const char want[] = "id: 2\nevent: stdout\ndata: {\"type\":\"stdout\",\"text\":\"hi\"}\n\n";
    assert_int_equal(e->len, sizeof(want) - 1);
    assert_memory_equal(e->blk->data + e->off, want, sizeof(want) - 1);
    /* consecutive frames are adjacent in one block */
    const sg_plog_ent_t *e1 = sg_plog_get(&l, 1);
    assert_ptr_equal(e1->blk, e->blk);
    assert_int_equal(e1->off + e1->len, e->off);
    /* the execd frame is the tail of the same chunk */
    const char tail[] = "{\"type\":\"stdout\",\"text\":\"hi\"}\n\n";
    assert_int_equal(e->len - e->json_off, sizeof(tail) - 1);
    assert_memory_equal(e->blk->data + e->off + e->json_off, tail, sizeof(tail) - 1);
    assert_int_equal(e->out_off, 0);
    assert_int_equal(e->out_len, 3);
    assert_int_equal(l.out_end, 3);
    assert_int_equal(e->cum, l.cum);
    assert_null(sg_plog_get(&l, 3));
    assert_null(sg_plog_get(&l, 0));
    /* CR / LF in the JSON or the type would break the framing */
    assert_int_equal(add(&l, "stdout", "{\"a\":\n1}", SG_PLOG_EVENT, 0), SG_EINVAL);
    assert_int_equal(add(&l, "std\rout", "{}", SG_PLOG_EVENT, 0), SG_EINVAL);
    assert_int_equal(l.next_id, 3);
    sg_plog_free(&l);
}

static void test_bound_evicts_oldest(void **state)
{
    (void)state;
    sg_plog_t l;
    char json[200];
    memset(json, 'x', sizeof(json));
    json[0] = '{';
    json[sizeof(json) - 2] = '}';
    json[sizeof(json) - 1] = '\0';
    uint64_t one = sg_plog_cost(strlen("id: 1\nevent: stdout\ndata: ") + strlen(json) + 2);
    sg_plog_init(&l, one * 10 + one / 2); /* room for 10 */
    for (int i = 0; i < 1000; i++) {
        int64_t delta = 0;
        int64_t id = sg_plog_append(&l, "stdout", json, strlen(json), SG_PLOG_EVENT, 1, 10, &delta);
        assert_int_equal(id, i + 1);
        assert_true(l.bytes <= l.max_bytes);
        if (i >= 10) assert_true(delta <= 16); /* one in, one out (ids grow a digit at times) */
    }
    assert_true(l.count >= 9 && l.count <= 10);
    assert_int_equal(l.first_id + l.count, l.next_id);
    assert_int_equal(l.evicted, 1000 - l.count);
    assert_null(sg_plog_get(&l, l.first_id - 1));
    assert_non_null(sg_plog_get(&l, l.first_id));
    assert_int_equal(sg_plog_first_out(&l), (l.first_id - 1) * 10);
    assert_int_equal(l.out_end, 10000);
    /* the newest event is kept even when it alone is over the bound */
    char big[4000];
    memset(big, 'y', sizeof(big));
    big[0] = '{';
    big[sizeof(big) - 2] = '}';
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(add(&l, "stdout", big, SG_PLOG_EVENT, 0), 1001);
    assert_int_equal(l.count, 1);
    assert_int_equal(l.first_id, 1001);
    sg_plog_free(&l);
}

static void test_find_out(void **state)
{
    (void)state;
    sg_plog_t l;
    sg_plog_init(&l, 1 << 20);
    add(&l, "init", "{}", SG_PLOG_EVENT, 0);        /* 1: no output */
    add(&l, "sandgate.raw", "{}", SG_PLOG_RAW, 5);  /* 2: [0,5) */
    add(&l, "stdout", "{}", SG_PLOG_EVENT, 0);      /* 3: a line whose bytes 2 carries */
    add(&l, "sandgate.raw", "{}", SG_PLOG_RAW, 3);  /* 4: [5,8) */
    add(&l, "sandgate.raw", "{}", SG_PLOG_RAW, 10); /* 5: [8,18) */
    assert_int_equal(sg_plog_find_out(&l, 0)->id, 2);
    assert_int_equal(sg_plog_find_out(&l, 4)->id, 2);
    assert_int_equal(sg_plog_find_out(&l, 5)->id, 4);
    assert_int_equal(sg_plog_find_out(&l, 7)->id, 4);
    assert_int_equal(sg_plog_find_out(&l, 8)->id, 5);
    assert_int_equal(sg_plog_find_out(&l, 17)->id, 5);
    assert_null(sg_plog_find_out(&l, 18));
    assert_int_equal(sg_plog_first_out(&l), 0);
    sg_plog_free(&l);
    sg_plog_init(&l, 1 << 20);
    assert_null(sg_plog_find_out(&l, 0));
    assert_int_equal(sg_plog_first_out(&l), 0);
    sg_plog_free(&l);
}

static void test_skip_to(void **state)
{
    (void)state;
    sg_plog_t l;
    sg_plog_init(&l, 1 << 20);
    /* a skip on an empty log: nothing held, nothing freed */
    int64_t delta = 12345;
    sg_plog_skip_to(&l, 1, 0, &delta);
    assert_int_equal(delta, 0);
    assert_int_equal(l.first_id, 1);
    assert_int_equal(l.next_id, 1);

    /* event 1 alone fills a block of its own, so only its entry (and a reader) holds it */
    static char big[70000];
    memset(big, 'b', sizeof(big));
    big[0] = '{';
    big[sizeof(big) - 2] = '}';
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(add(&l, "stdout", big, SG_PLOG_EVENT, 4), 1);
    for (int i = 2; i <= 5; i++)
        assert_int_equal(add(&l, "stdout", "{\"t\":\"abc\"}", SG_PLOG_EVENT, 3), i);
    assert_int_equal(l.out_end, 4 + 4 * 3);
    uint64_t held = l.bytes, cum = l.cum;
    uint64_t want_held = 0;
    for (uint64_t id = 1; id <= 5; id++)
        want_held += sg_plog_cost(sg_plog_get(&l, id)->len);
    assert_int_equal(held, want_held);
    const sg_plog_ent_t *e1 = sg_plog_get(&l, 1);
    assert_ptr_not_equal(e1->blk, l.tail);
    sg_buf_t *kept = sg_buf_ref(e1->blk); /* a connection still sending event 1 */
    uint32_t kept_off = e1->off, kept_len = e1->len;
    assert_int_equal(kept->refs, 2);

    sg_plog_skip_to(&l, 100, 1000, &delta);
    assert_int_equal(delta, -(int64_t)held);
    assert_int_equal(l.bytes, 0);
    assert_int_equal(l.count, 0);
    assert_int_equal(l.first_id, 100);
    assert_int_equal(l.next_id, 100);
    assert_int_equal(l.out_end, 1000);
    assert_int_equal(l.cum, cum); /* frame bytes ever appended: unchanged */
    assert_int_equal(sg_plog_first_out(&l), 1000);
    assert_null(sg_plog_find_out(&l, 0));
    assert_null(sg_plog_find_out(&l, 1000));
    /* readers of dropped or skipped ids are answered "evicted": NULL and below first_id */
    for (uint64_t id = 1; id < 100; id++) {
        assert_null(sg_plog_get(&l, id));
        assert_true(id < l.first_id);
    }
    assert_null(sg_plog_get(&l, 100)); /* not appended yet */
    /* the reader's reference keeps event 1's block (ASan checks the bytes are still there) */
    assert_int_equal(kept->refs, 1);
    assert_memory_equal(kept->data + kept_off, "id: 1\nevent: stdout\ndata: {bbb", 30);
    assert_memory_equal(kept->data + kept_off + kept_len - 3, "}\n\n", 3);
    sg_buf_unref(kept);

    /* the log goes on at id 100 and output offset 1000 */
    assert_int_equal(sg_plog_append(&l, "stdout", "{}", 2, SG_PLOG_EVENT, 1, 7, &delta), 100);
    const sg_plog_ent_t *e = sg_plog_get(&l, 100);
    assert_non_null(e);
    const char want[] = "id: 100\nevent: stdout\ndata: {}\n\n";
    assert_int_equal(e->len, sizeof(want) - 1);
    assert_memory_equal(e->blk->data + e->off, want, sizeof(want) - 1);
    assert_int_equal(e->out_off, 1000);
    assert_int_equal(l.out_end, 1007);
    assert_int_equal(e->cum, cum + e->len);
    assert_int_equal(delta, (int64_t)sg_plog_cost(e->len));
    assert_int_equal(l.bytes, sg_plog_cost(e->len));
    assert_int_equal(l.first_id, 100);
    assert_int_equal(l.next_id, 101);
    assert_ptr_equal(sg_plog_find_out(&l, 1003), e);
    assert_int_equal(sg_plog_first_out(&l), 1000);
    assert_int_equal(add(&l, "stdout", "{}", SG_PLOG_EVENT, 0), 101);
    assert_int_equal(sg_plog_get(&l, 101)->out_off, 1007);

    /* skipping to the current position just drops what is held */
    uint64_t held2 = l.bytes;
    sg_plog_skip_to(&l, l.next_id, l.out_end, &delta);
    assert_int_equal(delta, -(int64_t)held2);
    assert_int_equal(l.bytes, 0);
    assert_int_equal(l.first_id, 102);
    assert_int_equal(l.next_id, 102);
    assert_int_equal(l.out_end, 1007);
    assert_null(sg_plog_get(&l, 100));
    assert_null(sg_plog_get(&l, 101));
    sg_plog_skip_to(&l, 102, 1007, NULL); /* no delta wanted; nothing held */
    assert_int_equal(l.next_id, 102);
    assert_int_equal(add(&l, "stderr", "{}", SG_PLOG_EVENT, 2), 102);
    assert_int_equal(sg_plog_get(&l, 102)->out_off, 1007);
    assert_int_equal(l.out_end, 1009);
    assert_int_equal(l.count, 1);
    sg_plog_free(&l);
}

/* keep_from pins what a durable log's writer has not written: over the bound, nothing from
 * the pin on is dropped; moving the pin up drops down to the bound; 0 releases it. */
static void test_keep_from(void **state)
{
    (void)state;
    sg_plog_t l;
    char json[200];
    memset(json, 0, sizeof(json));
    memset(json, 'a', 150);
    uint64_t one = sg_plog_cost(strlen("id: 1\nevent: stdout\ndata: ") + 150 + 2);
    sg_plog_init(&l, 4 * one); /* room for about four events */
    sg_plog_keep_from(&l, 1, NULL);
    for (int i = 0; i < 20; i++)
        assert_int_equal(add(&l, "stdout", json, SG_PLOG_EVENT, 0), i + 1);
    assert_int_equal(l.first_id, 1); /* all pinned: nothing dropped */
    assert_int_equal(l.count, 20);
    int64_t delta = 0;
    uint64_t held = l.bytes;
    sg_plog_keep_from(&l, 11, &delta); /* 1..10 written */
    assert_int_equal(l.first_id, 11);  /* the bound drops what is written, not past the pin */
    assert_int_equal(l.count, 10);
    assert_int_equal(delta, -(int64_t)(10 * one + 1)); /* ids 1..9 and 10 (one digit more) */
    assert_int_equal(held - l.bytes, 10 * one + 1);
    assert_null(sg_plog_get(&l, 10));
    assert_non_null(sg_plog_get(&l, 11));
    sg_plog_keep_from(&l, 0, &delta); /* released: down to the bound */
    assert_true(l.bytes <= l.max_bytes);
    assert_int_equal(l.next_id - l.first_id, l.count);
    assert_true(l.count <= 4 && l.count >= 3);
    assert_int_equal(l.first_id, 21 - l.count);
    sg_plog_free(&l);
}

static void test_head(void **state)
{
    (void)state;
    char h[128];
    memset(h, 0x5a, sizeof(h));
    size_t n = sg_plog_head(h, 1, "stdout");
    const char w1[] = "id: 1\nevent: stdout\ndata: ";
    assert_int_equal(n, sizeof(w1) - 1);
    assert_memory_equal(h, w1, n);

    n = sg_plog_head(h, 0, "init");
    const char w0[] = "id: 0\nevent: init\ndata: ";
    assert_int_equal(n, sizeof(w0) - 1);
    assert_memory_equal(h, w0, n);

    n = sg_plog_head(h, 1234567890, "execution_complete");
    const char w2[] = "id: 1234567890\nevent: execution_complete\ndata: ";
    assert_int_equal(n, sizeof(w2) - 1);
    assert_memory_equal(h, w2, n);

    n = sg_plog_head(h, 7, "");
    assert_int_equal(n, strlen("id: 7\nevent: \ndata: "));
    assert_memory_equal(h, "id: 7\nevent: \ndata: ", n);

    /* the longest id with a 48-byte type still fits the 96 bytes promised */
    char t48[49];
    memset(t48, 't', 48);
    t48[48] = '\0';
    memset(h, 0x5a, sizeof(h));
    n = sg_plog_head(h, UINT64_MAX, t48);
    assert_int_equal(n, 4 + 20 + 8 + 48 + 7);
    assert_memory_equal(h, "id: 18446744073709551615\nevent: tttt", 36);
    assert_memory_equal(h + n - 8, "t\ndata: ", 8);
    for (size_t i = 96; i < sizeof(h); i++)
        assert_int_equal((unsigned char)h[i], 0x5a);
    /* a type that cannot fit 96 bytes with every id is refused, and so is its append */
    char t60[61];
    memset(t60, 'u', 60);
    t60[60] = '\0';
    assert_int_equal(sg_plog_head(h, 1, t60), 0);
    sg_plog_t l;
    sg_plog_init(&l, 1 << 20);
    assert_int_equal(add(&l, t60, "{}", SG_PLOG_EVENT, 0), SG_EINVAL);
    assert_int_equal(l.next_id, 1);
    assert_int_equal(l.count, 0);

    /* every stored frame starts with the head of its id and type; the JSON follows it */
    const char *types[] = {"init", "stdout", "stderr", "sandgate.raw", "execution_complete"};
    for (int i = 0; i < 25; i++) {
        const char *t = types[i % 5];
        int64_t id = add(&l, t, "{\"k\":1}", i % 5 == 3 ? SG_PLOG_RAW : SG_PLOG_EVENT, 0);
        assert_int_equal(id, i + 1);
        char hd[96];
        size_t hn = sg_plog_head(hd, (uint64_t)id, t);
        assert_true(hn > 0);
        const sg_plog_ent_t *e = sg_plog_get(&l, (uint64_t)id);
        assert_int_equal(e->json_off, hn);
        assert_int_equal(e->len, hn + strlen("{\"k\":1}") + 2);
        assert_memory_equal(e->blk->data + e->off, hd, hn);
        assert_memory_equal(e->blk->data + e->off + hn, "{\"k\":1}\n\n", 9);
    }
    sg_plog_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_and_ids),
        cmocka_unit_test(test_bound_evicts_oldest),
        cmocka_unit_test(test_find_out),
        cmocka_unit_test(test_skip_to),
        cmocka_unit_test(test_keep_from),
        cmocka_unit_test(test_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
