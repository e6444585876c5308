"""Process, port, configuration and log helpers for the end-to-end tests.

Every process is started in its own session (process group) and remembered; stop_all() ends
them (SIGTERM to the leader, then SIGKILL to whatever is left of its group), so nothing is left
running, also when the run is interrupted.
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---- results -------------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def ok(self, name):
        self.passed += 1
        print(f"ok - {name}", flush=True)

    def fail(self, name, why):
        self.failed += 1
        self.failures.append(f"{name}: {why}")
        print(f"FAIL - {name}: {why}", flush=True)

    def check(self, name, cond, why=""):
        if cond:
            self.ok(name)
        else:
            self.fail(name, why or "condition false")
        return bool(cond)


# ---- processes -----------------------------------------------------------------------------

class Proc:
    def __init__(self, name, popen, log):
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def group_alive(self):
        try:
            os.killpg(self.popen.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, name, argv, log, env=None, cwd=None, pass_fds=()):
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        out = open(log, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=full_env, cwd=cwd, start_new_session=True, pass_fds=pass_fds)
        out.close()
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, timeout=15.0):
        """Signals the leader, waits for it, then kills what is left of its group."""
        if proc.alive():
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.time() + 3
        while proc.group_alive() and time.time() < deadline:
            time.sleep(0.05)
        if proc.group_alive():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.alive():
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.popen.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc, timeout=10)
            except Exception as e:  # keep stopping the others
                print(f"# stopping {proc.name}: {e}", file=sys.stderr)


# ---- waiting and ports ---------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, proc=None, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early (see {proc.log})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_unix(path, proc=None, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early (see {proc.log})")
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {path} after {timeout}s")


def wait_file(path, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear after {timeout}s")


# ---- configuration files -------------------------------------------------------------------

def fill(src, dst, replacements):
    """Copies the deploy file `src` (relative to the repository) to `dst`, replacing each
    `old` string by `new`. Every `old` must occur exactly once: the tests change only the
    marked ports and paths, and fail loudly when the file no longer has them."""
    with open(os.path.join(ROOT, src), encoding="utf-8") as f:
        text = f.read()
    for old, new in replacements:
        n = text.count(old)
        if n != 1:
            raise RuntimeError(f"{src}: expected exactly one {old!r}, found {n}")
        text = text.replace(old, new)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text)
    return dst


def chown_nobody(path):
    pw = _nobody()
    os.chown(path, pw[0], pw[1])


def _nobody():
    import pwd
    import grp
    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


# ---- logs ----------------------------------------------------------------------------------

class LogWatch:
    """Reads a web server's error log at the end and reports lines nobody expected. A test
    that provokes an error declares it with allow(pattern) for the span in which it runs."""

    # Lines that are part of normal operation.
    BENIGN = [
        r"\[[a-z_]+:notice\]",            # Apache start, stop, command line
        r"\[notice\]",                     # nginx notices
        r"server started \(lighttpd",      # lighttpd start
        r"server stopped by UID",          # lighttpd stop
        r"\(server\.c\.\d+\) .*graceful shutdown",
    ]

    def __init__(self, name, path):
        self.name = name
        self.path = path
        self.spans = []  # (start offset, end offset or None, [patterns])

    def offset(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def allow(self, patterns):
        """Starts a span; returns a function that ends it."""
        span = [self.offset(), None, [re.compile(p) for p in patterns]]
        self.spans.append(span)

        def end():
            span[1] = self.offset()
        return end

    def unexpected(self):
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return []
        bad = []
        pos = 0
        for raw in data.split(b"\n"):
            start = pos
            pos += len(raw) + 1
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            if any(re.search(p, line) for p in self.BENIGN):
                continue
            allowed = False
            for s, e, pats in self.spans:
                if start >= s and (e is None or start < e) and any(p.search(line) for p in pats):
                    allowed = True
                    break
            if not allowed:
                bad.append(line)
        return bad


# ---- connections, seen from the kernel -----------------------------------------------------

def tcp_peers(port, established_only=False):
    """The set of client-side ports of every TCP connection to 127.0.0.1:port that the kernel
    still knows (established, closing, or in TIME-WAIT for 60 s after it closed). New entries
    between two calls are the connections the application accepted in between."""
    out = subprocess.run(["ss", "-Htan", f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    peers = set()
    for line in out.splitlines():
        f = line.split()
        if len(f) < 5 or f[0] == "LISTEN" or (established_only and f[0] != "ESTAB"):
            continue
        local, peer = f[3], f[4]
        lport = int(local.rsplit(":", 1)[1])
        pport = int(peer.rsplit(":", 1)[1])
        peers.add(pport if lport == port else lport)
    return peers


# ---- a minimal FastCGI client (for the systemd and allow-list checks) ----------------------

def _nv(name, value):
    def ln(n):
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    n, v = name.encode(), value.encode()
    return ln(len(n)) + ln(len(v)) + n + v


def _rec(rtype, rid, content):
    pad = (-len(content)) % 8
    return struct.pack(">BBHHBx", 1, rtype, rid, len(content), pad) + content + b"\0" * pad


def fcgi_get(address, path, timeout=10.0, bind=None):
    """Sends one Responder request (GET path) and returns the STDOUT bytes, or None when the
    application closed the connection without an answer. `address` is a unix socket path or
    a (host, port) pair."""
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bind:
            s.bind((bind, 0))
    s.settimeout(timeout)
    try:
        s.connect(address)
        params = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": path, "REQUEST_URI": path,
                  "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1"}
        body = b"".join(_nv(k, v) for k, v in params.items())
        msg = (_rec(1, 1, struct.pack(">HB5x", 1, 0)) + _rec(4, 1, body) + _rec(4, 1, b"")
               + _rec(5, 1, b""))
        try:
            s.sendall(msg)
        except OSError:
            return None
        buf = b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return None
            if not chunk:
                return None
            buf += chunk
            while len(buf) >= 8:
                _, rtype, _, clen, pad = struct.unpack(">BBHHBx", buf[:8])
                if len(buf) < 8 + clen + pad:
                    break
                content = buf[8:8 + clen]
                buf = buf[8 + clen + pad:]
                if rtype == 6:
                    out += content
                elif rtype == 3:
                    return out
    finally:
        s.close()


def which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def dump(obj):
    return json.dumps(obj, ensure_ascii=False)[:300]
