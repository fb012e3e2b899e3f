/* test_proto.c - the wire-protocol module: framing, startup packets, readers,
 * ErrorResponse parsing, byte-exact builders, writer bounds, literal quoting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

#define CANARY   0xA5
#define SLACK    32
#define ARRAY(a) (sizeof(a) / sizeof((a)[0]))

/* Asserts that w holds exactly the bytes of expected. */
#define assert_written(w, expected)                                                                \
    do {                                                                                           \
        assert_false((w)->overflow);                                                               \
        assert_int_equal((w)->len, sizeof(expected));                                              \
        assert_memory_equal((w)->buf, (expected), sizeof(expected));                               \
    } while (0)

/* ---- helpers -------------------------------------------------------------- */

/* A typed message header + body, written by hand (not with the writer). */
static size_t frame(uint8_t *out, uint8_t type, const void *body, size_t n)
{
    out[0] = type;
    proto_put32(out + 1, (uint32_t)(n + 4));
    memcpy(out + 5, body, n);
    return n + 5;
}

/* A startup-phase packet: length, code, then body bytes verbatim. */
static uint32_t startup_raw(uint8_t *out, uint32_t code, const void *body, size_t n)
{
    proto_put32(out, (uint32_t)(n + 8));
    proto_put32(out + 4, code);
    if (n)
        memcpy(out + 8, body, n);
    return (uint32_t)(n + 8);
}

static bool all_canary(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != CANARY)
            return false;
    return true;
}

/* ---- proto_status_str ----------------------------------------------------- */

static void test_status_str(void **state)
{
    (void)state;
    assert_string_equal(proto_status_str(PROTO_OK), "ok");
    assert_string_equal(proto_status_str(PROTO_NEED_MORE), "need more");
    assert_string_equal(proto_status_str(PROTO_BAD), "malformed");
    assert_string_equal(proto_status_str(PROTO_TOO_BIG), "too big");
    assert_string_equal(proto_status_str((enum proto_status)42), "?");
}

/* ---- proto_peek_header ---------------------------------------------------- */

/* The types a backend reads after login, and nothing else (a random type
 * from a client is refused by sluice, not forwarded to kill a server). */
static void test_frontend_type_ok(void **state)
{
    (void)state;
    const char *ok = "BCcdDEfFHPQSX";
    int n = 0;
    for (int t = 0; t < 256; t++) {
        bool want = t != 0 && strchr(ok, t) != NULL;
        assert_int_equal(proto_frontend_type_ok((uint8_t)t), want);
        n += want;
    }
    assert_int_equal(n, 13);
    assert_false(proto_frontend_type_ok('p')); /* a password message: login only */
}

/* The shapes PostgreSQL refuses with "invalid message format", refused by
 * sluice before a server sees them; anything else passes. */
static void test_frontend_shape_ok(void **state)
{
    (void)state;
    const uint8_t none[1] = {0};
    assert_true(proto_frontend_shape_ok('S', none, 0));
    assert_false(proto_frontend_shape_ok('S', (const uint8_t *)"junk", 4));
    assert_true(proto_frontend_shape_ok('H', none, 0));
    assert_false(proto_frontend_shape_ok('H', none, 1));
    assert_true(proto_frontend_shape_ok('Q', (const uint8_t *)"SELECT 1", 9));
    assert_true(proto_frontend_shape_ok('Q', none, 1)); /* an empty query */
    assert_false(proto_frontend_shape_ok('Q', (const uint8_t *)"SELECT 1", 8));
    assert_false(proto_frontend_shape_ok('Q', none, 0));
    assert_true(proto_frontend_shape_ok('D', (const uint8_t *)"Sst", 4));
    assert_true(proto_frontend_shape_ok('C', (const uint8_t *)"P", 2));
    assert_false(proto_frontend_shape_ok('D', (const uint8_t *)"Xst", 4)); /* no such kind */
    assert_false(proto_frontend_shape_ok('C', (const uint8_t *)"Sst", 3)); /* no NUL */
    assert_false(proto_frontend_shape_ok('D', (const uint8_t *)"S", 1));
    const uint8_t exec[] = {'p', 0, 0, 0, 0, 0};
    assert_true(proto_frontend_shape_ok('E', exec, 6));
    assert_true(proto_frontend_shape_ok('E', exec + 1, 5)); /* the unnamed portal */
    assert_false(proto_frontend_shape_ok('E', exec, 4));
    const uint8_t exec_bad[] = {'p', 'q', 0, 0, 0, 0};
    assert_false(proto_frontend_shape_ok('E', exec_bad, 5)); /* no NUL before the count */
    /* Not checked: PostgreSQL reads them (or drops COPY messages) as they come. */
    assert_true(proto_frontend_shape_ok('P', (const uint8_t *)"junk", 4));
    assert_true(proto_frontend_shape_ok('B', (const uint8_t *)"junk", 4));
    assert_true(proto_frontend_shape_ok('d', (const uint8_t *)"junk", 4));
    assert_true(proto_frontend_shape_ok('c', (const uint8_t *)"junk", 4));
}

static void test_peek_header_need_more(void **state)
{
    (void)state;
    const uint8_t buf[5] = {'Q', 0, 0, 0, 9};
    uint8_t type = 0x77;
    uint32_t len = 0x77;
    for (size_t n = 0; n < PROTO_HDR; n++)
        assert_int_equal(proto_peek_header(buf, n, 8192, &type, &len), PROTO_NEED_MORE);
    /* Nothing is reported until the header is complete. */
    assert_int_equal(type, 0x77);
    assert_int_equal(len, 0x77);
    /* The header alone is enough: the body need not have arrived. */
    assert_int_equal(proto_peek_header(buf, 5, 8192, &type, &len), PROTO_OK);
    assert_int_equal(type, 'Q');
    assert_int_equal(len, 10);
}

static void test_peek_header_bad_length(void **state)
{
    (void)state;
    uint8_t type;
    uint32_t len;
    for (uint8_t l = 0; l < 4; l++) {
        const uint8_t buf[8] = {'Q', 0, 0, 0, l, 0, 0, 0};
        assert_int_equal(proto_peek_header(buf, sizeof(buf), 8192, &type, &len), PROTO_BAD);
    }
    /* A length of 4 is an empty body: fine. */
    const uint8_t sync[5] = {'S', 0, 0, 0, 4};
    assert_int_equal(proto_peek_header(sync, sizeof(sync), 8192, &type, &len), PROTO_OK);
    assert_int_equal(type, 'S');
    assert_int_equal(len, 5);
}

