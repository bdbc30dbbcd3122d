"""A small Docker Engine API client over a unix socket (http.client; no aiohttp on the CLI
path): JSON requests, streamed responses, hijacked attach/exec streams and Docker's
multiplexed frames. ``connect()`` starts sampand when its socket does not answer."""
from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Iterator
from urllib.parse import quote, urlencode

API_VERSION = "1.45"
DEFAULT_ROOT = "/var/lib/sampan"
DEFAULT_EXEC_ROOT = "/run/sampan"


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DaemonUnavailable(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def socket_path(host: str | None, exec_root: str) -> str:
    if not host:
        return os.path.join(exec_root, "sampan.sock")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host.startswith("/"):
        return host
    raise DaemonUnavailable(f"only unix:// hosts are supported, not {host!r}")


class Client:
    def __init__(self, path: str) -> None:
        self.path = path

    # ---------------------------------------------------------------- plain requests
    def _url(self, path: str, query: dict | None) -> str:
        url = f"/v{API_VERSION}{path}"
        if query:
            q = {k: (json.dumps(v) if isinstance(v, dict) else ("1" if v is True else "0" if v is False else v))
                 for k, v in query.items() if v is not None}
            url += "?" + urlencode(q, doseq=True)
        return url

    def open(self, method: str, path: str, query: dict | None = None, body: Any = None,
             headers: dict | None = None, timeout: float | None = None) -> http.client.HTTPResponse:
        conn = _UnixConnection(self.path, timeout=timeout)
        hdrs = {"Host": "sampan", **(headers or {})}
        data = None
        if body is not None:
            if isinstance(body, (bytes, bytearray)) or hasattr(body, "read"):
                data = body
                hdrs.setdefault("Content-Type", "application/x-tar")
            else:
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
        try:
            conn.request(method, self._url(path, query), body=data, headers=hdrs)
            resp = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonUnavailable(f"Cannot connect to the sampan daemon at unix://{self.path}. "
                                    f"Is the sampan daemon running? ({e.strerror})") from None
        if resp.status >= 400:
            raw = resp.read()
            conn.close()
            try:
                msg = json.loads(raw).get("message") or raw.decode()
            except (ValueError, AttributeError):
                msg = raw.decode(errors="replace").strip()
            raise APIError(resp.status, msg)
        return resp

    def call(self, method: str, path: str, query: dict | None = None, body: Any = None,
             headers: dict | None = None) -> Any:
        resp = self.open(method, path, query, body, headers)
        raw = resp.read()
        if not raw:
            return None
        if "json" in (resp.getheader("Content-Type") or ""):
            return json.loads(raw)
        return raw

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query)

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.call("POST", path, query, body)

    def delete(self, path: str, **query: Any) -> Any:
        return self.call("DELETE", path, query)

    def json_lines(self, method: str, path: str, query: dict | None = None, body: Any = None) -> Iterator[dict]:
        resp = self.open(method, path, query, body)
        buf = b""
        while True:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            conn = _UnixConnection(self.path, timeout=timeout)
            conn.request("GET", "/_ping")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    # ---------------------------------------------------------------- hijack
    def hijack(self, path: str, query: dict | None = None, body: Any = None) -> tuple[socket.socket, bytes]:
        """POST with ``Upgrade: tcp``; returns the raw socket and the bytes already read past
        the 101 answer's headers."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            s.close()
            raise DaemonUnavailable(f"Cannot connect to the sampan daemon at unix://{self.path}: {e.strerror}") \
                from None
        data = json.dumps(body).encode() if body is not None else b""
        req = (f"POST {self._url(path, query)} HTTP/1.1\r\nHost: sampan\r\nConnection: Upgrade\r\n"
               f"Upgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
        s.sendall(req + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                s.close()
                raise APIError(500, "the daemon closed the connection")
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        if status not in (101, 200):
            headers = dict(h.split(": ", 1) for h in header_lines if ": " in h)
            length = int(headers.get("Content-Length") or headers.get("content-length") or 0)
            while len(rest) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            s.close()
            try:
                msg = json.loads(rest[:length] if length else rest).get("message")
            except ValueError:
                msg = rest.decode(errors="replace")
            raise APIError(status, msg)
        return s, rest


def demux(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """Docker's multiplexed frames -> (stream, payload)."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 8:
            stream, length = struct.unpack(">BxxxL", buf[:8])
            if len(buf) < 8 + length:
                break
            yield stream, buf[8:8 + length]
            buf = buf[8 + length:]


def _sock_chunks(sock: socket.socket, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        yield data


def resp_chunks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        data = resp.read1(65536)
        if not data:
            return
        yield data


# ---------------------------------------------------------------- connecting
def connect(args: Any) -> Client:
    """A client for --host/$SAMPAN_HOST, or the default socket under the exec root; starts
    sampand (detached, logging to <exec_root>/sampand.log) when that socket does not answer."""
    host = getattr(args, "host", None) or os.environ.get("SAMPAN_HOST")
    root = getattr(args, "root", None) or os.environ.get("SAMPAN_ROOT") or DEFAULT_ROOT
    exec_root = getattr(args, "exec_root", None) or os.environ.get("SAMPAN_EXEC_ROOT") or DEFAULT_EXEC_ROOT
    path = socket_path(host, exec_root)
    client = Client(path)
    if client.ping():
        return client
    start_daemon(root, exec_root, host)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if client.ping(timeout=5):
            return client
        time.sleep(0.05)
    raise DaemonUnavailable(f"Cannot connect to the sampan daemon at unix://{path} "
                            f"(see {os.path.join(exec_root, 'sampand.log')})")


def start_daemon(root: str, exec_root: str, host: str | None = None) -> None:
    os.makedirs(exec_root, exist_ok=True)
    # one starter at a time: parallel CLIs must not start two daemons
    import fcntl
    lock = os.open(os.path.join(exec_root, "sampand.start.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if Client(socket_path(host, exec_root)).ping(timeout=1):
            return
        pidfile = os.path.join(exec_root, "sampand.pid")
        try:
            pid = int(open(pidfile).read().strip())
            os.kill(pid, 0)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"sampan" in f.read():
                    # a daemon is starting up: give it time
                    for _ in range(300):
                        if Client(socket_path(host, exec_root)).ping(timeout=1):
                            return
                        time.sleep(0.05)
        except (OSError, ValueError):
            pass
        cmd = [sys.executable, "-m", "sampan.api", "--root", root, "--exec-root", exec_root]
        if host:
            cmd += ["--host", host]
        log = open(os.path.join(exec_root, "sampand.log"), "ab")
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                         close_fds=True, cwd="/")
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if Client(socket_path(host, exec_root)).ping(timeout=1):
                return
            time.sleep(0.03)
    finally:
        os.close(lock)


def quote_ref(ref: str) -> str:
    return quote(ref, safe="/:@")
