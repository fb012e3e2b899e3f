/* test_admin.c - the admin console's pure parts: the command parser, the
 * parameter counter, and the encoding of results (text and binary). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin_int.h"
#include "insights.h"
#include "log.h"

/* Parses sql, expecting success. */
static struct admin_cmd *parse_ok(const char *sql)
{
    static struct admin_cmd cmd;
    char err[256] = "";
    if (!admin_parse(sql, 0, NULL, &cmd, err, sizeof(err)))
        fail_msg("\"%s\" did not parse: %s", sql, err);
    return &cmd;
}

/* Parses sql, expecting failure with a message containing want. */
static void parse_fails(const char *sql, const char *want)
{
    struct admin_cmd cmd;
    char err[256] = "";
    if (admin_parse(sql, 0, NULL, &cmd, err, sizeof(err)))
        fail_msg("\"%s\" parsed, expected an error", sql);
    if (!strstr(err, want))
        fail_msg("\"%s\": error \"%s\" does not contain \"%s\"", sql, err, want);
}

static void test_show(void **state)
{
    (void)state;
    struct admin_cmd *c = parse_ok("SHOW POOLS");
    assert_int_equal(c->verb, ADMIN_CMD_SHOW);
    assert_int_equal(c->topic, ADMIN_SHOW_POOLS);
    c = parse_ok("  show\tstats_totals ;; ");
    assert_int_equal(c->topic, ADMIN_SHOW_STATS_TOTALS);
    c = parse_ok("Show Clients;");
    assert_int_equal(c->topic, ADMIN_SHOW_CLIENTS);
    c = parse_ok("-- a comment\nSHOW /* inline */ version");
    assert_int_equal(c->topic, ADMIN_SHOW_VERSION);
    for (int t = 0; t < ADMIN_SHOW_COUNT; t++) {
        char sql[64];
        snprintf(sql, sizeof(sql), "SHOW %s", admin_show_topic_str((enum admin_show_topic)t));
        c = parse_ok(sql);
        assert_int_equal(c->verb, ADMIN_CMD_SHOW);
        assert_int_equal(c->topic, t);
    }
    parse_fails("SHOW", "SHOW needs one of the topics");
    parse_fails("SHOW POOLS extra", "SHOW needs one of the topics");
    parse_fails("SHOW 'pools'", "SHOW needs one of the topics");
    parse_fails("SHOW NOTHING", "unknown SHOW topic \"NOTHING\"");
    parse_fails("SHOW HELP me", "SHOW needs one of the topics");
}

static void test_show_queries(void **state)
{
    (void)state;
    struct admin_cmd *c = parse_ok("SHOW QUERIES");
    assert_int_equal(c->topic, ADMIN_SHOW_QUERIES);
    assert_int_equal(c->order, INSIGHTS_BY_TOTAL);
    assert_int_equal(c->limit, 0);
    c = parse_ok("show queries order by P99 limit 5;");
    assert_int_equal(c->order, INSIGHTS_BY_P99);
    assert_int_equal(c->limit, 5);
    c = parse_ok("SHOW QUERIES LIMIT 1");
    assert_int_equal(c->order, INSIGHTS_BY_TOTAL);
    assert_int_equal(c->limit, 1);
    assert_int_equal(parse_ok("SHOW QUERIES ORDER BY calls")->order, INSIGHTS_BY_CALLS);
    assert_int_equal(parse_ok("SHOW QUERIES ORDER BY mean")->order, INSIGHTS_BY_MEAN);
    assert_int_equal(parse_ok("SHOW QUERIES ORDER BY errors")->order, INSIGHTS_BY_ERRORS);
    assert_int_equal(parse_ok("SHOW QUERIES ORDER BY total_time")->order, INSIGHTS_BY_TOTAL);
    parse_fails("SHOW QUERIES ORDER BY rows", "ordered by total_time, calls, mean, p99 or errors");
    parse_fails("SHOW QUERIES ORDER calls", "syntax: SHOW QUERIES [ORDER BY column] [LIMIT n]");
    parse_fails("SHOW QUERIES LIMIT 0", "LIMIT needs a count");
    parse_fails("SHOW QUERIES LIMIT x", "LIMIT needs a count");
    parse_fails("SHOW QUERIES LIMIT 5 ORDER BY calls", "syntax: SHOW QUERIES");
    assert_int_equal(parse_ok("INSIGHTS RESET")->verb, ADMIN_CMD_INSIGHTS_RESET);
    parse_fails("INSIGHTS", "syntax: INSIGHTS RESET");
    parse_fails("INSIGHTS RESET now", "syntax: INSIGHTS RESET");
}

