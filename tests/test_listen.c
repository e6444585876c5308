/* Listening and the web server allow-list: what fcr_server_listen opens for "tcp:" and "fd:"
 * addresses, and which TCP peers FCGI_WEB_SERVER_ADDRS lets in, over real sockets against an
 * in-process server (its own libev loop in a thread, as in test_fcgi_rules.c). Only the core's
 * public API is used; the sockets a listen call opened are found by looking at this process's
 * descriptors. */
#include <arpa/inet.h>
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcrest/core.h>

#include "fcgi_client.h"

/* ---- a resolver seam --------------------------------------------------------------------- */

/* The core resolves "tcp:" hosts with getaddrinfo(3), and it is linked statically into this
 * program, so the getaddrinfo and freeaddrinfo defined here are the ones it calls. The name
 * FAKE_HOST resolves to the address literals in fake_addrs, in that order and duplicates
 * included, the way a resolver answers from a hosts file that lists an address twice; every
 * other name goes on to the C library. */
#define FAKE_HOST "multi.fcrest.test"

static const char *fake_addrs[8];      /* NULL-terminated */
static struct addrinfo *fake_lists[8]; /* answers handed out and not yet freed */

typedef int gai_fn(const char *, const char *, const struct addrinfo *, struct addrinfo **);
typedef void freeai_fn(struct addrinfo *);

static void *next_symbol(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        fprintf(stderr, "dlsym(%s): %s\n", name, dlerror());
        abort();
    }
    return p;
}

