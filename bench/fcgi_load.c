/* fcgi_load: a FastCGI load generator that plays the web server's side.
 *
 * It opens N connections to a FastCGI application and keeps each busy with Responder requests
 * that look like the ones Apache's mod_proxy_fcgi sends (28 params, about 900 bytes), with an
 * optional request body, for a given time or number of requests. Every response is parsed up
 * to its END_REQUEST; errors are counted by kind:
 *
 *   protocol   END_REQUEST protocol status != 0, a malformed record, a record for an id that
 *              has no request in flight
 *   http       the STDOUT stream does not start with "Status: <expected status>"
 *   truncated  the connection ended (EOF or error) with requests in flight
 *   timeout    a request got no END_REQUEST within --timeout (its connection is then reopened)
 *   connection connect() failed or the connection was reset
 *
 * With --server-pid PID it also reads the user+system CPU time of PID and of every process
 * descended from it (a server's workers) from /proc at the start and at the end of the
 * measured time, and reports it per measured request (server_cpu_us).
 *
 * It prints requests/s, latency percentiles and one machine-readable line starting with
 * "RESULT ". Single-threaded, epoll, level-triggered; every request is prebuilt once, so a
 * request costs the generator one writev at most and its share of one read.
 *
 * Usage: fcgi_load --target unix:PATH|tcp:HOST:PORT [options] (see --help). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum {
    T_BEGIN_REQUEST = 1,
    T_END_REQUEST = 3,
    T_PARAMS = 4,
    T_STDIN = 5,
    T_STDOUT = 6,
    T_STDERR = 7,
};

#define MAX_CONTENT   65535u
#define READ_BUF_SIZE (256u * 1024u)
#define MAX_WRITE_IOV 64
#define HEAD_KEEP     24 /* first STDOUT bytes kept per request for the status check */

/* ---- options ------------------------------------------------------------------------------ */

typedef struct options {
    const char *target;
    unsigned conns;
    unsigned depth;
    size_t body;
    size_t stdin_record;
    bool keepalive;
    double duration;
    double warmup;
    uint64_t requests;
    double timeout;
    double hold;
    const char *method;
    const char *path;
    const char *expect_status;
    const char *peer;
    const char *scenario;
    long server_pid;
    bool quiet;
} options;

static options opt = {
    .conns = 16,
    .depth = 1,
    .stdin_record = 8192,
    .keepalive = true,
    .duration = 10,
    .warmup = 1,
    .timeout = 5,
    .path = "/hello",
    .expect_status = "200",
    .peer = "-",
    .scenario = "-",
};

/* ---- time and latency histogram ------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Log-linear buckets: exact below 64 ns, then 32 buckets per power of two (about 3% wide). */
#define HIST_BUCKETS 1920

typedef struct histogram {
    uint64_t count[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
} histogram;

static unsigned hist_index(uint64_t v)
{
    if (v < 64)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    return (e - 5) * 32 + (unsigned)(v >> (e - 5));
}

/* Middle of bucket `i`. */
static double hist_value(unsigned i)
{
    if (i < 64)
        return i;
    unsigned shift = i / 32 - 1;
    uint64_t m = i % 32 + 32;
    return (double)(m << shift) + (double)(1ull << shift) / 2;
}

static void hist_add(histogram *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

static double hist_percentile(const histogram *h, double p)
{
    if (h->total == 0)
        return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->total + 0.5);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= want) {
            double v = hist_value(i);
            return v > (double)h->max ? (double)h->max : v;
        }
    }
    return (double)h->max;
}

/* ---- requests ----------------------------------------------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "fcgi_load: out of memory\n");
        exit(2);
    }
    return q;
}

static void buf_add(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_record(buf *b, uint8_t type, uint16_t id, const void *content, size_t len)
{
    uint8_t pad = (uint8_t)((8 - (len & 7)) & 7);
    uint8_t h[8] = {1,   type, (uint8_t)(id >> 8), (uint8_t)id, (uint8_t)(len >> 8), (uint8_t)len,
                    pad, 0};
    static const uint8_t zeros[8];
    buf_add(b, h, sizeof h);
    buf_add(b, content, len);
    buf_add(b, zeros, pad);
}

static void put_nvlen(buf *b, size_t n)
{
    if (n < 128) {
        uint8_t c = (uint8_t)n;
        buf_add(b, &c, 1);
    } else {
        uint8_t c[4] = {(uint8_t)((n >> 24) | 0x80), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                        (uint8_t)n};
        buf_add(b, c, 4);
    }
}

static unsigned nparams;

static void put_param(buf *b, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    put_nvlen(b, nl);
    put_nvlen(b, vl);
    buf_add(b, name, nl);
    buf_add(b, value, vl);
    nparams++;
}

/* The PARAMS stream: what Apache 2.4 (mod_proxy_fcgi, Debian's defaults) sends for a browser's
 * request to `ProxyPass "/hello" "fcgi://127.0.0.1:9000/hello"`, in Apache's order. */
