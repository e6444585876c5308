/* The PostgreSQL client against a real PostgreSQL 15: a throwaway server (tests/pg/server,
 * its path in FCR_PG_SERVER) in a temporary directory, started once for the suite, stopped at
 * its end. Queries, parameters and NULLs, prepared statements and their re-preparation after
 * a reconnection, transactions (commit, rollback, abandoned), a timeout cancelled on the
 * server, the server killed and started again under queries, the loop kept free during a
 * lock wait, a full queue, and requests of the framework answered from query callbacks (one
 * whose client goes away mid-query). */
#include <check.h>
#include <dirent.h>
#include <ev.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fcrest.h>
#include <fcrest/pg.h>
#include <fcrest/testing.h>

#include "fcgi_client.h"

static char dir[64];       /* the server's directory (socket and cluster) */
static char conninfo[160]; /* the pool's connection string */
static struct ev_loop *loop;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Timing bounds are multiplied by this: 1, or 10 under valgrind (scripts/valgrind sets
 * FCR_VALGRIND), which slows the client, not the server. */
static double slack(void)
{
    return getenv("FCR_VALGRIND") ? 10 : 1;
}

static void server(const char *cmd)
{
    const char *script = getenv("FCR_PG_SERVER");
    ck_assert_msg(script && *script, "FCR_PG_SERVER (the path of tests/pg/server) is not set");
    char line[512];
    snprintf(line, sizeof line, "'%s' %s '%s'", script, cmd, dir);
    int rc = system(line);
    ck_assert_msg(rc == 0, "tests/pg/server %s failed (%d)", cmd, rc);
}

static void suite_setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/fcr-pg-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    rmdir(dir); /* the script makes it, owned by the server's user */
    snprintf(conninfo, sizeof conninfo,
             "host=%s dbname=postgres user=postgres application_name=fcr_test", dir);
    server("init");
    server("start");
}

static void suite_teardown(void)
{
    server("destroy");
}

static void setup(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
}

static void teardown(void)
{
    ev_loop_destroy(loop);
    loop = NULL;
}

static fcr_pg_config config(unsigned size)
{
    fcr_pg_config cfg;
    fcr_pg_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.size = size;
    cfg.connect_timeout = 2;
    cfg.reconnect_max = 0.2;
    cfg.query_timeout = 10;
    return cfg;
}

static fcr_pg_pool *pool_new(const fcr_pg_config *cfg)
{
    int err = 0;
    fcr_pg_pool *p = fcr_pg_pool_new(loop, cfg, &err);
    ck_assert_msg(p != NULL, "fcr_pg_pool_new: %s", fcr_err_name(err));
    return p;
}

/* ---- What a callback got --------------------------------------------------------------- */

typedef struct got {
    bool done;
    int calls;
    int err;
    int rows, cols;
    long long affected;
    double at; /* when the callback ran */
    char sqlstate[6];
    char msg[200];
    char v[4][64];
    bool null[4];
} got;

static void got_cb(const fcr_pg_result *r, void *data)
{
    got *g = data;
    g->calls++;
    g->done = true;
    g->at = now();
    g->err = fcr_pg_result_error(r);
    g->rows = fcr_pg_result_rows(r);
    g->cols = fcr_pg_result_columns(r);
    g->affected = fcr_pg_result_affected(r);
    snprintf(g->sqlstate, sizeof g->sqlstate, "%s", fcr_pg_result_sqlstate(r));
    snprintf(g->msg, sizeof g->msg, "%s", fcr_pg_result_message(r));
    for (int c = 0; c < 4 && c < g->cols; c++) {
        const char *v = fcr_pg_result_value(r, 0, c);
        snprintf(g->v[c], sizeof g->v[c], "%s", v ? v : "(out of range)");
        g->null[c] = fcr_pg_result_is_null(r, 0, c);
    }
}

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l, (void)w, (void)revents;
}

/* Runs the loop until `*flag` or `limit` seconds. */
static bool run_until(const bool *flag, double limit)
{
    ev_timer t;
    ev_timer_init(&t, tick_cb, 0.005, 0.005);
    ev_timer_start(loop, &t);
    double end = now() + limit;
    while (!*flag && now() < end)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    return *flag;
}

static void run_for(double seconds)
{
    bool never = false;
    run_until(&never, seconds);
}

static void wait_got(got *g, double limit)
{
    ck_assert_msg(run_until(&g->done, limit), "no callback within %g s", limit);
    ck_assert_int_eq(g->calls, 1);
}

/* Runs `sql` and waits for its result, which must be a success. */
static void sql_ok(fcr_pg_pool *p, const char *sql, got *g)
{
    memset(g, 0, sizeof *g);
    ck_assert_int_eq(fcr_pg_query(p, sql, 0, NULL, got_cb, g), 0);
    wait_got(g, 10);
    ck_assert_msg(g->err == 0, "%s: %s %s %s", sql, fcr_err_name(g->err), g->sqlstate, g->msg);
}

/* ---- Queries ------------------------------------------------------------------------- */

