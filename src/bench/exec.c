#include "bench.h"
int bench_exec_main(int argc, char **argv) { return 2; }
int bench_relay_main(int argc, char **argv) { return 2; }
int bench_lifecycle_main(int argc, char **argv) { return 2; }
