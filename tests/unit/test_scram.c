/* test_scram.c - SCRAM-SHA-256 both sides: RFC 7677 vector, round trips,
 * ClientKey passthrough, wrong passwords and malformed messages. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "auth.h"
#include "log.h"
#include "scram.h"

/* RFC 7677 section 3. */
#define RFC_PASSWORD     "pencil"
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE        RFC_CLIENT_NONCE RFC_SERVER_NONCE
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CLIENT_NONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The same password and salt as PostgreSQL would store them (computed
 * independently with Python's hashlib). */
#define RFC_SECRET                                                                                 \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"    \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
/* ClientKey for the vector, base64 (also from hashlib). */
#define RFC_CLIENT_KEY "pg/JI9Z+hkSpLRa5btpe9GVrDHJcSEN0viVTVXaZbos="

#define BUF (SCRAM_MAX_MESSAGE + 1)

static const uint8_t *u8(const char *s)
{
    return (const uint8_t *)s;
}

static enum scram_status srv_first(struct scram_server *s, const char *msg, char *out,
                                   const char **err)
{
    size_t outlen = 0;
    enum scram_status st = scram_server_first(s, u8(msg), strlen(msg), out, BUF, &outlen, err);
    if (st == SCRAM_OK)
        assert_int_equal(outlen, strlen(out));
    return st;
}

static enum scram_status srv_final(struct scram_server *s, const char *msg, char *out,
                                   const char **err)
{
    size_t outlen = 0;
    enum scram_status st = scram_server_final(s, u8(msg), strlen(msg), out, BUF, &outlen, err);
    if (st == SCRAM_OK)
        assert_int_equal(outlen, strlen(out));
    return st;
}

static enum scram_status cli_final(struct scram_client *c, const char *msg, char *out,
                                   const char **err)
{
    size_t outlen = 0;
    enum scram_status st = scram_client_final(c, u8(msg), strlen(msg), out, BUF, &outlen, err);
    if (st == SCRAM_OK)
        assert_int_equal(outlen, strlen(out));
    return st;
}

static enum scram_status cli_verify(struct scram_client *c, const char *msg, const char **err)
{
    return scram_client_verify(c, u8(msg), strlen(msg), err);
}

static void b64_32(const char *text, uint8_t out[32])
{
    uint8_t tmp[48];
    assert_int_equal(EVP_DecodeBlock(tmp, u8(text), (int)strlen(text)), 33);
    memcpy(out, tmp, 32);
}

/* Runs a whole exchange between c and s; returns the first failing status. */
static enum scram_status exchange(struct scram_client *c, struct scram_server *s)
{
    char m1[BUF], m2[BUF], m3[BUF], m4[BUF];
    size_t n1, n2, n3, n4;
    const char *err = NULL;
    enum scram_status st;

    assert_int_equal(scram_client_first(c, m1, sizeof(m1), &n1), SCRAM_OK);
    if ((st = scram_server_first(s, u8(m1), n1, m2, sizeof(m2), &n2, &err)) != SCRAM_OK)
        return st;
    if ((st = scram_client_final(c, u8(m2), n2, m3, sizeof(m3), &n3, &err)) != SCRAM_OK)
        return st;
    if ((st = scram_server_final(s, u8(m3), n3, m4, sizeof(m4), &n4, &err)) != SCRAM_OK) {
        assert_non_null(err);
        return st;
    }
    return scram_client_verify(c, u8(m4), n4, &err);
}

/* ---- known answers ---- */

static void test_rfc7677_client(void **state)
{
    (void)state;
    struct scram_client c;
    char out[BUF];
    size_t outlen;
    const char *err = "unset";

    scram_client_init_password(&c, RFC_PASSWORD);
    assert_true(scram_client_test_set_nonce(&c, "user", RFC_CLIENT_NONCE));
    assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
    assert_string_equal(out, RFC_CLIENT_FIRST);
    assert_int_equal(outlen, strlen(RFC_CLIENT_FIRST));
    assert_int_equal(cli_final(&c, RFC_SERVER_FIRST, out, &err), SCRAM_OK);
    assert_null(err);
    assert_string_equal(out, RFC_CLIENT_FINAL);
    assert_int_equal(cli_verify(&c, RFC_SERVER_FINAL, &err), SCRAM_OK);
    scram_client_free(&c);
}

static void test_rfc7677_server(void **state)
{
    (void)state;
    struct scram_server s;
    char out[BUF];
    const char *err = "unset";
    uint8_t key[32], expect[32];

    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_false(scram_server_client_key(&s, key));
    assert_true(scram_server_test_set_nonce(&s, RFC_SERVER_NONCE));
    assert_int_equal(srv_first(&s, RFC_CLIENT_FIRST, out, &err), SCRAM_OK);
    assert_null(err);
    assert_string_equal(out, RFC_SERVER_FIRST);
    assert_false(scram_server_client_key(&s, key));
    assert_int_equal(srv_final(&s, RFC_CLIENT_FINAL, out, &err), SCRAM_OK);
    assert_string_equal(out, RFC_SERVER_FINAL);
    assert_true(scram_server_client_key(&s, key));
    b64_32(RFC_CLIENT_KEY, expect);
    assert_memory_equal(key, expect, 32);
    scram_server_free(&s);
}

/* The same vector driven with keys instead of the password: what sluice does
 * when it logs into PostgreSQL with a recovered ClientKey. */
static void test_rfc7677_client_keys(void **state)
{
    (void)state;
    struct scram_client c;
    struct scram_secret sec;
    uint8_t key[32];
    char out[BUF];
    size_t outlen;
    const char *err;

    assert_true(scram_secret_parse(RFC_SECRET, &sec));
    b64_32(RFC_CLIENT_KEY, key);
    scram_client_init_keys(&c, key, &sec);
    assert_true(scram_client_test_set_nonce(&c, "user", RFC_CLIENT_NONCE));
    assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
    assert_int_equal(cli_final(&c, RFC_SERVER_FIRST, out, &err), SCRAM_OK);
    assert_string_equal(out, RFC_CLIENT_FINAL);
    assert_int_equal(cli_verify(&c, RFC_SERVER_FINAL, &err), SCRAM_OK);
    scram_client_free(&c);
}

/* "y,," (client could bind, thinks we cannot) is accepted; c= must then be
 * base64("y,,") = "eSws". Proof and signature computed with Python. */
static void test_gs2_flag_y(void **state)
{
    (void)state;
    struct scram_server s;
    char out[BUF];
    const char *err;

    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_true(scram_server_test_set_nonce(&s, RFC_SERVER_NONCE));
    assert_int_equal(srv_first(&s, "y,,n=,r=" RFC_CLIENT_NONCE, out, &err), SCRAM_OK);
    assert_string_equal(out, RFC_SERVER_FIRST);
    assert_int_equal(
        srv_final(&s, "c=eSws,r=" RFC_NONCE ",p=VpuC5DGQa5ro9tXE9MnKs69NH1nxnuregZZcclqIGfM=", out,
                  &err),
        SCRAM_OK);
    assert_string_equal(out, "v=FOmOj9BpTGwvnzwBtWQjBaPmVxT9I8IeHBOhcIPu3us=");
    scram_server_free(&s);

    /* A "y" client that then claims "n" in c= is a downgrade: refused. */
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_true(scram_server_test_set_nonce(&s, RFC_SERVER_NONCE));
    assert_int_equal(srv_first(&s, "y,,n=,r=" RFC_CLIENT_NONCE, out, &err), SCRAM_OK);
    assert_int_equal(
        srv_final(&s, "c=biws,r=" RFC_NONCE ",p=VpuC5DGQa5ro9tXE9MnKs69NH1nxnuregZZcclqIGfM=", out,
                  &err),
        SCRAM_ERR_MALFORMED);
    assert_non_null(strstr(err, "channel binding"));
    scram_server_free(&s);
}

/* ---- secrets ---- */

static void test_secret_from_password_and_format(void **state)
{
    (void)state;
    struct scram_secret a, b;
    char text[SCRAM_SECRET_MAX_LEN];
    uint8_t salt[16];

    assert_true(scram_secret_parse(RFC_SECRET, &a));
    assert_int_equal(a.iterations, 4096);
    assert_int_equal(a.salt_len, 16);
    assert_true(scram_secret_from_password(RFC_PASSWORD, a.salt, a.salt_len, 4096, &b));
    assert_memory_equal(&a, &b, sizeof(a));
    assert_true(scram_secret_format(&b, text, sizeof(text)));
    assert_string_equal(text, RFC_SECRET);
    assert_int_equal(auth_secret_kind(text), AUTH_SECRET_SCRAM);

    /* Too small a buffer: false and "". */
    assert_false(scram_secret_format(&b, text, 20));
    assert_string_equal(text, "");

    /* Round trip with a random salt and another iteration count. */
    auth_random_bytes(salt, sizeof(salt));
    assert_true(scram_secret_from_password("p\xc3\xa4ss w,rd=", salt, 16, 10, &a));
    assert_true(scram_secret_format(&a, text, sizeof(text)));
    assert_true(scram_secret_parse(text, &b));
    assert_memory_equal(&a, &b, sizeof(a));

    /* Bad arguments. */
    assert_false(scram_secret_from_password("x", salt, 0, 4096, &a));
    assert_false(scram_secret_from_password("x", salt, SCRAM_MAX_SALT_LEN + 1, 4096, &a));
    assert_false(scram_secret_from_password("x", salt, 16, 0, &a));
    assert_false(scram_secret_from_password("x", salt, 16, SCRAM_MAX_ITERATIONS + 1, &a));
    assert_false(scram_secret_from_password(NULL, salt, 16, 4096, &a));
}

static void test_secret_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "pencil",
        "md553f48b7c4b76a86ce72276c5755f217d",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* iterations: zero, sign, letters, empty, too many */
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4k:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbs"
        "T4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* salt: empty, bad base64, missing padding */
        "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7so!sUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* keys: 31 bytes, 33 bytes, missing, trailing garbage */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4g==:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qYA:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU= ",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=:x",
    };
    struct scram_secret sec;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (scram_secret_parse(bad[i], &sec))
            fail_msg("accepted bad secret #%zu: %s", i, bad[i]);
        assert_int_equal(sec.iterations, 0);
    }
    assert_false(scram_secret_parse(NULL, &sec));
}

