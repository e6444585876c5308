/* Unit tests of the app layer: request and response helpers, header injection, body limits,
 * JSON errors, problem+json, middleware order, authorizers in both places, the FILTER role,
 * async handlers, HEAD, mounts, prefixes. Requests run in-process (fcr_app_test); the test
 * that shows a 413 comes before the body is sent drives a real socket with the test client. */
#include <check.h>
#include <ev.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcrest.h>
#include <fcrest/testing.h>

#include "fcgi_client.h"

/* The FILTER-role example, tested through the app like a web server would use it. */
#define main csv2json_main
#include "examples/csv2json.c"
#undef main

/* README's tutorial program. */
#define main tutorial_main
#include "examples/tutorial.c"
#undef main

static fcr_app *app;
static fcr_test_res res;
static char trace[512]; /* what callbacks ran, in order */

static void setup(void)
{
    app = fcr_app_new();
    ck_assert_ptr_nonnull(app);
    memset(&res, 0, sizeof res);
    trace[0] = '\0';
}

static void teardown(void)
{
    fcr_test_res_free(&res);
    fcr_app_free(app);
    app = NULL;
}

static void note(const char *fmt, ...)
{
    size_t n = strlen(trace);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(trace + n, sizeof trace - n, fmt, ap);
    va_end(ap);
}

/* Runs one request through the app; asserts the exchange worked. */
static void run(const fcr_test_req *t)
{
    fcr_test_res_free(&res);
    int rc = fcr_app_test(app, t, &res);
    ck_assert_msg(rc == 0, "fcr_app_test: %s", fcr_err_name(rc));
    ck_assert_int_eq(res.protocol_status, 0);
}

static void get(const char *path)
{
    run(&(fcr_test_req){.path = path});
}

static const char *hdr(const char *name)
{
    return fcr_test_res_header(&res, name);
}

static json_t *body_json(void)
{
    json_error_t e;
    json_t *j = json_loadb(res.body, res.body_len, 0, &e);
    ck_assert_msg(j != NULL, "body is not JSON: %s (%s)", e.text, res.body);
    return j;
}

/* Checks an RFC 9457 problem answer with `status`; returns its detail (static copy). */
static const char *check_problem(int status)
{
    static char detail[512];
    ck_assert_int_eq(res.status, status);
    ck_assert_str_eq(hdr("Content-Type"), "application/problem+json");
    json_t *j = body_json();
    ck_assert(json_is_string(json_object_get(j, "type")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "title")), fcr_status_reason(status));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), status);
    ck_assert(json_is_string(json_object_get(j, "detail")));
    snprintf(detail, sizeof detail, "%s", json_string_value(json_object_get(j, "detail")));
    json_decref(j);
    char cl[32];
    snprintf(cl, sizeof cl, "%zu", res.body_len);
    ck_assert_str_eq(hdr("Content-Length"), cl);
    return detail;
}

/* ---- JSON answers: the framework's writer against jansson's dump --------------------- */

static json_t *json_case; /* the value the handler answers */

static fcr_handler_result answer_case(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_json(r, 200, json_case);
}

START_TEST(json_answers_match_janssons_dump)
{
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/case", answer_case, NULL));
    static const double reals[] = {0.1,       -0.0, 1e300, 1e-7,      123456789.0, 1.5e20,
                                   -2.5e-300, 3.0,  1e21,  1.0 / 3.0, 5e-324,      1e16};
    json_t *cases = json_array();
    for (size_t i = 0; i < sizeof reals / sizeof *reals; i++)
        json_array_append_new(cases, json_real(reals[i]));
    json_array_append_new(cases, json_integer(INT64_MIN));
    json_array_append_new(cases, json_integer(INT64_MAX));
    json_array_append_new(cases, json_stringn("a\0b", 3));
    json_array_append_new(cases,
                          json_string("\x01\x1f\x7f \"\\/\b\f\n\r\t caf\xc3\xa9 \xf0\x9f\x98\x80"));
    json_array_append_new(
        cases, json_pack("{s:{s:[i,n,b,b]},s:{},s:[]}", "k\n\"", "x", 1, 1, 0, "e", "a"));
    json_array_append_new(cases, json_null());
    json_array_append_new(cases, json_deep_copy(cases)); /* the list again, one level down */
    for (size_t i = 0; i < json_array_size(cases) + 1; i++) {
        /* each value alone (JSON_ENCODE_ANY), then the whole array */
        json_case = i < json_array_size(cases) ? json_array_get(cases, i) : cases;
        char *want = json_dumps(json_case, JSON_COMPACT | JSON_ENCODE_ANY);
        ck_assert_ptr_nonnull(want);
        get("/case");
        ck_assert_int_eq(res.status, 200);
        ck_assert_uint_eq(res.body_len, strlen(want));
        ck_assert_mem_eq(res.body, want, res.body_len);
        free(want);
    }
    json_decref(cases);
    /* Nesting past the parser's depth, and a cycle, are refused: 500, not a crash. */
    json_t *deep = json_array(), *inner = deep;
    for (int i = 0; i < 3000; i++) {
        json_t *next = json_array();
        json_array_append_new(inner, next);
        inner = next;
    }
    json_case = deep;
    get("/case");
    ck_assert_int_eq(res.status, 500);
    json_decref(deep);
    json_t *a = json_array(), *b = json_array();
    json_array_append(a, b);
    json_array_append(b, a);
    json_case = a;
    get("/case");
    ck_assert_int_eq(res.status, 500);
    json_array_clear(b); /* break the cycle to free both */
    json_decref(a);
    json_decref(b);
}
END_TEST

/* ---- Request ids and log lines ----------------------------------------------------------- */

static void log_work(void *data)
{
    (void)data;
    fcr_log(FCR_LOG_WARN, "from the pool");
}

static int log_done(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    fcr_log(FCR_LOG_WARN, "in the done");
    return fcr_res_set_text(r, 200, fcr_req_request_id(req));
}

static fcr_handler_result id_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    fcr_log(FCR_LOG_WARN, "in the handler");
    if (fcr_req_query(req, "long")) { /* escapes that take the line past its buffer */
        char msg[5000];
        memset(msg, 1, sizeof msg - 1);
        msg[sizeof msg - 1] = '\0';
        fcr_log(FCR_LOG_WARN, "%s", msg);
    }
    if (fcr_req_query(req, "defer")) {
        ck_assert_int_eq(fcr_defer(req, r, log_work, log_done, NULL), 0);
        return FCR_ASYNC;
    }
    if (fcr_req_query(req, "own"))
        fcr_res_set_header(r, "X-Request-Id", "mine");
    return fcr_res_set_text(r, 200, fcr_req_request_id(req));
}

/* Runs `t` with stderr going to a file; returns what was written (static). */
static const char *logged(const fcr_test_req *t)
{
    static char text[16384];
    char path[] = "/tmp/fcr-log-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    run(t);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    return text;
}

START_TEST(request_ids_in_answers_and_log_lines)
{
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/log", id_handler, NULL));
    fcr_app_set_access_log(app, true);
    fcr_log_set_level(FCR_LOG_INFO);
    /* Made here: "PID-N", in the header, in the handler's line and in the access line. */
    const char *text = logged(&(fcr_test_req){.path = "/log"});
    char id[64];
    snprintf(id, sizeof id, "%s", res.body);
    char want[80];
    snprintf(want, sizeof want, "%ld-", (long)getpid());
    ck_assert_msg(strncmp(id, want, strlen(want)) == 0, "made id %s", id);
    ck_assert_str_eq(hdr("X-Request-Id"), id);
    char line[160];
    snprintf(line, sizeof line, "warn: in the handler id=%s\n", id);
    ck_assert_msg(strstr(text, line), "no '%s' in: %s", line, text);
    snprintf(line, sizeof line, "status=200 bytes=%zu ", strlen(id));
    ck_assert_msg(strstr(text, line), "no access line in: %s", text);
    snprintf(line, sizeof line, " id=%s\n", id);
    ck_assert_ptr_nonnull(strstr(strstr(text, "access method=GET"), line));
    /* The web server's id is used when it is usable: UNIQUE_ID first, then X-Request-Id. */
    run(&(fcr_test_req){.path = "/log",
                        .params = (const char *const[]){"UNIQUE_ID=Zx3k-abc@1", NULL},
                        .headers = (const char *const[]){"X-Request-Id: from-client", NULL}});
    ck_assert_str_eq(res.body, "Zx3k-abc@1");
    ck_assert_str_eq(hdr("X-Request-Id"), "Zx3k-abc@1");
    run(&(fcr_test_req){.path = "/log",
                        .headers = (const char *const[]){"X-Request-Id: from-client", NULL}});
    ck_assert_str_eq(hdr("X-Request-Id"), "from-client");
    run(&(fcr_test_req){.path = "/log",
                        .headers = (const char *const[]){"X-Request-Id: has space", NULL}});
    ck_assert_str_ne(hdr("X-Request-Id"), "has space");
    /* A handler's own header stays; the framework's answers carry the id too. */
    run(&(fcr_test_req){.path = "/log?own=1"});
    ck_assert_str_eq(hdr("X-Request-Id"), "mine");
    get("/nowhere");
    ck_assert_int_eq(res.status, 404);
    ck_assert_ptr_nonnull(hdr("X-Request-Id"));
    /* Lines from the pool's thread and from the done name the request too. */
    text = logged(&(fcr_test_req){.path = "/log?defer=1"});
    snprintf(id, sizeof id, "%s", res.body);
    snprintf(line, sizeof line, "warn: from the pool id=%s\n", id);
    ck_assert_msg(strstr(text, line), "no '%s' in: %s", line, text);
    snprintf(line, sizeof line, "warn: in the done id=%s\n", id);
    ck_assert_msg(strstr(text, line), "no '%s' in: %s", line, text);
    ck_assert_int_eq(fcr_log_format(), FCR_LOG_TEXT);
}
END_TEST

START_TEST(json_log_lines)
{
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/log", id_handler, NULL));
    fcr_app_set_access_log(app, true);
    fcr_log_set_level(FCR_LOG_INFO);
    int f = -1;
    ck_assert_int_eq(fcr_log_format_parse("JSON", &f), 0);
    ck_assert_int_eq(f, FCR_LOG_JSON);
    ck_assert_int_eq(fcr_log_format_parse("xml", &f), FCR_EINVAL);
    fcr_log_set_format(f);
    const char *text = logged(&(fcr_test_req){
        .path = "/log?long=1", .params = (const char *const[]){"UNIQUE_ID=u-1", NULL}});
    fcr_log_set_format(FCR_LOG_TEXT);
    int lines = 0, access = 0, handler = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        ck_assert_ptr_nonnull(nl);
        json_error_t e;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, &e);
        ck_assert_msg(j != NULL, "not a JSON line: %.*s (%s)", (int)(nl - p), p, e.text);
        lines++;
        ck_assert(json_is_string(json_object_get(j, "time")));
        ck_assert_int_eq(json_integer_value(json_object_get(j, "pid")), getpid());
        const char *msg = json_string_value(json_object_get(j, "msg"));
        ck_assert_ptr_nonnull(msg);
        if (!strcmp(msg, "in the handler")) {
            handler++;
            ck_assert_str_eq(json_string_value(json_object_get(j, "level")), "warn");
            ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), "u-1");
        } else if (!strcmp(msg, "access")) {
            access++;
            ck_assert_str_eq(json_string_value(json_object_get(j, "level")), "info");
            ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), "u-1");
            ck_assert_str_eq(json_string_value(json_object_get(j, "method")), "GET");
            ck_assert_str_eq(json_string_value(json_object_get(j, "path")), "/log");
            ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), 200);
            ck_assert_int_eq(json_integer_value(json_object_get(j, "bytes")), 3);
            ck_assert(json_is_real(json_object_get(j, "ms")));
            ck_assert(json_is_false(json_object_get(j, "aborted")));
        } else if (msg[0] == 1) { /* cut, but a whole object with the id */
            ck_assert_str_eq(json_string_value(json_object_get(j, "request_id")), "u-1");
        }
        json_decref(j);
        p = nl + 1;
    }
    ck_assert_int_eq(handler, 1);
    ck_assert_int_eq(access, 1);
    ck_assert_int_ge(lines, 2);
    /* A message that is not UTF-8 and holds control bytes still makes a JSON line. */
    char path[] = "/tmp/fcr-log-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    int saved = dup(2);
    dup2(fd, 2);
    fcr_log_set_format(FCR_LOG_JSON);
    fcr_log(FCR_LOG_ERROR, "bad \xff\xfe bytes \"quoted\" \x01 tab\t caf\xc3\xa9");
    fcr_log_set_format(FCR_LOG_TEXT);
    dup2(saved, 2);
    close(saved);
    char buf[512];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    ck_assert_int_gt(n, 0);
    json_error_t e;
    json_t *j = json_loadb(buf, (size_t)n, 0, &e);
    ck_assert_msg(j != NULL, "%s", e.text);
    ck_assert_str_eq(json_string_value(json_object_get(j, "msg")),
                     "bad \xef\xbf\xbd\xef\xbf\xbd bytes \"quoted\" \x01 tab\t caf\xc3\xa9");
    ck_assert_ptr_null(json_object_get(j, "request_id"));
    json_decref(j);
}
END_TEST

/* ---- CORS -------------------------------------------------------------------------------- */

static fcr_handler_result cors_item(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    note("handler;");
    fcr_res_set_header(r, "Vary", "Accept");
    return fcr_res_set_text(r, 200, "item");
}

static fcr_before_result cors_guard(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)r, (void)data;
    note("before;");
    return FCR_CONTINUE;
}

/* A request with `origin` (NULL: none) and the extra headers (NULL-terminated, may be NULL). */
static void cors_run(const char *method, const char *path, const char *origin, const char *h1,
                     const char *h2)
{
    char o[256];
    snprintf(o, sizeof o, "Origin: %s", origin ? origin : "");
    const char *headers[] = {origin ? o : h1, origin ? h1 : h2, origin ? h2 : NULL, NULL};
    trace[0] = '\0';
    run(&(fcr_test_req){.method = method, .path = path, .headers = headers});
}

