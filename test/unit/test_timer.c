/* test_timer.c: duration lists on a real loop.
 *
 * No test asserts how long anything took. Each checks order and "never early" (an entry fires
 * only once the loop's clock reached its deadline), and ends by running the loop to completion
 * and closing it with no handle left open. A watchdog (unref'd, so it never keeps a loop
 * alive) fails a test that would otherwise hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/timer.h"

#define N 64

typedef struct ent {
    sg_tentry_t e;
    int idx;
    int fired;
    uint64_t deadline; /* model: when it may fire at the earliest */
    uint64_t seq;      /* model: order of the last arm */
    sg_tlist_t *on;    /* model: list armed on, NULL if not */
} ent_t;

typedef struct fixture {
    uv_loop_t loop;
    uv_timer_t watchdog;
    sg_tlist_t lists[3];
    ent_t ents[N];
    int order[4 * N * 64];
    int norder;
    uint64_t seq;
    uint64_t last_seq[3];
    int closed;
    void (*on_fire)(struct fixture *f, ent_t *x);
} fixture_t;

static fixture_t *F;

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    fail_msg("watchdog: the loop did not finish");
}

static int list_index(fixture_t *f, sg_tlist_t *l)
{
    for (int i = 0; i < 3; i++)
        if (&f->lists[i] == l) return i;
    return -1;
}

static void model_arm(fixture_t *f, sg_tlist_t *l, ent_t *x)
{
    sg_tentry_arm(l, &x->e);
    if (l->duration_ms == 0) {
        x->on = NULL;
        assert_false(sg_tentry_armed(&x->e));
        return;
    }
    x->on = l;
    x->deadline = uv_now(&f->loop) + l->duration_ms;
    x->seq = ++f->seq;
    assert_true(sg_tentry_armed(&x->e));
}

static void model_disarm(ent_t *x)
{
    sg_tentry_disarm(&x->e);
    x->on = NULL;
    assert_false(sg_tentry_armed(&x->e));
}

static void on_entry(sg_tentry_t *e)
{
    fixture_t *f = F;
    ent_t *x = SG_CONTAINER_OF(e, ent_t, e);
    assert_non_null(x->on); /* fired while armed in the model */
    assert_false(sg_tentry_armed(e));
    assert_true(uv_now(&f->loop) >= x->deadline); /* never early */
    int li = list_index(f, x->on);
    assert_true(li >= 0);
    assert_true(x->seq > f->last_seq[li]); /* one list fires in the order it was armed */
    f->last_seq[li] = x->seq;
    x->on = NULL;
    x->fired++;
    assert_true(f->norder < (int)SG_ARRAY_SIZE(f->order));
    f->order[f->norder++] = x->idx;
    if (f->on_fire) f->on_fire(f, x);
}

static void setup_fixture(fixture_t *f, const uint64_t *durations, int nlists)
{
    memset(f, 0, sizeof *f);
    F = f;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->watchdog);
    uv_timer_start(&f->watchdog, on_watchdog, 60000, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    for (int i = 0; i < nlists; i++) sg_tlist_init(&f->loop, &f->lists[i], durations[i]);
    for (int i = 0; i < N; i++) {
        sg_tentry_init(&f->ents[i].e, on_entry);
        f->ents[i].idx = i;
    }
}

static void on_list_closed(sg_tlist_t *l)
{
    (void)l;
    F->closed++;
}

static void teardown_fixture(fixture_t *f, int nlists)
{
    for (int i = 0; i < nlists; i++) sg_tlist_close(&f->lists[i], on_list_closed);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->closed, nlists);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    F = NULL;
}

static void run(fixture_t *f)
{
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
}

/* ---- many entries, distinct deadlines, arm order = fire order */

static int g_step;
static void stepper_arm_batch(uv_timer_t *t)
{
    fixture_t *f = F;
    for (int k = 0; k < 8; k++) model_arm(f, &f->lists[0], &f->ents[g_step * 8 + k]);
    if (++g_step == N / 8) uv_timer_stop(t);
}