static void test_peek_header_max(void **state)
{
    (void)state;
    uint8_t buf[5] = {'D', 0, 0, 0, 0};
    uint8_t type;
    uint32_t len;

    /* max_packet bounds the whole message, type byte included. */
    proto_put32(buf + 1, 99);
    assert_int_equal(proto_peek_header(buf, sizeof(buf), 100, &type, &len), PROTO_OK);
    assert_int_equal(len, 100);
    proto_put32(buf + 1, 100);
    assert_int_equal(proto_peek_header(buf, sizeof(buf), 100, &type, &len), PROTO_TOO_BIG);
    assert_int_equal(proto_peek_header(buf, sizeof(buf), 101, &type, &len), PROTO_OK);
    assert_int_equal(len, 101);

    /* Lengths that cannot be represented are too big whatever the limit. */
    proto_put32(buf + 1, 0x7fffffffu);
    assert_int_equal(proto_peek_header(buf, sizeof(buf), UINT32_MAX, &type, &len), PROTO_TOO_BIG);
    proto_put32(buf + 1, 0xffffffffu);
    assert_int_equal(proto_peek_header(buf, sizeof(buf), UINT32_MAX, &type, &len), PROTO_TOO_BIG);
    proto_put32(buf + 1, 0x80000000u);
    assert_int_equal(proto_peek_header(buf, sizeof(buf), 8192, &type, &len), PROTO_TOO_BIG);
    /* The largest accepted length. */
    proto_put32(buf + 1, 0x7ffffffeu);
    assert_int_equal(proto_peek_header(buf, sizeof(buf), UINT32_MAX, &type, &len), PROTO_OK);
    assert_int_equal(len, 0x7fffffffu);
    /* max_packet_size's own maximum (INT_MAX) accepts exactly that. */
    assert_int_equal(proto_peek_header(buf, sizeof(buf), 0x7fffffffu, &type, &len), PROTO_OK);
}

static void test_peek_header_stream(void **state)
{
    (void)state;
    /* Two messages back to back, walked as a forwarder does. */
    const uint8_t stream[] = {'Z', 0,   0,   0,   5,   'I', 'C', 0,   0, 0, 13, 'S', 'E',
                              'L', 'E', 'C', 'T', ' ', '1', 0,   'Z', 0, 0, 0,  5,   'T'};
    size_t off = 0;
    int n = 0;
    uint8_t type;
    uint32_t len;
    const uint8_t want_type[] = {'Z', 'C', 'Z'};
    const uint32_t want_len[] = {6, 14, 6};
    while (proto_peek_header(stream + off, sizeof(stream) - off, 8192, &type, &len) == PROTO_OK) {
        assert_true(n < 3);
        assert_int_equal(type, want_type[n]);
        assert_int_equal(len, want_len[n]);
        off += len;
        n++;
    }
    assert_int_equal(n, 3);
    assert_int_equal(off, sizeof(stream));
}

/* ---- proto_peek_startup --------------------------------------------------- */

static void test_peek_startup(void **state)
{
    (void)state;
    uint8_t buf[8] = {0};
    uint32_t len = 0;

    for (size_t n = 0; n < 4; n++)
        assert_int_equal(proto_peek_startup(buf, n, &len), PROTO_NEED_MORE);
    for (uint32_t l = 0; l < 8; l++) {
        proto_put32(buf, l);
        assert_int_equal(proto_peek_startup(buf, 4, &len), PROTO_BAD);
    }
    proto_put32(buf, 8);
    assert_int_equal(proto_peek_startup(buf, 4, &len), PROTO_OK);
    assert_int_equal(len, 8);
    proto_put32(buf, PROTO_STARTUP_MAX);
    assert_int_equal(proto_peek_startup(buf, 8, &len), PROTO_OK);
    assert_int_equal(len, PROTO_STARTUP_MAX);
    proto_put32(buf, PROTO_STARTUP_MAX + 1);
    assert_int_equal(proto_peek_startup(buf, 8, &len), PROTO_TOO_BIG);
    proto_put32(buf, 0xffffffffu);
    assert_int_equal(proto_peek_startup(buf, 8, &len), PROTO_TOO_BIG);
}

/* ---- proto_parse_startup: v3 ----------------------------------------------- */

/* user=bob database=appdb application_name=psql options= (empty), as psql
 * sends it; the literal's own NUL is the list terminator. */
static const uint8_t STARTUP_V3[] = "\0\0\0\x40"
                                    "\0\x03\0\0"
                                    "user\0bob\0database\0appdb\0application_name\0psql\0"
                                    "options\0\0";

static void test_startup_v3(void **state)
{
    (void)state;
    uint8_t buf[sizeof(STARTUP_V3)];
    memcpy(buf, STARTUP_V3, sizeof(buf));
    uint32_t n = sizeof(buf);
    assert_int_equal(n, 64);
    assert_int_equal(proto_get32(buf), n);

    struct proto_startup st;
    const char *err = NULL;
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_OK);
    assert_int_equal(st.kind, PROTO_STARTUP_V3);
    assert_int_equal(st.version, PROTO_V3);
    assert_int_equal(st.n_params, 4);
    assert_string_equal(st.names[0], "user");
    assert_string_equal(st.values[0], "bob");
    assert_string_equal(st.names[1], "database");
    assert_string_equal(st.values[1], "appdb");
    assert_string_equal(st.names[2], "application_name");
    assert_string_equal(st.values[2], "psql");
    assert_string_equal(st.names[3], "options");
    assert_string_equal(st.values[3], "");
    /* Names and values point into the packet. */
    assert_ptr_equal(st.names[0], (const char *)buf + 8);
    assert_ptr_equal(st.values[0], (const char *)buf + 13);

    assert_string_equal(proto_startup_get(&st, "user"), "bob");
    assert_string_equal(proto_startup_get(&st, "database"), "appdb");
    assert_string_equal(proto_startup_get(&st, "application_name"), "psql");
    assert_string_equal(proto_startup_get(&st, "options"), "");
    assert_null(proto_startup_get(&st, "replication"));
    assert_null(proto_startup_get(&st, "User")); /* names are case-sensitive */
    assert_null(proto_startup_get(&st, ""));
}

