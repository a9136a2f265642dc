/*
 * tls_echo.c - the TLS "C ceiling": a minimal single-threaded epoll echo
 * server over OpenSSL, the TLS counterpart of echo.c.
 *
 * Usage: tls_echo PORT CERT KEY   (0 picks a free port; PEM files). Listens
 * on 127.0.0.1 and prints "READY <port>" on stdout once listening.
 *
 * TLS 1.3 only, TLS_AES_128_GCM_SHA256 and X25519 only (what the load
 * generator offers), no session tickets and no session cache (it never
 * resumes). Level-triggered, nonblocking, TCP_NODELAY, read-ahead on (one
 * read() takes every record the socket has rather than a header and then a
 * body). On each readable event it decrypts every record available into one
 * 64 KiB buffer (SSL_read until WANT_READ or the buffer is full) and writes
 * the plaintext back with one SSL_write (one record per 16 KiB). A write the
 * socket does not take whole is kept and the connection waits for EPOLLOUT
 * only (no reading while pending: backpressure); once it is written, the
 * records OpenSSL already holds are served without waiting for the socket.
 *
 * Build: gcc -O2 -Wall -Wextra -o tls_echo tls_echo.c -lssl -lcrypto
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

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_BYTES 65536
#define MAX_EVENTS 256

struct conn {
    int fd;
    SSL *ssl;
    int ready;      /* handshake complete */
    uint32_t watching;
    char *pend;     /* plaintext read but not yet taken by SSL_write */
    size_t off, len, cap;
};

static int ep;
static char buf[BUF_BYTES];

static void die(const char *what) { perror(what); exit(1); }

static void die_ssl(const char *what) {
    fprintf(stderr, "%s: ", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void conn_close(struct conn *c, int notify) {
    if (notify) SSL_shutdown(c->ssl); /* close_notify; the peer may be gone already */
    ERR_clear_error(); /* what failed here must not show in the next SSL_get_error */
    SSL_free(c->ssl);
    close(c->fd); /* also removes it from the epoll set */
    free(c->pend);
    free(c);
}

static void watch(struct conn *c, uint32_t events) {
    if (c->watching == events) return;
    struct epoll_event e = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
    c->watching = events;
}

/* Write p[0..n) through TLS; returns bytes taken (< n when the socket is
 * full: OpenSSL keeps the record it was writing, and the rest must be offered
 * again), -1 on error. */
static ssize_t tls_write(struct conn *c, const char *p, size_t n) {
    size_t done = 0;
    while (done < n) {
        int k = SSL_write(c->ssl, p + done, (int)(n - done));
        if (k > 0) { done += (size_t)k; continue; }
        int err = SSL_get_error(c->ssl, k);
        if (err == SSL_ERROR_WANT_WRITE) break;
        return -1;
    }
    return (ssize_t)done;
}

/* Keep p[0..n) for EPOLLOUT; 0, or -1 when out of memory. */
static int keep(struct conn *c, const char *p, size_t n) {
    if (c->cap < n) {
        char *q = realloc(c->pend, n);
        if (!q) return -1;
        c->pend = q;
        c->cap = n;
    }
    memcpy(c->pend, p, n);
    c->off = 0;
    c->len = n;
    return 0;
}

/* Handshake, then echo everything OpenSSL and the socket have, until it
 * would block. */
static void serve(struct conn *c) {
    if (!c->ready) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ) watch(c, EPOLLIN);
            else if (err == SSL_ERROR_WANT_WRITE) watch(c, EPOLLOUT);
            else conn_close(c, 0);
            return;
        }
        c->ready = 1;
    }
    for (;;) {
        if (c->len) {
            ssize_t w = tls_write(c, c->pend + c->off, c->len - c->off);
            if (w < 0) { conn_close(c, 0); return; }
            c->off += (size_t)w;
            if (c->off < c->len) { watch(c, EPOLLOUT); return; }
            c->off = c->len = 0;
        }
        size_t n = 0;
        int err = SSL_ERROR_NONE;
        while (n < BUF_BYTES) {
            int k = SSL_read(c->ssl, buf + n, (int)(BUF_BYTES - n));
            if (k <= 0) { err = SSL_get_error(c->ssl, k); break; }
            n += (size_t)k;
        }
        if (n) {
            ssize_t w = tls_write(c, buf, n);
            if (w < 0) { conn_close(c, 0); return; }
            if ((size_t)w < n) {
                if (keep(c, buf + w, n - (size_t)w) < 0) { conn_close(c, 0); return; }
                watch(c, EPOLLOUT);
                return;
            }
        }
        switch (err) {
        case SSL_ERROR_NONE: continue;               /* the buffer filled up: more to read */
        case SSL_ERROR_WANT_READ: watch(c, EPOLLIN); return;
        case SSL_ERROR_WANT_WRITE: watch(c, EPOLLOUT); return;
        case SSL_ERROR_ZERO_RETURN: conn_close(c, 1); return; /* the peer's close_notify */
        default: conn_close(c, 0); return;
        }
    }
}

static void on_accept(int lfd, SSL_CTX *ctx) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or out of descriptors: try again later */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        SSL *ssl = c ? SSL_new(ctx) : NULL;
        if (!ssl || !SSL_set_fd(ssl, fd)) { SSL_free(ssl); free(c); close(fd); continue; }
        SSL_set_accept_state(ssl);
        c->fd = fd;
        c->ssl = ssl;
        c->watching = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) conn_close(c, 0);
    }
}

static SSL_CTX *make_ctx(const char *cert, const char *key) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) die_ssl("SSL_CTX_new");
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
        die_ssl("TLS 1.3 only");
    if (!SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256")) die_ssl("ciphersuites");
    if (!SSL_CTX_set1_groups_list(ctx, "X25519")) die_ssl("groups");
    if (!SSL_CTX_set_num_tickets(ctx, 0)) die_ssl("num_tickets");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) die_ssl(cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) die_ssl(key);
    if (SSL_CTX_check_private_key(ctx) != 1) die_ssl("certificate and key do not match");
    return ctx;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s PORT CERT KEY\n", argv[0]); return 64; }
    signal(SIGPIPE, SIG_IGN);
    SSL_CTX *ctx = make_ctx(argv[2], argv[3]);
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
            if (!c) on_accept(lfd, ctx);
            else serve(c);
        }
    }
}
