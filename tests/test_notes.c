/* The notes service contract (issue 3), row by row. Every test runs twice: through the
 * in-process request builder (fcr_app_test on the app examples/notes.c builds), and over a
 * real unix socket against the examples/notes program, spoken to by the independent test
 * client (tests/fcgi_client), which also checks the FastCGI framing of every answer. Each test
 * has a fresh SQLite store in a temporary directory of its own.
 *
 * Then the store (issue 14), over the socket against the program: --workers 4 answering like
 * one process, notes and ids kept across a restart, a loop that keeps answering while another
 * connection holds the SQLite file locked, 503 past the lock timeout, 500 for a store that
 * fails, and stores refused at start. */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fcrest.h>
#include <fcrest/testing.h>

#include "fcgi_client.h"

#include <sqlite3.h>
#ifdef NOTES_HAVE_PG
#include <libpq-fe.h>
#endif

/* The service itself, for the in-process runs. */
#define main notes_main
#include "examples/notes.c"
#undef main

#define H(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ALICE  "Authorization: Bearer s3cret"
#define BOB    "Authorization: Bearer hunter2"
#define JSON   "Content-Type: application/json"
#define TOKENS "alice:s3cret,bob:hunter2"

/* How a test runs (its loop index): in process on SQLite, the program on SQLite, the program on
 * PostgreSQL. */
enum { IN_PROCESS = 0, SOCKET = 1, PG = 2 };
/* The loop indexes past the last one: PostgreSQL runs when the program has its backend. */
#ifdef NOTES_HAVE_PG
#define RUNS 3
#else
#define RUNS 2
#endif

static int mode;
static fcr_app *app;
static notes svc;
static pid_t child = -1;
static char dir[64];
static char addr[128];
static char db[256];           /* the store's URL: sqlite:<dir>/notes.db, or postgresql:... */
static const char *db_timeout; /* --db-timeout of the next start (NULL: the default) */
static fcr_test_res res;

/* ---- Transports ----------------------------------------------------------------------- */

static const char *notes_program(void)
{
    static char path[4096];
    const char *root = getenv("FCR_BUILD_ROOT");
    if (root) {
        snprintf(path, sizeof path, "%s/examples/notes", root);
    } else {
        char self[4000];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        ck_assert_int_gt(n, 0);
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        *slash = '\0';
        snprintf(path, sizeof path, "%s/../examples/notes", self);
    }
    return path;
}

static bool can_connect(void)
{
    fcl_conn *c = fcl_connect(addr, 0);
    if (!c)
        return false;
    fcl_close(c);
    return true;
}

/* Removes the test's directory and what is in it. */
static void remove_dir(void)
{
    if (!dir[0])
        return;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
    dir[0] = '\0';
}

/* A fresh directory for the socket and the store. */
static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/fcr-notes-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(addr, sizeof addr, "unix:%s/notes.sock", dir);
    snprintf(db, sizeof db, "sqlite:%s/notes.db", dir);
}

/* ---- PostgreSQL ----------------------------------------------------------------------- */
/* A real PostgreSQL 15 (tests/pg/server, its path in FCR_PG_SERVER), started by main() for the
 * whole run in a directory of its own; each test that uses it gets a fresh database. */

#ifdef NOTES_HAVE_PG
static char pg_dir[64];  /* the server's directory: cluster and socket */
static bool pg_stopped;  /* a test stopped the server: the teardown starts it again */
static char pg_name[64]; /* the database of the test */

static int pg_server(const char *cmd)
{
    const char *script = getenv("FCR_PG_SERVER");
    if (!script || !*script) {
        fprintf(stderr, "FCR_PG_SERVER (the path of tests/pg/server) is not set\n");
        return -1;
    }
    char line[512];
    snprintf(line, sizeof line, "'%s' %s '%s'", script, cmd, pg_dir);
    return system(line) == 0 ? 0 : -1;
}

/* A connection of the test's own to database `name`. */
static PGconn *pg_connect(const char *name)
{
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "host=%s dbname=%s user=postgres", pg_dir, name);
    PGconn *c = PQconnectdb(conninfo);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    return c;
}

static void pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    PQclear(r);
}

/* A fresh database; `db` becomes its URL. Returns its name. */
static const char *pg_fresh_db(void)
{
    static unsigned n;
    const char *name = pg_name;
    snprintf(pg_name, sizeof pg_name, "notes_%ld_%u", (long)getpid(), n++);
    PGconn *c = pg_connect("postgres");
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    pg_exec(c, sql);
    /* The test server commits asynchronously for speed, which may lose the last commits when
     * it is killed; the notes' database commits as a production server does, so that what was
     * answered 201 is still there after a crash. */
    snprintf(sql, sizeof sql, "ALTER DATABASE %s SET synchronous_commit = on", name);
    pg_exec(c, sql);
    PQfinish(c);
    snprintf(db, sizeof db, "postgresql:///%s?host=%s&user=postgres", name, pg_dir);
    return name;
}
#endif

/* Starts the program on `addr` and the store `db` with the options `extra` (NULL-terminated),
 * its stderr into `log` (NULL: inherited); returns its pid without waiting for it. */
static pid_t spawn(const char *const *extra, const char *log)
{
    const char *prog = notes_program();
    const char *argv[32] = {prog, "--listen", addr, "--log-level", "error", "--db", db};
    int argc = 7;
    for (const char *const *e = extra; e && *e && argc < 30; e++)
        argv[argc++] = *e;
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Never outlive the test, whatever happens to it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (log) {
            int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd < 0 || dup2(fd, 2) < 0)
                _exit(127);
            close(fd);
        }
        setenv("NOTES_TOKENS", TOKENS, 1);
        unsetenv("FCREST_LISTEN");
        unsetenv("NOTES_DB");
        unsetenv("NOTES_DB_TIMEOUT");
        execv(prog, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void socket_request(const fcr_test_req *t);

/* Starts the program (see spawn) and waits until it answers. */
static void launch(const char *const *extra)
{
    child = spawn(extra, NULL);
    for (int i = 0; i < 500 && !can_connect(); i++) {
        int st;
        ck_assert_msg(waitpid(child, &st, WNOHANG) == 0, "notes exited at start");
        usleep(10000);
    }
    ck_assert_msg(can_connect(), "notes does not listen on %s", addr);
    /* The socket accepts from the start; the first answer comes once the worker's start hook
     * (the store's schema) is done. */
    socket_request(&(fcr_test_req){.path = "/health"});
    ck_assert_int_eq(res.status, 200);
    fcr_test_res_free(&res);
}

/* Stops the program with SIGTERM and checks that it exits cleanly. */
static void halt(void)
{
    if (child <= 0)
        return;
    kill(child, SIGTERM);
    int st = 0;
    pid_t w = 0;
    for (int i = 0; i < 500 && (w = waitpid(child, &st, WNOHANG)) == 0; i++)
        usleep(10000);
    if (w == 0) {
        kill(child, SIGKILL);
        waitpid(child, &st, 0);
    }
    child = -1;
    char path[160];
    snprintf(path, sizeof path, "%s/notes.sock", dir);
    unlink(path);
    /* A clean exit: under the sanitizers this also says the service freed everything. */
    ck_assert_msg(w > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "notes did not stop cleanly");
}

/* Starts the service on a fresh store: `prefix` and `max_body` (0: default) as --prefix and
 * --max-body, `workers` (0: one process) as --workers. */
static void start_workers(int which, const char *prefix, size_t max_body, unsigned workers)
{
    mode = which == IN_PROCESS ? IN_PROCESS : SOCKET;
    memset(&res, 0, sizeof res);
    make_dir();
#ifdef NOTES_HAVE_PG
    if (which == PG)
        pg_fresh_db();
#else
    ck_assert_int_ne(which, PG);
#endif
    if (mode == IN_PROCESS) {
        svc = (notes){0};
        app = fcr_app_new();
        ck_assert_int_eq(load_accounts(&svc, TOKENS), 0);
        ck_assert_int_eq(notes_setup(app, &svc), 0);
        /* What the worker start hook does in the program. */
        ck_assert_int_eq(
            notes_open_store(&svc, db, db_timeout ? strtod(db_timeout, NULL) : 0, NULL), 0);
        if (prefix)
            ck_assert_int_eq(fcr_app_set_prefix(app, prefix), 0);
        if (max_body)
            ck_assert_int_eq(fcr_app_set_max_body(app, max_body), 0);
        return;
    }
    char mb[32], nw[32];
    snprintf(mb, sizeof mb, "%zu", max_body);
    snprintf(nw, sizeof nw, "%u", workers);
    const char *extra[12];
    int n = 0;
    if (prefix) {
        extra[n++] = "--prefix";
        extra[n++] = prefix;
    }
    if (max_body) {
        extra[n++] = "--max-body";
        extra[n++] = mb;
    }
    if (workers) {
        extra[n++] = "--workers";
        extra[n++] = nw;
    }
    if (db_timeout) {
        extra[n++] = "--db-timeout";
        extra[n++] = db_timeout;
    }
    extra[n] = NULL;
    launch(extra);
}

static void start(int which, const char *prefix, size_t max_body)
{
    start_workers(which, prefix, max_body, 0);
}

static void stop(void)
{
    fcr_test_res_free(&res);
    db_timeout = NULL;
    if (mode == IN_PROCESS) {
        fcr_app_free(app);
        free_notes(&svc);
        app = NULL;
        remove_dir();
        return;
    }
    halt();
    remove_dir();
}

static void teardown(void)
{
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        child = -1;
    }
    remove_dir();
#ifdef NOTES_HAVE_PG
    /* A test that failed while the server was down leaves it running for the next. */
    if (pg_stopped)
        pg_server("start");
#endif
}

