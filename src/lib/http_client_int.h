/* http_client_int.h: private to the HTTP client (http_client*.c) and its fuzz target.
 *
 * sg__hresp_t is the response reader: llhttp in HTTP_RESPONSE mode plus header accumulation
 * and pause/resume. The client feeds it socket bytes; the fuzz target feeds it arbitrary
 * bytes through the very same functions, with no socket. */
#ifndef SANDGATE_HTTP_CLIENT_INT_H
#define SANDGATE_HTTP_CLIENT_INT_H

#include <llhttp.h>
#include <stddef.h>

#include "sandgate/http.h"

typedef struct sg__hresp sg__hresp_t;

/* Hooks return 0 to go on, 1 to pause the parser after this event (execute() then returns
 * SG__HR_PAUSED), or -1 when the owner went away (execute() returns SG__HR_ABORT). */
typedef int (*sg__hresp_head_cb)(sg__hresp_t *h);
typedef int (*sg__hresp_body_cb)(sg__hresp_t *h, const char *p, size_t n);

struct sg__hresp {
    llhttp_t parser;
    sg_hdrs_t hdrs;          /* the final (non-1xx) response's headers */
    char *name, *value;      /* header being accumulated (spans may split across reads) */
    size_t name_len, value_len, name_cap, value_cap;
    size_t head_bytes;       /* bytes of header names + values so far */
    size_t max_header_bytes;
    int status;
    unsigned head_request : 1; /* the request was HEAD: the response has no body */
    unsigned headers_done : 1;
    unsigned msg_done : 1;
    unsigned interim : 1;      /* current message is a 1xx being skipped */
    unsigned too_big : 1;
    unsigned failed : 1;       /* a limit or rule of ours stopped the parser (err is set) */
    uint64_t body_bytes;
    void *owner;
    sg__hresp_head_cb on_head;
    sg__hresp_body_cb on_body;
    char err[160];
};

enum {
    SG__HR_OK = 0,     /* all bytes consumed, message not complete */
    SG__HR_PAUSED = 1, /* a hook paused; *used bytes consumed */
    SG__HR_DONE = 2,   /* message complete; *used bytes consumed (the rest is stray) */
    SG__HR_ABORT = 3,  /* a hook returned -1 */
};

void sg__hresp_init(sg__hresp_t *h, size_t max_header_bytes, void *owner,
                    sg__hresp_head_cb on_head, sg__hresp_body_cb on_body);
/* Ready for the next response on the same connection. */
void sg__hresp_reset(sg__hresp_t *h, int head_request);
void sg__hresp_free(sg__hresp_t *h);
/* Returns SG__HR_* or a negative error (SG_EPROTO, SG_ETOOBIG) with h->err set. */
int sg__hresp_execute(sg__hresp_t *h, const char *p, size_t n, size_t *used);
/* At EOF: SG__HR_DONE when a close-delimited body ended, else a negative error. */
int sg__hresp_finish(sg__hresp_t *h);

#endif
