"""The image commands of the `sampan` CLI, a client of a real sampand (the one writer of the
image store): docker's columns, messages and exit codes, streamed archives, and pushes,
pulls and logins against real registries (plain, basic auth)."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from registry_fixtures import *  # noqa: F401,F403 - registry fixtures, config_dir
from registry_fixtures import MT_DOCKER_MANIFEST, PASSWORD, USER, build_image

from sampan.image.store import ImageStore

REPO = Path(__file__).resolve().parents[2]
SAMPAN = [sys.executable, "-m", "sampan.cli.main"]


def _api_conftest():
    spec = importlib.util.spec_from_file_location("_api_conftest", REPO / "tests" / "api" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_API = _api_conftest()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A sampand on its own roots with busybox:latest in its store."""
    d = _API.start_daemon(tmp_path_factory, network="host")  # (it reaches the test registries on the host)
    yield d
    _API.stop_daemon(d)


@pytest.fixture
def cli(daemon):
    """cli(*args, input=...) -> (exit code, stdout, stderr) of the CLI run against the daemon;
    the images a test adds are removed after it (busybox:latest stays)."""
    def run(*args: str, input: bytes | str | None = None) -> tuple[int, str, str]:
        env = dict(os.environ, SAMPAN_ROOT=daemon.root, SAMPAN_EXEC_ROOT=daemon.exec_root)
        r = subprocess.run([*SAMPAN, *args], env=env, capture_output=True, timeout=120,
                           input=input.encode() if isinstance(input, str) else input)
        return r.returncode, r.stdout.decode(), r.stderr.decode()
    yield run
    client = daemon.client()
    for img in client.get("/images/json", all=1):
        refs = [t for t in img["RepoTags"] if t != "busybox:latest"]
        for ref in refs or ([] if "busybox:latest" in img["RepoTags"] else [img["Id"]]):
            client.delete(f"/images/{ref}", force=1)


def busybox_id(daemon) -> str:
    return daemon.client().get("/images/busybox/json")["Id"]


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


# ---------------------------------------------------------------------------------------------
# listing, inspecting, history

def test_images_table_and_quiet(cli, daemon):
    assert cli("tag", "busybox", "my/bb:1") == (0, "", "")
    rc, out, err = cli("images")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert columns(lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    assert lines[0].startswith("REPOSITORY   TAG       IMAGE ID       CREATED")   # tabwriter's padding
    short = busybox_id(daemon)[7:19]
    rows = sorted(columns(line) for line in lines[1:])
    assert [r[:3] for r in rows] == [["busybox", "latest", short], ["my/bb", "1", short]]
    assert re.fullmatch(r"[\d.]+[kM]?B", rows[0][4])      # (the test image has no creation time: N/A)
    assert cli("images", "-q")[1] == f"{short}\n"                       # an image's ID once
    assert cli("images", "--no-trunc", "-q")[1] == f"{busybox_id(daemon)}\n"
    rc, out, _ = cli("images", "--digests")
    assert columns(out.splitlines()[0]) == ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]


def _import_tiny(cli, tmp_path, ref: str) -> str:
    """An image of its own (another ID than busybox's) named ``ref``."""
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "f").write_text(ref)
    tar = subprocess.run(["tar", "-C", str(tmp_path / "tiny"), "-c", "."], capture_output=True, check=True).stdout
    rc, out, err = cli("import", "-", ref, input=tar)
    assert rc == 0, err
    return out.strip()


def test_images_formats_and_filters(cli, tmp_path):
    _import_tiny(cli, tmp_path, "my/bb:1")
    rc, out, _ = cli("images", "--format", "json")
    docs = [json.loads(line) for line in out.splitlines()]
    assert {d["Repository"] for d in docs} == {"busybox", "my/bb"}
    assert set(docs[0]) >= {"ID", "Repository", "Tag", "Digest", "CreatedSince", "CreatedAt", "Size"}
    assert '"Digest":"\\u003cnone\\u003e"' in out                       # as Go's json escapes it
    assert cli("images", "--format", "{{.Repository}}:{{.Tag}}")[1].split() == ["my/bb:1", "busybox:latest"]
    rc, out, _ = cli("images", "--format", "table {{.Repository}}\\t{{.Tag}}")
    assert out.splitlines() == ["REPOSITORY   TAG", "my/bb        1", "busybox      latest"]
    assert cli("images", "-f", "reference=my/*", "--format", "{{.Repository}}")[1] == "my/bb\n"
    assert cli("images", "busybox", "--format", "{{.Repository}}")[1] == "busybox\n"
    assert cli("images", "-f", "dangling=true", "-q")[1] == ""
    assert cli("images", "-f", "nonsense") == (1, "", "bad format of filter (expected name=value)\n")


