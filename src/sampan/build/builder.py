"""The builder: a Dockerfile and its context to an image, as Docker's legacy builder does it.

Only the stages the target needs are built; stages that do not depend on each other run in
parallel threads, their output streamed in stage order (output.OrderedOutput). Each
instruction is one step and one image: metadata instructions commit an empty layer, RUN a
container of the engine (steps.StepRunner) whose changes are the layer, COPY/ADD/WORKDIR a
snapshot of the step's image written directly (no container). A step whose parent and
probe config were seen before is a cache hit (cache.BuildCache): no container, no mount,
one lookup. Whatever a step makes (containers, snapshots) is removed when it ends, also on
failure; the images it committed stay, as the next build's cache.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from .. import errors
from ..image import reference as _ref
from ..image.commit import Layer, new_image, write_layer
from ..image.store import ImageStore
from ..runtime.fsutil import mkdir_all_in, remove_tree, secure_join
from . import copy as _copy
from .cache import BuildCache, step_key
from .context import BuildContext
from .dispatch import (BuildArgs, StageState, apply_metadata, base_config, nop_cmd, nop_cmd_string, set_env,
                       unused_args_warning, workdir)
from .dockerfile import Dockerfile, DockerfileError, Instruction, expand, parse
from .dockerfile import commands as c
from .dockerfile.stages import Stage, meta_env, needed, references, stages
from .ignore import Matcher
from .output import Emit, OrderedOutput, StepOutput, short_id
from .steps import StepRunner

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SNAPSHOT_PREFIX = "build-"   # the snapshots COPY/ADD/WORKDIR write in (removed when the step ends)
# The mount points the runtime makes in a container's rootfs: Docker's init layer has them,
# so a RUN step's layer does not (when the image lacked them they are left out of the diff).
_RUNTIME_MOUNT_POINTS = ("etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab", "dev", "proc", "sys",
                         ".dockerenv")

_OPAQUE = "trusted.overlay.opaque"

# resolve_image(name) -> image ID: the local image, or pulled (its progress in the stream).
ResolveImage = Callable[[str, Emit], str]


class BuildError(errors.Invalid):
    """A step failed (one line, Docker's words); ``code`` is a RUN's exit code, else 1."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BuildOptions:
    dockerfile: str = "Dockerfile"
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    cache_from: list[str] = field(default_factory=list)   # images whose steps may stand for ours
    network: str = "default"
    extra_hosts: list[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)   # RUN containers' HostConfig: Memory, CpuShares, ...
    labels: dict[str, str] = field(default_factory=dict)
    remove: bool = True          # rm: intermediate containers go once their step committed
    # set when the build is to stop (its client went away): the running step is killed
    cancel: threading.Event = field(default_factory=threading.Event)
    quiet: bool = False          # q: only the image ID is streamed (all of it on a failure)


class _Cancelled(errors.Invalid):
    """The build is to stop (another stage failed, or the client went away): a stage stops
    before its next step."""

    def __init__(self) -> None:
        super().__init__("build cancelled")


class Builder:
    def __init__(self, store: ImageStore, runner: StepRunner, cache: BuildCache,
                 resolve_image: ResolveImage | None = None) -> None:
        self.store, self.runner, self.cache = store, runner, cache
        self.resolve_image = resolve_image or (lambda name, emit: self.store.resolve(name).id)

    def sweep(self) -> None:
        """Remove the snapshots of steps a killed daemon left (at startup: no build runs)."""
        for key in self.store.snapshots.keys():
            if key.startswith(SNAPSHOT_PREFIX):
                self.store.snapshots.remove(key)

    def build(self, context: BuildContext, options: BuildOptions, emit: Emit) -> str:
        """Build; returns the image ID. Raises DockerfileError (naming the line) before any
        step runs when the Dockerfile is malformed, BuildError/others when a step fails."""
        refs = [_parse_tag(t) for t in options.tags]
        df = parse(context.dockerfile(options.dockerfile))
        meta_args, all_stages = stages(df)
        given = {k: v for k, v in options.build_args.items() if v is not None}
        args = BuildArgs(dict(options.build_args), meta_env(meta_args, given, df.escape))
        args.referenced.update(key for arg in meta_args for key, _ in arg.pairs)
        wanted = needed(all_stages, options.target, args.meta)
        if options.labels:
            _add_labels(all_stages[wanted[-1]], options.labels)
        # q: the output is held, and streamed only if the build fails (as dockerd's)
        held: list[dict] = []
        out_emit: Emit = held.append if options.quiet else emit
        total = len(meta_args) + sum(1 + len(all_stages[i].commands) for i in wanted)
        step = 0
        for arg in meta_args:
            step += 1
            _step_line(out_emit, step, total, arg.ins)
        first_step = {}
        for i in wanted:
            first_step[i] = step + 1
            step += 1 + len(all_stages[i].commands)
        run = _Run(self, context, options, df, all_stages, args, wanted, first_step, total, out_emit)
        try:
            image_id = run.execute()
        except BaseException:
            for msg in held:
                emit(msg)
            raise
        warning = unused_args_warning(options.build_args, args.referenced)
        if warning:
            out_emit({"stream": warning})
        emit({"aux": {"ID": image_id}})
        if options.quiet:
            emit({"stream": image_id + "\n"})
        out_emit({"stream": f"Successfully built {short_id(image_id)}\n"})
        for ref in refs:
            self.store.tag(image_id, ref)
            out_emit({"stream": f"Successfully tagged {ref.familiar()}\n"})
        return image_id


def _parse_tag(tag: str) -> _ref.Reference:
    try:
        return _ref.parse(tag)
    except ValueError:
        raise errors.Invalid(f"invalid reference format: {tag!r}") from None


def _step_line(emit: Emit, n: int, total: int, ins: Instruction) -> None:
    emit({"stream": f"Step {n}/{total} : {ins.original}"})
    emit({"stream": "\n"})


def _add_labels(stage: Stage, labels: dict[str, str]) -> None:
    """The build's --label values: one LABEL step each at the end of the target stage
    (moby's buildLabelOptions), values taken as they are (no substitution)."""
    for key in sorted(labels):
        text = f"LABEL {key}={labels[key]}"
        ins = Instruction("LABEL", text[6:], [], None, [], 0, 0, text)
        stage.commands.append(c.Label(ins, [(key, labels[key])]))


class _Run:
    """One build: the stages' threads, their results and the first failure."""

    def __init__(self, builder: Builder, context: BuildContext, options: BuildOptions, df: Dockerfile,
                 all_stages: list[Stage], args: BuildArgs, wanted: list[int], first_step: dict[int, int],
                 total: int, emit: Emit) -> None:
        self.builder, self.context, self.options, self.df = builder, context, options, df
        self.all_stages, self.args, self.wanted = all_stages, args, wanted
        self.first_step, self.total = first_step, total
        self.output = OrderedOutput(emit, wanted)
        self.results: dict[int, Future[str]] = {}
        self.cancelled = options.cancel   # (a failed stage sets it too: the others stop)
        self.by_name = {s.name: s.index for s in all_stages if s.name is not None}
        store = builder.store
        # (as dockerd: the ones not here are skipped)
        self.cache_sources = [store.resolve(ref) for ref in options.cache_from if store.exists(ref)]

    def execute(self) -> str:
        if len(self.wanted) == 1:
            index = self.wanted[0]
            fut: Future[str] = Future()
            self.results[index] = fut
            try:
                fut.set_result(self._stage(index))
            finally:
                self.output.finished(index)
            return fut.result()
        with ThreadPoolExecutor(max_workers=len(self.wanted), thread_name_prefix="build-stage") as pool:
            for index in self.wanted:
                self.results[index] = pool.submit(self._stage_thread, index)
        failures = [self.results[i].exception() for i in self.wanted]
        first = next((e for e in failures if e is not None and not isinstance(e, _Cancelled)), None)
        if first is not None:
            raise first
        return self.results[self.wanted[-1]].result()

    def _stage_thread(self, index: int) -> str:
        try:
            for dep in references(self.all_stages[index], self.by_name, self.args.meta):
                if dep in self.results and self.results[dep].exception() is not None:
                    raise _Cancelled()
            return self._stage(index)
        except BaseException:
            self.cancelled.set()
            raise
        finally:
            self.output.finished(index)

    def stage_image(self, ref: str) -> str | None:
        """The image of an earlier stage ``ref`` names (waiting for it), or None."""
        key = ref.lower()
        index = self.by_name.get(key)
        if index is None and key.isdecimal():
            index = int(key)
        if index is None or index not in self.results:
            return None
        return self.results[index].result()

    def _stage(self, index: int) -> str:
        stage = self.all_stages[index]
        emit = self.output.emitter(index)
        steps = _StageSteps(self, stage, emit)
        n = self.first_step[index]
        _step_line(emit, n, self.total, stage.from_.ins)
        steps.begin()
        for cmd in stage.commands:
            if self.cancelled.is_set():
                raise _Cancelled()
            n += 1
            _step_line(emit, n, self.total, cmd.ins)
            steps.dispatch(cmd)
            emit({"stream": f" ---> {short_id(steps.state.image_id)}\n"})
        return steps.state.image_id


class _StageSteps:
    """The steps of one stage on its state."""

    def __init__(self, run: _Run, stage: Stage, emit: Emit) -> None:
        self.run, self.stage, self.emit = run, stage, emit
        self.builder = run.builder
        self.store = run.builder.store
        self.state = StageState(stage, "", {}, run.args.for_stage())
        self.cache_sources = list(run.cache_sources)

    # ------------------------------------------------------------------ FROM and triggers
    def begin(self) -> None:
        st = self.state
        base = expand(self.stage.from_.base, st.args.meta, self.run.df.escape)
        image_id = self.run.stage_image(base) if base.lower() in self.run.by_name else None
        config: dict | None = None
        if image_id is None and base != "scratch":
            image_id = self.builder.resolve_image(base, self.emit)
        if image_id:
            config = self.store.get(image_id).config
        st.image_id = image_id or ""
        st.config = base_config(config)
        if not any(e.split("=", 1)[0] == "PATH" for e in st.config.get("Env") or []):
            set_env(st.config, "PATH", DEFAULT_PATH)
        st.config["OpenStdin"] = st.config["StdinOnce"] = False
        self.emit({"stream": f" ---> {short_id(st.image_id)}\n"})
        triggers = list(st.config.get("OnBuild") or [])
        if triggers:
            st.config["OnBuild"] = None
            self.emit({"stream": f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n"})
            for trigger in triggers:
                parsed = parse(trigger)
                if len(parsed.instructions) != 1:
                    raise DockerfileError("onbuild trigger should be a single expression", self.stage.line)
                self.dispatch(c.command(parsed.instructions[0]))

    # ------------------------------------------------------------------ steps
    def dispatch(self, cmd: c.Command) -> None:
        st = self.state
        if cmd.ins.line:  # (a --label step is taken as it is)
            cmd = cmd.expanded(st.env_map(), self.run.df.escape)
        if isinstance(cmd, c.Run):
            self._run(cmd)
        elif isinstance(cmd, c.Copy):   # (ADD too)
            self._copy(cmd)
        elif isinstance(cmd, c.Workdir):
            self._workdir(cmd)
        else:
            comment = apply_metadata(st, cmd, lambda text: self.emit({"stream": text}))
            probe_cmd = nop_cmd(st, comment)
            self._step(probe_cmd, lambda lease: self._created_container_layer(probe_cmd, lease))

    def _probe(self, key: str, created_by: str) -> bool:
        st = self.state
        if self.run.options.no_cache or st.cache_busted:
            return False
        cached = self.builder.cache.get(key)
        if cached is not None and self.store.meta.image(cached) is not None:
            self.builder.cache.touch(key)
        else:
            cached = self._from_cache_sources(created_by)
            if cached is None:
                st.cache_busted = True   # (as the legacy builder: no hit after the first miss)
                return False
            self.builder.cache.put(key, st.image_id, cached, created_by)
        self.emit({"stream": " ---> Using cache\n"})
        st.image_id = cached
        return True

    def _from_cache_sources(self, created_by: str) -> str | None:
        """--cache-from (dockerd's imageCache.GetCache): an image whose history goes on from
        the parent's with this step stands for it: itself if this was its last step, else an
        image restored from its history entry and layer."""
        st = self.state
        parent = self.store.get(st.image_id) if st.image_id else None
        p_history = (parent.config.get("history") or []) if parent else []
        p_layers = parent.diff_ids if parent else []
        n = len(p_history)
        for source in self.cache_sources:
            history = source.config.get("history") or []
            if len(history) <= n or history[:n] != p_history or source.diff_ids[:len(p_layers)] != p_layers or \
                    history[n].get("created_by", "") != created_by:
                continue
            self.cache_sources = [source]
            if len(history) == n + 1:
                return source.id
            layer = None
            if not history[n].get("empty_layer"):
                ref = source.layers[len(p_layers)]   # (the parent's layers are a prefix of its)
                layer = Layer(ref.digest, ref.diff_id, ref.blob_size, ref.media_type)
            return new_image(self.store, st.image_id or None, layer, dict(st.config, Image=st.image_id),
                             created_by, history=history[n])
        return None

    def _key(self, probe_cmd: list[str], entrypoint_override: bool = False) -> str:
        probe = dict(self.state.config, Cmd=probe_cmd)
        probe.pop("Image", None)   # (the parent: in the key already)
        if entrypoint_override:
            probe["Entrypoint"] = None
        return step_key(self.state.image_id, probe)

    def _step(self, probe_cmd: list[str], make_layer: Callable[[str], Layer | None] | None,
              entrypoint_override: bool = False) -> None:
        """Probe the cache; on a miss make the layer (under a lease) and commit the image."""
        key = self._key(probe_cmd, entrypoint_override)
        created_by = " ".join(probe_cmd)
        if self._probe(key, created_by):
            return
        st = self.state
        parent = st.image_id
        with self.store.lease() as lease:
            layer = make_layer(lease) if make_layer is not None else None
            config = dict(st.config, Image=parent)
            image_id = new_image(self.store, parent or None, layer, config, created_by, author=st.maintainer)
        self.builder.cache.put(key, parent, image_id, created_by)
        st.image_id = image_id

    def _snapshot(self, image_id: str) -> str:
        key = SNAPSHOT_PREFIX + secrets.token_hex(16)
        diff_ids = self.store.get(image_id).diff_ids if image_id else []
        self.store.snapshots.prepare(key, diff_ids, image_id)
        return key

    def _layer_of(self, key: str, lease: str) -> Layer | None:
        spec = self.store.snapshots.get(key)
        return write_layer(self.store, spec.upper, spec.lowers, lease)

    # ------------------------------------------------------------------ RUN
    def _run(self, cmd: c.Run) -> None:
        st = self.state
        argv = st.cmdline(cmd.args, cmd.shell_form)
        env = list(st.config.get("Env") or [])
        build_env = st.args.not_in_env(env)
        save_cmd = argv
        if build_env:
            shown = sorted(e for e in build_env if st.args.shown(e.split("=", 1)[0]))
            save_cmd = [f"|{len(shown)}", *shown, *argv]

        def make_layer(lease: str) -> Layer | None:
            run_config = dict(st.config, Cmd=argv, Env=env + build_env, Entrypoint=[""])
            network = cmd.network or self.run.options.network
            if self.run.cancelled.is_set():
                raise _Cancelled()
            container = self.builder.runner.run(
                st.image_id, run_config, network=network, extra_hosts=self.run.options.extra_hosts,
                started=lambda cid: self.emit({"stream": f" ---> Running in {cid[:12]}\n"}),
                output=StepOutput(self.emit), cancel=self.run.cancelled, resources=self.run.options.resources)
            try:
                if container.exit_code != 0:
                    raise BuildError(f"The command '{' '.join(argv)}' returned a non-zero code: "
                                     f"{container.exit_code}", container.exit_code)
                spec = self.store.snapshots.get(container.rootfs_key)
                _drop_mount_points(spec.upper, spec.lowers)
                layer = write_layer(self.store, spec.upper, spec.lowers, lease)
            except BaseException:
                container.remove()
                raise
            if self.run.options.remove:
                container.remove()
                self.emit({"stream": f"Removing intermediate container {container.id[:12]}\n"})
            return layer

        self._step(save_cmd, make_layer, entrypoint_override=bool(save_cmd))

    # ------------------------------------------------------------------ WORKDIR
    def _created_container_layer(self, probe_cmd: list[str], lease: str) -> Layer | None:
        """A metadata or WORKDIR step as dockerd's builder commits it: a container created
        (not run) with the step's config, whose changes (the WorkingDir the engine makes, if
        the image lacked it) are the layer. From scratch, which no container can be made of,
        a snapshot gets the WorkingDir instead."""
        st = self.state
        wd = st.config.get("WorkingDir") or ""
        if not st.image_id:
            if not wd:
                return None
            key = self._snapshot("")
            try:
                rootfs = self.store.snapshots.get(key).rootfs
                mkdir_all_in(rootfs, secure_join(rootfs, wd))
                return self._layer_of(key, lease)
            finally:
                self.store.snapshots.remove(key)
        # (no VOLUMEs: they would be made and dropped for nothing; the rootfs is the same)
        config = {k: v for k, v in st.config.items() if k != "Volumes"}
        container = self.builder.runner.create(st.image_id, dict(config, Cmd=probe_cmd))
        try:
            self.emit({"stream": f" ---> Running in {container.id[:12]}\n"})
            layer = self._layer_of(container.rootfs_key, lease)
        finally:
            container.remove()
        self.emit({"stream": f"Removing intermediate container {container.id[:12]}\n"})
        return layer

    def _workdir(self, cmd: c.Workdir) -> None:
        st = self.state
        st.config["WorkingDir"] = workdir(st.config.get("WorkingDir") or "", cmd.path)
        probe_cmd = nop_cmd_string(st, "WORKDIR " + st.config["WorkingDir"])
        self._step(probe_cmd, lambda lease: self._created_container_layer(probe_cmd, lease))

    # ------------------------------------------------------------------ COPY / ADD
    def _copy(self, cmd: c.Copy) -> None:
        st = self.state
        name = cmd.ins.keyword
        is_add = isinstance(cmd, c.Add)
        source_image = self._source_image(cmd.from_) if cmd.from_ else None
        src_key = self._snapshot(source_image) if source_image else None
        tmp = tempfile.mkdtemp(prefix="sampan-add-") if is_add and any(_is_url(s) for s in cmd.sources) else None
        try:
            groups, src_hash = self._sources(cmd, source_image, src_key, tmp)
            chown = f"--chown={cmd.chown}" if cmd.chown else ""
            comment = f"{name} {chown}{src_hash} in {cmd.dest} "

            def make_layer(lease: str) -> Layer | None:
                key = self._snapshot(st.image_id)
                try:
                    rootfs = self.store.snapshots.get(key).rootfs
                    owner = _copy.resolve_chown(rootfs, cmd.chown) if cmd.chown else None
                    mode = int(cmd.chmod, 8) if cmd.chmod else None
                    wd = st.config.get("WorkingDir") or "/"
                    for root, rels, ignore in groups:
                        _copy.copy_into(rootfs, root, rels, cmd.dest, workdir=wd, chown=owner, chmod=mode,
                                        parents=cmd.parents, extract_archives=is_add and root != tmp,
                                        exclude=list(cmd.exclude), ignore=ignore, instruction=name)
                    for doc in cmd.heredocs:
                        _copy.write_heredoc(rootfs, cmd.dest, doc, wd, owner, mode)
                    return self._layer_of(key, lease)
                finally:
                    self.store.snapshots.remove(key)

            self._step(nop_cmd_string(st, comment), make_layer)
        finally:
            if src_key is not None:
                self.store.snapshots.remove(src_key)
            if tmp is not None:
                remove_tree(tmp)

    def _source_image(self, ref: str) -> str:
        image_id = self.run.stage_image(ref)
        if image_id is None:
            if ref.lower() in self.run.by_name or ref.isdecimal():
                raise DockerfileError(f"invalid from flag value {ref}: stage {ref} is not built before this one",
                                      self.stage.line)
            image_id = self.builder.resolve_image(ref, self.emit)
        return image_id

    def _sources(self, cmd: c.Copy, source_image: str | None, src_key: str | None,
                 tmp: str | None) -> tuple[list[tuple[str, list[str], Matcher | None]], str]:
        """(source root, rel paths, the root's .dockerignore) groups to copy, and the sources'
        hash for the comment (moby's file:/dir:/multi: forms, over our content checksums)."""
        groups: list[tuple[str, list[str], Matcher | None]] = []
        hashes: list[str] = []
        local = [s for s in cmd.sources if not _is_url(s)] if tmp else list(cmd.sources)
        if local:
            if src_key is not None:
                ctx = BuildContext.from_dir(self.store.snapshots.get(src_key).rootfs, dockerignore=False)
            else:
                ctx = self.run.context
            rels = ctx.sources(local, cmd.ins.keyword)
            groups.append((ctx.root, rels, ctx.ignore if src_key is None else None))
            for rel in rels:
                kind = "dir" if os.path.isdir(ctx.resolve(rel)) else "file"
                if source_image is not None:   # (an image's files are fixed by its ID)
                    digest = hashlib.sha256(f"{source_image}\0{rel}".encode()).hexdigest()
                else:
                    digest = ctx.checksum([rel]).split(":", 1)[1]
                hashes.append(f"{kind}:{digest}")
        for i, url in enumerate(s for s in cmd.sources if _is_url(s)) if tmp else ():
            # (each in a directory of its own: two URLs may name the same file)
            path, _name, _mtime = _copy.fetch_url(url, os.path.join(tmp, str(i)), getattr(cmd, "checksum", None))
            groups.append((os.path.dirname(path), [os.path.basename(path)], None))
            hashes.append("file:" + _file_sha256(path))
        for doc in cmd.heredocs:
            hashes.append("file:" + hashlib.sha256(doc.content.encode()).hexdigest())
        if len(hashes) == 1:
            return groups, hashes[0]
        return groups, "multi:" + hashlib.sha256(",".join(hashes).encode()).hexdigest()


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _drop_mount_points(upper: str, lowers: list[str]) -> None:
    """Leave the runtime's mount points out of a RUN step's layer when the image lacked them
    (Docker keeps them in the container's init layer, below its diff)."""
    for rel in _RUNTIME_MOUNT_POINTS:
        path = os.path.join(upper, rel)
        if not os.path.lexists(path) or any(os.path.lexists(os.path.join(lo, rel)) for lo in lowers):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                if not _only_mount_points(path):
                    continue
                remove_tree(path)
            except OSError:
                continue
        elif os.path.getsize(path) == 0:
            os.unlink(path)
    etc = os.path.join(upper, "etc")
    # (made, or copied up, only for the files above: unless the step emptied it on purpose)
    if os.path.isdir(etc) and not os.path.islink(etc) and not os.listdir(etc) and \
            _OPAQUE not in os.listxattr(etc):
        os.rmdir(etc)


def _only_mount_points(path: str) -> bool:
    """A directory the runtime made for mounts holds only (empty) directories and device nodes."""
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full) and os.path.isfile(full) and os.path.getsize(full):
                return False
    return True
