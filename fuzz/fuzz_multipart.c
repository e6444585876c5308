/* libFuzzer target: the multipart/form-data parser (app/multipart.c) over any body, fed whole
 * and then in pieces split at points drawn from the input, with callbacks that stop the parser
 * at drawn events (as a handler that pauses does; the rest of the piece is fed again). The
 * parts, their headers and their content, and the verdict must be the same whatever the split
 * and the stops. The Content-Type parser runs over the input's first line.
 *
 * Input: byte 0 picks the boundary, byte 1 the limits, bytes 2..9 seed the splits; the rest is
 * the body. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../app/multipart_int.h"

#define FNV0 14695981039346656037u

typedef struct run {
    uint64_t h;     /* over every event and the content, in order */
    uint64_t bytes; /* content bytes */
    size_t parts, ends;
    uint64_t rng; /* draws the stops (0: never stop) */
    bool in_part; /* between part and part_end */
    const fcr__mp *p;
} run;

static uint64_t fnv(uint64_t h, const void *b, size_t n)
{
    const unsigned char *p = b;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211u;
    return h;
}

static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

static int maybe_stop(run *r)
{
    return r->rng && next(&r->rng) % 3 == 0 ? 7 : 0;
}

static void hash_str(run *r, const char *s)
{
    if (s)
        r->h = fnv(r->h, s, strlen(s) + 1);
    else
        r->h = fnv(r->h, "\xff", 1);
}

static int on_part(fcr__mp *p, void *user)
{
    run *r = user;
    if (r->in_part || !p->name)
        abort(); /* a part begins only after the last one ended, and always has a name */
    r->in_part = true;
    r->parts++;
    r->h = fnv(r->h, "P", 1);
    hash_str(r, p->name);
    hash_str(r, p->filename);
    hash_str(r, p->ctype);
    hash_str(r, fcr__mp_header(p, "content-disposition"));
    if (p->part_size != 0)
        abort();
    return maybe_stop(r);
}

static int on_data(fcr__mp *p, const unsigned char *buf, size_t len, void *user)
{
    run *r = user;
    if (!r->in_part || len == 0)
        abort();
    r->h = fnv(r->h, buf, len); /* the content's bytes, not how they were cut */
    r->bytes += len;
    (void)p;
    return maybe_stop(r);
}

static int on_end(fcr__mp *p, void *user)
{
    run *r = user;
    if (!r->in_part)
        abort();
    r->in_part = false;
    r->ends++;
    r->h = fnv(r->h, "E", 1);
    r->h = fnv(r->h, &p->part_size, sizeof p->part_size);
    return maybe_stop(r);
}

typedef struct outcome {
    int rc; /* 0, or -1 refused */
    int status;
    char detail[200];
    run r;
} outcome;

static void parse(const char *boundary, size_t lim, const unsigned char *body, size_t n,
                  uint64_t seed, outcome *o)
{
    static const fcr__mp_events ev = {on_part, on_data, on_end};
    size_t max_header = 16 + lim % 200;
    size_t max_part = (lim & 0x80) ? 0 : 1 + (lim % 64) * 7;
    size_t max_parts = 1 + (lim >> 4) % 8;
    char *hbuf = malloc(max_header), *vbuf = malloc(2 * max_header + 8);
    fcr__mp p;
    memset(o, 0, sizeof *o);
    o->r.h = FNV0;
    o->r.rng = seed;
    o->r.p = &p;
    fcr__mp_init(&p, boundary, max_parts, max_part, max_header, hbuf, vbuf, &ev, &o->r);
    uint64_t cut = seed | 1;
    size_t off = 0;
    int rc = 0;
    while (off < n && rc >= 0) {
        size_t piece = n - off;
        if (seed) /* a split at a drawn point: 1 byte to the whole rest */
            piece = 1 + next(&cut) % (next(&cut) % 4 == 0 ? piece : (piece < 80 ? piece : 80));
        size_t done = 0;
        while (done < piece) {
            size_t used = 99999999;
            rc = fcr__mp_feed(&p, body + off + done, piece - done, &used);
            if (rc < 0)
                break;
            if (used > piece - done || (rc == 0 && used != piece - done) || (rc > 0 && rc != 7)) {
                fprintf(stderr, "rc %d used %zu piece %zu done %zu\n", rc, used, piece, done);
                abort();
            }
            done += used;
        }
        off += piece;
    }
    if (rc >= 0)
        rc = fcr__mp_finish(&p);
    o->rc = rc;
    if (rc < 0) {
        o->status = p.status;
        memcpy(o->detail, p.detail, sizeof o->detail);
        if (p.status != 400 && p.status != 413)
            abort();
    } else if (o->r.in_part || o->r.parts != o->r.ends || p.parts != o->r.parts) {
        abort(); /* a body that ends well ends its last part */
    }
    free(hbuf);
    free(vbuf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const boundaries[] = {
        "x",
        "AaB03x",
        "----WebKitFormBoundary7MA4YWxkTrZu0gW",
        "--",
        "a b",
        "-x-",
        "=?'()+_,-./:",
        "0123456789012345678901234567890123456789012345678901234567890123456789"};
    if (size < 10)
        return 0;
    const char *boundary = boundaries[data[0] % (sizeof boundaries / sizeof *boundaries)];
    size_t lim = data[1];
    uint64_t seed = 0;
    memcpy(&seed, data + 2, 8);
    const unsigned char *body = data + 10;
    size_t n = size - 10;

    /* The Content-Type parser over the body's first line. */
    char ct[256], out[FCR__MP_MAX_BOUNDARY + 1], detail[200];
    size_t k = 0;
    while (k < n && k < sizeof ct - 1 && body[k] != '\n')
        k++;
    memcpy(ct, body, k);
    ct[k] = 0;
    int st = fcr__mp_boundary(ct, out, detail, sizeof detail);
    if (st != 0 && st != 400 && st != 415)
        abort();
    if (st == 0) {
        size_t bl = strlen(out);
        if (bl < 1 || bl > FCR__MP_MAX_BOUNDARY || out[bl - 1] == ' ')
            abort();
    }

    static outcome whole, split;
    parse(boundary, lim, body, n, 0, &whole);
    parse(boundary, lim, body, n, seed ? seed : 1, &split);
    if (whole.rc != split.rc)
        abort();
    if (whole.rc < 0) {
        /* Refused at the same byte for the same reason; content may have been handed on in
         * part before the refusal, in pieces that depend on the split. */
        if (whole.status != split.status || strcmp(whole.detail, split.detail) != 0 ||
            whole.r.parts != split.r.parts)
            abort();
    } else if (whole.r.h != split.r.h || whole.r.bytes != split.r.bytes ||
               whole.r.parts != split.r.parts) {
        abort();
    }
    return 0;
}
