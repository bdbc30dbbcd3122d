"""exec: create, start (attached through the supervisor, or detached), inspect and wait."""
from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

from .. import spec as _spec
from ..errors import Conflict, EngineError, InvalidParameter, NotFound
from ..users import resolve_user
from .base import EngineBase
from .state import require


class ExecMixin(EngineBase):
    def exec_create(self, ref: str, body: dict) -> str:
        rec = self._get(ref)
        require("exec", self._status(rec), ref, rec["id"], rec["name"])
        cmd = _spec.strslice(body.get("Cmd"))
        if not cmd:
            raise InvalidParameter("No exec command specified")
        eid = secrets.token_hex(32)
        config = {"Cmd": cmd, "Env": body.get("Env") or [], "User": body.get("User") or "",
                  "WorkingDir": body.get("WorkingDir") or "", "Tty": bool(body.get("Tty")),
                  "AttachStdin": bool(body.get("AttachStdin")), "AttachStdout": bool(body.get("AttachStdout")),
                  "AttachStderr": bool(body.get("AttachStderr")), "Privileged": bool(body.get("Privileged")),
                  "ConsoleSize": body.get("ConsoleSize")}
        self.store.add_exec(eid, rec["id"], config, {"Running": False, "ExitCode": None, "Pid": 0})
        self._emit(rec, "exec_create: " + " ".join(cmd), execID=eid)
        return eid

    def _exec_process(self, rec: dict, config: dict) -> dict:
        with open(os.path.join(self._bundle(rec["id"]), "config.json")) as f:
            oci = json.load(f)
        proc = dict(oci["process"])
        proc["args"] = list(config["Cmd"])
        proc["env"] = _spec.process_env(proc.get("env") or [], config.get("Env") or [])
        if config.get("Tty") and not any(e.startswith("TERM=") for e in proc["env"]):
            proc["env"].append("TERM=xterm")
        if config.get("WorkingDir"):
            proc["cwd"] = config["WorkingDir"]
        if config.get("User"):
            rootfs = os.path.join(self.cdir(rec["id"]), "rootfs")
            proc["user"] = resolve_user(rootfs, config["User"])
            if proc["user"]["uid"] != 0:
                caps = proc.get("capabilities") or {}
                proc["capabilities"] = {**caps, "effective": [], "permitted": []}
        if config.get("Privileged"):
            caps = _spec.host_capabilities()
            proc["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
        proc["terminal"] = bool(config.get("Tty"))
        proc.pop("consoleSize", None)
        return proc

    def exec_start(self, exec_id: str, detach: bool = False, tty: bool | None = None,
                   console_size: list[int] | None = None):
        """Starts the exec; returns the attached socket (multiplexed frames without a tty)
        or None when detached. Its exit comes with the supervisor's exit events (exits.py)."""
        from ...supervisor.client import SupervisorError
        ex = self.store.exec(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        if ex["state"].get("Running") or ex["state"].get("ExitCode") is not None:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        rec = self._get(ex["container_id"])
        require("exec", self._status(rec), rec["id"], rec["id"], rec["name"])
        config = ex["config"]
        if tty is not None:
            config = dict(config, Tty=bool(tty))
        process = self._exec_process(rec, config)
        size = console_size or config.get("ConsoleSize")
        # Running before the supervisor starts it: its exit event may come before exec returns.
        self.store.update_exec(exec_id, Running=True)
        try:
            if detach:
                fields: dict[str, Any] = {"container": rec["id"], "exec_id": exec_id, "process": process,
                                          "tty": bool(config["Tty"]), "stdin": False, "detach": True}
                started = self._call("exec", **fields)
                pid, sock = int(started["pid"]), None
            else:
                pid, sock = self._sup().exec_attached(rec["id"], exec_id, process, tty=bool(config["Tty"]),
                                                      stdin=bool(config.get("AttachStdin")),
                                                      console_size=size if size and any(size) else None)
        except BaseException as e:
            self.store.update_exec(exec_id, only_if=lambda s: s.get("ExitCode") is None, Running=False)
            if isinstance(e, SupervisorError):
                if e.code == "conflict":
                    raise Conflict(str(e)) from None
                raise EngineError(f"OCI runtime exec failed: {e}") from None
            raise
        if detach and started.get("error"):
            # The process could not be started (no such binary, not executable, a bad cwd):
            # the supervisor has recorded it as exited with 126/127, which an attached start
            # reports on its stream; a detached start has no stream, and dockerd answers it
            # with the runtime's error (400).
            self._on_exec_exit(exec_id, started)
            raise InvalidParameter(f"OCI runtime exec failed: {started['error']}: unknown")
        self.store.update_exec(exec_id, only_if=lambda s: s.get("ExitCode") is None, Pid=pid)
        self._emit(rec, "exec_start: " + " ".join(config["Cmd"]), execID=exec_id)
        return sock

    def exec_inspect(self, exec_id: str) -> dict:
        ex = self._exec_now(exec_id)
        c, s = ex["config"], ex["state"]
        return {"ID": exec_id, "Running": bool(s.get("Running")), "ExitCode": s.get("ExitCode"),
                "ProcessConfig": {"tty": c["Tty"], "entrypoint": c["Cmd"][0], "arguments": c["Cmd"][1:],
                                  "privileged": c["Privileged"], "user": c["User"]},
                "OpenStdin": c["AttachStdin"], "OpenStderr": c["AttachStderr"], "OpenStdout": c["AttachStdout"],
                "CanRemove": False, "ContainerID": ex["container_id"], "DetachKeys": "",
                "Pid": int(s.get("Pid") or 0)}

    def _exec_now(self, exec_id: str) -> dict:
        """The exec's record, never staler than the supervisor: one recorded as running is
        checked there (its exit event may still be on its way while a client, whose stream
        has ended, asks already)."""
        from ...supervisor.client import SupervisorError
        ex = self.store.exec(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        if ex["state"].get("Running"):
            try:
                known = self._call("exec_state", exec_id=exec_id)
            except SupervisorError:
                return ex  # (not started yet, or its supervisor is gone: the catch-up settles it)
            if known.get("status") == "exited":
                self._on_exec_exit(exec_id, known)
                ex = self.store.exec(exec_id) or ex
        return ex

    def exec_wait(self, exec_id: str, timeout: float = 60.0) -> int:
        """The exec's exit code, once it has exited."""
        deadline = time.monotonic() + timeout
        while True:
            state = self._exec_now(exec_id)["state"]
            if state.get("ExitCode") is not None:
                return int(state["ExitCode"])
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineError("timed out waiting for the exec")
            with self._changed:  # (an exit recorded between the look and this wait: 0.1 s late)
                self._changed.wait(min(0.1, left))
