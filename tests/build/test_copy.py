"""build.copy: COPY/ADD into a root filesystem on real files, as root (owners, modes, xattrs)."""
from __future__ import annotations

import email.utils
import gzip
import hashlib
import http.server
import io
import os
import socket
import stat
import struct
import tarfile
from dataclasses import dataclass

import pytest
from local_http import serving

from sampan.build.context import BuildContext, ContextError
from sampan.build.copy import copy_into, fetch_url, normalise_dest, resolve_chown, write_heredoc

MTIME = 1_600_000_000


def put(root, rel: str, data: str | bytes = "", mode: int = 0o644, owner: tuple[int, int] = (1234, 5678)) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.chown(path, *owner)
    os.chmod(path, mode)
    os.utime(path, ns=(MTIME * 10**9 + 123_456_789, MTIME * 10**9 + 123_456_789))


@pytest.fixture
def roots(tmp_path):
    """(context dir, rootfs dir) — the rootfs with an /etc of its own and a usr-merged /lib."""
    ctx, rootfs = tmp_path / "ctx", tmp_path / "rootfs"
    ctx.mkdir()
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "usr/lib").mkdir(parents=True)
    os.symlink("usr/lib", rootfs / "lib")
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n"
                                       "same:x:1003:1003::/:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\nappgrp:x:1002:\nsame:x:1004:\n")
    return ctx, rootfs


