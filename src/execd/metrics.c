/* metrics.c: /metrics and /metrics/watch (placeholder until they land). */
#include "execd.h"

int sg_execd_metrics_start(sg_execd_t *x)
{
    (void)x;
    return 0;
}

void sg_execd_metrics_stop(sg_execd_t *x)
{
    (void)x;
}

int sg_execd_route_metrics(sg_execd_t *x, sg_http_req_t *req)
{
    (void)x;
    (void)req;
    return 0;
}