static fcr_cors *policy(void)
{
    fcr_cors *c = fcr_cors_new();
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(fcr_cors_add_origin(c, "https://app.example.com"), 0);
    ck_assert_int_eq(fcr_cors_add_origin(c, "https://*.example.org"), 0);
    ck_assert_int_eq(fcr_cors_add_header(c, "Authorization, Content-Type"), 0);
    ck_assert_int_eq(fcr_cors_add_exposed_header(c, "ETag"), 0);
    ck_assert_int_eq(fcr_cors_add_exposed_header(c, "Location, X-Request-Id"), 0);
    ck_assert_int_eq(fcr_cors_set_credentials(c, true), 0);
    ck_assert_int_eq(fcr_cors_set_max_age(c, 600), 0);
    return c;
}

START_TEST(cors_policy)
{
    fcr_cors *c = fcr_cors_new();
    const char *bad[] = {"",          "example.com", "https://a.com/path", "https://", "https://*",
                         "1http://a", "https://a b", "https://*.",         NULL};
    for (const char **b = bad; *b; b++)
        ck_assert_msg(fcr_cors_add_origin(c, *b) == FCR_EINVAL, "%s taken", *b);
    ck_assert_int_eq(fcr_cors_add_header(c, ""), FCR_EINVAL);
    ck_assert_int_eq(fcr_cors_add_header(c, "X-Ok, bad header"), FCR_EINVAL);
    ck_assert_int_eq(fcr_cors_set_max_age(c, 86401), FCR_EINVAL);
    ck_assert_int_eq(fcr_cors_set_methods(c, 1u << 20), FCR_EINVAL);
    ck_assert_int_eq(fcr_cors_add_origin(c, "*"), 0);
    ck_assert_int_eq(fcr_cors_set_credentials(c, true), 0);
    ck_assert_int_eq(fcr_app_set_cors(app, c), FCR_EINVAL); /* "*" with credentials; freed */
    ck_assert_int_eq(fcr_app_set_cors(NULL, NULL), FCR_EINVAL);
    /* "*" alone: any origin, answered with "*". */
    c = fcr_cors_new();
    ck_assert_int_eq(fcr_cors_add_origin(c, "*"), 0);
    ck_assert_int_eq(fcr_app_set_cors(app, c), 0);
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/items", cors_item, NULL));
    cors_run("GET", "/items", "https://anything.test:8443", NULL, NULL);
    ck_assert_str_eq(hdr("Access-Control-Allow-Origin"), "*");
    ck_assert_ptr_null(hdr("Access-Control-Allow-Credentials"));
}
END_TEST

START_TEST(cors_preflight_and_answers)
{
    ck_assert_int_eq(fcr_app_set_cors(app, policy()), 0);
    fcr_route *r = fcr_app_route(app, FCR_GET | FCR_POST, "/items", cors_item, NULL);
    ck_assert_int_eq(fcr_route_before(r, cors_guard, NULL), 0);
    fcr_app_route(app, FCR_DELETE, "/items", cors_item, NULL);
    /* An allowed preflight: answered before the middleware and the handler. */
    cors_run("OPTIONS", "/items", "https://app.example.com", "Access-Control-Request-Method: POST",
             "Access-Control-Request-Headers: authorization,content-type");
    ck_assert_int_eq(res.status, 204);
    ck_assert_str_eq(trace, "");
    ck_assert_str_eq(hdr("Access-Control-Allow-Origin"), "https://app.example.com");
    ck_assert_str_eq(hdr("Access-Control-Allow-Methods"), "GET, HEAD, POST, DELETE");
    ck_assert_str_eq(hdr("Access-Control-Allow-Headers"), "authorization,content-type");
    ck_assert_str_eq(hdr("Access-Control-Allow-Credentials"), "true");
    ck_assert_str_eq(hdr("Access-Control-Max-Age"), "600");
    ck_assert_str_eq(hdr("Vary"),
                     "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
    /* Refused preflights: no Access-Control-Allow-* at all. */
    const char *const refused[][3] = {
        {"https://evil.example.com", "POST", "content-type"},  /* origin */
        {"https://app.example.com", "PUT", "content-type"},    /* method the path lacks */
        {"https://app.example.com", "POST", "x-secret"},       /* header */
        {"https://example.org", "GET", "content-type"},        /* pattern needs a label */
        {"http://a.example.org", "GET", "content-type"},       /* pattern's scheme */
        {"https://a.example.org:8443", "GET", "content-type"}, /* another port */
        {"https://evilexample.org", "GET", "content-type"},    /* not a label boundary */
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        char m[64], h[96];
        snprintf(m, sizeof m, "Access-Control-Request-Method: %s", refused[i][1]);
        snprintf(h, sizeof h, "Access-Control-Request-Headers: %s", refused[i][2]);
        cors_run("OPTIONS", "/items", refused[i][0], m, h);
        ck_assert_msg(res.status == 204 && !hdr("Access-Control-Allow-Origin") &&
                          !hdr("Access-Control-Allow-Methods"),
                      "case %zu: %d %s", i, res.status, hdr("Access-Control-Allow-Origin"));
        ck_assert_str_eq(trace, "");
    }
    /* A pattern's subdomains are allowed, at any depth. */
    cors_run("OPTIONS", "/items", "https://a.b.example.org", "Access-Control-Request-Method: GET",
             NULL);
    ck_assert_str_eq(hdr("Access-Control-Allow-Origin"), "https://a.b.example.org");
    /* A path no route has. */
    cors_run("OPTIONS", "/nothing", "https://app.example.com", "Access-Control-Request-Method: GET",
             NULL);
    ck_assert_int_eq(res.status, 404);
    /* A plain OPTIONS (no preflight) is the router's. */
    cors_run("OPTIONS", "/items", NULL, NULL, NULL);
    ck_assert_int_eq(res.status, 204);
    ck_assert_ptr_nonnull(hdr("Allow"));
    /* Actual answers: the allowed origin named, Vary extended, exposed headers listed. */
    cors_run("GET", "/items", "https://app.example.com", NULL, NULL);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(trace, "before;handler;");
    ck_assert_str_eq(hdr("Access-Control-Allow-Origin"), "https://app.example.com");
    ck_assert_str_eq(hdr("Access-Control-Allow-Credentials"), "true");
    ck_assert_str_eq(hdr("Access-Control-Expose-Headers"), "ETag, Location, X-Request-Id");
    ck_assert_str_eq(hdr("Vary"), "Accept, Origin");
    cors_run("GET", "/items", "https://evil.example.com", NULL, NULL);
    ck_assert_int_eq(res.status, 200);
    ck_assert_ptr_null(hdr("Access-Control-Allow-Origin"));
    ck_assert_str_eq(hdr("Vary"), "Accept, Origin");
    cors_run("GET", "/items", NULL, NULL, NULL);
    ck_assert_ptr_null(hdr("Access-Control-Allow-Origin"));
    ck_assert_str_eq(hdr("Vary"), "Accept, Origin");
    /* The framework's own answers carry them too, so that the page can read the error. */
    cors_run("GET", "/nothing", "https://app.example.com", NULL, NULL);
    ck_assert_int_eq(res.status, 404);
    ck_assert_str_eq(hdr("Access-Control-Allow-Origin"), "https://app.example.com");
    ck_assert_str_eq(hdr("Vary"), "Origin");
    /* Methods limited by the policy. */
    fcr_cors *c = policy();
    ck_assert_int_eq(fcr_cors_set_methods(c, FCR_GET), 0);
    ck_assert_int_eq(fcr_app_set_cors(app, c), 0);
    cors_run("OPTIONS", "/items", "https://app.example.com", "Access-Control-Request-Method: POST",
             NULL);
    ck_assert_ptr_null(hdr("Access-Control-Allow-Origin"));
    cors_run("OPTIONS", "/items", "https://app.example.com", "Access-Control-Request-Method: GET",
             NULL);
    ck_assert_str_eq(hdr("Access-Control-Allow-Methods"), "GET, HEAD");
    ck_assert_int_eq(fcr_app_set_cors(app, NULL), 0); /* removed: no CORS headers */
    cors_run("GET", "/items", "https://app.example.com", NULL, NULL);
    ck_assert_ptr_null(hdr("Access-Control-Allow-Origin"));
    ck_assert_str_eq(hdr("Vary"), "Accept");
}
END_TEST

/* ---- Conditional requests -------------------------------------------------------------- */

static int doc_version = 1; /* 0: the document does not exist */

static fcr_handler_result doc_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    char tag[32];
    snprintf(tag, sizeof tag, "\"v%d\"", doc_version);
    int rc = fcr_req_check_preconditions(req, r, doc_version ? tag : NULL);
    if (rc < 0)
        return (fcr_handler_result)rc;
    if (rc)
        return FCR_DONE; /* 304 or 412 */
    const char *m = fcr_req_method(req);
    if (!strcmp(m, "PUT")) {
        doc_version++;
        snprintf(tag, sizeof tag, "\"v%d\"", doc_version);
    } else if (!strcmp(m, "DELETE")) {
        doc_version = 0;
        return fcr_res_set_status(r, 204);
    } else if (!doc_version) {
        return fcr_res_set_problem(r, 404, "no document");
    }
    fcr_res_set_etag(r, tag);
    return fcr_res_set_text(r, 200, tag);
}

static void cond(const char *method, const char *h)
{
    const char *headers[] = {h, NULL};
    run(&(fcr_test_req){.method = method, .path = "/doc", .headers = h ? headers : NULL});
}

START_TEST(conditional_requests)
{
    ck_assert_ptr_nonnull(
        fcr_app_route(app, FCR_GET | FCR_PUT | FCR_DELETE, "/doc", doc_handler, NULL));
    doc_version = 1;
    cond("GET", NULL);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(hdr("ETag"), "\"v1\"");
    /* If-None-Match: the same version is 304 without a body, weak or strong, in a list. */
    const char *hits[] = {"If-None-Match: \"v1\"", "If-None-Match: W/\"v1\"",
                          "If-None-Match: \"x\", \"v1\"", "If-None-Match: *", NULL};
    for (const char **h = hits; *h; h++) {
        cond("GET", *h);
        ck_assert_msg(res.status == 304, "%s: %d", *h, res.status);
        ck_assert_uint_eq(res.body_len, 0);
        ck_assert_ptr_null(hdr("Content-Length"));
        ck_assert_str_eq(hdr("ETag"), "\"v1\"");
    }
    cond("HEAD", "If-None-Match: \"v1\"");
    ck_assert_int_eq(res.status, 304);
    cond("GET", "If-None-Match: \"v0\"");
    ck_assert_int_eq(res.status, 200);
    cond("GET", "If-None-Match: v1"); /* malformed: no match */
    ck_assert_int_eq(res.status, 200);
    /* If-Match: a stale tag is 412 (the lost update prevented), the current one passes. */
    cond("PUT", "If-Match: \"v0\"");
    check_problem(412);
    ck_assert_str_eq(hdr("ETag"), "\"v1\"");
    ck_assert_int_eq(doc_version, 1);
    cond("PUT", "If-Match: W/\"v1\""); /* weak never matches If-Match */
    ck_assert_int_eq(res.status, 412);
    cond("PUT", "If-Match: \"v1\"");
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(hdr("ETag"), "\"v2\"");
    cond("PUT", "If-Match: \"v1\""); /* what the other client read */
    ck_assert_int_eq(res.status, 412);
    cond("DELETE", "If-Match: \"v1\"");
    ck_assert_int_eq(res.status, 412);
    ck_assert_int_eq(doc_version, 2);
    cond("DELETE", "If-Match: \"v0\", \"v2\"");
    ck_assert_int_eq(res.status, 204);
    ck_assert_int_eq(doc_version, 0);
    /* Gone: If-Match: * fails, If-None-Match: * lets a PUT create it. */
    cond("PUT", "If-Match: *");
    check_problem(412);
    ck_assert_ptr_null(hdr("ETag"));
    cond("PUT", "If-None-Match: *");
    ck_assert_int_eq(res.status, 200);
    cond("PUT", "If-None-Match: *"); /* exists now */
    ck_assert_int_eq(res.status, 412);
    /* Tags and helpers. */
    ck_assert(fcr_etag_valid("\"abc\"") && fcr_etag_valid("W/\"\"") && fcr_etag_valid("\"\""));
    ck_assert(!fcr_etag_valid("abc") && !fcr_etag_valid("\"a\"b\"") && !fcr_etag_valid(NULL) &&
              !fcr_etag_valid("\"a b\"") && !fcr_etag_valid("\"abc"));
    char t1[FCR_ETAG_MAX], t2[FCR_ETAG_MAX];
    ck_assert_int_eq(fcr_etag_make("hello", 5, t1, sizeof t1), 0);
    ck_assert_int_eq(fcr_etag_make("hello", 5, t2, sizeof t2), 0);
    ck_assert_str_eq(t1, t2);
    ck_assert(fcr_etag_valid(t1));
    ck_assert_int_eq(fcr_etag_make("hellp", 5, t2, sizeof t2), 0);
    ck_assert_str_ne(t1, t2);
    ck_assert_int_eq(fcr_etag_make("x", 1, t1, 5), FCR_EINVAL);
}
END_TEST

/* ---- Validation ---------------------------------------------------------------------------- */

static const fcr_field author_fields[] = {
    {.name = "name", .kind = FCR_FIELD_STRING, .flags = FCR_FIELD_REQUIRED},
    {.name = "age",
     .kind = FCR_FIELD_INTEGER,
     .flags = FCR_FIELD_MIN | FCR_FIELD_MAX,
     .min = 0,
     .max = 150},
    {0},
};
static const fcr_field tag_item = {
    .kind = FCR_FIELD_STRING, .flags = FCR_FIELD_MIN | FCR_FIELD_MAX, .min = 1, .max = 3};
