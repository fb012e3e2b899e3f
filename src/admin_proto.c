/* admin_proto.c - the pure parts of the admin console, covered by
 * tests/unit/test_admin.c: the command parser (SQL text, with the $n
 * parameters of the extended protocol, into a struct admin_cmd) and the
 * encoding of results (RowDescription, DataRow in text or binary,
 * CommandComplete, errors and notices). No sockets, no global state. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "admin_int.h"
#include "insights.h"
#include "log.h"
#include "sql_lex.h"

const char *admin_verb_str(enum admin_verb v)
{
    static const char *const names[] = {
        "",           "SHOW",     "SET",         "RELOAD",    "PAUSE",         "RESUME",
        "SUSPEND",    "DISABLE",  "ENABLE",      "RECONNECT", "KILL",          "KILL_CLIENT",
        "WAIT_CLOSE", "SHUTDOWN", "CACHE CLEAR", "RUN JOB",   "INSIGHTS RESET"};
    return (unsigned)v < sizeof(names) / sizeof(names[0]) ? names[v] : "?";
}

enum tok_kind {
    TK_WORD = 0, /* a bare word: keyword, name, number */
    TK_IDENT,    /* "quoted identifier" */
    TK_STRING,   /* 'string literal' */
    TK_PARAM,    /* $n, replaced by its bound value when there is one */
    TK_EQ,       /* = */
};

#define MAX_TOKENS  16
#define TOKEN_BYTES (ADMIN_VALUE_MAX + 2 * ADMIN_ARG_MAX)

struct tokens {
    int n;
    enum tok_kind kind[MAX_TOKENS];
    const char *text[MAX_TOKENS];
    char buf[TOKEN_BYTES];
    size_t used;
};

/* Skips blanks and SQL comments; returns the next significant character. */
static const char *skip_blanks(const char *p)
{
    for (;;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && !sql_newline(*p))
                p++;
            continue;
        }
        if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end ? end + 2 : p + strlen(p);
            continue;
        }
        return p;
    }
}

/* Appends n bytes of s (plus a NUL) to the token buffer. */
static char *tok_store(struct tokens *t, const char *s, size_t n)
{
    if (t->used + n + 1 > sizeof(t->buf))
        return NULL;
    char *d = t->buf + t->used;
    memcpy(d, s, n);
    d[n] = '\0';
    t->used += n + 1;
    return d;
}

/* A quoted token starting at *pp (quote q, doubled to escape it). */
static char *tok_quoted(struct tokens *t, const char **pp, char q)
{
    const char *p = *pp + 1;
    if (t->used >= sizeof(t->buf))
        return NULL;
    char *d = t->buf + t->used;
    size_t room = sizeof(t->buf) - t->used - 1, n = 0;
    for (;;) {
        if (!*p)
            return NULL;
        if (*p == q) {
            if (p[1] != q)
                break;
            p++;
        }
        if (n >= room)
            return NULL;
        d[n++] = *p++;
    }
    d[n] = '\0';
    t->used += n + 1;
    *pp = p + 1;
    return d;
}

static bool is_word_char(char ch)
{
    return ch && !isspace((unsigned char)ch) && ch != ';' && ch != '=' && ch != '\'' && ch != '"';
}

static bool tokenize(const char *sql, int nparams, const char *const *params, struct tokens *t,
                     char *err, size_t errlen)
{
    const char *p = sql;
    bool ended = false; /* a ';' was seen: only blanks may follow */
    t->n = 0;
    t->used = 0;
    for (;;) {
        p = skip_blanks(p);
        if (!*p)
            return true;
        if (*p == ';') {
            ended = true;
            p++;
            continue;
        }
        if (ended) {
            log_format(err, errlen, "only one command per query is supported");
            return false;
        }
        if (t->n == MAX_TOKENS) {
            log_format(err, errlen, "command has too many words");
            return false;
        }
        enum tok_kind kind;
        char *text;
        if (*p == '"' || *p == '\'') {
            kind = *p == '"' ? TK_IDENT : TK_STRING;
            text = tok_quoted(t, &p, *p);
            if (!text) {
                log_format(err, errlen, "unterminated quoted %s, or too long",
                           kind == TK_IDENT ? "identifier" : "string");
                return false;
            }
        } else if (*p == '=') {
            kind = TK_EQ;
            text = tok_store(t, "=", 1);
            p++;
        } else if (*p == '$' && isdigit((unsigned char)p[1])) {
            const char *start = p++;
            long n = 0;
            while (isdigit((unsigned char)*p) && n < 100000)
                n = n * 10 + (*p++ - '0');
            if (is_word_char(*p)) {
                log_format(err, errlen, "syntax error at \"%.*s\"", (int)(p - start) + 1, start);
                return false;
            }
            kind = TK_PARAM;
            if (!params) {
                text = tok_store(t, start, (size_t)(p - start));
            } else if (n < 1 || n > nparams) {
                log_format(err, errlen, "there is no parameter $%ld", n);
                return false;
            } else if (!params[n - 1]) {
                log_format(err, errlen, "parameter $%ld is NULL", n);
                return false;
            } else {
                text = tok_store(t, params[n - 1], strlen(params[n - 1]));
            }
        } else {
            const char *start = p;
            while (is_word_char(*p))
                p++;
            kind = TK_WORD;
            text = tok_store(t, start, (size_t)(p - start));
        }
        if (!text) {
            log_format(err, errlen, "command too long");
            return false;
        }
        t->kind[t->n] = kind;
        t->text[t->n] = text;
        t->n++;
    }
}

