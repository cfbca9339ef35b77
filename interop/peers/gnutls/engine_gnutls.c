/*
 * GnuTLS engine: push/pull transport callbacks over memory buffers (GNUTLS_NONBLOCK).
 * DTLS (dtls12): GNUTLS_DATAGRAM, the pull callback gives one record per datagram, the
 * pull-timeout callback says "no data" at once instead of waiting, MTU 1024, and the
 * retransmission timer is set beyond a session's life (HTTP answers every flight). The
 * server answers a first ClientHello with a stateless HelloVerifyRequest
 * (gnutls_dtls_cookie_verify/_send over the client's address, gnutls_dtls_prestate_set).
 */
#define _GNU_SOURCE
#include "atls_peer.h"

#include <errno.h>
#include <gnutls/dtls.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct atls_engine {
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    const atls_cfg *cfg;
    gnutls_datum_t cookie_key; /* DTLS server: HelloVerifyRequest cookies */
};

struct atls_conn {
    atls_engine *eng;
    gnutls_session_t s;
    abuf in, out;
    int listening; /* DTLS server: no ClientHello with a valid cookie yet */
    char peer[64];
    char err[512];
    char alert[64];
    char cipher[96];
};

const char *engine_name(void) { return "gnutls"; }

const char *engine_stack_version(void)
{
    static char v[64];
    snprintf(v, sizeof(v), "GnuTLS %s", gnutls_check_version(NULL));
    return v;
}

const char *engine_unsupported(const atls_cfg *cfg)
{
    (void)cfg;
    return NULL;
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
    if ((r = gnutls_global_init()) < 0 || (r = gnutls_certificate_allocate_credentials(&e->cred)) < 0) {
        snprintf(err, errlen, "init: %s", gnutls_strerror(r));
        free(e);
        return NULL;
    }
    if ((r = gnutls_certificate_set_x509_trust_file(e->cred, cfg->ca_pem, GNUTLS_X509_FMT_PEM)) <= 0) {
        snprintf(err, errlen, "loading ca.pem: %s", r < 0 ? gnutls_strerror(r) : "no certificate found");
        goto fail;
    }
    if (cfg->have_own_cert &&
        (r = gnutls_certificate_set_x509_key_file(e->cred, cfg->cert_pem, cfg->key_pem, GNUTLS_X509_FMT_PEM)) < 0) {
        snprintf(err, errlen, "loading cert.pem/key.pem: %s", gnutls_strerror(r));
        goto fail;
    }
    char prio[256];
    if (cfg->dtls)
        snprintf(prio, sizeof(prio), "NORMAL:-VERS-ALL:+VERS-DTLS1.2");
    else
        snprintf(prio, sizeof(prio), "NORMAL:-VERS-ALL:%s%s%s",
                 cfg->tls_max == 13 ? "+VERS-TLS1.3" : "", cfg->tls_min == 12 && cfg->tls_max == 13 ? ":" : "",
                 cfg->tls_min == 12 ? "+VERS-TLS1.2" : "");
    if (cfg->chacha_only) /* in TLS 1.3 the cipher alone names the suite TLS_CHACHA20_POLY1305_SHA256 */
        strncat(prio, ":-CIPHER-ALL:+CHACHA20-POLY1305", sizeof(prio) - strlen(prio) - 1);
    const char *where = NULL;
    if ((r = gnutls_priority_init(&e->prio, prio, &where)) < 0) {
        snprintf(err, errlen, "priority %s at %s: %s", prio, where ? where : "?", gnutls_strerror(r));
        goto fail;
    }
    if (cfg->dtls && cfg->is_server && (r = gnutls_key_generate(&e->cookie_key, GNUTLS_COOKIE_KEY_SIZE)) < 0) {
        snprintf(err, errlen, "gnutls_key_generate: %s", gnutls_strerror(r));
        goto fail;
    }
    return e;
fail:
    engine_free(e);
    return NULL;
}

void engine_free(atls_engine *e)
{
    if (!e)
        return;
    if (e->prio)
        gnutls_priority_deinit(e->prio);
    if (e->cred)
        gnutls_certificate_free_credentials(e->cred);
    gnutls_free(e->cookie_key.data);
    free(e);
    gnutls_global_deinit();
}

static ssize_t push_cb(gnutls_transport_ptr_t p, const void *data, size_t n)
{
    atls_conn *c = p;
    if (abuf_put(&c->out, data, n) != 0) {
        gnutls_transport_set_errno(c->s, ENOMEM);
        return -1;
    }
    return (ssize_t)n;
}

