"""HTTP checks of the notes service through a web server (python3 standard library only)."""
import http.client
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import zlib

TOKEN = {"alice": "s3cret", "bob": "hunter2"}
JSON = "application/json"


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value (last one wins)
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"{self.status} {self.headers.get('content-type')} {self.body[:160]!r}"


class Client:
    """Talks to one front end: base is http://127.0.0.1:PORT/mount (no trailing slash)."""

    def __init__(self, base, timeout=30.0):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.mount = u.hostname, u.port, u.path.rstrip("/")
        self.timeout = timeout

    def request(self, method, path, body=None, headers=None, user=None, token=None,
                chunked=False, timeout=None):
        h = dict(headers or {})
        if user:
            token = TOKEN[user]
        if token:
            h["Authorization"] = f"Bearer {token}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
            h.setdefault("Content-Type", JSON)
        elif isinstance(body, str):
            body = body.encode("utf-8")
        if chunked:
            h["Transfer-Encoding"] = "chunked"
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        try:
            c.request(method, self.mount + path, body=body, headers=h, encode_chunked=chunked)
            r = c.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            return Resp(r.status, hdrs, data)
        finally:
            c.close()


def problem_ok(r, status):
    """True when r is an application/problem+json answer with the right fields."""
    if r.status != status:
        return False
    ctype = (r.header("content-type") or "").split(";")[0].strip()
    if ctype != "application/problem+json":
        return False
    try:
        p = r.json()
    except ValueError:
        return False
    return (isinstance(p, dict) and p.get("status") == status and isinstance(p.get("title"), str)
            and "type" in p and isinstance(p.get("detail"), str))


def is_json(r):
    return (r.header("content-type") or "").split(";")[0].strip() == JSON


def allow_set(r):
    return {m.strip().upper() for m in (r.header("allow") or "").split(",") if m.strip()}


