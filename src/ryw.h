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
#include "request.h"
#include "stream.h"

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
    bool ride;             /* the request being sent ends that write: its position rides behind */
    bool token_warned;     /* its min_lsn token was found to be another cluster's (logged) */
    uint64_t lsn;          /* its own writes are at or before this */
    int64_t unknown_until; /* a position could not be read: primary until then */
    /* SET sluice.min_lsn (a causal token): its reads are at least this
     * fresh; sysid and timeline 0 when the token did not name them. */
    uint64_t min_lsn, min_sysid;
    uint32_t min_tli;
    int64_t wait_start;  /* a read waits for a replica to catch up since then (0: none) */
    uint64_t wait_floor; /* ... to replay this far */
    bool wait_plain;     /* ... a plain read: routed again without classifying it again */
};

/* The causal token of position lsn of db's primary: "LSN/SYSID/TIMELINE",
 * or the LSN alone while those two are not known. Returns its length. */
int ryw_token_format(char *buf, size_t n, const struct database *db, uint64_t lsn);
/* Parses a token (or a bare LSN) into rc's min_lsn; false: malformed. */
bool ryw_token_parse(const char *s, size_t len, uint64_t *lsn, uint64_t *sysid, uint32_t *tli);

/* Registers the owner id of the entries ryw queues (the router's observer). */
void ryw_set_owner(int owner);
/* c's request just sent to sv (its Query or Sync was the last message
 * written) ends a transaction that wrote: the query that reads its
 * position follows it on the same connection, in the same write, and the
 * client's ReadyForQuery waits for its answer, so that the scope knows the
 * position, and the client has it as ParameterStatus sluice.lsn, before
 * the client is told the commit is done - without a round trip more. */
void ryw_ride(struct client *c, struct ryw_client *rc, struct server *sv);
/* Whether a query rides behind c's request just sent to sv (its Query or
 * Sync): its write's position (rc->ride, the primary), or, while reads
 * wait (ryw_waiting), the replay position of replica sv when it is due
 * (ryw_hurry_claim()) and c's read is outside a transaction - that answer
 * comes with the read's, at no round trip more, in place of a poll of the
 * lag monitor. */
bool ryw_ride_due(struct client *c, struct server *sv);
/* The answer to that query (an entry ryw owns: request.h on_server_msg). */
unsigned ryw_on_server_msg(struct client *c, struct server *sv, struct request_entry *e,
                           const struct stream_msg *m, bool done);

/* read_your_writes of the running config (cached per thread). */
enum ryw_mode ryw_mode(void);

/* Whether c's read may go to a replica now, and how far that replica must
 * have replayed (0: any). false: to the primary. */
bool ryw_read_floor(const struct client *c, struct ryw_client *rc, int64_t now, uint64_t *min_lsn);
/* The position c's scope's reads must see now (0: none, or no shared scope). */
uint64_t ryw_scope_lsn(const struct client *c);
/* Whether rc's token is of db's primary's cluster and timeline (or either
 * is not known). */
bool ryw_token_matches(const struct database *db, const struct ryw_client *rc);
/* Whether rc holds something past the end of its transaction. */
static inline bool ryw_client_keeps(const struct ryw_client *rc, enum ryw_mode m)
{
    return rc->min_lsn || rc->wait_start || (m == RYW_CONNECTION && (rc->lsn || rc->unknown_until));
}

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
/* sv closed after it answered c's write but before the position riding
 * behind it (ryw_ride()): the write's outcome is known (its ReadyForQuery,
 * held, has sv->xact_status), its position is not. True, and the scope's
 * reads go to the primary for a while; the caller gives c that
 * ReadyForQuery and lets it go on without sv. */
bool ryw_ride_lost(struct client *c, struct server *sv);

/* While reads wait, each replica's replay position is asked at most every
 * RYW_HURRY_USEC x (its database's replicas), by a ride behind a read sent
 * there or by the lag monitor's poll (lag_monitor.c): true, and the
 * endpoint counts as asked now, when endpoint ep of db is due. */
#define RYW_HURRY_USEC 2000
bool ryw_hurry_claim(struct database *db, int ep, int64_t now);

/* ---- a read waiting for a replica to catch up ------------------------------------

 * A read whose floor no replica has replayed yet waits up to
 * replica_wait_timeout (the client stays idle, its request buffered) and
 * is routed again whenever a new replica position is learnt - while any
 * read waits, each replica is asked every 2 ms x replicas, riding behind a
 * read sent there or else polled by the lag monitor (ryw_set_hurry(),
 * ryw_hurry_claim()) - then, if none has caught up, goes to the primary. */

/* c's read (state rc) cannot go to a replica yet: true while it may wait
 * (the router answers ROUTE_WAIT), false once it must not (go to the
 * primary). */
bool ryw_wait(struct client *c, struct ryw_client *rc, int64_t now, uint64_t floor);
/* Its wait is over: it goes to a replica (replica) or to the primary. */
void ryw_wait_end(struct client *c, struct ryw_client *rc, int64_t now, bool replica);
/* c is freed or leaves: no longer waiting. */
void ryw_wait_forget(struct client *c);
/* Frees the running thread's wait list (thread exit). */
void ryw_thread_done(void);

/* Reads waiting now, all workers; and the lag monitor's hook, called from
 * any thread when the first begins to wait. */
extern _Atomic int ryw_waiting;
void ryw_set_hurry(void (*hurry)(void));
/* The lag monitor learnt a new replica position (any thread): the
 * waiting reads look again. */
void ryw_lag_moved(void);

/* Waits since start (SHOW STATS-like totals for /metrics and make bench). */
#define RYW_WAIT_BUCKETS 20
struct ryw_wait_stats {
    _Atomic uint64_t waits;                    /* reads that waited */
    _Atomic uint64_t to_replica, to_primary;   /* ... and where they went */
    _Atomic uint64_t usec;                     /* total time waited */
    _Atomic uint64_t bucket[RYW_WAIT_BUCKETS]; /* [i]: waits under 2^(i+1) us */
    _Atomic uint64_t floor_reads;              /* reads that had a position to see */
    _Atomic uint64_t floor_primary;            /* ... sent to the primary without waiting */
    _Atomic uint64_t asks_ride, asks_poll;     /* replica positions asked while reads waited */
};
extern struct ryw_wait_stats ryw_wait_stats;

#endif
