/* http_server_int.h: structures shared by http_server.c (lifecycle, connections, parsing) and
 * http_server_resp.c (request accessors, bodies, responses). Private to libsandgate. */
#ifndef SANDGATE_HTTP_SERVER_INT_H
#define SANDGATE_HTTP_SERVER_INT_H

#include <llhttp.h>
#include <stdint.h>

#include "sandgate/buf.h"
#include "sandgate/common.h"
#include "sandgate/http.h"
#include "sandgate/http_server.h"
#include "sandgate/sock.h"
#include "sandgate/timer.h"

#define SG__HTTP_MAX_LISTENERS 8
#define SG__HTTP_IOV 64
#define SG__HTTP_DISCARD_MAX (64 * 1024)
#define SG__HTTP_LINGER_MS 2000

typedef struct sg__http_conn sg__http_conn_t;

/* What the connection's read timer currently measures. */
typedef enum { SG__RT_NONE, SG__RT_IDLE, SG__RT_HEADER, SG__RT_BODY, SG__RT_LINGER } sg__rt_phase_t;

/* Request body consumer. */
typedef enum { SG__BODY_NONE, SG__BODY_STREAM, SG__BODY_ALL, SG__BODY_DISCARD } sg__body_mode_t;

/* Response progress. */
typedef enum { SG__RESP_NONE, SG__RESP_STARTED, SG__RESP_ENDED } sg__resp_state_t;

typedef struct sg__http_str {
    char *p;
    size_t len;
    size_t cap;
} sg__http_str_t;

struct sg_http_req {
    unsigned refs;
    sg__http_conn_t *conn; /* NULL once detached (finished or aborted) */
    sg_http_server_t *srv;
    char method[24];
    char *id;        /* idbuf, or a heap copy of a long client-given id */
    char idbuf[33];  /* a generated id: 32 hex digits */
    char *url;
    char *path;
    const char *query; /* into url */
    sg_hdrs_t hdrs;
    int64_t content_length;
    uint64_t body_read; /* body bytes received */
    uint64_t start_ns;
    uint64_t bytes_in;
    uint64_t bytes_out;
    int http_minor;

    unsigned dispatched : 1;   /* handler called */
    unsigned msg_complete : 1; /* parser finished the message */
    unsigned has_body : 1;
    unsigned chunked : 1;
    unsigned head : 1;            /* HEAD request */
    unsigned keep_alive : 1;      /* what the client allows */
    unsigned expect_continue : 1; /* needs "100 Continue" before we read the body */
    unsigned continue_sent : 1;
    unsigned body_paused : 1;
    unsigned body_end_sent : 1;
    unsigned handler_done : 1; /* handler's reference dropped */
    unsigned aborted : 1;
    unsigned abort_notified : 1;
    unsigned want_drain : 1;
    unsigned resp_chunked : 1;
    unsigned resp_no_body : 1; /* HEAD / 1xx / 204 / 304 */
    unsigned resp_fixed : 1;   /* Content-Length framing */
    unsigned resp_close : 1;   /* Connection: close sent */
    unsigned logged : 1;
    unsigned server_answered : 1; /* error answered by the server itself; never dispatched */
    unsigned all_overflow : 1;

    sg__body_mode_t body_mode;
    sg__resp_state_t resp_state;
    int status;
    uint64_t resp_remaining; /* fixed-length bytes still owed */

    sg_http_body_cb body_cb;
    sg_http_body_all_cb all_cb;
    void *body_ud;
    sg__http_str_t all; /* read_all accumulator */
    size_t all_max;
    sg_http_req_cb abort_cb;
    sg_http_req_cb drain_cb;
    void *data;
    char peer[64];
};

struct sg__http_conn {
    sg_sock_t sock;
    sg_http_server_t *srv;
    sg__http_conn_t *prev, *next;           /* srv->conns */
    sg__http_conn_t *dprev, *dnext;         /* srv deferred list */
    llhttp_t parser;
    sg_http_req_t *req; /* the request being parsed / answered */

