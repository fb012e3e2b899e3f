/* admin.h - the admin console: the virtual databases "pgbouncer" and
 * "sluice", PgBouncer's SHOW commands and controls. */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct client;

/* True for the console's database names. */
bool admin_is_admin_db(const char *dbname);
/* Checks c->user against admin_users / stats_users; on refusal closes c with
 * PgBouncer's error and returns false. Sets c->admin_stats_only. */
bool admin_check_user(struct client *c);
/* Sends the console's welcome to an authenticated admin client. */
void admin_welcome(struct client *c);
/* Handles the messages buffered on an admin client. */
void admin_handle(struct client *c);

/* Hooks into main for RELOAD / SHUTDOWN. */
extern bool (*admin_reload_hook)(char *err, size_t errlen);
extern void (*admin_shutdown_hook)(bool wait_for_clients);

#endif
