/* prepared.h - session state that survives transaction pooling: prepared
 * statements (protocol and SQL level), session SETs, and pinning for what
 * cannot move between servers. An observer of the request queue
 * (request.h): in transaction and statement mode (c->track) it renames
 * statements, injects Parse/Close, answers some messages itself and has
 * the answers to its own messages swallowed, while the client sees exactly
 * the responses it expects, in order. See docs/pooling.md for what is
 * covered. */
#ifndef SLUICE_PREPARED_H
#define SLUICE_PREPARED_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "prepared_set.h"

/* Registers prepared.c as an observer of requests (at start). */
void prepared_init(void);

/* c has no server and its buffer starts with Parse/Close messages: if they
 * are all whole and followed by a Sync, and each Parse is of a statement a
 * server of the pool has parsed fine (under a name c does not use), sluice
 * answers the batch itself (ParseComplete/CloseComplete, ReadyForQuery
 * idle) and consumes it: true. Else false, and nothing changed. This keeps
 * a client that prepares synchronously (PQprepare) from waiting for a
 * server while its own program holds them all. */
bool prepared_idle(struct client *c);

/* The text of c's protocol-level prepared statement name (Parse), or NULL
 * when c has none of that name (or it is untracked: session mode). Valid
 * until c closes or deallocates it. */
const char *prepared_client_query(const struct client *c, const char *name);

/* The same statement's whole Parse body after its name: the text, its
 * NUL, the parameter count and types (as the client sent them), *len
 * bytes; NULL as above. */
const uint8_t *prepared_client_parse(const struct client *c, const char *name, uint32_t *len);

/* c is being freed: its statements and settings go. */
void prepared_client_free(struct client *c);

#endif
