"""Image verbs with docker's names, flags, output and exit codes, all clients of sampand (the
one writer of the image store): ``images``, ``image ls/inspect/rm/prune/history/tag/load/
save/import/pull/push/bootstrap``, ``rmi``, ``tag``, ``load``, ``save``, ``import``,
``pull``, ``push``, ``login``, ``logout``. Failures follow cli/command.py."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from ..timefmt import ago, go_time_string
from ..units import human_size
from . import format as fmt
from .client import APIError, Client, quote_ref
from .command import CLIError, daemon_error, help_of, verb
from .containers import filters_query
from .progress import JSONProgress
from .pull import parse_reference, pull, registry_auth
from .streams import save_response

_IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                  "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
                  "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}
_HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
                    "Size": "SIZE", "Comment": "COMMENT"}
_HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"


def _short_id(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def _split_ref(ref: str) -> tuple[str, str]:
    """``name[:tag]`` -> (name, tag); "" when there is no tag (a port is not a tag)."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, ""
    return name, tag


# ---------------------------------------------------------------------------------------------
# images / image ls

def _image_rows(summaries: list[dict], args: argparse.Namespace) -> list[dict]:
    """docker's rows: one a repository:tag (digests on them with --digests), <none> for
    untagged images."""
    rows: list[dict] = []
    for img in summaries:
        tags: dict[str, list[str]] = {}
        for ref in img.get("RepoTags") or []:
            if ref == "<none>:<none>":
                continue
            repo, tag = _split_ref(ref)
            tags.setdefault(repo, []).append(tag)
        digests: dict[str, list[str]] = {}
        for ref in img.get("RepoDigests") or []:
            repo, _, digest = ref.partition("@")
            if repo != "<none>":
                digests.setdefault(repo, []).append(digest)
        created = img.get("Created") or 0
        size = img.get("Size") or 0
        base = {"Containers": str(img["Containers"]) if img.get("Containers", -1) >= 0 else "N/A",
                "CreatedAt": go_time_string(created) if created else "", "CreatedSince": ago(created),
                "ID": img["Id"] if args.no_trunc else _short_id(img["Id"]),
                "SharedSize": human_size(img["SharedSize"]) if img.get("SharedSize", -1) >= 0 else "N/A",
                "Size": human_size(size), "UniqueSize": "N/A", "VirtualSize": human_size(img.get("VirtualSize", size))}
        pairs: list[tuple[str, str, str]] = []
        for repo, repo_tags in tags.items():
            ds = digests.pop(repo, []) if args.digests else []    # shown on the tag rows, never rows of their own
            for tag in repo_tags:
                pairs += [(repo, tag, d) for d in ds] or [(repo, tag, "<none>")]
            digests.pop(repo, None)
        for repo, ds in digests.items():
            pairs += [(repo, "<none>", d) for d in ds] if args.digests else [(repo, "<none>", "<none>")]
        if not pairs:
            pairs.append(("<none>", "<none>", "<none>"))
        rows += [{**base, "Repository": repo, "Tag": tag, "Digest": digest} for repo, tag, digest in pairs]
    return rows


def cmd_images(client: Client, args: argparse.Namespace) -> int:
    """List images."""
    filters = list(args.filter) + ([f"reference={args.reference}"] if args.reference else [])
    summaries = client.get("/images/json", all=args.all, filters=filters_query(filters))
    rows = _image_rows(summaries, args)
    if args.quiet:
        seen = []
        for row in rows:
            if row["ID"] not in seen:   # docker lists an image's ID once
                seen.append(row["ID"])
                print(row["ID"])
        return 0
    cols = "{{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if args.digests else "") + \
        "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    fmt.write_formatted(args.format or "table " + cols, rows, _IMAGE_HEADERS, sys.stdout.write, "table " + cols)
    return 0


def _args_images(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-a", "--all", action="store_true", help="Show all images (default hides intermediate images)")
    p.add_argument("--digests", action="store_true", help="Show digests")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", help="Format output using a custom template: 'table', 'table TEMPLATE', "
                   "'json' or 'TEMPLATE'")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")


# ---------------------------------------------------------------------------------------------
# inspect, history, tag, rmi, prune

