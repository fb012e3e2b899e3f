/* main.c - command line, config and auth_file loading, signals, the loop. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "auth.h"
#include "cache.h"
#include "cache_logical.h"
#include "client.h"
#include "client_conn.h"
#include "client_login.h"
#include "config.h"
#include "config_check.h"
#include "dns.h"
#include "insights.h"
#include "insights_advice.h"
#include "jobs.h"
#include "lag_monitor.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "params.h"
#include "peers.h"
#include "pool.h"
#include "prepared.h"
#include "replica_check.h"
#include "request.h"
#include "request_stats.h"
#include "router.h"
#include "server.h"
#include "server_cancel.h"
#include "tls.h"
#include "version.h"
#include "worker.h"

static struct worker *workers; /* [0] runs on the main thread */
static int n_workers;
#define main_worker (workers[0])
static struct ev_loop *main_loop;
static ev_signal sig_hup, sig_int, sig_term, sig_quit, sig_usr1, sig_usr2;
static ev_timer stats_timer, shutdown_timer;
static struct stats stats_prev;
static int64_t stats_prev_time;
static char *pidfile_written;

static void usage(FILE *f)
{
    fprintf(f, "sluice is a PostgreSQL connection pooler and query router.\n\n"
               "Usage:\n  sluice [OPTION]... CONFIG_FILE\n\n"
               "Options:\n"
               "  -d, --daemon      run in the background (as a daemon)\n"
               "  -q, --quiet       run quietly (no log to stderr)\n"
               "  -v, --verbose     increase verbosity (repeat for more)\n"
               "  -u, --user=USER   assume identity of USER\n"
               "  -C, --check       check CONFIG_FILE and every file it names (auth_file,\n"
               "                    TLS keys and certificates, [jobs] schedules), print each\n"
               "                    problem as FILE:LINE: reason, then exit (0: no problem)\n"
               "  -R, --reboot      refused: online restart is deprecated (use so_reuseport)\n"
               "  -V, --version     show version, then exit\n"
               "  -h, --help        show this help, then exit\n\n"
               "Signals: SIGHUP reloads the config, SIGINT and SIGTERM shut down (waiting\n"
               "for transactions, respectively clients; a second one exits at once),\n"
               "SIGQUIT exits at once, SIGUSR1 pauses and SIGUSR2 resumes.\n");
}

/* Reload: a new config and auth_file, or the old ones stay. The check is
 * --check's: every problem in every named file is logged before any swap. */
static bool do_reload(char *err, size_t errlen)
{
    char e[1024];
    struct config *cfg;
    struct auth_userlist *ul;
    struct config_problems problems = {0};
    if (!config_check_load(g_pooler.cfg->path, &cfg, &ul, &problems)) {
        for (int i = 0; i < problems.n; i++)
            log_error("config reload failed, keeping the old config: %s", problems.msgs[i]);
        if (problems.n > 1)
            snprintf(err, errlen, "%s (and %d more problems, see the log)", problems.msgs[0],
                     problems.n - 1);
        else
            snprintf(err, errlen, "%s", problems.n ? problems.msgs[0] : "config check failed");
        config_problems_free(&problems);
        return false;
    }
    if (!tls_apply_config(cfg, e, sizeof(e))) {
        snprintf(err, errlen, "%s", e);
        log_error("TLS settings failed, keeping the old config: %s", e);
        if (ul)
            auth_userlist_free(ul);
        config_unref(cfg);
        return false;
    }
    const struct config *old = g_pooler.cfg;
    if (strcmp(old->listen_addr, cfg->listen_addr) != 0 || old->listen_port != cfg->listen_port ||
        strcmp(old->unix_socket_dir, cfg->unix_socket_dir) != 0)
        log_warning("listen_addr/listen_port/unix_socket_dir changes need a restart");
    if (old->workers != cfg->workers)
        log_warning("workers changes need a restart");
    /* New server TLS settings: the servers connected under the old ones go
     * (as PgBouncer does), so that new ones use them. */
    bool tls_changed = tls_server_settings_differ(old, cfg);
    if (tls_changed)
        log_info("server TLS settings changed: closing the server connections");
    struct config *prev = g_pooler.cfg;
    g_pooler.cfg = cfg;
    for (int i = 0; i < n_workers; i++)
        worker_set_config(&workers[i], cfg);
    if (g_pooler.userlist)
        auth_userlist_free(g_pooler.userlist);
    g_pooler.userlist = ul;
    pool_apply_config(cfg, tls_changed);
    insights_apply_config(cfg);
    log_set_verbosity(cfg->verbose);
    config_unref(prev);
    log_info("config reloaded from %s", cfg->path);
    return true;
}

