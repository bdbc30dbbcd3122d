"""A namespace beyond a test's "host" namespace (a router's far side), for egress and
published-port tests: a veth pair 203.0.113.1 (host) - 203.0.113.2 (outside), a default route
back, and an HTTP server outside on port 8000 that answers with the address the request came
from (so a test sees whether it was masqueraded)."""
from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
from typing import Iterator

from sampan.network import netns

HOST, OUTSIDE = "203.0.113.1", "203.0.113.2"


def _ip(path: str, *argv: str) -> None:
    done = subprocess.run(["nsenter", f"--net={path}", "ip", *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"ip {' '.join(argv)}: {done.stderr.strip()}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def outside(host_netns: str, path: str) -> Iterator[str]:
    """The outside namespace at ``path`` linked to ``host_netns``; yields its namespace path."""
    netns.create(path)
    try:
        _ip(host_netns, "link", "add", "up0", "type", "veth", "peer", "name", "far0", "netns", path)
        _ip(host_netns, "addr", "add", f"{HOST}/24", "dev", "up0")
        _ip(host_netns, "link", "set", "up0", "up")
        _ip(path, "addr", "add", f"{OUTSIDE}/24", "dev", "far0")
        _ip(path, "link", "set", "far0", "up")
        _ip(path, "route", "add", "default", "via", HOST)
        server = netns.run_in(path, lambda: http.server.ThreadingHTTPServer((OUTSIDE, 8000), _Handler))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield path
        finally:
            server.shutdown()
            server.server_close()
    finally:
        netns.remove(path)
