/* bcommon.c: what every scenario shares: flag parsing with help, the result document's head,
 * the per-run id substituted into URLs. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "bstat.h"
#include "sandgate/common.h"
#include "sandgate/config.h"

int bench_parse(const struct sg_opt *opts, size_t n, void *cfg, int argc, char **argv,
                const char *usage, int *exit_code)
{
    char err[512];
    int rc = sg_config_parse(opts, n, cfg, argc, argv, err, sizeof(err));
    if (rc == SG_CONFIG_HELP) {
        char *h = sg_config_help(opts, n, usage);
        fputs(h, stdout);
        free(h);
        *exit_code = 0;
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "sandgate-bench %s: %s\n", argv[0], err);
        *exit_code = 2;
        return 1;
    }
    return 0;
}

json_t *bench_doc_new(const char *scenario, json_t *params)
{
    char ts[32];
    return json_pack("{s:s,s:s,s:s,s:s,s:o}", "tool", "sandgate-bench", "version", SG_VERSION,
                     "scenario", scenario, "started_at", bs_utc_now(ts, sizeof(ts)), "params",
                     params);
}

char *bench_subst_run(const char *s)
{
    static char id[48]; /* one id per process, so a run's URLs agree */
    if (!id[0])
        snprintf(id, sizeof(id), "%d-%llu", (int)getpid(),
                 (unsigned long long)(sg_now_ns() / 1000u));
    size_t cap = strlen(s) + 1, len = 0;
    for (const char *p = s; (p = strstr(p, "{run}")); p += 5)
        cap += strlen(id);
    char *out = sg_xmalloc(cap);
    for (const char *p = s; *p;) {
        if (strncmp(p, "{run}", 5) == 0) {
            memcpy(out + len, id, strlen(id));
            len += strlen(id);
            p += 5;
        } else {
            out[len++] = *p++;
        }
    }
    out[len] = 0;
    return out;
}

/* The number after "key" (quoted, possibly with escaped quotes) and a colon. The bench's own
 * bodies are flat and ASCII, so a substring search is exact enough. */
uint64_t bench_event_u64(const char *d, size_t n, const char *key, int *found)
{
    size_t kl = strlen(key);
    const char *end = d + n;
    *found = 0;
    for (const char *p = d; p < end && (p = memmem(p, (size_t)(end - p), key, kl)); p += kl) {
        if (p == d || p[-1] != '"') continue;
        const char *q = p + kl;
        while (q < end && (*q == '\\' || *q == '"'))
            q++;
        if (q >= end || *q != ':') continue;
        q++;
        if (q >= end || *q < '0' || *q > '9') continue;
        uint64_t v = 0;
        while (q < end && *q >= '0' && *q <= '9')
            v = v * 10 + (uint64_t)(*q++ - '0');
        *found = 1;
        return v;
    }
    return 0;
}
