/* classify_rw_fn.c - what the functions a statement calls say about it:
 * the built-in deny, allow and known-stable lists, the configured lists,
 * and the answers of pg_proc (classify_rw.h, steps 2 and 3).
 *
 * Nothing here depends on a parse: classify_rw.c asks classify_rw_builtin()
 * once per function when it parses, and the router resolves a cached result
 * under the configuration of the moment. */
#include "classify_rw.h"

#include <string.h>
#include <strings.h>

const char *classify_rw_fclass_str(enum classify_rw_fclass c)
{
    static const char *const names[] = {"unknown", "stable", "safe", "write", "write_pin"};
    return (unsigned)c < sizeof(names) / sizeof(names[0]) ? names[c] : "?";
}

/* ---- the built-in lists ---------------------------------------------------- */

/* Each list is sorted (strcmp, lower case): binary search. docs/routing.md
 * lists them all; test_classify_rw checks both. */

/* Write, or must run on the primary: sequences, xid assignment, session
 * state sluice cannot follow (set_config, setseed), notifications, large
 * objects, replication slots and WAL control, signals to backends, stats
 * resets, backups. txid_current and pg_current_xact_id are marked stable in
 * pg_proc but assign a transaction id, which a replica refuses. */
/* clang-format off */
static const char *const deny_names[] = {
    "currval", "lastval", "loread", "lowrite", "nextval", "pg_backup_start", "pg_backup_stop",
    "pg_cancel_backend", "pg_copy_logical_replication_slot", "pg_copy_physical_replication_slot",
    "pg_create_logical_replication_slot", "pg_create_physical_replication_slot",
    "pg_create_restore_point", "pg_current_wal_flush_lsn", "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn", "pg_current_xact_id", "pg_drop_replication_slot",
    "pg_import_system_collations", "pg_log_backend_memory_contexts", "pg_logical_emit_message",
    "pg_notify", "pg_promote", "pg_reload_conf", "pg_replication_slot_advance",
    "pg_rotate_logfile", "pg_start_backup", "pg_stat_statements_reset", "pg_stop_backup",
    "pg_switch_wal", "pg_terminate_backend", "pg_wal_replay_pause", "pg_wal_replay_resume",
    "set_config", "setseed", "setval", "txid_current"
};
/* clang-format on */

/* Deny list, and session state: the session-level advisory locks. */
/* clang-format off */
static const char *const pin_names[] = {
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared"
};
/* clang-format on */

/* Deny list by prefix, written with a '*' (every variant: the _xact_ advisory locks, unlocks,
 * lo_import / lo_export / lo_put ..., dblink_exec ..., pg_stat_reset_*). */
/* clang-format off */
static const char *const deny_prefixes[] = {
    "binary_upgrade_*", "dblink*", "lo_*", "pg_advisory_*", "pg_file_*", "pg_logical_slot_*",
    "pg_replication_origin_*", "pg_stat_reset*", "pg_try_advisory_*"
};
/* clang-format on */

/* Volatile in pg_proc, but they never write. */
/* clang-format off */
static const char *const safe_names[] = {
    "clock_timestamp", "current_query", "gen_random_uuid", "pg_blocking_pids", "pg_database_size",
    "pg_get_wal_replay_pause_state", "pg_indexes_size", "pg_is_in_recovery",
    "pg_is_wal_replay_paused", "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp", "pg_relation_size", "pg_sleep", "pg_sleep_for",
    "pg_sleep_until", "pg_table_size", "pg_tablespace_size", "pg_total_relation_size", "random",
    "random_normal", "timeofday", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4"
};
/* clang-format on */

/* Immutable or stable in PostgreSQL 15's pg_proc (every overload), common
 * enough that a lookup for them would be waste. Some come from SQL syntax:
 * EXTRACT, SUBSTRING, TRIM, POSITION, OVERLAY, AT TIME ZONE, LIKE / SIMILAR
 * ... ESCAPE, COLLATION FOR and NORMALIZE parse as pg_catalog functions.
 * txid_current_if_assigned and pg_current_xact_id_if_assigned never assign
 * an id: a transaction that runs on a replica has none, which is the truth. */
