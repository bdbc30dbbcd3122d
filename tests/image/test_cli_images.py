"""The image commands of the `sampan` CLI: docker's columns, messages and exit codes, against
a real registry (plain, basic auth, TLS with a test CA)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sampan.humanize import duration
from registry_fixtures import *  # noqa: F401,F403 - registry fixtures, config_dir
from registry_fixtures import MT_DOCKER_MANIFEST, PASSWORD, USER, build_image

from sampan.cli import format as fmt
from sampan.cli.main import main
from sampan.image import bootstrap
from sampan.image.store import ImageStore

REPO = Path(__file__).resolve().parents[2]
SAMPAN = [sys.executable, "-m", "sampan.cli.main"]


@pytest.fixture
def root(tmp_path) -> str:
    """An engine root holding busybox:latest (bootstrapped) also tagged my/bb:1."""
    path = str(tmp_path / "root")
    store = ImageStore(path)
    res = bootstrap.bootstrap(store, "busybox")
    store.tag(res.id, "my/bb:1")
    store.close()
    return path


@pytest.fixture
def cli(capsys):
    """cli(root, *args) -> (exit code, stdout, stderr), run in this process."""
    def run(root: str, *args: str) -> tuple[int, str, str]:
        rc = main(["--root", root, *args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def sh(cmd: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env,
                          timeout=120, **kw)


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


# ---------------------------------------------------------------------------------------------
# listing and inspecting

def test_images_table(cli, root):
    rc, out, err = cli(root, "images")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert columns(lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    assert lines[0].startswith("REPOSITORY   TAG       IMAGE ID       CREATED")   # tabwriter's padding
    rows = sorted(columns(line) for line in lines[1:])
    image_id = ImageStore(root).resolve("busybox").id
    assert [r[:3] for r in rows] == [["busybox", "latest", image_id[7:19]], ["my/bb", "1", image_id[7:19]]]
    assert rows[0][3].endswith(" ago") and re.fullmatch(r"[\d.]+MB", rows[0][4])
    assert cli(root, "image", "ls", "busybox")[1].count("\n") == 2            # header and one row
    assert cli(root, "images", "-q")[1] == f"{image_id[7:19]}\n" * 2
    assert cli(root, "images", "--no-trunc", "-q")[1] == f"{image_id}\n" * 2
    rc, out, _ = cli(root, "images", "--digests")
    assert columns(out.splitlines()[0]) == ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]


def test_images_formats_and_filters(cli, root):
    rc, out, _ = cli(root, "images", "--format", "json")
    docs = [json.loads(line) for line in out.splitlines()]
    assert {d["Repository"] for d in docs} == {"busybox", "my/bb"}
    assert set(docs[0]) >= {"ID", "Repository", "Tag", "Digest", "CreatedSince", "CreatedAt", "Size"}
    assert '"Digest":"\\u003cnone\\u003e"' in out                       # as Go's json escapes it
    assert cli(root, "images", "--format", "{{.Repository}}:{{.Tag}}")[1].split() == ["busybox:latest", "my/bb:1"]
    rc, out, _ = cli(root, "images", "--format", "table {{.Repository}}\\t{{.Tag}}")
    assert out.splitlines() == ["REPOSITORY   TAG", "busybox      latest", "my/bb        1"]
    assert cli(root, "images", "-f", "reference=my/*", "--format", "{{.Repository}}")[1] == "my/bb\n"
    assert cli(root, "images", "-f", "dangling=true", "-q")[1] == ""
    rc, _, err = cli(root, "images", "-f", "color=blue")
    assert rc == 1 and err == "Error response from daemon: invalid filter 'color'\n"


def test_inspect_and_history(cli, root):
    rc, out, _ = cli(root, "image", "inspect", "busybox")
    doc = json.loads(out)
    assert rc == 0 and len(doc) == 1 and doc[0]["RepoTags"] == ["busybox:latest", "my/bb:1"]
    assert out.startswith("[\n    {\n")                                    # docker's 4-space indent
    rc, out, _ = cli(root, "image", "inspect", "-f", "{{.Config.Cmd}} {{json .Config.Env}} {{.Os}}", "busybox")
    assert out == '[sh] ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] linux\n'
    rc, out, err = cli(root, "image", "inspect", "nosuch")
    assert (rc, out, err) == (1, "[]\n", "Error: No such image: nosuch:latest\n")
    rc, out, _ = cli(root, "history", "busybox")
    lines = out.splitlines()
    assert columns(lines[0]) == ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    assert columns(lines[1])[0] == ImageStore(root).resolve("busybox").short_id
    assert "…" in lines[1]                                                 # CREATED BY cut at 45
    assert cli(root, "image", "history", "--no-trunc", "--format", "{{.CreatedBy}}", "busybox")[1].startswith(
        "sampan image bootstrap busybox (busybox-static")


# ---------------------------------------------------------------------------------------------
# tag, rmi, prune

def test_tag_rmi_messages_and_exit_codes(cli, root):
    assert cli(root, "tag", "busybox", "example.com/x/y:2") == (0, "", "")
    rc, out, _ = cli(root, "rmi", "my/bb:1", "example.com/x/y:2")
    assert (rc, out) == (0, "Untagged: my/bb:1\nUntagged: example.com/x/y:2\n")
    image_id = ImageStore(root).resolve("busybox").id
    rc, out, err = cli(root, "rmi", "nosuch", "busybox")
    assert rc == 1
    assert err == "Error response from daemon: No such image: nosuch:latest\n"
    assert out == f"Untagged: busybox:latest\nDeleted: {image_id}\n"
    assert cli(root, "images", "-q") == (0, "", "")
    rc, _, err = cli(root, "tag", "nosuch", "x")
    assert rc == 1 and err == "Error response from daemon: No such image: nosuch:latest\n"


def test_tag_invalid_reference(cli, root):
    rc, _, err = cli(root, "tag", "busybox", "UPPER")
    assert rc == 1 and err.startswith("Error response from daemon: invalid reference format")


def test_prune(cli, root, tmp_path):
    subprocess.run(["tar", "-C", str(REPO / "src"), "-cf", str(tmp_path / "r.tar"), "sampan/image"], check=True)
    rc, out, _ = cli(root, "import", str(tmp_path / "r.tar"))
    dangling = out.strip()
    assert rc == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}", dangling)
    assert cli(root, "images", "-f", "dangling=true", "--no-trunc", "-q")[1] == dangling + "\n"
    r = sh(f"echo n | {' '.join(SAMPAN)} --root {root} image prune")
    assert r.returncode == 0 and "Are you sure you want to continue? [y/N]" in r.stdout
    assert "Deleted Images" not in r.stdout
    rc, out, _ = cli(root, "image", "prune", "-f")
    assert out.startswith(f"Deleted Images:\ndeleted: {dangling}\n\nTotal reclaimed space: ")
    assert cli(root, "image", "prune", "-f")[1] == "Total reclaimed space: 0B\n"


# ---------------------------------------------------------------------------------------------
# save, load, import through pipes and files

def test_save_pipe_load(root, tmp_path):
    other = tmp_path / "other"
    r = sh(f"{' '.join(SAMPAN)} --root {root} save busybox | {' '.join(SAMPAN)} --root {other} load")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Loaded image: busybox:latest\n"
    assert ImageStore(str(other)).resolve("busybox").id == ImageStore(root).resolve("busybox").id


def test_save_file_load_file(cli, root, tmp_path):
    out_file = tmp_path / "both.tar"
    assert cli(root, "save", "-o", str(out_file), "busybox:latest", "my/bb:1") == (0, "", "")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sampan-save-")]
    other = str(tmp_path / "other")
    rc, out, _ = cli(other, "load", "-i", str(out_file), "-q")
    assert rc == 0 and sorted(out.splitlines()) == ["Loaded image: busybox:latest", "Loaded image: my/bb:1"]
    rc, out, _ = cli(other, "image", "save", "--format", "oci-dir", "-o", str(tmp_path / "oci"), "busybox")
    assert rc == 0 and (tmp_path / "oci" / "index.json").exists()


def test_load_errors(cli, root, tmp_path):
    rc, _, err = cli(root, "load", "-i", str(tmp_path / "nope.tar"))
    assert (rc, err) == (1, f"open {tmp_path / 'nope.tar'}: no such file or directory\n")
    (tmp_path / "bad.tar").write_bytes(b"garbage" * 100)
    rc, _, err = cli(root, "load", "-i", str(tmp_path / "bad.tar"))
    assert rc == 1 and err == "Error response from daemon: invalid archive: invalid header\n"
    rc, _, err = cli(root, "save", "nosuch")
    assert rc == 1 and err == "Error response from daemon: No such image: nosuch:latest\n"


def test_import_from_stdin_with_changes(root, tmp_path):
    (tmp_path / "fs" / "bin").mkdir(parents=True)
    (tmp_path / "fs" / "bin" / "x").write_text("x")
    r = sh(f"tar -C {tmp_path / 'fs'} -c . | gzip | {' '.join(SAMPAN)} --root {root} import "
           f"-c 'CMD [\"/bin/x\"]' -c 'ENV K=v' -m 'a message' - mine:1")
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip()
    img = ImageStore(root).resolve("mine:1")
    assert img.id == image_id
    assert img.config["config"] == {"Cmd": ["/bin/x"], "Env": ["K=v"]} and img.config["comment"] == "a message"


# ---------------------------------------------------------------------------------------------
# registries

def test_push_pull(cli, root, tmp_path, plain_registry, config_dir):
    name = f"{plain_registry.host}/cli/busybox:1"
    assert cli(root, "tag", "busybox", name)[0] == 0
    rc, out, err = cli(root, "push", name)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"The push refers to repository [{plain_registry.host}/cli/busybox]"
    assert any(line.endswith(": Pushed") for line in lines)
    m = re.fullmatch(r"1: digest: (sha256:[0-9a-f]{64}) size: (\d+)", lines[-1])
    assert m
    other = str(tmp_path / "other")
    rc, out, err = cli(other, "pull", name)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "1: Pulling from cli/busybox"
    assert lines[1].endswith(": Pull complete")
    assert lines[-3:] == [f"Digest: {m.group(1)}", f"Status: Downloaded newer image for {name}", name]
    rc, out, _ = cli(other, "pull", name)
    assert out.splitlines()[-2] == f"Status: Image is up to date for {name}"
    assert cli(other, "pull", "-q", name)[1] == name + "\n"
    assert ImageStore(other).inspect(name)["RepoDigests"] == [f"{plain_registry.host}/cli/busybox@{m.group(1)}"]
    rc, _, err = cli(other, "pull", f"{plain_registry.host}/cli/nosuch:1")
    assert rc == 1 and err.startswith("Error response from daemon: ") and "unknown" in err
    rc, _, err = cli(root, "push", f"{plain_registry.host}/cli/absent:1")
    assert (rc, err) == (1, f"An image does not exist locally with the tag: {plain_registry.host}/cli/absent\n")


def test_pull_of_a_corrupt_layer_records_nothing(cli, tmp_path, fake_registry, config_dir):
    src = ImageStore(str(tmp_path / "src"))
    img = build_image(src.content, layer_sizes=(50000, 300000, 2000))
    fake_registry.manifests[("bad/img", "1")] = (img.manifest, MT_DOCKER_MANIFEST)
    for digest in img.blobs:
        fake_registry.blobs[digest] = src.content.read(digest)
    broken = img.layers[1][0]
    data = fake_registry.blobs[broken]
    fake_registry.blobs[broken] = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    root = str(tmp_path / "root")
    rc, out, err = cli(root, "pull", f"{fake_registry.host}/bad/img:1")
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"Error response from daemon: layer {broken}: corrupt gzip stream")
    store = ImageStore(root)
    assert store.list() == [] and store.meta.leases() == [] and store.meta.all_refs() == []
    store.gc()
    assert list(store.content.digests()) == [] and store.meta.layers() == []
    assert [n for n in os.listdir(store.snapshots.snapshots_dir)] == []


def test_login_logout(cli, root, basic_registry, config_dir):
    host = basic_registry.host
    r = sh(f"echo wrong | {' '.join(SAMPAN)} login -u {USER} --password-stdin {host}")
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: unauthorized")
    r = sh(f"echo '{PASSWORD}' | {' '.join(SAMPAN)} login -u {USER} --password-stdin {host}")
    assert (r.returncode, r.stdout) == (0, "Login Succeeded\n"), r.stderr
    assert host in json.loads(Path(config_dir, "config.json").read_text())["auths"]
    name = f"{host}/private/busybox:1"
    cli(root, "tag", "busybox", name)
    assert cli(root, "push", "-q", name) == (0, name + "\n", "")
    assert cli(root, "logout", host) == (0, f"Removing login credentials for {host}\n", "")
    assert cli(root, "logout", host) == (0, f"Not logged in to {host}\n", "")
    rc, _, err = cli(root, "push", name)
    assert rc == 1 and "unauthorized" in err
    rc, _, err = cli(root, "login", "-u", USER, host)
    assert (rc, err) == (1, "Error: Cannot perform an interactive login from a non TTY device\n")


def test_registry_ca_and_insecure(cli, root, tls_registry, config_dir, tmp_path, monkeypatch):
    host = tls_registry.host
    name = f"{host}/tls/busybox:1"
    cli(root, "tag", "busybox", name)
    r = sh(f"echo '{PASSWORD}' | {' '.join(SAMPAN)} login -u {USER} --password-stdin {host}")
    assert r.returncode == 1 and "certificate verify failed" in r.stderr
    r = sh(f"echo '{PASSWORD}' | {' '.join(SAMPAN)} login --insecure-registry {host} -u {USER} --password-stdin {host}")
    assert r.returncode == 0, r.stderr
    assert cli(root, "push", "--insecure-registry", host, "-q", name)[0] == 0
    monkeypatch.setenv("SAMPAN_INSECURE_REGISTRY", f"other.example,{host}")
    assert cli(str(tmp_path / "b"), "pull", "-q", name)[0] == 0
    monkeypatch.delenv("SAMPAN_INSECURE_REGISTRY")
    certs = Path(config_dir, "certs.d", host)
    certs.mkdir(parents=True)
    shutil.copyfile(tls_registry.ca, certs / "ca.crt")                  # the CA, as docker's certs.d
    rc, out, err = cli(str(tmp_path / "c"), "pull", name)
    assert rc == 0, err
    assert out.splitlines()[-1] == name


# ---------------------------------------------------------------------------------------------
# output helpers

def test_human_units():
    assert [fmt.human_size(n) for n in (0, 999, 1000, 1982365, 77_900_000, 1_234_000_000)] == \
        ["0B", "999B", "1kB", "1.98MB", "77.9MB", "1.23GB"]
    assert [duration(s) for s in (0.5, 1, 59, 60, 3599, 3600, 86400 * 3, 86400 * 20, 86400 * 90,
                                           86400 * 800)] == \
        ["Less than a second", "1 second", "59 seconds", "About a minute", "59 minutes", "About an hour",
         "3 days", "2 weeks", "3 months", "2 years"]


def test_table_and_templates():
    assert fmt.table([["A", "LONGER HEADER", "C"], ["value", "x", "last"]]) == \
        "A         LONGER HEADER   C\nvalue     x               last\n"
    data = {"Id": "x", "Config": {"Cmd": ["sh", "-c"], "Labels": {"b": "2", "a": "1"}, "Empty": None}}
    assert fmt.render("{{.Id}} {{.Config.Cmd}} {{json .Config.Cmd}} {{join .Config.Cmd \",\"}}", data) == \
        'x [sh -c] ["sh","-c"] sh,-c'
    assert fmt.render("{{.Config.Labels}} {{index .Config.Labels \"b\"}} {{.Config.Empty}} {{.Nope}}", data) == \
        "map[a:1 b:2] 2 <nil> <no value>"
    assert fmt.render("{{.Id | upper}} {{len .Config.Cmd}}", data) == "X 2"
    with pytest.raises(fmt.TemplateError):
        fmt.render("{{frobnicate .Id}}", data)