START_TEST(connect_and_query)
{
    fcr_pg_config cfg = config(2);
    fcr_pg_pool *p = pool_new(&cfg);
    got g;
    sql_ok(p, "SELECT 1 + 1 AS two, 'x' AS x", &g);
    ck_assert_int_eq(g.rows, 1);
    ck_assert_int_eq(g.cols, 2);
    ck_assert_str_eq(g.v[0], "2");
    ck_assert_str_eq(g.v[1], "x");
    ck_assert(!g.null[0]);
    /* Both connections come up without any query asking. */
    double end = now() + 5;
    while (fcr_pg_pool_connected(p) < 2 && now() < end)
        run_for(0.01);
    ck_assert_uint_eq(fcr_pg_pool_connected(p), 2);
    ck_assert(!fcr_pg_pool_unavailable(p));
    /* The server's error: FCR_EIO with its SQLSTATE and message. */
    memset(&g, 0, sizeof g);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT * FROM no_such_table", 0, NULL, got_cb, &g), 0);
    ck_assert(!g.done); /* never from inside the call */
    wait_got(&g, 10);
    ck_assert_int_eq(g.err, FCR_EIO);
    ck_assert_str_eq(g.sqlstate, "42P01");
    ck_assert_msg(strstr(g.msg, "no_such_table") != NULL, "message: %s", g.msg);
    /* Arguments refused at once. */
    ck_assert_int_eq(fcr_pg_query(NULL, "SELECT 1", 0, NULL, got_cb, &g), FCR_EINVAL);
    ck_assert_int_eq(fcr_pg_query(p, NULL, 0, NULL, got_cb, &g), FCR_EINVAL);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT 1", 0, NULL, NULL, &g), FCR_EINVAL);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT $1", 1, NULL, got_cb, &g), FCR_EINVAL);
    fcr_pg_pool_free(p);
    /* A conninfo libpq cannot parse. */
    cfg.conninfo = "host=";
    cfg.conninfo = "nonsense without equals";
    int err = 0;
    ck_assert_ptr_null(fcr_pg_pool_new(loop, &cfg, &err));
    ck_assert_int_eq(err, FCR_EINVAL);
}
END_TEST

START_TEST(parameters_and_nulls)
{
    fcr_pg_config cfg = config(1);
    fcr_pg_pool *p = pool_new(&cfg);
    got g = {0};
    const char *params[] = {"41", NULL, "it's \"quoted\""};
    ck_assert_int_eq(fcr_pg_query(p, "SELECT $1::int + 1, $2::text IS NULL, $2::text, $3::text", 3,
                                  params, got_cb, &g),
                     0);
    wait_got(&g, 10);
    ck_assert_int_eq(g.err, 0);
    ck_assert_int_eq(g.cols, 4);
    ck_assert_str_eq(g.v[0], "42");
    ck_assert_str_eq(g.v[1], "t");
    ck_assert(g.null[2]);
    ck_assert_str_eq(g.v[2], "");
    ck_assert(!g.null[3]);
    ck_assert_str_eq(g.v[3], "it's \"quoted\"");
    sql_ok(p, "CREATE TEMP TABLE t (id int, s text)", &g);
    ck_assert_int_eq(g.affected, -1);
    sql_ok(p, "INSERT INTO t VALUES (1, 'a'), (2, NULL), (3, 'c')", &g);
    ck_assert_int_eq(g.affected, 3);
    sql_ok(p, "SELECT id, s FROM t ORDER BY id", &g);
    ck_assert_int_eq(g.rows, 3);
    ck_assert_int_eq(g.affected, 3);
    fcr_pg_pool_free(p);
}
END_TEST

/* A second pool whose connections are told apart by application_name. */
static fcr_pg_pool *observer(void)
{
    static char ci[200];
    snprintf(ci, sizeof ci, "host=%s dbname=postgres user=postgres application_name=observer", dir);
    fcr_pg_config cfg = config(1);
    cfg.conninfo = ci;
    return pool_new(&cfg);
}

