/* What the tools of tests/tools share: the stop flag set by SIGTERM or
 * SIGINT, a monotonic clock, sleeping until a point of it, and a packet
 * given in hex on the command line. Inline, as each tool uses some of
 * them. Each tool is one .c file that includes this
 * (abuse_lib.native_tool() compiles it). */
#ifndef TOOL_UTIL_H
#define TOOL_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;

static inline void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static inline void tool_catch_stop(void)
{
    struct sigaction act = {.sa_handler = on_term};
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
}

static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_until(double t)
{
    struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (double)(time_t)t) * 1e9)};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static inline int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes lowercase hex into out (at most max bytes); its length, or -1. */
static inline long hex_decode(const char *hex, unsigned char *out, size_t max)
{
    size_t hexlen = strlen(hex), len = hexlen / 2;
    if (hexlen % 2 || len > max)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return (long)len;
}

#endif
