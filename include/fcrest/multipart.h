/**
 * @file fcrest/multipart.h
 * @brief fcrest multipart: multipart/form-data request bodies (RFC 7578) read as a stream.
 *
 * A route made with fcr_route_stream_body() reads its body with fcr_req_read_multipart()
 * instead of fcr_req_read_body(): the body is parsed as it arrives, piece by piece, and the
 * handler hears of each part as it comes: its headers (fcr_multipart_handler::on_part), its
 * content in pieces (fcr_multipart_handler::on_data), its end
 * (fcr_multipart_handler::on_part_end), and the end of the body
 * (fcr_multipart_handler::on_end), where it answers. A part's content is never held whole:
 * memory stays bounded by the limits (fcr_multipart_limits) whatever the body's size.
 *
 * Parts without a filename (form fields) are collected into memory by default, up to a limit,
 * and read by name with fcr_multipart_field(); parts with one are handed to on_data, or written
 * to a temporary file (fcr_part_to_file()) that on_part_end keeps with fcr_part_save_file().
 *
 * What the parser refuses is answered for the handler, with `application/problem+json`:
 * - 415: the request's Content-Type is not multipart/form-data;
 * - 400: no boundary parameter, or one that breaks RFC 2046 (1 to 70 characters of digits,
 *   letters and `'()+_,-./:=?` or space, not ending with a space); a body that does not start
 *   with the boundary; a boundary followed by neither CRLF nor `--`; a part's header line
 *   without a colon (a part without the blank line after its headers) or with a byte not
 *   allowed in a header; a part's headers over fcr_multipart_limits::max_header_bytes; a part
 *   without `Content-Disposition: form-data` and a `name`; a body that ends before its closing
 *   boundary;
 * - 413: more parts than max_parts, a part's content over max_part_size, a collected field over
 *   max_field_size, collected fields together over max_fields_bytes; the whole body over the
 *   route's body limit (fcr_route_set_max_body(), answered by the framework).
 *
 * This header is a part of the framework (it builds on the streamed bodies of fcrest/app.h)
 * kept in a file of its own; fcrest.h includes it.
 */
#ifndef FCREST_MULTIPART_H
#define FCREST_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fcrest/app.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The reading of one multipart body, made by fcr_req_read_multipart(). Opaque; lives in the
 * request's memory (fcr_req_alloc()) as long as the request: its collected fields can be read
 * from on_end and from the done of a deferral it starts.
 */
typedef struct fcr_multipart fcr_multipart;

/**
 * The part being read. Opaque; owned by its fcr_multipart, valid from on_part until on_part_end
 * returns (the same handle is reused for the next part).
 */
typedef struct fcr_part fcr_part;

/** Parts of a body by default: see fcr_multipart_limits::max_parts. */
#define FCR_MULTIPART_DEFAULT_MAX_PARTS 128u
/** Header bytes of a part by default: see fcr_multipart_limits::max_header_bytes. */
#define FCR_MULTIPART_DEFAULT_MAX_HEADER_BYTES 8192u
/** Bytes of a collected field by default: see fcr_multipart_limits::max_field_size. */
#define FCR_MULTIPART_DEFAULT_MAX_FIELD_SIZE (64u * 1024u)
/** Bytes of all collected fields by default: see fcr_multipart_limits::max_fields_bytes. */
#define FCR_MULTIPART_DEFAULT_MAX_FIELDS_BYTES (1024u * 1024u)

/**
 * Limits of one multipart body; a member left 0 takes its default. The body as a whole is held
 * to the route's body limit (fcr_route_set_max_body()).
 */
