/* classify_rw.c - read-only or not, step 1 (classify_rw.h): PostgreSQL's
 * parse tree (libpg_query's protobuf form) walked generically, packed into
 * one block per text, and a per-thread cache keyed by the text. The
 * function lists and the resolution steps are in classify_rw_fn.c.
 *
 * The walk is driven by protobuf-c's message descriptors: it visits every
 * sub-message of every field, repeated ones included, and reacts to a few
 * node types wherever they are. A node type this file has never heard of
 * (a new PostgreSQL construct) is still walked through, so a function call
 * or a data-modifying statement cannot hide inside it. */
#include "classify_rw.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hash.h"
#include "sql_shape.h"

/* Deeper trees are not walked: WRITE. A level is a message; a long chain
 * (a + b + c ..., UNION ALL of many) counts one per link. */
#define MAX_DEPTH 1000

/* Function names are stored as "function NAME": the name is at +FN_PREFIX
 * and the whole string is the reason a statement calling it writes. */
#define FN_PREFIX   9
#define NAMES_BYTES 4096
#define CURSOR_HOLD 0x0020 /* CURSOR_OPT_HOLD, PostgreSQL's parsenodes.h */
#define COUNT_BATCH 256    /* thread counts added to the totals this often */
#define CACHE_SLOTS (2 * CLASSIFY_RW_CACHE_ENTRIES)
#define CACHE_MASK  (CACHE_SLOTS - 1)
/* The per-thread index of results by shape (sql_shape.h). */
#define SHAPE_SLOTS 1024
#define NELEM(a)    ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- names of enum values ------------------------------------------------ */

const char *classify_rw_verdict_str(enum classify_rw_verdict v)
{
    static const char *const names[] = {"read", "write", "lookup"};
    return (unsigned)v < sizeof(names) / sizeof(names[0]) ? names[v] : "?";
}

const char *classify_rw_txn_str(enum classify_rw_txn t)
{
    static const char *const names[] = {"none",      "begin",           "commit",  "rollback",
                                        "savepoint", "set_transaction", "prepared"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

const char *classify_rw_isolation_str(enum classify_rw_isolation i)
{
    static const char *const names[] = {"unsaid", "read uncommitted", "read committed",
                                        "repeatable read", "serializable"};
    return (unsigned)i < sizeof(names) / sizeof(names[0]) ? names[i] : "?";
}

const char *classify_rw_hint_str(enum classify_rw_hint h)
{
    static const char *const names[] = {"none", "primary", "replica"};
    return (unsigned)h < sizeof(names) / sizeof(names[0]) ? names[h] : "?";
}

/* ---- counters ------------------------------------------------------------- */

static atomic_uint_fast64_t g_parses, g_hits, g_misses;

/* Counted per thread and added to the totals in batches: a shared counter
 * bumped by every worker on every query would bounce its cache line. */
static _Thread_local struct {
    uint64_t parses, hits, misses;
    unsigned pending;
} tl_count;

static void count_flush(void)
{
    atomic_fetch_add_explicit(&g_parses, tl_count.parses, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_hits, tl_count.hits, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_misses, tl_count.misses, memory_order_relaxed);
    tl_count.parses = tl_count.hits = tl_count.misses = 0;
    tl_count.pending = 0;
}

static void count(uint64_t *c)
{
    (*c)++;
    if (++tl_count.pending >= COUNT_BATCH)
        count_flush();
}

void classify_rw_counters(struct classify_rw_counters *out)
{
    count_flush();
    out->parses = (uint64_t)atomic_load_explicit(&g_parses, memory_order_relaxed);
    out->hits = (uint64_t)atomic_load_explicit(&g_hits, memory_order_relaxed);
    out->misses = (uint64_t)atomic_load_explicit(&g_misses, memory_order_relaxed);
}

/* ---- the walk ---------------------------------------------------------------- */

struct fn_rec {
    uint16_t off; /* "function NAME" in names */
    uint8_t cls;  /* enum classify_rw_fclass */
};

struct rel_rec {
    uint16_t off; /* its name in names */
    bool write, maybe_cte;
};

/* A text being classified, before it is packed into one block. */
struct builder {
    struct classify_rw_stmt stmts[CLASSIFY_RW_MAX_STMTS];
    int16_t reason_fn[CLASSIFY_RW_MAX_STMTS]; /* reason is funcs[i]'s name, or -1 */
    int n;
    bool parse_error, truncated, pins, whole_txn_primary;
    bool other_kind; /* a statement other than SELECT, INSERT, UPDATE, DELETE, MERGE */
    const char *pin_reason;
    enum classify_rw_hint hint;
    struct fn_rec funcs[CLASSIFY_RW_ALL_FUNCS];
    int n_funcs;
    struct rel_rec rels[CLASSIFY_RW_MAX_RELS];
    int n_rels;
    bool rels_truncated;
    bool varies;
    size_t names_len;
    char names[NAMES_BYTES];
};

#define WALK_MAX_CTES 16

struct walk {
    struct builder *b;
    struct classify_rw_stmt *st;
    int16_t *reason_fn;
    int depth;
    /* This statement's relations: per builder slot, named by it
     * (seen), its target (write), named only unqualified (plain); its
     * CTE names (valid while the tree is). */
    bool seen[CLASSIFY_RW_MAX_RELS], target[CLASSIFY_RW_MAX_RELS], plain[CLASSIFY_RW_MAX_RELS];
    bool dml; /* an INSERT / UPDATE / DELETE / MERGE: only its target is written */
    const char *ctes[WALK_MAX_CTES];
    int n_ctes;
};

static void set_write(struct walk *w, const char *reason)
{
    if (w->st->verdict == CRW_WRITE)
        return;
    w->st->verdict = CRW_WRITE;
    w->st->reason = reason;
}

static void pin(struct walk *w, const char *reason)
{
    if (!w->st->pins)
        w->st->pin_reason = reason;
    w->st->pins = true;
    if (!w->b->pins)
        w->b->pin_reason = reason;
    w->b->pins = true;
}

static void whole_txn(struct walk *w)
{
    w->st->whole_txn_primary = true;
    w->b->whole_txn_primary = true;
}

/* The message a Node wraps (its one set field), or NULL. */
static const ProtobufCMessage *node_child(const ProtobufCMessage *m)
{
    const PgQuery__Node *n = (const PgQuery__Node *)m;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    unsigned id = (unsigned)n->node_case;
    if (id == 0)
        return NULL;
    const ProtobufCFieldDescriptor *f = id <= d->n_fields && d->fields[id - 1].id == id
                                            ? &d->fields[id - 1]
                                            : protobuf_c_message_descriptor_get_field(d, id);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return NULL;
    return *(const ProtobufCMessage *const *)((const char *)m + f->offset);
}

static const char *string_of(const PgQuery__Node *n)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_STRING || !n->string || !n->string->sval)
        return NULL;
    return n->string->sval;
}

