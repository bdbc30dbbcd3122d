"""The OCI `linux.seccomp` object: checked in the runtime, turned into a filter in the container init.

Everything heavy (ctypes, libseccomp, json, socket) is imported inside the functions that need it:
this module is imported on every container start, seccomp or not.
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # without importing typing, which costs more than this whole module
    import socket

# Each maps to a libseccomp name by dropping the prefix and lowering the case (SCMP_ARCH_X86_64 -> x86_64).
ARCHES = (
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
)
_ERRNO_ACTIONS = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_EPERM = 1
# Between loading the filter and returning, load() sends the listener fd with sendmsg() and closes
# the connection; the agent only learns the fd, and the end of the message, from those two calls.
_NOTIFY_DEADLOCKS = ("sendmsg", "close")


class _Plan:
    """A checked seccomp object in libseccomp terms, built without opening libseccomp."""

    __slots__ = ("default", "arches", "flags", "rules", "listener_path", "metadata")

    def __init__(self) -> None:
        self.default = 0
        self.arches: list[str] = []  # libseccomp names
        self.flags: list[str] = []
        # (action, syscall names, comparisons): each becomes one libseccomp rule per syscall.
        self.rules: list[tuple[int, list[str], list[tuple[int, int, int, int]]]] = []
        self.listener_path: str | None = None
        self.metadata: str | None = None


def prepare() -> None:
    """Open libseccomp now: once a process has entered a container the host's library is out of reach."""
    from sampan.linux import seccomp as scmp

    scmp.version()


def validate(cfg: dict) -> None:
    """Raise ValueError with a one-line message if `cfg` cannot be loaded on this host."""
    if _prepared is not None and _prepared[0] is cfg:
        return  # precompile() has just built it: it loads
    plan = _plan(cfg)
    from sampan.linux import seccomp as scmp

    try:
        scmp.version()
    except OSError as e:
        raise ValueError(f"seccomp: libseccomp is not available: {e}") from None
    for arch in plan.arches:
        if scmp.resolve_arch(arch) is None:
            raise ValueError(f"seccomp: architecture {arch} is not supported by libseccomp")
    if plan.flags:
        supported = _supported_flags()
        for flag in plan.flags:
            if flag not in supported:
                raise ValueError(_unsupported_flag(flag))


def load(cfg: dict, *, state_json: bytes | None = None, listener: socket.socket | None = None) -> None:
    """Build the filter and load it into the calling process (and, with TSYNC, its threads).

    With SCMP_ACT_NOTIFY rules, the listener fd and the container process state (wrapping
    `state_json`, the OCI state of the container) are then sent to listenerPath. `listener` is a
    socket already connected there, for callers whose mount namespace no longer reaches the
    path; load() always closes it. Only that send and close follow the filter's loading.
    """
    try:
        if _prepared is not None and _prepared[0] is cfg and listener is None:
            from sampan.linux import seccomp as scmp
            scmp.load_bpf(_prepared[1])
            return
        _load(_plan(cfg), state_json, listener)
    finally:
        if listener is not None:
            listener.close()


# Filters built by precompile(): key (the config as canonical JSON) -> BPF program.
_compiled: dict[str, bytes] = {}
_COMPILED_MAX = 64
# (config, program) of the last precompile(): load() of that very object installs the program.
_prepared: tuple[dict, bytes] | None = None


def precompile(cfg: dict) -> bool:
    """Build `cfg`'s filter now, in a long-lived process about to fork a container init, so
    that the init's load(cfg) (of this same object) only installs it. Filters are cached by
    content, so a supervisor builds Docker's default profile once. Returns False, and load()
    then builds the filter itself, for what a plain install cannot do: filter flags, notify
    rules (the listener fd comes from the kernel at load time)."""
    global _prepared
    import json

    _prepared = None
    key = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    program = _compiled.get(key)
    if program is None:
        from sampan.linux import seccomp as scmp

        plan = _plan(cfg)
        if plan.flags or plan.listener_path or any(a == scmp.ACT_NOTIFY for a, _, _ in plan.rules):
            return False
        filt, _ = _build(plan)
        with filt:  # type: ignore[attr-defined]
            program = filt.export_bpf()  # type: ignore[attr-defined]
        if len(_compiled) >= _COMPILED_MAX:
            _compiled.pop(next(iter(_compiled)))
        _compiled[key] = program
    _prepared = (cfg, program)
    return True


