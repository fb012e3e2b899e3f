/* replicas.c - picking a read endpoint, and bans (replicas.h). */
#include "replicas.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

const char *replica_ban_reason_str(enum replica_ban_reason r)
{
    static const char *const names[] = {"none",     "connect failed",    "connection broke",
                                        "shutdown", "recovery conflict", "check failed",
                                        "promoted"};
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

enum replica_balance replica_balance_of(const char *word)
{
    if (strcmp(word, "round_robin") == 0)
        return RLB_ROUND_ROBIN;
    if (strcmp(word, "random") == 0)
        return RLB_RANDOM;
    return RLB_LEAST_OUTSTANDING;
}

bool replicas_split_on(const struct database *db, const struct config *cfg)
{
    if (db->n_endpoints < 2 || !db->cfg || (db->cfg->n_replicas == 0 && db->n_hosts == 0))
        return false;
    return db->cfg->read_write_split >= 0 ? db->cfg->read_write_split != 0 : cfg->read_write_split;
}

bool replicas_usable(const struct database *db, int ep, int64_t now)
{
    const struct endpoint *e = &db->endpoints[ep];
    if (!replicas_role_checked(e->role) || e->weight == 0)
        return false;
    /* A host takes reads once a check said it is in recovery: before, it
     * may be the primary. */
    if (e->role == EP_HOST && atomic_load_explicit(&e->seen, memory_order_relaxed) != RS_STANDBY)
        return false;
    /* Past replica_max_lag(_bytes): none until it catches up. */
    if (atomic_load_explicit(&e->lagging, memory_order_relaxed))
        return false;
    /* A ban lasts replica_ban_time, then until a check passes (which
     * clears banned_until). */
    return atomic_load_explicit(&e->banned_until, memory_order_relaxed) == 0;
}

/* xorshift64*, per thread: random balancing needs no shared state. */
static _Thread_local uint64_t rng_state;

static uint64_t rng_next(void)
{
    if (!rng_state)
        rng_state = (uint64_t)(uintptr_t)&rng_state ^ 0x9E3779B97F4A7C15ull;
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* The words of the current config as values, per thread: looked up again
 * only when the config is swapped (its generation changes). */
static _Thread_local struct {
    uint64_t generation;
    enum replica_balance balance;
    bool share;
} tl_settings;

static void settings_refresh(const struct config *cfg)
{
    if (tl_settings.generation == cfg->generation)
        return;
    tl_settings.generation = cfg->generation;
    tl_settings.balance = replica_balance_of(cfg->replica_load_balance);
    tl_settings.share = strcmp(cfg->primary_reads, "share") == 0;
}

bool replicas_reached(const struct database *db, uint64_t lsn)
{
    for (int i = 1; i < db->n_endpoints; i++)
        if (atomic_load_explicit(&db->endpoints[i].lag_lsn, memory_order_relaxed) >= lsn)
            return true;
    return false;
}

bool replicas_any_usable(const struct database *db, int64_t now)
{
    for (int i = 1; i < db->n_endpoints; i++)
        if (replicas_usable(db, i, now))
            return true;
    return false;
}

int replicas_pick(struct database *db, const struct config *cfg, int64_t now, uint64_t min_lsn)
{
    settings_refresh(cfg);
    bool share = tl_settings.share;
    /* The candidates and their weights; the primary counts once when it
     * shares the reads. */
    int cand[DB_MAX_ENDPOINTS], weight[DB_MAX_ENDPOINTS], n = 0, total = 0;
    for (int i = 0; i < db->n_endpoints; i++) {
        /* A replica must have replayed min_lsn (read-your-writes), as the
         * lag monitor last saw it; the primary always has. */
        if ((i == 0 && share) ||
            (i > 0 && replicas_usable(db, i, now) &&
             (!min_lsn ||
              atomic_load_explicit(&db->endpoints[i].lag_lsn, memory_order_relaxed) >= min_lsn))) {
            cand[n] = i;
            weight[n] = i == 0 ? 1 : db->endpoints[i].weight;
            total += weight[n];
            n++;
        }
    }
    if (n == 0 || (n == 1 && cand[0] == 0))
        return -1;
    switch (tl_settings.balance) {
    case RLB_ROUND_ROBIN: {
        uint64_t k = atomic_fetch_add_explicit(&db->rr, 1, memory_order_relaxed) % (uint64_t)total;
        for (int j = 0; j < n; j++) {
            if (k < (uint64_t)weight[j])
                return cand[j];
            k -= (uint64_t)weight[j];
        }
        return cand[n - 1];
    }
    case RLB_RANDOM: {
        uint64_t k = rng_next() % (uint64_t)total;
        for (int j = 0; j < n; j++) {
            if (k < (uint64_t)weight[j])
                return cand[j];
            k -= (uint64_t)weight[j];
        }
        return cand[n - 1];
    }
    case RLB_LEAST_OUTSTANDING:
        break;
    }
    /* Fewest in flight per unit of weight: (o_a + 1) / w_a < (o_b + 1) / w_b.
     * Ties go round: the scan starts at a rotating candidate. */
    int start = (int)(atomic_fetch_add_explicit(&db->rr, 1, memory_order_relaxed) % (uint64_t)n);
    int best = -1;
    int64_t best_o = 0, best_w = 1;
    for (int j = 0; j < n; j++) {
        int i = cand[(start + j) % n];
        int64_t o = atomic_load_explicit(&db->endpoints[i].outstanding, memory_order_relaxed);
        int64_t w = weight[(start + j) % n];
        if (best < 0 || (o + 1) * best_w < (best_o + 1) * w) {
            best = i;
            best_o = o;
            best_w = w;
        }
    }
    return best;
}

static const char *role_word(const struct endpoint *e)
{
    return e->role == EP_HOST ? "host" : "replica";
}

static bool primary_lost(struct database *db, int ep, const char *why);

bool replicas_ban(struct database *db, int ep, enum replica_ban_reason why, const char *detail,
                  const struct config *cfg, int64_t now)
{
    struct endpoint *e = &db->endpoints[ep];
    if (!replicas_role_checked(e->role))
        return false;
    int64_t until = now + cfg->replica_ban_time;
    if (until <= 0)
        until = 1;
    int64_t was = atomic_exchange_explicit(&e->banned_until, until, memory_order_relaxed);
    atomic_store_explicit(&e->ban_reason, (int)why, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->errors, 1, memory_order_relaxed);
    if (was == 0)
        log_warning("%s %s:%d of database %s banned for %llds: %s%s%s", role_word(e), e->host,
                    e->port, db->name, (long long)(cfg->replica_ban_time / 1000000),
                    replica_ban_reason_str(why), detail && detail[0] ? ": " : "",
                    detail ? detail : "");
    if (e->role != EP_HOST || why == RB_CONFLICT)
        return false;
    atomic_store_explicit(&e->seen, RS_DOWN, memory_order_relaxed);
    return primary_lost(db, ep, replica_ban_reason_str(why));
}

void replicas_unban(struct database *db, int ep)
{
    struct endpoint *e = &db->endpoints[ep];
    if (atomic_exchange_explicit(&e->banned_until, 0, memory_order_relaxed) != 0) {
        atomic_store_explicit(&e->ban_reason, RB_NONE, memory_order_relaxed);
        log_info("%s %s:%d of database %s takes reads again", role_word(e), e->host, e->port,
                 db->name);
    }
}

bool replicas_check_due(const struct database *db, int ep, int64_t now)
{
    return now >= atomic_load_explicit(&db->endpoints[ep].next_check, memory_order_relaxed);
}

bool replicas_check_claim(struct database *db, int ep, const struct config *cfg, int64_t now)
{
    struct endpoint *e = &db->endpoints[ep];
    int64_t due = atomic_load_explicit(&e->next_check, memory_order_relaxed);
    if (!replicas_role_checked(e->role) || now < due)
        return false;
    int64_t next = now + (cfg->replica_check_interval > 0 ? cfg->replica_check_interval : 1000000);
    return atomic_compare_exchange_strong_explicit(&e->next_check, &due, next, memory_order_relaxed,
                                                   memory_order_relaxed);
}

bool replicas_awaits_check(const struct database *db, int ep, int64_t now)
{
    int64_t until = atomic_load_explicit(&db->endpoints[ep].banned_until, memory_order_relaxed);
    return until != 0 && now >= until;
}

static bool primary_found(struct database *db, int ep);

bool replicas_check_passed(struct database *db, int ep, bool in_recovery, uint64_t replay_lsn,
                           const struct config *cfg, int64_t now)
{
    struct endpoint *e = &db->endpoints[ep];
    bool changed = false;
    if (!in_recovery && e->role == EP_HOST) {
        /* A host of host= out of recovery: no ban (it takes no reads as
         * long as it is out of recovery anyway), and the primary if there
         * is none. */
        atomic_store_explicit(&e->seen, RS_PRIMARY, memory_order_relaxed);
        atomic_store_explicit(&e->last_check, now, memory_order_relaxed);
        if (atomic_exchange_explicit(&e->banned_until, 0, memory_order_relaxed) != 0)
            atomic_store_explicit(&e->ban_reason, RB_NONE, memory_order_relaxed);
        return primary_found(db, ep);
    }
    if (!in_recovery) {
        if (!atomic_exchange_explicit(&e->promoted, true, memory_order_relaxed))
            log_warning("replica %s:%d of database %s is not in recovery (promoted?): it takes "
                        "no reads, and sluice does not write to it (it is not in host=)",
                        e->host, e->port, db->name);
        replicas_ban(db, ep, RB_PROMOTED, NULL, cfg, now);
        return false;
    }
    atomic_store_explicit(&e->promoted, false, memory_order_relaxed);
    atomic_store_explicit(&e->replay_lsn, replay_lsn, memory_order_relaxed);
    atomic_store_explicit(&e->last_check, now, memory_order_relaxed);
    if (e->role == EP_HOST) {
        atomic_store_explicit(&e->seen, RS_STANDBY, memory_order_relaxed);
        changed = primary_lost(db, ep, "is in recovery");
    }
    if (replicas_awaits_check(db, ep, now))
        replicas_unban(db, ep);
    return changed;
}

bool replicas_check_failed(struct database *db, int ep, const char *why, const struct config *cfg,
                           int64_t now)
{
    return replicas_ban(db, ep, RB_CHECK, why, cfg, now);
}

/* ---- several hosts -------------------------------------------------------- */

const char *replica_seen_str(enum replica_seen st)
{
    static const char *const names[] = {"unchecked", "standby", "primary", "down"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static bool is_host(const struct database *db, int ep)
{
    return ep >= 1 && ep <= db->n_hosts && ep < db->n_endpoints &&
           db->endpoints[ep].role == EP_HOST;
}

bool replicas_discovers(const struct database *db, const struct config *cfg)
{
    return db->n_hosts > 0 && replicas_split_on(db, cfg);
}

int replicas_primary(const struct database *db)
{
    return db->n_hosts > 0 ? atomic_load_explicit(&db->primary, memory_order_relaxed) : 0;
}

/* "host:port" of endpoint ep, or "none". */
static const char *ep_text(const struct database *db, int ep, char *buf, size_t len)
{
    if (ep < 0 || ep >= db->n_endpoints)
        return "none";
    const struct endpoint *e = &db->endpoints[ep];
    snprintf(buf, len, "%s:%d", e->host[0] ? e->host : "(unix socket)", e->port);
    return buf;
}

/* Host ep is not the primary any more (if it was): another host whose last
 * check found it out of recovery takes over, else there is none. */
static bool primary_lost(struct database *db, int ep, const char *why)
{
    int next = -1;
    for (int k = 1; k <= db->n_hosts && next < 0; k++)
        if (k != ep && is_host(db, k) &&
            atomic_load_explicit(&db->endpoints[k].seen, memory_order_relaxed) == RS_PRIMARY)
            next = k;
    int cur = ep;
    if (!atomic_compare_exchange_strong_explicit(&db->primary, &cur, next, memory_order_relaxed,
                                                 memory_order_relaxed))
        return false;
    atomic_store_explicit(&db->last_primary, ep, memory_order_relaxed);
    char a[300], b[300];
    if (next >= 0)
        atomic_store_explicit(&db->endpoints[next].promoted, false, memory_order_relaxed);
    if (next >= 0)
        log_warning("database %s: primary is now %s (was %s, which %s)", db->name,
                    ep_text(db, next, a, sizeof(a)), ep_text(db, ep, b, sizeof(b)), why);
    else
        log_warning("database %s: no primary: %s %s; writes wait for a host of host= to be out "
                    "of recovery",
                    db->name, ep_text(db, ep, b, sizeof(b)), why);
    return true;
}

/* Host ep's check found it out of recovery: the primary, unless another
 * host is and its last check still says so (writes stay where they go:
 * two hosts out of recovery is for whoever runs the cluster to settle). */
static bool primary_found(struct database *db, int ep)
{
    struct endpoint *e = &db->endpoints[ep];
    int cur = atomic_load_explicit(&db->primary, memory_order_relaxed);
    if (cur == ep || !is_host(db, ep))
        return false;
    char a[300], b[300];
    if (cur >= 0 &&
        atomic_load_explicit(&db->endpoints[cur].seen, memory_order_relaxed) == RS_PRIMARY) {
        if (!atomic_exchange_explicit(&e->promoted, true, memory_order_relaxed))
            log_warning("database %s: %s is out of recovery too; writes stay on %s", db->name,
                        ep_text(db, ep, a, sizeof(a)), ep_text(db, cur, b, sizeof(b)));
        return false;
    }
    if (!atomic_compare_exchange_strong_explicit(&db->primary, &cur, ep, memory_order_relaxed,
                                                 memory_order_relaxed))
        return false;
    atomic_store_explicit(&e->promoted, false, memory_order_relaxed);
    int was = cur >= 0 ? cur : atomic_load_explicit(&db->last_primary, memory_order_relaxed);
    if (cur >= 0)
        atomic_store_explicit(&db->last_primary, cur, memory_order_relaxed);
    log_info("database %s: primary is now %s (was %s)", db->name, ep_text(db, ep, a, sizeof(a)),
             ep_text(db, was, b, sizeof(b)));
    return true;
}

bool replicas_no_primary(const struct database *db, const struct config *cfg)
{
    return db->n_hosts > 0 && atomic_load_explicit(&db->primary, memory_order_relaxed) < 0 &&
           replicas_discovers(db, cfg);
}

int replicas_connect_target(struct database *db, const struct config *cfg)
{
    int n = db->n_hosts;
    if (n == 0)
        return 0;
    if (replicas_discovers(db, cfg))
        return atomic_load_explicit(&db->primary, memory_order_relaxed);
    if (db->cfg && strcmp(db->cfg->load_balance_hosts, "disable") == 0) {
        int cur = atomic_load_explicit(&db->lb_current, memory_order_relaxed);
        return cur >= 1 && cur <= n ? cur : 1;
    }
    return 1 +
           (int)(atomic_fetch_add_explicit(&db->lb_turn, 1, memory_order_relaxed) % (uint64_t)n);
}

bool replicas_target_ok(const struct database *db, int target, const struct config *cfg)
{
    if (db->n_hosts == 0 || !replicas_discovers(db, cfg))
        return true;
    return target == atomic_load_explicit(&db->primary, memory_order_relaxed);
}

bool replicas_target_failed(struct database *db, int target, const char *why,
                            const struct config *cfg, int64_t now)
{
    if (!is_host(db, target))
        return false;
    if (replicas_discovers(db, cfg))
        return replicas_ban(db, target, RB_CONNECT, why, cfg, now);
    int next = target % db->n_hosts + 1;
    atomic_compare_exchange_strong_explicit(&db->lb_current, &target, next, memory_order_relaxed,
                                            memory_order_relaxed);
    return false;
}

bool replicas_seen_in_recovery(struct database *db, int ep, const char *why, int64_t now)
{
    if (!is_host(db, ep))
        return false;
    atomic_store_explicit(&db->endpoints[ep].seen, RS_STANDBY, memory_order_relaxed);
    return primary_lost(db, ep, why);
}

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                    : -1;
}

/* Up to 8 hex digits of s[*i..len) until stop (or the end); false if none
 * or not hex. */
static bool hex32(const char *s, size_t len, size_t *i, char stop, uint64_t *out)
{
    int digits = 0;
    *out = 0;
    for (; *i < len && s[*i] != stop; (*i)++, digits++) {
        int d = hexval(s[*i]);
        if (d < 0 || digits >= 8)
            return false;
        *out = *out * 16 + (uint64_t)d;
    }
    return digits > 0;
}

bool replicas_parse_lsn(const char *s, size_t len, uint64_t *out)
{
    uint64_t hi, lo;
    size_t i = 0;
    if (!hex32(s, len, &i, '/', &hi) || i == len)
        return false;
    i++;
    if (!hex32(s, len, &i, '\0', &lo))
        return false;
    *out = hi << 32 | lo;
    return true;
}

enum replica_ban_reason replicas_error_reason(const char *sqlstate, const char *message)
{
    if (!strcmp(sqlstate, "57P01") || !strcmp(sqlstate, "57P02") || !strcmp(sqlstate, "57P03"))
        return RB_SHUTDOWN;
    /* Recovery conflicts come with several codes (40001, 40P01, 57P04,
     * 55P03); the text says which they are. */
    if (message && strstr(message, "conflict with recovery"))
        return RB_CONFLICT;
    return RB_NONE;
}
