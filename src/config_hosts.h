/* config_hosts.h - the servers a [databases] entry names: host= (one host,
 * or several separated by commas, as libpq and PgBouncer take them), port=
 * (one port for all of them, or one per host, as libpq takes them), and
 * replicas=. Used by config.c once an entry's keys are read; the functions
 * are pure, so that the unit tests call them directly. */
#ifndef SLUICE_CONFIG_HOSTS_H
#define SLUICE_CONFIG_HOSTS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Splits hosts (host= as written, "" for the default unix socket) and
 * ports (port= as written, "" for 5432) into out[0..*n): items separated
 * by commas, blanks around them dropped. ports has one port for every host
 * or one for all. False with why (a whole sentence: what is wrong, and
 * with which item) when an item is empty or too long, a port is not a
 * number in 1..65535, the counts differ, a host is listed twice or there
 * are more than max. */
bool config_split_hosts(const char *hosts, const char *ports, struct config_replica *out, int max,
                        int *n, char *why, size_t whylen);

/* host= and port= of db into db->hosts[], db->n_hosts and db->port (the
 * first port); replicas= into db->replica[] (a replica's port defaults to
 * the entry's first port); load_balance_hosts checked. False with why (to
 * follow "file:line: ") when one of them is malformed, a server is in both
 * host= and replicas=, or they name more than CONFIG_MAX_SERVERS. */
bool config_parse_servers(struct config_database *db, char *why, size_t whylen);

#endif
