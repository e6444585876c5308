/* One connection of a pool: connecting with PQconnectStart/PQconnectPoll, sending with
 * PQsend* and PQflush, reading with PQconsumeInput/PQisBusy/PQgetResult, all on one ev_io
 * whose events follow what libpq waits for; losing the connection and reconnecting with a
 * growing, capped delay. */
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

/* The first wait before reconnecting after a failed attempt (seconds); it doubles up to
 * cfg.reconnect_max. The first attempt after a connection is lost comes at once. */
#define BACKOFF_MIN 0.05

static void conn_lost(pgconn *c, const char *why);

/* Watches the connection's current socket for `events`; libpq may change the socket while
 * connecting (one attempt per address). Returns false when there is no socket. */
static bool conn_watch(pgconn *c, int events)
{
    fcr_pg_pool *p = c->pool;
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return false;
    if (ev_is_active(&c->io) && c->io.fd == fd && (c->io.events & (EV_READ | EV_WRITE)) == events)
        return true;
    ev_io_stop(p->loop, &c->io);
    ev_io_set(&c->io, fd, events);
    ev_io_start(p->loop, &c->io);
    return true;
}

/* Closes the libpq connection and forgets what it had prepared. */
void fcr__pg_conn_close(pgconn *c)
{
    fcr_pg_pool *p = c->pool;
    ev_io_stop(p->loop, &c->io);
    ev_timer_stop(p->loop, &c->timer);
    if (c->res) {
        PQclear(c->res);
        c->res = NULL;
    }
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (c->prepared)
        memset(c->prepared, 0, c->nprepared);
    c->cancelled = false;
    c->cancel_wait = false;
    fcr__pg_cancel_detach(p, c);
}

/* Waits before the next attempt: `delay` seconds (0: at the next loop iteration). */
static void conn_wait(pgconn *c, double delay)
{
    fcr_pg_pool *p = c->pool;
    c->state = C_WAIT;
    ev_timer_stop(p->loop, &c->timer);
    ev_timer_set(&c->timer, delay, 0.);
    ev_timer_start(p->loop, &c->timer);
}

static double next_backoff(const pgconn *c)
{
    double b = c->backoff <= 0 ? BACKOFF_MIN : c->backoff * 2;
    return b > c->pool->cfg.reconnect_max ? c->pool->cfg.reconnect_max : b;
}

/* A connection attempt failed: wait, and when no connection is up the database is
 * unavailable: the queued queries fail, and new ones fail at once until a connection is up. */
static void conn_failed(pgconn *c, const char *why)
{
    fcr_pg_pool *p = c->pool;
    fcr__pg_copy_msg(p->last_error, why); /* before `why` (libpq's) is freed */
    fcr__pg_conn_close(c);
    c->backoff = next_backoff(c);
    conn_wait(c, c->backoff);
    if (fcr__pg_connected(p) > 0)
        return;
    if (!p->unavailable)
        fcr_log(FCR_LOG_WARN, "pg: database unavailable: %s", p->last_error);
    p->unavailable = true;
    char msg[PGQ_MSG];
    fcr__pg_join_msg(msg, "database unavailable: ", p->last_error);
    for (pgq *q = p->q.head; q; q = p->q.head)
        fcr__pg_fail_later(q, FCR_ECLOSED, msg);
}

/* The server's notices and warnings go to the log, not to stderr as libpq's default does. */
static void notice_cb(void *arg, const char *message)
{
    (void)arg;
    char line[PGQ_MSG];
    fcr__pg_copy_msg(line, message);
    fcr_log(FCR_LOG_INFO, "pg: server: %s", line);
}

