/* fcrest: FastCGI application library with a JSON REST router. Umbrella header. */
#ifndef FCREST_H
#define FCREST_H

#include <fcrest/version.h>
#include <fcrest/error.h>
#include <fcrest/core.h>
#include <fcrest/router.h>
#include <fcrest/app.h>

#endif
