/* test_auth.c - auth_file parsing and the MD5 / cleartext password checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"
#include "config.h"
#include "log.h"
#include "scram.h"

/* printf %s secretpostgres | md5sum */
#define PG_MD5 "md553f48b7c4b76a86ce72276c5755f217d"
/* md5(hex part of PG_MD5 || 01 02 03 04), from Python's hashlib */
#define PG_MD5_SALTED "md5bb41a296aab6baccb36ff243a562abff"
static const uint8_t SALT[4] = {1, 2, 3, 4};
/* password "pencil", RFC 7677's salt, 4096 iterations */
#define PENCIL_SCRAM                                                                               \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"    \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/* ---- md5 ---- */

static void test_md5_hash(void **state)
{
    (void)state;
    char out[AUTH_MD5_LEN + 1];
    auth_md5_hash("secret", "postgres", out);
    assert_string_equal(out, PG_MD5);
    auth_md5_hash("", "", out);
    /* md5 of the empty string */
    assert_string_equal(out, "md5d41d8cd98f00b204e9800998ecf8427e");
}

static void test_md5_salted(void **state)
{
    (void)state;
    char out[AUTH_MD5_LEN + 1];
    auth_md5_salted(PG_MD5, SALT, out);
    assert_string_equal(out, PG_MD5_SALTED);
    /* Not an md5 hash: no answer. */
    auth_md5_salted("secret", SALT, out);
    assert_string_equal(out, "");
    auth_md5_salted("md553F48B7C4B76A86CE72276C5755F217D", SALT, out);
    assert_string_equal(out, "");
}

static void test_md5_check(void **state)
{
    (void)state;
    static const uint8_t other_salt[4] = {1, 2, 3, 5};

    /* stored as plain text or as md5: both answer the challenge */
    assert_true(auth_md5_check("secret", "postgres", SALT, PG_MD5_SALTED));
    assert_true(auth_md5_check(PG_MD5, "postgres", SALT, PG_MD5_SALTED));
    /* wrong user (plain secrets are hashed with the user), salt, answer */
    assert_false(auth_md5_check("secret", "postgres2", SALT, PG_MD5_SALTED));
    assert_false(auth_md5_check(PG_MD5, "postgres", other_salt, PG_MD5_SALTED));
    assert_false(auth_md5_check("secreT", "postgres", SALT, PG_MD5_SALTED));
    /* shape of the answer */
    assert_false(auth_md5_check(PG_MD5, "postgres", SALT, "md5bb41a296aab6baccb36ff243a562abf"));
    assert_false(auth_md5_check(PG_MD5, "postgres", SALT, "md5bb41a296aab6baccb36ff243a562abff0"));
    assert_false(auth_md5_check(PG_MD5, "postgres", SALT, "md5BB41A296AAB6BACCB36FF243A562ABFF"));
    assert_false(auth_md5_check(PG_MD5, "postgres", SALT, ""));
    /* Replaying the stored hash itself is not an answer. */
    assert_false(auth_md5_check(PG_MD5, "postgres", SALT, PG_MD5));
    /* A SCRAM secret cannot answer an md5 challenge. */
    char resp[AUTH_MD5_LEN + 1], h[AUTH_MD5_LEN + 1];
    auth_md5_hash("pencil", "user", h);
    auth_md5_salted(h, SALT, resp);
    assert_true(auth_md5_check("pencil", "user", SALT, resp));
    assert_false(auth_md5_check(PENCIL_SCRAM, "user", SALT, resp));
}

/* ---- cleartext ---- */

static void test_plain_check(void **state)
{
    (void)state;
    assert_true(auth_plain_check("secret", "postgres", "secret"));
    assert_false(auth_plain_check("secret", "postgres", "secre"));
    assert_false(auth_plain_check("secret", "postgres", "secret "));
    assert_false(auth_plain_check("secret", "postgres", ""));
    assert_true(auth_plain_check("", "postgres", ""));

    assert_true(auth_plain_check(PG_MD5, "postgres", "secret"));
    assert_false(auth_plain_check(PG_MD5, "other", "secret"));
    assert_false(auth_plain_check(PG_MD5, "postgres", "Secret"));
    /* Sending the md5 hash as the password must not work. */
    assert_false(auth_plain_check(PG_MD5, "postgres", PG_MD5));

    assert_true(auth_plain_check(PENCIL_SCRAM, "user", "pencil"));
    assert_false(auth_plain_check(PENCIL_SCRAM, "user", "pencil2"));
    assert_false(auth_plain_check(PENCIL_SCRAM, "user", PENCIL_SCRAM));
}

/* ---- secret kinds ---- */

