"""Distribution API v2 client: ping, token and basic auth, manifests (Docker v2 schema 2, OCI,
manifest lists and indexes with platform selection), parallel resumable blob download,
chunked and monolithic upload, cross-repository mount, retries with backoff.

Plain HTTP is used for loopback registries that do not speak TLS and for `insecure` hosts
(which also skip certificate checks, as Docker's --insecure-registry does); anything else
is HTTPS, verified against the system CAs plus `<config dir>/certs.d/<host>/*.crt` or an
explicit `ca_file`. Everything heavy (http.client, ssl, json, threads) is imported lazily.
"""
from __future__ import annotations

import os
import threading
import time

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
INDEX_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})
MANIFEST_TYPES = frozenset({MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST})
ACCEPT_MANIFESTS = ", ".join([MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST])
_NONDISTRIBUTABLE = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                     "application/vnd.oci.image.layer.nondistributable.v1.tar",
                     "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                     "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
USER_AGENT = "sampan/0.1"
_READ_SIZE = 1 << 20
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


# ---------------------------------------------------------------------------------------------
# Errors: one line each, in the registry's words where it gave any.

class RegistryError(Exception):
    """A registry operation failed; str() is a one-line message like docker's."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Unauthorized(RegistryError):
    """Missing or wrong credentials (401/403)."""


class NotFound(RegistryError):
    """Manifest, blob or repository unknown (404)."""


class ConnectionFailed(RegistryError):
    """The registry could not be reached (refused, DNS, TLS, timeouts) after the retries."""


class Cancelled(RegistryError):
    """A transfer was stopped because another one in the same pull or push failed."""


def _error_from_response(status: int, body: bytes, context: str) -> RegistryError:
    """Build an error from a registry's JSON error body (`{"errors": [{code, message, detail}]}`)."""
    code = message = None
    try:
        import json
        doc = json.loads(body) if body else None
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if errs and isinstance(errs, list) and isinstance(errs[0], dict):
            code = str(errs[0].get("code") or "") or None
            message = str(errs[0].get("message") or "") or None
        elif isinstance(doc, dict) and isinstance(doc.get("details") or doc.get("error"), str):
            message = doc.get("details") or doc.get("error")
    except ValueError:
        text = body[:200].decode("utf-8", "replace").strip() if body else ""
        message = text.splitlines()[0] if text else None
    if status == 401 or code == "UNAUTHORIZED":
        cls, code = Unauthorized, code or "UNAUTHORIZED"
    elif status == 403 or code == "DENIED":
        cls, code = Unauthorized, code or "DENIED"
    elif status == 404:
        cls = NotFound
    else:
        cls = RegistryError
    if status == 404 and not code:
        code = "NOT_FOUND"
    words = code.lower().replace("_", " ") if code else f"http {status}"
    if status == 401 and (not message or message.lower() == words):
        message = "authentication required"
    if not message or message.lower() == words:
        text = f"{words}: {context}"
    else:
        text = f"{words}: {message}"
        if cls is NotFound and context:
            text += f" ({context})"
    return cls(text, code=code, status=status)


def _describe_os_error(e: BaseException, netloc: str) -> str:
    import ssl
    if isinstance(e, ConnectionRefusedError):
        return f"connection refused: {netloc}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"tls: certificate verify failed for {netloc}: {e.verify_message or e.reason}"
    if isinstance(e, ssl.SSLError):
        return f"tls: handshake with {netloc} failed: {e.reason or e}"
    if isinstance(e, TimeoutError) or type(e).__name__ == "timeout":
        return f"timeout: {netloc}"
    import socket
    if isinstance(e, socket.gaierror):
        return f"lookup {netloc.rsplit(':', 1)[0] if netloc.count(':') == 1 else netloc}: {e.strerror or e}"
    if isinstance(e, OSError) and e.strerror:
        return f"connection failed: {netloc}: {e.strerror.lower()}"
    return f"connection failed: {netloc}: {type(e).__name__}{': ' + str(e) if str(e) else ''}"


# ---------------------------------------------------------------------------------------------
# Results