def contract(t, c, name, authz=None):
    """The notes contract, row by row. authz: None (the app checks tokens itself), "apache"
    (mod_authnz_fcgi refuses writes: Apache's own 401 page) or "lighttpd" (the authorizer's
    401 goes to the client as the app wrote it)."""
    p = f"{name}: "

    r = c.request("GET", "/health")
    t.check(p + "GET /health", r.status == 200 and is_json(r) and r.json() == {"status": "ok"}, r)

    r = c.request("GET", "/whoami")
    t.check(p + "GET /whoami without token", r.status == 200 and r.json() == {"user": None}, r)
    r = c.request("GET", "/whoami", user="alice")
    t.check(p + "GET /whoami with token", r.status == 200 and r.json() == {"user": "alice"}, r)

    # Writes without a token.
    before = c.request("GET", "/notes").json()
    r = c.request("POST", "/notes", {"title": "no token"})
    if authz == "apache":
        good = (r.status == 401 and (r.header("www-authenticate") or "").startswith("Bearer")
                and not (r.header("content-type") or "").startswith("application/"))
        t.check(p + "POST without token refused by the authorizer (Apache's 401 page)", good, r)
    else:
        good = problem_ok(r, 401) and (r.header("www-authenticate") or "").startswith("Bearer")
        t.check(p + "POST without token -> 401 problem+json, WWW-Authenticate: Bearer", good, r)
    r = c.request("POST", "/notes", {"title": "bad token"}, token="wrong")
    t.check(p + "POST with a wrong token -> 401", r.status == 401, r)
    after = c.request("GET", "/notes").json()
    t.check(p + "refused writes stored nothing", before == after, f"{before} -> {after}")

    # Create.
    r = c.request("POST", "/notes", {"title": "first", "body": "hello", "extra": [1, 2]}, user="alice")
    ok = r.status == 201 and is_json(r)
    n1 = r.json() if ok else {}
    loc = r.header("location") or ""
    ok = ok and isinstance(n1.get("id"), int) and n1.get("id") >= 1 and n1.get("title") == "first" \
        and n1.get("body") == "hello" and n1.get("author") == "alice" and "extra" not in n1
    t.check(p + "POST /notes -> 201 with the note", ok, r)
    t.check(p + "Location ends in /notes/<id> under the mount",
            loc.endswith(f"/notes/{n1.get('id')}") and c.mount in loc, loc)
    id1 = n1.get("id", 1)

    r = c.request("POST", "/notes", {"title": "second"}, user="bob")
    n2 = r.json() if r.status == 201 else {}
    t.check(p + "POST: body defaults to \"\", author is the token's user",
            r.status == 201 and n2.get("body") == "" and n2.get("author") == "bob"
            and n2.get("id", 0) > id1, r)
    id2 = n2.get("id", id1 + 1)

    r = c.request("POST", "/notes", {"title": "third"},
                  headers={"Content-Type": "application/json; charset=utf-8"}, user="alice")
    t.check(p + "POST with Content-Type parameters accepted", r.status == 201, r)
    id3 = r.json().get("id", id2 + 1) if r.status == 201 else id2 + 1

    # Read.
    r = c.request("GET", f"/notes/{id1}")
    t.check(p + "GET /notes/<id>", r.status == 200 and is_json(r) and r.json() == n1, r)
    r = c.request("GET", "/notes")
    lst = r.json() if r.status == 200 else []
    ids = [n["id"] for n in lst]
    t.check(p + "GET /notes lists all notes in increasing id order",
            r.status == 200 and is_json(r) and ids == sorted(ids) and {id1, id2, id3} <= set(ids), r)
    pos = ids.index(id2) if id2 in ids else 0
    r = c.request("GET", f"/notes?limit=1&offset={pos}")
    t.check(p + "GET /notes?limit=1&offset=M", r.status == 200 and [n["id"] for n in r.json()] == [id2], r)
    r = c.request("GET", "/notes?limit=0")
    t.check(p + "GET /notes?limit=0 -> []", r.status == 200 and r.json() == [], r)
    for q in ("limit=abc", "offset=-1", "limit=1.5", "limit="):
        r = c.request("GET", f"/notes?{q}")
        t.check(p + f"GET /notes?{q} -> 400 problem+json", problem_ok(r, 400), r)
    r = c.request("GET", "/notes/999999")
    t.check(p + "GET missing note -> 404 problem+json", problem_ok(r, 404), r)
    r = c.request("GET", "/notes/abc")
    t.check(p + "GET /notes/abc -> 404 problem+json (no route)", problem_ok(r, 404), r)
    r = c.request("GET", "/nothing/here")
    t.check(p + "unknown path -> 404 problem+json", problem_ok(r, 404), r)

    # Replace.
    r = c.request("PUT", f"/notes/{id1}", {"title": "first, again"}, user="bob")
    t.check(p + "PUT /notes/<id> -> 200, same id, replaced, author of the replacement",
            r.status == 200 and r.json() == {"id": id1, "title": "first, again", "body": "",
                                             "author": "bob"}, r)
    r = c.request("GET", f"/notes/{id1}")
    t.check(p + "GET after PUT shows the replacement", r.status == 200 and r.json().get("title") == "first, again", r)
    r = c.request("PUT", "/notes/999999", {"title": "x"}, user="alice")
    t.check(p + "PUT missing note -> 404", problem_ok(r, 404), r)

    # Validation, in order.
    r = c.request("POST", "/notes", b'{"title":"x"}', headers={"Content-Type": "text/plain"}, user="alice")
    t.check(p + "POST text/plain -> 415 problem+json", problem_ok(r, 415), r)
    r = c.request("POST", "/notes", b'{"title": "x",\n  "body": }', headers={"Content-Type": JSON}, user="alice")
    detail = r.json().get("detail", "") if problem_ok(r, 400) else ""
    t.check(p + "POST invalid JSON -> 400 naming line and column",
            problem_ok(r, 400) and "line" in detail and "2" in detail and "column" in detail, r)
    for what, body in (("an array", [1, 2]), ("no title", {"body": "x"}),
                       ("a number title", {"title": 5}), ("an empty title", {"title": ""}),
                       ("a 201-character title", {"title": "é" * 201}),
                       ("a non-string body", {"title": "x", "body": 3})):
        r = c.request("POST", "/notes", body, user="alice")
        t.check(p + f"POST {what} -> 422 problem+json", problem_ok(r, 422), r)
    r = c.request("POST", "/notes", {"title": "é" * 200}, user="alice")
    t.check(p + "POST a 200-character title -> 201", r.status == 201, r)
    if r.status == 201:
        c.request("DELETE", f"/notes/{r.json()['id']}", user="alice")

    # HEAD, OPTIONS, 405.
    for path in ("/health", "/notes", f"/notes/{id1}"):
        r = c.request("HEAD", path)
        t.check(p + f"HEAD {path} -> 200, JSON headers, no body",
                r.status == 200 and is_json(r) and r.body == b"", r)
    r = c.request("HEAD", "/notes/999999")
    t.check(p + "HEAD missing note -> 404, no body", r.status == 404 and r.body == b"", r)
    r = c.request("OPTIONS", "/notes")
    t.check(p + "OPTIONS /notes -> 204 with Allow",
            r.status == 204 and allow_set(r) == {"GET", "HEAD", "POST", "OPTIONS"}, r)
    r = c.request("OPTIONS", f"/notes/{id1}")
    t.check(p + "OPTIONS /notes/<id> -> 204 with Allow",
            r.status == 204 and allow_set(r) == {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}, r)
    r = c.request("PATCH", "/notes", {"title": "x"}, user="alice")
    t.check(p + "PATCH /notes -> 405 problem+json with Allow",
            problem_ok(r, 405) and allow_set(r) == {"GET", "HEAD", "POST", "OPTIONS"}, r)
    r = c.request("PATCH", f"/notes/{id1}", {"title": "x"}, user="alice")
    t.check(p + "PATCH /notes/<id> -> 405 problem+json with Allow",
            problem_ok(r, 405) and allow_set(r) == {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}, r)

    # Delete; ids are never reused.
    r = c.request("DELETE", f"/notes/{id3}", user="alice")
    t.check(p + "DELETE /notes/<id> -> 204, no body", r.status == 204 and r.body == b"", r)
    r = c.request("DELETE", f"/notes/{id3}", user="alice")
    t.check(p + "DELETE again -> 404", problem_ok(r, 404), r)
    r = c.request("DELETE", f"/notes/{id2}")
    t.check(p + "DELETE without token -> 401", r.status == 401, r)
    r = c.request("POST", "/notes", {"title": "after delete"}, user="alice")
    t.check(p + "ids are never reused", r.status == 201 and r.json().get("id", 0) > id3, r)


