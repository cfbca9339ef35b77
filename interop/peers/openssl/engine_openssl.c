/*
 * OpenSSL engine: one SSL per session over two memory BIOs (as in draft-00 Appendix B.1).
 * DTLS (dtls12): DTLS_client/server_method over the same memory BIOs. A memory BIO keeps
 * no datagram boundaries, so input waits in `in` and goes into the read BIO one record
 * (one datagram) at a time, when the SSL has read the previous one. The server answers a
 * first ClientHello with a stateless HelloVerifyRequest (DTLSv1_listen, HMAC cookie over
 * the client's address); the retransmission timer is set beyond any session's life (HTTP
 * answers every flight).
 */
#define _GNU_SOURCE
#include "atls_peer.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COOKIE_SLOT_S 60 /* a HelloVerifyRequest cookie is valid in its minute and the next */

struct atls_engine {
    SSL_CTX *ctx;
    const atls_cfg *cfg;
    unsigned char cookie_secret[32];
};

struct atls_conn {
    atls_engine *eng;
    SSL *ssl;
    BIO *rb, *wb; /* rb: bytes from the peer; wb: bytes for the peer */
    abuf in;      /* DTLS: records not yet in rb */
    int listening; /* DTLS server: no ClientHello with a valid cookie yet */
    char peer[64];
    char err[512];
    char alert[64];
};

static int g_conn_idx = -1;

const char *engine_name(void) { return "openssl"; }
const char *engine_stack_version(void) { return OpenSSL_version(OPENSSL_VERSION); }

const char *engine_unsupported(const atls_cfg *cfg)
{
    (void)cfg;
    return NULL; /* every contract test case */
}

static void errq(char *buf, size_t n, const char *what)
{
    unsigned long e = ERR_get_error();
    char es[256] = "";
    if (e)
        ERR_error_string_n(e, es, sizeof(es));
    snprintf(buf, n, "%s%s%s", what, e ? ": " : "", es);
    ERR_clear_error();
}

static void keylog_cb(const SSL *ssl, const char *line)
{
    atls_conn *c = SSL_get_ex_data(ssl, g_conn_idx);
    if (c)
        keylog_raw(c->eng->cfg->keylog_file, line);
}

static void info_cb(const SSL *ssl, int where, int ret)
{
    if (!(where & SSL_CB_ALERT))
        return;
    atls_conn *c = SSL_get_ex_data(ssl, g_conn_idx);
    if (c && !c->alert[0] && (ret >> 8) == SSL3_AL_FATAL)
        snprintf(c->alert, sizeof(c->alert), "%s", tls_alert_name(ret & 0xff));
}

void engine_thread_release(void) {}

/* DTLS cookie: HMAC-SHA256(secret, client address | time slot), 16 bytes. */
static int cookie_for(atls_conn *c, long slot, unsigned char out[16])
{
    char msg[96];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    int n = snprintf(msg, sizeof(msg), "%s|%ld", c->peer, slot);
    if (!HMAC(EVP_sha256(), c->eng->cookie_secret, sizeof(c->eng->cookie_secret), (const unsigned char *)msg,
              (size_t)n, mac, &maclen) ||
        maclen < 16)
        return 0;
    memcpy(out, mac, 16);
    return 1;
}

static int cookie_generate_cb(SSL *ssl, unsigned char *cookie, unsigned int *len)
{
    atls_conn *c = SSL_get_ex_data(ssl, g_conn_idx);
    if (!c || !cookie_for(c, (long)(time(NULL) / COOKIE_SLOT_S), cookie))
        return 0;
    *len = 16;
    return 1;
}

static int cookie_verify_cb(SSL *ssl, const unsigned char *cookie, unsigned int len)
{
    atls_conn *c = SSL_get_ex_data(ssl, g_conn_idx);
    long now = (long)(time(NULL) / COOKIE_SLOT_S);
    unsigned char want[16];
    if (!c || len != 16)
        return 0;
    for (long slot = now; slot >= now - 1; slot--)
        if (cookie_for(c, slot, want) && CRYPTO_memcmp(want, cookie, 16) == 0)
            return 1;
    return 0;
}