int admin_count_params(const char *sql)
{
    int max = 0;
    const char *p = sql;
    while (*(p = skip_blanks(p))) {
        if (*p == '\'' || *p == '"') {
            char q = *p++;
            while (*p && !(*p == q && p[1] != q))
                p += *p == q ? 2 : 1;
            if (*p)
                p++;
            continue;
        }
        if (*p == '$' && isdigit((unsigned char)p[1])) {
            int n = 0;
            p++;
            while (isdigit((unsigned char)*p) && n < 100000)
                n = n * 10 + (*p++ - '0');
            if (n > max)
                max = n;
            continue;
        }
        p++;
    }
    return max;
}

static bool kw(const struct tokens *t, int i, const char *word)
{
    return i < t->n && t->kind[i] == TK_WORD && strcasecmp(t->text[i], word) == 0;
}

bool admin_is_session_setting(const char *key)
{
    /* What JDBC, libpq-based tools and ORMs send right after connecting. */
    static const char *const keys[] = {
        "extra_float_digits", "application_name",  "client_encoding",
        "datestyle",          "timezone",          "intervalstyle",
        "search_path",        "statement_timeout", "standard_conforming_strings"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcasecmp(key, keys[i]) == 0)
            return true;
    return false;
}

static bool copy_arg(char *dst, size_t cap, const char *src, char *err, size_t errlen)
{
    size_t n = strlen(src);
    if (n >= cap) {
        log_format(err, errlen, "argument too long: \"%.40s...\"", src);
        return false;
    }
    memcpy(dst, src, n + 1);
    return true;
}

/* sluice's two-word commands: CACHE CLEAR [table], RUN JOB name. */
static bool parse_two_words(const struct tokens *t, struct admin_cmd *out, char *err, size_t errlen)
{
    bool cache = kw(t, 0, "CACHE");
    out->verb = cache ? ADMIN_CMD_CACHE_CLEAR : ADMIN_CMD_RUN_JOB;
    bool ok = cache ? t->n >= 2 && t->n <= 3 && kw(t, 1, "CLEAR") : t->n == 3 && kw(t, 1, "JOB");
    if (!ok || (t->n == 3 && t->kind[2] == TK_EQ)) {
        log_format(err, errlen, cache ? "syntax: CACHE CLEAR [table]" : "syntax: RUN JOB name");
        return false;
    }
    if (t->n == 3) {
        if (!copy_arg(out->arg, sizeof(out->arg), t->text[2], err, errlen))
            return false;
        out->has_arg = true;
    }
    return true;
}

/* SHOW QUERIES' options: [ORDER BY column] [LIMIT n], from token i. */
static bool parse_queries_options(const struct tokens *t, int i, struct admin_cmd *out, char *err,
                                  size_t errlen)
{
    enum insights_order order = INSIGHTS_BY_TOTAL;
    if (i + 2 < t->n && kw(t, i, "ORDER") && kw(t, i + 1, "BY")) {
        if (t->kind[i + 2] != TK_WORD || !insights_order_parse(t->text[i + 2], &order)) {
            log_format(err, errlen,
                       "SHOW QUERIES can be ordered by total_time, calls, mean, p99 "
                       "or errors");
            return false;
        }
        i += 3;
    }
    out->order = (int)order;
    if (i + 1 < t->n && kw(t, i, "LIMIT")) {
        char *end;
        long long n = strtoll(t->text[i + 1], &end, 10);
        if (t->kind[i + 1] != TK_WORD || *end || n < 1 || n > 1000000000) {
            log_format(err, errlen, "LIMIT needs a count of rows, 1 or more");
            return false;
        }
        out->limit = n;
        i += 2;
    }
    if (i != t->n) {
        log_format(err, errlen, "syntax: SHOW QUERIES [ORDER BY column] [LIMIT n]");
        return false;
    }
    return true;
}

