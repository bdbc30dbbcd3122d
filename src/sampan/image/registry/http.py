"""HTTP and TLS to one registry host: keep-alive connections, TLS from the system CAs plus
docker's ``certs.d`` (or an explicit CA file), plain HTTP for loopback and insecure hosts,
redirects, and retries with backoff on connection errors, 5xx and 429.

Authentication is the caller's (``Authenticator`` in auth.py): ``request`` asks it for the
Authorization header and hands it a 401's challenges. Everything heavy (http.client, ssl,
urllib) is imported lazily: the CLI imports this module on paths that never reach a registry.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Protocol

from .. import credentials
from .errors import ConnectionFailed, RegistryError, Unauthorized, describe_os_error, error_from_response

DOCKER_HUB_API = "registry-1.docker.io"
USER_AGENT = "sampan/0.1"
READ_SIZE = 1 << 20
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


# ---------------------------------------------------------------------------------------------
# Hosts

def api_host(host: str) -> str:
    """The host:port the API lives on (docker.io is served by registry-1.docker.io)."""
    if host.lower() in ("docker.io", "index.docker.io", "registry.hub.docker.com"):
        return DOCKER_HUB_API
    return host


def _split_hostport(netloc: str) -> tuple[str, str]:
    if netloc.startswith("["):
        end = netloc.find("]")
        return netloc[1:end], netloc[end + 2:] if end + 1 < len(netloc) else ""
    if netloc.count(":") == 1:
        h, p = netloc.split(":")
        return h, p
    return netloc, ""


def is_loopback(host: str) -> bool:
    h, _ = _split_hostport(host)
    if h.lower() == "localhost" or h.lower().endswith(".localhost"):
        return True
    import ipaddress
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def matches_insecure(host: str, insecure: list[str] | tuple[str, ...]) -> bool:
    """``host`` is one of the insecure registries (``host[:port]`` or a CIDR), as dockerd's
    ``--insecure-registry`` lists them."""
    h, _ = _split_hostport(host)
    for entry in insecure or ():
        e = entry.strip().lower()
        for scheme in ("http://", "https://"):
            if e.startswith(scheme):
                e = e[len(scheme):]
        e = e.rstrip("/")
        if e in (host.lower(), h.lower()):
            return True
        if "/" in e:
            import ipaddress
            try:
                if ipaddress.ip_address(h) in ipaddress.ip_network(e, strict=False):
                    return True
            except ValueError:
                pass
    return False


def join_url(base: str, location: str) -> str:
    from urllib.parse import urljoin
    return urljoin(base, location)


def add_query(url: str, **params: str) -> str:
    from urllib.parse import urlencode
    return url + ("&" if "?" in url else "?") + urlencode(params)


# ---------------------------------------------------------------------------------------------
# Connections

class _Pool:
    """Keep-alive connections per (scheme, netloc); each is used by one thread at a time."""

    def __init__(self, context_for: Callable[[str], Any], timeout: float) -> None:
        self._idle: dict[tuple[str, str], list] = {}
        self._lock = threading.Lock()
        self._context_for = context_for
        self._timeout = timeout

    def get(self, scheme: str, netloc: str) -> tuple[Any, bool]:
        with self._lock:
            idle = self._idle.get((scheme, netloc))
            if idle:
                return idle.pop(), True
        import http.client
        if scheme == "https":
            conn = http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._context_for(netloc),
                                               blocksize=READ_SIZE)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self._timeout, blocksize=READ_SIZE)
        return conn, False

    def put(self, scheme: str, netloc: str, conn: Any) -> None:
        if conn.sock is None:
            conn.close()
            return
        with self._lock:
            self._idle.setdefault((scheme, netloc), []).append(conn)

    def close(self) -> None:
        with self._lock:
            conns = [c for lst in self._idle.values() for c in lst]
            self._idle.clear()
        for c in conns:
            try:
                c.close()
            except OSError:
                pass


class Response:
    """An HTTP response bound to the connection it came on; release() hands the connection back."""

    __slots__ = ("resp", "conn", "scheme", "netloc", "url", "_pool", "_done")

    def __init__(self, resp: Any, conn: Any, scheme: str, netloc: str, url: str, pool: _Pool) -> None:
        self.resp, self.conn, self.scheme, self.netloc, self.url, self._pool = resp, conn, scheme, netloc, url, pool
        self._done = False

    @property
    def status(self) -> int:
        return self.resp.status

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.resp.getheader(name, default)

    def challenges(self) -> list[str]:
        """The WWW-Authenticate header values."""
        return self.resp.headers.get_all("WWW-Authenticate") or []

    def read(self, limit: int | None = None) -> bytes:
        return self.resp.read() if limit is None else self.resp.read(limit)

    def release(self) -> None:
        """Drain what is left (small bodies) and return the connection to the pool."""
        if self._done:
            return
        self._done = True
        try:
            length = self.resp.length
            if length is not None and length > (1 << 16):
                raise OSError("large body left unread")
            self.resp.read()
            if self.resp.will_close:
                self.conn.close()
            else:
                self._pool.put(self.scheme, self.netloc, self.conn)
        except Exception:
            self.conn.close()

    def discard(self) -> None:
        """Drop the connection (after an error mid-body)."""
        if not self._done:
            self._done = True
            try:
                self.conn.close()
            except OSError:
                pass


class Section:
    """A file-like view of `length` bytes of a file from `offset`, for request bodies;
    ``on_read(n)`` is told of every read (progress, cancellation)."""

    def __init__(self, f: Any, offset: int, length: int, on_read: Callable[[int], None] | None = None) -> None:
        self._f, self._start, self._length, self._on_read = f, offset, length, on_read
        self.rewind()

    def rewind(self) -> None:
        self._f.seek(self._start)
        self._left = self._length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if size is None or size < 0 or size > self._left:
            size = self._left
        data = self._f.read(size)
        if not data:
            raise OSError(f"file ended {self._left} bytes early")
        self._left -= len(data)
        if self._on_read:
            self._on_read(len(data))
        return data


class Authenticator(Protocol):
    """What ``Transport.request`` asks of the registry's authentication (auth.py)."""

    def authorization(self, scope: tuple[str, ...]) -> str | None: ...

    def retry_after_challenge(self, challenges: list[str], scope: tuple[str, ...]) -> bool: ...


