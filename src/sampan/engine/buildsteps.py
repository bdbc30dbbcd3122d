"""The engine's side of ``build.steps``: a RUN step is an ordinary container of the engine
(create, attach, start, wait, remove), with Docker's defaults for build containers: the
default bridge network unless the build names another, no log file (dockerd's builder sets
the "none" log driver), the step's Env/User/WorkingDir/Shell from its run config."""
from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Callable, Iterator

from ..build.steps import Output
from ..stdcopy import demux
from .errors import EngineError, NotFound

if TYPE_CHECKING:
    from .containers import Engine

# The run config's fields a step container takes (a healthcheck or a stop signal has no
# part in a build step; ExposedPorts publish nothing without PortBindings).
_STEP_FIELDS = ("User", "Env", "Cmd", "Entrypoint", "WorkingDir", "Volumes", "Labels", "ExposedPorts", "Shell")
# Marks the containers of build steps: those a killed daemon left are removed at its start.
STEP_LABEL = "org.sampan.build-step"
_CHUNK = 65536


class EngineStepContainer:
    def __init__(self, engine: Engine, cid: str, exit_code: int) -> None:
        self.engine, self.id, self.exit_code = engine, cid, exit_code
        self.rootfs_key = cid   # (the engine keys a container's snapshot by its id)

    def remove(self) -> None:
        try:
            self.engine.remove(self.id, force=True, volumes=True)
        except NotFound:
            pass


class EngineStepRunner:
    """``build.steps.StepRunner`` on an Engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, image_id: str, config: dict, network: str = "none", extra_hosts: list[str] | None = None,
               resources: dict | None = None) -> EngineStepContainer:
        body: dict = {k: config[k] for k in _STEP_FIELDS if config.get(k) is not None}
        body["Image"] = image_id
        body["Labels"] = {**(config.get("Labels") or {}), STEP_LABEL: "1"}
        body["HostConfig"] = {**(resources or {}), "NetworkMode": network, "ExtraHosts": list(extra_hosts or ()),
                              "LogConfig": {"Type": "none"}}
        return EngineStepContainer(self.engine, self.engine.create(body), -1)

    def run(self, image_id: str, config: dict, *, network: str, extra_hosts: list[str],
            started: Callable[[str], None], output: Output, cancel: threading.Event | None = None,
            resources: dict | None = None) -> EngineStepContainer:
        container = self.create(image_id, config, network or "default", extra_hosts, resources)
        cid = container.id
        done = threading.Event()
        try:
            started(cid)
            stream = self.engine.attach(cid, stdin=False, stdout=True, stderr=True)
            try:
                self.engine.start(cid)
                if cancel is not None:
                    threading.Thread(target=self._kill_on, args=(cancel, done, cid), daemon=True,
                                     name="build-step-cancel").start()
                _copy_frames(stream, output)
            finally:
                done.set()
                stream.close()
            container.exit_code = int(self.engine.wait(cid)["StatusCode"])
        except BaseException:
            container.remove()
            raise
        return container

    def _kill_on(self, cancel: threading.Event, done: threading.Event, cid: str) -> None:
        """The build was cancelled (its client went away): the running step is killed."""
        while not done.is_set():
            if cancel.wait(0.2):
                try:
                    self.engine.kill(cid)
                except EngineError:
                    pass   # (it has just exited)
                return

    def sweep(self) -> None:
        """Remove the step containers a killed daemon left (at startup: no build runs)."""
        for summary in self.engine.list(all=True, filters={"label": [STEP_LABEL]}):
            EngineStepContainer(self.engine, summary["Id"], -1).remove()


def _copy_frames(sock: socket.socket, output: Output) -> None:
    """Docker's multiplexed frames from the attach stream to ``output`` until it ends."""
    for stream, data in demux(_chunks(sock)):
        output(stream, data)


def _chunks(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data = sock.recv(_CHUNK)
        except OSError as e:
            raise EngineError(f"reading the step's output: {e.strerror}") from None
        if not data:
            return
        yield data
