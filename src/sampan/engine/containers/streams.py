"""A container's streams: its json-file log (read, followed), attach, resize, and export of
its filesystem as a tar."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any, Iterator

from ...timefmt import parse_rfc3339
from ..errors import Conflict, EngineError, NotFound
from .base import EngineBase, time_arg


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
        since_t, until_t = time_arg(since), time_arg(until)
        n = None if tail in (None, "", "all") or int(tail) < 0 else int(tail)
        path = self._log_path(cid)
        want = {"stdout": stdout, "stderr": stderr}

        def emit(line: bytes) -> tuple[str, bytes] | None:
            try:
                e = json.loads(line)
            except ValueError:
                return None
            s = e.get("stream", "stdout")
            if not want.get(s, False):
                return None
            t = e.get("time", "")
            if since_t is not None or until_t is not None:
                ts = parse_rfc3339(t)
                if since_t is not None and ts < since_t:
                    return None
                if until_t is not None and ts > until_t:
                    return None
            data = e.get("log", "").encode("utf-8", "surrogateescape")
            if timestamps:
                data = t.encode() + b" " + data
            return s, data

        files = [f"{path}.{i}" for i in range(9, 0, -1)] + [path]
        lines: list[bytes] = []
        for p in files:
            try:
                with open(p, "rb") as f:
                    lines += f.read().splitlines()
            except OSError:
                pass
        pos_inode = None
        pos = 0
        try:
            st = os.stat(path)
            pos_inode, pos = st.st_ino, st.st_size
        except OSError:
            pass
        if n is not None:
            selected = [x for x in (emit(l) for l in lines) if x]
            selected = selected[-n:] if n else []
            yield from selected
        else:
            for l in lines:
                x = emit(l)
                if x:
                    yield x
        if not follow:
            return
        buf = b""
        f = None
        try:
            while stop is None or not stop.is_set():
                if f is None:
                    try:
                        f = open(path, "rb")
                        st = os.fstat(f.fileno())
                        if st.st_ino == pos_inode:
                            f.seek(pos)
                        pos_inode = st.st_ino
                    except OSError:
                        f = None
                chunk = f.read() if f is not None else b""
                if chunk:
                    buf += chunk
                    *complete, buf = buf.split(b"\n")
                    for l in complete:
                        x = emit(l)
                        if x:
                            yield x
                    continue
                # rotated? reopen the new file
                try:
                    if f is not None and os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                        f.close()
                        f, pos_inode, pos = None, None, 0
                        continue
                except OSError:
                    pass
                cur = self.store.get(cid)
                if cur is None or cur["state"]["Status"] not in ("running", "paused", "restarting"):
                    # drain what the supervisor flushed at exit, then stop
                    time.sleep(0.05)
                    chunk = f.read() if f is not None else b""
                    if chunk:
                        buf += chunk
                        continue
                    return
                if until_t is not None and time.time() > until_t:
                    return
                with self._changed:
                    self._changed.wait(0.1)
        finally:
            if f is not None:
                f.close()

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
            status = rec["state"]["Status"]
            if status == "paused":
                raise Conflict(f"container {ref} is paused, unpause the container before attach")
            if status == "restarting":
                raise Conflict(f"container {ref} is restarting, wait until the container is running")
            if status not in ("running", "created", "exited") or cid in self._removing:
                raise Conflict(f"container {ref} is {status}: it cannot be attached to")
            if status != "running":
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
        import tarfile
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
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(os.listdir(rootfs)):
                    tar.add(os.path.join(rootfs, name), arcname=name, recursive=True)
        finally:
            if mounted_here:
                with self._lock(cid):
                    current = self.store.get(cid)
                    if current is not None and cid not in self._prepared and \
                            current["state"]["Status"] in ("created", "exited", "dead"):
                        self._unmount(cid)

