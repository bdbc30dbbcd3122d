"""Registry credentials and certificates on the client side, stored like Docker's config.json: `{"auths": {HOST: {"auth": b64(user:pass)}}}`.

The file is `$SAMPAN_CONFIG/config.json` (default `~/.sampan/config.json`), rewritten
atomically with mode 0600; keys other than the entries we change are kept as they were.
Docker Hub's entry is keyed `https://index.docker.io/v1/` as Docker does.
"""
from __future__ import annotations

import os

from .. import errors

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


class CredentialsError(errors.Invalid):
    """The config file or an entry of it is unreadable, or the credentials given are invalid."""


def config_dir(override: str | None = None) -> str:
    if override:
        return override
    env = os.environ.get("SAMPAN_CONFIG")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".sampan")


def config_path(directory: str | None = None) -> str:
    return os.path.join(config_dir(directory), "config.json")


def certs_dir(host: str, directory: str | None = None) -> str:
    """`<config dir>/certs.d/<host>`: `*.crt` are CAs, `*.cert` + `*.key` a client certificate."""
    return os.path.join(config_dir(directory), "certs.d", host)


def normalize_host(host: str) -> str:
    """The key a host is stored under: `host[:port]`, or Docker Hub's legacy URL."""
    h = host.strip()
    for scheme in ("https://", "http://"):
        if h.startswith(scheme):
            h = h[len(scheme):]
            break
    h = h.split("/", 1)[0].lower()
    if not h:
        raise CredentialsError(f"invalid registry address {host!r}")
    if h in _HUB_NAMES:
        return DOCKER_HUB_KEY
    return h


def _load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    if not data.strip():
        return {}
    import json
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CredentialsError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{path}: not a JSON object")
    return doc


def _save(path: str, doc: dict) -> None:
    import json
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = (json.dumps(doc, indent="\t") + "\n").encode()
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


def _key_candidates(host: str) -> list[str]:
    key = normalize_host(host)
    if key == DOCKER_HUB_KEY:
        return [key, "index.docker.io", "docker.io", "registry-1.docker.io", "https://index.docker.io/v1"]
    return [key, "https://" + key, "http://" + key, "https://" + key + "/v1/", "https://" + key + "/v2/"]


def lookup(host: str, directory: str | None = None) -> tuple[str, str] | None:
    """(username, password) stored for `host`, or None."""
    auths = _load(config_path(directory)).get("auths") or {}
    if not isinstance(auths, dict):
        return None
    for key in _key_candidates(host):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            import base64
            try:
                raw = base64.b64decode(entry["auth"]).decode()
            except (ValueError, UnicodeDecodeError):
                raise CredentialsError(f"invalid auth entry for {key} in {config_path(directory)}") from None
            user, sep, password = raw.partition(":")
            if not sep:
                raise CredentialsError(f"invalid auth entry for {key} in {config_path(directory)}")
            return user, password
        if entry.get("username") is not None and entry.get("password") is not None:
            return entry["username"], entry["password"]
    return None


def store(host: str, username: str, password: str, directory: str | None = None) -> str:
    """Save credentials for `host` (no check against the registry); returns the key used."""
    if not username:
        raise CredentialsError("username is required")
    if ":" in username:
        raise CredentialsError("username must not contain ':'")
    path = config_path(directory)
    doc = _load(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        auths = doc["auths"] = {}
    key = normalize_host(host)
    import base64
    auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _save(path, doc)
    return key


def erase(host: str, directory: str | None = None) -> bool:
    """Remove the credentials for `host`; False when there were none."""
    path = config_path(directory)
    doc = _load(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return False
    removed = False
    for key in _key_candidates(host):
        if key in auths:
            del auths[key]
            removed = True
    if removed:
        _save(path, doc)
    return removed


def decode_registry_auth(header: str | None) -> tuple[str, str] | None:
    """(username, password) from an ``X-Registry-Auth`` header (base64url JSON of docker's
    AuthConfig: ``username``/``password``, or ``auth`` = b64(user:pass)); None when empty."""
    if not header or not header.strip():
        return None
    import base64
    import json
    text = header.strip()
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        raise CredentialsError("invalid X-Registry-Auth header: not base64-encoded JSON") from None
    if not isinstance(doc, dict):
        raise CredentialsError("invalid X-Registry-Auth header: not a JSON object")
    if doc.get("username"):
        return str(doc["username"]), str(doc.get("password") or "")
    if doc.get("auth"):
        try:
            user, sep, password = base64.b64decode(doc["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if not sep:
            raise CredentialsError("invalid X-Registry-Auth header: bad auth field")
        return user, password
    return None