def connect_listener(cfg: dict) -> socket.socket | None:
    """Connect to listenerPath for a later load(listener=...), or None if load() will send nothing.

    For the container init to call while its mount namespace still reaches the path (before
    pivot_root); the notify rules it looks for may still turn out to name only unknown syscalls,
    in which case load() closes the connection unused.
    """
    from sampan.linux import seccomp as scmp

    plan = _plan(cfg)
    if plan.listener_path is None or all(action != scmp.ACT_NOTIFY for action, _, _ in plan.rules):
        return None
    return _connect(plan.listener_path)


def features() -> dict:
    """The `linux.seccomp` part of `sampan-runc features` (runtime-spec features-linux.md)."""
    try:
        supported = _supported_flags()
    except OSError:
        return {"enabled": False}
    from sampan.linux import seccomp as scmp

    return {
        "enabled": True,
        "actions": list(scmp.ACTIONS),
        "operators": list(scmp.COMPARISONS),
        "archs": list(ARCHES),
        "knownFlags": list(scmp.FLAG_ATTRS),
        "supportedFlags": supported,
    }


def _build(plan: _Plan) -> tuple[object, bool]:
    """The libseccomp filter for `plan` (the caller releases it: `with filt:`), and whether
    it has notify rules."""
    from sampan.linux import seccomp as scmp

    filt = scmp.Filter(plan.default)
    try:
        # No new privileges is the runtime's call (process.noNewPrivileges), not the filter's.
        filt.set_attr(scmp.ATTR_CTL_NNP, 0)
        # The kernel's errno (EACCES without NNP or CAP_SYS_ADMIN) rather than ECANCELED.
        filt.set_attr(scmp.ATTR_API_SYSRAWRC, 1)
        # The same decisions, found by a binary search on the syscall number rather than a
        # linear scan: Docker's profile installs in about half the time (the kernel emulates
        # the filter for every syscall number when it is loaded) and runs no slower.
        try:
            filt.set_attr(scmp.ATTR_CTL_OPTIMIZE, 2)
        except OSError:
            pass  # libseccomp < 2.5
        for arch in plan.arches:
            token = scmp.resolve_arch(arch)
            if token is None:
                raise ValueError(f"seccomp: architecture {arch} is not supported by libseccomp")
            filt.add_arch(token)
        for flag in plan.flags:
            try:
                filt.set_attr(scmp.FLAG_ATTRS[flag], 1)
            except OSError:
                raise ValueError(_unsupported_flag(flag)) from None
        notifies = False
        for action, names, comparisons in plan.rules:
            for name in names:
                nr = scmp.resolve_syscall(name)
                if nr is None:
                    continue  # unknown to this libseccomp: runc skips these too
                filt.add_rule(action, nr, comparisons)
                notifies = notifies or action == scmp.ACT_NOTIFY
    except BaseException:
        filt.__exit__()
        raise
    return filt, notifies


def _load(plan: _Plan, state_json: bytes | None, listener: socket.socket | None) -> None:
    filt, notifies = _build(plan)
    with filt:  # type: ignore[attr-defined]
        if not notifies:
            filt.load()
            return
        with _Agent(plan, state_json, listener) as agent:
            filt.load()
            agent.send(filt.notify_fd())
    # The listener fd stays open: the kernel made it O_CLOEXEC, so execve closes it without
    # spending a syscall that the filter might not allow.


