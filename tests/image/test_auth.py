"""Credentials: Docker-compatible config.json, login checked against real registries, logout."""
from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # registry_fixtures, also if tests/ becomes a package
from registry_fixtures import *  # noqa: E402,F401,F403 - fixtures and helpers
from registry_fixtures import PASSWORD, USER, build_image
from sampan.image import credentials, registry
from sampan.image.registry import Registry, Unauthorized
from sampan.image.store import ImageStore


def read_config(config_dir: str) -> dict:
    with open(os.path.join(config_dir, "config.json")) as f:
        return json.load(f)


def test_store_lookup_erase(config_dir):
    assert credentials.lookup("127.0.0.1:5000") is None
    assert credentials.store("127.0.0.1:5000", "me", "p:ss word") == "127.0.0.1:5000"
    path = os.path.join(config_dir, "config.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = read_config(config_dir)
    assert doc == {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"me:p:ss word").decode()}}}
    assert credentials.lookup("127.0.0.1:5000") == ("me", "p:ss word")
    assert credentials.lookup("https://127.0.0.1:5000/v2/") == ("me", "p:ss word")
    assert credentials.lookup("127.0.0.1:5001") is None
    assert credentials.erase("127.0.0.1:5000") is True
    assert credentials.erase("127.0.0.1:5000") is False
    assert read_config(config_dir) == {"auths": {}}
    assert sorted(os.listdir(config_dir)) == ["config.json"]      # no temporary files left


def test_docker_hub_key(config_dir):
    assert credentials.store("docker.io", "u", "p") == "https://index.docker.io/v1/"
    assert list(read_config(config_dir)["auths"]) == ["https://index.docker.io/v1/"]
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"):
        assert credentials.lookup(name) == ("u", "p")
    assert credentials.erase("index.docker.io") is True
    assert credentials.lookup("docker.io") is None


def test_keeps_other_settings_and_reads_docker_forms(config_dir):
    path = os.path.join(config_dir, "config.json")
    with open(path, "w") as f:
        json.dump({"auths": {"https://ghcr.io": {"auth": base64.b64encode(b"a:b").decode()},
                             "quay.io": {"username": "q", "password": "w"}},
                   "HttpHeaders": {"X-Meta": "1"}, "psFormat": "table"}, f)
    assert credentials.lookup("ghcr.io") == ("a", "b")
    assert credentials.lookup("quay.io") == ("q", "w")
    credentials.store("example.com", "x", "y")
    doc = read_config(config_dir)
    assert doc["HttpHeaders"] == {"X-Meta": "1"} and doc["psFormat"] == "table"
    assert set(doc["auths"]) == {"https://ghcr.io", "quay.io", "example.com"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_config_location(tmp_path, monkeypatch):
    monkeypatch.delenv("SAMPAN_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials.config_path() == str(tmp_path / ".sampan" / "config.json")
    credentials.store("r.example:443", "u", "p")
    assert stat.S_IMODE(os.stat(tmp_path / ".sampan").st_mode) == 0o700
    assert credentials.lookup("r.example:443") == ("u", "p")
    other = tmp_path / "elsewhere"
    assert credentials.lookup("r.example:443", str(other)) is None
    monkeypatch.setenv("SAMPAN_CONFIG", str(other))
    assert credentials.config_path() == str(other / "config.json")


def test_invalid_config(config_dir):
    with open(os.path.join(config_dir, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(credentials.CredentialsError, match="invalid JSON"):
        credentials.lookup("x.io")
    with pytest.raises(credentials.CredentialsError):
        credentials.store("x.io", "", "p")


def test_login_basic(basic_registry, config_dir, tmp_path):
    host = basic_registry.host
    with pytest.raises(Unauthorized) as ei:
        registry.login(host, USER, "wrong")
    assert str(ei.value).startswith("unauthorized: ") and "\n" not in str(ei.value)
    assert not os.path.exists(os.path.join(config_dir, "config.json"))

    assert registry.login(host, USER, PASSWORD) == host
    assert credentials.lookup(host) == (USER, PASSWORD)
    # the stored credentials are used by push and pull
    images = ImageStore(str(tmp_path / "s"))
    img = build_image(images.content, layer_sizes=(500,))
    with Registry(host) as r:
        assert registry.push_manifest(r, f"{host}/sampan/login:v1", images.content, img.manifest,
                                      img.media_type) == img.digest
    assert registry.pull(images, f"{host}/sampan/login:v1").manifest_digest == img.digest

    assert credentials.erase(host) is True
    assert credentials.erase(host) is False
    with pytest.raises(Unauthorized, match="^unauthorized: authentication required$"):
        registry.pull(images, f"{host}/sampan/login:v1")
    images.close()


def test_login_token(token_registry, config_dir):
    host = token_registry.host
    with pytest.raises(Unauthorized) as ei:
        registry.login(host, USER, "wrong")
    assert str(ei.value) == "unauthorized: incorrect username or password"
    assert credentials.lookup(host) is None
    assert registry.login(host, USER, PASSWORD) == host
    assert credentials.lookup(host) == (USER, PASSWORD)


def test_login_tls_and_plain(tls_registry, plain_registry, config_dir):
    d = os.path.join(config_dir, "certs.d", tls_registry.host)
    os.makedirs(d)
    shutil.copy(tls_registry.ca, os.path.join(d, "ca.crt"))
    with pytest.raises(Unauthorized):
        registry.login(tls_registry.host, USER, "nope")
    registry.login(tls_registry.host, USER, PASSWORD)
    assert credentials.lookup(tls_registry.host) == (USER, PASSWORD)
    # a registry without auth accepts any login, as with docker
    registry.login(plain_registry.host, "anyone", "anything")
    assert credentials.lookup(plain_registry.host) == ("anyone", "anything")


def test_decode_registry_auth():
    def header(doc) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    assert credentials.decode_registry_auth(None) is None
    assert credentials.decode_registry_auth("") is None
    assert credentials.decode_registry_auth(header({})) is None
    assert credentials.decode_registry_auth(header({"username": "u", "password": "p?>~",
                                                    "serveraddress": "x"})) == ("u", "p?>~")
    auth = base64.b64encode(b"me:pa:ss").decode()
    assert credentials.decode_registry_auth(header({"auth": auth})) == ("me", "pa:ss")
    with pytest.raises(credentials.CredentialsError, match="^invalid X-Registry-Auth header"):
        credentials.decode_registry_auth("not base64 json")
