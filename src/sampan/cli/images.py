"""Image commands with docker's verbs, flags, output and exit codes: ``images``, ``image
ls/inspect/rm/prune/history/tag/load/save/import/pull/push/bootstrap``, ``rmi``, ``tag``,
``load``, ``save``, ``import``, ``pull``, ``push``, ``login``, ``logout``.

Until the engine daemon exists they use the image library directly on the engine root.
Failures print one line (``Error response from daemon: …`` for what the daemon would
have refused) and exit 1."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from datetime import datetime
from typing import Callable

from . import format as fmt

_IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                  "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
                  "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}
_HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
                    "Size": "SIZE", "Comment": "COMMENT"}
INSECURE_ENV = "SAMPAN_INSECURE_REGISTRY"


class CommandError(Exception):
    """A failure on the client's side: printed as is (no daemon prefix)."""


def _store(args: argparse.Namespace):  # -> ImageStore (imported lazily: sqlite and friends)
    from ..image.store import ImageStore
    return ImageStore(args.root)


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _daemon_error(e: BaseException) -> int:
    from ..runtime.errors import describe
    _err(f"Error response from daemon: {describe(e)}")
    return 1


def _command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """One line and exit 1 for any failure, as the docker CLI does."""
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CommandError as e:
            _err(str(e))
            return 1
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as e:  # noqa: BLE001 - every daemon-side failure is one line
            return _daemon_error(e)
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _insecure(args: argparse.Namespace) -> list[str]:
    env = [h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()]
    return [*getattr(args, "insecure_registry", []), *env]


def _timestamp(value: str) -> float:
    """RFC 3339 (nanoseconds allowed) -> unix time; 0 when absent or unreadable."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", (value or "").strip())
    if not m:
        return 0.0
    frac = float("0" + m.group(2)) if m.group(2) else 0.0
    tz = m.group(3) or "Z"
    try:
        return datetime.fromisoformat(m.group(1) + ("+00:00" if tz == "Z" else tz)).timestamp() + frac
    except ValueError:
        return 0.0


# ---------------------------------------------------------------------------------------------
# images / image ls

def _glob(pattern: str) -> re.Pattern:
    """Go's path.Match: * and ? never match a slash."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise CommandError(f"Error response from daemon: invalid reference filter pattern {pattern!r}")
            body = pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else re.escape(body).replace("\\-", "-")) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _filters(args: argparse.Namespace) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in args.filter:
        key, eq, value = f.partition("=")
        if not eq:
            raise CommandError("Error response from daemon: bad format of filter (expected name=value)")
        if key not in ("dangling", "reference", "label", "before", "since"):
            raise CommandError(f"Error response from daemon: invalid filter '{key}'")
        out.setdefault(key, []).append(value)
    if args.reference:
        out.setdefault("reference", []).append(args.reference)
    return out


