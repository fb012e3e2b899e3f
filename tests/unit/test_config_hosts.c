/* test_config_hosts.c - host= lists and port= lists of a [databases] entry
 * (config_hosts.c): splitting, libpq's port rule (one for all, or one per
 * host), what is refused and how it is said, and the entries as a loaded
 * config has them (load_balance_hosts, replicas beside several hosts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "config_hosts.h"
#include "config_test.h"

static struct config_replica out[CONFIG_MAX_SERVERS];
static int n;
static char why[300];

static bool split(const char *hosts, const char *ports)
{
    memset(out, 0, sizeof(out));
    why[0] = '\0';
    return config_split_hosts(hosts, ports, out, CONFIG_MAX_SERVERS, &n, why, sizeof(why));
}

static void expect_split_error(const char *hosts, const char *ports, const char *expected)
{
    if (split(hosts, ports))
        fail_msg("host=%s port=%s was taken, should fail with: %s", hosts, ports, expected);
    assert_string_equal(why, expected);
    assert_int_equal(n, 0);
}

static void test_one_host(void **state)
{
    (void)state;
    assert_true(split("db.internal", "6000"));
    assert_int_equal(n, 1);
    assert_string_equal(out[0].host, "db.internal");
    assert_int_equal(out[0].port, 6000);
    /* No host (the unix socket) and no port: PgBouncer's defaults. */
    assert_true(split("", ""));
    assert_int_equal(n, 1);
    assert_string_equal(out[0].host, "");
    assert_int_equal(out[0].port, 5432);
    assert_true(split("/var/run/postgresql", "5433"));
    assert_string_equal(out[0].host, "/var/run/postgresql");
    assert_int_equal(out[0].port, 5433);
}

static void test_several_hosts_one_port(void **state)
{
    (void)state;
    assert_true(split("10.0.0.1,10.0.0.2,db3", "6432"));
    assert_int_equal(n, 3);
    const char *hosts[] = {"10.0.0.1", "10.0.0.2", "db3"};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(out[i].host, hosts[i]);
        assert_int_equal(out[i].port, 6432);
        assert_int_equal(out[i].weight, 1);
    }
    /* Blanks around the items (a quoted value) are dropped; IPv6 addresses
     * need no brackets: commas separate, not colons. */
    assert_true(split(" a , ::1,b ", ""));
    assert_int_equal(n, 3);
    assert_string_equal(out[0].host, "a");
    assert_string_equal(out[1].host, "::1");
    assert_string_equal(out[2].host, "b");
    assert_int_equal(out[2].port, 5432);
}

static void test_a_port_per_host(void **state)
{
    (void)state;
    assert_true(split("127.0.0.1,127.0.0.1,127.0.0.1", "5432,5433, 5434"));
    assert_int_equal(n, 3);
    assert_int_equal(out[0].port, 5432);
    assert_int_equal(out[1].port, 5433);
    assert_int_equal(out[2].port, 5434);
    expect_split_error("a,b,c", "5432,5433",
                       "port= gives 2 ports for 3 hosts: give one port for all of them, or one "
                       "per host, in the order of host=");
    expect_split_error("a", "5432,5433",
                       "port= gives 2 ports for 1 host: give one port for all of them, or one "
                       "per host, in the order of host=");
    expect_split_error("a,b", "5432,x", "invalid port \"x\" in port=: not an integer");
    expect_split_error("a,b", "5432,0", "invalid port \"0\" in port=: must be between 1 and 65535");
}

static void test_refused_lists(void **state)
{
    (void)state;
    expect_split_error("a,,b", "", "empty host name in host=\"a,,b\"");
    expect_split_error("a,", "", "empty host name in host=\"a,\"");
    expect_split_error(",a", "", "empty host name in host=\",a\"");
    expect_split_error("a,b,a", "", "host a port 5432 is listed twice in host=");
    /* The same host on two ports is two servers. */
    assert_true(split("a,a", "5432,5433"));
    assert_int_equal(n, 2);
    char many[200] = "";
    for (int i = 0; i < CONFIG_MAX_SERVERS + 1; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sh%d", i ? "," : "", i);
    expect_split_error(many, "", "host= lists more than 15 hosts");
    char longname[300];
    memset(longname, 'x', 280);
    longname[280] = '\0';
    expect_split_error(longname, "",
                       "host name \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\" is too long");
}

/* ---- as a loaded config has them ------------------------------------------ */

static void test_entries(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[databases]\n"
                                 "one = host=p port=6000\n"
                                 "three = host=a,b,c port=5432,5433,5434 replicas=r:7000 "
                                 "load_balance_hosts=disable\n"
                                 "quoted = host='x, y' port=7001\n"
                                 "sock =\n");
    const struct config_database *d = config_find_database(cfg, "one");
    assert_int_equal(d->n_hosts, 1);
    assert_string_equal(d->host, "p");
    assert_int_equal(d->port, 6000);
    d = config_find_database(cfg, "three");
    assert_int_equal(d->n_hosts, 3);
    assert_string_equal(d->host, "a,b,c"); /* as written, for SHOW DATABASES */
    assert_int_equal(d->port, 5432);       /* the first */
    assert_string_equal(d->hosts[2].host, "c");
    assert_int_equal(d->hosts[2].port, 5434);
    assert_int_equal(d->n_replicas, 1);
    assert_int_equal(d->replica[0].port, 7000);
    assert_string_equal(d->load_balance_hosts, "disable");
    d = config_find_database(cfg, "quoted");
    assert_int_equal(d->n_hosts, 2);
    assert_string_equal(d->hosts[1].host, "y");
    assert_int_equal(d->hosts[1].port, 7001);
    d = config_find_database(cfg, "sock");
    assert_int_equal(d->n_hosts, 1);
    assert_int_equal(d->port, 5432);
    config_unref(cfg);

    /* Never one host named "a,b": refused with file, line and reason. */
    expect_error("[databases]\n\nx = host=a,,b\n",
                 "t.ini:3: database \"x\": empty host name in host=\"a,,b\"");
    expect_error("[databases]\nx = host=a,b,c port=1,2\n",
                 "t.ini:2: database \"x\": port= gives 2 ports for 3 hosts: give one port for "
                 "all of them, or one per host, in the order of host=");
    expect_error("[databases]\nx = host=a port=0\n",
                 "t.ini:2: invalid value \"0\" for port: must be between 1 and 65535");
    expect_error("[databases]\nx = host=a,b port=5432,abc\n",
                 "t.ini:2: invalid value \"5432,abc\" for port: port \"abc\": not an integer");
    expect_error("[databases]\nx = host=a,b load_balance_hosts=random\n",
                 "t.ini:2: invalid value \"random\" for load_balance_hosts: expected "
                 "round-robin or disable");
    expect_error("[databases]\nx = host=a,b port=5432 replicas=b:5432\n",
                 "t.ini:2: database \"x\": b:5432 is in both host= and replicas= (a host of "
                 "host= that is in recovery takes reads already)");
    expect_error("[databases]\nx = host=h1,h2,h3,h4,h5,h6,h7,h8 "
                 "replicas=r1,r2,r3,r4,r5,r6,r7,r8\n",
                 "t.ini:2: database \"x\": host= and replicas= name 16 servers (at most 15)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_host),        cmocka_unit_test(test_several_hosts_one_port),
        cmocka_unit_test(test_a_port_per_host), cmocka_unit_test(test_refused_lists),
        cmocka_unit_test(test_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
