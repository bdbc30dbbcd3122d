"""The Docker Engine API routes, one module per resource (as moby's api/server/router/):
each has a class whose ``routes()`` lists (method, path, handler)."""
from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]
