/* config_keys.c - the general settings: their table, value parsers and formatting.
 *
 * The table is the single description of a general key. Loading, admin SET,
 * SHOW CONFIG, copying and freeing a config all walk it, so a new key is one
 * new row (plus its field in config.h and a line in docs/configuration.md).
 */
#include "config_keys.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define USEC_PER_MS  INT64_C(1000)
#define USEC_PER_SEC INT64_C(1000000)

/* Where key's field lives in cfg, as a T *. */
#define FIELD_PTR(cfg, key, T) ((T *)(void *)((char *)(cfg) + (key)->offset))
#define FIELD_CONST_PTR(cfg, key, T)                                                               \
    ((const T *)(const void *)((const char *)(cfg) + (key)->offset))

static void why_set(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void why_set(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

const char *pool_mode_str(enum pool_mode m)
{
    switch (m) {
    case POOL_MODE_SESSION:
        return "session";
    case POOL_MODE_TRANSACTION:
        return "transaction";
    case POOL_MODE_STATEMENT:
        return "statement";
    case POOL_MODE_UNSET:
        return "unset";
    }
    return "?";
}

const char *auth_type_str(enum auth_type t)
{
    switch (t) {
    case AUTH_TYPE_ANY:
        return "any";
    case AUTH_TYPE_TRUST:
        return "trust";
    case AUTH_TYPE_PLAIN:
        return "plain";
    case AUTH_TYPE_MD5:
        return "md5";
    case AUTH_TYPE_SCRAM:
        return "scram-sha-256";
    case AUTH_TYPE_CERT:
        return "cert";
    case AUTH_TYPE_HBA:
        return "hba";
    case AUTH_TYPE_PAM:
        return "pam";
    }
    return "?";
}

static const char *skip_space(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

/* A number as written: value = ip + frac / scale. Only the first nine
 * fraction digits count (a nanosecond when the unit is seconds), which keeps
 * frac and scale well inside 64 bits. */
struct decimal {
    uint64_t ip;
    uint64_t frac;
    uint64_t scale;
};

/* Reads "123", "1.5", ".5" or "5." at *sp and advances it. Written by hand,
 * not with strtod, so that the locale cannot change the decimal point and
 * whole numbers stay exact. */
static bool read_decimal(const char **sp, bool allow_fraction, struct decimal *d, bool *overflow)
{
    const char *s = *sp;
    bool digits = false;

    *overflow = false;
    d->ip = 0;
    d->frac = 0;
    d->scale = 1;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned digit = (unsigned)(*s - '0');
        if (d->ip > (UINT64_MAX - digit) / 10)
            *overflow = true;
        else
            d->ip = d->ip * 10 + digit;
        digits = true;
    }
    if (allow_fraction && *s == '.') {
        for (s++; isdigit((unsigned char)*s); s++) {
            if (d->scale < 1000000000) {
                d->frac = d->frac * 10 + (uint64_t)(*s - '0');
                d->scale *= 10;
            }
            digits = true;
        }
    }
    *sp = s;
    return digits;
}

struct unit {
    const char *name;
    int64_t factor;
};

/* postgresql.conf's units; matched case-insensitively. */
static const struct unit time_units[] = {
    {"us", 1},
    {"ms", USEC_PER_MS},
    {"s", USEC_PER_SEC},
    {"min", 60 * USEC_PER_SEC},
    {"h", 3600 * USEC_PER_SEC},
    {"d", 86400 * USEC_PER_SEC},
    {NULL, 0},
};

static const struct unit size_units[] = {
    {"B", 1},
    {"kB", INT64_C(1) << 10},
    {"MB", INT64_C(1) << 20},
    {"GB", INT64_C(1) << 30},
    {"TB", INT64_C(1) << 40},
    {NULL, 0},
};

/* Reads an optional unit word at *sp. Returns false for an unknown word;
 * *factor is plain when there is none. */
static bool read_unit(const char **sp, const struct unit *units, int64_t plain, int64_t *factor)
{
    const char *s = skip_space(*sp);
    const char *w = s;
    while (isalpha((unsigned char)*s))
        s++;
    size_t n = (size_t)(s - w);
    *sp = s;
    if (n == 0) {
        *factor = plain;
        return true;
    }
    for (const struct unit *u = units; u->name; u++) {
        if (strlen(u->name) == n && strncasecmp(u->name, w, n) == 0) {
            *factor = u->factor;
            return true;
        }
    }
    return false;
}

/* The time parser behind both time types: plain is the factor, in
 * microseconds, of a number written without a unit. */
static bool parse_time_as(const char *s, int64_t plain, int64_t *out, char *why, size_t whylen);

bool config_parse_seconds(const char *s, int64_t *usec, char *why, size_t whylen)
{
    return parse_time_as(s, USEC_PER_SEC, usec, why, whylen);
}

static bool parse_time_as(const char *s, int64_t plain, int64_t *out, char *why, size_t whylen)
{
    const char *plain_name = plain == USEC_PER_SEC ? "seconds" : "milliseconds";
    struct decimal d;
    bool overflow;
    int64_t factor;

    s = skip_space(s);
    if (*s == '-') {
        why_set(why, whylen, "must not be negative");
        return false;
    }
    if (!read_decimal(&s, true, &d, &overflow) || !read_unit(&s, time_units, plain, &factor) ||
        *skip_space(s) != '\0') {
        why_set(why, whylen, "expected %s, or a number with a unit us, ms, s, min, h or d",
                plain_name);
        return false;
    }
    /* frac * factor / scale, rounded, without overflow: with factor = q *
     * scale + r, frac * q < factor (as frac < scale) and frac * r < 10^18. */
    uint64_t whole = d.ip;
    uint64_t q = (uint64_t)factor / d.scale, r = (uint64_t)factor % d.scale;
    uint64_t part = d.frac * q + (d.frac * r + d.scale / 2) / d.scale;
    if (overflow || whole > (uint64_t)INT64_MAX / (uint64_t)factor ||
        whole * (uint64_t)factor > (uint64_t)INT64_MAX - part) {
        why_set(why, whylen, "out of range");
        return false;
    }
    *out = (int64_t)(whole * (uint64_t)factor + part);
    return true;
}

static bool parse_size_why(const char *s, int64_t *out, char *why, size_t whylen)
{
    struct decimal d;
    bool overflow;
    int64_t factor;

    s = skip_space(s);
    if (*s == '-') {
        why_set(why, whylen, "must not be negative");
        return false;
    }
    if (!read_decimal(&s, false, &d, &overflow) || !read_unit(&s, size_units, 1, &factor) ||
        *skip_space(s) != '\0') {
        why_set(why, whylen, "expected a number of bytes, optionally with a unit kB, MB, GB or TB");
        return false;
    }
    if (overflow || d.ip > (uint64_t)INT64_MAX / (uint64_t)factor) {
        why_set(why, whylen, "out of range");
        return false;
    }
    *out = (int64_t)(d.ip * (uint64_t)factor);
    return true;
}

bool config_parse_time(const char *s, int64_t *usec_out)
{
    return s && parse_time_as(s, USEC_PER_SEC, usec_out, NULL, 0);
}

bool config_parse_size(const char *s, int64_t *bytes_out)
{
    return s && parse_size_why(s, bytes_out, NULL, 0);
}

static bool parse_bool_why(const char *s, bool *out, char *why, size_t whylen)
{
    static const char *const yes[] = {"1", "on", "yes", "true"};
    static const char *const no[] = {"0", "off", "no", "false"};
    const char *w = skip_space(s);
    size_t n = strlen(w);

    while (n > 0 && isspace((unsigned char)w[n - 1]))
        n--;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strlen(yes[i]) == n && strncasecmp(w, yes[i], n) == 0) {
            *out = true;
            return true;
        }
        if (strlen(no[i]) == n && strncasecmp(w, no[i], n) == 0) {
            *out = false;
            return true;
        }
    }
    why_set(why, whylen, "expected 1/0, on/off, yes/no or true/false");
    return false;
}

