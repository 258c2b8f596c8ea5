/* tls.c: TLS contexts (tls.h) and the per-connection TLS engine behind sg_sock (sock.h).
 *
 * Map:
 *   - sg_tls_ctx_t: one mbedtls_ssl_config + entropy + ctr_drbg + certificate chain (+ key on
 *     the server), shared read-only by every connection made from it; the owner frees it
 *     after the last connection is closed.
 *   - sg_tls_conn_t (s->tls): one mbedtls_ssl_context plus the two ciphertext buffers that
 *     sit between it and libuv (anchors C.5 "recommended shape"):
 *       inbox  - libuv reads ciphertext straight into its free tail (sg__tls_alloc); the
 *                recv BIO copies out of it and says WANT_READ when it is empty;
 *       outbox - the send BIO appends records to an sg_bufq_t and never says WANT_WRITE, so
 *                mbedtls_ssl_write's "call again with the same arguments" rule never bites;
 *                the outbox is flushed with one uv_write after the mbedTLS call returns.
 *     Both are freed with the connection (sg__tls_conn_free, from sock.c's close step).
 *   - the user's write (one in flight, sock.h): its uv_buf_t array is copied, its bytes are
 *     encrypted in record-sized pieces (small buffers are coalesced into one record) while
 *     the outbox holds less than SG_TLS_OUT_CAP, and its callback runs once every byte
 *     of its records has been written (out_done >= wmark). Writes issued before the
 *     handshake completes wait for it.
 *   - user callbacks run only from libuv callbacks (transport read, ciphertext write done,
 *     the idle handle, the close sequence), never from inside a user's call into sg_sock_*;
 *     errors found inside such a call are recorded (tls_fail) and delivered from the idle
 *     handle. The pump (tls_pump) does, in order: handshake step, encrypt the pending write,
 *     complete it, decrypt-and-deliver until WANT_READ (so nothing decrypted is stranded),
 *     deliver a recorded error (connect, write, then read callback), flush, and decide
 *     whether the transport should keep reading.
 *   - the idle handle defers work that needs no new socket event: data already decrypted or
 *     buffered when the user calls sg_sock_read_start() again, an error to report to a reader
 *     that was not reading, a write that completed without bytes. It is closed with the
 *     socket (one of sock.c's close_pending parties).
 *   - transport reads run during the handshake regardless of the user, afterwards only while
 *     the user reads, so the inbox stays bounded when the user applies backpressure.
 *   - hostname checks: DNS names go through mbedtls_ssl_set_hostname (SNI + certificate name
 *     check); IP literals are not sent as SNI and are checked against the certificate's
 *     iPAddress subjectAltNames by our verify callback, which mbedTLS 2.28 does not do.
 */
#include "sandgate/common.h"
#include "sandgate/buf.h"
#include "sandgate/sock.h"
#include "sandgate/tls.h"
#include "tls_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/oid.h>
#include <mbedtls/x509_crt.h>

#define SG_TLS_DEFAULT_CA "/etc/ssl/certs/ca-certificates.crt"
#define SG_TLS_PLAIN_CAP 16384          /* one record's plaintext: what ssl_read can return */
#define SG_TLS_IN_CHUNK (32 * 1024)     /* inbox size; grows only if a read leaves a tail */
#define SG_TLS_IN_MIN_FREE (16 * 1024)  /* free tail handed to libuv per read */
#define SG_TLS_OUT_CAP (128 * 1024)     /* stop encrypting while this much is queued */
#define SG_TLS_IOV_MAX 32

struct sg_tls_ctx {
    int server;
    int verify;
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt chain; /* own chain (server) or trusted CAs (client) */
    mbedtls_pk_context key;
};

struct sg_tls_conn {
    sg_sock_t *s;
    sg_tls_ctx_t *ctx;
    mbedtls_ssl_context ssl;
    uv_idle_t idle;

    unsigned char *in; /* ciphertext inbox: [in_off, in_len) unread */
    size_t in_off, in_len, in_cap;
    unsigned char *plain; /* ssl_read target, handed to read_cb */

    sg_bufq_t out;       /* ciphertext outbox */
    size_t out_inflight; /* head bytes of out in the current uv_write */
    uint64_t out_total;  /* bytes ever appended to out */
    uint64_t out_done;   /* bytes ever written */

