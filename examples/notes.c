/* notes: a JSON REST service of notes on the fcrest app API, its notes kept in a store.
 *
 *   GET    /health                     200 {"status":"ok"}
 *   GET    /whoami                     200 {"user":"alice"} or {"user":null}
 *   GET    /notes[?limit=N&offset=M]   200 [note, ...] in increasing id order, at most 1000
 *                                       (and `limit`, default 1000) from `offset` (default 0);
 *                                       Link: <...>; rel="next" / rel="prev" (RFC 8288)
 *   POST   /notes                      201 note, Location: <prefix>/notes/<id>
 *   GET    /notes/<id>                 200 note with its ETag "ID-VERSION" (304 for
 *                                       If-None-Match with it), or 404
 *   PUT    /notes/<id>                 200 note (same id, next version), or 404; 412 when
 *                                       If-Match names another version (no lost update)
 *   DELETE /notes/<id>                 204, or 404; 412 likewise
 *
 * A note is {"id":N,"title":"...","body":"...","author":"user"}. Ids start at 1 in a fresh
 * store, increase, and are never reused after a delete. POST, PUT and DELETE need an
 * authenticated user: `Authorization: Bearer <token>` with a token of NOTES_TOKENS
 * ("alice:s3cret,bob:hunter2"), or the param NOTES_USER set by the web server after it ran this
 * program's authorizer (the same function answers FastCGI AUTHORIZER requests; it reads only
 * the tokens, never the store). Request bodies are checked in this order: Content-Type
 * application/json (415), size (413, --max-body), JSON syntax (400), shape (422, with an
 * `errors` array naming each failing member by its JSON Pointer, fcr_validate()). Pages of the
 * origins given with --cors-origin (NOTES_CORS_ORIGINS) may call the service from a browser.
 * `--metrics /metrics` (fcrest's own option, FCREST_METRICS) serves Prometheus metrics summed
 * over every worker (docs/metrics.md).
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

/* What a POST or PUT body must be: checked with fcr_validate(), every failure a JSON Pointer
 * in the 422 answer. Other members are ignored. */
static const fcr_field note_fields[] = {
    {.name = "title",
     .kind = FCR_FIELD_STRING,
     .flags = FCR_FIELD_REQUIRED | FCR_FIELD_MIN | FCR_FIELD_MAX,
     .min = 1,
     .max = MAX_TITLE},
    {.name = "body", .kind = FCR_FIELD_STRING},
    {0},
};

/* Checks a POST or PUT body. Returns the new note's title and body (borrowed from the request's
 * JSON) or false with the answer (400 or 422) in `res`. */
static bool read_note(fcr_req *req, fcr_res *res, const char **title, const char **body)
{
    json_t *doc = fcr_req_parse_json(req, res);
    if (!doc)
        return false;
    int rc = fcr_validate(res, doc, note_fields, 0);
    if (rc != 0) {
        if (rc < 0)
            fcr_res_set_problem(res, 500, "the body could not be checked");
        return false;
    }
    json_t *b = json_object_get(doc, "body");
    *title = json_string_value(json_object_get(doc, "title"));
    *body = b ? json_string_value(b) : "";
    return true;
}

static json_t *make_note(const notes_note *n)
{
    return json_pack("{s:I, s:s, s:s, s:s?}", "id", (json_int_t)n->id, "title", n->title, "body",
                     n->body, "author", n->author);
}

/* The entity-tag of a note's version: "ID-VERSION". Every worker and instance on the store
 * gives the same version the same tag. */
static void note_tag(char *out, size_t cap, long long id, long long version)
{
    snprintf(out, cap, "\"%lld-%lld\"", id, version);
}

/* What a PUT or DELETE's If-Match asks of note `id`, in `*expect`: 0 (no If-Match, or "*": any
 * version of a note that exists) or the version its tag names. Returns false when no version
 * can match (a weak or foreign tag, a malformed list): 412 is already in `res`. */
