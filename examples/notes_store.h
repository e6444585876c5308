/* notes_store.h: where the notes example keeps its notes, behind one small interface with a
 * backend per kind of database.
 *
 * A store is named by a URL: `sqlite:PATH` (a file shared by every worker of the machine; the
 * backend in notes_sqlite.c runs every SQLite call on the worker's pool through fcr_defer()),
 * or a libpq URI `postgresql://...` / `postgres://...` (the backend in notes_pg.c talks to the
 * server on the worker's loop with <fcrest/pg.h>; built when libpq is, NOTES_HAVE_PG). A
 * scheme without a backend in this program is refused by notes_store_new().
 *
 * Life of a store, per process:
 *   notes_store_new()    parses the URL; no I/O (may run before the workers are forked)
 *   notes_store_start()  in each worker's start hook, before it accepts: opens or reaches the
 *                        database, creates the schema when absent, checks its version
 *   notes_store_list() / _get() / _create() / _update() / _delete()
 *                        from a handler, on the loop; each completes through a callback on
 *                        the loop, never inside the call
 *   notes_store_stop()   in the worker's stop hook, after its last request
 *   notes_store_free()   after fcr_app_free() (which has ended the pool's threads)
 *
 * The schema: one table `notes` (id INTEGER PRIMARY KEY AUTOINCREMENT, or a sequence: ids
 * start at 1 in a fresh store, increase, and are never reused after a delete), and a schema
 * version (NOTES_SCHEMA_VERSION) for later migrations. */
#ifndef NOTES_STORE_H
#define NOTES_STORE_H

#include <fcrest.h>

#include <stddef.h>

/* The store used when neither --db nor NOTES_DB names one. */
#define NOTES_STORE_DEFAULT "sqlite:notes.db"
/* The version of the schema this program creates and understands. */
#define NOTES_SCHEMA_VERSION 2
/* Seconds an operation waits for a lock (SQLite: the busy timeout) when none is given. */
#define NOTES_STORE_TIMEOUT 5.0

typedef struct notes_store notes_store;

/* One note as a store gives it: the strings are the store's, valid during the callback. */
typedef struct notes_note {
    long long id;
    long long version; /* 1 when created, one more at each update: the note's ETag */
    const char *title;
    const char *body;
    const char *author; /* NULL: none */
} notes_note;

/* How an operation ended. */
typedef enum notes_store_status {
    NOTES_STORE_OK = 0,
    NOTES_STORE_NOT_FOUND = 1, /* get, update, delete: there is no note with this id */
    NOTES_STORE_BUSY = 2,      /* locked or overloaded past the timeout: try again (503) */
    NOTES_STORE_FAILED = 3,    /* anything else (500) */
    NOTES_STORE_CONFLICT = 4,  /* update, delete: the note is at another version than expected
                                  (412); the result's `version` says which */
} notes_store_status;

/* What a callback receives. Owned by the store, valid during the callback only. */
typedef struct notes_store_result {
    notes_store_status status;
    /* OK: list: the page in increasing id order; get, create, update: the note (count 1);
     * delete: none (count 0). */
    const notes_note *notes;
    size_t count;
    const char *error; /* BUSY and FAILED: what went wrong, for the log; else NULL */
    long long version; /* CONFLICT: the note's current version */
} notes_store_result;

/*
 * The completion of an operation: runs once on the request's loop with the request, its
 * response, the result and the `data` given to the operation. It fills `res` and returns the
 * handler's verdict (FCR_DONE; a negative fcr_err code answers 500), as a handler does. It
 * also runs when the client went away meanwhile: fcr_req_aborted(req) is then true, nothing is
 * sent whatever it returns, and it only has to release `data`.
 */
typedef int (*notes_store_cb)(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data);

/*
 * Makes a store for `url` (NULL or "": NOTES_STORE_DEFAULT) whose operations wait at most
 * `timeout` seconds for a lock (<= 0: NOTES_STORE_TIMEOUT). Does no I/O. Returns 0 and the
 * store in `*out`, or FCR_EINVAL (a URL of no known form, an empty path, a scheme whose backend
 * this program does not have) or FCR_ENOMEM, with a message for the operator in `err` (which
 * never repeats a password of the URL).
 */
int notes_store_new(const char *url, double timeout, notes_store **out, char *err, size_t errlen);

/*
 * Prepares the store for the worker running `loop`: opens or reaches the database, creates the
 * schema when absent and checks that its version is one this program knows. Call it from the
 * worker start hook (fcr_app_on_worker_start()), before the worker accepts: it may wait for
 * the database (at most the store's timeout), as nothing is being served yet, and a worker
 * whose store is unusable must not start. Returns 0, or a negative fcr_err code with the
 * reason in `err` (FCR_EIO: the database cannot be opened or reached; FCR_EPROTO: a schema
 * version this program does not know; FCR_ENOMEM).
 */
int notes_store_start(notes_store *s, struct ev_loop *loop, char *err, size_t errlen);

