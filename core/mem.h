/* Internal: memory helpers of core/ and app/: the per-request arena, growable arrays and
 * growable byte buffers. Pure (libc and the error codes only), so that libfcrest-testing
 * compiles mem.c into itself as well (see the top meson.build). */
#ifndef FCR__CORE_MEM_H
#define FCR__CORE_MEM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Arena: memory freed at once --------------------------------------------------------- */

typedef struct fcr__arena_block fcr__arena_block;

/* A zeroed arena is empty and valid. */
typedef struct fcr__arena {
    fcr__arena_block *head;
    fcr__arena_block *first; /* the owner's memory (fcr__arena_init), or NULL */
} fcr__arena;

/* Makes `a` an empty arena whose first block is the `size` bytes at `mem` (aligned for any
 * type; NULL: none), which fcr__arena_free() keeps for reuse instead of freeing. */
void fcr__arena_init(fcr__arena *a, void *mem, size_t size);
/* `n` bytes aligned for any type, valid until fcr__arena_free(); NULL when out of memory. */
void *fcr__arena_alloc(fcr__arena *a, size_t n);
/* A NUL-terminated copy of the `n` bytes at `s`, or NULL. */
char *fcr__arena_strndup(fcr__arena *a, const char *s, size_t n);
/* Frees every block but the first one given to fcr__arena_init(), and empties the arena. */
void fcr__arena_free(fcr__arena *a);

/* ---- Growable arrays ----------------------------------------------------------------------- */

/* An array of elements of one size: `n` in use at `v`, room for `cap`. A zeroed vector is empty
 * and valid. Its memory comes either from the heap (every call passes a NULL arena; free it with
 * fcr__vec_free) or from one arena (every call passes it; the arena frees it, and a block left
 * behind by growing stays there until then). The callers read the elements through a pointer
 * of their type: `const fcr__kv *kv = list->v;`. */
typedef struct fcr__vec {
    void *v;
    size_t n, cap;
} fcr__vec;

/* Makes room for `need` elements of `size` bytes, doubling the capacity (from 8). Returns 0 or
 * FCR_ENOMEM, leaving the vector as it was. */
int fcr__vec_reserve(fcr__vec *vec, fcr__arena *a, size_t size, size_t need);
/* Appends one element of `size` bytes, zeroed, and returns it; NULL when out of memory (the
 * vector is unchanged). */
void *fcr__vec_push(fcr__vec *vec, fcr__arena *a, size_t size);
/* Frees a heap vector's memory and empties it. */
void fcr__vec_free(fcr__vec *vec);

/* ---- Growable byte buffers ----------------------------------------------------------------- */

/* `len` bytes in use at `p`, room for `cap`. Heap or arena memory, as for fcr__vec. A zeroed
 * buffer is empty and valid. */
typedef struct fcr__buf {
    uint8_t *p;
    size_t len, cap;
} fcr__buf;

/* Makes room for `need` bytes in all: the capacity doubles (starting at `first`), but never
 * past `clip` when `need` fits under it, so that a buffer growing towards a known size (a
 * declared length, a limit) ends exactly there. Pass SIZE_MAX for no clip. Returns 0 or
 * FCR_ENOMEM, leaving the buffer as it was. */
int fcr__buf_reserve(fcr__buf *b, fcr__arena *a, size_t need, size_t first, size_t clip);
/* Appends the `n` bytes at `data` (NULL when `n` is 0) and keeps a NUL byte after the last one
 * (not counted in `len`), so that text can be read as a C string. Returns 0 or FCR_ENOMEM (the
 * buffer is unchanged). */
int fcr__buf_append(fcr__buf *b, fcr__arena *a, const void *data, size_t n);
/* Frees a heap buffer's memory and empties it. */
void fcr__buf_free(fcr__buf *b);

/* ---- Formatted text ------------------------------------------------------------------------ */

/* vsnprintf into the `cap` bytes at `small` when the text, its NUL and `extra` more bytes fit
 * there, else into a block from malloc; `*out` gets the text (the caller frees it when it is not
 * `small`), which has room for `extra` bytes after its NUL. Returns the text's length, or
 * FCR_EINVAL for a format error or FCR_ENOMEM (then `*out` is NULL). */
int fcr__vformat(char *small, size_t cap, size_t extra, char **out, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

#endif
