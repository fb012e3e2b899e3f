/* notify.c - systemd readiness notification (notify.h). */
#include "notify.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"

static atomic_bool notify_stopping_sent;

/* Sends msg (newline-separated assignments) if a manager listens. */
static bool notify_send(const char *msg)
{
    /* sd_notify() checks NOTIFY_SOCKET too; checking first keeps the usual
     * case (no systemd) free of any system call. */
    const char *where = getenv("NOTIFY_SOCKET");
    if (!where)
        return false;
    int r = sd_notify(0, msg);
    if (r < 0) {
        log_warning("could not notify the service manager at %s: %s", where, strerror(-r));
        return false;
    }
    return r > 0;
}

/* msg = head, then "\nSTATUS=status" when status is given. */
static bool notify_send_with_status(const char *head, const char *status)
{
    char msg[1024];
    if (status)
        snprintf(msg, sizeof(msg), "%s\nSTATUS=%s", head, status);
    else
        snprintf(msg, sizeof(msg), "%s", head);
    return notify_send(msg);
}

bool notify_ready(const char *status)
{
    return notify_send_with_status("READY=1", status);
}

bool notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long usec =
        (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
    char head[96];
    snprintf(head, sizeof(head), "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
    return notify_send_with_status(head, "reloading the configuration");
}

bool notify_stopping(const char *status)
{
    if (atomic_exchange(&notify_stopping_sent, true))
        return false;
    return notify_send_with_status("STOPPING=1", status);
}

bool notify_status(const char *text)
{
    char msg[1024];
    snprintf(msg, sizeof(msg), "STATUS=%s", text);
    return notify_send(msg);
}
