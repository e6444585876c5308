/* tutorial.c: a JSON route with a path param, guarded by an authorizer. */
#include <fcrest.h>
#include <string.h>

/* Lets "Authorization: Bearer let-me-in" through as user "guest"; others get 401. */
static int check_token(fcr_req *req, fcr_res *res, fcr_auth *auth, void *data)
{
    (void)data;
    const char *h = fcr_req_header(req, "Authorization");
    if (h && strcmp(h, "Bearer let-me-in") == 0)
        return fcr_auth_set_user(auth, "APP_USER", "guest") == 0 ? FCR_ALLOW : FCR_ENOMEM;
    fcr_res_set_header(res, "WWW-Authenticate", "Bearer");
    fcr_res_set_problem(res, 401, "a bearer token is required");
    return FCR_DENY;
}

/* GET /hello/<name> -> 200 {"hello":"<name>","user":"guest"} */
static int hello(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    json_t *body = json_pack("{s:s, s:s}", "hello", fcr_req_path_param(req, "name"), "user",
                             fcr_req_user(req));
    return fcr_res_set_json_new(res, 200, body); /* takes over `body`, even on failure */
}

int main(int argc, char **argv)
{
    fcr_app *app = fcr_app_new();
    fcr_route *r = fcr_app_route(app, FCR_GET, "/hello/(?<name>[^/]+)", hello, NULL);
    fcr_route_guard(r, check_token, NULL);          /* before the handler, inside the app */
    fcr_app_set_authorizer(app, check_token, NULL); /* the same rule for mod_authnz_fcgi */
    int rc = fcr_app_run(app, argc, argv);          /* --listen tcp:127.0.0.1:9000, --help */
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}
