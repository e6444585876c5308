/* notes_sqlite.c: the SQLite backend of the notes store (see notes_store.h).
 *
 * Every SQLite call of a request runs on a thread of the worker's pool through fcr_defer(),
 * never on the loop. Each pool thread has a connection of its own, opened the first time the
 * thread works for the store and closed when the thread ends (a pthread key with a destructor).
 * The file is in WAL mode, so that readers and the one writer of the moment do not wait for
 * each other, and every worker process of the machine uses the same file. A connection waits
 * for a lock at most the store's timeout (SQLite's busy timeout, NOTES_STORE_TIMEOUT seconds
 * unless --db-timeout says otherwise); past it the operation ends NOTES_STORE_BUSY. */
#include "notes_store.h"

#include <sqlite3.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ST_LIST, ST_GET, ST_CREATE, ST_UPDATE, ST_DELETE, ST_VERSION, ST_COUNT };

static const char *const statements[ST_COUNT] = {
    [ST_LIST] = "SELECT id, title, body, author, version FROM notes ORDER BY id LIMIT ?1 OFFSET ?2",
    [ST_GET] = "SELECT id, title, body, author, version FROM notes WHERE id = ?1",
    [ST_CREATE] = "INSERT INTO notes (title, body, author) VALUES (?1, ?2, ?3)",
    /* The version compared and raised in the statement that writes: no second writer can slip
     * in between, whichever process or thread it runs on. */
    [ST_UPDATE] = "UPDATE notes SET title = ?1, body = ?2, author = ?3, version = version + 1"
                  " WHERE id = ?4 AND (?5 = 0 OR version = ?5) RETURNING version",
    [ST_DELETE] = "DELETE FROM notes WHERE id = ?1 AND (?2 = 0 OR version = ?2)",
    [ST_VERSION] = "SELECT version FROM notes WHERE id = ?1",
};

typedef struct sqlite_store sqlite_store;

/* A pool thread's connection. */
typedef struct conn {
    struct conn *prev, *next; /* in the store's list, under its lock */
    sqlite_store *store;
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT]; /* prepared on first use */
} conn;

struct sqlite_store {
    notes_store base;
    char *path;
    pthread_key_t key; /* the calling thread's conn */
    pthread_mutex_t mu;
    conn *conns; /* every open connection, under mu */
};

/* One operation: made on the loop, worked on a pool thread, answered on the loop. */
typedef struct op {
    sqlite_store *store;
    notes_store_query q;
    char *title, *body, *author; /* copies of the query's */
    notes_store_cb cb;
    void *data;
    /* the result, filled by the work */
    notes_store_status status;
    notes_note *notes;
    size_t count;
    long long version; /* CONFLICT: the note's current version */
    char error[256];
} op;

/* ---- Connections ---------------------------------------------------------------------- */

static void conn_close(conn *c)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->db);
    free(c);
}

/* The key's destructor: the thread ends. */
static void conn_release(void *p)
{
    conn *c = p;
    sqlite_store *s = c->store;
    pthread_mutex_lock(&s->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&s->mu);
    conn_close(c);
}