static void build_params(buf *b)
{
    char clen[32];
    char script_filename[512];
    snprintf(script_filename, sizeof script_filename, "proxy:fcgi://127.0.0.1:9000%s", opt.path);
    nparams = 0;
    if (opt.body) {
        snprintf(clen, sizeof clen, "%zu", opt.body);
        put_param(b, "CONTENT_LENGTH", clen);
        put_param(b, "CONTENT_TYPE", "application/octet-stream");
    }
    put_param(b, "HTTP_HOST", "127.0.0.1:8080");
    put_param(b, "HTTP_USER_AGENT",
              "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0");
    put_param(b, "HTTP_ACCEPT",
              "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/"
              "*;q=0.8");
    put_param(b, "HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5");
    put_param(b, "HTTP_ACCEPT_ENCODING", "gzip, deflate, br");
    put_param(b, "HTTP_CONNECTION", "keep-alive");
    put_param(b, "HTTP_UPGRADE_INSECURE_REQUESTS", "1");
    put_param(b, "HTTP_CACHE_CONTROL", "max-age=0");
    put_param(b, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    put_param(b, "SERVER_SIGNATURE",
              "<address>Apache/2.4.62 (Debian) Server at 127.0.0.1 Port 8080</address>\n");
    put_param(b, "SERVER_SOFTWARE", "Apache/2.4.62 (Debian)");
    put_param(b, "SERVER_NAME", "127.0.0.1");
    put_param(b, "SERVER_ADDR", "127.0.0.1");
    put_param(b, "SERVER_PORT", "8080");
    put_param(b, "REMOTE_ADDR", "127.0.0.1");
    put_param(b, "DOCUMENT_ROOT", "/var/www/html");
    put_param(b, "REQUEST_SCHEME", "http");
    put_param(b, "CONTEXT_PREFIX", "");
    put_param(b, "CONTEXT_DOCUMENT_ROOT", "/var/www/html");
    put_param(b, "SERVER_ADMIN", "webmaster@localhost");
    put_param(b, "SCRIPT_FILENAME", script_filename);
    put_param(b, "REMOTE_PORT", "51724");
    put_param(b, "GATEWAY_INTERFACE", "CGI/1.1");
    put_param(b, "SERVER_PROTOCOL", "HTTP/1.1");
    put_param(b, "REQUEST_METHOD", opt.method);
    put_param(b, "QUERY_STRING", "");
    put_param(b, "REQUEST_URI", opt.path);
    put_param(b, "SCRIPT_NAME", opt.path);
}

/* One complete request for id `id`: BEGIN_REQUEST, PARAMS, empty PARAMS, STDIN records of at
 * most --stdin-record bytes, empty STDIN. */
static void build_request(buf *out, uint16_t id, const buf *params, const uint8_t *body)
{
    uint8_t begin[8] = {0, 1, opt.keepalive ? 1 : 0, 0, 0, 0, 0, 0};
    put_record(out, T_BEGIN_REQUEST, id, begin, sizeof begin);
    for (size_t off = 0; off < params->len; off += MAX_CONTENT) {
        size_t n = params->len - off < MAX_CONTENT ? params->len - off : MAX_CONTENT;
        put_record(out, T_PARAMS, id, params->p + off, n);
    }
    put_record(out, T_PARAMS, id, NULL, 0);
    for (size_t off = 0; off < opt.body; off += opt.stdin_record) {
        size_t n = opt.body - off < opt.stdin_record ? opt.body - off : opt.stdin_record;
        put_record(out, T_STDIN, id, body + off, n);
    }
    put_record(out, T_STDIN, id, NULL, 0);
}

/* ---- connections ---------------------------------------------------------------------------- */

enum conn_state { C_IDLE, C_CONNECTING, C_OPEN };

typedef struct slot {
    bool busy;
    uint8_t head_len;
    uint8_t end_len;
    uint64_t sent;
    uint8_t head[HEAD_KEEP];
    uint8_t end[8];
} slot;

typedef struct conn {
    int fd;
    enum conn_state state;
    bool want_out;     /* EPOLLOUT registered */
    uint64_t retry_at; /* C_IDLE: when to connect again (0: now) */
    uint64_t opened;
    slot *slots; /* depth slots; slot i carries request id i + 1 */
    unsigned inflight;
    bool used; /* a request completed on this connection (for --hold) */
    /* write queue: slot indices whose request bytes are still (partly) unsent */
    unsigned *wq;
    unsigned wq_head, wq_len;
    size_t woff;
    /* record parser */
    uint8_t hdr[8];
    unsigned hdr_have;
    uint8_t type;
    uint16_t id;
    size_t content_left, pad_left;
    size_t content_seen;
} conn;

static struct {
    int ep;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool tcp;
    buf *reqs; /* prebuilt request per id */
    conn *conns;
    uint8_t *rbuf;
    uint64_t start, measure_from, end, stop_at;
    bool stopping; /* no new requests */
    uint64_t sent, completed, measured;
    uint64_t resp_bytes;
    uint64_t err_proto, err_http, err_trunc, err_timeout, err_conn;
    uint64_t connects;
    uint64_t last_progress; /* when a request last completed (or the run started) */
    bool stalled;
    bool cpu_started;
    struct rusage ru_start;      /* at the start of the measured time */
    long long srv_ticks_start;   /* --server-pid: the server's CPU ticks then, -1: unread */
    long long srv_ticks_end;     /* and when the measured time ended */
    uint64_t srv_measured_start; /* g.measured when srv_ticks_start was read */
    uint64_t srv_measured_end;   /* and when srv_ticks_end was */
    unsigned pending_retries;
    histogram hist;
    char expect[32];
    size_t expect_len;
} g;

static volatile sig_atomic_t interrupted;

/* The first SIGINT/SIGTERM ends the run (results are still printed); a second one exits. */
static void on_signal(int sig)
{
    if (interrupted)
        _exit(128 + sig);
    interrupted = 1;
}

static int parse_target(const char *t)
{
    memset(&g.addr, 0, sizeof g.addr);
    if (strncmp(t, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&g.addr;
        size_t n = strlen(t + 5);
        if (n == 0 || n >= sizeof un->sun_path)
            return -1;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, t + 5, n + 1);
        g.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }
    if (strncmp(t, "tcp:", 4) == 0) {
        char host[256];
        const char *hp = t + 4, *port;
        if (hp[0] == '[') {
            const char *close = strchr(hp, ']');
            if (!close || close[1] != ':' || (size_t)(close - hp - 1) >= sizeof host)
                return -1;
            memcpy(host, hp + 1, (size_t)(close - hp - 1));
            host[close - hp - 1] = '\0';
            port = close + 2;
        } else {
            const char *colon = strrchr(hp, ':');
            if (!colon || (size_t)(colon - hp) >= sizeof host)
                return -1;
            memcpy(host, hp, (size_t)(colon - hp));
            host[colon - hp] = '\0';
            port = colon + 1;
        }
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
        if (getaddrinfo(host, port, &hints, &res) != 0)
            return -1;
        memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
        g.addrlen = res->ai_addrlen;
        freeaddrinfo(res);
        g.tcp = true;
        return 0;
    }
    return -1;
}

static void ep_set(conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = out;
}

static void conn_reset_parser(conn *c)
{
    c->hdr_have = 0;
    c->content_left = c->pad_left = 0;
}

/* Closes the connection. In-flight requests count as `*counter` errors (NULL: not counted,
 * e.g. a normal close after a response with keep-alive off). It is reopened at `retry_at`. */
static void conn_close(conn *c, uint64_t *counter, uint64_t retry_at)
{
    if (c->fd >= 0) {
        epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = C_IDLE;
    c->want_out = false;
    if (counter)
        *counter += c->inflight;
    for (unsigned i = 0; i < opt.depth; i++)
        c->slots[i].busy = false;
    c->inflight = 0;
    c->wq_head = c->wq_len = 0;
    c->woff = 0;
    conn_reset_parser(c);
    c->retry_at = retry_at;
    g.pending_retries++;
}

static bool may_send(void)
{
    if (g.stopping || interrupted)
        return false;
    if (opt.requests && g.sent >= opt.requests)
        return false;
    if (opt.hold > 0 && g.sent >= opt.conns)
        return false;
    return true;
}

/* Writes queued requests; returns false when the connection was closed. */
static bool conn_flush(conn *c)
{
    while (c->wq_len) {
        struct iovec iov[MAX_WRITE_IOV];
        int n = 0;
        size_t total = 0;
        for (unsigned k = 0; k < c->wq_len && n < MAX_WRITE_IOV; k++) {
            unsigned si = c->wq[(c->wq_head + k) % opt.depth];
            const buf *r = &g.reqs[si];
            size_t off = k == 0 ? c->woff : 0;
            iov[n].iov_base = r->p + off;
            iov[n].iov_len = r->len - off;
            total += iov[n].iov_len;
            n++;
        }
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!c->want_out)
                    ep_set(c, true);
                return true;
            }
            g.err_conn++;
            conn_close(c, &g.err_trunc, now_ns() + 1000000);
            return false;
        }
        size_t left = (size_t)w;
        while (left && c->wq_len) {
            unsigned si = c->wq[c->wq_head];
            size_t rest = g.reqs[si].len - c->woff;
            if (left < rest) {
                c->woff += left;
                left = 0;
                break;
            }
            left -= rest;
            c->woff = 0;
            c->wq_head = (c->wq_head + 1) % opt.depth;
            c->wq_len--;
        }
        if ((size_t)w < total) {
            if (!c->want_out)
                ep_set(c, true);
            return true;
        }
    }
    if (c->want_out)
        ep_set(c, false);
    return true;
}

