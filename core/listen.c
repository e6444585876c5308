/* Listeners: unix and TCP sockets, inherited sockets (fd 0, systemd), the web server allow-list,
 * accepting up to the connection cap. */
#include "internal.h"
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ACCEPTS_PER_EVENT 64
/* How long accepting pauses after accept() ran out of descriptors or memory, unless a connection
 * closes first. */
#define ACCEPT_RETRY_SECONDS 0.1

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return FCR_EIO;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return 0;
}

/* ---- allow-list ------------------------------------------------------------------------- */

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address a.b.c.d: entries and peers
 * are both brought to this one form before they are compared. */
static void canonical_addr(fcr__allow *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a->family == AF_INET6 && memcmp(a->addr, mapped, sizeof mapped) == 0) {
        memmove(a->addr, a->addr + 12, 4);
        memset(a->addr + 4, 0, 12);
        a->family = AF_INET;
    }
}

int fcr__allow_parse(const char *list, fcr__allow **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = list; *p; p++)
        cap += (*p == ',');
    fcr__allow *a = calloc(cap, sizeof *a);
    if (!a)
        return FCR_ENOMEM;
    size_t count = 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        size_t len = (size_t)(p - start);
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p && *p != ',')
            goto bad;
        if (*p == ',')
            p++;
        if (len == 0)
            continue;
        char tmp[INET6_ADDRSTRLEN + 2];
        if (start[0] == '[' && len > 2 && start[len - 1] == ']') {
            start++;
            len -= 2;
        }
        if (len >= sizeof tmp)
            goto bad;
        memcpy(tmp, start, len);
        tmp[len] = '\0';
        if (inet_pton(AF_INET, tmp, a[count].addr) == 1)
            a[count].family = AF_INET;
        else if (inet_pton(AF_INET6, tmp, a[count].addr) == 1)
            a[count].family = AF_INET6;
        else
            goto bad;
        canonical_addr(&a[count]);
        count++;
    }
    *out = a;
    *n = count;
    return 0;
bad:
    fcr_log(FCR_LOG_ERROR, "FCGI_WEB_SERVER_ADDRS: malformed address list \"%s\"", list);
    free(a);
    return FCR_EPARSE;
}

bool fcr__allow_check(const fcr_server *srv, const struct sockaddr *sa, socklen_t len)
{
    if (!srv->allow_set)
        return true;
    fcr__allow peer = {.family = sa->sa_family};
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in))
        memcpy(peer.addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6))
        memcpy(peer.addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    else
        return false; /* non-TCP peers are refused when the list is set */
    canonical_addr(&peer);
    size_t n = peer.family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < srv->nallow; i++) {
        if (srv->allow[i].family == peer.family && memcmp(srv->allow[i].addr, peer.addr, n) == 0)
            return true;
    }
    return false;
}

/* ---- accepting -------------------------------------------------------------------------- */

static void describe_peer(const struct sockaddr *sa, char *buf, size_t cap)
{
    const void *addr = NULL;
    if (sa->sa_family == AF_INET)
        addr = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        addr = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (!addr || !inet_ntop(sa->sa_family, addr, buf, (socklen_t)cap))
        snprintf(buf, cap, "a non-TCP peer");
}

/* Watches the listeners unless accepting is paused (connection cap, supervisor) or backing
 * off after accept() ran out of resources. */
static void listeners_watch(fcr_server *srv)
{
    bool on = !srv->accept_paused && !srv->accept_backoff;
    for (fcr__listener *l = srv->listeners; l; l = l->next) {
        if (on)
            ev_io_start(srv->loop, &l->io);
        else
            ev_io_stop(srv->loop, &l->io);
    }
}

void fcr__listeners_pause(fcr_server *srv, bool pause)
{
    srv->accept_paused = pause;
    listeners_watch(srv);
}

void fcr__accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    fcr_server *srv = w->data;
    srv->accept_backoff = false;
    listeners_watch(srv);
}

void fcr__listeners_conn_closed(fcr_server *srv)
{
    if (!srv->accept_backoff)
        return;
    ev_timer_stop(srv->loop, &srv->accept_retry);
    srv->accept_backoff = false;
    listeners_watch(srv);
}

/* accept() failed for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM). The
 * pending connection stays queued and the listener stays readable, so retrying at once would
 * spin: stop watching the listeners until a connection closes or ACCEPT_RETRY_SECONDS pass.
 * One log line a second at most, with the count of those not logged. */
