/* config.c - reading pgbouncer.ini-compatible files into an immutable struct config.
 *
 * The ini reader is our own, not libinih: PgBouncer's format needs things
 * the Debian libinih (55) does not give. Its handler gets no line numbers
 * (INI_HANDLER_LINENO is 0 in the build), its lines are cut at 200 bytes (a
 * long connect string or auth_query would be split), it treats ';' inside a
 * line as a comment (PgBouncer does not: a password may contain ';'), and it
 * knows neither %include nor PgBouncer's quoted database names. The format
 * is small enough that a line reader is shorter than the workarounds.
 *
 * Format, as PgBouncer reads it:
 *   [section]              pgbouncer and sluice (one namespace), databases,
 *                          users, jobs (config_jobs.c), cache
 *                          (config_cache.c), peers (config_peers.c)
 *   key = value            whitespace around key and value is dropped; the
 *                          value runs to the end of the line, unquoted
 *   "quoted name" = value  database and user names with other characters
 *   ; comment, # comment   only at the start of a line
 *   %include path          relative paths are relative to the current
 *                          directory (as in PgBouncer), not to the file
 * An included file continues in the section in effect at the %include line,
 * and a section it opens stays open after it, since the text is read as if
 * it were pasted in place.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config_hosts.h"
#include "config_jobs.h"
#include "config_keys.h"
#include "log.h"

/* A config file is a few kB; the cap keeps a mistaken %include of a big
 * file (a log, a database dump) from eating memory. */
#define CONFIG_MAX_FILE_SIZE (8 * 1024 * 1024)
/* Deep enough for any real layout, and stops a file that includes itself. */
#define CONFIG_MAX_INCLUDE_DEPTH 16
/* Room for the reason part of an error message. */
#define WHY_LEN 256

enum section {
    SECTION_NONE = 0,  /* before the first [section] line */
    SECTION_GENERAL,   /* [pgbouncer] or [sluice] */
    SECTION_DATABASES, /* [databases] */
    SECTION_USERS,     /* [users] */
    SECTION_CACHE,     /* [cache]: result cache rules (config_cache.c) */
    SECTION_JOBS,      /* [jobs]: refresh jobs, one per line (config_jobs.c) */
    SECTION_PEERS,     /* [peers]: where cancels for other processes go (config_peers.c) */
};

/* State of one config_load*() call, shared by every included file. */
struct loader {
    struct config *cfg; /* being filled */
    enum section section;
    int depth; /* of %include nesting */
    char *err;
    size_t errlen;
    struct config_problems *problems; /* NULL: stop at the first problem */
};

