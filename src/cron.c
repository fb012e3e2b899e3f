/* cron.c - cron expressions and their next fire time (cron.h). The time
 * zones are in cron_tz.c. */
#include "cron.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"

/* One field's bounds and names. */
struct cron_field {
    const char *what; /* for messages */
    int min, max;
    const char *const *names; /* names[i] is value min + i; NULL: numbers only */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static const struct cron_field fields[5] = {
    {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},
    {"month", 1, 12, month_names},
    /* 7 is Sunday too (folded into 0 after parsing). */
    {"day of week", 0, 7, day_names},
};

/* A number or a name at *sp; advances past it. */
static bool parse_value(const struct cron_field *f, const char **sp, int *out, char *why,
                        size_t whylen)
{
    const char *s = *sp;
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        while (isdigit((unsigned char)*s)) {
            v = v * 10 + (*s - '0');
            if (v > 1000)
                break;
            s++;
        }
        if (v < f->min || v > f->max) {
            log_format(why, whylen, "%s %ld is out of range %d-%d", f->what, v, f->min, f->max);
            return false;
        }
        *out = (int)v;
        *sp = s;
        return true;
    }
    if (f->names && isalpha((unsigned char)*s)) {
        int n = 0;
        while (isalpha((unsigned char)s[n]))
            n++;
        for (int i = 0; n == 3 && i <= f->max - f->min && i < (f->max == 7 ? 7 : 12); i++) {
            if (strncasecmp(s, f->names[i], 3) == 0) {
                *out = f->min + i;
                *sp = s + n;
                return true;
            }
        }
        log_format(why, whylen, "unknown %s name \"%.*s\"", f->what, n > 16 ? 16 : n, s);
        return false;
    }
    if (*s == '\0')
        log_format(why, whylen, "%s: value missing", f->what);
    else
        log_format(why, whylen, "%s: unexpected \"%c\"", f->what, *s);
    return false;
}

/* One field (text up to its end, no spaces) into bits. *star: it begins
 * with '*'. */
static bool parse_field(const struct cron_field *f, const char *s, uint64_t *bits, bool *star,
                        char *why, size_t whylen)
{
    *bits = 0;
    *star = *s == '*';
    for (;;) {
        int lo, hi;
        bool range = false;
        if (*s == '*') {
            lo = f->min;
            hi = f->max == 7 ? 6 : f->max;
            range = true;
            s++;
        } else {
            if (!parse_value(f, &s, &lo, why, whylen))
                return false;
            hi = lo;
            if (*s == '-') {
                s++;
                if (!parse_value(f, &s, &hi, why, whylen))
                    return false;
                if (hi < lo) {
                    log_format(why, whylen, "%s range %d-%d is backwards", f->what, lo, hi);
                    return false;
                }
                range = true;
            }
        }
        int step = 1;
        if (*s == '/') {
            s++;
            if (!isdigit((unsigned char)*s)) {
                log_format(why, whylen, "%s: a step needs a number after \"/\"", f->what);
                return false;
            }
            long v = 0;
            while (isdigit((unsigned char)*s) && v <= 1000)
                v = v * 10 + (*s++ - '0');
            if (v < 1 || v > f->max - f->min + 1) {
                log_format(why, whylen, "%s step %ld is out of range 1-%d", f->what, v,
                           f->max - f->min + 1);
                return false;
            }
            step = (int)v;
            if (!range) /* a/n: from a to the end, every n */
                hi = f->max == 7 ? 6 : f->max;
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= 1ull << v;
        if (*s == '\0')
            return true;
        if (*s != ',') {
            log_format(why, whylen, "%s: unexpected \"%c\"", f->what, *s);
            return false;
        }
        s++;
    }
}

static const struct {
    const char *name, *expr;
} macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

bool cron_parse(const char *s, struct cron_expr *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '@') {
        size_t n = 0;
        while (s[n] && !isspace((unsigned char)s[n]))
            n++;
        const char *rest = s + n;
        while (isspace((unsigned char)*rest))
            rest++;
        for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++)
            if (*rest == '\0' && strlen(macros[i].name) == n &&
                strncasecmp(s, macros[i].name, n) == 0)
                return cron_parse(macros[i].expr, out, why, whylen);
        log_format(why, whylen,
                   "unknown macro \"%.*s\" (@hourly, @daily, @weekly, @monthly, "
                   "@yearly)",
                   n > 20 ? 20 : (int)n, s);
        return false;
    }
    char field[5][128];
    int nf = 0;
    while (*s) {
        size_t n = 0;
        while (s[n] && !isspace((unsigned char)s[n]))
            n++;
        if (nf < 5) {
            if (n >= sizeof(field[0])) {
                log_format(why, whylen, "%s field too long", fields[nf].what);
                return false;
            }
            memcpy(field[nf], s, n);
            field[nf][n] = '\0';
        }
        nf++;
        s += n;
        while (isspace((unsigned char)*s))
            s++;
    }
    if (nf != 5) {
        log_format(why, whylen,
                   "expected 5 fields (minute hour day-of-month month day-of-week), got %d", nf);
        return false;
    }
    uint64_t b[5];
    bool star[5];
    for (int i = 0; i < 5; i++)
        if (!parse_field(&fields[i], field[i], &b[i], &star[i], why, whylen))
            return false;
    out->minute = b[0];
    out->hour = (uint32_t)b[1];
    out->dom = (uint32_t)b[2];
    out->month = (uint16_t)b[3];
    out->dow = (uint8_t)((b[4] | (b[4] >> 7)) & 0x7f); /* 7 is Sunday */
    out->dom_star = star[2];
    out->dow_star = star[4];
    out->hour_star = star[1];
    return true;
}

