/* notes: an in-memory JSON REST service of notes on the fcrest app API.
 *
 *   GET    /health                     200 {"status":"ok"}
 *   GET    /whoami                     200 {"user":"alice"} or {"user":null}
 *   GET    /notes[?limit=N&offset=M]   200 [note, ...] in increasing id order
 *   POST   /notes                      201 note, Location: <prefix>/notes/<id>
 *   GET    /notes/<id>                 200 note, or 404
 *   PUT    /notes/<id>                 200 note (same id), or 404
 *   DELETE /notes/<id>                 204, or 404
 *
 * A note is {"id":N,"title":"...","body":"...","author":"user"}. POST, PUT and DELETE need an
 * authenticated user: `Authorization: Bearer <token>` with a token of NOTES_TOKENS
 * ("alice:s3cret,bob:hunter2"), or the param NOTES_USER set by the web server after it ran this
 * program's authorizer (the same function answers FastCGI AUTHORIZER requests). Request bodies
 * are checked in this order: Content-Type application/json (415), size (413, --max-body), JSON
 * syntax (400), shape (422).
 *
 * Usage: notes [--listen unix:PATH | --listen tcp:HOST:PORT]... (see --help) */
#include <fcrest.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TITLE 200 /* characters */

typedef struct account {
    char *user;
    char *token;
} account;

typedef struct notes {
    json_t *list; /* note objects in increasing id order */
    json_int_t next_id;
    account *accounts;
    size_t naccounts;
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
static int authorize(fcr_req *req, fcr_res *res, fcr_auth *auth, void *data)
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

/* Index of the note with `id` in the list, or -1. */
static long find_note(const notes *n, json_int_t id)
{
    size_t lo = 0, hi = json_array_size(n->list);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        json_int_t mid_id = json_integer_value(json_object_get(json_array_get(n->list, mid), "id"));
        if (mid_id == id)
            return (long)mid;
        if (mid_id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* The note named by the path param, or -1 (404 already in `res`). */
static long note_from_path(const notes *n, fcr_req *req, fcr_res *res)
{
    size_t id;
    long i = -1;
    if (parse_count(fcr_req_path_param(req, "id"), &id) && id <= (size_t)INT64_MAX)
        i = find_note(n, (json_int_t)id);
    if (i < 0)
        fcr_res_set_problem(res, 404, "there is no note with this id");
    return i;
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

static json_t *make_note(json_int_t id, const char *title, const char *body, const char *author)
{
    return json_pack("{s:I, s:s, s:s, s:s?}", "id", id, "title", title, "body", body, "author",
                     author);
}

/* ---- Handlers ------------------------------------------------------------------------- */

static int health(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_json_new(res, 200, json_pack("{s:s}", "status", "ok"));
}

static int whoami(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    const char *user = fcr_req_user(req);
    return fcr_res_set_json_new(res, 200,
                                json_pack("{s:o}", "user", user ? json_string(user) : json_null()));
}

static int list_notes(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    size_t limit = SIZE_MAX, offset = 0;
    const char *l = fcr_req_query(req, "limit");
    const char *o = fcr_req_query(req, "offset");
    if ((l && !parse_count(l, &limit)) || (o && !parse_count(o, &offset)))
        return fcr_res_set_problem(res, 400, "limit and offset must be non-negative integers");
    size_t total = json_array_size(n->list);
    json_t *out = json_array();
    for (size_t i = offset; out && i < total && json_array_size(out) < limit; i++) {
        if (json_array_append(out, json_array_get(n->list, i)) < 0) {
            json_decref(out);
            return FCR_ENOMEM;
        }
    }
    return fcr_res_set_json_new(res, 200, out);
}

static int create_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    const char *title, *body;
    if (!read_note(req, res, &title, &body))
        return 0;
    json_t *note = make_note(n->next_id, title, body, fcr_req_user(req));
    if (!note || json_array_append_new(n->list, note) < 0)
        return FCR_ENOMEM;
    char location[512];
    snprintf(location, sizeof location, "%.400s/notes/%" JSON_INTEGER_FORMAT,
             fcr_req_base_path(req), n->next_id);
    n->next_id++;
    int rc = fcr_res_set_header(res, "Location", location);
    if (rc < 0)
        return rc;
    return fcr_res_set_json(res, 201, note);
}

static int get_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    long i = note_from_path(n, req, res);
    if (i < 0)
        return 0;
    return fcr_res_set_json(res, 200, json_array_get(n->list, (size_t)i));
}

static int replace_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    const char *title, *body;
    if (!read_note(req, res, &title, &body))
        return 0;
    long i = note_from_path(n, req, res);
    if (i < 0)
        return 0;
    json_int_t id = json_integer_value(json_object_get(json_array_get(n->list, (size_t)i), "id"));
    json_t *note = make_note(id, title, body, fcr_req_user(req));
    if (!note || json_array_set_new(n->list, (size_t)i, note) < 0)
        return FCR_ENOMEM;
    return fcr_res_set_json(res, 200, note);
}

static int delete_note(fcr_req *req, fcr_res *res, void *data)
{
    notes *n = data;
    long i = note_from_path(n, req, res);
    if (i < 0)
        return 0;
    if (json_array_remove(n->list, (size_t)i) < 0)
        return FCR_ENOMEM;
    return fcr_res_set_status(res, 204);
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

static void free_notes(notes *n)
{
    for (size_t i = 0; i < n->naccounts; i++) {
        free(n->accounts[i].user);
        free(n->accounts[i].token);
    }
    free(n->accounts);
    json_decref(n->list);
}

/* Registers the routes on `app`; the tests build the same app. */
static int notes_setup(fcr_app *app, notes *n)
{
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
    notes n = {.list = json_array(), .next_id = 1};
    fcr_app *app = fcr_app_new();
    if (!n.list || !app || load_accounts(&n, getenv("NOTES_TOKENS")) < 0 ||
        notes_setup(app, &n) < 0) {
        fprintf(stderr, "notes: cannot set up the service\n");
        fcr_app_free(app);
        free_notes(&n);
        return 1;
    }
    if (n.naccounts == 0)
        fcr_log(FCR_LOG_WARN, "NOTES_TOKENS is empty: nobody can write");
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    free_notes(&n);
    return rc == 0 ? 0 : 1;
}
