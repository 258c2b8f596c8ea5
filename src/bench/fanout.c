/* fanout.c: the subscriber scenarios: fanout, idle, slow.
 *
 * One run = N SSE subscribers (GET --sub-url, Accept: text/event-stream, one bc_conn each)
 * and one publisher connection (POST --pub-url, requests pipelined so order is kept and the
 * schedule never waits for a response). Phases:
 *   connect   at most --connect-concurrency connections in flight until each subscriber has
 *             its 200 headers (bounded by --connect-timeout);
 *   settle    --warmup, so the server has registered every subscriber;
 *   publish   open loop: event i is due at t0 + i/rate; a 1 ms timer sends everything due,
 *             stamping each body with its scheduled and actual send time (CLOCK_MONOTONIC, same
 *             host); a send more than --late-after behind schedule counts as late;
 *   drain     until every (reading) subscriber has every event and every publish was
 *             answered, bounded by --drain-timeout;
 * then every connection is closed and the loop runs dry. idle replaces publish by a hold of
 * --hold and one probe event (proving the held subscribers are alive); slow pauses reading on
 * a --slow-fraction of the subscribers as soon as their headers arrive.
 *
 * Event body (the payload a server relays unchanged; Nchan wraps it as `data:`):
 *   {"seq":N,"sched":<scheduled ns>,"sent":<sent ns>,"pad":"xxxx..."}   padded to --size
 * A subscriber expects seq 0, 1, 2... in order; anything else is counted (gap, duplicate).
 * The keys are found by name wherever they are and also when the body arrives JSON-escaped
 * inside another JSON string (a gateway relaying a process's stdout line as
 * {"type":"stdout","text":"{\"seq\":...}"}), so the same subscriber works for both.
 * Latency per delivery = receive time - sent ("delivery"), and - sched
 * ("delivery_from_schedule", which also charges publisher lag, i.e. free of coordinated
 * omission). Timestamps are CLOCK_MONOTONIC ns (same host), or CLOCK_REALTIME with
 * --clock realtime, for events stamped by another process (e.g. `date +%s%N`, or
 * `sandgate-bench stamp` inside a sandbox). With --pub-url none the measured window
 * (deliveries/s, CPU) opens at the first event received after the settle, not while the
 * external publisher is still waiting to start; events received earlier are counted
 * (deliveries_before_ready), and when the publisher started before the window (its first
 * event was sent earlier) the window opens at that send instead, with a warning. A subscriber whose stream ends after it has every event (a
 * process's stream ends with the process) is complete, not closed early. */
#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "bconn.h"
#include "bench.h"
#include "bstat.h"
#include "hist.h"
#include "sandgate/common.h"
#include "sandgate/config.h"
#include "sandgate/sse.h"

enum { MODE_FANOUT, MODE_IDLE, MODE_SLOW };
enum { SUB_NEW, SUB_CONNECTING, SUB_READY, SUB_CLOSED };
enum { PH_CONNECT, PH_SETTLE, PH_PUBLISH, PH_DRAIN, PH_DONE };

typedef struct fo_cfg {
    const char *sub_url, *pub_url, *out, *slow_fraction, *clock, *ready_file;
    int64_t subscribers, events, rate, size, connect_conc, server_pid;
    uint64_t warmup_ms, drain_ms, hold_ms, connect_timeout_ms, late_ms, sample_ms;
    bool quiet, server_descendants, latency_buckets;
} fo_cfg_t;

typedef struct fo fo_t;

typedef struct fo_sub {
    bc_conn_t c;
    sg_sse_decoder_t dec;
    fo_t *run;
    uint64_t t_start;
    uint32_t next_seq, received, gaps, dups, foreign, sse_gaps;
    uint8_t state, slow, complete, saw_close;
} fo_sub_t;

struct fo {
    int mode;
    fo_cfg_t cfg;
    uv_loop_t *loop;
    bc_url_t sub_url, pub_url;
    char *sub_req, *pub_head_extra;
    size_t sub_req_len;
    fo_sub_t *subs;
    uint32_t n, nslow;
    uint32_t next_connect, connecting, ready, closed_early, failed_connect, http_errors,
        proto_errors;
    uint32_t open_handles;
    uint32_t complete_subs, fast_ready, ready_fast_total;
    int pub_state; /* 0 connecting, 1 up, 2 gone */
    int no_pub;    /* --pub-url none: the events come from elsewhere */
    int timers_closed;
    int phase;
    uv_timer_t tick, phase_timer, sample_timer;
    /* publisher */
    bc_conn_t pub;
    int pub_ok;
    uint64_t events; /* to publish */
    uint64_t sent, acked, pub_errors, late;
    uint64_t *sent_at; /* per event, for the ack latency (FIFO: pipelined) */
    uint64_t t0, t_last_send;
    double period_ns;
    char *body; /* scratch, size cfg.size + 128 */
    /* results */
    uint64_t delivered, delivered_slow, gaps, dups, foreign, sse_gaps;
    bh_hist_t lat, lat_sched, lag, ack, conn_lat;
    bs_proc_t srv0, srv_ready, srv_end, self0, self_ready, self_end, srv_pub0, self_pub0;
    bs_sock_t sock0, sock_ready, sock_end, sock_max;
    uint64_t srv_rss_max_kb;
    uint64_t t_start, t_ready, t_pub_start, t_pub_end, t_end;
    uint64_t first_sent; /* --pub-url none: when the first event was sent (CLOCK_MONOTONIC) */
    int timed_out_connect, timed_out_drain;
    /* --pub-url none: the measured window opens at the first stamped event received after
     * the settle (the publisher's own start delay is not the server's time); what arrived
     * before is counted, as a sign the publisher started before every subscriber was in. */
    int await_first;
    uint64_t delivered_early;
};

