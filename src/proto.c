/* proto.c - PostgreSQL v3 wire protocol: framing, parsing, building. */
#include "proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *proto_status_str(enum proto_status st)
{
    switch (st) {
    case PROTO_OK:
        return "ok";
    case PROTO_NEED_MORE:
        return "need more";
    case PROTO_BAD:
        return "malformed";
    case PROTO_TOO_BIG:
        return "too big";
    }
    return "?";
}

enum proto_status proto_peek_header(const uint8_t *buf, size_t len, uint32_t max_packet,
                                    uint8_t *type, uint32_t *msglen)
{
    if (len < PROTO_HDR)
        return PROTO_NEED_MORE;
    uint32_t l = proto_get32(buf + 1);
    /* The length counts itself, so anything under 4 is a protocol violation. */
    if (l < 4)
        return PROTO_BAD;
    if (max_packet == 0 || l > max_packet - 1 || l > 0x7ffffffeu)
        return PROTO_TOO_BIG;
    *type = buf[0];
    *msglen = l + 1;
    return PROTO_OK;
}

enum proto_status proto_peek_startup(const uint8_t *buf, size_t len, uint32_t *pktlen)
{
    if (len < 4)
        return PROTO_NEED_MORE;
    uint32_t l = proto_get32(buf);
    if (l < 8)
        return PROTO_BAD;
    if (l > PROTO_STARTUP_MAX)
        return PROTO_TOO_BIG;
    *pktlen = l;
    return PROTO_OK;
}

enum proto_status proto_parse_startup(const uint8_t *buf, uint32_t pktlen,
                                      struct proto_startup *out, const char **errmsg)
{
    memset(out, 0, sizeof(*out));
    *errmsg = "invalid startup packet layout";
    if (pktlen < 8 || proto_get32(buf) != pktlen)
        return PROTO_BAD;
    uint32_t code = proto_get32(buf + 4);
    out->version = code;
    switch (code) {
    case PROTO_SSL_CODE:
        out->kind = PROTO_STARTUP_SSL;
        return pktlen == 8 ? PROTO_OK : PROTO_BAD;
    case PROTO_GSSENC_CODE:
        out->kind = PROTO_STARTUP_GSSENC;
        return pktlen == 8 ? PROTO_OK : PROTO_BAD;
    case PROTO_CANCEL_CODE:
        out->kind = PROTO_STARTUP_CANCEL;
        if (pktlen != 16)
            return PROTO_BAD;
        out->cancel_pid = proto_get32(buf + 8);
        out->cancel_key = proto_get32(buf + 12);
        return PROTO_OK;
    default:
        break;
    }
    if ((code >> 16) != 3) {
        *errmsg = "unsupported frontend protocol";
        return PROTO_BAD;
    }
    out->kind = PROTO_STARTUP_V3;
    /* Body: name\0value\0 ... \0. Everything must be NUL-terminated inside
     * the packet, and the list ends with an empty name. */
    const char *p = (const char *)buf + 8;
    const char *end = (const char *)buf + pktlen;
    if (end[-1] != '\0')
        return PROTO_BAD;
    while (p < end) {
        if (*p == '\0') {
            if (p + 1 != end)
                return PROTO_BAD; /* bytes after the terminator */
            return PROTO_OK;
        }
        const char *name = p;
        p += strnlen(p, (size_t)(end - p)) + 1;
        if (p >= end)
            return PROTO_BAD;
        const char *value = p;
        p += strnlen(p, (size_t)(end - p)) + 1;
        if (p > end)
            return PROTO_BAD;
        if (out->n_params >= PROTO_MAX_STARTUP_PARAMS) {
            *errmsg = "too many startup parameters";
            return PROTO_BAD;
        }
        out->names[out->n_params] = name;
        out->values[out->n_params] = value;
        out->n_params++;
    }
    return PROTO_BAD; /* no terminator */
}

const char *proto_startup_get(const struct proto_startup *st, const char *name)
{
    for (int i = 0; i < st->n_params; i++)
        if (strcmp(st->names[i], name) == 0)
            return st->values[i];
    return NULL;
}

