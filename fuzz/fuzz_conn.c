/* libFuzzer target for a whole connection: the server with the framework, fed through a
 * socketpair.
 *
 * The app has a synchronous route, an asynchronous one (answered from a zero timer), one that
 * answers 200 KiB (more than the output queue holds), a guarded route, a JSON route, a FILTER
 * handler, an AUTHORIZER, a before- and an after-middleware. The input is a program of
 * operations (one byte each, then its operands): FastCGI records of every type (BEGIN with any
 * role and flags, PARAMS with valid pairs or raw bytes, STDIN, DATA, ABORT_REQUEST, GET_VALUES,
 * unknown types, whole requests), raw bytes, writes of a given size, loop iterations and a
 * half-close. The target plays the web server: it writes what the program says, runs the
 * server's loop, and reads everything the server writes. At the end it aborts every request it
 * began (unless it half-closed), runs the loop until nothing moves, closes its end and frees
 * the server.
 *
 * Checked (abort() on a breach):
 *   - the output is well-formed records: version 1, a type the application side may send,
 *     content padded to a multiple of 8, END_REQUEST and UNKNOWN_TYPE bodies of 8 bytes,
 *     management answers on id 0 and request records on other ids;
 *   - per request id: no record unless a BEGIN_REQUEST for it was sent and not yet answered
 *     by END_REQUEST (so nothing after END_REQUEST), one empty STDOUT record before an
 *     END_REQUEST with status REQUEST_COMPLETE when STDOUT was used, nothing on a stream after
 *     its empty record, at most one empty STDERR record, STDOUT that starts with "Status: ",
 *     and protocol statuses 0..3 (a refusal comes with no output);
 *   - management answers in the order asked: UNKNOWN_TYPE naming the type that was sent, or a
 *     GET_VALUES_RESULT for a GET_VALUES;
 *   - when the server did not close the connection: exactly one END_REQUEST per BEGIN_REQUEST
 *     sent, and an UNKNOWN_TYPE for every unknown management record; after a half-close the
 *     server closes its side; it cuts a record short only when it tears the connection down
 *     (our half-close, a protocol error);
 *   - the loop comes to rest (no endless work), no more requests in progress than the
 *     per-connection cap, and the memory allocated while the connection lives stays under a
 *     cap (the allocator's count of live bytes).
 */
#include <fcrest.h>

#include "core/fcgi.h"

#include <ev.h>
#include <sanitizer/allocator_interface.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REQS_PER_CONN 4
#define BIG_ANSWER        (200u * 1024u)
#define MEMORY_CAP        (32u * 1024u * 1024u)
#define MAX_ITERATIONS    200000

static void fail(const char *what, unsigned a, unsigned b)
{
    fprintf(stderr, "fuzz_conn: %s (%u, %u)\n", what, a, b);
    abort();
}

#define must(cond, what, a, b)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail(what, (unsigned)(a), (unsigned)(b));                                              \
    } while (0)

/* ==== The app ============================================================================= */

static unsigned pending_timers;
static char big_body[BIG_ANSWER];

typedef struct later {
    ev_timer t;
    fcr_res *res;
    bool big;
} later;

static void later_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    later *l = (later *)t;
    if (l->big)
        fcr_res_set_body(l->res, big_body, sizeof big_body);
    else
        fcr_res_set_text(l->res, 200, "later");
    fcr_res_send(l->res); /* FCR_ECLOSED after an abort: released all the same */
    free(l);
    pending_timers--;
}

static fcr_handler_result h_sync(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    size_t len;
    fcr_req_body(req, FCR_STDIN, &len);
    const char *q = fcr_req_query(req, "q");
    fcr_res_printf(res, "sync %zu %s %s", len, q ? q : "-",
                   fcr_req_path_param(req, "x") ? "x" : "");
    return FCR_DONE;
}

static fcr_handler_result h_async(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    later *l = malloc(sizeof *l);
    if (!l)
        return (fcr_handler_result)FCR_ENOMEM;
    l->res = res;
    l->big = fcr_req_query(req, "big") != NULL;
    ev_timer_init(&l->t, later_cb, 0., 0.);
    ev_timer_start(fcr_req_loop(req), &l->t);
    pending_timers++;
    return FCR_ASYNC;
}

