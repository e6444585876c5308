/* null_responder: the least work a FastCGI responder can do, the benchmarks' yardstick.
 *
 * One thread, epoll, level-triggered. It frames records and nothing more: the PARAMS stream is
 * skipped unread, STDIN bytes are dropped, and when a request's STDIN stream ends it appends a
 * canned answer (one STDOUT record with the Hello response, the empty STDOUT record and
 * END_REQUEST) with that request's id to the connection's output, which is written with one
 * write() after each read. Requests may be multiplexed; a request without FCGI_KEEP_CONN
 * closes the connection after its answer. No limits, no management records, no roles: it is
 * not a FastCGI library, only a yardstick.
 *
 * Its CPU time per request is the reference the other peers' are compared with. It is not an
 * upper bound of requests per second: with few connections the load generator, not this
 * server, sets the pace.
 *
 * Usage: null_responder unix:PATH | tcp:HOST:PORT */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RBUF_SIZE (128 * 1024)

static const char hello[] = "Status: 200 OK\r\n"
                            "Content-Type: text/plain\r\n"
                            "Content-Length: 13\r\n"
                            "\r\n"
                            "Hello, world!";

#define HELLO_LEN  (sizeof hello - 1)
#define HELLO_PAD  ((8 - HELLO_LEN % 8) % 8)
#define ANSWER_LEN (8 + HELLO_LEN + HELLO_PAD + 8 + 16)

static uint8_t answer[ANSWER_LEN]; /* id bytes patched per request */

typedef struct conn {
    int fd;
    uint8_t hdr[8];
    unsigned hdr_have;
    uint8_t type;
    uint16_t id;
    uint8_t begin_flags;
    size_t skip; /* content + padding left of the current record */
    size_t content_left;
    bool close_after;
    bool want_out; /* EPOLLOUT registered */
    uint8_t *out;
    size_t out_len, out_cap, out_off;
} conn;

static void put_header(uint8_t *p, uint8_t type, uint16_t id, uint16_t len, uint8_t pad)
{
    p[0] = 1;
    p[1] = type;
    p[2] = (uint8_t)(id >> 8);
    p[3] = (uint8_t)id;
    p[4] = (uint8_t)(len >> 8);
    p[5] = (uint8_t)len;
    p[6] = pad;
    p[7] = 0;
}

static void build_answer(void)
{
    uint8_t *p = answer;
    put_header(p, 6, 0, (uint16_t)HELLO_LEN, (uint8_t)HELLO_PAD);
    memcpy(p + 8, hello, HELLO_LEN);
    p += 8 + HELLO_LEN + HELLO_PAD;
    put_header(p, 6, 0, 0, 0);
    p += 8;
    put_header(p, 3, 0, 8, 0); /* END_REQUEST: app status 0, REQUEST_COMPLETE */
}

static void conn_free(int ep, conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    free(c);
}

static bool queue_answer(conn *c, uint16_t id)
{
    if (c->out_len + ANSWER_LEN > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
        uint8_t *p = realloc(c->out, cap);
        if (!p)
            return false;
        c->out = p;
        c->out_cap = cap;
    }
    uint8_t *a = c->out + c->out_len;
    memcpy(a, answer, ANSWER_LEN);
    static const size_t headers[] = {0, 8 + HELLO_LEN + HELLO_PAD, 16 + HELLO_LEN + HELLO_PAD};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        a[headers[i] + 2] = (uint8_t)(id >> 8);
        a[headers[i] + 3] = (uint8_t)id;
    }
    c->out_len += ANSWER_LEN;
    return true;
}

/* Frames the bytes just read. Returns false on a malformed record. */
static bool parse(conn *c, const uint8_t *p, size_t n)
{
    while (n) {
        if (c->skip) {
            size_t k = c->skip < n ? c->skip : n;
            if (c->type == 1 && c->content_left) { /* BEGIN_REQUEST: keep the flags byte */
                size_t seen = 8 - c->content_left;
                for (size_t i = 0; i < k && c->content_left; i++, seen++, c->content_left--) {
                    if (seen == 2)
                        c->begin_flags = p[i];
                }
            }
            c->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        size_t k = 8 - c->hdr_have;
        if (k > n)
            k = n;
        memcpy(c->hdr + c->hdr_have, p, k);
        c->hdr_have += (unsigned)k;
        p += k;
        n -= k;
        if (c->hdr_have < 8)
            break;
        c->hdr_have = 0;
        if (c->hdr[0] != 1)
            return false;
        c->type = c->hdr[1];
        c->id = (uint16_t)(c->hdr[2] << 8 | c->hdr[3]);
        size_t len = (size_t)(c->hdr[4] << 8 | c->hdr[5]);
        c->skip = len + c->hdr[6];
        c->content_left = c->type == 1 ? len : 0;
        if (c->type == 5 && len == 0) { /* end of STDIN: answer */
            if (!queue_answer(c, c->id))
                return false;
            if (!(c->begin_flags & 1))
                c->close_after = true;
        }
    }
    return true;
}

/* Writes pending output; returns false when the connection is to be closed. */
static bool flush(int ep, conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            if (!c->want_out) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->want_out = true;
            }
            return true;
        }
        if (w <= 0)
            return false;
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    if (c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = false;
    }
    return !c->close_after;
}

static int listen_on(const char *addr)
{
    int fd;
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        if (strlen(addr + 5) >= sizeof un.sun_path)
            return -1;
        strcpy(un.sun_path, addr + 5);
        unlink(un.sun_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof un) != 0)
            return -1;
    } else if (strncmp(addr, "tcp:", 4) == 0) {
        char host[256];
        const char *colon = strrchr(addr + 4, ':');
        if (!colon || (size_t)(colon - addr - 4) >= sizeof host)
            return -1;
        memcpy(host, addr + 4, (size_t)(colon - addr - 4));
        host[colon - addr - 4] = '\0';
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
        if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
            return -1;
        fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
            freeaddrinfo(res);
            return -1;
        }
        freeaddrinfo(res);
    } else {
        return -1;
    }
    if (listen(fd, 1024) != 0)
        return -1;
    return fd;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s unix:PATH | tcp:HOST:PORT\n", argv[0]);
        return 2;
    }
    build_answer();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int lfd = listen_on(argv[1]);
    if (lfd < 0) {
        fprintf(stderr, "%s: cannot listen on %s: %s\n", argv[0], argv[1], strerror(errno));
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    uint8_t *rbuf = malloc(RBUF_SIZE);
    if (ep < 0 || !rbuf)
        return 1;
    struct epoll_event evs[128];
    while (!stop) {
        int n = epoll_wait(ep, evs, 128, -1);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(c->fd, rbuf, RBUF_SIZE);
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                if (r <= 0 || !parse(c, rbuf, (size_t)r)) {
                    conn_free(ep, c);
                    continue;
                }
            }
            if (!flush(ep, c))
                conn_free(ep, c);
        }
    }
    close(lfd);
    if (strncmp(argv[1], "unix:", 5) == 0)
        unlink(argv[1] + 5);
    return 0;
}
