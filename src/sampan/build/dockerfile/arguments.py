"""The shapes of instruction arguments: builder flags (BuildKit's BFlags), RUN --mount
values, quote-keeping word splitting for ENV/LABEL/ARG, `KEY value` / `k=v` pairs, and Go
durations for HEALTHCHECK. commands.py builds the typed commands from them."""
from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from typing import Any

from sampan.build.dockerfile.parser import SPACES, Instruction
from sampan.build.dockerfile.shell import DockerfileError

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
MOUNT_SHARING = ("shared", "private", "locked")


# --- flags ---------------------------------------------------------------------------------------

BOOL, STRING, STRINGS = "bool", "string", "strings"


def check_flags(ins: Instruction, spec: Mapping[str, str]) -> dict[str, Any]:
    """The instruction's flags checked against `spec` (name → kind), as BuildKit's BFlags:
    bools default False, strings None, repeatable strings []."""
    values: dict[str, Any] = {n: False if k == BOOL else [] if k == STRINGS else None for n, k in spec.items()}
    seen: set[str] = set()
    for name, value in ins.flags:
        kind = spec.get(name)
        if kind is None:
            raise DockerfileError(f"unknown flag: {name}", ins.line)
        if name in seen and kind != STRINGS:
            raise DockerfileError(f"duplicate flag specified: {name}", ins.line)
        seen.add(name)
        if kind == BOOL:
            if value == "":
                raise DockerfileError(f"missing a value on flag: {name}", ins.line)
            if value is not None and value.lower() not in ("true", "false"):
                raise DockerfileError(f"expecting boolean value for flag {name}, not: {value}", ins.line)
            values[name] = value is None or value.lower() == "true"
        elif value is None:
            raise DockerfileError(f"missing a value on flag: {name}", ins.line)
        elif kind == STRINGS:
            values[name].append(value)
        else:
            values[name] = value
    return values


def _parse_bool(key: str, value: str) -> bool:
    # Go's strconv.ParseBool
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise DockerfileError(f"invalid value for {key}: {value}")


def parse_mount(spec: str, expand_value: Callable[[str], str] | None = None) -> dict[str, Any]:
    """One RUN --mount=… value (CSV of key=value) as a dict: type, target, source, from, id,
    sharing, readonly, required, mode, uid, gid, size; BuildKit's rules and defaults."""
    try:
        fields = next(csv.reader([spec]))
    except (csv.Error, StopIteration):
        raise DockerfileError(f"failed to parse csv mounts: {spec}") from None
    mount: dict[str, Any] = {"type": "bind"}
    readonly: bool | None = None
    for item in fields:
        key, eq, value = item.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required" and mount["type"] in ("secret", "ssh"):
                mount["required"] = True
            else:
                raise DockerfileError(f"invalid field '{item}' must be a key=value pair")
            continue
        if expand_value is not None:
            value = expand_value(value)
        if key == "type":
            if value.lower() not in MOUNT_TYPES:
                raise DockerfileError(f"unsupported mount type {value!r}".replace("'", '"'))
            mount["type"] = value.lower()
        elif key in ("from", "id"):
            mount[key] = value
        elif key in ("source", "src"):
            mount["source"] = value
        elif key in ("target", "dst", "destination"):
            mount["target"] = value
        elif key in ("readonly", "ro"):
            readonly = _parse_bool(key, value)
        elif key in ("readwrite", "rw"):
            readonly = not _parse_bool(key, value)
        elif key == "required" and mount["type"] in ("secret", "ssh"):
            mount["required"] = _parse_bool(key, value)
        elif key == "sharing":
            if value.lower() not in MOUNT_SHARING:
                raise DockerfileError(f'unsupported sharing value "{value}"')
            mount["sharing"] = value.lower()
        elif key in ("mode", "uid", "gid", "size"):
            try:
                mount[key] = int(value, 8 if key == "mode" else 10)
            except ValueError:
                raise DockerfileError(f"invalid value {value} for {key}") from None
        elif key == "required":
            raise DockerfileError(f"unexpected key '{key}' for mount type '{mount['type']}'")
        else:
            raise DockerfileError(f"unexpected key '{key}' in '{item}'")
    kind = mount["type"]
    for key in ("mode", "uid", "gid"):
        if key in mount and kind not in ("secret", "ssh", "cache"):
            raise DockerfileError(f'{key} not allowed for "{kind}" type mounts')
    if "sharing" in mount and kind != "cache":
        raise DockerfileError(f"invalid cache sharing set for {kind} mount")
    if "size" in mount and kind != "tmpfs":
        raise DockerfileError(f'size not allowed for "{kind}" type mounts')
    if kind not in ("secret", "ssh") and not mount.get("target"):
        raise DockerfileError(f"mount type {kind} requires a target")
    mount["readonly"] = kind not in ("cache", "tmpfs") if readonly is None else readonly
    return mount


# --- argument shapes -----------------------------------------------------------------------------

def whitespace_words(rest: str) -> list[str]:
    return SPACES.split(rest) if rest else []


def words(rest: str, escape: str) -> list[str]:
    """Words split on unquoted whitespace with quotes and escapes kept (BuildKit's parseWords);
    they are removed when the words are expanded."""
    words: list[str] = []
    word = ""
    quote = ""
    blank_ok = False
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == n:
                    break
                word += ch
                i += 1
                ch = rest[i]
            word += ch
        elif ch.isspace():
            if blank_ok or word:
                words.append(word)
            word, blank_ok = "", False
        else:
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if i + 1 == n:
                    break
                word += ch
                i += 1
                ch = rest[i]
            word += ch
        i += 1
    if blank_ok or word:
        words.append(word)
    return words


def name_values(ins: Instruction) -> list[tuple[str, str]]:
    """ENV and LABEL: `KEY value…` (the old form) or `k=v k2="v 2"…`."""
    keyword = ins.keyword
    found = words(ins.rest, ins.escape)
    if not found:
        raise DockerfileError(f"{keyword} requires at least one argument", ins.line)
    if "=" not in found[0]:
        parts = SPACES.split(ins.rest, maxsplit=1)
        if len(parts) < 2:
            raise DockerfileError(f"{keyword} must have two arguments", ins.line)
        return [(parts[0], parts[1])]
    pairs = []
    for word in found:
        if "=" not in word:
            raise DockerfileError(f"Syntax error - can't find = in \"{word}\". Must be of the form: name=value",
                                  ins.line)
        key, _, value = word.partition("=")
        if not key:
            raise DockerfileError(f"{keyword} names can not be blank", ins.line)
        pairs.append((key, value))
    return pairs


def exactly_one(ins: Instruction) -> str:
    if not ins.rest:
        raise DockerfileError(f"{ins.keyword} requires exactly one argument", ins.line)
    return ins.rest


def cmdline(ins: Instruction) -> tuple[list[str], bool]:
    """The exec form's array, or the shell form's one string (the builder adds SHELL)."""
    if ins.json is not None:
        return list(ins.json), False
    return ([ins.rest] if ins.rest else []), True


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)?")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration ("1m30s", "1.5h", "300ms"), in seconds."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if not match:
            raise ValueError(f'time: invalid duration "{text}"')
        if match.group(2) is None:
            raise ValueError(f'time: missing unit in duration "{text}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return -total if text.startswith("-") else total
