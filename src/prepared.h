/* prepared.h - session state that survives transaction pooling: prepared
 * statements (protocol and SQL level), session SETs, and pinning for what
 * cannot move between servers.
 *
 * In transaction and statement mode (c->track), every request a client
 * sends that the server answers gets an entry on the client's response
 * queue, so that sluice can rewrite statement names, inject Parse/Close,
 * answer some requests itself and swallow the answers to its own messages
 * while the client sees exactly the responses it expects, in order. See
 * docs/pooling.md for what is covered.
 */
#ifndef SLUICE_PREPARED_H
#define SLUICE_PREPARED_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "prepared_set.h"

/* prepared_client_msg() results below 0. */
#define PREPARED_WAIT   (-1) /* need more bytes of this message: stop, keep them */
#define PREPARED_CLOSED (-2) /* the client was closed */

/* prepared_server_msg() result bits. */
#define PREPARED_PASS       0u /* forward the message (and account for it) */
#define PREPARED_SWALLOW    1u /* drop the message; no accounting */
#define PREPARED_EMIT       2u /* after the message (or in its place), call prepared_emit() */
#define PREPARED_MORE       4u /* the whole message is needed first: stop, keep the bytes */
#define PREPARED_EMIT_FIRST 8u /* call prepared_emit() before this message */

/* Whether clients linked to a server of pool p are tracked (the pool mode
 * is transaction or statement). Called at link time. */
bool prepared_tracking(const struct pool *p);

/* A client message of type/mlen starts at c->s.rbuf->data + start, with the
 * bytes [*fwd, start) not yet written to the server. The function may flush
 * those, write messages of its own, rewrite or answer this one; c->s.rbuf
 * may be replaced (grown to hold a long message). Returns how many bytes of
 * this message, from the (new) rbuf start, the caller still forwards as it
 * would have (mlen when nothing changed), or PREPARED_WAIT/PREPARED_CLOSED.
 * Only for c->track clients linked to an active server. */
int64_t prepared_client_msg(struct client *c, uint8_t type, uint32_t mlen, uint32_t *fwd);

/* A server message for linked client c: type, the bytes available (avail
 * of mlen) at msg, cap = the read buffer's capacity. Returns PREPARED_*
 * bits; PREPARED_SWALLOW only when the whole message is in the buffer. */
unsigned prepared_server_msg(struct client *c, struct server *sv, uint8_t type, const uint8_t *msg,
                             uint32_t mlen, uint32_t avail, uint32_t cap);

/* c has no server and its buffer starts with Parse/Close messages: if they
 * are all whole and followed by a Sync, and each Parse is of a statement a
 * server of the pool has parsed fine (under a name c does not use), sluice
 * answers the batch itself (ParseComplete/CloseComplete, ReadyForQuery
 * idle) and consumes it: true. Else false, and nothing changed. This keeps
 * a client that prepares synchronously (PQprepare) from waiting for a
 * server while its own program holds them all. */
bool prepared_idle(struct client *c);

/* Writes the responses sluice made for c (after PREPARED_EMIT). */
void prepared_emit(struct client *c);

/* c lost its server (transaction over): the queue must be empty; anything
 * left is dropped. */
void prepared_client_unlinked(struct client *c);
/* c is being freed: its statements, settings and queue go. */
void prepared_client_free(struct client *c);
/* Splits an extras string made at login ("SET a = 'x';SET b = 'y';") into
 * up to max (name, statement) pairs, each interned with a reference for the
 * caller. Returns the count, -1 (and no references) if the string is not of
 * that form. */
int prepared_extras_split(const char *extras, const char **names, const char **stmts, int max);

#endif
