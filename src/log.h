/* log.h - one line per event, PgBouncer-style, with levels.
 *
 * Lines look like:  2026-11-27 10:00:00.123 UTC [1234] LOG C-0x55d0c1: mydb/alice@127.0.0.1:5000
 * login attempt Destinations: stderr (unless quiet), logfile, syslog; chosen by log_open().
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_level {
    LOG_LVL_FATAL = 0, /* then exit(1) */
    LOG_LVL_ERROR,     /* something failed that should not */
    LOG_LVL_WARNING,   /* odd but handled */
    LOG_LVL_LOG,       /* normal events (PgBouncer's LOG) */
    LOG_LVL_DEBUG,     /* -v */
    LOG_LVL_NOISE,     /* -v -v */
};

const char *log_level_str(enum log_level lvl);

/* Opens destinations. Any of logfile/syslog_ident may be NULL or "".
 * Returns false (errno set) if the logfile cannot be opened; the previous
 * destinations stay in place then. Safe to call again on reload. */
bool log_open(const char *logfile, bool use_syslog, const char *syslog_ident,
              const char *syslog_facility);
void log_close(void);
/* Reopens the logfile (logrotate). */
void log_reopen(void);

/* verbosity: 0 = LOG, 1 = DEBUG, 2+ = NOISE. quiet suppresses stderr. */
void log_set_verbosity(int verbosity);
void log_set_quiet(bool quiet);
bool log_enabled(enum log_level lvl);

/* Formats an error message into err (errlen bytes); nothing if err is NULL
 * or errlen is 0. The "char *err, size_t errlen" out-parameter convention of
 * the loaders and parsers. */
void log_format(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define log_fatal(...)   log_msg(LOG_LVL_FATAL, __VA_ARGS__)
#define log_error(...)   log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_LVL_LOG, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LVL_DEBUG))                                                            \
            log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                                   \
    } while (0)
#define log_noise(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LVL_NOISE))                                                            \
            log_msg(LOG_LVL_NOISE, __VA_ARGS__);                                                   \
    } while (0)

#endif
