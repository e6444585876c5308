/* Worker processes: a supervisor forks workers that share the listening sockets. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_BACKOFF      30.0
#define KILL_AFTER_GRACE 5.0
/* A restart retires the old workers once every new one is accepting, or after this long. */
#define READY_WAIT 5.0

typedef struct worker {
    pid_t pid;
    double started;
    bool retiring; /* asked to stop by a restart: not replaced */
    bool ready;    /* reported that it accepts connections */
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
    double backoff;
    int ready_pipe[2]; /* workers write their pid once they accept */
    ev_io ready_io;
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
    ev_io_stop(loop, &s->ready_io);
    for (unsigned i = 0; i < s->nslots; i++)
        ev_child_stop(loop, &s->w[i].child);
}

static void child_cb(struct ev_loop *loop, ev_child *c, int revents);

/* Starts a worker in slot `i`. In the child this runs the server and never returns to the
 * supervisor's logic: it returns true so the caller unwinds. */
static bool spawn(supervisor *s, unsigned i, bool *is_child)
{
    struct ev_loop *loop = s->srv->loop;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fcr_log(FCR_LOG_ERROR, "fork: %s", strerror(errno));
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
        signal(SIGHUP, SIG_IGN); /* restarts are the supervisor's business */
        *is_child = true;
        return true;
    }
    worker *w = &s->w[i];
    w->pid = pid;
    w->started = ev_now(loop);
    w->retiring = false;
    w->ready = false;
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

/* The second half of a restart: the old workers stop accepting and finish what they have. */
static void retire_old(supervisor *s)
{
    struct ev_loop *loop = s->srv->loop;
    if (!s->restarting)
        return;
    s->restarting = false;
    ev_timer_stop(loop, &s->ready_timer);
    signal_all(s, SIGTERM, true);
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

static void ready_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop, (void)revents;
    supervisor *s = io->data;
    pid_t pids[64];
    ssize_t n = read(s->ready_pipe[0], pids, sizeof pids);
    for (ssize_t k = 0; k + (ssize_t)sizeof(pid_t) <= n; k += (ssize_t)sizeof(pid_t)) {
        for (unsigned i = 0; i < s->nslots; i++) {
            if (s->w[i].pid == pids[k / (ssize_t)sizeof(pid_t)])
                s->w[i].ready = true;
        }
    }
    maybe_retire_old(s);
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
    w->ready = false;
    if (s->stopping && live_workers(s) == 0) {
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
    supervisor s = {.srv = srv, .n = n, .grace = grace, .nslots = 2 * n};
    s.w = calloc(s.nslots, sizeof *s.w);
    if (!s.w)
        return FCR_ENOMEM;
    if (pipe2(s.ready_pipe, O_CLOEXEC) < 0) {
        free(s.w);
        return FCR_EIO;
    }
    fcntl(s.ready_pipe[0], F_SETFL, O_NONBLOCK);
    /* The supervisor keeps the sockets open for replacements but never accepts. */
    fcr__listeners_pause(srv, true);
    ev_signal_init(&s.sigterm, stop_cb, SIGTERM);
    ev_signal_init(&s.sigint, stop_cb, SIGINT);
    ev_signal_init(&s.sighup, hup_cb, SIGHUP);
    ev_timer_init(&s.respawn, respawn_cb, 0.1, 0);
    ev_timer_init(&s.killer, killer_cb, 1, 0);
    ev_timer_init(&s.ready_timer, ready_timeout_cb, READY_WAIT, 0);
    ev_io_init(&s.ready_io, ready_cb, s.ready_pipe[0], EV_READ);
    s.sigterm.data = s.sigint.data = s.sighup.data = s.respawn.data = s.killer.data = &s;
    s.ready_timer.data = s.ready_io.data = &s;
    ev_signal_start(loop, &s.sigterm);
    ev_signal_start(loop, &s.sigint);
    ev_signal_start(loop, &s.sighup);
    ev_io_start(loop, &s.ready_io);
    bool child = false;
    for (unsigned i = 0; i < n && !child; i++) {
        if (!spawn(&s, i, &child) && i == 0) {
            stop_supervisor_watchers(&s);
            close(s.ready_pipe[0]);
            close(s.ready_pipe[1]);
            free(s.w);
            return FCR_EIO;
        }
    }
    if (!child)
        ev_run(loop, 0);
    if (child || in_worker) {
        free(s.w);
        fcr__listeners_pause(srv, false);
        /* The listeners are watched: connections are taken from the next loop iteration on. */
        pid_t self = getpid();
        ssize_t w = write(s.ready_pipe[1], &self, sizeof self);
        (void)w;
        close(s.ready_pipe[0]);
        close(s.ready_pipe[1]);
        return fcr_server_run(srv, grace);
    }
    stop_supervisor_watchers(&s);
    signal_all(&s, SIGKILL, false);
    close(s.ready_pipe[0]);
    close(s.ready_pipe[1]);
    free(s.w);
    return 0;
}
