/**
 * @file fcrest.h
 * @brief fcrest: FastCGI application library with a JSON REST router. Umbrella header.
 *
 * Includes every public header: fcrest/version.h, fcrest/error.h (error codes and logging),
 * fcrest/core.h (the FastCGI server), fcrest/router.h (the path router) and fcrest/app.h (the
 * application framework). A program may include this one instead of the single headers and
 * link with the flags of `pkg-config --libs fcrest`.
 */

/**
 * @mainpage fcrest API reference
 *
 * fcrest is a FastCGI application library with a JSON REST router, for C11 programs on a
 * libev loop. Its public API is in six headers, all included by fcrest.h, and a seventh for
 * tests:
 *
 * - fcrest/app.h: the framework applications are written against: routes, middleware,
 *   authorizers, requests, responses, fcr_app_run().
 * - fcrest/router.h: the method + PCRE2 pattern router the framework uses, usable on its own.
 * - fcrest/core.h: the FastCGI 1.0 server underneath: listeners, connections, requests, the
 *   CGI params read by their HTTP names, graceful stop and worker processes.
 * - fcrest/error.h: the error codes (::fcr_err) and the log.
 * - fcrest/version.h: the version of the headers and of the library.
 * - fcrest/multipart.h: multipart/form-data request bodies (uploads) parsed as they arrive.
 * - fcrest/testing.h (not included by fcrest.h; library `fcrest-testing`): requests run
 *   through an app in process (fcr_app_test()) for a service's own tests.
 *
 * @par Names
 * Every public name starts with `fcr_` (types, functions) or `FCR_` (macros, constants); names
 * with `fcr__` / `FCR__` are internal. A function is named after the object it takes first
 * (`fcr_req_`, `fcr_res_`, `fcr_app_`, ...) and then:
 * - a noun alone reads: fcr_req_path(), fcr_res_status(), fcr_res_header(), fcr_res_body()
 *   (a reader that fills the caller's struct is `_get_`: fcr_server_get_stats());
 * - `set_` replaces a value, `add_` appends to a list, `remove_` takes out: fcr_res_set_status(),
 *   fcr_res_add_header(), fcr_res_remove_header(); fcr_res_set_text(), fcr_res_set_json() and
 *   fcr_res_set_problem() set a whole answer (status, Content-Type and body) at once;
 * - anything else is a verb: fcr_req_parse_json(), fcr_res_append(), fcr_res_send(),
 *   fcr_app_route(), fcr_app_mount(); `on_` registers a callback for an event.
 *
 * @par Results
 * Functions that can fail return 0 (or a non-negative count) or a negative ::fcr_err code;
 * functions that return pointers return NULL. A value that can be absent is never reported as
 * a negative number that could be read as an error: a pointer is NULL, a port is 0, and a
 * number that may be missing is written through a pointer with 0 or FCR_ENOTFOUND returned
 * (fcr_req_data_length()). Callbacks return a verdict type of their own kind
 * (::fcr_handler_result, ::fcr_before_result, ::fcr_auth_result).
 *
 * @par NULL and const
 * Every reader accepts a NULL object and returns NULL, 0 or false (but a reader whose value is
 * an error code, fcr_req_input_error(), which says FCR_EINVAL); every function that changes
 * something returns FCR_EINVAL for a NULL object. Readers take `const` handles, also those
 * that parse on first use (fcr_req_query()).
 *
 * @par Ownership
 * The caller keeps what it passes unless a function says it takes it: strings are copied;
 * functions ending in `_new` take a JSON reference as jansson's do, also when they fail;
 * fcr_app_mount() and fcr_router_mount() always take the mounted object. What a reader returns
 * is owned by the object it was read from and lives as long as it says (usually the request).
 *
 * @par Threads
 * Every function runs on the thread of the loop that serves the request and none blocks. Work
 * that would block goes to the worker's thread pool with fcr_defer(): its work function runs on
 * a pool thread and calls no fcrest function but fcr_log(); its done function runs on the loop
 * again.
 */
#ifndef FCREST_H
#define FCREST_H

#include <fcrest/version.h>
#include <fcrest/error.h>
#include <fcrest/core.h>
#include <fcrest/router.h>
#include <fcrest/app.h>
#include <fcrest/multipart.h>

#endif
