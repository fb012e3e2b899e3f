/* classify.c - session-state effects of queries: a first-keyword
 * pre-classifier and, behind it, libpg_query.
 *
 * libpg_query hands back its tree as JSON; sluice needs a handful of fields
 * of a handful of node types, so a small bounded JSON walker reads them
 * rather than a JSON library (one more dependency for ~100 lines). */
#include "classify.h"

#include <pg_query.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sql_lex.h"

static atomic_uint_fast64_t n_parses;

uint64_t classify_parse_count(void)
{
    return (uint64_t)atomic_load(&n_parses);
}

const char *classify_kw_str(enum classify_kw k)
{
    static const char *const names[] = {"other",      "set",     "reset",  "prepare",     "execute",
                                        "deallocate", "discard", "listen", "create_temp", "declare",
                                        "advisory",   "begin",   "multi"};
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

/* ---- the pre-classifier ---------------------------------------------------- */

/* Skips whitespace and comments; returns the new position (len if the
 * query ends, or if a comment does not end within len). */
static size_t skip_space(const char *s, size_t i, size_t len)
{
    while (i < len) {
        char ch = s[i];
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v') {
            i++;
        } else if (ch == '-' && i + 1 < len && s[i + 1] == '-') {
            while (i < len && !sql_newline(s[i]))
                i++;
        } else if (ch == '/' && i + 1 < len && s[i + 1] == '*') {
            /* Block comments nest in PostgreSQL. */
            int depth = 0;
            while (i < len) {
                if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (s[i] == '*' && i + 1 < len && s[i + 1] == '/') {
                    i += 2;
                    if (--depth == 0)
                        break;
                } else {
                    i++;
                }
            }
            if (depth)
                return len;
        } else {
            break;
        }
    }
    return i;
}

/* Reads a keyword (letters and '_') at s[i..len) into kw (upper case). */
static size_t read_word(const char *s, size_t i, size_t len, char *kw, size_t cap)
{
    size_t n = 0;
    while (i < len) {
        char ch = s[i];
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        if (!((ch >= 'A' && ch <= 'Z') || ch == '_'))
            break;
        if (n + 1 < cap)
            kw[n++] = ch;
        else
            n = cap; /* too long for any keyword we care about */
        i++;
    }
    kw[n < cap ? n : 0] = '\0';
    return i;
}

static bool has_advisory(const char *sql, size_t len)
{
    /* pg_advisory_lock(_shared), pg_try_advisory_lock(_shared), in any
     * case: the session variants; the _xact_ ones end with the transaction
     * and are harmless. Found from the '_' in the middle, which few words
     * of a query have: on every query of transaction pooling this is about
     * a tenth of memmem()'s cost (callgrind, docs/benchmarks.md). */
    const char *end = sql + len;
    const char *p = sql + 8; /* "advisory" before the '_' */
    while (p + 5 <= end) {
        p = memchr(p, '_', (size_t)(end - p));
        if (!p || p + 5 > end)
            return false;
        if (strncasecmp(p - 8, "advisory_lock", 13) == 0)
            return true;
        p++;
    }
    return false;
}

/* Whether the word TEMP or TEMPORARY (any case) is in sql[0..len):
 * `SELECT ... INTO TEMP t` makes a temporary table, which pins the client
 * like CREATE TEMP; the parse decides. Found from its 'p' (two memchr()
 * passes), as has_advisory() from its '_'. A column named temp costs its
 * texts a parse, nothing worse. */
static bool has_temp_word(const char *sql, size_t len)
{
    const char *end = sql + len;
    for (int k = 0; k < 2; k++) {
        const char *p = sql + 3;
        while (p < end && (p = memchr(p, k ? 'P' : 'p', (size_t)(end - p))) != NULL) {
            const char *w = p - 3;
            bool starts = w == sql || !sql_ident_char(w[-1]);
            const char *after = p + 1;
            if (end - after >= 5 && strncasecmp(after, "orary", 5) == 0)
                after += 5;
            if (starts && strncasecmp(w, "tem", 3) == 0 &&
                (after == end || !sql_ident_char(*after)))
                return true;
            p++;
        }
    }
    return false;
}

/* Whether a statement starting with letter ch may begin with one of the
 * keywords classify_peek() looks for: S(ET, ELECT, TART), R(ESET),
 * P(REPARE), E(XECUTE), D(EALLOCATE, ISCARD, ECLARE), L(ISTEN), C(REATE),
 * U(NLISTEN), B(EGIN), W(ITH). Most queries (INSERT, UPDATE...) stop here. */
