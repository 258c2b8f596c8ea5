/* process_int.h: what process.c (processes, logs, subscribers, the upstream stream) and
 * process_api.c (the native routes, output, JSON shapes, signals) share. Private to them. */
#ifndef SANDGATE_GATEWAY_PROCESS_INT_H
#define SANDGATE_GATEWAY_PROCESS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "process.h"
#include "sandgate/http_client.h"
#include "sandgate/plog.h"
#include "sandgate/sse.h"
#include "sandgate/timer.h"

#define MAX_COMMAND_BODY (1u << 20)
#define MAX_ERROR_BODY   (64u * 1024u)
#define MAX_SIGNAL_BODY  4096u
/* One subscriber write: at most this many slices / bytes of events (then the next run). */
#define PUMP_SLICES 64
#define PUMP_BYTES  (64u * 1024u)
/* One upstream event: execd bounds its lines (--max-line-bytes) and raw reads; this only stops
 * a broken or hostile execd from growing the decoder without end. */
#define MAX_UPSTREAM_EVENT (8u << 20)

typedef struct proc proc_t;
typedef struct sub sub_t;

struct sg_procs {
    uv_loop_t *loop;
    sg_stream_config_t cfg;
    sg_http_client_t *client;
    sg_tlist_t hb, ping, stall, soft;
    unsigned open;
    int closing;
    int shutting_down; /* records are not written: a restart re-attaches what was running */
    struct sg_store *store; /* durable process records, or NULL */
    proc_t *pending; /* started, upstream has not named it yet */
    void (*close_cb)(void *ud);
    void *close_ud;
};

struct proc {
    proc_t *prev, *next; /* s->procs when linked, else m->pending */
    sg_procs_t *m;
    sg_sandbox_t *sbx;
    int refs;
    int linked;
    char id[80];
    char *command;
    int background;
    sg_proc_state_t state;
    int has_exit, exit_code;
    char *error;
    int64_t created_us, finished_us;
    int finished; /* the log is complete */
    int signalled;
    int raw_seen; /* upstream sends sandgate.raw: output offsets come from those */
    sg_plog_t log;
    sub_t *subs;
    unsigned nsubs;
    sg_http_creq_t *up;
    int up_status;
    sg_sse_decoder_t dec;
    int dec_init;
    sg_http_req_t *origin; /* the POST client, until init turns it into a subscriber */
    sub_t *origin_sub;     /* ... then this subscriber, the one reader the producer waits for */
    int up_paused;         /* upstream reading paused for origin_sub */
    int origin_raw;
    char *errbody;
    size_t errlen;
    char errctype[128];
};

struct sub {
    sub_t *prev, *next;
    proc_t *p;
    sg_http_req_t *req;
    uint64_t next_id;
    uint64_t sent_cum; /* log cum of the last event given to it */
    uint64_t base_cum; /* log cum when it joined: history it asked for is not lag */
    uint8_t execd, raw, blocked, over_soft;
    sg_tentry_t hb;
    sg_tentry_t stall;
    sg_tentry_t soft;
};

int64_t sg__wall_ms(void);
/* The raw (still escaped) string value of "key" in one compact JSON object. */
int sg__scan_str(const char *j, size_t n, const char *key, const char **v, size_t *vl);
proc_t *sg__proc_ref(proc_t *p);
void sg__proc_unref(proc_t *p);
proc_t *sg__proc_find(sg_sandbox_t *s, const char *id);
/* A subscriber on a response whose head the caller already started, reading from next_id. */
sub_t *sg__sub_new(proc_t *p, sg_http_req_t *req, int execd, int raw, uint64_t next_id);
void sg__sub_pump(sub_t *s);
/* A small frame of our own (gap, heartbeat): 0, or -1 when s was ended. */
int sg__sub_write_small(sub_t *s, const char *p, size_t n);
int sg__start_event_stream(sg_http_req_t *req, int execd);
/* The output bytes [from, end) still held, in one buffer (bounded by the log's size). */
sg_buf_t *sg__proc_collect_output(proc_t *p, uint64_t from);

#endif