static void slot_send(conn *c, unsigned si, uint64_t t)
{
    slot *s = &c->slots[si];
    s->busy = true;
    s->sent = t;
    s->head_len = 0;
    s->end_len = 0;
    c->inflight++;
    g.sent++;
    c->wq[(c->wq_head + c->wq_len) % opt.depth] = si;
    c->wq_len++;
}

/* Fills every free slot of an open connection (one slot with keep-alive off). */
static void conn_fill(conn *c, uint64_t t)
{
    if (c->state != C_OPEN)
        return;
    for (unsigned i = 0; i < opt.depth && may_send(); i++) {
        if (!c->slots[i].busy)
            slot_send(c, i, t);
    }
}

static void conn_connect(conn *c, uint64_t t)
{
    int fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    g.pending_retries--;
    if (fd < 0) {
        g.err_conn++;
        c->retry_at = t + 10000000;
        g.pending_retries++;
        return;
    }
    if (g.tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->fd = fd;
    c->opened = t;
    conn_reset_parser(c);
    int rc = connect(fd, (struct sockaddr *)&g.addr, g.addrlen);
    if (rc != 0 && errno == EAGAIN && !g.tcp) {
        /* Unix socket backlog full: try again shortly, not an error. */
        close(fd);
        c->fd = -1;
        c->retry_at = t + 1000000;
        g.pending_retries++;
        return;
    }
    if (rc != 0 && errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        g.err_conn++;
        c->retry_at = t + 10000000;
        g.pending_retries++;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | (rc != 0 ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev);
    c->want_out = rc != 0;
    g.connects++;
    if (rc != 0) {
        c->state = C_CONNECTING;
        return;
    }
    c->state = C_OPEN;
    conn_fill(c, t);
    conn_flush(c);
}

/* A request's END_REQUEST arrived. Returns false when the connection was closed. */
static bool complete(conn *c, slot *s, uint64_t t)
{
    uint8_t pstatus = s->end[4];
    s->busy = false;
    c->inflight--;
    c->used = true;
    g.completed++;
    g.last_progress = t;
    if (s->end_len < 8 || pstatus != 0) {
        g.err_proto++;
    } else if (s->head_len < g.expect_len || memcmp(s->head, g.expect, g.expect_len) != 0) {
        g.err_http++;
    } else if (t >= g.measure_from && t <= g.end) {
        g.measured++;
        hist_add(&g.hist, t - s->sent);
    }
    if (!opt.keepalive) {
        conn_close(c, NULL, 0);
        if (may_send())
            conn_connect(c, t);
        return false;
    }
    return true;
}

/* Parses `n` received bytes. Returns false when the connection was closed. */
static bool conn_parse(conn *c, const uint8_t *p, size_t n, uint64_t t)
{
    while (n) {
        if (c->hdr_have < 8) {
            size_t k = 8 - c->hdr_have;
            if (k > n)
                k = n;
            memcpy(c->hdr + c->hdr_have, p, k);
            c->hdr_have += (unsigned)k;
            p += k;
            n -= k;
            if (c->hdr_have < 8)
                break;
            if (c->hdr[0] != 1) {
                g.err_proto++;
                conn_close(c, &g.err_trunc, t + 1000000);
                return false;
            }
            c->type = c->hdr[1];
            c->id = (uint16_t)(c->hdr[2] << 8 | c->hdr[3]);
            c->content_left = (size_t)(c->hdr[4] << 8 | c->hdr[5]);
            c->pad_left = c->hdr[6];
            c->content_seen = 0;
            if (c->id == 0 || c->id > opt.depth || !c->slots[c->id - 1].busy) {
                g.err_proto++;
                conn_close(c, &g.err_trunc, t + 1000000);
                return false;
            }
            if (c->type == T_STDOUT)
                g.resp_bytes += c->content_left;
        }
        slot *s = &c->slots[c->id - 1];
        if (c->content_left) {
            size_t k = c->content_left < n ? c->content_left : n;
            if (c->type == T_STDOUT && s->head_len < HEAD_KEEP) {
                size_t m = HEAD_KEEP - s->head_len;
                if (m > k)
                    m = k;
                memcpy(s->head + s->head_len, p, m);
                s->head_len = (uint8_t)(s->head_len + m);
            } else if (c->type == T_END_REQUEST && s->end_len < 8) {
                size_t m = 8u - s->end_len;
                if (m > k)
                    m = k;
                memcpy(s->end + s->end_len, p, m);
                s->end_len = (uint8_t)(s->end_len + m);
            }
            c->content_left -= k;
            p += k;
            n -= k;
            if (c->content_left)
                break;
        }
        if (c->pad_left) {
            size_t k = c->pad_left < n ? c->pad_left : n;
            c->pad_left -= k;
            p += k;
            n -= k;
            if (c->pad_left)
                break;
        }
        c->hdr_have = 0;
        if (c->type == T_END_REQUEST && !complete(c, s, t))
            return false;
    }
    return true;
}

static void conn_readable(conn *c)
{
    uint64_t t = now_ns();
    for (;;) {
        ssize_t n = read(c->fd, g.rbuf, READ_BUF_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            /* EOF or reset: an error only when requests were in flight. */
            if (c->inflight)
                g.err_conn++;
            conn_close(c, &g.err_trunc, c->inflight ? t + 1000000 : 0);
            return;
        }
        if (!conn_parse(c, g.rbuf, (size_t)n, t))
            return;
        if ((size_t)n < READ_BUF_SIZE)
            break;
    }
    conn_fill(c, t);
    conn_flush(c);
}

static void conn_writable(conn *c)
{
    uint64_t t = now_ns();
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            g.err_conn++;
            conn_close(c, NULL, t + 10000000);
            return;
        }
        c->state = C_OPEN;
        ep_set(c, false);
        conn_fill(c, t);
    }
    conn_flush(c);
}

