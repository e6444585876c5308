/* The server: configuration, the flush step before the loop blocks, timeouts, shutdown. */
#include "internal.h"

#include <stdarg.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#define READ_BUF_SIZE (64 * 1024)
#define FLUSH_ROUNDS  8

void fcr_limits_default(fcr_limits *l)
{
    l->max_name_len = 1024;
    l->max_value_len = 32 * 1024;
    l->max_params_bytes = 64 * 1024;
    l->max_params = 256;
    l->max_body = 16 * 1024 * 1024;
    l->max_reqs_per_conn = 32;
    l->max_reqs = 4096;
    l->max_conns = 4096;
    l->max_output_queue = 1024 * 1024;
    l->idle_timeout = 60.0;
    l->input_timeout = 30.0;
    l->output_timeout = 30.0;
}

void fcr_server_config_init(fcr_server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    fcr_limits_default(&cfg->limits);
    cfg->roles = FCR_ALL_ROLES;
    cfg->multiplex = true;
    cfg->socket_mode = 0660;
}

static bool limits_valid(const fcr_limits *l)
{
    return l->max_name_len && l->max_value_len && l->max_params_bytes && l->max_params &&
           l->max_reqs_per_conn && l->max_reqs && l->max_conns && l->max_output_queue &&
           l->idle_timeout > 0 && l->input_timeout > 0 && l->output_timeout > 0;
}

void fcr__server_mark_dirty(fcr_server *srv, fcr_req *r)
{
    if (r->dirty)
        return;
    r->dirty = true;
    r->dirty_prev = NULL;
    r->dirty_next = srv->dirty;
    if (srv->dirty)
        srv->dirty->dirty_prev = r;
    srv->dirty = r;
}

void fcr__server_unmark_dirty(fcr_server *srv, fcr_req *r)
{
    if (!r->dirty)
        return;
    if (r->dirty_prev)
        r->dirty_prev->dirty_next = r->dirty_next;
    else
        srv->dirty = r->dirty_next;
    if (r->dirty_next)
        r->dirty_next->dirty_prev = r->dirty_prev;
    r->dirty = false;
    r->dirty_next = r->dirty_prev = NULL;
}

/* Before the loop blocks: open STDOUT records become queued records, and every connection with
 * output writes it with one sendmsg where the socket takes it. Output produced by callbacks
 * run here (drain callbacks) is handled in further rounds; past a few rounds an idle watcher
 * keeps the loop from blocking. */
static void flush_all(fcr_server *srv)
{
    for (int round = 0; round < FLUSH_ROUNDS && (srv->dirty || srv->flush_list); round++) {
        while (srv->dirty) {
            fcr_req *r = srv->dirty;
            fcr__server_unmark_dirty(srv, r);
            fcr__req_seal(r, false, 0, 0);
        }
        while (srv->flush_list) {
            fcr__conn *c = srv->flush_list;
            srv->flush_list = c->wnext;
            c->in_flush_list = false;
            fcr__conn_flush(c);
        }
    }
    if (srv->dirty || srv->flush_list)
        ev_idle_start(srv->loop, &srv->idle);
    else
        ev_idle_stop(srv->loop, &srv->idle);
}

static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    flush_all(w->data);
}

static void idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)revents;
    (void)w; /* the prepare watcher does the work */
}

static void check_drained(fcr_server *srv)
{
    if (srv->shutting_down && srv->conns == NULL && srv->on_drained) {
        void (*cb)(fcr_server *, void *) = srv->on_drained;
        srv->on_drained = NULL;
        cb(srv, srv->drained_arg);
    }
}

static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    fcr_server *srv = w->data;
    double now = ev_now(loop);
    for (fcr__conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        fcr__conn_sweep(c, now);
    }
}

#define PEER_LOG_RATE  20.0
#define PEER_LOG_BURST 100.0

