"""The child side of create and exec: from fork to execve.

Runs in forked copies of the runtime process. It never returns: it execs the container
process or reports an error to the parent over the sync channel and exits.
"""
from __future__ import annotations

import _signal
import _socket
import os

from ..linux import mount as m
from ..linux import namespaces as linux_ns
from ..linux import process as p
from . import hooks, namespaces, process
from .errors import describe
from .sync import Channel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .cgroups.join import Join


class InitOptions:
    def __init__(self, spec: dict[str, Any], process: dict[str, Any], *, bundle: str = "", rootfs: str = "",
                 no_pivot: bool = False, preserve_fds: int = 0, console: _socket.socket | None = None,
                 exec_listener: _socket.socket | None = None, join: list[tuple[str, str]] | None = None,
                 stdio: tuple[int, int, int] | None = None) -> None:
        self.spec = spec
        # The container's cgroups, which the forked process enters first thing, and whether
        # it was cloned into the cgroup2 one already: set by the parent as it forks.
        self.cgroup: Join | None = None
        self.cloned_into_cgroup2 = False
        self.stdio = stdio
        self.process = process
        self.bundle = bundle
        self.rootfs = rootfs
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.console = console
        self.exec_listener = exec_listener
        # exec only: namespaces of the running container to join, as (kind, /proc/<pid>/ns/<x>)
        self.join = join or []
        # exec only: the root to chroot into, for a container that shares our mount namespace
        # (joining a mount namespace is what takes an exec into the container's root otherwise)
        self.chroot: str | None = None
        self.seccomp_listener: Any = None
        self.state: dict[str, Any] | None = None  # exec: the container's OCI state
        # create: whether the init waits, once its root filesystem is made, for the parent's
        # hooks and the container state (only hooks and a seccomp agent need them); without,
        # it goes on at once while the parent applies the limits.
        self.sync_hooks = True


def _fail(chan: Channel, exc: BaseException) -> NoReturn:
    message = describe(exc) if isinstance(exc, (OSError, ValueError, hooks.HookError)) else f"{type(exc).__name__}: {exc}"
    if os.environ.get("SAMPAN_DEBUG"):
        import traceback
        message += "\n" + traceback.format_exc()
    try:
        chan.send("error", message=message)
    finally:
        os._exit(1)


def _preload(opts: InitOptions) -> None:
    """Import now what later steps need: after pivot_root the host's files are out of reach."""
    if opts.process.get("terminal"):
        from . import console  # noqa: F401
    if (opts.spec.get("linux") or {}).get("seccomp"):
        from . import seccomp
        seccomp.prepare()
    if (opts.spec.get("hooks") or {}).get("startContainer"):
        import subprocess  # noqa: F401


def _cgroup_stdio_and_guards(opts: InitOptions) -> None:
    if opts.cgroup is not None:
        opts.cgroup.enter(opts.cloned_into_cgroup2)
    if opts.stdio is not None:
        for target, fd in enumerate(opts.stdio):
            os.dup2(fd, target)
    _preload(opts)
    # While python runs in a container's namespaces, /proc/<pid>/exe, fds and maps of this
    # process must stay out of the container's reach (CVE-2019-5736).
    p.set_dumpable(False)
    seccomp_cfg = (opts.spec.get("linux") or {}).get("seccomp")
    if seccomp_cfg and seccomp_cfg.get("listenerPath"):
        from . import seccomp  # the listener path is a host path: connect before entering the container
        opts.seccomp_listener = seccomp.connect_listener(seccomp_cfg)


def stage1_direct(chan: Channel, opts: InitOptions) -> NoReturn:
    """The init itself, forked by a parent that unshared the pid namespace for it (so it is pid
    1 there already): it makes its other new namespaces and goes on, with no process between.
    Only for containers that join no namespace by path and make no user or time namespace."""
    try:
        _cgroup_stdio_and_guards(opts)
        new = namespaces.new_kinds(namespaces.plan(opts.spec))
        flags = namespaces.unshare_flags(new - {"pid"})
        if flags:
            linux_ns.unshare(flags)
        _init_stage2(chan, opts, new)
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent
        _fail(chan, e)


