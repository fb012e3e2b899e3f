/* The slowloris of test_abuse.py (issue 17 item 3): N connections to
 * 127.0.0.1:PORT, each sending the startup packet PACKET_HEX one byte a
 * second and never its last byte. The sends are paced evenly over each
 * second (connection i at i/N of it), as N independent clients would send
 * them, not in synchronized bursts: the Python abuser this replaces sent
 * them in ten bursts of N/10 a second and itself took a core's worth of
 * time slices from the clients being measured. Prints "ready" once every
 * connection is established, and on SIGTERM a JSON line of counts:
 * opened, bytes_sent, closed_by_pooler.
 *
 * usage: slowloris PORT N PACKET_HEX */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "tool_util.h"

/* Opens n non-blocking connections, 500 at a time, each waited for. */
static int connect_all(int *fds, int n, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct pollfd *pfd = calloc(500, sizeof(*pfd));
    if (!pfd)
        return -1;
    for (int done = 0; done < n;) {
        int batch = n - done < 500 ? n - done : 500;
        for (int i = 0; i < batch; i++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0 ||
                (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)) {
                perror("slowloris: connect");
                free(pfd);
                return -1;
            }
            fds[done + i] = fd;
            pfd[i] = (struct pollfd){.fd = fd, .events = POLLOUT};
        }
        for (int left = batch; left > 0;) {
            int r = poll(pfd, (nfds_t)batch, 30000);
            if (r <= 0) {
                fprintf(stderr, "slowloris: connections not established\n");
                free(pfd);
                return -1;
            }
            for (int i = 0; i < batch; i++)
                if (pfd[i].fd >= 0 && pfd[i].revents) {
                    pfd[i].fd = -1;
                    left--;
                }
        }
        done += batch;
    }
    free(pfd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: slowloris PORT N PACKET_HEX\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    size_t max = strlen(argv[3]) / 2;
    unsigned char *packet = malloc(max + 1);
    int *fds = calloc((size_t)(n > 0 ? n : 1), sizeof(int));
    int *sent = calloc((size_t)(n > 0 ? n : 1), sizeof(int));
    long got = packet ? hex_decode(argv[3], packet, max) : -1;
    if (n <= 0 || got < 2 || !fds || !sent)
        return 2;
    size_t len = (size_t)got;
    struct rlimit rl = {.rlim_cur = (rlim_t)n + 100, .rlim_max = (rlim_t)n + 100};
    setrlimit(RLIMIT_NOFILE, &rl); /* the caller's hard limit may already allow more */
    tool_catch_stop();
    if (connect_all(fds, n, port) < 0)
        return 1;
    printf("ready\n");
    fflush(stdout);
    long bytes = 0;
    int closed = 0;
    /* Connection i sends at start + k + i/n seconds; the ones due within a
     * millisecond go together (n/1000 sends per wakeup). */
    double start = now();
    for (long k = 0; !stop; k++) {
        for (int i = 0; i < n && !stop; i++) {
            double due = start + (double)k + (double)i / n;
            if (now() < due)
                sleep_until(ceil(due * 1000) / 1000);
            if (fds[i] < 0 || sent[i] >= (int)len - 1) /* never completes */
                continue;
            ssize_t r = send(fds[i], packet + sent[i], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (r == 1) {
                sent[i]++;
                bytes++;
            } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
                close(fds[i]);
                fds[i] = -1;
                closed++;
            }
        }
    }
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    printf("{\"opened\": %d, \"bytes_sent\": %ld, \"closed_by_pooler\": %d}\n", n, bytes, closed);
    return 0;
}