typedef struct fcr_multipart_limits {
    size_t max_parts;        /**< parts (default FCR_MULTIPART_DEFAULT_MAX_PARTS); past: 413 */
    size_t max_part_size;    /**< content bytes of one part (default: no limit of its own);
                                  past: 413 */
    size_t max_header_bytes; /**< bytes of one part's header lines, CRLFs included (default
                                  FCR_MULTIPART_DEFAULT_MAX_HEADER_BYTES); past: 400 */
    size_t max_field_size;   /**< bytes of one collected field (default
                                  FCR_MULTIPART_DEFAULT_MAX_FIELD_SIZE); past: 413 */
    size_t max_fields_bytes; /**< bytes of all collected fields, names included (default
                                  FCR_MULTIPART_DEFAULT_MAX_FIELDS_BYTES); past: 413 */
} fcr_multipart_limits;

/**
 * What a multipart body's reader is told; `data` is the pointer given to
 * fcr_req_read_multipart(). Each callback but on_gone returns an fcr_body_result:
 * FCR_BODY_MORE goes on; FCR_BODY_PAUSE stops the reading right there (nothing more is parsed
 * nor read from the web server) until fcr_req_resume_body(); FCR_BODY_ASYNC after fcr_defer()
 * waits for its done, whose verdict counts as the callback's (MORE and PAUSE go on as above);
 * FCR_BODY_DONE answers with what `res` holds and FCR_BODY_ERROR (or a negative fcr_err code)
 * with 500: both end the reading (the rest of the body is read and dropped). Every reading ends
 * with exactly one of: a callback's verdict that ends it, on_end's, or on_gone.
 */
typedef struct fcr_multipart_handler {
    /** A part's headers are known (fcr_part_name(), fcr_part_filename(), ...); it may choose
        where the content goes (fcr_part_collect(), fcr_part_to_file()). NULL: the defaults
        (fields collected, files handed to on_data). */
    fcr_body_result (*on_part)(fcr_req *req, fcr_res *res, fcr_part *part, void *data);
    /** `len` (> 0) bytes of the part's content, in order; `buf` is valid during the call only.
        Called for every part that is not collected (also one written to a file). NULL: the
        content of such parts is dropped (a file still gets it). A part's content may come in
        any number of pieces, whatever the pieces of the body were. */
    fcr_body_result (*on_data)(fcr_req *req, fcr_res *res, fcr_part *part, const void *buf,
                               size_t len, void *data);
    /** The part's content is complete (fcr_part_size() is its length; a collected field is
        readable, a file closed). NULL: nothing to do. */
    fcr_body_result (*on_part_end)(fcr_req *req, fcr_res *res, fcr_part *part, void *data);
    /** The closing boundary came and the body ended: the handler answers (FCR_BODY_DONE or
        FCR_BODY_ASYNC; MORE or PAUSE here fail the request with 500). Required. */
    fcr_body_result (*on_end)(fcr_req *req, fcr_res *res, fcr_multipart *mp, void *data);
    /** The reading ended without a callback's verdict ending it: the body was refused (`res`
        already holds the 400, 413 or 415 answer, which is sent), passed the route's body
        limit, or the client went away (fcr_req_aborted()). It releases what it holds and must
        not answer; NULL: nothing to release. */
    void (*on_gone)(fcr_req *req, fcr_multipart *mp, void *data);
} fcr_multipart_handler;

/**
 * Starts reading the body of `req` as multipart/form-data: the boundary is taken from the
 * request's Content-Type, and the pieces of the body go through the parser to `h`'s callbacks
 * from the loop (as for fcr_req_read_body(); a handler calls it and returns FCR_ASYNC). `h` is
 * copied; `limits` is copied, NULL for the defaults. A Content-Type that is not
 * multipart/form-data (415) or a missing or malformed boundary (400) is answered as soon as the
 * first piece of the body (or its end) comes, without parsing it, and on_gone is called.
 * Details of refusals count parts from 1. Returns 0; FCR_EINVAL for a NULL `req` or
 * `h`, an `h` without on_end, or what fcr_req_read_body() refuses (a route that does not
 * stream its body, a second reading); FCR_ECLOSED after an abort; FCR_ENOMEM. On failure no
 * callback is ever called.
 */
int fcr_req_read_multipart(fcr_req *req, const fcr_multipart_handler *h,
                           const fcr_multipart_limits *limits, void *data);

