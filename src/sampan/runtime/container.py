"""The runtime's operations on containers: create, start, run, exec, kill, delete, state, pause.

This is the parent side; init.py is what the forked children run.
"""
from __future__ import annotations

import _signal
import _socket
import os
import time

from . import hooks, state as st
from .errors import BadState, ContainerNotFound, RuntimeError_
from .fsutil import atomic_write, remove_tree
from .sync import Channel, ChildError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .init import InitOptions

# create and exec import what they use (the spec, the init's side) themselves: the other
# verbs, each a process of its own when containerd or dockerd runs them, need none of it.


class ProcessOptions:
    """How the runtime wires up a container's first process (create) or an extra one (exec)."""

    def __init__(self, console_socket: str | None = None, pid_file: str | None = None, preserve_fds: int = 0,
                 own_terminal: bool = False, stdio: tuple[int, int, int] | None = None) -> None:
        self.console_socket = console_socket
        self.pid_file = pid_file
        self.preserve_fds = preserve_fds
        # The process's stdin, stdout, stderr when not ours (a supervisor's pipes).
        self.stdio = stdio
        # A terminal without a console socket: the caller gets the pty master through
        # terminal_receiver and proxies it, as runc does for a foreground run.
        self.own_terminal = own_terminal
        self.terminal_receiver: _socket.socket | None = None


