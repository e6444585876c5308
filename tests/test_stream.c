/* Streamed bodies: request bodies read piece by piece by a route's handler (back-pressure, the
 * body limit, early answers, deferrals, aborts), and answers written as they are made (no
 * Content-Length, drain callbacks, HEAD, failures, a client that goes away). In process
 * (fcr_app_test) and over a real socket with the test client playing the web server. */
#include <check.h>
#include <ev.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fcrest.h>
#include <fcrest/testing.h>

#include "fcgi_client.h"
#include "server_thread.h"

static fcr_app *app;
static fcr_test_res res;

/* What the body fns saw, for the test to check. */
static struct {
    size_t pieces;    /* calls with a piece */
    size_t max_piece; /* largest piece */
    size_t bytes;     /* bytes of all pieces */
    int ends;         /* calls with the end */
    int gone;         /* calls with buf NULL */
    int gone_aborted; /* of those, with the request aborted */
    int live;         /* readers allocated and not freed */
} seen;

#define WAIT_FOR(cond, what)                                                                       \
    do {                                                                                           \
        double deadline_ = fcl_now() + 20;                                                         \
        while (!(cond)) {                                                                          \
            ck_assert_msg(fcl_now() < deadline_, "timed out waiting for %s", what);                \
            poll(NULL, 0, 1);                                                                      \
        }                                                                                          \
    } while (0)

/* FNV-1a over the bytes, continued from `h`. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211u;
    return h;
}

#define FNV0 14695981039346656037u

/* A body of `n` bytes that is not periodic in the record size. */
static unsigned char *make_body(size_t n)
{
    unsigned char *b = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(b);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        b[i] = (unsigned char)x;
    }
    return b;
}

/* ---- Readers ------------------------------------------------------------------------------ */

typedef enum mode {
    M_SUM,   /* answers {"bytes":N,"fnv":"..."} at the end */
    M_PAUSE, /* pauses after every piece; a timer resumes */
    M_EARLY, /* answers 200 after the first piece */
    M_MORE_AT_END /* asks for more at the end (a misuse) */,
    M_DEFER, /* defers the work of every 4th piece and of the end */
    M_ECHO,  /* streams each piece back */
} mode;

typedef struct reader {
    mode mode;
    size_t bytes;
    uint64_t h;
    unsigned n;
    ev_timer resume;
    fcr_req *req;
} reader;

static void reader_free(reader *r)
{
    if (r->req)
        ev_timer_stop(fcr_req_loop(r->req), &r->resume);
    free(r);
    seen.live--;
}

static fcr_handler_result answer_sum(fcr_res *res, const reader *r)
{
    char h[24];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)r->h);
    return fcr_res_set_json_new(res, 200,
                                json_pack("{s:I,s:s}", "bytes", (json_int_t)r->bytes, "fnv", h));
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    reader *r = w->data;
    fcr_req_resume_body(r->req);
}

static void work_nothing(void *data)
{
    reader *r = data;
    r->n++; /* touched on the pool thread; read on the loop after done */
}

static int done_piece(fcr_req *req, fcr_res *res, void *data)
{
    (void)res, (void)data;
    if (fcr_req_aborted(req)) {
        seen.gone_aborted++;
        return FCR_BODY_MORE; /* ignored: the request is released, then the body fn told */
    }
    return FCR_BODY_MORE;
}

static int done_end(fcr_req *req, fcr_res *res, void *data)
{
    reader *r = data;
    fcr_handler_result rc = fcr_req_aborted(req) ? FCR_DONE : answer_sum(res, r);
    reader_free(r);
    return rc;
}

