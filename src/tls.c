/* tls.c - OpenSSL contexts built from the config, and questions about a
 * TLS session (what it runs, whose certificate it carries).
 *
 * The record I/O and the handshake live in stream.c, next to the plain
 * socket I/O they replace; this file never touches a socket. */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "log.h"
#include "stream.h"

/* The current contexts and the config they were built from (a reference,
 * so that a later config can never reuse its address unnoticed). */
static struct {
    struct config *cfg;
    SSL_CTX *clients; /* NULL: client TLS off */
    SSL_CTX *servers; /* NULL: server TLS off */
    enum tls_sslmode client_mode, server_mode;
} g_tls;

const char *tls_sslmode_str(enum tls_sslmode m)
{
    static const char *const names[] = {"disable", "allow",     "prefer",
                                        "require", "verify-ca", "verify-full"};
    return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "?";
}

bool tls_parse_sslmode(const char *s, enum tls_sslmode *out)
{
    for (int m = TLS_MODE_DISABLE; m <= TLS_MODE_VERIFY_FULL; m++) {
        if (strcasecmp(s, tls_sslmode_str((enum tls_sslmode)m)) == 0) {
            *out = (enum tls_sslmode)m;
            return true;
        }
    }
    return false;
}

bool tls_parse_protocols(const char *s, unsigned *mask, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        unsigned bits;
    } words[] = {
        {"secure", TLS_PROTO_TLS12 | TLS_PROTO_TLS13},
        {"default", TLS_PROTO_TLS12 | TLS_PROTO_TLS13},
        {"all", TLS_PROTO_TLS10 | TLS_PROTO_TLS11 | TLS_PROTO_TLS12 | TLS_PROTO_TLS13},
        {"legacy", TLS_PROTO_TLS10 | TLS_PROTO_TLS11 | TLS_PROTO_TLS12 | TLS_PROTO_TLS13},
        {"tlsv1", TLS_PROTO_TLS10},
        {"tlsv1.0", TLS_PROTO_TLS10},
        {"tlsv1.1", TLS_PROTO_TLS11},
        {"tlsv1.2", TLS_PROTO_TLS12},
        {"tlsv1.3", TLS_PROTO_TLS13},
    };
    char buf[256];
    if (strlen(s) >= sizeof(buf)) {
        snprintf(err, errlen, "protocol list too long");
        return false;
    }
    snprintf(buf, sizeof(buf), "%s", s);
    unsigned m = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        if (*tok == '+')
            tok++;
        size_t i;
        for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strcasecmp(tok, words[i].name) == 0)
                break;
        if (i == sizeof(words) / sizeof(words[0])) {
            snprintf(err, errlen,
                     "unknown TLS protocol \"%s\" (expected secure, all, legacy or a list of "
                     "tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3)",
                     tok);
            return false;
        }
        m |= words[i].bits;
    }
    if (!m) {
        snprintf(err, errlen, "no TLS protocol given");
        return false;
    }
    *mask = m;
    return true;
}

/* The latest OpenSSL error as text (the queue is emptied). */
static const char *ssl_errstr(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    unsigned long next;
    /* The last error is usually the one closest to the cause. */
    while ((next = ERR_get_error()) != 0)
        e = next;
    if (!e) {
        snprintf(buf, len, "unknown OpenSSL error");
        return buf;
    }
    ERR_error_string_n(e, buf, len);
    return buf;
}

/* Applies a protocol mask: a version range, and NO_ options for gaps in it. */
static bool ctx_set_protocols(SSL_CTX *ctx, unsigned mask)
{
    static const struct {
        unsigned bit;
        int version;
        uint64_t no_opt;
    } v[] = {
        {TLS_PROTO_TLS10, TLS1_VERSION, SSL_OP_NO_TLSv1},
        {TLS_PROTO_TLS11, TLS1_1_VERSION, SSL_OP_NO_TLSv1_1},
        {TLS_PROTO_TLS12, TLS1_2_VERSION, SSL_OP_NO_TLSv1_2},
        {TLS_PROTO_TLS13, TLS1_3_VERSION, SSL_OP_NO_TLSv1_3},
    };
    int lo = -1, hi = -1;
    for (int i = 0; i < 4; i++) {
        if (mask & v[i].bit) {
            if (lo < 0)
                lo = i;
            hi = i;
        }
    }
    if (lo < 0)
        return false;
    if (!SSL_CTX_set_min_proto_version(ctx, v[lo].version) ||
        !SSL_CTX_set_max_proto_version(ctx, v[hi].version))
        return false;
    for (int i = lo; i <= hi; i++)
        if (!(mask & v[i].bit))
            SSL_CTX_set_options(ctx, v[i].no_opt);
    return true;
}

