/**
 * @file fcrest/app.h
 * @brief fcrest app: the framework applications are written against.
 *
 * An app holds routes (method set + PCRE2 pattern -> handler), middleware and configuration.
 * For each FastCGI request it computes the routing path, matches a route, runs the
 * before-middleware (authorizers among them), the handler, then the after-middleware, and
 * writes the response (status with reason phrase, headers, Content-Length, body) as STDOUT.
 *
 * Request and response handles are valid from the moment a callback receives them until the
 * response is sent (after fcr_res_send() or the handler's return). Every string the request
 * functions return lives in the request's arena and is freed with it. All functions run on
 * the loop's thread; none blocks. Blocking work goes to a pool thread with fcr_defer().
 *
 * JSON ownership follows jansson: a function whose name ends in `_new` takes over the
 * caller's reference, even when it fails; the others borrow.
 *
 * @par Requests
 * The framework keeps its request context apart from the core's userdata slot, which stays the
 * application's (fcr_req_set_userdata()); per-request memory also comes from fcr_req_alloc()
 * and request variables from fcr_req_set_var(). The request functions of this header return
 * NULL (or FCR_EINVAL) for a request that is not served by an app, unless they say otherwise.
 *
 * @par Responses
 * A response starts as status 200 with no headers and an empty body. At sending the framework
 * adds `Status: CODE REASON`, Content-Type application/octet-stream for a non-empty body
 * without one, and Content-Length with the body length (except for 204 and 304, which carry
 * no body). A HEAD answer carries no body but keeps the Content-Length of the GET answer.
 * The response functions accept only a response handle given to a callback of the app.
 */
#ifndef FCREST_APP_H
#define FCREST_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <fcrest/core.h>
#include <fcrest/error.h>
#include <fcrest/router.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;

/**
 * An application: routes, middleware, mounted sub-apps and configuration. Opaque; created
 * with fcr_app_new(), owned by the caller (or, once mounted, by the parent app) and freed with
 * fcr_app_free().
 */
typedef struct fcr_app fcr_app;
/**
 * A route of an app, returned by fcr_app_route() to attach middleware, an authorizer, a body
 * limit or a media type. Opaque; owned by the app and freed with it.
 */
typedef struct fcr_route fcr_route;
/**
 * The response being built for a request. Opaque; owned by the framework, valid from the
 * moment a callback receives it until the response is sent.
 */
typedef struct fcr_res fcr_res;
/**
 * An authorizer's result: the variables and user it sets (fcr_auth_set_var(),
 * fcr_auth_set_user()). Opaque; owned by the framework, valid during the authorizer call (after
 * FCR_AUTH_ASYNC, until the done of its fcr_defer() returns).
 */
typedef struct fcr_auth fcr_auth;

/**
 * What a handler (fcr_handler) returns. Each kind of callback has its own verdict type, so
 * that a compiler warns (gcc: -Wenum-conversion, in -Wextra) when a callback declared with
 * its verdict type returns a constant of another kind. Every verdict type also takes any
 * negative fcr_err code held in an `int` (such as the result of a failed call): the request
 * then fails with 500 problem+json and the code's name is logged. The error verdicts
 * (FCR_HANDLER_ERROR, FCR_BEFORE_ERROR, FCR_AUTH_ERROR) are a value of their own, apart from
 * every fcr_err code, so the log says "failed" without naming a cause the callback did not
 * give.
 */
typedef enum fcr_handler_result {
    FCR_HANDLER_ERROR = -1000, /**< failure: answer 500 problem+json */
    FCR_DONE = 0,              /**< `res` is the answer: the framework sends it */
    FCR_ASYNC = 1,             /**< the response is sent later: by the done of fcr_defer(), or
                                    with fcr_res_send() */
} fcr_handler_result;

/** What a before-middleware (fcr_before_mw) returns; see fcr_handler_result for errors. */
typedef enum fcr_before_result {
    FCR_BEFORE_ERROR = -1000, /**< failure: answer 500 problem+json */
    FCR_CONTINUE = 0,         /**< go on with the request */
    FCR_STOP = 1,             /**< `res` is the answer: skip the handler */
    FCR_BEFORE_ASYNC = 2,     /**< the verdict comes from the done of fcr_defer() */
} fcr_before_result;

/** What an authorizer (fcr_authorizer) returns; see fcr_handler_result for errors. */
typedef enum fcr_auth_result {
    FCR_AUTH_ERROR = -1000, /**< failure: answer 500 problem+json */
    FCR_ALLOW = 0,          /**< let the request through */
    FCR_DENY = 1,           /**< `res` is the denial */
    FCR_AUTH_ASYNC = 2,     /**< the verdict comes from the done of fcr_defer() */
} fcr_auth_result;

/** Body limit of an app that sets none (bytes). */
#define FCR_DEFAULT_MAX_BODY (1024u * 1024u)

/** Output memory of an app that sets none (bytes): see fcr_app_set_max_output_memory(). */
#define FCR_DEFAULT_MAX_OUTPUT_MEMORY (32u * 1024u * 1024u)

/**
 * A route handler, also the FILTER role handler. It fills `res` and returns FCR_DONE (the
 * framework sends `res`), FCR_ASYNC (after fcr_defer(), whose done gives the verdict; or the
 * handler keeps `req` and `res` and calls fcr_res_send() later, from a watcher on
 * fcr_req_loop()), or a negative fcr_err code: the framework then discards what `res` holds,
 * answers 500 problem+json and writes the error to the request's FCGI_STDERR stream and to the
 * log. `data` is the pointer given at registration.
 */
typedef fcr_handler_result (*fcr_handler)(fcr_req *req, fcr_res *res, void *data);

/**
 * A before-middleware. It returns FCR_CONTINUE, or FCR_STOP after filling `res` (the handler
 * is skipped, the after-middleware still run), or FCR_BEFORE_ASYNC after fcr_defer() (the done
 * gives one of the others), or a negative fcr_err code (500).
 */
typedef fcr_before_result (*fcr_before_mw)(fcr_req *req, fcr_res *res, void *data);

/**
 * An after-middleware. It may change the status, headers and body of `res` and returns 0 or a
 * negative fcr_err code (500; the remaining after-middleware are skipped).
 */
typedef int (*fcr_after_mw)(fcr_req *req, fcr_res *res, void *data);

/**
 * An authorizer: one function that guards routes inside the app (fcr_app_guard,
 * fcr_route_guard) and answers FastCGI AUTHORIZER requests (fcr_app_set_authorizer). It returns
 * FCR_ALLOW, optionally after setting variables with fcr_auth_set_var()/fcr_auth_set_user(),
 * or FCR_DENY after filling `res` with the denial (a denial that leaves the status below 400
 * becomes 403 problem+json), or FCR_AUTH_ASYNC after fcr_defer() (the done gives the verdict,
 * and `auth` stays valid until it returns), or a negative fcr_err code (500). fcr_req_role()
 * tells where it runs. Inside the app the variables become request variables (fcr_req_var) and
 * the user the authenticated user (fcr_req_user); in the AUTHORIZER role an allow is answered
 * `Status: 200 OK` with one `Variable-NAME: value` header per variable.
 */
typedef fcr_auth_result (*fcr_authorizer)(fcr_req *req, fcr_res *res, fcr_auth *auth, void *data);

/* ---- Blocking work off the loop -------------------------------------------------------- */

