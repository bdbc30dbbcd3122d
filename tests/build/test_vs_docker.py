"""sampan's builds against Docker's legacy builder: a suite of Dockerfiles built by a private
dockerd (`DOCKER_BUILDKIT=0 docker build`) and by sampand (the same docker CLI against its
socket), both images saved and compared file by file (type, content, mode, owner, symlink
target, hard links, the mtimes of what was copied) and config by config (tests/build/imagefs.py
says what is compared and which of Docker's own noise is not).

Each case is first built twice by dockerd (the second time with --no-cache) and those two
compared: that proves the comparison ignores only what differs between any two builds, so
whatever differs between sampan's image and Docker's is sampan's. A few facts per case are
checked on Docker's image too, so each Dockerfile is known to exercise what it claims.
"""
from __future__ import annotations

import gzip
import io
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from imagefs import SavedImage, differences, docker_build, read_saved

CONTEXT_MTIME = 1_600_000_000     # every context file's (2020): older than any build
# before every build of this module: an mtime from later is a build's (a step may come from
# an earlier test's build through either engine's cache)
BUILDS_STARTED = time.time()


@dataclass(frozen=True)
class File:
    content: bytes = b""
    mode: int = 0o644
    owner: tuple[int, int] = (0, 0)
    capability: bytes = b""   # a security.capability xattr


# security.capability v2, cap_net_raw+ep (as `setcap cap_net_raw+ep` writes it)
NET_RAW_EP = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Hardlink:
    to: str          # another context path, made first


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755


Spec = File | Symlink | Hardlink | Dir


def _tar(members: list[tuple[str, Spec]], compress: bool) -> bytes:
    """A tar for ADD: members with their modes, owners and mtimes (a hard link's header has its
    target's mode and owner, as tar(1) writes it: extraction applies them to the one inode)."""
    buf = io.BytesIO()
    specs = dict(members)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, spec in members:
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.uname, ti.gname = CONTEXT_MTIME - 3600, "", ""
            data = b""
            if isinstance(spec, Hardlink):
                ti.type, ti.linkname = tarfile.LNKTYPE, spec.to
                ti.mode, (ti.uid, ti.gid) = specs[spec.to].mode, specs[spec.to].owner
            elif isinstance(spec, File):
                ti.mode, (ti.uid, ti.gid), data = spec.mode, spec.owner, spec.content
                ti.size = len(data)
            elif isinstance(spec, Dir):
                ti.type, ti.mode = tarfile.DIRTYPE, spec.mode
            else:
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, spec.target, 0o777
            tf.addfile(ti, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def make_context(root: Path, files: dict[str, Spec]) -> None:
    """The context directory: files, links and modes as given, every mtime CONTEXT_MTIME."""
    for rel, spec in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, Dir):
            path.mkdir(exist_ok=True)
            os.chmod(path, spec.mode)
        elif isinstance(spec, Symlink):
            os.symlink(spec.target, path)
        elif isinstance(spec, Hardlink):
            os.link(root / spec.to, path)
        else:
            path.write_bytes(spec.content)
            os.chown(path, *spec.owner)
            os.chmod(path, spec.mode)
            if spec.capability:
                os.setxattr(path, "security.capability", spec.capability)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (CONTEXT_MTIME, CONTEXT_MTIME), follow_symlinks=False)
    os.utime(root, (CONTEXT_MTIME, CONTEXT_MTIME))


@dataclass
class Case:
    name: str
    dockerfile: str
    files: dict[str, Spec] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    parent: tuple[str, str] | None = None     # (tag, Dockerfile) built first from the same context
    dockerfile_outside: bool = False          # -f a Dockerfile outside the context (the CLI adds it to the tar)
    check: Callable[[SavedImage], None] = lambda image: None   # facts of Docker's image


def _multistage(image: SavedImage) -> None:
    assert image.files["/app/greeting"].sha256, image.files.keys()
    assert "/src/tested" not in image.files and "/app/tested" not in image.files
    assert image.config["config"]["Cmd"] == ["cat", "/app/greeting"]


def _dockerignore(image: SavedImage) -> None:
    names = {p for p in image.files if p.startswith("/ctx/")}
    assert "/ctx/keep/important.log" in names and "/ctx/build/keep.txt" in names, names
    assert not {"/ctx/debug.log", "/ctx/deep/a/b/trace.log", "/ctx/secret.key", "/ctx/root-only.txt",
                "/ctx/build/out.o", "/ctx/Dockerfile", "/ctx/.dockerignore"} & names, names
    assert "/ctx/sub/root-only.txt" in names       # a leading "/" anchors at the context's root only
    assert image.files["/ctx/links/sym"].target == "target.txt"


def _add_tar(image: SavedImage) -> None:
    assert image.files["/opt/pkg/bin/tool"].uid == 1000 and image.files["/opt/pkg/bin/tool"].mode == 0o755
    assert "/plain/top.txt" in image.files and "/copied.tar" in image.files


