/* replication.h - replication connections (`replication=true|database` in
 * the startup packet), passed through as PgBouncer 1.23 does: each such
 * client gets a server connection of its own, opened for it with the same
 * replication parameter, linked for the whole session and closed when the
 * client leaves (never pooled, never reused). The bytes go through as they
 * come, in both directions: the walsender protocol (CopyBoth, replication
 * commands) is not looked at. */
#ifndef SLUICE_REPLICATION_H
#define SLUICE_REPLICATION_H

#include "conn.h" /* enum replication_mode */

const char *replication_mode_str(enum replication_mode m);

/* The mode a startup value asks for, as PostgreSQL reads it (a boolean or
 * "database"); -1 for a value PostgreSQL would refuse. */
int replication_mode_parse(const char *value);

/* c (authenticated, c->replication set, c->pool its pool) gets its own
 * server: c is welcomed once that server has logged in, or closed with the
 * server's error. */
void replication_start(struct client *c);

/* c's buffered bytes go to its server as they are (c is CL_ACTIVE and
 * linked to its walsender). */
void replication_client_data(struct client *c);

#endif