static fcr_body_result on_piece(fcr_req *req, fcr_res *res, const void *buf, size_t len, void *data)
{
    reader *r = data;
    if (!buf) {
        seen.gone++;
        if (fcr_req_aborted(req))
            seen.gone_aborted++;
        reader_free(r);
        return FCR_BODY_ERROR; /* ignored */
    }
    if (len == 0) {
        seen.ends++;
        switch (r->mode) {
        case M_MORE_AT_END:
            reader_free(r);
            return FCR_BODY_MORE;
        case M_DEFER:
            ck_assert_int_eq(fcr_defer(req, res, work_nothing, done_end, r), 0);
            return FCR_BODY_ASYNC;
        case M_ECHO:
            reader_free(r);
            return FCR_BODY_DONE; /* ends the stream */
        default: {
            fcr_handler_result rc = answer_sum(res, r);
            reader_free(r);
            return (fcr_body_result)rc;
        }
        }
    }
    seen.pieces++;
    seen.bytes += len;
    if (len > seen.max_piece)
        seen.max_piece = len;
    r->bytes += len;
    r->h = fnv(r->h, buf, len);
    switch (r->mode) {
    case M_PAUSE:
        ev_timer_set(&r->resume, 0.001, 0.);
        ev_timer_start(fcr_req_loop(req), &r->resume);
        return FCR_BODY_PAUSE;
    case M_EARLY:
        fcr_res_set_text(res, 200, "enough");
        reader_free(r);
        return FCR_BODY_DONE;
    case M_DEFER:
        if (++r->n % 4 == 0) {
            ck_assert_int_eq(fcr_defer(req, res, work_nothing, done_piece, r), 0);
            return FCR_BODY_ASYNC;
        }
        return FCR_BODY_MORE;
    case M_ECHO: {
        int rc = fcr_res_stream_write(res, buf, len);
        ck_assert_msg(rc == 0 || rc == FCR_EAGAIN, "write: %d", rc);
        if (rc == FCR_EAGAIN) {
            /* The connection holds its queue: this test's echo waits by pausing, retrying the
             * piece is the reader's business; here the whole piece is queued anyway. */
            ck_abort_msg("queue full in a small echo");
        }
        return FCR_BODY_MORE;
    }
    default:
        return FCR_BODY_MORE;
    }
}

static fcr_handler_result read_handler(fcr_req *req, fcr_res *res, void *data)
{
    reader *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    seen.live++;
    r->mode = (mode)(intptr_t)data;
    r->h = FNV0;
    r->req = req;
    ev_timer_init(&r->resume, resume_cb, 0., 0.);
    r->resume.data = r;
    if (r->mode == M_ECHO)
        ck_assert_int_eq(fcr_res_stream_begin(res), 0);
    int rc = fcr_req_read_body(req, on_piece, r);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(fcr_req_read_body(req, on_piece, r), FCR_EINVAL); /* once */
    return FCR_ASYNC;
}

/* A streaming route whose handler answers without reading. */
static fcr_handler_result ignore_handler(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_text(res, 202, "not read");
}

/* A route that buffers: fcr_req_read_body is refused there. */
static fcr_handler_result buffered_handler(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    ck_assert_int_eq(fcr_req_read_body(req, on_piece, NULL), FCR_EINVAL);
    size_t n;
    fcr_req_body(req, FCR_STDIN, &n);
    return fcr_res_set_json_new(res, 200, json_pack("{s:I}", "bytes", (json_int_t)n));
}

/* A before-middleware that defers: pieces arrive while the chain waits. */
static void work_sleep(void *data)
{
    (void)data;
    usleep(20000);
}

static int done_continue(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)res, (void)data;
    return FCR_CONTINUE;
}

static fcr_before_result slow_before(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    ck_assert_int_eq(fcr_res_stream_begin(res), FCR_EINVAL); /* not before the handler */
    ck_assert_int_eq(fcr_defer(req, res, work_sleep, done_continue, NULL), 0);
    return FCR_BEFORE_ASYNC;
}

/* ---- Writers ------------------------------------------------------------------------------ */

typedef struct writer {
    size_t total, sent;
    int drains;
    bool fail_midway;
} writer;

static int writers_live;
static int writer_closed; /* writes that met FCR_ECLOSED */

/* Bytes i of every streamed answer: a pattern the test recomputes. */
static void pattern(unsigned char *p, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((off + i) * 7 + ((off + i) >> 16));
}

static void write_more(fcr_res *res, void *data)
{
    writer *w = data;
    unsigned char buf[65536];
    w->drains++;
    while (w->sent < w->total) {
        size_t n = w->total - w->sent < sizeof buf ? w->total - w->sent : sizeof buf;
        pattern(buf, w->sent, n);
        int rc = fcr_res_stream_write(res, buf, n);
        if (rc == FCR_EAGAIN) {
            ck_assert_int_eq(fcr_res_stream_on_drain(res, write_more, w), 0);
            return;
        }
        if (rc == FCR_ECLOSED) {
            writer_closed++;
            break;
        }
        ck_assert_int_eq(rc, 0);
        w->sent += n;
    }
    free(w);
    writers_live--;
    fcr_res_stream_end(res);
}

