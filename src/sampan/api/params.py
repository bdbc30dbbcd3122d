"""Reading a request (query parameters, filters, times, JSON bodies) and writing JSON answers.

Bad input raises ``errors.Invalid``: the app's middleware turns it into Docker's 400.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from .. import errors, timefmt

JSON = "application/json"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type=JSON)


def json_line(data: Any) -> bytes:
    """One message of a streamed JSON answer (pull, push, load, import, events, stats)."""
    return json.dumps(data).encode() + b"\r\n"


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.lower() not in ("", "0", "false", "no")


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise errors.Invalid(f"invalid value for {name}: {value!r}") from None


def query_json(request: web.Request, name: str, kind: type, what: str | None = None) -> Any:
    """A query parameter holding JSON of type ``kind`` (``kind()`` when unset)."""
    raw = request.query.get(name)
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except ValueError:
        raise errors.Invalid(f"invalid {what or name}: {raw!r}") from None
    if not isinstance(value, kind):
        raise errors.Invalid(f"invalid {what or name}: {raw!r}")
    return value


def query_filters(request: web.Request) -> dict[str, list[str]]:
    """``filters`` as Docker sends it: JSON of name -> list (or the old name -> {value: true})."""
    parsed = query_json(request, "filters", dict, "filter")
    out: dict[str, list[str]] = {}
    for key, value in parsed.items():
        if isinstance(value, dict):
            out[key] = [x for x, on in value.items() if on]
        elif isinstance(value, list):
            out[key] = [str(x) for x in value]
        else:
            out[key] = [str(value)]
    return out


def query_time(request: web.Request, name: str) -> float | None:
    """``since``/``until``: unix seconds, RFC 3339 or a duration ago ("10m"); None when unset."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return timefmt.parse_time_arg(value)
    except ValueError:
        raise errors.Invalid(f"invalid timestamp for {name}: {value!r}") from None


async def read_json_body(request: web.Request) -> Any:
    data = await request.read()
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError as e:
        raise errors.Invalid(f"invalid JSON body: {e}") from None


async def read_json_object(request: web.Request) -> dict:
    body = await read_json_body(request)
    if not isinstance(body, dict):
        raise errors.Invalid("invalid JSON body: not an object")
    return body


def json_header(request: web.Request, name: str) -> Any:
    """A header of base64url JSON (X-Registry-Auth, X-Registry-Config); None when unset.
    Raises ValueError or UnicodeDecodeError for a malformed one."""
    header = request.headers.get(name)
    if not header:
        return None
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))


def auth_config_user(doc: dict) -> tuple[str, str]:
    """(username, password) of a Docker AuthConfig: its fields, or ``auth`` (base64 of
    "user:password")."""
    user, password = doc.get("username") or "", doc.get("password") or ""
    if not user and doc.get("auth"):
        user, _, password = base64.b64decode(doc["auth"]).decode().partition(":")
    return user, password


def registry_auth(request: web.Request) -> tuple[str, str] | None:
    """``X-Registry-Auth``: base64url JSON with username and password (or ``auth``, base64 of
    "user:password"), as the docker CLI and docker-py send it; None when it names no user."""
    try:
        doc = json_header(request, "X-Registry-Auth")
        if doc is None:
            return None
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        user, password = auth_config_user(doc)
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.Invalid(f"invalid X-Registry-Auth header: {e}") from None
    return (user, password) if user else None
