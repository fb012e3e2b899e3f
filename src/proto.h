/* proto.h - PostgreSQL v3 wire protocol: framing, parsing, building.
 *
 * Pure functions over byte ranges; no sockets, no allocation. Everything that
 * reads untrusted bytes here is bounded by the length it is given and is
 * exercised by tests/fuzz/fuzz_proto.c.
 */
#ifndef SLUICE_PROTO_H
#define SLUICE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_V3          196608u   /* 3.0 */
#define PROTO_CANCEL_CODE 80877102u /* CancelRequest */
#define PROTO_SSL_CODE    80877103u /* SSLRequest */
#define PROTO_GSSENC_CODE 80877104u /* GSSENCRequest */
#define PROTO_HDR         5         /* type byte + int32 length */
#define PROTO_STARTUP_MAX 10000     /* PostgreSQL's own limit for startup packets */
#define PROTO_STARTUP_MIN 8         /* length and code: the shortest startup packet */

/* SQLSTATEs sluice itself reports. */
#define SQLSTATE_PROTOCOL_VIOLATION    "08P01"
#define SQLSTATE_INVALID_PASSWORD      "28P01"
#define SQLSTATE_INVALID_AUTH          "28000"
#define SQLSTATE_TOO_MANY_CONNECTIONS  "53300"
#define SQLSTATE_CONNECTION_FAILURE    "08006"
#define SQLSTATE_RESOLUTION_UNKNOWN    "08007" /* transaction_resolution_unknown */
#define SQLSTATE_QUERY_CANCELED        "57014"
#define SQLSTATE_ADMIN_SHUTDOWN        "57P01"
#define SQLSTATE_FEATURE_NOT_SUPPORTED "0A000"
#define SQLSTATE_INVALID_CATALOG       "3D000"
#define SQLSTATE_IDLE_IN_XACT_TIMEOUT  "25P03"
#define SQLSTATE_XACT_TIMEOUT          "25P04"
#define SQLSTATE_INTERNAL              "XX000"

enum proto_status {
    PROTO_OK = 0,    /* a complete item was parsed */
    PROTO_NEED_MORE, /* not enough bytes yet */
    PROTO_BAD,       /* malformed; the connection must be closed */
    PROTO_TOO_BIG,   /* length over the allowed maximum */
};
const char *proto_status_str(enum proto_status st);

/* Header of a typed message at buf[0..len). On PROTO_OK, *type and *msglen
 * (whole message length including the type byte) are set. */
enum proto_status proto_peek_header(const uint8_t *buf, size_t len, uint32_t max_packet,
                                    uint8_t *type, uint32_t *msglen);

/* Whether t is a message type a logged-in client may send: the ones a
 * PostgreSQL backend reads (Bind, Close, CopyData/Done/Fail, Describe,
 * Execute, Flush, FunctionCall, Parse, Query, Sync, Terminate). It ends the
 * session on any other, FATAL 08P01 "invalid frontend message type". */
static inline bool proto_frontend_type_ok(uint8_t t)
{
    switch (t) {
    case 'B':
    case 'C':
    case 'c':
    case 'd':
    case 'D':
    case 'E':
    case 'f':
    case 'F':
    case 'H':
    case 'P':
    case 'Q':
    case 'S':
    case 'X':
        return true;
    default:
        return false;
    }
}

/* Whether a whole frontend message of type t whose body (after the length
 * word) is body[0..blen) has the shape PostgreSQL reads: nothing after a
 * Sync or a Flush; a Query ends with the string's NUL; a Describe or a
 * Close is 'S' or 'P' then a string; an Execute is a string then a 4-byte
 * row count. A necessary condition, not a parse: a message that fails it
 * PostgreSQL refuses too ("invalid message format"), so sluice refuses it
 * without a server; one that passes may still be refused there. Other
 * types pass. O(1): it reads at most two bytes. */
static inline bool proto_frontend_shape_ok(uint8_t t, const uint8_t *body, uint32_t blen)
{
    switch (t) {
    case 'S':
    case 'H':
        return blen == 0;
    case 'Q':
        return blen >= 1 && body[blen - 1] == 0;
    case 'D':
    case 'C':
        return blen >= 2 && (body[0] == 'S' || body[0] == 'P') && body[blen - 1] == 0;
    case 'E':
        return blen >= 5 && body[blen - 5] == 0;
    default:
        return true;
    }
}

static inline uint32_t proto_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t proto_get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline void proto_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void proto_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* ---- startup packet ------------------------------------------------------ */

#define PROTO_MAX_STARTUP_PARAMS 64

enum proto_startup_kind {
    PROTO_STARTUP_V3 = 0, /* a normal StartupMessage */
    PROTO_STARTUP_SSL,    /* SSLRequest */
    PROTO_STARTUP_GSSENC, /* GSSENCRequest */
    PROTO_STARTUP_CANCEL, /* CancelRequest: cancel_pid/cancel_key set */
};

struct proto_startup {
    enum proto_startup_kind kind;
    uint32_t version;
    uint32_t cancel_pid;
    uint32_t cancel_key;
    int n_params;
    /* Point into the caller's buffer, NUL-terminated there. */
    const char *names[PROTO_MAX_STARTUP_PARAMS];
    const char *values[PROTO_MAX_STARTUP_PARAMS];
};

/* Peeks the length of an untyped startup-phase packet. PROTO_TOO_BIG above
 * PROTO_STARTUP_MAX; PROTO_BAD under 8 bytes. */
enum proto_status proto_peek_startup(const uint8_t *buf, size_t len, uint32_t *pktlen);

/* Parses a whole startup-phase packet buf[0..pktlen). errmsg receives a
 * reason on PROTO_BAD; out->kind and out->version are set as far as they
 * could be read (the caller words the error from them). */
