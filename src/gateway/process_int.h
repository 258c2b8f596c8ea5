/* process_int.h: what process.c (processes, logs, subscribers, the upstream stream) and
 * process_api.c (the native routes, output, JSON shapes, signals) share. Private to them. */
#ifndef SANDGATE_GATEWAY_PROCESS_INT_H
#define SANDGATE_GATEWAY_PROCESS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "process.h"
#include "store.h"
#include "sandgate/http_client.h"
#include "sandgate/plog.h"
#include "sandgate/seglog.h"
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
typedef struct disk_rd disk_rd_t;

/* One segment file of a process's log, as the gateway knows it (process_disk.c). */
typedef struct seg_ix {
    uint64_t seq;
    uint64_t first_id, last_id; /* 0: not known yet (the segment being written) */
    uint64_t bytes;
    uint64_t first_out; /* output offset of its first record, when has_out */
    int has_out;
} seg_ix_t;

struct sg_procs {
    uv_loop_t *loop;
    sg_stream_config_t cfg;
    sg_http_client_t *client;
    sg_tlist_t hb, ping, stall, soft;
    unsigned open;
    int closing;
    int shutting_down;      /* records are not written: a restart re-attaches what was running */
    struct sg_store *store; /* durable process records, or NULL */
    proc_t *pending;        /* started, upstream has not named it yet */
    /* Durable logs (process_disk.c): <data>/logs/<sandbox>/<process>/, with a store only. */
    char *logs_root;
    proc_t *disk_procs;   /* every process that has a log directory */
    uv_timer_t retention; /* total-bytes and age retention, every second */
    unsigned disk_ops;    /* writers closing, reads, removals in flight */
    unsigned loading;     /* restored logs being read back */
    int close_waiting;    /* close is waiting for disk_ops */
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
    /* Durable log (process_disk.c). */
    proc_t *dprev, *dnext;  /* m->disk_procs while logdir is set */
    char *logdir;           /* absolute; NULL: in memory only */
    char *logrel;           /* the same relative to the data directory (segment rows) */
    struct sg_seglog *disk; /* the writer, while the process runs */
    seg_ix_t *segs;         /* oldest first */
    size_t nsegs, segs_cap;
    int origin_hold, disk_hold; /* upstream paused for the origin client / the writer */
    int disk_closing;
    int remove_log; /* unlinked: the directory goes once the writer closed */
};

struct sub {
    sub_t *prev, *next;
    proc_t *p;
    sg_http_req_t *req;
    uint64_t next_id;
    uint64_t sent_cum; /* log cum of the last event given to it */
    uint64_t base_cum; /* log cum when it joined: history it asked for is not lag */
    uint8_t execd, raw, blocked, over_soft;
    disk_rd_t *rd;                    /* a catch-up read from the log files in flight */
    uint64_t rd_seq, rd_off, rd_next; /* where the read after next_id == rd_next resumes */
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
/* Gap from s->next_id to `to`: an explicit gap event, then the cursor moves there. */
int sg__sub_gap(sub_t *s, uint64_t to);
/* A run of frames read from the log files (events of them), as one write: 0, or -1 when s was
 * ended. */
int sg__sub_write_buf(sub_t *s, sg_buf_t *b, uint64_t events);
/* Upstream reading paused or resumed by origin_hold / disk_hold. */
void sg__proc_flow(proc_t *p);
/* The process record to the store (when it is linked and the gateway is not stopping). */
void sg__proc_store(proc_t *p);
int64_t sg__proc_append(proc_t *p, const char *type, const char *json, size_t len,
                        sg_plog_kind_t kind, int stream, uint32_t out_len);
void sg__proc_lost(proc_t *p, const char *why);
/* Re-attach a restored running process to its execd from the log's output end. */
void sg__proc_reattach(proc_t *p);

/* process_disk.c */
void sg__disk_start(proc_t *p); /* named: create its log directory and writer */
void sg__disk_append(proc_t *p, uint64_t id, const char *type, const char *json, size_t len,
                     sg_plog_kind_t kind, int stream, uint32_t out_len);
void sg__disk_finished(proc_t *p); /* closes the writer, then writes the record */
void sg__disk_unlinked(proc_t *p); /* removes the directory (after the writer closed) */
void sg__disk_free(proc_t *p);
/* A subscriber behind the memory window: 1 a read from the files is under way (pumping goes
 * on from its end), 0 none possible (the caller sends a gap), -1 s was ended. */
int sg__disk_catch_up(sub_t *s);
void sg__disk_sub_ended(sub_t *s);
/* Restart: read the stored log back (the newest log_bytes of it into memory), then for a
 * running process open its writer and re-attach. */
void sg__disk_restore(proc_t *p, const struct sg_store_segment *segs, size_t nsegs);
void sg__disk_init(sg_procs_t *m, const char *data_dir);
void sg__disk_close(sg_procs_t *m); /* stops the retention timer (counts in m->open) */
void sg__procs_close_step(sg_procs_t *m);
/* The output bytes [from, end) still held, in one buffer (bounded by the log's size). */
void sg__store_logged(void *ud, int err, const char *msg);
sg_buf_t *sg__proc_collect_output(proc_t *p, uint64_t from);
size_t sg__event_output(int kind, const char *json, size_t jl, uint32_t out_len,
                        unsigned char *out);
/* /output answers: 200 with the bytes (and the next / first offsets), or 410 below first. */
void sg__output_respond(proc_t *p, sg_http_req_t *req, int execd_logs, uint64_t first,
                        uint64_t next, sg_buf_t *b);
void sg__output_evicted(sg_http_req_t *req, uint64_t first);
/* /output below the memory window from the log files: 1 when it took req (answered later). */
int sg__disk_output(proc_t *p, sg_http_req_t *req, uint64_t off, int execd_logs);

#endif
