/* notify.h - tells the service manager where sluice is in its life
 * (systemd's Type=notify: READY=1, RELOADING=1, STOPPING=1, STATUS=), through
 * libsystemd's sd_notify(). Without NOTIFY_SOCKET in the environment (not
 * started by systemd) every call does nothing. Any thread may call them. */
#ifndef SLUICE_NOTIFY_H
#define SLUICE_NOTIFY_H

#include <stdbool.h>

/* READY=1, with STATUS=status unless status is NULL: sluice listens and
 * serves (at start, and again after a reload). true if a manager was told;
 * false when there is none (NOTIFY_SOCKET unset) or sending failed (logged
 * as a warning). */
bool notify_ready(const char *status);

/* RELOADING=1 with MONOTONIC_USEC= (the CLOCK_MONOTONIC time, which newer
 * systemd checks against the reload it asked for) and STATUS=: a reload
 * starts; notify_ready() ends it, whether it succeeded or not. */
bool notify_reloading(void);

/* STOPPING=1 with STATUS=status (may be NULL): a shutdown started. Only the
 * first call in a process sends anything (a graceful shutdown and the final
 * exit both call it); later ones return false. */
bool notify_stopping(const char *status);

/* STATUS=text alone: a line `systemctl status` shows. */
bool notify_status(const char *text);

#endif
