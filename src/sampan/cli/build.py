"""`sampan build`: a client of POST /build as the docker CLI's legacy builder is.

The context goes to the daemon as a tar packed here, as the docker CLI packs it: a
directory's files in Go's walk order, owners 0:0, what .dockerignore excludes left out (but
the Dockerfile and .dockerignore themselves, which the daemon reads); `-` is a tar (any
compression) or a Dockerfile alone on stdin; a URL is the daemon's to fetch (``remote``).
A Dockerfile from stdin (`-f -`) or from outside the context travels in the tar under a
random name that the .dockerignore sent with it hides from COPY.

The daemon's stream is shown as it comes: the legacy builder's lines in plain mode; on a
terminal a live view of the steps (the one running with its elapsed time and the tail of its
output), with rich imported only then. `-q` prints only the image ID. A failed step's error
goes to stderr as the daemon wrote it, with the daemon's code as the exit status (docker's:
a RUN that exits 3 fails the build with 3), else 1."""
from __future__ import annotations

import os
import sys

from .. import fastjson
from ..units import human_size
from .client import Client
from .command import CLIError, help_of, object_group, verb
from .createflags import extra_host, parse_kv

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, BinaryIO, Callable

DEFAULT_DOCKERFILE = "Dockerfile"
BAD_FLAG_EXIT = 125   # a flag value the docker CLI refuses (argparse's errors here exit so too)
# gzip, bzip2, xz, zstd: what the daemon decompresses (a plain tar has "ustar" at 257)
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")
_REMOTE_PREFIXES = ("http://", "https://", "git://", "git@", "github.com/")


class BuildContext:
    """What the request carries: the tar ``body`` (None for a remote context), the
    ``dockerfile`` query parameter and the ``remote`` one."""

    def __init__(self, body: BinaryIO | None, dockerfile: str | None, remote: str | None = None) -> None:
        self.body, self.dockerfile, self.remote = body, dockerfile, remote


# ---------------------------------------------------------------------------- the context
def context_paths(root: str, keep: tuple[str, ...] = ()) -> list[str]:
    """The paths under ``root`` the docker CLI sends, relative, in its order (a directory
    before its contents, names sorted as bytes): what .dockerignore excludes left out, except
    .dockerignore and the names in ``keep`` (docker's TrimBuildFilesFromExcludes). The
    patterns are applied as moby's archive walk applies them: each path with its parent
    directory's results, an excluded directory entered only when an exception pattern may
    keep something in it (the directory itself is not sent then)."""
    from ..build.ignore import Matcher, PatternError, read_dockerignore
    try:
        patterns = read_dockerignore(root)
        if not patterns:
            return _walk(root, None)
        for name in (".dockerignore", *keep):   # the daemon reads them
            if Matcher(patterns).matches(name):
                patterns.append("!" + name)
        return _walk(root, Matcher(patterns))
    except PatternError as e:
        raise CLIError(f"error checking context: {e}") from None