void fcr__log_peer(fcr_server *srv, int level, const char *fmt, ...)
{
    if (level > fcr_log_level())
        return;
    double now = ev_now(srv->loop);
    srv->peer_log_tokens += (now - srv->peer_log_at) * PEER_LOG_RATE;
    if (srv->peer_log_tokens > PEER_LOG_BURST)
        srv->peer_log_tokens = PEER_LOG_BURST;
    srv->peer_log_at = now;
    if (srv->peer_log_tokens < 1.0) {
        srv->peer_log_dropped++;
        return;
    }
    srv->peer_log_tokens -= 1.0;
    if (srv->peer_log_dropped) {
        fcr_log(FCR_LOG_WARN, "%lu lines about misbehaving or closed connections left out",
                srv->peer_log_dropped);
        srv->peer_log_dropped = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    fcr_vlog(level, fmt, ap);
    va_end(ap);
}

void fcr__server_conn_closed(fcr_server *srv)
{
    fcr__listeners_conn_closed(srv);
    if (srv->accept_paused && srv->stats.conns < srv->cfg.limits.max_conns)
        fcr__listeners_pause(srv, false);
    check_drained(srv);
}

/* Descriptors a worker keeps besides its connections: listeners, the loop, logs, files. */
#define RESERVED_FDS 64

/* A worker that may hold max_conns connections needs as many descriptors: raises the soft limit
 * towards the hard one when it is lower. When even the hard limit cannot cover them, lowers
 * `*max_conns` to what it can, with a warning: at the cap, idle connections make room for new
 * ones, whereas accept() failing for lack of descriptors helps no one. */
static void fit_nofile(unsigned *max_conns)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)*max_conns + RESERVED_FDS;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (rl.rlim_cur > old && setrlimit(RLIMIT_NOFILE, &rl) == 0)
        fcr_log(FCR_LOG_DEBUG, "descriptor limit raised to %llu", (unsigned long long)rl.rlim_cur);
    else
        rl.rlim_cur = old;
    if (rl.rlim_cur >= want)
        return;
    unsigned fit = rl.rlim_cur > RESERVED_FDS * 2 ? (unsigned)(rl.rlim_cur - RESERVED_FDS)
                                                  : (unsigned)(rl.rlim_cur / 2);
    if (fit == 0)
        fit = 1;
    fcr_log(FCR_LOG_WARN,
            "the descriptor limit (%llu) cannot cover %u connections: the connection cap is "
            "lowered to %u (raise the limit, e.g. LimitNOFILE= in systemd, or lower "
            "--max-conns)",
            (unsigned long long)rl.rlim_cur, *max_conns, fit);
    *max_conns = fit;
}

fcr_server *fcr_server_new(struct ev_loop *loop, const fcr_server_config *cfg, int *err)
{
    int e = FCR_EINVAL;
    fcr_server *srv = NULL;
    if (!loop || !cfg || !cfg->on_request || !limits_valid(&cfg->limits))
        goto fail;
    e = FCR_ENOMEM;
    srv = calloc(1, sizeof *srv);
    if (!srv)
        goto fail;
    srv->loop = loop;
    srv->cfg = *cfg;
    srv->chan = -1;
    srv->peer_log_tokens = PEER_LOG_BURST;
    srv->peer_log_at = ev_now(loop);
    srv->cfg.web_server_addrs = NULL;
    const char *allow =
        cfg->web_server_addrs ? cfg->web_server_addrs : getenv("FCGI_WEB_SERVER_ADDRS");
    if (allow && *allow) {
        e = fcr__allow_parse(allow, &srv->allow, &srv->nallow);
        if (e)
            goto fail;
        srv->allow_set = true;
    }
    fit_nofile(&srv->cfg.limits.max_conns);
    srv->rbuf_cap = READ_BUF_SIZE;
    srv->rbuf = malloc(srv->rbuf_cap);
    srv->pool = calloc(1, sizeof *srv->pool);
    if (!srv->rbuf || !srv->pool) {
        e = FCR_ENOMEM;
        goto fail;
    }
    ev_prepare_init(&srv->prepare, prepare_cb);
    srv->prepare.data = srv;
    ev_prepare_start(loop, &srv->prepare);
    ev_unref(loop); /* the flush step alone does not keep the loop running */
    ev_idle_init(&srv->idle, idle_cb);
    ev_timer_init(&srv->accept_retry, fcr__accept_retry_cb, 0.1, 0.);
    srv->accept_retry.data = srv;
    ev_timer_init(&srv->sweep, sweep_cb, 1.0, 1.0);
    srv->sweep.data = srv;
    ev_timer_start(loop, &srv->sweep);
    ev_unref(loop);
    return srv;
fail:
    if (srv) {
        free(srv->allow);
        free(srv->rbuf);
        free(srv->pool);
        free(srv);
    }
    if (err)
        *err = e;
    return NULL;
}

