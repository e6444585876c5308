/* The multipart/form-data parser of multipart.c as a push parser over bytes, without requests:
 * what fcr_req_read_multipart() drives, and what the fuzz target drives directly. */
#ifndef FCREST_APP_MULTIPART_INT_H
#define FCREST_APP_MULTIPART_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest boundary RFC 2046 allows, and the delimiter built from it ("\r\n--" + boundary). */
#define FCR__MP_MAX_BOUNDARY 70u
#define FCR__MP_MAX_DELIM    (FCR__MP_MAX_BOUNDARY + 4u)

typedef struct fcr__mp fcr__mp;

/* What the parser tells its user. Each returns 0 to go on, a positive value to stop the parser
 * right after the event (it is delivered: feeding the rest of the bytes goes on after it), or
 * -1 after fcr__mp_refuse() to refuse the body. */
typedef struct fcr__mp_events {
    int (*part)(fcr__mp *p, void *user);
    int (*data)(fcr__mp *p, const unsigned char *buf, size_t len, void *user);
    int (*part_end)(fcr__mp *p, void *user);
} fcr__mp_events;

struct fcr__mp {
    fcr__mp_events ev;
    void *user;
    char delim[FCR__MP_MAX_DELIM]; /* "\r\n--" + boundary */
    size_t dlen;
    size_t m; /* bytes of delim matched so far */
    /* limits (0 in max_part_size: none) */
    size_t max_parts, max_part_size, max_header_bytes;
    size_t parts;       /* parts begun */
    uint64_t part_size; /* content bytes of the current part handed on */
    /* the current part's header block (max_header_bytes), then its parsed values */
    char *hbuf;
    size_t hlen;
    char *vbuf; /* decoded parameters: 2 * max_header_bytes + 8 */
    const char *name, *filename, *ctype;
    int state;
    bool hready;      /* hbuf holds the current part's parsed headers */
    int status;       /* of a refusal: 400 or 413 */
    char detail[200]; /* of a refusal */
};

/* Parses the Content-Type `ct` of a request: it must be multipart/form-data (else 415) with a
 * valid boundary parameter (else 400), which is copied to `out` (FCR__MP_MAX_BOUNDARY + 1
 * bytes, NUL-terminated). Returns 0, or the status with a detail in `detail` (`cap` bytes). */
int fcr__mp_boundary(const char *ct, char *out, char *detail, size_t cap);

/* Readies `p` for a body with `boundary` (valid, 1..70 bytes); `hbuf` and `vbuf` are the
 * caller's buffers of max_header_bytes and 2 * max_header_bytes + 8 bytes. */
void fcr__mp_init(fcr__mp *p, const char *boundary, size_t max_parts, size_t max_part_size,
                  size_t max_header_bytes, char *hbuf, char *vbuf, const fcr__mp_events *ev,
                  void *user);

/* Parses `len` bytes. Returns 0 when all were taken (`*used` = len); a positive value when an
 * event stopped the parser (that value; `*used` bytes were taken, the rest is to be fed again);
 * -1 when the body is refused (p->status, p->detail; the parser takes nothing more). */
int fcr__mp_feed(fcr__mp *p, const void *buf, size_t len, size_t *used);

/* The body ended: returns 0 when the closing boundary came, else -1 (a refusal). */
int fcr__mp_finish(fcr__mp *p);

/* Refuses the body with `status` and a printf-formatted detail; returns -1. */
int fcr__mp_refuse(fcr__mp *p, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The value of the current part's header `name`, or NULL (after its headers were parsed). */
const char *fcr__mp_header(const fcr__mp *p, const char *name);

#endif
