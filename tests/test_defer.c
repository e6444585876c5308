/* fcr_defer: blocking work on the pool, and handlers, guards, before-middleware and the
 * AUTHORIZER role resumed by the work's done. In process (fcr_app_test) and over real sockets
 * (a server on its own thread, the test client playing the web server). Work that must wait
 * waits on a gate the test opens: the tests assert completion and order, not timings. */
#include <check.h>
#include <ev.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcrest.h>
#include <fcrest/testing.h>

#include "fcgi_client.h"

static fcr_app *app;
static fcr_test_res res;

/* ---- The gate: work that waits until the test lets it go --------------------------------- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open = true;
static atomic_int work_started; /* pieces of work that have begun */
static atomic_int work_done;    /* pieces of work that have returned */
static atomic_int done_runs;    /* done functions run */
static atomic_int done_aborted; /* done functions that saw the request aborted */
static atomic_int live;         /* job data allocated and not yet freed */

static void gate_set(bool open)
{
    pthread_mutex_lock(&gate_mu);
    gate_open = open;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static void gate_wait(void)
{
    pthread_mutex_lock(&gate_mu);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
}

#define WAIT_FOR(cond, what)                                                                       \
    do {                                                                                           \
        double deadline_ = fcl_now() + 20;                                                         \
        while (!(cond)) {                                                                          \
            ck_assert_msg(fcl_now() < deadline_, "timed out waiting for %s", what);                \
            poll(NULL, 0, 1);                                                                      \
        }                                                                                          \
    } while (0)

static void setup(void)
{
    app = fcr_app_new();
    ck_assert_ptr_nonnull(app);
    memset(&res, 0, sizeof res);
    gate_set(true);
    atomic_store(&work_started, 0);
    atomic_store(&work_done, 0);
    atomic_store(&done_runs, 0);
    atomic_store(&done_aborted, 0);
    atomic_store(&live, 0);
}

static void teardown(void)
{
    fcr_test_res_free(&res);
    gate_set(true);
    fcr_app_free(app);
    app = NULL;
    ck_assert_int_eq(atomic_load(&live), 0);
}

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

/* ---- A job: its input, what the work computed, and the thread it ran on ----------------- */

typedef struct job {
    long in, out;
    int rounds; /* done defers again while > 1 */
    pthread_t loop_thread, work_thread;
    char token[32];
    fcr_auth *auth;
} job;

static job *job_new(fcr_req *req, long in)
{
    job *j = calloc(1, sizeof *j);
    ck_assert_ptr_nonnull(j);
    atomic_fetch_add(&live, 1);
    j->in = in;
    j->loop_thread = pthread_self();
    const char *q = fcr_req_query(req, "n");
    if (q)
        j->in = atol(q);
    return j;
}

static void job_free(job *j)
{
    atomic_fetch_sub(&live, 1);
    free(j);
}

static void work_double(void *data)
{
    job *j = data;
    atomic_fetch_add(&work_started, 1);
    gate_wait();
    j->work_thread = pthread_self();
    j->out = j->in * 2;
    atomic_fetch_add(&work_done, 1);
}

/* ---- Handlers ---------------------------------------------------------------------------- */

static int handler_done(fcr_req *req, fcr_res *r, void *data)
{
    job *j = data;
    atomic_fetch_add(&done_runs, 1);
    if (fcr_req_aborted(req)) {
        atomic_fetch_add(&done_aborted, 1);
        job_free(j);
        return FCR_DONE;
    }
    /* done runs on the loop's thread, the work did not. */
    bool on_loop = pthread_equal(pthread_self(), j->loop_thread);
    bool off_loop = !pthread_equal(j->work_thread, j->loop_thread);
    if (--j->rounds > 0) {
        j->in = j->out;
        int rc = fcr_defer(req, r, work_double, handler_done, j);
        if (rc < 0) {
            job_free(j);
            return rc;
        }
        return FCR_ASYNC;
    }
    int rc = fcr_res_printf(r, "out=%ld loop=%d pool=%d", j->out, on_loop, off_loop);
    job_free(j);
    return rc < 0 ? rc : FCR_DONE;
}

/* Defers; on failure returns FCR_ASYNC all the same (the framework answers). */
static fcr_handler_result deferred_handler(fcr_req *req, fcr_res *r, void *data)
{
    job *j = job_new(req, 21);
    j->rounds = data ? *(const int *)data : 1;
    if (fcr_defer(req, r, work_double, handler_done, j) < 0)
        job_free(j);
    return FCR_ASYNC;
}

static fcr_handler_result fast_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_text(r, 200, "fast") < 0 ? FCR_HANDLER_ERROR : FCR_DONE;
}

