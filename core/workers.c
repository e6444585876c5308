/* Worker processes: a supervisor forks workers that share the listening sockets. Each worker
 * has a channel to the supervisor (a socketpair): it reports on it that it accepts, is retired
 * on it by a restart, and hands its connections over on it to the new workers (handoff.c). */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_BACKOFF      30.0
#define KILL_AFTER_GRACE 5.0
/* A restart retires the old workers once every new one is accepting, or after this long. */
#define READY_WAIT 5.0
/* Connections handed over that the supervisor holds while the new workers' channels are full;
 * past this it stops reading the retiring workers' channels, so that they wait. */
#define HANDOFF_HELD 64

typedef struct worker {
    pid_t pid;
    double started;
    bool retiring;     /* asked to stop by a restart: not replaced */
    bool ready;        /* reported that it accepts connections */
    bool full;         /* its channel is full: wio waits for room */
    bool start_failed; /* its start hook failed */
    int chan;          /* the supervisor's end of its channel (-1: none) */
    ev_io rio, wio;
    ev_child child;
} worker;

typedef struct supervisor {
    fcr_server *srv;
    unsigned n;
    double grace;
    worker *w; /* 2n slots: a restart runs old and new side by side */
    unsigned nslots;
    bool stopping;
    bool restarting;  /* new workers started; the old ones wait for them to be ready */
    bool hup_pending; /* a SIGHUP waits for old workers to leave free slots */
    bool ever_ready;  /* a worker has reported that it accepts */
    bool gave_up;     /* the first workers could not start: everything stops, FCR_EIO */
    double backoff;
    fcr__vec held;     /* of int: connections handed over, waiting for a new worker */
    unsigned next_new; /* where the round-robin over the new workers goes on */
    int own_chan;      /* in a worker: its end of its channel */
    unsigned own_slot; /* in a worker: its slot */
    ev_signal sigterm, sigint, sighup;
    ev_timer respawn, killer, ready_timer;
} supervisor;

static bool in_worker;

bool fcr_is_worker(void)
{
    return in_worker;
}

static void stop_supervisor_watchers(supervisor *s)
{
    struct ev_loop *loop = s->srv->loop;
    ev_signal_stop(loop, &s->sigterm);
    ev_signal_stop(loop, &s->sigint);
    ev_signal_stop(loop, &s->sighup);
    ev_timer_stop(loop, &s->respawn);
    ev_timer_stop(loop, &s->killer);
    ev_timer_stop(loop, &s->ready_timer);
    for (unsigned i = 0; i < s->nslots; i++) {
        ev_child_stop(loop, &s->w[i].child);
        ev_io_stop(loop, &s->w[i].rio);
        ev_io_stop(loop, &s->w[i].wio);
    }
}

/* Closes the channels and the connections held (the supervisor is done, or this is a new
 * worker, which must not keep the supervisor's descriptors). */
static void close_supervisor_fds(supervisor *s)
{
    for (unsigned i = 0; i < s->nslots; i++) {
        if (s->w[i].chan >= 0)
            close(s->w[i].chan);
        s->w[i].chan = -1;
    }
    const int *held = s->held.v;
    for (size_t k = 0; k < s->held.n; k++)
        close(held[k]);
    fcr__vec_free(&s->held);
}

static void close_channel(supervisor *s, worker *w)
{
    struct ev_loop *loop = s->srv->loop;
    ev_io_stop(loop, &w->rio);
    ev_io_stop(loop, &w->wio);
    if (w->chan >= 0)
        close(w->chan);
    w->chan = -1;
    w->full = false;
}

/* The retiring workers' channels are read while the connections held stay few. */
static void watch_channels(supervisor *s)
{
    struct ev_loop *loop = s->srv->loop;
    bool room = s->held.n < HANDOFF_HELD;
    for (unsigned i = 0; i < s->nslots; i++) {
        worker *w = &s->w[i];
        if (w->chan >= 0 && (room || !w->retiring))
            ev_io_start(loop, &w->rio);
        else
            ev_io_stop(loop, &w->rio);
    }
}

/* Passes the connections held on to the new workers, round-robin. A worker whose channel is
 * full is skipped until it has room; with no new worker alive the connections are closed. */
