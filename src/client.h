/* client.h - client connections: startup, authentication, the welcome, and
 * forwarding requests to the linked server. */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdarg.h>

#include "conn.h"

/* Takes an accepted socket. */
void client_accept(struct worker *w, int fd, const struct sockaddr *addr, socklen_t addrlen,
                   bool is_unix);

/* Sends an ErrorResponse (FATAL) with sqlstate and message, logs it, and
 * closes c once the error is written. */
void client_close_error(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Closes c now (logged with reason if log_disconnections). */
void client_close(struct client *c, const char *reason);
/* Frees closed c at the end of its worker's loop iteration. */
void client_reap(struct client *c);

/* Sends a non-fatal ErrorResponse (the session goes on). */
void client_send_error(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The pool now has server parameters: finish the login of c. */
void client_welcome(struct client *c);
/* c got its server (link done, SETs finished): forward its queued bytes. */
void client_linked(struct client *c);
/* The server was taken back (transaction over): c is idle again, and handles
 * anything it has buffered. */
void client_unlinked(struct client *c);

/* auth_query answered for c: secret is the stored password (plain, md5 or
 * SCRAM secret) or NULL for an unknown user. Continues c's login. */
void client_auth_query_done(struct client *c, const char *secret);

/* Periodic timeouts for w's clients. */
void client_janitor(struct worker *w);

/* Number of bytes written to the client, etc., for SHOW commands. */
const char *client_addr_str(const struct client *c, char *buf, size_t len);
int client_port(const struct client *c);

#endif
