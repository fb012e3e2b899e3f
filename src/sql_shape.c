/* sql_shape.c - a statement's shape (sql_shape.h). */
#include "sql_shape.h"

#include <stdbool.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME  0x100000001b3ULL

static inline uint64_t add(uint64_t h, uint8_t c)
{
    return (h ^ c) * FNV_PRIME;
}

static inline bool ident_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c >= 0x80;
}

static inline bool digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static inline bool space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The end of the comment at p ("--" or a nested C comment), or p when
 * there is none. */
static size_t comment_end(const uint8_t *p, size_t i, size_t len)
{
    if (i + 1 < len && p[i] == '-' && p[i + 1] == '-') {
        while (i < len && p[i] != '\n')
            i++;
        return i;
    }
    if (i + 1 < len && p[i] == '/' && p[i + 1] == '*') {
        int depth = 0;
        while (i < len) {
            if (i + 1 < len && p[i] == '/' && p[i + 1] == '*') {
                depth++;
                i += 2;
            } else if (i + 1 < len && p[i] == '*' && p[i + 1] == '/') {
                i += 2;
                if (--depth == 0)
                    return i;
            } else {
                i++;
            }
        }
        return len;
    }
    return i;
}

/* The end of the plain '...' literal at p[i] (quotes doubled inside), or 0
 * when it has a backslash or no end (not sure what it means). */
static size_t string_end(const uint8_t *p, size_t i, size_t len)
{
    for (i++; i < len; i++) {
        if (p[i] == '\\')
            return 0;
        if (p[i] == '\'') {
            if (i + 1 < len && p[i + 1] == '\'') {
                i++;
                continue;
            }
            return i + 1;
        }
    }
    return 0;
}

/* The end of the number at p[i] (digits, a point, an exponent). */
static size_t number_end(const uint8_t *p, size_t i, size_t len)
{
    while (i < len && digit(p[i]))
        i++;
    if (i < len && p[i] == '.' && !(i + 1 < len && p[i + 1] == '.')) /* not a range: 1..2 */
        for (i++; i < len && digit(p[i]);)
            i++;
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        size_t j = i + 1;
        if (j < len && (p[j] == '+' || p[j] == '-'))
            j++;
        if (j < len && digit(p[j])) {
            for (i = j; i < len && digit(p[i]);)
                i++;
        }
    }
    return i;
}

static uint64_t finish(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h ? h : 1;
}

uint64_t sql_shape(const char *sql, size_t len)
{
    const uint8_t *p = (const uint8_t *)sql;
    uint64_t h = FNV_OFFSET;
    bool gap = false, any = false; /* blanks since the last byte hashed; a byte hashed */
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        size_t e = comment_end(p, i, len);
        if (space(c) || e != i) {
            i = e != i ? e : i + 1;
            gap = true;
            continue;
        }
        if (gap && any)
            h = add(h, ' ');
        gap = false;
        any = true;
        /* What touches c decides: E'...', U&'...', a1, a$1 are not what
         * they would be after a blank. */
        uint8_t before = i ? p[i - 1] : ' ';
        bool glued = ident_char(before) || before == '&' || before == '.';
        if (c == '\'' && !glued) {
            size_t end = string_end(p, i, len);
            if (!end)
                break; /* the rest byte for byte */
            h = add(h, '\'');
            i = end;
            continue;
        }
        if (c == '"') { /* a quoted identifier: kept as it is */
            size_t j = i + 1;
            while (j < len && !(p[j] == '"' && !(j + 1 < len && p[j + 1] == '"')))
                j += p[j] == '"' ? 2 : 1;
            for (; i < len && i <= j; i++)
                h = add(h, p[i]);
            continue;
        }
        if (c == '$' && !ident_char(before) && !(i + 1 < len && digit(p[i + 1])))
            break; /* a dollar quote, maybe */
        if ((digit(c) || (c == '.' && i + 1 < len && digit(p[i + 1]))) && !glued) {
            h = add(h, '0');
            i = number_end(p, i, len);
            continue;
        }
        h = add(h, c);
        i++;
    }
    if (i < len) {
        h = add(h, 0xff); /* what follows was not read as SQL */
        for (; i < len; i++)
            h = add(h, p[i]);
    }
    return finish(h);
}