static fcr_handler_result stream_handler(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    const char *n = fcr_req_query(req, "n");
    writer *w = calloc(1, sizeof *w);
    ck_assert_ptr_nonnull(w);
    writers_live++;
    w->total = n ? strtoull(n, NULL, 10) : 0;
    ck_assert_int_eq(fcr_res_set_header(res, "Content-Type", "application/octet-stream"), 0);
    ck_assert_int_eq(fcr_res_append(res, "", 0), 0);
    ck_assert_int_eq(fcr_res_stream_begin(res), 0);
    ck_assert_int_eq(fcr_res_stream_begin(res), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_send(res), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_stream_on_drain(res, write_more, w), 0);
    return FCR_ASYNC;
}

/* Streams a JSON array of N rows and ends inside the handler: FCR_DONE ends the stream. */
static fcr_handler_result rows_handler(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    const char *q = fcr_req_query(req, "n");
    long n = q ? strtol(q, NULL, 10) : 0;
    fcr_res_set_header(res, "Content-Type", "application/json");
    fcr_res_append(res, "[", 1); /* what the answer held goes out first */
    ck_assert_int_eq(fcr_res_stream_begin(res), 0);
    for (long i = 0; i < n; i++) {
        char row[64];
        int len = snprintf(row, sizeof row, "%s{\"i\":%ld}", i ? "," : "", i);
        ck_assert_int_eq(fcr_res_stream_write(res, row, (size_t)len), 0);
    }
    ck_assert_int_eq(fcr_res_stream_write(res, "]", 1), 0);
    return FCR_DONE;
}

/* Ends the stream inside the handler, then returns FCR_ASYNC. */
static fcr_handler_result end_inside_handler(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    ck_assert_int_eq(fcr_res_stream_begin(res), 0);
    ck_assert_int_eq(fcr_res_stream_write(res, "abc", 3), 0);
    ck_assert_int_eq(fcr_res_stream_end(res), 0);
    ck_assert_int_eq(fcr_res_stream_end(res), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_stream_write(res, "x", 1), FCR_EINVAL);
    return FCR_ASYNC;
}

/* Fails after the head went out: the answer is cut short (app status 1). */
static fcr_handler_result fail_midway(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    ck_assert_int_eq(fcr_res_stream_begin(res), 0);
    ck_assert_int_eq(fcr_res_stream_write(res, "partial", 7), 0);
    return FCR_HANDLER_ERROR;
}

static int add_header_after(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_header(res, "X-After", "yes");
}

/* ---- Fixture ------------------------------------------------------------------------------ */

static fcr_route *limited; /* the streaming route with a small limit */

static void setup(void)
{
    memset(&seen, 0, sizeof seen);
    writers_live = 0;
    writer_closed = 0;
    app = fcr_app_new();
    ck_assert_ptr_nonnull(app);
    ck_assert_int_eq(fcr_app_after(app, add_header_after, NULL), 0);
    const struct {
        const char *path;
        mode m;
    } readers[] = {{"/sum", M_SUM},     {"/pause", M_PAUSE},      {"/early", M_EARLY},
                   {"/defer", M_DEFER}, {"/more", M_MORE_AT_END}, {"/echo", M_ECHO}};
    for (size_t i = 0; i < sizeof readers / sizeof *readers; i++) {
        fcr_route *r = fcr_app_route(app, FCR_POST, readers[i].path, read_handler,
                                     (void *)(intptr_t)readers[i].m);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(fcr_route_stream_body(r), 0);
        ck_assert_int_eq(fcr_route_set_max_body(r, 256u << 20), 0);
    }
    limited = fcr_app_route(app, FCR_POST, "/limited", read_handler, (void *)(intptr_t)M_SUM);
    ck_assert_int_eq(fcr_route_stream_body(limited), 0);
    ck_assert_int_eq(fcr_route_set_max_body(limited, 100000), 0);
    fcr_route *slow = fcr_app_route(app, FCR_POST, "/slow", read_handler, (void *)(intptr_t)M_SUM);
    ck_assert_int_eq(fcr_route_stream_body(slow), 0);
    ck_assert_int_eq(fcr_route_before(slow, slow_before, NULL), 0);
    fcr_route *ign = fcr_app_route(app, FCR_POST, "/ignore", ignore_handler, NULL);
    ck_assert_int_eq(fcr_route_stream_body(ign), 0);
    ck_assert_int_eq(fcr_route_set_max_body(ign, 256u << 20), 0);
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_POST, "/buffered", buffered_handler, NULL));
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/stream", stream_handler, NULL));
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/rows", rows_handler, NULL));
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/endin", end_inside_handler, NULL));
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/fail", fail_midway, NULL));
    ck_assert_int_eq(fcr_route_stream_body(NULL), FCR_EINVAL);
    memset(&res, 0, sizeof res);
}