/* A handler's deferred work runs on a pool thread and its done answers on the loop. */
START_TEST(deferred_handler_answers_from_done)
{
    fcr_app_route(app, FCR_GET, "/d", deferred_handler, NULL);
    get("/d?n=5");
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "out=10 loop=1 pool=1");
    ck_assert_int_eq(atomic_load(&done_runs), 1);
    /* Again, on the next loop fcr_app_test makes: the pool follows the loop. */
    get("/d?n=7");
    ck_assert_str_eq(res.body, "out=14 loop=1 pool=1");
}
END_TEST

/* done may defer again; the request ends after the last round. */
START_TEST(done_defers_again)
{
    static const int three = 3;
    fcr_app_route(app, FCR_GET, "/d", deferred_handler, (void *)&three);
    get("/d?n=1");
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "out=8 loop=1 pool=1");
    ck_assert_int_eq(atomic_load(&done_runs), 3);
    ck_assert_int_eq(atomic_load(&work_done), 3);
}
END_TEST

static int misuse_done(fcr_req *req, fcr_res *r, void *data)
{
    (void)req, (void)r;
    atomic_fetch_add(&done_runs, 1);
    job_free(data);
    return FCR_DONE;
}

static fcr_handler_result misuse_handler(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    job *j = job_new(req, 1);
    if (fcr_defer(req, r, work_double, misuse_done, j) < 0)
        job_free(j);
    /* A second deferral before done is refused. */
    ck_assert_int_eq(fcr_defer(req, r, work_double, misuse_done, j), FCR_EINVAL);
    fcr_res_set_text(r, 200, "too early");
    return FCR_DONE; /* not FCR_ASYNC: 500 once done has run */
}

/* A callback that defers but returns another verdict fails with 500, after its done ran; out of
 * a callback fcr_defer is refused. */
START_TEST(deferring_without_the_async_verdict_fails)
{
    fcr_app_route(app, FCR_GET, "/m", misuse_handler, NULL);
    get("/m");
    ck_assert_int_eq(res.status, 500);
    ck_assert_int_eq(atomic_load(&done_runs), 1);
    ck_assert_int_eq(fcr_defer(NULL, NULL, work_double, misuse_done, NULL), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_set_threads(app, 0), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_set_threads(app, FCR_MAX_THREADS + 1), FCR_EINVAL);
    ck_assert_int_eq(fcr_app_set_threads(NULL, 1), FCR_EINVAL);
}
END_TEST

/* ---- Guards, middleware, the AUTHORIZER role ------------------------------------------- */

static void work_check_token(void *data)
{
    job *j = data;
    atomic_fetch_add(&work_started, 1);
    gate_wait();
    j->work_thread = pthread_self();
    j->out = strcmp(j->token, "good") == 0;
    atomic_fetch_add(&work_done, 1);
}

static int auth_done(fcr_req *req, fcr_res *r, void *data)
{
    job *j = data;
    atomic_fetch_add(&done_runs, 1);
    int verdict = FCR_DENY;
    if (fcr_req_aborted(req)) {
        atomic_fetch_add(&done_aborted, 1);
    } else if (j->out) {
        int rc = fcr_auth_set_user(j->auth, "REMOTE_USER", "alice");
        if (rc == 0)
            rc = fcr_auth_set_var(j->auth, "PLAN", "gold");
        verdict = rc < 0 ? rc : FCR_ALLOW;
    } else {
        fcr_res_set_problem(r, 401, "bad token");
        fcr_res_set_header(r, "WWW-Authenticate", "Bearer");
    }
    job_free(j);
    return verdict;
}

