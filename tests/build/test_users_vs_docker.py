"""`--user`, `--group-add` and an image's USER as dockerd resolves them: the process's ids
and supplementary groups (/proc/self/status, which the kernel sorts) in a container of one
image under a private dockerd and under sampand, for the forms users write."""
from __future__ import annotations

import pytest

from imagefs import docker_build

DOCKERFILE = r"""FROM busybox:local
RUN echo grp:x:1500: >> /etc/group && echo usr:x:1502: >> /etc/group \
 && echo usr:x:1501:1500::/home/usr:/bin/sh >> /etc/passwd \
 && echo extra:x:1600:usr,other >> /etc/group && echo more:x:1400:usr >> /etc/group
"""
SHOW_IDS = ["sh", "-c", r"grep -E '^(Uid|Gid|Groups)' /proc/self/status | tr '\t\n' '  '"]
# (run flags): a name with its memberships, name:group, ids alone, unknown ids, root, group-add
FORMS = [(), ("-u", "usr"), ("-u", "usr:grp"), ("-u", "usr:1502"), ("-u", "1501"), ("-u", "4242:4343"),
         ("-u", "nobody", "--group-add", "more"), ("-u", "usr:grp", "--group-add", "1700"),
         ("--group-add", "more")]


@pytest.fixture(scope="module")
def image(dockerd, daemon, tmp_path_factory) -> str:
    context = tmp_path_factory.mktemp("users")
    (context / "Dockerfile").write_text(DOCKERFILE)
    for env in (dockerd.env, daemon.env):
        docker_build(env, str(context), "users:1")
    return "users:1"


@pytest.mark.parametrize("flags", FORMS, ids=lambda f: " ".join(f) or "default")
def test_ids_and_groups_as_dockerd(flags, image, dockerd, sampand) -> None:
    want = dockerd.docker("run", "--rm", *flags, image, *SHOW_IDS).stdout
    got = sampand.docker("run", "--rm", *flags, image, *SHOW_IDS, check=True).stdout.decode()
    assert "Groups:" in want and got == want
