/* Memory helpers: the arena (blocks of at least 4 KiB, after an optional first block in memory
 * the owner provides; everything is freed at once), and growable arrays and byte buffers on the
 * heap or in an arena. */
#include "core/mem.h"

#include <fcrest/error.h>

#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_SIZE 4096u

struct fcr__arena_block {
    fcr__arena_block *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

void fcr__arena_init(fcr__arena *a, void *mem, size_t size)
{
    a->first = NULL;
    if (mem && size > sizeof(fcr__arena_block)) {
        a->first = mem;
        a->first->next = NULL;
        a->first->used = 0;
        a->first->cap = size - sizeof(fcr__arena_block);
    }
    a->head = a->first;
}

void *fcr__arena_alloc(fcr__arena *a, size_t n)
{
    const size_t align = alignof(max_align_t);
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX - align - sizeof(fcr__arena_block))
        return NULL;
    n = (n + align - 1) & ~(align - 1);
    fcr__arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > BLOCK_SIZE ? n : BLOCK_SIZE;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        /* A large allocation goes behind the current block, so its free space stays usable. */
        if (a->head && n > BLOCK_SIZE) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

char *fcr__arena_strndup(fcr__arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = fcr__arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void fcr__arena_free(fcr__arena *a)
{
    fcr__arena_block *b = a->head;
    while (b) {
        fcr__arena_block *next = b->next;
        if (b != a->first)
            free(b);
        b = next;
    }
    /* The first block stays for the next use. */
    a->head = a->first;
    if (a->first) {
        a->first->next = NULL;
        a->first->used = 0;
    }
}

/* ---- Growable arrays and buffers ------------------------------------------------------------ */

/* The capacity that holds `need` grown from `cap`: doubled (from `first` when empty), at least
 * `need`, at most `clip` when `need` fits under it. */
static size_t next_cap(size_t cap, size_t need, size_t first, size_t clip)
{
    size_t c = cap == 0 ? first : cap > SIZE_MAX / 2 ? need : cap * 2;
    if (c < need)
        c = need;
    if (need <= clip && c > clip)
        c = clip;
    return c;
}

/* The block of `cap` elements of `size` bytes that replaces `old`, whose first `used` elements
 * it holds: realloc on the heap; in an arena a new block (the old one stays there). NULL when
 * out of memory, with `old` unchanged. */
static void *regrow(void *old, size_t used, size_t cap, size_t size, fcr__arena *a)
{
    if (cap > SIZE_MAX / size)
        return NULL;
    if (!a)
        return realloc(old, cap * size);
    void *p = fcr__arena_alloc(a, cap * size);
    if (p && used)
        memcpy(p, old, used * size);
    return p;
}

int fcr__vec_reserve(fcr__vec *vec, fcr__arena *a, size_t size, size_t need)
{
    if (need <= vec->cap)
        return 0;
    size_t cap = next_cap(vec->cap, need, 8, SIZE_MAX);
    void *v = regrow(vec->v, vec->n, cap, size, a);
    if (!v)
        return FCR_ENOMEM;
    vec->v = v;
    vec->cap = cap;
    return 0;
}

void *fcr__vec_push(fcr__vec *vec, fcr__arena *a, size_t size)
{
    if (vec->n == SIZE_MAX || fcr__vec_reserve(vec, a, size, vec->n + 1) < 0)
        return NULL;
    unsigned char *e = (unsigned char *)vec->v + vec->n++ * size;
    memset(e, 0, size);
    return e;
}

void fcr__vec_free(fcr__vec *vec)
{
    free(vec->v);
    *vec = (fcr__vec){0};
}

int fcr__buf_reserve(fcr__buf *b, fcr__arena *a, size_t need, size_t first, size_t clip)
{
    if (need <= b->cap)
        return 0;
    size_t cap = next_cap(b->cap, need, first, clip);
    uint8_t *p = regrow(b->p, b->len, cap, 1, a);
    if (!p)
        return FCR_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int fcr__buf_append(fcr__buf *b, fcr__arena *a, const void *data, size_t n)
{
    if (n > SIZE_MAX - b->len - 1 || fcr__buf_reserve(b, a, b->len + n + 1, 256, SIZE_MAX) < 0)
        return FCR_ENOMEM;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

void fcr__buf_free(fcr__buf *b)
{
    free(b->p);
    *b = (fcr__buf){0};
}

/* ---- Formatted text ------------------------------------------------------------------------ */

int fcr__vformat(char *small, size_t cap, size_t extra, char **out, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    *out = NULL;
    int n = vsnprintf(small, cap > extra ? cap - extra : 0, fmt, ap);
    if (n < 0) {
        n = FCR_EINVAL;
    } else if ((size_t)n < cap && cap - (size_t)n > extra) {
        *out = small;
    } else if ((size_t)n > SIZE_MAX - 1 - extra || !(*out = malloc((size_t)n + 1 + extra))) {
        n = FCR_ENOMEM;
    } else {
        vsnprintf(*out, (size_t)n + 1, fmt, again);
    }
    va_end(again);
    return n;
}