static const fcr_field doc_fields[] = {
    {.name = "title",
     .kind = FCR_FIELD_STRING,
     .flags = FCR_FIELD_REQUIRED | FCR_FIELD_MIN | FCR_FIELD_MAX,
     .min = 1,
     .max = 5},
    {.name = "score", .kind = FCR_FIELD_NUMBER, .flags = FCR_FIELD_MAX, .max = 1.5},
    {.name = "done", .kind = FCR_FIELD_BOOLEAN},
    {.name = "note", .kind = FCR_FIELD_STRING, .flags = FCR_FIELD_NULLABLE},
    {.name = "a/b~c", .kind = FCR_FIELD_INTEGER},
    {.name = "author", .kind = FCR_FIELD_OBJECT, .fields = author_fields},
    {.name = "tags", .kind = FCR_FIELD_ARRAY, .flags = FCR_FIELD_MAX, .max = 3, .items = &tag_item},
    {0},
};

static fcr_handler_result validating(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    json_t *body = fcr_req_parse_json(req, r);
    if (!body)
        return FCR_DONE;
    int rc = fcr_validate(r, body, doc_fields, FCR_VALIDATE_NO_EXTRA);
    if (rc < 0)
        return (fcr_handler_result)rc;
    return rc ? FCR_DONE : fcr_res_set_text(r, 200, "valid");
}

static void post_json(const char *body)
{
    static const char *const json[] = {"Content-Type: application/json", NULL};
    run(&(fcr_test_req){.method = "POST", .path = "/v", .headers = json, .body = body});
}

START_TEST(validation_errors_point)
{
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_POST, "/v", validating, NULL));
    post_json("{\"title\":\"caf\xc3\xa9s\",\"score\":1.5,\"done\":true,\"note\":null,"
              "\"author\":{\"name\":\"ada\",\"age\":36},\"tags\":[\"a\",\"bcd\"],\"a/b~c\":1}");
    ck_assert_int_eq(res.status, 200); /* "cafés" is 5 characters */
    post_json("{\"score\":2,\"done\":\"yes\",\"note\":3,\"author\":{\"age\":-1,\"x\":1},"
              "\"tags\":[\"\",\"ok\",7,\"long\"],\"a/b~c\":1.5,\"extra\":0}");
    check_problem(422);
    json_t *j = body_json();
    json_t *errs = json_object_get(j, "errors");
    const char *want[][2] = {
        {"/title", "is required"},
        {"/score", "must be at most 1.5"},
        {"/done", "must be true or false"},
        {"/note", "must be a string or null"},
        {"/a~1b~0c", "must be an integer"},
        {"/author/name", "is required"},
        {"/author/age", "must be from 0 to 150"},
        {"/author/x", "is not a member this resource has"},
        {"/tags", "must have at most 3 items (it has 4)"},
        {"/tags/0", "must be from 1 to 3 characters long (it has 0)"},
        {"/tags/2", "must be a string"},
        {"/tags/3", "must be from 1 to 3 characters long (it has 4)"},
        {"/extra", "is not a member this resource has"},
    };
    size_t n = sizeof want / sizeof *want;
    ck_assert_uint_eq(json_array_size(errs), n);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(errs, i);
        ck_assert_str_eq(json_string_value(json_object_get(e, "pointer")), want[i][0]);
        ck_assert_str_eq(json_string_value(json_object_get(e, "detail")), want[i][1]);
    }
    ck_assert_str_eq(json_string_value(json_object_get(j, "detail")),
                     "the request body has 13 invalid members");
    json_decref(j);
    /* Not an object at all: the pointer "" names the whole body. */
    post_json("[1,2]");
    check_problem(422);
    j = body_json();
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "errors"), 0), "pointer")),
                     "");
    json_decref(j);
    /* Many failures: 32 listed, all counted. */
    char big[4096] = "{\"tags\":[";
    for (int i = 0; i < 40; i++)
        strcat(big, i ? ",0" : "0");
    strcat(big, "],\"title\":\"t\"}");
    post_json(big);
    check_problem(422);
    j = body_json();
    ck_assert_uint_eq(json_array_size(json_object_get(j, "errors")), 32);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "detail")), "41 invalid"));
    json_decref(j);
    ck_assert_int_eq(fcr_validate(NULL, NULL, doc_fields, 0), FCR_EINVAL);
}
END_TEST

/* ---- Request helpers ------------------------------------------------------------------ */

static int echo_request(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    const char *id = fcr_req_path_param(req, "id");
    const char *nothing = fcr_req_path_param(req, "nothing");
    return fcr_res_printf(r, "method=%s path=%s base=%s id=%s nothing=%s", fcr_req_method(req),
                          fcr_req_path(req), fcr_req_base_path(req), id ? id : "-",
                          nothing ? nothing : "-") < 0
               ? FCR_ENOMEM
               : 0;
}

START_TEST(method_path_and_params)
{
    fcr_app_route(app, FCR_GET | FCR_DELETE, "/users/(?<id>[^/]+)", echo_request, NULL);
    run(&(fcr_test_req){.method = "DELETE", .path = "/users/a b"});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "method=DELETE path=/users/a b base= id=a b nothing=-");
}
END_TEST

/* Decode once. The web server percent-decodes the path it passes as SCRIPT_NAME + PATH_INFO
 * (Apache with proxy-fcgi-pathinfo=unescape, nginx, lighttpd): a param is those bytes as they
 * are. REQUEST_URI is as the client sent it: a param is decoded once. */
static void expect_param(const char *script_name, const char *uri, const char *id)
{
    const char *params[] = {NULL, NULL, NULL};
    char sn[128], ru[128];
    size_t n = 0;
    if (script_name) {
        snprintf(sn, sizeof sn, "SCRIPT_NAME=%s", script_name);
        params[n++] = sn;
    }
    snprintf(ru, sizeof ru, "REQUEST_URI=%s", uri);
    params[n] = ru;
    run(&(fcr_test_req){.path = "/", .params = params});
    ck_assert_msg(res.status == 200, "%s / %s: %d %s", script_name ? script_name : "-", uri,
                  res.status, res.body);
    char want[256];
    snprintf(want, sizeof want, "id=%s nothing=-", id);
    const char *got = strstr(res.body, "id=");
    ck_assert_msg(got && strcmp(got, want) == 0, "%s / %s: %s", script_name ? script_name : "-",
                  uri, res.body);
}

START_TEST(path_params_decoded_once)
{
    fcr_app_route(app, FCR_GET, "/p/(?<id>[^/]+)", echo_request, NULL);
    /* What the web server passes for the client's /p/%252e%252e, /p/100%25, /p/%2541 and
     * /p/caf%C3%A9. */
    expect_param("/p/%2e%2e", "/p/%252e%252e", "%2e%2e");
    expect_param("/p/100%", "/p/100%25", "100%");
    expect_param("/p/%41", "/p/%2541", "%41");
    expect_param("/p/%00", "/p/%2500", "%00");
    expect_param("/p/caf\xc3\xa9", "/p/caf%C3%A9", "caf\xc3\xa9");
    /* The same behind a prefix, with the path split into SCRIPT_NAME and PATH_INFO. */
    ck_assert_int_eq(fcr_app_set_prefix(app, "/app"), 0);
    run(&(fcr_test_req){.path = "/app",
                        .params = (const char *const[]){"PATH_INFO=/p/%2e%2e",
                                                        "REQUEST_URI=/app/p/%252e%252e", NULL}});
    ck_assert_str_eq(res.body, "method=GET path=/p/%2e%2e base=/app id=%2e%2e nothing=-");

    /* Routing on REQUEST_URI: decoded once by the router. */
    fcr_app_set_route_on_request_uri(app, true);
    ck_assert_int_eq(fcr_app_set_prefix(app, NULL), 0);
    expect_param("/p/%2e", "/p/%252e", "%2e");
    expect_param("/p/caf\xc3\xa9", "/p/caf%C3%A9", "caf\xc3\xa9");
    expect_param("/p/100%", "/p/100%25?q=%25", "100%");
    expect_param(NULL, "/p/%2541", "%41");
    expect_param(NULL, "/p/a%2Fb", "a/b");
    run(&(fcr_test_req){.path = "/", .params = (const char *const[]){"REQUEST_URI=/p/100%", NULL}});
    check_problem(404);
    /* The prefix is stripped from the raw path the same way. */
    ck_assert_int_eq(fcr_app_set_prefix(app, "/app"), 0);
    run(&(fcr_test_req){.path = "/",
                        .params = (const char *const[]){"SCRIPT_NAME=/app/p/%2e%2e",
                                                        "REQUEST_URI=/app/p/%252e%252e", NULL}});
    ck_assert_str_eq(res.body, "method=GET path=/p/%252e%252e base=/app id=%2e%2e nothing=-");
}
END_TEST

START_TEST(prefix_and_path_info)
{
    fcr_app_route(app, FCR_GET, "/users/(?<id>[0-9]+)", echo_request, NULL);
    ck_assert_int_eq(fcr_app_set_prefix(app, "/app/"), 0);
    /* Apache's default ProxyPass: everything in SCRIPT_NAME. */
    get("/app/users/42");
    ck_assert_str_eq(res.body, "method=GET path=/users/42 base=/app id=42 nothing=-");
    /* proxy-fcgi-pathinfo: SCRIPT_NAME=/app, PATH_INFO=/users/42. */
    run(&(fcr_test_req){.path = "/app",
                        .params = (const char *const[]){"PATH_INFO=/users/7", NULL}});
    ck_assert_str_eq(res.body, "method=GET path=/users/7 base=/app id=7 nothing=-");
    /* Without the prefix the path is routed unchanged; "/application" is not under "/app". */
    get("/users/5");
    ck_assert_str_eq(res.body, "method=GET path=/users/5 base= id=5 nothing=-");
    get("/application/users/5");
    check_problem(404);
    /* The prefix alone is "/". */
    fcr_app_route(app, FCR_GET, "/", echo_request, NULL);
    get("/app");
    ck_assert_str_eq(res.body, "method=GET path=/ base=/app id=- nothing=-");
    ck_assert_int_eq(fcr_app_set_prefix(app, "app"), FCR_EINVAL);
}
END_TEST

START_TEST(route_on_request_uri)
{
    fcr_app_route(app, FCR_GET, "/users/(?<id>[0-9]+)", echo_request, NULL);
    fcr_app_set_prefix(app, "/app");
    fcr_app_set_route_on_request_uri(app, true);
    run(&(fcr_test_req){.path = "/app/users/9?x=1",
                        .params = (const char *const[]){"SCRIPT_NAME=/index.php", NULL}});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "method=GET path=/users/9 base=/app id=9 nothing=-");
}
END_TEST

static int query_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    const char *names[] = {"a", "b", "c", "sp", "bad", "missing", "empty", "e n"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = fcr_req_query(req, names[i]);
        fcr_res_printf(r, "%s=%s;", names[i], v ? v : "(null)");
    }
    for (size_t i = 0; fcr_req_query_nth(req, "a", i); i++)
        fcr_res_printf(r, "a[%zu]=%s;", i, fcr_req_query_nth(req, "a", i));
    return 0;
}

START_TEST(query_params)
{
    fcr_app_route(app, FCR_GET, "/q", query_handler, NULL);
    get("/q?a=1&b=x%20y&a=2&&c&sp=a+b&bad=%zz&a=%33&empty=&e+n=%2B");
    ck_assert_str_eq(res.body, "a=1;b=x y;c=;sp=a b;bad=(null);missing=(null);empty=;e n=+;"
                               "a[0]=1;a[1]=2;a[2]=3;");
    /* A pair whose name or value decodes to a NUL byte is dropped like a malformed one: the
     * C string would hide the bytes after it. */
    get("/q?a=x%00y&b=ok&bad=1&a%00=2&c=%01");
    ck_assert_str_eq(res.body, "a=(null);b=ok;c=\1;sp=(null);bad=1;missing=(null);empty=(null);"
                               "e n=(null);");
}
END_TEST

static int header_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    const char *names[] = {"Content-Type", "content-length", "X-Token", "x-token",
                           "Accept",       "Bad Name",       "",        "X-Missing"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = fcr_req_header(req, names[i]);
        fcr_res_printf(r, "%s=%s;", names[i], v ? v : "(null)");
    }
    const char *cookies[] = {"sid", "theme", "q", "none"};
    for (size_t i = 0; i < 4; i++) {
        const char *v = fcr_req_cookie(req, cookies[i]);
        fcr_res_printf(r, "%s=%s;", cookies[i], v ? v : "(null)");
    }
    size_t len;
    const char *body = fcr_req_body(req, FCR_STDIN, &len);
    fcr_res_printf(r, "raw=%s;body=%.*s;addr=%s;port=%d;json=%d", fcr_req_param(req, "REQUEST_URI"),
                   (int)len, body, fcr_req_remote_addr(req), fcr_req_remote_port(req),
                   fcr_req_content_type_is(req, "application/json"));
    return 0;
}

START_TEST(headers_cookies_raw_params)
{
    fcr_app_route(app, FCR_POST, "/h", header_handler, NULL);
    run(&(fcr_test_req){
        .method = "POST",
        .path = "/h?z=1",
        .headers =
            (const char *const[]){"Content-Type: Application/JSON ; charset=utf-8", "X-Token: abc",
                                  "Accept: */*", "Cookie: sid=42; theme=\"dark\" ;q=a=b", NULL},
        .body = "hello",
        .params = (const char *const[]){"REMOTE_PORT=5555", NULL},
    });
    ck_assert_str_eq(res.body, "Content-Type=Application/JSON ; charset=utf-8;content-length=5;"
                               "X-Token=abc;x-token=abc;Accept=*/*;Bad Name=(null);=(null);"
                               "X-Missing=(null);sid=42;theme=dark;q=a=b;none=(null);"
                               "raw=/h?z=1;body=hello;addr=127.0.0.1;port=5555;json=1");
    /* nginx sends CONTENT_TYPE and CONTENT_LENGTH empty for a GET: they read as absent. */
    run(&(fcr_test_req){.method = "POST",
                        .path = "/h",
                        .params = (const char *const[]){
                            "CONTENT_TYPE=", "CONTENT_LENGTH=", "REMOTE_PORT=x", NULL}});
    ck_assert_ptr_nonnull(strstr(res.body, "Content-Type=(null);content-length=(null);"));
    ck_assert_ptr_nonnull(strstr(res.body, "port=0;json=0"));
}
END_TEST

