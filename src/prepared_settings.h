/* prepared_settings.h - the session settings a client made in transaction
 * pooling (SET, RESET, DISCARD), kept as a list of "SET name = 'v';"
 * statements to replay on whichever server it gets next. prepared.c's. */
#ifndef SLUICE_PREPARED_SETTINGS_H
#define SLUICE_PREPARED_SETTINGS_H

#include <stdbool.h>

/* Each entry holds a reference to its name and statement (params.h). */
struct setting {
    const char *name; /* interned, lower case */
    const char *stmt; /* interned "SET name = 'value'" */
};

struct setting_list {
    struct setting *v;
    int n, cap;
    bool loaded; /* the startup packet's settings were added */
};

/* Adds the settings of a client's startup extras (see
 * prepared_extras_split()) and marks the list loaded. */
void settings_load(struct setting_list *l, const char *extras);
/* Sets name to stmt, or removes it when stmt is NULL (RESET name). Takes
 * references of its own. */
void settings_put(struct setting_list *l, const char *name, const char *stmt);
/* Empties the list (RESET ALL), giving back its references. */
void settings_clear(struct setting_list *l);
/* The list as one interned "stmt;stmt;" string (a reference for the
 * caller), NULL when empty. */
const char *settings_render(const struct setting_list *l);

/* Splits an extras string made at login
 * ("SELECT pg_catalog.set_config('a', 'x', false);...") into
 * up to max (name, statement) pairs, each interned with a reference for the
 * caller. Returns the count, -1 (and no references) if the string is not of
 * that form. */
int prepared_extras_split(const char *extras, const char **names, const char **stmts, int max);

#endif