static void test_secret_kind(void **state)
{
    (void)state;
    assert_int_equal(auth_secret_kind("secret"), AUTH_SECRET_PLAIN);
    assert_int_equal(auth_secret_kind(""), AUTH_SECRET_PLAIN);
    assert_int_equal(auth_secret_kind(PG_MD5), AUTH_SECRET_MD5);
    /* PostgreSQL only takes lowercase hex of exact length as md5. */
    assert_int_equal(auth_secret_kind("md553F48B7C4B76A86CE72276C5755F217D"), AUTH_SECRET_PLAIN);
    assert_int_equal(auth_secret_kind("md553f48b7c4b76a86ce72276c5755f217"), AUTH_SECRET_PLAIN);
    assert_int_equal(auth_secret_kind(PG_MD5 "0"), AUTH_SECRET_PLAIN);
    assert_int_equal(auth_secret_kind("md5"), AUTH_SECRET_PLAIN);
    assert_int_equal(auth_secret_kind(PENCIL_SCRAM), AUTH_SECRET_SCRAM);
    assert_int_equal(auth_secret_kind("SCRAM-SHA-256$4096:abc"), AUTH_SECRET_PLAIN);
    assert_string_equal(auth_secret_kind_str(AUTH_SECRET_PLAIN), "plain");
    assert_string_equal(auth_secret_kind_str(AUTH_SECRET_MD5), "md5");
    assert_string_equal(auth_secret_kind_str(AUTH_SECRET_SCRAM), "scram-sha-256");
    assert_string_equal(auth_secret_kind_str((enum auth_secret_kind)42), "?");
}

/* ---- auth_file ---- */

static void test_userlist_parse(void **state)
{
    (void)state;
    char err[256];
    const char *text = "; a comment\n"
                       "# another comment\n"
                       "\n"
                       "   \t\n"
                       "  ;indented comment \"x\" \"y\"\n"
                       "\"alice\" \"wonderland\"\n"
                       "\"bob\"\t\"" PG_MD5 "\"\n"
                       "\"carol\"   \"" PENCIL_SCRAM "\" \"extra\" fields ignored\n"
                       "\"quo\"\"te\" \"pa\"\"ss\"\"\"\n"
                       "\"with space\" \"p w;#\"\r\n"
                       "\"empty\" \"\"\n"
                       "  \"Alice\" \"other\"\n"
                       "\"ünï\" \"çødé\"";
    struct auth_userlist *l = auth_userlist_parse("users.txt", text, err, sizeof(err));
    assert_non_null(l);
    assert_string_equal(err, "");
    assert_int_equal(auth_userlist_count(l), 8);
    assert_string_equal(auth_userlist_find(l, "alice"), "wonderland");
    assert_string_equal(auth_userlist_find(l, "Alice"), "other");
    assert_string_equal(auth_userlist_find(l, "bob"), PG_MD5);
    assert_int_equal(auth_secret_kind(auth_userlist_find(l, "bob")), AUTH_SECRET_MD5);
    assert_string_equal(auth_userlist_find(l, "carol"), PENCIL_SCRAM);
    assert_int_equal(auth_secret_kind(auth_userlist_find(l, "carol")), AUTH_SECRET_SCRAM);
    assert_string_equal(auth_userlist_find(l, "quo\"te"), "pa\"ss\"");
    assert_string_equal(auth_userlist_find(l, "with space"), "p w;#");
    assert_string_equal(auth_userlist_find(l, "empty"), "");
    assert_string_equal(auth_userlist_find(l, "ünï"), "çødé");
    assert_null(auth_userlist_find(l, "ALICE"));
    assert_null(auth_userlist_find(l, "nobody"));
    assert_null(auth_userlist_find(l, ""));
    assert_null(auth_userlist_find(l, NULL));
    auth_userlist_free(l);

    /* Empty file, comments only, a BOM: valid, no users. */
    l = auth_userlist_parse("e", "", err, sizeof(err));
    assert_non_null(l);
    assert_int_equal(auth_userlist_count(l), 0);
    assert_null(auth_userlist_find(l, "x"));
    auth_userlist_free(l);
    l = auth_userlist_parse("e", "\xEF\xBB\xBF\"a\" \"b\"\n# end\n", err, sizeof(err));
    assert_non_null(l);
    assert_string_equal(auth_userlist_find(l, "a"), "b");
    auth_userlist_free(l);

    /* A later line replaces an earlier one for the same user. */
    l = auth_userlist_parse("d", "\"a\" \"1\"\n\"b\" \"2\"\n\"a\" \"3\"\n", err, sizeof(err));
    assert_non_null(l);
    assert_int_equal(auth_userlist_count(l), 2);
    assert_string_equal(auth_userlist_find(l, "a"), "3");
    auth_userlist_free(l);

    assert_int_equal(auth_userlist_count(NULL), 0);
    assert_null(auth_userlist_find(NULL, "a"));
    auth_userlist_free(NULL);
}

