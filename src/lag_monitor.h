/* lag_monitor.h - replication lag, measured from WAL positions.
 *
 * For each database that splits reads (read_write_split on, replicas= or
 * several hosts), one connection of its own to each node, outside the
 * clients' pools, asked every lag_check_interval through the internal
 * query API: the primary for its current WAL position, each standby for
 * its replay position and the time since it last replayed a transaction.
 * A replica's lag is the primary's position minus its replay position (in
 * bytes), and in time 0 when it has replayed all of that, else the time
 * since it last replayed. One past replica_max_lag or
 * replica_max_lag_bytes is lagging: it takes no reads until it catches up
 * (struct endpoint: lag_*, lagging; replicas_usable()). The connections log
 * in as the first user that used the database. Runs on worker 0. */
#ifndef SLUICE_LAG_MONITOR_H
#define SLUICE_LAG_MONITOR_H

#include <stdbool.h>
#include <stdint.h>

struct database;

/* Starts the monitor's timer on worker 0's loop (after the workers exist). */
void lag_monitor_start(void);
/* Stops it and closes its connections (shutdown). */
void lag_monitor_stop(void);

/* Lag of endpoint ep of db as SHOW REPLICAS and /metrics report it: false
 * when there is no recent measurement. */
bool lag_monitor_lag(const struct database *db, int ep, int64_t now, uint64_t *bytes,
                     int64_t *usec);

#endif