/* The retransmission timer: HTTP answers every flight, so it never needs to fire. */
static unsigned int dtls_timer_cb(SSL *ssl, unsigned int timer_us)
{
    (void)ssl;
    (void)timer_us;
    return 600u * 1000000u;
}

atls_engine *engine_new(const atls_cfg *cfg, char *err, size_t errlen)
{
    if (g_conn_idx < 0)
        g_conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    atls_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->cfg = cfg;
    if (cfg->dtls)
        e->ctx = SSL_CTX_new(cfg->is_server ? DTLS_server_method() : DTLS_client_method());
    else
        e->ctx = SSL_CTX_new(cfg->is_server ? TLS_server_method() : TLS_client_method());
    if (!e->ctx) {
        errq(err, errlen, "SSL_CTX_new");
        goto fail;
    }
    int vmin = cfg->tls_min == 13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    int vmax = cfg->tls_max == 13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (cfg->dtls) {
        vmin = vmax = DTLS1_2_VERSION;
        /* a memory BIO knows no MTU: ours is set per SSL (SSL_set_mtu in conn_new) */
        SSL_CTX_set_options(e->ctx, SSL_OP_NO_QUERY_MTU);
        if (cfg->is_server) {
            if (RAND_bytes(e->cookie_secret, sizeof(e->cookie_secret)) != 1) {
                errq(err, errlen, "RAND_bytes");
                goto fail;
            }
            SSL_CTX_set_cookie_generate_cb(e->ctx, cookie_generate_cb);
            SSL_CTX_set_cookie_verify_cb(e->ctx, cookie_verify_cb);
        }
    }
    if (!SSL_CTX_set_min_proto_version(e->ctx, vmin) || !SSL_CTX_set_max_proto_version(e->ctx, vmax)) {
        errq(err, errlen, "protocol versions");
        goto fail;
    }
    if (cfg->chacha_only && !SSL_CTX_set_ciphersuites(e->ctx, "TLS_CHACHA20_POLY1305_SHA256")) {
        errq(err, errlen, "SSL_CTX_set_ciphersuites");
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(e->ctx, cfg->ca_pem, NULL) != 1) {
        errq(err, errlen, "loading ca.pem");
        goto fail;
    }
    if (cfg->have_own_cert) {
        if (SSL_CTX_use_certificate_chain_file(e->ctx, cfg->cert_pem) != 1) {
            errq(err, errlen, "loading cert.pem");
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(e->ctx, cfg->key_pem, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(e->ctx) != 1) {
            errq(err, errlen, "loading key.pem");
            goto fail;
        }
    }
    SSL_CTX_set_verify(e->ctx,
                       cfg->is_server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER, NULL);
    if (cfg->is_server) {
        static const unsigned char sid[] = "atls-interop-openssl";
        SSL_CTX_set_session_id_context(e->ctx, sid, sizeof(sid) - 1);
    }
    if (cfg->keylog_file)
        SSL_CTX_set_keylog_callback(e->ctx, keylog_cb);
    SSL_CTX_set_info_callback(e->ctx, info_cb);
    return e;
fail:
    engine_free(e);
    return NULL;
}

void engine_free(atls_engine *e)
{
    if (!e)
        return;
    SSL_CTX_free(e->ctx);
    free(e);
}

atls_conn *conn_new(atls_engine *e, const char *peer, char *err, size_t errlen)
{
    atls_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->eng = e;
    c->ssl = SSL_new(e->ctx);
    c->rb = BIO_new(BIO_s_mem());
    c->wb = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rb || !c->wb) {
        errq(err, errlen, "SSL_new/BIO_new");
        BIO_free(c->rb);
        BIO_free(c->wb);
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    SSL_set_bio(c->ssl, c->rb, c->wb); /* the SSL owns the BIOs now */
    SSL_set_ex_data(c->ssl, g_conn_idx, c);
    snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "");
    if (e->cfg->dtls) {
        if (!SSL_set_mtu(c->ssl, ATLS_DTLS_MTU)) {
            errq(err, errlen, "SSL_set_mtu");
            SSL_free(c->ssl);
            free(c);
            return NULL;
        }
        DTLS_set_timer_cb(c->ssl, dtls_timer_cb);
        c->listening = e->cfg->is_server;
    }
    if (e->cfg->is_server) {
        SSL_set_accept_state(c->ssl);
    } else {
        const char *name = e->cfg->server_name;
        unsigned char ip[16];
        int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name)
                       : (SSL_set_tlsext_host_name(c->ssl, name) && SSL_set1_host(c->ssl, name));
        if (!ok) {
            errq(err, errlen, "setting the expected server name");
            SSL_free(c->ssl);
            free(c);
            return NULL;
        }
        SSL_set_connect_state(c->ssl);
    }
    return c;
}

