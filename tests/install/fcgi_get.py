#!/usr/bin/env python3
"""fcgi_get.py ADDRESS PATH: sends one FastCGI Responder request (GET PATH) to ADDRESS (a unix
socket path, or HOST:PORT), waits up to 10 s for the socket to appear, prints the application's
STDOUT (headers and body) and exits 0; exits 1 when no complete answer came."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: fcgi_get.py ADDRESS PATH\n")
        return 2
    addr = sys.argv[1]
    if ":" in addr and not addr.startswith("/"):
        host, port = addr.rsplit(":", 1)
        addr = (host, int(port))
    else:
        deadline = time.time() + 10
        while not os.path.exists(addr) and time.time() < deadline:
            time.sleep(0.05)
    out = None
    for _ in range(100):  # the socket file may exist a moment before listen()
        try:
            out = harness.fcgi_get(addr, sys.argv[2])
            break
        except (ConnectionRefusedError, FileNotFoundError):
            time.sleep(0.05)
    if out is None:
        sys.stderr.write("fcgi_get: no answer from %s\n" % sys.argv[1])
        return 1
    sys.stdout.write(out.decode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
