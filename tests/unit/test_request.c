/* test_request.c - the request queue: pipelined extended-protocol batches,
 * an error in the middle of a batch (the server skips to Sync), COPY, a
 * client that leaves with requests in flight, session mode, answers sluice
 * makes itself and answers it swallows. A test observer owns entries and
 * records what it hears. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "request.h"
#include "worker.h"

static struct worker w;
static struct client c;
static struct server sv;
static int peer = -1; /* the client's end of the socket pair */

/* What the test observer heard. */
static struct {
    int ends, dropped, released, server_msgs;
    char last_status;
    uint8_t last_kind;
} heard;
static int owner;

static void obs_end(struct client *cl, struct server *s, const struct request *r, char status)
{
    heard.ends++;
    heard.last_status = status;
    heard.last_kind = r->kind;
}

static unsigned obs_server_msg(struct client *cl, struct server *s, struct request_entry *e,
                               const struct stream_msg *m, bool done)
{
    heard.server_msgs++;
    return REQUEST_PASS;
}

static void obs_dropped(struct client *cl, struct request_entry *e)
{
    heard.dropped++;
}

static void obs_release(struct request_entry *e)
{
    heard.released++;
}

static const struct request_observer test_observer = {
    .name = "test",
    .on_server_msg = obs_server_msg,
    .on_dropped = obs_dropped,
    .on_release = obs_release,
    .on_request_end = obs_end,
};

static int setup(void **state)
{
    (void)state;
    char err[256];
    struct config *cfg = config_load_string("test", "[databases]\n", err, sizeof(err));
    assert_non_null(cfg);
    worker_init(&w, 0, ev_default_loop(0), cfg);
    config_unref(cfg);
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    memset(&c, 0, sizeof(c));
    memset(&sv, 0, sizeof(sv));
    stream_init(&c.s, &w, sp[0], NULL);
    peer = sp[1];
    c.server = &sv;
    sv.xact_status = 'I';
    memset(&heard, 0, sizeof(heard));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    request_client_free(&c);
    assert_null(c.rq);
    stream_close(&c.s);
    close(peer);
    request_thread_done();
    worker_destroy(&w);
    return 0;
}

/* A client message: put in the read buffer, seen by the queue, consumed. */
static void client_sends(uint8_t type, const void *body, uint32_t n)
{
    uint8_t hdr[5] = {type};
    proto_put32(hdr + 1, 4 + n);
    iobuf_append(&w.bufs, &c.s.rbuf, hdr, 5);
    if (n)
        iobuf_append(&w.bufs, &c.s.rbuf, body, n);
    uint32_t fwd = c.s.rbuf->start;
    int64_t r = request_client_msg(&c, type, 5 + n, &fwd);
    assert_int_equal(r, 5 + n);
    stream_consume_msg(&c.s, 5 + n);
}

/* A whole server message of type t (body: n bytes of b); the queue's
 * verdict. */
static unsigned server_sends(uint8_t t, const char *b, uint32_t n)
{
    static uint8_t msg[64];
    msg[0] = t;
    proto_put32(msg + 1, 4 + n);
    memcpy(msg + 5, b, n);
    struct stream_msg m = {.type = t, .len = 5 + n, .avail = 5 + n, .data = msg};
    return request_server_msg(&c, &sv, &m);
}

static void ready(char status)
{
    assert_int_equal(server_sends('Z', &status, 1), REQUEST_PASS);
}

static void test_pipelined_batches(void **state)
{
    (void)state;
    c.track = true;
    client_sends('P', "\0SELECT 1\0\0\0", 12);
    client_sends('B', "\0\0\0\0\0\0\0\0", 8);
    client_sends('D', "P\0", 2);
    client_sends('E', "\0\0\0\0\0", 5);
    client_sends('S', NULL, 0);
    client_sends('P', "\0SELECT 2\0\0\0", 12);
    client_sends('B', "\0\0\0\0\0\0\0\0", 8);
    client_sends('E', "\0\0\0\0\0", 5);
    client_sends('S', NULL, 0);
    assert_true(request_busy(&c));
    const char *first = "12TDC";
    for (const char *t = first; *t; t++)
        assert_int_equal(server_sends((uint8_t)*t, "x", 1), REQUEST_PASS);
    assert_int_equal(heard.ends, 0);
    ready('I');
    assert_int_equal(heard.ends, 1);
    assert_int_equal(heard.last_kind, REQ_EXTENDED);
    assert_true(request_busy(&c)); /* the second batch is in flight */
    const char *second = "12DDC";
    for (const char *t = second; *t; t++)
        assert_int_equal(server_sends((uint8_t)*t, "x", 1), REQUEST_PASS);
    ready('I');
    assert_int_equal(heard.ends, 2);
    assert_false(request_busy(&c));
    assert_int_equal(heard.server_msgs, 0); /* it owns nothing here */
}

