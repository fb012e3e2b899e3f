/* conn.c - names of the connection states (conn.h), for logs and the
 * admin console. */
#include "conn.h"

const char *client_state_str(enum client_state st)
{
    static const char *const names[] = {"startup",    "auth",    "auth_wait", "auth_query",
                                        "login_wait", "idle",    "waiting",   "assigned",
                                        "active",     "closing", "closed"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

const char *server_state_str(enum server_state st)
{
    static const char *const names[] = {"connecting",  "login",     "idle",    "assigned",
                                        "testing",     "resetting", "setting", "active",
                                        "cancel_wait", "closing",   "closed"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

const char *endpoint_role_str(enum endpoint_role r)
{
    static const char *const names[] = {"primary", "replica", "removed", "host"};
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}
