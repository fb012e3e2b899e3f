/* test_peers.c - peer_id and [peers] (config_peers.c) and the cancel keys
 * that carry a peer id (peers.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "config.h"
#include "peers.h"
#include "config_test.h"

static void test_peers_section(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[pgbouncer]\n"
                                 "peer_id = 2\n"
                                 "default_pool_size = 7\n"
                                 "[peers]\n"
                                 "1 = host=/tmp/sluice-1\n"
                                 "2 = host=/tmp/sluice-2 port=6433\n"
                                 "3 = host='10.0.0.3'  port=7000 pool_size=4\n"
                                 "16383 = host=peer.example.com\n"
                                 "1 = host=@abstract port=6434\n");
    assert_int_equal(cfg->peer_id, 2);
    assert_int_equal(cfg->n_peers, 4); /* a later "1" replaces the first */
    const struct config_peer *p = config_find_peer(cfg, 1);
    assert_non_null(p);
    assert_string_equal(p->host, "@abstract");
    assert_int_equal(p->port, 6434);
    assert_int_equal(p->pool_size, -1);
    assert_int_equal(peers_pool_size(cfg, p), 7); /* default_pool_size */
    p = config_find_peer(cfg, 2);
    assert_int_equal(p->port, 6433);
    p = config_find_peer(cfg, 3);
    assert_string_equal(p->host, "10.0.0.3");
    assert_int_equal(p->port, 7000);
    assert_int_equal(peers_pool_size(cfg, p), 4);
    assert_int_equal(config_find_peer(cfg, 16383)->port, 6432); /* PgBouncer's default */
    assert_null(config_find_peer(cfg, 4));

    /* A reload-style copy (admin SET) keeps them. */
    struct config *next = config_with_setting(cfg, "pool_mode", "transaction", err, sizeof(err));
    assert_non_null(next);
    assert_int_equal(next->n_peers, 4);
    assert_ptr_not_equal(next->peers, cfg->peers);
    assert_string_equal(config_find_peer(next, 3)->host, "10.0.0.3");
    config_unref(cfg);
    config_unref(next);

    /* No [peers] at all, and no peer_id: peering off. */
    cfg = load_ok("[pgbouncer]\n");
    assert_int_equal(cfg->peer_id, 0);
    assert_int_equal(cfg->n_peers, 0);
    config_unref(cfg);
}

/* Every mistake names the file, the line and what is wrong. */
static void test_bad_peers_refused(void **state)
{
    (void)state;
    expect_error("[pgbouncer]\npeer_id = 16384\n",
                 "t.ini:2: invalid value \"16384\" for peer_id: must be between 0 and 16383");
    expect_error("[pgbouncer]\npeer_id = -1\n",
                 "t.ini:2: invalid value \"-1\" for peer_id: must be between 0 and 16383");
    expect_error("[pgbouncer]\npeer_id = one\n",
                 "t.ini:2: invalid value \"one\" for peer_id: not an integer");
    expect_error("[peers]\n0 = host=/tmp\n",
                 "t.ini:2: [peers] entry \"0\": invalid peer id: must be between 1 and 16383");
    expect_error("[peers]\n\nabc = host=/tmp\n",
                 "t.ini:3: [peers] entry \"abc\": invalid peer id: not an integer");
    expect_error("[peers]\n1 = port=6432\n",
                 "t.ini:2: [peers] entry \"1\": host= is required (where that peer takes cancel "
                 "requests)");
    expect_error("[peers]\n1 =\n", "t.ini:2: [peers] entry \"1\": host= is required (where that "
                                   "peer takes cancel requests)");
    expect_error("[peers]\n1 = host=/tmp dbname=x\n",
                 "t.ini:2: [peers] entry \"1\": unknown parameter \"dbname\" (a peer takes host, "
                 "port and pool_size)");
    expect_error(
        "[peers]\n1 = host=/tmp port=70000\n",
        "t.ini:2: [peers] entry \"1\": invalid value \"70000\" for port: must be between 1 "
        "and 65535");
    expect_error("[peers]\n1 = host=/tmp pool_size=0\n",
                 "t.ini:2: [peers] entry \"1\": invalid value \"0\" for pool_size: must be 1 "
                 "or more");
    expect_error("[peers]\n1 = host='/tmp\n",
                 "t.ini:2: [peers] entry \"1\": syntax error: unterminated quoted value for "
                 "\"host\"");
    expect_error("[peers]\n1 = host /tmp\n",
                 "t.ini:2: [peers] entry \"1\": syntax error: expected \"=\" after \"host\"");
    char text[600];
    snprintf(text, sizeof(text), "[peers]\n1 = host=/%0300d\n", 0);
    expect_error(text, "t.ini:2: [peers] entry \"1\": host is longer than 255 bytes");
}

