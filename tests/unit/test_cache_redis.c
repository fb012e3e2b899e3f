/* test_cache_redis.c - the result cache's Redis tier against a real
 * redis-server that the test starts itself on a private port (skipped,
 * with a message, when redis-server is not installed): URL parsing; get
 * miss, put, hit; generations (an invalidation makes entries stale and
 * refuses fills begun before it); two instances sharing Redis (pub/sub);
 * binary values; TTL expiry; Redis killed (pending and new gets answered
 * in time, the breaker opens once, invalidations blocked then delivered
 * after a restart); Redis stopped (SIGSTOP: timeouts, no loop stall, late
 * replies ignored); answers never synchronous; freeing a connection with
 * gets pending; the per-worker glue. Run under ASan+UBSan (LSan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>
#include <hiredis/hiredis.h>

#include "cache_redis.h"
#include "cache_redis_worker.h"
#include "log.h"
#include "worker.h"

static struct ev_loop *L;
static ev_timer tick; /* keeps ev_run(EVRUN_ONCE) from sleeping long */
static int port;
static pid_t redis_pid = -1;
static bool have_redis;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- the redis-server ------------------------------------------------------ */

static bool port_free(int p)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static bool port_answers(int p)
{
    redisContext *c = redisConnect("127.0.0.1", p);
    bool ok = c && !c->err;
    if (ok) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
    }
    redisFree(c);
    return ok;
}

static void redis_start(void)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    redis_pid = pid;
    int64_t end = now_ms() + 5000;
    while (!port_answers(port)) {
        assert_true(now_ms() < end);
        usleep(10000);
    }
}

/* A second server with one database (so SELECT 2 is refused), on p. */
static pid_t redis_start_one_db(int p)
{
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", p);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--databases", "1", (char *)NULL);
        _exit(127);
    }
    int64_t end = now_ms() + 5000;
    while (!port_answers(p)) {
        assert_true(now_ms() < end);
        usleep(10000);
    }
    return pid;
}

static void redis_kill(void)
{
    if (redis_pid <= 0)
        return;
    kill(redis_pid, SIGCONT);
    kill(redis_pid, SIGKILL);
    waitpid(redis_pid, NULL, 0);
    redis_pid = -1;
}

/* A command on a connection of the test's own (blocking): the reply as a
 * string ("(nil)" for nil, the number for an integer). */
static void redis_cmd(char *out, size_t outlen, const char *fmt, ...)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    assert_true(c && !c->err);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_NIL)
        snprintf(out, outlen, "(nil)");
    else if (r->type == REDIS_REPLY_INTEGER)
        snprintf(out, outlen, "%lld", r->integer);
    else
        snprintf(out, outlen, "%.*s", (int)r->len, r->str ? r->str : "");
    freeReplyObject(r);
    redisFree(c);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    L = ev_default_loop(0);
    ev_timer_init(&tick, tick_cb, 0.002, 0.002);
    ev_timer_start(L, &tick);
    have_redis = system("command -v redis-server >/dev/null 2>&1") == 0;
    if (!have_redis) {
        fprintf(stderr, "test_cache_redis: redis-server not found: Redis tests skipped\n");
        return 0;
    }
    for (port = 26380; port < 26390 && !port_free(port); port++)
        ;
    if (port == 26390) {
        fprintf(stderr, "test_cache_redis: no free port in 26380..26389: Redis tests skipped\n");
        have_redis = false;
        return 0;
    }
    redis_start();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    redis_kill();
    ev_timer_stop(L, &tick);
    return 0;
}

/* Each Redis test begins with an empty Redis that runs. */
static void need_redis(void)
{
    if (!have_redis)
        skip();
    if (redis_pid <= 0)
        redis_start();
    char out[64];
    redis_cmd(out, sizeof(out), "FLUSHALL");
}

/* --- driving the loop --------------------------------------------------------- */

