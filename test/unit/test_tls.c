/* test_tls.c: TLS contexts and TLS over sg_sock_t, both ends on one loop over loopback.
 *
 * Certificates are made at test time by the openssl CLI into a temp dir (tls_harness.h): a
 * CA, a server certificate for DNS:localhost + IP:127.0.0.1 signed by it, and an unrelated CA.
 * Proves: multi-megabyte echo with the client verifying CA + hostname (IP SAN, DNS SNI, over
 * a unix socket), server backpressure (read_stop / read_start with decrypted data pending),
 * writes queued before the handshake, SG_ECERT for a wrong CA / name / IP, errors (not hangs)
 * for plaintext-vs-TLS mismatches in both directions, clean closes during the handshake and
 * during a pending connect / resolve, context errors. Each run ends with uv_loop_close() == 0. */
#include "../helpers/tls_harness.h"

#include <signal.h>
#include <stdlib.h>

static h_certs_t certs;
static sg_tls_ctx_t *sctx, *cctx, *cctx_other, *cctx_noverify;

static int group_setup(void **state)
{
    (void)state;
    char err[256];
    h_certs_make(&certs);
    if (sg_tls_ctx_new_server(&sctx, certs.cert, certs.key, err, sizeof(err)) != 0 ||
        sg_tls_ctx_new_client(&cctx, certs.ca, 1, err, sizeof(err)) != 0 ||
        sg_tls_ctx_new_client(&cctx_other, certs.other_ca, 1, err, sizeof(err)) != 0 ||
        sg_tls_ctx_new_client(&cctx_noverify, NULL, 0, err, sizeof(err)) != 0) {
        fprintf(stderr, "context setup failed: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    sg_tls_ctx_free(sctx);
    sg_tls_ctx_free(cctx);
    sg_tls_ctx_free(cctx_other);
    sg_tls_ctx_free(cctx_noverify);
    h_certs_remove(&certs);
    return 0;
}

static void tls_init(harness_t *h, const char *pipe_path, sg_tls_ctx_t *client)
{
    h_init(h, pipe_path);
    h->sctx = sctx;
    h->cctx = client;
}

static void run_echo(const char *pipe_path, const char *sni, size_t size)
{
    harness_t h;
    tls_init(&h, pipe_path, cctx);
    h.sni = sni;
    unsigned char *p = h_pattern(size, 11);
    h.payload = h.expect = p;
    h.payload_len = h.expect_len = size;
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_calls, 1);
    assert_int_equal(h.connect_status, 0);
    assert_true(h.match);
    assert_true(h.busy_seen);
    assert_int_equal(h.cli_write_err, 0);
    assert_int_equal(h.srv_bytes, size);
    /* The client's close sent close_notify (or at least FIN): a clean end, not an error. */
    assert_int_equal(h.srv_read_err, UV_EOF);
    assert_int_equal(h.cli_closed, 1);
    free(p);
}

/* host 127.0.0.1, sni NULL: verified against the certificate's iPAddress SAN. */
static void test_echo_ip_san(void **state)
{
    (void)state;
    run_echo(NULL, NULL, 5u << 20);
}

/* sni "localhost": SNI sent, verified against the dNSName SAN. */
static void test_echo_dns_name(void **state)
{
    (void)state;
    run_echo(NULL, "localhost", 2u << 20);
}

static void test_echo_unix_socket(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "/tmp/sg-test-tls-%d.sock", (int)getpid());
    run_echo(path, "localhost", 3u << 20);
}

/* The echo server holds at most ~1 MiB and stops reading above that; with several MiB in
 * flight it must stop and restart, and restarting must deliver records that were already
 * received (inbox / mbedTLS) without waiting for new socket data, or the run would stall. */
static void test_backpressure_resumes(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    size_t size = 6u << 20;
    unsigned char *p = h_pattern(size, 3);
    h.payload = h.expect = p;
    h.payload_len = h.expect_len = size;
    h_connect(&h);
    h_run(&h);
    assert_true(h.match);
    assert_true(h.srv_read_stops > 0);
    free(p);
}

/* Deterministic version of the above: the server stops reading after every read callback
 * and restarts from a timer. The client wrote everything at once and waits, so the records
 * already in the inbox / mbedTLS must be delivered by sg_sock_read_start() alone. */
