/* test_gateway_api.c: the lifecycle API's pure parts: create validation (422 vs 400 and their
 * bodies), resource quantities, times, label rules, the RFC 7396 metadata merge, list query
 * parsing, filtering + pagination, the JSON shapes and their field order, proxy headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api.h"
#include "proxy.h"
#include "sandbox.h"
#include "sandgate/common.h"
#include "sandgate/json.h"

static json_t *J(const char *s)
{
    json_error_t je;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &je);
    if (!v) fail_msg("bad test JSON %s: %s", s, je.text);
    return v;
}

static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT);
}

static char *dumpd(json_t *v)
{
    char *s = dump(v);
    json_decref(v);
    return s;
}

#define SDK_BODY                                                                                   \
    "{\"image\":{\"uri\":\"ubuntu:22.04\"},\"entrypoint\":[\"tail\",\"-f\",\"/dev/null\"],"        \
    "\"resourceLimits\":{\"cpu\":\"1\",\"memory\":\"2Gi\"},\"secureAccess\":false,\"env\":{},"     \
    "\"metadata\":{},\"extensions\":{},\"timeout\":600}"

/* Runs sg_api_parse_create on text; returns the status and the error body in *body. */
static int create(const char *text, const sg_api_config_t *cfg, sg_api_create_t *c, char **body)
{
    json_t *j = J(text);
    sg_api_err_t e;
    sg_api_err_init(&e);
    sg_api_create_t tmp;
    if (!c) c = &tmp;
    int st = sg_api_parse_create(j, cfg, c, &e);
    if (body) *body = st ? dumpd(sg_api_err_json(&e)) : NULL;
    if (!st && c == &tmp) sg_api_create_free(c);
    sg_api_err_free(&e);
    json_decref(j);
    return st;
}

static void test_create_sdk_body(void **state)
{
    (void)state;
    sg_api_config_t cfg;
    sg_api_config_init(&cfg);
    json_t *j = J(SDK_BODY);
    sg_api_err_t e;
    sg_api_err_init(&e);
    sg_api_create_t c;
    assert_int_equal(sg_api_parse_create(j, &cfg, &c, &e), 0);
    assert_string_equal(c.image, "ubuntu:22.04");
    assert_int_equal(json_array_size(c.entrypoint), 3);
    assert_int_equal(c.timeout_s, 600);
    assert_int_equal(c.cpu_millis, 1000);
    assert_int_equal(c.memory_bytes, 2ull << 30);
    assert_int_equal(c.network_allow, 0);
    assert_int_equal(c.n_volumes, 0);
    sg_api_create_free(&c);
    sg_api_err_free(&e);
    json_decref(j);

    /* env nulls are dropped; networkPolicy allow opens the network */
    j = J("{\"image\":{\"uri\":\"x\"},\"entrypoint\":[\"sh\"],\"resourceLimits\":{},"
          "\"env\":{\"A\":\"1\",\"B\":null},\"networkPolicy\":{\"defaultAction\":\"allow\"},"
          "\"timeout\":null}");
    sg_api_err_init(&e);
    assert_int_equal(sg_api_parse_create(j, &cfg, &c, &e), 0);
    assert_int_equal(json_object_size(c.env), 1);
    assert_string_equal(json_string_value(json_object_get(c.env, "A")), "1");
    assert_int_equal(c.network_allow, 1);
    assert_int_equal(c.timeout_s, 0);
    sg_api_create_free(&c);
    json_decref(j);
}

