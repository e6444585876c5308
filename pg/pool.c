/* The pool: its queues, the dispatch of queries to free connections, timeouts and cancel
 * requests, failures reported from the loop, transactions' end, and freeing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

/* Connections a pool may have. */
#define MAX_SIZE 64u

void fcr__pg_copy_msg(char *dst, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n > PGQ_MSG - 1)
        n = PGQ_MSG - 1;
    memcpy(dst, src ? src : "", n);
    /* libpq's messages end with a newline (and may hold several lines): keep the first. */
    char *nl = memchr(dst, '\n', n);
    if (nl)
        n = (size_t)(nl - dst);
    dst[n] = '\0';
}

/* `a` followed by the first line of `b`, cut to PGQ_MSG bytes with the NUL. */
void fcr__pg_join_msg(char *dst, const char *a, const char *b)
{
    char tmp[PGQ_MSG];
    fcr__pg_copy_msg(tmp, b);
    size_t na = strlen(a), nb = strlen(tmp);
    if (na > PGQ_MSG - 1)
        na = PGQ_MSG - 1;
    if (nb > PGQ_MSG - 1 - na)
        nb = PGQ_MSG - 1 - na;
    memmove(dst, a, na);
    memcpy(dst + na, tmp, nb);
    dst[na + nb] = '\0';
}

/* ---- Lists ---------------------------------------------------------------------------- */

void fcr__pg_list_push(pgq_list *l, pgq *q)
{
    q->list = l;
    q->next = NULL;
    q->prev = l->tail;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    l->n++;
}

void fcr__pg_list_remove(pgq *q)
{
    pgq_list *l = q->list;
    if (!l)
        return;
    if (q->prev)
        q->prev->next = q->next;
    else
        l->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        l->tail = q->prev;
    l->n--;
    q->list = NULL;
    q->prev = q->next = NULL;
}

pgq *fcr__pg_list_pop(pgq_list *l)
{
    pgq *q = l->head;
    /* clang-analyzer follows a caller that frees the query it popped, then calls a user's
     * callback (opaque to it) and pops again: it cannot see that the list no longer holds the
     * freed query (fcr__pg_list_remove() unlinked it before). */
    if (q)
        fcr__pg_list_remove(q); // NOLINT(clang-analyzer-unix.Malloc)
    return q;
}

/* ---- Callbacks ------------------------------------------------------------------------ */

/* Every watcher callback of the pool runs between enter and leave, so that a pool freed from
 * inside a user's callback is destroyed only when the watcher callback ends. */
static void pool_destroy(fcr_pg_pool *p);

void fcr__pg_enter(fcr_pg_pool *p)
{
    p->depth++;
}

void fcr__pg_leave(fcr_pg_pool *p)
{
    if (--p->depth == 0 && p->dying && !p->destroying)
        pool_destroy(p);
}

unsigned fcr__pg_connected(const fcr_pg_pool *p)
{
    unsigned n = 0;
    for (unsigned i = 0; i < p->cfg.size; i++)
        if (p->conns[i].state == C_IDLE || p->conns[i].state == C_BUSY)
            n++;
    return n;
}

/* Calls the query's callback with the server's result `r` (may be NULL) or the error `err`
 * (0: taken from `r`); clears `r`. */
void fcr__pg_deliver(pgq *q, PGresult *r, int err, const char *msg)
{
    fcr_pg_result res;
    memset(&res, 0, sizeof res);
    res.pg = r;
    res.error = err;
    if (r) {
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (st)
            snprintf(res.sqlstate, sizeof res.sqlstate, "%s", st);
    }
    if (!err) {
        ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
            res.error = FCR_EIO;
            const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
            fcr__pg_copy_msg(res.message, m ? m : r ? PQresultErrorMessage(r) : "no result");
        } else if (q->kind == Q_COMMIT && strcmp(PQcmdStatus(r), "ROLLBACK") == 0) {
            /* COMMIT of a failed transaction: the server rolled back. */
            res.error = FCR_EIO;
            snprintf(res.sqlstate, sizeof res.sqlstate, "40000");
            fcr__pg_copy_msg(res.message, "the transaction was rolled back");
        }
    } else {
        fcr__pg_copy_msg(res.message, msg ? msg : fcr_strerror(err));
    }
    if (q->cb)
        q->cb(&res, q->data);
    if (r)
        PQclear(r);
}

