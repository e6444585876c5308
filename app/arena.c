/* Per-request arena: blocks of at least 4 KiB, after an optional first block in memory the
 * owner provides; everything is freed at once. */
#include "app_int.h"

#include <stdalign.h>
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