/* The header lines of `cgi` into `res`. */
static void parse_head(const char *head, fcr_test_res *r)
{
    r->status = 200;
    const char *p = head;
    while (*p) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        ck_assert_msg(colon != NULL, "header line without ':'");
        r->headers = realloc(r->headers, (r->nheaders + 1) * sizeof *r->headers);
        fcr_test_header *h = &r->headers[r->nheaders++];
        h->name = strndup(p, (size_t)(colon - p));
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        h->value = strndup(v, len - (size_t)(v - p));
        if (strcasecmp(h->name, "Status") == 0)
            r->status = atoi(h->value);
        p += len + (eol ? 2 : 0);
    }
}

/* Sends one request over a new connection with the test client; returns the connection. */
static fcl_conn *socket_send(const fcr_test_req *t)
{
    const char *params[128];
    char store_[64][300];
    size_t n = 0, s = 0;
    const char *path = t->path ? t->path : "/";
    const char *q = strchr(path, '?');
    size_t body_len = t->body ? (t->body_len ? t->body_len : strlen(t->body)) : 0;
    fcr_role role = t->role ? t->role : FCR_RESPONDER;
#define PARAM(name, value) (params[n++] = (name), params[n++] = (value))
    PARAM("REQUEST_METHOD", t->method ? t->method : "GET");
    PARAM("REQUEST_URI", path);
    PARAM("QUERY_STRING", q ? q + 1 : "");
    PARAM("REMOTE_ADDR", "127.0.0.1");
    if (role != FCR_AUTHORIZER) {
        snprintf(store_[s], sizeof store_[s], "%.*s", (int)(q ? q - path : (long)strlen(path)),
                 path);
        PARAM("SCRIPT_NAME", store_[s++]);
    }
    if (t->body && !t->no_content_length) {
        snprintf(store_[s], sizeof store_[s], "%zu", body_len);
        PARAM("CONTENT_LENGTH", store_[s++]);
    }
    for (const char *const *h = t->headers; h && *h; h++) {
        const char *colon = strchr(*h, ':');
        char *k = store_[s++];
        size_t kl = (size_t)(colon - *h);
        if (kl == 12 && strncasecmp(*h, "Content-Type", 12) == 0) {
            strcpy(k, "CONTENT_TYPE");
        } else {
            strcpy(k, "HTTP_");
            for (size_t i = 0; i < kl; i++)
                k[5 + i] = (*h)[i] == '-' ? '_' : (char)toupper((unsigned char)(*h)[i]);
            k[5 + kl] = '\0';
        }
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        PARAM(k, v);
    }
    for (const char *const *p = t->params; p && *p; p++) {
        const char *eq = strchr(*p, '=');
        char *k = store_[s++];
        snprintf(k, 300, "%.*s", (int)(eq - *p), *p);
        PARAM(k, eq + 1);
    }
    params[n] = NULL;
#undef PARAM
    fcl_conn *c = fcl_connect(addr, 0);
    ck_assert_ptr_nonnull(c);
    c->timeout = 10;
    fcl_buf out;
    fcl_buf_init(&out);
    fcl_put_request(&out, 1, (uint16_t)role, 0, params, t->body, body_len, NULL, 0);
    /* An early answer (413) may close the connection before the whole body is sent, as with a
     * real web server: the answer received meanwhile is what counts. */
    if (fcl_send_buf(c, &out) < 0)
        ck_assert_msg(errno == EPIPE || errno == ECONNRESET, "send: %s", strerror(errno));
    fcl_buf_free(&out);
    return c;
}

/* Reads the answer to the request socket_send() sent on `c` into `res`, and closes `c`. */
static void socket_receive(fcl_conn *c)
{
    fcr_test_res_free(&res);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_msg(fcl_await(c, &r, 1) == 0, "await: %s", strerror(errno));
    ck_assert_msg(c->violations == 0, "framing: %s", c->violation);
    ck_assert_int_eq(r.protocol_status, 0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    parse_head(cgi.head, &res);
    res.body = malloc(cgi.body_len + 1);
    memcpy(res.body, cgi.body, cgi.body_len);
    res.body[cgi.body_len] = '\0';
    res.body_len = cgi.body_len;
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    fcl_close(c);
}

static void socket_request(const fcr_test_req *t)
{
    socket_receive(socket_send(t));
}

static void run(const fcr_test_req *t)
{
    fcr_test_res_free(&res);
    if (mode == IN_PROCESS) {
        int rc = fcr_app_test(app, t, &res);
        ck_assert_msg(rc == 0, "fcr_app_test: %s", fcr_err_name(rc));
        ck_assert_int_eq(res.protocol_status, 0);
    } else {
        socket_request(t);
    }
}

static void req(const char *method, const char *path, const char *const *headers, const char *body)
{
    run(&(fcr_test_req){.method = method, .path = path, .headers = headers, .body = body});
}

static const char *hdr(const char *name)
{
    return fcr_test_res_header(&res, name);
}

/* ---- Checks --------------------------------------------------------------------------- */

static json_t *json_body(void)
{
    json_error_t e;
    json_t *j = json_loadb(res.body, res.body_len, JSON_DECODE_ANY, &e);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", e.text, res.body);
    return j;
}

/* A JSON answer with `status` whose body equals `expected` (a JSON text). */
static void expect_json(int status, const char *expected)
{
    ck_assert_msg(res.status == status, "status %d, expected %d: %s", res.status, status, res.body);
    ck_assert_str_eq(hdr("Content-Type"), "application/json");
    json_t *want = json_loads(expected, JSON_DECODE_ANY, NULL);
    ck_assert_ptr_nonnull(want);
    json_t *got = json_body();
    ck_assert_msg(json_equal(got, want), "body %s, expected %s", res.body, expected);
    json_decref(got);
    json_decref(want);
    char cl[32];
    snprintf(cl, sizeof cl, "%zu", res.body_len);
    ck_assert_str_eq(hdr("Content-Length"), cl);
}

/* A problem+json answer with `status`; returns the detail. */
static const char *expect_problem(int status)
{
    static char detail[512];
    ck_assert_msg(res.status == status, "status %d, expected %d: %s", res.status, status, res.body);
    ck_assert_str_eq(hdr("Content-Type"), "application/problem+json");
    json_t *j = json_body();
    ck_assert(json_is_object(j));
    ck_assert(json_is_string(json_object_get(j, "type")));
    ck_assert(json_is_string(json_object_get(j, "title")));
    ck_assert(json_is_string(json_object_get(j, "detail")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), status);
    snprintf(detail, sizeof detail, "%s", json_string_value(json_object_get(j, "detail")));
    json_decref(j);
    return detail;
}

/* The Allow header as a set equals the comma-separated `expected`. */
static void expect_allow(const char *expected)
{
    const char *allow = hdr("Allow");
    ck_assert_ptr_nonnull(allow);
    char a[128], b[128];
    snprintf(a, sizeof a, "%s", allow);
    snprintf(b, sizeof b, "%s", expected);
    int na = 0, nb = 0;
    char *save;
    for (char *t = strtok_r(a, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        na++;
        ck_assert_msg(strstr(expected, t) != NULL, "Allow has %s: %s", t, allow);
    }
    for (char *t = strtok_r(b, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        nb++;
        ck_assert_msg(strstr(allow, t) != NULL, "Allow lacks %s: %s", t, allow);
    }
    ck_assert_int_eq(na, nb);
}

/* Creates a note as `auth` and returns its id. */
static long create(const char *auth, const char *title, const char *body)
{
    json_t *j = body ? json_pack("{s:s, s:s}", "title", title, "body", body)
                     : json_pack("{s:s}", "title", title);
    char *text = json_dumps(j, 0);
    json_decref(j);
    req("POST", "/notes", H(auth, JSON), text);
    free(text);
    ck_assert_msg(res.status == 201, "create: %d %s", res.status, res.body);
    j = json_body();
    long id = (long)json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    return id;
}

/* ---- Rows ----------------------------------------------------------------------------- */

START_TEST(get_health)
{
    start(_i, NULL, 0);
    req("GET", "/health", NULL, NULL);
    expect_json(200, "{\"status\":\"ok\"}");
    stop();
}
END_TEST

START_TEST(get_whoami)
{
    start(_i, NULL, 0);
    req("GET", "/whoami", NULL, NULL);
    expect_json(200, "{\"user\":null}");
    req("GET", "/whoami", H(ALICE), NULL);
    expect_json(200, "{\"user\":\"alice\"}");
    req("GET", "/whoami", H(BOB), NULL);
    expect_json(200, "{\"user\":\"bob\"}");
    req("GET", "/whoami", H("Authorization: bearer s3cret"), NULL);
    expect_json(200, "{\"user\":\"alice\"}");
    req("GET", "/whoami", H("Authorization: Bearer wrong"), NULL);
    expect_json(200, "{\"user\":null}");
    req("GET", "/whoami", H("Authorization: Basic YWxpY2U6czNjcmV0"), NULL);
    expect_json(200, "{\"user\":null}");
    /* The web server ran the authorizer and passes its variable. */
    run(&(fcr_test_req){.path = "/whoami", .params = H("NOTES_USER=carol")});
    expect_json(200, "{\"user\":\"carol\"}");
    stop();
}
END_TEST

START_TEST(list_in_id_order)
{
    start(_i, NULL, 0);
    req("GET", "/notes", NULL, NULL);
    expect_json(200, "[]");
    ck_assert_int_eq(create(ALICE, "one", "first"), 1);
    ck_assert_int_eq(create(BOB, "two", NULL), 2);
    ck_assert_int_eq(create(ALICE, "three", "3"), 3);
    req("GET", "/notes", NULL, NULL);
    expect_json(200, "[{\"id\":1,\"title\":\"one\",\"body\":\"first\",\"author\":\"alice\"},"
                     "{\"id\":2,\"title\":\"two\",\"body\":\"\",\"author\":\"bob\"},"
                     "{\"id\":3,\"title\":\"three\",\"body\":\"3\",\"author\":\"alice\"}]");
    stop();
}
END_TEST

/* ids of the array in the body, as "1,2,3". */
static const char *ids(void)
{
    static char out[128];
    out[0] = '\0';
    json_t *j = json_body();
    ck_assert(json_is_array(j));
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v)
    {
        size_t n = strlen(out);
        snprintf(out + n, sizeof out - n, "%s%lld", i ? "," : "",
                 (long long)json_integer_value(json_object_get(v, "id")));
    }
    json_decref(j);
    return out;
}

/* A list answer holds at most 1000 notes, whatever `limit` asks; `offset` pages on. */
START_TEST(list_pages_hold_at_most_1000_notes)
{
    start(_i, NULL, 0);
    for (int i = 0; i < 1003; i++)
        create(ALICE, "t", NULL);
    const struct {
        const char *q;
        size_t n;
        long first;
    } pages[] = {{"", 1000, 1},
                 {"?limit=5000", 1000, 1},
                 {"?offset=1000", 3, 1001},
                 {"?offset=2&limit=1000", 1000, 3}};
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "/notes%s", pages[i].q);
        req("GET", path, NULL, NULL);
        ck_assert_msg(res.status == 200, "%s: %d", path, res.status);
        json_error_t e;
        json_t *j = json_loadb(res.body, res.body_len, 0, &e);
        ck_assert_ptr_nonnull(j);
        ck_assert_msg(json_array_size(j) == pages[i].n, "%s: %zu notes", path, json_array_size(j));
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(j, 0), "id")),
                         pages[i].first);
        json_decref(j);
    }
    stop();
}
END_TEST

