/* advice_cand.c - candidate indexes for a read statement (advice_cand.h):
 * a walk of libpg_query's protobuf tree by the few node types that say
 * where a statement's tables are and how it compares their columns. */
#include "advice_cand.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdio.h>
#include <string.h>

/* Statements nested deeper are not looked into. */
#define MAX_DEPTH 64
#define MAX_CTES  16

struct ex {
    struct advice_query *q;
    const char *ctes[MAX_CTES]; /* names a FROM may mean instead of a table */
    int n_ctes;
    bool not_read;
};

const char *advice_cand_status_str(enum advice_cand_status st)
{
    static const char *const names[] = {"ok", "does not parse", "not one SELECT",
                                        "not a read (INTO, FOR UPDATE, a writing WITH)"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static const char *str_of(const PgQuery__Node *n)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_STRING || !n->string || !n->string->sval)
        return NULL;
    return n->string->sval;
}

static bool copy_name(char *dst, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= ADVICE_NAME_MAX)
        return false;
    memcpy(dst, src ? src : "", n + 1);
    return true;
}

static void walk_select(struct ex *x, const PgQuery__SelectStmt *s, uint32_t outer, int depth);

/* ---- tables --------------------------------------------------------------------- */

static bool is_cte(const struct ex *x, const PgQuery__RangeVar *rv)
{
    if (rv->schemaname && *rv->schemaname)
        return false;
    for (int i = 0; i < x->n_ctes; i++)
        if (!strcmp(x->ctes[i], rv->relname))
            return true;
    return false;
}

static void add_table(struct ex *x, const PgQuery__RangeVar *rv, uint32_t *local)
{
    struct advice_query *q = x->q;
    if (!rv->relname || !*rv->relname || is_cte(x, rv) || q->n_tables == ADVICE_MAX_TABLES)
        return;
    struct advice_table *t = &q->tables[q->n_tables];
    if (!copy_name(t->schema, rv->schemaname) || !copy_name(t->name, rv->relname) ||
        !copy_name(t->alias, rv->alias ? rv->alias->aliasname : NULL))
        return;
    *local |= 1u << q->n_tables++;
}

/* The tables of a FROM item (joins: both sides; a subquery is a statement
 * of its own, seeing the enclosing ones). */
static void from_tables(struct ex *x, const PgQuery__Node *n, uint32_t *local, uint32_t outer,
                        int depth)
{
    if (!n || depth > MAX_DEPTH)
        return;
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_RANGE_VAR:
        add_table(x, n->range_var, local);
        break;
    case PG_QUERY__NODE__NODE_JOIN_EXPR:
        from_tables(x, n->join_expr->larg, local, outer, depth + 1);
        from_tables(x, n->join_expr->rarg, local, outer, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_RANGE_SUBSELECT: {
        const PgQuery__Node *sub = n->range_subselect->subquery;
        if (sub && sub->node_case == PG_QUERY__NODE__NODE_SELECT_STMT)
            walk_select(x, sub->select_stmt, outer, depth + 1);
        break;
    }
    default:
        break;
    }
}

/* ---- columns -------------------------------------------------------------------- */

/* The table a qualifier names among the visible ones, the innermost
 * first (they were added after the outer ones); -1 if none. */
static int table_named(const struct advice_query *q, uint32_t visible, const char *schema,
                       const char *name)
{
    for (int i = q->n_tables - 1; i >= 0; i--) {
        const struct advice_table *t = &q->tables[i];
        if (!(visible & (1u << i)))
            continue;
        if (schema ? !strcmp(t->schema, schema) && !strcmp(t->name, name)
                   : (t->alias[0] ? !strcmp(t->alias, name) : !strcmp(t->name, name)))
            return i;
    }
    return -1;
}

static void add_ref(struct ex *x, const PgQuery__Node *n, enum advice_use use, uint32_t local,
                    uint32_t visible)
{
    struct advice_query *q = x->q;
    if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF)
        return;
    const PgQuery__ColumnRef *cr = n->column_ref;
    if (cr->n_fields < 1 || cr->n_fields > 3)
        return;
    const char *col = str_of(cr->fields[cr->n_fields - 1]);
    if (!col)
        return; /* t.* */
    int table = -1;
    if (cr->n_fields > 1) {
        const char *name = str_of(cr->fields[cr->n_fields - 2]);
        const char *schema = cr->n_fields == 3 ? str_of(cr->fields[0]) : NULL;
        if (!name || (cr->n_fields == 3 && !schema))
            return;
        table = table_named(q, visible, schema, name);
        if (table < 0)
            return; /* a subquery's or a CTE's column */
    }
    for (int i = 0; i < q->n_refs; i++) {
        struct advice_ref *r = &q->refs[i];
        if (r->table == table && (table >= 0 || r->local == local) && !strcmp(r->column, col)) {
            if (use < r->use)
                r->use = use;
            return;
        }
    }
    if (q->n_refs == ADVICE_MAX_REFS)
        return;
    struct advice_ref *r = &q->refs[q->n_refs];
    if (!copy_name(r->column, col))
        return;
    r->table = table;
    r->local = table < 0 ? local : 0;
    r->visible = table < 0 ? visible : 0;
    r->use = use;
    q->n_refs++;
}