bool config_parse_bool(const char *s, bool *out)
{
    return s && parse_bool_why(s, out, NULL, 0);
}

bool config_parse_int_range(const char *s, int64_t min, int64_t max, int64_t *out, char *why,
                            size_t whylen)
{
    struct decimal d;
    bool overflow, negative = false;

    s = skip_space(s);
    if (*s == '-') {
        negative = true;
        s++;
    }
    if (!read_decimal(&s, false, &d, &overflow) || *skip_space(s) != '\0') {
        why_set(why, whylen, "not an integer");
        return false;
    }
    /* Compare magnitudes first so that no out-of-range number is ever
     * converted to int64_t. */
    bool too_large = overflow || d.ip > (uint64_t)INT64_MAX;
    int64_t v = too_large ? 0 : negative ? -(int64_t)d.ip : (int64_t)d.ip;
    if (!too_large && v > max)
        too_large = true;
    if (too_large || v < min) {
        if (max >= INT_MAX && too_large)
            why_set(why, whylen, "too large (at most %" PRId64 ")", max);
        else if (max >= INT_MAX)
            why_set(why, whylen, "must be %" PRId64 " or more", min);
        else
            why_set(why, whylen, "must be between %" PRId64 " and %" PRId64, min, max);
        return false;
    }
    *out = v;
    return true;
}