def cmd_inspect(client: Client, args: argparse.Namespace) -> int:
    """Display detailed information on one or more images."""
    found, code = [], 0
    for name in args.images:
        try:
            found.append(client.get(f"/images/{quote_ref(name)}/json"))
        except APIError as e:
            print(daemon_error(e.message), file=sys.stderr)
            code = 1
    fmt.write_inspected(args.format, found, sys.stdout.write)
    return code


def cmd_history(client: Client, args: argparse.Namespace) -> int:
    """Show the history of an image."""
    from ..timefmt import rfc3339_seconds
    rows = []
    for h in client.get(f"/images/{quote_ref(args.image)}/history"):
        iid = h["Id"]
        if iid != "<missing>" and not args.no_trunc:
            iid = _short_id(iid)
        created_by = h.get("CreatedBy", "").replace("\t", " ")
        created = h.get("Created") or 0
        rows.append({
            "ID": iid,
            "CreatedSince": ago(created) if args.human else rfc3339_seconds(created),
            "CreatedAt": rfc3339_seconds(created),
            "CreatedBy": created_by if args.no_trunc else fmt.ellipsis(created_by, 45),
            "Size": human_size(h.get("Size", 0)) if args.human else str(h.get("Size", 0)),
            "Comment": h.get("Comment", ""),
        })
    if args.quiet:
        for row in rows:
            print(row["ID"])
        return 0
    fmt.write_formatted(args.format or _HISTORY_TABLE, rows, _HISTORY_HEADERS, sys.stdout.write, _HISTORY_TABLE)
    return 0


def cmd_tag(client: Client, args: argparse.Namespace) -> int:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    target = parse_reference(args.target, default_tag=False)
    repo, tag = _split_ref(args.target.split("@", 1)[0])
    if target.digest:
        raise CLIError("refusing to create a tag with a digest reference")
    client.post(f"/images/{quote_ref(args.source)}/tag", repo=repo, tag=tag or "latest")
    return 0


def _print_removals(records: list[dict], lower: bool = False) -> None:
    for rec in records:
        for key, value in rec.items():
            print(f"{key.lower() if lower else key}: {value}")


def cmd_rmi(client: Client, args: argparse.Namespace) -> int:
    """Remove one or more images."""
    code = 0
    for name in args.images:
        try:
            _print_removals(client.delete(f"/images/{quote_ref(name)}", force=args.force, noprune=args.no_prune))
        except APIError as e:   # reported, the other images still go
            print(daemon_error(e.message), file=sys.stderr)
            code = 1
    return code


