"""linux.seccomp against the real kernel: every case loads a filter in a forked child, which
reports what it saw through its exit status (an errno, 0 for success, or death by a signal)."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sampan.linux import seccomp as scmp
from sampan.linux.libc import check, libc
from sampan.runtime import seccomp

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
# A distinctive errno the kernel never produces for the syscalls under test.
OURS = errno.EXDEV

pytestmark = pytest.mark.skipif(not seccomp.features()["enabled"], reason="libseccomp.so.2 is not installed")


def fork(body: Callable[[], int]) -> int:
    """Fork a child that exits with body()'s result (126 if it raised); return its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 126
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS deaths would dump core
        code = body()
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def set_no_new_privs() -> None:
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")


def fork_loading(cfg: dict, then: Callable[[], int], *, nnp: bool = True, **load_kw: object) -> int:
    """Fork a child that loads `cfg` as the runtime would and exits with then()'s result."""
    def body() -> int:
        if nnp:
            set_no_new_privs()
        seccomp.load(cfg, **load_kw)
        return then()

    return fork(body)


def wait(pid: int) -> int:
    return os.waitpid(pid, 0)[1]


def run(cfg: dict, then: Callable[[], int], **kw: object) -> int:
    """Load `cfg` in a child, run then() there; return the child's wait status."""
    return wait(fork_loading(cfg, then, **kw))


def exit_code(status: int) -> int:
    assert os.WIFEXITED(status), f"child killed by signal {os.WTERMSIG(status)}"
    return os.WEXITSTATUS(status)


def errno_of(call: Callable[[], object]) -> Callable[[], int]:
    def attempt() -> int:
        try:
            call()
        except OSError as e:
            return e.errno
        return 0

    return attempt


def deny(names: list[str], action: str = "SCMP_ACT_ERRNO", **rule: object) -> dict:
    """Allow everything but `names`."""
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": names, "action": action, **rule}]}


def seccomp_mode() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("Seccomp:")[1].split()[0])


# --- precompiled filters (a supervisor builds them before forking the init) ------------------------


def test_a_precompiled_filter_is_installed_as_built() -> None:
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
           "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": OURS},
                        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EAFNOSUPPORT,
                         "args": [{"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"}]}]}
    assert seccomp.precompile(cfg)
    program = seccomp._prepared[1]
    assert program and len(program) % 8 == 0
    assert exit_code(run(cfg, errno_of(os.getcwd))) == OURS  # load() of this very object: the program
    assert exit_code(run(cfg, errno_of(lambda: socket.socket(socket.AF_INET6)))) == errno.EAFNOSUPPORT
    assert exit_code(run(cfg, errno_of(lambda: socket.socket(socket.AF_INET).close()))) == 0
    # an equal config is built once; a different one again
    assert seccomp.precompile(json.loads(json.dumps(cfg))) and seccomp._prepared[1] is program
    assert seccomp.precompile(deny(["getcwd"])) and seccomp._prepared[1] is not program


def test_what_a_plain_install_cannot_do_is_not_precompiled(tmp_path: Path) -> None:
    assert not seccomp.precompile({**deny(["getcwd"]), "flags": ["SECCOMP_FILTER_FLAG_LOG"]})
    assert not seccomp.precompile({**deny(["getcwd"], action="SCMP_ACT_NOTIFY"),
                                   "listenerPath": str(tmp_path / "agent.sock")})
    assert seccomp._prepared is None
    with pytest.raises(ValueError):
        seccomp.precompile({"defaultAction": "SCMP_ACT_NOPE"})


# --- actions -------------------------------------------------------------------------------------


def test_errno_ret(tmp_path: Path) -> None:
    target = tmp_path / "d"
    cfg = deny(["mkdir", "mkdirat"], errnoRet=errno.ENOSYS)
    assert exit_code(run(cfg, errno_of(lambda: os.mkdir(target)))) == errno.ENOSYS
    assert not target.exists()


def test_errno_defaults_to_eperm() -> None:
    assert exit_code(run(deny(["getcwd"]), errno_of(os.getcwd))) == errno.EPERM