enum proto_status proto_parse_startup(const uint8_t *buf, uint32_t pktlen,
                                      struct proto_startup *out, const char **errmsg);

/* Value of a startup parameter, or NULL. */
const char *proto_startup_get(const struct proto_startup *st, const char *name);

/* ---- reading message bodies ---------------------------------------------- */

/* A cursor over one message body. Reads past the end set bad. */
struct proto_reader {
    const uint8_t *p;
    const uint8_t *end;
    bool bad;
};
void proto_reader_init(struct proto_reader *r, const uint8_t *msg, uint32_t msglen);
uint8_t proto_read_byte(struct proto_reader *r);
uint16_t proto_read16(struct proto_reader *r);
uint32_t proto_read32(struct proto_reader *r);
/* NUL-terminated string inside the message, or "" (and bad) if absent. */
const char *proto_read_string(struct proto_reader *r);
const uint8_t *proto_read_bytes(struct proto_reader *r, uint32_t n);

/* A Bind's parameter values (msg: the whole message, msglen bytes):
 * vals[i] points into the message (not NUL-terminated; NULL for SQL
 * NULL), lens[i] is its length and fmts[i] its format (0 text, 1 binary).
 * Returns how many there are, or: */
#define PROTO_BIND_BAD      (-1) /* malformed */
#define PROTO_BIND_TOO_MANY (-3) /* more than max */
int proto_bind_params(const uint8_t *msg, uint32_t msglen, const char **vals, uint32_t *lens,
                      uint8_t *fmts, int max);
/* A Parse's parameter type OIDs (msg: the whole message): at most max
 * into oids, how many the message gives (0 when malformed). */
int proto_parse_param_types(const uint8_t *msg, uint32_t msglen, uint32_t *oids, int max);
/* A binary parameter value of type oid as PostgreSQL writes it in text:
 * bool, int2, int4, int8, oid, float4, float8 and uuid (text types need
 * no conversion). Returns its length in out (NUL-terminated), or -1 for
 * another type, a wrong length, or too small an out. */
int proto_binary_param_text(uint32_t oid, const uint8_t *v, uint32_t len, char *out, size_t outlen);

/* ErrorResponse/NoticeResponse: the fields sluice logs or rewrites. */
struct proto_error_fields {
    const char *severity; /* 'S' */
    const char *sqlstate; /* 'C' */
    const char *message;  /* 'M' */
};
bool proto_parse_error(const uint8_t *msg, uint32_t msglen, struct proto_error_fields *out);

/* ---- building messages --------------------------------------------------- */

/* A bounded writer into caller memory. Overflow sets overflow and stops. */
struct proto_writer {
    uint8_t *buf;
    size_t cap;
    size_t len;
    size_t msg_start; /* where the length field of the open message is */
    bool overflow;
};
void proto_writer_init(struct proto_writer *w, uint8_t *buf, size_t cap);
void proto_begin(struct proto_writer *w, uint8_t type); /* type 0 = untyped (startup) */
void proto_end(struct proto_writer *w);                 /* fills in the length */
void proto_add_byte(struct proto_writer *w, uint8_t v);
void proto_add16(struct proto_writer *w, uint16_t v);
void proto_add32(struct proto_writer *w, uint32_t v);
void proto_add_bytes(struct proto_writer *w, const void *p, size_t n);
void proto_add_string(struct proto_writer *w, const char *s); /* with NUL */

/* Whole messages. */
void proto_build_error(struct proto_writer *w, bool fatal, const char *sqlstate, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
void proto_build_notice(struct proto_writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A NoticeResponse of severity WARNING (SQLSTATE 01000). */
void proto_build_warning(struct proto_writer *w, const char *msg);
void proto_build_auth(struct proto_writer *w, uint32_t code, const void *extra, size_t n);
void proto_build_param_status(struct proto_writer *w, const char *name, const char *value);
void proto_build_backend_key(struct proto_writer *w, uint32_t pid, uint32_t key);
void proto_build_ready(struct proto_writer *w, char status);
void proto_build_query(struct proto_writer *w, const char *sql);
void proto_build_command_complete(struct proto_writer *w, const char *tag);
void proto_build_empty_query(struct proto_writer *w);
void proto_build_terminate(struct proto_writer *w);
void proto_build_password(struct proto_writer *w, const char *password);
void proto_build_sasl_initial(struct proto_writer *w, const char *mech, const void *data, size_t n);
void proto_build_sasl_response(struct proto_writer *w, const void *data, size_t n);
void proto_build_cancel(struct proto_writer *w, uint32_t pid, uint32_t key);

/* RowDescription with text columns; types are PostgreSQL type oids. */
void proto_build_row_description(struct proto_writer *w, int ncols, const char *const *names,
                                 const uint32_t *type_oids);
/* DataRow; values[i] NULL = SQL NULL. */
void proto_build_data_row(struct proto_writer *w, int ncols, const char *const *values);

/* Quotes s as an SQL string literal into out (outcap bytes, NUL included):
 * quotes are doubled; a string with a backslash is written as E'...' with the
 * backslashes doubled, so it means the same whatever
 * standard_conforming_strings is. False if it does not fit. */
bool proto_quote_literal(const char *s, char *out, size_t outcap);

/* Authentication request codes. */
enum {
    PROTO_AUTH_OK = 0,
    PROTO_AUTH_CLEARTEXT = 3,
    PROTO_AUTH_MD5 = 5,
    PROTO_AUTH_SASL = 10,
    PROTO_AUTH_SASL_CONTINUE = 11,
    PROTO_AUTH_SASL_FINAL = 12,
};

#endif
