/*
 * Shared interop peer (interop/CONTRACT.md): one HTTP carrier (libcurl client,
 * libmicrohttpd server) and one small "TLS engine" per stack. Each peer links
 * atls_peer.c with exactly one engine_<stack>.c implementing the functions
 * below. TLS never touches a socket: bytes go in with conn_feed() and come out
 * with conn_take(), and travel as HTTP POST bodies.
 */
#ifndef ATLS_PEER_H
#define ATLS_PEER_H

#include <stddef.h>
#include <stdint.h>

#define ATLS_MAX_FLIGHT (256u * 1024u) /* bound on one HTTP body / one buffer */
#define ATLS_EXPORT_LEN 32
#define ATLS_EXPORT_LABEL "application-layer-tls"
/* DTLS (dtls12): the path MTU the engines fragment handshake messages to (contract: at
 * most 1,400; ours uses 1,024) and the largest application data put in one record. */
#define ATLS_DTLS_MTU 1024
#define ATLS_DTLS_APP_CHUNK 512
#define ATLS_DTLS_HEADER 13

/* Bounded byte buffer with a read offset. */
typedef struct {
    unsigned char *p;
    size_t len; /* bytes written */
    size_t off; /* bytes consumed */
    size_t cap;
} abuf;

int abuf_put(abuf *b, const void *data, size_t n); /* 0, or -1 over ATLS_MAX_FLIGHT / no memory */
size_t abuf_avail(const abuf *b);
size_t abuf_get(abuf *b, void *dst, size_t n); /* consume up to n bytes */
void abuf_reset(abuf *b);
void abuf_free(abuf *b);
/* The engines' shared steps: append with a bounded-size message in err on failure
 * (what: "input" or "output"); move src's unread bytes to the end of dst. */
int abuf_put_said(abuf *b, const void *data, size_t n, char *err, size_t errlen, const char *what);
int abuf_move(abuf *dst, abuf *src, char *err, size_t errlen);

typedef struct {
    int is_server;
    int tls_min, tls_max;   /* 12 or 13 */
    int chacha_only;        /* TLS 1.3 TLS_CHACHA20_POLY1305_SHA256 only */
    int have_own_cert;      /* cert.pem + key.pem present */
    int export_use_context; /* 1: empty context (exporter-empty-context) */
    int dtls;               /* DTLS 1.2 records in the bodies (dtls12) */
    char ca_pem[1024], cert_pem[1024], key_pem[1024];
    char server_name[256];  /* client: name the server must prove */
    const char *keylog_file; /* NULL: no keylog */
    const char *testcase;
} atls_cfg;

typedef struct atls_engine atls_engine;
typedef struct atls_conn atls_conn;

/* ---- implemented by each engine_<stack>.c ---- */
const char *engine_name(void);          /* "openssl" */
const char *engine_stack_version(void); /* "OpenSSL 3.0.x" (runtime) */
/* NULL if the engine can run cfg, else a one-line reason (exit 127). */
const char *engine_unsupported(const atls_cfg *cfg);
/* Called in the HTTP server's thread after each request (e.g. to drop per-thread caches). */
void engine_thread_release(void);
atls_engine *engine_new(const atls_cfg *cfg, char *err, size_t errlen);
void engine_free(atls_engine *e);

/* peer: server only, the client's address as text (a DTLS HelloVerifyRequest cookie binds
 * it); NULL on the client. */
atls_conn *conn_new(atls_engine *e, const char *peer, char *err, size_t errlen);
void conn_free(atls_conn *c);
/* TLS: a piece of the byte stream. DTLS: whole records (the carrier checked the framing
 * with dtls_check_records); engines keep them (abuf_put_said) and hand them to their stack
 * one record per datagram (atls_pull). 0 / -1 */
int conn_feed(atls_conn *c, const unsigned char *data, size_t n);
/* Drive the handshake: 1 complete, 0 needs more input, -1 failed (conn_error).
 * DTLS server: when a new session's output is a HelloVerifyRequest (dtls_is_hello_verify)
 * the carrier sends it without a session cookie and drops the session, as the contract
 * says; the ClientHello that returns the DTLS cookie then reaches a fresh session, so an
 * engine that sends HelloVerifyRequests must verify cookies without state (a secret
 * shared by all its sessions, bound to the peer given to conn_new). */
int conn_handshake(atls_conn *c);
/* Move all pending TLS output into out: 0 / -1. DTLS: whole records only. */
int conn_take(atls_conn *c, abuf *out);
int conn_write(atls_conn *c, const unsigned char *data, size_t n); /* 0 / -1 */
/* Read all application data available now into out (post-handshake messages
 * are consumed): 0 ok (possibly nothing), 1 peer closed, -1 failure. */
int conn_read(atls_conn *c, abuf *out);
/* RFC 5705 / RFC 8446 exporter; use_context with ctx_len 0 = empty context. 0 / -1 */
int conn_export(atls_conn *c, const char *label, const unsigned char *ctx, size_t ctx_len,
                int use_context, unsigned char *out, size_t out_len);
const char *conn_version(atls_conn *c);
const char *conn_cipher(atls_conn *c);
const char *conn_error(atls_conn *c); /* last failure, never NULL */
const char *conn_alert(atls_conn *c); /* TLS alert name sent/received, or NULL */

/* ---- helpers from atls_peer.c for engines ---- */
void keylog_line(const char *keylog_file, const char *label, const unsigned char *client_random,
                 size_t cr_len, const unsigned char *secret, size_t secret_len);
void keylog_raw(const char *keylog_file, const char *line); /* line without newline */
const char *tls_alert_name(int code); /* RFC 8446 name, e.g. "certificate_required" */
void hex_encode(const unsigned char *in, size_t n, char *out /* 2n+1 */);
/* DTLS framing. The whole record at p (n bytes there): its length, or 0 when p does not
 * start with a whole DTLS 1.0/1.2 record (types 20-23, 13-byte header, version 0xFEFF or
 * 0xFEFD, at most 2^14 + 2048 bytes of fragment). */
size_t dtls_record_len(const unsigned char *p, size_t n);
/* 0 when data is one or more whole DTLS records, else -1 with the reason in why. */
int dtls_check_records(const unsigned char *p, size_t n, char *why, size_t whylen);
/* 1 when the flight at p starts with a HelloVerifyRequest (epoch 0 handshake type 3). */
int dtls_is_hello_verify(const unsigned char *p, size_t n);
/* Engines' transport read: TLS: up to cap bytes; DTLS: one record, as one datagram (a
 * record over cap is cut, as UDP cuts a datagram, and the stack drops it). 0: nothing. */
size_t atls_pull(abuf *in, int dtls, void *dst, size_t cap);

#endif