def _volume(image: SavedImage) -> None:
    assert "/data/after-volume" not in image.files     # a RUN's changes to a declared volume are dropped
    assert "/data/before-volume" in image.files


ONBUILD_PARENT = r"""
FROM busybox:local
ONBUILD COPY trigger.txt /from-trigger
ONBUILD RUN echo triggered > /onbuild-ran
ONBUILD ENV TRIGGERED=yes
LABEL parent=yes
"""

CASES = [
    Case("multistage-target", r"""
ARG BASE=busybox:local
ARG GREETING=hello
FROM ${BASE} AS builder
ARG GREETING
ENV STAGE=builder
WORKDIR /src
COPY app/ ./
RUN echo "$GREETING from $STAGE" > /src/greeting && chmod 0640 /src/greeting
FROM builder AS tester
RUN echo tested > /src/tested
FROM ${BASE} AS final
COPY --from=builder /src /app
COPY --from=0 /src/greeting /greeting-by-index
CMD ["cat", "/app/greeting"]
FROM final AS after-target
RUN exit 1
""", {"app/main.sh": File(b"#!/bin/sh\necho main\n", 0o755), "app/lib/util.sh": File(b"util\n")},
         args=("--target", "final", "--build-arg", "GREETING=hi"), check=_multistage),
    Case("arg-env-scoping", r"""
ARG VERSION=1.0
ARG UNUSED_META=x
FROM busybox:local
ARG VERSION
ARG NOVALUE
ENV A=1 B="two words" C=${VERSION}
ARG USED=default
ENV FROM_ARG=$USED
RUN echo "$VERSION|$NOVALUE|$USED|$A|$B" > /args
ARG VERSION=2.0
ENV D=${VERSION:-none} E=${UNSET:-fallback} F=${A:+set} G=${UNSET:+set}
ENV B=${B}-again
LABEL version=$VERSION "quoted label"="x y" env.b="$B"
RUN echo "$VERSION $D $E $F" > /args2
""", args=("--build-arg", "USED=override", "--build-arg", "NOT_DECLARED=1")),
    Case("user-workdir-chown", r"""
FROM busybox:local
RUN echo grp:x:1500: >> /etc/group && echo usr:x:1502: >> /etc/group && echo usr:x:1501:1500::/home/usr:/bin/sh >> /etc/passwd
WORKDIR /work/sub
WORKDIR rel
USER usr:grp
RUN id > /tmp/id && pwd > /tmp/pwd
USER 1501
WORKDIR /work/sub/rel/deeper
COPY --chown=usr:grp a.txt ./
COPY --chown=1600:1700 a.txt /chowned
COPY --chown=usr b.sh dir/ /multi/
COPY b.sh /usr/local/bin/
USER root
""", {"a.txt": File(b"a\n", 0o664, (1234, 5678)), "b.sh": File(b"echo b\n", 0o700),
      "dir/inner.txt": File(b"inner\n"), "dir/sub/deep.txt": File(b"deep\n", 0o600)}),
    Case("dockerignore-links-modes", r"""
FROM busybox:local
COPY . /ctx/
COPY links /links-dir
COPY links/sym /sym-followed
""", {
        ".dockerignore": File(b"# comment\n**/*.log\n!keep/important.log\nsecret*\n/root-only.txt\nbuild/\n"
                              b"!build/keep.txt\nDockerfile\n.dockerignore\n"),
        "debug.log": File(b"log\n"), "keep/important.log": File(b"kept\n"), "deep/a/b/trace.log": File(b"t\n"),
        "deep/a/b/code.c": File(b"int x;\n"), "secret.key": File(b"k\n", 0o600), "root-only.txt": File(b"r\n"),
        "sub/root-only.txt": File(b"sub r\n"), "build/out.o": File(b"o\n"), "build/keep.txt": File(b"keep\n"),
        "links/target.txt": File(b"target\n"), "links/sym": Symlink("target.txt"),
        "links/abs": Symlink("/etc/passwd"), "links/dangling": Symlink("../nowhere"),
        "links/hard": Hardlink("links/target.txt"), "links/dirlink": Symlink("../keep"),
        "modes/exec.sh": File(b"#!/bin/sh\n", 0o755), "modes/private": File(b"p\n", 0o600),
        "modes/setuid": File(b"s\n", 0o4755), "modes/setgid-exec": File(b"g\n", 0o2755),
        "modes/setgid": File(b"g\n", 0o2644), "modes/cap": File(b"c\n", 0o755, capability=NET_RAW_EP),
        "modes/sticky": Dir(0o1777), "modes/closed": Dir(0o700),
        "modes/empty": Dir(0o755), "modes/owned": File(b"o\n", 0o640, (4321, 8765)),
    }, check=_dockerignore),
    Case("add-local-tars", r"""
FROM busybox:local
ADD files.tar.gz /opt/
ADD plain.tar /plain
COPY plain.tar /copied.tar
ADD --chown=7:7 single.txt /added/
ADD single.txt /added-as-file
""", {
        "files.tar.gz": File(_tar([("pkg", Dir()), ("pkg/bin", Dir(0o750)),
                                   ("pkg/bin/tool", File(b"#!/bin/sh\necho tool\n", 0o755, (1000, 1000))),
                                   ("pkg/share/doc.txt", File(b"doc\n", 0o644, (0, 50))),
                                   ("pkg/bin/tool-link", Symlink("tool")), ("pkg/bin/tool-hard", Hardlink("pkg/bin/tool"))],
                                  compress=True)),
        "plain.tar": File(_tar([("top.txt", File(b"top\n", 0o600, (33, 33))), ("d", Dir(0o700)),
                                ("d/in.txt", File(b"in\n"))], compress=False)),
        "single.txt": File(b"single\n", 0o640),
    }, check=_add_tar),
    Case("onbuild-parent", ONBUILD_PARENT),
    Case("onbuild", r"""
FROM onbuild-parent:1
RUN cat /onbuild-ran /from-trigger
CMD echo child
""", {"trigger.txt": File(b"trigger\n")}, parent=("onbuild-parent:1", ONBUILD_PARENT)),
    Case("metadata-forms", r"""
FROM busybox:local
MAINTAINER someone <someone@example.com>
SHELL ["/bin/sh", "-e", "-c"]
RUN echo shell-form > /shell
RUN ["/bin/sh", "-c", "echo exec-form > /exec"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=4 CMD wget -q -O- http://localhost/ || exit 1
EXPOSE 80 443/tcp 53/udp 8000-8002
LABEL a=1 b="two words" c='single' \
      multi.line="x"
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/bin/sh", "-c"]
CMD echo shell form cmd
"""),
    Case("metadata-forms-2", r"""
FROM busybox:local
ENV PATH=/opt/bin:$PATH
HEALTHCHECK CMD ["true"]
HEALTHCHECK NONE
ENTRYPOINT echo entry
CMD ["exec", "form"]
USER nobody
STOPSIGNAL 9
SHELL ["/bin/sh", "-c"]
""", dockerfile_outside=True),
    Case("volume", r"""
FROM busybox:local
RUN mkdir /data && echo b > /data/before-volume
VOLUME /data
VOLUME ["/logs", "/cache"]
RUN echo a > /data/after-volume && echo l > /logs/l
""", check=_volume),
]


