"""exec: create, start (attached through the supervisor, or detached), inspect and wait."""
from __future__ import annotations

import json
import os
import secrets
import threading
import time
from typing import Any

from .. import spec as _spec
from ..errors import Conflict, EngineError, InvalidParameter, NotFound
from .base import EngineBase


class ExecMixin(EngineBase):
    def exec_create(self, ref: str, body: dict) -> str:
        rec = self._get(ref)
        if rec["state"]["Status"] == "paused":
            raise Conflict(f"Container {rec['id']} is paused, unpause the container before exec")
        if rec["state"]["Status"] != "running":
            raise Conflict(f"Container {rec['id']} is not running")
        cmd = _spec._strslice(body.get("Cmd"))
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
        proc["env"] = _spec.merge_env(proc.get("env") or [], config.get("Env") or [])
        if config.get("Tty") and not any(e.startswith("TERM=") for e in proc["env"]):
            proc["env"].append("TERM=xterm")
        if config.get("WorkingDir"):
            proc["cwd"] = config["WorkingDir"]
        if config.get("User"):
            rootfs = os.path.join(self.cdir(rec["id"]), "rootfs")
            try:
                proc["user"] = _spec.resolve_user(rootfs, config["User"])
            except _spec.SpecInputError as e:
                raise InvalidParameter(str(e)) from None
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
        or None when detached. Its exit is recorded by a waiter thread."""
        from ...supervisor.client import SupervisorError
        ex = self.store.exec(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        if ex["state"].get("Running") or ex["state"].get("ExitCode") is not None:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        rec = self._get(ex["container_id"])
        if rec["state"]["Status"] != "running":
            raise Conflict(f"Container {rec['id']} is not running")
        config = ex["config"]
        if tty is not None:
            config = dict(config, Tty=bool(tty))
        process = self._exec_process(rec, config)
        size = console_size or config.get("ConsoleSize")
        try:
            self._sup()
            if detach:
                fields: dict[str, Any] = {"container": rec["id"], "exec_id": exec_id, "process": process,
                                          "tty": bool(config["Tty"]), "stdin": False, "detach": True}
                pid = int(self._call("exec", **fields)["pid"])
                sock = None
            else:
                pid, sock = self._sup_client.exec_attached(rec["id"], exec_id, process, tty=bool(config["Tty"]),
                                                           stdin=bool(config.get("AttachStdin")),
                                                           console_size=size if size and any(size) else None)
        except SupervisorError as e:
            msg = str(e)
            low = msg.lower()
            code = 127 if ("no such file" in low or "not found" in low) else 126
            self.store.update_exec(exec_id, Running=False, ExitCode=code, Error=msg)
            if e.code == "conflict":
                raise Conflict(msg) from None
            raise EngineError(f"OCI runtime exec failed: {msg}") from None
        self.store.update_exec(exec_id, Running=True, Pid=pid)
        self._emit(rec, "exec_start: " + " ".join(config["Cmd"]), execID=exec_id)
        threading.Thread(target=self._exec_waiter, args=(exec_id, rec), daemon=True).start()
        return sock

    def _exec_waiter(self, exec_id: str, rec: dict) -> None:
        from ...supervisor.client import Client, SupervisorError
        try:
            reply = Client(self.exec_root).call("wait", exec_id=exec_id)
            code = int(reply.get("exit_code") or 0)
        except SupervisorError:
            code = 137
        try:
            self.store.update_exec(exec_id, Running=False, ExitCode=code, Pid=0)
        except Exception:  # noqa: BLE001 - the container (and its execs) may be gone
            return
        self._notify()
        self._emit(rec, "exec_die", execID=exec_id, exitCode=str(code))

    def exec_inspect(self, exec_id: str) -> dict:
        ex = self.store.exec(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        c, s = ex["config"], ex["state"]
        return {"ID": exec_id, "Running": bool(s.get("Running")), "ExitCode": s.get("ExitCode"),
                "ProcessConfig": {"tty": c["Tty"], "entrypoint": c["Cmd"][0], "arguments": c["Cmd"][1:],
                                  "privileged": c["Privileged"], "user": c["User"]},
                "OpenStdin": c["AttachStdin"], "OpenStderr": c["AttachStderr"], "OpenStdout": c["AttachStdout"],
                "CanRemove": False, "ContainerID": ex["container_id"], "DetachKeys": "",
                "Pid": int(s.get("Pid") or 0)}

    def exec_wait(self, exec_id: str, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                ex = self.store.exec(exec_id)
                if ex is None:
                    raise NotFound(f"No such exec instance: {exec_id}")
                if not ex["state"].get("Running") and ex["state"].get("ExitCode") is not None:
                    return int(ex["state"]["ExitCode"])
                if time.monotonic() > deadline:
                    raise EngineError("timed out waiting for the exec")
                self._changed.wait(0.1)

