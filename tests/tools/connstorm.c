/* The connection storms of test_abuse.py (issue 17 item 3), at RATE
 * connections a second to 127.0.0.1:PORT, paced evenly (connection k at
 * k/RATE s), as many independent clients would arrive, and each closed
 * with a reset (SO_LINGER 0) so that thousands a second do not use up the
 * local ports in TIME_WAIT:
 *
 *   churn   every other connection sends the startup packet PACKET_HEX
 *           first; the rest close at once;
 *   cancel  each sends a CancelRequest with a random key (which matches
 *           no client).
 *
 * The Python abusers these replace opened their connections in bursts of
 * RATE/100 every 10 ms and took a core from the clients being measured.
 * Prints "ready", then on SIGTERM a JSON line of counts: connections,
 * storm_seconds, rate, failed (connects or sends that failed) and errors
 * (the failures by errno name). The connection SIGTERM interrupts (EINTR:
 * the handler does not restart calls) is not one, the stop cut it, not the
 * pooler: interrupted is 1 then.
 *
 * usage: connstorm churn|cancel PORT RATE [PACKET_HEX] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tool_util.h"

static void put32(unsigned char *p, uint32_t v)
{
    uint32_t be = htonl(v);
    memcpy(p, &be, 4);
}

/* One connection: connect, send len bytes of msg (none if len is 0), reset.
 * 0, or the errno of the connect or send that failed (EMSGSIZE for a short
 * send). */
static int storm_one(const struct sockaddr_in *sa, const unsigned char *msg, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return errno;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* bounds connect() too */
    int err = 0;
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0) {
        err = errno;
    } else if (len > 0) {
        ssize_t sent = send(fd, msg, len, MSG_NOSIGNAL);
        err = sent < 0 ? errno : sent != (ssize_t)len ? EMSGSIZE : 0;
    }
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
    return err;
}

/* Failures by errno: the first few kinds seen, with their counts. */
#define MAX_KINDS 8
static struct failure_kind {
    int err;
    long count;
} kinds[MAX_KINDS];
static int n_kinds;

static void count_failure(int err)
{
    for (int i = 0; i < n_kinds; i++)
        if (kinds[i].err == err) {
            kinds[i].count++;
            return;
        }
    if (n_kinds < MAX_KINDS)
        kinds[n_kinds++] = (struct failure_kind){err, 1};
}

int main(int argc, char **argv)
{
    int cancel = argc == 4 && strcmp(argv[1], "cancel") == 0;
    int churn = argc == 5 && strcmp(argv[1], "churn") == 0;
    if (!cancel && !churn) {
        fprintf(stderr, "usage: connstorm churn|cancel PORT RATE [PACKET_HEX]\n");
        return 2;
    }
    int port = atoi(argv[2]), rate = atoi(argv[3]);
    if (port <= 0 || port > 65535 || rate <= 0)
        return 2;
    unsigned char packet[1024];
    size_t len = 16;
    if (churn) {
        long got = hex_decode(argv[4], packet, sizeof(packet));
        if (got < 8)
            return 2;
        len = (size_t)got;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    tool_catch_stop();
    unsigned int seed = 5;
    printf("ready\n");
    fflush(stdout);
    long n = 0, failed = 0;
    int interrupted = 0;
    /* Connection k at start + k/rate; those due within a millisecond go
     * together. Behind schedule (a loaded box), no sleep: as fast as it can. */
    double start = now();
    for (; !stop; n++) {
        double due = start + (double)n / rate;
        if (now() < due)
            sleep_until(ceil(due * 1000) / 1000);
        if (stop)
            break;
        size_t send_len = len;
        if (cancel) {
            put32(packet, 16);
            put32(packet + 4, 80877102); /* CancelRequest */
            put32(packet + 8, (uint32_t)rand_r(&seed));
            put32(packet + 12, (uint32_t)rand_r(&seed) ^ ((uint32_t)rand_r(&seed) << 16));
        } else if (n % 2 == 0) {
            send_len = 0;
        }
        int err = storm_one(&sa, packet, send_len);
        if (err == EINTR && stop) {
            interrupted = 1; /* cut by the stop itself */
            break;
        }
        if (err) {
            failed++;
            count_failure(err);
        }
    }
    double seconds = now() - start;
    printf("{\"connections\": %ld, \"storm_seconds\": %.2f, \"rate\": %ld, \"failed\": %ld, "
           "\"interrupted\": %d, \"errors\": {",
           n, seconds, seconds > 0 ? (long)(n / seconds) : 0, failed, interrupted);
    for (int i = 0; i < n_kinds; i++)
        printf("%s\"%s\": %ld", i ? ", " : "", strerrorname_np(kinds[i].err), kinds[i].count);
    printf("}}\n");
    return 0;
}