static void test_fire_order(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof *f);
    setup_fixture(f, (uint64_t[]){20}, 1);
    uv_timer_t step;
    uv_timer_init(&f->loop, &step);
    g_step = 0;
    uv_timer_start(&step, stepper_arm_batch, 0, 3); /* batches at different loop times */
    run(f);
    assert_int_equal(f->norder, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(f->order[i], i);
        assert_int_equal(f->ents[i].fired, 1);
    }
    assert_int_equal(f->lists[0].count, 0);
    assert_null(f->lists[0].head);
    assert_false(uv_is_active((uv_handle_t *)&f->lists[0].timer)); /* an empty list holds no timer */
    uv_close((uv_handle_t *)&step, NULL);
    teardown_fixture(f, 1);
    free(f);
}

/* ---- re-arm postpones; disarm prevents */

static void rearm_a(uv_timer_t *t)
{
    model_arm(F, &F->lists[0], &F->ents[0]);
    model_disarm(&F->ents[2]);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_rearm_and_disarm(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof *f);
    setup_fixture(f, (uint64_t[]){40}, 1);
    for (int i = 0; i < 4; i++) model_arm(f, &f->lists[0], &f->ents[i]);
    model_disarm(&f->ents[3]);
    model_disarm(&f->ents[3]); /* twice is fine */
    assert_int_equal(f->lists[0].count, 2 + 1);
    uv_timer_t *t = malloc(sizeof *t);
    uv_timer_init(&f->loop, t);
    uv_timer_start(t, rearm_a, 10, 0); /* re-arms 0 (head) and disarms 2, 10 ms in */
    run(f);
    free(t);
    assert_int_equal(f->norder, 2);
    assert_int_equal(f->order[0], 1);
    assert_int_equal(f->order[1], 0); /* postponed behind 1; its deadline checked in on_entry */
    assert_int_equal(f->ents[2].fired, 0);
    assert_int_equal(f->ents[3].fired, 0);
    teardown_fixture(f, 1);
    free(f);
}

/* ---- callbacks that re-arm themselves, and arm / disarm others on the same pass */

static void cb_actions(fixture_t *f, ent_t *x)
{
    if (x->idx == 0 && x->fired < 5) model_arm(f, &f->lists[0], x); /* periodic */
    if (x->idx == 1) model_disarm(&f->ents[2]);                     /* same deadline, due now */
    if (x->idx == 3) model_arm(f, &f->lists[0], &f->ents[4]);       /* due now: postponed */
    if (x->idx == 5) model_arm(f, &f->lists[1], &f->ents[6]);       /* moved to another list */
}

static void test_callbacks_mutate(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof *f);
    setup_fixture(f, (uint64_t[]){15, 5}, 2);
    f->on_fire = cb_actions;
    for (int i = 0; i < 7; i++) model_arm(f, &f->lists[0], &f->ents[i]); /* all the same deadline */
    run(f);
    assert_int_equal(f->ents[0].fired, 5);
    assert_int_equal(f->ents[1].fired, 1);
    assert_int_equal(f->ents[2].fired, 0);
    assert_int_equal(f->ents[3].fired, 1);
    assert_int_equal(f->ents[4].fired, 1);
    assert_int_equal(f->ents[5].fired, 1);
    assert_int_equal(f->ents[6].fired, 1);
    /* first pass over the seven equal deadlines: 2 was disarmed by 1 and 4 postponed by 3
     * before their turn, and 6 moved to the 5 ms list by 5; 0 re-armed itself behind them */
    assert_int_equal(f->order[0], 0);
    assert_int_equal(f->order[1], 1);
    assert_int_equal(f->order[2], 3);
    assert_int_equal(f->order[3], 5);
    teardown_fixture(f, 2);
    free(f);
}

/* ---- moving between lists, and duration 0 */

