/* Internals of libfcrest-pg: the pool, its connections, queries and transactions.
 *
 * Everything runs on the pool's loop. A query (pgq) is in exactly one place at a time: a queue
 * (the pool's, for a connection that is free, or its transaction's), running on a connection
 * (pgconn.cur), or in the pool's list of failures waiting to be reported (delivered from a
 * zero-delay timer, so that no callback runs inside the call that submitted the query). A
 * connection is DOWN (none yet), WAIT (backoff before reconnecting), CONNECTING (PQconnectPoll
 * on its socket), IDLE or BUSY; an IDLE connection held by a transaction takes only that
 * transaction's queries. A dead transaction still holding its connection gets an internal
 * ROLLBACK as soon as the connection is idle, which gives the connection back. */
#ifndef FCREST_PG_INT_H
#define FCREST_PG_INT_H

#include <ev.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <fcrest/pg.h>

/* The longest message kept with a result that did not come from the server. */
#define PGQ_MSG 192

typedef enum pgq_kind { Q_SQL, Q_EXEC, Q_BEGIN, Q_COMMIT, Q_ROLLBACK } pgq_kind;

typedef struct pgq pgq;
typedef struct pgconn pgconn;

/* A FIFO of queries, doubly linked so that a timed-out query leaves from the middle. */
typedef struct pgq_list {
    pgq *head, *tail;
    unsigned n;
} pgq_list;

struct pgq {
    pgq *prev, *next;
    pgq_list *list; /* the queue the query waits in, or NULL */
    fcr_pg_pool *pool;
    fcr_pg_tx *tx; /* the transaction it belongs to (BEGIN included), or NULL */
    pgconn *conn;  /* the connection it runs on, or NULL */
    const char *sql;
    const char *const *params;
    fcr_pg_cb cb;
    void *data;
    ev_timer timer; /* the query timeout, from submission */
    int nparams;
    int stmt; /* Q_EXEC: index in the pool's statements */
    int err;  /* a failure waiting in the pool's failed list */
    pgq_kind kind;
    bool preparing; /* Q_EXEC: PQsendPrepare runs first */
    bool abandoned; /* timed out while running: its callback has run, the answer is dropped */
    bool internal;  /* the pool's own ROLLBACK of a dead transaction */
    char msg[PGQ_MSG];
};

typedef enum pgconn_state { C_DOWN, C_WAIT, C_CONNECTING, C_IDLE, C_BUSY } pgconn_state;

struct pgconn {
    fcr_pg_pool *pool;
    PGconn *pg;
    pgq *cur;                /* the running query */
    fcr_pg_tx *tx;           /* the transaction holding the connection */
    PGresult *res;           /* the running query's result so far */
    unsigned char *prepared; /* per statement of the pool: prepared on this connection */
    size_t nprepared;
    ev_io io;
    ev_timer timer; /* WAIT: backoff; CONNECTING: connect timeout; BUSY: cancel deadline */
    double backoff;
    pgconn_state state;
    bool cancelled;   /* BUSY: a cancel request was sent for the running query */
    bool cancel_wait; /* BUSY without a query: its cancel request is still being sent, and
                         must not hit the next query */
};

struct fcr_pg_tx {
    fcr_pg_tx *prev, *next; /* the pool's transactions */
    fcr_pg_pool *pool;
    pgconn *conn; /* the connection held, from BEGIN's dispatch */
    pgq_list q;   /* queries waiting for the connection */
    ev_timer idle;
    unsigned nq; /* queries that name this transaction and are not freed */
    bool dead;   /* over: no more queries run (a ROLLBACK may still have to) */
    bool ended;  /* the caller has committed or rolled back: freed when nothing is left */
    bool rollback_sent;
};

typedef struct pg_stmt {
    char *name;
    char *sql;
    int nparams;
} pg_stmt;

/* A cancel request sent on a thread of its own (PQcancel blocks). */
typedef struct pg_cancel {
    struct pg_cancel *next;
    fcr_pg_pool *pool;
    pgconn *conn; /* the connection whose query it cancels, until that one closes */
    PGcancel *cancel;
    pthread_t th;
    atomic_bool done;
} pg_cancel;

struct fcr_pg_pool {
    struct ev_loop *loop;
    char *conninfo;
    fcr_pg_config cfg;
    pgconn *conns;
    pgq_list q;      /* queries waiting for a free connection */
    pgq_list failed; /* failures to report from fail_timer */
    ev_timer fail_timer;
    ev_async cancel_async; /* a cancel thread has finished */
    fcr_pg_tx *txs;
    pg_stmt *stmts;
    pg_cancel *cancels;
    size_t nstmts, capstmts;
    unsigned depth; /* nesting of the pool's watcher callbacks */
    bool unavailable;
    bool dying;      /* fcr_pg_pool_free() was called */
    bool destroying; /* pool_destroy() runs */
    char last_error[PGQ_MSG];
};

/* The outcome handed to a callback (a stack object of fcr__pg_deliver). */
struct fcr_pg_result {
    PGresult *pg;
    int error;
    char sqlstate[6];
    char message[PGQ_MSG];
};

/* pool.c */
void fcr__pg_enter(fcr_pg_pool *p);
void fcr__pg_leave(fcr_pg_pool *p);
void fcr__pg_kick(fcr_pg_pool *p);
void fcr__pg_fail_later(pgq *q, int err, const char *msg);
void fcr__pg_deliver(pgq *q, PGresult *r, int err, const char *msg);
void fcr__pg_q_free(pgq *q);
pgq *fcr__pg_q_new(fcr_pg_pool *p, pgq_kind kind, const char *sql, int nparams,
                   const char *const *params, fcr_pg_cb cb, void *data);
void fcr__pg_submit(pgq_list *l, pgq *q);
fcr_pg_tx *fcr__pg_tx_new(fcr_pg_pool *p);
void fcr__pg_list_push(pgq_list *l, pgq *q);
pgq *fcr__pg_list_pop(pgq_list *l);
void fcr__pg_list_remove(pgq *q);
void fcr__pg_tx_abandon(fcr_pg_tx *tx, const char *why);
void fcr__pg_tx_maybe_free(fcr_pg_tx *tx);
void fcr__pg_cancel_start(fcr_pg_pool *p, pgconn *c);
bool fcr__pg_cancel_pending(const fcr_pg_pool *p, const pgconn *c);
void fcr__pg_cancel_detach(fcr_pg_pool *p, const pgconn *c);
unsigned fcr__pg_connected(const fcr_pg_pool *p);
void fcr__pg_copy_msg(char *dst, const char *src);
void fcr__pg_join_msg(char *dst, const char *a, const char *b);

/* conn.c */
void fcr__pg_conn_init(pgconn *c, fcr_pg_pool *p);
void fcr__pg_conn_start(pgconn *c);
void fcr__pg_conn_run(pgconn *c, pgq *q);
void fcr__pg_conn_close(pgconn *c);

#endif