/* Reopens connections whose retry time came, and times out slow requests. */
static void housekeeping(uint64_t t, bool check_timeouts)
{
    uint64_t tmo = (uint64_t)(opt.timeout * 1e9);
    for (unsigned i = 0; i < opt.conns; i++) {
        conn *c = &g.conns[i];
        if (c->state == C_IDLE) {
            if (c->retry_at <= t && may_send())
                conn_connect(c, t);
            continue;
        }
        if (!check_timeouts)
            continue;
        if (c->state == C_CONNECTING && t - c->opened > tmo) {
            g.err_timeout++;
            conn_close(c, NULL, t);
            continue;
        }
        for (unsigned k = 0; k < opt.depth; k++) {
            if (c->slots[k].busy && t - c->slots[k].sent > tmo) {
                /* The connection's state is unknown now: start it over. */
                conn_close(c, &g.err_timeout, t);
                break;
            }
        }
    }
}

static bool hold_ready(void)
{
    for (unsigned i = 0; i < opt.conns; i++) {
        if (g.conns[i].state != C_OPEN || !g.conns[i].used || g.conns[i].inflight)
            return false;
    }
    return true;
}

/* ---- the server's CPU time (--server-pid) -------------------------------------------------- */

typedef struct proc_cpu {
    long pid;
    long ppid;
    long long ticks; /* utime + stime */
} proc_cpu;

