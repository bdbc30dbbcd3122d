"""A stage's state while it is built (the run config, build args, maintainer) and what each
metadata instruction does to it, as moby's builder/dockerfile/dispatchers.go and
buildargs.go: the change to the run config and the commit comment that names the step
in the image's history (and in its cache key)."""
from __future__ import annotations

import copy
import posixpath
import re
import signal as _signal
from dataclasses import dataclass

from .dockerfile import DockerfileError
from .dockerfile import commands as c
from .dockerfile.stages import PREDEFINED_ARGS, Stage
from .output import go_list, go_quoted_list, healthcheck_comment

DEFAULT_SHELL = ["/bin/sh", "-c"]
# Build args every Dockerfile may be given without declaring them (moby's builtinAllowedBuildArgs);
# they reach RUN but stay out of the history unless the Dockerfile declares them.
BUILTIN_ARGS = frozenset(PREDEFINED_ARGS)
_PORT = re.compile(r"^(?:(?:[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?:\d*:)?(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$")


class BuildArgs:
    """The --build-arg values and the ARGs a stage declared (moby's BuildArgs); ``meta`` is
    what the meta ARGs came to (stages.meta_env)."""

    def __init__(self, options: dict[str, str | None], meta: dict[str, str]) -> None:
        self.options, self.meta = options, meta
        self.declared: dict[str, str | None] = {}
        self.referenced: set[str] = set()   # (shared by the stages: for the unused-args warning)

    def for_stage(self) -> BuildArgs:
        args = BuildArgs(self.options, self.meta)
        args.referenced = self.referenced
        return args

    def add(self, key: str, default: str | None) -> None:
        self.declared[key] = default
        self.referenced.add(key)

    def _value(self, key: str) -> str | None:
        if self.options.get(key) is not None:
            return self.options[key]
        default = self.declared.get(key)
        if default is not None:
            return default
        return self.meta.get(key)   # (a stage's ARG without a default takes the meta ARG's)

    def allowed(self) -> dict[str, str]:
        out = {}
        for key in [*self.declared, *sorted(BUILTIN_ARGS)]:
            value = self._value(key)
            if value is not None:
                out[key] = value
        return out

    def not_in_env(self, env: list[str]) -> list[str]:
        """The stage's args as K=V, leaving out those the Env sets (FilterAllowed)."""
        keys = {e.split("=", 1)[0] for e in env}
        return [f"{k}={v}" for k, v in self.allowed().items() if k not in keys]

    def shown(self, key: str) -> bool:
        """IsReferencedOrNotBuiltin: whether a RUN's history names the arg."""
        return key in self.declared or key not in BUILTIN_ARGS


def unused_args_warning(options: dict[str, str | None], referenced: set[str]) -> str | None:
    left = sorted(k for k in options if k not in referenced and k not in BUILTIN_ARGS)
    return f"[Warning] One or more build-args {go_list(left)} were not consumed\n" if left else None


@dataclass
class StageState:
    stage: Stage
    image_id: str            # "" for scratch
    config: dict             # the run config (container.Config fields)
    args: BuildArgs
    maintainer: str = ""
    cmd_set: bool = False
    cache_busted: bool = False

    def env_map(self) -> dict[str, str]:
        """What instructions substitute: the build args, overridden by the Env."""
        env = self.config.get("Env") or []
        mapping = dict(entry.partition("=")[::2] for entry in self.args.not_in_env(env))
        mapping.update(entry.partition("=")[::2] for entry in env)
        return mapping

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    def cmdline(self, args: list[str], shell_form: bool) -> list[str]:
        """resolveCmdLine: the shell form prefixed with the SHELL."""
        return [*self.shell(), *args] if shell_form and args else list(args)


def nop_cmd(state: StageState, comment: str) -> list[str]:
    """withCmdComment: the two-word form most instructions commit with."""
    return [*state.shell(), "#(nop) ", comment]


def nop_cmd_string(state: StageState, comment: str) -> list[str]:
    """withCmdCommentString: the one-word form of WORKDIR, COPY and ADD."""
    return [*state.shell(), "#(nop) " + comment]


def set_env(config: dict, key: str, value: str) -> None:
    env = list(config.get("Env") or [])
    entry = f"{key}={value}"
    for i, existing in enumerate(env):
        if existing.split("=", 1)[0] == key:
            env[i] = entry
            break
    else:
        env.append(entry)
    config["Env"] = env


def exposed_ports(words: list[str], line: int) -> list[str]:
    """nat.ParsePortSpecs' ports: 80 -> 80/tcp, 8000-8002/udp -> three."""
    out = []
    for word in words:
        m = _PORT.match(word)
        if m is None:
            raise DockerfileError(f"Invalid containerPort: {word}", line)
        first = int(m.group(1))
        last = int(m.group(2) or first)
        if last < first:
            raise DockerfileError(f"Invalid range specified for the Port: {word}", line)
        out.extend(f"{p}/{m.group(3) or 'tcp'}" for p in range(first, last + 1))
    return out


