/* cache_catalog.c - per-database relation facts for the result cache
 * (cache_catalog.h). */
#include "cache_catalog.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* How many names a database keeps (more distinct names: the rest are
 * not cached), and how long an absent name or a failed lookup waits. */
#define CATALOG_MAX_NAMES 4096
#define CATALOG_RETRY     (10 * 1000000LL)

enum cat_state {
    CS_QUEUED = 0, /* waiting for a lookup */
    CS_ASKED,      /* a lookup is running */
    CS_KNOWN,      /* answer holds pg_class's answer */
};

struct cat_entry {
    char name[CACHE_CATALOG_MAX_NAME];
    enum cat_state state;
    bool requeued; /* KNOWN, but queued to be asked again (answer still used) */
    bool has;      /* an answer is there (first lookup done) */
    bool stale;    /* DDL since: the answer is not used until asked again */
    bool redo;     /* DDL while a lookup ran: its answer may be older, ask again */
    enum cache_catalog_answer answer;
    int64_t asked_at, retry_at;
    struct cache_catalog_rel rel;
};

struct cache_catalog {
    pthread_mutex_t lock;
    struct cat_entry *e; /* open addressing, cap a power of two */
    uint32_t cap, n;
    uint32_t queued;
};

const char *cache_catalog_answer_str(enum cache_catalog_answer a)
{
    static const char *const names[] = {"unknown", "absent", "no", "yes"};
    return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : "?";
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    /* A byte no name has after each part: "ab"+"c" != "a"+"bc". */
    return (h ^ 0xff) * 1099511628211ull;
}

uint64_t cache_table_id(const char *dbname, const char *schema, const char *relname)
{
    /* FNV-1a, 64 bits: stable across processes and instances. */
    return fnv(fnv(fnv(14695981039346656037ull, dbname), schema), relname);
}

static void (*g_note)(uint64_t id, const char *dbname, const char *name);

void cache_catalog_set_note(void (*fn)(uint64_t id, const char *dbname, const char *name))
{
    g_note = fn;
}

static struct cache_catalog *catalog_of(struct database *db)
{
    struct cache_catalog *cc = atomic_load_explicit(&db->catalog, memory_order_acquire);
    if (cc)
        return cc;
    cc = calloc(1, sizeof(*cc));
    if (!cc)
        abort();
    pthread_mutex_init(&cc->lock, NULL);
    struct cache_catalog *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(&db->catalog, &none, cc, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        pthread_mutex_destroy(&cc->lock);
        free(cc);
        return none;
    }
    return cc;
}

/* The entry of name, or where it goes (e->name[0] == 0); NULL when full
 * or name too long. Lock held. */
static struct cat_entry *slot(struct cache_catalog *cc, const char *name)
{
    if (strlen(name) >= CACHE_CATALOG_MAX_NAME)
        return NULL;
    if (cc->n * 2 >= cc->cap && cc->cap < 2 * CATALOG_MAX_NAMES) {
        uint32_t ncap = cc->cap ? cc->cap * 2 : 64;
        struct cat_entry *ne = calloc(ncap, sizeof(*ne));
        if (!ne)
            abort();
        for (uint32_t i = 0; i < cc->cap; i++) {
            if (!cc->e[i].name[0])
                continue;
            uint32_t k = hash_str(cc->e[i].name) & (ncap - 1);
            while (ne[k].name[0])
                k = (k + 1) & (ncap - 1);
            ne[k] = cc->e[i];
        }
        free(cc->e);
        cc->e = ne;
        cc->cap = ncap;
    }
    for (uint32_t k = hash_str(name) & (cc->cap - 1), i = 0; i < cc->cap;
         k = (k + 1) & (cc->cap - 1), i++) {
        if (!cc->e[k].name[0])
            return cc->n < CATALOG_MAX_NAMES ? &cc->e[k] : NULL;
        if (!strcmp(cc->e[k].name, name))
            return &cc->e[k];
    }
    return NULL;
}

static void queue(struct cache_catalog *cc, struct cat_entry *e)
{
    e->state = CS_QUEUED;
    cc->queued++;
}

enum cache_catalog_answer cache_catalog_get(struct database *db, const char *name, int64_t now,
                                            struct cache_catalog_rel *out)
{
    struct cache_catalog *cc = catalog_of(db);
    enum cache_catalog_answer a = CCAT_UNKNOWN;
    pthread_mutex_lock(&cc->lock);
    struct cat_entry *e = slot(cc, name);
    if (!e) {
        a = CCAT_NO; /* too many names, or too long: not cached */
    } else if (!e->name[0]) {
        memcpy(e->name, name, strlen(name) + 1);
        cc->n++;
        queue(cc, e);
    } else {
        if (e->has && !e->stale) {
            a = e->answer;
            if (a == CCAT_YES || a == CCAT_NO)
                *out = e->rel;
        }
        /* Asked again when its answer is old (still used meanwhile), or
         * when a failed or lost lookup's time is up. */
        bool old = e->state == CS_KNOWN && now - e->asked_at >= CACHE_CATALOG_REFRESH;
        bool retry = e->state != CS_QUEUED && (!e->has || e->stale) && now >= e->retry_at;
        if (old || retry)
            queue(cc, e);
    }
    pthread_mutex_unlock(&cc->lock);
    return a;
}

