/*
 * udp_echo.c - the UDP "C ceiling": a minimal single-threaded UDP echo server.
 *
 * Usage: udp_echo PORT   (0 picks a free port). Binds 127.0.0.1 and prints
 * "READY <port>" on stdout once bound. A blocking loop: one recvfrom into a
 * 64 KiB buffer, one sendto of the same bytes back to the sender. No
 * recvmmsg/sendmmsg batching: one system call per datagram each way, as the
 * simplest C server would do it. A failed sendto (e.g. ENOBUFS) drops that
 * datagram, as the kernel would.
 *
 * Build: gcc -O2 -Wall -Wextra -o udp_echo udp_echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[65536];

static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 64; }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    socklen_t alen = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0) die("getsockname");
    printf("READY %d\n", ntohs(a.sin_port));
    fflush(stdout);

    for (;;) {
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        if (n < 0) {
            if (errno == EINTR || errno == ECONNREFUSED) continue;
            die("recvfrom");
        }
        while (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen) < 0 && errno == EINTR) {
        }
    }
}