static fcr_auth_result deferred_authorizer(fcr_req *req, fcr_res *r, fcr_auth *auth, void *data)
{
    (void)data;
    job *j = job_new(req, 0);
    const char *t = fcr_req_header(req, "X-Token");
    snprintf(j->token, sizeof j->token, "%s", t ? t : "");
    j->auth = auth;
    int rc = fcr_defer(req, r, work_check_token, auth_done, j);
    if (rc < 0)
        job_free(j);
    return FCR_AUTH_ASYNC;
}

static fcr_handler_result whoami(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    const char *u = fcr_req_user(req), *plan = fcr_req_var(req, "PLAN"),
               *mw = fcr_req_var(req, "MW");
    return fcr_res_printf(r, "user=%s plan=%s mw=%s", u ? u : "-", plan ? plan : "-",
                          mw ? mw : "-") < 0
               ? FCR_HANDLER_ERROR
               : FCR_DONE;
}

/* A deferred guard allows (its done sets the user and variables the handler then sees) or
 * denies (the handler is skipped, done's denial is the answer). */
START_TEST(deferred_guard_allows_and_denies)
{
    fcr_route_guard(fcr_app_route(app, FCR_GET, "/me", whoami, NULL), deferred_authorizer, NULL);
    const char *const good[] = {"X-Token: good", NULL}, *const bad[] = {"X-Token: bad", NULL};
    run(&(fcr_test_req){.path = "/me", .headers = good});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "user=alice plan=gold mw=-");
    run(&(fcr_test_req){.path = "/me", .headers = bad});
    ck_assert_int_eq(res.status, 401);
    ck_assert_str_eq(fcr_test_res_header(&res, "WWW-Authenticate"), "Bearer");
    ck_assert_ptr_nonnull(strstr(res.body, "bad token"));
    ck_assert_int_eq(atomic_load(&done_runs), 2);
}
END_TEST

/* The same authorizer answers FastCGI AUTHORIZER requests: 200 with Variable- headers, or the
 * denial. */
START_TEST(authorizer_role_deferred)
{
    fcr_app_set_authorizer(app, deferred_authorizer, NULL);
    const char *const good[] = {"X-Token: good", NULL}, *const bad[] = {"X-Token: bad", NULL};
    run(&(fcr_test_req){.role = FCR_AUTHORIZER, .path = "/x", .headers = good});
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(fcr_test_res_header(&res, "Variable-REMOTE_USER"), "alice");
    ck_assert_str_eq(fcr_test_res_header(&res, "Variable-PLAN"), "gold");
    run(&(fcr_test_req){.role = FCR_AUTHORIZER, .path = "/x", .headers = bad});
    ck_assert_int_eq(res.status, 401);
    ck_assert_ptr_null(fcr_test_res_header(&res, "Variable-REMOTE_USER"));
}
END_TEST

static int mw_done(fcr_req *req, fcr_res *r, void *data)
{
    job *j = data;
    atomic_fetch_add(&done_runs, 1);
    long out = j->out;
    job_free(j);
    if (fcr_req_aborted(req))
        return FCR_STOP;
    if (out > 100) {
        fcr_res_set_problem(r, 429, "too many: %ld", out);
        return FCR_STOP;
    }
    char v[32];
    snprintf(v, sizeof v, "%ld", out);
    int rc = fcr_req_set_var(req, "MW", v);
    return rc < 0 ? rc : FCR_CONTINUE;
}

static fcr_before_result deferred_mw(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    job *j = job_new(req, 0);
    if (fcr_defer(req, r, work_double, mw_done, j) < 0)
        job_free(j);
    return FCR_BEFORE_ASYNC;
}

static int order_after(fcr_req *req, fcr_res *r, void *data)
{
    (void)req;
    return fcr_res_add_header(r, "X-After", data);
}

static fcr_before_result plain_mw(fcr_req *req, fcr_res *r, void *data)
{
    (void)r, (void)data;
    const char *mw = fcr_req_var(req, "MW");
    /* Runs after the deferred middleware's done: it sees what that one set. */
    return fcr_req_set_var(req, "SEEN", mw ? mw : "-") < 0 ? FCR_BEFORE_ERROR : FCR_CONTINUE;
}

