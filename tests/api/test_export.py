"""`export`: a container's filesystem as a tar, through the docker CLI and the sampan CLI."""
from __future__ import annotations

import io
import tarfile


def _names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return set(tar.getnames())


def test_export_of_a_stopped_container_has_its_changes(sampand, tmp_path):
    r = sampand.docker("run", "--name", "exp1", "busybox", "sh", "-c", "echo hi > /made-here; rm /bin/vi")
    assert r.returncode == 0, r.stderr
    r = sampand.docker("export", "exp1")
    assert r.returncode == 0, r.stderr
    names = _names(r.stdout)
    assert {"made-here", "bin/busybox", "etc/passwd"} <= names
    assert "bin/vi" not in names  # the whiteout hides the image's file
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        assert tar.extractfile("made-here").read() == b"hi\n"
    out = tmp_path / "exp.tar"
    r = sampand.sampan("export", "-o", str(out), "exp1")
    assert r.returncode == 0, r.stderr
    assert _names(out.read_bytes()) == names


def test_export_of_a_running_container_and_of_a_missing_one(sampand):
    r = sampand.docker("run", "-d", "--name", "exp2", "busybox", "sh", "-c", "touch /alive; sleep 60")
    assert r.returncode == 0, r.stderr
    for _ in range(100):
        r = sampand.docker("export", "exp2")
        if "alive" in _names(r.stdout):
            break
    assert "alive" in _names(r.stdout)
    r = sampand.sampan("export", "no-such-container")
    assert r.returncode != 0
    assert "No such container" in r.stderr.decode()
