/* A small blocking FastCGI client for tests: it plays the web server's side.
 *
 * Records are built into byte buffers with any split and padding (fcl_put_*), sent as raw
 * bytes (fcl_send, fcl_send_trickle), and the application's records are read back and sorted
 * per request id (fcl_await) with a receive deadline, so a test never hangs. The client checks
 * the framing rules an application must keep (version 1, STDOUT/STDERR padded to a multiple of
 * 8, one empty STDOUT record before END_REQUEST, nothing after END_REQUEST) and records every
 * breach in fcl_conn.violation.
 *
 * Self-contained: it uses only the constants of core/fcgi.h, none of the core's functions, so
 * it links into every test. */
#ifndef FCR_TESTS_FCGI_CLIENT_H
#define FCR_TESTS_FCGI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/fcgi.h"

/* ---- Byte buffers ------------------------------------------------------------------------ */

typedef struct fcl_buf {
    uint8_t *data;
    size_t len, cap;
} fcl_buf;

void fcl_buf_init(fcl_buf *b);
void fcl_buf_free(fcl_buf *b);
void fcl_buf_clear(fcl_buf *b);
/* Appends `n` bytes (aborts the process when out of memory). */
void fcl_buf_add(fcl_buf *b, const void *p, size_t n);
void fcl_buf_adds(fcl_buf *b, const char *s);

/* ---- Building records -------------------------------------------------------------------- */

/* A raw 8-byte header with any version and lengths (for malformed input). */
void fcl_put_header(fcl_buf *b, uint8_t version, uint8_t type, uint16_t id, uint16_t clen,
                    uint8_t plen);

/* One version-1 record: header, `len` (<= 65535) content bytes, `padding` zero bytes. */
void fcl_put_record(fcl_buf *b, uint8_t type, uint16_t id, const void *content, size_t len,
                    uint8_t padding);

/* BEGIN_REQUEST (8 content bytes). */
void fcl_put_begin(fcl_buf *b, uint16_t id, uint16_t role, uint8_t flags);

/* ABORT_REQUEST (no content). */
void fcl_put_abort(fcl_buf *b, uint16_t id);

/* Padding choice for fcl_put_stream: a fixed count 0..255, or FCL_PAD8 to reach a multiple of
 * 8. */
#define FCL_PAD8 (-1)

/* A stream (PARAMS, STDIN, DATA) of `len` bytes cut into records of at most `max_rec` content
 * bytes (0 means 65535), each padded as `padding` says; with `end`, the empty record that ends
 * the stream follows. */
void fcl_put_stream(fcl_buf *b, uint8_t type, uint16_t id, const void *data, size_t len,
                    size_t max_rec, int padding, bool end);

/* Appends one name-value pair in the shortest length encoding. */
void fcl_nv_add(fcl_buf *nv, const void *name, size_t nlen, const void *value, size_t vlen);
void fcl_nv_adds(fcl_buf *nv, const char *name, const char *value);
/* Appends a length in the 4-byte form whatever its value (the high bit set, 31 bits). */
void fcl_nv_len4(fcl_buf *nv, uint32_t len);

/* A whole request: BEGIN, PARAMS from `params` (a NULL-terminated list of name, value strings;
 * may be NULL), STDIN (`in`, `in_len`; always ended), and for FCR_FILTER-like roles (role 3)
 * DATA (`data`, `data_len`; ended). Records of at most 65535 bytes, padded to 8. */
void fcl_put_request(fcl_buf *b, uint16_t id, uint16_t role, uint8_t flags,
                     const char *const *params, const void *in, size_t in_len, const void *data,
                     size_t data_len);

/* ---- Connections ------------------------------------------------------------------------- */

/* A record read back from the application. */
typedef struct fcl_record {
    fcr__fcgi_header h;
    uint8_t *content; /* h.content_len bytes (malloc'd, NUL-terminated for convenience) */
} fcl_record;

typedef struct fcl_conn {
    int fd;
    double timeout; /* seconds each blocking call may wait (default 30) */
    fcl_buf rx;     /* bytes received and not yet parsed (from rx_off) */
    size_t rx_off;
    bool eof;         /* the peer closed its side */
    int rx_errno;     /* a receive error (ECONNRESET, ...) seen while sending, else 0 */
    fcl_record *mgmt; /* management records (id 0) received, in order */
    size_t nmgmt;
    unsigned violations; /* framing rules the peer broke */
    char violation[256]; /* the first one */
} fcl_conn;

/* Connects to "unix:/path" or "tcp:HOST:PORT" (IPv4, or [IPv6]). `rcvbuf` > 0 sets SO_RCVBUF
 * before connecting (a small value makes a client that does not read stall the sender
 * early). Returns NULL with errno set on failure. */
