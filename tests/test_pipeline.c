/* The pipeline seen from inside: a request is routed once, also when a route's own body limit
 * makes the framework route it before the body is read (the router is wrapped at link time,
 * -Wl,--wrap=fcr_router_match, to count the lookups); the context a request gets when its
 * params arrive goes back to the app when the request never completes; a variable set twice,
 * by fcr_req_set_var or fcr_auth_set_var, is one variable with the later value. */
#include <check.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcrest.h>
#include <fcrest/testing.h>

#include "app/app_int.h"
#include "fcgi_client.h"

/* ---- Counting the router's lookups -------------------------------------------------------- */

int __real_fcr_router_match(fcr_router *r, unsigned method, const char *path, size_t len,
                            unsigned flags, fcr_match *m, char *scratch, size_t cap);
int __wrap_fcr_router_match(fcr_router *r, unsigned method, const char *path, size_t len,
                            unsigned flags, fcr_match *m, char *scratch, size_t cap);

static unsigned lookups;

int __wrap_fcr_router_match(fcr_router *r, unsigned method, const char *path, size_t len,
                            unsigned flags, fcr_match *m, char *scratch, size_t cap)
{
    lookups++;
    return __real_fcr_router_match(r, method, path, len, flags, m, scratch, cap);
}

static fcr_app *app;
static fcr_test_res res;

static void setup(void)
{
    app = fcr_app_new();
    ck_assert_ptr_nonnull(app);
    memset(&res, 0, sizeof res);
}

static void teardown(void)
{
    fcr_test_res_free(&res);
    fcr_app_free(app);
    app = NULL;
}

/* Runs one request through the app and returns how many lookups it took. */
static unsigned run(const fcr_test_req *t)
{
    fcr_test_res_free(&res);
    lookups = 0;
    int rc = fcr_app_test(app, t, &res);
    ck_assert_msg(rc == 0, "fcr_app_test: %s", fcr_err_name(rc));
    ck_assert_int_eq(res.protocol_status, 0);
    return lookups;
}

static unsigned count_headers(const char *name)
{
    unsigned n = 0;
    for (size_t i = 0; i < res.nheaders; i++)
        n += strcmp(res.headers[i].name, name) == 0;
    return n;
}

/* ---- Routed once -------------------------------------------------------------------------- */

static fcr_handler_result echo_note(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    size_t len;
    fcr_req_body(req, FCR_STDIN, &len);
    return fcr_res_printf(r, "note %s, %zu bytes", fcr_req_path_param(req, "id"), len) < 0
               ? FCR_HANDLER_ERROR
               : FCR_DONE;
}

START_TEST(routed_once)
{
    /* A route with its own body limit is routed before its body is read; the match made then
     * serves the handler (path params included). */
    fcr_route *small = fcr_app_route(app, FCR_POST, "/notes/(?<id>[0-9]+)", echo_note, NULL);
    ck_assert_int_eq(fcr_route_set_max_body(small, 16), 0);
    fcr_app_route(app, FCR_GET | FCR_POST, "/other/(?<id>[a-z]+)", echo_note, NULL);
    fcr_app *sub = fcr_app_new();
    fcr_app_route(sub, FCR_POST, "/x/(?<id>[0-9]+)", echo_note, NULL);
    ck_assert_int_eq(fcr_app_set_max_body(sub, 32), 0);
    ck_assert_int_eq(fcr_app_mount(app, "/sub", sub), 0);

    ck_assert_uint_eq(run(&(fcr_test_req){.method = "POST", .path = "/notes/7", .body = "hello"}),
                      1);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "note 7, 5 bytes");

    /* Refused for its declared size with the route's limit: routed once all the same. */
    char big[64];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ck_assert_uint_eq(run(&(fcr_test_req){.method = "POST", .path = "/notes/7", .body = big}), 1);
    ck_assert_int_eq(res.status, 413);
    /* Cut off while it arrives (no declared length). */
    ck_assert_uint_eq(
        run(&(fcr_test_req){
            .method = "POST", .path = "/notes/7", .body = big, .no_content_length = true}),
        1);
    ck_assert_int_eq(res.status, 413);

    /* Routes without a limit of their own, a mounted app's, no route, a wrong method. */
    ck_assert_uint_eq(run(&(fcr_test_req){.path = "/other/abc"}), 1);
    ck_assert_str_eq(res.body, "note abc, 0 bytes");
    ck_assert_uint_eq(run(&(fcr_test_req){.method = "POST", .path = "/sub/x/42", .body = "b"}), 1);
    ck_assert_str_eq(res.body, "note 42, 1 bytes");
    ck_assert_uint_eq(run(&(fcr_test_req){.path = "/nothing"}), 1);
    ck_assert_int_eq(res.status, 404);
    ck_assert_uint_eq(run(&(fcr_test_req){.method = "DELETE", .path = "/notes/7"}), 1);
    ck_assert_int_eq(res.status, 405);
}
END_TEST

