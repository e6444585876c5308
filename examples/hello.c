/* hello: the smallest fcrest app. GET /hello answers 200 text/plain "Hello, world!".
 *
 * Usage: hello [--listen unix:PATH | --listen tcp:HOST:PORT]... (see --help) */
#include <fcrest.h>

#include <stdio.h>

static fcr_handler_result hello(fcr_req *req, fcr_res *res, void *data)
{
    (void)req, (void)data;
    int rc = fcr_res_add_header(res, "Content-Type", "text/plain");
    if (rc == 0)
        rc = fcr_res_set_body(res, "Hello, world!", 13);
    return rc;
}

int main(int argc, char **argv)
{
    fcr_app *app = fcr_app_new();
    if (!app) {
        fprintf(stderr, "hello: out of memory\n");
        return 1;
    }
    fcr_app_route(app, FCR_GET, "/hello", hello, NULL);
    int rc = fcr_app_run(app, argc, argv);
    fcr_app_free(app);
    return rc == 0 ? 0 : 1;
}
