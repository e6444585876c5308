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
 * libev loop. Its public API is in five headers, all included by fcrest.h:
 *
 * - fcrest/app.h: the framework applications are written against: routes, middleware,
 *   authorizers, requests, responses, fcr_app_run(), and in-process testing (fcr_app_test()).
 * - fcrest/router.h: the method + PCRE2 pattern router the framework uses, usable on its own.
 * - fcrest/core.h: the FastCGI 1.0 server underneath: listeners, connections, requests,
 *   graceful stop and worker processes.
 * - fcrest/error.h: the error codes (::fcr_err) and the log.
 * - fcrest/version.h: the version of the headers and of the library.
 *
 * Every function says what it does, who owns its arguments and results, and how it fails:
 * functions that can fail return 0 (or a non-negative count) or a negative ::fcr_err code, and
 * functions that return pointers return NULL.
 */
#ifndef FCREST_H
#define FCREST_H

#include <fcrest/version.h>
#include <fcrest/error.h>
#include <fcrest/core.h>
#include <fcrest/router.h>
#include <fcrest/app.h>

#endif