/* ---- A request that never completes ------------------------------------------------------- */

static bool handler_ran;

static fcr_handler_result mark_ran(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)r, (void)data;
    handler_ran = true;
    return FCR_DONE;
}

START_TEST(unfinished_request_gives_back_its_context)
{
    fcr_route *route = fcr_app_route(app, FCR_POST, "/upload", mark_ran, NULL);
    ck_assert_int_eq(fcr_route_set_max_body(route, 1000), 0);
    struct ev_loop *loop = ev_loop_new(0);
    fcr_server *srv = fcr_app_server_new(app, loop, NULL, NULL);
    ck_assert_ptr_nonnull(srv);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(fcr_server_adopt(srv, sv[0]), 0);

    /* Params and a part of the declared body, then the web server goes away. */
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_buf nv;
    fcl_buf_init(&nv);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "POST");
    fcl_nv_adds(&nv, "SCRIPT_NAME", "/upload");
    fcl_nv_adds(&nv, "CONTENT_LENGTH", "100");
    fcl_put_begin(&b, 1, FCR_RESPONDER, 0);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
    fcl_put_stream(&b, FCGI_STDIN, 1, "0123456789", 10, 0, FCL_PAD8, false);
    ck_assert_int_eq(write(sv[1], b.data, b.len), (ssize_t)b.len);
    fcl_buf_free(&b);
    fcl_buf_free(&nv);
    fcr_server_stats st;
    for (int i = 0; i < 1000; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        fcr_server_get_stats(srv, &st);
        if (st.active_reqs == 1)
            break;
    }
    ck_assert_uint_eq(st.active_reqs, 1);
    ck_assert_uint_eq(app->nspare, 0); /* the request holds its context */

    close(sv[1]);
    for (int i = 0; i < 1000; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        fcr_server_get_stats(srv, &st);
        if (st.conns == 0 && app->nspare == 1)
            break;
    }
    ck_assert_uint_eq(st.conns, 0);
    ck_assert(!handler_ran);
    /* Freed with the request: back among the app's spare contexts. */
    ck_assert_uint_eq(app->nspare, 1);
    fcr_server_free(srv);
    ev_loop_destroy(loop);
}
END_TEST

/* ---- A variable set twice ----------------------------------------------------------------- */

static fcr_handler_result set_twice(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    if (fcr_req_set_var(req, "color", "red") < 0 || fcr_req_set_var(req, "color", "blue") < 0 ||
        fcr_req_set_var(req, "size", "xl") < 0)
        return FCR_HANDLER_ERROR;
    const fcr__ctx *ctx = fcr__ctx_of(req);
    return fcr_res_printf(r, "%s %s %s %zu", fcr_req_var(req, "color"), fcr_req_var(req, "size"),
                          fcr_req_var(req, "who"), ctx->vars.kv.n) < 0
               ? FCR_HANDLER_ERROR
               : FCR_DONE;
}

static fcr_auth_result auth_twice(fcr_req *req, fcr_res *r, fcr_auth *auth, void *data)
{
    (void)req, (void)r, (void)data;
    if (fcr_auth_set_var(auth, "who", "first") < 0 || fcr_auth_set_var(auth, "tier", "gold") < 0 ||
        fcr_auth_set_var(auth, "who", "second") < 0)
        return FCR_AUTH_ERROR;
    return FCR_ALLOW;
}

START_TEST(a_later_value_replaces_the_earlier)
{
    /* fcr_req_set_var: the later value, and one entry per name. */
    fcr_route *route = fcr_app_route(app, FCR_GET, "/vars", set_twice, NULL);
    run(&(fcr_test_req){.path = "/vars"});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "blue xl (null) 2");

    /* An authorizer as a guard: its variables become request variables by the same rule. */
    ck_assert_int_eq(fcr_route_guard(route, auth_twice, NULL), 0);
    run(&(fcr_test_req){.path = "/vars"});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "blue xl second 4");

    /* The AUTHORIZER role: one Variable-NAME header per name, with the later value. */
    ck_assert_int_eq(fcr_app_set_authorizer(app, auth_twice, NULL), 0);
    run(&(fcr_test_req){.role = FCR_AUTHORIZER, .path = "/anything"});
    ck_assert_int_eq(res.status, 200);
    ck_assert_uint_eq(count_headers("Variable-who"), 1);
    ck_assert_str_eq(fcr_test_res_header(&res, "Variable-who"), "second");
    ck_assert_uint_eq(count_headers("Variable-tier"), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("pipeline");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, routed_once);
    tcase_add_test(tc, unfinished_request_gives_back_its_context);
    tcase_add_test(tc, a_later_value_replaces_the_earlier);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
