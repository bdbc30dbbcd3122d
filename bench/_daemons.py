"""Private daemons for the engine benchmarks: a dockerd and a sampand, each in its own
temporary directory, the same busybox image in both, torn down without leaving mounts,
cgroups or processes behind.

dockerd is started as tests/integration/conftest.py starts it (own data-root, exec-root,
pidfile, socket and cgroup parent; no firewall, bridge or forwarding changes); the image is
`tar -C .cache/images/busybox -c . | docker import -c 'CMD ["sh"]' - busybox:local`, and
sampan gets the very same image through `docker save | sampan load`.

Each daemon runs in a network namespace of its own (see PRIVATE_NAMESPACES) and
in a mount namespace of its own (`unshare --mount --propagation private`):
its mounts (overlays, rootfs) stay out of the host's mount table, so a test suite running
at the same time, which checks that table for leaks and detaches what it does not know,
neither trips over them nor takes them away mid-benchmark.
"""
from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = Path(os.environ.get("SAMPAN_TEST_IMAGES", REPO / ".cache" / "images"))
DOCKER_CLI = "/usr/local/bin/docker" if os.access("/usr/local/bin/docker", os.X_OK) else shutil.which("docker")
DOCKERD = shutil.which("dockerd", path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin")
SAMPAN_CLI = "/usr/local/bin/sampan" if os.access("/usr/local/bin/sampan", os.X_OK) else str(REPO / ".venv/bin/sampan")
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
IMAGE = "busybox:local"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
# Both daemons (and what they start: containerd, supervisor, shims) also get a network
# namespace of their own, loopback up, gone with their last process: with --bridge=none
# dockerd deletes a docker0 it finds, which took the host's Docker's bridge away. Their
# sockets are files, reachable from the host all the same.
PRIVATE_NAMESPACES = [UNSHARE, "--mount", "--propagation", "private", "--net",
                      "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
_RUN_DIRS = ("/run/docker", "/run/containerd")

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _mounts_under(top: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == top or mp.startswith(top + "/"):
                out.append(mp)
    return out


def _detach_mounts(top: str) -> None:
    for mp in reversed(_mounts_under(top)):
        _libc.umount2(mp.encode(), MNT_DETACH)


def _cgroup_roots() -> list[str]:
    roots = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] in ("cgroup", "cgroup2"):
                roots.add(left.split()[4])
    return sorted(roots)


def _remove_cgroup_tree(path: str) -> None:
    for root in _cgroup_roots():
        top = root + path
        if not os.path.isdir(top):
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _tree(tops: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for top in tops:
        for dirpath, dirnames, _ in os.walk(top):
            found.add(dirpath)
            found |= {os.path.join(dirpath, d) for d in dirnames}
    return found


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


class Dockerd:
    """A private dockerd (and the containerd it starts) in a temporary directory."""

    def __init__(self) -> None:
        if not (DOCKERD and DOCKER_CLI):
            raise SystemExit("dockerd and the docker CLI are needed (scripts/setup.sh installs them)")
        self.tmp = tempfile.mkdtemp(prefix="sampan-bench-dockerd-")
        self.cgroup_parent = f"/sampan-bench-dockerd-{secrets.token_hex(4)}"
        self.sock = f"{self.tmp}/docker.sock"
        self.log = Path(self.tmp, "dockerd.log")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env.update(DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=f"{self.tmp}/cli", DOCKER_CLI_HINTS="false")
        self.proc: subprocess.Popen | None = None

    def docker(self, *args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        cp = subprocess.run([DOCKER_CLI, *args], env=self.env, stdin=kw.pop("stdin", subprocess.DEVNULL),
                            capture_output=True, timeout=timeout, **kw)
        if check and cp.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: exit {cp.returncode}: {cp.stderr.decode(errors='replace')}")
        return cp

    def start(self, rootfs: Path = IMAGES / "busybox") -> None:
        cfg = Path(self.tmp, "daemon.json")
        cfg.write_text(json.dumps({"deprecated-key-path": f"{self.tmp}/key.json", "shutdown-timeout": 5}))
        self.run_dirs_before = _tree(_RUN_DIRS)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([
                *PRIVATE_NAMESPACES, DOCKERD, "--config-file", str(cfg),
                "--data-root", f"{self.tmp}/data", "--exec-root", f"{self.tmp}/exec",
                "--pidfile", f"{self.tmp}/docker.pid", "--host", f"unix://{self.sock}",
                "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
                "--bridge=none", "--cgroup-parent", self.cgroup_parent,
            ], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while self.docker("version", check=False, timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{_tail(self.log)}")
            time.sleep(0.1)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        self.docker("import", "-c", 'CMD ["sh"]', "-", IMAGE, stdin=tar.stdout)
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar of the busybox rootfs failed")

    def netns(self) -> str:
        """dockerd's network namespace, as a path nsenter takes."""
        return f"/proc/{self.proc.pid}/ns/net"

    def save(self, path: str) -> None:
        self.docker("save", "-o", path, IMAGE)

    def shim_pids(self) -> list[int]:
        """containerd-shim-runc-v2 processes of this dockerd (their command line names its containerd)."""
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and \
                    any(self.tmp.encode() in c for c in cmd):
                out.append(int(p))
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *[i.decode() for i in ids], check=False, timeout=300)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.shim_pids():
            if not _wait_pid_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
        _detach_mounts(self.tmp)
        _remove_cgroup_tree(self.cgroup_parent)
        shutil.rmtree(self.tmp, ignore_errors=True)
        # the empty directories dockerd and containerd make there, if they were not there before
        for path in sorted(_tree(_RUN_DIRS) - getattr(self, "run_dirs_before", set()), key=lambda p: -p.count("/")):
            try:
                os.rmdir(path)
            except OSError:
                pass


class Sampand:
    """A private sampand (and its supervisor) on a temporary root and exec root."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="sampan-bench-")
        self.root = f"{self.tmp}/root"
        # the exec root holds unix sockets: keep the path short
        self.exec_root = f"/run/sampan-bench-{os.getpid()}-{secrets.token_hex(3)}"
        os.makedirs(self.exec_root)
        self.sock = f"{self.exec_root}/sampan.sock"
        self.log = Path(self.exec_root, "sampand.log")
        self.env = dict(os.environ, SAMPAN_ROOT=self.root, SAMPAN_EXEC_ROOT=self.exec_root)
        self.env.pop("SAMPAN_HOST", None)
        self.proc: subprocess.Popen | None = None

    def sampan(self, *args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        cp = subprocess.run([SAMPAN_CLI, *args], env=self.env, stdin=kw.pop("stdin", subprocess.DEVNULL),
                            capture_output=True, timeout=timeout, **kw)
        if check and cp.returncode != 0:
            raise RuntimeError(f"sampan {' '.join(args)}: exit {cp.returncode}: {cp.stderr.decode(errors='replace')}")
        return cp

    def start(self, netns: str | None = None) -> None:
        """Started in a network namespace of its own, or in `netns` (a /proc/PID/ns/net path)."""
        namespaces = (["nsenter", f"--net={netns}", "--", UNSHARE, "--mount", "--propagation", "private"]
                      if netns else PRIVATE_NAMESPACES)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*namespaces, PY, "-m", "sampan.api", "--root", self.root,
                                          "--exec-root", self.exec_root],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                         cwd="/")
        deadline = time.monotonic() + 60
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sampand did not start:\n{_tail(self.log)}")
            time.sleep(0.05)

    def ping(self) -> bool:
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(self.sock)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: sampan\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False
        finally:
            s.close()

    def load(self, archive: str) -> None:
        self.sampan("load", "-q", "-i", archive)

    def supervisor_pid(self) -> int | None:
        try:
            return int(Path(self.exec_root, "supervisor.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.sampan("ps", "-aq", check=False).stdout.split()
            if ids:
                self.sampan("rm", "-f", *[i.decode() for i in ids], check=False, timeout=300)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        pid = self.supervisor_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not _wait_pid_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
        _detach_mounts(self.tmp)
        _detach_mounts(self.exec_root)
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.exec_root, ignore_errors=True)


def start_both(rounds_hint: str = "", one_netns: bool = False) -> tuple[Dockerd, Sampand]:
    """Both daemons up, busybox:local in both (docker import, then docker save | sampan load);
    with one_netns sampand runs in dockerd's network namespace (both reach one registry there)."""
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if not (IMAGES / "busybox" / "bin" / "busybox").exists():
        subprocess.run([str(REPO / "scripts" / "build-images.sh")], check=True, stdout=subprocess.DEVNULL)
    d = Dockerd()
    s = Sampand()
    try:
        d.start()
        s.start(d.netns() if one_netns else None)
        archive = os.path.join(d.tmp, "busybox.tar")
        d.save(archive)
        s.load(archive)
        os.unlink(archive)
    except BaseException:
        stop_both(d, s)
        raise
    return d, s


def stop_both(d: Dockerd | None, s: Sampand | None) -> None:
    for x in (s, d):
        if x is not None:
            try:
                x.stop()
            except Exception as e:  # noqa: BLE001 - the other one must be stopped too
                print(f"warning: stopping {type(x).__name__}: {e}", file=sys.stderr)
