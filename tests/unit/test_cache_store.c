/* test_cache_store.c - the result cache store: get/put/expiry, the memory
 * bound and its accounting (the store's and each owner's), TinyLFU
 * admission and LRU eviction, invalidation by table (entries dropped, fills
 * refused), readers' references outliving eviction, single-flight, and
 * several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache_store.h"

/* An allocator that counts what the store holds, to compare with what it
 * says it holds. */
struct counter {
    _Atomic long long live;
    _Atomic long long calls;
};

static void *count_alloc(size_t n, void *arg)
{
    struct counter *c = arg;
    atomic_fetch_add(&c->live, (long long)n);
    atomic_fetch_add(&c->calls, 1);
    return malloc(n);
}

static void count_free(void *p, size_t n, void *arg)
{
    struct counter *c = arg;
    atomic_fetch_sub(&c->live, (long long)n);
    free(p);
}

static struct cache_store *make_store(struct counter *c, size_t max_bytes, size_t max_entry)
{
    struct cache_store_opts o = {
        .max_bytes = max_bytes,
        .max_entry_size = max_entry,
        .alloc = count_alloc,
        .free = count_free,
        .alloc_arg = c,
    };
    return cache_store_new(&o);
}

/* The owners' figures add up to the store's. */
static void assert_owners_sum(struct cache_store *s)
{
    struct cache_store_stats st;
    cache_store_stats(s, &st);
    struct cache_owner_stats sum = {0};
    for (unsigned i = 0; i < CACHE_OWNERS; i++) {
        struct cache_owner_stats o;
        cache_store_owner_stats(s, i, &o);
        sum.entries += o.entries;
        sum.bytes += o.bytes;
        sum.evictions += o.evictions;
        sum.expired += o.expired;
        sum.invalidated += o.invalidated;
    }
    assert_int_equal(sum.entries, st.entries);
    assert_int_equal(sum.bytes, st.bytes);
    assert_int_equal(sum.evictions, st.evictions);
    assert_int_equal(sum.expired, st.expired);
    assert_int_equal(sum.invalidated, st.invalidated);
}

/* What the allocator holds equals what the store accounts, to the byte
 * (and the owners' figures are the store's). */
static void assert_accounted(struct cache_store *s, struct counter *c)
{
    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(atomic_load(&c->live), (long long)(st.bytes + st.overhead_bytes));
    assert_true(st.bytes + st.overhead_bytes <= st.max_bytes);
    assert_owners_sum(s);
}

/* Puts key -> value reading tables for owner, as the wiring does: get (a
 * miss counts the key's use), fill begin, put. */
static enum cache_put_result fill_as(struct cache_store *s, unsigned owner, const char *key,
                                     const char *value, const uint64_t *tables, size_t n,
                                     uint64_t now, uint64_t exp)
{
    struct cache_entry *e = cache_store_get(s, key, strlen(key), now);
    cache_entry_release(e);
    struct cache_fill *f = cache_store_fill_begin(s, owner, tables, n);
    assert_non_null(f);
    enum cache_put_result r =
        cache_store_put(s, f, key, strlen(key), value, strlen(value), now, exp);
    cache_fill_free(f);
    return r;
}

/* ... for the one owner most tests have. */
static enum cache_put_result fill(struct cache_store *s, const char *key, const char *value,
                                  const uint64_t *tables, size_t n, uint64_t now, uint64_t exp)
{
    return fill_as(s, cache_store_owner(s, 1, "db"), key, value, tables, n, now, exp);
}

/* True if key is cached with value. */
static bool has(struct cache_store *s, const char *key, const char *value, uint64_t now)
{
    struct cache_entry *e = cache_store_get(s, key, strlen(key), now);
    if (!e)
        return false;
    size_t len;
    const uint8_t *v = cache_entry_value(e, &len);
    bool same = len == strlen(value) && memcmp(v, value, len) == 0;
    cache_entry_release(e);
    return same;
}

static void test_limits(void **state)
{
    (void)state;
    struct counter c = {0};
    /* Too small for the fixed part, or for one max_entry_size entry per shard. */
    assert_null(make_store(&c, 1000, 10));
    size_t ov = cache_store_overhead(1 << 20);
    assert_null(make_store(&c, 1 << 20, ((1 << 20) - ov) / CACHE_SHARDS + 1));
    assert_int_equal(atomic_load(&c.live), 0);

    struct cache_store *s = make_store(&c, 1 << 20, 4096);
    assert_non_null(s);
    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(st.overhead_bytes, ov);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(atomic_load(&c.live), (long long)ov); /* the overhead is exact too */
    cache_store_free(s);
    assert_int_equal(atomic_load(&c.live), 0);
    assert_string_equal(cache_put_result_str(CACHE_PUT_STALE), "stale");
    assert_string_equal(cache_flight_role_str(CACHE_FLIGHT_WAIT), "wait");
}