    /* Unparsed input kept while the parser is paused (bounded: reading stops while paused). */
    char *in;
    size_t in_len, in_off, in_cap;

    /* Parse accumulators for the current head. */
    sg__http_str_t url;
    sg__http_str_t field;
    sg__http_str_t value;
    sg_hdrs_t hdrs; /* handed to the request at headers-complete */
    size_t head_bytes;
    int err_status; /* limit hit inside a parser callback: answer this */
    const char *err_code;
    const char *err_msg;
    uint64_t req_start_ns;
    uint64_t pending_in; /* bytes of the current request counted before req exists */

    sg_bufq_t out;
    size_t inflight; /* bytes of the uv_write in flight */

    sg_tentry_t rt; /* idle / header / body / linger */
    sg_tentry_t wt; /* send stall */
    sg__rt_phase_t rphase;

    unsigned deferred : 1;
    unsigned closing : 1;
    unsigned reading : 1;
    unsigned peer_eof : 1;
    unsigned close_after : 1; /* close once output is flushed */
    unsigned in_process : 1;
    unsigned again : 1;
    unsigned reject : 1; /* over the connection cap: 503 and close */
    unsigned got_bytes : 1; /* a byte of the current request arrived */
    unsigned exec_after_pause : 1; /* a body pause left llhttp short of message complete */
    unsigned lingering : 1; /* write side shut, draining input before the close */
    char peer[64];
};

struct sg_http_server {
    uv_loop_t *loop;
    /* Scratch iovecs for one write call: uv_write and the TLS layer copy the array, so one
     * per server serves every connection (a kilobyte less per idle subscriber). */
    uv_buf_t iov[SG__HTTP_IOV];
    sg_http_server_config_t cfg;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } ls[SG__HTTP_MAX_LISTENERS];
    int nls;
    sg__http_conn_t *conns;
    size_t nconns;
    sg__http_conn_t *dhead, *dtail;
    uv_idle_t idle;
    uv_timer_t grace;
    sg_tlist_t t_idle, t_header, t_body, t_send, t_linger;
    int handles_open; /* close countdown for sg_http_server_close */
    unsigned shutting_down : 1;
    unsigned closing : 1;
    unsigned grace_armed : 1;
    unsigned shutdown_notified : 1;
    sg_http_server_cb shutdown_cb;
    sg_http_server_cb close_cb;
    uint64_t req_seq;
    uint64_t id_salt; /* generated ids: 32 hex chars, salt + sequence */
    time_t date_sec;
    char date[40];
};

/* http_server.c */
void sg__http_conn_kick(sg__http_conn_t *c);    /* schedule a deferred processing pass */
void sg__http_conn_flush(sg__http_conn_t *c);   /* start a write of pending output */
void sg__http_conn_close(sg__http_conn_t *c);   /* cut the connection */
void sg__http_on_read(sg_sock_t *s, ssize_t nread, const char *data);
const char *sg__http_date(sg_http_server_t *srv);

/* http_server_resp.c */
void sg__http_req_free(sg_http_req_t *req);
/* Server-generated error response for the current head (req may be NULL). Closes after. */
void sg__http_conn_error(sg__http_conn_t *c, int status, const char *code, const char *msg);
void sg__http_req_log(sg_http_req_t *req);
void sg__http_str_append(sg__http_str_t *s, const char *p, size_t n);
void sg__http_str_free(sg__http_str_t *s);
/* Sets req->id to the generated id for the server's current sequence number, or to rid. */
void sg__http_req_set_id(sg_http_req_t *req, const char *rid);
/* The body pipeline: deliver data to the consumer; returns nonzero to pause the parser. */
int sg__http_req_body_data(sg_http_req_t *req, const char *p, size_t n);
void sg__http_req_body_end(sg_http_req_t *req);
void sg__http_req_notify_abort(sg_http_req_t *req);

#endif
