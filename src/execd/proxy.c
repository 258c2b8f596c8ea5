/* proxy.c: /proxy/{port}/... (placeholder until the proxy lands). */
#include "execd.h"

int sg_execd_route_proxy(sg_execd_t *x, sg_http_req_t *req)
{
    (void)x;
    (void)req;
    return 0;
}