def unicode_paths(t, c, name, slash_decoded=False):
    """Unicode in JSON and paths, percent-encoded path params. slash_decoded: the web server
    turns %2F into / before the app sees the path (nginx does), instead of refusing it or
    passing it on encoded."""
    p = f"{name}: "
    title = "Grüße, 世界 👋"
    body = "naïve café \u2028 \"quoted\" \\ tab\t"
    r = c.request("POST", "/notes", {"title": title, "body": body}, user="alice")
    ok = r.status == 201 and r.json().get("title") == title and r.json().get("body") == body
    t.check(p + "Unicode title and body stored and returned as sent", ok, r)
    nid = r.json().get("id", 1) if r.status == 201 else 1
    r = c.request("GET", f"/notes/{nid}")
    t.check(p + "Unicode note read back", r.status == 200 and r.json().get("title") == title, r)
    raw = r.body
    t.check(p + "JSON answer is valid UTF-8", _utf8(raw), raw[:80])

    enc = "".join(f"%{ord(ch):02X}" for ch in str(nid))
    r = c.request("GET", f"/notes/{enc}")
    t.check(p + f"percent-encoded id /notes/{enc} is note {nid}",
            r.status == 200 and r.json().get("id") == nid, r)
    r = c.request("GET", f"/notes%2F{nid}")
    if slash_decoded:
        t.check(p + "encoded slash /notes%2F<id>: decoded by the web server to /notes/<id>",
                r.status == 200 and r.json().get("id") == nid, r)
    else:
        t.check(p + "encoded slash /notes%2F<id> is not /notes/<id> (404)", r.status == 404, r)
    r = c.request("GET", "/notes/caf%C3%A9")
    t.check(p + "Unicode path /notes/café -> 404 problem+json", problem_ok(r, 404), r)
    r = c.request("GET", "/notes/%D9%A3")
    t.check(p + "non-ASCII digit /notes/\u0663 -> 404 problem+json", problem_ok(r, 404), r)
    r = c.request("GET", "/%E2%9C%93")
    t.check(p + "Unicode path /\u2713 -> 404 problem+json", problem_ok(r, 404), r)
    r = c.request("GET", "/notes?limit=%31&x=%E2%9C%93")
    t.check(p + "query with percent-encoded digits and Unicode", r.status == 200 and isinstance(r.json(), list), r)
    r = c.request("GET", "/health?y=%00")
    t.check(p + "query with an encoded NUL is harmless (200, or 400 from the web server)",
            r.status in (200, 400), r)
    r = c.request("GET", "/health")
    t.check(p + "still serving after the NUL", r.status == 200, r)
    r = c.request("DELETE", f"/notes/{enc}", user="alice")
    t.check(p + "DELETE through a percent-encoded id", r.status == 204, r)


# What the client sends after /p/ and the path param the app must see: the client's bytes
# decoded exactly once, whether the web server decoded the path (SCRIPT_NAME + PATH_INFO) or
# the app decodes REQUEST_URI's raw path itself.
DECODE_ONCE = [
    ("100%25", "100%"),
    ("%252e%252e", "%2e%2e"),
    ("%2541", "%41"),
    ("caf%C3%A9", "caf\u00e9"),
    ("%E2%9C%93%20ok+1", "\u2713 ok+1"),
    ("a%3Fb%23c", "a?b#c"),
]


def _server_page(r, status):
    """An answer the web server made itself (its own HTML page), not the app's JSON."""
    ctype = (r.header("content-type") or "").split(";")[0].strip()
    return r.status == status and ctype == "text/html"


