"""The Docker Engine API routes: an aiohttp application in front of an ``Engine``.

Blocking engine calls run in threads; streams (attach, exec, logs, events) are bridged
without blocking the loop. Hijacked streams take the connection's transport over after
the ``101 UPGRADED`` answer, so a client's half-close reaches the process as stdin EOF.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import platform
import re
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

from aiohttp import web

from .. import __version__

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"
log = logging.getLogger("sampand")

_VERSION_RE = re.compile(r"^/v(\d+\.\d+)(/.*)$")


# ---------------------------------------------------------------------------- errors
class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _status_of(e: BaseException) -> int:
    status = getattr(e, "status", None)
    if isinstance(status, int) and 100 <= status < 600:
        return status
    name = type(e).__name__
    if name in ("NotFound", "ImageNotFound", "FileNotFoundError", "NoSuchContainer"):
        return 404
    if name in ("Conflict", "NameTaken"):
        return 409
    if name in ("InvalidParameter", "InvalidImage", "ValueError", "AmbiguousImage"):
        return 400
    return 500


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


def _error_response(status: int, message: str) -> web.Response:
    return _json({"message": message}, status=status)


def _vtuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


@web.middleware
async def _middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    version = request.match_info.get("apiversion")
    if version:
        if _vtuple(version) > _vtuple(API_VERSION):
            return _error_response(400, f"client version {version} is too new. Maximum supported API "
                                        f"version is {API_VERSION}")
        if _vtuple(version) < _vtuple(MIN_API_VERSION):
            return _error_response(400, f"client version {version} is too old. Minimum supported API "
                                        f"version is {MIN_API_VERSION}, please upgrade your client to a "
                                        f"newer version")
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        if e.status >= 400:
            return _error_response(e.status, e.reason if e.status != 404 else
                                   f"page not found: {request.path}")
        raise
    except APIError as e:
        return _error_response(e.status, e.message)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - every failure is a JSON error
        status = _status_of(e)
        if status >= 500:
            log.exception("%s %s", request.method, request.path)
        msg = str(e) or type(e).__name__
        if isinstance(e, KeyError) and e.args:
            msg = str(e.args[0])
        if status == 304:
            return web.Response(status=304)
        return _error_response(status, msg)
    if not resp.prepared:
        resp.headers.setdefault("Api-Version", API_VERSION)
        resp.headers.setdefault("Server", f"sampan/{__version__} ({platform.system()})")
        resp.headers.setdefault("Docker-Experimental", "false")
        resp.headers.setdefault("Ostype", "linux")
    return resp


# ---------------------------------------------------------------------------- helpers
def _bool(request: web.Request, name: str, default: bool = False) -> bool:
    v = request.query.get(name)
    if v is None:
        return default
    return v.lower() not in ("", "0", "false", "no")


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    v = request.query.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise APIError(400, f"invalid value for {name}: {v!r}") from None


def _filters(request: web.Request) -> dict[str, list[str]]:
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        f = json.loads(raw)
    except ValueError:
        raise APIError(400, f"invalid filter: {raw!r}") from None
    out: dict[str, list[str]] = {}
    for k, v in (f or {}).items():
        if isinstance(v, dict):  # the old {"key": {"value": true}} form
            out[k] = [x for x, on in v.items() if on]
        elif isinstance(v, list):
            out[k] = [str(x) for x in v]
        else:
            out[k] = [str(v)]
    return out


def _ts(v: str | None) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        pass
    from datetime import datetime
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise APIError(400, f"invalid timestamp: {v!r}") from None


async def _json_body(request: web.Request) -> Any:
    data = await request.read()
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError as e:
        raise APIError(400, f"invalid JSON body: {e}") from None


def _frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


_STREAMS = {"stdin": 0, "stdout": 1, "stderr": 2, 0: 0, 1: 1, 2: 2}


# ---------------------------------------------------------------------------- raw streams
class _RawProtocol(asyncio.Protocol):
    """Takes a hijacked client connection over: bytes in -> ``on_data``; half-close -> ``on_eof``."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.incoming.put_nowait(data)

    def eof_received(self) -> bool:
        self.incoming.put_nowait(None)
        return True  # keep our half open: the output still flows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.incoming.put_nowait(None)
        if not self.closed.done():
            self.closed.set_result(None)


