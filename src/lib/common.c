/* common.c: error names, checked allocation, clocks. */
#include "sandgate/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

const char *sg_strerror(int err)
{
    switch (err) {
    case 0: return "ok";
    case SG_EPROTO: return "protocol error";
    case SG_ETOOBIG: return "limit exceeded";
    case SG_ETIMEDOUT: return "timed out";
    case SG_ETLS: return "TLS error";
    case SG_ECERT: return "certificate verification failed";
    case SG_ECLOSED: return "closed";
    case SG_EINVAL: return "invalid argument";
    case SG_ENOMEM: return "out of memory";
    case SG_ENOTFOUND: return "not found";
    default: return uv_strerror(err);
    }
}

static void oom(size_t n)
{
    fprintf(stderr, "sandgate: out of memory allocating %zu bytes\n", n);
    abort();
}

void *sg_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *sg_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *sg_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *sg_xstrdup(const char *s)
{
    return sg_xstrndup(s, strlen(s));
}

char *sg_xstrndup(const char *s, size_t n)
{
    char *p = sg_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

uint64_t sg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sg_now_ms(void)
{
    return sg_now_ns() / 1000000u;
}
