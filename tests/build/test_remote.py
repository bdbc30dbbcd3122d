"""Remote build contexts (POST /build?remote=URL): a context tar or a Dockerfile served over
HTTP, a Git repository cloned at a ref and subdirectory; bad ones refused with one line and
nothing left."""
from __future__ import annotations

import http.server
import io
import os
import subprocess
import tarfile
import threading

import pytest

from sampan.build import remote
from sampan.build.context import ContextError


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 for the files of tmp_path/www; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(www))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_tar_or_a_dockerfile_over_http(served, tmp_path):
    www, url = served
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("Dockerfile", b"FROM busybox\n"), ("a.txt", b"a\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (www / "ctx.tar.gz").write_bytes(buf.getvalue())
    (www / "Dockerfile.txt").write_text("FROM busybox\nRUN true\n")
    ctx = remote.fetch(f"{url}/ctx.tar.gz", str(tmp_path / "w1"))
    assert sorted(os.listdir(ctx.root)) == ["Dockerfile", "a.txt"] and ctx.dockerfile() == b"FROM busybox\n"
    ctx = remote.fetch(f"{url}/Dockerfile.txt", str(tmp_path / "w2"))
    assert os.listdir(ctx.root) == ["Dockerfile"] and ctx.dockerfile() == b"FROM busybox\nRUN true\n"
    with pytest.raises(ContextError, match="^failed to fetch URL: .*/nothere: status 404"):
        remote.fetch(f"{url}/nothere", str(tmp_path / "w3"))
    with pytest.raises(ContextError, match="unsupported remote context"):
        remote.fetch("ftp://example.com/x", str(tmp_path / "w4"))
    assert sorted(os.listdir(tmp_path)) == ["w1", "w2", "www"]


def test_a_git_repository_at_a_ref_and_subdirectory(tmp_path):
    repo = tmp_path / "repo.git"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    (repo / "sub").mkdir()
    (repo / "sub" / "Dockerfile").write_text("FROM busybox\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "c"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "tag", "v1"], check=True, env=env)
    assert remote.is_git("https://example.com/x.git#main:sub") and remote.is_git("github.com/a/b")
    # (a local path is no Git URL to moby: cloned directly)
    ctx = remote.clone(f"file://{repo}#v1:sub", str(tmp_path / "w"))
    assert ctx.root == str(tmp_path / "w" / "sub") and ctx.dockerfile() == b"FROM busybox\n"
    with pytest.raises(ContextError, match="unable to 'git clone'"):
        remote.clone(f"file://{tmp_path}/nothere.git", str(tmp_path / "w2"))
