/* commands.c: /ping, /command..., /session... (only /ping until the command API lands). */
#include <string.h>

#include "execd.h"

int sg_execd_route_commands(sg_execd_t *x, sg_http_req_t *req)
{
    (void)x;
    if (strcmp(sg_http_req_path(req), "/ping") == 0) {
        sg_http_respond(req, 200, NULL, NULL, 0);
        return 1;
    }
    return 0;
}
