/* test_sock.c: the plaintext sg_sock_t path and its close lifetimes.
 *
 * Echo over TCP and over a unix socket with a multi-megabyte payload and one write in
 * flight; sg_sock_close while the TCP connect or the name resolution is pending (the connect
 * callback must run, with an error, before the close callback, and nothing may touch the
 * socket after the close callback freed it — ASan watches). Harness: test/helpers/tls_harness.h. */
#include "../helpers/tls_harness.h"

#include <signal.h>
#include <stdlib.h>

#define PAYLOAD (3u << 20)

static void run_echo(const char *pipe_path)
{
    harness_t h;
    h_init(&h, pipe_path);
    unsigned char *p = h_pattern(PAYLOAD, 7);
    h.payload = h.expect = p;
    h.payload_len = h.expect_len = PAYLOAD;
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_calls, 1);
    assert_int_equal(h.connect_status, 0);
    assert_true(h.match);
    assert_true(h.busy_seen); /* one write in flight is enforced */
    assert_true(h.writes > 3);
    assert_int_equal(h.cli_write_err, 0);
    assert_int_equal(h.srv_accepts, 1);
    assert_int_equal(h.srv_bytes, PAYLOAD);
    assert_int_equal(h.srv_read_err, UV_EOF); /* client closed after the last byte came back */
    assert_int_equal(h.cli_closed, 1);
    free(p);
}

static void test_echo_tcp(void **state)
{
    (void)state;
    run_echo(NULL);
}

static void test_echo_unix(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "/tmp/sg-test-sock-%d.sock", (int)getpid());
    run_echo(path);
}

/* Close right after connect: the connect request is still pending. */
static void test_close_pending_connect(void **state)
{
    (void)state;
    harness_t h;
    h_init(&h, NULL);
    h_connect(&h);
    sg_sock_close(&h.cli, h_cli_close_cb);
    sg_sock_close(&h.cli, h_cli_close_cb); /* idempotent */
    h_run(&h);
    assert_int_equal(h.connect_calls, 1);
    assert_true(h.connect_status < 0);
    assert_true(h.connect_before_close);
    assert_int_equal(h.cli_closed, 1);
}

/* ---- close while uv_getaddrinfo is pending. The owner is heap-allocated and freed in the
 * close callback, so a late on_resolved touching it is a use-after-free under ASan. */

typedef struct {
    sg_sock_t s;
    int *events; /* 1 = connect cb, 2 = close cb, in order */
    int *nevents;
    int *status;
} owner_t;

static void own_connect_cb(sg_sock_t *s, int status)
{
    owner_t *o = (owner_t *)s;
    o->events[(*o->nevents)++] = 1;
    *o->status = status;
}

static void own_close_cb(sg_sock_t *s)
{
    owner_t *o = (owner_t *)s;
    o->events[(*o->nevents)++] = 2;
    free(o);
}

static uv_sem_t blocker_sem;

static void blocker_work(uv_work_t *w)
{
    (void)w;
    uv_sem_wait(&blocker_sem);
}

static void blocker_done(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
}

static void run_close_resolving(int block_pool)
{
    uv_loop_t loop;
    uv_work_t work;
    int events[4] = {0}, nevents = 0, status = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    if (block_pool) { /* the pool has one thread (main): getaddrinfo queues behind this */
        assert_int_equal(uv_sem_init(&blocker_sem, 0), 0);
        assert_int_equal(uv_queue_work(&loop, &work, blocker_work, blocker_done), 0);
    }
    owner_t *o = calloc(1, sizeof(*o));
    o->events = events;
    o->nevents = &nevents;
    o->status = &status;
    int r = sg_sock_connect(&loop, &o->s, "localhost", 9, NULL, NULL, own_connect_cb);
    assert_int_equal(r, 0);
    assert_true(o->s.resolving);
    sg_sock_close(&o->s, own_close_cb);
    if (block_pool) uv_sem_post(&blocker_sem);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(nevents, 2);
    assert_int_equal(events[0], 1); /* connect callback first, with an error */
    assert_int_equal(events[1], 2);
    assert_true(status < 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    if (block_pool) uv_sem_destroy(&blocker_sem);
}

static void test_close_resolving_queued(void **state)
{
    (void)state;
    run_close_resolving(1);
}

static void test_close_resolving_racing(void **state)
{
    (void)state;
    for (int i = 0; i < 20; i++) run_close_resolving(0);
}

/* A name that resolves: the resolver path reaches the server. */
static void test_echo_resolved_name(void **state)
{
    (void)state;
    harness_t h;
    h_init(&h, NULL);
    static const unsigned char msg[] = "resolved";
    h.payload = h.expect = msg;
    h.payload_len = h.expect_len = sizeof(msg) - 1;
    /* localhost may resolve to ::1 first while we listen on 127.0.0.1 only; accept either
     * outcome for the connect, but the callback must come exactly once. */
    h.host = "localhost";
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_calls, 1);
    if (h.connect_status == 0) assert_true(h.match);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as every program using sg_sock does (sock.h) */
    if (getenv("SG_TEST_FILTER")) cmocka_set_test_filter(getenv("SG_TEST_FILTER"));
    /* One pool thread so test_close_resolving_queued can hold it. Set before first use. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_tcp),
        cmocka_unit_test(test_echo_unix),
        cmocka_unit_test(test_close_pending_connect),
        cmocka_unit_test(test_close_resolving_queued),
        cmocka_unit_test(test_close_resolving_racing),
        cmocka_unit_test(test_echo_resolved_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