/* ---- round trips ---- */

static void test_roundtrip_plain_password(void **state)
{
    (void)state;
    struct scram_client c;
    struct scram_server s;
    uint8_t key[32];

    assert_true(scram_server_init(&s, "s3cr=t,pass"));
    scram_client_init_password(&c, "s3cr=t,pass");
    assert_int_equal(exchange(&c, &s), SCRAM_OK);
    assert_true(scram_server_client_key(&s, key));
    scram_client_free(&c);
    scram_server_free(&s);
}

static void test_roundtrip_scram_secret(void **state)
{
    (void)state;
    struct scram_client c;
    struct scram_server s;
    struct scram_secret sec;
    uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
    char text[SCRAM_SECRET_MAX_LEN];

    auth_random_bytes(salt, sizeof(salt));
    assert_true(scram_secret_from_password("hunter2", salt, (int)sizeof(salt), 4096, &sec));
    assert_true(scram_secret_format(&sec, text, sizeof(text)));
    assert_true(scram_server_init(&s, text));
    scram_client_init_password(&c, "hunter2");
    assert_int_equal(exchange(&c, &s), SCRAM_OK);
    scram_client_free(&c);
    scram_server_free(&s);

    /* The same with the parsed secret handed over directly. */
    assert_true(scram_server_init_secret(&s, &sec));
    scram_client_init_password(&c, "hunter2");
    assert_int_equal(exchange(&c, &s), SCRAM_OK);
    scram_client_free(&c);
    scram_server_free(&s);
    sec.salt_len = 0;
    assert_false(scram_server_init_secret(&s, &sec));
    scram_server_free(&s);
    assert_false(scram_server_init_secret(&s, NULL));
    scram_server_free(&s);
}