static bool parse_show(const struct tokens *t, struct admin_cmd *out, char *err, size_t errlen)
{
    out->verb = ADMIN_CMD_SHOW;
    if (t->n < 2 || t->kind[1] != TK_WORD) {
        log_format(err, errlen, "SHOW needs one of the topics listed by SHOW HELP");
        return false;
    }
    for (int i = 0; i < ADMIN_SHOW_COUNT; i++) {
        if (strcasecmp(t->text[1], admin_show_topic_str((enum admin_show_topic)i)) != 0)
            continue;
        out->topic = (enum admin_show_topic)i;
        if (out->topic == ADMIN_SHOW_QUERIES)
            return parse_queries_options(t, 2, out, err, errlen);
        if (t->n != 2)
            break;
        return true;
    }
    if (out->topic == ADMIN_SHOW_HELP && strcasecmp(t->text[1], "HELP") != 0)
        log_format(err, errlen, "unknown SHOW topic \"%.64s\"; SHOW HELP lists them", t->text[1]);
    else
        log_format(err, errlen, "SHOW needs one of the topics listed by SHOW HELP");
    return false;
}

bool admin_parse(const char *sql, int nparams, const char *const *params, struct admin_cmd *out,
                 char *err, size_t errlen)
{
    struct tokens t;
    memset(out, 0, sizeof(*out));
    if (!tokenize(sql, nparams, params, &t, err, errlen))
        return false;
    if (t.n == 0) {
        out->verb = ADMIN_CMD_EMPTY;
        return true;
    }
    /* verbs taking [db], db, id, or nothing: arity checked below */
    static const struct {
        const char *word;
        enum admin_verb verb;
        int min_args, max_args;
    } verbs[] = {
        {"RELOAD", ADMIN_CMD_RELOAD, 0, 0},           {"PAUSE", ADMIN_CMD_PAUSE, 0, 1},
        {"RESUME", ADMIN_CMD_RESUME, 0, 1},           {"SUSPEND", ADMIN_CMD_SUSPEND, 0, 0},
        {"DISABLE", ADMIN_CMD_DISABLE, 1, 1},         {"ENABLE", ADMIN_CMD_ENABLE, 1, 1},
        {"RECONNECT", ADMIN_CMD_RECONNECT, 0, 1},     {"KILL", ADMIN_CMD_KILL, 0, 1},
        {"KILL_CLIENT", ADMIN_CMD_KILL_CLIENT, 1, 1}, {"WAIT_CLOSE", ADMIN_CMD_WAIT_CLOSE, 0, 1},
    };
    if (kw(&t, 0, "SHOW"))
        return parse_show(&t, out, err, errlen);
    if (kw(&t, 0, "INSIGHTS")) {
        out->verb = ADMIN_CMD_INSIGHTS_RESET;
        if (t.n != 2 || !kw(&t, 1, "RESET")) {
            log_format(err, errlen, "syntax: INSIGHTS RESET");
            return false;
        }
        return true;
    }
    if (kw(&t, 0, "SET")) {
        out->verb = ADMIN_CMD_SET;
        /* SET key = value | SET key TO value; a bare value of several words
         * (server_reset_query = DISCARD ALL) is taken whole. */
        if (t.n < 4 || t.kind[1] == TK_EQ || !(t.kind[2] == TK_EQ || kw(&t, 2, "TO"))) {
            log_format(err, errlen, "syntax: SET key = value");
            return false;
        }
        if (!copy_arg(out->arg, sizeof(out->arg), t.text[1], err, errlen))
            return false;
        out->has_arg = true;
        size_t n = 0;
        for (int i = 3; i < t.n; i++) {
            size_t len = strlen(t.text[i]);
            if (t.kind[i] == TK_EQ || n + len + 2 > sizeof(out->value)) {
                log_format(err, errlen, "syntax: SET key = value");
                return false;
            }
            if (i > 3)
                out->value[n++] = ' ';
            memcpy(out->value + n, t.text[i], len);
            n += len;
        }
        out->value[n] = '\0';
        return true;
    }
    if (kw(&t, 0, "CACHE") || kw(&t, 0, "RUN"))
        return parse_two_words(&t, out, err, errlen);
    if (kw(&t, 0, "SHUTDOWN")) {
        out->verb = ADMIN_CMD_SHUTDOWN;
        if (t.n == 1)
            return true;
        if (t.n == 2 && kw(&t, 1, "WAIT_FOR_SERVERS")) {
            out->shutdown = ADMIN_SHUTDOWN_WAIT_FOR_SERVERS;
            return true;
        }
        if (t.n == 2 && kw(&t, 1, "WAIT_FOR_CLIENTS")) {
            out->shutdown = ADMIN_SHUTDOWN_WAIT_FOR_CLIENTS;
            return true;
        }
        log_format(err, errlen, "syntax: SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS]");
        return false;
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (!kw(&t, 0, verbs[i].word))
            continue;
        out->verb = verbs[i].verb;
        int nargs = t.n - 1;
        if (nargs < verbs[i].min_args) {
            log_format(err, errlen, "%s needs %s", verbs[i].word,
                       out->verb == ADMIN_CMD_KILL_CLIENT ? "a client id" : "a database name");
            return false;
        }
        if (nargs > verbs[i].max_args || (nargs == 1 && t.kind[1] == TK_EQ)) {
            log_format(err, errlen, "%s takes %s", verbs[i].word,
                       verbs[i].max_args ? "one argument" : "no argument");
            return false;
        }
        if (nargs == 1) {
            if (!copy_arg(out->arg, sizeof(out->arg), t.text[1], err, errlen))
                return false;
            out->has_arg = true;
        }
        return true;
    }
    log_format(err, errlen, "unknown command \"%.64s\"; SHOW HELP lists the commands", t.text[0]);
    return false;
}

