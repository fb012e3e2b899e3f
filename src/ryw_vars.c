/* ryw_vars.c - sluice.lsn and sluice.min_lsn (ryw_vars.h). */
#include "ryw_vars.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cache_sql.h"
#include "log.h"
#include "proto.h"
#include "router.h"
#include "stream.h"
#include "worker.h"

/* ---- a few tokens of SQL ---------------------------------------------------- */

static bool ident_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '$';
}

/* Takes keyword kw at *p (whole word, any case). */
static bool take_word(const char **p, const char *e, const char *kw)
{
    const char *q = cache_sql_skip_blank(*p, e);
    size_t n = strlen(kw);
    if ((size_t)(e - q) < n || strncasecmp(q, kw, n) || (q + n < e && ident_char(q[n])))
        return false;
    *p = q + n;
    return true;
}

/* The identifier at *p (lower case into out); its length, 0 if none. */
static size_t take_ident(const char **p, const char *e, char *out, size_t cap)
{
    const char *q = cache_sql_skip_blank(*p, e);
    size_t n = 0;
    while (q + n < e && ident_char(q[n]) && n + 1 < cap) {
        out[n] = (char)tolower((unsigned char)q[n]);
        n++;
    }
    out[n] = '\0';
    *p = q + n;
    return n;
}

