/* cache_logical.h - writes that bypass sluice, seen by logical decoding
 * (cache_invalidation = logical; docs/cache.md, "Writes that bypass
 * sluice").
 *
 * For each database of [databases] (not the "*" template), one
 * replication connection (replication=database) to its primary, logged in
 * as the entry's user (or the first user whose pool the database has),
 * with a TEMPORARY logical slot of its own (pgoutput; gone with the
 * connection) reading the publication cache_publication (or sluice_cache,
 * made FOR ALL TABLES when missing). At each committed transaction the
 * relations it changed are published on the writes bus (writes.h,
 * WRITES_LOGICAL); the slot is confirmed as it goes (Standby Status
 * Updates). Until the slot streams, and whenever it stops, the database is
 * in a gap (writes_gap()): the cache keeps and answers nothing of it.
 *
 * Everything runs on worker 0's loop; the figures are read from any
 * thread. */
#ifndef SLUICE_CACHE_LOGICAL_H
#define SLUICE_CACHE_LOGICAL_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

/* Starts the consumers when the result cache is on and cache_invalidation
 * = logical (after cache_init(), before the listeners take clients): the
 * gap of every database it covers opens here. Nothing otherwise. */
void cache_logical_start(void);
/* At shutdown (workers stopped): closes the connections (their temporary
 * slots go with them) and frees everything. */
void cache_logical_stop(void);
/* Whether the consumers run. */
bool cache_logical_on(void);

/* Where a database's consumer is. */
enum cache_logical_state {
    CACHE_LOGICAL_STARTING = 0, /* connecting, or making its slot: not streaming yet */
    CACHE_LOGICAL_STREAMING,    /* the slot streams: every committed change is seen */
    CACHE_LOGICAL_FAILED,       /* stopped (reason); tried again after a backoff */
};
const char *cache_logical_state_str(enum cache_logical_state st);

/* A database's consumer, for SHOW CACHE and /metrics. */
struct cache_logical_status {
    enum cache_logical_state state;
    char reason[256];   /* FAILED: why; STARTING: what it waits for ("" when nothing) */
    char slot[64];      /* the slot's name ("" before one was asked for) */
    uint64_t flushed;   /* the last position confirmed (a commit's end, or the server's
                         * position when nothing was pending) */
    uint64_t wal_end;   /* the server's position, from its last message */
    uint64_t lag_bytes; /* wal_end - flushed (0 when not streaming) */
    uint64_t commits;   /* transactions published */
};

/* db's consumer's figures into out: false when db has none. */
bool cache_logical_status(const struct database *db, struct cache_logical_status *out);

/* "streaming", "starting" or "failed: REASON" into buf. */
void cache_logical_describe(const struct cache_logical_status *st, char *buf, size_t len);

#endif
