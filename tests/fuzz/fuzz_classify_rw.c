/* fuzz_classify_rw.c - libFuzzer target for the read-only classifier.
 *
 * The input is a query text: any bytes, copied into a heap block of exactly
 * its length plus the NUL the classifier's contract asks for. It is
 * classified without the cache (classify_rw_parse), then twice through the
 * cache (classify_rw_cached: a miss, then a hit; the cache fills up and
 * evicts over a run). Then:
 *  - the cached and uncached results agree field by field, relations
 *    included; a text found by its shape (a text of the run differing only
 *    in constants, blanks or comments came first) too, all but its
 *    statements' offsets, which are the other text's;
 *  - a result is consistent: READ means no statement writes, no parse error
 *    and no truncation; WRITE has a reason and a writing statement (or a
 *    parse error or truncation); statements lie inside the text, within the
 *    bounds; a statement calling a deny-listed function writes;
 *  - function names are NUL-terminated, non-empty, shorter than
 *    CLASSIFY_RW_MAX_NAME, their reason is "function NAME", and the built-in
 *    lists give them the class the result says;
 *  - resolving (strict, list mode, with configured lists) never makes a
 *    WRITE a read; LOOKUP names are distinct unknown functions of the
 *    text; list mode never asks; answering the lookups gives READ or WRITE,
 *    WRITE exactly when an answer was 'v' or unknown.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "classify_rw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool cond)
{
    if (!cond)
        abort();
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_funcs(const struct classify_rw_result *r)
{
    require(r->n_funcs >= 0 && r->n_funcs <= CLASSIFY_RW_ALL_FUNCS);
    for (int i = 0; i < r->n_funcs; i++) {
        const struct classify_rw_func *f = &r->funcs[i];
        size_t l = strnlen(f->name, CLASSIFY_RW_MAX_NAME);
        require(l > 0 && l < CLASSIFY_RW_MAX_NAME);
        require(strncmp(f->reason, "function ", 9) == 0 && f->reason + 9 == f->name);
        require(classify_rw_builtin(f->name) == f->cls);
    }
}

static void check_result(const struct classify_rw_result *r, size_t size)
{
    require(r->n >= 0 && r->n <= CLASSIFY_RW_MAX_STMTS);
    require(!r->parse_error || r->n == 0);
    require(!r->truncated || r->n == CLASSIFY_RW_MAX_STMTS);
    require(r->hint >= CRW_HINT_NONE && r->hint <= CRW_HINT_REPLICA);
    require(!r->pins || r->pin_reason);
    check_funcs(r);
    bool any_write = false, any_pin = false, any_whole = false;
    int funcs_seen = 0;
    for (int i = 0; i < r->n; i++) {
        const struct classify_rw_stmt *st = &r->stmts[i];
        require((size_t)st->off + st->len <= size);
        require(st->verdict == CRW_READ || st->verdict == CRW_WRITE);
        require((st->verdict == CRW_WRITE) == (st->reason != NULL));
        require(st->read_only >= -1 && st->read_only <= 1);
        require(!st->pins || st->pin_reason);
        require(st->txn != CRW_TXN_PREPARED || st->verdict == CRW_WRITE);
        require(st->n_funcs <= CLASSIFY_RW_MAX_FUNCS);
        require(st->func0 == funcs_seen);
        funcs_seen += st->n_funcs;
        require(funcs_seen <= r->n_funcs);
        for (int k = 0; k < st->n_funcs; k++) {
            enum classify_rw_fclass c = r->funcs[st->func0 + k].cls;
            if (c == CRW_FN_WRITE || c == CRW_FN_WRITE_PIN)
                require(st->verdict == CRW_WRITE);
            if (c == CRW_FN_WRITE_PIN)
                require(st->pins && r->pins);
        }
        any_write |= st->verdict == CRW_WRITE;
        any_pin |= st->pins;
        any_whole |= st->whole_txn_primary;
    }
    require(funcs_seen == r->n_funcs);
    require(!any_pin || r->pins);
    require(!any_whole || r->whole_txn_primary);
    if (r->verdict == CRW_READ) {
        require(!any_write && !r->parse_error && !r->truncated && r->reason == NULL);
    } else {
        require(r->verdict == CRW_WRITE && r->reason != NULL);
        require(any_write || r->parse_error || r->truncated);
    }
}

static void check_same(const struct classify_rw_result *a, const struct classify_rw_result *b,
                       bool offsets)
{
    require(a->verdict == b->verdict && same_str(a->reason, b->reason));
    require(a->hint == b->hint && a->parse_error == b->parse_error &&
            a->truncated == b->truncated && a->pins == b->pins &&
            a->whole_txn_primary == b->whole_txn_primary && same_str(a->pin_reason, b->pin_reason));
    require(a->n == b->n && a->n_funcs == b->n_funcs);
    for (int i = 0; i < a->n; i++) {
        const struct classify_rw_stmt *x = &a->stmts[i], *y = &b->stmts[i];
        require(x->verdict == y->verdict && same_str(x->reason, y->reason));
        require(x->txn == y->txn && x->isolation == y->isolation && x->read_only == y->read_only);
        require(x->whole_txn_primary == y->whole_txn_primary && x->pins == y->pins &&
                x->is_set == y->is_set && x->set_local == y->set_local &&
                same_str(x->pin_reason, y->pin_reason));
        require(!offsets || (x->off == y->off && x->len == y->len));
        require(x->func0 == y->func0 && x->n_funcs == y->n_funcs);
    }
    for (int i = 0; i < a->n_funcs; i++)
        require(!strcmp(a->funcs[i].name, b->funcs[i].name) && a->funcs[i].cls == b->funcs[i].cls);
    require(a->n_rels == b->n_rels && a->rels_truncated == b->rels_truncated &&
            a->varies == b->varies);
    for (int i = 0; i < a->n_rels; i++)
        require(!strcmp(a->rels[i].name, b->rels[i].name) && a->rels[i].write == b->rels[i].write &&
                a->rels[i].maybe_cte == b->rels[i].maybe_cte);
}

/* A made-up pg_proc: the answer depends on the name only. */
static char volatility(const char *name, void *arg)
{
    (void)arg;
    static const char answers[] = {'i', 's', 'v', 0};
    unsigned h = 0;
    for (const char *p = name; *p; p++)
        h = h * 31 + (unsigned char)*p;
    return answers[h % 4];
}