static int form_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    const char *a = fcr_req_form(req, "a");
    const char *a1 = fcr_req_form_nth(req, "a", 1);
    const char *b = fcr_req_form(req, "b");
    fcr_res_printf(r, "a=%s a1=%s b=%s", a ? a : "(null)", a1 ? a1 : "(null)", b ? b : "(null)");
    return 0;
}

START_TEST(form_bodies)
{
    fcr_app_route(app, FCR_POST, "/f", form_handler, NULL);
    run(&(fcr_test_req){
        .method = "POST",
        .path = "/f",
        .headers = (const char *const[]){"Content-Type: application/x-www-form-urlencoded", NULL},
        .body = "a=x+y&b=%C3%A9&a=2"});
    ck_assert_str_eq(res.body, "a=x y a1=2 b=\xc3\xa9");
    run(&(fcr_test_req){.method = "POST",
                        .path = "/f",
                        .headers = (const char *const[]){"Content-Type: text/plain", NULL},
                        .body = "a=1"});
    ck_assert_str_eq(res.body, "a=(null) a1=(null) b=(null)");
}
END_TEST

static int json_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    json_t *j = fcr_req_parse_json(req, r);
    if (!j)
        return 0; /* r holds the 400 */
    /* A second call gives the same borrowed value. */
    ck_assert_ptr_eq(fcr_req_parse_json(req, NULL), j);
    return fcr_res_set_json(r, 200, j);
}

START_TEST(json_body_and_position_of_errors)
{
    fcr_app_route(app, FCR_POST, "/j", json_handler, NULL);
    run(&(fcr_test_req){.method = "POST", .path = "/j", .body = "{\"a\": [1, 2.5, null]}"});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(hdr("Content-Type"), "application/json");
    ck_assert_str_eq(res.body, "{\"a\":[1,2.5,null]}");
    run(&(fcr_test_req){.method = "POST", .path = "/j", .body = "{\n  \"title\": tru\n}"});
    const char *d = check_problem(400);
    ck_assert_msg(strstr(d, "line 2, column 14") != NULL, "detail: %s", d);
    run(&(fcr_test_req){.method = "POST", .path = "/j", .body = "[1, 2"});
    d = check_problem(400);
    ck_assert_msg(strstr(d, "line 1, column 5") != NULL, "detail: %s", d);
    /* Any JSON value is accepted, not only objects. */
    run(&(fcr_test_req){.method = "POST", .path = "/j", .body = "42"});
    ck_assert_str_eq(res.body, "42");
}
END_TEST

static int user_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    char *p = fcr_req_alloc(req, 10000);
    ck_assert_ptr_nonnull(p);
    memset(p, 'x', 10000);
    char *s = fcr_req_strdup(req, "copy");
    ck_assert_int_eq(fcr_req_set_var(req, "COLOR", "red"), 0);
    ck_assert_int_eq(fcr_req_set_var(req, "COLOR", "blue"), 0);
    ck_assert_ptr_null(fcr_req_user(req));
    ck_assert_int_eq(fcr_req_set_user(req, "carol"), 0);
    ck_assert_ptr_eq(fcr_req_app(req), app);
    ck_assert_ptr_nonnull(fcr_req_loop(req));
    fcr_res_printf(r, "%s %s %s %s", s, fcr_req_var(req, "COLOR"), fcr_req_var(req, "FROM_SERVER"),
                   fcr_req_user(req));
    return 0;
}

START_TEST(vars_user_and_arena_allocations)
{
    fcr_app_route(app, FCR_GET, "/u", user_handler, NULL);
    run(&(fcr_test_req){.path = "/u", .params = (const char *const[]){"FROM_SERVER=yes", NULL}});
    ck_assert_str_eq(res.body, "copy blue yes carol");
}
END_TEST

/* ---- Response helpers ----------------------------------------------------------------- */

static int status_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    int code = atoi(fcr_req_path_param(req, "code"));
    ck_assert_int_eq(fcr_res_set_status(r, 99), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_set_status(r, 600), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_status(r), 200);
    return fcr_res_set_status(r, code);
}

START_TEST(status_with_reason_phrase)
{
    fcr_app_route(app, FCR_GET, "/s/(?<code>[0-9]+)", status_handler, NULL);
    get("/s/404");
    ck_assert_int_eq(res.status, 404);
    ck_assert_str_eq(hdr("Status"), "404 Not Found");
    get("/s/418");
    ck_assert_str_eq(hdr("Status"), "418 I'm a teapot");
    get("/s/201");
    ck_assert_str_eq(hdr("Status"), "201 Created");
    ck_assert_str_eq(hdr("Content-Length"), "0");
    get("/s/299");
    ck_assert_str_eq(hdr("Status"), "299 Unknown");
    /* 204 and 304 carry no body and no Content-Length. */
    get("/s/204");
    ck_assert_str_eq(hdr("Status"), "204 No Content");
    ck_assert_ptr_null(hdr("Content-Length"));
    ck_assert_str_eq(fcr_status_reason(503), "Service Unavailable");
}
END_TEST

static int headers_out(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    ck_assert_int_eq(fcr_res_add_header(r, "Set-Cookie", "a=1"), 0);
    ck_assert_int_eq(fcr_res_add_header(r, "Set-Cookie", "b=2"), 0);
    ck_assert_int_eq(fcr_res_add_header(r, "X-Tab", "a\tb"), 0);
    ck_assert_int_eq(fcr_res_set_header(r, "X-One", "1"), 0);
    ck_assert_int_eq(fcr_res_set_header(r, "x-one", "2"), 0);
    ck_assert_str_eq(fcr_res_header(r, "X-ONE"), "2");
    ck_assert_int_eq(fcr_res_add_header(r, "X-Gone", "1"), 0);
    ck_assert_int_eq(fcr_res_remove_header(r, "x-gone"), 1);
    ck_assert_ptr_null(fcr_res_header(r, "X-Gone"));
    /* Injection attempts are refused and change nothing. */
    ck_assert_int_eq(fcr_res_add_header(r, "X-Evil", "a\r\nX-Injected: 1"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "X-Evil", "a\nX-Injected: 1"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "X-Evil", "a\rb"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "X-Evil", "\x01"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "X-Evil", "\x7f"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_set_header(r, "X-One", "3\r\nX-Injected: 1"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "X-Injected: 1\r\nX-A", "v"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "Bad Name", "v"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "Bad:Name", "v"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "", "v"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "Status", "200 OK"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_add_header(r, "X-Null", NULL), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_set_redirect(r, 302, "/x\r\nX-Injected: 1"), FCR_EINVAL);
    ck_assert_int_eq(fcr_res_set_body(r, "abc", 3), 0);
    ck_assert_int_eq(fcr_res_append(r, "def", 3), 0);
    ck_assert_int_eq(fcr_res_printf(r, "%d", 42), 2);
    size_t len;
    ck_assert_str_eq(fcr_res_body(r, &len), "abcdef42");
    ck_assert_uint_eq(len, 8);
    ck_assert_ptr_eq(fcr_res_req(r), req);
    return 0;
}

START_TEST(headers_body_and_injection)
{
    fcr_app_route(app, FCR_GET, "/h", headers_out, NULL);
    get("/h");
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "abcdef42");
    ck_assert_str_eq(hdr("Content-Length"), "8");
    ck_assert_str_eq(hdr("Content-Type"), "application/octet-stream");
    ck_assert_str_eq(hdr("X-One"), "2");
    ck_assert_str_eq(hdr("X-Tab"), "a\tb");
    ck_assert_ptr_null(hdr("X-Injected"));
    ck_assert_ptr_null(hdr("X-Evil"));
    int cookies = 0;
    for (size_t i = 0; i < res.nheaders; i++)
        cookies += strcmp(res.headers[i].name, "Set-Cookie") == 0;
    ck_assert_int_eq(cookies, 2);
}
END_TEST

static int text_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_text(r, 202, "plain text");
}

static int redirect_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    fcr_res_printf(r, "dropped");
    ck_assert_int_eq(fcr_res_set_redirect(r, 200, "/x"), FCR_EINVAL);
    return fcr_res_set_redirect(r, 303, "/elsewhere?a=1");
}

START_TEST(text_and_redirect)
{
    fcr_app_route(app, FCR_GET, "/t", text_handler, NULL);
    fcr_app_route(app, FCR_GET, "/r", redirect_handler, NULL);
    get("/t");
    ck_assert_int_eq(res.status, 202);
    ck_assert_str_eq(hdr("Content-Type"), "text/plain; charset=utf-8");
    ck_assert_str_eq(res.body, "plain text");
    get("/r");
    ck_assert_int_eq(res.status, 303);
    ck_assert_str_eq(hdr("Status"), "303 See Other");
    ck_assert_str_eq(hdr("Location"), "/elsewhere?a=1");
    ck_assert_uint_eq(res.body_len, 0);
    ck_assert_str_eq(hdr("Content-Length"), "0");
}
END_TEST

static int json_ownership(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    json_t *o = json_pack("{s:i}", "n", 1);
    /* Borrowing leaves the reference count alone. */
    ck_assert_int_eq(fcr_res_set_json(r, 200, o), 0);
    ck_assert_int_eq(o->refcount, 1);
    /* _new steals the reference, also when it fails. */
    json_incref(o);
    ck_assert_int_eq(fcr_res_set_json_new(r, 99, o), FCR_EINVAL);
    ck_assert_int_eq(o->refcount, 1);
    ck_assert_int_eq(fcr_res_set_json_new(r, 200, NULL), FCR_EINVAL);
    json_t *ext = json_object();
    json_incref(ext);
    ck_assert_int_eq(fcr_res_set_problem_new(r, 200, NULL, NULL, ext), FCR_EINVAL);
    ck_assert_int_eq(ext->refcount, 1);
    json_decref(ext);
    /* The failures left the first answer in place. */
    size_t len;
    ck_assert_str_eq(fcr_res_body(r, &len), "{\"n\":1}");
    json_object_set_new(o, "n", json_integer(2));
    return fcr_res_set_json_new(r, 201, o);
}

START_TEST(json_set_borrows_and_set_new_takes_the_reference)
{
    fcr_app_route(app, FCR_GET, "/j", json_ownership, NULL);
    get("/j");
    ck_assert_int_eq(res.status, 201);
    ck_assert_str_eq(hdr("Content-Type"), "application/json");
    ck_assert_str_eq(res.body, "{\"n\":2}");
}
END_TEST

static int problem_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    fcr_res_add_header(r, "WWW-Authenticate", "Bearer");
    if (fcr_req_query(req, "ext")) {
        json_t *ext = json_pack("{s:s, s:i, s:s}", "title", "not overridable", "balance", 30,
                                "instance", "/account/12345");
        return fcr_res_set_problem_new(r, 403, "https://example.com/probs/out-of-credit",
                                       "Your current balance is 30", ext);
    }
    return fcr_res_set_problem(r, 401, "token %s is unknown", "abc");
}

START_TEST(problem_json_shape)
{
    fcr_app_route(app, FCR_GET, "/p", problem_handler, NULL);
    get("/p");
    ck_assert_str_eq(check_problem(401), "token abc is unknown");
    ck_assert_str_eq(hdr("WWW-Authenticate"), "Bearer");
    json_t *j = body_json();
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "about:blank");
    ck_assert_str_eq(json_string_value(json_object_get(j, "title")), "Unauthorized");
    json_decref(j);
    get("/p?ext=1");
    ck_assert_str_eq(check_problem(403), "Your current balance is 30");
    j = body_json();
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")),
                     "https://example.com/probs/out-of-credit");
    ck_assert_str_eq(json_string_value(json_object_get(j, "title")), "Forbidden");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "balance")), 30);
    ck_assert_str_eq(json_string_value(json_object_get(j, "instance")), "/account/12345");
    json_decref(j);
}
END_TEST

static int fixed_body(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    note("get;");
    fcr_res_add_header(r, "Content-Type", "text/plain");
    return fcr_res_set_body(r, "twelve bytes", 12);
}

START_TEST(head_has_no_body)
{
    fcr_app_route(app, FCR_GET, "/x", fixed_body, NULL);
    run(&(fcr_test_req){.method = "HEAD", .path = "/x"});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(hdr("Content-Length"), "12");
    ck_assert_str_eq(hdr("Content-Type"), "text/plain");
    ck_assert_uint_eq(res.body_len, 0);
    ck_assert_str_eq(trace, "get;");
    /* The framework's own answers too. */
    run(&(fcr_test_req){.method = "HEAD", .path = "/missing"});
    ck_assert_int_eq(res.status, 404);
    ck_assert_uint_eq(res.body_len, 0);
    ck_assert_ptr_nonnull(hdr("Content-Length"));
    ck_assert_str_ne(hdr("Content-Length"), "0");
}
END_TEST

START_TEST(not_found_not_allowed_options)
{
    fcr_app_route(app, FCR_GET | FCR_POST, "/x", fixed_body, NULL);
    get("/nothing");
    check_problem(404);
    run(&(fcr_test_req){.method = "DELETE", .path = "/x"});
    check_problem(405);
    ck_assert_str_eq(hdr("Allow"), "GET, HEAD, POST, OPTIONS");
    run(&(fcr_test_req){.method = "BREW", .path = "/x"});
    check_problem(405);
    run(&(fcr_test_req){.method = "OPTIONS", .path = "/x"});
    ck_assert_int_eq(res.status, 204);
    ck_assert_str_eq(hdr("Allow"), "GET, HEAD, POST, OPTIONS");
    ck_assert_uint_eq(res.body_len, 0);
    ck_assert_str_eq(trace, "");
}
END_TEST

