"""Fixtures of the OCI runtime conformance suite (tests/runtime/test_*.py).

The runtime under test is ``$SAMPAN_TEST_RUNTIME`` (default /usr/local/bin/sampan-runc);
``SAMPAN_TEST_RUNTIME=/usr/sbin/runc`` runs the same suite against runc, the reference.

- ``bundle``: a fresh bundle in tmp_path: the busybox rootfs copied (``cp -a``) to
  ``rootfs/`` and a config made from ``sampan-runc spec`` with ``terminal: false`` and a
  writable root (tests that check a read-only root set it back). ``bundle.config`` is a
  plain dict; the ``rt`` helpers write it to config.json before create/run.
- ``rt``: the runtime's command line with ``--root`` under tmp_path. Every call's stdout
  and stderr go to files (a detached container inherits them, so pipes would never
  close); ``Result`` reads them back. Each container id it hands out is registered with the
  suite-wide host-leak check, and whatever a test leaves is ``delete --force``d at
  teardown, by the runtime itself, before that check looks at the host.
- ``util``: helpers shared by the tests (mountinfo parsing, cgroup lookup, polling,
  a console-socket server that receives a pty master over SCM_RIGHTS).
"""
from __future__ import annotations

import array
import copy
import errno
import json
import os
import secrets
import select
import socket
import subprocess
import threading
import time
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME = os.environ.get("SAMPAN_TEST_RUNTIME", "/usr/local/bin/sampan-runc")
SPEC_SOURCE = os.environ.get("SAMPAN_TEST_SPEC_RUNTIME", "/usr/local/bin/sampan-runc")
IMAGES = Path(os.environ.get("SAMPAN_TEST_IMAGES", REPO / ".cache" / "images"))
TIMEOUT = 20  # seconds any one runtime command may take


# ---------------------------------------------------------------- helpers


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"):
    """Polls predicate() until it returns something truthy; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _unescape(s: str) -> str:
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> list[dict]:
    """Each line of a mountinfo as a dict: id, parent, root, mountpoint, opts (set),
    optional (list, e.g. ["shared:3"]), fstype, source, superopts (set)."""
    out = []
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        out.append({
            "id": f[0], "parent": f[1], "majmin": f[2], "root": _unescape(f[3]), "mountpoint": _unescape(f[4]),
            "opts": set(f[5].split(",")), "optional": f[6:], "fstype": r[0],
            "source": r[1] if len(r) > 1 else "", "superopts": set(r[2].split(",")) if len(r) > 2 else set(),
        })
    return out


def mount_at(mounts: list[dict], mountpoint: str) -> dict | None:
    """The top-most mount at mountpoint (the last one listed), or None."""
    found = [m for m in mounts if m["mountpoint"] == mountpoint]
    return found[-1] if found else None


def cgroup_dir(pid: int, controller: str) -> Path:
    """The host directory of pid's cgroup in the v1 hierarchy that has `controller`
    (or the cgroup2 one for controller "unified")."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else ["unified"]:
            paths[c] = path
    with open("/proc/self/mountinfo") as f:
        for m in parse_mountinfo(f.read()):
            if controller == "unified" and m["fstype"] == "cgroup2":
                return Path(m["mountpoint"] + paths["unified"])
            if m["fstype"] == "cgroup" and controller in m["superopts"] and m["root"] == "/":
                return Path(m["mountpoint"] + paths[controller])
    raise LookupError(f"no cgroup hierarchy with {controller}")


def cgroup_mountpoints() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted({m["mountpoint"] for m in parse_mountinfo(f.read()) if m["fstype"] in ("cgroup", "cgroup2")})


