/* cache_names.c - the names of the result cache's table ids, for SHOW
 * CACHE_TABLES: noted when the catalog answers for a relation and when a
 * write or CACHE CLEAR invalidates one (cache_int.h). Bounded: the first
 * NAMES_MAX ids keep their names. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cache_catalog.h"
#include "cache_int.h"

#define NAMES_MAX 4096

static struct {
    pthread_mutex_t lock;
    uint32_t n;
    struct {
        uint64_t id;
        char db[64];
        char name[CACHE_CATALOG_MAX_NAME];
    } v[NAMES_MAX];
} * g_names;

/* id's slot, or the free one it would take; NAMES_MAX when full. Lock held. */
static uint32_t name_slot(uint64_t id)
{
    uint32_t i = (uint32_t)(id % NAMES_MAX);
    for (uint32_t k = 0; k < NAMES_MAX; k++, i = (i + 1) % NAMES_MAX)
        if (!g_names->v[i].id || g_names->v[i].id == id)
            return i;
    return NAMES_MAX;
}

/* Ids this thread noted already (direct-mapped; a name once noted stays):
 * a write to the same few tables takes no global lock each time. */
static _Thread_local uint64_t tl_noted[64];

void cache_names_note(uint64_t id, const char *db, const char *name)
{
    if (!g_names || !name[0] || tl_noted[id & 63] == id)
        return;
    tl_noted[id & 63] = id;
    pthread_mutex_lock(&g_names->lock);
    uint32_t i = name_slot(id);
    if (i < NAMES_MAX && !g_names->v[i].id) {
        g_names->v[i].id = id;
        snprintf(g_names->v[i].db, sizeof(g_names->v[i].db), "%s", db);
        snprintf(g_names->v[i].name, sizeof(g_names->v[i].name), "%s", name);
        g_names->n++;
    }
    pthread_mutex_unlock(&g_names->lock);
}

void cache_names_thread_done(void)
{
    memset(tl_noted, 0, sizeof(tl_noted));
}

void cache_names_init(void)
{
    g_names = calloc(1, sizeof(*g_names));
    if (!g_names)
        abort();
    pthread_mutex_init(&g_names->lock, NULL);
    cache_catalog_set_note(cache_names_note);
}

void cache_names_free(void)
{
    if (!g_names)
        return;
    cache_catalog_set_note(NULL);
    pthread_mutex_destroy(&g_names->lock);
    free(g_names);
    g_names = NULL;
}

struct tables_each_arg {
    void (*cb)(const char *, const char *, uint64_t, uint64_t, void *);
    void *arg;
};

static void one_table(uint64_t id, uint64_t gen, uint64_t dropped, void *arg)
{
    struct tables_each_arg *a = arg;
    /* g_names->lock is taken inside the store's table lock only here. */
    pthread_mutex_lock(&g_names->lock);
    uint32_t i = name_slot(id);
    char db[64] = "", name[CACHE_CATALOG_MAX_NAME] = "";
    if (i < NAMES_MAX && g_names->v[i].id == id) {
        memcpy(db, g_names->v[i].db, sizeof(db));
        memcpy(name, g_names->v[i].name, sizeof(name));
    }
    pthread_mutex_unlock(&g_names->lock);
    if (name[0] && gen > 0)
        a->cb(db, name, gen, dropped, a->arg);
}

void cache_tables_each(void (*cb)(const char *db, const char *table, uint64_t invalidations,
                                  uint64_t dropped, void *arg),
                       void *arg)
{
    if (!cache_g_store)
        return;
    struct tables_each_arg a = {cb, arg};
    cache_store_tables_each(cache_g_store, one_table, &a);
}