static fcr_handler_result seen(fcr_req *req, fcr_res *r, void *data)
{
    (void)data;
    return fcr_res_printf(r, "mw=%s seen=%s", fcr_req_var(req, "MW"), fcr_req_var(req, "SEEN")) < 0
               ? FCR_HANDLER_ERROR
               : FCR_DONE;
}

/* A deferred before-middleware continues (the chain resumes with the next middleware, then the
 * handler) or stops (its answer goes out, after the after-middleware). */
START_TEST(deferred_middleware_continues_and_stops)
{
    fcr_app_before(app, deferred_mw, NULL);
    fcr_app_before(app, plain_mw, NULL);
    fcr_app_after(app, order_after, "yes");
    fcr_app_route(app, FCR_GET, "/s", seen, NULL);
    get("/s?n=4");
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, "mw=8 seen=8");
    ck_assert_str_eq(fcr_test_res_header(&res, "X-After"), "yes");
    get("/s?n=60");
    ck_assert_int_eq(res.status, 429);
    ck_assert_ptr_nonnull(strstr(res.body, "too many: 120"));
    ck_assert_str_eq(fcr_test_res_header(&res, "X-After"), "yes");
    ck_assert_int_eq(atomic_load(&done_runs), 2);
}
END_TEST

/* ---- Over real sockets ------------------------------------------------------------------ */

typedef struct server_thread {
    struct ev_loop *loop;
    fcr_server *srv;
    ev_async stop;
    ev_async probe;
    ev_async shut; /* starts a graceful stop on the server's thread */
    atomic_bool drained;
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

static void drained_cb(fcr_server *srv, void *arg)
{
    (void)srv;
    server_thread *t = arg;
    atomic_store(&t->drained, true);
}

static void shut_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop, (void)revents;
    server_thread *t = w->data;
    fcr_server_shutdown(t->srv, drained_cb, t);
}

static void probe_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop, (void)revents;
    server_thread *t = w->data;
    pthread_mutex_lock(&t->mu);
    fcr_server_get_stats(t->srv, &t->st);
    t->probed = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

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

static void *server_main(void *arg)
{
    server_thread *t = arg;
    ev_run(t->loop, 0);
    return NULL;
}

static void server_start(server_thread *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/fcr-defer-XXXXXX");
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
    ev_async_init(&t->shut, shut_cb);
    t->shut.data = t;
    ev_async_start(t->loop, &t->shut);
    atomic_store(&t->drained, false);
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

static void wait_server_idle(server_thread *t)
{
    double deadline = fcl_now() + 20;
    fcr_server_stats st = server_stats(t);
    while (st.conns > 0 || st.active_reqs > 0) {
        ck_assert_msg(fcl_now() < deadline, "%u connections, %u requests still open", st.conns,
                      st.active_reqs);
        poll(NULL, 0, 1);
        st = server_stats(t);
    }
}

/* Sends GET `path` as request `id` on `c` without waiting for the answer. */
static void send_get(fcl_conn *c, uint16_t id, const char *path)
{
    const char *params[] = {"REQUEST_METHOD", "GET", "SCRIPT_NAME", path, NULL};
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, id, FCR_RESPONDER, 1 /* FCGI_KEEP_CONN */, params, NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
}

/* Status and body of an ended response, as "STATUS:BODY". */
static void answer_of(const fcl_response *r, char *out, size_t cap)
{
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(r, &cgi), 0);
    char status[64] = "200";
    fcl_cgi_header(&cgi, "Status", status, sizeof status);
    snprintf(out, cap, "%.3s:%.*s", status, (int)cgi.body_len, (const char *)cgi.body);
    fcl_cgi_free(&cgi);
}

/* While deferred work waits, fast requests on the same loop are answered; the slow one is
 * answered once its work may finish. */