void fcr_server_shutdown(fcr_server *srv, void (*on_drained)(fcr_server *srv, void *arg), void *arg)
{
    if (!srv)
        return;
    bool first = !srv->shutting_down;
    if (first) {
        srv->shutting_down = true;
        /* Connections already queued on the listeners were let in: they are accepted (and
         * served) rather than reset when the sockets close. */
        fcr__listeners_retire(srv, true);
    }
    srv->on_drained = on_drained;
    srv->drained_arg = arg;
    for (fcr__conn *c = srv->conns, *next; c && first; c = next) {
        next = c->next;
        if (c->nreqs > 0 || c->shead != c->segs.n) {
            if (c->state == FCR__CONN_OPEN) {
                c->state = FCR__CONN_CLOSE_AFTER_FLUSH;
                c->retiring = true;
            }
        } else if (c->state == FCR__CONN_OPEN) {
            /* An idle connection may be the very one the web server is sending its next
             * request on: closing it now would lose that request. At a restart it goes to a
             * new worker, with that request if it is on its way; otherwise (or while it is in
             * the middle of a record) it gets to send one more, answered and then closed, or
             * is closed once idle for a short while. */
            c->last_call = true;
            fcr__conn_hand_over(c);
        } else {
            fcr__conn_close(c, NULL);
        }
    }
    check_drained(srv);
}

void fcr_server_free(fcr_server *srv)
{
    if (!srv)
        return;
    srv->on_drained = NULL;
    fcr__listeners_close(srv);
    while (srv->conns)
        fcr__conn_close(srv->conns, NULL);
    ev_ref(srv->loop);
    ev_prepare_stop(srv->loop, &srv->prepare);
    ev_ref(srv->loop);
    ev_timer_stop(srv->loop, &srv->sweep);
    ev_timer_stop(srv->loop, &srv->accept_retry);
    ev_idle_stop(srv->loop, &srv->idle);
    /* Requests the application still holds free themselves (and the pool, the last one). */
    fcr__req_pool_orphan(srv->pool);
    free(srv->allow);
    free(srv->rbuf);
    free(srv);
}

static void run_drained(fcr_server *srv, void *arg)
{
    (void)arg;
    ev_break(srv->loop, EVBREAK_ONE);
}

static void run_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    fcr_server *srv = w->data;
    fcr_log(FCR_LOG_INFO, "signal %d: finishing requests in flight, then exiting", w->signum);
    if (srv->handing_over) { /* a stop while a restart retires the worker: nothing to hand to */
        srv->handing_over = false;
        return;
    }
    if (srv->shutting_down) { /* a second signal: stop now */
        ev_break(loop, EVBREAK_ONE);
        return;
    }
    ev_timer_start(loop, &srv->grace);
    fcr_server_shutdown(srv, run_drained, NULL);
}

void fcr__server_retire(fcr_server *srv)
{
    if (srv->shutting_down)
        return;
    fcr_log(FCR_LOG_INFO, "retired by a restart: handing connections over to the new workers "
                          "and finishing requests in flight");
    srv->handing_over = true;
    ev_timer_start(srv->loop, &srv->grace);
    fcr_server_shutdown(srv, run_drained, NULL);
}