static void test_get_put_expiry(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 1 << 20, 4096);
    uint64_t t1 = 7;
    assert_null(cache_store_get(s, "k", 1, 100));
    assert_int_equal(fill(s, "k", "answer", &t1, 1, 100, 200), CACHE_PUT_STORED);

    struct cache_entry *e = cache_store_get(s, "k", 1, 150);
    assert_non_null(e);
    size_t len;
    const uint8_t *v = cache_entry_value(e, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(v, "answer", 6);
    assert_int_equal(cache_entry_expires(e), 200);
    cache_entry_release(e);
    assert_null(cache_store_get(s, "K", 1, 150)); /* keys are bytes */
    assert_null(cache_store_get(s, "kk", 2, 150));

    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, cache_store_entry_cost(1, 6, 1));
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 4);
    assert_int_equal(st.stores, 1);
    assert_accounted(s, &c);

    /* A refill replaces. */
    assert_int_equal(fill(s, "k", "newer", &t1, 1, 160, 300), CACHE_PUT_STORED);
    assert_true(has(s, "k", "newer", 199));
    cache_store_stats(s, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, cache_store_entry_cost(1, 5, 1));

    /* At its expiry it is gone, and dropped. */
    assert_null(cache_store_get(s, "k", 1, 300));
    cache_store_stats(s, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.bytes, 0);

    /* No table, an empty value: both fine. */
    assert_int_equal(fill(s, "one", "", NULL, 0, 0, 10), CACHE_PUT_STORED);
    assert_true(has(s, "one", "", 5));

    /* Too big: refused and counted. */
    char *big = malloc(4098);
    memset(big, 'x', 4097);
    big[4097] = 0;
    assert_int_equal(fill(s, "big", big, &t1, 1, 0, 10), CACHE_PUT_TOO_BIG);
    big[4096] = 0;
    assert_int_equal(fill(s, "big", big, &t1, 1, 0, 10), CACHE_PUT_STORED);
    free(big);
    cache_store_stats(s, &st);
    assert_int_equal(st.refused_too_big, 1);
    assert_accounted(s, &c);
    cache_store_free(s);
    assert_int_equal(atomic_load(&c.live), 0);
}

/* Many unique keys through a small store: never above the bound, and the
 * accounting is what was allocated, at every step. */
static void test_memory_bound(void **state)
{
    (void)state;
    struct counter c = {0};
    const size_t max = 256 * 1024;
    struct cache_store *s = make_store(&c, max, 2048);
    uint64_t tables[3] = {1, 2, 3};
    char key[64], value[1500];
    int stored = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "select %d", i);
        size_t vlen = (size_t)(i * 37 % 1400) + 1;
        memset(value, 'a' + i % 26, vlen);
        value[vlen] = 0;
        /* Every other key is asked for twice first: it is more frequent than
         * the one-off ones, so the store keeps changing. */
        if (i % 2)
            cache_entry_release(cache_store_get(s, key, strlen(key), 0));
        if (fill(s, key, value, tables, (size_t)(i % 4), 0, 1000) == CACHE_PUT_STORED)
            stored++;
        if (i % 97 == 0)
            assert_accounted(s, &c);
    }
    assert_accounted(s, &c);
    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_true(st.bytes + st.overhead_bytes <= max);
    assert_true(st.evictions > 0);
    assert_true(st.refused_admission > 0);
    assert_int_equal(st.stores, (uint64_t)stored);
    assert_int_equal(st.stores - st.evictions, st.entries);
    /* Nearly full: the bound is used, not just respected. */
    assert_true(st.bytes > (max - st.overhead_bytes) / 2);
    cache_store_clear(s);
    cache_store_stats(s, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    cache_store_free(s);
    assert_int_equal(atomic_load(&c.live), 0);
}

/* A key asked for steadily survives a stream of one-off keys even though
 * more of them than a shard holds pass between two of its uses (plain LRU
 * would evict it every time): TinyLFU refuses newcomers less frequent than
 * the LRU end. And keys that become frequent are let in, evicting. */
