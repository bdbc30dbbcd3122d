"""`sampan build` as a client, checked against the docker CLI (28, DOCKER_BUILDKIT=0) doing the
same thing: both send their request to a recorder on a unix socket (it answers /_ping and
/version, records POST /build and replies with a given stream), and what they sent — the query,
the context tar member by member, the body of a tar from stdin — must be the same; so must
what each shows of a given stream, its exit code and --iidfile. Then both CLIs build the same
context with a .dockerignore against a private real dockerd, and the files the image got must
be the same. The live view on a terminal is run under a pseudo-terminal."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import tarfile
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from private_daemons import DOCKER_CLI, DOCKERD, SAMPAN, Dockerd, busybox_rootfs, daemon_fixture

JSON_PARAMETERS = {"buildargs", "labels", "cachefrom"}
RANDOM_NAME = re.compile(r"\.dockerfile\.[0-9a-f]{20}")
IMAGE_ID = "sha256:" + "ab" * 32
OK_STREAM = [{"stream": "Step 1/2 : FROM busybox\n"}, {"stream": " ---> 0123456789ab\n"},
             {"stream": "Step 2/2 : RUN echo hi\n"}, {"stream": " ---> Running in 0123456789ab\n"},
             {"stream": "hi\n"}, {"stream": "Removing intermediate container 0123456789ab\n"},
             {"stream": " ---> abababababab\n"}, {"aux": {"ID": IMAGE_ID}},
             {"stream": "Successfully built abababababab\n"}, {"stream": "Successfully tagged t:latest\n"}]
FAIL_STREAM = [{"stream": "Step 1/2 : FROM busybox\n"}, {"stream": "Step 2/2 : RUN exit 3\n"},
               {"stream": " ---> Running in 0123456789ab\n"},
               {"errorDetail": {"code": 3, "message": "The command '/bin/sh -c exit 3' returned a non-zero code: 3"},
                "error": "The command '/bin/sh -c exit 3' returned a non-zero code: 3"}]


class Recorder:
    """An HTTP server on a unix socket that records each POST /build (query and body) and
    answers it with ``self.reply`` as a JSON-lines stream."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.requests: list[tuple[dict, bytes]] = []
        self.reply: list[dict] = OK_STREAM
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._answer(conn.makefile("rb"), conn)

    def _answer(self, f, conn: socket.socket) -> None:
        request = f.readline().decode()
        if not request:
            return
        method, target, _ = request.split(" ", 2)
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        body = b""
        if headers.get("transfer-encoding") == "chunked":
            while (size := int(f.readline().split(b";")[0], 16)):
                body += f.read(size)
                f.readline()
            f.readline()
        elif headers.get("content-length"):
            body = f.read(int(headers["content-length"]))
        url = urlsplit(target)
        if url.path.endswith("/build"):
            query = parse_qs(url.query)
            for name in JSON_PARAMETERS & set(query):   # compared decoded (Go sorts keys, packs tight)
                query[name] = [json.loads(v) for v in query[name]]
            self.requests.append((query, body))
            data = b"".join(json.dumps(m).encode() + b"\r\n" for m in self.reply)
        elif url.path.endswith("/version"):
            data = json.dumps({"ApiVersion": "1.45", "MinAPIVersion": "1.24", "Version": "26.1.0",
                               "Os": "linux", "Arch": "amd64"}).encode()
        else:
            data = b"OK"
        head = (f"HTTP/1.1 200 OK\r\nApi-Version: 1.45\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        conn.sendall(head + (b"" if method == "HEAD" else data))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def recorder(tmp_path):
    r = Recorder(str(tmp_path / "rec.sock"))
    yield r
    r.close()


def cli(which: str, recorder: Recorder, *args: str, cwd: str | os.PathLike, stdin: bytes | None = b"",
        ) -> subprocess.CompletedProcess:
    """`docker build ARGS` or `sampan build ARGS` against the recorder (text output)."""
    host = f"unix://{recorder.path}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "SAMPAN_"))}
    env.update(DOCKER_HOST=host, DOCKER_BUILDKIT="0", DOCKER_CONFIG=str(Path(recorder.path).parent / "cfg"),
               DOCKER_CLI_HINTS="false", SAMPAN_HOST=host)
    argv = [DOCKER_CLI, "build", *args] if which == "docker" else [*SAMPAN, "build", *args]
    return subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, timeout=60)


