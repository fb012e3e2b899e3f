/* config_hosts.c - host=, port= and replicas= of a [databases] entry
 * (config_hosts.h).
 *
 * host= may list several hosts, as libpq and PgBouncer allow: "a,b,c".
 * port= is one port for all of them or one per host, as libpq takes it
 * ("5432" or "5432,5433,5434"); PgBouncer 1.25 takes one port only, so its
 * files always mean the same here. What sluice does with several hosts
 * (find the primary among them, or spread connections over them as
 * PgBouncer's load_balance_hosts does) is the pool's business: here they
 * are only read and checked. */
#include "config_hosts.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_keys.h"
#include "log.h"

/* The next comma-separated item of *sp (cut in place, blanks around it
 * dropped); NULL after the last one. */
static char *next_item(char **sp)
{
    char *s = *sp;
    if (!s)
        return NULL;
    char *comma = strchr(s, ',');
    if (comma) {
        *comma = '\0';
        *sp = comma + 1;
    } else {
        *sp = NULL;
    }
    return config_trim(s);
}

/* The ports of port= (as written) into ports[0..*n); false with why. */
static bool split_ports(char *text, int *ports, int max, int *n, char *why, size_t whylen)
{
    *n = 0;
    if (text[0] == '\0') {
        ports[(*n)++] = 5432;
        return true;
    }
    char *rest = text, *item;
    while ((item = next_item(&rest))) {
        int64_t v;
        char sub[128];
        if (*n == max) {
            log_format(why, whylen, "port= lists more than %d ports", max);
            return false;
        }
        if (!config_parse_int_range(item, 1, 65535, &v, sub, sizeof(sub))) {
            log_format(why, whylen, "invalid port \"%s\" in port=: %s", item, sub);
            return false;
        }
        ports[(*n)++] = (int)v;
    }
    return true;
}

bool config_split_hosts(const char *hosts, const char *ports, struct config_replica *out, int max,
                        int *n, char *why, size_t whylen)
{
    int port[CONFIG_MAX_SERVERS + 1], n_ports = 0;
    char *htext = strdup(hosts ? hosts : ""), *ptext = strdup(ports ? ports : "");
    bool ok = htext && ptext;
    if (!ok)
        log_format(why, whylen, "out of memory");
    if (max > CONFIG_MAX_SERVERS)
        max = CONFIG_MAX_SERVERS;
    *n = 0;
    ok = ok && split_ports(ptext, port, CONFIG_MAX_SERVERS + 1, &n_ports, why, whylen);
    char *rest = htext, *item;
    while (ok && (item = next_item(&rest))) {
        if (item[0] == '\0' && (*n > 0 || rest)) {
            log_format(why, whylen, "empty host name in host=\"%s\"", hosts);
            ok = false;
        } else if (*n == max) {
            log_format(why, whylen, "host= lists more than %d hosts", max);
            ok = false;
        } else if (strlen(item) >= sizeof(out[0].host)) {
            log_format(why, whylen, "host name \"%.40s...\" is too long", item);
            ok = false;
        } else {
            memcpy(out[*n].host, item, strlen(item) + 1);
            out[*n].weight = 1;
            (*n)++;
        }
    }
    if (ok && n_ports != 1 && n_ports != *n) {
        log_format(why, whylen,
                   "port= gives %d ports for %d host%s: give one port for all of them, or one "
                   "per host, in the order of host=",
                   n_ports, *n, *n == 1 ? "" : "s");
        ok = false;
    }
    for (int i = 0; ok && i < *n; i++) {
        out[i].port = port[n_ports == 1 ? 0 : i];
        for (int j = 0; j < i && ok; j++) {
            if (strcmp(out[i].host, out[j].host) == 0 && out[i].port == out[j].port) {
                log_format(why, whylen, "host %s port %d is listed twice in host=",
                           out[i].host[0] ? out[i].host : "(unix socket)", out[i].port);
                ok = false;
            }
        }
    }
    free(htext);
    free(ptext);
    if (!ok)
        *n = 0;
    return ok;
}

/* One item of replicas=: HOST, HOST:PORT, [IPV6]:PORT, each optionally
 * @WEIGHT. False with why when malformed. */
