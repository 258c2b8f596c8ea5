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

#include <stdint.h>
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

/* ---- differential check against a naive backtracking matcher (exponential, tiny inputs) */

static int ref_match(const char *pat, size_t pn, size_t pi, const char *s, size_t sn, size_t si);

static int ref_seg(const char *pat, size_t pi)
{
    return pi == 0 || pat[pi - 1] == '/';
}

/* The rest of pat after a '/' at pi (possibly written "\/") is exactly "**". */
static int ref_tail(const char *pat, size_t pn, size_t pi)
{
    size_t w = pat[pi] == '\\' ? 2 : 1;
    return pi + w + 2 == pn && pat[pi + w] == '*' && pat[pi + w + 1] == '*';
}

static int ref_class(const char *pat, size_t *pi, char c)
{
    size_t i = *pi + 1;
    int neg = 0, hit = 0, have_last = 0;
    char last = 0;
    if (pat[i] == '!' || pat[i] == '^') neg = 1, i++;
    while (pat[i] != ']') {
        if (pat[i] == '-' && have_last && pat[i + 1] != ']') {
            i++;
            if (pat[i] == '\\') i++;
            hit |= last <= c && c <= pat[i];
            i++;
            have_last = 0;
            continue;
        }
        if (pat[i] == '\\') i++;
        last = pat[i++];
        have_last = 1;
        hit |= last == c;
    }
    *pi = i + 1;
    return hit != neg;
}

static int ref_match(const char *pat, size_t pn, size_t pi, const char *s, size_t sn, size_t si)
{
    if (pi == pn) return si == sn;
    char c = pat[pi];
    if (c == '*') {
        if (pi + 1 < pn && pat[pi + 1] == '*' && ref_seg(pat, pi)) {
            if (pi + 2 == pn) return 1; /* "**" alone or after "**\/" */
            if (pat[pi + 2] == '/') {
                if (ref_match(pat, pn, pi + 3, s, sn, si)) return 1;
                for (size_t k = si; k < sn; k++)
                    if (s[k] == '/' && ref_match(pat, pn, pi + 3, s, sn, k + 1)) return 1;
                return 0;
            }
            pi++;
        }
        for (size_t k = si;; k++) {
            if (ref_match(pat, pn, pi + 1, s, sn, k)) return 1;
            if (k == sn || s[k] == '/') return 0;
        }
    }
    if (c == '{') {
        size_t d = 1, i, alt = pi + 1, close;
        for (close = pi + 1; d; close++) {
            if (pat[close] == '\\')
                close++;
            else if (pat[close] == '[') {
                size_t j = close;
                ref_class(pat, &j, 0); /* only to skip it */
                close = j - 1;
            } else if (pat[close] == '{')
                d++;
            else if (pat[close] == '}')
                d--;
        }
        close--; /* at the matching '}' */
        d = 0;
        for (i = pi + 1; i <= close; i++) {
            if (pat[i] == '\\') {
                i++;
                continue;
            }
            if (pat[i] == '[') {
                size_t j = i;
                ref_class(pat, &j, 0);
                i = j - 1;
                continue;
            }
            if (pat[i] == '{')
                d++;
            else if (pat[i] == '}' && d)
                d--;
            else if ((pat[i] == ',' && !d) || i == close) {
                char buf[256];
                size_t m = 0;
                memcpy(buf, pat, pi), m = pi;
                memcpy(buf + m, pat + alt, i - alt), m += i - alt;
                memcpy(buf + m, pat + close + 1, pn - close - 1), m += pn - close - 1;
                if (ref_match(buf, m, pi, s, sn, si)) return 1;
                alt = i + 1;
            }
        }
        return 0;
    }
    if ((c == '/' || (c == '\\' && pat[pi + 1] == '/')) && ref_tail(pat, pn, pi))
        return si == sn || s[si] == '/';
    if (si == sn) return 0;
    if (c == '?') return s[si] != '/' && ref_match(pat, pn, pi + 1, s, sn, si + 1);
    if (c == '[') {
        size_t j = pi;
        int hit = ref_class(pat, &j, s[si]);
        return hit && s[si] != '/' && ref_match(pat, pn, j, s, sn, si + 1);
    }
    if (c == '\\') c = pat[++pi];
    return s[si] == c && ref_match(pat, pn, pi + 1, s, sn, si + 1);
}

static void test_differential(void **state)
{
    (void)state;
    static const char pal[] = "ab/*?[]!^-{},\\";
    static const char nal[] = "ab/-,!{";
    uint64_t r = 12345;
    int compared = 0, matched = 0;
    for (int iter = 0; iter < 200000; iter++) {
        char pat[16], name[16];
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        size_t pn = r % 9, nn = (r >> 8) % 8;
        for (size_t i = 0; i < pn; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            pat[i] = pal[r % (sizeof(pal) - 1)];
        }
        for (size_t i = 0; i < nn; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            name[i] = nal[r % (sizeof(nal) - 1)];
        }
        pat[pn] = name[nn] = 0;
        sg_glob_t *g;
        if (sg_glob_compile(pat, pn, &g, NULL, 0)) continue;
        int got = sg_glob_match(g, name, nn), want = ref_match(pat, pn, 0, name, nn, 0);
        if (got != want)
            fprintf(stderr, "pattern \"%s\" name \"%s\": got %d want %d\n", pat, name, got, want);
        assert_int_equal(got, want);
        sg_glob_free(g);
        compared++;
        matched += got;
    }
    assert_true(compared > 20000);
    assert_true(matched > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_no_blowup),    cmocka_unit_test(test_compiled_reuse_and_base),
        cmocka_unit_test(test_differential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
