/* A test harness: an app's server on its own thread and loop, listening on a unix socket in a
 * fresh temporary directory, for suites that play the web server over a real socket. */
#ifndef FCR_TESTS_SERVER_THREAD_H
#define FCR_TESTS_SERVER_THREAD_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>

#include <fcrest.h>

typedef struct server_thread {
    struct ev_loop *loop;
    fcr_server *srv;
    ev_async stop;
    ev_async probe;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fcr_server_stats st;
    bool probed;
    pthread_t th;
    char dir[64];
    char addr[128]; /* "unix:DIR/s" */
} server_thread;

/* Starts `app`'s server (base configuration `cfg`, NULL for the defaults) on a new thread;
 * fails the running test when it cannot. */
void server_start(server_thread *t, fcr_app *app, const fcr_server_config *cfg);
/* Stops the loop, joins the thread, frees the server and removes the socket. */
void server_stop(server_thread *t);
/* The server's counters, read on its own thread. */
fcr_server_stats server_stats(server_thread *t);
/* Waits (20 s at most, else fails the test) until no connection and no request is open. */
void server_wait_idle(server_thread *t);

#endif
