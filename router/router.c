/* Router: routes and mounts in registration order, indexed by the path segments their
 * patterns prove (segindex.c), matched with PCRE2 (JIT when available). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcrest/router.h>

#include "router/router_int.h"

#ifndef PCRE2_MATCH_INVALID_UTF /* before PCRE2 10.34: invalid UTF-8 makes the match fail */
#define PCRE2_MATCH_INVALID_UTF 0
#endif

/* Anchored at both ends by option rather than by wrapping the pattern, so PCRE2's error
 * offsets point into the pattern as written. Paths are raw bytes from the network: invalid
 * UTF-8 simply does not match. \C could split a UTF-8 character and JIT refuses it. */
#define COMPILE_OPTIONS                                                                            \
    (PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF |                    \
     PCRE2_NEVER_BACKSLASH_C)

#define JIT_STACK_MIN (32 * 1024)
#define JIT_STACK_MAX (512 * 1024)

/* A path param of a route: one name, possibly shared by several groups ((?J) or (?|...)),
 * as a run of entries in PCRE2's name table. */
struct param_name {
    const char *name; /* in the name table of the compiled pattern */
    uint32_t first;   /* first name-table entry with this name */
    uint32_t count;   /* entries with this name */
};

struct route {
    unsigned methods;
    void *target;
    pcre2_code *code;
    const unsigned char *name_table;
    uint32_t entry_size;
    uint32_t nnames;
    struct param_name names[FCR_MAX_PATH_PARAMS];
};

enum entry_kind { ENTRY_ROUTE, ENTRY_MOUNT };

/* A route or a mount, in registration order. */
struct entry {
    enum entry_kind kind;
    /* Every path the entry can match starts with these bytes: a route's literal prefix (a
     * cheap test before running the pattern), a mount's whole prefix. */
    char *lit;
    size_t lit_len;
    union {
        struct route route;
        fcr_router *child;
    } u;
};

struct fcr_router {
    struct entry *entries;
    size_t nentries, cap;
    /* The index: every entry is filed in it, under the segments its paths are known to
     * have (none at all for a pattern the scan cannot follow). */
    fcr__segindex index;
    /* Lookup state, reused by every lookup so that none allocates. */
    pcre2_match_data *md;
    uint32_t md_pairs;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    fcr_router *parent; /* the router this one is mounted in */
};

/* State of one lookup, shared by the routers it descends into through mounts. */
struct lookup {
    unsigned method;
    unsigned allowed;
    int rank; /* of the winner so far: 0 none, 1 GET serving HEAD, 2 the method itself */
    /* FCR_MATCH_DECODE: param values are percent-decoded once; without it, taken verbatim. */
    bool decode;
    fcr_match *m;
    char *scratch;
    size_t cap;
    pcre2_match_context *mctx;
};

fcr_router *fcr_router_new(void)
{
    fcr_router *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->md = pcre2_match_data_create(1, NULL);
    r->mctx = pcre2_match_context_create(NULL);
    if (r->md == NULL || r->mctx == NULL)
        goto fail;
    r->md_pairs = 1;
    /* Without JIT support the stack is not needed; a failure to create it only leaves PCRE2's
     * default (32 KiB on the machine stack). */
    r->jit_stack = pcre2_jit_stack_create(JIT_STACK_MIN, JIT_STACK_MAX, NULL);
    if (r->jit_stack != NULL)
        pcre2_jit_stack_assign(r->mctx, NULL, r->jit_stack);
    return r;
fail:
    pcre2_match_data_free(r->md);
    pcre2_match_context_free(r->mctx);
    free(r);
    return NULL;
}

void fcr_router_free(fcr_router *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nentries; i++) {
        struct entry *e = &r->entries[i];
        free(e->lit);
        if (e->kind == ENTRY_ROUTE)
            pcre2_code_free(e->u.route.code);
        else
            fcr_router_free(e->u.child);
    }
    free(r->entries);
    fcr__segindex_free(&r->index);
    pcre2_match_data_free(r->md);
    pcre2_match_context_free(r->mctx);
    pcre2_jit_stack_free(r->jit_stack);
    free(r);
}