static void accept_backoff(fcr_server *srv, int err)
{
    double now = ev_now(srv->loop);
    if (now - srv->accept_log_at >= 1.0) {
        if (srv->accept_unlogged)
            fcr_log(FCR_LOG_ERROR,
                    "accept: %s (%lu more times since the last line); new connections wait until "
                    "a connection closes",
                    strerror(err), srv->accept_unlogged);
        else
            fcr_log(FCR_LOG_ERROR, "accept: %s; new connections wait until a connection closes",
                    strerror(err));
        srv->accept_log_at = now;
        srv->accept_unlogged = 0;
    } else {
        srv->accept_unlogged++;
    }
    srv->accept_backoff = true;
    listeners_watch(srv);
    ev_timer_stop(srv->loop, &srv->accept_retry);
    ev_timer_set(&srv->accept_retry, ACCEPT_RETRY_SECONDS, 0.);
    ev_timer_start(srv->loop, &srv->accept_retry);
}

/* At the connection cap with a new connection accepted: closes the least recently active idle
 * connection to make room for it. */
static void evict_idle(fcr_server *srv)
{
    fcr__conn *victim = fcr__conn_oldest_idle(srv);
    if (!victim)
        return;
    double now = ev_now(srv->loop);
    if (now - srv->evict_log_at >= 1.0) {
        fcr_log(FCR_LOG_WARN,
                "connection cap %u reached: closing the least recently active idle connections "
                "to admit new ones (%lu more since the last line)",
                srv->cfg.limits.max_conns, srv->evict_unlogged);
        srv->evict_log_at = now;
        srv->evict_unlogged = 0;
    } else {
        srv->evict_unlogged++;
    }
    srv->stats.evicted++;
    fcr__conn_close(victim, NULL);
}

/* Accepts up to `max` queued connections. At the connection cap a connection is taken only
 * when an idle one can make room for it, and that one is closed once the new one is in hand.
 * Returns false when accepting was paused: at the cap with every connection busy, or after
 * accept() ran out of resources. */
static bool accept_some(fcr__listener *l, int max)
{
    fcr_server *srv = l->srv;
    for (int i = 0; i < max; i++) {
        bool full = srv->stats.conns >= srv->cfg.limits.max_conns;
        if (full && !fcr__conn_oldest_idle(srv)) {
            fcr_log(FCR_LOG_WARN, "connection cap %u reached: accepting paused",
                    srv->cfg.limits.max_conns);
            fcr__listeners_pause(srv, true);
            return false;
        }
        struct sockaddr_storage ss = {0};
        socklen_t len = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                accept_backoff(srv, errno);
                return false;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fcr_log(FCR_LOG_ERROR, "accept: %s", strerror(errno));
            return true;
        }
        if (full)
            evict_idle(srv);
        if (!fcr__allow_check(srv, (struct sockaddr *)&ss, len)) {
            char peer[INET6_ADDRSTRLEN];
            describe_peer((struct sockaddr *)&ss, peer, sizeof peer);
            fcr__log_peer(srv, FCR_LOG_WARN,
                          "refused connection from %s (not in FCGI_WEB_SERVER_ADDRS)", peer);
            close(fd);
            continue;
        }
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        fcr__conn *c = fcr__conn_new(srv, fd);
        if (!c) {
            fcr_log(FCR_LOG_ERROR, "out of memory for a new connection");
            close(fd);
        } else {
            c->tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
        }
    }
    return true;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    accept_some(w->data, ACCEPTS_PER_EVENT);
}

/* A listener for `fd`, not started yet, or NULL when out of memory. `owner`: the socket was
 * created here (not inherited). */
static fcr__listener *listener_new(fcr_server *srv, int fd, const char *unlink_path, bool owner,
                                   bool tcp)
{
    fcr__listener *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    if (unlink_path && !(l->unlink_path = strdup(unlink_path))) {
        free(l);
        return NULL;
    }
    l->srv = srv;
    l->fd = fd;
    l->owner = owner ? getpid() : 0;
    l->tcp = tcp;
    ev_io_init(&l->io, accept_cb, fd, EV_READ);
    l->io.data = l;
    return l;
}

/* Frees a listener that was never started, closing its descriptor. */
static void listener_free(fcr__listener *l)
{
    close(l->fd);
    free(l->unlink_path);
    free(l);
}

static void listener_start(fcr_server *srv, fcr__listener *l)
{
    set_nonblock(l->fd);
    l->next = srv->listeners;
    srv->listeners = l;
    if (!srv->accept_paused && !srv->accept_backoff)
        ev_io_start(srv->loop, &l->io);
}

static int add_listener(fcr_server *srv, int fd, const char *unlink_path, bool owner, bool tcp)
{
    fcr__listener *l = listener_new(srv, fd, unlink_path, owner, tcp);
    if (!l)
        return FCR_ENOMEM;
    listener_start(srv, l);
    return 0;
}