fcl_conn *fcl_connect(const char *addr, int rcvbuf);

/* Takes over an already connected stream socket `fd` (one end of a socketpair, say) and sets it
 * non-blocking. Returns NULL with errno set when out of memory (fd is then closed). */
fcl_conn *fcl_adopt(int fd);

/* Closes the socket and frees everything. NULL is ignored. */
void fcl_close(fcl_conn *c);

/* Sends all `n` bytes (bytes arriving meanwhile are buffered, so the peer can never deadlock
 * us). Returns 0, or -1 with errno (ETIMEDOUT, EPIPE, ECONNRESET, ...). */
int fcl_send(fcl_conn *c, const void *p, size_t n);
int fcl_send_buf(fcl_conn *c, const fcl_buf *b);

/* Sends `chunk` bytes at a time with `usec` microseconds between the pieces. */
int fcl_send_trickle(fcl_conn *c, const void *p, size_t n, size_t chunk, unsigned usec);

/* Reads one record, waiting up to c->timeout. Returns 1 with `*r` filled (free with
 * fcl_record_free), 0 at a clean end of stream, -1 with errno (ETIMEDOUT, ECONNRESET, or
 * EPROTO for a record that is not version 1). */
int fcl_read_record(fcl_conn *c, fcl_record *r);
void fcl_record_free(fcl_record *r);

/* Waits up to `timeout` seconds for the peer to close. Returns 0 on a clean EOF with no bytes
 * before it, -1 with errno: ECONNRESET (reset), ETIMEDOUT (still open), EPROTO (bytes came). */
int fcl_wait_eof(fcl_conn *c, double timeout);

/* True when nothing arrives and the connection stays open for `timeout` seconds. */
bool fcl_idle_for(fcl_conn *c, double timeout);

/* ---- Responses --------------------------------------------------------------------------- */

typedef struct fcl_response {
    uint16_t id;
    fcl_buf out;          /* STDOUT bytes */
    fcl_buf err;          /* STDERR bytes */
    unsigned out_records; /* non-empty STDOUT records */
    unsigned out_empty;   /* empty STDOUT records */
    unsigned err_empty;   /* empty STDERR records */
    unsigned end_records; /* END_REQUEST records */
    bool ended;
    uint32_t app_status;
    uint8_t protocol_status;
} fcl_response;

void fcl_response_init(fcl_response *r, uint16_t id);
void fcl_response_free(fcl_response *r);

/* Reads records until every response in `rs` has its END_REQUEST. Records for ids that are
 * not in `rs` (or arrive after their END_REQUEST), STDOUT/STDERR after their empty record,
 * END_REQUEST without the empty STDOUT record (for protocol status 0), and padding that does
 * not reach a multiple of 8 count as violations; management records are kept in c->mgmt.
 * Returns 0, or -1 with errno when the stream ended first (EPIPE for a clean EOF, ECONNRESET),
 * broke (EPROTO) or timed out (ETIMEDOUT). */
int fcl_await(fcl_conn *c, fcl_response *rs, size_t n);

/* Like fcl_await, but returns as soon as the response with `id` (one of `rs`) has ended; the
 * others may still be open. */
int fcl_await_id(fcl_conn *c, fcl_response *rs, size_t n, uint16_t id);

/* Sends one request and awaits its response (see fcl_put_request). */
int fcl_request(fcl_conn *c, uint16_t id, uint16_t role, uint8_t flags, const char *const *params,
                const void *in, size_t in_len, fcl_response *r);

/* ---- CGI response (Status, headers, body) ------------------------------------------------ */

typedef struct fcl_cgi {
    char *head;          /* header block without the final CRLF CRLF (NUL-terminated) */
    const uint8_t *body; /* points into the response's STDOUT buffer */
    size_t body_len;
} fcl_cgi;

/* Splits STDOUT at the first CRLF CRLF. Returns 0, or -1 when there is none. */
int fcl_cgi_parse(const fcl_response *r, fcl_cgi *cgi);
void fcl_cgi_free(fcl_cgi *cgi);

/* Copies the value of header `name` (case-insensitive, surrounding blanks trimmed) into `out`.
 * Returns true when the header is present. */
bool fcl_cgi_header(const fcl_cgi *cgi, const char *name, char *out, size_t cap);

/* ---- Misc -------------------------------------------------------------------------------- */

/* Monotonic seconds. */
double fcl_now(void);

/* 64-bit FNV-1a. */
uint64_t fcl_fnv1a64(const void *p, size_t n);

/* Fills `p` with `n` pseudo-random bytes from `seed` (deterministic). */
void fcl_fill_random(void *p, size_t n, uint64_t seed);

#endif
