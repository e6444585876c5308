/* notes: a JSON REST service of notes on the fcrest app API, its notes kept in a store.
 *
 *   GET    /health                     200 {"status":"ok"}
 *   GET    /whoami                     200 {"user":"alice"} or {"user":null}
 *   GET    /notes[?limit=N&offset=M]   200 [note, ...] in increasing id order, at most 1000
 *                                       (and `limit`, default 1000) from `offset` (default 0)
 *   POST   /notes                      201 note, Location: <prefix>/notes/<id>
 *   GET    /notes/<id>                 200 note, or 404
 *   PUT    /notes/<id>                 200 note (same id), or 404
 *   DELETE /notes/<id>                 204, or 404
 *
 * A note is {"id":N,"title":"...","body":"...","author":"user"}. Ids start at 1 in a fresh
 * store, increase, and are never reused after a delete. POST, PUT and DELETE need an
 * authenticated user: `Authorization: Bearer <token>` with a token of NOTES_TOKENS
 * ("alice:s3cret,bob:hunter2"), or the param NOTES_USER set by the web server after it ran this
 * program's authorizer (the same function answers FastCGI AUTHORIZER requests; it reads only
 * the tokens, never the store). Request bodies are checked in this order: Content-Type
 * application/json (415), size (413, --max-body), JSON syntax (400), shape (422).
 *
 * The notes live in the store named by --db URL (or NOTES_DB; see notes_store.h):
 *   - `sqlite:PATH`, by default `sqlite:notes.db` in the working directory, a file in WAL mode
 *     that every worker process of the machine shares (--workers N answers like one process);
 *   - a PostgreSQL URI, `postgresql:///notes?host=/run/postgresql` or
 *     `postgresql://user@host/db`, one database for instances on several machines (behind
 *     mod_proxy_balancer), when the program is built with libpq.
 * Notes are kept across restarts. Each worker opens the store in its start hook, creating the
 * schema when absent, and a store that cannot be opened or reached within --db-timeout stops
 * the program at start with the reason logged. The handlers reach the store without blocking
 * the loop: SQLite runs on the worker's pool through fcr_defer(), PostgreSQL on the worker's
 * loop (<fcrest/pg.h>). A store still locked, or a database that does not answer, after
 * --db-timeout seconds (NOTES_DB_TIMEOUT, default 5), and a database that is down, give 503
 * problem+json with Retry-After: 1; any other failure of the store 500 problem+json.
 *
 * Usage: notes [--listen unix:PATH | --listen tcp:HOST:PORT]... [--db sqlite:PATH |
 *              --db postgresql://...] [--db-timeout SECONDS] (see --help) */
#include <fcrest.h>

#include "notes_store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TITLE 200 /* characters */
/* Notes in one answer of GET /notes at most: a list answer stays bounded however many notes
 * there are (a larger `limit` gets this many; `offset` pages on). */
#define PAGE_MAX 1000

typedef struct account {
    char *user;
    char *token;
} account;

typedef struct notes {
    account *accounts;
    size_t naccounts;
    notes_store *store; /* this process's, made by the worker start hook */
} notes;

/* ---- Authentication ------------------------------------------------------------------- */

/* Compares without an early exit, so the time taken does not tell how much of a token matched. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0 && lb > 0;
}

/* The user whose token the Authorization header carries, or NULL. */
static const char *bearer_user(const notes *n, fcr_req *req)
{
    const char *h = fcr_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    const char *token = h + 7;
    while (*token == ' ')
        token++;
    const char *user = NULL;
    for (size_t i = 0; i < n->naccounts; i++) {
        if (token_equal(token, n->accounts[i].token))
            user = n->accounts[i].user;
    }
    return user;
}

static bool is_write(const char *method)
{
    return method && (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                      strcmp(method, "DELETE") == 0);
}

