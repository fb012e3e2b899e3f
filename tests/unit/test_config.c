/* test_config.c - unit tests for the configuration module (cmocka). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "config_test.h"

#define SEC(n) ((int64_t)(n)*1000000)

/* Short, so that gcc can see that every path built from it fits. */
static char tmpdir[64];
#define PATH_LEN 256

/* Writes text into tmpdir/name and returns the path (static buffer per call
 * site is not needed: the caller copies or uses it at once). */
static const char *write_file(const char *name, const char *text)
{
    static char paths[8][PATH_LEN];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, PATH_LEN, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* The value SHOW CONFIG prints for key. */
static const char *show(const struct config *cfg, const char *key)
{
    static char buf[256];
    struct config_setting_view v;
    for (int i = 0; config_setting_at(cfg, i, buf, sizeof(buf), &v); i++)
        if (strcmp(v.key, key) == 0)
            return v.value;
    fail_msg("no setting %s", key);
    return NULL;
}

static void test_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok("");

    assert_int_equal(atomic_load(&cfg->refcount), 1);
    assert_string_equal(cfg->path, "t.ini");
    assert_true(cfg->loaded_at > 0);
    assert_string_equal(cfg->listen_addr, "");
    assert_int_equal(cfg->listen_port, 6432);
    assert_int_equal(cfg->listen_backlog, 128);
    assert_string_equal(cfg->unix_socket_dir, "/tmp");
    assert_int_equal(cfg->unix_socket_mode, 0777);
    assert_string_equal(cfg->unix_socket_group, "");
    assert_false(cfg->so_reuseport);
    assert_int_equal(cfg->auth_type, AUTH_TYPE_MD5);
    assert_string_equal(cfg->auth_file, "");
    assert_string_equal(cfg->auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
    assert_int_equal(cfg->pool_mode, POOL_MODE_SESSION);
    assert_int_equal(cfg->max_client_conn, 100);
    assert_int_equal(cfg->default_pool_size, 20);
    assert_int_equal(cfg->min_pool_size, 0);
    assert_int_equal(cfg->reserve_pool_size, 0);
    assert_int_equal(cfg->reserve_pool_timeout, SEC(5));
    assert_int_equal(cfg->max_db_connections, 0);
    assert_int_equal(cfg->max_user_connections, 0);
    assert_int_equal(cfg->max_prepared_statements, 200);
    assert_string_equal(cfg->server_reset_query, "DISCARD ALL");
    assert_false(cfg->server_reset_query_always);
    assert_string_equal(cfg->server_check_query, "select 1");
    assert_int_equal(cfg->server_check_delay, SEC(30));
    assert_int_equal(cfg->server_lifetime, SEC(3600));
    assert_int_equal(cfg->autodb_idle_timeout, SEC(3600)); /* PgBouncer's default */
    assert_int_equal(cfg->server_idle_timeout, SEC(600));
    assert_int_equal(cfg->server_connect_timeout, SEC(15));
    assert_int_equal(cfg->server_login_retry, SEC(15));
    assert_int_equal(cfg->client_idle_timeout, 0);
    assert_int_equal(cfg->client_login_timeout, SEC(60));
    assert_int_equal(cfg->query_timeout, 0);
    assert_int_equal(cfg->query_wait_timeout, SEC(120));
    assert_int_equal(cfg->cancel_wait_timeout, SEC(10));
    assert_int_equal(cfg->idle_transaction_timeout, 0);
    assert_int_equal(cfg->suspend_timeout, SEC(10));
    assert_string_equal(cfg->ignore_startup_parameters, "");
    assert_string_equal(cfg->track_extra_parameters, "IntervalStyle");
    assert_true(cfg->tcp_keepalive);
    assert_int_equal(cfg->tcp_keepidle, 0);
    assert_int_equal(cfg->tcp_user_timeout, 0);
    assert_int_equal(cfg->tcp_defer_accept, 1);
    assert_int_equal(cfg->pkt_buf, 4096);
    assert_int_equal(cfg->max_packet_size, 2147483647);
    assert_int_equal(cfg->sbuf_loopcnt, 1); /* refused: sluice reads once per round */
    assert_false(cfg->syslog);
    assert_string_equal(cfg->syslog_ident, "sluice");
    assert_string_equal(cfg->syslog_facility, "daemon");
    assert_true(cfg->log_connections);
    assert_true(cfg->log_disconnections);
    assert_true(cfg->log_pooler_errors);
    assert_true(cfg->log_stats);
    assert_int_equal(cfg->stats_period, SEC(60));
    assert_int_equal(cfg->verbose, 0);
    assert_int_equal(cfg->dns_max_ttl, SEC(15));
    assert_int_equal(cfg->dns_nxdomain_ttl, SEC(15));
    assert_int_equal(cfg->dns_zone_check_period, 0);
    assert_string_equal(cfg->client_tls_sslmode, "disable");
    assert_string_equal(cfg->client_tls_protocols, "secure");
    assert_string_equal(cfg->client_tls_ciphers, "default");
    assert_string_equal(cfg->client_tls_dheparams, "auto");
    assert_string_equal(cfg->client_tls_ecdhcurve, "auto");
    assert_string_equal(cfg->server_tls_sslmode, "prefer");
    assert_string_equal(cfg->server_tls_protocols, "secure");
    assert_string_equal(cfg->server_tls_ciphers, "default");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg->workers, cores < 1 ? 1 : cores);
    assert_string_equal(cfg->metrics_listen, "");
    assert_int_equal(cfg->n_databases, 0);
    assert_int_equal(cfg->n_users, 0);
    config_unref(cfg);
}

/* Every default is written the way SHOW CONFIG prints it, so that a value
 * equal to its default shows as such. */
static void test_defaults_print_as_written(void **state)
{
    (void)state;
    struct config *cfg = load_ok("");
    char buf[256];
    struct config_setting_view v;
    int n = 0;
    const char *prev = "";

    for (; config_setting_at(cfg, n, buf, sizeof(buf), &v); n++) {
        assert_non_null(v.value);
        assert_non_null(v.default_value);
        assert_true(strcmp(prev, v.key) < 0); /* alphabetical, as PgBouncer */
        prev = v.key;
        if (strcmp(v.key, "workers") != 0)
            assert_string_equal(v.value, v.default_value);
    }
    assert_true(n > 80);
    assert_false(config_setting_at(cfg, -1, buf, sizeof(buf), &v));
    assert_false(config_setting_at(cfg, n, buf, sizeof(buf), &v));
    config_unref(cfg);
}