static void teardown(void)
{
    fcr_test_res_free(&res);
    fcr_app_free(app);
    ck_assert_int_eq(seen.live, 0);
    ck_assert_int_eq(writers_live, 0);
}

static int post(const char *path, const void *body, size_t n, bool no_length)
{
    static const char *const json[] = {"Content-Type: application/octet-stream", NULL};
    fcr_test_req rq = {.method = "POST",
                       .path = path,
                       .headers = json,
                       .body = body,
                       .body_len = n,
                       .no_content_length = no_length};
    fcr_test_res_free(&res);
    return fcr_app_test(app, &rq, &res);
}

/* Checks that the answer is the sum of `body`. */
static void assert_sum(const unsigned char *body, size_t n)
{
    ck_assert_msg(res.status == 200, "status %d: %s", res.status, res.body);
    char want[128];
    snprintf(want, sizeof want, "{\"bytes\":%zu,\"fnv\":\"%016llx\"}", n,
             (unsigned long long)fnv(FNV0, body, n));
    ck_assert_str_eq(res.body, want);
}

/* ---- In process --------------------------------------------------------------------------- */

START_TEST(body_in_pieces)
{
    size_t n = 3u << 20;
    unsigned char *body = make_body(n);
    ck_assert_int_eq(post("/sum", body, n, false), 0);
    assert_sum(body, n);
    ck_assert_uint_gt(seen.pieces, 16); /* in records, not in one buffer */
    ck_assert_uint_le(seen.max_piece, 65535);
    ck_assert_uint_eq(seen.bytes, n);
    ck_assert_int_eq(seen.ends, 1);
    ck_assert_int_eq(seen.gone, 0);
    ck_assert_str_eq(fcr_test_res_header(&res, "X-After"), "yes");
    /* An empty body: only the end. */
    ck_assert_int_eq(post("/sum", "", 0, false), 0);
    assert_sum(body, 0);
    free(body);
}
END_TEST

START_TEST(body_paused_and_resumed)
{
    size_t n = 1u << 20;
    unsigned char *body = make_body(n);
    ck_assert_int_eq(post("/pause", body, n, false), 0);
    assert_sum(body, n);
    free(body);
}
END_TEST

START_TEST(body_over_limit_is_413)
{
    size_t n = 300000;
    unsigned char *body = make_body(n);
    /* Declared: refused before the handler runs. */
    ck_assert_int_eq(post("/limited", body, n, false), 0);
    ck_assert_int_eq(res.status, 413);
    ck_assert_uint_eq(seen.pieces, 0);
    ck_assert_int_eq(seen.live, 0);
    /* Not declared: counted as it arrives; the reader hears the body is gone. */
    ck_assert_int_eq(post("/limited", body, n, true), 0);
    ck_assert_int_eq(res.status, 413);
    ck_assert_ptr_nonnull(strstr(res.body, "100000"));
    ck_assert_int_eq(seen.gone, 1);
    ck_assert_uint_le(seen.bytes, 100000);
    /* Exactly the limit passes. */
    ck_assert_int_eq(post("/limited", body, 100000, true), 0);
    assert_sum(body, 100000);
    free(body);
}
END_TEST

START_TEST(body_answered_early)
{
    size_t n = 2u << 20;
    unsigned char *body = make_body(n);
    ck_assert_int_eq(post("/early", body, n, false), 0);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "enough");
    ck_assert_uint_eq(seen.pieces, 1);
    ck_assert_int_eq(seen.gone, 0);
    ck_assert_int_eq(seen.ends, 0);
    /* A handler that does not read at all. */
    ck_assert_int_eq(post("/ignore", body, n, false), 0);
    ck_assert_int_eq(res.status, 202);
    free(body);
}
END_TEST

