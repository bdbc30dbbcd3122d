"""Drop-in fixtures: a private dockerd and a private containerd that use the OCI runtime
under test, and a check that each leaves the host as it found it.

The runtime binary is ``$SAMPAN_TEST_RUNTIME`` (default /usr/local/bin/sampan-runc);
``SAMPAN_TEST_RUNTIME=/usr/sbin/runc`` runs the same tests against runc. Every daemon
lives in its own temporary directory (data, state, sockets), its own network namespace,
its own cgroup parent and its own containerd namespace, never touches the host's links or
firewall, and is torn down at the end of
its module: daemon stopped, stray processes killed, mounts detached, cgroups and
directories removed. Anything that had to be cleaned up by force fails the module.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME = os.environ.get("SAMPAN_TEST_RUNTIME", "/usr/local/bin/sampan-runc")
IMAGES = Path(os.environ.get("SAMPAN_TEST_IMAGES", REPO / ".cache" / "images"))
DOCKER_CLI = "/usr/local/bin/docker" if os.access("/usr/local/bin/docker", os.X_OK) else shutil.which("docker")
DOCKERD = shutil.which("dockerd", path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin")
CONTAINERD = shutil.which("containerd", path="/usr/bin:/usr/sbin:/usr/local/bin")
CTR = shutil.which("ctr", path="/usr/bin:/usr/sbin:/usr/local/bin")
CMD_TIMEOUT = 60
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
# A network namespace of the daemon's own (loopback up), gone with its last process: with
# --bridge=none dockerd deletes a docker0 it finds, and it and containerd may touch links,
# routes and the firewall; their sockets are files in the tmp dir, so clients reach them all
# the same. The mount namespace stays the host's: the teardown checks the mounts they leave.
OWN_NETNS = [UNSHARE, "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def pytest_configure(config):
    config.addinivalue_line("markers", "dropin: runs a real dockerd/containerd against the runtime under test")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.dropin)


# ---------------------------------------------------------------- commands


def run(argv, *, timeout=CMD_TIMEOUT, check=True, env=None, context=lambda: ""):
    """Runs argv (stdin /dev/null), returns the CompletedProcess with str output and no
    newline translation (a tty's "\\r\\n" stays); a failure says what ran and why, and
    adds context() (the daemon's log lines written meanwhile)."""
    try:
        cp = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"timed out after {timeout}s: {argv}\nstdout: {e.stdout!r}\nstderr: {e.stderr!r}{context()}")
    cp.stdout = cp.stdout.decode(errors="replace")
    cp.stderr = cp.stderr.decode(errors="replace")
    if check and cp.returncode != 0:
        pytest.fail(f"exit {cp.returncode}: {argv}\nstdout: {cp.stdout!r}\nstderr: {cp.stderr!r}{context()}")
    return cp


def _tail(path: Path, lines=40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- host state


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _mountinfo():
    """(mount point, fs type) of every mount in our mount namespace, in mount order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            out.append((_unescape(left.split()[4]), right.split()[0]))
    return out


def _cgroup_roots():
    return sorted({mp for mp, fstype in _mountinfo() if fstype in ("cgroup", "cgroup2")})


def _top_cgroups():
    top = set()
    for root in _cgroup_roots():
        try:
            top |= {f"{root}/{e.name}" for e in os.scandir(root) if e.is_dir(follow_symlinks=False)}
        except OSError:
            pass
    return top


def _normalize_rules(text: str) -> str:
    text = re.sub(r"\[\d+:\d+\]", "[]", text)
    text = re.sub(r"packets \d+ bytes \d+", "", text)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


_RULE_DUMPS = [["iptables-save"], ["ip6tables-save"], ["iptables-legacy-save"],
               ["ip6tables-legacy-save"], ["nft", "list", "ruleset"]]
_SYSCTLS = ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding",
            "/proc/sys/net/bridge/bridge-nf-call-iptables"]
_RUN_DIRS = ["/run/docker", "/run/containerd"]
_DEFAULT_CGROUPS = {"docker", "containerd", "default", "moby"}
_OWN_CGROUPS = "sampan-test-"  # the prefix of PrivateDaemon.cgroup_parent


def _walk(top):
    found = set()
    for dirpath, dirnames, filenames in os.walk(top):
        found.add(dirpath)
        found |= {os.path.join(dirpath, n) for n in dirnames + filenames}
    return found


class HostState:
    """What a drop-in test must not change: firewall, forwarding sysctls, links,
    top-level cgroups, and the fixed /run paths dockerd and containerd use."""

    def __init__(self):
        self.rules = {}
        for argv in _RULE_DUMPS:
            if shutil.which(argv[0]):
                cp = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
                self.rules[argv[0]] = _normalize_rules(cp.stdout)
        self.sysctls = {}
        for p in _SYSCTLS:
            try:
                self.sysctls[p] = Path(p).read_text().strip()
            except OSError:
                self.sysctls[p] = None
        self.links = set(os.listdir("/sys/class/net"))
        self.cgroups = _top_cgroups()
        self.run_paths = set().union(*(_walk(d) for d in _RUN_DIRS))

    def changes_since(self, before: "HostState") -> list[str]:
        out = []
        for name, text in before.rules.items():
            if self.rules.get(name) != text:
                out.append(f"{name} output changed:\n--- before\n{text}\n--- after\n{self.rules.get(name)}")
        for p, v in before.sysctls.items():
            if self.sysctls[p] != v:
                out.append(f"{p}: {v!r} -> {self.sysctls[p]!r}")
        # new links are other tests' (a daemon in its own netns cannot make any); a link gone is ours
        if before.links - self.links:
            out.append(f"network links gone: {sorted(before.links - self.links)}")
        # other tests make top-level cgroups meanwhile: ours are the daemon's (named after its
        # cgroup parent) and those dockerd and containerd make by default
        ours = {c for c in self.cgroups - before.cgroups
                if os.path.basename(c) in _DEFAULT_CGROUPS or os.path.basename(c).startswith(_OWN_CGROUPS)}
        if ours:
            out.append(f"new top-level cgroups: {sorted(ours)}")
        return out


# ---------------------------------------------------------------- clean-up helpers


def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def procs_touching(tmpdir: str, cgroup_parent: str):
    """Processes whose command line or cwd names tmpdir, or that sit in cgroup_parent."""
    found = {}
    for pid in _pids():
        cmd = _cmdline(pid)
        why = None
        if tmpdir in cmd:
            why = "cmdline"
        else:
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(tmpdir):
                    why = "cwd"
            except OSError:
                pass
        if why is None:
            try:
                for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                    path = line.split(":", 2)[2]
                    if path == cgroup_parent or path.startswith(cgroup_parent + "/"):
                        why = f"cgroup {path}"
                        break
            except (OSError, IndexError):
                pass
        if why:
            found[pid] = f"pid {pid} ({why}): {cmd}"
    return found


def _alive(pid):
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def mounts_under(tmpdir: str):
    return [mp for mp, _ in _mountinfo() if mp == tmpdir or mp.startswith(tmpdir + "/")]


def detach_mounts(tmpdir: str):
    for mp in reversed(mounts_under(tmpdir)):
        _libc.umount2(mp.encode(), MNT_DETACH)


def cgroup_leftovers(cgroup_parent: str):
    """Directories below cgroup_parent in every hierarchy (the parent itself excluded)."""
    left = []
    for root in _cgroup_roots():
        top = root + cgroup_parent
        if os.path.isdir(top):
            for dirpath, dirnames, _ in os.walk(top):
                left += [os.path.join(dirpath, d) for d in dirnames]
    return left


def remove_cgroups(cgroup_parent: str):
    for root in _cgroup_roots():
        top = root + cgroup_parent
        if not os.path.isdir(top):
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def restore_run_dirs(before: HostState) -> list[str]:
    """Removes what appeared under /run/docker and /run/containerd while we ran: the
    empty directories dockerd and containerd always create are expected; files are not."""
    problems = []
    new = set().union(*(_walk(d) for d in _RUN_DIRS)) - before.run_paths
    for path in sorted(new, key=lambda p: -p.count("/")):
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                os.rmdir(path)
            except OSError as e:
                problems.append(f"cannot remove {path}: {e}")
        else:
            problems.append(f"left behind: {path}")
            try:
                os.unlink(path)
            except OSError:
                pass
    return problems


class PrivateDaemon:
    """Shared lifecycle of a daemon started in its own temporary directory."""

    name = "daemon"

    def __init__(self):
        self.suffix = secrets.token_hex(4)
        self.tmp = tempfile.mkdtemp(prefix=f"sampan-{self.name}-")
        self.cgroup_parent = f"/sampan-test-{self.name}-{self.suffix}"
        self.log = Path(self.tmp) / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.before = HostState()

    def _spawn(self, argv):
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*OWN_NETNS, *argv], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def _wait_ready(self, probe, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log)}")
            if probe():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{_tail(self.log)}")

    def command(self, argv, *, check=True, timeout=CMD_TIMEOUT, env=None):
        """run() with the daemon's log lines written meanwhile in a failure's message."""
        offset = self.log.stat().st_size

        def context():
            with open(self.log, "rb") as f:
                f.seek(offset)
                new = f.read()[-8000:].decode(errors="replace")
            return f"\n--- runtime {RUNTIME}; {self.name} log meanwhile:\n{new}"

        return run(argv, check=check, timeout=timeout, env=env, context=context)

    def remove_containers(self):
        """Best-effort removal of what the tests left running (before the daemon stops)."""

    def teardown(self) -> list[str]:
        """Stops everything, returns what had to be cleaned up by force."""
        problems = []
        try:
            self.remove_containers()
        except Exception as e:  # noqa: BLE001 - teardown must go on
            problems.append(f"removing containers failed: {e}")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append(f"{self.name} ignored SIGTERM for 60s; killed")
                self.proc.kill()
                self.proc.wait()
        # containerd under dockerd, and shims, exit shortly after the daemon does.
        stray = procs_touching(self.tmp, self.cgroup_parent)
        if stray and not _wait_gone(stray, 10):
            stray = {p: d for p, d in procs_touching(self.tmp, self.cgroup_parent).items() if _alive(p)}
            problems += [f"process left running: {d}" for d in stray.values()]
            for pid in stray:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _wait_gone(stray, 10)
        left = mounts_under(self.tmp)
        if left:
            problems.append(f"mounts left under {self.tmp}: {left}")
            detach_mounts(self.tmp)
        left = cgroup_leftovers(self.cgroup_parent)
        if left:
            problems.append(f"cgroups left: {left}")
        remove_cgroups(self.cgroup_parent)
        problems += restore_run_dirs(self.before)
        problems += HostState().changes_since(self.before)
        log_tail = _tail(self.log)
        try:
            shutil.rmtree(self.tmp)
        except OSError as e:
            problems.append(f"cannot remove {self.tmp}: {e}")
        if problems:
            problems.append(f"{self.name} log tail:\n{log_tail}")
        return problems


def _daemon_fixture(daemon: PrivateDaemon):
    try:
        daemon.start()
    except BaseException:
        daemon.teardown()
        raise
    yield daemon
    problems = daemon.teardown()
    if problems:
        pytest.fail("host not left as found:\n" + "\n".join(problems), pytrace=False)


# ---------------------------------------------------------------- prerequisites


def _require(*tools):
    if os.geteuid() != 0:
        pytest.skip("drop-in tests need root")
    for name, path in tools:
        if not path:
            pytest.skip(f"{name} not installed")
    if not os.access(RUNTIME, os.X_OK):
        pytest.fail(f"runtime under test {RUNTIME} is not an executable (set SAMPAN_TEST_RUNTIME)")


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    rootfs = IMAGES / "busybox"
    if not (rootfs / "bin" / "busybox").exists():
        subprocess.run([str(REPO / "scripts" / "build-images.sh")], check=True, stdout=subprocess.DEVNULL)
    return rootfs


# ---------------------------------------------------------------- dockerd


class Dockerd(PrivateDaemon):
    name = "dockerd"
    image = "busybox:local"

    def __init__(self, rootfs: Path):
        super().__init__()
        self.rootfs = rootfs
        self.sock = f"{self.tmp}/docker.sock"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env.update(DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=f"{self.tmp}/cli",
                        DOCKER_CLI_HINTS="false")

    def start(self):
        config = {
            # dockerd 20.10 otherwise writes /etc/docker/key.json
            "deprecated-key-path": f"{self.tmp}/key.json",
            "runtimes": {"sampan": {"path": RUNTIME}},
            "shutdown-timeout": 5,
        }
        cfg = Path(self.tmp, "daemon.json")
        cfg.write_text(json.dumps(config))
        self._spawn([
            DOCKERD, "--config-file", str(cfg),
            "--data-root", f"{self.tmp}/data", "--exec-root", f"{self.tmp}/exec",
            "--pidfile", f"{self.tmp}/docker.pid", "--host", f"unix://{self.sock}",
            # leave the host's firewall, forwarding sysctl and links alone
            "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
            "--bridge=none", "--cgroup-parent", self.cgroup_parent,
        ])
        self._wait_ready(lambda: subprocess.run([DOCKER_CLI, "version"], env=self.env, capture_output=True,
                                                stdin=subprocess.DEVNULL, timeout=10).returncode == 0)
        tar = subprocess.Popen(["tar", "-C", str(self.rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run([DOCKER_CLI, "import", "-c", 'CMD ["sh"]', "-", self.image], stdin=tar.stdout,
                             env=self.env, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        tar.stdout.close()
        if tar.wait() != 0 or imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr}\n{_tail(self.log)}")

    def docker(self, *args, check=True, timeout=CMD_TIMEOUT):
        return self.command([DOCKER_CLI, *args], env=self.env, check=check, timeout=timeout)

    def remove_containers(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        ids = subprocess.run([DOCKER_CLI, "ps", "-aq"], env=self.env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=30).stdout.split()
        if ids:
            subprocess.run([DOCKER_CLI, "rm", "-f", *ids], env=self.env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60)


@pytest.fixture(scope="module")
def dockerd(busybox_rootfs):
    _require(("dockerd", DOCKERD), ("docker CLI", DOCKER_CLI))
    yield from _daemon_fixture(Dockerd(busybox_rootfs))


# ---------------------------------------------------------------- containerd


def write_oci_archive(rootfs: Path, out: Path, name: str):
    """An OCI image layout tarball with one uncompressed layer holding rootfs."""
    layer = io.BytesIO()

    def as_root(ti):
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as lt:
        lt.add(str(rootfs), arcname=".", filter=as_root)

    with tarfile.open(out, "w") as tf:
        def add(path, data: bytes):
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data))

        def blob(data: bytes, media_type: str):
            digest = hashlib.sha256(data).hexdigest()
            add(f"blobs/sha256/{digest}", data)
            return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

        layer_desc = blob(layer.getvalue(), "application/vnd.oci.image.layer.v1.tar")
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
        config_desc = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}
        manifest_desc = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {"io.containerd.image.name": name}
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode())


class Containerd(PrivateDaemon):
    name = "containerd"
    image = "docker.io/library/busybox:local"

    def __init__(self, rootfs: Path):
        super().__init__()
        self.rootfs = rootfs
        self.sock = f"{self.tmp}/containerd.sock"
        # ctr's default cgroup path is /<namespace>/<id>: the namespace is our cgroup parent.
        self.namespace = self.cgroup_parent.lstrip("/")

    def start(self):
        cfg = Path(self.tmp, "config.toml")
        cfg.write_text(f"""version = 2
root = "{self.tmp}/root"
state = "{self.tmp}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.tmp}/opt"
""")
        self._spawn([CONTAINERD, "--config", str(cfg)])
        self._wait_ready(lambda: subprocess.run([CTR, "--address", self.sock, "version"], capture_output=True,
                                                stdin=subprocess.DEVNULL, timeout=10).returncode == 0)
        archive = Path(self.tmp, "busybox-oci.tar")
        write_oci_archive(self.rootfs, archive, self.image)
        self.ctr("image", "import", str(archive))

    def ctr(self, *args, check=True, timeout=CMD_TIMEOUT):
        return self.command([CTR, "--address", self.sock, "--namespace", self.namespace, *args],
                            check=check, timeout=timeout)

    @property
    def runtime_flags(self):
        """Flags of `ctr run` that select the runtime and keep its state in our tmp dir."""
        return ["--runc-binary", RUNTIME, "--runc-root", f"{self.tmp}/runc-root", "--fifo-dir", f"{self.tmp}/fifo"]

    def remove_containers(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        base = [CTR, "--address", self.sock, "--namespace", self.namespace]
        out = subprocess.run([*base, "containers", "ls", "-q"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=30).stdout.split()
        for cid in out:
            subprocess.run([*base, "task", "kill", "-s", "SIGKILL", cid], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30)
            subprocess.run([*base, "task", "delete", "-f", cid], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30)
            subprocess.run([*base, "containers", "rm", cid], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30)


@pytest.fixture(scope="module")
def containerd(busybox_rootfs):
    _require(("containerd", CONTAINERD), ("ctr", CTR))
    yield from _daemon_fixture(Containerd(busybox_rootfs))


@pytest.fixture
def new_private_daemon(busybox_rootfs):
    """kind ("dockerd" or "containerd") -> a private daemon of that kind, not started yet."""
    def make(kind: str) -> PrivateDaemon:
        if kind == "dockerd":
            _require(("dockerd", DOCKERD), ("docker CLI", DOCKER_CLI))
            return Dockerd(busybox_rootfs)
        _require(("containerd", CONTAINERD), ("ctr", CTR))
        return Containerd(busybox_rootfs)
    return make
