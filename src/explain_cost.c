/* explain_cost.c - the planner's estimate from EXPLAIN (FORMAT JSON)
 * (explain_cost.h): a small JSON reader that follows the one path it
 * needs and skips every other value, checking its syntax as it goes. */
#include "explain_cost.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct jr {
    const char *p, *end;
    bool bad;
};

const char *explain_cost_status_str(enum explain_cost_status st)
{
    static const char *const names[] = {"ok", "not EXPLAIN's JSON", "no Total Cost"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static void ws(struct jr *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

/* The next byte after blanks is c: consumed. */
static bool eat(struct jr *r, char c)
{
    ws(r);
    if (r->p < r->end && *r->p == c) {
        r->p++;
        return true;
    }
    return false;
}

/* A string; its bytes (escapes kept as written, so a key with one never
 * matches) into out when it fits, else out is "" (out may be NULL). */
static bool read_string(struct jr *r, char *out, size_t outlen)
{
    if (!eat(r, '"'))
        return false;
    const char *s = r->p;
    while (r->p < r->end && *r->p != '"') {
        if ((unsigned char)*r->p < 0x20)
            return false;
        if (*r->p == '\\') {
            if (++r->p == r->end)
                return false;
            if (*r->p == 'u') {
                for (int i = 0; i < 4; i++)
                    if (++r->p == r->end || !strchr("0123456789abcdefABCDEF", *r->p) || !*r->p)
                        return false;
            } else if (!strchr("\"\\/bfnrt", *r->p) || !*r->p) {
                return false;
            }
        }
        r->p++;
    }
    if (r->p == r->end)
        return false;
    size_t n = (size_t)(r->p - s);
    r->p++;
    if (out) {
        if (n >= outlen)
            n = 0;
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return true;
}

static bool read_number(struct jr *r, double *v)
{
    ws(r);
    const char *s = r->p;
    if (r->p < r->end && *r->p == '-')
        r->p++;
    const char *digits = r->p;
    while (r->p < r->end && strchr("0123456789.eE+-", *r->p) && *r->p)
        r->p++;
    size_t n = (size_t)(r->p - s);
    if (r->p == digits || n >= 64 || *digits < '0' || *digits > '9')
        return false;
    char buf[64];
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *e;
    *v = strtod(buf, &e);
    return *e == '\0';
}

static bool skip_value(struct jr *r, int depth);

/* The members of an object whose '{' was read: fn is called at each
 * member's value (after its ':'), and must read it. */
static bool members(struct jr *r, int depth, bool (*fn)(struct jr *, const char *, int, void *),
                    void *arg)
{
    if (eat(r, '}'))
        return true;
    for (;;) {
        char key[32];
        if (!read_string(r, key, sizeof(key)) || !eat(r, ':') || !fn(r, key, depth, arg))
            return false;
        if (eat(r, '}'))
            return true;
        if (!eat(r, ','))
            return false;
    }
}

static bool skip_member(struct jr *r, const char *key, int depth, void *arg)
{
    (void)key;
    (void)arg;
    return skip_value(r, depth + 1);
}

static bool skip_value(struct jr *r, int depth)
{
    if (depth > EXPLAIN_COST_MAX_DEPTH)
        return false;
    ws(r);
    if (r->p == r->end)
        return false;
    switch (*r->p) {
    case '{':
        r->p++;
        return members(r, depth, skip_member, NULL);
    case '[':
        r->p++;
        if (eat(r, ']'))
            return true;
        do {
            if (!skip_value(r, depth + 1))
                return false;
        } while (eat(r, ','));
        return eat(r, ']');
    case '"':
        return read_string(r, NULL, 0);
    default: {
        static const char *const words[] = {"true", "false", "null"};
        for (int i = 0; i < 3; i++) {
            size_t n = strlen(words[i]);
            if ((size_t)(r->end - r->p) >= n && memcmp(r->p, words[i], n) == 0) {
                r->p += n;
                return true;
            }
        }
        double v;
        return read_number(r, &v);
    }
    }
}

struct found {
    bool got;
    double total;
};

static bool plan_member(struct jr *r, const char *key, int depth, void *arg)
{
    struct found *f = arg;
    if (strcmp(key, "Total Cost") != 0 || f->got)
        return skip_value(r, depth + 1);
    ws(r);
    if (r->p < r->end && (*r->p == '-' || (*r->p >= '0' && *r->p <= '9'))) {
        f->got = read_number(r, &f->total);
        return f->got;
    }
    return skip_value(r, depth + 1);
}

static bool top_member(struct jr *r, const char *key, int depth, void *arg)
{
    if (strcmp(key, "Plan") != 0 || !eat(r, '{'))
        return skip_value(r, depth + 1);
    return members(r, depth + 1, plan_member, arg);
}

enum explain_cost_status explain_cost_parse(const char *json, size_t len, double *total)
{
    struct jr r = {json, json + len, false};
    struct found f = {false, 0};
    if (!eat(&r, '['))
        return skip_value(&r, 0) ? EXPLAIN_COST_MISSING : EXPLAIN_COST_BAD;
    if (eat(&r, ']'))
        return EXPLAIN_COST_MISSING;
    /* The first element is the statement's; others (there are none) are skipped. */
    if (eat(&r, '{')) {
        if (!members(&r, 1, top_member, &f))
            return EXPLAIN_COST_BAD;
    } else if (!skip_value(&r, 1)) {
        return EXPLAIN_COST_BAD;
    }
    while (eat(&r, ','))
        if (!skip_value(&r, 1))
            return EXPLAIN_COST_BAD;
    if (!eat(&r, ']'))
        return EXPLAIN_COST_BAD;
    ws(&r);
    if (r.p != r.end)
        return EXPLAIN_COST_BAD;
    if (!f.got)
        return EXPLAIN_COST_MISSING;
    *total = f.total;
    return EXPLAIN_COST_OK;
}