/* Opens a connection with the store's busy timeout. Returns NULL with the reason in `err`. */
static sqlite3 *open_db(const sqlite_store *s, int flags, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(s->path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, (int)(s->base.timeout * 1000.0));
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the SQLite file %s: %s", s->path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* The calling pool thread's connection, opened on its first use. NULL with `o->error`. */
static conn *thread_conn(op *o)
{
    sqlite_store *s = o->store;
    conn *c = pthread_getspecific(s->key);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(o->error, sizeof o->error, "out of memory");
        return NULL;
    }
    /* No SQLITE_OPEN_CREATE: the file and its schema were made at start. */
    c->db = open_db(s, SQLITE_OPEN_READWRITE, o->error, sizeof o->error);
    if (!c->db) {
        free(c);
        return NULL;
    }
    c->store = s;
    if (pthread_setspecific(s->key, c) != 0) {
        snprintf(o->error, sizeof o->error, "cannot keep the thread's connection");
        conn_close(c);
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* ---- Work, on a pool thread ----------------------------------------------------------- */

/* Records a failure of SQLite result `rc` on `db`. */
static void fail(op *o, sqlite3 *db, int rc)
{
    int primary = rc & 0xff;
    o->status =
        primary == SQLITE_BUSY || primary == SQLITE_LOCKED ? NOTES_STORE_BUSY : NOTES_STORE_FAILED;
    snprintf(o->error, sizeof o->error, "SQLite: %s", sqlite3_errmsg(db));
}

static char *dup_column(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

/* Reads the rows of `st` into o->notes. Returns SQLITE_DONE or an error code. */
static int read_rows(op *o, sqlite3_stmt *st)
{
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (o->count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            notes_note *n = realloc(o->notes, ncap * sizeof *n);
            if (!n)
                return SQLITE_NOMEM;
            o->notes = n;
            cap = ncap;
        }
        notes_note *n = &o->notes[o->count];
        n->id = sqlite3_column_int64(st, 0);
        n->title = dup_column(st, 1);
        n->body = dup_column(st, 2);
        n->author = dup_column(st, 3);
        n->version = sqlite3_column_int64(st, 4);
        o->count++;
        if (!n->title || !n->body || (!n->author && sqlite3_column_type(st, 3) != SQLITE_NULL))
            return SQLITE_NOMEM;
    }
    return rc;
}

/* The note the query wrote, as the answer of CREATE and UPDATE. */
static int written_note(op *o, long long id, long long version)
{
    o->notes = calloc(1, sizeof *o->notes);
    if (!o->notes)
        return SQLITE_NOMEM;
    o->notes[0] = (notes_note){.id = id,
                               .version = version,
                               .title = strdup(o->title),
                               .body = strdup(o->body),
                               .author = o->author ? strdup(o->author) : NULL};
    o->count = 1;
    if (!o->notes[0].title || !o->notes[0].body || (o->author && !o->notes[0].author))
        return SQLITE_NOMEM;
    return SQLITE_OK;
}

/* An update or delete that wrote nothing: NOT_FOUND when there is no such note, CONFLICT (and
 * its version) when it is at another version than expected. Returns an SQLite code. */
static int missed(op *o, conn *c, notes_store_status *status)
{
    *status = NOTES_STORE_NOT_FOUND;
    if (o->q.expect == 0)
        return SQLITE_OK;
    int rc = SQLITE_OK;
    if (!c->st[ST_VERSION])
        rc = sqlite3_prepare_v3(c->db, statements[ST_VERSION], -1, SQLITE_PREPARE_PERSISTENT,
                                &c->st[ST_VERSION], NULL);
    sqlite3_stmt *st = c->st[ST_VERSION];
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 1, o->q.id);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *status = NOTES_STORE_CONFLICT;
        o->version = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    return rc;
}

static sqlite3_int64 clamp64(size_t v)
{
    return v > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)v;
}

