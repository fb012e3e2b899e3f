/* admin.c - the admin console (virtual databases "pgbouncer" and "sluice"). */
#include "admin.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "client.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "version.h"
#include "worker.h"

bool (*admin_reload_hook)(char *err, size_t errlen);
void (*admin_shutdown_hook)(bool wait_for_clients);

#define OID_TEXT 25
#define OID_INT8 20
#define OID_INT4 23

bool admin_is_admin_db(const char *dbname)
{
    return strcmp(dbname, "pgbouncer") == 0 || strcmp(dbname, "sluice") == 0;
}

bool admin_check_user(struct client *c)
{
    const struct config *cfg = g_pooler.cfg;
    if (config_list_contains(cfg->admin_users, c->user))
        return true;
    if (config_list_contains(cfg->stats_users, c->user)) {
        c->admin_stats_only = true;
        return true;
    }
    client_close_error(c, SQLSTATE_INVALID_AUTH, "not allowed");
    return false;
}

void admin_welcome(struct client *c)
{
    uint8_t buf[1024];
    struct proto_writer wr;
    proto_writer_init(&wr, buf, sizeof(buf));
    proto_build_auth(&wr, PROTO_AUTH_OK, NULL, 0);
    proto_build_param_status(&wr, "server_version", SLUICE_VERSION "/sluice");
    proto_build_param_status(&wr, "client_encoding", "UTF8");
    proto_build_param_status(&wr, "server_encoding", "UTF8");
    proto_build_param_status(&wr, "DateStyle", "ISO");
    proto_build_param_status(&wr, "TimeZone", "GMT");
    proto_build_param_status(&wr, "standard_conforming_strings", "on");
    proto_build_param_status(&wr, "integer_datetimes", "on");
    proto_build_param_status(&wr, "is_superuser", "on");
    auth_random_bytes((uint8_t *)&c->cancel_pid, sizeof(c->cancel_pid));
    auth_random_bytes((uint8_t *)&c->cancel_key, sizeof(c->cancel_key));
    c->cancel_pid &= 0x7fffffff;
    proto_build_backend_key(&wr, c->cancel_pid, c->cancel_key);
    proto_build_ready(&wr, 'I');
    stream_write(&c->s, buf, wr.len);
    c->state = CL_IDLE;
    pool_cancel_register(c);
}

/* ---- result building ----------------------------------------------------- */

struct result {
    struct iobuf *out;
    struct worker *w;
    int ncols;
    int nrows;
};

static void res_msg(struct result *r, void (*build)(struct proto_writer *, const void *),
                    const void *arg, size_t need)
{
    iobuf_reserve(&r->w->bufs, &r->out, need);
    struct proto_writer wr;
    proto_writer_init(&wr, r->out->data + r->out->end, iobuf_room(r->out));
    build(&wr, arg);
    r->out->end += (uint32_t)wr.len;
}

struct cols_arg {
    int n;
    const char *const *names;
    const uint32_t *types;
};
static void build_cols(struct proto_writer *wr, const void *a)
{
    const struct cols_arg *ca = a;
    proto_build_row_description(wr, ca->n, ca->names, ca->types);
}
struct row_arg {
    int n;
    const char *const *vals;
};
static void build_row(struct proto_writer *wr, const void *a)
{
    const struct row_arg *ra = a;
    proto_build_data_row(wr, ra->n, ra->vals);
}
static void build_cc(struct proto_writer *wr, const void *a)
{
    proto_build_command_complete(wr, a);
}
static void build_err(struct proto_writer *wr, const void *a)
{
    proto_build_error(wr, false, "42601", "%s", (const char *)a);
}
static void build_notice(struct proto_writer *wr, const void *a)
{
    proto_build_notice(wr, "%s", (const char *)a);
}

static void res_cols(struct result *r, int n, const char *const *names, const uint32_t *types)
{
    struct cols_arg a = {n, names, types};
    size_t need = 8;
    for (int i = 0; i < n; i++)
        need += strlen(names[i]) + 20;
    r->ncols = n;
    res_msg(r, build_cols, &a, need);
}

static void res_row(struct result *r, const char *const *vals)
{
    struct row_arg a = {r->ncols, vals};
    size_t need = 8;
    for (int i = 0; i < r->ncols; i++)
        need += 4 + (vals[i] ? strlen(vals[i]) : 0);
    r->nrows++;
    res_msg(r, build_row, &a, need);
}