static void test_error_mid_batch(void **state)
{
    (void)state;
    c.track = true;
    client_sends('P', "\0SELECT 1/0\0\0\0", 14);
    client_sends('B', "\0\0\0\0\0\0\0\0", 8);
    /* An entry of the observer's (a message sluice added, say). */
    struct request_entry e = {
        .answer = RA_ONE, .flags = RE_OWNED | RE_SWALLOW_OK, .owner = (uint8_t)owner};
    request_push(&c, &e);
    client_sends('E', "\0\0\0\0\0", 5);
    client_sends('S', NULL, 0);
    assert_int_equal(server_sends('1', "", 0), REQUEST_PASS);
    /* The Bind fails: the server skips the rest up to the Sync, so the
     * observer's entry is dropped (and undone), then released. */
    assert_int_equal(server_sends('E', "SERROR\0", 7), REQUEST_PASS);
    assert_int_equal(heard.dropped, 1);
    assert_int_equal(heard.released, 1);
    assert_true(request_busy(&c));
    ready('I');
    assert_int_equal(heard.ends, 1);
    assert_false(request_busy(&c));
    /* The next batch is matched from a clean state. */
    client_sends('S', NULL, 0);
    ready('I');
    assert_int_equal(heard.ends, 2);
}

static void test_copy(void **state)
{
    (void)state;
    c.track = true;
    client_sends('Q', "COPY t FROM STDIN\0", 18);
    assert_int_equal(server_sends('G', "\0\0\0", 3), REQUEST_PASS);
    client_sends('d', "1\tx\n", 4);
    client_sends('d', "2\ty\n", 4);
    client_sends('c', NULL, 0);
    assert_int_equal(server_sends('C', "COPY 2\0", 7), REQUEST_PASS);
    assert_int_equal(heard.ends, 0);
    ready('I');
    assert_int_equal(heard.ends, 1);
    assert_int_equal(heard.last_kind, REQ_COPY);
}

static void test_client_leaves(void **state)
{
    (void)state;
    c.track = true;
    client_sends('P', "\0SELECT 1\0\0\0", 12);
    struct request_entry e = {.answer = RA_ONE, .flags = RE_OWNED, .owner = (uint8_t)owner};
    request_push(&c, &e);
    request_push(&c, &e);
    client_sends('S', NULL, 0);
    /* The client goes away with all of it in flight: the observer's entries
     * are undone and released, the queue goes back (teardown checks). */
    request_client_free(&c);
    assert_int_equal(heard.dropped, 2);
    assert_int_equal(heard.released, 2);
    assert_null(c.rq);
    assert_false(request_busy(&c));
}

static void test_session_mode(void **state)
{
    (void)state;
    c.track = false; /* only the ends of requests are kept */
    client_sends('P', "\0SELECT 1\0\0\0", 12);
    client_sends('B', "\0\0\0\0\0\0\0\0", 8);
    client_sends('E', "\0\0\0\0\0", 5);
    client_sends('S', NULL, 0);
    client_sends('Q', "SELECT 2\0", 9);
    assert_int_equal(c.rq->e_n, 2);
    const char *t = "12DC";
    for (; *t; t++)
        assert_int_equal(server_sends((uint8_t)*t, "x", 1), REQUEST_PASS);
    ready('T');
    assert_int_equal(heard.ends, 1);
    assert_int_equal(heard.last_status, 'T');
    assert_int_equal(server_sends('T', "x", 1), REQUEST_PASS);
    ready('I');
    assert_int_equal(heard.ends, 2);
    assert_int_equal(heard.last_kind, REQ_QUERY);
}