static bool run_until(bool (*cond)(void *), void *arg, int max_ms)
{
    int64_t end = now_ms() + max_ms;
    while (!cond(arg)) {
        if (now_ms() > end)
            return false;
        ev_run(L, EVRUN_ONCE);
    }
    return true;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void run_for(int ms)
{
    run_until(never, NULL, ms);
}

/* --- instances ------------------------------------------------------------------- */

#define MAX_STATES 64

struct inst {
    struct cache_redis *r;
    struct cache_redis_conn *c; /* the home connection */
    uint64_t heard[64];         /* on_invalidate */
    int n_heard;
    int resets;
    enum cache_redis_state states[MAX_STATES]; /* on_state, in order */
    int n_states;
};

static void on_invalidate(uint64_t table, void *arg)
{
    struct inst *in = arg;
    if (in->n_heard < 64)
        in->heard[in->n_heard++] = table;
}

static void on_reset(void *arg)
{
    ((struct inst *)arg)->resets++;
}

static void on_state(enum cache_redis_state s, void *arg)
{
    struct inst *in = arg;
    if (in->n_states < MAX_STATES)
        in->states[in->n_states++] = s;
}

static bool sub_up(void *arg)
{
    return cache_redis_pubsub_up(((struct inst *)arg)->r);
}

static void inst_open(struct inst *in, int p, int timeout_ms)
{
    memset(in, 0, sizeof(*in));
    struct cache_redis_addr a;
    char url[64], err[256];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/2", p);
    assert_int_equal(cache_redis_url_parse(url, &a, err, sizeof(err)), 0);
    struct cache_redis_opts o = {
        .prefix = "t:",
        .op_timeout_ms = timeout_ms,
        .breaker_failures = 3,
        .breaker_open_ms = 200,
        .breaker_open_max_ms = 800,
        .retry_ms = 50,
        .on_invalidate = on_invalidate,
        .on_reset = on_reset,
        .on_state = on_state,
        .arg = in,
    };
    in->r = cache_redis_new(&a, &o, L, err, sizeof(err));
    assert_non_null(in->r);
    in->c = cache_redis_home(in->r);
}

static void inst_close(struct inst *in)
{
    cache_redis_free(in->r);
    in->r = NULL;
}

/* --- gets and puts ------------------------------------------------------------------ */

struct got {
    int calls;
    enum cache_redis_status st;
    uint8_t *value;
    size_t len;
    uint64_t gens[CACHE_REDIS_MAX_TABLES];
    int n;
    int64_t at_ms;
};

static void got_cb(const struct cache_redis_result *res, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->st = res->status;
    g->at_ms = now_ms();
    free(g->value);
    g->value = NULL;
    g->len = 0;
    g->n = 0;
    if (res->status == CACHE_REDIS_HIT) {
        g->value = malloc(res->value_len + 1);
        memcpy(g->value, res->value, res->value_len);
        g->len = res->value_len;
    } else if (res->status == CACHE_REDIS_MISS) {
        g->n = res->n_tables;
        memcpy(g->gens, res->gens, sizeof(uint64_t) * (size_t)res->n_tables);
    }
}

static bool got_done(void *arg)
{
    return ((struct got *)arg)->calls > 0;
}

static void got_clear(struct got *g)
{
    free(g->value);
    memset(g, 0, sizeof(*g));
}

/* A get from outside the loop, waited for. */
static void get_wait(struct cache_redis_conn *c, const char *key, const uint64_t *tables, int n,
                     struct got *g)
{
    got_clear(g);
    ev_now_update(L);
    cache_redis_get(c, key, strlen(key), tables, n, got_cb, g);
    assert_int_equal(g->calls, 0); /* never from inside the call */
    assert_true(run_until(got_done, g, 3000));
    assert_int_equal(g->calls, 1);
}

struct stat_wait {
    struct cache_redis *r;
    size_t offset; /* of a counter in struct cache_redis_stats */
    uint64_t want;
};

static bool stat_reached(void *arg)
{
    struct stat_wait *w = arg;
    struct cache_redis_stats st;
    cache_redis_stats(w->r, &st);
    return *(uint64_t *)((char *)&st + w->offset) >= w->want;
}

#define WAIT_STAT(r_, field, n_)                                                                   \
    do {                                                                                           \
        struct stat_wait sw_ = {(r_), offsetof(struct cache_redis_stats, field), (n_)};            \
        assert_true(run_until(stat_reached, &sw_, 3000));                                          \
    } while (0)

static void put(struct inst *in, const char *key, const char *value, uint32_t ttl_ms,
                const uint64_t *tables, const uint64_t *gens, int n)
{
    ev_now_update(L);
    assert_true(
        cache_redis_put(in->c, key, strlen(key), value, strlen(value), ttl_ms, tables, gens, n));
}

static struct cache_redis_stats stats_of(struct inst *in)
{
    struct cache_redis_stats st;
    cache_redis_stats(in->r, &st);
    return st;
}

struct blocked_wait {
    struct cache_redis *r;
    uint64_t table;
};

static bool unblocked(void *arg)
{
    struct blocked_wait *b = arg;
    return !cache_redis_table_blocked(b->r, b->table);
}

/* --- the tests -------------------------------------------------------------------------- */

static void test_url_parse(void **state)
{
    (void)state;
    struct cache_redis_addr a;
    char err[256];
    assert_int_equal(cache_redis_url_parse("redis://127.0.0.1:6379", &a, err, sizeof(err)), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_int_equal(
        cache_redis_url_parse("redis://cache-1.internal_x:6380/15", &a, err, sizeof(err)), 0);
    assert_string_equal(a.host, "cache-1.internal_x");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 15);
    assert_int_equal(cache_redis_url_parse("redis://[::1]:1/0", &a, err, sizeof(err)), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 1);
    assert_int_equal(cache_redis_url_parse("redis://[2001:db8::7]:65535/3", &a, err, sizeof(err)),
                     0);
    assert_string_equal(a.host, "2001:db8::7");
    assert_int_equal(a.db, 3);

    static const struct {
        const char *url;
        const char *err;
    } bad[] = {
        {"", "redis://"},
        {"http://h:1", "redis://"},
        {"REDIS://h:1", "redis://"},
        {"redis://", "no host"},
        {"redis://:6379", "no host"},
        {"redis://h", "port is required"},
        {"redis://h:", "port must be"},
        {"redis://h:0", "port must be"},
        {"redis://h:65536", "port must be"},
        {"redis://h:123456", "port must be"},
        {"redis://h:-1", "port must be"},
        {"redis://h:01", "port must be"},
        {"redis://h:1/", "database must be"},
        {"redis://h:1/16", "database must be"},
        {"redis://h:1/01", "database must be"},
        {"redis://h:1/1/2", "unexpected"},
        {"redis://h:1?db=2", "unexpected"},
        {"redis://h:1 ", "unexpected"},
        {"redis://u:p@h:1", "credentials"},
        {"redis://[::1:6379", "missing ']'"},
        {"redis://[]:1", "IPv6"},
        {"redis://[zz::1]:1", "IPv6"},
        {"redis://999.1.1.1:1", "IPv4"},
        {"redis://1.2.3:1", "IPv4"},
        {"redis://h h:1", "port is required"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (cache_redis_url_parse(bad[i].url, &a, err, sizeof(err)) != -1)
            fail_msg("accepted \"%s\"", bad[i].url);
        if (!strstr(err, bad[i].err))
            fail_msg("\"%s\": error \"%s\" does not say \"%s\"", bad[i].url, err, bad[i].err);
    }
    char long_host[400];
    snprintf(long_host, sizeof(long_host), "redis://%0300d:1", 0);
    assert_int_equal(cache_redis_url_parse(long_host, &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));
    assert_int_equal(cache_redis_url_parse(NULL, &a, err, sizeof(err)), -1);
}

/* A miss gives the generations (0: never invalidated); a put with them is
 * stored; the next get hits with the same bytes. The MGET and the script
 * run on the configured DB (2). */
static void test_miss_put_hit(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 500);
    uint64_t tables[] = {11, 22};
    struct got g = {0};
    get_wait(in.c, "SELECT * FROM t1, t2", tables, 2, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.gens[0], 0);
    assert_int_equal(g.gens[1], 0);
    put(&in, "SELECT * FROM t1, t2", "answer-1", 60000, tables, g.gens, 2);
    WAIT_STAT(in.r, puts_stored, 1);
    uint64_t reordered[] = {22, 11}; /* any order */
    get_wait(in.c, "SELECT * FROM t1, t2", reordered, 2, &g);
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    assert_int_equal(g.len, 8);
    assert_memory_equal(g.value, "answer-1", 8);
    /* Other tables: a miss, not a hit for the wrong entry. */
    uint64_t other[] = {11};
    get_wait(in.c, "SELECT * FROM t1, t2", other, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    /* No tables at all works too. */
    get_wait(in.c, "SELECT 1", NULL, 0, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    put(&in, "SELECT 1", "one", 60000, NULL, NULL, 0);
    WAIT_STAT(in.r, puts_stored, 2);
    get_wait(in.c, "SELECT 1", NULL, 0, &g);
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    char out[64];
    redis_cmd(out, sizeof(out), "DBSIZE"); /* db 0 stays empty */
    assert_string_equal(out, "0");
    struct cache_redis_stats st = stats_of(&in);
    assert_int_equal(st.gets, 5);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 3);
    assert_int_equal(st.puts, 2);
    assert_int_equal(st.state, CACHE_REDIS_UP);
    assert_int_equal(st.errors, 0);
    got_clear(&g);
    inst_close(&in);
}

/* An invalidation blocks its table until Redis took the INCR; then the
 * entry is stale (a miss with the new generation), a fill begun before it
 * is refused and one begun after it is stored. */
static void test_generations(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 500);
    uint64_t tables[] = {7, 8};
    struct got g = {0};
    get_wait(in.c, "q", tables, 2, &g);
    uint64_t old[2] = {g.gens[0], g.gens[1]};
    put(&in, "q", "v0", 60000, tables, old, 2);
    WAIT_STAT(in.r, puts_stored, 1);

    ev_now_update(L);
    cache_redis_invalidate(in.r, 7);
    assert_true(cache_redis_table_blocked(in.r, 7));
    assert_false(cache_redis_table_blocked(in.r, 8));
    /* Blocked: no get, no put for it. */
    get_wait(in.c, "q", tables, 2, &g);
    assert_int_equal(g.st, CACHE_REDIS_BLOCKED);
    assert_false(cache_redis_put(in.c, "q", 1, "x", 1, 1000, tables, old, 2));
    struct blocked_wait b = {in.r, 7};
    assert_true(run_until(unblocked, &b, 3000));
    struct cache_redis_stats st = stats_of(&in);
    assert_int_equal(st.invalidations, 1);
    assert_int_equal(st.invalidations_sent, 1);
    assert_int_equal(st.invalidations_pending, 0);

    get_wait(in.c, "q", tables, 2, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    assert_int_equal(g.gens[0], old[0] + 1);
    assert_int_equal(g.gens[1], old[1]);
    assert_int_equal(stats_of(&in).stale, 1);
    /* The fill that began before the invalidation is refused. */
    put(&in, "q", "v-old", 60000, tables, old, 2);
    WAIT_STAT(in.r, puts_stale, 1);
    get_wait(in.c, "q", tables, 2, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    /* One begun after it is stored. */
    uint64_t now_gens[2] = {g.gens[0], g.gens[1]};
    put(&in, "q", "v1", 60000, tables, now_gens, 2);
    WAIT_STAT(in.r, puts_stored, 2);
    get_wait(in.c, "q", tables, 2, &g);
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    assert_memory_equal(g.value, "v1", 2);

    /* Several invalidations of one table while one is in flight: the table
     * stays blocked until an INCR sent after the last one is confirmed. */
    for (int i = 0; i < 5; i++)
        cache_redis_invalidate(in.r, 8);
    assert_true(run_until(unblocked, &(struct blocked_wait){in.r, 8}, 3000));
    get_wait(in.c, "q", tables, 2, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    assert_true(g.gens[1] >= 1);
    got_clear(&g);
    inst_close(&in);
}

/* A copy kept in the process: checked against the counters alone. */
static void check_wait(struct cache_redis_conn *c, const uint8_t *copy, size_t len, struct got *g)
{
    got_clear(g);
    ev_now_update(L);
    cache_redis_check(c, copy, len, got_cb, g);
    assert_int_equal(g->calls, 0); /* never from inside the call */
    assert_true(run_until(got_done, g, 3000));
    assert_int_equal(g->calls, 1);
}

/* A copy of an entry (header and answer) is served while its tables'
 * counters have not moved; an invalidation makes it a miss with the new
 * generations; a copy that is not an entry is not asked about. */
static void test_check_copy(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 500);
    uint64_t tables[] = {31, 32};
    struct got g = {0};
    get_wait(in.c, "copy", tables, 2, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    uint8_t copy[8 + 16 * 2 + 6];
    size_t h = cache_redis_entry_header(copy, tables, g.gens, 2);
    assert_int_equal(h, 8 + 16 * 2);
    memcpy(copy + h, "answer", 6);
    assert_int_equal(cache_redis_entry_answer(copy, sizeof(copy)), h);
    assert_true(cache_redis_entry_of(copy, sizeof(copy), tables, 2));
    uint64_t reordered[] = {32, 31};
    assert_false(cache_redis_entry_of(copy, sizeof(copy), reordered, 2));
    check_wait(in.c, copy, sizeof(copy), &g);
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    assert_int_equal(g.len, 6);
    assert_memory_equal(g.value, "answer", 6);
    struct cache_redis_stats st = stats_of(&in);
    assert_int_equal(st.checks, 1);
    assert_int_equal(st.checks_current, 1);
    assert_int_equal(st.hits, 0); /* no entry was read from Redis */

    cache_redis_invalidate(in.r, 32);
    assert_true(run_until(unblocked, &(struct blocked_wait){in.r, 32}, 3000));
    check_wait(in.c, copy, sizeof(copy), &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.gens[1], 1);
    assert_int_equal(stats_of(&in).checks_current, 1);

    check_wait(in.c, (const uint8_t *)"not an entry", 12, &g);
    assert_int_equal(g.st, CACHE_REDIS_UNAVAILABLE);
    got_clear(&g);
    inst_close(&in);
}

struct heard_wait {
    struct inst *in;
    uint64_t table;
};

static bool heard(void *arg)
{
    struct heard_wait *h = arg;
    for (int i = 0; i < h->in->n_heard; i++)
        if (h->in->heard[i] == h->table)
            return true;
    return false;
}

/* Two instances share one Redis: an entry stored by one is a hit for the
 * other; an invalidation by one reaches the other's on_invalidate (and its
 * own) and makes the shared entry stale for both. */
static void test_two_instances(void **state)
{
    (void)state;
    need_redis();
    struct inst a, b;
    inst_open(&a, port, 500);
    inst_open(&b, port, 500);
    assert_true(run_until(sub_up, &a, 3000));
    assert_true(run_until(sub_up, &b, 3000));
    assert_true(a.resets >= 1); /* subscribing resets the in-process copies */
    uint64_t t[] = {0xfedcba9876543210ull};
    struct got g = {0};
    get_wait(a.c, "shared", t, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    put(&a, "shared", "from-a", 60000, t, g.gens, 1);
    WAIT_STAT(a.r, puts_stored, 1);
    get_wait(b.c, "shared", t, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    assert_memory_equal(g.value, "from-a", 6);

    cache_redis_invalidate(a.r, t[0]);
    assert_true(run_until(heard, &(struct heard_wait){&b, t[0]}, 3000));
    assert_true(run_until(heard, &(struct heard_wait){&a, t[0]}, 3000));
    assert_int_equal(stats_of(&b).pubsub_messages, 1);
    assert_false(cache_redis_table_blocked(b.r, t[0])); /* only the invalidator blocks */
    get_wait(b.c, "shared", t, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    assert_int_equal(g.gens[0], 1);
    got_clear(&g);
    inst_close(&a);
    inst_close(&b);
}

/* Keys and values are bytes: NULs and every byte value survive. */
static void test_binary_values(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 1000);
    size_t len = 100000;
    uint8_t *v = malloc(len);
    for (size_t i = 0; i < len; i++)
        v[i] = (uint8_t)(i * 7);
    v[0] = 0;
    v[len - 1] = 0;
    const char key[] = "k\0with\0nuls";
    uint64_t t[] = {1};
    struct got g = {0};
    ev_now_update(L);
    cache_redis_get(in.c, key, sizeof(key), t, 1, got_cb, &g);
    assert_true(run_until(got_done, &g, 3000));
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    assert_true(cache_redis_put(in.c, key, sizeof(key), v, len, 60000, t, g.gens, 1));
    WAIT_STAT(in.r, puts_stored, 1);
    got_clear(&g);
    cache_redis_get(in.c, key, sizeof(key), t, 1, got_cb, &g);
    assert_true(run_until(got_done, &g, 3000));
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    assert_int_equal(g.len, len);
    assert_memory_equal(g.value, v, len);
    /* The same bytes up to the first NUL are another key. */
    get_wait(in.c, "k", t, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    /* An empty value is a value. */
    assert_true(cache_redis_put(in.c, "", 0, NULL, 0, 60000, t, g.gens, 1));
    WAIT_STAT(in.r, puts_stored, 2);
    got_clear(&g);
    cache_redis_get(in.c, "", 0, t, 1, got_cb, &g);
    assert_true(run_until(got_done, &g, 3000));
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    assert_int_equal(g.len, 0);
    free(v);
    got_clear(&g);
    inst_close(&in);
}

/* An entry lives for its TTL (Redis's PX). */
static void test_ttl_expiry(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 500);
    uint64_t t[] = {3};
    struct got g = {0};
    get_wait(in.c, "short", t, 1, &g);
    put(&in, "short", "brief", 150, t, g.gens, 1);
    WAIT_STAT(in.r, puts_stored, 1);
    get_wait(in.c, "short", t, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    run_for(300);
    get_wait(in.c, "short", t, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    got_clear(&g);
    inst_close(&in);
}

static int count_state(const struct inst *in, enum cache_redis_state s)
{
    int n = 0;
    for (int i = 0; i < in->n_states; i++)
        n += in->states[i] == s;
    return n;
}

static bool state_is_up(void *arg)
{
    return cache_redis_state(((struct inst *)arg)->r) == CACHE_REDIS_UP;
}

/* Redis killed: the gets in flight and the new ones are answered
 * UNAVAILABLE within the timeout; the breaker opens once (one on_state /
 * log line), gets are not even tried while it is open; an invalidation
 * made meanwhile keeps its table blocked, and is delivered (INCR seen in
 * Redis) once Redis is back, which unblocks it. */
static void test_redis_killed(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 200);
    assert_true(run_until(sub_up, &in, 3000));
    uint64_t t[] = {42};
    struct got g[8] = {{0}};
    get_wait(in.c, "x", t, 1, &g[0]);
    assert_int_equal(cache_redis_state(in.r), CACHE_REDIS_UP);

    /* In flight when it dies. */
    got_clear(&g[0]);
    ev_now_update(L);
    int64_t start = now_ms();
    for (int i = 0; i < 4; i++)
        cache_redis_get(in.c, "x", 1, t, 1, got_cb, &g[i]);
    redis_kill();
    for (int i = 0; i < 4; i++) {
        assert_true(run_until(got_done, &g[i], 1000));
        assert_int_equal(g[i].st, CACHE_REDIS_UNAVAILABLE);
        assert_true(g[i].at_ms - start <= 200 + 150);
    }
    /* New ones: refused connections, then the open breaker. */
    for (int i = 0; i < 4; i++) {
        int64_t t0 = now_ms();
        get_wait(in.c, "x", t, 1, &g[i]);
        assert_int_equal(g[i].st, CACHE_REDIS_UNAVAILABLE);
        assert_true(g[i].at_ms - t0 <= 200 + 150);
    }
    assert_int_equal(cache_redis_state(in.r), CACHE_REDIS_OPEN);
    assert_int_equal(count_state(&in, CACHE_REDIS_OPEN), 1);
    assert_false(cache_redis_pubsub_up(in.r));
    uint64_t connects = stats_of(&in).connects;
    get_wait(in.c, "x", t, 1, &g[0]); /* open: not tried at all */
    assert_int_equal(g[0].st, CACHE_REDIS_UNAVAILABLE);
    assert_int_equal(stats_of(&in).connects, connects);

    cache_redis_invalidate(in.r, 42);
    run_for(600); /* probes fail: open, half-open, open... */
    assert_true(cache_redis_table_blocked(in.r, 42));
    assert_int_equal(stats_of(&in).invalidations_pending, 1);
    get_wait(in.c, "x", t, 1, &g[0]);
    assert_int_equal(g[0].st, CACHE_REDIS_BLOCKED);

    redis_start(); /* empty: what matters is the INCR arriving */
    struct blocked_wait b = {in.r, 42};
    assert_true(run_until(unblocked, &b, 3000));
    assert_true(run_until(state_is_up, &in, 3000));
    redisContext *rc = redisConnect("127.0.0.1", port);
    redisReply *rep = redisCommand(rc, "SELECT 2");
    freeReplyObject(rep);
    rep = redisCommand(rc, "GET t:g:000000000000002a");
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "1");
    freeReplyObject(rep);
    redisFree(rc);
    assert_true(run_until(sub_up, &in, 3000)); /* pub/sub back, copies reset */
    /* The breaker went: up, open once, (half-open, open)*, half-open, up. */
    assert_int_equal(in.states[0], CACHE_REDIS_UP);
    assert_int_equal(in.states[1], CACHE_REDIS_OPEN);
    assert_int_equal(in.states[in.n_states - 1], CACHE_REDIS_UP);
    for (int i = 2; i < in.n_states - 1; i++)
        assert_int_equal(in.states[i], i % 2 == 0 ? CACHE_REDIS_HALF_OPEN : CACHE_REDIS_OPEN);
    assert_int_equal((uint64_t)in.n_states, stats_of(&in).state_changes);
    get_wait(in.c, "x", t, 1, &g[0]);
    assert_int_equal(g[0].st, CACHE_REDIS_MISS);
    assert_int_equal(g[0].gens[0], 1);
    for (int i = 0; i < 8; i++)
        got_clear(&g[i]);
    inst_close(&in);
}

struct ticker {
    ev_timer w;
    int64_t last;
    int64_t max_gap;
};

static void ticker_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct ticker *tk = (struct ticker *)w;
    int64_t n = now_ms();
    if (tk->last && n - tk->last > tk->max_gap)
        tk->max_gap = n - tk->last;
    tk->last = n;
}

/* Redis stopped (SIGSTOP: connections accepted, nothing answered): gets
 * time out as UNAVAILABLE, the loop never stalls (a 1 ms timer keeps
 * ticking), the breaker opens; after SIGCONT the late replies are dropped
 * (ASan: no use after free) and a probe brings it back up. */
static void test_redis_stopped(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 100);
    uint64_t t[] = {5};
    struct got g[6] = {{0}};
    get_wait(in.c, "s", t, 1, &g[0]);
    struct ticker tk = {.last = 0};
    ev_timer_init(&tk.w, ticker_cb, 0.001, 0.001);
    ev_timer_start(L, &tk.w);

    kill(redis_pid, SIGSTOP);
    ev_now_update(L);
    int64_t start = now_ms();
    for (int i = 0; i < 6; i++) {
        got_clear(&g[i]);
        cache_redis_get(in.c, "s", 1, t, 1, got_cb, &g[i]);
    }
    for (int i = 0; i < 6; i++) {
        assert_true(run_until(got_done, &g[i], 1000));
        assert_int_equal(g[i].st, CACHE_REDIS_UNAVAILABLE);
        assert_true(g[i].at_ms - start <= 100 + 150);
    }
    assert_int_equal(cache_redis_state(in.r), CACHE_REDIS_OPEN);
    assert_true(stats_of(&in).timeouts >= 6);
    /* Probes while stopped time out too (fresh connections each time). */
    for (int i = 0; i < 10; i++) {
        get_wait(in.c, "s", t, 1, &g[0]);
        assert_int_equal(g[0].st, CACHE_REDIS_UNAVAILABLE);
        run_for(40);
    }
    assert_true(tk.max_gap < 100);

    kill(redis_pid, SIGCONT);
    int64_t end = now_ms() + 3000;
    while (cache_redis_state(in.r) != CACHE_REDIS_UP && now_ms() < end) {
        get_wait(in.c, "s", t, 1, &g[0]);
        run_for(20);
    }
    assert_int_equal(cache_redis_state(in.r), CACHE_REDIS_UP);
    get_wait(in.c, "s", t, 1, &g[0]);
    assert_int_equal(g[0].st, CACHE_REDIS_MISS);
    run_for(100); /* any late reply lands now */
    for (int i = 1; i < 6; i++)
        assert_int_equal(g[i].calls, 1); /* exactly once, late replies ignored */
    assert_true(tk.max_gap < 100);
    ev_timer_stop(L, &tk.w);
    for (int i = 0; i < 6; i++)
        got_clear(&g[i]);
    inst_close(&in);
}

/* SCRIPT FLUSH under a live connection: the next put fails (NOSCRIPT,
 * counted as an error) and reloads the scripts; the one after is stored. */
static void test_script_flush(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 500);
    uint64_t t[] = {4};
    struct got g = {0};
    get_wait(in.c, "sf", t, 1, &g);
    put(&in, "sf", "one", 60000, t, g.gens, 1);
    WAIT_STAT(in.r, puts_stored, 1);
    char out[64];
    redis_cmd(out, sizeof(out), "SCRIPT FLUSH");
    put(&in, "sf", "two", 60000, t, g.gens, 1);
    WAIT_STAT(in.r, errors, 1);
    put(&in, "sf", "three", 60000, t, g.gens, 1);
    WAIT_STAT(in.r, puts_stored, 2);
    get_wait(in.c, "sf", t, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_HIT);
    assert_memory_equal(g.value, "three", 5);
    assert_int_equal(cache_redis_state(in.r), CACHE_REDIS_UP);
    got_clear(&g);
    inst_close(&in);
}

struct resets_wait {
    struct inst *in;
    int want;
};

static bool resets_reached(void *arg)
{
    struct resets_wait *w = arg;
    return w->in->resets >= w->want && cache_redis_pubsub_up(w->in->r);
}

/* The pub/sub connection killed (CLIENT KILL TYPE pubsub): each instance
 * resets its in-process copies when it notices and again when it has
 * subscribed anew, and hears invalidations again. */
static void test_pubsub_reconnect(void **state)
{
    (void)state;
    need_redis();
    struct inst a, b;
    inst_open(&a, port, 500);
    inst_open(&b, port, 500);
    assert_true(run_until(sub_up, &a, 3000));
    assert_true(run_until(sub_up, &b, 3000));
    int before = b.resets;
    char out[64];
    redis_cmd(out, sizeof(out), "CLIENT KILL TYPE pubsub");
    assert_true(run_until(resets_reached, &(struct resets_wait){&b, before + 2}, 3000));
    assert_true(run_until(sub_up, &a, 3000));
    cache_redis_invalidate(a.r, 99);
    assert_true(run_until(heard, &(struct heard_wait){&b, 99}, 3000));
    inst_close(&a);
    inst_close(&b);
}

/* A channel that falls silent (CLIENT PAUSE: the connection stays up, the
 * heartbeats stop) is taken for dead after 3 s: copies reset, subscribed
 * again once Redis answers. */
static void test_pubsub_heartbeat(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 500);
    assert_true(run_until(sub_up, &in, 3000));
    run_for(1200); /* a heartbeat or two goes round */
    assert_true(cache_redis_pubsub_up(in.r));
    int before = in.resets;
    char out[64];
    redis_cmd(out, sizeof(out), "CLIENT PAUSE 4000 ALL");
    run_for(500);
    assert_true(cache_redis_pubsub_up(in.r)); /* not yet */
    assert_true(run_until(resets_reached, &(struct resets_wait){&in, before + 2}, 8000));
    assert_true(cache_redis_pubsub_up(in.r));
    inst_close(&in);
}

/* A server that refuses the DB (SELECT 2 with one database): the
 * connection is dropped from inside hiredis's callback, every get behind
 * the SELECT is answered UNAVAILABLE (no answer from DB 0 is used), the error logged,
 * and the breaker opens. */
static void test_select_refused(void **state)
{
    (void)state;
    need_redis();
    int p2 = port + 1;
    while (p2 < 26400 && !port_free(p2))
        p2++;
    assert_true(p2 < 26400);
    pid_t pid = redis_start_one_db(p2);
    struct inst in;
    inst_open(&in, p2, 500); /* redis://127.0.0.1:p2/2 */
    uint64_t t[] = {1};
    struct got g[3] = {{0}};
    ev_now_update(L);
    for (int i = 0; i < 3; i++)
        cache_redis_get(in.c, "sel", 3, t, 1, got_cb, &g[i]);
    for (int i = 0; i < 3; i++) {
        assert_true(run_until(got_done, &g[i], 3000));
        assert_int_equal(g[i].st, CACHE_REDIS_UNAVAILABLE);
        assert_int_equal(g[i].calls, 1);
    }
    assert_true(stats_of(&in).errors >= 1);
    for (int i = 0; i < 3 && cache_redis_state(in.r) != CACHE_REDIS_OPEN; i++)
        get_wait(in.c, "sel", t, 1, &g[0]);
    assert_int_equal(cache_redis_state(in.r), CACHE_REDIS_OPEN);
    inst_close(&in);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < 3; i++)
        got_clear(&g[i]);
}

/* No Redis at all (a closed port): every answer still comes from the loop,
 * never from inside the call, and the breaker opens after 3 failures. */
static void test_no_server(void **state)
{
    (void)state;
    struct inst in;
    int closed = 26399;
    while (!port_free(closed))
        closed--;
    inst_open(&in, closed, 100);
    uint64_t t[] = {1};
    struct got g = {0};
    for (int i = 0; i < 5; i++) {
        get_wait(in.c, "n", t, 1, &g);
        assert_int_equal(g.st, CACHE_REDIS_UNAVAILABLE);
    }
    assert_int_equal(cache_redis_state(in.r), CACHE_REDIS_OPEN);
    assert_int_equal(count_state(&in, CACHE_REDIS_OPEN), 1);
    assert_false(cache_redis_put(in.c, "n", 1, "v", 1, 100, t, t, 1));
    struct cache_redis_stats st = stats_of(&in);
    assert_int_equal(st.gets, 5);
    assert_int_equal(st.unavailable, 5);
    assert_int_equal(st.errors, 3);
    assert_int_equal(st.puts_refused, 1);
    /* Too many tables, bad arguments. */
    uint64_t many[CACHE_REDIS_MAX_TABLES + 1] = {0};
    get_wait(in.c, "n", many, CACHE_REDIS_MAX_TABLES + 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_UNAVAILABLE);
    assert_false(cache_redis_put(in.c, "n", 1, "v", 1, 0, t, t, 1));
    got_clear(&g);
    inst_close(&in);
}

/* Freeing a connection answers its pending gets from inside the free, once
 * each; a second connection on the loop works on its own. */
static void test_conn_free_pending(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 500);
    struct cache_redis_conn *c2 = cache_redis_conn_new(in.r, L);
    assert_non_null(c2);
    uint64_t t[] = {9};
    struct got g[4] = {{0}};
    get_wait(c2, "f", t, 1, &g[0]); /* connected */
    got_clear(&g[0]);
    ev_now_update(L);
    cache_redis_get(c2, "f", 1, t, 1, got_cb, &g[0]);   /* sent */
    cache_redis_get(c2, "f", 1, t, 300, got_cb, &g[1]); /* deferred */
    cache_redis_conn_free(c2);
    assert_int_equal(g[0].calls, 1);
    assert_int_equal(g[0].st, CACHE_REDIS_UNAVAILABLE);
    assert_int_equal(g[1].calls, 1);
    assert_int_equal(g[1].st, CACHE_REDIS_UNAVAILABLE);
    run_for(50);
    assert_int_equal(g[0].calls, 1);
    assert_int_equal(g[1].calls, 1);
    get_wait(in.c, "f", t, 1, &g[2]);
    assert_int_equal(g[2].st, CACHE_REDIS_MISS);
    for (int i = 0; i < 4; i++)
        got_clear(&g[i]);
    inst_close(&in);
}