static void test_hot_key_kept(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 128 * 1024, 1024);
    char value[900];
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = 0;
    assert_int_equal(fill(s, "hot", value, NULL, 0, 0, 1000), CACHE_PUT_STORED);
    for (int i = 0; i < 10; i++)
        assert_true(has(s, "hot", value, 1));
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "cold %d", i);
        fill(s, key, value, NULL, 0, 1, 1000);
        if (i % 200 == 199) /* ~12 one-off keys of its shard in between */
            assert_true(has(s, "hot", value, 2));
    }
    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_true(st.refused_admission > 0);

    /* Frequent newcomers do get in, evicting the one-off keys (until the
     * shards are full of them: then they tie with each other). The hot key
     * stays in use meanwhile, more than any of them: the sketch halves its
     * counters as it goes, so a key left unused here would rightly fade to
     * the newcomers' level and be evicted (this test failed about 1 run in
     * 300 when it was not used). */
    uint64_t evictions = st.evictions;
    int stored = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "warm %d", i);
        for (int j = 0; j < 3; j++)
            cache_entry_release(cache_store_get(s, key, strlen(key), 1));
        if (fill(s, key, value, NULL, 0, 1, 1000) == CACHE_PUT_STORED)
            stored++;
        if (i % 20 == 19)
            assert_true(has(s, "hot", value, 2));
    }
    assert_true(stored > 80);
    cache_store_stats(s, &st);
    assert_true(st.evictions >= evictions + (uint64_t)stored);
    assert_true(has(s, "hot", value, 2));
    assert_accounted(s, &c);
    cache_store_free(s);
}

/* Finds n keys of one shard: "0", "1", ... */
static void keys_of_shard(struct cache_store *s, unsigned shard, char keys[][32], int n)
{
    int found = 0;
    for (int i = 0; found < n; i++) {
        snprintf(keys[found], 32, "%d", i);
        if (cache_store_key_shard(s, keys[found], strlen(keys[found])) == shard)
            found++;
    }
}

/* Within a shard: the victim is the least recently used entry, and only a
 * more frequent key evicts it; an expired one goes whatever its use. */
static void test_lru_order(void **state)
{
    (void)state;
    struct counter c = {0};
    size_t max = 1 << 20;
    struct cache_store *s = make_store(&c, max, 32768);
    size_t budget = (max - cache_store_overhead(max)) / CACHE_SHARDS;
    /* Values sized so that three entries fit in a shard, not four. */
    size_t vlen = budget / 3 - cache_store_entry_cost(4, 0, 0);
    char *value = malloc(vlen + 1);
    memset(value, 'x', vlen);
    value[vlen] = 0;
    char k[5][32];
    keys_of_shard(s, 3, k, 5);
    assert_true(strlen(k[4]) <= 4);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fill(s, k[i], value, NULL, 0, 0, i == 1 ? 50 : 1000), CACHE_PUT_STORED);
    /* Used twice now, and the most recent: k0, k2, k1 (k1 expires at 50). */
    assert_true(has(s, k[0], value, 1));
    /* k3, asked for once: no more frequent than k1, the LRU end, which
     * stays, moved to the MRU end (k1, k0, k2). */
    assert_int_equal(fill(s, k[3], value, NULL, 0, 1, 1000), CACHE_PUT_NOT_ADMITTED);
    /* Asked for again, k3 beats k2, now the LRU end, and only k2 goes. */
    assert_int_equal(fill(s, k[3], value, NULL, 0, 1, 1000), CACHE_PUT_STORED);
    assert_false(has(s, k[2], value, 1));
    assert_true(has(s, k[1], value, 1));
    /* k1, k3, k0 after these lookups; k0, the LRU end, is used 3 times, k4
     * once: k4 is refused and k0 moves up (k0, k1, k3)... */
    assert_true(has(s, k[0], value, 1));
    assert_true(has(s, k[3], value, 1));
    assert_true(has(s, k[1], value, 1));
    assert_int_equal(fill(s, k[4], value, NULL, 0, 1, 1000), CACHE_PUT_NOT_ADMITTED);
    /* ... but once k1 has expired, it goes whatever its use. */
    assert_true(has(s, k[3], value, 1)); /* k3, k0, k1: k1 is the LRU end */
    assert_int_equal(fill(s, k[4], value, NULL, 0, 60, 1000), CACHE_PUT_STORED);
    assert_false(has(s, k[1], value, 60));
    assert_true(has(s, k[0], value, 60));
    assert_true(has(s, k[3], value, 60));
    assert_true(has(s, k[4], value, 60));
    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.refused_admission, 2);
    free(value);
    assert_accounted(s, &c);
    cache_store_free(s);
}