START_TEST(prepared_and_reprepared_after_reconnect)
{
    fcr_pg_config cfg = config(1);
    fcr_pg_pool *p = pool_new(&cfg);
    ck_assert_int_eq(fcr_pg_prepare(p, "add", "SELECT $1::int + $2::int", 2), 0);
    ck_assert_int_eq(fcr_pg_prepare(p, "add", "SELECT 1", 0), FCR_EEXIST);
    ck_assert_int_eq(fcr_pg_prepare(p, "bad name", "SELECT 1", 0), FCR_EINVAL);
    ck_assert_int_eq(fcr_pg_prepare(p, "broken", "SELEC oops", 0), 0);
    got g = {0};
    ck_assert_int_eq(fcr_pg_execute(p, "nope", 0, NULL, got_cb, &g), FCR_ENOTFOUND);
    for (int i = 0; i < 3; i++) {
        memset(&g, 0, sizeof g);
        char a[16];
        snprintf(a, sizeof a, "%d", i);
        const char *params[] = {a, "40"};
        ck_assert_int_eq(fcr_pg_execute(p, "add", 2, params, got_cb, &g), 0);
        wait_got(&g, 10);
        ck_assert_int_eq(g.err, 0);
        ck_assert_int_eq(atoi(g.v[0]), 40 + i);
    }
    /* Prepared once on the connection. */
    sql_ok(p, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'add'", &g);
    ck_assert_str_eq(g.v[0], "1");
    sql_ok(p, "SELECT pg_backend_pid()", &g);
    char pid[64];
    snprintf(pid, sizeof pid, "%s", g.v[0]);
    /* A statement that does not prepare: its error is the query's. */
    memset(&g, 0, sizeof g);
    ck_assert_int_eq(fcr_pg_execute(p, "broken", 0, NULL, got_cb, &g), 0);
    wait_got(&g, 10);
    ck_assert_int_eq(g.err, FCR_EIO);
    ck_assert_str_eq(g.sqlstate, "42601");

    /* The server ends the connection: the pool reconnects and prepares again. */
    fcr_pg_pool *o = observer();
    const char *kp[] = {pid};
    memset(&g, 0, sizeof g);
    ck_assert_int_eq(fcr_pg_query(o, "SELECT pg_terminate_backend($1::int)", 1, kp, got_cb, &g), 0);
    wait_got(&g, 10);
    ck_assert_str_eq(g.v[0], "t");
    /* A query sent before the pool saw the end fails with FCR_ECLOSED, as one in flight on a
     * broken connection does; the next ones run on the new connection. */
    double end = now() + 5;
    for (;;) {
        memset(&g, 0, sizeof g);
        ck_assert_int_eq(fcr_pg_query(p, "SELECT pg_backend_pid()", 0, NULL, got_cb, &g), 0);
        wait_got(&g, 5);
        ck_assert_msg(g.err == 0 || g.err == FCR_ECLOSED, "%s", g.msg);
        if (g.err == 0 && strcmp(g.v[0], pid) != 0)
            break;
        ck_assert_msg(now() < end, "no new connection");
    }
    memset(&g, 0, sizeof g);
    const char *params[] = {"1", "2"};
    ck_assert_int_eq(fcr_pg_execute(p, "add", 2, params, got_cb, &g), 0);
    wait_got(&g, 10);
    ck_assert_msg(g.err == 0, "after reconnect: %s %s", g.sqlstate, g.msg);
    ck_assert_str_eq(g.v[0], "3");
    fcr_pg_pool_free(o);
    fcr_pg_pool_free(p);
}
END_TEST

/* ---- Transactions ---------------------------------------------------------------------- */

static int count_rows(fcr_pg_pool *p, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    got g;
    sql_ok(p, sql, &g);
    return atoi(g.v[0]);
}

START_TEST(transactions)
{
    fcr_pg_config cfg = config(2);
    cfg.tx_idle_timeout = 0.3;
    fcr_pg_pool *p = pool_new(&cfg);
    got g;
    sql_ok(p, "CREATE TABLE IF NOT EXISTS tx_t (v int)", &g);
    sql_ok(p, "TRUNCATE tx_t", &g);

    /* Commit: queries added before BEGIN is answered run after it, on its connection. */
    fcr_pg_tx *tx = NULL;
    got b = {0}, q1 = {0}, q2 = {0}, c = {0};
    ck_assert_int_eq(fcr_pg_begin(p, &tx, got_cb, &b), 0);
    ck_assert_ptr_nonnull(tx);
    ck_assert_int_eq(fcr_pg_tx_query(tx, "INSERT INTO tx_t VALUES (1)", 0, NULL, got_cb, &q1), 0);
    ck_assert_int_eq(
        fcr_pg_tx_query(tx, "SELECT txid_current_if_assigned() IS NOT NULL", 0, NULL, got_cb, &q2),
        0);
    wait_got(&q2, 10);
    ck_assert(b.done && b.err == 0 && q1.done && q1.err == 0);
    ck_assert_str_eq(q2.v[0], "t"); /* same transaction: the INSERT gave it an id */
    /* Not visible outside before COMMIT. */
    ck_assert_int_eq(count_rows(p, "tx_t"), 0);
    ck_assert_int_eq(fcr_pg_commit(tx, got_cb, &c), 0);
    wait_got(&c, 10);
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_eq(count_rows(p, "tx_t"), 1);

    /* Rollback. */
    memset(&b, 0, sizeof b), memset(&q1, 0, sizeof q1), memset(&c, 0, sizeof c);
    ck_assert_int_eq(fcr_pg_begin(p, &tx, got_cb, &b), 0);
    ck_assert_int_eq(fcr_pg_tx_query(tx, "INSERT INTO tx_t VALUES (2)", 0, NULL, got_cb, &q1), 0);
    wait_got(&q1, 10);
    ck_assert_int_eq(fcr_pg_rollback(tx, got_cb, &c), 0);
    wait_got(&c, 10);
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_eq(count_rows(p, "tx_t"), 1);

    /* A failed transaction: COMMIT is reported as the rollback it is. */
    memset(&b, 0, sizeof b), memset(&q1, 0, sizeof q1), memset(&q2, 0, sizeof q2);
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(fcr_pg_begin(p, &tx, got_cb, &b), 0);
    ck_assert_int_eq(fcr_pg_tx_query(tx, "INSERT INTO tx_t VALUES (3)", 0, NULL, got_cb, &q1), 0);
    ck_assert_int_eq(fcr_pg_tx_query(tx, "SELECT 1/0", 0, NULL, got_cb, &q2), 0);
    ck_assert_int_eq(fcr_pg_commit(tx, got_cb, &c), 0);
    wait_got(&c, 10);
    ck_assert_int_eq(q2.err, FCR_EIO);
    ck_assert_str_eq(q2.sqlstate, "22012");
    ck_assert_int_eq(c.err, FCR_EIO);
    ck_assert_str_eq(c.sqlstate, "40000");
    ck_assert_int_eq(count_rows(p, "tx_t"), 1);

    /* Abandoned: left idle past tx_idle_timeout, it is rolled back and its connection given
     * back; a later COMMIT gets FCR_ECLOSED. */
    memset(&b, 0, sizeof b), memset(&q1, 0, sizeof q1), memset(&c, 0, sizeof c);
    ck_assert_int_eq(fcr_pg_begin(p, &tx, got_cb, &b), 0);
    ck_assert_int_eq(fcr_pg_tx_query(tx, "INSERT INTO tx_t VALUES (4)", 0, NULL, got_cb, &q1), 0);
    wait_got(&q1, 10);
    ck_assert_int_eq(q1.err, 0);
    run_for(0.6);
    /* Both connections serve the pool again: two queries at once. */
    got s1 = {0}, s2 = {0};
    ck_assert_int_eq(fcr_pg_query(p, "SELECT pg_sleep(1)", 0, NULL, got_cb, &s1), 0);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT pg_sleep(1)", 0, NULL, got_cb, &s2), 0);
    double t0 = now();
    wait_got(&s1, 10);
    wait_got(&s2, 10);
    /* One after the other they would take 2 s at least. */
    if (slack() == 1)
        ck_assert_msg(now() - t0 < 1.8, "the two queries ran one after the other");
    ck_assert_int_eq(count_rows(p, "tx_t"), 1);
    got late = {0};
    ck_assert_int_eq(fcr_pg_tx_query(tx, "SELECT 1", 0, NULL, got_cb, &late), 0);
    ck_assert_int_eq(fcr_pg_commit(tx, got_cb, &c), 0);
    wait_got(&c, 5);
    ck_assert_int_eq(late.err, FCR_ECLOSED);
    ck_assert_int_eq(c.err, FCR_ECLOSED);
    sql_ok(p, "DROP TABLE tx_t", &g);
    fcr_pg_pool_free(p);
}
END_TEST

/* ---- Timeout ------------------------------------------------------------------------- */

START_TEST(timeout_cancels_on_the_server)
{
    fcr_pg_config cfg = config(1);
    cfg.query_timeout = 0.2;
    fcr_pg_pool *p = pool_new(&cfg);
    got g;
    sql_ok(p, "SELECT 1", &g); /* connected */
    memset(&g, 0, sizeof g);
    double t0 = now();
    ck_assert_int_eq(fcr_pg_query(p, "SELECT pg_sleep(10)", 0, NULL, got_cb, &g), 0);
    wait_got(&g, 5);
    double took = g.at - t0;
    printf("timeout: callback after %.3f s (timeout 0.2 s)\n", took);
    ck_assert_int_eq(g.err, FCR_ETIMEDOUT);
    ck_assert_msg(took >= 0.19 && took < 2.0 * slack(), "callback after %.3f s", took);
    /* The query is gone from the server soon after. */
    fcr_pg_pool *o = observer();
    double end = now() + 3;
    for (;;) {
        sql_ok(o,
               "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' "
               "AND state = 'active'",
               &g);
        if (strcmp(g.v[0], "0") == 0)
            break;
        ck_assert_msg(now() < end, "the query still runs on the server");
        run_for(0.02);
    }
    printf("timeout: query gone from pg_stat_activity %.3f s after submission\n", now() - t0);
    /* And the pool's one connection serves again. */
    sql_ok(p, "SELECT 2", &g);
    ck_assert_str_eq(g.v[0], "2");

    /* In a transaction, a query and the COMMIT queued behind it time out: the transaction is
     * over, rolled back, and its connection serves the pool again. */
    sql_ok(p, "CREATE TABLE IF NOT EXISTS slow_tx (v int)", &g);
    fcr_pg_tx *tx;
    got b = {0}, ins = {0}, slow = {0}, c = {0};
    ck_assert_int_eq(fcr_pg_begin(p, &tx, got_cb, &b), 0);
    ck_assert_int_eq(fcr_pg_tx_query(tx, "INSERT INTO slow_tx VALUES (1)", 0, NULL, got_cb, &ins),
                     0);
    ck_assert_int_eq(fcr_pg_tx_query(tx, "SELECT pg_sleep(5)", 0, NULL, got_cb, &slow), 0);
    ck_assert_int_eq(fcr_pg_commit(tx, got_cb, &c), 0);
    wait_got(&c, 5);
    wait_got(&slow, 5);
    ck_assert_int_eq(ins.err, 0);
    ck_assert_int_eq(slow.err, FCR_ETIMEDOUT);
    ck_assert_msg(c.err == FCR_ETIMEDOUT || c.err == FCR_ECLOSED, "COMMIT: %s", c.msg);
    sql_ok(p, "SELECT count(*) FROM slow_tx", &g);
    ck_assert_str_eq(g.v[0], "0");
    sql_ok(p, "DROP TABLE slow_tx", &g);
    fcr_pg_pool_free(o);
    fcr_pg_pool_free(p);
}
END_TEST

/* A query that ends by itself right when its timeout fires: the cancel request sent for it
 * must not cancel the next query on the same connection. */
typedef struct race {
    fcr_pg_pool *p;
    got first, next;
} race;

static void race_first_cb(const fcr_pg_result *r, void *data)
{
    race *x = data;
    got_cb(r, &x->first);
    ck_assert_int_eq(fcr_pg_query(x->p, "SELECT pg_sleep(0.05), 7", 0, NULL, got_cb, &x->next), 0);
}

START_TEST(cancel_never_hits_the_next_query)
{
    fcr_pg_config cfg = config(1);
    cfg.query_timeout = 0.25;
    fcr_pg_pool *p = pool_new(&cfg);
    got g;
    sql_ok(p, "SELECT 1", &g);
    int timed_out = 0;
    for (int i = 0; i < 12; i++) {
        race x = {.p = p};
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT pg_sleep(%.3f)", 0.22 + 0.005 * i);
        ck_assert_int_eq(fcr_pg_query(p, sql, 0, NULL, race_first_cb, &x), 0);
        wait_got(&x.next, 5);
        ck_assert(x.first.err == 0 || x.first.err == FCR_ETIMEDOUT);
        timed_out += x.first.err == FCR_ETIMEDOUT;
        ck_assert_msg(x.next.err == 0, "round %d: the next query got %s %s %s", i,
                      fcr_err_name(x.next.err), x.next.sqlstate, x.next.msg);
        ck_assert_str_eq(x.next.v[1], "7");
    }
    printf("cancel race: %d of 12 first queries timed out, no next query was cancelled\n",
           timed_out);
    ck_assert_int_gt(timed_out, 0);
    fcr_pg_pool_free(p);
}
END_TEST

/* ---- The queue --------------------------------------------------------------------------- */

START_TEST(queue_full)
{
    fcr_pg_config cfg = config(1);
    cfg.max_queue = 2;
    fcr_pg_pool *p = pool_new(&cfg);
    got g[4];
    memset(g, 0, sizeof g);
    sql_ok(p, "SELECT 1", &g[0]);
    memset(g, 0, sizeof g);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT pg_sleep(0.3)", 0, NULL, got_cb, &g[0]), 0);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT 1", 0, NULL, got_cb, &g[1]), 0);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT 2", 0, NULL, got_cb, &g[2]), 0);
    double t0 = now();
    ck_assert_int_eq(fcr_pg_query(p, "SELECT 3", 0, NULL, got_cb, &g[3]), 0);
    ck_assert(!g[3].done);
    wait_got(&g[3], 5);
    ck_assert_int_eq(g[3].err, FCR_EAGAIN);
    ck_assert_msg(g[3].at - t0 < 1.0 * slack(), "queue full reported after %.3f s", g[3].at - t0);
    ck_assert(!g[0].done);
    wait_got(&g[2], 5);
    ck_assert_int_eq(g[0].err, 0);
    ck_assert_int_eq(g[1].err, 0);
    ck_assert_int_eq(g[2].err, 0);
    ck_assert_str_eq(g[2].v[0], "2");
    fcr_pg_pool_free(p);
}
END_TEST