/* clang-format off */
static const char *const stable_names[] = {
    "abs", "acos", "age", "array_agg", "array_append", "array_cat", "array_dims", "array_fill",
    "array_length", "array_lower", "array_ndims", "array_position", "array_positions",
    "array_prepend", "array_remove", "array_replace", "array_to_json", "array_to_string",
    "array_upper", "ascii", "asin", "atan", "atan2", "avg", "bit_and", "bit_length", "bit_or",
    "bit_xor", "bool_and", "bool_or", "btrim", "cardinality", "cbrt", "ceil", "ceiling",
    "char_length", "character_length", "chr", "col_description", "concat", "concat_ws", "corr",
    "cos", "cot", "count", "covar_pop", "covar_samp", "cume_dist", "current_database",
    "current_schema", "current_schemas", "current_setting", "date", "date_bin", "date_part",
    "date_trunc", "decode", "degrees", "dense_rank", "div", "encode", "every", "exp", "extract",
    "first_value", "float8", "floor", "format", "format_type", "gcd", "generate_series",
    "generate_subscripts", "has_any_column_privilege", "has_column_privilege",
    "has_database_privilege", "has_function_privilege", "has_schema_privilege",
    "has_sequence_privilege", "has_table_privilege", "host", "inet_client_addr",
    "inet_client_port", "inet_server_addr", "inet_server_port", "initcap", "int4", "int8",
    "is_normalized", "isfinite", "json_agg", "json_array_elements", "json_array_elements_text",
    "json_array_length", "json_build_array", "json_build_object", "json_each", "json_each_text",
    "json_extract_path", "json_extract_path_text", "json_object", "json_object_agg",
    "json_object_keys", "json_populate_record", "json_populate_recordset", "json_strip_nulls",
    "json_to_record", "json_to_recordset", "json_typeof", "jsonb_agg", "jsonb_array_elements",
    "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array", "jsonb_build_object",
    "jsonb_each", "jsonb_each_text", "jsonb_extract_path", "jsonb_extract_path_text",
    "jsonb_insert", "jsonb_object", "jsonb_object_agg", "jsonb_object_keys", "jsonb_path_exists",
    "jsonb_path_match", "jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_first",
    "jsonb_populate_record", "jsonb_populate_recordset", "jsonb_pretty", "jsonb_set",
    "jsonb_set_lax", "jsonb_strip_nulls", "jsonb_to_record", "jsonb_to_recordset", "jsonb_typeof",
    "justify_days", "justify_hours", "justify_interval", "lag", "last_value", "lcm", "lead",
    "left", "length", "like_escape", "ln", "log", "log10", "lower", "lpad", "ltrim", "make_date",
    "make_interval", "make_time", "make_timestamp", "make_timestamptz", "max", "md5", "min", "mod",
    "mode", "normalize", "now", "nth_value", "ntile", "num_nonnulls", "num_nulls", "numeric",
    "obj_description", "octet_length", "overlaps", "overlay", "percent_rank", "percentile_cont",
    "percentile_disc", "pg_backend_pid", "pg_collation_for", "pg_column_size", "pg_conf_load_time",
    "pg_current_snapshot", "pg_current_xact_id_if_assigned", "pg_encoding_to_char",
    "pg_function_is_visible", "pg_get_constraintdef", "pg_get_expr", "pg_get_function_arguments",
    "pg_get_function_identity_arguments", "pg_get_function_result", "pg_get_functiondef",
    "pg_get_indexdef", "pg_get_keywords", "pg_get_serial_sequence", "pg_get_triggerdef",
    "pg_get_userbyid", "pg_get_viewdef", "pg_has_role", "pg_postmaster_start_time",
    "pg_size_bytes", "pg_size_pretty", "pg_snapshot_xmax", "pg_snapshot_xmin",
    "pg_table_is_visible", "pg_trigger_depth", "pg_type_is_visible", "pg_typeof",
    "pg_wal_lsn_diff", "phraseto_tsquery", "pi", "plainto_tsquery", "position", "pow", "power",
    "quote_ident", "quote_literal", "quote_nullable", "radians", "rank", "regexp_count",
    "regexp_instr", "regexp_like", "regexp_match", "regexp_matches", "regexp_replace",
    "regexp_split_to_array", "regexp_split_to_table", "regexp_substr", "repeat", "replace",
    "reverse", "right", "round", "row_number", "row_to_json", "rpad", "rtrim", "scale",
    "setweight", "sha224", "sha256", "sha384", "sha512", "shobj_description", "sign",
    "similar_escape", "similar_to_escape", "sin", "split_part", "sqrt", "starts_with",
    "statement_timestamp", "stddev", "stddev_pop", "stddev_samp", "string_agg", "string_to_array",
    "string_to_table", "strpos", "substr", "substring", "sum", "tan", "text", "timezone",
    "to_char", "to_date", "to_hex", "to_json", "to_jsonb", "to_number", "to_regclass",
    "to_regproc", "to_regprocedure", "to_regtype", "to_timestamp", "to_tsquery", "to_tsvector",
    "transaction_timestamp", "translate", "trim_array", "trim_scale", "trunc", "ts_headline",
    "ts_rank", "ts_rank_cd", "txid_current_if_assigned", "txid_current_snapshot", "unnest",
    "upper", "var_pop", "var_samp", "variance", "version", "websearch_to_tsquery", "width_bucket",
    "xmlagg"
};
/* clang-format on */

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static bool in_sorted(const char *const *list, int n, const char *name)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, list[mid]);
        if (c == 0)
            return true;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return false;
}

