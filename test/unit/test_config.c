/* test_config.c: value parsers, precedence flag > env > default, errors, --help text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/config.h"

typedef struct cfg {
    const char *listen;
    const char *data;
    int64_t port;
    uint64_t max_body;
    uint64_t idle;
    bool tls;
    bool verbose;
} cfg_t;

static const sg_opt_t OPTS[] = {
    {"listen", "SGT_LISTEN", SG_OPT_STRING, offsetof(cfg_t, listen), "127.0.0.1:8080", 0, 0, "ADDR",
     "address to listen on"},
    {"data", "SGT_DATA", SG_OPT_STRING, offsetof(cfg_t, data), NULL, 0, 0, "DIR", "data directory"},
    {"port", "SGT_PORT", SG_OPT_INT, offsetof(cfg_t, port), "44772", 1, 65535, NULL, "execd port"},
    {"max-body", "SGT_MAX_BODY", SG_OPT_SIZE, offsetof(cfg_t, max_body), "1M", 1024, 1 << 30, NULL,
     "largest request body"},
    {"idle-timeout", "SGT_IDLE", SG_OPT_DURATION, offsetof(cfg_t, idle), "30s", 0, 0, NULL, "idle connection timeout"},
    {"tls", "SGT_TLS", SG_OPT_BOOL, offsetof(cfg_t, tls), "false", 0, 0, NULL, "serve HTTPS"},
    {"verbose", NULL, SG_OPT_BOOL, offsetof(cfg_t, verbose), NULL, 0, 0, NULL, "log more"},
};

static void clear_env(void)
{
    unsetenv("SGT_LISTEN");
    unsetenv("SGT_DATA");
    unsetenv("SGT_PORT");
    unsetenv("SGT_MAX_BODY");
    unsetenv("SGT_IDLE");
    unsetenv("SGT_TLS");
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static int parse(cfg_t *c, char *err, int argc, ...)
{
    char *argv[16];
    va_list ap;
    va_start(ap, argc);
    argv[0] = "prog";
    for (int i = 1; i < argc; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    memset(c, 0xA5, sizeof *c); /* garbage in: the parser must set every field */
    return sg_config_parse(OPTS, SG_ARRAY_SIZE(OPTS), c, argc, argv, err, 256);
}

static void test_value_parsers(void **state)
{
    (void)state;
    uint64_t u;
    int64_t i;
    bool b;
    assert_int_equal(sg_config_parse_size("512", &u), 0);
    assert_int_equal(u, 512);
    assert_int_equal(sg_config_parse_size("64K", &u), 0);
    assert_int_equal(u, 65536);
    assert_int_equal(sg_config_parse_size("16m", &u), 0);
    assert_int_equal(u, 16u << 20);
    assert_int_equal(sg_config_parse_size("1GiB", &u), 0);
    assert_int_equal(u, 1u << 30);
    assert_int_equal(sg_config_parse_size("2MB", &u), 0);
    assert_int_equal(u, 2u << 20);
    assert_int_equal(sg_config_parse_size("7B", &u), 0);
    assert_int_equal(u, 7);
    const char *bad_sizes[] = {"", "K", "1.5G", "-1", " 1", "1 K", "1KX", "1Ki", "99999999999999999999",
                               "17179869184G", "1X"};
    for (size_t k = 0; k < SG_ARRAY_SIZE(bad_sizes); k++) {
        u = 77;
        assert_int_equal(sg_config_parse_size(bad_sizes[k], &u), SG_EINVAL);
        assert_int_equal(u, 77);
    }

    assert_int_equal(sg_config_parse_duration("250ms", &u), 0);
    assert_int_equal(u, 250);
    assert_int_equal(sg_config_parse_duration("30s", &u), 0);
    assert_int_equal(u, 30000);
    assert_int_equal(sg_config_parse_duration("5m", &u), 0);
    assert_int_equal(u, 300000);
    assert_int_equal(sg_config_parse_duration("1h", &u), 0);
    assert_int_equal(u, 3600000);
    assert_int_equal(sg_config_parse_duration("1m30s", &u), 0);
    assert_int_equal(u, 90000);
    assert_int_equal(sg_config_parse_duration("0", &u), 0);
    assert_int_equal(u, 0);
    const char *bad_durs[] = {"", "30", "s", "1d", "1.5s", "-1s", "1s ", "10ms5", "99999999999999999999h"};
    for (size_t k = 0; k < SG_ARRAY_SIZE(bad_durs); k++)
        assert_int_equal(sg_config_parse_duration(bad_durs[k], &u), SG_EINVAL);

    assert_int_equal(sg_config_parse_int("-42", &i), 0);
    assert_int_equal(i, -42);
    assert_int_equal(sg_config_parse_int("+7", &i), 0);
    assert_int_equal(i, 7);
    const char *bad_ints[] = {"", " 1", "1 ", "0x10", "abc", "9223372036854775808", "-", "1e3"};
    for (size_t k = 0; k < SG_ARRAY_SIZE(bad_ints); k++) assert_int_equal(sg_config_parse_int(bad_ints[k], &i), SG_EINVAL);

    const char *yes[] = {"true", "1", "YES", "on"}, *no[] = {"false", "0", "No", "OFF"};
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(sg_config_parse_bool(yes[k], &b), 0);
        assert_true(b);
        assert_int_equal(sg_config_parse_bool(no[k], &b), 0);
        assert_false(b);
    }
    assert_int_equal(sg_config_parse_bool("maybe", &b), SG_EINVAL);
    assert_int_equal(sg_config_parse_bool("", &b), SG_EINVAL);
}