/* ---- the next fire time ------------------------------------------------- */

static bool day_matches(const struct cron_expr *e, const struct tm *tm)
{
    bool dom = (e->dom >> tm->tm_mday) & 1, dow = (e->dow >> tm->tm_wday) & 1;
    if (e->dom_star || e->dow_star)
        return dom && dow;
    return dom || dow;
}

bool cron_matches(const struct cron_expr *e, int64_t wall)
{
    time_t t = (time_t)wall;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return false;
    return ((e->month >> (tm.tm_mon + 1)) & 1) && day_matches(e, &tm) &&
           ((e->hour >> tm.tm_hour) & 1) && ((e->minute >> tm.tm_min) & 1);
}

/* The first wall minute >= w (wall: local time read as UTC) matching e,
 * or -1 past limit. Skips whole months, days and hours that cannot match. */
static int64_t next_wall(const struct cron_expr *e, int64_t w, int64_t limit)
{
    w = w % 60 ? w - ((w % 60 + 60) % 60) + 60 : w;
    while (w <= limit) {
        time_t t = (time_t)w;
        struct tm tm;
        if (!gmtime_r(&t, &tm))
            return -1;
        tm.tm_sec = 0;
        if (!((e->month >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mon++;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = 0;
        } else if (!day_matches(e, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = 0;
        } else if (!((e->hour >> tm.tm_hour) & 1)) {
            tm.tm_hour++;
            tm.tm_min = 0;
        } else if (!((e->minute >> tm.tm_min) & 1)) {
            tm.tm_min++;
        } else {
            return w;
        }
        w = (int64_t)timegm(&tm);
    }
    return -1;
}

/* Index of the last transition at or before t, -1 if none. */
static int tz_index(const struct cron_tz *tz, int64_t t)
{
    int lo = 0, hi = tz->n - 1, found = -1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (tz->at[mid] <= t) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return found;
}

int32_t cron_tz_offset(const struct cron_tz *tz, int64_t t)
{
    if (!tz || tz->n == 0)
        return tz ? tz->off_before : 0;
    int i = tz_index(tz, t);
    return i < 0 ? tz->off_before : tz->off[i];
}

/* Five years and a day: every expression that can fire does within it. */
#define CRON_HORIZON ((int64_t)(5 * 366 + 1) * 86400)

int64_t cron_next(const struct cron_expr *e, const struct cron_tz *tz, int64_t after)
{
    static const struct cron_tz utc = {.name = "UTC"};
    if (!tz)
        tz = &utc;
    int64_t u = after - ((after % 60 + 60) % 60) + 60; /* strictly after, on a minute */
    int64_t limit = u + CRON_HORIZON;
    /* Each turn either returns or moves u forward to a later offset period
     * or past a repeated wall time: the bound is a safety net. */
    for (int guard = 0; guard < 100000 && u <= limit; guard++) {
        int i = tz->n ? tz_index(tz, u) : -1;
        int32_t off = i < 0 ? tz->off_before : tz->off[i];
        int32_t prev = i <= 0 ? tz->off_before : tz->off[i - 1];
        int64_t next_t = i + 1 < tz->n ? tz->at[i + 1] : INT64_MAX;
        /* The clock jumped forward at at[i], after `after`: a wall time it
         * skipped fires at the jump. */
        if (i >= 0 && tz->at[i] > after && off > prev) {
            int64_t w0 = tz->at[i] + prev, w1 = tz->at[i] + off;
            int64_t m = next_wall(e, w0, w1 - 1);
            if (m >= 0 && m < w1)
                return u;
        }
        int64_t wall_limit = (next_t == INT64_MAX || next_t > limit ? limit : next_t - 1) + off;
        int64_t m = next_wall(e, u + off, wall_limit);
        if (m >= 0) {
            int64_t cand = m - off;
            /* The clock went back at at[i]: the wall times from at[i] + off
             * up to at[i] + prev happened before it already. */
            if (i >= 0 && prev > off && m < tz->at[i] + prev && !e->hour_star) {
                u = cand + 60;
                continue;
            }
            return cand;
        }
        if (next_t == INT64_MAX || next_t > limit)
            return -1;
        u = next_t % 60 ? next_t - ((next_t % 60 + 60) % 60) + 60 : next_t;
    }
    return -1;
}