def owner_mode(path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_file_destinations(roots) -> None:
    ctx, rootfs = roots
    put(ctx, "a.txt", "A", mode=0o640)
    copy_into(str(rootfs), str(ctx), ["a.txt"], "/new/dir/")
    got = rootfs / "new/dir/a.txt"
    assert got.read_text() == "A"
    assert owner_mode(got) == (0, 0, 0o640)  # owner reset to root, mode kept
    assert os.stat(got).st_mtime_ns == MTIME * 10**9  # whole seconds, as moby's tar
    assert owner_mode(rootfs / "new") == (0, 0, 0o755)
    copy_into(str(rootfs), str(ctx), ["a.txt"], "/renamed")
    assert (rootfs / "renamed").read_text() == "A"
    copy_into(str(rootfs), str(ctx), ["a.txt"], "/new")  # an existing directory: into it
    assert (rootfs / "new/a.txt").read_text() == "A"
    copy_into(str(rootfs), str(ctx), ["a.txt"], "rel/", workdir="/work")
    assert (rootfs / "work/rel/a.txt").exists()
    copy_into(str(rootfs), str(ctx), ["a.txt"], ".", workdir="/new/dir")
    assert (rootfs / "new/dir/a.txt").exists()


def test_several_sources_need_a_slash(roots) -> None:
    ctx, rootfs = roots
    put(ctx, "a")
    put(ctx, "b")
    with pytest.raises(ContextError, match="^When using COPY with more than one source file, the destination "
                                           "must be a directory and end with a /$"):
        copy_into(str(rootfs), str(ctx), ["a", "b"], ".", workdir="/app")
    assert not (rootfs / "app").exists()
    copy_into(str(rootfs), str(ctx), ["a", "b"], "./", workdir="/app")
    assert sorted(os.listdir(rootfs / "app")) == ["a", "b"]


def test_normalise_dest() -> None:
    assert normalise_dest("/app", ".") == "/app"
    assert normalise_dest("/app", "./") == "/app/"
    assert normalise_dest("/app", "x/../y") == "/app/y"
    assert normalise_dest("", "x") == "/x"
    assert normalise_dest("/app", "/abs/") == "/abs/"
    assert normalise_dest("/", "./") == "/"


def test_directory_contents_owners_links_and_kept_dest(roots) -> None:
    ctx, rootfs = roots
    put(ctx, "d/f", "F", mode=0o4755)
    put(ctx, "d/sub/g", "G", mode=0o600)
    os.chmod(ctx / "d/sub", 0o750)
    os.link(ctx / "d/f", ctx / "d/sub/hard")
    os.utime(ctx / "d/sub", (MTIME, MTIME))
    os.symlink("/outside/target", ctx / "d/abs-link")  # copied as it is, never followed
    os.mkfifo(ctx / "d/fifo")
    (rootfs / "existing").mkdir(mode=0o711)
    os.chown(rootfs / "existing", 42, 43)
    copy_into(str(rootfs), str(ctx), ["d"], "/existing", chown=(1001, 1002))
    dst = rootfs / "existing"
    assert owner_mode(dst) == (42, 43, 0o711)  # a directory that was there keeps its owner and mode
    assert sorted(os.listdir(dst)) == ["abs-link", "f", "fifo", "sub"]
    assert owner_mode(dst / "f") == (1001, 1002, 0o755)  # the chown clears S_ISUID, as moby's
    assert owner_mode(dst / "sub") == (1001, 1002, 0o750)
    assert os.stat(dst / "sub").st_mtime == MTIME
    assert os.stat(dst / "sub/hard").st_ino == os.stat(dst / "f").st_ino
    assert os.readlink(dst / "abs-link") == "/outside/target"
    assert os.lstat(dst / "abs-link").st_uid == 1001
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    copy_into(str(rootfs), str(ctx), ["d"], "/fresh/dir", chown=(7, 8))
    assert owner_mode(rootfs / "fresh") == (0, 0, 0o755)  # a directory copy's parents are root's
    assert owner_mode(rootfs / "fresh/dir") == (7, 8, 0o755)


def test_file_parents_belong_to_the_chown_owner(roots) -> None:
    ctx, rootfs = roots
    put(ctx, "f")
    copy_into(str(rootfs), str(ctx), ["f"], "/p/q/", chown=(1001, 1002), chmod=0o600)
    assert owner_mode(rootfs / "p") == (1001, 1002, 0o755)
    assert owner_mode(rootfs / "p/q/f") == (1001, 1002, 0o600)


def test_chmod_applies_to_files_and_directories(roots) -> None:
    ctx, rootfs = roots
    put(ctx, "d/x", mode=0o600)
    (ctx / "d/e").mkdir()
    copy_into(str(rootfs), str(ctx), ["d"], "/out", chmod=0o751)
    assert owner_mode(rootfs / "out/x")[2] == 0o751
    assert owner_mode(rootfs / "out/e")[2] == 0o751


def test_context_source_rules_dockerignore_exclude_and_symlinks(roots) -> None:
    ctx, rootfs = roots
    put(ctx, ".dockerignore", "**/*.log\n")
    put(ctx, "app/main.py", "main")
    put(ctx, "app/debug.log", "log")
    put(ctx, "app/tests/t.py", "t")
    put(ctx, "real.txt", "real")
    os.symlink("real.txt", ctx / "link")
    context = BuildContext.from_dir(str(ctx))
    copy_into(str(rootfs), context.root, context.sources(["app"]), "/app", ignore=context.ignore,
              exclude=["tests"])
    assert sorted(os.listdir(rootfs / "app")) == ["main.py"]
    copy_into(str(rootfs), context.root, context.sources(["link"]), "/x/", ignore=context.ignore)
    assert (rootfs / "x/link").read_text() == "real"  # followed within the context, named as the link
    assert not os.path.islink(rootfs / "x/link")


def test_destination_stays_inside_the_rootfs(roots, tmp_path) -> None:
    ctx, rootfs = roots
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    put(ctx, "victim", "evil")
    put(ctx, "d/victim", "evil")
    os.symlink("../../../../../../../../outside", rootfs / "escape")   # climbs: clamped at the rootfs
    os.symlink(str(outside), rootfs / "absolute")                      # absolute: rooted at the rootfs
    copy_into(str(rootfs), str(ctx), ["victim"], "/escape/")
    copy_into(str(rootfs), str(ctx), ["victim"], "/absolute/")
    assert (rootfs / "outside/victim").read_text() == "evil"
    assert (rootfs / str(outside).lstrip("/") / "victim").read_text() == "evil"
    # below the destination what is in the way is replaced, never followed
    (rootfs / "dst").mkdir()
    os.symlink(str(outside / "victim"), rootfs / "dst/victim")
    copy_into(str(rootfs), str(ctx), ["d"], "/dst")
    assert not os.path.islink(rootfs / "dst/victim")
    assert (outside / "victim").read_text() == "untouched"
    # a usr-merged /lib is followed as the image has it
    copy_into(str(rootfs), str(ctx), ["victim"], "/lib/")
    assert (rootfs / "usr/lib/victim").exists()


def test_replacing_and_merging(roots) -> None:
    ctx, rootfs = roots
    put(ctx, "d/x/inner", "new")
    put(ctx, "d/y", "file")
    (rootfs / "t/x").mkdir(parents=True)
    (rootfs / "t/x/old").write_text("kept")
    (rootfs / "t/y").mkdir()
    (rootfs / "t/y/gone").write_text("")
    copy_into(str(rootfs), str(ctx), ["d"], "/t")
    assert (rootfs / "t/x/old").read_text() == "kept"  # directories merge
    assert (rootfs / "t/y").read_text() == "file"      # a file replaces a directory
    (rootfs / "blocked").write_text("")
    with pytest.raises(ContextError, match="is not a directory"):
        copy_into(str(rootfs), str(ctx), ["d"], "/blocked/sub")


def test_what_a_chown_drops_is_dropped(roots) -> None:
    # moby's COPY chowns what it copied: set-uid, group-executable set-gid and file
    # capabilities go (test_vs_docker compares this with dockerd); --chmod is kept whole
    ctx, rootfs = roots
    put(ctx, "ping", "bin", mode=0o4755)
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep, VFS_CAP_REVISION_2
    os.setxattr(ctx / "ping", "security.capability", cap)
    os.setxattr(ctx / "ping", "user.other", b"dropped")
    put(ctx, "sgid-x", "x", mode=0o2755)
    put(ctx, "sgid", "x", mode=0o2644)
    copy_into(str(rootfs), str(ctx), ["ping", "sgid-x", "sgid"], "/bin/", chown=(1, 1))
    assert os.listxattr(rootfs / "bin/ping") == []
    assert {n: stat.S_IMODE(os.stat(rootfs / "bin" / n).st_mode) for n in ("ping", "sgid-x", "sgid")} == \
        {"ping": 0o755, "sgid-x": 0o755, "sgid": 0o2644}
    copy_into(str(rootfs), str(ctx), ["sgid"], "/chmod/", chown=(1, 1), chmod=0o4755)
    assert stat.S_IMODE(os.stat(rootfs / "chmod/sgid").st_mode) == 0o4755


def test_parents_keep_source_directories(roots) -> None:
    ctx, rootfs = roots
    put(ctx, "x/a.txt", "a")
    put(ctx, "y/z/b.txt", "b")
    put(ctx, "dir/c", "c")
    copy_into(str(rootfs), str(ctx), ["x/a.txt", "y/z/b.txt", "dir"], "/dst/", parents=True)
    assert (rootfs / "dst/x/a.txt").read_text() == "a"
    assert (rootfs / "dst/y/z/b.txt").read_text() == "b"
    assert (rootfs / "dst/dir/c").read_text() == "c"


def _tar(members: dict[str, bytes], owner: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o640, owner, owner, MTIME
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_add_extracts_local_archives_only(roots) -> None:
    ctx, rootfs = roots
    put(ctx, "bundle.tar.gz", gzip.compress(_tar({"top/file": b"in tar"}, owner=33)))
    put(ctx, "plain.tar", _tar({"p": b"plain"}))
    put(ctx, "notes.gz", gzip.compress(b"just text, not a tar"))
    put(ctx, "small.txt", "tiny")
    copy_into(str(rootfs), str(ctx), ["bundle.tar.gz", "plain.tar", "notes.gz", "small.txt"], "/opt/",
              extract_archives=True, chown=(5, 5), instruction="ADD")
    assert (rootfs / "opt/top/file").read_text() == "in tar"
    assert owner_mode(rootfs / "opt/top/file") == (33, 33, 0o640)  # an archive keeps its owners
    assert (rootfs / "opt/p").read_text() == "plain"
    assert (rootfs / "opt/notes.gz").exists() and (rootfs / "opt/small.txt").exists()
    assert owner_mode(rootfs / "opt/small.txt")[:2] == (5, 5)
    copy_into(str(rootfs), str(ctx), ["plain.tar"], "/copied/")  # COPY never extracts
    assert (rootfs / "copied/plain.tar").exists()
    put(ctx, "evil.tar", _tar({"../../escape": b"x"}))
    with pytest.raises(ContextError, match="ADD failed: cannot extract evil.tar: .*escapes"):
        copy_into(str(rootfs), str(ctx), ["evil.tar"], "/e/", extract_archives=True, instruction="ADD")


def test_missing_source(roots) -> None:
    ctx, rootfs = roots
    with pytest.raises(ContextError, match="^COPY failed: stat nope: file does not exist$"):
        copy_into(str(rootfs), str(ctx), ["nope"], "/x")


def test_resolve_chown(roots) -> None:
    _, rootfs = roots
    assert resolve_chown(str(rootfs), "app:appgrp") == (1001, 1002)
    assert resolve_chown(str(rootfs), "1500") == (1500, 1500)
    assert resolve_chown(str(rootfs), "same") == (1003, 1004)  # the group named like the user
    assert resolve_chown(str(rootfs), "app:7") == (1001, 7)
    with pytest.raises(ContextError, match="can't find uid for user ghost: no such user: ghost"):
        resolve_chown(str(rootfs), "ghost")
    with pytest.raises(ContextError, match="can't find gid for group app: no such group: app"):
        resolve_chown(str(rootfs), "app")
    with pytest.raises(ContextError, match="invalid chown string format: a:b:c"):
        resolve_chown(str(rootfs), "a:b:c")


@dataclass
class _Doc:
    name: str
    content: str


def test_write_heredoc(roots) -> None:
    _, rootfs = roots
    write_heredoc(str(rootfs), "/etc/app/", _Doc("EOF", "hello\n"))
    assert (rootfs / "etc/app/EOF").read_text() == "hello\n"
    assert owner_mode(rootfs / "etc/app/EOF") == (0, 0, 0o644)
    write_heredoc(str(rootfs), "conf", _Doc("EOF", "x\n"), workdir="/srv", chown=(1001, 1002), chmod=0o600)
    assert owner_mode(rootfs / "srv/conf") == (1001, 1002, 0o600)


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"downloaded bytes\n"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("Last-Modified", email.utils.formatdate(MTIME, usegmt=True))
        if self.path == "/dir/":
            self.send_header("Content-Disposition", 'attachment; filename="named.bin"')
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server():
    with serving(_Handler) as url:
        yield url


def test_fetch_url(tmp_path, http_server) -> None:
    good = "sha256:" + hashlib.sha256(_Handler.body).hexdigest()
    path, name, mtime = fetch_url(f"{http_server}/files/tool.tar", str(tmp_path / "dl"), good)
    assert name == "tool.tar" and path == str(tmp_path / "dl/tool.tar")
    assert open(path, "rb").read() == _Handler.body
    assert mtime == MTIME and os.stat(path).st_mtime == MTIME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path, name, _ = fetch_url(f"{http_server}/dir/", str(tmp_path / "dl2"))
    assert name == "named.bin"
    with pytest.raises(ContextError, match="^checksum mismatch for .*: expected sha256:00, got sha256:"):
        fetch_url(f"{http_server}/x", str(tmp_path / "dl3"), "sha256:00")
    assert os.listdir(tmp_path / "dl3") == []
    with pytest.raises(ContextError, match="^failed to fetch URL: .*/missing: status 404"):
        fetch_url(f"{http_server}/missing", str(tmp_path / "dl4"))


def test_fetch_url_unreachable_is_one_line(tmp_path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ContextError, match=f"^failed to fetch URL: http://127.0.0.1:{port}/f: .*refused") as exc:
        fetch_url(f"http://127.0.0.1:{port}/f", str(tmp_path / "dl"))
    assert "\n" not in str(exc.value)
    with pytest.raises(ContextError, match="unsupported checksum"):
        fetch_url("http://127.0.0.1/f", str(tmp_path / "dl"), "md5:abc")