static void fail_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    fcr_pg_pool *p = w->data;
    fcr__pg_enter(p);
    pgq *q;
    while (!p->dying && (q = fcr__pg_list_pop(&p->failed))) {
        fcr__pg_deliver(q, NULL, q->err, q->msg);
        fcr__pg_q_free(q);
    }
    fcr__pg_leave(p);
}

/* Reports `err` to `q`'s callback from the loop (soon, never from the caller's call). `q` must
 * not be running on a connection. */
void fcr__pg_fail_later(pgq *q, int err, const char *msg)
{
    fcr_pg_pool *p = q->pool;
    fcr__pg_list_remove(q);
    ev_timer_stop(p->loop, &q->timer);
    q->err = err;
    fcr__pg_copy_msg(q->msg, msg ? msg : fcr_strerror(err));
    if (q->kind == Q_BEGIN && q->tx)
        fcr__pg_tx_abandon(q->tx, "BEGIN failed");
    fcr__pg_list_push(&p->failed, q);
    if (!ev_is_active(&p->fail_timer)) {
        ev_timer_set(&p->fail_timer, 0., 0.);
        ev_timer_start(p->loop, &p->fail_timer);
    }
}

void fcr__pg_q_free(pgq *q)
{
    fcr_pg_pool *p = q->pool;
    ev_timer_stop(p->loop, &q->timer);
    fcr_pg_tx *tx = q->tx;
    free(q);
    if (tx) {
        tx->nq--;
        fcr__pg_tx_maybe_free(tx);
    }
}

/* ---- Timeouts and cancel requests ----------------------------------------------------- */

/* PQcancel() connects to the server and waits for it to take the request: it blocks. libpq 15
 * has no non-blocking cancel (PQcancelStart came with 17), and dropping the connection instead
 * does not stop the query: the server notices a closed client only when it next writes to it
 * (pg_sleep, a lock wait or a long scan would go on). So the request is sent from a
 * short-lived thread of its own, which touches nothing but its PGcancel (made on the loop with
 * PQgetCancel); the loop reaps finished threads, and fcr_pg_pool_free() joins the rest. The
 * query's callback does not wait for any of it: it gets FCR_ETIMEDOUT at the timeout. */
static void *cancel_main(void *arg)
{
    pg_cancel *k = arg;
    char err[256];
    if (!PQcancel(k->cancel, err, sizeof err))
        fcr_log(FCR_LOG_WARN, "pg: cancel request failed: %s", err);
    atomic_store(&k->done, true);
    ev_async_send(k->pool->loop, &k->pool->cancel_async);
    return NULL;
}

/* Joins the finished cancel threads (all of them with `all`). A connection that waited for
 * its cancel request to be sent is free again. Returns true when one is. */
static bool cancels_reap(fcr_pg_pool *p, bool all)
{
    bool freed = false;
    pg_cancel **pk = &p->cancels;
    while (*pk) {
        pg_cancel *k = *pk;
        if (all || atomic_load(&k->done)) {
            pthread_join(k->th, NULL);
            pgconn *c = k->conn;
            if (c && c->cancel_wait && !p->destroying) {
                c->cancel_wait = false;
                c->cancelled = false;
                ev_timer_stop(p->loop, &c->timer);
                c->state = C_IDLE;
                freed = true;
            }
            PQfreeCancel(k->cancel);
            *pk = k->next;
            free(k);
        } else {
            pk = &k->next;
        }
    }
    return freed;
}

bool fcr__pg_cancel_pending(const fcr_pg_pool *p, const pgconn *c)
{
    for (const pg_cancel *k = p->cancels; k; k = k->next)
        if (k->conn == c && !atomic_load(&k->done))
            return true;
    return false;
}

void fcr__pg_cancel_detach(fcr_pg_pool *p, const pgconn *c)
{
    for (pg_cancel *k = p->cancels; k; k = k->next)
        if (k->conn == c)
            k->conn = NULL;
}

static void cancel_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop, (void)revents;
    fcr_pg_pool *p = w->data;
    fcr__pg_enter(p);
    if (cancels_reap(p, false))
        fcr__pg_kick(p);
    fcr__pg_leave(p);
}

