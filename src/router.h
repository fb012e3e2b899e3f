/* router.h - where a request goes: the decision the client's dispatcher
 * asks for before a server is chosen (client.c, client_dispatch()).
 *
 * With read_write_split off (the default), or no replicas, every request
 * goes to its database's primary and nothing is parsed. With it on, a
 * request that is provably read-only goes to a replica (replicas.c picks
 * which); anything else, or anything not understood, to the primary.
 * docs/routing.md states the rules. */
#ifndef SLUICE_ROUTER_H
#define SLUICE_ROUTER_H

#include "conn.h"
#include "request.h"

/* What the router decided. */
enum router_target {
    ROUTE_PRIMARY = 0, /* a server of the database's primary */
    ROUTE_REPLICA,     /* a server of one of its replicas (endpoint) */
    ROUTE_WAIT,        /* the request's first message is not all here yet: ask again */
    ROUTE_ANSWERED,    /* refused here with an error (a write hinted to a replica) */
};
const char *router_target_str(enum router_target t);

struct router_decision {
    enum router_target target;
    int endpoint;    /* index into the database's endpoints (0: the primary) */
    const char *why; /* static text: the rule that decided, for the debug log */
};

/* Where c's request r (begun, its first message at the head of c's
 * buffer) goes. ROUTE_WAIT: the caller waits for more bytes; ROUTE_ANSWERED:
 * the request was consumed and answered (or c closed). */
struct router_decision router_route(struct client *c, struct request *r);

/* Registers the router's request observer (at start): it holds a request
 * that must not run on the replica c is linked to until that server goes
 * back, so that the dispatcher routes it anew. */
void router_init(void);
/* Frees the running thread's routing caches (thread exit). */
void router_thread_done(void);

/* Requests routed to a replica, and writes held back behind reads on one,
 * since start (all workers). */
uint64_t router_replica_reads(void);

#endif