static void set_error(fcr_router_error *err, size_t offset, const char *msg)
{
    if (err == NULL)
        return;
    err->offset = offset;
    snprintf(err->message, sizeof err->message, "%s", msg);
}

static int entries_reserve(fcr_router *r)
{
    if (r->nentries < r->cap)
        return 0;
    if (r->nentries >= UINT32_MAX)
        return FCR_ENOMEM;
    size_t cap = r->cap ? r->cap * 2 : 8;
    struct entry *v = realloc(r->entries, cap * sizeof *v);
    if (v == NULL)
        return FCR_ENOMEM;
    r->entries = v;
    r->cap = cap;
    return 0;
}

/* Reads the named groups of `rt->code` into `rt->names`. */
static int route_names(struct route *rt, fcr_router_error *err)
{
    uint32_t count = 0, size = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(rt->code, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(rt->code, PCRE2_INFO_NAMEENTRYSIZE, &size);
    pcre2_pattern_info(rt->code, PCRE2_INFO_NAMETABLE, &table);
    rt->name_table = table;
    rt->entry_size = size;
    rt->nnames = 0;
    /* Each entry is a 2-byte group number then the NUL-terminated name; entries are sorted by
     * name, so duplicates are adjacent. */
    for (uint32_t i = 0; i < count; i++) {
        const char *name = (const char *)table + (size_t)i * size + 2;
        if (rt->nnames > 0) {
            struct param_name *prev = &rt->names[rt->nnames - 1];
            if (strcmp(prev->name, name) == 0) {
                prev->count++;
                continue;
            }
        }
        if (rt->nnames == FCR_MAX_PATH_PARAMS) {
            char msg[64];
            snprintf(msg, sizeof msg, "more than %d named captures", FCR_MAX_PATH_PARAMS);
            set_error(err, 0, msg);
            return FCR_EPARSE;
        }
        rt->names[rt->nnames++] = (struct param_name){.name = name, .first = i, .count = 1};
    }
    return 0;
}

int fcr_router_add(fcr_router *r, unsigned methods, const char *pattern, void *target,
                   fcr_router_error *err)
{
    if (err != NULL)
        set_error(err, 0, "");
    if (r == NULL || pattern == NULL || methods == 0 || (methods & ~FCR_ANY_METHOD) != 0) {
        set_error(err, 0, "invalid argument");
        return FCR_EINVAL;
    }
    int rc = entries_reserve(r);
    if (rc < 0)
        goto nomem;

    int code_err = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, COMPILE_OPTIONS,
                                     &code_err, &offset, NULL);
    if (code == NULL) {
        if (code_err == PCRE2_ERROR_HEAP_FAILED)
            goto nomem;
        if (err != NULL) {
            PCRE2_UCHAR msg[sizeof err->message];
            /* A message too long for the buffer comes back truncated, which is fine. */
            if (pcre2_get_error_message(code_err, msg, sizeof msg) == PCRE2_ERROR_BADDATA)
                snprintf((char *)msg, sizeof msg, "PCRE2 error %d", code_err);
            set_error(err, offset, (const char *)msg);
        }
        return FCR_EPARSE;
    }
    /* Any JIT failure (no JIT on this platform, out of memory) leaves the interpreter, which
     * pcre2_match() uses when there is no JIT code. */
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);

    struct entry e = {.kind = ENTRY_ROUTE};
    e.u.route = (struct route){.methods = methods, .target = target, .code = code};
    rc = route_names(&e.u.route, err);
    if (rc < 0)
        goto fail;

    uint32_t captures = 0;
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &captures);
    if (captures + 1 > r->md_pairs) {
        pcre2_match_data *md = pcre2_match_data_create(captures + 1, NULL);
        if (md == NULL)
            goto nomem_code;
        pcre2_match_data_free(r->md);
        r->md = md;
        r->md_pairs = captures + 1;
    }

    size_t plen = strlen(pattern);
    char *lit = malloc(plen + 1);
    char *segbuf = malloc(plen + 1);
    fcr__pattern_segs *segs = malloc(sizeof *segs);
    if (lit == NULL || segbuf == NULL || segs == NULL) {
        free(lit);
        free(segbuf);
        free(segs);
        goto nomem_code;
    }
    fcr__pattern_prefix pp;
    fcr__pattern_prefix_scan(pattern, lit, &pp);
    e.lit = lit;
    e.lit_len = pp.lit_len;
    fcr__pattern_segments(pattern, segbuf, segs);

    uint32_t id = (uint32_t)r->nentries;
    rc = fcr__segindex_add(&r->index, segs, segs->exact, !segs->exact, id);
    free(segbuf);
    free(segs);
    if (rc < 0) {
        free(lit);
        goto nomem_code;
    }
    r->entries[r->nentries++] = e;
    return 0;