/* ---- Failures ------------------------------------------------------------------------- */

static int failing(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    fcr_res_add_header(r, "X-Partial", "1");
    fcr_res_printf(r, "partial");
    return FCR_EIO;
}

static fcr_handler_result failing_verdict(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)r, (void)data;
    return FCR_HANDLER_ERROR;
}

static fcr_before_result failing_before(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)r, (void)data;
    return FCR_BEFORE_ERROR;
}

/* The error verdicts fail the request without naming a cause (none is out of memory). */
START_TEST(error_verdicts_give_500_without_a_made_up_cause)
{
    fcr_app_route(app, FCR_GET, "/v", failing_verdict, NULL);
    fcr_route *r = fcr_app_route(app, FCR_GET, "/b", fixed_body, NULL);
    fcr_route_before(r, failing_before, NULL);
    get("/v");
    check_problem(500);
    ck_assert_str_eq(res.err, "GET /v: handler failed\n");
    get("/b");
    check_problem(500);
    ck_assert_str_eq(res.err, "GET /b: before-middleware failed\n");
}
END_TEST

START_TEST(handler_error_gives_500_and_stderr)
{
    fcr_app_route(app, FCR_GET, "/fail", failing, NULL);
    get("/fail");
    check_problem(500);
    ck_assert_ptr_null(hdr("X-Partial"));
    ck_assert_msg(strstr(res.err, "GET /fail: handler failed: FCR_EIO") != NULL, "stderr: %s",
                  res.err);
    ck_assert_uint_eq(res.app_status, 0);
    /* Control bytes of the path cannot forge lines in the error log. */
    fcr_app_route(app, FCR_GET, "/fail2(?s:.*)", failing, NULL);
    run(&(fcr_test_req){.params = (const char *const[]){"SCRIPT_NAME=/fail2\nFAKE\\", NULL}});
    check_problem(500);
    ck_assert_str_eq(res.err,
                     "GET /fail2\\x0aFAKE\\x5c: handler failed: FCR_EIO (system call failed)\n");
}
END_TEST

START_TEST(bad_pattern_refused)
{
    ck_assert_ptr_null(fcr_app_error(app));
    ck_assert_ptr_null(fcr_app_route(app, FCR_GET, "/a(", fixed_body, NULL));
    const char *e = fcr_app_error(app);
    ck_assert_ptr_nonnull(e);
    ck_assert_msg(strstr(e, "/a(") && strstr(e, "offset 3"), "error: %s", e);
    ck_assert_ptr_null(fcr_app_route(app, 0, "/b", fixed_body, NULL));
    ck_assert_ptr_null(fcr_app_route(app, FCR_GET, "/b", NULL, NULL));
    /* Route options on a failed route are refused, not a crash. */
    ck_assert_int_eq(fcr_route_set_max_body(NULL, 10), FCR_EINVAL);
    ck_assert_int_eq(fcr_route_consumes(NULL, "application/json"), FCR_EINVAL);
    /* fcr_app_run refuses an app with a failed registration. */
    char *argv[] = {"test", "--listen", "unix:/nonexistent/x.sock", NULL};
    ck_assert_int_eq(fcr_app_run(app, 3, argv), FCR_EINVAL);
}
END_TEST

START_TEST(bad_options_and_listeners_are_refused)
{
    char *help[] = {"test", "--help", NULL};
    ck_assert_int_eq(fcr_app_run(app, 2, help), 0);
    char *unknown[] = {"test", "--frobnicate", "1", NULL};
    ck_assert_int_eq(fcr_app_run(app, 3, unknown), FCR_EINVAL);
    char *missing[] = {"test", "--workers", NULL};
    ck_assert_int_eq(fcr_app_run(app, 2, missing), FCR_EINVAL);
    char *bad_mode[] = {"test", "--socket-mode=0999", NULL};
    ck_assert_int_eq(fcr_app_run(app, 2, bad_mode), FCR_EINVAL);
    char *bad_size[] = {"test", "--max-body", "12q", NULL};
    ck_assert_int_eq(fcr_app_run(app, 3, bad_size), FCR_EINVAL);
    char *bad_level[] = {"test", "--log-level", "loud", NULL};
    ck_assert_int_eq(fcr_app_run(app, 3, bad_level), FCR_EINVAL);
    setenv("FCREST_WORKERS", "many", 1);
    ck_assert_int_eq(fcr_app_run(app, 2, help), 0);
    ck_assert_int_eq(fcr_app_run(app, 1, help), FCR_EINVAL);
    unsetenv("FCREST_WORKERS");
    /* A listener that cannot be opened. */
    char *bad_addr[] = {"test", "--listen", "nonsense", NULL};
    ck_assert_int_eq(fcr_app_run(app, 3, bad_addr), FCR_EADDR);
}
END_TEST

/* ---- Per-request messages and request ids -------------------------------------------- */

static int logging_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    char big[700];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ck_assert_int_eq(fcr_req_log(req, "value %d", 42), 9);
    ck_assert_int_eq(fcr_req_log(req, "ends with its newline\n"), 22);
    ck_assert_int_eq(fcr_req_log(req, "%s", big), (int)sizeof big);
    ck_assert_int_eq(fcr_req_log(NULL, "x"), FCR_EINVAL);
    ck_assert_int_eq(fcr_req_log(req, NULL), FCR_EINVAL);
    const char *id = fcr_req_request_id(req);
    ck_assert_ptr_nonnull(id);
    /* The same string for the whole request. */
    ck_assert_ptr_eq(fcr_req_request_id(req), id);
    return fcr_res_set_text(r, 200, id);
}

START_TEST(request_log_and_id)
{
    fcr_app_route(app, FCR_GET, "/log", logging_handler, NULL);
    get("/log");
    ck_assert_int_eq(res.status, 200);
    char want[800];
    char big[700];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(want, sizeof want, "value 42\nends with its newline\n%s\n", big);
    ck_assert_str_eq(res.err, want);
    /* Made here: "PID-N", N counting up. */
    long pid, n1, n2;
    ck_assert_int_eq(sscanf(res.body, "%ld-%ld", &pid, &n1), 2);
    ck_assert_int_eq(pid, (long)getpid());
    get("/log");
    ck_assert_int_eq(sscanf(res.body, "%ld-%ld", &pid, &n2), 2);
    ck_assert_int_gt(n2, n1);
    /* From the web server: UNIQUE_ID first, then X-Request-Id; unusable ones are replaced. */
    run(&(fcr_test_req){.path = "/log",
                        .params = (const char *const[]){"UNIQUE_ID=YxB7@abc-1", NULL},
                        .headers = (const char *const[]){"X-Request-Id: other", NULL}});
    ck_assert_str_eq(res.body, "YxB7@abc-1");
    run(&(fcr_test_req){.path = "/log",
                        .headers = (const char *const[]){"X-Request-Id: 7f3a-22", NULL}});
    ck_assert_str_eq(res.body, "7f3a-22");
    run(&(fcr_test_req){.path = "/log",
                        .params = (const char *const[]){"UNIQUE_ID=has space", NULL},
                        .headers = (const char *const[]){"X-Request-Id: a\"quote", NULL}});
    ck_assert_int_eq(sscanf(res.body, "%ld-%ld", &pid, &n1), 2);
    ck_assert_int_eq(pid, (long)getpid());
    /* Not an app's request. */
    ck_assert_ptr_null(fcr_req_request_id(NULL));
}
END_TEST

START_TEST(timeout_option_values_are_checked)
{
    static const char *const bad[][2] = {
        {"--input-timeout", "0"},        {"--idle-timeout", "-1"}, {"--output-timeout", "x"},
        {"--shutdown-timeout", "86401"}, {"--grace", "nan"},       {"--idle-timeout", "1s"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"test", (char *)bad[i][0], (char *)bad[i][1], NULL};
        ck_assert_msg(fcr_app_run(app, 3, argv) == FCR_EINVAL, "%s %s accepted", bad[i][0],
                      bad[i][1]);
    }
    setenv("FCREST_INPUT_TIMEOUT", "zero", 1);
    char *help[] = {"test", "--help", NULL};
    ck_assert_int_eq(fcr_app_run(app, 1, help), FCR_EINVAL);
    unsetenv("FCREST_INPUT_TIMEOUT");
    /* Good values pass the parser and fail only at the missing listener. */
    char *good[] = {"test",
                    "--idle-timeout",
                    "2.5",
                    "--input-timeout=0.5",
                    "--access-log",
                    "--grace",
                    "0",
                    "--shutdown-timeout",
                    "3",
                    "--listen",
                    "nonsense",
                    NULL};
    ck_assert_int_eq(fcr_app_run(app, 11, good), FCR_EADDR);
}
END_TEST

/* ---- Body limits ---------------------------------------------------------------------- */

static int count_body(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    size_t len;
    fcr_req_body(req, FCR_STDIN, &len);
    note("handler;");
    return fcr_res_printf(r, "%zu", len) < 0 ? FCR_ENOMEM : 0;
}

START_TEST(too_big_with_content_length)
{
    fcr_route_set_max_body(fcr_app_route(app, FCR_POST, "/small", count_body, NULL), 16);
    fcr_app_route(app, FCR_POST, "/big", count_body, NULL);
    fcr_app_set_max_body(app, 100);
    char body[200];
    memset(body, 'a', sizeof body);
    run(&(fcr_test_req){.method = "POST", .path = "/small", .body = body, .body_len = 16});
    ck_assert_str_eq(res.body, "16");
    run(&(fcr_test_req){.method = "POST", .path = "/small", .body = body, .body_len = 17});
    ck_assert_msg(strstr(check_problem(413), "16 bytes") != NULL, "detail names the limit");
    run(&(fcr_test_req){.method = "POST", .path = "/big", .body = body, .body_len = 100});
    ck_assert_str_eq(res.body, "100");
    run(&(fcr_test_req){.method = "POST", .path = "/big", .body = body, .body_len = 101});
    check_problem(413);
    /* A declared length beyond any limit is refused the same way. */
    run(&(fcr_test_req){.method = "POST",
                        .path = "/big",
                        .params =
                            (const char *const[]){"CONTENT_LENGTH=99999999999999999999999", NULL}});
    check_problem(413);
    /* One that is not a number of bytes is a bad request, whatever the limit. */
    const char *const malformed[] = {"CONTENT_LENGTH=-1", "CONTENT_LENGTH=abc",
                                     "CONTENT_LENGTH=1.5", "CONTENT_LENGTH=+5",
                                     "CONTENT_LENGTH= 5"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        run(&(fcr_test_req){.method = "POST",
                            .path = "/big",
                            .body = body,
                            .body_len = 5,
                            .no_content_length = true,
                            .params = (const char *const[]){malformed[i], NULL}});
        ck_assert_msg(strstr(check_problem(400), "CONTENT_LENGTH") != NULL, "%s", malformed[i]);
    }
    /* Unknown paths get their 404, not a 413. */
    run(&(fcr_test_req){.method = "POST", .path = "/none", .body = body, .body_len = 200});
    check_problem(404);
    ck_assert_str_eq(trace, "handler;handler;");
}
END_TEST

START_TEST(too_big_without_content_length)
{
    fcr_route_set_max_body(fcr_app_route(app, FCR_POST, "/small", count_body, NULL), 1000);
    static char body[300000];
    memset(body, 'b', sizeof body);
    run(&(fcr_test_req){.method = "POST",
                        .path = "/small",
                        .body = body,
                        .body_len = 1000,
                        .no_content_length = true});
    ck_assert_str_eq(res.body, "1000");
    run(&(fcr_test_req){.method = "POST",
                        .path = "/small",
                        .body = body,
                        .body_len = sizeof body,
                        .no_content_length = true});
    check_problem(413);
    ck_assert_str_eq(trace, "handler;");
}
END_TEST

