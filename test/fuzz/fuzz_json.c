/* fuzz_json.c: parse -> compact dump -> parse again must give an equal value, and the dump of
 * that must be byte-identical (serialization is a fixed point). Also exercises the getters
 * and the error body on whatever parsed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"
#include "sandgate/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sg_json_err_t e;
    sg_json_err_init(&e);
    json_t *v = NULL;
    int rc = sg_json_parse((const char *)data, size, 64 * 1024, &v, &e);
    if (rc) {
        if (v || e.code != rc || !e.message[0]) abort();
        char *body = sg_json_error_body("INVALID_REQUEST_BODY", e.message); /* jansson's text may quote input bytes */
        json_t *b = NULL;
        sg_json_err_t e2;
        sg_json_err_init(&e2);
        if (sg_json_parse(body, strlen(body), 0, &b, &e2) != 0) abort();
        json_decref(b);
        free(body);
        return 0;
    }
    size_t len1;
    char *s1 = sg_json_dumps(v, &len1);
    json_t *w = NULL;
    sg_json_err_init(&e);
    if (sg_json_parse(s1, len1, 0, &w, &e) != 0) {
        fprintf(stderr, "re-parse failed: %s\n%s\n", e.message, s1);
        abort();
    }
    if (!json_equal(v, w)) abort();
    size_t len2;
    char *s2 = sg_json_dumps(w, &len2);
    if (len1 != len2 || memcmp(s1, s2, len1)) abort();

    /* getters must not crash on any shape */
    const char *s;
    int64_t i;
    bool bo;
    json_t *c;
    const char *key = "a";
    if (json_is_object(v) && json_object_size(v)) key = json_object_iter_key(json_object_iter(v));
    sg_json_err_init(&e);
    sg_json_get_string(v, key, NULL, &s, &e);
    sg_json_err_init(&e);
    sg_json_get_int64(v, key, 0, &i, &e);
    sg_json_err_init(&e);
    sg_json_get_bool(v, key, false, &bo, &e);
    sg_json_err_init(&e);
    sg_json_get_object(v, key, &c, &e);
    sg_json_err_init(&e);
    sg_json_get_array(v, key, &c, &e);

    free(s1);
    free(s2);
    json_decref(v);
    json_decref(w);
    return 0;
}
