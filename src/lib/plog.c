/* plog.c: a process's bounded event log (plog.h). */
#include "sandgate/plog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"

#define ENT_AT(l, i) (&(l)->v[((l)->head + (i)) & ((l)->cap - 1)]) /* cap: a power of 2 */
#define PLOG_BLOCK   (64u * 1024u)

void sg_plog_init(sg_plog_t *l, uint64_t max_bytes)
{
    memset(l, 0, sizeof(*l));
    l->first_id = l->next_id = 1;
    l->max_bytes = max_bytes;
}

void sg_plog_free(sg_plog_t *l)
{
    for (size_t i = 0; i < l->count; i++)
        sg_buf_unref(ENT_AT(l, i)->blk);
    sg_buf_unref(l->tail);
    l->tail = NULL;
    free(l->v);
    l->v = NULL;
    l->count = l->cap = l->head = 0;
    l->bytes = 0;
}

uint64_t sg_plog_cost(size_t frame_len)
{
    return (uint64_t)frame_len + sizeof(sg_plog_ent_t);
}

static void grow(sg_plog_t *l)
{
    size_t ncap = l->cap ? l->cap * 2 : 64;
    sg_plog_ent_t *nv = sg_xmalloc(ncap * sizeof(*nv));
    for (size_t i = 0; i < l->count; i++)
        nv[i] = *ENT_AT(l, i);
    free(l->v);
    l->v = nv;
    l->cap = ncap;
    l->head = 0;
}

static void drop_oldest(sg_plog_t *l)
{
    sg_plog_ent_t *e = ENT_AT(l, 0);
    l->bytes -= sg_plog_cost(e->len);
    sg_buf_unref(e->blk);
    l->head = (l->head + 1) & (l->cap - 1);
    l->count--;
    l->first_id++;
    l->evicted++;
}

/* The bound: the oldest go while over it, except the newest event and what is pinned. */
static void trim(sg_plog_t *l)
{
    while (l->bytes > l->max_bytes && l->count > 1 && (!l->keep_from || l->first_id < l->keep_from))
        drop_oldest(l);
}

size_t sg_plog_head(char *head, uint64_t id, const char *type)
{
    size_t tl = strlen(type);
    if (tl > SG_PLOG_HEAD_MAX - 48) return 0; /* 48: the id's digits and the fixed parts */
    size_t hn = 4;
    memcpy(head, "id: ", 4);
    hn += sg_u64_dec(head + hn, id);
    memcpy(head + hn, "\nevent: ", 8);
    hn += 8;
    memcpy(head + hn, type, tl);
    hn += tl;
    memcpy(head + hn, "\ndata: ", 7);
    return hn + 7;
}

void sg_plog_skip_to(sg_plog_t *l, uint64_t id, uint64_t out_off, int64_t *bytes_delta)
{
    uint64_t before = l->bytes;
    while (l->count)
        drop_oldest(l);
    if (id > l->next_id) l->next_id = id;
    l->first_id = l->next_id;
    if (out_off > l->out_end) l->out_end = out_off;
    if (bytes_delta) *bytes_delta = (int64_t)l->bytes - (int64_t)before;
}

int64_t sg_plog_append(sg_plog_t *l, const char *type, const char *json, size_t json_len,
                       sg_plog_kind_t kind, int stream, uint32_t out_len, int64_t *bytes_delta)
{
    if (strpbrk(type, "\r\n") || memchr(json, '\n', json_len) || memchr(json, '\r', json_len))
        return SG_EINVAL;
    char head[SG_PLOG_HEAD_MAX];
    size_t hn = sg_plog_head(head, l->next_id, type);
    if (!hn) return SG_EINVAL;
    size_t flen = hn + json_len + 2;
    sg_buf_t *b = l->tail;
    if (!b || b->cap - b->len < flen) {
        sg_buf_unref(b);
        b = l->tail = sg_buf_new(flen > PLOG_BLOCK ? flen : PLOG_BLOCK);
    }
    size_t off = b->len;
    memcpy(b->data + off, head, hn);
    memcpy(b->data + off + hn, json, json_len);
    memcpy(b->data + off + hn + json_len, "\n\n", 2);
    b->len += flen;

    uint64_t before = l->bytes;
    if (l->count == l->cap) grow(l);
    sg_plog_ent_t *e = &l->v[(l->head + l->count) & (l->cap - 1)];
    l->count++;
    l->cum += flen;
    e->id = l->next_id++;
    e->cum = l->cum;
    e->out_off = l->out_end;
    e->blk = sg_buf_ref(b);
    e->off = (uint32_t)off;
    e->len = (uint32_t)flen;
    e->json_off = (uint32_t)hn;
    e->out_len = out_len;
    e->kind = (uint8_t)kind;
    e->stream = (uint8_t)stream;
    l->out_end += out_len;
    l->bytes += sg_plog_cost(flen);
    trim(l);
    if (bytes_delta) *bytes_delta = (int64_t)l->bytes - (int64_t)before;
    return (int64_t)(l->next_id - 1);
}

void sg_plog_keep_from(sg_plog_t *l, uint64_t id, int64_t *bytes_delta)
{
    uint64_t before = l->bytes;
    l->keep_from = id;
    trim(l);
    if (bytes_delta) *bytes_delta = (int64_t)l->bytes - (int64_t)before;
}

const sg_plog_ent_t *sg_plog_get(const sg_plog_t *l, uint64_t id)
{
    if (id < l->first_id || id >= l->next_id) return NULL;
    return ENT_AT(l, id - l->first_id);
}

const sg_plog_ent_t *sg_plog_find_out(const sg_plog_t *l, uint64_t off)
{
    /* First entry whose output ends past off (out_off + out_len is non-decreasing). */
    size_t lo = 0, hi = l->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const sg_plog_ent_t *e = ENT_AT(l, mid);
        if (e->out_off + e->out_len > off)
            hi = mid;
        else
            lo = mid + 1;
    }
    for (; lo < l->count; lo++) {
        const sg_plog_ent_t *e = ENT_AT(l, lo);
        if (e->out_len > 0) return e;
    }
    return NULL;
}

uint64_t sg_plog_first_out(const sg_plog_t *l)
{
    return l->count ? ENT_AT(l, 0)->out_off : l->out_end;
}
