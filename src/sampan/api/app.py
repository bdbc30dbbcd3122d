"""sampand's aiohttp application: the Docker Engine API in front of an ``Engine``.

The middleware negotiates the API version (``/vX.Y/...`` or no prefix) and turns every error
into Docker's JSON ``{"message": ...}`` with the status of its kind (``errors.http_status``);
routes raise errors, they never choose a status. Blocking engine calls run on ``Workers``.
"""
from __future__ import annotations

import asyncio
import logging
import platform
from typing import TYPE_CHECKING

from aiohttp import web

from .. import API_VERSION, MIN_API_VERSION, __version__, errors
from .build_service import BuildService
from .image_service import ImageService
from .params import json_response
from .routes import Handler, Route
from .routes.build import BuildRoutes
from .routes.containers import ContainerRoutes
from .routes.exec import ExecRoutes
from .routes.images import ImageRoutes
from .routes.networks import NetworkRoutes
from .routes.system import SystemRoutes
from .routes.volumes import VolumeRoutes
from .status import message_of
from .workers import Workers

if TYPE_CHECKING:
    from ..engine.containers import Engine

log = logging.getLogger("sampand")

_VERSION_PREFIX = "/v{apiversion:[0-9]+\\.[0-9]+}"
_SERVER = f"sampan/{__version__} ({platform.system()})"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def _error_response(status: int, message: str) -> web.Response:
    if status == 304:  # not modified: no body
        return web.Response(status=304)
    return json_response({"message": message}, status=status)


def _check_version(version: str) -> None:
    if _version_tuple(version) > _version_tuple(API_VERSION):
        raise errors.Invalid(f"client version {version} is too new. Maximum supported API version is {API_VERSION}")
    if _version_tuple(version) < _version_tuple(MIN_API_VERSION):
        raise errors.Invalid(f"client version {version} is too old. Minimum supported API version is "
                             f"{MIN_API_VERSION}, please upgrade your client to a newer version")


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        version = request.match_info.get("apiversion")
        if version:
            _check_version(version)
        resp = await handler(request)
    except web.HTTPException as e:  # aiohttp's routing: no such path, method not allowed
        if e.status < 400:
            raise
        return _error_response(e.status, f"page not found: {request.path}" if e.status == 404 else e.reason)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - every failure is a JSON error
        if request.writer.output_size:
            raise  # the answer has begun: aiohttp drops the connection (a truncated body shows)
        status = errors.http_status(e)
        if status >= 500:
            log.exception("%s %s", request.method, request.path)
        return _error_response(status, message_of(e))
    if not resp.prepared:
        resp.headers.setdefault("Api-Version", API_VERSION)
        resp.headers.setdefault("Server", _SERVER)
        resp.headers.setdefault("Docker-Experimental", "false")
        resp.headers.setdefault("Ostype", "linux")
    return resp


class API:
    """The routes bound to an engine (and its image store), and the threads they run on."""

    def __init__(self, engine: Engine, root: str, exec_root: str, insecure_registries: list[str] | None = None) -> None:
        # (root and exec_root are the engine's: the routes need neither)
        self.workers = Workers()
        images = ImageService(engine.images, engine.events.emit, list(insecure_registries or ()))
        self.builds = BuildService(engine, images)
        self.resources = [SystemRoutes(engine, images, self.workers, self.builds.usage),
                          ContainerRoutes(engine, self.workers), ExecRoutes(engine, self.workers),
                          VolumeRoutes(engine, self.workers), NetworkRoutes(engine, self.workers),
                          ImageRoutes(images, self.workers), BuildRoutes(self.builds, self.workers)]

    def routes(self) -> list[Route]:
        return [route for resource in self.resources for route in resource.routes()]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_middleware], client_max_size=0)
        for method, path, handler in self.routes():
            app.router.add_route(method, _VERSION_PREFIX + path, handler)
            app.router.add_route(method, path, handler)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def stop_streams(self) -> None:
        """Shutting down: streams (events, logs) end."""
        self.workers.stopping.set()

    async def _on_shutdown(self, app: web.Application) -> None:
        self.stop_streams()

    def close(self) -> None:
        self.workers.close()
        self.builds.close()
