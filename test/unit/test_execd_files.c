// test_execd_files.c: the pure parts of execd's file API (src/execd/files_*.c): path expansion
// and cleaning (2.1), query decoding, RFC3339Nano, mode digits, Range parsing (2.11.8),
// FileInfo shape (2.11), and the search / list / replace job bodies run directly (they are
// plain blocking functions over a job struct; no loop is involved) on a temp tree.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files_int.h"
#include "sandgate/common.h"

static char g_tmp[256];

static void mkfile(const char *rel, const char *content)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", g_tmp, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void mkd(const char *rel)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", g_tmp, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/sg-files-unit-XXXXXX");
    assert_non_null(mkdtemp(g_tmp));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void check_clean(const char *in, const char *want)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", in);
    sg__files_clean(buf);
    assert_string_equal(buf, want);
}

static void test_clean(void **state)
{
    (void)state;
    check_clean("/", "/");
    check_clean("/a/b/../c/./d/", "/a/c/d");
    check_clean("//a//b", "/a/b");
    check_clean("/../..", "/");
    check_clean("/a/..", "/");
    check_clean("a/../..", "..");
    check_clean("../../x", "../../x");
    check_clean("a/./b", "a/b");
    check_clean(".", ".");
    check_clean("", ".");
}

static void test_expand(void **state)
{
    (void)state;
    char msg[256];
    setenv("SG_T_A", "/alpha", 1);
    setenv("HOME", "/home/me", 1);
    unsetenv("SG_T_UNSET");
    char *r;
    r = sg__files_expand("$SG_T_A/x", 0, msg, sizeof(msg));
    assert_string_equal(r, "/alpha/x");
    free(r);
    r = sg__files_expand("${SG_T_A}y/$SG_T_A", 0, msg, sizeof(msg));
    assert_string_equal(r, "/alphay//alpha");
    free(r);
    r = sg__files_expand("${SG_T_A}y/$SG_T_A", 1, msg, sizeof(msg));
    assert_string_equal(r, "/alphay/alpha");
    free(r);
    r = sg__files_expand("~", 0, msg, sizeof(msg));
    assert_string_equal(r, "/home/me");
    free(r);
    r = sg__files_expand("~/f", 0, msg, sizeof(msg));
    assert_string_equal(r, "/home/me/f");
    free(r);
    r = sg__files_expand("/a/~b/$", 0, msg, sizeof(msg)); /* only a leading ~; a lone $ stays */
    assert_string_equal(r, "/a/~b/$");
    free(r);
    assert_null(sg__files_expand("/x/$SG_T_UNSET/y", 1, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "SG_T_UNSET is not set"));
    assert_null(sg__files_expand("/x/${SG_T_A", 1, msg, sizeof(msg)));
    assert_null(sg__files_expand("", 1, msg, sizeof(msg)));
    /* relative -> absolute against the cwd */
    char cwd[512], want[600];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(want, sizeof(want), "%s/rel/f", cwd);
    r = sg__files_expand("./rel/x/../f", 1, msg, sizeof(msg));
    assert_string_equal(r, want);
    free(r);
    r = sg__files_expand("./rel/x/../f", 0, msg, sizeof(msg)); /* upload: not made absolute */
    assert_string_equal(r, "./rel/x/../f");
    free(r);
}

static void test_query(void **state)
{
    (void)state;
    size_t n = 0;
    char **v = sg__files_qvalues("path=%2Ftmp%2Fa+b&x=1&path=/c%zz&pa%74h=d&path", "path", &n);
    assert_int_equal(n, 4);
    assert_string_equal(v[0], "/tmp/a b");
    assert_string_equal(v[1], "/c%zz"); /* a bad escape stays as it is */
    assert_string_equal(v[2], "d");     /* the key is decoded too */
    assert_string_equal(v[3], "");
    sg__files_strv_free(v, n);
    v = sg__files_qvalues("", "path", &n);
    assert_int_equal(n, 0);
    assert_null(v);
    char *s = sg__files_qvalue("a=1&depth=3&depth=4", "depth");
    assert_string_equal(s, "3");
    free(s);
    assert_null(sg__files_qvalue("a=1", "depth"));
}

static void test_time_and_mode(void **state)
{
    (void)state;
    char b[64];
    sg__files_rfc3339nano(b, sizeof(b), 0, 0);
    assert_string_equal(b, "1970-01-01T00:00:00Z");
    sg__files_rfc3339nano(b, sizeof(b), 1781253000, 123000000);
    assert_string_equal(b, "2026-06-12T08:30:00.123Z");
    sg__files_rfc3339nano(b, sizeof(b), 1781253000, 1);
    assert_string_equal(b, "2026-06-12T08:30:00.000000001Z");
    sg__files_rfc3339nano(b, sizeof(b), 1781253000, 123456789);
    assert_string_equal(b, "2026-06-12T08:30:00.123456789Z");
    assert_int_equal(sg__files_mode_from_digits(755), 0755);
    assert_int_equal(sg__files_mode_from_digits(600), 0600);
    assert_int_equal(sg__files_mode_from_digits(4755), 04755);
    assert_int_equal(sg__files_mode_from_digits(0), 0);
    assert_int_equal(sg__files_mode_from_digits(789), -1);
    assert_int_equal(sg__files_mode_from_digits(-1), -1);
    assert_int_equal(sg__files_mode_from_digits(1000000), -1);
}