static void forward_held(supervisor *s)
{
    int *held = s->held.v;
    size_t k = 0; /* held[0..k) are gone */
    while (k < s->held.n) {
        worker *to = NULL;
        bool any = false;
        for (unsigned j = 0; j < s->nslots && !to; j++) {
            unsigned i = (s->next_new + j) % s->nslots;
            worker *w = &s->w[i];
            if (w->pid > 0 && !w->retiring && w->chan >= 0) {
                any = true;
                if (!w->full) {
                    to = w;
                    s->next_new = i + 1;
                }
            }
        }
        if (!any) {
            fcr_log(FCR_LOG_WARN, "no new worker to hand %zu connection(s) to: closing them",
                    s->held.n - k);
            while (k < s->held.n)
                close(held[k++]);
            break;
        }
        if (!to)
            break; /* every new worker's channel is full: wait for room */
        int fd = held[k];
        if (fcr__chan_send(to->chan, FCR__MSG_CONN, fd) == 0) {
            close(fd);
            k++;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            to->full = true;
            ev_io_start(s->srv->loop, &to->wio);
        } else if (errno == EPIPE || errno == ECONNRESET) {
            close_channel(s, to); /* the worker is gone */
        } else {
            fcr_log(FCR_LOG_WARN, "cannot hand a connection over: %s", strerror(errno));
            close(fd);
            k++;
        }
    }
    if (k > 0) {
        memmove(held, held + k, (s->held.n - k) * sizeof *held);
        s->held.n -= k;
    }
    watch_channels(s);
}

static void maybe_retire_old(supervisor *s);

/* Reads the messages on a worker's channel: up to the limit of connections held, or all of
 * them (`all`: the worker has exited). */
static void read_channel(supervisor *s, worker *w, bool all)
{
    while (w->chan >= 0 && (all || s->held.n < HANDOFF_HELD)) {
        int fd;
        int type = fcr__chan_recv(w->chan, &fd);
        if (type < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (type <= 0) { /* the worker is gone */
            close_channel(s, w);
            break;
        }
        if (type == FCR__MSG_CONN && fd >= 0) {
            int *slot = fcr__vec_push(&s->held, NULL, sizeof(int));
            if (slot)
                *slot = fd;
            else
                close(fd);
        } else if (fd >= 0) {
            close(fd);
        } else if (type == FCR__MSG_CONN) {
            fcr_log(FCR_LOG_ERROR, "a connection handed over was lost: out of descriptors");
        }
        if (type == FCR__MSG_READY) {
            w->ready = true;
            s->ever_ready = true;
            maybe_retire_old(s);
        } else if (type == FCR__MSG_START_FAILED) {
            w->start_failed = true;
        }
    }
    forward_held(s);
}

static worker *worker_of(supervisor *s, const ev_io *io)
{
    for (unsigned i = 0; i < s->nslots; i++) {
        if (&s->w[i].rio == io || &s->w[i].wio == io)
            return &s->w[i];
    }
    return NULL;
}

static void chan_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop, (void)revents;
    supervisor *s = io->data;
    worker *w = worker_of(s, io);
    if (w)
        read_channel(s, w, false);
}

static void chan_write_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    supervisor *s = io->data;
    worker *w = worker_of(s, io);
    ev_io_stop(loop, io);
    if (w)
        w->full = false;
    forward_held(s);
}

static void child_cb(struct ev_loop *loop, ev_child *c, int revents);

/* Starts a worker in slot `i`. In the child this runs the server and never returns to the
 * supervisor's logic: it returns true so the caller unwinds. */
