/* replicas.c - picking a read endpoint, and bans (replicas.h). */
#include "replicas.h"

#include <stdatomic.h>
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
    if (db->n_endpoints < 2 || !db->cfg || db->cfg->n_replicas == 0)
        return false;
    return db->cfg->read_write_split >= 0 ? db->cfg->read_write_split != 0 : cfg->read_write_split;
}

bool replicas_usable(const struct database *db, int ep, int64_t now)
{
    const struct endpoint *e = &db->endpoints[ep];
    if (e->role != EP_REPLICA || e->weight == 0)
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

int replicas_pick(struct database *db, const struct config *cfg, int64_t now)
{
    settings_refresh(cfg);
    bool share = tl_settings.share;
    /* The candidates and their weights; the primary counts once when it
     * shares the reads. */
    int cand[DB_MAX_ENDPOINTS], weight[DB_MAX_ENDPOINTS], n = 0, total = 0;
    for (int i = 0; i < db->n_endpoints; i++) {
        if ((i == 0 && share) || (i > 0 && replicas_usable(db, i, now))) {
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

void replicas_ban(struct database *db, int ep, enum replica_ban_reason why, const char *detail,
                  const struct config *cfg, int64_t now)
{
    struct endpoint *e = &db->endpoints[ep];
    if (e->role != EP_REPLICA)
        return;
    int64_t until = now + cfg->replica_ban_time;
    if (until <= 0)
        until = 1;
    int64_t was = atomic_exchange_explicit(&e->banned_until, until, memory_order_relaxed);
    atomic_store_explicit(&e->ban_reason, (int)why, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->errors, 1, memory_order_relaxed);
    if (was == 0)
        log_warning("replica %s:%d of database %s banned for %llds: %s%s%s", e->host, e->port,
                    db->name, (long long)(cfg->replica_ban_time / 1000000),
                    replica_ban_reason_str(why), detail && detail[0] ? ": " : "",
                    detail ? detail : "");
}

void replicas_unban(struct database *db, int ep)
{
    struct endpoint *e = &db->endpoints[ep];
    if (atomic_exchange_explicit(&e->banned_until, 0, memory_order_relaxed) != 0) {
        atomic_store_explicit(&e->ban_reason, RB_NONE, memory_order_relaxed);
        log_info("replica %s:%d of database %s takes reads again", e->host, e->port, db->name);
    }
}

bool replicas_check_claim(struct database *db, int ep, const struct config *cfg, int64_t now)
{
    struct endpoint *e = &db->endpoints[ep];
    int64_t due = atomic_load_explicit(&e->next_check, memory_order_relaxed);
    if (e->role != EP_REPLICA || now < due)
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

void replicas_check_passed(struct database *db, int ep, bool in_recovery, uint64_t replay_lsn,
                           const struct config *cfg, int64_t now)
{
    struct endpoint *e = &db->endpoints[ep];
    if (!in_recovery) {
        if (!atomic_exchange_explicit(&e->promoted, true, memory_order_relaxed))
            log_warning("replica %s:%d of database %s is not in recovery (promoted?): it takes "
                        "no reads, and sluice does not write to it",
                        e->host, e->port, db->name);
        replicas_ban(db, ep, RB_PROMOTED, NULL, cfg, now);
        return;
    }
    atomic_store_explicit(&e->promoted, false, memory_order_relaxed);
    atomic_store_explicit(&e->replay_lsn, replay_lsn, memory_order_relaxed);
    atomic_store_explicit(&e->last_check, now, memory_order_relaxed);
    if (replicas_awaits_check(db, ep, now))
        replicas_unban(db, ep);
}

void replicas_check_failed(struct database *db, int ep, const char *why, const struct config *cfg,
                           int64_t now)
{
    replicas_ban(db, ep, RB_CHECK, why, cfg, now);
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
