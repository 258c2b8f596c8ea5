/* test_plog.c: the process event log (plog.h): frames, ids, the memory bound, output offsets. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_and_ids),
        cmocka_unit_test(test_bound_evicts_oldest),
        cmocka_unit_test(test_find_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
