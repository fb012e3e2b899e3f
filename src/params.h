/* params.h - the session parameters sluice keeps equal between a client and
 * whichever server it gets, and the interned strings that hold their values.
 *
 * Interned strings are reference-counted: equal texts share one copy, so
 * "does the server have what the client expects" is a pointer comparison,
 * and a text goes away with its last holder (a client's SET of a new value
 * per transaction must not grow memory). Every holder owns one reference:
 * param_intern() and param_ref() give one, param_unref() returns it, and
 * param_assign() does both for a slot. Thread-safe. */
#ifndef SLUICE_PARAMS_H
#define SLUICE_PARAMS_H

#include <stddef.h>

/* Parameters PostgreSQL reports (ParameterStatus) that a client expects to
 * keep when it gets another server. */
enum tracked_param {
    TP_CLIENT_ENCODING = 0,
    TP_DATESTYLE,
    TP_TIMEZONE,
    TP_INTERVALSTYLE,
    TP_STANDARD_CONFORMING_STRINGS,
    TP_APPLICATION_NAME,
    TP_COUNT,
};
const char *tracked_param_name(enum tracked_param p);
int tracked_param_lookup(const char *name); /* -1 if not tracked */

/* The interned copy of s with one reference for the caller; NULL for NULL.
 * Equal texts give the same pointer while any reference is held. */
const char *param_intern(const char *s);
/* One more reference to an interned s (NULL: nothing); returns s. */
const char *param_ref(const char *s);
/* Gives back one reference; the text is freed with its last. NULL: nothing. */
void param_unref(const char *s);
/* *slot = s, taking a reference to s and giving back the old value's. */
void param_assign(const char **slot, const char *s);
/* *slot = the interned text (NULL for NULL), giving back the old value's. */
void param_store(const char **slot, const char *text);
/* *slot = ref, a reference the caller owns and hands over; gives back the
 * old value's. */
void param_take(const char **slot, const char *ref);
/* Distinct texts held now (tests, memory checks). */
size_t param_intern_count(void);
/* Frees every interned string whatever its references (at exit, so that
 * leak checkers see a clean heap). */
void param_intern_free_all(void);

/* Values of the tracked parameters; each non-NULL one holds a reference. */
struct param_set {
    const char *v[TP_COUNT]; /* interned; NULL = unknown */
};
/* Gives back every reference of ps and clears it. */
void param_set_clear(struct param_set *ps);

#endif