static void test_range(void **state)
{
    (void)state;
    struct {
        const char *h;
        uint64_t size;
        int want;
        uint64_t a, b;
    } t[] = {
        {"bytes=0-0", 10, 0, 0, 0},
        {"bytes=2-5", 10, 0, 2, 5},
        {"bytes=2-", 10, 0, 2, 9},
        {"bytes=-3", 10, 0, 7, 9},
        {"bytes=-30", 10, 0, 0, 9},
        {"bytes=5-100", 10, 0, 5, 9},
        {"bytes=1-2,4-5", 10, 0, 1, 2},
        {"bytes= 1-2 , 4-5", 10, 0, 1, 2},
        {"bytes=10-", 10, -2, 0, 0},
        {"bytes=10-20", 10, -2, 0, 0},
        {"bytes=-0", 10, -2, 0, 0},
        {"bytes=0-", 0, -2, 0, 0},
        {"bytes=5-2", 10, -1, 0, 0},
        {"bytes=", 10, -1, 0, 0},
        {"bytes=-", 10, -1, 0, 0},
        {"bytes=a-b", 10, -1, 0, 0},
        {"items=0-1", 10, -1, 0, 0},
        {"bytes=1-2-3", 10, -1, 0, 0},
        {"bytes=99999999999999999999-", 10, -1, 0, 0},
    };
    for (size_t i = 0; i < SG_ARRAY_SIZE(t); i++) {
        uint64_t a = 77, b = 77;
        int r = sg__files_parse_range(t[i].h, t[i].size, &a, &b);
        if (r != t[i].want) fail_msg("%s: got %d want %d", t[i].h, r, t[i].want);
        if (r == 0 && (a != t[i].a || b != t[i].b))
            fail_msg("%s: got %llu-%llu", t[i].h, (unsigned long long)a, (unsigned long long)b);
    }
}

static void test_info_json(void **state)
{
    (void)state;
    mkfile("i.txt", "12345");
    char p[512];
    snprintf(p, sizeof(p), "%s/i.txt", g_tmp);
    assert_int_equal(chmod(p, 0640), 0);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    json_t *j = sg__files_info_json(p, &st);
    const char *want[] = {"path",       "type",  "size",  "modified_at",
                          "created_at", "owner", "group", "mode"};
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        assert_true(i < 8);
        assert_string_equal(k, want[i++]);
    }
    assert_int_equal(i, 8);
    assert_string_equal(json_string_value(json_object_get(j, "path")), p);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "file");
    assert_int_equal(json_integer_value(json_object_get(j, "size")), 5);
    assert_int_equal(json_integer_value(json_object_get(j, "mode")), 640);
    json_decref(j);
}

/* A job struct with no request: the bodies only read inputs and write the result. */
static sg__fjob_t *job(const char *path, const char *arg)
{
    sg__fjob_t *j = calloc(1, sizeof(*j));
    j->status = 200;
    j->max_walk = 1000;
    j->paths = malloc(sizeof(char *));
    j->paths[0] = strdup(path);
    j->npaths = 1;
    j->arg = arg ? strdup(arg) : NULL;
    return j;
}

static void job_free(sg__fjob_t *j)
{
    sg__files_strv_free(j->paths, j->npaths);
    free(j->arg);
    free(j->resp);
    json_decref(j->body);
    free(j);
}

/* Runs the search and returns the result paths relative to g_tmp, joined by ' '. */
static void search_names(const char *pattern, char *out, size_t len, int *status)
{
    sg__fjob_t *j = job(g_tmp, pattern);
    sg__fop_search(j);
    *status = j->status;
    out[0] = 0;
    if (j->status == 200) {
        json_t *a = json_loads(j->resp, 0, NULL);
        assert_true(json_is_array(a));
        size_t i;
        json_t *v;
        json_array_foreach(a, i, v)
        {
            const char *p = json_string_value(json_object_get(v, "path"));
            assert_non_null(p);
            strncat(out, i ? " " : "", len - strlen(out) - 1);
            strncat(out, p + strlen(g_tmp) + 1, len - strlen(out) - 1);
        }
        json_decref(a);
    }
    job_free(j);
}

