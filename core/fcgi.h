/* Internal: FastCGI 1.0 wire format. Codecs are pure functions over bytes (no I/O, no
 * allocation); the parser is an incremental record framer that turns bytes arriving in any split
 * into events. Names are internal (fcr__, FCR__), except the FCGI_* constants, which keep the
 * names the FastCGI specification gives them. */
#ifndef FCR__CORE_FCGI_H
#define FCR__CORE_FCGI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/mem.h"

#define FCGI_VERSION_1       1
#define FCGI_HEADER_LEN      8
#define FCGI_MAX_CONTENT     65535u
#define FCGI_NULL_REQUEST_ID 0

enum fcr__fcgi_type {
    FCGI_BEGIN_REQUEST = 1,
    FCGI_ABORT_REQUEST = 2,
    FCGI_END_REQUEST = 3,
    FCGI_PARAMS = 4,
    FCGI_STDIN = 5,
    FCGI_STDOUT = 6,
    FCGI_STDERR = 7,
    FCGI_DATA = 8,
    FCGI_GET_VALUES = 9,
    FCGI_GET_VALUES_RESULT = 10,
    FCGI_UNKNOWN_TYPE = 11,
};

enum fcr__fcgi_protocol_status {
    FCGI_REQUEST_COMPLETE = 0,
    FCGI_CANT_MPX_CONN = 1,
    FCGI_OVERLOADED = 2,
    FCGI_UNKNOWN_ROLE = 3,
};

#define FCGI_KEEP_CONN 1

typedef struct fcr__fcgi_header {
    uint8_t version;
    uint8_t type;
    uint16_t id;
    uint16_t content_len;
    uint8_t padding_len;
} fcr__fcgi_header;

/* ---- Codecs --------------------------------------------------------------------------- */

/* Decodes 8 bytes at `p` into `*h`. No validation (the version is reported as is). */
void fcr__header_decode(const uint8_t *p, fcr__fcgi_header *h);

/* Encodes a header into 8 bytes at `out` (reserved byte 0). */
void fcr__header_encode(uint8_t *out, uint8_t type, uint16_t id, uint16_t content_len,
                        uint8_t padding_len);

/* Padding that brings `content_len` to a multiple of 8 (0..7). */
static inline uint8_t fcr__padding_for(size_t content_len)
{
    return (uint8_t)((8 - (content_len & 7)) & 7);
}

/* Decodes one name-value length at `p` (`avail` bytes readable): 1 byte when the high bit is
 * clear, else 4 bytes big-endian with the high bit masked (31-bit value). Returns the number
 * of bytes used (1 or 4), or 0 when `avail` is too short for the prefix (truncated). Inline:
 * it runs twice for every param of every request. */