nomem_code:
    pcre2_code_free(code);
nomem:
    set_error(err, 0, "out of memory");
    return FCR_ENOMEM;
fail:
    pcre2_code_free(code);
    return rc;
}

/* Files mount `id` with the prefix `lit` (`len` bytes, 0 for "/"): its paths are the prefix's
 * segments and either end there or go on. */
static int index_mount(fcr_router *r, const char *lit, size_t len, uint32_t id)
{
    fcr__pattern_segs *segs = calloc(1, sizeof *segs);
    if (segs == NULL)
        return FCR_ENOMEM;
    const char *p = lit, *end = lit + len;
    while (len > 0 && segs->n < FCR__MAX_SEGS) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t n = slash != NULL ? (size_t)(slash - p) : (size_t)(end - p);
        segs->seg[segs->n++] = (fcr__seg){.lit = p, .len = n};
        if (slash == NULL) {
            segs->exact = true; /* all of the prefix's segments are known */
            break;
        }
        p = slash + 1;
    }
    /* "/api" itself when the prefix's segments are all known, and "/api/..." */
    int rc = fcr__segindex_add(&r->index, segs, segs->exact, true, id);
    free(segs);
    return rc;
}

/* True when `r` is `child` or mounted somewhere below it. */
static bool is_within(const fcr_router *r, const fcr_router *child)
{
    for (; r != NULL; r = r->parent) {
        if (r == child)
            return true;
    }
    return false;
}

int fcr_router_mount(fcr_router *r, const char *prefix, fcr_router *child)
{
    if (child == NULL)
        return FCR_EINVAL;
    /* Already mounted, or an ancestor of `r`: freeing it here would free a live router. */
    if (child->parent != NULL || (r != NULL && is_within(r, child)))
        return FCR_EEXIST;
    size_t len = prefix != NULL ? strlen(prefix) : 0;
    if (r == NULL || len == 0 || prefix[0] != '/' || (len > 1 && prefix[len - 1] == '/')) {
        fcr_router_free(child);
        return FCR_EINVAL;
    }
    if (len == 1) /* "/": the child sees whole paths */
        len = 0;
    if (entries_reserve(r) < 0)
        goto nomem;
    char *lit = malloc(len + 1);
    if (lit == NULL)
        goto nomem;
    memcpy(lit, prefix, len);
    lit[len] = '\0';

    uint32_t id = (uint32_t)r->nentries;
    if (index_mount(r, lit, len, id) < 0) {
        free(lit);
        goto nomem;
    }
    r->entries[r->nentries++] =
        (struct entry){.kind = ENTRY_MOUNT, .lit = lit, .lit_len = len, .u.child = child};
    child->parent = r;
    return 0;
nomem:
    fcr_router_free(child);
    return FCR_ENOMEM;
}

