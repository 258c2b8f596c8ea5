/* serve.h: `sandgate serve`, the gateway daemon. */
#ifndef SANDGATE_GATEWAY_SERVE_H
#define SANDGATE_GATEWAY_SERVE_H

int sg_gateway_serve(int argc, char **argv);

#endif