static const char example_ini[] =
    ";; sluice example, in PgBouncer's format\n"
    "[databases]\n"
    "mydb = host=127.0.0.1 port=5432 dbname=mydb\n"
    "analytics = host=10.0.0.5 port=5433 dbname=warehouse user=report password='s3cr''et' "
    "pool_size=5 pool_mode=transaction\n"
    "* = host=/var/run/postgresql\n"
    "\n"
    "[pgbouncer]\n"
    "listen_addr = 127.0.0.1\n"
    "listen_port = 6433\n"
    "listen_backlog = 256\n"
    "unix_socket_dir = /var/run/sluice\n"
    "auth_type = scram-sha-256\n"
    "auth_file = /etc/sluice/userlist.txt\n"
    "auth_user = pgbouncer_auth\n"
    "auth_query = SELECT usename, passwd FROM user_search($1)\n"
    "admin_users = admin, postgres\n"
    "stats_users = stats\n"
    "pool_mode = transaction\n"
    "max_client_conn = 1000\n"
    "default_pool_size = 25\n"
    "server_reset_query = DISCARD ALL\n"
    "server_reset_query_always = 1\n"
    "server_check_query = SELECT 1\n"
    "server_check_delay = 10\n"
    "server_lifetime = 1h\n"
    "server_connect_timeout = 5\n"
    "server_login_retry = 500ms\n"
    "query_wait_timeout = 60\n"
    "idle_transaction_timeout = 30s\n"
    "max_db_connections = 50\n"
    "max_user_connections = 40\n"
    "ignore_startup_parameters = extra_float_digits,options\n"
    "application_name_add_host = yes\n"
    "tcp_keepalive = on\n"
    "tcp_keepidle = 60\n"
    "tcp_keepintvl = 10\n"
    "tcp_keepcnt = 3\n"
    "pkt_buf = 8kB\n"
    "max_packet_size = 1GB\n"
    "logfile = /var/log/sluice.log\n"
    "pidfile = /run/sluice.pid\n"
    "syslog = 0\n"
    "\n"
    "[sluice]\n"
    "workers = 2\n"
    "metrics_listen = 127.0.0.1:9127\n"
    "\n"
    "[users]\n"
    "report = pool_mode=session max_user_connections=10\n";

static void test_example(void **state)
{
    (void)state;
    struct config *cfg = load_ok(example_ini);

    assert_string_equal(cfg->listen_addr, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 6433);
    assert_int_equal(cfg->listen_backlog, 256);
    assert_string_equal(cfg->unix_socket_dir, "/var/run/sluice");
    assert_int_equal(cfg->auth_type, AUTH_TYPE_SCRAM);
    assert_string_equal(cfg->auth_file, "/etc/sluice/userlist.txt");
    assert_string_equal(cfg->auth_user, "pgbouncer_auth");
    assert_string_equal(cfg->auth_query, "SELECT usename, passwd FROM user_search($1)");
    assert_true(config_list_contains(cfg->admin_users, "postgres"));
    assert_true(config_list_contains(cfg->admin_users, "admin"));
    assert_true(config_list_contains(cfg->stats_users, "stats"));
    assert_int_equal(cfg->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(cfg->max_client_conn, 1000);
    assert_int_equal(cfg->default_pool_size, 25);
    assert_true(cfg->server_reset_query_always);
    assert_string_equal(cfg->server_check_query, "SELECT 1");
    assert_int_equal(cfg->server_check_delay, SEC(10));
    assert_int_equal(cfg->server_lifetime, SEC(3600));
    assert_int_equal(cfg->server_connect_timeout, SEC(5));
    assert_int_equal(cfg->server_login_retry, 500000);
    assert_int_equal(cfg->query_wait_timeout, SEC(60));
    assert_int_equal(cfg->idle_transaction_timeout, SEC(30));
    assert_int_equal(cfg->max_db_connections, 50);
    assert_int_equal(cfg->max_user_connections, 40);
    assert_true(config_list_contains(cfg->ignore_startup_parameters, "extra_float_digits"));
    assert_true(cfg->application_name_add_host);
    assert_true(cfg->tcp_keepalive);
    assert_int_equal(cfg->tcp_keepidle, 60);
    assert_int_equal(cfg->tcp_keepintvl, 10);
    assert_int_equal(cfg->tcp_keepcnt, 3);
    assert_int_equal(cfg->pkt_buf, 8192);
    assert_int_equal(cfg->max_packet_size, 1 << 30);
    assert_string_equal(cfg->logfile, "/var/log/sluice.log");
    assert_string_equal(cfg->pidfile, "/run/sluice.pid");
    assert_false(cfg->syslog);
    assert_int_equal(cfg->workers, 2);
    assert_string_equal(cfg->metrics_listen, "127.0.0.1:9127");

    assert_int_equal(cfg->n_databases, 3);
    const struct config_database *db = config_find_database(cfg, "analytics");
    assert_non_null(db);
    assert_string_equal(db->host, "10.0.0.5");
    assert_int_equal(db->port, 5433);
    assert_string_equal(db->dbname, "warehouse");
    assert_string_equal(db->user, "report");
    assert_string_equal(db->password, "s3cr'et");
    assert_int_equal(db->pool_size, 5);
    assert_int_equal(db->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(db->line, 4);
    assert_string_equal(db->file, "t.ini");
    /* an unknown name falls back to "*" */
    db = config_find_database(cfg, "otherdb");
    assert_non_null(db);
    assert_string_equal(db->name, "*");
    assert_string_equal(db->host, "/var/run/postgresql");

    const struct config_user *u = config_find_user(cfg, "report");
    assert_non_null(u);
    assert_int_equal(u->pool_mode, POOL_MODE_SESSION);
    assert_int_equal(u->max_user_connections, 10);
    config_unref(cfg);
}

static void test_parse_bool(void **state)
{
    (void)state;
    static const char *const yes[] = {"1", "on", "ON", "yes", "Yes", "true", "TRUE", " on "};
    static const char *const no[] = {"0", "off", "OFF", "no", "false", "False"};
    static const char *const bad[] = {"", "2", "y", "enable", "onn", "-1", "1 1"};
    bool b;

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        b = false;
        assert_true(config_parse_bool(yes[i], &b));
        assert_true(b);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        b = true;
        assert_true(config_parse_bool(no[i], &b));
        assert_false(b);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(config_parse_bool(bad[i], &b));
    assert_false(config_parse_bool(NULL, &b));

    expect_error("[pgbouncer]\nsyslog = maybe\n",
                 "t.ini:2: invalid value \"maybe\" for syslog: expected 1/0, on/off, yes/no or "
                 "true/false");
}

static void test_parse_time(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t usec;
    } good[] = {
        {"0", 0},
        {"5", SEC(5)},
        {"0.5", 500000},
        {".25", 250000},
        {"5.", SEC(5)},
        {"1.0000005", 1000001}, /* rounded to the microsecond */
        {"1.0000004", 1000000},
        {"0.0000015h", 5400},
        {"0.000000001d", 86},
        {"250us", 250},
        {"100ms", 100000},
        {"100 ms", 100000},
        {"1.5ms", 1500},
        {"30s", SEC(30)},
        {"2min", SEC(120)},
        {"1h", SEC(3600)},
        {"1d", SEC(86400)},
        {"0.5h", SEC(1800)},
        {"10MS", 10000},
        {" 7 ", SEC(7)},
        {"9223372036854us", INT64_C(9223372036854)},
        {"106751991d", INT64_C(106751991) * SEC(86400)},
    };
    static const char *const bad[] = {"",           "-1",    "abc", "5x",
                                      "5 m",        "1.2.3", ".",   "1e3",
                                      "s",          "5s5",   "+5",  "99999999999999999999",
                                      "106751992d", "5 s x"};
    int64_t t;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        t = -1;
        if (!config_parse_time(good[i].in, &t))
            fail_msg("\"%s\" should parse", good[i].in);
        assert_int_equal(t, good[i].usec);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (config_parse_time(bad[i], &t))
            fail_msg("\"%s\" should not parse", bad[i]);

    /* in the file: plain seconds, except tcp_user_timeout (milliseconds) */
    struct config *cfg = load_ok("[pgbouncer]\n"
                                 "query_timeout = 0.5\n"
                                 "client_idle_timeout = 2 min\n"
                                 "tcp_user_timeout = 500\n"
                                 "dns_max_ttl = 1.5s\n");
    assert_int_equal(cfg->query_timeout, 500000);
    assert_int_equal(cfg->client_idle_timeout, SEC(120));
    assert_int_equal(cfg->tcp_user_timeout, 500000);
    assert_int_equal(cfg->dns_max_ttl, 1500000);
    assert_string_equal(show(cfg, "query_timeout"), "0.5");
    assert_string_equal(show(cfg, "client_idle_timeout"), "120");
    assert_string_equal(show(cfg, "tcp_user_timeout"), "500");
    config_unref(cfg);

    cfg = load_ok("[pgbouncer]\ntcp_user_timeout = 2s\nserver_lifetime = 0.000001\n");
    assert_int_equal(cfg->tcp_user_timeout, SEC(2));
    assert_string_equal(show(cfg, "tcp_user_timeout"), "2000");
    assert_string_equal(show(cfg, "server_lifetime"), "0.000001");
    config_unref(cfg);

    expect_error("[pgbouncer]\nquery_timeout = -1\n",
                 "t.ini:2: invalid value \"-1\" for query_timeout: must not be negative");
    expect_error("[pgbouncer]\nquery_timeout = 5 weeks\n",
                 "t.ini:2: invalid value \"5 weeks\" for query_timeout: expected seconds, or a "
                 "number with a unit us, ms, s, min, h or d");
    expect_error("[pgbouncer]\ntcp_user_timeout = x\n",
                 "t.ini:2: invalid value \"x\" for tcp_user_timeout: expected milliseconds, or a "
                 "number with a unit us, ms, s, min, h or d");
    expect_error("[pgbouncer]\nserver_lifetime = 1000000000000000000\n",
                 "t.ini:2: invalid value \"1000000000000000000\" for server_lifetime: out of "
                 "range");
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t bytes;
    } good[] = {
        {"0", 0},
        {"4096", 4096},
        {"1B", 1},
        {"8kB", 8192},
        {"8 kB", 8192},
        {"8KB", 8192},
        {"1MB", 1 << 20},
        {"2GB", INT64_C(2) << 30},
        {"1TB", INT64_C(1) << 40},
        {"9223372036854775807", INT64_MAX},
    };
    static const char *const bad[] = {
        "", "-1", "1.5MB", "1XB", "kB", "1 k", "8EB", "9223372036854775808", "8388608TB"};
    int64_t n;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        n = -1;
        if (!config_parse_size(good[i].in, &n))
            fail_msg("\"%s\" should parse", good[i].in);
        assert_int_equal(n, good[i].bytes);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (config_parse_size(bad[i], &n))
            fail_msg("\"%s\" should not parse", bad[i]);

    expect_error("[pgbouncer]\npkt_buf = 100\n",
                 "t.ini:2: invalid value \"100\" for pkt_buf: must be between 512 and 1073741824 "
                 "bytes");
    expect_error("[pgbouncer]\nmax_packet_size = 4GB\n",
                 "t.ini:2: invalid value \"4GB\" for max_packet_size: must be between 1024 and "
                 "2147483647 bytes");
    expect_error("[pgbouncer]\npkt_buf = 4 kilobytes\n",
                 "t.ini:2: invalid value \"4 kilobytes\" for pkt_buf: expected a number of "
                 "bytes, optionally with a unit kB, MB, GB or TB");
}