class Manifest:
    """Raw manifest bytes with their media type and digest."""

    __slots__ = ("data", "media_type", "digest")

    def __init__(self, data: bytes, media_type: str, digest: str) -> None:
        self.data, self.media_type, self.digest = data, media_type, digest

    def json(self) -> dict:
        import json
        return json.loads(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def __repr__(self) -> str:
        return f"Manifest({self.media_type}, {self.digest}, {len(self.data)} bytes)"


class PullResult:
    """What `pull` fetched. `layers` is [(digest, media_type, size)], in manifest order;
    `index_bytes` / `index_digest` are set when the reference named a manifest list."""

    __slots__ = ("reference", "manifest_digest", "manifest_bytes", "media_type", "config_digest",
                 "config_media_type", "layers", "index_bytes", "index_digest", "index_media_type",
                 "platform", "downloaded")

    def __init__(self, **kw) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def __repr__(self) -> str:
        return (f"PullResult({self.reference}, manifest={self.manifest_digest}, config={self.config_digest}, "
                f"{len(self.layers or ())} layers)")


# ---------------------------------------------------------------------------------------------
# Hosts

def api_host(host: str) -> str:
    """The host:port the API lives on (docker.io is served by registry-1.docker.io)."""
    h = host.lower()
    if h in ("docker.io", "index.docker.io", "registry.hub.docker.com"):
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


def _matches_insecure(host: str, insecure) -> bool:
    if not insecure:
        return False
    h, _ = _split_hostport(host)
    for entry in insecure:
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


# ---------------------------------------------------------------------------------------------
# WWW-Authenticate

def parse_challenges(values: list[str]) -> dict[str, dict[str, str]]:
    """`Bearer realm="…",service="…"` (one or more header values) -> {"bearer": {...}}."""
    out: dict[str, dict[str, str]] = {}
    for value in values:
        s, i, n = value, 0, len(value)
        scheme = None
        while i < n:
            while i < n and s[i] in " \t,":
                i += 1
            start = i
            while i < n and s[i] not in " \t=,":
                i += 1
            token = s[start:i]
            j = i
            while j < n and s[j] in " \t":
                j += 1
            if j < n and s[j] == "=" and scheme is not None:
                i = j + 1
                while i < n and s[i] in " \t":
                    i += 1
                if i < n and s[i] == '"':
                    i += 1
                    buf = []
                    while i < n and s[i] != '"':
                        if s[i] == "\\" and i + 1 < n:
                            i += 1
                        buf.append(s[i])
                        i += 1
                    i += 1
                    val = "".join(buf)
                else:
                    start = i
                    while i < n and s[i] not in " \t,":
                        i += 1
                    val = s[start:i]
                out[scheme][token.lower()] = val
            elif token:
                # A new scheme (a bare token not followed by '=').
                scheme = token.lower()
                out.setdefault(scheme, {})
            else:
                i += 1
    return out


# ---------------------------------------------------------------------------------------------
# Connections

class _Pool:
    """Keep-alive connections per (scheme, netloc); each is used by one thread at a time."""

    def __init__(self, context_for, timeout: float) -> None:
        self._idle: dict[tuple[str, str], list] = {}
        self._lock = threading.Lock()
        self._context_for = context_for
        self._timeout = timeout

    def get(self, scheme: str, netloc: str):
        with self._lock:
            idle = self._idle.get((scheme, netloc))
            if idle:
                return idle.pop(), True
        import http.client
        if scheme == "https":
            conn = http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._context_for(netloc),
                                               blocksize=_READ_SIZE)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self._timeout, blocksize=_READ_SIZE)
        return conn, False

    def put(self, scheme: str, netloc: str, conn) -> None:
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


class _Response:
    """An HTTP response bound to the connection it came on; release() hands the connection back."""

    __slots__ = ("resp", "conn", "scheme", "netloc", "url", "_pool", "_done")

    def __init__(self, resp, conn, scheme, netloc, url, pool) -> None:
        self.resp, self.conn, self.scheme, self.netloc, self.url, self._pool = resp, conn, scheme, netloc, url, pool
        self._done = False

    @property
    def status(self) -> int:
        return self.resp.status

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.resp.getheader(name, default)

    def read(self, limit: int | None = None) -> bytes:
        data = self.resp.read() if limit is None else self.resp.read(limit)
        return data

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


class _Section:
    """A file-like view of `length` bytes of a file from `offset`, for request bodies."""

    def __init__(self, f, offset: int, length: int, on_read=None) -> None:
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


def _join_url(base: str, location: str) -> str:
    from urllib.parse import urljoin
    return urljoin(base, location)


def _add_query(url: str, **params: str) -> str:
    from urllib.parse import urlencode
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _sha256(data: bytes) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _verify_digest(data: bytes, digest: str) -> None:
    algo, _, _ = digest.partition(":")
    import hashlib
    if algo not in ("sha256", "sha384", "sha512"):
        raise RegistryError(f"unsupported digest algorithm: {digest}")
    got = f"{algo}:" + hashlib.new(algo, data).hexdigest()
    if got != digest:
        from .content import DigestMismatch
        raise DigestMismatch(f"digest mismatch: expected {digest}, got {got}")


