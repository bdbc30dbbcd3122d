"""The distribution API v2 client for one registry host: ping, manifests (Docker schema 2, OCI,
manifest lists and indexes with platform selection), tags, and a login check; blobs
(download with Range resume, monolithic and chunked upload, cross-repository mount) are
blobs.py's ``BlobTransfer``, which ``Registry`` is.

HTTP, TLS and retries are ``http.Transport``'s; authentication is ``auth.Authenticator``'s.
Pulling into the image store is pull.py, pushing from it push.py.
"""
from __future__ import annotations

import threading
from typing import Any

from ...oci import mediatypes as mt
from .. import platform as platforms
from ..content import DigestMismatch, digest_of
from .auth import Authenticator, Credentials, login_error, parse_challenges
from .blobs import BlobTransfer
from .errors import ConnectionFailed, NotFound, RegistryError, Unauthorized, describe_os_error, error_from_response
from .http import USER_AGENT, Response, Transport, api_host, is_loopback, is_retry_status, join_url, \
    matches_insecure


def _verify_digest(data: bytes, digest: str) -> None:
    algo, _, _ = digest.partition(":")
    import hashlib
    if algo not in ("sha256", "sha384", "sha512"):
        raise RegistryError(f"unsupported digest algorithm: {digest}")
    got = f"{algo}:" + hashlib.new(algo, data).hexdigest()
    if got != digest:
        raise DigestMismatch(f"digest mismatch: expected {digest}, got {got}")


def detect_media_type(data: bytes, header: str | None) -> str:
    header_type = (header or "").split(";")[0].strip()
    if header_type in mt.INDEX_TYPES or header_type in mt.MANIFEST_TYPES:
        return header_type
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
        return mt.DOCKER_SCHEMA1_SIGNED if "signatures" in doc else mt.DOCKER_SCHEMA1
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "layers" in doc or "config" in doc:
        return mt.OCI_MANIFEST
    return header_type or "application/octet-stream"


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
        return self.media_type in mt.INDEX_TYPES

    def __repr__(self) -> str:
        return f"Manifest({self.media_type}, {self.digest}, {len(self.data)} bytes)"

