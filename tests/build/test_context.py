"""build.context: contexts from tars and directories, .dockerignore, sources, checksums."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile

import pytest

from sampan.build.context import BuildContext, ContextError


def make_tree(root, files: dict[str, str | bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())


def tar_bytes(members: list[tuple[str, str, bytes | str]]) -> bytes:
    """members: (name, kind, data-or-linkname); kind "f" file, "d" dir, "l" symlink, "h" hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "f":
                body = data if isinstance(data, bytes) else data.encode()
                info.size = len(body)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(body))
                continue
            info.type = {"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}[kind]
            info.mode = 0o755
            if kind in "lh":
                info.linkname = str(data)
            tf.addfile(info)
    return buf.getvalue()


SIMPLE = [("Dockerfile", "f", "FROM scratch\n"), ("app", "d", ""), ("app/main.py", "f", "print(1)\n"),
          ("app/link", "l", "main.py"), ("app/hard", "h", "app/main.py")]


@pytest.mark.parametrize("compress", [None, gzip.compress, bz2.compress, lzma.compress])
def test_from_tar_any_compression(tmp_path, compress) -> None:
    data = tar_bytes(SIMPLE)
    if compress:
        data = compress(data)
    ctx = BuildContext.from_tar(io.BytesIO(data), str(tmp_path / "ctx"))
    assert ctx.dockerfile() == b"FROM scratch\n"
    root = tmp_path / "ctx"
    assert (root / "app/main.py").read_text() == "print(1)\n"
    assert os.readlink(root / "app/link") == "main.py"
    assert os.stat(root / "app/hard").st_ino == os.stat(root / "app/main.py").st_ino
    assert os.stat(root / "app/main.py").st_mtime == 1_700_000_000
    ctx.remove()
    assert not root.exists()


@pytest.mark.parametrize("members,message", [
    ([("../evil", "f", "x")], "member '../evil' escapes the context"),
    ([("a/../../evil", "f", "x")], "escapes the context"),
    ([("/sampan-test-abs/evil", "f", "x")], "member '/sampan-test-abs/evil' is an absolute path"),
    ([("ok", "f", "x"), ("bad", "h", "../outside")], "hardlink 'bad' to '../outside' escapes the context"),
    ([("bad", "h", "/sampan-test-abs/x")], "is an absolute path"),
    ([("esc", "l", "{outside}"), ("esc/evil", "f", "x")], "parent 'esc' is a symlink"),
    ([("dir", "d", ""), ("dir/esc", "l", "{outside}"), ("dir/esc/evil", "f", "x")], "parent 'dir/esc' is a symlink"),
    ([("dir", "d", ""), ("dir/.wh.x", "f", "")], "whiteout names"),
])
def test_from_tar_refuses_escapes_and_leaves_nothing(tmp_path, members, message) -> None:
    # A symlink member points at a directory of the test's own, never at a real system one:
    # the clean-up after a refusal must not follow it.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    members = [(name, kind, data.format(outside=outside) if isinstance(data, str) else data)
               for name, kind, data in members]
    work = tmp_path / "ctx"
    with pytest.raises(ContextError, match=message) as exc:
        BuildContext.from_tar(io.BytesIO(tar_bytes([("first", "f", "1")] + members)), str(work))
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith("invalid context: ")
    assert not work.exists()
    assert not (tmp_path / "evil").exists()
    # an existing (empty) workdir is emptied, not removed
    work.mkdir()
    with pytest.raises(ContextError):
        BuildContext.from_tar(io.BytesIO(tar_bytes([("first", "f", "1")] + members)), str(work))
    assert work.exists() and os.listdir(work) == []
    assert os.listdir(outside) == ["precious"]


def test_from_tar_refuses_garbage_and_a_busy_workdir(tmp_path) -> None:
    with pytest.raises(ContextError, match="invalid context: .*tar"):
        BuildContext.from_tar(io.BytesIO(b"not a tar at all" * 64), str(tmp_path / "ctx"))
    assert not (tmp_path / "ctx").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/x").write_text("")
    with pytest.raises(ContextError, match="not empty"):
        BuildContext.from_tar(io.BytesIO(tar_bytes(SIMPLE)), str(tmp_path / "busy"))
    assert os.listdir(tmp_path / "busy") == ["x"]


@pytest.mark.parametrize("keep_padding", [False, True])
def test_from_tar_ending_without_the_end_marker(tmp_path, keep_padding) -> None:
    # The docker CLI's tar for `-f` outside the context ends right after the data of its
    # last member (.dockerignore): no padding, no end-of-archive blocks. dockerd takes it.
    whole = tar_bytes([("a.txt", "f", "a\n"), (".dockerignore", "f", ".dockerignore\n")])
    headers = [i for i in range(0, len(whole), 512) if whole[i + 257:i + 262] == b"ustar"]
    data_end = headers[-1] + 512 + len(".dockerignore\n")
    cut = whole[:data_end + (-data_end % 512 if keep_padding else 0)]
    ctx = BuildContext.from_tar(io.BytesIO(cut), str(tmp_path / "ctx"))
    assert (tmp_path / "ctx/.dockerignore").read_text() == ".dockerignore\n"
    assert (tmp_path / "ctx/a.txt").read_text() == "a\n"
    with pytest.raises(ContextError, match="invalid context: unexpected end"):  # data cut short
        BuildContext.from_tar(io.BytesIO(whole[:data_end - 3]), str(tmp_path / "cut"))
    assert not (tmp_path / "cut").exists()
    ctx.remove()