/* Guards the routes inside the app and answers the web server's AUTHORIZER requests. */
static fcr_auth_result authorize(fcr_req *req, fcr_res *res, fcr_auth *auth, void *data)
{
    const char *user = bearer_user(data, req);
    /* Behind a web server that ran this authorizer already, the user comes as a param. */
    if (!user && fcr_req_role(req) == FCR_RESPONDER) {
        const char *v = fcr_req_param(req, "NOTES_USER");
        if (v && *v)
            user = v;
    }
    if (user && fcr_auth_set_user(auth, "NOTES_USER", user) == 0)
        return FCR_ALLOW;
    if (!is_write(fcr_req_method(req)))
        return FCR_ALLOW;
    int rc = fcr_res_set_header(res, "WWW-Authenticate", "Bearer");
    if (rc == 0)
        rc = fcr_res_set_problem(res, 401, "this method needs an Authorization: Bearer token");
    return rc < 0 ? rc : FCR_DENY;
}

/* ---- Helpers -------------------------------------------------------------------------- */

/* Parses a non-negative decimal integer (digits only); values too large saturate. */
static bool parse_count(const char *s, size_t *out)
{
    if (!s || !*s)
        return false;
    size_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        size_t d = (size_t)(*s - '0');
        v = v > (SIZE_MAX - d) / 10 ? SIZE_MAX : v * 10 + d;
    }
    *out = v;
    return true;
}

/* The note id of the path param, or -1 (404 already in `res`): ids are 1 to INT64_MAX. */
static long long id_from_path(fcr_req *req, fcr_res *res)
{
    size_t id;
    if (parse_count(fcr_req_path_param(req, "id"), &id) && id >= 1 && id <= (size_t)INT64_MAX)
        return (long long)id;
    fcr_res_set_problem(res, 404, "there is no note with this id");
    return -1;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* Checks a POST or PUT body. Returns the new note's title and body (borrowed from the request's
 * JSON) or false with the answer (400 or 422) in `res`. */
static bool read_note(fcr_req *req, fcr_res *res, const char **title, const char **body)
{
    json_t *doc = fcr_req_parse_json(req, res);
    if (!doc)
        return false;
    if (!json_is_object(doc)) {
        fcr_res_set_problem(res, 422, "the body must be a JSON object");
        return false;
    }
    json_t *t = json_object_get(doc, "title");
    if (!json_is_string(t)) {
        fcr_res_set_problem(res, 422, "title must be a string");
        return false;
    }
    size_t len = utf8_chars(json_string_value(t));
    if (len == 0 || len > MAX_TITLE) {
        fcr_res_set_problem(res, 422, "title must have 1 to %d characters", MAX_TITLE);
        return false;
    }
    json_t *b = json_object_get(doc, "body");
    if (b && !json_is_string(b)) {
        fcr_res_set_problem(res, 422, "body must be a string");
        return false;
    }
    *title = json_string_value(t);
    *body = b ? json_string_value(b) : "";
    return true;
}

static json_t *make_note(const notes_note *n)
{
    return json_pack("{s:I, s:s, s:s, s:s?}", "id", (json_int_t)n->id, "title", n->title, "body",
                     n->body, "author", n->author);
}

/* The answer to an operation of the store that did not succeed: 404, 503 or 500. */
static int store_failed(fcr_res *res, const notes_store_result *r)
{
    if (r->status == NOTES_STORE_NOT_FOUND)
        return fcr_res_set_problem(res, 404, "there is no note with this id");
    const char *why = r->error ? r->error : "unknown error";
    if (r->status == NOTES_STORE_BUSY) {
        fcr_log(FCR_LOG_WARN, "answered 503: the store is busy: %s", why);
        int rc = fcr_res_set_header(res, "Retry-After", "1");
        return rc < 0 ? rc : fcr_res_set_problem(res, 503, "the store is busy; try again");
    }
    fcr_log(FCR_LOG_ERROR, "the store failed: %s", why);
    return fcr_res_set_problem(res, 500, "the store failed");
}

/* ---- Handlers ------------------------------------------------------------------------- */
/* The handlers that reach the store start an operation and return what it returns
 * (FCR_ASYNC); its callback, back on the loop, makes the answer. */