    uv_buf_t wsmall[4]; /* the user's write: copied iovecs, cursor (wi, woff) */
    uv_buf_t *wbufs;
    unsigned nw, wi;
    size_t woff;
    uint64_t wmark; /* out_total once all of the write was encrypted */
    unsigned char *stage;

    int transport_err; /* UV_EOF or a read error from libuv; reads end once inbox drains */
    int err;           /* first fatal error: SG_ETLS, SG_ECERT or a uv write error */
    int mbed_err;      /* mbedTLS code behind err, for sg_sock_tls_error */
    uint32_t vflags;   /* certificate verification flags behind SG_ECERT */

    unsigned hs_done : 1;
    unsigned wall : 1; /* the current write is fully encrypted */
    unsigned tr_reading : 1;
    unsigned read_done : 1; /* the final read callback (nread < 0) was delivered */
    unsigned check_ip : 1;
    unsigned char ip[16];
    size_t iplen;
};

/* ------------------------------------------------------------------ contexts */

static void fmt_mbed(char *err, size_t errlen, const char *what, const char *arg, int r)
{
    char m[160];
    if (!err || !errlen) return;
    mbedtls_strerror(r, m, sizeof(m));
    snprintf(err, errlen, "%s%s%s: %s (-0x%04x)", what, arg ? " " : "", arg ? arg : "", m,
             (unsigned)-r);
}

static int ctx_new(sg_tls_ctx_t **out, int endpoint, char *err, size_t errlen)
{
    sg_tls_ctx_t *c = sg_xcalloc(1, sizeof(*c));
    c->server = endpoint == MBEDTLS_SSL_IS_SERVER;
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_x509_crt_init(&c->chain);
    mbedtls_pk_init(&c->key);
    *out = c;
    static const unsigned char pers[] = "sandgate-tls";
    int r = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy, pers,
                                  sizeof(pers) - 1);
    if (r != 0) {
        fmt_mbed(err, errlen, "seeding the random generator", NULL, r);
        return SG_ETLS;
    }
    r = mbedtls_ssl_config_defaults(&c->conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT);
    if (r != 0) {
        fmt_mbed(err, errlen, "TLS configuration", NULL, r);
        return SG_ETLS;
    }
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    return 0;
}

int sg_tls_ctx_new_server(sg_tls_ctx_t **out, const char *cert_file, const char *key_file,
                          char *err, size_t errlen)
{
    sg_tls_ctx_t *c;
    *out = NULL;
    if (!cert_file || !key_file) {
        if (err && errlen) snprintf(err, errlen, "TLS server needs a certificate and a key");
        return SG_EINVAL;
    }
    int r = ctx_new(&c, MBEDTLS_SSL_IS_SERVER, err, errlen);
    if (r < 0) goto fail;
    r = mbedtls_x509_crt_parse_file(&c->chain, cert_file);
    if (r != 0) {
        fmt_mbed(err, errlen, "loading certificate", cert_file, r < 0 ? r : MBEDTLS_ERR_X509_INVALID_FORMAT);
        r = SG_EINVAL;
        goto fail;
    }
    r = mbedtls_pk_parse_keyfile(&c->key, key_file, NULL);
    if (r != 0) {
        fmt_mbed(err, errlen, "loading private key", key_file, r);
        r = SG_EINVAL;
        goto fail;
    }
    /* conf_own_cert does not notice a key that belongs to another certificate. */
    r = mbedtls_pk_check_pair(&c->chain.pk, &c->key);
    if (r != 0) {
        fmt_mbed(err, errlen, "private key does not match certificate", cert_file, r);
        r = SG_EINVAL;
        goto fail;
    }
    r = mbedtls_ssl_conf_own_cert(&c->conf, &c->chain, &c->key);
    if (r != 0) {
        fmt_mbed(err, errlen, "certificate and key", cert_file, r);
        r = SG_EINVAL;
        goto fail;
    }
    *out = c;
    return 0;
fail:
    sg_tls_ctx_free(c);
    return r;
}