static void check_decision(const struct classify_rw_result *r,
                           const struct classify_rw_functions *fns)
{
    struct classify_rw_decision d;
    enum classify_rw_verdict v = classify_rw_resolve(r, fns, &d);
    require(v == d.verdict && d.n == r->n);
    if (r->verdict == CRW_WRITE)
        require(v == CRW_WRITE && d.reason);
    require((v == CRW_WRITE) == (d.reason != NULL));
    if (fns && !fns->strict)
        require(v != CRW_LOOKUP);
    require(v == CRW_LOOKUP ? d.n_lookup > 0 : d.n_lookup == 0);
    require(d.n_lookup <= CLASSIFY_RW_MAX_LOOKUP);
    bool any_lookup_stmt = false;
    for (int i = 0; i < d.n; i++) {
        require(d.stmt[i] == CRW_READ || d.stmt[i] == CRW_WRITE || d.stmt[i] == CRW_LOOKUP);
        if (r->stmts[i].verdict == CRW_WRITE)
            require(d.stmt[i] == CRW_WRITE);
        any_lookup_stmt |= d.stmt[i] == CRW_LOOKUP;
        if (v == CRW_READ)
            require(d.stmt[i] == CRW_READ);
    }
    if (v == CRW_LOOKUP)
        require(any_lookup_stmt);
    bool expect_write = false;
    for (int k = 0; k < d.n_lookup; k++) {
        size_t l = strnlen(d.lookup[k], CLASSIFY_RW_MAX_NAME);
        require(l > 0 && l < CLASSIFY_RW_MAX_NAME);
        require(classify_rw_builtin(d.lookup[k]) == CRW_FN_UNKNOWN);
        require(d.lookup_stmts[k] != 0 && d.lookup_stmts[k] < (1u << d.n));
        for (int j = 0; j < k; j++)
            require(strcmp(d.lookup[j], d.lookup[k]) != 0);
        char a = volatility(d.lookup[k], NULL);
        expect_write |= a != 'i' && a != 's';
    }
    if (v != CRW_LOOKUP)
        return;
    v = classify_rw_resolve_lookup(&d, volatility, NULL);
    require(v == (expect_write ? CRW_WRITE : CRW_READ));
    require((v == CRW_WRITE) == (d.reason != NULL));
    for (int i = 0; i < d.n; i++)
        require(d.stmt[i] == CRW_READ || d.stmt[i] == CRW_WRITE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *sql = malloc(size + 1);
    require(sql != NULL);
    memcpy(sql, data, size);
    sql[size] = '\0';

    struct classify_rw_result *u = classify_rw_parse(sql, size);
    check_result(u, size);
    struct classify_rw_counters k0, k1;
    classify_rw_counters(&k0);
    const struct classify_rw_result *c1 = classify_rw_cached(sql, size);
    classify_rw_counters(&k1);
    bool found = k1.hits > k0.hits; /* this text before, or one of its shape */
    check_same(u, c1, !found);
    const struct classify_rw_result *c2 = classify_rw_cached(sql, size);
    if (size <= CLASSIFY_RW_CACHE_MAX_TEXT)
        require(c2 == c1);
    check_same(u, c2, !found);

    static const char *const writes[] = {"f", "app.g", "RANDOM"};
    static const char *const reads[] = {"h", "app.f", "x.y"};
    const struct classify_rw_functions strict = {.strict = true};
    const struct classify_rw_functions list = {.strict = false};
    const struct classify_rw_functions lists = {writes, 3, reads, 3, true};
    check_decision(u, NULL);
    check_decision(u, &strict);
    check_decision(u, &list);
    check_decision(u, &lists);

    classify_rw_free(u);
    free(sql);
    return 0;
}