def both(recorder: Recorder, *args: str, cwd, stdin: bytes = b""):
    """(docker's result, its request), (sampan's result, its request)."""
    out = []
    for which in ("docker", "sampan"):
        before = len(recorder.requests)
        r = cli(which, recorder, *args, cwd=cwd, stdin=stdin)
        out.append((r, recorder.requests[before] if len(recorder.requests) > before else None))
    return out


def members(body: bytes) -> list[tuple]:
    """The tar's members as the daemon sees them (a random Dockerfile name made X). The docker
    CLI's tar with a Dockerfile added ends short of its last block's padding (Go's reader
    takes it): padded here for Python's."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(body + bytes(1024))) as t:
        for m in t:
            data = t.extractfile(m).read() if m.isreg() else b""
            made = RANDOM_NAME.search(m.name) or RANDOM_NAME.search(data.decode(errors="replace"))  # at send time
            if m.name.endswith(".dockerignore") or made:
                content = RANDOM_NAME.sub(".dockerfile.X", data.decode())
            else:
                content = hashlib.sha256(data).hexdigest()[:16]
            out.append((RANDOM_NAME.sub(".dockerfile.X", m.name), m.type, oct(m.mode), m.linkname, m.uid, m.gid,
                        m.uname, m.gname, int(m.mtime) if m.isreg() and not made else 0, content))
    return out


def make_context(root: Path) -> Path:
    """A context that exercises .dockerignore (exceptions, `**`, anchored and cleaned
    patterns, an excluded Dockerfile, an excluded directory with a kept file in it) and the
    tar (modes, links in and out of the context, hard links, a fifo, long and non-ASCII names)."""
    ctx = root / "ctx"
    for d in ("build/keep", "build/other", "src/deep", "docs/private", "sub", "empty", "d" * 60):
        (ctx / d).mkdir(parents=True)
    files = {"Dockerfile": "FROM busybox\nCOPY . /ctx\n", "a.txt": "a", "b.log": "b", "keep.log": "k",
             "build/x": "x", "build/keep/y": "y", "build/other/z": "z", "src/m.tmp": "m", "src/deep/n.tmp": "n",
             "src/code.py": "print()", "docs/private/p": "p", "docs/public": "pub", "secret": "s", "sub/secret": "s2",
             "ünï cödé.txt": "u", "d" * 60 + "/" + "f" * 120: "long"}
    for name, text in files.items():
        (ctx / name).write_text(text)
    (ctx / ".dockerignore").write_text("# comment\n*.log\n!keep.log\nbuild\n!build/keep\n**/*.tmp\n"
                                       "./docs/private\n/secret\nDockerfile\n")
    os.chmod(ctx / "src/code.py", 0o4755)
    os.chmod(ctx / "empty", 0o1777)
    os.chmod(ctx / "docs/public", 0o600)
    os.symlink("a.txt", ctx / "link")
    os.symlink("/etc/passwd", ctx / "outlink")
    os.link(ctx / "a.txt", ctx / "hard")
    os.link(ctx / "b.log", ctx / "hard-to-excluded")
    os.mkfifo(ctx / "fifo")
    return ctx


@pytest.fixture
def context(tmp_path) -> Path:
    return make_context(tmp_path)


# ---------------------------------------------------------------------------- requests
def test_query_is_the_docker_clis(recorder, context, monkeypatch):
    args = ("-t", "a:1", "-t", "b", "--build-arg", "X=1", "--build-arg", "FROM_ENV", "--build-arg", "UNSET",
            "--label", "L=v", "--label", "EMPTY", "--add-host", "h:1.2.3.4", "--add-host", "g=5.6.7.8",
            "--network", "host", "--target", "t", "--no-cache", "--pull", "--cache-from", "c1",
            "--cache-from", "c2", "--platform", "linux/amd64", "-q", ".")
    monkeypatch.setenv("FROM_ENV", "from the environment")
    (docker, (dq, _)), (sampan, (sq, _)) = both(recorder, *args, cwd=context)
    assert docker.returncode == 0 and sampan.returncode == 0, (docker.stderr, sampan.stderr)
    assert sq == dq
    assert sq["buildargs"][0] == {"X": "1", "FROM_ENV": "from the environment", "UNSET": None}
    (docker, (dq, _)), (sampan, (sq, _)) = both(recorder, ".", cwd=context)
    assert sq == dq == {"dockerfile": ["Dockerfile"], "version": ["1"]}


def test_context_tar_is_the_docker_clis(recorder, context):
    (docker, (_, dbody)), (sampan, (_, sbody)) = both(recorder, ".", cwd=context)
    assert docker.returncode == 0 and sampan.returncode == 0, (docker.stderr, sampan.stderr)
    sent = members(sbody)
    assert sent == members(dbody)
    names = [m[0] for m in sent]
    assert "Dockerfile" in names and ".dockerignore" in names   # excluded, yet sent: the daemon reads them
    assert "build/keep/y" in names and "build" not in names and "build/x" not in names
    assert not {"b.log", "secret", "src/m.tmp", "src/deep/n.tmp", "docs/private/p"} & set(names)
    assert {"keep.log", "sub/secret", "ünï cödé.txt", "fifo", "outlink"} <= set(names)
    # a Dockerfile given with -f inside the context is sent by its path
    (context / "sub" / "Other").write_text("FROM busybox\n")
    (docker, (dq, dbody)), (sampan, (sq, sbody)) = both(recorder, "-f", "ctx/sub/Other", "ctx", cwd=context.parent)
    assert sq == dq and sq["dockerfile"] == ["sub/Other"]
    assert members(sbody) == members(dbody)


@pytest.mark.parametrize("where", ["stdin", "outside"])
def test_dockerfile_from_stdin_or_outside_the_context(recorder, context, tmp_path, where):
    """It travels under a random name, which the .dockerignore sent with it hides."""
    dockerfile = b"FROM busybox\nRUN true\n"
    outside = tmp_path / "elsewhere.Dockerfile"
    outside.write_bytes(dockerfile)
    args = ("-f", "-", ".") if where == "stdin" else ("-f", str(outside), ".")
    (docker, (dq, dbody)), (sampan, (sq, sbody)) = both(recorder, *args, cwd=context, stdin=dockerfile)
    assert docker.returncode == 0 and sampan.returncode == 0, (docker.stderr, sampan.stderr)
    assert RANDOM_NAME.fullmatch(sq["dockerfile"][0]) and RANDOM_NAME.fullmatch(dq["dockerfile"][0])
    sent = members(sbody)
    assert sent == members(dbody)
    assert dict((m[0], m[-1]) for m in sent)[".dockerfile.X"] == dockerfile.decode()
    # without a .dockerignore of its own, one is made
    os.unlink(context / ".dockerignore")
    (docker, (_, dbody)), (sampan, (_, sbody)) = both(recorder, *args, cwd=context, stdin=dockerfile)
    assert sorted(members(sbody)) == sorted(members(dbody))   # the two added last: in Go's map order
    assert dict((m[0], m[-1]) for m in members(sbody))[".dockerignore"] == ".dockerignore\n.dockerfile.X\n"


def test_context_from_stdin(recorder, context, tmp_path):
    dockerfile = b"FROM busybox\nRUN echo from stdin\n"
    (docker, (dq, dbody)), (sampan, (sq, sbody)) = both(recorder, "-", cwd=tmp_path, stdin=dockerfile)
    assert docker.returncode == 0 and sampan.returncode == 0, (docker.stderr, sampan.stderr)
    assert sq == dq
    assert [m[0] for m in members(sbody)] == ["Dockerfile"]
    assert members(sbody)[0][-1] == members(dbody)[0][-1]
    # a tar (here gzipped) is the context itself, sent as it is
    archive = subprocess.run(["tar", "-C", str(context), "-cz", "."], capture_output=True, check=True).stdout
    (docker, (dq, dbody)), (sampan, (sq, sbody)) = both(recorder, "-f", "sub/D", "-", cwd=tmp_path, stdin=archive)
    assert sq == dq == {"dockerfile": ["sub/D"], "version": ["1"]}
    assert sbody == dbody == archive


def test_remote_context_is_the_daemons_to_fetch(recorder, tmp_path):
    r = cli("sampan", recorder, "-f", "sub/Dockerfile", "https://example.com/ctx.tar", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    query, body = recorder.requests[-1]
    assert query == {"remote": ["https://example.com/ctx.tar"], "dockerfile": ["sub/Dockerfile"], "version": ["1"]}
    assert body == b""


# ---------------------------------------------------------------------------- what is shown
def test_output_exit_code_and_iidfile_are_the_docker_clis(recorder, context, tmp_path):
    for quiet in ((), ("-q",)):
        recorder.reply = OK_STREAM if not quiet else [{"stream": IMAGE_ID + "\n"}]
        results = []
        for which in ("docker", "sampan"):
            iid = tmp_path / f"{which}.iid"
            r = cli(which, recorder, *quiet, "--iidfile", str(iid), ".", cwd=context)
            assert r.returncode == 0, r.stderr
            results.append((r.stdout.decode().replace("\r", "").splitlines()[1:] if not quiet else r.stdout,
                            iid.read_bytes()))
        assert results[1] == results[0]
    recorder.reply = FAIL_STREAM
    for quiet in ((), ("-q",)):
        docker = cli("docker", recorder, *quiet, "--iidfile", str(tmp_path / "docker.iid"), ".", cwd=context)
        sampan = cli("sampan", recorder, *quiet, "--iidfile", str(tmp_path / "sampan.iid"), ".", cwd=context)
        assert sampan.returncode == docker.returncode == 3
        error = "The command '/bin/sh -c exit 3' returned a non-zero code: 3\n"
        assert sampan.stderr.decode().endswith(error) and docker.stderr.decode().endswith(error)
        assert not (tmp_path / "sampan.iid").exists() and not (tmp_path / "docker.iid").exists()
        shown = (sampan.stdout + sampan.stderr).decode()
        assert "Step 2/2 : RUN exit 3" in shown and " ---> Running in 0123456789ab" in shown   # -q: on stderr then


@pytest.mark.parametrize("args, message, code", [
    (("nonexist",), 'unable to prepare context: path "nonexist" not found', 1),
    (("-f", "nofile", "."), "unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
     "lstat {cwd}/nofile: no such file or directory", 1),
    (("-f", "-", "-"), "invalid argument: can't use stdin for both build context and dockerfile", 1),
    (("--add-host", "bad", "."), 'invalid argument "bad" for "--add-host" flag: bad format for add-host: "bad"', 125),
    (("--build-arg", "=x", "."), 'invalid argument "=x" for "--build-arg" flag: invalid environment variable: =x', 125),
])
def test_refused_before_sending_as_the_docker_cli(recorder, context, args, message, code):
    for which in ("docker", "sampan"):
        r = cli(which, recorder, *args, cwd=context, stdin=b"")
        assert r.returncode == code, (which, r.stderr)
        assert message.format(cwd=context) in r.stderr.decode(), which
    assert recorder.requests == []


def test_live_view_on_a_terminal(recorder, context):
    """On a terminal the steps are lines with their times and the builder's bookkeeping is
    left out; --progress=plain there shows the stream as it is."""
    import pty
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
    env.update(SAMPAN_HOST=f"unix://{recorder.path}", COLUMNS="100", TERM="xterm")

    def on_terminal(*args: str) -> str:
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(context)
            os.execvpe(SAMPAN[0], [*SAMPAN, "build", *args, "."], env)
        out = b""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, out
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode()).replace("\r", "")

    live = on_terminal()
    assert re.search(r"✔ +\d+\.\ds Step 2/2 : RUN echo hi\n", live)
    assert "Successfully tagged t:latest" in live and "Running in" not in live
    plain = on_terminal("--progress", "plain")
    assert " ---> Running in 0123456789ab\nhi\nRemoving intermediate container" in plain


# ---------------------------------------------------------------------------- a real dockerd
@pytest.fixture(scope="module")
def dockerd():
    if os.geteuid() != 0 or not DOCKERD or not DOCKER_CLI:
        pytest.skip("needs root, dockerd and the docker CLI")
    yield from daemon_fixture(Dockerd(busybox_rootfs()))


def test_same_image_files_as_the_docker_cli_on_dockerd(dockerd, tmp_path, monkeypatch, capsys):
    """The context both CLIs send gives dockerd the same COPY: file by file (name, type,
    mode, owner, size, content, link target). dockerd 20.10 speaks API 1.41, so the sampan CLI
    runs here in-process with that version."""
    from sampan.cli import client
    from sampan.cli.main import main
    ctx = make_context(tmp_path)
    os.unlink(ctx / "fifo")   # dockerd's COPY refuses a fifo alike from both, which says nothing here
    (ctx / "Dockerfile").write_text("FROM busybox:local\nCOPY . /ctx\n")
    listing = ("find /ctx -exec stat -c '%n %F %a %u:%g %s %N' {} + | sort; "
               "find /ctx -type f -exec md5sum {} + | sort")
    docker_id = dockerd.docker("build", "-q", str(ctx)).stdout.strip()
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")
    monkeypatch.setattr(client, "API_VERSION", "1.41")
    capsys.readouterr()
    assert main(["-H", dockerd.env["DOCKER_HOST"], "build", "-q", str(ctx)]) == 0
    sampan_id = capsys.readouterr().out.strip()

    def files(image: str) -> str:
        return dockerd.docker("run", "--rm", "--network", "none", image, "sh", "-c", listing).stdout
    assert files(sampan_id) == files(docker_id)
    assert "/ctx/build/keep/y" in files(sampan_id) and "/ctx/b.log" not in files(sampan_id)
