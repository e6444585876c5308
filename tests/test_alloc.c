/* Allocations per request on a kept connection, counted.
 *
 * This program defines malloc, calloc, realloc and free itself (forwarding to glibc's
 * __libc_* functions), so every heap allocation of the process goes through its counter:
 * the core's, the framework's, libev's, jansson's and libc's own. Each test warms a server up
 * on one kept connection (a socketpair), then counts the allocation calls (malloc, calloc,
 * realloc) made while N more requests are served; client and server run on this one thread,
 * and the client side allocates nothing while counting.
 *
 * Under AddressSanitizer the allocator is the sanitizer's and cannot be replaced, and valgrind
 * replaces the program's own: the counts are not taken there, and each test says so on its
 * output. */
#include <check.h>
#include <ev.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcrest.h>

#include "fcgi_client.h"

#if defined(__SANITIZE_ADDRESS__)
#define COUNTING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNTING 0
#endif
#endif
#ifndef COUNTING
#define COUNTING 1
#endif

/* ---- the counting allocator -------------------------------------------------------------- */

static bool counting;
static unsigned long n_allocs; /* malloc, calloc and realloc calls while counting */

#if COUNTING
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

void *malloc(size_t size)
{
    if (counting)
        n_allocs++;
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    if (counting)
        n_allocs++;
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    if (counting)
        n_allocs++;
    return __libc_realloc(p, size);
}

void free(void *p)
{
    __libc_free(p);
}
#endif

/* ---- one kept connection on this thread -------------------------------------------------- */

static struct ev_loop *loop;
static int client = -1;

/* Apache's params for a GET (as bench/fcgi_load sends them), on a kept connection. */
static void build_request(fcl_buf *b, const char *path, const char *method, const char *body)
{
    size_t blen = body ? strlen(body) : 0;
    char cl[24];
    snprintf(cl, sizeof cl, "%zu", blen);
    const char *const params[] = {"CONTEXT_DOCUMENT_ROOT",
                                  "/var/www/html",
                                  "GATEWAY_INTERFACE",
                                  "CGI/1.1",
                                  "HTTP_ACCEPT",
                                  "*/*",
                                  "HTTP_HOST",
                                  "127.0.0.1:8080",
                                  "HTTP_USER_AGENT",
                                  "fcgi_load/1.0",
                                  "HTTP_X_REQUEST_ID",
                                  "4f2a9c1e-8b3d-4e5f-a6b7-c8d9e0f1a2b3",
                                  "PATH",
                                  "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                  "QUERY_STRING",
                                  "a=1&b=two",
                                  "REMOTE_ADDR",
                                  "127.0.0.1",
                                  "REMOTE_PORT",
                                  "53172",
                                  "REQUEST_METHOD",
                                  method,
                                  "REQUEST_SCHEME",
                                  "http",
                                  "REQUEST_URI",
                                  path,
                                  "SCRIPT_NAME",
                                  path,
                                  "SERVER_ADDR",
                                  "127.0.0.1",
                                  "SERVER_NAME",
                                  "127.0.0.1",
                                  "SERVER_PORT",
                                  "8080",
                                  "SERVER_PROTOCOL",
                                  "HTTP/1.1",
                                  "SERVER_SOFTWARE",
                                  "Apache/2.4.57 (Debian)",
                                  "CONTENT_TYPE",
                                  body ? "application/json" : "",
                                  "CONTENT_LENGTH",
                                  body ? cl : "",
                                  NULL};
    fcl_put_request(b, 1, FCR_RESPONDER, FCGI_KEEP_CONN, params, body, blen, NULL, 0);
}

/* Sends `req` and runs the loop until its END_REQUEST came back. Allocates nothing itself.
 * Returns the STDOUT bytes received, or -1 (no answer within 10 s, or the server closed). */
