/* test_notify.c - the service manager notifications: nothing without
 * NOTIFY_SOCKET; with it, the datagrams systemd expects (READY=1,
 * RELOADING=1 with a current MONOTONIC_USEC, STOPPING=1 once, STATUS=),
 * sent to a socket this test binds, as a path and in the abstract namespace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "notify.h"

struct listener {
    int fd;
    char path[108]; /* as NOTIFY_SOCKET gives it ('@' for abstract) */
};

/* Binds a datagram socket: a file in /tmp, or an abstract name. */
static void listener_open(struct listener *l, bool abstract)
{
    l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(l->fd >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(l->path, sizeof(l->path), "%s/tmp/sluice-test-notify-%d", abstract ? "@" : "",
             (int)getpid());
    socklen_t len;
    if (abstract) {
        /* sun_path[0] = '\0', then the name after the '@'. */
        memcpy(sa.sun_path + 1, l->path + 1, strlen(l->path) - 1);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(l->path));
    } else {
        unlink(l->path);
        memcpy(sa.sun_path, l->path, strlen(l->path) + 1);
        len = (socklen_t)sizeof(sa);
    }
    assert_int_equal(bind(l->fd, (struct sockaddr *)&sa, len), 0);
    setenv("NOTIFY_SOCKET", l->path, 1);
}

static void listener_close(struct listener *l)
{
    unsetenv("NOTIFY_SOCKET");
    close(l->fd);
    if (l->path[0] == '/')
        unlink(l->path);
}

/* The next datagram, as a string; "" if none is waiting. */
static const char *next_message(const struct listener *l)
{
    static char buf[2048];
    ssize_t n = recv(l->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static unsigned long long monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

static void test_no_socket_is_a_no_op(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_false(notify_ready("x"));
    assert_false(notify_reloading());
    assert_false(notify_status("x"));
}

static void test_ready_and_status(void **state)
{
    (void)state;
    struct listener l;
    listener_open(&l, false);
    assert_true(notify_ready("serving, listening on 127.0.0.1:6432"));
    assert_string_equal(next_message(&l), "READY=1\nSTATUS=serving, listening on 127.0.0.1:6432");
    assert_true(notify_ready(NULL));
    assert_string_equal(next_message(&l), "READY=1");
    assert_true(notify_status("3 clients"));
    assert_string_equal(next_message(&l), "STATUS=3 clients");
    assert_string_equal(next_message(&l), "");
    listener_close(&l);
}

static void test_reloading_carries_monotonic_time(void **state)
{
    (void)state;
    struct listener l;
    listener_open(&l, true);
    unsigned long long before = monotonic_usec();
    assert_true(notify_reloading());
    unsigned long long after = monotonic_usec();
    const char *msg = next_message(&l);
    unsigned long long usec = 0;
    char status[256] = "";
    assert_int_equal(
        sscanf(msg, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%255[^\n]", &usec, status), 2);
    assert_true(usec >= before && usec <= after);
    assert_string_equal(status, "reloading the configuration");
    listener_close(&l);
}

/* Last: STOPPING=1 is sent once per process. */
static void test_stopping_once(void **state)
{
    (void)state;
    struct listener l;
    listener_open(&l, true);
    assert_true(notify_stopping("shutting down"));
    assert_string_equal(next_message(&l), "STOPPING=1\nSTATUS=shutting down");
    assert_false(notify_stopping("again"));
    assert_string_equal(next_message(&l), "");
    listener_close(&l);
}

/* A socket nobody listens on: a warning, false, and sluice goes on. */
static void test_unreachable_socket(void **state)
{
    (void)state;
    setenv("NOTIFY_SOCKET", "/nonexistent/sluice-notify", 1);
    assert_false(notify_ready("x"));
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_socket_is_a_no_op),
        cmocka_unit_test(test_ready_and_status),
        cmocka_unit_test(test_reloading_carries_monotonic_time),
        cmocka_unit_test(test_unreachable_socket),
        cmocka_unit_test(test_stopping_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
