/* stamp.c: `sandgate-bench stamp`, the publisher that runs INSIDE a sandbox as the process
 * whose output a gateway fans out. It writes one line per event to stdout,
 *   {"seq":N,"sched":<ns>,"sent":<ns>,"pad":"xxxx..."}\n      (the line padded to --size bytes,
 *                                                              newline not counted)
 * the same body `fanout` publishes itself, so `sandgate-bench fanout --pub-url none --clock
 * realtime` subscribed to the process's stream measures it: the keys are found even inside a
 * stdout event's JSON-escaped text. Stamps are CLOCK_REALTIME ns because the subscriber is
 * another process (possibly in another pid namespace); on one host both read the same clock.
 *
 * Open loop, like fanout's own publisher: event i is due at sched = t0 + i * 1e9 / rate, where
 * t0 is taken after --start-delay and, with --start-file, once that file exists (fanout
 * --ready-file creates it when its subscribers are in and the measurement starts; the file is
 * visible in a sandbox whose image is the host's read-only /). The loop sleeps until
 * the next event is due (absolute clock_nanosleep, so sleeps do not drift), then writes every
 * event due by now in one write(2): one event per write while it keeps up, batches when it
 * falls behind. `sent` is read just before that write; a blocking write (the reader's pipe is
 * full) delays later events, which the subscriber sees as delivery_from_schedule (free of
 * coordinated omission). Nothing is buffered in stdio: each batch is on the pipe when the
 * write returns. Exit 0 after --events events, 1 when stdout fails (e.g. EPIPE); a one-line
 * summary goes to stderr only with --summary (stderr is part of the stream being measured). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "sandgate/common.h"
#include "sandgate/config.h"

typedef struct st_cfg {
    const char *start_file;
    int64_t events, rate, size, max_batch;
    uint64_t start_delay_ms, start_timeout_ms;
    bool summary;
} st_cfg_t;

#define OPT(name, type, field, def, min, max, help)                                                \
    {                                                                                              \
        name, NULL, type, offsetof(st_cfg_t, field), def, min, max, NULL, help                     \
    }

static const sg_opt_t st_opts[] = {
    OPT("events", SG_OPT_INT, events, "1000", 0, 100000000, "events to write, then exit 0"),
    OPT("rate", SG_OPT_INT, rate, "1000", 1, 10000000, "events per second, open loop"),
    OPT("size", SG_OPT_INT, size, "64", 48, 1048576,
        "bytes per event line (padded; the newline not counted)"),
    OPT("start-delay", SG_OPT_DURATION, start_delay_ms, "0ms", 0, 86400000,
        "wait before the first event (subscribers connect meanwhile)"),
    OPT("start-file", SG_OPT_STRING, start_file, NULL, 0, 0,
        "then wait until this file exists (fanout --ready-file), polled every millisecond"),
    OPT("start-timeout", SG_OPT_DURATION, start_timeout_ms, "120s", 1, 86400000,
        "give up (exit 1) when --start-file has not appeared by then"),
    OPT("max-batch", SG_OPT_INT, max_batch, "4096", 1, 1000000,
        "most events in one write when behind schedule (bounds the buffer)"),
    OPT("summary", SG_OPT_BOOL, summary, "false", 0, 0,
        "print a summary line to stderr at the end"),
};

static uint64_t rt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void rt_sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int write_all(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One event line into out (room for cap bytes, more than the prefix and size + 1); returns its
 * length with the newline. */
static size_t format_event(char *out, size_t cap, size_t size, uint64_t seq, uint64_t sched,
                           uint64_t sent)
{
    int n = snprintf(out, cap,
                     "{\"seq\":%" PRIu64 ",\"sched\":%" PRIu64 ",\"sent\":%" PRIu64 ",\"pad\":\"",
                     seq, sched, sent);
    size_t len = (size_t)n;
    while (len + 2 < size)
        out[len++] = 'x';
    out[len++] = '"';
    out[len++] = '}';
    out[len++] = '\n';
    return len;
}

int bench_stamp_main(int argc, char **argv)
{
    st_cfg_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    int code;
    if (bench_parse(st_opts, sizeof(st_opts) / sizeof(st_opts[0]), &cfg, argc, argv,
                    "sandgate-bench stamp [flags]: write timestamped events to stdout at a fixed "
                    "rate (the publisher inside a sandbox for fanout --pub-url none --clock "
                    "realtime)",
                    &code))
        return code;
    /* The prefix with the three numbers is at most ~80 bytes; --size >= 48 may still be
     * shorter than that, in which case the line is just unpadded. */
    size_t line_cap = (size_t)cfg.size + 96;
    size_t batch = (size_t)cfg.max_batch;
    char *buf = sg_xmalloc(line_cap * batch);
    double period = 1e9 / (double)cfg.rate;
    if (cfg.start_delay_ms) rt_sleep_until(rt_now() + cfg.start_delay_ms * 1000000u);
    if (cfg.start_file && *cfg.start_file) {
        uint64_t give_up = rt_now() + cfg.start_timeout_ms * 1000000u;
        while (access(cfg.start_file, F_OK) != 0) {
            if (rt_now() > give_up) {
                fprintf(stderr, "stamp: %s did not appear within %llu ms\n", cfg.start_file,
                        (unsigned long long)cfg.start_timeout_ms);
                free(buf);
                return 1;
            }
            rt_sleep_until(rt_now() + 1000000u);
        }
    }
    uint64_t t0 = rt_now(), next = 0, writes = 0, late_batches = 0, max_lag = 0;
    uint64_t total = (uint64_t)cfg.events;
    int err = 0;
    while (next < total) {
        uint64_t due_at = t0 + (uint64_t)((double)next * period);
        uint64_t now = rt_now();
        if (now < due_at) {
            rt_sleep_until(due_at);
            now = rt_now();
        }
        double due_d = floor((double)(now - t0) / period) + 1;
        uint64_t due = due_d > (double)total ? total : (uint64_t)due_d;
        if (due - next > batch) due = next + batch;
        if (due - next > 1) late_batches++;
        if (now - due_at > max_lag) max_lag = now - due_at;
        size_t len = 0;
        for (uint64_t i = next; i < due; i++)
            len += format_event(buf + len, line_cap, (size_t)cfg.size, i,
                                t0 + (uint64_t)((double)i * period), now);
        err = write_all(buf, len);
        if (err < 0) break;
        writes++;
        next = due;
    }
    if (cfg.summary || err < 0)
        fprintf(stderr,
                "stamp: %" PRIu64 "/%" PRIu64 " events in %" PRIu64 " writes over %.3f s, %" PRIu64
                " batched writes, max lag %.3f ms%s%s\n",
                next, total, writes, (double)(rt_now() - t0) / 1e9, late_batches,
                (double)max_lag / 1e6, err < 0 ? ", stdout: " : "", err < 0 ? strerror(-err) : "");
    free(buf);
    return err < 0 ? 1 : 0;
}