/* A reader's reference keeps the value valid, and its bytes counted, after
 * the store dropped the entry. */
static void test_reference_outlives(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 1 << 20, 4096);
    uint64_t t = 9;
    assert_int_equal(fill(s, "k", "kept while read", &t, 1, 0, 100), CACHE_PUT_STORED);
    struct cache_entry *e = cache_store_get(s, "k", 1, 1);
    assert_non_null(e);
    assert_int_equal(cache_store_invalidate_table(s, 9), 1);
    assert_null(cache_store_get(s, "k", 1, 1));
    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, cache_store_entry_cost(1, 15, 1)); /* still allocated */
    assert_accounted(s, &c);
    size_t len;
    assert_memory_equal(cache_entry_value(e, &len), "kept while read", 15);
    cache_entry_release(e);
    cache_store_stats(s, &st);
    assert_int_equal(st.bytes, 0);
    assert_accounted(s, &c);
    cache_store_free(s);
}

static uint64_t g_seen_gen[8];

static void table_cb(uint64_t table, uint64_t gen, uint64_t dropped, void *arg)
{
    (void)arg;
    if (table < 8)
        g_seen_gen[table] = gen * 100 + dropped;
}

static void test_invalidate(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 1 << 20, 4096);
    uint64_t t1 = 1, t2 = 2, t12[] = {1, 2, 1};
    assert_int_equal(fill(s, "a", "reads 1", &t1, 1, 0, 100), CACHE_PUT_STORED);
    assert_int_equal(fill(s, "b", "reads 2", &t2, 1, 0, 100), CACHE_PUT_STORED);
    assert_int_equal(fill(s, "c", "reads 1 and 2", t12, 3, 0, 100), CACHE_PUT_STORED);
    assert_int_equal(fill(s, "d", "reads none", NULL, 0, 0, 100), CACHE_PUT_STORED);
    assert_int_equal(cache_store_table_gen(s, 1), 0);
    assert_int_equal(cache_store_table_gen(s, 42), 0); /* unknown */

    assert_int_equal(cache_store_invalidate_table(s, 1), 2);
    assert_int_equal(cache_store_table_gen(s, 1), 1);
    assert_false(has(s, "a", "reads 1", 1));
    assert_false(has(s, "c", "reads 1 and 2", 1));
    assert_true(has(s, "b", "reads 2", 1));
    assert_true(has(s, "d", "reads none", 1));
    assert_int_equal(cache_store_invalidate_table(s, 1), 0);
    assert_int_equal(cache_store_invalidate_table(s, 2), 1);
    assert_int_equal(cache_store_invalidate_table(s, 5), 0); /* never cached */
    assert_int_equal(cache_store_table_gen(s, 5), 1);

    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(st.invalidations, 4);
    assert_int_equal(st.invalidated, 3);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.tables, 3);
    memset(g_seen_gen, 0, sizeof(g_seen_gen));
    cache_store_tables_each(s, table_cb, NULL);
    assert_int_equal(g_seen_gen[1], 202); /* two invalidations, two entries dropped */
    assert_int_equal(g_seen_gen[2], 101);
    assert_int_equal(g_seen_gen[5], 100);
    assert_accounted(s, &c);

    /* Clear drops the rest. */
    cache_store_clear(s);
    assert_false(has(s, "d", "reads none", 1));
    assert_accounted(s, &c);
    cache_store_free(s);
}

/* A fill that began before an invalidation of one of its tables (or a
 * clear) is not stored; one that began after is. */
static void test_fill_refused_stale(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 1 << 20, 4096);
    uint64_t tabs[] = {1, 2};
    struct cache_fill *f = cache_store_fill_begin(s, CACHE_OWNER_OTHERS, tabs, 2);
    struct cache_fill *other = cache_store_fill_begin(s, CACHE_OWNER_OTHERS, tabs + 1, 1);
    cache_store_invalidate_table(s, 1);
    assert_int_equal(cache_store_put(s, f, "k", 1, "old", 3, 0, 100), CACHE_PUT_STALE);
    assert_int_equal(cache_store_put(s, other, "o", 1, "fine", 4, 0, 100), CACHE_PUT_STORED);
    cache_fill_free(f);
    cache_fill_free(other);
    assert_null(cache_store_get(s, "k", 1, 1));

    f = cache_store_fill_begin(s, CACHE_OWNER_OTHERS, tabs, 2);
    assert_int_equal(cache_store_put(s, f, "k", 1, "new", 3, 0, 100), CACHE_PUT_STORED);
    cache_fill_free(f);
    assert_true(has(s, "k", "new", 1));

    f = cache_store_fill_begin(s, CACHE_OWNER_OTHERS, NULL, 0);
    cache_store_clear(s);
    assert_int_equal(cache_store_put(s, f, "n", 1, "x", 1, 0, 100), CACHE_PUT_STALE);
    cache_fill_free(f);

    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(st.refused_stale, 2);
    assert_int_equal(st.clears, 1);
    assert_accounted(s, &c);
    cache_store_free(s);
}