static bool if_match(fcr_req *req, fcr_res *res, long long id, long long *expect, bool *star)
{
    *expect = 0;
    *star = false;
    const char *h = fcr_req_header(req, "If-Match");
    if (!h)
        return true;
    while (*h == ' ' || *h == '\t')
        h++;
    if (*h == '*') {
        *star = true;
        return true;
    }
    /* The first tag of the list that names this note (a tag of another note matches nothing). */
    for (const char *p = h; (p = strchr(p, '"'));) {
        long long tid, v;
        int used = 0;
        if (sscanf(p, "\"%lld-%lld\"%n", &tid, &v, &used) == 2 && used > 0 && tid == id && v > 0 &&
            (p == h || p[-1] != '/')) {
            *expect = v;
            return true;
        }
        const char *end = strchr(p + 1, '"');
        if (!end)
            break;
        p = end + 1;
    }
    fcr_res_set_problem(res, 412, "If-Match names no version of this note");
    return false;
}

/* A PUT or DELETE's precondition, for its answer. */
typedef struct cond {
    long long id;
    bool star; /* If-Match: *: a note that does not exist is 412, not 404 */
} cond;

/* The answer to an operation of the store that did not succeed: 404, 412, 503 or 500. `c`: the
 * request's precondition (NULL: none). */