/* A client logs into sluice (server A) with its password; sluice recovers the
 * ClientKey and logs into PostgreSQL (server B, same secret) with it. */
static void test_client_key_passthrough(void **state)
{
    (void)state;
    struct scram_client c, c2;
    struct scram_server a, b;
    struct scram_secret sec, other;
    uint8_t salt[SCRAM_DEFAULT_SALT_LEN], key[32];
    char text[SCRAM_SECRET_MAX_LEN], other_text[SCRAM_SECRET_MAX_LEN];

    auth_random_bytes(salt, sizeof(salt));
    assert_true(scram_secret_from_password("correct horse", salt, (int)sizeof(salt), 4096, &sec));
    assert_true(scram_secret_format(&sec, text, sizeof(text)));

    assert_true(scram_server_init(&a, text));
    scram_client_init_password(&c, "correct horse");
    assert_int_equal(exchange(&c, &a), SCRAM_OK);
    assert_true(scram_server_client_key(&a, key));

    assert_true(scram_server_init(&b, text));
    scram_client_init_keys(&c2, key, &sec);
    assert_int_equal(exchange(&c2, &b), SCRAM_OK);
    scram_client_free(&c2);
    scram_server_free(&b);

    /* Server B stores the same password with another salt: the keys cannot
     * fit, and the client says so before sending a proof. */
    salt[0] ^= 1;
    assert_true(scram_secret_from_password("correct horse", salt, (int)sizeof(salt), 4096, &other));
    assert_true(scram_secret_format(&other, other_text, sizeof(other_text)));
    assert_true(scram_server_init(&b, other_text));
    scram_client_init_keys(&c2, key, &sec);
    assert_int_equal(exchange(&c2, &b), SCRAM_ERR_SECRET_MISMATCH);
    scram_client_free(&c2);
    scram_server_free(&b);

    /* Same salt and iterations but another password on B: B refuses the proof. */
    salt[0] ^= 1;
    assert_true(
        scram_secret_from_password("battery staple", salt, (int)sizeof(salt), 4096, &other));
    assert_true(scram_secret_format(&other, other_text, sizeof(other_text)));
    assert_true(scram_server_init(&b, other_text));
    scram_client_init_keys(&c2, key, &sec);
    assert_int_equal(exchange(&c2, &b), SCRAM_ERR_WRONG_PASSWORD);
    scram_client_free(&c2);
    scram_server_free(&b);

    /* Iterations differ: also a mismatch. */
    assert_true(scram_secret_from_password("correct horse", salt, (int)sizeof(salt), 4097, &other));
    assert_true(scram_secret_format(&other, other_text, sizeof(other_text)));
    assert_true(scram_server_init(&b, other_text));
    scram_client_init_keys(&c2, key, &sec);
    assert_int_equal(exchange(&c2, &b), SCRAM_ERR_SECRET_MISMATCH);
    scram_client_free(&c2);
    scram_server_free(&b);

    scram_client_free(&c);
    scram_server_free(&a);
}

static void test_wrong_password(void **state)
{
    (void)state;
    struct scram_client c;
    struct scram_server s;
    uint8_t key[32];
    char out[BUF];
    const char *err = NULL;

    assert_true(scram_server_init(&s, "secret"));
    scram_client_init_password(&c, "Secret");
    assert_int_equal(exchange(&c, &s), SCRAM_ERR_WRONG_PASSWORD);
    assert_false(scram_server_client_key(&s, key));
    /* The exchange is over: no second try on the same state. */
    assert_int_equal(srv_final(&s, "c=biws,r=x,p=AAAA", out, &err), SCRAM_ERR_OUT_OF_ORDER);
    assert_non_null(err);
    scram_client_free(&c);
    scram_server_free(&s);

    assert_true(scram_server_init(&s, RFC_SECRET));
    scram_client_init_password(&c, "");
    assert_int_equal(exchange(&c, &s), SCRAM_ERR_WRONG_PASSWORD);
    scram_client_free(&c);
    scram_server_free(&s);
}

