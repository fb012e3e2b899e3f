/* client.h - a client connection's state machine and the decision point of
 * an idle client's next request (client_dispatch() in client.c); what the
 * pool asks of clients (struct pool_ops) is implemented here. */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include "conn.h"

/* Takes an accepted socket of worker w. */
void client_accept(struct worker *w, int fd, const struct sockaddr *addr, unsigned addrlen,
                   bool is_unix);

/* pool_ops: sv is lent to waiting c (auth_query or a request). */
void client_link(struct server *sv, struct client *c);
/* pool_ops: c's server went back (transaction over): c is idle again and
 * handles anything it has buffered. */
void client_unlinked(struct client *c);
/* pool_ops: c left the waiting list of a replica that may not take reads
 * now; its request, still buffered, is routed again. */
void client_reroute(struct client *c);
/* pool_ops: close c with this error (its pool's login failed, or
 * query_wait_timeout). */
void client_fail(struct client *c, const char *sqlstate, const char *msg);

/* Periodic timeouts for w's clients. */
void client_janitor(struct worker *w);
/* Shutdown: closes every client of w. */
void client_close_all(struct worker *w);

#endif
