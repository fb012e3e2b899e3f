/* pgoutput.c - logical replication messages, read and written
 * (pgoutput.h). */
#include "pgoutput.h"

#include <string.h>

const char *pgoutput_status_str(enum pgoutput_status st)
{
    static const char *const names[] = {"ok", "truncated", "bad", "unknown"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

const char *pgoutput_kind_str(enum pgoutput_kind k)
{
    static const char *const names[] = {"begin",  "commit", "origin", "relation", "type",
                                        "insert", "update", "delete", "truncate", "message"};
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

/* A cursor over untrusted bytes: each read checks what is left first and
 * notes a shortfall in st (reads after it return zeroes). */
struct reader {
    const uint8_t *p;
    size_t len, pos;
    enum pgoutput_status st;
};

static bool need(struct reader *r, size_t n)
{
    if (r->st != PGOUTPUT_OK)
        return false;
    if (r->len - r->pos < n) {
        r->st = PGOUTPUT_TRUNCATED;
        return false;
    }
    return true;
}

static uint8_t rd8(struct reader *r)
{
    return need(r, 1) ? r->p[r->pos++] : 0;
}

static uint16_t rd16(struct reader *r)
{
    if (!need(r, 2))
        return 0;
    uint16_t v = (uint16_t)((unsigned)r->p[r->pos] << 8 | r->p[r->pos + 1]);
    r->pos += 2;
    return v;
}

static uint32_t rd32(struct reader *r)
{
    if (!need(r, 4))
        return 0;
    const uint8_t *q = r->p + r->pos;
    r->pos += 4;
    return (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}

static uint64_t rd64(struct reader *r)
{
    uint64_t hi = rd32(r);
    return hi << 32 | rd32(r);
}

/* A NUL-terminated string of any length (a message's prefix). */
static const char *rd_string(struct reader *r)
{
    if (r->st != PGOUTPUT_OK)
        return NULL;
    const uint8_t *start = r->p + r->pos;
    const uint8_t *nul = memchr(start, '\0', r->len - r->pos);
    if (!nul) {
        r->st = PGOUTPUT_TRUNCATED;
        return NULL;
    }
    r->pos += (size_t)(nul - start) + 1;
    return (const char *)start;
}

/* A NUL-terminated string of at most PGOUTPUT_NAME_MAX bytes (names are
 * never longer in PostgreSQL; a longer one is BAD, so callers can copy it
 * into a fixed buffer). NULL after a failure. */
static const char *rd_name(struct reader *r)
{
    const char *s = rd_string(r);
    if (s && strlen(s) > PGOUTPUT_NAME_MAX) {
        r->st = PGOUTPUT_BAD;
        return NULL;
    }
    return s;
}

static void skip(struct reader *r, size_t n)
{
    if (need(r, n))
        r->pos += n;
}

static void bad(struct reader *r)
{
    if (r->st == PGOUTPUT_OK)
        r->st = PGOUTPUT_BAD;
}

/* The end of a message: every byte was read, none is left over. */
static enum pgoutput_status finish(struct reader *r)
{
    if (r->st == PGOUTPUT_OK && r->pos != r->len)
        r->st = PGOUTPUT_BAD;
    return r->st;
}

/* ---- CopyData payloads ---------------------------------------------------- */

enum pgoutput_status pgoutput_parse_copy(const uint8_t *p, size_t len, struct pgoutput_copy *c)
{
    struct reader r = {p, len, 0, PGOUTPUT_OK};
    memset(c, 0, sizeof(*c));
    uint8_t type = rd8(&r);
    if (r.st != PGOUTPUT_OK)
        return r.st;
    switch (type) {
    case 'w':
        c->kind = PGOUTPUT_COPY_XLOGDATA;
        c->wal_start = rd64(&r);
        c->wal_end = rd64(&r);
        c->send_time = (int64_t)rd64(&r);
        if (r.st == PGOUTPUT_OK) {
            c->data = p + r.pos;
            c->len = len - r.pos;
        }
        return r.st;
    case 'k':
        c->kind = PGOUTPUT_COPY_KEEPALIVE;
        c->wal_end = rd64(&r);
        c->send_time = (int64_t)rd64(&r);
        c->reply_requested = rd8(&r) != 0;
        return finish(&r);
    default:
        return PGOUTPUT_UNKNOWN;
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

size_t pgoutput_build_status(uint8_t out[PGOUTPUT_STATUS_LEN], uint64_t written, uint64_t flushed,
                             uint64_t applied, int64_t now, bool reply)
{
    out[0] = 'r';
    put64(out + 1, written);
    put64(out + 9, flushed);
    put64(out + 17, applied);
    put64(out + 25, (uint64_t)now);
    out[33] = reply ? 1 : 0;
    return PGOUTPUT_STATUS_LEN;
}

/* ---- pgoutput's messages ---------------------------------------------------- */

/* TupleData: a column count, then per column its kind and, for a value, its
 * length and bytes. Read to check its shape; the values are not needed. */
static void tuple(struct reader *r)
{
    uint16_t n = rd16(r);
    for (uint16_t i = 0; i < n && r->st == PGOUTPUT_OK; i++) {
        switch (rd8(r)) {
        case 'n': /* NULL */
        case 'u': /* an unchanged TOASTed value, not sent */
            break;
        case 't': /* text */
        case 'b': /* binary */
        {
            uint32_t l = rd32(r);
            if (l > INT32_MAX)
                bad(r);
            skip(r, l);
            break;
        }
        default:
            bad(r);
        }
    }
}

static void parse_relation(struct reader *r, struct pgoutput_msg *m)
{
    m->relid = rd32(r);
    m->nspname = rd_name(r);
    m->name = rd_name(r);
    (void)rd8(r); /* replica identity setting */
    m->ncols = rd16(r);
    for (uint16_t i = 0; i < m->ncols && r->st == PGOUTPUT_OK; i++) {
        uint8_t flags = rd8(r);
        if (flags > 1) /* 1: part of the key; nothing else is defined */
            bad(r);
        (void)rd_name(r);
        (void)rd32(r); /* type OID */
        (void)rd32(r); /* type modifier */
    }
}

/* INSERT: 'N' and the new row. UPDATE: 'K' (the old key) or 'O' (the old
 * row) optionally, then 'N' and the new row. DELETE: 'K' or 'O' and it. */
static void parse_change(struct reader *r, struct pgoutput_msg *m)
{
    m->relid = rd32(r);
    uint8_t t = rd8(r);
    if (m->kind == PGOUTPUT_INSERT) {
        if (t != 'N')
            bad(r);
        tuple(r);
        return;
    }
    if (t != 'K' && t != 'O' && !(m->kind == PGOUTPUT_UPDATE && t == 'N')) {
        bad(r);
        return;
    }
    tuple(r);
    if (m->kind == PGOUTPUT_UPDATE && t != 'N') {
        if (rd8(r) != 'N')
            bad(r);
        tuple(r);
    }
}

static void parse_truncate(struct reader *r, struct pgoutput_msg *m)
{
    m->n_relids = rd32(r);
    m->flags = rd8(r);
    if (m->flags > 3) /* CASCADE (1), RESTART IDENTITY (2) */
        bad(r);
    if (r->st != PGOUTPUT_OK)
        return;
    if (m->n_relids > (r->len - r->pos) / 4) {
        r->st = PGOUTPUT_TRUNCATED;
        return;
    }
    m->relids = r->p + r->pos;
    r->pos += (size_t)m->n_relids * 4;
}

static void parse_message(struct reader *r, struct pgoutput_msg *m)
{
    m->flags = rd8(r);
    if (m->flags > 1) /* transactional (1) */
        bad(r);
    m->lsn = rd64(r);
    m->name = rd_string(r);
    uint32_t l = rd32(r);
    if (l > INT32_MAX)
        bad(r);
    skip(r, l);
}

static bool kind_of(uint8_t type, enum pgoutput_kind *k)
{
    static const char types[] = "BCORYIUDTM";
    const char *at = type ? strchr(types, type) : NULL;
    if (!at)
        return false;
    *k = (enum pgoutput_kind)(at - types);
    return true;
}

enum pgoutput_status pgoutput_parse(const uint8_t *p, size_t len, struct pgoutput_msg *m)
{
    struct reader r = {p, len, 0, PGOUTPUT_OK};
    memset(m, 0, sizeof(*m));
    uint8_t type = rd8(&r);
    if (r.st != PGOUTPUT_OK)
        return r.st;
    if (!kind_of(type, &m->kind))
        return PGOUTPUT_UNKNOWN;
    switch (m->kind) {
    case PGOUTPUT_BEGIN:
        m->lsn = rd64(&r);
        m->time = (int64_t)rd64(&r);
        m->xid = rd32(&r);
        break;
    case PGOUTPUT_COMMIT:
        m->flags = rd8(&r);
        m->lsn = rd64(&r);
        m->end_lsn = rd64(&r);
        m->time = (int64_t)rd64(&r);
        break;
    case PGOUTPUT_ORIGIN:
        m->lsn = rd64(&r);
        m->name = rd_string(&r);
        break;
    case PGOUTPUT_RELATION:
        parse_relation(&r, m);
        break;
    case PGOUTPUT_TYPE:
        m->relid = rd32(&r);
        m->nspname = rd_name(&r);
        m->name = rd_name(&r);
        break;
    case PGOUTPUT_INSERT:
    case PGOUTPUT_UPDATE:
    case PGOUTPUT_DELETE:
        parse_change(&r, m);
        break;
    case PGOUTPUT_TRUNCATE:
        parse_truncate(&r, m);
        break;
    case PGOUTPUT_MESSAGE:
        parse_message(&r, m);
        break;
    }
    return finish(&r);
}

enum pgoutput_status pgoutput_parse_head(const uint8_t *p, size_t len, struct pgoutput_msg *m)
{
    memset(m, 0, sizeof(*m));
    if (len < 1)
        return PGOUTPUT_TRUNCATED;
    if (!kind_of(p[0], &m->kind))
        return PGOUTPUT_UNKNOWN;
    if (m->kind != PGOUTPUT_INSERT && m->kind != PGOUTPUT_UPDATE && m->kind != PGOUTPUT_DELETE)
        return PGOUTPUT_BAD;
    if (len < 5)
        return PGOUTPUT_TRUNCATED;
    m->relid = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    return PGOUTPUT_OK;
}

uint32_t pgoutput_relid_at(const struct pgoutput_msg *m, uint32_t i)
{
    const uint8_t *q = m->relids + (size_t)i * 4;
    return (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}
