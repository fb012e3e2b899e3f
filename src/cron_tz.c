/* cron_tz.c - time zones for cron.h: TZif files (RFC 8536) read into a
 * table of offsets, extended past the file's last transition by its
 * POSIX TZ footer, so that a job's wall time is computed without TZ,
 * tzset() or localtime_r() (process-wide state, see cron.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cron.h"
#include "log.h"

/* Rules are applied up to this year: far enough for any job. */
#define TZ_LAST_YEAR 2200
/* A zone file is a few kB; this is a generous cap. */
#define TZ_MAX_FILE (256 * 1024)

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

void cron_tz_free(struct cron_tz *tz)
{
    free(tz->at);
    free(tz->off);
    tz->at = NULL;
    tz->off = NULL;
    tz->n = 0;
    tz->off_before = 0;
}

static bool tz_fail(struct cron_tz *tz, char *why, size_t whylen, const char *msg)
{
    cron_tz_free(tz);
    log_format(why, whylen, "time zone \"%s\": %s", tz->name, msg);
    return false;
}

/* ---- the POSIX TZ footer ("CET-1CEST,M3.5.0,M10.5.0/3") ------------------ */

/* A zone abbreviation: <...> or letters. */
static bool posix_name(const char **sp)
{
    const char *s = *sp;
    if (*s == '<') {
        const char *e = strchr(s, '>');
        if (!e)
            return false;
        *sp = e + 1;
        return true;
    }
    int n = 0;
    while (isalpha((unsigned char)s[n]))
        n++;
    *sp = s + n;
    return n >= 3;
}

/* [+-]hh[:mm[:ss]] in seconds. */
static bool posix_time(const char **sp, int32_t *out)
{
    const char *s = *sp;
    int sign = 1;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    int32_t v = 0;
    for (int part = 0; part < 3; part++) {
        if (!isdigit((unsigned char)*s))
            return false;
        int n = 0;
        while (isdigit((unsigned char)*s) && n < 1000)
            n = n * 10 + (*s++ - '0');
        v += n * (part == 0 ? 3600 : part == 1 ? 60 : 1);
        if (*s != ':' || part == 2)
            break;
        s++;
    }
    *out = sign * v;
    *sp = s;
    return true;
}

/* Mm.w.d[/time] */
struct posix_rule {
    int month, week, wday;
    int32_t time;
};

static bool posix_rule(const char **sp, struct posix_rule *r)
{
    const char *s = *sp;
    if (*s++ != 'M')
        return false; /* Jn and n forms: not used by tzdata's footers */
    char *end;
    r->month = (int)strtol(s, &end, 10);
    if (end == s || *end != '.')
        return false;
    s = end + 1;
    r->week = (int)strtol(s, &end, 10);
    if (end == s || *end != '.')
        return false;
    s = end + 1;
    r->wday = (int)strtol(s, &end, 10);
    if (end == s)
        return false;
    s = end;
    if (r->month < 1 || r->month > 12 || r->week < 1 || r->week > 5 || r->wday < 0 || r->wday > 6)
        return false;
    r->time = 7200;
    if (*s == '/') {
        s++;
        if (!posix_time(&s, &r->time))
            return false;
    }
    *sp = s;
    return true;
}

/* The instant (local wall seconds read as UTC) rule r names in year y. */
static int64_t rule_wall(const struct posix_rule *r, int y)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = r->month - 1, .tm_mday = 1};
    time_t first = timegm(&tm); /* sets tm_wday */
    int dim_tm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int dim = dim_tm[r->month - 1];
    if (r->month == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        dim = 29;
    int day = 1 + (r->wday - tm.tm_wday + 7) % 7 + (r->week - 1) * 7;
    while (day > dim)
        day -= 7;
    return (int64_t)first + (int64_t)(day - 1) * 86400 + r->time;
}

static bool tz_push(struct cron_tz *tz, int *cap, int64_t at, int32_t off)
{
    if (tz->n == *cap) {
        int ncap = *cap ? *cap * 2 : 64;
        int64_t *a = realloc(tz->at, (size_t)ncap * sizeof(*a));
        if (!a)
            return false;
        tz->at = a;
        int32_t *o = realloc(tz->off, (size_t)ncap * sizeof(*o));
        if (!o)
            return false;
        tz->off = o;
        *cap = ncap;
    }
    tz->at[tz->n] = at;
    tz->off[tz->n] = off;
    tz->n++;
    return true;
}

/* Extends tz past its last transition by the footer's rule. A footer
 * without daylight saving time (or one not understood) keeps the last
 * offset, which is what the table says anyway. */
static bool tz_apply_footer(struct cron_tz *tz, int *cap, const char *s)
{
    int32_t std, dst;
    if (!posix_name(&s) || !posix_time(&s, &std))
        return true;
    std = -std; /* POSIX offsets count west */
    if (*s == '\0' || !posix_name(&s))
        return true;
    dst = std + 3600;
    if (*s != ',' && posix_time(&s, &dst))
        dst = -dst;
    struct posix_rule start, end;
    if (*s++ != ',' || !posix_rule(&s, &start) || *s++ != ',' || !posix_rule(&s, &end))
        return true;
    int64_t last = tz->n ? tz->at[tz->n - 1] : INT64_MIN;
    /* From the year of the last transition (a table reaching before 1900 or
     * past TZ_LAST_YEAR needs no rule). */
    int64_t clamp = last < -2208988800 ? -2208988800 : last > 7289654400 ? 7289654400 : last;
    time_t lt = (time_t)clamp;
    struct tm tm;
    if (!gmtime_r(&lt, &tm))
        return true;
    for (int y = tm.tm_year + 1900; y <= TZ_LAST_YEAR; y++) {
        /* The start is read in standard time, the end in daylight time. */
        int64_t a = rule_wall(&start, y) - std, b = rule_wall(&end, y) - dst;
        int64_t t1 = a < b ? a : b, t2 = a < b ? b : a;
        int32_t o1 = a < b ? dst : std, o2 = a < b ? std : dst;
        if (t1 > last && !tz_push(tz, cap, t1, o1))
            return false;
        if (t2 > last && !tz_push(tz, cap, t2, o2))
            return false;
    }
    return true;
}