static void test_startup_v3_writer_roundtrip(void **state)
{
    (void)state;
    /* The same packet built with the writer is byte-identical. */
    uint8_t buf[128];
    struct proto_writer w;
    proto_writer_init(&w, buf, sizeof(buf));
    proto_begin(&w, 0);
    proto_add32(&w, PROTO_V3);
    proto_add_string(&w, "user");
    proto_add_string(&w, "bob");
    proto_add_string(&w, "database");
    proto_add_string(&w, "appdb");
    proto_add_string(&w, "application_name");
    proto_add_string(&w, "psql");
    proto_add_byte(&w, 0);
    proto_end(&w);
    const uint8_t expected[] = {
        0,   0,   0,   55,  0,   3,   0,   0,   'u', 's', 'e', 'r', 0,   'b',
        'o', 'b', 0,   'd', 'a', 't', 'a', 'b', 'a', 's', 'e', 0,   'a', 'p',
        'p', 'd', 'b', 0,   'a', 'p', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o',
        'n', '_', 'n', 'a', 'm', 'e', 0,   'p', 's', 'q', 'l', 0,   0,
    };
    /* 55 = 8 + "user" 5 + "bob" 4 + "database" 9 + "appdb" 6 +
     *      "application_name" 17 + "psql" 5 + terminator 1 */
    assert_int_equal(proto_get32(expected), sizeof(expected));
    assert_written(&w, expected);

    struct proto_startup st;
    const char *err;
    uint32_t pktlen;
    assert_int_equal(proto_peek_startup(buf, w.len, &pktlen), PROTO_OK);
    assert_int_equal(pktlen, w.len);
    assert_int_equal(proto_parse_startup(buf, pktlen, &st, &err), PROTO_OK);
    assert_int_equal(st.n_params, 3);
    assert_string_equal(proto_startup_get(&st, "database"), "appdb");
}

static void test_startup_v3_no_params(void **state)
{
    (void)state;
    uint8_t buf[16];
    struct proto_startup st;
    const char *err;
    uint32_t n = startup_raw(buf, PROTO_V3, "", 1);
    assert_int_equal(n, 9);
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_OK);
    assert_int_equal(st.n_params, 0);
    assert_null(proto_startup_get(&st, "user"));

    /* No terminator at all. */
    n = startup_raw(buf, PROTO_V3, NULL, 0);
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
    assert_non_null(err);
}

static void test_startup_v3_duplicate_first_wins(void **state)
{
    (void)state;
    static const char body[] = "user\0a\0user\0b\0"; /* + the literal's NUL */
    uint8_t buf[64];
    struct proto_startup st;
    const char *err;
    uint32_t n = startup_raw(buf, PROTO_V3, body, sizeof(body));
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_OK);
    assert_int_equal(st.n_params, 2);
    assert_string_equal(proto_startup_get(&st, "user"), "a");
}

static void test_startup_v3_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const char *body;
        size_t n;
    } cases[] = {
        {"missing terminator", "user\0bob\0", 9},
        {"bytes after terminator", "user\0bob\0\0x\0", 12},
        {"two terminators", "user\0bob\0\0\0", 11},
        {"empty name in the middle", "user\0bob\0\0x\0y\0\0", 15},
        {"unterminated value", "user\0bob", 8},
        {"unterminated name", "user", 4},
        {"name without value", "user\0", 5},
        {"odd number of strings", "user\0bob\0db\0", 12},
        {"only a non-NUL byte", "x", 1},
    };
    for (size_t i = 0; i < ARRAY(cases); i++) {
        uint8_t buf[64];
        struct proto_startup st;
        const char *err = NULL;
        uint32_t n = startup_raw(buf, PROTO_V3, cases[i].body, cases[i].n);
        enum proto_status ps = proto_parse_startup(buf, n, &st, &err);
        if (ps != PROTO_BAD)
            fail_msg("%s: got %s", cases[i].what, proto_status_str(ps));
        assert_non_null(err);
        assert_string_equal(err, "invalid startup packet layout");
    }
}

static void test_startup_length_mismatch(void **state)
{
    (void)state;
    static const char body[] = "user\0bob\0";
    uint8_t buf[64];
    struct proto_startup st;
    const char *err;
    uint32_t n = startup_raw(buf, PROTO_V3, body, sizeof(body));
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_OK);
    /* The length field must agree with the length given. */
    assert_int_equal(proto_parse_startup(buf, n - 1, &st, &err), PROTO_BAD);
    proto_put32(buf, n + 1);
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
    /* Under 8 bytes is never a packet. */
    for (uint32_t l = 0; l < 8; l++) {
        proto_put32(buf, l);
        assert_int_equal(proto_parse_startup(buf, l, &st, &err), PROTO_BAD);
    }
}

/* Builds a v3 packet with n parameters p0=v0 ... */
static uint32_t startup_with_params(uint8_t *buf, size_t cap, int n)
{
    struct proto_writer w;
    proto_writer_init(&w, buf, cap);
    proto_begin(&w, 0);
    proto_add32(&w, PROTO_V3);
    for (int i = 0; i < n; i++) {
        char name[16], value[16];
        snprintf(name, sizeof(name), "p%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        proto_add_string(&w, name);
        proto_add_string(&w, value);
    }
    proto_add_byte(&w, 0);
    proto_end(&w);
    assert_false(w.overflow);
    return (uint32_t)w.len;
}

static void test_startup_too_many_params(void **state)
{
    (void)state;
    uint8_t buf[2048];
    struct proto_startup st;
    const char *err;

    uint32_t n = startup_with_params(buf, sizeof(buf), PROTO_MAX_STARTUP_PARAMS);
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_OK);
    assert_int_equal(st.n_params, PROTO_MAX_STARTUP_PARAMS);
    assert_string_equal(proto_startup_get(&st, "p0"), "v0");
    assert_string_equal(proto_startup_get(&st, "p63"), "v63");

    n = startup_with_params(buf, sizeof(buf), PROTO_MAX_STARTUP_PARAMS + 1);
    err = NULL;
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
    assert_non_null(err);
    assert_string_equal(err, "too many startup parameters");
    /* Never more entries than the arrays hold. */
    assert_true(st.n_params <= PROTO_MAX_STARTUP_PARAMS);

    n = startup_with_params(buf, sizeof(buf), 200);
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
    assert_string_equal(err, "too many startup parameters");
}

/* ---- proto_parse_startup: special codes ----------------------------------- */