def stage1(chan: Channel, opts: InitOptions) -> NoReturn:
    """Enter or create the namespaces, then fork the process that lives in them."""
    try:
        _cgroup_stdio_and_guards(opts)
        entries = namespaces.plan(opts.spec)
        joining = opts.join or [(k, path) for k, path in entries if path]
        namespaces.join(joining)
        if opts.chroot:
            os.chroot(opts.chroot)
            os.chdir("/")
        new = set() if opts.join else namespaces.new_kinds(entries)
        if "user" in new:
            linux_ns.unshare(linux_ns.CLONE_NEWUSER)
            chan.send("userns")
            chan.expect("userns-done")
            try:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            except OSError:
                pass  # root is not mapped; the process keeps its mapped ids
        flags = namespaces.unshare_flags(new)
        if flags:
            linux_ns.unshare(flags)
        if "time" in new and (opts.spec.get("linux") or {}).get("timeOffsets"):
            namespaces.write_time_offsets(opts.spec["linux"]["timeOffsets"])
        # The parent hears of the child from this process first: the child says nothing on
        # the channel until this process has said "pid" and exited (the pipe's end of file).
        said_pid, saying_pid = os.pipe()
        pid = os.fork()
        if pid:
            chan.send("pid", pid=pid)
            os._exit(0)
        os.close(saying_pid)
        os.read(said_pid, 1)
        os.close(said_pid)
        if opts.join:
            _exec_stage2(chan, opts)
        _init_stage2(chan, opts, new)
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent
        _fail(chan, e)


def _init_stage2(chan: Channel, opts: InitOptions, new: set[str]) -> NoReturn:
    from .rootfs import Rootfs

    try:
        os.setsid()
        spec = opts.spec
        linux = spec.get("linux") or {}
        kinds = {k for k, _ in namespaces.plan(spec)}
        root = Rootfs(spec, opts.rootfs, opts.bundle, userns="user" in kinds, cgroupns="cgroup" in new,
                      shared_mount_ns="mount" not in kinds)
        root.prepare()
        chan.send("hooks")
        state = None
        if opts.sync_hooks:
            state = chan.expect("hooks-done")["state"]
            hooks.run(spec, "createContainer", {**state, "pid": os.getpid()})  # the pid as the container sees it
        root.pivot(opts.no_pivot)
        if opts.process.get("terminal"):
            _setup_terminal(opts, console_mount=True)
        for key, value in (linux.get("sysctl") or {}).items():
            _write_sysctl(key, value)
        if spec.get("hostname") and "uts" in new:
            p.sethostname(spec["hostname"])
        if spec.get("domainname") and "uts" in new:
            p.setdomainname(spec["domainname"])
        # A missing working directory is made, as runc does, before the root may turn read-only.
        os.makedirs(opts.process.get("cwd") or "/", 0o755, exist_ok=True)
        root.finalize()
        _finish(chan, opts, state)
    except BaseException as e:  # noqa: BLE001
        _fail(chan, e)


def _exec_stage2(chan: Channel, opts: InitOptions) -> NoReturn:
    try:
        os.setsid()
        if opts.process.get("terminal"):
            _setup_terminal(opts, console_mount=False)
        _finish(chan, opts, opts.state)
    except BaseException as e:  # noqa: BLE001
        _fail(chan, e)


def _setup_terminal(opts: InitOptions, console_mount: bool) -> None:
    from . import console

    if opts.console is None:
        raise ValueError("a terminal was requested but no console socket is set")
    master, slave = console.open_pty()
    size = opts.process.get("consoleSize")
    console.send_master(opts.console, master, slave)
    os.close(master)
    opts.console.close()
    if console_mount:
        if not os.path.lexists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        m.mount(slave, "/dev/console", None, m.MS_BIND)
    console.make_controlling(slave, (size["height"], size["width"]) if size else None)