/* A server that does not know the secret cannot produce the right v=. */
static void test_bad_server_signature(void **state)
{
    (void)state;
    struct scram_client c;
    char out[BUF];
    size_t outlen;
    const char *err = NULL;

    scram_client_init_password(&c, RFC_PASSWORD);
    assert_true(scram_client_test_set_nonce(&c, "user", RFC_CLIENT_NONCE));
    assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
    assert_int_equal(cli_final(&c, RFC_SERVER_FIRST, out, &err), SCRAM_OK);
    assert_int_equal(cli_verify(&c, "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", &err),
                     SCRAM_ERR_SERVER_SIGNATURE);
    assert_non_null(err);
    /* And nothing more is accepted. */
    assert_int_equal(cli_verify(&c, RFC_SERVER_FINAL, &err), SCRAM_ERR_OUT_OF_ORDER);
    scram_client_free(&c);
}

static void test_server_error_reply(void **state)
{
    (void)state;
    static const char *const cases[] = {"e=invalid-proof", "e=other-error", "e=whatever,x=y"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_client c;
        char out[BUF];
        size_t outlen;
        const char *err = NULL;
        scram_client_init_password(&c, RFC_PASSWORD);
        assert_true(scram_client_test_set_nonce(&c, NULL, RFC_CLIENT_NONCE));
        assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
        assert_string_equal(out, "n,,n=,r=" RFC_CLIENT_NONCE);
        assert_int_equal(cli_final(&c, RFC_SERVER_FIRST, out, &err), SCRAM_OK);
        assert_int_equal(cli_verify(&c, cases[i], &err), SCRAM_ERR_SERVER_REJECTED);
        assert_non_null(err);
        if (i == 0)
            assert_non_null(strstr(err, "invalid proof"));
        scram_client_free(&c);
    }
}

/* ---- malformed messages, server side ---- */

