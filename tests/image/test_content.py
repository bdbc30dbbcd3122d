"""The content store: verified, atomic, resumable, safe under concurrent writers."""
import hashlib
import multiprocessing
import os
import threading

import pytest

from sampan.image.content import BlobNotFound, ContentStore, DigestMismatch


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_read_has_size_delete(tmp_path):
    cs = ContentStore(str(tmp_path))
    data = b"hello world"
    d = cs.put(data)
    assert d == dg(data)
    assert cs.path(d) == str(tmp_path / "blobs" / "sha256" / d[7:])
    assert cs.has(d) and cs.size(d) == len(data) and cs.read(d) == data
    with cs.open(d) as f:
        assert f.read() == data
    assert list(cs.digests()) == [d]
    assert cs.put(data, d) == d  # idempotent
    cs.delete(d)
    assert not cs.has(d)
    with pytest.raises(BlobNotFound):
        cs.read(d)
    cs.delete(d)  # missing is fine


def test_digest_is_never_a_path(tmp_path):
    cs = ContentStore(str(tmp_path))
    for bad in ("sha256:../../etc/passwd", "sha256:abc", "md5:" + "0" * 32, "../x", ""):
        with pytest.raises(ValueError):
            cs.path(bad)
        assert not cs.has(bad)


def test_wrong_digest_or_size_is_refused_and_leaves_nothing(tmp_path):
    cs = ContentStore(str(tmp_path))
    with pytest.raises(DigestMismatch) as e:
        cs.put(b"abc", dg(b"abd"))
    assert "\n" not in str(e.value) and "digest mismatch" in str(e.value)
    w = cs.writer(dg(b"abc"), size=4)
    w.write(b"abc")
    with pytest.raises(DigestMismatch, match="size mismatch"):
        w.commit()
    w = cs.writer(dg(b"abc"), size=2)
    with pytest.raises(DigestMismatch):
        w.write(b"abc")
    assert list(cs.digests()) == []
    assert os.listdir(cs.ingest_dir) == []


def test_writer_streams_and_verifies(tmp_path):
    cs = ContentStore(str(tmp_path))
    data = os.urandom(3 << 20)
    with cs.writer(dg(data), size=len(data)) as w:
        for i in range(0, len(data), 100_000):
            w.write(data[i:i + 100_000])
        assert w.digest == dg(data)
        assert w.commit() == dg(data)
    assert cs.read(dg(data)) == data
    assert oct(os.stat(cs.path(dg(data))).st_mode & 0o777) == "0o444"
    assert os.listdir(cs.ingest_dir) == []


def test_writer_without_expected_digest(tmp_path):
    cs = ContentStore(str(tmp_path))
    with cs.writer() as w:
        w.write(b"x" * 10)
        d = w.commit()
    assert d == dg(b"x" * 10) and cs.has(d)


def test_context_manager_aborts_on_error(tmp_path):
    cs = ContentStore(str(tmp_path))
    with pytest.raises(RuntimeError):
        with cs.writer(dg(b"data")) as w:
            w.write(b"da")
            raise RuntimeError("network went away")
    assert os.listdir(cs.ingest_dir) == []
    assert not cs.has(dg(b"data"))


def test_resume_after_partial_write(tmp_path):
    cs = ContentStore(str(tmp_path))
    data = os.urandom(5 << 20)
    w = cs.writer(dg(data), size=len(data))
    assert w.offset == 0
    w.write(data[:2_000_000])
    w.close()  # interrupted: the partial stays for a resume
    assert not cs.has(dg(data))
    w = cs.writer(dg(data), size=len(data), resume=True)
    assert w.offset == 2_000_000
    w.write(data[w.offset:])
    assert w.commit() == dg(data)
    assert cs.read(dg(data)) == data
    assert os.listdir(cs.ingest_dir) == []


def test_no_resume_starts_over_and_corrupt_partial_is_caught(tmp_path):
    cs = ContentStore(str(tmp_path))
    data = b"0123456789" * 1000
    w = cs.writer(dg(data))
    w.write(b"garbage!!")
    w.close()
    w = cs.writer(dg(data))  # resume=False truncates
    assert w.offset == 0
    w.write(data)
    w.commit()
    # a resumed partial whose bytes are wrong fails at commit (it was re-hashed)
    other = b"abcdefghij" * 1000
    w = cs.writer(dg(other))
    w.write(b"XXXXX")
    w.close()
    w = cs.writer(dg(other), resume=True)
    assert w.offset == 5
    w.write(other[5:])
    with pytest.raises(DigestMismatch):
        w.commit()
    assert not cs.has(dg(other))


def test_concurrent_threads_write_the_same_blob(tmp_path):
    cs = ContentStore(str(tmp_path))
    data = os.urandom(1 << 20)
    results, errors = [], []

    def write():
        try:
            with cs.writer(dg(data), size=len(data)) as w:
                for i in range(0, len(data), 65536):
                    w.write(data[i:i + 65536])
                results.append(w.commit())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [dg(data)] * 8
    assert cs.read(dg(data)) == data
    assert os.listdir(cs.ingest_dir) == []


def _proc_write(root, data, n):
    cs = ContentStore(root)
    for _ in range(n):
        with cs.writer(dg(data), size=len(data)) as w:
            w.write(data[: len(data) // 2])
            w.write(data[len(data) // 2:])
            w.commit()


def test_concurrent_processes_write_the_same_blob(tmp_path):
    data = os.urandom(300_000)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_proc_write, args=(str(tmp_path), data, 5)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    cs = ContentStore(str(tmp_path))
    assert cs.read(dg(data)) == data
    assert os.listdir(cs.ingest_dir) == []


def test_active_ingest_is_reported_and_kept(tmp_path):
    cs = ContentStore(str(tmp_path))
    w = cs.writer(dg(b"payload"))
    w.write(b"pay")
    states = list(cs.ingests())
    assert len(states) == 1 and states[0][1] is True
    assert cs.remove_stale_ingests(0) == []
    w.close()
    assert [s[1] for s in cs.ingests()] == [False]
    assert cs.remove_stale_ingests(3600) == []  # recent: kept for a resume
    assert len(cs.remove_stale_ingests(0)) == 1
    assert os.listdir(cs.ingest_dir) == []


def test_corrupt_blob_on_disk_is_detected(tmp_path):
    cs = ContentStore(str(tmp_path))
    d = cs.put(b"original")
    os.chmod(cs.path(d), 0o644)
    with open(cs.path(d), "wb") as f:
        f.write(b"tampered")
    with pytest.raises(DigestMismatch, match="corrupt"):
        cs.read(d)