bool cache_catalog_pending(struct database *db)
{
    struct cache_catalog *cc = atomic_load_explicit(&db->catalog, memory_order_acquire);
    if (!cc)
        return false;
    pthread_mutex_lock(&cc->lock);
    bool any = cc->queued > 0;
    pthread_mutex_unlock(&cc->lock);
    return any;
}

int cache_catalog_take(struct database *db, char names[][CACHE_CATALOG_MAX_NAME], int64_t now)
{
    struct cache_catalog *cc = catalog_of(db);
    int n = 0;
    pthread_mutex_lock(&cc->lock);
    for (uint32_t i = 0; i < cc->cap && n < CACHE_CATALOG_BATCH && cc->queued > 0; i++) {
        struct cat_entry *e = &cc->e[i];
        if (!e->name[0] || e->state != CS_QUEUED)
            continue;
        e->state = CS_ASKED;
        e->retry_at = now + CATALOG_RETRY; /* a lookup that never answers */
        cc->queued--;
        memcpy(names[n++], e->name, strlen(e->name) + 1);
    }
    pthread_mutex_unlock(&cc->lock);
    return n;
}

/* The id of "schema.name"; false when it is not that. */
static bool qualified_id(const char *dbname, const char *p, size_t len, uint64_t *id)
{
    char name[CACHE_CATALOG_MAX_NAME];
    const char *dot = memchr(p, '.', len);
    if (!dot || dot == p || (size_t)(dot - p) + 1 == len || len >= sizeof(name))
        return false;
    memcpy(name, p, len);
    name[len] = '\0';
    name[dot - p] = '\0';
    *id = cache_table_id(dbname, name, name + (dot - p) + 1);
    if (g_note) {
        name[dot - p] = '.';
        g_note(*id, dbname, name);
    }
    return true;
}

/* Fills rel from the answer's text; false when it does not fit (its
 * schemas are kept when they do: a write names one id per schema). */
static bool rel_of(struct cache_catalog_rel *rel, const char *dbname, const char *schemas,
                   const char *related)
{
    size_t sl = strlen(schemas);
    rel->n_ids = 0;
    rel->schemas[0] = '\0';
    if (sl >= sizeof(rel->schemas))
        return false;
    memcpy(rel->schemas, schemas, sl + 1);
    for (const char *p = related; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (rel->n_ids == CACHE_CATALOG_MAX_IDS ||
            !qualified_id(dbname, p, len, &rel->ids[rel->n_ids])) {
            rel->n_ids = 0;
            return false;
        }
        rel->n_ids++;
        p += len + (end ? 1 : 0);
    }
    return rel->n_ids > 0;
}

void cache_catalog_store(struct database *db, const char *name, bool failed, bool found, bool ok,
                         const char *schemas, const char *related, int64_t now)
{
    struct cache_catalog *cc = catalog_of(db);
    pthread_mutex_lock(&cc->lock);
    struct cat_entry *e = slot(cc, name);
    if (e && e->name[0] && e->state == CS_ASKED && e->redo) {
        e->redo = false;
        queue(cc, e);
    } else if (e && e->name[0] && e->state == CS_ASKED) {
        e->state = CS_KNOWN;
        e->asked_at = now;
        if (failed) {
            e->retry_at = now + CATALOG_RETRY;
        } else {
            e->has = true;
            e->stale = false;
            bool fits =
                found && rel_of(&e->rel, db->name, schemas ? schemas : "", related ? related : "");
            e->answer = !found ? CCAT_ABSENT : ok && fits ? CCAT_YES : CCAT_NO;
            if (e->answer == CCAT_ABSENT)
                e->retry_at = now + CATALOG_RETRY;
        }
    }
    pthread_mutex_unlock(&cc->lock);
}

void cache_catalog_forget(struct database *db)
{
    struct cache_catalog *cc = atomic_load_explicit(&db->catalog, memory_order_acquire);
    if (!cc)
        return;
    pthread_mutex_lock(&cc->lock);
    for (uint32_t i = 0; i < cc->cap; i++) {
        struct cat_entry *e = &cc->e[i];
        if (!e->name[0])
            continue;
        e->stale = true;
        e->retry_at = 0;
        if (e->state == CS_KNOWN)
            queue(cc, e);
        else if (e->state == CS_ASKED)
            e->redo = true;
    }
    pthread_mutex_unlock(&cc->lock);
}

void cache_catalog_free(struct database *db)
{
    struct cache_catalog *cc = atomic_load_explicit(&db->catalog, memory_order_acquire);
    if (!cc)
        return;
    pthread_mutex_destroy(&cc->lock);
    free(cc->e);
    free(cc);
    atomic_store_explicit(&db->catalog, NULL, memory_order_release);
}
