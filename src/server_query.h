/* server_query.h - sluice's own SQL on a server connection it holds: the one
 * way sluice asks a server something.
 *
 * server_check_query, server_reset_query, connect_query, the SETs that make
 * a server's session match its next client, auth_query and LISTEN's
 * (re-)LISTENs all go through server_query(); lag probes, LSN capture,
 * refresh jobs and EXPLAIN will too. A query's answer comes back through
 * callbacks: each row, an error, and its end (ReadyForQuery, or the
 * connection gone). Queries sent on one server are answered in order.
 *
 * While a server has queries of sluice's pending, server.c hands whatever
 * the server sends to server_query_read(), whatever the server's state.
 * This file is also where the messages every such reader meets are handled:
 * ParameterStatus (server_param_status()) and errors (server_error_text()). */
#ifndef SLUICE_SERVER_QUERY_H
#define SLUICE_SERVER_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"

/* How a query of sluice's ended. */
enum server_query_status {
    SERVER_QUERY_OK = 0, /* ReadyForQuery, and no ErrorResponse before it */
    SERVER_QUERY_FAILED, /* ReadyForQuery after an ErrorResponse (on_error saw it) */
    SERVER_QUERY_GONE,   /* the connection closed before the answer was complete */
};
const char *server_query_status_str(enum server_query_status st);

/* Columns of a row handed to on_row (at most this many; further ones are
 * not looked at). */
#define SERVER_QUERY_MAX_COLS 8

/* One DataRow. Values point into the read buffer: valid during the call
 * only, and not NUL-terminated. */
struct server_query_row {
    int n;                                  /* columns the row has */
    const char *val[SERVER_QUERY_MAX_COLS]; /* NULL for SQL NULL */
    uint32_t len[SERVER_QUERY_MAX_COLS];
};

/* What the asker hears. Every callback is optional; arg is the asker's. */
struct server_query_ops {
    /* A row of the answer. */
    void (*on_row)(struct server *sv, void *arg, const struct server_query_row *row);
    /* An ErrorResponse; text is "SEVERITY: message". Without on_error the
     * error is logged as a warning. */
    void (*on_error)(struct server *sv, void *arg, const char *sqlstate, const char *text);
    /* The end: sv->xact_status holds ReadyForQuery's status (not for
     * SERVER_QUERY_GONE). The server is the asker's again: it may send
     * another query, lend it, release it or close it. */
    void (*on_done)(struct server *sv, void *arg, enum server_query_status st);
};

/* Sends sql on sv. With nparams > 0 the parameters (text, NULL for SQL
 * NULL) are bound through the extended protocol, so values are never
 * spliced into SQL; with none it is a simple Query, which may hold several
 * statements. sv->ready is false until the answer is complete. Returns
 * false, with nothing sent, only if sv is closed. */
bool server_query(struct server *sv, const char *sql, int nparams, const char *const *params,
                  const struct server_query_ops *ops, void *arg);

/* Sends a lone Sync on sv: it ends an extended-protocol batch that the
 * server skips after an error. on_done at its ReadyForQuery; any answer but
 * that (and errors, notices) makes sv SERVER_READ_BAD. Returns false, with
 * nothing sent, only if sv is closed. */
bool server_sync(struct server *sv, const struct server_query_ops *ops, void *arg);

/* Whether sv has queries of sluice's not answered yet. */
bool server_query_pending(const struct server *sv);

/* What server_query_read() found. */
enum server_query_read_status {
    SERVER_READ_OK = 0, /* everything for sluice was handled; later bytes are left */
    SERVER_READ_BAD,    /* a malformed or unexpected message: close sv (why says) */
    SERVER_READ_GONE,   /* a callback closed sv, or took it elsewhere: stop */
};

/* Reads what sv sent, while it has queries pending (or a holder that
 * takes notifications, sv->holder->on_notify): rows, errors and ends go to
 * the askers' callbacks, ParameterStatus is recorded, notices are logged.
 * why (whylen bytes) gets the reason for SERVER_READ_BAD. */
enum server_query_read_status server_query_read(struct server *sv, char *why, size_t whylen);

/* sv is closing: every pending query ends with SERVER_QUERY_GONE. */
void server_query_abort(struct server *sv);
/* Frees what server_query() keeps on sv (after server_query_abort()). */
void server_query_free(struct server *sv);

/* A ParameterStatus message (whole, msg/len) from sv: records the value on
 * sv and, while sv is lent to it, on its client; during login also in the
 * pool's welcome. */
void server_param_status(struct server *sv, const uint8_t *msg, uint32_t len);

/* "SEVERITY: message" of an ErrorResponse (whole, msg/len) into out;
 * sqlstate (6 bytes, may be NULL) gets its SQLSTATE. */
void server_error_text(const uint8_t *msg, uint32_t len, char *out, size_t outlen, char *sqlstate);

/* Logs one line about sv at level lvl, with PgBouncer's prefix
 * "S-0x...: db/user@host:port". */
void server_log(int lvl, const struct server *sv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