/* The glue: one tier, worker 0's connection is the home one, each worker
 * has its own; stop frees it all. */
static void test_worker_glue(void **state)
{
    (void)state;
    need_redis();
    struct worker w[3];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 3; i++) {
        w[i].id = i;
        w[i].loop = L;
    }
    struct cache_redis_addr a;
    char url[64], err[256];
    snprintf(url, sizeof(url), "redis://localhost:%d", port);
    assert_int_equal(cache_redis_url_parse(url, &a, err, sizeof(err)), 0);
    struct cache_redis_opts o = {.op_timeout_ms = 500};
    assert_null(cache_redis_global());
    assert_true(cache_redis_start(&a, &o, w, 3, err, sizeof(err)));
    assert_false(cache_redis_start(&a, &o, w, 3, err, sizeof(err)));
    struct cache_redis *r = cache_redis_global();
    assert_non_null(r);
    assert_ptr_equal(cache_redis_worker(&w[0]), cache_redis_home(r));
    assert_non_null(cache_redis_worker(&w[2]));
    assert_ptr_not_equal(cache_redis_worker(&w[1]), cache_redis_worker(&w[2]));
    struct got g = {0};
    uint64_t t[] = {1};
    get_wait(cache_redis_worker(&w[2]), "glue", t, 1, &g);
    assert_int_equal(g.st, CACHE_REDIS_MISS);
    cache_redis_stop();
    assert_null(cache_redis_global());
    assert_null(cache_redis_worker(&w[1]));
    got_clear(&g);
}