def _detect_media_type(data: bytes, header: str | None) -> str:
    mt = (header or "").split(";")[0].strip()
    if mt in INDEX_TYPES or mt in MANIFEST_TYPES:
        return mt
    import json
    try:
        doc = json.loads(data)
    except ValueError:
        raise RegistryError("invalid manifest: not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryError("invalid manifest: not a JSON object")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return MEDIA_DOCKER_SCHEMA1_SIGNED if "signatures" in doc else MEDIA_DOCKER_SCHEMA1
    if "manifests" in doc:
        return MEDIA_OCI_INDEX
    if "layers" in doc or "config" in doc:
        return MEDIA_OCI_MANIFEST
    return mt or "application/octet-stream"


def _parse_ref(ref):
    if isinstance(ref, str):
        from .reference import parse
        return parse(ref)
    return ref


def _ref_str(ref) -> str:
    try:
        return str(ref)
    except Exception:
        return f"{ref.domain}/{ref.path}"


# ---------------------------------------------------------------------------------------------
# The client

class Registry:
    """A client for one registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`, ...).

    Thread-safe: one pool of keep-alive connections per host, a token cache per scope.
    `credentials` is (user, password), a callable host -> (user, password) | None, or None
    to read `auth.lookup(host)` from the config dir. Use as a context manager or call close().
    """

    def __init__(self, host: str, *, insecure=(), config_dir: str | None = None, credentials=None,
                 ca_file: str | None = None, max_concurrent: int = 3, retries: int = 3,
                 backoff: float = 0.5, timeout: float = 60.0, chunk_size: int = 32 << 20,
                 monolithic_max: int | None = None, user_agent: str = USER_AGENT) -> None:
        self.host = host
        self.netloc = api_host(host)
        self.insecure = _matches_insecure(host, insecure) or _matches_insecure(self.netloc, insecure)
        self.allow_http = self.insecure or is_loopback(self.netloc)
        self.config_dir = config_dir
        self.ca_file = ca_file
        self.max_concurrent = max(1, int(max_concurrent))
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.timeout = timeout
        self.chunk_size = max(1, int(chunk_size))
        self.monolithic_max = self.chunk_size if monolithic_max is None else monolithic_max
        self.user_agent = user_agent
        self._credentials_arg = credentials
        self._credentials: tuple[str, str] | None = None
        self._credentials_loaded = False
        self._scheme: str | None = None          # "https" or "http", decided by ping
        self._auth: dict[str, dict[str, str]] | None = None   # challenges from ping
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._token_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self._ping_lock = threading.Lock()
        self._contexts: dict[str, object] = {}
        self._pool = _Pool(self._ssl_context, timeout)
        self.stats = {"downloaded": 0, "uploaded": 0, "requests": 0}

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.host!r})"

    # -- TLS ----------------------------------------------------------------------------------

    def _ssl_context(self, netloc: str):
        ctx = self._contexts.get(netloc)
        if ctx is not None:
            return ctx
        import ssl
        if self.insecure and netloc == self.netloc:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context()
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
        from .auth import certs_dir
        names = [self.host] if self.host == self.netloc else [self.host, self.netloc]
        return [certs_dir(n, self.config_dir) for n in names]

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

    # -- credentials --------------------------------------------------------------------------

    def _creds(self) -> tuple[str, str] | None:
        if not self._credentials_loaded:
            c = self._credentials_arg
            if c is None:
                from .auth import lookup
                c = lookup(self.host, self.config_dir)
            elif callable(c):
                c = c(self.host)
            self._credentials = tuple(c) if c else None
            self._credentials_loaded = True
        return self._credentials

    def _basic_header(self, creds) -> str:
        import base64
        return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()

    # -- low-level HTTP -----------------------------------------------------------------------

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.backoff * (2 ** attempt)
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        time.sleep(min(delay, 30.0))

    def _send(self, method: str, url: str, headers: dict, body=None) -> _Response:
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
            with self._lock:
                self.stats["requests"] += 1
            if method == "HEAD":
                resp.length = 0
            return _Response(resp, conn, u.scheme, u.netloc, url, self._pool)
        raise AssertionError("unreachable")

    def _url(self, path: str) -> str:
        self._ensure_pinged()
        return f"{self._scheme}://{self.netloc}{path}"

    def _request(self, method: str, url: str, *, scope: tuple[str, ...] = (), headers: dict | None = None,
                 body=None, ok=(200,), retry: bool = True, context: str = "",
                 authenticate: bool = True) -> _Response:
        """A request with auth, retries on connection errors and 5xx/429, and redirects.

        Returns the response (status in `ok`) for the caller to read and release().
        """
        import http.client
        import ssl
        headers = dict(headers or {})
        auth_retried = False
        attempt = 0
        redirects = 0
        while True:
            from urllib.parse import urlsplit
            netloc = urlsplit(url).netloc
            h = dict(headers)
            if authenticate and netloc == self.netloc:
                auth = self._authorization(scope)
                if auth:
                    h["Authorization"] = auth
            try:
                r = self._send(method, url, h, body)
            except ssl.SSLCertVerificationError as e:
                raise ConnectionFailed(_describe_os_error(e, netloc)) from None
            except (OSError, http.client.HTTPException) as e:
                if retry and attempt < self.retries:
                    self._sleep(attempt)
                    attempt += 1
                    continue
                raise ConnectionFailed(_describe_os_error(e, netloc)) from None
            status = r.status
            if status == 401 and authenticate and netloc == self.netloc and not auth_retried:
                challenges = parse_challenges(r.resp.headers.get_all("WWW-Authenticate") or [])
                r.release()
                if self._on_challenge(challenges, scope):
                    auth_retried = True
                    continue
                if h.get("Authorization", "").startswith("Basic "):
                    raise Unauthorized("unauthorized: incorrect username or password", code="UNAUTHORIZED",
                                       status=401)
                raise _error_from_response(401, b"", context)
            if status in _REDIRECTS and r.header("Location") and redirects < 10:
                loc = r.header("Location")
                r.release()
                url = _join_url(url, loc)
                redirects += 1
                if status == 303:
                    method, body = "GET", None
                continue
            if status in _RETRY_STATUSES and retry and attempt < self.retries:
                ra = r.header("Retry-After")
                r.release()
                self._sleep(attempt, ra)
                attempt += 1
                continue
            if status not in ok:
                try:
                    data = r.read(1 << 16) if method != "HEAD" else b""
                except (OSError, http.client.HTTPException):
                    data = b""
                r.discard()
                raise _error_from_response(status, data, context)
            return r

    # -- ping and auth ------------------------------------------------------------------------

    def _ensure_pinged(self) -> None:
        if self._scheme is None:
            with self._ping_lock:
                if self._scheme is None:
                    self._ping()

    def _ping(self) -> None:
        """GET /v2/: pick http or https and learn the auth scheme from the challenge."""
        import http.client
        import ssl
        schemes = ["https", "http"] if self.allow_http else ["https"]
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            for scheme in schemes:
                url = f"{scheme}://{self.netloc}/v2/"
                try:
                    if scheme == "https" and len(schemes) > 1:
                        r = self._probe_tls()
                    else:
                        r = self._send("GET", url, {})
                except ssl.SSLCertVerificationError as e:
                    raise ConnectionFailed(_describe_os_error(e, self.netloc)) from None
                except (ssl.SSLError, http.client.HTTPException, ConnectionResetError) as e:
                    # The server does not speak TLS (or not HTTP): try the next scheme.
                    last = e
                    continue
                except OSError as e:
                    last = e
                    continue
                status = r.status
                challenges = parse_challenges(r.resp.headers.get_all("WWW-Authenticate") or [])
                if status in _RETRY_STATUSES and attempt < self.retries:
                    r.release()
                    last = RegistryError(f"http {status} from {self.netloc}", status=status)
                    break
                if status in (200, 401):
                    r.release()
                    self._scheme = scheme
                    self._auth = challenges if status == 401 else {}
                    return
                if scheme == "https" and "http" in schemes and status == 400:
                    # An HTTP server answering a TLS hello with 400: use plain http.
                    r.release()
                    continue
                data = r.read(1 << 16)
                r.discard()
                if status == 404:
                    raise RegistryError(f"{self.netloc} does not support the registry v2 API (404 on /v2/)",
                                        status=404)
                raise _error_from_response(status, data, f"{self.netloc}/v2/")
            if attempt < self.retries:
                self._sleep(attempt)
        if isinstance(last, RegistryError):
            raise last
        raise ConnectionFailed(_describe_os_error(last, self.netloc) if last else f"cannot reach {self.netloc}")

    def _probe_tls(self) -> _Response:
        """GET /v2/ over TLS on a connection of its own with a short timeout: a plain-HTTP
        server may wait for more of the TLS hello than it will ever get."""
        import http.client
        conn = http.client.HTTPSConnection(self.netloc, timeout=min(self.timeout, 5.0),
                                           context=self._ssl_context(self.netloc))
        try:
            conn.request("GET", "/v2/", headers={"User-Agent": self.user_agent})
            resp = conn.getresponse()
            conn.sock.settimeout(self.timeout)
        except BaseException:
            conn.close()
            raise
        return _Response(resp, conn, "https", self.netloc, f"https://{self.netloc}/v2/", self._pool)

    def ping(self) -> str:
        """Reach /v2/; returns the auth scheme the registry asks for: 'none', 'basic' or 'bearer'."""
        self._ensure_pinged()
        if not self._auth:
            return "none"
        return "bearer" if "bearer" in self._auth else "basic" if "basic" in self._auth else next(iter(self._auth))

    @property
    def scheme(self) -> str:
        """'https' or 'http', once pinged."""
        self._ensure_pinged()
        return self._scheme

    def _authorization(self, scope: tuple[str, ...]) -> str | None:
        auth = self._auth
        if not auth:
            return None
        if "bearer" in auth:
            key = tuple(sorted(scope))
            with self._lock:
                cached = self._tokens.get(key)
                flight = self._token_locks.setdefault(key, threading.Lock())
            if cached and cached[1] > time.monotonic():
                return "Bearer " + cached[0]
            with flight:    # one fetch per scope, however many threads need it
                with self._lock:
                    cached = self._tokens.get(key)
                if cached and cached[1] > time.monotonic():
                    return "Bearer " + cached[0]
                return "Bearer " + self._fetch_token(auth["bearer"], key)
        if "basic" in auth:
            creds = self._creds()
            return self._basic_header(creds) if creds else None
        return None

    def _on_challenge(self, challenges: dict, scope: tuple[str, ...]) -> bool:
        """Update auth from a 401's challenge; True when retrying may now succeed."""
        if not challenges:
            return False
        if "bearer" in challenges:
            params = challenges["bearer"]
            extra = tuple(s for s in params.get("scope", "").split(" ") if s)
            key = tuple(sorted(set(scope) | set(extra)))
            with self._lock:
                self._auth = {"bearer": {k: v for k, v in params.items() if k in ("realm", "service")}}
                self._tokens.pop(tuple(sorted(scope)), None)
            token = self._fetch_token(self._auth["bearer"], key)
            with self._lock:
                self._tokens[tuple(sorted(scope))] = (token, time.monotonic() + 50)
            return True
        if "basic" in challenges:
            was_basic = bool(self._auth and "basic" in self._auth)
            self._auth = {"basic": challenges["basic"]}
            return not was_basic and self._creds() is not None
        return False

    def _fetch_token(self, params: dict, scope: tuple[str, ...]) -> str:
        """GET the realm with service and scopes (basic auth when we have credentials)."""
        import json
        from urllib.parse import urlencode
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"{self.netloc}: bearer challenge without realm")
        q = []
        if params.get("service"):
            q.append(("service", params["service"]))
        for s in scope:
            q.append(("scope", s))
        creds = self._creds()
        headers = {"Accept": "application/json"}
        if creds:
            q.append(("account", creds[0]))
            headers["Authorization"] = self._basic_header(creds)
        url = realm + (("&" if "?" in realm else "?") + urlencode(q) if q else "")
        r = self._request("GET", url, headers=headers, ok=(200,), context=f"token from {realm}", authenticate=False)
        try:
            data = r.read(1 << 20)
        finally:
            r.release()
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"invalid token response from {realm}")
        try:
            expires = int(doc.get("expires_in") or 60)
        except (TypeError, ValueError):
            expires = 60
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + max(10, expires - 10))
        return token

    def check_login(self) -> None:
        """Verify the credentials: ping, then a token (bearer) or an authenticated /v2/ (basic).

        Raises Unauthorized with the registry's reason when they are wrong."""
        creds = self._creds()
        scheme = self.ping()
        if scheme == "none":
            return
        if scheme == "bearer":
            try:
                self._fetch_token(self._auth["bearer"], ())
            except Unauthorized as e:
                raise Unauthorized(_login_message(e), code=e.code, status=e.status) from None
            r = self._request("GET", self._url("/v2/"), ok=(200,), retry=True, context=f"{self.host}/v2/")
            r.release()
            return
        if not creds:
            raise Unauthorized("unauthorized: authentication required", code="UNAUTHORIZED", status=401)
        try:
            r = self._request("GET", self._url("/v2/"), ok=(200,), context=f"{self.host}/v2/")
        except Unauthorized as e:
            raise Unauthorized(_login_message(e), code=e.code, status=e.status) from None
        r.release()

    # -- manifests ----------------------------------------------------------------------------

    @staticmethod
    def _scope(name: str, actions: str = "pull") -> tuple[str, ...]:
        return (f"repository:{name}:{actions}",)

    def get_manifest(self, name: str, reference: str, *, accept: str = ACCEPT_MANIFESTS) -> Manifest:
        """GET a manifest by tag or digest; verified when `reference` is a digest."""
        r = self._request("GET", self._url(f"/v2/{name}/manifests/{reference}"), scope=self._scope(name),
                          headers={"Accept": accept}, ok=(200,), context=f"{self.host}/{name}:{reference}"
                          if ":" not in reference else f"{self.host}/{name}@{reference}")
        try:
            data = r.read(8 << 20)
            header_type = r.header("Content-Type")
            header_digest = r.header("Docker-Content-Digest")
        except OSError as e:
            r.discard()
            raise ConnectionFailed(_describe_os_error(e, self.netloc)) from None
        r.release()
        media_type = _detect_media_type(data, header_type)
        if ":" in reference:
            _verify_digest(data, reference)
            digest = reference
        else:
            digest = _sha256(data)
            if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
                from .content import DigestMismatch
                raise DigestMismatch(f"digest mismatch for {self.host}/{name}:{reference}: registry says "
                                     f"{header_digest}, content is {digest}")
        return Manifest(data, media_type, digest)

    def head_manifest(self, name: str, reference: str) -> tuple[str, str, int] | None:
        """(digest, media type, size) of a manifest, or None when it does not exist."""
        try:
            r = self._request("HEAD", self._url(f"/v2/{name}/manifests/{reference}"), scope=self._scope(name),
                              headers={"Accept": ACCEPT_MANIFESTS}, ok=(200,), context=f"{name}:{reference}")
        except NotFound:
            return None
        digest = r.header("Docker-Content-Digest") or ""
        mt = (r.header("Content-Type") or "").split(";")[0]
        size = int(r.header("Content-Length") or 0)
        r.release()
        return digest, mt, size

    def resolve(self, name: str, reference: str, platform=None) -> tuple[Manifest, Manifest | None]:
        """The image manifest for `reference` and, when it named a list/index, that index."""
        from . import platform as platforms
        m = self.get_manifest(name, reference)
        index = None
        for _ in range(4):
            if m.media_type in (MEDIA_DOCKER_SCHEMA1, MEDIA_DOCKER_SCHEMA1_SIGNED):
                raise RegistryError(f"unsupported manifest media type {m.media_type}: "
                                    "Docker image format v1 (schema 1) is not supported")
            if not m.is_index:
                break
            if index is None:
                index = m
            doc = m.json()
            entries = doc.get("manifests")
            if not isinstance(entries, list):
                raise RegistryError(f"invalid manifest list {m.digest}: no manifests")
            try:
                desc = platforms.select(entries, platform)
            except platforms.PlatformError as e:
                raise NotFound(str(e), code="MANIFEST_UNKNOWN", status=404) from None
            m = self.get_manifest(name, desc["digest"])
            if isinstance(desc.get("size"), int) and desc["size"] != len(m.data):
                raise RegistryError(f"size mismatch for manifest {desc['digest']}: expected {desc['size']}, "
                                    f"got {len(m.data)}")
        if m.media_type not in MANIFEST_TYPES:
            raise RegistryError(f"unsupported manifest media type: {m.media_type}")
        return m, index

    def put_manifest(self, name: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns its digest."""
        digest = _sha256(data)
        if reference.startswith("sha256:") and reference != digest:
            from .content import DigestMismatch
            raise DigestMismatch(f"digest mismatch: manifest is {digest}, reference says {reference}")
        r = self._request("PUT", self._url(f"/v2/{name}/manifests/{reference}"), scope=self._scope(name, "pull,push"),
                          headers={"Content-Type": media_type, "Content-Length": str(len(data))}, body=data,
                          ok=(200, 201, 202), context=f"{self.host}/{name}:{reference}")
        r.release()
        return digest

    def tags(self, name: str) -> list[str]:
        """All tags of a repository (following Link pagination)."""
        import json
        out: list[str] = []
        url = self._url(f"/v2/{name}/tags/list?n=1000")
        for _ in range(1000):
            r = self._request("GET", url, scope=self._scope(name), ok=(200,), context=f"{self.host}/{name}")
            data = r.read(16 << 20)
            link = r.header("Link")
            r.release()
            doc = json.loads(data) if data else {}
            out += doc.get("tags") or []
            if not link or "rel=\"next\"" not in link.replace("'", '"'):
                break
            target = link.split(";")[0].strip().strip("<>")
            url = _join_url(url, target)
        return out

    # -- blobs --------------------------------------------------------------------------------

    def has_blob(self, name: str, digest: str, *, for_push: bool = False) -> int | None:
        """The blob's size when the repository has it, else None."""
        try:
            r = self._request("HEAD", self._url(f"/v2/{name}/blobs/{digest}"),
                              scope=self._scope(name, "pull,push" if for_push else "pull"),
                              ok=(200,), context=f"{name}@{digest}")
        except NotFound:
            return None
        size = r.header("Content-Length")
        r.release()
        return int(size) if size and size.isdigit() else 0

    def fetch_blob(self, name: str, digest: str, store, *, size: int | None = None, progress=None,
                   cancel: threading.Event | None = None) -> str:
        """Download a blob into the content store, resuming a partial download with Range.

        Digest and size are verified by the store's writer. An exception (including one raised
        by `progress`) leaves the partial data in place for the next attempt to resume.
        """
        if store.has(digest):
            if progress:
                n = store.size(digest)
                progress("exists", digest, n, n)
            return digest
        from .content import DigestMismatch
        try:
            return self._fetch_blob(name, digest, store, size, progress, cancel, resume=True)
        except DigestMismatch as e:
            if not getattr(e, "resumed_from", 0):
                raise
        # The bytes kept from an earlier attempt were bad: start over once.
        return self._fetch_blob(name, digest, store, size, progress, cancel, resume=False)

    def _fetch_blob(self, name, digest, store, size, progress, cancel, *, resume: bool) -> str:
        import http.client
        url = self._url(f"/v2/{name}/blobs/{digest}")
        from .content import DigestMismatch
        w = store.writer(expected=digest, size=size, resume=resume)
        ok = False
        try:
            offset = w.offset
            total = size if size is not None else -1
            if progress:
                progress("resume" if offset else "start", digest, offset, total)
            attempt = 0
            buf = bytearray(_READ_SIZE)
            view = memoryview(buf)
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"cancelled: {digest}")
                if size is not None and offset >= size:
                    break
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    r = self._request("GET", url, scope=self._scope(name), headers=headers, ok=(200, 206),
                                      context=f"{self.host}/{name}@{digest}")
                except RegistryError as e:
                    if e.status == 416 and size is not None and offset >= size:
                        break
                    raise
                skip = 0
                if offset and r.status == 200:
                    skip = offset       # the server ignored Range: drop what we already have
                if total < 0:
                    length = r.resp.length
                    if length is not None:
                        total = length + (offset if r.status == 206 else 0)
                try:
                    while True:
                        if cancel is not None and cancel.is_set():
                            raise Cancelled(f"cancelled: {digest}")
                        n = r.resp.readinto(buf)
                        if not n:
                            break
                        chunk = view[:n]
                        if skip:
                            drop = min(skip, n)
                            skip -= drop
                            chunk = chunk[drop:]
                            if not len(chunk):
                                continue
                        w.write(chunk)
                        offset += len(chunk)
                        with self._lock:
                            self.stats["downloaded"] += len(chunk)
                        if size is not None and offset > size:
                            raise DigestMismatch(f"blob {digest} is larger than its descriptor's {size} bytes")
                        if progress:
                            progress("progress", digest, offset, total)
                    if r.resp.length:
                        raise http.client.IncompleteRead(b"", r.resp.length)
                except (OSError, http.client.HTTPException) as e:
                    r.discard()
                    if attempt < self.retries:
                        self._sleep(attempt)
                        attempt += 1
                        continue
                    raise ConnectionFailed(f"{_describe_os_error(e, self.netloc)} (downloading {digest})") from None
                except BaseException:
                    r.discard()
                    raise
                r.release()
                break
            got = w.commit()
            ok = True
        except DigestMismatch as e:
            e.resumed_from = w.offset
            raise
        finally:
            if not ok:
                _suspend(w)
        if progress:
            progress("done", digest, offset, offset)
        return got

    def _start_upload(self, name: str, digest: str, mount_from: list[str]) -> tuple[str | None, str]:
        """POST an upload; with `mount_from` repos try a cross-repository mount first.

        Returns (upload URL or None when mounted, how: 'mounted' | 'upload')."""
        for repo in mount_from:
            if repo == name:
                continue
            scope = self._scope(name, "pull,push") + self._scope(repo, "pull")
            url = _add_query(self._url(f"/v2/{name}/blobs/uploads/"), mount=digest, **{"from": repo})
            r = self._request("POST", url, scope=scope, headers={"Content-Length": "0"}, body=b"",
                              ok=(201, 202), context=f"{self.host}/{name}")
            loc = r.header("Location")
            status = r.status
            r.release()
            if status == 201:
                return None, "mounted"
            if loc:
                return _join_url(r.url, loc), "upload"
        r = self._request("POST", self._url(f"/v2/{name}/blobs/uploads/"), scope=self._scope(name, "pull,push"),
                          headers={"Content-Length": "0"}, body=b"", ok=(202,), context=f"{self.host}/{name}")
        loc = r.header("Location")
        r.release()
        if not loc:
            raise RegistryError(f"{self.host}: upload started without a Location header")
        return _join_url(r.url, loc), "upload"

    def _upload_status(self, name: str, url: str) -> tuple[str, int]:
        """(next URL, bytes the registry holds) of an upload session."""
        r = self._request("GET", url, scope=self._scope(name, "pull,push"), ok=(204,),
                          context=f"{self.host}/{name} upload")
        rng = r.header("Range") or ""
        loc = r.header("Location")
        r.release()
        end = -1
        if "-" in rng:
            try:
                end = int(rng.rsplit("-", 1)[1])
            except ValueError:
                end = -1
        return (_join_url(url, loc) if loc else url), end + 1

    def upload_blob(self, name: str, digest: str, store, *, size: int | None = None, mount_from=(),
                    progress=None, cancel: threading.Event | None = None) -> str:
        """Upload one blob from the store unless the repository has it.

        Returns 'exists', 'mounted' or 'uploaded'. Blobs up to `monolithic_max` bytes go in one
        PUT; bigger ones in PATCH chunks of `chunk_size` with Content-Range, resumed from the
        registry's upload status after a connection error.
        """
        if size is None:
            size = store.size(digest)
        if self.has_blob(name, digest, for_push=True) is not None:
            if progress:
                progress("exists", digest, size, size)
            return "exists"
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled: {digest}")
        scope = self._scope(name, "pull,push")
        sent = [0]

        def on_read(n: int) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled: {digest}")
            sent[0] += n
            with self._lock:
                self.stats["uploaded"] += n
            if progress:
                progress("progress", digest, sent[0], size)

        restarts = 0
        while True:
            url, _how = self._start_upload(name, digest, list(mount_from))
            if url is None:
                if progress:
                    progress("mounted", digest, size, size)
                return "mounted"
            if progress:
                progress("start", digest, 0, size)
            try:
                with store.open(digest) as f:
                    if size <= self.monolithic_max:
                        sent[0] = 0
                        body = _Section(f, 0, size, on_read)
                        r = self._request("PUT", _add_query(url, digest=digest), scope=scope, body=body,
                                          headers={"Content-Type": "application/octet-stream",
                                                   "Content-Length": str(size)},
                                          ok=(201, 204), retry=False, context=f"{self.host}/{name}@{digest}")
                    else:
                        offset, chunk_errors = 0, 0
                        while offset < size:
                            n = min(self.chunk_size, size - offset)
                            sent[0] = offset
                            body = _Section(f, offset, n, on_read)
                            try:
                                r = self._request("PATCH", url, scope=scope, body=body, ok=(202, 204), retry=False,
                                                  headers={"Content-Type": "application/octet-stream",
                                                           "Content-Length": str(n),
                                                           "Content-Range": f"{offset}-{offset + n - 1}"},
                                                  context=f"{self.host}/{name}@{digest}")
                            except (ConnectionFailed, RegistryError) as e:
                                if isinstance(e, (Unauthorized, Cancelled)) or chunk_errors >= self.retries:
                                    raise
                                if isinstance(e, RegistryError) and not isinstance(e, ConnectionFailed) and (
                                        e.status is None or e.status < 500):
                                    raise
                                self._sleep(chunk_errors)
                                chunk_errors += 1
                                status_url, held = self._upload_status(name, url)
                                if held <= 1:
                                    raise   # "0-0" is ambiguous: start the upload over
                                url, offset = status_url, held
                                continue
                            loc = r.header("Location")
                            r.release()
                            if loc:
                                url = _join_url(url, loc)
                            offset += n
                        r = self._request("PUT", _add_query(url, digest=digest), scope=scope, body=b"",
                                          headers={"Content-Length": "0"}, ok=(201, 204),
                                          context=f"{self.host}/{name}@{digest}")
                got = r.header("Docker-Content-Digest")
                r.release()
            except (ConnectionFailed, RegistryError) as e:
                retryable = isinstance(e, ConnectionFailed) or (e.status is not None and e.status >= 500)
                if isinstance(e, Cancelled) or not retryable or restarts >= self.retries:
                    raise
                self._sleep(restarts)
                restarts += 1
                continue
            if got and got != digest:
                from .content import DigestMismatch
                raise DigestMismatch(f"registry stored {digest} as {got}")
            if progress:
                progress("done", digest, size, size)
            return "uploaded"

    # -- pull and push ------------------------------------------------------------------------

    def _parallel(self, jobs: list, progress):
        """Run `job(progress, cancel)` callables on up to max_concurrent threads; the first
        failure cancels the rest and is raised. Progress calls are serialized."""
        if progress is not None:
            plock = threading.Lock()
            user_progress = progress

            def progress(*a):  # noqa: F811 - serialized wrapper
                with plock:
                    user_progress(*a)
        cancel = threading.Event()
        if len(jobs) <= 1 or self.max_concurrent == 1:
            return [job(progress, cancel) for job in jobs]
        from concurrent.futures import ThreadPoolExecutor
        errors: list[BaseException] = []
        results = [None] * len(jobs)

        def run(i):
            try:
                results[i] = jobs[i](progress, cancel)
            except BaseException as e:
                if not cancel.is_set() or not isinstance(e, Cancelled):
                    errors.append(e)
                cancel.set()

        with ThreadPoolExecutor(max_workers=min(self.max_concurrent, len(jobs)),
                                thread_name_prefix="sampan-registry") as pool:
            futures = [pool.submit(run, i) for i in range(len(jobs))]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                cancel.set()      # e.g. KeyboardInterrupt: stop the workers at their next chunk
                raise
        if errors:
            first = next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
            raise first
        return results

    def pull(self, ref, store, *, platform=None, progress=None) -> PullResult:
        """Fetch the manifest (following a list to `platform`, the host's by default), the config
        and the layers into `store`, skipping blobs it has. Manifests are stored as blobs too.

        Blobs download on up to `max_concurrent` threads. `progress(event, digest, done, total)`
        is called from those threads but never concurrently; events per blob: "exists" (already
        in the store), "start" or "resume" (done = bytes kept from an earlier attempt), "progress",
        "done"; then "manifest" once everything is in. An exception raised by `progress` stops
        the pull (the other downloads too) and keeps the partial data for the next pull."""
        from . import platform as platforms
        ref = _parse_ref(ref)
        name = ref.path
        target = ref.digest or ref.tag or "latest"
        want = platforms.coerce(platform)
        manifest, index = self.resolve(name, target, want)
        doc = manifest.json()
        config = doc.get("config")
        layers = doc.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list):
            raise RegistryError(f"invalid manifest {manifest.digest}: missing config or layers")
        blobs = [(config["digest"], config.get("size"))]
        layer_list = []
        for layer in layers:
            if not isinstance(layer, dict) or "digest" not in layer:
                raise RegistryError(f"invalid manifest {manifest.digest}: bad layer descriptor")
            layer_list.append((layer["digest"], layer.get("mediaType", ""), layer.get("size")))
            blobs.append((layer["digest"], layer.get("size")))
        seen: set[str] = set()
        jobs = []
        before = self.stats["downloaded"]
        for digest, size in blobs:
            if digest in seen:
                continue
            seen.add(digest)
            jobs.append(lambda p, c, d=digest, s=size: self.fetch_blob(name, d, store, size=s, progress=p, cancel=c))
        self._parallel(jobs, progress)
        for m in (index, manifest):
            if m is not None and not store.has(m.digest):
                store.put(m.data, m.digest)
        if progress:
            progress("manifest", manifest.digest, len(manifest.data), len(manifest.data))
        return PullResult(reference=_ref_str(ref), manifest_digest=manifest.digest, manifest_bytes=manifest.data,
                          media_type=manifest.media_type, config_digest=config["digest"],
                          config_media_type=config.get("mediaType", ""), layers=layer_list,
                          index_bytes=index.data if index else None, index_digest=index.digest if index else None,
                          index_media_type=index.media_type if index else None, platform=want,
                          downloaded=self.stats["downloaded"] - before)

    def push(self, ref, store, manifest_bytes: bytes, media_type: str, *, progress=None, mount_from=()) -> str:
        """Upload the blobs a manifest needs (an index's manifests and their blobs too), then PUT
        the manifest under the reference's tag (or digest). Returns the manifest's digest.

        `mount_from` lists repositories of this registry that may hold the blobs (a list of
        names for every blob, or a {digest: [names]} map); they are mounted instead of uploaded.
        Progress events per blob: "exists" (the repository has it), "mounted", or "start",
        "progress", "done"; then "manifest" with the pushed digest.
        """
        import json
        ref = _parse_ref(ref)
        name = ref.path
        digest = _sha256(manifest_bytes)
        if ref.digest and ref.digest != digest:
            from .content import DigestMismatch
            raise DigestMismatch(f"digest mismatch: manifest is {digest}, reference says {ref.digest}")
        media_type = media_type or _detect_media_type(manifest_bytes, None)

        def mounts_for(d: str) -> list[str]:
            if isinstance(mount_from, dict):
                repos = mount_from.get(d) or []
            else:
                repos = list(mount_from or [])
            out = []
            for repo in repos:
                if "/" in repo and (repo.split("/", 1)[0] == self.host or repo.split("/", 1)[0] == self.netloc):
                    repo = repo.split("/", 1)[1]
                elif "/" in repo and ("." in repo.split("/", 1)[0] or ":" in repo.split("/", 1)[0]):
                    continue    # another registry: cannot mount from there
                out.append(repo)
            return out

        def blobs_of(data: bytes, mt: str) -> list[tuple[str, int]]:
            doc = json.loads(data)
            out = []
            if doc.get("config"):
                out.append((doc["config"]["digest"], doc["config"].get("size")))
            for layer in doc.get("layers") or []:
                if layer.get("mediaType") in _NONDISTRIBUTABLE or layer.get("urls"):
                    continue
                out.append((layer["digest"], layer.get("size")))
            return out

        def push_blobs(pairs: list[tuple[str, int]]) -> None:
            seen, jobs = set(), []
            for d, s in pairs:
                if d in seen:
                    continue
                seen.add(d)
                if not store.has(d):
                    raise NotFound(f"blob unknown: {d} is not in the local store", code="BLOB_UNKNOWN")
                jobs.append(lambda p, c, d=d, s=s: self.upload_blob(name, d, store, size=s, mount_from=mounts_for(d),
                                                                      progress=p, cancel=c))
            self._parallel(jobs, progress)

        if media_type in INDEX_TYPES:
            doc = json.loads(manifest_bytes)
            children = []
            for desc in doc.get("manifests") or []:
                child_digest = desc["digest"]
                if not store.has(child_digest):
                    raise NotFound(f"manifest unknown: {child_digest} is not in the local store",
                                   code="MANIFEST_UNKNOWN")
                child = store.read(child_digest)
                child_type = desc.get("mediaType") or _detect_media_type(child, None)
                children.append((child_digest, child, child_type))
            all_blobs = []
            for _, child, child_type in children:
                if child_type not in INDEX_TYPES:
                    all_blobs += blobs_of(child, child_type)
            push_blobs(all_blobs)
            for child_digest, child, child_type in children:
                if child_type in INDEX_TYPES:
                    raise RegistryError("nested indexes are not supported for push")
                self.put_manifest(name, child_digest, child, child_type)
        else:
            push_blobs(blobs_of(manifest_bytes, media_type))
        target = ref.tag or digest
        pushed = self.put_manifest(name, target, manifest_bytes, media_type)
        if progress:
            progress("manifest", pushed, len(manifest_bytes), len(manifest_bytes))
        return pushed


def _login_message(e: RegistryError) -> str:
    msg = str(e)
    if msg.startswith(("unauthorized:", "denied:")):
        return msg
    return f"unauthorized: {msg}"


def _suspend(writer) -> None:
    """Leave a writer's partial data for a later resume (close its file, keep the bytes)."""
    for method in ("suspend", "close", "detach"):
        fn = getattr(writer, method, None)
        if fn is not None:
            try:
                fn()
            except Exception:
                pass
            return


# ---------------------------------------------------------------------------------------------
# One-call helpers

def pull(ref, store, *, platform=None, progress=None, **options) -> PullResult:
    """Pull `ref` (a string or reference.Reference) into `store`; options go to Registry()."""
    ref = _parse_ref(ref)
    with Registry(ref.domain, **options) as reg:
        return reg.pull(ref, store, platform=platform, progress=progress)


def push(ref, store, manifest_bytes: bytes, media_type: str, *, progress=None, mount_from=(), **options) -> str:
    """Push a manifest and its blobs from `store` to `ref`; returns the manifest digest."""
    ref = _parse_ref(ref)
    with Registry(ref.domain, **options) as reg:
        return reg.push(ref, store, manifest_bytes, media_type, progress=progress, mount_from=mount_from)
