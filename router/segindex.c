/* The router's segment index: a trie of path segments.
 *
 * Each entry (route or mount) is filed at the node its known segments lead to
 * (fcr__pattern_segments): literal segments are edges keyed by their bytes, a segment that may
 * be anything is the node's one "any" edge. A node keeps two lists in registration order: the
 * entries whose paths end there and those whose paths go on past it (a pattern whose scan
 * stopped early, a mount). A lookup walks the path's segments through every branch that can
 * match (the literal edge of the segment and the "any" edge, from each node reached so far)
 * and collects the lists that apply; the router merges them by entry number and runs each
 * candidate's pattern, so the answer is the plain scan's. The literal edges of all nodes share
 * one hash table keyed by (parent node, segment bytes). Nothing is allocated per lookup. */
#include <stdlib.h>
#include <string.h>

#include <fcrest/error.h>

#include "router/router_int.h"

/* Nodes followed at once in one lookup; beyond that the router tries every entry. */
#define MAX_ACTIVE 32

struct fcr__segnode {
    fcr__idlist ends; /* entries whose paths end at this node */
    fcr__idlist rest; /* entries whose paths have more segments after this node's */
    /* The first literal edge, also kept here: a node with one literal edge (the root's "",
     * "api" then "v1") is followed without hashing the segment. */
    const char *key1;
    size_t key1_len;
    uint32_t child1;
    uint32_t any;  /* the child for any segment; 0: none (the root is no one's child) */
    uint32_t nlit; /* literal edges from this node */
};

struct fcr__segedge {
    char *key; /* the segment's bytes (NUL-terminated copy); NULL: the slot is free */
    size_t key_len;
    uint32_t hash;
    uint32_t parent;
    uint32_t child;
};

/* FNV-1a of a segment. The keys in the table come from the application's patterns. */
static uint32_t seg_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* memcmp() for the short keys of path segments, without a call. */
static bool same_bytes(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i])
            return false;
    }
    return true;
}

/* The hash of the edge from `parent` by a segment of hash `h`. */
static uint32_t edge_hash(uint32_t h, uint32_t parent)
{
    h ^= parent * 0x9e3779b1u;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    return h;
}

static int idlist_push(fcr__idlist *l, uint32_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        uint32_t *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return FCR_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = id;
    return 0;
}

/* Adds a node; its number goes to `*id`. */
static int new_node(fcr__segindex *ix, uint32_t *id)
{
    if (ix->nnodes == ix->nodes_cap) {
        if (ix->nnodes >= UINT32_MAX / 2)
            return FCR_ENOMEM;
        size_t cap = ix->nodes_cap ? ix->nodes_cap * 2 : 8;
        struct fcr__segnode *v = realloc(ix->nodes, cap * sizeof *v);
        if (v == NULL)
            return FCR_ENOMEM;
        ix->nodes = v;
        ix->nodes_cap = cap;
    }
    ix->nodes[ix->nnodes] = (struct fcr__segnode){.key1 = NULL};
    *id = (uint32_t)ix->nnodes++;
    return 0;
}

static const struct fcr__segedge *edge_find(const fcr__segindex *ix, uint32_t parent,
                                            const char *key, size_t len, uint32_t h)
{
    size_t mask = ix->edges_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const struct fcr__segedge *e = &ix->edges[i];
        if (e->key == NULL)
            return NULL;
        if (e->hash == h && e->parent == parent && e->key_len == len &&
            same_bytes(e->key, key, len))
            return e;
    }
}

static int edges_grow(fcr__segindex *ix)
{
    size_t n = ix->edges_cap ? ix->edges_cap * 2 : 16;
    struct fcr__segedge *ne = calloc(n, sizeof *ne);
    if (ne == NULL)
        return FCR_ENOMEM;
    for (size_t i = 0; i < ix->edges_cap; i++) {
        const struct fcr__segedge *e = &ix->edges[i];
        if (e->key == NULL)
            continue;
        size_t j = e->hash & (n - 1);
        while (ne[j].key != NULL)
            j = (j + 1) & (n - 1);
        ne[j] = *e;
    }
    free(ix->edges);
    ix->edges = ne;
    ix->edges_cap = n;
    return 0;
}

/* The child of `parent` by the literal segment `key`, made when missing; 0 when out of
 * memory. */
