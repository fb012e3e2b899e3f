/* admin_show_pools.c - the console's SHOW commands about pools and
 * connections: POOLS (and admin_pools_each() for metrics.c), CLIENTS,
 * SERVERS, SOCKETS, ACTIVE_SOCKETS and USERS. Values are read from the live structures (g_pooler,
 * the workers' client lists) at the time of the command. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "admin.h"
#include "admin_int.h"
#include "client_conn.h"
#include "conn.h"
#include "iobuf.h"
#include "pool.h"
#include "prepared.h"
#include "replicas.h"
#include "replication.h"
#include "tls.h"
#include "worker.h"

/* ---- formatting ---------------------------------------------------------- */

/* Loop-clock microseconds as "YYYY-MM-DD HH:MM:SS TZ", the way PgBouncer
 * prints connect_time. wall_offset converts the loop clock to the wall
 * clock (they are the same clock with libev, but nothing here relies on it). */
static void fmt_time(char *buf, size_t len, int64_t usec, int64_t wall_offset)
{
    time_t t = (time_t)((usec + wall_offset) / 1000000);
    struct tm tm;
    if (!localtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
        snprintf(buf, len, "%lld", (long long)t);
}

/* Address and port of a socket address ("unix" for a Unix socket). */
static void fmt_sockaddr(const struct sockaddr_storage *ss, char *addr, size_t len, int *port)
{
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)len);
        *port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)len);
        *port = ntohs(in6->sin6_port);
    } else if (ss->ss_family == AF_UNIX) {
        snprintf(addr, len, "unix");
        *port = g_pooler.cfg ? g_pooler.cfg->listen_port : 0;
    } else {
        snprintf(addr, len, "%s", "");
    }
}

static void fmt_local(int fd, char *addr, size_t len, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        ss.ss_family = AF_UNSPEC;
    fmt_sockaddr(&ss, addr, len, port);
}

/* ---- SHOW POOLS ---------------------------------------------------------- */

struct pool_row {
    const char *db, *user;
    const struct admin_pool_ix *e; /* NULL for the console */
};

static int pool_row_cmp(const void *a, const void *b)
{
    const struct pool_row *x = a, *y = b;
    int c = strcmp(x->db, y->db);
    if (!c)
        c = strcmp(x->user, y->user);
    if (!c) /* a database's endpoints: the primary first */
        c = (x->e ? x->e->p->ep : 0) - (y->e ? y->e->p->ep : 0);
    return c;
}

/* Does sv, idle, need server_check_query before its next use? */
static bool idle_needs_check(const struct server *sv, int64_t now)
{
    const struct config *cfg = g_pooler.cfg;
    if (!cfg->server_check_query[0])
        return false;
    return now - sv->last_used >= cfg->server_check_delay && now != sv->last_used;
}

/* The figures of SHOW POOLS for entry e (NULL: the console's row). */
static void pool_view(const struct admin_pool_ix *e, const struct admin_pool_index *ix, int64_t now,
                      struct admin_pool_view *v)
{
    memset(v, 0, sizeof(*v));
    if (!e) {
        v->database = v->user = "pgbouncer";
        v->cl_active = ix->admin_clients;
        return;
    }
    const struct pool *p = e->p;
    v->pool = p;
    v->database = p->db->name;
    v->user = p->user->name;
    const struct endpoint *ep = &p->db->endpoints[p->ep];
    int primary = replicas_primary(p->db);
    if (p->ep != 0)
        snprintf(v->endpoint, sizeof(v->endpoint), "%s:%d", ep->host, ep->port);
    else if (p->db->n_hosts == 0 || !replicas_discovers(p->db, g_pooler.cfg))
        snprintf(v->endpoint, sizeof(v->endpoint), "primary");
    else if (primary < 0)
        snprintf(v->endpoint, sizeof(v->endpoint), "primary (none)");
    else /* several hosts: the one that is the primary now */
        snprintf(v->endpoint, sizeof(v->endpoint), "primary (%s:%d)",
                 p->db->endpoints[primary].host, p->db->endpoints[primary].port);
    v->cl_active = e->cl_active;
    v->cl_waiting = e->cl_waiting;
    v->sv_active = p->n_active;
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &p->idle)
    {
        if (idle_needs_check(list_entry(it, struct server, node), now))
            v->sv_used++;
        else
            v->sv_idle++;
    }
    list_for_each_safe(it, tmp, &p->busy)
    {
        switch (server_state_of(list_entry(it, struct server, node))) {
        case SV_TESTING:
        case SV_RESETTING:
            v->sv_tested++;
            break;
        case SV_CANCEL_WAIT:
            v->sv_canceled++;
            break;
        default:
            v->sv_login++;
            break;
        }
    }
    if (!list_empty(&p->waiting)) {
        const struct client *c = list_entry(list_first(&p->waiting), struct client, wait_node);
        v->maxwait_usec = now - c->request_time;
        if (v->maxwait_usec < 0)
            v->maxwait_usec = 0;
    }
}

