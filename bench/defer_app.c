/* defer_app: the server side of bench/run's defer scenarios.
 *
 * GET /fast answers at once on the loop, like examples/hello.c. GET /slow defers a work
 * function that sleeps (200 ms by default, --sleep-ms) on a pool thread and answers from its
 * done. bench/run keeps 16 /slow requests in flight while it measures /fast on the same worker,
 * with --threads below and at 16.
 *
 * Usage: defer_app [--sleep-ms MS] [--listen ADDR] [--workers N] [--threads N] ... (--help) */
#include <fcrest.h>

#include <stdio.h>
#include <time.h>

static long sleep_ms = 200;

static fcr_handler_result fast(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    int rc = fcr_res_add_header(res, "Content-Type", "text/plain");
    if (rc == 0)
        rc = fcr_res_set_body(res, "fast\n", 5);
    return rc;
}

static void slow_work(void *data)
{
    (void)data;
    struct timespec ts = {.tv_sec = sleep_ms / 1000, .tv_nsec = (sleep_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int slow_done(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    int rc = fcr_res_add_header(res, "Content-Type", "text/plain");
    if (rc == 0)
        rc = fcr_res_set_body(res, "slow\n", 5);
    return rc;
}

static fcr_handler_result slow(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    int rc = fcr_defer(req, res, slow_work, slow_done, NULL);
    return rc == 0 ? FCR_ASYNC : rc;
}

/* Reads --sleep-ms once per worker, before it accepts (and so before any work runs). */
static int worker_start(fcr_app *app, struct ev_loop *loop, void *data)
{
    (void)loop, (void)data;
    unsigned long long ms = 0;
    if (fcr_app_option_uint(app, "--sleep-ms", &ms) == 0)
        sleep_ms = ms > 60000 ? 60000 : (long)ms;
    return 0;
}

int main(int argc, char **argv)
{
    fcr_app *app = fcr_app_new();
    if (!app) {
        fprintf(stderr, "defer_app: out of memory\n");
        return 1;
    }
    fcr_app_add_option(app, "--sleep-ms", FCR_OPT_UINT, "MS", NULL, "200",
                       "how long a /slow request's work sleeps on a pool thread");
    fcr_app_on_worker_start(app, worker_start, NULL);
    fcr_app_route(app, FCR_GET, "/fast", fast, NULL);
    fcr_app_route(app, FCR_GET, "/slow", slow, NULL);
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}
