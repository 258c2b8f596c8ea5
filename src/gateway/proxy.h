/* proxy.h: `/sandboxes/{id}/proxy/{port}/...`: one request streamed to a sandbox's execd.
 *
 * The request body flows client -> execd through sg_http_creq_write with backpressure (the
 * server side pauses reading when the upstream write queue is past its mark and resumes on
 * drain); the response flows execd -> client through sg_http_resp_write with the mirror image
 * (the upstream connection is paused while the client's output is past its mark). So memory
 * per proxied request is bounded by the two high-water marks whatever the body size, and SSE
 * passes through as it arrives.
 *
 * Headers (reference api/proxy.py): hop-by-hop fields (Connection and what it names,
 * Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) are removed both ways, and
 * Authorization, Cookie, OPEN-SANDBOX-API-KEY, Host and Expect from requests;
 * X-Forwarded-Proto / -Host / -For are added when absent; X-EXECD-ACCESS-TOKEN is set from
 * the sandbox's handle. Upstream failure before a response: 502 {"code","message"}; after
 * the head went out the client connection is cut (the only honest signal left). */
#ifndef SANDGATE_GATEWAY_PROXY_H
#define SANDGATE_GATEWAY_PROXY_H

#include "sandgate/http.h"
#include "sandgate/http_client.h"
#include "sandgate/http_server.h"

typedef struct sg_proxy_target {
    const char *origin;       /* "unix:/path" or "http://host:port" (the handle's execd) */
    const char *access_token; /* X-EXECD-ACCESS-TOKEN, NULL / "" = none */
    const char *target;       /* path + query on execd */
    int tls;                  /* the client reached us over TLS (X-Forwarded-Proto) */
    /* Optional: on_status(ud, status) runs when the upstream's response head arrives, before
     * it is relayed; release(ud) runs once when the exchange is over (also on failure). */
    void (*on_status)(void *ud, int status);
    void (*release)(void *ud);
    void *ud;
} sg_proxy_target_t;

/* Takes over req (the handler's reference): it is finished when the exchange ends. */
void sg_proxy_forward(sg_http_client_t *c, sg_http_req_t *req, const sg_proxy_target_t *t);

/* Request headers to send upstream (out must be initialised; pure, for tests). peer is
 * sg_http_req_peer()'s "1.2.3.4:5678" / "[::1]:80" / "unix". */
void sg_proxy_request_headers(const sg_hdrs_t *in, sg_hdrs_t *out, const char *peer, int tls,
                              const char *access_token);
/* Response headers to send to the client. */
void sg_proxy_response_headers(const sg_hdrs_t *in, sg_hdrs_t *out);

#endif
