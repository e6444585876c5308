/* Blocking work off the loop: fcr_defer() queues work for a bounded pool of threads per process
 * (made on the first deferral), and the work's completion comes back to the loop through one
 * ev_async watcher and a mutex-protected queue, where the deferral's done resumes the request. */
#include "app_int.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct fcr__job {
    struct fcr__job *next;
    fcr__ctx *ctx;
    fcr_work_fn work;
    fcr_done_fn done;
    void *data;
    const char *id; /* the request's id, for the log lines of the work */
} fcr__job;

static const char *job_id(const void *arg)
{
    return arg;
}

typedef struct fcr__pool {
    pid_t pid; /* the process that made it: a forked child makes its own */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    fcr__job *todo, *todo_tail; /* waiting for a thread */
    fcr__job *done, *done_tail; /* worked, waiting for the loop */
    bool stopping;
    /* the loop's */
    pthread_t *threads;
    unsigned nthreads;
    size_t cap;         /* most outstanding deferrals */
    size_t outstanding; /* deferrals whose done has not run */
    struct ev_loop *loop;
    ev_async async; /* active while outstanding > 0 */
    bool async_on;
    double full_log_at;
    unsigned long full_unlogged;
} fcr__pool;

int fcr_app_set_threads(fcr_app *app, unsigned n)
{
    if (!app || n == 0 || n > FCR_MAX_THREADS)
        return FCR_EINVAL;
    app->threads = n;
    return 0;
}