/* Records a called function (schema.name as written), once per statement. */
static void add_func(struct walk *w, const PgQuery__FuncCall *fc)
{
    struct builder *b = w->b;
    const char *schema = NULL, *name = NULL;
    if (fc->n_funcname == 1) {
        name = string_of(fc->funcname[0]);
    } else if (fc->n_funcname == 2) {
        schema = string_of(fc->funcname[0]);
        name = string_of(fc->funcname[1]);
        if (!schema)
            name = NULL;
    }
    /* A dot inside a quoted part would make the joined name ambiguous. */
    if (!name || !*name || strchr(name, '.') || (schema && (!*schema || strchr(schema, '.')))) {
        set_write(w, "function name not understood");
        return;
    }
    char full[CLASSIFY_RW_MAX_NAME];
    int fl = schema ? snprintf(full, sizeof(full), "%s.%s", schema, name)
                    : snprintf(full, sizeof(full), "%s", name);
    if (fl < 0 || (size_t)fl >= sizeof(full)) {
        set_write(w, "function name not understood");
        return;
    }
    enum classify_rw_fclass cls = classify_rw_builtin(full);
    if (cls == CRW_FN_WRITE_PIN)
        pin(w, "advisory lock");
    int i = w->st->func0;
    for (; i < b->n_funcs; i++)
        if (strcmp(b->names + b->funcs[i].off + FN_PREFIX, full) == 0)
            break;
    if (i == b->n_funcs) {
        size_t need = FN_PREFIX + (size_t)fl + 1;
        if (b->n_funcs - w->st->func0 >= CLASSIFY_RW_MAX_FUNCS ||
            b->n_funcs >= CLASSIFY_RW_ALL_FUNCS || b->names_len + need > sizeof(b->names)) {
            set_write(w, "too many functions");
            return;
        }
        memcpy(b->names + b->names_len, "function ", FN_PREFIX);
        memcpy(b->names + b->names_len + FN_PREFIX, full, (size_t)fl + 1);
        b->funcs[i].off = (uint16_t)b->names_len;
        b->funcs[i].cls = (uint8_t)cls;
        b->names_len += need;
        b->n_funcs++;
    }
    if ((cls == CRW_FN_WRITE || cls == CRW_FN_WRITE_PIN) && w->st->verdict != CRW_WRITE) {
        w->st->verdict = CRW_WRITE;
        w->st->reason = NULL;
        *w->reason_fn = (int16_t)i;
    }
}

/* Records a relation the statement names (target: the one a DML
 * statement writes). */
static void add_rel(struct walk *w, const PgQuery__RangeVar *rv, bool target)
{
    struct builder *b = w->b;
    if (!rv || !rv->relname || !*rv->relname)
        return;
    bool qualified = rv->schemaname && *rv->schemaname;
    char full[CLASSIFY_RW_MAX_NAME];
    int fl = qualified ? snprintf(full, sizeof(full), "%s.%s", rv->schemaname, rv->relname)
                       : snprintf(full, sizeof(full), "%s", rv->relname);
    if (fl < 0 || (size_t)fl >= sizeof(full)) {
        b->rels_truncated = true;
        return;
    }
    int i = 0;
    while (i < b->n_rels && strcmp(b->names + b->rels[i].off, full))
        i++;
    if (i == b->n_rels) {
        if (b->n_rels == CLASSIFY_RW_MAX_RELS || b->names_len + (size_t)fl + 1 > sizeof(b->names)) {
            b->rels_truncated = true;
            return;
        }
        memcpy(b->names + b->names_len, full, (size_t)fl + 1);
        b->rels[i].off = (uint16_t)b->names_len;
        b->rels[i].write = false;
        b->rels[i].maybe_cte = true; /* until a statement names it as no CTE */
        b->names_len += (size_t)fl + 1;
        b->n_rels++;
    }
    if (!w->seen[i])
        w->plain[i] = true;
    w->seen[i] = true;
    w->plain[i] = w->plain[i] && !qualified;
    w->target[i] |= target;
}