/* Freeing the pool reports every outstanding query with FCR_ECLOSED, at once. */
START_TEST(free_fails_outstanding)
{
    fcr_pg_config cfg = config(1);
    fcr_pg_pool *p = pool_new(&cfg);
    got g[3];
    memset(g, 0, sizeof g);
    sql_ok(p, "SELECT 1", &g[0]);
    memset(g, 0, sizeof g);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT pg_sleep(5)", 0, NULL, got_cb, &g[0]), 0);
    ck_assert_int_eq(fcr_pg_query(p, "SELECT 1", 0, NULL, got_cb, &g[1]), 0);
    fcr_pg_tx *tx;
    ck_assert_int_eq(fcr_pg_begin(p, &tx, got_cb, &g[2]), 0);
    run_for(0.05);
    fcr_pg_pool_free(p);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(g[i].calls, 1);
        ck_assert_int_eq(g[i].err, FCR_ECLOSED);
    }
}
END_TEST

/* ---- The loop stays free ------------------------------------------------------------- */

typedef struct ticker {
    ev_timer w;
    int ticks;
    double last, max_gap;
} ticker;

static void ticker_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l, (void)revents;
    ticker *t = (ticker *)w;
    double n = now();
    if (t->ticks > 0 && n - t->last > t->max_gap)
        t->max_gap = n - t->last;
    t->last = n;
    t->ticks++;
}