/* The bytes of the first set group named by `pn` after a match, or false when none is set. */
static bool param_span(const struct route *rt, const struct param_name *pn, const PCRE2_SIZE *ov,
                       size_t len, size_t *start, size_t *end)
{
    for (uint32_t k = 0; k < pn->count; k++) {
        const unsigned char *ent = rt->name_table + (size_t)(pn->first + k) * rt->entry_size;
        uint32_t group = (uint32_t)ent[0] << 8 | ent[1];
        PCRE2_SIZE s = ov[2 * group], e = ov[2 * group + 1];
        if (s == PCRE2_UNSET || s > e || e > len)
            continue;
        *start = s;
        *end = e;
        return true;
    }
    return false;
}

/* True when the `len` bytes at `s` make a param value: with decoding, they decode to a
 * string without a NUL byte (fcr__percent_valid); verbatim, they hold no NUL byte. Either way
 * the value is a C string that holds all of its bytes. */
static bool param_valid(const struct lookup *st, const char *s, size_t len)
{
    if (st->decode)
        return fcr__percent_valid(s, len);
    return memchr(s, '\0', len) == NULL;
}

/* Copies the params of the route just matched into the caller's scratch, percent-decoded or
 * verbatim. */
static int take_params(struct lookup *st, const struct route *rt, const PCRE2_SIZE *ov,
                       const char *path, size_t len)
{
    fcr_match *m = st->m;
    size_t used = 0;
    m->nparams = 0;
    for (uint32_t i = 0; i < rt->nnames; i++) {
        size_t s, e;
        if (!param_span(rt, &rt->names[i], ov, len, &s, &e))
            continue;
        if (st->cap - used < e - s + 1)
            return FCR_ETOOBIG;
        char *out = st->scratch + used;
        size_t n = e - s;
        if (!st->decode) {
            memcpy(out, path + s, n);
            out[n] = '\0';
        } else if (fcr_percent_decode(path + s, e - s, out, &n, false) < 0) { /* validated */
            return FCR_EPARSE;
        }
        m->params[m->nparams++] = (fcr_path_param){rt->names[i].name, out, n};
        used += n + 1;
    }
    return 0;
}

static int lookup_router(fcr_router *r, const char *path, size_t len, struct lookup *st);

static int try_route(fcr_router *r, const struct route *rt, const char *path, size_t len,
                     struct lookup *st)
{
    int n = pcre2_match(rt->code, (PCRE2_SPTR)path, len, 0, 0, r->md, st->mctx);
    if (n < 0) /* no match, or a resource limit: either way this route does not serve */
        return 0;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
    /* The match must cover the whole path. The compile options ask for that, but with
     * backtracking verbs such as (*ACCEPT) PCRE2's JIT can report a match that starts later or
     * ends early. The start of the match, not ovector[0], which \K moves, is the test. */
    if (pcre2_get_startchar(r->md) != 0 || ov[1] != len)
        return 0;
    /* A param value that cannot be decoded, or that would hold a NUL byte, means the route
     * does not match this path. */
    for (uint32_t i = 0; i < rt->nnames; i++) {
        size_t s, e;
        if (param_span(rt, &rt->names[i], ov, len, &s, &e) && !param_valid(st, path + s, e - s))
            return 0;
    }
    st->allowed |= rt->methods;
    int rank = 0;
    if (rt->methods & st->method)
        rank = 2;
    else if (st->method == FCR_HEAD && (rt->methods & FCR_GET))
        rank = 1;
    if (rank <= st->rank)
        return 0;
    st->rank = rank;
    st->m->target = rt->target;
    st->m->head_as_get = rank == 1;
    return take_params(st, rt, ov, path, len);
}