def test_inspect_and_history(cli, daemon):
    rc, out, _ = cli("image", "inspect", "busybox")
    doc = json.loads(out)
    assert rc == 0 and len(doc) == 1 and doc[0]["RepoTags"] == ["busybox:latest"]
    assert out.startswith("[\n    {\n")                                    # docker's 4-space indent
    rc, out, _ = cli("image", "inspect", "-f", "{{.Os}} {{range .RepoTags}}<{{.}}>{{end}} {{json .RootFS.Type}}",
                     "busybox")
    assert (rc, out) == (0, 'linux <busybox:latest> "layers"\n')
    assert cli("image", "inspect", "nosuch") == (1, "[]\n", "Error response from daemon: No such image: nosuch:latest\n")
    assert cli("inspect", "nosuch") == (1, "[]\n", "Error: No such object: nosuch\n")
    assert cli("inspect", "--type", "image", "-f", "{{.Id}}", "busybox")[1] == busybox_id(daemon) + "\n"
    rc, out, _ = cli("history", "busybox")
    lines = out.splitlines()
    assert columns(lines[0]) == ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    assert columns(lines[1])[0] == busybox_id(daemon)[7:19]
    rc, out, _ = cli("history", "--format", "{{.ID}}|{{.Size}}", "-H=false", "--no-trunc", "busybox")
    assert out.split("|")[0] == busybox_id(daemon) and out.strip().split("|")[1].isdigit()


# ---------------------------------------------------------------------------------------------
# tag, rmi, prune

def test_tag_rmi_messages_and_exit_codes(cli, daemon):
    assert cli("tag", "busybox", "example.com/x/y:2") == (0, "", "")
    assert cli("tag", "busybox", "my/bb") == (0, "", "")
    rc, out, err = cli("rmi", "my/bb", "nosuch", "example.com/x/y:2")
    assert (rc, out) == (1, "Untagged: my/bb:latest\nUntagged: example.com/x/y:2\n")
    assert err == "Error response from daemon: No such image: nosuch:latest\n"
    assert cli("tag", "nosuch", "x") == (1, "", "Error response from daemon: No such image: nosuch:latest\n")
    rc, _, err = cli("tag", "busybox", "UPPER")                  # refused by the CLI itself, as docker's
    assert rc == 1 and err.startswith("invalid reference format") and "daemon" not in err


def test_import_and_prune(cli, tmp_path):
    subprocess.run(["tar", "-C", str(REPO / "src"), "-cf", str(tmp_path / "r.tar"), "sampan/image"], check=True)
    rc, out, err = cli("import", str(tmp_path / "r.tar"))
    dangling = out.strip()
    assert rc == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}", dangling), err
    assert cli("images", "-f", "dangling=true", "--no-trunc", "-q")[1] == dangling + "\n"
    rc, out, _ = cli("image", "prune", input="n\n")
    assert rc == 0 and "Are you sure you want to continue? [y/N]" in out and "Deleted Images" not in out
    rc, out, _ = cli("image", "prune", "-f")
    assert out.startswith(f"Deleted Images:\ndeleted: {dangling}\n\nTotal reclaimed space: ")
    assert cli("image", "prune", "-f")[1] == "Total reclaimed space: 0B\n"