def path_params(t, c, name, server, raw):
    """examples/pathparam behind a web server (apache, nginx or lighttpd, as deploy/ configures
    it): GET /p/<v> answers {"v": <v>}. A path param equals the client's bytes decoded once.
    raw: the app routes on REQUEST_URI (--route-on-request-uri) instead of the decoded
    SCRIPT_NAME + PATH_INFO. Escapes that the web servers treat differently are checked for
    what each one does."""
    p = f"{name}: "

    def value(r):
        return r.json().get("v") if r.status == 200 and is_json(r) else None

    for sent, want in DECODE_ONCE:
        r = c.request("GET", f"/p/{sent}")
        t.check(p + f"/p/{sent} reaches the handler as {want!r}", value(r) == want, r)

    r = c.request("GET", "/p/a%2Fb")
    if server == "apache":
        t.check(p + "/p/a%2Fb: refused by Apache itself with its 404 page (AllowEncodedSlashes Off)",
                _server_page(r, 404), r)
    elif not raw:
        t.check(p + "/p/a%2Fb: decoded to /p/a/b by the web server, no route: 404 problem+json",
                problem_ok(r, 404), r)
    else:
        t.check(p + "/p/a%2Fb: raw in REQUEST_URI, reaches the handler as 'a/b'",
                value(r) == "a/b", r)

    # A dot segment, encoded: every server decodes it and removes it with the segment before
    # it, so the app sees the mount's root; REQUEST_URI keeps it, and the param is "..".
    r = c.request("GET", "/p/%2e%2e")
    if not raw:
        t.check(p + "/p/%2e%2e: the web server removes the dot segment: 404 problem+json",
                problem_ok(r, 404), r)
    else:
        t.check(p + "/p/%2e%2e: raw in REQUEST_URI, reaches the handler as '..'",
                value(r) == "..", r)

    # An encoded NUL never reaches the app: Apache answers 404, nginx and lighttpd 400.
    r = c.request("GET", "/p/a%00b")
    status = 404 if server == "apache" else 400
    t.check(p + f"/p/a%00b: refused by the web server itself with {status}",
            _server_page(r, status), r)

    # An escape that decodes to invalid UTF-8: lighttpd refuses it with 400; behind the others
    # the decoded path cannot match a UTF-8 pattern (404), and the raw one gives a value the
    # example cannot put in JSON (its 400).
    r = c.request("GET", "/p/%FF")
    if server == "lighttpd":
        t.check(p + "/p/%FF: refused by lighttpd itself with 400", _server_page(r, 400), r)
    elif not raw:
        t.check(p + "/p/%FF: decoded to a byte that is not UTF-8, no route: 404 problem+json",
                problem_ok(r, 404), r)
    else:
        t.check(p + "/p/%FF: raw in REQUEST_URI, the value is byte 0xFF: the handler's 400",
                problem_ok(r, 400), r)

    r = c.request("GET", "/p/")
    t.check(p + "/p/ (no value): 404 problem+json", problem_ok(r, 404), r)


def _utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _json_body(size, fill=b"x"):
    """A note whose JSON encoding is exactly `size` bytes, as a list of chunks."""
    pre, post = b'{"title": "big", "body": "', b'"}'
    n = size - len(pre) - len(post)
    chunks = [pre]
    while n > 0:
        k = min(n, 65536)
        chunks.append(fill * k)
        n -= k
    chunks.append(post)
    return chunks


def bodies(t, c, name, limit):
    """Request bodies of 0 bytes, 16 KiB and 8 MiB (chunked, no Content-Length), and bodies
    over the app's limit (`limit` bytes) with and without Content-Length."""
    p = f"{name}: "
    r = c.request("POST", "/notes", b"", headers={"Content-Type": JSON}, user="alice")
    t.check(p + "0-byte body -> 400 problem+json", problem_ok(r, 400), r)
    r = c.request("POST", "/notes", b"", headers={"Content-Type": JSON}, user="alice", chunked=True)
    t.check(p + "0-byte chunked body -> 400 problem+json", problem_ok(r, 400), r)

    size = 16 * 1024
    r = c.request("POST", "/notes", b"".join(_json_body(size)), headers={"Content-Type": JSON}, user="alice")
    t.check(p + "16 KiB body with Content-Length -> 201, body intact",
            r.status == 201 and len(r.json().get("body", "")) == size - 28, r)
    r = c.request("POST", "/notes", iter(_json_body(size)), headers={"Content-Type": JSON},
                  user="alice", chunked=True)
    t.check(p + "16 KiB chunked body -> 201, body intact",
            r.status == 201 and len(r.json().get("body", "")) == size - 28, r)

    over = limit + 1024 * 1024
    r = c.request("POST", "/notes", b"".join(_json_body(over)), headers={"Content-Type": JSON},
                  user="alice", timeout=60)
    t.check(p + f"{over >> 20} MiB body with Content-Length over the limit -> 413 problem+json",
            problem_ok(r, 413), r)
    r = _robust(lambda: c.request("POST", "/notes", iter(_json_body(over)),
                                  headers={"Content-Type": JSON}, user="alice", chunked=True, timeout=60))
    t.check(p + f"{over >> 20} MiB chunked body over the limit -> 413 problem+json",
            isinstance(r, Resp) and problem_ok(r, 413), r)

    big = 8 * 1024 * 1024
    if big <= limit:
        # The answer repeats the 8 MiB body: it also exercises large output.
        r = _robust(lambda: c.request("POST", "/notes", iter(_json_body(big, b"y")),
                                      headers={"Content-Type": JSON}, user="alice", chunked=True,
                                      timeout=30))
        ok = isinstance(r, Resp) and r.status == 201
        t.check(p + "8 MiB chunked body (no Content-Length) -> 201, every byte kept",
                ok and r.json().get("body") == "y" * (big - 28), r)
        if ok:
            nid = r.json()["id"]
            r = _robust(lambda: c.request("GET", f"/notes/{nid}", timeout=30))
            t.check(p + "8 MiB note read back",
                    isinstance(r, Resp) and r.status == 200 and len(r.body) > big - 28, r)
            c.request("DELETE", f"/notes/{nid}", user="alice", timeout=30)
    r = _robust(lambda: c.request("GET", "/health", timeout=10))
    t.check(p + "still serving after the large bodies", isinstance(r, Resp) and r.status == 200, r)


def _robust(fn):
    try:
        return fn()
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"