def test_dockerfile_lookup(tmp_path) -> None:
    make_tree(tmp_path, {"dockerfile": "FROM a\n", "sub/Other": "FROM b\n"})
    ctx = BuildContext.from_dir(str(tmp_path))
    assert ctx.dockerfile() == b"FROM a\n"  # "Dockerfile" falls back to "dockerfile"
    assert ctx.dockerfile("sub/Other") == b"FROM b\n"
    assert ctx.dockerfile("./sub/../sub/Other") == b"FROM b\n"
    with pytest.raises(ContextError, match="^Cannot locate specified Dockerfile: Missing$"):
        ctx.dockerfile("Missing")
    with pytest.raises(ContextError, match="not found"):
        BuildContext.from_dir(str(tmp_path / "nope"))


def test_ignored_dockerfile_is_readable_but_not_copyable(tmp_path) -> None:
    make_tree(tmp_path, {"Dockerfile": "FROM a\n", ".dockerignore": "Dockerfile\n.dockerignore\n", "x": "1"})
    ctx = BuildContext.from_dir(str(tmp_path))
    assert ctx.dockerfile() == b"FROM a\n"
    with pytest.raises(ContextError, match="stat Dockerfile: file does not exist"):
        ctx.sources(["Dockerfile"])
    assert [rel for rel, _ in ctx.walk()] == ["x"]


def test_sources_plain_globs_and_errors(tmp_path) -> None:
    make_tree(tmp_path, {"b.txt": "", "a.txt": "", "c.md": "", "d/e.txt": "", "d/f/g.txt": "", "*": "star",
                         "x1": "", "x2": "", "y": ""})
    ctx = BuildContext.from_dir(str(tmp_path))
    assert ctx.sources(["*.txt"]) == ["a.txt", "b.txt"]
    assert ctx.sources(["d/*.txt", "/c.md", "./d"]) == ["d/e.txt", "c.md", "d"]
    assert ctx.sources(["*/*/*.txt"]) == ["d/f/g.txt"]
    assert ctx.sources(["x[0-9]", "?"]) == ["x1", "x2", "*", "d", "y"]
    assert ctx.sources(["[*]"]) == ["*"]
    assert ctx.sources(["\\x*"]) == ["x1", "x2"]  # an escape inside a glob is Go's
    with pytest.raises(ContextError, match="stat \\\\\\*: file does not exist"):
        ctx.sources(["\\*"])  # no wildcard left: the literal name "\*", as moby
    assert ctx.sources(["."]) == ["."]
    assert ctx.sources(["*.nomatch", "y"]) == ["y"]  # as moby: an empty glob beside a file is no error
    with pytest.raises(ContextError, match="^COPY failed: no source files were specified$"):
        ctx.sources(["*.nomatch"])
    with pytest.raises(ContextError, match="^ADD failed: file not found in build context or excluded by "
                                           "\\.dockerignore: stat missing: file does not exist$"):
        ctx.sources(["missing"], "ADD")
    with pytest.raises(ContextError, match="^COPY failed: forbidden path outside the build context: ../x \\(\\)$"):
        ctx.sources(["../x"])


def test_sources_symlinks_stay_inside(tmp_path) -> None:
    (tmp_path / "ctx").mkdir()
    make_tree(tmp_path, {"outside": "secret", "ctx/real": "ok"})
    os.symlink("/outside", tmp_path / "ctx/abs")   # absolute: resolved at the context root
    os.symlink("../outside", tmp_path / "ctx/up")  # climbs: stops at the context root
    os.symlink("real", tmp_path / "ctx/good")
    ctx = BuildContext.from_dir(str(tmp_path / "ctx"))
    assert ctx.sources(["good"]) == ["good"]
    for name in ("abs", "up"):
        with pytest.raises(ContextError, match=f"stat {name}: file does not exist"):
            ctx.sources([name])
    make_tree(tmp_path, {"ctx/outside": "inner"})  # now both resolve inside, to ctx/outside
    assert ctx.sources(["abs", "up"]) == ["abs", "up"]
    assert ctx.resolve("up") == str(tmp_path / "ctx/outside")


