"""A container's streams: its json-file log (read, followed), attach, resize, and export of
its filesystem as a tar."""
from __future__ import annotations

import socket
import threading
from typing import Any, Iterator

from ...logs import jsonfile
from ..errors import Conflict, EngineError, InvalidParameter, NotFound, Unsupported
from .base import EngineBase, time_arg
from .state import ACTIVE, STOPPED, Status, require, status_of


def _ended_stream() -> socket.socket:
    """An attach stream that is over already."""
    ours, theirs = socket.socketpair()
    theirs.close()
    return ours


class StreamsMixin(EngineBase):
    def logs(self, ref: str, stdout: bool = True, stderr: bool = True, follow: bool = False,
             since: Any = None, until: Any = None, tail: Any = "all", timestamps: bool = False,
             stop: threading.Event | None = None) -> Iterator[tuple[str, bytes]]:
        rec = self._get(ref)
        cid = rec["id"]
        if (rec["host_config"].get("LogConfig") or {}).get("Type") == "none":
            raise Unsupported("configured logging driver does not support reading")
        try:
            lines = jsonfile.parse_tail(tail)
        except ValueError as e:
            raise InvalidParameter(str(e)) from None

        def is_running() -> bool:
            cur = self.store.get(cid)
            return cur is not None and status_of(cur["state"]) in ACTIVE

        def wait(seconds: float) -> None:
            with self._changed:
                self._changed.wait(seconds)

        return jsonfile.read(self._log_path(cid), stdout=stdout, stderr=stderr, since=time_arg(since),
                             until=time_arg(until), tail=lines, follow=follow, timestamps=timestamps,
                             is_running=is_running, wait=wait,
                             stopped=(stop.is_set if stop is not None else lambda: False))

    # ------------------------------------------------------------------ attach
    def attach(self, ref: str, stdin: bool = False, stdout: bool = True, stderr: bool = True):
        """A socket with the container's stdio (see supervisor.client.Client.attach).

        A container that is not running (created, or exited: `docker start -a`) is created
        in the supervisor first, its init waiting for the start, so the stream carries its
        output from the first byte and its stdin from the start. When that fails (the start
        will fail the same way and report it), the stream is an empty one."""
        from ...supervisor.client import SupervisorError
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            rec = self._get(cid)
            status = self._status(rec)
            require("attach", status, ref, cid, rec["name"])
            if status is not Status.RUNNING:
                try:
                    self._prepare_locked(rec)
                except (SupervisorError, EngineError):
                    return _ended_stream()
            try:
                self._sup()
                return self._sup_client.attach(container=cid, stdin=stdin, stdout=stdout, stderr=stderr)
            except SupervisorError as e:
                if e.code == "not_found":  # it has just exited (and been deleted)
                    return _ended_stream()
                raise EngineError(str(e)) from None

    def resize(self, ref: str, height: int, width: int, exec_id: str | None = None) -> None:
        from ...supervisor.client import SupervisorError
        fields = {"exec_id": exec_id} if exec_id else {"container": self._get(ref)["id"]}
        try:
            self._call("resize", height=int(height), width=int(width), **fields)
        except SupervisorError as e:
            if e.code == "not_found":
                raise NotFound(str(e)) from None
            raise Conflict(str(e)) from None

    # ------------------------------------------------------------------ export
    def export(self, ref: str, out: Any) -> None:
        """Writes the container's filesystem (the merged view its process sees) as a tar."""
        from ...image import layers
        rec = self._get(ref)
        cid = rec["id"]
        with self._lock(cid):
            mounted_here = not self.images.snapshots.mounted(cid)
            if mounted_here:
                try:
                    self.images.snapshots.mount(cid)
                except Exception as e:  # noqa: BLE001
                    raise EngineError(f"failed to mount the rootfs: {e}") from None
        try:
            rootfs = self.images.snapshots.get(cid).rootfs
            layers.export(rootfs, out)   # the image layer's tar writer: sorted, numeric owners, xattrs
        finally:
            if mounted_here:
                with self._lock(cid):
                    current = self.store.get(cid)
                    if current is not None and cid not in self._prepared and \
                            status_of(current["state"]) in STOPPED:
                        self._unmount(cid)