# ---------------------------------------------------------------------------------------------
# The transport

class Transport:
    """HTTP(S) to one registry host, thread-safe. ``host`` is the name in references (for
    certs.d), ``netloc`` where the API answers."""

    def __init__(self, host: str, netloc: str, *, insecure: bool, config_dir: str | None, ca_file: str | None,
                 retries: int, backoff: float, timeout: float, user_agent: str) -> None:
        self.host, self.netloc = host, netloc
        self.insecure = insecure
        self.config_dir = config_dir
        self.ca_file = ca_file
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.timeout = timeout
        self.user_agent = user_agent
        self.stats = {"downloaded": 0, "uploaded": 0, "requests": 0}
        self.stats_lock = threading.Lock()
        self._contexts: dict[str, object] = {}
        self._pool = _Pool(self.ssl_context, timeout)

    def close(self) -> None:
        self._pool.close()

    def count(self, key: str, n: int) -> None:
        with self.stats_lock:
            self.stats[key] += n

    # -- TLS ----------------------------------------------------------------------------------

    def ssl_context(self, netloc: str) -> Any:
        ctx = self._contexts.get(netloc)
        if ctx is not None:
            return ctx
        import ssl
        ctx = ssl.create_default_context()
        if self.insecure and netloc == self.netloc:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            for path in self._ca_files():
                try:
                    ctx.load_verify_locations(cafile=path)
                except (OSError, ssl.SSLError) as e:
                    raise RegistryError(f"invalid CA certificate {path}: {e}") from None
            cert, key = self._client_cert()
            if cert:
                try:
                    ctx.load_cert_chain(cert, key)
                except (OSError, ssl.SSLError) as e:
                    raise RegistryError(f"invalid client certificate {cert}: {e}") from None
        self._contexts[netloc] = ctx
        return ctx

    def _certs_dirs(self) -> list[str]:
        names = [self.host] if self.host == self.netloc else [self.host, self.netloc]
        return [credentials.certs_dir(n, self.config_dir) for n in names]

    def _ca_files(self) -> list[str]:
        out = []
        if self.ca_file:
            if os.path.isdir(self.ca_file):
                out += [os.path.join(self.ca_file, n) for n in sorted(os.listdir(self.ca_file))
                        if n.endswith((".crt", ".pem"))]
            else:
                out.append(self.ca_file)
        for d in self._certs_dirs():
            if os.path.isdir(d):
                out += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".crt")]
        return out

    def _client_cert(self) -> tuple[str | None, str | None]:
        for d in self._certs_dirs():
            if not os.path.isdir(d):
                continue
            for n in sorted(os.listdir(d)):
                if n.endswith(".cert"):
                    key = os.path.join(d, n[:-5] + ".key")
                    if not os.path.exists(key):
                        raise RegistryError(f"missing key {key} for client certificate {os.path.join(d, n)}")
                    return os.path.join(d, n), key
        return None, None

    # -- requests -----------------------------------------------------------------------------

    def sleep(self, attempt: int, retry_after: str | None = None) -> None:
        """Back off before retry number ``attempt`` (0-based), longer when the server asks."""
        delay = self.backoff * (2 ** attempt)
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        time.sleep(min(delay, 30.0))

    def send(self, method: str, url: str, headers: dict, body: Any = None) -> Response:
        """One request on a pooled connection; a stale keep-alive connection is retried once."""
        from urllib.parse import urlsplit
        import http.client
        u = urlsplit(url)
        target = u.path + ("?" + u.query if u.query else "")
        hdrs = {"User-Agent": self.user_agent}
        hdrs.update(headers)
        for fresh_retry in (False, True):
            conn, reused = self._pool.get(u.scheme, u.netloc)
            try:
                if hasattr(body, "rewind"):
                    body.rewind()
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.BadStatusLine, http.client.CannotSendRequest) as e:
                conn.close()
                if reused and not fresh_retry:
                    continue
                raise e
            except BaseException:
                conn.close()
                raise
            self.count("requests", 1)
            if method == "HEAD":
                resp.length = 0
            return Response(resp, conn, u.scheme, u.netloc, url, self._pool)
        raise AssertionError("unreachable")

    def probe_tls(self, path: str) -> Response:
        """GET ``path`` over TLS on a connection of its own with a short timeout: a plain-HTTP
        server may wait for more of the TLS hello than it will ever get."""
        import http.client
        conn = http.client.HTTPSConnection(self.netloc, timeout=min(self.timeout, 5.0),
                                           context=self.ssl_context(self.netloc))
        try:
            conn.request("GET", path, headers={"User-Agent": self.user_agent})
            resp = conn.getresponse()
            conn.sock.settimeout(self.timeout)
        except BaseException:
            conn.close()
            raise
        return Response(resp, conn, "https", self.netloc, f"https://{self.netloc}{path}", self._pool)

    def request(self, method: str, url: str, *, auth: Authenticator | None = None, scope: tuple[str, ...] = (),
                headers: dict | None = None, body: Any = None, ok: tuple[int, ...] = (200,), retry: bool = True,
                context: str = "") -> Response:
        """A request with ``auth`` (for this host only), retries on connection errors and
        5xx/429, and redirects. Returns the response (status in ``ok``) for the caller to
        read and release(); anything else raises a RegistryError."""
        import http.client
        import ssl
        from urllib.parse import urlsplit
        headers = dict(headers or {})
        auth_retried = False
        attempt = 0
        redirects = 0
        while True:
            netloc = urlsplit(url).netloc
            authenticate = auth is not None and netloc == self.netloc
            h = dict(headers)
            if authenticate:
                value = auth.authorization(scope)  # type: ignore[union-attr]
                if value:
                    h["Authorization"] = value
            try:
                r = self.send(method, url, h, body)
            except ssl.SSLCertVerificationError as e:
                raise ConnectionFailed(describe_os_error(e, netloc)) from None
            except (OSError, http.client.HTTPException) as e:
                if retry and attempt < self.retries:
                    self.sleep(attempt)
                    attempt += 1
                    continue
                raise ConnectionFailed(describe_os_error(e, netloc)) from None
            status = r.status
            if status == 401 and authenticate and not auth_retried:
                challenges = r.challenges()
                r.release()
                if auth.retry_after_challenge(challenges, scope):  # type: ignore[union-attr]
                    auth_retried = True
                    continue
                if h.get("Authorization", "").startswith("Basic "):
                    raise Unauthorized("unauthorized: incorrect username or password", code="UNAUTHORIZED",
                                       status=401)
                raise error_from_response(401, b"", context)
            if status in _REDIRECTS and r.header("Location") and redirects < 10:
                loc = r.header("Location")
                r.release()
                url = join_url(url, loc)  # type: ignore[arg-type]
                redirects += 1
                if status == 303:
                    method, body = "GET", None
                continue
            if status in _RETRY_STATUSES and retry and attempt < self.retries:
                ra = r.header("Retry-After")
                r.release()
                self.sleep(attempt, ra)
                attempt += 1
                continue
            if status not in ok:
                try:
                    data = r.read(1 << 16) if method != "HEAD" else b""
                except (OSError, http.client.HTTPException):
                    data = b""
                r.discard()
                raise error_from_response(status, data, context)
            return r


def is_retry_status(status: int) -> bool:
    return status in _RETRY_STATUSES