/* ---- reader -------------------------------------------------------------- */

void proto_reader_init(struct proto_reader *r, const uint8_t *msg, uint32_t msglen)
{
    r->end = msg + msglen;
    r->bad = msglen < PROTO_HDR;
    r->p = r->bad ? r->end : msg + PROTO_HDR;
}

uint8_t proto_read_byte(struct proto_reader *r)
{
    if (r->end - r->p < 1) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

uint16_t proto_read16(struct proto_reader *r)
{
    if (r->end - r->p < 2) {
        r->bad = true;
        r->p = r->end;
        return 0;
    }
    uint16_t v = proto_get16(r->p);
    r->p += 2;
    return v;
}

uint32_t proto_read32(struct proto_reader *r)
{
    if (r->end - r->p < 4) {
        r->bad = true;
        r->p = r->end;
        return 0;
    }
    uint32_t v = proto_get32(r->p);
    r->p += 4;
    return v;
}

const char *proto_read_string(struct proto_reader *r)
{
    const uint8_t *nul = memchr(r->p, 0, (size_t)(r->end - r->p));
    if (!nul) {
        r->bad = true;
        r->p = r->end;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p = nul + 1;
    return s;
}

const uint8_t *proto_read_bytes(struct proto_reader *r, uint32_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        r->bad = true;
        r->p = r->end;
        return NULL;
    }
    const uint8_t *s = r->p;
    r->p += n;
    return s;
}

int proto_bind_params(const uint8_t *msg, uint32_t msglen, const char **vals, uint32_t *lens,
                      uint8_t *fmts, int max)
{
    struct proto_reader r;
    proto_reader_init(&r, msg, msglen);
    proto_read_string(&r); /* portal */
    proto_read_string(&r); /* statement */
    uint16_t nfmt = proto_read16(&r);
    const uint8_t *fmt = proto_read_bytes(&r, 2u * nfmt);
    uint16_t n = proto_read16(&r);
    if (r.bad || (nfmt > 1 && nfmt != n))
        return PROTO_BIND_BAD;
    if (n > max)
        return PROTO_BIND_TOO_MANY;
    for (uint16_t i = 0; i < n; i++) {
        uint32_t vl = proto_read32(&r);
        fmts[i] = nfmt == 0 ? 0 : proto_get16(fmt + 2 * (nfmt == 1 ? 0 : i)) != 0;
        vals[i] = NULL;
        lens[i] = 0;
        if (vl == UINT32_MAX) /* -1: NULL */
            continue;
        const uint8_t *v = proto_read_bytes(&r, vl);
        if (r.bad)
            return PROTO_BIND_BAD;
        vals[i] = (const char *)v;
        lens[i] = vl;
    }
    return r.bad ? PROTO_BIND_BAD : n;
}

int proto_parse_param_types(const uint8_t *msg, uint32_t msglen, uint32_t *oids, int max)
{
    struct proto_reader r;
    proto_reader_init(&r, msg, msglen);
    proto_read_string(&r); /* statement */
    proto_read_string(&r); /* query */
    uint16_t n = proto_read16(&r);
    for (uint16_t i = 0; i < n && !r.bad; i++) {
        uint32_t oid = proto_read32(&r);
        if (i < max)
            oids[i] = oid;
    }
    return r.bad ? 0 : (n < max ? n : max);
}

int proto_binary_param_text(uint32_t oid, const uint8_t *v, uint32_t len, char *out, size_t outlen)
{
    int n = -1;
    if (oid == 16 && len == 1) { /* bool */
        n = snprintf(out, outlen, "%s", v[0] ? "true" : "false");
    } else if (oid == 21 && len == 2) { /* int2 */
        n = snprintf(out, outlen, "%d", (int)(int16_t)proto_get16(v));
    } else if ((oid == 23 || oid == 26) && len == 4) { /* int4, oid */
        uint32_t u = proto_get32(v);
        n = oid == 23 ? snprintf(out, outlen, "%ld", (long)(int32_t)u)
                      : snprintf(out, outlen, "%lu", (unsigned long)u);
    } else if ((oid == 20 || oid == 701) && len == 8) { /* int8, float8 */
        uint64_t u = (uint64_t)proto_get32(v) << 32 | proto_get32(v + 4);
        double d;
        memcpy(&d, &u, sizeof(d));
        n = oid == 20 ? snprintf(out, outlen, "%lld", (long long)(int64_t)u)
                      : snprintf(out, outlen, "%.17g", d);
    } else if (oid == 700 && len == 4) { /* float4 */
        uint32_t u = proto_get32(v);
        float f;
        memcpy(&f, &u, sizeof(f));
        n = snprintf(out, outlen, "%.9g", (double)f);
    } else if (oid == 2950 && len == 16) { /* uuid */
        n = snprintf(out, outlen,
                     "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", v[0],
                     v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12],
                     v[13], v[14], v[15]);
    }
    return n >= 0 && (size_t)n < outlen ? n : -1;
}