async def _hijack(request: web.Request, content_type: str = "application/vnd.docker.raw-stream") -> _RawProtocol:
    upgrade = "upgrade" in request.headers.get("Connection", "").lower() or "Upgrade" in request.headers
    if upgrade:
        resp = web.StreamResponse(status=101, reason="UPGRADED")
        resp.headers["Connection"] = "Upgrade"
        resp.headers["Upgrade"] = "tcp"
    else:  # old clients: a 200 whose body is the raw stream
        resp = web.StreamResponse(status=200)
        resp.force_close()
    resp.headers["Content-Type"] = content_type
    resp.headers["Api-Version"] = API_VERSION
    if not upgrade:
        resp.content_length = None
    resp.enable_compression = False  # type: ignore[assignment]
    await resp.prepare(request)
    if not upgrade:
        # no chunking: the rest of the connection is ours
        writer = request._payload_writer  # type: ignore[attr-defined]
        writer.chunked = False
    await resp.drain() if hasattr(resp, "drain") else None
    transport = request.transport
    assert transport is not None
    proto = _RawProtocol(transport)
    handler = request.protocol
    tail = getattr(handler, "_message_tail", b"")
    if tail:
        proto.data_received(tail)
        handler._message_tail = b""  # type: ignore[attr-defined]
    transport.set_protocol(proto)
    transport.resume_reading()
    request["hijack_response"] = resp
    return proto


async def _bridge(proto: _RawProtocol, sock: socket.socket | None, stdin: bool) -> None:
    """Pump the hijacked client <-> a supervisor stream socket until the output ends."""
    transport = proto.transport
    if sock is None:
        transport.close()
        return
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)

    async def upstream() -> None:
        while True:
            data = await proto.incoming.get()
            if data is None:
                break
            if stdin:
                writer.write(data)
                try:
                    await writer.drain()
                except (ConnectionError, OSError):
                    return
        if stdin:
            try:
                if writer.can_write_eof():
                    writer.write_eof()
            except (ConnectionError, OSError):
                pass

    async def downstream() -> None:
        while not transport.is_closing():
            data = await reader.read(65536)
            if not data:
                break
            transport.write(data)
            # crude back-pressure: wait while the client is slow
            while transport.get_write_buffer_size() > 1 << 20 and not transport.is_closing():
                await asyncio.sleep(0.01)

    up = asyncio.ensure_future(upstream())
    down = asyncio.ensure_future(downstream())
    try:
        # until the output ends, or the client goes away (an attach to a container that is
        # never started would otherwise hold its supervisor stream forever)
        await asyncio.wait([down, proto.closed], return_when=asyncio.FIRST_COMPLETED)
        if down.done() and not down.cancelled():
            try:
                down.result()
            except (ConnectionError, OSError):
                pass
    finally:
        down.cancel()
        up.cancel()
        writer.close()
        if not transport.is_closing():
            transport.close()


def _finish_hijack(request: web.Request) -> web.StreamResponse:
    resp = request["hijack_response"]
    resp.force_close()
    return resp