static fcr_handler_result h_big(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    for (size_t off = 0; off < sizeof big_body; off += 65536) {
        size_t n = sizeof big_body - off < 65536 ? sizeof big_body - off : 65536;
        int rc = fcr_res_append(res, big_body + off, n);
        if (rc < 0)
            return (fcr_handler_result)rc;
    }
    return FCR_DONE;
}

static fcr_handler_result h_json(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    json_t *j = fcr_req_parse_json(req, res);
    if (!j)
        return FCR_DONE; /* `res` holds the problem */
    return (fcr_handler_result)fcr_res_set_json(res, 200, j);
}

static fcr_auth_result token_check(fcr_req *req, fcr_res *res, fcr_auth *auth, void *data)
{
    (void)data;
    const char *t = fcr_req_header(req, "X-Token");
    if (t && strcmp(t, "good") == 0) {
        fcr_auth_set_user(auth, "USER", "alice");
        fcr_auth_set_var(auth, "ROLE", "admin");
        return FCR_ALLOW;
    }
    fcr_res_set_problem(res, 401, "no token");
    return FCR_DENY;
}

static fcr_handler_result h_filter(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    size_t len;
    const char *p = fcr_req_data(req, &len);
    uint64_t declared = 0;
    fcr_req_data_length(req, &declared);
    char *copy = fcr_req_alloc(req, len + 1);
    if (!copy)
        return (fcr_handler_result)FCR_ENOMEM;
    for (size_t i = 0; i < len; i++)
        copy[i] = p[i] >= 'a' && p[i] <= 'z' ? (char)(p[i] - 32) : p[i];
    fcr_res_add_header(res, "X-Declared", declared == len ? "yes" : "no");
    return (fcr_handler_result)fcr_res_set_body(res, copy, len);
}

static fcr_before_result before(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    if (fcr_req_query(req, "stop")) {
        fcr_res_set_text(res, 418, "stopped");
        return FCR_STOP;
    }
    return FCR_CONTINUE;
}

static int after(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    if (fcr_req_query(req, "fail"))
        return FCR_EINVAL;
    return fcr_res_set_header(res, "X-After", "1");
}

static struct ev_loop *loop;
static fcr_app *app;
static bool verbose; /* FCR_FUZZ_VERBOSE=1: a summary line per input */
static fcr_server_config base;

static void init(void)
{
    for (size_t i = 0; i < sizeof big_body; i++)
        big_body[i] = (char)('a' + i % 26);
    verbose = getenv("FCR_FUZZ_VERBOSE") != NULL;
    fcr_log_set_level(verbose ? FCR_LOG_DEBUG : -1); /* quiet: malformed input would log */
    loop = ev_loop_new(EVFLAG_AUTO);
    app = fcr_app_new();
    if (!loop || !app)
        abort();
    fcr_app_route(app, FCR_GET | FCR_POST, "/sync", h_sync, NULL);
    fcr_app_route(app, FCR_GET | FCR_POST, "/async", h_async, NULL);
    fcr_app_route(app, FCR_GET, "/big", h_big, NULL);
    fcr_app_route(app, FCR_POST | FCR_PUT, "/json", h_json, NULL);
    fcr_route *g = fcr_app_route(app, FCR_GET, "/guarded/(?<x>[a-z]+)", h_sync, NULL);
    fcr_route_guard(g, token_check, NULL);
    fcr_app_set_authorizer(app, token_check, NULL);
    fcr_app_set_filter(app, h_filter, NULL);
    fcr_app_before(app, before, NULL);
    fcr_app_after(app, after, NULL);
    fcr_app_set_max_body(app, 4096);
    if (fcr_app_error(app))
        abort();
    fcr_server_config_init(&base);
    base.limits.max_reqs_per_conn = MAX_REQS_PER_CONN;
    base.limits.max_params = 32;
    base.limits.max_params_bytes = 8192;
    base.limits.max_name_len = 256;
    base.limits.max_value_len = 4096;
    base.limits.max_body = 65536;
    base.limits.max_output_queue = 65552;
    base.web_server_addrs = "";
}