static struct addrinfo *fake_entry(const char *literal, unsigned port)
{
    struct {
        struct addrinfo ai;
        struct sockaddr_storage ss;
    } *e = calloc(1, sizeof *e);
    if (!e)
        abort();
    struct sockaddr_in *sin = (struct sockaddr_in *)&e->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&e->ss;
    if (inet_pton(AF_INET, literal, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        e->ai.ai_addrlen = sizeof *sin;
    } else if (inet_pton(AF_INET6, literal, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        e->ai.ai_addrlen = sizeof *sin6;
    } else {
        abort();
    }
    e->ai.ai_family = e->ss.ss_family;
    e->ai.ai_socktype = SOCK_STREAM;
    e->ai.ai_protocol = IPPROTO_TCP;
    e->ai.ai_addr = (struct sockaddr *)&e->ss;
    return &e->ai;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    if (!node || strcmp(node, FAKE_HOST) != 0) {
        gai_fn *real;
        void *p = next_symbol("getaddrinfo");
        memcpy(&real, &p, sizeof real);
        return real(node, service, hints, res);
    }
    struct addrinfo *head = NULL, **tail = &head;
    unsigned port = service ? (unsigned)strtoul(service, NULL, 10) : 0;
    for (size_t i = 0; fake_addrs[i]; i++) {
        *tail = fake_entry(fake_addrs[i], port);
        tail = &(*tail)->ai_next;
    }
    if (!head)
        return EAI_NONAME;
    for (size_t i = 0; i < sizeof fake_lists / sizeof fake_lists[0]; i++) {
        if (!fake_lists[i]) {
            fake_lists[i] = head;
            *res = head;
            return 0;
        }
    }
    abort();
}

void freeaddrinfo(struct addrinfo *res)
{
    for (size_t i = 0; res && i < sizeof fake_lists / sizeof fake_lists[0]; i++) {
        if (fake_lists[i] == res) {
            fake_lists[i] = NULL;
            while (res) {
                struct addrinfo *next = res->ai_next;
                free(res); /* the entry and its address are one block */
                res = next;
            }
            return;
        }
    }
    freeai_fn *real;
    void *p = next_symbol("freeaddrinfo");
    memcpy(&real, &p, sizeof real);
    real(res);
}

/* ---- the application and the server ------------------------------------------------------ */

static const char ANSWER[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok";

static void on_request(fcr_req *req, void *data)
{
    (void)data;
    fcr_req_write(req, ANSWER, sizeof ANSWER - 1);
    fcr_req_finish(req, 0);
}

static struct {
    struct ev_loop *loop;
    fcr_server *srv;
    pthread_t thread;
    bool running;
    ev_async stop;
    fcr_server_stats stats; /* taken when the server stopped */
} H;

/* Creates the server with `allow` as its web server allow-list (NULL: none). Returns 0 or the
 * error of fcr_server_new. */
static int server_new(const char *allow)
{
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.on_request = on_request;
    cfg.web_server_addrs = allow;
    H.loop = ev_loop_new(0);
    ck_assert_ptr_nonnull(H.loop);
    int err = 0;
    H.srv = fcr_server_new(H.loop, &cfg, &err);
    if (!H.srv) {
        ev_loop_destroy(H.loop);
        H.loop = NULL;
        return err;
    }
    return 0;
}

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *server_main(void *arg)
{
    (void)arg;
    ev_run(H.loop, 0);
    return NULL;
}

/* Runs the server's loop in a thread; call after its listeners are open. */
static void server_start(void)
{
    ev_async_init(&H.stop, stop_cb);
    ev_async_start(H.loop, &H.stop);
    ck_assert_int_eq(pthread_create(&H.thread, NULL, server_main, NULL), 0);
    H.running = true;
}

/* Stops the thread (if any), keeps the server's counters in H.stats and frees the server. */
static void server_end(void)
{
    if (H.running) {
        ev_async_send(H.loop, &H.stop);
        pthread_join(H.thread, NULL);
        H.running = false;
    }
    fcr_server_get_stats(H.srv, &H.stats);
    fcr_server_free(H.srv);
    H.srv = NULL;
    ev_loop_destroy(H.loop);
    H.loop = NULL;
}

/* ---- sockets ------------------------------------------------------------------------------ */

/* Whether this machine has an IPv6 loopback: binding ::1 works. */
static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
    close(fd);
    return ok;
}

static void skip_note(const char *what)
{
    fprintf(stderr, "SKIPPED: %s: this machine has no IPv6 loopback (binding ::1 fails)\n", what);
}

/* Fills `*ss` from an address literal and a port; returns its length. */
static socklen_t sockaddr_of(const char *literal, unsigned port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, literal, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        return sizeof *sin;
    }
    ck_assert_msg(inet_pton(AF_INET6, literal, &sin6->sin6_addr) == 1, "not an address: %s",
                  literal);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    return sizeof *sin6;
}

/* A listening TCP socket of our own on `literal` (port 0: any), IPv6 ones with IPV6_V6ONLY set
 * to `v6only`. Its port goes to `*port`. */
static int own_listener(const char *literal, int v6only, unsigned *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sockaddr_of(literal, 0, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (ss.ss_family == AF_INET6)
        ck_assert_int_eq(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only), 0);
    ck_assert_msg(bind(fd, (struct sockaddr *)&ss, len) == 0, "bind %s: %s", literal,
                  strerror(errno));
    ck_assert_int_eq(listen(fd, 16), 0);
    len = sizeof ss;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    *port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                          : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

/* The port of a bound socket address. */
static unsigned port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* A client connection to `dst` port `port` from the address `src` (NULL: the kernel picks), or
 * NULL with errno when connecting fails. */
static fcl_conn *connect_from(const char *src, const char *dst, unsigned port)
{
    struct sockaddr_storage to, from;
    socklen_t tolen = sockaddr_of(dst, port, &to);
    int fd = socket(to.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (src) {
        socklen_t fromlen = sockaddr_of(src, 0, &from);
        ck_assert_msg(bind(fd, (struct sockaddr *)&from, fromlen) == 0, "bind %s: %s", src,
                      strerror(errno));
    }
    if (connect(fd, (struct sockaddr *)&to, tolen) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
    fcl_conn *c = calloc(1, sizeof *c);
    ck_assert_ptr_nonnull(c);
    c->fd = fd;
    c->timeout = 10;
    fcl_buf_init(&c->rx);
    return c;
}

static fcl_conn *connect_to(const char *dst, unsigned port)
{
    return connect_from(NULL, dst, port);
}

/* The TCP sockets a listen call opened, with their addresses. */
typedef struct opened {
    size_t n;
    int fd[16];
    int family[16];
    char addr[16][INET6_ADDRSTRLEN];
    unsigned port[16];
} opened;

/* The TCP listening sockets open in this process (descriptors below 1024), ascending. */
static size_t tcp_listeners(int *fds, size_t cap)
{
    size_t n = 0;
    for (int fd = 0; fd < 1024 && n < cap; fd++) {
        int val = 0;
        socklen_t len = sizeof val;
        struct sockaddr_storage ss;
        socklen_t slen = sizeof ss;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &val, &len) == 0 && val &&
            getsockname(fd, (struct sockaddr *)&ss, &slen) == 0 &&
            (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
            fds[n++] = fd;
    }
    return n;
}

/* Calls fcr_server_listen(H.srv, addr) and records in `*o` the TCP listening sockets that are
 * open after it and were not before. Returns what fcr_server_listen returned, with errno as it
 * left it. */
static int listen_and_see(const char *addr, opened *o)
{
    int before[64], after[64];
    size_t nb = tcp_listeners(before, 64);
    int rc = fcr_server_listen(H.srv, addr);
    int saved = errno;
    size_t na = tcp_listeners(after, 64);
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < na; i++) {
        bool old = false;
        for (size_t j = 0; j < nb && !old; j++)
            old = before[j] == after[i];
        if (old)
            continue;
        ck_assert_uint_lt(o->n, 16);
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        ck_assert_int_eq(getsockname(after[i], (struct sockaddr *)&ss, &len), 0);
        const void *a = ss.ss_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
        ck_assert_ptr_nonnull(inet_ntop(ss.ss_family, a, o->addr[o->n], INET6_ADDRSTRLEN));
        o->fd[o->n] = after[i];
        o->family[o->n] = ss.ss_family;
        o->port[o->n] = port_of(&ss);
        o->n++;
    }
    errno = saved;
    return rc;
}

/* Whether `o` holds a socket bound to the address `literal`. */
static bool opened_has(const opened *o, const char *literal)
{
    struct sockaddr_storage want, got;
    sockaddr_of(literal, 0, &want);
    for (size_t i = 0; i < o->n; i++) {
        sockaddr_of(o->addr[i], 0, &got);
        if (got.ss_family == want.ss_family && memcmp(&got, &want, sizeof got) == 0)
            return true;
    }
    return false;
}

/* ---- requests ----------------------------------------------------------------------------- */

static const char *const PLAIN[] = {"REQUEST_METHOD", "GET", "SCRIPT_NAME", "/", NULL};

/* Sends a request on `c` (from `who`, for messages) and checks it is answered; closes `c`. */
static void assert_served(fcl_conn *c, const char *who)
{
    ck_assert_msg(c != NULL, "%s: cannot connect: %s", who, strerror(errno));
    fcl_response r;
    int rc = fcl_request(c, 1, FCR_RESPONDER, 0, PLAIN, NULL, 0, &r);
    ck_assert_msg(rc == 0, "%s: no answer: %s", who, strerror(errno));
    ck_assert_int_eq(r.protocol_status, FCGI_REQUEST_COMPLETE);
    ck_assert_msg(r.out.len == sizeof ANSWER - 1 && memcmp(r.out.data, ANSWER, r.out.len) == 0,
                  "%s: unexpected answer", who);
    ck_assert_msg(c->violations == 0, "%s: %s", who, c->violation);
    fcl_response_free(&r);
    fcl_close(c);
}

/* Sends a whole request on `c` (from `who`) and checks that the server closes the connection
 * without a byte of answer; closes `c`. The server refuses a peer right after accept(), before
 * reading, so the request may still sit unread in its socket: Linux then resets the connection
 * instead of closing it cleanly, and the send itself may fail. Both count as closed. */
static void assert_refused(fcl_conn *c, const char *who)
{
    ck_assert_msg(c != NULL, "%s: cannot connect: %s", who, strerror(errno));
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, 0, PLAIN, NULL, 0, NULL, 0);
    int rc = fcl_send_buf(c, &b);
    int e = errno;
    fcl_buf_free(&b);
    ck_assert_msg(rc == 0 || e == EPIPE || e == ECONNRESET, "%s: send: %s", who, strerror(e));
    rc = fcl_wait_eof(c, 10);
    e = errno;
    ck_assert_msg(rc == 0 || e == ECONNRESET, "%s: not closed without an answer: %s", who,
                  e == EPROTO ? "the server answered" : strerror(e));
    fcl_close(c);
}

/* ---- listening ---------------------------------------------------------------------------- */

/* Every listener in `o` has the same port; returns it. */
static unsigned one_port(const opened *o, const char *what)
{
    ck_assert_uint_gt(o->n, 0);
    for (size_t i = 1; i < o->n; i++)
        ck_assert_msg(o->port[i] == o->port[0], "%s: %s listens on port %u, %s on %u", what,
                      o->addr[0], o->port[0], o->addr[i], o->port[i]);
    return o->port[0];
}

START_TEST(empty_host_listens_on_ipv4_and_ipv6_on_one_port)
{
    ck_assert_int_eq(server_new(NULL), 0);
    opened o;
    ck_assert_int_eq(listen_and_see("tcp::0", &o), 0);
    bool v6 = have_ipv6_loopback();
    ck_assert_msg(opened_has(&o, "0.0.0.0"), "tcp::0 does not listen on 0.0.0.0");
    if (v6) {
        ck_assert_msg(opened_has(&o, "::"), "tcp::0 does not listen on ::");
        ck_assert_uint_eq(o.n, 2);
    }
    unsigned port = one_port(&o, "tcp::0");
    server_start();
    assert_served(connect_to("127.0.0.1", port), "127.0.0.1");
    if (v6)
        assert_served(connect_to("::1", port), "::1");
    else
        skip_note("tcp::0 over ::1");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, (v6 ? 2u : 1u));
}
END_TEST

START_TEST(host_name_listens_on_every_address_it_resolves_to)
{
    /* What "localhost" is depends on the machine's hosts file: both loopbacks or one. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    ck_assert_int_eq(getaddrinfo("localhost", "0", &hints, &res), 0);
    char want[8][INET6_ADDRSTRLEN];
    size_t nwant = 0;
    for (struct addrinfo *ai = res; ai && nwant < 8; ai = ai->ai_next) {
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        char text[INET6_ADDRSTRLEN];
        ck_assert_ptr_nonnull(inet_ntop(ai->ai_family, a, text, sizeof text));
        bool dup = false;
        for (size_t i = 0; i < nwant && !dup; i++)
            dup = strcmp(want[i], text) == 0;
        if (!dup)
            memcpy(want[nwant++], text, sizeof text);
    }
    freeaddrinfo(res);
    if (nwant < 2)
        fprintf(stderr,
                "note: localhost has one address here (%s); the test with several "
                "addresses for one name is %s\n",
                nwant ? want[0] : "none",
                "name_with_several_addresses_shares_one_port_and_skips_duplicates");

    ck_assert_int_eq(server_new(NULL), 0);
    opened o;
    ck_assert_int_eq(listen_and_see("tcp:localhost:0", &o), 0);
    ck_assert_uint_eq(o.n, nwant);
    unsigned port = one_port(&o, "tcp:localhost:0");
    server_start();
    for (size_t i = 0; i < nwant; i++) {
        ck_assert_msg(opened_has(&o, want[i]), "tcp:localhost:0 does not listen on %s", want[i]);
        assert_served(connect_to(want[i], port), want[i]);
    }
    server_end();
    ck_assert_uint_eq(H.stats.accepted, nwant);
}
END_TEST

START_TEST(name_with_several_addresses_shares_one_port_and_skips_duplicates)
{
    bool v6 = have_ipv6_loopback();
    const char *answer[] = {"127.0.0.1", "127.0.0.2", "127.0.0.1", v6 ? "::1" : NULL, NULL};
    memcpy(fake_addrs, answer, sizeof answer);
    ck_assert_int_eq(server_new(NULL), 0);
    opened o;
    ck_assert_int_eq(listen_and_see("tcp:" FAKE_HOST ":0", &o), 0);
    ck_assert_uint_eq(o.n, (v6 ? 3u : 2u));
    unsigned port = one_port(&o, FAKE_HOST);
    server_start();
    assert_served(connect_to("127.0.0.1", port), "127.0.0.1");
    assert_served(connect_to("127.0.0.2", port), "127.0.0.2");
    if (v6)
        assert_served(connect_to("::1", port), "::1");
    else
        skip_note("a name that resolves to ::1 too");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, (v6 ? 3u : 2u));
}
END_TEST

START_TEST(listen_opens_nothing_when_one_address_cannot_be_bound)
{
    unsigned port;
    int taken = own_listener("127.0.0.2", 1, &port); /* the second address, on that port */
    const char *answer[] = {"127.0.0.1", "127.0.0.2", NULL};
    memcpy(fake_addrs, answer, sizeof answer);
    ck_assert_int_eq(server_new(NULL), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "tcp:" FAKE_HOST ":%u", port);
    opened o;
    errno = 0;
    int rc = listen_and_see(addr, &o);
    int e = errno;
    ck_assert_int_eq(rc, FCR_EIO);
    ck_assert_msg(e == EADDRINUSE, "errno %s, not EADDRINUSE", strerror(e));
    ck_assert_msg(o.n == 0, "%zu socket(s) left open, the first on %s", o.n, o.addr[0]);
    ck_assert_ptr_null(connect_to("127.0.0.1", port));
    ck_assert_int_eq(errno, ECONNREFUSED);
    server_end();
    close(taken);
}
END_TEST

START_TEST(tcp_port_above_65535_is_a_malformed_address)
{
    ck_assert_int_eq(server_new(NULL), 0);
    opened o;
    ck_assert_int_eq(listen_and_see("tcp:127.0.0.1:65536", &o), FCR_EADDR);
    ck_assert_int_eq(listen_and_see("tcp:127.0.0.1:70000", &o), FCR_EADDR);
    ck_assert_int_eq(listen_and_see("tcp:127.0.0.1:99999999999999999999999", &o), FCR_EADDR);
    ck_assert_uint_eq(o.n, 0);
    server_end();
}
END_TEST

START_TEST(fd_listener_serves_requests)
{
    unsigned port;
    int fd = own_listener("127.0.0.1", 1, &port);
    ck_assert_int_eq(server_new(NULL), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "fd:%d", fd);
    ck_assert_int_eq(fcr_server_listen(H.srv, addr), 0);
    server_start();
    assert_served(connect_to("127.0.0.1", port), "fd listener");
    assert_served(connect_to("127.0.0.1", port), "fd listener, again");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 2);
    /* The server owned the descriptor and closed it with itself. */
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
}
END_TEST