/* PgBouncer's cipher shortcuts; anything else is an OpenSSL cipher list. */
static const char *cipher_list(const char *s)
{
    if (!s[0] || !strcasecmp(s, "default") || !strcasecmp(s, "secure") || !strcasecmp(s, "fast") ||
        !strcasecmp(s, "normal"))
        return NULL; /* OpenSSL's defaults */
    if (!strcasecmp(s, "all") || !strcasecmp(s, "insecure") || !strcasecmp(s, "compat") ||
        !strcasecmp(s, "legacy"))
        return "ALL";
    return s;
}

/* One side's client_tls_* or server_tls_* settings, as tls_ctx_new() reads
 * them. */
struct tls_settings {
    bool clients;       /* TLS_SIDE_CLIENTS: sluice is the TLS server */
    const char *who;    /* "client" or "server": the keys' prefix, for errors */
    const char *mode_s; /* *_tls_sslmode as written */
    const char *key, *cert, *ca, *protocols, *ciphers;
    const char *ciphers13; /* *_tls13_ciphers: TLS 1.3 suites; "" = OpenSSL's */
    enum tls_sslmode mode; /* set by tls_settings_check() */
    unsigned mask;         /* TLS_PROTO_* bits, set by tls_settings_check() */
};

static void tls_settings_of(const struct config *cfg, enum tls_side side, struct tls_settings *t)
{
    bool cl = side == TLS_SIDE_CLIENTS;
    t->clients = cl;
    t->who = cl ? "client" : "server";
    t->mode_s = cl ? cfg->client_tls_sslmode : cfg->server_tls_sslmode;
    t->key = cl ? cfg->client_tls_key_file : cfg->server_tls_key_file;
    t->cert = cl ? cfg->client_tls_cert_file : cfg->server_tls_cert_file;
    t->ca = cl ? cfg->client_tls_ca_file : cfg->server_tls_ca_file;
    t->protocols = cl ? cfg->client_tls_protocols : cfg->server_tls_protocols;
    t->ciphers = cl ? cfg->client_tls_ciphers : cfg->server_tls_ciphers;
    t->ciphers13 = cl ? cfg->client_tls13_ciphers : cfg->server_tls13_ciphers;
    t->mode = TLS_MODE_DISABLE;
    t->mask = 0;
}

/* The checks that need no OpenSSL: the mode, the files a mode needs, the
 * protocol list. Sets t->mode and t->mask; with mode disable nothing else
 * is looked at. false with err. */
static bool tls_settings_check(struct tls_settings *t, char *err, size_t errlen)
{
    char ebuf[256];
    if (!tls_parse_sslmode(t->mode_s, &t->mode)) {
        snprintf(err, errlen, "%s_tls_sslmode: unknown mode \"%s\"", t->who, t->mode_s);
        return false;
    }
    if (t->mode == TLS_MODE_DISABLE)
        return true;
    if (t->clients && (!t->key[0] || !t->cert[0])) {
        snprintf(err, errlen,
                 "client_tls_sslmode = %s needs client_tls_key_file and client_tls_cert_file",
                 t->mode_s);
        return false;
    }
    if (t->clients && t->mode >= TLS_MODE_VERIFY_CA && !t->ca[0]) {
        snprintf(err, errlen, "client_tls_sslmode = %s needs client_tls_ca_file", t->mode_s);
        return false;
    }
    if (!!t->key[0] != !!t->cert[0]) {
        snprintf(err, errlen, "%s_tls_key_file and %s_tls_cert_file go together", t->who, t->who);
        return false;
    }
    if (!tls_parse_protocols(t->protocols, &t->mask, ebuf, sizeof(ebuf))) {
        snprintf(err, errlen, "%s_tls_protocols: %s", t->who, ebuf);
        return false;
    }
    return true;
}

/* A new context for t's side with sluice's fixed modes and options, t's
 * protocols and t's ciphers. NULL with err. */
