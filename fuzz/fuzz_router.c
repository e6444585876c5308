/* libFuzzer target for router path matching and percent-decoding.
 *
 * Input: one byte choosing the method (its value mod 10: a single fcr_method bit, or 0 for an
 * unknown method) and the decoding (FCR_MATCH_DECODE when its value / 10 is even, else params
 * verbatim), then the path. The path is looked up in a fixed router (literal, digit,
 * catch-all, multi-param, alternation, optional and UTF-8 routes, and a mounted router) with
 * an ample and a too small scratch buffer, and the answer is checked against what the routes
 * allow: a found route's params are the path's bytes where the route says they are,
 * percent-decoded (by a reference decoder here) with FCR_MATCH_DECODE and verbatim without,
 * and a 405 names the allowed methods without the one asked for. fcr_percent_decode() itself
 * runs over the path in both '+' modes, in place and not, against the reference decoder. */
#include <fcrest/router.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { R_USER = 1, R_FILES, R_AB, R_STATIC, R_PETS, R_OPT, R_UTF8, R_API_V1, R_API_ROOT };

static int targets[R_API_ROOT + 1];
static fcr_router *router;

static void must(bool ok)
{
    if (!ok)
        abort();
}

static void build(void)
{
    router = fcr_router_new();
    fcr_router *api = fcr_router_new();
    must(router && api);
    must(fcr_router_add(router, FCR_GET, "/users/(?<id>[0-9]+)", &targets[R_USER], NULL) == 0);
    must(fcr_router_add(router, FCR_GET | FCR_POST, "/files/(?<path>.*)", &targets[R_FILES],
                        NULL) == 0);
    must(fcr_router_add(router, FCR_PUT, "/a/(?<x>[^/]+)/b/(?<y>[^/]*)", &targets[R_AB], NULL) ==
         0);
    must(fcr_router_add(router, FCR_GET, "/static", &targets[R_STATIC], NULL) == 0);
    must(fcr_router_add(router, FCR_DELETE, "/(?<kind>cats|dogs)/(?<name>[^/]+)", &targets[R_PETS],
                        NULL) == 0);
    must(fcr_router_add(router, FCR_GET, "/opt(/(?<tail>.+))?", &targets[R_OPT], NULL) == 0);
    must(fcr_router_add(router, FCR_PATCH, "/\xc3\xbc/(?<u>.+)", &targets[R_UTF8], NULL) == 0);
    must(fcr_router_add(api, FCR_GET | FCR_OPTIONS, "/v1/(?<n>[^/]+)", &targets[R_API_V1], NULL) ==
         0);
    must(fcr_router_add(api, FCR_GET, "/?", &targets[R_API_ROOT], NULL) == 0);
    must(fcr_router_mount(router, "/api", api) == 0);
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool decode; /* the lookup of this input has FCR_MATCH_DECODE */

/* Reference decoder: returns the decoded length, or -1 for a bad escape. */
static long ref_decode(const uint8_t *in, size_t len, uint8_t *out, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '%') {
            if (len - i < 3)
                return -1;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            out[o++] = (uint8_t)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = plus && in[i] == '+' ? ' ' : in[i];
        }
    }
    return (long)o;
}

static const fcr_path_param *param(const fcr_match *m, const char *name)
{
    for (size_t i = 0; i < m->nparams; i++) {
        if (strcmp(m->params[i].name, name) == 0)
            return &m->params[i];
    }
    return NULL;
}

/* The param `name` must be the `len` path bytes at `raw`: decoded with FCR_MATCH_DECODE,
 * verbatim without. */
static void check_param(const fcr_match *m, const char *name, const uint8_t *raw, size_t len)
{
    const fcr_path_param *p = param(m, name);
    must(p != NULL);
    uint8_t *ref = malloc(len + 1);
    must(ref != NULL);
    long n = (long)len;
    if (decode)
        n = ref_decode(raw, len, ref, false);
    else
        memcpy(ref, raw, len);
    must(n >= 0 && (size_t)n == p->len && memcmp(ref, p->value, p->len) == 0);
    must(p->value[p->len] == '\0');
    must(memchr(p->value, '\0', p->len) == NULL); /* a param is a whole C string */
    free(ref);
}

static const uint8_t *find(const uint8_t *s, size_t len, uint8_t c)
{
    return memchr(s, c, len);
}

