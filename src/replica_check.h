/* replica_check.h - what the router asks servers, on idle ones taken for a
 * moment by the pool janitor, through the internal query API
 * (server_query.h): a replica's health check (pg_is_in_recovery() and
 * pg_last_wal_replay_lsn(), every replica_check_interval; the answer goes
 * to replicas.c), and the volatility of functions it met (pg_proc, on a
 * primary's server; the answers go to volatility.c). */
#ifndef SLUICE_REPLICA_CHECK_H
#define SLUICE_REPLICA_CHECK_H

#include "conn.h"

/* pool_ops.probe_server: sv (SV_TESTING) runs the check, then goes back to
 * its pool; a failed or broken check bans the replica. */
void replica_check_run(struct server *sv);

/* pool_ops.lookup_server: sv (SV_TESTING) asks pg_proc about the functions
 * waiting in its database's volatility cache, then goes back. */
void replica_check_lookup(struct server *sv);

#endif
