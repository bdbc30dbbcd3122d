"""`sampand`: serve the Docker Engine API on a unix socket.

sampand --root R --exec-root E [--host unix://PATH] [--insecure-registry HOST]... [--debug]
Writes <exec_root>/sampand.pid, reconciles the engine on start, removes its socket on exit.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

DEFAULT_ROOT = "/var/lib/sampan"
DEFAULT_EXEC_ROOT = "/run/sampan"


def socket_path(host: str | None, exec_root: str) -> str:
    if not host:
        return os.path.join(exec_root, "sampan.sock")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host.startswith("/"):
        return host
    raise SystemExit(f"sampand: only unix:// hosts are supported, not {host!r}")


def _make_engine(root: str, exec_root: str):
    try:
        from ..engine import containers  # noqa: F401
    except ImportError as e:
        logging.getLogger("sampand").warning("engine not available: %s", e)
        return None
    from ..engine.containers import Engine
    return Engine(root, exec_root, reconcile=False)


def _bind(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # a stale socket (a killed daemon) is replaced; a live one means another daemon
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        probe.close()
        raise SystemExit(f"sampand: another daemon is listening on {path}")
    except (FileNotFoundError, ConnectionRefusedError):
        probe.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    s.bind(tmp)
    os.chmod(tmp, 0o660)
    s.listen(512)
    os.rename(tmp, path)  # atomically: clients never see a socket that refuses
    return s


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from .app import API
    path = socket_path(args.host, args.exec_root)
    os.makedirs(args.root, exist_ok=True)
    os.makedirs(args.exec_root, exist_ok=True)
    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(None, _make_engine, args.root, args.exec_root)
    if engine is not None and hasattr(engine, "reconcile"):
        await loop.run_in_executor(None, engine.reconcile)
    api = API(engine, args.root, args.exec_root, insecure_registries=args.insecure_registry)
    app = api.app()
    runner = web.AppRunner(app, access_log=logging.getLogger("sampand.access") if args.debug else None,
                           handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    sock = _bind(path)
    sock_ino = os.stat(path).st_ino
    site = web.SockSite(runner, sock)
    await site.start()
    pidfile = os.path.join(args.exec_root, "sampand.pid")
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(pidfile + ".tmp", pidfile)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("sampand").info("listening on unix://%s (root %s, exec root %s)", path, args.root,
                                      args.exec_root)
    try:
        await stop.wait()
    finally:
        try:
            if os.stat(path).st_ino == sock_ino:
                os.unlink(path)
        except OSError:
            pass
        try:
            with open(pidfile) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(pidfile)
        except OSError:
            pass
        api.stop_streams()
        try:
            await asyncio.wait_for(runner.cleanup(), 5)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001
            pass
        api.close()
        if engine is not None and hasattr(engine, "close"):
            try:
                engine.close()
            except Exception:  # noqa: BLE001
                pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sampand", description="The sampan Docker Engine API daemon.")
    p.add_argument("--root", default=os.environ.get("SAMPAN_ROOT", DEFAULT_ROOT))
    p.add_argument("--exec-root", default=os.environ.get("SAMPAN_EXEC_ROOT", DEFAULT_EXEC_ROOT))
    p.add_argument("-H", "--host", default=None, help="unix://PATH (default <exec-root>/sampan.sock)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]|CIDR",
                   help="a registry reached over plain HTTP or unchecked TLS (repeatable; loopback always is)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    args.root = os.path.abspath(args.root)
    args.exec_root = os.path.abspath(args.exec_root)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
