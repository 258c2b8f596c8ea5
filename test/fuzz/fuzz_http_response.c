/* fuzz_http_response.c: arbitrary bytes through the client's response reader.
 *
 * The HTTP client parses every upstream response with sg__hresp_* (http_client_resp.c); this
 * target drives the very same functions without a socket. The first input byte picks the
 * options (HEAD request, header limit, when the consumer pauses), the next ones the sizes of
 * the reads the bytes arrive in; the rest is the response stream. After a complete message the
 * reader is reset for the next one, as on a reused connection; at the end comes EOF
 * (sg__hresp_finish, which ends close-delimited bodies). Checks: the reader never reports
 * more bytes consumed than it was given, body bytes only flow after headers, and a paused
 * reader resumes where it stopped. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_client_int.h"
#include "sandgate/common.h"

typedef struct fz {
    unsigned pause_every; /* pause after every Nth event, 0 = never */
    unsigned events;
    int heads;
    uint64_t body;
} fz_t;

static int fz_head(sg__hresp_t *h)
{
    fz_t *f = h->owner;
    f->heads++;
    if (h->status < 200 || h->status > 999) abort(); /* 1xx are skipped, never reported */
    return f->pause_every && ++f->events % f->pause_every == 0;
}

static int fz_body(sg__hresp_t *h, const char *p, size_t n)
{
    fz_t *f = h->owner;
    if (!h->headers_done || n == 0) abort();
    volatile char sink = p[0] ^ p[n - 1]; /* touch both ends: ASan checks the span */
    (void)sink;
    f->body += n;
    return f->pause_every && ++f->events % f->pause_every == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    uint8_t opt = data[0];
    uint8_t split_a = data[1], split_b = data[2];
    data += 3;
    size -= 3;
    fz_t f = {0};
    f.pause_every = opt & 3;
    sg__hresp_t h;
    sg__hresp_init(&h, (opt & 4) ? 256 : 64 * 1024, &f, fz_head, fz_body);
    sg__hresp_reset(&h, (opt & 8) != 0);
    /* Copy so a read is exactly as large as the socket gave it (ASan sees overreads). */
    size_t off = 0, step = 0;
    int dead = 0;
    for (int guard = 0; off < size && !dead && guard < 100000; guard++) {
        size_t want = (step++ & 1) ? (size_t)split_a + 1 : (size_t)split_b + 1;
        size_t n = SG_MIN(want, size - off);
        char *chunk = malloc(n ? n : 1);
        memcpy(chunk, data + off, n);
        size_t pos = 0;
        for (int inner = 0; pos < n && inner < 100000; inner++) {
            size_t used = 0;
            int rc = sg__hresp_execute(&h, chunk + pos, n - pos, &used);
            if (used > n - pos) abort();
            pos += used;
            if (rc == SG__HR_OK) break;
            if (rc == SG__HR_PAUSED) continue; /* resume at once with what was left */
            if (rc == SG__HR_DONE) {
                sg__hresp_reset(&h, (opt & 16) != 0);
                continue;
            }
            dead = 1; /* error: the client closes the connection */
            if (rc < 0 && !h.err[0]) abort(); /* every error carries a message */
            break;
        }
        free(chunk);
        off += n;
    }
    if (!dead) {
        int rc = sg__hresp_finish(&h);
        if (rc < 0 && !h.err[0]) abort();
    }
    sg__hresp_free(&h);
    return 0;
}
