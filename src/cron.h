/* cron.h - five-field cron expressions, time zones, and the next time an
 * expression fires.
 *
 * Pure: no loop, no config, no global state; safe from any thread. The
 * time zone is read from a TZif file (/usr/share/zoneinfo) into a struct
 * of its own rather than through TZ and localtime_r(), because TZ is
 * process-wide: setting it for a job would change every thread's log
 * timestamps, and glibc reads it once. */
#ifndef SLUICE_CRON_H
#define SLUICE_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed expression: one bit per allowed value of each field. */
struct cron_expr {
    uint64_t minute; /* bits 0..59 */
    uint32_t hour;   /* bits 0..23 */
    uint32_t dom;    /* bits 1..31 */
    uint16_t month;  /* bits 1..12 */
    uint8_t dow;     /* bits 0..6, Sunday 0 (7 is taken for Sunday too) */
    /* Whether day of month / day of week were written starting with '*':
     * as in Vixie cron, when both are restricted a day matching either
     * fires; otherwise both must match. */
    bool dom_star, dow_star;
    bool hour_star; /* '*' hours: fires again in the hour repeated at a DST end */
};

/* Parses s: five fields (minute hour day-of-month month day-of-week), each
 * '*', a number, a range a-b, a list a,b,c, with an optional step /n after
 * '*' or a range (or a single value: a/n is a-max/n); month names jan-dec
 * and day names sun-sat (any case) wherever a number goes; or one of
 * @yearly @annually @monthly @weekly @daily @midnight @hourly. Returns
 * false with a reason in why (no trailing period) on bad input. */
bool cron_parse(const char *s, struct cron_expr *out, char *why, size_t whylen);

/* A time zone: UTC offsets by instant. */
struct cron_tz {
    char name[64];      /* as given ("UTC" for UTC) */
    int n;              /* transitions */
    int64_t *at;        /* n instants (UTC seconds), ascending */
    int32_t *off;       /* offset (seconds east of UTC) from at[i] on */
    int32_t off_before; /* before at[0], or always when n == 0 */
};

/* Loads zone name ("UTC", "Europe/Berlin", ...) from dir (NULL: the
 * system's, /usr/share/zoneinfo) into tz, which the caller frees with
 * cron_tz_free(). Transitions past the file's table come from its POSIX
 * rule (TZif v2+ footer, "Mm.w.d" rules), up to the year 2200. "UTC", "GMT"
 * and "" need no file. Returns false with why on an unknown or malformed
 * zone; tz is then empty (UTC) and safe to free. */
bool cron_tz_load(struct cron_tz *tz, const char *name, const char *dir, char *why, size_t whylen);
/* Parses a TZif image (for tests and fuzzing); as cron_tz_load(). */
bool cron_tz_parse(struct cron_tz *tz, const char *name, const uint8_t *data, size_t len, char *why,
                   size_t whylen);
void cron_tz_free(struct cron_tz *tz);
/* The zone's offset at instant t (UTC seconds). tz NULL: UTC. */
int32_t cron_tz_offset(const struct cron_tz *tz, int64_t t);

/* The first instant (UTC seconds, on a minute) strictly after `after` at
 * which e fires in zone tz (NULL: UTC); -1 if it never does within about
 * five years (Feb 30). Across daylight saving time:
 *   - a wall time that does not exist that day (the clock jumps forward
 *     over it) fires once, at the jump;
 *   - a wall time that happens twice (the clock goes back) fires at its
 *     first occurrence only, unless the hour field is '*' (an hourly or
 *     more frequent job keeps its pace through the repeated hour). */
int64_t cron_next(const struct cron_expr *e, const struct cron_tz *tz, int64_t after);

/* Whether wall time t (seconds, local time read as if it were UTC)
 * matches e. */
bool cron_matches(const struct cron_expr *e, int64_t wall);

#endif
