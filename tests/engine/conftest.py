"""Fixtures of the engine tests: a busybox image in a fresh store, an Engine on temporary roots.

``engine`` is an Engine whose supervisor runs under a temporary exec root; at teardown
every container is force-removed, the supervisor stopped and its runtime root watched by
the suite-wide leak check, so a test leaves nothing behind.
"""
from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = Path(os.environ.get("SAMPAN_TEST_IMAGES", REPO / ".cache" / "images")) / "busybox"


def add_busybox(store, ref: str = "busybox:latest", volumes: dict | None = None,
                env: list[str] | None = None, extra_files: dict[str, bytes] | None = None) -> str:
    """Build a one-layer busybox image (plus an optional layer of extra files) into ``store``."""
    import hashlib

    def layer_of(build) -> tuple[str, str, int]:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            build(tf)
        data = buf.getvalue()
        digest, diff_id = store.import_layer(io.BytesIO(data))
        return digest, diff_id, len(data)

    layers = [layer_of(lambda tf: tf.add(str(BUSYBOX), arcname=".", recursive=True))]
    if extra_files:
        def extra(tf):
            dirs = set()
            for name, content in sorted(extra_files.items()):
                parts = name.strip("/").split("/")
                for i in range(1, len(parts)):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        dirs.add(d)
                        ti = tarfile.TarInfo(d)
                        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                        tf.addfile(ti)
                ti = tarfile.TarInfo("/".join(parts))
                ti.size, ti.mode = len(content), 0o644
                tf.addfile(ti, io.BytesIO(content))
        layers.append(layer_of(extra))
    cfg = {"architecture": "amd64", "os": "linux",
           "config": {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                      "Cmd": ["sh"], **({"Volumes": volumes} if volumes else {})},
           "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]}}
    config = json.dumps(cfg).encode()
    mt = "application/vnd.oci.image.layer.v1.tar"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                                      "size": len(config)},
                           "layers": [{"mediaType": mt, "digest": d, "size": n} for d, _, n in layers]}).encode()
    image_id = store.add_image(manifest, config, [(d, mt) for d, _, _ in layers])
    store.tag(image_id, ref)
    return image_id


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "root"
    exec_root = Path("/run") / f"sampan-test-{os.getpid()}-{time.monotonic_ns()}"
    yield str(root), str(exec_root)


@pytest.fixture
def engine_netns(tmp_path):
    """A network namespace the engine's networks live in (its bridge, firewall table, published
    ports): each test's own, so tests run side by side and the host's network is never touched."""
    from sampan.network import netns
    path = str(tmp_path / "engine-netns")
    netns.create(path)
    yield path
    netns.remove(path)


@pytest.fixture
def engine(roots, host_watch, engine_netns):
    from sampan.engine.containers import Engine
    root, exec_root = roots
    eng = Engine(root, exec_root, network_namespace=engine_netns)
    add_busybox(eng.images)
    host_watch.watch_root(os.path.join(exec_root, "runtime"))
    created = []
    orig = eng.create

    def create(body, name=None):
        cid = orig(body, name)
        host_watch.watch_id(cid)
        created.append(cid)
        return cid

    eng.create = create  # type: ignore[method-assign]
    yield eng
    for rec in eng.store.all():
        try:
            eng.remove(rec["id"], force=True, volumes=True)
        except Exception as e:  # noqa: BLE001
            print("teardown remove:", e)
    eng.close()
    pidfile = os.path.join(exec_root, "supervisor.pid")
    try:
        pid = int(open(pidfile).read().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            os.kill(pid, 0)
            time.sleep(0.02)
    except (OSError, ValueError):
        pass
    import shutil
    shutil.rmtree(exec_root, ignore_errors=True)


@pytest.fixture
def run(engine):
    """run(cmd, **body): create + start + wait; returns (exit code, stdout+stderr bytes, id)."""
    def run(cmd, timeout=20, **body):
        cid = engine.create({"Image": "busybox", "Cmd": cmd, **body})
        engine.start(cid)
        res = engine.wait(cid, timeout=timeout)
        out = b"".join(d for s, d in engine.logs(cid))
        return res["StatusCode"], out, cid
    return run
