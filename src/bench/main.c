/* main.c: sandgate-bench entry point (placeholder until its issue lands). */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--version") == 0)) {
        printf("sandgate-bench %s\n", SG_VERSION);
        return 0;
    }
    printf("usage: sandgate-bench [--help] [--version]\n\n"
           "sandgate-bench is not implemented yet: this binary is a placeholder built by the foundation.\n");
    return (argc > 1 && strcmp(argv[1], "--help") == 0) ? 0 : 2;
}
