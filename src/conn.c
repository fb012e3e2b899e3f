/* conn.c - names of the connection states (conn.h), for logs and the
 * admin console. */
#include "conn.h"

const char *client_state_str(enum client_state st)
{
    static const char *const names[] = {"startup", "auth",    "auth_query", "login_wait",
                                        "idle",    "waiting", "active",     "closed"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

const char *server_state_str(enum server_state st)
{
    static const char *const names[] = {"connecting", "login",       "idle",
                                        "testing",    "resetting",   "setting",
                                        "active",     "cancel_wait", "closed"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}