/** Pool threads of an app that sets none: see fcr_app_set_threads(). */
#define FCR_DEFAULT_THREADS 4u
/** Most pool threads fcr_app_set_threads() accepts. */
#define FCR_MAX_THREADS 256u
/**
 * Deferrals a pool holds per thread: fcr_defer() refuses (FCR_EAGAIN, 503) when threads x
 * this many are outstanding (queued, running, or finished with their done not yet run).
 */
#define FCR_DEFER_QUEUE_PER_THREAD 64u

/**
 * Blocking work of fcr_defer(): runs on a pool thread, with the `data` given to fcr_defer().
 * It must not touch the request or the response, nor call any fcrest function but fcr_log().
 */
typedef void (*fcr_work_fn)(void *data);

/**
 * The continuation of fcr_defer(): runs on the request's loop once the work has returned, with
 * the request, response and `data` of the deferral. Its return value is taken as the return
 * value of the callback that deferred: an fcr_handler_result for a handler, an
 * fcr_before_result for a before-middleware, an fcr_auth_result for an authorizer (whose
 * fcr_auth handle stays valid until its done returns, for fcr_auth_set_var()). It may defer
 * again (and return the async verdict again). It always runs, also when the client went away
 * meanwhile: fcr_req_aborted() is then true, nothing is sent whatever it returns, and it only
 * has to release `data`.
 */
typedef int (*fcr_done_fn)(fcr_req *req, fcr_res *res, void *data);

/**
 * Runs `work(data)` on the app's thread pool, then `done(req, res, data)` on the loop; see
 * fcr_work_fn and fcr_done_fn. Called from a handler (which then returns FCR_ASYNC), a
 * before-middleware (FCR_BEFORE_ASYNC), an authorizer, as a guard or in the AUTHORIZER role
 * (FCR_AUTH_ASYNC), or from such a callback's done (which returns the async verdict again). The
 * chain resumes where it stopped: after done's verdict come the next middleware, or the
 * handler, or the answer. Only work functions may block; everything else runs on the loop.
 *
 * The pool belongs to the serving app of the process: made on the first deferral (a program
 * that never defers starts no thread, and nothing exists before `fcr_app_run` forks workers),
 * with fcr_app_set_threads() threads and room for threads x FCR_DEFER_QUEUE_PER_THREAD
 * deferrals. A process forked after its parent made a pool makes its own: work queued in the
 * parent is not inherited. Completions reach the loop through one ev_async watcher, active only
 * while deferrals are outstanding: a graceful stop waits for them like for any request in
 * flight (within the shutdown timeout), and fcr_app_free() runs what is still queued, joins the
 * threads and runs the remaining done functions (with the requests aborted when their server
 * was freed first); the pool's loop must still exist then.
 *
 * Returns 0: `data` belongs to the deferral until done returns, and the callback must return its
 * async verdict (another verdict fails the request with 500 once done has run). On failure
 * done is never called and `data` stays the caller's:
 *   - FCR_EAGAIN: the pool is full. fcr_defer has put 503 problem+json with `Retry-After: 1` in
 *     `res` and logged a warning (once a second at most). Returning the async verdict (or the
 *     error code) sends that 503; a callback may also answer otherwise (FCR_DONE, FCR_STOP,
 *     FCR_DENY after filling `res`).
 *   - FCR_ECLOSED: the request was aborted, or the app is being freed.
 *   - FCR_ENOMEM: out of memory, or no pool thread could be started.
 *   - FCR_EINVAL: a NULL argument, `res` not the request's, a call outside the callbacks named
 *     above, a second deferral before done, or a request on another loop while the pool has
 *     deferrals outstanding from its loop.
 * After any of these, returning the async verdict or the error code answers the request (503
 * for FCR_EAGAIN, else 500 problem+json with the code logged).
 */
int fcr_defer(fcr_req *req, fcr_res *res, fcr_work_fn work, fcr_done_fn done, void *data);

/* ---- App ------------------------------------------------------------------------------ */

/**
 * Creates an empty app: no routes, no middleware, body limit inherited (FCR_DEFAULT_MAX_BODY
 * at the top), routing on SCRIPT_NAME + PATH_INFO with no prefix. Returns NULL when out of
 * memory.
 */
fcr_app *fcr_app_new(void);

/**
 * Frees the app, its routes, middleware and mounted sub-apps. The app must not be serving
 * (free its servers first) and must not be mounted in another app (the parent frees it). Its
 * deferral pool, if one was made in this process, is destroyed first: queued work runs, the
 * threads are joined and the remaining done functions run (see fcr_defer). NULL is ignored.
 */
void fcr_app_free(fcr_app *app);

/**
 * Adds a route: `methods` (fcr_method bits) and `pattern`, a PCRE2 expression matched against
 * the whole routing path (see fcr_router_add); named captures become path params
 * (fcr_req_path_param). Routes are tried in registration order; HEAD is served by a GET route
 * when no HEAD route matches (without a body), OPTIONS is answered 204 with Allow when no
 * OPTIONS route matches. Returns the route handle (owned by the app) to attach middleware or a
 * body limit, or NULL for an invalid pattern, an empty method set, a NULL handler or out of
 * memory; the first failure is logged and kept (fcr_app_error), and fcr_app_run() refuses to
 * run such an app.
 */
fcr_route *fcr_app_route(fcr_app *app, unsigned methods, const char *pattern, fcr_handler handler,
                         void *data);

/**
 * Mounts `sub` under the literal prefix `prefix` ("/api", no trailing slash): routing path
 * "/api/x" is matched against sub's routes as "/x". Sub's middleware and body limit apply to
 * its routes only (per-prefix middleware). The call always takes `sub`, as jansson's `_new`
 * functions take a reference: whatever it returns, the caller never frees `sub` afterwards.
 * On success `app` owns it; on failure it is freed, except when it already has an owner
 * (it is mounted somewhere, is `app` itself or an app `app` is mounted in: FCR_EEXIST, and
 * nothing changes). Returns 0; FCR_EINVAL (NULL `app` or `sub`, a prefix that is NULL, empty,
 * does not start with '/' or ends with '/' other than "/", or apps nested more than 8 deep);
 * FCR_EEXIST; FCR_ENOMEM. A failure is also recorded as fcr_app_error() of `app`.
 */
int fcr_app_mount(fcr_app *app, const char *prefix, fcr_app *sub);

/**
 * Adds the before-middleware `fn` for every route of `app` (for a mounted app: every route under
 * its prefix); `data` is passed to `fn`. The middleware that apply to a request (the serving
 * app's, the mounts' on the route's way, the route's own) run in the order they were
 * registered, whatever their level. Before-middleware run only for a request that matched a
 * route. Returns 0, FCR_EINVAL (NULL argument) or FCR_ENOMEM.
 */
int fcr_app_before(fcr_app *app, fcr_before_mw fn, void *data);
/**
 * Adds the after-middleware `fn` for every route of `app`, with the order and scope rules of
 * fcr_app_before(); `data` is passed to `fn`. After-middleware run for every Responder and
 * Filter response, including the framework's own 404, 405, 413 and 500 answers (then only the
 * serving app's). Returns 0, FCR_EINVAL (NULL argument) or FCR_ENOMEM.
 */
int fcr_app_after(fcr_app *app, fcr_after_mw fn, void *data);

/**
 * Adds the authorizer `fn` as a before-middleware of `app` (same order rules as
 * fcr_app_before()); `data` is passed to `fn`. Returns 0, FCR_EINVAL (NULL argument) or
 * FCR_ENOMEM.
 */
int fcr_app_guard(fcr_app *app, fcr_authorizer fn, void *data);

