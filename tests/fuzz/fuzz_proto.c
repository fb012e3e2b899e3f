/* fuzz_proto.c - libFuzzer target for typed-message framing and the readers.
 *
 * The input is a byte stream as a forwarder sees it: proto_peek_header walks
 * it message by message until it needs more bytes or the stream is invalid.
 * Each framed message is copied into a heap block of exactly its length (so
 * that ASan sees any read past it) and then:
 *  - checked with proto_frontend_shape_ok, which must read inside the body
 *    and accept whatever PostgreSQL would read whole;
 *  - parsed with proto_parse_error, whose fields must lie inside the message;
 *    the fields are rebuilt with proto_build_error and parsed back, and the
 *    message is quoted with proto_quote_literal into an exact-size buffer;
 *  - read with the proto_reader functions as its type says (Authentication,
 *    ParameterStatus, BackendKeyData, ReadyForQuery, RowDescription, DataRow,
 *    Query, CommandComplete, Bind's parameters...), and once more by a generic walk whose reads
 *    the message's own bytes choose; every read must stay inside the body;
 *  - for the fixed-layout types, rebuilt with the builder and compared.
 * A truncated last message is read as if it were whole (the readers must be
 * bounded by the length they are given, not by the header).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define MAX_PACKET   65536u
#define SMALL_PACKET 64u
#define MAX_MESSAGES 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool cond)
{
    if (!cond)
        abort();
}

/* The reader is still inside [body, end]. */
static void reader_sane(const struct proto_reader *r, const uint8_t *body, const uint8_t *end)
{
    require(r->end == end);
    require(r->p <= r->end);
    require(r->p >= body || (r->bad && r->p == r->end));
}

/* A string the reader returned: "" when bad, else NUL-terminated in the body. */
static void string_sane(const struct proto_reader *r, const char *s, const uint8_t *body,
                        const uint8_t *end)
{
    require(s != NULL);
    if (r->bad) {
        require(s[0] == '\0');
        return;
    }
    const uint8_t *u = (const uint8_t *)s;
    require(u >= body && u < end);
    require(memchr(u, 0, (size_t)(end - u)) != NULL);
}

static const char *rd_string(struct proto_reader *r, const uint8_t *body, const uint8_t *end)
{
    const char *s = proto_read_string(r);
    string_sane(r, s, body, end);
    reader_sane(r, body, end);
    return s;
}

static const uint8_t *rd_bytes(struct proto_reader *r, uint32_t n, const uint8_t *body,
                               const uint8_t *end)
{
    const uint8_t *before = r->p;
    bool was_bad = r->bad;
    const uint8_t *p = proto_read_bytes(r, n);
    if (p) {
        require(!r->bad || was_bad);
        require(p == before && p >= body && (size_t)(end - p) >= n);
    } else {
        require(r->bad);
    }
    reader_sane(r, body, end);
    return p;
}

/* A walk whose reads are chosen by the bytes it reads. */
static void walk_generic(const uint8_t *msg, uint32_t msglen)
{
    const uint8_t *end = msg + msglen;
    const uint8_t *body = msglen >= PROTO_HDR ? msg + PROTO_HDR : end;
    struct proto_reader r;
    proto_reader_init(&r, msg, msglen);
    require(r.bad == (msglen < PROTO_HDR));
    reader_sane(&r, body, end);
    while (!r.bad) {
        uint8_t op = proto_read_byte(&r);
        reader_sane(&r, body, end);
        if (r.bad)
            break;
        switch (op % 5) {
        case 0:
            (void)proto_read_byte(&r);
            break;
        case 1:
            (void)proto_read16(&r);
            break;
        case 2:
            (void)proto_read32(&r);
            break;
        case 3:
            (void)rd_string(&r, body, end);
            break;
        default:
            (void)rd_bytes(&r, proto_read16(&r), body, end);
            break;
        }
        reader_sane(&r, body, end);
        if (r.bad) {
            /* Bad is sticky and every later read fails. */
            require(proto_read_byte(&r) == 0 && proto_read16(&r) == 0 && proto_read32(&r) == 0);
            require(proto_read_bytes(&r, 1) == NULL);
            require(proto_read_string(&r)[0] == '\0');
            require(r.bad && r.p <= r.end);
        }
    }
}