static void work(void *data)
{
    op *o = data;
    conn *c = thread_conn(o);
    if (!c) {
        o->status = NOTES_STORE_FAILED;
        return;
    }
    int which = o->q.kind == NOTES_OP_LIST     ? ST_LIST
                : o->q.kind == NOTES_OP_GET    ? ST_GET
                : o->q.kind == NOTES_OP_CREATE ? ST_CREATE
                : o->q.kind == NOTES_OP_UPDATE ? ST_UPDATE
                                               : ST_DELETE;
    int rc = SQLITE_OK;
    if (!c->st[which])
        rc = sqlite3_prepare_v3(c->db, statements[which], -1, SQLITE_PREPARE_PERSISTENT,
                                &c->st[which], NULL);
    if (rc != SQLITE_OK) {
        fail(o, c->db, rc);
        return;
    }
    sqlite3_stmt *st = c->st[which];
    switch (o->q.kind) {
    case NOTES_OP_LIST:
        rc = sqlite3_bind_int64(st, 1, clamp64(o->q.limit));
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 2, clamp64(o->q.offset));
        break;
    case NOTES_OP_GET:
        rc = sqlite3_bind_int64(st, 1, o->q.id);
        break;
    case NOTES_OP_DELETE:
        rc = sqlite3_bind_int64(st, 1, o->q.id);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 2, o->q.expect);
        break;
    case NOTES_OP_UPDATE:
        rc = sqlite3_bind_int64(st, 4, o->q.id);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 5, o->q.expect);
        /* fall through */
    case NOTES_OP_CREATE:
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 1, o->title, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 2, o->body, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = o->author ? sqlite3_bind_text(st, 3, o->author, -1, SQLITE_STATIC)
                           : sqlite3_bind_null(st, 3);
        break;
    }
    if (rc == SQLITE_OK) {
        if (o->q.kind == NOTES_OP_LIST || o->q.kind == NOTES_OP_GET) {
            rc = read_rows(o, st);
        } else {
            rc = sqlite3_step(st);
        }
    }
    long long version = 0;
    bool wrote = true;
    if (o->q.kind == NOTES_OP_UPDATE) {
        /* RETURNING: a row when the note was written; then the statement runs to its end. */
        wrote = rc == SQLITE_ROW;
        if (wrote) {
            version = sqlite3_column_int64(st, 0);
            rc = sqlite3_step(st);
        }
    } else if (o->q.kind == NOTES_OP_DELETE && rc == SQLITE_DONE) {
        wrote = sqlite3_changes(c->db) > 0;
    }
    if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
        o->status = NOTES_STORE_OK;
        if (o->q.kind == NOTES_OP_GET && o->count == 0)
            o->status = NOTES_STORE_NOT_FOUND;
        if (!wrote)
            rc = missed(o, c, &o->status);
        if (o->q.kind == NOTES_OP_CREATE)
            rc = written_note(o, sqlite3_last_insert_rowid(c->db), 1);
        else if (o->q.kind == NOTES_OP_UPDATE && o->status == NOTES_STORE_OK)
            rc = written_note(o, o->q.id, version);
    }
    if (rc != SQLITE_OK)
        fail(o, c->db, rc == SQLITE_ROW ? SQLITE_ERROR : rc);
    if (rc == SQLITE_NOMEM)
        snprintf(o->error, sizeof o->error, "out of memory");
    /* Reset at once: a statement left active would hold its read snapshot of the file. */
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* ---- On the loop ---------------------------------------------------------------------- */

static void op_free(op *o)
{
    for (size_t i = 0; i < o->count; i++) {
        free((char *)o->notes[i].title);
        free((char *)o->notes[i].body);
        free((char *)o->notes[i].author);
    }
    free(o->notes);
    free(o->title);
    free(o->body);
    free(o->author);
    free(o);
}

static int done(fcr_req *req, fcr_res *res, void *data)
{
    op *o = data;
    notes_store_result r = {.status = o->status};
    if (o->status == NOTES_STORE_OK) {
        r.notes = o->notes;
        r.count = o->count;
    } else if (o->status == NOTES_STORE_CONFLICT) {
        r.version = o->version;
    } else if (o->status != NOTES_STORE_NOT_FOUND) {
        r.error = o->error;
    }
    int verdict = o->cb(req, res, &r, o->data);
    op_free(o);
    return verdict;
}

static int sq_run(notes_store *base, fcr_req *req, fcr_res *res, const notes_store_query *q,
                  notes_store_cb cb, void *data)
{
    op *o = calloc(1, sizeof *o);
    if (!o)
        return FCR_ENOMEM;
    o->store = (sqlite_store *)base;
    o->q = *q;
    o->cb = cb;
    o->data = data;
    o->status = NOTES_STORE_FAILED;
    if ((q->title && !(o->title = strdup(q->title))) || (q->body && !(o->body = strdup(q->body))) ||
        (q->author && !(o->author = strdup(q->author)))) {
        op_free(o);
        return FCR_ENOMEM;
    }
    o->q.title = o->q.body = o->q.author = NULL; /* the copies are used */
    int rc = fcr_defer(req, res, work, done, o);
    if (rc < 0) {
        op_free(o);
        /* A full pool left 503 problem+json with Retry-After in `res`. */
        return rc == FCR_EAGAIN ? FCR_DONE : rc;
    }
    return FCR_ASYNC;
}

/* ---- Start: the file, WAL and the schema ---------------------------------------------- */

/* Runs `sql` on `db`; on failure writes the reason to `err`. */
static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        snprintf(err, errlen, "SQLite: %s: %s", sql, sqlite3_errmsg(db));
    return rc;
}

/* The first column of the one row of `sql` as text into `out`. */
static int query_text(sqlite3 *db, const char *sql, char *out, size_t outlen, char *err,
                      size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "");
        rc = SQLITE_OK;
    } else {
        snprintf(err, errlen, "SQLite: %s: %s", sql, sqlite3_errmsg(db));
        rc = rc == SQLITE_OK || rc == SQLITE_DONE ? SQLITE_ERROR : rc;
    }
    sqlite3_finalize(st);
    return rc;
}