START_TEST(list_limit_offset)
{
    start(_i, NULL, 0);
    for (int i = 0; i < 5; i++)
        create(ALICE, "t", NULL);
    const struct {
        const char *q, *ids;
    } ok[] = {
        {"?limit=2", "1,2"},
        {"?offset=3", "4,5"},
        {"?limit=2&offset=1", "2,3"},
        {"?offset=1&limit=1", "2"},
        {"?limit=0", ""},
        {"?offset=5", ""},
        {"?offset=99", ""},
        {"?limit=99", "1,2,3,4,5"},
        {"?limit=007", "1,2,3,4,5"},
        {"?offset=0&limit=99999999999999999999999", "1,2,3,4,5"},
        {"?other=x", "1,2,3,4,5"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/notes%s", ok[i].q);
        req("GET", path, NULL, NULL);
        ck_assert_msg(res.status == 200, "%s: %d", path, res.status);
        ck_assert_str_eq(hdr("Content-Type"), "application/json");
        ck_assert_msg(strcmp(ids(), ok[i].ids) == 0, "%s gave %s", path, ids());
    }
    const char *bad[] = {"?limit=-1",         "?limit=abc", "?limit=",    "?offset=1.5",
                         "?limit=+1",         "?offset=-0", "?limit=1e3", "?limit=%201",
                         "?offset=x&limit=1", "?limit=0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/notes%s", bad[i]);
        req("GET", path, NULL, NULL);
        expect_problem(400);
    }
    stop();
}
END_TEST

START_TEST(post_creates)
{
    start(_i, NULL, 0);
    req("POST", "/notes", H(ALICE, JSON), "{\"title\":\"Hello\",\"body\":\"World\",\"x\":[1]}");
    expect_json(201, "{\"id\":1,\"title\":\"Hello\",\"body\":\"World\",\"author\":\"alice\"}");
    const char *loc = hdr("Location");
    ck_assert_ptr_nonnull(loc);
    ck_assert_str_eq(loc, "/notes/1");
    req("POST", "/notes", H(BOB, "Content-Type: application/json; charset=utf-8"),
        "{\"title\":\"No body\"}");
    expect_json(201, "{\"id\":2,\"title\":\"No body\",\"body\":\"\",\"author\":\"bob\"}");
    ck_assert_str_eq(hdr("Location"), "/notes/2");
    char loc2[64];
    snprintf(loc2, sizeof loc2, "%s", hdr("Location"));
    req("GET", loc2, NULL, NULL);
    expect_json(200, "{\"id\":2,\"title\":\"No body\",\"body\":\"\",\"author\":\"bob\"}");
    stop();
}
END_TEST

START_TEST(location_keeps_script_name_prefix)
{
    start(_i, "/app", 0);
    /* Apache's default ProxyPass: SCRIPT_NAME=/app/notes. */
    req("POST", "/app/notes", H(ALICE, JSON), "{\"title\":\"x\"}");
    ck_assert_int_eq(res.status, 201);
    ck_assert_str_eq(hdr("Location"), "/app/notes/1");
    /* proxy-fcgi-pathinfo: SCRIPT_NAME=/app, PATH_INFO=/notes/1. */
    run(&(fcr_test_req){.path = "/app", .params = H("PATH_INFO=/notes/1")});
    expect_json(200, "{\"id\":1,\"title\":\"x\",\"body\":\"\",\"author\":\"alice\"}");
    stop();
}
END_TEST

START_TEST(get_one)
{
    start(_i, NULL, 0);
    create(ALICE, "a", "b");
    req("GET", "/notes/1", NULL, NULL);
    expect_json(200, "{\"id\":1,\"title\":\"a\",\"body\":\"b\",\"author\":\"alice\"}");
    req("GET", "/notes/2", NULL, NULL);
    expect_problem(404);
    req("GET", "/notes/0001", NULL, NULL);
    ck_assert_int_eq(res.status, 200);
    req("GET", "/notes/99999999999999999999999999", NULL, NULL);
    expect_problem(404);
    /* Not decimal digits: no route. */
    const char *no_route[] = {"/notes/abc", "/notes/1a",  "/notes/-1", "/notes/",
                              "/notes/1/",  "/notes/%31", "/notes/1.0"};
    for (size_t i = 0; i < sizeof no_route / sizeof no_route[0]; i++) {
        req("GET", no_route[i], NULL, NULL);
        expect_problem(404);
        ck_assert_ptr_null(hdr("Allow"));
    }
    stop();
}
END_TEST

START_TEST(put_replaces)
{
    start(_i, NULL, 0);
    create(ALICE, "old", "text");
    req("PUT", "/notes/1", H(BOB, JSON), "{\"title\":\"new\",\"id\":7}");
    expect_json(200, "{\"id\":1,\"title\":\"new\",\"body\":\"\",\"author\":\"bob\"}");
    req("GET", "/notes/1", NULL, NULL);
    expect_json(200, "{\"id\":1,\"title\":\"new\",\"body\":\"\",\"author\":\"bob\"}");
    req("PUT", "/notes/2", H(BOB, JSON), "{\"title\":\"new\"}");
    expect_problem(404);
    req("GET", "/notes", NULL, NULL);
    ck_assert_str_eq(ids(), "1");
    stop();
}
END_TEST

START_TEST(delete_removes)
{
    start(_i, NULL, 0);
    create(ALICE, "a", NULL);
    create(ALICE, "b", NULL);
    req("DELETE", "/notes/1", H(BOB), NULL);
    ck_assert_int_eq(res.status, 204);
    ck_assert_uint_eq(res.body_len, 0);
    req("GET", "/notes/1", NULL, NULL);
    expect_problem(404);
    req("DELETE", "/notes/1", H(BOB), NULL);
    expect_problem(404);
    /* Ids are never reused. */
    req("DELETE", "/notes/2", H(ALICE), NULL);
    ck_assert_int_eq(res.status, 204);
    ck_assert_int_eq(create(ALICE, "c", NULL), 3);
    req("GET", "/notes", NULL, NULL);
    ck_assert_str_eq(ids(), "3");
    stop();
}
END_TEST