def check_signal(value: str, line: int) -> None:
    """signal.ParseSignal: a number or a name (with or without SIG)."""
    if value.isdecimal() and 0 < int(value) < 65:
        return
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in _signal.Signals.__members__ and not re.match(r"^SIGRTM(IN|AX)([+-]\d+)?$", name):
        raise DockerfileError(f"Invalid signal: {value}", line)


def workdir(current: str, path: str) -> str:
    """normalizeWorkdir: relative to the current one, cleaned, absolute."""
    return posixpath.normpath(posixpath.join("/", current or "/", path))


def apply_metadata(state: StageState, cmd: c.Command, emit_note: object) -> str:
    """Apply a metadata instruction to the stage's run config; returns its commit comment.
    ``emit_note(text)`` prints the builder's notes (an overridden HEALTHCHECK)."""
    cfg = state.config
    line = cmd.ins.line
    if isinstance(cmd, c.Env):
        for key, value in cmd.pairs:
            set_env(cfg, key, value)
        return "ENV " + " ".join(f"{k}={v}" for k, v in cmd.pairs)
    if isinstance(cmd, c.Label):
        labels = dict(cfg.get("Labels") or {})
        labels.update(dict(cmd.pairs))
        cfg["Labels"] = labels
        return "LABEL " + " ".join(f"{k}={v}" for k, v in cmd.pairs)
    if isinstance(cmd, c.Maintainer):
        state.maintainer = cmd.name
        return "MAINTAINER " + cmd.name
    if isinstance(cmd, c.Arg):
        for key, default in cmd.pairs:
            state.args.add(key, default)
        return "ARG " + " ".join(k if v is None else f"{k}={v}" for k, v in cmd.pairs)
    if isinstance(cmd, c.Cmd):
        cfg["Cmd"] = state.cmdline(cmd.args, cmd.shell_form)
        if cmd.args:
            state.cmd_set = True
        return "CMD " + go_quoted_list(cfg["Cmd"])
    if isinstance(cmd, c.Entrypoint):
        cfg["Entrypoint"] = state.cmdline(cmd.args, cmd.shell_form) or None
        if not state.cmd_set:
            cfg["Cmd"] = None
        return "ENTRYPOINT " + go_quoted_list(cfg["Entrypoint"])
    if isinstance(cmd, c.Expose):
        ports = dict(cfg.get("ExposedPorts") or {})
        for port in exposed_ports(cmd.ports, line):
            ports[port] = {}
        cfg["ExposedPorts"] = ports
        return "EXPOSE " + " ".join(sorted(cmd.ports))
    if isinstance(cmd, c.User):
        cfg["User"] = cmd.user
        return f"USER {cmd.user}"
    if isinstance(cmd, c.Volume):
        volumes = dict(cfg.get("Volumes") or {})
        for path in cmd.paths:
            if not path:
                raise DockerfileError("VOLUME specified can not be an empty string", line)
            volumes[path] = {}
        cfg["Volumes"] = volumes
        return "VOLUME " + go_list(cmd.paths)
    if isinstance(cmd, c.Stopsignal):
        check_signal(cmd.signal, line)
        cfg["StopSignal"] = cmd.signal
        return f"STOPSIGNAL {cmd.signal}"
    if isinstance(cmd, c.Healthcheck):
        old = (cfg.get("Healthcheck") or {}).get("Test") or []
        if old and old[0] != "NONE":
            emit_note(f"Note: overriding previous HEALTHCHECK: {go_list(old)}\n")  # type: ignore[operator]
        health: dict = {"Test": list(cmd.test) if cmd.test is not None else ["NONE"]}
        for name, seconds in (("Interval", cmd.interval), ("Timeout", cmd.timeout),
                              ("StartPeriod", cmd.start_period), ("StartInterval", cmd.start_interval)):
            if seconds:
                health[name] = int(round(seconds * 1e9))
        if cmd.retries:
            health["Retries"] = cmd.retries
        cfg["Healthcheck"] = health
        return healthcheck_comment(health)
    if isinstance(cmd, c.Shell):
        cfg["Shell"] = list(cmd.args)
        return "SHELL " + go_list(cfg["Shell"])
    if isinstance(cmd, c.Onbuild):
        cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), cmd.expression]
        return "ONBUILD " + cmd.expression
    raise DockerfileError(f"{cmd.ins.keyword} is not a metadata instruction", line)


def base_config(image_config: dict | None) -> dict:
    """A stage's run config at FROM: the base image's (a copy), or scratch's empty one."""
    return copy.deepcopy((image_config or {}).get("config") or {})
