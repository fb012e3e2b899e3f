/* test_worker.c - worker threads: the world lock parks every other loop,
 * kicks and stops reach the threads. Run under ASan+UBSan and TSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "list.h"
#include "pool.h"
#include "worker.h"

#define N 4

static struct worker workers[N];
static ev_timer ticks[N];
static uint64_t counts[N]; /* each written only by its worker's thread */

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    counts[(struct worker *)t->data - workers]++;
}

static void start(void)
{
    char err[256];
    struct config *cfg = config_load_string("test", "[databases]\n", err, sizeof(err));
    assert_non_null(cfg);
    list_init(&g_pooler.databases);
    list_init(&g_pooler.users);
    list_init(&g_pooler.pools);
    for (int i = 0; i < N; i++) {
        worker_init(&workers[i], i, i == 0 ? ev_default_loop(0) : ev_loop_new(EVFLAG_AUTO), cfg);
        ev_timer_init(&ticks[i], tick_cb, 0.001, 0.001);
        ticks[i].data = &workers[i];
        ev_timer_start(workers[i].loop, &ticks[i]);
    }
    g_pooler.cfg = cfg; /* the janitors read it */
    g_pooler.workers = workers;
    g_pooler.n_workers = N;
    assert_true(worker_start_threads(workers, N, err, sizeof(err)));
}

static void stop(void)
{
    worker_stop_threads(workers, N);
    for (int i = 0; i < N; i++) {
        ev_timer_stop(workers[i].loop, &ticks[i]);
        worker_destroy(&workers[i]);
        if (i > 0)
            ev_loop_destroy(workers[i].loop);
    }
    pool_thread_done();
    config_unref(g_pooler.cfg);
    g_pooler.cfg = NULL;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* While the world lock is held, no other loop runs a callback; after it is
 * let go they all run again. */
static void test_world_lock_parks_loops(void **state)
{
    (void)state;
    start();
    uint64_t seen[N], later[N];
    for (int round = 0; round < 5; round++) {
        sleep_ms(20);
        worker_world_lock();
        assert_true(worker_world_locked());
        for (int i = 1; i < N; i++)
            seen[i] = counts[i];
        sleep_ms(30);
        for (int i = 1; i < N; i++)
            assert_int_equal(counts[i], seen[i]);
        worker_world_lock(); /* nests */
        worker_world_unlock();
        assert_true(worker_world_locked());
        worker_world_unlock();
        assert_false(worker_world_locked());
    }
    /* They tick again. The counters are read under the world lock, the only
     * safe way to look at another worker's state. */
    sleep_ms(50);
    worker_world_lock();
    for (int i = 1; i < N; i++)
        later[i] = counts[i];
    worker_world_unlock();
    for (int i = 1; i < N; i++)
        assert_true(later[i] > seen[i]);
    stop();
}

/* Ownership: the running thread may touch its own worker only, any while
 * holding the world lock. */
static void test_can_touch(void **state)
{
    (void)state;
    start();
    assert_ptr_equal(worker_current(), &workers[0]);
    assert_true(worker_can_touch(&workers[0]));
    assert_false(worker_can_touch(&workers[2]));
    worker_world_lock();
    assert_true(worker_can_touch(&workers[2]));
    worker_world_unlock();
    stop();
    /* Threads gone: everything is the main thread's again (shutdown). */
    assert_true(worker_can_touch(&workers[2]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_world_lock_parks_loops),
        cmocka_unit_test(test_can_touch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