START_TEST(head_on_get_routes)
{
    start(_i, NULL, 0);
    create(ALICE, "a", "b");
    const char *paths[] = {"/health",        "/whoami",  "/notes",
                           "/notes?limit=0", "/notes/1", "/notes/2"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        req("GET", paths[i], NULL, NULL);
        int status = res.status;
        char ct[128], cl[32];
        snprintf(ct, sizeof ct, "%s", hdr("Content-Type"));
        snprintf(cl, sizeof cl, "%s", hdr("Content-Length"));
        ck_assert_uint_gt(res.body_len, 0);
        req("HEAD", paths[i], NULL, NULL);
        ck_assert_int_eq(res.status, status);
        ck_assert_str_eq(hdr("Content-Type"), ct);
        ck_assert_str_eq(hdr("Content-Length"), cl);
        ck_assert_msg(res.body_len == 0, "HEAD %s has a body", paths[i]);
    }
    stop();
}
END_TEST

START_TEST(options_lists_methods)
{
    start(_i, NULL, 0);
    req("OPTIONS", "/notes", NULL, NULL);
    ck_assert_int_eq(res.status, 204);
    ck_assert_uint_eq(res.body_len, 0);
    expect_allow("GET, HEAD, POST, OPTIONS");
    req("OPTIONS", "/notes/5", NULL, NULL);
    ck_assert_int_eq(res.status, 204);
    expect_allow("GET, HEAD, PUT, DELETE, OPTIONS");
    stop();
}
END_TEST

START_TEST(other_methods_405)
{
    start(_i, NULL, 0);
    const char *on_list[] = {"PUT", "DELETE", "PATCH", "TRACE", "BREW"};
    for (size_t i = 0; i < sizeof on_list / sizeof on_list[0]; i++) {
        req(on_list[i], "/notes", H(ALICE), NULL);
        expect_problem(405);
        expect_allow("GET, HEAD, POST, OPTIONS");
    }
    const char *on_one[] = {"POST", "PATCH", "CONNECT"};
    for (size_t i = 0; i < sizeof on_one / sizeof on_one[0]; i++) {
        req(on_one[i], "/notes/1", H(ALICE), NULL);
        expect_problem(405);
        expect_allow("GET, HEAD, PUT, DELETE, OPTIONS");
    }
    stop();
}
END_TEST

START_TEST(other_paths_404)
{
    start(_i, NULL, 0);
    const char *paths[] = {"/",        "/note",  "/notes/1/x", "/healthz",
                           "/health/", "/NOTES", "/whoami/x"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        req("GET", paths[i], NULL, NULL);
        expect_problem(404);
    }
    req("POST", "/other", H(ALICE, JSON), "{\"title\":\"x\"}");
    expect_problem(404);
    req("DELETE", "/other", NULL, NULL);
    expect_problem(404);
    stop();
}
END_TEST

START_TEST(writes_need_a_user)
{
    start(_i, NULL, 0);
    create(ALICE, "a", NULL);
    const char *const *auths[] = {NULL, H("Authorization: Bearer nope"), H("Authorization: Bearer"),
                                  H("Authorization: s3cret"), H("Authorization: Bearer s3cret2")};
    for (size_t i = 0; i < sizeof auths / sizeof auths[0]; i++) {
        const char *hs[4] = {JSON, NULL, NULL, NULL};
        if (auths[i])
            hs[1] = auths[i][0];
        req("POST", "/notes", hs, "{\"title\":\"x\"}");
        expect_problem(401);
        ck_assert_str_eq(hdr("WWW-Authenticate"), "Bearer");
        req("PUT", "/notes/1", hs, "{\"title\":\"x\"}");
        expect_problem(401);
        ck_assert_str_eq(hdr("WWW-Authenticate"), "Bearer");
        req("DELETE", "/notes/1", hs, NULL);
        expect_problem(401);
        ck_assert_str_eq(hdr("WWW-Authenticate"), "Bearer");
    }
    /* Authentication comes first: no 415 for an anonymous request. */
    req("POST", "/notes", H("Content-Type: text/plain"), "x");
    expect_problem(401);
    /* The web server's authorizer variable authenticates. */
    run(&(fcr_test_req){.method = "POST",
                        .path = "/notes",
                        .headers = H(JSON),
                        .params = H("NOTES_USER=dave"),
                        .body = "{\"title\":\"from apache\"}"});
    expect_json(201, "{\"id\":2,\"title\":\"from apache\",\"body\":\"\",\"author\":\"dave\"}");
    req("GET", "/notes", NULL, NULL);
    ck_assert_str_eq(ids(), "1,2");
    stop();
}
END_TEST

static char *big_body(size_t size)
{
    char *b = malloc(size + 1);
    memset(b, 'a', size);
    memcpy(b, "{\"title\":\"t\",\"body\":\"", 21);
    memcpy(b + size - 2, "\"}", 2);
    b[size] = '\0';
    return b;
}

START_TEST(validation_order)
{
    start(_i, NULL, 0);
    create(ALICE, "a", NULL);
    const char *methods[] = {"POST", "PUT"};
    const char *paths[] = {"/notes", "/notes/1"};
    char *big = big_body(1024 * 1024 + 1);
    char *fits = big_body(1024 * 1024);
    for (int m = 0; m < 2; m++) {
        const char *M = methods[m], *P = paths[m];
        /* 415: wrong or missing Content-Type, even with a body over the limit. */
        req(M, P, H(ALICE, "Content-Type: text/plain"), "{\"title\":\"x\"}");
        expect_problem(415);
        req(M, P, H(ALICE), "{\"title\":\"x\"}");
        expect_problem(415);
        req(M, P, H(ALICE, "Content-Type: application/json-seq"), "{\"title\":\"x\"}");
        expect_problem(415);
        req(M, P, H(ALICE, "Content-Type: text/plain"), big);
        expect_problem(415);
        /* 413: over the limit, with and without CONTENT_LENGTH, even when not JSON. */
        req(M, P, H(ALICE, JSON), big);
        expect_problem(413);
        run(&(fcr_test_req){.method = M,
                            .path = P,
                            .headers = H(ALICE, JSON),
                            .body = big,
                            .no_content_length = true});
        expect_problem(413);
        big[1] = '!'; /* no longer JSON */
        req(M, P, H(ALICE, JSON), big);
        expect_problem(413);
        big[1] = '"';
        /* Exactly the limit is fine. */
        req(M, P, H(ALICE, JSON), fits);
        ck_assert_int_eq(res.status, m == 0 ? 201 : 200);
        /* 400: not JSON, with jansson's line and column. */
        req(M, P, H(ALICE, JSON), "{\n  \"title\": tru\n}");
        const char *d = expect_problem(400);
        ck_assert_msg(strstr(d, "line 2") && strstr(d, "column 14"), "detail: %s", d);
        req(M, P, H(ALICE, JSON), "");
        expect_problem(400);
        req(M, P, H(ALICE, JSON), "{\"title\":\"x\"} trailing");
        expect_problem(400);
        /* 422: valid JSON of the wrong shape. */
        const char *shapes[] = {"[]",
                                "\"title\"",
                                "42",
                                "null",
                                "{}",
                                "{\"title\":null}",
                                "{\"title\":5}",
                                "{\"title\":[\"x\"]}",
                                "{\"title\":\"\"}",
                                "{\"title\":\"x\",\"body\":5}",
                                "{\"title\":\"x\",\"body\":null}",
                                "{\"title\":\"x\",\"body\":{}}",
                                "{\"body\":\"no title\"}"};
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            req(M, P, H(ALICE, JSON), shapes[i]);
            ck_assert_msg(res.status == 422, "%s %s: %d", M, shapes[i], res.status);
            expect_problem(422);
        }
    }
    free(big);
    free(fits);
    stop();
}
END_TEST

START_TEST(title_length_in_characters)
{
    start(_i, NULL, 0);
    char title[1000], text[1200];
    /* 200 characters of two bytes each are fine; 201 are not. */
    title[0] = '\0';
    for (int i = 0; i < 200; i++)
        strcat(title, "\xc3\xa9");
    snprintf(text, sizeof text, "{\"title\":\"%s\"}", title);
    req("POST", "/notes", H(ALICE, JSON), text);
    ck_assert_int_eq(res.status, 201);
    strcat(title, "x");
    snprintf(text, sizeof text, "{\"title\":\"%s\"}", title);
    req("POST", "/notes", H(ALICE, JSON), text);
    expect_problem(422);
    memset(title, 'x', 200);
    title[200] = '\0';
    snprintf(text, sizeof text, "{\"title\":\"%s\",\"body\":\"\"}", title);
    req("PUT", "/notes/1", H(ALICE, JSON), text);
    ck_assert_int_eq(res.status, 200);
    strcat(title, "y");
    snprintf(text, sizeof text, "{\"title\":\"%s\"}", title);
    req("PUT", "/notes/1", H(ALICE, JSON), text);
    expect_problem(422);
    stop();
}
END_TEST

