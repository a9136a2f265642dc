/*
 * echo.c - the "C ceiling": a minimal single-threaded epoll echo server.
 *
 * Usage: echo PORT   (0 picks a free port). Listens on 127.0.0.1 and prints
 * "READY <port>" on stdout once listening. Level-triggered, nonblocking,
 * TCP_NODELAY. Each readable event does one read into a 64 KiB buffer and
 * writes it straight back. If the write is partial, the rest goes into the
 * connection's pending buffer and the connection waits for EPOLLOUT only (no
 * reading while pending: backpressure) until the pending bytes are written.
 *
 * Build: gcc -O2 -Wall -Wextra -o echo echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_BYTES 65536
#define MAX_EVENTS 256

struct conn {
    int fd;
    char *pend;     /* bytes read but not yet written back */
    size_t off, len, cap;
};

static int ep;
static char buf[BUF_BYTES];

static void die(const char *what) { perror(what); exit(1); }

static void conn_close(struct conn *c) {
    close(c->fd); /* also removes it from the epoll set */
    free(c->pend);
    free(c);
}

static void watch(struct conn *c, uint32_t events) {
    struct epoll_event e = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
}

/* Write p[0..n); returns bytes written (< n if the socket is full), -1 on error. */
static ssize_t write_some(int fd, const char *p, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, p + done, n - done);
        if (k >= 0) { done += (size_t)k; continue; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return -1;
    }
    return (ssize_t)done;
}

static void on_readable(struct conn *c) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) { conn_close(c); return; }
    ssize_t w = write_some(c->fd, buf, (size_t)n);
    if (w < 0) { conn_close(c); return; }
    if (w == n) return;
    size_t rest = (size_t)(n - w);
    if (c->cap < rest) {
        char *p = realloc(c->pend, rest);
        if (!p) { conn_close(c); return; }
        c->pend = p;
        c->cap = rest;
    }
    memcpy(c->pend, buf + w, rest);
    c->off = 0;
    c->len = rest;
    watch(c, EPOLLOUT);
}

static void on_writable(struct conn *c) {
    ssize_t w = write_some(c->fd, c->pend + c->off, c->len - c->off);
    if (w < 0) { conn_close(c); return; }
    c->off += (size_t)w;
    if (c->off < c->len) return;
    c->off = c->len = 0;
    watch(c, EPOLLIN);
}

static void on_accept(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or out of descriptors: try again later */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->fd = fd;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) conn_close(c);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 64; }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(lfd, 1024) < 0) die("listen");
    socklen_t alen = sizeof a;
    if (getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) die("getsockname");
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le) < 0) die("epoll_ctl");
    printf("READY %d\n", ntohs(a.sin_port));
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) on_accept(lfd);
            else if (c->len) on_writable(c);
            else on_readable(c);
        }
    }
}