/* ---- FCGI_WEB_SERVER_ADDRS ------------------------------------------------------------------ */

/* A server with allow-list `allow` listening on "tcp:[literal]:0"; returns the port. */
static unsigned allow_server_on(const char *allow, const char *literal)
{
    ck_assert_int_eq(server_new(allow), 0);
    char addr[80];
    snprintf(addr, sizeof addr, strchr(literal, ':') ? "tcp:[%s]:0" : "tcp:%s:0", literal);
    opened o;
    ck_assert_int_eq(listen_and_see(addr, &o), 0);
    ck_assert_uint_eq(o.n, 1);
    server_start();
    return o.port[0];
}

START_TEST(web_server_addrs_ipv4_entry_admits_ipv4_peer)
{
    unsigned port = allow_server_on("127.0.0.1", "127.0.0.1");
    assert_served(connect_from("127.0.0.1", "127.0.0.1", port), "127.0.0.1");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 1);
}
END_TEST

START_TEST(web_server_addrs_refuses_other_peers)
{
    unsigned port = allow_server_on("127.0.0.1", "127.0.0.1");
    assert_refused(connect_from("127.0.0.2", "127.0.0.1", port), "127.0.0.2");
    assert_served(connect_from("127.0.0.1", "127.0.0.1", port), "127.0.0.1 after 127.0.0.2");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 1);
}
END_TEST

