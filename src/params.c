/* params.c - the session parameters sluice keeps equal between a client and
 * whichever server it gets, and the string interning that makes comparing
 * them a pointer comparison. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conn.h"

static const char *const tracked_names[TP_COUNT] = {
    "client_encoding",  "DateStyle", "TimeZone", "IntervalStyle", "standard_conforming_strings",
    "application_name",
};

const char *tracked_param_name(enum tracked_param p)
{
    return (unsigned)p < TP_COUNT ? tracked_names[p] : "?";
}

int tracked_param_lookup(const char *name)
{
    for (int i = 0; i < TP_COUNT; i++)
        if (strcasecmp(tracked_names[i], name) == 0)
            return i;
    return -1;
}

/* Open-addressing set of strings. Values are few and long-lived (encodings,
 * time zones, application names); they are kept for the life of the process. */
struct intern_set {
    char **slots;
    size_t cap;
    size_t n;
};
static struct intern_set interned;
static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void intern_grow(void)
{
    size_t ncap = interned.cap ? interned.cap * 2 : 256;
    char **ns = calloc(ncap, sizeof(char *));
    if (!ns)
        abort();
    for (size_t i = 0; i < interned.cap; i++) {
        char *s = interned.slots[i];
        if (!s)
            continue;
        size_t j = hash_str(s) & (ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = s;
    }
    free(interned.slots);
    interned.slots = ns;
    interned.cap = ncap;
}

const char *param_intern(const char *s)
{
    if (!s)
        return NULL;
    pthread_mutex_lock(&intern_lock);
    if ((interned.n + 1) * 2 > interned.cap)
        intern_grow();
    size_t j = hash_str(s) & (interned.cap - 1);
    while (interned.slots[j]) {
        if (strcmp(interned.slots[j], s) == 0) {
            const char *r = interned.slots[j];
            pthread_mutex_unlock(&intern_lock);
            return r;
        }
        j = (j + 1) & (interned.cap - 1);
    }
    char *d = strdup(s);
    if (!d)
        abort();
    interned.slots[j] = d;
    interned.n++;
    pthread_mutex_unlock(&intern_lock);
    return d;
}

void param_intern_free_all(void)
{
    pthread_mutex_lock(&intern_lock);
    for (size_t i = 0; i < interned.cap; i++)
        free(interned.slots[i]);
    free(interned.slots);
    interned.slots = NULL;
    interned.cap = interned.n = 0;
    pthread_mutex_unlock(&intern_lock);
}
