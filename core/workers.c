/* Worker processes: a supervisor forks workers that share the listening sockets. */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_BACKOFF      30.0
#define KILL_AFTER_GRACE 5.0

typedef struct worker {
    pid_t pid;
    double started;
    bool retiring; /* asked to stop by a restart: not replaced */
    ev_child child;
} worker;

typedef struct supervisor {
    fcr_server *srv;
    unsigned n;
    double grace;
    worker *w; /* 2n slots: a restart runs old and new side by side */
    unsigned nslots;
    bool stopping;
    double backoff;
    ev_signal sigterm, sigint, sighup;
    ev_timer respawn, killer;
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
    for (unsigned i = 0; i < s->nslots; i++)
        ev_child_stop(loop, &s->w[i].child);
}

static void child_cb(struct ev_loop *loop, ev_child *c, int revents);

/* Starts a worker in slot `i`. In the child this runs the server and never returns to the
 * supervisor's logic: it returns true so the caller unwinds. */
static bool spawn(supervisor *s, unsigned i, bool *is_child)
{
    struct ev_loop *loop = s->srv->loop;
    pid_t pid = fork();
    if (pid < 0) {
        fcr_log(FCR_LOG_ERROR, "fork: %s", strerror(errno));
        return false;
    }
    if (pid == 0) {
        in_worker = true;
        ev_loop_fork(loop);
        stop_supervisor_watchers(s);
        *is_child = true;
        return true;
    }
    worker *w = &s->w[i];
    w->pid = pid;
    w->started = ev_now(loop);
    w->retiring = false;
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
    if (s->stopping && live_workers(s) == 0) {
        ev_break(loop, EVBREAK_ONE);
        return;
    }
    if (!replace)
        return;
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

static void respawn_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    supervisor *s = t->data;
    unsigned want = s->n, have = 0;
    for (unsigned i = 0; i < s->nslots; i++)
        have += s->w[i].pid > 0 && !s->w[i].retiring;
    for (unsigned i = 0; i < s->nslots && have < want; i++) {
        if (s->w[i].pid == 0) {
            bool child = false;
            spawn(s, i, &child);
            if (child) {
                ev_break(loop, EVBREAK_ALL);
                return;
            }
            have++;
        }
    }
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
    ev_timer_stop(loop, &s->respawn);
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
    fcr_log(FCR_LOG_INFO, "SIGHUP: starting new workers, then retiring the old ones");
    unsigned old = 0;
    for (unsigned i = 0; i < s->nslots; i++) {
        if (s->w[i].pid > 0 && !s->w[i].retiring) {
            s->w[i].retiring = true;
            old++;
        }
    }
    unsigned started = 0;
    for (unsigned i = 0; i < s->nslots && started < s->n; i++) {
        if (s->w[i].pid == 0) {
            bool child = false;
            spawn(s, i, &child);
            if (child) {
                ev_break(loop, EVBREAK_ALL);
                return;
            }
            started++;
        }
    }
    (void)old;
    /* The new workers accept on the shared sockets as soon as they run; the old ones stop
     * accepting and finish what they have. */
    signal_all(s, SIGTERM, true);
    ev_timer_stop(loop, &s->killer);
    ev_timer_set(&s->killer, s->grace + KILL_AFTER_GRACE, 0);
    ev_timer_start(loop, &s->killer);
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
    /* The supervisor keeps the sockets open for replacements but never accepts. */
    fcr__listeners_pause(srv, true);
    ev_signal_init(&s.sigterm, stop_cb, SIGTERM);
    ev_signal_init(&s.sigint, stop_cb, SIGINT);
    ev_signal_init(&s.sighup, hup_cb, SIGHUP);
    ev_timer_init(&s.respawn, respawn_cb, 0.1, 0);
    ev_timer_init(&s.killer, killer_cb, 1, 0);
    s.sigterm.data = s.sigint.data = s.sighup.data = s.respawn.data = s.killer.data = &s;
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
        fcr__listeners_pause(srv, false);
        return fcr_server_run(srv, grace);
    }
    stop_supervisor_watchers(&s);
    signal_all(&s, SIGKILL, false);
    free(s.w);
    return 0;
}
