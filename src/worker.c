/* worker.c - an event loop with its listeners, clients and housekeeping. */
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <signal.h>
#include <unistd.h>

#include "log.h"

/* ---- threads, the world lock and inboxes --------------------------------- */

static struct worker_ops ops;

void worker_set_ops(const struct worker_ops *o)
{
    ops = *o;
}

static _Thread_local struct worker *tl_worker;
static _Thread_local int tl_world_depth;
/* Held shared by every loop thread while it runs callbacks (see worker.h). */
static pthread_rwlock_t world_lock;
static bool world_live; /* more than one loop runs */
static struct worker *all_workers;
static int n_all_workers;

struct worker *worker_current(void)
{
    return tl_worker;
}

bool worker_world_locked(void)
{
    return tl_world_depth > 0;
}

bool worker_can_touch(const struct worker *w)
{
    return w == tl_worker || tl_world_depth > 0 || !world_live;
}

static void world_release(struct ev_loop *loop)
{
    (void)loop;
    pthread_rwlock_unlock(&world_lock);
}

static void world_acquire(struct ev_loop *loop)
{
    (void)loop;
    pthread_rwlock_rdlock(&world_lock);
}

void worker_world_lock(void)
{
    if (tl_world_depth++ > 0 || !world_live)
        return;
    /* From shared to exclusive: other writers may run in between, so the
     * caller looks at the state again after this. */
    pthread_rwlock_unlock(&world_lock);
    pthread_rwlock_wrlock(&world_lock);
}

void worker_world_unlock(void)
{
    if (--tl_world_depth > 0 || !world_live)
        return;
    pthread_rwlock_unlock(&world_lock);
    pthread_rwlock_rdlock(&world_lock);
    /* The holder may have started watchers on other loops, or left them
     * work: let each run an iteration. */
    for (int i = 0; i < n_all_workers; i++)
        if (&all_workers[i] != tl_worker)
            ev_async_send(all_workers[i].loop, &all_workers[i].inbox_async);
}

void worker_post(struct worker *w, struct list *item)
{
    pthread_mutex_lock(&w->inbox_lock);
    list_add_tail(&w->inbox, item);
    pthread_mutex_unlock(&w->inbox_lock);
    ev_async_send(w->loop, &w->inbox_async);
}

void worker_send_later(struct worker *w, struct list *item)
{
    list_add_tail(&w->outgoing, item);
    worker_schedule_reap(w);
}

void worker_stop_loop(struct worker *w)
{
    if (w == tl_worker || !world_live) {
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    /* Not ev_break() from here: a loop inside epoll_wait() may overwrite
     * the flag when it comes back (libev's EVBREAK_RECURSE check). */
    pthread_mutex_lock(&w->inbox_lock);
    w->inbox_stop = true;
    pthread_mutex_unlock(&w->inbox_lock);
    ev_async_send(w->loop, &w->inbox_async);
}

void worker_kick(struct worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    bool was = w->inbox_kick;
    w->inbox_kick = true;
    pthread_mutex_unlock(&w->inbox_lock);
    if (!was)
        ev_async_send(w->loop, &w->inbox_async);
}

static void inbox_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    (void)revents;
    struct list items;
    list_init(&items);
    pthread_mutex_lock(&w->inbox_lock);
    while (!list_empty(&w->inbox)) {
        struct list *n = list_first(&w->inbox);
        list_del(n);
        list_add_tail(&items, n);
    }
    bool kick = w->inbox_kick, stop = w->inbox_stop;
    w->inbox_kick = false;
    pthread_mutex_unlock(&w->inbox_lock);
    while (!list_empty(&items)) {
        struct list *n = list_first(&items);
        list_del(n);
        list_init(n);
        if (ops.inbox_item)
            ops.inbox_item(n);
    }
    if (kick && ops.kick)
        ops.kick(w);
    if (stop)
        ev_break(loop, EVBREAK_ALL);
}

