"""Stages and the ones a target needs."""
from __future__ import annotations

import pytest

from sampan.build.dockerfile import DockerfileError, meta_env, needed, parse, stages
from sampan.build.dockerfile.commands import Copy, Env, Run

MULTI = """\
ARG BASE=alpine
ARG TAG
FROM ${BASE}:${TAG:-3.19} AS deps
RUN apk add build-base
FROM deps AS build
COPY . /src
RUN make
FROM alpine AS docs
RUN echo docs > /d
FROM alpine AS unrelated
RUN true
FROM scratch AS final
COPY --from=build /src/app /app
COPY --from=2 /d /d
FROM final AS with-mount
RUN --mount=type=bind,from=unrelated,target=/u ls /u
"""


def test_stages_and_meta_args() -> None:
    meta, found = stages(parse(MULTI))
    assert [a.pairs for a in meta] == [[("BASE", "alpine")], [("TAG", None)]]
    assert [(s.index, s.name, s.from_.base, s.line) for s in found] == [
        (0, "deps", "${BASE}:${TAG:-3.19}", 3), (1, "build", "deps", 5), (2, "docs", "alpine", 8),
        (3, "unrelated", "alpine", 10), (4, "final", "scratch", 12), (5, "with-mount", "final", 15)]
    assert [type(c) for c in found[1].commands] == [Copy, Run]


@pytest.mark.parametrize("target,expected", [
    (None, [0, 1, 2, 3, 4, 5]),
    ("with-mount", [0, 1, 2, 3, 4, 5]),
    ("final", [0, 1, 2, 4]),
    ("FINAL", [0, 1, 2, 4]),
    ("build", [0, 1]),
    ("docs", [2]),
    ("deps", [0]),
])
def test_needed(target, expected) -> None:
    _meta, found = stages(parse(MULTI))
    assert needed(found, target) == expected


def test_needed_without_target_is_the_last_stage() -> None:
    _meta, found = stages(parse("FROM a AS one\nRUN x\nFROM b AS two\nRUN y\n"))
    assert needed(found, None) == [1]


def test_from_and_copy_from_references_by_arg() -> None:
    text = "ARG SRC=one\nFROM a AS one\nFROM b AS two\nFROM ${SRC}\nCOPY --from=${SRC} / /\n"
    _meta, found = stages(parse(text))
    assert needed(found, None, {"SRC": "one"}) == [0, 2]
    assert needed(found, None, {"SRC": "two"}) == [1, 2]


def test_image_references_and_later_stages_are_not_stages() -> None:
    # --from names an image when no earlier stage has that name; a stage cannot use a later one
    text = "FROM a AS first\nCOPY --from=nginx:latest /x /x\nCOPY --from=second /y /y\nCOPY --from=1 / /\n" \
           "FROM b AS second\n"
    _meta, found = stages(parse(text))
    assert needed(found, "first") == [0]


def test_unknown_target() -> None:
    _meta, found = stages(parse("FROM a AS one\n"))
    with pytest.raises(DockerfileError, match='^target stage "nope" could not be found$'):
        needed(found, "nope")


def test_errors() -> None:
    with pytest.raises(DockerfileError, match="^Dockerfile:2: no build stage in current context$"):
        stages(parse("ARG A\nRUN x\nFROM a\n"))
    with pytest.raises(DockerfileError, match="^Dockerfile:1: no build stage in current context$"):
        stages(parse("ARG A\n"))
    with pytest.raises(DockerfileError, match='^Dockerfile:2: duplicate stage name "x"$'):
        stages(parse("FROM a AS x\nFROM b AS X\n"))


def test_stage_commands_keep_order_and_lines() -> None:
    _meta, found = stages(parse("FROM a\nENV A=1\n\nRUN echo \\\n  hi\nENV B=2\n"))
    assert [(type(c), c.ins.line) for c in found[0].commands] == [(Env, 2), (Run, 4), (Env, 6)]


STEP_FILE = """\
FROM alpine:3.19 AS base
# a comment that is not a step
ENV A=1 \\
    B=2
RUN set -e; \\
    echo "$A" \\
    && echo done
COPY --chown=1:1 a.txt /a.txt
CMD ["sh"]
"""


def test_step_lines_as_the_legacy_builder_prints_them() -> None:
    _meta, found = stages(parse(STEP_FILE))
    instructions = [found[0].from_.ins] + [c.ins for c in found[0].commands]
    steps = [f"Step {n}/{len(instructions)} : {ins.original}" for n, ins in enumerate(instructions, 1)]
    assert steps == [
        "Step 1/5 : FROM alpine:3.19 AS base",
        "Step 2/5 : ENV A=1     B=2",
        'Step 3/5 : RUN set -e;     echo "$A"     && echo done',
        "Step 4/5 : COPY --chown=1:1 a.txt /a.txt",
        'Step 5/5 : CMD ["sh"]',
    ]


def test_meta_env() -> None:
    meta, found = stages(parse("ARG REG=docker.io\nARG IMG=${REG}/alpine\nARG UNSET\nFROM ${IMG}\n"))
    assert meta_env(meta, {}) == {"REG": "docker.io", "IMG": "docker.io/alpine"}
    assert meta_env(meta, {"REG": "quay.io", "UNSET": "u", "UNDECLARED": "x", "HTTP_PROXY": "p"}) == {
        "HTTP_PROXY": "p", "REG": "quay.io", "IMG": "quay.io/alpine", "UNSET": "u"}
    assert found[0].from_.expanded(meta_env(meta, {}), "\\").base == "docker.io/alpine"
