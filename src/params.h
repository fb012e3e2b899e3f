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

#include <stdbool.h>
#include <stddef.h>

/* Parameters PostgreSQL reports (ParameterStatus) that a client expects to
 * keep when it gets another server: PgBouncer's built-in ones, then up to
 * TP_EXTRA_MAX more named by track_extra_parameters (IntervalStyle by
 * default, as in PgBouncer). Numbered 0 to tracked_param_count() - 1. */
#define TP_EXTRA_MAX 16
enum tracked_param {
    TP_CLIENT_ENCODING = 0,
    TP_DATESTYLE,
    TP_TIMEZONE,
    TP_STANDARD_CONFORMING_STRINGS,
    TP_APPLICATION_NAME,
    TP_BUILTIN_COUNT, /* the first of the extra ones */
};
const char *tracked_param_name(int p);
int tracked_param_lookup(const char *name); /* -1 if not tracked */
/* How many parameters are tracked: the built-in ones and the extra ones. */
int tracked_param_count(void);

/* Sets the extra tracked parameters from track_extra_parameters (a comma-
 * or space-separated list; built-in names in it are skipped). Called once
 * at start, before any connection (the setting needs a restart). Returns
 * false with a reason in err for a name that is not a parameter name or
 * more than TP_EXTRA_MAX names; nothing changes then. */
bool tracked_params_configure(const char *list, char *err, size_t errlen);
/* The same checks, changing nothing (sluice --check, RELOAD). */
bool tracked_params_check(const char *list, char *err, size_t errlen);

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

/* Values of the tracked parameters; each non-NULL one holds a reference.
 * The extra ones sit in an array of their own, allocated when the first is
 * set, so that a connection costs no more when there are none. */
struct param_set {
    const char *v[TP_BUILTIN_COUNT]; /* interned; NULL = unknown */
    const char **x;                  /* the extra ones, or NULL: all unknown */
};
/* The value of tracked parameter i in ps (interned), or NULL. */
static inline const char *param_get(const struct param_set *ps, int i)
{
    if (i < TP_BUILTIN_COUNT)
        return ps->v[i];
    return ps->x ? ps->x[i - TP_BUILTIN_COUNT] : NULL;
}
/* The slot of tracked parameter i in ps, to change with param_assign() and
 * the like (the extra array is allocated on first use). */
const char **param_slot(struct param_set *ps, int i);
/* Gives back every reference of ps, frees its extra array and clears it. */
void param_set_clear(struct param_set *ps);

#endif