/* The statement is walked: its relations' flags in the builder. */
static void rels_done(struct walk *w)
{
    struct builder *b = w->b;
    bool writes = w->st->verdict == CRW_WRITE;
    for (int i = 0; i < b->n_rels; i++) {
        if (!w->seen[i])
            continue;
        b->rels[i].write |= w->target[i] || (writes && !w->dml);
        bool cte = false;
        for (int k = 0; w->plain[i] && k < w->n_ctes; k++)
            cte |= !strcmp(w->ctes[k], b->names + b->rels[i].off);
        if (!cte)
            b->rels[i].maybe_cte = false;
    }
}

static bool is_temp(const PgQuery__RangeVar *rv)
{
    if (!rv)
        return false;
    return (rv->relpersistence && rv->relpersistence[0] == 't') ||
           (rv->schemaname && strncmp(rv->schemaname, "pg_temp", 7) == 0);
}

static const char *lock_strength_str(PgQuery__LockClauseStrength s)
{
    switch (s) {
    case PG_QUERY__LOCK_CLAUSE_STRENGTH__LCS_FORKEYSHARE:
        return "FOR KEY SHARE";
    case PG_QUERY__LOCK_CLAUSE_STRENGTH__LCS_FORSHARE:
        return "FOR SHARE";
    case PG_QUERY__LOCK_CLAUSE_STRENGTH__LCS_FORNOKEYUPDATE:
        return "FOR NO KEY UPDATE";
    default:
        return "FOR UPDATE";
    }
}

/* What the walk does at one message, wherever it is in the tree. */
static void react(struct walk *w, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &pg_query__func_call__descriptor) {
        add_func(w, (const PgQuery__FuncCall *)m);
    } else if (d == &pg_query__range_var__descriptor) {
        add_rel(w, (const PgQuery__RangeVar *)m, false);
    } else if (d == &pg_query__sqlvalue_function__descriptor) {
        /* CURRENT_DATE, CURRENT_TIMESTAMP, LOCALTIME...: the clock's;
         * CURRENT_USER and the like are the session's (a cache key has it). */
        PgQuery__SQLValueFunctionOp op = ((const PgQuery__SQLValueFunction *)m)->op;
        if (op >= PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_DATE &&
            op <= PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIMESTAMP_N)
            w->b->varies = true;
    } else if (d == &pg_query__range_table_sample__descriptor) {
        w->b->varies = true; /* TABLESAMPLE: a sample, another each time */
    } else if (d == &pg_query__common_table_expr__descriptor) {
        const char *name = ((const PgQuery__CommonTableExpr *)m)->ctename;
        if (name && w->n_ctes < WALK_MAX_CTES)
            w->ctes[w->n_ctes++] = name;
        else if (name)
            w->b->rels_truncated = true;
    } else if (d == &pg_query__insert_stmt__descriptor) {
        set_write(w, "INSERT");
        w->dml = true;
        add_rel(w, ((const PgQuery__InsertStmt *)m)->relation, true);
    } else if (d == &pg_query__update_stmt__descriptor) {
        set_write(w, "UPDATE");
        w->dml = true;
        add_rel(w, ((const PgQuery__UpdateStmt *)m)->relation, true);
    } else if (d == &pg_query__delete_stmt__descriptor) {
        set_write(w, "DELETE");
        w->dml = true;
        add_rel(w, ((const PgQuery__DeleteStmt *)m)->relation, true);
    } else if (d == &pg_query__merge_stmt__descriptor) {
        set_write(w, "MERGE");
        w->dml = true;
        add_rel(w, ((const PgQuery__MergeStmt *)m)->relation, true);
    } else if (d == &pg_query__locking_clause__descriptor) {
        set_write(w, lock_strength_str(((const PgQuery__LockingClause *)m)->strength));
    } else if (d == &pg_query__into_clause__descriptor) {
        const PgQuery__IntoClause *ic = (const PgQuery__IntoClause *)m;
        set_write(w, "SELECT INTO");
        if (is_temp(ic->rel) && ic->on_commit != PG_QUERY__ON_COMMIT_ACTION__ONCOMMIT_DROP)
            pin(w, "temporary table");
    } else if (d == &pg_query__create_stmt__descriptor) {
        const PgQuery__CreateStmt *cs = (const PgQuery__CreateStmt *)m;
        if (is_temp(cs->relation) && cs->oncommit != PG_QUERY__ON_COMMIT_ACTION__ONCOMMIT_DROP)
            pin(w, "temporary table");
    } else if (d == &pg_query__view_stmt__descriptor) {
        if (is_temp(((const PgQuery__ViewStmt *)m)->view))
            pin(w, "temporary view");
    } else if (d == &pg_query__create_seq_stmt__descriptor) {
        if (is_temp(((const PgQuery__CreateSeqStmt *)m)->sequence))
            pin(w, "temporary sequence");
    }
}