/* Reads /proc/PID/stat: its parent and its user+system time in clock ticks (all threads). */
static bool read_proc_stat(long pid, proc_cpu *out)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p)
        return false;
    /* After ") ": state(3) ppid(4) ... utime(14) stime(15). */
    long ppid = 0;
    unsigned long long ut = 0, st = 0;
    unsigned field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 4)
            ppid = strtol(tok, NULL, 10);
        else if (field == 14)
            ut = strtoull(tok, NULL, 10);
        else if (field == 15) {
            st = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (field < 15)
        return false;
    out->pid = pid;
    out->ppid = ppid;
    out->ticks = (long long)(ut + st);
    return true;
}

/* The CPU time of `root` and of every living process descended from it, in clock ticks; -1 when
 * `root` is gone. */
static long long tree_cpu_ticks(long root)
{
    proc_cpu *procs = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            proc_cpu *np = realloc(procs, ncap * sizeof *np);
            if (!np)
                break;
            procs = np;
            cap = ncap;
        }
        if (read_proc_stat(strtol(e->d_name, NULL, 10), &procs[n]))
            n++;
    }
    closedir(d);
    /* Mark the tree: repeat until no process joins (a few passes for a shallow tree). */
    bool *in = calloc(n ? n : 1, sizeof *in);
    long long total = -1;
    if (in) {
        bool grew = true;
        for (size_t i = 0; i < n; i++)
            if (procs[i].pid == root)
                in[i] = true;
        while (grew) {
            grew = false;
            for (size_t i = 0; i < n; i++) {
                if (in[i])
                    continue;
                for (size_t j = 0; j < n; j++)
                    if (in[j] && procs[j].pid == procs[i].ppid) {
                        in[i] = grew = true;
                        break;
                    }
            }
        }
        for (size_t i = 0; i < n; i++)
            if (in[i])
                total = (total < 0 ? 0 : total) + procs[i].ticks;
    }
    free(in);
    free(procs);
    return total;
}

