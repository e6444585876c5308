/* In-process testing: requests encoded as FastCGI records, sent over a socketpair to a server
 * on a private loop (or over a socket to a running application), the answer parsed back.
 *
 * The harness uses the public API of the library it runs against, plus the core's pure helpers
 * (record and name-value codec, byte buffers), whose sources libfcrest-testing compiles into
 * itself: the shared library exports none of its internal fcr__ functions. */
#include <fcrest/testing.h>

#include "core/fcgi.h"
#include "core/addr.h"
#include "core/mem.h"

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

/* ---- Encoding ------------------------------------------------------------------------- */

/* A byte buffer whose first failure sticks, so that an encoder writes on and checks once. */
typedef struct out {
    fcr__buf b;
    bool oom;
} out;

static void put(out *o, const void *p, size_t n)
{
    if (!o->oom && fcr__buf_append(&o->b, NULL, p, n) < 0)
        o->oom = true;
}

static void put_record(out *o, uint8_t type, const void *content, size_t len)
{
    static const uint8_t zeros[8];
    uint8_t h[FCGI_HEADER_LEN];
    uint8_t pad = fcr__padding_for(len);
    fcr__header_encode(h, type, 1, (uint16_t)len, pad);
    put(o, h, sizeof h);
    put(o, content, len);
    put(o, zeros, pad);
}

/* A stream in records of at most 65535 bytes, then its empty record. */
static void put_stream(out *o, uint8_t type, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        size_t n = len > FCGI_MAX_CONTENT ? FCGI_MAX_CONTENT : len;
        put_record(o, type, p, n);
        p += n;
        len -= n;
    }
    put_record(o, type, NULL, 0);
}

static void nv_add(out *o, const char *name, size_t nlen, const char *value, size_t vlen)
{
    size_t size = fcr__nv_size(nlen, vlen);
    if (nlen > 0x7fffffff || vlen > 0x7fffffff || o->oom ||
        fcr__buf_reserve(&o->b, NULL, o->b.len + size, 256, SIZE_MAX) < 0) {
        o->oom = true;
        return;
    }
    o->b.len += fcr__nv_encode(o->b.p + o->b.len, name, nlen, value, vlen);
}

static void nv_adds(out *o, const char *name, const char *value)
{
    nv_add(o, name, strlen(name), value, strlen(value));
}

/* Encodes the whole request. Returns 0 or FCR_EINVAL / FCR_ENOMEM. */
static int encode_request(const fcr_test_req *t, out *o)
{
    fcr_role role = t->role ? t->role : FCR_RESPONDER;
    if (role < FCR_RESPONDER || role > FCR_FILTER)
        return FCR_EINVAL;
    out nv = {0};
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
            fcr__buf_free(&nv.b);
            return FCR_EINVAL;
        }
        size_t nlen = (size_t)(colon - *h);
        char key[300];
        if (nlen > 250) {
            fcr__buf_free(&nv.b);
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
            fcr__buf_free(&nv.b);
            return FCR_EINVAL;
        }
        nv_add(&nv, *p, (size_t)(eq - *p), eq + 1, strlen(eq + 1));
    }
    uint8_t begin[8] = {0, (uint8_t)role, 0, 0, 0, 0, 0, 0};
    put_record(o, FCGI_BEGIN_REQUEST, begin, 8);
    put_stream(o, FCGI_PARAMS, nv.b.p, nv.b.len);
    put_stream(o, FCGI_STDIN, t->body, body_len);
    if (role == FCR_FILTER)
        put_stream(o, FCGI_DATA, t->data, t->data_len);
    bool oom = nv.oom || o->oom;
    fcr__buf_free(&nv.b);
    return oom ? FCR_ENOMEM : 0;
}

/* ---- Exchange on a loop --------------------------------------------------------------- */

typedef struct xchg {
    ev_io io;
    ev_timer timer;
    int fd;
    out out;
    size_t out_off;
    bool write_closed;
    out in;
    size_t in_off;
    out stdout_b, stderr_b;
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
    while (!x->done && x->in.b.len - x->in_off >= FCGI_HEADER_LEN) {
        fcr__fcgi_header h;
        fcr__header_decode(x->in.b.p + x->in_off, &h);
        size_t total = FCGI_HEADER_LEN + (size_t)h.content_len + h.padding_len;
        if (h.version != FCGI_VERSION_1) {
            xchg_stop(loop, x, FCR_EPROTO);
            return;
        }
        if (x->in.b.len - x->in_off < total)
            return;
        const uint8_t *c = x->in.b.p + x->in_off + FCGI_HEADER_LEN;
        switch (h.type) {
        case FCGI_STDOUT:
            put(&x->stdout_b, c, h.content_len);
            break;
        case FCGI_STDERR:
            put(&x->stderr_b, c, h.content_len);
            break;
        case FCGI_END_REQUEST:
            if (h.content_len < 8) {
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
        while (x->out_off < x->out.b.len) {
            ssize_t n =
                send(x->fd, x->out.b.p + x->out_off, x->out.b.len - x->out_off, MSG_NOSIGNAL);
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
        if (x->out_off == x->out.b.len || x->write_closed) {
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
                put(&x->in, chunk, (size_t)n);
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
            memmove(x->in.b.p, x->in.b.p + x->in_off, x->in.b.len - x->in_off);
            x->in.b.len -= x->in_off;
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
static int parse_cgi(const fcr__buf *out, fcr_test_res *res)
{
    const char *p = out->p ? (const char *)out->p : "";
    size_t len = out->len;
    size_t i = 0;
    fcr__vec headers = {0}; /* of fcr_test_header, handed to res->headers as it grows */
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
        fcr_test_header *h = fcr__vec_push(&headers, NULL, sizeof *h);
        if (!h)
            return FCR_ENOMEM;
        res->headers = headers.v;
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
        goto done;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        rc = FCR_EIO;
        goto done;
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
    res->err_len = x.stderr_b.b.len;
    res->err = x.stderr_b.b.p ? (char *)x.stderr_b.b.p : strdup("");
    x.stderr_b.b = (fcr__buf){0};
    if (!res->err && rc == 0)
        rc = FCR_ENOMEM;
    if (rc == 0 && x.protocol_status == 0)
        rc = parse_cgi(&x.stdout_b.b, res);
done:
    fcr__buf_free(&x.out.b);
    fcr__buf_free(&x.in.b);
    fcr__buf_free(&x.stdout_b.b);
    fcr__buf_free(&x.stderr_b.b);
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
    char host[256], port[8];
    if (fcr__hostport_split(addr + 4, host, sizeof host, port, sizeof port) < 0)
        return FCR_EADDR;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
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