static void test_startup_ssl_gssenc(void **state)
{
    (void)state;
    static const uint8_t ssl[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    static const uint8_t gss[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30};
    struct proto_startup st;
    const char *err;

    assert_int_equal(proto_get32(ssl + 4), PROTO_SSL_CODE);
    assert_int_equal(proto_get32(gss + 4), PROTO_GSSENC_CODE);
    assert_int_equal(proto_parse_startup(ssl, 8, &st, &err), PROTO_OK);
    assert_int_equal(st.kind, PROTO_STARTUP_SSL);
    assert_int_equal(st.n_params, 0);
    assert_int_equal(proto_parse_startup(gss, 8, &st, &err), PROTO_OK);
    assert_int_equal(st.kind, PROTO_STARTUP_GSSENC);

    /* Any other length is rejected. */
    for (uint32_t extra = 1; extra <= 8; extra++) {
        static const uint8_t zeros[16];
        uint8_t buf[32];
        uint32_t n = startup_raw(buf, PROTO_SSL_CODE, zeros, extra);
        assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
        n = startup_raw(buf, PROTO_GSSENC_CODE, zeros, extra);
        assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
    }
}

static void test_startup_cancel(void **state)
{
    (void)state;
    static const uint8_t cancel[16] = {0,    0,    0,    16,   0x04, 0xd2, 0x16, 0x2e,
                                       0x00, 0x00, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef};
    struct proto_startup st;
    const char *err;
    assert_int_equal(proto_parse_startup(cancel, 16, &st, &err), PROTO_OK);
    assert_int_equal(st.kind, PROTO_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 12345);
    assert_int_equal(st.cancel_key, 0xdeadbeefu);
    assert_int_equal(st.n_params, 0);

    static const uint8_t zeros[16];
    uint8_t buf[32];
    for (uint32_t body = 0; body <= 16; body++) {
        if (body == 8)
            continue;
        uint32_t n = startup_raw(buf, PROTO_CANCEL_CODE, zeros, body);
        assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
    }
}

/* A CancelRequest of the wrong length is still a CancelRequest: kind must say
 * so, as it does for SSLRequest and GSSENCRequest. client.c decides its error
 * message from kind/version on PROTO_BAD, and with kind left at V3 it answers
 * "unsupported frontend protocol 1234.5678" (0A000) instead of a protocol
 * violation (08P01). */
static void test_startup_cancel_wrong_length_kind(void **state)
{
    (void)state;
    static const uint8_t zeros[16];
    uint8_t buf[32];
    struct proto_startup st;
    const char *err;
    uint32_t n = startup_raw(buf, PROTO_SSL_CODE, zeros, 4);
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
    assert_int_equal(st.kind, PROTO_STARTUP_SSL);

    n = startup_raw(buf, PROTO_CANCEL_CODE, zeros, 4);
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
    assert_int_equal(st.version, PROTO_CANCEL_CODE);
    assert_int_equal(st.kind, PROTO_STARTUP_CANCEL);
}

static void test_startup_protocol_versions(void **state)
{
    (void)state;
    static const char body[] = "user\0bob\0";
    uint8_t buf[64];
    struct proto_startup st;
    const char *err;

    /* 2.0 (and 1.0, 4.0, 0.0, the 1234.x range) are refused with a reason
     * and the version, which the caller uses for its message. */
    static const uint32_t refused[] = {0x00020000u, 0x00010000u, 0x00040000u, 0,
                                       0x04d20000u, 0x04d21631u, 0xffffffffu};
    for (size_t i = 0; i < ARRAY(refused); i++) {
        uint32_t n = startup_raw(buf, refused[i], body, sizeof(body));
        err = NULL;
        assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_BAD);
        assert_non_null(err);
        assert_string_equal(err, "unsupported frontend protocol");
        assert_int_equal(st.version, refused[i]);
        assert_int_equal(st.kind, PROTO_STARTUP_V3);
        assert_int_equal(st.n_params, 0);
    }
    /* 3.x minor versions are parsed; negotiating them is the caller's job. */
    uint32_t n = startup_raw(buf, 0x00030002u, body, sizeof(body));
    assert_int_equal(proto_parse_startup(buf, n, &st, &err), PROTO_OK);
    assert_int_equal(st.version, 0x00030002u);
    assert_string_equal(proto_startup_get(&st, "user"), "bob");
}

/* ---- proto_reader --------------------------------------------------------- */

static void test_reader_values(void **state)
{
    (void)state;
    static const uint8_t body[] = {0x7f, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef,
                                   'h',  'i',  0,    0,    1,    2,    3};
    uint8_t msg[64];
    size_t n = frame(msg, 'x', body, sizeof(body));
    struct proto_reader r;
    proto_reader_init(&r, msg, (uint32_t)n);
    assert_false(r.bad);
    assert_int_equal(proto_read_byte(&r), 0x7f);
    assert_int_equal(proto_read16(&r), 0x1234);
    assert_int_equal(proto_read32(&r), 0xdeadbeefu);
    assert_string_equal(proto_read_string(&r), "hi");
    assert_string_equal(proto_read_string(&r), "");
    const uint8_t *p = proto_read_bytes(&r, 3);
    assert_ptr_equal(p, msg + n - 3);
    assert_false(r.bad);
    assert_ptr_equal(r.p, r.end);
    /* Zero bytes at the end are fine. */
    assert_non_null(proto_read_bytes(&r, 0));
    assert_false(r.bad);
}

static void test_reader_past_end(void **state)
{
    (void)state;
    uint8_t msg[16];
    struct proto_reader r;
    size_t n;

    n = frame(msg, 'x', "", 0);
    proto_reader_init(&r, msg, (uint32_t)n);
    assert_false(r.bad);
    assert_int_equal(proto_read_byte(&r), 0);
    assert_true(r.bad);
    assert_ptr_equal(r.p, r.end);

    n = frame(msg, 'x', "\x01", 1);
    proto_reader_init(&r, msg, (uint32_t)n);
    assert_int_equal(proto_read16(&r), 0);
    assert_true(r.bad);
    assert_ptr_equal(r.p, r.end);

    n = frame(msg, 'x', "\x01\x02\x03", 3);
    proto_reader_init(&r, msg, (uint32_t)n);
    assert_int_equal(proto_read32(&r), 0);
    assert_true(r.bad);
    assert_ptr_equal(r.p, r.end);

    n = frame(msg, 'x', "abc", 3); /* no NUL */
    proto_reader_init(&r, msg, (uint32_t)n);
    assert_string_equal(proto_read_string(&r), "");
    assert_true(r.bad);
    assert_ptr_equal(r.p, r.end);

    n = frame(msg, 'x', "abc", 3);
    proto_reader_init(&r, msg, (uint32_t)n);
    assert_null(proto_read_bytes(&r, 4));
    assert_true(r.bad);
    assert_ptr_equal(r.p, r.end);

    n = frame(msg, 'x', "abc", 3);
    proto_reader_init(&r, msg, (uint32_t)n);
    assert_null(proto_read_bytes(&r, UINT32_MAX));
    assert_true(r.bad);

    /* Once bad, it stays bad and every read stays inside the message. */
    n = frame(msg, 'x', "ab", 2);
    proto_reader_init(&r, msg, (uint32_t)n);
    (void)proto_read32(&r);
    assert_true(r.bad);
    assert_int_equal(proto_read_byte(&r), 0);
    assert_int_equal(proto_read16(&r), 0);
    assert_string_equal(proto_read_string(&r), "");
    assert_null(proto_read_bytes(&r, 1));
    assert_true(r.bad);
    assert_ptr_equal(r.p, r.end);
}

