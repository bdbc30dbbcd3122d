"""A Debian base made with debootstrap (`sampan image bootstrap debian`) gets `apt-get
install` in a RUN step of a build through sampand, the docker CLI's legacy builder client
(`DOCKER_BUILDKIT=0 docker build`) against its socket; the package then runs.

The RUN step needs the Debian mirror: the daemon is on the host's network (see
conftest.host_network_daemon) and the build uses --network host, so nothing of the host's
network changes (the suite's autouse leak check, host_watch, names sampan's bridge or
firewall table in the host's namespace if the test made them)."""
from __future__ import annotations

import pytest

from imagefs import docker_build

DOCKERFILE = """FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*
CMD ["hello"]
"""


@pytest.mark.slow
def test_apt_get_install_in_a_debootstrapped_base(host_network_daemon, tmp_path):
    daemon = host_network_daemon
    daemon.sampan("image", "bootstrap", "debian", timeout=600, check=True)
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    out = docker_build(daemon.env, str(tmp_path), "with-hello", "--network", "host", timeout=600).stdout
    assert "Setting up hello" in out and "Successfully tagged with-hello:latest" in out, out
    ran = daemon.docker("run", "--rm", "--network", "none", "with-hello", check=True)
    assert ran.stdout == b"Hello, world!\n"
    assert daemon.client().get("/containers/json", all=1) == []