void conn_free(atls_conn *c)
{
    if (!c)
        return;
    SSL_free(c->ssl);
    abuf_free(&c->in);
    free(c);
}

/* DTLS: when the SSL has read everything in rb, move the next record (datagram) there.
 * 1: a record moved, 0: none left, -1: failure. */
static int next_datagram(atls_conn *c)
{
    unsigned char rec[16384 + 2048 + ATLS_DTLS_HEADER];
    if (!c->eng->cfg->dtls || BIO_ctrl_pending(c->rb) > 0)
        return 0;
    size_t n = atls_pull(&c->in, 1, rec, sizeof(rec));
    if (n == 0)
        return 0;
    if (BIO_write(c->rb, rec, (int)n) != (int)n) {
        errq(c->err, sizeof(c->err), "BIO_write");
        return -1;
    }
    return 1;
}

int conn_feed(atls_conn *c, const unsigned char *data, size_t n)
{
    if (c->eng->cfg->dtls)
        return abuf_put_said(&c->in, data, n, c->err, sizeof(c->err), "input");
    if (BIO_ctrl_pending(c->rb) + n > ATLS_MAX_FLIGHT) {
        snprintf(c->err, sizeof(c->err), "input over %u bytes", ATLS_MAX_FLIGHT);
        return -1;
    }
    if (n && BIO_write(c->rb, data, (int)n) != (int)n) {
        errq(c->err, sizeof(c->err), "BIO_write");
        return -1;
    }
    return 0;
}

static void set_failure(atls_conn *c, int ret, const char *what)
{
    int e = SSL_get_error(c->ssl, ret);
    unsigned long q = ERR_peek_error();
    char es[256] = "";
    if (q)
        ERR_error_string_n(q, es, sizeof(es));
    ERR_clear_error();
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK)
        snprintf(c->err, sizeof(c->err), "%s: certificate verification failed: %s (%s)", what,
                 X509_verify_cert_error_string(vr), es);
    else
        snprintf(c->err, sizeof(c->err), "%s: SSL error %d: %s%s%s", what, e, es[0] ? es : "no detail",
                 c->alert[0] ? "; alert " : "", c->alert);
}

/* DTLS server: a ClientHello without a valid cookie gets a HelloVerifyRequest and leaves
 * nothing behind. 1: a verified ClientHello is in the SSL; 0: more input needed or a
 * HelloVerifyRequest is in the output; -1 failure. */