def test_import_from_stdin_with_changes(cli, daemon, tmp_path):
    (tmp_path / "fs" / "bin").mkdir(parents=True)
    (tmp_path / "fs" / "bin" / "x").write_text("x")
    tar = subprocess.run(["tar", "-C", str(tmp_path / "fs"), "-c", "."], capture_output=True, check=True).stdout
    rc, out, err = cli("import", "-c", 'CMD ["/bin/x"]', "-c", "ENV K=v", "-m", "a message", "-", "mine:1", input=tar)
    assert rc == 0, err
    doc = daemon.client().get("/images/mine:1/json")
    assert doc["Id"] == out.strip() and doc["Config"]["Cmd"] == ["/bin/x"] and "K=v" in doc["Config"]["Env"]
    assert doc["Comment"] == "a message"
    rc, _, err = cli("import", "http://example.invalid/x.tar")      # the daemon's refusal
    assert rc == 1 and err.startswith("Error response from daemon: ")


# ---------------------------------------------------------------------------------------------
# save and load through pipes and files

def test_save_pipe_load(cli, daemon):
    env = dict(os.environ, SAMPAN_ROOT=daemon.root, SAMPAN_EXEC_ROOT=daemon.exec_root)
    sampan = " ".join(SAMPAN)
    cli("tag", "busybox", "piped:1")
    r = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sampan} save piped:1 | {sampan} load"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout) == (0, "Loaded image: piped:1\n"), r.stderr


def test_save_file_load_file(cli, daemon, tmp_path):
    cli("tag", "busybox", "my/bb:1")
    out_file = tmp_path / "both.tar"
    assert cli("save", "-o", str(out_file), "busybox:latest", "my/bb:1") == (0, "", "")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sampan-")]   # written beside, renamed
    assert cli("rmi", "my/bb:1")[0] == 0
    rc, out, _ = cli("load", "-i", str(out_file), "-q")
    assert rc == 0 and sorted(out.splitlines()) == ["Loaded image: busybox:latest", "Loaded image: my/bb:1"]
    assert daemon.client().get("/images/my/bb:1/json")["Id"] == busybox_id(daemon)


def test_load_and_save_errors(cli, tmp_path):
    assert cli("load", "-i", str(tmp_path / "nope.tar")) == \
        (1, "", f"open {tmp_path / 'nope.tar'}: no such file or directory\n")
    (tmp_path / "bad.tar").write_bytes(b"garbage" * 100)
    rc, _, err = cli("load", "-i", str(tmp_path / "bad.tar"))       # an error in the stream: as it is
    assert rc == 1 and err.startswith("invalid archive") and err.count("\n") == 1
    assert cli("save", "-o", str(tmp_path / "x.tar"), "nosuch") == \
        (1, "", "Error response from daemon: No such image: nosuch:latest\n")
    assert not os.path.exists(tmp_path / "x.tar") and os.listdir(tmp_path) == ["bad.tar"]


# ---------------------------------------------------------------------------------------------
# failures of each kind

def test_messages_without_a_daemon(tmp_path):
    env = dict(os.environ, SAMPAN_HOST=f"unix://{tmp_path}/none.sock")
    for args in (["images"], ["rmi", "x"], ["pull", "busybox"]):
        r = subprocess.run([*SAMPAN, *args], env=env, capture_output=True, text=True)
        assert (r.returncode, r.stderr) == (1, f"Cannot connect to the sampan daemon at unix://{tmp_path}/none.sock. "
                                               "Is the sampan daemon running?\n")


# ---------------------------------------------------------------------------------------------
# registries

def test_push_pull(cli, daemon, plain_registry, config_dir):
    name = f"{plain_registry.host}/cli/busybox:1"
    assert cli("tag", "busybox", name)[0] == 0
    rc, out, err = cli("push", name)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"The push refers to repository [{plain_registry.host}/cli/busybox]"
    assert any(line.endswith(": Pushed") for line in lines)
    m = re.fullmatch(r"1: digest: (sha256:[0-9a-f]{64}) size: (\d+)", lines[-1])
    assert m, out
    assert cli("rmi", name)[0] == 0
    rc, out, err = cli("pull", name)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "1: Pulling from cli/busybox"
    assert lines[-3:] == [f"Digest: {m.group(1)}", f"Status: Downloaded newer image for {name}", name]
    rc, out, _ = cli("pull", name)
    assert out.splitlines()[-2] == f"Status: Image is up to date for {name}"
    assert cli("pull", "-q", name)[1] == name + "\n"
    rc, _, err = cli("pull", f"{plain_registry.host}/cli/nosuch:1")
    assert rc == 1 and err.startswith("Error response from daemon: ") and err.count("\n") == 1
    rc, _, err = cli("push", f"{plain_registry.host}/cli/absent:1")
    assert rc == 1 and err.startswith("Error response from daemon: An image does not exist locally with the tag: "
                                      f"{plain_registry.host}/cli/absent")