def _plan(cfg: dict) -> _Plan:
    from sampan.linux import seccomp as scmp

    if not isinstance(cfg, dict):
        raise ValueError("seccomp: must be an object")
    plan = _Plan()
    default = cfg.get("defaultAction")
    if default == "SCMP_ACT_NOTIFY":
        # The init could never hand the listener fd over: sending it would itself be notified.
        raise ValueError("seccomp: SCMP_ACT_NOTIFY cannot be the default action")
    plan.default = _action(default, cfg.get("defaultErrnoRet"), "defaultAction", "defaultErrnoRet")

    for arch in _strings(cfg, "architectures"):
        if arch not in ARCHES:
            raise ValueError(f"seccomp: unknown architecture {arch}")
        plan.arches.append(arch.removeprefix("SCMP_ARCH_").lower())
    for flag in _strings(cfg, "flags"):
        if flag not in scmp.FLAG_ATTRS:
            raise ValueError(f"seccomp: unknown flag {flag}")
        plan.flags.append(flag)

    plan.listener_path = cfg.get("listenerPath") or None
    plan.metadata = cfg.get("listenerMetadata") or None
    if not isinstance(plan.listener_path, (str, type(None))) or not isinstance(plan.metadata, (str, type(None))):
        raise ValueError("seccomp: listenerPath and listenerMetadata must be strings")
    if plan.metadata is not None and plan.listener_path is None:
        raise ValueError("seccomp: listenerMetadata is set but listenerPath is not")

    syscalls = _optional(cfg, "syscalls", [])
    if not isinstance(syscalls, list):
        raise ValueError("seccomp: syscalls must be an array")
    for i, entry in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"seccomp: {where} must be an object")
        names = _strings(entry, "names", where)
        if not names:
            raise ValueError(f"seccomp: {where}.names must list at least one syscall")
        action = _action(entry.get("action"), entry.get("errnoRet"), f"{where}.action", f"{where}.errnoRet")
        if action == scmp.ACT_NOTIFY:
            if plan.listener_path is None:
                raise ValueError(f"seccomp: {where} uses SCMP_ACT_NOTIFY but listenerPath is not set")
            for name in _NOTIFY_DEADLOCKS:
                if name in names:
                    raise ValueError(f"seccomp: SCMP_ACT_NOTIFY cannot be used for {name}: the runtime needs it")
        comparisons = _comparisons(_optional(entry, "args", []), where)
        if action == plan.default:
            continue  # libseccomp refuses a rule that repeats the default action, and it would be a no-op
        indexes = [c[0] for c in comparisons]
        if len(set(indexes)) == len(indexes):
            plan.rules.append((action, names, comparisons))
        else:
            # libseccomp cannot AND two comparisons of one argument (EINVAL). Like runc, such an
            # entry matches when any one of its comparisons does.
            plan.rules.extend((action, names, [c]) for c in comparisons)
    return plan


def _action(name: object, errno_ret: object, field: str, errno_field: str) -> int:
    from sampan.linux import seccomp as scmp

    if name is None:
        raise ValueError(f"seccomp: {field} is required")
    if name not in scmp.ACTIONS:
        raise ValueError(f"seccomp: unknown action {name}")
    if name not in _ERRNO_ACTIONS:
        if errno_ret is not None:
            raise ValueError(f"seccomp: {errno_field} is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {name}")
        return scmp.ACTIONS[name]
    if errno_ret is None:
        errno_ret = _EPERM
    if not _is_uint(errno_ret) or errno_ret > scmp.ACT_DATA_MASK:
        raise ValueError(f"seccomp: {errno_field} must be an integer from 0 to {scmp.ACT_DATA_MASK}")
    return scmp.ACTIONS[name] | errno_ret