def _cut_upload(c, declared, send):
    """Declares a body of `declared` bytes, sends `send` of them, and goes away."""
    s = socket.create_connection((c.host, c.port), timeout=10)
    head = (f"POST {c.mount}/notes HTTP/1.1\r\nHost: {c.host}:{c.port}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {TOKEN['alice']}\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    s.sendall(head)
    sent = 0
    for ch in _json_body(declared):
        if sent >= send:
            break
        s.sendall(ch)
        sent += len(ch)
    time.sleep(0.3)
    s.close()


def _rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def disconnect_mid_upload(t, c, name, app_pid, app_log_offset, read_app_log):
    """Clients that send half of a declared body and go away. The app must log it, free the
    request (its memory does not grow with the number of such requests) and keep serving."""
    p = f"{name}: "
    _cut_upload(c, 4 << 20, 2 << 20)
    deadline = time.time() + 10
    logged = ""
    while time.time() < deadline:
        logged = read_app_log(app_log_offset)
        if logged.strip():
            break
        time.sleep(0.1)
    t.check(p + "the app logs the request cut off mid-upload", logged.strip() != "",
            "nothing in the app log (even at --log-level debug)")
    r = c.request("GET", "/health")
    t.check(p + "the app keeps serving after a client went away mid-upload", r.status == 200, r)
    # Each cut-off request held 2 MiB of body: kept requests would add up to 40 MiB.
    _cut_upload(c, 4 << 20, 2 << 20)
    rss0 = _rss_kib(app_pid)
    for _ in range(20):
        _cut_upload(c, 4 << 20, 2 << 20)
    time.sleep(0.5)
    rss1 = _rss_kib(app_pid)
    t.check(p + f"cut-off requests are freed (RSS {rss0} -> {rss1} KiB after 20 more)",
            rss0 > 0 and rss1 - rss0 < 16 * 1024, f"RSS {rss0} -> {rss1} KiB")
    r = c.request("POST", "/notes", {"title": "after disconnect"}, user="alice")
    t.check(p + "writes work after the disconnects", r.status == 201, r)
    return logged


class Hammer:
    """Continuous GET requests from several threads; records (start time, status or error)."""

    def __init__(self, c, path="/health", threads=4):
        self.c, self.path, self.n = c, path, threads
        self.results = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = []

    def _run(self):
        while not self.stop_flag.is_set():
            t0 = time.time()
            try:
                r = self.c.request("GET", self.path, timeout=15)
                res = r.status
            except (OSError, http.client.HTTPException) as e:
                res = type(e).__name__
            with self.lock:
                self.results.append((t0, res))

    def start(self):
        for _ in range(self.n):
            th = threading.Thread(target=self._run, daemon=True)
            th.start()
            self.threads.append(th)

    def stop(self):
        self.stop_flag.set()
        for th in self.threads:
            th.join(30)
        return sorted(self.results)


# ---- streamed bodies (examples/stream) ------------------------------------------------------

def _status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _random_blocks(total, block=1 << 20):
    """`total` random bytes, in blocks."""
    sent = 0
    while sent < total:
        n = min(block, total - sent)
        yield os.urandom(n)
        sent += n


def _upload(c, total, chunked=False):
    """POSTs `total` bytes to /upload without holding them; returns (Resp or error, crc32)."""
    crc = 0

    def gen():
        nonlocal crc
        for b in _random_blocks(total):
            crc = zlib.crc32(b, crc)
            yield b
    h = {"Content-Type": "application/octet-stream"}
    if not chunked:
        h["Content-Length"] = str(total)
    conn = http.client.HTTPConnection(c.host, c.port, timeout=120)
    try:
        conn.request("POST", c.mount + "/upload", body=gen(), headers=h, encode_chunked=chunked)
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return Resp(r.status, hdrs, data), crc
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}", crc
    finally:
        conn.close()


def _rows(c, n):
    """GETs /rows?n=N reading it in pieces: (status, headers, bytes, rows, head, tail)."""
    conn = http.client.HTTPConnection(c.host, c.port, timeout=120)
    try:
        conn.request("GET", f"{c.mount}/rows?n={n}")
        r = conn.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        size = rows = 0
        head = tail = carry = b""
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            if len(head) < 64:
                head = (head + b)[:64]
            # The 5 bytes kept are too few for a whole marker: one cut between two pieces is
            # counted once, in the joined bytes.
            joined = carry + b
            rows += joined.count(b'{"id":')
            carry = joined[-5:]
            size += len(b)
            tail = joined[-64:]
        return r.status, hdrs, size, rows, head, tail
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}", {}, 0, 0, b"", b""
    finally:
        conn.close()


