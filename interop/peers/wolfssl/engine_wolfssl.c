/* wolfSSL engine: custom I/O callbacks (wolfSSL_SSLSetIORecv/Send) over memory buffers. */
#define _GNU_SOURCE
#include "atls_peer.h"

#include <wolfssl/options.h> /* Debian's build configuration: must come first */
#include <wolfssl/ssl.h>
#include <wolfssl/wolfio.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(WOLFSSL_TLS13) || !defined(HAVE_KEYING_MATERIAL)
#error "this wolfSSL build lacks TLS 1.3 or the keying material exporter"
#endif

struct atls_engine {
    WOLFSSL_CTX *ctx;
    const atls_cfg *cfg;
    unsigned char cookie_secret[32]; /* DTLS server: one for all sessions (stateless HelloVerifyRequest) */
};

struct atls_conn {
    atls_engine *eng;
    WOLFSSL *ssl;
    abuf in, out;
    int out_overflow;
    char err[512];
    char alert[64];
};

const char *engine_name(void) { return "wolfssl"; }

const char *engine_stack_version(void)
{
    static char v[64];
    snprintf(v, sizeof(v), "wolfSSL %s", wolfSSL_lib_version());
    return v;
}

const char *engine_unsupported(const atls_cfg *cfg)
{
    (void)cfg;
    return NULL;
}

static void errstr(char *buf, size_t n, const char *what, int code)
{
    char es[WOLFSSL_MAX_ERROR_SZ] = "";
    wolfSSL_ERR_error_string_n((unsigned long)code, es, sizeof(es));
    snprintf(buf, n, "%s: error %d: %s", what, code, es);
}

/* Debian builds wolfSSL with FP_ECC: a per-thread fixed-point cache (several MB) that
 * wolfSSL_Cleanup() frees only for its own thread. The server's HTTP thread does the
 * ECC work, so release its cache there after each request. */
void engine_thread_release(void)
{
#ifdef FP_ECC
    wc_ecc_fp_free();
#endif
}

atls_engine *engine_new(const atls_cfg *cfg, char *err, size_t errlen)
{
    int r;
    if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
        snprintf(err, errlen, "wolfSSL_Init failed");
        return NULL;
    }
    atls_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "out of memory");
        wolfSSL_Cleanup();
        return NULL;
    }
    e->cfg = cfg;
    WOLFSSL_METHOD *m;
    if (cfg->dtls)
        m = cfg->is_server ? wolfDTLSv1_2_server_method() : wolfDTLSv1_2_client_method();
    else if (cfg->tls_min == 13)
        m = cfg->is_server ? wolfTLSv1_3_server_method() : wolfTLSv1_3_client_method();
    else if (cfg->tls_max == 12)
        m = cfg->is_server ? wolfTLSv1_2_server_method() : wolfTLSv1_2_client_method();
    else
        m = cfg->is_server ? wolfSSLv23_server_method() : wolfSSLv23_client_method();
    e->ctx = m ? wolfSSL_CTX_new(m) : NULL;
    if (!e->ctx) {
        snprintf(err, errlen, "wolfSSL_CTX_new failed");
        goto fail;
    }
    if (!cfg->dtls && /* the DTLS 1.2 method allows DTLS 1.2 only */
        (r = wolfSSL_CTX_SetMinVersion(e->ctx, cfg->tls_min == 13 ? WOLFSSL_TLSV1_3 : WOLFSSL_TLSV1_2)) !=
            WOLFSSL_SUCCESS) {
        errstr(err, errlen, "wolfSSL_CTX_SetMinVersion", r);
        goto fail;
    }
    if (cfg->chacha_only &&
        (r = wolfSSL_CTX_set_cipher_list(e->ctx, "TLS13-CHACHA20-POLY1305-SHA256")) != WOLFSSL_SUCCESS) {
        errstr(err, errlen, "wolfSSL_CTX_set_cipher_list", r);
        goto fail;
    }
    /* Only groups valid in both TLS 1.2 and 1.3: Debian's build also enables Brainpool and
     * Koblitz curves, whose TLS 1.2 codepoints are forbidden in a TLS 1.3-only ClientHello
     * (tlslite-ng rejects it with illegal_parameter). */
    static const word16 curves[] = {WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1, WOLFSSL_ECC_SECP521R1};
    int groups[] = {WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1, WOLFSSL_ECC_SECP521R1};
    for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
        if ((r = wolfSSL_CTX_UseSupportedCurve(e->ctx, curves[i])) != WOLFSSL_SUCCESS) {
            errstr(err, errlen, "wolfSSL_CTX_UseSupportedCurve", r);
            goto fail;
        }
    if (cfg->tls_max == 13 && /* a TLS 1.3 API: refused by a TLS 1.2-only method */
        (r = wolfSSL_CTX_set_groups(e->ctx, groups, (int)(sizeof(groups) / sizeof(groups[0])))) != WOLFSSL_SUCCESS) {
        errstr(err, errlen, "wolfSSL_CTX_set_groups", r);
        goto fail;
    }
    if ((r = wolfSSL_CTX_load_verify_locations(e->ctx, cfg->ca_pem, NULL)) != WOLFSSL_SUCCESS) {
        errstr(err, errlen, "loading ca.pem", r);
        goto fail;
    }
    if (cfg->have_own_cert) {
        if ((r = wolfSSL_CTX_use_certificate_chain_file(e->ctx, cfg->cert_pem)) != WOLFSSL_SUCCESS) {
            errstr(err, errlen, "loading cert.pem", r);
            goto fail;
        }
        if ((r = wolfSSL_CTX_use_PrivateKey_file(e->ctx, cfg->key_pem, WOLFSSL_FILETYPE_PEM)) != WOLFSSL_SUCCESS) {
            errstr(err, errlen, "loading key.pem", r);
            goto fail;
        }
    }
    if (cfg->dtls && cfg->is_server) {
        WC_RNG rng;
        if (wc_InitRng(&rng) != 0 || wc_RNG_GenerateBlock(&rng, e->cookie_secret, sizeof(e->cookie_secret)) != 0) {
            snprintf(err, errlen, "no randomness for the DTLS cookie secret");
            goto fail;
        }
        wc_FreeRng(&rng);
    }
    wolfSSL_CTX_set_verify(e->ctx,
                           cfg->is_server ? WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                          : WOLFSSL_VERIFY_PEER,
                           NULL);
    return e;
