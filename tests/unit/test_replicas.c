/* test_replicas.c - picking a read endpoint (balances, weights, bans,
 * primary_reads), health-check turns and answers, LSN text, what an error
 * says about a replica; and the per-database volatility cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "replicas.h"
#include "volatility.h"

#define SEC 1000000LL

static struct config *cfg;
static struct database db;

static struct config *load(const char *text)
{
    char err[256];
    struct config *c = config_load_string("t.ini", text, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    return c;
}

/* db with the primary and n replicas of the given weights. */
static void make_db(int n, const int *weights)
{
    memset(&db, 0, sizeof(db));
    db.name = "d";
    db.cfg = &cfg->databases[0];
    db.n_endpoints = 1 + n;
    for (int i = 0; i <= n; i++) {
        db.endpoints[i].host = "h";
        db.endpoints[i].port = 5432 + i;
        db.endpoints[i].role = i ? EP_REPLICA : EP_PRIMARY;
        db.endpoints[i].weight = i ? weights[i - 1] : 1;
    }
}

static int setup(void **state)
{
    (void)state;
    cfg = load("[databases]\nd = host=h replicas=a,b\n[pgbouncer]\nread_write_split = on\n");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    config_unref(cfg);
    return 0;
}

static void test_split_on(void **state)
{
    (void)state;
    int w[] = {1, 1};
    make_db(2, w);
    assert_true(replicas_split_on(&db, cfg));
    struct config *off = load("[databases]\nd = host=h replicas=a read_write_split=off\n"
                              "[pgbouncer]\nread_write_split = on\n");
    db.cfg = &off->databases[0];
    assert_false(replicas_split_on(&db, off));
    config_unref(off);
}

static void test_least_outstanding(void **state)
{
    (void)state;
    int w[] = {1, 1, 2};
    make_db(3, w);
    db.endpoints[1].outstanding = 3;
    db.endpoints[2].outstanding = 1;
    db.endpoints[3].outstanding = 3; /* (3+1)/2 = 2 per unit of weight */
    assert_int_equal(replicas_pick(&db, cfg, 0, 0), 2);
    db.endpoints[2].outstanding = 5;
    assert_int_equal(replicas_pick(&db, cfg, 0, 0), 3);
    /* Ties go round. */
    db.endpoints[1].outstanding = db.endpoints[2].outstanding = 0;
    db.endpoints[3].outstanding = 3;
    int seen[4] = {0};
    for (int i = 0; i < 20; i++)
        seen[replicas_pick(&db, cfg, 0, 0)]++;
    assert_true(seen[1] > 0 && seen[2] > 0);
    assert_int_equal(seen[0] + seen[3], 0);
}

static void test_round_robin_and_random_weights(void **state)
{
    (void)state;
    struct config *rr = load("[pgbouncer]\nreplica_load_balance = round_robin\n");
    int w[] = {1, 3, 0};
    make_db(3, w);
    int seen[4] = {0};
    for (int i = 0; i < 400; i++)
        seen[replicas_pick(&db, rr, 0, 0)]++;
    assert_int_equal(seen[1], 100);
    assert_int_equal(seen[2], 300);
    assert_int_equal(seen[3], 0); /* weight 0: no reads */
    config_unref(rr);

    struct config *rnd = load("[pgbouncer]\nreplica_load_balance = random\n");
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 4000; i++)
        seen[replicas_pick(&db, rnd, 0, 0)]++;
    assert_true(seen[1] > 700 && seen[1] < 1300);
    assert_true(seen[2] > 2700 && seen[2] < 3300);
    assert_int_equal(seen[0] + seen[3], 0);
    config_unref(rnd);
}

