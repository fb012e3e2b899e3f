/* client_conn.h - a client connection as an object: creating it, its
 * errors, closing and freeing it. Everything that ends or answers a client
 * outside a request's normal flow goes through here (login, the relay, the
 * admin console, LISTEN, pool.c's failures). */
#ifndef SLUICE_CLIENT_CONN_H
#define SLUICE_CLIENT_CONN_H

#include <stdarg.h>

#include "conn.h"

/* A new client on accepted socket fd of worker w, reading, in CL_STARTUP,
 * its messages limited as for a peer that has not logged in. */
struct client *client_new(struct worker *w, int fd, const struct sockaddr *addr, socklen_t addrlen,
                          bool is_unix, const struct stream_ops *ops);

/* Sends c a NoticeResponse (severity NOTICE) with msg (its first 511
 * bytes), e.g. while it waits for a server. */
void client_notice(struct client *c, const char *msg);
/* Sends a non-fatal ErrorResponse (the session goes on). */
void client_send_error(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends an ErrorResponse (FATAL) with sqlstate and message, logs it, and
 * closes c once the error is written. */
void client_close_error(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* client_close_error() followed by a ReadyForQuery ('I') before the close:
 * for an error that ends the request in flight (a lost server with the
 * outcome unknown, 08007). A driver waits for the end of the request before
 * it reports an error: without ReadyForQuery, libpq (psycopg) sees the
 * close first and reports "connection lost" without the SQLSTATE. */
void client_close_error_ready(struct client *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* query_timeout (query) or transaction_timeout: closes c with the
 * timeout's error, PgBouncer's text first (what its users grep for), the
 * setting after it. */
void client_close_timed_out(struct client *c, bool query);
/* c timed out with a request in flight (c->timeout_kind) and its server
 * has answered everything since: closed with the timeout's error. */
void client_timeout_settled(struct client *c);
/* client_close_error() for a client that has part of a server's message
 * (the server went away, or was given up, while a message streamed
 * through): no ErrorResponse, which the client would read as the rest of
 * that message; what was queued goes out, then c is closed. reason: for
 * the log. client_close_error() itself turns into this while c's linked
 * server is mid-message. */
void client_close_mid_message(struct client *c, const char *reason);
/* client_close_error() for a message stream_next_msg() refused (ms: BAD or
 * TOO_BIG): one wording wherever a client's messages are read. */
void client_close_bad_message(struct client *c, enum stream_msg_status ms);
/* disable_pqexec: a simple Query (type 'Q') from a client closes it with
 * "PQexec disallowed", as in PgBouncer. True when c was closed (the caller
 * stops reading it); false for any other message or with the setting off. */
bool client_refuse_pqexec(struct client *c, uint8_t type);
/* Refuses, without a server, a client message no backend would take, and
 * closes c with PostgreSQL's own error (08P01):
 * - a type none reads after login (proto_frontend_type_ok(): "invalid
 *   frontend message type"); forwarded, it would end the server's session
 *   (a fork and a login to replace it);
 * - a Query under disable_pqexec (client_refuse_pqexec());
 * - a whole message of a shape PostgreSQL refuses (proto_frontend_shape_ok():
 *   "invalid message format"): a Sync or Flush with a body would be answered
 *   with an error where sluice expects none, and random bytes would take a
 *   server only to be refused there. A message not all buffered yet passes.
 * True when c was closed. */
bool client_refuse_message(struct client *c, const struct stream_msg *m);
/* Closes c now (logged with reason if log_disconnections). */
void client_close(struct client *c, const char *reason);
/* c's output was written out: if it was closing after an error, it goes now.
 * True when c is gone. */
bool client_flushed(struct client *c);
/* A closed client still writing its last bytes (close_after_flush) whose
 * peer read none of them for CLIENT_FLUSH_STALL, or any such client at
 * shutdown: closed now, the rest unsent. A client that never reads must
 * not keep its socket and buffer forever, nor stop sluice from exiting. */
#define CLIENT_FLUSH_STALL 10000000 /* usec */
void client_drop_flushing(struct client *c);
/* Frees closed c at the end of its worker's loop iteration. */
void client_reap(struct client *c);
/* worker_ops.reap: frees w's clients closed during the iteration. */
void client_reap_all(struct worker *w);

/* Per-feature state hanging off a client (login, prepared statements,
 * LISTEN, the console's session) is freed by hooks registered at start,
 * called in order when a client is freed. At most CLIENT_MAX_FREE_HOOKS. */
#define CLIENT_MAX_FREE_HOOKS 8
void client_add_free_hook(void (*fn)(struct client *c));

/* Logs one line about c at level lvl, with PgBouncer's prefix
 * "C-0x...: db/user@addr:port". */
void client_log(int lvl, const struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The client's address as text ("unix" for a unix socket), and its port. */
const char *client_addr_str(const struct client *c, char *buf, size_t len);
int client_port(const struct client *c);

#endif