void fcr__pg_cancel_start(fcr_pg_pool *p, pgconn *c)
{
    if (cancels_reap(p, false))
        fcr__pg_kick(p);
    pg_cancel *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->pool = p;
    k->conn = c;
    k->cancel = PQgetCancel(c->pg);
    atomic_init(&k->done, false);
    if (!k->cancel || pthread_create(&k->th, NULL, cancel_main, k) != 0) {
        if (k->cancel)
            PQfreeCancel(k->cancel);
        free(k);
        return;
    }
    k->next = p->cancels;
    p->cancels = k;
}

static void query_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    pgq *q = w->data;
    fcr_pg_pool *p = q->pool;
    fcr__pg_enter(p);
    if (q->list) {
        /* Still waiting for a connection. */
        fcr__pg_list_remove(q);
        /* A transaction one of whose queries (COMMIT included) timed out is over. */
        if (q->tx)
            fcr__pg_tx_abandon(q->tx, "a query of the transaction timed out");
        fcr__pg_deliver(q, NULL, FCR_ETIMEDOUT, "query timed out waiting for a connection");
        fcr__pg_q_free(q);
    } else if (q->conn && !q->abandoned) {
        /* Running: cancel it on the server; the connection stays busy until the server ends
         * it, for at most connect_timeout, after which the connection is dropped. */
        pgconn *c = q->conn;
        q->abandoned = true;
        if (!c->cancelled) {
            c->cancelled = true;
            fcr__pg_cancel_start(p, c);
            ev_timer_stop(p->loop, &c->timer);
            ev_timer_set(&c->timer, p->cfg.connect_timeout, 0.);
            ev_timer_start(p->loop, &c->timer);
        }
        fcr__pg_deliver(q, NULL, FCR_ETIMEDOUT, "query timed out");
        q->cb = NULL;
    }
    fcr__pg_leave(p);
}

pgq *fcr__pg_q_new(fcr_pg_pool *p, pgq_kind kind, const char *sql, int nparams,
                   const char *const *params, fcr_pg_cb cb, void *data)
{
    size_t size = sizeof(pgq) + (size_t)nparams * sizeof(char *);
    size_t sqllen = sql ? strlen(sql) + 1 : 0;
    size += sqllen;
    for (int i = 0; i < nparams; i++)
        if (params[i])
            size += strlen(params[i]) + 1;
    pgq *q = calloc(1, size);
    if (!q)
        return NULL;
    char **pv = (char **)(q + 1);
    char *s = (char *)(pv + nparams);
    for (int i = 0; i < nparams; i++) {
        if (!params[i]) {
            pv[i] = NULL;
            continue;
        }
        size_t n = strlen(params[i]) + 1;
        memcpy(s, params[i], n);
        pv[i] = s;
        s += n;
    }
    if (sql) {
        memcpy(s, sql, sqllen);
        q->sql = s;
    }
    q->params = (const char *const *)pv;
    q->nparams = nparams;
    q->pool = p;
    q->kind = kind;
    q->cb = cb;
    q->data = data;
    ev_timer_init(&q->timer, query_timer_cb, p->cfg.query_timeout, 0.);
    q->timer.data = q;
    return q;
}

/* Queues `q` on `l` (the pool's or a transaction's queue) within the bound, starts its
 * timeout and dispatches. */
void fcr__pg_submit(pgq_list *l, pgq *q)
{
    fcr_pg_pool *p = q->pool;
    if (l->n >= p->cfg.max_queue) {
        fcr__pg_fail_later(q, FCR_EAGAIN, "query queue full");
        return;
    }
    fcr__pg_list_push(l, q);
    if (p->cfg.query_timeout > 0)
        ev_timer_start(p->loop, &q->timer);
    fcr__pg_kick(p);
}

/* ---- Transactions --------------------------------------------------------------------- */

/* The transaction is over: its waiting queries fail; the connection it holds, if any, gets a
 * ROLLBACK when idle (fcr__pg_kick). */
void fcr__pg_tx_abandon(fcr_pg_tx *tx, const char *why)
{
    fcr_pg_pool *p = tx->pool;
    ev_timer_stop(p->loop, &tx->idle);
    if (tx->dead)
        return;
    tx->dead = true;
    char msg[PGQ_MSG];
    fcr__pg_join_msg(msg, "the transaction is over: ", why);
    for (pgq *q = tx->q.head; q; q = tx->q.head)
        fcr__pg_fail_later(q, FCR_ECLOSED, msg);
}

