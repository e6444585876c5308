/* Authorization: authorizers run as guards inside the app or in the FastCGI AUTHORIZER role, and
 * the variables and user they set (fcr_auth_*). */
#include "app_int.h"

#include <stdio.h>
#include <string.h>

/* ---- Running authorizers -------------------------------------------------------------- */

int fcr__auth_call(fcr__ctx *ctx, fcr_authorizer fn, void *data)
{
    ctx->auth = (fcr_auth){.ctx = ctx};
    ctx->in_handler = true;
    int rc = fn(ctx->req, &ctx->res, &ctx->auth, data);
    ctx->in_handler = false;
    return rc;
}

int fcr__auth_guard_verdict(fcr__ctx *ctx, int rc)
{
    fcr_auth *auth = &ctx->auth;
    if (rc == FCR_ALLOW) {
        const fcr__kv *vars = auth->vars.kv.v;
        for (size_t i = 0; i < auth->vars.kv.n; i++) {
            int e = fcr_req_set_var(ctx->req, vars[i].name, vars[i].value);
            if (e < 0)
                return e;
        }
        if (auth->user)
            ctx->user = auth->user;
        return FCR_CONTINUE;
    }
    if (rc == FCR_DENY) {
        if (ctx->res.status < 400) {
            int e = fcr__res_set_status_problem(&ctx->res, 403, "access denied");
            if (e < 0)
                return e;
        }
        return FCR_STOP;
    }
    return rc < 0 ? rc : FCR_EINVAL;
}

void fcr__auth_role(fcr__ctx *ctx)
{
    fcr__auth_role_verdict(ctx, fcr__auth_call(ctx, ctx->app->authz, ctx->app->authz_data));
}

void fcr__auth_role_verdict(fcr__ctx *ctx, int rc)
{
    if (fcr__deferral_verdict(ctx, rc == FCR_AUTH_ASYNC, rc, FCR__AT_ROLE, "authorizer"))
        return;
    fcr_res *res = &ctx->res;
    if (rc == FCR_ALLOW) {
        fcr__res_reset(res);
        const fcr__kv *vars = ctx->auth.vars.kv.v;
        for (size_t i = 0; i < ctx->auth.vars.kv.n && rc == 0; i++) {
            char name[300];
            snprintf(name, sizeof name, "Variable-%s", vars[i].name);
            rc = fcr_res_add_header(res, name, vars[i].value);
        }
        if (rc < 0)
            fcr__ctx_fail(ctx, rc, "authorizer");
    } else if (rc == FCR_DENY) {
        if (res->status < 400 && (rc = fcr__res_set_status_problem(res, 403, "access denied")) < 0)
            fcr__ctx_fail(ctx, rc, "authorizer");
    } else {
        fcr__ctx_fail(ctx, rc < 0 ? rc : FCR_EINVAL, "authorizer");
    }
    fcr__ctx_send(ctx);
}

/* ---- Authorizer results --------------------------------------------------------------- */

static bool is_var_name(const char *s)
{
    if (!s || !*s || strlen(s) > 256)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

int fcr_auth_set_var(fcr_auth *auth, const char *name, const char *value)
{
    if (!auth || !is_var_name(name) || !fcr__is_header_value(value))
        return FCR_EINVAL;
    return fcr__kv_set(&auth->ctx->arena, &auth->vars, name, value);
}

int fcr_auth_set_user(fcr_auth *auth, const char *var, const char *user)
{
    int rc = fcr_auth_set_var(auth, var, user);
    if (rc < 0)
        return rc;
    auth->user = fcr__kv_find(&auth->vars, var, 0);
    return 0;
}