/* The operator of an A_Expr: equality, order, or neither (-1). */
static int op_use(const PgQuery__AExpr *e)
{
    const char *op = e->n_name ? str_of(e->name[e->n_name - 1]) : NULL;
    if (!op)
        return -1;
    if (!strcmp(op, "="))
        return ADVICE_USE_EQ;
    if (!strcmp(op, "<") || !strcmp(op, "<=") || !strcmp(op, ">") || !strcmp(op, ">="))
        return ADVICE_USE_RANGE;
    return -1;
}

/* A condition (WHERE, JOIN ... ON): the columns it compares. */
static void cond(struct ex *x, const PgQuery__Node *n, uint32_t local, uint32_t visible, int depth)
{
    if (!n || depth > MAX_DEPTH)
        return;
    if (n->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR) {
        for (size_t i = 0; i < n->bool_expr->n_args; i++)
            cond(x, n->bool_expr->args[i], local, visible, depth + 1);
    } else if (n->node_case == PG_QUERY__NODE__NODE_A_EXPR) {
        const PgQuery__AExpr *e = n->a_expr;
        int use = -1;
        if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP ||
            e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP_ANY)
            use = op_use(e);
        else if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_IN)
            use = ADVICE_USE_EQ;
        else if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN ||
                 e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN_SYM)
            use = ADVICE_USE_RANGE;
        if (use >= 0) {
            add_ref(x, e->lexpr, (enum advice_use)use, local, visible);
            if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP)
                add_ref(x, e->rexpr, (enum advice_use)use, local, visible);
        }
        cond(x, e->lexpr, local, visible, depth + 1); /* subqueries in operands */
        cond(x, e->rexpr, local, visible, depth + 1);
    } else if (n->node_case == PG_QUERY__NODE__NODE_SUB_LINK) {
        const PgQuery__SubLink *sl = n->sub_link;
        add_ref(x, sl->testexpr, ADVICE_USE_EQ, local, visible); /* col IN (SELECT ...) */
        if (sl->subselect && sl->subselect->node_case == PG_QUERY__NODE__NODE_SELECT_STMT)
            walk_select(x, sl->subselect->select_stmt, visible, depth + 1);
    }
}

/* The conditions of a FROM item's joins. */
static void join_conds(struct ex *x, const PgQuery__Node *n, uint32_t local, uint32_t visible,
                       int depth)
{
    if (!n || depth > MAX_DEPTH || n->node_case != PG_QUERY__NODE__NODE_JOIN_EXPR)
        return;
    join_conds(x, n->join_expr->larg, local, visible, depth + 1);
    join_conds(x, n->join_expr->rarg, local, visible, depth + 1);
    cond(x, n->join_expr->quals, local, visible, depth + 1);
}

/* ---- statements ----------------------------------------------------------------- */

static void with_clause(struct ex *x, const PgQuery__WithClause *w, int depth)
{
    for (size_t i = 0; w && i < w->n_ctes; i++) {
        const PgQuery__Node *n = w->ctes[i];
        if (!n || n->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR)
            continue;
        const PgQuery__CommonTableExpr *cte = n->common_table_expr;
        if (cte->ctename && x->n_ctes < MAX_CTES)
            x->ctes[x->n_ctes++] = cte->ctename;
        const PgQuery__Node *body = cte->ctequery;
        if (body && body->node_case == PG_QUERY__NODE__NODE_SELECT_STMT)
            walk_select(x, body->select_stmt, 0, depth + 1);
        else
            x->not_read = true; /* WITH ... INSERT / UPDATE / DELETE */
    }
}

