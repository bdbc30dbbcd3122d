"""A small Docker Engine API client over a unix socket: JSON requests, streamed responses,
hijacked attach/exec streams and Docker's multiplexed frames. ``connect()`` starts sampand
when its socket does not answer.

It speaks just enough HTTP/1.1 itself (a request per connection; Content-Length, chunked
and read-to-close bodies) on _socket: http.client, urllib.parse and socket would cost the
CLI ~17 ms at every start, and the CLI is on the path of every `sampan run`.
"""
from __future__ import annotations

import _socket
import os
import sys
import time

from .. import API_VERSION, fastjson, paths

TYPE_CHECKING = False
if TYPE_CHECKING:  # without importing typing at run time
    from typing import Any, Iterator

_CHUNK = 65536


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DaemonUnavailable(Exception):
    """No daemon answers at the socket (and none could be started)."""


def __getattr__(name: str) -> Any:
    if name == "_UnixConnection":  # an http.client connection over the socket, for tests
        import http.client

        class _UnixConnection(http.client.HTTPConnection):
            def __init__(self, path: str, timeout: float | None = None) -> None:
                super().__init__("localhost", timeout=timeout)
                self.path = path

            def connect(self) -> None:
                import socket
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                if self.timeout is not None:
                    s.settimeout(self.timeout)
                s.connect(self.path)
                self.sock = s

        globals()[name] = _UnixConnection
        return _UnixConnection
    raise AttributeError(name)


def socket_path(host: str | None, exec_root: str) -> str:
    if not host:
        return paths.api_socket(exec_root)
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host.startswith("/"):
        return host
    raise DaemonUnavailable(f"only unix:// hosts are supported, not {host!r}")


# ---------------------------------------------------------------------------- URLs
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(s: str, safe: str = "/") -> str:
    """urllib.parse.quote."""
    ok = _UNRESERVED | frozenset(safe.encode())
    return "".join(chr(b) if b in ok else f"%{b:02X}" for b in s.encode())


def urlencode(query: dict) -> str:
    """urllib.parse.urlencode(query, doseq=True)."""
    out = []
    for k, v in query.items():
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            out.append(f"{quote(str(k), '').replace('%20', '+')}={quote(str(item), '').replace('%20', '+')}")
    return "&".join(out)


def quote_ref(ref: str) -> str:
    return quote(ref, safe="/:@")


# ---------------------------------------------------------------------------- HTTP
class Response:
    """The subset of http.client.HTTPResponse the CLI uses: status, getheader, read, read1."""

    def __init__(self, sock: _socket.socket, status: int, reason: str, headers: dict[str, str], rest: bytes,
                 method: str) -> None:
        self.sock = sock
        self.status = status
        self.reason = reason
        self.headers = headers
        self._buf = rest
        self._eof = False
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self._mode, self._left = "length", 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode, self._left = "chunked", 0
        elif "content-length" in headers:
            self._mode, self._left = "length", int(headers["content-length"])
        else:
            self._mode, self._left = "close", 0
        self._chunks = self._body()

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def _fill(self) -> bool:
        data = self.sock.recv(_CHUNK)
        if not data:
            return False
        self._buf += data
        return True

    def _take(self, n: int) -> bytes:
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _exactly(self, left: int) -> Iterator[bytes]:
        """The next `left` bytes of the body, as they arrive."""
        while left > 0:
            if not self._buf and not self._fill():
                raise APIError(500, "the daemon closed the connection mid-response")
            data = self._take(left)
            left -= len(data)
            yield data

    def _body(self) -> Iterator[bytes]:
        if self._mode == "length":
            yield from self._exactly(self._left)
        elif self._mode == "close":
            while self._buf or self._fill():
                yield self._take(len(self._buf))
        else:
            while True:
                while b"\r\n" not in self._buf:
                    if not self._fill():
                        raise APIError(500, "the daemon closed the connection mid-response")
                line, self._buf = self._buf.split(b"\r\n", 1)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    return  # trailers are not used by the API
                yield from self._exactly(size)
                while len(self._buf) < 2:
                    if not self._fill():
                        return
                self._buf = self._buf[2:]

    def read1(self, n: int = _CHUNK) -> bytes:
        """The next piece of the body (b"" at its end)."""
        if self._eof:
            return b""
        try:
            return next(self._chunks)
        except StopIteration:
            self._eof = True
            self.close()
            return b""

    def read(self) -> bytes:
        parts = []
        while data := self.read1():
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        self._eof = True
        self.sock.close()