static void *worker_thread_main(void *arg)
{
    struct worker *w = arg;
    tl_worker = w;
    pthread_rwlock_rdlock(&world_lock);
    ev_run(w->loop, 0);
    pthread_rwlock_unlock(&world_lock);
    if (ops.thread_done)
        ops.thread_done();
    return NULL;
}

bool worker_start_threads(struct worker *workers, int n, char *err, size_t errlen)
{
    all_workers = workers;
    n_all_workers = n;
    tl_worker = &workers[0];
    if (n <= 1)
        return true;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* An admin command or a reload must not wait behind a stream of
     * readers that never all let go at once. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&world_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    for (int i = 0; i < n; i++)
        ev_set_loop_release_cb(workers[i].loop, world_release, world_acquire);
    world_live = true;
    pthread_rwlock_rdlock(&world_lock);
    /* Signals go to the main thread's loop only. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 1; i < n; i++) {
        int rc = pthread_create(&workers[i].thread, NULL, worker_thread_main, &workers[i]);
        if (rc != 0) {
            snprintf(err, errlen, "could not start worker thread: %s", strerror(rc));
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return false;
        }
        workers[i].threaded = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return true;
}

void worker_stop_threads(struct worker *workers, int n)
{
    if (!world_live)
        return;
    for (int i = 1; i < n; i++) {
        if (!workers[i].threaded)
            continue;
        pthread_mutex_lock(&workers[i].inbox_lock);
        workers[i].inbox_stop = true;
        pthread_mutex_unlock(&workers[i].inbox_lock);
        ev_async_send(workers[i].loop, &workers[i].inbox_async);
    }
    /* Let go so that threads waiting to run a last callback can. */
    pthread_rwlock_unlock(&world_lock);
    for (int i = 1; i < n; i++) {
        if (workers[i].threaded)
            pthread_join(workers[i].thread, NULL);
        workers[i].threaded = false;
    }
    for (int i = 0; i < n; i++)
        ev_set_loop_release_cb(workers[i].loop, NULL, NULL);
    world_live = false;
    pthread_rwlock_destroy(&world_lock);
}

int64_t now_wall_usec(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void reaper_cb(struct ev_loop *loop, ev_prepare *ev, int revents)
{
    struct worker *w = ev->data;
    (void)loop;
    (void)revents;
    while (!list_empty(&w->outgoing)) {
        struct list *n = list_first(&w->outgoing);
        list_del(n);
        if (ops.outgoing_item)
            ops.outgoing_item(n);
    }
    if (ops.reap)
        ops.reap(w);
    ev_prepare_stop(w->loop, &w->reaper);
}

void worker_schedule_reap(struct worker *w)
{
    if (!ev_is_active(&w->reaper))
        ev_prepare_start(w->loop, &w->reaper);
}

static void janitor_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    (void)loop;
    (void)revents;
    if (ops.janitor)
        ops.janitor(w);
}

void worker_init(struct worker *w, int id, struct ev_loop *loop, struct config *cfg)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->loop = loop;
    w->cfg = config_ref(cfg);
    /* Reads land in buffers of at least 16 kB whatever pkt_buf says: one
     * read() then carries many small messages, and startup packets fit. */
    uint32_t size = cfg->pkt_buf > 16384 ? (uint32_t)cfg->pkt_buf : 16384;
    iobuf_cache_init(&w->bufs, size, 1024);
    list_init(&w->clients);
    list_init(&w->dead_clients);
    list_init(&w->dead_servers);
    ev_prepare_init(&w->reaper, reaper_cb);
    w->reaper.data = w;
    /* Timeouts are checked 4 times a second: coarse, but one timer for all
     * connections instead of one each. */
    ev_timer_init(&w->janitor, janitor_cb, 0.25, 0.25);
    w->janitor.data = w;
    ev_timer_start(loop, &w->janitor);
    pthread_mutex_init(&w->inbox_lock, NULL);
    list_init(&w->inbox);
    list_init(&w->cancels);
    list_init(&w->peer_cancels);
    list_init(&w->outgoing);
    ev_async_init(&w->inbox_async, inbox_cb);
    w->inbox_async.data = w;
    ev_async_start(loop, &w->inbox_async);
}

