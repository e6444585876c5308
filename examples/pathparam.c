/* pathparam: shows what a handler gets as a path param. GET /p/<v> answers 200
 * application/json {"v":"<v>"} with the value of fcr_req_path_param(req, "v") for the route
 * "/p/(?<v>[^/]+)"; a value that is not UTF-8 (and so cannot be a JSON string) gets 400
 * problem+json. Any other path is 404 problem+json.
 *
 * A value is the client's bytes decoded exactly once: behind a web server that passes the
 * decoded path as SCRIPT_NAME + PATH_INFO (the default), a client's /p/100%25 gives "100%" and
 * /p/%252e%252e gives "%2e%2e"; with --route-on-request-uri the app decodes REQUEST_URI's raw
 * path itself, to the same values. The end-to-end tests run it behind Apache, nginx and
 * lighttpd with the files of deploy/.
 *
 * It also answers FastCGI AUTHORIZER requests, letting every request through, as a web server
 * configured with an authorizer for the mount (deploy/lighttpd/notes.conf) asks one first.
 *
 * Usage: pathparam [--listen unix:PATH | --listen tcp:HOST:PORT]... [--prefix PATH]
 *                  [--route-on-request-uri] (see --help) */
#include <fcrest.h>

#include <stdio.h>

static fcr_handler_result echo_param(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    json_t *body = json_pack("{s:s}", "v", fcr_req_path_param(req, "v"));
    if (!body) /* json_pack refuses a string that is not UTF-8 */
        return fcr_res_set_problem(res, 400, "the path param is not UTF-8");
    return fcr_res_set_json_new(res, 200, body); /* takes over `body` */
}

static fcr_auth_result allow_all(fcr_req *req, fcr_res *res, fcr_auth *auth, void *data)
{
    (void)req, (void)res, (void)auth, (void)data;
    return FCR_ALLOW;
}

int main(int argc, char **argv)
{
    fcr_app *app = fcr_app_new();
    if (!app) {
        fprintf(stderr, "pathparam: out of memory\n");
        return 1;
    }
    fcr_app_route(app, FCR_GET, "/p/(?<v>[^/]+)", echo_param, NULL);
    fcr_app_set_authorizer(app, allow_all, NULL);
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}
