#!/usr/bin/env python3
"""Writes the seed corpora for the fuzz targets.

fuzz/corpus/parser/: inputs for fuzz_parser: 5 control bytes (pause mode, four piece sizes)
followed by a FastCGI byte stream as a web server sends it.
fuzz/corpus/nv/: name-value streams (PARAMS content, GET_VALUES queries, edge cases).
fuzz/corpus/router_diff/: route tables and paths for fuzz_router_diff, one item a line
("r<methods> <pattern>", "m<prefix>" ... "e", "?<path>", "L<layout><count>"; see
fuzz/fuzz_router_diff.c).
fuzz/corpus/conn/: programs for fuzz_conn (see the opcodes in fuzz/fuzz_conn.c): whole
requests to each route and role, multiplexed, split into small writes, aborted, management
records between them, a half-close, protocol errors.
fuzz/corpus/multipart/: multipart bodies for fuzz_multipart (see multipart_seeds()).

Run from anywhere: python3 fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR, DATA, GET_VALUES = 1, 2, 3, 4, 5, 6, 7, 8, 9
RESPONDER, AUTHORIZER, FILTER = 1, 2, 3


def nvlen(n, long_form=False):
    if n < 128 and not long_form:
        return bytes([n])
    return struct.pack(">I", n | 0x80000000)


def nv(name, value, long_form=False):
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return nvlen(len(name), long_form) + nvlen(len(value), long_form) + name + value


def record(rtype, rid, content=b"", pad=None, version=1, pad_byte=0):
    if pad is None:
        pad = (8 - len(content) % 8) % 8
    return (struct.pack(">BBHHBB", version, rtype, rid, len(content), pad, 0) + content
            + bytes([pad_byte]) * pad)


def begin(rid, role=RESPONDER, flags=0, pad=0):
    return record(BEGIN, rid, struct.pack(">HB5x", role, flags), pad)


def stream(rtype, rid, data, chunk=16384, pad=None):
    """The content in records of at most `chunk` bytes, then the empty record."""
    out = b""
    for i in range(0, len(data), chunk):
        out += record(rtype, rid, data[i:i + chunk], pad)
    return out + record(rtype, rid, b"", pad)


def params(pairs):
    return b"".join(nv(k, v) for k, v in pairs)


APACHE_GET = [
    ("CONTEXT_DOCUMENT_ROOT", "/var/www/html"),
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("HTTP_ACCEPT", "*/*"),
    ("HTTP_HOST", "127.0.0.1:8080"),
    ("HTTP_USER_AGENT", "curl/7.88.1"),
    ("QUERY_STRING", "page=2&sort=name"),
    ("REMOTE_ADDR", "127.0.0.1"),
    ("REMOTE_PORT", "51234"),
    ("REQUEST_METHOD", "GET"),
    ("REQUEST_SCHEME", "http"),
    ("REQUEST_URI", "/app/users/42?page=2&sort=name"),
    ("SCRIPT_NAME", "/app"),
    ("PATH_INFO", "/users/42"),
    ("SERVER_ADDR", "127.0.0.1"),
    ("SERVER_NAME", "127.0.0.1"),
    ("SERVER_PORT", "8080"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("SERVER_SOFTWARE", "Apache/2.4.57 (Debian)"),
]


def control(mode, sizes):
    return bytes([mode]) + bytes(sizes)


def parser_seeds():
    body = b'{"name":"alice","tags":["a","b"]}'
    post = APACHE_GET[:8] + [("REQUEST_METHOD", "POST"), ("CONTENT_TYPE", "application/json"),
                             ("CONTENT_LENGTH", str(len(body)))] + APACHE_GET[9:]
    seeds = {}
    # Apache mod_proxy_fcgi: id 1, padding 0, pairs never split, KEEP_CONN 0.
    seeds["apache_get"] = (begin(1) + record(PARAMS, 1, params(APACHE_GET), 0)
                           + record(PARAMS, 1, b"", 0) + record(STDIN, 1, b"", 0))
    seeds["apache_post"] = (begin(1) + record(PARAMS, 1, params(post), 0)
                            + record(PARAMS, 1, b"", 0) + record(STDIN, 1, body, 0)
                            + record(STDIN, 1, b"", 0))
    # nginx: KEEP_CONN, padded records, empty params, a parameter sent twice.
    nginx = [("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""),
             ("CONTENT_LENGTH", ""), ("SCRIPT_NAME", "/index"), ("HTTPS", ""),
             ("HTTPS", "on"), ("REQUEST_URI", "/index")]
    seeds["nginx_keepconn"] = (begin(1, flags=1) + stream(PARAMS, 1, params(nginx))
                               + stream(STDIN, 1, b"") + begin(1, flags=1)
                               + stream(PARAMS, 1, params(nginx)) + stream(STDIN, 1, b""))
    # A pair split across two PARAMS records inside its 4-byte value length.
    p = params([("SCRIPT_NAME", "/x"), ("HTTP_COOKIE", "c" * 300)])
    cut = len(nv("SCRIPT_NAME", "/x")) + 3
    seeds["split_pair"] = (begin(7) + record(PARAMS, 7, p[:cut], 3) + record(PARAMS, 7, p[cut:], 255)
                           + record(PARAMS, 7, b"", 7) + record(STDIN, 7, b"hello", 0)
                           + record(STDIN, 7, b"", 0))
    query = nv("FCGI_MAX_CONNS", "") + nv("FCGI_MAX_REQS", "") + nv("FCGI_MPXS_CONNS", "")
    seeds["get_values"] = record(GET_VALUES, 0, query)
    seeds["get_values_mid_request"] = (begin(1) + record(PARAMS, 1, params(APACHE_GET[:4]))
                                       + record(GET_VALUES, 0, query)
                                       + record(PARAMS, 1, params(APACHE_GET[4:])) + record(PARAMS, 1)
                                       + record(42, 0, b"xyz") + record(STDIN, 1))
    seeds["multiplexed"] = (begin(1, flags=1) + begin(65535, flags=1) + record(PARAMS, 65535, nv("A", "b"))
                            + record(PARAMS, 1, nv("C", "d")) + record(PARAMS, 1) + record(PARAMS, 65535)
                            + record(STDIN, 65535, b"x" * 100) + record(ABORT, 1) + record(STDIN, 65535))
    seeds["authorizer"] = (begin(1, AUTHORIZER) + stream(PARAMS, 1, params(
        [("FCGI_ROLE", "AUTHORIZER"), ("FCGI_APACHE_ROLE", "AUTHENTICATOR"),
         ("HTTP_AUTHORIZATION", "Bearer abc"), ("REQUEST_URI", "/secret")])) + stream(STDIN, 1, b""))
    seeds["filter"] = (begin(2, FILTER) + stream(PARAMS, 2, params(
        [("FCGI_DATA_LAST_MOD", "1700000000"), ("FCGI_DATA_LENGTH", "12")])) + stream(STDIN, 2, b"")
        + stream(DATA, 2, b"file content"))
    seeds["ignored_types"] = (record(STDOUT, 1, b"out") + record(STDERR, 1) + record(END, 1, bytes(8))
                              + record(0, 1, b"?") + record(200, 3) + begin(0) + record(STDIN, 0, b"z"))
    seeds["bad_version"] = begin(1) + record(PARAMS, 1, version=0) + record(STDIN, 1)
    seeds["begin_len_7"] = record(BEGIN, 1, b"\x00\x01\x00\x00\x00\x00\x00")
    seeds["truncated"] = begin(1) + record(PARAMS, 1, params(APACHE_GET[:3]))[:-5]
    out = {}
    modes = [(0, [255, 255, 255, 255]), (1, [0, 6, 8, 200]), (2, [7, 0, 15, 3]), (4 | 3, [2, 3, 4, 5])]
    for i, (name, data) in enumerate(sorted(seeds.items())):
        mode, sizes = modes[i % len(modes)]
        out[name] = control(mode, sizes) + data
    return out


def nv_seeds():
    q = nv("FCGI_MAX_CONNS", "") + nv("FCGI_MAX_REQS", "") + nv("FCGI_MPXS_CONNS", "")
    return {
        "get_values_all": q,
        "get_values_dups": q + nv("FCGI_MAX_CONNS", "") + nv("FCGI_UNKNOWN", "1") + q,
        "apache_params": params(APACHE_GET),
        "long_forms": nv("SCRIPT_NAME", "/a", long_form=True) + nv("X", "y" * 200),
        "truncated_prefix": nv("A", "b") + b"\x80\x00",
        "overflow": b"\xff\xff\xff\xff\xff\xff\xff\xff" + b"abcdefgh",
        "value_past_end": nv("FCGI_MAX_REQS", "") + b"\x02\x05ab",
        "empty_pairs": nv("", "") + nv("", "") + nv("FCGI_MPXS_CONNS", ""),
    }


def router_diff_seeds():
    def lines(*items):
        return ("\n".join(items) + "\n").encode("utf-8")
    return {
        # A REST service: literal-prefixed routes, filed under their first segment.
        "notes": lines(
            "rG /health", "rGP /notes", "rGUD /notes/(?<id>[0-9]+)", "rO /notes/(?<id>[0-9]+)",
            "rG /notes/(?<id>[0-9]+)/tags/(?<tag>[^/]+)",
            "?/health", "?/notes", "?/notes/42", "?/notes/abc", "?/notes/7/tags/caf%C3%A9",
            "?/notes/7/tags/100%", "?/notes/7/tags/%252e", "?/nothing", "?/", "?"),
        # Param-first and alternation patterns, tried on every lookup, mixed in order with
        # indexed ones.
        "generic": lines(
            "rG /(?<kind>cats|dogs)/(?<name>[^/]+)", "rP /cats/new", "rD /cats/(?<name>[^/]+)",
            "rG /a|/b", "rG /opt(/(?<tail>.+))?", "rGH (?<all>/.*)",
            "?/cats/tom", "?/cats/new", "?/dogs/%2e%2e", "?/a", "?/b", "?/opt", "?/opt/x/y",
            "?/zzz"),
        # Mounts: nested, at "/", routes before and after them, routes added after the mount.
        "mounts": lines(
            "rG /api/status", "m/api", "rG /v1/(?<n>[^/]+)", "rGO /?", "m/v2", "rP /(?<x>.*)",
            "e", "e", "rGP /api/(?<rest>.*)", "m/", "rH /api/v1/(?<n>[^/]+)", "e", "m/apix",
            "rG /", "e", "m/bad/", "rG /x", "e",
            "?/api/status", "?/api/v1/one", "?/api", "?/api/", "?/api/v2/zz", "?/apix",
            "?/apix/", "?/api/v1/%41"),
        # HEAD, GET and OPTIONS precedence.
        "methods": lines(
            "rG /r", "rH /r", "rO /r", "rGHPUDAOTC /all", "rT /t", "rC /c",
            "?/r", "?/all", "?/t", "?/c"),
        # Literal prefixes the index must get right: escapes, quantifiers after the literal,
        # items that match nothing, case-insensitive parts, UTF-8.
        "prefixes": lines(
            "rG /a\\.b", "rG /ab?", "rG /ac(?#x)?", "rG /ad\\E?", "rG \\Q/q\\E/x",
            "rG /\u00e9?", "rG /(?i)cAsE", "rG /lo(?i)wer", "rG /x{2}", "rG /y\\d",
            "rG /z(?=z)z", "rG /s\\/t", "rG //(?<e>x)", "rG (?J)/(?:d/(?<i>[0-9]+)|e/(?<i>[a-z]+))",
            "?/a.b", "?/axb", "?/a", "?/ab", "?/ac", "?/acx", "?/ad", "?/q/x", "?/\u00e9", "?/",
            "?/CASE", "?/case", "?/loWER", "?/LOWER", "?/xx", "?/x", "?/y1", "?/zz", "?/s/t",
            "?//x", "?/d/12", "?/e/ab"),
        # Escapes in params: decoded once with FCR_MATCH_DECODE, verbatim without.
        "escapes": lines(
            "rG /p/(?<v>[^/]+)", "rG /p/(?<v>.*)",
            "?/p/100%", "?/p/100%25", "?/p/%2e%2e", "?/p/%00", "?/p/a\x00b", "?/p/%zz",
            "?/p/caf%C3%A9", "?/p/%FF", "?/p/a%2Fb"),
        # The segment index's three layouts (L lines), overlapping so that registration order
        # decides, with mounts and hand-written routes between them.
        "layout_distinct": lines(
            "L040", "rG /res3/(?<id>\\d+)",
            "?/res3/42", "?/res3", "?/res5/1/items/a-b", "?/res6/", "?/res6/7", "?/res9/1",
            "?/res3/x", "?/"),
        "layout_prefix": lines(
            "rG /api/v1/res2/(?<id>[0-9]+)", "L140", "m/api", "L120", "e",
            "?/api/v1/res2/42", "?/api/v1/res1", "?/api/v1/abc2/x", "?/api/v1/res3/a/b/c",
            "?/api/v1/res3/", "?/api/api/v1/res0/1", "?/api/v2/res0/1", "?/api"),
        "layout_param": lines(
            "L240", "rG /(?<t>[a-z]+)/res1/(?<id>[0-9]+)", "m/acme", "L205", "e",
            "?/acme/res1/42", "?/acme/res1", "?/b/c2/3", "?/x/res4/5/", "?/acme/acme/res0/1",
            "?/ACME/res1/1", "?//res1/1", "?/a/res1/1/2"),
        # Patterns whose segments the index must read right: classes with and without '/',
        # quantified slashes, escapes, groups, anchors, items that match nothing.
        "segments": lines(
            "rG /a/[^/]+/c", "rG /a/[a-z/]+", "rG /a/[^a]+", "rG /a/[]x]/c", "rG /a/[\\w-]+/d",
            "rG /b/?c", "rG /b/(?#x)?d", "rG /b\\/e", "rG /b/\\E?f", "rG ^/c/x$", "rG /c/\\bx\\b",
            "rG /d/(?:x|y)/z", "rG /d/(x|/)y", "rG /d/x{1,2}/w", "rG /d/(?i)Q", "rG /e/[[:alpha:]]+/f",
            "rG /e/[!-/]+", "rG /e/[^!-/]+/g", "rG /f/(?=x)x/h", "rG /f/.+/h", "rG /f/a\\/b",
            "rG /g/\u00e9/i", "rG /g/(?<n>\\d+)?/j", "rG /h/[^[:]/x/[:]/]", "rG /h/[[:alpha:]/]/y",
            "?/a/b/c", "?/a/b/d/e", "?/a/xyz", "?/a/]/c", "?/a/x/c", "?/a/w-1/d", "?/bc", "?/b/c",
            "?/b/d", "?/bd", "?/b/e", "?/bf", "?/c/x", "?/d/x/z", "?/d//y", "?/d/xx/w", "?/d/q",
            "?/e/abc/f", "?/e/a/b", "?/e/ab/g", "?/f/x/h", "?/f/a/b/h", "?/f/a/b", "?/g/\u00e9/i",
            "?/g//j", "?/g/12/j", "?/h/b/x/:/]", "?/h///y", "?/h/a/y"),
    }


def write(subdir, seeds):
    d = os.path.join(HERE, "corpus", subdir)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name + ".bin"), "wb") as f:
            f.write(data)


# fuzz_conn opcodes (the byte's value modulo 8).
OP_RECORD, OP_WRITE, OP_LOOP, OP_RAW, OP_REQUEST, OP_HALF_CLOSE = 0, 3, 4, 5, 6, 7
CONN_PATHS = ["/sync", "/async", "/async?big=1", "/big", "/json", "/guarded/ab", "/guarded/AB",
              "/nope", "/sync?stop=1", "/sync?fail=1", "/", "/sync/x"]
CONN_METHODS = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "get", ""]


def conn_request(path, method="GET", rid=1, role=RESPONDER, keep=True, chunk=0, pad=0,
                 body=b"", token=False, no_length=False):
    """OP_REQUEST: one whole request (see gen_request in fuzz_conn.c)."""
    sel = (0 if role == RESPONDER else role) | (chunk << 2) | (0x10 if keep else 0) | (pad << 5)
    sel |= (0x40 if token else 0) | (0x80 if no_length else 0)
    assert len(body) < 64
    # An id byte below 128 gives id % 4; 0x80 takes the next two bytes as the id.
    ids = bytes([rid]) if rid < 4 else bytes([0x80, rid >> 8, rid & 0xff])
    return (bytes([OP_REQUEST, sel & 0xff]) + ids + bytes([len(body)]) + body
            + bytes([CONN_PATHS.index(path), CONN_METHODS.index(method)]))


def conn_raw(data):
    """OP_RAW pieces of at most 63 bytes."""
    out = b""
    for i in range(0, len(data), 63):
        piece = data[i:i + 63]
        out += bytes([OP_RAW, len(piece)]) + piece
    return out


def conn_write(n=0):
    """OP_WRITE: n * 37 bytes of what is pending (0: everything), then one loop iteration."""
    return bytes([OP_WRITE, n])


def conn_loop(n=1):
    return bytes([OP_LOOP, n - 1])


def conn_seeds():
    query = nv("FCGI_MAX_CONNS", "") + nv("FCGI_MAX_REQS", "") + nv("FCGI_MPXS_CONNS", "")
    s = {}
    for i, path in enumerate(CONN_PATHS):
        name = path.strip("/").replace("/", "_").replace("?", "_").replace("=", "") or "root"
        s["get_" + name] = (
            conn_request(path, token=i % 2 == 0) + conn_write() + conn_loop(4))
    s["post_json"] = conn_request("/json", "POST", body=b'{"a": [1, 2, {"b": null}]}') + conn_loop(2)
    s["post_bad_json"] = conn_request("/json", "PUT", body=b'{"a": ', chunk=1) + conn_loop(2)
    s["multiplexed"] = (conn_request("/async", rid=1) + conn_request("/big", rid=2)
                        + conn_request("/sync", "POST", rid=3, body=b"abc", chunk=2, pad=3)
                        + conn_request("/async?big=1", rid=4) + conn_loop(3))
    s["overloaded"] = b"".join(conn_request("/async", rid=i) for i in range(1, 7)) + conn_loop(2)
    s["small_writes"] = (conn_request("/sync", "POST", body=b"x" * 40, chunk=1, pad=7)
                         + conn_write(1) * 30 + conn_loop(2))
    s["filter"] = conn_request("/sync", rid=2, role=FILTER, body=b"filter me") + conn_loop(2)
    s["authorizer"] = (conn_request("/sync", rid=5, role=AUTHORIZER, token=True)
                       + conn_request("/sync", rid=6, role=AUTHORIZER) + conn_loop(2))
    s["keep_conn_0"] = conn_request("/sync", keep=False) + conn_loop(3) + conn_request("/sync", rid=2)
    s["abort_mid_request"] = (conn_raw(begin(1, flags=1) + record(PARAMS, 1, nv("SCRIPT_NAME", "/sync")))
                              + conn_loop(1) + conn_raw(record(ABORT, 1)) + conn_loop(2))
    s["abort_async"] = (conn_request("/async", rid=3) + conn_write() + conn_raw(record(ABORT, 3))
                        + conn_loop(3))
    s["abort_big"] = conn_request("/big", rid=3) + conn_loop(1) + conn_raw(record(ABORT, 3)) + conn_loop(3)
    s["management"] = (conn_raw(begin(1, flags=1) + record(PARAMS, 1, nv("SCRIPT_NAME", "/sync"))
                                + record(GET_VALUES, 0, query) + record(PARAMS, 1)
                                + record(42, 0, b"xyz") + record(STDOUT, 0) + record(STDIN, 1)))
    s["half_close"] = conn_request("/async", rid=1) + conn_write() + bytes([OP_HALF_CLOSE, 8])
    s["half_close_mid_record"] = conn_raw(begin(1, flags=1)[:11]) + bytes([OP_HALF_CLOSE, 0])
    s["begin_twice"] = conn_request("/async", rid=1) + conn_raw(begin(1, flags=1)) + conn_loop(2)
    s["bad_version"] = conn_raw(record(PARAMS, 1, version=2)) + conn_loop(1)
    s["bad_params"] = (conn_raw(begin(1, flags=1) + record(PARAMS, 1, b"\x80\x00\x00\x05\x01abc")
                                + record(PARAMS, 1) + record(STDIN, 1)) + conn_loop(2))
    s["stdin_before_params_end"] = conn_raw(begin(1, flags=1) + record(STDIN, 1, b"x")) + conn_loop(1)
    s["unknown_roles"] = (conn_raw(begin(1, role=0, flags=1) + begin(2, role=7) + begin(3, role=65535))
                          + conn_loop(1))
    s["records"] = bytes([OP_RECORD, 0, 1, 0, 1, 1]) + bytes([OP_RECORD, 1, 1, 0, 2, 1, 1, 4, 0])
    return s


def multipart_seeds():
    """fuzz/corpus/multipart/: bodies for fuzz_multipart: byte 0 picks the boundary (1:
    "AaB03x", 0: "x", 2: a browser's), byte 1 the limits, 8 bytes seed the splits, then the
    body (its first line also goes to the Content-Type parser)."""
    def seed(b, body, lim=0x80 | 100, rng=0x9E3779B97F4A7C15):
        return bytes([b, lim]) + struct.pack("<Q", rng) + body

    def part(bnd, name, content, filename=None, ctype=None, extra=b""):
        cd = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            cd += b'; filename="' + filename + b'"'
        h = b"--" + bnd + b"\r\n" + cd + b"\r\n"
        if ctype:
            h += b"Content-Type: " + ctype + b"\r\n"
        return h + extra + b"\r\n" + content + b"\r\n"

    a = b"AaB03x"
    two = part(a, b"field1", b"Joe Blow") + part(a, b"pics", b"...contents of file1.txt...",
                                                 b"file1.txt", b"text/plain") + b"--AaB03x--\r\n"
    tricky = part(a, b"f", b"\r\n--AaB03\r\n--AaB03y\r\r\n-\r\n--AaB03x_not", b"a.bin",
                  b"application/octet-stream")
    web = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
    return {
        "rfc7578": seed(1, two),
        "tricky_content": seed(1, tricky + b"--AaB03x--"),
        "padding_epilogue": seed(1, b"--AaB03x \t\r\n" + two[10:] + b"epilogue\r\n"),
        "browser": seed(2, part(web, b"upload", bytes(range(256)) * 3, b"x.bin")
                        + b"--" + web + b"--\r\n"),
        "ext_filename": seed(1, part(a, b"f", b"x", b"plain.txt", None,
                                     b"X-Other: 1\r\n").replace(
            b'filename="plain.txt"', b"filename*=UTF-8''%E2%82%AC%20rates.txt") + b"--AaB03x--"),
        "no_blank_line": seed(1, b"--AaB03x\r\nContent-Disposition: form-data; name=a\r\nbody"
                                 b"\r\n--AaB03x--"),
        "no_close": seed(1, part(a, b"a", b"b")),
        "preamble": seed(1, b"preamble\r\n" + two),
        "content_type": seed(1, b"multipart/form-data; charset=utf-8; boundary=\"a b'()+_,-./:=?\""
                                b"\n" + two),
        "empty": seed(0, b"--x--"),
        "many_small": seed(0, b"".join(part(b"x", b"n%d" % i, b"v" * i) for i in range(10))
                           + b"--x--", lim=0x7f),
    }


if __name__ == "__main__":
    write("parser", parser_seeds())
    write("nv", nv_seeds())
    write("router_diff", router_diff_seeds())
    write("conn", conn_seeds())
    write("multipart", multipart_seeds())