def streams(t, c, name, pid, tmp):
    """examples/stream behind a web server: a 64 MiB upload and a response of more than
    100 MiB pass through the worker `pid`, whose peak resident memory grows far less than
    either; a body over --max-upload (80m) is answered 413."""
    r = c.request("GET", "/health")
    t.check(f"{name} streams: the app answers", r.status == 200, r.status)
    base = _status_kib(pid, "VmRSS")
    up = 64 << 20
    r, crc = _upload(c, up)
    want = {"bytes": up, "crc32": f"{crc:08x}"}
    got = None if isinstance(r, str) else (json.loads(r.body) if r.status == 200 else r.status)
    t.check(f"{name} streams: a 64 MiB upload is read whole and in order", got == want,
            f"{r if isinstance(r, str) else (r.status, r.body[:200])} want {want}")
    rows = 3_000_000  # about 108 MiB of JSON
    st, hdrs, size, count, head, tail = _rows(c, rows)
    t.check(f"{name} streams: 3 million rows (over 100 MiB) arrive whole",
            st == 200 and count == rows and size > (100 << 20) and head.startswith(b'[{"id":1,')
            and tail.endswith(b'"row 3000000"}]'),
            f"status {st}, {count} rows, {size} bytes, {head[:30]!r} ... {tail[-30:]!r}")
    t.check(f"{name} streams: the answer has no Content-Length (the web server streams it)",
            "content-length" not in hdrs, hdrs)
    peak = _status_kib(pid, "VmHWM")
    grown = peak - base
    print(f"# {name} streams: worker RSS {base} KiB before, peak {peak} KiB after a 64 MiB "
          f"upload and a {size >> 20} MiB answer (+{grown} KiB)", flush=True)
    with open(os.path.join(tmp, "stream-rss.txt"), "a") as f:
        f.write(f"{name} {base} {peak} {size}\n")
    t.check(f"{name} streams: the worker's peak memory grows by less than 16 MiB",
            base > 0 and peak > 0 and grown < 16 * 1024, f"+{grown} KiB")
    # Over the limit: declared, refused before the body is read.
    r, _ = _upload(c, 81 << 20)
    t.check(f"{name} streams: a declared body over --max-upload is 413",
            not isinstance(r, str) and problem_ok(r, 413), r if isinstance(r, str) else r.status)
    # Not declared (chunked from the client): counted as it arrives.
    r, _ = _upload(c, 81 << 20, chunked=True)
    t.check(f"{name} streams: a chunked body over --max-upload is 413",
            not isinstance(r, str) and r.status == 413, r if isinstance(r, str) else r.status)
    r = c.request("GET", "/health")
    t.check(f"{name} streams: the app still answers", r.status == 200, r.status)


# ---- multipart uploads (examples/upload) ----------------------------------------------------

def _curl_form(c, fields, extra=()):
    """POSTs a multipart/form-data body made by `curl -F` (each item of `fields` one -F
    argument) to /uploads; returns (status, parsed JSON or the raw body)."""
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "300", *extra]
    for f in fields:
        argv += ["-F", f]
    argv.append(f"http://{c.host}:{c.port}{c.mount}/uploads")
    r = subprocess.run(argv, capture_output=True)
    out = r.stdout.rsplit(b"\n", 1)
    if r.returncode != 0 or len(out) != 2:
        return None, r.stderr.decode(errors="replace")
    status = int(out[1] or 0)
    try:
        return status, json.loads(out[0])
    except ValueError:
        return status, out[0]


def _file_crc(path):
    crc = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return crc
            crc = zlib.crc32(b, crc)