typedef struct release {
    ev_timer w;
    fcr_pg_tx *tx;
    got done;
} release;

static void release_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l, (void)revents;
    release *r = (release *)w;
    ck_assert_int_eq(fcr_pg_commit(r->tx, got_cb, &r->done), 0);
}

START_TEST(loop_free_during_lock_wait)
{
    fcr_pg_config cfg = config(1);
    fcr_pg_pool *p = pool_new(&cfg);
    fcr_pg_pool *o = observer();
    got g;
    sql_ok(p, "CREATE TABLE IF NOT EXISTS locked (v int)", &g);
    /* Another session holds the table. */
    release r = {0};
    got b = {0}, l = {0};
    ck_assert_int_eq(fcr_pg_begin(o, &r.tx, got_cb, &b), 0);
    ck_assert_int_eq(
        fcr_pg_tx_query(r.tx, "LOCK TABLE locked IN ACCESS EXCLUSIVE MODE", 0, NULL, got_cb, &l),
        0);
    wait_got(&l, 10);
    ck_assert_int_eq(l.err, 0);
    ticker t = {0};
    ev_timer_init(&t.w, ticker_cb, 0.005, 0.005);
    ev_timer_start(loop, &t.w);
    ev_timer_init(&r.w, release_cb, 1.5, 0.);
    ev_timer_start(loop, &r.w);
    memset(&g, 0, sizeof g);
    double t0 = now();
    ck_assert_int_eq(fcr_pg_query(p, "SELECT count(*) FROM locked", 0, NULL, got_cb, &g), 0);
    wait_got(&g, 10);
    double waited = g.at - t0;
    ev_timer_stop(loop, &t.w);
    printf("lock wait: query answered after %.3f s; %d ticks of 5 ms, longest gap %.1f ms\n",
           waited, t.ticks, t.max_gap * 1000);
    ck_assert_int_eq(g.err, 0);
    ck_assert_msg(waited >= 1.4, "the query did not wait for the lock (%.3f s)", waited);
    /* A loop blocked by the query would not tick for the whole 1.5 s of the lock; a loop that
     * is free ticks all along, with gaps only as long as the (shared, noisy) machine makes
     * them. The bounds tell the two apart without timing the machine. */
    ck_assert_msg(t.ticks >= 20, "only %d ticks in %.3f s", t.ticks, waited);
    ck_assert_msg(t.max_gap < 1.0, "the loop stalled for %.1f ms", t.max_gap * 1000);
    wait_got(&r.done, 5);
    ck_assert_int_eq(r.done.err, 0);
    sql_ok(p, "DROP TABLE locked", &g);
    fcr_pg_pool_free(o);
    fcr_pg_pool_free(p);
}
END_TEST

/* ---- The server goes away and comes back ---------------------------------------------- */