START_TEST(body_with_deferrals)
{
    size_t n = 1u << 20;
    unsigned char *body = make_body(n);
    ck_assert_int_eq(post("/defer", body, n, false), 0);
    assert_sum(body, n);
    /* Pieces that came while a before-middleware's work ran were held, not lost. */
    ck_assert_int_eq(post("/slow", body, 50000, false), 0);
    assert_sum(body, 50000);
    free(body);
}
END_TEST

START_TEST(body_misuse)
{
    ck_assert_int_eq(post("/more", "abc", 3, false), 0);
    ck_assert_int_eq(res.status, 500);
    ck_assert_int_eq(post("/buffered", "abcd", 4, false), 0);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "{\"bytes\":4}");
    ck_assert_int_eq(fcr_req_read_body(NULL, on_piece, NULL), FCR_EINVAL);
    fcr_req_resume_body(NULL);
}
END_TEST

START_TEST(echo_while_reading)
{
    size_t n = 200000;
    unsigned char *body = make_body(n);
    ck_assert_int_eq(post("/echo", body, n, false), 0);
    ck_assert_int_eq(res.status, 200);
    ck_assert_ptr_null(fcr_test_res_header(&res, "Content-Length"));
    ck_assert_uint_eq(res.body_len, n);
    ck_assert_mem_eq(res.body, body, n);
    free(body);
}
END_TEST

static int get(const char *path, const char *method)
{
    fcr_test_req rq = {.method = method, .path = path};
    fcr_test_res_free(&res);
    return fcr_app_test(app, &rq, &res);
}

START_TEST(answer_streamed)
{
    ck_assert_int_eq(get("/stream?n=5000000", "GET"), 0);
    ck_assert_int_eq(res.status, 200);
    ck_assert_ptr_null(fcr_test_res_header(&res, "Content-Length"));
    ck_assert_str_eq(fcr_test_res_header(&res, "Content-Type"), "application/octet-stream");
    ck_assert_str_eq(fcr_test_res_header(&res, "X-After"), "yes"); /* after-middleware ran */
    ck_assert_uint_eq(res.body_len, 5000000);
    unsigned char *want = malloc(res.body_len);
    pattern(want, 0, res.body_len);
    ck_assert_mem_eq(res.body, want, res.body_len);
    free(want);
    ck_assert_uint_eq(res.app_status, 0);
    /* HEAD: the head only. */
    ck_assert_int_eq(get("/stream?n=100000", "HEAD"), 0);
    ck_assert_int_eq(res.status, 200);
    ck_assert_uint_eq(res.body_len, 0);
}
END_TEST

START_TEST(answer_rows_done_in_handler)
{
    ck_assert_int_eq(get("/rows?n=1000", "GET"), 0);
    ck_assert_int_eq(res.status, 200);
    json_error_t e;
    json_t *v = json_loadb(res.body, res.body_len, 0, &e);
    ck_assert_msg(v != NULL, "not JSON: %s", e.text);
    ck_assert_uint_eq(json_array_size(v), 1000);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(v, 999), "i")), 999);
    json_decref(v);
    ck_assert_int_eq(get("/endin", "GET"), 0);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "abc");
}
END_TEST

START_TEST(answer_failing_midway)
{
    ck_assert_int_eq(get("/fail", "GET"), 0);
    ck_assert_int_eq(res.status, 200); /* the head was out */
    ck_assert_str_eq(res.body, "partial");
    ck_assert_uint_eq(res.app_status, 1);
    ck_assert_ptr_nonnull(strstr(res.err, "handler failed"));
}
END_TEST

/* ---- Over a real socket -------------------------------------------------------------------- */

static void put_post(fcl_buf *b, uint16_t id, const char *path, size_t declared)
{
    char len[32];
    snprintf(len, sizeof len, "%zu", declared);
    fcl_buf nv;
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "POST");
    fcl_nv_adds(&nv, "SCRIPT_NAME", path);
    fcl_nv_adds(&nv, "CONTENT_LENGTH", len);
    fcl_put_begin(b, id, 1, 1);
    fcl_put_stream(b, 4, id, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_buf_free(&nv);
}

