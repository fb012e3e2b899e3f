/* config_jobs.h - the [jobs] section: one refresh job per line. Private to
 * the config module (config.c) and its tests; other modules read struct
 * config_job (config.h). */
#ifndef SLUICE_CONFIG_JOBS_H
#define SLUICE_CONFIG_JOBS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Default quiet period after a write (after_writes_to). */
#define CONFIG_JOB_DEBOUNCE_DEFAULT 10000000LL

/* Parses the job line "name = value" (value writable, cut in place) and
 * appends it to cfg->jobs. False with "file:line: reason" in err. */
bool config_job_parse(struct config *cfg, const char *file, int line, const char *name, char *value,
                      char *err, size_t errlen);

/* What can only be checked once the whole file is read: each job's
 * database has an entry with a user= (the job logs in as it). False with "file:line: reason" in
 * err. */
bool config_jobs_check(const struct config *cfg, char *err, size_t errlen);

/* Whether name is a time zone job_timezone may be (why says what is
 * wrong). */
bool config_job_timezone_check(const char *name, char *why, size_t whylen);

/* Deep copy of src's jobs into dst (whose jobs are unset). False when out
 * of memory; dst is then safe to config_jobs_free(). */
bool config_jobs_copy(struct config *dst, const struct config *src);
void config_jobs_free(struct config *cfg);

#endif
