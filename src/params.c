/* params.c - tracked session parameters and reference-counted interning of
 * their values (params.h). */
#include "params.h"

#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hash.h"

static const char *const tracked_names[TP_BUILTIN_COUNT] = {
    "client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name",
};

/* track_extra_parameters, set once at start (tracked_params_configure()). */
#define TP_NAME_MAX 64
static char extra_names[TP_EXTRA_MAX][TP_NAME_MAX];
static int n_extra;

int tracked_param_count(void)
{
    return TP_BUILTIN_COUNT + n_extra;
}

const char *tracked_param_name(int p)
{
    if ((unsigned)p < TP_BUILTIN_COUNT)
        return tracked_names[p];
    if ((unsigned)p < (unsigned)(TP_BUILTIN_COUNT + n_extra))
        return extra_names[p - TP_BUILTIN_COUNT];
    return "?";
}

int tracked_param_lookup(const char *name)
{
    for (int i = 0; i < TP_BUILTIN_COUNT; i++)
        if (strcasecmp(tracked_names[i], name) == 0)
            return i;
    for (int i = 0; i < n_extra; i++)
        if (strcasecmp(extra_names[i], name) == 0)
            return TP_BUILTIN_COUNT + i;
    return -1;
}

/* Reads track_extra_parameters into names (*n of them); false with err. */
static bool parse_extra(const char *list, char names[TP_EXTRA_MAX][TP_NAME_MAX], int *n_out,
                        char *err, size_t errlen)
{
    int n = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ", \t");
        if (len == 0) {
            p++;
            continue;
        }
        bool ok = len < TP_NAME_MAX;
        for (size_t i = 0; ok && i < len; i++)
            ok = isalnum((unsigned char)p[i]) || p[i] == '_' || p[i] == '.';
        if (!ok) {
            snprintf(err, errlen, "track_extra_parameters: \"%.*s\" is not a parameter name",
                     (int)(len < TP_NAME_MAX ? len : TP_NAME_MAX), p);
            return false;
        }
        char name[TP_NAME_MAX];
        memcpy(name, p, len);
        name[len] = '\0';
        p += len;
        bool known = false;
        for (int i = 0; i < TP_BUILTIN_COUNT; i++)
            known = known || strcasecmp(tracked_names[i], name) == 0;
        for (int i = 0; i < n; i++)
            known = known || strcasecmp(names[i], name) == 0;
        if (known)
            continue;
        if (n == TP_EXTRA_MAX) {
            snprintf(err, errlen,
                     "track_extra_parameters: at most %d parameters besides the "
                     "built-in ones",
                     TP_EXTRA_MAX);
            return false;
        }
        memcpy(names[n++], name, len + 1);
    }
    *n_out = n;
    return true;
}

bool tracked_params_check(const char *list, char *err, size_t errlen)
{
    char names[TP_EXTRA_MAX][TP_NAME_MAX];
    int n;
    return parse_extra(list, names, &n, err, errlen);
}

bool tracked_params_configure(const char *list, char *err, size_t errlen)
{
    char names[TP_EXTRA_MAX][TP_NAME_MAX];
    int n;
    if (!parse_extra(list, names, &n, err, errlen))
        return false;
    memcpy(extra_names, names, sizeof(names));
    n_extra = n;
    return true;
}

/* One interned text: its references and hash, then the bytes. */
struct interned {
    uint32_t refs; /* changed with atomics; reaches 0 only under intern_lock */
    uint32_t hash;
    char s[];
};

/* Open addressing with linear probing; deletion shifts later entries back
 * (no tombstones), so a lookup stops at the first empty slot. */
static struct {
    struct interned **slots;
    size_t cap; /* a power of two */
    size_t n;
} tab;
static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;

static struct interned *hdr(const char *s)
{
    return (struct interned *)(s - offsetof(struct interned, s));
}