START_TEST(max_body_option)
{
    start(_i, NULL, 100);
    char body[200];
    snprintf(body, sizeof body, "{\"title\":\"%080d\"}", 0); /* 92 bytes */
    req("POST", "/notes", H(ALICE, JSON), body);
    ck_assert_int_eq(res.status, 201);
    snprintf(body, sizeof body, "{\"title\":\"%090d\"}", 0); /* 102 bytes */
    req("POST", "/notes", H(ALICE, JSON), body);
    expect_problem(413);
    stop();
}
END_TEST

START_TEST(authorizer_role)
{
    start(_i, NULL, 0);
    const char *writes[] = {"POST", "PUT", "DELETE"};
    for (size_t i = 0; i < 3; i++) {
        run(&(fcr_test_req){
            .role = FCR_AUTHORIZER, .method = writes[i], .path = "/notes/1", .headers = H(ALICE)});
        ck_assert_int_eq(res.status, 200);
        ck_assert_str_eq(hdr("Variable-NOTES_USER"), "alice");
        run(&(fcr_test_req){.role = FCR_AUTHORIZER,
                            .method = writes[i],
                            .path = "/notes",
                            .headers = H("Authorization: Bearer bad")});
        expect_problem(401);
        ck_assert_str_eq(hdr("WWW-Authenticate"), "Bearer");
        ck_assert_ptr_null(hdr("Variable-NOTES_USER"));
        run(&(fcr_test_req){.role = FCR_AUTHORIZER, .method = writes[i], .path = "/notes"});
        expect_problem(401);
        /* A NOTES_USER param does not count in the authorizer role. */
        run(&(fcr_test_req){.role = FCR_AUTHORIZER,
                            .method = writes[i],
                            .path = "/notes",
                            .params = H("NOTES_USER=mallory")});
        expect_problem(401);
    }
    const char *reads[] = {"GET", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < 3; i++) {
        run(&(fcr_test_req){.role = FCR_AUTHORIZER, .method = reads[i], .path = "/notes"});
        ck_assert_int_eq(res.status, 200);
        ck_assert_ptr_null(hdr("Variable-NOTES_USER"));
        run(&(fcr_test_req){
            .role = FCR_AUTHORIZER, .method = reads[i], .path = "/whoami", .headers = H(BOB)});
        ck_assert_int_eq(res.status, 200);
        ck_assert_str_eq(hdr("Variable-NOTES_USER"), "bob");
    }
    stop();
}
END_TEST

/* Over the socket only: a CONTENT_LENGTH over the limit is answered before any STDIN. */
START_TEST(too_big_refused_before_reading)
{
    start(SOCKET, NULL, 0);
    fcl_conn *c = fcl_connect(addr, 0);
    ck_assert_ptr_nonnull(c);
    c->timeout = 5;
    fcl_buf nv, b;
    fcl_buf_init(&nv);
    fcl_buf_init(&b);
    fcl_nv_adds(&nv, "REQUEST_METHOD", "POST");
    fcl_nv_adds(&nv, "SCRIPT_NAME", "/notes");
    fcl_nv_adds(&nv, "CONTENT_TYPE", "application/json");
    fcl_nv_adds(&nv, "CONTENT_LENGTH", "1048577");
    fcl_nv_adds(&nv, "HTTP_AUTHORIZATION", "Bearer s3cret");
    fcl_put_begin(&b, 1, FCR_RESPONDER, 0);
    fcl_put_stream(&b, FCGI_PARAMS, 1, nv.data, nv.len, 0, FCL_PAD8, true);
    ck_assert_int_eq(fcl_send_buf(c, &b), 0);
    fcl_response r;
    fcl_response_init(&r, 1);
    ck_assert_int_eq(fcl_await(c, &r, 1), 0);
    fcl_cgi cgi;
    ck_assert_int_eq(fcl_cgi_parse(&r, &cgi), 0);
    char v[64];
    ck_assert(fcl_cgi_header(&cgi, "Status", v, sizeof v));
    ck_assert_str_eq(v, "413 Content Too Large");
    ck_assert(fcl_cgi_header(&cgi, "Content-Type", v, sizeof v));
    ck_assert_str_eq(v, "application/problem+json");
    fcl_cgi_free(&cgi);
    fcl_response_free(&r);
    fcl_buf_free(&nv);
    fcl_buf_free(&b);
    fcl_close(c);
    stop();
}
END_TEST

/* ---- The store ------------------------------------------------------------------------ */

/* With --workers 4 every worker sees what one of them wrote: one POST, then 16 GETs, each on a
 * connection of its own. */
static const char *refused(const char *url, const char *const *extra);

/* The REST extras: an entity-tag per note (304 for a GET that names it), pagination links,
 * validation failures that point at the member, and --cors-origin. */
START_TEST(etags_links_and_pointers)
{
    start(_i, "/app", 0);
    for (int i = 0; i < 5; i++)
        create(ALICE, "t", NULL);
    req("GET", "/app/notes/2", NULL, NULL);
    ck_assert_int_eq(res.status, 200);
    char tag[64];
    ck_assert_ptr_nonnull(hdr("ETag"));
    snprintf(tag, sizeof tag, "%s", hdr("ETag"));
    ck_assert_str_eq(tag, "\"2-1\"");
    char inm[96];
    snprintf(inm, sizeof inm, "If-None-Match: %s", tag);
    req("GET", "/app/notes/2", H(inm), NULL);
    ck_assert_int_eq(res.status, 304);
    ck_assert_uint_eq(res.body_len, 0);
    ck_assert_str_eq(hdr("ETag"), tag);
    /* Another note, or this one changed, has another tag. */
    req("GET", "/app/notes/3", H(inm), NULL);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_ne(hdr("ETag"), tag);
    req("PUT", "/app/notes/2", H(ALICE, JSON), "{\"title\":\"changed\"}");
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_ne(hdr("ETag"), tag);
    req("GET", "/app/notes/2", H(inm), NULL);
    ck_assert_int_eq(res.status, 200);
    /* If-Match: the version read, or 412 for a stale one (a lost update refused). */
    char fresh[64], stale[96], now_im[96];
    snprintf(fresh, sizeof fresh, "%s", hdr("ETag"));
    snprintf(stale, sizeof stale, "If-Match: %s", tag);
    snprintf(now_im, sizeof now_im, "If-Match: %s", fresh);
    req("PUT", "/app/notes/2", H(ALICE, JSON, stale), "{\"title\":\"lost\"}");
    expect_problem(412);
    ck_assert_str_eq(hdr("ETag"), fresh);
    req("DELETE", "/app/notes/2", H(ALICE, stale), NULL);
    expect_problem(412);
    req("PUT", "/app/notes/2", H(ALICE, JSON, now_im), "{\"title\":\"kept\"}");
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_ne(hdr("ETag"), fresh);
    req("PUT", "/app/notes/2", H(ALICE, JSON, now_im), "{\"title\":\"again\"}");
    expect_problem(412); /* the same version is stale now */
    req("GET", "/app/notes/2", NULL, NULL);
    ck_assert_ptr_nonnull(strstr(res.body, "\"kept\""));
    req("PUT", "/app/notes/2", H(ALICE, JSON, "If-Match: W/\"2-1\""), "{\"title\":\"w\"}");
    expect_problem(412); /* weak tags never match If-Match */
    req("PUT", "/app/notes/2", H(ALICE, JSON, "If-Match: \"3-1\""), "{\"title\":\"w\"}");
    expect_problem(412); /* another note's tag */
    req("PUT", "/app/notes/2", H(ALICE, JSON, "If-Match: *"), "{\"title\":\"any\"}");
    ck_assert_int_eq(res.status, 200);
    req("PUT", "/app/notes/99", H(ALICE, JSON, "If-Match: *"), "{\"title\":\"any\"}");
    expect_problem(412);
    req("PUT", "/app/notes/99", H(ALICE, JSON), "{\"title\":\"any\"}");
    expect_problem(404);
    req("GET", "/app/notes/2", NULL, NULL);
    snprintf(now_im, sizeof now_im, "If-Match: \"x\", %s", hdr("ETag"));
    req("DELETE", "/app/notes/2", H(ALICE, now_im), NULL);
    ck_assert_int_eq(res.status, 204);
    create(ALICE, "t", NULL); /* 5 notes again, for the pages below */
    /* Links: next while the page is full, prev past the first. */
    req("GET", "/app/notes?limit=2", NULL, NULL);
    ck_assert_str_eq(hdr("Link"), "</app/notes?limit=2&offset=2>; rel=\"next\"");
    req("GET", "/app/notes?limit=2&offset=2", NULL, NULL);
    ck_assert_str_eq(hdr("Link"), "</app/notes?limit=2&offset=4>; rel=\"next\", "
                                  "</app/notes?limit=2&offset=0>; rel=\"prev\"");
    req("GET", "/app/notes?limit=2&offset=4", NULL, NULL);
    ck_assert_str_eq(hdr("Link"), "</app/notes?limit=2&offset=2>; rel=\"prev\"");
    req("GET", "/app/notes", NULL, NULL);
    ck_assert_ptr_null(hdr("Link"));
    /* A body that fails: the pointer names the member. */
    req("POST", "/app/notes", H(ALICE, JSON), "{\"title\":\"\",\"body\":7}");
    expect_problem(422);
    json_t *j = json_body();
    json_t *errs = json_object_get(j, "errors");
    ck_assert_uint_eq(json_array_size(errs), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errs, 0), "pointer")),
                     "/title");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errs, 1), "pointer")),
                     "/body");
    json_decref(j);
    stop();
}
END_TEST

