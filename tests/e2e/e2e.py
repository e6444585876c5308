#!/usr/bin/env python3
"""End-to-end tests: the notes service behind real Apache httpd, nginx and lighttpd, each
started here on loopback ports with the configuration files of deploy/ (filled in only with
ports and paths), and stopped afterwards; and examples/pathparam behind the same files, for
what a path param is. Usage: e2e.py --notes PATH/TO/notes --pathparam PATH/TO/pathparam

Prints one line per check and ends with "e2e: N passed, M failed"."""
import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checks  # noqa: E402
from checks import Client, Hammer  # noqa: E402
from harness import (ROOT, LogWatch, Procs, Results, chown_nobody, fcgi_get, fill,  # noqa: E402
                     free_port, tcp_peers, wait_file, wait_tcp, wait_unix, which)

MOUNT = "/notes-app"
TOKENS = "alice:s3cret,bob:hunter2"
BIG_LIMIT = 16 * 1024 * 1024
DEFAULT_LIMIT = 1024 * 1024
BALANCER_RETRY = 2  # seconds; deploy/apache/notes-balancer.conf documents 5 by default


class Suite:
    def __init__(self, notes, tmp, results, pathparam=None, stream=None, upload=None):
        self.notes = notes
        self.pathparam = pathparam
        self.stream = stream
        self.upload = upload
        self.tmp = tmp
        self.t = results
        self.procs = Procs()
        self.logs = []       # LogWatch of every web server
        self.app_logs = []   # (name, path) of every app instance
        self.pg_dir = None   # the PostgreSQL server of the postgres phase

    # ---- starting things -------------------------------------------------------------------

    def app(self, name, listen, extra=(), tokens=TOKENS, env=None, as_nobody=False,
            log_level="info", prog=None):
        log = os.path.join(self.tmp, f"{name}.log")
        extra = list(extra)
        if prog is None and "--db" not in extra:
            # Every notes instance has a fresh SQLite store of its own, in a directory its user
            # may write.
            dbdir = os.path.join(self.tmp, f"db-{name}")
            os.makedirs(dbdir)
            if as_nobody:
                chown_nobody(dbdir)
            extra += ["--db", f"sqlite:{dbdir}/notes.db"]
        argv = [prog or self.notes, "--listen", listen, "--prefix", MOUNT, "--log-level",
                log_level, "--grace", "5", *extra]
        if as_nobody:
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
        e = {"NOTES_TOKENS": tokens}
        e.update(env or {})
        proc = self.procs.start(name, argv, log, env=e)
        if listen.startswith("unix:"):
            wait_unix(listen[5:], proc)
        else:
            wait_tcp(int(listen.rsplit(":", 1)[1]), proc)
        self.app_logs.append((name, log))
        return proc

    def apache(self, name, site, defines):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        port = free_port()
        top = os.path.join(d, "top.conf")
        with open(top, "w") as f:
            f.write(f"Define FCREST_APACHE_DIR {d}\n")
            f.write(f"Define FCREST_LISTEN 127.0.0.1:{port}\n")
            site_path = site if os.path.isabs(site) else f"{ROOT}/deploy/apache/{site}"
            f.write(f"Define FCREST_SITE {site_path}\n")
            for k, v in defines.items():
                f.write(f"Define {k} {v}\n")
            f.write(f"Include {ROOT}/deploy/apache/httpd.conf\n")
        apache2 = which("apache2")
        proc = self.procs.start(name, [apache2, "-f", top, "-DFOREGROUND"],
                                os.path.join(d, "stdout.log"))
        wait_tcp(port, proc)
        lw = LogWatch(name, os.path.join(d, "error.log"))
        self.logs.append(lw)
        return Client(f"http://127.0.0.1:{port}{MOUNT}"), proc, lw

    def nginx(self, name, app_port, extra=()):
        d = os.path.join(self.tmp, name)
        os.makedirs(os.path.join(d, "conf"))
        port = free_port()
        fill("deploy/nginx/nginx.conf", os.path.join(d, "conf", "nginx.conf"), [])
        fill("deploy/nginx/notes.conf", os.path.join(d, "conf", "notes.conf"), [
            ("server 127.0.0.1:9000;", f"server 127.0.0.1:{app_port};"),
            ("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};"),
            *extra,
        ])
        err = os.path.join(d, "error.log")
        proc = self.procs.start(name, [which("nginx"), "-p", d + "/", "-c",
                                       os.path.join(d, "conf", "nginx.conf"), "-e", err],
                                os.path.join(d, "stdout.log"))
        wait_tcp(port, proc)
        lw = LogWatch(name, err)
        self.logs.append(lw)
        return Client(f"http://127.0.0.1:{port}{MOUNT}"), proc, lw

    def lighttpd(self, name, app_port, authz_port):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        chown_nobody(d)
        port = free_port()
        conf = fill("deploy/lighttpd/lighttpd.conf", os.path.join(d, "lighttpd.conf"), [
            ('var.run_dir = "/var/tmp/fcrest-lighttpd"', f'var.run_dir = "{d}"'),
            ("server.port = 8080", f"server.port = {port}"),
        ])
        fill("deploy/lighttpd/notes.conf", os.path.join(d, "notes.conf"), [
            ("var.notes_port = 9000", f"var.notes_port = {app_port}"),
            ("var.notes_authz_port = var.notes_port", f"var.notes_authz_port = {authz_port}"),
        ])
        proc = self.procs.start(name, [which("lighttpd"), "-D", "-f", conf],
                                os.path.join(self.tmp, f"{name}.stdout.log"))
        wait_tcp(port, proc)
        lw = LogWatch(name, os.path.join(d, "error.log"))
        self.logs.append(lw)
        return Client(f"http://127.0.0.1:{port}{MOUNT}"), proc, lw

    def app_log_reader(self, path):
        def read(offset):
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        return read

    # ---- the phases ------------------------------------------------------------------------

    def docs(self):
        """Every configuration block docs/deploy.md shows is part of a file the tests run."""
        t = self.t
        path = os.path.join(ROOT, "docs", "deploy.md")
        if not t.check("docs/deploy.md exists", os.path.exists(path), path):
            return
        text = open(path, encoding="utf-8").read()
        blocks = re.findall(r"(<!-- file: (\S+) -->\s*\n)?```(\w*)\n(.*?)```", text, re.S)
        shown = 0
        for _, fname, lang, body in blocks:
            if lang not in ("apache", "nginx", "lighttpd", "ini", "systemd"):
                continue
            shown += 1
            first = body.strip().splitlines()[0] if body.strip() else ""
            if not fname:
                t.fail("docs: configuration block without a source file", first)
                continue
            src = os.path.join(ROOT, fname)
            content = open(src, encoding="utf-8").read() if os.path.exists(src) else ""
            t.check(f"docs: block from {fname} ({first[:40]}) matches the file",
                    body.strip("\n") in content, "the block differs from the file")
        t.check("docs: configuration blocks found", shown >= 5, f"{shown} blocks")

    def apache_unix(self):
        t = self.t
        run = os.path.join(self.tmp, "run")
        os.makedirs(run)
        chown_nobody(run)
        sock = os.path.join(run, "notes.sock")
        # The app runs unprivileged; the socket's owner or group must be the Apache worker's.
        app = self.app("notes-unix", f"unix:{sock}", ["--max-body", str(BIG_LIMIT),
                                                       "--socket-mode", "0660"],
                       as_nobody=True, log_level="debug")
        st = os.stat(sock)
        t.check("apache-unix: socket mode 0660, owned by the app's user",
                (st.st_mode & 0o777) == 0o660, oct(st.st_mode))
        c, _, lw = self.apache("apache-unix", "notes-unix.conf", {"NOTES_SOCKET": sock})
        checks.contract(t, c, "apache-unix")
        checks.conditional(t, c, "apache-unix")
        checks.unicode_paths(t, c, "apache-unix")
        # A client that goes away mid-upload: Apache closes the FastCGI connection.
        end = lw.allow([r"AH01075", r"AH01095", r"AH02609", r"\(104\)", r"\(32\)", r"AH01097",
                        r"AH00574", r"\(70007\)", r"\(70014\)"])
        off = os.path.getsize(app.log)
        checks.disconnect_mid_upload(t, c, "apache-unix", app.pid, off,
                                     self.app_log_reader(app.log))
        end()
        self._bodies(c, "apache-unix", BIG_LIMIT, lw)
        self._apache_unix_workers()

    def _apache_unix_workers(self):
        """The notes contract through real Apache with --workers 4 on one SQLite file: every
        worker answers like one process."""
        t = self.t
        run = os.path.join(self.tmp, "run-workers")
        os.makedirs(run)
        chown_nobody(run)
        sock = os.path.join(run, "notes.sock")
        db = os.path.join(run, "notes.db")
        self.app("notes-unix-workers", f"unix:{sock}",
                 ["--socket-mode", "0660", "--workers", "4", "--db", f"sqlite:{db}"],
                 as_nobody=True)
        c, _, _ = self.apache("apache-unix-workers", "notes-unix.conf", {"NOTES_SOCKET": sock})
        name = "apache-unix --workers 4 on SQLite"
        checks.contract(t, c, name)
        r = c.request("POST", "/notes", {"title": "seen by every worker"}, user="alice")
        t.check(f"{name}: POST /notes -> 201", r.status == 201, r)
        nid = r.json()["id"] if r.status == 201 else None
        seen = []
        for _ in range(16):
            g = c.request("GET", "/notes")
            seen.append(g.status == 200 and any(n.get("id") == nid for n in g.json()))
        t.check(f"{name}: each of 16 GET /notes sees the note just written", all(seen),
                f"{seen.count(False)} of 16 did not")

    def _bodies(self, c, name, limit, lw):
        # An answer of 413 while the body is still coming makes the web server log that the
        # client's upload was cut short; nothing else is expected.
        end = lw.allow([r"AH01075.*(Connection reset|Broken pipe)", r"AH01095", r"AH02609",
                        r"\(104\)Connection reset", r"\(32\)Broken pipe",
                        r"client intended to send too large",
                        r"\[warn\].*(request body|upstream response) is buffered to a temporary file"])
        checks.bodies(self.t, c, name, limit)
        end()

    def keepalive(self, c, name, app_port, n=200):
        """Keep-alive reuse, counted by the kernel: every TCP connection to the app (open, or
        closed less than 60 s ago) has its own client port. A web server that opened one
        connection per request would add n of them."""
        before = tcp_peers(app_port)
        statuses = [c.request("GET", "/health").status for _ in range(n)]
        time.sleep(0.2)
        after = tcp_peers(app_port)
        new = after - before
        still_open = tcp_peers(app_port, established_only=True)
        self.t.check(f"{name}: {n} requests answered", all(s == 200 for s in statuses),
                     f"{sum(s != 200 for s in statuses)} failed")
        self.t.check(f"{name}: {n} requests took {len(new)} new connections, "
                     f"{len(still_open)} stay open",
                     len(new) <= n // 20 and len(still_open) >= 1,
                     f"{len(new)} new connections for {n} requests, {len(still_open)} open")

    def apache_tcp(self):
        t = self.t
        port = free_port()
        self.app("notes-tcp", f"tcp:127.0.0.1:{port}")
        c, _, lw = self.apache("apache-tcp", "notes-tcp.conf", {"NOTES_ADDR": f"127.0.0.1:{port}"})
        # Reads never go to the authorizer and never fail for want of NOTES_USER.
        for hdr in ({}, {"Authorization": "Bearer nonsense"}):
            r = c.request("GET", "/notes", headers=hdr)
            t.check(f"apache-tcp: GET /notes {'with a bad token ' if hdr else ''}-> 200, not 500",
                    r.status == 200, r)
        checks.contract(t, c, "apache-tcp", authz="apache")
        checks.unicode_paths(t, c, "apache-tcp")
        self.keepalive(c, "apache-tcp (enablereuse=on)", port)
        self._bodies(c, "apache-tcp", DEFAULT_LIMIT, lw)

    def authz_split(self, kind):
        """The authorizer and the responder as two processes with different token lists: a
        token only the responder knows is refused before the responder sees the request, and
        a token only the authorizer knows is accepted with the user the authorizer named."""
        t = self.t
        rport, aport = free_port(), free_port()
        self.app(f"notes-{kind}-resp", f"tcp:127.0.0.1:{rport}", ["--max-body", str(BIG_LIMIT)],
                 tokens=TOKENS + ",dave:app-only")
        self.app(f"notes-{kind}-authz", f"tcp:127.0.0.1:{aport}", tokens=TOKENS + ",carol:authz-only")
        if kind == "apache":
            c, _, lw = self.apache("apache-authz", "notes-tcp.conf",
                                   {"NOTES_ADDR": f"127.0.0.1:{rport}",
                                    "NOTES_AUTHZ_ADDR": f"127.0.0.1:{aport}"})
        else:
            c, _, lw = self.lighttpd("lighttpd", rport, aport)
        name = f"{kind} authorizer"
        r = c.request("GET", "/notes")
        before = r.json() if r.status == 200 else None
        r = c.request("POST", "/notes", {"title": "x"}, token="app-only")
        t.check(f"{name}: a token only the app knows is refused by the authorizer (401)",
                r.status == 401, r)
        r = c.request("GET", "/notes")
        t.check(f"{name}: ... and the app never saw that write", r.status == 200 and r.json() == before, r)
        r = c.request("POST", "/notes", {"title": "by carol"}, token="authz-only")
        ok = r.status == 201 and r.json().get("author") == "carol"
        t.check(f"{name}: a token only the authorizer knows succeeds, author is the user it named",
                ok, r)
        if ok:
            nid = r.json()["id"]
            r = c.request("PUT", f"/notes/{nid}", {"title": "by carol, again"}, token="authz-only")
            t.check(f"{name}: PUT through the authorizer, author carol",
                    r.status == 200 and r.json().get("author") == "carol", r)
            r = c.request("DELETE", f"/notes/{nid}", token="authz-only")
            t.check(f"{name}: DELETE through the authorizer", r.status == 204, r)
        r = c.request("GET", "/whoami")
        t.check(f"{name}: reads need no token", r.status == 200 and r.json() == {"user": None}, r)
        return c, lw, rport

    def lighttpd_phase(self):
        c, lw, rport = self.authz_split("lighttpd")
        # The control for the keep-alive checks: lighttpd never sets FCGI_KEEP_CONN, so the
        # same count shows one connection per request there.
        before = tcp_peers(rport)
        statuses = [c.request("GET", "/health").status for _ in range(50)]
        time.sleep(0.2)
        new = tcp_peers(rport) - before
        self.t.check(f"lighttpd (no FCGI_KEEP_CONN): 50 requests took {len(new)} new connections",
                     all(s == 200 for s in statuses) and len(new) >= 50, f"{len(new)}, {statuses[:3]}")
        checks.contract(self.t, c, "lighttpd", authz="lighttpd")
        checks.unicode_paths(self.t, c, "lighttpd", slash_decoded=True)
        self._bodies(c, "lighttpd", BIG_LIMIT, lw)

    def nginx_phase(self):
        t = self.t
        port = free_port()
        app = self.app("notes-nginx", f"tcp:127.0.0.1:{port}", ["--max-body", str(BIG_LIMIT)],
                       env={"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"})
        c, _, lw = self.nginx("nginx", port)
        checks.contract(t, c, "nginx")
        checks.conditional(t, c, "nginx")
        checks.unicode_paths(t, c, "nginx", slash_decoded=True)
        self.keepalive(c, "nginx (keepalive, fastcgi_keep_conn on)", port)
        self._bodies(c, "nginx", BIG_LIMIT, lw)
        # FCGI_WEB_SERVER_ADDRS: the web server's address is served, any other is closed.
        out = fcgi_get(("127.0.0.1", port), MOUNT + "/health")
        t.check("FCGI_WEB_SERVER_ADDRS: the listed address is served",
                out is not None and b'"ok"' in out, out)
        off = os.path.getsize(app.log)
        out = fcgi_get(("127.0.0.1", port), MOUNT + "/health", bind="127.0.0.2")
        t.check("FCGI_WEB_SERVER_ADDRS: another address is closed without an answer", out is None, out)
        time.sleep(0.2)
        logged = self.app_log_reader(app.log)(off)
        t.check("FCGI_WEB_SERVER_ADDRS: the refusal is logged", "127.0.0.2" in logged, logged)
        # Set, it refuses every peer that is not TCP: never set it for a unix socket.
        sock = os.path.join(self.tmp, "allow-list.sock")
        self.app("notes-allow-list-unix", f"unix:{sock}", env={"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"})
        t.check("FCGI_WEB_SERVER_ADDRS: unix socket peers are refused when it is set",
                fcgi_get(sock, MOUNT + "/health") is None, "answered")

    def path_params(self):
        """Decode once: examples/pathparam behind each web server as deploy/ configures it
        (Apache with proxy-fcgi-pathinfo=unescape over a unix socket, nginx, lighttpd with its
        authorizer), routing on SCRIPT_NAME + PATH_INFO and with --route-on-request-uri. A
        path param is the client's bytes decoded once either way."""
        t = self.t
        if not t.check("pathparams: examples/pathparam is built",
                       self.pathparam and os.access(self.pathparam, os.X_OK), self.pathparam):
            return
        for mode, extra in (("", []), ("uri", ["--route-on-request-uri"])):
            sfx = f"-{mode}" if mode else ""
            name = f" ({mode})" if mode else ""
            # Apache, as deploy/apache/notes-unix.conf: the app runs unprivileged on a unix
            # socket the Apache workers may use.
            run = os.path.join(self.tmp, f"run-pathparam{sfx}")
            os.makedirs(run)
            chown_nobody(run)
            sock = os.path.join(run, "notes.sock")
            self.app(f"pathparam-apache{sfx}", f"unix:{sock}", ["--socket-mode", "0660", *extra],
                     as_nobody=True, prog=self.pathparam)
            c, _, lw = self.apache(f"apache-pathparam{sfx}", "notes-unix.conf",
                                   {"NOTES_SOCKET": sock})
            checks.path_params(t, c, f"apache{name}", "apache", bool(extra))
            port = free_port()
            self.app(f"pathparam-nginx{sfx}", f"tcp:127.0.0.1:{port}", extra, prog=self.pathparam)
            c, _, _ = self.nginx(f"nginx-pathparam{sfx}", port)
            checks.path_params(t, c, f"nginx{name}", "nginx", bool(extra))
            port = free_port()
            self.app(f"pathparam-lighttpd{sfx}", f"tcp:127.0.0.1:{port}", extra,
                     prog=self.pathparam)
            c, _, _ = self.lighttpd(f"lighttpd-pathparam{sfx}", port, port)
            checks.path_params(t, c, f"lighttpd{name}", "lighttpd", bool(extra))

    def streams(self):
        """Streamed bodies: examples/stream behind Apache (unix socket, as
        deploy/apache/notes-unix.conf) and nginx (as deploy/nginx/notes.conf, with a body
        limit raised for the upload) takes a 64 MiB upload and sends a JSON array of more
        than 100 MiB, while the worker's peak resident memory stays far below either."""
        t = self.t
        if not t.check("streams: examples/stream is built",
                       self.stream and os.access(self.stream, os.X_OK), self.stream):
            return
        run = os.path.join(self.tmp, "run-stream")
        os.makedirs(run)
        chown_nobody(run)
        sock = os.path.join(run, "notes.sock")
        limit = ["--max-upload", "80m", "--workers", "1"]
        a = self.app("stream-apache", f"unix:{sock}", ["--socket-mode", "0660", *limit],
                     as_nobody=True, prog=self.stream)
        c, _, lw = self.apache("apache-stream", "notes-unix.conf", {"NOTES_SOCKET": sock})
        checks.streams(t, c, "apache", a.pid, self.tmp)
        port = free_port()
        n = self.app("stream-nginx", f"tcp:127.0.0.1:{port}", limit, prog=self.stream)
        c, _, lw = self.nginx("nginx-stream", port,
                              [("client_max_body_size 32m;", "client_max_body_size 128m;")])
        # nginx takes a large request body into a file before it passes it on, and says so.
        end = lw.allow([r"a client request body is buffered to a temporary file",
                        r"an upstream response is buffered to a temporary file"])
        checks.streams(t, c, "nginx", n.pid, self.tmp)
        end()

    def uploads(self):
        """multipart/form-data: examples/upload behind Apache (unix socket, as
        deploy/apache/notes-unix.conf) and nginx (as deploy/nginx/notes.conf, with a body limit
        raised for the upload) stores what `curl -F` sends, a 64 MiB file included while the
        worker's peak resident memory stays far below it, and answers malformed bodies 400."""
        t = self.t
        if not t.check("uploads: examples/upload is built",
                       self.upload and os.access(self.upload, os.X_OK), self.upload):
            return
        # An answer (413, 400) while the body is still coming makes a web server log that the
        # client's upload was cut short; nginx takes a large body into a file first.
        cut = [r"AH01075.*(Connection reset|Broken pipe)", r"AH01095", r"AH02609",
               r"\(104\)Connection reset", r"\(32\)Broken pipe",
               r"a client request body is buffered to a temporary file"]
        run = os.path.join(self.tmp, "run-upload")
        os.makedirs(run)
        chown_nobody(run)
        sock = os.path.join(run, "notes.sock")
        limit = ["--max-upload", "80m", "--workers", "1"]
        store = os.path.join(self.tmp, "uploads-apache")
        os.makedirs(store)
        chown_nobody(store)
        a = self.app("upload-apache", f"unix:{sock}", ["--socket-mode", "0660", "--dir", store,
                                                       *limit], as_nobody=True, prog=self.upload)
        c, _, lw = self.apache("apache-upload", "notes-unix.conf", {"NOTES_SOCKET": sock})
        end = lw.allow(cut)
        checks.uploads(t, c, "apache", a.pid, self.tmp, store)
        end()
        port = free_port()
        store = os.path.join(self.tmp, "uploads-nginx")
        os.makedirs(store)
        n = self.app("upload-nginx", f"tcp:127.0.0.1:{port}", ["--dir", store, *limit],
                     prog=self.upload)
        c, _, lw = self.nginx("nginx-upload", port,
                              [("client_max_body_size 32m;", "client_max_body_size 128m;")])
        end = lw.allow(cut)
        checks.uploads(t, c, "nginx", n.pid, self.tmp, store)
        end()

    def cors(self):
        """CORS in a real browser: headless Chromium loads a page served by one Apache (the
        page's origin) whose script calls notes behind another Apache (the API's origin): a
        GET, and a POST with Authorization and a JSON body (which needs a preflight). notes
        allows the page's origin with --cors-origin; the same page loaded from an origin not
        on the list must be refused by the browser, and its POST must never reach notes."""
        t = self.t
        chromium = which("chromium")
        if not t.check("cors: chromium is installed", chromium, "no chromium"):
            return
        www = os.path.join(self.tmp, "www")
        os.makedirs(www)
        site = os.path.join(self.tmp, "page-site.conf")
        with open(site, "w") as f:
            f.write("LoadModule mime_module ${FCREST_APACHE_MODULES}/mod_mime.so\n"
                    "TypesConfig /dev/null\n"
                    f"AddType text/html .html\nDocumentRoot \"{www}\"\n"
                    f"<Directory \"{www}\">\n  Require all granted\n</Directory>\n")
        page, _, _ = self.apache("apache-page", site, {})
        allowed = f"http://127.0.0.1:{page.port}"
        refused = f"http://localhost:{page.port}"  # another origin: another host name
        run = os.path.join(self.tmp, "run-cors")
        os.makedirs(run)
        chown_nobody(run)
        sock = os.path.join(run, "notes.sock")
        self.app("notes-cors", f"unix:{sock}",
                 ["--socket-mode", "0660", "--cors-origin", allowed, "--db",
                  f"sqlite:{run}/notes.db"], as_nobody=True)
        api, _, lw = self.apache("apache-cors", "notes-unix.conf", {"NOTES_SOCKET": sock})
        checks.cors_browser(t, api, chromium, www, allowed, refused, self.tmp)

    def balancer(self):
        t = self.t
        p1, p2 = free_port(), free_port()
        self.app("notes-b1", f"tcp:127.0.0.1:{p1}")
        b2 = self.app("notes-b2", f"tcp:127.0.0.1:{p2}")
        c, _, lw = self.apache("apache-balancer", "notes-balancer.conf", {
            "NOTES_MEMBER_1": f"127.0.0.1:{p1}", "NOTES_MEMBER_2": f"127.0.0.1:{p2}",
            "NOTES_RETRY": str(BALANCER_RETRY)})
        r = [c.request("GET", "/health").status for _ in range(20)]
        t.check("balancer: both members serve", all(s == 200 for s in r) and len(tcp_peers(p2)) > 0, r)
        # Killing a member mid-request: Apache's writes to it fail (AH01074/AH01075, broken
        # pipe or reset) and it disables the member; those lines name the request, not the
        # member's port.
        end = lw.allow([rf":{p2}\b", r"AH01079", r"AH01074", r"AH01075", r"AH01067", r"AH01068",
                        r"AH00898", r"AH01097", r"AH01102", r"AH00940"])
        h = Hammer(c, "/health", threads=4)
        h.start()
        time.sleep(1.5)
        t_kill = time.time()
        self.procs.stop(b2, sig=signal.SIGKILL)
        time.sleep(BALANCER_RETRY + 4)
        res = h.stop()
        end()
        pre = [s for ts, s in res if ts < t_kill]
        window = [s for ts, s in res if t_kill <= ts < t_kill + BALANCER_RETRY]
        post = [s for ts, s in res if ts >= t_kill + BALANCER_RETRY]
        t.check(f"balancer: before the kill all {len(pre)} requests succeed",
                pre and all(s == 200 for s in pre), _summary(pre))
        print(f"# balancer: {sum(s != 200 for s in window)} of {len(window)} requests failed "
              f"within the {BALANCER_RETRY} s retry window after the kill", flush=True)
        t.check(f"balancer: after the retry window all {len(post)} requests succeed",
                len(post) >= 50 and all(s == 200 for s in post), _summary(post))
        log = open(lw.path, encoding="utf-8", errors="replace").read()
        disabled = len(re.findall(rf"disabling worker for \(127\.0\.0\.1:{p2}\)", log))
        t.check("balancer: Apache retried the dead member after the window, transparently",
                disabled >= 2, f"member disabled {disabled} time(s)")
        # The member comes back: after the window it takes requests again.
        end = lw.allow([rf":{p2}\b", r"AH01079"])
        self.app("notes-b2-again", f"tcp:127.0.0.1:{p2}")
        time.sleep(BALANCER_RETRY + 1)
        before = tcp_peers(p2)
        r = [c.request("GET", "/health").status for _ in range(40)]
        back = tcp_peers(p2) - before
        end()
        t.check("balancer: a restarted member takes requests again after the window",
                all(s == 200 for s in r) and len(back) > 0, f"{_summary(r)}, {len(back)} new connections")

    # ---- PostgreSQL ------------------------------------------------------------------------

    def _pg_start(self):
        """A throwaway PostgreSQL 15 for this run (tests/pg/server: a cluster in the temporary
        directory, a unix socket only); finish() destroys it."""
        if self.pg_dir:
            return
        d = os.path.join(self.tmp, "pg")
        self.pg_dir = d
        subprocess.run([f"{ROOT}/tests/pg/server", "init", d], check=True)
        subprocess.run([f"{ROOT}/tests/pg/server", "start", d], check=True)

    def _pg_db(self, name):
        """A fresh database `name` on the run's server; returns the notes' --db URL."""
        psql = "/usr/lib/postgresql/15/bin/psql"
        subprocess.run(["runuser", "-u", "postgres", "--", psql, "-qX", "-h", self.pg_dir,
                        "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                        "-c", f"CREATE DATABASE {name}"], check=True)
        return f"postgresql:///{name}?host={self.pg_dir}&user=postgres"

    def postgres(self):
        """Two notes instances behind mod_proxy_balancer (deploy/apache/notes-balancer.conf) on
        one PostgreSQL: CRUD through the balancer is consistent; a member killed under write
        load loses no write it answered 2xx. Then the notes contract through Apache with
        --workers 4 on PostgreSQL."""
        t = self.t
        self._pg_start()
        db = self._pg_db("notes_balancer")
        p1, p2 = free_port(), free_port()
        self.app("notes-pg1", f"tcp:127.0.0.1:{p1}", ["--db", db])
        b2 = self.app("notes-pg2", f"tcp:127.0.0.1:{p2}", ["--db", db])
        c, _, lw = self.apache("apache-pg-balancer", "notes-balancer.conf", {
            "NOTES_MEMBER_1": f"127.0.0.1:{p1}", "NOTES_MEMBER_2": f"127.0.0.1:{p2}",
            "NOTES_RETRY": str(BALANCER_RETRY)})
        name = "postgres balancer"
        before1, before2 = tcp_peers(p1), tcp_peers(p2)
        ids = []
        for i in range(10):
            r = c.request("POST", "/notes", {"title": f"n{i}", "body": f"b{i}"}, user="alice")
            t.check(f"{name}: POST /notes #{i} -> 201", r.status == 201, r)
            if r.status == 201:
                ids.append(r.json()["id"])
        t.check(f"{name}: ids increase across the members",
                len(ids) == 10 and ids == sorted(ids) and len(set(ids)) == 10, ids)
        t.check(f"{name}: both members took requests",
                len(tcp_peers(p1) - before1) > 0 and len(tcp_peers(p2) - before2) > 0,
                "a member got no connection")
        if len(ids) < 10:
            return
        reads = [c.request("GET", f"/notes/{nid}") for nid in ids for _ in range(2)]
        t.check(f"{name}: every note reads the same from both members",
                all(r.status == 200 and r.json()["id"] == ids[k // 2]
                    and r.json()["title"] == f"n{k // 2}" for k, r in enumerate(reads)),
                [r.status for r in reads])
        r = c.request("PUT", f"/notes/{ids[0]}", {"title": "changed"}, user="bob")
        t.check(f"{name}: PUT -> 200", r.status == 200, r)
        got = [c.request("GET", f"/notes/{ids[0]}") for _ in range(4)]
        t.check(f"{name}: the change is seen by both members",
                all(g.status == 200 and g.json()["title"] == "changed"
                    and g.json()["author"] == "bob" for g in got), got)
        r = c.request("DELETE", f"/notes/{ids[1]}", user="alice")
        t.check(f"{name}: DELETE -> 204", r.status == 204, r)
        got = [c.request("GET", f"/notes/{ids[1]}").status for _ in range(4)]
        t.check(f"{name}: the deleted note is gone on both members", got == [404] * 4, got)
        lists = [c.request("GET", "/notes") for _ in range(6)]
        t.check(f"{name}: GET /notes gives the same list from both members",
                all(x.status == 200 for x in lists)
                and len({x.body for x in lists}) == 1
                and [n["id"] for n in lists[0].json()] == [ids[0]] + ids[2:],
                [x.status for x in lists])

        # A member killed under write load: every write answered 2xx is readable afterwards. The
        # dead member stays dead: Apache tries it again after each retry window until the end.
        end = lw.allow([rf":{p2}\b", r"AH01079", r"AH01074", r"AH01075", r"AH01067", r"AH01068",
                        r"AH00898", r"AH01097", r"AH01102", r"AH00940"])
        answered, lock, stop = [], threading.Lock(), threading.Event()

        def writer(k):
            i = 0
            while not stop.is_set():
                title = f"w{k}-{i}"
                i += 1
                t0 = time.time()
                try:
                    r = c.request("POST", "/notes", {"title": title}, user="alice", timeout=15)
                    res = (t0, r.status, title, r.json()["id"] if r.status == 201 else None)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    res = (t0, type(e).__name__, title, None)
                with lock:
                    answered.append(res)
        threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(4)]
        for th in threads:
            th.start()
        time.sleep(1.5)
        t_kill = time.time()
        self.procs.stop(b2, sig=signal.SIGKILL)
        time.sleep(BALANCER_RETRY + 3)
        stop.set()
        for th in threads:
            th.join(30)
        ok = [a for a in answered if a[1] == 201]
        after = [a for a in ok if a[0] >= t_kill + BALANCER_RETRY]
        print(f"# {name}: {len(answered)} writes, {len(ok)} answered 201, "
              f"{sum(a[1] != 201 for a in answered)} failed around the kill", flush=True)
        t.check(f"{name}: writes go on after the kill", len(after) >= 10,
                _summary([a[1] for a in answered]))
        missing = []
        for a in ok:
            g = c.request("GET", f"/notes/{a[3]}")
            if g.status != 200 or g.json()["title"] != a[2]:
                missing.append((a[3], g.status))
        t.check(f"{name}: every one of the {len(ok)} writes answered 201 is readable", not missing,
                missing[:5])
        listed, offset, status = set(), 0, 200
        while status == 200:
            page = c.request("GET", f"/notes?limit=1000&offset={offset}")
            status = page.status
            if status != 200 or not page.json():
                break
            listed |= {n["id"] for n in page.json()}
            offset += len(page.json())
        end()
        t.check(f"{name}: and listed by GET /notes, page by page",
                status == 200 and all(a[3] in listed for a in ok),
                f"status {status}, {len(listed)} listed")

        # The notes contract through Apache, --workers 4 on PostgreSQL.
        run = os.path.join(self.tmp, "run-pg-workers")
        os.makedirs(run)
        chown_nobody(run)
        sock = os.path.join(run, "notes.sock")
        self.app("notes-pg-workers", f"unix:{sock}",
                 ["--socket-mode", "0660", "--workers", "4", "--db", self._pg_db("notes_workers")],
                 as_nobody=True)
        c, _, _ = self.apache("apache-pg-workers", "notes-unix.conf", {"NOTES_SOCKET": sock})
        name = "apache-unix --workers 4 on PostgreSQL"
        checks.contract(t, c, name)
        r = c.request("POST", "/notes", {"title": "seen by every worker"}, user="alice")
        t.check(f"{name}: POST /notes -> 201", r.status == 201, r)
        nid = r.json()["id"] if r.status == 201 else None
        seen = []
        for _ in range(16):
            g = c.request("GET", "/notes")
            seen.append(g.status == 200 and any(n.get("id") == nid for n in g.json()))
        t.check(f"{name}: each of 16 GET /notes sees the note just written", all(seen),
                f"{seen.count(False)} of 16 did not")

    def systemd(self):
        """deploy/systemd: the units are valid, and the service's command line serves the
        socket the .socket unit describes, passed the way systemd passes it (LISTEN_FDS)."""
        t = self.t
        d = os.path.join(self.tmp, "systemd")
        os.makedirs(d)
        sock = os.path.join(d, "notes.sock")
        fill("deploy/systemd/fcrest-notes.socket", os.path.join(d, "fcrest-notes.socket"), [
            ("ListenStream=/run/fcrest-notes/notes.sock", f"ListenStream={sock}")])
        fill("deploy/systemd/fcrest-notes.service", os.path.join(d, "fcrest-notes.service"), [
            ("ExecStart=/usr/local/bin/fcrest-notes ", f"ExecStart={self.notes} "),
            ("--db sqlite:/var/lib/fcrest-notes/notes.db", f"--db sqlite:{d}/notes.db")])
        sa, verify = which("systemd-socket-activate"), which("systemd-analyze")
        if not t.check("systemd: systemd-socket-activate and systemd-analyze are installed",
                       sa and verify, "install the systemd package"):
            return
        v = subprocess.run([verify, "verify", os.path.join(d, "fcrest-notes.socket"),
                            os.path.join(d, "fcrest-notes.service")],
                           capture_output=True, text=True, env=dict(os.environ, SYSTEMD_LOG_LEVEL="err"))
        msgs = [ln for ln in (v.stdout + v.stderr).splitlines() if ln.strip()]
        t.check("systemd: systemd-analyze verify accepts the units", v.returncode == 0 and not msgs,
                "; ".join(msgs)[:400])
        unit = open(os.path.join(d, "fcrest-notes.service")).read()
        execstart = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
        workers = int(execstart[execstart.index("--workers") + 1])
        log = os.path.join(self.tmp, "notes-systemd.log")
        proc = self.procs.start("notes-systemd", [sa, "-l", sock, "-E", f"NOTES_TOKENS={TOKENS}",
                                                  "--", *execstart], log)
        wait_file(sock)
        out = fcgi_get(sock, MOUNT + "/health")
        t.check("systemd: the activated service answers on the inherited socket",
                out is not None and b'{"status":"ok"}' in out, out)
        time.sleep(0.5)
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
        t.check(f"systemd: --workers {workers} runs {workers} workers", len(kids) == workers, kids)
        answers = [fcgi_get(sock, MOUNT + "/health") for _ in range(20)]
        t.check("systemd: every worker serves", all(a and b'"ok"' in a for a in answers), answers[:2])
        os.kill(proc.pid, signal.SIGTERM)
        try:
            rc = proc.popen.wait(15)
        except subprocess.TimeoutExpired:
            rc = None
        t.check("systemd: SIGTERM (systemctl stop) ends the service cleanly",
                rc == 0 and not proc.group_alive(), f"exit {rc}")
        self.procs.stop(proc)
        self.app_logs.append(("notes-systemd", log))

    # ---- the end ---------------------------------------------------------------------------

    def finish(self):
        """Stops every process, then reads the logs."""
        started = [p for p in self.procs.procs]
        self.procs.stop_all()
        if self.pg_dir:
            pg = subprocess.run([f"{ROOT}/tests/pg/server", "destroy", self.pg_dir],
                                capture_output=True, text=True)
            self.t.check("postgres: the PostgreSQL server is stopped and removed",
                         pg.returncode == 0, pg.stderr[-400:])
        t = self.t
        t.check("every web server and app process is gone",
                not any(p.group_alive() for p in started),
                [p.name for p in started if p.group_alive()])
        for lw in self.logs:
            bad = lw.unexpected()
            t.check(f"{lw.name}: error log holds no unexpected errors", not bad,
                    " | ".join(bad[:6]))
        for name, path in self.app_logs:
            try:
                lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
            except OSError:
                lines = []
            bad = [ln for ln in lines if re.search(r": (error|crit|fatal):", ln)
                   or "AddressSanitizer" in ln or "runtime error" in ln]
            t.check(f"{name}: app log holds no errors", not bad, " | ".join(bad[:4]))


def _summary(statuses):
    out = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return str(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", required=True)
    ap.add_argument("--pathparam", help="examples/pathparam, for the pathparams phase")
    ap.add_argument("--stream", help="examples/stream, for the streams phase")
    ap.add_argument("--upload", help="examples/upload, for the uploads phase")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--only", default="", help="comma-separated phases to run")
    args = ap.parse_args()

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    tmp = tempfile.mkdtemp(prefix="fcrest-e2e-")
    os.chmod(tmp, 0o755)  # the web servers' workers run as nobody
    results = Results()
    suite = Suite(os.path.abspath(args.notes), tmp, results,
                  os.path.abspath(args.pathparam) if args.pathparam else None,
                  os.path.abspath(args.stream) if args.stream else None,
                  os.path.abspath(args.upload) if args.upload else None)
    phases = [("docs", suite.docs), ("apache-unix", suite.apache_unix),
              ("apache-tcp", suite.apache_tcp), ("apache-authz", lambda: suite.authz_split("apache")),
              ("nginx", suite.nginx_phase), ("lighttpd", suite.lighttpd_phase),
              ("pathparams", suite.path_params), ("streams", suite.streams), ("cors", suite.cors),
              ("uploads", suite.uploads),
              ("balancer", suite.balancer), ("postgres", suite.postgres),
              ("systemd", suite.systemd)]
    only = set(filter(None, args.only.split(",")))
    t0 = time.time()
    try:
        for name, fn in phases:
            if only and name not in only:
                continue
            print(f"# {name}", flush=True)
            try:
                fn()
            except SystemExit:
                raise
            except Exception as e:  # a phase that cannot run is a failure, the rest goes on
                import traceback
                traceback.print_exc()
                results.fail(f"{name}: phase", f"{type(e).__name__}: {e}")
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # let the clean-up finish
        suite.finish()
        print(f"# {time.time() - t0:.1f} s; logs in {tmp}" if (results.failed or args.keep)
              else f"# {time.time() - t0:.1f} s", flush=True)
        if not results.failed and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"e2e: {results.passed} passed, {results.failed} failed", flush=True)
    return 0 if results.failed == 0 and results.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