START_TEST(fast_requests_answered_while_work_waits)
{
    fcr_app_route(app, FCR_GET, "/slow", deferred_handler, NULL);
    fcr_app_route(app, FCR_GET, "/fast", fast_handler, NULL);
    server_thread t;
    server_start(&t);
    gate_set(false);
    fcl_conn *slow = fcl_connect(t.addr, 0);
    ck_assert_ptr_nonnull(slow);
    send_get(slow, 1, "/slow");
    WAIT_FOR(atomic_load(&work_started) == 1, "the work to start");
    fcl_conn *fast = fcl_connect(t.addr, 0);
    ck_assert_ptr_nonnull(fast);
    char got[128];
    for (uint16_t i = 1; i <= 20; i++) {
        fcl_response r;
        fcl_response_init(&r, i);
        send_get(fast, i, "/fast");
        ck_assert_int_eq(fcl_await(fast, &r, 1), 0);
        answer_of(&r, got, sizeof got);
        ck_assert_str_eq(got, "200:fast");
        fcl_response_free(&r);
    }
    /* The gate is still shut: the slow request cannot have been answered. */
    ck_assert_int_eq(atomic_load(&work_done), 0);
    ck_assert_int_eq(atomic_load(&done_runs), 0);
    gate_set(true);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(slow, &r, 1), 0);
    answer_of(&r, got, sizeof got);
    ck_assert_str_eq(got, "200:out=42 loop=1 pool=1");
    fcl_response_free(&r);
    fcl_close(slow);
    fcl_close(fast);
    wait_server_idle(&t);
    server_stop(&t);
}
END_TEST

/* Many deferrals at once, multiplexed over a few connections, all complete with their own
 * answers. */
START_TEST(many_concurrent_deferrals_complete)
{
    enum { CONNS = 8, PER = 25 };
    fcr_app_set_threads(app, 4); /* room for 256 */
    fcr_app_route(app, FCR_GET, "/d", deferred_handler, NULL);
    server_thread t;
    server_start(&t);
    gate_set(false); /* all queued before any finishes */
    fcl_conn *c[CONNS];
    fcl_response r[CONNS][PER];
    for (int i = 0; i < CONNS; i++) {
        c[i] = fcl_connect(t.addr, 0);
        ck_assert_ptr_nonnull(c[i]);
        for (int k = 0; k < PER; k++) {
            char path[64];
            snprintf(path, sizeof path, "/d?n=%d", i * PER + k);
            /* fcr_app routes on SCRIPT_NAME; the query goes in QUERY_STRING. */
            const char *params[] = {"REQUEST_METHOD", "GET",    "SCRIPT_NAME", "/d",
                                    "QUERY_STRING",   path + 3, NULL};
            fcl_buf b;
            fcl_buf_init(&b);
            fcl_put_request(&b, (uint16_t)(k + 1), FCR_RESPONDER, 1, params, NULL, 0, NULL, 0);
            ck_assert_int_eq(fcl_send_buf(c[i], &b), 0);
            fcl_buf_free(&b);
            fcl_response_init(&r[i][k], (uint16_t)(k + 1));
        }
    }
    WAIT_FOR(atomic_load(&work_started) == 4, "the threads to take work");
    gate_set(true);
    for (int i = 0; i < CONNS; i++) {
        ck_assert_int_eq(fcl_await(c[i], r[i], PER), 0);
        for (int k = 0; k < PER; k++) {
            char got[128], want[128];
            answer_of(&r[i][k], got, sizeof got);
            snprintf(want, sizeof want, "200:out=%d loop=1 pool=1", 2 * (i * PER + k));
            ck_assert_str_eq(got, want);
            fcl_response_free(&r[i][k]);
        }
        fcl_close(c[i]);
    }
    ck_assert_int_eq(atomic_load(&done_runs), CONNS * PER);
    wait_server_idle(&t);
    server_stop(&t);
}
END_TEST

/* A full pool (1 thread: 64 deferrals) answers the next request 503 problem+json with
 * Retry-After; once the work drains, deferrals are taken again. */
