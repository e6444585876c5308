/**
 * @file fcrest/pg.h
 * @brief fcrest pg: a PostgreSQL client on the worker's libev loop (library `libfcrest-pg`,
 * pkg-config name `fcrest-pg`).
 *
 * A pool of libpq connections driven by libpq's non-blocking API on ev_io watchers: connecting
 * (PQconnectStart / PQconnectPoll), sending (PQsendQueryParams, PQsendPrepare,
 * PQsendQueryPrepared, PQflush on write readiness) and reading (PQconsumeInput, PQisBusy,
 * PQgetResult on read readiness) never wait on the loop. Results are handed to a callback on
 * the loop. A service that does not use PostgreSQL does not link this library; `<fcrest.h>`
 * does not include this header.
 *
 * One pool per worker process, made in a worker start hook (fcr_app_on_worker_start()) with the
 * worker's loop and freed in a stop hook. Everything runs on that loop's thread.
 *
 * @par Callbacks
 * A function that takes a callback and returns 0 calls it exactly once, later, on the loop
 * (never from inside the call itself), with a result that is either the server's answer or an
 * error (fcr_pg_result_error()). A failed call (negative return) never calls it. The result
 * and every string it gives are valid until the callback returns.
 *
 * @par Blocking
 * Nothing here blocks the loop, with one exception libpq imposes: PQconnectStart() resolves a
 * host name given in `host=` (or a URI's host) with getaddrinfo(), synchronously. A unix socket
 * directory (`host=/run/postgresql`) or a numeric `hostaddr=` avoids it. A query's timeout
 * cancels it on the server with PQcancel(), which blocks, on a short-lived thread of its own.
 */
#ifndef FCREST_PG_H
#define FCREST_PG_H

#include <stdbool.h>

#include <fcrest/app.h>
#include <fcrest/error.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;
struct pg_result;

/** A pool of connections to one database, on one loop. Opaque; see fcr_pg_pool_new(). */
typedef struct fcr_pg_pool fcr_pg_pool;
/**
 * The outcome of a query, handed to its callback: the server's result or an error. Opaque;
 * owned by the pool and valid until the callback returns.
 */
typedef struct fcr_pg_result fcr_pg_result;
/** A transaction: one connection held from BEGIN to COMMIT or ROLLBACK. See fcr_pg_begin(). */
typedef struct fcr_pg_tx fcr_pg_tx;

/**
 * A query's callback: runs once on the pool's loop with the result and the `data` given with
 * the query. It may start queries, end a transaction, or free the pool. For a query made on
 * behalf of a request, `data` carries the request (and response); the callback checks
 * fcr_req_aborted() before answering: after a client's abort it only releases what it holds
 * and calls fcr_res_send(), which then returns FCR_ECLOSED (see fcr_res_send()).
 */
typedef void (*fcr_pg_cb)(const fcr_pg_result *res, void *data);

/** Connections of a pool that sets none. */
#define FCR_PG_DEFAULT_SIZE 2u
/** Queries a pool queues when every connection is busy, when it sets no other bound. */
#define FCR_PG_DEFAULT_MAX_QUEUE 256u

/** A pool's settings: fill it with fcr_pg_config_init(), then set what you need. */
typedef struct fcr_pg_config {
    /** libpq connection string or URI ("host=/run/postgresql dbname=notes",
        "postgresql:///notes?host=/run/postgresql"); copied by fcr_pg_pool_new() */
    const char *conninfo;
    double connect_timeout; /**< seconds a connection attempt may take (default 5) */
    double query_timeout;   /**< seconds from a query's submission to its answer, after which
                                 its callback gets FCR_ETIMEDOUT and it is cancelled on the
                                 server (default 30; 0: none) */
    double reconnect_max;   /**< longest wait between reconnection attempts, seconds (default
                                 5); the wait starts at 0.05 s and doubles */
    double tx_idle_timeout; /**< seconds a transaction may hold its connection with nothing
                                 to run before it is rolled back (default 60; 0: never) */
    unsigned size;          /**< connections, 1..64 (default FCR_PG_DEFAULT_SIZE) */
    unsigned max_queue;     /**< queries waiting for a connection, >= 1 (default
                                 FCR_PG_DEFAULT_MAX_QUEUE) */
} fcr_pg_config;

/**
 * Fills `cfg` with the defaults (conninfo NULL, which libpq reads as the PG* environment
 * variables' defaults). NULL is ignored.
 */
void fcr_pg_config_init(fcr_pg_config *cfg);

/**
 * Creates a pool of `cfg->size` connections on `loop` and starts connecting them (without
 * waiting: the pool is usable at once, and queries queue until a connection is up). The
 * settings are copied. Returns the pool, owned by the caller (fcr_pg_pool_free()), or NULL and
 * sets `*err` (when not NULL): FCR_EINVAL (NULL `loop` or `cfg`, a setting out of range, a
 * conninfo libpq cannot parse), FCR_ENOMEM. A server that cannot be reached is not an error
 * here: queries then fail (fcr_pg_query()).
 */
