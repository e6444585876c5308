/* libFuzzer target: the router against a plain scan of its routes.
 *
 * fcr_router_match() tries only the routes its segment index names for the path (literal
 * segments and "any segment" edges, merged by registration order, plus the patterns it cannot
 * decompose) and skips a route whose literal prefix the path lacks. This target builds a
 * router from the input and checks that every lookup gives the answer of the simplest
 * possible router, written here with PCRE2 directly: every route and mount tried in
 * registration order, no index, no prefix test.
 *
 * Input: lines ('\n'-separated), each one of
 *   r<methods> <pattern>   a route: <methods> letters of G H P U D A(PATCH) O T C, the pattern
 *                          the rest of the line (up to a NUL byte)
 *   m<prefix>              mounts a new router under <prefix> in the current one; the lines
 *                          that follow fill it, up to
 *   e                      which ends the innermost mount
 *   ?<path>                a path to look up (any bytes)
 *   L<layout><count>       <count> (decimal) routes in the current router, shaped as REST
 *                          services lay them out: <layout> 0 distinct first segments
 *                          ("/res<k>/(?<id>[0-9]+)"), 1 under one prefix ("/api/v1/res<k>/..."),
 *                          2 a parameter first ("/(?<tenant>[a-z]+)/res<k>/..."); route i has
 *                          one of four shapes of its layout (i mod 4) and k = i mod 7, so that
 *                          routes overlap and registration order decides
 * Other lines are ignored. Each path is looked up for every method (and 0, an unknown one)
 * with and without FCR_MATCH_DECODE; both answers must agree on the status, the target,
 * head_as_get, the Allow set and every param (name and bytes). fcr_router_add() must refuse
 * exactly the patterns PCRE2 refuses, or that have more than FCR_MAX_PATH_PARAMS names, and
 * fcr_router_mount() exactly the prefixes its contract refuses.
 *
 * The scan uses PCRE2 as the router does (same options, JIT with a stack of the same size),
 * so a match limit hit makes a route fail in both alike. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fcrest/router.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PCRE2_MATCH_INVALID_UTF
#define PCRE2_MATCH_INVALID_UTF 0
#endif

/* What fcr_router_add() promises: anchored at both ends, UTF-8, invalid UTF-8 never matches,
 * no \C. */
#define OPTIONS                                                                                    \
    (PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF |                    \
     PCRE2_NEVER_BACKSLASH_C)

#define MAX_ROUTES 48 /* routes and mounts, in all routers */
#define MAX_DEPTH  4  /* mounts within mounts */
#define MAX_PATHS  12
#define MAX_LINE   256

static void must(bool ok)
{
    if (!ok)
        abort();
}

/* ---- the plain router ------------------------------------------------------------------ */

struct plain;

struct plain_entry {
    bool mount;
    /* a route */
    unsigned methods;
    pcre2_code *code;
    int id; /* its target is &targets[id] */
    /* a mount */
    char *prefix;
    size_t prefix_len; /* 0 for "/" */
    struct plain *child;
};

struct plain {
    struct plain_entry e[MAX_ROUTES];
    size_t n;
};

static int targets[MAX_ROUTES];

static pcre2_match_context *mctx;
static pcre2_jit_stack *jit_stack;

static void plain_free(struct plain *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++) {
        pcre2_code_free(p->e[i].code);
        free(p->e[i].prefix);
        plain_free(p->e[i].child);
    }
    free(p);
}

/* One param of a matching route: its name and the bytes it matched. */
struct span {
    const char *name;
    const char *at;
    size_t len;
};

/* A route that matches a path (whatever the method), in registration order. */
struct hit {
    int id;
    unsigned methods;
    size_t nparams;
    struct span params[FCR_MAX_PATH_PARAMS];
};

struct hits {
    struct hit h[MAX_ROUTES];
    size_t n;
};

/* The params of a route that matched: for each name, the first group of that name (in the
 * order of PCRE2's name table) that is set; PCRE2's by-name functions choose the same one. */