/* Threads: invalidations and blocked checks from 4 threads while the home
 * loop delivers them, and a second loop on its own thread doing gets on
 * its own connection (the breaker and counters are shared). Every
 * invalidation is delivered (each table's counter moved, none pending) and
 * the counters add up. Meant for TSan as much as for ASan. */
#define INV_THREADS 4
#define INV_EACH    200
#define GETS        50

struct inv_thread {
    pthread_t t;
    struct cache_redis *r;
    int id;
};

static _Atomic int inv_threads_done;

static void *inv_thread_main(void *arg)
{
    struct inv_thread *it = arg;
    for (int i = 0; i < INV_EACH; i++) {
        uint64_t table = (uint64_t)(it->id * 1000 + i % 10);
        cache_redis_invalidate(it->r, table);
        (void)cache_redis_table_blocked(it->r, table);
        (void)cache_redis_table_blocked(it->r, table + 1);
    }
    atomic_fetch_add(&inv_threads_done, 1);
    return NULL;
}

struct getter {
    pthread_t t;
    struct cache_redis *r;
    struct ev_loop *loop;
    struct cache_redis_conn *c;
    ev_timer keep; /* keeps ev_run() going between answers */
    int answers, misses;
};

static void getter_cb(const struct cache_redis_result *res, void *arg)
{
    struct getter *g = arg;
    static const uint64_t t[] = {77};
    g->answers++;
    g->misses += res->status == CACHE_REDIS_MISS;
    if (g->answers < GETS)
        cache_redis_get(g->c, "threaded", 8, t, 1, getter_cb, g);
    else
        ev_break(g->loop, EVBREAK_ALL);
}