static void test_parse_int_enum_mode(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[pgbouncer]\n"
                                 "listen_port = 5000\n"
                                 "unix_socket_mode = 0700\n"
                                 "pool_mode = Statement\n"
                                 "auth_type = SCRAM-SHA-256\n"
                                 "server_tls_sslmode = VERIFY-FULL\n"
                                 "verbose = 2\n");
    assert_int_equal(cfg->listen_port, 5000);
    assert_int_equal(cfg->unix_socket_mode, 0700);
    assert_string_equal(show(cfg, "unix_socket_mode"), "0700");
    assert_int_equal(cfg->pool_mode, POOL_MODE_STATEMENT);
    assert_string_equal(show(cfg, "pool_mode"), "statement");
    assert_int_equal(cfg->auth_type, AUTH_TYPE_SCRAM);
    assert_string_equal(cfg->server_tls_sslmode, "verify-full");
    assert_int_equal(cfg->verbose, 2);
    config_unref(cfg);

    static const char *const auth[] = {"any", "trust", "plain", "md5", "scram-sha-256", "cert"};
    for (size_t i = 0; i < sizeof(auth) / sizeof(auth[0]); i++) {
        char text[64];
        snprintf(text, sizeof(text), "[pgbouncer]\nauth_type = %s\n", auth[i]);
        cfg = load_ok(text);
        assert_string_equal(auth_type_str(cfg->auth_type), auth[i]);
        config_unref(cfg);
    }

    expect_error("[pgbouncer]\nlisten_port = abc\n",
                 "t.ini:2: invalid value \"abc\" for listen_port: not an integer");
    expect_error("[pgbouncer]\nlisten_port = 0\n",
                 "t.ini:2: invalid value \"0\" for listen_port: must be between 1 and 65535");
    expect_error("[pgbouncer]\nmax_client_conn = -5\n",
                 "t.ini:2: invalid value \"-5\" for max_client_conn: must be 0 or more");
    expect_error("[pgbouncer]\nmax_client_conn = 99999999999\n",
                 "t.ini:2: invalid value \"99999999999\" for max_client_conn: too large (at most "
                 "2147483647)");
    expect_error("[pgbouncer]\nunix_socket_mode = 0800\n",
                 "t.ini:2: invalid value \"0800\" for unix_socket_mode: expected an octal file "
                 "mode between 0 and 0777");
    expect_error("[pgbouncer]\npool_mode = sessions\n",
                 "t.ini:2: invalid value \"sessions\" for pool_mode: expected session, "
                 "transaction or statement");
    expect_error("[pgbouncer]\nauth_type = pam\n",
                 "t.ini:2: invalid value \"pam\" for auth_type: not supported by sluice");
    expect_error("[pgbouncer]\nauth_type = ldap\n",
                 "t.ini:2: invalid value \"ldap\" for auth_type: not supported by sluice");
    expect_error("[pgbouncer]\nauth_type = password\n",
                 "t.ini:2: invalid value \"password\" for auth_type: expected any, trust, plain, "
                 "md5, scram-sha-256 or cert");
    expect_error("[pgbouncer]\nauth_type = hba\n",
                 "t.ini:2: invalid value \"hba\" for auth_type: not supported by sluice");
    expect_error("[pgbouncer]\nsbuf_loopcnt = 5\n",
                 "t.ini:2: invalid value \"5\" for sbuf_loopcnt: not supported by sluice (sluice "
                 "reads once per connection and event-loop round, as sbuf_loopcnt = 1 would); "
                 "only 1 is accepted");
    expect_error("[pgbouncer]\nclient_tls_sslmode = on\n",
                 "t.ini:2: invalid value \"on\" for client_tls_sslmode: expected one of disable, "
                 "allow, prefer, require, verify-ca, verify-full");
    expect_error("[sluice]\nworkers = 5000\n",
                 "t.ini:2: invalid value \"5000\" for workers: must be between 0 and 1024");
}