static void test_search_and_list(void **state)
{
    (void)state;
    mkd("s");
    mkd("s/b");
    mkd("s/a");
    mkfile("s/b/x.txt", "x");
    mkfile("s/a/y.txt", "y");
    mkfile("s/z.py", "z");
    mkfile("s/a/B.txt", "b");
    char p[512], out[2048];
    snprintf(p, sizeof(p), "%s/s/link", g_tmp);
    assert_int_equal(symlink("a", p), 0);
    int st;
    search_names("**", out, sizeof(out), &st);
    assert_int_equal(st, 200);
    /* lexical by byte ("B" < "y"), directories skipped, the symlink listed, not followed */
    assert_string_equal(out, "i.txt s/a/B.txt s/a/y.txt s/b/x.txt s/link s/z.py");
    search_names("*.txt", out, sizeof(out), &st);
    assert_string_equal(out, "i.txt s/a/B.txt s/a/y.txt s/b/x.txt");
    search_names("**/*.txt", out, sizeof(out), &st);
    assert_string_equal(out, "i.txt s/a/B.txt s/a/y.txt s/b/x.txt");
    search_names("{z,x}.*", out, sizeof(out), &st);
    assert_string_equal(out, "s/b/x.txt s/z.py");
    search_names("s/*.py", out, sizeof(out), &st);
    assert_int_equal(st, 200);
    assert_string_equal(out, "");
    search_names("[", out, sizeof(out), &st);
    assert_int_equal(st, 500);

    /* bound */
    sg__fjob_t *j = job(g_tmp, NULL);
    j->max_walk = 3;
    sg__fop_search(j);
    assert_int_equal(j->status, 500);
    assert_non_null(strstr(j->resp, "too many entries"));
    job_free(j);

    /* list: pre-order, depth */
    snprintf(p, sizeof(p), "%s/s", g_tmp);
    j = job(p, NULL);
    j->num = 2;
    sg__fop_list(j);
    assert_int_equal(j->status, 200);
    json_t *a = json_loads(j->resp, 0, NULL);
    const char *want[] = {"a", "a/B.txt", "a/y.txt", "b", "b/x.txt", "link", "z.py"};
    assert_int_equal(json_array_size(a), SG_ARRAY_SIZE(want));
    for (size_t i = 0; i < SG_ARRAY_SIZE(want); i++) {
        char w[600];
        snprintf(w, sizeof(w), "%s/%s", p, want[i]);
        assert_string_equal(json_string_value(json_object_get(json_array_get(a, i), "path")), w);
    }
    json_decref(a);
    job_free(j);
    snprintf(p, sizeof(p), "%s/s/link", g_tmp);
    j = job(p, NULL);
    j->num = 1;
    sg__fop_list(j);
    assert_int_equal(j->status, 400);
    assert_non_null(strstr(j->resp, "path is a symbolic link, refusing to traverse"));
    job_free(j);
}

static void test_replace(void **state)
{
    (void)state;
    /* Matches straddling the 64 KiB window, overlapping candidates, a match at the end. */
    size_t n = 200000;
    char *buf = malloc(n + 1);
    memset(buf, 'a', n);
    buf[n] = 0;
    memcpy(buf + 65534, "abab", 4);
    memcpy(buf + n - 3, "bab", 3);
    char p[512];
    snprintf(p, sizeof(p), "%s/r.txt", g_tmp);
    FILE *f = fopen(p, "w");
    fwrite(buf, 1, n, f);
    fclose(f);
    assert_int_equal(chmod(p, 0604), 0);
    sg__fjob_t *j = job(p, NULL);
    j->flag = 1;
    j->body = json_object();
    json_t *o = json_object();
    json_object_set_new(o, "old", json_string("bab"));
    json_object_set_new(o, "new", json_string("XY"));
    json_object_set_new(j->body, p, o);
    sg__fop_replace(j);
    assert_int_equal(j->status, 200);
    json_t *r = json_loads(j->resp, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, p), "replacedCount")),
                     2);
    json_decref(r);
    job_free(j);
    /* expected: the same replacement done in memory */
    char *want = malloc(n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && !memcmp(buf + i, "bab", 3)) {
            memcpy(want + w, "XY", 2);
            w += 2;
            i += 3;
        } else {
            want[w++] = buf[i++];
        }
    }
    f = fopen(p, "r");
    char *got = malloc(n + 1);
    size_t g = fread(got, 1, n + 1, f);
    fclose(f);
    assert_int_equal(g, w);
    assert_memory_equal(got, want, w);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0604);
    free(buf);
    free(want);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean),           cmocka_unit_test(test_expand),
        cmocka_unit_test(test_query),           cmocka_unit_test(test_time_and_mode),
        cmocka_unit_test(test_range),           cmocka_unit_test(test_info_json),
        cmocka_unit_test(test_search_and_list), cmocka_unit_test(test_replace),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
