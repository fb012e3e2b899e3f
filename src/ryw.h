/* ryw.h - read-your-writes: a read never sees data older than the writes
 * it must see (read_your_writes = connection | user | database; off: no
 * such promise).
 *
 * When a transaction (or a statement outside one) that may have written
 * ends on the primary, and its server would go back to the pool, sluice
 * asks that server for pg_current_wal_insert_lsn() - after the client has
 * its ReadyForQuery, so the client waits for nothing - and raises the
 * scope's position (struct rw_scope: the client's for connection, the
 * (database, login user)'s for user, the database's for database). While
 * that answer is pending, reads of the scope go to the primary. A read then
 * goes only to a replica the lag monitor (lag_monitor.h) saw replay at
 * least that far; if none has, to the primary. */
#ifndef SLUICE_RYW_H
#define SLUICE_RYW_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

enum ryw_mode {
    RYW_OFF = 0,
    RYW_CONNECTION, /* the client's own writes */
    RYW_USER,       /* those of every client of its database and login user */
    RYW_DATABASE,   /* those of every client of its database */
};

/* A client's part (in its routing state, router.h). */
struct ryw_client {
    bool wrote;            /* its link to the primary may have written */
    bool watch;            /* it went to the primary for a read: later requests may write */
    uint64_t lsn;          /* its own writes are at or before this */
    int64_t unknown_until; /* a position could not be read: primary until then */
};

/* read_your_writes of the running config (cached per thread). */
enum ryw_mode ryw_mode(void);

/* Whether c's read may go to a replica now, and how far that replica must
 * have replayed (0: any). false: to the primary. */
bool ryw_read_floor(const struct client *c, const struct ryw_client *rc, int64_t now,
                    uint64_t *min_lsn);

/* c's request on the primary ended its transaction and its server would go
 * back (sv, endpoint 0): whether the position must be read first. */
static inline bool ryw_commit_due(const struct ryw_client *rc, const struct server *sv)
{
    return rc && rc->wrote && sv->pool->ep == 0;
}
/* Counts the write as pending in its scope (before the client sees its
 * ReadyForQuery). */
void ryw_commit_begin(struct ryw_client *rc, struct server *sv);
/* Sends the position query on sv; once answered, the scope knows it and sv
 * goes back to the pool (unless c sent more meanwhile). */
void ryw_commit_read(struct server *sv);
/* sv closed while its position was read (sv->rw_scope set): true, and the
 * caller lets its client go on without it (its request was answered). */
bool ryw_commit_lost(struct server *sv);

#endif
