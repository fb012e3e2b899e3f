/* cache_sql.c - what the result cache reads of a text by itself
 * (cache_sql.h). */
#include "cache_sql.h"

#include <string.h>

#include "sql_lex.h"

/* ASCII classes, as <ctype.h>'s in the C locale (sluice never sets
 * another) without a call per byte: these run on every statement while
 * the cache is on. */
enum { C_ALPHA = 1, C_DIGIT = 2, C_SPACE = 4 };
static const unsigned char cls[256] = {
    [' '] = C_SPACE,  ['\t'] = C_SPACE, ['\n'] = C_SPACE, ['\v'] = C_SPACE, ['\f'] = C_SPACE,
    ['\r'] = C_SPACE, ['0'] = C_DIGIT,  ['1'] = C_DIGIT,  ['2'] = C_DIGIT,  ['3'] = C_DIGIT,
    ['4'] = C_DIGIT,  ['5'] = C_DIGIT,  ['6'] = C_DIGIT,  ['7'] = C_DIGIT,  ['8'] = C_DIGIT,
    ['9'] = C_DIGIT,  ['A'] = C_ALPHA,  ['B'] = C_ALPHA,  ['C'] = C_ALPHA,  ['D'] = C_ALPHA,
    ['E'] = C_ALPHA,  ['F'] = C_ALPHA,  ['G'] = C_ALPHA,  ['H'] = C_ALPHA,  ['I'] = C_ALPHA,
    ['J'] = C_ALPHA,  ['K'] = C_ALPHA,  ['L'] = C_ALPHA,  ['M'] = C_ALPHA,  ['N'] = C_ALPHA,
    ['O'] = C_ALPHA,  ['P'] = C_ALPHA,  ['Q'] = C_ALPHA,  ['R'] = C_ALPHA,  ['S'] = C_ALPHA,
    ['T'] = C_ALPHA,  ['U'] = C_ALPHA,  ['V'] = C_ALPHA,  ['W'] = C_ALPHA,  ['X'] = C_ALPHA,
    ['Y'] = C_ALPHA,  ['Z'] = C_ALPHA,  ['a'] = C_ALPHA,  ['b'] = C_ALPHA,  ['c'] = C_ALPHA,
    ['d'] = C_ALPHA,  ['e'] = C_ALPHA,  ['f'] = C_ALPHA,  ['g'] = C_ALPHA,  ['h'] = C_ALPHA,
    ['i'] = C_ALPHA,  ['j'] = C_ALPHA,  ['k'] = C_ALPHA,  ['l'] = C_ALPHA,  ['m'] = C_ALPHA,
    ['n'] = C_ALPHA,  ['o'] = C_ALPHA,  ['p'] = C_ALPHA,  ['q'] = C_ALPHA,  ['r'] = C_ALPHA,
    ['s'] = C_ALPHA,  ['t'] = C_ALPHA,  ['u'] = C_ALPHA,  ['v'] = C_ALPHA,  ['w'] = C_ALPHA,
    ['x'] = C_ALPHA,  ['y'] = C_ALPHA,  ['z'] = C_ALPHA};

static inline bool is_alpha(unsigned char c)
{
    return cls[c] & C_ALPHA;
}

static inline bool is_alnum(unsigned char c)
{
    return cls[c] & (C_ALPHA | C_DIGIT);
}

static inline bool is_digit(unsigned char c)
{
    return cls[c] & C_DIGIT;
}

static inline bool is_space(unsigned char c)
{
    return cls[c] & C_SPACE;
}

static inline char lower(unsigned char c)
{
    return (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
}

static inline char upper(unsigned char c)
{
    return (char)(c >= 'a' && c <= 'z' ? c - ('a' - 'A') : c);
}

/* p (up to e) starts with w (lower case, n bytes), in any case. */
static inline bool ci_eq_n(const char *p, const char *e, const char *w, size_t n)
{
    if ((size_t)(e - p) < n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)p[i]) != w[i])
            return false;
    return true;
}

static inline bool ci_eq(const char *p, const char *e, const char *w)
{
    return ci_eq_n(p, e, w, strlen(w)); /* inlined: a literal's length is folded */
}