fail:
    engine_free(e);
    return NULL;
}

void engine_free(atls_engine *e)
{
    if (!e)
        return;
    if (e->ctx)
        wolfSSL_CTX_free(e->ctx);
    free(e);
    wolfSSL_Cleanup();
}

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *ud)
{
    (void)ssl;
    atls_conn *c = ud;
    if (sz <= 0)
        return 0;
    if (abuf_avail(&c->in) == 0)
        return WOLFSSL_CBIO_ERR_WANT_READ;
    return (int)atls_pull(&c->in, c->eng->cfg->dtls, buf, (size_t)sz); /* DTLS: one record */
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *ud)
{
    (void)ssl;
    atls_conn *c = ud;
    if (sz < 0 || abuf_put(&c->out, buf, (size_t)sz) != 0) {
        c->out_overflow = 1;
        return WOLFSSL_CBIO_ERR_GENERAL;
    }
    return sz;
}

atls_conn *conn_new(atls_engine *e, const char *peer, char *err, size_t errlen)
{
    atls_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->eng = e;
    c->ssl = wolfSSL_new(e->ctx);
    if (!c->ssl) {
        snprintf(err, errlen, "wolfSSL_new failed");
        free(c);
        return NULL;
    }
    wolfSSL_SSLSetIORecv(c->ssl, io_recv);
    wolfSSL_SSLSetIOSend(c->ssl, io_send);
    wolfSSL_SetIOReadCtx(c->ssl, c);
    wolfSSL_SetIOWriteCtx(c->ssl, c);
    if (e->cfg->dtls) /* WANT_READ is "no datagram yet", never a timeout: no retransmission */
        wolfSSL_dtls_set_using_nonblock(c->ssl, 1);
    if (e->cfg->dtls && e->cfg->is_server) {
        /* wolfSSL_DTLS_SetCookieSecret returns 0 on success */
        int r = wolfSSL_DTLS_SetCookieSecret(c->ssl, e->cookie_secret, sizeof(e->cookie_secret)) == 0
                    ? WOLFSSL_SUCCESS
                    : WOLFSSL_FAILURE;
        if (r == WOLFSSL_SUCCESS && peer && *peer)
            r = wolfSSL_dtls_set_peer(c->ssl, (void *)peer, (unsigned int)strlen(peer));
        if (r != WOLFSSL_SUCCESS) {
            errstr(err, errlen, "DTLS cookie setup", r);
            wolfSSL_free(c->ssl);
            free(c);
            return NULL;
        }
    }
    if (!e->cfg->is_server) {
        const char *name = e->cfg->server_name;
        int r = wolfSSL_check_domain_name(c->ssl, name);
        /* Debian's build defines only HAVE_SERVER_RENEGOTIATION_INFO, so a client sends neither
         * renegotiation_info nor the SCSV unless asked; Bouncy Castle's TLS 1.2 server then
         * refuses with handshake_failure (RFC 5746 indication missing). */
        if (r == WOLFSSL_SUCCESS && e->cfg->tls_min == 12)
            r = wolfSSL_UseSecureRenegotiation(c->ssl);
        if (r == WOLFSSL_SUCCESS)
            r = wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, name, (unsigned short)strlen(name));
        if (r != WOLFSSL_SUCCESS) {
            errstr(err, errlen, "setting the expected server name", r);
            wolfSSL_free(c->ssl);
            free(c);
            return NULL;
        }
    }
    return c;
}