/* Calls fn for every pool in SHOW POOLS order (by database, then user),
 * the console's row included when console is true. */
static void pools_walk(int64_t now, bool console,
                       void (*fn)(const struct admin_pool_view *v, void *arg), void *arg)
{
    struct admin_pool_index ix;
    admin_pool_index_build(&ix);
    struct pool_row *rows = calloc((size_t)ix.n + 1, sizeof(*rows));
    if (!rows)
        abort();
    int n = 0;
    for (int i = 0; i < ix.n; i++)
        rows[n++] = (struct pool_row){ix.v[i].p->db->name, ix.v[i].p->user->name, &ix.v[i]};
    if (console)
        rows[n++] = (struct pool_row){"pgbouncer", "pgbouncer", NULL};
    qsort(rows, (size_t)n, sizeof(*rows), pool_row_cmp);
    for (int i = 0; i < n; i++) {
        struct admin_pool_view v;
        pool_view(rows[i].e, &ix, now, &v);
        fn(&v, arg);
    }
    free(rows);
    admin_pool_index_free(&ix);
}

void admin_pools_each(int64_t now, void (*fn)(const struct admin_pool_view *v, void *arg),
                      void *arg)
{
    pools_walk(now, false, fn, arg);
}

/* load_balance_hosts of p's database when it spreads endpoint 0's
 * connections over several hosts (read_write_split off), else NULL. */
static const char *lb_hosts(const struct pool *p)
{
    if (!p || p->ep != 0 || !p->db->cfg || p->db->n_hosts == 0 ||
        replicas_discovers(p->db, g_pooler.cfg))
        return NULL;
    return p->db->cfg->load_balance_hosts[0] ? p->db->cfg->load_balance_hosts : "round-robin";
}

static void pool_show_row(const struct admin_pool_view *pv, void *arg)
{
    struct admin_result *r = arg;
    char f[13][ADMIN_NUM_LEN];
    const struct pool *p = pv->pool;
    const char *mode = "statement"; /* the console, as PgBouncer describes its own */
    if (p)
        mode = p->db->cfg ? pool_mode_str(pool_mode_of(p)) : NULL;
    const char *v[] = {pv->database,
                       pv->user,
                       admin_num4(f[0], pv->cl_active),
                       admin_num4(f[1], pv->cl_waiting),
                       "0",
                       "0",
                       admin_num4(f[2], pv->sv_active),
                       "0",
                       admin_num4(f[3], pv->sv_canceled),
                       admin_num4(f[4], pv->sv_idle),
                       admin_num4(f[5], pv->sv_used),
                       admin_num4(f[6], pv->sv_tested),
                       admin_num4(f[7], pv->sv_login),
                       admin_num4(f[8], pv->maxwait_usec / 1000000),
                       admin_num4(f[9], pv->maxwait_usec % 1000000),
                       mode,
                       lb_hosts(p),
                       p ? pv->endpoint : "primary"};
    admin_result_row(r, v);
}

void admin_show_pools(struct admin_result *r)
{
    pools_walk(admin_loop_now(r), true, pool_show_row, r);
}

/* ---- SHOW CLIENTS and SHOW SERVERS --------------------------------------- */

/* SHOW CLIENTS/SERVERS, or SHOW SOCKETS (every socket, with the columns
 * of its buffers and PgBouncer's list names as states) or ACTIVE_SOCKETS
 * (only those with bytes buffered). */
enum conn_show {
    CONN_SHOW_PLAIN = 0,   /* SHOW CLIENTS, SHOW SERVERS */
    CONN_SHOW_SOCKETS,     /* SHOW SOCKETS */
    CONN_SHOW_ACTIVE_ONLY, /* SHOW ACTIVE_SOCKETS */
};

struct conn_ctx {
    struct admin_result *r;
    int64_t now, wall_offset;
    enum conn_show mode;
};

#define CONN_NCOLS   21 /* SHOW CLIENTS and SHOW SERVERS */
#define SOCKET_NCOLS 7  /* what SHOW SOCKETS adds */

