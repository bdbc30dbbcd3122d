"""Build stages: the commands grouped by FROM, the meta ARGs before the first one, and which
stages a target needs (through FROM <stage>, COPY --from=<stage|index>, RUN --mount from=)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sampan.build.dockerfile.commands import Arg, Command, Copy, From, Run, command
from sampan.build.dockerfile.parser import Dockerfile
from sampan.build.dockerfile.shell import DockerfileError, expand


# The ARGs every Dockerfile has without declaring them (Docker's "predefined ARGs").
PREDEFINED_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                   "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


@dataclass
class Stage:
    index: int
    name: str | None     # lower case, as BuildKit keeps it
    from_: From
    commands: list[Command]
    line: int


def stages(df: Dockerfile) -> tuple[list[Arg], list[Stage]]:
    """(the ARGs before the first FROM, the stages); every instruction typed and checked."""
    meta: list[Arg] = []
    found: list[Stage] = []
    names: set[str] = set()
    for ins in df.instructions:
        cmd = command(ins)
        if isinstance(cmd, From):
            if cmd.name is not None:
                if cmd.name in names:
                    raise DockerfileError(f'duplicate stage name "{cmd.name}"', ins.line)
                names.add(cmd.name)
            found.append(Stage(len(found), cmd.name, cmd, [], ins.line))
        elif found:
            found[-1].commands.append(cmd)
        elif isinstance(cmd, Arg):
            meta.append(cmd)
        else:
            raise DockerfileError("no build stage in current context", ins.line)
    if not found:
        raise DockerfileError("no build stage in current context", df.instructions[-1].line)
    return meta, found


def meta_env(meta: list[Arg], build_args: Mapping[str, str], escape: str = "\\") -> dict[str, str]:
    """The values FROM lines are expanded with (the legacy builder's processMetaArg): the
    predefined ARGs given as build args, then each meta ARG, a --build-arg overriding its
    default, each default substituted with the values before it."""
    env = {k: build_args[k] for k in PREDEFINED_ARGS if k in build_args}
    for arg in meta:
        for key, value in arg.expanded(env, escape).pairs:
            if key in build_args:
                env[key] = build_args[key]
            elif value is not None:
                env[key] = value
    return env


def _stage_ref(ref: str, by_name: Mapping[str, int], before: int) -> int | None:
    """The index of the stage `ref` names (a name, or a number below the current stage), or
    None for an image reference."""
    ref = ref.lower()
    if ref in by_name and by_name[ref] < before:
        return by_name[ref]
    if ref.isdecimal() and int(ref) < before:
        return int(ref)
    return None


def _expanded(word: str, env: Mapping[str, str]) -> str:
    try:
        return expand(word, env)
    except DockerfileError:
        return word  # the builder reports it where the instruction runs


def references(stage: Stage, by_name: Mapping[str, int], env: Mapping[str, str]) -> list[int]:
    """The earlier stages `stage` uses, in order of first use."""
    refs: list[int] = []

    def add(ref: str | None) -> None:
        if ref:
            index = _stage_ref(_expanded(ref, env), by_name, stage.index)
            if index is not None and index not in refs:
                refs.append(index)

    add(stage.from_.base)
    for cmd in stage.commands:
        if isinstance(cmd, Copy):
            add(cmd.from_)
        elif isinstance(cmd, Run):
            for mount in cmd.mounts:
                add(mount.get("from"))
    return refs


def target_index(all_stages: list[Stage], target: str | None) -> int:
    """The stage `--target` names (the last one without it)."""
    if not target:
        return len(all_stages) - 1
    for stage in all_stages:
        if stage.name == target.lower():
            return stage.index
    raise DockerfileError(f'target stage "{target}" could not be found')


def needed(all_stages: list[Stage], target: str | None, env: Mapping[str, str] | None = None) -> list[int]:
    """The indexes of the stages building `target` needs, itself included, in file order.
    `env` (meta_env's values) substitutes FROM and --from references written with $."""
    env = env or {}
    by_name = {s.name: s.index for s in all_stages if s.name is not None}
    wanted: set[int] = set()
    pending = [target_index(all_stages, target)]
    while pending:
        index = pending.pop()
        if index in wanted:
            continue
        wanted.add(index)
        pending.extend(references(all_stages[index], by_name, env))
    return sorted(wanted)
