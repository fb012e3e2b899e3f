/* worker.h - a thread with its own libev loop, listeners and clients.
 *
 * workers = 1 runs everything on the main thread's loop. With more, worker 0
 * is the main thread (signals, admin hooks, metrics) and the others are
 * threads started by worker_start_threads().
 *
 * Ownership: a client belongs to the worker that accepted it, for life; a
 * server belongs to one worker at a time and moves to the worker of the
 * client it is lent to (pool.c decides, under the pool lock; the move goes
 * through the owners' inboxes). Only the owner's thread touches an object's
 * stream and fields, except:
 *  - fields documented as "pool lock" in conn.h;
 *  - while a thread holds the world lock (worker_world_lock()): every other
 *    loop is then parked outside its callbacks, so that thread may read and
 *    change anything (admin console, reload, stats, metrics, cancels). */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "iobuf.h"
#include "list.h"
#include "stats.h"

#define WORKER_MAX_LISTENERS 8

/* libev priority of the listeners and of connections still logging in
 * (stream_limit_login()): within each loop iteration their events come
 * after those of logged-in clients and servers, so a storm of connections,
 * logins or cancels delays a logged-in client's query by one iteration's
 * work at most, not by all of it. libev runs every pending watcher before
 * it polls again: nothing starves. */
#define WORKER_PRI_LOGIN EV_MINPRI

struct worker;
struct sockaddr;

/* What a worker's loop hands to the layers above it (set once, by main,
 * before any loop runs). Items of the inbox and the outgoing list are list
 * nodes of the objects that travel (servers moving between workers). */
struct worker_ops {
    /* A connection was accepted on one of w's listeners. */
    void (*accept)(struct worker *w, int fd, const struct sockaddr *addr, unsigned addrlen,
                   bool is_unix);
    /* Every 250 ms on each worker: timeouts, pool housekeeping. */
    void (*janitor)(struct worker *w);
    /* An item posted to w's inbox arrived (on w's thread). */
    void (*inbox_item)(struct list *item);
    /* w was kicked (worker_kick()). */
    void (*kick)(struct worker *w);
    /* An item sent with worker_send_later() leaves, at the end of the
     * iteration. */
    void (*outgoing_item)(struct list *item);
    /* The end of an iteration: free the connections closed during it. */
    void (*reap)(struct worker *w);
    /* Shutdown: close w's clients and what else it holds. */
    void (*close_all)(struct worker *w);
    /* A worker thread ends: free what the modules keep per thread. */
    void (*thread_done)(void);
};
void worker_set_ops(const struct worker_ops *ops);
/* TCP_NODELAY, tcp_keepalive, tcp_keepidle/intvl/cnt, tcp_user_timeout
 * and tcp_socket_buffer on a TCP socket (a server connection, or a
 * listener, whose connections inherit them). */
void worker_tcp_options(int fd, const struct config *cfg);

struct worker {
    int id;
    struct ev_loop *loop;
    struct config *cfg; /* current config (a reference) */
    struct iobuf_cache bufs;
    ev_io listeners[WORKER_MAX_LISTENERS];
    int n_listeners;
    ev_timer janitor;         /* timeouts, min_pool_size, retries */
    struct list clients;      /* every client this worker accepted */
    struct list dead_clients; /* closed, freed at the end of the loop iteration */
    struct list dead_servers;
    ev_prepare reaper; /* runs before the loop next waits: frees the dead, sends servers on */
    int n_clients;
    struct stats stats;
    struct stats_hist hist_query; /* query times, observed where a request ends */
    struct stats_hist hist_wait;  /* waits for a server, observed at assignment */
    ev_timer lag_timer;           /* fires every second; lateness = loop lag (metrics.c) */
    int64_t lag_due;              /* wall-clock usec the lag timer should fire at */
    int64_t lag_usec;             /* lateness of its last firing */
    pthread_t thread;
    bool threaded; /* runs on its own thread (not the main one) */
    /* Inbox: servers on their way to this worker (pool.c), and kicks that
     * ask it to look at its own clients and servers in every pool. */
    pthread_mutex_t inbox_lock;
    struct list inbox; /* items (servers, by inbox_node) for worker_ops.inbox_item */
    bool inbox_kick;
    bool inbox_stop; /* leave the loop (shutdown) */
    ev_async inbox_async;
    struct list cancels;      /* cancel connections running on this loop (server.c) */
    struct list peer_cancels; /* cancels forwarded to [peers] from this loop (peers.c) */
    struct list outgoing;     /* servers leaving for another worker at the end of this
                               * iteration, when no caller up the stack uses them */
};

/* The worker whose thread is running (NULL outside any). */
struct worker *worker_current(void);
/* May the running thread touch objects owned by w? (its own, or any while
 * holding the world lock) */
bool worker_can_touch(const struct worker *w);

/* Hands item (a list node of the object) to w's thread, through its inbox:
 * worker_ops.inbox_item runs there. */
void worker_post(struct worker *w, struct list *item);
/* Sends item (of an object the running worker w owns) away at the end of
 * this loop iteration: worker_ops.outgoing_item runs then. */
void worker_send_later(struct worker *w, struct list *item);
/* Makes w's loop return from ev_run() (from any thread). */
void worker_stop_loop(struct worker *w);
/* Asks w's thread to run worker_ops.kick. */
void worker_kick(struct worker *w);

/* The world lock: every loop thread holds it shared while it runs callbacks
 * and lets go while it waits for events. worker_world_lock() takes it
 * exclusively from inside a callback: when it returns, no other loop runs a
 * callback until worker_world_unlock(). Nests. No-op with one worker. */
void worker_world_lock(void);
void worker_world_unlock(void);
bool worker_world_locked(void);

/* Starts the threads of workers[1..n-1] (worker 0 is the caller's loop) and
 * makes the world lock live. Returns false with err on failure. */
bool worker_start_threads(struct worker *workers, int n, char *err, size_t errlen);
/* Asks every threaded worker to leave its loop and joins it. */
void worker_stop_threads(struct worker *workers, int n);

/* Sets up w on loop (not started). */
void worker_init(struct worker *w, int id, struct ev_loop *loop, struct config *cfg);
/* Opens the listeners named by cfg (listen_addr/port, unix socket) and starts
 * accepting. Returns false with err filled on failure. */
bool worker_listen(struct worker *w, int n_workers, char *err, size_t errlen);
/* Stops accepting (a shutdown): closes w's listeners, after taking the
 * connections in their accept queues; keep_unix leaves the Unix socket
 * open (the console stays reachable while a shutdown waits). */
void worker_stop_listening(struct worker *w, bool keep_unix);
/* Swaps in a new config (reload). */
void worker_set_config(struct worker *w, struct config *cfg);
/* Shutdown, after the threads are joined: delivers the servers still
 * moving between workers. */
void worker_drain(struct worker *w);
/* Shutdown, after worker_drain(): stops listening and closes the
 * worker's clients and cancel connections. Then pool_free_all(), then
 * worker_destroy() of each worker frees what is left. */
void worker_close_all(struct worker *w);
void worker_destroy(struct worker *w);

/* Frees closed clients and servers once the current callbacks are done. */
void worker_schedule_reap(struct worker *w);

/* Microseconds of the real (wall) clock, cached per loop iteration
 * (libev's ev_now(); its timers run on a monotonic clock). Durations from
 * it are skewed by a clock step; times shown to users (first seen, last
 * run) are right as they are. */
static inline int64_t worker_now(const struct worker *w)
{
    return (int64_t)(ev_now(w->loop) * 1e6);
}
/* Wall clock microseconds. */
int64_t now_wall_usec(void);

#endif