def _build_and_save(env: dict, save: Callable[[str, str], None], context: Path, case: Case, tag: str,
                    out: Path, *extra: str) -> SavedImage:
    if case.parent:
        docker_build(env, str(context), case.parent[0], "-f", str(context / "Dockerfile.parent"), *extra)
    dockerfile = ("-f", str(context.parent / "Dockerfile.outside")) if case.dockerfile_outside else ()
    docker_build(env, str(context), tag, *dockerfile, *case.args, *extra)
    archive = str(out.with_suffix(".tar"))
    save(tag, archive)
    return read_saved(archive)


@pytest.fixture
def context_of(tmp_path) -> Callable[[Case], Path]:
    def make(case: Case) -> Path:
        root = tmp_path / "context"
        root.mkdir()
        dockerfile = tmp_path / "Dockerfile.outside" if case.dockerfile_outside else root / "Dockerfile"
        dockerfile.write_text(case.dockerfile.lstrip())
        if case.parent:
            (root / "Dockerfile.parent").write_text(case.parent[1].lstrip())
        make_context(root, case.files)
        return root
    return make


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_docker_twice_compares_equal(case: Case, dockerd, context_of, tmp_path) -> None:
    """Two Docker builds of a case are equal to the comparison (its noise filter is right) and
    Docker's image has the facts the case is about."""
    context = context_of(case)

    def save(tag: str, archive: str) -> None:
        dockerd.docker("save", "-o", archive, tag)

    first = _build_and_save(dockerd.env, save, context, case, f"first-{case.name}", tmp_path / "first")
    second = _build_and_save(dockerd.env, save, context, case, f"second-{case.name}", tmp_path / "second",
                             "--no-cache")
    case.check(first)
    diffs = differences(first, second, BUILDS_STARTED)
    assert not diffs, "\n".join(diffs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_sampan_builds_what_docker_builds(case: Case, dockerd, sampand, context_of, tmp_path) -> None:
    context = context_of(case)
    want = _build_and_save(dockerd.env, lambda tag, archive: dockerd.docker("save", "-o", archive, tag),
                           context, case, f"vs-{case.name}", tmp_path / "docker")
    got = _build_and_save(sampand.env, lambda tag, archive: sampand.docker("save", "-o", archive, tag, check=True),
                          context, case, f"vs-{case.name}", tmp_path / "sampan")
    diffs = differences(want, got, BUILDS_STARTED)
    assert not diffs, "sampan's image differs from Docker's:\n" + "\n".join(diffs)
