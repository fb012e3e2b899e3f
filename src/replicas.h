/* replicas.h - a database's read endpoints: which one takes a read (load
 * balancing over replicas=, weights, bans) and their health state.
 *
 * The state lives in struct endpoint (conn.h), in atomics: every worker
 * picks and bans without the pool lock. Health checks and SHOW REPLICAS
 * are in replica_check.c. */
#ifndef SLUICE_REPLICAS_H
#define SLUICE_REPLICAS_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"

/* Why an endpoint takes no reads for a while (endpoint.ban_reason). */
enum replica_ban_reason {
    RB_NONE = 0, /* not banned */
    RB_CONNECT,  /* a connection to it failed or timed out */
    RB_CLOSED,   /* a server connection to it broke */
    RB_SHUTDOWN, /* it said it is shutting down (57P01..57P03) */
    RB_CONFLICT, /* a query was canceled by a recovery conflict */
    RB_CHECK,    /* its health check failed */
    RB_PROMOTED, /* it is no longer in recovery: not a replica any more */
    RB_REASON_COUNT,
};
const char *replica_ban_reason_str(enum replica_ban_reason r);

/* How reads are spread (replica_load_balance). */
enum replica_balance {
    RLB_LEAST_OUTSTANDING = 0, /* fewest requests in flight, relative to weight */
    RLB_ROUND_ROBIN,           /* in turn, weights as repeats */
    RLB_RANDOM,                /* at random, weights as odds */
};
enum replica_balance replica_balance_of(const char *word);

/* True when db splits reads from writes: read_write_split (the entry's,
 * else the global one) and at least one replica configured. */
bool replicas_split_on(const struct database *db, const struct config *cfg);

/* The endpoint to send a read of db to, now (monotonic usec): a replica
 * not banned, by the configured balance; with primary_reads = share the
 * primary is one more candidate. -1 when no replica may take it (the
 * caller sends it to the primary: primary_reads = fallback). */
int replicas_pick(struct database *db, const struct config *cfg, int64_t now);

/* Bans endpoint ep of db (a replica) for replica_ban_time: it takes no
 * reads until then (and a passing check). Logged once per ban. */
void replicas_ban(struct database *db, int ep, enum replica_ban_reason why, const char *detail,
                  const struct config *cfg, int64_t now);
/* Whether ep of db may take reads now. */
bool replicas_usable(const struct database *db, int ep, int64_t now);
/* Lifts a ban (a passing health check once the ban time is over). */
void replicas_unban(struct database *db, int ep);

/* Whether endpoint ep (a replica) is due for its health check at now;
 * true for one caller per replica_check_interval, which then runs it. */
bool replicas_check_claim(struct database *db, int ep, const struct config *cfg, int64_t now);
/* A health check's answer: in_recovery (pg_is_in_recovery()) and the
 * replay position (pg_last_wal_replay_lsn(), 0 when NULL). A replica out
 * of recovery was promoted: banned, reported, never written to. A passing
 * check after the ban time lifts a ban. */
void replicas_check_passed(struct database *db, int ep, bool in_recovery, uint64_t replay_lsn,
                           const struct config *cfg, int64_t now);
void replicas_check_failed(struct database *db, int ep, const char *why, const struct config *cfg,
                           int64_t now);
/* Whether ep is banned and its ban time is over: it waits for a check (a
 * connection to run one on may have to be opened). */
bool replicas_awaits_check(const struct database *db, int ep, int64_t now);

/* What an error from a replica says about the replica: RB_SHUTDOWN
 * (admin_shutdown, crash_shutdown, cannot_connect_now), RB_CONFLICT (a
 * recovery conflict canceled the query), or RB_NONE (the query's own
 * error: the replica is fine). */
enum replica_ban_reason replicas_error_reason(const char *sqlstate, const char *message);

/* "X/Y" (pg_lsn text) as a number; false if malformed. */
bool replicas_parse_lsn(const char *s, size_t len, uint64_t *out);

#endif