def test_default_errno_ret() -> None:
    # Deny by default, allowing what the child's Python needs to get from load() to _exit().
    needed = ["brk", "mmap", "munmap", "mremap", "madvise", "futex", "rt_sigaction", "rt_sigprocmask",
              "rt_sigreturn", "write", "exit", "exit_group"]
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": OURS,
           "syscalls": [{"names": needed, "action": "SCMP_ACT_ALLOW"}]}
    assert exit_code(run(cfg, errno_of(os.getcwd))) == OURS
    assert exit_code(run(cfg, errno_of(os.uname))) == OURS


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"])
def test_actions_ending_in_sigsys(action: str) -> None:
    status = run(deny(["getcwd"], action), errno_of(os.getcwd))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_kill_process_takes_every_thread() -> None:
    def from_a_thread() -> int:
        t = threading.Thread(target=os.getcwd)
        t.start()
        t.join()
        return 0  # only reached if the other thread's death spared this one

    status = run(deny(["getcwd"], "SCMP_ACT_KILL_PROCESS"), from_a_thread)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_trace_without_tracer_fails_with_enosys() -> None:
    assert exit_code(run(deny(["getcwd"], "SCMP_ACT_TRACE", errnoRet=7), errno_of(os.getcwd))) == errno.ENOSYS


def test_log_allows() -> None:
    assert exit_code(run(deny(["getcwd"], "SCMP_ACT_LOG"), errno_of(os.getcwd))) == 0


# --- arguments -----------------------------------------------------------------------------------


def arg(index: int, op: str, value: int, value_two: int | None = None) -> dict:
    a = {"index": index, "op": f"SCMP_CMP_{op}", "value": value}
    if value_two is not None:
        a["valueTwo"] = value_two
    return a


AF_UNIX, AF_INET, AF_NETLINK = socket.AF_UNIX, socket.AF_INET, socket.AF_NETLINK
STREAM, DGRAM, RAW = socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW
# Python adds SOCK_CLOEXEC to socket()'s type argument, so only its low bits name the type.
IS_DGRAM = arg(1, "MASKED_EQ", 0xF, DGRAM)


@pytest.mark.parametrize(
    "args, family, type_, expected",
    [
        ([arg(0, "EQ", AF_INET)], AF_INET, STREAM, OURS),
        ([arg(0, "EQ", AF_INET)], AF_UNIX, STREAM, 0),
        ([arg(0, "NE", AF_UNIX)], AF_INET, STREAM, OURS),
        ([arg(0, "NE", AF_UNIX)], AF_UNIX, STREAM, 0),
        ([arg(0, "LE", AF_UNIX)], AF_UNIX, STREAM, OURS),
        ([arg(0, "LE", AF_UNIX)], AF_INET, STREAM, 0),
        ([arg(0, "GE", AF_INET)], AF_INET, STREAM, OURS),
        ([arg(0, "GE", AF_INET)], AF_UNIX, STREAM, 0),
        ([IS_DGRAM], AF_UNIX, DGRAM, OURS),
        ([IS_DGRAM], AF_UNIX, STREAM, 0),
        # Comparisons of different arguments must all match.
        ([arg(0, "EQ", AF_UNIX), IS_DGRAM], AF_UNIX, DGRAM, OURS),
        ([arg(0, "EQ", AF_UNIX), IS_DGRAM], AF_UNIX, STREAM, 0),
        ([arg(0, "EQ", AF_UNIX), IS_DGRAM], AF_INET, DGRAM, 0),
        # Comparisons of one argument become separate rules: any one may match.
        ([arg(0, "LT", AF_INET), arg(0, "GT", AF_INET)], AF_UNIX, STREAM, OURS),
        ([arg(0, "LT", AF_INET), arg(0, "GT", AF_INET)], AF_NETLINK, RAW, OURS),
        ([arg(0, "LT", AF_INET), arg(0, "GT", AF_INET)], AF_INET, STREAM, 0),
    ],
)
def test_argument_comparisons(args: list[dict], family: int, type_: int, expected: int) -> None:
    cfg = deny(["socket"], errnoRet=OURS, args=args)
    assert exit_code(run(cfg, errno_of(lambda: socket.socket(family, type_).close()))) == expected


