/* cache_view.c - the request at the head of a client's buffer, in the
 * shape the result cache answers (struct request_view, cache_int.h): a
 * simple Query, or an extended batch of one statement (Parse or a kept
 * statement, Bind, Describe of the portal, Execute of all rows, Sync). */
#include <string.h>

#include "cache_int.h"
#include "prepared.h"
#include "stream.h"

/* The Parse body of statement name (unnamed: ""), as c sent it; *kept:
 * the cache's own record of it, NULL when prepared.c keeps it. */
const uint8_t *cache_stmt_body(struct client *c, const char *name, uint32_t *len,
                               struct cache_stmt **kept)
{
    struct cache_client *cc = c->cache;
    *kept = NULL;
    if (!name[0]) {
        *len = cc ? cc->unnamed.len : 0;
        *kept = cc && cc->unnamed.body ? &cc->unnamed : NULL;
        return cc ? cc->unnamed.body : NULL;
    }
    if (c->track)
        return prepared_client_parse(c, name, len);
    for (int i = 0; cc && i < cc->n_stmts; i++) {
        if (!strcmp(cc->stmts[i].name, name)) {
            *len = cc->stmts[i].len;
            *kept = &cc->stmts[i];
            return cc->stmts[i].body;
        }
    }
    return NULL;
}

/* The extended batch at the head of c's buffer, in the shape the cache
 * answers; false for anything else. */
bool cache_view_batch(struct client *c, struct request_view *v)
{
    uint32_t off = 0;
    int step = 0; /* 0: P or B next; 1: B; 2: D or E; 3: E; 4: S */
    memset(v, 0, sizeof(*v));
    v->ext = true;
    for (;;) {
        struct stream_msg m;
        if (stream_msg_at(&c->s, off, &m) != STREAM_MSG_OK || m.avail < m.len)
            return false;
        const uint8_t *p = m.data + 5, *end = m.data + m.len;
        if (m.type == 'P' && step == 0) {
            const char *name = cache_cstr(p, end);
            if (!name || name[0])
                return false; /* a named Parse goes to the server (prepared.c keeps it) */
            v->a = (const uint8_t *)name + 1;
            v->a_len = (size_t)(end - v->a);
            v->parse = true;
            struct cache_client *cc = c->cache;
            if (cc && cc->unnamed.body && cc->unnamed.len == v->a_len &&
                !memcmp(cc->unnamed.body, v->a, v->a_len))
                v->kept = &cc->unnamed; /* the unnamed statement Parsed again */
            step = 1;
        } else if (m.type == 'B' && step <= 1) {
            const char *portal = cache_cstr(p, end);
            const char *stmt =
                portal ? cache_cstr((const uint8_t *)portal + strlen(portal) + 1, end) : NULL;
            if (!stmt || portal[0] || (stmt[0] && v->parse))
                return false;
            if (!v->parse) {
                uint32_t len;
                v->a = cache_stmt_body(c, stmt, &len, &v->kept);
                v->a_len = len;
                if (!v->a)
                    return false;
            }
            v->b = (const uint8_t *)stmt + strlen(stmt) + 1;
            v->b_len = (size_t)(end - v->b);
            step = 2;
        } else if (m.type == 'D' && step == 2) {
            if (m.len != 7 || p[0] != 'P' || p[1] != '\0')
                return false; /* a statement's Describe, or a named portal's */
            v->described = true;
            step = 3;
        } else if (m.type == 'E' && (step == 2 || step == 3)) {
            if (m.len != 10 || p[0] != '\0' || p[1] || p[2] || p[3] || p[4])
                return false; /* a named portal, or a row limit */
            step = 4;
        } else if (m.type == 'S' && step == 4) {
            v->total = off + m.len;
            break;
        } else {
            return false;
        }
        off += m.len;
    }
    v->sql = cache_cstr(v->a, v->a + v->a_len);
    if (!v->sql)
        return false;
    v->sql_len = strlen(v->sql);
    return true;
}

/* A simple Query at the head of c's buffer. */
bool cache_view_query(struct client *c, struct request_view *v)
{
    struct stream_msg m;
    memset(v, 0, sizeof(*v));
    if (stream_next_msg(&c->s, STREAM_MSG_HEAD, &m) != STREAM_MSG_OK || m.type != 'Q' ||
        m.avail < m.len || m.len < 6 || m.data[m.len - 1] != '\0')
        return false;
    v->sql = (const char *)m.data + 5;
    v->sql_len = m.len - 6;
    v->a = (const uint8_t *)v->sql;
    v->a_len = v->sql_len;
    v->total = m.len;
    return true;
}
