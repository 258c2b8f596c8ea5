/* fuzz_config: the option parser and its value parsers on arbitrary text.
 *
 * The input is split on NUL bytes into argv words; each word is also fed to every value
 * parser. Nothing may crash, and a value a parser accepts must parse again to the same value
 * when printed back in canonical form. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"
#include "sandgate/config.h"

typedef struct {
    const char *s;
    int64_t i;
    uint64_t size;
    uint64_t dur;
    bool b;
} cfg_t;

static const sg_opt_t opts[] = {
    {"str", NULL, SG_OPT_STRING, offsetof(cfg_t, s), "x", 0, 0, NULL, "a string"},
    {"int", NULL, SG_OPT_INT, offsetof(cfg_t, i), "5", -100, 100, NULL, "an int"},
    {"size", NULL, SG_OPT_SIZE, offsetof(cfg_t, size), "1K", 0, 0, NULL, "a size"},
    {"dur", NULL, SG_OPT_DURATION, offsetof(cfg_t, dur), "1s", 0, 0, NULL, "a duration"},
    {"flag", NULL, SG_OPT_BOOL, offsetof(cfg_t, b), "false", 0, 0, NULL, "a bool"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[64];
    int argc = 0;
    argv[argc++] = "fuzz";
    for (char *p = buf; p <= buf + size && argc < 63;) {
        argv[argc++] = p;
        p += strlen(p) + 1;
    }
    argv[argc] = NULL;

    cfg_t cfg;
    char err[256];
    memset(&cfg, 0, sizeof(cfg));
    (void)sg_config_parse(opts, SG_ARRAY_SIZE(opts), &cfg, argc, argv, err, sizeof(err));

    for (int k = 1; k < argc; k++) {
        int64_t i;
        uint64_t u;
        bool b;
        char again[64];
        if (sg_config_parse_int(argv[k], &i) == 0) {
            snprintf(again, sizeof(again), "%lld", (long long)i);
            int64_t j;
            if (sg_config_parse_int(again, &j) != 0 || i != j) abort();
        }
        if (sg_config_parse_size(argv[k], &u) == 0) {
            snprintf(again, sizeof(again), "%llu", (unsigned long long)u);
            uint64_t v;
            if (sg_config_parse_size(again, &v) != 0 || u != v) abort();
        }
        if (sg_config_parse_duration(argv[k], &u) == 0) {
            snprintf(again, sizeof(again), "%llums", (unsigned long long)u);
            uint64_t v;
            if (sg_config_parse_duration(again, &v) != 0 || u != v) abort();
        }
        (void)sg_config_parse_bool(argv[k], &b);
    }
    free(buf);
    return 0;
}