static void run_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    fcr_log(FCR_LOG_WARN, "SIGHUP ignored: a single process cannot restart itself without "
                          "dropping requests; run worker processes to restart on SIGHUP");
}

/* True when `sig` is at its default disposition (not ignored, no handler of the caller's). */
static bool signal_is_default(int sig)
{
    struct sigaction sa;
    return sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
           sa.sa_handler == SIG_DFL;
}

static void run_grace(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    fcr_server *srv = w->data;
    fcr_log(FCR_LOG_WARN, "shutdown grace period over with %u connection(s) open",
            srv->stats.conns);
    ev_break(loop, EVBREAK_ONE);
}

void fcr_server_on_worker(fcr_server *srv, fcr_worker_start_fn start, fcr_worker_stop_fn stop,
                          void *data)
{
    if (!srv)
        return;
    srv->worker_start = start;
    srv->worker_stop = stop;
    srv->worker_data = data;
}

int fcr__server_worker_start(fcr_server *srv)
{
    if (srv->worker_started)
        return 0;
    if (srv->worker_start) {
        int rc = srv->worker_start(srv, srv->worker_data);
        if (rc < 0) {
            fcr_log(FCR_LOG_ERROR, "the worker's start hook failed: %s (%s); not serving",
                    fcr_err_name(rc), fcr_strerror(rc));
            return rc;
        }
    }
    srv->worker_started = true;
    return 0;
}

int fcr_server_run(fcr_server *srv, double grace)
{
    if (!srv)
        return FCR_EINVAL;
    int started = fcr__server_worker_start(srv);
    if (started < 0)
        return started;
    struct ev_loop *loop = srv->loop;
    ev_signal_init(&srv->sigterm, run_signal, SIGTERM);
    ev_signal_init(&srv->sigint, run_signal, SIGINT);
    srv->sigterm.data = srv->sigint.data = srv;
    ev_timer_init(&srv->grace, run_grace, grace > 0 ? grace : 0.001, 0.0);
    srv->grace.data = srv;
    ev_signal_start(loop, &srv->sigterm);
    ev_signal_start(loop, &srv->sigint);
    /* SIGHUP's default action would end the process at once, losing requests in flight and
     * leaving a unix socket file behind: say so and keep serving. A caller's own disposition
     * (SIG_IGN, as in workers, or a handler) is left alone. */
    ev_signal_init(&srv->sighup, run_hup, SIGHUP);
    bool watch_hup = signal_is_default(SIGHUP);
    if (watch_hup)
        ev_signal_start(loop, &srv->sighup);
    /* A write to a stderr pipe whose reader is gone must not kill a server (connections are
     * written with MSG_NOSIGNAL already). */
    if (signal_is_default(SIGPIPE))
        signal(SIGPIPE, SIG_IGN);
    fcr__chan_start(srv);
    ev_run(loop, 0);
    fcr__chan_stop(srv);
    fcr_log(FCR_LOG_INFO, "served %llu requests on %llu connections",
            (unsigned long long)srv->stats.requests, (unsigned long long)srv->stats.accepted);
    if (srv->handed_over)
        fcr_log(FCR_LOG_INFO, "handed %lu connection(s) over to the new workers", srv->handed_over);
    ev_signal_stop(loop, &srv->sigterm);
    ev_signal_stop(loop, &srv->sigint);
    if (watch_hup)
        ev_signal_stop(loop, &srv->sighup);
    ev_timer_stop(loop, &srv->grace);
    if (srv->worker_stop)
        srv->worker_stop(srv, srv->worker_data);
    return 0;
}

void fcr_server_get_stats(const fcr_server *srv, fcr_server_stats *st)
{
    if (!st)
        return;
    if (srv)
        *st = srv->stats;
    else
        memset(st, 0, sizeof *st);
}

struct ev_loop *fcr_server_loop(const fcr_server *srv)
{
    return srv ? srv->loop : NULL;
}

const fcr_limits *fcr_server_limits(const fcr_server *srv)
{
    return srv ? &srv->cfg.limits : NULL;
}
