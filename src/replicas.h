/* replicas.h - a database's read endpoints: which one takes a read (load
 * balancing over replicas=, weights, bans) and their health state; with
 * several hosts in host=, which of them is the primary (or, with the split
 * off, which one a new connection goes to).
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
 * else the global one) and at least one replica or several hosts
 * configured. */
bool replicas_split_on(const struct database *db, const struct config *cfg);

/* Whether endpoint role r is health-checked and may take reads: a replica
 * of replicas=, or one of several hosts of host=. */
static inline bool replicas_role_checked(enum endpoint_role r)
{
    return r == EP_REPLICA || r == EP_HOST;
}

/* The endpoint to send a read of db to, now (monotonic usec): a replica
 * not banned, by the configured balance; with primary_reads = share the
 * primary is one more candidate. With min_lsn, only a replica the lag
 * monitor saw replay at least that far (read-your-writes). -1 when no
 * replica may take it (the caller sends it to the primary: primary_reads =
 * fallback). */
int replicas_pick(struct database *db, const struct config *cfg, int64_t now, uint64_t min_lsn);

/* Bans endpoint ep of db (a replica or a host) for replica_ban_time: it
 * takes no reads until then (and a passing check). Logged once per ban. A
 * host that is the primary is the primary no more (but for a recovery
 * conflict, which only a standby has): true then, as the primary changed. */
bool replicas_ban(struct database *db, int ep, enum replica_ban_reason why, const char *detail,
                  const struct config *cfg, int64_t now);
/* Whether ep of db may take reads now. */
bool replicas_usable(const struct database *db, int ep, int64_t now);
/* Whether some replica of db was seen to replay lsn (usable or not: the
 * router decides that). */
bool replicas_reached(const struct database *db, uint64_t lsn);
/* Whether any replica of db may take reads now (ignoring positions). */
bool replicas_any_usable(const struct database *db, int64_t now);
/* Lifts a ban (a passing health check once the ban time is over). */
void replicas_unban(struct database *db, int ep);

/* Whether endpoint ep (a replica or a host) is due for its health check at
 * now; true for one caller per replica_check_interval, which then runs it. */
bool replicas_check_claim(struct database *db, int ep, const struct config *cfg, int64_t now);
/* Whether ep's check is due, without claiming it (a host with no server
 * to run it on gets one opened). */
bool replicas_check_due(const struct database *db, int ep, int64_t now);
/* A health check's answer: in_recovery (pg_is_in_recovery()) and the
 * replay position (pg_last_wal_replay_lsn(), 0 when NULL). A replica out
 * of recovery was promoted: banned, reported, never written to (it is not
 * in host=). A host out of recovery is the primary if there is none (or
 * the one there was is down); a host in recovery takes reads and is the
 * primary no more. A passing check after the ban time lifts a ban. True
 * when the primary changed (the caller retargets endpoint 0's pools). */
bool replicas_check_passed(struct database *db, int ep, bool in_recovery, uint64_t replay_lsn,
                           const struct config *cfg, int64_t now);
bool replicas_check_failed(struct database *db, int ep, const char *why, const struct config *cfg,
                           int64_t now);
/* Whether ep is banned and its ban time is over: it waits for a check (a
 * connection to run one on may have to be opened). */
bool replicas_awaits_check(const struct database *db, int ep, int64_t now);

/* ---- several hosts -------------------------------------------------------
 * host=A,B,C names the nodes of a cluster (endpoints 1..n_hosts, EP_HOST).
 * With read_write_split on, sluice finds the primary among them: each is
 * checked every replica_check_interval; the one out of recovery is where
 * endpoint 0 (writes) connects, and the others take reads as replicas do.
 * While none is known, endpoint 0 opens nothing and its clients wait (up to
 * query_wait_timeout). With the split off, endpoint 0's new connections go
 * to the hosts in turn (load_balance_hosts = round-robin, PgBouncer's
 * default) or to one until a connection to it fails (disable). */

/* What the last check of a host found (endpoint.seen). */
enum replica_seen {
    RS_UNKNOWN = 0, /* not checked yet */
    RS_STANDBY,     /* in recovery: reads, never writes */
    RS_PRIMARY,     /* out of recovery */
    RS_DOWN,        /* its check, or a connection to it, failed */
};
const char *replica_seen_str(enum replica_seen s);

/* Whether db finds its primary among several hosts (read_write_split on). */
bool replicas_discovers(const struct database *db, const struct config *cfg);
/* The host that is db's primary now; -1 when none is known (0 for a
 * database with one host). */
int replicas_primary(const struct database *db);
/* Whether db finds its primary among several hosts and knows none now:
 * endpoint 0 has nowhere to connect, its clients wait. */
bool replicas_no_primary(const struct database *db, const struct config *cfg);
/* The endpoint whose address a new server of db's endpoint 0 connects to:
 * 0 with one host; with several, the primary (-1: none known), or with the
 * split off the next host by load_balance_hosts. */
int replicas_connect_target(struct database *db, const struct config *cfg);
/* Whether a server of endpoint 0 connected to target may still be lent:
 * with the primary found by checks, only if target is the primary now. */
bool replicas_target_ok(const struct database *db, int target, const struct config *cfg);
/* A connection of endpoint 0 to target (a host) could not be made: the
 * host is banned (and the primary no more: true then), or with
 * load_balance_hosts = disable the next host is used. */
bool replicas_target_failed(struct database *db, int target, const char *why,
                            const struct config *cfg, int64_t now);
/* Host ep said it is in recovery other than through its check (a server of
 * endpoint 0 logged in with in_hot_standby = on): it is the primary no
 * more. True when the primary changed. */
bool replicas_seen_in_recovery(struct database *db, int ep, const char *why, int64_t now);

/* What an error from a replica says about the replica: RB_SHUTDOWN
 * (admin_shutdown, crash_shutdown, cannot_connect_now), RB_CONFLICT (a
 * recovery conflict canceled the query), or RB_NONE (the query's own
 * error: the replica is fine). */
enum replica_ban_reason replicas_error_reason(const char *sqlstate, const char *message);

/* "X/Y" (pg_lsn text) as a number; false if malformed. */
bool replicas_parse_lsn(const char *s, size_t len, uint64_t *out);

#endif