static void test_reader_short_message(void **state)
{
    (void)state;
    uint8_t msg[8] = {'x', 0, 0, 0, 4};
    struct proto_reader r;
    for (uint32_t n = 0; n < PROTO_HDR; n++) {
        proto_reader_init(&r, msg, n);
        assert_true(r.bad);
        assert_ptr_equal(r.p, r.end);
        assert_int_equal(proto_read_byte(&r), 0);
        assert_string_equal(proto_read_string(&r), "");
    }
}

/* ---- proto_parse_error ---------------------------------------------------- */

static void test_parse_error_fields(void **state)
{
    (void)state;
    /* As PostgreSQL 16 sends it for SELECT * FROM nope. */
    static const char body[] = "SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0"
                               "Fparse_relation.c\0L1392\0RparserOpenTable\0";
    uint8_t msg[256];
    size_t n = frame(msg, 'E', body, sizeof(body)); /* the literal's NUL terminates */
    struct proto_error_fields f;
    assert_true(proto_parse_error(msg, (uint32_t)n, &f));
    assert_string_equal(f.severity, "ERROR");
    assert_string_equal(f.sqlstate, "42P01");
    assert_string_equal(f.message, "relation \"nope\" does not exist");

    /* The last occurrence of a field wins; unknown codes are skipped. */
    static const char dup[] = "SWARNING\0Zzz\0SFATAL\0";
    n = frame(msg, 'N', dup, sizeof(dup));
    assert_true(proto_parse_error(msg, (uint32_t)n, &f));
    assert_string_equal(f.severity, "FATAL");
    assert_string_equal(f.sqlstate, "");
    assert_string_equal(f.message, "");
}

static void test_parse_error_empty_and_bad(void **state)
{
    (void)state;
    uint8_t msg[64];
    struct proto_error_fields f;
    size_t n;

    n = frame(msg, 'E', "", 1); /* only the terminator */
    assert_true(proto_parse_error(msg, (uint32_t)n, &f));
    assert_string_equal(f.severity, "");
    assert_string_equal(f.sqlstate, "");
    assert_string_equal(f.message, "");

    n = frame(msg, 'E', "", 0); /* no terminator */
    assert_false(proto_parse_error(msg, (uint32_t)n, &f));
    assert_non_null(f.severity);
    assert_non_null(f.sqlstate);
    assert_non_null(f.message);

    n = frame(msg, 'E', "SERROR\0", 7); /* field, no terminator */
    assert_false(proto_parse_error(msg, (uint32_t)n, &f));

    n = frame(msg, 'E', "SERROR", 6); /* unterminated value */
    assert_false(proto_parse_error(msg, (uint32_t)n, &f));

    n = frame(msg, 'E', "S", 1); /* code, no value */
    assert_false(proto_parse_error(msg, (uint32_t)n, &f));

    for (uint32_t l = 0; l < PROTO_HDR; l++)
        assert_false(proto_parse_error(msg, l, &f));
}

/* ---- builders: byte-exact -------------------------------------------------- */

static void test_build_ready(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct proto_writer w;
    static const uint8_t idle[] = {'Z', 0, 0, 0, 5, 'I'};
    static const uint8_t in_xact[] = {'Z', 0, 0, 0, 5, 'T'};
    static const uint8_t failed[] = {'Z', 0, 0, 0, 5, 'E'};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_ready(&w, 'I');
    assert_written(&w, idle);
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_ready(&w, 'T');
    assert_written(&w, in_xact);
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_ready(&w, 'E');
    assert_written(&w, failed);
}