bool cache_sql_contains(const char *sql, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0)
        return true;
    if (n > len)
        return false;
    const char *e = sql + len;
    /* Anchored on the needle's first byte that is not a letter (the '_'
     * of set_config, rare in SQL), else its last: memchr finds candidates,
     * ci_eq confirms. */
    size_t k = 0;
    while (k < n && is_alpha((unsigned char)needle[k]))
        k++;
    if (k == n)
        k = n - 1;
    char at = needle[k];
    char other =
        lower((unsigned char)at) == at ? upper((unsigned char)at) : lower((unsigned char)at);
    for (const char *p = sql + k; p < e;) {
        const char *a = memchr(p, at, (size_t)(e - p));
        const char *b = other != at ? memchr(p, other, (size_t)(e - p)) : NULL;
        const char *q = !a ? b : !b ? a : a < b ? a : b;
        if (!q)
            return false;
        if ((size_t)(q - sql) >= k && ci_eq(q - k, e, needle))
            return true;
        p = q + 1;
    }
    return false;
}

const char *cache_sql_skip_blank(const char *p, const char *e)
{
    for (;;) {
        while (p < e && is_space((unsigned char)*p))
            p++;
        if (e - p >= 2 && p[0] == '-' && p[1] == '-') {
            while (p < e && !sql_newline(*p))
                p++;
        } else if (e - p >= 2 && p[0] == '/' && p[1] == '*') {
            int depth = 1;
            p += 2;
            while (p < e && depth) {
                if (e - p >= 2 && p[0] == '/' && p[1] == '*')
                    depth++, p += 2;
                else if (e - p >= 2 && p[0] == '*' && p[1] == '/')
                    depth--, p += 2;
                else
                    p++;
            }
        } else {
            return p;
        }
    }
}

enum cache_sql_hint cache_sql_hint(const char *sql, size_t len, int64_t *ttl_usec)
{
    *ttl_usec = 0;
    if (len < 12 || !memchr(sql, '/', len))
        return CACHE_HINT_NONE;
    enum cache_sql_hint h = CACHE_HINT_NONE;
    const char *e = sql + len;
    for (const char *p = sql; p + 2 <= e; p++) {
        if (p[0] != '/' || p[1] != '*')
            continue;
        const char *q = cache_sql_skip_blank(p + 2, e);
        if (ci_eq(q, e, "sluice:nocache"))
            return CACHE_HINT_NOCACHE;
        if (!ci_eq(q, e, "sluice:cache"))
            continue;
        h = CACHE_HINT_CACHE;
        q += strlen("sluice:cache");
        while (q < e && (*q == ' ' || *q == '\t'))
            q++;
        if (ci_eq(q, e, "ttl=")) {
            int64_t v = 0;
            q += 4;
            while (q < e && is_digit((unsigned char)*q) && v < 100000000)
                v = v * 10 + (*q++ - '0');
            *ttl_usec = v * 1000000;
        }
    }
    return h;
}

void cache_sql_first_word(const char *sql, size_t len, char *word, size_t cap)
{
    const char *p = sql, *e = sql + len;
    for (;;) {
        p = cache_sql_skip_blank(p, e);
        if (p < e && *p == '(')
            p++;
        else
            break;
    }
    size_t n = 0;
    while (p < e && is_alpha((unsigned char)*p) && n + 1 < cap)
        word[n++] = lower((unsigned char)*p++);
    word[n] = '\0';
}

/* A keyword (case-insensitive, whole word) at p: past it, or NULL. */
static inline const char *keyword(const char *p, const char *e, const char *w)
{
    p = cache_sql_skip_blank(p, e);
    if (!ci_eq(p, e, w))
        return NULL;
    p += strlen(w);
    if (p < e && (is_alnum((unsigned char)*p) || *p == '_' || *p == '$'))
        return NULL;
    return p;
}

/* One identifier at p into name (the catalog's spelling): past it, or
 * NULL. */