static long exchange(const fcl_buf *req)
{
    static uint8_t rx[1 << 16];
    size_t sent = 0, have = 0, out = 0;
    double deadline = fcl_now() + 10;
    while (fcl_now() < deadline) {
        if (sent < req->len) {
            ssize_t w = send(client, req->data + sent, req->len - sent, MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
        }
        ev_run(loop, EVRUN_NOWAIT);
        ssize_t n = recv(client, rx + have, sizeof rx - have, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return -1;
        if (n > 0)
            have += (size_t)n;
        /* Whole records: STDOUT counted, END_REQUEST ends. */
        size_t off = 0;
        while (have - off >= FCGI_HEADER_LEN) {
            const uint8_t *h = rx + off;
            size_t clen = (size_t)h[4] << 8 | h[5];
            size_t total = FCGI_HEADER_LEN + clen + h[6];
            if (have - off < total)
                break;
            off += total;
            if (h[1] == FCGI_STDOUT)
                out += clen;
            if (h[1] == FCGI_END_REQUEST)
                return have == off ? (long)out : -1;
        }
        memmove(rx, rx + off, have - off);
        have -= off;
        if (have == sizeof rx)
            return -1;
    }
    return -1;
}

static void start(fcr_server *srv)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_eq(fcr_server_adopt(srv, sv[0]), 0);
    client = sv[1];
}

/* Serves WARMUP requests, then counts the allocation calls of N more. */
#define WARMUP 64
#define N      1000

typedef struct measured {
    unsigned long allocs;  /* in all, during the N requests */
    unsigned long handler; /* of them, in the application's handlers */
    bool counted;          /* false when this build or run cannot count */
} measured;

static unsigned long handler_allocs;

/* Whether calls to malloc reach the counter: not when the program runs under a tool that
 * replaces the allocator of the executable too (valgrind). */
static bool counter_works(void)
{
    static void *(*volatile alloc)(size_t) = malloc;
    n_allocs = 0;
    counting = true;
    void *p = alloc(16);
    counting = false;
    free(p);
    return n_allocs == 1;
}

static measured measure(const char *what, const fcl_buf *req, long want_out)
{
    for (int i = 0; i < WARMUP; i++)
        ck_assert_int_eq(exchange(req), want_out);
    handler_allocs = 0;
    n_allocs = 0;
    counting = true;
    long bad = 0;
    for (int i = 0; i < N; i++) {
        if (exchange(req) != want_out)
            bad++;
    }
    counting = false;
    measured m = {n_allocs, handler_allocs, false};
    ck_assert_int_eq(bad, 0);
    m.counted = COUNTING && counter_works();
    if (m.counted)
        fprintf(stderr,
                "%s: %lu allocations in %d requests on one kept connection (%lu in the handler)\n",
                what, m.allocs, N, m.handler);
    else if (!COUNTING)
        fprintf(stderr,
                "%s: %d requests served; allocations not counted under AddressSanitizer "
                "(its allocator cannot be replaced): skipped\n",
                what, N);
    else
        fprintf(stderr,
                "%s: %d requests served; allocations not counted: the tool this runs under "
                "(valgrind?) replaces malloc: skipped\n",
                what, N);
    return m;
}

static void stop(fcr_server *srv)
{
    close(client);
    client = -1;
    fcr_server_free(srv);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
}

static void teardown(void)
{
    ev_loop_destroy(loop);
}

/* ---- the core: examples/core_hello ------------------------------------------------------ */

static const char hello[] = "Status: 200 OK\r\n"
                            "Content-Type: text/plain\r\n"
                            "Content-Length: 13\r\n"
                            "\r\n"
                            "Hello, world!";

static void reply(fcr_req *req)
{
    fcr_req_write(req, hello, sizeof hello - 1);
    fcr_req_finish(req, 0);
}

static int on_chunk(fcr_req *req, fcr_stream stream, const void *buf, size_t len)
{
    (void)buf;
    if (len == 0 && stream == FCR_STDIN)
        reply(req);
    return 0;
}

static void on_abort(fcr_req *req)
{
    fcr_req_finish(req, 0);
}

static void stream_params(fcr_req *req, void *data)
{
    (void)data;
    fcr_req_stream_input(req, on_chunk);
}

static void stream_request(fcr_req *req, void *data)
{
    (void)data;
    fcr_req_on_abort(req, on_abort);
}

/* Buffered input: on_request gets the whole body and answers at once. */
static void buffered_request(fcr_req *req, void *data)
{
    (void)data;
    size_t len;
    fcr_req_body(req, FCR_STDIN, &len);
    fcr_req_printf(req, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n%zu %s", len,
                   fcr_req_method(req));
    fcr_req_finish(req, 0);
}

static fcr_server *core_server(bool streaming)
{
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.web_server_addrs = "";
    cfg.on_params = streaming ? stream_params : NULL;
    cfg.on_request = streaming ? stream_request : buffered_request;
    fcr_server *srv = fcr_server_new(loop, &cfg, NULL);
    ck_assert_ptr_nonnull(srv);
    start(srv);
    return srv;
}

START_TEST(core_hello_allocates_nothing_per_request)
{
    fcr_server *srv = core_server(true);
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/hello", "GET", NULL);
    measured m = measure("core_hello", &req, (long)(sizeof hello - 1));
    fcl_buf_free(&req);
    stop(srv);
    if (m.counted)
        ck_assert_uint_eq(m.allocs, 0);
}
END_TEST

/* A body is kept in a buffer of its own, which a released request keeps for the next one
 * when it is small (up to 16 KiB; a larger one is freed, so that a pooled request never holds
 * a large body): a small body allocates nothing on a kept connection. */
START_TEST(core_small_body_allocates_nothing_per_request)
{
    fcr_server *srv = core_server(false);
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/notes", "POST", "{\"title\": \"a note\", \"body\": \"some text\"}");
    static const char head[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    measured m = measure("core, buffered POST", &req, (long)(sizeof head - 1 + strlen("40 POST")));
    fcl_buf_free(&req);
    stop(srv);
    if (m.counted)
        ck_assert_uint_eq(m.allocs, 0);
}
END_TEST

/* The same request without a body: the buffered path allocates nothing either. */
START_TEST(core_buffered_get_allocates_nothing_per_request)
{
    fcr_server *srv = core_server(false);
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/notes", "GET", NULL);
    static const char head[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    measured m = measure("core, buffered GET", &req, (long)(sizeof head - 1 + strlen("0 GET")));
    fcl_buf_free(&req);
    stop(srv);
    if (m.counted)
        ck_assert_uint_eq(m.allocs, 0);
}
END_TEST

/* ---- the framework ---------------------------------------------------------------------- */

static fcr_handler_result h_hello(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_text(res, 200, "Hello, world!");
}

/* A small JSON object, built here (the handler's allocations) and answered by the framework. */
static fcr_handler_result h_json(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    unsigned long before = n_allocs;
    json_t *j = json_pack("{s:s, s:i, s:b}", "hello", "world", "n", 42, "ok", 1);
    handler_allocs += n_allocs - before;
    (void)req;
    return fcr_res_set_json_new(res, 200, j);
}

static fcr_handler_result h_echo(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    size_t len;
    const void *body = fcr_req_body(req, FCR_STDIN, &len);
    fcr_res_set_header(res, "Content-Type", "application/json");
    return fcr_res_set_body(res, body, len);
}

/* An answer of 8 KiB: past the request's arena, in a body the app keeps for the next one. */
static fcr_handler_result h_big(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    static char page[8192];
    if (!page[0])
        memset(page, 'x', sizeof page);
    fcr_res_set_header(res, "Content-Type", "text/plain");
    return fcr_res_set_body(res, page, sizeof page);
}

/* A JSON body parsed and answered: what a REST create handler does. */
static fcr_handler_result h_parse(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    json_t *j = fcr_req_parse_json(req, res);
    if (!j)
        return FCR_DONE;
    return fcr_res_set_json(res, 201, j);
}

static int after_mw(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_header(res, "X-Served-By", "fcrest");
}

static fcr_app *app;

static fcr_server *app_server(void)
{
    app = fcr_app_new();
    ck_assert_ptr_nonnull(app);
    fcr_app_route(app, FCR_GET, "/hello", h_hello, NULL);
    fcr_app_route(app, FCR_GET, "/json", h_json, NULL);
    fcr_app_route(app, FCR_POST, "/echo/(?<id>[0-9]+)", h_echo, NULL);
    fcr_app_route(app, FCR_POST, "/parse", h_parse, NULL);
    fcr_app_route(app, FCR_GET, "/big", h_big, NULL);
    fcr_app_after(app, after_mw, NULL);
    ck_assert_ptr_null(fcr_app_error(app));
    fcr_server_config cfg;
    fcr_server_config_init(&cfg);
    cfg.web_server_addrs = "";
    fcr_server *srv = fcr_app_server_new(app, loop, &cfg, NULL);
    ck_assert_ptr_nonnull(srv);
    start(srv);
    return srv;
}

/* The STDOUT length of the framework's answer to `req`, taken from one exchange before
 * counting. */
static long answer_len(const fcl_buf *req)
{
    long n = exchange(req);
    ck_assert_int_gt(n, 0);
    return n;
}

START_TEST(app_hello_allocates_nothing_per_request)
{
    fcr_server *srv = app_server();
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/hello", "GET", NULL);
    measured m = measure("app, GET /hello", &req, answer_len(&req));
    fcl_buf_free(&req);
    stop(srv);
    fcr_app_free(app);
    if (m.counted)
        ck_assert_uint_eq(m.allocs, 0);
}
END_TEST

/* Routing with a path param, a body answered back, a header and an after-middleware: nothing
 * (see core_small_body_allocates_nothing_per_request). */
START_TEST(app_post_allocates_nothing_per_request)
{
    fcr_server *srv = app_server();
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/echo/42", "POST", "{\"title\": \"a note\", \"body\": \"some text\"}");
    measured m = measure("app, POST /echo/42", &req, answer_len(&req));
    fcl_buf_free(&req);
    stop(srv);
    fcr_app_free(app);
    if (m.counted)
        ck_assert_uint_eq(m.allocs, 0);
}
END_TEST

/* A JSON answer allocates only the handler's jansson objects (json_pack: the object, its table,
 * each entry and each string, 8 with jansson 2.14): the framework writes the JSON text straight
 * into the response, in the request's arena when it fits. */
START_TEST(app_json_answer_allocates_nothing_besides_the_handlers_objects)
{
    fcr_server *srv = app_server();
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/json", "GET", NULL);
    measured m = measure("app, GET /json", &req, answer_len(&req));
    fcl_buf_free(&req);
    stop(srv);
    fcr_app_free(app);
    if (m.counted) {
        fprintf(stderr,
                "app, GET /json: %lu per answer in the framework, %lu in the handler's "
                "json_pack\n",
                (m.allocs - m.handler) / N, m.handler / N);
        ck_assert_uint_eq(m.allocs - m.handler, 0);
    }
}
END_TEST

/* An 8 KiB answer: its heap body is the one the previous answer left to the app. */
START_TEST(app_large_answer_allocates_nothing)
{
    fcr_server *srv = app_server();
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/big", "GET", NULL);
    measured m = measure("app, GET 8 KiB", &req, answer_len(&req));
    fcl_buf_free(&req);
    stop(srv);
    fcr_app_free(app);
    if (m.counted)
        ck_assert_uint_eq(m.allocs, 0);
}
END_TEST

/* The framework's own problem+json answers (here a 404) are written without jansson objects. */
START_TEST(app_problem_answer_allocates_nothing)
{
    fcr_server *srv = app_server();
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/no/such/resource", "GET", NULL);
    measured m = measure("app, GET 404", &req, answer_len(&req));
    fcl_buf_free(&req);
    stop(srv);
    fcr_app_free(app);
    if (m.counted)
        ck_assert_uint_eq(m.allocs, 0);
}
END_TEST

/* A JSON body parsed (fcr_req_parse_json) and answered: jansson's parse of {"title": "a note",
 * "body": "some text"} allocates 11 blocks with jansson 2.14 (its token buffer, the object and
 * its table, each member and each string); the framework adds nothing, to read the body or to
 * write the answer. */
#define PARSE_ALLOCS 11

START_TEST(app_json_body_parsed_and_answered)
{
    fcr_server *srv = app_server();
    fcl_buf req;
    fcl_buf_init(&req);
    build_request(&req, "/parse", "POST", "{\"title\": \"a note\", \"body\": \"some text\"}");
    measured m = measure("app, POST /parse", &req, answer_len(&req));
    fcl_buf_free(&req);
    stop(srv);
    fcr_app_free(app);
    if (m.counted) {
        fprintf(stderr, "app, POST /parse: %lu per request\n", m.allocs / N);
        ck_assert_uint_le(m.allocs, (unsigned long)PARSE_ALLOCS * N);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alloc");
    TCase *tc = tcase_create("alloc");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, core_hello_allocates_nothing_per_request);
    tcase_add_test(tc, core_buffered_get_allocates_nothing_per_request);
    tcase_add_test(tc, core_small_body_allocates_nothing_per_request);
    tcase_add_test(tc, app_hello_allocates_nothing_per_request);
    tcase_add_test(tc, app_post_allocates_nothing_per_request);
    tcase_add_test(tc, app_json_answer_allocates_nothing_besides_the_handlers_objects);
    tcase_add_test(tc, app_problem_answer_allocates_nothing);
    tcase_add_test(tc, app_large_answer_allocates_nothing);
    tcase_add_test(tc, app_json_body_parsed_and_answered);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