# --- what is skipped, architectures, flags ------------------------------------------------------


def test_unknown_syscall_names_are_skipped() -> None:
    cfg = deny(["no_such_syscall", "getcwd"], errnoRet=OURS)
    assert exit_code(run(cfg, errno_of(os.getcwd))) == OURS


def test_rules_repeating_the_default_action_are_skipped() -> None:
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": OURS},
    ]}
    assert exit_code(run(cfg, errno_of(os.getcwd))) == 0
    assert exit_code(run(cfg, errno_of(os.uname))) == OURS


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86 architectures")
def test_architectures() -> None:
    cfg = deny(["getcwd"], errnoRet=OURS)
    cfg["architectures"] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    seccomp.validate(cfg)
    assert exit_code(run(cfg, errno_of(os.getcwd))) == OURS


@pytest.mark.parametrize("flag", ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])
def test_flags(flag: str) -> None:
    if flag not in seccomp.features()["supportedFlags"]:
        pytest.skip(f"{flag} unsupported here")
    cfg = deny(["getcwd"], errnoRet=OURS)
    cfg["flags"] = [flag]
    seccomp.validate(cfg)
    assert exit_code(run(cfg, errno_of(os.getcwd))) == OURS


@pytest.mark.parametrize("tsync", [False, True])
def test_tsync_filters_threads_started_before_the_load(tsync: bool) -> None:
    cfg = deny(["getcwd"], errnoRet=OURS)
    if tsync:
        cfg["flags"] = ["SECCOMP_FILTER_FLAG_TSYNC"]
    go, seen = threading.Event(), []

    def early_thread() -> None:
        go.wait()
        seen.append(errno_of(os.getcwd)())

    def body() -> int:
        # Threads do not survive fork(): start it in the child, before the filter is loaded.
        thread = threading.Thread(target=early_thread)
        thread.start()
        set_no_new_privs()
        seccomp.load(cfg)
        go.set()
        thread.join()
        return seen[0]

    assert exit_code(wait(fork(body))) == (OURS if tsync else 0)


def test_wait_killable_recv() -> None:
    flag = "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
    cfg = deny(["getcwd"], errnoRet=OURS)
    cfg["flags"] = [flag]
    if flag in seccomp.features()["supportedFlags"]:
        assert exit_code(run(cfg, errno_of(os.getcwd))) == OURS
        return
    with pytest.raises(ValueError, match=f"flag {flag} is not supported by this kernel or libseccomp"):
        seccomp.validate(cfg)


# --- no_new_privs --------------------------------------------------------------------------------


def test_no_new_privs_is_left_to_the_runtime() -> None:
    # As root, CAP_SYS_ADMIN is enough to load a filter without NNP, and load() must not set NNP
    # behind the runtime's back: that is process.noNewPrivileges' call.
    def no_new_privs() -> int:
        return libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)

    assert exit_code(run(deny(["getcwd"]), no_new_privs, nnp=False)) == 0


def test_without_no_new_privs_or_cap_sys_admin_load_fails() -> None:
    def body() -> int:
        os.setuid(65534)  # leaving uid 0 clears the effective capabilities
        return errno_of(lambda: seccomp.load(deny(["getcwd"])))()

    assert exit_code(wait(fork(body))) == errno.EACCES


# --- listener (SCMP_ACT_NOTIFY) ------------------------------------------------------------------