START_TEST(server_down_and_back)
{
    fcr_pg_config cfg = config(2);
    cfg.connect_timeout = 1;
    fcr_pg_pool *p = pool_new(&cfg);
    got g;
    sql_ok(p, "SELECT 1", &g);
    double end = now() + 5;
    while (fcr_pg_pool_connected(p) < 2 && now() < end)
        run_for(0.01);
    got inflight[2];
    memset(inflight, 0, sizeof inflight);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(fcr_pg_query(p, "SELECT pg_sleep(5)", 0, NULL, got_cb, &inflight[i]), 0);
    run_for(0.1); /* both running */
    server("kill");
    double t0 = now();
    for (int i = 0; i < 2; i++) {
        wait_got(&inflight[i], 3);
        ck_assert_int_eq(inflight[i].err, FCR_ECLOSED);
    }
    double lost = now() - t0;
    printf("server killed: queries in flight failed after %.3f s\n", lost);
    ck_assert_msg(lost < 3.0 * slack(), "in-flight queries failed after %.3f s", lost);
    /* New queries fail within the connect timeout, and then at once. */
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        memset(&g, 0, sizeof g);
        double s = now();
        ck_assert_int_eq(fcr_pg_query(p, "SELECT 1", 0, NULL, got_cb, &g), 0);
        wait_got(&g, 3);
        ck_assert_int_eq(g.err, FCR_ECLOSED);
        if (g.at - s > worst)
            worst = g.at - s;
        run_for(0.05);
    }
    printf("server down: new queries failed within %.3f s\n", worst);
    ck_assert_msg(worst <= cfg.connect_timeout + 1.5 * slack(), "a query failed after %.3f s",
                  worst);
    ck_assert(fcr_pg_pool_unavailable(p));
    ck_assert_uint_eq(fcr_pg_pool_connected(p), 0);
    /* The server comes back: the same pool serves again. */
    server("start");
    t0 = now();
    end = t0 + 10;
    for (;;) {
        memset(&g, 0, sizeof g);
        ck_assert_int_eq(fcr_pg_query(p, "SELECT 42", 0, NULL, got_cb, &g), 0);
        wait_got(&g, 5);
        if (g.err == 0)
            break;
        ck_assert_msg(now() < end, "no recovery: %s", g.msg);
        run_for(0.02);
    }
    printf("server back: first query answered %.3f s after the start\n", now() - t0);
    ck_assert_str_eq(g.v[0], "42");
    ck_assert(!fcr_pg_pool_unavailable(p));
    fcr_pg_pool_free(p);
}
END_TEST

/* A "server" that takes connections (its listen backlog does) and never answers the startup
 * packet: connecting waits on the loop, which keeps ticking, until connect_timeout; then the
 * queued query fails with FCR_ECLOSED and the pool is unavailable. */
