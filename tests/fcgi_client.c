/* A small blocking FastCGI client for tests. See fcgi_client.h. */
#include "fcgi_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FCL_DEFAULT_TIMEOUT 30.0
#define FCL_READ_CHUNK      (256u * 1024u)

/* ---- Byte buffers ------------------------------------------------------------------------ */

void fcl_buf_init(fcl_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void fcl_buf_free(fcl_buf *b)
{
    free(b->data);
    fcl_buf_init(b);
}

void fcl_buf_clear(fcl_buf *b)
{
    b->len = 0;
}

static void buf_reserve(fcl_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra + 1)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra + 1)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        fprintf(stderr, "fcgi_client: out of memory\n");
        abort();
    }
    b->data = p;
    b->cap = cap;
}

void fcl_buf_add(fcl_buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0; /* always room for a terminator: handy for text */
}

void fcl_buf_adds(fcl_buf *b, const char *s)
{
    fcl_buf_add(b, s, strlen(s));
}

/* ---- Building records -------------------------------------------------------------------- */

void fcl_put_header(fcl_buf *b, uint8_t version, uint8_t type, uint16_t id, uint16_t clen,
                    uint8_t plen)
{
    uint8_t h[8] = {
        version, type, (uint8_t)(id >> 8), (uint8_t)id, (uint8_t)(clen >> 8), (uint8_t)clen,
        plen,    0};
    fcl_buf_add(b, h, sizeof h);
}

void fcl_put_record(fcl_buf *b, uint8_t type, uint16_t id, const void *content, size_t len,
                    uint8_t padding)
{
    static const uint8_t zeros[256];
    if (len > FCGI_MAX_CONTENT) {
        fprintf(stderr, "fcgi_client: record content of %zu bytes\n", len);
        abort();
    }
    fcl_put_header(b, FCGI_VERSION_1, type, id, (uint16_t)len, padding);
    fcl_buf_add(b, content, len);
    fcl_buf_add(b, zeros, padding);
}

void fcl_put_begin(fcl_buf *b, uint16_t id, uint16_t role, uint8_t flags)
{
    uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, flags, 0, 0, 0, 0, 0};
    fcl_put_record(b, FCGI_BEGIN_REQUEST, id, body, sizeof body, 0);
}

void fcl_put_abort(fcl_buf *b, uint16_t id)
{
    fcl_put_record(b, FCGI_ABORT_REQUEST, id, NULL, 0, 0);
}

static uint8_t pad_for(size_t len, int padding)
{
    if (padding == FCL_PAD8)
        return (uint8_t)((8 - (len & 7)) & 7);
    return (uint8_t)padding;
}

void fcl_put_stream(fcl_buf *b, uint8_t type, uint16_t id, const void *data, size_t len,
                    size_t max_rec, int padding, bool end)
{
    const uint8_t *p = data;
    if (max_rec == 0 || max_rec > FCGI_MAX_CONTENT)
        max_rec = FCGI_MAX_CONTENT;
    while (len > 0) {
        size_t n = len < max_rec ? len : max_rec;
        fcl_put_record(b, type, id, p, n, pad_for(n, padding));
        p += n;
        len -= n;
    }
    if (end)
        fcl_put_record(b, type, id, NULL, 0, pad_for(0, padding));
}

void fcl_nv_len4(fcl_buf *nv, uint32_t len)
{
    uint8_t p[4] = {(uint8_t)((len >> 24) | 0x80), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                    (uint8_t)len};
    fcl_buf_add(nv, p, sizeof p);
}

static void nv_len(fcl_buf *nv, size_t len)
{
    if (len < 128) {
        uint8_t c = (uint8_t)len;
        fcl_buf_add(nv, &c, 1);
    } else {
        fcl_nv_len4(nv, (uint32_t)len);
    }
}

void fcl_nv_add(fcl_buf *nv, const void *name, size_t nlen, const void *value, size_t vlen)
{
    nv_len(nv, nlen);
    nv_len(nv, vlen);
    fcl_buf_add(nv, name, nlen);
    fcl_buf_add(nv, value, vlen);
}

void fcl_nv_adds(fcl_buf *nv, const char *name, const char *value)
{
    fcl_nv_add(nv, name, strlen(name), value, strlen(value));
}

