"""``POST /build`` (the legacy builder: the body is the context tar, the answer a JSON stream
of {"stream"}, {"aux": {"ID"}} and at the end, if a step failed, {"errorDetail", "error"})
and ``POST /build/prune``. A malformed Dockerfile is a 400 before the stream starts, as
dockerd answers it."""
from __future__ import annotations

import asyncio
import threading
from typing import BinaryIO

from aiohttp import web

from ... import errors
from ...timefmt import parse_time_arg
from ...build.builder import BuildError, BuildOptions
from ...image import reference
from ..backend import Credentials, Emit
from ..build_service import BuildService, check_version
from ..params import auth_config_user, json_header, json_response, query_bool, query_filters, query_int, query_json
from ..progress import JSONStream
from ..status import message_of
from ..workers import Workers
from . import Route

_CLIENT_CHECK = 0.25   # seconds between checks that a build's client is still there


# dockerd's build parameters for the RUN containers' HostConfig (hostConfigFromOptions)
_RESOURCES = {"memory": "Memory", "memswap": "MemorySwap", "cpushares": "CpuShares", "cpuperiod": "CpuPeriod",
              "cpuquota": "CpuQuota", "shmsize": "ShmSize"}
_RESOURCE_STRINGS = {"cpusetcpus": "CpusetCpus", "cpusetmems": "CpusetMems", "cgroupparent": "CgroupParent"}


def _resources(request: web.Request) -> dict:
    out: dict = {}
    for name, field in _RESOURCES.items():
        value = query_int(request, name)
        if value:
            out[field] = value
    for name, field in _RESOURCE_STRINGS.items():
        if request.query.get(name):
            out[field] = request.query[name]
    ulimits = query_json(request, "ulimits", list)
    if ulimits:
        out["Ulimits"] = ulimits
    return out


def build_options(request: web.Request) -> BuildOptions:
    """dockerd's query parameters of POST /build."""
    if query_bool(request, "squash") or request.query.get("outputs"):   # (experimental; BuildKit's)
        raise errors.Invalid("build options squash and outputs are not supported by sampand")
    check_version(request.query.get("version"))
    build_args = query_json(request, "buildargs", dict)
    labels = query_json(request, "labels", dict)
    cache_from = query_json(request, "cachefrom", list)
    extra_hosts = [h for entry in request.query.getall("extrahosts", []) for h in entry.split(",") if h]
    network = request.query.get("networkmode") or "default"
    return BuildOptions(
        dockerfile=request.query.get("dockerfile") or "Dockerfile",
        tags=[t for t in request.query.getall("t", []) if t],
        build_args={str(k): None if v is None else str(v) for k, v in build_args.items()},  # type: ignore[union-attr]
        target=request.query.get("target") or None,
        no_cache=query_bool(request, "nocache"),
        cache_from=[str(ref) for ref in cache_from],  # type: ignore[union-attr]
        network=network,
        extra_hosts=extra_hosts,
        resources=_resources(request),
        labels={str(k): str(v) for k, v in labels.items()},  # type: ignore[union-attr]
        remove=query_bool(request, "rm", True) or query_bool(request, "forcerm"),
        quiet=query_bool(request, "q"))


def registry_config(request: web.Request) -> dict[str, Credentials]:
    """``X-Registry-Config``: base64url JSON of registry -> AuthConfig, as the docker CLI sends
    every credential it has with a build; keyed here by registry domain (docker.io for the
    ``https://index.docker.io/v1/`` key)."""
    try:
        doc = json_header(request, "X-Registry-Config")
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        out: dict[str, Credentials] = {}
        for server, auth in doc.items():
            if not isinstance(auth, dict):
                continue
            user, password = auth_config_user(auth)
            domain = server.split("://", 1)[-1].split("/", 1)[0]
            if user:
                official = domain in (reference.LEGACY_DEFAULT_DOMAIN, "registry-1.docker.io")
                out[reference.DEFAULT_DOMAIN if official else domain] = (user, password)
        return out
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.Invalid(f"invalid X-Registry-Config header: {e}") from None


async def _cancel_when_gone(request: web.Request, cancel: threading.Event) -> None:
    """Set ``cancel`` once the client's connection is gone (a long step may write nothing
    for minutes: the stream's writes alone would not notice)."""
    while not cancel.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            cancel.set()
            return
        await asyncio.sleep(_CLIENT_CHECK)


class BuildRoutes:
    def __init__(self, builds: BuildService, workers: Workers) -> None:
        self.builds, self.workers = builds, workers

    def routes(self) -> list[Route]:
        return [("POST", "/build", self.build), ("POST", "/build/prune", self.prune)]

    async def build(self, request: web.Request) -> web.StreamResponse:
        options = build_options(request)
        stream = JSONStream(request)
        remote = request.query.get("remote") or None
        auths = registry_config(request)
        watcher = asyncio.ensure_future(_cancel_when_gone(request, options.cancel))
        try:
            await stream.run(lambda emit: self.workers.consume_body(
                request.content, lambda body: self._build(body, options, emit, remote, auths)))
        except BaseException:
            options.cancel.set()   # the client went away: the build stops (dockerd's too)
            raise
        finally:
            watcher.cancel()
        return await stream.finish()

    def _build(self, body: BinaryIO, options: BuildOptions, emit: Emit, remote: str | None,
               auths: dict[str, Credentials]) -> str | None:
        try:
            return self.builds.build(body, options, emit, remote, auths)
        except BuildError as e:   # a failed step: dockerd's message carries a RUN's exit code
            text = message_of(e)
            emit({"errorDetail": {"code": e.code, "message": text}, "error": text})
            return None

    async def prune(self, request: web.Request) -> web.Response:
        filters = query_filters(request)
        until = None
        if filters.get("until"):
            try:
                until = parse_time_arg(filters["until"][0])
            except ValueError:
                raise errors.Invalid(f"invalid filter 'until={filters['until'][0]}'") from None
        return json_response(await self.workers.run(self.builds.prune, until, long=True))