/* Releases what notes_store_start() took for `loop`'s worker; from the worker stop hook. */
void notes_store_stop(notes_store *s, struct ev_loop *loop);

/*
 * Frees the store. Call it once no operation is outstanding and the pool's threads have ended
 * (after fcr_app_free()); what a thread still holds is closed here. NULL is ignored.
 */
void notes_store_free(notes_store *s);

/*
 * The operations. Each is called from a handler (on the loop) with its request and response,
 * and the handler returns what the operation returns:
 *   - FCR_ASYNC: `cb` runs once on the loop with the result; `data` is the operation's until
 *     then. Nothing blocks the loop meanwhile.
 *   - anything else: `cb` will not run and `data` stays the caller's. FCR_DONE: `res` already
 *     holds the answer (503 problem+json with Retry-After: 1 when the store has too much
 *     outstanding work); a negative fcr_err code: the request fails with 500.
 * Strings are copied: they need not outlive the call.
 */

/* Up to `limit` notes in increasing id order, skipping the first `offset`. */
int notes_store_list(notes_store *s, fcr_req *req, fcr_res *res, size_t offset, size_t limit,
                     notes_store_cb cb, void *data);
/* The note `id` (NOT_FOUND when there is none). */
int notes_store_get(notes_store *s, fcr_req *req, fcr_res *res, long long id, notes_store_cb cb,
                    void *data);
/* A new note with the next id; `author` may be NULL. */
int notes_store_create(notes_store *s, fcr_req *req, fcr_res *res, const char *title,
                       const char *body, const char *author, notes_store_cb cb, void *data);
/* Replaces title, body and author of note `id`, keeping its id and raising its version
 * (NOT_FOUND when there is none). With `expect` > 0 only when the note is at that version, in
 * one statement of the database (CONFLICT otherwise): two writers that read the same version
 * cannot both write, whichever worker or machine serves them. */
int notes_store_update(notes_store *s, fcr_req *req, fcr_res *res, long long id, long long expect,
                       const char *title, const char *body, const char *author, notes_store_cb cb,
                       void *data);
/* Deletes note `id` (NOT_FOUND when there is none; with `expect` > 0, CONFLICT when it is at
 * another version); its id is never given again. */
int notes_store_delete(notes_store *s, fcr_req *req, fcr_res *res, long long id, long long expect,
                       notes_store_cb cb, void *data);

/* ---- For backends --------------------------------------------------------------------- */

typedef enum notes_store_kind {
    NOTES_OP_LIST,
    NOTES_OP_GET,
    NOTES_OP_CREATE,
    NOTES_OP_UPDATE,
    NOTES_OP_DELETE,
} notes_store_kind;

/* One operation as the interface hands it to a backend (borrowed during `run` only). */
typedef struct notes_store_query {
    notes_store_kind kind;
    long long id;         /* GET, UPDATE, DELETE */
    size_t offset, limit; /* LIST */
    const char *title;    /* CREATE, UPDATE */
    const char *body;     /* CREATE, UPDATE */
    const char *author;   /* CREATE, UPDATE; may be NULL */
    long long expect;     /* UPDATE, DELETE: the version the note must be at; 0: any */
} notes_store_query;

/*
 * A backend. `run` starts the query and returns as the operations above do: FCR_ASYNC when
 * `cb` will run on the loop. A backend on the pool returns `cb`'s verdict from the done of
 * fcr_defer(). A backend on the loop calls `cb` from its watcher, then sends the answer with
 * fcr_res_send(): as `cb` left it when it returned FCR_DONE, or replaced by a 500 problem+json
 * for a negative code; it calls fcr_res_send() also when the request was aborted meanwhile
 * (fcr_req_aborted()), to release it, and calls `cb` first all the same. `start` may make the
 * schema with blocking calls, before the worker accepts; `run` never blocks.
 */
typedef struct notes_store_backend {
    const char *name; /* "sqlite", "postgresql" */
    int (*start)(notes_store *s, struct ev_loop *loop, char *err, size_t errlen);
    void (*stop)(notes_store *s, struct ev_loop *loop);
    void (*free)(notes_store *s);
    int (*run)(notes_store *s, fcr_req *req, fcr_res *res, const notes_store_query *q,
               notes_store_cb cb, void *data);
} notes_store_backend;

/* What every store starts with; a backend's own struct embeds it first. */
struct notes_store {
    const notes_store_backend *backend;
    double timeout; /* seconds */
};

/* The SQLite backend (notes_sqlite.c): a store on the file `path`. */
int notes_sqlite_new(const char *path, double timeout, notes_store **out, char *err, size_t errlen);

#ifdef NOTES_HAVE_PG
/* The PostgreSQL backend (notes_pg.c): a store on the database of the libpq URI `url`. */
int notes_pg_new(const char *url, double timeout, notes_store **out, char *err, size_t errlen);
#endif

#endif