/* A reload as the service manager sees it (Type=notify): RELOADING=1, then
 * READY=1 whatever the outcome, since a failed reload keeps serving with the
 * old config. SIGHUP and the console's RELOAD both come here. */
static bool notified_reload(char *err, size_t errlen)
{
    notify_reloading();
    bool ok = do_reload(err, errlen);
    notify_ready(ok ? "serving, config reloaded" : "serving, reload failed (see the log)");
    return ok;
}

/* Admin SET: cfg, the running config with one setting changed, replaces it
 * (the auth_file stays). Takes over the reference to cfg. */
static bool apply_admin_setting(struct config *cfg, bool keep_tls, char *err, size_t errlen)
{
    if (!keep_tls && !tls_apply_config(cfg, err, errlen)) {
        config_unref(cfg);
        return false;
    }
    bool tls_changed = !keep_tls && tls_server_settings_differ(g_pooler.cfg, cfg);
    struct config *prev = g_pooler.cfg;
    g_pooler.cfg = cfg;
    for (int i = 0; i < n_workers; i++)
        worker_set_config(&workers[i], cfg);
    pool_apply_config(cfg, tls_changed);
    insights_apply_config(cfg);
    log_set_verbosity(cfg->verbose);
    config_unref(prev);
    return true;
}

static void stats_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    struct stats cur;
    memset(&cur, 0, sizeof(cur));
    worker_world_lock();
    for (int i = 0; i < n_workers; i++)
        stats_add(&cur, &workers[i].stats);
    worker_world_unlock();
    int64_t now = worker_now(&main_worker);
    if (g_pooler.cfg->log_stats) {
        char line[512];
        stats_format_period(&cur, &stats_prev, now - stats_prev_time, line, sizeof(line));
        log_info("%s", line);
    }
    stats_prev = cur;
    stats_prev_time = now;
}

static void begin_exit(void)
{
    worker_stop_loop(&main_worker);
}

/* Clients accepted just before a shutdown (or taken from the accept queue
 * when the listeners closed) came to run a transaction: they get this long
 * to log in and run one before the process exits without them. */
#define SHUTDOWN_GRACE_USEC 5000000
static int64_t shutdown_started;
/* WAIT_FOR_CLIENTS (SIGTERM): exit when the last client has left; else
 * WAIT_FOR_SERVERS (SIGINT): when no client is in a transaction. */
static bool shutdown_for_clients;

/* WAIT_FOR_SERVERS: counts the clients in a transaction (or logging in,
 * during the grace period) and closes those between transactions. Sets
 * *logging_in. */
static int shutdown_busy_clients(int64_t now, int *logging_in)
{
    bool grace = now - shutdown_started < SHUTDOWN_GRACE_USEC;
    int busy = 0;
    *logging_in = 0;
    struct list *it, *tmp;
    for (int i = 0; i < n_workers; i++)
        list_for_each_safe(it, tmp, &workers[i].clients)
        {
            struct client *c = list_entry(it, struct client, node);
            if (c->is_admin)
                continue;
            switch (client_state_of(c)) {
            case CL_ACTIVE:
                /* A client pinned to its server (a temporary table, an
                 * advisory lock...) stays linked between transactions: it
                 * goes as an idle client does, or the shutdown waited for
                 * it forever (chaos sigint_restart). */
                if (c->pinned && c->server && server_is_clean(c->server) && !request_busy(c)) {
                    client_close_error(c, SQLSTATE_ADMIN_SHUTDOWN, "pooler is shutting down");
                    break;
                }
                busy++;
                break;
            case CL_WAITING:
            case CL_ASSIGNED:
                busy++;
                break;
            case CL_IDLE:
                /* Done with a transaction: close now, so that a long-lived
                 * client reconnects (to the new process of a restart) between
                 * two transactions rather than keeping this one alive. One that
                 * has not run any yet is waited for. */
                if (c->requested)
                    client_close_error(c, SQLSTATE_ADMIN_SHUTDOWN, "pooler is shutting down");
                else if (grace)
                    busy++;
                break;
            case CL_CLOSING:
            case CL_CLOSED:
                break;
            default:
                if (grace) {
                    (*logging_in)++;
                    busy++;
                }
                break;
            }
        }
    return busy;
}

