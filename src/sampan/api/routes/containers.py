"""/containers/...: list, create, inspect, lifecycle, wait, logs, attach, export, top, stats."""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Iterator

from aiohttp import web

from ... import errors
from .. import hijack
from ..backend import ContainerBackend
from ..status import message_of
from ..params import (json_response, query_bool, query_filters, query_int, query_time,
                      read_json_object)
from ..workers import Workers
from . import Route

_WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
_STATS_INTERVAL = 1.0


def _tail(request: web.Request) -> int | str:
    tail = request.query.get("tail", "all")
    return int(tail) if tail.lstrip("-").isdigit() else "all"


class ContainerRoutes:
    def __init__(self, engine: ContainerBackend, workers: Workers) -> None:
        self.engine, self.workers = engine, workers

    def routes(self) -> list[Route]:
        c = "/containers/{id}"
        return [
            ("GET", "/containers/json", self.list), ("POST", "/containers/create", self.create),
            ("POST", "/containers/prune", self.prune),
            ("GET", c + "/json", self.inspect), ("DELETE", c, self.delete),
            ("DELETE", "/containers/{parent}/{alias}", self.delete_link),
            ("POST", c + "/start", self.start), ("POST", c + "/stop", self.stop),
            ("POST", c + "/restart", self.restart), ("POST", c + "/kill", self.kill),
            ("POST", c + "/pause", self.pause), ("POST", c + "/unpause", self.unpause),
            ("POST", c + "/rename", self.rename), ("POST", c + "/resize", self.resize),
            ("POST", c + "/wait", self.wait), ("POST", c + "/attach", self.attach),
            ("GET", c + "/logs", self.logs), ("GET", c + "/top", self.top),
            ("GET", c + "/export", self.export), ("GET", c + "/stats", self.stats),
        ]

    async def list(self, request: web.Request) -> web.Response:
        out = await self.workers.run(self.engine.list, query_bool(request, "all"), query_filters(request))
        limit = query_int(request, "limit")
        if limit and limit > 0:
            out = out[:limit]
        return json_response(out)

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if request.query.get("platform"):
            body.setdefault("Platform", request.query["platform"])
        cid = await self.workers.run(self.engine.create, body, request.query.get("name", ""), long=True)
        return json_response({"Id": cid, "Warnings": []}, status=201)

    async def inspect(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.inspect, request.match_info["id"],
                                                    query_bool(request, "size")))

    async def start(self, request: web.Request) -> web.Response:
        # (an auto-remove container whose start fails is removed by the engine)
        await self.workers.run(self.engine.start, request.match_info["id"], long=True)
        return web.Response(status=204)

    async def stop(self, request: web.Request) -> web.Response:
        timeout = query_int(request, "t")
        if timeout is None:
            timeout = query_int(request, "timeout")
        await self.workers.run(self.engine.stop, request.match_info["id"], timeout,
                               request.query.get("signal") or None, long=True)
        return web.Response(status=204)

    async def restart(self, request: web.Request) -> web.Response:
        await self.workers.run(self.engine.restart, request.match_info["id"], query_int(request, "t"),
                               request.query.get("signal") or None, long=True)
        return web.Response(status=204)

    async def kill(self, request: web.Request) -> web.Response:
        await self.workers.run(self.engine.kill, request.match_info["id"], request.query.get("signal") or "KILL",
                               long=True)
        return web.Response(status=204)

    async def pause(self, request: web.Request) -> web.Response:
        await self.workers.run(self.engine.pause, request.match_info["id"], long=True)
        return web.Response(status=204)

    async def unpause(self, request: web.Request) -> web.Response:
        await self.workers.run(self.engine.unpause, request.match_info["id"], long=True)
        return web.Response(status=204)

    async def rename(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        if not name:
            raise errors.Invalid("name is required")
        await self.workers.run(self.engine.rename, request.match_info["id"], name)
        return web.Response(status=204)

    async def resize(self, request: web.Request) -> web.Response:
        await self.workers.run(self.engine.resize, request.match_info["id"], query_int(request, "h", 0),
                               query_int(request, "w", 0))
        return web.Response(status=200)

    async def delete_link(self, request: web.Request) -> web.Response:
        """`docker rm --link /web/alias`: the path is the link's name."""
        if not query_bool(request, "link"):
            raise web.HTTPNotFound()
        await self.workers.run(self.engine.remove_link,
                               f"/{request.match_info['parent']}/{request.match_info['alias']}")
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        await self.workers.run(self.engine.remove, request.match_info["id"], query_bool(request, "force"),
                               query_bool(request, "v"), long=True)
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.prune, query_filters(request), long=True))

    async def wait(self, request: web.Request) -> web.StreamResponse:
        condition = request.query.get("condition") or "not-running"
        if condition not in _WAIT_CONDITIONS:
            raise errors.Invalid(f"invalid condition: {condition!r}")
        # Docker answers the headers at once (the CLI waits for them before it starts the
        # container), and the body when the condition is met. Errors found before that
        # (no such container) are still JSON errors with their status.
        waiting = await self.workers.run(self.engine.wait_prepare, request.match_info["id"], condition)
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        try:
            result = await self.workers.run(waiting, long=True)
        except Exception as e:  # noqa: BLE001 - the status is sent: the error goes in the body
            result = {"StatusCode": -1, "Error": {"Message": message_of(e)}}
        try:
            await resp.write(json.dumps(result).encode() + b"\n")
            await resp.write_eof()
        except (ConnectionError, OSError):
            pass  # the client went away
        return resp

    async def logs(self, request: web.Request) -> web.StreamResponse:
        cid = request.match_info["id"]
        stdout, stderr = query_bool(request, "stdout"), query_bool(request, "stderr")
        if not (stdout or stderr):
            raise errors.Invalid("Bad parameters: you must choose at least one stream")
        follow, timestamps = query_bool(request, "follow"), query_bool(request, "timestamps")
        since, until, tail = query_time(request, "since"), query_time(request, "until"), _tail(request)
        info = await self.workers.run(self.engine.inspect, cid)
        tty = bool((info.get("Config") or {}).get("Tty"))
        resp = web.StreamResponse(status=200)
        resp.content_type = hijack.content_type(tty)
        halt = threading.Event()

        def read() -> Iterator[tuple[str, bytes]]:
            return self.engine.logs(cid, stdout=stdout, stderr=stderr, follow=follow, since=since, until=until,
                                    tail=tail, timestamps=timestamps, stop=halt)

        try:
            # the headers wait for the first line: a missing log is still an error status
            async for stream, data in self.workers.iterate(read):
                if not resp.prepared:
                    await resp.prepare(request)
                await resp.write(data if tty else hijack.frame(stream, data))
        finally:
            halt.set()
        if not resp.prepared:
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    async def attach(self, request: web.Request) -> web.StreamResponse:
        """The engine attaches to the container's stdio in the supervisor; a container that
        is not running yet (docker run: create, attach, start) is created there first, so the
        stream has its output from the first byte and the client's input goes to its stdin."""
        ref = request.match_info["id"]
        stdin, stdout, stderr = (query_bool(request, n) for n in ("stdin", "stdout", "stderr"))
        stream, logs = query_bool(request, "stream"), query_bool(request, "logs")

        def inspect_and_attach() -> tuple[dict, object]:  # (one trip to a worker thread, not two)
            info = self.engine.inspect(ref)
            sock = self.engine.attach(info["Id"], stdin=stdin, stdout=stdout, stderr=stderr) if stream else None
            return info, sock

        info, sock = await self.workers.run(inspect_and_attach, long=True)
        cid = info["Id"]
        tty = bool((info.get("Config") or {}).get("Tty"))
        try:
            proto = await hijack.hijack(request, tty)
            try:
                if logs and (stdout or stderr):
                    async for name, data in self.workers.iterate(
                            lambda: self.engine.logs(cid, stdout=stdout, stderr=stderr, follow=False)):
                        proto.transport.write(data if tty else hijack.frame(name, data))
                await hijack.bridge(proto, sock, stdin)  # type: ignore[arg-type]
            finally:
                if not proto.transport.is_closing():
                    proto.transport.close()
        finally:
            if sock is not None:
                sock.close()  # type: ignore[attr-defined]
        return hijack.finish(request)

    async def export(self, request: web.Request) -> web.StreamResponse:
        cid = (await self.workers.run(self.engine.inspect, request.match_info["id"]))["Id"]  # else a 404
        return await self.workers.stream_response(request, "application/x-tar",
                                                  lambda out: self.engine.export(cid, out))

    async def top(self, request: web.Request) -> web.Response:
        return json_response(await self.workers.run(self.engine.top, request.match_info["id"],
                                                    request.query.get("ps_args") or "-ef"))

    async def stats(self, request: web.Request) -> web.StreamResponse:
        cid = request.match_info["id"]
        if not query_bool(request, "stream", True) or query_bool(request, "one-shot"):
            return json_response(await self.workers.run(self.engine.stats, cid))
        first = await self.workers.run(self.engine.stats, cid)  # a missing container: an error status
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        sample = first
        while True:
            await resp.write(json.dumps(sample).encode() + b"\n")
            await asyncio.sleep(_STATS_INTERVAL)
            try:
                sample = await self.workers.run(self.engine.stats, cid)
            except Exception:  # noqa: BLE001 - the status is sent: the stream just ends
                break  # (removed, as Docker's stream ends)
        await resp.write_eof()
        return resp
