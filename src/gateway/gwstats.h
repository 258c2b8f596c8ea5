/* gwstats.h: the gateway's process-wide counters and gauges, rendered by GET /metrics.
 *
 * One instance (sg_gw_stats), written by the modules that own the events (the process log
 * and its subscribers, the proxy) and read by the metrics renderer. Single-threaded: every
 * writer runs on the loop thread, so plain integers suffice. Counters only grow; gauges go up
 * and down with the objects they count. */
#ifndef SANDGATE_GATEWAY_GWSTATS_H
#define SANDGATE_GATEWAY_GWSTATS_H

#include <stdint.h>

typedef enum sg_proc_state {
    SG_PROC_RUNNING = 0,
    SG_PROC_EXITED,
    SG_PROC_FAILED,
    SG_PROC_KILLED,
    SG_PROC_LOST,
    SG_PROC_NSTATES
} sg_proc_state_t;

typedef enum sg_cut_reason {
    SG_CUT_HARD = 0, /* lag past the hard limit */
    SG_CUT_SOFT,     /* lag past the soft limit for longer than its duration */
    SG_CUT_TIMEOUT,  /* a write blocked longer than the send timeout */
    SG_CUT_NREASONS
} sg_cut_reason_t;

typedef struct sg_gw_stats {
    /* gauges */
    uint64_t processes[SG_PROC_NSTATES]; /* processes held, by state */
    uint64_t subscribers;                /* stream subscribers connected now */
    uint64_t log_bytes;                  /* bytes held by process logs in memory */
    uint64_t disk_bytes;                 /* bytes of the log segment files (at the last check) */
    /* counters */
    uint64_t processes_started;
    uint64_t subscribers_total;
    uint64_t events_in;   /* events appended to process logs */
    uint64_t bytes_in;    /* bytes of those events (their JSON) */
    uint64_t events_out;  /* event deliveries queued to subscribers */
    uint64_t bytes_out;   /* bytes queued to subscribers (framing included) */
    uint64_t gaps;        /* gap notices sent (a subscriber asked for evicted history) */
    uint64_t evicted_events;             /* events dropped from memory by the log bound */
    uint64_t cut[SG_CUT_NREASONS];       /* slow subscribers disconnected, by reason */
    uint64_t disk_reads;      /* catch-up reads from log files (readers behind memory) */
    uint64_t segments_deleted; /* log segment files deleted by per-process retention */
    uint64_t outputs_evicted; /* finished processes whose output retention removed */
    uint64_t disk_errors;     /* process logs whose writer failed */
} sg_gw_stats_t;

extern sg_gw_stats_t sg_gw_stats;

#endif