/**
 * Makes `fn` the app's answer to FastCGI AUTHORIZER requests (Apache mod_authnz_fcgi, lighttpd
 * "mode" => "authorizer"); without one, AUTHORIZER requests are refused with UNKNOWN_ROLE. No
 * middleware runs for them. Replaces an earlier one. Returns 0 or FCR_EINVAL (NULL).
 */
int fcr_app_set_authorizer(fcr_app *app, fcr_authorizer fn, void *data);

/**
 * Makes `fn` the handler of FastCGI FILTER requests; it reads the file to filter with
 * fcr_req_data(). The app's own before- and after-middleware run around it (no routing).
 * Without one, FILTER requests are refused with UNKNOWN_ROLE. Returns 0 or FCR_EINVAL.
 */
int fcr_app_set_filter(fcr_app *app, fcr_handler fn, void *data);

/**
 * Sets the body limit (bytes, > 0) of the app's routes that set none (a mounted app's own
 * limit beats its parent's). A request whose CONTENT_LENGTH (FILTER: FCGI_DATA_LENGTH) exceeds
 * the limit of its route is answered 413 problem+json without its body being read; a body
 * without CONTENT_LENGTH is cut off and answered 413 as soon as it grows past the limit. A
 * CONTENT_LENGTH (or FCGI_DATA_LENGTH) that is not a decimal number ("-1", "abc") is answered
 * 400 problem+json, its body unread. These answers come after the before-middleware and the
 * route's media type check (415). Returns 0 or FCR_EINVAL.
 */
int fcr_app_set_max_body(fcr_app *app, size_t max);

/**
 * Sets the most memory (bytes, > 0; default FCR_DEFAULT_MAX_OUTPUT_MEMORY) the app's answers may
 * hold while their connections take them. An answer's body stays in memory until the web server
 * has read it all; a client (or web server) that reads slowly or not at all keeps it there, up
 * to the output timeout. An answer that would take the bodies held past this limit is replaced
 * by 503 problem+json with `Retry-After: 1`, and a warning is logged (once a second at most);
 * when nothing else is held, an answer of any size goes out. Small bodies (up to about 1 KiB,
 * kept in the request's own memory) and the bytes queued on a connection (bounded by
 * max_output_queue) do not count. The setting of the app a server serves counts. Returns 0 or
 * FCR_EINVAL (NULL `app`, zero).
 */
int fcr_app_set_max_output_memory(fcr_app *app, size_t max);

/**
 * Sets the number of threads (1..FCR_MAX_THREADS; default FCR_DEFAULT_THREADS) of the pool
 * fcr_defer() runs work on, per worker process; the pool holds up to threads x
 * FCR_DEFER_QUEUE_PER_THREAD deferrals. The setting of the app a server serves counts, when its
 * pool is made (the first deferral); a pool already made keeps its threads. Returns 0 or
 * FCR_EINVAL (NULL `app`, a count out of range).
 */
int fcr_app_set_threads(fcr_app *app, unsigned n);

/**
 * Sets the prefix stripped from the routing path ("/app"; "" or NULL for none). A path that
 * does not start with it (followed by '/' or its end) is routed unchanged; an empty rest
 * becomes "/". The string is copied. Returns 0, FCR_EINVAL (not starting with '/'), or
 * FCR_ENOMEM.
 */
int fcr_app_set_prefix(fcr_app *app, const char *prefix);

/**
 * Routes on the path of REQUEST_URI (up to '?', as sent, not decoded) instead of
 * SCRIPT_NAME + PATH_INFO (which the web server has decoded) when `on` is true (false goes
 * back). Patterns then run on the raw path and path params are percent-decoded once after the
 * match (fcr_req_path_param()). The prefix is stripped the same way, compared with the raw
 * bytes. NULL `app` is ignored.
 */
void fcr_app_set_route_on_request_uri(fcr_app *app, bool on);

/**
 * The message of the first failed registration (route pattern with PCRE2's message and
 * offset, ...), or NULL when every registration succeeded (also for a NULL `app`). Owned by
 * the app; the first failure of a mounted app counts too.
 */
const char *fcr_app_error(const fcr_app *app);

/**
 * Creates a server on `loop` that serves `app` (see fcr_server_new): `base` gives limits,
 * socket mode and multiplexing (NULL: fcr_server_config_init's defaults); the app sets the
 * callbacks and the roles (Responder, plus Authorizer and Filter when it has handlers for them).
 * The app must outlive the server and not be changed while it serves. Returns NULL and sets
 * `*err` (if not NULL) as fcr_server_new does, or FCR_EINVAL when `app` is mounted in
 * another app.
 */
fcr_server *fcr_app_server_new(fcr_app *app, struct ev_loop *loop, const fcr_server_config *base,
                               int *err);

/**
 * Adds a hook that runs in every worker process after the fork (and in the one process with
 * `--workers 1`), with the worker's loop, before it accepts: the place to open what each
 * worker needs of its own, such as a database connection (a socket opened before
 * fcr_app_run() forks would be shared by every worker). Hooks run in the order they were
 * added; one that returns a negative fcr_err code ends that worker (logged): the stop hooks
 * run first, so what the earlier start hooks opened is closed. The supervisor restarts a
 * failed worker with a growing delay, and stops with a non-zero result when no worker has ever
 * started (see fcr_server_on_worker()). `data` is passed to `fn`. The hooks of the app a
 * server serves count (fcr_app_run(), fcr_app_server_new()). Returns 0, FCR_EINVAL (NULL
 * `app` or `fn`) or FCR_ENOMEM.
 */
int fcr_app_on_worker_start(fcr_app *app, int (*fn)(fcr_app *app, struct ev_loop *loop, void *data),
                            void *data);

/**
 * Adds a hook that runs in every worker process once its loop has ended, after its last
 * request (and when a later start hook failed); stop hooks run last added first. `data` is
 * passed to `fn`. Returns 0, FCR_EINVAL (NULL `app` or `fn`) or FCR_ENOMEM.
 */
int fcr_app_on_worker_stop(fcr_app *app, void (*fn)(fcr_app *app, struct ev_loop *loop, void *data),
                           void *data);

