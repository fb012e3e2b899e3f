/* config_peers.c - the [peers] section (PgBouncer 1.19's peering).
 *
 * A line is ID = host=HOST [port=PORT] [pool_size=N], with PgBouncer's
 * connection-string quoting. ID is another process's peer_id (1..16383);
 * HOST is where that process takes cancel requests: a name or address, a
 * unix socket directory (/...) or an abstract socket name (@...). An entry
 * for this process's own peer_id is allowed (one [peers] section for every
 * member of a group) and never used. Every mistake stops the load with
 * file:line and what is wrong, so that a reload with a bad line keeps the
 * old config. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_keys.h"
#include "log.h"

#define WHY_LEN 256
/* PgBouncer's default port for a peer, as for its own listen_port. */
#define PEER_DEFAULT_PORT 6432

static bool pfail(char *err, size_t errlen, const char *file, int line, const char *id,
                  const char *why)
{
    log_format(err, errlen, "%s:%d: [peers] entry \"%s\": %s", file, line, id, why);
    return false;
}

/* Applies one key=value of the entry to p; false with why. */
static bool peer_set(struct config_peer *p, const char *key, const char *val, char *why,
                     size_t whylen)
{
    int64_t n;
    char sub[WHY_LEN];
    if (strcmp(key, "host") == 0) {
        if (strlen(val) >= sizeof(p->host)) {
            log_format(why, whylen, "host is longer than %zu bytes", sizeof(p->host) - 1);
            return false;
        }
        snprintf(p->host, sizeof(p->host), "%s", val);
        return true;
    }
    if (strcmp(key, "port") == 0 || strcmp(key, "pool_size") == 0) {
        bool port = key[1] == 'o' && key[2] == 'r';
        if (!config_parse_int_range(val, 1, port ? 65535 : INT_MAX, &n, sub, sizeof(sub))) {
            log_format(why, whylen, "invalid value \"%s\" for %s: %s", val, key, sub);
            return false;
        }
        if (port)
            p->port = (int)n;
        else
            p->pool_size = (int)n;
        return true;
    }
    log_format(why, whylen, "unknown parameter \"%s\" (a peer takes host, port and pool_size)",
               key);
    return false;
}

bool config_peer_parse(struct config *cfg, const char *file, int line, const char *id, char *value,
                       char *err, size_t errlen)
{
    char why[WHY_LEN], sub[WHY_LEN];
    int64_t n;
    if (!config_parse_int_range(id, 1, CONFIG_PEER_ID_MAX, &n, sub, sizeof(sub))) {
        log_format(why, sizeof(why), "invalid peer id: %s", sub);
        return pfail(err, errlen, file, line, id, why);
    }
    struct config_peer p = {(int)n, "", PEER_DEFAULT_PORT, -1, line};
    char *s = value, *key, *val;
    for (;;) {
        int r = config_next_pair(&s, &key, &val, sub, sizeof(sub));
        if (r == 0)
            break;
        if (r < 0) {
            log_format(why, sizeof(why), "syntax error: %s", sub);
            return pfail(err, errlen, file, line, id, why);
        }
        if (!peer_set(&p, key, val, why, sizeof(why)))
            return pfail(err, errlen, file, line, id, why);
    }
    if (!p.host[0])
        return pfail(err, errlen, file, line, id,
                     "host= is required (where that peer takes cancel requests)");
    /* The same id again replaces the earlier entry, as a database does. */
    for (int i = 0; i < cfg->n_peers; i++) {
        if (cfg->peers[i].id == p.id) {
            cfg->peers[i] = p;
            return true;
        }
    }
    struct config_peer *grown = realloc(cfg->peers, ((size_t)cfg->n_peers + 1) * sizeof(*grown));
    if (!grown)
        return pfail(err, errlen, file, line, id, "out of memory");
    cfg->peers = grown;
    cfg->peers[cfg->n_peers++] = p;
    return true;
}

void config_peers_free(struct config *cfg)
{
    free(cfg->peers);
    cfg->peers = NULL;
    cfg->n_peers = 0;
}

bool config_peers_copy(struct config *cfg, const struct config *src)
{
    cfg->peers = NULL;
    cfg->n_peers = 0;
    if (src->n_peers == 0)
        return true;
    cfg->peers = malloc((size_t)src->n_peers * sizeof(*cfg->peers));
    if (!cfg->peers)
        return false;
    memcpy(cfg->peers, src->peers, (size_t)src->n_peers * sizeof(*cfg->peers));
    cfg->n_peers = src->n_peers;
    return true;
}

const struct config_peer *config_find_peer(const struct config *cfg, int id)
{
    for (int i = 0; cfg && i < cfg->n_peers; i++)
        if (cfg->peers[i].id == id)
            return &cfg->peers[i];
    return NULL;
}