static void test_userlist_errors(void **state)
{
    (void)state;
    char longname[AUTH_USERLIST_MAX_USER + 16];
    char longuser_line[sizeof(longname) + 16];
    memset(longname, 'u', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    snprintf(longuser_line, sizeof(longuser_line), "\"%s\" \"p\"\n", longname);

    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        {"\"a\" \"b\"\n\"c\" \"d\"\n\"e \"f\"\n", "f.txt:3: expected a quoted password"},
        {"\"a\" \"b\"\n\"unterminated\n", "f.txt:2: unterminated quoted string"},
        {"\"a\" \"b\nc\"\n", "f.txt:1: unterminated quoted string"},
        {"\n\nalice \"b\"\n", "f.txt:3: expected a quoted user name"},
        {"\"alice\"\n", "f.txt:1: password missing"},
        {"\"alice\"   \r\n", "f.txt:1: password missing"},
        {"\"alice\" secret\n", "f.txt:1: expected a quoted password"},
        {"\"\" \"secret\"\n", "f.txt:1: empty user name"},
        {"# ok\n\"a\" \"b\"\n\"x\"y\" \"z\"\n", "f.txt:3: expected a quoted password"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "unset";
        struct auth_userlist *l = auth_userlist_parse("f.txt", cases[i].text, err, sizeof(err));
        if (l)
            fail_msg("case #%zu accepted", i);
        assert_string_equal(err, cases[i].err);
    }

    char err[256];
    assert_null(auth_userlist_parse("f.txt", longuser_line, err, sizeof(err)));
    assert_string_equal(err, "f.txt:1: user name too long");
    /* errlen 0 and a tiny buffer are fine. */
    assert_null(auth_userlist_parse("f.txt", "x", err, 0));
    assert_null(auth_userlist_parse("f.txt", "x", err, 4));
    assert_string_equal(err, "f.t");
}

/* 20,000 users: all found, none confused. */
static void test_userlist_large(void **state)
{
    (void)state;
    enum { N = 20000 };
    size_t cap = (size_t)N * 48;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(text + len, cap - len, "\"user%d\" \"pw%d\"\n", i, i * 7);
    char err[256];
    struct auth_userlist *l = auth_userlist_parse("big", text, err, sizeof(err));
    free(text);
    assert_non_null(l);
    assert_int_equal(auth_userlist_count(l), N);
    for (int i = 0; i < N; i++) {
        char u[32], p[32];
        snprintf(u, sizeof(u), "user%d", i);
        snprintf(p, sizeof(p), "pw%d", i * 7);
        const char *got = auth_userlist_find(l, u);
        assert_non_null(got);
        assert_string_equal(got, p);
    }
    assert_null(auth_userlist_find(l, "user20000"));
    assert_null(auth_userlist_find(l, "user"));
    auth_userlist_free(l);
}

static void test_userlist_load(void **state)
{
    (void)state;
    char path[] = "/tmp/sluice_test_auth_XXXXXX";
    char err[512];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "\"alice\" \"" PG_MD5 "\"\n\"bob\" \"" PENCIL_SCRAM "\"\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    struct auth_userlist *l = auth_userlist_load(path, err, sizeof(err));
    assert_non_null(l);
    assert_int_equal(auth_userlist_count(l), 2);
    assert_true(auth_plain_check(auth_userlist_find(l, "bob"), "bob", "pencil"));
    auth_userlist_free(l);

    /* An error names the file and the line. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\"a\" \"b\"\n\"c\" d\n", 14), 14);
    close(fd);
    assert_null(auth_userlist_load(path, err, sizeof(err)));
    char want[512];
    snprintf(want, sizeof(want), "%s:2: expected a quoted password", path);
    assert_string_equal(err, want);

    /* Reading on past bad lines: each one's message, in order; a good
     * file gives its list and no message. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x\n\"a\" \"b\"\n\"c\" d\n", 16), 16);
    close(fd);
    struct config_problems lines = {0};
    assert_null(auth_userlist_load_all(path, &lines, err, sizeof(err)));
    assert_string_equal(err, "");
    assert_int_equal(lines.n, 2);
    snprintf(want, sizeof(want), "%s:1: expected a quoted user name", path);
    assert_string_equal(lines.msgs[0], want);
    snprintf(want, sizeof(want), "%s:3: expected a quoted password", path);
    assert_string_equal(lines.msgs[1], want);
    config_problems_free(&lines);
    assert_null(auth_userlist_load_all("/nonexistent/u.txt", &lines, err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/u.txt: No such file or directory");
    assert_int_equal(lines.n, 0);

    /* A NUL byte is reported with its line. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\"a\" \"b\"\n\"c\" \"d\0\"\n", 16), 16);
    close(fd);
    assert_null(auth_userlist_load(path, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s:2: NUL byte in file", path);
    assert_string_equal(err, want);

    unlink(path);
    assert_null(auth_userlist_load(path, err, sizeof(err)));
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    assert_string_equal(err, want);

    /* A directory is not a file. */
    assert_null(auth_userlist_load("/tmp", err, sizeof(err)));
    assert_non_null(strstr(err, "/tmp: "));
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0};
    auth_random_bytes(a, sizeof(a));
    auth_random_bytes(b, sizeof(b));
    assert_memory_not_equal(a, b, sizeof(a));
    auth_random_bytes(a, 0);
}

int main(void)
{
    log_set_quiet(true);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_md5_hash),        cmocka_unit_test(test_md5_salted),
        cmocka_unit_test(test_md5_check),       cmocka_unit_test(test_plain_check),
        cmocka_unit_test(test_secret_kind),     cmocka_unit_test(test_userlist_parse),
        cmocka_unit_test(test_userlist_errors), cmocka_unit_test(test_userlist_large),
        cmocka_unit_test(test_userlist_load),   cmocka_unit_test(test_random_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
