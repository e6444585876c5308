/* rest_app: the server side of bench/run's JSON and REST-shaped scenarios.
 *
 * Registers GET /json, which answers a small JSON object built with jansson and handed to
 * fcr_res_set_json_new(), then 50 routes under /api/v1: for each of 25 resources
 * `GET /api/v1/res<i>/(?<id>[0-9]+)` answers {"id": ID, "name": "res<i>", "ok": true} and
 * `POST /api/v1/res<i>` (application/json) parses a small JSON object body and answers it back
 * with 201 and an id added. bench/run drives /json with fcgi_load and a mix of the GET and POST
 * routes with wrk (bench/rest_mix.lua) through Apache and nginx.
 *
 * Usage: rest_app [--listen ADDR] [--workers N] ... (see --help) */
#include <fcrest.h>

#include <stdio.h>
#include <stdlib.h>

#define RESOURCES 25

static char names[RESOURCES][16];

static fcr_handler_result json_route(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    return fcr_res_set_json_new(
        res, 200, json_pack("{s:s, s:i, s:b}", "message", "Hello, world!", "id", 42, "ok", 1));
}

static fcr_handler_result get_item(fcr_req *req, fcr_res *res, void *data)
{
    const char *id = fcr_req_path_param(req, "id");
    long long n = id ? strtoll(id, NULL, 10) : 0;
    return fcr_res_set_json_new(
        res, 200,
        json_pack("{s:I, s:s, s:b}", "id", (json_int_t)n, "name", (const char *)data, "ok", 1));
}

static fcr_handler_result create_item(fcr_req *req, fcr_res *res, void *data)
{
    json_t *doc = fcr_req_parse_json(req, res);
    if (!doc)
        return FCR_DONE; /* res holds the 400 (or 500) problem */
    if (!json_is_object(doc))
        return fcr_res_set_problem(res, 422, "the body must be a JSON object");
    json_t *out = json_deep_copy(doc);
    if (out && (json_object_set_new(out, "id", json_integer(7)) != 0 ||
                json_object_set_new(out, "kind", json_string((const char *)data)) != 0)) {
        json_decref(out);
        out = NULL;
    }
    return fcr_res_set_json_new(res, 201, out);
}

int main(int argc, char **argv)
{
    fcr_app *app = fcr_app_new();
    if (!app) {
        fprintf(stderr, "rest_app: out of memory\n");
        return 1;
    }
    fcr_app_route(app, FCR_GET, "/json", json_route, NULL);
    for (int i = 0; i < RESOURCES; i++) {
        char pattern[64];
        snprintf(names[i], sizeof names[i], "res%d", i);
        snprintf(pattern, sizeof pattern, "/api/v1/res%d/(?<id>[0-9]+)", i);
        fcr_app_route(app, FCR_GET, pattern, get_item, names[i]);
        snprintf(pattern, sizeof pattern, "/api/v1/res%d", i);
        fcr_route_consumes(fcr_app_route(app, FCR_POST, pattern, create_item, names[i]),
                           "application/json");
    }
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}