/* WAIT_FOR_CLIENTS: the clients still connected (console clients aside). */
static int shutdown_clients_left(void)
{
    int n = 0;
    struct list *it, *tmp;
    for (int i = 0; i < n_workers; i++)
        list_for_each_safe(it, tmp, &workers[i].clients)
        {
            const struct client *c = list_entry(it, struct client, node);
            if (!c->is_admin && client_state_of(c) != CL_CLOSED)
                n++;
        }
    return n;
}

static void shutdown_check_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    int64_t now = worker_now(&main_worker);
    worker_world_lock();
    if (shutdown_for_clients) {
        int left = shutdown_clients_left();
        worker_world_unlock();
        if (left == 0) {
            log_info("no client left, exiting");
            begin_exit();
        }
        return;
    }
    int logging_in;
    int busy = shutdown_busy_clients(now, &logging_in);
    /* Logins are refused (client.c) only once none is under way: no new
     * client can appear any more, the listeners are closed. */
    if (logging_in == 0)
        g_pooler.shutting_down = true;
    worker_world_unlock();
    if (busy == 0) {
        log_info("no transactions left, exiting");
        begin_exit();
    }
}

/* A shutdown that waits (SIGINT, SIGTERM, the console's SHUTDOWN
 * WAIT_FOR_*): stop accepting but on the Unix socket (console logins only,
 * client_login.c), then exit once no client is in a transaction
 * (wait_for_clients false), or once every client has left (true). With
 * so_reuseport this is a zero-downtime restart: a new sluice listens beside
 * this one, worker_stop_listening() takes the connections already queued
 * here, and the clients this process accepted are served until they finish
 * a transaction (see shutdown_busy_clients), respectively until they leave,
 * so none of them sees a failure. Called again during a shutdown, switches
 * it to the mode given. */
static void start_graceful_shutdown(bool wait_for_clients)
{
    shutdown_for_clients = wait_for_clients;
    if (shutdown_started)
        return;
    shutdown_started = worker_now(&main_worker);
    notify_stopping(wait_for_clients ? "shutting down, waiting for the clients to leave"
                                     : "shutting down, waiting for the transactions to end");
    if (g_pooler.cfg->so_reuseport) {
        /* Handshakes under way when the listener closes are reset unless
         * the kernel may move them to the new process's listener. */
        FILE *f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r");
        if (f) {
            if (fgetc(f) == '0')
                log_warning("net.ipv4.tcp_migrate_req is 0: connections being set up as the "
                            "listener closes will be reset (see docs/monitoring.md)");
            fclose(f);
        }
    }
    /* The console may call this from another worker's thread: the main
     * loop's timer is started under the world lock too. */
    worker_world_lock();
    g_pooler.stopping = true;
    for (int i = 0; i < n_workers; i++)
        worker_stop_listening(&workers[i], true);
    ev_timer_init(&shutdown_timer, shutdown_check_cb, 0.0, 0.05);
    ev_timer_start(main_loop, &shutdown_timer);
    worker_world_unlock();
}

/* SIGINT and SIGTERM as in PgBouncer 1.23: the first starts a shutdown
 * that waits (SIGINT: for the servers to be released, SIGTERM: for the
 * clients to leave); another one during any shutdown exits at once. */
