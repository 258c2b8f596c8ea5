/* bench.h: the scenarios sandgate-bench runs, one entry point each (argv[0] is the scenario
 * name, the rest its flags). Each returns the process exit code: 0 when the run completed
 * and its result document says "ok": true, 1 when it completed with errors, 2 for bad usage,
 * 3 when its own loop did not close clean (a handle left open: a bench bug).
 *
 *   fanout.c    fanout, idle, slow   SSE subscribers + an open-loop publisher (Nchan-style
 *                                    POST /pub, GET /sub as text/event-stream)
 *   exec.c      exec, relay          POST /command on an execd (or an endpoint's prefix)
 *   lifecycle.c lifecycle            OpenSandbox create -> ping -> exec -> delete
 *   stamp.c     stamp                timestamped events on stdout at a fixed rate: the process
 *                                    a gateway fans out (fanout --pub-url none subscribes)
 *   bconn.c, hist.c, bstat.c         client connections, histograms, /proc figures */
#ifndef SANDGATE_BENCH_BENCH_H
#define SANDGATE_BENCH_BENCH_H
#include <jansson.h>
#include <stdint.h>

int bench_fanout_main(int argc, char **argv);
int bench_idle_main(int argc, char **argv);
int bench_slow_main(int argc, char **argv);
int bench_exec_main(int argc, char **argv);
int bench_relay_main(int argc, char **argv);
int bench_lifecycle_main(int argc, char **argv);
int bench_stamp_main(int argc, char **argv);

/* Shared by the scenarios: the document's common head
 * {"tool","version","scenario","started_at","params"} (params is stolen). */
json_t *bench_doc_new(const char *scenario, json_t *params);
/* Parses opts into cfg; prints help or the error. Returns 0 to go on, else the exit code. */
struct sg_opt;
int bench_parse(const struct sg_opt *opts, size_t n, void *cfg, int argc, char **argv,
                const char *usage, int *exit_code);
/* The unsigned number of member `key` in an event body: "key":N, also when the body sits
 * JSON-escaped inside a string (\"key\":N). *found = 0 when absent. */
uint64_t bench_event_u64(const char *d, size_t n, const char *key, int *found);
/* Replaces every "{run}" in s by a per-process run id (malloc'd result). */
char *bench_subst_run(const char *s);
#endif
