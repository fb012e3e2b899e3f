/* test_server_query.c - the internal query API against a scripted fake
 * server on a socket pair: what is sent (simple Query, or Parse/Bind/
 * Execute/Sync with text parameters), rows, errors, ends, pipelined
 * queries, ParameterStatus, notifications, a connection that goes, and
 * malformed answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "pool.h"
#include "server_query.h"
#include "worker.h"

static struct worker w;
static struct database db;
static struct pool_user user;
static struct pool pool;
static struct server sv;
static int peer = -1; /* the fake server's end */

/* What the asker heard. */
static struct {
    int rows, errors, done, notified;
    enum server_query_status status[4];
    char row0[32];
    bool row1_null;
    int ncols;
    char sqlstate[6];
    char text[128];
    enum server_query_read_status read;
    char why[128];
} heard;

static void on_row(struct server *s, void *arg, const struct server_query_row *row)
{
    heard.rows++;
    heard.ncols = row->n;
    snprintf(heard.row0, sizeof(heard.row0), "%.*s", (int)row->len[0], row->val[0]);
    heard.row1_null = row->n > 1 && row->val[1] == NULL;
}

static void on_error(struct server *s, void *arg, const char *sqlstate, const char *text)
{
    heard.errors++;
    snprintf(heard.sqlstate, sizeof(heard.sqlstate), "%s", sqlstate);
    snprintf(heard.text, sizeof(heard.text), "%s", text);
}

static void on_done(struct server *s, void *arg, enum server_query_status st)
{
    heard.status[heard.done++ & 3] = st;
}

static const struct server_query_ops ops = {
    .on_row = on_row, .on_error = on_error, .on_done = on_done};

static void on_data(struct stream *s)
{
    heard.read = server_query_read(&sv, heard.why, sizeof(heard.why));
}

static const struct stream_ops test_stream_ops = {.on_data = on_data};

static void on_notify(struct server *s, const struct stream_msg *m)
{
    heard.notified++;
}

static const struct server_holder_ops holder = {.on_notify = on_notify};

static int setup(void **state)
{
    (void)state;
    char err[256];
    struct config *cfg = config_load_string("test", "[databases]\n", err, sizeof(err));
    assert_non_null(cfg);
    worker_init(&w, 0, ev_default_loop(0), cfg);
    g_pooler.cfg = cfg;
    memset(&db, 0, sizeof(db));
    db.name = "mydb";
    db.n_endpoints = 1;
    db.endpoints[0].host = "127.0.0.1";
    db.endpoints[0].port = 5432;
    user.name = "alice";
    memset(&pool, 0, sizeof(pool));
    pool.db = &db;
    pool.user = &user;
    memset(&sv, 0, sizeof(sv));
    sv.pool = &pool;
    sv.state = SV_TESTING;
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    stream_init(&sv.s, &w, sp[0], &test_stream_ops);
    stream_read_start(&sv.s);
    peer = sp[1];
    memset(&heard, 0, sizeof(heard));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    server_query_abort(&sv);
    server_query_free(&sv);
    param_set_clear(&sv.params);
    stream_close(&sv.s);
    close(peer);
    worker_destroy(&w);
    config_unref(g_pooler.cfg);
    g_pooler.cfg = NULL;
    param_intern_free_all();
    return 0;
}

/* Everything sluice sent to the fake server so far. */
static size_t sent(uint8_t *buf, size_t cap)
{
    ev_run(w.loop, EVRUN_NOWAIT);
    ssize_t n = recv(peer, buf, cap, MSG_DONTWAIT);
    return n > 0 ? (size_t)n : 0;
}

/* The fake server answers (messages given as type + body), and sluice's
 * loop reads. */
static void answer(uint8_t type, const void *body, uint32_t n)
{
    uint8_t hdr[5] = {type};
    proto_put32(hdr + 1, 4 + n);
    assert_int_equal(write(peer, hdr, 5), 5);
    if (n)
        assert_int_equal(write(peer, body, n), (ssize_t)n);
}

static void run(void)
{
    for (int i = 0; i < 5; i++)
        ev_run(w.loop, EVRUN_NOWAIT);
}