void fcr__listeners_close(fcr_server *srv)
{
    while (srv->listeners) {
        fcr__listener *l = srv->listeners;
        srv->listeners = l->next;
        ev_io_stop(srv->loop, &l->io);
        close(l->fd);
        if (l->unlink_path && l->owner == getpid())
            unlink(l->unlink_path);
        free(l->unlink_path);
        free(l);
    }
}

/* A socket filter that drops TCP segments with SYN set and ACK clear (new connection
 * attempts) and lets everything else through, so handshakes already under way complete. The
 * filter runs at the TCP header. */
static int refuse_new_connections(int fd)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13), /* TCP flags */
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1), /* SYN without ACK */
        BPF_STMT(BPF_RET | BPF_K, 0),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
}

void fcr__listeners_retire(fcr_server *srv, bool accept_queued)
{
    pid_t self = getpid();
    for (fcr__listener *l = srv->listeners; l; l = l->next) {
        if (l->owner != self)
            continue;
        if (l->unlink_path) {
            unlink(l->unlink_path);
            free(l->unlink_path);
            l->unlink_path = NULL;
        } else if (l->tcp && refuse_new_connections(l->fd) < 0) {
            fcr_log(FCR_LOG_WARN, "cannot filter new connections at shutdown: %s", strerror(errno));
        }
    }
    for (fcr__listener *l = srv->listeners; l && accept_queued; l = l->next) {
        if (!accept_some(l, INT_MAX))
            break;
    }
    fcr__listeners_close(srv);
}

/* ---- opening ---------------------------------------------------------------------------- */

static int listen_unix(fcr_server *srv, const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof sun.sun_path)
        return FCR_EADDR;
    memcpy(sun.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return FCR_EIO;
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* Replace a stale socket file, but never one a live server still answers on. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0) {
            close(probe);
            close(fd);
            errno = EADDRINUSE;
            return FCR_EIO;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
        goto fail;
    if (chmod(path, srv->cfg.socket_mode) < 0 || listen(fd, SOMAXCONN) < 0) {
        int saved = errno;
        unlink(path);
        errno = saved;
        goto fail;
    }
    int e = add_listener(srv, fd, path, true, false);
    if (e) {
        unlink(path);
        close(fd);
    }
    return e;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return FCR_EIO;
}

/* "127.0.0.1:9000" or "[::1]:9000", for log lines. */
static void describe_addr(const struct sockaddr *sa, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host)) {
            snprintf(buf, cap, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
            return;
        }
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host)) {
            snprintf(buf, cap, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
            return;
        }
    }
    snprintf(buf, cap, "an address of family %d", (int)sa->sa_family);
}

/* Whether two entries of one getaddrinfo answer name the same socket address. */
static bool same_address(const struct addrinfo *a, const struct addrinfo *b)
{
    return a->ai_family == b->ai_family && a->ai_addrlen == b->ai_addrlen &&
           memcmp(a->ai_addr, b->ai_addr, a->ai_addrlen) == 0;
}

static void set_port(struct sockaddr_storage *ss, in_port_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)(void *)ss)->sin_port = port;
    else
        ((struct sockaddr_in6 *)(void *)ss)->sin6_port = port;
}

/* Opens a listening TCP socket on `sa` (an IPv6 one IPv6-only). Returns the descriptor, or -1
 * with errno. */
static int open_tcp(const struct addrinfo *ai, const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (ai->ai_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
        bind(fd, sa, len) < 0 || listen(fd, SOMAXCONN) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Listens on every address `host` (empty: every local address, IPv4 and IPv6) resolves to,
 * all or nothing. With port 0 the first socket gets a free port and the others take the
 * same one. Exact duplicates in the resolver's answer are skipped, and so are addresses of a
 * family the system has no sockets for (EAFNOSUPPORT), as long as one address is left. */
static int listen_tcp_host(fcr_server *srv, const char *host, const char *port, bool any_port,
                           const char *what)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0)
        return FCR_EADDR;
    fcr__listener *mine = NULL; /* opened here, linked by next, started at the end */
    size_t nls = 0;
    int e = 0, saved = EADDRNOTAVAIL;
    in_port_t shared = 0; /* network order: the port the first socket got, with port 0 */
    char where[INET6_ADDRSTRLEN + 16];
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(struct sockaddr_storage))
            continue;
        bool dup = false;
        for (struct addrinfo *prev = res; prev != ai && !dup; prev = prev->ai_next)
            dup = same_address(prev, ai);
        if (dup)
            continue;
        struct sockaddr_storage ss;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        if (any_port && nls > 0)
            set_port(&ss, shared);
        socklen_t len = (socklen_t)ai->ai_addrlen;
        describe_addr((struct sockaddr *)&ss, where, sizeof where);
        int fd = open_tcp(ai, (struct sockaddr *)&ss, len);
        if (fd < 0 && errno == EAFNOSUPPORT) {
            saved = errno;
            fcr_log(FCR_LOG_INFO, "tcp:%s: %s skipped: %s", what, where, strerror(errno));
            continue;
        }
        if (fd < 0) {
            saved = errno;
            fcr_log(FCR_LOG_ERROR, "tcp:%s: cannot listen on %s: %s; none of its addresses is kept",
                    what, where, strerror(saved));
            e = FCR_EIO;
            break;
        }
        if (any_port && nls == 0) {
            len = sizeof ss;
            if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
                saved = errno;
                close(fd);
                e = FCR_EIO;
                break;
            }
            shared = ss.ss_family == AF_INET ? ((struct sockaddr_in *)(void *)&ss)->sin_port
                                             : ((struct sockaddr_in6 *)(void *)&ss)->sin6_port;
        }
        fcr__listener *l = listener_new(srv, fd, NULL, true, true);
        if (!l) {
            close(fd);
            e = FCR_ENOMEM;
            break;
        }
        l->next = mine;
        mine = l;
        nls++;
    }
    freeaddrinfo(res);
    if (!e && nls == 0) {
        fcr_log(FCR_LOG_ERROR, "tcp:%s: no address to listen on: %s", what, strerror(saved));
        e = FCR_EIO;
    }
    while (mine) {
        fcr__listener *l = mine;
        mine = l->next;
        if (e)
            listener_free(l);
        else
            listener_start(srv, l);
    }
    if (e == FCR_EIO)
        errno = saved;
    return e;
}