static void test_databases(void **state)
{
    (void)state;
    struct config *cfg =
        load_ok("[databases]\n"
                "full = host=db.internal port=5433 dbname=real user=bob password='it''s a "
                "secret' auth_user=au auth_query='SELECT u, p FROM f($1)' pool_size=5 "
                "min_pool_size=1 reserve_pool=2 pool_mode=statement max_db_connections=10 "
                "connect_query='SET search_path = app' application_name=myapp "
                "client_encoding=UTF8 datestyle=ISO timezone=UTC\n"
                "bare =\n"
                "\"my db\" = host=/tmp dbname='odd name'\n"
                "\"q\"\"uote\" = reserve_pool_size=4\n"
                "semi = password=a;b#c\n"
                "spaced = host = h1   port =  6000\n"
                "* = host=fallback.internal\n"
                "full = host=replaced\n");

    assert_int_equal(cfg->n_databases, 7);
    /* a name defined again replaces the entry, in its first place */
    const struct config_database *db = &cfg->databases[0];
    assert_string_equal(db->name, "full");
    assert_string_equal(db->host, "replaced");
    assert_int_equal(db->port, 5432);
    assert_int_equal(db->pool_size, -1);
    assert_int_equal(db->line, 9);

    config_unref(cfg);

    cfg = load_ok("[databases]\n"
                  "full = host=db.internal port=5433 dbname=real user=bob password='it''s a "
                  "secret' auth_user=au auth_query='SELECT u, p FROM f($1)' auth_dbname=adb "
                  "pool_size=5 "
                  "min_pool_size=1 reserve_pool=2 pool_mode=statement max_db_connections=10 "
                  "connect_query='SET search_path = app' application_name=myapp "
                  "client_encoding=UTF8 datestyle=ISO timezone=UTC\n"
                  "bare =\n"
                  "\"my db\" = host=/tmp dbname='odd name'\n"
                  "\"q\"\"uote\" = reserve_pool_size=4\n"
                  "semi = password=a;b#c\n"
                  "spaced = host = h1   port =  6000\n"
                  "* = host=fallback.internal\n");
    db = config_find_database(cfg, "full");
    assert_non_null(db);
    assert_string_equal(db->host, "db.internal");
    assert_int_equal(db->port, 5433);
    assert_string_equal(db->dbname, "real");
    assert_string_equal(db->user, "bob");
    assert_string_equal(db->password, "it's a secret");
    assert_string_equal(db->auth_user, "au");
    assert_string_equal(db->auth_query, "SELECT u, p FROM f($1)");
    assert_string_equal(db->auth_dbname, "adb");
    assert_int_equal(db->pool_size, 5);
    assert_int_equal(db->min_pool_size, 1);
    assert_int_equal(db->reserve_pool, 2);
    assert_int_equal(db->pool_mode, POOL_MODE_STATEMENT);
    assert_int_equal(db->max_db_connections, 10);
    assert_string_equal(db->connect_query, "SET search_path = app");
    assert_string_equal(db->application_name, "myapp");
    assert_string_equal(db->client_encoding, "UTF8");
    assert_string_equal(db->datestyle, "ISO");
    assert_string_equal(db->timezone, "UTC");
    assert_int_equal(db->line, 2);

    db = config_find_database(cfg, "bare");
    assert_non_null(db);
    assert_string_equal(db->host, "");
    assert_int_equal(db->port, 5432);
    assert_string_equal(db->dbname, "");
    assert_string_equal(db->user, "");
    assert_string_equal(db->password, "");
    assert_int_equal(db->pool_size, -1);
    assert_int_equal(db->min_pool_size, -1);
    assert_int_equal(db->reserve_pool, -1);
    assert_int_equal(db->max_db_connections, -1);
    assert_int_equal(db->pool_mode, POOL_MODE_UNSET);

    db = config_find_database(cfg, "my db");
    assert_non_null(db);
    assert_string_equal(db->dbname, "odd name");
    db = config_find_database(cfg, "q\"uote");
    assert_non_null(db);
    assert_int_equal(db->reserve_pool, 4);
    /* ';' and '#' inside a line are data, as in PgBouncer */
    assert_string_equal(config_find_database(cfg, "semi")->password, "a;b#c");
    db = config_find_database(cfg, "spaced");
    assert_string_equal(db->host, "h1");
    assert_int_equal(db->port, 6000);

    /* names are case-sensitive; the fallback catches the rest */
    db = config_find_database(cfg, "FULL");
    assert_non_null(db);
    assert_string_equal(db->name, "*");
    assert_null(config_find_database(NULL, "x"));
    config_unref(cfg);

    cfg = load_ok("[databases]\nonly = host=x\n");
    assert_null(config_find_database(cfg, "other"));
    config_unref(cfg);

    expect_error("[databases]\nmydb = host=x hots=y\n",
                 "t.ini:2: unknown parameter \"hots\" for database \"mydb\"");
    expect_error("[databases]\nmydb = Host=x\n",
                 "t.ini:2: unknown parameter \"Host\" for database \"mydb\"");
    expect_error("[databases]\nmydb = host='x\n",
                 "t.ini:2: syntax error in database \"mydb\": unterminated quoted value for "
                 "\"host\"");
    expect_error("[databases]\nmydb = host='x'y\n",
                 "t.ini:2: syntax error in database \"mydb\": expected a space after the quoted "
                 "value of \"host\"");
    expect_error("[databases]\nmydb = host\n",
                 "t.ini:2: syntax error in database \"mydb\": expected \"=\" after \"host\"");
    expect_error("[databases]\nmydb = password=''\n",
                 "t.ini:2: syntax error in database \"mydb\": empty value for \"password\"");
    expect_error("[databases]\nmydb = =x\n",
                 "t.ini:2: syntax error in database \"mydb\": missing parameter name before "
                 "\"=\"");
    expect_error("[databases]\nmydb = port=0\n",
                 "t.ini:2: invalid value \"0\" for port: must be between 1 and 65535");
    expect_error("[databases]\nmydb = pool_size=many\n",
                 "t.ini:2: invalid value \"many\" for pool_size: not an integer");
    expect_error("[databases]\nmydb = pool_mode=batch\n",
                 "t.ini:2: invalid value \"batch\" for pool_mode: expected session, transaction "
                 "or statement");
    expect_error("[databases]\npgbouncer = host=x\n",
                 "t.ini:2: database name \"pgbouncer\" is reserved for the admin console");
    /* A refused URL's password is not repeated in the error. */
    expect_error("[sluice]\ncache = redis://u:hunter2@h:1/0\n",
                 "t.ini:2: invalid value \"redis://u:***@h:1/0\" for cache: credentials "
                 "(user:password@) are not supported");
    expect_error("[sluice]\ncache = redis://hunter2@h:1/0\n",
                 "t.ini:2: invalid value \"redis://***@h:1/0\" for cache: credentials "
                 "(user:password@) are not supported");
    expect_error("[databases]\nsluice = host=x\n",
                 "t.ini:2: database name \"sluice\" is reserved for the admin console");
    expect_error("[databases]\n\"\" = host=x\n", "t.ini:2: empty database name");
    expect_error("[databases]\nmy db = host=x\n",
                 "t.ini:2: syntax error: whitespace in name \"my db\" (quote it with double "
                 "quotes)");
    expect_error("[databases]\n\"open = host=x\n",
                 "t.ini:2: syntax error: unterminated quoted name");
}