static void test_show_columns(void **state)
{
    (void)state;
    const char *const *names;
    const uint32_t *types;
    assert_int_equal(admin_show_columns(ADMIN_SHOW_HELP, &names, &types), 0);
    int n = admin_show_columns(ADMIN_SHOW_POOLS, &names, &types);
    assert_int_equal(n, 18);
    assert_string_equal(names[0], "database");
    assert_string_equal(names[16], "load_balance_hosts");
    assert_string_equal(names[17], "endpoint"); /* sluice's, after PgBouncer's */
    assert_int_equal(types[2], ADMIN_OID_INT4);
    n = admin_show_columns(ADMIN_SHOW_CLIENTS, &names, &types);
    assert_int_equal(n, 21);
    assert_string_equal(names[20], "id");
    assert_int_equal(types[20], ADMIN_OID_INT8);
    n = admin_show_columns(ADMIN_SHOW_STATS, &names, &types);
    assert_int_equal(n, 29);
    assert_string_equal(names[22], "avg_bind_count");
    assert_string_equal(names[24], "total_retry_count");
    assert_string_equal(names[25], "total_server_kept_count");
    assert_string_equal(names[28], "avg_server_kept_count");
    assert_string_equal(names[1], "total_server_assignment_count");
    assert_int_equal(types[1], ADMIN_OID_NUMERIC);
}

static void test_verbs(void **state)
{
    (void)state;
    struct admin_cmd *c = parse_ok("RELOAD");
    assert_int_equal(c->verb, ADMIN_CMD_RELOAD);
    assert_false(c->has_arg);
    c = parse_ok("pause");
    assert_int_equal(c->verb, ADMIN_CMD_PAUSE);
    assert_false(c->has_arg);
    c = parse_ok("PAUSE mydb;");
    assert_true(c->has_arg);
    assert_string_equal(c->arg, "mydb");
    /* Names are taken as written: no case folding. */
    c = parse_ok("RESUME MyDb");
    assert_int_equal(c->verb, ADMIN_CMD_RESUME);
    assert_string_equal(c->arg, "MyDb");
    c = parse_ok("KILL \"odd \"\"name\"\"\"");
    assert_int_equal(c->verb, ADMIN_CMD_KILL);
    assert_string_equal(c->arg, "odd \"name\"");
    c = parse_ok("DISABLE db.with-dash");
    assert_int_equal(c->verb, ADMIN_CMD_DISABLE);
    assert_string_equal(c->arg, "db.with-dash");
    c = parse_ok("enable x");
    assert_int_equal(c->verb, ADMIN_CMD_ENABLE);
    c = parse_ok("RECONNECT");
    assert_int_equal(c->verb, ADMIN_CMD_RECONNECT);
    c = parse_ok("WAIT_CLOSE mydb");
    assert_int_equal(c->verb, ADMIN_CMD_WAIT_CLOSE);
    c = parse_ok("KILL_CLIENT 42");
    assert_int_equal(c->verb, ADMIN_CMD_KILL_CLIENT);
    assert_string_equal(c->arg, "42");
    c = parse_ok("SUSPEND");
    assert_int_equal(c->verb, ADMIN_CMD_SUSPEND);
    assert_string_equal(admin_verb_str(ADMIN_CMD_KILL_CLIENT), "KILL_CLIENT");
    assert_string_equal(admin_verb_str(ADMIN_CMD_WAIT_CLOSE), "WAIT_CLOSE");

    parse_fails("DISABLE", "DISABLE needs a database name");
    parse_fails("ENABLE", "needs a database name");
    parse_fails("KILL_CLIENT", "needs a client id");
    parse_fails("PAUSE a b", "PAUSE takes one argument");
    parse_fails("RELOAD now", "RELOAD takes no argument");
    parse_fails("PAUSE =", "PAUSE takes one argument");
    parse_fails("SELECT 1", "unknown command \"SELECT\"");
    parse_fails("KILL \"unterminated", "unterminated quoted identifier");
    parse_fails("SHOW POOLS; SHOW STATS", "only one command per query");
}