int sg_tls_ctx_new_client(sg_tls_ctx_t **out, const char *ca_file, int verify, char *err,
                          size_t errlen)
{
    sg_tls_ctx_t *c;
    *out = NULL;
    int r = ctx_new(&c, MBEDTLS_SSL_IS_CLIENT, err, errlen);
    if (r < 0) goto fail;
    c->verify = verify != 0;
    if (c->verify || ca_file) {
        const char *f = ca_file ? ca_file : SG_TLS_DEFAULT_CA;
        r = mbedtls_x509_crt_parse_file(&c->chain, f);
        /* r > 0: some certificates of a system bundle did not parse; the rest are usable. */
        if (r < 0 || c->chain.version == 0) {
            fmt_mbed(err, errlen, "loading CA bundle", f, r < 0 ? r : MBEDTLS_ERR_X509_INVALID_FORMAT);
            r = SG_EINVAL;
            goto fail;
        }
        mbedtls_ssl_conf_ca_chain(&c->conf, &c->chain, NULL);
    }
    mbedtls_ssl_conf_authmode(&c->conf, c->verify ? MBEDTLS_SSL_VERIFY_REQUIRED : MBEDTLS_SSL_VERIFY_NONE);
    *out = c;
    return 0;
fail:
    sg_tls_ctx_free(c);
    return r;
}

void sg_tls_ctx_free(sg_tls_ctx_t *c)
{
    if (!c) return;
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_pk_free(&c->key);
    mbedtls_x509_crt_free(&c->chain);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    free(c);
}

/* ------------------------------------------------------------------ BIO */

static int bio_send(void *p, const unsigned char *buf, size_t len)
{
    sg_tls_conn_t *t = p;
    sg_bufq_push_copy(&t->out, buf, len);
    t->out_total += len;
    return (int)len;
}