def _read_head(sock: _socket.socket, buf: bytes = b"") -> tuple[int, str, dict[str, str], bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(_CHUNK)
        if not chunk:
            raise APIError(500, "the daemon closed the connection")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    headers = {}
    for h in header_lines:
        k, sep, v = h.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, rest


def _error_message(raw: bytes) -> str:
    try:
        msg = fastjson.loads(raw).get("message")  # type: ignore[union-attr]
        if msg:
            return msg
    except (ValueError, AttributeError):
        pass
    return raw.decode(errors="replace").strip()


class Client:
    def __init__(self, path: str, starter: Any = None) -> None:
        self.path = path
        # Called once when the socket is missing or refuses a connection (no daemon): starts
        # one and waits for it, after which the connection is tried again.
        self.starter = starter

    # ---------------------------------------------------------------- plain requests
    def _url(self, path: str, query: dict | None) -> str:
        url = f"/v{API_VERSION}{path}"
        if query:
            q = {k: (fastjson.dumps(v) if isinstance(v, dict) else ("1" if v is True else "0" if v is False else v))
                 for k, v in query.items() if v is not None}
            if q:
                url += "?" + urlencode(q)
        return url

    def _connect(self, timeout: float | None = None) -> _socket.socket:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        if timeout is not None:
            s.settimeout(timeout)
        try:
            try:
                s.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError):
                if self.starter is None:
                    raise
                starter, self.starter = self.starter, None
                starter(self)
                s.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            raise DaemonUnavailable(f"Cannot connect to the sampan daemon at unix://{self.path}. "
                                    "Is the sampan daemon running?") from None
        except BaseException:
            s.close()
            raise
        return s

    def send(self, method: str, path: str, query: dict | None = None, body: Any = None,
             headers: dict | None = None, timeout: float | None = None) -> _socket.socket:
        """Sends a request on a new connection; read its answer with ``response(sock)``."""
        hdrs = {"Host": "sampan", **(headers or {})}
        data: Any = b""
        if body is not None:
            if isinstance(body, (bytes, bytearray)) or hasattr(body, "read"):
                data = body
                hdrs.setdefault("Content-Type", "application/x-tar")
            else:
                data = fastjson.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
        streaming = hasattr(data, "read")
        if streaming:
            hdrs["Transfer-Encoding"] = "chunked"
        else:
            hdrs["Content-Length"] = str(len(data))
        head = f"{method} {self._url(path, query)} HTTP/1.1\r\n" + \
            "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        s = self._connect(timeout)
        try:
            if streaming:
                s.sendall(head.encode("latin-1"))
                while chunk := data.read(_CHUNK):
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                s.sendall(b"0\r\n\r\n")
            else:
                s.sendall(head.encode("latin-1") + bytes(data))
        except BaseException:
            s.close()
            raise
        return s

    def response(self, sock: _socket.socket, method: str = "GET") -> Response:
        """The answer to ``send``; a status >= 400 raises APIError with the daemon's message."""
        try:
            status, reason, headers, rest = _read_head(sock)
        except BaseException:
            sock.close()
            raise
        resp = Response(sock, status, reason, headers, rest, method)
        if status >= 400:
            raise APIError(status, _error_message(resp.read()))
        return resp

    def open(self, method: str, path: str, query: dict | None = None, body: Any = None,
             headers: dict | None = None, timeout: float | None = None) -> Response:
        return self.response(self.send(method, path, query, body, headers, timeout), method)

    def call(self, method: str, path: str, query: dict | None = None, body: Any = None,
             headers: dict | None = None) -> Any:
        resp = self.open(method, path, query, body, headers)
        raw = resp.read()
        if not raw:
            return None
        if "json" in (resp.getheader("Content-Type") or ""):
            return fastjson.loads(raw)
        return raw

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query)

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.call("POST", path, query, body)

    def delete(self, path: str, **query: Any) -> Any:
        return self.call("DELETE", path, query)

    def json_lines(self, method: str, path: str, query: dict | None = None, body: Any = None,
                   headers: dict | None = None) -> Iterator[dict]:
        """The messages of a JSON stream (pull, push, load, import), as they come."""
        resp = self.open(method, path, query, body, headers)
        buf = b""
        while True:
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    yield fastjson.loads(line)  # type: ignore[misc]
        if buf.strip():
            yield fastjson.loads(buf)  # type: ignore[misc]

    def ping(self, timeout: float = 2.0) -> bool:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.path)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: sampan\r\nContent-Length: 0\r\n\r\n")
            return _read_head(s)[0] == 200
        except (OSError, APIError, ValueError, IndexError):
            return False
        finally:
            s.close()

    # ---------------------------------------------------------------- hijack
    def hijack(self, path: str, query: dict | None = None, body: Any = None) -> tuple[_socket.socket, bytes]:
        """POST with ``Upgrade: tcp``; returns the raw socket and the bytes already read past
        the 101 answer's headers."""
        return self.hijacked(self.hijack_send(path, query, body))

    def hijack_send(self, path: str, query: dict | None = None, body: Any = None) -> _socket.socket:
        """The request of ``hijack``; ``hijacked(sock)`` reads its answer (other requests may
        be sent in between)."""
        return self.send("POST", path, query, body if body is not None else b"",
                         {"Connection": "Upgrade", "Upgrade": "tcp", "Content-Type": "application/json"})

    def hijacked(self, s: _socket.socket) -> tuple[_socket.socket, bytes]:
        try:
            status, _, headers, rest = _read_head(s)
        except BaseException:
            s.close()
            raise
        if status not in (101, 200):
            resp = Response(s, status, "", headers, rest, "POST")
            raise APIError(status, _error_message(resp.read()))
        return s, rest


