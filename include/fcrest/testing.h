/**
 * @file fcrest/testing.h
 * @brief fcrest testing: requests run through an app in process, or sent to a running
 * application, and their answers parsed, for a service's own test programs.
 *
 * Kept apart from the library a service ships: the functions live in the static library
 * `libfcrest-testing` (pkg-config name `fcrest-testing`), which test programs link besides
 * fcrest; `<fcrest.h>` does not include this header.
 */
#ifndef FCREST_TESTING_H
#define FCREST_TESTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fcrest/app.h>
#include <fcrest/core.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A request as a web server would send it. Zero-initialise and set what you need. */
typedef struct fcr_test_req {
    fcr_role role;      /**< 0: FCR_RESPONDER */
    const char *method; /**< REQUEST_METHOD; NULL: "GET" */
    /** "/notes?limit=2": SCRIPT_NAME (the part before '?'), QUERY_STRING and REQUEST_URI;
        NULL: "/". The app routes on SCRIPT_NAME, which a web server sends percent-decoded:
        write the path decoded ("/notes/café" for a client's "/notes/caf%C3%A9"), as path
        params are taken from it verbatim; with fcr_app_set_route_on_request_uri() the app
        routes on REQUEST_URI, which is raw, and decodes params once. */
    const char *path;
    /** NULL-terminated "Name: value" strings: CONTENT_TYPE, CONTENT_LENGTH or HTTP_NAME
        params */
    const char *const *headers;
    /** NULL-terminated "NAME=value" params sent last (they override) */
    const char *const *params;
    const void *body;        /**< STDIN; NULL: none */
    size_t body_len;         /**< 0 with a body: strlen(body) */
    bool no_content_length;  /**< send the body without CONTENT_LENGTH */
    const void *data;        /**< FILTER: the DATA stream */
    size_t data_len;         /**< FILTER: bytes of `data` (also sent as FCGI_DATA_LENGTH) */
    long long data_last_mod; /**< FILTER: FCGI_DATA_LAST_MOD (0: not sent) */
} fcr_test_req;

/** A response header, owned by the fcr_test_res that holds it. */
typedef struct fcr_test_header {
    char *name;  /**< the header's name as sent, NUL-terminated */
    char *value; /**< its value without leading spaces and tabs, NUL-terminated */
} fcr_test_header;

/** What the application answered. Free with fcr_test_res_free(). */
typedef struct fcr_test_res {
    int status;               /**< from the Status header; 200 when there is none */
    fcr_test_header *headers; /**< in order, the Status header included */
    size_t nheaders;          /**< number of `headers` */
    char *body;               /**< NUL-terminated (the NUL is not counted) */
    size_t body_len;          /**< bytes of `body` */
    char *err;                /**< FCGI_STDERR bytes, NUL-terminated */
    size_t err_len;           /**< bytes of `err` */
    uint32_t app_status;      /**< from END_REQUEST */
    int protocol_status;      /**< from END_REQUEST: 0 REQUEST_COMPLETE, 3 UNKNOWN_ROLE, ... */
} fcr_test_res;

/**
 * Runs `req` through `app` without a network listener: a server on a private loop gets one
 * end of a socketpair, the request goes in as FastCGI records and the answer is parsed into
 * `*res` (which the caller frees with fcr_test_res_free, also on failure). Async handlers run
 * on that loop (fcr_req_loop). `app` and `req` are only read. Returns 0; FCR_ETIMEDOUT when no
 * END_REQUEST came within 30 seconds; FCR_EPROTO for a malformed answer; FCR_EINVAL for a NULL
 * argument, an invalid request (a role out of range, a header without ':', a param without
 * '=') or an app that is mounted in another; FCR_ENOMEM; FCR_EIO.
 */
int fcr_app_test(fcr_app *app, const fcr_test_req *req, fcr_test_res *res);

/**
 * The same exchange with a FastCGI application listening on `addr` ("unix:PATH" or
 * "tcp:HOST:PORT"). Returns like fcr_app_test, or FCR_EADDR / FCR_EIO when it cannot
 * connect.
 */
int fcr_test_send(const char *addr, const fcr_test_req *req, fcr_test_res *res);

/**
 * The first header `name` of `res` (case-insensitive), or NULL. The value is owned by `res`.
 */
const char *fcr_test_res_header(const fcr_test_res *res, const char *name);

/** Frees what `res` holds and zeroes it. NULL is ignored. */
void fcr_test_res_free(fcr_test_res *res);

#ifdef __cplusplus
}
#endif
#endif