# ---------------------------------------------------------------------------- the app
class API:
    def __init__(self, engine: Any, root: str, exec_root: str) -> None:
        self.engine = engine
        self.root = root
        self.exec_root = exec_root
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="api")
        self.long_pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="api-long")
        self._images = None
        self._images_lock = threading.Lock()
        self._stop = threading.Event()

    # -------------------------------------------------------------- plumbing
    async def run(self, fn: Callable, *args: Any, long: bool = False, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.long_pool if long else self.pool, lambda: fn(*args, **kw))

    def eng(self) -> Any:
        if self.engine is None:
            raise APIError(500, "the engine is not available")
        return self.engine

    @property
    def images(self) -> Any:
        store = getattr(self.engine, "images", None) if self.engine is not None else None
        if store is not None and hasattr(store, "resolve"):
            return store
        with self._images_lock:
            if self._images is None:
                from ..image.store import ImageStore
                self._images = ImageStore(self.root)
            return self._images

    async def iterate(self, make: Callable[[], Iterator], request: web.Request) -> Any:
        """Run a blocking iterator in a thread; yield its items on the loop."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue(maxsize=256)
        stop = threading.Event()
        done = object()

        def put(item: Any) -> None:
            fut = asyncio.run_coroutine_threadsafe(q.put(item), loop)
            while True:
                try:
                    fut.result(timeout=0.5)
                    return
                except TimeoutError:
                    if stop.is_set():
                        fut.cancel()
                        raise GeneratorExit from None

        def worker() -> None:
            it = None
            try:
                it = make()
                for item in it:
                    if stop.is_set() or self._stop.is_set():
                        break
                    put(item)
            except GeneratorExit:
                pass
            except BaseException as e:  # noqa: BLE001
                if not stop.is_set():
                    try:
                        put(("__error__", e))
                    except GeneratorExit:
                        pass
            finally:
                close = getattr(it, "close", None)
                if close:
                    try:
                        close()
                    except Exception:  # noqa: BLE001
                        pass
                if not stop.is_set():
                    try:
                        put(done)
                    except GeneratorExit:
                        pass

        fut = loop.run_in_executor(self.long_pool, worker)
        try:
            while True:
                item = await q.get()
                if item is done:
                    break
                if isinstance(item, tuple) and len(item) == 2 and item[0] == "__error__":
                    raise item[1]
                yield item
        finally:
            stop.set()
            while not q.empty():
                q.get_nowait()
            fut.add_done_callback(lambda f: f.exception())

    # -------------------------------------------------------------- system
    async def ping(self, request: web.Request) -> web.Response:
        headers = {"Api-Version": API_VERSION, "Builder-Version": "1", "Docker-Experimental": "false",
                   "Ostype": "linux", "Cache-Control": "no-cache, no-store, must-revalidate",
                   "Pragma": "no-cache", "Swarm": "inactive"}
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers, content_type="text/plain")
        return web.Response(text="OK", headers=headers, content_type="text/plain")

    async def version(self, request: web.Request) -> web.Response:
        info: dict = {}
        if self.engine is not None and hasattr(self.engine, "version"):
            try:
                info = await self.run(self.engine.version)
            except Exception:  # noqa: BLE001
                info = {}
        base = {
            "Platform": {"Name": "sampan"},
            "Components": [{"Name": "Engine", "Version": __version__,
                            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                        "Os": "linux", "Arch": _arch(), "KernelVersion": platform.release(),
                                        "GoVersion": "python" + platform.python_version()}}],
            "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "", "GoVersion": "python" + platform.python_version(), "Os": "linux",
            "Arch": _arch(), "KernelVersion": platform.release(), "BuildTime": "",
        }
        base.update({k: v for k, v in (info or {}).items() if k not in ("ApiVersion", "MinAPIVersion", "Components")})
        return _json(base)

    async def info(self, request: web.Request) -> web.Response:
        info: dict = {}
        if self.engine is not None and hasattr(self.engine, "info"):
            info = await self.run(self.engine.info)
        images = await self.run(lambda: len(self.images.list()))
        base = {
            "ID": "", "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
            "Images": images, "Driver": "overlay2", "DriverStatus": [], "Plugins": {"Volume": ["local"],
            "Network": ["host", "none"], "Authorization": None, "Log": ["json-file"]},
            "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True,
            "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
            "Debug": False, "NFd": len(os.listdir("/proc/self/fd")), "NGoroutines": threading.active_count(),
            "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs", "CgroupVersion": "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers")
            else "1", "NEventsListener": 0, "KernelVersion": platform.release(),
            "OperatingSystem": _os_name(), "OSVersion": "", "OSType": "linux", "Architecture": platform.machine(),
            "IndexServerAddress": "https://index.docker.io/v1/", "RegistryConfig": None,
            "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(), "DockerRootDir": self.root,
            "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": platform.node(), "Labels": [],
            "ExperimentalBuild": False, "ServerVersion": __version__, "Runtimes": {"sampan-runc":
            {"path": "sampan-runc"}}, "DefaultRuntime": "sampan-runc", "Swarm": {"LocalNodeState": "inactive",
            "NodeID": "", "NodeAddr": "", "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "", "SecurityOptions":
            ["name=seccomp,profile=builtin", "name=cgroupns"], "Warnings": None,
        }
        base.update(info or {})
        base["Images"] = images
        return _json(base)

    async def events(self, request: web.Request) -> web.StreamResponse:
        eng = self.eng()
        since, until = _ts(request.query.get("since")), _ts(request.query.get("until"))
        filters = _filters(request)
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        stream = getattr(eng, "events_stream", None) or eng.events
        kw: dict = {}
        if "stop" in _params(stream):
            kw["stop"] = self._stop
        async for ev in self.iterate(lambda: stream(since, until, filters, **kw), request):
            await resp.write(json.dumps(ev).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def df(self, request: web.Request) -> web.Response:
        eng = self.eng()
        if hasattr(eng, "df"):
            return _json(await self.run(eng.df))
        containers = await self.run(eng.list, True, {})
        vols = await self.run(eng.volume_list, {})
        imgs = (await self.images_json(request)).text
        return _json({"LayersSize": 0, "Images": json.loads(imgs), "Containers": containers,
                                  "Volumes": vols.get("Volumes") if isinstance(vols, dict) else vols,
                                  "BuildCache": []})

    # -------------------------------------------------------------- containers
    async def containers_json(self, request: web.Request) -> web.Response:
        eng = self.eng()
        all_ = _bool(request, "all")
        filters = _filters(request)
        out = await self.run(eng.list, all_, filters)
        limit = _int(request, "limit")
        if limit and limit > 0:
            out = out[:limit]
        return _json(out)

    async def container_create(self, request: web.Request) -> web.Response:
        eng = self.eng()
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise APIError(400, "invalid JSON body: not an object")
        name = request.query.get("name", "")
        if request.query.get("platform"):
            body.setdefault("Platform", request.query["platform"])
        res = await self.run(eng.create, body, name, long=True)
        if isinstance(res, dict):
            cid, warnings = res.get("Id"), res.get("Warnings") or []
        else:
            cid, warnings = res, []
        return _json({"Id": cid, "Warnings": warnings}, status=201)

    async def container_inspect(self, request: web.Request) -> web.Response:
        return _json(await self.run(self.eng().inspect, request.match_info["id"]))

    async def _no_content(self, fn: Callable, *args: Any) -> web.Response:
        try:
            await self.run(fn, *args, long=True)
        except Exception as e:  # noqa: BLE001
            if _status_of(e) == 304:
                return web.Response(status=304)
            raise
        return web.Response(status=204)

    async def container_start(self, request: web.Request) -> web.Response:
        # (an auto-remove container whose start fails is removed by the engine)
        return await self._no_content(self.eng().start, request.match_info["id"])

    async def container_stop(self, request: web.Request) -> web.Response:
        t = _int(request, "t")
        if t is None:
            t = _int(request, "timeout")
        eng = self.eng()
        return await self._no_content(lambda i: eng.stop(i, t), request.match_info["id"])

    async def container_restart(self, request: web.Request) -> web.Response:
        t = _int(request, "t")
        eng = self.eng()
        return await self._no_content(lambda i: eng.restart(i, t), request.match_info["id"])

    async def container_kill(self, request: web.Request) -> web.Response:
        sig = request.query.get("signal") or "KILL"
        eng = self.eng()
        return await self._no_content(lambda i: eng.kill(i, sig), request.match_info["id"])

    async def container_pause(self, request: web.Request) -> web.Response:
        return await self._no_content(self.eng().pause, request.match_info["id"])

    async def container_unpause(self, request: web.Request) -> web.Response:
        return await self._no_content(self.eng().unpause, request.match_info["id"])

    async def container_rename(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        if not name:
            raise APIError(400, "name is required")
        eng = self.eng()
        return await self._no_content(lambda i: eng.rename(i, name), request.match_info["id"])

    async def container_resize(self, request: web.Request) -> web.Response:
        h, w = _int(request, "h", 0), _int(request, "w", 0)
        eng = self.eng()
        await self.run(eng.resize, request.match_info["id"], h, w)
        return web.Response(status=200)

    async def container_export(self, request: web.Request) -> web.StreamResponse:
        import tempfile
        eng = self.eng()
        fd, path = tempfile.mkstemp(prefix="export-", suffix=".tar", dir=_tmpdir(self.root))
        try:
            with os.fdopen(fd, "wb") as f:
                await self.run(eng.export, request.match_info["id"], f, long=True)
            resp = web.StreamResponse(status=200)
            resp.content_type = "application/x-tar"
            await resp.prepare(request)
            with open(path, "rb") as f:
                while chunk := await self.run(f.read, 1 << 20):
                    await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            os.unlink(path)

    async def container_top(self, request: web.Request) -> web.Response:
        eng = self.eng()
        args = request.query.get("ps_args") or "-ef"
        return _json(await self.run(eng.top, request.match_info["id"], args))

    async def container_stats(self, request: web.Request) -> web.StreamResponse:
        eng = self.eng()
        if not hasattr(eng, "stats"):
            raise APIError(501, "stats are not implemented")
        stream = _bool(request, "stream", True) and not _bool(request, "one-shot")
        cid = request.match_info["id"]
        if not stream:
            return _json(await self.run(eng.stats, cid))
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        while True:
            try:
                s = await self.run(eng.stats, cid)
            except Exception:  # noqa: BLE001
                break
            await resp.write(json.dumps(s).encode() + b"\n")
            await asyncio.sleep(1)
        return resp

    async def container_delete(self, request: web.Request) -> web.Response:
        eng = self.eng()
        force, vols = _bool(request, "force"), _bool(request, "v")
        await self.run(eng.remove, request.match_info["id"], force, vols, long=True)
        return web.Response(status=204)

    async def containers_prune(self, request: web.Request) -> web.Response:
        eng = self.eng()
        if hasattr(eng, "prune"):
            return _json(await self.run(eng.prune, _filters(request), long=True))
        deleted = []
        for c in await self.run(eng.list, True, {"status": ["exited", "created", "dead"]}):
            try:
                await self.run(eng.remove, c["Id"], False, False, long=True)
                deleted.append(c["Id"])
            except Exception:  # noqa: BLE001
                pass
        return _json({"ContainersDeleted": deleted or None, "SpaceReclaimed": 0})

    async def container_wait(self, request: web.Request) -> web.StreamResponse:
        eng = self.eng()
        cid = request.match_info["id"]
        condition = request.query.get("condition") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise APIError(400, f"invalid condition: {condition!r}")
        # Docker answers the headers at once (the CLI waits for them before it starts the
        # container), and the body when the condition is met. Errors found before that
        # (no such container) are still JSON errors with their status.
        waiter = getattr(eng, "wait_prepare", None)
        if waiter is not None:
            done = await self.run(waiter, cid, condition)  # registers, returns a blocking callable
            fut = asyncio.ensure_future(self.run(done, long=True))
        else:
            fut = asyncio.ensure_future(self.run(eng.wait, cid, condition, long=True))
            # let a fast failure (404) come back as a status, not a 200 with an error
            try:
                await asyncio.wait_for(asyncio.shield(fut), 0.05)
            except asyncio.TimeoutError:
                pass
        if fut.done():
            res = fut.result()  # raises the engine's error
            return _json(_wait_shape(res))
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        try:
            res = _wait_shape(await fut)
        except Exception as e:  # noqa: BLE001
            res = {"StatusCode": -1, "Error": {"Message": str(e)}}
        try:
            await resp.write(json.dumps(res).encode() + b"\n")
            await resp.write_eof()
        except (ConnectionError, OSError):
            pass
        return resp

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        eng = self.eng()
        cid = request.match_info["id"]
        stdout, stderr = _bool(request, "stdout"), _bool(request, "stderr")
        if not (stdout or stderr):
            raise APIError(400, "Bad parameters: you must choose at least one stream")
        follow, timestamps = _bool(request, "follow"), _bool(request, "timestamps")
        since, until = _ts(request.query.get("since")), _ts(request.query.get("until"))
        tail = request.query.get("tail", "all")
        tail_n = "all" if tail in ("", "all") else int(tail) if tail.lstrip("-").isdigit() else "all"
        info = await self.run(eng.inspect, cid)
        tty = bool((info.get("Config") or {}).get("Tty"))
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
        started = False

        halt = threading.Event()

        def make() -> Iterator:
            return iter(_call_kw(eng.logs, cid, stdout=stdout, stderr=stderr, follow=follow, since=since,
                                 until=until, tail=tail_n, timestamps=timestamps, stop=halt))

        try:
            async for stream, data in self.iterate(make, request):
                if not started:
                    await resp.prepare(request)
                    started = True
                if isinstance(data, str):
                    data = data.encode()
                await resp.write(data if tty else _frame(_STREAMS.get(stream, 1), data))
        finally:
            halt.set()
        if not started:
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    async def container_attach(self, request: web.Request) -> web.StreamResponse:
        """The engine attaches to the container's stdio in the supervisor; a container that
        is not running yet (docker run: create, attach, start) is created there first, so the
        stream has its output from the first byte and the client's input goes to its stdin."""
        eng = self.eng()
        cid = request.match_info["id"]
        stdin, stdout, stderr = _bool(request, "stdin"), _bool(request, "stdout"), _bool(request, "stderr")
        stream, logs = _bool(request, "stream"), _bool(request, "logs")

        def inspect_and_attach() -> tuple[dict, Any]:  # (one trip to a worker thread, not two)
            info = eng.inspect(cid)
            return info, (_call_kw(eng.attach, info["Id"], stdin=stdin, stdout=stdout, stderr=stderr)
                          if stream else None)

        info, sock = await self.run(inspect_and_attach, long=True)
        cid = info["Id"]
        tty = bool((info.get("Config") or {}).get("Tty"))
        try:
            proto = await _hijack(request, "application/vnd.docker.raw-stream" if tty else
                                  "application/vnd.docker.multiplexed-stream")
            try:
                if logs and (stdout or stderr):
                    async for s, data in self.iterate(lambda: iter(eng.logs(cid, stdout=stdout, stderr=stderr,
                                                                             follow=False)), request):
                        proto.transport.write(data if tty else _frame(_STREAMS.get(s, 1), data))
                await _bridge(proto, sock, stdin)
            finally:
                if not proto.transport.is_closing():
                    proto.transport.close()
        finally:
            if sock is not None:
                sock.close()
        return _finish_hijack(request)

    # -------------------------------------------------------------- exec
    async def exec_create(self, request: web.Request) -> web.Response:
        eng = self.eng()
        body = await _json_body(request)
        eid = await self.run(eng.exec_create, request.match_info["id"], body)
        if isinstance(eid, dict):
            eid = eid.get("Id")
        return _json({"Id": eid}, status=201)

    async def exec_start(self, request: web.Request) -> web.StreamResponse:
        eng = self.eng()
        eid = request.match_info["id"]
        body = await _json_body(request)
        detach, tty = bool(body.get("Detach")), bool(body.get("Tty"))
        if detach:
            await self.run(eng.exec_start, eid, True, tty, long=True)
            return web.Response(status=200)
        info = await self.run(eng.exec_inspect, eid)
        stdin = bool(info.get("OpenStdin") or (info.get("ProcessConfig") or {}).get("OpenStdin"))
        size = body.get("ConsoleSize")
        sock = await self.run(_call_kw, eng.exec_start, eid, detach=False, tty=tty,
                              console_size=size if size and any(size) else None, long=True)
        proto = await _hijack(request, "application/vnd.docker.raw-stream" if tty else
                              "application/vnd.docker.multiplexed-stream")
        try:
            await _bridge(proto, sock, stdin or True)
        finally:
            if sock is not None:
                sock.close()
        # Clients read the exit code (exec inspect) once the stream ends: end it only after
        # the engine has recorded that exit.
        try:
            await self.run(eng.exec_wait, eid, 10.0)
        except Exception:  # noqa: BLE001 - the stream is over either way
            pass
        return _finish_hijack(request)

    async def exec_resize(self, request: web.Request) -> web.Response:
        eng = self.eng()
        h, w = _int(request, "h", 0), _int(request, "w", 0)
        fn = getattr(eng, "exec_resize", None)
        if fn is not None:
            await self.run(fn, request.match_info["id"], h, w)
        else:
            await self.run(lambda: eng.resize(None, h, w, exec_id=request.match_info["id"]))
        return web.Response(status=200)

    async def exec_json(self, request: web.Request) -> web.Response:
        return _json(await self.run(self.eng().exec_inspect, request.match_info["id"]))

    # -------------------------------------------------------------- volumes
    async def volumes_json(self, request: web.Request) -> web.Response:
        res = await self.run(self.eng().volume_list, _filters(request))
        if isinstance(res, list):
            res = {"Volumes": res, "Warnings": None}
        return _json(res)

    async def volume_create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        eng = self.eng()
        res = await self.run(eng.volume_create, body)
        return _json(res, status=201)

    async def volume_inspect(self, request: web.Request) -> web.Response:
        return _json(await self.run(self.eng().volume_inspect, request.match_info["name"]))

    async def volume_delete(self, request: web.Request) -> web.Response:
        await self.run(self.eng().volume_remove, request.match_info["name"], _bool(request, "force"))
        return web.Response(status=204)

    async def volumes_prune(self, request: web.Request) -> web.Response:
        return _json(await self.run(self.eng().volume_prune, _filters(request)))

    # -------------------------------------------------------------- images
    async def images_json(self, request: web.Request) -> web.Response:
        filters = _filters(request)
        all_ = _bool(request, "all")

        def build() -> list[dict]:
            store = self.images
            out = []
            for img in store.list():
                if "dangling" in filters:
                    want = filters["dangling"][0].lower() in ("1", "true")
                    if img.dangling != want:
                        continue
                elif not all_ and img.dangling and store.meta.children(img.id):
                    continue
                if "reference" in filters:
                    import fnmatch
                    tags = img.repo_tags
                    if not any(fnmatch.fnmatch(t, pat) or fnmatch.fnmatch(t.split(":")[0], pat)
                               for t in tags for pat in filters["reference"]):
                        continue
                labels = (img.config.get("config") or {}).get("Labels") or {}
                if "label" in filters and not all(_label_match(labels, f) for f in filters["label"]):
                    continue
                from ..image.store import _parse_time
                out.append({"Id": img.id, "ParentId": img.parent, "RepoTags": img.repo_tags or [],
                            "RepoDigests": img.repo_digests or [], "Created": _parse_time(img.created),
                            "Size": img.size, "SharedSize": -1, "VirtualSize": img.size,
                            "Labels": labels or {}, "Containers": -1})
            out.sort(key=lambda d: -d["Created"])
            return out

        return _json(await self.run(build))

    async def image_inspect(self, request: web.Request) -> web.Response:
        return _json(await self.run(self.images.inspect, request.match_info["name"]))

    async def image_history(self, request: web.Request) -> web.Response:
        return _json(await self.run(self.images.history, request.match_info["name"]))

    async def image_tag(self, request: web.Request) -> web.Response:
        repo = request.query.get("repo")
        if not repo:
            raise APIError(400, "repository name must have at least one component")
        tag = request.query.get("tag")
        ref = f"{repo}:{tag}" if tag else repo

        def do() -> None:
            img = self.images.resolve(request.match_info["name"])
            self.images.tag(img.id, ref)
        await self.run(do)
        if self.engine is not None and hasattr(self.engine, "events") and hasattr(self.engine, "emit"):
            pass
        return web.Response(status=201)

    async def image_delete(self, request: web.Request) -> web.Response:
        res = await self.run(self.images.remove, request.match_info["name"], _bool(request, "force"),
                             not _bool(request, "noprune"))
        return _json(res)

    async def images_prune(self, request: web.Request) -> web.Response:
        filters = _filters(request)
        dangling = (filters.get("dangling") or ["true"])[0].lower() in ("1", "true")
        return _json(await self.run(self.images.prune, dangling, long=True))

    async def image_create(self, request: web.Request) -> web.StreamResponse:
        src = request.query.get("fromImage")
        if not src:
            raise APIError(400, "fromSrc import is not supported; use fromImage")
        tag = request.query.get("tag") or ""
        ref = src
        if tag:
            ref = f"{src}@{tag}" if tag.startswith("sha256:") else f"{src}:{tag}"
        auth = request.headers.get("X-Registry-Auth")
        pull = _find_pull()
        if pull is None:
            raise APIError(501, "pulling images is not available in this build")
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def progress(msg: dict) -> None:
            loop.call_soon_threadsafe(q.put_nowait, msg)

        fut = asyncio.ensure_future(self.run(pull, self.images, ref, auth, progress, long=True))
        fut.add_done_callback(lambda f: q.put_nowait(None))
        while True:
            msg = await q.get()
            if msg is None:
                break
            await resp.write(json.dumps(msg).encode() + b"\r\n")
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001
            await resp.write(json.dumps({"errorDetail": {"message": str(e)}, "error": str(e)}).encode() + b"\r\n")
        await resp.write_eof()
        return resp

    async def images_load(self, request: web.Request) -> web.StreamResponse:
        try:
            from ..image import archive
        except ImportError:
            raise APIError(501, "loading images is not available yet") from None
        quiet = _bool(request, "quiet")
        import tempfile
        fd, path = tempfile.mkstemp(prefix="load-", suffix=".tar", dir=_tmpdir(self.root))
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.content.iter_chunked(1 << 20):
                    await self.run(f.write, chunk)
            res = await self.run(_call_archive_load, archive, self.images, path, long=True)
        finally:
            os.unlink(path)
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        await resp.prepare(request)
        for line in _load_messages(res):
            await resp.write(json.dumps({"stream": line + "\n"}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def images_get(self, request: web.Request) -> web.StreamResponse:
        try:
            from ..image import archive
        except ImportError:
            raise APIError(501, "saving images is not available yet") from None
        names = request.query.getall("names", [])
        if "name" in request.match_info:
            names = [request.match_info["name"]]
        if not names:
            raise APIError(400, "no image names given")
        await self.run(lambda: [self.images.resolve(n) for n in names])
        import tempfile
        fd, path = tempfile.mkstemp(prefix="save-", suffix=".tar", dir=_tmpdir(self.root))
        os.close(fd)
        try:
            await self.run(_call_archive_save, archive, self.images, names, path, long=True)
            resp = web.StreamResponse(status=200)
            resp.content_type = "application/x-tar"
            await resp.prepare(request)
            with open(path, "rb") as f:
                while True:
                    chunk = await self.run(f.read, 1 << 20)
                    if not chunk:
                        break
                    await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            os.unlink(path)

    # -------------------------------------------------------------- routes
    def routes(self) -> list[tuple[str, str, Callable]]:
        c = "/containers/{id}"
        return [
            ("GET", "/_ping", self.ping), ("HEAD", "/_ping", self.ping),
            ("GET", "/version", self.version), ("GET", "/info", self.info), ("GET", "/events", self.events),
            ("GET", "/system/df", self.df),
            ("GET", "/containers/json", self.containers_json),
            ("POST", "/containers/create", self.container_create),
            ("POST", "/containers/prune", self.containers_prune),
            ("GET", c + "/json", self.container_inspect),
            ("POST", c + "/start", self.container_start), ("POST", c + "/stop", self.container_stop),
            ("POST", c + "/restart", self.container_restart), ("POST", c + "/kill", self.container_kill),
            ("POST", c + "/wait", self.container_wait), ("POST", c + "/attach", self.container_attach),
            ("GET", c + "/logs", self.container_logs), ("DELETE", c, self.container_delete),
            ("POST", c + "/pause", self.container_pause), ("POST", c + "/unpause", self.container_unpause),
            ("POST", c + "/rename", self.container_rename), ("POST", c + "/resize", self.container_resize),
            ("GET", c + "/top", self.container_top), ("GET", c + "/export", self.container_export), ("GET", c + "/stats", self.container_stats),
            ("POST", c + "/exec", self.exec_create),
            ("POST", "/exec/{id}/start", self.exec_start), ("POST", "/exec/{id}/resize", self.exec_resize),
            ("GET", "/exec/{id}/json", self.exec_json),
            ("GET", "/volumes", self.volumes_json), ("POST", "/volumes/create", self.volume_create),
            ("POST", "/volumes/prune", self.volumes_prune),
            ("GET", "/volumes/{name}", self.volume_inspect), ("DELETE", "/volumes/{name}", self.volume_delete),
            ("GET", "/images/json", self.images_json), ("POST", "/images/create", self.image_create),
            ("POST", "/images/load", self.images_load), ("GET", "/images/get", self.images_get),
            ("POST", "/images/prune", self.images_prune),
            ("GET", "/images/{name:.+}/json", self.image_inspect),
            ("GET", "/images/{name:.+}/history", self.image_history),
            ("GET", "/images/{name:.+}/get", self.images_get),
            ("POST", "/images/{name:.+}/tag", self.image_tag),
            ("DELETE", "/images/{name:.+}", self.image_delete),
        ]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_middleware], client_max_size=0)
        for method, path, handler in self.routes():
            app.router.add_route(method, "/v{apiversion:[0-9]+\\.[0-9]+}" + path, handler)
            app.router.add_route(method, path, handler)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.long_pool.shutdown(wait=False, cancel_futures=True)
        if self._images is not None:
            self._images.close()