static void keep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void *getter_main(void *arg)
{
    struct getter *g = arg;
    static const uint64_t t[] = {77};
    g->loop = ev_loop_new(EVFLAG_AUTO);
    g->c = cache_redis_conn_new(g->r, g->loop);
    ev_timer_init(&g->keep, keep_cb, 0.01, 0.01);
    ev_timer_start(g->loop, &g->keep);
    cache_redis_get(g->c, "threaded", 8, t, 1, getter_cb, g);
    ev_run(g->loop, 0);
    ev_timer_stop(g->loop, &g->keep);
    cache_redis_conn_free(g->c);
    ev_loop_destroy(g->loop);
    return NULL;
}

static bool all_delivered(void *arg)
{
    struct inst *in = arg;
    return atomic_load(&inv_threads_done) == INV_THREADS && stats_of(in).invalidations_pending == 0;
}

static void test_threads(void **state)
{
    (void)state;
    need_redis();
    struct inst in;
    inst_open(&in, port, 1000);
    atomic_store(&inv_threads_done, 0);
    struct inv_thread it[INV_THREADS];
    struct getter g = {.r = in.r};
    assert_int_equal(pthread_create(&g.t, NULL, getter_main, &g), 0);
    for (int i = 0; i < INV_THREADS; i++) {
        it[i].r = in.r;
        it[i].id = i + 1;
        assert_int_equal(pthread_create(&it[i].t, NULL, inv_thread_main, &it[i]), 0);
    }
    assert_true(run_until(all_delivered, &in, 10000));
    for (int i = 0; i < INV_THREADS; i++)
        pthread_join(it[i].t, NULL);
    pthread_join(g.t, NULL);
    assert_int_equal(g.answers, GETS);
    assert_int_equal(g.misses, GETS);
    struct cache_redis_stats st = stats_of(&in);
    assert_int_equal(st.invalidations, INV_THREADS * INV_EACH);
    assert_true(st.invalidations_sent >= INV_THREADS * 10);
    assert_true(st.invalidations_sent <= INV_THREADS * INV_EACH);
    assert_int_equal(st.gets, GETS);
    assert_int_equal(st.errors, 0);
    redisContext *rc = redisConnect("127.0.0.1", port);
    freeReplyObject(redisCommand(rc, "SELECT 2"));
    for (int i = 0; i < INV_THREADS; i++)
        for (int j = 0; j < 10; j++) {
            assert_false(cache_redis_table_blocked(in.r, (uint64_t)((i + 1) * 1000 + j)));
            redisReply *rep =
                redisCommand(rc, "GET t:g:%016llx", (unsigned long long)((i + 1) * 1000 + j));
            assert_int_equal(rep->type, REDIS_REPLY_STRING);
            assert_true(atoi(rep->str) >= 1);
            freeReplyObject(rep);
        }
    redisFree(rc);
    inst_close(&in);
}

int main(void)
{
    log_set_quiet(getenv("CACHE_REDIS_VERBOSE") == NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),        cmocka_unit_test(test_miss_put_hit),
        cmocka_unit_test(test_generations),      cmocka_unit_test(test_check_copy),
        cmocka_unit_test(test_two_instances),    cmocka_unit_test(test_binary_values),
        cmocka_unit_test(test_ttl_expiry),       cmocka_unit_test(test_script_flush),
        cmocka_unit_test(test_no_server),        cmocka_unit_test(test_conn_free_pending),
        cmocka_unit_test(test_worker_glue),      cmocka_unit_test(test_redis_stopped),
        cmocka_unit_test(test_threads),          cmocka_unit_test(test_pubsub_reconnect),
        cmocka_unit_test(test_pubsub_heartbeat), cmocka_unit_test(test_select_refused),
        cmocka_unit_test(test_redis_killed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
