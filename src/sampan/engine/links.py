"""Legacy links on the default bridge (``--link NAME[:ALIAS]``): the linked container's
address under its alias, id and name in /etc/hosts, and the ``ALIAS_PORT_…``/``ALIAS_NAME``/
``ALIAS_ENV_…`` variables, as dockerd's links package makes them at start."""
from __future__ import annotations

import re

from .errors import InvalidParameter
from .netconfig import exposed

_SKIPPED_ENV = ("HOME", "HOSTNAME", "PATH")


def parse(entry: str) -> tuple[str, str]:
    """"db", "db:alias" or dockerd's stored "/db:/web/alias" -> (container, alias)."""
    name, _, alias = entry.partition(":")
    name = name.lstrip("/")
    alias = alias.rsplit("/", 1)[-1] if alias else name
    if not name or not alias:
        raise InvalidParameter(f"invalid link: {entry}")
    return name, alias


def stored(entry: str, container_name: str, target_name: str) -> str:
    """HostConfig.Links as dockerd stores it: "/db:/web/alias"."""
    return f"/{target_name}:/{container_name}/{parse(entry)[1]}"


def _prefix(alias: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", alias).upper()


def env(alias: str, container_name: str, target: dict, ip: str) -> list[str]:
    """The variables the linking container gets for one link."""
    p = _prefix(alias)
    out = [f"{p}_NAME=/{container_name}/{alias}"]
    ports = exposed(target["config"], target["host_config"])
    if ports:
        first, proto = ports[0].split("/")
        out.append(f"{p}_PORT={proto}://{ip}:{first}")
    for key in ports:
        port, proto = key.split("/")
        base = f"{p}_PORT_{port}_{proto.upper()}"
        out += [f"{base}={proto}://{ip}:{port}", f"{base}_ADDR={ip}", f"{base}_PORT={port}", f"{base}_PROTO={proto}"]
    for var in target["config"].get("Env") or []:
        key, sep, value = var.partition("=")
        if sep and key not in _SKIPPED_ENV:
            out.append(f"{p}_ENV_{key}={value}")
    return out


def is_link_var(var: str, aliases: list[str]) -> bool:
    """A variable an earlier start set for one of these links (replaced at each start)."""
    key = var.partition("=")[0]
    return any(key == f"{_prefix(a)}_NAME" or key.startswith((f"{_prefix(a)}_PORT", f"{_prefix(a)}_ENV_"))
               for a in aliases)