START_TEST(full_queue_answers_503)
{
    enum { CAP = FCR_DEFER_QUEUE_PER_THREAD };
    fcr_app_set_threads(app, 1);
    fcr_app_route(app, FCR_GET, "/d", deferred_handler, NULL);
    server_thread t;
    server_start(&t);
    gate_set(false);
    fcl_conn *c[CAP];
    for (int i = 0; i < CAP; i++) {
        c[i] = fcl_connect(t.addr, 0);
        ck_assert_ptr_nonnull(c[i]);
        send_get(c[i], 1, "/d");
    }
    /* Every request is in: wait until the server holds them all. */
    double deadline = fcl_now() + 20;
    while (server_stats(&t).active_reqs < CAP) {
        ck_assert(fcl_now() < deadline);
        poll(NULL, 0, 1);
    }
    fcl_conn *extra = fcl_connect(t.addr, 0);
    ck_assert_ptr_nonnull(extra);
    fcl_response r;
    fcl_response_init(&r, 1);
    send_get(extra, 1, "/d");
    ck_assert_int_eq(fcl_await(extra, &r, 1), 0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    char v[128];
    ck_assert(fcl_cgi_header(&cgi, "Status", v, sizeof v));
    ck_assert_str_eq(v, "503 Service Unavailable");
    ck_assert(fcl_cgi_header(&cgi, "Retry-After", v, sizeof v));
    ck_assert_str_eq(v, "1");
    ck_assert(fcl_cgi_header(&cgi, "Content-Type", v, sizeof v));
    ck_assert_str_eq(v, "application/problem+json");
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    ck_assert_int_eq(atomic_load(&live), CAP); /* the refused job was freed by the handler */
    gate_set(true);
    for (int i = 0; i < CAP; i++) {
        fcl_response_init(&r, 1);
        ck_assert_int_eq(fcl_await(c[i], &r, 1), 0);
        char got[128];
        answer_of(&r, got, sizeof got);
        ck_assert_str_eq(got, "200:out=42 loop=1 pool=1");
        fcl_response_free(&r);
        fcl_close(c[i]);
    }
    /* Room again. */
    fcl_response_init(&r, 1);
    send_get(extra, 1, "/d");
    ck_assert_int_eq(fcl_await(extra, &r, 1), 0);
    answer_of(&r, v, sizeof v);
    ck_assert_str_eq(v, "200:out=42 loop=1 pool=1");
    fcl_response_free(&r);
    fcl_close(extra);
    wait_server_idle(&t);
    server_stop(&t);
}
END_TEST

/* The client leaves while the work waits: done still runs, sees the abort and frees its data;
 * nothing is sent, the request is released once (the sanitizers check), the server serves on. */
START_TEST(done_after_client_abort)
{
    fcr_app_route(app, FCR_GET, "/slow", deferred_handler, NULL);
    fcr_app_route(app, FCR_GET, "/fast", fast_handler, NULL);
    fcr_route_guard(fcr_app_route(app, FCR_GET, "/guarded", whoami, NULL), deferred_authorizer,
                    NULL);
    server_thread t;
    server_start(&t);
    const char *paths[] = {"/slow", "/guarded"};
    for (int i = 0; i < 2; i++) {
        gate_set(false);
        int started = atomic_load(&work_started);
        fcl_conn *c = fcl_connect(t.addr, 0);
        ck_assert_ptr_nonnull(c);
        send_get(c, 1, paths[i]);
        WAIT_FOR(atomic_load(&work_started) == started + 1, "the work to start");
        fcl_close(c);
        WAIT_FOR(server_stats(&t).conns == 0, "the connection to close");
        gate_set(true);
        WAIT_FOR(atomic_load(&done_aborted) == i + 1, "done to see the abort");
        wait_server_idle(&t);
        ck_assert_int_eq(atomic_load(&live), 0);
    }
    fcl_conn *c = fcl_connect(t.addr, 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    send_get(c, 1, "/fast");
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    char got[64];
    answer_of(&r, got, sizeof got);
    ck_assert_str_eq(got, "200:fast");
    fcl_response_free(&r);
    fcl_close(c);
    server_stop(&t);
}
END_TEST

/* A graceful stop waits for a request whose work is queued: it is answered, then the server is
 * drained. */
START_TEST(graceful_stop_lets_deferred_work_finish)
{
    fcr_app_route(app, FCR_GET, "/slow", deferred_handler, NULL);
    server_thread t;
    server_start(&t);
    gate_set(false);
    fcl_conn *c = fcl_connect(t.addr, 0);
    ck_assert_ptr_nonnull(c);
    send_get(c, 1, "/slow");
    WAIT_FOR(atomic_load(&work_started) == 1, "the work to start");
    ev_async_send(t.loop, &t.shut);
    /* The stop has begun (the socket file is gone) but waits for the request. */
    char path[160];
    snprintf(path, sizeof path, "%s/s", t.dir);
    WAIT_FOR(access(path, F_OK) != 0, "the socket file to go");
    ck_assert(!atomic_load(&t.drained));
    gate_set(true);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    char got[128];
    answer_of(&r, got, sizeof got);
    ck_assert_str_eq(got, "200:out=42 loop=1 pool=1");
    fcl_response_free(&r);
    fcl_close(c);
    WAIT_FOR(atomic_load(&t.drained), "the server to drain");
    ck_assert_int_eq(atomic_load(&done_aborted), 0);
    server_stop(&t);
}
END_TEST

/* Freeing the server aborts a request whose work still waits; fcr_app_free then lets the work
 * finish, joins the threads and runs done, which sees the abort and frees its data. */
START_TEST(app_free_finishes_queued_work)
{
    fcr_app_route(app, FCR_GET, "/slow", deferred_handler, NULL);
    server_thread t;
    server_start(&t);
    gate_set(false);
    fcl_conn *c = fcl_connect(t.addr, 0);
    ck_assert_ptr_nonnull(c);
    send_get(c, 1, "/slow");
    WAIT_FOR(atomic_load(&work_started) == 1, "the work to start");
    /* The server goes while the work waits (the request is aborted), then the work may end. */
    ev_async_send(t.loop, &t.stop);
    pthread_join(t.th, NULL);
    fcr_server_free(t.srv);
    ck_assert_int_eq(atomic_load(&done_runs), 0);
    gate_set(true);
    fcr_app_free(app);
    app = NULL;
    ev_loop_destroy(t.loop);
    pthread_mutex_destroy(&t.mu);
    pthread_cond_destroy(&t.cv);
    char path[160];
    snprintf(path, sizeof path, "%s/s", t.dir);
    unlink(path);
    rmdir(t.dir);
    ck_assert_int_eq(atomic_load(&done_runs), 1);
    ck_assert_int_eq(atomic_load(&done_aborted), 1);
    ck_assert_int_eq(atomic_load(&live), 0);
    fcl_close(c);
}
END_TEST

#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__) /* see main() */
/* A process forked after its parent made a pool makes its own on its first deferral. */
START_TEST(forked_child_makes_its_own_pool)
{
    fcr_app_route(app, FCR_GET, "/d", deferred_handler, NULL);
    get("/d?n=1");
    ck_assert_str_eq(res.body, "out=2 loop=1 pool=1");
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fcr_test_res cr = {0};
        int rc = fcr_app_test(app, &(fcr_test_req){.path = "/d?n=3"}, &cr);
        bool ok = rc == 0 && cr.status == 200 && strcmp(cr.body, "out=6 loop=1 pool=1") == 0;
        fcr_test_res_free(&cr);
        fcr_app_free(app);
        _exit(ok ? 0 : 1);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    get("/d?n=4");
    ck_assert_str_eq(res.body, "out=8 loop=1 pool=1");
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("defer");
    TCase *tc = tcase_create("in process");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, deferred_handler_answers_from_done);
    tcase_add_test(tc, done_defers_again);
    tcase_add_test(tc, deferring_without_the_async_verdict_fails);
    tcase_add_test(tc, deferred_guard_allows_and_denies);
    tcase_add_test(tc, authorizer_role_deferred);
    tcase_add_test(tc, deferred_middleware_continues_and_stops);
    /* ThreadSanitizer cannot start threads after such a fork; under AddressSanitizer the
     * child blocks now and then (about 1 run in 8, here) inside the sanitizer's runtime,
     * while the plain build passed 150 runs of 150: the case is checked in the plain and
     * valgrind runs only. */
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
    tcase_add_test(tc, forked_child_makes_its_own_pool);
#endif
    suite_add_tcase(s, tc);

    tc = tcase_create("sockets");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, fast_requests_answered_while_work_waits);
    tcase_add_test(tc, many_concurrent_deferrals_complete);
    tcase_add_test(tc, full_queue_answers_503);
    tcase_add_test(tc, done_after_client_abort);
    tcase_add_test(tc, graceful_stop_lets_deferred_work_finish);
    tcase_add_test(tc, app_free_finishes_queued_work);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
