/* timer.h: deadlines for many connections on one uv_timer_t per duration.
 *
 * Every connection has the same idle / header / body / send timeouts, so entries with the same
 * duration are kept in an intrusive list in deadline order for free (arming appends to the tail),
 * and one uv_timer_t per list fires for its head (the Node.js model). Arm, re-arm and disarm
 * are O(1) and allocate nothing; a connection embeds its sg_tentry_t.
 *
 * Lifecycle: sg_tlist_init -> arm/disarm entries -> sg_tlist_close(cb) (entries must already be
 * disarmed or are dropped silently); the list's memory may be freed in the close callback. */
#ifndef SANDGATE_TIMER_H
#define SANDGATE_TIMER_H

#include <stdint.h>
#include <uv.h>

typedef struct sg_tlist sg_tlist_t;
typedef struct sg_tentry sg_tentry_t;
typedef void (*sg_tentry_cb)(sg_tentry_t *e);

struct sg_tentry {
    sg_tentry_t *prev;
    sg_tentry_t *next;
    sg_tlist_t *list; /* NULL while disarmed */
    uint64_t deadline; /* loop time, ms */
    sg_tentry_cb cb;
};

struct sg_tlist {
    uv_timer_t timer;
    uint64_t duration_ms;
    sg_tentry_t *head;
    sg_tentry_t *tail;
    size_t count;
    void (*close_cb)(sg_tlist_t *l);
};

void sg_tlist_init(uv_loop_t *loop, sg_tlist_t *l, uint64_t duration_ms);
void sg_tlist_close(sg_tlist_t *l, void (*close_cb)(sg_tlist_t *l));

void sg_tentry_init(sg_tentry_t *e, sg_tentry_cb cb);
/* (Re)starts e on l: it fires duration_ms from now unless re-armed or disarmed first.
 * An entry is on at most one list; arming on another list moves it. A list with duration 0
 * never fires (the timeout is disabled) and arming on it only disarms. */
void sg_tentry_arm(sg_tlist_t *l, sg_tentry_t *e);
void sg_tentry_disarm(sg_tentry_t *e);
static inline int sg_tentry_armed(const sg_tentry_t *e) { return e->list != NULL; }

#endif