# struct seccomp_notif {u64 id; u32 pid; u32 flags; struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}}
NOTIF = struct.Struct("=QIIiIQ6Q")
# struct seccomp_notif_resp {u64 id; s64 val; s32 error; u32 flags}
NOTIF_RESP = struct.Struct("=QqiI")
SECCOMP_IOCTL_NOTIF_RECV = 0xC0000000 | NOTIF.size << 16 | ord("!") << 8 | 0  # _IOWR('!', 0, ...)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0000000 | NOTIF_RESP.size << 16 | ord("!") << 8 | 1  # _IOWR('!', 1, ...)
STATE = {"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 4242, "bundle": "/bundles/c1"}


@contextmanager
def agent_socket(path: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.settimeout(10)
    server.bind(str(path))
    server.listen(1)
    try:
        yield server
    finally:
        server.close()


def accept_process_state(server: socket.socket) -> tuple[dict, int]:
    """What the runtime sends: JSON until the runtime closes, with the listener fd."""
    conn, _ = server.accept()
    with conn:
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        while chunk := conn.recv(65536):
            data += chunk
    assert len(fds) == 1
    return json.loads(data), fds[0]


def answer(listener: int, *, error: int = 0) -> tuple[int, int]:
    """Answer the next notification with success (0) or `error`; return its (pid, syscall nr)."""
    assert select.select([listener], [], [], 10)[0], "no notification"
    request = bytearray(NOTIF.size)
    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, request)
    nid, pid, _flags, nr, *_ = NOTIF.unpack(request)
    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, NOTIF_RESP.pack(nid, 0, -error, 0))
    return pid, nr


def mkdir_faked_then_refused(tmp_path: Path) -> Callable[[], int]:
    """The child's side of serve(): exits with the refused mkdir's errno, 1 if the faked one did anything."""
    def then() -> int:
        os.mkdir(tmp_path / "faked")  # the agent answers success without doing anything
        if (tmp_path / "faked").exists():
            return 1
        return errno_of(lambda: os.mkdir(tmp_path / "refused"))()

    return then


def serve(server: socket.socket, pid: int) -> tuple[dict, int]:
    """Be the seccomp agent for child `pid`: fake one mkdir, refuse the next with OURS.

    Returns the process state received and the child's wait status.
    """
    try:
        state, listener = accept_process_state(server)
        try:
            assert answer(listener)[0] == pid
            assert answer(listener, error=OURS) == (pid, scmp.resolve_syscall("mkdir"))
        finally:
            os.close(listener)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        wait(pid)
        raise
    return state, wait(pid)


