/* commit_gate.h - decoded commits held until the primary shows them.
 *
 * A walsender decodes a commit once its WAL is flushed, which is before the
 * committing backend leaves the proc array: for that while, a query on the
 * primary still reads the old rows. Had the logical consumer dropped the
 * cached answers at once, a fill in that while would cache the old rows
 * again, under the new generation, for as long as the TTL. So each commit
 * waits here until a snapshot of the primary (pg_current_snapshot(), on a
 * connection of the gate's own) shows its transaction; only then are its
 * relations released to the writes bus, and a fill begun after that reads
 * the new rows. A commit that is visible already waits one round trip.
 *
 * While the gate cannot look (no connection yet, or it failed, or a look
 * took too long) the database is in a gap (writes.h): nothing of it is
 * answered or cached. Commits keep waiting meanwhile and go when a look
 * shows them. All of it runs on one worker's loop: the logical consumer's. */
#ifndef SLUICE_COMMIT_GATE_H
#define SLUICE_COMMIT_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"

struct commit_gate;

/* Commits were seen by the primary's new snapshots: their relations (OIDs
 * as the stream named them), or every relation of the database (all). */
typedef void (*commit_gate_release_fn)(void *arg, const uint32_t *oids, int n, bool all);

/* A gate for db on w's loop; it opens a gap for db until its connection
 * has looked once. */
struct commit_gate *commit_gate_new(struct database *db, struct worker *w,
                                    commit_gate_release_fn release, void *arg);

/* Closes its connection and its gap; what waits is dropped. */
void commit_gate_free(struct commit_gate *g);

/* Transaction xid committed, having changed oids[0..n) (or everything, all):
 * released once the primary shows it. */
void commit_gate_add(struct commit_gate *g, uint32_t xid, const uint32_t *oids, int n, bool all);

/* Every tick of its owner: connects through p (NULL: not yet) when it has
 * no connection, and gives up on a look that takes too long. */
void commit_gate_tick(struct commit_gate *g, struct pool *p, int64_t now);

#endif