/**
 * Configures and runs the app until SIGTERM or SIGINT, then stops gracefully. Settings come
 * from the environment, then the command line (which wins):
 * @verbatim
 *   --listen ADDR          FCREST_LISTEN (comma-separated)  unix:PATH, tcp:HOST:PORT, fd:N;
 *                          repeatable; none: the inherited socket (fd 0, systemd)
 *   --workers N            FCREST_WORKERS
 *   --threads N            FCREST_THREADS                  see fcr_app_set_threads (default 4)
 *   --socket-mode OCTAL    FCREST_SOCKET_MODE              mode of created unix sockets
 *   --max-body BYTES       FCREST_MAX_BODY                 app body limit (suffix k, m, g)
 *   --log-level LEVEL      FCREST_LOG_LEVEL                error, warn, info, debug
 *   --prefix PATH          FCREST_PREFIX                   see fcr_app_set_prefix
 *   --route-on-request-uri FCREST_ROUTE_ON_REQUEST_URI=1   see fcr_app_set_route_on_request_uri
 *   --access-log           FCREST_ACCESS_LOG=1             see fcr_app_set_access_log
 *   --shutdown-timeout S   FCREST_SHUTDOWN_TIMEOUT         seconds in-flight requests get to
 *                          finish after SIGTERM/SIGINT, or old workers after SIGHUP (default
 *                          10; --grace and FCREST_GRACE are the same setting)
 *   --idle-timeout S       FCREST_IDLE_TIMEOUT             close connections idle this long
 *                          (default 60)
 *   --input-timeout S      FCREST_INPUT_TIMEOUT            a request's input (or a started
 *                          record) must be complete this long after it began (default 30)
 *   --output-timeout S     FCREST_OUTPUT_TIMEOUT           close a connection whose queued
 *                          output makes no progress this long (default 30)
 *   --max-conns N          FCREST_MAX_CONNS                connections per worker (default 4096)
 *   --max-requests N       FCREST_MAX_REQUESTS             requests in progress per worker
 *                          (default 4096); more are answered FCGI_OVERLOADED
 *   --max-requests-per-conn N  FCREST_MAX_REQUESTS_PER_CONN  requests in progress on one
 *                          connection (default 32, at most 65535)
 *   --max-output-queue BYTES  FCREST_MAX_OUTPUT_QUEUE    output queued per connection before
 *                          writes wait (default 1m, at least 65552)
 *   --max-output-memory BYTES  FCREST_MAX_OUTPUT_MEMORY  see fcr_app_set_max_output_memory
 *                          (default 32m)
 *   --max-param-name BYTES FCREST_MAX_PARAM_NAME           bytes in one param name
 *                          (default 1k)
 *   --max-param-value BYTES  FCREST_MAX_PARAM_VALUE        bytes in one param value, such as
 *                          a request header (default 32k)
 *   --max-params-bytes BYTES FCREST_MAX_PARAMS_BYTES       encoded params of one request,
 *                          above the name and value limits (default 64k)
 *   --max-params N         FCREST_MAX_PARAMS               params of one request (default 256)
 *   --help
 * @endverbatim
 * Timeouts are seconds (decimals allowed, > 0, at most a day) and are checked once a second.
 * Sizes take a suffix k, m or g. A request over a param limit is answered 431 by the core
 * without the app seeing it; raise them to what the web server lets through (Apache:
 * LimitRequestFieldSize).
 * With --workers N > 1 the calling process supervises N worker processes
 * (fcr_server_run_workers): SIGTERM/SIGINT stop gracefully (exit 0 after the last request or
 * the shutdown timeout), SIGHUP starts N new workers and retires the old ones once the new ones
 * accept, a worker that dies is replaced. Every process returns from fcr_app_run.
 * The program's own options (fcr_app_add_option()) are parsed with these, their values kept for
 * fcr_app_option(), and --help lists them after these. The server's limits and socket mode
 * start from the configuration set with fcr_app_set_server_config() (else
 * fcr_server_config_init()'s), and the options above override those they set.
 * Options take their value as `--opt VALUE` or `--opt=VALUE`; an unknown option is refused.
 * Returns 0 after a clean stop or
 * after --help (usage on stdout); FCR_EINVAL for a bad option or value (message and usage on
 * stderr) or when a registration failed (fcr_app_error); FCR_EADDR or FCR_EIO when a listener
 * cannot be opened or there is none; FCR_ENOMEM. The app stays owned by the caller.
 */
int fcr_app_run(fcr_app *app, int argc, char **argv);

/**
 * How fcr_app_run() reads the value of a program's option (fcr_app_add_option()). A bad value
 * is refused at start as fcrest's own are: a message naming the option (and the variable, for
 * one from the environment) on stderr, and FCR_EINVAL.
 */
typedef enum fcr_opt_kind {
    FCR_OPT_STRING, /**< any text (also empty) */
    FCR_OPT_FLAG,   /**< no value: on when given; its variable turns it on with any value but "0" */
    FCR_OPT_UINT,   /**< a decimal number, 0 to ULLONG_MAX */
    FCR_OPT_SIZE,   /**< bytes: a decimal number with an optional suffix k, m or g (x 1024^n) */
    FCR_OPT_SECONDS, /**< decimal seconds, 0 to 86400 */
    FCR_OPT_LIST,    /**< repeatable text values without commas: fcr_app_option() gives them
                          joined with commas ("a,b"); its variable holds several, separated by
                          commas; the command line's replace the variable's */
} fcr_opt_kind;

/**
 * Declares an option of the program that fcr_app_run() parses with its own: `name` ("--db",
 * "--" then lowercase letters, digits, '-' or '_', at most 64 bytes), its `kind`, the
 * argument's name in --help (`arg`, "URL"; NULL: VALUE, N, BYTES or SECONDS by kind; NULL for
 * a flag), the environment variable that sets it (`env`, "NOTES_DB": uppercase letters, digits
 * and '_', not starting with a digit nor with "FCREST_"; NULL: none), its default (`def`, valid
 * for `kind`; NULL: none; NULL for a flag) and a one-line `help`. --help lists the program's
 * options after fcrest's own, under "Options of PROG:". All strings are copied. The value is
 * read with fcr_app_option(). Returns 0; FCR_EINVAL (NULL `app`, an invalid name, kind,
 * variable, argument name or default); FCR_EEXIST (the name is fcrest's own option or --help,
 * or the name or variable is taken by an earlier call); FCR_ENOMEM.
 */
int fcr_app_add_option(fcr_app *app, const char *name, fcr_opt_kind kind, const char *arg,
                       const char *env, const char *def, const char *help);

/**
 * The value of the program's option `name` (fcr_app_add_option()) in force: after
 * fcr_app_run() has parsed, the command line's, else the environment variable's, else the
 * default; before, the default. A flag's value is "1" when on, NULL when off. NULL also for an
 * option not declared, one without a value or default, or a NULL argument. fcr_app_run()
 * parses before it opens listeners and forks workers, so handlers read it through
 * fcr_req_app(). Owned by the app, valid until fcr_app_run() parses again or the app is freed.
 */
const char *fcr_app_option(const fcr_app *app, const char *name);

/**
 * The value of the FCR_OPT_UINT or FCR_OPT_SIZE option `name` (fcr_app_option()) as a number
 * in `*out` (a size with its suffix applied). Returns 0; FCR_ENOTFOUND when it has no value
 * (`*out` unchanged); FCR_EINVAL (NULL argument, an option not declared or of another kind).
 */
int fcr_app_option_uint(const fcr_app *app, const char *name, unsigned long long *out);

/**
 * Sets the server configuration fcr_app_run() starts from, as `base` of fcr_app_server_new():
 * limits, socket mode, multiplexing and web server allow-list (NULL: back to
 * fcr_server_config_init()'s defaults). The command line and the environment override the
 * limits and the socket mode they set. `base` is copied, with its allow-list string; its
 * callbacks and roles are the app's, and its max_body gives way to the app's body limit.
 * Returns 0, FCR_EINVAL (NULL `app`) or FCR_ENOMEM.
 */
int fcr_app_set_server_config(fcr_app *app, const fcr_server_config *base);

/**
 * Turns the access log on or off (default off). When on, every request the app answers adds
 * one line at FCR_LOG_INFO to the log (stderr):
 * @verbatim
 *   access method=GET path=/hello status=200 bytes=13 ms=0.214 id=4711-1
 * @endverbatim
 * with the method and routing path (control bytes, spaces, quotes and backslashes as `\xNN`),
 * the response status, the body bytes handed to the connection, the milliseconds from the
 * moment the request's input was complete until its response was handed over, " aborted" when
 * the client went away first, and the request id (fcr_req_request_id). In the JSON log format
 * (fcr_log_set_format()) the line's `msg` is "access" and the same facts are the members
 * `method`, `path`, `status`, `bytes`, `ms`, `aborted` and `request_id`. The setting of the
 * app a server serves counts (fcr_app_run sets it with --access-log), not a mounted app's.
 * NULL `app` is ignored.
 */