static void test_create_422(void **state)
{
    (void)state;
    sg_api_config_t cfg;
    sg_api_config_init(&cfg);
    char *b;

    /* both image and snapshotId; timeout < 60; missing resourceLimits: all three reported */
    assert_int_equal(
        create("{\"image\":{\"uri\":\"x\"},\"snapshotId\":\"s\",\"entrypoint\":[\"a\"],"
               "\"timeout\":59}",
               &cfg, NULL, &b),
        422);
    json_t *bj = J(b);
    assert_int_equal(json_array_size(json_object_get(bj, "detail")), 3);
    json_decref(bj);
    assert_non_null(strstr(b, "\"type\":\"value_error\""));
    assert_non_null(strstr(b, "\"loc\":[\"body\",\"timeout\"]"));
    assert_non_null(strstr(b, "\"ctx\":{\"ge\":60}"));
    assert_non_null(strstr(
        b,
        "{\"type\":\"missing\",\"loc\":[\"body\",\"resourceLimits\"],\"msg\":\"Field required\""));
    free(b);

    /* neither image nor snapshotId (blank snapshotId is absent) */
    assert_int_equal(create("{\"snapshotId\":\"  \",\"resourceLimits\":{}}", &cfg, NULL, &b), 422);
    assert_non_null(strstr(b, "one of image or snapshotId is required"));
    free(b);

    /* image without entrypoint */
    assert_int_equal(create("{\"image\":{\"uri\":\"x\"},\"resourceLimits\":{}}", &cfg, NULL, &b),
                     422);
    assert_non_null(strstr(b, "entrypoint is required"));
    free(b);

    /* wrong types */
    assert_int_equal(create("{\"image\":{\"uri\":3},\"entrypoint\":[\"a\",1],\"resourceLimits\":"
                            "{\"cpu\":2},\"env\":[],\"metadata\":{\"k\":1},\"timeout\":\"600\"}",
                            &cfg, NULL, &b),
                     422);
    assert_non_null(strstr(b, "\"loc\":[\"body\",\"image\",\"uri\"]"));
    assert_non_null(strstr(b, "\"loc\":[\"body\",\"entrypoint\",1]"));
    assert_non_null(strstr(b, "\"loc\":[\"body\",\"resourceLimits\",\"cpu\"]"));
    assert_non_null(strstr(b, "\"loc\":[\"body\",\"env\"]"));
    assert_non_null(strstr(b, "\"loc\":[\"body\",\"metadata\",\"k\"]"));
    assert_non_null(strstr(b, "\"type\":\"int_type\""));
    free(b);

    /* not an object at all */
    assert_int_equal(create("[1]", &cfg, NULL, &b), 422);
    assert_non_null(strstr(b, "model_attributes_type"));
    free(b);

    /* platform literal */
    assert_int_equal(
        create("{\"image\":{\"uri\":\"x\"},\"entrypoint\":[\"a\"],\"resourceLimits\":{},"
               "\"platform\":{\"os\":\"linux\",\"arch\":\"sparc\"}}",
               &cfg, NULL, &b),
        422);
    assert_non_null(strstr(b, "Input should be 'amd64' or 'arm64'"));
    free(b);

    /* 422 wins over 400 */
    assert_int_equal(create("{\"image\":{\"uri\":\"x\"},\"entrypoint\":[],\"timeout\":1,"
                            "\"resourceLimits\":{}}",
                            &cfg, NULL, &b),
                     422);
    free(b);
}

static void expect400(const sg_api_config_t *cfg, const char *body, const char *code)
{
    char *b;
    int st = create(body, cfg, NULL, &b);
    if (st != 400 || !strstr(b, code))
        fail_msg("%s -> %d %s (wanted 400 %s)", body, st, b ? b : "", code);
    json_t *j = J(b);
    assert_string_equal(json_string_value(json_object_get(j, "code")), code);
    assert_true(json_is_string(json_object_get(j, "message")));
    json_decref(j);
    free(b);
}

#define BASE "\"image\":{\"uri\":\"x\"},\"entrypoint\":[\"a\"],\"resourceLimits\":{}"