static int bio_recv(void *p, unsigned char *buf, size_t len)
{
    sg_tls_conn_t *t = p;
    size_t avail = t->in_len - t->in_off;
    if (avail == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    size_t n = SG_MIN(avail, len);
    memcpy(buf, t->in + t->in_off, n);
    t->in_off += n;
    if (t->in_off == t->in_len) t->in_off = t->in_len = 0;
    return (int)n;
}

/* mbedTLS 2.28 matches only dNSName entries; an IP literal must match an iPAddress SAN. */
static int verify_ip(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    sg_tls_conn_t *t = p;
    if (depth != 0) return 0;
    int ok = 0;
    if (crt->ext_types & MBEDTLS_X509_EXT_SUBJECT_ALT_NAME) {
        for (const mbedtls_x509_sequence *cur = &crt->subject_alt_names; cur; cur = cur->next) {
            if (cur->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS) &&
                cur->buf.len == t->iplen && memcmp(cur->buf.p, t->ip, t->iplen) == 0) {
                ok = 1;
                break;
            }
        }
    }
    if (!ok) *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

/* ------------------------------------------------------------------ connection */

static void on_idle(uv_idle_t *h);
static void tls_pump(sg_sock_t *s);

int sg__tls_conn_new(sg_sock_t *s, sg_tls_ctx_t *ctx, const char *hostname)
{
    sg_tls_conn_t *t = sg_xcalloc(1, sizeof(*t));
    t->s = s;
    t->ctx = ctx;
    mbedtls_ssl_init(&t->ssl);
    sg_bufq_init(&t->out);
    int r = mbedtls_ssl_setup(&t->ssl, &ctx->conf);
    if (r == 0 && !ctx->server && hostname) {
        struct in6_addr a6;
        if (inet_pton(AF_INET, hostname, t->ip) == 1) {
            t->iplen = 4;
            t->check_ip = 1;
        } else if (inet_pton(AF_INET6, hostname, &a6) == 1) {
            memcpy(t->ip, &a6, 16);
            t->iplen = 16;
            t->check_ip = 1;
        } else {
            r = mbedtls_ssl_set_hostname(&t->ssl, hostname);
        }
        if (t->check_ip && ctx->verify) mbedtls_ssl_set_verify(&t->ssl, verify_ip, t);
    }
    if (r != 0) {
        mbedtls_ssl_free(&t->ssl);
        free(t);
        return r == MBEDTLS_ERR_SSL_ALLOC_FAILED ? SG_ENOMEM : SG_ETLS;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    uv_idle_init(s->loop, &t->idle);
    t->idle.data = s;
    s->tls = t;
    return 0;
}

static void schedule(sg_tls_conn_t *t)
{
    uv_idle_start(&t->idle, on_idle);
}

/* Records the first fatal error. Callbacks are delivered later by the pump. */
static void tls_fail(sg_sock_t *s, int err, int mbed_err)
{
    sg_tls_conn_t *t = s->tls;
    if (t->err) return;
    if (mbed_err == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        err = SG_ECERT;
        t->vflags = mbedtls_ssl_get_verify_result(&t->ssl);
    }
    t->err = err;
    t->mbed_err = mbed_err;
    if (!s->closing) schedule(t);
}

static void update_reading(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    int want = !s->closing && !t->transport_err && !t->err && !t->read_done &&
               (!t->hs_done || s->reading);
    if (want == (int)t->tr_reading) return;
    int r = sg__sock_transport_read(s, want);
    if (r < 0 && want) {
        tls_fail(s, r, 0);
        return;
    }
    t->tr_reading = (unsigned)want;
}

static void on_tls_write(uv_write_t *req, int status);

static void tls_flush(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    if (t->out_inflight || t->out.bytes == 0 || s->closing) return;
    uv_buf_t iov[SG_TLS_IOV_MAX];
    size_t total;
    unsigned n = sg_bufq_iov(&t->out, iov, SG_TLS_IOV_MAX, 0, &total);
    uv_write_t *w = sg_xmalloc(sizeof(*w)); /* freed in on_tls_write (see sock.h) */
    w->data = s;
    int r = uv_write(w, &s->h.stream, iov, n, on_tls_write);
    if (r < 0) {
        free(w);
        tls_fail(s, r, 0);
        return;
    }
    t->out_inflight = total;
}

static void write_advance(sg_tls_conn_t *t, size_t n)
{
    while (n) {
        size_t left = t->wbufs[t->wi].len - t->woff;
        if (n < left) {
            t->woff += n;
            return;
        }
        n -= left;
        t->wi++;
        t->woff = 0;
    }
}

/* Encrypts the user's write while the outbox has room, then flushes. */
static void pump_write(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    if (s->writing && !t->wall && t->hs_done && !t->err) {
        int mp = mbedtls_ssl_get_max_out_record_payload(&t->ssl);
        size_t maxp = mp > 0 ? (size_t)mp : SG_TLS_PLAIN_CAP;
        while (t->out.bytes < SG_TLS_OUT_CAP) {
            while (t->wi < t->nw && t->wbufs[t->wi].len == t->woff) {
                t->wi++;
                t->woff = 0;
            }
            if (t->wi == t->nw) {
                t->wall = 1;
                t->wmark = t->out_total;
                break;
            }
            const uv_buf_t *b = &t->wbufs[t->wi];
            size_t left = b->len - t->woff;
            const unsigned char *p;
            size_t n;
            if (left >= maxp || t->wi + 1 == t->nw) {
                p = (const unsigned char *)b->base + t->woff;
                n = SG_MIN(left, maxp);
            } else { /* coalesce small buffers into one record */
                if (!t->stage) t->stage = sg_xmalloc(maxp);
                unsigned i = t->wi;
                size_t off = t->woff;
                n = 0;
                while (n < maxp && i < t->nw) {
                    size_t l = SG_MIN(t->wbufs[i].len - off, maxp - n);
                    memcpy(t->stage + n, t->wbufs[i].base + off, l);
                    n += l;
                    off += l;
                    if (off == t->wbufs[i].len) {
                        i++;
                        off = 0;
                    }
                }
                p = t->stage;
            }
            int r = mbedtls_ssl_write(&t->ssl, p, n);
            if (r < 0) { /* the BIO never blocks, so this is fatal */
                tls_fail(s, SG_ETLS, r);
                break;
            }
            write_advance(t, (size_t)r);
        }
    }
    tls_flush(s);
}

static void release_wbufs(sg_tls_conn_t *t)
{
    if (t->wbufs != t->wsmall) free(t->wbufs);
    t->wbufs = NULL;
    t->nw = 0;
}

static void finish_write(sg_sock_t *s, int status)
{
    sg_tls_conn_t *t = s->tls;
    sg_sock_write_cb cb = s->write_cb;
    s->writing = 0;
    s->write_cb = NULL;
    release_wbufs(t);
    if (cb) cb(s, status);
}

static int write_complete(const sg_sock_t *s)
{
    const sg_tls_conn_t *t = s->tls;
    return s->writing && t->wall && t->out_done >= t->wmark;
}

int sg__tls_write(sg_sock_t *s, const uv_buf_t *bufs, unsigned nbufs, sg_sock_write_cb cb)
{
    sg_tls_conn_t *t = s->tls;
    if (t->err) return t->err;
    t->wbufs = nbufs <= SG_ARRAY_SIZE(t->wsmall) ? t->wsmall : sg_xmalloc(nbufs * sizeof(*bufs));
    if (nbufs) memcpy(t->wbufs, bufs, nbufs * sizeof(*bufs));
    t->nw = nbufs;
    t->wi = 0;
    t->woff = 0;
    t->wall = 0;
    s->write_cb = cb;
    s->writing = 1;
    pump_write(s); /* before the handshake: waits; tls_pump picks it up */
    if (write_complete(s) || t->err) schedule(t); /* no uv_write callback will come */
    return 0;
}

static void on_tls_write(uv_write_t *req, int status)
{
    sg_sock_t *s = req->data;
    free(req);
    sg_tls_conn_t *t = s->tls;
    sg_bufq_consume(&t->out, t->out_inflight);
    t->out_done += t->out_inflight;
    t->out_inflight = 0;
    if (s->closing) {
        if (s->writing) finish_write(s, write_complete(s) ? 0 : (status < 0 ? status : UV_ECANCELED));
        return;
    }
    if (status < 0) tls_fail(s, status, 0);
    tls_pump(s);
}

/* Delivers the final read callback (nread < 0). */
static void end_read(sg_sock_t *s, int code)
{
    sg_tls_conn_t *t = s->tls;
    t->read_done = 1;
    s->eof = 1;
    s->reading = 0;
    if (s->read_cb) s->read_cb(s, code, NULL);
}

static void pump_read(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    while (s->reading && !s->closing && !t->read_done && !t->err) {
        if (!t->plain) t->plain = sg_xmalloc(SG_TLS_PLAIN_CAP);
        int r = mbedtls_ssl_read(&t->ssl, t->plain, SG_TLS_PLAIN_CAP);
        if (r > 0) {
            s->read_cb(s, r, (const char *)t->plain);
            continue;
        }
        if (r == MBEDTLS_ERR_SSL_WANT_READ) {
            /* Everything buffered was consumed; the transport decides what comes next. */
            if (t->transport_err) end_read(s, t->transport_err);
            break;
        }
        if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            end_read(s, UV_EOF);
            break;
        }
        tls_fail(s, SG_ETLS, r);
    }
}

static void handshake(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    int r = mbedtls_ssl_handshake(&t->ssl);
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
        if (t->transport_err) tls_fail(s, SG_ETLS, 0); /* peer went away mid-handshake */
        return;
    }
    if (r != 0) {
        tls_fail(s, SG_ETLS, r);
        return;
    }
    t->hs_done = 1;
    if (s->connect_cb) {
        tls_flush(s); /* our Finished goes out before the user writes */
        sg__sock_connect_done(s, 0);
    } else {
        s->connected = 1;
    }
}