/* Accepts up to max connections from listener fd; returns true once the
 * accept queue is empty (or accept() fails for a reason that waiting will
 * not fix), false if max were taken and more may be queued. */
static bool accept_batch(struct worker *w, int lfd, int max)
{
    for (int i = 0; i < max; i++) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof(addr);
        int fd = accept4(lfd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return true;
            if (errno == ECONNABORTED)
                continue;
            log_warning("accept() failed: %s", strerror(errno));
            return true;
        }
        ops.accept(w, fd, (struct sockaddr *)&addr, len, addr.ss_family == AF_UNIX);
    }
    return false;
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    /* Accept a bounded batch per wakeup so that one busy listener does not
     * starve established connections. */
    accept_batch(io->data, io->fd, 64);
}

/* The kernel's keepalive values, read once from a socket on which none was
 * set. A setting put back to 0 ("the OS's") by a reload writes these: the
 * listeners were set once and keep what was last set on them, so without
 * this the old value stayed for every client accepted after the reload. */
static int tcp_kernel_keepalive[3];
static pthread_once_t tcp_kernel_once = PTHREAD_ONCE_INIT;

static void tcp_kernel_read(void)
{
    static const int opts[3] = {TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    for (int i = 0; i < 3; i++) {
        socklen_t len = sizeof(int);
        if (fd < 0 || getsockopt(fd, IPPROTO_TCP, opts[i], &tcp_kernel_keepalive[i], &len) != 0)
            tcp_kernel_keepalive[i] = 0;
    }
    if (fd >= 0)
        close(fd);
}

static void tcp_keepalive_opt(int fd, int opt, int value, int kernel)
{
    int v = value > 0 ? value : kernel;
    if (v > 0)
        setsockopt(fd, IPPROTO_TCP, opt, &v, sizeof(v));
}

void worker_tcp_options(int fd, const struct config *cfg)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* A size once set cannot be given back to the kernel's autotuning;
     * worker_set_config() says so when a reload asks for it. */
    if (cfg->tcp_socket_buffer > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg->tcp_socket_buffer, sizeof(int));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cfg->tcp_socket_buffer, sizeof(int));
    }
    /* Unacknowledged data: with keepalive on or off (as PgBouncer); it
     * was set only with keepalive on, so that with tcp_keepalive = 0 a
     * request sent to a server that had gone silent waited for TCP's own
     * retransmission limit, about 15 minutes (test_chaos_net.py). 0 is
     * the kernel's own behaviour, and is set too, for a reload to 0. */
    unsigned int ms = (unsigned int)(cfg->tcp_user_timeout / 1000);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
    int on = cfg->tcp_keepalive ? 1 : 0;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    if (!on)
        return;
    pthread_once(&tcp_kernel_once, tcp_kernel_read);
    tcp_keepalive_opt(fd, TCP_KEEPIDLE, cfg->tcp_keepidle, tcp_kernel_keepalive[0]);
    tcp_keepalive_opt(fd, TCP_KEEPINTVL, cfg->tcp_keepintvl, tcp_kernel_keepalive[1]);
    tcp_keepalive_opt(fd, TCP_KEEPCNT, cfg->tcp_keepcnt, tcp_kernel_keepalive[2]);
}

/* A TCP connection is made from its listener's socket and inherits its
 * options: they are set once on the listener, not with two to six
 * setsockopt() calls per connection (at 5,000 connections a second, or
 * 10,000 slowloris in their first second, those calls were most of an
 * accept's cost). A reload sets them again; connections already queued
 * by the kernel at that moment keep the old. */
static void listener_set_options(struct worker *w, int fd)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0 && sa.ss_family != AF_UNIX)
        worker_tcp_options(fd, w->cfg);
}

