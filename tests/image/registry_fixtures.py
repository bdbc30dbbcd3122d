"""Real registries for the tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1,
plain, with htpasswd basic auth, with TLS from a test CA, and with token auth served by a
small JWT issuer in this process. Plus helpers that build test images into a ContentStore.

Import the fixtures into a test module with `from registry_fixtures import *`.
Every server is stopped and its files removed when the session ends.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse

import pytest

from private_daemons import in_netns

REGISTRY_BIN = shutil.which("docker-registry")
SKOPEO_BIN = shutil.which("skopeo")
needs_registry = pytest.mark.skipif(REGISTRY_BIN is None, reason="docker-registry is not installed (scripts/setup.sh)")
needs_skopeo = pytest.mark.skipif(SKOPEO_BIN is None, reason="skopeo is not installed (scripts/setup.sh)")

USER, PASSWORD = "sampan", "s3cret-pass"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


# ---------------------------------------------------------------------------------------------
# Certificates and keys (openssl)

def make_ca(directory: str) -> tuple[str, str]:
    ca_key, ca_crt = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.crt")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=sampan test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return ca_key, ca_crt


def make_server_cert(directory: str, ca_key: str, ca_crt: str) -> tuple[str, str]:
    key, csr, crt = (os.path.join(directory, n) for n in ("server.key", "server.csr", "server.crt"))
    ext = os.path.join(directory, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n")
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext])
    return key, crt


# ---------------------------------------------------------------------------------------------
# A JWT token issuer for the registry's `auth.token` (RS256, x5c header with a self-signed cert)

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens: valid USER/PASSWORD get the actions asked for; anonymous
    callers get pull on repositories under `public/`; a wrong password gets 401."""

    def __init__(self, directory: str, service: str, issuer: str) -> None:
        self.dir = directory
        self.service, self.issuer = service, issuer
        self.key = os.path.join(directory, "token.key")
        self.cert = os.path.join(directory, "token.crt")
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.cert,
             "-days", "2", "-subj", "/CN=sampan test token issuer"])
        der = run(["openssl", "x509", "-in", self.cert, "-outform", "DER"]).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    u_, _, p_ = base64.b64decode(auth[6:]).decode().partition(":")
                    if (u_, p_) != (USER, PASSWORD):
                        body = b'{"details":"incorrect username or password"}'
                        self.send_response(401)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    user = u_
                scopes = q.get("scope", [])
                with server._lock:
                    server.requests.append({"user": user, "scopes": scopes, "service": q.get("service", [None])[0]})
                token = server.issue(user, scopes)
                body = json.dumps({"token": token, "access_token": token, "expires_in": 300,
                                   "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                parts = one.split(":")
                if len(parts) < 3 or parts[0] != "repository":
                    continue
                name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
                if user is None:
                    actions = [a for a in actions if a == "pull"] if name.startswith("public/") else []
                if actions:
                    access.append({"type": "repository", "name": name, "actions": actions})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return signing_input + "." + _b64url(sig)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


# ---------------------------------------------------------------------------------------------
# docker-registry processes

class RegistryServer:
    """One docker-registry process; `host` is "127.0.0.1:PORT"."""

    def __init__(self, directory: str, *, basic: bool = False, tls: tuple[str, str] | None = None,
                 token: TokenServer | None = None, netns: str | None = None) -> None:
        self.dir = directory
        self.netns = netns  # a network namespace (/proc/PID/ns/net) to serve in instead of the host's
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(directory, "registry.log")
        storage = os.path.join(directory, "storage")
        os.makedirs(storage)
        lines = [
            "version: 0.1",
            "log:", "  level: info", "  formatter: text", "  accesslog:", "    disabled: false",
            "storage:", "  filesystem:", f"    rootdirectory: {storage}",
            "  delete:", "    enabled: true",
            "  maintenance:", "    uploadpurging:", "      enabled: false",
            "http:", f"  addr: 127.0.0.1:{self.port}", "  secret: sampan-test-secret",
        ]
        if tls:
            lines += ["  tls:", f"    certificate: {tls[1]}", f"    key: {tls[0]}"]
        if basic:
            htpasswd = os.path.join(directory, "htpasswd")
            out = run(["htpasswd", "-Bbn", USER, PASSWORD]).stdout
            with open(htpasswd, "wb") as f:
                f.write(out)
            lines += ["auth:", "  htpasswd:", "    realm: sampan-test", f"    path: {htpasswd}"]
        if token:
            lines += ["auth:", "  token:", f"    realm: {token.realm}", f"    service: {token.service}",
                      f"    issuer: {token.issuer}", f"    rootcertbundle: {token.cert}"]
        self.config = os.path.join(directory, "config.yml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.scheme = "https" if tls else "http"
        self.proc = None

    def start(self) -> "RegistryServer":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*in_netns(self.netns), REGISTRY_BIN, "serve", self.config], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log()[-2000:]}")
            if self._listening():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not start in 20 s")

    def _listening(self) -> bool:
        if self.netns:  # not reachable from here: the registry says when it listens
            return f"listening on 127.0.0.1:{self.port}" in self.log()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def access_log(self) -> list[dict]:
        """Parsed access-log lines: method, path, status, bytes."""
        out = []
        for line in self.log().splitlines():
            # 127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 206 123 "" "ua"
            if not line.startswith("127.0.0.1 - "):
                continue
            try:
                req = line.split('"')[1]
                rest = line.split('"')[2].split()
                method, path, _ = req.split(" ")
                out.append({"method": method, "path": path, "status": int(rest[0]),
                            "bytes": int(rest[1]) if rest[1].isdigit() else 0})
            except (IndexError, ValueError):
                continue
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._log.close()
        self.proc = None


@pytest.fixture(scope="session")
def registry_tmp():
    d = tempfile.mkdtemp(prefix="sampan-registry-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _start(registry_tmp: str, name: str, **kw) -> RegistryServer:
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh)")
    d = os.path.join(registry_tmp, name)
    os.makedirs(d)
    return RegistryServer(d, **kw).start()


@pytest.fixture(scope="session")
def plain_registry(registry_tmp):
    r = _start(registry_tmp, "plain")
    yield r
    r.stop()


@pytest.fixture(scope="session")
def basic_registry(registry_tmp):
    r = _start(registry_tmp, "basic", basic=True)
    yield r
    r.stop()


@pytest.fixture(scope="session")
def test_ca(registry_tmp):
    d = os.path.join(registry_tmp, "ca")
    os.makedirs(d)
    ca_key, ca_crt = make_ca(d)
    return {"dir": d, "key": ca_key, "crt": ca_crt}


@pytest.fixture(scope="session")
def tls_registry(registry_tmp, test_ca):
    d = os.path.join(registry_tmp, "tls-certs")
    os.makedirs(d)
    key, crt = make_server_cert(d, test_ca["key"], test_ca["crt"])
    r = _start(registry_tmp, "tls", tls=(key, crt), basic=True)
    r.ca = test_ca["crt"]
    yield r
    r.stop()


@pytest.fixture(scope="session")
def token_registry(registry_tmp):
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh)")
    d = os.path.join(registry_tmp, "token-issuer")
    os.makedirs(d)
    issuer = TokenServer(d, service="sampan-test-registry", issuer="sampan-test-issuer")
    try:
        r = _start(registry_tmp, "token", token=issuer)
    except BaseException:
        issuer.stop()
        raise
    r.token_server = issuer
    yield r
    r.stop()
    issuer.stop()


