/* relay.h - a client and the server lent to it: the link (the server's
 * session made to match the client's), forwarding both ways through the
 * request queue, backpressure, and the server's return to the pool when the
 * transaction (or statement) is over. */
#ifndef SLUICE_RELAY_H
#define SLUICE_RELAY_H

#include "conn.h"

/* Lends sv to c (pool.c picked them; both on this worker): SETs first when
 * c expects other session values than sv has, then c's buffered requests
 * go through. sv's holder is the relay from now on. */
void relay_link(struct server *sv, struct client *c);

/* c (CL_ACTIVE, its server ready) has bytes buffered: forward them. */
void relay_client_data(struct client *c);

/* c's output drained: its server, stopped for backpressure, reads again. */
void relay_client_drained(struct client *c);
/* c's link ended (or c is freed): what was kept for a retry goes. */
void relay_retry_drop(struct client *c);

#endif