/* The columns SHOW SOCKETS adds, from s's buffers (sluice's stand-ins for
 * PgBouncer's sbuf positions): recv_pos, pkt_pos (end and start of the
 * bytes read and not yet handled), pkt_remain (bytes of the message being
 * passed through still to come from the socket), send_pos, send_remain
 * (bytes of the output buffer already sent, and queued to send), pkt_avail
 * (bytes read, not yet handled), send_avail (bytes of the current message
 * still to be forwarded to the peer). True if anything is buffered or under
 * way (a row of ACTIVE_SOCKETS). */
static bool socket_cols(const struct stream *s, char f[SOCKET_NCOLS][ADMIN_NUM_LEN], const char **v)
{
    long long recv_pos = 0, pkt_pos = 0, send_pos = 0, send_remain = 0;
    if (s->rbuf) {
        recv_pos = s->rbuf->end;
        pkt_pos = s->rbuf->start;
    }
    if (s->obuf) {
        send_pos = s->obuf->start;
        send_remain = (long long)s->obuf->end - s->obuf->start;
    }
    long long pkt_avail = recv_pos - pkt_pos;
    long long send_avail = s->skip_forward ? s->skip : 0;
    v[0] = admin_num4(f[0], recv_pos);
    v[1] = admin_num4(f[1], pkt_pos);
    v[2] = admin_num4(f[2], s->skip);
    v[3] = admin_num4(f[3], send_pos);
    v[4] = admin_num4(f[4], send_remain);
    v[5] = admin_num4(f[5], pkt_avail);
    v[6] = admin_num4(f[6], send_avail);
    return pkt_avail > 0 || send_remain > 0 || s->skip > 0;
}

/* PgBouncer's list names, SHOW SOCKETS's states. */
static const char *client_socket_state(const struct client *c)
{
    if (c->is_admin)
        return "cl_active";
    switch (client_state_of(c)) {
    case CL_IDLE:
    case CL_ACTIVE:
        return "cl_active";
    case CL_WAITING:
    case CL_ASSIGNED:
        return "cl_waiting";
    default:
        return "cl_login";
    }
}

static const char *client_state_name(const struct client *c, const struct admin_result *r)
{
    if (c->is_admin)
        return c == r->self || admin_client_busy(c) ? "active" : "idle";
    switch (client_state_of(c)) {
    case CL_IDLE:
        return "idle";
    case CL_WAITING:
    case CL_ASSIGNED: /* its server is on the way: PgBouncer's waiting */
        return "waiting";
    case CL_ACTIVE:
        return "active";
    default:
        return "login";
    }
}

static void client_row(struct client *c, void *arg)
{
    struct conn_ctx *x = arg;
    bool sockets = x->mode != CONN_SHOW_PLAIN;
    if (!sockets && (c->state == CL_STARTUP || !c->user))
        return; /* not yet a client of any database */
    const char *v[CONN_NCOLS + SOCKET_NCOLS];
    char sf[SOCKET_NCOLS][ADMIN_NUM_LEN];
    if (sockets && !socket_cols(&c->s, sf, v + CONN_NCOLS) && x->mode == CONN_SHOW_ACTIVE_ONLY)
        return;
    char addr[64], laddr[64], ptr[32], link[32], ctime[64], rtime[64];
    char f[8][ADMIN_NUM_LEN];
    int lport = 0;
    client_addr_str(c, addr, sizeof(addr));
    int port = c->is_unix ? (g_pooler.cfg ? g_pooler.cfg->listen_port : 0) : client_port(c);
    fmt_local(c->s.fd, laddr, sizeof(laddr), &lport);
    snprintf(ptr, sizeof(ptr), "%p", (void *)c);
    if (c->server)
        snprintf(link, sizeof(link), "%p", (void *)c->server);
    else
        link[0] = '\0';
    fmt_time(ctime, sizeof(ctime), c->connect_time, x->wall_offset);
    fmt_time(rtime, sizeof(rtime), c->request_time ? c->request_time : c->connect_time,
             x->wall_offset);
    int64_t wait = 0;
    if (c->state == CL_WAITING || c->state == CL_ASSIGNED || c->state == CL_LOGIN_WAIT)
        wait = x->now - c->request_time;
    if (wait < 0)
        wait = 0;
    long long remote_pid = 0;
    if (c->is_unix) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(c->s.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            remote_pid = cred.pid;
    }
    const char *app = c->params.v[TP_APPLICATION_NAME];
    char tls[128];
    tls_describe(&c->s, tls, sizeof(tls));
    const char *cv[CONN_NCOLS] = {"C",
                                  c->user ? c->user : "(nouser)",
                                  c->dbname ? c->dbname : (sockets ? "(nodb)" : ""),
                                  replication_mode_str(c->replication),
                                  sockets ? client_socket_state(c) : client_state_name(c, x->r),
                                  addr,
                                  admin_num4(f[0], port),
                                  laddr,
                                  admin_num4(f[1], lport),
                                  ctime,
                                  rtime,
                                  admin_num4(f[2], wait / 1000000),
                                  admin_num4(f[3], wait % 1000000),
                                  "0",
                                  ptr,
                                  link,
                                  admin_num4(f[4], remote_pid),
                                  tls,
                                  app ? app : "",
                                  "0",
                                  admin_unum(f[5], c->id)};
    memcpy(v, cv, sizeof(cv));
    admin_result_row(x->r, v);
}

