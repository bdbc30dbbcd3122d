"""`sampan`: docker's verbs. Each group of commands lives in its own module and registers
its subcommands here; the engine root comes from --root or $SAMPAN_ROOT."""
from __future__ import annotations

import argparse
import os
import platform
import sys

from .. import __version__

DEFAULT_ROOT = "/var/lib/sampan"


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"sampan version {__version__}\npython {platform.python_version()}\nkernel {platform.release()}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from ..runtime.cgroups import detect_mode
    rows = [
        ("Server Version", __version__),
        ("Root Dir", args.root),
        ("Kernel Version", platform.release()),
        ("Operating System", _os_name()),
        ("Architecture", platform.machine()),
        ("Cgroup Version", {"v1": "1", "v2": "2", "hybrid": "1 (hybrid)"}[detect_mode()]),
        ("Default Runtime", "sampan-runc"),
        ("CPUs", str(os.cpu_count())),
    ]
    for key, value in rows:
        print(f" {key}: {value}")
    return 0


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sampan", description="A container engine built from the Linux kernel up.")
    parser.add_argument("--root", default=os.environ.get("SAMPAN_ROOT", DEFAULT_ROOT),
                        help="engine state directory (default $SAMPAN_ROOT or /var/lib/sampan)")
    parser.add_argument("--exec-root", default=os.environ.get("SAMPAN_EXEC_ROOT", "/run/sampan"),
                        help="runtime state directory (default $SAMPAN_EXEC_ROOT or /run/sampan)")
    parser.add_argument("-H", "--host", default=os.environ.get("SAMPAN_HOST"),
                        help="daemon socket (unix://PATH; default <exec-root>/sampan.sock)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    system = sub.add_parser("system", help="manage sampan").add_subparsers(dest="system_command", metavar="COMMAND")
    from . import containers
    containers.register(sub)
    containers.register_system(sub, system)
    from . import images
    images.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 1
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one line and a non-zero exit, as docker does
        from ..runtime.errors import describe
        print(f"Error: {describe(e)}", file=sys.stderr)
        return 125


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
