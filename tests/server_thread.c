/* See server_thread.h. */
#include "server_thread.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#include "fcgi_client.h"

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
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

static void *server_main(void *arg)
{
    server_thread *t = arg;
    ev_run(t->loop, 0);
    return NULL;
}

void server_start(server_thread *t, fcr_app *app, const fcr_server_config *cfg)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/fcr-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    snprintf(t->addr, sizeof t->addr, "unix:%s/s", t->dir);
    t->loop = ev_loop_new(0);
    ck_assert_ptr_nonnull(t->loop);
    int err = 0;
    t->srv = fcr_app_server_new(app, t->loop, cfg, &err);
    ck_assert_msg(t->srv != NULL, "fcr_app_server_new: %s", fcr_strerror(err));
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

void server_stop(server_thread *t)
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

fcr_server_stats server_stats(server_thread *t)
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

void server_wait_idle(server_thread *t)
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