static void hit_params(const pcre2_code *code, pcre2_match_data *md, const char *path,
                       struct hit *h)
{
    uint32_t count = 0, size = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(code, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(code, PCRE2_INFO_NAMEENTRYSIZE, &size);
    pcre2_pattern_info(code, PCRE2_INFO_NAMETABLE, &table);
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    h->nparams = 0;
    for (uint32_t i = 0; i < count; i++) {
        const char *name = (const char *)table + (size_t)i * size + 2;
        if (i > 0 && strcmp(name, (const char *)table + (size_t)(i - 1) * size + 2) == 0)
            continue; /* a name shared by several groups: done at its first entry */
        PCRE2_SIZE len = 0;
        if (pcre2_substring_length_byname(md, (PCRE2_SPTR)name, &len) != 0)
            continue; /* no group of that name took part in the match */
        PCRE2_SPTR first, last;
        int esize = pcre2_substring_nametable_scan(code, (PCRE2_SPTR)name, &first, &last);
        must(esize > 0);
        for (PCRE2_SPTR ent = first; ent <= last; ent += esize) {
            uint32_t g = (uint32_t)ent[0] << 8 | ent[1];
            if (ov[2 * g] == PCRE2_UNSET)
                continue;
            must(ov[2 * g] <= ov[2 * g + 1] && ov[2 * g + 1] - ov[2 * g] == len);
            must(h->nparams < FCR_MAX_PATH_PARAMS);
            h->params[h->nparams++] = (struct span){name, path + ov[2 * g], len};
            break;
        }
    }
}

/* Every route of `p` and its mounts that matches `path`, in registration order. */
static void plain_scan(const struct plain *p, const char *path, size_t len, struct hits *out)
{
    for (size_t i = 0; i < p->n; i++) {
        const struct plain_entry *e = &p->e[i];
        if (e->mount) {
            size_t n = e->prefix_len;
            if (len >= n && memcmp(path, e->prefix, n) == 0 &&
                (n == 0 || len == n || path[n] == '/'))
                plain_scan(e->child, path + n, len - n, out);
            continue;
        }
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(e->code, NULL);
        must(md != NULL);
        int rc = pcre2_match(e->code, (PCRE2_SPTR)path, len, 0, 0, md, mctx);
        /* The whole path, from its first byte to its last. */
        if (rc >= 0 && pcre2_get_startchar(md) == 0 && pcre2_get_ovector_pointer(md)[1] == len) {
            struct hit *h = &out->h[out->n++];
            h->id = e->id;
            h->methods = e->methods;
            hit_params(e->code, md, path, h);
        }
        pcre2_match_data_free(md);
    }
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

/* The value of a param: decoded (-1 for an invalid escape) or verbatim, into `out`. */
static long value_of(const struct span *s, bool decode, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < s->len; i++) {
        unsigned char c = (unsigned char)s->at[i];
        if (decode && c == '%') {
            if (s->len - i < 3)
                return -1;
            int hi = hexval((unsigned char)s->at[i + 1]), lo = hexval((unsigned char)s->at[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = (char)c;
        }
    }
    return (long)o;
}

/* True when every param of `h` has a value that is a whole C string. */
static bool hit_valid(const struct hit *h, bool decode, char *buf)
{
    for (size_t i = 0; i < h->nparams; i++) {
        long n = value_of(&h->params[i], decode, buf);
        if (n < 0 || memchr(buf, '\0', (size_t)n) != NULL)
            return false;
    }
    return true;
}

/* ---- comparing ------------------------------------------------------------------------- */

static void compare(fcr_router *r, const struct hits *all, const char *path, size_t len,
                    unsigned method, bool decode)
{
    size_t cap = (len + 1) * FCR_MAX_PATH_PARAMS;
    char *scratch = malloc(cap);
    char *buf = malloc(len + 1);
    must(scratch && buf);
    fcr_match m;
    int rc =
        fcr_router_match(r, method, path, len, decode ? FCR_MATCH_DECODE : 0, &m, scratch, cap);
    must(rc == 0);

    /* The plain answer: the routes whose params are valid serve the path; the first one that
     * serves the method wins, else for HEAD the first that serves GET. */
    unsigned allowed = 0;
    const struct hit *win = NULL, *get = NULL;
    for (size_t i = 0; i < all->n; i++) {
        const struct hit *h = &all->h[i];
        if (!hit_valid(h, decode, buf))
            continue;
        allowed |= h->methods;
        if (win == NULL && (h->methods & method) != 0)
            win = h;
        if (get == NULL && (h->methods & FCR_GET) != 0)
            get = h;
    }
    bool head_as_get = false;
    if (win == NULL && method == FCR_HEAD && get != NULL) {
        win = get;
        head_as_get = true;
    }
    if (allowed != 0) {
        allowed |= FCR_OPTIONS;
        if (allowed & FCR_GET)
            allowed |= FCR_HEAD;
    }
    fcr_match_status status = allowed == 0            ? FCR_MATCH_NOT_FOUND
                              : win != NULL           ? FCR_MATCH_FOUND
                              : method == FCR_OPTIONS ? FCR_MATCH_OPTIONS
                                                      : FCR_MATCH_NOT_ALLOWED;

    must(m.status == status);
    must(m.allowed == allowed);
    if (status != FCR_MATCH_FOUND) {
        must(m.target == NULL && m.nparams == 0 && !m.head_as_get);
    } else {
        must(m.target == &targets[win->id]);
        must(m.head_as_get == head_as_get);
        must(m.nparams == win->nparams);
        for (size_t i = 0; i < win->nparams; i++) {
            const struct span *s = &win->params[i];
            long n = value_of(s, decode, buf);
            must(n >= 0);
            const char *v = fcr_match_param(&m, s->name);
            must(v != NULL);
            size_t k = 0;
            while (k < m.nparams && strcmp(m.params[k].name, s->name) != 0)
                k++;
            must(k < m.nparams && m.params[k].value == v && m.params[k].len == (size_t)n);
            must(memcmp(v, buf, (size_t)n) == 0 && v[n] == '\0');
        }
    }
    free(scratch);
    free(buf);
}

/* ---- building both from the input ------------------------------------------------------ */

static unsigned parse_methods(const char *s, size_t n)
{
    static const char letters[] = "GHPUDAOTC";
    unsigned set = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = memchr(letters, s[i], sizeof letters - 1);
        if (p != NULL)
            set |= 1u << (p - letters);
    }
    return set;
}

/* A copy of the line's bytes up to the first NUL, NUL-terminated. */
static char *cstr(const char *s, size_t n)
{
    const char *z = memchr(s, '\0', n);
    if (z != NULL)
        n = (size_t)(z - s);
    char *c = malloc(n + 1);
    must(c != NULL);
    memcpy(c, s, n);
    c[n] = '\0';
    return c;
}

/* The number of distinct names in a compiled pattern. */
static uint32_t distinct_names(const pcre2_code *code)
{
    uint32_t count = 0, size = 0, n = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(code, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(code, PCRE2_INFO_NAMEENTRYSIZE, &size);
    pcre2_pattern_info(code, PCRE2_INFO_NAMETABLE, &table);
    for (uint32_t i = 0; i < count; i++) {
        const char *name = (const char *)table + (size_t)i * size + 2;
        if (i == 0 || strcmp(name, (const char *)table + (size_t)(i - 1) * size + 2) != 0)
            n++;
    }
    return n;
}

static void add_route(fcr_router *r, struct plain *p, int *nroutes, const char *s, size_t n)
{
    const char *sp = memchr(s, ' ', n);
    if (sp == NULL)
        return;
    unsigned methods = parse_methods(s, (size_t)(sp - s));
    char *pattern = cstr(sp + 1, n - (size_t)(sp + 1 - s));
    int id = *nroutes;
    int rc = fcr_router_add(r, methods, pattern, &targets[id], NULL);

    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *code =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, OPTIONS, &err, &off, NULL);
    if (methods == 0) {
        must(rc == FCR_EINVAL);
    } else if (code == NULL || distinct_names(code) > FCR_MAX_PATH_PARAMS) {
        must(rc == FCR_EPARSE);
    } else {
        must(rc == 0);
    }
    free(pattern);
    if (rc != 0) {
        pcre2_code_free(code);
        return;
    }
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    p->e[p->n++] = (struct plain_entry){.methods = methods, .code = code, .id = id};
    (*nroutes)++;
}

/* Mounts a new router under the prefix; returns it (and its plain twin in `*child`), or NULL
 * when the router refuses the prefix. */
static fcr_router *add_mount(fcr_router *r, struct plain *p, const char *s, size_t n,
                             struct plain **child)
{
    char *prefix = cstr(s, n);
    size_t len = strlen(prefix);
    fcr_router *c = fcr_router_new();
    must(c != NULL);
    int rc = fcr_router_mount(r, prefix, c);
    bool valid = len > 0 && prefix[0] == '/' && (len == 1 || prefix[len - 1] != '/');
    must(valid ? rc == 0 : rc == FCR_EINVAL);
    if (rc != 0) {
        free(prefix);
        return NULL;
    }
    *child = calloc(1, sizeof **child);
    must(*child != NULL);
    p->e[p->n++] = (struct plain_entry){
        .mount = true, .prefix = prefix, .prefix_len = len == 1 ? 0 : len, .child = *child};
    return c;
}

/* The shapes of the L lines, by layout: each with one %d for k. */
static const char *const layouts[3][4] = {
    {"/res%d/(?<id>[0-9]+)", "/res%d", "/res%d/(?<id>[0-9]+)/items/(?<item>[a-z0-9-]+)",
     "/res%d(?:/(?<id>[0-9]+))?"},
    {"/api/v1/res%d/(?<id>[0-9]+)", "/api/v1/res%d", "/api/v1/(?<kind>[a-z]+)%d/(?<id>[^/]+)",
     "/api/v1/res%d/.*"},
    {"/(?<tenant>[a-z]+)/res%d/(?<id>[0-9]+)", "/(?<tenant>[^/]+)/res%d",
     "/(?<tenant>[a-z]+)/(?<x>[a-z]+)%d/(?<id>\\d+)", "/[a-z]+/res%d/(?<id>[0-9]+)/?"},
};

/* An L line: routes of a layout, as lines "r<methods> <pattern>" would add them. */
static void add_layout(fcr_router *r, struct plain *p, int *nroutes, int *entries, const char *s,
                       size_t n)
{
    if (n < 2 || s[0] < '0' || s[0] > '2')
        return;
    int layout = s[0] - '0', count = 0;
    for (size_t i = 1; i < n && i < 4 && s[i] >= '0' && s[i] <= '9'; i++)
        count = count * 10 + (s[i] - '0');
    static const char *const methods[] = {"G", "GP", "UD", "GH", "P"};
    for (int i = 0; i < count && *entries < MAX_ROUTES; i++) {
        char line[128];
        int len = snprintf(line, sizeof line, "%s ", methods[i % 5]);
        len += snprintf(line + len, sizeof line - (size_t)len, layouts[layout][i % 4], i % 7);
        size_t before = p->n;
        add_route(r, p, nroutes, line, (size_t)len);
        *entries += p->n > before;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (mctx == NULL) {
        mctx = pcre2_match_context_create(NULL);
        jit_stack = pcre2_jit_stack_create(32 * 1024, 512 * 1024, NULL); /* as the router */
        must(mctx && jit_stack);
        pcre2_jit_stack_assign(mctx, NULL, jit_stack);
    }
    fcr_router *root = fcr_router_new();
    struct plain *proot = calloc(1, sizeof *proot);
    must(root && proot);
    fcr_router *stack[MAX_DEPTH + 1] = {root};
    struct plain *pstack[MAX_DEPTH + 1] = {proot};
    size_t depth = 0;
    int dead = 0; /* nesting of a refused or too deep mount, whose lines are skipped */
    int entries = 0, nroutes = 0, npaths = 0;
    const char *paths[MAX_PATHS];
    size_t lens[MAX_PATHS];

    const char *s = (const char *)data, *end = s + size;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl != NULL ? (size_t)(nl - s) : (size_t)(end - s);
        const char *line = s;
        s += n + 1;
        if (n == 0 || n > MAX_LINE)
            continue;
        if (line[0] == '?') {
            if (npaths < MAX_PATHS) {
                paths[npaths] = line + 1;
                lens[npaths++] = n - 1;
            }
        } else if (line[0] == 'e') {
            if (dead > 0)
                dead--;
            else if (depth > 0)
                depth--;
        } else if (line[0] == 'm') {
            if (dead > 0 || depth == MAX_DEPTH || entries == MAX_ROUTES) {
                dead++;
                continue;
            }
            struct plain *pc;
            fcr_router *c = add_mount(stack[depth], pstack[depth], line + 1, n - 1, &pc);
            entries++;
            if (c == NULL) {
                dead++;
                continue;
            }
            depth++;
            stack[depth] = c;
            pstack[depth] = pc;
        } else if (line[0] == 'L' && dead == 0) {
            add_layout(stack[depth], pstack[depth], &nroutes, &entries, line + 1, n - 1);
        } else if (line[0] == 'r' && dead == 0 && entries < MAX_ROUTES) {
            size_t before = pstack[depth]->n;
            add_route(stack[depth], pstack[depth], &nroutes, line + 1, n - 1);
            entries += pstack[depth]->n > before;
        }
    }

    static const unsigned methods[] = {0,          FCR_GET,   FCR_HEAD,    FCR_POST,  FCR_PUT,
                                       FCR_DELETE, FCR_PATCH, FCR_OPTIONS, FCR_TRACE, FCR_CONNECT};
    for (int i = 0; i < npaths; i++) {
        struct hits *all = malloc(sizeof *all);
        must(all != NULL);
        all->n = 0;
        plain_scan(proot, paths[i], lens[i], all);
        for (size_t k = 0; k < sizeof methods / sizeof methods[0]; k++) {
            compare(root, all, paths[i], lens[i], methods[k], true);
            compare(root, all, paths[i], lens[i], methods[k], false);
        }
        free(all);
    }
    fcr_router_free(root);
    plain_free(proot);
    return 0;
}