static bool spawn(supervisor *s, unsigned i, bool *is_child)
{
    struct ev_loop *loop = s->srv->loop;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        fcr_log(FCR_LOG_ERROR, "socketpair: %s", strerror(errno));
        return false;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fcr_log(FCR_LOG_ERROR, "fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return false;
    }
    if (pid == 0) {
        in_worker = true;
        /* A worker whose supervisor is gone stops (gracefully) instead of serving on alone. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            raise(SIGTERM);
        ev_loop_fork(loop);
        stop_supervisor_watchers(s);
        close_supervisor_fds(s);
        close(sv[0]);
        s->own_chan = sv[1];
        s->own_slot = i;
        signal(SIGHUP, SIG_IGN); /* restarts are the supervisor's business */
        *is_child = true;
        return true;
    }
    close(sv[1]);
    worker *w = &s->w[i];
    w->pid = pid;
    w->started = ev_now(loop);
    w->retiring = false;
    w->ready = false;
    w->full = false;
    w->start_failed = false;
    w->chan = sv[0];
    ev_io_init(&w->rio, chan_read_cb, w->chan, EV_READ);
    ev_io_init(&w->wio, chan_write_cb, w->chan, EV_WRITE);
    w->rio.data = w->wio.data = s;
    ev_io_start(loop, &w->rio);
    ev_child_init(&w->child, child_cb, pid, 0);
    w->child.data = s;
    ev_child_start(loop, &w->child);
    fcr_log(FCR_LOG_INFO, "worker %ld started", (long)pid);
    return true;
}

static unsigned live_workers(const supervisor *s)
{
    unsigned n = 0;
    for (unsigned i = 0; i < s->nslots; i++)
        n += s->w[i].pid > 0;
    return n;
}

static void signal_all(supervisor *s, int sig, bool retiring_only);
static void hup_cb(struct ev_loop *loop, ev_signal *sig, int revents);

static unsigned free_slots(const supervisor *s)
{
    unsigned n = 0;
    for (unsigned i = 0; i < s->nslots; i++)
        n += s->w[i].pid == 0;
    return n;
}

/* The second half of a restart: the old workers stop accepting, hand their connections over
 * to the new ones and finish what they have. One that cannot be told on its channel gets
 * SIGTERM: it stops as at a stop. */
static void retire_old(supervisor *s)
{
    struct ev_loop *loop = s->srv->loop;
    if (!s->restarting)
        return;
    s->restarting = false;
    ev_timer_stop(loop, &s->ready_timer);
    for (unsigned i = 0; i < s->nslots; i++) {
        worker *w = &s->w[i];
        if (w->pid > 0 && w->retiring &&
            (w->chan < 0 || fcr__chan_send(w->chan, FCR__MSG_RETIRE, -1) < 0))
            kill(w->pid, SIGTERM);
    }
    ev_timer_stop(loop, &s->killer);
    ev_timer_set(&s->killer, s->grace + KILL_AFTER_GRACE, 0);
    ev_timer_start(loop, &s->killer);
}

static void maybe_retire_old(supervisor *s)
{
    for (unsigned i = 0; i < s->nslots; i++) {
        const worker *w = &s->w[i];
        if (w->pid > 0 && !w->retiring && !w->ready)
            return;
    }
    retire_old(s);
}

static void ready_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    supervisor *s = t->data;
    fcr_log(FCR_LOG_WARN, "new workers not ready after %.0f s: retiring the old ones anyway",
            READY_WAIT);
    retire_old(s);
}