void fcr__pg_tx_maybe_free(fcr_pg_tx *tx)
{
    fcr_pg_pool *p = tx->pool;
    /* pool_destroy() frees every transaction at its end. */
    if (!tx->ended || tx->nq > 0 || tx->conn || p->destroying)
        return;
    ev_timer_stop(p->loop, &tx->idle);
    if (tx->prev)
        tx->prev->next = tx->next;
    else
        p->txs = tx->next;
    if (tx->next)
        tx->next->prev = tx->prev;
    free(tx);
}

static void tx_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    fcr_pg_tx *tx = w->data;
    fcr_pg_pool *p = tx->pool;
    fcr__pg_enter(p);
    fcr_log(FCR_LOG_WARN, "pg: a transaction idle for %g s is rolled back", p->cfg.tx_idle_timeout);
    fcr__pg_tx_abandon(tx, "idle for too long");
    fcr__pg_kick(p);
    fcr__pg_leave(p);
}

fcr_pg_tx *fcr__pg_tx_new(fcr_pg_pool *p)
{
    fcr_pg_tx *tx = calloc(1, sizeof *tx);
    if (!tx)
        return NULL;
    tx->pool = p;
    ev_timer_init(&tx->idle, tx_idle_cb, p->cfg.tx_idle_timeout, 0.);
    tx->idle.data = tx;
    tx->next = p->txs;
    if (p->txs)
        p->txs->prev = tx;
    p->txs = tx;
    return tx;
}

/* ---- Dispatch ------------------------------------------------------------------------- */

/* Gives work to every idle connection: a transaction's next query (or, for a dead one, the
 * ROLLBACK that frees the connection), else the pool's next query. */
void fcr__pg_kick(fcr_pg_pool *p)
{
    if (p->dying)
        return;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pgconn *c = &p->conns[i];
        if (c->state != C_IDLE)
            continue;
        fcr_pg_tx *tx = c->tx;
        if (tx) {
            if (tx->ended && !tx->q.head)
                tx->dead = true; /* its end is gone (it timed out): roll back */
            if (tx->dead) {
                if (tx->rollback_sent)
                    continue;
                pgq *q = fcr__pg_q_new(p, Q_ROLLBACK, NULL, 0, NULL, NULL, NULL);
                if (!q) {
                    /* Without memory for it, closing the connection rolls back. */
                    c->tx = NULL;
                    tx->conn = NULL;
                    fcr__pg_conn_close(c);
                    fcr__pg_conn_start(c);
                    fcr__pg_tx_maybe_free(tx);
                    continue;
                }
                q->internal = true;
                q->tx = tx;
                tx->nq++;
                tx->rollback_sent = true;
                fcr__pg_conn_run(c, q);
            } else if (tx->q.head) {
                ev_timer_stop(p->loop, &tx->idle);
                fcr__pg_conn_run(c, fcr__pg_list_pop(&tx->q));
            } else if (!tx->ended && p->cfg.tx_idle_timeout > 0 && !ev_is_active(&tx->idle)) {
                ev_timer_set(&tx->idle, p->cfg.tx_idle_timeout, 0.);
                ev_timer_start(p->loop, &tx->idle);
            }
            continue;
        }
        pgq *q;
        while ((q = fcr__pg_list_pop(&p->q)) && q->kind == Q_BEGIN && q->tx->dead)
            fcr__pg_fail_later(q, FCR_ECLOSED, "the transaction is over");
        if (!q)
            continue;
        if (q->kind == Q_BEGIN) {
            c->tx = q->tx;
            q->tx->conn = c;
        }
        fcr__pg_conn_run(c, q);
    }
}

/* ---- The pool ------------------------------------------------------------------------- */

void fcr_pg_config_init(fcr_pg_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->connect_timeout = 5;
    cfg->query_timeout = 30;
    cfg->reconnect_max = 5;
    cfg->tx_idle_timeout = 60;
    cfg->size = FCR_PG_DEFAULT_SIZE;
    cfg->max_queue = FCR_PG_DEFAULT_MAX_QUEUE;
}

