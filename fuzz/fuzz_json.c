/* libFuzzer target for the JSON body helper.
 *
 * The input is a request body. fcr__json_parse (the parser behind fcr_req_parse_json) must either
 * give a value that survives a dump and reload unchanged (and that the framework's own JSON
 * writer writes byte for byte as jansson's dump does), or say where the text is invalid.
 * The same body then goes through the whole request path: fcr_app_test sends it as a POST to
 * an app whose handler answers fcr_req_parse_json's value, or lets fcr_req_parse_json fill in its
 * 400 problem+json, and the answer must agree with the direct parse: 200 with an equal value, or
 * 400 whose detail is the parser's message (or the stand-in for a message that is not
 * UTF-8). */
#include "app/app_int.h"

#include <fcrest/testing.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static fcr_app *app;

static void must(bool ok)
{
    if (!ok)
        abort();
}

/* Visits every value, branching on its type and nesting depth, so that the fuzzer (which sees
 * no coverage inside jansson) keeps inputs of new shapes. Returns the number of values. */
static size_t walk(const json_t *j, unsigned depth)
{
    size_t n = 1;
    unsigned bucket = depth < 4 ? depth : depth < 16 ? 4 : 5;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        must(bucket <= 5);
        json_object_foreach((json_t *)j, k, v)
        {
            must(k != NULL && json_object_get(j, k) != NULL);
            n += walk(v, depth + 1);
        }
        break;
    }
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(j); i++)
            n += walk(json_array_get(j, i), depth + 1);
        break;
    case JSON_STRING:
        must(json_string_value(j)[json_string_length(j)] == '\0');
        if (json_string_length(j) > 16)
            n++;
        break;
    case JSON_INTEGER:
        if (json_integer_value(j) < 0)
            n++;
        break;
    case JSON_REAL:
        if (json_real_value(j) != json_real_value(j))
            abort(); /* NaN cannot come from JSON text */
        break;
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL:
        break;
    }
    return n + bucket;
}

static int echo_json(fcr_req *req, fcr_res *res, void *data)
{
    (void)data;
    json_t *j = fcr_req_parse_json(req, res);
    if (!j)
        return 0; /* `res` holds the problem */
    /* A second call answers from the request's cache with the same value. */
    must(fcr_req_parse_json(req, NULL) == j);
    return fcr_res_set_json(res, 200, j);
}

static void setup(void)
{
    fcr_log_set_level(FCR_LOG_ERROR);
    app = fcr_app_new();
    must(app != NULL);
    must(fcr_app_route(app, FCR_POST, "/json", echo_json, NULL) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!app)
        setup();
    char detail[256];
    bool oom = true;
    json_t *direct = fcr__json_parse((const char *)data, size, &oom, detail, sizeof detail);
    must(!oom);
    if (direct) {
        walk(direct, 0);
        char *dump = json_dumps(direct, JSON_COMPACT | JSON_ENCODE_ANY);
        must(dump != NULL);
        /* The framework's own writer (which answers fcr_res_set_json) gives the same bytes. */
        size_t len = strlen(dump);
        must(fcr__json_size(direct) == len);
        char *mine = malloc(len + 1);
        must(mine != NULL);
        must(fcr__json_write(direct, mine, len) == len && memcmp(mine, dump, len) == 0);
        free(mine);
        json_error_t err;
        json_t *again = json_loads(dump, JSON_DECODE_ANY, &err);
        must(again && json_equal(direct, again));
        json_decref(again);
        free(dump);
    } else {
        must(strncmp(detail, "invalid JSON at line ", 21) == 0 && memchr(detail, 0, sizeof detail));
    }

    static const char *const headers[] = {"Content-Type: application/json", NULL};
    fcr_test_req tr = {
        .method = "POST",
        .path = "/json",
        .headers = headers,
        .body = size ? data : NULL,
        .body_len = size,
    };
    fcr_test_res res = {0};
    must(fcr_app_test(app, &tr, &res) == 0);
    json_error_t err;
    json_t *body = json_loadb(res.body, res.body_len, JSON_DECODE_ANY, &err);
    must(body != NULL);
    if (direct) {
        must(res.status == 200 && json_equal(body, direct));
    } else {
        must(res.status == 400);
        const char *ct = fcr_test_res_header(&res, "Content-Type");
        must(ct && strcmp(ct, "application/problem+json") == 0);
        const char *got = json_string_value(json_object_get(body, "detail"));
        json_t *as_json = json_string(detail);
        must(got && strcmp(got, as_json ? detail : "(detail not valid UTF-8)") == 0);
        json_decref(as_json);
    }
    json_decref(body);
    json_decref(direct);
    fcr_test_res_free(&res);
    return 0;
}
