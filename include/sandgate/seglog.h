/* seglog.h: a process's durable output log: append-only segment files in one directory.
 *
 * Map
 *   sg_seglog_t        the writer of one process's log directory (loop thread API). Appends are
 *                      copied into a pending buffer and written in batches on libuv's thread
 *                      pool (the work item computes the batch's CRCs, then writes), one
 *                      request in flight per log; every other disk
 *                      step (mkdir -p, recovery, creating / sealing a segment) runs as one
 *                      uv_queue_work item. Nothing touches the disk on the loop thread.
 *   sg_seglog_read     reads a directory's segments in order (uv_fs_read, 256 KiB chunks) and
 *                      hands each record to a callback on the loop thread.
 *   sg_seglog_remove   deletes a log directory recursively on the thread pool.
 *
 * Files: <dir>/000001.seg, 000002.seg, ... (seq in decimal, at least six digits; numeric order
 * is write order). A segment is a run of records; nothing else (no file header):
 *
 *     record  = u8 magic 0xB1 (format version 1) | u32 payload_len | u32 crc32(payload) | payload
 *     payload = u64 id | u64 out_off | u32 out_len | u8 kind | u8 stream
 *               | u8 type_len | type bytes | u32 json_len | json bytes
 *
 * All integers little-endian; crc32 is the IEEE / zlib CRC-32 of the payload bytes;
 * payload_len is exactly 27 + type_len + json_len and at most SG_SEGLOG_MAX_RECORD. out_off is
 * the event's output offset (stdout and stderr bytes counted together, see plog.h), stored so
 * every segment is self-describing after older ones were deleted.
 *
 * Batching: a write is issued when none is in flight and the pending bytes reach flush_bytes,
 * or the flush timer (flush_ms after the first pending append) fired, or a sync / close waits.
 * A write never crosses a segment boundary: records go to the current segment until it holds
 * segment_bytes (a segment exceeds it only when one record alone is bigger), then the segment
 * is sealed (fdatasync + close, reported SG_SEGLOG_SEALED) and the next is created (reported
 * SG_SEGLOG_NEW; the directory is fsync'ed so the new name survives a host crash too).
 *
 * Backpressure: sg_seglog_append returns 1 once the pending bytes reach max_pending (the event
 * was kept); the caller should pause its producer until on_drain (pending fell below half of
 * max_pending). A caller that keeps appending anyway is cut off at twice max_pending: such
 * events are dropped (SG_ETOOBIG, counted in stats.dropped; the ids missing from the files show
 * the hole). Memory is therefore bounded by 2 x max_pending for pending bytes plus the one
 * batch being written.
 *
 * Retention: when the segment files total more than max_bytes, the oldest sealed segments are
 * unlinked (never the one being written, so the directory may hold up to max_bytes plus one
 * segment) and each is reported SG_SEGLOG_DELETED once gone (several dropped at once are
 * unlinked in parallel and may be reported in any order).
 *
 * Crash safety: a sealed segment was fdatasync'ed before the next one was created, so after a
 * kill -9 or a power loss only the last segment can end in a partial (torn) record; the reader
 * ignores such a tail (torn = 1; a corrupt record inside the last segment cannot be told from
 * a torn write and is treated the same: nothing after it is read, and recovery cuts it off),
 * while any fault in an earlier segment is an error. sg_seglog_open on an existing directory
 * truncates the torn tail
 * (recovery), drops a last segment left empty, and continues in a new segment with the output
 * offsets following the last record. What sg_seglog_sync acknowledged survives kill -9 and
 * host crashes; what was only appended survives neither until it is written (then kill -9).
 *
 * Errors: a disk error (ENOSPC, EIO, ...) puts the log in a failed state: on_error is called
 * once with a message naming the file, pending events are dropped, later appends return the
 * error, sync callbacks get it. close still works.
 *
 * Lifecycle: sg_seglog_open -> append / sync ... -> sg_seglog_close(cb): flushes, seals the
 * current segment, waits for every request, frees, then cb. All callbacks run on the loop
 * thread, never from inside the call that causes them. */
#ifndef SANDGATE_SEGLOG_H
#define SANDGATE_SEGLOG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SG_SEGLOG_MAX_RECORD (64u << 20) /* payload bytes: far above one upstream event */
#define SG_SEGLOG_MAX_TYPE   255u        /* bytes of an event type (u8 length prefix) */

typedef struct sg_seglog sg_seglog_t;

typedef enum sg_seglog_seg_event {
    SG_SEGLOG_NEW = 1, /* a segment file was created (bytes 0, last_id 0: nothing written yet) */
    SG_SEGLOG_SEALED,  /* complete and fdatasync'ed; no more records go to it */
    SG_SEGLOG_DELETED, /* unlinked by retention or by recovery (an empty last segment) */
} sg_seglog_seg_event_t;

/* What on_segment is told: the fields of an sg_store_segment_t. Ids and output offsets are 0
 * for segments found on disk at open whose records were never read (only the last one is). */
typedef struct sg_seglog_seg {
    sg_seglog_seg_event_t event;
    uint64_t seq;
    const char *path; /* <dir>/NNNNNN.seg */
    const char *name; /* NNNNNN.seg */
    uint64_t first_id, last_id;
    uint64_t first_out, out_end; /* output offsets [first_out, out_end) */
    uint64_t bytes;              /* the file's size */
} sg_seglog_seg_t;