fcr_pg_pool *fcr_pg_pool_new(struct ev_loop *loop, const fcr_pg_config *cfg, int *err);

/**
 * Frees the pool: every query still queued or running gets its callback with FCR_ECLOSED
 * (before this returns; called from inside a callback, before that callback's caller
 * returns to the loop), open transactions are abandoned (their connections closed, which rolls
 * them back on the server), the connections are closed and the watchers stopped. Waits for
 * cancel requests still being sent (see fcr_pg_config.query_timeout). The loop must still
 * exist. NULL is ignored.
 */
void fcr_pg_pool_free(fcr_pg_pool *pool);

/**
 * Runs `sql` with `nparams` text parameters (`params[i]` NULL for SQL NULL; types inferred by
 * the server, `$1`... in the text) on a free connection, or queues it until one is free. Only
 * one statement (PQsendQueryParams). The text and parameters are copied. Returns 0: `cb` gets
 * the result once (see @ref fcr_pg_cb), also for the failures that happen later:
 *   - FCR_ETIMEDOUT: no answer within the query timeout (the query is cancelled on the server);
 *   - FCR_EAGAIN: every connection busy and the queue full (the callback comes at once);
 *   - FCR_ECLOSED: the database is unavailable: the connection broke while the query ran, or
 *     no connection could be made (while the pool cannot connect, new queries fail at once
 *     instead of waiting), or the pool is being freed;
 *   - FCR_EIO: the server refused the query (fcr_pg_result_sqlstate(), fcr_pg_result_message()).
 * Returns without calling `cb`: FCR_EINVAL (NULL `pool`, `sql` or `cb`, negative `nparams`,
 * NULL `params` with `nparams` > 0, a pool being freed); FCR_ENOMEM.
 */
int fcr_pg_query(fcr_pg_pool *pool, const char *sql, int nparams, const char *const *params,
                 fcr_pg_cb cb, void *data);

/**
 * Declares the prepared statement `name` (letters, digits and '_', 1..63 bytes) as `sql` with
 * `nparams` parameters (their types inferred), for fcr_pg_execute(). Nothing is sent now: each
 * connection prepares it the first time it executes it, and again after a reconnection. Both
 * strings are copied. Returns 0; FCR_EINVAL (NULL argument, an invalid name, negative
 * `nparams`); FCR_EEXIST (a statement of that name exists); FCR_ENOMEM.
 */
int fcr_pg_prepare(fcr_pg_pool *pool, const char *name, const char *sql, int nparams);

/**
 * fcr_pg_query() of the prepared statement `name` (fcr_pg_prepare()) with `nparams` text
 * parameters. A failure to prepare it on the connection (an SQL error in the statement) is the
 * query's result (FCR_EIO). Returns and calls `cb` as fcr_pg_query() does, and FCR_ENOTFOUND
 * (without calling `cb`) for a name not declared.
 */
int fcr_pg_execute(fcr_pg_pool *pool, const char *name, int nparams, const char *const *params,
                   fcr_pg_cb cb, void *data);

/**
 * Starts a transaction: BEGIN runs on a free connection (or is queued like a query), and that
 * connection stays the transaction's until fcr_pg_commit() or fcr_pg_rollback(). `*tx` gets the
 * handle at once: queries may be added with fcr_pg_tx_query() before BEGIN is answered (they
 * run in order, after it). `cb` gets BEGIN's result; when it fails, the transaction is over
 * and its queries fail with FCR_ECLOSED. The handle is the caller's: end it with
 * fcr_pg_commit() or fcr_pg_rollback() in every case, also after a failure. A transaction left
 * with nothing to run for `tx_idle_timeout` is rolled back on the server and gives its
 * connection back (later queries on it fail with FCR_ECLOSED; the handle must still be ended).
 * Returns 0 or, without calling `cb` and leaving `*tx` NULL: FCR_EINVAL (NULL argument, a pool
 * being freed); FCR_ENOMEM.
 */
int fcr_pg_begin(fcr_pg_pool *pool, fcr_pg_tx **tx, fcr_pg_cb cb, void *data);

/**
 * fcr_pg_query() on the transaction's connection, after what the transaction already runs.
 * A query that fails on the server puts the transaction in the failed state (later queries
 * fail with SQLSTATE 25P02) until fcr_pg_rollback(). A query of the transaction that times out
 * ends the transaction: it is rolled back and its later queries fail with FCR_ECLOSED. Returns
 * and calls `cb` as fcr_pg_query(),
 * with FCR_ECLOSED for a transaction that is over (connection lost, BEGIN failed, abandoned);
 * FCR_EINVAL also for a NULL `tx`.
 */
int fcr_pg_tx_query(fcr_pg_tx *tx, const char *sql, int nparams, const char *const *params,
                    fcr_pg_cb cb, void *data);

/**
 * fcr_pg_execute() on the transaction's connection, as fcr_pg_tx_query() runs a query.
 */
int fcr_pg_tx_execute(fcr_pg_tx *tx, const char *name, int nparams, const char *const *params,
                      fcr_pg_cb cb, void *data);