/* ==== Input =============================================================================== */

typedef struct input {
    const uint8_t *p;
    size_t len, off;
} input;

static bool more(const input *in)
{
    return in->off < in->len;
}

static uint8_t byte(input *in)
{
    return in->off < in->len ? in->p[in->off++] : 0;
}

static uint16_t u16(input *in)
{
    uint16_t hi = byte(in);
    return (uint16_t)(hi << 8 | byte(in));
}

/* Up to `n` bytes of the input (fewer at its end). */
static const uint8_t *bytes(input *in, size_t *n)
{
    const uint8_t *p = in->p + in->off;
    if (*n > in->len - in->off)
        *n = in->len - in->off;
    in->off += *n;
    return p;
}

/* ==== Byte buffers ======================================================================== */

typedef struct buf {
    uint8_t *d;
    size_t len, cap, off;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->d, cap);
        if (!d)
            abort();
        b->d = d;
        b->cap = cap;
    }
    if (n)
        memcpy(b->d + b->len, p, n);
    b->len += n;
}

static void put_byte(buf *b, uint8_t c)
{
    put(b, &c, 1);
}

static void record(buf *b, uint8_t type, uint16_t id, const void *content, size_t len, uint8_t pad)
{
    uint8_t h[8] = {1,   type, (uint8_t)(id >> 8), (uint8_t)id, (uint8_t)(len >> 8), (uint8_t)len,
                    pad, 0};
    put(b, h, 8);
    put(b, content, len);
    static const uint8_t zeros[256];
    put(b, zeros, pad);
}

static void nv_len(buf *b, size_t n, bool four)
{
    if (n < 128 && !four) {
        put_byte(b, (uint8_t)n);
    } else {
        uint8_t l[4] = {(uint8_t)(0x80 | (n >> 24)), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                        (uint8_t)n};
        put(b, l, 4);
    }
}

static void nv(buf *b, const char *name, const void *value, size_t vlen, bool four)
{
    nv_len(b, strlen(name), four);
    nv_len(b, vlen, four);
    put(b, name, strlen(name));
    put(b, value, vlen);
}

/* ==== What the server must do: the web server's side of the protocol ====================== */

typedef struct session {
    bool out_data, out_end, err_data, err_end;
} session;

/* Expected management answers, in order: UNKNOWN_TYPE(type), or a GET_VALUES_RESULT (which a
 * GET_VALUES naming nothing known does not get). */
#define MGMT_GV 0x100

typedef struct conn_state {
    fcr_server *srv;
    int fd;
    buf tx;         /* bytes to send; tx.off of them were sent */
    buf rx;         /* bytes received and not parsed yet */
    bool half;      /* we shut our side down */
    bool closed;    /* the server closed (EOF or reset) */
    bool violation; /* the server was sent a protocol error (it may close) */
    /* The stream as the server parses it, fed with the bytes sent. */
    uint8_t hdr[8];
    size_t hhave, cleft, pleft;
    uint8_t ctype;
    uint16_t cid;
    size_t clen;
    /* Per id: BEGIN_REQUEST records the server got, END_REQUEST records it sent. */
    uint32_t begun[65536];
    uint32_t ended[65536];
    session ses[65536];
    uint16_t ids[4096]; /* ids begun (for the final aborts), deduplicated */
    size_t nids;
    bool ids_overflow;
    uint16_t mgmt[4096];
    size_t mhead, mtail;
    bool mgmt_overflow;
    size_t peak;
} conn_state;

static conn_state cs;

static void note_id(uint16_t id)
{
    if (cs.begun[id] != 1)
        return;
    if (cs.nids < sizeof cs.ids / sizeof cs.ids[0])
        cs.ids[cs.nids++] = id;
    else
        cs.ids_overflow = true;
}

static void expect_mgmt(uint16_t what)
{
    if (cs.mtail < sizeof cs.mgmt / sizeof cs.mgmt[0])
        cs.mgmt[cs.mtail++] = what;
    else
        cs.mgmt_overflow = true;
}