bool config_parse_pool_mode(const char *s, enum pool_mode *out, char *why, size_t whylen)
{
    static const enum pool_mode modes[] = {POOL_MODE_SESSION, POOL_MODE_TRANSACTION,
                                           POOL_MODE_STATEMENT};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcasecmp(s, pool_mode_str(modes[i])) == 0) {
            *out = modes[i];
            return true;
        }
    }
    why_set(why, whylen, "expected session, transaction or statement");
    return false;
}

static bool parse_auth_type(const char *s, enum auth_type *out, char *why, size_t whylen)
{
    static const enum auth_type types[] = {AUTH_TYPE_ANY, AUTH_TYPE_TRUST, AUTH_TYPE_PLAIN,
                                           AUTH_TYPE_MD5, AUTH_TYPE_SCRAM, AUTH_TYPE_CERT};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcasecmp(s, auth_type_str(types[i])) == 0) {
            *out = types[i];
            return true;
        }
    }
    /* PgBouncer knows these three; a file using them must not start with a
     * weaker method by accident, so they are refused rather than ignored.
     * (hba: sluice has no pg_hba.conf parser, see auth_hba_file.) */
    if (strcasecmp(s, "pam") == 0 || strcasecmp(s, "ldap") == 0 || strcasecmp(s, "hba") == 0)
        why_set(why, whylen, "not supported by sluice");
    else
        why_set(why, whylen, "expected any, trust, plain, md5, scram-sha-256 or cert");
    return false;
}

static bool parse_octal(const char *s, int *out, char *why, size_t whylen)
{
    int v = 0;
    const char *p = skip_space(s);
    const char *start = p;

    for (; *p >= '0' && *p <= '7'; p++) {
        v = v * 8 + (*p - '0');
        if (v > 0777)
            break;
    }
    if (p == start || v > 0777 || *skip_space(p) != '\0') {
        why_set(why, whylen, "expected an octal file mode between 0 and 0777");
        return false;
    }
    *out = v;
    return true;
}

/* TLS modes, as PgBouncer spells them. */
static const char *const sslmodes[] = {"disable",   "allow",       "prefer", "require",
                                       "verify-ca", "verify-full", NULL};
/* Read/write splitting (docs/routing.md). */
static const char *const load_balances[] = {"least_outstanding", "round_robin", "random", NULL};
static const char *const primary_reads_words[] = {"fallback", "share", NULL};
static const char *const function_checks[] = {"strict", "list", NULL};
static const char *const rw_scopes[] = {"off", "connection", "user", "database", NULL};
/* Writes that bypass sluice, seen by logical decoding (docs/cache.md). */
static const char *const cache_invalidations[] = {"off", "logical", NULL};

/* The field of struct config named f, checked at compile time to be of type
 * T: comparing pointers to different types is a diagnostic, and -Werror
 * makes it an error, so a row cannot point the parser at the wrong type. */
#define FIELD(f, T) (offsetof(struct config, f) + 0 * sizeof(&((struct config *)0)->f == (T *)0))

#define RELOAD  true
#define RESTART false