static void walk_select(struct ex *x, const PgQuery__SelectStmt *s, uint32_t outer, int depth)
{
    if (!s || depth > MAX_DEPTH)
        return;
    if (s->into_clause || s->n_locking_clause)
        x->not_read = true;
    with_clause(x, s->with_clause, depth);
    if (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE) {
        walk_select(x, s->larg, outer, depth + 1);
        walk_select(x, s->rarg, outer, depth + 1);
        return;
    }
    uint32_t local = 0;
    for (size_t i = 0; i < s->n_from_clause; i++)
        from_tables(x, s->from_clause[i], &local, outer, depth + 1);
    uint32_t visible = local | outer;
    for (size_t i = 0; i < s->n_from_clause; i++)
        join_conds(x, s->from_clause[i], local, visible, depth + 1);
    cond(x, s->where_clause, local, visible, depth + 1);
    for (size_t i = 0; i < s->n_sort_clause; i++) {
        const PgQuery__Node *n = s->sort_clause[i];
        if (n && n->node_case == PG_QUERY__NODE__NODE_SORT_BY)
            add_ref(x, n->sort_by->node, ADVICE_USE_ORDER, local, visible);
    }
}

enum advice_cand_status advice_cand_extract(const char *sql, struct advice_query *q)
{
    memset(q, 0, sizeof(*q));
    PgQueryProtobufParseResult pr = pg_query_parse_protobuf(sql);
    PgQuery__ParseResult *tree = NULL;
    if (!pr.error)
        tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
                                              (const uint8_t *)pr.parse_tree.data);
    enum advice_cand_status st = ADVICE_CAND_OK;
    if (!tree) {
        st = ADVICE_CAND_PARSE_ERROR;
    } else if (tree->n_stmts != 1 || !tree->stmts[0]->stmt ||
               tree->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) {
        st = ADVICE_CAND_NOT_SELECT;
    } else {
        struct ex x = {.q = q};
        walk_select(&x, tree->stmts[0]->stmt->select_stmt, 0, 0);
        if (x.not_read)
            st = ADVICE_CAND_NOT_READ;
    }
    if (tree)
        pg_query__parse_result__free_unpacked(tree, NULL);
    pg_query_free_protobuf_parse_result(pr);
    return st;
}

/* ---- candidates ----------------------------------------------------------------- */

struct tcol {
    int table;
    enum advice_use use;
    bool leads;
    const char *name;
};

/* The one table among mask's with the column, or -1. */
static int only_table(const struct advice_query *q, uint32_t mask, const char *column,
                      advice_col_fn col, void *arg)
{
    int found = -1;
    for (int i = 0; i < q->n_tables; i++) {
        if (!(mask & (1u << i)) || col(arg, i, column) == ADVICE_COL_NONE)
            continue;
        if (found >= 0)
            return -2; /* ambiguous: PostgreSQL would refuse it */
        found = i;
    }
    return found;
}

static int resolve(const struct advice_query *q, advice_col_fn col, void *arg, struct tcol *v)
{
    int n = 0;
    for (int i = 0; i < q->n_refs; i++) {
        const struct advice_ref *r = &q->refs[i];
        int t = r->table;
        if (t < 0) {
            t = only_table(q, r->local, r->column, col, arg);
            if (t == -1)
                t = only_table(q, r->visible & ~r->local, r->column, col, arg);
        }
        enum advice_col c = t >= 0 ? col(arg, t, r->column) : ADVICE_COL_NONE;
        if (c == ADVICE_COL_NONE)
            continue;
        int k = 0;
        while (k < n && !(v[k].table == t && !strcmp(v[k].name, r->column)))
            k++;
        if (k == n)
            v[n++] = (struct tcol){t, r->use, c == ADVICE_COL_LEADS, r->column};
        else if (r->use < v[k].use)
            v[k].use = r->use;
    }
    return n;
}

static bool add_index(struct advice_index *out, int *n, int max, int table, const char *a,
                      const char *b)
{
    if (*n == max)
        return false;
    struct advice_index *ix = &out[(*n)++];
    ix->table = table;
    ix->ncols = b ? 2 : 1;
    copy_name(ix->cols[0], a);
    copy_name(ix->cols[1], b ? b : "");
    return true;
}