static fcr_handler_result health(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_json_new(res, 200, json_pack("{s:s}", "status", "ok"));
}

static fcr_handler_result whoami(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    const char *user = fcr_req_user(req);
    return fcr_res_set_json_new(res, 200,
                                json_pack("{s:o}", "user", user ? json_string(user) : json_null()));
}

static int listed(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data)
{
    (void)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    if (r->status != NOTES_STORE_OK)
        return store_failed(res, r);
    json_t *out = json_array();
    for (size_t i = 0; out && i < r->count; i++) {
        if (json_array_append_new(out, make_note(&r->notes[i])) < 0) {
            json_decref(out);
            return FCR_HANDLER_ERROR;
        }
    }
    return fcr_res_set_json_new(res, 200, out);
}

static fcr_handler_result list_notes(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    size_t limit = PAGE_MAX, offset = 0;
    const char *l = fcr_req_query(req, "limit");
    const char *o = fcr_req_query(req, "offset");
    if ((l && !parse_count(l, &limit)) || (o && !parse_count(o, &offset)))
        return fcr_res_set_problem(res, 400, "limit and offset must be non-negative integers");
    if (limit > PAGE_MAX)
        limit = PAGE_MAX;
    return notes_store_list(n->store, req, res, offset, limit, listed, NULL);
}

static int created(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data)
{
    (void)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    if (r->status != NOTES_STORE_OK)
        return store_failed(res, r);
    char location[512];
    snprintf(location, sizeof location, "%.400s/notes/%lld", fcr_req_base_path(req),
             r->notes[0].id);
    int rc = fcr_res_set_header(res, "Location", location);
    if (rc < 0)
        return rc;
    return fcr_res_set_json_new(res, 201, make_note(&r->notes[0]));
}

static fcr_handler_result create_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    const char *title, *body;
    if (!read_note(req, res, &title, &body))
        return FCR_DONE;
    return notes_store_create(n->store, req, res, title, body, fcr_req_user(req), created, NULL);
}

/* The answer of get and update: the note. */
static int got_note(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data)
{
    (void)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    if (r->status != NOTES_STORE_OK)
        return store_failed(res, r);
    return fcr_res_set_json_new(res, 200, make_note(&r->notes[0]));
}

static fcr_handler_result get_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    long long id = id_from_path(req, res);
    if (id < 0)
        return FCR_DONE;
    return notes_store_get(n->store, req, res, id, got_note, NULL);
}

static fcr_handler_result replace_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    const char *title, *body;
    if (!read_note(req, res, &title, &body))
        return FCR_DONE;
    long long id = id_from_path(req, res);
    if (id < 0)
        return FCR_DONE;
    return notes_store_update(n->store, req, res, id, title, body, fcr_req_user(req), got_note,
                              NULL);
}

static int deleted(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data)
{
    (void)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    if (r->status != NOTES_STORE_OK)
        return store_failed(res, r);
    return fcr_res_set_status(res, 204);
}

static fcr_handler_result delete_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    long long id = id_from_path(req, res);
    if (id < 0)
        return FCR_DONE;
    return notes_store_delete(n->store, req, res, id, deleted, NULL);
}

/* ---- Set-up --------------------------------------------------------------------------- */

/* Reads "user:token,user:token" from NOTES_TOKENS. */
static int load_accounts(notes *n, const char *spec)
{
    if (!spec)
        return 0;
    char *copy = strdup(spec);
    if (!copy)
        return -1;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        if (!colon || colon == item || !colon[1]) {
            fprintf(stderr, "notes: ignoring malformed NOTES_TOKENS entry\n");
            continue;
        }
        *colon = '\0';
        account *a = realloc(n->accounts, (n->naccounts + 1) * sizeof *a);
        if (!a)
            break;
        n->accounts = a;
        a[n->naccounts].user = strdup(item);
        a[n->naccounts].token = strdup(colon + 1);
        n->naccounts++;
    }
    free(copy);
    return 0;
}