static SSL_CTX *tls_ctx_base(const struct tls_settings *t, char *err, size_t errlen)
{
    char ebuf[256];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(t->clients ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new: %s", ssl_errstr(ebuf, sizeof(ebuf)));
        return NULL;
    }
    /* Output is retried from the stream's queue, which may have moved or
     * grown since the call that wanted to write. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* A peer that just closes the socket is an EOF like any other. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    /* Every connection is long-lived and made once: resumption buys
     * nothing, and no cache means no shared state to size or lock. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!ctx_set_protocols(ctx, t->mask)) {
        snprintf(err, errlen, "%s_tls_protocols \"%s\": %s", t->who, t->protocols,
                 ssl_errstr(ebuf, sizeof(ebuf)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    const char *cl_list = cipher_list(t->ciphers);
    if (cl_list && !SSL_CTX_set_cipher_list(ctx, cl_list)) {
        snprintf(err, errlen, "%s_tls_ciphers \"%s\": %s", t->who, t->ciphers,
                 ssl_errstr(ebuf, sizeof(ebuf)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* PgBouncer 1.25's *_tls13_ciphers: OpenSSL's colon-separated suite
     * names (TLS_AES_128_GCM_SHA256:...). */
    if (t->ciphers13[0] && !SSL_CTX_set_ciphersuites(ctx, t->ciphers13)) {
        snprintf(err, errlen, "%s_tls13_ciphers \"%s\": %s", t->who, t->ciphers13,
                 ssl_errstr(ebuf, sizeof(ebuf)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Why OpenSSL could not load path: the system's reason when the file cannot
 * be opened (OpenSSL's own says only "system lib"), else OpenSSL's. */
static const char *file_errstr(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(buf, len, "%s", strerror(errno));
        ERR_clear_error();
        return buf;
    }
    fclose(f);
    return ssl_errstr(buf, len);
}

/* Loads t's certificate chain and key (when set; they go together) and its
 * CA file (when set) into ctx. false with err naming the file at fault. */
static bool tls_ctx_load_files(SSL_CTX *ctx, const struct tls_settings *t, char *err, size_t errlen)
{
    char ebuf[256];
    if (t->cert[0]) {
        if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
            snprintf(err, errlen, "%s_tls_cert_file \"%s\": %s", t->who, t->cert,
                     file_errstr(t->cert, ebuf, sizeof(ebuf)));
            return false;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) {
            snprintf(err, errlen, "%s_tls_key_file \"%s\": %s", t->who, t->key,
                     file_errstr(t->key, ebuf, sizeof(ebuf)));
            return false;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            snprintf(err, errlen, "%s_tls_key_file \"%s\" does not match %s_tls_cert_file: %s",
                     t->who, t->key, t->who, ssl_errstr(ebuf, sizeof(ebuf)));
            return false;
        }
    }
    if (t->ca[0] && SSL_CTX_load_verify_locations(ctx, t->ca, NULL) != 1) {
        snprintf(err, errlen, "%s_tls_ca_file \"%s\": %s", t->who, t->ca,
                 file_errstr(t->ca, ebuf, sizeof(ebuf)));
        return false;
    }
    return true;
}

/* The clients' side: key exchange parameters (client_tls_dheparams,
 * client_tls_ecdhcurve), no tickets, and which client certificates are
 * asked for. false with err. */
static bool tls_ctx_setup_clients(SSL_CTX *ctx, const struct config *cfg,
                                  const struct tls_settings *t, char *err, size_t errlen)
{
    char ebuf[256];
    const char *dh = cfg->client_tls_dheparams;
    if (!strcasecmp(dh, "auto") || !strcasecmp(dh, "legacy") || !dh[0]) {
        SSL_CTX_set_dh_auto(ctx, 1);
    } else if (strcasecmp(dh, "none") != 0) {
        snprintf(err, errlen, "client_tls_dheparams \"%s\": expected none, auto or legacy", dh);
        return false;
    }
    const char *curve = cfg->client_tls_ecdhcurve;
    if (curve[0] && strcasecmp(curve, "auto") != 0 && strcasecmp(curve, "none") != 0 &&
        SSL_CTX_set1_groups_list(ctx, curve) != 1) {
        snprintf(err, errlen, "client_tls_ecdhcurve \"%s\": %s", curve,
                 ssl_errstr(ebuf, sizeof(ebuf)));
        return false;
    }
    SSL_CTX_set_num_tickets(ctx, 0);
    /* Ask for a certificate only when it is checked: verify-ca and
     * verify-full require one, auth_type cert uses it if it verifies. */
    int verify = SSL_VERIFY_NONE;
    if (t->mode >= TLS_MODE_VERIFY_CA)
        verify = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    else if (cfg->auth_type == AUTH_TYPE_CERT && t->ca[0])
        verify = SSL_VERIFY_PEER;
    if (verify != SSL_VERIFY_NONE) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
    }
    SSL_CTX_set_verify(ctx, verify, NULL);
    return true;
}

/* The servers' side: whether their certificates are checked, and against
 * what. false with err. */
static bool tls_ctx_setup_servers(SSL_CTX *ctx, const struct tls_settings *t, char *err,
                                  size_t errlen)
{
    char ebuf[256];
    /* Without a CA file, verification uses the system's trust store,
     * which holds the CAs of the hosted services' public endpoints. */
    if (!t->ca[0] && t->mode >= TLS_MODE_VERIFY_CA && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "server_tls_ca_file is empty and the system CA store failed: %s",
                 ssl_errstr(ebuf, sizeof(ebuf)));
        return false;
    }
    SSL_CTX_set_verify(ctx, t->mode >= TLS_MODE_VERIFY_CA ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       NULL);
    return true;
}

void *tls_ctx_new(const struct config *cfg, enum tls_side side, char *err, size_t errlen)
{
    struct tls_settings t;
    err[0] = '\0';
    tls_settings_of(cfg, side, &t);
    if (!tls_settings_check(&t, err, errlen) || t.mode == TLS_MODE_DISABLE)
        return NULL;
    SSL_CTX *ctx = tls_ctx_base(&t, err, errlen);
    if (!ctx)
        return NULL;
    bool ok = tls_ctx_load_files(ctx, &t, err, errlen) &&
              (t.clients ? tls_ctx_setup_clients(ctx, cfg, &t, err, errlen)
                         : tls_ctx_setup_servers(ctx, &t, err, errlen));
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void tls_ctx_free(void *ctx)
{
    SSL_CTX_free(ctx);
}

/* Makes (cfg, clients, servers) current, freeing what they replace. */
static void tls_install(struct config *cfg, SSL_CTX *clients, SSL_CTX *servers)
{
    if (g_tls.clients)
        SSL_CTX_free(g_tls.clients);
    if (g_tls.servers)
        SSL_CTX_free(g_tls.servers);
    if (g_tls.cfg)
        config_unref(g_tls.cfg);
    g_tls.cfg = cfg ? config_ref(cfg) : NULL;
    g_tls.clients = clients;
    g_tls.servers = servers;
    g_tls.client_mode = TLS_MODE_DISABLE;
    g_tls.server_mode = TLS_MODE_DISABLE;
    if (cfg) {
        tls_parse_sslmode(cfg->client_tls_sslmode, &g_tls.client_mode);
        tls_parse_sslmode(cfg->server_tls_sslmode, &g_tls.server_mode);
    }
}

bool tls_apply_config(const struct config *cfg, char *err, size_t errlen)
{
    SSL_CTX *clients = tls_ctx_new(cfg, TLS_SIDE_CLIENTS, err, errlen);
    if (!clients && err[0])
        return false;
    SSL_CTX *servers = tls_ctx_new(cfg, TLS_SIDE_SERVERS, err, errlen);
    if (!servers && err[0]) {
        if (clients)
            SSL_CTX_free(clients);
        return false;
    }
    tls_install((struct config *)cfg, clients, servers);
    return true;
}

bool tls_server_settings_differ(const struct config *a, const struct config *b)
{
    return strcmp(a->server_tls_sslmode, b->server_tls_sslmode) != 0 ||
           strcmp(a->server_tls_key_file, b->server_tls_key_file) != 0 ||
           strcmp(a->server_tls_cert_file, b->server_tls_cert_file) != 0 ||
           strcmp(a->server_tls_ca_file, b->server_tls_ca_file) != 0 ||
           strcmp(a->server_tls_protocols, b->server_tls_protocols) != 0 ||
           strcmp(a->server_tls_ciphers, b->server_tls_ciphers) != 0;
}

bool tls_pair_half_ok(const char *key, const char *value)
{
    bool is_key =
        !strcasecmp(key, "client_tls_key_file") || !strcasecmp(key, "server_tls_key_file");
    bool is_cert =
        !strcasecmp(key, "client_tls_cert_file") || !strcasecmp(key, "server_tls_cert_file");
    if ((!is_key && !is_cert) || !value[0])
        return false;
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx)
        return false;
    bool ok = is_key ? SSL_CTX_use_PrivateKey_file(ctx, value, SSL_FILETYPE_PEM) == 1
                     : SSL_CTX_use_certificate_chain_file(ctx, value) == 1;
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

void tls_shutdown(void)
{
    tls_install(NULL, NULL, NULL);
}

/* Every config swap (start, reload, the admin console's SET) goes through
 * tls_apply_config() first, so the contexts follow the running config. */
enum tls_sslmode tls_client_mode(void)
{
    return g_tls.clients ? g_tls.client_mode : TLS_MODE_DISABLE;
}

enum tls_sslmode tls_server_mode(void)
{
    return g_tls.servers ? g_tls.server_mode : TLS_MODE_DISABLE;
}

bool tls_client_accept(struct stream *s)
{
    if (tls_client_mode() == TLS_MODE_DISABLE || s->tls)
        return false;
    /* The 'S' goes out in the clear, before any TLS byte. Nothing else is
     * queued at this point of the startup, so one send() takes it. */
    if (send(s->fd, "S", 1, MSG_NOSIGNAL) != 1)
        return false;
    s->bytes_out++;
    if (!stream_tls_accept(s, g_tls.clients))
        s->ops->on_closed(s, "could not start TLS"); /* 'S' is out: no way back */
    return true;
}

bool tls_client_required(void)
{
    return tls_client_mode() >= TLS_MODE_REQUIRE;
}

bool tls_client_cert_matches(const struct stream *s, const char *user)
{
    SSL *ssl = stream_tls_ssl(s);
    if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK)
        return false;
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (!peer)
        return false;
    char cn[256];
    int n =
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, (int)sizeof(cn));
    X509_free(peer);
    /* A CN with an embedded NUL would compare equal to a shorter name. */
    return n > 0 && (size_t)n == strlen(cn) && strcmp(cn, user) == 0;
}