static bool parse_replica(char *item, int default_port, struct config_replica *r, char *why,
                          size_t whylen)
{
    int64_t n;
    r->port = default_port;
    r->weight = 1;
    char *at = strrchr(item, '@');
    if (at) {
        *at = '\0';
        if (!config_parse_int_range(at + 1, 0, 1000, &n, why, whylen))
            return false;
        r->weight = (int)n;
    }
    char *host = item, *port = NULL;
    if (*item == '[') {
        char *close = strchr(item, ']');
        if (!close) {
            log_format(why, whylen, "\"[\" without \"]\"");
            return false;
        }
        *close = '\0';
        host = item + 1;
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0') {
            log_format(why, whylen, "expected \":PORT\" after \"]\"");
            return false;
        }
    } else {
        char *colon = strchr(item, ':');
        if (colon && strchr(colon + 1, ':')) {
            log_format(why, whylen, "an IPv6 address needs brackets: [ADDRESS]:PORT");
            return false;
        }
        if (colon) {
            *colon = '\0';
            port = colon + 1;
        }
    }
    if (*host == '\0') {
        log_format(why, whylen, "empty host");
        return false;
    }
    if (strlen(host) >= sizeof(r->host)) {
        log_format(why, whylen, "host name too long");
        return false;
    }
    memcpy(r->host, host, strlen(host) + 1);
    if (port) {
        if (!config_parse_int_range(port, 1, 65535, &n, why, whylen))
            return false;
        r->port = (int)n;
    }
    return true;
}

/* replicas=HOST[:PORT][@WEIGHT],... of db, into db->replica[]. */
static bool parse_replicas(struct config_database *db, char *why, size_t whylen)
{
    db->n_replicas = 0;
    if (db->replicas[0] == '\0')
        return true;
    char *list = strdup(db->replicas), *rest = list, *item;
    if (!list) {
        log_format(why, whylen, "out of memory");
        return false;
    }
    bool ok = true;
    while (ok && (item = next_item(&rest))) {
        char shown[300], sub[200]; /* parse_replica() cuts item up */
        snprintf(shown, sizeof(shown), "%s", item);
        if (item[0] == '\0')
            continue; /* "a,,b" or a trailing comma: nothing there */
        if (db->n_replicas == CONFIG_MAX_REPLICAS) {
            log_format(why, whylen, "database \"%s\": more than %d replicas", db->name,
                       CONFIG_MAX_REPLICAS);
            ok = false;
        } else if (!parse_replica(item, db->port, &db->replica[db->n_replicas], sub, sizeof(sub))) {
            log_format(why, whylen, "database \"%s\": invalid replica \"%s\": %s", db->name, shown,
                       sub);
            ok = false;
        } else {
            db->n_replicas++;
        }
    }
    free(list);
    return ok;
}

bool config_parse_servers(struct config_database *db, char *why, size_t whylen)
{
    char sub[300];
    if (!config_split_hosts(db->host, db->ports, db->hosts, CONFIG_MAX_SERVERS, &db->n_hosts, sub,
                            sizeof(sub))) {
        log_format(why, whylen, "database \"%s\": %s", db->name, sub);
        return false;
    }
    db->port = db->hosts[0].port;
    if (!parse_replicas(db, why, whylen))
        return false;
    const char *lb = db->load_balance_hosts;
    if (lb[0] && strcmp(lb, "round-robin") != 0 && strcmp(lb, "disable") != 0) {
        log_format(why, whylen,
                   "invalid value \"%s\" for load_balance_hosts: expected round-robin or disable",
                   lb);
        return false;
    }
    if (db->n_hosts > 1 && db->n_hosts + db->n_replicas > CONFIG_MAX_SERVERS) {
        log_format(why, whylen, "database \"%s\": host= and replicas= name %d servers (at most %d)",
                   db->name, db->n_hosts + db->n_replicas, CONFIG_MAX_SERVERS);
        return false;
    }
    for (int i = 0; i < db->n_hosts; i++) {
        for (int j = 0; j < db->n_replicas; j++) {
            if (strcmp(db->hosts[i].host, db->replica[j].host) == 0 &&
                db->hosts[i].port == db->replica[j].port) {
                log_format(why, whylen,
                           "database \"%s\": %s:%d is in both host= and replicas= (a host of "
                           "host= that is in recovery takes reads already)",
                           db->name, db->hosts[i].host, db->hosts[i].port);
                return false;
            }
        }
    }
    return true;
}
