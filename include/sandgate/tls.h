/* tls.h: TLS configuration contexts (mbedTLS), shared by many connections.
 *
 * A context holds what every connection of one kind shares: for serving, the certificate chain
 * and key; for connecting, the CA chain to verify against. Connections are made by sg_sock
 * (sock.h) from a context; the context must outlive them. Errors come back as a negative
 * SG_E* code with a human message in err (mbedTLS's own text included).
 *
 * Policy: TLS 1.2 (mbedTLS 2.28 has no usable 1.3), mbedTLS's default cipher suites. A client
 * with verify = 1 requires a chain to one of the CAs and a name match: DNS names against
 * dNSName SANs (mbedTLS), IP literals against iPAddress SANs (our check; never sent as SNI).
 * Each context owns its mbedTLS config, entropy and CTR-DRBG; all single-threaded, like the
 * loop that uses them. Memory per TLS connection: mbedTLS's two 16 KiB record buffers plus
 * sg_sock's 32 KiB ciphertext inbox and 16 KiB plaintext buffer, and the outbox (<= 128 KiB
 * of records while a large write is being encrypted). */
#ifndef SANDGATE_TLS_H
#define SANDGATE_TLS_H

#include <stddef.h>

typedef struct sg_tls_ctx sg_tls_ctx_t;

/* cert_file: PEM chain (leaf first); key_file: PEM private key (unencrypted), checked to
 * belong to the leaf. */
int sg_tls_ctx_new_server(sg_tls_ctx_t **out, const char *cert_file, const char *key_file,
                          char *err, size_t errlen);
/* ca_file: PEM bundle to verify the server against; NULL means the system bundle
 * (/etc/ssl/certs/ca-certificates.crt). verify = 0 turns verification off (tests, explicit
 * operator opt-in only). */
int sg_tls_ctx_new_client(sg_tls_ctx_t **out, const char *ca_file, int verify, char *err,
                          size_t errlen);
void sg_tls_ctx_free(sg_tls_ctx_t *ctx);

#endif
