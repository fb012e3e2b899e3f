/* server.h - a server connection's life and state machine: resolve, connect,
 * log in, be checked or reset by sluice's own queries, be lent, close. What
 * pool.c asks of servers (struct pool_ops) is implemented here. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include "conn.h"

/* A new server of pool p on worker w, not connected and on no list (pool.c
 * counts it, then calls server_start() without the pool lock). */
struct server *server_alloc(struct pool *p, struct worker *w, int64_t now);
/* Resolves and connects sv; it is on p->busy until it has logged in, then
 * pool_server_ready() (or its holder's on_ready). A failure is recorded on
 * the pool and closes sv. Called again for a server that waited for DNS;
 * false while the answer is still pending. */
bool server_start(struct server *sv);
/* Frees a closed sv at the end of the running worker's loop iteration. */
void server_reap(struct server *sv);
/* worker_ops.reap: frees w's servers closed during the iteration. */
void server_reap_all(struct worker *w);

/* Runs server_check_query / server_reset_query on an idle server taken
 * out of the pool; pool_server_ready() when it finishes cleanly, else sv
 * is closed. */
void server_check(struct server *sv);
void server_reset(struct server *sv);

/* Closes sv (freed at the end of the loop iteration); reason is logged.
 * Its holder hears of it (on_closed), and queries of sluice's pending on it
 * end with SERVER_QUERY_GONE. */
void server_close(struct server *sv, const char *reason);

/* sv, a replica's server, closed on sluice (msg NULL) or sent ErrorResponse
 * or NoticeResponse msg (an immediate shutdown warns): if that says the replica is going away or in
 * a recovery conflict, the replica is banned for a while (replicas.h). Nothing for a primary's
 * server, or an ordinary error. Returns whether msg said so (a read that
 * met it may go elsewhere). */
bool server_replica_trouble(struct server *sv, const uint8_t *msg, uint32_t len);

#endif