def test_dockerignore_shapes_the_context(tmp_path) -> None:
    make_tree(tmp_path, {
        ".dockerignore": "*.log\n!keep.log\nbuild\n**/*.tmp\nsecret/\n!secret/public\nnode_modules\n",
        "a.log": "", "keep.log": "", "build/out": "", "src/x.py": "", "src/deep/y.tmp": "", "src/deep/z.py": "",
        "secret/key": "", "secret/public/pub": "", "node_modules/m/index.js": ""})
    ctx = BuildContext.from_dir(str(tmp_path))
    assert [rel for rel, _ in ctx.walk()] == [
        ".dockerignore", "keep.log", "secret", "secret/public", "secret/public/pub", "src", "src/deep",
        "src/deep/z.py", "src/x.py"]
    assert ctx.sources(["*.log"]) == ["keep.log"]
    assert ctx.sources(["secret/public/pub"]) == ["secret/public/pub"]
    for hidden in ("a.log", "build/out", "build", "secret/key", "src/deep/y.tmp", "node_modules/m/index.js"):
        with pytest.raises(ContextError, match="excluded by .dockerignore"):
            ctx.sources([hidden])
    assert [rel for rel, _ in ctx.walk("secret")] == ["secret/public", "secret/public/pub"]


def test_dockerignore_exception_not_under_the_directory_does_not_reach_into_it(tmp_path) -> None:
    # moby's archive walk skips an excluded directory no exception is spelled under
    make_tree(tmp_path, {".dockerignore": "*\n!*.go\n", "a.go": "", "sub/b.go": ""})
    ctx = BuildContext.from_dir(str(tmp_path))
    assert [rel for rel, _ in ctx.walk()] == ["a.go"]
    with pytest.raises(ContextError):
        ctx.sources(["sub/b.go"])


def test_an_image_root_has_no_dockerignore(tmp_path) -> None:
    make_tree(tmp_path, {".dockerignore": "*\n[broken\n", "bin/sh": ""})
    root = BuildContext.from_dir(str(tmp_path), dockerignore=False)
    assert not root.ignore
    assert root.sources(["bin/sh"]) == ["bin/sh"]


def test_bad_dockerignore_is_one_line(tmp_path) -> None:
    make_tree(tmp_path, {".dockerignore": "ok\n[broken\n"})
    with pytest.raises(ContextError, match="^invalid .dockerignore: syntax error in pattern: \\[broken$"):
        BuildContext.from_dir(str(tmp_path))


def test_checksum_is_by_content_not_mtime(tmp_path) -> None:
    make_tree(tmp_path, {"d/a": "alpha", "d/b": "beta", "f": "file"})
    os.symlink("a", tmp_path / "d/l")

    def checksum(*rels: str) -> str:
        return BuildContext.from_dir(str(tmp_path)).checksum(list(rels))

    first = checksum("d", "f")
    assert first.startswith("sha256:") and len(first) == 71
    os.utime(tmp_path / "d/a", (1, 1))
    assert checksum("d", "f") == first  # touched only
    (tmp_path / "d/a").write_text("alphA")
    changed = checksum("d", "f")
    assert changed != first
    (tmp_path / "d/a").write_text("alpha")
    assert checksum("d", "f") == first
    os.chmod(tmp_path / "d/b", 0o600)
    assert checksum("d", "f") != first
    os.chmod(tmp_path / "d/b", 0o644)
    os.unlink(tmp_path / "d/l")
    os.symlink("b", tmp_path / "d/l")
    assert checksum("d", "f") != first
    os.unlink(tmp_path / "d/l")
    os.symlink("a", tmp_path / "d/l")
    os.chown(tmp_path / "d/a", 1000, 1000)  # owners are not copied: not in the key
    assert checksum("d", "f") == first
    os.rename(tmp_path / "d/b", tmp_path / "d/c")
    assert checksum("d", "f") != first
    assert checksum("f", "d") != checksum("d", "f")


def test_checksum_follows_a_top_level_symlink_and_skips_ignored(tmp_path) -> None:
    make_tree(tmp_path, {"target": "t", "d/keep": "k", "d/skip.tmp": "s"})
    os.symlink("target", tmp_path / "link")
    ctx = BuildContext.from_dir(str(tmp_path))
    before = ctx.checksum(["link", "d"])
    (tmp_path / "target").write_text("T")
    (tmp_path / ".dockerignore").write_text("**/*.tmp\n")
    ctx2 = BuildContext.from_dir(str(tmp_path))
    after = ctx2.checksum(["link", "d"])
    assert after != before
    (tmp_path / "d/skip.tmp").write_text("changed, but excluded")
    assert BuildContext.from_dir(str(tmp_path)).checksum(["link", "d"]) == after


def test_checksum_memoises_unchanged_files(tmp_path) -> None:
    """Within one context a file whose (dev, inode, size, mtime) did not change is not read
    again: rewriting a byte in place and restoring the mtime shows the remembered hash."""
    make_tree(tmp_path, {"big": b"x" * (4 << 20)})
    ctx = BuildContext.from_dir(str(tmp_path))
    first = ctx.checksum(["big"])
    st = os.stat(tmp_path / "big")
    with open(tmp_path / "big", "r+b") as f:
        f.write(b"y")
    os.utime(tmp_path / "big", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ctx.checksum(["big"]) == first
    assert BuildContext.from_dir(str(tmp_path)).checksum(["big"]) != first