/* One attempt at the start's work on `db`: WAL mode, then the schema in a write transaction.
 * Returns an SQLite result code, with the reason in `err` (SQLITE_BUSY: try again), or -1 for
 * a schema version this program does not know. */
static int prepare_file(sqlite_store *s, sqlite3 *db, char *err, size_t errlen)
{
    char mode[16], version[32];
    int rc = query_text(db, "PRAGMA journal_mode = WAL", mode, sizeof mode, err, errlen);
    if (rc != SQLITE_OK)
        return rc;
    if (strcmp(mode, "wal") != 0) {
        snprintf(err, errlen, "%s: cannot use WAL mode (journal mode %s)", s->path, mode);
        return SQLITE_ERROR;
    }
    /* One worker creates the schema; the others wait for its transaction, then find it. */
    rc = exec(db, "BEGIN IMMEDIATE", err, errlen);
    if (rc != SQLITE_OK)
        return rc;
    rc = query_text(db, "PRAGMA user_version", version, sizeof version, err, errlen);
    long v = rc == SQLITE_OK ? strtol(version, NULL, 10) : 0;
    if (rc == SQLITE_OK && v == 0) {
        rc = exec(db,
                  "CREATE TABLE IF NOT EXISTS notes ("
                  " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                  " title TEXT NOT NULL,"
                  " body TEXT NOT NULL,"
                  " author TEXT,"
                  " version INTEGER NOT NULL DEFAULT 1)",
                  err, errlen);
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", NOTES_SCHEMA_VERSION);
        if (rc == SQLITE_OK)
            rc = exec(db, sql, err, errlen);
    } else if (rc == SQLITE_OK && v == 1) {
        /* Version 1 had no versions: every note starts at 1. */
        rc = exec(db, "ALTER TABLE notes ADD COLUMN version INTEGER NOT NULL DEFAULT 1", err,
                  errlen);
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", NOTES_SCHEMA_VERSION);
        if (rc == SQLITE_OK)
            rc = exec(db, sql, err, errlen);
    } else if (rc == SQLITE_OK && v != NOTES_SCHEMA_VERSION) {
        snprintf(err, errlen, "%s: schema version %ld, this program knows version %d", s->path, v,
                 NOTES_SCHEMA_VERSION);
        rc = -1;
    }
    if (rc == SQLITE_OK)
        rc = exec(db, "COMMIT", err, errlen);
    if (rc != SQLITE_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* In the worker start hook, on the loop's thread before the worker accepts: the only SQLite
 * calls made outside the pool, while nothing is being served. */
static int sq_start(notes_store *base, struct ev_loop *loop, char *err, size_t errlen)
{
    (void)loop;
    sqlite_store *s = (sqlite_store *)base;
    sqlite3 *db = open_db(s, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, err, errlen);
    if (!db)
        return FCR_EIO;
    /* Workers starting together on a new file may find each other's locks at a moment the
     * busy timeout does not cover (two connections both switching the file to WAL): they try
     * again until the timeout has passed. */
    double deadline = monotonic() + s->base.timeout;
    int rc;
    while ((rc = prepare_file(s, db, err, errlen)) != SQLITE_OK &&
           ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) && monotonic() < deadline)
        sqlite3_sleep(20);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : rc == -1 ? FCR_EPROTO : FCR_EIO;
}

static void sq_free(notes_store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    pthread_key_delete(s->key);
    /* Connections of threads that are still there (none once the pool has ended). */
    while (s->conns) {
        conn *c = s->conns;
        s->conns = c->next;
        conn_close(c);
    }
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

static const notes_store_backend sqlite_backend = {
    .name = "sqlite",
    .start = sq_start,
    .stop = NULL, /* the connections are the pool threads': they close when the threads end */
    .free = sq_free,
    .run = sq_run,
};

int notes_sqlite_new(const char *path, double timeout, notes_store **out, char *err, size_t errlen)
{
    sqlite_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return FCR_ENOMEM;
    }
    if (pthread_key_create(&s->key, conn_release) != 0) {
        free(s->path);
        free(s);
        snprintf(err, errlen, "cannot make a thread key");
        return FCR_ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->base.backend = &sqlite_backend;
    s->base.timeout = timeout;
    *out = &s->base;
    return 0;
}