static const char *ident(const char *p, const char *e, char *name, size_t cap)
{
    size_t n = 0;
    if (p < e && *p == '"') {
        for (p++;; p++) {
            if (p >= e)
                return NULL;
            if (*p == '"') {
                if (p + 1 < e && p[1] == '"')
                    p++;
                else
                    break;
            }
            if (n + 1 >= cap)
                return NULL;
            name[n++] = *p;
        }
        p++;
    } else {
        if (p >= e || !(is_alpha((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80))
            return NULL;
        while (p < e && (is_alnum((unsigned char)*p) || *p == '_' || *p == '$' ||
                         (unsigned char)*p >= 0x80)) {
            if (n + 1 >= cap)
                return NULL;
            name[n++] = lower((unsigned char)*p++);
        }
    }
    if (n == 0)
        return NULL;
    name[n] = '\0';
    return p;
}

/* Past a literal, quoted name or dollar-quoted string starting at p (one
 * of ' " $ or E'), or NULL if it does not end. */
static const char *skip_quoted(const char *p, const char *e)
{
    if (*p == '$') {
        const char *t = p + 1;
        while (t < e && (is_alnum((unsigned char)*t) || *t == '_'))
            t++;
        if (t >= e || *t != '$')
            return p + 1; /* a parameter ($1) or part of a name */
        size_t tag = (size_t)(t - p + 1);
        for (const char *q = t + 1; q + tag <= e; q++)
            if (*q == '$' && memcmp(q, p, tag) == 0)
                return q + tag;
        return NULL;
    }
    bool backslash = false;
    if (*p == 'e' || *p == 'E') {
        backslash = true;
        p++;
    }
    char quote = *p++;
    for (; p < e; p++) {
        if (backslash && *p == '\\') {
            p++;
            continue;
        }
        if (*p == quote) {
            if (p + 1 < e && p[1] == quote) {
                p++;
                continue;
            }
            return p + 1;
        }
    }
    return NULL;
}

/* Bytes statement_end() stops at: what may open a literal, a quoted
 * name, a comment, or end the statement. */
static const bool special[256] = {
    ['\''] = true, ['"'] = true, ['$'] = true, ['-'] = true, ['/'] = true, [';'] = true};

/* The ';' ending the statement that goes on at p (start: where the text
 * begins), literals and comments skipped; e when none does; NULL when a
 * literal does not end (the text is not read further). */
static const char *statement_end(const char *start, const char *p, const char *e)
{
    while (p < e) {
        while (p < e && !special[(unsigned char)*p])
            p++;
        if (p >= e)
            break;
        char ch = *p;
        if (ch == '\'' && p - 1 > start && (p[-1] == 'e' || p[-1] == 'E') &&
            (p - 1 == start || !(is_alnum((unsigned char)p[-2]) || p[-2] == '_'))) {
            p = skip_quoted(p - 1, e); /* E'...': backslash escapes */
        } else if (ch == '\'' && p - 1 == start && (p[-1] == 'e' || p[-1] == 'E')) {
            p = skip_quoted(p - 1, e);
        } else if (ch == '\'' || ch == '"' || ch == '$') {
            p = skip_quoted(p, e);
        } else if ((ch == '-' && p + 1 < e && p[1] == '-') ||
                   (ch == '/' && p + 1 < e && p[1] == '*')) {
            p = cache_sql_skip_blank(p, e);
        } else if (ch == ';') {
            return p;
        } else {
            p++;
        }
        if (!p)
            return NULL;
    }
    return e;
}

/* Whether [p, e) holds no second statement: no ';' but a last one. */
static bool one_statement(const char *start, const char *p, const char *e)
{
    const char *semi = statement_end(start, p, e);
    return semi && (semi == e || cache_sql_skip_blank(semi + 1, e) == e);
}

const char *cache_sql_next_statement(const char *sql, size_t len, const char *p)
{
    const char *e = sql + len;
    /* Most texts have no ';' or one at their end (pgbench's): no more
     * statements, whatever a literal before it holds. */
    const char *semi = memchr(p, ';', (size_t)(e - p));
    if (!semi || cache_sql_skip_blank(semi + 1, e) == e)
        return NULL;
    semi = statement_end(sql, p, e);
    if (!semi || semi == e)
        return NULL;
    const char *next = cache_sql_skip_blank(semi + 1, e);
    return next == e ? NULL : next;
}

bool cache_sql_dml_target(const char *sql, size_t len, char *name, size_t cap)
{
    const char *e = sql + len, *p;
    if ((p = keyword(sql, e, "insert")))
        p = keyword(p, e, "into");
    else if ((p = keyword(sql, e, "delete")))
        p = keyword(p, e, "from");
    else
        p = keyword(sql, e, "update");
    if (!p)
        return false;
    const char *only = keyword(p, e, "only");
    if (only)
        p = only;
    p = ident(cache_sql_skip_blank(p, e), e, name, cap);
    if (p && p < e && *p == '.') { /* schema.table */
        size_t sl = strlen(name);
        if (sl + 2 >= cap)
            return false;
        name[sl] = '.';
        p = ident(p + 1, e, name + sl + 1, cap - sl - 1);
    }
    if (!p || (p < e && *p == '.'))
        return false;
    return one_statement(sql, p, e);
}