static void fo_finish(fo_t *r);
static void fo_maybe_done(fo_t *r);

/* The server's figures: --server-pid with its descendants (nginx master + worker), or alone
 * (--no-server-descendants: a gateway whose children are sandboxes running the publisher). */
static void srv_sample(fo_t *r, bs_proc_t *out)
{
    bs_proc_sample_depth((int)r->cfg.server_pid, r->cfg.server_descendants ? 5 : 0, out);
}
static void connect_more(fo_t *r);
static void start_settle(fo_t *r);

/* ---- subscribers */

static int g_realtime;

static uint64_t now_ns(void)
{
    if (!g_realtime) return sg_now_ns();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int sub_on_event(void *ud, const sg_sse_msg_t *m)
{
    fo_sub_t *s = ud;
    fo_t *r = s->run;
    uint64_t now = now_ns();
    int f1, f2, f3;
    uint64_t seq = bench_event_u64(m->data, m->data_len, "seq", &f1);
    uint64_t sched = bench_event_u64(m->data, m->data_len, "sched", &f2);
    uint64_t sent = bench_event_u64(m->data, m->data_len, "sent", &f3);
    if (!f1 || !f2 || !f3) {
        /* A gateway's `event: gap` (history evicted before this subscriber read it) is
         * counted by name; the seq check below also sees the hole it leaves. */
        if (m->event && strcmp(m->event, "gap") == 0) {
            s->sse_gaps++;
            r->sse_gaps++;
        }
        s->foreign++;
        r->foreign++;
        return 0;
    }
    if (seq == 0 && r->no_pub) {
        /* Its send time on the monotonic clock (sent is on now's clock). */
        uint64_t mono = sg_now_ns(), late = now > sent ? now - sent : 0;
        uint64_t at = mono > late ? mono - late : 1;
        if (!r->first_sent || at < r->first_sent) r->first_sent = at;
    }
    if (r->await_first) {
        r->await_first = 0;
        srv_sample(r, &r->srv_pub0);
        bs_self_sample(&r->self_pub0);
        r->t_pub_start = r->t_pub_end = sg_now_ns();
    } else if (r->phase < PH_DRAIN) {
        r->delivered_early++;
    }
    s->received++;
    if (s->slow)
        r->delivered_slow++;
    else
        r->delivered++;
    if (seq == s->next_seq) {
        s->next_seq++;
    } else if (seq > s->next_seq) {
        s->gaps++;
        r->gaps++;
        s->next_seq = (uint32_t)seq + 1;
    } else {
        s->dups++;
        r->dups++;
    }
    if (!s->slow) {
        bh_record(&r->lat, now > sent ? now - sent : 0);
        bh_record(&r->lat_sched, now > sched ? now - sched : 0);
    }
    if (!s->complete && !s->slow && s->next_seq >= r->events && s->received == r->events &&
        !s->gaps && !s->dups) {
        s->complete = 1;
        r->complete_subs++;
        fo_maybe_done(r);
    }
    return 0;
}

static void sub_on_connect(bc_conn_t *c, int status)
{
    fo_sub_t *s = c->ud;
    fo_t *r = s->run;
    if (status < 0) {
        r->failed_connect++;
        return;
    }
    if (bc_write(c, r->sub_req, r->sub_req_len) < 0) bc_close(c);
}

static int sub_on_headers(bc_conn_t *c)
{
    fo_sub_t *s = c->ud;
    fo_t *r = s->run;
    if (c->status != 200) {
        r->http_errors++;
        bc_close(c);
        return 1;
    }
    s->state = SUB_READY;
    r->ready++;
    r->connecting--;
    bh_record(&r->conn_lat, sg_now_ns() - s->t_start);
    if (s->slow) {
        bc_pause(c);
    } else {
        r->fast_ready++;
        r->ready_fast_total++;
    }
    if (r->phase == PH_CONNECT) connect_more(r);
    return 0;
}

static int sub_on_body(bc_conn_t *c, const char *p, size_t n)
{
    fo_sub_t *s = c->ud;
    int rc = sg_sse_decoder_feed(&s->dec, p, n);
    if (rc != 0) {
        s->run->proto_errors++;
        bc_close(c);
        return 1;
    }
    return 0;
}

static void sub_on_error(bc_conn_t *c, int err)
{
    fo_sub_t *s = c->ud;
    fo_t *r = s->run;
    /* A stream that ends after its last event (a process's stream closes when the process
     * has exited) is not an error for a subscriber that already has every event. */
    if (s->state == SUB_READY && r->phase != PH_DONE && !s->complete) r->closed_early++;
    if (err == SG_EPROTO) r->proto_errors++;
}

static void sub_on_close(bc_conn_t *c)
{
    fo_sub_t *s = c->ud;
    fo_t *r = s->run;
    if (s->state == SUB_CONNECTING) r->connecting--;
    /* A complete subscriber stays counted: fo_maybe_done compares complete with ready. */
    if (s->state == SUB_READY && !s->slow && !s->complete) r->fast_ready--;
    s->state = SUB_CLOSED;
    sg_sse_decoder_free(&s->dec);
    r->open_handles--;
    if (r->phase == PH_CONNECT)
        connect_more(r);
    else
        fo_maybe_done(r);
}

static const bc_ops_t sub_ops = {
    .on_connect = sub_on_connect,
    .on_headers = sub_on_headers,
    .on_body = sub_on_body,
    .on_error = sub_on_error,
    .on_close = sub_on_close,
};

static void connect_more(fo_t *r)
{
    while (r->phase == PH_CONNECT && r->next_connect < r->n &&
           r->connecting < (uint32_t)r->cfg.connect_conc) {
        fo_sub_t *s = &r->subs[r->next_connect++];
        s->run = r;
        s->state = SUB_CONNECTING;
        s->t_start = sg_now_ns();
        sg_sse_decoder_init(&s->dec, 0, 0, sub_on_event, NULL, s);
        r->connecting++;
        r->open_handles++;
        int rc = bc_connect(r->loop, &s->c, &r->sub_url, &sub_ops, s);
        if (rc < 0) r->failed_connect++; /* on_close follows and accounts for it */
    }
    if (r->phase == PH_CONNECT && r->next_connect == r->n && r->connecting == 0) start_settle(r);
}

/* ---- publisher */

static int pub_on_complete(bc_conn_t *c)
{
    fo_t *r = c->ud;
    uint64_t now = now_ns();
    if (r->acked < r->sent) bh_record(&r->ack, now - r->sent_at[r->acked]);
    r->acked++;
    if (c->status < 200 || c->status > 299) r->pub_errors++;
    fo_maybe_done(r);
    return 0;
}

static void pub_on_connect(bc_conn_t *c, int status)
{
    fo_t *r = c->ud;
    if (status < 0) {
        fprintf(stderr, "sandgate-bench: publisher cannot connect to %s: %s\n", r->pub_url.hostport,
                uv_strerror(status));
        return;
    }
    r->pub_ok = 1;
    r->pub_state = 1;
}

static void pub_on_error(bc_conn_t *c, int err)
{
    fo_t *r = c->ud;
    if (r->phase != PH_DONE) {
        r->pub_errors++;
        fprintf(stderr, "sandgate-bench: publisher connection lost: %s\n", sg_strerror(err));
    }
}

static void pub_on_close(bc_conn_t *c)
{
    fo_t *r = c->ud;
    r->pub_ok = 0;
    r->pub_state = 2;
    r->open_handles--;
    fo_maybe_done(r);
}

static const bc_ops_t pub_ops = {
    .on_connect = pub_on_connect,
    .on_complete = pub_on_complete,
    .on_error = pub_on_error,
    .on_close = pub_on_close,
};

static void publish_one(fo_t *r, uint64_t seq, uint64_t sched)
{
    uint64_t now = now_ns();
    int n = snprintf(r->body, (size_t)r->cfg.size + 128,
                     "{\"seq\":%llu,\"sched\":%llu,\"sent\":%llu,\"pad\":\"",
                     (unsigned long long)seq, (unsigned long long)sched, (unsigned long long)now);
    size_t len = (size_t)n;
    size_t want = (size_t)r->cfg.size;
    while (len + 2 < want)
        r->body[len++] = 'x';
    r->body[len++] = '"';
    r->body[len++] = '}';
    size_t reqlen;
    char *req = bc_request("POST", &r->pub_url, r->pub_head_extra, r->body, len, &reqlen);
    r->sent_at[seq] = now;
    if (!req || bc_write(&r->pub, req, reqlen) < 0) r->pub_errors++;
    free(req);
    uint64_t lag = now > sched ? now - sched : 0;
    bh_record(&r->lag, lag);
    if (lag > r->cfg.late_ms * 1000000u) r->late++;
    r->sent++;
    r->t_last_send = now;
}

static void on_drain_timeout(uv_timer_t *t)
{
    fo_t *r = t->data;
    r->timed_out_drain = 1;
    fo_finish(r);
}

static void on_tick(uv_timer_t *t)
{
    fo_t *r = t->data;
    if (r->phase != PH_PUBLISH) return;
    if (r->pub_state == 0) return; /* still connecting: the schedule starts late, lag shows it */
    uint64_t now = now_ns();
    double due_d = floor((double)(now - r->t0) / r->period_ns) + 1;
    uint64_t due = due_d > (double)r->events ? r->events : (uint64_t)due_d;
    while (r->sent < due && r->pub_state == 1 && !r->pub.closing)
        publish_one(r, r->sent, r->t0 + (uint64_t)((double)r->sent * r->period_ns));
    if (r->pub_state != 1 || r->pub.closing) {
        /* The publisher is gone: what is left will never be sent. */
        r->pub_errors += r->events - r->sent;
        r->events = r->sent;
    }
    if (r->sent >= r->events) {
        uv_timer_stop(&r->tick);
        r->t_pub_end = sg_now_ns();
        r->phase = PH_DRAIN;
        uv_timer_start(&r->phase_timer, on_drain_timeout, r->cfg.drain_ms, 0);
        fo_maybe_done(r);
    }
}

/* --ready-file: created when the measured phase starts, for an external publisher waiting on
 * it (stamp --start-file), so it starts neither before every subscriber is in nor later. */
static void signal_ready(fo_t *r)
{
    if (!r->cfg.ready_file || !*r->cfg.ready_file) return;
    FILE *f = fopen(r->cfg.ready_file, "w");
    if (!f) {
        fprintf(stderr, "sandgate-bench: cannot create --ready-file %s\n", r->cfg.ready_file);
        return;
    }
    fclose(f);
}

static void start_publish(fo_t *r)
{
    signal_ready(r);
    if (r->no_pub) {
        /* Someone else publishes (--pub-url none): just wait for the events. */
        srv_sample(r, &r->srv_pub0);
        bs_self_sample(&r->self_pub0);
        r->t_pub_start = r->t_pub_end = sg_now_ns();
        r->await_first = r->delivered + r->delivered_slow == 0;
        r->phase = PH_DRAIN;
        uv_timer_start(&r->phase_timer, on_drain_timeout, r->cfg.drain_ms, 0);
        fo_maybe_done(r);
        return;
    }
    r->phase = PH_PUBLISH;
    srv_sample(r, &r->srv_pub0);
    bs_self_sample(&r->self_pub0);
    r->t_pub_start = sg_now_ns();
    r->t0 = now_ns(); /* the schedule runs on the stamping clock */
    uv_timer_start(&r->tick, on_tick, 0, 1);
}

/* idle: the hold is over; measure, then probe with one event. */
static void on_hold_done(uv_timer_t *t)
{
    fo_t *r = t->data;
    srv_sample(r, &r->srv_ready);
    bs_self_sample(&r->self_ready);
    bs_sock_sample(&r->sock_ready);
    start_publish(r);
}

static void on_settled(uv_timer_t *t)
{
    fo_t *r = t->data;
    if (r->mode == MODE_IDLE) {
        uv_timer_start(&r->phase_timer, on_hold_done, r->cfg.hold_ms, 0);
        return;
    }
    srv_sample(r, &r->srv_ready);
    bs_self_sample(&r->self_ready);
    bs_sock_sample(&r->sock_ready);
    start_publish(r);
}

static void start_settle(fo_t *r)
{
    if (r->phase != PH_CONNECT) return;
    r->phase = PH_SETTLE;
    r->t_ready = sg_now_ns();
    uv_timer_stop(&r->phase_timer);
    if (r->pub_state == 2) {
        fprintf(stderr, "sandgate-bench: no publisher connection; nothing will be published\n");
        r->events = 0;
    }
    uv_timer_start(&r->phase_timer, on_settled, r->cfg.warmup_ms, 0);
}

static void on_connect_timeout(uv_timer_t *t)
{
    fo_t *r = t->data;
    if (r->phase != PH_CONNECT) return;
    r->timed_out_connect = 1;
    /* Give up on whatever is still connecting and go on with who is ready. */
    for (uint32_t i = 0; i < r->n; i++)
        if (r->subs[i].state == SUB_CONNECTING) bc_close(&r->subs[i].c);
    r->next_connect = r->n;
    r->phase = PH_CONNECT;
    start_settle(r);
}

static void on_sample(uv_timer_t *t)
{
    fo_t *r = t->data;
    bs_proc_t p;
    bs_sock_t s;
    srv_sample(r, &p);
    if (p.ok && p.rss_kb > r->srv_rss_max_kb) r->srv_rss_max_kb = p.rss_kb;
    bs_sock_sample(&s);
    if (s.ok) { /* the maximum of each counter, not one sample */
        bs_sock_t *m = &r->sock_max;
        m->ok = 1;
        if (s.sockets_used > m->sockets_used) m->sockets_used = s.sockets_used;
        if (s.tcp_inuse > m->tcp_inuse) m->tcp_inuse = s.tcp_inuse;
        if (s.tcp_alloc > m->tcp_alloc) m->tcp_alloc = s.tcp_alloc;
        if (s.tcp_orphan > m->tcp_orphan) m->tcp_orphan = s.tcp_orphan;
        if (s.tcp_tw > m->tcp_tw) m->tcp_tw = s.tcp_tw;
        if (s.tcp_mem_pages > m->tcp_mem_pages) m->tcp_mem_pages = s.tcp_mem_pages;
        if (s.slab_bytes > m->slab_bytes) m->slab_bytes = s.slab_bytes;
    }
}

static void fo_maybe_done(fo_t *r)
{
    if (r->phase == PH_DRAIN) {
        uint32_t want = r->fast_ready;
        if (r->acked >= r->sent && r->complete_subs >= want) fo_finish(r);
        return;
    }
    if (r->phase == PH_DONE && r->open_handles == 0 && !r->timers_closed) {
        r->timers_closed = 1;
        uv_close((uv_handle_t *)&r->tick, NULL);
        uv_close((uv_handle_t *)&r->phase_timer, NULL);
        uv_close((uv_handle_t *)&r->sample_timer, NULL);
    }
}

static void fo_finish(fo_t *r)
{
    if (r->phase == PH_DONE) return;
    r->phase = PH_DONE;
    r->t_end = sg_now_ns();
    srv_sample(r, &r->srv_end);
    bs_self_sample(&r->self_end);
    bs_sock_sample(&r->sock_end);
    on_sample(&r->sample_timer);
    uv_timer_stop(&r->tick);
    uv_timer_stop(&r->phase_timer);
    uv_timer_stop(&r->sample_timer);
    for (uint32_t i = 0; i < r->next_connect; i++)
        if (r->subs[i].state != SUB_CLOSED) bc_close(&r->subs[i].c);
    if (!r->no_pub) bc_close(&r->pub);
    fo_maybe_done(r);
}

/* ---- the document */

static double secs(uint64_t a, uint64_t b)
{
    return b > a ? (double)(b - a) / 1e9 : 0.0;
}

static json_t *mem_json(fo_t *r)
{
    json_t *m = json_object();
    uint32_t held = r->ready;
    if (r->srv0.ok && r->srv_ready.ok) {
        double per =
            held ? ((double)r->srv_ready.rss_kb - (double)r->srv0.rss_kb) * 1024.0 / held : 0;
        json_object_set_new(m, "server_rss_kb_before", json_integer((json_int_t)r->srv0.rss_kb));
        json_object_set_new(m, "server_rss_kb_held", json_integer((json_int_t)r->srv_ready.rss_kb));
        json_object_set_new(m, "server_rss_kb_max", json_integer((json_int_t)r->srv_rss_max_kb));
        json_object_set_new(m, "server_rss_kb_end", json_integer((json_int_t)r->srv_end.rss_kb));
        json_object_set_new(m, "server_rss_bytes_per_subscriber", json_real(per));
    } else {
        json_object_set_new(m, "server_rss_kb_before", json_null());
        json_object_set_new(m, "server_rss_bytes_per_subscriber", json_null());
    }
    double self_per =
        held ? ((double)r->self_ready.rss_kb - (double)r->self0.rss_kb) * 1024.0 / held : 0;
    json_object_set_new(m, "bench_rss_kb_before", json_integer((json_int_t)r->self0.rss_kb));
    json_object_set_new(m, "bench_rss_kb_held", json_integer((json_int_t)r->self_ready.rss_kb));
    json_object_set_new(m, "bench_rss_bytes_per_subscriber", json_real(self_per));
    json_object_set_new(m, "sockstat_before", bs_sock_json(&r->sock0));
    json_object_set_new(m, "sockstat_held", bs_sock_json(&r->sock_ready));
    json_object_set_new(m, "sockstat_max", bs_sock_json(&r->sock_max));
    json_object_set_new(m, "sockstat_end", bs_sock_json(&r->sock_end));
    if (r->sock0.ok && r->sock_ready.ok && held) {
        double kb = (double)(r->sock_ready.tcp_mem_pages - r->sock0.tcp_mem_pages) *
                    (double)bs_page_size() / held;
        json_object_set_new(m, "tcp_mem_bytes_per_subscriber_both_ends", json_real(kb));
    } else {
        json_object_set_new(m, "tcp_mem_bytes_per_subscriber_both_ends", json_null());
    }
    if (r->sock0.slab_bytes >= 0 && r->sock_ready.slab_bytes >= 0 && held)
        json_object_set_new(
            m, "socket_slab_bytes_per_subscriber_both_ends",
            json_real((double)(r->sock_ready.slab_bytes - r->sock0.slab_bytes) / held));
    else
        json_object_set_new(m, "socket_slab_bytes_per_subscriber_both_ends", json_null());
    return m;
}

static json_t *fo_doc(fo_t *r, int *ok)
{
    const char *names[] = {"fanout", "idle", "slow"};
    json_t *params = json_pack(
        "{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "sub_url", r->cfg.sub_url, "pub_url",
        r->cfg.pub_url, "subscribers", (json_int_t)r->n, "events", (json_int_t)r->cfg.events,
        "rate", (json_int_t)r->cfg.rate, "size", (json_int_t)r->cfg.size, "connect_concurrency",
        (json_int_t)r->cfg.connect_conc, "warmup_ms", (json_int_t)r->cfg.warmup_ms,
        "drain_timeout_ms", (json_int_t)r->cfg.drain_ms, "late_after_ms",
        (json_int_t)r->cfg.late_ms, "server_pid", (json_int_t)r->cfg.server_pid, "slow_subscribers",
        (json_int_t)r->nslow);
    json_object_set_new(params, "clock", json_string(r->cfg.clock));
    json_object_set_new(params, "server_descendants", json_boolean(r->cfg.server_descendants));
    if (r->mode == MODE_IDLE)
        json_object_set_new(params, "hold_ms", json_integer((json_int_t)r->cfg.hold_ms));
    json_t *doc = bench_doc_new(names[r->mode], params);
    uint32_t fast = r->n - r->nslow;
    uint64_t slow_recv_min = UINT64_MAX, slow_recv_max = 0;
    for (uint32_t i = 0; i < r->n; i++) {
        if (!r->subs[i].slow) continue;
        if (r->subs[i].received < slow_recv_min) slow_recv_min = r->subs[i].received;
        if (r->subs[i].received > slow_recv_max) slow_recv_max = r->subs[i].received;
    }
    /* Deliveries owed: every reading subscriber that got its headers, every acked event. */
    uint64_t fast_ready_n = r->ready_fast_total;
    uint64_t expected_fast = fast_ready_n * (r->no_pub ? r->events : r->acked);
    json_t *counts =
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "subscribers",
                  (json_int_t)r->n, "subscribers_ready", (json_int_t)r->ready,
                  "subscribers_complete", (json_int_t)r->complete_subs, "subscribers_reading",
                  (json_int_t)fast, "subscribers_closed_early", (json_int_t)r->closed_early,
                  "events_published", (json_int_t)r->sent, "events_acked", (json_int_t)r->acked,
                  "events_late", (json_int_t)r->late, "deliveries_expected",
                  (json_int_t)expected_fast, "deliveries", (json_int_t)r->delivered,
                  "deliveries_to_slow", (json_int_t)r->delivered_slow, "gaps", (json_int_t)r->gaps,
                  "duplicates", (json_int_t)r->dups, "foreign_events", (json_int_t)r->foreign);
    json_object_set_new(counts, "sse_gap_events", json_integer((json_int_t)r->sse_gaps));
    if (r->no_pub)
        json_object_set_new(counts, "deliveries_before_ready",
                            json_integer((json_int_t)r->delivered_early));
    if (r->mode == MODE_SLOW) {
        json_object_set_new(counts, "slow_subscribers", json_integer((json_int_t)r->nslow));
        json_object_set_new(
            counts, "slow_received_min",
            json_integer((json_int_t)(slow_recv_min == UINT64_MAX ? 0 : slow_recv_min)));
        json_object_set_new(counts, "slow_received_max", json_integer((json_int_t)slow_recv_max));
    }
    json_object_set_new(doc, "counts", counts);
    uint64_t errs =
        r->failed_connect + r->http_errors + r->proto_errors + r->pub_errors + r->closed_early;
    json_t *errors =
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:b}", "total", (json_int_t)errs, "connect",
                  (json_int_t)r->failed_connect, "http_status", (json_int_t)r->http_errors,
                  "protocol", (json_int_t)r->proto_errors, "publish", (json_int_t)r->pub_errors,
                  "closed_early", (json_int_t)r->closed_early, "connect_timeout",
                  r->timed_out_connect, "drain_timeout", r->timed_out_drain);
    json_object_set_new(doc, "errors", errors);
    if (r->no_pub && r->first_sent && r->first_sent < r->t_pub_start) {
        /* An outside publisher that started before the window: its events were delivered
         * late, so the window starts when the first was sent (or the rate is inflated). */
        if (r->t_pub_start - r->first_sent > 1000000000u)
            fprintf(stderr,
                    "sandgate-bench: the first event was sent %.1f s before the measured window: "
                    "the publisher started before the subscribers (the window starts at its "
                    "send)\n",
                    (double)(r->t_pub_start - r->first_sent) / 1e9);
        r->t_pub_start = r->first_sent;
    }
    double pub_s = secs(r->t_pub_start, r->t_pub_end);
    double run_s = secs(r->t_pub_start, r->t_end);
    json_t *tp = json_pack("{s:f,s:f,s:f,s:f,s:f}", "connect_s", secs(r->t_start, r->t_ready),
                           "publish_s", pub_s, "measured_s", run_s, "events_per_s",
                           pub_s > 0 ? (double)r->sent / pub_s : 0.0, "deliveries_per_s",
                           run_s > 0 ? (double)r->delivered / run_s : 0.0);
    /* The window on CLOCK_MONOTONIC, so documents of generators running side by side on one
     * host can be put on one time line (their deliveries summed over the union window). */
    json_object_set_new(tp, "window_start_ns", json_integer((json_int_t)r->t_pub_start));
    json_object_set_new(tp, "window_end_ns", json_integer((json_int_t)r->t_end));
    json_object_set_new(doc, "throughput", tp);
    json_t *lat = json_object();
    json_object_set_new(lat, "delivery", bh_to_json(&r->lat, 1e6));
    if (r->cfg.latency_buckets)
        json_object_set_new(lat, "delivery_buckets", bh_buckets_json(&r->lat));
    json_object_set_new(lat, "delivery_from_schedule", bh_to_json(&r->lat_sched, 1e6));
    json_object_set_new(lat, "publish_lag", bh_to_json(&r->lag, 1e6));
    json_object_set_new(lat, "publish_ack", bh_to_json(&r->ack, 1e6));
    json_object_set_new(lat, "subscribe", bh_to_json(&r->conn_lat, 1e6));
    json_object_set_new(doc, "latency_ms", lat);
    /* CPU over the measured phase (publish + drain): the bench must not be the bottleneck. */
    json_object_set_new(doc, "cpu",
                        json_pack("{s:o,s:o}", "bench",
                                  bs_cpu_json(&r->self_pub0, &r->self_end, run_s), "server",
                                  bs_cpu_json(&r->srv_pub0, &r->srv_end, run_s)));
    json_object_set_new(doc, "memory", mem_json(r));
    int good = errs == 0 && !r->timed_out_drain && !r->timed_out_connect && r->ready == r->n &&
               r->complete_subs == (uint32_t)fast_ready_n && r->gaps == 0 && r->dups == 0 &&
               r->sent == r->acked;
    json_object_set_new(doc, "ok", json_boolean(good));
    *ok = good;
    return doc;
}

