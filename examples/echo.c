/* echo: a FastCGI application that reports what it received. The conformance and integration
 * tests rely on its exact behaviour:
 *
 *   RESPONDER   Status: 200 OK, Content-Type: application/json, and the body
 *               {"role":"RESPONDER","params":{NAME:VALUE,...},"stdin_bytes":N,
 *                "stdin_fnv1a64":"<16 lowercase hex digits>"}
 *               (64-bit FNV-1a over the whole stdin). When QUERY_STRING contains "raw=1":
 *               Content-Type: application/octet-stream and the stdin bytes as the body.
 *   AUTHORIZER  HTTP_AUTHORIZATION equal to "Bearer good": Status: 200 OK with
 *               Variable-REMOTE_USER: alice and an empty body; otherwise 401 Unauthorized.
 *   FILTER      Status: 200 OK, X-Stdin-Bytes: N, X-Data-Bytes: M, the DATA stream as the body.
 *
 * A body over the limit (--max-body) is answered with 413 Payload Too Large.
 *
 * Usage: echo [--listen unix:PATH | --listen tcp:HOST:PORT]... [--max-body BYTES]
 *             [--grace SECONDS] [--log-level LEVEL]
 * Without --listen it serves the listening socket it inherited (fd 0, or systemd's LISTEN_FDS).
 *
 * Output goes through fcr_req_write(); when the connection's output queue is full (FCR_EAGAIN)
 * the reply waits for the drain callback and goes on from where it stopped, so a large reply
 * on a busy multiplexed connection still completes without holding up anyone else. */
#include <fcrest/core.h>

#include <ev.h>
#include <jansson.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Bytes handed to the core per write call; the core frames them into records itself. */
#define WRITE_CHUNK (256u * 1024u)

/* A reply in progress: an owned part (status, headers and, for JSON, the body) followed by an
 * optional borrowed part (the request's own STDIN or DATA buffer, valid until finish). */
typedef struct reply {
    fcr_req *req;
    char *own;
    size_t own_len, own_off;
    const uint8_t *ref;
    size_t ref_len, ref_off;
    bool pumping; /* inside reply_pump(): an abort there only sets `aborted` */
    bool aborted;
} reply;

static void reply_pump(reply *r);

static void reply_done(reply *r)
{
    fcr_req *req = r->req;
    fcr_req_on_drain(req, NULL);
    fcr_req_set_userdata(req, NULL);
    free(r->own);
    free(r);
    fcr_req_finish(req, 0);
}

static void on_drain(fcr_req *req)
{
    reply *r = fcr_req_userdata(req);
    if (r)
        reply_pump(r);
}

static void on_abort(fcr_req *req)
{
    reply *r = fcr_req_userdata(req);
    if (!r)
        return;
    if (r->pumping)
        r->aborted = true; /* reply_pump() notices it after its current write */
    else
        reply_done(r); /* waiting for a drain that will not come: release the request now */
}

/* Writes as much as the connection takes; finishes the request when everything is queued, or
 * when the request is gone (aborted, or a write failed for good). */
static void reply_pump(reply *r)
{
    r->pumping = true;
    for (;;) {
        if (r->aborted)
            break;
        int rc;
        size_t n;
        if (r->own_off < r->own_len) {
            n = r->own_len - r->own_off;
            if (n > WRITE_CHUNK)
                n = WRITE_CHUNK;
            rc = fcr_req_write(r->req, r->own + r->own_off, n);
            if (rc == 0)
                r->own_off += n;
        } else if (r->ref_off < r->ref_len) {
            n = r->ref_len - r->ref_off;
            if (n > WRITE_CHUNK)
                n = WRITE_CHUNK;
            /* Zero-copy: the request's buffered body stays valid until fcr_req_finish(). */
            rc = fcr_req_write_ref(r->req, r->ref + r->ref_off, n, NULL, NULL);
            if (rc == 0)
                r->ref_off += n;
        } else {
            break; /* all queued */
        }
        if (rc == FCR_EAGAIN) {
            r->pumping = false;
            if (r->aborted)
                break;
            fcr_req_on_drain(r->req, on_drain);
            return;
        }
        if (rc < 0)
            break; /* FCR_ECLOSED or FCR_ENOMEM: nothing more can be sent */
    }
    r->pumping = false;
    reply_done(r);
}

/* Starts a reply that takes over `own` (malloc'd, `own_len` bytes) and borrows `ref`. */
static void reply_start(fcr_req *req, char *own, size_t own_len, const void *ref, size_t ref_len)
{
    reply *r = calloc(1, sizeof *r);
    if (!r) {
        free(own);
        fcr_req_finish(req, 1);
        return;
    }
    r->req = req;
    r->own = own;
    r->own_len = own_len;
    r->ref = ref;
    r->ref_len = ref_len;
    fcr_req_set_userdata(req, r);
    fcr_req_on_abort(req, on_abort);
    reply_pump(r);
}