/**
 * Ends the transaction with COMMIT, after its queued queries. The handle must not be used
 * afterwards, whatever this returns. `cb` (may be NULL) gets COMMIT's result: a COMMIT of a
 * failed transaction is answered by the server as a rollback, which is reported as FCR_EIO
 * with SQLSTATE 40000 (transaction_rollback) here, so that `cb` never mistakes it for success.
 * For a transaction that is already over, `cb` gets FCR_ECLOSED. Returns 0; FCR_EINVAL (NULL
 * `tx`); FCR_ENOMEM (the transaction is then rolled back, and `cb` is not called).
 */
int fcr_pg_commit(fcr_pg_tx *tx, fcr_pg_cb cb, void *data);

/**
 * Ends the transaction with ROLLBACK, after its queued queries, as fcr_pg_commit() does with
 * COMMIT. `cb` may be NULL. The way to abandon a transaction (a request whose client went
 * away). Returns 0; FCR_EINVAL (NULL `tx`); FCR_ENOMEM (the connection is then closed, which
 * rolls back on the server).
 */
int fcr_pg_rollback(fcr_pg_tx *tx, fcr_pg_cb cb, void *data);

/**
 * The pool's connections that are connected now (idle, busy or held by a transaction);
 * 0 for a NULL `pool`.
 */
unsigned fcr_pg_pool_connected(const fcr_pg_pool *pool);

/**
 * True while the pool cannot reach the database: the last connection attempt failed and no
 * connection is up. New queries then fail at once with FCR_ECLOSED. False for a NULL `pool`.
 */
bool fcr_pg_pool_unavailable(const fcr_pg_pool *pool);

/* ---- Results -------------------------------------------------------------------------- */

/**
 * 0 when the query succeeded, else its error: FCR_EIO (the server refused it), FCR_ETIMEDOUT,
 * FCR_ECLOSED, FCR_EAGAIN, FCR_ENOMEM (see fcr_pg_query()). FCR_EINVAL for a NULL `res`.
 */
int fcr_pg_result_error(const fcr_pg_result *res);

/**
 * The SQLSTATE of the server's error ("23505"), or "" when the error did not come from the
 * server (and for success, or a NULL `res`). Owned by the result.
 */
const char *fcr_pg_result_sqlstate(const fcr_pg_result *res);

/**
 * A one-line description of the error (the server's primary message, or the client side's
 * reason: "query timed out", "connection lost: ..."), or "" for success. Owned by the result.
 */
const char *fcr_pg_result_message(const fcr_pg_result *res);

/** Rows of the result (0 for a command without rows, an error or a NULL `res`). */
int fcr_pg_result_rows(const fcr_pg_result *res);

/** Columns of the result (0 for a command without rows, an error or a NULL `res`). */
int fcr_pg_result_columns(const fcr_pg_result *res);

/**
 * The name of column `col`, or NULL when out of range. Owned by the result.
 */
const char *fcr_pg_result_column_name(const fcr_pg_result *res, int col);

/**
 * The value at `row`, `col` in text form (NUL-terminated), "" for SQL NULL (tell them apart
 * with fcr_pg_result_is_null()), NULL when out of range. Owned by the result.
 */
const char *fcr_pg_result_value(const fcr_pg_result *res, int row, int col);

/** True when the value at `row`, `col` is SQL NULL; false also when out of range. */
bool fcr_pg_result_is_null(const fcr_pg_result *res, int row, int col);

/**
 * Rows an INSERT, UPDATE, DELETE, MERGE, SELECT, MOVE, FETCH or COPY affected (PQcmdTuples()),
 * or -1 for another command, an error or a NULL `res`.
 */
long long fcr_pg_result_affected(const fcr_pg_result *res);

/**
 * libpq's own result (PGresult of `<libpq-fe.h>`) for what this API does not cover, or NULL
 * for an error that did not come from the server. Borrowed: valid until the callback returns,
 * and must not be cleared.
 */
struct pg_result *fcr_pg_result_pg(const fcr_pg_result *res);

/**
 * True when the error means "the database cannot serve now, try later": FCR_ECLOSED,
 * FCR_ETIMEDOUT, FCR_EAGAIN, or a server error of SQLSTATE class 08 (connection exception),
 * 53 (insufficient resources), 57P01..57P05 (shutdown, crash, cannot connect now, idle
 * session timeout), 40001 (serialization failure) or 40P01 (deadlock). False for success and
 * every other error.
 */
bool fcr_pg_result_retryable(const fcr_pg_result *res);

/**
 * Puts the framework's answer to a failed query in `res`: 503 problem+json with
 * `Retry-After: 1` when fcr_pg_result_retryable(), else 500 problem+json; the detail says
 * "database unavailable" or "database error" and the extension member `sqlstate` carries the
 * SQLSTATE when there is one (the server's message goes to the log at FCR_LOG_WARN, not to the
 * client). Returns 0; FCR_EINVAL (NULL argument, or `result` is a success); FCR_ENOMEM.
 */
int fcr_pg_res_set_error(fcr_res *res, const fcr_pg_result *result);

#ifdef __cplusplus
}
#endif
#endif