static void test_build_param_status(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct proto_writer w;
    static const uint8_t expected[] = {'S', 0,   0,   0,   25,  'c', 'l', 'i', 'e',
                                       'n', 't', '_', 'e', 'n', 'c', 'o', 'd', 'i',
                                       'n', 'g', 0,   'U', 'T', 'F', '8', 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_param_status(&w, "client_encoding", "UTF8");
    assert_written(&w, expected);

    static const uint8_t empty[] = {'S', 0, 0, 0, 7, 'x', 0, 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_param_status(&w, "x", "");
    assert_written(&w, empty);
}

static void test_build_backend_key(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct proto_writer w;
    static const uint8_t expected[] = {'K',  0,    0,    0,    12,   0x00, 0x00,
                                       0x30, 0x39, 0xde, 0xad, 0xbe, 0xef};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_backend_key(&w, 12345, 0xdeadbeefu);
    assert_written(&w, expected);
}

static void test_build_query_and_friends(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct proto_writer w;

    static const uint8_t query[] = {'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_query(&w, "SELECT 1");
    assert_written(&w, query);

    static const uint8_t empty_q[] = {'Q', 0, 0, 0, 5, 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_query(&w, "");
    assert_written(&w, empty_q);

    static const uint8_t cc[] = {'C', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_command_complete(&w, "SELECT 1");
    assert_written(&w, cc);

    static const uint8_t eq[] = {'I', 0, 0, 0, 4};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_empty_query(&w);
    assert_written(&w, eq);

    static const uint8_t term[] = {'X', 0, 0, 0, 4};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_terminate(&w);
    assert_written(&w, term);

    static const uint8_t pw[] = {'p', 0, 0, 0, 11, 's', 'e', 'c', 'r', 'e', 't', 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_password(&w, "secret");
    assert_written(&w, pw);
}

static void test_build_auth(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct proto_writer w;

    static const uint8_t ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_auth(&w, PROTO_AUTH_OK, NULL, 0);
    assert_written(&w, ok);

    static const uint8_t clear[] = {'R', 0, 0, 0, 8, 0, 0, 0, 3};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_auth(&w, PROTO_AUTH_CLEARTEXT, NULL, 0);
    assert_written(&w, clear);

    static const uint8_t salt[4] = {0x01, 0x02, 0xfe, 0xff};
    static const uint8_t md5[] = {'R', 0, 0, 0, 12, 0, 0, 0, 5, 0x01, 0x02, 0xfe, 0xff};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_auth(&w, PROTO_AUTH_MD5, salt, sizeof(salt));
    assert_written(&w, md5);

    static const uint8_t sasl[] = {'R', 0,   0,   0,   23,  0,   0,   0,   10,  'S', 'C', 'R',
                                   'A', 'M', '-', 'S', 'H', 'A', '-', '2', '5', '6', 0,   0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_auth(&w, PROTO_AUTH_SASL, "SCRAM-SHA-256\0", 15);
    assert_written(&w, sasl);

    static const uint8_t cont[] = {'R', 0, 0, 0, 11, 0, 0, 0, 11, 'r', '=', 'x'};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_auth(&w, PROTO_AUTH_SASL_CONTINUE, "r=x", 3);
    assert_written(&w, cont);
}

static void test_build_sasl(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct proto_writer w;

    static const uint8_t initial[] = {'p', 0,   0,   0,   28,  'S', 'C', 'R', 'A', 'M',
                                      '-', 'S', 'H', 'A', '-', '2', '5', '6', 0,   0,
                                      0,   0,   6,   'n', ',', ',', 'n', '=', ','};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_sasl_initial(&w, "SCRAM-SHA-256", "n,,n=,", 6);
    assert_written(&w, initial);

    static const uint8_t resp[] = {'p', 0, 0, 0, 10, 'c', '=', 'b', 'i', 'w', 's'};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_sasl_response(&w, "c=biws", 6);
    assert_written(&w, resp);

    static const uint8_t empty[] = {'p', 0, 0, 0, 4};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_sasl_response(&w, NULL, 0);
    assert_written(&w, empty);
}

static void test_build_cancel(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct proto_writer w;
    static const uint8_t expected[16] = {0,    0,    0,    16,   0x04, 0xd2, 0x16, 0x2e,
                                         0x00, 0x00, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_cancel(&w, 12345, 0xdeadbeefu);
    assert_written(&w, expected);

    struct proto_startup st;
    const char *err;
    uint32_t pktlen;
    assert_int_equal(proto_peek_startup(buf, w.len, &pktlen), PROTO_OK);
    assert_int_equal(proto_parse_startup(buf, pktlen, &st, &err), PROTO_OK);
    assert_int_equal(st.kind, PROTO_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 12345);
    assert_int_equal(st.cancel_key, 0xdeadbeefu);
}

static void test_build_error(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct proto_writer w;
    static const uint8_t fatal[] = {
        'E', 0,   0,   0,   46,  'S', 'F', 'A', 'T', 'A', 'L', 0,   'V', 'F', 'A', 'T',
        'A', 'L', 0,   'C', '2', '8', 'P', '0', '1', 0,   'M', 'n', 'o', ' ', 'u', 's',
        'e', 'r', ' ', '"', 'b', 'o', 'b', '"', ' ', '(', '4', '2', ')', 0,   0,
    };
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_error(&w, true, SQLSTATE_INVALID_PASSWORD, "no user \"%s\" (%d)", "bob", 42);
    assert_written(&w, fatal);

    static const uint8_t error[] = {'E', 0,   0,   0,   34,  'S', 'E', 'R', 'R', 'O', 'R', 0,
                                    'V', 'E', 'R', 'R', 'O', 'R', 0,   'C', '5', '7', '0', '1',
                                    '4', 0,   'M', 'c', 'a', 'n', 'c', 'e', 'l', 0,   0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_error(&w, false, SQLSTATE_QUERY_CANCELED, "cancel");
    assert_written(&w, error);

    struct proto_error_fields f;
    assert_true(proto_parse_error(buf, (uint32_t)w.len, &f));
    assert_string_equal(f.severity, "ERROR");
    assert_string_equal(f.sqlstate, "57014");
    assert_string_equal(f.message, "cancel");
}

static void test_build_notice(void **state)
{
    (void)state;
    uint8_t buf[128];
    struct proto_writer w;
    static const uint8_t expected[] = {'N', 0,   0,   0,   34,  'S', 'N', 'O', 'T', 'I', 'C', 'E',
                                       0,   'V', 'N', 'O', 'T', 'I', 'C', 'E', 0,   'C', '0', '0',
                                       '0', '0', '0', 0,   'M', 'h', 'i', ' ', '7', 0,   0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_notice(&w, "hi %d", 7);
    assert_written(&w, expected);
}

static void test_build_error_long_message(void **state)
{
    (void)state;
    /* The message is cut at 511 bytes; the message stays well formed. */
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    uint8_t buf[1024];
    struct proto_writer w;
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_error(&w, false, SQLSTATE_INTERNAL, "%s", big);
    assert_false(w.overflow);
    uint8_t type;
    uint32_t len;
    assert_int_equal(proto_peek_header(buf, w.len, 8192, &type, &len), PROTO_OK);
    assert_int_equal(len, w.len);
    struct proto_error_fields f;
    assert_true(proto_parse_error(buf, len, &f));
    assert_int_equal(strlen(f.message), 511);
    assert_string_equal(f.sqlstate, "XX000");
}

static void test_build_row_description(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct proto_writer w;
    static const char *const names[] = {"id", "name", "n"};
    static const uint32_t oids[] = {23, 25, 20};
    static const uint8_t expected[] = {
        'T', 0, 0, 0, 70, 0, 3,
        /* id int4 */
        'i', 'd', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
        /* name text */
        'n', 'a', 'm', 'e', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
        0,
        /* n int8 */
        'n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 8, 0xff, 0xff, 0xff, 0xff, 0, 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_row_description(&w, 3, names, oids);
    assert_written(&w, expected);

    static const uint8_t none[] = {'T', 0, 0, 0, 6, 0, 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_row_description(&w, 0, NULL, NULL);
    assert_written(&w, none);
}

static void test_build_data_row(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct proto_writer w;
    static const char *const values[] = {"42", NULL, "", "ab"};
    static const uint8_t expected[] = {'D',  0,    0,    0, 26, 0, 4, 0, 0, 0, 2, '4', '2', 0xff,
                                       0xff, 0xff, 0xff, 0, 0,  0, 0, 0, 0, 0, 2, 'a', 'b'};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_data_row(&w, 4, values);
    assert_written(&w, expected);

    static const uint8_t none[] = {'D', 0, 0, 0, 6, 0, 0};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_data_row(&w, 0, NULL);
    assert_written(&w, none);

    /* Read back as a client would. */
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_data_row(&w, 4, values);
    struct proto_reader r;
    proto_reader_init(&r, buf, (uint32_t)w.len);
    assert_int_equal(proto_read16(&r), 4);
    assert_int_equal(proto_read32(&r), 2);
    assert_memory_equal(proto_read_bytes(&r, 2), "42", 2);
    assert_int_equal(proto_read32(&r), UINT32_MAX);
    assert_int_equal(proto_read32(&r), 0);
    assert_int_equal(proto_read32(&r), 2);
    assert_memory_equal(proto_read_bytes(&r, 2), "ab", 2);
    assert_false(r.bad);
    assert_ptr_equal(r.p, r.end);
}

static void test_build_sequence(void **state)
{
    (void)state;
    /* Several messages into one writer, each with its own length. */
    uint8_t buf[64];
    struct proto_writer w;
    static const uint8_t expected[] = {'C', 0, 0, 0, 11, 'S', 'E', 'T', ' ', 'x', 'y', 0,
                                       'Z', 0, 0, 0, 5,  'I', 'X', 0,   0,   0,   4};
    proto_writer_init(&w, buf, sizeof(buf));
    proto_build_command_complete(&w, "SET xy");
    proto_build_ready(&w, 'I');
    proto_build_terminate(&w);
    assert_written(&w, expected);
}

/* ---- writer bounds -------------------------------------------------------- */

static void b_ready(struct proto_writer *w)
{
    proto_build_ready(w, 'I');
}
static void b_param_status(struct proto_writer *w)
{
    proto_build_param_status(w, "TimeZone", "Europe/Amsterdam");
}
static void b_backend_key(struct proto_writer *w)
{
    proto_build_backend_key(w, 1, 2);
}
static void b_query(struct proto_writer *w)
{
    proto_build_query(w, "SELECT 1");
}
static void b_command_complete(struct proto_writer *w)
{
    proto_build_command_complete(w, "INSERT 0 1");
}
static void b_empty_query(struct proto_writer *w)
{
    proto_build_empty_query(w);
}
static void b_terminate(struct proto_writer *w)
{
    proto_build_terminate(w);
}
static void b_password(struct proto_writer *w)
{
    proto_build_password(w, "hunter2");
}
static void b_auth_md5(struct proto_writer *w)
{
    proto_build_auth(w, PROTO_AUTH_MD5, "salt", 4);
}
static void b_sasl_initial(struct proto_writer *w)
{
    proto_build_sasl_initial(w, "SCRAM-SHA-256", "n,,n=,r=abc", 11);
}
static void b_sasl_response(struct proto_writer *w)
{
    proto_build_sasl_response(w, "c=biws,r=abc,p=xyz", 18);
}
static void b_cancel(struct proto_writer *w)
{
    proto_build_cancel(w, 7, 8);
}
static void b_error(struct proto_writer *w)
{
    proto_build_error(w, true, SQLSTATE_TOO_MANY_CONNECTIONS, "no more connections allowed");
}
static void b_notice(struct proto_writer *w)
{
    proto_build_notice(w, "pool %s paused", "p");
}
static void b_row_description(struct proto_writer *w)
{
    static const char *const names[] = {"a", "bb"};
    static const uint32_t oids[] = {25, 20};
    proto_build_row_description(w, 2, names, oids);
}
static void b_data_row(struct proto_writer *w)
{
    static const char *const values[] = {"x", NULL, "yz"};
    proto_build_data_row(w, 3, values);
}
static void b_startup(struct proto_writer *w)
{
    proto_begin(w, 0);
    proto_add32(w, PROTO_V3);
    proto_add_string(w, "user");
    proto_add_string(w, "u");
    proto_add_byte(w, 0);
    proto_end(w);
}
static void b_sequence(struct proto_writer *w)
{
    proto_build_param_status(w, "a", "b");
    proto_build_backend_key(w, 3, 4);
    proto_build_ready(w, 'I');
}

static void test_writer_overflow_all_builders(void **state)
{
    (void)state;
    static void (*const builders[])(struct proto_writer *) = {
        b_ready,         b_param_status, b_backend_key, b_query,    b_command_complete,
        b_empty_query,   b_terminate,    b_password,    b_auth_md5, b_sasl_initial,
        b_sasl_response, b_cancel,       b_error,       b_notice,   b_row_description,
        b_data_row,      b_startup,      b_sequence,
    };
    for (size_t i = 0; i < ARRAY(builders); i++) {
        uint8_t full[256];
        struct proto_writer w;
        proto_writer_init(&w, full, sizeof(full));
        builders[i](&w);
        assert_false(w.overflow);
        size_t need = w.len;
        assert_true(need > 0 && need < sizeof(full));

        for (size_t cap = 0; cap <= need; cap++) {
            uint8_t *buf = malloc(cap + SLACK);
            assert_non_null(buf);
            memset(buf, CANARY, cap + SLACK);
            proto_writer_init(&w, buf, cap);
            builders[i](&w);
            if (cap < need) {
                if (!w.overflow)
                    fail_msg("builder %zu: no overflow with cap %zu < %zu", i, cap, need);
                assert_true(w.len <= cap);
            } else {
                assert_false(w.overflow);
                assert_int_equal(w.len, need);
                assert_memory_equal(buf, full, need);
            }
            if (!all_canary(buf + cap, SLACK))
                fail_msg("builder %zu wrote past cap %zu", i, cap);
            free(buf);
        }
    }
}

static void test_writer_overflow_sticky(void **state)
{
    (void)state;
    uint8_t buf[16];
    memset(buf, CANARY, sizeof(buf));
    struct proto_writer w;
    proto_writer_init(&w, buf, 6);
    proto_add32(&w, 0x01020304);
    assert_false(w.overflow);
    proto_add_bytes(&w, "abc", 3); /* does not fit */
    assert_true(w.overflow);
    assert_int_equal(w.len, 4);
    proto_add_byte(&w, 'z'); /* would fit, but the writer has failed */
    proto_add16(&w, 1);
    proto_add_string(&w, "");
    assert_true(w.overflow);
    assert_int_equal(w.len, 4);
    assert_true(all_canary(buf + 4, sizeof(buf) - 4));
    /* proto_end after an overflow does not write a length anywhere. */
    proto_end(&w);
    assert_int_equal(proto_get32(buf), 0x01020304);

    /* An empty add still fits exactly at the end. */
    proto_writer_init(&w, buf, 4);
    proto_add32(&w, 1);
    proto_add_bytes(&w, "", 0);
    assert_false(w.overflow);
    assert_int_equal(w.len, 4);
}

static void test_writer_overflow_in_message(void **state)
{
    (void)state;
    /* The length field fits but the body does not: the partial message
     * must not get a length, and nothing goes past cap. */
    uint8_t buf[8 + SLACK];
    memset(buf, CANARY, sizeof(buf));
    struct proto_writer w;
    proto_writer_init(&w, buf, 8);
    proto_build_query(&w, "SELECT 1");
    assert_true(w.overflow);
    assert_true(w.len <= 8);
    assert_true(all_canary(buf + 8, SLACK));
    assert_int_equal(buf[0], 'Q');
    assert_int_equal(proto_get32(buf + 1), 0); /* placeholder, never filled */
}

/* ---- proto_quote_literal -------------------------------------------------- */

static void test_quote_literal(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"", "''"},
        {"abc", "'abc'"},
        {"it's", "'it''s'"},
        {"'", "''''"},
        {"''", "''''''"},
        {"a\\b", "E'a\\\\b'"},
        {"\\", "E'\\\\'"},
        {"O'Re\\illy", "E'O''Re\\\\illy'"},
        {"Europe/Amsterdam", "'Europe/Amsterdam'"},
        {"caf\xc3\xa9", "'caf\xc3\xa9'"},
    };
    for (size_t i = 0; i < ARRAY(cases); i++) {
        char out[64];
        assert_true(proto_quote_literal(cases[i].in, out, sizeof(out)));
        assert_string_equal(out, cases[i].out);
    }
}

static void test_quote_literal_small_buffer(void **state)
{
    (void)state;
    static const char *const inputs[] = {"", "a", "abc", "it's", "'", "\\", "a\\b", "O'Re\\illy"};
    for (size_t i = 0; i < ARRAY(inputs); i++) {
        char want[64];
        assert_true(proto_quote_literal(inputs[i], want, sizeof(want)));
        size_t need = strlen(want) + 1;
        for (size_t cap = 0; cap <= need; cap++) {
            char buf[64 + SLACK];
            memset(buf, CANARY, sizeof(buf));
            bool ok = proto_quote_literal(inputs[i], buf, cap);
            if (cap < need && ok)
                fail_msg("\"%s\": true with cap %zu < %zu (wrote \"%.*s\")", inputs[i], cap, need,
                         (int)need, buf);
            if (cap == need) {
                assert_true(ok);
                assert_string_equal(buf, want);
            }
            if (!all_canary((const uint8_t *)buf + cap, SLACK))
                fail_msg("\"%s\": wrote past cap %zu", inputs[i], cap);
        }
    }
}

/* A Bind's values, NULLs and formats, and the refusals: too many, a
 * message cut short; binary values of known types as text. */
static void test_bind_params(void **state)
{
    (void)state;
    uint8_t buf[128];
    struct proto_writer w;
    proto_writer_init(&w, buf, sizeof(buf));
    proto_begin(&w, 'B');
    proto_add_string(&w, "");
    proto_add_string(&w, "s1");
    proto_add16(&w, 1);
    proto_add16(&w, 0); /* all text */
    proto_add16(&w, 3);
    proto_add32(&w, 2);
    proto_add_bytes(&w, "42", 2);
    proto_add32(&w, UINT32_MAX);
    proto_add32(&w, 0);
    proto_add16(&w, 0);
    proto_end(&w);
    const char *vals[4];
    uint32_t lens[4];
    uint8_t fmts[4];
    uint32_t len = (uint32_t)w.len;
    assert_int_equal(proto_bind_params(buf, len, vals, lens, fmts, 4), 3);
    assert_memory_equal(vals[0], "42", 2);
    assert_int_equal(lens[0], 2);
    assert_int_equal(fmts[0], 0);
    assert_null(vals[1]);
    assert_non_null(vals[2]);
    assert_int_equal(lens[2], 0);
    assert_int_equal(proto_bind_params(buf, len, vals, lens, fmts, 2), PROTO_BIND_TOO_MANY);
    assert_int_equal(proto_bind_params(buf, len - 12, vals, lens, fmts, 4), PROTO_BIND_BAD);
    buf[PROTO_HDR + 7] = 1; /* format code: binary */
    assert_int_equal(proto_bind_params(buf, len, vals, lens, fmts, 4), 3);
    assert_int_equal(fmts[0], 1);
    char text[48];
    const uint8_t i8[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
    assert_int_equal(proto_binary_param_text(20, i8, 8, text, sizeof(text)), 2);
    assert_string_equal(text, "-2");
    const uint8_t i4[] = {0, 0, 1, 0};
    assert_int_equal(proto_binary_param_text(23, i4, 4, text, sizeof(text)), 3);
    assert_string_equal(text, "256");
    assert_int_equal(proto_binary_param_text(23, i4, 3, text, sizeof(text)), -1);
    assert_int_equal(proto_binary_param_text(1700, i4, 4, text, sizeof(text)), -1);
    assert_int_equal(proto_binary_param_text(23, i4, 4, text, 3), -1);
    /* A Parse's types */
    proto_writer_init(&w, buf, sizeof(buf));
    proto_begin(&w, 'P');
    proto_add_string(&w, "");
    proto_add_string(&w, "SELECT $1, $2");
    proto_add16(&w, 2);
    proto_add32(&w, 23);
    proto_add32(&w, 25);
    proto_end(&w);
    uint32_t oids[4];
    assert_int_equal(proto_parse_param_types(buf, (uint32_t)w.len, oids, 4), 2);
    assert_int_equal(oids[0], 23);
    assert_int_equal(oids[1], 25);
    assert_int_equal(proto_parse_param_types(buf, (uint32_t)w.len - 2, oids, 4), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_str),
        cmocka_unit_test(test_peek_header_need_more),
        cmocka_unit_test(test_peek_header_bad_length),
        cmocka_unit_test(test_peek_header_max),
        cmocka_unit_test(test_peek_header_stream),
        cmocka_unit_test(test_peek_startup),
        cmocka_unit_test(test_startup_v3),
        cmocka_unit_test(test_startup_v3_writer_roundtrip),
        cmocka_unit_test(test_startup_v3_no_params),
        cmocka_unit_test(test_startup_v3_duplicate_first_wins),
        cmocka_unit_test(test_startup_v3_malformed),
        cmocka_unit_test(test_startup_length_mismatch),
        cmocka_unit_test(test_startup_too_many_params),
        cmocka_unit_test(test_startup_ssl_gssenc),
        cmocka_unit_test(test_startup_cancel),
        cmocka_unit_test(test_startup_cancel_wrong_length_kind),
        cmocka_unit_test(test_startup_protocol_versions),
        cmocka_unit_test(test_reader_values),
        cmocka_unit_test(test_reader_past_end),
        cmocka_unit_test(test_reader_short_message),
        cmocka_unit_test(test_parse_error_fields),
        cmocka_unit_test(test_parse_error_empty_and_bad),
        cmocka_unit_test(test_build_ready),
        cmocka_unit_test(test_build_param_status),
        cmocka_unit_test(test_build_backend_key),
        cmocka_unit_test(test_build_query_and_friends),
        cmocka_unit_test(test_build_auth),
        cmocka_unit_test(test_build_sasl),
        cmocka_unit_test(test_build_cancel),
        cmocka_unit_test(test_build_error),
        cmocka_unit_test(test_build_notice),
        cmocka_unit_test(test_build_error_long_message),
        cmocka_unit_test(test_build_row_description),
        cmocka_unit_test(test_build_data_row),
        cmocka_unit_test(test_build_sequence),
        cmocka_unit_test(test_writer_overflow_all_builders),
        cmocka_unit_test(test_writer_overflow_sticky),
        cmocka_unit_test(test_writer_overflow_in_message),
        cmocka_unit_test(test_quote_literal),
        cmocka_unit_test(test_quote_literal_small_buffer),
        cmocka_unit_test(test_bind_params),
        cmocka_unit_test(test_frontend_type_ok),
        cmocka_unit_test(test_frontend_shape_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