/* Visits m and everything under it. */
static void walk_msg(struct walk *w, const ProtobufCMessage *m)
{
    while (m && m->descriptor == &pg_query__node__descriptor)
        m = node_child(m);
    if (!m)
        return;
    if (w->depth >= MAX_DEPTH) {
        set_write(w, "too deeply nested");
        return;
    }
    w->depth++;
    react(w, m);
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const ProtobufCMessage *const *a =
                *(const ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                walk_msg(w, a[k]);
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        walk_msg(w, *(const ProtobufCMessage *const *)(base + f->offset));
    }
    w->depth--;
}

/* ---- statements -------------------------------------------------------------- */

static const PgQuery__AConst *aconst_of(const PgQuery__Node *n)
{
    return n && n->node_case == PG_QUERY__NODE__NODE_A_CONST ? n->a_const : NULL;
}

/* BEGIN / START TRANSACTION / SET TRANSACTION options. */
static void txn_options(struct classify_rw_stmt *st, PgQuery__Node *const *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!opts[i] || opts[i]->node_case != PG_QUERY__NODE__NODE_DEF_ELEM)
            continue;
        const PgQuery__DefElem *de = opts[i]->def_elem;
        const PgQuery__AConst *c = aconst_of(de->arg);
        if (!de->defname || !c)
            continue;
        if (!strcmp(de->defname, "transaction_isolation") &&
            c->val_case == PG_QUERY__A__CONST__VAL_SVAL && c->sval && c->sval->sval) {
            const char *s = c->sval->sval;
            if (!strcmp(s, "read uncommitted"))
                st->isolation = CRW_ISO_READ_UNCOMMITTED;
            else if (!strcmp(s, "read committed"))
                st->isolation = CRW_ISO_READ_COMMITTED;
            else if (!strcmp(s, "repeatable read"))
                st->isolation = CRW_ISO_REPEATABLE_READ;
            else if (!strcmp(s, "serializable"))
                st->isolation = CRW_ISO_SERIALIZABLE;
        } else if (!strcmp(de->defname, "transaction_read_only") &&
                   c->val_case == PG_QUERY__A__CONST__VAL_IVAL && c->ival) {
            st->read_only = c->ival->ival != 0;
        }
    }
}

static void txn_stmt(struct walk *w, const PgQuery__TransactionStmt *t)
{
    struct classify_rw_stmt *st = w->st;
    switch (t->kind) {
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
        st->txn = CRW_TXN_BEGIN;
        txn_options(st, t->options, t->n_options);
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
        st->txn = CRW_TXN_COMMIT;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
        st->txn = CRW_TXN_ROLLBACK;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
        st->txn = CRW_TXN_SAVEPOINT;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
        st->txn = CRW_TXN_PREPARED;
        set_write(w, "PREPARE TRANSACTION");
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT_PREPARED:
        st->txn = CRW_TXN_PREPARED;
        set_write(w, "COMMIT PREPARED");
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_PREPARED:
        st->txn = CRW_TXN_PREPARED;
        set_write(w, "ROLLBACK PREPARED");
        break;
    default:
        set_write(w, "TransactionStmt");
        break;
    }
}

static void set_stmt(struct walk *w, const PgQuery__VariableSetStmt *v)
{
    struct classify_rw_stmt *st = w->st;
    const char *name = v->name ? v->name : "";
    bool multi = v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI;
    st->set_local = v->is_local;
    if (multi && !strcmp(name, "TRANSACTION")) {
        st->txn = CRW_TXN_SET_TRANSACTION;
        txn_options(st, v->args, v->n_args);
    } else if (multi && !strcmp(name, "TRANSACTION SNAPSHOT")) {
        st->txn = CRW_TXN_SET_TRANSACTION;
        whole_txn(w);
    } else if (multi && !strcmp(name, "SESSION CHARACTERISTICS")) {
        st->is_set = true;
        pin(w, "SET SESSION CHARACTERISTICS");
    } else if (!v->is_local) {
        st->is_set = true;
    }
}

/* EXPLAIN runs the statement only with ANALYZE (given alone, or with a
 * value PostgreSQL's defGetBoolean reads as true: anything but false, off
 * and 0). */
static bool explain_analyze(const PgQuery__ExplainStmt *e)
{
    for (size_t i = 0; i < e->n_options; i++) {
        const PgQuery__Node *o = e->options[i];
        if (!o || o->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || !o->def_elem->defname ||
            strcmp(o->def_elem->defname, "analyze") != 0)
            continue;
        const PgQuery__Node *a = o->def_elem->arg;
        const char *s = string_of(a);
        if (s && (!strcasecmp(s, "false") || !strcasecmp(s, "off")))
            continue;
        if (a && a->node_case == PG_QUERY__NODE__NODE_INTEGER && a->integer &&
            a->integer->ival == 0)
            continue;
        return true;
    }
    return false;
}

/* Why a statement type outside the read set writes: a familiar name, or
 * the parse node's name. */