static void test_server_first_malformed(void **state)
{
    (void)state;
    char huge[2048], long_nonce[400];
    memset(huge, 'a', sizeof(huge));
    memcpy(huge, "n,,n=,r=", 8);
    huge[sizeof(huge) - 1] = '\0';
    snprintf(long_nonce, sizeof(long_nonce), "n,,n=,r=%0300d", 7);

    static const struct {
        const char *msg;
        enum scram_status st;
    } cases[] = {
        {"", SCRAM_ERR_MALFORMED},
        {"n", SCRAM_ERR_MALFORMED},
        {"n,,", SCRAM_ERR_MALFORMED},
        {"x,,n=,r=abc", SCRAM_ERR_MALFORMED},
        {"n,n=,r=abc", SCRAM_ERR_MALFORMED},
        {"n;,n=,r=abc", SCRAM_ERR_MALFORMED},
        {"n,,r=abc", SCRAM_ERR_MALFORMED},
        {"n,,n=", SCRAM_ERR_MALFORMED},
        {"n,,n=,", SCRAM_ERR_MALFORMED},
        {"n,,n=,r=", SCRAM_ERR_MALFORMED},
        {"n,,n=,r=abc,", SCRAM_ERR_MALFORMED},
        {"n,,n=,r=abc,b", SCRAM_ERR_MALFORMED},
        {"n,,n=,r=abc,b=", SCRAM_ERR_MALFORMED},
        {"n,,n=,x=abc", SCRAM_ERR_MALFORMED},
        {"n,,n=,r=a c", SCRAM_ERR_MALFORMED},
        {"n,,n=,r=a\x7f", SCRAM_ERR_MALFORMED},
        {"n,,n=a=2X,r=abc", SCRAM_ERR_MALFORMED},
        {"n,,n=a=,r=abc", SCRAM_ERR_MALFORMED},
        {"p=tls-server-end-point,,n=,r=abc", SCRAM_ERR_CHANNEL_BINDING},
        {"p,,n=,r=abc", SCRAM_ERR_MALFORMED},
        {"n,a=bob,n=,r=abc", SCRAM_ERR_UNSUPPORTED},
        {"n,,m=ext,n=,r=abc", SCRAM_ERR_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_server s;
        char out[BUF];
        const char *err = NULL;
        assert_true(scram_server_init(&s, RFC_SECRET));
        enum scram_status st = srv_first(&s, cases[i].msg, out, &err);
        if (st != cases[i].st)
            fail_msg("case #%zu \"%s\": got %s, want %s", i, cases[i].msg, scram_status_str(st),
                     scram_status_str(cases[i].st));
        assert_non_null(err);
        /* Failed for good. */
        assert_int_equal(srv_final(&s, RFC_CLIENT_FINAL, out, &err), SCRAM_ERR_OUT_OF_ORDER);
        scram_server_free(&s);
    }

    struct scram_server s;
    char out[BUF];
    const char *err = NULL;
    size_t outlen;

    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_int_equal(srv_first(&s, huge, out, &err), SCRAM_ERR_TOO_LONG);
    scram_server_free(&s);
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_int_equal(srv_first(&s, long_nonce, out, &err), SCRAM_ERR_TOO_LONG);
    scram_server_free(&s);
    /* An embedded NUL. */
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_int_equal(
        scram_server_first(&s, u8("n,,n=,r=a\0b"), 11, out, sizeof(out), &outlen, &err),
        SCRAM_ERR_MALFORMED);
    scram_server_free(&s);
    /* Acceptable variants: a user name (ignored), escapes, extensions. */
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_int_equal(srv_first(&s, "n,,n=a=2Cb=3D,r=abc,x=ext", out, &err), SCRAM_OK);
    scram_server_free(&s);
    /* Output buffer too small. */
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_int_equal(scram_server_first(&s, u8("n,,n=,r=abc"), 11, out, 10, &outlen, &err),
                     SCRAM_ERR_BUFFER);
    scram_server_free(&s);
}

static void test_server_final_malformed(void **state)
{
    (void)state;
    char huge[2048];
    memset(huge, 'a', sizeof(huge));
    memcpy(huge, "c=biws,r=", 9);
    huge[sizeof(huge) - 1] = '\0';

    static const struct {
        const char *msg;
        enum scram_status st;
    } cases[] = {
        {"", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SCRAM_ERR_MALFORMED},
        {"c=eSws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         SCRAM_ERR_MALFORMED},
        {"c=bi!s,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         SCRAM_ERR_MALFORMED},
        {"c=biw,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         SCRAM_ERR_MALFORMED},
        {"c=biws,r=" RFC_CLIENT_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         SCRAM_ERR_NONCE_MISMATCH},
        {"c=biws,r=" RFC_NONCE "x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         SCRAM_ERR_NONCE_MISMATCH},
        {"c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SCRAM_ERR_MALFORMED},
        {"c=biws,r=" RFC_NONCE, SCRAM_ERR_MALFORMED},
        {"c=biws,r=" RFC_NONCE ",", SCRAM_ERR_MALFORMED},
        {"c=biws,r=" RFC_NONCE ",p=", SCRAM_ERR_MALFORMED},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7And", SCRAM_ERR_MALFORMED},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
         SCRAM_ERR_MALFORMED},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=y",
         SCRAM_ERR_MALFORMED},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=AAAA",
         SCRAM_ERR_MALFORMED},
        /* A well-formed but wrong proof. */
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVA=",
         SCRAM_ERR_WRONG_PASSWORD},
        /* An extension before the proof is part of the AuthMessage, so the
         * RFC proof no longer fits. */
        {"c=biws,r=" RFC_NONCE ",x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         SCRAM_ERR_WRONG_PASSWORD},
    };
    for (size_t i = 0; i <= sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_server s;
        char out[BUF];
        const char *err = NULL;
        const char *msg = i < sizeof(cases) / sizeof(cases[0]) ? cases[i].msg : huge;
        enum scram_status want =
            i < sizeof(cases) / sizeof(cases[0]) ? cases[i].st : SCRAM_ERR_TOO_LONG;
        uint8_t key[32];

        assert_true(scram_server_init(&s, RFC_SECRET));
        assert_true(scram_server_test_set_nonce(&s, RFC_SERVER_NONCE));
        assert_int_equal(srv_first(&s, RFC_CLIENT_FIRST, out, &err), SCRAM_OK);
        enum scram_status st = srv_final(&s, msg, out, &err);
        if (st != want)
            fail_msg("case #%zu \"%s\": got %s, want %s", i, msg, scram_status_str(st),
                     scram_status_str(want));
        assert_non_null(err);
        assert_false(scram_server_client_key(&s, key));
        scram_server_free(&s);
    }
}

/* ---- malformed messages, client side ---- */

static void test_client_final_malformed(void **state)
{
    (void)state;
    char huge[2048], big_iter[128];
    memset(huge, 'a', sizeof(huge));
    memcpy(huge, "r=" RFC_CLIENT_NONCE, 2 + strlen(RFC_CLIENT_NONCE));
    huge[sizeof(huge) - 1] = '\0';
    snprintf(big_iter, sizeof(big_iter), "r=%sX,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=%d", RFC_CLIENT_NONCE,
             SCRAM_MAX_ITERATIONS + 1);

    static const struct {
        const char *msg;
        enum scram_status st;
    } cases[] = {
        {"", SCRAM_ERR_MALFORMED},
        {"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE, SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=,i=4096", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6g===,i=4096", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22Z aJ0SNY7soEsUEjb6gQ=,i=4096", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=", SCRAM_ERR_MALFORMED},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,", SCRAM_ERR_MALFORMED},
        {"r=" RFC_CLIENT_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", SCRAM_ERR_NONCE_MISMATCH},
        {"r=xOprNGfwEbeRWgbNEkqO123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", SCRAM_ERR_NONCE_MISMATCH},
        {"r=rOpr,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", SCRAM_ERR_NONCE_MISMATCH},
        {"m=x,r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", SCRAM_ERR_UNSUPPORTED},
        {"e=other-error", SCRAM_ERR_MALFORMED},
    };
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i < ncases + 2; i++) {
        struct scram_client c;
        char out[BUF];
        size_t outlen;
        const char *err = NULL;
        const char *msg = i < ncases ? cases[i].msg : i == ncases ? huge : big_iter;
        enum scram_status want = i < ncases    ? cases[i].st
                                 : i == ncases ? SCRAM_ERR_TOO_LONG
                                               : SCRAM_ERR_MALFORMED;

        scram_client_init_password(&c, RFC_PASSWORD);
        assert_true(scram_client_test_set_nonce(&c, "user", RFC_CLIENT_NONCE));
        assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
        enum scram_status st = cli_final(&c, msg, out, &err);
        if (st != want)
            fail_msg("case #%zu \"%s\": got %s, want %s", i, msg, scram_status_str(st),
                     scram_status_str(want));
        assert_non_null(err);
        assert_int_equal(cli_verify(&c, RFC_SERVER_FINAL, &err), SCRAM_ERR_OUT_OF_ORDER);
        scram_client_free(&c);
    }

    /* Extensions after the iteration count are ignored. */
    struct scram_client c;
    char out[BUF];
    size_t outlen;
    const char *err = NULL;
    scram_client_init_password(&c, RFC_PASSWORD);
    assert_true(scram_client_test_set_nonce(&c, "user", RFC_CLIENT_NONCE));
    assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
    assert_int_equal(cli_final(&c, RFC_SERVER_FIRST ",x=ext", out, &err), SCRAM_OK);
    scram_client_free(&c);
}

static void test_client_verify_malformed(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",
        "v=",
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=AAAA",
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9!G4=",
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,",
        "x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct scram_client c;
        char out[BUF];
        size_t outlen;
        const char *err = NULL;
        scram_client_init_password(&c, RFC_PASSWORD);
        assert_true(scram_client_test_set_nonce(&c, "user", RFC_CLIENT_NONCE));
        assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
        assert_int_equal(cli_final(&c, RFC_SERVER_FIRST, out, &err), SCRAM_OK);
        enum scram_status st = cli_verify(&c, cases[i], &err);
        if (st != SCRAM_ERR_MALFORMED)
            fail_msg("case #%zu \"%s\": got %s", i, cases[i], scram_status_str(st));
        assert_non_null(err);
        scram_client_free(&c);
    }
}

/* ---- state handling ---- */

static void test_out_of_order_and_init(void **state)
{
    (void)state;
    struct scram_server s;
    struct scram_client c;
    char out[BUF];
    size_t outlen;
    const char *err = NULL;
    uint8_t key[32];

    /* A zeroed, never initialised struct refuses every step. */
    memset(&s, 0, sizeof(s));
    assert_int_equal(srv_first(&s, RFC_CLIENT_FIRST, out, &err), SCRAM_ERR_OUT_OF_ORDER);
    scram_server_free(&s);
    memset(&c, 0, sizeof(c));
    assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_ERR_OUT_OF_ORDER);
    scram_client_free(&c);

    /* final before first */
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_int_equal(srv_final(&s, RFC_CLIENT_FINAL, out, &err), SCRAM_ERR_OUT_OF_ORDER);
    scram_server_free(&s);
    scram_client_init_password(&c, "x");
    assert_int_equal(cli_final(&c, RFC_SERVER_FIRST, out, &err), SCRAM_ERR_OUT_OF_ORDER);
    scram_client_free(&c);
    scram_client_init_password(&c, "x");
    assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
    assert_int_equal(cli_verify(&c, RFC_SERVER_FINAL, &err), SCRAM_ERR_OUT_OF_ORDER);
    scram_client_free(&c);

    /* first twice */
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_int_equal(srv_first(&s, RFC_CLIENT_FIRST, out, &err), SCRAM_OK);
    assert_int_equal(srv_first(&s, RFC_CLIENT_FIRST, out, &err), SCRAM_ERR_OUT_OF_ORDER);
    scram_server_free(&s);

    /* md5 secrets cannot do SCRAM; NULL neither. Both still free cleanly. */
    assert_false(scram_server_init(&s, "md553f48b7c4b76a86ce72276c5755f217d"));
    assert_int_equal(srv_first(&s, RFC_CLIENT_FIRST, out, &err), SCRAM_ERR_OUT_OF_ORDER);
    assert_false(scram_server_client_key(&s, key));
    scram_server_free(&s);
    assert_false(scram_server_init(&s, NULL));
    scram_server_free(&s);
    scram_server_free(&s);

    /* Test hooks validate their nonce and only work before the first step. */
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_false(scram_server_test_set_nonce(&s, ""));
    assert_false(scram_server_test_set_nonce(&s, "a,b"));
    assert_false(scram_server_test_set_nonce(&s, "a b"));
    assert_true(scram_server_test_set_nonce(&s, "abc"));
    assert_int_equal(srv_first(&s, RFC_CLIENT_FIRST, out, &err), SCRAM_OK);
    assert_false(scram_server_test_set_nonce(&s, "abc"));
    scram_server_free(&s);
    scram_client_init_password(&c, "x");
    assert_false(scram_client_test_set_nonce(&c, NULL, ""));
    assert_true(scram_client_test_set_nonce(&c, "a,b=c", "n"));
    assert_int_equal(scram_client_first(&c, out, sizeof(out), &outlen), SCRAM_OK);
    assert_string_equal(out, "n,,n=a=2Cb=3Dc,r=n");
    assert_false(scram_client_test_set_nonce(&c, NULL, "n"));
    scram_client_free(&c);

    /* Client buffer too small. */
    scram_client_init_password(&c, "x");
    assert_int_equal(scram_client_first(&c, out, 8, &outlen), SCRAM_ERR_BUFFER);
    scram_client_free(&c);
}

/* Random nonces: 24 printable characters, different each time, and the
 * server's message starts with the client's nonce. */
static void test_random_nonces(void **state)
{
    (void)state;
    struct scram_client c1, c2;
    struct scram_server s;
    char a[BUF], b[BUF], sf[BUF];
    size_t alen, blen;
    const char *err;

    scram_client_init_password(&c1, "x");
    scram_client_init_password(&c2, "x");
    assert_int_equal(scram_client_first(&c1, a, sizeof(a), &alen), SCRAM_OK);
    assert_int_equal(scram_client_first(&c2, b, sizeof(b), &blen), SCRAM_OK);
    assert_int_equal(alen, strlen("n,,n=,r=") + 24);
    assert_string_not_equal(a, b);
    assert_true(scram_server_init(&s, "x"));
    assert_int_equal(srv_first(&s, a, sf, &err), SCRAM_OK);
    assert_memory_equal(sf + 2, a + 8, 24);
    assert_int_equal(strlen(sf), strlen("r=") + 48 + strlen(",s=") + 24 + strlen(",i=4096"));
    scram_client_free(&c1);
    scram_client_free(&c2);
    scram_server_free(&s);
}

static void test_status_str(void **state)
{
    (void)state;
    for (int st = SCRAM_OK; st <= SCRAM_ERR_INTERNAL; st++) {
        const char *s = scram_status_str((enum scram_status)st);
        assert_non_null(s);
        assert_string_not_equal(s, "?");
        for (int other = SCRAM_OK; other < st; other++)
            assert_string_not_equal(s, scram_status_str((enum scram_status)other));
    }
    assert_string_equal(scram_status_str(SCRAM_OK), "ok");
    assert_string_equal(scram_status_str(SCRAM_ERR_WRONG_PASSWORD), "wrong password");
    assert_string_equal(scram_status_str((enum scram_status)999), "?");
}

/* free wipes: no key material stays behind in the caller's struct. */
static void test_free_wipes(void **state)
{
    (void)state;
    struct scram_server s;
    struct scram_client c;
    static const uint8_t zero[sizeof(struct scram_server) > sizeof(struct scram_client)
                                  ? sizeof(struct scram_server)
                                  : sizeof(struct scram_client)];

    assert_true(scram_server_init(&s, RFC_SECRET));
    scram_client_init_password(&c, RFC_PASSWORD);
    assert_int_equal(exchange(&c, &s), SCRAM_OK);
    scram_server_free(&s);
    scram_client_free(&c);
    assert_memory_equal(&s, zero, sizeof(s));
    assert_memory_equal(&c, zero, sizeof(c));
}

/* ---- channel binding (tls-server-end-point) ---- */

static const uint8_t CERT_HASH[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                      12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                      23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* A server offering binding with hash sh, the client binding with ch (NULL:
 * the client sends "y"), mechanism mech: the status of the exchange. */
static enum scram_status cbind_exchange(const uint8_t *sh, const uint8_t *ch, bool client_y,
                                        const char *mech)
{
    struct scram_client c;
    struct scram_server s;
    assert_true(scram_server_init(&s, RFC_SECRET));
    if (sh)
        assert_true(scram_server_set_cbind(&s, sh, sizeof(CERT_HASH)));
    scram_client_init_password(&c, RFC_PASSWORD);
    if (ch)
        assert_true(scram_client_set_cbind(&c, ch, sizeof(CERT_HASH)));
    else if (client_y)
        assert_true(scram_client_set_cbind(&c, NULL, 0));
    enum scram_status st = SCRAM_ERR_UNSUPPORTED;
    if (scram_server_set_mechanism(&s, mech))
        st = exchange(&c, &s);
    scram_client_free(&c);
    scram_server_free(&s);
    return st;
}

static void test_cbind_roundtrip(void **state)
{
    (void)state;
    assert_int_equal(cbind_exchange(CERT_HASH, CERT_HASH, false, SCRAM_PLUS_MECHANISM), SCRAM_OK);
    /* Offered, but the client does not bind ("n", plain SCRAM): allowed, as
     * libpq's channel_binding=disable does. */
    assert_int_equal(cbind_exchange(CERT_HASH, NULL, false, SCRAM_MECHANISM), SCRAM_OK);
    /* Not offered (no TLS), and a client that could bind says "y". */
    assert_int_equal(cbind_exchange(NULL, NULL, true, SCRAM_MECHANISM), SCRAM_OK);
}

static void test_cbind_refusals(void **state)
{
    (void)state;
    uint8_t other[32];
    memcpy(other, CERT_HASH, sizeof(other));
    other[31] ^= 1;
    /* A man in the middle: the client saw another certificate. */
    assert_int_equal(cbind_exchange(CERT_HASH, other, false, SCRAM_PLUS_MECHANISM),
                     SCRAM_ERR_CHANNEL_BINDING);
    /* "y" although we offered binding: a downgrade. */
    assert_int_equal(cbind_exchange(CERT_HASH, NULL, true, SCRAM_MECHANISM),
                     SCRAM_ERR_CHANNEL_BINDING);
    /* -PLUS only when offered; binding data only with -PLUS, -PLUS only with it. */
    assert_int_equal(cbind_exchange(NULL, CERT_HASH, false, SCRAM_PLUS_MECHANISM),
                     SCRAM_ERR_UNSUPPORTED);
    assert_int_equal(cbind_exchange(CERT_HASH, CERT_HASH, false, SCRAM_MECHANISM),
                     SCRAM_ERR_MALFORMED);
    assert_int_equal(cbind_exchange(CERT_HASH, NULL, false, SCRAM_PLUS_MECHANISM),
                     SCRAM_ERR_MALFORMED);
    /* "p=" when nothing was offered. */
    assert_int_equal(cbind_exchange(NULL, CERT_HASH, false, SCRAM_MECHANISM),
                     SCRAM_ERR_CHANNEL_BINDING);

    struct scram_server s;
    char out[BUF];
    const char *err;
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_false(scram_server_set_mechanism(&s, "SCRAM-SHA-1"));
    assert_false(scram_server_set_cbind(&s, CERT_HASH, 0));
    assert_false(scram_server_set_cbind(&s, CERT_HASH, SCRAM_CBIND_MAX + 1));
    assert_true(scram_server_set_cbind(&s, CERT_HASH, sizeof(CERT_HASH)));
    assert_true(scram_server_set_mechanism(&s, SCRAM_PLUS_MECHANISM));
    /* Another binding type. */
    assert_int_equal(srv_first(&s, "p=tls-unique,,n=,r=abc", out, &err), SCRAM_ERR_CHANNEL_BINDING);
    scram_server_free(&s);
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_true(scram_server_set_cbind(&s, CERT_HASH, sizeof(CERT_HASH)));
    assert_true(scram_server_set_mechanism(&s, SCRAM_PLUS_MECHANISM));
    assert_int_equal(srv_first(&s, "p=tls-server-end-point", out, &err), SCRAM_ERR_CHANNEL_BINDING);
    scram_server_free(&s);
    assert_true(scram_server_init(&s, RFC_SECRET));
    assert_true(scram_server_set_cbind(&s, CERT_HASH, sizeof(CERT_HASH)));
    assert_true(scram_server_set_mechanism(&s, SCRAM_PLUS_MECHANISM));
    assert_int_equal(srv_first(&s, "p=tls-server-end-point,", out, &err), SCRAM_ERR_MALFORMED);
    scram_server_free(&s);
}

/* The client's messages carry the binding as RFC 5802 says: the GS2 header
 * in client-first, and base64(header + hash) as c= in client-final. */
static void test_cbind_client_messages(void **state)
{
    (void)state;
    struct scram_client c;
    char m1[BUF], m3[BUF];
    size_t n1;
    const char *err;
    scram_client_init_password(&c, RFC_PASSWORD);
    assert_false(scram_client_set_cbind(&c, CERT_HASH, 0));
    assert_true(scram_client_set_cbind(&c, CERT_HASH, sizeof(CERT_HASH)));
    assert_true(scram_client_test_set_nonce(&c, NULL, RFC_CLIENT_NONCE));
    assert_int_equal(scram_client_first(&c, m1, sizeof(m1), &n1), SCRAM_OK);
    assert_string_equal(m1, "p=tls-server-end-point,,n=,r=" RFC_CLIENT_NONCE);
    assert_int_equal(cli_final(&c, RFC_SERVER_FIRST, m3, &err), SCRAM_OK);
    uint8_t raw[64];
    const char *hdr = "p=tls-server-end-point,,";
    memcpy(raw, hdr, strlen(hdr));
    memcpy(raw + strlen(hdr), CERT_HASH, sizeof(CERT_HASH));
    char want[128] = "c=";
    EVP_EncodeBlock((unsigned char *)want + 2, raw, (int)(strlen(hdr) + sizeof(CERT_HASH)));
    strcat(want, ",r=");
    assert_memory_equal(m3, want, strlen(want));
    scram_client_free(&c);

    scram_client_init_password(&c, RFC_PASSWORD);
    assert_true(scram_client_set_cbind(&c, NULL, 0));
    assert_true(scram_client_test_set_nonce(&c, NULL, RFC_CLIENT_NONCE));
    assert_int_equal(scram_client_first(&c, m1, sizeof(m1), &n1), SCRAM_OK);
    assert_string_equal(m1, "y,,n=,r=" RFC_CLIENT_NONCE);
    assert_int_equal(cli_final(&c, RFC_SERVER_FIRST, m3, &err), SCRAM_OK);
    assert_memory_equal(m3, "c=eSws,r=", 9);           /* eSws = base64("y,,") */
    assert_false(scram_client_set_cbind(&c, NULL, 0)); /* too late */
    scram_client_free(&c);
}

static void test_user_salt(void **state)
{
    (void)state;
    uint8_t key[SCRAM_KEY_LEN] = {7}, other[SCRAM_KEY_LEN] = {8};
    uint8_t a[16], b[16], c[16], d[16];
    assert_true(scram_user_salt(key, "alice", a, 16));
    assert_true(scram_user_salt(key, "alice", b, 16));
    assert_memory_equal(a, b, 16);
    assert_true(scram_user_salt(key, "bob", c, 16));
    assert_memory_not_equal(a, c, 16);
    assert_true(scram_user_salt(other, "alice", d, 16));
    assert_memory_not_equal(a, d, 16);
    assert_false(scram_user_salt(key, "alice", a, 0));
    assert_false(scram_user_salt(key, "alice", a, SCRAM_KEY_LEN + 1));
}

int main(void)
{
    log_set_quiet(true);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_client),
        cmocka_unit_test(test_rfc7677_server),
        cmocka_unit_test(test_rfc7677_client_keys),
        cmocka_unit_test(test_gs2_flag_y),
        cmocka_unit_test(test_secret_from_password_and_format),
        cmocka_unit_test(test_secret_parse_rejects),
        cmocka_unit_test(test_roundtrip_plain_password),
        cmocka_unit_test(test_roundtrip_scram_secret),
        cmocka_unit_test(test_client_key_passthrough),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_bad_server_signature),
        cmocka_unit_test(test_server_error_reply),
        cmocka_unit_test(test_server_first_malformed),
        cmocka_unit_test(test_server_final_malformed),
        cmocka_unit_test(test_client_final_malformed),
        cmocka_unit_test(test_client_verify_malformed),
        cmocka_unit_test(test_out_of_order_and_init),
        cmocka_unit_test(test_random_nonces),
        cmocka_unit_test(test_status_str),
        cmocka_unit_test(test_free_wipes),
        cmocka_unit_test(test_cbind_roundtrip),
        cmocka_unit_test(test_cbind_refusals),
        cmocka_unit_test(test_cbind_client_messages),
        cmocka_unit_test(test_user_salt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