/**
 * The value of the collected field `name` (the first part of that name whose content was
 * collected, see fcr_part_collect()), NUL-terminated, with its length in `*len` (`len` may be
 * NULL; a value may hold NUL bytes). NULL when there is none (yet: a field is readable once its
 * part has ended). Owned by the request, valid as long as it.
 */
const char *fcr_multipart_field(const fcr_multipart *mp, const char *name, size_t *len);

/** Parts begun so far (the one being read included). 0 for NULL. */
size_t fcr_multipart_parts(const fcr_multipart *mp);

/** The multipart reading the part belongs to (NULL for NULL). */
fcr_multipart *fcr_part_multipart(const fcr_part *part);

/** The part's number in its body, from 0. */
size_t fcr_part_index(const fcr_part *part);

/**
 * The `name` parameter of the part's Content-Disposition (never NULL for a part handed to a
 * callback: a part without one is refused). Owned by the part, valid until on_part_end
 * returns.
 */
const char *fcr_part_name(const fcr_part *part);

/**
 * The file name the client sent (`filename*`, RFC 5987, in UTF-8 or ISO-8859-1, decoded to
 * UTF-8; else `filename`), or NULL for a part without one. The client's bytes as they are:
 * never use it as a path without sanitising it (it may hold '/', "..", control bytes). Owned
 * by the part, valid until on_part_end returns.
 */
const char *fcr_part_filename(const fcr_part *part);

/**
 * The part's Content-Type as sent, or NULL when it has none (RFC 7578: text/plain then). Owned
 * by the part, valid until on_part_end returns.
 */
const char *fcr_part_content_type(const fcr_part *part);

/**
 * The value of the part's header `name` (case-insensitive, the first of that name, without
 * surrounding spaces), or NULL. Owned by the part, valid until on_part_end returns.
 */
const char *fcr_part_header(const fcr_part *part, const char *name);

/** Content bytes of the part so far (in on_part_end: its length). 0 for NULL. */
uint64_t fcr_part_size(const fcr_part *part);

/**
 * Collects the part's content into memory as a field (the default for a part without a
 * filename), within max_field_size and max_fields_bytes; on_data is not called for it, and a
 * temporary file made by fcr_part_to_file() for it is removed. Only in on_part. Returns 0 or
 * FCR_EINVAL (NULL, or not in on_part).
 */
int fcr_part_collect(fcr_part *part);

/**
 * Writes the part's content to a new temporary file in directory `dir` (NULL: $TMPDIR, else
 * /tmp), named `.fcrest-part-XXXXXX` with mode 0600, instead of collecting it; on_data, when
 * set, still sees every piece. Writes happen on the loop (regular files: the page cache). The
 * file is closed before on_part_end, which may keep it with fcr_part_save_file(); otherwise it
 * is removed after on_part_end returns, and when the reading ends early. Only in on_part.
 * Returns 0; FCR_EINVAL (NULL, not in on_part, a second call); FCR_EIO (the file cannot be
 * made: the error is logged); FCR_ENOMEM. A failed write later fails the request with 500
 * (FCR_EIO, logged), the file removed.
 */
int fcr_part_to_file(fcr_part *part, const char *dir);

/**
 * The path of the part's temporary file (fcr_part_to_file()), or NULL. Owned by the part.
 */
const char *fcr_part_file_path(const fcr_part *part);

/**
 * Keeps the part's temporary file as `path` (a hard link, then the temporary name removed: an
 * existing file is never replaced, and `path` must be on the temporary file's file system).
 * Only in on_part_end. Returns 0; FCR_EEXIST (`path` exists: nothing changed, a caller may try
 * another name); FCR_EINVAL (NULL, no file, not in on_part_end, already saved); FCR_EIO (any
 * other failure of link(2), logged).
 */
int fcr_part_save_file(fcr_part *part, const char *path);

#ifdef __cplusplus
}
#endif
#endif