static inline size_t fcr__nvlen_decode(const uint8_t *p, size_t avail, uint32_t *len)
{
    if (avail < 1)
        return 0;
    if ((p[0] & 0x80u) == 0) {
        *len = p[0];
        return 1;
    }
    if (avail < 4)
        return 0;
    *len = ((uint32_t)(p[0] & 0x7fu) << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
           (uint32_t)p[3];
    return 4;
}

/* Encodes `len` (<= 0x7fffffff) at `out` (room for 4 bytes) in the shortest form. Returns bytes
 * written (1 or 4). */
size_t fcr__nvlen_encode(uint8_t *out, uint32_t len);

/* Encoded size of one name-value pair. */
size_t fcr__nv_size(size_t nlen, size_t vlen);

/* Encodes one pair into `out` (room for fcr__nv_size bytes). Returns bytes written. Lengths
 * must be <= 0x7fffffff. */
size_t fcr__nv_encode(uint8_t *out, const void *name, size_t nlen, const void *value, size_t vlen);

/* Result of fcr__nv_next(). */
typedef enum fcr__nv_status {
    FCR__NV_OK = 0,        /* a pair was decoded */
    FCR__NV_END = 1,       /* no bytes left: the stream ended on a pair boundary */
    FCR__NV_TRUNCATED = 2, /* a prefix, name or value runs past the end of the bytes */
} fcr__nv_status;

/* Decodes the pair starting at `buf[*off]` of a complete name-value stream of `len` bytes.
 * On FCR__NV_OK sets name/value pointers (into `buf`) and lengths and advances `*off`. Length
 * sums are checked in size_t without overflow. Inline, as fcr__nvlen_decode. */
static inline fcr__nv_status fcr__nv_next(const uint8_t *buf, size_t len, size_t *off,
                                          const uint8_t **name, uint32_t *nlen,
                                          const uint8_t **value, uint32_t *vlen)
{
    size_t o = *off;
    if (o == len)
        return FCR__NV_END;
    if (o > len)
        return FCR__NV_TRUNCATED;
    size_t rem = len - o;
    uint32_t nl, vl;
    size_t used = fcr__nvlen_decode(buf + o, rem, &nl);
    if (used == 0)
        return FCR__NV_TRUNCATED;
    o += used;
    rem -= used;
    used = fcr__nvlen_decode(buf + o, rem, &vl);
    if (used == 0)
        return FCR__NV_TRUNCATED;
    o += used;
    rem -= used;
    /* Compare each length against what is left, never their sum against len. */
    if (nl > rem || vl > rem - nl)
        return FCR__NV_TRUNCATED;
    *name = buf + o;
    *nlen = nl;
    *value = buf + o + nl;
    *vlen = vl;
    *off = o + (size_t)nl + (size_t)vl;
    return FCR__NV_OK;
}

/* Writes a complete END_REQUEST record (16 bytes) to `out`. */
void fcr__end_request_encode(uint8_t *out, uint16_t id, uint32_t app_status,
                             uint8_t protocol_status);

/* Writes a complete UNKNOWN_TYPE record (16 bytes) for record type `type` to `out`. */
void fcr__unknown_type_encode(uint8_t *out, uint8_t type);

/* The values a GET_VALUES query can ask for. */
typedef struct fcr__values {
    unsigned max_conns;
    unsigned max_reqs;
    bool mpxs_conns;
} fcr__values;

/* Answers a GET_VALUES query: `query` is its content (`qlen` bytes, a name-value stream whose
 * values are ignored). Writes one complete GET_VALUES_RESULT record (header, content with
 * FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS for the names asked for, each once, unknown
 * names omitted, padding) to `out`, which has `cap` bytes (128 always suffice). Returns the
 * record's size, or 0 if `cap` is too small. A malformed query answers the names decoded before
 * the malformation. */
size_t fcr__get_values_result(const uint8_t *query, size_t qlen, const fcr__values *v, uint8_t *out,
                              size_t cap);

/* ---- Incremental parser --------------------------------------------------------------- */

/* Callbacks return 0 to continue, FCR_EAGAIN to make fcr__parser_feed() return after this
 * event (back-pressure; the rest stays unconsumed), or another negative fcr_err to stop with
 * that error.
 *
 * When events fire: begin, abort, management, ignored and the empty end-of-stream record are
 * delivered after the record's last byte, padding included (a pause there leaves the parser
 * between records); stream data is delivered as it arrives (a pause may leave padding to
 * read). A BEGIN_REQUEST whose content is not 8 bytes is FCR_EPROTO whatever its id. Every
 * id-0 record not routed to `ignored` goes to `management`, whatever its type (STDOUT,
 * END_REQUEST, 0, >= 12 included): the connection answers all but GET_VALUES with
 * UNKNOWN_TYPE. Empty content is passed as a non-NULL pointer with length 0. */
typedef struct fcr__parser_events {
    /* BEGIN_REQUEST with id != 0 and exactly 8 content bytes. */
    int (*begin)(void *ctx, uint16_t id, uint16_t role, uint8_t flags);
    /* Content of a PARAMS, STDIN or DATA record with id != 0, in pieces as they arrive (never
     * len 0 for a non-empty record); an empty record of one of these types gives one call with
     * len 0 (end of stream). */
    int (*stream)(void *ctx, uint8_t type, uint16_t id, const uint8_t *buf, size_t len);
    /* ABORT_REQUEST with id != 0 (its content, if any, is skipped). */
    int (*abort)(void *ctx, uint16_t id);
    /* A complete record with id 0 (management record): GET_VALUES or any other type. The
     * content is whole (at most 65535 bytes). */
    int (*management)(void *ctx, uint8_t type, const uint8_t *content, size_t len);
    /* A record the application never expects (STDOUT, STDERR, END_REQUEST,
     * GET_VALUES_RESULT, UNKNOWN_TYPE or an unknown type with id != 0; BEGIN_REQUEST,
     * ABORT_REQUEST, PARAMS, STDIN or DATA with id 0). Called once with its header after the
     * record was skipped. Optional (NULL: skipped silently). */
    int (*ignored)(void *ctx, const fcr__fcgi_header *h);
} fcr__parser_events;

typedef struct fcr__parser {
    int state;          /* internal */
    fcr__fcgi_header h; /* header of the record being parsed */
    uint8_t hbuf[8];    /* partial header or BEGIN_REQUEST content */
    size_t have;        /* bytes in hbuf, or content bytes seen */
    size_t left;        /* content or padding bytes left in the current record */
    fcr__buf mbuf;      /* management record content, grown as bytes arrive */
    int error;          /* sticky error once the stream is broken */
} fcr__parser;

/* Initialises `p` (no allocation). */
void fcr__parser_init(fcr__parser *p);

/* Frees what the parser holds (a partial management record). */
void fcr__parser_reset(fcr__parser *p);

/* Feeds `len` bytes. Emits events in order. Returns the number of bytes consumed (>= 0) when it
 * consumed everything or a callback asked to pause with FCR_EAGAIN; returns a negative error
 * when the stream is broken: FCR_EPROTO for version != 1 or a BEGIN_REQUEST whose content
 * length is not 8, FCR_ENOMEM, or a callback's error. After an error every later call returns
 * the same error. */
long fcr__parser_feed(fcr__parser *p, const fcr__parser_events *ev, void *ctx, const uint8_t *buf,
                      size_t len);

/* True when the parser is between records (no partial header, content or padding); false
 * after an error. fcr__parser_reset() starts it over and clears the error. */
bool fcr__parser_idle(const fcr__parser *p);

#endif