def _image_rows(store, args: argparse.Namespace) -> list[dict]:
    from ..image import reference as _ref
    filters = _filters(args)
    images = store.list()
    if "dangling" in filters:
        want = filters["dangling"][-1].lower()
        if want not in ("true", "false", "1", "0"):
            raise CommandError(f"Error response from daemon: invalid filter 'dangling={want}'")
        images = [i for i in images if i.dangling == (want in ("true", "1"))]
    for key, newer in (("before", False), ("since", True)):
        for value in filters.get(key, []):
            pivot = store.resolve(value)
            when = _timestamp(pivot.created)
            images = [i for i in images if (_timestamp(i.created) > when) == newer and i.id != pivot.id]
    for label in filters.get("label", []):
        k, eq, v = label.partition("=")
        images = [i for i in images if k in ((i.config.get("config") or {}).get("Labels") or {}) and
                  (not eq or i.config["config"]["Labels"][k] == v)]
    patterns = [_glob(p) for p in filters.get("reference", [])]
    rows: list[dict] = []
    images.sort(key=lambda i: _timestamp(i.created), reverse=True)
    for img in images:
        refs = [_ref.parse(r, default_tag=False) for r in img.refs]
        if patterns:
            refs = [r for r in refs if any(p.match(r.familiar_name() + (f":{r.tag}" if r.tag else "")) or
                                           p.match(r.familiar_name()) for p in patterns)]
            if not refs:
                continue
        elif not args.all and not refs and store.meta.children(img.id):
            continue                        # an intermediate image of a build
        tags: dict[str, list[str]] = {}
        digests: dict[str, list[str]] = {}
        for r in refs:
            (digests if r.digest else tags).setdefault(r.familiar_name(), []).append(r.digest or r.tag)
        created = _timestamp(img.created)
        base = {"Containers": "N/A", "CreatedAt": fmt.go_time(created) if created else "",
                "CreatedSince": fmt.since(created), "ID": img.id if args.no_trunc else img.short_id,
                "SharedSize": "N/A", "Size": fmt.human_size(img.size), "UniqueSize": "N/A",
                "VirtualSize": fmt.human_size(img.size)}
        pairs: list[tuple[str, str, str]] = []
        for repo, repo_tags in tags.items():
            ds = digests.pop(repo, [])     # shown on the tag rows, never rows of their own
            if not args.digests:
                ds = []
            for tag in repo_tags:
                pairs += [(repo, tag, d) for d in ds] or [(repo, tag, "<none>")]
        for repo, ds in digests.items():
            pairs += [(repo, "<none>", d) for d in ds] if args.digests else [(repo, "<none>", "<none>")]
        if not refs:
            pairs.append(("<none>", "<none>", "<none>"))
        rows += [{**base, "Repository": repo, "Tag": tag, "Digest": digest} for repo, tag, digest in pairs]
    return rows


@_command
def cmd_images(args: argparse.Namespace) -> int:
    """List images."""
    rows = _image_rows(_store(args), args)
    if args.quiet:
        for row in rows:
            print(row["ID"])
        return 0
    if args.format:
        fmt.write_formatted(args.format, rows, _IMAGE_HEADERS, sys.stdout.write)
        return 0
    cols = ["Repository", "Tag", *(["Digest"] if args.digests else []), "ID", "CreatedSince", "Size"]
    table = [[_IMAGE_HEADERS[c] if c != "CreatedSince" else "CREATED" for c in cols]]
    table += [[row[c] for c in cols] for row in rows]
    sys.stdout.write(fmt.table(table))
    return 0