def status_field(text: str, name: str) -> str:
    """A field of a /proc/<pid>/status text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise KeyError(name)


class ConsoleSocket:
    """A --console-socket server: accepts one connection in a thread and receives the pty
    master the runtime sends with SCM_RIGHTS."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.master: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.sock.settimeout(TIMEOUT)
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                fds = array.array("i")
                _, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                if not fds:
                    raise AssertionError("the runtime connected to the console socket but sent no fd")
                self.master = fds[0]
                for extra in fds[1:]:
                    os.close(extra)
        except BaseException as e:  # noqa: BLE001 - reported by receive()
            self.error = e

    def receive(self, timeout: float = TIMEOUT) -> int:
        self._thread.join(timeout)
        if self.error is not None:
            raise AssertionError(f"console socket: {self.error!r}")
        assert self.master is not None, "the runtime never sent a pty master to the console socket"
        return self.master

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Reads the pty master until marker shows up, the slave side closes (EIO) or timeout."""
        master = self.receive()
        data = b""
        deadline = time.monotonic() + timeout
        while marker not in data and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError as e:
                if e.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()
        if self.master is not None:
            os.close(self.master)
            self.master = None


util = types.SimpleNamespace(
    wait_until=wait_until, parse_mountinfo=parse_mountinfo, mount_at=mount_at, cgroup_dir=cgroup_dir,
    cgroup_mountpoints=cgroup_mountpoints, status_field=status_field, ConsoleSocket=ConsoleSocket,
    RUNTIME=RUNTIME, TIMEOUT=TIMEOUT,
)


@pytest.fixture(name="util", scope="session")
def util_fixture():
    return util


# ---------------------------------------------------------------- bundle


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    rootfs = IMAGES / "busybox"
    if not (rootfs / "bin" / "busybox").exists():
        subprocess.run([str(REPO / "scripts" / "build-images.sh")], check=True, stdout=subprocess.DEVNULL)
    return rootfs


@pytest.fixture(scope="session")
def spec_template(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("spec")
    subprocess.run([SPEC_SOURCE, "spec", "--bundle", str(d)], check=True, timeout=TIMEOUT)
    spec = json.loads((d / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["root"]["readonly"] = False
    return spec


class Bundle:
    def __init__(self, path: Path, rootfs_source: Path, spec: dict) -> None:
        self.path = path
        self.rootfs = path / "rootfs"
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(rootfs_source), str(self.rootfs)], check=True)
        # build-images.sh makes the image directory with mktemp (0700): users other than root
        # could not even reach /bin in the container.
        self.rootfs.chmod(0o755)
        self.config = copy.deepcopy(spec)

    @property
    def process(self) -> dict:
        return self.config["process"]

    @property
    def linux(self) -> dict:
        return self.config.setdefault("linux", {})

    def args(self, *args: str) -> "Bundle":
        self.config["process"]["args"] = list(args)
        return self

    def sh(self, script: str) -> "Bundle":
        return self.args("sh", "-c", script)

    def namespaces(self) -> list[str]:
        return [n["type"] for n in self.linux.get("namespaces", [])]

    def add_namespace(self, kind: str, path: str | None = None) -> None:
        self.remove_namespace(kind)
        self.linux["namespaces"].append({"type": kind, **({"path": path} if path else {})})

    def remove_namespace(self, kind: str) -> None:
        self.linux["namespaces"] = [n for n in self.linux.get("namespaces", []) if n["type"] != kind]

    def add_mount(self, destination: str, type_: str, source: str, options: list[str]) -> None:
        self.config.setdefault("mounts", []).append(
            {"destination": destination, "type": type_, "source": source, "options": options})

    def write(self) -> None:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=1))


@pytest.fixture
def bundle(tmp_path, busybox_rootfs, spec_template) -> Bundle:
    return Bundle(tmp_path / "bundle", busybox_rootfs, spec_template)


@pytest.fixture
def make_bundle(tmp_path, busybox_rootfs, spec_template):
    """Makes more bundles: make_bundle("name") -> Bundle in tmp_path/name."""
    return lambda name, base=None: Bundle(Path(base or tmp_path) / name, busybox_rootfs, spec_template)


# ---------------------------------------------------------------- runtime


class Result:
    def __init__(self, argv: list[str], returncode: int, out_path: Path, err_path: Path, elapsed: float) -> None:
        self.argv = argv
        self.returncode = returncode
        self.out_path = out_path
        self.err_path = err_path
        self.elapsed = elapsed

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def __repr__(self) -> str:
        return f"<{' '.join(self.argv)}: exit {self.returncode}, stdout {self.out!r}, stderr {self.err!r}>"

    def ok(self) -> "Result":
        assert self.returncode == 0, f"runtime command failed: {self!r}"
        return self


class Runtime:
    def __init__(self, binary: str, workdir: Path, watch) -> None:
        self.binary = binary
        self.workdir = workdir
        self.root = workdir / "state"
        self.watch = watch
        self.ids: list[str] = []
        self._n = 0
        watch.watch_root(str(self.root))
        workdir.mkdir(parents=True, exist_ok=True)

    def new_id(self, prefix: str = "rt") -> str:
        cid = f"{prefix}-{secrets.token_hex(5)}"
        self.ids.append(cid)
        self.watch.watch_id(cid)
        return cid

    def spawn(self, *args: str, global_args: tuple = (), stdin=None, pass_fds: tuple = (), preexec_fn=None):
        """Starts a runtime command without waiting: (Popen, stdout path, stderr path)."""
        self._n += 1
        out, err = self.workdir / f"{self._n:03d}.out", self.workdir / f"{self._n:03d}.err"
        argv = [self.binary, "--root", str(self.root), *global_args, *args]
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=o,
                                    stderr=e, cwd=self.workdir, pass_fds=pass_fds,
                                    preexec_fn=preexec_fn)
        return proc, out, err

    def __call__(self, *args: str, timeout: float = TIMEOUT, global_args: tuple = (), stdin=None,
                 pass_fds: tuple = (), preexec_fn=None) -> Result:
        start = time.monotonic()
        proc, out, err = self.spawn(*args, global_args=global_args, stdin=stdin, pass_fds=pass_fds,
                                    preexec_fn=preexec_fn)
        argv = proc.args
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"timed out after {timeout}s: {' '.join(argv)}\nstdout: {out.read_text()!r}\n"
                        f"stderr: {err.read_text()!r}")
        return Result(argv, code, out, err, time.monotonic() - start)

    # -- the commands ---------------------------------------------------------------
    def create(self, cid: str, bundle: Bundle, *flags: str, check: bool = True) -> Result:
        bundle.write()
        r = self("create", "--bundle", str(bundle.path), *flags, cid)
        if check:
            r.ok()
            self.watch.watch_pid(self.state(cid)["pid"])
        return r

    def start(self, cid: str, check: bool = True) -> Result:
        r = self("start", cid)
        return r.ok() if check else r

    def run(self, bundle: Bundle, *flags: str, cid: str | None = None, timeout: float = TIMEOUT) -> Result:
        """`run` in the foreground: returns when the container's process has exited."""
        bundle.write()
        return self("run", "--bundle", str(bundle.path), *flags, cid or self.new_id(), timeout=timeout)

    def state(self, cid: str) -> dict:
        r = self("state", cid).ok()
        return json.loads(r.out)

    def status(self, cid: str) -> str | None:
        r = self("state", cid)
        return json.loads(r.out)["status"] if r.returncode == 0 else None

    def kill(self, cid: str, *args: str, check: bool = True) -> Result:
        r = self("kill", cid, *args)
        return r.ok() if check else r

    def delete(self, cid: str, *flags: str, check: bool = True) -> Result:
        r = self("delete", *flags, cid)
        return r.ok() if check else r

    def exec(self, cid: str, *args: str, flags: tuple = (), timeout: float = TIMEOUT) -> Result:
        """`exec [flags] ID args...` (runc takes its flags before the id only)."""
        return self("exec", *flags, cid, *args, timeout=timeout)

    # -- conveniences -----------------------------------------------------------------
    def started(self, bundle: Bundle, *flags: str, cid: str | None = None) -> tuple[str, int]:
        """create + start; returns (id, pid) once the container is running."""
        cid = cid or self.new_id()
        self.create(cid, bundle, *flags)
        self.start(cid)
        return cid, self.state(cid)["pid"]

    def wait_status(self, cid: str, status: str, timeout: float = 5.0) -> None:
        wait_until(lambda: self.status(cid) == status, timeout, what=f"container {cid} to be {status}")

    def cleanup(self) -> None:
        """delete --force whatever is left, as a user would (the leak check then judges)."""
        if not self.root.exists():
            return
        for cid in sorted(os.listdir(self.root)):
            if (self.root / cid).is_dir():
                self("delete", "--force", cid)