static bool keyword_letter(char ch)
{
    return strchr("srpedlcubw", ch | 0x20) != NULL && ch != '\0';
}

/* Whether s[0..len) holds a statement after its first: a ';' followed by
 * more than blanks, comments and ';'. A ';' in a literal or a comment
 * costs its text a parse, nothing worse. */
static bool more_statements(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    while ((p = memchr(p, ';', (size_t)(end - p))) != NULL) {
        size_t j = skip_space(s, (size_t)(p - s) + 1, len);
        if (j < len && s[j] != ';' && s[j] != '\0')
            return true;
        p = s + j;
        if (p >= end)
            break;
    }
    return false;
}

/* Whether s[i..len), what follows BEGIN or START, holds no other
 * statement: nothing after a ';' but blanks, comments and more ';'. Quotes
 * or dollar quotes, which no transaction option has, say no. */
static bool lone_statement(const char *s, size_t i, size_t len)
{
    while (i < len && s[i] != '\0') {
        char ch = s[i];
        if (ch == '\'' || ch == '"' || ch == '$')
            return false;
        if (ch == ';' || ch == '-' || ch == '/') {
            size_t j = skip_space(s, ch == ';' ? i + 1 : i, len);
            if (ch == ';') {
                while (j < len && s[j] == ';')
                    j = skip_space(s, j + 1, len);
                return j >= len || s[j] == '\0';
            }
            i = j > i ? j : i + 1;
            continue;
        }
        i++;
    }
    return true;
}

/* BEGIN [WORK | TRANSACTION] ... or START TRANSACTION ..., alone in the
 * query: a request of nothing else cannot have committed anything. */
static bool is_begin(const char *s, size_t j, size_t len, const char *kw)
{
    if (!strcmp(kw, "START")) {
        char w[16];
        j = read_word(s, skip_space(s, j, len), len, w, sizeof(w));
        if (strcmp(w, "TRANSACTION"))
            return false;
    } else if (strcmp(kw, "BEGIN")) {
        return false;
    }
    return lone_statement(s, j, len);
}

/* classify_peek() of the first statement alone. */
static enum classify_kw peek_first(const char *sql, size_t len)
{
    size_t i = skip_space(sql, 0, len);
    if (i >= len)
        return CK_OTHER;
    /* Most queries start with S(ELECT), I(NSERT), U(PDATE), W(ITH), B(EGIN),
     * C(OMMIT): one switch on the first letter rules out most of them (U
     * stays in for UNLISTEN). */
    char kw[16];
    if (!keyword_letter(sql[i]))
        return CK_OTHER;
    size_t j = read_word(sql, i, len, kw, sizeof(kw));
    if (!strcmp(kw, "SELECT") || !strcmp(kw, "WITH"))
        return has_advisory(sql + j, len - j)    ? CK_ADVISORY
               : has_temp_word(sql + j, len - j) ? CK_CREATE_TEMP
                                                 : CK_OTHER;
    if (!strcmp(kw, "SET"))
        return CK_SET;
    if (!strcmp(kw, "RESET"))
        return CK_RESET;
    if (!strcmp(kw, "PREPARE"))
        return CK_PREPARE;
    if (!strcmp(kw, "EXECUTE"))
        return CK_EXECUTE;
    if (!strcmp(kw, "DEALLOCATE"))
        return CK_DEALLOCATE;
    if (!strcmp(kw, "DISCARD"))
        return CK_DISCARD;
    if (!strcmp(kw, "LISTEN") || !strcmp(kw, "UNLISTEN"))
        return CK_LISTEN;
    if (!strcmp(kw, "DECLARE"))
        return CK_DECLARE;
    if (is_begin(sql, j, len, kw))
        return CK_BEGIN;
    if (!strcmp(kw, "CREATE")) {
        j = skip_space(sql, j, len);
        read_word(sql, j, len, kw, sizeof(kw));
        if (!strcmp(kw, "TEMP") || !strcmp(kw, "TEMPORARY") || !strcmp(kw, "LOCAL") ||
            !strcmp(kw, "GLOBAL") || !strcmp(kw, "OR"))
            return CK_CREATE_TEMP;
        return CK_OTHER;
    }
    return CK_OTHER;
}