static void test_read_restart_delivers_buffered(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    h.mode = SRV_ECHO_STOPSTART;
    /* One client write -> three records in one uv_write; the server's reads end up holding
     * the last record(s) while it is stopped, with nothing more coming from the socket. */
    size_t size = 40000;
    unsigned char *p = h_pattern(size, 5);
    h.payload = h.expect = p;
    h.payload_len = h.expect_len = size;
    h_connect(&h);
    h_run(&h);
    assert_true(h.match);
    assert_true(h.srv_read_stops > 1);
    free(p);
}

/* The server writes before the handshake is done: queued, then delivered after it. */
static void test_write_before_handshake(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    h.mode = SRV_GREET;
    h.expect = (const unsigned char *)h_greeting;
    h.expect_len = sizeof(h_greeting) - 1;
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_status, 0);
    assert_true(h.match);
    assert_int_equal(h.srv_write_err, 0);
}

/* The server writes, waits for the write callback, closes: the client reads everything and
 * then a clean UV_EOF (close_notify), not an error. */
static void test_server_close_is_eof(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    h.mode = SRV_GREET_EOF;
    h.sni = "localhost";
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_status, 0);
    assert_int_equal(h.cli_read_err, UV_EOF);
    assert_int_equal(h.rlen, sizeof(h_greeting) - 1);
    assert_memory_equal(h.rhead, h_greeting, sizeof(h_greeting) - 1);
}

static void run_reject(sg_tls_ctx_t *client, const char *sni, int want)
{
    harness_t h;
    tls_init(&h, NULL, client);
    h.sni = sni;
    static const unsigned char msg[] = "never sent";
    h.payload = h.expect = msg;
    h.payload_len = h.expect_len = sizeof(msg) - 1;
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_calls, 1);
    assert_int_equal(h.connect_status, want);
    assert_true(h.connect_before_close);
    assert_int_equal(h.srv_bytes, 0);
    assert_int_equal(h.rlen, 0);
    if (want == SG_ECERT) {
        assert_non_null(strstr(h.tls_err, "certificate verification failed"));
        assert_true(h.srv_read_err < 0); /* the server saw the alert or the close */
    }
}

static void test_reject_wrong_ca(void **state)
{
    (void)state;
    run_reject(cctx_other, "localhost", SG_ECERT);
}

static void test_reject_wrong_hostname(void **state)
{
    (void)state;
    run_reject(cctx, "wrong.example", SG_ECERT);
}

static void test_reject_wrong_ip(void **state)
{
    (void)state;
    run_reject(cctx, "127.0.0.2", SG_ECERT);
}

/* verify = 0 accepts the wrong name: proves the flag, and that SG_ECERT above came from it. */
static void test_verify_off_accepts(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx_noverify);
    h.sni = "wrong.example";
    static const unsigned char msg[] = "unverified but encrypted";
    h.payload = h.expect = msg;
    h.payload_len = h.expect_len = sizeof(msg) - 1;
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_status, 0);
    assert_true(h.match);
}

/* A plaintext client speaking HTTP to a TLS server: the server reports SG_ETLS and closes,
 * the client sees its read end (alert bytes then EOF/reset), nobody hangs. */
static void test_plain_client_tls_server(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, NULL);
    static const unsigned char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    h.payload = req;
    h.payload_len = sizeof(req) - 1;
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_status, 0);
    assert_int_equal(h.srv_read_err, SG_ETLS);
    assert_true(h.cli_read_err < 0);
    assert_int_equal(h.srv_bytes, 0);
}

/* A TLS client against a plaintext echo server gets its ClientHello back: SG_ETLS. */
static void test_tls_client_plain_server(void **state)
{
    (void)state;
    harness_t h;
    h_init(&h, NULL);
    h.cctx = cctx;
    h.sni = "localhost";
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.connect_calls, 1);
    assert_int_equal(h.connect_status, SG_ETLS);
    assert_true(h.tls_err[0] != '\0');
}

/* The client closes while waiting for the ServerHello (the server got its ClientHello). */
static void test_client_close_during_handshake(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    h.mode = SRV_RAW_SILENT;
    h.sni = "localhost";
    h_connect(&h);
    h_run(&h);
    assert_true(h.srv_bytes > 0);
    assert_int_equal(h.connect_calls, 1);
    assert_int_equal(h.connect_status, SG_ECLOSED);
    assert_true(h.connect_before_close);
    assert_int_equal(h.cli_closed, 1);
}

