"""Registry authentication: the ``WWW-Authenticate`` challenges, bearer tokens per scope
(fetched once however many threads need them, cached until they expire) and basic auth.

Credentials are (user, password), a callable host -> (user, password) | None, or None to
read docker's config.json (``credentials.lookup``).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Union

from .. import credentials as _credentials
from .errors import RegistryError, Unauthorized
from .http import Transport

Credentials = Union[tuple[str, str], Callable[[str], "tuple[str, str] | None"], None]


def parse_challenges(values: list[str]) -> dict[str, dict[str, str]]:
    """`Bearer realm="…",service="…"` (one or more header values) -> {"bearer": {...}}."""
    out: dict[str, dict[str, str]] = {}
    for value in values:
        s, i, n = value, 0, len(value)
        scheme = None
        while i < n:
            while i < n and s[i] in " \t,":
                i += 1
            start = i
            while i < n and s[i] not in " \t=,":
                i += 1
            token = s[start:i]
            j = i
            while j < n and s[j] in " \t":
                j += 1
            if j < n and s[j] == "=" and scheme is not None:
                i = j + 1
                while i < n and s[i] in " \t":
                    i += 1
                if i < n and s[i] == '"':
                    i += 1
                    buf = []
                    while i < n and s[i] != '"':
                        if s[i] == "\\" and i + 1 < n:
                            i += 1
                        buf.append(s[i])
                        i += 1
                    i += 1
                    val = "".join(buf)
                else:
                    start = i
                    while i < n and s[i] not in " \t,":
                        i += 1
                    val = s[start:i]
                out[scheme][token.lower()] = val
            elif token:
                # A new scheme (a bare token not followed by '=').
                scheme = token.lower()
                out.setdefault(scheme, {})
            else:
                i += 1
    return out


def basic_header(creds: tuple[str, str]) -> str:
    import base64
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


class Authenticator:
    """The authentication state of one registry host, shared by all its requests."""

    def __init__(self, transport: Transport, credentials: Credentials) -> None:
        self.http = transport
        self._credentials_arg = credentials
        self._credentials: tuple[str, str] | None = None
        self._credentials_loaded = False
        self.challenges: dict[str, dict[str, str]] = {}     # from the ping, then from 401s
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._token_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._lock = threading.Lock()

    def credentials(self) -> tuple[str, str] | None:
        if not self._credentials_loaded:
            c = self._credentials_arg
            if c is None:
                c = _credentials.lookup(self.http.host, self.http.config_dir)
            elif callable(c):
                c = c(self.http.host)
            self._credentials = (c[0], c[1]) if c else None
            self._credentials_loaded = True
        return self._credentials

    @property
    def scheme(self) -> str:
        """'none', 'basic' or 'bearer': what the registry asked for."""
        auth = self.challenges
        if not auth:
            return "none"
        return "bearer" if "bearer" in auth else "basic" if "basic" in auth else next(iter(auth))

    def authorization(self, scope: tuple[str, ...]) -> str | None:
        auth = self.challenges
        if "bearer" in auth:
            key = tuple(sorted(scope))
            with self._lock:
                cached = self._tokens.get(key)
                flight = self._token_locks.setdefault(key, threading.Lock())
            if cached and cached[1] > time.monotonic():
                return "Bearer " + cached[0]
            with flight:    # one fetch per scope, however many threads need it
                with self._lock:
                    cached = self._tokens.get(key)
                if cached and cached[1] > time.monotonic():
                    return "Bearer " + cached[0]
                return "Bearer " + self.fetch_token(auth["bearer"], key)
        if "basic" in auth:
            creds = self.credentials()
            return basic_header(creds) if creds else None
        return None

    def retry_after_challenge(self, values: list[str], scope: tuple[str, ...]) -> bool:
        """Update auth from a 401's challenge; True when retrying may now succeed."""
        challenges = parse_challenges(values)
        if not challenges:
            return False
        if "bearer" in challenges:
            params = challenges["bearer"]
            extra = tuple(s for s in params.get("scope", "").split(" ") if s)
            key = tuple(sorted(set(scope) | set(extra)))
            with self._lock:
                self.challenges = {"bearer": {k: v for k, v in params.items() if k in ("realm", "service")}}
                self._tokens.pop(tuple(sorted(scope)), None)
            token = self.fetch_token(self.challenges["bearer"], key)
            with self._lock:
                self._tokens[tuple(sorted(scope))] = (token, time.monotonic() + 50)
            return True
        if "basic" in challenges:
            was_basic = "basic" in self.challenges
            self.challenges = {"basic": challenges["basic"]}
            return not was_basic and self.credentials() is not None
        return False

    def fetch_token(self, params: dict[str, str], scope: tuple[str, ...]) -> str:
        """GET the realm with service and scopes (basic auth when we have credentials)."""
        import json
        from urllib.parse import urlencode
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"{self.http.netloc}: bearer challenge without realm")
        q = []
        if params.get("service"):
            q.append(("service", params["service"]))
        for s in scope:
            q.append(("scope", s))
        creds = self.credentials()
        headers = {"Accept": "application/json"}
        if creds:
            q.append(("account", creds[0]))
            headers["Authorization"] = basic_header(creds)
        url = realm + (("&" if "?" in realm else "?") + urlencode(q) if q else "")
        r = self.http.request("GET", url, headers=headers, ok=(200,), context=f"token from {realm}")
        try:
            data = r.read(1 << 20)
        finally:
            r.release()
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"invalid token response from {realm}")
        try:
            expires = int(doc.get("expires_in") or 60)
        except (TypeError, ValueError):
            expires = 60
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + max(10, expires - 10))
        return token


def login_message(e: RegistryError) -> str:
    """A login failure as docker words it (``unauthorized: ...``)."""
    msg = str(e)
    if msg.startswith(("unauthorized:", "denied:")):
        return msg
    return f"unauthorized: {msg}"


def login_error(e: RegistryError) -> Unauthorized:
    return Unauthorized(login_message(e), code=e.code, status=e.status)