static void test_shutdown(void **state)
{
    (void)state;
    struct admin_cmd *c = parse_ok("SHUTDOWN");
    assert_int_equal(c->verb, ADMIN_CMD_SHUTDOWN);
    assert_int_equal(c->shutdown, ADMIN_SHUTDOWN_NOW);
    c = parse_ok("shutdown wait_for_servers");
    assert_int_equal(c->shutdown, ADMIN_SHUTDOWN_WAIT_FOR_SERVERS);
    c = parse_ok("SHUTDOWN WAIT_FOR_CLIENTS;");
    assert_int_equal(c->shutdown, ADMIN_SHUTDOWN_WAIT_FOR_CLIENTS);
    parse_fails("SHUTDOWN NOW", "syntax: SHUTDOWN");
    parse_fails("SHUTDOWN WAIT_FOR_CLIENTS x", "syntax: SHUTDOWN");
}

static void test_set(void **state)
{
    (void)state;
    struct admin_cmd *c = parse_ok("SET default_pool_size = 5");
    assert_int_equal(c->verb, ADMIN_CMD_SET);
    assert_string_equal(c->arg, "default_pool_size");
    assert_string_equal(c->value, "5");
    c = parse_ok("set server_check_query to 'select ''x'''");
    assert_string_equal(c->arg, "server_check_query");
    assert_string_equal(c->value, "select 'x'");
    c = parse_ok("SET server_reset_query = DISCARD ALL;");
    assert_string_equal(c->value, "DISCARD ALL");
    c = parse_ok("SET log_connections=0");
    assert_string_equal(c->arg, "log_connections");
    assert_string_equal(c->value, "0");
    c = parse_ok("SET admin_users = ''");
    assert_string_equal(c->value, "");
    parse_fails("SET", "syntax: SET key = value");
    parse_fails("SET a", "syntax: SET key = value");
    parse_fails("SET a =", "syntax: SET key = value");
    parse_fails("SET a b c", "syntax: SET key = value");
    parse_fails("SET a = b = c", "syntax: SET key = value");
    parse_fails("SET a = 'open", "unterminated quoted string");

    assert_true(admin_is_session_setting("extra_float_digits"));
    assert_true(admin_is_session_setting("Application_Name"));
    assert_false(admin_is_session_setting("default_pool_size"));
}

static void test_empty(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("")->verb, ADMIN_CMD_EMPTY);
    assert_int_equal(parse_ok("  ;  ; ")->verb, ADMIN_CMD_EMPTY);
    assert_int_equal(parse_ok("-- only a comment")->verb, ADMIN_CMD_EMPTY);
    assert_int_equal(parse_ok("/* unterminated comment")->verb, ADMIN_CMD_EMPTY);
}

static void test_params(void **state)
{
    (void)state;
    struct admin_cmd cmd;
    char err[256];
    const char *params[] = {"mydb", "17", NULL};
    assert_true(admin_parse("PAUSE $1", 2, params, &cmd, err, sizeof(err)));
    assert_string_equal(cmd.arg, "mydb");
    assert_true(admin_parse("KILL_CLIENT $2", 2, params, &cmd, err, sizeof(err)));
    assert_string_equal(cmd.arg, "17");
    assert_true(admin_parse("SET server_check_query = $1", 2, params, &cmd, err, sizeof(err)));
    assert_string_equal(cmd.value, "mydb");
    /* Before Bind, $n stays as written: enough to tell the command. */
    assert_true(admin_parse("PAUSE $1", 0, NULL, &cmd, err, sizeof(err)));
    assert_string_equal(cmd.arg, "$1");
    assert_false(admin_parse("PAUSE $3", 2, params, &cmd, err, sizeof(err)));
    assert_string_equal(err, "there is no parameter $3");
    assert_false(admin_parse("PAUSE $3", 3, params, &cmd, err, sizeof(err)));
    assert_string_equal(err, "parameter $3 is NULL");
    assert_false(admin_parse("PAUSE $1x", 2, params, &cmd, err, sizeof(err)));

    assert_int_equal(admin_count_params("SHOW POOLS"), 0);
    assert_int_equal(admin_count_params("KILL_CLIENT $2"), 2);
    assert_int_equal(admin_count_params("SET a = $1 -- $9\n"), 1);
    assert_int_equal(admin_count_params("SET a = '$7' /* $8 */ \"$6\" $3"), 3);
    assert_int_equal(admin_count_params("SET a = 'it''s $4'"), 0);
}

