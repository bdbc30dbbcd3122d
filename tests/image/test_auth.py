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
from sampan.image import auth, registry
from sampan.image.content import ContentStore
from sampan.image.registry import Unauthorized


def read_config(config_dir: str) -> dict:
    with open(os.path.join(config_dir, "config.json")) as f:
        return json.load(f)


def test_store_lookup_erase(config_dir):
    assert auth.lookup("127.0.0.1:5000") is None
    assert auth.store("127.0.0.1:5000", "me", "p:ss word") == "127.0.0.1:5000"
    path = os.path.join(config_dir, "config.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = read_config(config_dir)
    assert doc == {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"me:p:ss word").decode()}}}
    assert auth.lookup("127.0.0.1:5000") == ("me", "p:ss word")
    assert auth.lookup("https://127.0.0.1:5000/v2/") == ("me", "p:ss word")
    assert auth.lookup("127.0.0.1:5001") is None
    assert auth.erase("127.0.0.1:5000") is True
    assert auth.erase("127.0.0.1:5000") is False
    assert read_config(config_dir) == {"auths": {}}
    assert sorted(os.listdir(config_dir)) == ["config.json"]      # no temporary files left


def test_docker_hub_key(config_dir):
    assert auth.store("docker.io", "u", "p") == "https://index.docker.io/v1/"
    assert list(read_config(config_dir)["auths"]) == ["https://index.docker.io/v1/"]
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"):
        assert auth.lookup(name) == ("u", "p")
    assert auth.logout("index.docker.io") is True
    assert auth.lookup("docker.io") is None


def test_keeps_other_settings_and_reads_docker_forms(config_dir):
    path = os.path.join(config_dir, "config.json")
    with open(path, "w") as f:
        json.dump({"auths": {"https://ghcr.io": {"auth": base64.b64encode(b"a:b").decode()},
                             "quay.io": {"username": "q", "password": "w"}},
                   "HttpHeaders": {"X-Meta": "1"}, "psFormat": "table"}, f)
    assert auth.lookup("ghcr.io") == ("a", "b")
    assert auth.lookup("quay.io") == ("q", "w")
    auth.store("example.com", "x", "y")
    doc = read_config(config_dir)
    assert doc["HttpHeaders"] == {"X-Meta": "1"} and doc["psFormat"] == "table"
    assert set(doc["auths"]) == {"https://ghcr.io", "quay.io", "example.com"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_config_location(tmp_path, monkeypatch):
    monkeypatch.delenv("SAMPAN_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert auth.config_path() == str(tmp_path / ".sampan" / "config.json")
    auth.store("r.example:443", "u", "p")
    assert stat.S_IMODE(os.stat(tmp_path / ".sampan").st_mode) == 0o700
    assert auth.lookup("r.example:443") == ("u", "p")
    other = tmp_path / "elsewhere"
    assert auth.lookup("r.example:443", str(other)) is None
    monkeypatch.setenv("SAMPAN_CONFIG", str(other))
    assert auth.config_path() == str(other / "config.json")


def test_invalid_config(config_dir):
    with open(os.path.join(config_dir, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(auth.CredentialsError, match="invalid JSON"):
        auth.lookup("x.io")
    with pytest.raises(auth.CredentialsError):
        auth.store("x.io", "", "p")


def test_login_basic(basic_registry, config_dir, tmp_path):
    host = basic_registry.host
    with pytest.raises(Unauthorized) as ei:
        auth.login(host, USER, "wrong")
    assert str(ei.value).startswith("unauthorized: ") and "\n" not in str(ei.value)
    assert not os.path.exists(os.path.join(config_dir, "config.json"))

    assert auth.login(host, USER, PASSWORD) == host
    assert auth.lookup(host) == (USER, PASSWORD)
    # the stored credentials are used by push and pull
    store = ContentStore(str(tmp_path / "s"))
    img = build_image(store, layer_sizes=(500,))
    assert registry.push(f"{host}/sampan/login:v1", store, img.manifest, img.media_type) == img.digest

    assert auth.logout(host) is True
    assert auth.logout(host) is False
    with pytest.raises(Unauthorized, match="^unauthorized: authentication required$"):
        registry.pull(f"{host}/sampan/login:v1", ContentStore(str(tmp_path / "s2")))


def test_login_token(token_registry, config_dir):
    host = token_registry.host
    with pytest.raises(Unauthorized) as ei:
        auth.login(host, USER, "wrong")
    assert str(ei.value) == "unauthorized: incorrect username or password"
    assert auth.lookup(host) is None
    assert auth.login(host, USER, PASSWORD) == host
    assert auth.lookup(host) == (USER, PASSWORD)


def test_login_tls_and_plain(tls_registry, plain_registry, config_dir):
    d = os.path.join(config_dir, "certs.d", tls_registry.host)
    os.makedirs(d)
    shutil.copy(tls_registry.ca, os.path.join(d, "ca.crt"))
    with pytest.raises(Unauthorized):
        auth.login(tls_registry.host, USER, "nope")
    auth.login(tls_registry.host, USER, PASSWORD)
    assert auth.lookup(tls_registry.host) == (USER, PASSWORD)
    # a registry without auth accepts any login, as with docker
    auth.login(plain_registry.host, "anyone", "anything")
    assert auth.lookup(plain_registry.host) == ("anyone", "anything")
