// test_execd_glob.c: the doublestar matcher behind GET /files/search (src/execd/glob.h).
//
// A table of (pattern, name, expected) from the reference's rules (base-name matching, "**"
// default, "**/*.txt" matches "a.txt", "src/*.py" never matches) and doublestar's documented
// behaviour (Go's match tests, adapted), invalid patterns with their messages, bounds, and
// patterns that make a backtracking matcher exponential (run here under ctest's timeout only).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"
#include "sandgate/common.h"

typedef struct {
    const char *pat, *name;
    int want;
} mcase_t;

static const mcase_t cases[] = {
    /* reference §2.11.5 */
    {"**", "anything.txt", 1},
    {"**", "", 1},
    {"**/*.txt", "a.txt", 1},
    {"**/*.txt", "a.txt.bak", 0},
    {"src/*.py", "main.py", 0},
    {"src/*.py", "src", 0},
    {"*.py", "main.py", 1},
    {"*.{py,txt}", "notes.txt", 1},
    {"*.{py,txt}", "notes.md", 0},
    /* literal and basics */
    {"", "", 1},
    {"", "a", 0},
    {"abc", "abc", 1},
    {"abc", "abd", 0},
    {"abc", "ab", 0},
    {"abc", "abcd", 0},
    {"*", "", 1},
    {"*", "abc", 1},
    {"*", "/", 0},
    {"/*", "/", 1},
    {"/*", "/debug/", 0},
    {"*c", "abc", 1},
    {"a*", "a", 1},
    {"a*", "ab/c", 0},
    {"a*/b", "abc/b", 1},
    {"a*/b", "a/c/b", 0},
    {"a*b*c*d*e*", "axbxcxdxe", 1},
    {"a*b*c*d*e*/f", "axbxcxdxexxx/f", 1},
    {"a*b*c*d*e*/f", "axbxcxdxe/xxx/f", 0},
    {"a*b?c*x", "abxbbxdbxebxczzx", 1},
    {"a*b?c*x", "abxbbxdbxebxczzy", 0},
    {"*x", "xxx", 1},
    /* classes */
    {"ab[c]", "abc", 1},
    {"ab[b-d]", "abc", 1},
    {"ab[e-g]", "abc", 0},
    {"ab[^c]", "abc", 0},
    {"ab[!c]", "abd", 1},
    {"ab[^b-d]", "abc", 0},
    {"ab[^e-g]", "abc", 1},
    {"[abc]", "b", 1},
    {"[\\]a]", "]", 1},
    {"[\\-]", "-", 1},
    {"[x\\-]", "-", 1},
    {"[x\\-]", "z", 0},
    {"[\\-x]", "a", 0},
    {"[-]", "-", 1},
    {"[x-]", "-", 1},
    {"[x-]", "z", 0},
    {"[-x]", "x", 1},
    {"[a-b-d]", "-", 1},
    {"[a-b-d]", "c", 0},
    {"[a-b-x]", "x", 1},
    {"[z-a]", "m", 0},
    {"[[]", "[", 1},
    {"[{]", "{", 1},
    {"[}]", "}", 1},
    {"[,]", ",", 1},
    {"a[/]b", "a/b", 0}, /* a class never matches the separator */
    /* UTF-8: ? and classes take one rune */
    {"a?b",
     "a\xe2\x98\xba"
     "b",
     1},
    {"a[^a]b",
     "a\xe2\x98\xba"
     "b",
     1},
    {"a???b",
     "a\xe2\x98\xba"
     "b",
     0},
    {"[a-\xce\xb6]*", "\xce\xb1", 1},
    {"*[a-\xce\xb6]", "A", 0},
    {"?", "\xff", 1},    /* an invalid byte is one character */
    {"\xff", "\xfe", 0}, /* and only equals itself */
    {"a?b", "a/b", 0},
    {"a*b", "a/b", 0},
    /* escapes */
    {"a\\*b", "ab", 0},
    {"a\\*b", "a*b", 1},
    {"\\[x]", "[x]", 1},
    {"\\{a,b\\}", "{a,b}", 1},
    {"*\\}", "}", 1},
    {"e/\\[", "e/[", 1},
    {"e/]", "e/]", 1},
    {"e/[\\*\\?]", "e/?", 1},
    {"e/[\\*\\?]", "e/**", 0},
    {"e/[\\*\\?]?", "e/**", 1},
    {"e/{\\*,\\?}", "e/*", 1},
    {"e/\\?", "e/**", 0},
    {"a,b", "a,b", 1},
    /* braces */
    {"ab{c,d}", "abc", 1},
    {"ab{c,d,*}", "abcde", 1},
    {"a{,bc}", "a", 1},
    {"a{,bc}", "abc", 1},
    {"a{}", "a", 1},
    {"a/{b/c,c/b}", "a/c/b", 1},
    {"a/a*{b,c}", "a/abc", 1},
    {"{a/{b,c},abc}", "a/c", 1},
    {"{a/{b,c},abc}", "abc", 1},
    {"{a/{b,c},abc}", "a/b/c", 0},
    {"{a,b}{c,d}{e,f}", "bcf", 1},
    {"{a,b}{c,d}{e,f}", "bcg", 0},
    {"x{a,{b,{c,d}}}y", "xdy", 1},
    {"{[,],x}", ",", 1},
    {"{**/,}*.txt", "a.txt", 1},
    /* doublestar */
    {"a/**", "a", 1},
    {"a/**", "a/", 1},
    {"a/**/", "a/", 1},
    {"a/**", "a/b/c", 1},
    {"a/**", "ab", 0},
    {"**/c", "c", 1},
    {"**/c", "b/c", 1},
    {"**/c", "a/b/c", 1},
    {"**/c", "a/b", 0},
    {"**/c", "abcd", 0},
    {"**/c", "a/abc", 0},
    {"a/**/b", "a/b", 1},
    {"a/**/d", "a/b/c/d", 1},
    {"a/**/d", "a/b/c/xd", 0},
    {"a/\\**", "a/b/c", 0},
    {"abc**", "abc/b", 0},
    {"abc**", "abcdef", 1},
    {"**a", "xa", 1},
    {"**a", "x/a", 0},
    {"***", "x/a", 0},
    {"**/**", "x/a", 1},
    {"**/**/x", "x", 1},
    {"**/*.txt", "abc/\xc3\x9ftest\xc3\x9f.txt", 1},
    {"**/{a,b}", "a/b", 1},
    {"foo/**", "foo", 1}, // base name "foo" matches via the trailing "/**" rule
    {"a/b/c", "a/b//c", 0},
    {"!(x)", "!(x)", 1}, /* no extglob: '!' is literal */
};