def uploads(t, c, name, pid, tmp, store):
    """examples/upload behind a web server: forms sent by `curl -F` are stored in `store` under
    safe names (never outside it), a 64 MiB file passes through the worker `pid` while its peak
    resident memory grows far less, and malformed multipart bodies are answered 400."""
    r = c.request("GET", "/health")
    t.check(f"{name} uploads: the app answers", r.status == 200, r.status)
    src = os.path.join(tmp, f"upload-src-{name}")
    os.makedirs(src, exist_ok=True)
    small = os.path.join(src, "notes.txt")
    with open(small, "wb") as f:
        f.write(b"first line\r\n--not a boundary\r\n" * 100)
    odd = os.path.join(src, "odd.bin")
    with open(odd, "wb") as f:
        f.write(os.urandom(300_001))
    # A field, a text file, and a binary file whose name tries to leave the directory.
    st, body = _curl_form(c, ["title=holiday pictures", f"doc=@{small};type=text/plain",
                              f"bin=@{odd};filename=../../{name}-escape .bin"])
    want = [{"name": "doc", "filename": "notes.txt", "size": os.path.getsize(small),
             "crc32": f"{_file_crc(small):08x}"},
            {"name": "bin", "filename": f"{name}-escape_.bin", "size": 300_001,
             "crc32": f"{_file_crc(odd):08x}"}]
    t.check(f"{name} uploads: curl -F with a field and two files is stored (201, names made safe)",
            st == 201 and body == want, f"{st} {str(body)[:300]} want {want}")
    stored = sorted(os.listdir(store))
    t.check(f"{name} uploads: the files are in the directory and nothing left it",
            f"{name}-escape_.bin" in stored and "notes.txt" in stored
            and not os.path.exists(os.path.join(os.path.dirname(store), f"{name}-escape .bin"))
            and not any(s.startswith(".") for s in stored)
            and _file_crc(os.path.join(store, "notes.txt")) == _file_crc(small), stored)
    # The same file again: a new name, the first one kept.
    st, body = _curl_form(c, [f"doc=@{small}"])
    t.check(f"{name} uploads: a name taken gets a new one",
            st == 201 and isinstance(body, list) and body
            and body[0]["filename"] not in stored and body[0]["filename"].startswith("notes-"),
            f"{st} {str(body)[:200]}")
    # 64 MiB in bounded memory.
    big = os.path.join(src, "big.bin")
    with open(big, "wb") as f:
        for b in _random_blocks(64 << 20):
            f.write(b)
    base = _status_kib(pid, "VmRSS")
    st, body = _curl_form(c, ["kind=video", f"video=@{big};type=application/octet-stream"])
    peak = _status_kib(pid, "VmHWM")
    want = [{"name": "video", "filename": "big.bin", "size": 64 << 20,
             "crc32": f"{_file_crc(big):08x}"}]
    t.check(f"{name} uploads: a 64 MiB file is stored whole and in order", st == 201 and body == want,
            f"{st} {str(body)[:200]} want {want}")
    t.check(f"{name} uploads: the stored 64 MiB file is the one sent",
            os.path.getsize(os.path.join(store, "big.bin")) == 64 << 20
            and _file_crc(os.path.join(store, "big.bin")) == _file_crc(big), "differs")
    grown = peak - base
    print(f"# {name} uploads: worker RSS {base} KiB before, peak {peak} KiB after a 64 MiB "
          f"multipart upload (+{grown} KiB)", flush=True)
    with open(os.path.join(tmp, "upload-rss.txt"), "a") as f:
        f.write(f"{name} {base} {peak}\n")
    t.check(f"{name} uploads: the worker's peak memory grows by less than 16 MiB",
            base > 0 and peak > 0 and grown < 16 * 1024, f"+{grown} KiB")
    os.unlink(big)
    # The list.
    r = c.request("GET", "/uploads")
    listed = {e["filename"]: e["size"] for e in r.json()} if r.status == 200 else {}
    t.check(f"{name} uploads: GET /uploads lists what was stored",
            listed.get("big.bin") == 64 << 20 and listed.get("notes.txt") == os.path.getsize(small)
            and listed.get(f"{name}-escape_.bin") == 300_001, str(listed)[:300])
    # Malformed boundaries and bodies: 400 problem+json.
    good = (b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\n"
            b"abc\r\n--XyZ--\r\n")
    bad = [
        ("no boundary", "multipart/form-data", good),
        ("an empty boundary", "multipart/form-data; boundary=", good),
        ("a boundary of 71 characters", "multipart/form-data; boundary=" + "b" * 71,
         good.replace(b"XyZ", b"b" * 71)),
        ("a boundary with a forbidden character", 'multipart/form-data; boundary="Xy\\"Z"', good),
        ("a body that does not start with the boundary", "multipart/form-data; boundary=XyZ",
         b"junk\r\n" + good),
        ("a part without the blank line after its headers", "multipart/form-data; boundary=XyZ",
         good.replace(b"\r\n\r\nabc", b"\r\nabc")),
        ("a body without its closing boundary", "multipart/form-data; boundary=XyZ",
         good[:-9]),
    ]
    for what, ct, data in bad:
        r = c.request("POST", "/uploads", body=data, headers={"Content-Type": ct})
        t.check(f"{name} uploads: {what} is 400 problem+json", problem_ok(r, 400),
                f"{r.status} {r.body[:200]!r}")
    r = c.request("POST", "/uploads", body=good, headers={"Content-Type": "text/plain"})
    t.check(f"{name} uploads: another media type is 415", problem_ok(r, 415), r.status)
    # The whole body over --max-upload (80m), declared: refused before it is read.
    r, _ = _upload_to(c, "/uploads", 81 << 20, "multipart/form-data; boundary=XyZ")
    t.check(f"{name} uploads: a body over --max-upload is 413",
            not isinstance(r, str) and problem_ok(r, 413), r if isinstance(r, str) else r.status)
    r = c.request("GET", "/health")
    t.check(f"{name} uploads: the app still answers", r.status == 200, r.status)


def _upload_to(c, path, total, ctype):
    """POSTs `total` random bytes of type `ctype` to `path`; returns (Resp or error, crc32)."""
    conn = http.client.HTTPConnection(c.host, c.port, timeout=120)
    try:
        conn.request("POST", c.mount + path, body=_random_blocks(total),
                     headers={"Content-Type": ctype, "Content-Length": str(total)})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data), 0
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}", 0
    finally:
        conn.close()


# ---- CORS in a real browser ------------------------------------------------------------------

