/**
 * @file fcrest.h
 * @brief fcrest: FastCGI application library with a JSON REST router. Umbrella header.
 *
 * Includes every public header: fcrest/version.h, fcrest/error.h (error codes and logging),
 * fcrest/core.h (the FastCGI server), fcrest/router.h (the path router) and fcrest/app.h (the
 * application framework). A program may include this one instead of the single headers and
 * link with the flags of `pkg-config --libs fcrest`.
 */
#ifndef FCREST_H
#define FCREST_H

#include <fcrest/version.h>
#include <fcrest/error.h>
#include <fcrest/core.h>
#include <fcrest/router.h>
#include <fcrest/app.h>

#endif