bool proto_parse_error(const uint8_t *msg, uint32_t msglen, struct proto_error_fields *out)
{
    struct proto_reader r;
    proto_reader_init(&r, msg, msglen);
    out->severity = out->sqlstate = out->message = "";
    for (;;) {
        uint8_t code = proto_read_byte(&r);
        if (r.bad)
            return false;
        if (code == 0)
            return true;
        const char *val = proto_read_string(&r);
        if (r.bad)
            return false;
        if (code == 'S')
            out->severity = val;
        else if (code == 'C')
            out->sqlstate = val;
        else if (code == 'M')
            out->message = val;
    }
}

/* ---- writer -------------------------------------------------------------- */

void proto_writer_init(struct proto_writer *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->msg_start = 0;
    w->overflow = false;
}

static bool writer_room(struct proto_writer *w, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = true;
        return false;
    }
    return true;
}

void proto_add_bytes(struct proto_writer *w, const void *p, size_t n)
{
    if (!writer_room(w, n))
        return;
    if (n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void proto_add_byte(struct proto_writer *w, uint8_t v)
{
    proto_add_bytes(w, &v, 1);
}

void proto_add16(struct proto_writer *w, uint16_t v)
{
    uint8_t b[2];
    proto_put16(b, v);
    proto_add_bytes(w, b, 2);
}

void proto_add32(struct proto_writer *w, uint32_t v)
{
    uint8_t b[4];
    proto_put32(b, v);
    proto_add_bytes(w, b, 4);
}

void proto_add_string(struct proto_writer *w, const char *s)
{
    proto_add_bytes(w, s, strlen(s) + 1);
}

void proto_begin(struct proto_writer *w, uint8_t type)
{
    if (type)
        proto_add_byte(w, type);
    w->msg_start = w->len;
    proto_add32(w, 0);
}

void proto_end(struct proto_writer *w)
{
    if (w->overflow)
        return;
    /* The length counts itself but not the type byte. */
    proto_put32(w->buf + w->msg_start, (uint32_t)(w->len - w->msg_start));
}

static void build_error_fields(struct proto_writer *w, uint8_t type, const char *severity,
                               const char *sqlstate, const char *msg)
{
    proto_begin(w, type);
    proto_add_byte(w, 'S');
    proto_add_string(w, severity);
    proto_add_byte(w, 'V');
    proto_add_string(w, severity);
    proto_add_byte(w, 'C');
    proto_add_string(w, sqlstate);
    proto_add_byte(w, 'M');
    proto_add_string(w, msg);
    proto_add_byte(w, 0);
    proto_end(w);
}

void proto_build_error(struct proto_writer *w, bool fatal, const char *sqlstate, const char *fmt,
                       ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    build_error_fields(w, 'E', fatal ? "FATAL" : "ERROR", sqlstate, msg);
}

void proto_build_notice(struct proto_writer *w, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    build_error_fields(w, 'N', "NOTICE", "00000", msg);
}

void proto_build_warning(struct proto_writer *w, const char *msg)
{
    build_error_fields(w, 'N', "WARNING", "01000", msg);
}

void proto_build_auth(struct proto_writer *w, uint32_t code, const void *extra, size_t n)
{
    proto_begin(w, 'R');
    proto_add32(w, code);
    proto_add_bytes(w, extra, n);
    proto_end(w);
}

void proto_build_param_status(struct proto_writer *w, const char *name, const char *value)
{
    proto_begin(w, 'S');
    proto_add_string(w, name);
    proto_add_string(w, value);
    proto_end(w);
}

void proto_build_backend_key(struct proto_writer *w, uint32_t pid, uint32_t key)
{
    proto_begin(w, 'K');
    proto_add32(w, pid);
    proto_add32(w, key);
    proto_end(w);
}

void proto_build_ready(struct proto_writer *w, char status)
{
    proto_begin(w, 'Z');
    proto_add_byte(w, (uint8_t)status);
    proto_end(w);
}

void proto_build_query(struct proto_writer *w, const char *sql)
{
    proto_begin(w, 'Q');
    proto_add_string(w, sql);
    proto_end(w);
}

void proto_build_command_complete(struct proto_writer *w, const char *tag)
{
    proto_begin(w, 'C');
    proto_add_string(w, tag);
    proto_end(w);
}

void proto_build_empty_query(struct proto_writer *w)
{
    proto_begin(w, 'I');
    proto_end(w);
}

void proto_build_terminate(struct proto_writer *w)
{
    proto_begin(w, 'X');
    proto_end(w);
}

void proto_build_password(struct proto_writer *w, const char *password)
{
    proto_begin(w, 'p');
    proto_add_string(w, password);
    proto_end(w);
}

void proto_build_sasl_initial(struct proto_writer *w, const char *mech, const void *data, size_t n)
{
    proto_begin(w, 'p');
    proto_add_string(w, mech);
    proto_add32(w, (uint32_t)n);
    proto_add_bytes(w, data, n);
    proto_end(w);
}

void proto_build_sasl_response(struct proto_writer *w, const void *data, size_t n)
{
    proto_begin(w, 'p');
    proto_add_bytes(w, data, n);
    proto_end(w);
}

void proto_build_cancel(struct proto_writer *w, uint32_t pid, uint32_t key)
{
    proto_add32(w, 16);
    proto_add32(w, PROTO_CANCEL_CODE);
    proto_add32(w, pid);
    proto_add32(w, key);
}

void proto_build_row_description(struct proto_writer *w, int ncols, const char *const *names,
                                 const uint32_t *type_oids)
{
    proto_begin(w, 'T');
    proto_add16(w, (uint16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        proto_add_string(w, names[i]);
        proto_add32(w, 0); /* table oid */
        proto_add16(w, 0); /* column number */
        proto_add32(w, type_oids[i]);
        int16_t typlen = -1;
        if (type_oids[i] == 20)
            typlen = 8;
        else if (type_oids[i] == 23)
            typlen = 4;
        proto_add16(w, (uint16_t)typlen);
        proto_add32(w, (uint32_t)-1); /* typmod */
        proto_add16(w, 0);            /* text format */
    }
    proto_end(w);
}

void proto_build_data_row(struct proto_writer *w, int ncols, const char *const *values)
{
    proto_begin(w, 'D');
    proto_add16(w, (uint16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        if (!values[i]) {
            proto_add32(w, (uint32_t)-1);
            continue;
        }
        size_t n = strlen(values[i]);
        proto_add32(w, (uint32_t)n);
        proto_add_bytes(w, values[i], n);
    }
    proto_end(w);
}

bool proto_quote_literal(const char *s, char *out, size_t outcap)
{
    size_t o = 0;
    bool backslash = strchr(s, '\\') != NULL;
    /* With a backslash we use E'' so the result means the same whatever
     * standard_conforming_strings says. */
    if (backslash) {
        if (o + 1 >= outcap)
            return false;
        out[o++] = 'E';
    }
    if (o + 1 >= outcap)
        return false;
    out[o++] = '\'';
    for (; *s; s++) {
        bool dbl = *s == '\'' || *s == '\\';
        if (o + (dbl ? 2 : 1) + 2 > outcap)
            return false;
        if (dbl)
            out[o++] = *s;
        out[o++] = *s;
    }
    if (o + 2 > outcap)
        return false;
    out[o++] = '\'';
    out[o] = '\0';
    return true;
}
