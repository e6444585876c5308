/* fcrest: FastCGI application library with a JSON REST router. Umbrella header. */
#ifndef FCREST_H
#define FCREST_H

#include <fcrest/error.h>
#include <fcrest/core.h>
#if __has_include(<fcrest/router.h>)
#include <fcrest/router.h>
#endif
#if __has_include(<fcrest/app.h>)
#include <fcrest/app.h>
#endif

#endif