size_t tls_cert_endpoint_hash(const void *cert, uint8_t *out, size_t cap)
{
    /* RFC 5929 section 4.1: the certificate's signature hash, except that
     * MD5 and SHA-1 become SHA-256. PostgreSQL and libpq decide alike. */
    int md_nid = NID_undef, pk_nid;
    if (!cert || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
        return 0;
    if (md_nid == NID_md5 || md_nid == NID_sha1)
        md_nid = NID_sha256;
    const EVP_MD *md = EVP_get_digestbynid(md_nid);
    unsigned int n = 0;
    /* No digest (Ed25519 signs whole messages): no binding, as in PostgreSQL. */
    if (!md || (size_t)EVP_MD_get_size(md) > cap || !X509_digest(cert, md, out, &n))
        return 0;
    return n;
}

size_t tls_endpoint_hash(const struct stream *s, bool ours, uint8_t *out, size_t cap)
{
    SSL *ssl = stream_tls_ssl(s);
    if (!ssl)
        return 0;
    if (ours)
        return tls_cert_endpoint_hash(SSL_get_certificate(ssl), out, cap);
    X509 *peer = SSL_get1_peer_certificate(ssl);
    size_t n = tls_cert_endpoint_hash(peer, out, cap);
    X509_free(peer);
    return n;
}

void tls_server_prepare(struct stream *s, const char *host)
{
    enum tls_sslmode mode = tls_server_mode();
    if (mode == TLS_MODE_DISABLE || s->fd < 0)
        return;
    int domain = 0;
    socklen_t len = sizeof(domain);
    if (getsockopt(s->fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX)
        return; /* PostgreSQL does no TLS on unix sockets */
    if (!stream_tls_request(s, g_tls.servers, mode, host ? host : "", mode == TLS_MODE_VERIFY_FULL))
        log_warning("could not set up TLS towards %s; connecting without", host);
}

const char *tls_describe(const struct stream *s, char *buf, size_t len)
{
    SSL *ssl = stream_tls_ssl(s);
    if (!len)
        return buf;
    if (!ssl) {
        buf[0] = '\0';
        return buf;
    }
    snprintf(buf, len, "%s/%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    return buf;
}
