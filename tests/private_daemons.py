"""Private daemons for tests and benchmarks: a dockerd, a containerd and a sampand, each in
a temporary directory of its own, started, waited for and torn down the same way.

Every daemon gets its own data, state and sockets (files in its directories, so clients on
the host reach them), its own cgroup parent, and a network namespace of its own (a file in
its directory, loopback up, kept across a restart of the daemon and removed at teardown):
dockerd and sampand make bridges and firewall rules, which must not touch the host's.
``network`` may instead name another daemon's namespace (``other.netns``) to share its
loopback: a registry, a dockerd and a sampand that must all reach each other on 127.0.0.1
(``in_netns`` runs a client there). ``network="host"`` keeps the host's (a sampand that
reaches the test registries, with --bridge none --iptables=false).

The mount namespace stays the host's unless ``own_mounts``: the drop-in tests check the
mounts a daemon leaves; a benchmark's daemon takes its mounts into a namespace of its own,
so a test suite running at the same time (which detaches mounts it does not know) neither
trips over them nor takes them away mid-benchmark.

``teardown()`` removes the containers, stops the daemon and what it started, and returns
what had to be cleaned up by force (processes, mounts, cgroups, and for dockerd and
containerd any change to the host; see host_state.py). Tests import this module as
``private_daemons`` (tests/ is on sys.path), benchmarks after adding tests/ to sys.path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from host_state import (HostState, alive, cgroup_leftovers, detach_mounts, mounts_under, procs_touching,
                        remove_cgroups, restore_run_dirs, wait_gone)

REPO = Path(__file__).resolve().parents[1]
RUNTIME = os.environ.get("SAMPAN_TEST_RUNTIME", "/usr/local/bin/sampan-runc")
IMAGES = Path(os.environ.get("SAMPAN_TEST_IMAGES", REPO / ".cache" / "images"))
DOCKER_CLI = "/usr/local/bin/docker" if os.access("/usr/local/bin/docker", os.X_OK) else shutil.which("docker")
DOCKERD = shutil.which("dockerd", path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin")
CONTAINERD = shutil.which("containerd", path="/usr/bin:/usr/sbin:/usr/local/bin")
CTR = shutil.which("ctr", path="/usr/bin:/usr/sbin:/usr/local/bin")
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
SAMPAN = [PY, "-m", "sampan.cli.main"]
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
CMD_TIMEOUT = 60


class CommandFailed(AssertionError):
    """A command of a test or benchmark exited non-zero or timed out."""


def run(argv: list[str], *, timeout: float = CMD_TIMEOUT, check: bool = True, env: dict | None = None,
        context: Callable[[], str] = lambda: "") -> subprocess.CompletedProcess:
    """Runs argv (stdin /dev/null), returns the CompletedProcess with str output and no
    newline translation (a tty's "\\r\\n" stays); a failure says what ran and why, and
    adds context() (the daemon's log lines written meanwhile)."""
    try:
        cp = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(f"timed out after {timeout}s: {argv}\nstdout: {e.stdout!r}\nstderr: {e.stderr!r}"
                            f"{context()}") from None
    cp.stdout = cp.stdout.decode(errors="replace")
    cp.stderr = cp.stderr.decode(errors="replace")
    if check and cp.returncode != 0:
        raise CommandFailed(f"exit {cp.returncode}: {argv}\nstdout: {cp.stdout!r}\nstderr: {cp.stderr!r}{context()}")
    return cp


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def in_netns(netns: str | None) -> list[str]:
    """The argv prefix that runs a command in the network namespace at path ``netns`` (none:
    in this process's)."""
    return [NSENTER, f"--net={netns}", "--"] if netns else []


def namespaces(network: str, own_mounts: bool) -> list[str]:
    """The argv prefix that puts a daemon in its namespaces (see the module's docstring):
    ``network`` is "host" or a namespace file."""
    argv = [] if network == "host" else in_netns(network)
    if own_mounts:
        argv += [UNSHARE, "--mount", "--propagation", "private", "--"]
    return argv


def busybox_rootfs() -> Path:
    """The busybox tree every private daemon's first image is made of (built once)."""
    rootfs = IMAGES / "busybox"
    if not (rootfs / "bin" / "busybox").exists():
        subprocess.run([str(REPO / "scripts" / "build-images.sh")], check=True, stdout=subprocess.DEVNULL)
    return rootfs


def daemon_fixture(daemon: "PrivateDaemon"):
    """A fixture's body for a private daemon: started, yielded, torn down; the test fails
    unless the teardown left the host as the daemon found it."""
    try:
        daemon.start()
    except BaseException:
        daemon.teardown()
        raise
    yield daemon
    problems = daemon.teardown()
    if problems:
        pytest.fail("host not left as found:\n" + "\n".join(problems), pytrace=False)


class PrivateDaemon:
    """Shared lifecycle of a daemon started in its own temporary directory."""

    name = "daemon"
    watches_host = True   # teardown compares the host's firewall, links, ... with how it found them

    def __init__(self, *, network: str = "own", own_mounts: bool = False) -> None:
        self.network, self.own_mounts = network, own_mounts
        self.suffix = secrets.token_hex(4)
        self.tmp = tempfile.mkdtemp(prefix=f"sampan-{self.name}-")
        self.own_netns = ""
        if network == "own":
            # a namespace file, not `unshare --net` per spawn: a daemon restarted (kill, start)
            # comes back to its bridge, veths, firewall and the supervisor that kept running
            from sampan.network import netns
            self.own_netns = self.network = f"{self.tmp}/netns"
            netns.create(self.own_netns)
        self.cgroup_parent = f"/sampan-test-{self.name}-{self.suffix}"
        self.log = Path(self.tmp) / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.before = HostState() if self.watches_host else None

    @property
    def netns(self) -> str:
        """The path of the daemon's network namespace (for ``in_netns`` and ``network=``)."""
        if self.network != "host":
            return self.network
        return f"/proc/{self.proc.pid}/ns/net"

    @property
    def dirs(self) -> list[str]:
        """The directories that are the daemon's alone (its processes, mounts and files)."""
        return [self.tmp]

    def _spawn(self, argv: list[str]) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*namespaces(self.network, self.own_mounts), *argv], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")

    def _wait_ready(self, probe: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")
            if probe():
                return
            time.sleep(0.025)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{tail(self.log)}")

    def command(self, argv: list[str], *, check: bool = True, timeout: float = CMD_TIMEOUT,
                env: dict | None = None) -> subprocess.CompletedProcess:
        """run() with the daemon's log lines written meanwhile in a failure's message."""
        offset = self.log.stat().st_size

        def context() -> str:
            with open(self.log, "rb") as f:
                f.seek(offset)
                new = f.read()[-8000:].decode(errors="replace")
            return f"\n--- runtime {RUNTIME}; {self.name} log meanwhile:\n{new}"

        return run(argv, check=check, timeout=timeout, env=env, context=context)

    def remove_containers(self) -> None:
        """Best-effort removal of what the tests left running (before the daemon stops)."""

    def _stop_helpers(self) -> list[str]:
        """Stops what the daemon leaves running on purpose when it exits; returns problems."""
        return []

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
        problems += self._stop_helpers()
        # containerd under dockerd, and shims, exit shortly after the daemon does.
        stray = {pid: why for d in self.dirs for pid, why in procs_touching(d, self.cgroup_parent).items()}
        if stray and not wait_gone(stray, 10):
            stray = {pid: why for pid, why in stray.items() if alive(pid)}
            problems += [f"process left running: {why}" for why in stray.values()]
            for pid in stray:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_gone(stray, 10)
        if self.own_netns:
            from sampan.network import netns
            netns.remove(self.own_netns)
        for d in self.dirs:
            left = mounts_under(d)
            if left:
                problems.append(f"mounts left under {d}: {left}")
                detach_mounts(d)
        left = cgroup_leftovers(self.cgroup_parent)
        if left:
            problems.append(f"cgroups left: {left}")
        remove_cgroups(self.cgroup_parent)
        if self.before is not None:
            problems += restore_run_dirs(self.before)
            problems += HostState().changes_since(self.before, self.cgroup_parent)
        log_tail = tail(self.log)
        for d in self.dirs:
            try:
                shutil.rmtree(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                problems.append(f"cannot remove {d}: {e}")
        if problems:
            problems.append(f"{self.name} log tail:\n{log_tail}")
        return problems


# ---------------------------------------------------------------- dockerd


class Dockerd(PrivateDaemon):
    """dockerd (and the containerd it starts) with the runtime under test registered as
    `sampan`, and busybox:local imported from the busybox tree."""

    name = "dockerd"
    image = "busybox:local"

    def __init__(self, rootfs: Path, bridge: str | None = None, **namespaces_) -> None:
        """bridge: dockerd's default networking, in the daemon's own network namespace (docker0
        with this --bip, its iptables rules and userland proxy); None: --bridge=none, and the
        firewall, forwarding and masquerade left alone."""
        super().__init__(**namespaces_)
        self.rootfs, self.bridge = rootfs, bridge
        self.sock = f"{self.tmp}/docker.sock"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env.update(DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=f"{self.tmp}/cli",
                        DOCKER_CLI_HINTS="false")

    def start(self) -> None:
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
            *(["--bip", self.bridge] if self.bridge else
              # leave the host's firewall, forwarding sysctl and links alone
              ["--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none"]),
            "--cgroup-parent", self.cgroup_parent,
        ])
        self._wait_ready(lambda: subprocess.run([DOCKER_CLI, "version"], env=self.env, capture_output=True,
                                                stdin=subprocess.DEVNULL, timeout=10).returncode == 0)
        tar = subprocess.Popen(["tar", "-C", str(self.rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run([DOCKER_CLI, "import", "-c", 'CMD ["sh"]', "-", self.image], stdin=tar.stdout,
                             env=self.env, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        tar.stdout.close()
        if tar.wait() != 0 or imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr}\n{tail(self.log)}")

    def docker(self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
        return self.command([DOCKER_CLI, *args], env=self.env, check=check, timeout=timeout)

    def shim_pids(self) -> list[int]:
        """containerd-shim-runc-v2 processes of this dockerd (their command line names its containerd)."""
        out = []
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[0].endswith(b"containerd-shim-runc-v2") and any(self.tmp.encode() in c for c in cmd):
                out.append(int(p))
        return out

    def remove_containers(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        ids = subprocess.run([DOCKER_CLI, "ps", "-aq"], env=self.env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=30).stdout.split()
        if ids:
            subprocess.run([DOCKER_CLI, "rm", "-f", *ids], env=self.env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=300)


# ---------------------------------------------------------------- containerd


def write_oci_archive(rootfs: Path, out: Path, name: str) -> None:
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

    def __init__(self, rootfs: Path, **namespaces_) -> None:
        super().__init__(**namespaces_)
        self.rootfs = rootfs
        self.sock = f"{self.tmp}/containerd.sock"
        # ctr's default cgroup path is /<namespace>/<id>: the namespace is our cgroup parent.
        self.namespace = self.cgroup_parent.lstrip("/")

    def start(self) -> None:
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

    def ctr(self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
        return self.command([CTR, "--address", self.sock, "--namespace", self.namespace, *args],
                            check=check, timeout=timeout)

    @property
    def runtime_flags(self) -> list[str]:
        """Flags of `ctr run` that select the runtime and keep its state in our tmp dir."""
        return ["--runc-binary", RUNTIME, "--runc-root", f"{self.tmp}/runc-root", "--fifo-dir", f"{self.tmp}/fifo"]

    def remove_containers(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        base = [CTR, "--address", self.sock, "--namespace", self.namespace]
        out = subprocess.run([*base, "containers", "ls", "-q"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=30).stdout.split()
        for cid in out:
            for argv in (["task", "kill", "-s", "SIGKILL", cid], ["task", "delete", "-f", cid],
                         ["containers", "rm", cid]):
                subprocess.run([*base, *argv], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)


# ---------------------------------------------------------------- sampand


class Sampand(PrivateDaemon):
    """sampand (and the supervisor it starts) on ``root`` (default: in its tmp dir) and an
    exec root of its own under /run."""

    name = "sampand"
    # its tests' host_watch checks the host per test; a sampand never touches the firewall
    watches_host = False

    def __init__(self, root: str | None = None, args: tuple[str, ...] = (), **namespaces_) -> None:
        super().__init__(**namespaces_)
        self.root = root or f"{self.tmp}/root"
        self.args = args  # more sampand options
        # unix socket paths are short: the exec root is under /run, named with the -<pid>-
        # marker the suite's leak check charges to this test process
        self.exec_root = f"/run/sampan-{self.name}-{os.getpid()}-{self.suffix}"
        os.makedirs(self.exec_root)
        self.sock = os.path.join(self.exec_root, "sampan.sock")
        self.host = "unix://" + self.sock
        self.log = Path(self.exec_root, "sampand.log")

    @property
    def dirs(self) -> list[str]:
        return [self.tmp, self.exec_root] + ([] if self.root.startswith(self.tmp + "/") else [self.root])

    @property
    def env(self) -> dict:
        """The environment of a sampan or docker CLI talking to this daemon."""
        env = {k: v for k, v in os.environ.items() if k != "SAMPAN_HOST"}
        return dict(env, SAMPAN_ROOT=self.root, SAMPAN_EXEC_ROOT=self.exec_root,
                    DOCKER_HOST=self.host, DOCKER_CONFIG=os.path.join(self.root, ".docker"))

    def start(self) -> None:
        self._spawn([PY, "-m", "sampan.api", "--root", self.root, "--exec-root", self.exec_root, *self.args])
        client = self.client()
        self._wait_ready(lambda: client.ping(timeout=1))

    def pid(self) -> int:
        return int(open(os.path.join(self.exec_root, "sampand.pid")).read())

    def running(self) -> bool:
        """The daemon process this object started last is alive."""
        return self.proc is not None and self.proc.poll() is None

    def supervisor_pid(self) -> int | None:
        try:
            return int(Path(self.exec_root, "supervisor.pid").read_text())
        except (OSError, ValueError):
            return None

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Sends sig to the daemon and waits until it is gone."""
        try:
            pid = self.pid()
        except (OSError, ValueError):
            pid = self.proc.pid if self.proc else 0
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.pid == pid:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elif pid:
            wait_gone([pid], 5)

    def client(self):
        from sampan.cli.client import Client
        return Client(self.sock)

    def sampan(self, *args: str, input: bytes | None = None, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess:
        """The sampan CLI against this daemon (bytes output; check=True raises on failure)."""
        return self._cli([*SAMPAN, *args], input, timeout, check)

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess:
        """The docker CLI against this daemon (bytes output; check=True raises on failure)."""
        return self._cli([DOCKER_CLI, *args], input, timeout, check)

    def _cli(self, argv: list[str], input: bytes | None, timeout: float, check: bool) -> subprocess.CompletedProcess:
        cp = subprocess.run(argv, env=self.env, input=input, capture_output=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise CommandFailed(f"exit {cp.returncode}: {argv}\nstderr: {cp.stderr.decode(errors='replace')}")
        return cp

    def remove_containers(self) -> list[str]:
        """Force-removes every container (volumes too); returns their ids. Quiet when the
        daemon is down."""
        from sampan.cli.client import APIError
        c = self.client()
        ids = []
        try:
            for ct in c.get("/containers/json", all=1):
                ids.append(ct["Id"])
                try:
                    c.delete(f"/containers/{ct['Id']}", force=1, v=1)
                except APIError:
                    pass
        except Exception:  # noqa: BLE001 - the daemon may be down
            pass
        return ids

    def _stop_helpers(self) -> list[str]:
        # the supervisor outlives sampand on purpose (containers survive a daemon restart)
        pid = self.supervisor_pid()
        if not pid or not alive(pid):
            return []
        os.kill(pid, signal.SIGTERM)
        if wait_gone([pid], 10):
            return []
        os.kill(pid, signal.SIGKILL)
        wait_gone([pid], 5)
        return [f"supervisor {pid} ignored SIGTERM for 10s; killed"]