static void test_single_flight(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 1 << 20, 4096);
    struct cache_waiter lw = {0}, w1 = {0}, w2 = {0}, w3 = {0};
    struct cache_flight *lead = NULL, *other = NULL;
    struct cache_entry *hit = NULL;

    assert_int_equal(cache_store_get_or_join(s, "q", 1, 0, &lw, &hit, &lead), CACHE_FLIGHT_LEAD);
    assert_null(hit);
    assert_non_null(lead);
    assert_int_equal(cache_store_get_or_join(s, "q", 1, 0, &w1, &hit, &other), CACHE_FLIGHT_WAIT);
    assert_int_equal(cache_store_flight_join(s, "q", 1, &w2, &other), CACHE_FLIGHT_WAIT);
    assert_int_equal(cache_store_flight_join(s, "q", 1, &w3, &other), CACHE_FLIGHT_WAIT);
    assert_null(other);
    assert_int_equal(w1.end, CACHE_FLIGHT_PENDING);
    /* Another key has its own flight. */
    struct cache_flight *lead2 = NULL;
    assert_int_equal(cache_store_flight_join(s, "r", 1, &lw, &lead2), CACHE_FLIGHT_LEAD);

    /* w3 leaves (its client went away); a waiter not queued is not found. */
    assert_true(cache_store_flight_cancel(s, "q", 1, &w3));
    assert_false(cache_store_flight_cancel(s, "q", 1, &w3));
    assert_false(cache_store_flight_cancel(s, "zz", 2, &w3));
    /* After the tail's removal, a new waiter still queues at the end. */
    assert_int_equal(cache_store_flight_join(s, "q", 1, &w3, &other), CACHE_FLIGHT_WAIT);

    /* The leader fills, then hands the waiters back, oldest first. */
    struct cache_fill *f = cache_store_fill_begin(s, CACHE_OWNER_OTHERS, NULL, 0);
    assert_int_equal(cache_store_put(s, f, "q", 1, "rows", 4, 0, 100), CACHE_PUT_STORED);
    cache_fill_free(f);
    struct cache_waiter *ws = cache_store_flight_leave(s, lead, CACHE_FLIGHT_FILLED);
    assert_ptr_equal(ws, &w1);
    assert_ptr_equal(w1.next, &w2);
    assert_ptr_equal(w2.next, &w3);
    assert_null(w3.next);
    assert_int_equal(w1.end, CACHE_FLIGHT_FILLED);
    assert_int_equal(w3.end, CACHE_FLIGHT_FILLED);
    assert_false(cache_store_flight_cancel(s, "q", 1, &w1)); /* already handed back */
    /* The waiters look again: a hit. */
    assert_int_equal(cache_store_get_or_join(s, "q", 1, 1, &w1, &hit, &other), CACHE_FLIGHT_HIT);
    assert_non_null(hit);
    cache_entry_release(hit);

    /* Failure: the waiters are released to run on their own; the next miss
     * leads a new flight. */
    assert_int_equal(cache_store_flight_join(s, "r", 1, &w1, &other), CACHE_FLIGHT_WAIT);
    assert_int_equal(cache_store_flight_join(s, "r", 1, &w2, &other), CACHE_FLIGHT_WAIT);
    ws = cache_store_flight_leave(s, lead2, CACHE_FLIGHT_FAILED);
    assert_ptr_equal(ws, &w1);
    assert_ptr_equal(w1.next, &w2);
    assert_null(w2.next);
    assert_int_equal(w1.end, CACHE_FLIGHT_FAILED);
    assert_int_equal(w2.end, CACHE_FLIGHT_FAILED);
    assert_int_equal(cache_store_flight_join(s, "r", 1, &w1, &lead2), CACHE_FLIGHT_LEAD);
    assert_null(cache_store_flight_leave(s, lead2, CACHE_FLIGHT_FAILED));

    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(st.flights, 3);
    assert_int_equal(st.flight_waits, 6);
    cache_store_free(s);
    assert_int_equal(atomic_load(&c.live), 0);
}