static void res_done(struct result *r, const char *tag)
{
    res_msg(r, build_cc, tag, strlen(tag) + 8);
}

/* ---- commands ------------------------------------------------------------ */

static void show_version(struct result *r)
{
    static const char *const names[] = {"version"};
    static const uint32_t types[] = {OID_TEXT};
    res_cols(r, 1, names, types);
    const char *v[] = {"sluice " SLUICE_VERSION};
    res_row(r, v);
    res_done(r, "SHOW");
}

static void show_pools(struct result *r)
{
    static const char *const names[] = {
        "database",  "user",       "cl_active", "cl_waiting",  "cl_active_cancel_req",
        "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
        "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode"};
    static const uint32_t types[] = {OID_TEXT, OID_TEXT, OID_INT4, OID_INT4, OID_INT4, OID_INT4,
                                     OID_INT4, OID_INT4, OID_INT4, OID_INT4, OID_INT4, OID_INT4,
                                     OID_INT4, OID_INT4, OID_INT4, OID_TEXT};
    res_cols(r, 16, names, types);
    int64_t now = worker_now(r->w);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.pools)
    {
        struct pool *p = list_entry(it, struct pool, node);
        int n_tested = 0, n_login = 0, n_canceling = 0, n_used = 0;
        struct list *s, *st;
        list_for_each_safe(s, st, &p->busy)
        {
            struct server *sv = list_entry(s, struct server, node);
            if (sv->state == SV_TESTING)
                n_tested++;
            else if (sv->state == SV_RESETTING)
                n_used++;
            else if (sv->state == SV_CANCEL_WAIT)
                n_canceling++;
            else
                n_login++;
        }
        int64_t maxwait = 0;
        if (!list_empty(&p->waiting))
            maxwait = now - list_entry(list_first(&p->waiting), struct client, wait_node)->request_time;
        char f[16][32];
        int k = 0;
        snprintf(f[k++], 32, "%d", p->n_clients - p->n_waiting);
        snprintf(f[k++], 32, "%d", p->n_waiting);
        snprintf(f[k++], 32, "0");
        snprintf(f[k++], 32, "0");
        snprintf(f[k++], 32, "%d", p->n_active);
        snprintf(f[k++], 32, "0");
        snprintf(f[k++], 32, "%d", n_canceling);
        snprintf(f[k++], 32, "%d", p->n_idle);
        snprintf(f[k++], 32, "%d", n_used);
        snprintf(f[k++], 32, "%d", n_tested);
        snprintf(f[k++], 32, "%d", n_login);
        snprintf(f[k++], 32, "%lld", (long long)(maxwait / 1000000));
        snprintf(f[k++], 32, "%lld", (long long)(maxwait % 1000000));
        const char *v[16] = {p->db->name, p->user->name};
        for (int i = 0; i < k; i++)
            v[2 + i] = f[i];
        v[15] = pool_mode_str(pool_mode_of(p));
        res_row(r, v);
    }
    res_done(r, "SHOW");
}

static void show_stats(struct result *r)
{
    static const char *const names[] = {
        "database", "total_xact_count", "total_query_count", "total_received", "total_sent",
        "total_xact_time", "total_query_time", "total_wait_time"};
    static const uint32_t types[] = {OID_TEXT, OID_INT8, OID_INT8, OID_INT8,
                                     OID_INT8, OID_INT8, OID_INT8, OID_INT8};
    res_cols(r, 8, names, types);
    struct list *it, *tmp;
    list_for_each_safe(it, tmp, &g_pooler.databases)
    {
        struct database *db = list_entry(it, struct database, node);
        unsigned long long x = 0, q = 0, bi = 0, bo = 0, xt = 0, qt = 0, wt = 0;
        struct list *pi, *pt;
        list_for_each_safe(pi, pt, &g_pooler.pools)
        {
            struct pool *p = list_entry(pi, struct pool, node);
            if (p->db != db)
                continue;
            x += p->xact_count;
            q += p->query_count;
            bi += p->bytes_in;
            bo += p->bytes_out;
            xt += p->xact_time;
            qt += p->query_time;
            wt += p->wait_time;
        }
        char f[7][32];
        snprintf(f[0], 32, "%llu", x);
        snprintf(f[1], 32, "%llu", q);
        snprintf(f[2], 32, "%llu", bi);
        snprintf(f[3], 32, "%llu", bo);
        snprintf(f[4], 32, "%llu", xt);
        snprintf(f[5], 32, "%llu", qt);
        snprintf(f[6], 32, "%llu", wt);
        const char *v[8] = {db->name, f[0], f[1], f[2], f[3], f[4], f[5], f[6]};
        res_row(r, v);
    }
    res_done(r, "SHOW");
}