# ---------------------------------------------------------------------------- small helpers
def _params(fn: Callable) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _call_kw(fn: Callable, *args: Any, **kw: Any) -> Any:
    """Call with the keyword arguments the callee knows."""
    params = _params(fn)
    try:
        sig = inspect.signature(fn)
        if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return fn(*args, **kw)
    except (TypeError, ValueError):
        return fn(*args, **kw)
    return fn(*args, **{k: v for k, v in kw.items() if k in params})


def _wait_shape(res: Any) -> dict:
    if isinstance(res, int):
        return {"StatusCode": res, "Error": None}
    res = dict(res or {})
    res.setdefault("StatusCode", 0)
    res.setdefault("Error", None)
    return res


def _label_match(labels: dict, f: str) -> bool:
    k, eq, v = f.partition("=")
    return k in labels and (not eq or labels[k] == v)


def _tmpdir(root: str) -> str:
    d = os.path.join(root, "tmp")
    os.makedirs(d, exist_ok=True)
    return d


def _find_pull() -> Callable | None:
    try:
        from ..image import distribution
    except ImportError:
        return None

    def run(store: Any, ref: str, auth: str | None, progress: Callable) -> Any:
        tag = ref.rsplit("@", 1)[-1] if "@" in ref else ref.rsplit(":", 1)[-1] if ":" in ref.rsplit("/", 1)[-1] \
            else "latest"
        progress({"status": f"Pulling from {ref.split('@')[0].rsplit(':', 1)[0] if tag != 'latest' or ':' in ref else ref}",
                  "id": tag})

        def on(event: str, digest: str, done: int, total: int) -> None:
            short = digest.split(":", 1)[-1][:12]
            if event == "progress":
                progress({"status": "Downloading", "progressDetail": {"current": done, "total": total},
                          "id": short})
            elif event == "exists":
                progress({"status": "Already exists", "progressDetail": {}, "id": short})
            elif event == "done":
                progress({"status": "Pull complete", "progressDetail": {}, "id": short})

        res = distribution.pull_image(store, ref, progress=on)
        progress({"status": f"Digest: {res.digest}"})
        progress({"status": f"Status: Image is up to date for {res.reference}" if res.up_to_date
                  else f"Status: Downloaded newer image for {res.reference}"})
        return res
    return run