static void summary(fo_t *r, int ok)
{
    if (r->cfg.quiet) return;
    fprintf(stderr,
            "%s: %u/%u subscribers ready, %llu events published (%llu late), %llu/%llu deliveries, "
            "%u complete, gaps %llu, dups %llu\n",
            r->mode == MODE_IDLE   ? "idle"
            : r->mode == MODE_SLOW ? "slow"
                                   : "fanout",
            r->ready, r->n, (unsigned long long)r->sent, (unsigned long long)r->late,
            (unsigned long long)r->delivered,
            (unsigned long long)((uint64_t)(r->ready - (r->mode == MODE_SLOW ? r->nslow : 0)) *
                                 r->acked),
            r->complete_subs, (unsigned long long)r->gaps, (unsigned long long)r->dups);
    if (r->lat.count)
        fprintf(stderr, "  delivery latency ms: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f\n",
                bh_percentile(&r->lat, 0.5) / 1e6, bh_percentile(&r->lat, 0.9) / 1e6,
                bh_percentile(&r->lat, 0.99) / 1e6, bh_percentile(&r->lat, 0.999) / 1e6,
                r->lat.max / 1e6);
    double run_s = secs(r->t_pub_start, r->t_end);
    if (run_s > 0) {
        double bc = (r->self_end.cpu_user_s + r->self_end.cpu_sys_s) -
                    (r->self_pub0.cpu_user_s + r->self_pub0.cpu_sys_s);
        fprintf(stderr, "  cpu over %.2f s: bench %.2f s", run_s, bc);
        if (r->srv_end.ok && r->srv_pub0.ok)
            fprintf(stderr, ", server %.2f s",
                    (r->srv_end.cpu_user_s + r->srv_end.cpu_sys_s) -
                        (r->srv_pub0.cpu_user_s + r->srv_pub0.cpu_sys_s));
        fputc('\n', stderr);
    }
    if (r->srv0.ok && r->srv_ready.ok && r->ready)
        fprintf(stderr, "  server rss %llu -> %llu KiB (%.0f B/subscriber), max %llu KiB\n",
                (unsigned long long)r->srv0.rss_kb, (unsigned long long)r->srv_ready.rss_kb,
                ((double)r->srv_ready.rss_kb - (double)r->srv0.rss_kb) * 1024.0 / r->ready,
                (unsigned long long)r->srv_rss_max_kb);
    fprintf(stderr, "  %s\n", ok ? "ok" : "NOT OK (see errors in the JSON document)");
}