static bool fail(struct loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes the message into the caller's err and returns false, so that a
 * parser can `return fail(...)`. The reader then stops, or, collecting
 * problems, files the message (see go_on()) and reads on. */
static bool fail(struct loader *ld, const char *fmt, ...)
{
    if (ld->err && ld->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err, ld->errlen, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* After a failed step: with problems collected, files ld->err and returns
 * true (read on); else false (stop with ld->err). */
static bool go_on(struct loader *ld)
{
    if (!ld->problems)
        return false;
    config_problems_add(ld->problems, "%s", ld->err);
    return true;
}

char *config_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* ---- [databases] and [users] entries ---------------------------------- */

/* Every char * of struct config_database; all are owned and never NULL in
 * a loaded config. */
static const size_t database_strings[] = {
    offsetof(struct config_database, name),
    offsetof(struct config_database, host),
    offsetof(struct config_database, ports),
    offsetof(struct config_database, load_balance_hosts),
    offsetof(struct config_database, dbname),
    offsetof(struct config_database, user),
    offsetof(struct config_database, password),
    offsetof(struct config_database, auth_user),
    offsetof(struct config_database, auth_query),
    offsetof(struct config_database, auth_dbname),
    offsetof(struct config_database, connect_query),
    offsetof(struct config_database, application_name),
    offsetof(struct config_database, client_encoding),
    offsetof(struct config_database, datestyle),
    offsetof(struct config_database, timezone),
    offsetof(struct config_database, replicas),
    offsetof(struct config_database, file),
};
#define N_DATABASE_STRINGS (sizeof(database_strings) / sizeof(database_strings[0]))

static char **string_at(void *base, size_t offset)
{
    return (char **)(void *)((char *)base + offset);
}

static void database_clear(struct config_database *db)
{
    for (size_t i = 0; i < N_DATABASE_STRINGS; i++) {
        char **s = string_at(db, database_strings[i]);
        free(*s);
        *s = NULL;
    }
}

/* A fresh entry: integers "not set" (-1), strings "". False when out of
 * memory; db is then safe to database_clear(). */
static bool database_init(struct config_database *db, const char *name, const char *file, int line)
{
    memset(db, 0, sizeof(*db));
    db->port = 5432;
    db->pool_size = -1;
    db->min_pool_size = -1;
    db->reserve_pool = -1;
    db->max_db_connections = -1;
    db->max_db_client_connections = -1;
    db->server_lifetime = -1;
    db->query_wait_timeout = -1;
    db->pool_mode = POOL_MODE_UNSET;
    db->read_write_split = -1;
    db->line = line;
    bool ok = true;
    for (size_t i = 0; i < N_DATABASE_STRINGS; i++) {
        size_t off = database_strings[i];
        const char *v = off == offsetof(struct config_database, name)   ? name
                        : off == offsetof(struct config_database, file) ? file
                                                                        : "";
        *string_at(db, off) = strdup(v);
        ok = ok && *string_at(db, off) != NULL;
    }
    return ok;
}

/* Deep copy. False when out of memory; dst is then safe to database_clear(). */
static bool database_copy(struct config_database *dst, const struct config_database *src)
{
    *dst = *src;
    for (size_t i = 0; i < N_DATABASE_STRINGS; i++)
        *string_at(dst, database_strings[i]) = NULL;
    bool ok = true;
    for (size_t i = 0; i < N_DATABASE_STRINGS; i++) {
        char **d = string_at(dst, database_strings[i]);
        *d = strdup(*string_at((void *)src, database_strings[i]));
        ok = ok && *d != NULL;
    }
    return ok;
}

enum entry_field_kind {
    ENTRY_STRING = 0, /* char *, replaced */
    ENTRY_INT,        /* int within [min, max] */
    ENTRY_POOL_MODE,  /* enum pool_mode */
    ENTRY_BOOL,       /* int 0 or 1 (-1 until set) */
    ENTRY_PORTS,      /* string: one port, or ports separated by commas, each in [min, max] */
    ENTRY_TIME,       /* int64_t microseconds (a plain number is seconds); -1 until set */
    ENTRY_REFUSED,    /* a PgBouncer key sluice does not implement: only `accepted` loads */
};

/* One key of a [databases] connection string or a [users] value. */
struct entry_field {
    const char *name; /* case-sensitive, as in PgBouncer */
    enum entry_field_kind kind;
    size_t offset;
    int64_t min, max;
    const char *accepted; /* ENTRY_REFUSED: the one value taken (what sluice does anyway) */
    const char *why;      /* ENTRY_REFUSED: why sluice does not implement the key */
    const char *field;    /* the struct's field it is stored in (tests/unit/test_config_keys.c) */
};

/* clang-format off */
#define DB_STR(f)              {#f, ENTRY_STRING, offsetof(struct config_database, f), 0, 0, NULL, NULL, #f}
#define DB_INT(key, f, lo, hi) {key, ENTRY_INT, offsetof(struct config_database, f), lo, hi, NULL, NULL, #f}
#define DB_TIME(f)             {#f, ENTRY_TIME, offsetof(struct config_database, f), 0, 0, NULL, NULL, #f}
#define USER_INT(f)            {#f, ENTRY_INT, offsetof(struct config_user, f), 0, INT_MAX, NULL, NULL, #f}
#define USER_TIME(f)           {#f, ENTRY_TIME, offsetof(struct config_user, f), 0, 0, NULL, NULL, #f}
/* clang-format on */

static const struct entry_field database_fields[] = {
    DB_STR(host),
    /* field: what code reads, once config_hosts.c has split them */
    {"port", ENTRY_PORTS, offsetof(struct config_database, ports), 1, 65535, NULL, NULL, "port"},
    DB_STR(dbname),
    DB_STR(user),
    DB_STR(password),
    DB_STR(auth_user),
    DB_STR(auth_query),
    DB_STR(auth_dbname),
    DB_INT("pool_size", pool_size, 0, INT_MAX),
    DB_INT("min_pool_size", min_pool_size, 0, INT_MAX),
    DB_INT("reserve_pool", reserve_pool, 0, INT_MAX),
    /* the newer PgBouncer spelling of reserve_pool */
    DB_INT("reserve_pool_size", reserve_pool, 0, INT_MAX),
    {"pool_mode", ENTRY_POOL_MODE, offsetof(struct config_database, pool_mode), 0, 0, NULL, NULL,
     "pool_mode"},
    DB_INT("max_db_connections", max_db_connections, 0, INT_MAX),
    DB_INT("max_db_client_connections", max_db_client_connections, 0, INT_MAX),
    DB_TIME(server_lifetime),
    DB_TIME(query_wait_timeout),
    DB_STR(connect_query),
    DB_STR(application_name),
    DB_STR(client_encoding),
    DB_STR(datestyle),
    DB_STR(timezone),
    {"replicas", ENTRY_STRING, offsetof(struct config_database, replicas), 0, 0, NULL, NULL,
     "replica"},
    DB_STR(load_balance_hosts),
    {"read_write_split", ENTRY_BOOL, offsetof(struct config_database, read_write_split), 0, 0, NULL,
     NULL, "read_write_split"},
    /* PgBouncer checks the server's in_hot_standby and
     * default_transaction_read_only once, after its login. */
    {"target_session_attrs", ENTRY_REFUSED, 0, 0, 0, "any",
     "sluice accepts any server for host=; with several hosts and read_write_split on, it finds "
     "the primary itself",
     NULL},
};

static const struct entry_field user_fields[] = {
    {"pool_mode", ENTRY_POOL_MODE, offsetof(struct config_user, pool_mode), 0, 0, NULL, NULL,
     "pool_mode"},
    USER_INT(max_user_connections),
    USER_INT(max_user_client_connections),
    USER_INT(pool_size),
    USER_INT(reserve_pool_size),
    USER_TIME(query_timeout),
    USER_TIME(query_wait_timeout),
    USER_TIME(idle_transaction_timeout),
    USER_TIME(transaction_timeout),
    USER_TIME(client_idle_timeout),
};

/* What a [databases] or [users] line is about, for messages. */
struct entry_kind {
    const char *what; /* "database" or "user" */
    const struct entry_field *fields;
    size_t n_fields;
};

static const struct entry_kind database_kind = {
    "database",
    database_fields,
    sizeof(database_fields) / sizeof(database_fields[0]),
};

static const struct entry_kind user_kind = {
    "user",
    user_fields,
    sizeof(user_fields) / sizeof(user_fields[0]),
};

bool config_entry_key_at(bool user, int i, struct config_entry_key_view *out)
{
    const struct entry_kind *kind = user ? &user_kind : &database_kind;
    if (i < 0 || (size_t)i >= kind->n_fields)
        return false;
    const struct entry_field *f = &kind->fields[i];
    out->name = f->name;
    out->field = f->field;
    out->refused = f->kind == ENTRY_REFUSED ? f->why : NULL;
    out->accepted = f->accepted;
    return true;
}

/* Takes the next key=value pair off *sp, in place (the string is cut and
 * unquoted where it lies). Values are PgBouncer's: unquoted up to the next
 * whitespace, or in single quotes with '' for a quote; an empty value is an
 * error, as in PgBouncer. Returns 1 for a pair, 0 at the end, -1 with why
 * on a syntax error. */
int config_next_pair(char **sp, char **key, char **value, char *why, size_t whylen)
{
    char *s = *sp;

    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0')
        return 0;
    *key = s;
    while (*s && *s != '=' && !isspace((unsigned char)*s))
        s++;
    char *key_end = s;
    while (isspace((unsigned char)*s))
        s++;
    if (key_end == *key) {
        log_format(why, whylen, "missing parameter name before \"=\"");
        return -1;
    }
    if (*s != '=') {
        log_format(why, whylen, "expected \"=\" after \"%.*s\"", (int)(key_end - *key), *key);
        return -1;
    }
    *key_end = '\0';
    s++;
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\'') {
        char *w = s, *r = s + 1;
        *value = w;
        for (;;) {
            if (*r == '\0') {
                log_format(why, whylen, "unterminated quoted value for \"%s\"", *key);
                return -1;
            }
            if (*r == '\'') {
                if (r[1] != '\'')
                    break;
                r++;
            }
            *w++ = *r++;
        }
        r++; /* the closing quote */
        if (*r != '\0' && !isspace((unsigned char)*r)) {
            log_format(why, whylen, "expected a space after the quoted value of \"%s\"", *key);
            return -1;
        }
        /* w is behind r (the opening quote was dropped), so this cuts the
         * value without touching what is still to be read. */
        *w = '\0';
        s = r;
    } else {
        *value = s;
        while (*s && !isspace((unsigned char)*s))
            s++;
        if (*s)
            *s++ = '\0';
    }
    if (**value == '\0') {
        log_format(why, whylen, "empty value for \"%s\"", *key);
        return -1;
    }
    *sp = s;
    return 1;
}

/* port=: one port, or several separated by commas (one per host). */
static bool ports_valid(const char *val, int64_t min, int64_t max, char *why, size_t whylen)
{
    char item[32], sub[WHY_LEN];
    int64_t n;
    for (const char *p = val;;) {
        size_t len = strcspn(p, ",");
        snprintf(item, sizeof(item), "%.*s", (int)(len < sizeof(item) ? len : sizeof(item) - 1), p);
        if (!config_parse_int_range(config_trim(item), min, max, &n, sub, sizeof(sub))) {
            if (p == val && !p[len])
                log_format(why, whylen, "%s", sub);
            else
                log_format(why, whylen, "port \"%s\": %s", config_trim(item), sub);
            return false;
        }
        if (!p[len])
            return true;
        p += len + 1;
    }
}

/* Applies "k=v k=v" from a [databases] or [users] line to the entry at
 * base. A later duplicate key wins. */
static bool apply_pairs(struct loader *ld, const struct entry_kind *kind, const char *file,
                        int line, const char *name, char *value, void *base)
{
    char why[WHY_LEN];
    char *p = value, *key, *val;

    for (;;) {
        int r = config_next_pair(&p, &key, &val, why, sizeof(why));
        if (r == 0)
            return true;
        if (r < 0)
            return fail(ld, "%s:%d: syntax error in %s \"%s\": %s", file, line, kind->what, name,
                        why);

        const struct entry_field *f = NULL;
        for (size_t i = 0; i < kind->n_fields && !f; i++)
            if (strcmp(kind->fields[i].name, key) == 0)
                f = &kind->fields[i];
        if (!f)
            return fail(ld, "%s:%d: unknown parameter \"%s\" for %s \"%s\"", file, line, key,
                        kind->what, name);

        int64_t n;
        enum pool_mode pm;
        switch (f->kind) {
        case ENTRY_PORTS: /* checked here, kept as written, split with host= */
        case ENTRY_STRING: {
            if (f->kind == ENTRY_PORTS && !ports_valid(val, f->min, f->max, why, sizeof(why)))
                return fail(ld, "%s:%d: invalid value \"%s\" for %s: %s", file, line, val, key,
                            why);
            char *copy = strdup(val);
            if (!copy)
                return fail(ld, "%s:%d: out of memory", file, line);
            char **dst = string_at(base, f->offset);
            free(*dst);
            *dst = copy;
            break;
        }
        case ENTRY_INT:
            if (!config_parse_int_range(val, f->min, f->max, &n, why, sizeof(why)))
                return fail(ld, "%s:%d: invalid value \"%s\" for %s: %s", file, line, val, key,
                            why);
            *(int *)(void *)((char *)base + f->offset) = (int)n;
            break;
        case ENTRY_POOL_MODE:
            if (!config_parse_pool_mode(val, &pm, why, sizeof(why)))
                return fail(ld, "%s:%d: invalid value \"%s\" for %s: %s", file, line, val, key,
                            why);
            *(enum pool_mode *)(void *)((char *)base + f->offset) = pm;
            break;
        case ENTRY_BOOL: {
            bool b;
            if (!config_parse_bool(val, &b))
                return fail(ld, "%s:%d: invalid value \"%s\" for %s: not a boolean", file, line,
                            val, key);
            *(int *)(void *)((char *)base + f->offset) = b;
            break;
        }
        case ENTRY_TIME:
            /* -1: not set, as PgBouncer writes it */
            if (strcmp(val, "-1") == 0)
                n = -1;
            else if (!config_parse_time(val, &n))
                return fail(ld, "%s:%d: invalid value \"%s\" for %s: not a time", file, line, val,
                            key);
            *(int64_t *)(void *)((char *)base + f->offset) = n;
            break;
        case ENTRY_REFUSED:
            if (strcasecmp(val, f->accepted) != 0)
                return fail(ld,
                            "%s:%d: invalid value \"%s\" for %s of %s \"%s\": not supported by "
                            "sluice (%s); only %s is accepted",
                            file, line, val, key, kind->what, name, f->why, f->accepted);
            break;
        }
    }
}

static bool parse_database(struct loader *ld, const char *file, int line, const char *name,
                           char *value)
{
    struct config *cfg = ld->cfg;
    struct config_database db;

    if (*name == '\0')
        return fail(ld, "%s:%d: empty database name", file, line);
    /* Clients reach the admin console through these names ("pgbouncer", as
     * in PgBouncer, and "sluice"): an entry of that name would never be
     * reached, and its clients would get the console instead. */
    if (strcmp(name, "pgbouncer") == 0 || strcmp(name, "sluice") == 0)
        return fail(ld, "%s:%d: database name \"%s\" is reserved for the admin console", file, line,
                    name);
    if (!database_init(&db, name, file, line)) {
        database_clear(&db);
        return fail(ld, "%s:%d: out of memory", file, line);
    }
    char why[WHY_LEN];
    if (!apply_pairs(ld, &database_kind, file, line, name, value, &db)) {
        database_clear(&db);
        return false;
    }
    if (!config_parse_servers(&db, why, sizeof(why))) {
        database_clear(&db);
        return fail(ld, "%s:%d: %s", file, line, why);
    }
    /* A name defined again replaces the earlier entry in its place. */
    for (int i = 0; i < cfg->n_databases; i++) {
        if (strcmp(cfg->databases[i].name, name) == 0) {
            database_clear(&cfg->databases[i]);
            cfg->databases[i] = db;
            return true;
        }
    }
    struct config_database *grown =
        realloc(cfg->databases, ((size_t)cfg->n_databases + 1) * sizeof(*grown));
    if (!grown) {
        database_clear(&db);
        return fail(ld, "%s:%d: out of memory", file, line);
    }
    cfg->databases = grown;
    cfg->databases[cfg->n_databases++] = db;
    return true;
}

static bool parse_user(struct loader *ld, const char *file, int line, const char *name, char *value)
{
    struct config *cfg = ld->cfg;
    struct config_user user = {NULL, POOL_MODE_UNSET, -1, -1, -1, -1, -1, -1, -1, -1, -1};

    if (*name == '\0')
        return fail(ld, "%s:%d: empty user name", file, line);
    if (!apply_pairs(ld, &user_kind, file, line, name, value, &user))
        return false;
    user.name = strdup(name);
    if (!user.name)
        return fail(ld, "%s:%d: out of memory", file, line);
    for (int i = 0; i < cfg->n_users; i++) {
        if (strcmp(cfg->users[i].name, name) == 0) {
            free(cfg->users[i].name);
            cfg->users[i] = user;
            return true;
        }
    }
    struct config_user *grown = realloc(cfg->users, ((size_t)cfg->n_users + 1) * sizeof(*grown));
    if (!grown) {
        free(user.name);
        return fail(ld, "%s:%d: out of memory", file, line);
    }
    cfg->users = grown;
    cfg->users[cfg->n_users++] = user;
    return true;
}

/* ---- general settings --------------------------------------------------- */

/* Checks beyond the key table's (a type, bounds, words) for key k just set
 * in cfg; false with why. */
static bool key_value_valid(const struct config *cfg, const struct config_key *k, char *why,
                            size_t whylen)
{
    if (strcmp(k->name, "job_timezone") == 0)
        return config_job_timezone_check(cfg->job_timezone, why, whylen);
    if (strcmp(k->name, "cache") == 0)
        return config_cache_mode_check(cfg->cache, why, whylen);
    return true;
}

static bool set_general(struct loader *ld, const char *file, int line, const char *key,
                        const char *value)
{
    const struct config_key *k = config_key_find(key);
    char why[WHY_LEN];

    if (!k)
        return fail(ld, "%s:%d: unknown setting \"%s\"", file, line, key);
    switch (config_key_set(ld->cfg, k, value, why, sizeof(why))) {
    case CONFIG_SET_OK: {
        if (!key_value_valid(ld->cfg, k, why, sizeof(why)))
            break;
        if (!config_origin_set(ld->cfg, k, file, line))
            return fail(ld, "%s:%d: out of memory", file, line);
        return true;
    }
    case CONFIG_SET_NOMEM:
        return fail(ld, "%s:%d: out of memory", file, line);
    case CONFIG_SET_INVALID:
        break;
    }
    char shown[WHY_LEN];
    return fail(ld, "%s:%d: invalid value \"%s\" for %s: %s", file, line,
                config_redact(value, shown, sizeof(shown)), k->name, why);
}

/* ---- the line reader ---------------------------------------------------- */

static bool load_file(struct loader *ld, const char *path, const char *from_file, int from_line);

/* Splits "key = value" in place. A key in double quotes may hold any
 * character ("" is a quote); an unquoted one may not hold whitespace, so
 * that a missing '=' between two words is not taken for a name. */
static bool split_key_value(char *s, char **key, char **value, char *why, size_t whylen)
{
    char *eq;

    if (*s == '"') {
        char *w = s, *r = s + 1;
        for (;;) {
            if (*r == '\0') {
                log_format(why, whylen, "unterminated quoted name");
                return false;
            }
            if (*r == '"') {
                if (r[1] != '"')
                    break;
                r++;
            }
            *w++ = *r++;
        }
        r++;
        *w = '\0'; /* w trails r, see config_next_pair() */
        while (isspace((unsigned char)*r))
            r++;
        if (*r != '=') {
            log_format(why, whylen, "expected \"=\" after the quoted name");
            return false;
        }
        eq = r;
    } else {
        eq = strchr(s, '=');
        if (!eq) {
            log_format(why, whylen, "expected \"name = value\"");
            return false;
        }
        *eq = '\0';
        s = config_trim(s);
        if (*s == '\0') {
            log_format(why, whylen, "missing name before \"=\"");
            return false;
        }
        for (const char *c = s; *c; c++) {
            if (isspace((unsigned char)*c)) {
                log_format(why, whylen, "whitespace in name \"%s\" (quote it with double quotes)",
                           s);
                return false;
            }
        }
    }
    *key = s;
    *value = config_trim(eq + 1);
    return true;
}

static bool parse_section(struct loader *ld, const char *file, int line, char *s)
{
    char *close = strchr(s, ']');
    if (!close)
        return fail(ld, "%s:%d: syntax error: missing \"]\"", file, line);
    *close = '\0';
    const char *rest = close + 1;
    while (isspace((unsigned char)*rest))
        rest++;
    /* PgBouncer reads a comment after the header as a comment line. */
    if (*rest != '\0' && *rest != ';' && *rest != '#')
        return fail(ld, "%s:%d: syntax error: unexpected text after \"]\"", file, line);
    const char *name = config_trim(s + 1);

    if (strcasecmp(name, "pgbouncer") == 0 || strcasecmp(name, "sluice") == 0) {
        ld->section = SECTION_GENERAL;
    } else if (strcasecmp(name, "databases") == 0) {
        ld->section = SECTION_DATABASES;
    } else if (strcasecmp(name, "users") == 0) {
        ld->section = SECTION_USERS;
    } else if (strcasecmp(name, "peers") == 0) {
        ld->section = SECTION_PEERS;
    } else if (strcasecmp(name, "cache") == 0) {
        ld->section = SECTION_CACHE;
    } else if (strcasecmp(name, "jobs") == 0) {
        ld->section = SECTION_JOBS;
    } else {
        return fail(ld, "%s:%d: unknown section [%s]", file, line, name);
    }
    return true;
}

static bool parse_directive(struct loader *ld, const char *file, int line, char *s)
{
    char *word = s + 1, *p = word;
    while (*p && !isspace((unsigned char)*p))
        p++;
    size_t n = (size_t)(p - word);
    if (n != strlen("include") || strncmp(word, "include", n) != 0)
        return fail(ld, "%s:%d: unknown directive \"%%%.*s\"", file, line, (int)n, word);
    const char *path = config_trim(p);
    if (*path == '\0')
        return fail(ld, "%s:%d: %%include needs a file name", file, line);
    if (ld->depth >= CONFIG_MAX_INCLUDE_DEPTH)
        return fail(ld, "%s:%d: %%include nested more than %d deep (does a file include itself?)",
                    file, line, CONFIG_MAX_INCLUDE_DEPTH);
    ld->depth++;
    bool ok = load_file(ld, path, file, line);
    ld->depth--;
    return ok;
}

static bool parse_line(struct loader *ld, const char *file, int line, char *s)
{
    char why[WHY_LEN];
    char *key, *value;

    s = config_trim(s);
    if (*s == '\0' || *s == ';' || *s == '#')
        return true;
    if (*s == '[')
        return parse_section(ld, file, line, s);
    if (*s == '%')
        return parse_directive(ld, file, line, s);
    if (!split_key_value(s, &key, &value, why, sizeof(why)))
        return fail(ld, "%s:%d: syntax error: %s", file, line, why);

    switch (ld->section) {
    case SECTION_NONE:
        break;
    case SECTION_GENERAL:
        return set_general(ld, file, line, key, value);
    case SECTION_DATABASES:
        return parse_database(ld, file, line, key, value);
    case SECTION_USERS:
        return parse_user(ld, file, line, key, value);
    case SECTION_CACHE:
        if (!config_cache_rule_add(ld->cfg, key, value, why, sizeof(why)))
            return fail(ld, "%s:%d: [cache] %s: %s", file, line, key, why);
        return true;
    case SECTION_JOBS:
        return config_job_parse(ld->cfg, file, line, key, value, ld->err, ld->errlen);
    case SECTION_PEERS:
        return config_peer_parse(ld->cfg, file, line, key, value, ld->err, ld->errlen);
    }
    return fail(ld, "%s:%d: \"%s\" is outside of any section", file, line, key);
}

/* Parses buf[0..len) (writable, with buf[len] == '\0') line by line. */
static bool parse_buffer(struct loader *ld, const char *file, char *buf, size_t len)
{
    char *p = buf, *end = buf + len;
    int line = 0;

    /* Some editors start a UTF-8 file with a byte order mark. */
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    while (p < end) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if (line == INT_MAX)
            return fail(ld, "%s: too many lines", file);
        line++;
        bool ok;
        if (memchr(p, '\0', (size_t)(eol - p))) {
            ok = fail(ld, "%s:%d: syntax error: NUL byte in line", file, line);
        } else {
            *eol = '\0';
            ok = parse_line(ld, file, line, p);
        }
        if (!ok && !go_on(ld))
            return false;
        p = eol + 1;
    }
    return true;
}

/* Reads a whole regular file. Returns a NUL-terminated buffer and its
 * length, or NULL with the reason in why. */
static char *read_file(const char *path, size_t *len_out, char *why, size_t whylen)
{
    char ebuf[128];
    /* O_NONBLOCK: opening a FIFO must not hang a reload; it is refused
     * below like any other file that is not a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        log_format(why, whylen, "%s", strerror_r(errno, ebuf, sizeof(ebuf)));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        log_format(why, whylen, "%s", strerror_r(errno, ebuf, sizeof(ebuf)));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        log_format(why, whylen, "%s",
                   S_ISDIR(st.st_mode) ? strerror_r(EISDIR, ebuf, sizeof(ebuf))
                                       : "not a regular file");
        close(fd);
        return NULL;
    }

    /* st_size is only a hint: files under /proc report 0. */
    size_t cap =
        st.st_size > 0 && st.st_size < CONFIG_MAX_FILE_SIZE ? (size_t)st.st_size + 1 : 4096;
    size_t len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        log_format(why, whylen, "out of memory");
        close(fd);
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            if (cap > CONFIG_MAX_FILE_SIZE) {
                log_format(why, whylen, "file larger than %d bytes", CONFIG_MAX_FILE_SIZE);
                goto fail;
            }
            size_t ncap = cap * 2;
            char *nbuf = realloc(buf, ncap + 1);
            if (!nbuf) {
                log_format(why, whylen, "out of memory");
                goto fail;
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            log_format(why, whylen, "%s", strerror_r(errno, ebuf, sizeof(ebuf)));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > CONFIG_MAX_FILE_SIZE) {
        log_format(why, whylen, "file larger than %d bytes", CONFIG_MAX_FILE_SIZE);
        goto fail;
    }
    close(fd);
    buf[len] = '\0';
    *len_out = len;
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

/* Reads and parses path; from_file and from_line name the %include line,
 * or from_file is NULL for the main file. */
static bool load_file(struct loader *ld, const char *path, const char *from_file, int from_line)
{
    char why[WHY_LEN];
    size_t len;
    char *buf = read_file(path, &len, why, sizeof(why));

    if (!buf) {
        if (from_file)
            return fail(ld, "%s:%d: cannot include \"%s\": %s", from_file, from_line, path, why);
        return fail(ld, "%s: %s", path, why);
    }
    bool ok = parse_buffer(ld, path, buf, len);
    free(buf);
    return ok;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void config_free(struct config *cfg)
{
    for (int i = 0; i < config_n_keys; i++)
        if (config_keys[i].type == CONFIG_KEY_STRING)
            free(*string_at(cfg, config_keys[i].offset));
    config_origins_free(cfg);
    free(cfg->path);
    for (int i = 0; i < cfg->n_databases; i++)
        database_clear(&cfg->databases[i]);
    free(cfg->databases);
    for (int i = 0; i < cfg->n_users; i++)
        free(cfg->users[i].name);
    free(cfg->users);
    config_cache_rules_free(cfg);
    config_jobs_free(cfg);
    config_peers_free(cfg);
    free(cfg);
}

/* A config holding every default, refcount 1; NULL with err on failure. */
static uint64_t next_generation(void)
{
    static atomic_uint_fast64_t generations;
    return (uint64_t)atomic_fetch_add(&generations, 1) + 1;
}

static struct config *config_new(char *err, size_t errlen)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    char why[WHY_LEN];

    if (!cfg) {
        log_format(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&cfg->refcount, 1);
    cfg->generation = next_generation();
    if (!config_origins_copy(cfg, NULL)) {
        log_format(err, errlen, "out of memory");
        config_free(cfg);
        return NULL;
    }
    for (int i = 0; i < config_n_keys; i++) {
        const struct config_key *k = &config_keys[i];
        enum config_set_result r = config_key_set(cfg, k, k->default_value, why, sizeof(why));
        if (r != CONFIG_SET_OK) {
            /* A bad default is a bug in the table, caught by the unit test. */
            if (r == CONFIG_SET_NOMEM)
                log_format(err, errlen, "out of memory");
            else
                log_format(err, errlen, "internal error: default of %s: %s", k->name, why);
            config_free(cfg);
            return NULL;
        }
    }
    cfg->path = strdup("");
    if (!cfg->path) {
        log_format(err, errlen, "out of memory");
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Deep copy with refcount 1, or NULL when out of memory. */
static struct config *config_clone(const struct config *src)
{
    struct config *cfg = malloc(sizeof(*cfg));
    if (!cfg)
        return NULL;
    memcpy(cfg, src, sizeof(*cfg));
    atomic_init(&cfg->refcount, 1);
    cfg->generation = next_generation();
    /* First drop every pointer shared with src, so that a failure half way
     * can free the copy with config_free(). */
    for (int i = 0; i < config_n_keys; i++)
        if (config_keys[i].type == CONFIG_KEY_STRING)
            *string_at(cfg, config_keys[i].offset) = NULL;
    cfg->path = NULL;
    cfg->databases = NULL;
    cfg->n_databases = 0;
    cfg->users = NULL;
    cfg->n_users = 0;
    cfg->cache_rules = NULL;
    cfg->n_cache_rules = 0;
    cfg->jobs = NULL;
    cfg->n_jobs = 0;
    cfg->peers = NULL;
    cfg->n_peers = 0;
    cfg->origins = NULL;

    bool ok = config_origins_copy(cfg, src) && config_cache_rules_copy(cfg, src);
    for (int i = 0; i < config_n_keys && ok; i++) {
        if (config_keys[i].type != CONFIG_KEY_STRING)
            continue;
        char **d = string_at(cfg, config_keys[i].offset);
        *d = strdup(*string_at((void *)src, config_keys[i].offset));
        ok = *d != NULL;
    }
    if (ok)
        ok = (cfg->path = strdup(src->path)) != NULL;
    if (ok && src->n_databases > 0) {
        cfg->databases = calloc((size_t)src->n_databases, sizeof(*cfg->databases));
        ok = cfg->databases != NULL;
        for (int i = 0; ok && i < src->n_databases; i++) {
            cfg->n_databases = i + 1;
            ok = database_copy(&cfg->databases[i], &src->databases[i]);
        }
    }
    if (ok && src->n_users > 0) {
        cfg->users = calloc((size_t)src->n_users, sizeof(*cfg->users));
        ok = cfg->users != NULL;
        for (int i = 0; ok && i < src->n_users; i++) {
            cfg->users[i] = src->users[i];
            cfg->n_users = i + 1;
            ok = (cfg->users[i].name = strdup(src->users[i].name)) != NULL;
        }
    }
    if (ok)
        ok = config_jobs_copy(cfg, src);
    if (ok)
        ok = config_peers_copy(cfg, src);
    if (!ok) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* What is settled once the whole file is read. */
static bool finish(struct loader *ld, const char *path)
{
    struct config *cfg = ld->cfg;
    struct timespec ts;

    free(cfg->path);
    cfg->path = strdup(path);
    if (!cfg->path)
        return fail(ld, "%s: out of memory", path);
    clock_gettime(CLOCK_REALTIME, &ts);
    cfg->loaded_at = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    /* workers = 0 means one per core; resolved here so that everyone (and
     * SHOW CONFIG) sees the number actually used. */
    if (cfg->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
    }
    char why[WHY_LEN];
    if (!config_cache_check(cfg, why, sizeof(why)) && !fail(ld, "%s: %s", path, why) && !go_on(ld))
        return false;
    return config_jobs_check(cfg, ld->err, ld->errlen) || go_on(ld);
}

/* Loads from a file (text NULL) or from text posing as the file path;
 * stops at the first problem (in err), or with problems collects them all
 * (then err is a buffer for one message). */
static struct config *load(const char *path, const char *text, char *err, size_t errlen,
                           struct config_problems *problems)
{
    log_format(err, errlen, "%s", "");
    if (!path) {
        log_format(err, errlen, "no configuration file given");
        return NULL;
    }
    struct config *cfg = config_new(err, errlen);
    if (!cfg)
        return NULL;
    struct loader ld = {cfg, SECTION_NONE, 0, err, errlen, problems};
    bool ok;
    if (text) {
        char *copy = strdup(text);
        ok = copy ? parse_buffer(&ld, path, copy, strlen(copy))
                  : fail(&ld, "%s: out of memory", path);
        free(copy);
    } else {
        ok = load_file(&ld, path, NULL, 0);
    }
    if (!ok && problems)
        ok = go_on(&ld); /* the main file could not be read: filed, and a
                          * config of defaults is checked on */
    if (ok)
        ok = finish(&ld, path);
    /* Collecting, a config with bad lines left out is still returned, for
     * the check of the files it names (config_load_all()). */
    if (!ok) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    return load(path, NULL, err, errlen, NULL);
}

struct config *config_load_all(const char *path, const char *text, struct config_problems *problems)
{
    char err[1024];
    struct config *cfg = load(path, text, err, sizeof(err), problems);
    /* Collecting, every problem is filed and the config returned; NULL
     * comes of running out of memory only, which nothing filed yet. */
    if (!cfg)
        config_problems_add(problems, "%s", err[0] ? err : "out of memory");
    return cfg;
}

struct config *config_load_string(const char *name, const char *text, char *err, size_t errlen)
{
    if (!text) {
        log_format(err, errlen, "%s: no text", name ? name : "(string)");
        return NULL;
    }
    return load(name ? name : "(string)", text, err, errlen, NULL);
}

struct config *config_ref(struct config *cfg)
{
    if (cfg)
        atomic_fetch_add_explicit(&cfg->refcount, 1, memory_order_relaxed);
    return cfg;
}

void config_unref(struct config *cfg)
{
    /* acq_rel: the thread that frees must see every other thread's reads
     * of cfg finished. */
    if (cfg && atomic_fetch_sub_explicit(&cfg->refcount, 1, memory_order_acq_rel) == 1)
        config_free(cfg);
}

/* ---- lookups ------------------------------------------------------------ */

const struct config_database *config_find_database(const struct config *cfg, const char *name)
{
    const struct config_database *fallback = NULL;

    if (!cfg || !name)
        return NULL;
    for (int i = 0; i < cfg->n_databases; i++) {
        if (strcmp(cfg->databases[i].name, name) == 0)
            return &cfg->databases[i];
        if (strcmp(cfg->databases[i].name, "*") == 0)
            fallback = &cfg->databases[i];
    }
    return fallback;
}

const struct config_user *config_find_user(const struct config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (int i = 0; i < cfg->n_users; i++)
        if (strcmp(cfg->users[i].name, name) == 0)
            return &cfg->users[i];
    return NULL;
}

bool config_list_contains(const char *list, const char *name)
{
    if (!list || !name || !*name)
        return false;
    size_t n = strlen(name);
    const char *p = list;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        const char *item = p;
        while (*p && *p != ',' && !isspace((unsigned char)*p))
            p++;
        if ((size_t)(p - item) == n && strncmp(item, name, n) == 0)
            return true;
    }
    return false;
}

/* ---- SHOW CONFIG and SET ------------------------------------------------ */

bool config_setting_at(const struct config *cfg, int index, char *buf, size_t buflen,
                       struct config_setting_view *out)
{
    if (!cfg || !out || index < 0 || index >= config_n_keys)
        return false;
    const struct config_key *k = &config_keys[index];
    out->key = k->name;
    out->value = config_key_format(cfg, k, buf, buflen);
    out->default_value = k->default_value;
    out->reloadable = k->reloadable;
    return true;
}

struct config *config_with_setting(const struct config *cfg, const char *key, const char *value,
                                   char *err, size_t errlen)
{
    char why[WHY_LEN], shown[WHY_LEN];

    if (!cfg || !key || !value) {
        log_format(err, errlen, "no setting given");
        return NULL;
    }
    const struct config_key *k = config_key_find(key);
    if (!k) {
        log_format(err, errlen, "unknown setting \"%s\"", key);
        return NULL;
    }
    if (!k->reloadable) {
        log_format(err, errlen, "setting \"%s\" cannot be changed without a restart", k->name);
        return NULL;
    }
    struct config *copy = config_clone(cfg);
    if (!copy) {
        log_format(err, errlen, "out of memory");
        return NULL;
    }
    switch (config_key_set(copy, k, value, why, sizeof(why))) {
    case CONFIG_SET_OK:
        if (!key_value_valid(copy, k, why, sizeof(why))) {
            log_format(err, errlen, "invalid value \"%s\" for %s: %s",
                       config_redact(value, shown, sizeof(shown)), k->name, why);
            break;
        }
        config_origin_set(copy, k, NULL, 0); /* no file line holds it any more */
        return copy;
    case CONFIG_SET_NOMEM:
        log_format(err, errlen, "out of memory");
        break;
    case CONFIG_SET_INVALID:
        log_format(err, errlen, "invalid value \"%s\" for %s: %s",
                   config_redact(value, shown, sizeof(shown)), k->name, why);
        break;
    }
    config_free(copy);
    return NULL;
}