fcr_pg_pool *fcr_pg_pool_new(struct ev_loop *loop, const fcr_pg_config *cfg, int *err)
{
    int e = FCR_EINVAL;
    fcr_pg_pool *p = NULL;
    if (!loop || !cfg || cfg->size < 1 || cfg->size > MAX_SIZE || cfg->max_queue < 1 ||
        !(cfg->connect_timeout > 0) || cfg->query_timeout < 0 || !(cfg->reconnect_max > 0) ||
        cfg->tx_idle_timeout < 0)
        goto fail;
    /* A conninfo libpq cannot parse is the caller's error, found now rather than at every
     * connection attempt. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->conninfo ? cfg->conninfo : "", &perr);
    if (!opts) {
        fcr_log(FCR_LOG_ERROR, "pg: invalid conninfo: %s", perr ? perr : "out of memory");
        e = perr ? FCR_EINVAL : FCR_ENOMEM;
        PQfreemem(perr);
        goto fail;
    }
    PQconninfoFree(opts);
    e = FCR_ENOMEM;
    p = calloc(1, sizeof *p);
    if (!p)
        goto fail;
    p->loop = loop;
    p->cfg = *cfg;
    p->conninfo = strdup(cfg->conninfo ? cfg->conninfo : "");
    p->conns = calloc(cfg->size, sizeof *p->conns);
    if (!p->conninfo || !p->conns) {
        free(p->conninfo);
        free(p->conns);
        free(p);
        p = NULL;
        goto fail;
    }
    p->cfg.conninfo = p->conninfo;
    ev_timer_init(&p->fail_timer, fail_timer_cb, 0., 0.);
    p->fail_timer.data = p;
    ev_async_init(&p->cancel_async, cancel_async_cb);
    p->cancel_async.data = p;
    ev_async_start(loop, &p->cancel_async);
    fcr__pg_enter(p);
    for (unsigned i = 0; i < cfg->size; i++) {
        fcr__pg_conn_init(&p->conns[i], p);
        fcr__pg_conn_start(&p->conns[i]);
    }
    fcr__pg_leave(p);
    return p;
fail:
    if (err)
        *err = e;
    return NULL;
}

/* Fails everything outstanding with FCR_ECLOSED (the callbacks run now), then closes and
 * frees. */
static void pool_destroy(fcr_pg_pool *p)
{
    p->destroying = true;
    p->dying = true;
    const char *msg = "the pool is being freed";
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pgconn *c = &p->conns[i];
        pgq *q = c->cur;
        c->cur = NULL;
        if (c->tx) {
            c->tx->conn = NULL;
            c->tx = NULL;
        }
        fcr__pg_conn_close(c);
        c->state = C_DOWN;
        if (q) {
            q->conn = NULL;
            if (!q->abandoned)
                fcr__pg_deliver(q, NULL, FCR_ECLOSED, msg);
            fcr__pg_q_free(q);
        }
    }
    pgq *q;
    while ((q = fcr__pg_list_pop(&p->failed))) {
        fcr__pg_deliver(q, NULL, q->err, q->msg);
        fcr__pg_q_free(q);
    }
    while ((q = fcr__pg_list_pop(&p->q))) {
        fcr__pg_deliver(q, NULL, FCR_ECLOSED, msg);
        fcr__pg_q_free(q);
    }
    for (fcr_pg_tx *tx = p->txs; tx; tx = tx->next) {
        while ((q = fcr__pg_list_pop(&tx->q))) {
            fcr__pg_deliver(q, NULL, FCR_ECLOSED, msg);
            fcr__pg_q_free(q);
        }
    }
    /* Callbacks above ran with the pool dying: they could not add anything. */
    while (p->txs) {
        fcr_pg_tx *tx = p->txs;
        p->txs = tx->next;
        ev_timer_stop(p->loop, &tx->idle);
        free(tx);
    }
    ev_timer_stop(p->loop, &p->fail_timer);
    cancels_reap(p, true);
    ev_async_stop(p->loop, &p->cancel_async);
    for (unsigned i = 0; i < p->cfg.size; i++)
        free(p->conns[i].prepared);
    for (size_t i = 0; i < p->nstmts; i++) {
        free(p->stmts[i].name);
        free(p->stmts[i].sql);
    }
    free(p->stmts);
    free(p->conns);
    free(p->conninfo);
    free(p);
}

void fcr_pg_pool_free(fcr_pg_pool *pool)
{
    if (!pool || pool->dying)
        return;
    pool->dying = true;
    if (pool->depth == 0)
        pool_destroy(pool);
}

unsigned fcr_pg_pool_connected(const fcr_pg_pool *pool)
{
    return pool ? fcr__pg_connected(pool) : 0;
}

bool fcr_pg_pool_unavailable(const fcr_pg_pool *pool)
{
    return pool && pool->unavailable;
}
