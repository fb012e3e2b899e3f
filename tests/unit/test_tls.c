/* test_tls.c - the pure parts of the TLS module: sslmode and protocol
 * parsing, and contexts built from certificates made here (with OpenSSL's
 * API, into a temporary directory). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tls.h"

static char tmpdir[64];
static char key_path[128], cert_path[128], other_key_path[128];

/* ---- sslmode ----------------------------------------------------------------- */

static void test_sslmode_parse(void **state)
{
    (void)state;
    static const char *const names[] = {"disable", "allow",     "prefer",
                                        "require", "verify-ca", "verify-full"};
    for (int i = 0; i < 6; i++) {
        enum tls_sslmode m = TLS_MODE_DISABLE;
        assert_true(tls_parse_sslmode(names[i], &m));
        assert_int_equal(m, i);
        assert_string_equal(tls_sslmode_str(m), names[i]);
    }
    enum tls_sslmode m = TLS_MODE_PREFER;
    assert_true(tls_parse_sslmode("VERIFY-FULL", &m));
    assert_int_equal(m, TLS_MODE_VERIFY_FULL);
    assert_false(tls_parse_sslmode("verify_full", &m));
    assert_false(tls_parse_sslmode("", &m));
    assert_false(tls_parse_sslmode("on", &m));
    assert_int_equal(m, TLS_MODE_VERIFY_FULL); /* untouched on failure */
    assert_string_equal(tls_sslmode_str((enum tls_sslmode)42), "?");
    /* Strictness grows with the value: code compares modes with >=. */
    assert_true(TLS_MODE_REQUIRE > TLS_MODE_PREFER && TLS_MODE_VERIFY_CA > TLS_MODE_REQUIRE);
}

/* ---- protocols --------------------------------------------------------------- */

static void test_protocols_parse(void **state)
{
    (void)state;
    char err[256];
    unsigned m = 0;
    const unsigned all = TLS_PROTO_TLS10 | TLS_PROTO_TLS11 | TLS_PROTO_TLS12 | TLS_PROTO_TLS13;

    assert_true(tls_parse_protocols("secure", &m, err, sizeof(err)));
    assert_int_equal(m, TLS_PROTO_TLS12 | TLS_PROTO_TLS13);
    assert_true(tls_parse_protocols("default", &m, err, sizeof(err)));
    assert_int_equal(m, TLS_PROTO_TLS12 | TLS_PROTO_TLS13);
    assert_true(tls_parse_protocols("all", &m, err, sizeof(err)));
    assert_int_equal(m, all);
    assert_true(tls_parse_protocols("legacy", &m, err, sizeof(err)));
    assert_int_equal(m, all);
    assert_true(tls_parse_protocols("tlsv1.2,tlsv1.3", &m, err, sizeof(err)));
    assert_int_equal(m, TLS_PROTO_TLS12 | TLS_PROTO_TLS13);
    assert_true(tls_parse_protocols("TLSv1.3", &m, err, sizeof(err)));
    assert_int_equal(m, TLS_PROTO_TLS13);
    assert_true(tls_parse_protocols(" tlsv1.0 , +tlsv1.2 ", &m, err, sizeof(err)));
    assert_int_equal(m, TLS_PROTO_TLS10 | TLS_PROTO_TLS12);
    assert_true(tls_parse_protocols("tlsv1 tlsv1.1", &m, err, sizeof(err)));
    assert_int_equal(m, TLS_PROTO_TLS10 | TLS_PROTO_TLS11);

    m = 99;
    assert_false(tls_parse_protocols("tlsv1.4", &m, err, sizeof(err)));
    assert_non_null(strstr(err, "tlsv1.4"));
    assert_int_equal(m, 99);
    assert_false(tls_parse_protocols("", &m, err, sizeof(err)));
    assert_false(tls_parse_protocols(" , ", &m, err, sizeof(err)));
    assert_false(tls_parse_protocols("sslv3", &m, err, sizeof(err)));
    char long_list[400];
    memset(long_list, 'a', sizeof(long_list) - 1);
    long_list[sizeof(long_list) - 1] = '\0';
    assert_false(tls_parse_protocols(long_list, &m, err, sizeof(err)));
}

/* ---- contexts ------------------------------------------------------------------ */

/* Writes a fresh EC key, and a self-signed certificate for it if cert_file. */
static void make_key_and_cert(const char *key_file, const char *cert_file)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    assert_non_null(pkey);
    FILE *f = fopen(key_file, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    if (cert_file) {
        X509 *x = X509_new();
        assert_non_null(x);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, pkey);
        X509_NAME *name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                                   -1, 0);
        X509_set_issuer_name(x, name);
        assert_true(X509_sign(x, pkey, EVP_sha256()) > 0);
        f = fopen(cert_file, "w");
        assert_non_null(f);
        assert_int_equal(PEM_write_X509(f, x), 1);
        fclose(f);
        X509_free(x);
    }
    EVP_PKEY_free(pkey);
}