static void test_create_400(void **state)
{
    (void)state;
    sg_api_config_t cfg;
    sg_api_config_init(&cfg);
    expect400(&cfg, "{\"image\":{\"uri\":\"x\"},\"entrypoint\":[],\"resourceLimits\":{}}",
              "SANDBOX::INVALID_ENTRYPOINT");
    expect400(&cfg, "{\"snapshotId\":\"snap\",\"resourceLimits\":{}}",
              "SANDBOX::API_NOT_SUPPORTED");
    expect400(&cfg, "{" BASE ",\"metadata\":{\"opensandbox.io/x\":\"y\"}}",
              "INVALID_METADATA_LABEL");
    expect400(&cfg, "{" BASE ",\"metadata\":{\"k\":\"-bad\"}}", "INVALID_METADATA_LABEL");
    expect400(
        &cfg,
        "{\"image\":{\"uri\":\"x\"},\"entrypoint\":[\"a\"],\"resourceLimits\":{\"cpu\":\"lots\"}}",
        "SANDBOX::INVALID_PARAMETER");
    expect400(&cfg,
              "{\"image\":{\"uri\":\"x\"},\"entrypoint\":[\"a\"],\"resourceLimits\":{\"memory\":"
              "\"2Qi\"}}",
              "SANDBOX::INVALID_PARAMETER");
    expect400(&cfg, "{" BASE ",\"extensions\":{\"access.renew.extend.seconds\":\"10\"}}",
              "SANDBOX::INVALID_PARAMETER");
    expect400(&cfg, "{" BASE ",\"extensions\":{\"poolRef\":\"p\"}}",
              "SANDBOX::UNSUPPORTED_POOL_REF");
    expect400(&cfg,
              "{" BASE ",\"networkPolicy\":{\"defaultAction\":\"deny\",\"egress\":[{\"action\":"
              "\"allow\",\"target\":\"pypi.org\"}]}}",
              "SANDBOX::API_NOT_SUPPORTED");
    expect400(&cfg, "{" BASE ",\"credentialProxy\":{\"enabled\":true}}",
              "SANDBOX::INVALID_PARAMETER");
    /* volumes: host paths only under an allowed prefix */
    expect400(
        &cfg,
        "{" BASE
        ",\"volumes\":[{\"name\":\"v\",\"mountPath\":\"/data\",\"host\":{\"path\":\"/srv/x\"}}]}",
        "VOLUME::HOST_PATH_NOT_ALLOWED");
    cfg.host_prefixes[cfg.n_host_prefixes++] = "/srv/";
    expect400(&cfg,
              "{" BASE ",\"volumes\":[{\"name\":\"v\",\"mountPath\":\"/"
                       "data\",\"host\":{\"path\":\"/srv/../etc\"}}]}",
              "VOLUME::INVALID_HOST_PATH");
    expect400(
        &cfg,
        "{" BASE
        ",\"volumes\":[{\"name\":\"v\",\"mountPath\":\"/data\",\"host\":{\"path\":\"/srvx\"}}]}",
        "VOLUME::HOST_PATH_NOT_ALLOWED");
    expect400(
        &cfg,
        "{" BASE
        ",\"volumes\":[{\"name\":\"v\",\"mountPath\":\"data\",\"host\":{\"path\":\"/srv/a\"}}]}",
        "VOLUME::INVALID_MOUNT_PATH");
    expect400(&cfg,
              "{" BASE
              ",\"volumes\":[{\"name\":\"v\",\"mountPath\":\"/d\",\"pvc\":{\"claimName\":\"c\"}}]}",
              "VOLUME::UNSUPPORTED_VOLUME_BACKEND");
    expect400(&cfg,
              "{" BASE
              ",\"volumes\":[{\"name\":\"v\",\"mountPath\":\"/d\",\"host\":{\"path\":\"/srv/a\"},"
              "\"pvc\":{\"claimName\":\"c\"}}]}",
              "VOLUME::INVALID_VOLUME_BACKEND");
    expect400(&cfg,
              "{" BASE
              ",\"volumes\":[{\"name\":\"v\",\"mountPath\":\"/d\",\"host\":{\"path\":\"/srv/a\"}},"
              "{\"name\":\"v\",\"mountPath\":\"/e\",\"host\":{\"path\":\"/srv/b\"}}]}",
              "VOLUME::DUPLICATE_VOLUME_NAME");
    cfg.max_timeout_s = 3600;
    expect400(&cfg, "{" BASE ",\"timeout\":3601}", "SANDBOX::INVALID_PARAMETER");

    /* and an accepted volume */
    json_t *j = J("{" BASE ",\"timeout\":3600,\"volumes\":[{\"name\":\"v\",\"mountPath\":\"/d\","
                  "\"readOnly\":true,\"subPath\":\"sub/dir\",\"host\":{\"path\":\"/srv/a\"}}]}");
    sg_api_err_t e;
    sg_api_err_init(&e);
    sg_api_create_t c;
    assert_int_equal(sg_api_parse_create(j, &cfg, &c, &e), 0);
    assert_int_equal(c.n_volumes, 1);
    assert_string_equal(c.volumes[0].host_path, "/srv/a");
    assert_string_equal(c.volumes[0].mount_path, "/d");
    assert_string_equal(c.volumes[0].sub_path, "sub/dir");
    assert_int_equal(c.volumes[0].read_only, 1);
    sg_api_create_free(&c);
    json_decref(j);
}

