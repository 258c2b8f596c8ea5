/* files.c: /files... and /directories... (placeholder until the file API lands). */
#include "execd.h"

int sg_execd_files_start(sg_execd_t *x)
{
    (void)x;
    return 0;
}

void sg_execd_files_stop(sg_execd_t *x)
{
    (void)x;
}

int sg_execd_route_files(sg_execd_t *x, sg_http_req_t *req)
{
    (void)x;
    (void)req;
    return 0;
}
