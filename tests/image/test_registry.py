"""The registry client against real registries (docker-registry 2.8: plain, htpasswd, TLS from a
test CA, token auth from a JWT issuer), skopeo as a third party, and a scripted fake registry
for failures a real one will not produce."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # registry_fixtures, also if tests/ becomes a package
from registry_fixtures import *  # noqa: E402,F401,F403 - fixtures and helpers
from registry_fixtures import (PASSWORD, USER, FakeRegistry, build_image, build_index, free_port, needs_skopeo,
                               sha256, skopeo, write_oci_layout)
from sampan.image import platform as platforms
from sampan.image import registry
from sampan.image.content import ContentStore, DigestMismatch
from sampan.image.registry import ConnectionFailed, NotFound, Registry, RegistryError, Unauthorized
from sampan.image.registry import http
from sampan.image.registry.auth import parse_challenges
from sampan.image.registry.errors import error_from_response
from sampan.image.store import ImageStore


@pytest.fixture
def store(tmp_path):
    """Where test images are built and pushed from."""
    return ContentStore(str(tmp_path / "store"))


@pytest.fixture
def store2(tmp_path):
    """Where they are pulled into."""
    s = ImageStore(str(tmp_path / "store2"))
    yield s
    s.close()


def _host(ref: str) -> str:
    return ref.split("/", 1)[0]


def push(ref, content, manifest, media_type, *, progress=None, mount_from=(), **client):
    """The client-level push of a manifest and its blobs, from a content store."""
    with Registry(_host(ref), **client) as r:
        return registry.push_manifest(r, ref, content, manifest, media_type, progress=progress, mount_from=mount_from)


def pull(ref, images, *, progress=None, platform=None, **client):
    """The one pull path, with a client made with ``client`` options."""
    with Registry(_host(ref), **client) as r:
        return registry.pull(images, ref, platform=platform, progress=progress, registry=r)


def pulled_layers(images, res):
    return [(lay.digest, lay.media_type, lay.blob_size) for lay in images.resolve(res.image_id).layers]


class Events:
    def __init__(self):
        self.items = []

    def __call__(self, event, digest, done, total):
        self.items.append((event, digest, done, total))

    def kinds(self, digest=None):
        return [e for e, d, _, _ in self.items if digest is None or d == digest]


def assert_same_blobs(a: ContentStore, b, digests):
    b = getattr(b, "content", b)
    for d in digests:
        assert b.has(d), d
        assert a.read(d) == b.read(d)


# ---------------------------------------------------------------------------------------------
# Units

def test_parse_challenges():
    c = parse_challenges(['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                          'scope="repository:library/busybox:pull,push",error="insufficient_scope"',
                          'Basic realm="x y"'])
    assert c["bearer"] == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                           "scope": "repository:library/busybox:pull,push", "error": "insufficient_scope"}
    assert c["basic"] == {"realm": "x y"}
    assert parse_challenges(["Bearer realm=http://a/t, service=s"])["bearer"] == {"realm": "http://a/t", "service": "s"}


def test_hosts_and_insecure():
    assert http.api_host("docker.io") == "registry-1.docker.io"
    assert http.api_host("ghcr.io") == "ghcr.io"
    for h in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "localhost"):
        assert http.is_loopback(h), h
    assert not http.is_loopback("10.0.0.1:5000")
    assert not http.is_loopback("example.com")
    r = Registry("10.1.2.3:5000", insecure=["10.0.0.0/8"])
    assert r.http.insecure and r.allow_http
    r = Registry("myreg:5000", insecure=["http://myreg:5000"])
    assert r.http.insecure
    r = Registry("myreg:5000")
    assert not r.http.insecure and not r.allow_http


def test_platform_parse_and_normalize():
    assert str(platforms.parse("linux/amd64")) == "linux/amd64"
    assert str(platforms.parse("linux/arm64")) == "linux/arm64"
    assert str(platforms.parse("linux/arm64/v8")) == "linux/arm64"
    assert platforms.parse("linux/arm64/v8") == platforms.parse("linux/aarch64")
    assert str(platforms.parse("linux/arm")) == "linux/arm/v7"
    assert str(platforms.parse("arm64")) == "linux/arm64"
    assert str(platforms.Platform("linux", "x86_64")) == "linux/amd64"
    assert platforms.host().os == "linux"
    if os.uname().machine == "x86_64":
        assert str(platforms.host()) == "linux/amd64"
    for bad in ("", "linux/", "a/b/c/d", "/amd64", "nonsense"):
        with pytest.raises(platforms.PlatformError):
            platforms.parse(bad)


def test_platform_select():
    entries = [
        {"digest": "amd", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "arm64", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "armv6", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "armv7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "att", "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "win", "platform": {"os": "windows", "architecture": "amd64"}},
    ]
    assert platforms.select(entries, "linux/amd64")["digest"] == "amd"
    assert platforms.select(entries, "linux/arm64")["digest"] == "arm64"
    assert platforms.select(entries, "linux/arm/v7")["digest"] == "armv7"
    assert platforms.select(entries, "linux/arm/v6")["digest"] == "armv6"
    assert platforms.select(entries[:3], "linux/arm/v7")["digest"] == "armv6"   # v7 runs v6
    assert platforms.select(entries, "windows/amd64")["digest"] == "win"
    # arm64 entries without a variant still match arm64/v8
    assert platforms.select([{"digest": "x", "platform": {"os": "linux", "architecture": "arm64"}}],
                            "linux/arm64")["digest"] == "x"
    with pytest.raises(platforms.PlatformError, match="no matching manifest for linux/s390x in the manifest list"):
        platforms.select(entries, "linux/s390x")
    with pytest.raises(platforms.PlatformError):
        platforms.select(entries[2:3], "linux/arm/v5")


def test_error_messages_are_one_line():
    e = error_from_response(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown",'
                                           b'"detail":{"Tag":"x"}}]}', "127.0.0.1:5000/a:x")
    assert isinstance(e, NotFound) and str(e) == "manifest unknown: 127.0.0.1:5000/a:x"
    e = error_from_response(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}', "")
    assert isinstance(e, Unauthorized) and str(e) == "unauthorized: authentication required"
    e = error_from_response(502, b"<html>\nbad gateway</html>", "x")
    assert "\n" not in str(e) and str(e).startswith("http 502")


def test_connection_refused():
    port = free_port()
    with Registry(f"127.0.0.1:{port}", retries=1, backoff=0.01) as r:
        with pytest.raises(ConnectionFailed) as ei:
            r.ping()
    assert str(ei.value) == f"connection refused: 127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------------
# Plain registry

def test_ping_plain(plain_registry):
    with Registry(plain_registry.host) as r:
        assert r.ping() == "none"
        assert r.scheme == "http"


def test_push_pull_roundtrip(plain_registry, store, store2):
    img = build_image(store, layer_sizes=(1000, 200_000, 50_000))
    ref = f"{plain_registry.host}/sampan/roundtrip:v1"
    ev = Events()
    assert push(ref, store, img.manifest, img.media_type, progress=ev) == img.digest
    assert ev.kinds().count("done") == 4 and ev.items[-1][0] == "manifest"

    ev2 = Events()
    res = pull(ref, store2, progress=ev2)
    assert res.manifest_digest == img.digest == res.digest
    assert store2.content.read(res.manifest_digest) == img.manifest
    assert store2.resolve(res.image_id).manifest_media_type == img.media_type
    assert res.image_id == img.config_digest and not res.up_to_date
    assert pulled_layers(store2, res) == img.layers
    assert res.reference == ref
    assert_same_blobs(store, store2, img.blobs + [img.digest])
    # progress for the layers (the config is not shown, as in docker)
    assert ev2.kinds().count("start") == 3 and ev2.kinds().count("done") == 3
    # progress totals are the descriptor sizes and end at them
    for d, _, size in img.layers:
        assert [x for x in ev2.items if x[1] == d and x[0] == "done"][0][2:] == (size, size)

    # a second push finds every blob; a second pull downloads nothing
    ev3 = Events()
    push(ref, store, img.manifest, img.media_type, progress=ev3)
    assert ev3.kinds().count("exists") == 4 and "start" not in ev3.kinds()
    res = pull(ref, store2)
    assert res.up_to_date and res.downloaded == 0
    # the same image under another tag: every layer is there already
    push(ref[:-2] + "v2", store, img.manifest, img.media_type)
    ev4 = Events()
    res = pull(ref[:-2] + "v2", store2, progress=ev4)
    assert not res.up_to_date and ev4.kinds().count("exists") == 3 and res.downloaded == 0

    # by digest, and the tag list
    store3 = ImageStore(str(store.root) + "-3")
    res = pull(f"{plain_registry.host}/sampan/roundtrip@{img.digest}", store3)
    assert res.manifest_digest == img.digest and store3.content.has(img.layers[-1][0])
    assert res.reference == f"{plain_registry.host}/sampan/roundtrip@{img.digest}"
    store3.close()
    with Registry(plain_registry.host) as r:
        assert r.tags("sampan/roundtrip") == ["v1", "v2"]
        assert r.head_manifest("sampan/roundtrip", "v1")[0] == img.digest
        assert r.head_manifest("sampan/roundtrip", "nope") is None
        assert r.has_blob("sampan/roundtrip", img.config_digest) is not None
        assert r.has_blob("sampan/roundtrip", sha256(b"nothing")) is None


def test_not_found_errors(plain_registry, store, store2):
    with pytest.raises(NotFound) as ei:
        pull(f"{plain_registry.host}/sampan/never-pushed:v1", store2)
    assert str(ei.value).startswith(("manifest unknown:", "name unknown:"))
    img = build_image(store, layer_sizes=(100,))
    push(f"{plain_registry.host}/sampan/nf:v1", store, img.manifest, img.media_type)
    with pytest.raises(NotFound) as ei:
        pull(f"{plain_registry.host}/sampan/nf:v2", store2)
    assert str(ei.value) == f"manifest unknown: {plain_registry.host}/sampan/nf:v2"


def test_push_missing_local_blob(plain_registry, store):
    img = build_image(store, layer_sizes=(100,))
    store.delete(img.layers[0][0])
    with pytest.raises(NotFound, match="not in the local store"):
        push(f"{plain_registry.host}/sampan/missing:v1", store, img.manifest, img.media_type)


def test_chunked_upload(plain_registry, store, store2):
    img = build_image(store, oci=True, layer_sizes=(1_000_000, 300))
    ref = f"{plain_registry.host}/sampan/chunked:v1"
    before = len(plain_registry.access_log())
    with Registry(plain_registry.host, chunk_size=256 * 1024) as r:
        assert registry.push_manifest(r, ref, store, img.manifest, img.media_type) == img.digest
    log = plain_registry.access_log()[before:]
    patches = [x for x in log if x["method"] == "PATCH" and "/sampan/chunked/blobs/uploads/" in x["path"]]
    assert len(patches) == 4 and all(x["status"] == 202 for x in patches)
    res = pull(ref, store2)
    assert res.manifest_digest == img.digest
    assert_same_blobs(store, store2, img.blobs)


def test_cross_repository_mount(plain_registry, store):
    img = build_image(store, layer_sizes=(5000, 6000))
    push(f"{plain_registry.host}/sampan/mount-src:v1", store, img.manifest, img.media_type)
    before = len(plain_registry.access_log())
    ev = Events()
    push(f"{plain_registry.host}/sampan/mount-dst:v1", store, img.manifest, img.media_type, progress=ev,
                  mount_from=[f"{plain_registry.host}/sampan/mount-src"])
    assert ev.kinds().count("mounted") == 3 and "start" not in ev.kinds()
    log = plain_registry.access_log()[before:]
    mounts = [x for x in log if x["method"] == "POST" and "mount=" in x["path"]]
    assert len(mounts) == 3 and all(x["status"] == 201 for x in mounts)
    assert not [x for x in log if x["method"] in ("PUT", "PATCH") and "/blobs/uploads/" in x["path"]]
    # a hint that does not hold the blob falls back to an upload in the same session
    img2 = build_image(store, layer_sizes=(7000,))
    ev = Events()
    push(f"{plain_registry.host}/sampan/mount-dst2:v1", store, img2.manifest, img2.media_type,
                  progress=ev, mount_from={img2.layers[0][0]: ["sampan/mount-src"]})
    assert "mounted" not in ev.kinds() and ev.kinds().count("done") == 2


def test_manifest_list_platform_selection(plain_registry, store, store2):
    amd = build_image(store, layer_sizes=(3000,), arch="amd64", seed=b"amd")
    arm = build_image(store, layer_sizes=(4000,), arch="arm64", variant="v8", seed=b"arm")
    index, mt = build_index(store, [(amd, {"os": "linux", "architecture": "amd64"}),
                                    (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"})])
    ref = f"{plain_registry.host}/sampan/multi:v1"
    assert push(ref, store, index, mt) == sha256(index)

    res = pull(ref, store2, platform="linux/arm64")
    assert res.manifest_digest == arm.digest and res.image_id == arm.config_digest
    assert res.digest == sha256(index) and store2.content.read(res.digest) == index
    assert store2.content.has(arm.layers[0][0]) and not store2.content.has(amd.layers[0][0])
    assert store2.resolve(res.image_id).config["architecture"] == "arm64"

    res = pull(ref, store2)   # the host's platform
    if platforms.host() == platforms.parse("linux/amd64"):
        assert res.manifest_digest == amd.digest and store2.content.has(amd.layers[0][0])
    res = pull(f"{plain_registry.host}/sampan/multi@{sha256(index)}", store2,
               platform=platforms.Platform("linux", "aarch64"))
    assert res.manifest_digest == arm.digest

    with pytest.raises(NotFound, match="no matching manifest for linux/s390x in the manifest list entries"):
        pull(ref, store2, platform="linux/s390x")


def test_interrupted_pull_records_nothing(plain_registry, store, store2):
    img = build_image(store, oci=True, layer_sizes=(8 << 20,), random_data=True)
    big, _, size = img.layers[0]
    ref = f"{plain_registry.host}/sampan/resume:v1"
    push(ref, store, img.manifest, img.media_type)

    class Stop(Exception):
        pass

    def stop_midway(event, digest, done, total):
        if digest == big and event == "progress" and done >= 3 << 20:
            raise Stop()

    with pytest.raises(Stop):
        pull(ref, store2, progress=stop_midway)
    assert not store2.content.has(big) and not store2.list()
    assert not os.listdir(store2.content.ingest_dir)
    res = pull(ref, store2)
    assert res.manifest_digest == img.digest and store2.content.read(big) == store.read(big)


def test_lost_connection_resumes_with_range(fake_registry, store, store2):
    img = _serve_image(fake_registry, store, "x/app", "v1", layer_sizes=(1000, 3 << 20))
    d, _, size = img.layers[1]
    fake_registry.cut[d] = 1 << 20
    ev = Events()
    with Registry(fake_registry.host, backoff=0.01) as r:
        res = registry.pull(store2, f"{fake_registry.host}/x/app:v1", registry=r, progress=ev)
        downloaded = r.stats["downloaded"]
    assert res.manifest_digest == img.digest
    assert_same_blobs(store, store2, img.blobs)
    gets = [h.get("Range") for m, p, h in fake_registry.requests if m == "GET" and p.endswith(d)]
    assert gets[0] is None and gets[1].startswith("bytes=") and int(gets[1][6:-1]) >= 1 << 20
    assert downloaded == sum(s for _, _, s in img.layers) + store.size(img.config_digest)


@needs_skopeo
def test_skopeo_pulls_what_we_push(plain_registry, store, tmp_path):
    img = build_image(store, oci=True, layer_sizes=(3000, 70_000))
    ref = f"{plain_registry.host}/sampan/to-skopeo:v1"
    push(ref, store, img.manifest, img.media_type)
    p = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.encode() == img.manifest
    out = tmp_path / "oci"
    p = skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}:v1")
    assert p.returncode == 0, p.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == img.digest
    for d in img.blobs:
        assert (out / "blobs" / "sha256" / d.split(":")[1]).read_bytes() == store.read(d)

    # a Docker v2 schema 2 image, kept as is by skopeo's dir: transport
    img2 = build_image(store, layer_sizes=(3000,))
    ref2 = f"{plain_registry.host}/sampan/to-skopeo:docker"
    push(ref2, store, img2.manifest, img2.media_type)
    p = skopeo("copy", "--src-tls-verify=false", f"docker://{ref2}", f"dir:{tmp_path / 'dir'}")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "dir" / "manifest.json").read_bytes() == img2.manifest


@needs_skopeo
def test_we_pull_what_skopeo_pushes(plain_registry, store, store2, tmp_path):
    img = build_image(store, oci=True, layer_sizes=(5000, 20_000))
    layout = str(tmp_path / "layout")
    write_oci_layout(store, layout, img, "v1")
    ref = f"{plain_registry.host}/sampan/from-skopeo:v1"
    p = skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}")
    assert p.returncode == 0, p.stderr
    res = pull(ref, store2)
    assert res.image_id == img.config_digest
    assert [d for d, _, _ in pulled_layers(store2, res)] == [d for d, _, _ in img.layers]
    assert res.manifest_digest == sha256(store2.content.read(res.manifest_digest))
    assert_same_blobs(store, store2, img.blobs)


@needs_skopeo
def test_skopeo_multiarch_pull_of_our_index(plain_registry, store, tmp_path):
    amd = build_image(store, oci=True, layer_sizes=(1000,), arch="amd64", seed=b"a")
    arm = build_image(store, oci=True, layer_sizes=(1000,), arch="arm64", variant="v8", seed=b"b")
    index, mt = build_index(store, [(amd, {"os": "linux", "architecture": "amd64"}),
                                    (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"})], oci=True)
    ref = f"{plain_registry.host}/sampan/skopeo-multi:v1"
    push(ref, store, index, mt)
    p = skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'all'}:v1")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "all" / "index.json").read_text())["manifests"][0]["digest"] == sha256(index)


# ---------------------------------------------------------------------------------------------
# htpasswd basic auth

def test_basic_auth(basic_registry, store, store2, config_dir):
    img = build_image(store, layer_sizes=(1000,))
    ref = f"{basic_registry.host}/sampan/basic:v1"
    with Registry(basic_registry.host) as r:
        assert r.ping() == "basic"
    with pytest.raises(Unauthorized) as ei:
        push(ref, store, img.manifest, img.media_type)
    assert str(ei.value) == "unauthorized: authentication required"
    with pytest.raises(Unauthorized) as ei:
        push(ref, store, img.manifest, img.media_type, credentials=(USER, "wrong"))
    assert str(ei.value) == "unauthorized: incorrect username or password"
    assert push(ref, store, img.manifest, img.media_type, credentials=(USER, PASSWORD)) == img.digest
    # credentials from the config file
    from sampan.image import credentials
    credentials.store(basic_registry.host, USER, PASSWORD)
    res = pull(ref, store2)
    assert res.manifest_digest == img.digest


@needs_skopeo
def test_skopeo_with_basic_auth(basic_registry, store, tmp_path):
    img = build_image(store, layer_sizes=(1000,))
    ref = f"{basic_registry.host}/sampan/basic-skopeo:v1"
    push(ref, store, img.manifest, img.media_type, credentials=(USER, PASSWORD))
    p = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{ref}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.encode() == img.manifest


# ---------------------------------------------------------------------------------------------
# TLS with a test CA

def test_tls_untrusted_ca(tls_registry, config_dir):
    with Registry(tls_registry.host, credentials=(USER, PASSWORD), retries=0) as r:
        with pytest.raises(ConnectionFailed) as ei:
            r.ping()
    assert str(ei.value).startswith(f"tls: certificate verify failed for {tls_registry.host}")
    assert "\n" not in str(ei.value)


def test_tls_certs_d(tls_registry, store, store2, config_dir):
    d = os.path.join(config_dir, "certs.d", tls_registry.host)
    os.makedirs(d)
    shutil.copy(tls_registry.ca, os.path.join(d, "ca.crt"))
    img = build_image(store, layer_sizes=(1000, 5000))
    ref = f"{tls_registry.host}/sampan/tls:v1"
    with Registry(tls_registry.host, credentials=(USER, PASSWORD)) as r:
        assert r.ping() == "basic" and r.scheme == "https"
        assert registry.push_manifest(r, ref, store, img.manifest, img.media_type) == img.digest
        assert registry.pull(store2, ref, registry=r).manifest_digest == img.digest


def test_tls_explicit_ca_and_insecure(tls_registry, store, config_dir):
    img = build_image(store, layer_sizes=(1000,))
    ref = f"{tls_registry.host}/sampan/tls2:v1"
    push(ref, store, img.manifest, img.media_type, credentials=(USER, PASSWORD), ca_file=tls_registry.ca)
    # --insecure-registry: TLS without verification
    with Registry(tls_registry.host, credentials=(USER, PASSWORD), insecure=[tls_registry.host]) as r:
        assert r.scheme == "https"
        assert r.head_manifest("sampan/tls2", "v1")[0] == img.digest


# ---------------------------------------------------------------------------------------------
# Token auth (Docker Hub's scheme)

def test_token_auth_push_pull(token_registry, store, store2, config_dir):
    issuer = token_registry.token_server
    img = build_image(store, layer_sizes=(1000, 2000, 3000))
    ref = f"{token_registry.host}/sampan/tok:v1"
    with Registry(token_registry.host) as r:
        assert r.ping() == "bearer"
    n0 = len(issuer.requests)
    with Registry(token_registry.host, credentials=(USER, PASSWORD)) as r:
        assert registry.push_manifest(r, ref, store, img.manifest, img.media_type) == img.digest
    reqs = issuer.requests[n0:]
    assert reqs and all(x["user"] == USER and x["service"] == "sampan-test-registry" for x in reqs)
    assert ["repository:sampan/tok:pull,push"] in [x["scopes"] for x in reqs]
    assert len(reqs) <= 3          # tokens are cached per scope, not fetched per request
    n1 = len(issuer.requests)
    with Registry(token_registry.host, credentials=(USER, PASSWORD)) as r:
        res = registry.pull(store2, ref, registry=r)
    assert res.manifest_digest == img.digest
    assert_same_blobs(store, store2, img.blobs)
    assert len(issuer.requests) - n1 == 1


def test_token_auth_errors(token_registry, store, config_dir):
    img = build_image(store, layer_sizes=(1000,))
    ref = f"{token_registry.host}/sampan/tok-private:v1"
    with pytest.raises(Unauthorized) as ei:
        push(ref, store, img.manifest, img.media_type, credentials=(USER, "wrong"))
    assert str(ei.value).startswith("unauthorized: ") and "incorrect username or password" in str(ei.value)
    push(ref, store, img.manifest, img.media_type, credentials=(USER, PASSWORD))
    with pytest.raises(Unauthorized) as ei:
        pull(ref, ImageStore(str(store.root) + "-anon"))
    assert str(ei.value) == "unauthorized: authentication required"


def test_token_anonymous_public_pull_and_mount(token_registry, store, config_dir):
    img = build_image(store, layer_sizes=(1000, 1500))
    pub = f"{token_registry.host}/public/app:v1"
    push(pub, store, img.manifest, img.media_type, credentials=(USER, PASSWORD))
    res = pull(pub, ImageStore(str(store.root) + "-anon"))   # anonymous token, pull scope
    assert res.manifest_digest == img.digest
    ev = Events()
    issuer = token_registry.token_server
    n0 = len(issuer.requests)
    push(f"{token_registry.host}/sampan/mounted:v1", store, img.manifest, img.media_type,
                  credentials=(USER, PASSWORD), mount_from=["public/app"], progress=ev)
    assert ev.kinds().count("mounted") == 3
    assert any(sorted(x["scopes"]) == ["repository:public/app:pull", "repository:sampan/mounted:pull,push"]
               for x in issuer.requests[n0:])


# ---------------------------------------------------------------------------------------------
# Scripted failures (fake registry)

def _serve_image(fake: FakeRegistry, store, name: str, tag: str, layer_sizes=(1000, 3000)):
    img = build_image(store, layer_sizes=layer_sizes)
    fake.manifests[(name, tag)] = (img.manifest, img.media_type)
    fake.manifests[(name, img.digest)] = (img.manifest, img.media_type)
    for d in img.blobs:
        fake.blobs[d] = store.read(d)
    return img


def test_retries_on_5xx_and_429(fake_registry, store, store2):
    img = _serve_image(fake_registry, store, "x/app", "v1")
    fake_registry.fail["/v2/x/app/manifests/v1"] = [503, 429]
    fake_registry.fail[f"/v2/x/app/blobs/{img.layers[1][0]}"] = [500]
    with Registry(fake_registry.host, backoff=0.01) as r:
        res = registry.pull(store2, f"{fake_registry.host}/x/app:v1", registry=r)
    assert res.manifest_digest == img.digest
    assert_same_blobs(store, store2, img.blobs)
    fake_registry.fail["/v2/x/app/manifests/v1"] = [503] * 5
    with Registry(fake_registry.host, backoff=0.01, retries=2) as r:
        with pytest.raises(RegistryError) as ei:
            r.get_manifest("x/app", "v1")
    assert str(ei.value) == "unavailable: try again" and ei.value.status == 503
    assert fake_registry.fail["/v2/x/app/manifests/v1"] == [503, 503]   # 1 try + 2 retries


def test_manifest_digest_verified(fake_registry, store, store2):
    img = _serve_image(fake_registry, store, "x/app", "v1")
    wrong = sha256(b"something else")
    fake_registry.manifests[("x/app", wrong)] = (img.manifest, img.media_type)
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        pull(f"{fake_registry.host}/x/app@{wrong}", store2)


def test_blob_digest_verified(fake_registry, store, store2):
    img = _serve_image(fake_registry, store, "x/app", "v1")
    bad = img.layers[1][0]
    other = build_image(store, layer_sizes=(3000,))
    fake_registry.blobs[bad] = store.read(other.layers[0][0])     # a good layer, but not this one
    with pytest.raises(DigestMismatch):
        pull(f"{fake_registry.host}/x/app:v1", store2, max_concurrent=1)
    assert not store2.content.has(bad) and not store2.list()
    assert not os.listdir(store2.content.ingest_dir)


def test_upload_relative_location_chunked(fake_registry, store):
    img = build_image(store, layer_sizes=(100_000, 10))
    with Registry(fake_registry.host, chunk_size=30_000) as r:
        assert registry.push_manifest(r, f"{fake_registry.host}/x/up:v1", store, img.manifest, img.media_type) is not None
    for d in img.blobs:
        assert fake_registry.blobs[d] == store.read(d)
    patches = [p for m, p, _ in fake_registry.requests if m == "PATCH"]
    assert len(patches) == 4
    ranges = [h.get("Content-Range") for m, _, h in fake_registry.requests if m == "PATCH"]
    assert set(ranges) >= {"0-29999", "30000-59999"}


def test_cancelled_by_keyboard_interrupt(plain_registry, store, store2):
    img = build_image(store, oci=True, layer_sizes=(3 << 20, 3 << 20, 3 << 20))
    ref = f"{plain_registry.host}/sampan/interrupt:v1"
    push(ref, store, img.manifest, img.media_type)

    def interrupt(event, digest, done, total):
        if event == "progress" and done >= 1 << 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(ref, store2, progress=interrupt)
    assert not store2.list()
    res = pull(ref, store2)
    assert res.manifest_digest == img.digest
    assert_same_blobs(store, store2, img.blobs)


def test_chunked_upload_resumes_after_failed_chunk(fake_registry, store):
    img = build_image(store, layer_sizes=(100_000,))
    fake_registry.patch_fail[2] = 503
    with Registry(fake_registry.host, chunk_size=30_000, backoff=0.01) as r:
        registry.push_manifest(r, f"{fake_registry.host}/x/up:v1", store, img.manifest, img.media_type)
    assert fake_registry.blobs[img.layers[0][0]] == store.read(img.layers[0][0])
    ranges = [h.get("Content-Range") for m, _, h in fake_registry.requests if m == "PATCH"]
    size = img.layers[0][2]
    assert ranges[:4] == ["0-29999", "30000-59999", "30000-59999", "60000-89999"]   # the failed chunk again
    assert ranges[4:] == [f"90000-{size - 1}"]
    assert [m for m, p, _ in fake_registry.requests if "/uploads/" in p and m == "GET"]