/* A string literal '...' ('' for a quote) at *p into out. */
static bool take_literal(const char **p, const char *e, char *out, size_t cap)
{
    const char *q = cache_sql_skip_blank(*p, e);
    if (q >= e || *q != '\'')
        return false;
    size_t n = 0;
    for (q++; q < e; q++) {
        if (*q == '\'') {
            if (q + 1 < e && q[1] == '\'') {
                q++;
            } else {
                out[n] = '\0';
                *p = q + 1;
                return true;
            }
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = *q;
    }
    return false;
}

/* ---- the settings ------------------------------------------------------------ */

enum var_op { OP_SHOW, OP_SET, OP_RESET };

/* What c's reads must see now, as a token ("" if nothing). */
static void lsn_token(struct client *c, char *out, size_t cap)
{
    uint64_t lsn = c->route ? c->route->ryw.lsn : 0;
    uint64_t scope = ryw_scope_lsn(c);
    if (scope > lsn)
        lsn = scope;
    if (!lsn)
        out[0] = '\0';
    else
        ryw_token_format(out, cap, c->pool->db, lsn);
}

/* Sets c's min_lsn from token text v; false: malformed (why filled). A
 * token of another cluster or timeline than its database's primary, when
 * that is known, is not taken: *warn says why. */
static bool min_lsn_set(struct client *c, const char *v, char *why, size_t whylen, char *warn,
                        size_t warnlen)
{
    uint64_t lsn, sysid;
    uint32_t tli;
    warn[0] = '\0';
    if (!v[0]) {
        if (c->route)
            c->route->ryw.min_lsn = 0;
        return true;
    }
    if (!ryw_token_parse(v, strlen(v), &lsn, &sysid, &tli)) {
        snprintf(why, whylen,
                 "invalid value for parameter \"sluice.min_lsn\": \"%s\" (expected LSN or "
                 "LSN/SYSTEM_IDENTIFIER/TIMELINE, as sluice.lsn gives)",
                 v);
        return false;
    }
    struct ryw_client *rc = &router_client_of(c)->ryw;
    rc->min_lsn = lsn;
    rc->min_sysid = sysid;
    rc->min_tli = tli;
    rc->token_warned = false;
    if (c->pool && !ryw_token_matches(c->pool->db, rc)) {
        snprintf(warn, warnlen,
                 "sluice.min_lsn \"%s\" is from another cluster or timeline than database "
                 "\"%s\"'s primary: ignored",
                 v, c->pool->db->name);
        rc->min_lsn = 0;
        rc->token_warned = true;
    }
    return true;
}

static void min_lsn_text(struct client *c, char *out, size_t cap)
{
    const struct ryw_client *rc = c->route ? &c->route->ryw : NULL;
    if (!rc || !rc->min_lsn) {
        out[0] = '\0';
    } else if (rc->min_sysid) {
        snprintf(out, cap, "%X/%X/%llu/%u", (unsigned)(rc->min_lsn >> 32), (unsigned)rc->min_lsn,
                 (unsigned long long)rc->min_sysid, rc->min_tli);
    } else {
        snprintf(out, cap, "%X/%X", (unsigned)(rc->min_lsn >> 32), (unsigned)rc->min_lsn);
    }
}

/* Parses the statement [p, e): false if it is not about a sluice.*
 * setting; else the answer is in w (its error, if any, is the answer). */
static bool answer(struct client *c, const char *p, const char *e, struct proto_writer *w)
{
    enum var_op op;
    if (take_word(&p, e, "show"))
        op = OP_SHOW;
    else if (take_word(&p, e, "set"))
        op = OP_SET;
    else if (take_word(&p, e, "reset"))
        op = OP_RESET;
    else
        return false;
    bool local = op == OP_SET && take_word(&p, e, "local");
    if (op == OP_SET && !local)
        take_word(&p, e, "session");
    char name[64];
    if (!take_ident(&p, e, name, sizeof(name)) || strncmp(name, "sluice.", 7))
        return false;
    char value[128] = "", why[256] = "", warn[256] = "";
    bool is_lsn = !strcmp(name, "sluice.lsn"), is_min = !strcmp(name, "sluice.min_lsn");
    if (op == OP_SET) {
        const char *q = cache_sql_skip_blank(p, e);
        if (q < e && *q == '=')
            p = q + 1;
        else if (!take_word(&p, e, "to"))
            snprintf(why, sizeof(why), "syntax error in SET %s", name);
        if (!why[0] && !take_word(&p, e, "default") && !take_literal(&p, e, value, sizeof(value)))
            snprintf(why, sizeof(why), "SET %s takes a quoted token or DEFAULT", name);
    }
    p = cache_sql_skip_blank(p, e);
    if (p < e && *p == ';')
        p = cache_sql_skip_blank(p + 1, e);
    if (why[0])
        ;
    else if (p < e)
        snprintf(why, sizeof(why), "%s must be sent alone, not with other statements", name);
    else if (!is_lsn && !is_min)
        snprintf(why, sizeof(why), "unrecognized configuration parameter \"%s\"", name);
    else if (local)
        snprintf(why, sizeof(why), "SET LOCAL %s is not supported: use SET", name);
    else if (is_lsn && op != OP_SHOW)
        snprintf(why, sizeof(why), "parameter \"sluice.lsn\" cannot be changed");
    else if (op != OP_SHOW)
        min_lsn_set(c, value, why, sizeof(why), warn, sizeof(warn));
    if (why[0]) {
        proto_build_error(w, false, why[0] == 'u' ? "42704" : "22023", "%s", why);
        return true;
    }
    if (warn[0]) {
        log_warning("C-%p: %s", (void *)c, warn);
        proto_build_warning(w, warn);
    }
    if (op == OP_SHOW) {
        char out[96];
        if (is_lsn)
            lsn_token(c, out, sizeof(out));
        else
            min_lsn_text(c, out, sizeof(out));
        const char *names[1] = {name};
        const uint32_t oids[1] = {25};
        const char *vals[1] = {out};
        proto_build_row_description(w, 1, names, oids);
        proto_build_data_row(w, 1, vals);
    }
    proto_build_command_complete(w, op == OP_SHOW ? "SHOW" : op == OP_SET ? "SET" : "RESET");
    return true;
}

bool ryw_vars_query(struct client *c, char st)
{
    struct stream_msg m;
    if (stream_next_msg(&c->s, STREAM_MSG_HEAD, &m) != STREAM_MSG_OK || m.type != 'Q' ||
        m.avail < m.len || m.len < 6)
        return false;
    const char *sql = (const char *)m.data + 5, *e = (const char *)m.data + m.len - 1;
    const char *p = cache_sql_skip_blank(sql, e);
    if (p >= e || !strchr("sSrR", *p))
        return false; /* most queries stop here */
    uint8_t buf[1024];
    struct proto_writer w;
    proto_writer_init(&w, buf, sizeof(buf));
    if (!answer(c, p, e, &w))
        return false;
    proto_build_ready(&w, st);
    stream_consume_msg(&c->s, m.len);
    stream_write(&c->s, w.buf, w.len);
    stream_uncork(&c->s);
    c->last_activity = worker_now(c->s.worker);
    return true;
}

bool ryw_vars_startup(struct client *c, const char *name, const char *value, char *why,
                      size_t whylen)
{
    char warn[256];
    if (strcasecmp(name, "sluice.min_lsn")) {
        snprintf(why, whylen, "unrecognized configuration parameter \"%s\"", name);
        return false;
    }
    if (!min_lsn_set(c, value, why, whylen, warn, sizeof(warn)))
        return false;
    if (warn[0])
        log_warning("C-%p: %s", (void *)c, warn);
    return true;
}