static int setup_certs(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-test-tls-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(key_path, sizeof(key_path), "%s/server.key", tmpdir);
    snprintf(cert_path, sizeof(cert_path), "%s/server.crt", tmpdir);
    snprintf(other_key_path, sizeof(other_key_path), "%s/other.key", tmpdir);
    make_key_and_cert(key_path, cert_path);
    make_key_and_cert(other_key_path, NULL);
    return 0;
}

static int teardown_certs(void **state)
{
    (void)state;
    unlink(key_path);
    unlink(cert_path);
    unlink(other_key_path);
    rmdir(tmpdir);
    return 0;
}

/* A config from ini lines after a minimal [pgbouncer] section. */
static struct config *cfg_with(const char *lines)
{
    char text[2048], err[512];
    snprintf(text, sizeof(text), "[databases]\n[pgbouncer]\nlisten_addr = 127.0.0.1\n%s", lines);
    struct config *cfg = config_load_string("test.ini", text, err, sizeof(err));
    if (!cfg)
        fail_msg("config: %s", err);
    return cfg;
}

/* tls_ctx_new for side with the given ini lines: the context (freed here)
 * or NULL, with err. */
static bool ctx_ok(const char *lines, enum tls_side side, char *err, size_t errlen)
{
    struct config *cfg = cfg_with(lines);
    void *ctx = tls_ctx_new(cfg, side, err, errlen);
    config_unref(cfg);
    if (ctx)
        SSL_CTX_free(ctx);
    return ctx != NULL;
}

static void test_ctx_client_side(void **state)
{
    (void)state;
    char lines[1024], err[512];

    /* disable: no context, and no error. */
    assert_false(ctx_ok("client_tls_sslmode = disable\n", TLS_SIDE_CLIENTS, err, sizeof(err)));
    assert_string_equal(err, "");

    snprintf(lines, sizeof(lines),
             "client_tls_sslmode = require\nclient_tls_key_file = %s\nclient_tls_cert_file = %s\n",
             key_path, cert_path);
    assert_true(ctx_ok(lines, TLS_SIDE_CLIENTS, err, sizeof(err)));

    /* Every documented option value. */
    snprintf(lines, sizeof(lines),
             "client_tls_sslmode = verify-full\nclient_tls_key_file = %s\n"
             "client_tls_cert_file = %s\nclient_tls_ca_file = %s\n"
             "client_tls_protocols = tlsv1.2,tlsv1.3\nclient_tls_ciphers = HIGH:!aNULL\n"
             "client_tls_dheparams = none\nclient_tls_ecdhcurve = prime256v1\n",
             key_path, cert_path, cert_path);
    assert_true(ctx_ok(lines, TLS_SIDE_CLIENTS, err, sizeof(err)));

    /* A key that is not the certificate's. */
    snprintf(lines, sizeof(lines),
             "client_tls_sslmode = require\nclient_tls_key_file = %s\nclient_tls_cert_file = %s\n",
             other_key_path, cert_path);
    assert_false(ctx_ok(lines, TLS_SIDE_CLIENTS, err, sizeof(err)));
    assert_non_null(strstr(err, "client_tls_key_file"));
    assert_true(strstr(err, "mismatch") || strstr(err, "does not match"));

    /* Missing files are named. */
    snprintf(lines, sizeof(lines),
             "client_tls_sslmode = require\nclient_tls_key_file = %s/nope.key\n"
             "client_tls_cert_file = %s\n",
             tmpdir, cert_path);
    assert_false(ctx_ok(lines, TLS_SIDE_CLIENTS, err, sizeof(err)));
    assert_non_null(strstr(err, "client_tls_key_file"));
    assert_non_null(strstr(err, "nope.key"));

    /* require without key and certificate. */
    assert_false(ctx_ok("client_tls_sslmode = require\n", TLS_SIDE_CLIENTS, err, sizeof(err)));
    assert_non_null(strstr(err, "client_tls_key_file and client_tls_cert_file"));

    /* verify-ca needs a CA to check client certificates against. */
    snprintf(
        lines, sizeof(lines),
        "client_tls_sslmode = verify-ca\nclient_tls_key_file = %s\nclient_tls_cert_file = %s\n",
        key_path, cert_path);
    assert_false(ctx_ok(lines, TLS_SIDE_CLIENTS, err, sizeof(err)));
    assert_non_null(strstr(err, "client_tls_ca_file"));

    /* Bad protocols, ciphers, curve, dheparams. */
    static const char *const bad[] = {
        "client_tls_protocols = tlsv9\n",
        "client_tls_ciphers = NO-SUCH-CIPHER\n",
        "client_tls_ecdhcurve = no-such-curve\n",
        "client_tls_dheparams = 1024\n",
    };
    static const char *const named[] = {"client_tls_protocols", "client_tls_ciphers",
                                        "client_tls_ecdhcurve", "client_tls_dheparams"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(lines, sizeof(lines),
                 "client_tls_sslmode = require\nclient_tls_key_file = %s\n"
                 "client_tls_cert_file = %s\n%s",
                 key_path, cert_path, bad[i]);
        assert_false(ctx_ok(lines, TLS_SIDE_CLIENTS, err, sizeof(err)));
        assert_non_null(strstr(err, named[i]));
    }
}

