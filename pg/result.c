/* Reading a result, and the framework's answer to a failed query. */
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

static bool has_rows(const fcr_pg_result *res)
{
    return res && !res->error && res->pg && PQresultStatus(res->pg) == PGRES_TUPLES_OK;
}

int fcr_pg_result_error(const fcr_pg_result *res)
{
    return res ? res->error : FCR_EINVAL;
}

const char *fcr_pg_result_sqlstate(const fcr_pg_result *res)
{
    return res && res->error ? res->sqlstate : "";
}

const char *fcr_pg_result_message(const fcr_pg_result *res)
{
    return res && res->error ? res->message : "";
}

int fcr_pg_result_rows(const fcr_pg_result *res)
{
    return has_rows(res) ? PQntuples(res->pg) : 0;
}

int fcr_pg_result_columns(const fcr_pg_result *res)
{
    return has_rows(res) ? PQnfields(res->pg) : 0;
}

const char *fcr_pg_result_column_name(const fcr_pg_result *res, int col)
{
    if (!has_rows(res) || col < 0 || col >= PQnfields(res->pg))
        return NULL;
    return PQfname(res->pg, col);
}

static bool in_range(const fcr_pg_result *res, int row, int col)
{
    return has_rows(res) && row >= 0 && col >= 0 && row < PQntuples(res->pg) &&
           col < PQnfields(res->pg);
}

const char *fcr_pg_result_value(const fcr_pg_result *res, int row, int col)
{
    return in_range(res, row, col) ? PQgetvalue(res->pg, row, col) : NULL;
}

bool fcr_pg_result_is_null(const fcr_pg_result *res, int row, int col)
{
    return in_range(res, row, col) && PQgetisnull(res->pg, row, col);
}

long long fcr_pg_result_affected(const fcr_pg_result *res)
{
    if (!res || res->error || !res->pg)
        return -1;
    const char *n = PQcmdTuples(res->pg);
    if (!n || !*n)
        return -1;
    return strtoll(n, NULL, 10);
}

struct pg_result *fcr_pg_result_pg(const fcr_pg_result *res)
{
    return res ? res->pg : NULL;
}

bool fcr_pg_result_retryable(const fcr_pg_result *res)
{
    if (!res || !res->error)
        return false;
    if (res->error == FCR_ECLOSED || res->error == FCR_ETIMEDOUT || res->error == FCR_EAGAIN)
        return true;
    const char *s = res->sqlstate;
    if (res->error != FCR_EIO || strlen(s) != 5)
        return false;
    return strncmp(s, "08", 2) == 0 || strncmp(s, "53", 2) == 0 ||
           (strncmp(s, "57P0", 4) == 0 && s[4] >= '1' && s[4] <= '5') || strcmp(s, "40001") == 0 ||
           strcmp(s, "40P01") == 0;
}

int fcr_pg_res_set_error(fcr_res *res, const fcr_pg_result *result)
{
    if (!res || !result || !result->error)
        return FCR_EINVAL;
    bool retry = fcr_pg_result_retryable(result);
    fcr_log(FCR_LOG_WARN, "pg: query failed (%s%s%s): %s", fcr_err_name(result->error),
            result->sqlstate[0] ? ", SQLSTATE " : "", result->sqlstate, result->message);
    json_t *ext = NULL;
    if (result->sqlstate[0]) {
        ext = json_pack("{s:s}", "sqlstate", result->sqlstate);
        if (!ext)
            return FCR_ENOMEM;
    }
    int rc = fcr_res_set_problem_new(res, retry ? 503 : 500, NULL,
                                     retry ? "database unavailable" : "database error", ext);
    if (rc == 0 && retry)
        rc = fcr_res_set_header(res, "Retry-After", "1");
    return rc;
}