def _reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and our caller may ignore or block more; execve
    keeps ignored dispositions and the mask, so the container would inherit them. Only what
    is not at SIG_DFL is reset: the signal module records every disposition at start-up and
    each change made through it, and nothing in the runtime changes one another way."""
    for number in range(1, _signal.NSIG):
        if number in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            if _signal.getsignal(number) != _signal.SIG_DFL:
                _signal.signal(number, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # numbers without a signal behind them
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def _write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as e:
        raise OSError(e.errno, f"write sysctl {key}={value}: {e.strerror}") from None


def _finish(chan: Channel, opts: InitOptions, state: dict[str, Any] | None) -> NoReturn:
    """Identity, limits and privileges of the process, then wait for start, load the seccomp
    filter and execve.

    The filter is loaded last, right before execve, so that a profile need not allow what
    the runtime itself does (chdir, setgroups, setuid, capset, close_range, accept, ...).
    Without no_new_privs the load needs CAP_SYS_ADMIN: runc and crun load the filter before
    dropping capabilities for that; here CAP_SYS_ADMIN stays in the effective and permitted
    sets until the load instead (see process.set_capabilities for why that changes nothing
    the container gets)."""
    proc = opts.process
    user = proc.get("user") or {}
    userns = any(k == "user" for k, _ in namespaces.plan(opts.spec))
    warnings = process.set_rlimits(proc.get("rlimits") or [])
    nnp = bool(proc.get("noNewPrivileges"))
    if nnp:
        p.set_no_new_privs()
    seccomp_cfg = (opts.spec.get("linux") or {}).get("seccomp")
    state_json = None
    if seccomp_cfg and seccomp_cfg.get("listenerPath"):
        from .. import fastjson
        state_json = fastjson.dumps(state or {}).encode()
    _reset_signals()
    p.cloexec_from(3 + opts.preserve_fds)
    caps = proc.get("capabilities")
    process.drop_bounding(caps)
    process.set_user(user, userns)
    cwd = proc.get("cwd") or "/"
    try:
        os.chdir(cwd)
        os.getcwd()  # fails if cwd resolves outside the root (CVE-2024-21626)
    except OSError as e:
        raise OSError(e.errno, f"chdir to cwd ({cwd!r}) set in config.json failed: {e.strerror}") from None
    process.set_capabilities(caps, keep=process.CAP_SYS_ADMIN_MASK if seccomp_cfg and not nnp else 0)
    env = process.environment(proc, process.home_of(int(user.get("uid", 0))))
    args = proc["args"]
    path = process.find_executable(args[0], env)
    chan.send("ready", warnings=warnings)
    conn = None
    if opts.exec_listener is not None:
        chan.close()
        fd, _ = opts.exec_listener._accept()
        conn = _socket.socket(fileno=fd)
        opts.exec_listener.close()
        conn.recv(1)
        try:
            hooks.run(opts.spec, "startContainer", {**(state or {}), "pid": os.getpid(), "status": "created"})
        except hooks.HookError as e:
            _fail_start(chan, conn, str(e), 1)
    if seccomp_cfg:
        from . import seccomp  # (loaded by _preload: no file is read now)
        try:
            seccomp.load(seccomp_cfg, state_json=state_json, listener=opts.seccomp_listener)
        except (OSError, ValueError) as e:
            _fail_start(chan, conn, describe(e), 1)
    try:
        os.execve(path, args, env)
    except OSError as e:
        _fail_start(chan, conn, f"exec {args[0]}: {e.strerror}", 127 if isinstance(e, FileNotFoundError) else 126)


def _fail_start(chan: Channel, conn: _socket.socket | None, message: str, code: int) -> NoReturn:
    """Report a failure after "ready": to `start` over its connection when there is one (the
    sync channel is closed then), else to the parent over the channel."""
    if conn is not None:
        conn.send(message.encode())
    else:
        chan.send("error", message=message)
    os._exit(code)