static void test_cancel_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[pgbouncer]\npeer_id = 300\n"
                                 "[peers]\n300 = host=/a\n7 = host=/b\n");
    for (int i = 0; i < 200; i++) {
        uint32_t pid, key;
        peers_new_cancel_key(cfg, &pid, &key);
        assert_true(pid < 0x80000000u); /* a positive pid */
        assert_int_equal(peers_key_id(pid), 300);
        /* PgBouncer's layout: byte 1 the low 8 bits, byte 2 the high ones. */
        assert_int_equal(pid >> 16 & 0xff, 300 & 0xff);
        assert_int_equal(pid >> 8 & 0xff, 300 >> 8);
        assert_int_equal(key & PEERS_TTL_MASK, 3);

        /* Our own key, even passed on by peers: looked up here, TTL restored. */
        uint32_t k = key & ~PEERS_TTL_MASK;
        int peer = -1;
        const char *why = "x";
        assert_int_equal(peers_route_cancel(cfg, pid, &k, &peer, &why), PEERS_ROUTE_LOCAL);
        assert_int_equal(k, key);
    }

    /* Peer 7's key goes to peer 7, one TTL step used; then it is spent. */
    uint32_t pid7 = (7u << 16) | 0x12000034u, key = 0xabcdef03u;
    int peer;
    const char *why;
    assert_int_equal(peers_route_cancel(cfg, pid7, &key, &peer, &why), PEERS_ROUTE_FORWARD);
    assert_int_equal(peer, 7);
    assert_int_equal(key, 0xabcdef02u);
    assert_int_equal(peers_route_cancel(cfg, pid7, &key, &peer, &why), PEERS_ROUTE_FORWARD);
    assert_int_equal(peers_route_cancel(cfg, pid7, &key, &peer, &why), PEERS_ROUTE_FORWARD);
    assert_int_equal(key, 0xabcdef00u);
    assert_int_equal(peers_route_cancel(cfg, pid7, &key, &peer, &why), PEERS_ROUTE_DROP);
    assert_non_null(strstr(why, "TTL"));

    /* An id no [peers] entry has (or a key of an unpeered process: 0). */
    key = 3;
    assert_int_equal(peers_route_cancel(cfg, 8u << 16, &key, &peer, &why), PEERS_ROUTE_DROP);
    assert_int_equal(peer, 8);
    assert_non_null(strstr(why, "no [peers] entry"));
    assert_int_equal(peers_route_cancel(cfg, 0x7f0000ffu, &key, &peer, &why), PEERS_ROUTE_DROP);
    config_unref(cfg);

    /* peer_id = 0: keys are random (but positive) and every cancel is ours. */
    cfg = load_ok("[pgbouncer]\n[peers]\n7 = host=/b\n");
    int ids_seen = 0;
    for (int i = 0; i < 50; i++) {
        uint32_t pid, k;
        peers_new_cancel_key(cfg, &pid, &k);
        assert_true(pid < 0x80000000u);
        ids_seen |= peers_key_id(pid) != 0;
        uint32_t same = k;
        assert_int_equal(peers_route_cancel(cfg, pid, &same, &peer, &why), PEERS_ROUTE_LOCAL);
        assert_int_equal(same, k); /* untouched */
    }
    assert_true(ids_seen); /* those bits stay random */
    config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peers_section),
        cmocka_unit_test(test_bad_peers_refused),
        cmocka_unit_test(test_cancel_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