/* ---- TZif ----------------------------------------------------------------- */

bool cron_tz_parse(struct cron_tz *tz, const char *name, const uint8_t *d, size_t len, char *why,
                   size_t whylen)
{
    memset(tz, 0, sizeof(*tz));
    snprintf(tz->name, sizeof(tz->name), "%s", name);
    if (len < 44 || memcmp(d, "TZif", 4) != 0)
        return tz_fail(tz, why, whylen, "not a TZif file");
    int version = d[4];
    size_t counts[6];
    for (int i = 0; i < 6; i++)
        counts[i] = be32(d + 20 + 4 * i);
    /* isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt */
    size_t tsize = 4, off = 44;
    if (version >= '2') {
        /* Skip the 32-bit block for the 64-bit one after it. */
        size_t skip =
            counts[3] * 5 + counts[4] * 6 + counts[5] + counts[2] * 8 + counts[1] + counts[0];
        if (counts[3] > 100000 || counts[4] > 256 || counts[2] > 10000 || counts[5] > 65536 ||
            off + skip + 44 > len || memcmp(d + off + skip, "TZif", 4) != 0)
            return tz_fail(tz, why, whylen, "malformed TZif file");
        off += skip;
        for (int i = 0; i < 6; i++)
            counts[i] = be32(d + off + 20 + 4 * i);
        off += 44;
        tsize = 8;
    }
    size_t timecnt = counts[3], typecnt = counts[4];
    if (typecnt == 0 || typecnt > 256 || timecnt > 100000 || counts[2] > 10000 || counts[5] > 65536)
        return tz_fail(tz, why, whylen, "malformed TZif file");
    size_t need = timecnt * (tsize + 1) + typecnt * 6 + counts[5] + counts[2] * (tsize + 4) +
                  counts[1] + counts[0];
    if (off + need > len)
        return tz_fail(tz, why, whylen, "truncated TZif file");
    const uint8_t *times = d + off, *idx = times + timecnt * tsize, *types = idx + timecnt;
    int cap = 0;
    tz->off_before = (int32_t)be32(types);
    for (size_t i = 0; i < timecnt; i++) {
        int64_t at = tsize == 8 ? be64(times + 8 * i) : (int32_t)be32(times + 4 * i);
        if (idx[i] >= typecnt)
            return tz_fail(tz, why, whylen, "malformed TZif file");
        if (tz->n && at <= tz->at[tz->n - 1])
            return tz_fail(tz, why, whylen, "TZif transitions out of order");
        if (!tz_push(tz, &cap, at, (int32_t)be32(types + 6 * idx[i])))
            return tz_fail(tz, why, whylen, "out of memory");
    }
    off += need;
    /* The footer: "\nRULE\n". */
    if (version >= '2' && off < len && d[off] == '\n') {
        const uint8_t *nl = memchr(d + off + 1, '\n', len - off - 1);
        char rule[128];
        size_t n = nl ? (size_t)(nl - (d + off + 1)) : 0;
        if (nl && n < sizeof(rule) && !memchr(d + off + 1, '\0', n)) {
            memcpy(rule, d + off + 1, n);
            rule[n] = '\0';
            if (!tz_apply_footer(tz, &cap, rule))
                return tz_fail(tz, why, whylen, "out of memory");
        }
    }
    return true;
}

static bool utc_name(const char *name)
{
    return !*name || strcasecmp(name, "UTC") == 0 || strcasecmp(name, "GMT") == 0 ||
           strcasecmp(name, "Etc/UTC") == 0 || strcmp(name, "Z") == 0;
}

bool cron_tz_load(struct cron_tz *tz, const char *name, const char *dir, char *why, size_t whylen)
{
    memset(tz, 0, sizeof(*tz));
    snprintf(tz->name, sizeof(tz->name), "%s", *name ? name : "UTC");
    if (utc_name(name))
        return true;
    /* A name, not a path: no way out of the zone directory. */
    if (strlen(name) >= sizeof(tz->name) || name[0] == '/' || strstr(name, "..") ||
        strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") !=
            strlen(name))
        return tz_fail(tz, why, whylen, "not a zone name (Area/City, as in /usr/share/zoneinfo)");
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "/usr/share/zoneinfo", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "cannot open %s: %s", path, strerror(errno));
        return tz_fail(tz, why, whylen, msg);
    }
    uint8_t *buf = malloc(TZ_MAX_FILE);
    size_t len = 0;
    ssize_t r = 0;
    while (buf && len < TZ_MAX_FILE && (r = read(fd, buf + len, TZ_MAX_FILE - len)) > 0)
        len += (size_t)r;
    close(fd);
    if (!buf || r < 0) {
        free(buf);
        return tz_fail(tz, why, whylen, "cannot read the zone file");
    }
    bool ok = cron_tz_parse(tz, name, buf, len, why, whylen);
    free(buf);
    return ok;
}