void conn_free(atls_conn *c)
{
    if (!c)
        return;
    wolfSSL_free(c->ssl);
    abuf_free(&c->in);
    abuf_free(&c->out);
    free(c);
}

int conn_feed(atls_conn *c, const unsigned char *data, size_t n)
{
    return abuf_put_said(&c->in, data, n, c->err, sizeof(c->err), "input");
}

static void set_failure(atls_conn *c, int ret, const char *what)
{
    int e = wolfSSL_get_error(c->ssl, ret);
    WOLFSSL_ALERT_HISTORY h;
    memset(&h, 0, sizeof(h));
    if (wolfSSL_get_alert_history(c->ssl, &h) == WOLFSSL_SUCCESS) {
        if (h.last_rx.level == alert_fatal)
            snprintf(c->alert, sizeof(c->alert), "%s", tls_alert_name(h.last_rx.code));
        else if (h.last_tx.level == alert_fatal)
            snprintf(c->alert, sizeof(c->alert), "%s", tls_alert_name(h.last_tx.code));
    }
    char es[WOLFSSL_MAX_ERROR_SZ] = "";
    wolfSSL_ERR_error_string_n((unsigned long)e, es, sizeof(es));
    long vr = wolfSSL_get_verify_result(c->ssl);
    snprintf(c->err, sizeof(c->err), "%s: error %d: %s%s%s%s%s", what, e, es,
             vr != 0 ? "; certificate verification: " : "", vr != 0 ? wolfSSL_X509_verify_cert_error_string(vr) : "",
             c->alert[0] ? "; alert " : "", c->alert);
}

int conn_handshake(atls_conn *c)
{
    int r = c->eng->cfg->is_server ? wolfSSL_accept(c->ssl) : wolfSSL_connect(c->ssl);
    if (r == WOLFSSL_SUCCESS)
        return 1;
    int e = wolfSSL_get_error(c->ssl, r);
    if (e == WOLFSSL_ERROR_WANT_READ && !c->out_overflow)
        return 0;
    set_failure(c, r, "handshake");
    return -1;
}

int conn_take(atls_conn *c, abuf *out)
{
    return abuf_move(out, &c->out, c->err, sizeof(c->err));
}

int conn_write(atls_conn *c, const unsigned char *data, size_t n)
{
    if (n > ATLS_MAX_FLIGHT)
        return -1;
    int r = wolfSSL_write(c->ssl, data, (int)n);
    if (r != (int)n) {
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
        int r = wolfSSL_read(c->ssl, tmp, sizeof(tmp));
        if (r > 0) {
            if (abuf_put(out, tmp, (size_t)r) != 0) {
                snprintf(c->err, sizeof(c->err), "application data over %u bytes", ATLS_MAX_FLIGHT);
                return -1;
            }
            continue;
        }
        int e = wolfSSL_get_error(c->ssl, r);
        if (e == WOLFSSL_ERROR_WANT_READ) {
            if (abuf_avail(&c->in) > 0)
                continue; /* a post-handshake message was consumed; more records wait */
            return 0;
        }
        if (e == WOLFSSL_ERROR_ZERO_RETURN)
            return 1;
        set_failure(c, r, "read");
        return -1;
    }
}

int conn_export(atls_conn *c, const char *label, const unsigned char *ctx, size_t ctx_len, int use_context,
                unsigned char *out, size_t out_len)
{
    int r = wolfSSL_export_keying_material(c->ssl, out, out_len, label, strlen(label), ctx, ctx_len, use_context);
    if (r != WOLFSSL_SUCCESS) {
        snprintf(c->err, sizeof(c->err), "wolfSSL_export_keying_material failed (%d)", r);
        return -1;
    }
    return 0;
}

const char *conn_version(atls_conn *c) { return wolfSSL_get_version(c->ssl); }
const char *conn_cipher(atls_conn *c) { return wolfSSL_get_cipher_name(c->ssl); }
const char *conn_error(atls_conn *c) { return c->err[0] ? c->err : "unknown error"; }
const char *conn_alert(atls_conn *c) { return c->alert[0] ? c->alert : NULL; }