def _comparisons(args: object, where: str) -> list[tuple[int, int, int, int]]:
    from sampan.linux import seccomp as scmp

    if not isinstance(args, list):
        raise ValueError(f"seccomp: {where}.args must be an array")
    comparisons = []
    for j, arg in enumerate(args):
        at = f"{where}.args[{j}]"
        if not isinstance(arg, dict):
            raise ValueError(f"seccomp: {at} must be an object")
        index, value, value_two, op = arg.get("index"), arg.get("value"), arg.get("valueTwo", 0), arg.get("op")
        if not _is_uint(index) or index > 5:
            raise ValueError(f"seccomp: {at}.index must be a syscall argument index from 0 to 5")
        for field, v in (("value", value), ("valueTwo", value_two)):
            if not _is_uint(v) or v >= 1 << 64:
                raise ValueError(f"seccomp: {at}.{field} must be an unsigned 64-bit integer")
        if op not in scmp.COMPARISONS:
            raise ValueError(f"seccomp: unknown operator {op}")
        # For MASKED_EQ, OCI's value is the mask and valueTwo the expected result, as in libseccomp.
        comparisons.append((index, scmp.COMPARISONS[op], value, value_two))
    return comparisons


def _strings(obj: dict, key: str, where: str = "") -> list[str]:
    values = _optional(obj, key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"seccomp: {where + '.' if where else ''}{key} must be an array of strings")
    return values


def _optional(obj: dict, key: str, default: object) -> object:
    """JSON null counts as absent; other empty values still have to be of the right type."""
    value = obj.get(key)
    return default if value is None else value


def _is_uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _supported_flags() -> list[str]:
    """The flags libseccomp accepts; it probes the kernel for each one it knows."""
    from sampan.linux import seccomp as scmp

    supported = []
    with scmp.Filter(scmp.ACT_ALLOW) as filt:
        for flag, attr in scmp.FLAG_ATTRS.items():
            try:
                filt.set_attr(attr, 1)
            except OSError:
                continue
            supported.append(flag)
    return supported


def _unsupported_flag(flag: str) -> str:
    from sampan.linux import seccomp as scmp

    version = ".".join(map(str, scmp.version()))
    return f"seccomp: flag {flag} is not supported by this kernel or libseccomp {version}"


class _Agent:
    """The connection to the seccomp agent at listenerPath.

    Connecting and encoding happen before the filter is loaded, leaving sendmsg and close after it.
    """

    def __init__(self, plan: _Plan, state_json: bytes | None, listener: socket.socket | None) -> None:
        import json
        import socket

        if state_json is None:
            raise ValueError("seccomp: SCMP_ACT_NOTIFY needs the container state to send to listenerPath")
        try:
            state = json.loads(state_json)
        except ValueError as e:
            raise ValueError(f"seccomp: the container state is not JSON: {e}") from None
        if not isinstance(state, dict) or "ociVersion" not in state or "pid" not in state:
            raise ValueError("seccomp: the container state needs ociVersion and pid")
        # The "container process state" of config-linux.md.
        message = {"ociVersion": state["ociVersion"], "fds": ["seccompFd"], "pid": state["pid"], "state": state}
        if plan.metadata is not None:
            message["metadata"] = plan.metadata
        self._message = json.dumps(message).encode()
        self._rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        self._path = plan.listener_path
        self._sock = listener if listener is not None else _connect(plan.listener_path)

    def __enter__(self) -> _Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        # Closing is what tells the agent that the message is complete.
        self._sock.close()

    def send(self, fd: int) -> None:
        message = self._message
        try:
            # The spec wants the fds in the first call only; a short write's remainder also goes
            # through sendmsg, so a profile has a single send syscall to allow.
            sent = self._sock.sendmsg([message], [(*self._rights, fd.to_bytes(4, sys.byteorder, signed=True))])
            while sent < len(message):
                sent += self._sock.sendmsg([message[sent:]])
        except OSError as e:
            raise OSError(e.errno, f"seccomp: send to listenerPath {self._path}: {e.strerror}") from None


def _connect(path: str) -> socket.socket:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"seccomp: connect to listenerPath {path}: {e.strerror}") from None
    return sock