static void test_long_input(void **state)
{
    (void)state;
    char sql[ADMIN_VALUE_MAX + 64];
    char name[ADMIN_ARG_MAX + 10];
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(sql, sizeof(sql), "PAUSE %s", name);
    parse_fails(sql, "argument too long");
    /* Many words. */
    parse_fails("KILL a b c d e f g h i j k l m n o p q r s", "too many words");
}

/* ---- result encoding ---------------------------------------------------- */

static struct iobuf_cache cache;

static int setup(void **state)
{
    (void)state;
    iobuf_cache_init(&cache, 64, 4); /* small: results must grow the buffer */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    iobuf_cache_destroy(&cache);
    return 0;
}

static const uint8_t *out_data(const struct admin_out *o)
{
    return o->buf->data + o->buf->start;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void check_numeric(const char *in, const uint8_t *want, size_t wantlen)
{
    struct admin_out o = {.cache = &cache};
    assert_true(admin_encode_numeric(&o, in));
    assert_int_equal(iobuf_len(o.buf), wantlen);
    assert_memory_equal(out_data(&o), want, wantlen);
    iobuf_put(&cache, o.buf);
}

static void test_numeric(void **state)
{
    (void)state;
    /* ndigits, weight, sign, dscale, base-10000 digits (all big-endian int16) */
    static const uint8_t zero[] = {0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t seven[] = {0, 1, 0, 0, 0, 0, 0, 0, 0, 7};
    static const uint8_t n12345[] = {0, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0x09, 0x29};
    static const uint8_t n10000[] = {0, 1, 0, 1, 0, 0, 0, 0, 0, 1};
    static const uint8_t minus42[] = {0, 1, 0, 0, 0x40, 0, 0, 0, 0, 42};
    static const uint8_t big[] = {0, 3, 0, 4, 0, 0, 0, 0, 0, 0x12, 0x04, 0xd2, 0x16, 0x2e};
    check_numeric("0", zero, sizeof(zero));
    check_numeric("-0", zero, sizeof(zero));
    check_numeric("0007", seven, sizeof(seven));
    check_numeric("12345", n12345, sizeof(n12345));
    check_numeric("10000", n10000, sizeof(n10000));
    check_numeric("-42", minus42, sizeof(minus42));
    /* 18 1234 5678 0000 0000: weight 4, trailing zero groups dropped */
    check_numeric("181234567800000000", big, sizeof(big));

    struct admin_out o = {.cache = &cache};
    assert_false(admin_encode_numeric(&o, ""));
    assert_false(admin_encode_numeric(&o, "12a"));
    assert_false(admin_encode_numeric(&o, "1.5"));
    assert_null(o.buf);
}

static void test_result_text_and_binary(void **state)
{
    (void)state;
    static const char *const names[] = {"name", "n4", "n8", "num"};
    static const uint32_t types[] = {ADMIN_OID_TEXT, ADMIN_OID_INT4, ADMIN_OID_INT8,
                                     ADMIN_OID_NUMERIC};
    struct admin_out o = {.cache = &cache};
    struct admin_result r = {.out = &o, .describe = true};
    admin_result_columns(&r, 4, names, types);
    const char *row[] = {"abc", "-2", "5000000000", NULL};
    admin_result_row(&r, row);
    admin_out_complete(&o, "SHOW");
    admin_out_ready(&o);
    const uint8_t *p = out_data(&o);
    size_t len = iobuf_len(o.buf);

    /* RowDescription: 4 columns, text format */
    assert_int_equal(p[0], 'T');
    uint32_t tlen = be32(p + 1);
    assert_int_equal(p[5] << 8 | p[6], 4);
    const uint8_t *col = p + 7;
    assert_string_equal((const char *)col, "name");
    col += 5;
    assert_int_equal(be32(col + 6), ADMIN_OID_TEXT);
    assert_int_equal(col[16] << 8 | col[17], 0); /* format */
    /* DataRow in text */
    const uint8_t *d = p + 1 + tlen;
    assert_int_equal(d[0], 'D');
    assert_int_equal(d[5] << 8 | d[6], 4);
    assert_int_equal(be32(d + 7), 3);
    assert_memory_equal(d + 11, "abc", 3);
    assert_int_equal(be32(d + 14), 2);
    assert_memory_equal(d + 18, "-2", 2);
    assert_int_equal(be32(d + 20), 10);
    assert_int_equal(be32(d + 34), 0xffffffffu); /* NULL */
    const uint8_t *cc = d + 1 + be32(d + 1);
    assert_int_equal(cc[0], 'C');
    assert_string_equal((const char *)cc + 5, "SHOW");
    const uint8_t *z = cc + 1 + be32(cc + 1);
    assert_int_equal(z[0], 'Z');
    assert_int_equal(z[5], 'I');
    assert_int_equal((size_t)(z + 6 - p), len);
    assert_int_equal(r.nrows, 1);
    iobuf_put(&cache, o.buf);

    /* The same row in binary (one format code for all columns). */
    int16_t bin = 1;
    o.buf = NULL;
    struct admin_result rb = {.out = &o, .nformats = 1, .formats = &bin};
    admin_result_columns(&rb, 4, names, types); /* no RowDescription: describe is off */
    const char *row2[] = {"abc", "-2", "5000000000", "12345"};
    admin_result_row(&rb, row2);
    p = out_data(&o);
    assert_int_equal(p[0], 'D');
    assert_int_equal(be32(p + 7), 3);
    assert_memory_equal(p + 11, "abc", 3);
    assert_int_equal(be32(p + 14), 4);
    assert_int_equal(be32(p + 18), 0xfffffffeu); /* -2 */
    assert_int_equal(be32(p + 22), 8);
    static const uint8_t five_billion[] = {0, 0, 0, 1, 0x2a, 0x05, 0xf2, 0x00};
    assert_memory_equal(p + 26, five_billion, 8);
    assert_int_equal(be32(p + 34), 12);
    static const uint8_t n12345[] = {0, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0x09, 0x29};
    assert_memory_equal(p + 38, n12345, 12);
    assert_int_equal(be32(p + 1), iobuf_len(o.buf) - 1);
    iobuf_put(&cache, o.buf);

    /* Per-column formats. */
    int16_t mixed[] = {0, 1, 0, 0};
    struct admin_result rm = {.nformats = 4, .formats = mixed};
    assert_int_equal(admin_result_format(&rm, 0), 0);
    assert_int_equal(admin_result_format(&rm, 1), 1);
    struct admin_result none = {0};
    assert_int_equal(admin_result_format(&none, 3), 0);
}

static void test_big_result(void **state)
{
    (void)state;
    /* Far beyond the cache's buffer size: the output grows on the heap. */
    static const char *const names[] = {"a", "b"};
    static const uint32_t types[] = {ADMIN_OID_TEXT, ADMIN_OID_INT4};
    struct admin_out o = {.cache = &cache};
    struct admin_result r = {.out = &o, .describe = true};
    admin_result_columns(&r, 2, names, types);
    for (int i = 0; i < 10000; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *row[] = {"some text value", num};
        admin_result_row(&r, row);
    }
    assert_int_equal(r.nrows, 10000);
    /* Walk the messages: every length is consistent. */
    const uint8_t *p = out_data(&o), *end = p + iobuf_len(o.buf);
    int rows = 0;
    while (p < end) {
        if (p[0] == 'D')
            rows++;
        p += 1 + be32(p + 1);
    }
    assert_ptr_equal(p, end);
    assert_int_equal(rows, 10000);
    iobuf_put(&cache, o.buf);
}

static void test_error_and_notice(void **state)
{
    (void)state;
    struct admin_out o = {.cache = &cache};
    admin_out_error(&o, "08P01", "bad thing");
    admin_out_notice(&o, "Console usage", "detail here");
    const uint8_t *p = out_data(&o);
    assert_int_equal(p[0], 'E');
    const char *f = (const char *)p + 5;
    assert_string_equal(f, "SERROR");
    f += strlen(f) + 1;
    assert_string_equal(f, "VERROR");
    f += strlen(f) + 1;
    assert_string_equal(f, "C08P01");
    f += strlen(f) + 1;
    assert_string_equal(f, "Mbad thing");
    const uint8_t *n = p + 1 + be32(p + 1);
    assert_int_equal(n[0], 'N');
    assert_non_null(memmem(n, iobuf_len(o.buf) - (size_t)(n - p), "Ddetail here", 12));
    iobuf_put(&cache, o.buf);
}

int main(void)
{
    log_set_quiet(true);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_show),
        cmocka_unit_test(test_show_queries),
        cmocka_unit_test(test_show_columns),
        cmocka_unit_test(test_verbs),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_long_input),
        cmocka_unit_test_setup_teardown(test_numeric, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_text_and_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_and_notice, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