/* One row per line reads better than clang-format's layout of these. */
/* clang-format off */
#define STR(f, r, def)              {#f, CONFIG_KEY_STRING, FIELD(f, char *), r, def, 0, 0, NULL, NULL}
#define WORD(f, r, def, words)      {#f, CONFIG_KEY_STRING, FIELD(f, char *), r, def, 0, 0, words, NULL}
#define INT(f, r, def, lo, hi)      {#f, CONFIG_KEY_INT, FIELD(f, int), r, def, lo, hi, NULL, NULL}
#define INT_SIZE(f, r, def, lo, hi) {#f, CONFIG_KEY_INT_SIZE, FIELD(f, int), r, def, lo, hi, NULL, NULL}
#define BOOL(f, r, def)             {#f, CONFIG_KEY_BOOL, FIELD(f, bool), r, def, 0, 0, NULL, NULL}
#define TIME(f, r, def)             {#f, CONFIG_KEY_TIME, FIELD(f, int64_t), r, def, 0, 0, NULL, NULL}
#define SIZE(f, r, def, lo, hi)     {#f, CONFIG_KEY_SIZE, FIELD(f, int64_t), r, def, lo, hi, NULL, NULL}
#define TIME_MS(f, r, def)          {#f, CONFIG_KEY_TIME_MS, FIELD(f, int64_t), r, def, 0, 0, NULL, NULL}
#define POOL_MODE(f, r, def) \
    {#f, CONFIG_KEY_POOL_MODE, FIELD(f, enum pool_mode), r, def, 0, 0, NULL, NULL}
#define AUTH_TYPE(f, r, def) \
    {#f, CONFIG_KEY_AUTH_TYPE, FIELD(f, enum auth_type), r, def, 0, 0, NULL, NULL}
#define OCTAL(f, r, def)            {#f, CONFIG_KEY_OCTAL, FIELD(f, int), r, def, 0, 0, NULL, NULL}
/* A PgBouncer key sluice does not implement: only its default (what sluice
 * does) is accepted; any other value stops the load, with why. */
#define REFUSED(f, T, type, def, lo, hi, why) \
    {#f, type, FIELD(f, T), RELOAD, def, lo, hi, NULL, why}
/* clang-format on */

/* Defaults are PgBouncer 1.2x's, except syslog_ident (sluice), auth_query
 * and server_check_query (the 1.2x values, which later PgBouncers changed),
 * and sluice's own keys; max_prepared_statements is 200 as in PgBouncer 1.24. Reloadable as in
 * PgBouncer; sluice's threads and listeners (workers, metrics_listen) are fixed at start. */
const struct config_key config_keys[] = {
    STR(admin_users, RELOAD, ""),
    TIME(advice_interval, RELOAD, "300"),
    INT(advice_min_gain, RELOAD, "30", 1, 100),
    TIME(advice_window, RELOAD, "3600"),
    BOOL(application_name_add_host, RELOAD, "0"),
    STR(auth_dbname, RELOAD, ""),
    STR(auth_file, RELOAD, ""),
    REFUSED(auth_hba_file, char *, CONFIG_KEY_STRING, "", 0, 0,
            "sluice has no pg_hba.conf parser (auth_type = hba is refused too)"),
    REFUSED(auth_ident_file, char *, CONFIG_KEY_STRING, "", 0, 0,
            "ident maps belong to auth_type = hba, which sluice refuses"),
    REFUSED(auth_ldap_options, char *, CONFIG_KEY_STRING, "", 0, 0,
            "sluice has no LDAP authentication"),
    STR(auth_query, RELOAD, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"),
    AUTH_TYPE(auth_type, RELOAD, "md5"),
    STR(auth_user, RELOAD, ""),
    TIME(autodb_idle_timeout, RELOAD, "3600"),
    STR(cache, RESTART, "off"),
    TIME(cache_default_ttl, RELOAD, "0"),
    WORD(cache_invalidation, RESTART, "off", cache_invalidations),
    SIZE(cache_max_entry_size, RESTART, "1048576", 1024, INT64_C(1) << 40),
    SIZE(cache_max_memory, RESTART, "67108864", 1 << 20, INT64_C(1) << 44),
    STR(cache_publication, RESTART, ""),
    TIME(cancel_wait_timeout, RELOAD, "10"),
    TIME(client_idle_timeout, RELOAD, "0"),
    TIME(client_login_timeout, RELOAD, "60"),
    STR(client_tls13_ciphers, RELOAD, ""),
    STR(client_tls_ca_file, RELOAD, ""),
    STR(client_tls_cert_file, RELOAD, ""),
    STR(client_tls_ciphers, RELOAD, "default"),
    STR(client_tls_dheparams, RELOAD, "auto"),
    STR(client_tls_ecdhcurve, RELOAD, "auto"),
    STR(client_tls_key_file, RELOAD, ""),
    STR(client_tls_protocols, RELOAD, "secure"),
    WORD(client_tls_sslmode, RELOAD, "disable", sslmodes),
    REFUSED(conffile, char *, CONFIG_KEY_STRING, "", 0, 0,
            "RELOAD reads the file sluice was started with"),
    INT(default_pool_size, RELOAD, "20", 0, INT_MAX),
    BOOL(disable_pqexec, RESTART, "0"),
    TIME(dns_max_ttl, RELOAD, "15"),
    TIME(dns_nxdomain_ttl, RELOAD, "15"),
    REFUSED(dns_zone_check_period, int64_t, CONFIG_KEY_TIME, "0", 0, 0,
            "sluice does not poll zone serials; a name is resolved again after dns_max_ttl"),
    TIME(idle_transaction_timeout, RELOAD, "0"),
    STR(ignore_startup_parameters, RELOAD, ""),
    BOOL(insights, RELOAD, "1"),
    INT(insights_max_queries, RESTART, "5000", 1, 10000000),
    INT(insights_metrics_top, RELOAD, "20", 0, 10000),
    REFUSED(job_name, char *, CONFIG_KEY_STRING, "pgbouncer", 0, 0,
            "a Windows service name; sluice does not run as a Windows service"),
    STR(job_timezone, RELOAD, "UTC"),
    TIME(lag_check_interval, RELOAD, "0.1"),
    STR(listen_addr, RESTART, ""),
    INT(listen_backlog, RESTART, "128", 0, INT_MAX),
    INT(listen_port, RESTART, "6432", 1, 65535),
    BOOL(log_connections, RELOAD, "1"),
    BOOL(log_disconnections, RELOAD, "1"),
    BOOL(log_pooler_errors, RELOAD, "1"),
    BOOL(log_stats, RELOAD, "1"),
    STR(logfile, RELOAD, ""),
    STR(login_notify_message, RELOAD, ""),
    INT(max_client_conn, RELOAD, "100", 0, INT_MAX),
    INT(max_db_client_connections, RELOAD, "0", 0, INT_MAX),
    INT(max_db_connections, RELOAD, "0", 0, INT_MAX),
    INT_SIZE(max_packet_size, RELOAD, "2147483647", 1024, INT_MAX),
    INT(max_prepared_statements, RELOAD, "200", 0, INT_MAX),
    INT(max_user_client_connections, RELOAD, "0", 0, INT_MAX),
    INT(max_user_connections, RELOAD, "0", 0, INT_MAX),
    STR(metrics_listen, RESTART, ""),
    INT(min_pool_size, RELOAD, "0", 0, INT_MAX),
    /* In every cancel key given to clients from the start: a change needs a
     * restart, or keys already given would name the wrong process. */
    INT(peer_id, RESTART, "0", 0, 16383),
    STR(pidfile, RESTART, ""),
    INT_SIZE(pkt_buf, RESTART, "4096", 512, 1 << 30),
    REFUSED(pool_idle_timeout, int64_t, CONFIG_KEY_TIME, "0", 0, 0,
            "sluice keeps a pool, and its statistics, while its database and user exist"),
    POOL_MODE(pool_mode, RELOAD, "session"),
    WORD(primary_reads, RELOAD, "fallback", primary_reads_words),
    TIME(query_timeout, RELOAD, "0"),
    TIME(query_wait_notify, RELOAD, "5"),
    TIME(query_wait_timeout, RELOAD, "120"),
    BOOL(read_write_split, RELOAD, "0"),
    WORD(read_your_writes, RELOAD, "user", rw_scopes),
    TIME(replica_ban_time, RELOAD, "30"),
    TIME(replica_check_interval, RELOAD, "1"),
    TIME(replica_connect_timeout, RELOAD, "5"),
    WORD(replica_function_check, RELOAD, "strict", function_checks),
    WORD(replica_load_balance, RELOAD, "least_outstanding", load_balances),
    TIME(replica_max_lag, RELOAD, "0"),
    INT_SIZE(replica_max_lag_bytes, RELOAD, "0", 0, INT_MAX),
    STR(replica_read_functions, RELOAD, ""),
    TIME(replica_wait_timeout, RELOAD, "0.05"),
    STR(replica_write_functions, RELOAD, ""),
    INT(reserve_pool_size, RELOAD, "0", 0, INT_MAX),
    TIME(reserve_pool_timeout, RELOAD, "5"),
    REFUSED(resolv_conf, char *, CONFIG_KEY_STRING, "", 0, 0,
            "sluice resolves names with the system's getaddrinfo(), which reads /etc/resolv.conf"),
    REFUSED(sbuf_loopcnt, int, CONFIG_KEY_INT, "1", 0, INT_MAX,
            "sluice reads once per connection and event-loop round, as sbuf_loopcnt = 1 would"),
    INT(scram_iterations, RELOAD, "4096", 1, 10000000),
    TIME(server_check_delay, RELOAD, "30"),
    STR(server_check_query, RELOAD, "select 1"),
    TIME(server_connect_timeout, RELOAD, "15"),
    BOOL(server_fast_close, RELOAD, "0"),
    TIME(server_idle_timeout, RELOAD, "600"),
    TIME(server_lifetime, RELOAD, "3600"),
    TIME(server_login_retry, RELOAD, "15"),
    STR(server_reset_query, RELOAD, "DISCARD ALL"),
    BOOL(server_reset_query_always, RELOAD, "0"),
    BOOL(server_round_robin, RELOAD, "0"),
    STR(server_tls13_ciphers, RELOAD, ""),
    STR(server_tls_ca_file, RELOAD, ""),
    STR(server_tls_cert_file, RELOAD, ""),
    STR(server_tls_ciphers, RELOAD, "default"),
    STR(server_tls_key_file, RELOAD, ""),
    STR(server_tls_protocols, RELOAD, "secure"),
    WORD(server_tls_sslmode, RELOAD, "prefer", sslmodes),
    REFUSED(service_name, char *, CONFIG_KEY_STRING, "pgbouncer", 0, 0,
            "a Windows service name; sluice does not run as a Windows service"),
    BOOL(so_reuseport, RESTART, "0"),
    TIME(stats_period, RELOAD, "60"),
    STR(stats_users, RELOAD, ""),
    REFUSED(suspend_timeout, int64_t, CONFIG_KEY_TIME, "10", 0, 0,
            "sluice has no SUSPEND and no online restart (-R)"),
    BOOL(syslog, RELOAD, "0"),
    STR(syslog_facility, RELOAD, "daemon"),
    STR(syslog_ident, RELOAD, "sluice"),
    INT(tcp_defer_accept, RELOAD, "1", 0, INT_MAX),
    BOOL(tcp_keepalive, RELOAD, "1"),
    INT(tcp_keepcnt, RELOAD, "0", 0, INT_MAX),
    INT(tcp_keepidle, RELOAD, "0", 0, INT_MAX),
    INT(tcp_keepintvl, RELOAD, "0", 0, INT_MAX),
    INT_SIZE(tcp_socket_buffer, RELOAD, "0", 0, INT_MAX),
    TIME_MS(tcp_user_timeout, RELOAD, "0"),
    STR(track_extra_parameters, RESTART, "IntervalStyle"),
    TIME(transaction_timeout, RELOAD, "0"),
    STR(unix_socket_dir, RESTART, "/tmp"),
    STR(unix_socket_group, RESTART, ""),
    OCTAL(unix_socket_mode, RESTART, "0777"),
    STR(user, RESTART, ""),
    INT(verbose, RELOAD, "0", 0, INT_MAX),
    TIME_MS(worker_affinity_window, RELOAD, "10"),
    INT(workers, RESTART, "0", 0, 1024),
};

const int config_n_keys = (int)(sizeof(config_keys) / sizeof(config_keys[0]));

const struct config_key *config_key_find(const char *name)
{
    for (int i = 0; i < config_n_keys; i++)
        if (strcasecmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* Stores a copy of value into the string field, or refuses a word that is
 * not among key->choices (choices are stored in their canonical spelling). */
static enum config_set_result set_string(struct config *cfg, const struct config_key *key,
                                         const char *value, char *why, size_t whylen)
{
    if (key->choices) {
        const char *match = NULL;
        for (const char *const *c = key->choices; *c; c++)
            if (strcasecmp(*c, value) == 0)
                match = *c;
        if (!match) {
            char list[256] = "";
            size_t len = 0;
            for (const char *const *c = key->choices; *c && len < sizeof(list); c++) {
                int n = snprintf(list + len, sizeof(list) - len, "%s%s", len ? ", " : "", *c);
                if (n < 0)
                    break;
                len += (size_t)n;
            }
            why_set(why, whylen, "expected one of %s", list);
            return CONFIG_SET_INVALID;
        }
        value = match;
    }
    char *copy = strdup(value);
    if (!copy)
        return CONFIG_SET_NOMEM;
    char **dst = FIELD_PTR(cfg, key, char *);
    free(*dst);
    *dst = copy;
    return CONFIG_SET_OK;
}

static enum config_set_result key_store(struct config *cfg, const struct config_key *key,
                                        const char *value, char *why, size_t whylen)
{
    int64_t v64;
    bool b;
    int i;
    enum pool_mode pm;
    enum auth_type at;

    switch (key->type) {
    case CONFIG_KEY_STRING:
        return set_string(cfg, key, value, why, whylen);
    case CONFIG_KEY_INT:
        if (!config_parse_int_range(value, key->min, key->max, &v64, why, whylen))
            return CONFIG_SET_INVALID;
        *FIELD_PTR(cfg, key, int) = (int)v64;
        return CONFIG_SET_OK;
    case CONFIG_KEY_INT_SIZE:
        if (!parse_size_why(value, &v64, why, whylen))
            return CONFIG_SET_INVALID;
        if (v64 < key->min || v64 > key->max) {
            why_set(why, whylen, "must be between %" PRId64 " and %" PRId64 " bytes", key->min,
                    key->max);
            return CONFIG_SET_INVALID;
        }
        *FIELD_PTR(cfg, key, int) = (int)v64;
        return CONFIG_SET_OK;
    case CONFIG_KEY_SIZE:
        if (!parse_size_why(value, &v64, why, whylen))
            return CONFIG_SET_INVALID;
        if (key->max > 0 && (v64 < key->min || v64 > key->max)) {
            why_set(why, whylen, "must be between %" PRId64 " and %" PRId64 " bytes", key->min,
                    key->max);
            return CONFIG_SET_INVALID;
        }
        *FIELD_PTR(cfg, key, int64_t) = v64;
        return CONFIG_SET_OK;
    case CONFIG_KEY_BOOL:
        if (!parse_bool_why(value, &b, why, whylen))
            return CONFIG_SET_INVALID;
        *FIELD_PTR(cfg, key, bool) = b;
        return CONFIG_SET_OK;
    case CONFIG_KEY_TIME:
    case CONFIG_KEY_TIME_MS:
        if (!parse_time_as(value, key->type == CONFIG_KEY_TIME ? USEC_PER_SEC : USEC_PER_MS, &v64,
                           why, whylen))
            return CONFIG_SET_INVALID;
        *FIELD_PTR(cfg, key, int64_t) = v64;
        return CONFIG_SET_OK;
    case CONFIG_KEY_POOL_MODE:
        if (!config_parse_pool_mode(skip_space(value), &pm, why, whylen))
            return CONFIG_SET_INVALID;
        *FIELD_PTR(cfg, key, enum pool_mode) = pm;
        return CONFIG_SET_OK;
    case CONFIG_KEY_AUTH_TYPE:
        if (!parse_auth_type(skip_space(value), &at, why, whylen))
            return CONFIG_SET_INVALID;
        *FIELD_PTR(cfg, key, enum auth_type) = at;
        return CONFIG_SET_OK;
    case CONFIG_KEY_OCTAL:
        if (!parse_octal(value, &i, why, whylen))
            return CONFIG_SET_INVALID;
        *FIELD_PTR(cfg, key, int) = i;
        return CONFIG_SET_OK;
    }
    why_set(why, whylen, "internal error: unknown key type");
    return CONFIG_SET_INVALID;
}

/* Whether value, read for a refused key, means the same as its default: the
 * two are parsed into scratch configs and compared as SHOW CONFIG prints
 * them. A value that does not parse is left to key_store() to report. */
static bool refused_value_is_default(const struct config_key *key, const char *value)
{
    struct config a, b;
    char abuf[64], bbuf[64];
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    if (key_store(&a, key, value, NULL, 0) != CONFIG_SET_OK)
        return true;
    bool same = key_store(&b, key, key->default_value, NULL, 0) == CONFIG_SET_OK &&
                strcmp(config_key_format(&a, key, abuf, sizeof(abuf)),
                       config_key_format(&b, key, bbuf, sizeof(bbuf))) == 0;
    if (key->type == CONFIG_KEY_STRING) {
        free(*FIELD_PTR(&a, key, char *));
        free(*FIELD_PTR(&b, key, char *));
    }
    return same;
}

enum config_set_result config_key_set(struct config *cfg, const struct config_key *key,
                                      const char *value, char *why, size_t whylen)
{
    if (key->refused && !refused_value_is_default(key, value)) {
        if (key->default_value[0])
            why_set(why, whylen, "not supported by sluice (%s); only %s is accepted", key->refused,
                    key->default_value);
        else
            why_set(why, whylen, "not supported by sluice (%s); only an empty value is accepted",
                    key->refused);
        return CONFIG_SET_INVALID;
    }
    return key_store(cfg, key, value, why, whylen);
}

/* Prints v / unit exactly, without trailing zeros: 5000000 us in seconds is
 * "5", 500000 is "0.5". digits is log10(unit). */
static void format_fixed(char *buf, size_t buflen, int64_t v, int64_t unit, int digits)
{
    int64_t whole = v / unit, rem = v % unit;
    if (rem == 0) {
        snprintf(buf, buflen, "%" PRId64, whole);
        return;
    }
    while (rem % 10 == 0) {
        rem /= 10;
        digits--;
    }
    snprintf(buf, buflen, "%" PRId64 ".%0*" PRId64, whole, digits, rem);
}

const char *config_key_format(const struct config *cfg, const struct config_key *key, char *buf,
                              size_t buflen)
{
    if (key->type == CONFIG_KEY_STRING)
        return *FIELD_CONST_PTR(cfg, key, char *);
    if (!buf || buflen == 0)
        return "";
    switch (key->type) {
    case CONFIG_KEY_STRING:
        break;
    case CONFIG_KEY_INT:
    case CONFIG_KEY_INT_SIZE:
        snprintf(buf, buflen, "%d", *FIELD_CONST_PTR(cfg, key, int));
        return buf;
    case CONFIG_KEY_SIZE:
        snprintf(buf, buflen, "%" PRId64, *FIELD_CONST_PTR(cfg, key, int64_t));
        return buf;
    case CONFIG_KEY_BOOL:
        snprintf(buf, buflen, "%d", *FIELD_CONST_PTR(cfg, key, bool) ? 1 : 0);
        return buf;
    case CONFIG_KEY_TIME:
        format_fixed(buf, buflen, *FIELD_CONST_PTR(cfg, key, int64_t), USEC_PER_SEC, 6);
        return buf;
    case CONFIG_KEY_TIME_MS:
        format_fixed(buf, buflen, *FIELD_CONST_PTR(cfg, key, int64_t), USEC_PER_MS, 3);
        return buf;
    case CONFIG_KEY_POOL_MODE:
        snprintf(buf, buflen, "%s", pool_mode_str(*FIELD_CONST_PTR(cfg, key, enum pool_mode)));
        return buf;
    case CONFIG_KEY_AUTH_TYPE:
        snprintf(buf, buflen, "%s", auth_type_str(*FIELD_CONST_PTR(cfg, key, enum auth_type)));
        return buf;
    case CONFIG_KEY_OCTAL:
        snprintf(buf, buflen, "%#o", (unsigned)*FIELD_CONST_PTR(cfg, key, int));
        return buf;
    }
    buf[0] = '\0';
    return buf;
}
