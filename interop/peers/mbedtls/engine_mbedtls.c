/*
 * mbedTLS 2.28 engine: mbedtls_ssl_set_bio() with memory callbacks. TLS 1.2 only.
 * Exporter (RFC 5705): mbedTLS 2.28 has no exporter API, so the master secret and
 * randoms are captured with mbedtls_ssl_conf_export_keys_ext_cb() and the exporter is
 *   PRF(master_secret, label, client_random + server_random [+ uint16 len + context])
 * computed with mbedtls_ssl_tls_prf() and the session's PRF hash; the same holds in DTLS 1.2.
 * DTLS (dtls12): MBEDTLS_SSL_TRANSPORT_DATAGRAM, mbedtls_ssl_set_mtu(1024), one record per
 * recv, and the mandatory timer (mbedtls_ssl_set_timer_cb) as one that never expires:
 * HTTP answers every flight, so nothing is retransmitted. The server answers a first
 * ClientHello with a HelloVerifyRequest: mbedtls_ssl_cookie_* (one context for all
 * sessions, so a fresh session checks the returned cookie) over the client's address
 * (mbedtls_ssl_set_client_transport_id).
 */
#define _GNU_SOURCE
#include "atls_peer.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cookie.h>
#include <mbedtls/ssl_internal.h> /* 2.28: handshake->ecdh_ctx.point_format (see conn_handshake) */
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(MBEDTLS_SSL_EXPORT_KEYS) || !defined(MBEDTLS_SSL_PROTO_TLS1_2)
#error "this mbedTLS build lacks MBEDTLS_SSL_EXPORT_KEYS or TLS 1.2"
#endif
#if defined(MBEDTLS_SSL_PROTO_DTLS) && defined(MBEDTLS_SSL_DTLS_HELLO_VERIFY) && defined(MBEDTLS_SSL_COOKIE_C)
#define HAVE_DTLS 1
#else
#define HAVE_DTLS 0
#endif

struct atls_engine {
    const atls_cfg *cfg;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca, own;
    mbedtls_pk_context key;
#if HAVE_DTLS
    mbedtls_ssl_cookie_ctx cookies; /* DTLS server: HelloVerifyRequest cookies */
#endif
    atls_conn *current; /* the session whose handshake is running (the export callback has no ssl) */
};

struct atls_conn {
    atls_engine *eng;
    mbedtls_ssl_context ssl;
    abuf in, out;
    int out_overflow;
    int have_keys;
    unsigned char ms[48];
    unsigned char randoms[64]; /* client_random || server_random */
    uint32_t timer_fin_ms;     /* DTLS timer: 0 cancelled; it never expires */
    mbedtls_tls_prf_types prf;
    char err[512];
    char alert[64];
};

const char *engine_name(void) { return "mbedtls"; }

const char *engine_stack_version(void)
{
    static char v[64];
    char s[18] = "";
    mbedtls_version_get_string(s);
    snprintf(v, sizeof(v), "mbedTLS %s", s);
    return v;
}

const char *engine_unsupported(const atls_cfg *cfg)
{
    if (cfg->dtls && !HAVE_DTLS)
        return "dtls12: this mbedTLS build lacks MBEDTLS_SSL_PROTO_DTLS, MBEDTLS_SSL_DTLS_HELLO_VERIFY or "
               "MBEDTLS_SSL_COOKIE_C";
    if (cfg->chacha_only)
        return "chacha20 needs TLS 1.3 (TLS_CHACHA20_POLY1305_SHA256); mbedTLS 2.28 has no TLS 1.3 "
               "(MBEDTLS_SSL_PROTO_TLS1_3_EXPERIMENTAL is off in Debian's 2.28.3 and incomplete in 2.28)";
    if (cfg->tls_min == 13)
        return "needs TLS 1.3; mbedTLS 2.28 has no TLS 1.3 (MBEDTLS_SSL_PROTO_TLS1_3_EXPERIMENTAL is off in "
               "Debian's 2.28.3 and incomplete in 2.28; TLS 1.3 came with mbedTLS 3.x)";
    return NULL;
}

static void mbed_err(char *buf, size_t n, const char *what, int r)
{
    char es[200] = "";
    mbedtls_strerror(r, es, sizeof(es));
    snprintf(buf, n, "%s: -0x%04x %s", what, (unsigned int)-r, es);
}

