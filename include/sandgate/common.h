/* common.h: what every sandgate module shares.
 *
 * Errors: functions return 0 or a negative code. Codes in the UV_E* range are libuv's (and
 * errno's, negated); SG_E* codes are ours and sit below -4096 so they never collide.
 * sg_strerror() names either kind. */
#ifndef SANDGATE_COMMON_H
#define SANDGATE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define SG_EPROTO    (-5001) /* peer broke the protocol (bad HTTP, bad TLS record, ...) */
#define SG_ETOOBIG   (-5002) /* a configured bound was hit */
#define SG_ETIMEDOUT (-5003) /* a configured timeout fired */
#define SG_ETLS      (-5004) /* TLS handshake or record failure (see the log for mbedTLS's text) */
#define SG_ECERT     (-5005) /* peer certificate did not verify (CA or hostname) */
#define SG_ECLOSED   (-5006) /* the object was closed while the operation was pending */
#define SG_EINVAL    (-5007) /* bad argument or bad configuration */
#define SG_ENOMEM    (-5008)
#define SG_ENOTFOUND (-5009)

const char *sg_strerror(int err);

#define SG_CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr) - offsetof(type, field)))
#define SG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SG_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Allocation that cannot fail quietly: aborts with a message on OOM. The gateway bounds every
 * queue, so running out of memory is a bug or a host problem, not a request error. */
void *sg_xmalloc(size_t n);
void *sg_xcalloc(size_t n, size_t size);
void *sg_xrealloc(void *p, size_t n);
char *sg_xstrdup(const char *s);
char *sg_xstrndup(const char *s, size_t n);

/* Monotonic clock in nanoseconds / milliseconds (not the loop's cached time). */
uint64_t sg_now_ns(void);
uint64_t sg_now_ms(void);

/* Intrusive doubly linked lists, head = newest: over the links named prev / next, or (_NAMED)
 * over the ones given (an object on two lists). */
#define SG_DLIST_ADD_NAMED(head, o, prev, next)                                                    \
    do {                                                                                           \
        (o)->prev = NULL;                                                                          \
        (o)->next = (head);                                                                        \
        if (head) (head)->prev = (o);                                                              \
        (head) = (o);                                                                              \
    } while (0)
#define SG_DLIST_DEL_NAMED(head, o, prev, next)                                                    \
    do {                                                                                           \
        if ((o)->prev)                                                                             \
            (o)->prev->next = (o)->next;                                                           \
        else                                                                                       \
            (head) = (o)->next;                                                                    \
        if ((o)->next) (o)->next->prev = (o)->prev;                                                \
        (o)->prev = (o)->next = NULL;                                                              \
    } while (0)
#define SG_DLIST_ADD(head, o) SG_DLIST_ADD_NAMED(head, o, prev, next)
#define SG_DLIST_DEL(head, o) SG_DLIST_DEL_NAMED(head, o, prev, next)

/* Decimal / lowercase hex digits of v into out (room for 20 / 16 bytes, no NUL); returns the
 * count. For per-event framing, where snprintf's cost shows in profiles. */
static inline size_t sg_u64_dec(char *out, uint64_t v)
{
    char t[20];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = t[n - 1 - i];
    return n;
}

static inline size_t sg_u64_hex(char *out, uint64_t v)
{
    char t[16];
    size_t n = 0;
    do {
        t[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = t[n - 1 - i];
    return n;
}

#endif