static int store_failed(fcr_res *res, const notes_store_result *r, const cond *c)
{
    if (r->status == NOTES_STORE_NOT_FOUND && c && c->star)
        return fcr_res_set_problem(res, 412,
                                   "there is no note with this id, and If-Match needs one");
    if (r->status == NOTES_STORE_NOT_FOUND)
        return fcr_res_set_problem(res, 404, "there is no note with this id");
    if (r->status == NOTES_STORE_CONFLICT && c) {
        /* A lost update refused: another request changed the note since the client read it;
         * the answer names the version it is at now. */
        char tag[64];
        note_tag(tag, sizeof tag, c->id, r->version);
        int rc = fcr_res_set_problem(res, 412,
                                     "the note has changed since it was read (If-Match names "
                                     "an older version): fetch it again");
        return rc < 0 ? rc : fcr_res_set_etag(res, tag);
    }
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

/* Where a page of the list was asked from, for its Link header. */
typedef struct page {
    size_t offset, limit;
} page;

/* RFC 8288 links to the next page (when this one is full) and the previous one (when this one
 * does not start at the first note), under the mount prefix. */
static int page_links(fcr_req *req, fcr_res *res, const page *p, size_t count)
{
    char links[1200];
    size_t n = 0;
    const char *base = fcr_req_base_path(req);
    if (p->limit > 0 && count == p->limit)
        n += (size_t)snprintf(links + n, sizeof links - n,
                              "<%.400s/notes?limit=%zu&offset=%zu>; rel=\"next\"", base, p->limit,
                              p->offset + p->limit);
    if (p->offset > 0 && n < sizeof links)
        n += (size_t)snprintf(
            links + n, sizeof links - n, "%s<%.400s/notes?limit=%zu&offset=%zu>; rel=\"prev\"",
            n ? ", " : "", base, p->limit, p->offset > p->limit ? p->offset - p->limit : (size_t)0);
    return n ? fcr_res_set_header(res, "Link", links) : 0;
}

static int listed(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data)
{
    page p = *(const page *)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    if (r->status != NOTES_STORE_OK)
        return store_failed(res, r, NULL);
    int rc = page_links(req, res, &p, r->count);
    if (rc < 0)
        return rc;
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
    page *p = fcr_req_alloc(req, sizeof *p); /* freed with the request */
    if (!p)
        return FCR_HANDLER_ERROR;
    *p = (page){offset, limit};
    return notes_store_list(n->store, req, res, offset, limit, listed, p);
}

static int created(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data)
{
    (void)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    if (r->status != NOTES_STORE_OK)
        return store_failed(res, r, data);
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

/* The answer of get and update: the note, with the entity-tag of its version; a GET whose
 * If-None-Match names it is 304. */
static int got_note(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data)
{
    (void)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    if (r->status != NOTES_STORE_OK)
        return store_failed(res, r, data);
    json_t *note = make_note(&r->notes[0]);
    char tag[64];
    note_tag(tag, sizeof tag, r->notes[0].id, r->notes[0].version);
    int rc = note ? 0 : FCR_ENOMEM;
    if (rc == 0 && strcmp(fcr_req_method(req), "PUT") != 0)
        rc = fcr_req_check_preconditions(req, res, tag);
    if (rc != 0) { /* 304, or an error */
        json_decref(note);
        return rc < 0 ? rc : FCR_DONE;
    }
    rc = fcr_res_set_etag(res, tag);
    if (rc < 0) {
        json_decref(note);
        return rc;
    }
    return fcr_res_set_json_new(res, 200, note);
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
    cond *c = fcr_req_alloc(req, sizeof *c);
    if (!c)
        return FCR_HANDLER_ERROR;
    c->id = id;
    long long expect;
    if (!if_match(req, res, id, &expect, &c->star))
        return FCR_DONE;
    return notes_store_update(n->store, req, res, id, expect, title, body, fcr_req_user(req),
                              got_note, c);
}

static int deleted(fcr_req *req, fcr_res *res, const notes_store_result *r, void *data)
{
    (void)data;
    if (fcr_req_aborted(req))
        return FCR_DONE;
    if (r->status != NOTES_STORE_OK)
        return store_failed(res, r, data);
    return fcr_res_set_status(res, 204);
}

static fcr_handler_result delete_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    long long id = id_from_path(req, res);
    if (id < 0)
        return FCR_DONE;
    cond *c = fcr_req_alloc(req, sizeof *c);
    if (!c)
        return FCR_HANDLER_ERROR;
    c->id = id;
    long long expect;
    if (!if_match(req, res, id, &expect, &c->star))
        return FCR_DONE;
    return notes_store_delete(n->store, req, res, id, expect, deleted, c);
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

/* The CORS policy of --cors-origin (NOTES_CORS_ORIGINS): pages of those origins may call the
 * service from a browser, with a bearer token and JSON bodies, and read its Location, ETag,
 * Link and X-Request-Id headers. Returns 0, or a negative fcr_err code after logging why. */
static int cors_setup(fcr_app *app)
{
    const char *list = fcr_app_option(app, "--cors-origin");
    if (!list)
        return 0;
    fcr_cors *c = fcr_cors_new();
    char *copy = strdup(list);
    int rc = c && copy ? 0 : FCR_ENOMEM;
    char *save = NULL;
    for (char *o = copy ? strtok_r(copy, ",", &save) : NULL; o && rc == 0;
         o = strtok_r(NULL, ",", &save)) {
        rc = fcr_cors_add_origin(c, o);
        if (rc == FCR_EINVAL)
            fcr_log(FCR_LOG_ERROR,
                    "notes: --cors-origin: '%s' is not an origin "
                    "(scheme://host[:port], or a host starting with *.)",
                    o);
    }
    free(copy);
    if (rc == 0)
        rc = fcr_cors_add_header(c, "Authorization, Content-Type, If-Match, If-None-Match");
    if (rc == 0)
        rc = fcr_cors_add_exposed_header(c, "Location, ETag, Link, X-Request-Id");
    if (rc == 0)
        rc = fcr_cors_set_max_age(c, 600);
    if (rc < 0) {
        fcr_cors_free(c);
        return rc;
    }
    return fcr_app_set_cors(app, c);
}

/* The worker start hook: the store of --db (NOTES_DB), ready before the worker accepts, and the
 * CORS policy of --cors-origin. */
static int worker_start(fcr_app *app, struct ev_loop *loop, void *data)
{
    int rc = cors_setup(app);
    if (rc < 0)
        return rc;
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
        fcr_app_add_option(app, "--cors-origin", FCR_OPT_LIST, "ORIGIN", "NOTES_CORS_ORIGINS", NULL,
                           "an origin whose pages may call the service from a browser "
                           "(repeatable; the variable takes several, comma-separated)") < 0 ||
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
