/* test_json.c: bounded parsing, getters and their 400 messages, dumps, error bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandgate/common.h"
#include "sandgate/json.h"

static json_t *parse_ok(const char *s)
{
    sg_json_err_t e;
    sg_json_err_init(&e);
    json_t *v = NULL;
    assert_int_equal(sg_json_parse(s, strlen(s), 0, &v, &e), 0);
    assert_int_equal(e.code, 0);
    assert_non_null(v);
    return v;
}

static void test_parse_errors(void **state)
{
    (void)state;
    sg_json_err_t e;
    json_t *v = (json_t *)1;

    sg_json_err_init(&e);
    const char *bad = "{\n  \"a\": 1,\n  \"b\": tru\n}";
    assert_int_equal(sg_json_parse(bad, strlen(bad), 0, &v, &e), SG_EPROTO);
    assert_null(v);
    assert_int_equal(e.code, SG_EPROTO);
    assert_non_null(strstr(e.message, "invalid JSON at line 3, column"));

    sg_json_err_init(&e);
    assert_int_equal(sg_json_parse("", 0, 0, &v, &e), SG_EPROTO);
    assert_string_equal(e.message, "empty body, expected JSON");

    sg_json_err_init(&e);
    assert_int_equal(sg_json_parse("{} x", 4, 0, &v, &e), SG_EPROTO);
    assert_non_null(strstr(e.message, "line 1, column"));

    /* the bound: exactly max is parsed, one more byte is refused before parsing */
    sg_json_err_init(&e);
    assert_int_equal(sg_json_parse("[1,2]", 5, 5, &v, &e), 0);
    json_decref(v);
    assert_int_equal(sg_json_parse("[1,2] ", 6, 5, &v, &e), SG_ETOOBIG);
    assert_null(v);
    assert_string_equal(e.message, "JSON body is 6 bytes, the limit is 5");

    /* not NUL-terminated input: only len bytes are read */
    sg_json_err_init(&e);
    assert_int_equal(sg_json_parse("{\"a\":1}garbage", 7, 0, &v, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);

    /* scalars are accepted at the top */
    v = parse_ok("42");
    assert_true(json_is_integer(v));
    json_decref(v);
}

static void test_getters(void **state)
{
    (void)state;
    json_t *o = parse_ok("{\"s\":\"hi\",\"i\":-7,\"big\":9007199254740993,\"r\":3.0,\"f\":1.5,\"b\":true,"
                         "\"o\":{\"x\":1},\"a\":[1],\"n\":null}");
    sg_json_err_t e;
    sg_json_err_init(&e);
    const char *s;
    int64_t i;
    bool b;
    json_t *c;
    assert_int_equal(sg_json_get_string(o, "s", "d", &s, &e), 0);
    assert_string_equal(s, "hi");
    assert_int_equal(sg_json_get_string(o, "missing", "d", &s, &e), 0);
    assert_string_equal(s, "d");
    assert_int_equal(sg_json_get_string(o, "n", "d", &s, &e), 0); /* null reads as absent */
    assert_string_equal(s, "d");
    assert_int_equal(sg_json_get_int64(o, "i", 0, &i, &e), 0);
    assert_int_equal(i, -7);
    assert_int_equal(sg_json_get_int64(o, "big", 0, &i, &e), 0);
    assert_int_equal(i, 9007199254740993LL);
    assert_int_equal(sg_json_get_int64(o, "r", 0, &i, &e), 0);
    assert_int_equal(i, 3);
    assert_int_equal(sg_json_get_int64(o, "missing", 60, &i, &e), 0);
    assert_int_equal(i, 60);
    assert_int_equal(sg_json_get_bool(o, "b", false, &b, &e), 0);
    assert_true(b);
    assert_int_equal(sg_json_get_bool(o, "missing", true, &b, &e), 0);
    assert_true(b);
    assert_int_equal(sg_json_get_object(o, "o", &c, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(c, "x")), 1);
    assert_int_equal(sg_json_get_array(o, "a", &c, &e), 0);
    assert_int_equal(json_array_size(c), 1);
    assert_int_equal(sg_json_get_array(o, "missing", &c, &e), 0);
    assert_null(c);
    assert_int_equal(e.code, 0);

    /* wrong types: a message for a 400 body, and the first error sticks */
    assert_int_equal(sg_json_get_int64(o, "f", 5, &i, &e), SG_EINVAL);
    assert_int_equal(i, 5);
    assert_string_equal(e.message, "field 'f' must be an integer, not number");
    assert_int_equal(sg_json_get_string(o, "s", "d", &s, &e), SG_EINVAL); /* sticky: def only */
    assert_string_equal(s, "d");
    assert_string_equal(e.message, "field 'f' must be an integer, not number");

    struct {
        const char *key, *msg;
        int kind;
    } cases[] = {
        {"i", "field 'i' must be a string, not integer", 0},
        {"s", "field 's' must be an integer, not string", 1},
        {"s", "field 's' must be a boolean, not string", 2},
        {"a", "field 'a' must be an object, not array", 3},
        {"o", "field 'o' must be an array, not object", 4},
    };
    for (size_t k = 0; k < SG_ARRAY_SIZE(cases); k++) {
        sg_json_err_init(&e);
        int rc = -1;
        switch (cases[k].kind) {
        case 0: rc = sg_json_get_string(o, cases[k].key, NULL, &s, &e); assert_null(s); break;
        case 1: rc = sg_json_get_int64(o, cases[k].key, 0, &i, &e); break;
        case 2: rc = sg_json_get_bool(o, cases[k].key, false, &b, &e); break;
        case 3: rc = sg_json_get_object(o, cases[k].key, &c, &e); assert_null(c); break;
        case 4: rc = sg_json_get_array(o, cases[k].key, &c, &e); assert_null(c); break;
        }
        assert_int_equal(rc, SG_EINVAL);
        assert_string_equal(e.message, cases[k].msg);
    }
    json_decref(o);

    /* the body itself not being an object */
    json_t *arr = parse_ok("[1]");
    sg_json_err_init(&e);
    assert_int_equal(sg_json_get_string(arr, "x", NULL, &s, &e), SG_EINVAL);
    assert_string_equal(e.message, "expected a JSON object, not array");
    json_decref(arr);
}

