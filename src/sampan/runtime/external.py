"""An external OCI runtime (runc, crun, or any binary with runc's command line), driven
through its CLI as containerd's runc shim drives it:

    <binary> [runtimeArgs] --root R --log F --log-format json create --bundle B
             [--console-socket S] --pid-file P ID
    start ID | kill [--all] ID SIG | delete [--force] ID | pause ID | resume ID
    ps --format json ID | events --stats ID | state ID | update --resources - ID
    exec --process F --detach --pid-file P [--console-socket S] ID

Without a terminal the caller's stdio (ProcessOptions.stdio) is the runtime's own, which it
passes through to the container's process. With one, the runtime sends the pty master over
--console-socket; it is handed on as ProcessOptions.terminal_receiver, so a caller takes it
exactly as from the built-in runtime (console.recv_master). The process is the runtime's
child, so the caller must be a subreaper (the supervisor is) to reap it.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from typing import Any

from .container import CreateOptions, ExecOptions, ProcessOptions
from .errors import BadState, ContainerExists, ContainerNotFound, RuntimeError_

CALL_TIMEOUT = 60.0  # seconds one runtime command may take (a create pulls in hooks)


class ExternalRuntime:
    def __init__(self, name: str, binary: str, root: str, args: list[str] | tuple[str, ...] = ()) -> None:
        self.name = name
        self.binary = binary
        self.root = root
        self.args = list(args)

    # -- running the binary -------------------------------------------------------------
    def _run(self, *argv: str, stdio: tuple[int, int, int] | None = None, input_data: bytes | None = None,
             log: str | None = None) -> bytes:
        """Runs one command; its stdout, or a runtime error carrying what it said."""
        cmd = [self.binary, *self.args, "--root", self.root]
        if log:
            cmd += ["--log", log, "--log-format", "json"]
        cmd += list(argv)
        if stdio is not None:
            stdin, stdout, stderr = stdio
            capture = False
        else:
            # (with input_data, run() makes stdin a pipe itself)
            stdin, stdout, stderr = (None if input_data is not None else subprocess.DEVNULL,
                                     subprocess.PIPE, subprocess.PIPE)
            capture = True
        try:
            proc = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=stderr, input=input_data,
                                  timeout=CALL_TIMEOUT, close_fds=True)
        except FileNotFoundError:
            raise RuntimeError_(f"runtime {self.name}: {self.binary}: no such file or directory") from None
        except PermissionError:
            raise RuntimeError_(f"runtime {self.name}: {self.binary}: permission denied") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError_(f"runtime {self.name}: {argv[0]} timed out after {CALL_TIMEOUT:.0f}s") from None
        if proc.returncode != 0:
            said = (proc.stderr or b"").decode(errors="replace") if capture else ""
            raise _error(_log_error(log) or said or f"{argv[0]} exited with status {proc.returncode}")
        return proc.stdout if capture and proc.stdout else b""

    def _json(self, *argv: str) -> Any:
        out = self._run(*argv)
        try:
            return json.loads(out)
        except ValueError:
            raise RuntimeError_(f"runtime {self.name}: {argv[0]}: unreadable output {out[:200]!r}") from None

    def _with_process(self, verb: list[str], container_id: str, opts: ProcessOptions, terminal: bool,
                      work: str) -> int:
        """create or exec: stdio, console socket and pid file wired as the caller asked."""
        pid_file = os.path.join(work, "pid")
        argv = verb + ["--pid-file", pid_file]
        console = None
        if terminal:
            if opts.console_socket:
                argv += ["--console-socket", opts.console_socket]
            elif opts.own_terminal:
                console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                console.bind(os.path.join(work, "console.sock"))
                console.listen(1)
                argv += ["--console-socket", os.path.join(work, "console.sock")]
            else:
                raise RuntimeError_("cannot allocate tty if runc will detach without setting console socket")
        # With a terminal the runtime's own stdio carries nothing of the container's.
        stdio = None if terminal or opts.stdio is None else opts.stdio
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) if stdio is None else -1
        try:
            self._run(*argv, container_id, stdio=stdio or (devnull, devnull, devnull),
                      log=os.path.join(work, "log.json"))
            with open(pid_file) as f:
                pid = int(f.read().strip())
            if console is not None:
                # (connected and sent before the runtime exited: it waits in the backlog)
                console.settimeout(5)
                opts.terminal_receiver = console.accept()[0]
            if opts.pid_file:
                shutil.copyfile(pid_file, os.path.abspath(opts.pid_file))
            return pid
        finally:
            if devnull >= 0:
                os.close(devnull)
            if console is not None:
                console.close()

    # -- the protocol (runtime/api.py) ---------------------------------------------------
    def create(self, container_id: str, bundle: str, opts: CreateOptions | None = None) -> int:
        opts = opts or CreateOptions()
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        bundle = os.path.abspath(bundle)
        try:
            with open(os.path.join(bundle, "config.json")) as f:
                terminal = bool((json.load(f).get("process") or {}).get("terminal"))
        except (OSError, ValueError) as e:
            raise RuntimeError_(f"bundle {bundle}: config.json: {e}") from None
        verb = ["create", "--bundle", bundle] + (["--no-pivot"] if opts.no_pivot else [])
        if opts.preserve_fds:
            verb += ["--preserve-fds", str(opts.preserve_fds)]
        with tempfile.TemporaryDirectory(prefix="sampan-rt-") as work:
            return self._with_process(verb, container_id, opts, terminal, work)

    def start(self, container_id: str) -> None:
        self._run("start", container_id)

    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        self._run("kill", *(["--all"] if all_processes else []), container_id, str(int(sig)))

    def delete(self, container_id: str, force: bool = False) -> None:
        try:
            self._run("delete", *(["--force"] if force else []), container_id)
        except ContainerNotFound:
            if not force:
                raise

    def pause(self, container_id: str) -> None:
        self._run("pause", container_id)

    def resume(self, container_id: str) -> None:
        self._run("resume", container_id)

    def pids(self, container_id: str) -> list[int]:
        return [int(p) for p in self._json("ps", "--format", "json", container_id) or []]

    def stats(self, container_id: str) -> dict[str, Any]:
        event = self._json("events", "--stats", container_id)
        return _stats_from_runc(event.get("data") or {})

    def oom_killed(self, container_id: str) -> bool:
        """Read from the container's cgroup (where the runtime made it, by linux.cgroupsPath)."""
        try:
            with open(os.path.join(self.state(container_id)["bundle"], "config.json")) as f:
                cgroups_path = (json.load(f).get("linux") or {}).get("cgroupsPath")
            from .cgroups import manager_for
            return bool(manager_for(cgroups_path, container_id).oom_killed())
        except (OSError, ValueError, KeyError, RuntimeError_):
            return False

    def exec(self, container_id: str, proc: dict[str, Any], opts: ExecOptions | None = None) -> int:
        opts = opts or ExecOptions()
        if not opts.detach:
            raise RuntimeError_(f"runtime {self.name}: exec is always detached here; the caller holds the stdio")
        with tempfile.TemporaryDirectory(prefix="sampan-rt-") as work:
            process_file = os.path.join(work, "process.json")
            with open(process_file, "w") as f:
                json.dump(proc, f)
            verb = ["exec", "--process", process_file, "--detach"]
            if opts.preserve_fds:
                verb += ["--preserve-fds", str(opts.preserve_fds)]
            return self._with_process(verb, container_id, opts, bool(proc.get("terminal")), work)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        self._run("update", "--resources", "-", container_id, input_data=json.dumps(resources).encode())

    def state(self, container_id: str) -> dict[str, Any]:
        return self._json("state", container_id)