class Registry(BlobTransfer):
    """A client for one registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`, ...).

    Thread-safe: one pool of keep-alive connections per host, a token cache per scope.
    `credentials`: see auth.py. Use as a context manager or call close().
    """

    def __init__(self, host: str, *, insecure: list[str] | tuple[str, ...] = (), config_dir: str | None = None,
                 credentials: Credentials = None, ca_file: str | None = None, max_concurrent: int = 3,
                 retries: int = 3, backoff: float = 0.5, timeout: float = 60.0, chunk_size: int = 32 << 20,
                 monolithic_max: int | None = None, user_agent: str = USER_AGENT) -> None:
        self.host = host
        self.netloc = api_host(host)
        secure_off = matches_insecure(host, insecure) or matches_insecure(self.netloc, insecure)
        self.allow_http = secure_off or is_loopback(self.netloc)
        self.max_concurrent = max(1, int(max_concurrent))
        self.chunk_size = max(1, int(chunk_size))
        self.monolithic_max = self.chunk_size if monolithic_max is None else monolithic_max
        self.http = Transport(host, self.netloc, insecure=secure_off, config_dir=config_dir, ca_file=ca_file,
                              retries=retries, backoff=backoff, timeout=timeout, user_agent=user_agent)
        self.auth = Authenticator(self.http, credentials)
        self._scheme: str | None = None          # "https" or "http", decided by ping
        self._ping_lock = threading.Lock()

    @property
    def stats(self) -> dict[str, int]:
        """Bytes downloaded and uploaded, requests sent."""
        return self.http.stats

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.host!r})"

    def _request(self, method: str, url: str, **kw: Any) -> Response:
        return self.http.request(method, url, auth=self.auth, **kw)

    def _url(self, path: str) -> str:
        self._ensure_pinged()
        return f"{self._scheme}://{self.netloc}{path}"

    # -- ping and login -----------------------------------------------------------------------

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
        retries = self.http.retries
        for attempt in range(retries + 1):
            for scheme in schemes:
                url = f"{scheme}://{self.netloc}/v2/"
                try:
                    if scheme == "https" and len(schemes) > 1:
                        r = self.http.probe_tls("/v2/")
                    else:
                        r = self.http.send("GET", url, {})
                except ssl.SSLCertVerificationError as e:
                    raise ConnectionFailed(describe_os_error(e, self.netloc)) from None
                except (ssl.SSLError, http.client.HTTPException, OSError) as e:
                    # Not reachable, or the server does not speak TLS (or not HTTP): the next scheme.
                    last = e
                    continue
                status = r.status
                challenges = r.challenges()
                if is_retry_status(status) and attempt < retries:
                    r.release()
                    last = RegistryError(f"http {status} from {self.netloc}", status=status)
                    break
                if status in (200, 401):
                    r.release()
                    self.auth.challenges = parse_challenges(challenges) if status == 401 else {}
                    self._scheme = scheme
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
                raise error_from_response(status, data, f"{self.netloc}/v2/")
            if attempt < retries:
                self.http.sleep(attempt)
        if isinstance(last, RegistryError):
            raise last
        raise ConnectionFailed(describe_os_error(last, self.netloc) if last else f"cannot reach {self.netloc}")

    def ping(self) -> str:
        """Reach /v2/; returns the auth scheme the registry asks for: 'none', 'basic' or 'bearer'."""
        self._ensure_pinged()
        return self.auth.scheme

    @property
    def scheme(self) -> str:
        """'https' or 'http', once pinged."""
        self._ensure_pinged()
        return self._scheme  # type: ignore[return-value]

    def check_login(self) -> None:
        """Verify the credentials: ping, then a token (bearer) or an authenticated /v2/ (basic).

        Raises Unauthorized with the registry's reason when they are wrong."""
        creds = self.auth.credentials()
        scheme = self.ping()
        if scheme == "none":
            return
        if scheme == "bearer":
            try:
                self.auth.fetch_token(self.auth.challenges["bearer"], ())
            except Unauthorized as e:
                raise login_error(e) from None
            self._request("GET", self._url("/v2/"), ok=(200,), context=f"{self.host}/v2/").release()
            return
        if not creds:
            raise Unauthorized("unauthorized: authentication required", code="UNAUTHORIZED", status=401)
        try:
            r = self._request("GET", self._url("/v2/"), ok=(200,), context=f"{self.host}/v2/")
        except Unauthorized as e:
            raise login_error(e) from None
        r.release()

    # -- manifests ----------------------------------------------------------------------------

    @staticmethod
    def _scope(name: str, actions: str = "pull") -> tuple[str, ...]:
        return (f"repository:{name}:{actions}",)

    def get_manifest(self, name: str, reference: str, *, accept: str = mt.ACCEPT_MANIFESTS) -> Manifest:
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
            raise ConnectionFailed(describe_os_error(e, self.netloc)) from None
        r.release()
        media_type = detect_media_type(data, header_type)
        if ":" in reference:
            _verify_digest(data, reference)
            digest = reference
        else:
            digest = digest_of(data)
            if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
                raise DigestMismatch(f"digest mismatch for {self.host}/{name}:{reference}: registry says "
                                     f"{header_digest}, content is {digest}")
        return Manifest(data, media_type, digest)

    def head_manifest(self, name: str, reference: str) -> tuple[str, str, int] | None:
        """(digest, media type, size) of a manifest, or None when it does not exist."""
        try:
            r = self._request("HEAD", self._url(f"/v2/{name}/manifests/{reference}"), scope=self._scope(name),
                              headers={"Accept": mt.ACCEPT_MANIFESTS}, ok=(200,), context=f"{name}:{reference}")
        except NotFound:
            return None
        digest = r.header("Docker-Content-Digest") or ""
        media_type = (r.header("Content-Type") or "").split(";")[0]
        size = int(r.header("Content-Length") or 0)
        r.release()
        return digest, media_type, size

    def resolve(self, name: str, reference: str, platform=None) -> tuple[Manifest, Manifest | None]:
        """The image manifest for `reference` and, when it named a list/index, that index."""
        m = self.get_manifest(name, reference)
        index = None
        for _ in range(4):
            if m.media_type in (mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED):
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
        if m.media_type not in mt.MANIFEST_TYPES:
            raise RegistryError(f"unsupported manifest media type: {m.media_type}")
        return m, index

    def put_manifest(self, name: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns its digest."""
        digest = digest_of(data)
        if reference.startswith("sha256:") and reference != digest:
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
            url = join_url(url, target)
        return out