static ssize_t pull_cb(gnutls_transport_ptr_t p, void *data, size_t n)
{
    atls_conn *c = p;
    if (abuf_avail(&c->in) == 0) {
        gnutls_transport_set_errno(c->s, EAGAIN);
        return -1;
    }
    return (ssize_t)atls_pull(&c->in, c->eng->cfg->dtls, data, n); /* DTLS: one record */
}

static int pull_timeout_cb(gnutls_transport_ptr_t p, unsigned int ms)
{
    (void)ms;
    atls_conn *c = p;
    return abuf_avail(&c->in) > 0 ? 1 : 0;
}

static int keylog_cb(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
    atls_conn *c = gnutls_session_get_ptr(s);
    gnutls_datum_t cr = {NULL, 0}, sr = {NULL, 0};
    gnutls_session_get_random(s, &cr, &sr);
    if (c && cr.data)
        keylog_line(c->eng->cfg->keylog_file, label, cr.data, cr.size, secret->data, secret->size);
    return 0;
}

atls_conn *conn_new(atls_engine *e, const char *peer, char *err, size_t errlen)
{
    int r;
    atls_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->eng = e;
    snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "");
    unsigned int flags = (e->cfg->is_server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK;
    if (e->cfg->dtls)
        flags |= GNUTLS_DATAGRAM;
    if ((r = gnutls_init(&c->s, flags)) < 0) {
        snprintf(err, errlen, "gnutls_init: %s", gnutls_strerror(r));
        free(c);
        return NULL;
    }
    gnutls_session_set_ptr(c->s, c);
    if ((r = gnutls_priority_set(c->s, e->prio)) < 0 ||
        (r = gnutls_credentials_set(c->s, GNUTLS_CRD_CERTIFICATE, e->cred)) < 0)
        goto fail;
    if (e->cfg->is_server) {
        gnutls_certificate_server_set_request(c->s, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(c->s, NULL, 0); /* verify the client's chain in the handshake */
    } else {
        const char *name = e->cfg->server_name;
        if ((r = gnutls_server_name_set(c->s, GNUTLS_NAME_DNS, name, strlen(name))) < 0)
            goto fail;
        gnutls_session_set_verify_cert(c->s, name, 0); /* chain to ca.pem and name (DNS or IP SAN) */
    }
    gnutls_transport_set_ptr(c->s, c);
    gnutls_transport_set_push_function(c->s, push_cb);
    gnutls_transport_set_pull_function(c->s, pull_cb);
    gnutls_transport_set_pull_timeout_function(c->s, pull_timeout_cb);
    if (e->cfg->keylog_file)
        gnutls_session_set_keylog_function(c->s, keylog_cb);
    if (e->cfg->dtls) {
        gnutls_dtls_set_mtu(c->s, ATLS_DTLS_MTU);
        /* HTTP answers every flight: no retransmission within a session's life */
        gnutls_dtls_set_timeouts(c->s, 60000, 120000);
        c->listening = e->cfg->is_server;
    }
    return c;
fail:
    snprintf(err, errlen, "session setup: %s", gnutls_strerror(r));
    gnutls_deinit(c->s);
    free(c);
    return NULL;
}

void conn_free(atls_conn *c)
{
    if (!c)
        return;
    gnutls_deinit(c->s);
    abuf_free(&c->in);
    abuf_free(&c->out);
    free(c);
}

int conn_feed(atls_conn *c, const unsigned char *data, size_t n)
{
    return abuf_put_said(&c->in, data, n, c->err, sizeof(c->err), "input");
}

static void set_failure(atls_conn *c, int r, const char *what)
{
    char detail[256] = "";
    if (r == GNUTLS_E_WARNING_ALERT_RECEIVED || r == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        snprintf(c->alert, sizeof(c->alert), "%s", tls_alert_name((int)gnutls_alert_get(c->s)));
        snprintf(detail, sizeof(detail), " (peer sent alert %s)", c->alert);
    } else if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t st = {NULL, 0};
        unsigned int status = gnutls_session_get_verify_cert_status(c->s);
        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &st, 0) == 0 && st.data) {
            snprintf(detail, sizeof(detail), ": %s", (const char *)st.data);
            gnutls_free(st.data);
        }
    }
    snprintf(c->err, sizeof(c->err), "%s: %s%s", what, gnutls_strerror(r), detail);
    if (r != GNUTLS_E_WARNING_ALERT_RECEIVED && r != GNUTLS_E_FATAL_ALERT_RECEIVED) {
        /* tell the peer (the alert goes into our output buffer) */
        int a = gnutls_error_to_alert(r, NULL);
        if (a >= 0 && !c->alert[0])
            snprintf(c->alert, sizeof(c->alert), "%s", tls_alert_name(a));
        (void)gnutls_alert_send_appropriate(c->s, r);
    }
}