static void push(fcr__job **head, fcr__job **tail, fcr__job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static void *thread_main(void *arg)
{
    fcr__pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->todo && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        fcr__job *j = p->todo;
        if (!j)
            break; /* stopping, and the queue is empty */
        p->todo = j->next;
        if (!p->todo)
            p->todo_tail = NULL;
        pthread_mutex_unlock(&p->mu);
        fcr__log_set_request(job_id, j->id); /* the work's log lines name its request */
        j->work(j->data);
        fcr__log_set_request(NULL, NULL);
        pthread_mutex_lock(&p->mu);
        push(&p->done, &p->done_tail, j);
        /* Sent under the lock: once the loop has taken the last completion no thread touches
         * the watcher (or the loop) again. While the pool stops, the freeing thread runs the
         * completions itself. */
        if (!p->stopping)
            ev_async_send(p->loop, &p->async);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Takes the worked jobs, in the order they finished. */
static fcr__job *take_done(fcr__pool *p)
{
    pthread_mutex_lock(&p->mu);
    fcr__job *j = p->done;
    p->done = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    return j;
}

static void complete(fcr__pool *p, fcr__job *j, bool ending)
{
    p->outstanding--;
    fcr__ctx *ctx = j->ctx;
    fcr_done_fn done = j->done;
    void *data = j->data;
    free(j);
    fcr__defer_done(ctx, done, data, ending);
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    fcr__pool *p = (fcr__pool *)((char *)w - offsetof(fcr__pool, async));
    fcr__job *j = take_done(p);
    while (j) {
        fcr__job *next = j->next;
        complete(p, j, false);
        j = next;
    }
    if (p->outstanding == 0 && p->async_on) {
        ev_async_stop(loop, &p->async);
        p->async_on = false;
    }
}

/* Forgets a pool made by another process (the parent before a fork): its threads do not exist
 * here and its lock may be held, so nothing but memory is touched; its deferrals are lost. */
static void abandon(fcr_app *app)
{
    fcr__pool *p = app->pool;
    app->pool = NULL;
    if (p->async_on)
        ev_async_stop(p->loop, &p->async);
    for (fcr__job *lists[2] = {p->todo, p->done}, **l = lists; l < lists + 2; l++) {
        for (fcr__job *j = *l; j;) {
            fcr__job *next = j->next;
            free(j);
            j = next;
        }
    }
    free(p->threads);
    free(p);
}

static fcr__pool *pool_new(fcr_app *app)
{
    fcr__pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    unsigned n = app->threads ? app->threads : FCR_DEFAULT_THREADS;
    p->threads = calloc(n, sizeof *p->threads);
    if (!p->threads || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p->threads);
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p->threads);
        free(p);
        return NULL;
    }
    p->pid = getpid();
    ev_async_init(&p->async, async_cb);
    /* The threads take no signals: they stay the loop's (libev may read them from a
     * signalfd, which needs them blocked everywhere). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&p->threads[p->nthreads], NULL, thread_main, p) != 0)
            break;
        p->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (p->nthreads == 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p->threads);
        free(p);
        return NULL;
    }
    if (p->nthreads < n)
        fcr_log(FCR_LOG_WARN, "deferral pool: %u of %u threads started", p->nthreads, n);
    p->cap = (size_t)p->nthreads * FCR_DEFER_QUEUE_PER_THREAD;
    return p;
}

void fcr__pool_free(fcr_app *app)
{
    fcr__pool *p = app->pool;
    if (!p)
        return;
    if (p->pid != getpid()) {
        abandon(app);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    /* Every piece of work has run; the done functions run here, where fcr_defer refuses. */
    fcr__job *j;
    while ((j = take_done(p))) {
        while (j) {
            fcr__job *next = j->next;
            complete(p, j, true);
            j = next;
        }
    }
    if (p->async_on)
        ev_async_stop(p->loop, &p->async);
    app->pool = NULL;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

/* A full pool: 503 problem+json with Retry-After in the response, and a warning (once a second
 * at most). */
static int refuse_full(fcr__pool *p, fcr__ctx *ctx)
{
    double now = fcr__now();
    if (now - p->full_log_at >= 1.0) {
        char what[600];
        fcr__describe(ctx, what, sizeof what);
        fcr_log(FCR_LOG_WARN,
                "%s: answered 503: the deferral pool is full (%zu outstanding on %u thread(s); %lu "
                "more since the last line)",
                what, p->outstanding, p->nthreads, p->full_unlogged);
        p->full_log_at = now;
        p->full_unlogged = 0;
    } else {
        p->full_unlogged++;
    }
    fcr__res_reset(&ctx->res);
    if (fcr__res_set_status_problem(&ctx->res, 503, "the server is busy; try again") < 0 ||
        fcr_res_set_header(&ctx->res, "Retry-After", "1") < 0) {
        fcr__res_reset(&ctx->res);
        ctx->res.status = 503;
    }
    return FCR_EAGAIN;
}

static int defer(fcr__ctx *ctx, fcr_work_fn work, fcr_done_fn done, void *data)
{
    if (ctx->defer_pending || ctx->state != FCR__ST_RUNNING || !ctx->in_handler || ctx->sent)
        return FCR_EINVAL;
    if (fcr_req_aborted(ctx->req))
        return FCR_ECLOSED;
    fcr_app *app = ctx->app;
    if (app->pool && app->pool->pid != getpid())
        abandon(app);
    if (!app->pool && !(app->pool = pool_new(app)))
        return FCR_ENOMEM;
    fcr__pool *p = app->pool;
    if (p->stopping)
        return FCR_ECLOSED;
    if (p->outstanding > 0 && p->loop != ctx->loop)
        return FCR_EINVAL;
    if (p->outstanding >= p->cap)
        return refuse_full(p, ctx);
    fcr__job *j = malloc(sizeof *j);
    if (!j)
        return FCR_ENOMEM;
    *j = (fcr__job){
        .ctx = ctx, .work = work, .done = done, .data = data, .id = fcr_req_request_id(ctx->req)};
    if (!p->async_on) {
        /* No thread sends to the watcher now: nothing is outstanding. */
        p->loop = ctx->loop;
        ev_async_start(p->loop, &p->async);
        p->async_on = true;
    }
    p->outstanding++;
    pthread_mutex_lock(&p->mu);
    push(&p->todo, &p->todo_tail, j);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    ctx->defer_pending = true;
    return 0;
}

int fcr_defer(fcr_req *req, fcr_res *res, fcr_work_fn work, fcr_done_fn done, void *data)
{
    fcr__ctx *ctx = fcr__ctx_of(req);
    if (!ctx || res != &ctx->res || !work || !done)
        return FCR_EINVAL;
    int rc = defer(ctx, work, done, data);
    ctx->defer_err = rc;
    return rc;
}