static void test_replicas(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[databases]\n"
                                 "a = host=p port=6000 replicas='r1:6001,r2@3, [::1]:6003@0' "
                                 "read_write_split=on\n"
                                 "b = host=p\n"
                                 "[pgbouncer]\nread_write_split = on\n"
                                 "replica_load_balance = random\nprimary_reads = share\n"
                                 "replica_check_interval = 250ms\n");
    const struct config_database *a = &cfg->databases[0];
    assert_int_equal(a->n_replicas, 3);
    assert_string_equal(a->replica[0].host, "r1");
    assert_int_equal(a->replica[0].port, 6001);
    assert_int_equal(a->replica[0].weight, 1);
    assert_string_equal(a->replica[1].host, "r2");
    assert_int_equal(a->replica[1].port, 6000); /* the entry's port */
    assert_int_equal(a->replica[1].weight, 3);
    assert_string_equal(a->replica[2].host, "::1");
    assert_int_equal(a->replica[2].port, 6003);
    assert_int_equal(a->replica[2].weight, 0);
    assert_int_equal(a->read_write_split, 1);
    assert_int_equal(cfg->databases[1].n_replicas, 0);
    assert_int_equal(cfg->databases[1].read_write_split, -1);
    assert_true(cfg->read_write_split);
    assert_string_equal(cfg->replica_load_balance, "random");
    assert_string_equal(cfg->primary_reads, "share");
    assert_int_equal(cfg->replica_check_interval, 250000);
    assert_int_equal(cfg->replica_ban_time, SEC(30));
    assert_string_equal(cfg->replica_function_check, "strict");
    config_unref(cfg);

    expect_error("[databases]\na = replicas=r1:0\n",
                 "t.ini:2: database \"a\": invalid replica \"r1:0\": must be between 1 and 65535");
    expect_error("[databases]\na = replicas=r1@x\n",
                 "t.ini:2: database \"a\": invalid replica \"r1@x\": not an integer");
    expect_error("[databases]\na = replicas=::1:5432\n",
                 "t.ini:2: database \"a\": invalid replica \"::1:5432\": an IPv6 address "
                 "needs brackets: [ADDRESS]:PORT");
    expect_error("[databases]\na = replicas=[::1\n",
                 "t.ini:2: database \"a\": invalid replica \"[::1\": \"[\" without \"]\"");
    expect_error("[databases]\na = replicas=:5432\n",
                 "t.ini:2: database \"a\": invalid replica \":5432\": empty host");
    expect_error("[databases]\na = replicas=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p\n",
                 "t.ini:2: database \"a\": more than 15 replicas");
    expect_error("[databases]\na = read_write_split=maybe\n",
                 "t.ini:2: invalid value \"maybe\" for read_write_split: not a boolean");
    expect_error("[pgbouncer]\nreplica_load_balance = fastest\n",
                 "t.ini:2: invalid value \"fastest\" for replica_load_balance: expected one of "
                 "least_outstanding, round_robin, random");
}

static void test_users(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[users]\n"
                                 "alice = pool_mode=transaction max_user_connections=10\n"
                                 "bob = pool_mode=statement\n"
                                 "carol =\n"
                                 "bob = max_user_connections=3\n");
    assert_int_equal(cfg->n_users, 3);
    const struct config_user *u = config_find_user(cfg, "alice");
    assert_non_null(u);
    assert_int_equal(u->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(u->max_user_connections, 10);
    u = config_find_user(cfg, "bob"); /* the later line wins whole */
    assert_int_equal(u->pool_mode, POOL_MODE_UNSET);
    assert_int_equal(u->max_user_connections, 3);
    u = config_find_user(cfg, "carol");
    assert_int_equal(u->pool_mode, POOL_MODE_UNSET);
    assert_int_equal(u->max_user_connections, -1);
    assert_null(config_find_user(cfg, "Alice"));
    assert_null(config_find_user(cfg, "dave"));
    config_unref(cfg);

    expect_error("[users]\nalice = pool_size=5 max_connections=3\n",
                 "t.ini:2: unknown parameter \"max_connections\" for user \"alice\"");
    expect_error("[users]\nalice = max_user_connections=-1\n",
                 "t.ini:2: invalid value \"-1\" for max_user_connections: must be 0 or more");
    expect_error("[users]\nalice = pool_mode\n",
                 "t.ini:2: syntax error in user \"alice\": expected \"=\" after \"pool_mode\"");
}