/* The class of schema.name (schema NULL: unqualified). Deny entries match
 * in any case; allow entries only the exact, lower-case name in no schema
 * or exactly pg_catalog. */
static enum classify_rw_fclass builtin_of(const char *schema, const char *name)
{
    if (schema && strcasecmp(schema, "pg_catalog") != 0)
        return CRW_FN_UNKNOWN;
    char low[CLASSIFY_RW_MAX_NAME];
    size_t n = strlen(name);
    if (n >= sizeof(low))
        return CRW_FN_UNKNOWN;
    bool lower = true;
    for (size_t i = 0; i <= n; i++) {
        char ch = name[i];
        if (ch >= 'A' && ch <= 'Z') {
            ch = (char)(ch - 'A' + 'a');
            lower = false;
        }
        low[i] = ch;
    }
    if (in_sorted(pin_names, NELEM(pin_names), low))
        return CRW_FN_WRITE_PIN;
    if (in_sorted(deny_names, NELEM(deny_names), low))
        return CRW_FN_WRITE;
    for (int i = 0; i < NELEM(deny_prefixes); i++)
        if (strncmp(low, deny_prefixes[i], strlen(deny_prefixes[i]) - 1) == 0)
            return CRW_FN_WRITE;
    if (!lower || (schema && strcmp(schema, "pg_catalog") != 0))
        return CRW_FN_UNKNOWN;
    if (in_sorted(safe_names, NELEM(safe_names), low))
        return CRW_FN_SAFE;
    if (in_sorted(stable_names, NELEM(stable_names), low))
        return CRW_FN_STABLE;
    return CRW_FN_UNKNOWN;
}

enum classify_rw_fclass classify_rw_builtin(const char *name)
{
    const char *dot = strchr(name, '.');
    if (!dot)
        return builtin_of(NULL, name);
    char schema[CLASSIFY_RW_MAX_NAME];
    size_t n = (size_t)(dot - name);
    if (n >= sizeof(schema) || strchr(dot + 1, '.'))
        return CRW_FN_UNKNOWN;
    memcpy(schema, name, n);
    schema[n] = '\0';
    return builtin_of(schema, dot + 1);
}

const char *classify_rw_builtin_name(enum classify_rw_fclass cls, int i)
{
    if (i < 0)
        return NULL;
    switch (cls) {
    case CRW_FN_STABLE:
        return i < NELEM(stable_names) ? stable_names[i] : NULL;
    case CRW_FN_SAFE:
        return i < NELEM(safe_names) ? safe_names[i] : NULL;
    case CRW_FN_WRITE_PIN:
        return i < NELEM(pin_names) ? pin_names[i] : NULL;
    case CRW_FN_WRITE:
        if (i < NELEM(deny_names))
            return deny_names[i];
        i -= NELEM(deny_names);
        return i < NELEM(deny_prefixes) ? deny_prefixes[i] : NULL;
    default:
        return NULL;
    }
}

/* ---- resolving functions ----------------------------------------------------- */

/* The part after the last dot, and whether there was one. */
static const char *base_name(const char *s, bool *qualified)
{
    const char *dot = strrchr(s, '.');
    *qualified = dot != NULL;
    return dot ? dot + 1 : s;
}

/* A configured write name matches case-insensitively; an unqualified name
 * on either side matches any schema. */
static bool write_listed(const struct classify_rw_functions *fns, const char *name)
{
    bool nq;
    const char *nb = base_name(name, &nq);
    for (int i = 0; i < fns->n_write; i++) {
        const char *cfg = fns->write[i];
        bool cq;
        const char *cb = cfg ? base_name(cfg, &cq) : NULL;
        if (!cb || strcasecmp(cb, nb) != 0)
            continue;
        if (!cq || !nq)
            return true;
        if ((size_t)(cb - cfg) == (size_t)(nb - name) &&
            !strncasecmp(cfg, name, (size_t)(cb - cfg)))
            return true;
    }
    return false;
}

