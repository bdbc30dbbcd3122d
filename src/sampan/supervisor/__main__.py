"""sampan-supervisor --root R --exec-root E: serve the containers of one engine root."""
from __future__ import annotations

import os
import sys


def entry(argv: list[str] | None = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(prog="sampan-supervisor", description=__doc__)
    parser.add_argument("--root", default=os.environ.get("SAMPAN_ROOT", "/var/lib/sampan"))
    parser.add_argument("--exec-root", default=os.environ.get("SAMPAN_EXEC_ROOT", "/run/sampan"))
    args = parser.parse_args(argv)
    from .client import _lock_exclusive
    lock = _lock_exclusive(args.exec_root)
    if lock is None:
        print("sampan-supervisor: another supervisor serves " + args.exec_root, file=sys.stderr)
        sys.exit(0)
    from .server import main
    sys.exit(main(args.root, args.exec_root))


if __name__ == "__main__":
    entry()
