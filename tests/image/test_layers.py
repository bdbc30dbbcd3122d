"""Layer apply and diff on real tar archives (Python's tarfile, GNU tar, zstd): every entry
kind, both whiteout kinds in both modes, path-escape attempts, corrupt input, round trips."""
import contextlib
import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest
import zstandard

from sampan.image.layers import LayerError, apply, diff, export, verify
from sampan.image.snapshots import is_mounted, mount_overlay, mountpoints, unmount_path
from sampan.oci import mediatypes

T0 = 1_600_000_000


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    """entries: (kind, name, arg, opts) with kind in file/dir/symlink/link/char/block/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            kind, name = e[0], e[1]
            arg = e[2] if len(e) > 2 else None
            opts = e[3] if len(e) > 3 else {}
            ti = tarfile.TarInfo(name)
            ti.mtime = opts.get("mtime", T0)
            ti.uid, ti.gid = opts.get("uid", 0), opts.get("gid", 0)
            ti.uname = ti.gname = ""
            if opts.get("xattrs"):
                ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in opts["xattrs"].items()}
            if "pax" in opts:
                ti.pax_headers.update(opts["pax"])
            data = None
            if kind == "file":
                data = arg if arg is not None else b""
                ti.size = len(data)
                ti.mode = opts.get("mode", 0o644)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = opts.get("mode", 0o755)
            elif kind == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, arg, 0o777
            elif kind == "link":
                ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, arg, opts.get("mode", 0o644)
            elif kind in ("char", "block"):
                ti.type = tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = arg
                ti.mode = opts.get("mode", 0o600)
            elif kind == "fifo":
                ti.type, ti.mode = tarfile.FIFOTYPE, opts.get("mode", 0o644)
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    # mtime fixed: the same data gives the same blob (and digest) in every call
    return gzip.compress(data, 6, mtime=0)


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path):
    yield
    left = [m for m in mountpoints() if m.startswith(str(tmp_path))]
    for m in sorted(left, reverse=True):
        unmount_path(m)
    assert not left, f"mounts left behind: {left}"


@pytest.fixture
def canary(tmp_path):
    """A directory outside every layer root that must never change."""
    d = tmp_path / "canary"
    d.mkdir()
    (d / "secret").write_text("untouched")
    before = snapshot_tree(d)
    yield d
    assert snapshot_tree(d) == before, "something was written outside the layer root"


def snapshot_tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            content = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, content)
    return out


def tree(root, times=True):
    """A comparable description of a directory tree (excluding the root itself)."""
    out = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            m = st.st_mode
            entry = [stat.filemode(m), st.st_uid, st.st_gid]
            if times and not stat.S_ISLNK(m):
                entry.append(st.st_mtime_ns // 1_000_000_000)
            if stat.S_ISREG(m):
                entry.append(open(p, "rb").read())
                if st.st_nlink > 1:
                    entry.append(("link-group", inodes.setdefault((st.st_dev, st.st_ino), rel)))
            elif stat.S_ISLNK(m):
                entry.append(os.readlink(p))
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                entry.append((os.major(st.st_rdev), os.minor(st.st_rdev)))
            xs = {}
            for k in os.listxattr(p, follow_symlinks=False):
                xs[k] = os.getxattr(p, k, follow_symlinks=False)
            if xs:
                entry.append(xs)
            out[rel] = entry
    return out


def is_whiteout(path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


@contextlib.contextmanager
def overlay_over(tmp_path, base):
    """The layer ``base`` (make_tar entries) unpacked into tmp_path/l1 and mounted as the lower
    layer of an overlay at tmp_path/merged (upper: tmp_path/upper); yields (merged, upper, l1)."""
    l1 = tmp_path / "l1"
    apply(io.BytesIO(make_tar(base)), str(l1))
    merged, upper, work = (tmp_path / n for n in ("merged", "upper", "work"))
    for d in (merged, upper, work):
        d.mkdir()
    mount_overlay(str(merged), [str(l1)], str(upper), str(work))
    try:
        yield merged, upper, l1
    finally:
        unmount_path(str(merged))


# ---------------------------------------------------------------------------- entry kinds

def test_every_entry_kind_with_metadata(tmp_path):
    data = make_tar([
        ("dir", "etc", None, {"mode": 0o750, "uid": 5, "gid": 6, "mtime": T0 + 1}),
        ("file", "etc/passwd", b"root:x:0:0\n", {"mode": 0o640, "uid": 1000, "gid": 1001, "mtime": T0 + 2}),
        ("file", "bin/su", b"\x7fELF", {"mode": 0o4755, "mtime": T0 + 3}),
        ("file", "bin/wall", b"w", {"mode": 0o2755, "gid": 5}),
        ("dir", "tmp", None, {"mode": 0o1777}),
        ("symlink", "bin/sh", "busybox"),
        ("symlink", "abs", "/etc/passwd"),
        ("link", "bin/su2", "bin/su"),
        ("char", "dev/null", (1, 3), {"mode": 0o666}),
        ("block", "dev/loop0", (7, 0), {"mode": 0o660, "gid": 6}),
        ("fifo", "run/fifo", None, {"mode": 0o620}),
        ("file", "x/" + "long" * 40 + "/name", b"deep", {}),
        ("file", "caf\u00e9", b"unicode", {}),
        ("file", "big", b"z" * 3_000_000, {"uid": 3_000_000, "gid": 3_000_001}),
    ])
    dest = tmp_path / "out"
    res = apply(io.BytesIO(gz(data)), str(dest), mediatypes.OCI_LAYER_GZIP, mode="flat")
    assert res.diff_id == sha(data) and res.size == len(data)
    assert res.compression == "gzip" and res.digest == sha(gz(data))
    st = os.lstat(dest / "etc")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o750, 5, 6, T0 + 1)
    st = os.lstat(dest / "etc/passwd")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o640, 1000, 1001, T0 + 2)
    assert (dest / "etc/passwd").read_bytes() == b"root:x:0:0\n"
    assert stat.S_IMODE(os.lstat(dest / "bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(dest / "bin/wall").st_mode) == 0o2755
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    assert os.readlink(dest / "bin/sh") == "busybox"
    assert os.readlink(dest / "abs") == "/etc/passwd"
    assert os.lstat(dest / "bin/su2").st_ino == os.lstat(dest / "bin/su").st_ino
    st = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(dest / "dev/loop0")
    assert stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 0)
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(dest / "run/fifo").st_mode) == 0o620
    assert (dest / ("x/" + "long" * 40 + "/name")).read_bytes() == b"deep"
    assert (dest / "caf\u00e9").read_bytes() == b"unicode"
    st = os.lstat(dest / "big")
    assert (st.st_size, st.st_uid, st.st_gid) == (3_000_000, 3_000_000, 3_000_001)
    # directory times are set after their content was written
    assert os.lstat(dest / "etc").st_mtime == T0 + 1
    # implicit parents exist as plain 0755 dirs
    assert stat.S_IMODE(os.lstat(dest / "bin").st_mode) == 0o755


def test_sub_second_times_and_xattrs_from_pax(tmp_path):
    data = make_tar([
        ("file", "f", b"x", {"pax": {"mtime": "1600000000.123456789", "atime": "1600000001.5"},
                             "xattrs": {"user.color": "blue", "trusted.sampan": "t"}}),
        ("dir", "d", None, {"pax": {"mtime": "1600000002.25"}, "xattrs": {"user.k": "v"}}),
        ("symlink", "l", "f", {"pax": {"mtime": "1600000003"}}),
        ("file", "evil", b"", {"xattrs": {"trusted.overlay.opaque": "y", "trusted.overlay.redirect": "/x"}}),
    ])
    dest = tmp_path / "out"
    apply(io.BytesIO(data), str(dest), mode="flat")
    st = os.lstat(dest / "f")
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    assert st.st_atime_ns == 1_600_000_001_500_000_000
    assert os.getxattr(dest / "f", "user.color") == b"blue"
    assert os.getxattr(dest / "f", "trusted.sampan") == b"t"
    assert os.lstat(dest / "d").st_mtime_ns == 1_600_000_002_250_000_000
    assert os.getxattr(dest / "d", "user.k") == b"v"
    assert os.lstat(dest / "l").st_mtime == 1_600_000_003
    # an archive never gets to set overlayfs' own attributes
    assert os.listxattr(dest / "evil") == []


def test_gnu_tar_archive_with_xattrs_caps_hardlinks_and_long_names(tmp_path):
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/ping").write_bytes(b"ping")
    # security.capability: cap_net_raw+ep (v2 header), set after chown by apply
    os.chown(src / "usr/bin/ping", 12, 34)  # before the capability: chown clears it
    os.chmod(src / "usr/bin/ping", 0o4711)
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    os.setxattr(src / "usr/bin/ping", "security.capability", cap)
    os.setxattr(src / "usr/bin/ping", "user.note", b"gnu")
    long_dir = src / ("d" * 120) / ("e" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / "file").write_bytes(b"long")
    os.link(long_dir / "file", src / "usr/hard")
    os.symlink("../" + "x" * 150, src / "usr/longlink")
    # POSIX (PAX) with xattrs, and GNU format (long names as 'L'/'K' records, no xattrs)
    posix, gnu = tmp_path / "posix.tar.gz", tmp_path / "gnu.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=posix", "-czf", str(posix),
                    "-C", str(src), "."], check=True)
    subprocess.run(["tar", "--format=gnu", "-cf", str(gnu), "-C", str(src), "."], check=True)
    dest = tmp_path / "out"
    res = apply(str(posix), str(dest))
    assert res.diff_id == sha(gzip.decompress(posix.read_bytes()))
    ping = dest / "usr/bin/ping"
    st = os.lstat(ping)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (12, 34, 0o4711)
    assert os.getxattr(ping, "security.capability") == cap
    assert os.getxattr(ping, "user.note") == b"gnu"
    assert (dest / ("d" * 120) / ("e" * 120) / "file").read_bytes() == b"long"
    assert os.lstat(dest / "usr/hard").st_nlink == 2
    assert os.readlink(dest / "usr/longlink") == "../" + "x" * 150
    assert tree(dest) == tree(src)
    dest2 = tmp_path / "out-gnu"
    res = apply(str(gnu), str(dest2), mode="flat")
    assert res.diff_id == sha(gnu.read_bytes()) and res.compression == "none"
    for p in (src / "usr/bin/ping", dest / "usr/bin/ping"):
        for k in os.listxattr(p):
            os.removexattr(p, k)
    os.chmod(dest / "usr/bin/ping", 0o4711)
    assert tree(dest2) == tree(src)


@pytest.mark.parametrize("compression", ["none", "gzip", "gzip-multi", "zstd", "zstd-cli", "xz", "bzip2"])
def test_compressions_are_sniffed(tmp_path, compression):
    data = make_tar([("file", "a", b"A" * 100_000), ("file", "b", os.urandom(50_000))])
    if compression == "gzip":
        blob = gz(data)
    elif compression == "gzip-multi":  # pigz/concatenated members
        blob = gz(data[:20_000]) + gz(data[20_000:])
    elif compression == "zstd":
        blob = zstandard.ZstdCompressor().compress(data)
    elif compression == "zstd-cli":
        blob = subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
    elif compression == "xz":
        import lzma
        blob = lzma.compress(data)
    elif compression == "bzip2":
        import bz2
        blob = bz2.compress(data)
    else:
        blob = data
    # the media type says tar+gzip whatever the bytes are: the bytes win
    res = apply(io.BytesIO(blob), str(tmp_path / "o"), mediatypes.OCI_LAYER_GZIP, expected_digest=sha(blob),
                expected_diff_id=sha(data))
    assert res.diff_id == sha(data) and res.digest == sha(blob)
    assert (tmp_path / "o/a").read_bytes() == b"A" * 100_000
    assert verify(io.BytesIO(blob)).diff_id == sha(data)


def test_diff_id_covers_trailing_padding(tmp_path):
    data = make_tar([("file", "a", b"1")]) + bytes(10240)
    res = apply(io.BytesIO(data), str(tmp_path / "o"))
    assert res.diff_id == sha(data) and res.size == len(data)


def test_tee_gets_every_raw_byte(tmp_path):
    blob = gz(make_tar([("file", "a", os.urandom(300_000))]))
    out = io.BytesIO()
    apply(io.BytesIO(blob), str(tmp_path / "o"), tee=out)
    assert out.getvalue() == blob


def test_duplicate_entries_last_one_wins(tmp_path):
    data = make_tar([
        ("file", "a", b"first"), ("file", "a", b"second"),
        ("dir", "d"), ("file", "d/x", b"x"), ("file", "d", b"now a file"),
        ("symlink", "s", "a"), ("dir", "s"),
        ("file", "keep/y", b"y"), ("dir", "keep", None, {"mode": 0o700}),
    ])
    for mode in ("overlay", "flat"):
        dest = tmp_path / mode
        apply(io.BytesIO(data), str(dest), mode=mode)
        assert (dest / "a").read_bytes() == b"second"
        assert (dest / "d").read_bytes() == b"now a file"
        assert stat.S_ISDIR(os.lstat(dest / "s").st_mode)
        assert (dest / "keep/y").read_bytes() == b"y"
        assert stat.S_IMODE(os.lstat(dest / "keep").st_mode) == 0o700


# ---------------------------------------------------------------------------- whiteouts

BASE = [
    ("dir", "etc"), ("file", "etc/a", b"a"), ("file", "etc/b", b"b"),
    ("dir", "var"), ("dir", "var/lib"), ("file", "var/lib/db", b"db"),
    ("dir", "opq"), ("file", "opq/old1", b"1"), ("dir", "opq/sub"), ("file", "opq/sub/old2", b"2"),
    ("file", "gone", b"gone"),
]
TOP = [
    ("file", "etc/.wh.a", b""),            # whiteout of a file
    ("file", ".wh.var", b""),               # whiteout of a whole directory
    ("dir", "opq"), ("file", "opq/.wh..wh..opq", b""), ("file", "opq/new", b"new"),  # opaque + new content
    ("file", ".wh.gone", b""), ("file", "gone", b"back"),  # deleted and re-created in one layer
    ("file", "etc/.wh..wh.plnk", b""),     # aufs metadata: ignored
]


def test_whiteouts_in_overlay_mode(tmp_path):
    dest = tmp_path / "top"
    apply(io.BytesIO(make_tar(TOP)), str(dest), mode="overlay")
    assert is_whiteout(dest / "etc/a")
    assert is_whiteout(dest / "var")
    assert is_opaque(dest / "opq")
    assert (dest / "opq/new").read_bytes() == b"new"
    assert (dest / "gone").read_bytes() == b"back"
    assert not (dest / "etc/.wh..wh.plnk").exists()
    assert sorted(os.listdir(dest)) == ["etc", "gone", "opq", "var"]


def test_whiteouts_in_flat_mode(tmp_path):
    dest = tmp_path / "rootfs"
    apply(io.BytesIO(make_tar(BASE)), str(dest), mode="flat")
    apply(io.BytesIO(make_tar(TOP)), str(dest), mode="flat")
    assert sorted(os.listdir(dest)) == ["etc", "gone", "opq"]
    assert os.listdir(dest / "etc") == ["b"]
    assert os.listdir(dest / "opq") == ["new"]
    assert (dest / "gone").read_bytes() == b"back"


def test_whiteout_then_directory_in_same_layer_hides_lower_content(tmp_path):
    top = [("file", ".wh.var", b""), ("dir", "var"), ("file", "var/fresh", b"f")]
    dest = tmp_path / "ov"
    apply(io.BytesIO(make_tar(top)), str(dest), mode="overlay")
    assert stat.S_ISDIR(os.lstat(dest / "var").st_mode) and is_opaque(dest / "var")
    flat = tmp_path / "flat"
    apply(io.BytesIO(make_tar(BASE)), str(flat), mode="flat")
    apply(io.BytesIO(make_tar(top)), str(flat), mode="flat")
    assert os.listdir(flat / "var") == ["fresh"]


def test_merged_overlay_view_matches_flat_apply(tmp_path):
    """The same two layers give the same tree through overlayfs and through flat apply."""
    base, top = tmp_path / "l1", tmp_path / "l2"
    apply(io.BytesIO(make_tar(BASE)), str(base))
    apply(io.BytesIO(make_tar(TOP)), str(top))
    merged, upper, work = tmp_path / "m", tmp_path / "u", tmp_path / "w"
    for d in (merged, upper, work):
        d.mkdir()
    mount_overlay(str(merged), [str(top), str(base)], str(upper), str(work))
    try:
        view = tree(merged, times=False)
    finally:
        unmount_path(str(merged))
    flat = tmp_path / "flat"
    apply(io.BytesIO(make_tar(BASE)), str(flat), mode="flat")
    apply(io.BytesIO(make_tar(TOP)), str(flat), mode="flat")
    assert view == tree(flat, times=False)
    assert not is_mounted(str(merged))


# ---------------------------------------------------------------------------- safety

ESCAPES = {
    "dotdot": [("file", "../canary/secret", b"pwned")],
    "dotdot-nested": [("dir", "a"), ("file", "a/../../canary/secret", b"pwned")],
    "symlink-parent-abs": [("symlink", "evil", "{canary}"), ("file", "evil/secret", b"pwned")],
    "symlink-parent-rel": [("dir", "a"), ("symlink", "a/up", "../../canary"), ("file", "a/up/secret", b"pwned")],
    "symlink-then-dir-entry": [("symlink", "evil", "{canary}"), ("dir", "evil/sub")],
    "symlink-then-hardlink-into": [("symlink", "evil", "{canary}"), ("link", "evil/x", "a")],
    "hardlink-dotdot": [("link", "stolen", "../canary/secret")],
    "hardlink-abs": [("link", "stolen", "{canary}/secret")],
    "hardlink-through-symlink": [("symlink", "evil", "{canary}"), ("link", "stolen", "evil/secret")],
    "whiteout-through-symlink": [("symlink", "evil", "{canary}"), ("file", "evil/.wh.secret", b"")],
    "opaque-through-symlink": [("symlink", "evil", "{canary}"), ("file", "evil/.wh..wh..opq", b"")],
    "whiteout-dotdot": [("file", "../canary/.wh.secret", b"")],
    "device-under-symlink": [("symlink", "evil", "{canary}"), ("char", "evil/null", (1, 3))],
}


@pytest.mark.parametrize("mode", ["overlay", "flat"])
@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escape_attempts_are_refused(tmp_path, canary, case, mode):
    entries = [tuple(x.format(canary=canary) if isinstance(x, str) else x for x in e) for e in ESCAPES[case]]
    dest = tmp_path / "root" / "layer"
    with pytest.raises(LayerError) as e:
        apply(io.BytesIO(gz(make_tar(entries))), str(dest), mode=mode)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("refusing"), msg
    assert sorted(os.listdir(tmp_path)) == ["canary", "root"]
    assert os.listdir(tmp_path / "root") == ["layer"]


def test_absolute_names_are_contained(tmp_path, canary):
    entries = [("file", f"{canary}/secret", b"inside"), ("file", "/etc/hosts", b"h"), ("dir", "/")]
    dest = tmp_path / "layer"
    apply(io.BytesIO(make_tar(entries)), str(dest), mode="flat")
    assert (dest / str(canary).lstrip("/") / "secret").read_bytes() == b"inside"
    assert (dest / "etc/hosts").read_bytes() == b"h"


def test_entries_replace_symlinks_instead_of_following_them(tmp_path, canary):
    entries = [("symlink", "evil", f"{canary}/secret"), ("file", "evil", b"replaced"),
               ("symlink", "d", str(canary)), ("dir", "d", None, {"mode": 0o700}),
               ("symlink", "n", f"{canary}/secret"), ("fifo", "n"),
               ("symlink", "h", f"{canary}/secret"), ("file", "target", b"t"), ("link", "h", "target")]
    dest = tmp_path / "layer"
    apply(io.BytesIO(make_tar(entries)), str(dest), mode="flat")
    assert (dest / "evil").read_bytes() == b"replaced" and not os.path.islink(dest / "evil")
    assert stat.S_ISDIR(os.lstat(dest / "d").st_mode)
    assert stat.S_ISFIFO(os.lstat(dest / "n").st_mode)
    assert (dest / "h").read_bytes() == b"t"


def test_flat_mode_never_follows_symlinks_left_by_lower_layers(tmp_path, canary):
    dest = tmp_path / "rootfs"
    apply(io.BytesIO(make_tar([("symlink", "lib", str(canary)), ("symlink", "usr", "../../canary"),
                               ("file", "f", b"f")])), str(dest), mode="flat")
    # A later layer writes under those names: it gets real directories (what overlayfs
    # shows for the same layers), never the canary.
    apply(io.BytesIO(make_tar([("file", "lib/secret", b"new"), ("file", "usr/.wh.secret", b""),
                               ("file", "usr/x", b"x")])), str(dest), mode="flat")
    assert (dest / "lib/secret").read_bytes() == b"new" and not os.path.islink(dest / "lib")
    assert (dest / "usr/x").read_bytes() == b"x"
    # a whiteout through a lower symlink deletes nothing outside either
    apply(io.BytesIO(make_tar([("symlink", "w", str(canary))])), str(dest), mode="flat")
    apply(io.BytesIO(make_tar([("file", "w/.wh.secret", b""), ("file", "w/.wh..wh..opq", b"")])),
          str(dest), mode="flat")


def test_hardlink_into_lower_layer_is_refused_in_overlay_mode(tmp_path):
    with pytest.raises(LayerError, match="not (a file )?in the layer"):
        apply(io.BytesIO(make_tar([("link", "x", "bin/from-lower")])), str(tmp_path / "o"))


def test_overlay_mode_needs_an_empty_directory(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o/x").write_text("x")
    with pytest.raises(LayerError, match="empty"):
        apply(io.BytesIO(make_tar([("file", "a", b"")])), str(tmp_path / "o"))


# ---------------------------------------------------------------------------- corrupt input

def test_truncated_gzip_is_a_one_line_error(tmp_path):
    blob = gz(make_tar([("file", "a", os.urandom(200_000))]))
    with pytest.raises(LayerError) as e:
        apply(io.BytesIO(blob[: len(blob) // 2]), str(tmp_path / "o"))
    assert "\n" not in str(e.value) and ("truncated" in str(e.value) or "unexpected end" in str(e.value))


@pytest.mark.parametrize("cut", [100, 700, 5000])
def test_truncated_plain_tar(tmp_path, cut):
    data = make_tar([("file", "a", os.urandom(8000))])
    with pytest.raises(LayerError, match="unexpected end|truncated"):
        apply(io.BytesIO(data[:cut]), str(tmp_path / "o"))


def test_truncated_zstd(tmp_path):
    blob = zstandard.ZstdCompressor().compress(make_tar([("file", "a", os.urandom(200_000))]))
    with pytest.raises(LayerError):
        apply(io.BytesIO(blob[: len(blob) // 2]), str(tmp_path / "o"))


def test_corrupt_gzip_and_garbage(tmp_path):
    blob = bytearray(gz(make_tar([("file", "a", os.urandom(50_000))])))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(LayerError, match="gzip"):
        apply(io.BytesIO(bytes(blob)), str(tmp_path / "o1"))
    with pytest.raises(LayerError, match="checksum|tar"):
        apply(io.BytesIO(b"this is not a tar archive at all" * 40), str(tmp_path / "o2"))
    with pytest.raises(LayerError, match="trailing garbage"):
        apply(io.BytesIO(gz(make_tar([("file", "a", b"")])) + b"junk"), str(tmp_path / "o3"))


def test_wrong_digests_are_refused(tmp_path):
    data = make_tar([("file", "a", b"a")])
    blob = gz(data)
    with pytest.raises(LayerError, match="digest mismatch") as e:
        apply(io.BytesIO(blob), str(tmp_path / "o1"), expected_digest=sha(b"other"))
    assert "\n" not in str(e.value)
    with pytest.raises(LayerError, match="diff_id mismatch"):
        apply(io.BytesIO(blob), str(tmp_path / "o2"), expected_diff_id=sha(b"other"))
    with pytest.raises(LayerError, match="digest mismatch"):
        verify(io.BytesIO(blob), expected_digest=sha(b"other"))


# ---------------------------------------------------------------------------- diff

def test_diff_writes_oci_whiteouts_and_is_deterministic(tmp_path):
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/new").write_bytes(b"new")
    os.mknod(upper / "etc/deleted", stat.S_IFCHR | 0o600, 0)
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    (upper / "opq/only").write_bytes(b"o")
    os.link(upper / "etc/new", upper / "hard")
    os.symlink("etc/new", upper / "sym")
    os.mkfifo(upper / "fifo")
    os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.setxattr(upper / "etc/new", "user.x", b"1")
    out1, out2 = io.BytesIO(), io.BytesIO()
    d1 = diff(str(upper), [], out1)
    d2 = diff(str(upper), [], out2)
    assert d1 == d2 and out1.getvalue() == out2.getvalue()
    assert d1 == sha(out1.getvalue()) and d1.size == len(out1.getvalue())
    with tarfile.open(fileobj=io.BytesIO(out1.getvalue())) as t:
        members = {m.name: m for m in t.getmembers()}
        names = t.getnames()
    assert names == ["etc", "etc/.wh.deleted", "etc/new", "fifo", "hard", "null", "opq", "opq/.wh..wh..opq",
                     "opq/only", "sym"]
    assert members["hard"].islnk() and members["hard"].linkname == "etc/new"
    assert members["null"].ischr() and (members["null"].devmajor, members["null"].devminor) == (1, 3)
    assert members["etc/new"].pax_headers.get("SCHILY.xattr.user.x") == "1"
    assert "SCHILY.xattr.trusted.overlay.opaque" not in members["opq"].pax_headers


def test_diff_compressed_output(tmp_path):
    upper = tmp_path / "u"
    upper.mkdir()
    (upper / "f").write_bytes(os.urandom(10_000))
    out = io.BytesIO()
    r = diff(str(upper), [], out, compression="gzip")
    assert r == sha(gzip.decompress(out.getvalue()))
    assert r.digest == sha(out.getvalue()) and r.media_type == mediatypes.OCI_LAYER_GZIP


def test_diff_of_overlay_upper_round_trips_through_apply(tmp_path):
    base = [("dir", "etc"), ("file", "etc/keep", b"k"), ("file", "etc/remove", b"r"),
            ("dir", "data"), ("file", "data/old", b"old"), ("dir", "tree"), ("file", "tree/leaf", b"l"),
            ("file", "bin/tool", b"v1", {"mode": 0o755})]
    with overlay_over(tmp_path, base) as (merged, upper, l1):
        os.unlink(merged / "etc/remove")
        shutil.rmtree(merged / "tree")
        shutil.rmtree(merged / "data")
        (merged / "data").mkdir()  # overlayfs makes this an opaque dir
        (merged / "data/new").write_bytes(b"new")
        (merged / "bin/tool").write_bytes(b"v2")
        os.chmod(merged / "bin/tool", 0o4755)
        (merged / "etc/added").write_bytes(b"a")
        os.link(merged / "etc/added", merged / "etc/added-link")
        os.symlink("/etc/keep", merged / "etc/sym")
        os.setxattr(merged / "etc/added", "user.tag", b"t")
        expected = tree(merged, times=False)
    assert is_opaque(upper / "data") and is_whiteout(upper / "etc/remove")
    out = io.BytesIO()
    d = diff(str(upper), [str(l1)], out)
    # apply base + diff flat: the same tree as the merged view
    flat = tmp_path / "flat"
    apply(io.BytesIO(make_tar(base)), str(flat), mode="flat")
    res = apply(io.BytesIO(out.getvalue()), str(flat), mode="flat")
    assert res.diff_id == d
    assert tree(flat, times=False) == expected
    # and through overlayfs again: the diff unpacked as a layer over the base
    l2 = tmp_path / "l2"
    apply(io.BytesIO(out.getvalue()), str(l2))
    for n in ("merged", "upper", "work"):
        shutil.rmtree(tmp_path / n)
        (tmp_path / n).mkdir()
    mount_overlay(str(merged), [str(l2), str(l1)], str(upper), str(tmp_path / "work"))
    try:
        assert tree(merged, times=False) == expected
    finally:
        unmount_path(str(merged))


def test_diff_leaves_out_whiteouts_that_hide_nothing(tmp_path):
    upper, lower = tmp_path / "u", tmp_path / "l"
    upper.mkdir()
    lower.mkdir()
    (lower / "present").write_text("p")
    os.mknod(upper / "present", stat.S_IFCHR, 0)
    os.mknod(upper / "absent", stat.S_IFCHR, 0)
    out = io.BytesIO()
    diff(str(upper), [str(lower)], out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        assert t.getnames() == [".wh.present"]




# ---------------------------------------------------------------------------- export

def test_export_writes_the_merged_view_as_it_is(tmp_path):
    """docker export: the merged view of an overlay (whiteouts and opaque dirs already taken
    into account by overlayfs) as a plain tar that GNU tar unpacks into the same tree."""
    base = [("dir", "etc"), ("file", "etc/keep", b"k"), ("file", "etc/remove", b"r"),
            ("dir", "data"), ("file", "data/old", b"old")]
    with overlay_over(tmp_path, base) as (merged, _upper, _l1):
        os.unlink(merged / "etc/remove")
        shutil.rmtree(merged / "data")
        (merged / "data").mkdir()
        (merged / "data/new").write_bytes(b"new")
        os.link(merged / "etc/keep", merged / "etc/keep-link")
        os.mknod(merged / "etc/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.setxattr(merged / "etc/keep", "user.tag", b"t")
        expected = tree(merged)
        out = io.BytesIO()
        r = export(str(merged), out)
    data = out.getvalue()
    assert r == sha(data) and r.media_type == mediatypes.OCI_LAYER
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        names = t.getnames()
    assert names == ["data", "data/new", "etc", "etc/keep", "etc/keep-link", "etc/null"]
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-x", "--xattrs", "--xattrs-include=user.*", "-C", str(unpacked)], input=data,
                   check=True)
    assert tree(unpacked) == expected


def test_export_keeps_a_0_0_character_device(tmp_path):
    """Outside an overlay upper dir a 0/0 character device is a device, not a whiteout."""
    root = tmp_path / "r"
    root.mkdir()
    os.mknod(root / "c00", stat.S_IFCHR | 0o600, 0)
    out = io.BytesIO()
    export(str(root), out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        (m,) = t.getmembers()
    assert m.name == "c00" and m.ischr() and (m.devmajor, m.devminor) == (0, 0)
