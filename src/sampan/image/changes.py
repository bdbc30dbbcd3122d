"""Dockerfile instructions applied to an image config, as `docker import -c` and
`docker commit -c` take them: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL,
USER, VOLUME, WORKDIR."""
from __future__ import annotations

import json
import shlex

from .. import errors

ALLOWED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


class ChangeError(errors.Invalid):
    """A change line that is not one of ALLOWED, or malformed."""


def _json_or_shell(rest: str) -> list[str]:
    """The exec form (a JSON array of strings) as is; the shell form runs under /bin/sh -c."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", rest]


def _pairs(instruction: str, rest: str) -> list[tuple[str, str]]:
    """`K=V K2="V 2"` pairs, or the legacy `K V` form (one pair, the value is the rest)."""
    try:
        words = shlex.split(rest, posix=True)
    except ValueError as e:
        raise ChangeError(f"{instruction}: {e}") from None
    if words and "=" not in words[0]:
        key, _, value = rest.partition(" ")
        if not value.strip():
            raise ChangeError(f"{instruction} requires at least two arguments")
        return [(key, value.strip())]
    out = []
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise ChangeError(f"{instruction}: syntax error - can't find = in {w!r}. Must be of the form: name=value")
        out.append((key, value))
    return out


def apply(config: dict, changes: list[str]) -> dict:
    """Apply each change line to ``config`` (the image config's "config" object); returns it."""
    for line in changes:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        rest = rest.strip()
        if instruction not in ALLOWED:
            raise ChangeError(f"{word} is not a valid change command")
        if not rest:
            raise ChangeError(f"{instruction} requires at least one argument")
        if instruction == "CMD":
            config["Cmd"] = _json_or_shell(rest)
        elif instruction == "ENTRYPOINT":
            config["Entrypoint"] = _json_or_shell(rest)
        elif instruction == "ENV":
            env = [e for e in config.get("Env") or []]
            for key, value in _pairs(instruction, rest):
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            config["Env"] = env
        elif instruction == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(instruction, rest))
            config["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for p in rest.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
            config["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            vols = dict(config.get("Volumes") or {})
            paths = _json_or_shell(rest) if rest.startswith("[") else rest.split()
            if paths[:2] == ["/bin/sh", "-c"]:  # not a valid JSON array: plain words after all
                paths = rest.split()
            for p in paths:
                vols[p] = {}
            config["Volumes"] = vols
        elif instruction == "ONBUILD":
            config["OnBuild"] = [*(config.get("OnBuild") or []), rest]
        elif instruction == "USER":
            config["User"] = rest
        elif instruction == "WORKDIR":
            config["WorkingDir"] = rest
        elif instruction == "STOPSIGNAL":
            config["StopSignal"] = rest
    return config