/* Formats the owned part of a reply. */
static void reply_printf(fcr_req *req, const void *ref, size_t ref_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reply_printf(fcr_req *req, const void *ref, size_t ref_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fcr_req_finish(req, 1);
        return;
    }
    reply_start(req, s, (size_t)n, ref, ref_len);
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3u;
    }
    return h;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or 0 when the byte at p does not start one. */
static size_t utf8_seq_len(const uint8_t *p, size_t avail)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (avail < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* JSON strings must be valid UTF-8, but param names and values are arbitrary bytes. Our choice:
 * each byte that does not start a well-formed UTF-8 sequence is replaced by U+FFFD (the
 * replacement character, EF BF BD) and decoding resumes at the next byte; well-formed
 * sequences, NUL included (written as \u0000), are kept as they are. Returns a malloc'd copy
 * in `*out` (NULL when `p` is already valid) and its length. */
static int utf8_sanitize(const char *p, size_t n, char **out, size_t *out_len)
{
    const uint8_t *s = (const uint8_t *)p;
    *out = NULL;
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_seq_len(s + i, n - i);
        if (l == 0)
            break;
        i += l;
    }
    if (i == n)
        return 0;
    if (n > (SIZE_MAX - 1) / 3)
        return -1;
    char *d = malloc(n * 3 + 1); /* at worst every byte becomes three */
    if (!d)
        return -1;
    size_t o = 0;
    for (i = 0; i < n;) {
        size_t l = utf8_seq_len(s + i, n - i);
        if (l == 0) {
            memcpy(d + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(d + o, s + i, l);
            o += l;
            i += l;
        }
    }
    d[o] = '\0';
    *out = d;
    *out_len = o;
    return 0;
}

/* Adds name: value to `obj`, both sanitized. Two names that differ only in invalid bytes map
 * to the same key; the later one wins. */
static int json_set_bytes(json_t *obj, const char *name, size_t nlen, const char *value,
                          size_t vlen)
{
    char *n2, *v2;
    size_t n2len = nlen, v2len = vlen;
    if (utf8_sanitize(name, nlen, &n2, &n2len) < 0)
        return -1;
    if (utf8_sanitize(value, vlen, &v2, &v2len) < 0) {
        free(n2);
        return -1;
    }
    json_t *v = json_stringn(v2 ? v2 : value, v2len);
    int rc = v ? json_object_setn_new(obj, n2 ? n2 : name, n2len, v) : -1;
    free(n2);
    free(v2);
    return rc;
}

static void respond_json(fcr_req *req)
{
    size_t in_len;
    const uint8_t *in = fcr_req_body(req, FCR_STDIN, &in_len);
    char hash[17];
    snprintf(hash, sizeof hash, "%016" PRIx64, fnv1a64(in, in_len));

    json_t *root = json_object();
    json_t *params = json_object();
    int rc = (root && params) ? 0 : -1;
    if (rc == 0)
        rc = json_object_set_new(root, "role", json_string("RESPONDER"));
    if (rc == 0) {
        rc = json_object_set(root, "params", params);
        size_t count = fcr_req_param_count(req);
        for (size_t i = 0; rc == 0 && i < count; i++) {
            const char *name, *value;
            size_t nlen, vlen;
            if (fcr_req_param_at(req, i, &name, &nlen, &value, &vlen) == 0)
                rc = json_set_bytes(params, name, nlen, value, vlen);
        }
    }
    if (rc == 0)
        rc = json_object_set_new(root, "stdin_bytes", json_integer((json_int_t)in_len));
    if (rc == 0)
        rc = json_object_set_new(root, "stdin_fnv1a64", json_string(hash));
    char *body = rc == 0 ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(params);
    json_decref(root);
    if (!body) {
        reply_printf(req, NULL, 0,
                     "Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
                     "out of memory\n");
        return;
    }
    reply_printf(req, NULL, 0, "Status: 200 OK\r\nContent-Type: application/json\r\n\r\n%s", body);
    free(body);
}

static void respond_raw(fcr_req *req)
{
    size_t in_len;
    const void *in = fcr_req_body(req, FCR_STDIN, &in_len);
    reply_printf(req, in, in_len,
                 "Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n");
}

static void respond_authorizer(fcr_req *req)
{
    static const char good[] = "Bearer good";
    size_t len;
    const char *auth = fcr_req_paramn(req, "HTTP_AUTHORIZATION", 18, &len);
    if (auth && len == sizeof good - 1 && memcmp(auth, good, len) == 0)
        reply_printf(req, NULL, 0, "Status: 200 OK\r\nVariable-REMOTE_USER: alice\r\n\r\n");
    else
        reply_printf(req, NULL, 0,
                     "Status: 401 Unauthorized\r\nContent-Type: text/plain\r\n"
                     "WWW-Authenticate: Bearer\r\n\r\nunauthorized\n");
}

static void respond_filter(fcr_req *req)
{
    size_t in_len, data_len;
    (void)fcr_req_body(req, FCR_STDIN, &in_len);
    const void *data = fcr_req_body(req, FCR_DATA, &data_len);
    reply_printf(req, data, data_len,
                 "Status: 200 OK\r\nX-Stdin-Bytes: %zu\r\nX-Data-Bytes: %zu\r\n\r\n", in_len,
                 data_len);
}

static bool query_has_raw(fcr_req *req)
{
    size_t len;
    const char *q = fcr_req_paramn(req, "QUERY_STRING", 12, &len);
    return q && memmem(q, len, "raw=1", 5) != NULL;
}

static void on_request(fcr_req *req, void *data)
{
    (void)data;
    int err = fcr_req_input_error(req);
    if (err == FCR_ECLOSED) {
        fcr_req_finish(req, 0);
        return;
    }
    if (err == FCR_ETOOBIG) {
        reply_printf(req, NULL, 0,
                     "Status: 413 Payload Too Large\r\nContent-Type: text/plain\r\n\r\n"
                     "request body too large\n");
        return;
    }
    switch (fcr_req_role(req)) {
    case FCR_RESPONDER:
        if (query_has_raw(req))
            respond_raw(req);
        else
            respond_json(req);
        break;
    case FCR_AUTHORIZER:
        respond_authorizer(req);
        break;
    case FCR_FILTER:
        respond_filter(req);
        break;
    default:
        fcr_req_finish(req, 1);
        break;
    }
}

/* 500 concurrent connections need more descriptors than the usual soft limit of 1024. */
static void raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fcr_log(FCR_LOG_WARN, "setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    }
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--listen ADDR]... [--max-body BYTES] [--grace SECONDS]\n"
            "          [--log-level LEVEL]\n"
            "A FastCGI application that echoes what it receives (Responder, Authorizer and\n"
            "Filter roles; requests multiplexed).\n"
            "  --listen ADDR      unix:PATH or tcp:HOST:PORT (repeatable); without it the\n"
            "                     inherited listening socket (fd 0 or LISTEN_FDS) is served\n"
            "  --max-body BYTES   largest STDIN or DATA body accepted (default 64 MiB)\n"
            "  --grace SECONDS    time in-flight requests get after SIGTERM (default 10)\n"
            "  --log-level LEVEL  error, warn, info or debug (default info)\n"
            "  --help             show this text\n",
            prog);
}