START_TEST(cors_origins_option)
{
    /* A bad origin stops the program at start. */
    mode = SOCKET;
    make_dir();
    char url[200];
    snprintf(url, sizeof url, "sqlite:%s/notes.db", dir);
    const char *e = refused(url, H("--cors-origin", "not an origin"));
    ck_assert_msg(strstr(e, "is not an origin"), "stderr: %s", e);
    remove_dir();
    setenv("NOTES_CORS_ORIGINS", "https://a.example, https://*.b.example", 1);
    start(SOCKET, NULL, 0);
    unsetenv("NOTES_CORS_ORIGINS");
    req("OPTIONS", "/notes",
        H("Origin: https://x.b.example", "Access-Control-Request-Method: POST",
          "Access-Control-Request-Headers: authorization,content-type"),
        NULL);
    ck_assert_int_eq(res.status, 204);
    ck_assert_str_eq(hdr("Access-Control-Allow-Origin"), "https://x.b.example");
    req("GET", "/notes", H("Origin: https://a.example"), NULL);
    ck_assert_str_eq(hdr("Access-Control-Allow-Origin"), "https://a.example");
    ck_assert_ptr_nonnull(strstr(hdr("Access-Control-Expose-Headers"), "ETag"));
    req("GET", "/notes", H("Origin: https://c.example"), NULL);
    ck_assert_ptr_null(hdr("Access-Control-Allow-Origin"));
    ck_assert_str_eq(hdr("Vary"), "Origin");
    stop();
}
END_TEST

START_TEST(workers_share_the_store)
{
    start_workers(_i, NULL, 0, 4);
    ck_assert_int_eq(create(ALICE, "shared", "by every worker"), 1);
    for (int i = 0; i < 16; i++) {
        req("GET", "/notes", NULL, NULL);
        expect_json(200, "[{\"id\":1,\"title\":\"shared\",\"body\":\"by every worker\","
                         "\"author\":\"alice\"}]");
        req("GET", "/notes/1", NULL, NULL);
        ck_assert_int_eq(res.status, 200);
    }
    /* Eight writers that read version 1 send their PUTs at once, over eight connections the
     * workers share out: the store lets exactly one of them write. */
    enum { W = 8 };
    fcl_conn *c[W];
    for (int i = 0; i < W; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"title\":\"writer %d\"}", i);
        c[i] = socket_send(&(fcr_test_req){.method = "PUT",
                                           .path = "/notes/1",
                                           .headers = H(ALICE, JSON, "If-Match: \"1-1\""),
                                           .body = body});
    }
    int ok = 0, refused412 = 0;
    for (int i = 0; i < W; i++) {
        socket_receive(c[i]);
        ok += res.status == 200;
        refused412 += res.status == 412;
    }
    ck_assert_msg(ok == 1 && refused412 == W - 1, "%d written, %d refused", ok, refused412);
    req("GET", "/notes/1", NULL, NULL);
    ck_assert_str_eq(hdr("ETag"), "\"1-2\"");
    stop();
}
END_TEST

/* SIGTERM, start again on the same file: the notes are there, and a deleted note's id is not
 * given again. */