static struct cache_owner_stats owner_of(struct cache_store *s, unsigned slot)
{
    struct cache_owner_stats o;
    cache_store_owner_stats(s, slot, &o);
    return o;
}

/* An owner's slot is taken once and kept, with its name; past the store's
 * slots every new id shares CACHE_OWNER_OTHERS. */
static void test_owner_slots(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 1 << 20, 4096);
    assert_int_equal(cache_store_owner_find(s, 42), -1);
    unsigned a = cache_store_owner(s, 42, "alpha");
    assert_true(a < CACHE_OWNER_OTHERS);
    assert_int_equal(cache_store_owner(s, 42, "ignored"), a);
    assert_int_equal(cache_store_owner_find(s, 42), (int)a);
    assert_string_equal(owner_of(s, a).name, "alpha");
    assert_int_equal(owner_of(s, a).id, 42);
    assert_int_equal(cache_store_owner(s, 0, "zero"), CACHE_OWNER_OTHERS);
    assert_string_equal(owner_of(s, CACHE_OWNER_OTHERS).name, CACHE_OWNER_OTHERS_NAME);
    /* A name is cut to CACHE_OWNER_NAME - 1 bytes. */
    char longname[200];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    unsigned l = cache_store_owner(s, 43, longname);
    assert_int_equal(strlen(owner_of(s, l).name), CACHE_OWNER_NAME - 1);
    /* Fill every slot: the ids after are the others'. */
    bool seen[CACHE_OWNERS] = {false};
    seen[a] = seen[l] = true;
    for (uint64_t id = 1000; id < 1000 + CACHE_OWNERS - 3; id++) {
        unsigned i = cache_store_owner(s, id, "x");
        assert_true(i < CACHE_OWNER_OTHERS);
        assert_false(seen[i]);
        seen[i] = true;
    }
    assert_int_equal(cache_store_owner(s, 5000, "late"), CACHE_OWNER_OTHERS);
    assert_int_equal(cache_store_owner_find(s, 5000), -1);
    assert_int_equal(cache_store_owner(s, 42, "alpha"), a); /* still found */
    /* The others' entries are counted there. */
    assert_int_equal(fill_as(s, cache_store_owner(s, 5001, "later"), "k", "v", NULL, 0, 0, 10),
                     CACHE_PUT_STORED);
    assert_int_equal(owner_of(s, CACHE_OWNER_OTHERS).entries, 1);
    assert_int_equal(owner_of(s, CACHE_OWNER_OTHERS).bytes, cache_store_entry_cost(1, 1, 0));
    assert_int_equal(owner_of(s, CACHE_OWNERS).id, 0); /* out of range: zeros */
    assert_accounted(s, &c);
    cache_store_free(s);
    assert_int_equal(atomic_load(&c.live), 0);
}

/* Two owners' entries and bytes, exact at every insert and removal, by the
 * reason of removal: replaced, expired, invalidated, cleared (with a
 * reader's reference keeping its bytes counted until its release). */
