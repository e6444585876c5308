/* Internal: what the core offers the framework layer (app/) beyond the public API. */
#ifndef FCR_CORE_FRAMEWORK_H
#define FCR_CORE_FRAMEWORK_H

#include <fcrest/core.h>

/* The framework's own per-request slot, apart from the user's (fcr_req_userdata), so that a
 * handler may use the user's slot freely. NULL for a new request; cleared when the request is
 * released. */
void fcr__req_set_fwdata(fcr_req *req, void *data);
void *fcr__req_fwdata(const fcr_req *req);

#endif