static void test_quantities(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(sg_api_parse_cpu("500m", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(sg_api_parse_cpu("2", &v), 0);
    assert_int_equal(v, 2000);
    assert_int_equal(sg_api_parse_cpu("0.5", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(sg_api_parse_cpu("0", &v), SG_EINVAL);
    assert_int_equal(sg_api_parse_cpu("m", &v), SG_EINVAL);
    assert_int_equal(sg_api_parse_cpu("1x", &v), SG_EINVAL);
    assert_int_equal(sg_api_parse_cpu("", &v), SG_EINVAL);

    assert_int_equal(sg_api_parse_memory("512Mi", &v), 0);
    assert_int_equal(v, 512ull << 20);
    assert_int_equal(sg_api_parse_memory("2Gi", &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(sg_api_parse_memory("1G", &v), 0);
    assert_int_equal(v, 1000000000ull);
    assert_int_equal(sg_api_parse_memory("512m", &v), 0);
    assert_int_equal(v, 512ull << 20);
    assert_int_equal(sg_api_parse_memory("1.5Gi", &v), 0);
    assert_int_equal(v, 3ull << 29);
    assert_int_equal(sg_api_parse_memory("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(sg_api_parse_memory("100b", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(sg_api_parse_memory("0", &v), SG_EINVAL);
    assert_int_equal(sg_api_parse_memory("Mi", &v), SG_EINVAL);
    assert_int_equal(sg_api_parse_memory("99999999999999999999Ti", &v), SG_EINVAL);
}

static void test_times(void **state)
{
    (void)state;
    char buf[40];
    sg_sbx_format_time(1781253000123456LL, buf);
    assert_string_equal(buf, "2026-06-12T08:30:00.123456Z");
    sg_sbx_format_time(1781253000000000LL, buf);
    assert_string_equal(buf, "2026-06-12T08:30:00Z");
    int64_t us;
    assert_int_equal(sg_sbx_parse_time("2026-06-12T08:30:00.123Z", &us), 0);
    assert_int_equal(us, 1781253000123000LL);
    assert_int_equal(sg_sbx_parse_time("2026-06-12T08:30:00", &us), 0); /* naive = UTC */
    assert_int_equal(us, 1781253000000000LL);
    assert_int_equal(sg_sbx_parse_time("2026-06-12T10:30:00+02:00", &us), 0);
    assert_int_equal(us, 1781253000000000LL);
    assert_int_equal(sg_sbx_parse_time("2026-06-12T08:30:00.1234567Z", &us), 0);
    assert_int_equal(us, 1781253000123456LL);
    assert_int_equal(sg_sbx_parse_time("2024-02-29T00:00:00Z", &us), 0);
    assert_int_equal(sg_sbx_parse_time("2026-02-29T00:00:00Z", &us), SG_EINVAL);
    assert_int_equal(sg_sbx_parse_time("2026-06-12", &us), SG_EINVAL);
    assert_int_equal(sg_sbx_parse_time("2026-06-12T25:00:00Z", &us), SG_EINVAL);
    assert_int_equal(sg_sbx_parse_time("2026-06-12T08:30:00Zjunk", &us), SG_EINVAL);
    /* years below 1000 keep four digits (found by fuzz_gateway_api) */
    assert_int_equal(sg_sbx_parse_time("0506-06-12T08:30:00.12Z", &us), 0);
    sg_sbx_format_time(us, buf);
    assert_string_equal(buf, "0506-06-12T08:30:00.120000Z");
    /* round trip */
    assert_int_equal(sg_sbx_parse_time("2026-06-12T08:30:00.123456Z", &us), 0);
    sg_sbx_format_time(us, buf);
    assert_string_equal(buf, "2026-06-12T08:30:00.123456Z");
}

static void test_uuid_and_states(void **state)
{
    (void)state;
    char a[37], b[37];
    sg_sbx_uuid4(a);
    sg_sbx_uuid4(b);
    assert_int_equal(strlen(a), 36);
    assert_string_not_equal(a, b);
    assert_int_equal(a[8], '-');
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
    assert_int_equal(sg_sbx_state_parse("running"), SG_SBX_RUNNING);
    assert_int_equal(sg_sbx_state_parse("PAUSED"), SG_SBX_PAUSED);
    assert_int_equal(sg_sbx_state_parse("Nope"), -1);
    assert_string_equal(sg_sbx_state_name(SG_SBX_FAILED), "Failed");
}

static void test_metadata_patch(void **state)
{
    (void)state;
    json_t *m = J("{\"a\":\"1\",\"b\":\"2\"}");
    char code[64], msg[256];
    json_t *p = J("{\"a\":null,\"c\":\"3\"}");
    assert_int_equal(sg_sbx_metadata_patch(m, p, code, msg, sizeof(msg)), 0);
    char *s = dump(m);
    assert_string_equal(s, "{\"b\":\"2\",\"c\":\"3\"}");
    free(s);
    json_decref(p);
    /* {} is a no-op; deleting an absent key is fine */
    p = J("{\"zz\":null}");
    assert_int_equal(sg_sbx_metadata_patch(m, p, code, msg, sizeof(msg)), 0);
    assert_int_equal(json_object_size(m), 2);
    json_decref(p);
    /* all or nothing: one bad member leaves m untouched */
    p = J("{\"b\":\"9\",\"opensandbox.io/x\":\"y\"}");
    assert_int_equal(sg_sbx_metadata_patch(m, p, code, msg, sizeof(msg)), 400);
    assert_string_equal(code, "INVALID_METADATA_LABEL");
    assert_string_equal(json_string_value(json_object_get(m, "b")), "2");
    json_decref(p);
    p = J("{\"b\":7}");
    assert_int_equal(sg_sbx_metadata_patch(m, p, code, msg, sizeof(msg)), 422);
    json_decref(p);
    p = J("[1]");
    assert_int_equal(sg_sbx_metadata_patch(m, p, code, msg, sizeof(msg)), 422);
    json_decref(p);
    json_decref(m);

    assert_int_equal(sg_sbx_label_check("app.kubernetes.io/name", "web-1", msg, sizeof(msg)), 0);
    assert_int_equal(sg_sbx_label_check("project", "", msg, sizeof(msg)), 0);
    assert_int_equal(sg_sbx_label_check("Bad_Prefix/x", "v", msg, sizeof(msg)), SG_EINVAL);
    assert_int_equal(sg_sbx_label_check("x", "has space", msg, sizeof(msg)), SG_EINVAL);
    char long_v[70];
    memset(long_v, 'a', 64);
    long_v[64] = '\0';
    assert_int_equal(sg_sbx_label_check("x", long_v, msg, sizeof(msg)), SG_EINVAL);
}

static void test_query(void **state)
{
    (void)state;
    const char *q = "a=1&b=x+y%2Fz&&c&d=";
    char n[32], v[32];
    assert_int_equal(sg_api_query_next(&q, n, sizeof(n), v, sizeof(v)), 1);
    assert_string_equal(n, "a");
    assert_string_equal(v, "1");
    assert_int_equal(sg_api_query_next(&q, n, sizeof(n), v, sizeof(v)), 1);
    assert_string_equal(v, "x y/z");
    assert_int_equal(sg_api_query_next(&q, n, sizeof(n), v, sizeof(v)), 1);
    assert_string_equal(n, "c");
    assert_string_equal(v, "");
    assert_int_equal(sg_api_query_next(&q, n, sizeof(n), v, sizeof(v)), 1);
    assert_string_equal(n, "d");
    assert_int_equal(sg_api_query_next(&q, n, sizeof(n), v, sizeof(v)), 0);
    q = "x=0123456789012345678901234567890123456789";
    assert_int_equal(sg_api_query_next(&q, n, sizeof(n), v, sizeof(v)), SG_ETOOBIG);

    sg_sbx_filter_t f;
    sg_api_err_t e;
    sg_api_err_init(&e);
    assert_int_equal(sg_api_parse_list_query("", &f, &e), 0);
    assert_int_equal(f.page, 1);
    assert_int_equal(f.page_size, 20);
    assert_int_equal(f.states, 0);
    assert_null(f.metadata);

    assert_int_equal(
        sg_api_parse_list_query("state=running&state=PAUSED&metadata=project%3Ddemo%26team%3Dm%2Bl"
                                "&page=2&pageSize=200",
                                &f, &e),
        0);
    assert_int_equal(f.states, (1u << SG_SBX_RUNNING) | (1u << SG_SBX_PAUSED));
    assert_int_equal(f.page, 2);
    assert_int_equal(f.page_size, 200);
    char *s = dump(f.metadata);
    assert_string_equal(s, "{\"project\":\"demo\",\"team\":\"m l\"}");
    free(s);
    json_decref(f.metadata);

    assert_int_equal(sg_api_parse_list_query("pageSize=201", &f, &e), 422);
    s = dumpd(sg_api_err_json(&e));
    assert_non_null(strstr(s, "\"loc\":[\"query\",\"pageSize\"]"));
    free(s);
    sg_api_err_free(&e);
    sg_api_err_init(&e);
    assert_int_equal(sg_api_parse_list_query("page=abc", &f, &e), 422);
    sg_api_err_free(&e);
    sg_api_err_init(&e);
    assert_int_equal(sg_api_parse_list_query("metadata=novalue", &f, &e), 400);
    assert_string_equal(e.code, "INVALID_METADATA_FORMAT");
    json_decref(f.metadata);
    sg_api_err_free(&e);
    sg_api_err_init(&e);
    /* an unknown state filters everything out */
    assert_int_equal(sg_api_parse_list_query("state=Nope", &f, &e), 0);
    assert_int_not_equal(f.states, 0);
}

static sg_sandbox_t *mk(sg_tenant_t *t, int64_t created, sg_sbx_state_t st, const char *meta)
{
    sg_sandbox_t *s = sg_sbx_new();
    s->created_us = created;
    s->state = st;
    json_decref(s->metadata);
    s->metadata = J(meta);
    s->image = sg_xstrdup("ubuntu:22.04");
    json_array_append_new(s->entrypoint, json_string("sh"));
    sg_sbx_link(t, s);
    sg_sbx_unref(s);
    return s;
}

static void test_list_and_shapes(void **state)
{
    (void)state;
    sg_sbx_store_t st;
    sg_sbx_store_init(&st);
    sg_tenant_t *t = sg_sbx_tenant(&st, "default", 1);
    assert_ptr_equal(sg_sbx_tenant(&st, "default", 0), t);
    assert_null(sg_sbx_tenant(&st, "other", 0));
    sg_sandbox_t *s1 = mk(t, 1000000, SG_SBX_RUNNING, "{\"project\":\"demo\"}");
    sg_sandbox_t *s2 = mk(t, 3000000, SG_SBX_PAUSED, "{\"project\":\"demo\",\"team\":\"ml\"}");
    sg_sandbox_t *s3 = mk(t, 2000000, SG_SBX_FAILED, "{}");
    assert_ptr_equal(sg_sbx_find(t, s1->id), s1);
    assert_null(sg_sbx_find(t, "nope"));
    /* a tenant that does not hold the id does not find it */
    sg_tenant_t *other = sg_sbx_tenant(&st, "other", 1);
    assert_null(sg_sbx_find(other, s1->id));

    sg_sbx_filter_t f = {0, NULL, 1, 2};
    json_t *l = sg_sbx_list_json(t, &f);
    json_t *items = json_object_get(l, "items");
    assert_int_equal(json_array_size(items), 2);
    /* newest first, whatever the link order */
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "id")), s2->id);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 1), "id")), s3->id);
    char *p = dump(json_object_get(l, "pagination"));
    assert_string_equal(
        p, "{\"page\":1,\"pageSize\":2,\"totalItems\":3,\"totalPages\":2,\"hasNextPage\":true}");
    free(p);
    json_decref(l);

    f.page = 2;
    l = sg_sbx_list_json(t, &f);
    items = json_object_get(l, "items");
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "id")), s1->id);
    assert_false(json_is_true(json_object_get(json_object_get(l, "pagination"), "hasNextPage")));
    json_decref(l);

    f.page = 1;
    f.page_size = 20;
    f.states = (1u << SG_SBX_RUNNING) | (1u << SG_SBX_PAUSED);
    f.metadata = J("{\"project\":\"demo\"}");
    l = sg_sbx_list_json(t, &f);
    assert_int_equal(json_array_size(json_object_get(l, "items")), 2);
    json_decref(l);
    json_object_set_new(f.metadata, "team", json_string("ml"));
    l = sg_sbx_list_json(t, &f);
    assert_int_equal(json_array_size(json_object_get(l, "items")), 1);
    json_decref(l);
    json_decref(f.metadata);

    /* empty: totalPages 0 */
    f = (sg_sbx_filter_t){0, NULL, 1, 20};
    l = sg_sbx_list_json(other, &f);
    p = dump(l);
    assert_string_equal(p,
                        "{\"items\":[],\"pagination\":{\"page\":1,\"pageSize\":20,\"totalItems\":0,"
                        "\"totalPages\":0,\"hasNextPage\":false}}");
    free(p);
    json_decref(l);

    /* shapes and field order */
    s1->created_us = 1781253000123456LL;
    s1->transition_us = 1781253000000000LL;
    s1->expires_us = 1781253600123456LL;
    sg_sbx_set_state(s1, SG_SBX_RUNNING, "SANDBOX_RUNNING", "Sandbox is running.");
    assert_int_equal(s1->transition_us, 1781253000000000LL); /* same state: time kept */
    char want[1024];
    snprintf(
        want, sizeof(want),
        "{\"id\":\"%s\",\"image\":{\"uri\":\"ubuntu:22.04\"},\"status\":{\"state\":\"Running\","
        "\"reason\":\"SANDBOX_RUNNING\",\"message\":\"Sandbox is running.\",\"lastTransitionAt\":"
        "\"2026-06-12T08:30:00Z\"},\"metadata\":{\"project\":\"demo\"},\"entrypoint\":[\"sh\"],"
        "\"expiresAt\":\"2026-06-12T08:40:00.123456Z\",\"createdAt\":\"2026-06-12T08:30:00."
        "123456Z\"}",
        s1->id);
    json_t *j = sg_sbx_json(s1);
    p = dump(j);
    assert_string_equal(p, want);
    free(p);
    json_decref(j);
    s1->platform = J("{\"os\":\"linux\",\"arch\":\"amd64\"}");
    snprintf(
        want, sizeof(want),
        "{\"id\":\"%s\",\"status\":{\"state\":\"Running\",\"reason\":\"SANDBOX_RUNNING\","
        "\"message\":\"Sandbox is running.\",\"lastTransitionAt\":\"2026-06-12T08:30:00Z\"},"
        "\"metadata\":{\"project\":\"demo\"},\"platform\":{\"os\":\"linux\",\"arch\":\"amd64\"},"
        "\"expiresAt\":\"2026-06-12T08:40:00.123456Z\",\"createdAt\":\"2026-06-12T08:30:00."
        "123456Z\","
        "\"entrypoint\":[\"sh\"]}",
        s1->id);
    j = sg_sbx_create_json(s1);
    p = dump(j);
    assert_string_equal(p, want);
    free(p);
    json_decref(j);
    /* no expiry, no reason: omitted, not null */
    s1->expires_us = 0;
    sg_sbx_set_state(s1, SG_SBX_PAUSED, NULL, NULL);
    assert_int_not_equal(s1->transition_us, 1781253000000000LL);
    j = sg_sbx_json(s1);
    assert_null(json_object_get(j, "expiresAt"));
    assert_null(json_object_get(json_object_get(j, "status"), "reason"));
    assert_null(json_object_get(json_object_get(j, "status"), "message"));
    json_decref(j);

    /* unlink while referenced: the record survives until the last unref */
    sg_sbx_ref(s2);
    sg_sbx_unlink(s2);
    assert_int_equal(t->count, 2);
    assert_null(sg_sbx_find(t, s2->id));
    assert_int_equal(s2->linked, 0);
    sg_sbx_unref(s2);
    sg_sbx_store_free(&st);
}