void fcr_app_set_access_log(fcr_app *app, bool on);

/* ---- Cross-origin requests (CORS) ---------------------------------------------------- */

/**
 * A CORS policy: which other origins' pages may call the app from a browser, with which
 * methods and headers. Opaque; made with fcr_cors_new(), filled with the fcr_cors_* setters,
 * then given to an app with fcr_app_set_cors().
 */
typedef struct fcr_cors fcr_cors;

/** A policy that allows no origin yet. NULL when out of memory. Free it with fcr_cors_free()
 * unless it was given to fcr_app_set_cors(). */
fcr_cors *fcr_cors_new(void);

/** Frees a policy that no app owns. NULL is ignored. */
void fcr_cors_free(fcr_cors *cors);

/**
 * Allows the origin `origin`, as browsers send it in the Origin header: scheme, "://", host and
 * an optional ":port" ("https://app.example.com", "http://localhost:3000"; compared ignoring
 * case). A host that starts with "*." is a pattern: with the scheme https, the host
 * "*.example.com" allows "https://a.example.com" and "https://a.b.example.com" (one or more
 * labels in place of the star, on that scheme and without another port) but not
 * "https://example.com". "*" allows
 * every origin (then answers carry `Access-Control-Allow-Origin: *`). The string is copied.
 * Returns 0, FCR_EINVAL (NULL, or not an origin or pattern of that form) or FCR_ENOMEM.
 */
int fcr_cors_add_origin(fcr_cors *cors, const char *origin);

/**
 * Allows request headers beyond those browsers send without asking ("Authorization,
 * Content-Type"; names compared ignoring case): a preflight that asks for a header not on the
 * list is answered without CORS headers, and the browser does not send the request. A
 * Content-Type other than the three form types counts as asked for. Returns 0, FCR_EINVAL
 * (NULL, an empty list or a name that is not an HTTP token) or FCR_ENOMEM.
 */
int fcr_cors_add_header(fcr_cors *cors, const char *headers);

/**
 * Lets the calling page read response headers beyond the safelisted ones ("ETag, Location,
 * X-Request-Id"): they go in `Access-Control-Expose-Headers`. Returns 0, FCR_EINVAL (NULL, an
 * empty list or a name that is not a token) or FCR_ENOMEM.
 */
int fcr_cors_add_exposed_header(fcr_cors *cors, const char *headers);

/**
 * Limits the methods a preflight may allow to `methods` (::fcr_method bits); 0 (the default)
 * allows what the routes of the path have. Returns 0 or FCR_EINVAL (NULL, unknown bits).
 */
int fcr_cors_set_methods(fcr_cors *cors, unsigned methods);

/**
 * Allows credentialed requests (cookies, HTTP authentication, or `fetch(..., {credentials:
 * "include"})`): answers then carry `Access-Control-Allow-Credentials: true` and name the
 * origin. Default off. Returns 0 or FCR_EINVAL (NULL `cors`).
 */
int fcr_cors_set_credentials(fcr_cors *cors, bool allow);

/**
 * How long browsers may keep a preflight's answer (`Access-Control-Max-Age`, at most 86400
 * seconds; by default the header is not sent and browsers keep it 5 seconds). Returns 0 or
 * FCR_EINVAL (NULL, over a day).
 */
int fcr_cors_set_max_age(fcr_cors *cors, unsigned seconds);

/**
 * Gives the app the policy `cors` (the app owns it from then on, also on failure; NULL removes
 * a policy). With a policy, the app
 *   - answers every preflight (OPTIONS with Origin and Access-Control-Request-Method) itself,
 *     before any middleware, guard or handler: 204 with `Access-Control-Allow-Origin`,
 *     `-Methods` (the path's methods, or those of fcr_cors_set_methods() among them),
 *     `-Headers` (those asked for), `-Credentials` and `-Max-Age` as set, when the origin, the
 *     method and every header asked for are allowed; 204 without them otherwise (the browser
 *     refuses), and 404 problem+json for a path no route has;
 *   - adds `Access-Control-Allow-Origin` (and `-Credentials`, `-Expose-Headers`) to every
 *     other answer to an allowed origin, the framework's own 404, 405, 413 and 500 included,
 *     before the after-middleware run;
 *   - adds `Vary: Origin` to every answer, so that caches keep one answer per origin; an
 *     origin that is not allowed gets nothing else.
 * Only the app a server serves counts (a mounted app's call fails). Returns 0 or FCR_EINVAL
 * (NULL or mounted `app`; "*" together with credentials, which would let every site act as
 * the user).
 */
int fcr_app_set_cors(fcr_app *app, fcr_cors *cors);

/* ---- Routes --------------------------------------------------------------------------- */

/**
 * Adds a before-middleware (fcr_app_before()) that runs for `route` only. Returns 0,
 * FCR_EINVAL (NULL route or function; a NULL route allows chaining after a failed
 * fcr_app_route()) or FCR_ENOMEM.
 */
int fcr_route_before(fcr_route *route, fcr_before_mw fn, void *data);
/**
 * Adds an after-middleware (fcr_app_after()) that runs for `route` only. Returns 0,
 * FCR_EINVAL (NULL route or function) or FCR_ENOMEM.
 */
int fcr_route_after(fcr_route *route, fcr_after_mw fn, void *data);
/**
 * Adds the authorizer `fn` as a before-middleware of `route` only (fcr_app_guard()). Returns
 * 0, FCR_EINVAL (NULL route or function) or FCR_ENOMEM.
 */
int fcr_route_guard(fcr_route *route, fcr_authorizer fn, void *data);
/**
 * Sets the body limit (bytes, > 0) of `route`, which beats the apps' limits
 * (fcr_app_set_max_body()). Returns 0 or FCR_EINVAL (NULL route or a zero limit).
 */
int fcr_route_set_max_body(fcr_route *route, size_t max);

/**
 * Requires the request's Content-Type to be `media_type` ("application/json"; compared
 * case-insensitively, parameters such as "; charset=utf-8" allowed); otherwise the request is
 * answered 415 problem+json after the before-middleware and before the body limit's 413.
 * The string is copied. Returns 0, FCR_EINVAL (NULL route, NULL or empty media type) or
 * FCR_ENOMEM. A later call replaces the media type.
 */
int fcr_route_consumes(fcr_route *route, const char *media_type);

/**
 * Makes `route` take its request body as a stream instead of a buffer: nothing of the body is
 * read before the handler runs (after the before-middleware and guards, the media type check
 * and the 413 for a declared length over the limit), and the handler reads it with
 * fcr_req_read_body(), piece by piece, in bounded memory. The body limit still holds for the
 * bytes that actually arrive (fcr_route_set_max_body(); the body fn is then told the body is
 * gone and the answer is 413 problem+json). fcr_req_body(), fcr_req_parse_json() and
 * fcr_req_form() see an empty body on such a route. Only RESPONDER requests stream (the
 * FILTER role's handler is not a route). Returns 0 or FCR_EINVAL (NULL route).
 */
int fcr_route_stream_body(fcr_route *route);

/* ---- Requests ------------------------------------------------------------------------- */

/**
 * The routing path (see fcr_app_set_prefix and fcr_app_set_route_on_request_uri). Never NULL for
 * an app's request ("/" at least).
 */
const char *fcr_req_path(const fcr_req *req);