static uint32_t literal_child(fcr__segindex *ix, uint32_t parent, const char *key, size_t len)
{
    uint32_t h = edge_hash(seg_hash(key, len), parent);
    if (ix->edges_cap > 0) {
        const struct fcr__segedge *e = edge_find(ix, parent, key, len, h);
        if (e != NULL)
            return e->child;
    }
    if ((ix->nedges + 1) * 2 > ix->edges_cap && edges_grow(ix) < 0)
        return 0;
    char *k = malloc(len + 1);
    uint32_t child = 0;
    if (k == NULL || new_node(ix, &child) < 0) {
        free(k);
        return 0;
    }
    if (len > 0)
        memcpy(k, key, len);
    k[len] = '\0';
    size_t mask = ix->edges_cap - 1, i = h & mask;
    while (ix->edges[i].key != NULL)
        i = (i + 1) & mask;
    ix->edges[i] = (struct fcr__segedge){
        .key = k, .key_len = len, .hash = h, .parent = parent, .child = child};
    ix->nedges++;
    struct fcr__segnode *pn = &ix->nodes[parent];
    if (pn->nlit++ == 0) {
        pn->key1 = k;
        pn->key1_len = len;
        pn->child1 = child;
    }
    return child;
}

int fcr__segindex_add(fcr__segindex *ix, const fcr__pattern_segs *s, bool ends, bool rest,
                      uint32_t id)
{
    uint32_t node = 0;
    if (ix->nnodes == 0 && new_node(ix, &node) < 0) /* the root is node 0 */
        return FCR_ENOMEM;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t next;
        if (s->seg[i].lit != NULL) {
            next = literal_child(ix, node, s->seg[i].lit, s->seg[i].len);
        } else {
            next = ix->nodes[node].any;
            if (next == 0 && new_node(ix, &next) == 0)
                ix->nodes[node].any = next;
        }
        if (next == 0)
            return FCR_ENOMEM;
        node = next;
    }
    struct fcr__segnode *n = &ix->nodes[node];
    if (ends && idlist_push(&n->ends, id) < 0)
        return FCR_ENOMEM;
    if (rest && idlist_push(&n->rest, id) < 0) {
        if (ends)
            n->ends.n--; /* the entry is not added: no list may name it */
        return FCR_ENOMEM;
    }
    return 0;
}

static bool push_list(fcr__candidates *out, const fcr__idlist *l)
{
    if (l->n == 0)
        return true;
    if (out->n == FCR__MAX_CAND_LISTS)
        return false;
    out->list[out->n++] = l;
    return true;
}

bool fcr__segindex_lookup(const fcr__segindex *ix, const char *path, size_t len,
                          fcr__candidates *out)
{
    out->n = 0;
    if (ix->nnodes == 0)
        return true;
    uint32_t buf[2][MAX_ACTIVE];
    uint32_t *act = buf[0], *next = buf[1];
    size_t nact = 1;
    act[0] = 0;
    const char *seg = path, *end = path + len;
    for (;;) {
        const char *p = seg;
        while (p < end && *p != '/') /* segments are short: no call to memchr */
            p++;
        size_t seg_len = (size_t)(p - seg);
        uint32_t h = 0; /* the segment's hash, made when a node has several literal edges */
        bool hashed = false;
        size_t nnext = 0;
        for (size_t i = 0; i < nact; i++) {
            const struct fcr__segnode *n = &ix->nodes[act[i]];
            /* The path has this segment: entries that need more segments than the node's
             * apply. */
            if (!push_list(out, &n->rest))
                return false;
            uint32_t child = 0;
            if (n->nlit == 1) {
                if (n->key1_len == seg_len && same_bytes(n->key1, seg, seg_len))
                    child = n->child1;
            } else if (n->nlit > 1) {
                if (!hashed) {
                    h = seg_hash(seg, seg_len);
                    hashed = true;
                }
                const struct fcr__segedge *e =
                    edge_find(ix, act[i], seg, seg_len, edge_hash(h, act[i]));
                if (e != NULL)
                    child = e->child;
            }
            if (child != 0) {
                if (nnext == MAX_ACTIVE)
                    return false;
                next[nnext++] = child;
            }
            if (n->any != 0) {
                if (nnext == MAX_ACTIVE)
                    return false;
                next[nnext++] = n->any;
            }
        }
        uint32_t *t = act;
        act = next;
        next = t;
        nact = nnext;
        if (nact == 0)
            return true;
        if (p == end)
            break;
        seg = p + 1;
    }
    /* Every segment is used: entries whose paths end here apply. */
    for (size_t i = 0; i < nact; i++) {
        if (!push_list(out, &ix->nodes[act[i]].ends))
            return false;
    }
    return true;
}

void fcr__segindex_free(fcr__segindex *ix)
{
    for (size_t i = 0; i < ix->nnodes; i++) {
        free(ix->nodes[i].ends.v);
        free(ix->nodes[i].rest.v);
    }
    free(ix->nodes);
    for (size_t i = 0; i < ix->edges_cap; i++)
        free(ix->edges[i].key);
    free(ix->edges);
    *ix = (fcr__segindex){.nodes = NULL};
}
