/* fuzz_execd_glob.c: libFuzzer target for the /files/search glob matcher (src/execd/glob.h).
 *
 * Input: pattern, '\n', name (each cut to 1 KiB). Checks: no crash, no timeout (the matcher is
 * polynomial), validate agrees with compile, a compiled glob gives the same answer twice, and
 * a pattern with no special characters matches exactly itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"
#include "sandgate/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nl = memchr(in, '\n', size);
    size_t plen = nl ? (size_t)(nl - in) : size;
    const char *name = nl ? nl + 1 : "";
    size_t nlen = nl ? size - plen - 1 : 0;
    if (plen > 1024 || nlen > 1024) return 0;
    char msg[256] = "";
    int v = sg_glob_validate(in, plen, msg, sizeof(msg));
    sg_glob_t *g = NULL;
    int rc = sg_glob_compile(in, plen, &g, msg, sizeof(msg));
    if (v && rc != v) abort();
    if (rc && (g || !msg[0])) abort();
    if (!v && rc && rc != SG_ETOOBIG) abort(); /* only the expansion bounds are compile's own */
    if (rc) return 0;
    int m = sg_glob_match(g, name, nlen);
    if (m != 0 && m != 1) abort();
    if (sg_glob_match(g, name, nlen) != m) abort();
    int plain = 1;
    for (size_t i = 0; i < plen; i++)
        if (strchr("*?[]{}\\,", in[i]) || in[i] == 0) plain = 0;
    if (plain && sg_glob_match(g, in, plen) != 1) abort();
    if (plain && m != (plen == nlen && memcmp(in, name, plen) == 0)) abort();
    sg_glob_free(g);
    return 0;
}
