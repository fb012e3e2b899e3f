/* server_login.h - logging into a server: the StartupMessage, the
 * authentication exchange (cleartext, md5, SCRAM-SHA-256 with a password or
 * a client's SCRAM keys), and the messages up to the first ReadyForQuery.
 * server.c drives it and acts on the status it returns. */
#ifndef SLUICE_SERVER_LOGIN_H
#define SLUICE_SERVER_LOGIN_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"

/* Where a login stands. */
enum server_login_status {
    SERVER_LOGIN_MORE = 0, /* waiting for the server */
    SERVER_LOGIN_DONE,     /* the first ReadyForQuery came: the session is up */
    SERVER_LOGIN_FAILED,   /* it failed: why says how */
};
const char *server_login_status_str(enum server_login_status st);

/* Sends the StartupMessage on a connected sv (state SV_LOGIN); for a
 * replication client's walsender with the client's settings. False when it
 * does not fit (the caller closes sv). */
bool server_login_start(struct server *sv);

/* Reads the login messages sv sent. On SERVER_LOGIN_FAILED, why (whylen
 * bytes) holds the reason and *fatal whether a retry cannot help (wrong
 * password, unknown database): the waiting clients should get the error
 * rather than wait. Bytes after the first ReadyForQuery are left. */
enum server_login_status server_login_read(struct server *sv, char *why, size_t whylen,
                                           bool *fatal);

/* Frees sv's login-time state (at the end of the login, or at close). */
void server_login_free(struct server *sv);

#endif
