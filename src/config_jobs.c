/* config_jobs.c - the [jobs] section (config_jobs.h).
 *
 * A line is NAME = key=value ..., values bare (up to a blank) or quoted
 * with double quotes ("" or \" for a quote inside: SQL's quoted names) or
 * single quotes ('' for a quote), since a command and a schedule have
 * blanks in them. Every mistake stops the load with file:line and what is
 * wrong, so that a reload with a bad job keeps the old config. */
#include "config_jobs.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cron.h"
#include "log.h"

#define WHY_LEN 256

static bool jfail(char *err, size_t errlen, const char *file, int line, const char *why)
{
    log_format(err, errlen, "%s:%d: %s", file, line, why);
    return false;
}

/* The next key=value off *sp, in place. 1: a pair, 0: the end, -1: why. */
static int job_pair(char **sp, char **key, char **value, char *why, size_t whylen)
{
    char *s = *sp;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return 0;
    *key = s;
    while (*s && *s != '=' && !isspace((unsigned char)*s))
        s++;
    if (*s != '=' || s == *key) {
        log_format(why, whylen, "expected key=value at \"%.40s\"", *key);
        return -1;
    }
    *s++ = '\0';
    if (*s == '"' || *s == '\'') {
        char q = *s++, *w = s;
        *value = w;
        for (;;) {
            if (!*s) {
                log_format(why, whylen, "unterminated quoted value for %s", *key);
                return -1;
            }
            if (*s == '\\' && q == '"' && s[1] == '"') {
                s++;
            } else if (*s == q) {
                if (s[1] != q)
                    break;
                s++;
            }
            *w++ = *s++;
        }
        s++;
        if (*s && !isspace((unsigned char)*s)) {
            log_format(why, whylen, "expected a blank after the quoted value of %s", *key);
            return -1;
        }
        *w = '\0';
    } else {
        *value = s;
        while (*s && !isspace((unsigned char)*s))
            s++;
        if (*s)
            *s++ = '\0';
    }
    *sp = s;
    return 1;
}

static char *lower_dup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    d[n] = '\0';
    return d;
}

static bool rel_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '$')
            return false;
    return !isdigit((unsigned char)s[0]);
}

/* after_writes_to=a,b.c into j->after. */
static bool parse_after(struct config_job *j, const char *v, char *why, size_t whylen)
{
    while (*v) {
        const char *end = strchr(v, ',');
        size_t n = end ? (size_t)(end - v) : strlen(v);
        const char *dot = memchr(v, '.', n);
        size_t sn = dot ? (size_t)(dot - v) : 0, tn = dot ? n - sn - 1 : n;
        const char *t = dot ? dot + 1 : v;
        if ((dot && !rel_name_ok(v, sn)) || !rel_name_ok(t, tn)) {
            log_format(why, whylen,
                       "after_writes_to: \"%.*s\" is not a table name (table or schema.table)",
                       (int)(n > 80 ? 80 : n), v);
            return false;
        }
        struct config_job_rel *a = realloc(j->after, (size_t)(j->n_after + 1) * sizeof(*a));
        if (!a)
            return false;
        j->after = a;
        struct config_job_rel *r = &a[j->n_after++];
        r->schema = dot ? lower_dup(v, sn) : NULL;
        r->name = lower_dup(t, tn);
        if (!r->name || (dot && !r->schema))
            return false;
        v += n;
        if (*v == ',' && !*++v) {
            log_format(why, whylen, "after_writes_to: a table name missing after \",\"");
            return false;
        }
    }
    return true;
}

static bool set_string(char **field, const char *v)
{
    free(*field);
    *field = strdup(v);
    return *field != NULL;
}

/* One key=value of a job; false with why. */
static bool job_key(struct config_job *j, const char *k, const char *v, char *why, size_t whylen)
{
    int64_t t;
    if (strcmp(k, "database") == 0)
        return set_string(&j->database, v) || (log_format(why, whylen, "out of memory"), false);
    if (strcmp(k, "command") == 0)
        return set_string(&j->command, v) || (log_format(why, whylen, "out of memory"), false);
    if (strcmp(k, "schedule") == 0) {
        char cw[200];
        if (!cron_parse(v, &j->cron, cw, sizeof(cw))) {
            log_format(why, whylen, "bad schedule \"%.80s\": %s", v, cw);
            return false;
        }
        return set_string(&j->schedule, v) || (log_format(why, whylen, "out of memory"), false);
    }
    if (strcmp(k, "after_writes_to") == 0) {
        if (j->n_after) {
            log_format(why, whylen, "after_writes_to given twice");
            return false;
        }
        if (!parse_after(j, v, why, whylen)) {
            if (!*why)
                log_format(why, whylen, "out of memory");
            return false;
        }
        return true;
    }
    if (strcmp(k, "debounce") == 0 || strcmp(k, "timeout") == 0) {
        if (!config_parse_time(v, &t) || t < 0 || (k[0] == 'd' && t < 1000)) {
            log_format(why, whylen, "invalid %s \"%.40s\" (seconds, or with ms/s/min/h%s)", k, v,
                       k[0] == 'd' ? "; at least 1ms" : "");
            return false;
        }
        *(k[0] == 'd' ? &j->debounce : &j->timeout) = t;
        return true;
    }
    log_format(why, whylen,
               "unknown job key \"%.40s\" (database, command, schedule, after_writes_to, "
               "debounce, timeout)",
               k);
    return false;
}