static void tab_resize(size_t ncap)
{
    struct interned **ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        abort();
    for (size_t i = 0; i < tab.cap; i++) {
        struct interned *e = tab.slots[i];
        if (!e)
            continue;
        size_t j = e->hash & (ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = e;
    }
    free(tab.slots);
    tab.slots = ns;
    tab.cap = ncap;
}

const char *param_intern(const char *s)
{
    if (!s)
        return NULL;
    uint32_t h = hash_str(s);
    pthread_mutex_lock(&intern_lock);
    if ((tab.n + 1) * 2 > tab.cap)
        tab_resize(tab.cap ? tab.cap * 2 : 256);
    size_t j = h & (tab.cap - 1);
    for (struct interned *e; (e = tab.slots[j]); j = (j + 1) & (tab.cap - 1)) {
        if (e->hash == h && strcmp(e->s, s) == 0) {
            __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&intern_lock);
            return e->s;
        }
    }
    size_t len = strlen(s);
    struct interned *e = malloc(sizeof(*e) + len + 1);
    if (!e)
        abort();
    e->refs = 1;
    e->hash = h;
    memcpy(e->s, s, len + 1);
    tab.slots[j] = e;
    tab.n++;
    pthread_mutex_unlock(&intern_lock);
    return e->s;
}

const char *param_ref(const char *s)
{
    /* The caller holds a reference, so the count cannot reach 0 meanwhile. */
    if (s)
        __atomic_add_fetch(&hdr(s)->refs, 1, __ATOMIC_RELAXED);
    return s;
}

/* Takes e out of the table (lock held). */
static void tab_remove(struct interned *e)
{
    size_t mask = tab.cap - 1;
    size_t i = e->hash & mask;
    while (tab.slots[i] != e)
        i = (i + 1) & mask;
    tab.slots[i] = NULL;
    tab.n--;
    /* Move back entries of the same probe run that the hole now hides. */
    for (size_t j = (i + 1) & mask; tab.slots[j]; j = (j + 1) & mask) {
        size_t home = tab.slots[j]->hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            tab.slots[i] = tab.slots[j];
            tab.slots[j] = NULL;
            i = j;
        }
    }
}

void param_unref(const char *s)
{
    if (!s)
        return;
    struct interned *e = hdr(s);
    pthread_mutex_lock(&intern_lock);
    if (__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        tab_remove(e);
        free(e);
    }
    pthread_mutex_unlock(&intern_lock);
}

void param_assign(const char **slot, const char *s)
{
    if (*slot == s)
        return;
    const char *old = *slot;
    *slot = param_ref(s);
    param_unref(old);
}

void param_store(const char **slot, const char *text)
{
    param_take(slot, param_intern(text));
}

void param_take(const char **slot, const char *ref)
{
    const char *old = *slot;
    *slot = ref;
    param_unref(old);
}

size_t param_intern_count(void)
{
    pthread_mutex_lock(&intern_lock);
    size_t n = tab.n;
    pthread_mutex_unlock(&intern_lock);
    return n;
}

const char **param_slot(struct param_set *ps, int i)
{
    if (i < TP_BUILTIN_COUNT)
        return &ps->v[i];
    if (!ps->x) {
        ps->x = calloc((size_t)(n_extra > 0 ? n_extra : 1), sizeof(*ps->x));
        if (!ps->x)
            abort();
    }
    return &ps->x[i - TP_BUILTIN_COUNT];
}

void param_set_clear(struct param_set *ps)
{
    for (int i = 0; i < TP_BUILTIN_COUNT; i++) {
        param_unref(ps->v[i]);
        ps->v[i] = NULL;
    }
    if (ps->x) {
        for (int i = 0; i < n_extra; i++)
            param_unref(ps->x[i]);
        free(ps->x);
        ps->x = NULL;
    }
}

void param_intern_free_all(void)
{
    pthread_mutex_lock(&intern_lock);
    for (size_t i = 0; i < tab.cap; i++)
        free(tab.slots[i]);
    free(tab.slots);
    tab.slots = NULL;
    tab.cap = tab.n = 0;
    pthread_mutex_unlock(&intern_lock);
}