static void test_extended_with_parameters(void **state)
{
    (void)state;
    const char *params[] = {"alice", NULL};
    assert_true(server_query(&sv, "SELECT $1, $2", 2, params, &ops, NULL));
    assert_true(server_query_pending(&sv));
    assert_false(sv.ready);
    uint8_t buf[256];
    size_t n = sent(buf, sizeof(buf));
    /* Parse "" "SELECT $1, $2" 0 types; Bind "" "" 0 formats, 2 values
     * ('alice', NULL), 0 result formats; Execute "" 0; Sync. */
    static const uint8_t want[] = {
        'P', 0,   0,   0, 21, 0,   'S', 'E', 'L', 'E', 'C',  'T',  ' ',  '$',  '1', ',',
        ' ', '$', '2', 0, 0,  0,   'B', 0,   0,   0,   25,   0,    0,    0,    0,   0,
        2,   0,   0,   0, 5,  'a', 'l', 'i', 'c', 'e', 0xff, 0xff, 0xff, 0xff, 0,   0,
        'E', 0,   0,   0, 9,  0,   0,   0,   0,   0,   'S',  0,    0,    0,    4};
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    answer('1', NULL, 0);
    answer('2', NULL, 0);
    answer('T', "\0\0", 2);
    static const uint8_t row[] = {0,   2,   0,   0,    0,    5,    'a', 'l',
                                  'i', 'c', 'e', 0xff, 0xff, 0xff, 0xff};
    answer('D', row, sizeof(row));
    answer('C', "SELECT 1", 9);
    answer('Z', "I", 1);
    run();
    assert_int_equal(heard.read, SERVER_READ_OK);
    assert_int_equal(heard.rows, 1);
    assert_int_equal(heard.ncols, 2);
    assert_string_equal(heard.row0, "alice");
    assert_true(heard.row1_null);
    assert_int_equal(heard.done, 1);
    assert_int_equal(heard.status[0], SERVER_QUERY_OK);
    assert_false(server_query_pending(&sv));
    assert_true(sv.ready);
    assert_int_equal(sv.xact_status, 'I');
}

static void test_simple_error_and_pipeline(void **state)
{
    (void)state;
    assert_true(server_query(&sv, "SELECT 1/0", 0, NULL, &ops, NULL));
    assert_true(server_query(&sv, "SET a.b = 1; SET a.c = 2", 0, NULL, &ops, NULL));
    uint8_t buf[128];
    size_t n = sent(buf, sizeof(buf));
    assert_int_equal(n, 5 + 11 + 5 + 25);
    assert_int_equal(buf[0], 'Q');
    assert_string_equal((char *)buf + 5, "SELECT 1/0");
    assert_int_equal(buf[16], 'Q');
    static const char err[] = "SERROR\0C22012\0Mdivision by zero\0";
    answer('E', err, sizeof(err));
    answer('Z', "I", 1);
    /* The second query's answer: a parameter the server reports, two
     * completions, its end in a transaction. */
    answer('S', "TimeZone\0UTC\0", 13);
    answer('C', "SET", 4);
    answer('C', "SET", 4);
    answer('Z', "T", 1);
    run();
    assert_int_equal(heard.errors, 1);
    assert_string_equal(heard.sqlstate, "22012");
    assert_string_equal(heard.text, "ERROR: division by zero");
    assert_int_equal(heard.done, 2);
    assert_int_equal(heard.status[0], SERVER_QUERY_FAILED);
    assert_int_equal(heard.status[1], SERVER_QUERY_OK);
    assert_string_equal(sv.params.v[TP_TIMEZONE], "UTC");
    assert_int_equal(sv.xact_status, 'T');
    assert_false(sv.ready); /* not idle: the caller decides what that means */
}

static void test_gone_and_notifications(void **state)
{
    (void)state;
    assert_true(server_query(&sv, "LISTEN x", 0, NULL, &ops, NULL));
    sv.holder = &holder;
    static const uint8_t note[] = {0, 0, 0, 7, 'x', 0, 'p', 0};
    answer('A', note, sizeof(note));
    run();
    assert_int_equal(heard.notified, 1);
    assert_int_equal(heard.done, 0);
    /* The connection goes before the answer: the asker hears of it. */
    server_query_abort(&sv);
    assert_int_equal(heard.done, 1);
    assert_int_equal(heard.status[0], SERVER_QUERY_GONE);
    assert_false(server_query_pending(&sv));
    /* Notifications still reach the holder with nothing pending. */
    answer('A', note, sizeof(note));
    run();
    assert_int_equal(heard.notified, 2);
    sv.holder = NULL;
}

static void test_bad_answers(void **state)
{
    (void)state;
    /* A COPY in an answer to sluice's own query is not taken. */
    assert_true(server_query(&sv, "COPY t TO STDOUT", 0, NULL, &ops, NULL));
    answer('H', "\0\0\0", 3);
    run();
    assert_int_equal(heard.read, SERVER_READ_BAD);
    assert_non_null(strstr(heard.why, "unexpected message"));
    server_query_abort(&sv);
    /* A length no message can have. */
    memset(&heard, 0, sizeof(heard));
    assert_true(server_query(&sv, "SELECT 1", 0, NULL, &ops, NULL));
    uint8_t bad[5] = {'D', 0, 0, 0, 2};
    assert_int_equal(write(peer, bad, 5), 5);
    run();
    assert_int_equal(heard.read, SERVER_READ_BAD);
    assert_non_null(strstr(heard.why, "malformed"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_extended_with_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simple_error_and_pipeline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone_and_notifications, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_answers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
