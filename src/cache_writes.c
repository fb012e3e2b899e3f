/* cache_writes.c - what a client's transaction writes, as the result cache
 * (and refresh jobs, through the writes bus) learn it from the statements
 * sent (cache_int.h). */
#include <stdio.h>
#include <string.h>

#include "cache_int.h"
#include "cache_policy.h"
#include "pool.h"
#include "writes.h"

static void writes_add(struct cache_client *cc, const char *name)
{
    for (int i = 0; i < cc->n_writes; i++)
        if (!strcmp(cc->writes[i], name))
            return;
    if (cc->n_writes == CACHE_WRITES_MAX || strlen(name) >= CACHE_CATALOG_MAX_NAME) {
        cc->writes_all = true;
        return;
    }
    memcpy(cc->writes[cc->n_writes++], name, strlen(name) + 1);
}

static void writes_add_cb(void *arg, const char *name)
{
    writes_add(arg, name);
}

bool cache_writes_of_text(struct client *c, const char *sql, size_t len,
                          const struct cache_text_facts *f)
{
    if (f ? !f->may_write : !cache_policy_may_write(sql, len))
        return false; /* the common reads: no parse */
    struct cache_client *cc = cache_client_of(c);
    if (f && !f->overflow) {
        for (int i = 0; i < f->n_names; i++)
            writes_add(cc, f->names[i]);
        if (!f->named)
            cc->writes_all = true;
    } else if (!cache_policy_writes(sql, len, writes_add_cb, cc)) {
        cc->writes_all = true;
    }
    return true;
}

/* The transaction's writes are over (it ended, or its server went): told
 * to every subscriber, this cache first among them. */
void cache_writes_flush(struct client *c)
{
    struct cache_client *cc = c->cache;
    if (!cc || (!cc->n_writes && !cc->writes_all))
        return;
    struct writes_rel rels[CACHE_WRITES_MAX];
    char names[CACHE_WRITES_MAX][CACHE_CATALOG_MAX_NAME];
    for (int i = 0; i < cc->n_writes; i++)
        cache_rel_split(cc->writes[i], names[i], sizeof(names[i]), &rels[i]);
    struct writes_event ev = {.db = c->pool->db,
                              .source = WRITES_CLIENT,
                              .rels = rels,
                              .n = cc->writes_all ? 0 : cc->n_writes,
                              .all = cc->writes_all};
    cc->n_writes = 0;
    cc->writes_all = false;
    if (!cache_g_redis) {
        writes_committed(&ev);
        return;
    }
    /* Redis: the writer's answer waits for the ids this cache invalidated. */
    const uint64_t *ids;
    cache_told_begin();
    writes_committed(&ev);
    int n = cache_told_end(&ids);
    cache_tier_hold(c, ids, n);
}

void cache_rel_split(const char *name, char *buf, size_t cap, struct writes_rel *r)
{
    const char *dot = strrchr(name, '.');
    snprintf(buf, cap, "%s", name);
    r->schema = NULL;
    r->name = buf;
    if (dot && dot != name && dot[1] && (size_t)(dot - name) < cap) {
        buf[dot - name] = '\0';
        r->schema = buf;
        r->name = buf + (dot - name) + 1;
    }
}