/**
 * The prefix that was stripped from the routing path ("" when none), so that
 * fcr_req_base_path + fcr_req_path is the path the web server routed to the app (for building
 * Location headers).
 */
const char *fcr_req_base_path(const fcr_req *req);

/**
 * The value of the route's named capture `name`, or NULL: the client's bytes decoded exactly
 * once. By default the app routes on SCRIPT_NAME + PATH_INFO, which the web server has
 * percent-decoded already, and the value is those bytes verbatim ("%" is an ordinary byte: a
 * client's "/p/100%25" gives "100%", "/p/%252e" gives "%2e"). When it routes on REQUEST_URI
 * (fcr_app_set_route_on_request_uri(), or a request that has neither SCRIPT_NAME nor
 * PATH_INFO), which comes as the client sent it, the value is percent-decoded once ("caf%C3%A9"
 * gives "café"). '+' stays '+'. The value holds no NUL byte: a path whose param would hold or
 * decode to one, or (from REQUEST_URI) holds an invalid escape, does not match the route (see
 * fcr_router_match()). Owned by the request.
 */
const char *fcr_req_path_param(const fcr_req *req, const char *name);

/**
 * The first value of query parameter `name` in QUERY_STRING (without QUERY_STRING, the query of
 * REQUEST_URI), percent-decoded with '+' as space; "" for a name without '='; NULL when absent.
 * Pairs with a malformed %-escape, or whose name or value decodes to a NUL byte ("%00"), are
 * skipped: every value returned holds all of its bytes. The query is parsed on the first call;
 * NULL also when that runs out of memory.
 */
const char *fcr_req_query(const fcr_req *req, const char *name);
/**
 * The `i`-th value (from 0) of query parameter `name`, as fcr_req_query() returns the first;
 * NULL when there are not that many.
 */
const char *fcr_req_query_nth(const fcr_req *req, const char *name, size_t i);

/**
 * The value of cookie `name` from the Cookie header (first match, surrounding double quotes
 * removed), or NULL.
 */
const char *fcr_req_cookie(const fcr_req *req, const char *name);

/**
 * The first value of field `name` of an application/x-www-form-urlencoded body, decoded like
 * query parameters (fcr_req_query()). NULL when absent or when the body is of another type.
 */
const char *fcr_req_form(const fcr_req *req, const char *name);
/**
 * The `i`-th value (from 0) of form field `name`, as fcr_req_form() returns the first; NULL
 * when there are not that many.
 */
const char *fcr_req_form_nth(const fcr_req *req, const char *name, size_t i);

/**
 * Parses the body as JSON (any value, not only objects). Returns a borrowed reference owned by
 * the request (json_incref it to keep it past the response). For invalid JSON returns NULL and,
 * when `res` is not NULL, fills `res` with 400 problem+json whose detail names jansson's line,
 * column and message ("invalid JSON at line 1, column 7: ..."). NULL also when out of memory
 * (then `res` holds a 500).
 */
json_t *fcr_req_parse_json(fcr_req *req, fcr_res *res);

/** The authenticated user set by an authorizer (fcr_auth_set_user) or a middleware, or NULL. */
const char *fcr_req_user(const fcr_req *req);

/**
 * Sets the authenticated user (copied; NULL clears). Returns 0, FCR_EINVAL (not an app's
 * request) or FCR_ENOMEM.
 */
int fcr_req_set_user(fcr_req *req, const char *user);

/**
 * The request variable `name` set by an authorizer inside the app or by fcr_req_set_var, else
 * the param of that name (which is how a web server passes an external authorizer's
 * variables), or NULL. Works for any request (then only params are looked up).
 */
const char *fcr_req_var(const fcr_req *req, const char *name);

/**
 * Sets request variable `name` (both copied; a later value replaces the earlier). Returns 0,
 * FCR_EINVAL (not an app's request, a NULL or empty name, a NULL value) or FCR_ENOMEM.
 */
int fcr_req_set_var(fcr_req *req, const char *name, const char *value);

/**
 * `size` bytes aligned for any type in memory freed with the request (the caller must not free
 * them). NULL when out of memory or for a request not served by an app.
 */
void *fcr_req_alloc(fcr_req *req, size_t size);
/**
 * A copy of the string `s` in memory freed with the request (the caller must not free it).
 * NULL when out of memory or for a NULL `s`.
 */
char *fcr_req_strdup(fcr_req *req, const char *s);

/**
 * The request's id: the web server's UNIQUE_ID param (Apache mod_unique_id) or X-Request-Id
 * header when it is 1..64 printable ASCII bytes without spaces or quotes, else "PID-N" with a
 * per-process counter. It ends every log line written while the framework runs code for the
 * request (fcr_log()), and every answer carries it as `X-Request-Id` unless the handler set
 * that header. NULL for a request not served by an app. Lives as long as the request.
 */
const char *fcr_req_request_id(const fcr_req *req);

/** The app serving the request (not owned by the request). */
fcr_app *fcr_req_app(const fcr_req *req);
/**
 * The loop the request runs on (for async handlers' watchers). Works for any request (the
 * server's loop); NULL only for a NULL `req`.
 */
struct ev_loop *fcr_req_loop(const fcr_req *req);

/* ---- Responses ------------------------------------------------------------------------ */

/** The request the response belongs to (NULL for a NULL `res`). */
fcr_req *fcr_res_req(const fcr_res *res);

/** Sets the status (200..599). Returns 0 or FCR_EINVAL. */
int fcr_res_set_status(fcr_res *res, int status);
/** The status set so far (200 at first); 0 for a NULL `res`. */
int fcr_res_status(const fcr_res *res);

/**
 * Adds the header `name: value` (repeated names allowed, as for Set-Cookie). Both strings are
 * copied. `name` must be an HTTP token and not "Status"; `value` must not contain CR, LF, NUL
 * or another control byte but HTAB. Returns 0, FCR_EINVAL (nothing is changed: no header
 * injection), or FCR_ENOMEM.
 */
int fcr_res_add_header(fcr_res *res, const char *name, const char *value);
/**
 * Replaces every header called `name` (case-insensitive) with one `name: value` header, with
 * the checks and errors of fcr_res_add_header(); on failure the old headers stay.
 */
int fcr_res_set_header(fcr_res *res, const char *name, const char *value);

/**
 * The first header called `name` (case-insensitive), or NULL. The value is owned by the
 * response and lives as long as the request.
 */
const char *fcr_res_header(const fcr_res *res, const char *name);

/**
 * Removes every header called `name` (case-insensitive). Returns how many were removed (0 also
 * for a NULL argument).
 */
int fcr_res_remove_header(fcr_res *res, const char *name);

/**
 * Replaces the body with a copy of the `len` bytes at `buf`. Returns 0, FCR_EINVAL (NULL `res`,
 * or NULL `buf` with `len` > 0) or FCR_ENOMEM.
 */
int fcr_res_set_body(fcr_res *res, const void *buf, size_t len);
/**
 * Appends a copy of `len` bytes to the body. Returns 0, FCR_EINVAL (NULL `res`, or NULL `buf`
 * with `len` > 0) or FCR_ENOMEM.
 */
int fcr_res_append(fcr_res *res, const void *buf, size_t len);
/**
 * Appends printf-formatted text to the body. Returns the bytes appended, FCR_EINVAL (NULL
 * argument or a format error) or FCR_ENOMEM.
 */