START_TEST(abort_while_reading)
{
    server_thread t;
    server_start(&t, app, NULL);
    fcl_conn *c = fcl_connect(t.addr, 0);
    ck_assert_ptr_nonnull(c);
    unsigned char *body = make_body(300000);
    fcl_buf b;
    fcl_buf_init(&b);
    put_post(&b, 1, "/pause", 1000000);
    fcl_put_stream(&b, 5, 1, body, 300000, 0, FCL_PAD8, false);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    WAIT_FOR(__atomic_load_n(&seen.pieces, __ATOMIC_SEQ_CST) >= 2, "pieces");
    fcl_buf_clear(&b);
    fcl_put_abort(&b, 1);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    ck_assert_uint_eq(r.out.len, 0); /* nothing was answered */
    fcl_response_free(&r);
    WAIT_FOR(__atomic_load_n(&seen.gone_aborted, __ATOMIC_SEQ_CST) == 1, "the gone call");
    /* The connection goes on: the next request on it is served. */
    fcl_buf_clear(&b);
    put_post(&b, 2, "/sum", 10);
    fcl_put_stream(&b, 5, 2, "0123456789", 10, 0, FCL_PAD8, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response_init(&r, 2);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    ck_assert_ptr_nonnull(memmem(cgi.body, cgi.body_len, "\"bytes\":10", 10));
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    /* A client that closes the connection in the middle of a body. */
    size_t before = __atomic_load_n(&seen.bytes, __ATOMIC_SEQ_CST);
    fcl_buf_clear(&b);
    put_post(&b, 3, "/sum", 1000000);
    fcl_put_stream(&b, 5, 3, body, 100000, 0, FCL_PAD8, false);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    WAIT_FOR(__atomic_load_n(&seen.bytes, __ATOMIC_SEQ_CST) >= before + 65535, "pieces");
    fcl_close(c);
    server_wait_idle(&t);
    WAIT_FOR(__atomic_load_n(&seen.live, __ATOMIC_SEQ_CST) == 0, "the readers freed");
    ck_assert_int_eq(seen.gone, 2);
    fcl_buf_free(&b);
    free(body);
    server_stop(&t);
}
END_TEST

START_TEST(stream_to_a_client_that_leaves)
{
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.limits.max_output_queue = 256 * 1024;
    server_thread t;
    server_start(&t, app, &cfg);
    /* A small receive buffer: the queue fills and the writer waits for drains. */
    fcl_conn *c = fcl_connect(t.addr, 16384);
    ck_assert_ptr_nonnull(c);
    fcl_buf b;
    fcl_buf_init(&b);
    const char *params[] = {"REQUEST_METHOD", "GET",          "SCRIPT_NAME", "/stream",
                            "QUERY_STRING",   "n=1000000000", NULL};
    fcl_put_request(&b, 1, 1, 1, params, NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_record rec;
    ck_assert_int_eq(fcl_read_record(c, &rec), 1); /* the head came */
    fcl_record_free(&rec);
    /* The server keeps at most its queue for this client: it waits, it does not buffer 1 GB. */
    poll(NULL, 0, 200);
    ck_assert_int_eq(writers_live, 1);
    fcl_close(c);
    WAIT_FOR(__atomic_load_n(&writers_live, __ATOMIC_SEQ_CST) == 0, "the writer ended");
    ck_assert_int_eq(writer_closed, 1);
    server_wait_idle(&t);
    fcl_buf_free(&b);
    server_stop(&t);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("in process");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, body_in_pieces);
    tcase_add_test(tc, body_paused_and_resumed);
    tcase_add_test(tc, body_over_limit_is_413);
    tcase_add_test(tc, body_answered_early);
    tcase_add_test(tc, body_with_deferrals);
    tcase_add_test(tc, body_misuse);
    tcase_add_test(tc, echo_while_reading);
    tcase_add_test(tc, answer_streamed);
    tcase_add_test(tc, answer_rows_done_in_handler);
    tcase_add_test(tc, answer_failing_midway);
    suite_add_tcase(s, tc);
    TCase *net = tcase_create("socket");
    tcase_add_checked_fixture(net, setup, teardown);
    tcase_set_timeout(net, 120);
    tcase_add_test(net, abort_while_reading);
    tcase_add_test(net, stream_to_a_client_that_leaves);
    suite_add_tcase(s, net);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
