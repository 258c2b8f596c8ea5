/* breq.h: one HTTP request on its own connection, for the request/response scenarios
 * (exec, relay, lifecycle). Either the body is collected (up to BREQ_MAX_BODY, the rest is
 * counted but dropped) or, with sse set, decoded as an execd event stream: events are counted
 * by type, stdout/stderr lines and bytes tallied, and the request ends at the first final
 * event (execution_complete or error) without waiting for the server's end of stream (Go
 * execd keeps the stream open ~1 s after the last event). done() runs after the connection is
 * closed, so the owner may reuse or free the struct there. */
#ifndef SANDGATE_BENCH_BREQ_H
#define SANDGATE_BENCH_BREQ_H
#include <stdint.h>

#include "bconn.h"
#include "sandgate/sse.h"

#define BREQ_MAX_BODY (256u * 1024u)
/* SSE bounds: execd cuts output without newlines into 64 KiB pieces, and a piece JSON-escaped
 * (worst case 6 bytes per byte) plus its event envelope must fit in one line. */
#define BREQ_SSE_MAX_LINE  (1024u * 1024u)
#define BREQ_SSE_MAX_EVENT (2u * 1024u * 1024u)
#define BREQ_NO_EXIT       INT64_MIN

typedef struct breq breq_t;
typedef void (*breq_done_cb)(breq_t *q);

struct breq {
    bc_conn_t c;
    sg_sse_decoder_t dec;
    int sse;
    char *req;
    size_t req_len;
    breq_done_cb done;
    void *ud;
    /* results */
    int status;   /* HTTP status, 0 if none arrived */
    int err;      /* 0, or the first failure (connect, EOF before the end, protocol, timeout) */
    int complete; /* the response (or, with sse, a final event) arrived */
    uint64_t t_start, t_headers, t_first_event, t_final, t_end;
    char *body;
    size_t body_len;
    uint64_t events, out_lines, err_lines, out_bytes, pings, wire_bytes;
    int final;         /* 1 execution_complete, 2 error event */
    int64_t exit_code; /* 0 on execution_complete, evalue of an error event, else BREQ_NO_EXIT */
};

/* Starts method url (extra: "Name: value\r\n" lines or NULL; body may be NULL). On a start
 * failure done() still runs (from the close). */
int breq_start(uv_loop_t *loop, breq_t *q, const bc_url_t *url, const char *method,
               const char *extra, const char *body, size_t body_len, int sse, breq_done_cb done,
               void *ud);
/* Abandons the request (err = SG_ETIMEDOUT unless already set); done() follows. */
void breq_cancel(breq_t *q, int err);
void breq_free(breq_t *q); /* frees what a finished request still holds (body, request text) */
#endif
