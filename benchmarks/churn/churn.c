/*
 * churn: connections per second against an echo server.
 *
 * Each of C slots loops: connect, send S bytes, read the S-byte echo, check
 * it, close (a normal close: FIN), and start over. One thread, one epoll
 * set, non-blocking sockets. Source addresses rotate over 127.0.0.1 ..
 * 127.0.0.N (IP_BIND_ADDRESS_NO_PORT) so that TIME_WAIT does not use up the
 * ephemeral ports of one address.
 *
 * usage: churn HOST PORT [-c slots=64] [-d seconds=5] [-w warmup=1] [-s size=64] [-n sources=16]
 * prints one JSON line: {"completed":..,"seconds":..,"rate":..,"errors":..,"mismatches":..,
 *                        "addr_busy":..,"connect_ms_max":..}
 * exit status 2 when an echo differs from what was sent.
 *
 * Build: gcc -O2 -Wall -o churn churn.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { IDLE, CONNECTING, READING };

struct slot {
    int fd;
    int state;
    int got;
    uint32_t seq;
    double started;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in server;
static int epfd, size = 64, sources = 16;
static uint32_t next_seq;
static unsigned long errors, addr_busy;
static double connect_max;

static void fill(unsigned char *buf, uint32_t seq) {
    for (int i = 0; i < size; i++) buf[i] = (unsigned char)(seq * 31u + (unsigned)i * 7u);
}

/* Start a connection in slot i (index doubles as the epoll cookie). */
static void start(struct slot *s, int i) {
    s->state = IDLE;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { errors++; return; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (sources > 1) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (next_seq % (unsigned)sources));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) { errors++; close(fd); return; }
    }
    if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS) {
        if (errno == EADDRNOTAVAIL) addr_busy++; else errors++;
        close(fd);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) { errors++; close(fd); return; }
    s->fd = fd;
    s->state = CONNECTING;
    s->got = 0;
    s->seq = next_seq++;
    s->started = now();
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [-c slots] [-d seconds] [-w warmup] [-s size] [-n sources]\n", argv[0]);
        return 1;
    }
    int slots = 64;
    double seconds = 5, warmup = 1;
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 1; }
    for (int a = 3; a + 1 < argc; a += 2) {
        if (!strcmp(argv[a], "-c")) slots = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-d")) seconds = atof(argv[a + 1]);
        else if (!strcmp(argv[a], "-w")) warmup = atof(argv[a + 1]);
        else if (!strcmp(argv[a], "-s")) size = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-n")) sources = atoi(argv[a + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[a]); return 1; }
    }
    if (size < 1 || size > 65536 || slots < 1 || sources < 1) { fprintf(stderr, "bad option\n"); return 1; }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct slot *sl = calloc((size_t)slots, sizeof *sl);
    unsigned char *want = malloc((size_t)size), *buf = malloc((size_t)size);
    struct epoll_event *evs = calloc((size_t)slots, sizeof *evs);
    unsigned long completed = 0, mismatches = 0;
    double t0 = now(), measure_from = t0 + warmup, end = measure_from + seconds;
    for (int i = 0; i < slots; i++) start(&sl[i], i);
    for (;;) {
        double t = now();
        if (t >= end) break;
        if (t >= measure_from && measure_from > 0) { completed = 0; measure_from = -1; }
        int n = epoll_wait(epfd, evs, slots, 10);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct slot *s = &sl[i];
            if (s->state == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) { errors++; close(s->fd); start(s, i); continue; }
                double took = now() - s->started;
                if (took > connect_max) connect_max = took;
                fill(want, s->seq);
                if (send(s->fd, want, (size_t)size, MSG_NOSIGNAL) != size) {
                    errors++; close(s->fd); start(s, i); continue;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
                s->state = READING;
            } else if (s->state == READING) {
                ssize_t r = recv(s->fd, buf + s->got, (size_t)(size - s->got), 0);
                if (r < 0 && errno == EAGAIN) continue;
                if (r <= 0) { errors++; close(s->fd); start(s, i); continue; }
                s->got += (int)r;
                if (s->got < size) continue;
                fill(want, s->seq);
                if (memcmp(buf, want, (size_t)size)) mismatches++;
                else completed++;
                close(s->fd);
                start(s, i);
            }
        }
        /* Slots whose connect could not even start (no port free) retry here. */
        for (int i = 0; i < slots; i++)
            if (sl[i].state == IDLE) start(&sl[i], i);
    }
    double took = now() - (end - seconds);
    printf("{\"completed\":%lu,\"seconds\":%.3f,\"rate\":%.1f,\"errors\":%lu,\"mismatches\":%lu,"
           "\"addr_busy\":%lu,\"connect_ms_max\":%.1f,\"slots\":%d,\"size\":%d,\"sources\":%d}\n",
           completed, took, completed / took, errors, mismatches, addr_busy, connect_max * 1e3,
           slots, size, sources);
    return mismatches ? 2 : 0;
}