def _call_archive_load(archive: Any, store: Any, path: str) -> Any:
    fn = getattr(archive, "load", None) or getattr(archive, "load_archive")
    return fn(store, path)


def _call_archive_save(archive: Any, store: Any, names: list[str], path: str) -> Any:
    with open(path, "wb") as f:
        archive.save(store, names, f)


def _load_messages(res: Any) -> list[str]:
    out = []
    items = res if isinstance(res, (list, tuple)) else getattr(res, "loaded", None) or \
        getattr(res, "images", None) or ([res] if res else [])
    for item in items:
        if isinstance(item, str):
            out.append(f"Loaded image ID: {item}" if item.startswith("sha256:") else f"Loaded image: {item}")
        elif hasattr(item, "tags") and hasattr(item, "id"):
            for tag, old in getattr(item, "replaced", None) or []:
                out.append(f"The image {tag} already exists, renaming the old one with ID {old} to empty string")
            for t in item.tags:
                out.append(f"Loaded image: {t}")
            if not item.tags:
                out.append(f"Loaded image ID: {item.id}")
        elif isinstance(item, dict):
            for t in item.get("tags") or item.get("RepoTags") or []:
                out.append(f"Loaded image: {t}")
            if not (item.get("tags") or item.get("RepoTags")) and item.get("id"):
                out.append(f"Loaded image ID: {item['id']}")
    return out


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()