static void conn_up(pgconn *c)
{
    fcr_pg_pool *p = c->pool;
    ev_timer_stop(p->loop, &c->timer);
    if (PQsetnonblocking(c->pg, 1) != 0 || !conn_watch(c, EV_READ)) {
        conn_failed(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = C_IDLE;
    c->backoff = 0;
    if (p->unavailable)
        fcr_log(FCR_LOG_INFO, "pg: database available again");
    p->unavailable = false;
    fcr__pg_kick(p);
}

/* One step of PQconnectPoll. */
static void conn_poll(pgconn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (!conn_watch(c, EV_READ))
            conn_failed(c, "no socket");
        return;
    case PGRES_POLLING_WRITING:
        if (!conn_watch(c, EV_WRITE))
            conn_failed(c, "no socket");
        return;
    case PGRES_POLLING_OK:
        conn_up(c);
        return;
    default:
        conn_failed(c, PQerrorMessage(c->pg));
        return;
    }
}

/* Starts a connection attempt (PQconnectStart does not wait, but for a host name's lookup). */
void fcr__pg_conn_start(pgconn *c)
{
    fcr_pg_pool *p = c->pool;
    c->pg = PQconnectStart(p->conninfo);
    if (!c->pg) {
        conn_failed(c, "out of memory");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_failed(c, PQerrorMessage(c->pg));
        return;
    }
    PQsetNoticeProcessor(c->pg, notice_cb, NULL);
    c->state = C_CONNECTING;
    ev_timer_stop(p->loop, &c->timer);
    ev_timer_set(&c->timer, p->cfg.connect_timeout, 0.);
    ev_timer_start(p->loop, &c->timer);
    /* After PQconnectStart, libpq waits for the socket to be writable. */
    if (!conn_watch(c, EV_WRITE))
        conn_failed(c, "no socket");
}

/* Flushes what libpq holds; watches for writability while some is left. */
static bool conn_flush(pgconn *c)
{
    int f = PQflush(c->pg);
    if (f < 0 || !conn_watch(c, f > 0 ? EV_READ | EV_WRITE : EV_READ)) {
        conn_lost(c, PQerrorMessage(c->pg));
        return false;
    }
    return true;
}

static bool is_prepared(const pgconn *c, int stmt)
{
    return (size_t)stmt < c->nprepared && c->prepared[stmt];
}

static void set_prepared(pgconn *c, int stmt)
{
    if ((size_t)stmt >= c->nprepared) {
        size_t n = c->pool->capstmts > (size_t)stmt ? c->pool->capstmts : (size_t)stmt + 1;
        unsigned char *np = realloc(c->prepared, n);
        if (!np)
            return; /* prepared again next time: a server error "already exists" then */
        memset(np + c->nprepared, 0, n - c->nprepared);
        c->prepared = np;
        c->nprepared = n;
    }
    c->prepared[stmt] = 1;
}

/* Sends the query proper (after its statement is prepared). */
static int send_query(pgconn *c, const pgq *q)
{
    switch (q->kind) {
    case Q_EXEC:
        return PQsendQueryPrepared(c->pg, c->pool->stmts[q->stmt].name, q->nparams, q->params, NULL,
                                   NULL, 0);
    case Q_BEGIN:
        return PQsendQueryParams(c->pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
    case Q_COMMIT:
        return PQsendQueryParams(c->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    case Q_ROLLBACK:
        return PQsendQueryParams(c->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
    case Q_SQL:
    default:
        return PQsendQueryParams(c->pg, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0);
    }
}

/* Runs `q` on the idle connection `c`. A failure to send loses the connection (and fails
 * `q`, later). */
void fcr__pg_conn_run(pgconn *c, pgq *q)
{
    c->cur = q;
    q->conn = c;
    c->state = C_BUSY;
    int ok;
    if (q->kind == Q_EXEC && !is_prepared(c, q->stmt)) {
        const pg_stmt *st = &c->pool->stmts[q->stmt];
        q->preparing = true;
        ok = PQsendPrepare(c->pg, st->name, st->sql, st->nparams, NULL);
    } else {
        ok = send_query(c, q);
    }
    if (!ok) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    conn_flush(c);
}

/* The connection broke: its query fails, its transaction is over, and it reconnects (the first
 * attempt at once). */
static void conn_lost(pgconn *c, const char *why)
{
    char msg[PGQ_MSG];
    fcr__pg_join_msg(msg, "connection lost: ", why && *why ? why : "closed by the server");
    fcr_log(FCR_LOG_WARN, "pg: %s", msg);
    fcr_pg_tx *tx = c->tx;
    if (tx) {
        tx->nq++; /* held until the end of this function */
        c->tx = NULL;
        tx->conn = NULL;
        fcr__pg_tx_abandon(tx, msg);
    }
    pgq *q = c->cur;
    c->cur = NULL;
    fcr__pg_conn_close(c);
    c->backoff = 0;
    conn_wait(c, 0.);
    if (q) {
        q->conn = NULL;
        if (q->abandoned)
            fcr__pg_q_free(q);
        else
            fcr__pg_fail_later(q, FCR_ECLOSED, msg);
    }
    if (tx) {
        tx->nq--;
        fcr__pg_tx_maybe_free(tx);
    }
}

/* The running query has all its results: report it, free the connection, run the next. */
static void query_done(pgconn *c)
{
    fcr_pg_pool *p = c->pool;
    pgq *q = c->cur;
    PGresult *r = c->res;
    c->res = NULL;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        if (r)
            PQclear(r);
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    if (q->preparing) {
        q->preparing = false;
        bool prepared = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        if (prepared)
            set_prepared(c, q->stmt);
        if (prepared && !q->abandoned) {
            PQclear(r);
            if (!send_query(c, q)) {
                conn_lost(c, PQerrorMessage(c->pg));
                return;
            }
            conn_flush(c);
            return;
        }
        /* The statement does not prepare: that error is the query's result. */
    }
    c->cur = NULL;
    q->conn = NULL;
    if (c->cancelled && fcr__pg_cancel_pending(p, c)) {
        /* The cancel request is still on its way: sent now, it would cancel the next query.
         * The connection waits for it (cancel_async_cb), within the same deadline. */
        c->cancel_wait = true;
    } else {
        c->state = C_IDLE;
        if (c->cancelled) {
            ev_timer_stop(p->loop, &c->timer);
            c->cancelled = false;
        }
    }
    fcr_pg_tx *tx = q->tx;
    bool ok = r && (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
    if (tx && (q->kind == Q_COMMIT || q->kind == Q_ROLLBACK)) {
        /* The transaction gives its connection back. */
        c->tx = NULL;
        tx->conn = NULL;
        tx->dead = true;
    } else if (tx && (q->abandoned || (q->kind == Q_BEGIN && !ok))) {
        fcr__pg_tx_abandon(tx,
                           q->abandoned ? "a query of the transaction timed out" : "BEGIN failed");
    }
    if (q->abandoned)
        PQclear(r);
    else
        fcr__pg_deliver(q, r, 0, NULL);
    fcr__pg_q_free(q);
    if (!p->dying)
        fcr__pg_kick(p);
}

/* Reads what the server sent and takes every complete result. */
static void conn_read(pgconn *c)
{
    fcr_pg_pool *p = c->pool;
    if (!PQconsumeInput(c->pg)) {
        conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->pg)))
        PQfreemem(n);
    if (!c->cur) {
        if (PQstatus(c->pg) == CONNECTION_BAD)
            conn_lost(c, PQerrorMessage(c->pg));
        return;
    }
    while (c->cur && !PQisBusy(c->pg) && !p->dying) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            query_done(c);
            return;
        }
        /* Keep the first error, else the last result. */
        if (c->res && PQresultStatus(c->res) == PGRES_FATAL_ERROR) {
            PQclear(r);
        } else {
            if (c->res)
                PQclear(c->res);
            c->res = r;
        }
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    pgconn *c = w->data;
    fcr_pg_pool *p = c->pool;
    fcr__pg_enter(p);
    if (c->state == C_CONNECTING) {
        conn_poll(c);
    } else if (c->state == C_IDLE || c->state == C_BUSY) {
        if ((revents & EV_WRITE) && !conn_flush(c)) {
            fcr__pg_leave(p);
            return;
        }
        if (revents & EV_READ)
            conn_read(c);
    }
    fcr__pg_leave(p);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    pgconn *c = w->data;
    fcr_pg_pool *p = c->pool;
    fcr__pg_enter(p);
    switch (c->state) {
    case C_WAIT:
        fcr__pg_conn_start(c);
        break;
    case C_CONNECTING:
        conn_failed(c, "connect timeout");
        break;
    case C_BUSY:
        /* A cancelled query that does not end: the connection is dropped. */
        conn_lost(c, "the cancelled query did not end in time");
        break;
    default:
        break;
    }
    fcr__pg_leave(p);
}

void fcr__pg_conn_init(pgconn *c, fcr_pg_pool *p)
{
    memset(c, 0, sizeof *c);
    c->pool = p;
    c->state = C_DOWN;
    ev_io_init(&c->io, io_cb, -1, 0);
    c->io.data = c;
    ev_timer_init(&c->timer, timer_cb, 0., 0.);
    c->timer.data = c;
}