static void test_sections(void **state)
{
    (void)state;
    struct config *cfg = load_ok("; leading comment\n"
                                 "# another\n"
                                 "[pgbouncer]\n"
                                 "listen_port = 7000\n"
                                 "pool_mode = session\n"
                                 "[sluice]\n"
                                 "workers = 3\n"
                                 "LISTEN_PORT = 7001\n"
                                 "[cache]\n"
                                 "orders = 300s\n"
                                 "[jobs]\n"
                                 "refresh = database=db schedule=\"0 * * * *\" command=\"x\"\n"
                                 "[peers]\n"
                                 "[ PgBouncer ] ; a comment after the header\n"
                                 "pool_mode = transaction\n"
                                 "[DATABASES]\n"
                                 "db = host=x user=u\n");
    /* one namespace, later lines win, keys and section names case-insensitive */
    assert_int_equal(cfg->listen_port, 7001);
    assert_int_equal(cfg->workers, 3);
    assert_int_equal(cfg->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(cfg->n_databases, 1);
    assert_int_equal(cfg->n_jobs, 1); /* [jobs] is read (test_config_jobs.c) */
    config_unref(cfg);

    expect_error("[pgbouncr]\n", "t.ini:1: unknown section [pgbouncr]");
    expect_error("[pgbouncer\n", "t.ini:1: syntax error: missing \"]\"");
    expect_error("[pgbouncer] x = 1\n", "t.ini:1: syntax error: unexpected text after \"]\"");
    expect_error("listen_port = 1\n", "t.ini:1: \"listen_port\" is outside of any section");
    expect_error("\n\n[pgbouncer]\nlisten_prot = 6432\n",
                 "t.ini:4: unknown setting \"listen_prot\"");
    expect_error("[pgbouncer]\nlisten_port 6432\n",
                 "t.ini:2: syntax error: expected \"name = value\"");
    expect_error("[pgbouncer]\n = 6432\n", "t.ini:2: syntax error: missing name before \"=\"");
    expect_error("[pgbouncer]\n%define x\n", "t.ini:2: unknown directive \"%define\"");
    expect_error("[pgbouncer]\n%include\n", "t.ini:2: %include needs a file name");
}

static void test_cache_rules(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[sluice]\ncache = memory\ncache_max_memory = 32MB\n"
                                 "cache_default_ttl = 2min\n"
                                 "[cache]\npublic.products = 300\nanalytics.* = 1.5s\n"
                                 "orders = 10min\n");
    assert_string_equal(cfg->cache, "memory");
    assert_int_equal(cfg->cache_max_memory, 32 << 20);
    assert_int_equal(cfg->cache_default_ttl, 120 * 1000000LL);
    assert_int_equal(cfg->n_cache_rules, 3);
    assert_string_equal(cfg->cache_rules[1].pattern, "analytics.*");
    assert_int_equal(cfg->cache_rules[1].ttl, 1500000);
    assert_int_equal(cfg->cache_rules[2].ttl, 600 * 1000000LL);
    config_unref(cfg);
    expect_error("[cache]\npublic.t = 0\n",
                 "t.ini:2: [cache] public.t: the time to live must be more than 0");
    expect_error("[cache]\na.b.c = 5\n",
                 "t.ini:2: [cache] a.b.c: a table pattern is \"schema.table\" or \"table\"");
    expect_error("[cache]\nt = soon\n", "t.ini:2: [cache] t: expected seconds, or a number "
                                        "with a unit us, ms, s, min, h or d");
    expect_error("[cache]\nt = 5\nt = 6\n", "t.ini:3: [cache] t: pattern given twice");
    struct config *r = load_ok("[sluice]\ncache = redis://127.0.0.1:6379/2\n");
    assert_string_equal(r->cache, "redis://127.0.0.1:6379/2");
    config_unref(r);
    expect_error("[sluice]\ncache = redis\n",
                 "t.ini:2: invalid value \"redis\" for cache: expected off, memory or "
                 "redis://HOST:PORT[/DB]");
    expect_error("[sluice]\ncache = redis://127.0.0.1\n",
                 "t.ini:2: invalid value \"redis://127.0.0.1\" for cache: a port is required "
                 "(redis://HOST:PORT[/DB])");
    expect_error("[sluice]\ncache = memory\ncache_max_memory = 1MB\n"
                 "cache_max_entry_size = 1MB\n",
                 "t.ini: cache_max_memory (1048576 bytes) must hold 16 entries of "
                 "cache_max_entry_size (1048576 bytes), the store's own tables and the answers "
                 "being filled (1048576 bytes): at least 17873296 bytes");
}

static void test_cache_invalidation(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[sluice]\ncache = memory\n");
    assert_string_equal(cfg->cache_invalidation, "off");
    assert_string_equal(cfg->cache_publication, "");
    config_unref(cfg);
    cfg = load_ok("[sluice]\ncache = memory\ncache_invalidation = logical\n"
                  "cache_publication = app_pub$1\n");
    assert_string_equal(cfg->cache_invalidation, "logical");
    assert_string_equal(cfg->cache_publication, "app_pub$1");
    config_unref(cfg);
    expect_error("[sluice]\ncache_invalidation = logical\n",
                 "t.ini: cache_invalidation = logical needs the result cache: set cache (it is "
                 "off)");
    expect_error("[sluice]\ncache = memory\ncache_invalidation = triggers\n",
                 "t.ini:3: invalid value \"triggers\" for cache_invalidation: expected one of "
                 "off, logical");
    expect_error("[sluice]\ncache = memory\ncache_invalidation = logical\n"
                 "cache_publication = My-Pub\n",
                 "t.ini: cache_publication \"My-Pub\": a publication name in lower case "
                 "(letters, digits, '_', '$'; at most 63 bytes; not starting with a digit)");
}

static void test_values_as_written(void **state)
{
    (void)state;
    char text[8192];
    char query[5001];

    memset(query, 'x', sizeof(query) - 1);
    query[sizeof(query) - 1] = '\0';
    snprintf(text, sizeof(text),
             "\xEF\xBB\xBF[pgbouncer]\r\n"
             "server_reset_query = DISCARD ALL ; not a comment\r\n"
             "admin_users = \"quoted\"\r\n"
             "logfile =\r\n"
             "   auth_query   =   %s   \r\n"
             "server_check_query = \t\n",
             query);
    struct config *cfg = load_ok(text);
    assert_string_equal(cfg->server_reset_query, "DISCARD ALL ; not a comment");
    assert_string_equal(cfg->admin_users, "\"quoted\"");
    assert_string_equal(cfg->logfile, "");
    assert_string_equal(cfg->auth_query, query);
    assert_string_equal(cfg->server_check_query, "");
    config_unref(cfg);

    /* duplicate keys: the last wins */
    cfg = load_ok("[pgbouncer]\nmax_client_conn = 1\nmax_client_conn = 2\n");
    assert_int_equal(cfg->max_client_conn, 2);
    config_unref(cfg);
}