enum classify_kw classify_peek(const char *sql, size_t len)
{
    /* "SELECT 1; SET a = 1", "INSERT ...; SET ...": what follows the
     * first statement touches the session as well (a SET there was left on
     * the server for its next client). */
    enum classify_kw k = peek_first(sql, len);
    return k == CK_OTHER && more_statements(sql, len) ? CK_MULTI : k;
}

bool classify_peek_more(const char *sql, size_t len)
{
    size_t i = skip_space(sql, 0, len);
    if (i >= len)
        return true; /* blanks or a comment to the end */
    if (!keyword_letter(sql[i]))
        return false;
    char kw[16];
    size_t j = read_word(sql, i, len, kw, sizeof(kw));
    if (j >= len)
        return true; /* the word may go on */
    if (!strcmp(kw, "SELECT") || !strcmp(kw, "WITH"))
        return !has_advisory(sql + j, len - j); /* more may name a lock, TEMP, a statement */
    if (!strcmp(kw, "BEGIN") || !strcmp(kw, "START"))
        return true; /* alone or not: the rest decides */
    if (!strcmp(kw, "CREATE")) {
        j = skip_space(sql, j, len);
        return j >= len || read_word(sql, j, len, kw, sizeof(kw)) >= len;
    }
    return false;
}

/* ---- identifiers ----------------------------------------------------------- */

