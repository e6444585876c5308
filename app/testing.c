/* In-process testing: requests encoded as FastCGI records, sent over a socketpair to a server
 * on a private loop (or over a socket to a running application), the answer parsed back. */
#include <fcrest/testing.h>

#include <ev.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define TEST_TIMEOUT 30.0

enum {
    REC_BEGIN = 1,
    REC_END = 3,
    REC_PARAMS = 4,
    REC_STDIN = 5,
    REC_STDOUT = 6,
    REC_STDERR = 7,
    REC_DATA = 8,
};

/* ---- Byte buffers --------------------------------------------------------------------- */

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
} buf;

static void buf_add(buf *b, const void *p, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (n > SIZE_MAX - b->len - 1) {
        b->oom = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void put_record(buf *b, unsigned type, const void *content, size_t len)
{
    unsigned pad = (unsigned)((8 - (len & 7)) & 7);
    unsigned char h[8] = {1,
                          (unsigned char)type,
                          0,
                          1,
                          (unsigned char)(len >> 8),
                          (unsigned char)len,
                          (unsigned char)pad,
                          0};
    static const unsigned char zeros[8];
    buf_add(b, h, 8);
    buf_add(b, content, len);
    buf_add(b, zeros, pad);
}

/* A stream in records of at most 65535 bytes, then its empty record. */
static void put_stream(buf *b, unsigned type, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        size_t n = len > 65535 ? 65535 : len;
        put_record(b, type, p, n);
        p += n;
        len -= n;
    }
    put_record(b, type, NULL, 0);
}

static void nv_len(buf *b, size_t n)
{
    if (n < 128) {
        unsigned char c = (unsigned char)n;
        buf_add(b, &c, 1);
    } else {
        unsigned char c[4] = {(unsigned char)((n >> 24) | 0x80), (unsigned char)(n >> 16),
                              (unsigned char)(n >> 8), (unsigned char)n};
        buf_add(b, c, 4);
    }
}

static void nv_add(buf *b, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (nlen > 0x7fffffff || vlen > 0x7fffffff) {
        b->oom = true;
        return;
    }
    nv_len(b, nlen);
    nv_len(b, vlen);
    buf_add(b, name, nlen);
    buf_add(b, value, vlen);
}

static void nv_adds(buf *b, const char *name, const char *value)
{
    nv_add(b, name, strlen(name), value, strlen(value));
}

/* Encodes the whole request. Returns 0 or FCR_EINVAL / FCR_ENOMEM. */
static int encode_request(const fcr_test_req *t, buf *out)
{
    fcr_role role = t->role ? t->role : FCR_RESPONDER;
    if (role < FCR_RESPONDER || role > FCR_FILTER)
        return FCR_EINVAL;
    buf nv = {0};
    const char *path = t->path ? t->path : "/";
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
    nv_adds(&nv, "GATEWAY_INTERFACE", "CGI/1.1");
    nv_adds(&nv, "SERVER_PROTOCOL", "HTTP/1.1");
    nv_adds(&nv, "SERVER_SOFTWARE", "fcrest-test");
    nv_adds(&nv, "SERVER_NAME", "localhost");
    nv_adds(&nv, "SERVER_PORT", "80");
    nv_adds(&nv, "REQUEST_SCHEME", "http");
    nv_adds(&nv, "REMOTE_ADDR", "127.0.0.1");
    nv_adds(&nv, "REMOTE_PORT", "40000");
    nv_adds(&nv, "REQUEST_METHOD", t->method ? t->method : "GET");
    nv_adds(&nv, "REQUEST_URI", path);
    nv_adds(&nv, "QUERY_STRING", q ? q + 1 : "");
    if (role != FCR_AUTHORIZER)
        nv_add(&nv, "SCRIPT_NAME", 11, path, plen);
    size_t body_len = t->body ? (t->body_len ? t->body_len : strlen(t->body)) : 0;
    if (t->body && !t->no_content_length && role != FCR_AUTHORIZER) {
        char n[32];
        snprintf(n, sizeof n, "%zu", body_len);
        nv_adds(&nv, "CONTENT_LENGTH", n);
    }
    if (role == FCR_FILTER) {
        char n[32];
        snprintf(n, sizeof n, "%zu", t->data_len);
        nv_adds(&nv, "FCGI_DATA_LENGTH", n);
        if (t->data_last_mod) {
            snprintf(n, sizeof n, "%lld", t->data_last_mod);
            nv_adds(&nv, "FCGI_DATA_LAST_MOD", n);
        }
    }
    for (const char *const *h = t->headers; h && *h; h++) {
        const char *colon = strchr(*h, ':');
        if (!colon || colon == *h) {
            free(nv.p);
            return FCR_EINVAL;
        }
        size_t nlen = (size_t)(colon - *h);
        char key[300];
        if (nlen > 250) {
            free(nv.p);
            return FCR_EINVAL;
        }
        const char *name = *h;
        if (nlen == 12 && strncasecmp(name, "Content-Type", 12) == 0) {
            strcpy(key, "CONTENT_TYPE");
        } else if (nlen == 14 && strncasecmp(name, "Content-Length", 14) == 0) {
            strcpy(key, "CONTENT_LENGTH");
        } else {
            memcpy(key, "HTTP_", 5);
            for (size_t i = 0; i < nlen; i++) {
                char c = name[i];
                key[5 + i] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
            }
            key[5 + nlen] = '\0';
        }
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        nv_adds(&nv, key, v);
    }
    for (const char *const *p = t->params; p && *p; p++) {
        const char *eq = strchr(*p, '=');
        if (!eq || eq == *p) {
            free(nv.p);
            return FCR_EINVAL;
        }
        nv_add(&nv, *p, (size_t)(eq - *p), eq + 1, strlen(eq + 1));
    }
    unsigned char begin[8] = {0, (unsigned char)role, 0, 0, 0, 0, 0, 0};
    put_record(out, REC_BEGIN, begin, 8);
    put_stream(out, REC_PARAMS, nv.p, nv.len);
    put_stream(out, REC_STDIN, t->body, body_len);
    if (role == FCR_FILTER)
        put_stream(out, REC_DATA, t->data, t->data_len);
    bool oom = nv.oom || out->oom;
    free(nv.p);
    return oom ? FCR_ENOMEM : 0;
}

/* ---- Exchange on a loop --------------------------------------------------------------- */

typedef struct xchg {
    ev_io io;
    ev_timer timer;
    int fd;
    buf out;
    size_t out_off;
    bool write_closed;
    buf in;
    size_t in_off;
    buf stdout_b, stderr_b;
    bool done;
    int error;
    uint32_t app_status;
    int protocol_status;
} xchg;

static void xchg_stop(struct ev_loop *loop, xchg *x, int error)
{
    x->done = true;
    x->error = error;
    ev_io_stop(loop, &x->io);
    ev_timer_stop(loop, &x->timer);
    ev_break(loop, EVBREAK_ONE);
}

/* Consumes complete records from x->in. */
static void parse_records(struct ev_loop *loop, xchg *x)
{
    while (!x->done && x->in.len - x->in_off >= 8) {
        const unsigned char *h = x->in.p + x->in_off;
        size_t clen = ((size_t)h[4] << 8) | h[5];
        size_t total = 8 + clen + h[6];
        if (h[0] != 1) {
            xchg_stop(loop, x, FCR_EPROTO);
            return;
        }
        if (x->in.len - x->in_off < total)
            return;
        const unsigned char *c = h + 8;
        switch (h[1]) {
        case REC_STDOUT:
            buf_add(&x->stdout_b, c, clen);
            break;
        case REC_STDERR:
            buf_add(&x->stderr_b, c, clen);
            break;
        case REC_END:
            if (clen < 8) {
                xchg_stop(loop, x, FCR_EPROTO);
                return;
            }
            x->app_status =
                ((uint32_t)c[0] << 24) | ((uint32_t)c[1] << 16) | ((uint32_t)c[2] << 8) | c[3];
            x->protocol_status = c[4];
            xchg_stop(loop, x, 0);
            return;
        default:
            break;
        }
        x->in_off += total;
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    xchg *x = (xchg *)w;
    if ((revents & EV_WRITE) && !x->write_closed) {
        while (x->out_off < x->out.len) {
            ssize_t n = send(x->fd, x->out.p + x->out_off, x->out.len - x->out_off, MSG_NOSIGNAL);
            if (n > 0) {
                x->out_off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            x->write_closed = true; /* the application stopped reading: its answer may be in */
            break;
        }
        if (x->out_off == x->out.len || x->write_closed) {
            ev_io_stop(loop, &x->io);
            ev_io_set(&x->io, x->fd, EV_READ);
            ev_io_start(loop, &x->io);
        }
    }
    if (revents & EV_READ) {
        unsigned char chunk[16384];
        for (;;) {
            ssize_t n = recv(x->fd, chunk, sizeof chunk, 0);
            if (n > 0) {
                buf_add(&x->in, chunk, (size_t)n);
                if (x->in.oom) {
                    xchg_stop(loop, x, FCR_ENOMEM);
                    return;
                }
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            parse_records(loop, x);
            if (!x->done)
                xchg_stop(loop, x, n == 0 ? FCR_EPROTO : FCR_EIO);
            return;
        }
        parse_records(loop, x);
        /* Drop consumed bytes now and then. */
        if (x->in_off > 65536) {
            memmove(x->in.p, x->in.p + x->in_off, x->in.len - x->in_off);
            x->in.len -= x->in_off;
            x->in_off = 0;
        }
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    xchg *x = (xchg *)((char *)w - offsetof(xchg, timer));
    xchg_stop(loop, x, FCR_ETIMEDOUT);
}

/* Splits the CGI answer into status, headers and body. */
static int parse_cgi(const buf *out, fcr_test_res *res)
{
    const char *p = out->p ? (const char *)out->p : "";
    size_t len = out->len;
    size_t i = 0;
    size_t cap = 0;
    res->status = 200;
    for (;;) {
        const char *nl = memchr(p + i, '\n', len - i);
        if (!nl)
            return FCR_EPROTO;
        size_t end = (size_t)(nl - p);
        size_t llen = end - i;
        if (llen && p[end - 1] == '\r')
            llen--;
        const char *line = p + i;
        i = end + 1;
        if (llen == 0)
            break;
        const char *colon = memchr(line, ':', llen);
        if (!colon)
            return FCR_EPROTO;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vlen = llen - nlen - 1;
        while (vlen && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        if (res->nheaders == cap) {
            cap = cap ? cap * 2 : 8;
            fcr_test_header *h = realloc(res->headers, cap * sizeof *h);
            if (!h)
                return FCR_ENOMEM;
            res->headers = h;
        }
        fcr_test_header *h = &res->headers[res->nheaders];
        h->name = strndup(line, nlen);
        h->value = strndup(v, vlen);
        if (!h->name || !h->value) {
            free(h->name);
            free(h->value);
            return FCR_ENOMEM;
        }
        res->nheaders++;
        if (nlen == 6 && strncasecmp(line, "Status", 6) == 0) {
            char *end;
            long st = strtol(h->value, &end, 10);
            if (end == h->value || st < 100 || st > 999 || (*end && *end != ' '))
                return FCR_EPROTO;
            res->status = (int)st;
        }
    }
    res->body_len = len - i;
    res->body = malloc(res->body_len + 1);
    if (!res->body)
        return FCR_ENOMEM;
    memcpy(res->body, p + i, res->body_len);
    res->body[res->body_len] = '\0';
    return 0;
}

/* Sends `t` on the connected socket `fd` and reads the answer, running `loop`. */
static int exchange(struct ev_loop *loop, int fd, const fcr_test_req *t, fcr_test_res *res)
{
    xchg x;
    memset(&x, 0, sizeof x);
    x.fd = fd;
    int rc = encode_request(t, &x.out);
    if (rc < 0)
        goto out;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        rc = FCR_EIO;
        goto out;
    }
    ev_io_init(&x.io, io_cb, fd, EV_READ | EV_WRITE);
    ev_timer_init(&x.timer, timer_cb, TEST_TIMEOUT, 0.);
    ev_io_start(loop, &x.io);
    ev_timer_start(loop, &x.timer);
    while (!x.done)
        ev_run(loop, 0);
    rc = x.error;
    if (rc == 0 && (x.stdout_b.oom || x.stderr_b.oom))
        rc = FCR_ENOMEM;
    res->app_status = x.app_status;
    res->protocol_status = x.protocol_status;
    res->err_len = x.stderr_b.len;
    res->err = x.stderr_b.p ? (char *)x.stderr_b.p : strdup("");
    x.stderr_b.p = NULL;
    if (!res->err && rc == 0)
        rc = FCR_ENOMEM;
    if (rc == 0 && x.protocol_status == 0)
        rc = parse_cgi(&x.stdout_b, res);
out:
    free(x.out.p);
    free(x.in.p);
    free(x.stdout_b.p);
    free(x.stderr_b.p);
    return rc;
}

int fcr_app_test(fcr_app *app, const fcr_test_req *req, fcr_test_res *res)
{
    if (!res)
        return FCR_EINVAL;
    memset(res, 0, sizeof *res);
    if (!app || !req)
        return FCR_EINVAL;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop)
        return FCR_ENOMEM;
    int err = 0;
    fcr_server *srv = fcr_app_server_new(app, loop, NULL, &err);
    if (!srv) {
        ev_loop_destroy(loop);
        return err;
    }
    int sv[2];
    int rc;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        rc = FCR_EIO;
    } else if ((rc = fcr_server_adopt(srv, sv[0])) < 0) {
        close(sv[1]);
    } else {
        rc = exchange(loop, sv[1], req, res);
        close(sv[1]);
    }
    fcr_server_free(srv);
    /* Let anything the server freed run its last callbacks. */
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
    return rc;
}

/* Connects to "unix:PATH" or "tcp:HOST:PORT" ("[v6]:PORT"). Returns the fd or a negative
 * error. */
static int connect_addr(const char *addr)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        const char *path = addr + 5;
        if (!*path || strlen(path) >= sizeof sa.sun_path)
            return FCR_EADDR;
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return FCR_EIO;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            close(fd);
            return FCR_EIO;
        }
        return fd;
    }
    if (strncmp(addr, "tcp:", 4) != 0)
        return FCR_EADDR;
    char host[256];
    const char *h = addr + 4;
    const char *port;
    if (*h == '[') {
        const char *e = strchr(h, ']');
        if (!e || e[1] != ':' || (size_t)(e - h - 1) >= sizeof host)
            return FCR_EADDR;
        memcpy(host, h + 1, (size_t)(e - h - 1));
        host[e - h - 1] = '\0';
        port = e + 2;
    } else {
        const char *c = strrchr(h, ':');
        if (!c || (size_t)(c - h) >= sizeof host)
            return FCR_EADDR;
        memcpy(host, h, (size_t)(c - h));
        host[c - h] = '\0';
        port = c + 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (!*port || getaddrinfo(host, port, &hints, &ai) != 0)
        return FCR_EADDR;
    int fd = FCR_EIO;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (s < 0)
            continue;
        if (connect(s, a->ai_addr, a->ai_addrlen) == 0) {
            fd = s;
            break;
        }
        close(s);
    }
    freeaddrinfo(ai);
    return fd;
}

int fcr_test_send(const char *addr, const fcr_test_req *req, fcr_test_res *res)
{
    if (!res)
        return FCR_EINVAL;
    memset(res, 0, sizeof *res);
    if (!addr || !req)
        return FCR_EINVAL;
    int fd = connect_addr(addr);
    if (fd < 0)
        return fd;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        close(fd);
        return FCR_ENOMEM;
    }
    int rc = exchange(loop, fd, req, res);
    close(fd);
    ev_loop_destroy(loop);
    return rc;
}

const char *fcr_test_res_header(const fcr_test_res *res, const char *name)
{
    if (!res || !name)
        return NULL;
    for (size_t i = 0; i < res->nheaders; i++) {
        if (strcasecmp(res->headers[i].name, name) == 0)
            return res->headers[i].value;
    }
    return NULL;
}

void fcr_test_res_free(fcr_test_res *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->nheaders; i++) {
        free(res->headers[i].name);
        free(res->headers[i].value);
    }
    free(res->headers);
    free(res->body);
    free(res->err);
    memset(res, 0, sizeof *res);
}