static void child_cb(struct ev_loop *loop, ev_child *c, int revents)
{
    (void)revents;
    supervisor *s = c->data;
    worker *w = NULL;
    for (unsigned i = 0; i < s->nslots; i++) {
        if (&s->w[i].child == c)
            w = &s->w[i];
    }
    ev_child_stop(loop, c);
    if (!w)
        return;
    int st = c->rstatus;
    if (WIFSIGNALED(st))
        fcr_log(s->stopping || w->retiring ? FCR_LOG_INFO : FCR_LOG_ERROR,
                "worker %ld killed by signal %d (%s)", (long)c->rpid, WTERMSIG(st),
                strsignal(WTERMSIG(st)));
    else
        fcr_log(s->stopping || w->retiring ? FCR_LOG_INFO : FCR_LOG_ERROR,
                "worker %ld exited with status %d", (long)c->rpid, WEXITSTATUS(st));
    bool replace = !s->stopping && !w->retiring;
    double lived = ev_now(loop) - w->started;
    w->pid = 0;
    const fcr__supervision *sv = &s->srv->supervision;
    if (sv->exited)
        sv->exited(s->srv, (unsigned)(w - s->w), replace && !(w->start_failed && !s->ever_ready),
                   sv->data);
    /* What it sent before it exited is still to be read: connections it handed over. */
    read_channel(s, w, true);
    close_channel(s, w);
    w->ready = false;
    if (s->stopping && live_workers(s) == 0) {
        ev_break(loop, EVBREAK_ONE);
        return;
    }
    if (replace && w->start_failed && !s->ever_ready) {
        /* No worker has ever started: retrying would fail the same way, forever. */
        fcr_log(FCR_LOG_ERROR, "no worker could start: stopping");
        s->gave_up = true;
        s->stopping = true;
        ev_timer_stop(loop, &s->respawn);
        signal_all(s, SIGTERM, false);
        if (live_workers(s) == 0)
            ev_break(loop, EVBREAK_ONE);
        return;
    }
    if (!replace) {
        if (s->hup_pending && free_slots(s) >= s->n) {
            s->hup_pending = false;
            hup_cb(loop, &s->sighup, 0);
        }
        return;
    }
    /* A worker that dies right after starting is restarted with a growing delay. */
    s->backoff = lived < 1.0 ? (s->backoff > 0 ? s->backoff * 2 : 0.1) : 0;
    if (s->backoff > MAX_BACKOFF)
        s->backoff = MAX_BACKOFF;
    if (s->backoff > 0) {
        fcr_log(FCR_LOG_WARN, "restarting the worker in %.1f s", s->backoff);
        ev_timer_stop(loop, &s->respawn);
        ev_timer_set(&s->respawn, s->backoff, 0);
        ev_timer_start(loop, &s->respawn);
    } else {
        bool child = false;
        spawn(s, (unsigned)(w - s->w), &child);
        if (child)
            ev_break(loop, EVBREAK_ALL);
    }
}

/* Starts workers in free slots until `count` were started. Returns true in a new worker process:
 * the caller then unwinds so that it runs the server. */
static bool spawn_in_free_slots(supervisor *s, unsigned count)
{
    for (unsigned i = 0; i < s->nslots && count > 0; i++) {
        if (s->w[i].pid == 0) {
            bool child = false;
            spawn(s, i, &child);
            if (child)
                return true;
            count--;
        }
    }
    return false;
}

static void respawn_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    supervisor *s = t->data;
    unsigned have = 0;
    for (unsigned i = 0; i < s->nslots; i++)
        have += s->w[i].pid > 0 && !s->w[i].retiring;
    if (have < s->n && spawn_in_free_slots(s, s->n - have))
        ev_break(loop, EVBREAK_ALL);
}

static void signal_all(supervisor *s, int sig, bool retiring_only)
{
    for (unsigned i = 0; i < s->nslots; i++) {
        if (s->w[i].pid > 0 && (!retiring_only || s->w[i].retiring))
            kill(s->w[i].pid, sig);
    }
}

static void killer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    supervisor *s = t->data;
    fcr_log(FCR_LOG_WARN, "workers still running past the grace period: killing them");
    signal_all(s, SIGKILL, !s->stopping);
}

static void stop_cb(struct ev_loop *loop, ev_signal *sig, int revents)
{
    (void)revents;
    supervisor *s = sig->data;
    if (s->stopping) {
        signal_all(s, SIGKILL, false);
        return;
    }
    fcr_log(FCR_LOG_INFO, "signal %d: stopping workers", sig->signum);
    s->stopping = true;
    s->restarting = s->hup_pending = false;
    ev_timer_stop(loop, &s->respawn);
    ev_timer_stop(loop, &s->ready_timer);
    /* No new connection may queue up once the workers start closing their copies of the
     * sockets: remove the socket files, refuse new TCP connections, drop our copies. The
     * workers accept what is already queued. */
    fcr__listeners_retire(s->srv, false);
    signal_all(s, SIGTERM, false);
    ev_timer_stop(loop, &s->killer);
    ev_timer_set(&s->killer, s->grace + KILL_AFTER_GRACE, 0);
    ev_timer_start(loop, &s->killer);
    if (live_workers(s) == 0)
        ev_break(loop, EVBREAK_ONE);
}