/* ---- encoding ---------------------------------------------------------- */

void admin_out_add_bytes(struct admin_out *o, const void *p, size_t n)
{
    if (n)
        iobuf_append(o->cache, &o->buf, p, n);
}

void admin_out_add16(struct admin_out *o, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    admin_out_add_bytes(o, b, 2);
}

void admin_out_add32(struct admin_out *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    admin_out_add_bytes(o, b, 4);
}

void admin_out_add_string(struct admin_out *o, const char *s)
{
    admin_out_add_bytes(o, s, strlen(s) + 1);
}

void admin_out_begin(struct admin_out *o, uint8_t type)
{
    /* Reserve first so that the message's offset stays valid even when the
     * buffer moves to a larger one while the message grows. */
    iobuf_reserve(o->cache, &o->buf, 5);
    o->msg_start = o->buf->end;
    uint8_t hdr[5] = {type, 0, 0, 0, 0};
    admin_out_add_bytes(o, hdr, 5);
}

void admin_out_end(struct admin_out *o)
{
    uint8_t *p = o->buf->data + o->msg_start + 1;
    uint32_t len = o->buf->end - o->msg_start - 1;
    p[0] = (uint8_t)(len >> 24);
    p[1] = (uint8_t)(len >> 16);
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
}

void admin_out_simple(struct admin_out *o, uint8_t type)
{
    admin_out_begin(o, type);
    admin_out_end(o);
}

void admin_out_ready(struct admin_out *o)
{
    admin_out_begin(o, 'Z');
    uint8_t idle = 'I'; /* the console has no transactions */
    admin_out_add_bytes(o, &idle, 1);
    admin_out_end(o);
}

void admin_out_complete(struct admin_out *o, const char *tag)
{
    admin_out_begin(o, 'C');
    admin_out_add_string(o, tag);
    admin_out_end(o);
}

static void out_field(struct admin_out *o, char code, const char *s)
{
    admin_out_add_bytes(o, &code, 1);
    admin_out_add_string(o, s);
}

void admin_out_error(struct admin_out *o, const char *sqlstate, const char *msg)
{
    admin_out_begin(o, 'E');
    out_field(o, 'S', "ERROR");
    out_field(o, 'V', "ERROR");
    out_field(o, 'C', sqlstate);
    out_field(o, 'M', msg);
    admin_out_add_bytes(o, "", 1);
    admin_out_end(o);
}

void admin_out_notice(struct admin_out *o, const char *msg, const char *detail)
{
    admin_out_begin(o, 'N');
    out_field(o, 'S', "NOTICE");
    out_field(o, 'V', "NOTICE");
    out_field(o, 'C', "00000");
    out_field(o, 'M', msg);
    if (detail)
        out_field(o, 'D', detail);
    admin_out_add_bytes(o, "", 1);
    admin_out_end(o);
}