/* A server on its own thread and a unix socket, for the test client. */
typedef struct server_thread {
    struct ev_loop *loop;
    fcr_server *srv;
    ev_async stop;
    ev_async probe; /* copies the server's counters on its own thread (server_stats) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fcr_server_stats st;
    bool probed;
    pthread_t th;
    char dir[64];
    char addr[128];
} server_thread;

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void probe_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop, (void)revents;
    struct server_thread *t = w->data;
    pthread_mutex_lock(&t->mu);
    fcr_server_get_stats(t->srv, &t->st);
    t->probed = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* The server's counters, read on the server's thread. */
static fcr_server_stats server_stats(server_thread *t)
{
    pthread_mutex_lock(&t->mu);
    t->probed = false;
    ev_async_send(t->loop, &t->probe);
    while (!t->probed)
        pthread_cond_wait(&t->cv, &t->mu);
    fcr_server_stats st = t->st;
    pthread_mutex_unlock(&t->mu);
    return st;
}

/* Waits up to 20 s until the server has no connection and no request left. */
static void wait_server_idle(server_thread *t)
{
    double deadline = fcl_now() + 20;
    fcr_server_stats st = server_stats(t);
    while (st.conns > 0 || st.active_reqs > 0) {
        ck_assert_msg(fcl_now() < deadline, "%u connections, %u requests still open after 20 s",
                      st.conns, st.active_reqs);
        poll(NULL, 0, 1);
        st = server_stats(t);
    }
}

static void *server_main(void *arg)
{
    server_thread *t = arg;
    ev_run(t->loop, 0);
    return NULL;
}

static void server_start(server_thread *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/fcr-app-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    snprintf(t->addr, sizeof t->addr, "unix:%s/s", t->dir);
    t->loop = ev_loop_new(0);
    int err = 0;
    t->srv = fcr_app_server_new(app, t->loop, NULL, &err);
    ck_assert_ptr_nonnull(t->srv);
    ck_assert_int_eq(fcr_server_listen(t->srv, t->addr), 0);
    ev_async_init(&t->stop, stop_cb);
    ev_async_start(t->loop, &t->stop);
    ev_async_init(&t->probe, probe_cb);
    t->probe.data = t;
    ev_async_start(t->loop, &t->probe);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    ck_assert_int_eq(pthread_create(&t->th, NULL, server_main, t), 0);
}

static void server_stop(server_thread *t)
{
    ev_async_send(t->loop, &t->stop);
    pthread_join(t->th, NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    fcr_server_free(t->srv);
    ev_loop_destroy(t->loop);
    char path[160];
    snprintf(path, sizeof path, "%s/s", t->dir);
    unlink(path);
    rmdir(t->dir);
}

/* A responder request with neither SCRIPT_NAME nor PATH_INFO (which fcr_app_test always
 * sends) is routed on REQUEST_URI, as the client sent it: its params are decoded once. The
 * route's own body limit makes the early lookup (before the body) run too. */
START_TEST(path_params_from_request_uri_without_script_name)
{
    fcr_route_set_max_body(fcr_app_route(app, FCR_GET, "/p/(?<id>[^/]+)", echo_request, NULL), 100);
    server_thread t;
    server_start(&t);
    const char *uris[] = {"/p/%252e%252e", "/p/100%25", "/p/caf%C3%A9", "/p/100%"};
    const char *want[] = {"200 OK:method=GET path=/p/%252e%252e base= id=%2e%2e nothing=-",
                          "200 OK:method=GET path=/p/100%25 base= id=100% nothing=-",
                          "200 OK:method=GET path=/p/caf%C3%A9 base= id=caf\xc3\xa9 nothing=-",
                          "404 Not Found:"};
    for (size_t i = 0; i < sizeof uris / sizeof uris[0]; i++) {
        fcl_conn *c = fcl_connect(t.addr, 0);
        ck_assert_ptr_nonnull(c);
        const char *params[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", uris[i], NULL};
        fcl_response r;
        fcl_response_init(&r, 1);
        ck_assert_int_eq(fcl_request(c, 1, FCR_RESPONDER, 0, params, NULL, 0, &r), 0);
        fcl_cgi cgi;
        ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
        char got[256], status[64];
        ck_assert(fcl_cgi_header(&cgi, "Status", status, sizeof status));
        bool text = strncmp(status, "200", 3) == 0;
        snprintf(got, sizeof got, "%s:%.*s", status, text ? (int)cgi.body_len : 0,
                 (const char *)cgi.body);
        ck_assert_str_eq(got, want[i]);
        fcl_cgi_free(&cgi);
        fcl_response_free(&r);
        fcl_close(c);
    }
    server_stop(&t);
}
END_TEST

START_TEST(too_big_answered_before_the_body_is_sent)
{
    fcr_route_set_max_body(fcr_app_route(app, FCR_POST, "/small", count_body, NULL), 16);
    server_thread t;
    server_start(&t);
    fcl_conn *c = fcl_connect(t.addr, 0);
    ck_assert_ptr_nonnull(c);
    fcl_buf nv, b;
    fcl_buf_init(&nv);
    fcl_buf_init(&b);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "POST");
    fcl_nv_adds(&nv, "SCRIPT_NAME", "/small");
    fcl_nv_adds(&nv, "CONTENT_LENGTH", "5000000");
    fcl_put_begin(&b, 1, FCR_RESPONDER, 0);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    /* No STDIN record was sent: the answer must come anyway. */
    fcl_response r;
    fcl_response_init(&r, 1);
    c->timeout = 5;
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    char status[64];
    ck_assert(fcl_cgi_header(&cgi, "Status", status, sizeof status));
    ck_assert_str_eq(status, "413 Content Too Large");
    ck_assert_uint_eq(c->violations, 0);
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    fcl_buf_free(&nv);
    fcl_buf_free(&b);
    fcl_close(c);
    server_stop(&t);
    ck_assert_str_eq(trace, "");
}
END_TEST

/* ---- Middleware ----------------------------------------------------------------------- */

static int mw_before(fcr_req *req, fcr_res *r, void *data)
{
    note("b%s;", (const char *)data);
    if (fcr_req_query(req, "stop") && strcmp(fcr_req_query(req, "stop"), data) == 0) {
        fcr_res_set_problem(r, 403, "stopped by %s", (const char *)data);
        return FCR_STOP;
    }
    if (fcr_req_query(req, "fail") && strcmp(fcr_req_query(req, "fail"), data) == 0)
        return FCR_EIO;
    return FCR_CONTINUE;
}

static int mw_after(fcr_req *req, fcr_res *r, void *data)
{
    (void)req;
    note("a%s;", (const char *)data);
    char name[16];
    snprintf(name, sizeof name, "X-After-%s", (const char *)data);
    return fcr_res_add_header(r, name, "1");
}

static int traced_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    note("h;");
    return fcr_res_set_text(r, 200, "ok");
}

START_TEST(middleware_order_and_short_circuit)
{
    fcr_app_before(app, mw_before, "1");
    fcr_app_after(app, mw_after, "1");
    fcr_route *r = fcr_app_route(app, FCR_GET, "/m", traced_handler, NULL);
    fcr_route_before(r, mw_before, "2");
    fcr_route_after(r, mw_after, "2");
    fcr_app_before(app, mw_before, "3");
    fcr_app_after(app, mw_after, "3");
    fcr_app_route(app, FCR_GET, "/other", traced_handler, NULL);

    get("/m");
    ck_assert_str_eq(trace, "b1;b2;b3;h;a1;a2;a3;");
    ck_assert_str_eq(hdr("X-After-2"), "1");
    /* Another route gets only the app's middleware. */
    trace[0] = '\0';
    get("/other");
    ck_assert_str_eq(trace, "b1;b3;h;a1;a3;");
    /* A before-middleware that answers stops the chain; after-middleware still run. */
    trace[0] = '\0';
    get("/m?stop=2");
    ck_assert_str_eq(trace, "b1;b2;a1;a2;a3;");
    ck_assert_str_eq(check_problem(403), "stopped by 2");
    ck_assert_str_eq(hdr("X-After-3"), "1");
    /* A failing before-middleware gives 500. */
    trace[0] = '\0';
    get("/m?fail=1");
    ck_assert_str_eq(trace, "b1;a1;a2;a3;");
    check_problem(500);
    ck_assert_ptr_nonnull(strstr(res.err, "before-middleware failed: FCR_EIO"));
    /* Before-middleware do not run for 404; the app's after-middleware do. */
    trace[0] = '\0';
    get("/missing");
    ck_assert_str_eq(trace, "a1;a3;");
    check_problem(404);
}
END_TEST

static int after_rewrites(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    size_t len;
    const char *b = fcr_res_body(r, &len);
    char up[64];
    snprintf(up, sizeof up, "%.*s!", (int)len, b);
    for (char *p = up; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    fcr_res_set_status(r, 299);
    return fcr_res_set_body(r, up, strlen(up));
}

static int after_fails(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)r, (void)data;
    return FCR_ENOMEM;
}

START_TEST(after_middleware_changes_response)
{
    fcr_app_after(app, after_rewrites, NULL);
    fcr_app_route(app, FCR_GET, "/m", traced_handler, NULL);
    fcr_route_after(fcr_app_route(app, FCR_GET, "/f", traced_handler, NULL), after_fails, NULL);
    get("/m");
    ck_assert_int_eq(res.status, 299);
    ck_assert_str_eq(res.body, "OK!");
    ck_assert_str_eq(hdr("Content-Length"), "3");
    get("/f");
    check_problem(500);
}
END_TEST

START_TEST(mounted_app_middleware_and_limits)
{
    fcr_app *sub = fcr_app_new();
    fcr_app_before(app, mw_before, "root");
    fcr_app_before(sub, mw_before, "sub");
    fcr_app_after(sub, mw_after, "sub");
    fcr_app_set_max_body(sub, 4);
    fcr_app_route(sub, FCR_GET | FCR_POST, "/x", traced_handler, NULL);
    fcr_app_route(app, FCR_POST, "/x", count_body, NULL);
    ck_assert_int_eq(fcr_app_mount(app, "/api", sub), 0);
    ck_assert_int_eq(fcr_app_mount(app, "/again", sub), FCR_EEXIST); /* already mounted */
    ck_assert_int_eq(fcr_app_mount(sub, "/loop", app), FCR_EEXIST);  /* a cycle */
    ck_assert_int_eq(fcr_app_mount(app, "/self", app), FCR_EEXIST);  /* itself */
    get("/api/x");
    ck_assert_str_eq(res.body, "ok");
    /* Registration order: the sub-app's middleware was registered after the root's. */
    ck_assert_str_eq(trace, "broot;bsub;h;asub;");
    trace[0] = '\0';
    run(&(fcr_test_req){.method = "POST", .path = "/x", .body = "12345"});
    ck_assert_str_eq(res.body, "5");
    ck_assert_str_eq(trace, "broot;handler;");
    run(&(fcr_test_req){.method = "POST", .path = "/api/x", .body = "12345"});
    check_problem(413);
    get("/api");
    check_problem(404);
    /* Mounting into a NULL app still takes the sub-app (no leak under the sanitizers). */
    ck_assert_int_eq(fcr_app_mount(NULL, "/x", fcr_app_new()), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_mount(app, "bad", fcr_app_new()), FCR_EINVAL);
}
END_TEST

/* ---- Authorizers ---------------------------------------------------------------------- */

static int token_authorizer(fcr_req *req, fcr_res *r, fcr_auth *auth, void *data)
{
    (void)data;
    note("auth%d;", (int)fcr_req_role(req));
    const char *tok = fcr_req_header(req, "X-Token");
    if (tok && strcmp(tok, "good") == 0) {
        ck_assert_int_eq(fcr_auth_set_var(auth, "bad name", "x"), FCR_EINVAL);
        ck_assert_int_eq(fcr_auth_set_var(auth, "ROLE", "a\r\nb"), FCR_EINVAL);
        ck_assert_int_eq(fcr_auth_set_var(auth, "ROLE", "admin"), 0);
        return fcr_auth_set_user(auth, "APP_USER", "alice") < 0 ? FCR_ENOMEM : FCR_ALLOW;
    }
    if (tok && strcmp(tok, "plain-deny") == 0)
        return FCR_DENY;
    fcr_res_set_header(r, "WWW-Authenticate", "Token");
    fcr_res_set_problem(r, 401, "missing or bad token");
    return FCR_DENY;
}

static int whoami(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    note("h;");
    const char *u = fcr_req_user(req);
    const char *role = fcr_req_var(req, "ROLE");
    fcr_res_printf(r, "%s %s %s", u ? u : "-", fcr_req_var(req, "APP_USER"), role ? role : "-");
    return 0;
}

START_TEST(one_authorizer_two_roles)
{
    fcr_app_set_authorizer(app, token_authorizer, NULL);
    fcr_route_guard(fcr_app_route(app, FCR_GET, "/me", whoami, NULL), token_authorizer, NULL);
    fcr_app_route(app, FCR_GET, "/open", traced_handler, NULL);

    /* As before-middleware of a Responder route. */
    run(&(fcr_test_req){.path = "/me", .headers = (const char *const[]){"X-Token: good", NULL}});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "alice alice admin");
    ck_assert_str_eq(trace, "auth1;h;");
    trace[0] = '\0';
    run(&(fcr_test_req){.path = "/me", .headers = (const char *const[]){"X-Token: bad", NULL}});
    check_problem(401);
    ck_assert_str_eq(hdr("WWW-Authenticate"), "Token");
    ck_assert_str_eq(trace, "auth1;");
    run(&(fcr_test_req){.path = "/me",
                        .headers = (const char *const[]){"X-Token: plain-deny", NULL}});
    check_problem(403);
    trace[0] = '\0';
    get("/open");
    ck_assert_str_eq(trace, "h;");

    /* As the app's answer to FastCGI AUTHORIZER requests. */
    trace[0] = '\0';
    run(&(fcr_test_req){.role = FCR_AUTHORIZER,
                        .path = "/anything",
                        .headers = (const char *const[]){"X-Token: good", NULL}});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(hdr("Status"), "200 OK");
    ck_assert_str_eq(hdr("Variable-APP_USER"), "alice");
    ck_assert_str_eq(hdr("Variable-ROLE"), "admin");
    ck_assert_uint_eq(res.body_len, 0);
    ck_assert_str_eq(trace, "auth2;");
    run(&(fcr_test_req){.role = FCR_AUTHORIZER, .path = "/anything"});
    check_problem(401);
    ck_assert_str_eq(hdr("WWW-Authenticate"), "Token");
    ck_assert_ptr_null(hdr("Variable-APP_USER"));
}
END_TEST

START_TEST(roles_without_handlers_are_refused)
{
    fcr_app_route(app, FCR_GET, "/", traced_handler, NULL);
    fcr_test_res_free(&res);
    ck_assert_int_eq(fcr_app_test(app, &(fcr_test_req){.role = FCR_AUTHORIZER}, &res), 0);
    ck_assert_int_eq(res.protocol_status, 3); /* FCGI_UNKNOWN_ROLE */
    fcr_test_res_free(&res);
    ck_assert_int_eq(fcr_app_test(app, &(fcr_test_req){.role = FCR_FILTER}, &res), 0);
    ck_assert_int_eq(res.protocol_status, 3);
}
END_TEST

/* ---- FILTER role ---------------------------------------------------------------------- */

static int upper_filter(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    ck_assert_int_eq(fcr_req_role(req), FCR_FILTER);
    size_t len, in_len;
    const char *d = fcr_req_data(req, &len);
    fcr_req_body(req, FCR_STDIN, &in_len);
    char v[64];
    uint64_t dlen;
    int64_t mod;
    if (fcr_req_data_length(req, &dlen) == 0)
        snprintf(v, sizeof v, "%llu", (unsigned long long)dlen);
    else
        snprintf(v, sizeof v, "absent");
    fcr_res_add_header(r, "X-Data-Length", v);
    if (fcr_req_data_last_mod(req, &mod) == 0)
        snprintf(v, sizeof v, "%lld", (long long)mod);
    else
        snprintf(v, sizeof v, "absent");
    fcr_res_add_header(r, "X-Data-Last-Mod", v);
    snprintf(v, sizeof v, "%zu", in_len);
    fcr_res_add_header(r, "X-Stdin", v);
    fcr_res_add_header(r, "Content-Type", "text/plain");
    for (size_t i = 0; i < len; i++) {
        char c = d[i] >= 'a' && d[i] <= 'z' ? (char)(d[i] - 32) : d[i];
        fcr_res_append(r, &c, 1);
    }
    return 0;
}

