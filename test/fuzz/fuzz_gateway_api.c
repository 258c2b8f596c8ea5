/* fuzz_gateway_api.c: the lifecycle API's parsers on arbitrary input. The first byte picks:
 *   0  CreateSandboxRequest validation (the rest parsed as JSON): a success has an image and an
 *      entrypoint of strings; a failure has a status and a body that is JSON again
 *   1  GET /sandboxes query: success means page >= 1 and 1 <= pageSize <= 200
 *   2  RFC 3339 times: a parsed time formats and parses back to itself
 *   3  metadata merge-patch of the rest (JSON) into a fixed object: all or nothing
 *   4  cpu / memory quantities: no crash, positive results only */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "sandbox.h"
#include "sandgate/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 64 * 1024) return 0;
    int sel = data[0] % 5;
    char *s = sg_xstrndup((const char *)data + 1, size - 1); /* NUL-terminated copy */
    sg_api_err_t e;
    sg_api_err_init(&e);
    if (sel == 0 || sel == 3) {
        json_error_t je;
        json_t *j = json_loads(s, JSON_DECODE_ANY, &je);
        if (j && sel == 0) {
            sg_api_config_t cfg;
            sg_api_config_init(&cfg);
            cfg.host_prefixes[cfg.n_host_prefixes++] = "/srv";
            sg_api_create_t c;
            int st = sg_api_parse_create(j, &cfg, &c, &e);
            if (st == 0) {
                if (!c.image || !json_is_array(c.entrypoint) || json_array_size(c.entrypoint) < 1)
                    abort();
                for (size_t i = 0; i < c.n_volumes; i++)
                    if (strncmp(c.volumes[i].host_path, "/srv", 4) != 0) abort();
                sg_api_create_free(&c);
            } else {
                if (st != 400 && st != 422) abort();
                json_t *b = sg_api_err_json(&e);
                char *t = json_dumps(b, JSON_COMPACT);
                json_t *back = json_loads(t, 0, &je);
                if (!back) abort();
                json_decref(back);
                free(t);
                json_decref(b);
            }
        } else if (j) {
            json_t *meta = json_pack("{s:s,s:s}", "a", "1", "b", "2");
            json_t *before = json_deep_copy(meta);
            char code[64], msg[256];
            int st = sg_sbx_metadata_patch(meta, j, code, msg, sizeof(msg));
            if (st && !json_equal(meta, before)) abort();
            json_decref(meta);
            json_decref(before);
        }
        json_decref(j);
    } else if (sel == 1) {
        sg_sbx_filter_t f;
        int st = sg_api_parse_list_query(s, &f, &e);
        if (st == 0 && (f.page < 1 || f.page_size < 1 || f.page_size > 200)) abort();
        json_decref(f.metadata);
    } else if (sel == 2) {
        int64_t us, us2;
        if (sg_sbx_parse_time(s, &us) == 0 && us > -62135596800000000LL &&
            us < 253402300799000000LL) {
            char buf[40];
            sg_sbx_format_time(us, buf);
            if (sg_sbx_parse_time(buf, &us2) != 0 || us2 != us) abort();
        }
    } else {
        uint64_t v;
        if (sg_api_parse_cpu(s, &v) == 0 && v == 0) abort();
        if (sg_api_parse_memory(s, &v) == 0 && v == 0) abort();
    }
    sg_api_err_free(&e);
    free(s);
    return 0;
}