def cmd_prune(client: Client, args: argparse.Namespace) -> int:
    """Remove unused images."""
    if not args.force:
        what = ("all images without at least one container associated to them" if args.all
                else "all dangling images")
        sys.stdout.write(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    res = client.post("/images/prune", filters=filters_query([] if not args.all else ["dangling=false"]))
    if res.get("ImagesDeleted"):
        print("Deleted Images:")
        _print_removals(res["ImagesDeleted"], lower=True)
        print()
    print(f"Total reclaimed space: {human_size(res.get('SpaceReclaimed') or 0)}")
    return 0


# ---------------------------------------------------------------------------------------------
# load, save, import

def _input(path: str | None, what: str) -> object:
    """The file to send as a request body, or stdin (refused when it is a terminal)."""
    if path and path != "-":
        try:
            f = open(path, "rb")
        except OSError as e:
            raise CLIError(f"open {path}: {(e.strerror or str(e)).lower()}") from None
        if os.path.isdir(path):
            f.close()
            raise CLIError(f"read {path}: is a directory")
        return f
    if sys.stdin.isatty():
        raise CLIError(f"requested {what} from stdin, but stdin is empty")
    return sys.stdin.buffer


def cmd_load(client: Client, args: argparse.Namespace) -> int:
    """Load an image from a tar archive or STDIN."""
    body = _input(args.input, "load")
    with JSONProgress(sys.stdout, quiet=args.quiet) as progress:
        progress.show_all(client.json_lines("POST", "/images/load", {"quiet": args.quiet}, body))
    return 0


def cmd_save(client: Client, args: argparse.Namespace) -> int:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    if not args.output and sys.stdout.isatty():
        raise CLIError("Cowardly refusing to save to a terminal. Use the -o flag or redirect.")
    save_response(client.open("GET", "/images/get", {"names": args.images}), args.output)
    return 0


def cmd_import(client: Client, args: argparse.Namespace) -> int:
    """Import the contents from a tarball to create a filesystem image."""
    url = "://" in args.file
    query = {"fromSrc": args.file if url else "-", "changes": args.change, "message": args.message,
             "platform": args.platform}
    if args.reference:
        parse_reference(args.reference)
        query["repo"], query["tag"] = _split_ref(args.reference)
    with JSONProgress(sys.stdout) as progress:
        progress.show_all(client.json_lines("POST", "/images/create", query,
                                            None if url else _input(args.file, "import")))
    return 0


# ---------------------------------------------------------------------------------------------
# pull, push, login, logout

def cmd_pull(client: Client, args: argparse.Namespace) -> int:
    """Download an image from a registry."""
    print(pull(client, args.name, args.platform, sys.stdout, quiet=args.quiet))
    return 0


def cmd_push(client: Client, args: argparse.Namespace) -> int:
    """Upload an image to a registry."""
    ref = parse_reference(args.name, default_tag=False)
    if ref.digest:
        raise CLIError("cannot push a digest reference")
    tag = ref.tag
    if not tag and not args.all_tags:
        print("Using default tag: latest")
        tag = "latest"
    elif tag and args.all_tags:
        raise CLIError("tag can't be used with --all-tags/-a")
    name = ref.familiar_name()
    with JSONProgress(sys.stdout, quiet=args.quiet) as progress:
        progress.show_all(client.json_lines("POST", f"/images/{quote_ref(name)}/push", {"tag": tag},
                                            headers=registry_auth(ref.domain)))
    if args.quiet:
        print(f"{ref.repository}:{tag}" if tag else ref.repository)
    return 0


def _registry_host(server: str | None) -> str:
    from ..image import credentials
    return credentials.normalize_host(server or "docker.io")


def cmd_login(client: Client, args: argparse.Namespace) -> int:
    """Authenticate to a registry."""
    from ..image import credentials
    server = args.server or credentials.DOCKER_HUB_KEY
    username, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise CLIError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise CLIError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if not username or not password:
        if not sys.stdin.isatty():
            raise CLIError("Error: Cannot perform an interactive login from a non TTY device")
        if not username:
            username = input("Username: ").strip()
        if not password:
            import getpass
            password = getpass.getpass("Password: ")
    if not username or not password:
        raise CLIError("Error: Non-null Username Required" if not username else "Error: Non-null Password Required")
    res = client.post("/auth", {"username": username, "password": password, "serveraddress": server})
    credentials.store(server, username, password)
    print(f"WARNING! Your password will be stored unencrypted in {credentials.config_path()}.", file=sys.stderr)
    print((res or {}).get("Status") or "Login Succeeded")
    return 0


def cmd_logout(client: Client, args: argparse.Namespace) -> int:
    """Log out from a registry."""
    from ..image import credentials
    key = _registry_host(args.server)
    if credentials.erase(key):
        print(f"Removing login credentials for {key}")
    else:
        print(f"Not logged in to {key}")
    return 0


# ---------------------------------------------------------------------------------------------
# bootstrap

_BOOTSTRAP = {   # kind: (default tags, Cmd)
    "busybox": (["busybox:latest"], '["sh"]'),
    "debian": (["debian:bookworm", "debian:latest"], '["bash"]'),
}


def cmd_bootstrap(client: Client, args: argparse.Namespace) -> int:
    """Make a base image from this host, without a registry."""
    import tempfile
    from ..image import bootstrap, layers
    tags = args.tag or _BOOTSTRAP[args.kind][0]
    for tag in tags:
        parse_reference(tag)
    work = tempfile.mkdtemp(prefix=f"sampan-bootstrap-{args.kind}-")
    try:
        rootfs = os.path.join(work, "rootfs")
        if args.kind == "busybox":
            os.mkdir(rootfs)
            bootstrap.busybox_rootfs(rootfs)
            created_by = "sampan image bootstrap busybox (busybox-static)"
        else:
            log = (lambda line: print(line, file=sys.stderr)) if sys.stderr.isatty() else None
            bootstrap.debian_rootfs(rootfs, log=log)
            created_by = f"debootstrap --variant=minbase {bootstrap.DEBIAN_SUITE} {bootstrap.DEBIAN_MIRROR}"
        # the rootfs as a layer tar (fixed order, numeric owners), imported by the daemon
        tar_path = os.path.join(work, "rootfs.tar")
        with open(tar_path, "wb") as out:
            layers.diff(rootfs, None, out)
        repo, tag = _split_ref(tags[0])
        query = {"fromSrc": "-", "repo": repo, "tag": tag or "latest", "message": created_by,
                 "changes": [f"ENV {bootstrap.PATH_ENV}", f"CMD {_BOOTSTRAP[args.kind][1]}"]}
        with open(tar_path, "rb") as body:
            messages = list(client.json_lines("POST", "/images/create", query, body))
    finally:
        bootstrap.remove_workdir(work)   # what a failed debootstrap left mounted first
    image_id = next((m["status"] for m in messages if str(m.get("status", "")).startswith("sha256:")), "")
    JSONProgress(sys.stderr, quiet=True).show_all(messages)   # an error message raises
    for extra in tags[1:]:
        repo, tag = _split_ref(extra)
        client.post(f"/images/{quote_ref(image_id)}/tag", repo=repo, tag=tag or "latest")
    for tag in tags:
        print(f"Bootstrapped image: {tag}")
    print(image_id)
    return 0


# ---------------------------------------------------------------------------------------------
# registration

def _args_rmi(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="Force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="Do not delete untagged parents")


def _args_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--format", help="Format output using a custom template: 'json' or 'TEMPLATE'")


def _args_history(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-H", "--human", type=lambda v: v.lower() not in ("false", "0"), default=True, nargs="?",
                   const=True, help="Print sizes and dates in human readable format (default true)")
    p.add_argument("--format", help="Format output using a custom template: 'table', 'table TEMPLATE', "
                   "'json' or 'TEMPLATE'")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")


def _args_tag(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")


def _args_prune(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")


def _args_load(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="Read from tar archive file, instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress the load output")


def _args_save(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", help="Write to a file, instead of STDOUT")


def _args_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="file|URL|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-c", "--change", action="append", default=[], help="Apply Dockerfile instruction to the created "
                   "image")
    p.add_argument("-m", "--message", help="Set commit message for imported image")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")


def _args_pull(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")


def _args_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument("-a", "--all-tags", action="store_true", help="Push all tags of an image to the repository")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")


def _args_login(p: argparse.ArgumentParser) -> None:
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.add_argument("-u", "--username", help="Username")
    p.add_argument("-p", "--password", help="Password")
    p.add_argument("--password-stdin", action="store_true", help="Take the password from stdin")


def _args_logout(p: argparse.ArgumentParser) -> None:
    p.add_argument("server", nargs="?", metavar="SERVER")


def _args_bootstrap(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=tuple(_BOOTSTRAP), help="The base image: busybox (busybox-static) or debian (debootstrap)")
    p.add_argument("-t", "--tag", action="append", default=[], help="Name the image (default busybox:latest, "
                   "debian:bookworm and debian:latest)")


# (names, argument adder, handler, top-level name) of `sampan image COMMAND`
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
    image = sub.add_parser("image", help="Manage images", description="Manage images").add_subparsers(
        dest="image_command", metavar="COMMAND")
    for names, add_args, handler, top in _IMAGE_COMMANDS:
        for parent, name, aliases in ((image, names[0], names[1:]), (sub, top, [])):
            if name is None:
                continue
            p = parent.add_parser(name, aliases=aliases, help=help_of(handler), description=help_of(handler))
            add_args(p)
            p.set_defaults(func=verb(handler, name))
    for name, add_args, handler in (("login", _args_login, cmd_login), ("logout", _args_logout, cmd_logout)):
        p = sub.add_parser(name, help=help_of(handler), description=help_of(handler))
        add_args(p)
        p.set_defaults(func=verb(handler, name))