static const char *stmt_reason(const PgQuery__Node *n)
{
    static const struct {
        PgQuery__Node__NodeCase c;
        const char *name;
    } names[] = {
        {PG_QUERY__NODE__NODE_INSERT_STMT, "INSERT"},
        {PG_QUERY__NODE__NODE_UPDATE_STMT, "UPDATE"},
        {PG_QUERY__NODE__NODE_DELETE_STMT, "DELETE"},
        {PG_QUERY__NODE__NODE_MERGE_STMT, "MERGE"},
        {PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT, "CREATE TABLE AS"},
        {PG_QUERY__NODE__NODE_COPY_STMT, "COPY"},
        {PG_QUERY__NODE__NODE_DO_STMT, "DO"},
        {PG_QUERY__NODE__NODE_CALL_STMT, "CALL"},
        {PG_QUERY__NODE__NODE_CREATE_STMT, "CREATE TABLE"},
        {PG_QUERY__NODE__NODE_INDEX_STMT, "CREATE INDEX"},
        {PG_QUERY__NODE__NODE_VIEW_STMT, "CREATE VIEW"},
        {PG_QUERY__NODE__NODE_CREATE_SEQ_STMT, "CREATE SEQUENCE"},
        {PG_QUERY__NODE__NODE_CREATE_FUNCTION_STMT, "CREATE FUNCTION"},
        {PG_QUERY__NODE__NODE_CREATE_SCHEMA_STMT, "CREATE SCHEMA"},
        {PG_QUERY__NODE__NODE_ALTER_TABLE_STMT, "ALTER TABLE"},
        {PG_QUERY__NODE__NODE_DROP_STMT, "DROP"},
        {PG_QUERY__NODE__NODE_TRUNCATE_STMT, "TRUNCATE"},
        {PG_QUERY__NODE__NODE_COMMENT_STMT, "COMMENT"},
        {PG_QUERY__NODE__NODE_NOTIFY_STMT, "NOTIFY"},
        {PG_QUERY__NODE__NODE_UNLISTEN_STMT, "UNLISTEN"},
        {PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT, "CLOSE"},
        {PG_QUERY__NODE__NODE_PREPARE_STMT, "PREPARE"},
        {PG_QUERY__NODE__NODE_EXECUTE_STMT, "EXECUTE"},
        {PG_QUERY__NODE__NODE_DEALLOCATE_STMT, "DEALLOCATE"},
        {PG_QUERY__NODE__NODE_DISCARD_STMT, "DISCARD"},
        {PG_QUERY__NODE__NODE_CHECK_POINT_STMT, "CHECKPOINT"},
        {PG_QUERY__NODE__NODE_REINDEX_STMT, "REINDEX"},
        {PG_QUERY__NODE__NODE_CLUSTER_STMT, "CLUSTER"},
        {PG_QUERY__NODE__NODE_REFRESH_MAT_VIEW_STMT, "REFRESH MATERIALIZED VIEW"},
    };
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_VACUUM_STMT:
        return n->vacuum_stmt->is_vacuumcmd ? "VACUUM" : "ANALYZE";
    case PG_QUERY__NODE__NODE_GRANT_STMT:
        return n->grant_stmt->is_grant ? "GRANT" : "REVOKE";
    case PG_QUERY__NODE__NODE_FETCH_STMT:
        return n->fetch_stmt->ismove ? "MOVE" : "FETCH";
    default:
        break;
    }
    for (int i = 0; i < NELEM(names); i++)
        if (names[i].c == n->node_case)
            return names[i].name;
    const ProtobufCMessage *child = node_child(&n->base);
    return child ? child->descriptor->short_name : "not understood";
}

/* One top-level statement: its type, then the walk of everything in it. */
static void classify_stmt(struct walk *w, const PgQuery__Node *n)
{
    if (!node_child(&n->base)) {
        set_write(w, "not understood");
        return;
    }
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_SELECT_STMT:
    case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
        break;
    case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
        if (explain_analyze(n->explain_stmt))
            set_write(w, "EXPLAIN ANALYZE");
        break;
    case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
        txn_stmt(w, n->transaction_stmt);
        break;
    case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
        set_stmt(w, n->variable_set_stmt);
        break;
    case PG_QUERY__NODE__NODE_COPY_STMT: {
        /* COPY ... TO STDOUT only reads (PostgreSQL allows it in a read-only
         * transaction); FROM, a server file or a program: the primary. */
        const PgQuery__CopyStmt *c = n->copy_stmt;
        if (c->is_from || c->is_program || (c->filename && c->filename[0]))
            set_write(w, "COPY");
        if (c->is_from && !c->is_program && !(c->filename && c->filename[0]))
            w->st->copy_in = true;
        break;
    }
    case PG_QUERY__NODE__NODE_LOCK_STMT:
        set_write(w, "LOCK");
        whole_txn(w);
        break;
    case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
        /* A cursor lives where it was declared: its FETCHes go there too. */
        set_write(w, "DECLARE");
        if (n->declare_cursor_stmt->options & CURSOR_HOLD) {
            whole_txn(w);
            pin(w, "WITH HOLD cursor");
        }
        break;
    case PG_QUERY__NODE__NODE_LISTEN_STMT:
        set_write(w, "LISTEN");
        pin(w, "LISTEN");
        break;
    default:
        set_write(w, stmt_reason(n));
        break;
    }
    walk_msg(w, &n->base);
}

/* ---- an arena for unpacked trees --------------------------------------------- */

/* protobuf-c allocates every message of an unpacked tree on its own; a
 * per-thread bump arena, emptied after each parse, does it for half the
 * cost (malloc and free_unpacked were half of the unpack). One chunk of
 * ARENA_CHUNK stays between parses; bigger trees add chunks, freed after. */
#define ARENA_CHUNK (64 * 1024)

struct arena_chunk {
    struct arena_chunk *next;
    size_t size, used;
    max_align_t data[];
};

static _Thread_local struct arena_chunk *tl_arena;