static void signal_shutdown(int signum)
{
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (g_pooler.stopping) {
        log_info("got %s while shutting down, fast exit", name);
        begin_exit();
        return;
    }
    if (signum == SIGINT)
        log_info("got SIGINT, shutting down, waiting for all servers connections to be released");
    else
        log_info("got SIGTERM, shutting down, waiting for all clients disconnect");
    start_graceful_shutdown(signum == SIGTERM);
}

static void signal_resume(void)
{
    if (g_pooler.stopping) {
        log_info("got SIGUSR2 while shutting down, ignoring");
        return;
    }
    log_info("got SIGUSR2, resuming");
    g_pooler.paused = false;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        pool_dispatch(list_entry(it, struct pool, node));
    }
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    char err[1024];
    /* Each changes shared state: every other loop waits meanwhile. */
    worker_world_lock();
    switch (w->signum) {
    case SIGHUP:
        log_info("got SIGHUP, reloading config");
        notified_reload(err, sizeof(err));
        log_reopen();
        break;
    case SIGINT:
    case SIGTERM:
        signal_shutdown(w->signum);
        break;
    case SIGQUIT:
        log_info("got SIGQUIT, fast exit");
        begin_exit();
        break;
    case SIGUSR1:
        log_info("got SIGUSR1, pausing all databases");
        g_pooler.paused = true;
        break;
    case SIGUSR2:
        signal_resume();
        break;
    }
    worker_world_unlock();
}

static void write_pidfile(const char *path)
{
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "w");
    if (!f) {
        log_error("could not write pidfile %s: %s", path, strerror(errno));
        exit(1);
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    pidfile_written = strdup(path);
}

static void daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0)
        log_fatal("fork failed: %s", strerror(errno));
    if (pid > 0)
        _exit(0);
    setsid();
    pid = fork();
    if (pid < 0)
        log_fatal("fork failed: %s", strerror(errno));
    if (pid > 0)
        _exit(0);
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
}

/* What the command line asks for. */
struct main_options {
    bool daemon_mode;        /* -d */
    bool check;              /* -C: check the config, then exit */
    bool quiet;              /* -q */
    int verbose;             /* one per -v */
    const char *run_as;      /* -u USER, or NULL */
    const char *config_path; /* the one argument */
};

/* Parses the command line into *o. Returns -1 to go on, or the exit status
 * once there is nothing more to do (--version, --help, a usage error). */
