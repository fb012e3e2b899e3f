/* listen.h - LISTEN / UNLISTEN under transaction pooling.
 *
 * A client that LISTENs does not keep a server: sluice keeps one listening
 * server connection per pool (database, login user) that has listening
 * clients, LISTENs there once per channel, and hands each notification to
 * every client listening on its channel: right away when the client has no
 * server, else after the next ReadyForQuery (idle) sluice forwards to it.
 * Nothing here runs unless some client of the pool listens. See
 * docs/pooling.md.
 */
#ifndef SLUICE_LISTEN_H
#define SLUICE_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"

/* What a client asks for. */
enum listen_op {
    LISTEN_OP_LISTEN = 0,   /* LISTEN channel */
    LISTEN_OP_UNLISTEN,     /* UNLISTEN channel */
    LISTEN_OP_UNLISTEN_ALL, /* UNLISTEN * (also DISCARD ALL) */
};

/* Bytes of notifications kept per client while it is in a transaction;
 * past that, new ones are dropped (logged). */
#define LISTEN_QUEUE_MAX (16u << 20)

/* Registers op for client c (of pool c->pool) on channel (ignored for
 * UNLISTEN_ALL; at most 63 bytes, as PostgreSQL truncates identifiers).
 * Idempotent. Returns true when the client may be answered now; false when
 * the listening connection has not yet confirmed the LISTEN: c stops
 * reading and its on_data runs again once it has (or has failed), so the
 * caller keeps the message and asks again then. */
bool listen_client_op(struct client *c, enum listen_op op, const char *channel);

/* Registers LISTEN as an observer of requests (at start): it answers
 * LISTEN/UNLISTEN of tracked clients, and hands queued notifications over
 * after an idle ReadyForQuery. */
void listen_init(void);

/* c is being freed: it stops listening everywhere. No-op without c->lc. */
void listen_client_free(struct client *c);

/* Shutdown: no more reconnects (listening servers close with their pools). */
void listen_shutdown(void);

/* Writes channel as a double-quoted identifier into out (NUL-terminated).
 * Returns the length, or 0 if it does not fit in cap. */
size_t listen_quote_ident(const char *channel, char *out, size_t cap);

/* Reads a NotificationResponse body (after the 5-byte header, n bytes):
 * the channel name. Returns NULL if malformed. */
const char *listen_notification_channel(const unsigned char *body, size_t n);

#endif