def _args_images(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-a", "--all", action="store_true", help="show all images (default hides intermediate images)")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("-f", "--filter", action="append", default=[], help="filter output based on conditions")
    p.add_argument("--format", help="format output using a Go template, 'table ...' or 'json'")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")


# ---------------------------------------------------------------------------------------------
# inspect, history, tag, rmi, prune

@_command
def cmd_inspect(args: argparse.Namespace) -> int:
    """Display detailed information on one or more images."""
    from ..image.store import ImageNotFound
    store = _store(args)
    found, status = [], 0
    for name in args.images:
        try:
            found.append(store.inspect(name))
        except ImageNotFound as e:
            _err(f"Error: {e}")
            status = 1
    if args.format:
        for doc in found:
            print(fmt.render(args.format.replace("\\t", "\t").replace("\\n", "\n"), doc))
    else:
        print(json.dumps(found, indent=4))
    return status


@_command
def cmd_history(args: argparse.Namespace) -> int:
    """Show the history of an image."""
    entries = _store(args).history(args.image)
    rows = []
    for h in entries:
        iid = h["Id"]
        if iid != "<missing>" and not args.no_trunc:
            iid = iid.split(":", 1)[1][:12]
        created_by = h["CreatedBy"].replace("\t", " ")
        rows.append({
            "ID": iid,
            "CreatedSince": fmt.since(h["Created"]) if args.human else
            (datetime.fromtimestamp(h["Created"]).astimezone().isoformat() if h["Created"] else "N/A"),
            "CreatedAt": fmt.go_time(h["Created"]) if h["Created"] else "",
            "CreatedBy": created_by if args.no_trunc else fmt.ellipsis(created_by, 45),
            "Size": fmt.human_size(h["Size"]) if args.human else str(h["Size"]),
            "Comment": h["Comment"],
        })
    if args.quiet:
        for row in rows:
            print(row["ID"])
    elif args.format:
        fmt.write_formatted(args.format, rows, _HISTORY_HEADERS, sys.stdout.write)
    else:
        cols = ["ID", "CreatedSince", "CreatedBy", "Size", "Comment"]
        sys.stdout.write(fmt.table([[_HISTORY_HEADERS[c] for c in cols]] + [[r[c] for c in cols] for r in rows]))
    return 0


@_command
def cmd_tag(args: argparse.Namespace) -> int:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    store = _store(args)
    img = store.resolve(args.source)
    store.tag(img.id, args.target)
    return 0


@_command
def cmd_rmi(args: argparse.Namespace) -> int:
    """Remove one or more images."""
    store = _store(args)
    status = 0
    for name in args.images:
        try:
            records = store.remove(name, force=args.force, prune=not args.no_prune)
        except Exception as e:  # noqa: BLE001 - reported, the other images still go
            status = _daemon_error(e)
            continue
        for rec in records:
            for key, value in rec.items():
                print(f"{key}: {value}")
    return status


@_command
def cmd_prune(args: argparse.Namespace) -> int:
    """Remove unused images."""
    if not args.force:
        what = ("all images without at least one container associated to them" if args.all
                else "all dangling images")
        sys.stdout.write(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    res = _store(args).prune(dangling_only=not args.all)
    if res["ImagesDeleted"]:
        print("Deleted Images:")
        for rec in res["ImagesDeleted"]:
            for key, value in rec.items():
                print(f"{key.lower()}: {value}")
        print()
    print(f"Total reclaimed space: {fmt.human_size(res['SpaceReclaimed'])}")
    return 0


# ---------------------------------------------------------------------------------------------
# load, save, import

@_command
def cmd_load(args: argparse.Namespace) -> int:
    """Load images from a tar archive (docker save, OCI layout) or STDIN."""
    from ..image import archive
    from .progress import Transfer
    if args.input:
        if not os.path.exists(args.input):
            raise CommandError(f"open {args.input}: no such file or directory")
        src: object = args.input
    else:
        if sys.stdin.isatty():
            raise CommandError("requested load from stdin, but stdin is empty")
        src = sys.stdin.buffer
    store = _store(args)
    with Transfer(sys.stdout, {"active": "Loading layer", "done": "Loaded"}, quiet=args.quiet) as progress:
        loaded = archive.load(store, src, progress=progress)  # type: ignore[arg-type]
    for img in loaded:
        for tag, old in img.replaced:
            print(f"The image {tag} already exists, renaming the old one with ID {old} to empty string")
        for tag in img.tags:
            print(f"Loaded image: {tag}")
        if not img.tags:
            print(f"Loaded image ID: {img.id}")
    return 0


@_command
def cmd_save(args: argparse.Namespace) -> int:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    from ..image import archive
    from .progress import Transfer
    store = _store(args)
    with Transfer(sys.stderr, {"active": "Saving", "done": "Saved"}) as progress:
        if args.format == "oci-dir":
            if not args.output:
                raise CommandError("--format oci-dir needs -o DIRECTORY")
            archive.save_dir(store, args.images, args.output, progress=progress)
            return 0
        if not args.output:
            if sys.stdout.isatty():
                raise CommandError("Cowardly refusing to save to a terminal. Use the -o flag or redirect.")
            archive.save(store, args.images, sys.stdout.buffer, fmt=args.format, progress=progress)
            return 0
        directory = os.path.dirname(os.path.abspath(args.output))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".sampan-save-")
        try:
            with os.fdopen(fd, "wb") as out:
                archive.save(store, args.images, out, fmt=args.format, progress=progress)
            os.chmod(tmp, 0o644)
            os.replace(tmp, args.output)
        except BaseException:
            os.unlink(tmp)
            raise
    return 0


@_command
def cmd_import(args: argparse.Namespace) -> int:
    """Import the contents from a tarball to create a filesystem image."""
    from ..image import archive
    if "://" in args.file:
        raise CommandError("importing from a URL is not supported: download it first")
    if args.file == "-":
        src: object = sys.stdin.buffer
    elif not os.path.exists(args.file):
        raise CommandError(f"open {args.file}: no such file or directory")
    else:
        src = args.file
    image_id = archive.import_rootfs(_store(args), src, reference=args.reference, changes=args.change,  # type: ignore[arg-type]
                                     message=args.message or "", platform=args.platform)
    print(image_id)
    return 0


# ---------------------------------------------------------------------------------------------
# pull, push, login, logout

@_command
def cmd_pull(args: argparse.Namespace) -> int:
    """Download an image from a registry."""
    from ..image import distribution
    from ..image import reference as _ref
    from .progress import Transfer
    ref = _ref.parse(args.name)
    if not args.quiet:
        print(f"{ref.digest or ref.tag}: Pulling from {ref.path}", flush=True)
    labels = {"active": "Downloading", "done": "Pull complete", "exists": "Already exists"}
    with Transfer(sys.stdout, labels, quiet=args.quiet, lines=True) as progress:
        res = distribution.pull_image(_store(args), args.name, platform=args.platform, progress=progress,
                                      insecure=_insecure(args))
    if not args.quiet:
        print(f"Digest: {res.digest}")
        status = "Image is up to date" if res.up_to_date else "Downloaded newer image"
        print(f"Status: {status} for {res.reference}")
    print(str(ref))
    return 0


@_command
def cmd_push(args: argparse.Namespace) -> int:
    """Upload an image to a registry."""
    from ..image import distribution
    from ..image import reference as _ref
    from ..image.store import ImageNotFound
    from .progress import Transfer
    ref = _ref.parse(args.name)
    store = _store(args)
    try:
        store.resolve(str(ref))
    except ImageNotFound:
        raise CommandError(f"An image does not exist locally with the tag: {ref.familiar_name()}") from None
    if not args.quiet:
        print(f"The push refers to repository [{ref.repository}]", flush=True)
    labels = {"active": "Pushing", "done": "Pushed", "exists": "Layer already exists", "mounted": "Mounted"}
    with Transfer(sys.stdout, labels, quiet=args.quiet, lines=True) as progress:
        digest, size = distribution.push_image(store, str(ref), progress=progress, insecure=_insecure(args))
    if args.quiet:
        print(str(ref))
    else:
        print(f"{ref.tag}: digest: {digest} size: {size}")
    return 0


def _read_secret(prompt: str) -> str:
    import getpass
    return getpass.getpass(prompt)


@_command
def cmd_login(args: argparse.Namespace) -> int:
    """Log in to a registry."""
    from ..image import auth
    server = args.server or "docker.io"
    username, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise CommandError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise CommandError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        _err("WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
    if not username or not password:
        if not sys.stdin.isatty():
            raise CommandError("Error: Cannot perform an interactive login from a non TTY device")
        if not username:
            username = input("Username: ").strip()
        if not password:
            password = _read_secret("Password: ")
    if not username or not password:
        raise CommandError("Error: username and password are required")
    auth.login(server, username, password, insecure=_insecure(args))
    print("Login Succeeded")
    return 0


@_command
def cmd_logout(args: argparse.Namespace) -> int:
    """Log out from a registry."""
    from ..image import auth
    server = args.server or "docker.io"
    key = auth.normalize_host(server)
    if auth.logout(server):
        print(f"Removing login credentials for {key}")
    else:
        print(f"Not logged in to {key}")
    return 0


# ---------------------------------------------------------------------------------------------
# bootstrap

@_command
def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Make a base image from this host, without a registry."""
    from ..image import bootstrap
    log = (lambda line: print(line, file=sys.stderr)) if sys.stderr.isatty() else None
    res = bootstrap.bootstrap(_store(args), args.kind, tags=args.tag or None, log=log)
    for tag in res.tags:
        print(f"Bootstrapped image: {tag}")
    print(res.id)
    return 0


# ---------------------------------------------------------------------------------------------
# registration

def _args_rmi(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="do not delete untagged parents")


def _args_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--format", help="format output using a Go template")


def _args_history(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-H", "--human", type=lambda v: v.lower() not in ("false", "0"), default=True, nargs="?",
                   const=True, help="print sizes and dates in human readable format (default true)")
    p.add_argument("--format", help="format output using a Go template, 'table ...' or 'json'")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")


def _args_tag(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")


def _args_prune(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")


def _args_load(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="read from tar archive file (or directory), instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")


def _args_save(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", help="write to a file (or directory for oci-dir), instead of STDOUT")
    p.add_argument("--format", default="docker-archive", choices=("docker-archive", "oci-archive", "oci-dir"),
                   help="docker-archive (also an OCI layout, as Docker 25+ writes), oci-archive or oci-dir")


def _args_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="file|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-c", "--change", action="append", default=[], help="apply Dockerfile instruction to the image")
    p.add_argument("-m", "--message", help="set commit message for imported image")
    p.add_argument("--platform", help="set platform if server is multi-platform capable")


def _args_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help=f"use plain HTTP or unverified TLS with this registry (also ${INSECURE_ENV}, comma-separated)")


def _args_pull(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", help="set platform if server is multi-platform capable")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    _args_registry(p)


def _args_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    _args_registry(p)


def _args_login(p: argparse.ArgumentParser) -> None:
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.add_argument("-u", "--username", help="username")
    p.add_argument("-p", "--password", help="password")
    p.add_argument("--password-stdin", action="store_true", help="take the password from stdin")
    _args_registry(p)


def _args_logout(p: argparse.ArgumentParser) -> None:
    p.add_argument("server", nargs="?", metavar="SERVER")


def _args_bootstrap(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("busybox", "debian"), help="busybox (busybox-static) or debian (debootstrap)")
    p.add_argument("-t", "--tag", action="append", default=[], help="name the image (default busybox:latest, "
                   "debian:bookworm and debian:latest)")


# (names, argument adder, handler) of `sampan image COMMAND`; those with a top-level name too
_IMAGE_COMMANDS: list[tuple[list[str], Callable, Callable, str | None]] = [
    (["ls", "list"], _args_images, cmd_images, "images"),
    (["inspect"], _args_inspect, cmd_inspect, None),
    (["rm", "remove"], _args_rmi, cmd_rmi, "rmi"),
    (["prune"], _args_prune, cmd_prune, None),
    (["history"], _args_history, cmd_history, "history"),
    (["tag"], _args_tag, cmd_tag, "tag"),
    (["load"], _args_load, cmd_load, "load"),
    (["save"], _args_save, cmd_save, "save"),
    (["import"], _args_import, cmd_import, "import"),
    (["pull"], _args_pull, cmd_pull, "pull"),
    (["push"], _args_push, cmd_push, "push"),
    (["bootstrap"], _args_bootstrap, cmd_bootstrap, None),
]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the image commands to the `sampan` parser's subcommands."""
    image = sub.add_parser("image", help="manage images").add_subparsers(dest="image_command", metavar="COMMAND")
    for names, add_args, handler, top in _IMAGE_COMMANDS:
        p = image.add_parser(names[0], aliases=names[1:], help=(handler.__doc__ or "").strip().rstrip("."))
        add_args(p)
        p.set_defaults(func=handler)
        if top:
            t = sub.add_parser(top, help=(handler.__doc__ or "").strip().rstrip("."))
            add_args(t)
            t.set_defaults(func=handler)
    for name, add_args, handler in (("login", _args_login, cmd_login), ("logout", _args_logout, cmd_logout)):
        p = sub.add_parser(name, help=(handler.__doc__ or "").strip().rstrip("."))
        add_args(p)
        p.set_defaults(func=handler)