def test_notify_sends_the_listener_to_the_agent(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    cfg = deny(["mkdir", "mkdirat"], "SCMP_ACT_NOTIFY")
    cfg |= {"listenerPath": str(path), "listenerMetadata": "MKNOD=/dev/null"}
    with agent_socket(path) as server:
        pid = fork_loading(cfg, mkdir_faked_then_refused(tmp_path), state_json=json.dumps(STATE).encode())
        state, status = serve(server, pid)
    assert exit_code(status) == OURS
    assert state == {"ociVersion": "1.2.0", "fds": ["seccompFd"], "pid": 4242, "metadata": "MKNOD=/dev/null",
                     "state": STATE}
    assert not (tmp_path / "refused").exists()


def test_notify_through_a_socket_connected_beforehand(tmp_path: Path) -> None:
    # Once the init has pivoted into the rootfs, listenerPath is out of reach: it connects first.
    path = tmp_path / "agent.sock"
    cfg = deny(["mkdir", "mkdirat"], "SCMP_ACT_NOTIFY")
    cfg["listenerPath"] = str(path)

    def body() -> int:
        set_no_new_privs()
        sock = seccomp.connect_listener(cfg)
        pivoted = cfg | {"listenerPath": "/nonexistent/agent.sock"}  # load() must not connect again
        seccomp.load(pivoted, state_json=json.dumps(STATE).encode(), listener=sock)
        return mkdir_faked_then_refused(tmp_path)()

    with agent_socket(path) as server:
        state, status = serve(server, fork(body))
    assert exit_code(status) == OURS
    assert "metadata" not in state and state["fds"] == ["seccompFd"]


def test_no_listener_connection_without_notify_rules(tmp_path: Path) -> None:
    cfg = deny(["mkdir"]) | {"listenerPath": str(tmp_path / "nobody-listens.sock")}
    assert seccomp.connect_listener(cfg) is None


def test_unreachable_listener_fails_before_the_filter_is_loaded(tmp_path: Path) -> None:
    cfg = deny(["mkdir"], "SCMP_ACT_NOTIFY")
    cfg["listenerPath"] = str(tmp_path / "nobody-listens.sock")

    def body() -> int:
        set_no_new_privs()
        with pytest.raises(OSError, match="seccomp: connect to listenerPath"):
            seccomp.load(cfg, state_json=json.dumps(STATE).encode())
        return seccomp_mode()  # 0: no filter

    assert exit_code(wait(fork(body))) == 0


def test_notify_needs_the_container_state(tmp_path: Path) -> None:
    cfg = deny(["mkdir"], "SCMP_ACT_NOTIFY")
    cfg["listenerPath"] = str(tmp_path / "agent.sock")

    def body() -> int:
        set_no_new_privs()
        with pytest.raises(ValueError, match="needs the container state"):
            seccomp.load(cfg)
        return seccomp_mode()

    assert exit_code(wait(fork(body))) == 0


# --- validation and features ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"defaultAction": "SCMP_ACT_FOO"}, "seccomp: unknown action SCMP_ACT_FOO"),
        ({}, "seccomp: defaultAction is required"),
        (deny(["getcwd"], "SCMP_ACT_BAR"), "seccomp: unknown action SCMP_ACT_BAR"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 5}, "defaultErrnoRet is only valid with"),
        (deny(["getcwd"], "SCMP_ACT_KILL", errnoRet=5), r"syscalls\[0\].errnoRet is only valid with"),
        (deny(["getcwd"], errnoRet=70000), "errnoRet must be an integer from 0 to 65535"),
        (deny(["getcwd"], errnoRet=-1), "errnoRet must be an integer"),
        (deny([]), r"syscalls\[0\].names must list at least one syscall"),
        (deny(["getcwd"], args=[arg(6, "EQ", 1)]), "index must be a syscall argument index from 0 to 5"),
        (deny(["getcwd"], args=[arg(0, "XX", 1)]), "unknown operator SCMP_CMP_XX"),
        (deny(["getcwd"], args=[arg(0, "EQ", 1 << 64)]), "value must be an unsigned 64-bit integer"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}, "unknown architecture SCMP_ARCH_Z80"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]}, "unknown flag SECCOMP_FILTER_FLAG_X"),
        ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/a"}, "SCMP_ACT_NOTIFY cannot be the default action"),
        (deny(["mkdir"], "SCMP_ACT_NOTIFY"), "uses SCMP_ACT_NOTIFY but listenerPath is not set"),
        (deny(["sendmsg"], "SCMP_ACT_NOTIFY") | {"listenerPath": "/a"}, "SCMP_ACT_NOTIFY cannot be used for sendmsg"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"}, "listenerMetadata is set but listenerPath is not"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls must be an array"),
        # A rule skipped for repeating the default action is still checked.
        (deny(["getcwd"], "SCMP_ACT_ALLOW", args=[arg(0, "XX", 1)]), "unknown operator SCMP_CMP_XX"),
    ],
)
def test_validate_rejects(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        seccomp.validate(cfg)
    assert "\n" not in str(info.value)


def test_validate_accepts_a_full_config() -> None:
    seccomp.validate({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.ENOSYS,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "listenerPath": "/run/agent.sock",
        "listenerMetadata": "x",
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 3},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [arg(0, "MASKED_EQ", 0xF, 1)]},
        ],
    })


def test_features() -> None:
    f = seccomp.features()
    assert f["enabled"] is True
    assert len(f["actions"]) == 9 and "SCMP_ACT_NOTIFY" in f["actions"]
    assert len(f["operators"]) == 7 and "SCMP_CMP_MASKED_EQ" in f["operators"]
    assert len(f["archs"]) == 19 and "SCMP_ARCH_X86_64" in f["archs"]
    assert len(f["knownFlags"]) == 4 and set(f["supportedFlags"]) <= set(f["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_LOG" in f["supportedFlags"]  # kernel >= 4.14


def test_import_is_cheap() -> None:
    code = "import sys, sampan.runtime.seccomp; print(sorted({'ctypes', 'json', 'socket', 'typing'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