/* A whole record reached the server (its header, content and padding). */
static void model_record(void)
{
    uint8_t type = cs.ctype;
    uint16_t id = cs.cid;
    if (id == 0) {
        if (type == FCGI_BEGIN_REQUEST || type == FCGI_ABORT_REQUEST || type == FCGI_PARAMS ||
            type == FCGI_STDIN || type == FCGI_DATA)
            return; /* request types on id 0 are skipped */
        expect_mgmt(type == FCGI_GET_VALUES ? MGMT_GV : type);
        return;
    }
    if (type == FCGI_BEGIN_REQUEST) {
        cs.begun[id]++;
        note_id(id);
    }
}

/* Follows the record framing of the bytes sent, as the server's parser does. */
static void model_feed(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n && !cs.violation;) {
        if (cs.hhave < 8) {
            cs.hdr[cs.hhave++] = p[i++];
            if (cs.hhave < 8)
                continue;
            cs.ctype = cs.hdr[1];
            cs.cid = (uint16_t)(cs.hdr[2] << 8 | cs.hdr[3]);
            cs.clen = (size_t)(cs.hdr[4] << 8 | cs.hdr[5]);
            cs.cleft = cs.clen;
            cs.pleft = cs.hdr[6];
            if (cs.hdr[0] != 1 || (cs.ctype == FCGI_BEGIN_REQUEST && cs.clen != 8)) {
                cs.violation = true;
                return;
            }
        } else {
            size_t take = cs.cleft > 0 ? cs.cleft : cs.pleft;
            if (take > n - i)
                take = n - i;
            if (cs.cleft > 0)
                cs.cleft -= take;
            else
                cs.pleft -= take;
            i += take;
        }
        if (cs.hhave == 8 && cs.cleft == 0 && cs.pleft == 0) {
            model_record();
            cs.hhave = 0;
        }
    }
}

/* Bytes that complete the record the stream stops in (zeros), so that what follows is read
 * as records of its own. Everything before was sent. */
static void complete_record(void)
{
    static const uint8_t zeros[65535 + 255 + 8];
    if (cs.violation || cs.hhave == 0)
        return;
    if (cs.hhave < 8) {
        uint8_t h[8] = {0};
        memcpy(h, cs.hdr, cs.hhave);
        put(&cs.tx, zeros, 8 - cs.hhave);
        size_t clen = (size_t)(h[4] << 8 | h[5]);
        if (h[0] != 1 || (h[1] == FCGI_BEGIN_REQUEST && clen != 8))
            return; /* the server closes at this header */
        put(&cs.tx, zeros, clen + h[6]);
        return;
    }
    put(&cs.tx, zeros, cs.cleft + cs.pleft);
}

/* ---- the server's output ------------------------------------------------------------------ */

