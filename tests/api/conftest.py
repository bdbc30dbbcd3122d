"""A real sampand on temporary roots, a busybox image in its store, and clean-up of every
container a test made (so the suite-wide leak check sees nothing left)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
DOCKER = "/usr/local/bin/docker"


def _add_busybox():
    spec = importlib.util.spec_from_file_location("_engine_conftest", REPO / "tests" / "engine" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.add_busybox


class Daemon:
    def __init__(self, root: str, exec_root: str, args: tuple[str, ...] = (), netns: str | None = None) -> None:
        self.root, self.exec_root = root, exec_root
        self.args = args  # more sampand options
        self.netns = netns  # a network namespace (its /proc/PID/ns/net) to run sampand in
        self.sock = os.path.join(exec_root, "sampan.sock")
        self.host = "unix://" + self.sock
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        return dict(os.environ, SAMPAN_ROOT=self.root, SAMPAN_EXEC_ROOT=self.exec_root,
                    DOCKER_HOST=self.host, DOCKER_CONFIG=os.path.join(self.root, ".docker"))

    def start(self) -> None:
        log = open(os.path.join(self.exec_root, "sampand.log"), "ab")
        enter = ["nsenter", f"--net={self.netns}", "--"] if self.netns else []
        self.proc = subprocess.Popen([*enter, PY, "-m", "sampan.api", "--root", self.root, "--exec-root",
                                      self.exec_root, *self.args], stdout=log, stderr=log, start_new_session=True)
        log.close()
        from sampan.cli.client import Client
        c = Client(self.sock)
        for _ in range(400):
            if c.ping(timeout=1):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.025)
        raise RuntimeError("sampand did not start: " + open(os.path.join(self.exec_root, "sampand.log")).read())

    def pid(self) -> int:
        return int(open(os.path.join(self.exec_root, "sampand.pid")).read())

    def kill(self, sig: int = signal.SIGTERM) -> None:
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
        else:
            for _ in range(200):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.025)

    def client(self):
        from sampan.cli.client import Client
        return Client(self.sock)

    def sampan(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "-m", "sampan.cli.main", *args], env=self.env, input=input,
                              capture_output=True, timeout=timeout)

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, *args], env=self.env, input=input, capture_output=True, timeout=timeout)


def start_daemon(tmp_path_factory, args: tuple[str, ...] = (), netns: str | None = None) -> Daemon:
    """A sampand on new roots with busybox in its store (in the network namespace `netns`, a
    /proc/PID/ns/net path, if given); end it with stop_daemon."""
    root = str(tmp_path_factory.mktemp("sampand") / "root")
    exec_root = f"/run/sampan-apitest-{os.getpid()}-{time.monotonic_ns()}"
    os.makedirs(exec_root)
    from sampan.image.store import ImageStore
    store = ImageStore(root)
    _add_busybox()(store)
    store.close()
    d = Daemon(root, exec_root, args, netns)
    d.start()
    return d


def stop_daemon(d: Daemon) -> None:
    _remove_all(d)
    d.kill()
    try:
        pid = int(open(os.path.join(d.exec_root, "supervisor.pid")).read())
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            os.kill(pid, 0)
            time.sleep(0.025)
    except (OSError, ValueError):
        pass
    shutil.rmtree(d.exec_root, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(tmp_path_factory)
    yield d
    stop_daemon(d)


def _remove_all(d: Daemon) -> list[str]:
    from sampan.cli.client import APIError
    c = d.client()
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


@pytest.fixture
def sampand(daemon, host_watch):
    """The module's daemon; every container a test made is force-removed (and watched)."""
    host_watch.watch_root(os.path.join(daemon.exec_root, "runtime"))
    if not daemon.client().ping():
        daemon.start()
    yield daemon
    if not daemon.client().ping():
        daemon.start()
    for cid in _remove_all(daemon):
        host_watch.watch_id(cid)