def _sock_chunks(sock: _socket.socket, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while True:
        try:
            data = sock.recv(_CHUNK)
        except OSError:
            return
        if not data:
            return
        yield data


def resp_chunks(resp: Response) -> Iterator[bytes]:
    while True:
        data = resp.read1(_CHUNK)
        if not data:
            return
        yield data


# ---------------------------------------------------------------- connecting
def connect(args: Any) -> Client:
    """A client for --host/$SAMPAN_HOST, or the default socket under the exec root; starts
    sampand (detached, logging to <exec_root>/sampand.log) when that socket does not answer.

    The daemon is not pinged first: when it is down, the first connection fails at once (no
    socket, or nobody listening) and the client then starts it (``ensure_daemon``). A daemon
    named by --host is only connected to, as the docker CLI does: "Cannot connect" when down."""
    host = getattr(args, "host", None) or os.environ.get("SAMPAN_HOST")
    if host:
        return Client(socket_path(host, _exec_root(args)))
    return Client(socket_path(None, _exec_root(args)), starter=lambda client: ensure_daemon(client, args))


def _exec_root(args: Any) -> str:
    return getattr(args, "exec_root", None) or paths.exec_root()


def ensure_daemon(client: Client, args: Any) -> None:
    """Starts sampand for ``args`` unless ``client``'s socket answers; waits until it does."""
    if client.ping():
        return
    host = getattr(args, "host", None) or os.environ.get("SAMPAN_HOST")
    root = getattr(args, "root", None) or paths.engine_root()
    exec_root = _exec_root(args)
    start_daemon(root, exec_root, host)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if client.ping(timeout=5):
            return
        time.sleep(0.05)
    raise DaemonUnavailable(f"Cannot connect to the sampan daemon at unix://{client.path} "
                            f"(see {os.path.join(exec_root, 'sampand.log')})")


def start_daemon(root: str, exec_root: str, host: str | None = None) -> None:
    import subprocess
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
        cmd = [_daemon_python(), "-m", "sampan.api", "--root", root, "--exec-root", exec_root]
        if host:
            cmd += ["--host", host]
        env = dict(os.environ)
        # the CLI may run without site-packages (-I -S): the daemon needs them
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = open(os.path.join(exec_root, "sampand.log"), "ab")
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                         close_fds=True, cwd="/", env=env)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if Client(socket_path(host, exec_root)).ping(timeout=1):
                return
            time.sleep(0.03)
    finally:
        os.close(lock)


def _daemon_python() -> str:
    """The interpreter of the venv this CLI runs from (sys.executable; its site-packages
    are found from pyvenv.cfg whatever flags the CLI itself was started with)."""
    return sys.executable
