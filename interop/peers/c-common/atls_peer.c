/*
 * ATLS interop peer: environment (interop/CONTRACT.md), test cases, HTTP
 * carrier (client: libcurl; server: libmicrohttpd), export file, keylog.
 * Everything stack-specific is behind atls_peer.h's engine interface.
 */
#define _GNU_SOURCE
#include "atls_peer.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CLIENT_BUDGET_MS 18000  /* contract: the client finishes within 20 s */
#define REQUEST_TIMEOUT_MS 6000
#define MAX_FLIGHTS 16
#define MAX_RETRIES 2
#define MAX_SESSIONS 256
#define SESSION_IDLE_S 120
#define MAX_INNER_REQUEST 16384

static char g_role[16] = "?";

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "[%s %s] ", engine_name(), g_role);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

/* The client's last failure reason: its final line (the runner shows a log's last line). */
static char g_reason[600];

static void reason_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reason_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_reason, sizeof(g_reason), fmt, ap);
    va_end(ap);
    logf_("%s", g_reason);
}

/* ------------------------------------------------------------------ abuf */

int abuf_put(abuf *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    if (b->len > ATLS_MAX_FLIGHT || n > ATLS_MAX_FLIGHT - b->len)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

size_t abuf_avail(const abuf *b) { return b->len - b->off; }

size_t abuf_get(abuf *b, void *dst, size_t n)
{
    size_t a = abuf_avail(b);
    if (n > a)
        n = a;
    if (n) {
        memcpy(dst, b->p + b->off, n);
        b->off += n;
    }
    if (b->off == b->len)
        b->off = b->len = 0;
    return n;
}

void abuf_reset(abuf *b) { b->off = b->len = 0; }

void abuf_free(abuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

int abuf_put_said(abuf *b, const void *data, size_t n, char *err, size_t errlen, const char *what)
{
    if (abuf_put(b, data, n) != 0) {
        snprintf(err, errlen, "%s over %u bytes", what, ATLS_MAX_FLIGHT);
        return -1;
    }
    return 0;
}

int abuf_move(abuf *dst, abuf *src, char *err, size_t errlen)
{
    if (abuf_put_said(dst, src->p + src->off, abuf_avail(src), err, errlen, "output") != 0)
        return -1;
    abuf_reset(src);
    return 0;
}

/* ------------------------------------------------------------------ DTLS */

size_t dtls_record_len(const unsigned char *p, size_t n)
{
    if (n < ATLS_DTLS_HEADER || p[0] < 20 || p[0] > 23 || p[1] != 0xfe || (p[2] != 0xff && p[2] != 0xfd))
        return 0;
    size_t len = ((size_t)p[11] << 8) | p[12];
    if (len > 16384 + 2048 || n - ATLS_DTLS_HEADER < len)
        return 0;
    return ATLS_DTLS_HEADER + len;
}

int dtls_check_records(const unsigned char *p, size_t n, char *why, size_t whylen)
{
    if (n == 0) {
        snprintf(why, whylen, "no DTLS record (empty)");
        return -1;
    }
    for (size_t off = 0; off < n;) {
        size_t r = dtls_record_len(p + off, n - off);
        if (r == 0) {
            snprintf(why, whylen, "byte %zu of %zu: not a whole DTLS 1.2 record (type %u, version %02x%02x)", off,
                     n, p[off], n - off > 1 ? p[off + 1] : 0, n - off > 2 ? p[off + 2] : 0);
            return -1;
        }
        off += r;
    }
    return 0;
}

int dtls_is_hello_verify(const unsigned char *p, size_t n)
{
    size_t r = dtls_record_len(p, n);
    return r > ATLS_DTLS_HEADER && p[0] == 22 && p[3] == 0 && p[4] == 0 && p[ATLS_DTLS_HEADER] == 3;
}

size_t atls_pull(abuf *in, int dtls, void *dst, size_t cap)
{
    if (!dtls)
        return abuf_get(in, dst, cap);
    size_t avail = abuf_avail(in);
    if (avail == 0)
        return 0;
    size_t r = dtls_record_len(in->p + in->off, avail);
    if (r == 0) /* the carrier feeds whole records only: drop anything else */
        r = avail;
    size_t n = abuf_get(in, dst, r < cap ? r : cap);
    if (r > n) { /* cut, as UDP cuts a datagram that does not fit */
        in->off += r - n;
        if (in->off == in->len)
            in->off = in->len = 0;
    }
    return n;
}

/* --------------------------------------------------------------- helpers */

const char *tls_alert_name(int code)
{
    switch (code) {
    case 0: return "close_notify";
    case 10: return "unexpected_message";
    case 20: return "bad_record_mac";
    case 22: return "record_overflow";
    case 40: return "handshake_failure";
    case 42: return "bad_certificate";
    case 43: return "unsupported_certificate";
    case 44: return "certificate_revoked";
    case 45: return "certificate_expired";
    case 46: return "certificate_unknown";
    case 47: return "illegal_parameter";
    case 48: return "unknown_ca";
    case 49: return "access_denied";
    case 50: return "decode_error";
    case 51: return "decrypt_error";
    case 70: return "protocol_version";
    case 71: return "insufficient_security";
    case 80: return "internal_error";
    case 86: return "inappropriate_fallback";
    case 90: return "user_canceled";
    case 109: return "missing_extension";
    case 110: return "unsupported_extension";
    case 112: return "unrecognized_name";
    case 113: return "bad_certificate_status_response";
    case 115: return "unknown_psk_identity";
    case 116: return "certificate_required";
    case 120: return "no_application_protocol";
    default: return "unknown_alert";
    }
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void keylog_raw(const char *keylog_file, const char *line)
{
    if (!keylog_file || !*keylog_file)
        return;
    FILE *f = fopen(keylog_file, "a");
    if (!f) {
        logf_("keylog: cannot open %s: %s", keylog_file, strerror(errno));
        return;
    }
    fprintf(f, "%s\n", line);
    fclose(f);
}

void keylog_line(const char *keylog_file, const char *label, const unsigned char *client_random,
                 size_t cr_len, const unsigned char *secret, size_t secret_len)
{
    char line[64 + 2 * 64 + 2 * 128 + 4];
    if (!keylog_file || cr_len > 64 || secret_len > 128 || strlen(label) > 60)
        return;
    char cr[2 * 64 + 1], sec[2 * 128 + 1];
    hex_encode(client_random, cr_len, cr);
    hex_encode(secret, secret_len, sec);
    snprintf(line, sizeof(line), "%s %s %s", label, cr, sec);
    keylog_raw(keylog_file, line);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int read_small_file(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' || out[n - 1] == '\t'))
        out[--n] = '\0';
    return n > 0 ? 0 : -1;
}

static int write_export(const char *export_file, atls_conn *c, const atls_cfg *cfg)
{
    unsigned char ekm[ATLS_EXPORT_LEN];
    char hex[2 * ATLS_EXPORT_LEN + 1];
    if (conn_export(c, ATLS_EXPORT_LABEL, (const unsigned char *)"", 0, cfg->export_use_context, ekm,
                    sizeof(ekm)) != 0) {
        logf_("exporter failed: %s", conn_error(c));
        return -1;
    }
    hex_encode(ekm, sizeof(ekm), hex);
    logf_("exported (%s context): %s", cfg->export_use_context ? "empty" : "absent", hex);
    if (!export_file || !*export_file)
        return 0;
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp%ld", export_file, (long)getpid()) >= (int)sizeof(tmp))
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        logf_("cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    int ok = fprintf(f, "%s\n", hex) > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, export_file) != 0) {
        logf_("cannot write %s: %s", export_file, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ test cases */

typedef struct {
    const char *name;
    int tls_min, tls_max, chacha, empty_ctx, draft00;
    int records; /* one inner request in application data after the handshake */
    int dtls;    /* DTLS 1.2 records in the bodies */
} testcase_t;

static const testcase_t TESTCASES[] = {
    {"handshake-tls13", 13, 13, 0, 0, 0, 0, 0},
    {"handshake-tls12", 12, 12, 0, 0, 0, 0, 0},
    {"records", 12, 13, 0, 0, 0, 1, 0},
    {"exporter", 13, 13, 0, 0, 0, 0, 0},
    {"exporter-empty-context", 12, 12, 0, 1, 0, 0, 0},
    {"mutual-auth-missing", 12, 13, 0, 0, 0, 0, 0},
    {"wrong-anchor", 12, 13, 0, 0, 0, 0, 0},
    {"draft00", 12, 13, 0, 0, 1, 0, 0},
    {"proxy", 12, 13, 0, 0, 0, 0, 0},
    {"flight-loss", 12, 13, 0, 0, 0, 0, 0},
    {"corruption", 12, 13, 0, 0, 0, 0, 0},
    {"chacha20", 13, 13, 1, 0, 0, 0, 0},
    {"dtls12", 12, 12, 0, 0, 0, 1, 1},
};

/* Write application data; DTLS: in pieces of ATLS_DTLS_APP_CHUNK, one record each, so no
 * record outgrows the path MTU. */
static int write_app(atls_conn *c, const atls_cfg *cfg, const unsigned char *data, size_t n)
{
    size_t step = cfg->dtls ? ATLS_DTLS_APP_CHUNK : n;
    for (size_t off = 0; off < n; off += step)
        if (conn_write(c, data + off, n - off < step ? n - off : step) != 0)
            return -1;
    return 0;
}

/* Take the engine's output; DTLS: it must be whole records (an engine bug otherwise). */
static int take_output(atls_conn *c, const atls_cfg *cfg, abuf *out, char *why, size_t whylen)
{
    size_t before = abuf_avail(out);
    if (conn_take(c, out) != 0) {
        snprintf(why, whylen, "TLS output: %s", conn_error(c));
        return -1;
    }
    size_t n = abuf_avail(out) - before;
    char w[200];
    if (cfg->dtls && n > 0 && dtls_check_records(out->p + out->off + before, n, w, sizeof(w)) != 0) {
        snprintf(why, whylen, "our DTLS output is not whole records: %s", w);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ JSON/problem */

static void json_escape(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (; in && *in && o + 7 < cap; in++) {
        unsigned char ch = (unsigned char)*in;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
}

/* =============================================================== CLIENT */

typedef struct {
    CURL *curl;
    struct curl_slist *hdrs_new, *hdrs_cookie;
    char cookie[160];
    abuf resp;
    int resp_overflow;
    const char *url;
    const char *content_type;
    const char *proxy;
    long deadline;
} carrier_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    carrier_t *c = ud;
    size_t n = size * nmemb;
    if (abuf_put(&c->resp, ptr, n) != 0) {
        c->resp_overflow = 1;
        return 0; /* aborts the transfer */
    }
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    carrier_t *c = ud;
    size_t n = size * nmemb;
    static const char key[] = "set-cookie:";
    if (n > sizeof(key) && strncasecmp(ptr, key, sizeof(key) - 1) == 0) {
        const char *v = ptr + sizeof(key) - 1;
        const char *end = ptr + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        static const char name[] = "atls_session=";
        if ((size_t)(end - v) > sizeof(name) - 1 && strncmp(v, name, sizeof(name) - 1) == 0) {
            const char *tok = v + sizeof(name) - 1;
            size_t tl = 0;
            while (tok + tl < end && tok[tl] != ';' && tok[tl] != '\r' && tok[tl] != '\n' && tok[tl] != ' ')
                tl++;
            if (tl > 0 && tl + sizeof(name) < sizeof(c->cookie)) {
                snprintf(c->cookie, sizeof(c->cookie), "atls_session=%.*s", (int)tl, tok);
            } else {
                logf_("ignoring oversized session cookie (%zu bytes)", tl);
            }
        }
    }
    return n;
}

enum { POST_OK = 0, POST_CARRIER = 1, POST_REFUSED = 2 };

/* POST body; on 200 the answer is in c->resp. */
static int carrier_post(carrier_t *c, const unsigned char *body, size_t len, long *status_out,
                        long timeout_cap_ms)
{
    long left = c->deadline - now_ms();
    if (left <= 200) {
        reason_("out of time budget");
        return POST_REFUSED;
    }
    long to = left < timeout_cap_ms ? left : timeout_cap_ms;
    abuf_reset(&c->resp);
    c->resp_overflow = 0;
    curl_slist_free_all(c->hdrs_cookie);
    c->hdrs_cookie = NULL;
    struct curl_slist *h = NULL;
    char ct[128], ck[200];
    snprintf(ct, sizeof(ct), "Content-Type: %s", c->content_type);
    h = curl_slist_append(h, ct);
    if (h && !curl_slist_append(h, "Expect:"))
        h = NULL;
    if (h && !curl_slist_append(h, "Accept: application/atls, application/atls+octet-stream, application/problem+json"))
        h = NULL;
    if (h && c->cookie[0]) {
        snprintf(ck, sizeof(ck), "Cookie: %s", c->cookie);
        if (!curl_slist_append(h, ck))
            h = NULL;
    }
    if (!h) {
        reason_("out of memory (headers)");
        return POST_REFUSED;
    }
    c->hdrs_cookie = h;
    CURL *e = c->curl;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, (const char *)(len ? body : (const unsigned char *)""));
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, to);
    int had_cookie = c->cookie[0] != '\0';
    CURLcode rc = curl_easy_perform(e);
    logf_("POST %zu bytes%s -> %s, %zu bytes", len, had_cookie ? " (cookie)" : "",
          rc == CURLE_OK ? "answer" : "no answer", abuf_avail(&c->resp));
    if (rc != CURLE_OK) {
        if (c->resp_overflow || rc == CURLE_FILESIZE_EXCEEDED) {
            reason_("answer larger than %u bytes", ATLS_MAX_FLIGHT);
            return POST_REFUSED;
        }
        reason_("carrier failure: %s", curl_easy_strerror(rc));
        return POST_CARRIER;
    }
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    *status_out = status;
    if (status == 200)
        return POST_OK;
    /* print the problem document (bounded, printable) */
    char detail[1024];
    size_t n = abuf_avail(&c->resp);
    if (n > sizeof(detail) - 1)
        n = sizeof(detail) - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = c->resp.p[c->resp.off + i];
        detail[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '.';
    }
    detail[n] = '\0';
    if (status == 502 || status == 503 || status == 504) {
        reason_("carrier failure: HTTP %ld %s", status, detail);
        return POST_CARRIER;
    }
    reason_("refused: HTTP %ld %s", status, detail);
    return POST_REFUSED;
}

static int carrier_open(carrier_t *c)
{
    c->curl = curl_easy_init();
    if (!c->curl)
        return -1;
    CURL *e = c->curl;
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "atls-interop-c");
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ATLS_MAX_FLIGHT);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
#endif
    /* only the contract's PROXY: "" disables proxies from the environment */
    curl_easy_setopt(e, CURLOPT_PROXY, c->proxy ? c->proxy : "");
    return 0;
}

static void carrier_close(carrier_t *c)
{
    if (c->curl)
        curl_easy_cleanup(c->curl);
    c->curl = NULL;
    curl_slist_free_all(c->hdrs_cookie);
    c->hdrs_cookie = NULL;
    c->cookie[0] = '\0';
}

enum { ATTEMPT_OK = 0, ATTEMPT_FAIL = 1, ATTEMPT_RETRY = 2 };

/* Best effort: deliver our alert so the server can drop the session. */
static void send_alert(carrier_t *car, atls_conn *conn)
{
    abuf out = {0};
    long st = 0;
    char keep[sizeof(g_reason)];
    memcpy(keep, g_reason, sizeof(keep));
    if (conn_take(conn, &out) == 0 && abuf_avail(&out) > 0 && car->cookie[0])
        (void)carrier_post(car, out.p + out.off, abuf_avail(&out), &st, 1500);
    memcpy(g_reason, keep, sizeof(keep));
    abuf_free(&out);
}

static int client_attempt(atls_engine *eng, carrier_t *car, const atls_cfg *cfg, const char *export_file,
                          int records)
{
    char err[512] = "", why[700];
    int result = ATTEMPT_FAIL;
    abuf out = {0}, app = {0};
    atls_conn *conn = conn_new(eng, NULL, err, sizeof(err));
    if (!conn) {
        reason_("cannot create TLS session: %s", err);
        return ATTEMPT_FAIL;
    }
    if (carrier_open(car) != 0) {
        reason_("cannot initialise libcurl");
        conn_free(conn);
        return ATTEMPT_FAIL;
    }
    int done = conn_handshake(conn);
    if (done < 0) {
        reason_("TLS failure: %s", conn_error(conn));
        goto out;
    }
    long status = 0;
    int flights = 0;
    for (;;) {
        abuf_reset(&out);
        if (take_output(conn, cfg, &out, why, sizeof(why)) != 0) {
            reason_("%s", why);
            goto out;
        }
        if (abuf_avail(&out) == 0) {
            if (done)
                break;
            reason_("TLS failure: handshake stalled (the server's flight was incomplete and we have nothing to send)");
            goto out;
        }
        if (++flights > MAX_FLIGHTS) {
            reason_("too many flights");
            goto out;
        }
        int pr = carrier_post(car, out.p + out.off, abuf_avail(&out), &status, REQUEST_TIMEOUT_MS);
        if (pr == POST_CARRIER) {
            result = ATTEMPT_RETRY;
            goto out;
        }
        if (pr != POST_OK)
            goto out;
        const unsigned char *rp = car->resp.p + car->resp.off;
        size_t rn = abuf_avail(&car->resp);
        if (!car->cookie[0] && cfg->dtls)
            /* contract: a HelloVerifyRequest comes without a session; the ClientHello that
             * returns its DTLS cookie starts one, again without an atls_session cookie */
            logf_("no atls_session cookie in the answer: a DTLS HelloVerifyRequest round, the next flight "
                  "starts a session");
        else if (flights == 1 && !car->cookie[0])
            logf_("warning: no atls_session cookie in the first answer");
        if (cfg->dtls && rn == 0 && !done) {
            reason_("TLS failure: empty answer during the DTLS handshake");
            goto out;
        }
        if (cfg->dtls && rn > 0 && dtls_check_records(rp, rn, err, sizeof(err)) != 0) {
            reason_("the server's answer is not DTLS records: %s", err);
            goto out;
        }
        if (conn_feed(conn, rp, rn) != 0) {
            reason_("TLS input too large");
            goto out;
        }
        if (!done) {
            int r = conn_handshake(conn);
            if (r < 0) {
                reason_("TLS failure: %s", conn_error(conn));
                send_alert(car, conn);
                goto out;
            }
            done = r;
        } else {
            int r = conn_read(conn, &app);
            if (r < 0) {
                reason_("TLS failure after the handshake: %s", conn_error(conn));
                goto out;
            }
        }
    }
    logf_("handshake complete: %s %s", conn_version(conn), conn_cipher(conn));
    if (write_export(export_file, conn, cfg) != 0)
        goto out;
    if (records) {
        static const char req[] = "GET /api/hello HTTP/1.1\r\nHost: atls\r\nContent-Length: 0\r\n\r\n";
        int sends = 1;
        if (write_app(conn, cfg, (const unsigned char *)req, sizeof(req) - 1) != 0) {
            reason_("TLS write failed: %s", conn_error(conn));
            goto out;
        }
        for (int polls = 0; polls < 4; polls++) {
            abuf_reset(&out);
            if (take_output(conn, cfg, &out, why, sizeof(why)) != 0) {
                reason_("%s", why);
                goto out;
            }
            int pr = carrier_post(car, out.p + out.off, abuf_avail(&out), &status, REQUEST_TIMEOUT_MS);
            if (pr != POST_OK) /* no retry once the handshake is done: the request may have run */
                goto out;
            const unsigned char *rp = car->resp.p + car->resp.off;
            size_t rn = abuf_avail(&car->resp);
            if (cfg->dtls && rn > 0 && dtls_check_records(rp, rn, err, sizeof(err)) != 0) {
                reason_("the server's answer is not DTLS records: %s", err);
                goto out;
            }
            if (conn_feed(conn, rp, rn) != 0) {
                reason_("TLS input too large");
                goto out;
            }
            int r = conn_read(conn, &app);
            if (r < 0) {
                reason_("TLS failure reading the inner response: %s", conn_error(conn));
                goto out;
            }
            if (abuf_avail(&app) >= 12 || r == 1)
                break;
            if (cfg->dtls && rn == 0 && abuf_avail(&app) == 0) {
                /* contract: an empty answer is "dropped unserved"; again in fresh records, twice at most */
                if (sends > 2) {
                    reason_("inner request dropped unserved %d times", sends);
                    goto out;
                }
                logf_("empty answer: the inner request was dropped unserved; sending it again");
                if (write_app(conn, cfg, (const unsigned char *)req, sizeof(req) - 1) != 0) {
                    reason_("TLS write failed: %s", conn_error(conn));
                    goto out;
                }
                sends++;
            }
        }
        size_t n = abuf_avail(&app);
        char line[200];
        size_t l = 0;
        while (l < n && l < sizeof(line) - 1 && app.p[app.off + l] != '\r' && app.p[app.off + l] != '\n') {
            unsigned char ch = app.p[app.off + l];
            line[l++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '.';
        }
        line[l] = '\0';
        logf_("inner response (%zu bytes): %s", n, line);
        int code = 0;
        if (sscanf(line, "HTTP/1.%*1[01] %3d", &code) != 1 || code != 200) {
            reason_("inner request failed (status %d)", code);
            goto out;
        }
    }
    result = ATTEMPT_OK;
out:
    abuf_free(&out);
    abuf_free(&app);
    conn_free(conn);
    carrier_close(car);
    return result;
}

static int run_client(const atls_cfg *cfg, const testcase_t *tc, const char *export_file)
{
    const char *base = getenv("SERVER_URL");
    if (!base || !*base) {
        reason_("SERVER_URL is not set");
        return 1;
    }
    const char *proxy = getenv("PROXY");
    if (proxy && !*proxy)
        proxy = NULL;
    char url[2048];
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    if (snprintf(url, sizeof(url), "%.*s%s", (int)bl, base, tc->draft00 ? "/atls" : "/.well-known/atls") >=
        (int)sizeof(url)) {
        reason_("SERVER_URL too long");
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        reason_("curl_global_init failed");
        return 1;
    }
    char err[512] = "";
    atls_engine *eng = engine_new(cfg, err, sizeof(err));
    if (!eng) {
        reason_("TLS setup failed: %s", err);
        curl_global_cleanup();
        return 1;
    }
    carrier_t car;
    memset(&car, 0, sizeof(car));
    car.url = url;
    car.proxy = proxy;
    car.content_type = tc->draft00 ? "application/atls+octet-stream" : "application/atls";
    car.deadline = now_ms() + CLIENT_BUDGET_MS;
    logf_("testcase %s, %s%s%s, %s", tc->name, url, proxy ? " via proxy " : "", proxy ? proxy : "",
          cfg->have_own_cert ? "with client certificate" : "without client certificate");
    int rc = 1;
    for (int attempt = 0; attempt <= MAX_RETRIES; attempt++) {
        if (attempt)
            logf_("carrier failure: fresh handshake (retry %d of %d)", attempt, MAX_RETRIES);
        int r = client_attempt(eng, &car, cfg, export_file, tc->records);
        if (r == ATTEMPT_OK) {
            rc = 0;
            break;
        }
        if (r == ATTEMPT_FAIL)
            break;
        if (now_ms() > car.deadline - 500)
            break;
    }
    abuf_free(&car.resp);
    engine_free(eng);
    curl_global_cleanup();
    if (rc == 0)
        logf_("success");
    else
        logf_("failed: %s", g_reason[0] ? g_reason : "see above");
    return rc;
}

/* =============================================================== SERVER */

typedef struct {
    char token[33];
    atls_conn *conn;
    int done;
    long last;
    abuf inner; /* partial inner HTTP request (records mode) */
} session_t;

typedef struct {
    abuf body;
    int too_big;
} req_state;

static struct {
    atls_engine *eng;
    const atls_cfg *cfg;
    const char *export_file;
    session_t sessions[MAX_SESSIONS];
    int urandom;
} S;

static void session_drop(session_t *s)
{
    if (s->conn)
        conn_free(s->conn);
    abuf_free(&s->inner);
    memset(s, 0, sizeof(*s));
}

static session_t *session_find(const char *token)
{
    if (!token || strlen(token) != 32)
        return NULL;
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (S.sessions[i].conn && strcmp(S.sessions[i].token, token) == 0)
            return &S.sessions[i];
    return NULL;
}

/* A new session in *fresh, outside the table: it takes a slot (session_keep) only once
 * its first answer is not a DTLS HelloVerifyRequest, so such a hello costs no slot. */
static int session_new(session_t *fresh, const char *peer, char *err, size_t errlen)
{
    memset(fresh, 0, sizeof(*fresh));
    unsigned char rnd[16];
    if (read(S.urandom, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd)) {
        snprintf(err, errlen, "no randomness for the session token");
        return -1;
    }
    fresh->conn = conn_new(S.eng, peer, err, errlen);
    if (!fresh->conn)
        return -1;
    hex_encode(rnd, sizeof(rnd), fresh->token);
    fresh->last = now_ms();
    return 0;
}

/* Move a new session into the table (evicting idle sessions, or the oldest when full). */
static session_t *session_keep(session_t *fresh)
{
    long now = now_ms();
    session_t *slot = NULL, *oldest = NULL;
    for (int i = 0; i < MAX_SESSIONS; i++) {
        session_t *s = &S.sessions[i];
        if (s->conn && now - s->last > SESSION_IDLE_S * 1000L)
            session_drop(s);
        if (!s->conn && !slot)
            slot = s;
        if (s->conn && (!oldest || s->last < oldest->last))
            oldest = s;
    }
    if (!slot) {
        session_drop(oldest);
        slot = oldest;
    }
    *slot = *fresh;
    memset(fresh, 0, sizeof(*fresh));
    return slot;
}

static enum MHD_Result respond(struct MHD_Connection *mc, unsigned int status, const char *ctype,
                               const void *body, size_t len, const char *cookie_token)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (ok == MHD_YES)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (ok == MHD_YES && cookie_token) {
        char c[96];
        snprintf(c, sizeof(c), "atls_session=%s; Path=/; HttpOnly", cookie_token);
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_SET_COOKIE, c);
    }
    if (ok == MHD_YES)
        ok = MHD_queue_response(mc, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result problem(struct MHD_Connection *mc, unsigned int status, const char *slug,
                               const char *title, const char *detail, const char *alert)
{
    char t[256], d[1024], a[96], body[2048];
    json_escape(title, t, sizeof(t));
    json_escape(detail, d, sizeof(d));
    json_escape(alert, a, sizeof(a));
    char alert_part[128] = "";
    if (alert && *alert)
        snprintf(alert_part, sizeof(alert_part), ", \"tls_alert\": \"%s\"", a);
    snprintf(body, sizeof(body),
             "{\"type\": \"urn:atls-testbed:problem:%s\", \"title\": \"%s\", \"status\": %u, \"detail\": \"%s\"%s}",
             slug, t, status, d, alert_part);
    logf_("HTTP %u %s: %s", status, title, detail);
    return respond(mc, status, "application/problem+json", body, strlen(body), NULL);
}

/* Answer a complete inner HTTP request with a fixed response (records mode). */
static int answer_inner(session_t *s)
{
    size_t n = abuf_avail(&s->inner);
    const unsigned char *p = s->inner.p + s->inner.off;
    const unsigned char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return 0; /* incomplete: wait for more (bounded by MAX_INNER_REQUEST) */
    char line[160];
    size_t l = 0;
    while (l < n && l < sizeof(line) - 1 && p[l] != '\r') {
        line[l] = (p[l] >= 0x20 && p[l] < 0x7f) ? (char)p[l] : '.';
        l++;
    }
    line[l] = '\0';
    logf_("inner request: %s", line);
    char body[128], resp[512];
    int bl = snprintf(body, sizeof(body), "hello from %s\n", engine_name());
    int rl = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", bl, body);
    abuf_reset(&s->inner); /* one request per POST; a body after the headers is ignored */
    return write_app(s->conn, S.cfg, (const unsigned char *)resp, (size_t)rl);
}

/* The client's address (host only), which a DTLS HelloVerifyRequest cookie binds. */
static void client_host(struct MHD_Connection *mc, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, cap, "?");
    if (!ci || !ci->client_addr)
        return;
    socklen_t len = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (getnameinfo(ci->client_addr, len, out, (socklen_t)cap, NULL, 0, NI_NUMERICHOST) != 0)
        snprintf(out, cap, "?");
}

static enum MHD_Result handle_atls(struct MHD_Connection *mc, const char *ctype_out, const req_state *rs)
{
    char err[512] = "";
    const char *tok = MHD_lookup_connection_value(mc, MHD_COOKIE_KIND, "atls_session");
    session_t *s, fresh;
    int is_new = 0;
    const unsigned char *body = rs->body.p ? rs->body.p + rs->body.off : (const unsigned char *)"";
    size_t body_len = abuf_avail(&rs->body);
    /* DTLS: whole records only, and a session starts with some (its ClientHello) */
    if (S.cfg->dtls && (body_len > 0 || !tok) && dtls_check_records(body, body_len, err, sizeof(err)) != 0)
        return problem(mc, 400, "not-dtls", "Not DTLS records", err, NULL);
    if (tok) {
        s = session_find(tok);
        if (!s)
            return problem(mc, 400, "unknown-session", "Unknown ATLS session",
                           "the atls_session cookie names no live session; start again without it", NULL);
    } else {
        char peer[INET6_ADDRSTRLEN + 8];
        client_host(mc, peer, sizeof(peer));
        if (session_new(&fresh, peer, err, sizeof(err)) != 0)
            return problem(mc, 500, "internal", "Cannot create a TLS session", err, NULL);
        s = &fresh; /* session_drop works on it too */
        is_new = 1;
        logf_("new session %.8s...", s->token);
    }
    s->last = now_ms();
    if (conn_feed(s->conn, body, body_len) != 0) {
        session_drop(s);
        return problem(mc, 413, "too-large", "Flight too large", "buffered TLS input over the bound", NULL);
    }
    int keep_nothing = 0;
    if (!s->done) {
        int r = conn_handshake(s->conn);
        if (r < 0) {
            char detail[600], alert[64] = "";
            snprintf(detail, sizeof(detail), "%s", conn_error(s->conn));
            if (conn_alert(s->conn))
                snprintf(alert, sizeof(alert), "%s", conn_alert(s->conn));
            session_drop(s);
            return problem(mc, 400, "tls-alert", "TLS handshake failed", detail, alert[0] ? alert : NULL);
        }
        if (r == 1) {
            s->done = 1;
            logf_("session %.8s... handshake complete: %s %s", s->token, conn_version(s->conn),
                  conn_cipher(s->conn));
            if (write_export(S.export_file, s->conn, S.cfg) != 0) {
                session_drop(s);
                return problem(mc, 500, "internal", "Exporter failed", "see the server's log", NULL);
            }
        }
    }
    if (s->done) {
        abuf app = {0};
        int r = conn_read(s->conn, &app);
        if (r < 0) {
            char detail[600];
            snprintf(detail, sizeof(detail), "%s", conn_error(s->conn));
            abuf_free(&app);
            session_drop(s);
            return problem(mc, 400, "tls-alert", "TLS failure", detail, NULL);
        }
        if (abuf_avail(&app) > 0) {
            if (abuf_avail(&s->inner) + abuf_avail(&app) > MAX_INNER_REQUEST ||
                abuf_put(&s->inner, app.p + app.off, abuf_avail(&app)) != 0) {
                abuf_free(&app);
                session_drop(s);
                return problem(mc, 413, "too-large", "Inner request too large", "over 16 KiB", NULL);
            }
            if (answer_inner(s) != 0) {
                abuf_free(&app);
                session_drop(s);
                return problem(mc, 500, "internal", "TLS write failed", "see the server's log", NULL);
            }
        }
        abuf_free(&app);
    }
    abuf out = {0};
    char why[700];
    if (take_output(s->conn, S.cfg, &out, why, sizeof(why)) != 0) {
        abuf_free(&out);
        session_drop(s);
        return problem(mc, 500, "internal", "TLS output failed", why, NULL);
    }
    /* contract: a HelloVerifyRequest keeps nothing (no Set-Cookie); the ClientHello that
     * returns the DTLS cookie comes without an atls_session cookie */
    if (S.cfg->dtls && is_new && !s->done && dtls_is_hello_verify(out.p + out.off, abuf_avail(&out))) {
        keep_nothing = 1;
        logf_("session %.8s...: HelloVerifyRequest (%zu bytes), nothing kept", s->token, abuf_avail(&out));
    } else if (S.cfg->dtls && is_new && !s->done && abuf_avail(&out) == 0) {
        keep_nothing = 1; /* DTLS dropped the hello (as ours does): no session for nothing */
        logf_("session %.8s...: the ClientHello was dropped, nothing kept", s->token);
    }
    if (keep_nothing)
        session_drop(s);
    else if (is_new)
        s = session_keep(s);
    enum MHD_Result res =
        respond(mc, 200, ctype_out, out.p ? out.p + out.off : (const unsigned char *)"", abuf_avail(&out),
                is_new && !keep_nothing ? s->token : NULL);
    abuf_free(&out);
    return res;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    (void)version;
    req_state *rs = *con_cls;
    if (!rs) {
        rs = calloc(1, sizeof(*rs));
        if (!rs)
            return MHD_NO;
        *con_cls = rs;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!rs->too_big && abuf_put(&rs->body, upload_data, *upload_data_size) != 0) {
            rs->too_big = 1;
            abuf_free(&rs->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    int well_known = strcmp(url, "/.well-known/atls") == 0;
    int legacy = strcmp(url, "/atls") == 0;
    if (!well_known && !legacy)
        return problem(mc, 404, "not-found", "Not found", "ATLS lives at POST /.well-known/atls (or draft-00 /atls)",
                       NULL);
    if (strcmp(method, "POST") != 0)
        return problem(mc, 405, "method-not-allowed", "Method not allowed", "ATLS messages are POSTs", NULL);
    if (rs->too_big)
        return problem(mc, 413, "too-large", "Flight too large", "the body is over 256 KiB", NULL);
    const char *ct = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    char ctb[96] = "";
    if (ct) {
        size_t n = strcspn(ct, "; \t");
        if (n < sizeof(ctb))
            snprintf(ctb, sizeof(ctb), "%.*s", (int)n, ct);
    }
    if (strcasecmp(ctb, "application/atls") != 0 && strcasecmp(ctb, "application/atls+octet-stream") != 0)
        return problem(mc, 415, "unsupported-media-type", "Unsupported media type",
                       "expected application/atls (or draft-00 application/atls+octet-stream)", NULL);
    return handle_atls(mc, legacy ? "application/atls+octet-stream" : "application/atls", rs);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)mc;
    (void)toe;
    req_state *rs = *con_cls;
    engine_thread_release();
    if (rs) {
        abuf_free(&rs->body);
        free(rs);
        *con_cls = NULL;
    }
}

static int run_server(const atls_cfg *cfg, const char *export_file)
{
    /* Block SIGTERM/SIGINT first, in every thread (MHD's inherits the mask): a SIGTERM that
     * comes during setup is still answered with exit 0 once main reaches sigwait(). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    const char *port_s = getenv("PORT");
    const char *host = getenv("HOST");
    if (!host || !*host)
        host = "127.0.0.1";
    char *endp = NULL;
    long port = port_s ? strtol(port_s, &endp, 10) : 0;
    if (!port_s || !*port_s || *endp || port < 1 || port > 65535) {
        logf_("PORT is missing or invalid");
        return 1;
    }
    if (!cfg->have_own_cert) {
        logf_("server needs cert.pem and key.pem in CERTS");
        return 1;
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gr = getaddrinfo(host, port_s, &hints, &ai);
    if (gr != 0 || !ai) {
        logf_("cannot resolve HOST %s: %s", host, gai_strerror(gr));
        return 1;
    }
    S.urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (S.urandom < 0) {
        logf_("cannot open /dev/urandom");
        freeaddrinfo(ai);
        return 1;
    }
    char err[512] = "";
    S.eng = engine_new(cfg, err, sizeof(err));
    S.cfg = cfg;
    S.export_file = export_file;
    if (!S.eng) {
        logf_("TLS setup failed: %s", err);
        freeaddrinfo(ai);
        return 1;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* One polling thread: every handler runs there, so sessions need no lock. */
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, &on_request, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)15, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)128,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_NOTIFY_COMPLETED, &on_completed, NULL,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d) {
        logf_("cannot listen on %s:%ld: %s", host, port, strerror(errno));
        engine_free(S.eng);
        return 1;
    }
    logf_("listening on %s:%ld (%s), testcase %s", host, port, engine_stack_version(), cfg->testcase);
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    logf_("signal %d: stopping", sig);
    MHD_stop_daemon(d);
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (S.sessions[i].conn)
            session_drop(&S.sessions[i]);
    engine_free(S.eng);
    close(S.urandom);
    return 0;
}

/* ================================================================= main */

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *role = getenv("ROLE");
    const char *testcase = getenv("TESTCASE");
    const char *certs = getenv("CERTS");
    const char *export_file = getenv("EXPORT_FILE");
    if (!role || (strcmp(role, "client") && strcmp(role, "server"))) {
        fprintf(stderr, "ROLE must be client or server\n");
        return 1;
    }
    snprintf(g_role, sizeof(g_role), "%s", role);
    if (!testcase || !*testcase) {
        logf_("TESTCASE is not set");
        return 1;
    }
    const testcase_t *tc = NULL;
    for (size_t i = 0; i < sizeof(TESTCASES) / sizeof(TESTCASES[0]); i++)
        if (strcmp(TESTCASES[i].name, testcase) == 0)
            tc = &TESTCASES[i];
    if (!tc) {
        fprintf(stderr, "unsupported test case %s (not implemented by this %s peer)\n", testcase, engine_name());
        return 127;
    }
    if (!certs || !*certs) {
        logf_("CERTS is not set");
        return 1;
    }
    static atls_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.is_server = strcmp(role, "server") == 0;
    cfg.tls_min = tc->tls_min;
    cfg.tls_max = tc->tls_max;
    cfg.chacha_only = tc->chacha;
    cfg.export_use_context = tc->empty_ctx;
    cfg.dtls = tc->dtls;
    cfg.testcase = tc->name;
    const char *kl = getenv("KEYLOG_FILE");
    cfg.keylog_file = (kl && *kl) ? kl : NULL;
    if (snprintf(cfg.ca_pem, sizeof(cfg.ca_pem), "%s/ca.pem", certs) >= (int)sizeof(cfg.ca_pem) ||
        snprintf(cfg.cert_pem, sizeof(cfg.cert_pem), "%s/cert.pem", certs) >= (int)sizeof(cfg.cert_pem) ||
        snprintf(cfg.key_pem, sizeof(cfg.key_pem), "%s/key.pem", certs) >= (int)sizeof(cfg.key_pem)) {
        logf_("CERTS path too long");
        return 1;
    }
    cfg.have_own_cert = file_exists(cfg.cert_pem) && file_exists(cfg.key_pem);
    if (!file_exists(cfg.ca_pem)) {
        logf_("%s is missing", cfg.ca_pem);
        return 1;
    }
    if (!cfg.is_server) {
        char p[1100];
        snprintf(p, sizeof(p), "%s/server-name", certs);
        if (read_small_file(p, cfg.server_name, sizeof(cfg.server_name)) != 0) {
            logf_("%s is missing or empty", p);
            return 1;
        }
    }
    const char *why = engine_unsupported(&cfg);
    if (why) {
        fprintf(stderr, "%s\n", why);
        return 127;
    }
    return cfg.is_server ? run_server(&cfg, export_file) : run_client(&cfg, tc, export_file);
}