static bool parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v == 0 || v > SIZE_MAX)
        return false;
    *out = (size_t)v;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'}, {"max-body", required_argument, NULL, 'b'},
        {"grace", required_argument, NULL, 'g'},  {"log-level", required_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char **listen = calloc((size_t)argc + 1, sizeof *listen);
    size_t nlisten = 0;
    size_t max_body = 64u * 1024u * 1024u;
    double grace = 10;
    int c;
    if (!listen)
        return 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen[nlisten++] = optarg;
            break;
        case 'b':
            if (!parse_size(optarg, &max_body)) {
                fprintf(stderr, "%s: bad --max-body: %s\n", argv[0], optarg);
                free(listen);
                return 2;
            }
            break;
        case 'g': {
            char *end;
            grace = strtod(optarg, &end);
            if (end == optarg || *end || !(grace >= 0)) {
                fprintf(stderr, "%s: bad --grace: %s\n", argv[0], optarg);
                free(listen);
                return 2;
            }
            break;
        }
        case 'v': {
            int level;
            if (fcr_log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "%s: bad --log-level: %s\n", argv[0], optarg);
                free(listen);
                return 2;
            }
            fcr_log_set_level(level);
            break;
        }
        case 'h':
            usage(stdout, argv[0]);
            free(listen);
            return 0;
        default:
            usage(stderr, argv[0]);
            free(listen);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument: %s\n", argv[0], argv[optind]);
        usage(stderr, argv[0]);
        free(listen);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    raise_nofile_limit();

    struct ev_loop *loop = ev_default_loop(0);
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.limits.max_body = max_body;
    cfg.roles = FCR_ALL_ROLES;
    cfg.multiplex = true;
    cfg.on_request = on_request;
    int err = 0;
    fcr_server *srv = fcr_server_new(loop, &cfg, &err);
    if (!srv) {
        fprintf(stderr, "%s: cannot create the server: %s\n", argv[0], fcr_strerror(err));
        free(listen);
        return 1;
    }
    int status = 0;
    for (size_t i = 0; i < nlisten && status == 0; i++) {
        err = fcr_server_listen(srv, listen[i]);
        if (err < 0) {
            fprintf(stderr, "%s: cannot listen on %s: %s%s%s\n", argv[0], listen[i],
                    fcr_strerror(err), err == FCR_EIO ? ": " : "",
                    err == FCR_EIO ? strerror(errno) : "");
            status = 1;
        }
    }
    if (status == 0 && nlisten == 0) {
        err = fcr_server_listen_inherited(srv);
        if (err <= 0) {
            fprintf(stderr, "%s: no --listen given and no inherited listening socket%s%s\n",
                    argv[0], err < 0 ? ": " : "", err < 0 ? fcr_strerror(err) : "");
            status = 1;
        }
    }
    free(listen);
    if (status == 0)
        status = fcr_server_run(srv, grace) == 0 ? 0 : 1;
    /* Requests still held (waiting for a drain) are aborted here and released by on_abort. */
    fcr_server_free(srv);
    ev_loop_destroy(loop);
    return status;
}
