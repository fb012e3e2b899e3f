/* pg_snapshot.h - PostgreSQL's pg_snapshot text (pg_current_snapshot()),
 * read to tell whether a committed transaction is visible yet.
 *
 * A transaction's commit is in the WAL (and decoded by a walsender) before
 * the committing backend leaves the proc array; until then new snapshots on
 * the primary do not see it. A snapshot taken after one that shows it shows
 * it too, so one look settles a transaction for good. The text is
 * "xmin:xmax:xip,xip,..." with 64-bit ids; only their low 32 bits are kept,
 * which is what pgoutput's BEGIN carries, compared modulo 2^32 as
 * PostgreSQL compares them. */
#ifndef SLUICE_PG_SNAPSHOT_H
#define SLUICE_PG_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pg_snapshot {
    uint32_t xmin, xmax; /* low 32 bits */
    uint32_t *xip;       /* in progress, sorted as unsigned (the buffer is reused) */
    size_t n_xip, cap;
};

/* Reads text[0..len) into s (its buffer grows as needed). false: not a
 * snapshot's text (s is then unusable until the next good parse). */
bool pg_snapshot_parse(struct pg_snapshot *s, const char *text, size_t len);

/* Whether xid, a transaction known to have committed, is visible to s (and
 * so to every later snapshot). */
bool pg_snapshot_shows(const struct pg_snapshot *s, uint32_t xid);

/* Whether every transaction up to xid has ended in s (xid precedes xmin). */
bool pg_snapshot_past(const struct pg_snapshot *s, uint32_t xid);

/* a precedes b, modulo 2^32 (TransactionIdPrecedes, for normal ids). */
static inline bool pg_xid_precedes(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

void pg_snapshot_free(struct pg_snapshot *s);

#endif
