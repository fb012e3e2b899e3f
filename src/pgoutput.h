/* pgoutput.h - the messages of a logical replication stream, read and
 * written: the walsender's CopyData payloads (XLogData 'w', primary
 * keepalive 'k'), sluice's Standby Status Update 'r', and the pgoutput
 * plugin's messages (protocol version 1) that XLogData carries.
 *
 * Pure functions of bytes (no allocation, no I/O), for cache_logical.c;
 * fuzzed (tests/fuzz/fuzz_pgoutput.c). The bytes come from the server and
 * are not trusted: every length is checked against the buffer, and a
 * message that does not fit its own description is refused, never read
 * past. Names point into the caller's buffer and are NUL-terminated there
 * (the check is part of the parse). Reference: PostgreSQL's "Streaming
 * Replication Protocol" and "Logical Replication Message Formats". */
#ifndef SLUICE_PGOUTPUT_H
#define SLUICE_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The result of a parse. */
enum pgoutput_status {
    PGOUTPUT_OK = 0,    /* the message was read (m is filled in) */
    PGOUTPUT_TRUNCATED, /* the bytes end before the message does */
    PGOUTPUT_BAD,       /* bytes no such message can have (after a known type) */
    PGOUTPUT_UNKNOWN,   /* a type byte this parser does not know */
};
const char *pgoutput_status_str(enum pgoutput_status st);

/* ---- the replication protocol's CopyData payloads ---------------------- */

/* What the walsender sends in CopyData. */
enum pgoutput_copy_kind {
    PGOUTPUT_COPY_XLOGDATA = 0, /* 'w': WAL data (for pgoutput, one of its messages) */
    PGOUTPUT_COPY_KEEPALIVE,    /* 'k': the server's position; a reply may be asked */
};

struct pgoutput_copy {
    enum pgoutput_copy_kind kind;
    uint64_t wal_start;   /* 'w': where the data starts */
    uint64_t wal_end;     /* the end of WAL the server knows of (what it sent) */
    int64_t send_time;    /* microseconds since 2000-01-01 */
    bool reply_requested; /* 'k': answer at once */
    const uint8_t *data;  /* 'w': the payload (a pgoutput message) */
    size_t len;           /* ... its length */
};

/* Reads one CopyData payload p[0..len) (without the CopyData header). */
enum pgoutput_status pgoutput_parse_copy(const uint8_t *p, size_t len, struct pgoutput_copy *c);

/* The size of a Standby Status Update. */
#define PGOUTPUT_STATUS_LEN 34

/* Writes a Standby Status Update ('r', the CopyData payload) into out:
 * written, flushed and applied positions, now (microseconds since
 * 2000-01-01), and whether the server should answer at once. Returns
 * PGOUTPUT_STATUS_LEN. */
size_t pgoutput_build_status(uint8_t out[PGOUTPUT_STATUS_LEN], uint64_t written, uint64_t flushed,
                             uint64_t applied, int64_t now, bool reply);

/* Microseconds from the Unix epoch to PostgreSQL's (2000-01-01). */
#define PGOUTPUT_EPOCH_OFFSET_USEC INT64_C(946684800000000)

/* ---- pgoutput's messages ------------------------------------------------ */

/* A pgoutput message, by its type byte. */
enum pgoutput_kind {
    PGOUTPUT_BEGIN = 0, /* 'B': a transaction's changes follow */
    PGOUTPUT_COMMIT,    /* 'C': ... and it committed */
    PGOUTPUT_ORIGIN,    /* 'O': the transaction came from another node */
    PGOUTPUT_RELATION,  /* 'R': a relation's OID, schema, name and columns */
    PGOUTPUT_TYPE,      /* 'Y': a data type's OID, schema and name */
    PGOUTPUT_INSERT,    /* 'I': a row inserted into relid */
    PGOUTPUT_UPDATE,    /* 'U': a row of relid updated */
    PGOUTPUT_DELETE,    /* 'D': a row of relid deleted */
    PGOUTPUT_TRUNCATE,  /* 'T': relations truncated */
    PGOUTPUT_MESSAGE,   /* 'M': a message of pg_logical_emit_message() */
};
const char *pgoutput_kind_str(enum pgoutput_kind k);

/* Longest name PostgreSQL has (NAMEDATALEN - 1), for callers' buffers. */
#define PGOUTPUT_NAME_MAX 63

struct pgoutput_msg {
    enum pgoutput_kind kind;
    uint64_t lsn;     /* BEGIN: final LSN; COMMIT: commit LSN; ORIGIN, MESSAGE: LSN */
    uint64_t end_lsn; /* COMMIT: the end of the transaction's commit record */
    int64_t time;     /* BEGIN, COMMIT: the commit time (microseconds since 2000) */
    uint32_t xid;     /* BEGIN */
    uint32_t relid;   /* RELATION, TYPE (the type's OID), INSERT, UPDATE, DELETE */
    /* RELATION, TYPE: schema and name (NUL-terminated in the buffer);
     * ORIGIN: name in name; MESSAGE: its prefix in name. */
    const char *nspname, *name;
    uint16_t ncols; /* RELATION: columns described */
    /* TRUNCATE: n_relids big-endian OIDs at relids (pgoutput_relid_at()) */
    uint32_t n_relids;
    const uint8_t *relids;
    uint8_t flags; /* COMMIT: flags; TRUNCATE: options; MESSAGE: flags */
};

/* Reads one pgoutput message (protocol version 1) p[0..len), whole:
 * INSERT, UPDATE and DELETE have their tuple data checked to the end. */
enum pgoutput_status pgoutput_parse(const uint8_t *p, size_t len, struct pgoutput_msg *m);

/* The first bytes of a message too long to buffer (its rows carry large
 * values): only what names the relation is read. OK, with m->kind and
 * m->relid, for an INSERT, UPDATE or DELETE whose first 5 bytes are
 * there; TRUNCATED when fewer are; BAD for any other kind (those are read
 * whole) or a type byte pgoutput_parse() does not know (UNKNOWN). */
enum pgoutput_status pgoutput_parse_head(const uint8_t *p, size_t len, struct pgoutput_msg *m);

/* The i-th OID of a TRUNCATE (i < m->n_relids). */
uint32_t pgoutput_relid_at(const struct pgoutput_msg *m, uint32_t i);

#endif