/* The driver: runs only from libuv callbacks, so user callbacks never nest in user calls. */
static void tls_pump(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    if (s->closing) return;
    if (!t->hs_done && !t->err) {
        handshake(s);
        if (s->closing) return;
    }
    if (t->hs_done && !t->err) {
        pump_write(s);
        if (write_complete(s)) {
            finish_write(s, 0);
            if (s->closing) return;
        }
        pump_read(s);
        if (s->closing) return;
    }
    if (t->err) {
        tls_flush(s); /* the alert, if mbedTLS queued one, before the user may close */
        if (s->connect_cb) {
            sg__sock_connect_done(s, t->err);
            if (s->closing) return;
        }
        if (s->writing && !t->out_inflight) {
            finish_write(s, t->err);
            if (s->closing) return;
        }
        if (s->reading && !t->read_done) {
            end_read(s, t->err);
            if (s->closing) return;
        }
    }
    tls_flush(s);
    update_reading(s);
}

static void on_idle(uv_idle_t *h)
{
    sg_sock_t *s = h->data;
    uv_idle_stop(h);
    tls_pump(s);
}

void sg__tls_start(sg_sock_t *s)
{
    update_reading(s);
    schedule(s->tls); /* the client speaks first; the server just waits for it */
}

void sg__tls_alloc(sg_sock_t *s, uv_buf_t *buf)
{
    sg_tls_conn_t *t = s->tls;
    if (t->in_cap - t->in_len < SG_TLS_IN_MIN_FREE) {
        if (t->in_off) {
            memmove(t->in, t->in + t->in_off, t->in_len - t->in_off);
            t->in_len -= t->in_off;
            t->in_off = 0;
        }
        if (t->in_cap - t->in_len < SG_TLS_IN_MIN_FREE) {
            t->in_cap = t->in_cap ? t->in_cap * 2 : SG_TLS_IN_CHUNK;
            t->in = sg_xrealloc(t->in, t->in_cap);
        }
    }
    *buf = uv_buf_init((char *)t->in + t->in_len, (unsigned)(t->in_cap - t->in_len));
}

