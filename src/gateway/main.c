/* main.c: the `sandgate` command line: subcommand dispatch. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "doctor.h"
#include "serve.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: sandgate <command> [options]\n\n"
               "commands:\n"
               "  serve      run the gateway (see `sandgate serve --help`)\n"
               "  doctor     what this host offers local sandboxes (`sandgate doctor --json`)\n"
               "  version    print the version\n\n"
               "`serve` speaks OpenSandbox's lifecycle API in front of local bubblewrap sandboxes\n"
               "(see docs/api.md). Process streams and the durable store are not in this build.\n");
}

int main(int argc, char **argv)
{
    /* Sockets report EPIPE as an error instead of killing the process; file descriptors the
     * gateway inherited never leak into the children it spawns. */
    signal(SIGPIPE, SIG_IGN);
    uv_disable_stdio_inheritance();

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("sandgate %s\n", SG_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0) return sg_gateway_serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "doctor") == 0) return sg_gateway_doctor(argc - 1, argv + 1);
    fprintf(stderr, "sandgate: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