typedef struct sg_seglog_config {
    uint64_t segment_bytes; /* a segment is sealed once it holds this much, default 8 MiB */
    uint64_t max_bytes;     /* retention: segment files per process, default 64 MiB */
    size_t flush_bytes;     /* pending bytes that start a write, default 64 KiB */
    unsigned flush_ms;      /* longest an append waits for its write, default 50 ms */
    size_t max_pending;     /* pending bytes past which append says 1, default 4 MiB */
    void (*on_segment)(void *ud, const sg_seglog_seg_t *s);
    void (*on_drain)(void *ud); /* after append returned 1: the caller may resume */
    /* after each write: every record up to last_id is in the files (readable; kill -9 proof) */
    void (*on_written)(void *ud, uint64_t last_id);
    void (*on_error)(void *ud, int err, const char *msg); /* once, when the log fails */
    void *ud;
} sg_seglog_config_t;

typedef struct sg_seglog_stats {
    uint64_t appends;          /* events accepted */
    uint64_t dropped;          /* events refused past twice max_pending */
    uint64_t writes;           /* batch writes completed */
    uint64_t bytes_written;    /* record bytes written */
    uint64_t syncs;            /* fdatasync requests for sg_seglog_sync */
    uint64_t segments_created; /* by this writer */
    uint64_t segments_deleted; /* by retention or recovery */
    uint64_t pending;          /* bytes appended and not yet handed to a write */
    uint64_t pending_max;      /* the most pending bytes seen */
    uint64_t disk_bytes;       /* bytes of the segment files held (for the total-bytes bound) */
    uint64_t next_out;         /* output offset the next appended event starts at */
} sg_seglog_stats_t;

/* One record, as the reader hands it over. Valid during the callback only. */
typedef struct sg_seglog_rec {
    uint64_t id;
    uint64_t out_off;
    uint32_t out_len;
    int kind;         /* sg_plog_kind_t */
    int stream;       /* 0 none, 1 stdout, 2 stderr */
    const char *type; /* NUL-terminated */
    const char *json; /* json_len bytes, not NUL-terminated */
    size_t json_len;
    uint64_t seq; /* where it is: segment and byte offset of its header */
    uint64_t off;
    uint64_t end; /* file offset just past it: where a read resuming after it starts */
} sg_seglog_rec_t;

/* Return 0 to go on; anything else stops the read, and done gets it as err. */
typedef int (*sg_seglog_event_cb)(void *ud, const sg_seglog_rec_t *r);
/* err 0: every segment read (records delivered). torn 1: the last segment ended in a partial or
 * corrupt record, ignored; msg then says where. err < 0: msg names the file and offset (or the
 * failing call); the records before the fault were delivered. */
typedef void (*sg_seglog_done_cb)(void *ud, int err, const char *msg, uint64_t records, int torn);

void sg_seglog_config_init(sg_seglog_config_t *c);

/* Starts a writer on dir: creates it (mkdir -p, 0700) or recovers what it holds, on the thread
 * pool; appends made meanwhile are kept and written after. Returns 0 with *out set, or
 * SG_EINVAL (bad configuration; nothing to close). A failed open is reported by on_error. */
int sg_seglog_open(uv_loop_t *loop, const char *dir, const sg_seglog_config_t *cfg,
                   sg_seglog_t **out);
/* Copies one event into the pending buffer. Returns 0, 1 (kept, but pause the producer until
 * on_drain), or a negative error: SG_EINVAL (type too long), SG_ETOOBIG (the record is bigger
 * than SG_SEGLOG_MAX_RECORD, or dropped past twice max_pending), SG_ECLOSED (close was called),
 * or the failed log's error. */
int sg_seglog_append(sg_seglog_t *g, uint64_t id, const char *type, const char *json,
                     size_t json_len, int kind, int stream, uint32_t out_len);
/* Writes everything appended so far, fdatasyncs it, then cb(ud, 0, NULL) (or the error). */
void sg_seglog_sync(sg_seglog_t *g, void (*cb)(void *ud, int err, const char *msg), void *ud);
/* Writes what is pending, seals the current segment, waits for every request, frees g, then
 * cb(ud) (cb may be NULL). Until cb runs, appends return SG_ECLOSED; after it, g is gone. */
void sg_seglog_close(sg_seglog_t *g, void (*cb)(void *ud), void *ud);
void sg_seglog_stats(const sg_seglog_t *g, sg_seglog_stats_t *out);

/* Reads dir's segments in order; see the callbacks above. Returns 0 (done will be called,
 * never from inside this call) or SG_EINVAL. A segment deleted by retention while the read
 * is under way is skipped (the ids show the hole). */
int sg_seglog_read(uv_loop_t *loop, const char *dir, sg_seglog_event_cb on_event,
                   sg_seglog_done_cb done, void *ud);

/* The same from a position: segments below seq are skipped and the one numbered seq is read
 * from byte off (a record's end from an earlier read; 0: its start). A segment seq that is gone
 * (retention) is skipped like any other: the ids the caller gets show the hole. */
int sg_seglog_read_from(uv_loop_t *loop, const char *dir, uint64_t seq, uint64_t off,
                        sg_seglog_event_cb on_event, sg_seglog_done_cb done, void *ud);

/* Changes the retention bound (total bytes of this log's segment files; at least one segment,
 * as at open); a smaller bound deletes the oldest sealed segments now. */
void sg_seglog_set_max_bytes(sg_seglog_t *g, uint64_t max_bytes);

/* Deletes dir and everything under it (a missing dir is fine), then cb(ud, err, msg). */
int sg_seglog_remove(uv_loop_t *loop, const char *dir,
                     void (*cb)(void *ud, int err, const char *msg), void *ud);

#endif