START_TEST(connect_never_blocks_the_loop)
{
    char sdir[48], path[96], ci[160];
    snprintf(sdir, sizeof sdir, "/tmp/fcr-pg-mute-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(sdir));
    snprintf(path, sizeof path, "%s/.s.PGSQL.5432", sdir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    snprintf(ci, sizeof ci, "host=%s dbname=postgres user=postgres", sdir);
    fcr_pg_config cfg = config(2);
    cfg.conninfo = ci;
    cfg.connect_timeout = 0.5;
    double t0 = now();
    fcr_pg_pool *p = pool_new(&cfg);
    ck_assert_msg(now() - t0 < 0.4 * slack(), "fcr_pg_pool_new took %.3f s", now() - t0);
    ticker t = {0};
    ev_timer_init(&t.w, ticker_cb, 0.005, 0.005);
    ev_timer_start(loop, &t.w);
    got g = {0};
    ck_assert_int_eq(fcr_pg_query(p, "SELECT 1", 0, NULL, got_cb, &g), 0);
    wait_got(&g, 5);
    ev_timer_stop(loop, &t.w);
    double took = g.at - t0;
    printf("mute server: query failed after %.3f s (connect timeout 0.5 s); %d ticks, longest "
           "gap %.1f ms\n",
           took, t.ticks, t.max_gap * 1000);
    ck_assert_int_eq(g.err, FCR_ECLOSED);
    ck_assert_msg(strstr(g.msg, "timeout") != NULL, "message: %s", g.msg);
    ck_assert_msg(took >= 0.45 && took < 0.5 + 1.5 * slack(), "failed after %.3f s", took);
    ck_assert_msg(t.ticks >= 10, "only %d ticks", t.ticks);
    ck_assert_msg(t.max_gap < 0.4, "the loop stalled for %.1f ms", t.max_gap * 1000);
    ck_assert(fcr_pg_pool_unavailable(p));
    fcr_pg_pool_free(p);
    close(fd);
    unlink(path);
    rmdir(sdir);
}
END_TEST

/* ---- Requests of the framework ----------------------------------------------------------- */

static fcr_pg_pool *app_pool;
static bool app_free_pool; /* the callback frees the pool (fcr_app_test's loop ends with it) */
static char down_conninfo[200];

typedef struct call {
    fcr_req *req;
    fcr_res *res;
    bool aborted;
    int send_rc;
} call;

static call last_call;
static bool handler_ran, callback_ran;

static void answer_cb(const fcr_pg_result *r, void *data)
{
    call *c = data;
    callback_ran = true;
    c->aborted = fcr_req_aborted(c->req);
    if (!c->aborted) {
        if (fcr_pg_result_error(r))
            fcr_pg_res_set_error(c->res, r);
        else
            fcr_res_set_json_new(c->res, 200,
                                 json_pack("{s:s}", "value", fcr_pg_result_value(r, 0, 0)));
    }
    c->send_rc = fcr_res_send(c->res);
    last_call = *c;
    free(c);
    if (app_free_pool) {
        fcr_pg_pool_free(app_pool); /* from inside its own callback */
        app_pool = NULL;
    }
}

static fcr_handler_result query_handler(fcr_req *req, fcr_res *res, void *data)
{
    const char *sql = data;
    handler_ran = true;
    if (!app_pool) {
        fcr_pg_config cfg = config(1);
        if (strstr(fcr_req_path(req), "/down"))
            cfg.conninfo = down_conninfo;
        cfg.connect_timeout = 1;
        app_pool = fcr_pg_pool_new(fcr_req_loop(req), &cfg, NULL);
        if (!app_pool)
            return FCR_HANDLER_ERROR;
    }
    call *c = calloc(1, sizeof *c);
    if (!c)
        return FCR_HANDLER_ERROR;
    c->req = req;
    c->res = res;
    int rc = fcr_pg_query(app_pool, sql, 0, NULL, answer_cb, c);
    if (rc < 0) {
        free(c);
        return rc;
    }
    return FCR_ASYNC;
}

static fcr_app *query_app(void)
{
    fcr_app *app = fcr_app_new();
    ck_assert_ptr_nonnull(app);
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/answer", query_handler, "SELECT 6 * 7"));
    ck_assert_ptr_nonnull(
        fcr_app_route(app, FCR_GET, "/error", query_handler, "SELECT * FROM no_such_table"));
    ck_assert_ptr_nonnull(fcr_app_route(app, FCR_GET, "/down", query_handler, "SELECT 1"));
    ck_assert_ptr_nonnull(
        fcr_app_route(app, FCR_GET, "/slow", query_handler, "SELECT pg_sleep(0.5), 'late'"));
    return app;
}

START_TEST(app_answers_from_the_callback)
{
    fcr_app *app = query_app();
    snprintf(down_conninfo, sizeof down_conninfo, "host=%s/nothing-here dbname=postgres", dir);
    app_free_pool = true;
    struct {
        const char *path;
        int status;
        const char *body_has;
    } cases[] = {
        {"/answer", 200, "\"value\":\"42\""},
        {"/error", 500, "\"sqlstate\":\"42P01\""},
        {"/down", 503, "database unavailable"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fcr_test_res res = {0};
        double t0 = now();
        ck_assert_int_eq(fcr_app_test(app, &(fcr_test_req){.path = cases[i].path}, &res), 0);
        ck_assert_msg(res.status == cases[i].status, "%s: %d %s", cases[i].path, res.status,
                      res.body);
        ck_assert_msg(strstr(res.body, cases[i].body_has), "%s: %s", cases[i].path, res.body);
        if (cases[i].status >= 500) {
            ck_assert_str_eq(fcr_test_res_header(&res, "Content-Type"), "application/problem+json");
        }
        if (cases[i].status == 503) {
            ck_assert_str_eq(fcr_test_res_header(&res, "Retry-After"), "1");
            printf("database down: 503 after %.3f s\n", now() - t0);
            ck_assert(now() - t0 < 2 * slack());
        }
        ck_assert_int_eq(last_call.send_rc, 0);
        ck_assert_ptr_null(app_pool);
        fcr_test_res_free(&res);
    }
    fcr_app_free(app);
}
END_TEST

static void send_get(fcl_conn *c, uint16_t id, const char *path)
{
    const char *params[] = {"REQUEST_METHOD", "GET", "SCRIPT_NAME", path, NULL};
    fcl_buf b;
    fcl_buf_init(&b);
    fcl_put_request(&b, id, FCR_RESPONDER, 1 /* FCGI_KEEP_CONN */, params, NULL, 0, NULL, 0);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_buf_free(&b);
}

/* The client goes away while its query runs: the callback learns it from fcr_req_aborted(),
 * fcr_res_send() releases the request with FCR_ECLOSED, and the worker serves on. */
START_TEST(client_abort_mid_query)
{
    fcr_app *app = query_app();
    app_free_pool = false;
    handler_ran = callback_ran = false;
    int err = 0;
    fcr_server *srv = fcr_app_server_new(app, loop, NULL, &err);
    ck_assert_ptr_nonnull(srv);
    char addr[128];
    snprintf(addr, sizeof addr, "unix:%s/app.sock", dir);
    ck_assert_int_eq(fcr_server_listen(srv, addr), 0);
    fcl_conn *c = fcl_connect(addr, 0);
    ck_assert_ptr_nonnull(c);
    send_get(c, 1, "/slow");
    ck_assert(run_until(&handler_ran, 5));
    run_for(0.05);
    fcl_close(c);
    ck_assert(run_until(&callback_ran, 5));
    ck_assert(last_call.aborted);
    ck_assert_int_eq(last_call.send_rc, FCR_ECLOSED);
    /* The worker serves the next request, on the same pool. */
    callback_ran = false;
    c = fcl_connect(addr, 0);
    ck_assert_ptr_nonnull(c);
    send_get(c, 1, "/answer");
    ck_assert(run_until(&callback_ran, 5));
    ck_assert(!last_call.aborted);
    ck_assert_int_eq(last_call.send_rc, 0);
    run_for(0.05);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    ck_assert_msg(strstr((const char *)r.out.data, "\"value\":\"42\"") != NULL, "answer: %.*s",
                  (int)r.out.len, (const char *)r.out.data);
    fcl_response_free(&r);
    fcl_close(c);
    fcr_server_stats st;
    run_for(0.05);
    fcr_server_get_stats(srv, &st);
    ck_assert_uint_eq(st.active_reqs, 0);
    fcr_server_free(srv);
    fcr_pg_pool_free(app_pool);
    app_pool = NULL;
    fcr_app_free(app);
}
END_TEST

/* The documented pattern: fcr_app_run() with two workers, each opening its own pool in a start
 * hook (with its loop) and freeing it in a stop hook; the handler answers from the callback.
 * Each worker's answer names its own process and its own database session, and SIGTERM stops
 * both workers cleanly with their pools. */
static fcr_pg_pool *worker_pool;
static char worker_marks[96];

static int worker_open(fcr_app *a, struct ev_loop *l, void *data)
{
    (void)a, (void)data;
    fcr_pg_config cfg = config(1);
    int err = 0;
    worker_pool = fcr_pg_pool_new(l, &cfg, &err);
    return worker_pool ? 0 : err;
}

static void worker_close(fcr_app *a, struct ev_loop *l, void *data)
{
    (void)a, (void)l, (void)data;
    fcr_pg_pool_free(worker_pool);
    worker_pool = NULL;
    char path[160];
    snprintf(path, sizeof path, "%s/stopped-%d", worker_marks, (int)getpid());
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
}

static void whoami_cb(const fcr_pg_result *r, void *data)
{
    call *c = data;
    if (!fcr_req_aborted(c->req)) {
        if (fcr_pg_result_error(r))
            fcr_pg_res_set_error(c->res, r);
        else
            fcr_res_printf(c->res, "%d %s", (int)getpid(), fcr_pg_result_value(r, 0, 0));
    }
    fcr_res_send(c->res);
    free(c);
}

static fcr_handler_result whoami(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    call *c = calloc(1, sizeof *c);
    if (!c)
        return FCR_HANDLER_ERROR;
    c->req = req;
    c->res = res;
    int rc = fcr_pg_query(worker_pool, "SELECT pg_backend_pid()", 0, NULL, whoami_cb, c);
    if (rc < 0) {
        free(c);
        return rc;
    }
    return FCR_ASYNC;
}

START_TEST(workers_open_their_pools_in_start_hooks)
{
    snprintf(worker_marks, sizeof worker_marks, "/tmp/fcr-pg-workers-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(worker_marks));
    char sock[160], addr[180];
    snprintf(sock, sizeof sock, "%s/app.sock", worker_marks);
    snprintf(addr, sizeof addr, "unix:%s", sock);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fcr_app *app = fcr_app_new();
        fcr_app_route(app, FCR_GET, "/whoami", whoami, NULL);
        fcr_app_on_worker_start(app, worker_open, NULL);
        fcr_app_on_worker_stop(app, worker_close, NULL);
        char *argv[] = {"app", "--listen", addr, "--workers", "2", "--log-level", "warn", NULL};
        int rc = fcr_app_run(app, 7, argv);
        fcr_app_free(app);
        _exit(rc == 0 ? 0 : 1);
    }
    double end = now() + 10 * slack();
    while (access(sock, F_OK) != 0) {
        ck_assert_msg(now() < end, "the app does not listen");
        poll(NULL, 0, 10);
    }
    /* Ask until both workers have answered (the kernel spreads connections over them). */
    char seen[2][64] = {"", ""};
    int nseen = 0;
    for (int i = 0; i < 200 && nseen < 2; i++) {
        fcl_conn *c = fcl_connect(addr, 0);
        ck_assert_ptr_nonnull(c);
        send_get(c, 1, "/whoami");
        fcl_response r;
        fcl_response_init(&r, 1);
        ck_assert_int_eq(fcl_await(c, &r, 1), 0);
        fcl_cgi cgi;
        ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
        char body[64];
        snprintf(body, sizeof body, "%.*s", (int)cgi.body_len, (const char *)cgi.body);
        ck_assert_msg(strstr(cgi.head, "Status: 200") != NULL, "%s\n%s", cgi.head, body);
        int wpid = 0, bpid = 0;
        ck_assert_int_eq(sscanf(body, "%d %d", &wpid, &bpid), 2);
        ck_assert_int_ne(wpid, (int)pid); /* a worker answered, not the supervisor */
        if (nseen == 0 || (strcmp(seen[0], body) != 0 && nseen < 2))
            snprintf(seen[nseen++], sizeof seen[0], "%s", body);
        fcl_cgi_free(&cgi);
        fcl_response_free(&r);
        fcl_close(c);
    }
    /* The kernel may hand every connection to the same worker: two answers are compared
     * when two came. */
    ck_assert_int_ge(nseen, 1);
    int w[2] = {0, 0}, b[2] = {0, 0};
    for (int i = 0; i < nseen; i++)
        ck_assert_int_eq(sscanf(seen[i], "%d %d", &w[i], &b[i]), 2);
    if (nseen == 2) {
        ck_assert_int_ne(w[0], w[1]);
        ck_assert_int_ne(b[0], b[1]); /* a session of its own per worker */
    }
    printf("workers: %d of 2 answered\n", nseen);
    kill(pid, SIGTERM);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    /* Both workers ran their stop hooks (after their pools served), those that answered too. */
    for (int i = 0; i < nseen; i++) {
        char mark[160];
        snprintf(mark, sizeof mark, "%s/stopped-%d", worker_marks, w[i]);
        ck_assert_msg(access(mark, F_OK) == 0, "worker %d did not run its stop hook", w[i]);
    }
    DIR *d = opendir(worker_marks);
    ck_assert_ptr_nonnull(d);
    int stopped = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "stopped-", 8) == 0) {
            stopped++;
            char mark[400];
            snprintf(mark, sizeof mark, "%s/%s", worker_marks, e->d_name);
            unlink(mark);
        }
    }
    closedir(d);
    ck_assert_int_eq(stopped, 2);
    unlink(sock);
    rmdir(worker_marks);
}
END_TEST

static Suite *pg_suite(void)
{
    Suite *s = suite_create("pg");
    TCase *tc = tcase_create("pg");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, connect_and_query);
    tcase_add_test(tc, parameters_and_nulls);
    tcase_add_test(tc, prepared_and_reprepared_after_reconnect);
    tcase_add_test(tc, transactions);
    tcase_add_test(tc, timeout_cancels_on_the_server);
    tcase_add_test(tc, cancel_never_hits_the_next_query);
    tcase_add_test(tc, queue_full);
    tcase_add_test(tc, free_fails_outstanding);
    tcase_add_test(tc, loop_free_during_lock_wait);
    tcase_add_test(tc, connect_never_blocks_the_loop);
    tcase_add_test(tc, app_answers_from_the_callback);
    tcase_add_test(tc, client_abort_mid_query);
    tcase_add_test(tc, workers_open_their_pools_in_start_hooks);
    tcase_add_test(tc, server_down_and_back);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pg_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