void fcl_put_request(fcl_buf *b, uint16_t id, uint16_t role, uint8_t flags,
                     const char *const *params, const void *in, size_t in_len, const void *data,
                     size_t data_len)
{
    fcl_buf nv;
    fcl_buf_init(&nv);
    for (size_t i = 0; params && params[i]; i += 2)
        fcl_nv_adds(&nv, params[i], params[i + 1] ? params[i + 1] : "");
    fcl_put_begin(b, id, role, flags);
    fcl_put_stream(b, FCGI_PARAMS, id, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_put_stream(b, FCGI_STDIN, id, in, in_len, 0, FCL_PAD8, true);
    if (role == 3)
        fcl_put_stream(b, FCGI_DATA, id, data, data_len, 0, FCL_PAD8, true);
    fcl_buf_free(&nv);
}

/* ---- Connections ------------------------------------------------------------------------- */

double fcl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int ms_left(double deadline)
{
    double left = deadline - fcl_now();
    if (left <= 0)
        return 0;
    return (int)(left * 1000) + 1;
}

static int connect_unix(const char *path, int rcvbuf, double timeout)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {(time_t)timeout, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int connect_tcp(const char *hostport, int rcvbuf, double timeout)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host) {
        errno = EINVAL;
        return -1;
    }
    const char *h = hostport;
    size_t hlen = (size_t)(colon - hostport);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    memcpy(host, h, hlen);
    host[hlen] = 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res) {
        errno = EINVAL;
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return -1;
    }
    struct timeval tv = {(time_t)timeout, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        int e = errno;
        close(fd);
        freeaddrinfo(res);
        errno = e;
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

fcl_conn *fcl_connect(const char *addr, int rcvbuf)
{
    int fd;
    if (strncmp(addr, "unix:", 5) == 0) {
        fd = connect_unix(addr + 5, rcvbuf, FCL_DEFAULT_TIMEOUT);
    } else if (strncmp(addr, "tcp:", 4) == 0) {
        fd = connect_tcp(addr + 4, rcvbuf, FCL_DEFAULT_TIMEOUT);
    } else {
        errno = EINVAL;
        return NULL;
    }
    if (fd < 0)
        return NULL;
    return fcl_adopt(fd);
}

fcl_conn *fcl_adopt(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    fcl_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    c->fd = fd;
    c->timeout = FCL_DEFAULT_TIMEOUT;
    fcl_buf_init(&c->rx);
    return c;
}

void fcl_record_free(fcl_record *r)
{
    free(r->content);
    r->content = NULL;
}

void fcl_close(fcl_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    fcl_buf_free(&c->rx);
    for (size_t i = 0; i < c->nmgmt; i++)
        fcl_record_free(&c->mgmt[i]);
    free(c->mgmt);
    free(c);
}

/* Reads what is available into rx. Returns bytes read (> 0), 0 at EOF, -1 with errno (EAGAIN
 * when nothing is there). */
static ssize_t rx_fill(fcl_conn *c)
{
    if (c->rx_off > 0 && c->rx_off == c->rx.len) {
        c->rx.len = c->rx_off = 0;
    } else if (c->rx_off > (1u << 20)) {
        memmove(c->rx.data, c->rx.data + c->rx_off, c->rx.len - c->rx_off);
        c->rx.len -= c->rx_off;
        c->rx_off = 0;
    }
    buf_reserve(&c->rx, FCL_READ_CHUNK);
    ssize_t n = recv(c->fd, c->rx.data + c->rx.len, FCL_READ_CHUNK, 0);
    if (n > 0)
        c->rx.len += (size_t)n;
    else if (n == 0)
        c->eof = true;
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        c->rx_errno = errno;
    return n;
}

int fcl_send(fcl_conn *c, const void *p, size_t n)
{
    const uint8_t *s = p;
    double deadline = fcl_now() + c->timeout;
    while (n > 0) {
        struct pollfd pfd = {c->fd, POLLOUT, 0};
        if (!c->eof && !c->rx_errno)
            pfd.events |= POLLIN;
        int pr = poll(&pfd, 1, ms_left(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return -1;
        if (pr == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) && !c->eof && !c->rx_errno)
            rx_fill(c);
        if (pfd.revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    continue;
                return -1;
            }
            s += w;
            n -= (size_t)w;
            deadline = fcl_now() + c->timeout; /* the deadline is for making no progress */
        }
    }
    return 0;
}

int fcl_send_buf(fcl_conn *c, const fcl_buf *b)
{
    return fcl_send(c, b->data, b->len);
}

int fcl_send_trickle(fcl_conn *c, const void *p, size_t n, size_t chunk, unsigned usec)
{
    const uint8_t *s = p;
    if (chunk == 0)
        chunk = 1;
    while (n > 0) {
        size_t k = n < chunk ? n : chunk;
        if (fcl_send(c, s, k) < 0)
            return -1;
        s += k;
        n -= k;
        if (n > 0 && usec > 0) {
            struct timespec ts = {(time_t)(usec / 1000000u), (long)(usec % 1000000u) * 1000L};
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

/* Makes at least `need` unparsed bytes available. Returns 1, 0 at EOF, -1 with errno. */
static int rx_need(fcl_conn *c, size_t need)
{
    double deadline = fcl_now() + c->timeout;
    while (c->rx.len - c->rx_off < need) {
        if (c->rx_errno) {
            errno = c->rx_errno;
            return -1;
        }
        if (c->eof)
            return 0;
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int pr = poll(&pfd, 1, ms_left(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return -1;
        if (pr == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (rx_fill(c) > 0)
            deadline = fcl_now() + c->timeout;
    }
    return 1;
}

int fcl_read_record(fcl_conn *c, fcl_record *r)
{
    r->content = NULL;
    int rc = rx_need(c, FCGI_HEADER_LEN);
    if (rc <= 0) {
        if (rc == 0 && c->rx.len - c->rx_off > 0) {
            errno = EPROTO; /* a partial header before EOF */
            return -1;
        }
        return rc;
    }
    const uint8_t *p = c->rx.data + c->rx_off;
    r->h.version = p[0];
    r->h.type = p[1];
    r->h.id = (uint16_t)(p[2] << 8 | p[3]);
    r->h.content_len = (uint16_t)(p[4] << 8 | p[5]);
    r->h.padding_len = p[6];
    if (r->h.version != FCGI_VERSION_1) {
        errno = EPROTO;
        return -1;
    }
    size_t total = FCGI_HEADER_LEN + (size_t)r->h.content_len + r->h.padding_len;
    rc = rx_need(c, total);
    if (rc <= 0) {
        if (rc == 0)
            errno = EPROTO; /* a truncated record before EOF */
        return -1;
    }
    p = c->rx.data + c->rx_off;
    r->content = malloc((size_t)r->h.content_len + 1);
    if (!r->content) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(r->content, p + FCGI_HEADER_LEN, r->h.content_len);
    r->content[r->h.content_len] = 0;
    c->rx_off += total;
    return 1;
}

int fcl_wait_eof(fcl_conn *c, double timeout)
{
    if (c->rx.len - c->rx_off > 0) {
        errno = EPROTO;
        return -1;
    }
    double deadline = fcl_now() + timeout;
    for (;;) {
        if (c->rx_errno) {
            errno = c->rx_errno;
            return -1;
        }
        if (c->rx.len - c->rx_off > 0) {
            errno = EPROTO;
            return -1;
        }
        if (c->eof)
            return 0;
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int pr = poll(&pfd, 1, ms_left(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return -1;
        if (pr == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        rx_fill(c);
    }
}

bool fcl_idle_for(fcl_conn *c, double timeout)
{
    if (c->eof || c->rx_errno || c->rx.len - c->rx_off > 0)
        return false;
    struct pollfd pfd = {c->fd, POLLIN, 0};
    int pr;
    double deadline = fcl_now() + timeout;
    do {
        pr = poll(&pfd, 1, ms_left(deadline));
    } while (pr < 0 && errno == EINTR);
    return pr == 0;
}

/* ---- Responses --------------------------------------------------------------------------- */

void fcl_response_init(fcl_response *r, uint16_t id)
{
    memset(r, 0, sizeof *r);
    r->id = id;
    fcl_buf_init(&r->out);
    fcl_buf_init(&r->err);
}

void fcl_response_free(fcl_response *r)
{
    fcl_buf_free(&r->out);
    fcl_buf_free(&r->err);
}

static void violation(fcl_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void violation(fcl_conn *c, const char *fmt, ...)
{
    if (c->violations++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->violation, sizeof c->violation, fmt, ap);
        va_end(ap);
    }
}

static void on_output(fcl_conn *c, fcl_response *r, const fcl_record *rec, fcl_buf *buf,
                      unsigned *empties, unsigned *records, const char *what)
{
    if ((rec->h.content_len + rec->h.padding_len) % 8 != 0)
        violation(c, "%s record for id %u: content %u + padding %u not a multiple of 8", what,
                  r->id, rec->h.content_len, rec->h.padding_len);
    if (*empties > 0)
        violation(c, "%s record for id %u after its empty record", what, r->id);
    if (rec->h.content_len == 0) {
        (*empties)++;
    } else {
        if (records)
            (*records)++;
        fcl_buf_add(buf, rec->content, rec->h.content_len);
    }
}

/* Reads records until every response in `rs` ended (stop == NULL) or `*stop` ended. */
static int await_impl(fcl_conn *c, fcl_response *rs, size_t n, const fcl_response *stop)
{
    size_t open = 0;
    for (size_t i = 0; i < n; i++)
        open += !rs[i].ended;
    while (stop ? !stop->ended : open > 0) {
        fcl_record rec;
        int rc = fcl_read_record(c, &rec);
        if (rc == 0)
            errno = EPIPE; /* a clean EOF before the last END_REQUEST */
        if (rc <= 0)
            return -1;
        if (rec.h.id == FCGI_NULL_REQUEST_ID) {
            fcl_record *m = realloc(c->mgmt, (c->nmgmt + 1) * sizeof *m);
            if (!m)
                abort();
            c->mgmt = m;
            c->mgmt[c->nmgmt++] = rec;
            continue;
        }
        fcl_response *r = NULL;
        for (size_t i = 0; i < n && !r; i++)
            if (rs[i].id == rec.h.id)
                r = &rs[i];
        if (!r) {
            violation(c, "record type %u for unexpected id %u", rec.h.type, rec.h.id);
        } else if (r->ended) {
            violation(c, "record type %u for id %u after its END_REQUEST", rec.h.type, r->id);
        } else if (rec.h.type == FCGI_STDOUT) {
            on_output(c, r, &rec, &r->out, &r->out_empty, &r->out_records, "STDOUT");
        } else if (rec.h.type == FCGI_STDERR) {
            on_output(c, r, &rec, &r->err, &r->err_empty, NULL, "STDERR");
        } else if (rec.h.type == FCGI_END_REQUEST) {
            if (rec.h.content_len != 8) {
                violation(c, "END_REQUEST for id %u with %u content bytes", r->id,
                          rec.h.content_len);
            } else {
                const uint8_t *b = rec.content;
                r->app_status =
                    (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
                r->protocol_status = b[4];
            }
            if (r->protocol_status == FCGI_REQUEST_COMPLETE && r->out_empty != 1)
                violation(c, "END_REQUEST for id %u without the empty STDOUT record", r->id);
            if (r->err.len > 0 && r->err_empty != 1)
                violation(c, "END_REQUEST for id %u with STDERR not terminated", r->id);
            r->end_records++;
            r->ended = true;
            open--;
        } else {
            violation(c, "unexpected record type %u for id %u", rec.h.type, r->id);
        }
        fcl_record_free(&rec);
    }
    return 0;
}

int fcl_await(fcl_conn *c, fcl_response *rs, size_t n)
{
    return await_impl(c, rs, n, NULL);
}

int fcl_await_id(fcl_conn *c, fcl_response *rs, size_t n, uint16_t id)
{
    for (size_t i = 0; i < n; i++)
        if (rs[i].id == id)
            return await_impl(c, rs, n, &rs[i]);
    errno = EINVAL;
    return -1;
}

int fcl_request(fcl_conn *c, uint16_t id, uint16_t role, uint8_t flags, const char *const *params,
                const void *in, size_t in_len, fcl_response *r)
{
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, id, role, flags, params, in, in_len, NULL, 0);
    int rc = fcl_send_buf(c, &b);
    fcl_buf_free(&b);
    if (rc < 0)
        return -1;
    fcl_response_init(r, id);
    return fcl_await(c, r, 1);
}

/* ---- CGI response ------------------------------------------------------------------------ */

int fcl_cgi_parse(const fcl_response *r, fcl_cgi *cgi)
{
    cgi->head = NULL;
    cgi->body = NULL;
    cgi->body_len = 0;
    const uint8_t *p = r->out.data;
    size_t n = r->out.len;
    for (size_t i = 0; i + 4 <= n; i++) {
        if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
            cgi->head = malloc(i + 1);
            if (!cgi->head)
                return -1;
            memcpy(cgi->head, p, i);
            cgi->head[i] = 0;
            cgi->body = p + i + 4;
            cgi->body_len = n - i - 4;
            return 0;
        }
    }
    return -1;
}

void fcl_cgi_free(fcl_cgi *cgi)
{
    free(cgi->head);
    cgi->head = NULL;
}

bool fcl_cgi_header(const fcl_cgi *cgi, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *line = cgi->head;
    while (line && *line) {
        const char *eol = strstr(line, "\r\n");
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1;
            const char *e = line + len;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            size_t vl = (size_t)(e - v);
            if (cap > 0) {
                if (vl >= cap)
                    vl = cap - 1;
                memcpy(out, v, vl);
                out[vl] = 0;
            }
            return true;
        }
        line = eol ? eol + 2 : NULL;
    }
    return false;
}

/* ---- Misc -------------------------------------------------------------------------------- */

uint64_t fcl_fnv1a64(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3u;
    }
    return h;
}

void fcl_fill_random(void *p, size_t n, uint64_t seed)
{
    uint8_t *d = p;
    uint64_t x = seed;
    for (size_t i = 0; i < n; i += 8) {
        /* splitmix64 */
        x += 0x9e3779b97f4a7c15u;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
        z ^= z >> 31;
        for (size_t k = 0; k < 8 && i + k < n; k++)
            d[i + k] = (uint8_t)(z >> (8 * k));
    }
}