void sg__tls_on_read(sg_sock_t *s, ssize_t nread)
{
    sg_tls_conn_t *t = s->tls;
    if (nread > 0) t->in_len += (size_t)nread;
    else if (nread < 0 && !t->transport_err) t->transport_err = (int)nread;
    else if (nread == 0) return;
    tls_pump(s);
}

int sg__tls_read_start(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    s->reading = 1;
    if (t->err || t->transport_err || t->in_len > t->in_off ||
        mbedtls_ssl_get_bytes_avail(&t->ssl) || mbedtls_ssl_check_pending(&t->ssl))
        schedule(t); /* deliver what is already here without waiting for the socket */
    update_reading(s);
    return 0;
}

int sg__tls_read_stop(sg_sock_t *s)
{
    s->reading = 0;
    update_reading(s);
    return 0;
}

static void on_idle_close(uv_handle_t *h)
{
    sg__sock_close_step(h->data);
}

int sg__tls_close(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    if (!t->out_inflight) {
        /* Best effort, never waited for: close_notify (or a queued alert), whatever the
         * kernel takes now. Behind a write in flight it could not go out in order. */
        if (t->hs_done && !t->err && !t->transport_err && !t->read_done)
            mbedtls_ssl_close_notify(&t->ssl);
        uv_buf_t iov[SG_TLS_IOV_MAX];
        size_t total;
        unsigned n = sg_bufq_iov(&t->out, iov, SG_TLS_IOV_MAX, 0, &total);
        if (n) (void)uv_try_write(&s->h.stream, iov, n);
    }
    uv_idle_stop(&t->idle);
    uv_close((uv_handle_t *)&t->idle, on_idle_close);
    return 1;
}

void sg__tls_conn_free(sg_sock_t *s)
{
    sg_tls_conn_t *t = s->tls;
    mbedtls_ssl_free(&t->ssl);
    sg_bufq_free(&t->out);
    release_wbufs(t);
    free(t->in);
    free(t->plain);
    free(t->stage);
    free(t);
    s->tls = NULL;
}

const char *sg__tls_error(const sg_sock_t *s, char *buf, size_t len)
{
    const sg_tls_conn_t *t = s->tls;
    if (!len) return buf;
    buf[0] = '\0';
    if (t->err == SG_ECERT) {
        char info[512];
        int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", t->vflags);
        for (int i = 0; i < n && info[i]; i++)
            if (info[i] == '\n') info[i] = (i + 1 < n && info[i + 1]) ? ';' : '\0';
        snprintf(buf, len, "certificate verification failed: %s", n > 0 ? info : "unknown");
    } else if (t->mbed_err) {
        char m[200];
        mbedtls_strerror(t->mbed_err, m, sizeof(m));
        snprintf(buf, len, "TLS: %s (-0x%04x)", m, (unsigned)-t->mbed_err);
    } else if (t->err) {
        snprintf(buf, len, "TLS: %s", t->transport_err ? (t->transport_err == UV_EOF ?
                 "connection closed during handshake" : uv_strerror(t->transport_err))
                 : sg_strerror(t->err));
    }
    return buf;
}
