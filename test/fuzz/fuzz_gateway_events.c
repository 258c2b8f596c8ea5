/* fuzz_gateway_events.c: what a sandbox's execd sends the gateway for a command is untrusted
 * (the sandbox runs it): arbitrary bytes as that event stream, through the decoder, the event
 * classification (type, raw stream and length scans), the process log with a small bound
 * (eviction), the output reassembly (base64 and JSON text) and the teardown. The first input
 * byte also picks where the stream is split between two reads. */
#include <stdint.h>
#include <stdlib.h>

#include "process.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024) return 0;
    sg__procs_fuzz_feed(data, size, 16 * 1024);
    return 0;
}
