/* plog.h: one process's event log: append-only, bounded in memory, read through cursors.
 *
 * Every event is stored once, as its standard SSE frame, in 64 KiB refcounted blocks shared by
 * consecutive events (the Redis replication-buffer model: one allocation per block, not per
 * event; a block is freed when its last event is evicted and no connection still holds a
 * slice of it):
 *
 *     id: 17\nevent: stdout\ndata: {"type":"stdout","text":"hi","timestamp":...}\n\n
 *
 * The execd framing of the same event (`{json}\n\n`) is that frame's tail from json_off, so
 * both kinds of subscribers are served from the one copy by reference (slices of the block),
 * consecutive SSE frames are contiguous (a reader catching up sends a run as one slice), and
 * a thousand subscribers of one event cost no allocation at all.
 *
 * Ids start at 1 and increase by one per event. The log keeps the newest events whose total
 * cost (chunks plus per-entry bookkeeping) fits max_bytes; older ones are dropped from the
 * front (first_id advances) and a reader whose cursor fell behind first_id is told so by the
 * caller (an explicit gap), never skipped silently. A chunk dropped from the log stays alive
 * while a connection still holds a reference to it.
 *
 * Output offsets: an event may carry output bytes (out_len): the exact bytes of a
 * `sandgate.raw` event, or a line event's text plus "\n" when the upstream sends no raw
 * events. out_off numbers them across stdout and stderr together, in arrival order, so
 * sg_plog_find_out() maps a byte offset to the event that holds it.
 *
 * cum is the running total of frame bytes: a reader's lag in bytes is l->cum minus the cum of
 * the last event it was given. */
#ifndef SANDGATE_PLOG_H
#define SANDGATE_PLOG_H

#include <stddef.h>
#include <stdint.h>

#include "sandgate/buf.h"

typedef enum sg_plog_kind {
    SG_PLOG_EVENT = 0, /* init, stdout, stderr, execution_complete, error, ... */
    SG_PLOG_RAW,       /* sandgate.raw: only for readers that asked for raw bytes */
} sg_plog_kind_t;

typedef struct sg_plog_ent {
    uint64_t id;
    uint64_t cum;     /* l->cum after this event */
    uint64_t out_off; /* output offset of this event's first byte */
    sg_buf_t *blk;    /* the block holding the SSE frame at [off, off + len) */
    uint32_t off;
    uint32_t len;
    uint32_t json_off; /* the JSON (and the execd frame) starts at off + json_off */
    uint32_t out_len;  /* output bytes this event carries */
    uint8_t kind;      /* sg_plog_kind_t */
    uint8_t stream;    /* 0 none, 1 stdout, 2 stderr */
} sg_plog_ent_t;

typedef struct sg_plog {
    sg_plog_ent_t *v; /* ring */
    size_t cap, head, count;
    uint64_t first_id;  /* id of the oldest event held (== next_id when empty) */
    uint64_t next_id;   /* id the next event gets */
    uint64_t bytes;     /* cost of what is held */
    uint64_t max_bytes; /* bound on bytes (the newest event is always kept) */
    uint64_t cum;       /* frame bytes ever appended */
    uint64_t out_end;   /* output bytes ever appended */
    uint64_t evicted;   /* events dropped from memory (the bound, skip_to) */
    uint64_t keep_from; /* 0, or: events with this id and newer are not dropped by the bound */
    sg_buf_t *tail;     /* the block appends go to (the log's own reference) */
} sg_plog_t;

void sg_plog_init(sg_plog_t *l, uint64_t max_bytes);
void sg_plog_free(sg_plog_t *l);

/* Appends one event: type is the SSE event name (no CR/LF), json one line of JSON (no CR/LF:
 * SG_EINVAL). Returns the new id (> 0) or a negative error; *bytes_delta gets the change in
 * l->bytes (eviction may make it negative), for the caller's memory accounting. */
int64_t sg_plog_append(sg_plog_t *l, const char *type, const char *json, size_t json_len,
                       sg_plog_kind_t kind, int stream, uint32_t out_len, int64_t *bytes_delta);

/* The event with this id, or NULL when it was evicted or does not exist yet. */
const sg_plog_ent_t *sg_plog_get(const sg_plog_t *l, uint64_t id);
/* The oldest held event carrying output at or after offset off (its out_off may be below off
 * when off falls inside it), or NULL when none is held. */
const sg_plog_ent_t *sg_plog_find_out(const sg_plog_t *l, uint64_t off);
/* Output offset of the first byte still held (== out_end when nothing is). */
uint64_t sg_plog_first_out(const sg_plog_t *l);
/* Drops every event held and continues at id (>= next_id) with output offset out_off: a log
 * rebuilt from disk starts at its first stored event, and a hole in the stored ids (events
 * retention removed) is skipped the same way (readers of the missing ids get a gap). */
void sg_plog_skip_to(sg_plog_t *l, uint64_t id, uint64_t out_off, int64_t *bytes_delta);
/* Events from id on stay held whatever the bound (0: none): the durable log's writer pins
 * what it has not written yet, so every event dropped from memory is in the files. Moving the
 * pin up drops what the bound asks for; *bytes_delta as for append. */
void sg_plog_keep_from(sg_plog_t *l, uint64_t id, int64_t *bytes_delta);
#define SG_PLOG_HEAD_MAX 96 /* bytes sg_plog_head may write */
/* Writes "id: <id>\nevent: <type>\ndata: " (the SSE frame's head as the log stores it) to head
 * (SG_PLOG_HEAD_MAX bytes). Returns its length, or 0 when type is too long. */
size_t sg_plog_head(char *head, uint64_t id, const char *type);
/* Cost the log charges for an event of this frame size (frame + bookkeeping). A block still
 * holding one live event is kept whole, so memory can exceed the bound by up to two blocks. */
uint64_t sg_plog_cost(size_t frame_len);

#endif
