/* timer.c: duration lists (see timer.h). */
#include "sandgate/timer.h"

#include <stddef.h>

static void on_timer(uv_timer_t *t);

static void start_for_head(sg_tlist_t *l)
{
    if (!l->head) {
        uv_timer_stop(&l->timer);
        return;
    }
    uint64_t now = uv_now(l->timer.loop);
    uint64_t due = l->head->deadline > now ? l->head->deadline - now : 0;
    uv_timer_start(&l->timer, on_timer, due, 0);
}

static void unlink_entry(sg_tentry_t *e)
{
    sg_tlist_t *l = e->list;
    if (e->prev) e->prev->next = e->next; else l->head = e->next;
    if (e->next) e->next->prev = e->prev; else l->tail = e->prev;
    e->prev = e->next = NULL;
    e->list = NULL;
    l->count--;
}

static void on_timer(uv_timer_t *t)
{
    sg_tlist_t *l = (sg_tlist_t *)t;
    uint64_t now = uv_now(t->loop);
    /* Callbacks may arm or disarm any entry (including re-arming on this list, which appends
     * behind `now`), so take the head afresh each time. */
    while (l->head && l->head->deadline <= now) {
        sg_tentry_t *e = l->head;
        unlink_entry(e);
        e->cb(e);
    }
    start_for_head(l);
}

void sg_tlist_init(uv_loop_t *loop, sg_tlist_t *l, uint64_t duration_ms)
{
    uv_timer_init(loop, &l->timer);
    l->duration_ms = duration_ms;
    l->head = l->tail = NULL;
    l->count = 0;
    l->close_cb = NULL;
}

static void on_close(uv_handle_t *h)
{
    sg_tlist_t *l = (sg_tlist_t *)h;
    if (l->close_cb) l->close_cb(l);
}

void sg_tlist_close(sg_tlist_t *l, void (*close_cb)(sg_tlist_t *l))
{
    while (l->head) unlink_entry(l->head);
    l->close_cb = close_cb;
    uv_close((uv_handle_t *)&l->timer, on_close);
}

void sg_tentry_init(sg_tentry_t *e, sg_tentry_cb cb)
{
    e->prev = e->next = NULL;
    e->list = NULL;
    e->deadline = 0;
    e->cb = cb;
}

void sg_tentry_arm(sg_tlist_t *l, sg_tentry_t *e)
{
    int was_head = 0;
    if (e->list) {
        sg_tlist_t *old = e->list;
        was_head = old->head == e;
        unlink_entry(e);
        if (old != l && was_head) start_for_head(old);
    }
    if (l->duration_ms == 0) {
        if (was_head) start_for_head(l);
        return;
    }
    e->deadline = uv_now(l->timer.loop) + l->duration_ms;
    e->list = l;
    e->prev = l->tail;
    e->next = NULL;
    if (l->tail) l->tail->next = e; else l->head = e;
    l->tail = e;
    l->count++;
    /* The timer only needs restarting when the head changed; re-arming an entry that was not
     * the head leaves the pending expiry valid (it fires early at worst and re-schedules). */
    if (l->head == e || was_head) start_for_head(l);
}

void sg_tentry_disarm(sg_tentry_t *e)
{
    if (!e->list) return;
    sg_tlist_t *l = e->list;
    /* Leaving the timer armed for a removed head is harmless: on_timer re-schedules. But an
     * empty list must not keep the loop alive until that stale expiry. */
    unlink_entry(e);
    if (!l->head) uv_timer_stop(&l->timer);
}
