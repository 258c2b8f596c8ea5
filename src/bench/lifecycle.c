#include "bench.h"
int bench_lifecycle_main(int argc, char **argv) { return 2; }