static void test_defaults(void **state)
{
    (void)state;
    cfg_t c;
    char err[256];
    assert_int_equal(parse(&c, err, 1), 0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_null(c.data);
    assert_int_equal(c.port, 44772);
    assert_int_equal(c.max_body, 1u << 20);
    assert_int_equal(c.idle, 30000);
    assert_false(c.tls);
    assert_false(c.verbose);
}

static void test_precedence(void **state)
{
    (void)state;
    cfg_t c;
    char err[256];
    setenv("SGT_LISTEN", "0.0.0.0:9000", 1);
    setenv("SGT_PORT", "1234", 1);
    setenv("SGT_TLS", "yes", 1);
    setenv("SGT_DATA", "", 1); /* an empty string is a value */
    assert_int_equal(parse(&c, err, 1), 0);
    assert_string_equal(c.listen, "0.0.0.0:9000");
    assert_int_equal(c.port, 1234);
    assert_true(c.tls);
    assert_string_equal(c.data, "");

    assert_int_equal(parse(&c, err, 6, "--listen", "unix:/tmp/s", "--port=80", "--no-tls", "--verbose"), 0);
    assert_string_equal(c.listen, "unix:/tmp/s");
    assert_int_equal(c.port, 80);
    assert_false(c.tls);
    assert_true(c.verbose);
    assert_int_equal(c.idle, 30000); /* untouched: default */

    /* last flag wins; --name=value forms for every type; a value may contain '=' */
    assert_int_equal(parse(&c, err, 7, "--port=1", "--port", "2", "--max-body=64K", "--idle-timeout=1m30s",
                           "--data=/a=b"), 0);
    assert_int_equal(c.port, 2);
    assert_int_equal(c.max_body, 65536);
    assert_int_equal(c.idle, 90000);
    assert_string_equal(c.data, "/a=b");
    assert_int_equal(parse(&c, err, 3, "--tls=false", "--verbose=on"), 0);
    assert_false(c.tls);
    assert_true(c.verbose);
    /* "--" ends options */
    assert_int_equal(parse(&c, err, 2, "--"), 0);
    clear_env();
}

static void expect_err(const char *want, int argc, ...)
{
    char *argv[16];
    va_list ap;
    va_start(ap, argc);
    argv[0] = "prog";
    for (int i = 1; i < argc; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    cfg_t c;
    char err[256] = "x";
    assert_int_equal(sg_config_parse(OPTS, SG_ARRAY_SIZE(OPTS), &c, argc, argv, err, sizeof err), SG_EINVAL);
    assert_string_equal(err, want);
}

static void test_errors(void **state)
{
    (void)state;
    expect_err("unknown option '--lsten' (see --help)", 3, "--lsten", "x");
    expect_err("unknown option '--nope' (see --help)", 2, "--nope=1");
    expect_err("unknown option '--no-port' (see --help)", 2, "--no-port");
    expect_err("option '--listen' needs a value", 2, "--listen");
    expect_err("option '--listen' needs a value", 4, "--listen", "--port", "1");
    expect_err("--port: 'abc' is not an integer", 3, "--port", "abc");
    expect_err("--port: '' is not an integer", 2, "--port=");
    expect_err("--port: 70000 is out of range (1..65535)", 2, "--port=70000");
    expect_err("--port: 0 is out of range (1..65535)", 2, "--port=0");
    expect_err("--max-body: 2G is out of range (1024..1073741824 bytes)", 2, "--max-body=2G");
    expect_err("--max-body: '12Q' is not a size (like 512, 64K, 16M, 1G)", 2, "--max-body=12Q");
    expect_err("--idle-timeout: '30' is not a duration (like 250ms, 30s, 5m, 1h)", 2, "--idle-timeout=30");
    expect_err("--tls: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)", 2, "--tls=maybe");
    expect_err("unexpected argument 'serve' (options are --name or --name=value)", 2, "serve");
    expect_err("unexpected argument '-p' (options are --name or --name=value)", 2, "-p");
    expect_err("unexpected argument 'x'", 3, "--", "x");
    setenv("SGT_PORT", "99999", 1);
    expect_err("SGT_PORT: 99999 is out of range (1..65535)", 1);
    setenv("SGT_PORT", "12", 1);
    setenv("SGT_IDLE", "soon", 1);
    expect_err("SGT_IDLE: 'soon' is not a duration (like 250ms, 30s, 5m, 1h)", 1);
    /* a bad environment value still fails when a flag would override it: the environment
     * is configuration too, and a typo there should not hide */
    expect_err("SGT_IDLE: 'soon' is not a duration (like 250ms, 30s, 5m, 1h)", 2, "--idle-timeout=1s");
    clear_env();

    /* a bad default is reported against the table */
    static const sg_opt_t bad[] = {{"n", NULL, SG_OPT_INT, 0, "ten", 0, 0, NULL, NULL}};
    int64_t v;
    char err[128];
    char *argv[] = {"prog"};
    assert_int_equal(sg_config_parse(bad, 1, &v, 1, argv, err, sizeof err), SG_EINVAL);
    assert_string_equal(err, "default of --n: 'ten' is not an integer");
}

static void test_help(void **state)
{
    (void)state;
    cfg_t c;
    char err[256];
    assert_int_equal(parse(&c, err, 2, "--help"), SG_CONFIG_HELP);
    assert_int_equal(parse(&c, err, 3, "--nope", "-h"), SG_CONFIG_HELP); /* help beats errors */
    assert_int_equal(parse(&c, err, 3, "--", "--help"), SG_EINVAL); /* after "--" it is an argument */

    char *h = sg_config_help(OPTS, SG_ARRAY_SIZE(OPTS), "sandgate [options]");
    assert_string_equal(h, "Usage: sandgate [options]\n"
                           "\n"
                           "Options:\n"
                           "  --listen ADDR              address to listen on\n"
                           "                             [env SGT_LISTEN] [default 127.0.0.1:8080]\n"
                           "  --data DIR                 data directory\n"
                           "                             [env SGT_DATA]\n"
                           "  --port N                   execd port\n"
                           "                             [env SGT_PORT] [default 44772] [range 1..65535]\n"
                           "  --max-body SIZE            largest request body\n"
                           "                             [env SGT_MAX_BODY] [default 1M] [range 1024..1073741824 bytes]\n"
                           "  --idle-timeout DURATION    idle connection timeout\n"
                           "                             [env SGT_IDLE] [default 30s]\n"
                           "  --tls, --no-tls            serve HTTPS\n"
                           "                             [env SGT_TLS] [default false]\n"
                           "  --verbose, --no-verbose    log more\n"
                           "  -h, --help                 show this help and exit\n");
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_value_parsers, setup, NULL),
        cmocka_unit_test_setup_teardown(test_defaults, setup, NULL),
        cmocka_unit_test_setup_teardown(test_precedence, setup, NULL),
        cmocka_unit_test_setup_teardown(test_errors, setup, NULL),
        cmocka_unit_test_setup_teardown(test_help, setup, NULL),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
