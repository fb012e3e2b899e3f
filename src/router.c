/* router.c - where a request goes (router.h). */
#include "router.h"

const char *router_target_str(enum router_target t)
{
    static const char *const names[] = {"primary"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

struct router_decision router_route(const struct client *c, const struct request *r)
{
    (void)c;
    (void)r;
    struct router_decision d = {.target = ROUTE_PRIMARY, .endpoint = 0};
    return d;
}
