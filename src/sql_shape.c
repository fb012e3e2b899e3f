/* sql_shape.c - a statement's shape (sql_shape.h). */
#include "sql_shape.h"

#include <pthread.h>
#include <stdbool.h>
#include <sys/random.h>
#include <time.h>

#include "sql_lex.h"

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME  0x100000001b3ULL

static inline uint64_t add(uint64_t h, uint8_t c)
{
    return (h ^ c) * FNV_PRIME;
}

static inline bool digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* The end of the comment at p ("--" or a nested C comment), p when there
 * is none, NO_END for a C comment that does not end (the server refuses
 * the text: it must not take the shape of one without it). */
#define NO_END ((size_t)-1)
static size_t comment_end(const uint8_t *p, size_t i, size_t len)
{
    if (i + 1 < len && p[i] == '-' && p[i + 1] == '-') {
        while (i < len && !sql_newline((char)p[i]))
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
        return NO_END;
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

/* What a byte starts: most are hashed as they are in one tight loop. */
enum {
    K_PLAIN = 0, /* an operator, a parenthesis, ... */
    K_WORD,      /* a letter, '_', '$' inside a word, a byte of UTF-8 */
    K_DIGIT,
    K_SPACE,
    K_QUOTE,  /* ' */
    K_DQUOTE, /* " */
    K_DOLLAR, /* $ */
    K_DOT,    /* . (maybe a number: .5) */
    K_DASH,   /* - (maybe a comment: --) */
    K_SLASH,  /* / (maybe a comment) */
    K_AMP,    /* & (U&'...') */
};

/* FNV-1a's offset basis, drawn at start: the result cache keeps what a
 * text writes by its shape, so texts of one shape must not be made in
 * advance by someone who knows the hash. */
static uint64_t basis;

static uint8_t kind[256];
static bool word_cont[256]; /* a byte that goes on a word: letters, digits, _, $ */

static void kinds_init(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint64_t)(uintptr_t)&r ^ ((uint64_t)time(NULL) << 20); /* not before boot's entropy */
    basis = FNV_OFFSET ^ r;
    for (int c = 0x80; c < 256; c++)
        kind[c] = K_WORD;
    for (int c = 'a'; c <= 'z'; c++)
        kind[c] = kind[c - 'a' + 'A'] = K_WORD;
    kind['_'] = K_WORD;
    for (int c = '0'; c <= '9'; c++)
        kind[c] = K_DIGIT;
    for (int c = 0; c < 128; c++)
        if (sql_space((char)c))
            kind[c] = K_SPACE; /* not '\v': a blank to PostgreSQL 16, not to 15 */
    kind['\''] = K_QUOTE;
    kind['"'] = K_DQUOTE;
    kind['$'] = K_DOLLAR;
    kind['.'] = K_DOT;
    kind['-'] = K_DASH;
    kind['/'] = K_SLASH;
    kind['&'] = K_AMP;
    for (int c = 0; c < 256; c++)
        word_cont[c] = kind[c] == K_WORD || kind[c] == K_DIGIT || c == '$';
}

/* Whether the byte before a quote or a digit glues to it: E'...', U&'...',
 * a1, a$1, x.1 are not what they would be after a blank. */
static inline bool glues(uint8_t k)
{
    return k == K_WORD || k == K_DIGIT || k == K_DOLLAR || k == K_AMP || k == K_DOT;
}

uint64_t sql_shape(const char *sql, size_t len)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, kinds_init);
    const uint8_t *p = (const uint8_t *)sql;
    uint64_t h = basis;
    bool gap = false; /* blanks since the last byte hashed (none before the first) */
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i], k = kind[c];
        if (k == K_WORD) { /* the common case: a word, all of it */
            if (gap)
                h = add(h, ' ');
            gap = false;
            do
                h = add(h, p[i++]);
            while (i < len && word_cont[p[i]]);
            continue;
        }
        if (k == K_SPACE) {
            gap = h != basis;
            i++;
            continue;
        }
        if (k == K_DASH || k == K_SLASH) {
            size_t e = comment_end(p, i, len);
            if (e == NO_END)
                goto verbatim;
            if (e != i) {
                gap = h != basis;
                i = e;
                continue;
            }
        }
        if (gap)
            h = add(h, ' ');
        gap = false;
        uint8_t before = i ? kind[p[i - 1]] : K_SPACE;
        switch (k) {
        case K_QUOTE: {
            size_t end = glues(before) ? 0 : string_end(p, i, len);
            if (!end)
                goto verbatim;
            h = add(h, '\'');
            i = end;
            continue;
        }
        case K_DQUOTE: /* a quoted identifier: kept as it is */
            h = add(h, p[i++]);
            for (; i < len && !(p[i] == '"' && !(i + 1 < len && p[i + 1] == '"')); i++)
                h = add(h, p[i]);
            if (i < len)
                h = add(h, p[i++]);
            continue;
        case K_DOLLAR:
            if (before != K_WORD && before != K_DIGIT && !(i + 1 < len && digit(p[i + 1])))
                goto verbatim; /* a dollar quote, maybe */
            break;
        case K_DIGIT:
        case K_DOT:
            if ((k == K_DIGIT || (i + 1 < len && digit(p[i + 1]))) && !glues(before)) {
                h = add(h, '0');
                i = number_end(p, i, len);
                continue;
            }
            break;
        default:
            break;
        }
        h = add(h, c);
        i++;
    }
    return finish(h);
verbatim:
    h = add(h, 0xff); /* what follows was not read as SQL */
    for (; i < len; i++)
        h = add(h, p[i]);
    return finish(h);
}
