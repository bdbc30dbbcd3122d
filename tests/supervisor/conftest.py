"""Fixtures of the supervisor tests: a real supervisor process on temporary roots, bundles of
the busybox rootfs, and a client.

- ``sv``: a ``sampan-supervisor`` started with ``ensure_running`` on tmp root/exec root; at
  teardown every container it still knows is deleted and the supervisor is SIGTERMed.
  ``sv.new_id()`` registers ids with the suite-wide leak check.
- ``make_bundle(name, *args)``: a bundle dir (config.json from ``sampan-runc spec``, terminal
  false, writable root) whose rootfs is one shared copy of the busybox image.
"""
from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sampan.runtime.container import Runtime
from sampan.supervisor.client import Client, SupervisorError, ensure_running

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path(os.environ.get("SAMPAN_TEST_IMAGES", REPO / ".cache" / "images"))
SPEC_SOURCE = os.environ.get("SAMPAN_TEST_SPEC_RUNTIME", "/usr/local/bin/sampan-runc")


from svhelpers import wait_until  # noqa: E402


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    rootfs = IMAGES / "busybox"
    if not (rootfs / "bin" / "busybox").exists():
        subprocess.run([str(REPO / "scripts" / "build-images.sh")], check=True, stdout=subprocess.DEVNULL)
    return rootfs


@pytest.fixture(scope="session")
def spec_template(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("spec")
    subprocess.run([SPEC_SOURCE, "spec", "--bundle", str(d)], check=True, timeout=20)
    spec = json.loads((d / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["root"]["readonly"] = False
    return spec


@pytest.fixture
def shared_rootfs(tmp_path, busybox_rootfs) -> Path:
    dest = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(dest)], check=True)
    dest.chmod(0o755)
    return dest


class Bundle:
    def __init__(self, path: Path, rootfs: Path, spec: dict) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.config = copy.deepcopy(spec)
        self.config["root"]["path"] = str(rootfs)

    @property
    def process(self) -> dict:
        return self.config["process"]

    @property
    def linux(self) -> dict:
        return self.config.setdefault("linux", {})

    def args(self, *args: str) -> "Bundle":
        self.process["args"] = list(args)
        return self

    def sh(self, script: str) -> "Bundle":
        return self.args("sh", "-c", script)

    def write(self) -> str:
        (self.path / "config.json").write_text(json.dumps(self.config))
        return str(self.path)


@pytest.fixture
def make_bundle(tmp_path, shared_rootfs, spec_template):
    """make_bundle(name) -> Bundle at tmp_path/<name>/bundle (exit.json lands in tmp_path/<name>)."""
    return lambda name: Bundle(tmp_path / name / "bundle", shared_rootfs, spec_template)


class Sv:
    def __init__(self, tmp: Path, watch) -> None:
        self.root = str(tmp / "root")
        self.exec_root = str(tmp / "exec")
        self.runtime_root = os.path.join(self.exec_root, "runtime")
        self.watch = watch
        watch.watch_root(self.runtime_root)
        self.pid = ensure_running(self.root, self.exec_root)
        watch.watch_pid(self.pid)
        self.client = Client(self.exec_root, timeout=30)

    def new_id(self, prefix: str = "sv") -> str:
        cid = f"{prefix}-{secrets.token_hex(5)}"
        self.watch.watch_id(cid)
        return cid

    def call(self, op: str, **fields):
        return self.client.call(op, **fields)

    def run(self, bundle: Bundle, cid: str | None = None, start: bool = True, **fields) -> str:
        cid = cid or self.new_id()
        self.call("create", container=cid, bundle=bundle.write(), **fields)
        if start:
            self.call("start", container=cid)
        return cid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    def stop(self) -> None:
        """Deletes what the supervisor still knows, SIGTERMs it, cleans the runtime root."""
        if self.alive():
            try:
                for c in self.call("list")["containers"]:
                    try:
                        self.call("delete", container=c["container"])
                    except SupervisorError:
                        pass
            except SupervisorError:
                pass
            self.client.close()
            os.kill(self.pid, signal.SIGTERM)
            wait_until(lambda: not self.alive(), 10, what="the supervisor to exit")
        rt = Runtime(root=self.runtime_root)
        if os.path.isdir(self.runtime_root):
            for cid in os.listdir(self.runtime_root):
                try:
                    rt.delete(cid, force=True)
                except Exception:  # noqa: BLE001
                    pass


@pytest.fixture
def sv(tmp_path, host_watch):
    if os.geteuid() != 0:
        pytest.skip("the supervisor tests need root")
    s = Sv(tmp_path, host_watch)
    yield s
    s.stop()

