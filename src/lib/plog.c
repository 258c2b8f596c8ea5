/* plog.c: a process's bounded event log (plog.h). */
#include "sandgate/plog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandgate/common.h"

#define ENT_AT(l, i) (&(l)->v[((l)->head + (i)) % (l)->cap])

void sg_plog_init(sg_plog_t *l, uint64_t max_bytes)
{
    memset(l, 0, sizeof(*l));
    l->first_id = l->next_id = 1;
    l->max_bytes = max_bytes;
}

void sg_plog_free(sg_plog_t *l)
{
    for (size_t i = 0; i < l->count; i++)
        sg_buf_unref(ENT_AT(l, i)->buf);
    free(l->v);
    l->v = NULL;
    l->count = l->cap = l->head = 0;
    l->bytes = 0;
}

uint64_t sg_plog_cost(size_t frame_len)
{
    return (uint64_t)frame_len + sizeof(sg_buf_t) + sizeof(sg_plog_ent_t);
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
    l->bytes -= sg_plog_cost(e->buf->len);
    sg_buf_unref(e->buf);
    l->head = (l->head + 1) % l->cap;
    l->count--;
    l->first_id++;
    l->evicted++;
}

int64_t sg_plog_append(sg_plog_t *l, const char *type, const char *json, size_t json_len,
                       sg_plog_kind_t kind, int stream, uint32_t out_len, int64_t *bytes_delta)
{
    if (strpbrk(type, "\r\n") || memchr(json, '\n', json_len) || memchr(json, '\r', json_len))
        return SG_EINVAL;
    char head[96];
    int hn = snprintf(head, sizeof(head), "id: %llu\nevent: %s\ndata: ",
                      (unsigned long long)l->next_id, type);
    if (hn < 0 || (size_t)hn >= sizeof(head)) return SG_EINVAL;
    size_t flen = (size_t)hn + json_len + 2;
    sg_buf_t *b = sg_buf_new(flen);
    memcpy(b->data, head, (size_t)hn);
    memcpy(b->data + hn, json, json_len);
    memcpy(b->data + hn + json_len, "\n\n", 2);
    b->len = flen;

    uint64_t before = l->bytes;
    if (l->count == l->cap) grow(l);
    sg_plog_ent_t *e = &l->v[(l->head + l->count) % l->cap];
    l->count++;
    l->cum += flen;
    e->id = l->next_id++;
    e->cum = l->cum;
    e->out_off = l->out_end;
    e->buf = b;
    e->json_off = (uint32_t)hn;
    e->out_len = out_len;
    e->kind = (uint8_t)kind;
    e->stream = (uint8_t)stream;
    l->out_end += out_len;
    l->bytes += sg_plog_cost(flen);
    while (l->bytes > l->max_bytes && l->count > 1)
        drop_oldest(l);
    if (bytes_delta) *bytes_delta = (int64_t)l->bytes - (int64_t)before;
    return (int64_t)(l->next_id - 1);
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