static void test_owner_accounting(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 1 << 20, 4096);
    unsigned a = cache_store_owner(s, 101, "a"), b = cache_store_owner(s, 202, "b");
    assert_int_not_equal(a, b);
    uint64_t ta = 1, tb = 2;
    assert_int_equal(fill_as(s, a, "a1", "one", &ta, 1, 0, 100), CACHE_PUT_STORED);
    assert_int_equal(fill_as(s, a, "a2", "two!", &ta, 1, 0, 100), CACHE_PUT_STORED);
    assert_int_equal(fill_as(s, a, "a3", "three", &ta, 1, 0, 50), CACHE_PUT_STORED);
    assert_int_equal(fill_as(s, b, "b1", "b-one", &tb, 1, 0, 100), CACHE_PUT_STORED);
    assert_int_equal(fill_as(s, b, "b2", "b-two", &tb, 1, 0, 100), CACHE_PUT_STORED);
    size_t a_bytes = cache_store_entry_cost(2, 3, 1) + cache_store_entry_cost(2, 4, 1) +
                     cache_store_entry_cost(2, 5, 1);
    assert_int_equal(owner_of(s, a).entries, 3);
    assert_int_equal(owner_of(s, a).bytes, a_bytes);
    assert_int_equal(owner_of(s, b).entries, 2);
    assert_int_equal(owner_of(s, b).bytes, 2 * cache_store_entry_cost(2, 5, 1));
    assert_accounted(s, &c);

    /* Replaced (a refill, here by b: the entry is now b's). */
    assert_int_equal(fill_as(s, b, "a1", "b's now", &tb, 1, 0, 100), CACHE_PUT_STORED);
    a_bytes -= cache_store_entry_cost(2, 3, 1);
    assert_int_equal(owner_of(s, a).entries, 2);
    assert_int_equal(owner_of(s, a).bytes, a_bytes);
    assert_int_equal(owner_of(s, b).entries, 3);
    assert_accounted(s, &c);

    /* Expired: found past its expiry. */
    assert_null(cache_store_get(s, "a3", 2, 60));
    a_bytes -= cache_store_entry_cost(2, 5, 1);
    assert_int_equal(owner_of(s, a).expired, 1);
    assert_int_equal(owner_of(s, a).entries, 1);
    assert_int_equal(owner_of(s, a).bytes, a_bytes);
    assert_int_equal(owner_of(s, b).expired, 0);
    assert_accounted(s, &c);

    /* Invalidated: b's table goes, with b's three entries, not a's. A
     * reader holding one keeps its bytes counted until its release. */
    struct cache_entry *held = cache_store_get(s, "b1", 2, 1);
    assert_non_null(held);
    assert_int_equal(cache_store_invalidate_table(s, tb), 3);
    assert_int_equal(owner_of(s, b).entries, 0);
    assert_int_equal(owner_of(s, b).invalidated, 3);
    assert_int_equal(owner_of(s, b).bytes, cache_store_entry_cost(2, 5, 1));
    assert_int_equal(owner_of(s, a).entries, 1);
    assert_int_equal(owner_of(s, a).invalidated, 0);
    assert_accounted(s, &c);
    cache_entry_release(held);
    assert_int_equal(owner_of(s, b).bytes, 0);
    assert_accounted(s, &c);

    /* Cleared: everything, back to 0. */
    held = cache_store_get(s, "a2", 2, 1);
    assert_non_null(held);
    cache_store_clear(s);
    assert_int_equal(owner_of(s, a).entries, 0);
    assert_int_equal(owner_of(s, a).cleared, 1);
    assert_int_equal(owner_of(s, a).bytes, a_bytes); /* still held */
    cache_entry_release(held);
    assert_int_equal(owner_of(s, a).bytes, 0);
    assert_int_equal(owner_of(s, b).cleared, 0);
    assert_accounted(s, &c);
    cache_store_free(s);
    assert_int_equal(atomic_load(&c.live), 0);
}

/* Evictions are counted for the owner of the entry evicted: a fills a
 * small store with one-off keys, then b's frequent keys push them out. */
static void test_owner_evictions(void **state)
{
    (void)state;
    struct counter c = {0};
    struct cache_store *s = make_store(&c, 128 * 1024, 1024);
    unsigned a = cache_store_owner(s, 101, "a"), b = cache_store_owner(s, 202, "b");
    char key[32], value[900];
    memset(value, 'v', sizeof(value) - 1);
    value[sizeof(value) - 1] = 0;
    for (int i = 0; i < 400; i++) {
        snprintf(key, sizeof(key), "a %d", i);
        fill_as(s, a, key, value, NULL, 0, 0, 1000);
    }
    struct cache_store_stats st;
    cache_store_stats(s, &st);
    assert_int_equal(owner_of(s, a).entries, st.entries);
    assert_int_equal(owner_of(s, a).evictions, st.evictions);
    uint64_t a_entries = st.entries, a_evictions = st.evictions;
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "b %d", i);
        for (int j = 0; j < 3; j++) /* more frequent than a's: admitted */
            cache_entry_release(cache_store_get(s, key, strlen(key), 1));
        fill_as(s, b, key, value, NULL, 0, 1, 1000);
    }
    /* (A few of b's may go too, once the sketch has halved their counts.) */
    assert_true(owner_of(s, b).entries > 50);
    assert_true(owner_of(s, a).evictions >= a_evictions + 50);
    assert_true(owner_of(s, a).entries < a_entries - 50);
    assert_true(owner_of(s, b).evictions < owner_of(s, a).evictions - a_evictions);
    assert_accounted(s, &c);
    cache_store_free(s);
    assert_int_equal(atomic_load(&c.live), 0);
}

/* --- threads ------------------------------------------------------------- */

#define THREADS    4
#define ITERATIONS 20000
#define KEYS       400
#define TABLES     8