@pytest.fixture(autouse=True)
def remove_tmp_path_after(tmp_path):
    """Tests here write images of megabytes: remove them at once rather than keep 3 runs."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """An empty sampan config dir, also set as $SAMPAN_CONFIG."""
    d = tmp_path / "config"
    d.mkdir()
    monkeypatch.setenv("SAMPAN_CONFIG", str(d))
    return str(d)


# ---------------------------------------------------------------------------------------------
# Test images

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A tar.gz layer with `files`; returns (compressed bytes, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), sha256(tar_bytes)


class TestImage:
    __test__ = False

    def __init__(self, manifest: bytes, media_type: str, config_digest: str, layers: list[tuple[str, str, int]]):
        self.manifest, self.media_type = manifest, media_type
        self.digest = sha256(manifest)
        self.config_digest, self.layers = config_digest, layers

    @property
    def blobs(self) -> list[str]:
        return [self.config_digest] + [d for d, _, _ in self.layers]


def build_image(store, *, oci: bool = False, layer_sizes=(2048, 40000), arch: str = "amd64",
                variant: str | None = None, seed: bytes = b"", random_data: bool = True) -> TestImage:
    """Write a test image (config, tar.gz layers, manifest) into `store`; the manifest is
    stored as a blob too. Layer contents are random unless random_data is false."""
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        data = os.urandom(size) if random_data else (seed + bytes([i])) * (size // (len(seed) + 1) + 1)
        blob, diff_id = make_layer({f"layer{i}/data.bin": data[:size], f"layer{i}/seed": seed})
        digest = store.put(blob)
        layers.append((digest, MT_OCI_LAYER if oci else MT_DOCKER_LAYER, len(blob)))
        diff_ids.append(diff_id)
    config = {"architecture": arch, "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "created": "2024-01-01T00:00:00Z", "history": [{"created_by": f"test {i}"} for i in range(len(layers))]}
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = store.put(config_bytes)
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG if oci else MT_DOCKER_CONFIG, "digest": config_digest,
                           "size": len(config_bytes)},
                "layers": [{"mediaType": mt, "digest": d, "size": s} for d, mt, s in layers]}
    manifest_bytes = json.dumps(manifest, indent=3).encode()
    store.put(manifest_bytes)
    return TestImage(manifest_bytes, manifest["mediaType"], config_digest, layers)


def build_index(store, images: list[tuple[TestImage, dict]], *, oci: bool = False) -> tuple[bytes, str]:
    """A manifest list / OCI index over (image, platform) pairs, stored; returns (bytes, media type)."""
    mt = MT_OCI_INDEX if oci else MT_DOCKER_LIST
    doc = {"schemaVersion": 2, "mediaType": mt,
           "manifests": [{"mediaType": img.media_type, "digest": img.digest, "size": len(img.manifest),
                          "platform": plat} for img, plat in images]}
    data = json.dumps(doc, indent=3).encode()
    store.put(data)
    return data, mt


def write_oci_layout(store, directory: str, image: TestImage, tag: str) -> None:
    """An OCI image layout (what skopeo's `oci:` transport reads) holding `image`."""
    os.makedirs(os.path.join(directory, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    for digest in image.blobs + [image.digest]:
        shutil.copyfile(store.path(digest), os.path.join(directory, "blobs", "sha256", digest.split(":")[1]))
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
             "manifests": [{"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest),
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump(index, f)


def skopeo_argv(*args: str, tmpdir: str, netns: str | None = None) -> list[str]:
    """skopeo that leaves no files behind: as root it keeps a blob-info cache in
    /var/lib/containers, so it runs in a private mount namespace with a tmpfs on /var/lib
    (which also makes each run start with an empty cache: no cross-run blob reuse); in the
    network namespace at path `netns` if given (a RegistryServer's there)."""
    return [*in_netns(netns), "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount -t tmpfs sampan-skopeo /var/lib && exec "$@"', "sh",
            SKOPEO_BIN, "--insecure-policy", "--tmpdir", tmpdir, *args]


def skopeo(*args: str, timeout: float = 120, netns: str | None = None) -> subprocess.CompletedProcess:
    """skopeo_argv(*args) run with a temporary directory of its own."""
    tmp = tempfile.mkdtemp(prefix="sampan-skopeo-")
    try:
        return subprocess.run(skopeo_argv(*args, tmpdir=tmp, netns=netns), capture_output=True, text=True,
                              timeout=timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# A scripted fake registry (http.server) for what a real one will not do: bad digests,
# transient 5xx / 429, relative Location headers.

class FakeRegistry:
    """Serves `manifests[(name, ref)] = (bytes, media type)` and `blobs[digest] = bytes`;
    `fail[path] = [status, ...]` answers the next requests to a path with those statuses,
    `patch_fail[n] = status` the n-th PATCH (dropping its data), `cut[digest] = n` sends only
    the first n bytes of the next GET of that blob and drops the connection. Blob GETs honour
    `Range: bytes=N-` (206)."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.fail: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.uploads: dict[str, bytearray] = {}
        self.patches = 0
        self.patch_fail: dict[int, int] = {}     # n-th PATCH -> status to answer instead
        self.cut: dict[str, int] = {}            # blob digest -> bytes sent before the connection drops
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                u = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append((self.command, self.path, dict(self.headers)))
                queue = fake.fail.get(u.path)
                if queue:
                    status = queue.pop(0)
                    return self._send(status, b'{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}',
                                      {"Retry-After": "0", "Content-Type": "application/json"})
                if u.path == "/v2/":
                    return self._send(200, b"{}")
                parts = u.path.split("/")
                if "manifests" in parts:
                    i = parts.index("manifests")
                    name, ref = "/".join(parts[2:i]), parts[i + 1]
                    if self.command == "PUT":
                        mt = self.headers.get("Content-Type", "")
                        fake.manifests[(name, ref)] = fake.manifests[(name, sha256(body))] = (body, mt)
                        return self._send(201, b"", {"Docker-Content-Digest": sha256(body)})
                    if (name, ref) not in fake.manifests:
                        return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}')
                    data, mt = fake.manifests[(name, ref)]
                    return self._send(200, data, {"Content-Type": mt})
                if "uploads" in parts:
                    if self.command == "POST":
                        uid = os.urandom(4).hex()
                        fake.uploads[uid] = bytearray()
                        # Locations without scheme and host, as registries behind proxies send.
                        name = "/".join(parts[2:-3])
                        return self._send(202, b"", {"Location": f"/v2/{name}/blobs/uploads/{uid}?_state=x"})
                    uid = parts[-1]
                    if self.command == "GET":
                        held = len(fake.uploads[uid])
                        return self._send(204, b"", {"Location": f"{uid}?_state=z",
                                                     "Range": f"0-{max(held - 1, 0)}"})
                    if self.command == "PATCH":
                        fake.patches += 1
                        if fake.patch_fail.get(fake.patches):
                            return self._send(fake.patch_fail[fake.patches], b"{}")
                    fake.uploads[uid] += body
                    if self.command == "PATCH":
                        return self._send(202, b"", {"Location": f"{uid}?_state=y",
                                                     "Range": f"0-{len(fake.uploads[uid]) - 1}"})
                    digest = urllib.parse.parse_qs(u.query)["digest"][0]
                    data = bytes(fake.uploads.pop(uid))
                    if sha256(data) != digest:
                        return self._send(400, b'{"errors":[{"code":"DIGEST_INVALID","message":"digest invalid"}]}')
                    fake.blobs[digest] = data
                    return self._send(201, b"", {"Docker-Content-Digest": digest})
                if "blobs" in parts:
                    digest = parts[-1]
                    if digest not in fake.blobs:
                        return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
                    data, status, headers = fake.blobs[digest], 200, {"Content-Type": "application/octet-stream"}
                    rng = self.headers.get("Range", "")
                    if rng.startswith("bytes=") and rng.endswith("-"):
                        start = int(rng[6:-1])
                        data, status = data[start:], 206
                        headers["Content-Range"] = f"bytes {start}-{len(fake.blobs[digest]) - 1}/{len(fake.blobs[digest])}"
                    if digest in fake.cut and self.command == "GET":
                        n = fake.cut.pop(digest)
                        self.send_response(status)
                        for k, v in headers.items():
                            self.send_header(k, v)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data[:n])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    return self._send(status, data, headers)
                return self._send(404)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def fake_registry():
    f = FakeRegistry()
    yield f
    f.stop()


__all__ = [n for n in dir() if not n.startswith("_")]