def _walk(root: str, matcher: Any) -> list[str]:
    out: list[str] = []

    def visit(rel_dir: str, parent: list[bool] | None) -> None:
        with os.scandir(os.path.join(root, rel_dir)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            is_dir = e.is_dir(follow_symlinks=False)
            excluded, results = matcher.step(rel, parent) if matcher is not None else (False, None)
            if excluded:
                if is_dir and not matcher.prunes(rel):
                    visit(rel, results)
                continue
            out.append(rel)
            if is_dir:
                visit(rel, results)
    visit("", None)
    return out


def write_tar(out: BinaryIO, root: str, paths: list[str], replaced: dict[str, bytes]) -> None:
    """The context tar of ``paths`` under ``root`` (owners 0:0, modes and mtimes kept,
    hard links as links); a name in ``replaced`` gets that content instead of its file's, or
    is added at the end when it is not among ``paths``."""
    import io
    import tarfile
    import time
    pending = dict(replaced)

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, like: tarfile.TarInfo | None) -> None:
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = (like.mode, like.mtime) if like is not None else (0o600, int(time.time()))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in paths:
            info = tar.gettarinfo(os.path.join(root, rel), arcname=rel)
            if info is None:   # a socket: not something a tar holds (docker skips them too)
                continue
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if rel in pending:
                add_bytes(tar, rel, pending.pop(rel), info)
            elif info.isreg():
                with open(os.path.join(root, rel), "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
        for name, data in pending.items():
            add_bytes(tar, name, data, None)


class _Piped:
    """A tar written by a thread into a pipe, read as the request body. A failure to write it
    (a file unreadable or gone) is raised by the read that finds the pipe's end."""

    def __init__(self, produce: Callable[[BinaryIO], None]) -> None:
        import threading
        r, w = os.pipe()
        self._reader = os.fdopen(r, "rb")
        self._error: OSError | None = None

        def run() -> None:
            try:
                with os.fdopen(w, "wb") as writer:
                    produce(writer)
            except OSError as e:   # re-raised in the main thread, by read()
                self._error = e
        self._thread = threading.Thread(target=run, name="build-context", daemon=True)
        self._thread.start()

    def read(self, n: int) -> bytes:
        data = self._reader.read(n)
        if not data:
            self._thread.join()
            if self._error is not None:
                raise CLIError(f"error checking context: {self._error}")
        return data

    def close(self) -> None:
        """Ends the writer (a request that failed midway leaves it blocked on the pipe)."""
        self._reader.close()
        self._thread.join()


class _Counted:
    """``body`` as read for sending; ``on_end(size)`` when all of it has been."""

    def __init__(self, body: Any, on_end: Callable[[int], None]) -> None:
        self._body, self._on_end = body, on_end
        self.size = 0
        self._ended = False

    def read(self, n: int) -> bytes:
        data = self._body.read(n)
        self.size += len(data)
        if not data and not self._ended:
            self._ended = True
            self._on_end(self.size)
        return data


class _Prefixed:
    """``head`` (bytes already read to tell a tar from a Dockerfile) then the rest of ``f``."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self._head, self._f = head, f

    def read(self, n: int) -> bytes:
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._f.read(n)


def is_archive(head: bytes) -> bool:
    return head[257:262] == b"ustar" or head.startswith(_COMPRESSED_MAGIC)


def _random_dockerfile_name() -> str:
    return ".dockerfile." + os.urandom(10).hex()


def _dockerfile_path(root: str, given: str | None) -> str:
    """The Dockerfile's real path as the docker CLI finds it: -f relative to the current
    directory, else Dockerfile (or dockerfile) in the context."""
    if given:
        path = os.path.abspath(given)
    else:
        path = os.path.join(root, DEFAULT_DOCKERFILE)
        lower = os.path.join(root, DEFAULT_DOCKERFILE.lower())
        if not os.path.lexists(path) and os.path.lexists(lower):
            path = lower
    try:
        os.lstat(path)
    except OSError as e:
        raise CLIError(f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {path}: "
                       f"{(e.strerror or str(e)).lower()}") from None
    return os.path.realpath(path)


def prepare(spec: str, dockerfile: str | None) -> BuildContext:
    """The context of `sampan build SPEC` with ``-f dockerfile``."""
    if spec == "-":
        if dockerfile == "-":
            raise CLIError("invalid argument: can't use stdin for both build context and dockerfile")
        stdin = sys.stdin.buffer
        head = stdin.read(512)
        if is_archive(head):
            return BuildContext(_Prefixed(head, stdin), dockerfile)
        text = head + stdin.read()   # a Dockerfile alone: the context is just it

        def one_file(out: BinaryIO) -> None:
            write_tar(out, "", [], {DEFAULT_DOCKERFILE: text})
        return BuildContext(_Piped(one_file), DEFAULT_DOCKERFILE)
    if spec.startswith(_REMOTE_PREFIXES):
        return BuildContext(None, dockerfile, remote=spec)
    if not os.path.isdir(spec):
        raise CLIError(f'unable to prepare context: path "{spec}" not found' if not os.path.exists(spec)
                       else f"unable to prepare context: context must be a directory: {os.path.abspath(spec)}")
    root = os.path.realpath(spec)
    replaced: dict[str, bytes] = {}
    if dockerfile == "-":
        content: bytes | None = sys.stdin.buffer.read()
        rel = None
    else:
        path = _dockerfile_path(root, dockerfile)
        rel = os.path.relpath(path, root)
        content = None
        if rel == ".." or rel.startswith("../"):   # outside the context: sent in the tar
            with open(path, "rb") as f:
                content = f.read()
    if content is not None:
        rel = _random_dockerfile_name()
        replaced[rel] = content
        try:
            with open(os.path.join(root, ".dockerignore"), "rb") as f:
                ignore = f.read()
        except FileNotFoundError:
            ignore = b".dockerignore"
        replaced[".dockerignore"] = ignore + b"\n" + rel.encode() + b"\n"
    paths = context_paths(root, keep=() if content is not None else (rel,))

    def pack(out: BinaryIO) -> None:
        write_tar(out, root, paths, replaced)
    return BuildContext(_Piped(pack), rel)


# ---------------------------------------------------------------------------- the request
def build_args(values: list[str]) -> dict[str, str | None]:
    """--build-arg K=V, or K alone: its value from the environment, else null (the daemon
    then uses the Dockerfile's default), as the docker CLI sends them."""
    out: dict[str, str | None] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key:
            raise CLIError(f'invalid argument "{item}" for "--build-arg" flag: invalid environment variable: {item}',
                           code=BAD_FLAG_EXIT)
        out[key] = value if eq else os.environ.get(key)
    return out


def extra_hosts(values: list[str]) -> list[str]:
    try:
        return [extra_host(h) for h in values]
    except CLIError as e:
        raise CLIError(str(e), code=BAD_FLAG_EXIT) from None


def build_query(args: argparse.Namespace, ctx: BuildContext) -> dict:
    """POST /build's query, with the docker CLI's names and encodings."""
    return {
        "t": args.tag or None, "dockerfile": ctx.dockerfile, "remote": ctx.remote,
        "buildargs": fastjson.dumps(build_args(args.build_arg)) if args.build_arg else None,
        "labels": fastjson.dumps(parse_kv(args.label)) if args.label else None,
        "cachefrom": fastjson.dumps(args.cache_from) if args.cache_from else None,
        "extrahosts": extra_hosts(args.add_host) or None,
        "networkmode": args.network, "platform": args.platform or os.environ.get("DOCKER_DEFAULT_PLATFORM") or None,
        "target": args.target, "nocache": args.no_cache or None, "pull": args.pull or None, "q": args.quiet or None,
        "version": "1",
    }


# ---------------------------------------------------------------------------- the output
# A view of the build shows what the daemon sends: sent(size) once the context is up,
# message(msg) for each message but the image ID and an error, failed() before an error.

def sent_line(size: int) -> str:
    return f"Sending build context to Docker daemon  {human_size(size, 4)}\n"


class PlainOutput:
    """The docker CLI's view of the legacy builder: text as it comes, a pull's statuses (bars
    on a terminal)."""

    def __init__(self, out: Any) -> None:
        from .progress import JSONProgress
        self._progress = JSONProgress(out)

    def __enter__(self) -> PlainOutput:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def sent(self, size: int) -> None:
        self._progress.show({"stream": sent_line(size)})

    def message(self, msg: dict) -> None:
        self._progress.show(msg)

    def failed(self) -> None:
        pass


class QuietOutput:
    """-q: nothing while it builds, the daemon's text (its image ID) at the end; when the
    build fails, everything on stderr before the error (the docker CLI's)."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.progress: list[str] = []
        self.text: list[str] = []

    def __enter__(self) -> QuietOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.out.write(self.image_id())
            self.out.flush()

    def image_id(self) -> str:
        """What the daemon said, its ID and a newline, is the ID the docker CLI writes for -q
        (also to --iidfile)."""
        return "".join(self.text)

    def sent(self, size: int) -> None:
        self.progress.append(sent_line(size))

    def message(self, msg: dict) -> None:
        if msg.get("stream"):
            self.text.append(msg["stream"])

    def failed(self) -> None:
        sys.stderr.write("".join(self.progress + self.text))
        sys.stderr.flush()


def output_for(args: argparse.Namespace, out: Any) -> Any:
    if args.quiet:
        return QuietOutput(out)
    if args.progress == "tty" or (args.progress == "auto" and out.isatty()):
        from .buildview import LiveSteps
        return LiveSteps(out, sent_line)
    return PlainOutput(out)


def show_stream(messages: Any, view: Any) -> str:
    """Shows the build's messages on ``view``; returns the image ID the daemon reported. An
    error message fails the build with the daemon's code (1 when it gives none)."""
    image_id = ""
    for msg in messages:
        aux = msg.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = aux["ID"]
            continue
        if msg.get("error") or msg.get("errorDetail"):
            detail = msg.get("errorDetail") or {}
            view.failed()
            raise CLIError(msg.get("error") or detail.get("message") or "unknown error",
                           code=detail.get("code") or 1)
        view.message(msg)
    return image_id


def cmd_build(client: Client, args: argparse.Namespace) -> int:
    """Build an image from a Dockerfile."""
    if args.iidfile:   # a failed build must not leave the last one's ID behind
        try:
            os.unlink(args.iidfile)
        except FileNotFoundError:
            pass
    build_args(args.build_arg)   # bad flags are refused before anything is packed or sent
    extra_hosts(args.add_host)
    ctx = prepare(args.context, args.file)
    try:
        with output_for(args, sys.stdout) as view:
            body = None if ctx.body is None else _Counted(ctx.body, view.sent)
            image_id = show_stream(client.json_lines("POST", "/build", build_query(args, ctx), body), view)
            if isinstance(view, QuietOutput):
                image_id = view.image_id()
    finally:
        if isinstance(ctx.body, _Piped):
            ctx.body.close()
    if args.iidfile:
        if not image_id:
            raise CLIError(f"Server did not provide an image ID. Cannot write {args.iidfile}")
        with open(args.iidfile, "w") as f:
            f.write(image_id)
    return 0


# ---------------------------------------------------------------------------- registration
def _args_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("context", metavar="PATH | URL | -")
    p.add_argument("-t", "--tag", action="append", default=[], help="Name and optionally a tag in the 'name:tag' "
                   "format")
    p.add_argument("-f", "--file", help="Name of the Dockerfile (Default is 'PATH/Dockerfile')")
    p.add_argument("--build-arg", action="append", default=[], help="Set build-time variables")
    p.add_argument("--target", help="Set the target build stage to build")
    p.add_argument("--no-cache", action="store_true", help="Do not use cache when building the image")
    p.add_argument("--pull", action="store_true", help="Always attempt to pull a newer version of the image")
    p.add_argument("--label", action="append", default=[], help="Set metadata for an image")
    p.add_argument("--network", help='Set the networking mode for the RUN instructions during build (default '
                   '"default")')
    p.add_argument("--add-host", action="append", default=[], help="Add a custom host-to-IP mapping (host:ip)")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress the build output and print image ID on "
                   "success")
    p.add_argument("--iidfile", help="Write the image ID to the file")
    p.add_argument("--cache-from", action="append", default=[], help="Images to consider as cache sources")
    p.add_argument("--progress", choices=("auto", "plain", "tty"), default="auto", help="Set type of progress "
                   "output (auto, plain, tty). Use plain to show container output")


def cmd_builder_prune(client: Client, args: argparse.Namespace) -> int:
    """Remove build cache."""
    if not args.force:
        what = "all build cache" if args.all else "all dangling build cache"
        sys.stdout.write(f"WARNING! This will remove {what}. Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    from .containers import filters_query
    res = client.post("/build/prune", all=args.all or None, filters=filters_query(args.filter)) or {}
    if res.get("CachesDeleted"):
        print("Deleted build cache objects:")
        for cache_id in res["CachesDeleted"]:
            print(cache_id)
        print()
    print(f"Total reclaimed space: {human_size(res.get('SpaceReclaimed') or 0, 4)}")   # (4 digits here, docker's)
    return 0


def _args_builder_prune(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused build cache, not just dangling ones")
    p.add_argument("--filter", action="append", default=[], help="Provide filter values (e.g. 'until=24h')")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")


# The commands register() adds (main.build_parser builds only their parsers for them).
COMMANDS = frozenset(("build", "builder"))


def register(sub: argparse._SubParsersAction) -> None:
    """`build`, and `builder build|prune`."""
    p = sub.add_parser("build", help=help_of(cmd_build), description=help_of(cmd_build))
    _args_build(p)
    p.set_defaults(func=verb(cmd_build, "build"))
    add = object_group(sub, "builder", "Manage builds")
    _args_build(add("build", cmd_build, help_of(cmd_build)))
    _args_builder_prune(add("prune", cmd_builder_prune, help_of(cmd_builder_prune)))