static void *arena_alloc(void *unused, size_t n)
{
    (void)unused;
    n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    struct arena_chunk *c = tl_arena;
    if (!c || c->size - c->used < n) {
        size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = malloc(sizeof(*c) + size);
        if (!c)
            return NULL; /* the unpack fails: "not understood" */
        c->next = tl_arena;
        c->size = size;
        c->used = 0;
        tl_arena = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(void *unused, void *p)
{
    (void)unused;
    (void)p;
}

static ProtobufCAllocator arena_allocator = {arena_alloc, arena_free, NULL};

/* Empties the arena; keep: one standard chunk stays. */
static void arena_reset(bool keep)
{
    struct arena_chunk *kept = NULL;
    while (tl_arena) {
        struct arena_chunk *c = tl_arena;
        tl_arena = c->next;
        if (keep && !kept && c->size == ARENA_CHUNK) {
            kept = c;
            kept->used = 0;
            kept->next = NULL;
        } else {
            free(c);
        }
    }
    tl_arena = kept;
}

/* ---- hints ------------------------------------------------------------------- */

/* A comment's hint: "/" "*" optional spaces, sluice:primary or
 * sluice:replica, optional spaces, "*" "/". */
static enum classify_rw_hint hint_of(const char *p, size_t n)
{
    if (n < 4)
        return CRW_HINT_NONE;
    p += 2;
    n -= 4;
    while (n && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\n' || p[n - 1] == '\r'))
        n--;
    if (n == 14 && !strncasecmp(p, "sluice:primary", 14))
        return CRW_HINT_PRIMARY;
    if (n == 14 && !strncasecmp(p, "sluice:replica", 14))
        return CRW_HINT_REPLICA;
    return CRW_HINT_NONE;
}

/* Whether sql may hold a hint: it mentions "sluice:" at all. */
static bool may_hint(const char *sql, size_t len)
{
    return memmem(sql, len, "sluice:", 7) != NULL;
}

/* Hints live in comments; PostgreSQL's own lexer (pg_query_scan) tells a
 * comment from a string literal or a quoted name. It runs only when the text
 * may hold one. */
static enum classify_rw_hint scan_hints(const char *sql, size_t len)
{
    if (!may_hint(sql, len))
        return CRW_HINT_NONE;
    enum classify_rw_hint h = CRW_HINT_NONE;
    PgQueryScanResult s = pg_query_scan(sql);
    if (!s.error) {
        PgQuery__ScanResult *sr = pg_query__scan_result__unpack(&arena_allocator, s.pbuf.len,
                                                                (const uint8_t *)s.pbuf.data);
        for (size_t i = 0; sr && i < sr->n_tokens; i++) {
            const PgQuery__ScanToken *t = sr->tokens[i];
            if (!t || t->token != PG_QUERY__TOKEN__C_COMMENT || t->start < 0 ||
                t->end <= t->start || (size_t)t->end > len)
                continue;
            enum classify_rw_hint th = hint_of(sql + t->start, (size_t)(t->end - t->start));
            if (th == CRW_HINT_PRIMARY || (th == CRW_HINT_REPLICA && h == CRW_HINT_NONE))
                h = th;
        }
        arena_reset(true);
    }
    pg_query_free_scan_result(s);
    return h;
}

/* ---- parsing into a builder -------------------------------------------------- */

static void stmt_init(struct classify_rw_stmt *st, const PgQuery__RawStmt *raw, size_t len,
                      int func0)
{
    memset(st, 0, sizeof(*st));
    st->verdict = CRW_READ;
    st->read_only = -1;
    size_t off = raw->stmt_location > 0 ? (size_t)raw->stmt_location : 0;
    if (off > len)
        off = len;
    size_t n = raw->stmt_len > 0 ? (size_t)raw->stmt_len : len - off;
    if (n > len - off)
        n = len - off;
    st->off = (uint32_t)off;
    st->len = (uint32_t)n;
    st->func0 = (uint16_t)func0;
}

static void build_stmt(struct builder *b, const PgQuery__RawStmt *raw, size_t len)
{
    struct classify_rw_stmt scratch = {0};
    int16_t scratch_fn = -1;
    int func0 = b->n_funcs, rels0 = b->n_rels;
    size_t names0 = b->names_len;
    bool keep = b->n < CLASSIFY_RW_MAX_STMTS;
    struct walk w = {.b = b,
                     .st = keep ? &b->stmts[b->n] : &scratch,
                     .reason_fn = keep ? &b->reason_fn[b->n] : &scratch_fn};
    stmt_init(w.st, raw, len, func0);
    *w.reason_fn = -1;
    classify_stmt(&w, raw->stmt);
    rels_done(&w);
    if (keep) {
        w.st->n_funcs = (uint16_t)(b->n_funcs - func0);
        b->n++;
    } else {
        /* Past the last kept statement: only its pins and whole_txn_primary
         * (already in b) count. */
        b->truncated = true;
        b->n_funcs = func0;
        b->n_rels = rels0; /* their names go with names_len */
        b->names_len = names0;
    }
}

static void build(struct builder *b, const char *sql, size_t len)
{
    memset(b, 0, offsetof(struct builder, names));
    b->hint = scan_hints(sql, len);
    PgQueryProtobufParseResult pr = pg_query_parse_protobuf(sql);
    PgQuery__ParseResult *tree = NULL;
    if (!pr.error)
        tree = pg_query__parse_result__unpack(&arena_allocator, pr.parse_tree.len,
                                              (const uint8_t *)pr.parse_tree.data);
    if (!tree) {
        b->parse_error = true;
    } else {
        for (size_t i = 0; i < tree->n_stmts; i++) {
            if (!tree->stmts[i] || !tree->stmts[i]->stmt)
                continue;
            switch (tree->stmts[i]->stmt->node_case) {
            case PG_QUERY__NODE__NODE_SELECT_STMT:
            case PG_QUERY__NODE__NODE_INSERT_STMT:
            case PG_QUERY__NODE__NODE_UPDATE_STMT:
            case PG_QUERY__NODE__NODE_DELETE_STMT:
            case PG_QUERY__NODE__NODE_MERGE_STMT:
                break;
            default:
                b->other_kind = true;
            }
            build_stmt(b, tree->stmts[i], len);
        }
    }
    arena_reset(true);
    pg_query_free_protobuf_parse_result(pr);
}

/* ---- one block per result ---------------------------------------------------- */

/* A cache entry; the result comes first, so a result is also its block. */
struct rw_entry {
    struct classify_rw_result res;
    uint64_t hash;
    const char *text; /* cached texts: a copy, NUL-terminated */
    uint32_t len;     /* text bytes */
    uint32_t size;    /* bytes of the block */
    bool ref;         /* used since the clock hand last passed */
    /* Whether the result holds for every text of its shape: statements
     * whose reading looks at no constant (not an EXPLAIN's options, a
     * BEGIN's, a SET's), no hint comment, parsed whole. */
    bool shape_safe;
    uint64_t shape; /* its slot in the shape index: 0 none */
};

#define ALIGN8(x) (((x) + 7) & ~(size_t)7)

/* Packs b (and a copy of the text, if text) into one malloc'd block. */
static struct rw_entry *pack(const struct builder *b, const char *text, size_t text_len)
{
    size_t o_stmts = ALIGN8(sizeof(struct rw_entry));
    size_t o_funcs = ALIGN8(o_stmts + (size_t)b->n * sizeof(struct classify_rw_stmt));
    size_t o_rels = ALIGN8(o_funcs + (size_t)b->n_funcs * sizeof(struct classify_rw_func));
    size_t o_names = o_rels + (size_t)b->n_rels * sizeof(struct classify_rw_rel);
    size_t o_text = o_names + b->names_len;
    size_t size = o_text + (text ? text_len + 1 : 0);
    char *blk = malloc(size);
    if (!blk)
        abort();
    struct rw_entry *e = (struct rw_entry *)blk;
    memset(e, 0, sizeof(*e));
    struct classify_rw_stmt *stmts = (struct classify_rw_stmt *)(blk + o_stmts);
    struct classify_rw_func *funcs = (struct classify_rw_func *)(blk + o_funcs);
    struct classify_rw_rel *rels = (struct classify_rw_rel *)(blk + o_rels);
    char *names = blk + o_names;
    memcpy(names, b->names, b->names_len);
    for (int i = 0; i < b->n_rels; i++) {
        rels[i].name = names + b->rels[i].off;
        rels[i].write = b->rels[i].write;
        rels[i].maybe_cte = b->rels[i].maybe_cte;
    }
    for (int i = 0; i < b->n_funcs; i++) {
        funcs[i].reason = names + b->funcs[i].off;
        funcs[i].name = funcs[i].reason + FN_PREFIX;
        funcs[i].cls = (enum classify_rw_fclass)b->funcs[i].cls;
    }
    struct classify_rw_result *r = &e->res;
    r->verdict = CRW_READ;
    for (int i = 0; i < b->n; i++) {
        stmts[i] = b->stmts[i];
        if (b->reason_fn[i] >= 0)
            stmts[i].reason = names + b->funcs[b->reason_fn[i]].off;
        if (stmts[i].verdict == CRW_WRITE && r->verdict != CRW_WRITE) {
            r->verdict = CRW_WRITE;
            r->reason = stmts[i].reason;
        }
    }
    if (b->parse_error || b->truncated) {
        if (r->verdict != CRW_WRITE)
            r->reason = b->parse_error ? "not understood" : "too many statements";
        r->verdict = CRW_WRITE;
    }
    r->hint = b->hint;
    r->parse_error = b->parse_error;
    r->truncated = b->truncated;
    r->pins = b->pins;
    r->whole_txn_primary = b->whole_txn_primary;
    r->pin_reason = b->pin_reason;
    r->n = b->n;
    r->n_funcs = b->n_funcs;
    r->stmts = stmts;
    r->funcs = funcs;
    r->n_rels = b->n_rels;
    r->rels_truncated = b->rels_truncated || b->truncated || b->parse_error;
    r->varies = b->varies;
    r->rels = rels;
    e->size = (uint32_t)size;
    if (text) {
        char *t = blk + o_text;
        memcpy(t, text, text_len);
        t[text_len] = '\0';
        e->text = t;
        e->len = (uint32_t)text_len;
    }
    return e;
}

static struct rw_entry *classify_block(const char *sql, size_t len, bool keep_text)
{
    struct builder b;
    count(&tl_count.parses);
    build(&b, sql, len);
    struct rw_entry *e = pack(&b, keep_text ? sql : NULL, len);
    e->shape_safe = !b.other_kind && !b.parse_error && !b.truncated && b.hint == CRW_HINT_NONE;
    e->shape = 0;
    return e;
}

struct classify_rw_result *classify_rw_parse(const char *sql, size_t len)
{
    return &classify_block(sql, len, false)->res;
}

void classify_rw_free(struct classify_rw_result *r)
{
    free(r);
}

/* ---- the per-thread cache ---------------------------------------------------- */

struct rw_slot {
    uint64_t hash;
    struct rw_entry *e; /* NULL: empty */
};

/* Open addressing with linear probing at most half full, and a CLOCK ring
 * for eviction: a hit sets the entry's bit, the hand clears bits and evicts
 * the first entry it finds clear (one-time texts go first). */
struct rw_cache {
    struct rw_slot slots[CACHE_SLOTS];
    struct rw_entry *ring[CLASSIFY_RW_CACHE_ENTRIES];
    uint32_t n, hand;
    size_t bytes;
    uint64_t seed;
    struct rw_entry *big; /* the last result too long to cache */
    /* Cached entries by shape: a text not seen before whose shape is one
     * of theirs gets their result (pgbench -M simple and ORMs that inline
     * values send a few shapes with ever new constants; a parse costs
     * 9-90 us). Direct-mapped, the newest entry of a slot's shape. */
    struct rw_entry *shapes[SHAPE_SLOTS];
};

static _Thread_local struct rw_cache *tl_cache;

/* Removes slot i, moving later entries of its probe run back. */
static void slot_remove(struct rw_cache *c, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & CACHE_MASK;
        if (!c->slots[j].e)
            break;
        size_t home = c->slots[j].hash & CACHE_MASK;
        /* Move j into the hole unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            c->slots[i] = c->slots[j];
            i = j;
        }
    }
    c->slots[i].e = NULL;
}

static void evict_one(struct rw_cache *c)
{
    for (;;) {
        if (c->hand >= c->n)
            c->hand = 0;
        struct rw_entry *e = c->ring[c->hand];
        if (e->ref) {
            e->ref = false;
            c->hand++;
            continue;
        }
        size_t i = e->hash & CACHE_MASK;
        while (c->slots[i].e != e)
            i = (i + 1) & CACHE_MASK;
        slot_remove(c, i);
        if (e->shape && c->shapes[e->shape & (SHAPE_SLOTS - 1)] == e)
            c->shapes[e->shape & (SHAPE_SLOTS - 1)] = NULL;
        c->ring[c->hand] = c->ring[--c->n];
        c->bytes -= e->size;
        free(e);
        return;
    }
}

static struct rw_cache *cache_get(void)
{
    if (!tl_cache) {
        tl_cache = calloc(1, sizeof(*tl_cache));
        if (!tl_cache)
            abort();
        tl_cache->seed = hash_text((const char *)&tl_cache, sizeof(tl_cache), 0x5eed);
    }
    return tl_cache;
}

static void cache_insert(struct rw_cache *c, struct rw_entry *e)
{
    while (c->n > 0 &&
           (c->n >= CLASSIFY_RW_CACHE_ENTRIES || c->bytes + e->size > CLASSIFY_RW_CACHE_BYTES))
        evict_one(c);
    size_t i = e->hash & CACHE_MASK;
    while (c->slots[i].e)
        i = (i + 1) & CACHE_MASK;
    c->slots[i].hash = e->hash;
    c->slots[i].e = e;
    c->ring[c->n++] = e;
    c->bytes += e->size;
}

const struct classify_rw_result *classify_rw_cached(const char *sql, size_t len)
{
    struct rw_cache *c = cache_get();
    if (len > CLASSIFY_RW_CACHE_MAX_TEXT) {
        count(&tl_count.misses);
        free(c->big);
        c->big = classify_block(sql, len, false);
        return &c->big->res;
    }
    uint64_t h = hash_text(sql, len, c->seed);
    for (size_t i = h & CACHE_MASK; c->slots[i].e; i = (i + 1) & CACHE_MASK) {
        struct rw_entry *e = c->slots[i].e;
        if (c->slots[i].hash == h && e->len == len && memcmp(e->text, sql, len) == 0) {
            e->ref = true;
            count(&tl_count.hits);
            return &e->res;
        }
    }
    /* A hint lives in a comment, which the shape leaves out: a text that
     * may hold one is read itself; so is one with a NUL inside (the parser
     * stops there, the shape does not). */
    uint64_t shape = 0;
    if (!may_hint(sql, len) && !memchr(sql, '\0', len)) {
        shape = sql_shape(sql, len);
        struct rw_entry *s = c->shapes[shape & (SHAPE_SLOTS - 1)];
        if (s && s->shape == shape) {
            s->ref = true;
            count(&tl_count.hits);
            return &s->res;
        }
    }
    count(&tl_count.misses);
    struct rw_entry *e = classify_block(sql, len, true);
    e->hash = h;
    cache_insert(c, e);
    if (shape && e->shape_safe) {
        e->shape = shape;
        c->shapes[shape & (SHAPE_SLOTS - 1)] = e;
    }
    return &e->res;
}

void classify_rw_thread_done(void)
{
    struct rw_cache *c = tl_cache;
    count_flush();
    arena_reset(false);
    if (!c)
        return;
    for (uint32_t i = 0; i < c->n; i++)
        free(c->ring[i]);
    free(c->big);
    free(c);
    tl_cache = NULL;
}