static void test_table(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < SG_ARRAY_SIZE(cases); i++) {
        char msg[256] = "";
        int got = sg_glob_match_once(cases[i].pat, cases[i].name, msg, sizeof(msg));
        if (got != cases[i].want) {
            fprintf(stderr, "case %zu: pattern \"%s\" name \"%s\": got %d want %d (%s)\n", i,
                    cases[i].pat, cases[i].name, got, cases[i].want, msg);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

typedef struct {
    const char *pat;
    int err;
    const char *msg_part;
} icase_t;

static void test_invalid(void **state)
{
    (void)state;
    static const icase_t inv[] = {
        {"\\", SG_EINVAL, "trailing"},
        {"[", SG_EINVAL, "unclosed '[' at offset 0"},
        {"[^", SG_EINVAL, "unclosed '['"},
        {"[^bc", SG_EINVAL, "unclosed '['"},
        {"a[", SG_EINVAL, "unclosed '[' at offset 1"},
        {"[]a]", SG_EINVAL, "empty character class"},
        {"[!]", SG_EINVAL, "empty character class"},
        {"[a\\]", SG_EINVAL, "unclosed '['"},
        {"ab{c,d}[", SG_EINVAL, "unclosed '['"},
        {"{a,b", SG_EINVAL, "unclosed '{' at offset 0"},
        {"x{a,{b}", SG_EINVAL, "unclosed '{' at offset 1"},
        {"a}", SG_EINVAL, "unmatched '}' at offset 1"},
        {"{a}}", SG_EINVAL, "unmatched '}'"},
        {"\\{a,b}", SG_EINVAL, "unmatched '}' at offset 5"}, /* as Go: an escaped { opens nothing */
        {"e/[", SG_EINVAL, "unclosed '['"},
        {"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{a}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}", SG_ETOOBIG,
         "nested too deeply"},
        {"{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}", SG_ETOOBIG,
         "too many brace alternatives"},
    };
    for (size_t i = 0; i < SG_ARRAY_SIZE(inv); i++) {
        char msg[256] = "", msg2[256] = "";
        sg_glob_t *g = (sg_glob_t *)1;
        int rc = sg_glob_compile(inv[i].pat, strlen(inv[i].pat), &g, msg, sizeof(msg));
        if (rc != inv[i].err || !strstr(msg, inv[i].msg_part) || g)
            fprintf(stderr, "invalid case %zu \"%s\": rc %d msg \"%s\"\n", i, inv[i].pat, rc, msg);
        assert_int_equal(rc, inv[i].err);
        assert_null(g);
        assert_non_null(strstr(msg, inv[i].msg_part));
        if (rc == SG_EINVAL) assert_int_equal(strncmp(msg, "syntax error in pattern", 23), 0);
        assert_int_equal(sg_glob_validate(inv[i].pat, strlen(inv[i].pat), msg2, sizeof(msg2)) == 0,
                         rc == SG_ETOOBIG && strstr(msg, "alternatives")); /* count is compile's */
        assert_true(sg_glob_match_once(inv[i].pat, "a", NULL, 0) < 0);
    }
    /* valid patterns validate */
    for (size_t i = 0; i < SG_ARRAY_SIZE(cases); i++)
        assert_int_equal(sg_glob_validate(cases[i].pat, strlen(cases[i].pat), NULL, 0), 0);
    /* 10 binary braces = 1024 alternatives: exactly at the bound */
    assert_int_equal(sg_glob_match_once("{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}",
                                        "abababbbba", NULL, 0),
                     1);
    /* pattern length bound */
    size_t n = SG_GLOB_MAX_PATTERN + 1;
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    big[n] = 0;
    char msg[128];
    assert_int_equal(sg_glob_validate(big, n, msg, sizeof(msg)), SG_ETOOBIG);
    assert_non_null(strstr(msg, "too long"));
    assert_int_equal(sg_glob_match_once(big + 1, big + 1, NULL, 0), 1); /* at the bound */
    free(big);
}

/* A backtracking matcher needs ~len^k steps here; the state simulation needs len * k. */
static void test_no_blowup(void **state)
{
    (void)state;
    size_t n = 20000;
    char *name = malloc(n + 2);
    memset(name, 'a', n);
    name[n] = 0;
    assert_int_equal(sg_glob_match_once("*a*a*a*a*a*a*a*a*a*a*b", name, NULL, 0), 0);
    assert_int_equal(sg_glob_match_once("*a*a*a*a*a*a*a*a*a*a*", name, NULL, 0), 1);
    assert_int_equal(sg_glob_match_once("**/*a*a*a*a*a*a*{a,b,c}*a*b", name, NULL, 0), 0);
    name[n] = 'b';
    name[n + 1] = 0;
    assert_int_equal(sg_glob_match_once("*a*a*a*a*a*a*a*a*a*a*b", name, NULL, 0), 1);
    /* same with path separators for the globstar states */
    for (size_t i = 1; i < n; i += 3)
        name[i] = '/';
    assert_int_equal(sg_glob_match_once("**/a*/**/a*/**/a*/**/*c", name, NULL, 0), 0);
    assert_int_equal(sg_glob_match_once("**/a*/**/a*/**/a*/**/*b", name, NULL, 0), 1);
    free(name);
}

static void test_compiled_reuse_and_base(void **state)
{
    (void)state;
    sg_glob_t *g;
    char msg[128];
    assert_int_equal(sg_glob_compile("*.txt", 5, &g, msg, sizeof(msg)), 0);
    assert_int_equal(sg_glob_match_base(g, "/tmp/demo/hello.txt"), 1);
    assert_int_equal(sg_glob_match_base(g, "/tmp/demo.txt/hello.py"), 0);
    assert_int_equal(sg_glob_match_base(g, "hello.txt"), 1);
    assert_int_equal(sg_glob_match_base(g, "/tmp/x.txt/"), 1);
    assert_int_equal(sg_glob_match(g, "a.txt\0b", 7), 0); /* length, not NUL, ends the name */
    assert_int_equal(sg_glob_match(g, "a.txt", 5), 1);
    sg_glob_free(g);
    /* pattern with an embedded NUL is matched literally */
    assert_int_equal(sg_glob_compile("a\0*", 3, &g, msg, sizeof(msg)), 0);
    assert_int_equal(sg_glob_match(g, "a\0zz", 4), 1);
    assert_int_equal(sg_glob_match(g, "azz", 3), 0);
    sg_glob_free(g);
    /* the route's default and the SDK's usual patterns against base names */
    assert_int_equal(sg_glob_compile("**", 2, &g, msg, sizeof(msg)), 0);
    assert_int_equal(sg_glob_match_base(g, "/w/.hidden"), 1);
    sg_glob_free(g);
    assert_int_equal(sg_glob_compile("src/*.py", 8, &g, msg, sizeof(msg)), 0);
    assert_int_equal(sg_glob_match_base(g, "/w/src/main.py"), 0);
    sg_glob_free(g);
    sg_glob_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_no_blowup),
        cmocka_unit_test(test_compiled_reuse_and_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