static int main_parse_args(int argc, char **argv, struct main_options *o)
{
    static const struct option longopts[] = {{"daemon", no_argument, NULL, 'd'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {"version", no_argument, NULL, 'V'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"user", required_argument, NULL, 'u'},
                                             {"reboot", no_argument, NULL, 'R'},
                                             {"check", no_argument, NULL, 'C'},
                                             {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    int opt;
    while ((opt = getopt_long(argc, argv, "dqvVhu:RC", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            o->daemon_mode = true;
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'v':
            o->verbose++;
            break;
        case 'V':
            printf("sluice %s\n", SLUICE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case 'u':
            o->run_as = optarg;
            break;
        case 'C':
            o->check = true;
            break;
        case 'R':
            /* PgBouncer deprecated its online restart (1.20); sluice never
             * had one. Refused before anything starts, naming the way. */
            fprintf(stderr,
                    "sluice: -R/--reboot (online restart) is not supported: it is deprecated in "
                    "PgBouncer.\nRestart without dropping clients with so_reuseport instead: "
                    "start the new sluice on the same port with so_reuseport = 1, then stop the "
                    "old one with SIGTERM (or SHUTDOWN WAIT_FOR_CLIENTS); see docs/admin.md.\n");
            return 1;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "sluice: need exactly one config file\n\n");
        usage(stderr);
        return 1;
    }
    o->config_path = argv[optind];
    return -1;
}

/* Loads the config and its auth_file, builds the TLS contexts and opens the
 * log, all before privileges are dropped: key files are often root's.
 * false after saying why on stderr (nothing is running yet to clean up). */
static bool main_load_config(const struct main_options *o, struct config **cfgp,
                             struct auth_userlist **ulp)
{
    char err[1024];
    struct config *cfg;
    struct auth_userlist *ul;
    struct config_problems problems = {0};
    if (!config_check_load(o->config_path, &cfg, &ul, &problems)) {
        for (int i = 0; i < problems.n; i++)
            fprintf(stderr, "sluice: %s\n", problems.msgs[i]);
        config_problems_free(&problems);
        return false;
    }
    if (cfg->verbose > o->verbose)
        log_set_verbosity(cfg->verbose);
    if (!tracked_params_configure(cfg->track_extra_parameters, err, sizeof(err))) {
        fprintf(stderr, "sluice: %s: %s\n", cfg->path, err);
        config_unref(cfg);
        return false;
    }
    if (!tls_apply_config(cfg, err, sizeof(err))) {
        fprintf(stderr, "sluice: %s\n", err);
        return false;
    }
    if (!log_open(cfg->logfile, cfg->syslog, cfg->syslog_ident, cfg->syslog_facility)) {
        fprintf(stderr, "sluice: could not open logfile %s: %s\n", cfg->logfile, strerror(errno));
        return false;
    }
    *cfgp = cfg;
    *ulp = ul;
    return true;
}

/* -u USER, else the config's user: becomes that user. false after saying
 * why on stderr. */
static bool main_become_user(const char *run_as, const struct config *cfg)
{
    if (!run_as && !cfg->user[0])
        return true;
    const char *name = run_as ? run_as : cfg->user;
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        fprintf(stderr, "sluice: unknown user %s\n", name);
        return false;
    }
    if (setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        fprintf(stderr, "sluice: could not become user %s: %s\n", name, strerror(errno));
        return false;
    }
    return true;
}

/* Lets the file descriptor limit follow max_client_conn where allowed. */
static void main_raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t want = (rlim_t)cfg->max_client_conn * 2 + 100;
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void main_janitor(struct worker *w)
{
    client_janitor(w);
    pool_janitor(w);
}

static void main_reap(struct worker *w)
{
    client_reap_all(w);
    server_reap_all(w);
}

static void main_close_all(struct worker *w)
{
    client_close_all(w);
    server_cancel_free_all(w);
    peers_close_worker(w);
}

static void main_thread_done(void)
{
    pool_thread_done();
    request_thread_done();
    router_thread_done();
    cache_thread_done();
}

/* Connects the layers: what pool.c decides is carried out by servers and
 * clients; login lets admin console clients in through the console's
 * hooks; per-feature client state is freed by its module. */
static bool main_wire_modules(void)
{
    static const struct pool_ops pool_ops = {
        .new_server = server_alloc,
        .start_server = server_start,
        .check_server = server_check,
        .reset_server = server_reset,
        .close_server = server_close,
        .free_server = server_reap,
        .link = client_link,
        .unlinked = client_unlinked,
        .reroute = client_reroute,
        .probe_server = replica_check_run,
        .lookup_server = replica_check_lookup,
        .welcome = client_welcome,
        .fail = client_fail,
        .notice = client_notice,
        .free_client = client_reap,
    };
    static const struct client_console console = {
        .is_console_db = admin_is_admin_db,
        .check_user = admin_check_user,
        .welcome = admin_welcome,
        .handle = admin_handle,
    };
    static const struct worker_ops worker_ops = {
        .accept = client_accept,
        .janitor = main_janitor,
        .inbox_item = pool_inbox_item,
        .kick = pool_inbox_kick,
        .outgoing_item = pool_outgoing_item,
        .reap = main_reap,
        .close_all = main_close_all,
        .thread_done = main_thread_done,
    };
    worker_set_ops(&worker_ops);
    pool_set_ops(&pool_ops);
    client_login_init(&console);
    /* Observers of requests, in the order they see a client's message:
     * LISTEN answers its own, prepared statements rewrite the rest. */
    listen_init();
    /* The cache reads statements as the client wrote them, before
     * prepared.c renames them. */
    char err[512];
    if (!cache_init(g_pooler.cfg, err, sizeof(err))) {
        log_error("%s", err);
        return false;
    }
    /* Insights too (a Bind names the client's statement). */
    if (!insights_init(g_pooler.cfg, err, sizeof(err))) {
        log_error("%s", err);
        return false;
    }
    prepared_init();
    request_stats_init();
    router_init();
    client_add_free_hook(request_client_free);
    client_add_free_hook(router_client_free);
    client_add_free_hook(cache_client_free);
    client_add_free_hook(admin_client_closed);
    return true;
}

/* Makes the event loops (worker 0's is the default loop, on this thread)
 * and the workers, and opens their listeners. The threads start later,
 * once the loops are complete. false after saying why. */
static bool main_init_workers(struct config *cfg)
{
    main_loop = ev_default_loop(EVFLAG_AUTO);
    if (!main_loop) {
        fprintf(stderr, "sluice: could not initialise the event loop\n");
        return false;
    }
    n_workers = cfg->workers > 0 ? cfg->workers : 1;
    workers = calloc((size_t)n_workers, sizeof(*workers));
    if (!workers)
        abort();
    for (int i = 0; i < n_workers; i++) {
        struct ev_loop *loop = i == 0 ? main_loop : ev_loop_new(EVFLAG_AUTO);
        if (!loop) {
            fprintf(stderr, "sluice: could not initialise an event loop\n");
            return false;
        }
        worker_init(&workers[i], i, loop, cfg);
    }
    g_pooler.workers = workers;
    g_pooler.n_workers = n_workers;
    char err[1024];
    for (int i = 0; i < n_workers; i++) {
        if (!worker_listen(&workers[i], n_workers, err, sizeof(err))) {
            log_error("%s", err);
            return false;
        }
    }
    return true;
}

/* -d: goes to the background (the loops are told about the fork); then the
 * pidfile gets the pid that stays. */
static void main_detach(bool daemon_mode, const struct config *cfg)
{
    if (daemon_mode) {
        log_set_quiet(true);
        daemonize();
        for (int i = 0; i < n_workers; i++)
            ev_loop_fork(workers[i].loop);
    }
    write_pidfile(cfg->pidfile);
}

/* What runs on the main loop besides worker 0's connections: the admin
 * console's hooks and timers, the metrics endpoint, the signal watchers and
 * the stats line. false (logged) if the metrics endpoint cannot listen. */
static bool main_start_services(const struct config *cfg)
{
    char err[1024];
    admin_reload_hook = notified_reload;
    admin_shutdown_hook = start_graceful_shutdown;
    admin_apply_config_hook = apply_admin_setting;
    admin_init(&main_worker);
    if (!metrics_start(&main_worker, g_pooler.workers, g_pooler.n_workers, err, sizeof(err))) {
        log_error("%s", err);
        return false;
    }

    ev_signal_init(&sig_hup, signal_cb, SIGHUP);
    ev_signal_init(&sig_int, signal_cb, SIGINT);
    ev_signal_init(&sig_term, signal_cb, SIGTERM);
    ev_signal_init(&sig_quit, signal_cb, SIGQUIT);
    ev_signal_init(&sig_usr1, signal_cb, SIGUSR1);
    ev_signal_init(&sig_usr2, signal_cb, SIGUSR2);
    ev_signal_start(main_loop, &sig_hup);
    ev_signal_start(main_loop, &sig_int);
    ev_signal_start(main_loop, &sig_term);
    ev_signal_start(main_loop, &sig_quit);
    ev_signal_start(main_loop, &sig_usr1);
    ev_signal_start(main_loop, &sig_usr2);
    if (cfg->stats_period > 0) {
        double period = (double)cfg->stats_period / 1e6;
        ev_timer_init(&stats_timer, stats_cb, period, period);
        ev_timer_start(main_loop, &stats_timer);
    }
    stats_prev_time = worker_now(&main_worker);
    return true;
}

/* After the main loop ended: stops the other workers' threads, then closes
 * every connection and frees what the modules keep, connections before the
 * pools they belong to and pools before the workers. */
static void main_shutdown(void)
{
    log_info("shutting down");
    notify_stopping("shutting down");
    worker_stop_threads(workers, n_workers);
    g_pooler.locking = false;
    metrics_stop();
    for (int i = 0; i < n_workers; i++)
        worker_drain(&workers[i]);
    listen_shutdown();
    lag_monitor_stop();
    insights_advice_stop();
    jobs_stop();
    cache_logical_stop();
    for (int i = 0; i < n_workers; i++)
        worker_close_all(&workers[i]);
    pool_free_all();
    peers_free_all();
    request_thread_done();
    router_thread_done();
    for (int i = 0; i < n_workers; i++)
        worker_destroy(&workers[i]);
    admin_free_all();
    tls_shutdown();
    dns_shutdown();
    if (g_pooler.userlist)
        auth_userlist_free(g_pooler.userlist);
    config_unref(g_pooler.cfg);
    g_pooler.cfg = NULL;
    cache_shutdown();
    param_intern_free_all();
    if (pidfile_written) {
        unlink(pidfile_written);
        free(pidfile_written);
    }
    for (int i = 1; i < n_workers; i++)
        ev_loop_destroy(workers[i].loop);
    ev_loop_destroy(main_loop);
    free(workers);
    log_close();
}

/* -C: the start's and RELOAD's check alone, each problem on stderr as
 * "FILE:LINE: reason"; nothing is bound, connected or written. */
static int main_check(const char *path)
{
    struct config *cfg;
    struct auth_userlist *ul;
    struct config_problems problems = {0};
    if (!config_check_load(path, &cfg, &ul, &problems)) {
        for (int i = 0; i < problems.n; i++)
            fprintf(stderr, "%s\n", problems.msgs[i]);
        fprintf(stderr, "%s: %d problem%s\n", path, problems.n, problems.n == 1 ? "" : "s");
        config_problems_free(&problems);
        return 1;
    }
    auth_userlist_free(ul);
    config_unref(cfg);
    printf("%s: OK\n", path);
    return 0;
}

int main(int argc, char **argv)
{
    struct main_options o;
    int status = main_parse_args(argc, argv, &o);
    if (status >= 0)
        return status;
    log_set_quiet(o.quiet);
    log_set_verbosity(o.verbose);
    if (o.check)
        return main_check(o.config_path);

    struct config *cfg;
    struct auth_userlist *ul;
    if (!main_load_config(&o, &cfg, &ul) || !main_become_user(o.run_as, cfg))
        return 1;
    main_raise_fd_limit(cfg);

    g_pooler.cfg = cfg;
    g_pooler.userlist = ul;
    list_init(&g_pooler.databases);
    list_init(&g_pooler.users);
    list_init(&g_pooler.pools);
    signal(SIGPIPE, SIG_IGN);

    if (!main_wire_modules() || !main_init_workers(cfg))
        return 1;
    char cerr[512];
    if (!cache_start(cfg, workers, n_workers, cerr, sizeof(cerr))) {
        log_error("cache = %s: %s", cfg->cache, cerr);
        return 1;
    }
    main_detach(o.daemon_mode, cfg);
    if (!main_start_services(cfg))
        return 1;

    log_info("sluice %s starting: listening on %s:%d, pool_mode=%s, auth_type=%s, workers=%d",
             SLUICE_VERSION, cfg->listen_addr, cfg->listen_port, pool_mode_str(cfg->pool_mode),
             auth_type_str(cfg->auth_type), n_workers);
    char err[1024];
    /* With more than one loop, the pools are shared: their lock is live
     * from before the first thread runs. */
    g_pooler.locking = n_workers > 1;
    lag_monitor_start();
    insights_advice_start();
    jobs_start();
    cache_logical_start();
    if (!worker_start_threads(workers, n_workers, err, sizeof(err))) {
        log_error("%s", err);
        return 1;
    }
    char ready[256];
    snprintf(ready, sizeof(ready), "serving, listening on %s:%d", cfg->listen_addr,
             cfg->listen_port);
    notify_ready(ready);
    ev_run(main_loop, 0);

    main_shutdown();
    return 0;
}