/* ---- flags and entry */

#define OPT(name, type, field, def, min, max, help)                                                \
    {                                                                                              \
        name, NULL, type, offsetof(fo_cfg_t, field), def, min, max, NULL, help                     \
    }

static const sg_opt_t fo_opts[] = {
    OPT("sub-url", SG_OPT_STRING, sub_url, "http://127.0.0.1:8080/sub?id=bench-{run}", 0, 0,
        "subscriber URL (GET, text/event-stream); {run} becomes a per-run id"),
    OPT("pub-url", SG_OPT_STRING, pub_url, "http://127.0.0.1:8080/pub?id=bench-{run}", 0, 0,
        "publisher URL (POST one event per request, pipelined on one connection); 'none': events "
        "are published "
        "by someone else (stamped with seq/sched/sent, see --clock) and --events of them are "
        "awaited"),
    OPT("subscribers", SG_OPT_INT, subscribers, "100", 1, 1000000, "subscribers to hold"),
    OPT("events", SG_OPT_INT, events, "1000", 0, 100000000,
        "events to publish (idle: ignored, one probe)"),
    OPT("rate", SG_OPT_INT, rate, "100", 1, 10000000, "events per second, open loop"),
    OPT("size", SG_OPT_INT, size, "64", 48, 1048576, "event body bytes (padded)"),
    OPT("connect-concurrency", SG_OPT_INT, connect_conc, "256", 1, 100000,
        "subscriber connects in flight"),
    OPT("connect-timeout", SG_OPT_DURATION, connect_timeout_ms, "60s", 1, 86400000,
        "bound on the connect phase"),
    OPT("warmup", SG_OPT_DURATION, warmup_ms, "200ms", 0, 0,
        "pause between all-connected and publishing"),
    OPT("drain-timeout", SG_OPT_DURATION, drain_ms, "10s", 1, 86400000,
        "wait after the last publish for deliveries"),
    OPT("late-after", SG_OPT_DURATION, late_ms, "5ms", 0, 0,
        "a send this far behind schedule counts as late"),
    OPT("hold", SG_OPT_DURATION, hold_ms, "2s", 0, 0,
        "idle: how long to hold the subscribers before measuring"),
    OPT("slow-fraction", SG_OPT_STRING, slow_fraction, NULL, 0, 0,
        "slow: fraction of subscribers that stop reading (default 0.1)"),
    OPT("clock", SG_OPT_STRING, clock, "monotonic", 0, 0,
        "clock of the event stamps: monotonic (same host) or realtime (stamped elsewhere)"),
    OPT("sample-interval", SG_OPT_DURATION, sample_ms, "100ms", 10, 86400000,
        "server memory sampling period"),
    OPT("server-pid", SG_OPT_INT, server_pid, "0", 0, 0,
        "server process (its descendants count too, see --server-descendants)"),
    OPT("server-descendants", SG_OPT_BOOL, server_descendants, "true", 0, 0,
        "count the server's descendants in its CPU and RSS (off: a gateway whose children are "
        "the sandboxes that publish)"),
    OPT("ready-file", SG_OPT_STRING, ready_file, NULL, 0, 0,
        "create this file when publishing starts (after connect and warmup; idle: after the "
        "hold), for an external publisher (stamp --start-file)"),
    OPT("latency-buckets", SG_OPT_BOOL, latency_buckets, "false", 0, 0,
        "also write the delivery latency histogram's buckets (latency_ms.delivery_buckets), so "
        "documents of several generators can be merged"),
    OPT("out", SG_OPT_STRING, out, "-", 0, 0, "result JSON file ('-': stdout)"),
    OPT("quiet", SG_OPT_BOOL, quiet, "false", 0, 0, "no human summary on stderr"),
};