bool admin_encode_numeric(struct admin_out *o, const char *s)
{
    bool neg = false;
    if (*s == '-' || *s == '+') {
        neg = *s == '-';
        s++;
    }
    size_t len = strlen(s);
    if (len == 0 || len > 1000)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    while (len > 1 && *s == '0') {
        s++;
        len--;
    }
    /* Base-10000 digits, most significant first; the first group takes
     * the digits that do not fill a whole group. */
    uint16_t digits[251];
    int n = 0;
    size_t first = len % 4 ? len % 4 : 4;
    for (size_t i = 0; i < len; n++) {
        size_t take = i == 0 ? first : 4;
        unsigned v = 0;
        for (size_t k = 0; k < take; k++)
            v = v * 10 + (unsigned)(s[i + k] - '0');
        digits[n] = (uint16_t)v;
        i += take;
    }
    int weight = n - 1;
    /* PostgreSQL stores neither leading nor trailing zero groups. */
    while (n > 0 && digits[n - 1] == 0)
        n--;
    if (n == 0) {
        weight = 0;
        neg = false;
    }
    admin_out_add16(o, (uint16_t)n);
    admin_out_add16(o, (uint16_t)(int16_t)weight);
    admin_out_add16(o, neg ? 0x4000 : 0x0000);
    admin_out_add16(o, 0); /* dscale: integers only */
    for (int i = 0; i < n; i++)
        admin_out_add16(o, digits[i]);
    return true;
}

/* ---- results ------------------------------------------------------------- */

int admin_result_format(const struct admin_result *r, int i)
{
    if (r->nformats <= 0 || !r->formats)
        return 0;
    if (r->nformats == 1)
        return r->formats[0];
    return i < r->nformats ? r->formats[i] : 0;
}

static int16_t type_len(uint32_t oid)
{
    switch (oid) {
    case ADMIN_OID_INT8:
        return 8;
    case ADMIN_OID_INT4:
        return 4;
    default:
        return -1;
    }
}

void admin_result_row_description(struct admin_result *r, int n, const char *const *names,
                                  const uint32_t *types)
{
    struct admin_out *o = r->out;
    admin_out_begin(o, 'T');
    admin_out_add16(o, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        admin_out_add_string(o, names[i]);
        admin_out_add32(o, 0); /* not from a table */
        admin_out_add16(o, 0);
        admin_out_add32(o, types[i]);
        admin_out_add16(o, (uint16_t)type_len(types[i]));
        admin_out_add32(o, 0xffffffffu); /* no typmod */
        admin_out_add16(o, (uint16_t)admin_result_format(r, i));
    }
    admin_out_end(o);
}

void admin_result_columns(struct admin_result *r, int n, const char *const *names,
                          const uint32_t *types)
{
    r->ncols = n;
    r->types = types;
    if (r->describe)
        admin_result_row_description(r, n, names, types);
}

/* A decimal string as a big-endian integer of size bytes (binary format). */
static void add_binary_int(struct admin_out *o, const char *s, int size)
{
    long long v = strtoll(s, NULL, 10);
    uint8_t b[8];
    for (int i = size - 1; i >= 0; i--) {
        b[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
    admin_out_add32(o, (uint32_t)size);
    admin_out_add_bytes(o, b, (size_t)size);
}

void admin_result_row(struct admin_result *r, const char *const *vals)
{
    struct admin_out *o = r->out;
    admin_out_begin(o, 'D');
    admin_out_add16(o, (uint16_t)r->ncols);
    for (int i = 0; i < r->ncols; i++) {
        const char *v = vals[i];
        if (!v) {
            admin_out_add32(o, 0xffffffffu);
            continue;
        }
        if (admin_result_format(r, i) == 1) {
            switch (r->types[i]) {
            case ADMIN_OID_INT4:
                add_binary_int(o, v, 4);
                continue;
            case ADMIN_OID_INT8:
                add_binary_int(o, v, 8);
                continue;
            case ADMIN_OID_NUMERIC: {
                /* The length word goes before bytes whose count is known
                 * only once written: patch it afterwards. */
                admin_out_add32(o, 0);
                uint32_t at = o->buf->end;
                if (!admin_encode_numeric(o, v))
                    admin_encode_numeric(o, "0");
                uint32_t n = o->buf->end - at;
                uint8_t *p = o->buf->data + at - 4;
                p[0] = (uint8_t)(n >> 24);
                p[1] = (uint8_t)(n >> 16);
                p[2] = (uint8_t)(n >> 8);
                p[3] = (uint8_t)n;
                continue;
            }
            default:
                break; /* text: binary and text forms are the same bytes */
            }
        }
        size_t n = strlen(v);
        admin_out_add32(o, (uint32_t)n);
        admin_out_add_bytes(o, v, n);
    }
    admin_out_end(o);
    r->nrows++;
}

const char *admin_time_text(int64_t usec, char *buf, size_t len)
{
    if (!usec)
        return NULL;
    time_t t = (time_t)(usec / 1000000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S+00", &tm))
        return NULL;
    return buf;
}