struct shared {
    struct cache_store *s;
    _Atomic int stale_reads;
    _Atomic int hits;
};

struct thread_arg {
    struct shared *sh;
    unsigned seed;
};

/* Key i reads table i % TABLES; its value records that table's generation
 * when its fill began. A hit must never carry a generation older than one
 * read before the lookup. */
static void one_op(struct shared *sh, unsigned *seed, uint64_t now)
{
    struct cache_store *s = sh->s;
    int k = rand_r(seed) % KEYS;
    uint64_t table = (uint64_t)(k % TABLES);
    char key[32];
    snprintf(key, sizeof(key), "key %d", k);
    int op = rand_r(seed) % 100;
    if (op < 3) {
        cache_store_invalidate_table(s, table);
        return;
    }
    if (op < 4) {
        struct cache_store_stats st;
        cache_store_stats(s, &st);
        return;
    }
    uint64_t before = cache_store_table_gen(s, table);
    struct cache_waiter w = {0};
    struct cache_entry *e = NULL;
    struct cache_flight *lead = NULL;
    enum cache_flight_role r = cache_store_get_or_join(s, key, strlen(key), now, &w, &e, &lead);
    if (r == CACHE_FLIGHT_HIT) {
        size_t len;
        const uint8_t *v = cache_entry_value(e, &len);
        uint64_t gen;
        assert_true(len >= sizeof(gen));
        memcpy(&gen, v, sizeof(gen));
        if (gen < before)
            atomic_fetch_add(&sh->stale_reads, 1);
        atomic_fetch_add(&sh->hits, 1);
        cache_entry_release(e);
        return;
    }
    if (r == CACHE_FLIGHT_WAIT) {
        /* Nothing wakes us here: leave at once (a client gone). */
        if (!cache_store_flight_cancel(s, key, strlen(key), &w))
            assert_int_not_equal(w.end, CACHE_FLIGHT_PENDING);
        return;
    }
    /* Five owners, whose slots are taken by whichever thread comes first. */
    char owner[8];
    snprintf(owner, sizeof(owner), "db%d", k % 5);
    struct cache_fill *f =
        cache_store_fill_begin(s, cache_store_owner(s, (uint64_t)(k % 5) + 1, owner), &table, 1);
    assert_non_null(f);
    uint8_t value[600];
    uint64_t gen = cache_store_table_gen(s, table); /* >= the fill's: the "read" */
    memcpy(value, &gen, sizeof(gen));
    memset(value + sizeof(gen), k & 0xff, sizeof(value) - sizeof(gen));
    size_t vlen = sizeof(gen) + (size_t)(k % 500);
    cache_store_put(s, f, key, strlen(key), value, vlen, now, now + 50);
    cache_fill_free(f);
    if (r == CACHE_FLIGHT_LEAD)
        cache_store_flight_leave(s, lead, (k & 1) ? CACHE_FLIGHT_FILLED : CACHE_FLIGHT_FAILED);
}

static void *worker(void *p)
{
    struct thread_arg *a = p;
    for (uint64_t i = 0; i < ITERATIONS; i++)
        one_op(a->sh, &a->seed, i);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct counter c = {0};
    struct shared sh = {.s = make_store(&c, 128 * 1024, 1024)};
    assert_non_null(sh.s);
    pthread_t th[THREADS];
    struct thread_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t].sh = &sh;
        args[t].seed = (unsigned)t * 7919u + 1;
        assert_int_equal(pthread_create(&th[t], NULL, worker, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    assert_int_equal(atomic_load(&sh.stale_reads), 0);
    assert_true(atomic_load(&sh.hits) > 0);
    assert_accounted(sh.s, &c);
    struct cache_store_stats st;
    cache_store_stats(sh.s, &st);
    assert_true(st.invalidated > 0);
    assert_true(st.stores > 0);
    cache_store_free(sh.s);
    assert_int_equal(atomic_load(&c.live), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),          cmocka_unit_test(test_get_put_expiry),
        cmocka_unit_test(test_memory_bound),    cmocka_unit_test(test_hot_key_kept),
        cmocka_unit_test(test_lru_order),       cmocka_unit_test(test_reference_outlives),
        cmocka_unit_test(test_invalidate),      cmocka_unit_test(test_fill_refused_stale),
        cmocka_unit_test(test_single_flight),   cmocka_unit_test(test_threads),
        cmocka_unit_test(test_owner_slots),     cmocka_unit_test(test_owner_accounting),
        cmocka_unit_test(test_owner_evictions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