START_TEST(filter_role)
{
    fcr_app_set_filter(app, upper_filter, NULL);
    fcr_app_after(app, mw_after, "f");
    run(&(fcr_test_req){.role = FCR_FILTER,
                        .path = "/doc.txt",
                        .body = "in",
                        .data = "hello filter",
                        .data_len = 12,
                        .data_last_mod = 1700000000});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "HELLO FILTER");
    ck_assert_str_eq(hdr("X-Data-Length"), "12");
    ck_assert_str_eq(hdr("X-Data-Last-Mod"), "1700000000");
    ck_assert_str_eq(hdr("X-Stdin"), "2");
    ck_assert_str_eq(hdr("X-After-f"), "1");
    /* No last-modified time: absent. DATA over the limit: 413. */
    run(&(fcr_test_req){.role = FCR_FILTER, .path = "/d", .data = "abc", .data_len = 3});
    ck_assert_str_eq(hdr("X-Data-Last-Mod"), "absent");
    fcr_app_set_max_body(app, 2);
    run(&(fcr_test_req){.role = FCR_FILTER, .path = "/d", .data = "abc", .data_len = 3});
    check_problem(413);
}
END_TEST

/* ---- Async ---------------------------------------------------------------------------- */

typedef struct later {
    ev_timer t;
    fcr_res *res;
} later;

static void later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    later *l = (later *)w;
    note("timer;");
    fcr_res_set_json_new(l->res, 200, json_pack("{s:b}", "late", 1));
    fcr_res *r = l->res;
    free(l);
    ck_assert_int_eq(fcr_res_send(r), 0);
}

static int async_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    note("h;");
    later *l = calloc(1, sizeof *l);
    l->res = r;
    ev_timer_init(&l->t, later_cb, 0.02, 0.);
    ev_timer_start(fcr_req_loop(req), &l->t);
    return FCR_ASYNC;
}

static int sync_send(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    fcr_res_set_text(r, 200, "sent inside");
    ck_assert_int_eq(fcr_res_send(r), 0);
    ck_assert_int_eq(fcr_res_send(r), FCR_EINVAL);
    return FCR_ASYNC; /* already marked ready: sent when the handler returns */
}

START_TEST(async_handler_from_timer)
{
    fcr_app_after(app, mw_after, "x");
    fcr_app_route(app, FCR_GET, "/later", async_handler, NULL);
    fcr_app_route(app, FCR_GET, "/now", sync_send, NULL);
    get("/later");
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "{\"late\":true}");
    ck_assert_str_eq(trace, "h;timer;ax;");
    ck_assert_str_eq(hdr("X-After-x"), "1");
    run(&(fcr_test_req){.method = "HEAD", .path = "/later"});
    ck_assert_uint_eq(res.body_len, 0);
    ck_assert_str_eq(hdr("Content-Length"), "13");
    get("/now");
    ck_assert_str_eq(res.body, "sent inside");
}
END_TEST

/* ---- Consumes ------------------------------------------------------------------------- */

START_TEST(media_type_checked_before_size)
{
    fcr_route *r = fcr_app_route(app, FCR_POST, "/j", count_body, NULL);
    fcr_route_consumes(r, "application/json");
    fcr_route_set_max_body(r, 4);
    run(&(fcr_test_req){.method = "POST",
                        .path = "/j",
                        .headers = (const char *const[]){"Content-Type: text/plain", NULL},
                        .body = "too big for the limit"});
    check_problem(415);
    run(&(fcr_test_req){.method = "POST", .path = "/j", .body = "{}"});
    check_problem(415);
    run(&(fcr_test_req){
        .method = "POST",
        .path = "/j",
        .headers = (const char *const[]){"Content-Type: application/json; charset=utf-8", NULL},
        .body = "too big for the limit"});
    check_problem(413);
    run(&(fcr_test_req){.method = "POST",
                        .path = "/j",
                        .headers = (const char *const[]){"Content-Type: application/jsonx", NULL},
                        .body = "{}"});
    check_problem(415);
    run(&(fcr_test_req){.method = "POST",
                        .path = "/j",
                        .headers = (const char *const[]){"Content-Type: application/json", NULL},
                        .body = "{}"});
    ck_assert_str_eq(res.body, "2");
}
END_TEST

/* Arbitrary bytes in every field must give an answer, never a crash. */
START_TEST(hostile_params)
{
    fcr_app_route(app, FCR_GET | FCR_POST, "/(?<a>[^/]*)/(?<b>.*)", echo_request, NULL);
    fcr_app_route(app, FCR_GET, "/q", query_handler, NULL);
    fcr_app_route(app, FCR_POST, "/h", header_handler, NULL);
    fcr_app_route(app, FCR_POST, "/f", form_handler, NULL);
    fcr_app_route(app, FCR_POST, "/j", json_handler, NULL);
    const char *paths[] = {"",     "/",         "//",     "/%",     "/%zz/%", "/\xff\xfe/x",
                           "/q?%", "/q?&&&=&=", "/q?a=%", "/q?=%00"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        run(&(fcr_test_req){.path = paths[i]});
        ck_assert(res.status == 200 || res.status == 404);
    }
    run(&(fcr_test_req){.method = "POST",
                        .path = "/h",
                        .headers = (const char *const[]){"Cookie: ;;=;a;=b; c=\"", NULL},
                        .body = "\x00\x01"});
    ck_assert_int_eq(res.status, 200);
    run(&(fcr_test_req){
        .method = "POST",
        .path = "/f",
        .headers = (const char *const[]){"Content-Type: application/x-www-form-urlencoded", NULL},
        .body = "%=&=%&a=%2"});
    ck_assert_int_eq(res.status, 200);
    run(&(fcr_test_req){.method = "POST", .path = "/j", .body = "\xff\"\\u0000"});
    check_problem(400);
    run(&(fcr_test_req){.method = "", .path = "/x/y"});
    check_problem(405);
    run(&(fcr_test_req){.path = "/x/y", .params = (const char *const[]){"SCRIPT_NAME=", NULL}});
    ck_assert_int_eq(res.status, 404);
}
END_TEST

/* ---- The csv2json example (FILTER role) ----------------------------------------------- */

static void filter_csv(const char *csv)
{
    run(&(fcr_test_req){
        .role = FCR_FILTER, .path = "/data.csv", .data = csv, .data_len = strlen(csv)});
}

static void expect_csv_json(const char *expected)
{
    ck_assert_msg(res.status == 200, "status %d: %s", res.status, res.body);
    ck_assert_str_eq(hdr("Content-Type"), "application/json");
    json_t *want = json_loads(expected, 0, NULL);
    ck_assert_ptr_nonnull(want);
    json_t *got = body_json();
    ck_assert_msg(json_equal(got, want), "got %s, expected %s", res.body, expected);
    json_decref(got);
    json_decref(want);
}

START_TEST(csv2json_converts)
{
    fcr_app_set_filter(app, csv2json, NULL);
    filter_csv("name,note\r\nada,\"first, \"\"best\"\"\"\r\nbob,\r\n");
    expect_csv_json("[{\"name\":\"ada\",\"note\":\"first, \\\"best\\\"\"},"
                    "{\"name\":\"bob\",\"note\":\"\"}]");
    /* LF line ends, no final line break, a quoted line break, UTF-8. */
    filter_csv("a,b\n1,\"two\nlines\"\n\"\",\xc3\xa9");
    expect_csv_json("[{\"a\":\"1\",\"b\":\"two\\nlines\"},{\"a\":\"\",\"b\":\"\xc3\xa9\"}]");
    /* Empty file, header only, a blank last record of a one-column file. */
    filter_csv("");
    expect_csv_json("[]");
    filter_csv("x,y\r\n");
    expect_csv_json("[]");
    filter_csv("x\n1\n\n");
    expect_csv_json("[{\"x\":\"1\"},{\"x\":\"\"}]");
    /* The data's modification time becomes Last-Modified. */
    run(&(fcr_test_req){.role = FCR_FILTER,
                        .path = "/d",
                        .data = "k\nv\n",
                        .data_len = 4,
                        .data_last_mod = 784111777});
    ck_assert_str_eq(hdr("Last-Modified"), "Sun, 06 Nov 1994 08:49:37 GMT");
}
END_TEST

START_TEST(csv2json_refuses_malformed)
{
    fcr_app_set_filter(app, csv2json, NULL);
    const struct {
        const char *csv, *detail;
    } bad[] = {
        {"a,b\n1,2\n3\n", "line 3: 1 fields where the header has 2"},
        {"a,b\n1,2,3\n", "line 2: 3 fields where the header has 2"},
        {"a,b\n\"1,2\n", "line 2: unterminated quoted field"},
        {"a,b\n\"1\"x,2\n", "line 2: text after a closing quote"},
        {"a,b\n1\"2,3\n", "line 2: quote inside an unquoted field"},
        {"a,b\r1,2\n", "line 1: carriage return without line feed"},
        {"a,a\n1,2\n", "line 1: repeated name in the header row"},
        {"a\n\xff\n", "line 2: field is not valid UTF-8"},
        {"a,b\n1,2\n\n", "line 3: 1 fields where the header has 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        filter_csv(bad[i].csv);
        const char *d = check_problem(422);
        ck_assert_msg(strstr(d, bad[i].detail) != NULL, "case %zu: %s", i, d);
    }
}
END_TEST

/* ---- README's tutorial ---------------------------------------------------------------- */

START_TEST(tutorial_program)
{
    /* Registered as examples/tutorial.c's main does. */
    fcr_route *r = fcr_app_route(app, FCR_GET, "/hello/(?<name>[^/]+)", hello, NULL);
    ck_assert_int_eq(fcr_route_guard(r, check_token, NULL), 0);
    ck_assert_int_eq(fcr_app_set_authorizer(app, check_token, NULL), 0);
    /* The client's /hello/w%C3%B6rld, as the web server decodes it. */
    get("/hello/w\xc3\xb6rld");
    check_problem(401);
    ck_assert_str_eq(hdr("WWW-Authenticate"), "Bearer");
    run(&(fcr_test_req){.path = "/hello/w\xc3\xb6rld",
                        .headers = (const char *const[]){"Authorization: Bearer let-me-in", NULL}});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(hdr("Content-Type"), "application/json");
    ck_assert_str_eq(res.body, "{\"hello\":\"w\xc3\xb6rld\",\"user\":\"guest\"}");
    run(&(fcr_test_req){.role = FCR_AUTHORIZER,
                        .path = "/hello/x",
                        .headers = (const char *const[]){"Authorization: Bearer let-me-in", NULL}});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(hdr("Variable-APP_USER"), "guest");
}
END_TEST

/* ---- Output back-pressure and aborts -------------------------------------------------- */

#define BIG_ANSWER (5u * 1024u * 1024u + 3u)

static int big_answer(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    char *b = malloc(BIG_ANSWER);
    for (size_t i = 0; i < BIG_ANSWER; i++)
        b[i] = (char)('a' + i % 26);
    int rc = fcr_res_set_body(r, b, BIG_ANSWER);
    free(b);
    return rc;
}

START_TEST(large_answer_waits_for_drain)
{
    fcr_app_route(app, FCR_GET, "/big", big_answer, NULL);
    get("/big");
    ck_assert_int_eq(res.status, 200);
    ck_assert_uint_eq(res.body_len, BIG_ANSWER);
    for (size_t i = 0; i < BIG_ANSWER; i++) {
        if (res.body[i] != (char)('a' + i % 26))
            ck_abort_msg("byte %zu differs", i);
    }
    char cl[32];
    snprintf(cl, sizeof cl, "%u", BIG_ANSWER);
    ck_assert_str_eq(hdr("Content-Length"), cl);
}
END_TEST

/* The user's slot is the user's: a handler that keeps its own pointer there loses nothing of
 * the framework (path, query, params, arena, and the drain of a large answer). */
static int userdata_value;

static int user_slot_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    fcr_req_set_userdata(req, &userdata_value);
    ck_assert_ptr_eq(fcr_req_userdata(req), &userdata_value);
    ck_assert_ptr_nonnull(fcr_req_path(req));
    ck_assert_str_eq(fcr_req_path(req), "/slot/x");
    ck_assert_str_eq(fcr_req_path_param(req, "v"), "x");
    ck_assert_str_eq(fcr_req_query(req, "q"), "1");
    ck_assert_ptr_nonnull(fcr_req_alloc(req, 16));
    return big_answer(req, r, data);
}

START_TEST(user_slot_is_the_users)
{
    fcr_app_route(app, FCR_GET, "/slot/(?<v>[a-z]+)", user_slot_handler, NULL);
    get("/slot/x?q=1");
    ck_assert_int_eq(res.status, 200);
    ck_assert_uint_eq(res.body_len, BIG_ANSWER);
    ck_assert_int_eq(res.body[BIG_ANSWER - 1], (char)('a' + (BIG_ANSWER - 1) % 26));
}
END_TEST

