"""The comparison's own reader (tests/build/imagefs.py) on hand-made archives: layers applied
with whiteouts and opaque directories, hard links kept until a later layer replaces one,
and a difference in content, mode, owner or config found and named."""
from __future__ import annotations

import copy
import io
import json
import tarfile

from imagefs import differences, read_saved


def _layer(members: list[tuple[str, bytes | str | None]]) -> bytes:
    """name -> bytes (a file), None (a directory), "->T" (a symlink), "=>T" (a hard link)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, what in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1000
            if what is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif isinstance(what, str):
                ti.type, ti.linkname = (tarfile.SYMTYPE if what[0] == "-" else tarfile.LNKTYPE), what[2:]
            else:
                ti.size = len(what)
            tf.addfile(ti, io.BytesIO(what) if isinstance(what, bytes) else None)
    return buf.getvalue()


def _archive(path, layers: list[bytes], config: dict) -> str:
    with tarfile.open(path, "w") as tf:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        names = [f"{i}/layer.tar" for i in range(len(layers))]
        for name, data in zip(names, layers):
            add(name, data)
        add("config.json", json.dumps(config).encode())
        add("manifest.json", json.dumps([{"Config": "config.json", "Layers": names}]).encode())
    return str(path)


CONFIG = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
          "history": [{"created_by": "/bin/sh -c #(nop) COPY file:" + "a" * 64 + " in / "}, {"created_by": "x"}],
          "rootfs": {"type": "layers", "diff_ids": ["sha256:1", "sha256:2"]}}


def test_layers_whiteouts_and_hard_links(tmp_path):
    base = _layer([("etc", None), ("etc/a", b"a"), ("etc/b", b"b"), ("old", None), ("old/x", b"x"),
                   ("h1", b"same"), ("h2", "=>h1"), ("h3", "=>h1"), ("s", "->etc/a")])
    top = _layer([("etc/.wh.a", b""), ("old/.wh..wh..opq", b""), ("old/y", b"y"), ("h3", b"new")])
    image = read_saved(_archive(tmp_path / "i.tar", [base, top], CONFIG))
    assert sorted(image.files) == ["/etc", "/etc/b", "/h1", "/h2", "/h3", "/old", "/old/y", "/s"]
    assert image.files["/s"].target == "etc/a" and image.files["/h2"].sha256 == image.files["/h1"].sha256
    assert image.hardlink_groups() == {frozenset({"/h1", "/h2"})}


def test_a_difference_is_named(tmp_path):
    layer = _layer([("f", b"content"), ("d", None)])
    want = read_saved(_archive(tmp_path / "a.tar", [layer, layer], CONFIG))
    assert differences(want, read_saved(_archive(tmp_path / "b.tar", [layer, layer], CONFIG)), 2000) == []
    other = copy.deepcopy(CONFIG)
    other["config"]["Cmd"] = ["bash"]
    other["history"][0]["created_by"] = other["history"][0]["created_by"].replace("a" * 64, "b" * 64)
    got = read_saved(_archive(tmp_path / "c.tar", [_layer([("f", b"changed"), ("d", None)])] * 2, other))
    got.files["/d"].mode = 0o700
    got.files["/d"].uid = 5
    diffs = "\n".join(differences(want, got, 2000))
    assert "config.Cmd: want ['sh'], got ['bash']" in diffs and "/f: sha256 want" in diffs
    assert "/d: mode want 493 got 448, uid want 0 got 5" in diffs
    assert "history" not in diffs   # another digest, used as consistently: the same to the comparison