START_TEST(web_server_addrs_ipv6_entry_admits_ipv6_peer)
{
    if (!have_ipv6_loopback()) {
        skip_note("web_server_addrs_ipv6_entry_admits_ipv6_peer");
        return;
    }
    unsigned port = allow_server_on("::1", "::1");
    assert_served(connect_to("::1", port), "::1");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 1);
}
END_TEST

START_TEST(web_server_addrs_refuses_ipv6_peer_not_listed)
{
    if (!have_ipv6_loopback()) {
        skip_note("web_server_addrs_refuses_ipv6_peer_not_listed");
        return;
    }
    unsigned port = allow_server_on("127.0.0.1", "::1");
    assert_refused(connect_to("::1", port), "::1");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 0);
}
END_TEST

START_TEST(web_server_addrs_v4_mapped_entry_admits_ipv4_peer)
{
    unsigned port = allow_server_on("::ffff:127.0.0.1", "127.0.0.1");
    assert_served(connect_from("127.0.0.1", "127.0.0.1", port), "127.0.0.1");
    assert_refused(connect_from("127.0.0.2", "127.0.0.1", port), "127.0.0.2");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 1);
}
END_TEST

/* A dual-stack IPv6 listener (IPV6_V6ONLY off, as an inherited socket may be) sees IPv4
 * clients as v4-mapped IPv6 peers, ::ffff:127.0.0.1. */