static void test_ctx_server_side(void **state)
{
    (void)state;
    char lines[1024], err[512];

    /* prefer (the default) needs nothing. */
    assert_true(ctx_ok("", TLS_SIDE_SERVERS, err, sizeof(err)));
    assert_false(ctx_ok("server_tls_sslmode = disable\n", TLS_SIDE_SERVERS, err, sizeof(err)));
    assert_string_equal(err, "");
    /* verify-full without a CA file uses the system store. */
    assert_true(ctx_ok("server_tls_sslmode = verify-full\n", TLS_SIDE_SERVERS, err, sizeof(err)));
    snprintf(lines, sizeof(lines),
             "server_tls_sslmode = verify-ca\nserver_tls_ca_file = %s\n"
             "server_tls_key_file = %s\nserver_tls_cert_file = %s\n",
             cert_path, key_path, cert_path);
    assert_true(ctx_ok(lines, TLS_SIDE_SERVERS, err, sizeof(err)));
    snprintf(lines, sizeof(lines), "server_tls_sslmode = verify-ca\nserver_tls_ca_file = %s/x\n",
             tmpdir);
    assert_false(ctx_ok(lines, TLS_SIDE_SERVERS, err, sizeof(err)));
    assert_non_null(strstr(err, "server_tls_ca_file"));
    /* A key without its certificate. */
    snprintf(lines, sizeof(lines), "server_tls_key_file = %s\n", key_path);
    assert_false(ctx_ok(lines, TLS_SIDE_SERVERS, err, sizeof(err)));
    assert_non_null(strstr(err, "go together"));
}

static void test_apply_config(void **state)
{
    (void)state;
    char lines[1024], err[512];
    snprintf(lines, sizeof(lines),
             "client_tls_sslmode = require\nclient_tls_key_file = %s\nclient_tls_cert_file = %s\n",
             key_path, cert_path);
    struct config *good = cfg_with(lines);
    struct config *bad = cfg_with("client_tls_sslmode = require\n");
    assert_true(tls_apply_config(good, err, sizeof(err)));
    /* A failed apply changes nothing. */
    assert_false(tls_apply_config(bad, err, sizeof(err)));
    assert_non_null(strstr(err, "client_tls_key_file"));
    config_unref(bad);
    config_unref(good); /* the module keeps its own reference */
    tls_shutdown();
}

/* ---- channel binding: the certificate hash (RFC 5929 section 4.1) ------------- */

/* A self-signed certificate for pkey, signed with md (NULL: the key's own). */
static X509 *self_signed(EVP_PKEY *pkey, const EVP_MD *md)
{
    X509 *x = X509_new();
    assert_non_null(x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"cbind", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    assert_true(X509_sign(x, pkey, md) > 0);
    return x;
}

static void expect_hash(X509 *x, const EVP_MD *want)
{
    uint8_t got[64], ref[64];
    unsigned int n = 0;
    size_t len = tls_cert_endpoint_hash(x, got, sizeof(got));
    assert_true(X509_digest(x, want, ref, &n));
    assert_int_equal(len, n);
    assert_memory_equal(got, ref, n);
    /* Too small a buffer: no hash rather than a cut one. */
    assert_int_equal(tls_cert_endpoint_hash(x, got, n - 1), 0);
}

static void test_endpoint_hash(void **state)
{
    (void)state;
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    assert_non_null(ec);
    X509 *x = self_signed(ec, EVP_sha256());
    expect_hash(x, EVP_sha256());
    X509_free(x);
    x = self_signed(ec, EVP_sha384());
    expect_hash(x, EVP_sha384());
    X509_free(x);
    x = self_signed(ec, EVP_sha512());
    expect_hash(x, EVP_sha512());
    X509_free(x);
    /* SHA-1 (and MD5) signatures hash with SHA-256. */
    x = self_signed(ec, EVP_sha1());
    expect_hash(x, EVP_sha256());
    X509_free(x);
    EVP_PKEY_free(ec);
    /* Ed25519 has no separate digest: no binding. */
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(ed);
    x = self_signed(ed, NULL);
    uint8_t buf[64];
    assert_int_equal(tls_cert_endpoint_hash(x, buf, sizeof(buf)), 0);
    X509_free(x);
    EVP_PKEY_free(ed);
    assert_int_equal(tls_cert_endpoint_hash(NULL, buf, sizeof(buf)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sslmode_parse),   cmocka_unit_test(test_protocols_parse),
        cmocka_unit_test(test_ctx_client_side), cmocka_unit_test(test_ctx_server_side),
        cmocka_unit_test(test_apply_config),    cmocka_unit_test(test_endpoint_hash),
    };
    return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
