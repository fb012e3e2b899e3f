/* config_keys.h - the declarative table of general settings.
 *
 * Private to config.c and config_keys.c: other modules read struct config
 * (config.h) and never the table. One row per general key: its type, where
 * it lives in struct config, whether a running sluice may change it, and its
 * default, written the way SHOW CONFIG prints it.
 */
#ifndef SLUICE_CONFIG_KEYS_H
#define SLUICE_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum config_key_type {
    CONFIG_KEY_STRING = 0, /* char *, never NULL; optionally limited to a list of words */
    CONFIG_KEY_INT,        /* int, decimal, within [min, max] */
    CONFIG_KEY_INT_SIZE,   /* int holding bytes; kB/MB/GB suffixes allowed; within [min, max] */
    CONFIG_KEY_SIZE,       /* int64_t bytes; kB/MB/GB/TB suffixes allowed */
    CONFIG_KEY_BOOL,       /* bool: 1/0, on/off, yes/no, true/false */
    CONFIG_KEY_TIME,       /* int64_t microseconds; a plain number is seconds */
    CONFIG_KEY_TIME_MS,    /* int64_t microseconds; a plain number is milliseconds */
    CONFIG_KEY_POOL_MODE,  /* enum pool_mode */
    CONFIG_KEY_AUTH_TYPE,  /* enum auth_type */
    CONFIG_KEY_OCTAL,      /* int file mode, always read as octal */
};

struct config_key {
    const char *name;
    enum config_key_type type;
    size_t offset;              /* of the field in struct config */
    bool reloadable;            /* false: only read at start (RELOAD and SET leave it) */
    const char *default_value;  /* as SHOW CONFIG prints it; parsed at every load */
    int64_t min, max;           /* CONFIG_KEY_INT and CONFIG_KEY_INT_SIZE only */
    const char *const *choices; /* CONFIG_KEY_STRING: allowed words (NULL-terminated) */
    /* NULL: sluice implements the key (some code outside the config module
     * reads its field; tests/unit/test_config_keys.c checks that). Else a
     * PgBouncer key sluice does not implement, and why: a value other than
     * default_value (what sluice does anyway) is refused at load and SET. */
    const char *refused;
};

/* The table, in SHOW CONFIG order (alphabetical, as PgBouncer lists it). */
extern const struct config_key config_keys[];
extern const int config_n_keys;

/* The row for name (case-insensitive), or NULL. */
const struct config_key *config_key_find(const char *name);

/* Key i of a [users] (user) or [databases] entry: its name, the field of
 * struct config_user / config_database it is stored in (NULL for a refused
 * key, with why in refused and the one value taken in accepted). false past
 * the last. */
struct config_entry_key_view {
    const char *name, *field, *refused, *accepted;
};
bool config_entry_key_at(bool user, int i, struct config_entry_key_view *out);

enum config_set_result {
    CONFIG_SET_OK = 0,  /* value stored */
    CONFIG_SET_INVALID, /* value rejected; the reason is in why */
    CONFIG_SET_NOMEM,   /* out of memory; cfg unchanged */
};

/* Parses value for key and stores it into cfg (a string replaces, and frees,
 * the previous one). On CONFIG_SET_INVALID why holds a short reason without
 * the key or value, e.g. "not an integer". cfg is unchanged on failure. */
enum config_set_result config_key_set(struct config *cfg, const struct config_key *key,
                                      const char *value, char *why, size_t whylen);

/* The value of key in cfg, as SHOW CONFIG prints it: strings are returned as
 * they are stored in cfg, anything else is formatted into buf. */
const char *config_key_format(const struct config *cfg, const struct config_key *key, char *buf,
                              size_t buflen);

/* Shared with the [databases] and [users] parsers. Each returns false and a
 * reason in why on bad input. */
bool config_parse_int_range(const char *s, int64_t min, int64_t max, int64_t *out, char *why,
                            size_t whylen);
bool config_parse_pool_mode(const char *s, enum pool_mode *out, char *why, size_t whylen);

/* A time: a plain number is seconds; ms/s/min/h suffixes allowed. */
bool config_parse_seconds(const char *s, int64_t *usec, char *why, size_t whylen);

/* [cache] rules (config_cache.c): one line's rule added to cfg; the rules
 * freed; the rules of src copied into cfg (false: out of memory); what
 * must hold once the whole file is read (false: why). */
bool config_cache_rule_add(struct config *cfg, const char *pattern, const char *ttl, char *why,
                           size_t whylen);
void config_cache_rules_free(struct config *cfg);
bool config_cache_rules_copy(struct config *cfg, const struct config *src);
bool config_cache_check(const struct config *cfg, char *why, size_t whylen);
/* cache = off | memory | redis://HOST:PORT[/DB]; false with why. */
bool config_cache_mode_check(const char *value, char *why, size_t whylen);

/* s without its leading and trailing blanks (cut in place). config.c's,
 * for config_hosts.c too. */
char *config_trim(char *s);

/* Takes the next key=value pair of a connection string off *sp, in place
 * (PgBouncer's quoting: bare up to a blank, or in single quotes with ''
 * for a quote). 1: a pair, 0: the end, -1: a syntax error, why says it.
 * config.c's, for config_peers.c too. */
int config_next_pair(char **sp, char **key, char **value, char *why, size_t whylen);

/* [peers] (config_peers.c): one line's entry added to cfg (false with
 * "file:line: reason" in err); the entries freed; those of src copied
 * into cfg (false: out of memory). */
bool config_peer_parse(struct config *cfg, const char *file, int line, const char *id, char *value,
                       char *err, size_t errlen);
void config_peers_free(struct config *cfg);
bool config_peers_copy(struct config *cfg, const struct config *src);

/* Where each general setting was written (config_origin.c): cfg's table
 * made, a copy of src's (NULL: all unset; false when out of memory), one
 * entry set (file NULL: not from a file; false when out of memory), all
 * freed. */
bool config_origins_copy(struct config *cfg, const struct config *src);
bool config_origin_set(struct config *cfg, const struct config_key *k, const char *file, int line);
void config_origins_free(struct config *cfg);
/* value as it may be quoted in an error message: a URL's password
 * ("redis://user:SECRET@host") becomes "***", so that a refused setting
 * does not put a credential in the log or the console's answer. Returns
 * value itself or buf (len bytes). */
const char *config_redact(const char *value, char *buf, size_t len);

#endif