static int export_keys_cb(void *p, const unsigned char *ms, const unsigned char *kb, size_t maclen, size_t keylen,
                          size_t ivlen, const unsigned char client_random[32], const unsigned char server_random[32],
                          mbedtls_tls_prf_types prf)
{
    (void)kb;
    (void)maclen;
    (void)keylen;
    (void)ivlen;
    atls_engine *e = p;
    atls_conn *c = e->current;
    if (!c)
        return 0;
    memcpy(c->ms, ms, sizeof(c->ms));
    memcpy(c->randoms, client_random, 32);
    memcpy(c->randoms + 32, server_random, 32);
    c->prf = prf;
    c->have_keys = 1;
    keylog_line(e->cfg->keylog_file, "CLIENT_RANDOM", client_random, 32, ms, 48);
    return 0;
}

void engine_thread_release(void) {}

atls_engine *engine_new(const atls_cfg *cfg, char *err, size_t errlen)
{
    int r;
    atls_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->cfg = cfg;
    mbedtls_entropy_init(&e->entropy);
    mbedtls_ctr_drbg_init(&e->drbg);
    mbedtls_ssl_config_init(&e->conf);
    mbedtls_x509_crt_init(&e->ca);
    mbedtls_x509_crt_init(&e->own);
    mbedtls_pk_init(&e->key);
#if HAVE_DTLS
    mbedtls_ssl_cookie_init(&e->cookies);
#endif
    static const unsigned char pers[] = "atls-interop-mbedtls";
    if ((r = mbedtls_ctr_drbg_seed(&e->drbg, mbedtls_entropy_func, &e->entropy, pers, sizeof(pers) - 1)) != 0) {
        mbed_err(err, errlen, "mbedtls_ctr_drbg_seed", r);
        goto fail;
    }
    if ((r = mbedtls_ssl_config_defaults(&e->conf, cfg->is_server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                         cfg->dtls ? MBEDTLS_SSL_TRANSPORT_DATAGRAM : MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
        mbed_err(err, errlen, "mbedtls_ssl_config_defaults", r);
        goto fail;
    }
    /* (3, 3) is TLS 1.2, and DTLS 1.2 on a datagram transport */
    mbedtls_ssl_conf_min_version(&e->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&e->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#if HAVE_DTLS
    if (cfg->dtls) {
        mbedtls_ssl_conf_handshake_timeout(&e->conf, 60000, 120000); /* moot: the timer never expires */
        if (cfg->is_server) {
            if ((r = mbedtls_ssl_cookie_setup(&e->cookies, mbedtls_ctr_drbg_random, &e->drbg)) != 0) {
                mbed_err(err, errlen, "mbedtls_ssl_cookie_setup", r);
                goto fail;
            }
            mbedtls_ssl_conf_dtls_cookies(&e->conf, mbedtls_ssl_cookie_write, mbedtls_ssl_cookie_check, &e->cookies);
        }
    }
#endif
    mbedtls_ssl_conf_rng(&e->conf, mbedtls_ctr_drbg_random, &e->drbg);
    if ((r = mbedtls_x509_crt_parse_file(&e->ca, cfg->ca_pem)) != 0) {
        if (r > 0)
            snprintf(err, errlen, "loading ca.pem: %d certificate(s) failed to parse", r);
        else
            mbed_err(err, errlen, "loading ca.pem", r);
        goto fail;
    }
    mbedtls_ssl_conf_ca_chain(&e->conf, &e->ca, NULL);
    if (cfg->have_own_cert) {
        if ((r = mbedtls_x509_crt_parse_file(&e->own, cfg->cert_pem)) != 0) {
            if (r > 0)
                snprintf(err, errlen, "loading cert.pem: %d certificate(s) failed to parse", r);
            else
                mbed_err(err, errlen, "loading cert.pem", r);
            goto fail;
        }
        if ((r = mbedtls_pk_parse_keyfile(&e->key, cfg->key_pem, NULL)) != 0) {
            mbed_err(err, errlen, "loading key.pem", r);
            goto fail;
        }
        if ((r = mbedtls_ssl_conf_own_cert(&e->conf, &e->own, &e->key)) != 0) {
            mbed_err(err, errlen, "mbedtls_ssl_conf_own_cert", r);
            goto fail;
        }
    }
    mbedtls_ssl_conf_authmode(&e->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_export_keys_ext_cb(&e->conf, export_keys_cb, e);
    return e;
fail:
    engine_free(e);
    return NULL;
}

void engine_free(atls_engine *e)
{
    if (!e)
        return;
    mbedtls_ssl_config_free(&e->conf);
    mbedtls_x509_crt_free(&e->ca);
    mbedtls_x509_crt_free(&e->own);
    mbedtls_pk_free(&e->key);
#if HAVE_DTLS
    mbedtls_ssl_cookie_free(&e->cookies);
#endif
    mbedtls_ctr_drbg_free(&e->drbg);
    mbedtls_entropy_free(&e->entropy);
    free(e);
}

static int bio_send(void *ud, const unsigned char *buf, size_t len)
{
    atls_conn *c = ud;
    if (len > (size_t)0x7fffffff || abuf_put(&c->out, buf, len) != 0) {
        c->out_overflow = 1;
        return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    }
    return (int)len;
}

static int bio_recv(void *ud, unsigned char *buf, size_t len)
{
    atls_conn *c = ud;
    if (abuf_avail(&c->in) == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (len > (size_t)0x7fffffff)
        len = 0x7fffffff;
    return (int)atls_pull(&c->in, c->eng->cfg->dtls, buf, len); /* DTLS: one record */
}

/* The DTLS timer mbedTLS insists on: it runs but never expires (HTTP answers every flight). */
static void timer_set(void *ud, uint32_t int_ms, uint32_t fin_ms)
{
    (void)int_ms;
    ((atls_conn *)ud)->timer_fin_ms = fin_ms;
}

static int timer_get(void *ud) { return ((atls_conn *)ud)->timer_fin_ms == 0 ? -1 : 0; }

atls_conn *conn_new(atls_engine *e, const char *peer, char *err, size_t errlen)
{
    int r;
    atls_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->eng = e;
    mbedtls_ssl_init(&c->ssl);
    if ((r = mbedtls_ssl_setup(&c->ssl, &e->conf)) != 0) {
        mbed_err(err, errlen, "mbedtls_ssl_setup", r);
        goto fail;
    }
    if (!e->cfg->is_server && (r = mbedtls_ssl_set_hostname(&c->ssl, e->cfg->server_name)) != 0) {
        mbed_err(err, errlen, "mbedtls_ssl_set_hostname", r);
        goto fail;
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
#if HAVE_DTLS
    if (e->cfg->dtls) {
        mbedtls_ssl_set_timer_cb(&c->ssl, c, timer_set, timer_get);
        mbedtls_ssl_set_mtu(&c->ssl, ATLS_DTLS_MTU);
        const char *id = peer && *peer ? peer : "?";
        if (e->cfg->is_server &&
            (r = mbedtls_ssl_set_client_transport_id(&c->ssl, (const unsigned char *)id, strlen(id))) != 0) {
            mbed_err(err, errlen, "mbedtls_ssl_set_client_transport_id", r);
            goto fail;
        }
    }
#else
    (void)peer;
#endif
    return c;
fail:
    mbedtls_ssl_free(&c->ssl);
    free(c);
    return NULL;
}

void conn_free(atls_conn *c)
{
    if (!c)
        return;
    if (c->eng->current == c)
        c->eng->current = NULL;
    mbedtls_ssl_free(&c->ssl);
    abuf_free(&c->in);
    abuf_free(&c->out);
    mbedtls_platform_zeroize(c->ms, sizeof(c->ms));
    free(c);
}

int conn_feed(atls_conn *c, const unsigned char *data, size_t n)
{
    return abuf_put_said(&c->in, data, n, c->err, sizeof(c->err), "input");
}

static void set_failure(atls_conn *c, int r, const char *what)
{
    char es[200] = "", vi[300] = "";
    mbedtls_strerror(r, es, sizeof(es));
    uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
    if (flags != 0 && flags != (uint32_t)-1) {
        int n = mbedtls_x509_crt_verify_info(vi, sizeof(vi), "", flags);
        while (n > 0 && (vi[n - 1] == '\n'))
            vi[--n] = '\0';
        for (char *p = vi; *p; p++)
            if (*p == '\n')
                *p = ';';
    }
    snprintf(c->err, sizeof(c->err), "%s: -0x%04x %.150s%s%.250s", what, (unsigned int)-r, es,
             vi[0] ? "; certificate verification: " : "", vi);
}

int conn_handshake(atls_conn *c)
{
    /* mbedtls_ssl_handshake() step by step, to pin uncompressed EC points: 2.28 adopts the
     * first format the peer lists, and a peer listing compressed first (tlslite-ng) then
     * gets a compressed point it cannot parse. Uncompressed is the one format every peer
     * must support (RFC 4492 5.1.2; RFC 8422 allows nothing else). */
    int r = 0;
    c->eng->current = c;
    for (int steps = 0; c->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER && steps < 64; steps++) {
        if (c->ssl.handshake)
            c->ssl.handshake->ecdh_ctx.point_format = MBEDTLS_ECP_PF_UNCOMPRESSED;
        if ((r = mbedtls_ssl_handshake_step(&c->ssl)) != 0)
            break;
    }
    c->eng->current = NULL;
    if (r == 0 && c->ssl.state == MBEDTLS_SSL_HANDSHAKE_OVER)
        return 1;
    if (r == 0) {
        snprintf(c->err, sizeof(c->err), "handshake: no progress after 64 steps");
        return -1;
    }
    if ((r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) && !c->out_overflow)
        return 0;
#if HAVE_DTLS
    if (r == MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED && !c->out_overflow)
        return 0; /* the HelloVerifyRequest is in the output: the carrier sends it and drops this session */
#endif
    set_failure(c, r, "handshake");
    return -1;
}

int conn_take(atls_conn *c, abuf *out)
{
    return abuf_move(out, &c->out, c->err, sizeof(c->err));
}

int conn_write(atls_conn *c, const unsigned char *data, size_t n)
{
    size_t w = 0;
    for (int spins = 0; w < n; spins++) {
        int r = mbedtls_ssl_write(&c->ssl, data + w, n - w);
        if (r > 0) {
            w += (size_t)r;
            continue;
        }
        if ((r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ) && spins < 1000)
            continue;
        set_failure(c, r, "write");
        return -1;
    }
    return 0;
}

int conn_read(atls_conn *c, abuf *out)
{
    unsigned char tmp[16384];
    for (int spins = 0;; spins++) {
        if (spins > 10000) {
            snprintf(c->err, sizeof(c->err), "read: no progress");
            return -1;
        }
        int r = mbedtls_ssl_read(&c->ssl, tmp, sizeof(tmp));
        if (r > 0) {
            if (abuf_put(out, tmp, (size_t)r) != 0) {
                snprintf(c->err, sizeof(c->err), "application data over %u bytes", ATLS_MAX_FLIGHT);
                return -1;
            }
            continue;
        }
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
            if (abuf_avail(&c->in) > 0)
                continue;
            return 0;
        }
        if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            return 1;
        set_failure(c, r, "read");
        return -1;
    }
}

int conn_export(atls_conn *c, const char *label, const unsigned char *ctx, size_t ctx_len, int use_context,
                unsigned char *out, size_t out_len)
{
    if (!c->have_keys) {
        snprintf(c->err, sizeof(c->err), "exporter: the master secret was not captured");
        return -1;
    }
    if (use_context && ctx_len > 0xffff) {
        snprintf(c->err, sizeof(c->err), "exporter: context over 65535 bytes");
        return -1;
    }
    /* RFC 5705 section 4: seed = client_random + server_random [+ uint16 context_length + context] */
    size_t seed_len = 64 + (use_context ? 2 + ctx_len : 0);
    unsigned char *seed = malloc(seed_len);
    if (!seed) {
        snprintf(c->err, sizeof(c->err), "out of memory");
        return -1;
    }
    memcpy(seed, c->randoms, 64);
    if (use_context) {
        seed[64] = (unsigned char)(ctx_len >> 8);
        seed[65] = (unsigned char)(ctx_len & 0xff);
        if (ctx_len)
            memcpy(seed + 66, ctx, ctx_len);
    }
    int r = mbedtls_ssl_tls_prf(c->prf, c->ms, sizeof(c->ms), label, seed, seed_len, out, out_len);
    free(seed);
    if (r != 0) {
        mbed_err(c->err, sizeof(c->err), "mbedtls_ssl_tls_prf", r);
        return -1;
    }
    return 0;
}

const char *conn_version(atls_conn *c) { return mbedtls_ssl_get_version(&c->ssl); }
const char *conn_cipher(atls_conn *c) { return mbedtls_ssl_get_ciphersuite(&c->ssl); }
const char *conn_error(atls_conn *c) { return c->err[0] ? c->err : "unknown error"; }
const char *conn_alert(atls_conn *c) { return c->alert[0] ? c->alert : NULL; }