/* Frees the accounts and the store (after fcr_app_free(), which ended the pool's threads). */
static void free_notes(notes *n)
{
    for (size_t i = 0; i < n->naccounts; i++) {
        free(n->accounts[i].user);
        free(n->accounts[i].token);
    }
    free(n->accounts);
    notes_store_free(n->store);
    n->store = NULL;
}

/* Makes and starts the store `url` (NULL: the default) for the worker of `loop`, waiting at
 * most `timeout` seconds for a lock (0: the default). Returns 0, or a negative fcr_err code
 * after logging why. */
static int notes_open_store(notes *n, const char *url, double timeout, struct ev_loop *loop)
{
    char err[512] = "";
    int rc = notes_store_new(url, timeout, &n->store, err, sizeof err);
    if (rc == 0)
        rc = notes_store_start(n->store, loop, err, sizeof err);
    if (rc < 0) {
        fcr_log(FCR_LOG_ERROR, "notes: %s", err);
        notes_store_free(n->store);
        n->store = NULL;
    }
    return rc;
}

/* The worker start hook: the store of --db (NOTES_DB), ready before the worker accepts. */
static int worker_start(fcr_app *app, struct ev_loop *loop, void *data)
{
    const char *t = fcr_app_option(app, "--db-timeout");
    return notes_open_store(data, fcr_app_option(app, "--db"), t ? strtod(t, NULL) : 0, loop);
}

static void worker_stop(fcr_app *app, struct ev_loop *loop, void *data)
{
    (void)app;
    notes *n = data;
    notes_store_stop(n->store, loop);
}

/* Registers the options, the worker hooks and the routes on `app`; the tests build the same
 * app. */
static int notes_setup(fcr_app *app, notes *n)
{
    if (fcr_app_add_option(app, "--db", FCR_OPT_STRING, "URL", "NOTES_DB", NOTES_STORE_DEFAULT,
                           "where the notes are kept: sqlite:PATH or postgresql://...") < 0 ||
        fcr_app_add_option(app, "--db-timeout", FCR_OPT_SECONDS, NULL, "NOTES_DB_TIMEOUT", "5",
                           "how long an operation waits for a locked or silent store "
                           "(then 503)") < 0 ||
        fcr_app_on_worker_start(app, worker_start, n) < 0 ||
        fcr_app_on_worker_stop(app, worker_stop, n) < 0)
        return -1;
    if (fcr_app_guard(app, authorize, n) < 0 || fcr_app_set_authorizer(app, authorize, n) < 0)
        return -1;
    fcr_app_route(app, FCR_GET, "/health", health, n);
    fcr_app_route(app, FCR_GET, "/whoami", whoami, n);
    fcr_app_route(app, FCR_GET, "/notes", list_notes, n);
    fcr_route_consumes(fcr_app_route(app, FCR_POST, "/notes", create_note, n), "application/json");
    fcr_app_route(app, FCR_GET, "/notes/(?<id>[0-9]+)", get_note, n);
    fcr_route_consumes(fcr_app_route(app, FCR_PUT, "/notes/(?<id>[0-9]+)", replace_note, n),
                       "application/json");
    fcr_app_route(app, FCR_DELETE, "/notes/(?<id>[0-9]+)", delete_note, n);
    return fcr_app_error(app) ? -1 : 0;
}

int main(int argc, char **argv)
{
    notes n = {0};
    fcr_app *app = fcr_app_new();
    if (!app || load_accounts(&n, getenv("NOTES_TOKENS")) < 0 || notes_setup(app, &n) < 0) {
        fprintf(stderr, "notes: cannot set up the service\n");
        fcr_app_free(app);
        free_notes(&n);
        return 1;
    }
    if (n.naccounts == 0)
        fcr_log(FCR_LOG_WARN, "NOTES_TOKENS is empty: nobody can write");
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app); /* ends the pool's threads, which close their connections */
    free_notes(&n);
    return rc == 0 ? 0 : 1;
}
