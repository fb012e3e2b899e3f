/* config_check.h - the whole configuration checked in one pass: the ini
 * file with its %includes and every file it names.
 *
 * One function serves `sluice --check`, the start and every RELOAD (the
 * admin command and SIGHUP), so that what --check accepts is what a reload
 * accepts, and a broken auth_file or TLS file never replaces a working
 * config. It reads files and builds OpenSSL contexts only: it binds,
 * connects and writes nothing, and changes no global state. */
#ifndef SLUICE_CONFIG_CHECK_H
#define SLUICE_CONFIG_CHECK_H

#include <stdbool.h>

#include "auth.h"
#include "config.h"

/* Loads path (config_load_all(): every bad line, not only the first) and
 * checks what it names: the auth_file (parsed, as logins read it), both
 * sides' TLS keys, certificates and CA files (loaded into contexts as
 * sluice builds them, the key checked against the certificate), the
 * track_extra_parameters list and the user to run as. Each problem is
 * added to problems as "FILE:LINE: reason": one in a named file that has
 * no line of its own (a missing auth_file, a key that does not match its
 * certificate) is placed at the line of the setting that names it.
 * true with *cfg (refcount 1) and *userlist (NULL without an auth_file),
 * both the caller's; false when any problem was found (then neither). */
bool config_check_load(const char *path, struct config **cfg, struct auth_userlist **userlist,
                       struct config_problems *problems);

/* Adds why to problems, placed at the line that set the setting named by
 * why's first word (client_tls_cert_file "...": ...), else at cfg's main
 * file. Exposed for the unit tests. */
void config_check_place(const struct config *cfg, struct config_problems *problems,
                        const char *why);

#endif