static void check_record(const uint8_t *h, const uint8_t *c)
{
    uint8_t type = h[1];
    uint16_t id = (uint16_t)(h[2] << 8 | h[3]);
    size_t clen = (size_t)(h[4] << 8 | h[5]);
    size_t plen = h[6];
    must(h[0] == 1, "output record version", h[0], type);
    must((clen + plen) % 8 == 0, "output record not padded to 8", clen, plen);
    if (type == FCGI_GET_VALUES_RESULT || type == FCGI_UNKNOWN_TYPE) {
        must(id == 0, "management answer on a request id", type, id);
        if (type == FCGI_UNKNOWN_TYPE)
            must(clen == 8, "UNKNOWN_TYPE body length", clen, 0);
        /* Pop the expected answers: a GET_VALUES may have got none. */
        for (;;) {
            must(cs.mhead < cs.mtail || cs.mgmt_overflow, "management answer nobody asked for",
                 type, c[0]);
            if (cs.mhead == cs.mtail)
                break;
            uint16_t e = cs.mgmt[cs.mhead++];
            if (type == FCGI_GET_VALUES_RESULT && e == MGMT_GV)
                break;
            if (type == FCGI_UNKNOWN_TYPE && e == c[0])
                break;
            must(e == MGMT_GV, "management answers out of order", type, e);
        }
        return;
    }
    must(type == FCGI_STDOUT || type == FCGI_STDERR || type == FCGI_END_REQUEST,
         "output record type", type, id);
    must(id != 0, "request record on id 0", type, 0);
    must(cs.begun[id] > cs.ended[id], "record for a request id that is not active", type, id);
    session *s = &cs.ses[id];
    if (type == FCGI_STDOUT) {
        must(!s->out_end, "STDOUT after its empty record", id, clen);
        if (clen == 0) {
            s->out_end = true;
        } else {
            /* The answer starts with its Status header. */
            if (!s->out_data) {
                size_t n = clen < 8 ? clen : 8;
                must(memcmp(c, "Status: ", n) == 0, "STDOUT does not start with Status", id, c[0]);
            }
            s->out_data = true;
        }
    } else if (type == FCGI_STDERR) {
        must(!s->err_end, "STDERR after its empty record", id, clen);
        if (clen == 0)
            s->err_end = true;
        else
            s->err_data = true;
    } else {
        must(clen == 8, "END_REQUEST body length", clen, id);
        uint8_t status = c[4];
        must(status <= FCGI_UNKNOWN_ROLE, "END_REQUEST protocol status", status, id);
        if (status != FCGI_REQUEST_COMPLETE)
            must(!s->out_data && !s->out_end && !s->err_data && !s->err_end,
                 "a refused request had output", status, id);
        else if (s->out_data)
            must(s->out_end, "END_REQUEST before the empty STDOUT record", id, 0);
        if (s->err_data)
            must(s->err_end, "STDERR used but not ended", id, 0);
        cs.ended[id]++;
        memset(s, 0, sizeof *s);
    }
}

/* Reads what the server wrote; returns the bytes read. */
static size_t pull(void)
{
    size_t got = 0;
    while (!cs.closed) {
        uint8_t b[65536];
        ssize_t n = recv(cs.fd, b, sizeof b, MSG_DONTWAIT);
        if (n > 0) {
            put(&cs.rx, b, (size_t)n);
            got += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == EINTR)
            continue;
        cs.closed = true; /* EOF, or reset */
    }
    /* Whole records. */
    while (cs.rx.len - cs.rx.off >= 8) {
        const uint8_t *h = cs.rx.d + cs.rx.off;
        size_t total = 8 + (size_t)(h[4] << 8 | h[5]) + h[6];
        if (cs.rx.len - cs.rx.off < total)
            break;
        check_record(h, h + 8);
        cs.rx.off += total;
    }
    if (cs.rx.off == cs.rx.len)
        cs.rx.len = cs.rx.off = 0;
    if (cs.closed && cs.rx.len > cs.rx.off) {
        /* Output cut short: only when the connection was torn down, by our half-close or for
         * a protocol error, never at a close after END_REQUEST. */
        fcr_server_stats st;
        fcr_server_get_stats(cs.srv, &st);
        must(cs.half || st.protocol_errors > 0, "the server closed in the middle of a record",
             cs.rx.len - cs.rx.off, 0);
        cs.rx.len = cs.rx.off = 0;
    }
    return got;
}

