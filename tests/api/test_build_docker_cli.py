"""Builds through sampand's POST /build by the clients people use: the real docker CLI
(`DOCKER_BUILDKIT=0 docker build`), docker-py's `images.build` and `sampan build`.

What the docker CLI shows and what the image holds are compared with the same build on a
private real dockerd (20.10, its legacy builder): the output lines (IDs aside), `docker
history`'s steps, `docker inspect`'s config, a failed RUN's exit code and message, -q and
--iidfile. Both start from the same busybox tree."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess

import pytest

from private_daemons import DOCKER_CLI, DOCKERD, Dockerd, busybox_rootfs, daemon_fixture

DOCKERFILE = """\
FROM busybox:local
ARG GREETING=hello
ENV A=1 B="two words"
LABEL org.example.kind=test
WORKDIR /app
COPY a.txt sub/ ./
RUN echo "$GREETING from RUN" && cat a.txt > out.txt
RUN echo to-stderr >&2
EXPOSE 8080/tcp
VOLUME /data
USER 1000:1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""
STEPS = DOCKERFILE.count("\n")
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels")
ID = re.compile(r"\b[0-9a-f]{12}\b")
SOURCE_HASH = re.compile(r"\b(file|dir|multi):[0-9a-f]{64}")   # the legacy builder's hash of COPY's sources


@pytest.fixture(scope="module")
def dockerd():
    """A private dockerd with its default bridge (in a network namespace of its own) and busybox."""
    if os.geteuid() != 0 or not DOCKERD or not DOCKER_CLI:
        pytest.skip("needs root, dockerd and the docker CLI")
    yield from daemon_fixture(Dockerd(busybox_rootfs(), bridge="10.254.249.1/24"))


@pytest.fixture
def base(sampand) -> str:
    """busybox:local in sampand made as the dockerd fixture makes it (`docker import` of the
    same tree: its history has the base layer's entry, as real images do)."""
    if sampand.docker("image", "inspect", Dockerd.image).returncode != 0:
        tar = subprocess.run(["tar", "-C", str(busybox_rootfs()), "-c", "."], capture_output=True, check=True).stdout
        sampand.docker("import", "-c", 'CMD ["sh"]', "-", Dockerd.image, input=tar, check=True)
    return Dockerd.image


def docker_build(env: dict, *args: str, cwd: str | os.PathLike | None = None, input: bytes | None = None,
                 ) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER_CLI, "build", *args], env=dict(env, DOCKER_BUILDKIT="0", DOCKER_CLI_HINTS="false"),
                          cwd=cwd, input=input, capture_output=True, timeout=300)


def inspect(env: dict, name: str) -> dict:
    out = subprocess.run([DOCKER_CLI, "image", "inspect", name], env=env, capture_output=True, check=True,
                         timeout=60).stdout
    return json.loads(out)[0]


def history(env: dict, name: str, steps: int) -> list[tuple[str, bool, str]]:
    """The last ``steps`` history rows: created-by, whether the step has a layer, comment."""
    out = subprocess.run([DOCKER_CLI, "history", "--no-trunc", "--format", "{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
                          name], env=env, capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()][:steps]
    return [(SOURCE_HASH.sub(r"\1:<hash>", by), size != "0B", comment) for by, size, comment in rows]


def shown(out: bytes) -> list[str]:
    """What the legacy builder printed, IDs made <id>, the CLI's deprecation notice aside."""
    return [ID.sub("<id>", line) for line in out.decode().replace("\r", "").splitlines() if line]