static void job_clear(struct config_job *j)
{
    free(j->name);
    free(j->database);
    free(j->command);
    free(j->schedule);
    free(j->file);
    for (int i = 0; i < j->n_after; i++) {
        free(j->after[i].schema);
        free(j->after[i].name);
    }
    free(j->after);
    memset(j, 0, sizeof(*j));
}

static bool name_ok(const char *s)
{
    if (!*s || strlen(s) > 63)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
            return false;
    return true;
}

bool config_job_parse(struct config *cfg, const char *file, int line, const char *name, char *value,
                      char *err, size_t errlen)
{
    char why[WHY_LEN] = "";
    if (!name_ok(name))
        return jfail(err, errlen, file, line,
                     "a job name is 1 to 63 letters, digits, \"_\", \"-\" or \".\"");
    const struct config_job *dup = config_find_job(cfg, name);
    if (dup) {
        log_format(why, sizeof(why), "job \"%s\" is defined twice (first at %s:%d)", name,
                   dup->file, dup->line);
        return jfail(err, errlen, file, line, why);
    }
    struct config_job j = {.debounce = CONFIG_JOB_DEBOUNCE_DEFAULT, .line = line};
    bool ok = set_string(&j.name, name) && set_string(&j.file, file) &&
              set_string(&j.database, "") && set_string(&j.command, "") &&
              set_string(&j.schedule, "");
    if (!ok)
        log_format(why, sizeof(why), "out of memory");
    char *s = value, *k, *v;
    int r;
    while (ok && (r = job_pair(&s, &k, &v, why, sizeof(why))) != 0)
        ok = r > 0 && job_key(&j, k, v, why, sizeof(why));
    if (ok && !j.database[0])
        ok = (log_format(why, sizeof(why), "job \"%s\" needs database=", name), false);
    if (ok && !j.command[0])
        ok = (log_format(why, sizeof(why), "job \"%s\" needs command=", name), false);
    if (ok && !j.schedule[0] && !j.n_after)
        ok = (log_format(why, sizeof(why), "job \"%s\" needs schedule= or after_writes_to=", name),
              false);
    struct config_job *a = ok ? realloc(cfg->jobs, (size_t)(cfg->n_jobs + 1) * sizeof(*a)) : NULL;
    if (ok && !a)
        log_format(why, sizeof(why), "out of memory");
    if (!a) {
        job_clear(&j);
        return jfail(err, errlen, file, line, why);
    }
    cfg->jobs = a;
    a[cfg->n_jobs++] = j;
    return true;
}

bool config_jobs_check(const struct config *cfg, char *err, size_t errlen)
{
    char why[WHY_LEN];
    for (int i = 0; i < cfg->n_jobs; i++) {
        const struct config_job *j = &cfg->jobs[i];
        const struct config_database *cd = config_find_database(cfg, j->database);
        if (!cd)
            log_format(why, sizeof(why), "job \"%s\": no [databases] entry for database %s",
                       j->name, j->database);
        else if (!cd->user[0])
            log_format(why, sizeof(why),
                       "job \"%s\": the [databases] entry of %s has no user= (a job logs in as "
                       "its database entry's user)",
                       j->name, j->database);
        else
            continue;
        return jfail(err, errlen, j->file, j->line, why);
    }
    return true;
}

bool config_jobs_copy(struct config *dst, const struct config *src)
{
    dst->jobs = NULL;
    dst->n_jobs = 0;
    if (!src->n_jobs)
        return true;
    dst->jobs = calloc((size_t)src->n_jobs, sizeof(*dst->jobs));
    if (!dst->jobs)
        return false;
    for (int i = 0; i < src->n_jobs; i++) {
        const struct config_job *s = &src->jobs[i];
        struct config_job *d = &dst->jobs[i];
        dst->n_jobs = i + 1;
        *d = *s;
        d->name = strdup(s->name);
        d->database = strdup(s->database);
        d->command = strdup(s->command);
        d->schedule = strdup(s->schedule);
        d->file = strdup(s->file);
        d->after = s->n_after ? calloc((size_t)s->n_after, sizeof(*d->after)) : NULL;
        d->n_after = d->after ? s->n_after : 0;
        bool ok = d->name && d->database && d->command && d->schedule && d->file &&
                  (!s->n_after || d->after);
        for (int k = 0; ok && k < d->n_after; k++) {
            d->after[k].name = strdup(s->after[k].name);
            d->after[k].schema = s->after[k].schema ? strdup(s->after[k].schema) : NULL;
            ok = d->after[k].name && (!s->after[k].schema || d->after[k].schema);
        }
        if (!ok)
            return false;
    }
    return true;
}

void config_jobs_free(struct config *cfg)
{
    for (int i = 0; i < cfg->n_jobs; i++)
        job_clear(&cfg->jobs[i]);
    free(cfg->jobs);
    cfg->jobs = NULL;
    cfg->n_jobs = 0;
}

const struct config_job *config_find_job(const struct config *cfg, const char *name)
{
    for (int i = 0; i < cfg->n_jobs; i++)
        if (strcmp(cfg->jobs[i].name, name) == 0)
            return &cfg->jobs[i];
    return NULL;
}

bool config_job_timezone_check(const char *name, char *why, size_t whylen)
{
    struct cron_tz tz;
    bool ok = cron_tz_load(&tz, name, NULL, why, whylen);
    cron_tz_free(&tz);
    return ok;
}