static unsigned mapped_server(const char *allow)
{
    unsigned port;
    int fd = own_listener("::ffff:127.0.0.1", 0, &port);
    ck_assert_int_eq(server_new(allow), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "fd:%d", fd);
    ck_assert_int_eq(fcr_server_listen(H.srv, addr), 0);
    server_start();
    return port;
}

START_TEST(web_server_addrs_ipv4_entry_admits_v4_mapped_peer)
{
    unsigned port = mapped_server("127.0.0.1");
    assert_served(connect_to("::ffff:127.0.0.1", port), "::ffff:127.0.0.1");
    assert_refused(connect_from("127.0.0.2", "127.0.0.1", port), "::ffff:127.0.0.2");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 1);
}
END_TEST

START_TEST(web_server_addrs_v4_mapped_entry_admits_v4_mapped_peer)
{
    unsigned port = mapped_server("::ffff:127.0.0.1");
    assert_served(connect_to("::ffff:127.0.0.1", port), "::ffff:127.0.0.1");
    assert_refused(connect_from("127.0.0.2", "127.0.0.1", port), "::ffff:127.0.0.2");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 1);
}
END_TEST

START_TEST(web_server_addrs_bracketed_ipv6_entry_is_accepted)
{
    if (!have_ipv6_loopback()) {
        ck_assert_int_eq(server_new("[::1], 127.0.0.1"), 0);
        server_end();
        skip_note("web_server_addrs_bracketed_ipv6_entry_is_accepted over ::1");
        return;
    }
    unsigned port = allow_server_on("[::1]", "::1");
    assert_served(connect_to("::1", port), "::1");
    server_end();
    ck_assert_uint_eq(H.stats.accepted, 1);
}
END_TEST

