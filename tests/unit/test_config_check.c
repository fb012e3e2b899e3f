/* test_config_check.c - the whole-config check behind --check, the start
 * and RELOAD: every problem reported, each at the right file and line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_check.h"

#include "tmpdir_test.h"

/* An EC key in tmpdir/key_name and, with cert_name, a self-signed
 * certificate for it. */
static void make_key(const char *key_name, const char *cert_name)
{
    char path[256];
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    assert_non_null(pkey);
    snprintf(path, sizeof(path), "%s/%s", tmpdir, key_name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    if (cert_name) {
        X509 *x = X509_new();
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, pkey);
        X509_NAME *name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"t", -1, -1, 0);
        X509_set_issuer_name(x, name);
        assert_true(X509_sign(x, pkey, EVP_sha256()) > 0);
        snprintf(path, sizeof(path), "%s/%s", tmpdir, cert_name);
        f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(PEM_write_X509(f, x), 1);
        fclose(f);
        X509_free(x);
    }
    EVP_PKEY_free(pkey);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-check-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    make_key("a.key", "a.crt");
    make_key("b.key", NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Checks the ini text (each %s in it stands for tmpdir): the number of
 * problems, and leaves them in *p. */
static int check(const char *tmpl, struct config_problems *p)
{
    char text[2048];
    size_t n = 0;
    for (const char *c = tmpl; *c && n + sizeof(tmpdir) < sizeof(text); c++) {
        if (c[0] == '%' && c[1] == 's') {
            n += (size_t)snprintf(text + n, sizeof(text) - n, "%s", tmpdir);
            c++;
        } else {
            text[n++] = *c;
        }
    }
    text[n] = '\0';
    const char *path = write_file("t.ini", text);
    struct config *cfg;
    struct auth_userlist *ul;
    config_problems_free(p);
    bool ok = config_check_load(path, &cfg, &ul, p);
    assert_int_equal(ok, p->n == 0);
    if (ok) {
        assert_non_null(cfg);
        auth_userlist_free(ul);
        config_unref(cfg);
    } else {
        assert_null(cfg);
        assert_null(ul);
    }
    return p->n;
}

/* p's message i is "DIR/NAME:LINE: " followed by rest (rest may be a
 * prefix of the reason when it ends in '*'). */
static void expect(const struct config_problems *p, int i, const char *name, int line,
                   const char *rest)
{
    char want[512];
    snprintf(want, sizeof(want), "%s/%s:%d: %s", tmpdir, name, line, rest);
    size_t n = strlen(want);
    if (want[n - 1] == '*')
        assert_memory_equal(p->msgs[i], want, n - 1);
    else
        assert_string_equal(p->msgs[i], want);
}

static void test_good(void **state)
{
    (void)state;
    struct config_problems p = {0};
    write_file("users.txt", "\"alice\" \"secret\"\n");
    struct config *cfg;
    struct auth_userlist *ul;
    char text[512];
    snprintf(text, sizeof(text),
             "[databases]\ndb = host=127.0.0.1\n[pgbouncer]\nauth_file = %s/users.txt\n"
             "client_tls_sslmode = require\nclient_tls_key_file = %s/a.key\n"
             "client_tls_cert_file = %s/a.crt\n",
             tmpdir, tmpdir, tmpdir);
    assert_true(config_check_load(write_file("g.ini", text), &cfg, &ul, &p));
    assert_int_equal(p.n, 0);
    assert_non_null(ul);
    assert_non_null(auth_userlist_find(ul, "alice"));
    auth_userlist_free(ul);
    config_unref(cfg);

    /* no auth_file: no userlist, and fine */
    assert_int_equal(check("[pgbouncer]\nlisten_port = 7\n", &p), 0);
}

static void test_auth_file(void **state)
{
    (void)state;
    struct config_problems p = {0};
    /* missing: placed at the auth_file line of the config */
    assert_int_equal(check("[pgbouncer]\n\nauth_file = %s/none.txt\n", &p), 1);
    char rest[256];
    snprintf(rest, sizeof(rest), "auth_file %s/none.txt: No such file or directory", tmpdir);
    expect(&p, 0, "t.ini", 3, rest);
    /* bad lines: each at its own line in the auth_file */
    write_file("u.txt", "\"a\" \"x\"\n; ok\nb \"y\"\n\"c\"\n");
    assert_int_equal(check("[pgbouncer]\nauth_file = %s/u.txt\n", &p), 2);
    expect(&p, 0, "u.txt", 3, "expected a quoted user name");
    expect(&p, 1, "u.txt", 4, "password missing");
    config_problems_free(&p);
}

static void test_tls(void **state)
{
    (void)state;
    struct config_problems p = {0};
    /* a key that is not the certificate's: at the key's line */
    assert_int_equal(check("[pgbouncer]\nclient_tls_sslmode = require\n"
                           "client_tls_cert_file = %s/a.crt\nclient_tls_key_file = %s/b.key\n",
                           &p),
                     1);
    expect(&p, 0, "t.ini", 4, "client_tls_key_file *");
    assert_true(strstr(p.msgs[0], "mismatch") || strstr(p.msgs[0], "does not match"));
    /* a missing certificate: the system's reason */
    assert_int_equal(check("[pgbouncer]\nclient_tls_sslmode = require\n"
                           "client_tls_key_file = %s/a.key\nclient_tls_cert_file = %s/no.crt\n",
                           &p),
                     1);
    char rest[256];
    snprintf(rest, sizeof(rest), "client_tls_cert_file \"%s/no.crt\": No such file or directory",
             tmpdir);
    expect(&p, 0, "t.ini", 4, rest);
    /* the servers' side too, and both sides in one run */
    assert_int_equal(check("[pgbouncer]\nserver_tls_sslmode = verify-ca\n"
                           "server_tls_ca_file = %s/no.crt\nclient_tls_sslmode = require\n",
                           &p),
                     2);
    expect(&p, 0, "t.ini", 4, "client_tls_sslmode = require needs *");
    expect(&p, 1, "t.ini", 3, "server_tls_ca_file *");
    config_problems_free(&p);
}

/* Bad lines and bad named files in one run: all reported, lines first. */
static void test_all_at_once(void **state)
{
    (void)state;
    struct config_problems p = {0};
    assert_int_equal(check("[databases]\nd = port=x\n[pgbouncer]\nauth_file = %s/none.txt\n"
                           "track_extra_parameters = a;b\nuser = no-such-user-here\n"
                           "[jobs]\nj = database=d command=\"select 1\" schedule=\"99 * * * *\"\n",
                           &p),
                     5);
    expect(&p, 0, "t.ini", 2, "invalid value \"x\" for port: not an integer");
    expect(&p, 1, "t.ini", 8, "*");
    assert_non_null(strstr(p.msgs[1], "99"));
    expect(&p, 2, "t.ini", 5, "track_extra_parameters: \"a;b\" is not a parameter name");
    expect(&p, 3, "t.ini", 6, "user \"no-such-user-here\": no such user on this system");
    expect(&p, 4, "t.ini", 4, "auth_file *");
    config_problems_free(&p);
}

static void test_place(void **state)
{
    (void)state;
    struct config_problems p = {0};
    char err[256];
    struct config *cfg =
        config_load_string("x.ini", "[pgbouncer]\nlisten_port = 7\n", err, sizeof(err));
    assert_non_null(cfg);
    /* the setting a message begins with places it; else the main file */
    config_check_place(cfg, &p, "listen_port \"7\": taken");
    config_check_place(cfg, &p, "SSL_CTX_new: failed");
    config_check_place(cfg, &p, "");
    assert_string_equal(p.msgs[0], "x.ini:2: listen_port \"7\": taken");
    assert_string_equal(p.msgs[1], "x.ini: SSL_CTX_new: failed");
    assert_string_equal(p.msgs[2], "x.ini: ");
    config_unref(cfg);
    config_problems_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),  cmocka_unit_test(test_auth_file),
        cmocka_unit_test(test_tls),   cmocka_unit_test(test_all_at_once),
        cmocka_unit_test(test_place),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