static void run(void)
{
    struct epoll_event evs[256];
    uint64_t tmo = (uint64_t)(opt.timeout * 1e9);
    uint64_t next_check = 0;
    uint64_t hold_until = 0;
    g.pending_retries = opt.conns;
    for (unsigned i = 0; i < opt.conns; i++) {
        g.conns[i].fd = -1;
        g.conns[i].state = C_IDLE;
    }
    g.srv_ticks_start = g.srv_ticks_end = -1;
    g.start = now_ns();
    g.last_progress = g.start;
    if (opt.requests || opt.hold > 0) {
        g.measure_from = g.start;
        g.end = UINT64_MAX;
    } else {
        g.measure_from = g.start + (uint64_t)(opt.warmup * 1e9);
        g.end = g.measure_from + (uint64_t)(opt.duration * 1e9);
    }
    for (;;) {
        uint64_t t = now_ns();
        if (interrupted && !g.stopping) {
            g.stopping = true;
            g.stop_at = t;
            if (g.end > t)
                g.end = t;
        }
        if (!g.stopping && t >= g.end) {
            g.stopping = true;
            g.stop_at = t;
        }
        if (!g.stopping && opt.requests && g.completed >= opt.requests) {
            g.stopping = true;
            g.stop_at = t;
        }
        /* Nothing answered for a whole timeout (server gone, every connect refused): give up
         * rather than retry for ever. Held idle connections are not expected to answer. */
        if (!g.stopping && !hold_until && t - g.last_progress > tmo) {
            g.stopping = true;
            g.stalled = true;
            g.stop_at = t;
            if (g.end > t)
                g.end = t;
        }
        if (opt.hold > 0 && !hold_until && hold_ready()) {
            printf("HOLDING %u connections\n", opt.conns);
            fflush(stdout);
            hold_until = t + (uint64_t)(opt.hold * 1e9);
        }
        if (hold_until && (t >= hold_until || interrupted))
            break;
        if (g.stopping) {
            unsigned inflight = 0;
            for (unsigned i = 0; i < opt.conns; i++)
                inflight += g.conns[i].inflight;
            if (inflight == 0 || t - g.stop_at > tmo + 100000000)
                break;
        }
        if (!g.cpu_started && t >= g.measure_from) {
            if (opt.server_pid) {
                g.srv_ticks_start = tree_cpu_ticks(opt.server_pid);
                g.srv_measured_start = g.measured;
            }
            getrusage(RUSAGE_SELF, &g.ru_start);
            g.cpu_started = true;
        }
        if (g.stopping && opt.server_pid && g.srv_ticks_end < 0) {
            g.srv_ticks_end = g.cpu_started ? tree_cpu_ticks(opt.server_pid) : -1;
            g.srv_measured_end = g.measured;
            if (g.srv_ticks_end < 0)
                g.srv_ticks_end = -2; /* not measured; read once only */
        }
        bool check = t >= next_check;
        if (g.pending_retries || check) {
            housekeeping(t, check);
            if (check)
                next_check = t + 50000000;
        }
        int wait_ms = g.pending_retries ? 1 : 50;
        int n = epoll_wait(g.ep, evs, 256, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            exit(2);
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue; /* closed earlier in this batch */
            if ((evs[i].events & (EPOLLOUT | EPOLLERR)) && c->state == C_CONNECTING) {
                conn_writable(c);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                conn_readable(c);
            if (c->fd >= 0 && c->state == C_OPEN && (evs[i].events & EPOLLOUT))
                conn_writable(c);
        }
    }
    if (!opt.requests && opt.hold <= 0 && g.end > g.stop_at)
        g.end = g.stop_at;
}

/* ---- main ----------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: fcgi_load --target unix:PATH|tcp:HOST:PORT [options]\n"
               "  -c, --conns N          connections (default 16)\n"
               "  -D, --depth N          requests in flight per connection (multiplexing, default "
               "1)\n"
               "  -b, --body BYTES       request body size (default 0)\n"
               "      --stdin-record N   largest STDIN record content (default 8192, as Apache)\n"
               "      --no-keepalive     FCGI_KEEP_CONN=0: one request per connection\n"
               "  -d, --duration SEC     measured time (default 10)\n"
               "  -w, --warmup SEC       time before measuring (default 1)\n"
               "  -n, --requests N       stop after N requests instead (all measured)\n"
               "      --timeout SEC      a request without END_REQUEST by then is an error (5)\n"
               "      --hold SEC         one request per connection, then hold them all idle for\n"
               "                         SEC seconds (prints HOLDING when all are established)\n"
               "      --method M         REQUEST_METHOD (default GET)\n"
               "      --path P           REQUEST_URI and SCRIPT_NAME (default /hello)\n"
               "      --expect-status S  HTTP status every response must have (default 200)\n"
               "      --peer NAME        label in the RESULT line\n"
               "      --scenario NAME    label in the RESULT line\n"
               "      --server-pid PID   report the CPU time of PID and its descendants per\n"
               "                         measured request (server_cpu_us in the RESULT line)\n"
               "  -q, --quiet            only the RESULT line\n");
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

static bool parse_secs(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || v > 1e6)
        return false;
    *out = v;
    return true;
}

static void raise_nofile(unsigned need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)need + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    static const struct option lopts[] = {
        {"target", required_argument, NULL, 't'},
        {"conns", required_argument, NULL, 'c'},
        {"depth", required_argument, NULL, 'D'},
        {"body", required_argument, NULL, 'b'},
        {"stdin-record", required_argument, NULL, 'R'},
        {"no-keepalive", no_argument, NULL, 'K'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"requests", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 'T'},
        {"hold", required_argument, NULL, 'H'},
        {"method", required_argument, NULL, 'm'},
        {"path", required_argument, NULL, 'p'},
        {"expect-status", required_argument, NULL, 'e'},
        {"peer", required_argument, NULL, 'P'},
        {"scenario", required_argument, NULL, 'S'},
        {"server-pid", required_argument, NULL, 'U'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    uint64_t v;
    while ((ch = getopt_long(argc, argv, "t:c:D:b:d:w:n:qh", lopts, NULL)) != -1) {
        switch (ch) {
        case 't':
            opt.target = optarg;
            break;
        case 'c':
            if (!parse_u64(optarg, &v) || v == 0 || v > 1000000)
                goto bad;
            opt.conns = (unsigned)v;
            break;
        case 'D':
            if (!parse_u64(optarg, &v) || v == 0 || v > 65535)
                goto bad;
            opt.depth = (unsigned)v;
            break;
        case 'b':
            if (!parse_u64(optarg, &v) || v > (1ull << 34))
                goto bad;
            opt.body = (size_t)v;
            break;
        case 'R':
            if (!parse_u64(optarg, &v) || v == 0 || v > MAX_CONTENT)
                goto bad;
            opt.stdin_record = (size_t)v;
            break;
        case 'K':
            opt.keepalive = false;
            break;
        case 'd':
            if (!parse_secs(optarg, &opt.duration) || opt.duration <= 0)
                goto bad;
            break;
        case 'w':
            if (!parse_secs(optarg, &opt.warmup))
                goto bad;
            break;
        case 'n':
            if (!parse_u64(optarg, &v) || v == 0)
                goto bad;
            opt.requests = v;
            break;
        case 'T':
            if (!parse_secs(optarg, &opt.timeout) || opt.timeout <= 0)
                goto bad;
            break;
        case 'H':
            if (!parse_secs(optarg, &opt.hold) || opt.hold <= 0)
                goto bad;
            break;
        case 'm':
            opt.method = optarg;
            break;
        case 'p':
            opt.path = optarg;
            break;
        case 'e':
            opt.expect_status = optarg;
            break;
        case 'P':
            opt.peer = optarg;
            break;
        case 'S':
            opt.scenario = optarg;
            break;
        case 'U':
            if (!parse_u64(optarg, &v) || v == 0 || v > 1u << 30)
                goto bad;
            opt.server_pid = (long)v;
            break;
        case 'q':
            opt.quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "fcgi_load: bad value for %s: %s\n", argv[optind - 1], optarg);
        return 2;
    }
    if (optind < argc || !opt.target) {
        usage(stderr);
        return 2;
    }
    if (parse_target(opt.target) != 0) {
        fprintf(stderr, "fcgi_load: bad target %s (unix:PATH or tcp:HOST:PORT)\n", opt.target);
        return 2;
    }
    if (!opt.keepalive && opt.depth > 1) {
        fprintf(stderr, "fcgi_load: --depth needs keep-alive connections\n");
        return 2;
    }
    if (!opt.method)
        opt.method = "GET";
    snprintf(g.expect, sizeof g.expect, "Status: %s", opt.expect_status);
    g.expect_len = strlen(g.expect);
    if (g.expect_len > HEAD_KEEP) {
        fprintf(stderr, "fcgi_load: --expect-status too long\n");
        return 2;
    }

    buf params = {0};
    build_params(&params);
    uint8_t *body = malloc(opt.body ? opt.body : 1);
    if (!body)
        return 2;
    for (size_t i = 0; i < opt.body; i++)
        body[i] = (uint8_t)('a' + i % 26);
    g.reqs = calloc(opt.depth, sizeof *g.reqs);
    g.conns = calloc(opt.conns, sizeof *g.conns);
    g.rbuf = malloc(READ_BUF_SIZE);
    if (!g.reqs || !g.conns || !g.rbuf)
        return 2;
    for (unsigned i = 0; i < opt.depth; i++)
        build_request(&g.reqs[i], (uint16_t)(i + 1), &params, body);
    free(body);
    for (unsigned i = 0; i < opt.conns; i++) {
        g.conns[i].slots = calloc(opt.depth, sizeof(slot));
        g.conns[i].wq = calloc(opt.depth, sizeof(unsigned));
        if (!g.conns[i].slots || !g.conns[i].wq)
            return 2;
    }
    raise_nofile(opt.conns);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (g.ep < 0) {
        perror("epoll_create1");
        return 2;
    }

    if (!opt.quiet) {
        printf("target %s: %u connection%s, depth %u, %s, body %zu B, %u params (%zu bytes), ",
               opt.target, opt.conns, opt.conns == 1 ? "" : "s", opt.depth,
               opt.keepalive ? "keep-alive" : "one request per connection", opt.body, nparams,
               params.len);
        if (opt.hold > 0)
            printf("hold %.1f s\n", opt.hold);
        else if (opt.requests)
            printf("%" PRIu64 " requests\n", opt.requests);
        else
            printf("%.1f s (+%.1f s warm-up)\n", opt.duration, opt.warmup);
        fflush(stdout);
    }

    run();

    struct rusage ru_end;
    getrusage(RUSAGE_SELF, &ru_end);
    uint64_t end = g.end == UINT64_MAX ? now_ns() : g.end;
    double secs = (double)(end - g.measure_from) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    double rps = (double)g.measured / secs;
    double p50 = hist_percentile(&g.hist, 50) / 1000, p90 = hist_percentile(&g.hist, 90) / 1000;
    double p99 = hist_percentile(&g.hist, 99) / 1000, max = (double)g.hist.max / 1000;
    /* Requests sent but never answered by the end (stopped before their time ran out). */
    uint64_t unanswered = 0;
    for (unsigned i = 0; i < opt.conns; i++)
        unanswered += g.conns[i].inflight;
    g.err_timeout += unanswered;
    uint64_t errors = g.err_proto + g.err_http + g.err_trunc + g.err_timeout + g.err_conn;
    double avg_bytes = g.completed ? (double)g.resp_bytes / (double)g.completed : 0;
    /* CPU time of this process over the measured time (plus the wait for the last answers),
     * in percent of one CPU: near 100 means the generator, not the server, set the pace. */
    double cpu = 0;
    if (g.cpu_started) {
        struct timeval u, sy;
        timersub(&ru_end.ru_utime, &g.ru_start.ru_utime, &u);
        timersub(&ru_end.ru_stime, &g.ru_start.ru_stime, &sy);
        double busy = (double)(u.tv_sec + sy.tv_sec) + (double)(u.tv_usec + sy.tv_usec) / 1e6;
        double wall = (double)(now_ns() - g.measure_from) / 1e9;
        cpu = wall > 0 ? 100 * busy / wall : 0;
    }
    /* The server's CPU time per measured request, in microseconds (--server-pid). */
    char srv[96] = "";
    if (opt.server_pid && g.srv_ticks_start >= 0 && g.srv_ticks_end >= g.srv_ticks_start &&
        g.srv_measured_end > g.srv_measured_start) {
        long hz = sysconf(_SC_CLK_TCK);
        double busy = (double)(g.srv_ticks_end - g.srv_ticks_start) / (double)(hz > 0 ? hz : 100);
        uint64_t answered = g.srv_measured_end - g.srv_measured_start;
        snprintf(srv, sizeof srv, " server_cpu_us=%.3f server_cpu_s=%.2f server_requests=%" PRIu64,
                 busy * 1e6 / (double)answered, busy, answered);
    }
    if (!opt.quiet) {
        printf("requests %" PRIu64 " in %.2f s: %.1f req/s (%" PRIu64 " connections opened)\n",
               g.measured, secs, rps, g.connects);
        printf("latency us: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", p50, p90, p99, max);
        printf("response: %.1f STDOUT bytes on average; load generator CPU %.0f%%\n", avg_bytes,
               cpu);
        if (g.stalled)
            printf("stopped early: nothing was answered for %.1f s\n", opt.timeout);
        if (srv[0])
            printf("server CPU:%s\n", srv);
        printf("errors: %" PRIu64 " (protocol %" PRIu64 ", http %" PRIu64 ", truncated %" PRIu64
               ", timeout %" PRIu64 ", connection %" PRIu64 ")\n",
               errors, g.err_proto, g.err_http, g.err_trunc, g.err_timeout, g.err_conn);
    }
    printf("RESULT peer=%s scenario=%s target=%s conns=%u depth=%u body=%zu keepalive=%d "
           "secs=%.3f requests=%" PRIu64 " rps=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f "
           "max_us=%.1f resp_bytes=%.1f client_cpu=%.0f errors=%" PRIu64 " err_proto=%" PRIu64
           " err_http=%" PRIu64 " err_trunc=%" PRIu64 " err_timeout=%" PRIu64 " err_conn=%" PRIu64
           "%s\n",
           opt.peer, opt.scenario, opt.target, opt.conns, opt.depth, opt.body,
           opt.keepalive ? 1 : 0, secs, g.measured, rps, p50, p90, p99, max, avg_bytes, cpu, errors,
           g.err_proto, g.err_http, g.err_trunc, g.err_timeout, g.err_conn, srv);
    return errors == 0 && g.measured > 0 ? 0 : 1;
}