START_TEST(malformed_web_server_addrs_is_refused_with_eparse)
{
    const char *bad[] = {"127.0.0.1/8", "localhost",     "[::1",      "::1]",
                         "[]",          "127.0.0.1 ::1", "1.2.3.4.5", "127.0.0.1,,x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(server_new(bad[i]) == FCR_EPARSE, "\"%s\" was not refused", bad[i]);
    ck_assert_int_eq(setenv("FCGI_WEB_SERVER_ADDRS", "10.0.0.0/8", 1), 0);
    ck_assert_int_eq(server_new(NULL), FCR_EPARSE);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("listen");
    struct {
        const char *name;
        const TTest *test;
    } tests[] = {
#define T(x) {#x, x}
        T(empty_host_listens_on_ipv4_and_ipv6_on_one_port),
        T(host_name_listens_on_every_address_it_resolves_to),
        T(name_with_several_addresses_shares_one_port_and_skips_duplicates),
        T(listen_opens_nothing_when_one_address_cannot_be_bound),
        T(tcp_port_above_65535_is_a_malformed_address),
        T(fd_listener_serves_requests),
        T(web_server_addrs_ipv4_entry_admits_ipv4_peer),
        T(web_server_addrs_refuses_other_peers),
        T(web_server_addrs_ipv6_entry_admits_ipv6_peer),
        T(web_server_addrs_refuses_ipv6_peer_not_listed),
        T(web_server_addrs_v4_mapped_entry_admits_ipv4_peer),
        T(web_server_addrs_ipv4_entry_admits_v4_mapped_peer),
        T(web_server_addrs_v4_mapped_entry_admits_v4_mapped_peer),
        T(web_server_addrs_bracketed_ipv6_entry_is_accepted),
        T(malformed_web_server_addrs_is_refused_with_eparse),
#undef T
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        TCase *tc = tcase_create(tests[i].name);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, tests[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