_CORS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head><body><pre id="out">pending</pre>
<script>
(async () => {
  const api = "%(api)s";
  const out = {};
  try {
    const r = await fetch(api + "/notes");
    out.get = {status: r.status, list: Array.isArray(await r.json())};
  } catch (e) { out.get = {error: String(e)}; }
  try {
    const r = await fetch(api + "/notes", {
      method: "POST",
      headers: {"Authorization": "Bearer %(token)s", "Content-Type": "application/json"},
      body: JSON.stringify({title: "from %(tag)s", body: "sent by a browser"})});
    const j = await r.json();
    out.post = {status: r.status, title: j.title, location: r.headers.get("Location"),
                request_id: r.headers.get("X-Request-Id")};
  } catch (e) { out.post = {error: String(e)}; }
  document.getElementById("out").textContent = JSON.stringify(out);
})();
</script></body></html>
"""


def _browse(chromium, url, tmp, name):
    """Loads `url` in headless Chromium and returns what its script wrote in #out (a dict), or
    an error string."""
    import html
    import re
    profile = os.path.join(tmp, f"chromium-{name}")
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=90)
    except subprocess.TimeoutExpired:
        return "chromium timed out"
    m = re.search(r'<pre id="out">(.*?)</pre>', p.stdout.decode("utf-8", "replace"), re.S)
    if not m:
        return f"no result in the page (exit {p.returncode}): {p.stderr[-300:]!r}"
    try:
        return json.loads(html.unescape(m.group(1)))
    except ValueError:
        return f"not JSON: {m.group(1)[:200]}"


def cors_browser(t, api, chromium, www, allowed, refused, tmp):
    """The browser's verdicts on a page of an allowed and of a refused origin calling `api`."""
    base = f"http://127.0.0.1:{api.port}{api.mount}"
    for tag in ("allowed", "refused"):
        with open(os.path.join(www, f"{tag}.html"), "w") as f:
            f.write(_CORS_PAGE % {"api": base, "token": TOKEN["alice"], "tag": tag})
    before = json.loads(api.request("GET", "/notes").body)
    got = _browse(chromium, f"{allowed}/allowed.html", tmp, "allowed")
    ok = isinstance(got, dict)
    t.check("cors: the allowed origin's GET is read by the page",
            ok and got.get("get") == {"status": 200, "list": True}, got)
    post = got.get("post", {}) if ok else {}
    t.check("cors: the allowed origin's POST (preflighted) creates the note",
            post.get("status") == 201 and post.get("title") == "from allowed", got)
    t.check("cors: the page reads the exposed Location and X-Request-Id headers",
            bool(post.get("location")) and bool(post.get("request_id")), post)
    got = _browse(chromium, f"{refused}/refused.html", tmp, "refused")
    ok = isinstance(got, dict)
    t.check("cors: the browser refuses the GET of an origin not allowed",
            ok and "error" in got.get("get", {}), got)
    t.check("cors: the browser refuses the POST of an origin not allowed",
            ok and "error" in got.get("post", {}), got)
    after = json.loads(api.request("GET", "/notes").body)
    titles = [n.get("title") for n in after]
    t.check("cors: the refused origin's POST never reached notes (its preflight failed)",
            "from refused" not in titles and len(after) == len(before) + 1, titles)
    # On the wire: a preflight from the allowed origin, and from the refused one.
    h = {"Origin": allowed, "Access-Control-Request-Method": "POST",
         "Access-Control-Request-Headers": "authorization,content-type"}
    r = api.request("OPTIONS", "/notes", headers=h)
    t.check("cors: a preflight of the allowed origin is 204 with Access-Control-Allow-*",
            r.status == 204 and r.header("access-control-allow-origin") == allowed
            and "POST" in (r.header("access-control-allow-methods") or ""),
            (r.status, r.headers))
    h["Origin"] = refused
    r = api.request("OPTIONS", "/notes", headers=h)
    t.check("cors: a preflight of another origin has no Access-Control-Allow-Origin",
            r.status == 204 and r.header("access-control-allow-origin") is None,
            (r.status, r.headers))
    r = api.request("GET", "/notes", headers={"Origin": allowed})
    t.check("cors: answers vary by Origin", "Origin" in (r.header("vary") or ""), r.headers)


# ---- conditional requests -------------------------------------------------------------------

def conditional(t, c, name):
    """ETags through the web server: 304 for a GET that names the current tag (no body), 412 for a
    PUT or DELETE whose If-Match names an older version, the write for the current one."""
    r = c.request("POST", "/notes", {"title": "tagged", "body": "v1"}, user="alice")
    loc = r.header("location") or ""
    path = loc[len(c.mount):] if loc.startswith(c.mount) else loc
    r = c.request("GET", path)
    tag = r.header("etag")
    t.check(f"{name} conditional: a note has a strong ETag", r.status == 200 and tag
            and tag.startswith('"'), (r.status, r.headers))
    r = c.request("GET", path, headers={"If-None-Match": tag or '"x"'})
    t.check(f"{name} conditional: If-None-Match with the current tag is 304 without a body",
            r.status == 304 and r.body == b"" and r.header("etag") == tag, (r.status, r.body[:80]))
    r = c.request("PUT", path, {"title": "tagged", "body": "v2"}, user="bob",
                  headers={"If-Match": tag or '"x"'})
    new = r.header("etag")
    t.check(f"{name} conditional: If-Match with the current tag writes (a new ETag)",
            r.status == 200 and new and new != tag, (r.status, r.headers))
    r = c.request("PUT", path, {"title": "lost", "body": "v2'"}, user="alice",
                  headers={"If-Match": tag or '"x"'})
    t.check(f"{name} conditional: If-Match with a stale tag is 412 (no lost update)",
            problem_ok(r, 412) and r.header("etag") == new, (r.status, r.body[:160]))
    r = c.request("DELETE", path, user="alice", headers={"If-Match": tag or '"x"'})
    t.check(f"{name} conditional: a DELETE with a stale tag is 412", problem_ok(r, 412), r.status)
    r = c.request("GET", path)
    t.check(f"{name} conditional: the note kept the answered write",
            r.status == 200 and json.loads(r.body).get("body") == "v2", r.body[:120])
    r = c.request("DELETE", path, user="alice", headers={"If-Match": new or '"x"'})
    t.check(f"{name} conditional: a DELETE with the current tag deletes", r.status == 204, r.status)
