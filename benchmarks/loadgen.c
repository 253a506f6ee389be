/* Load generator and upstream for scripts/bench: small, epoll, no dependencies.
 *
 *   loadgen echo PORT [ws]          echo server on 127.0.0.1:PORT (prints the port when 0);
 *                                   with "ws", each connection first gets a 101 answer to its
 *                                   upgrade request, then its bytes are echoed
 *   loadgen ws HOST PORT CONNS SECS SIZE
 *                                   CONNS WebSocket connections, each sending a masked text frame
 *                                   of SIZE payload bytes and waiting for its echo, for SECS;
 *                                   prints "frames N seconds S"
 *   loadgen idle HOST PORT CONNS    opens CONNS connections, prints "open N", holds them until
 *                                   stdin closes
 *
 * Written for a benchmark: no TLS, IPv4 only, errors end the program.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define MAX_EVENTS 256

static void die(const char *what) { perror(what); exit(1); }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static const char RESPONSE_101[] =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

struct conn { int fd; int handshaken; size_t seen; char head[4]; };

static void serve_echo(int port, int ws) __attribute__((noreturn));
static void serve_echo(int port, int ws) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    socklen_t len = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &len);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[MAX_EVENTS];
    static char buf[BUF];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    nodelay(fd);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    c->handshaken = !ws;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            ssize_t got = read(c->fd, buf, BUF);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                close(c->fd);
                free(c);
                continue;
            }
            char *p = buf;
            if (!c->handshaken) {  /* wait for the end of the upgrade request */
                char *end = NULL;
                for (ssize_t k = 0; k < got; k++) {
                    c->head[0] = c->head[1]; c->head[1] = c->head[2]; c->head[2] = c->head[3];
                    c->head[3] = buf[k];
                    if (memcmp(c->head, "\r\n\r\n", 4) == 0) { end = buf + k + 1; break; }
                }
                if (end == NULL) continue;
                if (write(c->fd, RESPONSE_101, sizeof RESPONSE_101 - 1) < 0) die("write");
                c->handshaken = 1;
                got -= end - buf;
                p = end;
            }
            while (got > 0) {  /* blocking enough for a benchmark: the peer reads */
                ssize_t w = write(c->fd, p, got);
                if (w < 0) {
                    if (errno == EAGAIN) { usleep(50); continue; }
                    break;
                }
                p += w;
                got -= w;
            }
        }
    }
}

static int connect_to(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    nodelay(fd);
    return fd;
}

struct wsc { int fd; size_t want; size_t got; };

static int ws_client(const char *host, int port, int conns, double secs, int size) {
    static const char upgrade[] =
        "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mcp\r\n\r\n";
    /* A masked text frame of SIZE bytes (mask 0: the payload is as written). */
    char frame[8 + 4 + 65536];
    int hlen;
    frame[0] = (char)0x81;
    if (size < 126) { frame[1] = (char)(0x80 | size); hlen = 2; }
    else { frame[1] = (char)(0x80 | 126); frame[2] = size >> 8; frame[3] = size & 0xff; hlen = 4; }
    memset(frame + hlen, 0, 4);
    hlen += 4;
    for (int i = 0; i < size; i++) frame[hlen + i] = "{\"jsonrpc\":\"2.0\",\"method\":\"x\"}"[i % 30];
    int flen = hlen + size;
    int ep = epoll_create1(0);
    struct wsc *cs = calloc(conns, sizeof *cs);
    for (int i = 0; i < conns; i++) {
        int fd = connect_to(host, port);
        if (write(fd, upgrade, sizeof upgrade - 1) < 0) die("write");
        char head[4096];
        size_t got = 0;
        while (got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4) != 0) {
            ssize_t r = read(fd, head + got, 1);
            if (r <= 0) die("handshake");
            got += r;
        }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        cs[i].fd = fd;
        cs[i].want = flen;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long frames = 0;
    double start = now(), end = start + secs;
    for (int i = 0; i < conns; i++)
        if (write(cs[i].fd, frame, flen) != flen) die("write");
    struct epoll_event events[MAX_EVENTS];
    static char buf[BUF];
    while (now() < end) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 100);
        for (int i = 0; i < n; i++) {
            struct wsc *c = events[i].data.ptr;
            ssize_t r = read(c->fd, buf, BUF);
            if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; die("read"); }
            c->got += r;
            while (c->got >= c->want) {
                c->got -= c->want;
                frames++;
                if (write(c->fd, frame, flen) != flen) die("write");
            }
        }
    }
    printf("frames %ld seconds %.3f\n", frames, now() - start);
    return 0;
}

static int idle(const char *host, int port, int conns) {
    for (int i = 0; i < conns; i++) connect_to(host, port);
    printf("open %d\n", conns);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "echo") == 0)
        serve_echo(atoi(argv[2]), argc > 3 && strcmp(argv[3], "ws") == 0);
    if (argc == 7 && strcmp(argv[1], "ws") == 0)
        return ws_client(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atoi(argv[6]));
    if (argc == 5 && strcmp(argv[1], "idle") == 0)
        return idle(argv[2], atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 2;
}
