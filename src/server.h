/* server.h - server connections: connect, log in, run sluice's own queries
 * (check, reset, parameter SETs), and forward results to the linked client. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include "conn.h"

/* A new server of pool p on worker w, not connected and on no list (pool.c
 * counts it, then calls server_start() without the pool lock). */
struct server *server_alloc(struct pool *p, struct worker *w, int64_t now);
/* Resolves and connects sv; it is on p->busy until it has logged in, then
 * pool_server_ready(). A failure is recorded on the pool and closes sv. */
void server_start(struct server *sv);
/* Resolves and connects sv that waited for DNS; false while the answer is
 * still pending. */
bool server_dns_retry(struct server *sv);
/* Frees a closed sv at the end of the running worker's loop iteration. */
void server_reap(struct server *sv);

/* Lends sv to c. Sends SETs first if the client's tracked parameters differ
 * from the server's, then lets the client's queued bytes through. */
void server_link(struct server *sv, struct client *c);

/* Runs sql (a simple query) on an unlinked server in state st (SV_TESTING or
 * SV_RESETTING); pool_server_ready() when it finishes cleanly. */
void server_run_internal(struct server *sv, enum server_state st, const char *sql);

/* Sends a CancelRequest for the query running on sv, over a new connection.
 * sv is not reused until the cancel connection has finished. */
void server_send_cancel(struct server *sv);

/* Frees cancel connections still in flight (shutdown). */
void server_cancel_free_all(struct worker *w);

/* Closes and frees sv; an error from the server is logged with reason. */
void server_close(struct server *sv, const char *reason);

/* Whether sv may go back to the pool now. */
bool server_is_clean(const struct server *sv);

#endif