static void hup_cb(struct ev_loop *loop, ev_signal *sig, int revents)
{
    (void)revents;
    supervisor *s = sig->data;
    if (s->stopping)
        return;
    if (s->restarting || free_slots(s) < s->n) {
        /* Old workers of an earlier restart still drain: restart once they are gone. */
        fcr_log(FCR_LOG_INFO, "SIGHUP: a restart is under way; restarting again after it");
        s->hup_pending = true;
        return;
    }
    fcr_log(FCR_LOG_INFO, "SIGHUP: starting new workers, then retiring the old ones");
    for (unsigned i = 0; i < s->nslots; i++) {
        if (s->w[i].pid > 0 && !s->w[i].retiring)
            s->w[i].retiring = true;
    }
    /* The old workers keep accepting until every new one reports that it accepts. */
    s->restarting = true;
    ev_timer_stop(loop, &s->respawn);
    if (spawn_in_free_slots(s, s->n)) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    ev_timer_set(&s->ready_timer, READY_WAIT, 0);
    ev_timer_start(loop, &s->ready_timer);
}

int fcr_server_run_workers(fcr_server *srv, unsigned n, double grace)
{
    if (!srv)
        return FCR_EINVAL;
    if (n <= 1)
        return fcr_server_run(srv, grace);
    struct ev_loop *loop = srv->loop;
    if (loop != ev_default_loop(0))
        return FCR_EINVAL;
    supervisor s = {.srv = srv, .n = n, .grace = grace, .nslots = 2 * n, .own_chan = -1};
    s.w = calloc(s.nslots, sizeof *s.w);
    if (!s.w)
        return FCR_ENOMEM;
    for (unsigned i = 0; i < s.nslots; i++)
        s.w[i].chan = -1;
    if (srv->supervision.prefork) {
        int rc = srv->supervision.prefork(srv, s.nslots, srv->supervision.data);
        if (rc < 0) {
            free(s.w);
            return rc;
        }
    }
    /* The supervisor keeps the sockets open for replacements but never accepts. */
    fcr__listeners_pause(srv, true);
    ev_signal_init(&s.sigterm, stop_cb, SIGTERM);
    ev_signal_init(&s.sigint, stop_cb, SIGINT);
    ev_signal_init(&s.sighup, hup_cb, SIGHUP);
    ev_timer_init(&s.respawn, respawn_cb, 0.1, 0);
    ev_timer_init(&s.killer, killer_cb, 1, 0);
    ev_timer_init(&s.ready_timer, ready_timeout_cb, READY_WAIT, 0);
    s.sigterm.data = s.sigint.data = s.sighup.data = s.respawn.data = s.killer.data = &s;
    s.ready_timer.data = &s;
    ev_signal_start(loop, &s.sigterm);
    ev_signal_start(loop, &s.sigint);
    ev_signal_start(loop, &s.sighup);
    bool child = false;
    for (unsigned i = 0; i < n && !child; i++) {
        if (!spawn(&s, i, &child) && i == 0) {
            stop_supervisor_watchers(&s);
            free(s.w);
            return FCR_EIO;
        }
    }
    if (!child)
        ev_run(loop, 0);
    if (child || in_worker) {
        free(s.w);
        if (srv->supervision.worker)
            srv->supervision.worker(srv, s.own_slot, srv->supervision.data);
        int started = fcr__server_worker_start(srv);
        if (started < 0) {
            (void)fcr__chan_send(s.own_chan, FCR__MSG_START_FAILED, -1);
            close(s.own_chan);
            return started;
        }
        fcr__listeners_pause(srv, false);
        /* The listeners are watched: connections are taken from the next loop iteration on. */
        (void)fcr__chan_send(s.own_chan, FCR__MSG_READY, -1);
        srv->chan = s.own_chan;
        int rc = fcr_server_run(srv, grace);
        srv->chan = -1;
        close(s.own_chan);
        return rc;
    }
    stop_supervisor_watchers(&s);
    signal_all(&s, SIGKILL, false);
    close_supervisor_fds(&s);
    free(s.w);
    return s.gave_up ? FCR_EIO : 0;
}