static int listen_tcp(fcr_server *srv, const char *hostport)
{
    char host[256], port[8];
    if (fcr__hostport_split(hostport, host, sizeof host, port, sizeof port) < 0)
        return FCR_EADDR;
    return listen_tcp_host(srv, host, port, strtoul(port, NULL, 10) == 0, hostport);
}

static bool is_listening_socket(int fd)
{
    int val = 0;
    socklen_t len = sizeof val;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &val, &len) == 0 && val;
}

int fcr_server_listen(fcr_server *srv, const char *addr)
{
    if (!srv || !addr)
        return FCR_EINVAL;
    if (strncmp(addr, "unix:", 5) == 0)
        return listen_unix(srv, addr + 5);
    if (strncmp(addr, "tcp:", 4) == 0)
        return listen_tcp(srv, addr + 4);
    if (strncmp(addr, "fd:", 3) == 0) {
        char *end;
        long fd = strtol(addr + 3, &end, 10);
        if (end == addr + 3 || *end || fd < 0 || fd > 65535)
            return FCR_EADDR;
        if (!is_listening_socket((int)fd))
            return FCR_EADDR;
        return add_listener(srv, (int)fd, NULL, false, false);
    }
    return FCR_EADDR;
}

int fcr_server_listen_inherited(fcr_server *srv)
{
    if (!srv)
        return FCR_EINVAL;
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    if (pid && fds && strtol(pid, NULL, 10) == (long)getpid()) {
        long n = strtol(fds, NULL, 10);
        int adopted = 0;
        for (long i = 0; i < n && i < 64; i++) {
            int fd = 3 + (int)i;
            if (!is_listening_socket(fd))
                continue;
            int e = add_listener(srv, fd, NULL, false, false);
            if (e)
                return e;
            adopted++;
        }
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        return adopted;
    }
    /* The FastCGI convention: a web server or spawner passes the listening socket as fd 0. */
    if (is_listening_socket(0)) {
        int e = add_listener(srv, 0, NULL, false, false);
        return e ? e : 1;
    }
    return 0;
}

void fcr__conn_adopt(fcr_server *srv, int fd)
{
    if (srv->stats.conns >= srv->cfg.limits.max_conns) {
        if (!fcr__conn_oldest_idle(srv)) {
            fcr_log(FCR_LOG_WARN,
                    "connection cap %u reached: a connection handed over by a retiring worker "
                    "is closed",
                    srv->cfg.limits.max_conns);
            close(fd);
            return;
        }
        evict_idle(srv);
    }
    set_nonblock(fd);
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    bool tcp = getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
               (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
    if (tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    fcr__conn *c = fcr__conn_new(srv, fd);
    if (!c) {
        fcr_log(FCR_LOG_ERROR, "out of memory for a connection handed over");
        close(fd);
        return;
    }
    c->tcp = tcp;
}

int fcr_server_adopt(fcr_server *srv, int fd)
{
    if (!srv || fd < 0)
        return FCR_EINVAL;
    if (srv->stats.conns >= srv->cfg.limits.max_conns) {
        close(fd);
        return FCR_ETOOBIG;
    }
    set_nonblock(fd);
    if (!fcr__conn_new(srv, fd)) {
        close(fd);
        return FCR_ENOMEM;
    }
    return 0;
}
