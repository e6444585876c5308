/* The public functions that submit work: queries, prepared statements, transactions. */
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

/* The protocol's limit on the parameters of one statement. */
#define MAX_PARAMS 65535

static bool args_ok(const fcr_pg_pool *p, int nparams, const char *const *params)
{
    return p && !p->dying && nparams >= 0 && nparams <= MAX_PARAMS && (nparams == 0 || params);
}

/* Queues `q` on the pool, or fails it at once when the database is unavailable. */
static void submit_pool(fcr_pg_pool *p, pgq *q)
{
    if (p->unavailable) {
        char msg[PGQ_MSG];
        fcr__pg_join_msg(msg, "database unavailable: ", p->last_error);
        fcr__pg_fail_later(q, FCR_ECLOSED, msg);
        return;
    }
    fcr__pg_submit(&p->q, q);
}

/* Queues `q` on its transaction, or fails it when the transaction is over. */
static void submit_tx(fcr_pg_tx *tx, pgq *q)
{
    q->tx = tx;
    tx->nq++;
    if (tx->dead)
        fcr__pg_fail_later(q, FCR_ECLOSED, "the transaction is over");
    else
        fcr__pg_submit(&tx->q, q);
}

static int find_stmt(const fcr_pg_pool *p, const char *name)
{
    for (size_t i = 0; i < p->nstmts; i++)
        if (strcmp(p->stmts[i].name, name) == 0)
            return (int)i;
    return -1;
}

int fcr_pg_query(fcr_pg_pool *pool, const char *sql, int nparams, const char *const *params,
                 fcr_pg_cb cb, void *data)
{
    if (!args_ok(pool, nparams, params) || !sql || !cb)
        return FCR_EINVAL;
    pgq *q = fcr__pg_q_new(pool, Q_SQL, sql, nparams, params, cb, data);
    if (!q)
        return FCR_ENOMEM;
    submit_pool(pool, q);
    return 0;
}

int fcr_pg_prepare(fcr_pg_pool *pool, const char *name, const char *sql, int nparams)
{
    if (!pool || pool->dying || !name || !sql || nparams < 0 || nparams > MAX_PARAMS)
        return FCR_EINVAL;
    size_t n = strlen(name);
    if (n < 1 || n > 63)
        return FCR_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return FCR_EINVAL;
    }
    if (find_stmt(pool, name) >= 0)
        return FCR_EEXIST;
    if (pool->nstmts == pool->capstmts) {
        size_t cap = pool->capstmts ? pool->capstmts * 2 : 8;
        pg_stmt *ns = realloc(pool->stmts, cap * sizeof *ns);
        if (!ns)
            return FCR_ENOMEM;
        pool->stmts = ns;
        pool->capstmts = cap;
    }
    pg_stmt *st = &pool->stmts[pool->nstmts];
    st->name = strdup(name);
    st->sql = strdup(sql);
    st->nparams = nparams;
    if (!st->name || !st->sql) {
        free(st->name);
        free(st->sql);
        return FCR_ENOMEM;
    }
    pool->nstmts++;
    return 0;
}

static pgq *exec_new(fcr_pg_pool *pool, const char *name, int nparams, const char *const *params,
                     fcr_pg_cb cb, void *data, int *err)
{
    *err = FCR_EINVAL;
    if (!args_ok(pool, nparams, params) || !name || !cb)
        return NULL;
    int stmt = find_stmt(pool, name);
    if (stmt < 0) {
        *err = FCR_ENOTFOUND;
        return NULL;
    }
    pgq *q = fcr__pg_q_new(pool, Q_EXEC, NULL, nparams, params, cb, data);
    if (!q) {
        *err = FCR_ENOMEM;
        return NULL;
    }
    q->stmt = stmt;
    return q;
}

int fcr_pg_execute(fcr_pg_pool *pool, const char *name, int nparams, const char *const *params,
                   fcr_pg_cb cb, void *data)
{
    int err;
    pgq *q = exec_new(pool, name, nparams, params, cb, data, &err);
    if (!q)
        return err;
    submit_pool(pool, q);
    return 0;
}

int fcr_pg_begin(fcr_pg_pool *pool, fcr_pg_tx **tx, fcr_pg_cb cb, void *data)
{
    if (tx)
        *tx = NULL;
    if (!pool || pool->dying || !tx || !cb)
        return FCR_EINVAL;
    fcr_pg_tx *t = fcr__pg_tx_new(pool);
    if (!t)
        return FCR_ENOMEM;
    pgq *q = fcr__pg_q_new(pool, Q_BEGIN, NULL, 0, NULL, cb, data);
    if (!q) {
        t->ended = true;
        fcr__pg_tx_maybe_free(t);
        return FCR_ENOMEM;
    }
    q->tx = t;
    t->nq++;
    *tx = t;
    submit_pool(pool, q);
    return 0;
}

static bool tx_ok(const fcr_pg_tx *tx)
{
    return tx && !tx->ended && !tx->pool->dying;
}

int fcr_pg_tx_query(fcr_pg_tx *tx, const char *sql, int nparams, const char *const *params,
                    fcr_pg_cb cb, void *data)
{
    if (!tx_ok(tx) || !args_ok(tx->pool, nparams, params) || !sql || !cb)
        return FCR_EINVAL;
    pgq *q = fcr__pg_q_new(tx->pool, Q_SQL, sql, nparams, params, cb, data);
    if (!q)
        return FCR_ENOMEM;
    submit_tx(tx, q);
    return 0;
}

int fcr_pg_tx_execute(fcr_pg_tx *tx, const char *name, int nparams, const char *const *params,
                      fcr_pg_cb cb, void *data)
{
    if (!tx_ok(tx))
        return FCR_EINVAL;
    int err;
    pgq *q = exec_new(tx->pool, name, nparams, params, cb, data, &err);
    if (!q)
        return err;
    submit_tx(tx, q);
    return 0;
}

/* COMMIT or ROLLBACK: the last query of the transaction, taken even when its queue is full. */
static int tx_end(fcr_pg_tx *tx, pgq_kind kind, fcr_pg_cb cb, void *data)
{
    if (!tx_ok(tx))
        return FCR_EINVAL;
    fcr_pg_pool *p = tx->pool;
    tx->ended = true;
    pgq *q = fcr__pg_q_new(p, kind, NULL, 0, NULL, cb, data);
    if (!q) {
        /* The pool rolls back without it. */
        fcr__pg_tx_abandon(tx, "out of memory");
        fcr__pg_kick(p);
        fcr__pg_tx_maybe_free(tx);
        return FCR_ENOMEM;
    }
    q->tx = tx;
    tx->nq++;
    ev_timer_stop(p->loop, &tx->idle);
    if (tx->dead) {
        fcr__pg_fail_later(q, FCR_ECLOSED, "the transaction is over");
        return 0;
    }
    fcr__pg_list_push(&tx->q, q);
    if (p->cfg.query_timeout > 0)
        ev_timer_start(p->loop, &q->timer);
    fcr__pg_kick(p);
    return 0;
}

int fcr_pg_commit(fcr_pg_tx *tx, fcr_pg_cb cb, void *data)
{
    return tx_end(tx, Q_COMMIT, cb, data);
}

int fcr_pg_rollback(fcr_pg_tx *tx, fcr_pg_cb cb, void *data)
{
    return tx_end(tx, Q_ROLLBACK, cb, data);
}