void admin_show_clients(struct admin_result *r)
{
    struct conn_ctx x = {r, admin_loop_now(r), now_wall_usec() - admin_loop_now(r),
                         CONN_SHOW_PLAIN};
    admin_each_client(client_row, &x);
}

/* A server's state as SHOW SERVERS says it ([0]) and as SHOW SOCKETS does,
 * in PgBouncer's list names ([1]). */
static const char *server_state_name(const struct server *sv, int64_t now, bool socket)
{
    static const char *const names[][2] = {
        {"active", "sv_active"},
        {"used", "sv_used"},
        {"idle", "sv_idle"},
        {"tested", "sv_tested"},
        {"being_canceled", "sv_being_canceled"},
        {"new", "sv_login"},
    };
    int i;
    switch (server_state_of(sv)) {
    case SV_ACTIVE:
    case SV_SETTING:
    case SV_ASSIGNED:
        i = 0;
        break;
    case SV_IDLE:
        i = idle_needs_check(sv, now) ? 1 : 2;
        break;
    case SV_TESTING:
    case SV_RESETTING:
        i = 3;
        break;
    case SV_CANCEL_WAIT:
        i = 4;
        break;
    default:
        i = 5;
        break;
    }
    return names[i][socket];
}

static void server_row(const struct server *sv, const struct conn_ctx *x)
{
    const char *v[CONN_NCOLS + SOCKET_NCOLS];
    char sf[SOCKET_NCOLS][ADMIN_NUM_LEN];
    bool sockets = x->mode != CONN_SHOW_PLAIN;
    if (sockets && !socket_cols(&sv->s, sf, v + CONN_NCOLS) && x->mode == CONN_SHOW_ACTIVE_ONLY)
        return;
    const struct pool *p = sv->pool;
    char addr[128], laddr[64], ptr[32], link[32], ctime[64], rtime[64];
    char f[8][ADMIN_NUM_LEN];
    int port = 0, lport = 0;
    /* Endpoint 0 of a database with several hosts: the host it was made
     * for (the pool's address is the one resolved last). */
    bool host = p->ep == 0 && p->db->n_hosts > 0 && sv->target > 0;
    const struct endpoint *ep = &p->db->endpoints[host ? sv->target : p->ep];
    if (p->addr_ok && !host) {
        fmt_sockaddr(&p->addr, addr, sizeof(addr), &port);
        if (p->addr.ss_family == AF_UNIX)
            port = ep->port;
    } else {
        snprintf(addr, sizeof(addr), "%s", ep->host ? ep->host : "");
        port = ep->port;
    }
    fmt_local(sv->s.fd, laddr, sizeof(laddr), &lport);
    snprintf(ptr, sizeof(ptr), "%p", (const void *)sv);
    if (sv->client)
        snprintf(link, sizeof(link), "%p", (void *)sv->client);
    else
        link[0] = '\0';
    fmt_time(ctime, sizeof(ctime), sv->connect_time, x->wall_offset);
    fmt_time(rtime, sizeof(rtime), sv->request_time ? sv->request_time : sv->connect_time,
             x->wall_offset);
    const char *app = sv->client ? sv->client->params.v[TP_APPLICATION_NAME] : NULL;
    char tls[128];
    tls_describe(&sv->s, tls, sizeof(tls));
    const char *cv[CONN_NCOLS] = {"S",
                                  p->user->name,
                                  p->db->name,
                                  replication_mode_str(sv->replication),
                                  server_state_name(sv, x->now, sockets),
                                  addr,
                                  admin_num4(f[0], port),
                                  laddr,
                                  admin_num4(f[1], lport),
                                  ctime,
                                  rtime,
                                  "0",
                                  "0",
                                  sv->close_needed ? "1" : "0",
                                  ptr,
                                  link,
                                  admin_num4(f[2], sv->backend_pid),
                                  tls,
                                  app ? app : "",
                                  admin_num4(f[4], prepared_set_count(sv->ps)),
                                  admin_unum(f[3], sv->id)};
    memcpy(v, cv, sizeof(cv));
    admin_result_row(x->r, v);
}