static void test_move_and_zero(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof *f);
    setup_fixture(f, (uint64_t[]){3600000, 5, 0}, 3);
    ent_t *a = &f->ents[0], *b = &f->ents[1], *c = &f->ents[2];
    model_arm(f, &f->lists[0], a);
    model_arm(f, &f->lists[0], b);
    assert_true(uv_is_active((uv_handle_t *)&f->lists[0].timer));
    model_arm(f, &f->lists[1], a); /* head moves to the short list */
    assert_int_equal(f->lists[0].count, 1);
    assert_int_equal(f->lists[1].count, 1);
    model_arm(f, &f->lists[2], b); /* to a disabled list: just disarmed */
    assert_int_equal(f->lists[0].count, 0);
    assert_int_equal(f->lists[2].count, 0);
    /* the hour-long list is empty: its timer must not keep the loop alive */
    assert_false(uv_is_active((uv_handle_t *)&f->lists[0].timer));
    model_arm(f, &f->lists[2], c); /* duration 0 never fires */
    assert_false(uv_is_active((uv_handle_t *)&f->lists[2].timer));
    run(f); /* returns once a fired: nothing else is pending */
    assert_int_equal(a->fired, 1);
    assert_int_equal(b->fired, 0);
    assert_int_equal(c->fired, 0);
    teardown_fixture(f, 3);
    free(f);
}

/* Disarming the last entry stops the list's timer: an idle list must not keep uv_run alive
 * until a stale expiry (up to a whole timeout after the last connection went away). */
static void test_disarm_last_stops_timer(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof *f);
    setup_fixture(f, (uint64_t[]){3600000}, 1);
    model_arm(f, &f->lists[0], &f->ents[0]);
    model_arm(f, &f->lists[0], &f->ents[1]);
    model_disarm(&f->ents[0]);
    assert_true(uv_is_active((uv_handle_t *)&f->lists[0].timer)); /* 1 is still pending */
    model_disarm(&f->ents[1]);
    assert_false(uv_is_active((uv_handle_t *)&f->lists[0].timer));
    run(f); /* returns at once: nothing is pending */
    assert_int_equal(f->norder, 0);
    teardown_fixture(f, 1);
    free(f);
}

/* ---- closing a list with entries still armed */

static void test_close_with_armed(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof *f);
    setup_fixture(f, (uint64_t[]){3600000}, 1);
    for (int i = 0; i < 10; i++) model_arm(f, &f->lists[0], &f->ents[i]);
    teardown_fixture(f, 1); /* would hang an hour if the timer were left running */
    for (int i = 0; i < 10; i++) {
        assert_false(sg_tentry_armed(&f->ents[i].e));
        assert_int_equal(f->ents[i].fired, 0);
    }
    free(f);
}

/* ---- random arms, re-arms, moves and disarms, from timers and callbacks */

static uint64_t rng = 0x0123456789abcdefull;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static void random_op(fixture_t *f)
{
    ent_t *x = &f->ents[rnd() % N];
    int op = (int)(rnd() % 5);
    if (op == 4) model_disarm(x);
    else model_arm(f, &f->lists[op % 3], x); /* lists: 7 ms, 13 ms, disabled */
}

static int g_ticks;
static void chaos_tick(uv_timer_t *t)
{
    for (int k = 0; k < 6; k++) random_op(F);
    if (++g_ticks == 60) uv_timer_stop(t);
}

static void chaos_on_fire(fixture_t *f, ent_t *x)
{
    (void)x;
    if (rnd() % 3 == 0) random_op(f);
}

static void test_random(void **state)
{
    (void)state;
    fixture_t *f = malloc(sizeof *f);
    setup_fixture(f, (uint64_t[]){7, 13, 0}, 3);
    f->on_fire = chaos_on_fire;
    uv_timer_t step;
    uv_timer_init(&f->loop, &step);
    g_ticks = 0;
    uv_timer_start(&step, chaos_tick, 1, 1);
    run(f);
    assert_true(f->norder > 50); /* the ops did fire things */
    for (int i = 0; i < N; i++) {
        assert_null(f->ents[i].on); /* everything armed eventually fired */
        assert_false(sg_tentry_armed(&f->ents[i].e));
    }
    for (int i = 0; i < 3; i++) assert_int_equal(f->lists[i].count, 0);
    uv_close((uv_handle_t *)&step, NULL);
    teardown_fixture(f, 3);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fire_order),
        cmocka_unit_test(test_rearm_and_disarm),
        cmocka_unit_test(test_callbacks_mutate),
        cmocka_unit_test(test_move_and_zero),
        cmocka_unit_test(test_disarm_last_stops_timer),
        cmocka_unit_test(test_close_with_armed),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