static bool word_eq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

static void pause_db(const char *name, bool pause)
{
    if (!name || !*name) {
        g_pooler.paused = pause;
    } else {
        struct database *db = pool_find_database(name);
        if (db)
            db->paused = pause;
    }
    if (!pause) {
        struct list *it, *tmp;
        list_for_each_safe(it, tmp, &g_pooler.pools)
        {
            pool_dispatch(list_entry(it, struct pool, node));
        }
    }
}

/* Runs one command; returns false if it produced an error. */
static void admin_run(struct client *c, struct result *r, char *sql)
{
    /* Tokenize: words separated by spaces; strip a trailing ';'. */
    size_t n = strlen(sql);
    while (n && (isspace((unsigned char)sql[n - 1]) || sql[n - 1] == ';'))
        sql[--n] = '\0';
    char *words[4] = {0};
    int nw = 0;
    char *save = NULL;
    for (char *t = strtok_r(sql, " \t\r\n", &save); t && nw < 4; t = strtok_r(NULL, " \t\r\n", &save))
        words[nw++] = t;
    if (nw == 0) {
        res_msg(r, build_cc, "", 8); /* empty query: just RFQ, PostgreSQL sends EmptyQuery */
        return;
    }
    if (word_eq(words[0], "SHOW") && nw >= 2) {
        if (word_eq(words[1], "VERSION"))
            show_version(r);
        else if (word_eq(words[1], "POOLS"))
            show_pools(r);
        else if (word_eq(words[1], "STATS"))
            show_stats(r);
        else
            res_msg(r, build_err, "unsupported SHOW command", 64);
        return;
    }
    if (c->admin_stats_only) {
        res_msg(r, build_err, "admin access needed", 64);
        return;
    }
    if (word_eq(words[0], "RELOAD")) {
        char err[512] = "";
        if (admin_reload_hook && !admin_reload_hook(err, sizeof(err))) {
            res_msg(r, build_err, err, strlen(err) + 64);
            return;
        }
        res_done(r, "RELOAD");
    } else if (word_eq(words[0], "PAUSE")) {
        pause_db(words[1], true);
        res_done(r, "PAUSE");
    } else if (word_eq(words[0], "RESUME")) {
        pause_db(words[1], false);
        res_done(r, "RESUME");
    } else if (word_eq(words[0], "SHUTDOWN")) {
        res_msg(r, build_notice, "shutting down", 64);
        res_done(r, "SHUTDOWN");
        if (admin_shutdown_hook)
            admin_shutdown_hook(nw >= 2);
    } else {
        res_msg(r, build_err, "invalid command", 64);
    }
}

void admin_handle(struct client *c)
{
    struct iobuf *b = c->s.rbuf;
    while (b && iobuf_len(b) && c->state == CL_IDLE) {
        uint8_t type;
        uint32_t mlen;
        enum proto_status ps = proto_peek_header(b->data + b->start, iobuf_len(b), 65536, &type, &mlen);
        if (ps == PROTO_NEED_MORE)
            return;
        if (ps != PROTO_OK || mlen > b->cap) {
            client_close_error(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid admin message");
            return;
        }
        if (mlen > iobuf_len(b))
            return;
        const uint8_t *msg = b->data + b->start;
        b->start += mlen;
        if (type == 'X') {
            client_close(c, "client close request");
            return;
        }
        struct result r = {.w = c->s.worker};
        if (type == 'Q') {
            char sql[4096];
            struct proto_reader rd;
            proto_reader_init(&rd, msg, mlen);
            snprintf(sql, sizeof(sql), "%s", proto_read_string(&rd));
            admin_run(c, &r, sql);
            struct proto_writer wr;
            uint8_t z[8];
            proto_writer_init(&wr, z, sizeof(z));
            proto_build_ready(&wr, 'I');
            iobuf_append(&r.w->bufs, &r.out, z, wr.len);
        } else {
            client_close_error(c, SQLSTATE_FEATURE_NOT_SUPPORTED,
                               "the admin console accepts only simple queries");
            return;
        }
        if (r.out) {
            stream_write(&c->s, r.out->data + r.out->start, iobuf_len(r.out));
            iobuf_put(&r.w->bufs, r.out);
        }
    }
    stream_release_rbuf(&c->s);
}