/* Rebuilds a message with a builder and compares it with the original. */
static void require_same(const uint8_t *msg, uint32_t msglen, const struct proto_writer *w)
{
    require(!w->overflow);
    require(w->len == msglen);
    require(memcmp(w->buf, msg, msglen) == 0);
}

/* Reads msg as its type says. whole: the header's length matches msglen. */
static void walk_typed(uint8_t type, const uint8_t *msg, uint32_t msglen, bool whole)
{
    const uint8_t *end = msg + msglen;
    const uint8_t *body = msglen >= PROTO_HDR ? msg + PROTO_HDR : end;
    struct proto_reader r;
    uint8_t *out = malloc((size_t)msglen + 64);
    struct proto_writer w;
    require(out != NULL);
    proto_writer_init(&w, out, (size_t)msglen + 64);
    proto_reader_init(&r, msg, msglen);

    switch (type) {
    case 'R': { /* Authentication* */
        uint32_t code = proto_read32(&r);
        if (code == PROTO_AUTH_MD5) {
            const uint8_t *salt = rd_bytes(&r, 4, body, end);
            if (salt && whole && r.p == r.end) {
                proto_build_auth(&w, code, salt, 4);
                require_same(msg, msglen, &w);
            }
        } else if (code == PROTO_AUTH_SASL) {
            while (!r.bad && rd_string(&r, body, end)[0] != '\0')
                ;
        } else if (!r.bad) {
            uint32_t rest = (uint32_t)(r.end - r.p);
            const uint8_t *extra = rd_bytes(&r, rest, body, end);
            require(extra != NULL && r.p == r.end);
            if (whole) {
                proto_build_auth(&w, code, extra, rest);
                require_same(msg, msglen, &w);
            }
        }
        break;
    }
    case 'S': { /* ParameterStatus (or Sync from a client: empty body) */
        const char *name = rd_string(&r, body, end);
        const char *value = rd_string(&r, body, end);
        if (!r.bad && whole && r.p == r.end) {
            proto_build_param_status(&w, name, value);
            require_same(msg, msglen, &w);
        }
        break;
    }
    case 'K': { /* BackendKeyData */
        uint32_t pid = proto_read32(&r);
        uint32_t key = proto_read32(&r);
        if (!r.bad && whole && r.p == r.end) {
            proto_build_backend_key(&w, pid, key);
            require_same(msg, msglen, &w);
        }
        break;
    }
    case 'Z': { /* ReadyForQuery */
        uint8_t status = proto_read_byte(&r);
        if (!r.bad && whole && r.p == r.end) {
            proto_build_ready(&w, (char)status);
            require_same(msg, msglen, &w);
        }
        break;
    }
    case 'Q':   /* Query */
    case 'C':   /* CommandComplete (or Close from a client) */
    case 'p': { /* PasswordMessage */
        const char *s = rd_string(&r, body, end);
        if (!r.bad && whole && r.p == r.end) {
            if (type == 'Q')
                proto_build_query(&w, s);
            else if (type == 'C')
                proto_build_command_complete(&w, s);
            else
                proto_build_password(&w, s);
            require_same(msg, msglen, &w);
        }
        break;
    }
    case 'I': /* EmptyQueryResponse */
    case 'X': /* Terminate */
        if (!r.bad && whole && r.p == r.end) {
            if (type == 'I')
                proto_build_empty_query(&w);
            else
                proto_build_terminate(&w);
            require_same(msg, msglen, &w);
        }
        break;
    case 'T': { /* RowDescription */
        uint16_t n = proto_read16(&r);
        for (uint32_t i = 0; i < n && !r.bad; i++) {
            (void)rd_string(&r, body, end);
            (void)proto_read32(&r); /* table oid */
            (void)proto_read16(&r); /* column */
            (void)proto_read32(&r); /* type oid */
            (void)proto_read16(&r); /* typlen */
            (void)proto_read32(&r); /* typmod */
            (void)proto_read16(&r); /* format */
            reader_sane(&r, body, end);
        }
        break;
    }
    case 'D': { /* DataRow */
        uint16_t n = proto_read16(&r);
        for (uint32_t i = 0; i < n && !r.bad; i++) {
            uint32_t len = proto_read32(&r);
            if (len != UINT32_MAX)
                (void)rd_bytes(&r, len, body, end);
        }
        break;
    }
    case 'B': { /* Bind: every value read lies inside the body */
        const char *vals[8];
        uint32_t lens[8];
        uint8_t fmts[8];
        char text[48];
        int n = proto_bind_params(msg, msglen, vals, lens, fmts, 8);
        require(n >= PROTO_BIND_TOO_MANY && n <= 8);
        for (int i = 0; i < n; i++) {
            require(!vals[i] || ((const uint8_t *)vals[i] >= body &&
                                 (const uint8_t *)vals[i] + lens[i] <= end));
            static const uint32_t oids[] = {16, 20, 21, 23, 26, 700, 701, 2950};
            int k = vals[i] ? proto_binary_param_text(oids[i], (const uint8_t *)vals[i], lens[i],
                                                      text, sizeof(text))
                            : -1;
            require(k < (int)sizeof(text) && (k < 0 || strlen(text) == (size_t)k));
        }
        break;
    }
    case 'P': { /* Parse: its parameter types */
        uint32_t oids[4];
        int n = proto_parse_param_types(msg, msglen, oids, 4);
        require(n >= 0 && n <= 4);
        break;
    }
    default:
        break;
    }
    reader_sane(&r, body, end);
    free(out);
}