int fcr_res_printf(fcr_res *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * The body so far (never NULL; `*len` gets its length). Owned by the response: valid until
 * the body changes or the response is sent. `len` may be NULL.
 */
const void *fcr_res_body(const fcr_res *res, size_t *len);

/**
 * Sets `status`, Content-Type text/plain; charset=utf-8 and the body `text`. Returns 0,
 * FCR_EINVAL or FCR_ENOMEM. `text` is copied.
 */
int fcr_res_set_text(fcr_res *res, int status, const char *text);

/**
 * Sets `status`, Content-Type application/json and the compact serialization of `json` (any
 * JSON value) as the body; `json` is borrowed. Returns 0, FCR_EINVAL (NULL argument, or a
 * status outside 200..599) or FCR_ENOMEM; on failure the response is unchanged.
 */
int fcr_res_set_json(fcr_res *res, int status, const json_t *json);
/**
 * fcr_res_set_json() that steals the reference to `json`, also when it fails (a NULL `json`, as
 * from a failed json_pack, gives FCR_EINVAL). Returns what fcr_res_set_json() returns.
 */
int fcr_res_set_json_new(fcr_res *res, int status, json_t *json);

/**
 * Redirect: `status` must be 3xx; sets Location to `location` (checked like a header value)
 * and an empty body. Returns 0, FCR_EINVAL or FCR_ENOMEM.
 */
int fcr_res_set_redirect(fcr_res *res, int status, const char *location);

/**
 * RFC 9457 problem details: sets `status` (400..599), Content-Type application/problem+json
 * and the body
 * `{"type":"about:blank","title":<reason phrase>,"status":<status>,"detail":...}` with the
 * printf-formatted detail. Headers already set (WWW-Authenticate, Allow, ...) stay.
 * Returns 0, FCR_EINVAL or FCR_ENOMEM.
 */
int fcr_res_set_problem(fcr_res *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Like fcr_res_set_problem() with a `type` URI (NULL: "about:blank"), a plain `detail` (NULL:
 * none) and the members of the JSON object `ext` (may be NULL) added as extension members
 * (type, title, status and detail cannot be overridden). Steals `ext`, also on failure. Returns
 * 0, FCR_EINVAL (no response, `status` outside 400..599, `ext` not an object) or FCR_ENOMEM.
 */
int fcr_res_set_problem_new(fcr_res *res, int status, const char *type, const char *detail,
                            json_t *ext);

/**
 * Sends the response of a handler that returned FCR_ASYNC (after-middleware first), finishing
 * the request; `res` and its request must not be used afterwards. Called inside the handler
 * (or a middleware) it only marks the response ready: the framework sends it when the callback
 * returns. After an abort (see fcr_req_on_abort) it must still be called, to release the
 * request. Returns 0; FCR_ECLOSED when the request was aborted (it is released all the same);
 * FCR_EINVAL when the response is not awaiting it (a second call inside the handler).
 */
int fcr_res_send(fcr_res *res);

/* ---- Validating JSON bodies ------------------------------------------------------------ */

/** What a member must be (fcr_field.kind). */
typedef enum fcr_field_kind {
    FCR_FIELD_ANY = 0, /**< any JSON value */
    FCR_FIELD_STRING,  /**< a string; bounds count characters (code points) */
    FCR_FIELD_INTEGER, /**< an integer (1.0 is not one); bounds are its value */
    FCR_FIELD_NUMBER,  /**< an integer or a real; bounds are its value */
    FCR_FIELD_BOOLEAN, /**< true or false */
    FCR_FIELD_OBJECT,  /**< an object, checked against `fields` when set */
    FCR_FIELD_ARRAY,   /**< an array, each item checked against `items` when set; bounds count
                            items */
} fcr_field_kind;

/** fcr_field.flags */
enum fcr_field_flag {
    FCR_FIELD_REQUIRED = 1u << 0, /**< the member must be present */
    FCR_FIELD_NULLABLE = 1u << 1, /**< null is accepted besides the kind */
    FCR_FIELD_MIN = 1u << 2,      /**< `min` applies */
    FCR_FIELD_MAX = 1u << 3,      /**< `max` applies */
};

/** fcr_validate() flags */
enum fcr_validate_flag {
    FCR_VALIDATE_NO_EXTRA = 1u << 0, /**< members not in the table are refused (at every level) */
};

/**
 * One member of an object, for fcr_validate(): a table is an array of these ended by one whose
 * `name` is NULL, usually static and const.
 */
typedef struct fcr_field {
    const char *name;               /**< the member's name; NULL ends a table */
    fcr_field_kind kind;            /**< what it must be */
    unsigned flags;                 /**< ::fcr_field_flag bits */
    double min;                     /**< lower bound, when FCR_FIELD_MIN is set */
    double max;                     /**< upper bound, when FCR_FIELD_MAX is set */
    const struct fcr_field *fields; /**< FCR_FIELD_OBJECT: the members' table, or NULL */
    const struct fcr_field *items;  /**< FCR_FIELD_ARRAY: what each item must be (its name is
                                         not used), or NULL */
} fcr_field;

/**
 * Checks that `value` (a request body from fcr_req_parse_json(), say) is an object whose members
 * satisfy the table `fields`, and, with FCR_VALIDATE_NO_EXTRA in `flags`, has no other members.
 * Every failure is collected, not only the first: the answer in `res` is then 422
 * problem+json with an `errors` array of `{"pointer": "/title", "detail": "must be a string"}`
 * (the pointer is a JSON Pointer, RFC 6901, to the member or item: "/tags/3", "/author/name";
 * "" for the body itself), at most 32 of them (the detail says how many there were), and 422 is
 * returned; a handler then returns FCR_DONE. Returns 0 when the body is valid (`res` is left
 * alone); FCR_EINVAL (NULL argument, unknown flags) or FCR_ENOMEM. Tables nested deeper than
 * 32 levels are not followed. `value` and `fields` are only read.
 */
int fcr_validate(fcr_res *res, const json_t *value, const fcr_field *fields, unsigned flags);

/* ---- Conditional requests ------------------------------------------------------------- */

/** Bytes fcr_etag_make() needs: a quoted 16-digit hex tag and its NUL. */
#define FCR_ETAG_MAX 19u

/**
 * True when `etag` is one entity-tag as RFC 9110 writes it: `"opaque"` (strong) or `W/"opaque"`
 * (weak), the opaque part of printable ASCII without double quotes (and bytes 0x80-0xff).
 * False for NULL.
 */
bool fcr_etag_valid(const char *etag);

/**
 * Writes a strong entity-tag of the `len` bytes at `buf` into `out` (`cap` >= FCR_ETAG_MAX):
 * `"` + 16 hex digits of a 64-bit hash + `"`, the same for the same bytes. A tag built from a
 * version or a modification counter ("\"42-7\"") serves as well and costs less. Returns 0 or
 * FCR_EINVAL (NULL `buf` with `len` > 0, NULL `out`, `cap` too small).
 */
int fcr_etag_make(const void *buf, size_t len, char *out, size_t cap);

/**
 * Sets the answer's ETag header to `etag` (a valid entity-tag, see fcr_etag_valid(); copied).
 * Returns 0, FCR_EINVAL (NULL `res`, an invalid tag) or FCR_ENOMEM.
 */
int fcr_res_set_etag(fcr_res *res, const char *etag);

/**
 * Evaluates the request's If-Match and If-None-Match preconditions (RFC 9110, 13.2.2) against
 * `etag`, the entity-tag of the resource's current representation (NULL when the resource does
 * not exist). In that order:
 *   - If-Match ("*" or a list of tags, strong comparison: a weak tag never matches) that does
 *     not match: `res` becomes 412 problem+json with the current ETag, and 412 is returned. A
 *     PUT or DELETE that sends the ETag it read thus fails, instead of overwriting a change
 *     made meanwhile by another client (a lost update).
 *   - If-None-Match ("*" or tags, weak comparison) that matches: for GET and HEAD `res` becomes
 *     304 with the ETag and no body, and 304 is returned; for other methods 412 as above (a PUT
 *     with `If-None-Match: *` creates only what does not exist yet).
 * Otherwise it returns 0 and leaves `res` alone: the handler goes on. A malformed list matches
 * nothing. A handler returns FCR_DONE when the result is not 0. Returns a negative error for a
 * NULL or foreign argument or an invalid `etag` (FCR_EINVAL), or FCR_ENOMEM.
 */
int fcr_req_check_preconditions(fcr_req *req, fcr_res *res, const char *etag);

/* ---- Streamed bodies ------------------------------------------------------------------ */

/**
 * What a body fn (fcr_body_fn) returns. FCR_BODY_ERROR, FCR_BODY_DONE and FCR_BODY_ASYNC are
 * the handler's verdicts (fcr_handler_result) and end the reading: the rest of the body is
 * discarded. Any negative fcr_err code also fails the request (500 problem+json).
 */
typedef enum fcr_body_result {
    FCR_BODY_ERROR = -1000, /**< failure: answer 500 problem+json */
    FCR_BODY_DONE = 0,      /**< `res` is the answer: the framework sends it */
    FCR_BODY_ASYNC = 1,     /**< the answer comes later: from the done of fcr_defer() (which
                                 returns one of these verdicts), or with fcr_res_send() or a
                                 streamed answer (fcr_res_stream_begin()) */
    FCR_BODY_MORE = 2,      /**< call again with the next piece (or the end) */
    FCR_BODY_PAUSE = 3,     /**< call again only after fcr_req_resume_body() */
} fcr_body_result;

/**
 * Receives a streamed request body (see fcr_req_read_body()): each piece as it arrives (`len`
 * > 0, `buf` valid only during the call), then the end (`len` 0, `buf` not NULL), where it must
 * answer: FCR_BODY_DONE, FCR_BODY_ASYNC or an error (FCR_BODY_MORE or FCR_BODY_PAUSE at the end
 * fail the request with 500). While it returns FCR_BODY_PAUSE nothing more is read from the
 * web server's connection (back-pressure reaches the client through the web server), and the
 * input timeout does not run. When the body will not come to its end because the request ended
 * first (the client went away: fcr_req_aborted() is true; the body passed its limit: the
 * answer is 413; or the answer was sent from elsewhere), it is called once more with `buf` NULL
 * and `len` 0: it releases what it holds and its verdict is ignored; it must not use `req` or
 * `res` afterwards. It is never called again after it returned a verdict that ends the reading.
 * `data` is the pointer given to fcr_req_read_body(). It may call fcr_defer() (and return
 * FCR_BODY_ASYNC): reading waits for the done, whose verdict is taken as this function's.
 */
typedef fcr_body_result (*fcr_body_fn)(fcr_req *req, fcr_res *res, const void *buf, size_t len,
                                       void *data);

/**
 * Starts reading the body of a request on a route made with fcr_route_stream_body(): `fn`
 * receives its pieces from the loop, after the current callback returned (a handler calls it
 * and returns FCR_ASYNC). It may be called from the handler, from a done of fcr_defer(), or
 * later from a watcher while the handler's answer is outstanding. `data` stays the caller's;
 * `fn` frees it when the reading ends (see fcr_body_fn). Returns 0; FCR_ECLOSED after an
 * abort (the request must still be answered or released with fcr_res_send()); FCR_EINVAL for
 * a NULL argument, a request whose route does not stream its body, a second call, or a
 * response already sent.
 */
int fcr_req_read_body(fcr_req *req, fcr_body_fn fn, void *data);

/**
 * Resumes the reading of a body fn that returned FCR_BODY_PAUSE: the next piece comes from the
 * loop, never from inside this call. Ignored when the reading is not paused (or `req` is NULL
 * or not an app's request).
 */
void fcr_req_resume_body(fcr_req *req);

/**
 * Starts a streamed answer: the after-middleware run, then the status and headers of `res` go
 * out at once without Content-Length (the web server sends the body chunked or closes the
 * connection after it), followed by any body `res` already holds; the handler then writes the
 * rest with fcr_res_stream_write() and ends it with fcr_res_stream_end(). A HEAD request, 204
 * and 304 answers get no body: writes are taken and dropped. Call it from a handler (which then
 * returns FCR_ASYNC; FCR_DONE ends the stream when it returns), a body fn, a done, or a watcher
 * while the answer is outstanding. Returns 0; FCR_ECLOSED after an abort (still end it with
 * fcr_res_stream_end()); FCR_EINVAL for a NULL or foreign `res`, an answer already sent or
 * streaming, a call from a before-middleware or authorizer; FCR_ENOMEM.
 */
int fcr_res_stream_begin(fcr_res *res);

/**
 * Writes `len` bytes of a streamed answer, copying them. Returns 0; FCR_EAGAIN when the
 * connection already holds its queue of output (nothing was taken: wait with
 * fcr_res_stream_on_drain()); FCR_ECLOSED after an abort (the client went away: stop and call
 * fcr_res_stream_end()); FCR_EINVAL (NULL `res`, NULL `buf` with `len` > 0, no stream begun or
 * already ended); FCR_ENOMEM.
 */
int fcr_res_stream_write(fcr_res *res, const void *buf, size_t len);

/**
 * Calls `cb(res, data)` once from the loop when the connection's output queue has room again,
 * or as soon as the request is aborted (a write then returns FCR_ECLOSED). A later call
 * replaces the earlier; NULL `cb` cancels. Returns 0 or FCR_EINVAL (NULL `res`, no stream).
 */
int fcr_res_stream_on_drain(fcr_res *res, void (*cb)(fcr_res *res, void *data), void *data);

/**
 * Ends a streamed answer and releases the request: `res` and its request must not be used
 * afterwards. Must be called once for every stream begun, also after an abort. Returns 0,
 * FCR_ECLOSED when the request was aborted (it is released all the same), or FCR_EINVAL (NULL
 * `res`, no stream, or already ended).
 */
int fcr_res_stream_end(fcr_res *res);

/**
 * The reason phrase of `status` ("Not Found"); "Unknown" for a code outside the table. Static
 * storage: never NULL, must not be freed.
 */
const char *fcr_status_reason(int status);

/* ---- Authorizer results --------------------------------------------------------------- */

/**
 * Sets variable `name` (letters, digits, '_' and '-', at most 256) to `value` (a valid header
 * value); a later value of the same name replaces the earlier. Inside the app it becomes a
 * request variable (fcr_req_var); in the AUTHORIZER role a `Variable-NAME: value` header of
 * the 200 answer, one per name. Both are copied. Returns 0, FCR_EINVAL (NULL `auth`, an invalid
 * name or value) or FCR_ENOMEM.
 */
int fcr_auth_set_var(fcr_auth *auth, const char *name, const char *value);

/**
 * fcr_auth_set_var(auth, var, user) that also makes `user` the authenticated user inside the
 * app (fcr_req_user). Returns what fcr_auth_set_var() returns.
 */
int fcr_auth_set_user(fcr_auth *auth, const char *var, const char *user);

#ifdef __cplusplus
}
#endif
#endif
