/* tls.h: TLS configuration contexts (mbedTLS), shared by many connections.
 *
 * A context holds what every connection of one kind shares: for serving, the certificate chain
 * and key; for connecting, the CA chain to verify against. Connections are made by sg_sock
 * (sock.h) from a context; the context must outlive them. Errors come back as a negative
 * SG_E* code with a human message in err (mbedTLS's own text included). */
#ifndef SANDGATE_TLS_H
#define SANDGATE_TLS_H

#include <stddef.h>

typedef struct sg_tls_ctx sg_tls_ctx_t;

/* cert_file: PEM chain (leaf first); key_file: PEM private key. */
int sg_tls_ctx_new_server(sg_tls_ctx_t **out, const char *cert_file, const char *key_file,
                          char *err, size_t errlen);
/* ca_file: PEM bundle to verify the server against; NULL means the system bundle
 * (/etc/ssl/certs/ca-certificates.crt). verify = 0 turns verification off (tests, explicit
 * operator opt-in only). */
int sg_tls_ctx_new_client(sg_tls_ctx_t **out, const char *ca_file, int verify, char *err,
                          size_t errlen);
void sg_tls_ctx_free(sg_tls_ctx_t *ctx);

#endif