static void test_include(void **state)
{
    (void)state;
    char main_text[4 * PATH_LEN];
    char expected[4 * PATH_LEN];
    char dbs[PATH_LEN], general[PATH_LEN];

    snprintf(dbs, sizeof(dbs), "%s", write_file("dbs.ini", "fromfile = host=inc port=6001\n"));
    snprintf(general, sizeof(general), "%s",
             write_file("general.ini", "listen_port = 7777\n[users]\nu = pool_mode=statement\n"));
    snprintf(main_text, sizeof(main_text),
             "[databases]\n"
             "%%include %s\n"
             "[pgbouncer]\n"
             "%%include %s\n"
             "after = pool_mode=transaction\n",
             dbs, general);
    /* the included file continues the including section, and its last
     * section stays in effect after it */
    struct config *cfg = load_ok(main_text);
    const struct config_database *db = config_find_database(cfg, "fromfile");
    assert_non_null(db);
    assert_int_equal(db->port, 6001);
    assert_string_equal(db->file, dbs);
    assert_int_equal(db->line, 1);
    assert_int_equal(cfg->listen_port, 7777);
    assert_non_null(config_find_user(cfg, "after"));
    assert_int_equal(config_find_user(cfg, "u")->pool_mode, POOL_MODE_STATEMENT);
    config_unref(cfg);

    /* config_load() from a file; relative %include paths are relative to the
     * current directory, not to the including file */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(mkdir(strcat(strcpy(expected, tmpdir), "/sub"), 0700), 0);
    write_file("sub/main.ini", "[pgbouncer]\n%include sub/part.ini\n");
    write_file("sub/part.ini", "max_client_conn = 42\n");
    assert_int_equal(chdir(tmpdir), 0);
    cfg = config_load("sub/main.ini", err, sizeof(err));
    if (!cfg)
        fail_msg("%s", err);
    assert_int_equal(cfg->max_client_conn, 42);
    assert_string_equal(cfg->path, "sub/main.ini");
    config_unref(cfg);
    write_file("sub/main2.ini", "[pgbouncer]\n%include part.ini\n");
    assert_null(config_load("sub/main2.ini", err, sizeof(err)));
    assert_string_equal(err,
                        "sub/main2.ini:2: cannot include \"part.ini\": No such file or directory");
    assert_int_equal(chdir(cwd), 0);

    /* errors inside an included file name that file and its line */
    snprintf(main_text, sizeof(main_text), "[pgbouncer]\n%%include %s\n",
             write_file("bad.ini", "\n\nno_such_key = 1\n"));
    snprintf(expected, sizeof(expected), "%s/bad.ini:3: unknown setting \"no_such_key\"", tmpdir);
    expect_error(main_text, expected);

    snprintf(main_text, sizeof(main_text), "[pgbouncer]\n\n%%include %s/missing.ini\n", tmpdir);
    snprintf(expected, sizeof(expected),
             "t.ini:3: cannot include \"%s/missing.ini\": No such file or directory", tmpdir);
    expect_error(main_text, expected);

    snprintf(main_text, sizeof(main_text), "%%include %s\n", tmpdir);
    snprintf(expected, sizeof(expected), "t.ini:1: cannot include \"%s\": Is a directory", tmpdir);
    expect_error(main_text, expected);

    expect_error("%include /dev/null\n",
                 "t.ini:1: cannot include \"/dev/null\": not a regular file");

    /* a file including itself stops at the depth limit */
    char self[PATH_LEN];
    snprintf(self, sizeof(self), "%s/self.ini", tmpdir);
    snprintf(main_text, sizeof(main_text), "%%include %s\n", self);
    write_file("self.ini", main_text);
    cfg = config_load(self, err, sizeof(err));
    assert_null(cfg);
    assert_non_null(strstr(err, "%include nested more than 16 deep"));

    snprintf(expected, sizeof(expected), "%s/nope.ini: No such file or directory", tmpdir);
    snprintf(self, sizeof(self), "%s/nope.ini", tmpdir);
    assert_null(config_load(self, err, sizeof(err)));
    assert_string_equal(err, expected);
    assert_null(config_load(tmpdir, err, sizeof(err)));
    snprintf(expected, sizeof(expected), "%s: Is a directory", tmpdir);
    assert_string_equal(err, expected);

    /* a NUL byte in a file is refused with its line */
    snprintf(self, sizeof(self), "%s/nul.ini", tmpdir);
    FILE *f = fopen(self, "w");
    assert_non_null(f);
    fwrite("[pgbouncer]\nlogfile = a\0b\n", 1, 26, f);
    fclose(f);
    assert_null(config_load(self, err, sizeof(err)));
    snprintf(expected, sizeof(expected), "%s:2: syntax error: NUL byte in line", self);
    assert_string_equal(err, expected);
}

/* PgBouncer's keys that sluice does not implement stop the load with the
 * file, the line and "not supported by sluice"; none is warned about and
 * ignored any more. */
static void test_unsupported_keys_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[pgbouncer]\npool_idle_timeout = 60\n",
        "[pgbouncer]\nauth_ident_file = /etc/ident\n",
        "[pgbouncer]\nauth_ldap_options = x\n",
        "[pgbouncer]\nconffile = /etc/other.ini\n",
        "[pgbouncer]\nservice_name = other\n",
        "[pgbouncer]\njob_name = other\n",
        "[databases]\ndb = host=x target_session_attrs=read-write\n",
    };
    char msg[512];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config *cfg = config_load_string("t.ini", bad[i], msg, sizeof(msg));
        if (cfg) {
            config_unref(cfg);
            fail_msg("should be refused: %s", bad[i]);
        }
        if (strncmp(msg, "t.ini:2: ", 9) != 0 || !strstr(msg, "not supported by sluice"))
            fail_msg("%s: unexpected error: %s", bad[i], msg);
    }
    /* Their defaults load; so does an empty [peers], and the keys sluice
     * implements now, general and per entry. */
    struct config *cfg = load_ok("[pgbouncer]\n"
                                 "peer_id = 0\n"
                                 "autodb_idle_timeout = 90\n"
                                 "service_name = pgbouncer\n"
                                 "pool_idle_timeout = 0\n"
                                 "server_tls13_ciphers = TLS_AES_256_GCM_SHA384\n"
                                 "transaction_timeout = 2.5\n"
                                 "query_wait_notify = 0\n"
                                 "max_user_client_connections = 7\n"
                                 "scram_iterations = 10000\n"
                                 "[databases]\n"
                                 "db = host=x target_session_attrs=any server_lifetime=10 "
                                 "query_wait_timeout=-1 max_db_client_connections=3\n"
                                 "[users]\n"
                                 "u = query_timeout=5 pool_size=2 reserve_pool_size=1 "
                                 "transaction_timeout=1.5 client_idle_timeout=500ms\n"
                                 "[peers]\n");
    assert_int_equal(cfg->autodb_idle_timeout, SEC(90));
    assert_int_equal(cfg->transaction_timeout, 2500000);
    assert_int_equal(cfg->query_wait_notify, 0);
    assert_int_equal(cfg->max_user_client_connections, 7);
    assert_int_equal(cfg->scram_iterations, 10000);
    assert_string_equal(cfg->server_tls13_ciphers, "TLS_AES_256_GCM_SHA384");
    assert_int_equal(cfg->databases[0].server_lifetime, 10000000);
    assert_int_equal(cfg->databases[0].query_wait_timeout, -1);
    assert_int_equal(cfg->databases[0].max_db_client_connections, 3);
    assert_int_equal(cfg->users[0].query_timeout, 5000000);
    assert_int_equal(cfg->users[0].pool_size, 2);
    assert_int_equal(cfg->users[0].reserve_pool_size, 1);
    assert_int_equal(cfg->users[0].transaction_timeout, 1500000);
    assert_int_equal(cfg->users[0].client_idle_timeout, 500000);
    assert_int_equal(cfg->users[0].idle_transaction_timeout, -1);
    assert_int_equal(cfg->users[0].max_user_client_connections, -1);
    config_unref(cfg);
}