/* Sends GET `path` on a new connection that reads nothing more than asked. */
static fcl_conn *send_get(const char *addr, const char *path, int rcvbuf)
{
    fcl_conn *c = fcl_connect(addr, rcvbuf);
    ck_assert_ptr_nonnull(c);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, 0,
                    (const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME", path, NULL}, NULL,
                    0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
    return c;
}

/* The status line of the answer on `c`, read whole. */
static int answer_status(fcl_conn *c, char *retry_after, size_t cap)
{
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    int status = atoi(cgi.head + 8);
    if (retry_after && !fcl_cgi_header(&cgi, "Retry-After", retry_after, cap))
        retry_after[0] = '\0';
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    return status;
}

/* Answers waiting for clients that do not read hold at most the output memory: past it, 503
 * with Retry-After; once the memory is free again, the same answer goes out. */
START_TEST(slow_readers_hold_at_most_the_output_memory)
{
    fcr_app_route(app, FCR_GET, "/big", big_answer, NULL); /* 5 MiB */
    ck_assert_int_eq(fcr_app_set_max_output_memory(app, 0), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_set_max_output_memory(app, 8u << 20), 0);
    server_thread t;
    server_start(&t);
    fcl_conn *stuck = send_get(t.addr, "/big", 4096); /* reads nothing: holds 5 MiB */
    fcl_record first;
    ck_assert_int_eq(fcl_read_record(stuck, &first), 1); /* its answer has begun */
    fcl_record_free(&first);
    char retry[16];
    fcl_conn *second = send_get(t.addr, "/big", 0);
    ck_assert_int_eq(answer_status(second, retry, sizeof retry), 503);
    ck_assert_str_eq(retry, "1");
    fcl_close(second);
    fcl_close(stuck); /* its answer's memory is released */
    double t0 = fcl_now();
    int status = 0;
    while (status != 200 && fcl_now() - t0 < 10) {
        fcl_conn *third = send_get(t.addr, "/big", 0);
        status = answer_status(third, NULL, 0);
        fcl_close(third);
    }
    ck_assert_int_eq(status, 200);
    server_stop(&t);
}
END_TEST

static atomic_int send_rc = 1;
static atomic_int slow_entered;

static void late_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    later *l = (later *)w;
    fcr_res *r = l->res;
    free(l);
    fcr_res_set_text(r, 200, "too late");
    send_rc = fcr_res_send(r);
}

static int slow_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    slow_entered++;
    later *l = calloc(1, sizeof *l);
    l->res = r;
    ev_timer_init(&l->t, late_cb, 0.1, 0.);
    ev_timer_start(fcr_req_loop(req), &l->t);
    return FCR_ASYNC;
}

/* Polls `cond` every millisecond for up to 20 s. */
#define WAIT_FOR(cond, what)                                                                       \
    do {                                                                                           \
        double deadline_ = fcl_now() + 20;                                                         \
        while (!(cond)) {                                                                          \
            ck_assert_msg(fcl_now() < deadline_, "waited 20 s for %s", what);                      \
            poll(NULL, 0, 1);                                                                      \
        }                                                                                          \
    } while (0)

/* Sends GET `path` on a new connection, waits until the server is at work on it (the slow
 * handler ran, or, for another path, the answer began), and closes it without reading. */
static void hang_up(const char *addr, const char *path, int rcvbuf)
{
    int entered = slow_entered;
    fcl_conn *c = fcl_connect(addr, rcvbuf);
    ck_assert_ptr_nonnull(c);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, 0,
                    (const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME", path, NULL}, NULL,
                    0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
    if (strcmp(path, "/slow") == 0) {
        WAIT_FOR(slow_entered > entered, "the slow handler");
    } else {
        struct pollfd p = {c->fd, POLLIN, 0};
        ck_assert_msg(c->rx.len > c->rx_off || poll(&p, 1, 20000) == 1,
                      "the answer did not begin within 20 s");
    }
    fcl_close(c);
}

/* A plain request still works on the server. */
static void still_serving(const char *addr)
{
    fcl_conn *c = fcl_connect(addr, 0);
    ck_assert_ptr_nonnull(c);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(
        fcl_request(c, 1, FCR_RESPONDER, 0,
                    (const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME", "/ok", NULL},
                    NULL, 0, &r),
        0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    ck_assert_uint_eq(cgi.body_len, 2);
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    fcl_close(c);
}

START_TEST(client_gone_during_async_and_output)
{
    fcr_app_route(app, FCR_GET, "/slow", slow_handler, NULL);
    fcr_app_route(app, FCR_GET, "/big", big_answer, NULL);
    fcr_app_route(app, FCR_GET, "/ok", traced_handler, NULL);
    server_thread t;
    server_start(&t);
    send_rc = 1;
    /* The client leaves while the handler is pending: its late send reports the abort and
     * releases everything (the sanitizers check). */
    hang_up(t.addr, "/slow", 0);
    WAIT_FOR(send_rc != 1, "the late send");
    ck_assert_int_eq(send_rc, FCR_ECLOSED);
    still_serving(t.addr);
    /* The client leaves while the answer waits for the output queue to drain. */
    hang_up(t.addr, "/big", 4096);
    wait_server_idle(&t);
    still_serving(t.addr);
    server_stop(&t);
}
END_TEST

/* ---- fcr_test_send ---------------------------------------------------------------------- */

static int send_target(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    size_t len;
    const char *body = fcr_req_body(req, FCR_STDIN, &len);
    const char *q = fcr_req_query(req, "q");
    const char *token = fcr_req_header(req, "X-Token");
    fcr_res_set_header(r, "X-Id", fcr_req_path_param(req, "id"));
    fcr_res_set_status(r, 201);
    return fcr_res_printf(r, "%s q=%s token=%s type=%d body=%.*s", fcr_req_method(req), q ? q : "-",
                          token ? token : "-", fcr_req_content_type_is(req, "text/plain"), (int)len,
                          body) < 0
               ? FCR_ENOMEM
               : 0;
}

/* fcr_test_send sends one request to an application listening on an address and parses its
 * answer; an address nobody listens on, or a malformed one, is an error. */
START_TEST(test_send_asks_a_running_server)
{
    fcr_app_route(app, FCR_POST, "/send/(?<id>[0-9]+)", send_target, NULL);
    server_thread t;
    server_start(&t);
    const char *const headers[] = {"X-Token: abc", "Content-Type: text/plain", NULL};
    fcr_test_res tr;
    ck_assert_int_eq(fcr_test_send(t.addr,
                                   &(fcr_test_req){.method = "POST",
                                                   .path = "/send/42?q=1",
                                                   .headers = headers,
                                                   .body = "hello"},
                                   &tr),
                     0);
    ck_assert_int_eq(tr.status, 201);
    ck_assert_str_eq(fcr_test_res_header(&tr, "x-id"), "42");
    ck_assert_str_eq(tr.body, "POST q=1 token=abc type=1 body=hello");
    ck_assert_int_eq(tr.protocol_status, 0);
    ck_assert_uint_eq(tr.app_status, 0);
    fcr_test_res_free(&tr);
    /* The same server again: a path it does not know. */
    ck_assert_int_eq(fcr_test_send(t.addr, &(fcr_test_req){.path = "/other"}, &tr), 0);
    ck_assert_int_eq(tr.status, 404);
    ck_assert_str_eq(fcr_test_res_header(&tr, "Content-Type"), "application/problem+json");
    fcr_test_res_free(&tr);
    server_stop(&t);
    /* Nobody listens there any more. */
    int rc = fcr_test_send(t.addr, &(fcr_test_req){.path = "/send/1"}, &tr);
    ck_assert_msg(rc == FCR_EIO || rc == FCR_EADDR, "fcr_test_send to a closed address: %d", rc);
    fcr_test_res_free(&tr);
    ck_assert_int_eq(fcr_test_send("nonsense", &(fcr_test_req){0}, &tr), FCR_EADDR);
    ck_assert_int_eq(fcr_test_send(NULL, &(fcr_test_req){0}, &tr), FCR_EINVAL);
    fcr_test_res_free(&tr);
}
END_TEST

static bool handler_ran;

static int slow_and_flag(fcr_req *req, fcr_res *r, void *data)
{
    handler_ran = true;
    ev_break(fcr_req_loop(req), EVBREAK_ALL);
    return slow_handler(req, r, data);
}

/* Grows the body by appends past what a context holds in place and adds many headers; the
 * query names what to send. */
static int grow_answer(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    const char *n = fcr_req_query(req, "n");
    const char *h = fcr_req_query(req, "h");
    int rc = 0;
    for (int i = 0; n && i < atoi(n) && rc >= 0; i++)
        rc = fcr_res_printf(r, "%c", 'a' + i % 26);
    for (int i = 0; h && i < atoi(h) && rc >= 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "X-H%d", i);
        rc = fcr_res_add_header(r, name, name + 2);
    }
    return rc < 0 ? rc : 0;
}

START_TEST(contexts_reused_and_bodies_grown)
{
    /* A body limit of its own: the path is also routed before the body is read. */
    ck_assert_int_eq(
        fcr_route_set_max_body(fcr_app_route(app, FCR_GET, "/grow", grow_answer, NULL), 1u << 20),
        0);
    char long_path[400];
    memset(long_path, 'p', sizeof long_path - 1);
    long_path[0] = '/';
    long_path[sizeof long_path - 1] = '\0';
    get(long_path);
    check_problem(404);
    static const int sizes[] = {10000, 0, 13, 4095, 4096, 300, 70000, 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int n = sizes[k], h = k % 2 ? 0 : 40;
        char path[64];
        snprintf(path, sizeof path, "/grow?n=%d&h=%d", n, h);
        run(&(fcr_test_req){.path = path});
        ck_assert_int_eq(res.status, 200);
        ck_assert_uint_eq(res.body_len, (size_t)n);
        for (int i = 0; i < n; i++) {
            if (res.body[i] != (char)('a' + i % 26))
                ck_abort_msg("size %d: byte %d differs", n, i);
        }
        /* Nothing is left of the previous request's headers. */
        if (h) {
            ck_assert_str_eq(hdr("X-H0"), "H0");
            ck_assert_str_eq(hdr("X-H39"), "H39");
        } else {
            ck_assert_ptr_null(hdr("X-H0"));
        }
    }
}
END_TEST

START_TEST(async_answer_after_server_freed)
{
    fcr_app_route(app, FCR_GET, "/slow", slow_and_flag, NULL);
    struct ev_loop *loop = ev_loop_new(0);
    fcr_server *srv = fcr_app_server_new(app, loop, NULL, NULL);
    ck_assert_ptr_nonnull(srv);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(fcr_server_adopt(srv, sv[0]), 0);
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, 1, FCR_RESPONDER, 0,
                    (const char *const[]){"REQUEST_METHOD", "GET", "SCRIPT_NAME", "/slow", NULL},
                    NULL, 0, NULL, 0);
    ck_assert_int_eq(write(sv[1], b.data, b.len), (ssize_t)b.len);
    fcl_buf_free(&b);
    while (!handler_ran)
        ev_run(loop, EVRUN_ONCE);
    /* The server goes away with the answer pending; the late send is told and cleans up. */
    fcr_server_free(srv);
    send_rc = 1;
    while (send_rc == 1)
        ev_run(loop, EVRUN_ONCE);
    ck_assert_int_eq(send_rc, FCR_ECLOSED);
    close(sv[1]);
    ev_loop_destroy(loop);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("app");
    TCase *tc = tcase_create("request");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, method_path_and_params);
    tcase_add_test(tc, json_answers_match_janssons_dump);
    tcase_add_test(tc, request_ids_in_answers_and_log_lines);
    tcase_add_test(tc, json_log_lines);
    tcase_add_test(tc, cors_policy);
    tcase_add_test(tc, conditional_requests);
    tcase_add_test(tc, validation_errors_point);
    tcase_add_test(tc, cors_preflight_and_answers);
    tcase_add_test(tc, prefix_and_path_info);
    tcase_add_test(tc, route_on_request_uri);
    tcase_add_test(tc, path_params_decoded_once);
    tcase_add_test(tc, path_params_from_request_uri_without_script_name);
    tcase_add_test(tc, query_params);
    tcase_add_test(tc, headers_cookies_raw_params);
    tcase_add_test(tc, form_bodies);
    tcase_add_test(tc, json_body_and_position_of_errors);
    tcase_add_test(tc, vars_user_and_arena_allocations);
    tcase_add_test(tc, hostile_params);
    suite_add_tcase(s, tc);

    tc = tcase_create("response");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, status_with_reason_phrase);
    tcase_add_test(tc, headers_body_and_injection);
    tcase_add_test(tc, text_and_redirect);
    tcase_add_test(tc, json_set_borrows_and_set_new_takes_the_reference);
    tcase_add_test(tc, problem_json_shape);
    tcase_add_test(tc, head_has_no_body);
    tcase_add_test(tc, not_found_not_allowed_options);
    tcase_add_test(tc, handler_error_gives_500_and_stderr);
    tcase_add_test(tc, error_verdicts_give_500_without_a_made_up_cause);
    tcase_add_test(tc, bad_pattern_refused);
    tcase_add_test(tc, bad_options_and_listeners_are_refused);
    tcase_add_test(tc, request_log_and_id);
    tcase_add_test(tc, timeout_option_values_are_checked);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, too_big_with_content_length);
    tcase_add_test(tc, too_big_without_content_length);
    tcase_add_test(tc, too_big_answered_before_the_body_is_sent);
    tcase_add_test(tc, media_type_checked_before_size);
    suite_add_tcase(s, tc);

    tc = tcase_create("middleware");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, middleware_order_and_short_circuit);
    tcase_add_test(tc, after_middleware_changes_response);
    tcase_add_test(tc, mounted_app_middleware_and_limits);
    tcase_add_test(tc, one_authorizer_two_roles);
    tcase_add_test(tc, roles_without_handlers_are_refused);
    tcase_add_test(tc, filter_role);
    tcase_add_test(tc, async_handler_from_timer);
    suite_add_tcase(s, tc);

    tc = tcase_create("csv2json");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, csv2json_converts);
    tcase_add_test(tc, csv2json_refuses_malformed);
    tcase_add_test(tc, tutorial_program);
    suite_add_tcase(s, tc);

    tc = tcase_create("output");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, large_answer_waits_for_drain);
    tcase_add_test(tc, user_slot_is_the_users);
    tcase_add_test(tc, client_gone_during_async_and_output);
    tcase_add_test(tc, slow_readers_hold_at_most_the_output_memory);
    tcase_add_test(tc, test_send_asks_a_running_server);
    tcase_add_test(tc, async_answer_after_server_freed);
    tcase_add_test(tc, contexts_reused_and_bodies_grown);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