@pytest.fixture
def rt(tmp_path, host_watch) -> Runtime:
    if os.geteuid() != 0:
        pytest.skip("the runtime conformance tests need root")
    if not os.access(RUNTIME, os.X_OK):
        pytest.fail(f"runtime under test {RUNTIME} is not executable (set SAMPAN_TEST_RUNTIME)")
    runtime = Runtime(RUNTIME, tmp_path / "rt", host_watch)
    yield runtime
    runtime.cleanup()


@pytest.fixture(scope="session")
def runtime_features() -> dict:
    cp = subprocess.run([RUNTIME, "features"], capture_output=True, text=True, timeout=TIMEOUT)
    return json.loads(cp.stdout) if cp.returncode == 0 else {}


@pytest.fixture(scope="session")
def runtime_version() -> tuple[str, tuple[int, ...]]:
    """("runc", (1, 1, 5)) or ("sampan-runc", (0, 1, 0)), from `--version`."""
    import re
    cp = subprocess.run([RUNTIME, "--version"], capture_output=True, text=True, timeout=TIMEOUT)
    m = re.match(r"(\S+) version (\d+)\.(\d+)\.(\d+)", cp.stdout)
    return (m.group(1), tuple(int(x) for x in m.groups()[1:])) if m else ("unknown", (0,))


@pytest.fixture
def console_socket(tmp_path):
    """console_socket() -> a ConsoleSocket listening in tmp_path; all closed at teardown."""
    made = []

    def make(name: str = "console.sock") -> ConsoleSocket:
        s = ConsoleSocket(tmp_path / name)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