def _log_error(path: str | None) -> str:
    """The last error the runtime wrote to its --log (JSON lines, logrus style)."""
    if not path:
        return ""
    message = ""
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg") or "")
    except OSError:
        pass
    return message


def _error(message: str) -> RuntimeError_:
    """runc's messages -> the runtime's error classes (one line)."""
    message = " ".join(message.split())
    low = message.lower()
    if "does not exist" in low:
        return ContainerNotFound(message)
    if "container with id exists" in low or "already exists" in low:
        return ContainerExists(message)
    if any(text in low for text in ("not running", "not paused", "not stopped", "is stopped", "is paused",
                                    "already paused", "cannot start", "cannot exec in a")):
        return BadState(message)
    return RuntimeError_(message)


def _stats_from_runc(data: dict[str, Any]) -> dict[str, Any]:
    """runc's `events --stats` data -> the shape of cgroups.Manager.stats()."""
    out: dict[str, Any] = {}
    memory = data.get("memory")
    if memory:
        usage = memory.get("usage") or {}
        limit = usage.get("limit")
        out["memory"] = {"usage": usage.get("usage", 0), "max_usage": usage.get("max") or None,
                         "limit": None if not limit or limit >= 1 << 62 else limit, "stat": memory.get("raw") or {}}
    cpu = data.get("cpu")
    if cpu:
        usage, throttling = cpu.get("usage") or {}, cpu.get("throttling") or {}
        out["cpu"] = {"usage_ns": usage.get("total", 0), "user_ns": usage.get("user", 0),
                      "system_ns": usage.get("kernel", 0), "periods": throttling.get("periods", 0),
                      "throttled_periods": throttling.get("throttledPeriods", 0),
                      "throttled_ns": throttling.get("throttledTime", 0)}
        if usage.get("percpu"):
            out["cpu"]["percpu_ns"] = usage["percpu"]
    pids = data.get("pids")
    if pids:
        out["pids"] = {"current": pids.get("current", 0), "limit": pids.get("limit") or None}
    return out