/* Sends up to `max` pending bytes; returns the bytes sent. */
static size_t push(size_t max)
{
    size_t sent = 0;
    while (!cs.closed && !cs.half && cs.tx.off < cs.tx.len && sent < max) {
        size_t n = cs.tx.len - cs.tx.off;
        if (n > max - sent)
            n = max - sent;
        ssize_t w = send(cs.fd, cs.tx.d + cs.tx.off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            model_feed(cs.tx.d + cs.tx.off, (size_t)w);
            cs.tx.off += (size_t)w;
            sent += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* EPIPE / ECONNRESET: the server is gone; what it wrote may still be read. */
        cs.tx.off = cs.tx.len;
        break;
    }
    if (cs.tx.off == cs.tx.len)
        cs.tx.len = cs.tx.off = 0;
    return sent;
}

static void sample(fcr_server *srv, size_t baseline)
{
    fcr_server_stats st;
    fcr_server_get_stats(srv, &st);
    must(st.conns <= 1, "connections", st.conns, 1);
    must(st.active_reqs <= MAX_REQS_PER_CONN, "requests in progress past the cap", st.active_reqs,
         MAX_REQS_PER_CONN);
    size_t now = __sanitizer_get_current_allocated_bytes();
    size_t used = now > baseline ? now - baseline : 0;
    if (used > cs.peak)
        cs.peak = used;
    must(used < MEMORY_CAP, "memory past the cap", used >> 10, MEMORY_CAP >> 10);
}

/* One loop iteration with the I/O around it; returns whether anything moved. */
static bool step(fcr_server *srv, size_t baseline, size_t max_write)
{
    size_t moved = push(max_write);
    ev_run(loop, EVRUN_NOWAIT);
    moved += pull();
    sample(srv, baseline);
    return moved > 0;
}

/* Sends everything pending (reading all the while). */
static void send_all(fcr_server *srv, size_t baseline)
{
    for (unsigned i = 0; cs.tx.len > 0 && !cs.closed; i++) {
        must(i < MAX_ITERATIONS, "the server stopped reading", cs.tx.len, cs.tx.off);
        step(srv, baseline, SIZE_MAX);
    }
}

/* Runs until nothing moves for a few iterations and no timer of the app is pending. */
static void settle(fcr_server *srv, size_t baseline)
{
    unsigned still = 0;
    for (unsigned i = 0; still < 4 || pending_timers > 0; i++) {
        must(i < MAX_ITERATIONS, "the loop does not come to rest", pending_timers, cs.tx.len);
        still = step(srv, baseline, SIZE_MAX) ? 0 : still + 1;
    }
}

/* ==== Generating records ================================================================== */

static const char *const methods[] = {"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "get", ""};
static const char *const paths[] = {
    "/sync",       "/async", "/async?big=1", "/big",         "/json", "/guarded/ab",
    "/guarded/AB", "/nope",  "/sync?stop=1", "/sync?fail=1", "/",     "/sync/x"};
static const char *const names[] = {"REQUEST_METHOD", "SCRIPT_NAME",        "PATH_INFO",
                                    "QUERY_STRING",   "CONTENT_LENGTH",     "CONTENT_TYPE",
                                    "HTTP_X_TOKEN",   "REQUEST_URI",        "FCGI_DATA_LENGTH",
                                    "HTTP_COOKIE",    "FCGI_DATA_LAST_MOD", "REMOTE_PORT"};
static const char *const values[] = {"GET",  "POST", "/sync", "/async", "application/json",
                                     "good", "0",    "5",     "100000", "q=1&stop=1",
                                     "a=b",  "x",    "",      "/big",   "/json"};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static uint16_t pick_id(input *in)
{
    uint8_t b = byte(in);
    if (b & 0x80)
        return u16(in);
    return (uint16_t)(b % 4);
}

static void gen_params(input *in, buf *content)
{
    unsigned n = 1 + byte(in) % 4;
    for (unsigned k = 0; k < n; k++) {
        uint8_t sel = byte(in);
        const char *name = names[sel % N(names)];
        bool four = sel & 0x80;
        uint8_t v = byte(in);
        if (v & 0x80) {
            size_t len = v & 0x3f;
            const uint8_t *p = bytes(in, &len);
            nv(content, name, p, len, four);
        } else {
            const char *val = values[v % N(values)];
            nv(content, name, val, strlen(val), four);
        }
    }
}

/* A stream's bytes in records of `chunk` bytes, then (with `end`) its empty record. */
static void stream(buf *b, uint8_t type, uint16_t id, const uint8_t *p, size_t len, size_t chunk,
                   uint8_t pad, bool end)
{
    for (size_t off = 0; off < len; off += chunk)
        record(b, type, id, p + off, len - off < chunk ? len - off : chunk, pad);
    if (end)
        record(b, type, id, NULL, 0, pad);
}

/* A whole request as a web server sends it. */
static void gen_request(input *in)
{
    uint8_t sel = byte(in);
    uint16_t id = pick_id(in);
    uint16_t role = sel % 4 == 0 ? FCR_RESPONDER : sel % 4;
    uint8_t flags = (sel & 0x10) ? FCGI_KEEP_CONN : 0;
    static const size_t chunks[] = {65535, 1, 7, 100};
    size_t chunk = chunks[(sel >> 2) & 3];
    uint8_t pad = (uint8_t)((sel >> 5) & 7);
    size_t blen = byte(in) % 64;
    const uint8_t *body = bytes(in, &blen);
    buf p = {0};
    const char *path = paths[byte(in) % N(paths)];
    const char *method = methods[byte(in) % N(methods)];
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
    nv(&p, "REQUEST_METHOD", method, strlen(method), false);
    nv(&p, "SCRIPT_NAME", path, plen, false);
    nv(&p, "QUERY_STRING", q ? q + 1 : "", q ? strlen(q + 1) : 0, false);
    nv(&p, "REQUEST_URI", path, strlen(path), false);
    char cl[24];
    snprintf(cl, sizeof cl, "%zu", blen);
    if (!(sel & 0x80))
        nv(&p, "CONTENT_LENGTH", cl, strlen(cl), false);
    if (sel & 0x40)
        nv(&p, "HTTP_X_TOKEN", "good", 4, false);
    nv(&p, "CONTENT_TYPE", "application/json", 16, sel & 0x20);
    if (role == FCR_FILTER)
        nv(&p, "FCGI_DATA_LENGTH", cl, strlen(cl), false);
    uint8_t h[8] = {(uint8_t)(role >> 8), (uint8_t)role, flags, 0, 0, 0, 0, 0};
    record(&cs.tx, FCGI_BEGIN_REQUEST, id, h, 8, pad);
    stream(&cs.tx, FCGI_PARAMS, id, p.d, p.len, chunk, pad, true);
    if (role != FCR_AUTHORIZER)
        stream(&cs.tx, FCGI_STDIN, id, body, blen, chunk, pad, true);
    if (role == FCR_FILTER)
        stream(&cs.tx, FCGI_DATA, id, body, blen, chunk, pad, true);
    free(p.d);
}

static void gen_record(input *in)
{
    uint8_t sel = byte(in);
    uint16_t id = pick_id(in);
    uint8_t pad = byte(in);
    pad = (pad & 0x80) ? pad : pad % 8;
    buf c = {0};
    switch (sel % 12) {
    case 0: { /* BEGIN_REQUEST: any role, any flags */
        uint8_t r = byte(in);
        uint16_t role = (r & 0x80) ? u16(in) : (uint16_t)(r % 5);
        uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, byte(in), 0, 0, 0, 0, 0};
        record(&cs.tx, FCGI_BEGIN_REQUEST, id, body, 8, pad);
        break;
    }
    case 1: /* PARAMS: valid pairs */
        gen_params(in, &c);
        record(&cs.tx, FCGI_PARAMS, id, c.d, c.len, pad);
        break;
    case 2:   /* PARAMS: raw bytes (any encoding, valid or not) */
    case 4:   /* STDIN */
    case 6: { /* DATA */
        size_t n = byte(in);
        const uint8_t *p = bytes(in, &n);
        uint8_t type = sel % 12 == 2 ? FCGI_PARAMS : sel % 12 == 4 ? FCGI_STDIN : FCGI_DATA;
        record(&cs.tx, type, id, p, n, pad);
        break;
    }
    case 3:
        record(&cs.tx, FCGI_PARAMS, id, NULL, 0, pad);
        break;
    case 5:
        record(&cs.tx, FCGI_STDIN, id, NULL, 0, pad);
        break;
    case 7:
        record(&cs.tx, FCGI_DATA, id, NULL, 0, pad);
        break;
    case 8:
        record(&cs.tx, FCGI_ABORT_REQUEST, id, NULL, 0, pad);
        break;
    case 9: { /* GET_VALUES, usually on id 0 */
        static const char *const q[] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS",
                                        "OTHER"};
        unsigned n = byte(in) % 5;
        for (unsigned k = 0; k < n; k++)
            nv(&c, q[byte(in) % N(q)], "", 0, false);
        record(&cs.tx, FCGI_GET_VALUES, (sel & 0x40) ? id : 0, c.d, c.len, pad);
        break;
    }
    case 10: { /* any type, with any content */
        uint8_t type = byte(in);
        size_t n = byte(in) % 32;
        const uint8_t *p = bytes(in, &n);
        record(&cs.tx, type, (sel & 0x40) ? id : 0, p, n, pad);
        break;
    }
    default:
        gen_request(in);
        break;
    }
    free(c.d);
}