static int try_entry(fcr_router *r, const struct entry *e, const char *path, size_t len,
                     struct lookup *st)
{
    if (len < e->lit_len || memcmp(path, e->lit, e->lit_len) != 0)
        return 0;
    if (e->kind == ENTRY_ROUTE)
        return try_route(r, &e->u.route, path, len, st);
    /* A mount matches at a segment boundary only: "/api" serves "/api" and "/api/x", not
     * "/apix". */
    if (len > e->lit_len && e->lit_len > 0 && path[e->lit_len] != '/')
        return 0;
    return lookup_router(e->u.child, path + e->lit_len, len - e->lit_len, st);
}

/* Tries the entries that can match `path`, in registration order: the candidate lists of
 * the index merged by entry number (or, when the index gives up on the path, every entry). */
static int lookup_router(fcr_router *r, const char *path, size_t len, struct lookup *st)
{
    fcr__candidates c;
    if (!fcr__segindex_lookup(&r->index, path, len, &c)) {
        for (size_t id = 0; id < r->nentries; id++) {
            int rc = try_entry(r, &r->entries[id], path, len, st);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (c.n == 1) { /* the usual case: one list */
        const fcr__idlist *l = c.list[0];
        for (size_t i = 0; i < l->n; i++) {
            int rc = try_entry(r, &r->entries[l->v[i]], path, len, st);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    size_t pos[FCR__MAX_CAND_LISTS] = {0};
    uint32_t last = UINT32_MAX;
    for (;;) {
        size_t best = c.n;
        for (size_t k = 0; k < c.n; k++) {
            if (pos[k] < c.list[k]->n &&
                (best == c.n || c.list[k]->v[pos[k]] < c.list[best]->v[pos[best]]))
                best = k;
        }
        if (best == c.n)
            return 0;
        uint32_t id = c.list[best]->v[pos[best]++];
        if (id == last) /* defensive: an entry is in one list per lookup */
            continue;
        last = id;
        int rc = try_entry(r, &r->entries[id], path, len, st);
        if (rc < 0)
            return rc;
    }
}

int fcr_router_match(fcr_router *r, unsigned method, const char *path, size_t len, unsigned flags,
                     fcr_match *m, char *scratch, size_t cap)
{
    if (m == NULL)
        return FCR_EINVAL;
    m->status = FCR_MATCH_NOT_FOUND;
    m->target = NULL;
    m->head_as_get = false;
    m->allowed = 0;
    m->nparams = 0;
    if (r == NULL || (path == NULL && len > 0) || (scratch == NULL && cap > 0) ||
        (method & ~FCR_ANY_METHOD) != 0 || (method & (method - 1)) != 0 ||
        (flags & ~(unsigned)FCR_MATCH_DECODE) != 0)
        return FCR_EINVAL;
    if (path == NULL)
        path = "";

    struct lookup st = {.method = method,
                        .decode = (flags & FCR_MATCH_DECODE) != 0,
                        .m = m,
                        .scratch = scratch,
                        .cap = cap,
                        .mctx = r->mctx};
    int rc = lookup_router(r, path, len, &st);
    if (rc < 0) {
        m->target = NULL;
        m->head_as_get = false;
        m->nparams = 0;
        return rc;
    }
    if (st.allowed == 0)
        return 0;
    m->allowed = st.allowed | FCR_OPTIONS;
    if (m->allowed & FCR_GET)
        m->allowed |= FCR_HEAD;
    if (st.rank > 0)
        m->status = FCR_MATCH_FOUND;
    else if (method == FCR_OPTIONS)
        m->status = FCR_MATCH_OPTIONS;
    else
        m->status = FCR_MATCH_NOT_ALLOWED;
    return 0;
}

const char *fcr_match_param(const fcr_match *m, const char *name)
{
    if (m == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < m->nparams && i < FCR_MAX_PATH_PARAMS; i++) {
        if (strcmp(m->params[i].name, name) == 0)
            return m->params[i].value;
    }
    return NULL;
}