/* The fields of an ErrorResponse are "" or strings inside the message. */
static void field_sane(const char *s, const uint8_t *msg, uint32_t msglen)
{
    require(s != NULL);
    const uint8_t *u = (const uint8_t *)s;
    if (u >= msg + PROTO_HDR && u < msg + msglen)
        require(memchr(u, 0, (size_t)(msg + msglen - u)) != NULL);
    else
        require(s[0] == '\0');
}

/* Undoes proto_quote_literal; false if q is not a literal it could make. */
static bool unquote(const char *q, char *out)
{
    bool e = false;
    if (*q == 'E') {
        e = true;
        q++;
    }
    if (*q++ != '\'')
        return false;
    for (;;) {
        char ch = *q++;
        if (ch == '\0')
            return false;
        if (ch == '\'') {
            if (*q == '\'') {
                *out++ = '\'';
                q++;
                continue;
            }
            *out = '\0';
            return *q == '\0';
        }
        if (ch == '\\') {
            if (!e || *q != '\\')
                return false;
            q++;
        }
        *out++ = ch;
    }
}

/* Quotes s into an exact-size heap buffer of cap bytes. It must succeed
 * exactly when the literal fits, and mean s. */
static void quote_into(const char *s, size_t cap, size_t need)
{
    char *out = malloc(cap ? cap : 1);
    require(out != NULL);
    bool ok = proto_quote_literal(s, out, cap);
    require(ok == (cap >= need));
    if (ok) {
        require(strlen(out) == need - 1);
        char *back = malloc(need);
        require(back != NULL);
        require(unquote(out, back));
        require(strcmp(back, s) == 0);
        free(back);
    }
    free(out);
}

static void check_quote(const char *s, uint32_t salt)
{
    bool backslash = strchr(s, '\\') != NULL;
    size_t need = (backslash ? 1 : 0) + 2 + 1; /* E, quotes, NUL */
    for (const char *p = s; *p; p++)
        need += (*p == '\'' || *p == '\\') ? 2 : 1;
    quote_into(s, need, need);
    quote_into(s, need - 1, need);
    quote_into(s, salt % (need + 1), need);
}