static void test_bans_and_primary_reads(void **state)
{
    (void)state;
    int w[] = {1, 1};
    make_db(2, w);
    replicas_ban(&db, 1, RB_CONNECT, "refused", cfg, 10 * SEC);
    assert_false(replicas_usable(&db, 1, 11 * SEC));
    assert_int_equal(db.endpoints[1].ban_reason, RB_CONNECT);
    assert_int_equal(db.endpoints[1].errors, 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(replicas_pick(&db, cfg, 11 * SEC, 0), 2);
    replicas_ban(&db, 2, RB_SHUTDOWN, NULL, cfg, 10 * SEC);
    assert_int_equal(replicas_pick(&db, cfg, 11 * SEC, 0), -1); /* fallback: the primary */

    /* The ban time over, still banned until a check passes. */
    assert_false(replicas_awaits_check(&db, 1, 39 * SEC));
    assert_true(replicas_awaits_check(&db, 1, 41 * SEC));
    assert_false(replicas_usable(&db, 1, 41 * SEC));
    replicas_check_passed(&db, 1, true, 0x100000020ULL, cfg, 41 * SEC);
    assert_true(replicas_usable(&db, 1, 41 * SEC));
    assert_int_equal(db.endpoints[1].replay_lsn, 0x100000020ULL);
    /* A passing check during the ban time does not lift it. */
    replicas_check_passed(&db, 2, true, 1, cfg, 20 * SEC);
    assert_false(replicas_usable(&db, 2, 20 * SEC));

    struct config *share = load("[pgbouncer]\nprimary_reads = share\n");
    int seen[3] = {0};
    for (int i = 0; i < 10; i++)
        seen[replicas_pick(&db, share, 41 * SEC, 0)]++;
    assert_true(seen[0] > 0 && seen[1] > 0);
    assert_int_equal(seen[2], 0);
    config_unref(share);
}

static void test_promoted(void **state)
{
    (void)state;
    int w[] = {1};
    make_db(1, w);
    replicas_check_passed(&db, 1, false, 0, cfg, SEC);
    assert_true(db.endpoints[1].promoted);
    assert_false(replicas_usable(&db, 1, SEC));
    assert_int_equal(db.endpoints[1].ban_reason, RB_PROMOTED);
    /* Back in recovery (rebuilt as a replica): usable after the ban time. */
    replicas_check_passed(&db, 1, true, 5, cfg, 40 * SEC);
    assert_false(db.endpoints[1].promoted);
    assert_true(replicas_usable(&db, 1, 40 * SEC));
}

static void test_check_turns(void **state)
{
    (void)state;
    int w[] = {1};
    make_db(1, w);
    assert_true(replicas_check_claim(&db, 1, cfg, 5 * SEC));
    assert_false(replicas_check_claim(&db, 1, cfg, 5 * SEC + 1)); /* another worker */
    assert_true(replicas_check_claim(&db, 1, cfg, 6 * SEC));      /* interval 1 s */
    assert_false(replicas_check_claim(&db, 0, cfg, 100 * SEC));   /* not a replica */
}

/* db with host=h1,...,hn (endpoints 1..n, EP_HOST), then the replicas of
 * the given weights, as pool_db_set_endpoints() lays them out; no primary
 * known yet. */
static void make_hosts_db(int n_hosts, int n_replicas, struct config *c)
{
    memset(&db, 0, sizeof(db));
    db.name = "d";
    db.cfg = &c->databases[0];
    db.n_hosts = n_hosts;
    db.n_endpoints = 1 + n_hosts + n_replicas;
    for (int i = 0; i < db.n_endpoints; i++) {
        db.endpoints[i].host = "h";
        db.endpoints[i].port = 5432 + i;
        db.endpoints[i].role = i == 0 ? EP_PRIMARY : i <= n_hosts ? EP_HOST : EP_REPLICA;
        db.endpoints[i].weight = 1;
    }
    db.primary = -1;
    db.last_primary = -1;
    db.lb_current = 1;
}

static void test_primary_discovery(void **state)
{
    (void)state;
    struct config *c = load("[databases]\nd = host=a,b,c\n[pgbouncer]\nread_write_split = on\n");
    make_hosts_db(3, 0, c);
    assert_true(replicas_split_on(&db, c));
    assert_true(replicas_discovers(&db, c));
    /* Nothing known: no target, no reads on a host (it may be the primary). */
    assert_true(replicas_no_primary(&db, c));
    assert_int_equal(replicas_connect_target(&db, c), -1);
    assert_int_equal(replicas_pick(&db, c, SEC, 0), -1);

    /* Host 1 out of recovery: the primary; hosts in recovery take reads. */
    assert_true(replicas_check_passed(&db, 1, false, 0, c, SEC));
    assert_int_equal(replicas_primary(&db), 1);
    assert_false(replicas_no_primary(&db, c));
    assert_int_equal(replicas_connect_target(&db, c), 1);
    assert_true(replicas_target_ok(&db, 1, c));
    assert_false(replicas_target_ok(&db, 2, c));
    assert_false(replicas_check_passed(&db, 2, true, 7, c, SEC));
    assert_false(replicas_usable(&db, 1, SEC)); /* the primary: no read as a replica */
    assert_true(replicas_usable(&db, 2, SEC));
    assert_false(replicas_usable(&db, 3, SEC)); /* unchecked */
    assert_int_equal(replicas_pick(&db, c, SEC, 0), 2);

    /* Host 3 out of recovery too: writes stay where they go. */
    assert_false(replicas_check_passed(&db, 3, false, 0, c, 2 * SEC));
    assert_int_equal(replicas_primary(&db), 1);
    assert_true(db.endpoints[3].promoted);
    assert_false(replicas_usable(&db, 3, 2 * SEC));

    /* A recovery conflict on a standby host changes nothing; the primary
     * shutting down hands over to the other host out of recovery. */
    assert_false(replicas_ban(&db, 2, RB_CONFLICT, NULL, c, 3 * SEC));
    assert_int_equal(replicas_primary(&db), 1);
    assert_true(replicas_ban(&db, 1, RB_SHUTDOWN, NULL, c, 3 * SEC));
    assert_int_equal(replicas_primary(&db), 3);
    assert_int_equal(db.last_primary, 1);
    assert_false(db.endpoints[3].promoted);
    assert_true(replicas_target_ok(&db, 3, c));
    assert_false(replicas_target_ok(&db, 1, c));

    /* Host 3 back in recovery, host 1 down: none. A failed check of a host
     * that is not the primary changes nothing either. */
    assert_true(replicas_check_passed(&db, 3, true, 9, c, 4 * SEC));
    assert_int_equal(replicas_primary(&db), -1);
    assert_true(replicas_no_primary(&db, c));
    assert_false(replicas_check_failed(&db, 2, "timeout", c, 4 * SEC));
    assert_int_equal(replicas_primary(&db), -1);

    /* Host 1 back out of recovery: the primary again, its ban gone. */
    assert_true(replicas_check_passed(&db, 1, false, 0, c, 5 * SEC));
    assert_int_equal(replicas_primary(&db), 1);
    assert_int_equal(db.endpoints[1].banned_until, 0);

    /* A server of endpoint 0 logged in to it and heard in_hot_standby = on. */
    assert_true(replicas_seen_in_recovery(&db, 1, "said in_hot_standby = on", 6 * SEC));
    assert_int_equal(replicas_primary(&db), -1);
    /* A connection to the primary that fails: banned, the primary no more. */
    assert_true(replicas_check_passed(&db, 2, false, 0, c, 7 * SEC));
    assert_int_equal(replicas_primary(&db), 2);
    assert_true(replicas_target_failed(&db, 2, "connect failed", c, 8 * SEC));
    assert_int_equal(replicas_primary(&db), -1);
    assert_false(replicas_usable(&db, 2, 8 * SEC));
    config_unref(c);
}

static void test_replica_is_never_the_primary(void **state)
{
    (void)state;
    struct config *c = load("[databases]\nd = host=a,b replicas=r\n"
                            "[pgbouncer]\nread_write_split = on\n");
    make_hosts_db(2, 1, c);
    /* replicas= out of recovery: reported, banned, never written to. */
    assert_false(replicas_check_passed(&db, 3, false, 0, c, SEC));
    assert_true(db.endpoints[3].promoted);
    assert_int_equal(db.endpoints[3].ban_reason, RB_PROMOTED);
    assert_int_equal(replicas_primary(&db), -1);
    assert_int_equal(replicas_connect_target(&db, c), -1);
    config_unref(c);
}

static void test_several_hosts_split_off(void **state)
{
    (void)state;
    /* PgBouncer's load_balance_hosts: round-robin (the default) goes round
     * the hosts, one new connection each; disable stays on one until a
     * connection to it fails. No checks, no primary to find. */
    struct config *c = load("[databases]\nd = host=a,b,c\n");
    make_hosts_db(3, 0, c);
    assert_false(replicas_split_on(&db, c));
    assert_false(replicas_discovers(&db, c));
    assert_false(replicas_no_primary(&db, c));
    int seen[4] = {0};
    for (int i = 0; i < 6; i++)
        seen[replicas_connect_target(&db, c)]++;
    assert_int_equal(seen[0], 0);
    assert_int_equal(seen[1], 2);
    assert_int_equal(seen[2], 2);
    assert_int_equal(seen[3], 2);
    assert_true(replicas_target_ok(&db, 2, c));
    config_unref(c);

    c = load("[databases]\nd = host=a,b,c load_balance_hosts=disable\n");
    make_hosts_db(3, 0, c);
    assert_int_equal(replicas_connect_target(&db, c), 1);
    assert_int_equal(replicas_connect_target(&db, c), 1);
    assert_false(replicas_target_failed(&db, 1, "refused", c, SEC));
    assert_int_equal(replicas_connect_target(&db, c), 2);
    assert_false(replicas_target_failed(&db, 1, "refused", c, SEC)); /* a late one: no skip */
    assert_int_equal(replicas_connect_target(&db, c), 2);
    assert_false(replicas_target_failed(&db, 2, "refused", c, SEC));
    assert_false(replicas_target_failed(&db, 3, "refused", c, SEC));
    assert_int_equal(replicas_connect_target(&db, c), 1); /* round again */
    config_unref(c);
}

static void test_lsn_and_errors(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(replicas_parse_lsn("0/4000000", 9, &v));
    assert_int_equal(v, 0x4000000);
    assert_true(replicas_parse_lsn("1A/FFffFFff", 11, &v));
    assert_int_equal(v, 0x1AFFFFFFFFULL);
    assert_false(replicas_parse_lsn("", 0, &v));
    assert_false(replicas_parse_lsn("12", 2, &v));
    assert_false(replicas_parse_lsn("1/", 2, &v));
    assert_false(replicas_parse_lsn("/1", 2, &v));
    assert_false(replicas_parse_lsn("1/G", 3, &v));
    assert_false(replicas_parse_lsn("123456789/1", 11, &v));

    assert_int_equal(replicas_error_reason("57P01", "terminating connection"), RB_SHUTDOWN);
    assert_int_equal(replicas_error_reason("57P03", "the database system is starting up"),
                     RB_SHUTDOWN);
    assert_int_equal(
        replicas_error_reason("40001", "canceling statement due to conflict with recovery"),
        RB_CONFLICT);
    assert_int_equal(replicas_error_reason("42P01", "relation does not exist"), RB_NONE);
    assert_string_equal(replica_ban_reason_str(RB_CONFLICT), "recovery conflict");
}

static void test_volatility_cache(void **state)
{
    (void)state;
    int w[] = {1};
    make_db(1, w);
    assert_false(volatility_pending(&db));
    assert_int_equal(volatility_get(&db, "f", 0), 0); /* queued */
    assert_int_equal(volatility_get(&db, "app.g", 0), 0);
    assert_true(volatility_pending(&db));
    char names[VOLATILITY_BATCH][VOLATILITY_MAX_NAME];
    int n = volatility_take(&db, names, 0);
    assert_int_equal(n, 2);
    assert_false(volatility_pending(&db));
    assert_int_equal(volatility_get(&db, "f", SEC), 0); /* being asked: not again */
    assert_false(volatility_pending(&db));
    volatility_store(&db, "f", 's', SEC);
    volatility_store(&db, "app.g", 0, SEC); /* pg_proc has none */
    assert_int_equal(volatility_get(&db, "f", SEC), 's');
    assert_int_equal(volatility_get(&db, "app.g", 2 * SEC), 0);
    assert_false(volatility_pending(&db)); /* asked again only later */
    assert_int_equal(volatility_get(&db, "app.g", 20 * SEC), 0);
    assert_true(volatility_pending(&db));
    /* A name too long to keep is never known (the primary takes it). */
    char longname[300];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(volatility_get(&db, longname, 0), 0);
    /* Many names: the table grows and keeps them. */
    for (int i = 0; i < 500; i++) {
        char nm[32];
        snprintf(nm, sizeof(nm), "fn%d", i);
        volatility_get(&db, nm, 0);
        volatility_store(&db, nm, 'v', 0);
    }
    assert_int_equal(volatility_get(&db, "fn123", 0), 'v');
    volatility_free(&db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_on),
        cmocka_unit_test(test_least_outstanding),
        cmocka_unit_test(test_round_robin_and_random_weights),
        cmocka_unit_test(test_bans_and_primary_reads),
        cmocka_unit_test(test_promoted),
        cmocka_unit_test(test_check_turns),
        cmocka_unit_test(test_primary_discovery),
        cmocka_unit_test(test_replica_is_never_the_primary),
        cmocka_unit_test(test_several_hosts_split_off),
        cmocka_unit_test(test_lsn_and_errors),
        cmocka_unit_test(test_volatility_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