@pytest.fixture
def context(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "a.txt").write_text("from the context\n")
    (ctx / "sub" / "b.txt").write_text("b\n")
    (ctx / "ignored.txt").write_text("never sent\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


# ---------------------------------------------------------------------------- the docker CLI
def test_docker_cli_build_as_on_dockerd(sampand, base, dockerd, context):
    args = ("-t", "built:1", "-t", "built:2", "--build-arg", "GREETING=hey", "--label", "extra=1", ".")
    theirs = docker_build(dockerd.env, *args, cwd=context)
    ours = docker_build(sampand.env, *args, cwd=context)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert shown(ours.stdout) == shown(theirs.stdout)
    assert "hey from RUN" in shown(ours.stdout) and "Successfully tagged built:2" in shown(ours.stdout)
    mine, reference = inspect(sampand.env, "built:1"), inspect(dockerd.env, "built:1")
    assert {k: mine["Config"][k] for k in CONFIG_FIELDS} == {k: reference["Config"][k] for k in CONFIG_FIELDS}
    assert sorted(mine["RepoTags"]) == ["built:1", "built:2"]
    assert history(sampand.env, "built:1", STEPS + 1) == history(dockerd.env, "built:1", STEPS + 1)
    r = sampand.docker("run", "--rm", "--entrypoint", "cat", "built:1", "/app/out.txt", "/app/b.txt")
    assert r.stdout == b"from the context\nb\n", r.stderr
    r = sampand.docker("run", "--rm", "--entrypoint", "ls", "built:1", "/app")
    assert r.stdout.split() == [b"a.txt", b"b.txt", b"out.txt"], r.stderr   # ignored.txt never sent
    # unchanged: every step from the cache, the same image
    again = docker_build(sampand.env, *args, cwd=context)
    assert again.returncode == 0, again.stderr
    assert shown(again.stdout).count(" ---> Using cache") == STEPS   # all but FROM, with --label's step
    assert inspect(sampand.env, "built:1")["Id"] == mine["Id"]


def test_docker_cli_failures_as_on_dockerd(sampand, base, dockerd):
    failing = b"FROM busybox:local\nRUN echo before\nRUN exit 3\n"
    theirs = docker_build(dockerd.env, "-", input=failing)
    ours = docker_build(sampand.env, "-", input=failing)
    assert ours.returncode == theirs.returncode == 3
    assert ours.stderr.decode().splitlines()[-1] == theirs.stderr.decode().splitlines()[-1] == \
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert shown(ours.stdout) == shown(theirs.stdout)
    ours = docker_build(sampand.env, "-", input=b"FROM busybox\nRUNN exit 3\n")
    assert ours.returncode == 1
    message = ours.stderr.decode().splitlines()[-1]
    assert message.startswith("Error response from daemon: ") and "unknown instruction: RUNN" in message
    assert "2" in message   # the line
    ours = docker_build(sampand.env, "-", input=b"FROM nosuchimage:1\n")   # no registry reachable from here
    assert ours.returncode == 1 and ours.stderr.decode().splitlines()[-1], ours.stderr
    assert sampand.docker("ps", "-aq").stdout == b""   # (dockerd keeps a failed RUN's container)
    # the steps before the failure are kept, as cache (and as a dangling image, as with dockerd)
    again = docker_build(sampand.env, "-", input=failing)
    assert again.returncode == 3 and shown(again.stdout)[3:5] == ["Step 2/3 : RUN echo before", " ---> Using cache"]


def test_docker_cli_quiet_and_iidfile(sampand, base, tmp_path, context):
    iid = tmp_path / "iid"
    r = docker_build(sampand.env, "-q", "--iidfile", str(iid), "-t", "quiet:1", ".", cwd=context)
    assert r.returncode == 0, r.stderr
    image_id = inspect(sampand.env, "quiet:1")["Id"]
    assert r.stdout == iid.read_bytes() == f"{image_id}\n".encode()
    r = docker_build(sampand.env, "--iidfile", str(iid), ".", cwd=context)
    assert r.returncode == 0 and iid.read_text() == image_id


# ---------------------------------------------------------------------------- docker-py
def test_docker_py_build(sampand, base, context):
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=sampand.host, version="auto")
    try:
        image, logs = client.images.build(path=str(context), tag="py:1", buildargs={"GREETING": "py"}, rm=True)
        text = "".join(chunk.get("stream", "") for chunk in logs)
        assert "py from RUN" in text and f"Step {STEPS}/{STEPS} : CMD" in text
        assert "py:1" in image.tags
        assert "A=1" in image.attrs["Config"]["Env"] and image.attrs["Config"]["User"] == "1000:1000"
        # a Dockerfile alone, as a file object
        image, _ = client.images.build(fileobj=io.BytesIO(b"FROM busybox\nLABEL from=fileobj\n"), tag="py:2")
        assert image.labels == {"from": "fileobj"}
        with pytest.raises(docker.errors.BuildError) as failed:
            client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN exit 3\n"))
        assert "returned a non-zero code: 3" in str(failed.value)
    finally:
        client.close()


# ---------------------------------------------------------------------------- sampan build
def test_sampan_build(sampand, base, context, tmp_path):
    s = sampand.sampan
    r = s("build", "-t", "mine:1", "--build-arg", "GREETING=sampan", str(context))
    assert r.returncode == 0, r.stderr
    lines = shown(r.stdout)
    assert lines[0].startswith("Sending build context to Docker daemon")
    assert f"Step {STEPS}/{STEPS} : CMD [\"echo hi\"]" in lines and "sampan from RUN" in lines
    assert lines[-1] == "Successfully tagged mine:1"
    r = s("run", "--rm", "mine:1")
    assert r.stdout == b"hi\n", r.stderr
    iid = tmp_path / "iid"
    r = s("build", "-q", "--iidfile", str(iid), "-f", "-", str(context), input=b"FROM busybox\nCOPY . /ctx\n")
    assert r.returncode == 0 and re.fullmatch(rb"sha256:[0-9a-f]{64}\n", r.stdout), r.stderr
    assert iid.read_bytes() == r.stdout
    r = s("run", "--rm", r.stdout.strip().decode(), "ls", "-A", "/ctx")
    assert r.stdout.split() == [b".dockerignore", b"Dockerfile", b"a.txt", b"sub"], r.stderr
    r = s("build", "-", input=b"FROM busybox\nRUN exit 3\n")
    assert r.returncode == 3 and r.stderr.endswith(b"The command '/bin/sh -c exit 3' returned a non-zero code: 3\n")
    r = s("build", "-", input=b"FROM busybox\nRUNN x\n")
    assert r.returncode == 1 and r.stderr.startswith(b"Error response from daemon: ") and b"RUNN" in r.stderr


def test_builder_prune(sampand, base, context):
    """`sampan builder prune` and `docker builder prune` print the same for the same cache; the
    next build then uses none."""
    outputs = []
    assert sampand.sampan("builder", "prune", "-af").returncode == 0   # what earlier tests left
    # content of this test's own: the COPY layer of an earlier test's tagged image, made of a
    # context written in the same second, would otherwise be this build's too (and not freed)
    (context / "a.txt").write_text(f"{context}\n")
    for prune in (sampand.sampan, sampand.docker):
        assert sampand.sampan("build", "-q", str(context)).returncode == 0
        r = prune("builder", "prune", "-af")
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout.decode())
        again = sampand.sampan("build", str(context))
        assert b"Using cache" not in again.stdout, again.stdout
        assert prune("builder", "prune", "-af").returncode == 0
    mine, docker = outputs
    assert mine.startswith("Deleted build cache objects:\n") and docker.startswith("Deleted build cache objects:\n")
    assert mine.count("\n") == docker.count("\n")
    assert mine.splitlines()[-1] == docker.splitlines()[-1]   # Total reclaimed space: the same size
    r = sampand.sampan("builder", "prune", "-f")
    assert r.returncode == 0 and r.stdout == b"Total reclaimed space: 0B\n"