static bool server_row_each(struct server *sv, void *x)
{
    server_row(sv, x);
    return false;
}

static void servers_each(struct conn_ctx *x)
{
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        pool_find_server(p, server_row_each, x);
    }
}

void admin_show_servers(struct admin_result *r)
{
    struct conn_ctx x = {r, admin_loop_now(r), now_wall_usec() - admin_loop_now(r),
                         CONN_SHOW_PLAIN};
    servers_each(&x);
}

/* ---- SHOW SOCKETS and SHOW ACTIVE_SOCKETS -------------------------------- */

static void show_sockets(struct admin_result *r, enum conn_show mode)
{
    struct conn_ctx x = {r, admin_loop_now(r), now_wall_usec() - admin_loop_now(r), mode};
    admin_each_client(client_row, &x);
    servers_each(&x);
}

void admin_show_sockets(struct admin_result *r)
{
    show_sockets(r, CONN_SHOW_SOCKETS);
}

void admin_show_active_sockets(struct admin_result *r)
{
    show_sockets(r, CONN_SHOW_ACTIVE_ONLY);
}

/* ---- SHOW USERS ---------------------------------------------------------- */

struct user_set {
    const char **names;
    int *clients;
    int n, cap;
};

static void user_set_add(struct user_set *u, const char *name)
{
    if (u->n == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 64;
        u->names = realloc(u->names, (size_t)u->cap * sizeof(*u->names));
        if (!u->names)
            abort();
    }
    u->names[u->n++] = name;
}

static int str_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void user_count_client(struct client *c, void *arg)
{
    struct user_set *u = arg;
    if (!c->user || c->is_admin)
        return;
    const char **hit = bsearch(&c->user, u->names, (size_t)u->n, sizeof(*u->names), str_ptr_cmp);
    if (hit)
        u->clients[hit - u->names]++;
}

static void user_collect_client(struct client *c, void *arg)
{
    if (c->user && !c->is_admin)
        user_set_add(arg, c->user);
}

void admin_show_users(struct admin_result *r)
{
    const struct config *cfg = g_pooler.cfg;
    struct user_set u = {0};
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.users)
    {
        user_set_add(&u, list_entry(it, struct pool_user, node)->name);
    }
    for (int i = 0; i < cfg->n_users; i++)
        user_set_add(&u, cfg->users[i].name);
    admin_each_client(user_collect_client, &u);
    if (u.n)
        qsort(u.names, (size_t)u.n, sizeof(*u.names), str_ptr_cmp);
    int n = 0;
    for (int i = 0; i < u.n; i++)
        if (n == 0 || strcmp(u.names[n - 1], u.names[i]) != 0)
            u.names[n++] = u.names[i];
    u.n = n;
    u.clients = calloc((size_t)n + 1, sizeof(int));
    if (!u.clients)
        abort();
    admin_each_client(user_count_client, &u);
    char f[4][ADMIN_NUM_LEN];
    for (int i = 0; i < u.n; i++) {
        const char *name = u.names[i];
        const struct config_user *cu = config_find_user(cfg, name);
        int servers = 0;
        list_for_each_safe(it, tmp, &g_pooler.users)
        {
            const struct pool_user *pu = list_entry(it, struct pool_user, node);
            if (strcmp(pu->name, name) == 0)
                servers = pu->n_servers;
        }
        int maxconn = cu && cu->max_user_connections >= 0 ? cu->max_user_connections
                                                          : cfg->max_user_connections;
        const char *v[] = {name,
                           "",
                           "",
                           cu && cu->pool_mode != POOL_MODE_UNSET ? pool_mode_str(cu->pool_mode)
                                                                  : NULL,
                           admin_num4(f[0], maxconn),
                           admin_num4(f[1], servers),
                           "0",
                           admin_num4(f[2], u.clients[i])};
        admin_result_row(r, v);
    }
    free(u.names);
    free(u.clients);
}