static void test_dumps(void **state)
{
    (void)state;
    json_t *v = parse_ok("{ \"z\" : 1 , \"a\" : [ true, null, \"x\\u00e9\\n\" ], \"r\": 0.1 }");
    size_t len;
    char *s = sg_json_dumps(v, &len);
    /* compact, member order kept, reals round-trip */
    assert_string_equal(s, "{\"z\":1,\"a\":[true,null,\"x\xC3\xA9\\n\"],\"r\":0.10000000000000001}");
    assert_int_equal(len, strlen(s));

    sg_bufq_t q;
    sg_bufq_init(&q);
    sg_bufq_push_copy(&q, "X", 1);
    assert_int_equal(sg_json_dump_bufq(&q, v), 0);
    assert_int_equal(q.bytes, len + 1);
    uv_buf_t iov[4];
    size_t tot;
    unsigned k = sg_bufq_iov(&q, iov, 4, 0, &tot);
    char flat[128];
    size_t at = 0;
    for (unsigned j = 0; j < k; j++) {
        memcpy(flat + at, iov[j].base, iov[j].len);
        at += iov[j].len;
    }
    assert_memory_equal(flat, "X", 1);
    assert_memory_equal(flat + 1, s, len);
    sg_bufq_free(&q);
    free(s);
    json_decref(v);

    assert_null(sg_json_dumps(NULL, NULL));
    json_t *n = json_integer(5);
    s = sg_json_dumps(n, NULL);
    assert_string_equal(s, "5");
    free(s);
    json_decref(n);
}

static void test_error_body_and_lossy(void **state)
{
    (void)state;
    char *s = sg_json_error_body("INVALID_REQUEST_BODY", "field 'x' must be \"an\" integer\n");
    assert_string_equal(s, "{\"code\":\"INVALID_REQUEST_BODY\",\"message\":\"field 'x' must be \\\"an\\\" integer\\n\"}");
    json_t *v = parse_ok(s);
    assert_string_equal(json_string_value(json_object_get(v, "message")), "field 'x' must be \"an\" integer\n");
    json_decref(v);
    free(s);

    /* invalid UTF-8 in a message (a user's path) still makes valid JSON */
    s = sg_json_error_body("NOT_FOUND", "no file /tmp/\xff\xc3(\xed\xa0\x80.txt \xe2\x82\xac");
    v = parse_ok(s);
    assert_string_equal(json_string_value(json_object_get(v, "message")),
                        "no file /tmp/\xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD.txt \xe2\x82\xac");
    json_decref(v);
    free(s);
    s = sg_json_error_body(NULL, NULL);
    assert_string_equal(s, "{\"code\":\"\",\"message\":\"\"}");
    free(s);

    /* overlong, truncated and too-large sequences are replaced; valid 4-byte kept */
    json_t *j = sg_json_string_lossy("\xC0\xAF|\xF0\x9F\x98\x80|\xF4\x90\x80\x80|\xE2\x82", 15);
    assert_non_null(j);
    assert_string_equal(json_string_value(j), "\xEF\xBF\xBD\xEF\xBF\xBD|\xF0\x9F\x98\x80|\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                                              "\xEF\xBF\xBD|\xEF\xBF\xBD\xEF\xBF\xBD");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_dumps),
        cmocka_unit_test(test_error_body_and_lossy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