def test_run_pulls_a_missing_image_like_pull(cli, daemon, plain_registry, config_dir):
    name = f"{plain_registry.host}/cli/runme:1"
    cli("tag", "busybox", name)
    assert cli("push", "-q", name)[0] == 0
    assert cli("rmi", name)[0] == 0
    rc, out, err = cli("run", "--rm", name, "echo", "ran")
    assert (rc, out) == (0, "ran\n"), err
    assert err.startswith(f"Unable to find image '{name}' locally\n") and f"Downloaded newer image for {name}" in err


def test_pull_of_a_corrupt_layer_records_nothing(cli, daemon, tmp_path, fake_registry, config_dir):
    src = ImageStore(str(tmp_path / "src"))
    img = build_image(src.content, layer_sizes=(50000, 300000, 2000))
    fake_registry.manifests[("bad/img", "1")] = (img.manifest, MT_DOCKER_MANIFEST)
    for digest in img.blobs:
        fake_registry.blobs[digest] = src.content.read(digest)
    broken = img.layers[1][0]
    data = fake_registry.blobs[broken]
    fake_registry.blobs[broken] = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    before = cli("images", "-a", "-q", "--no-trunc")[1]
    rc, out, err = cli("pull", f"{fake_registry.host}/bad/img:1")
    assert rc == 1 and err.count("\n") == 1 and broken[7:19] in err + out, err
    assert cli("images", "-a", "-q", "--no-trunc")[1] == before


def test_login_logout(cli, daemon, basic_registry, config_dir):
    host = basic_registry.host
    rc, _, err = cli("login", "-u", USER, "--password-stdin", host, input="wrong\n")
    assert rc == 1 and err.startswith("Error response from daemon: ") and "unauthorized" in err.lower()
    assert not os.path.exists(Path(config_dir, "config.json"))
    rc, out, err = cli("login", "-u", USER, "--password-stdin", host, input=PASSWORD + "\n")
    assert (rc, out) == (0, "Login Succeeded\n"), err
    assert host in json.loads(Path(config_dir, "config.json").read_text())["auths"]
    name = f"{host}/private/busybox:1"
    cli("tag", "busybox", name)
    assert cli("push", "-q", name) == (0, name + "\n", "")           # X-Registry-Auth from the stored login
    assert cli("logout", host) == (0, f"Removing login credentials for {host}\n", "")
    assert cli("logout", host) == (0, f"Not logged in to {host}\n", "")
    rc, _, err = cli("push", name)
    assert rc == 1 and "unauthorized" in err.lower()
    assert cli("login", "-u", USER, host) == (1, "", "Error: Cannot perform an interactive login from a non TTY "
                                                    "device\n")


# ---------------------------------------------------------------------------------------------
# bootstrap: the rootfs made by the CLI, imported by the daemon

@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed")
def test_bootstrap_busybox_through_the_daemon(cli, daemon):
    rc, out, err = cli("image", "bootstrap", "busybox", "-t", "boot/bb:1", "-t", "boot/bb:2")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["Bootstrapped image: boot/bb:1", "Bootstrapped image: boot/bb:2"]
    doc = daemon.client().get("/images/boot/bb:2/json")
    assert doc["Id"] == lines[2] and sorted(doc["RepoTags"]) == ["boot/bb:1", "boot/bb:2"]
    assert doc["Config"]["Cmd"] == ["sh"] and doc["Config"]["Env"][0].startswith("PATH=/usr/local/sbin:")
    rc, out, _ = cli("run", "--rm", "boot/bb:1", "sh", "-c", "ls /bin/busybox && echo ok")
    assert (rc, out) == (0, "/bin/busybox\nok\n")
    assert not [n for n in os.listdir("/tmp") if n.startswith("sampan-bootstrap-")]