int advice_cand_indexes(const struct advice_query *q, advice_col_fn col, void *arg,
                        struct advice_index *out, int max)
{
    struct tcol v[ADVICE_MAX_REFS];
    int nv = resolve(q, col, arg, v);
    /* Equality columns first, then order, then sort: the order of a pair's
     * second column. */
    for (int i = 1; i < nv; i++)
        for (int k = i; k > 0 && v[k].use < v[k - 1].use; k--) {
            struct tcol t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    int n = 0;
    for (int i = 0; i < nv; i++)
        if (!v[i].leads && !add_index(out, &n, max, v[i].table, v[i].name, NULL))
            return n;
    for (int i = 0; i < nv; i++) {
        if (v[i].leads || v[i].use != ADVICE_USE_EQ)
            continue;
        for (int k = 0; k < nv; k++)
            if (k != i && v[k].table == v[i].table &&
                !add_index(out, &n, max, v[i].table, v[i].name, v[k].name))
                return n;
    }
    return n;
}

/* ---- SQL ------------------------------------------------------------------------ */

/* PostgreSQL's reserved key words (and those that cannot be column names). */
static const char *const reserved[] = {"all",
                                       "analyse",
                                       "analyze",
                                       "and",
                                       "any",
                                       "array",
                                       "as",
                                       "asc",
                                       "asymmetric",
                                       "authorization",
                                       "binary",
                                       "both",
                                       "case",
                                       "cast",
                                       "check",
                                       "collate",
                                       "collation",
                                       "column",
                                       "concurrently",
                                       "constraint",
                                       "create",
                                       "cross",
                                       "current_catalog",
                                       "current_date",
                                       "current_role",
                                       "current_schema",
                                       "current_time",
                                       "current_timestamp",
                                       "current_user",
                                       "default",
                                       "deferrable",
                                       "desc",
                                       "distinct",
                                       "do",
                                       "else",
                                       "end",
                                       "except",
                                       "false",
                                       "fetch",
                                       "for",
                                       "foreign",
                                       "freeze",
                                       "from",
                                       "full",
                                       "grant",
                                       "group",
                                       "having",
                                       "ilike",
                                       "in",
                                       "initially",
                                       "inner",
                                       "intersect",
                                       "into",
                                       "is",
                                       "isnull",
                                       "join",
                                       "lateral",
                                       "leading",
                                       "left",
                                       "like",
                                       "limit",
                                       "localtime",
                                       "localtimestamp",
                                       "natural",
                                       "not",
                                       "notnull",
                                       "null",
                                       "offset",
                                       "on",
                                       "only",
                                       "or",
                                       "order",
                                       "outer",
                                       "overlaps",
                                       "placing",
                                       "primary",
                                       "references",
                                       "returning",
                                       "right",
                                       "select",
                                       "session_user",
                                       "similar",
                                       "some",
                                       "symmetric",
                                       "system_user",
                                       "table",
                                       "tablesample",
                                       "then",
                                       "to",
                                       "trailing",
                                       "true",
                                       "union",
                                       "unique",
                                       "user",
                                       "using",
                                       "variadic",
                                       "verbose",
                                       "when",
                                       "where",
                                       "window",
                                       "with"};

bool advice_cand_quote(const char *name, char *out, size_t len)
{
    bool plain = *name && !(*name >= '0' && *name <= '9');
    for (const char *p = name; plain && *p; p++)
        plain = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
    for (size_t i = 0; plain && i < sizeof(reserved) / sizeof(reserved[0]); i++)
        plain = strcmp(name, reserved[i]) != 0;
    size_t k = 0;
    if (!plain && k < len)
        out[k++] = '"';
    for (const char *p = name; *p; p++) {
        if (!plain && *p == '"' && k < len)
            out[k++] = '"';
        if (k < len)
            out[k++] = *p;
    }
    if (!plain && k < len)
        out[k++] = '"';
    if (k >= len)
        return false;
    out[k] = '\0';
    return true;
}

bool advice_cand_index_sql(const char *schema, const char *table, const struct advice_index *ix,
                           bool concurrently, char *out, size_t len)
{
    char s[2 * ADVICE_NAME_MAX + 3], t[2 * ADVICE_NAME_MAX + 3], a[2 * ADVICE_NAME_MAX + 3],
        b[2 * ADVICE_NAME_MAX + 3] = "";
    if (!advice_cand_quote(schema, s, sizeof(s)) || !advice_cand_quote(table, t, sizeof(t)) ||
        !advice_cand_quote(ix->cols[0], a, sizeof(a)) ||
        (ix->ncols > 1 && !advice_cand_quote(ix->cols[1], b, sizeof(b))))
        return false;
    int n = snprintf(out, len, "CREATE INDEX %sON %s.%s (%s%s%s)",
                     concurrently ? "CONCURRENTLY " : "", s, t, a, ix->ncols > 1 ? ", " : "", b);
    return n > 0 && (size_t)n < len;
}
