/* fcr_app_run(): configuration from the environment and the command line (the option table
 * is in options.c), listeners, workers. */
#include "options.h"

#include <ev.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fcr_app_run(fcr_app *app, int argc, char **argv)
{
    if (!argv)
        argc = 0;
    const char *prog = argc > 0 && argv[0] ? argv[0] : "fcrest";
    const char *slash = strrchr(prog, '/');
    if (slash)
        prog = slash + 1;
    if (!app)
        return FCR_EINVAL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fcr__opts_usage(stdout, prog, app->run);
            return 0;
        }
    }
    fcr__parse_state ps = {.prog = prog, .run = app->run};
    size_t nprog = app->run ? app->run->n : 0;
    if (nprog && !(ps.pv = calloc(nprog, sizeof *ps.pv)))
        return FCR_ENOMEM;
    const fcr__optval *v = ps.v;
    fcr_server_config cfg;
    if (app->run && app->run->has_base)
        cfg = app->run->base;
    else
        fcr_server_config_init(&cfg);
    int rc = fcr__opts_read_env(&ps);
    if (rc == 0)
        rc = fcr__opts_read_args(&ps, argc, argv);
    if (rc == 0) {
        if (v[O_SOCKET_MODE].set)
            cfg.socket_mode = (unsigned)v[O_SOCKET_MODE].n;
        if (v[O_IDLE_TIMEOUT].set)
            cfg.limits.idle_timeout = v[O_IDLE_TIMEOUT].s;
        if (v[O_INPUT_TIMEOUT].set)
            cfg.limits.input_timeout = v[O_INPUT_TIMEOUT].s;
        if (v[O_OUTPUT_TIMEOUT].set)
            cfg.limits.output_timeout = v[O_OUTPUT_TIMEOUT].s;
        if (v[O_MAX_CONNS].set)
            cfg.limits.max_conns = (unsigned)v[O_MAX_CONNS].n;
        if (v[O_MAX_REQS].set)
            cfg.limits.max_reqs = (unsigned)v[O_MAX_REQS].n;
        if (v[O_MAX_REQS_PER_CONN].set)
            cfg.limits.max_reqs_per_conn = (unsigned)v[O_MAX_REQS_PER_CONN].n;
        if (v[O_MAX_OUTPUT_QUEUE].set)
            cfg.limits.max_output_queue = (size_t)v[O_MAX_OUTPUT_QUEUE].n;
        if (v[O_MAX_PARAM_NAME].set)
            cfg.limits.max_name_len = (size_t)v[O_MAX_PARAM_NAME].n;
        if (v[O_MAX_PARAM_VALUE].set)
            cfg.limits.max_value_len = (size_t)v[O_MAX_PARAM_VALUE].n;
        if (v[O_MAX_PARAMS_BYTES].set)
            cfg.limits.max_params_bytes = (size_t)v[O_MAX_PARAMS_BYTES].n;
        if (v[O_MAX_PARAMS].set)
            cfg.limits.max_params = (size_t)v[O_MAX_PARAMS].n;
        rc = fcr__opts_check_limits(&cfg.limits, prog);
    }
    if (rc == 0)
        rc = fcr__opts_commit(app->run, ps.pv);
    fcr__opts_release(&ps);
    free(ps.pv);
    if (rc < 0) {
        if (rc == FCR_EINVAL)
            fprintf(stderr, "Try '%s --help'.\n", prog);
        free(ps.env_listen);
        return rc;
    }
#ifdef __GLIBC__
    /* glibc serves blocks of the size last freed from the heap (its mmap threshold follows the
     * frees), where a freed one stays in the process's memory. A fixed threshold maps every
     * block of 1 MiB or more, so that a large answer gives its memory back once sent. The
     * program's own choice (MALLOC_MMAP_THRESHOLD_) is kept. */
    if (!getenv("MALLOC_MMAP_THRESHOLD_"))
        mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
#endif
    const char *e = fcr_app_error(app);
    if (e) {
        fprintf(stderr, "%s: not starting: %s\n", prog, e);
        free(ps.env_listen);
        return FCR_EINVAL;
    }
    if (v[O_LOG_LEVEL].set)
        fcr_log_set_level(v[O_LOG_LEVEL].level);
    if (v[O_LOG_FORMAT].set)
        fcr_log_set_format(v[O_LOG_FORMAT].level);
    if (v[O_MAX_BODY].set)
        fcr_app_set_max_body(app, (size_t)v[O_MAX_BODY].n);
    if (v[O_MAX_OUTPUT_MEMORY].set)
        fcr_app_set_max_output_memory(app, (size_t)v[O_MAX_OUTPUT_MEMORY].n);
    if (v[O_THREADS].set)
        fcr_app_set_threads(app, (unsigned)v[O_THREADS].n);
    if (v[O_PREFIX].set && (rc = fcr_app_set_prefix(app, v[O_PREFIX].str)) < 0) {
        free(ps.env_listen);
        return rc;
    }
    if (v[O_ROUTE_ON_URI].set && v[O_ROUTE_ON_URI].n)
        fcr_app_set_route_on_request_uri(app, true);
    if (v[O_ACCESS_LOG].set && v[O_ACCESS_LOG].n)
        fcr_app_set_access_log(app, true);

    struct ev_loop *loop = ev_default_loop(0);
    if (!loop) {
        free(ps.env_listen);
        return FCR_ENOMEM;
    }
    int err = 0;
    fcr_server *srv = fcr_app_server_new(app, loop, &cfg, &err);
    if (!srv) {
        fprintf(stderr, "%s: cannot create the server: %s\n", prog, fcr_strerror(err));
        free(ps.env_listen);
        return err;
    }
    rc = 0;
    for (size_t i = 0; i < ps.nlisten && rc == 0; i++) {
        rc = fcr_server_listen(srv, ps.listen[i]);
        if (rc == FCR_EIO)
            fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, ps.listen[i], strerror(errno));
        else if (rc < 0)
            fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, ps.listen[i], fcr_strerror(rc));
        else
            fcr_log(FCR_LOG_INFO, "listening on %s", ps.listen[i]);
    }
    if (rc == 0 && ps.nlisten == 0) {
        rc = fcr_server_listen_inherited(srv);
        if (rc == 0) {
            fprintf(stderr,
                    "%s: nothing to listen on: use --listen or start it from a web "
                    "server\n",
                    prog);
            rc = FCR_EADDR;
        } else if (rc > 0) {
            rc = 0;
        }
    }
    if (rc == 0) {
        unsigned workers = v[O_WORKERS].set ? (unsigned)v[O_WORKERS].n : 1;
        double grace = v[O_SHUTDOWN_TIMEOUT].set ? v[O_SHUTDOWN_TIMEOUT].s : 10.0;
        rc = fcr_server_run_workers(srv, workers, grace);
    }
    fcr_server_free(srv);
    free(ps.env_listen);
    return rc;
}
