/* seglog_int.h: the record codec and incremental decoder behind seglog.c, shared with its unit
 * test and fuzz target (not part of the public API). Format: seglog.h. */
#ifndef SANDGATE_SEGLOG_INT_H
#define SANDGATE_SEGLOG_INT_H

#include <stddef.h>
#include <stdint.h>

#include "sandgate/seglog.h"

#define SG__SEG_MAGIC 0xB1u
#define SG__SEG_HDR   9u  /* magic, payload_len, crc */
#define SG__SEG_FIXED 27u /* payload bytes besides type and json */
#define SG__SEG_CHUNK (256u * 1024u)

uint32_t sg__crc32(uint32_t crc, const void *p, size_t n);
/* Bytes one record takes on disk. */
static inline size_t sg__seg_record_size(size_t type_len, size_t json_len)
{
    return SG__SEG_HDR + SG__SEG_FIXED + type_len + json_len;
}
/* Writes one record (sg__seg_record_size bytes) at out. type_len <= SG_SEGLOG_MAX_TYPE. */
void sg__seg_encode(uint8_t *out, uint64_t id, uint64_t out_off, uint32_t out_len, int kind,
                    int stream, const char *type, size_t type_len, const char *json,
                    size_t json_len);

/* Incremental decoder over one file's bytes: the caller asks for room, fills it, commits it,
 * then takes records until next() says it needs more. */
typedef struct sg__segdec {
    uint8_t *buf;
    size_t cap, start, end; /* unparsed bytes are buf[start, end) */
    uint64_t off;           /* file offset of buf[start] */
    size_t need;            /* bytes the record at start needs (0: unknown yet) */
    char type[SG_SEGLOG_MAX_TYPE + 1];
} sg__segdec_t;

void sg__segdec_init(sg__segdec_t *d);
void sg__segdec_reset(sg__segdec_t *d); /* a new file */
void sg__segdec_free(sg__segdec_t *d);
/* Room for at least min bytes (compacting and growing to hold the pending record): *p, *n. */
void sg__segdec_space(sg__segdec_t *d, size_t min, uint8_t **p, size_t *n);
void sg__segdec_commit(sg__segdec_t *d, size_t n);
/* 1: *r holds the next record (valid until the next call; r->off is its file offset);
 * 0: need more bytes; < 0 (SG_EPROTO): corrupt record at d->off, *why says how. */
int sg__segdec_next(sg__segdec_t *d, sg_seglog_rec_t *r, const char **why);
/* Unparsed bytes left (at end of file: a partial record). */
static inline size_t sg__segdec_left(const sg__segdec_t *d)
{
    return d->end - d->start;
}

/* Thread-pool requests the module issued / saw called back (all seglogs, readers and removes
 * of the process): a test checks they match, i.e. no request ran synchronously. */
void sg__seglog_fs_counts(uint64_t *started, uint64_t *done);

#endif
