"""``docker login``: check credentials against a registry (what ``POST /auth`` does) and, on
the client side, keep them in docker's config.json."""
from __future__ import annotations

from .. import credentials
from .client import Registry


def check_login(host: str, username: str, password: str, *, insecure: list[str] | tuple[str, ...] = (),
                config_dir: str | None = None, ca_file: str | None = None) -> None:
    """Raise ``Unauthorized`` ("unauthorized: ...") unless the registry takes the credentials."""
    key = credentials.normalize_host(host)
    with Registry("docker.io" if key == credentials.DOCKER_HUB_KEY else key, insecure=insecure,
                  config_dir=config_dir, credentials=(username, password), ca_file=ca_file) as reg:
        reg.check_login()


def login(host: str, username: str, password: str, *, insecure: list[str] | tuple[str, ...] = (),
          config_dir: str | None = None, ca_file: str | None = None) -> str:
    """Check the credentials, then store them; returns the key they are stored under. A wrong
    password stores nothing."""
    check_login(host, username, password, insecure=insecure, config_dir=config_dir, ca_file=ca_file)
    return credentials.store(host, username, password, config_dir)