/* ==== One input =========================================================================== */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!app)
        init();
    memset(&cs, 0, sizeof cs);
    pending_timers = 0;
    size_t baseline = __sanitizer_get_current_allocated_bytes();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    int err = 0;
    fcr_server *srv = fcr_app_server_new(app, loop, &base, &err);
    if (!srv || fcr_server_adopt(srv, sv[0]) < 0)
        abort();
    cs.fd = sv[1];
    cs.srv = srv;

    input in = {data, size, 0};
    while (more(&in)) {
        uint8_t op = byte(&in);
        switch (op % 8) {
        case 0:
        case 1:
        case 2:
            gen_record(&in);
            break;
        case 3: { /* write some of what is pending */
            uint8_t n = byte(&in);
            step(srv, baseline, n ? (size_t)n * 37 : SIZE_MAX);
            break;
        }
        case 4: { /* loop iterations */
            unsigned n = 1 + byte(&in) % 4;
            for (unsigned k = 0; k < n; k++)
                step(srv, baseline, 0);
            break;
        }
        case 5: { /* raw bytes */
            size_t n = byte(&in) % 64;
            const uint8_t *p = bytes(&in, &n);
            put(&cs.tx, p, n);
            break;
        }
        case 6:
            gen_request(&in);
            break;
        default: /* half-close, after sending everything (rarely) */
            if ((byte(&in) & 7) == 0 && !cs.half) {
                while (cs.tx.len > 0 && !cs.closed)
                    step(srv, baseline, SIZE_MAX);
                shutdown(cs.fd, SHUT_WR);
                cs.half = true;
            }
            break;
        }
    }
    if (!cs.half) {
        /* Send what is pending and the end of the record the input stopped in (which may
         * begin a request), abort every request begun, and wait. */
        send_all(srv, baseline);
        complete_record();
        send_all(srv, baseline);
        for (size_t i = 0; i < cs.nids; i++)
            record(&cs.tx, FCGI_ABORT_REQUEST, cs.ids[i], NULL, 0, 0);
    }
    settle(srv, baseline);
    if (cs.half) {
        must(cs.closed, "the server kept a half-closed connection open", 0, 0);
    } else if (!cs.closed && !cs.ids_overflow) {
        must(cs.tx.len == 0, "the server stopped reading", cs.tx.len, cs.tx.off);
        for (size_t i = 0; i < cs.nids; i++) {
            uint16_t id = cs.ids[i];
            must(cs.ended[id] == cs.begun[id], "END_REQUEST count differs from BEGIN count",
                 cs.ended[id], cs.begun[id]);
        }
        for (size_t i = cs.mhead; i < cs.mtail; i++)
            must(cs.mgmt[i] == MGMT_GV, "unknown management type not answered", cs.mgmt[i], i);
    }
    if (verbose) {
        unsigned b = 0, e = 0;
        for (size_t i = 0; i < cs.nids; i++)
            b += cs.begun[cs.ids[i]], e += cs.ended[cs.ids[i]];
        fprintf(stderr,
                "fuzz_conn: %u begun, %u ended, %zu management asked, %zu answered%s%s%s; "
                "peak %zu KiB\n",
                b, e, cs.mtail, cs.mhead, cs.closed ? ", closed by the server" : "",
                cs.half ? ", half-closed" : "", cs.violation ? ", protocol error sent" : "",
                cs.peak >> 10);
    }
    close(cs.fd);
    /* The server notices the close; requests the app still holds finish. */
    fcr_server_stats st;
    for (unsigned i = 0;; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        fcr_server_get_stats(srv, &st);
        if (st.conns == 0 && pending_timers == 0)
            break;
        must(i < MAX_ITERATIONS, "the connection is not released after the peer closed", st.conns,
             pending_timers);
    }
    must(st.active_reqs == 0, "requests left after the connection closed", st.active_reqs, 0);
    fcr_server_free(srv);
    free(cs.tx.d);
    free(cs.rx.d);
    return 0;
}
