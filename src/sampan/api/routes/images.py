"""/images/... and /auth: list, inspect, history, tag, remove, prune; pull and import
(``/images/create``), push, load, save (``/images/get``), and the registry login check."""
from __future__ import annotations

from aiohttp import web

from ... import errors
from ..backend import ImageBackend
from ..params import json_response, query_bool, query_filters, read_json_object, registry_auth
from ..progress import JSONStream
from ..workers import Workers
from . import Route


def _with_tag(repo: str, tag: str) -> str:
    if not tag:
        return repo
    return f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag}"


class ImageRoutes:
    def __init__(self, images: ImageBackend, workers: Workers) -> None:
        self.images, self.workers = images, workers

    def routes(self) -> list[Route]:
        i = "/images/{name:.+}"
        return [
            ("GET", "/images/json", self.list), ("POST", "/images/create", self.create),
            ("POST", "/images/load", self.load), ("GET", "/images/get", self.save),
            ("POST", "/images/prune", self.prune), ("POST", "/auth", self.login),
            ("GET", i + "/json", self.inspect), ("GET", i + "/history", self.history),
            ("GET", i + "/get", self.save), ("POST", i + "/tag", self.tag), ("POST", i + "/push", self.push),
            ("DELETE", i, self.delete),
        ]

    async def list(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.images.summaries, query_bool(request, "all"),
                                                    query_filters(request)))

    async def inspect(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.images.inspect, request.match_info["name"]))

    async def history(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.images.history, request.match_info["name"]))

    async def tag(self, request: web.Request) -> web.Response:
        repo = request.query.get("repo")
        if not repo:
            raise errors.Invalid("repository name must have at least one component")
        await self.workers.run(self.images.tag, request.match_info["name"],
                               _with_tag(repo, request.query.get("tag") or ""))
        return web.Response(status=201)

    async def delete(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.images.remove, request.match_info["name"],
                                                    query_bool(request, "force"), not query_bool(request, "noprune")))

    async def prune(self, request: web.Request) -> web.Response:
        dangling = (query_filters(request).get("dangling") or ["true"])[0].lower() in ("1", "true")
        return json_response(await self.workers.run(self.images.prune, dangling, long=True))

    async def create(self, request: web.Request) -> web.StreamResponse:
        """``fromImage``: pull; ``fromSrc=-``: import the request body as a root filesystem."""
        platform = request.query.get("platform") or None
        tag = request.query.get("tag") or ""
        if "fromImage" in request.query:
            name = _with_tag(request.query["fromImage"], tag)
            auth = registry_auth(request)
            stream = JSONStream(request)
            await stream.run(lambda emit: self.workers.run(self.images.pull, name, platform, auth, emit, long=True))
            return await stream.finish()
        source = request.query.get("fromSrc")
        if source is None:
            raise errors.Invalid("fromImage or fromSrc is required")
        ref = _with_tag(request.query.get("repo") or "", tag) or None
        changes = request.query.getall("changes", [])
        comment = request.query.get("message") or ""
        if source != "-":  # a URL: fetched by the daemon, "Importing" progress as it comes
            stream = JSONStream(request)
            image_id = await stream.run(lambda emit: self.workers.run(
                self.images.import_url, source, ref, changes, comment, platform, emit, long=True))
            return await stream.finish(*([{"status": image_id}] if image_id else []))
        image_id = await self.workers.consume_body(
            request.content, lambda body: self.images.import_rootfs(body, ref, changes, comment, platform))
        # dockerd sends no progress for a body (only for a URL): the ID alone
        return await JSONStream(request).finish({"status": image_id})

    async def push(self, request: web.Request) -> web.StreamResponse:
        auth = registry_auth(request)
        targets = await self.workers.run(self.images.push_targets, request.match_info["name"],
                                         request.query.get("tag") or None)
        stream = JSONStream(request)
        await stream.run(lambda emit: self.workers.run(self.images.push, targets, auth, emit, long=True))
        return await stream.finish()

    async def load(self, request: web.Request) -> web.StreamResponse:
        # dockerd answers 200 at once: a bad archive is the stream's error message
        stream = JSONStream(request, eager=True)
        progress = not query_bool(request, "quiet")
        await stream.run(lambda emit: self.workers.consume_body(
            request.content, lambda body: self.images.load(body, emit, progress)))
        return await stream.finish()

    async def save(self, request: web.Request) -> web.StreamResponse:
        names = [request.match_info["name"]] if "name" in request.match_info else request.query.getall("names", [])
        if not names:
            raise errors.Invalid("no image names given")
        await self.workers.run(self.images.check_names, names)
        return await self.workers.stream_response(request, "application/x-tar",
                                                  lambda out: self.images.save(names, out))

    async def login(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        return json_response(await self.workers.run(self.images.login, body.get("serveraddress") or "",
                                                    body.get("username") or "", body.get("password") or ""))
