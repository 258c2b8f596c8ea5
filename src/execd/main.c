/* main.c: sandgate-execd entry point. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

int sg_execd_main(int argc, char **argv);

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    uv_disable_stdio_inheritance();
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("sandgate-execd %s\n", SG_VERSION);
        return 0;
    }
    return sg_execd_main(argc, argv);
}
