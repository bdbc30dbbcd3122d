"""Path resolution inside a root never leaves it, whatever symlinks the tree holds."""
import os

from sampan.runtime.fsutil import atomic_write, remove_tree, secure_join


def test_plain_and_dotdot_paths_stay_inside(tmp_path):
    root = str(tmp_path)
    assert secure_join(root, "/etc/passwd") == f"{root}/etc/passwd"
    assert secure_join(root, "../../../etc") == f"{root}/etc"
    assert secure_join(root, "/a/../../b") == f"{root}/b"


def test_absolute_symlink_is_resolved_against_the_root(tmp_path):
    (tmp_path / "etc").symlink_to("/tmp")
    assert secure_join(str(tmp_path), "/etc/hosts") == f"{tmp_path}/tmp/hosts"


def test_relative_symlink_climbing_out_is_clamped(tmp_path):
    (tmp_path / "usr").mkdir()
    (tmp_path / "usr" / "evil").symlink_to("../../../../../../tmp")
    assert secure_join(str(tmp_path), "/usr/evil/x") == f"{tmp_path}/tmp/x"


def test_symlink_chain_and_loop(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("/c")
    assert secure_join(str(tmp_path), "/a") == f"{tmp_path}/c"
    (tmp_path / "loop").symlink_to("loop")
    try:
        secure_join(str(tmp_path), "/loop/x")
    except OSError as e:
        assert e.errno == 40
    else:
        raise AssertionError("a symlink loop must fail")


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(str(path), b"one")
    atomic_write(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["state.json"]


def test_remove_tree_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "link").symlink_to(outside)
    remove_tree(str(tree))
    assert not tree.exists()
    assert (outside / "keep").exists()


def test_remove_tree_of_a_symlink_removes_the_link_only(tmp_path):
    """The top path a symlink (to a directory, or dangling): the link goes, never what it
    points at (a context clean-up once emptied the host's /etc through such a link)."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "keep").write_text("x")
    for target in (outside, tmp_path / "missing"):
        link = tmp_path / "link"
        link.symlink_to(target)
        remove_tree(str(link))
        assert not os.path.lexists(link)
    assert (outside / "deep" / "keep").read_text() == "x"
    remove_tree(str(tmp_path / "nothing-here"))
    (tmp_path / "file").write_text("y")
    remove_tree(str(tmp_path / "file"))
    assert sorted(os.listdir(tmp_path)) == ["outside"]