/* What a departed client's server needs before it serves another. */
static void test_rescue_plan(void **state)
{
    (void)state;
    c.track = true;
    /* Nothing in flight, between transactions: nothing to undo (a server
     * that is not clean then is closed). In a transaction: ROLLBACK. */
    assert_int_equal(request_rescue_plan(&c), SR_NONE);
    sv.xact_status = 'T';
    assert_int_equal(request_rescue_plan(&c), SR_ROLLBACK);
    sv.xact_status = 'I';
    /* A batch answered so far, never synced: ROLLBACK (a Sync would commit). */
    client_sends('P', "\0SELECT 1\0\0\0", 12);
    client_sends('B', "\0\0\0\0\0\0\0\0", 8);
    assert_int_equal(request_rescue_plan(&c), SR_NONE); /* answers owed */
    assert_int_equal(server_sends('1', "", 0), REQUEST_PASS);
    assert_int_equal(server_sends('2', "", 0), REQUEST_PASS);
    assert_int_equal(request_rescue_plan(&c), SR_ROLLBACK);
    /* It fails: the server skips what follows up to a Sync, and what sluice
     * added there is undone. A Sync, then. */
    client_sends('E', "\0\0\0\0\0", 5);
    struct request_entry e = {.answer = RA_ONE, .flags = RE_OWNED, .owner = (uint8_t)owner};
    request_push(&c, &e);
    assert_int_equal(server_sends('E', "SERROR\0", 7), REQUEST_PASS);
    client_sends('D', "S\0", 2);
    assert_int_equal(request_rescue_plan(&c), SR_SYNC);
    assert_int_equal(heard.dropped, 1);
    assert_int_equal(c.rq->e_n, 0);
}

/* An error no message was known to cause (a malformed Flush in a
 * transaction): the server skips to a Sync, so the plan syncs first. */
static void test_rescue_plan_after_a_stray_error(void **state)
{
    (void)state;
    c.track = true;
    client_sends('Q', "BEGIN\0", 6);
    assert_int_equal(server_sends('C', "BEGIN\0", 6), REQUEST_PASS);
    ready('T');
    assert_int_equal(request_rescue_plan(&c), SR_ROLLBACK);
    client_sends('H', "junk", 4);
    assert_int_equal(request_rescue_plan(&c), SR_ROLLBACK);
    assert_int_equal(server_sends('E', "SERROR\0", 7), REQUEST_PASS);
    assert_int_equal(request_rescue_plan(&c), SR_SYNC);
}

static void test_rescue_plan_refused(void **state)
{
    (void)state;
    c.track = true;
    /* After an error, with the client's own Sync sent: its answer is owed. */
    client_sends('P', "\0SELEC\0\0\0", 10);
    client_sends('S', NULL, 0);
    assert_int_equal(server_sends('E', "SERROR\0", 7), REQUEST_PASS);
    assert_int_equal(request_rescue_plan(&c), SR_NONE);
    ready('I');
    /* Session mode: what a request in flight left is not known. */
    c.track = false;
    client_sends('P', "\0SELECT 1\0\0\0", 12);
    assert_int_equal(server_sends('1', "", 0), REQUEST_PASS);
    assert_int_equal(request_rescue_plan(&c), SR_NONE);
    /* Part of a message of the client's forwarded. */
    c.track = true;
    c.s.skip = 3;
    assert_int_equal(request_rescue_plan(&c), SR_NONE);
    c.s.skip = 0;
}

static void test_answers_made_and_swallowed(void **state)
{
    (void)state;
    c.track = true;
    /* A Parse sluice answers itself, behind a Bind the server answers. */
    client_sends('B', "\0\0\0\0\0\0\0\0", 8);
    struct request_entry synth = {.answer = RA_SYNTH, .synth = '1'};
    request_push(&c, &synth);
    /* sluice's own Close, whose answer the client must not see. */
    struct request_entry own = {
        .answer = RA_ONE, .flags = RE_OWNED | RE_SWALLOW, .owner = (uint8_t)owner};
    request_push(&c, &own);
    client_sends('S', NULL, 0);
    /* BindComplete passes; then the Parse's answer is made (emit after). */
    assert_int_equal(server_sends('2', "", 0), REQUEST_PASS | REQUEST_EMIT);
    const uint8_t *out;
    size_t n;
    request_out_take(&c, &out, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "1\0\0\0\4", 5);
    assert_int_equal(server_sends('3', "", 0), REQUEST_SWALLOW);
    assert_int_equal(heard.server_msgs, 1);
    ready('I');
    assert_int_equal(heard.ends, 1);
    /* An answer sluice makes with nothing ahead goes to the client at once. */
    request_push(&c, &synth);
    uint8_t got[8];
    assert_int_equal(read(peer, got, sizeof(got)), 5);
    assert_memory_equal(got, "1\0\0\0\4", 5);
}

int main(void)
{
    owner = request_observe(&test_observer);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pipelined_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_mid_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_leaves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rescue_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rescue_plan_after_a_stray_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rescue_plan_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answers_made_and_swallowed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