/* The server closes mid-handshake: the client's connect fails with SG_ETLS. */
static void test_server_close_during_handshake(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    h.mode = SRV_CLOSE_AT_ACCEPT;
    h.sni = "localhost";
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.srv_accepts, 1);
    assert_int_equal(h.connect_calls, 1);
    assert_int_equal(h.connect_status, SG_ETLS);
}

/* A write queued before the handshake, then close: its callback runs (SG_ECLOSED) before
 * the close callback. */
static void test_close_with_queued_write(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    h.mode = SRV_GREET_CLOSE;
    h.sni = "localhost";
    h_connect(&h);
    h_run(&h);
    assert_int_equal(h.srv_accepts, 1);
    assert_int_equal(h.srv_write_err, SG_ECLOSED);
    assert_int_equal(h.srv_unfinished_writes, 0);
    assert_true(h.connect_status < 0);
}

static void test_close_pending_connect(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    h_connect(&h);
    sg_sock_close(&h.cli, h_cli_close_cb);
    h_run(&h);
    assert_int_equal(h.connect_calls, 1);
    assert_true(h.connect_status < 0);
    assert_true(h.connect_before_close);
}

static void test_close_pending_resolve(void **state)
{
    (void)state;
    harness_t h;
    tls_init(&h, NULL, cctx);
    h.host = "localhost";
    h_connect(&h);
    sg_sock_close(&h.cli, h_cli_close_cb);
    h_run(&h);
    assert_int_equal(h.connect_calls, 1);
    assert_true(h.connect_status < 0);
    assert_true(h.connect_before_close);
}

static void test_ctx_errors(void **state)
{
    (void)state;
    char err[256] = "";
    sg_tls_ctx_t *c = (sg_tls_ctx_t *)1;
    assert_int_equal(sg_tls_ctx_new_server(&c, "/nonexistent.crt", certs.key, err, sizeof(err)),
                     SG_EINVAL);
    assert_null(c);
    assert_non_null(strstr(err, "/nonexistent.crt"));
    /* certificate and key that do not belong together */
    char other_key[320];
    snprintf(other_key, sizeof(other_key), "%s/other-ca.key", certs.dir);
    err[0] = '\0';
    assert_int_equal(sg_tls_ctx_new_server(&c, certs.cert, other_key, err, sizeof(err)), SG_EINVAL);
    assert_true(err[0] != '\0');
    assert_int_equal(sg_tls_ctx_new_server(&c, certs.key, certs.key, err, sizeof(err)), SG_EINVAL);
    assert_int_equal(sg_tls_ctx_new_client(&c, "/nonexistent-ca.pem", 1, err, sizeof(err)), SG_EINVAL);
    assert_null(c);
    /* the system bundle loads */
    assert_int_equal(sg_tls_ctx_new_client(&c, NULL, 1, err, sizeof(err)), 0);
    assert_non_null(c);
    sg_tls_ctx_free(c);
    sg_tls_ctx_free(NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as every program using sg_sock does (sock.h) */
    if (getenv("SG_TEST_FILTER")) cmocka_set_test_filter(getenv("SG_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_echo_ip_san),
        cmocka_unit_test(test_echo_dns_name),
        cmocka_unit_test(test_echo_unix_socket),
        cmocka_unit_test(test_backpressure_resumes),
        cmocka_unit_test(test_read_restart_delivers_buffered),
        cmocka_unit_test(test_write_before_handshake),
        cmocka_unit_test(test_server_close_is_eof),
        cmocka_unit_test(test_reject_wrong_ca),
        cmocka_unit_test(test_reject_wrong_hostname),
        cmocka_unit_test(test_reject_wrong_ip),
        cmocka_unit_test(test_verify_off_accepts),
        cmocka_unit_test(test_plain_client_tls_server),
        cmocka_unit_test(test_tls_client_plain_server),
        cmocka_unit_test(test_client_close_during_handshake),
        cmocka_unit_test(test_server_close_during_handshake),
        cmocka_unit_test(test_close_with_queued_write),
        cmocka_unit_test(test_close_pending_connect),
        cmocka_unit_test(test_close_pending_resolve),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
