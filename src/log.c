/* log.c - log lines to stderr, a file and syslog. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static int log_verbosity;
static bool log_quiet;
static FILE *log_file;
static char *log_file_path;
static bool log_syslog;
/* Workers log concurrently; the lock keeps each line whole in the file. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE"};

const char *log_level_str(enum log_level lvl)
{
    if ((unsigned)lvl < sizeof(level_names) / sizeof(level_names[0]))
        return level_names[lvl];
    return "?";
}

static int facility_from_name(const char *name)
{
    static const struct {
        const char *name;
        int value;
    } map[] = {{"auth", LOG_AUTH},     {"authpriv", LOG_AUTHPRIV}, {"daemon", LOG_DAEMON},
               {"user", LOG_USER},     {"local0", LOG_LOCAL0},     {"local1", LOG_LOCAL1},
               {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},     {"local4", LOG_LOCAL4},
               {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},     {"local7", LOG_LOCAL7}};
    for (size_t i = 0; name && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcasecmp(name, map[i].name) == 0)
            return map[i].value;
    return LOG_DAEMON;
}

bool log_open(const char *logfile, bool use_syslog, const char *syslog_ident,
              const char *syslog_facility)
{
    FILE *f = NULL;
    if (logfile && *logfile) {
        f = fopen(logfile, "a");
        if (!f)
            return false;
        setvbuf(f, NULL, _IOLBF, 0);
    }
    pthread_mutex_lock(&log_lock);
    if (log_file)
        fclose(log_file);
    free(log_file_path);
    log_file = f;
    log_file_path = f ? strdup(logfile) : NULL;
    if (log_syslog)
        closelog();
    log_syslog = use_syslog;
    if (use_syslog)
        openlog(syslog_ident && *syslog_ident ? syslog_ident : "sluice", LOG_PID,
                facility_from_name(syslog_facility));
    pthread_mutex_unlock(&log_lock);
    return true;
}

void log_reopen(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_file_path) {
        FILE *f = fopen(log_file_path, "a");
        if (f) {
            setvbuf(f, NULL, _IOLBF, 0);
            fclose(log_file);
            log_file = f;
        }
    }
    pthread_mutex_unlock(&log_lock);
}

void log_close(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_file)
        fclose(log_file);
    log_file = NULL;
    free(log_file_path);
    log_file_path = NULL;
    if (log_syslog)
        closelog();
    log_syslog = false;
    pthread_mutex_unlock(&log_lock);
}

void log_set_verbosity(int verbosity)
{
    log_verbosity = verbosity;
}

void log_set_quiet(bool quiet)
{
    log_quiet = quiet;
}

bool log_enabled(enum log_level lvl)
{
    return (int)lvl <= (int)LOG_LVL_LOG + log_verbosity;
}

void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
    if (!log_enabled(lvl))
        return;
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03d UTC", (int)(tv.tv_usec / 1000));

    pthread_mutex_lock(&log_lock);
    if (!log_quiet)
        fprintf(stderr, "%s [%d] %s %s\n", ts, (int)getpid(), log_level_str(lvl), msg);
    if (log_file)
        fprintf(log_file, "%s [%d] %s %s\n", ts, (int)getpid(), log_level_str(lvl), msg);
    if (log_syslog) {
        static const int prio[] = {LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG};
        syslog(prio[lvl], "%s %s", log_level_str(lvl), msg);
    }
    pthread_mutex_unlock(&log_lock);
    if (lvl == LOG_LVL_FATAL)
        exit(1);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(lvl, fmt, ap);
    va_end(ap);
}

void log_format(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