static int listen_step(atls_conn *c)
{
    BIO_ADDR *addr = BIO_ADDR_new();
    if (!addr) {
        snprintf(c->err, sizeof(c->err), "out of memory");
        return -1;
    }
    int result = 0;
    for (int spins = 0;; spins++) {
        int m = next_datagram(c);
        if (spins > 10000) {
            snprintf(c->err, sizeof(c->err), "DTLSv1_listen: no progress");
            m = -1;
        }
        if (m < 0) {
            result = -1;
            break;
        }
        if (m == 0 && BIO_ctrl_pending(c->rb) == 0) {
            result = 0;
            break;
        }
        int r = DTLSv1_listen(c->ssl, addr); /* reads one datagram */
        if (r > 0) {
            c->listening = 0;
            result = 1;
            break;
        }
        if (r < 0) {
            set_failure(c, r, "DTLSv1_listen");
            result = -1;
            break;
        }
        ERR_clear_error();
        if (BIO_ctrl_pending(c->wb) > 0) {
            result = 0; /* the carrier sends it and drops this session */
            break;
        }
    }
    BIO_ADDR_free(addr);
    return result;
}

int conn_handshake(atls_conn *c)
{
    if (c->listening) {
        int l = listen_step(c);
        if (l != 1)
            return l;
    }
    for (int spins = 0;; spins++) {
        int m = next_datagram(c);
        if (m < 0)
            return -1;
        if (spins > 10000) { /* every turn takes a record: bounded by the input */
            snprintf(c->err, sizeof(c->err), "handshake: no progress");
            return -1;
        }
        int r = SSL_do_handshake(c->ssl);
        if (r == 1)
            return 1;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            if (c->eng->cfg->dtls && abuf_avail(&c->in) > 0)
                continue; /* the next record */
            return 0;
        }
        set_failure(c, r, "handshake");
        return -1;
    }
}

int conn_take(atls_conn *c, abuf *out)
{
    unsigned char tmp[16384];
    for (;;) {
        int n = BIO_read(c->wb, tmp, sizeof(tmp));
        if (n <= 0)
            return 0;
        if (abuf_put(out, tmp, (size_t)n) != 0) {
            snprintf(c->err, sizeof(c->err), "output over %u bytes", ATLS_MAX_FLIGHT);
            return -1;
        }
    }
}

int conn_write(atls_conn *c, const unsigned char *data, size_t n)
{
    size_t w = 0;
    if (n > ATLS_MAX_FLIGHT)
        return -1;
    if (SSL_write_ex(c->ssl, data, n, &w) != 1 || w != n) {
        set_failure(c, 0, "write");
        return -1;
    }
    return 0;
}

int conn_read(atls_conn *c, abuf *out)
{
    unsigned char tmp[16384];
    for (int spins = 0;; spins++) {
        if (next_datagram(c) < 0)
            return -1;
        if (spins > 100000) {
            snprintf(c->err, sizeof(c->err), "read: no progress");
            return -1;
        }
        size_t n = 0;
        int r = SSL_read_ex(c->ssl, tmp, sizeof(tmp), &n);
        if (r == 1) {
            if (abuf_put(out, tmp, n) != 0) {
                snprintf(c->err, sizeof(c->err), "application data over %u bytes", ATLS_MAX_FLIGHT);
                return -1;
            }
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            if (c->eng->cfg->dtls && abuf_avail(&c->in) > 0)
                continue;
            return 0;
        }
        if (e == SSL_ERROR_ZERO_RETURN)
            return 1;
        set_failure(c, r, "read");
        return -1;
    }
}

int conn_export(atls_conn *c, const char *label, const unsigned char *ctx, size_t ctx_len, int use_context,
                unsigned char *out, size_t out_len)
{
    if (SSL_export_keying_material(c->ssl, out, out_len, label, strlen(label), ctx, ctx_len, use_context) != 1) {
        errq(c->err, sizeof(c->err), "SSL_export_keying_material");
        return -1;
    }
    return 0;
}

const char *conn_version(atls_conn *c) { return SSL_get_version(c->ssl); }
const char *conn_cipher(atls_conn *c) { return SSL_get_cipher_name(c->ssl); }
const char *conn_error(atls_conn *c) { return c->err[0] ? c->err : "unknown error"; }
const char *conn_alert(atls_conn *c) { return c->alert[0] ? c->alert : NULL; }
