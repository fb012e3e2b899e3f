/* client_login.h - a client's way in: the startup packet (and SSLRequest,
 * CancelRequest), authentication (trust, plain, md5, SCRAM-SHA-256, cert;
 * secrets from auth_file or auth_query), and the welcome. A client of the
 * admin console is let in through the console's hooks. */
#ifndef SLUICE_CLIENT_LOGIN_H
#define SLUICE_CLIENT_LOGIN_H

#include <stdbool.h>

#include "conn.h"

/* What the console says of a client that asks for it. */
enum client_console_access {
    CONSOLE_REFUSED = 0, /* not allowed: closed with the reason */
    CONSOLE_PASSWORD,    /* allowed once authenticated as any client is */
    CONSOLE_TRUSTED,     /* allowed without a password (PgBouncer's own user
                          * over the Unix socket, same uid as the process) */
};

/* The admin console, as login and the client state machine see it
 * (admin.c registers it; a client of it never gets a server). */
struct client_console {
    /* Is dbname one of the console's ("pgbouncer", "sluice")? */
    bool (*is_console_db)(const char *dbname);
    /* May c (user known) use the console, and must it give a password?
     * On CONSOLE_REFUSED c has been closed. */
    enum client_console_access (*check_user)(struct client *c);
    /* c is authenticated: the console's welcome. */
    void (*welcome)(struct client *c);
    /* c, logged in, has messages buffered: run its commands. */
    void (*handle)(struct client *c);
};

/* Sets the console (at start) and registers login's client free hook. */
void client_login_init(const struct client_console *console);
const struct client_console *client_login_console(void);

/* Handles c's buffered bytes in CL_STARTUP or CL_AUTH. true when c moved on
 * and its caller should look at the rest of the buffer in the new state;
 * false when c waits (or was closed). */
bool client_login_read(struct client *c);

/* Runs auth_query for c (CL_AUTH_QUERY) on sv, a server of the auth_user's
 * pool just lent to it; the login goes on when the answer is in. */
void client_login_auth_query(struct server *sv, struct client *c);

/* The pool has server parameters now: finish the login of c (the welcome:
 * AuthenticationOk, parameters, BackendKeyData, ReadyForQuery). */
void client_welcome(struct client *c);

#endif