static int fo_main(int mode, int argc, char **argv)
{
    static const char *usages[] = {
        "sandgate-bench fanout [flags]: one stream to N subscribers at a fixed publish rate",
        "sandgate-bench idle [flags]: N subscribers held open; server memory per subscriber",
        "sandgate-bench slow [flags]: a fraction of subscribers stop reading; the others' latency",
    };
    fo_t *r = sg_xcalloc(1, sizeof(*r));
    r->mode = mode;
    int code;
    if (bench_parse(fo_opts, sizeof(fo_opts) / sizeof(fo_opts[0]), &r->cfg, argc, argv,
                    usages[mode], &code)) {
        free(r);
        return code;
    }
    if (strcmp(r->cfg.clock, "monotonic") != 0 && strcmp(r->cfg.clock, "realtime") != 0) {
        fprintf(stderr, "sandgate-bench: --clock: '%s' is neither monotonic nor realtime\n",
                r->cfg.clock);
        free(r);
        return 2;
    }
    g_realtime = strcmp(r->cfg.clock, "realtime") == 0;
    double frac = mode == MODE_SLOW ? 0.1 : 0.0;
    if (r->cfg.slow_fraction) {
        char *end;
        frac = strtod(r->cfg.slow_fraction, &end);
        if (*end || frac < 0 || frac > 1) {
            fprintf(stderr, "sandgate-bench: --slow-fraction: '%s' is not a number in [0, 1]\n",
                    r->cfg.slow_fraction);
            free(r);
            return 2;
        }
        if (mode != MODE_SLOW) frac = 0;
    }
    char err[512];
    char *su = bench_subst_run(r->cfg.sub_url), *pu = bench_subst_run(r->cfg.pub_url);
    int rc = bc_url_parse(su, &r->sub_url, err, sizeof(err));
    r->no_pub = strcmp(pu, "none") == 0;
    if (rc == 0 && !r->no_pub) rc = bc_url_parse(pu, &r->pub_url, err, sizeof(err));
    r->cfg.sub_url = NULL;
    if (rc < 0) {
        fprintf(stderr, "sandgate-bench: %s\n", err);
        free(su);
        free(pu);
        free(r);
        return 2;
    }
    r->cfg.sub_url = su;
    r->cfg.pub_url = pu;
    long nofile = bs_raise_nofile();
    if (nofile > 0 && r->cfg.subscribers + 64 > nofile)
        fprintf(stderr, "sandgate-bench: warning: %lld subscribers but the fd limit is %ld\n",
                (long long)r->cfg.subscribers, nofile);
    r->n = (uint32_t)r->cfg.subscribers;
    r->nslow = (uint32_t)floor(frac * r->n + 0.5);
    if (mode == MODE_SLOW && r->nslow >= r->n && r->n > 0) r->nslow = r->n - 1;
    r->events = mode == MODE_IDLE ? 1 : (uint64_t)r->cfg.events;
    r->period_ns = 1e9 / (double)r->cfg.rate;
    r->subs = sg_xcalloc(r->n, sizeof(*r->subs));
    /* Spread the slow subscribers evenly over the connect order. */
    if (r->nslow)
        for (uint32_t k = 0; k < r->nslow; k++)
            r->subs[(uint64_t)k * r->n / r->nslow].slow = 1;
    r->sent_at = sg_xcalloc(r->events ? r->events : 1, sizeof(uint64_t));
    r->body = sg_xmalloc((size_t)r->cfg.size + 128);
    r->sub_req =
        bc_request("GET", &r->sub_url, "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
                   NULL, 0, &r->sub_req_len);
    r->pub_head_extra = "Content-Type: application/json\r\n";
    bh_init(&r->lat);
    bh_init(&r->lat_sched);
    bh_init(&r->lag);
    bh_init(&r->ack);
    bh_init(&r->conn_lat);

    uv_loop_t loop;
    uv_loop_init(&loop);
    r->loop = &loop;
    uv_timer_init(&loop, &r->tick);
    uv_timer_init(&loop, &r->phase_timer);
    uv_timer_init(&loop, &r->sample_timer);
    r->tick.data = r->phase_timer.data = r->sample_timer.data = r;

    srv_sample(r, &r->srv0);
    r->srv_rss_max_kb = r->srv0.rss_kb;
    bs_self_sample(&r->self0);
    bs_sock_sample(&r->sock0);
    r->sock_max = r->sock0;
    r->t_start = sg_now_ns();
    r->phase = PH_CONNECT;
    r->open_handles = r->no_pub ? 0 : 1;
    if (r->no_pub)
        r->pub_state = 1;
    else if (bc_connect(&loop, &r->pub, &r->pub_url, &pub_ops, r) < 0)
        fprintf(stderr, "sandgate-bench: cannot start the publisher connection\n");
    uv_timer_start(&r->phase_timer, on_connect_timeout, r->cfg.connect_timeout_ms, 0);
    uv_timer_start(&r->sample_timer, on_sample, r->cfg.sample_ms, r->cfg.sample_ms);
    connect_more(r);
    /* phase_timer is re-armed per phase: the drain timeout uses its own callback. */
    uv_run(&loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(&loop);
    if (closed != 0)
        fprintf(stderr, "sandgate-bench: internal: loop not closed cleanly (%s)\n",
                uv_strerror(closed));

    int ok;
    json_t *doc = fo_doc(r, &ok);
    int wrc = bs_write_json(doc, r->cfg.out);
    if (wrc < 0)
        fprintf(stderr, "sandgate-bench: cannot write %s: %s\n", r->cfg.out, sg_strerror(wrc));
    summary(r, ok);
    json_decref(doc);
    free(r->sub_req);
    free(r->body);
    free(r->sent_at);
    free(r->subs);
    free(su);
    free(pu);
    free(r);
    return closed != 0 ? 3 : wrc < 0 ? 1 : ok ? 0 : 1;
}

int bench_fanout_main(int argc, char **argv)
{
    return fo_main(MODE_FANOUT, argc, argv);
}
int bench_idle_main(int argc, char **argv)
{
    return fo_main(MODE_IDLE, argc, argv);
}
int bench_slow_main(int argc, char **argv)
{
    return fo_main(MODE_SLOW, argc, argv);
}