static void check_error(const uint8_t *msg, uint32_t msglen)
{
    struct proto_error_fields f;
    if (!proto_parse_error(msg, msglen, &f)) {
        require(f.severity && f.sqlstate && f.message);
        return;
    }
    field_sane(f.severity, msg, msglen);
    field_sane(f.sqlstate, msg, msglen);
    field_sane(f.message, msg, msglen);

    /* Rebuild from the fields and parse that back. */
    size_t cap = strlen(f.sqlstate) + 512 + 64;
    uint8_t *out = malloc(cap);
    require(out != NULL);
    struct proto_writer w;
    proto_writer_init(&w, out, cap);
    proto_build_error(&w, msglen & 1, f.sqlstate, "%s", f.message);
    require(!w.overflow);
    uint8_t type;
    uint32_t len;
    require(proto_peek_header(out, w.len, UINT32_MAX, &type, &len) == PROTO_OK);
    require(type == 'E' && len == w.len);
    struct proto_error_fields g;
    require(proto_parse_error(out, len, &g));
    require(strcmp(g.severity, (msglen & 1) ? "FATAL" : "ERROR") == 0);
    require(strcmp(g.sqlstate, f.sqlstate) == 0);
    require(strncmp(g.message, f.message, 511) == 0 && strlen(g.message) <= 511);
    free(out);

    check_quote(f.message, msglen * 2654435761u);
}

/* The first NUL of body[from..blen) is at its end - tail: PostgreSQL's
 * pq_getmsgstring() then pq_getmsgend() (after tail more bytes) accept it. */
static bool nul_at(const uint8_t *body, uint32_t from, uint32_t blen, uint32_t tail)
{
    if (blen < from + tail + 1)
        return false;
    const uint8_t *nul = memchr(body + from, 0, blen - from);
    return nul == body + blen - tail - 1;
}

/* proto_frontend_shape_ok() reads inside the body only (an exact-size
 * copy) and never refuses a message PostgreSQL would read whole. */
static void check_shape(uint8_t type, const uint8_t *msg, uint32_t msglen)
{
    uint32_t blen = msglen - PROTO_HDR;
    uint8_t *body = malloc(blen ? blen : 1);
    require(body != NULL);
    memcpy(body, msg + PROTO_HDR, blen);
    bool ok = proto_frontend_shape_ok(type, body, blen);
    bool pg_reads = true;
    if (type == 'S' || type == 'H')
        pg_reads = blen == 0;
    else if (type == 'Q')
        pg_reads = nul_at(body, 0, blen, 0);
    else if (type == 'E')
        pg_reads = nul_at(body, 0, blen, 4);
    else if (type == 'D' || type == 'C')
        pg_reads = blen >= 2 && (body[0] == 'S' || body[0] == 'P') && nul_at(body, 1, blen, 0);
    require(!pg_reads || ok);
    if (type == 'S' || type == 'H')
        require(ok == pg_reads);
    free(body);
}

static void handle(uint8_t type, const uint8_t *src, uint32_t msglen, bool whole)
{
    uint8_t *msg = malloc(msglen ? msglen : 1);
    require(msg != NULL);
    memcpy(msg, src, msglen);
    if (whole)
        check_shape(type, msg, msglen);
    check_error(msg, msglen);
    walk_typed(type, msg, msglen, whole);
    walk_generic(msg, msglen);
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    for (int i = 0; i < MAX_MESSAGES && off < size; i++) {
        size_t avail = size - off;
        uint8_t type = 0;
        uint32_t mlen = 0;
        enum proto_status st = proto_peek_header(data + off, avail, MAX_PACKET, &type, &mlen);
        require(strcmp(proto_status_str(st), "?") != 0);
        if (avail < PROTO_HDR) {
            require(st == PROTO_NEED_MORE);
            handle(data[off], data + off, (uint32_t)avail, false);
            break;
        }
        uint32_t l = proto_get32(data + off + 1);
        if (st != PROTO_OK) {
            require((st == PROTO_BAD && l < 4) || (st == PROTO_TOO_BIG && l >= MAX_PACKET));
            break;
        }
        require(l >= 4 && mlen == l + 1 && mlen <= MAX_PACKET && type == data[off]);

        /* A smaller limit agrees with the larger one. */
        uint8_t t2;
        uint32_t m2;
        enum proto_status st2 = proto_peek_header(data + off, avail, SMALL_PACKET, &t2, &m2);
        if (mlen <= SMALL_PACKET)
            require(st2 == PROTO_OK && t2 == type && m2 == mlen);
        else
            require(st2 == PROTO_TOO_BIG);

        if (mlen > avail) {
            /* A forwarder would wait; read what arrived anyway. */
            handle(type, data + off, (uint32_t)avail, false);
            break;
        }
        handle(type, data + off, mlen, true);
        off += mlen;
    }
    return 0;
}