static bool read_listed(const struct classify_rw_functions *fns, const char *name)
{
    for (int i = 0; i < fns->n_read; i++)
        if (fns->read[i] && !strcmp(fns->read[i], name))
            return true;
    return false;
}

static enum classify_rw_verdict resolve_func(const struct classify_rw_func *f,
                                             const struct classify_rw_functions *fns)
{
    if (f->cls == CRW_FN_WRITE || f->cls == CRW_FN_WRITE_PIN)
        return CRW_WRITE;
    if (fns->n_write > 0 && write_listed(fns, f->name))
        return CRW_WRITE;
    if (f->cls == CRW_FN_STABLE || f->cls == CRW_FN_SAFE)
        return CRW_READ;
    if (fns->n_read > 0 && read_listed(fns, f->name))
        return CRW_READ;
    return fns->strict ? CRW_LOOKUP : CRW_READ;
}

/* Adds f to d's lookups for statement i; false when there is no room. */
static bool add_lookup(struct classify_rw_decision *d, const struct classify_rw_func *f, int i)
{
    int k = 0;
    while (k < d->n_lookup && strcmp(d->lookup[k], f->name) != 0)
        k++;
    if (k == d->n_lookup) {
        if (k >= CLASSIFY_RW_MAX_LOOKUP)
            return false;
        d->lookup[k] = f->name;
        d->lookup_reason[k] = f->reason;
        d->lookup_stmts[k] = 0;
        d->n_lookup++;
    }
    d->lookup_stmts[k] |= (uint16_t)(1u << i);
    return true;
}

/* The text's verdict from the statements' ones (why[i]: WRITE reasons). */
static void combine(struct classify_rw_decision *d, const char *const *why, bool forced_write,
                    const char *forced_reason)
{
    d->verdict = CRW_READ;
    d->reason = NULL;
    for (int i = 0; i < d->n; i++) {
        if (d->stmt[i] == CRW_WRITE) {
            d->verdict = CRW_WRITE;
            d->reason = why[i];
            break;
        }
        if (d->stmt[i] == CRW_LOOKUP)
            d->verdict = CRW_LOOKUP;
    }
    if (forced_write && d->verdict != CRW_WRITE) {
        d->verdict = CRW_WRITE;
        d->reason = forced_reason;
    }
    if (d->verdict != CRW_LOOKUP)
        d->n_lookup = 0;
}

enum classify_rw_verdict classify_rw_resolve(const struct classify_rw_result *r,
                                             const struct classify_rw_functions *fns,
                                             struct classify_rw_decision *d)
{
    static const struct classify_rw_functions defaults = {.strict = true};
    const char *why[CLASSIFY_RW_MAX_STMTS];
    if (!fns)
        fns = &defaults;
    d->n = r->n;
    d->n_lookup = 0;
    for (int i = 0; i < r->n; i++) {
        const struct classify_rw_stmt *st = &r->stmts[i];
        d->stmt[i] = st->verdict;
        why[i] = st->reason;
        for (int k = 0; k < st->n_funcs && d->stmt[i] != CRW_WRITE; k++) {
            const struct classify_rw_func *f = &r->funcs[st->func0 + k];
            enum classify_rw_verdict v = resolve_func(f, fns);
            if (v == CRW_WRITE) {
                d->stmt[i] = CRW_WRITE;
                why[i] = f->reason;
            } else if (v == CRW_LOOKUP) {
                d->stmt[i] = CRW_LOOKUP;
                if (!add_lookup(d, f, i)) {
                    d->stmt[i] = CRW_WRITE;
                    why[i] = "too many functions";
                }
            }
        }
    }
    combine(d, why, r->parse_error || r->truncated, r->reason);
    return d->verdict;
}

enum classify_rw_verdict classify_rw_resolve_lookup(struct classify_rw_decision *d,
                                                    char (*volatility)(const char *name, void *arg),
                                                    void *arg)
{
    if (d->verdict != CRW_LOOKUP)
        return d->verdict;
    const char *why[CLASSIFY_RW_MAX_STMTS] = {0};
    for (int k = 0; k < d->n_lookup; k++) {
        char v = volatility(d->lookup[k], arg);
        if (v == 'i' || v == 's')
            continue;
        for (int i = 0; i < d->n; i++)
            if ((d->lookup_stmts[k] & (1u << i)) && !why[i])
                why[i] = d->lookup_reason[k];
    }
    for (int i = 0; i < d->n; i++)
        if (d->stmt[i] == CRW_LOOKUP)
            d->stmt[i] = why[i] ? CRW_WRITE : CRW_READ;
    combine(d, why, false, NULL);
    return d->verdict;
}