static void test_proxy_headers(void **state)
{
    (void)state;
    sg_hdrs_t in, out;
    sg_hdrs_init(&in);
    sg_hdrs_init(&out);
    sg_hdrs_addz(&in, "Host", "gw.example:8080");
    sg_hdrs_addz(&in, "Connection", "keep-alive, X-Secret");
    sg_hdrs_addz(&in, "X-Secret", "s");
    sg_hdrs_addz(&in, "Keep-Alive", "timeout=5");
    sg_hdrs_addz(&in, "Transfer-Encoding", "chunked");
    sg_hdrs_addz(&in, "OPEN-SANDBOX-API-KEY", "k");
    sg_hdrs_addz(&in, "Authorization", "Bearer x");
    sg_hdrs_addz(&in, "Cookie", "c=1");
    sg_hdrs_addz(&in, "X-EXECD-ACCESS-TOKEN", "forged");
    sg_hdrs_addz(&in, "Accept", "text/event-stream");
    sg_hdrs_addz(&in, "Content-Type", "application/json");
    sg_proxy_request_headers(&in, &out, "10.1.2.3:5555", 0, "tok");
    assert_null(sg_hdrs_get(&out, "host"));
    assert_null(sg_hdrs_get(&out, "connection"));
    assert_null(sg_hdrs_get(&out, "x-secret"));
    assert_null(sg_hdrs_get(&out, "keep-alive"));
    assert_null(sg_hdrs_get(&out, "transfer-encoding"));
    assert_null(sg_hdrs_get(&out, "open-sandbox-api-key"));
    assert_null(sg_hdrs_get(&out, "authorization"));
    assert_null(sg_hdrs_get(&out, "cookie"));
    assert_string_equal(sg_hdrs_get(&out, "accept"), "text/event-stream");
    assert_string_equal(sg_hdrs_get(&out, "content-type"), "application/json");
    assert_string_equal(sg_hdrs_get(&out, "x-forwarded-proto"), "http");
    assert_string_equal(sg_hdrs_get(&out, "x-forwarded-host"), "gw.example:8080");
    assert_string_equal(sg_hdrs_get(&out, "x-forwarded-for"), "10.1.2.3");
    assert_string_equal(sg_hdrs_get(&out, "x-execd-access-token"), "tok");
    sg_hdrs_free(&out);

    /* existing X-Forwarded-* are kept; v6 peers lose their brackets; no token, none sent */
    sg_hdrs_init(&out);
    sg_hdrs_addz(&in, "X-Forwarded-For", "1.1.1.1");
    sg_proxy_request_headers(&in, &out, "[::1]:80", 1, "");
    assert_string_equal(sg_hdrs_get(&out, "x-forwarded-for"), "1.1.1.1");
    assert_string_equal(sg_hdrs_get(&out, "x-forwarded-proto"), "https");
    assert_null(sg_hdrs_get(&out, "x-execd-access-token"));
    sg_hdrs_free(&out);
    sg_hdrs_init(&out);
    sg_hdrs_del(&in, "X-Forwarded-For");
    sg_proxy_request_headers(&in, &out, "[::1]:80", 1, NULL);
    assert_string_equal(sg_hdrs_get(&out, "x-forwarded-for"), "::1");
    sg_hdrs_free(&out);
    sg_hdrs_free(&in);

    sg_hdrs_init(&in);
    sg_hdrs_init(&out);
    sg_hdrs_addz(&in, "Content-Type", "text/event-stream");
    sg_hdrs_addz(&in, "Transfer-Encoding", "chunked");
    sg_hdrs_addz(&in, "Connection", "close");
    sg_hdrs_addz(&in, "Date", "x");
    sg_hdrs_addz(&in, "Content-Length", "5");
    sg_proxy_response_headers(&in, &out);
    assert_int_equal(out.n, 2);
    assert_string_equal(sg_hdrs_get(&out, "content-type"), "text/event-stream");
    assert_string_equal(sg_hdrs_get(&out, "content-length"), "5");
    sg_hdrs_free(&out);
    sg_hdrs_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_sdk_body), cmocka_unit_test(test_create_422),
        cmocka_unit_test(test_create_400),      cmocka_unit_test(test_quantities),
        cmocka_unit_test(test_times),           cmocka_unit_test(test_uuid_and_states),
        cmocka_unit_test(test_metadata_patch),  cmocka_unit_test(test_query),
        cmocka_unit_test(test_list_and_shapes), cmocka_unit_test(test_proxy_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