static bool add_listener(struct worker *w, int fd)
{
    if (w->n_listeners >= WORKER_MAX_LISTENERS) {
        close(fd);
        return false;
    }
    listener_set_options(w, fd);
    ev_io *io = &w->listeners[w->n_listeners++];
    ev_io_init(io, accept_cb, fd, EV_READ);
    ev_set_priority(io, WORKER_PRI_LOGIN); /* new connections after logged-in ones */
    io->data = w;
    ev_io_start(w->loop, io);
    return true;
}

static int listen_tcp(const struct config *cfg, const char *host, char *err, size_t errlen,
                      struct worker *w, bool reuseport)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->listen_port);
    const char *h = strcmp(host, "*") == 0 ? NULL : host;
    int rc = getaddrinfo(h, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen_addr \"%s\": %s", host, gai_strerror(rc));
        return -1;
    }
    int n = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (cfg->tcp_defer_accept > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &cfg->tcp_defer_accept, sizeof(int));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, cfg->listen_backlog) < 0) {
            char a[64] = "?";
            getnameinfo(ai->ai_addr, ai->ai_addrlen, a, sizeof(a), NULL, 0, NI_NUMERICHOST);
            snprintf(err, errlen, "could not listen on %s:%d: %s", a, cfg->listen_port,
                     strerror(errno));
            close(fd);
            freeaddrinfo(res);
            return -1;
        }
        if (add_listener(w, fd))
            n++;
    }
    freeaddrinfo(res);
    if (n == 0)
        snprintf(err, errlen, "no usable address for listen_addr \"%s\"", host);
    return n;
}

/* Gives the socket at path to group (unix_socket_group, as PgBouncer does),
 * so that members of the group may connect when unix_socket_mode lets the
 * group in. An unknown group or a chown the OS refuses stops the start. */
static bool chown_socket_group(const char *path, const char *group, char *err, size_t errlen)
{
    struct group gr, *found = NULL;
    char buf[4096];
    int rc = getgrnam_r(group, &gr, buf, sizeof(buf), &found);
    if (rc != 0 || !found) {
        snprintf(err, errlen, "unix_socket_group: unknown group \"%s\"%s%s", group, rc ? ": " : "",
                 rc ? strerror(rc) : "");
        return false;
    }
    if (chown(path, (uid_t)-1, found->gr_gid) < 0) {
        snprintf(err, errlen, "unix_socket_group: cannot give %s to group \"%s\": %s", path, group,
                 strerror(errno));
        return false;
    }
    return true;
}

static bool listen_unix(const struct config *cfg, struct worker *w, char *err, size_t errlen)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int len = snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", cfg->unix_socket_dir,
                       cfg->listen_port);
    if (len < 0 || (size_t)len >= sizeof(un.sun_path)) {
        snprintf(err, errlen, "unix_socket_dir too long");
        return false;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return false;
    }
    /* A stale socket from a previous run is removed only if nothing
     * answers on it. */
    if (connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0) {
        snprintf(err, errlen, "%s: another process is listening there", un.sun_path);
        close(fd);
        return false;
    }
    unlink(un.sun_path);
    if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, cfg->listen_backlog) < 0) {
        snprintf(err, errlen, "could not listen on %s: %s", un.sun_path, strerror(errno));
        close(fd);
        return false;
    }
    chmod(un.sun_path, (mode_t)cfg->unix_socket_mode);
    if (cfg->unix_socket_group[0] &&
        !chown_socket_group(un.sun_path, cfg->unix_socket_group, err, errlen)) {
        close(fd);
        unlink(un.sun_path);
        return false;
    }
    return add_listener(w, fd);
}