class CreateOptions(ProcessOptions):
    def __init__(self, *, no_pivot: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.no_pivot = no_pivot


class ExecOptions(ProcessOptions):
    def __init__(self, *, detach: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.detach = detach


class Runtime:
    def __init__(self, root: str = st.DEFAULT_ROOT, systemd_cgroup: bool = False,
                 warn: Callable[[str], None] | None = None, precompile_seccomp: bool = False) -> None:
        self.root = root
        # A long-lived caller (the engine's supervisor) builds seccomp filters before forking
        # the init, once per distinct profile, rather than in every init.
        self.precompile_seccomp = precompile_seccomp
        self.systemd_cgroup = systemd_cgroup
        self.warn = warn or (lambda message: None)

    # -- create / start ---------------------------------------------------------------
    def create(self, container_id: str, bundle: str, opts: CreateOptions | None = None) -> int:
        opts = opts or CreateOptions()
        from .. import timefmt
        from ..oci import runtime_spec
        from . import validate
        from .init import InitOptions

        st.check_id(container_id)
        bundle = os.path.abspath(bundle)
        spec = runtime_spec.load(bundle)
        self._precompile(spec)  # (before validating: a filter just built needs no other check)
        rootfs, warnings = validate.for_create(spec, bundle)
        for warning in warnings:
            self.warn(warning)
        proc = spec["process"]
        if proc.get("terminal") and not opts.console_socket and not opts.own_terminal:
            raise RuntimeError_("cannot allocate tty if runc will detach without setting console socket")
        if not proc.get("terminal") and opts.console_socket:
            raise RuntimeError_("cannot use console socket if runc will not detach or allocate tty")
        state_dir = st.reserve(self.root, container_id)
        record: dict[str, Any] = {
            "id": container_id, "pid": 0, "pid_start": None, "bundle": bundle, "rootfs": rootfs,
            "created": timefmt.rfc3339_ns(), "ociVersion": spec.get("ociVersion"),
            "annotations": spec.get("annotations") or {}, "config": spec, "cgroup": None,
        }
        if not any(n.get("type") == "mount" for n in (spec.get("linux") or {}).get("namespaces") or []):
            # Its mounts will be made in our namespace: delete takes away those that are new.
            from .rootfs import mounts_at_or_below
            record["premounts"] = [mount_id for mount_id, _ in mounts_at_or_below(rootfs)]
        listener = console = None
        try:
            listener = _listen(state_dir, st.EXEC_SOCKET)
            console = _console_for(proc, opts)
            init_opts = InitOptions(spec=spec, process=proc, bundle=bundle, rootfs=rootfs, no_pivot=opts.no_pivot,
                                    preserve_fds=opts.preserve_fds, console=console, exec_listener=listener,
                                    stdio=opts.stdio)
            pid = self._spawn(init_opts, record)
            if opts.pid_file:
                atomic_write(os.path.abspath(opts.pid_file), str(pid).encode(), 0o644)
            return pid
        except BaseException:
            if record["cgroup"]:
                from .cgroups import manager_from_state
                _quietly(manager_from_state(record["cgroup"]).destroy)
            _unmount_shared(record)
            remove_tree(state_dir)
            raise
        finally:
            for sock in (listener, console):
                if sock is not None:
                    sock.close()

    def _precompile(self, spec: dict[str, Any]) -> None:
        cfg = (spec.get("linux") or {}).get("seccomp")
        if self.precompile_seccomp and cfg:
            from . import seccomp
            try:
                seccomp.precompile(cfg)
            except (OSError, ValueError):
                pass  # the init builds it and reports what is wrong

    def _cgroup_for(self, spec: dict[str, Any], container_id: str) -> Any:
        from .cgroups import manager_for
        return manager_for((spec.get("linux") or {}).get("cgroupsPath"), container_id, systemd=self.systemd_cgroup)

    def _new_cgroup(self, record: dict[str, Any]) -> Any:
        cgroup = self._cgroup_for(record["config"], record["id"])
        try:
            cgroup.create()
        except BaseException:
            _quietly(cgroup.destroy)
            raise
        record["cgroup"] = cgroup.to_state()
        st.save(self.root, record)
        return cgroup

    def _spawn(self, opts: InitOptions, record: dict[str, Any]) -> int:
        """Fork the init and walk it through setup; returns its pid once it waits for start."""
        # The init waits for the parent after its rootfs is made when it needs hooks run or the
        # container state (a seccomp agent), or opens a device (its terminal) later: the parent
        # rewrites the devices cgroup then, and v1 does that rule by rule, from "deny all".
        spec_hooks = opts.spec.get("hooks") or {}
        opts.sync_hooks = any(spec_hooks.get(k) for k in ("prestart", "createRuntime", "createContainer",
                                                          "startContainer")) or \
            bool(((opts.spec.get("linux") or {}).get("seccomp") or {}).get("listenerPath")) or \
            bool(opts.process.get("terminal"))
        # Usually (a new pid namespace, nothing to join, no user or time namespace) the init is
        # forked straight into a pid namespace unshared for it here; else an intermediate child
        # enters or makes the namespaces and forks it (stage1).
        from .init import stage1, stage1_direct
        from .namespaces import new_kinds, plan
        entries = plan(opts.spec)
        new = new_kinds(entries)
        direct = not opts.join and "pid" in new and not new & {"user", "time"} and \
            all(path is None for _, path in entries)
        # Made before the fork: the child enters them first thing (cgroups/join.py).
        cgroup = self._new_cgroup(record)
        parent, child = Channel.pair()
        first, direct = _fork(opts, cgroup, direct)
        if first == 0:
            parent.close()
            (stage1_direct if direct else stage1)(child, opts)
        child.close()
        pid = first if direct else 0
        try:
            if not direct:
                msg = parent.recv()
                if msg["type"] == "userns":
                    from .namespaces import write_id_maps
                    write_id_maps(first, opts.spec.get("linux") or {})
                    parent.send("userns-done")
                    msg = parent.recv()
                pid = _expect(msg, "pid")["pid"]
                os.waitpid(first, 0)
            record.update(pid=pid, pid_start=st.process_start_time(pid))
            st.save(self.root, record)
            _set_oom_score(pid, opts.process, self.warn)
            parent.expect("hooks")
            # Limits apply once the root filesystem is made: a device rule may forbid its mknods.
            # (Without hooks the init goes on meanwhile: pivot_root, seccomp, capabilities.)
            from .device_rules import with_device_rules  # (loaded while the init works)
            resources = with_device_rules(opts.spec.get("linux") or {})
            if resources:
                cgroup.set(resources)
            if opts.sync_hooks:
                oci_state = {**st.oci_state(self.root, record), "status": "creating"}
                hooks.run(opts.spec, "prestart", oci_state)
                hooks.run(opts.spec, "createRuntime", oci_state)
                parent.send("hooks-done", state=oci_state)
            for warning in parent.expect("ready").get("warnings") or []:
                self.warn(warning)
            return pid
        except ChildError as e:
            raise RuntimeError_(str(e)) from None
        except BaseException:
            if pid:
                _kill_and_reap(pid)
            if not direct:
                _reap(first)
            raise
        finally:
            parent.close()

    def start(self, container_id: str) -> None:
        record = st.load(self.root, container_id)
        status = st.status(self.root, record)
        if status != "created":
            if status == "stopped":
                raise BadState("cannot start a container that has stopped")
            raise BadState(f"cannot start a container in the {status} state")
        state_dir = st.container_dir(self.root, container_id)
        conn = _connect(state_dir, st.EXEC_SOCKET)
        try:
            os.unlink(os.path.join(state_dir, st.EXEC_SOCKET))
            conn.send(b"0")
            error = b""
            while chunk := conn.recv(4096):
                error += chunk
        finally:
            conn.close()
        if error:
            raise RuntimeError_(error.decode(errors="replace"))
        if (record["config"].get("hooks") or {}).get("poststart"):  # (the state costs /proc and cgroup reads)
            try:
                hooks.run(record["config"], "poststart", st.oci_state(self.root, record))
            except hooks.HookError as e:
                self.warn(str(e))

    # -- queries ----------------------------------------------------------------------
    def state(self, container_id: str) -> dict[str, Any]:
        return st.oci_state(self.root, st.load(self.root, container_id))

    def list(self) -> list[dict[str, Any]]:
        out = []
        for cid in st.list_ids(self.root):
            try:
                out.append(self.state(cid))
            except RuntimeError_:
                continue
        return out

    def pids(self, container_id: str) -> list[int]:
        record = st.load(self.root, container_id)
        if not record.get("cgroup"):
            return []
        from .cgroups import manager_from_state
        return manager_from_state(record["cgroup"]).pids()

    # -- signals, pause ---------------------------------------------------------------
    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        record = st.load(self.root, container_id)
        status = st.status(self.root, record)
        if status in ("stopped", "creating"):
            raise BadState("container not running")
        if all_processes:
            from .cgroups import manager_from_state
            manager_from_state(record["cgroup"]).kill_all(sig)
            return
        os.kill(record["pid"], sig)

    def pause(self, container_id: str) -> None:
        record = st.load(self.root, container_id)
        status = st.status(self.root, record)
        if status not in ("running", "created"):
            raise BadState("container not running" if status == "stopped" else f"container already {status}")
        from .cgroups import manager_from_state
        manager_from_state(record["cgroup"]).freeze()

    def resume(self, container_id: str) -> None:
        record = st.load(self.root, container_id)
        if st.status(self.root, record) != "paused":
            raise BadState("container not paused")
        from .cgroups import manager_from_state
        manager_from_state(record["cgroup"]).thaw()

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Change the cgroup limits of a live container and remember them in its state."""
        record = st.load(self.root, container_id)
        if st.status(self.root, record) in ("stopped", "creating"):
            raise BadState("container not running")
        from .cgroups import manager_from_state
        manager_from_state(record["cgroup"]).set(resources)
        linux = record["config"].setdefault("linux", {})
        merged = linux.setdefault("resources", {})
        for key, value in resources.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
        st.save(self.root, record)

    # -- delete -----------------------------------------------------------------------
    def delete(self, container_id: str, force: bool = False) -> None:
        try:
            record = st.load(self.root, container_id)
        except ContainerNotFound:
            if force:
                return
            raise
        status = st.status(self.root, record)
        if status in ("running", "paused") and not force:
            raise BadState(f"cannot delete container {container_id} that is not stopped: {status}")
        cgroup = None
        if record.get("cgroup"):
            from .cgroups import manager_from_state
            cgroup = manager_from_state(record["cgroup"])
        if status != "stopped" and record.get("pid"):
            _quietly(lambda: os.kill(record["pid"], _signal.SIGKILL))
        if cgroup is not None and _quietly(cgroup.pids):
            # Processes of a container without its own pid namespace outlive the init.
            _quietly(lambda: cgroup.kill_all(_signal.SIGKILL))
            if status == "paused":
                _quietly(cgroup.thaw)
        _wait_gone(record)
        if cgroup is not None:
            _wait_empty(cgroup)
            cgroup.destroy()
        _unmount_shared(record)
        if record.get("pid") and ((record.get("config") or {}).get("hooks") or {}).get("poststop"):
            try:  # (only then: the state costs /proc and cgroup reads)
                hooks.run(record["config"], "poststop", {**st.oci_state(self.root, record), "status": "stopped"})
            except hooks.HookError as e:
                self.warn(str(e))
        remove_tree(st.container_dir(self.root, container_id))

    # -- exec ---------------------------------------------------------------------------
    def exec(self, container_id: str, proc: dict[str, Any], opts: ExecOptions | None = None) -> int:
        """Start `proc` inside the container; returns its pid."""
        opts = opts or ExecOptions()
        record = st.load(self.root, container_id)
        status = st.status(self.root, record)
        if status in ("stopped", "creating"):
            raise BadState("cannot exec in a stopped container")
        if status == "paused":
            raise BadState("cannot exec in a paused container")
        from . import process as process_mod
        for warning in process_mod.validate(proc):
            self.warn(warning)
        if proc.get("terminal") and not opts.console_socket and not opts.own_terminal:
            raise RuntimeError_("cannot allocate tty if runc will detach without setting console socket")
        spec = record["config"]
        from .namespaces import plan
        from ..linux.namespaces import KINDS
        join = [(kind, f"/proc/{record['pid']}/ns/{KINDS[kind][1]}") for kind, _ in plan(spec)]
        console = _console_for(proc, opts)
        from .cgroups import manager_from_state
        from .init import InitOptions, stage1
        cgroup = manager_from_state(record["cgroup"])
        init_opts = InitOptions(spec=spec, process=proc, preserve_fds=opts.preserve_fds, console=console, join=join,
                                stdio=opts.stdio)
        init_opts.state = st.oci_state(self.root, record)
        if not any(kind == "mount" for kind, _ in join):
            init_opts.chroot = f"/proc/{record['pid']}/root"
        self._precompile(spec)
        parent, child = Channel.pair()
        first, _ = _fork(init_opts, cgroup, new_pid_namespace=False)
        if first == 0:
            parent.close()
            stage1(child, init_opts)
        child.close()
        if console is not None:
            console.close()
        pid = 0
        try:
            pid = parent.expect("pid")["pid"]
            _reap(first)
            for warning in parent.expect("ready").get("warnings") or []:
                self.warn(warning)
            msg = parent.recv()  # eof once execve succeeded (the channel is close-on-exec)
            if msg["type"] == "error":
                raise ChildError(msg["message"])
        except ChildError as e:
            if pid:
                _reap(pid)
            raise RuntimeError_(str(e)) from None
        except BaseException:
            if pid:
                _kill_and_reap(pid)
            _reap(first)
            raise
        finally:
            parent.close()
        if opts.pid_file:
            atomic_write(os.path.abspath(opts.pid_file), str(pid).encode(), 0o644)
        return pid


def _unmount_shared(record: dict[str, Any]) -> None:
    """Take away what a container without a mount namespace of its own mounted in ours."""
    if "premounts" in record:
        from .rootfs import unmount_new
        unmount_new(record["rootfs"], record["premounts"])


def _console_for(proc: dict[str, Any], opts: CreateOptions | ExecOptions) -> _socket.socket | None:
    """The socket the init sends its pty master over, if the process wants a terminal."""
    if not proc.get("terminal"):
        return None
    if opts.console_socket:
        from . import console as console_mod
        return console_mod.connect(opts.console_socket)
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    opts.terminal_receiver = ours
    return theirs


def _expect(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    if msg["type"] == "error":
        raise ChildError(msg["message"])
    if msg["type"] != kind:
        raise ChildError(f"container init: expected {kind}, got {msg['type']}")
    return msg


def _listen(directory: str, name: str) -> _socket.socket:
    # Socket paths are limited to 108 bytes; binding relative to the directory avoids the limit.
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    cwd = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(directory)
        sock.bind(name)
        sock.listen(1)
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    return sock


def _connect(directory: str, name: str) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    cwd = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(directory)
        sock.connect(name)
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    return sock


def _set_oom_score(pid: int, proc: dict[str, Any], warn: Callable[[str], None]) -> None:
    score = proc.get("oomScoreAdj")
    if score is None:
        return
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(score))
    except PermissionError:
        warn(f"oomScoreAdj {score}: lowering it needs CAP_SYS_RESOURCE, which this host withholds; left unchanged")


def _fork(opts: InitOptions, cgroup: Any, new_pid_namespace: bool) -> tuple[int, bool]:
    """Fork the process that enters the container's cgroups first thing (opts.cgroup, opened
    here and closed again in the parent), straight into the cgroup2 one where clone3 can be
    had (linux/clone.py). With new_pid_namespace the child is pid 1 of a new pid namespace
    where that can be done. Returns (pid in the parent, 0 in the child; whether it is pid 1)."""
    from ..linux import clone
    from ..linux.namespaces import CLONE_NEWPID

    opts.cgroup = cgroup.join()
    try:
        v2_dir = opts.cgroup.v2_dir_fd
        opts.cloned_into_cgroup2 = v2_dir is not None  # as the child will find it, if clone3 works
        pid = clone.fork_into(v2_dir, CLONE_NEWPID if new_pid_namespace else 0)
        in_new_pid_namespace = new_pid_namespace
        if pid is None:
            opts.cloned_into_cgroup2 = False
            pid = _fork_in_new_pid_namespace() if new_pid_namespace else None
            if pid is None:
                in_new_pid_namespace = False
                pid = os.fork()
    except BaseException:
        opts.cgroup.close()
        raise
    if pid != 0:
        opts.cgroup.close()
    return pid, in_new_pid_namespace


def _fork_in_new_pid_namespace() -> int | None:
    """fork() with the child as pid 1 of a new pid namespace (unshare(CLONE_NEWPID) applies to
    the caller's children; the caller's own is set back at once); None when that cannot be done
    (the caller then takes the other way, which reports any error the usual way)."""
    from ..linux import namespaces as linux_ns
    try:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            linux_ns.unshare(linux_ns.CLONE_NEWPID)
        except OSError:
            return None
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:  # the parent (or a failed fork): its children go to its namespace again
                linux_ns.setns(own, linux_ns.CLONE_NEWPID, "setns back into our pid namespace")
        return pid
    finally:
        os.close(own)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _kill_and_reap(pid: int) -> None:
    _quietly(lambda: os.kill(pid, _signal.SIGKILL))
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        _wait_gone({"pid": pid, "pid_start": st.process_start_time(pid)})


def _wait_gone(record: dict[str, Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while st.is_alive(record) and time.monotonic() < deadline:
        try:
            if os.waitpid(record["pid"], os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass
        time.sleep(0.005)


def _wait_empty(cgroup: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not cgroup.pids():
                return
        except OSError:
            return
        time.sleep(0.005)


def _quietly(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (OSError, ProcessLookupError):
        return None
