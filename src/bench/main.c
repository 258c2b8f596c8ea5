/* main.c: sandgate-bench entry point: picks the scenario by name (see bench.h). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} scenarios[] = {
    {"lifecycle", bench_lifecycle_main,
     "create -> ready -> exec -> delete, N sandboxes at concurrency C"},
    {"exec", bench_exec_main,
     "many short commands (POST /command): first-byte and completion latency"},
    {"relay", bench_relay_main, "bulk-output commands streamed to the client: MB/s, lines/s"},
    {"fanout", bench_fanout_main,
     "one stream to N SSE subscribers, open-loop publish, per-delivery latency"},
    {"idle", bench_idle_main,
     "N subscribers held open: server RSS and socket memory per subscriber"},
    {"slow", bench_slow_main,
     "a fraction of subscribers stop reading: the others' latency, server memory"},
    {"stamp", bench_stamp_main,
     "publisher for inside a sandbox: timestamped events on stdout at a fixed rate"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: sandgate-bench <scenario> [flags]   (sandgate-bench <scenario> --help for "
               "its flags)\n\n"
               "Results: one JSON document on stdout (or --out FILE), a short summary on stderr.\n"
               "Scenarios:\n");
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
        fprintf(f, "  %-10s %s\n", scenarios[i].name, scenarios[i].what);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("sandgate-bench %s\n", SG_VERSION);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    signal(SIGPIPE, SIG_IGN); /* a peer closing mid-write is an error code, not a death */
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
        if (strcmp(argv[1], scenarios[i].name) == 0) return scenarios[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sandgate-bench: unknown scenario '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
