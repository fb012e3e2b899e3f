/* router.h - where a request goes: the decision the client's dispatcher
 * asks for before a server is chosen (client.c, client_dispatch()).
 *
 * Today every request goes to its database's primary; read/write
 * splitting, read-your-writes and the result cache decide here. */
#ifndef SLUICE_ROUTER_H
#define SLUICE_ROUTER_H

#include "conn.h"
#include "request.h"

/* What the router decided. */
enum router_target {
    ROUTE_PRIMARY = 0, /* a server of the database's primary */
};
const char *router_target_str(enum router_target t);

struct router_decision {
    enum router_target target;
    int endpoint; /* index into the database's endpoints (0: the primary) */
};

/* Where c's request r (begun, its first message at the head of c's
 * buffer) goes. */
struct router_decision router_route(const struct client *c, const struct request *r);

#endif