size_t classify_ident(const char *p, size_t len, char *out, size_t outcap)
{
    size_t i = 0, n = 0;
    if (len == 0 || outcap == 0)
        return 0;
    if (p[0] == '"') {
        i = 1;
        while (i < len) {
            if (p[i] == '"') {
                if (i + 1 < len && p[i + 1] == '"') {
                    if (n + 1 < outcap)
                        out[n++] = '"';
                    i += 2;
                    continue;
                }
                out[n] = '\0';
                return n ? i + 1 : 0;
            }
            if (n + 1 < outcap)
                out[n++] = p[i];
            i++;
        }
        out[0] = '\0';
        return 0; /* unterminated */
    }
    while (i < len) {
        unsigned char ch = (unsigned char)p[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch >= 0x80 ||
                  (i > 0 && ((ch >= '0' && ch <= '9') || ch == '$'));
        if (!ok)
            break;
        if (n + 1 < outcap)
            out[n++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : (char)ch;
        i++;
    }
    out[n] = '\0';
    return i;
}

/* ---- a bounded JSON walker --------------------------------------------------- */

struct jp {
    const char *p, *end;
    bool bad;
};

static void j_ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r'))
        j->p++;
}

static bool j_eat(struct jp *j, char ch)
{
    j_ws(j);
    if (j->p < j->end && *j->p == ch) {
        j->p++;
        return true;
    }
    return false;
}

/* A string value into out (escapes decoded; \u as '?'), truncated. */
static bool j_string(struct jp *j, char *out, size_t cap)
{
    size_t n = 0;
    if (!j_eat(j, '"')) {
        j->bad = true;
        return false;
    }
    while (j->p < j->end && *j->p != '"') {
        char ch = *j->p++;
        if (ch == '\\' && j->p < j->end) {
            char e = *j->p++;
            switch (e) {
            case 'n':
                ch = '\n';
                break;
            case 't':
                ch = '\t';
                break;
            case 'r':
                ch = '\r';
                break;
            case 'b':
                ch = '\b';
                break;
            case 'f':
                ch = '\f';
                break;
            case 'u':
                j->p += (j->end - j->p >= 4) ? 4 : (j->end - j->p);
                ch = '?';
                break;
            default:
                ch = e;
                break;
            }
        }
        if (out && n + 1 < cap)
            out[n++] = ch;
    }
    if (out && cap)
        out[n] = '\0';
    if (j->p >= j->end) {
        j->bad = true;
        return false;
    }
    j->p++;
    return true;
}

static void j_skip(struct jp *j);

static void j_skip_container(struct jp *j, char open, char close)
{
    j->p++; /* open */
    j_ws(j);
    if (j_eat(j, close))
        return;
    for (;;) {
        if (open == '{') {
            j_string(j, NULL, 0);
            if (!j_eat(j, ':')) {
                j->bad = true;
                return;
            }
        }
        j_skip(j);
        if (j->bad)
            return;
        if (j_eat(j, ','))
            continue;
        if (j_eat(j, close))
            return;
        j->bad = true;
        return;
    }
}

static void j_skip(struct jp *j)
{
    j_ws(j);
    if (j->p >= j->end) {
        j->bad = true;
        return;
    }
    switch (*j->p) {
    case '{':
        j_skip_container(j, '{', '}');
        return;
    case '[':
        j_skip_container(j, '[', ']');
        return;
    case '"':
        j_string(j, NULL, 0);
        return;
    default:
        while (j->p < j->end && *j->p != ',' && *j->p != '}' && *j->p != ']')
            j->p++;
        return;
    }
}

static long j_number(struct jp *j)
{
    j_ws(j);
    char *e = NULL;
    long v = strtol(j->p, &e, 10);
    if (e == j->p || e > j->end) {
        j->bad = true;
        return 0;
    }
    j->p = e;
    return v;
}

/* ---- statements ------------------------------------------------------------ */

/* The fields of a node object sluice reads. */
struct node_fields {
    char kind[32];
    char name[64];
    char target[32];
    bool is_local;
    bool have_name;
    long options;
};

static void read_node_fields(struct jp *j, struct node_fields *f)
{
    if (!j_eat(j, '{')) {
        j->bad = true;
        return;
    }
    if (j_eat(j, '}'))
        return;
    for (;;) {
        char key[32];
        j_string(j, key, sizeof(key));
        if (!j_eat(j, ':') || j->bad) {
            j->bad = true;
            return;
        }
        j_ws(j);
        if (!strcmp(key, "kind") || !strcmp(key, "target")) {
            j_string(j, !strcmp(key, "kind") ? f->kind : f->target, sizeof(f->kind));
        } else if (!strcmp(key, "name") || !strcmp(key, "conditionname")) {
            j_string(j, f->name, sizeof(f->name));
            f->have_name = true;
        } else if (!strcmp(key, "is_local")) {
            f->is_local = j->p < j->end && *j->p == 't';
            j_skip(j);
        } else if (!strcmp(key, "options")) {
            f->options = j_number(j);
        } else {
            j_skip(j);
        }
        if (j->bad)
            return;
        if (j_eat(j, ','))
            continue;
        if (j_eat(j, '}'))
            return;
        j->bad = true;
        return;
    }
}

static bool span_has(const char *a, const char *b, const char *needle)
{
    return memmem(a, (size_t)(b - a), needle, strlen(needle)) != NULL;
}

/* Finds the name token after the statement's first keyword. */
static void locate_name(const char *sql, struct classify_stmt *st)
{
    size_t end = st->off + st->len;
    size_t i = skip_space(sql, st->off, end);
    char kw[16];
    i = read_word(sql, i, end, kw, sizeof(kw));
    i = skip_space(sql, i, end);
    char tmp[64];
    size_t n = classify_ident(sql + i, end - i, tmp, sizeof(tmp));
    st->name_off = (uint32_t)i;
    st->name_len = (uint32_t)n;
}

/* Decides what one parsed statement does. */
static void classify_node(const char *sql, const char *type, const char *node_start,
                          const char *node_end, const struct node_fields *f,
                          struct classify_stmt *st)
{
    st->kind = CS_OTHER;
    if (!strcmp(type, "VariableSetStmt")) {
        snprintf(st->name, sizeof(st->name), "%s", f->name);
        for (char *q = st->name; *q; q++)
            if (*q >= 'A' && *q <= 'Z')
                *q = (char)(*q - 'A' + 'a');
        if (!strcmp(f->kind, "VAR_RESET_ALL"))
            st->kind = CS_RESET_ALL;
        else if (f->is_local || !strcmp(st->name, "transaction"))
            st->kind = CS_SET_LOCAL; /* SET LOCAL, SET TRANSACTION ... */
        else if (!strcmp(f->kind, "VAR_RESET") || !strcmp(f->kind, "VAR_SET_DEFAULT"))
            st->kind = CS_RESET;
        else if (!strcmp(f->kind, "VAR_SET_VALUE") || !strcmp(f->kind, "VAR_SET_CURRENT") ||
                 !strcmp(f->kind, "VAR_SET_MULTI"))
            st->kind = CS_SET;
        return;
    }
    if (!strcmp(type, "PrepareStmt") || !strcmp(type, "ExecuteStmt")) {
        st->kind = type[0] == 'P' ? CS_PREPARE : CS_EXECUTE;
        snprintf(st->name, sizeof(st->name), "%s", f->name);
        locate_name(sql, st);
        return;
    }
    if (!strcmp(type, "DeallocateStmt")) {
        st->kind = f->have_name ? CS_DEALLOCATE : CS_DEALLOCATE_ALL;
        snprintf(st->name, sizeof(st->name), "%s", f->name);
        return;
    }
    if (!strcmp(type, "DiscardStmt")) {
        if (!strcmp(f->target, "DISCARD_ALL"))
            st->kind = CS_DISCARD_ALL;
        return;
    }
    if (!strcmp(type, "ListenStmt") || !strcmp(type, "UnlistenStmt")) {
        /* Transaction pooling answers these alone in a Query (listen.c)
         * and pins for LISTEN elsewhere. */
        st->kind = type[0] == 'L' ? CS_LISTEN : f->have_name ? CS_UNLISTEN : CS_UNLISTEN_ALL;
        st->reason = "LISTEN";
        snprintf(st->name, sizeof(st->name), "%s", f->name);
        return;
    }
    if (!strcmp(type, "DeclareCursorStmt")) {
        if (f->options & 0x20) { /* CURSOR_OPT_HOLD */
            st->kind = CS_PIN;
            st->reason = "WITH HOLD cursor";
        }
        return;
    }
    /* CREATE TEMP TABLE / TABLE AS / VIEW / SEQUENCE: relpersistence "t".
     * ON COMMIT DROP tables end with their transaction. */
    if (span_has(node_start, node_end, "\"relpersistence\":\"t\"") &&
        !span_has(node_start, node_end, "ONCOMMIT_DROP")) {
        st->kind = CS_PIN;
        st->reason = "temporary table";
    }
}

bool classify_parse(const char *sql, size_t len, struct classify_result *out)
{
    memset(out, 0, sizeof(*out));
    atomic_fetch_add(&n_parses, 1);
    PgQueryParseResult r = pg_query_parse(sql);
    if (r.error || !r.parse_tree) {
        out->parse_error = true;
        pg_query_free_parse_result(r);
        return false;
    }
    struct jp j = {r.parse_tree, r.parse_tree + strlen(r.parse_tree), false};
    bool ok = false;
    if (!j_eat(&j, '{'))
        goto done;
    for (;;) {
        char key[32];
        j_string(&j, key, sizeof(key));
        if (!j_eat(&j, ':') || j.bad)
            goto done;
        if (strcmp(key, "stmts") != 0) {
            j_skip(&j);
        } else {
            if (!j_eat(&j, '['))
                goto done;
            if (j_eat(&j, ']'))
                goto next_key;
            for (;;) {
                struct classify_stmt st = {0};
                char type[48] = "";
                const char *ns = NULL, *ne = NULL;
                struct node_fields f = {0};
                long loc = 0, slen = 0;
                if (!j_eat(&j, '{'))
                    goto done;
                for (;;) {
                    char k2[32];
                    j_string(&j, k2, sizeof(k2));
                    if (!j_eat(&j, ':') || j.bad)
                        goto done;
                    if (!strcmp(k2, "stmt")) {
                        if (!j_eat(&j, '{'))
                            goto done;
                        j_string(&j, type, sizeof(type));
                        if (!j_eat(&j, ':'))
                            goto done;
                        j_ws(&j);
                        ns = j.p;
                        struct jp sub = j;
                        read_node_fields(&sub, &f);
                        j_skip(&j);
                        ne = j.p;
                        if (!j_eat(&j, '}'))
                            goto done;
                    } else if (!strcmp(k2, "stmt_location")) {
                        loc = j_number(&j);
                    } else if (!strcmp(k2, "stmt_len")) {
                        slen = j_number(&j);
                    } else {
                        j_skip(&j);
                    }
                    if (j.bad)
                        goto done;
                    if (j_eat(&j, ','))
                        continue;
                    if (j_eat(&j, '}'))
                        break;
                    goto done;
                }
                if (loc < 0 || (size_t)loc > len)
                    loc = 0;
                if (slen <= 0 || (size_t)(loc + slen) > len)
                    slen = (long)len - loc;
                st.off = (uint32_t)loc;
                st.len = (uint32_t)slen;
                if (ns && ne)
                    classify_node(sql, type, ns, ne, &f, &st);
                if (out->n < CLASSIFY_MAX_STMTS)
                    out->stmts[out->n++] = st;
                else
                    out->truncated = true;
                if (j_eat(&j, ','))
                    continue;
                if (j_eat(&j, ']'))
                    break;
                goto done;
            }
        }
    next_key:
        if (j_eat(&j, ','))
            continue;
        if (j_eat(&j, '}'))
            break;
        goto done;
    }
    ok = true;
done:
    pg_query_free_parse_result(r);
    if (!ok)
        out->parse_error = true;
    return ok;
}
