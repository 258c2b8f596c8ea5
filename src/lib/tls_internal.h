/* tls_internal.h: the seam between sock.c (transport, lifetimes) and tls.c (the TLS engine).
 *
 * sock.c calls into tls.c only when s->tls != NULL, so the plaintext path never pays for TLS.
 * tls.c owns s->tls (sg_tls_conn_t) and everything in it; sock.c owns the handle, the resolver
 * and the close sequence, and tls.c reports back through the sg__sock_* functions. */
#ifndef SANDGATE_TLS_INTERNAL_H
#define SANDGATE_TLS_INTERNAL_H

#include "sandgate/sock.h"

/* --- provided by tls.c */

/* Creates s->tls for ctx. hostname: name to verify the server against (client side; NULL =
 * CA chain only). Does not start the handshake. Returns 0 or SG_E*. */
int sg__tls_conn_new(sg_sock_t *s, sg_tls_ctx_t *ctx, const char *hostname);
/* The transport is connected (or accepted): starts reading and the handshake. */
void sg__tls_start(sg_sock_t *s);
void sg__tls_alloc(sg_sock_t *s, uv_buf_t *buf);
void sg__tls_on_read(sg_sock_t *s, ssize_t nread);
int sg__tls_read_start(sg_sock_t *s);
int sg__tls_read_stop(sg_sock_t *s);
int sg__tls_write(sg_sock_t *s, const uv_buf_t *bufs, unsigned nbufs, sg_sock_write_cb cb);
/* Called by sg_sock_close before the handle is closed: best-effort close_notify, closes the
 * TLS connection's own handle. Returns the number of close callbacks sock.c must wait for
 * (reported through sg__sock_close_step). */
int sg__tls_close(sg_sock_t *s);
/* Frees s->tls (after every handle is closed). */
void sg__tls_conn_free(sg_sock_t *s);
const char *sg__tls_error(const sg_sock_t *s, char *buf, size_t len);

/* --- provided by sock.c */

/* Delivers the connect callback once (status 0 marks the socket connected). */
void sg__sock_connect_done(sg_sock_t *s, int status);
/* Starts / stops libuv reading on the transport (ciphertext), independent of s->reading. */
int sg__sock_transport_read(sg_sock_t *s, int on);
/* One of the close_pending parties has finished; the last one frees and calls close_cb. */
void sg__sock_close_step(sg_sock_t *s);

#endif