static void check_found(const fcr_match *m, unsigned method, const uint8_t *path, size_t len)
{
    int which = (int)((int *)m->target - targets);
    must(which >= R_USER && which <= R_API_ROOT);
    switch (which) {
    case R_USER:
        must(len > 7 && memcmp(path, "/users/", 7) == 0 && m->nparams == 1);
        for (size_t i = 7; i < len; i++)
            must(path[i] >= '0' && path[i] <= '9');
        check_param(m, "id", path + 7, len - 7);
        break;
    case R_FILES:
        must(len >= 7 && memcmp(path, "/files/", 7) == 0);
        check_param(m, "path", path + 7, len - 7);
        break;
    case R_AB: {
        must(method == FCR_PUT && len > 3 && memcmp(path, "/a/", 3) == 0);
        const uint8_t *slash = find(path + 3, len - 3, '/');
        must(slash && (size_t)(slash - path) + 3 <= len && memcmp(slash, "/b/", 3) == 0);
        check_param(m, "x", path + 3, (size_t)(slash - path) - 3);
        size_t yoff = (size_t)(slash - path) + 3;
        must(!find(path + yoff, len - yoff, '/'));
        check_param(m, "y", path + yoff, len - yoff);
        break;
    }
    case R_STATIC:
        must(len == 7 && memcmp(path, "/static", 7) == 0 && m->nparams == 0);
        break;
    case R_PETS:
        must(method == FCR_DELETE && len > 6);
        must(memcmp(path, "/cats/", 6) == 0 || memcmp(path, "/dogs/", 6) == 0);
        check_param(m, "kind", path + 1, 4);
        check_param(m, "name", path + 6, len - 6);
        break;
    case R_OPT:
        must(len >= 4 && memcmp(path, "/opt", 4) == 0);
        if (len == 4)
            must(param(m, "tail") == NULL);
        else
            check_param(m, "tail", path + 5, len - 5);
        break;
    case R_UTF8:
        must(method == FCR_PATCH && len > 4 && memcmp(path, "/\xc3\xbc/", 4) == 0);
        check_param(m, "u", path + 4, len - 4);
        break;
    case R_API_V1:
        must(len > 8 && memcmp(path, "/api/v1/", 8) == 0);
        check_param(m, "n", path + 8, len - 8);
        break;
    case R_API_ROOT:
        must((len == 4 && memcmp(path, "/api", 4) == 0) ||
             (len == 5 && memcmp(path, "/api/", 5) == 0));
        break;
    }
    /* HEAD is served by a GET route without a body. */
    must(m->head_as_get == (method == FCR_HEAD));
    must((m->allowed & FCR_OPTIONS) != 0);
}

static void check_decode(const uint8_t *in, size_t len)
{
    char *out = malloc(len + 1);
    uint8_t *ref = malloc(len + 1);
    char *inplace = malloc(len + 1);
    must(out && ref && inplace);
    for (int plus = 0; plus < 2; plus++) {
        size_t n = 0, n2 = 0;
        int rc = fcr_percent_decode((const char *)in, len, out, &n, plus != 0);
        long r = ref_decode(in, len, ref, plus != 0);
        if (r < 0) {
            must(rc == FCR_EPARSE);
        } else {
            must(rc == 0 && n == (size_t)r && memcmp(out, ref, n) == 0 && out[n] == '\0');
            memcpy(inplace, in, len);
            must(fcr_percent_decode(inplace, len, inplace, &n2, plus != 0) == 0 && n2 == n);
            must(memcmp(inplace, ref, n) == 0 && inplace[n] == '\0');
        }
    }
    free(out);
    free(ref);
    free(inplace);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!router)
        build();
    if (size == 0)
        return 0;
    unsigned sel = data[0] % 10;
    unsigned method = sel == 9 ? 0 : 1u << sel;
    decode = (data[0] / 10) % 2 == 0;
    unsigned flags = decode ? FCR_MATCH_DECODE : 0;
    const uint8_t *path = data + 1;
    size_t len = size - 1;

    check_decode(path, len);

    size_t cap = len + FCR_MAX_PATH_PARAMS;
    char *scratch = malloc(cap);
    must(scratch != NULL);
    fcr_match m;
    int rc = fcr_router_match(router, method, (const char *)path, len, flags, &m, scratch, cap);
    if (method == 0) {
        must(rc == FCR_EINVAL || rc == 0);
    } else {
        must(rc == 0);
    }
    if (rc == 0) {
        switch (m.status) {
        case FCR_MATCH_FOUND:
            must(method != 0);
            check_found(&m, method, path, len);
            for (size_t i = 0; i < m.nparams; i++) {
                const char *v = m.params[i].value;
                must(v >= scratch && v + m.params[i].len < scratch + cap);
            }
            break;
        case FCR_MATCH_NOT_FOUND:
            must(m.target == NULL && m.nparams == 0);
            break;
        case FCR_MATCH_NOT_ALLOWED:
            must(m.allowed != 0 && (m.allowed & method) == 0 && m.nparams == 0);
            break;
        case FCR_MATCH_OPTIONS:
            must(method == FCR_OPTIONS && m.allowed != 0);
            break;
        default:
            abort();
        }
        /* A scratch buffer one byte short of the decoded params must be refused, never
         * overrun (ASan watches the exact size). */
        size_t need = 0;
        for (size_t i = 0; m.status == FCR_MATCH_FOUND && i < m.nparams; i++)
            need += m.params[i].len + 1;
        if (need > 0) {
            char *small = malloc(need - 1);
            must(small != NULL);
            fcr_match m2;
            must(fcr_router_match(router, method, (const char *)path, len, flags, &m2, small,
                                  need - 1) == FCR_ETOOBIG);
            must(m2.status == FCR_MATCH_NOT_FOUND && m2.nparams == 0 && m2.target == NULL);
            free(small);
        }
    }
    free(scratch);
    return 0;
}