START_TEST(restart_keeps_notes_and_ids)
{
    start(_i, NULL, 0);
    ck_assert_int_eq(create(ALICE, "one", "1"), 1);
    ck_assert_int_eq(create(BOB, "two", "2"), 2);
    ck_assert_int_eq(create(ALICE, "three", "3"), 3);
    req("DELETE", "/notes/3", H(ALICE), NULL);
    ck_assert_int_eq(res.status, 204);
    halt();
    launch(NULL);
    req("GET", "/notes", NULL, NULL);
    expect_json(200, "[{\"id\":1,\"title\":\"one\",\"body\":\"1\",\"author\":\"alice\"},"
                     "{\"id\":2,\"title\":\"two\",\"body\":\"2\",\"author\":\"bob\"}]");
    ck_assert_int_eq(create(BOB, "four", NULL), 4);
    req("DELETE", "/notes/4", H(BOB), NULL);
    ck_assert_int_eq(res.status, 204);
    halt();
    launch(NULL);
    ck_assert_int_eq(create(BOB, "five", NULL), 5);
    req("GET", "/notes", NULL, NULL);
    ck_assert_str_eq(ids(), "1,2,5");
    stop();
}
END_TEST

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A connection of the test's own to the store's file, holding its write lock. */
static sqlite3 *lock_store(void)
{
    sqlite3 *locker = NULL;
    ck_assert_int_eq(sqlite3_open(db + strlen("sqlite:"), &locker), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(locker, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    return locker;
}

static void unlock_store(sqlite3 *locker)
{
    ck_assert_int_eq(sqlite3_exec(locker, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_close(locker), SQLITE_OK);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One worker: while another connection holds the file's write lock, a POST waits on a pool
 * thread, and the loop goes on answering GET /health (and reads, which WAL lets through);
 * once the lock is gone the POST completes. */
START_TEST(loop_answers_while_the_store_is_locked)
{
    db_timeout = "30";
    start(SOCKET, NULL, 0);
    sqlite3 *locker = lock_store();
    fcl_conn *post = socket_send(&(fcr_test_req){.method = "POST",
                                                 .path = "/notes",
                                                 .headers = H(ALICE, JSON),
                                                 .body = "{\"title\":\"waited\"}"});
    post->timeout = 30;
    enum { N = 20 };
    double ms[N];
    for (int i = 0; i < N; i++) {
        double t0 = now();
        req("GET", "/health", NULL, NULL);
        ms[i] = (now() - t0) * 1000.0;
        ck_assert_int_eq(res.status, 200);
        /* Generous: the point is that it answers while the lock is held. */
        ck_assert_msg(ms[i] < 1000.0, "GET /health took %.1f ms while the store was locked", ms[i]);
        usleep(5000);
    }
    req("GET", "/notes", NULL, NULL);
    expect_json(200, "[]");
    /* The POST is still waiting for the lock. */
    struct pollfd pfd = {.fd = post->fd, .events = POLLIN};
    ck_assert_int_eq(poll(&pfd, 1, 0), 0);
    qsort(ms, N, sizeof ms[0], cmp_double);
    printf("GET /health while SQLite was locked (%d requests): min %.3f ms, median %.3f ms, "
           "max %.3f ms\n",
           N, ms[0], ms[N / 2], ms[N - 1]);
    double t0 = now();
    unlock_store(locker);
    socket_receive(post);
    printf("POST /notes answered %.1f ms after the lock was released\n", (now() - t0) * 1000.0);
    expect_json(201, "{\"id\":1,\"title\":\"waited\",\"body\":\"\",\"author\":\"alice\"}");
    req("GET", "/notes", NULL, NULL);
    ck_assert_str_eq(ids(), "1");
    stop();
}
END_TEST

/* A lock held past --db-timeout: 503 problem+json with Retry-After, and the service goes on. */
START_TEST(locked_past_the_timeout_is_503)
{
    db_timeout = "0.2";
    start(_i, NULL, 0);
    sqlite3 *locker = lock_store();
    req("POST", "/notes", H(ALICE, JSON), "{\"title\":\"x\"}");
    expect_problem(503);
    ck_assert_str_eq(hdr("Retry-After"), "1");
    req("DELETE", "/notes/1", H(ALICE), NULL);
    expect_problem(503);
    unlock_store(locker);
    ck_assert_int_eq(create(ALICE, "after", NULL), 1);
    stop();
}
END_TEST

/* The store's file gone under the running service: 500 problem+json, not a crash. */
START_TEST(store_failure_is_500)
{
    start(_i, NULL, 0);
    char path[160];
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/notes.db%s", dir, suffixes[i]);
        unlink(path);
    }
    req("GET", "/notes", NULL, NULL);
    expect_problem(500);
    req("POST", "/notes", H(ALICE, JSON), "{\"title\":\"x\"}");
    expect_problem(500);
    req("GET", "/health", NULL, NULL);
    ck_assert_int_eq(res.status, 200);
    stop();
}
END_TEST

/* Runs the program with --db `url` (and `extra`), expecting it to refuse at start: a non-zero
 * exit within 10 s. Returns what it wrote to stderr. */
static const char *refused(const char *url, const char *const *extra)
{
    static char text[4096];
    snprintf(db, sizeof db, "%s", url);
    char log[160];
    snprintf(log, sizeof log, "%s/stderr", dir);
    pid_t pid = spawn(extra, log);
    int st = 0;
    pid_t w = 0;
    for (int i = 0; i < 1000 && (w = waitpid(pid, &st, WNOHANG)) == 0; i++)
        usleep(10000);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    ck_assert_msg(w == pid, "notes --db %s did not stop", url);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "notes --db %s: exit status %d", url, st);
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

START_TEST(unusable_stores_refused_at_start)
{
    mode = SOCKET;
    make_dir();
    const char *e;
#ifndef NOTES_HAVE_PG
    e = refused("postgresql://notes:pa55word@db.example/notes", NULL);
    ck_assert_msg(strstr(e, "PostgreSQL") && !strstr(e, "pa55word"), "stderr: %s", e);
    e = refused("postgres:///notes?host=/run/postgresql", NULL);
    ck_assert_msg(strstr(e, "PostgreSQL"), "stderr: %s", e);
#endif
    e = refused("mysql://localhost/notes", NULL);
    ck_assert_msg(strstr(e, "unknown kind of store"), "stderr: %s", e);
    e = refused("sqlite:", NULL);
    ck_assert_msg(strstr(e, "needs a path"), "stderr: %s", e);
    char url[200];
    snprintf(url, sizeof url, "sqlite:%s/no/such/dir/notes.db", dir);
    e = refused(url, NULL);
    ck_assert_msg(strstr(e, "cannot open"), "stderr: %s", e);
    e = refused(url, H("--workers", "2"));
    ck_assert_msg(strstr(e, "cannot open"), "stderr: %s", e);
    /* A schema newer than the program's. */
    snprintf(url, sizeof url, "%s/newer.db", dir);
    sqlite3 *other = NULL;
    ck_assert_int_eq(sqlite3_open(url, &other), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(other, "PRAGMA user_version = 7", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    snprintf(url, sizeof url, "sqlite:%s/newer.db", dir);
    e = refused(url, NULL);
    ck_assert_msg(strstr(e, "schema version 7"), "stderr: %s", e);
    remove_dir();
}
END_TEST

/* A store of schema version 1 (no versions) is brought to the current one at start: its notes
 * keep their ids and start at version 1. */
START_TEST(schema_1_is_migrated)
{
    mode = SOCKET;
    make_dir();
    char path[200];
    snprintf(path, sizeof path, "%s/notes.db", dir);
    sqlite3 *old = NULL;
    ck_assert_int_eq(sqlite3_open(path, &old), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(old,
                                  "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                  " title TEXT NOT NULL, body TEXT NOT NULL, author TEXT);"
                                  "INSERT INTO notes (title, body, author) VALUES ('a', 'b', 'c');"
                                  "INSERT INTO notes (title, body, author) VALUES ('d', 'e', 'f');"
                                  "DELETE FROM notes WHERE id = 2;"
                                  "PRAGMA user_version = 1;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(old);
    launch(NULL);
    req("GET", "/notes/1", NULL, NULL);
    expect_json(200, "{\"id\":1,\"title\":\"a\",\"body\":\"b\",\"author\":\"c\"}");
    ck_assert_str_eq(hdr("ETag"), "\"1-1\"");
    ck_assert_int_eq(create(ALICE, "new", NULL), 3);
    stop();
}
END_TEST

#ifdef NOTES_HAVE_PG
/* ---- The store on PostgreSQL ---------------------------------------------------------- */

/* The ids of the array in the body, up to `max`; returns how many. */
static int id_list(long *out, int max)
{
    json_t *j = json_body();
    ck_assert(json_is_array(j));
    int n = 0;
    for (size_t i = 0; i < json_array_size(j) && n < max; i++)
        out[n++] = (long)json_integer_value(json_object_get(json_array_get(j, i), "id"));
    json_decref(j);
    return n;
}

/* PostgreSQL stopped under load (loop index 0: killed, as in a crash; 1: a fast shutdown): the
 * requests in flight answer, every later one answers 503 problem+json with Retry-After within
 * the query timeout while GET /health stays 200; PostgreSQL started again, the same program
 * serves again, and every write answered 201 is there. */
START_TEST(pg_down_is_503_then_recovers)
{
    const double timeout = 3;
    db_timeout = "3";
    start(PG, NULL, 0);
    ck_assert_int_eq(create(ALICE, "before", NULL), 1);
    enum { INFLIGHT = 8, DOWN = 21 };
    fcl_conn *busy[INFLIGHT];
    for (int i = 0; i < INFLIGHT; i++) {
        busy[i] = i % 2 ? socket_send(&(fcr_test_req){.path = "/notes"})
                        : socket_send(&(fcr_test_req){.method = "POST",
                                                      .path = "/notes",
                                                      .headers = H(ALICE, JSON),
                                                      .body = "{\"title\":\"in flight\"}"});
    }
    pg_stopped = true;
    ck_assert_int_eq(pg_server(_i == 0 ? "kill" : "stop"), 0);
    long written[INFLIGHT];
    int nwritten = 0;
    for (int i = 0; i < INFLIGHT; i++) {
        socket_receive(busy[i]);
        ck_assert_msg(res.status == 200 || res.status == 201 || res.status == 503,
                      "in flight: %d %s", res.status, res.body);
        if (res.status == 503)
            expect_problem(503);
        if (res.status == 201) {
            json_t *j = json_body();
            written[nwritten++] = (long)json_integer_value(json_object_get(j, "id"));
            json_decref(j);
        }
    }
    double ms[DOWN];
    for (int i = 0; i < DOWN; i++) {
        double t0 = now();
        if (i % 3 == 0)
            req("GET", "/notes/1", NULL, NULL);
        else if (i % 3 == 1)
            req("POST", "/notes", H(ALICE, JSON), "{\"title\":\"down\"}");
        else
            req("GET", "/notes", NULL, NULL);
        ms[i] = (now() - t0) * 1000.0;
        expect_problem(503);
        ck_assert_str_eq(hdr("Retry-After"), "1");
        /* Bounded by the query timeout (plus a loaded machine's slack), never a hang. */
        ck_assert_msg(ms[i] < (timeout + 5) * 1000.0, "a 503 took %.0f ms", ms[i]);
        req("GET", "/health", NULL, NULL);
        ck_assert_int_eq(res.status, 200);
    }
    qsort(ms, DOWN, sizeof ms[0], cmp_double);
    printf("PostgreSQL %s: %d requests answered 503 in min %.1f ms, median %.1f ms, max %.1f ms "
           "(query timeout %.0f s)\n",
           _i == 0 ? "killed" : "stopped", DOWN, ms[0], ms[DOWN / 2], ms[DOWN - 1], timeout);
    ck_assert_int_eq(pg_server("start"), 0);
    pg_stopped = false;
    double t0 = now();
    for (;;) {
        req("GET", "/notes/1", NULL, NULL);
        if (res.status == 200)
            break;
        expect_problem(503);
        ck_assert_msg(now() - t0 < 30, "not recovered 30 s after PostgreSQL started");
        usleep(20000);
    }
    printf("PostgreSQL %s: the service answered again %.0f ms after the server was up\n",
           _i == 0 ? "killed" : "stopped", (now() - t0) * 1000.0);
    expect_json(200, "{\"id\":1,\"title\":\"before\",\"body\":\"\",\"author\":\"alice\"}");
    long all[64];
    req("GET", "/notes", NULL, NULL);
    int n = id_list(all, 64);
    ck_assert_int_ge(n, 1);
    for (int i = 0; i < nwritten; i++) {
        bool found = false;
        for (int k = 0; k < n; k++)
            found = found || all[k] == written[i];
        ck_assert_msg(found, "note %ld was answered 201 and is gone", written[i]);
    }
    long next = create(BOB, "after", NULL);
    ck_assert_msg(next > all[n - 1], "id %ld after %ld", next, all[n - 1]);
    stop();
}
END_TEST

/* One worker: while another session holds LOCK TABLE notes IN ACCESS EXCLUSIVE MODE for 3 s, a
 * POST and a GET of a note wait for the server (and a third request whose client went away),
 * and the loop goes on answering GET /health; once the lock is gone both complete, and the
 * program stops cleanly. */
START_TEST(pg_loop_answers_while_locked)
{
    db_timeout = "30";
    start(PG, NULL, 0);
    ck_assert_int_eq(create(ALICE, "one", NULL), 1);
    PGconn *locker = pg_connect(pg_name);
    pg_exec(locker, "BEGIN");
    pg_exec(locker, "LOCK TABLE notes IN ACCESS EXCLUSIVE MODE");
    double locked = now();
    fcl_conn *post = socket_send(&(fcr_test_req){.method = "POST",
                                                 .path = "/notes",
                                                 .headers = H(ALICE, JSON),
                                                 .body = "{\"title\":\"waited\"}"});
    fcl_conn *get = socket_send(&(fcr_test_req){.path = "/notes/1"});
    post->timeout = get->timeout = 30;
    /* And a client that goes away while its request waits for the server. */
    fcl_close(socket_send(&(fcr_test_req){.path = "/notes"}));
    enum { MAX = 1000 };
    static double ms[MAX];
    int n = 0;
    while (now() - locked < 3.0 && n < MAX) {
        double t0 = now();
        req("GET", "/health", NULL, NULL);
        ms[n] = (now() - t0) * 1000.0;
        expect_json(200, "{\"status\":\"ok\"}");
        /* Generous: the point is that it answers while the table is locked. */
        ck_assert_msg(ms[n] < 1000.0, "GET /health took %.1f ms while notes was locked", ms[n]);
        n++;
        usleep(10000);
    }
    ck_assert_int_gt(n, 10);
    /* Both still wait for the lock. */
    struct pollfd pfd[2] = {{.fd = post->fd, .events = POLLIN}, {.fd = get->fd, .events = POLLIN}};
    ck_assert_int_eq(poll(pfd, 2, 0), 0);
    qsort(ms, (size_t)n, sizeof ms[0], cmp_double);
    printf("GET /health while PostgreSQL held notes locked for 3 s (%d requests): min %.3f ms, "
           "median %.3f ms, max %.3f ms\n",
           n, ms[0], ms[n / 2], ms[n - 1]);
    double t0 = now();
    pg_exec(locker, "COMMIT");
    PQfinish(locker);
    socket_receive(post);
    expect_json(201, "{\"id\":2,\"title\":\"waited\",\"body\":\"\",\"author\":\"alice\"}");
    socket_receive(get);
    expect_json(200, "{\"id\":1,\"title\":\"one\",\"body\":\"\",\"author\":\"alice\"}");
    printf("the waiting POST and GET answered %.1f ms after the lock was released\n",
           (now() - t0) * 1000.0);
    stop();
}
END_TEST

/* A database that does not answer (the table locked by another session) past --db-timeout: the
 * query is cancelled on the server and the request answered 503 problem+json with Retry-After
 * within the timeout; once the lock is gone the service answers again. */
START_TEST(pg_silent_past_the_timeout_is_503)
{
    const double timeout = 1;
    db_timeout = "1";
    start(PG, NULL, 0);
    ck_assert_int_eq(create(ALICE, "one", NULL), 1);
    PGconn *locker = pg_connect(pg_name);
    pg_exec(locker, "BEGIN");
    pg_exec(locker, "LOCK TABLE notes IN ACCESS EXCLUSIVE MODE");
    for (int i = 0; i < 3; i++) {
        double t0 = now();
        req("GET", "/notes/1", NULL, NULL);
        double ms = (now() - t0) * 1000.0;
        expect_problem(503);
        ck_assert_str_eq(hdr("Retry-After"), "1");
        printf("a query on a locked table answered 503 after %.0f ms (query timeout %.0f s)\n", ms,
               timeout);
        ck_assert_msg(ms >= timeout * 1000.0 * 0.9 && ms < (timeout + 5) * 1000.0,
                      "503 after %.0f ms", ms);
    }
    pg_exec(locker, "COMMIT");
    PQfinish(locker);
    req("GET", "/notes/1", NULL, NULL);
    expect_json(200, "{\"id\":1,\"title\":\"one\",\"body\":\"\",\"author\":\"alice\"}");
    ck_assert_int_eq(create(BOB, "two", NULL), 2);
    stop();
}
END_TEST

/* A query the server refuses (here: the table dropped under the program) is 500, not 503. */
START_TEST(pg_error_is_500)
{
    start(PG, NULL, 0);
    ck_assert_int_eq(create(ALICE, "one", NULL), 1);
    PGconn *c = pg_connect(pg_name);
    pg_exec(c, "DROP TABLE notes");
    PQfinish(c);
    req("GET", "/notes", NULL, NULL);
    expect_problem(500);
    req("POST", "/notes", H(ALICE, JSON), "{\"title\":\"x\"}");
    expect_problem(500);
    req("GET", "/health", NULL, NULL);
    ck_assert_int_eq(res.status, 200);
    stop();
}
END_TEST

/* A database that cannot be reached, or whose schema is newer, stops the program at start with
 * the reason (and never the URI's password). */
START_TEST(pg_unusable_refused_at_start)
{
    mode = SOCKET;
    make_dir();
    char url[256];
    snprintf(url, sizeof url, "postgresql://notes:pa55word@/notes?host=%s/nowhere", dir);
    const char *e = refused(url, H("--db-timeout", "1"));
    ck_assert_msg(strstr(e, "cannot reach the PostgreSQL database") && !strstr(e, "pa55word"),
                  "stderr: %s", e);
    e = refused(url, H("--db-timeout", "1", "--workers", "2"));
    ck_assert_msg(strstr(e, "cannot reach the PostgreSQL database"), "stderr: %s", e);
    snprintf(url, sizeof url, "postgresql:///no_such_db?host=%s&user=postgres", pg_dir);
    e = refused(url, H("--db-timeout", "1"));
    ck_assert_msg(strstr(e, "no_such_db") && strstr(e, "does not exist"), "stderr: %s", e);
    e = refused("postgresql://[::1", NULL);
    ck_assert_msg(strstr(e, "not a PostgreSQL URI"), "stderr: %s", e);
    pg_fresh_db();
    PGconn *c = pg_connect(pg_name);
    pg_exec(c, "CREATE TABLE notes_schema (version integer NOT NULL)");
    pg_exec(c, "INSERT INTO notes_schema VALUES (7)");
    PQfinish(c);
    snprintf(url, sizeof url, "%s", db);
    e = refused(url, NULL);
    ck_assert_msg(strstr(e, "schema version 7"), "stderr: %s", e);
    remove_dir();
}
END_TEST
#endif

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
#ifdef NOTES_HAVE_PG
    snprintf(pg_dir, sizeof pg_dir, "/tmp/fcr-notes-pg-XXXXXX");
    if (!mkdtemp(pg_dir))
        return EXIT_FAILURE;
    rmdir(pg_dir); /* the script makes it, owned by the server's user */
    if (pg_server("init") < 0 || pg_server("start") < 0) {
        pg_server("destroy");
        return EXIT_FAILURE;
    }
#endif
    Suite *s = suite_create("notes");
    TCase *tc = tcase_create("contract");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 60);
    /* Loop index 0: in-process builder; 1: the program over a unix socket. */
    tcase_add_loop_test(tc, get_health, 0, RUNS);
    tcase_add_loop_test(tc, get_whoami, 0, RUNS);
    tcase_add_loop_test(tc, list_in_id_order, 0, RUNS);
    tcase_add_loop_test(tc, list_limit_offset, 0, RUNS);
    tcase_add_loop_test(tc, list_pages_hold_at_most_1000_notes, 0, RUNS);
    tcase_add_loop_test(tc, post_creates, 0, RUNS);
    tcase_add_loop_test(tc, location_keeps_script_name_prefix, 0, RUNS);
    tcase_add_loop_test(tc, get_one, 0, RUNS);
    tcase_add_loop_test(tc, put_replaces, 0, RUNS);
    tcase_add_loop_test(tc, delete_removes, 0, RUNS);
    tcase_add_loop_test(tc, head_on_get_routes, 0, RUNS);
    tcase_add_loop_test(tc, options_lists_methods, 0, RUNS);
    tcase_add_loop_test(tc, other_methods_405, 0, RUNS);
    tcase_add_loop_test(tc, other_paths_404, 0, RUNS);
    tcase_add_loop_test(tc, writes_need_a_user, 0, RUNS);
    tcase_add_loop_test(tc, validation_order, 0, RUNS);
    tcase_add_loop_test(tc, title_length_in_characters, 0, RUNS);
    tcase_add_loop_test(tc, max_body_option, 0, RUNS);
    tcase_add_loop_test(tc, authorizer_role, 0, RUNS);
    tcase_add_test(tc, too_big_refused_before_reading);
    tcase_add_loop_test(tc, etags_links_and_pointers, 0, RUNS);
    tcase_add_test(tc, cors_origins_option);
    suite_add_tcase(s, tc);
    TCase *st = tcase_create("store");
    tcase_add_checked_fixture(st, NULL, teardown);
    tcase_set_timeout(st, 120);
    tcase_add_loop_test(st, workers_share_the_store, SOCKET, RUNS);
    tcase_add_loop_test(st, restart_keeps_notes_and_ids, SOCKET, RUNS);
    tcase_add_test(st, loop_answers_while_the_store_is_locked);
    tcase_add_loop_test(st, locked_past_the_timeout_is_503, 0, 2);
    tcase_add_loop_test(st, store_failure_is_500, 0, 2);
    tcase_add_test(st, unusable_stores_refused_at_start);
    tcase_add_test(st, schema_1_is_migrated);
    suite_add_tcase(s, st);
#ifdef NOTES_HAVE_PG
    TCase *pg = tcase_create("postgresql");
    tcase_add_checked_fixture(pg, NULL, teardown);
    tcase_set_timeout(pg, 120);
    tcase_add_loop_test(pg, pg_down_is_503_then_recovers, 0, 2);
    tcase_add_test(pg, pg_loop_answers_while_locked);
    tcase_add_test(pg, pg_silent_past_the_timeout_is_503);
    tcase_add_test(pg, pg_error_is_500);
    tcase_add_test(pg, pg_unusable_refused_at_start);
    suite_add_tcase(s, pg);
#endif
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
#ifdef NOTES_HAVE_PG
    pg_server("destroy");
#endif
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