bool worker_listen(struct worker *w, int n_workers, char *err, size_t errlen)
{
    const struct config *cfg = w->cfg;
    /* Several workers: each has its own socket on the port and the kernel
     * spreads new connections over them. The unix socket cannot be shared
     * that way; worker 0 takes it. */
    bool reuseport = cfg->so_reuseport || n_workers > 1;
    if (cfg->listen_addr[0]) {
        char addrs[512];
        snprintf(addrs, sizeof(addrs), "%s", cfg->listen_addr);
        char *save = NULL;
        for (char *tok = strtok_r(addrs, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
            if (listen_tcp(cfg, tok, err, errlen, w, reuseport) <= 0)
                return false;
    }
    if (w->id == 0 && cfg->unix_socket_dir[0] && !listen_unix(cfg, w, err, errlen))
        return false;
    if (w->n_listeners == 0) {
        snprintf(err, errlen, "nothing to listen on (listen_addr and unix_socket_dir are empty)");
        return false;
    }
    return true;
}

static bool listener_is_unix(int fd, struct sockaddr_un *un)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || ss.ss_family != AF_UNIX)
        return false;
    memcpy(un, &ss, sizeof(*un));
    return true;
}

void worker_stop_listening(struct worker *w, bool keep_unix)
{
    int kept = 0;
    for (int i = 0; i < w->n_listeners; i++) {
        struct sockaddr_un un;
        bool is_unix = listener_is_unix(w->listeners[i].fd, &un);
        if (is_unix && keep_unix) {
            if (kept != i) {
                /* Moved down: the watcher is made again at its new place. */
                int fd = w->listeners[i].fd;
                ev_io_stop(w->loop, &w->listeners[i]);
                ev_io_init(&w->listeners[kept], accept_cb, fd, EV_READ);
                ev_set_priority(&w->listeners[kept], WORKER_PRI_LOGIN);
                w->listeners[kept].data = w;
                ev_io_start(w->loop, &w->listeners[kept]);
            }
            kept++;
            continue;
        }
        ev_io_stop(w->loop, &w->listeners[i]);
        /* Closing a listener resets the connections in its accept queue
         * (unless net.ipv4.tcp_migrate_req moves them to another socket of
         * its SO_REUSEPORT group). In a restart those are clients the new
         * process beside this one will never see: take them first; they are
         * served as if they had come a moment earlier. */
        while (!accept_batch(w, w->listeners[i].fd, 64))
            continue;
        if (is_unix && un.sun_path[0])
            unlink(un.sun_path);
        close(w->listeners[i].fd);
    }
    w->n_listeners = kept;
}

void worker_set_config(struct worker *w, struct config *cfg)
{
    struct config *old = w->cfg;
    w->cfg = config_ref(cfg);
    if (old && old->tcp_socket_buffer > 0 && cfg->tcp_socket_buffer == 0 && w->n_listeners > 0 &&
        w->id == 0)
        log_warning("tcp_socket_buffer = 0: clients keep a buffer of %d bytes until a restart "
                    "(a listener's size cannot be given back to the kernel)",
                    old->tcp_socket_buffer);
    config_unref(old);
    for (int i = 0; i < w->n_listeners; i++)
        listener_set_options(w, w->listeners[i].fd);
}

void worker_drain(struct worker *w)
{
    /* Servers on their way between workers arrive (and are lent or freed)
     * before anything is closed; with the threads gone every loop is ours,
     * so each goes straight to its client. */
    struct list *lists[] = {&w->outgoing, &w->inbox};
    for (int k = 0; k < 2; k++) {
        while (!list_empty(lists[k])) {
            struct list *n = list_first(lists[k]);
            list_del(n);
            if (ops.inbox_item)
                ops.inbox_item(n);
        }
    }
}

void worker_close_all(struct worker *w)
{
    worker_stop_listening(w, false);
    if (ops.close_all)
        ops.close_all(w);
}

void worker_destroy(struct worker *w)
{
    reaper_cb(w->loop, &w->reaper, 0);
    ev_timer_stop(w->loop, &w->janitor);
    ev_async_stop(w->loop, &w->inbox_async);
    pthread_mutex_destroy(&w->inbox_lock);
    iobuf_cache_destroy(&w->bufs);
    config_unref(w->cfg);
    w->cfg = NULL;
}