static void test_with_setting(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[databases]\n"
                                 "a = host=h1 password='p w'\n"
                                 "* = host=h2\n"
                                 "[users]\n"
                                 "u = max_user_connections=2\n"
                                 "[pgbouncer]\n"
                                 "admin_users = root\n"
                                 "listen_port = 7000\n");

    struct config *next = config_with_setting(cfg, "pool_mode", "transaction", err, sizeof(err));
    assert_non_null(next);
    assert_int_equal(atomic_load(&next->refcount), 1);
    assert_int_equal(next->pool_mode, POOL_MODE_TRANSACTION);
    assert_int_equal(cfg->pool_mode, POOL_MODE_SESSION);
    /* everything else is an equal, separate copy */
    assert_int_equal(next->listen_port, 7000);
    assert_string_equal(next->admin_users, "root");
    assert_ptr_not_equal(next->admin_users, cfg->admin_users);
    assert_string_equal(next->path, cfg->path);
    assert_int_equal(next->n_databases, 2);
    assert_ptr_not_equal(next->databases, cfg->databases);
    assert_string_equal(config_find_database(next, "a")->password, "p w");
    assert_ptr_not_equal(config_find_database(next, "a")->password,
                         config_find_database(cfg, "a")->password);
    assert_string_equal(config_find_database(next, "zzz")->host, "h2");
    assert_int_equal(config_find_user(next, "u")->max_user_connections, 2);
    assert_int_equal(next->workers, cfg->workers);
    config_unref(cfg); /* the copy outlives its source */

    struct config *third = config_with_setting(next, "Query_Wait_Timeout", "250ms", err, 512);
    assert_non_null(third);
    assert_int_equal(third->query_wait_timeout, 250000);
    assert_string_equal(show(third, "query_wait_timeout"), "0.25");
    config_unref(third);

    third = config_with_setting(next, "server_check_query", "", err, sizeof(err));
    assert_non_null(third);
    assert_string_equal(third->server_check_query, "");
    config_unref(third);

    assert_null(config_with_setting(next, "listen_port", "1", err, sizeof(err)));
    assert_string_equal(err, "setting \"listen_port\" cannot be changed without a restart");
    assert_null(config_with_setting(next, "workers", "1", err, sizeof(err)));
    assert_string_equal(err, "setting \"workers\" cannot be changed without a restart");
    assert_null(config_with_setting(next, "nope", "1", err, sizeof(err)));
    assert_string_equal(err, "unknown setting \"nope\"");
    /* Keys already given to clients carry it (test_peers.c). */
    assert_null(config_with_setting(next, "peer_id", "1", err, sizeof(err)));
    assert_string_equal(err, "setting \"peer_id\" cannot be changed without a restart");
    assert_null(config_with_setting(next, "default_pool_size", "big", err, sizeof(err)));
    assert_string_equal(err, "invalid value \"big\" for default_pool_size: not an integer");
    assert_null(config_with_setting(next, "auth_type", "pam", err, sizeof(err)));
    assert_string_equal(err, "invalid value \"pam\" for auth_type: not supported by sluice");
    assert_null(config_with_setting(NULL, "pool_mode", "session", err, sizeof(err)));
    /* err may be absent */
    assert_null(config_with_setting(next, "nope", "1", NULL, 0));
    config_unref(next);
}

static void test_refcount(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[databases]\nx = host=y\n");
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_int_equal(atomic_load(&cfg->refcount), 2);
    config_unref(cfg);
    assert_int_equal(atomic_load(&cfg->refcount), 1);
    assert_string_equal(cfg->databases[0].host, "y"); /* still alive */
    config_unref(cfg);                                /* freed: LSan checks it all went */
    config_unref(NULL);
    assert_null(config_ref(NULL));

    /* errors leave nothing behind either (LSan), whatever the stage */
    assert_null(config_load_string("t.ini", "[databases]\na = host=x\nb = bad\n", err, 512));
    assert_null(
        config_load_string("t.ini", "[users]\na = max_user_connections=1\nb =x\n", NULL, 0));
    assert_null(config_load_string("t.ini", NULL, err, sizeof(err)));
    assert_null(config_load(NULL, err, sizeof(err)));
}

static void test_list_contains(void **state)
{
    (void)state;
    assert_true(config_list_contains("a,b,c", "b"));
    assert_true(config_list_contains(" a , b ,c ", "c"));
    assert_true(config_list_contains("a b\tc", "a"));
    assert_true(config_list_contains("postgres", "postgres"));
    assert_false(config_list_contains("postgres", "post"));
    assert_false(config_list_contains("a,b", "A"));
    assert_false(config_list_contains("", "a"));
    assert_false(config_list_contains("a,,b", ""));
    assert_false(config_list_contains(NULL, "a"));
    assert_false(config_list_contains("a", NULL));
}

/* docs/configuration.md has a table row for every general setting. Run
 * from the top of the repository, as `make unit` does; skipped elsewhere. */
static void test_docs_cover_every_key(void **state)
{
    (void)state;
    FILE *f = fopen("docs/configuration.md", "r");
    if (!f)
        skip();
    static char doc[128 * 1024];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    doc[n] = '\0';
    fclose(f);

    struct config *cfg = load_ok("");
    char buf[64], row[128];
    struct config_setting_view v;
    for (int i = 0; config_setting_at(cfg, i, buf, sizeof(buf), &v); i++) {
        snprintf(row, sizeof(row), "| `%s` |", v.key);
        if (!strstr(doc, row))
            fail_msg("docs/configuration.md does not document %s", v.key);
    }
    config_unref(cfg);
}

static void test_str_helpers(void **state)
{
    (void)state;
    assert_string_equal(pool_mode_str(POOL_MODE_SESSION), "session");
    assert_string_equal(pool_mode_str(POOL_MODE_TRANSACTION), "transaction");
    assert_string_equal(pool_mode_str(POOL_MODE_STATEMENT), "statement");
    assert_string_equal(pool_mode_str(POOL_MODE_UNSET), "unset");
    assert_string_equal(auth_type_str(AUTH_TYPE_SCRAM), "scram-sha-256");
    assert_string_equal(auth_type_str(AUTH_TYPE_PAM), "pam");
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    log_set_quiet(true); /* warnings are checked through a log file */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_LEN];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_print_as_written),
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_int_enum_mode),
        cmocka_unit_test(test_databases),
        cmocka_unit_test(test_replicas),
        cmocka_unit_test(test_users),
        cmocka_unit_test(test_sections),
        cmocka_unit_test(test_cache_rules),
        cmocka_unit_test(test_cache_invalidation),
        cmocka_unit_test(test_values_as_written),
        cmocka_unit_test(test_include),
        cmocka_unit_test(test_unsupported_keys_refused),
        cmocka_unit_test(test_with_setting),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_list_contains),
        cmocka_unit_test(test_docs_cover_every_key),
        cmocka_unit_test(test_str_helpers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
