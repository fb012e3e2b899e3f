/* server_cancel.h - cancelling the query a server runs.
 *
 * A cancel goes, when it can, as `SELECT pg_cancel_backend(pid)` on an idle
 * server of the same pool (same database, user and host): PostgreSQL's
 * CancelRequest needs a new connection, for which the postmaster forks a
 * process, and a storm of cancels is a storm of forks that takes the CPU
 * every other backend needs. Without such a server, or where the function
 * fails for the pool's user (EXECUTE revoked), it is a CancelRequest on a
 * connection of its own, as PgBouncer sends it. Either way the server is
 * not reused until the cancel has landed (SV_CANCEL_WAIT). */
#ifndef SLUICE_SERVER_CANCEL_H
#define SLUICE_SERVER_CANCEL_H

#include "conn.h"

/* Cancels the query running on sv (on sv's worker, or from another thread
 * while the world is stopped). */
void server_send_cancel(struct server *sv);

/* Frees the cancels still in flight on w (shutdown). */
void server_cancel_free_all(struct worker *w);

#endif