/* DTLS server, before any state: the first record must be a ClientHello carrying a valid
 * cookie; otherwise answer it with a HelloVerifyRequest (gnutls_dtls_cookie_send). */
static int listen_step(atls_conn *c)
{
    atls_engine *e = c->eng;
    gnutls_dtls_prestate_st pre;
    memset(&pre, 0, sizeof(pre));
    size_t avail = abuf_avail(&c->in);
    if (avail == 0)
        return 0;
    size_t rl = dtls_record_len(c->in.p + c->in.off, avail);
    int r = gnutls_dtls_cookie_verify(&e->cookie_key, c->peer, strlen(c->peer), c->in.p + c->in.off,
                                      rl ? rl : avail, &pre);
    if (r == 0) {
        gnutls_dtls_prestate_set(c->s, &pre);
        c->listening = 0;
        return 1;
    }
    if (r != GNUTLS_E_BAD_COOKIE) {
        snprintf(c->err, sizeof(c->err), "gnutls_dtls_cookie_verify: %s", gnutls_strerror(r));
        return -1;
    }
    abuf_reset(&c->in); /* a HelloVerifyRequest keeps nothing */
    if ((r = gnutls_dtls_cookie_send(&e->cookie_key, c->peer, strlen(c->peer), &pre, c, push_cb)) < 0) {
        snprintf(c->err, sizeof(c->err), "gnutls_dtls_cookie_send: %s", gnutls_strerror(r));
        return -1;
    }
    return 0; /* the carrier sends it and drops this session */
}

int conn_handshake(atls_conn *c)
{
    int r;
    if (c->listening) {
        int l = listen_step(c);
        if (l != 1)
            return l;
    }
    for (int spins = 0;; spins++) {
        r = gnutls_handshake(c->s);
        if (r == GNUTLS_E_SUCCESS)
            return 1;
        if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED)
            break;
        if (abuf_avail(&c->in) == 0 || spins > 1000)
            return 0;
    }
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
        if (spins > 1000) {
            snprintf(c->err, sizeof(c->err), "write: no progress");
            return -1;
        }
        ssize_t r = gnutls_record_send(c->s, data + w, n - w);
        if (r < 0) {
            if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
                continue; /* push never blocks: cannot loop forever */
            set_failure(c, (int)r, "write");
            return -1;
        }
        w += (size_t)r;
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
        ssize_t r = gnutls_record_recv(c->s, tmp, sizeof(tmp));
        if (r > 0) {
            if (abuf_put(out, tmp, (size_t)r) != 0) {
                snprintf(c->err, sizeof(c->err), "application data over %u bytes", ATLS_MAX_FLIGHT);
                return -1;
            }
            continue;
        }
        if (r == 0)
            return 1;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            /* after a post-handshake message (e.g. NewSessionTicket) GnuTLS returns AGAIN even
             * when more records are waiting: go on while input remains */
            if (abuf_avail(&c->in) > 0 || gnutls_record_check_pending(c->s) > 0)
                continue;
            return 0;
        }
        if (!gnutls_error_is_fatal((int)r) && r != GNUTLS_E_WARNING_ALERT_RECEIVED)
            continue; /* e.g. a post-handshake message processed; bounded by the input */
        set_failure(c, (int)r, "read");
        return -1;
    }
}

int conn_export(atls_conn *c, const char *label, const unsigned char *ctx, size_t ctx_len, int use_context,
                unsigned char *out, size_t out_len)
{
    /* a NULL context is "absent"; a non-NULL one of length 0 is "empty" (differs in TLS 1.2) */
    int r = gnutls_prf_rfc5705(c->s, strlen(label), label, use_context ? ctx_len : 0,
                               use_context ? (const char *)ctx : NULL, out_len, (char *)out);
    if (r < 0) {
        snprintf(c->err, sizeof(c->err), "gnutls_prf_rfc5705: %s", gnutls_strerror(r));
        return -1;
    }
    return 0;
}

const char *conn_version(atls_conn *c) { return gnutls_protocol_get_name(gnutls_protocol_get_version(c->s)); }

const char *conn_cipher(atls_conn *c)
{
    const char *n = gnutls_ciphersuite_get(c->s); /* canonical name, e.g. TLS_AES_256_GCM_SHA384 */
    snprintf(c->cipher, sizeof(c->cipher), "%s", n ? n : gnutls_cipher_get_name(gnutls_cipher_get(c->s)));
    return c->cipher;
}

const char *conn_error(atls_conn *c) { return c->err[0] ? c->err : "unknown error"; }
const char *conn_alert(atls_conn *c) { return c->alert[0] ? c->alert : NULL; }
