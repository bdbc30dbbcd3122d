"""`sampand`: serve the Docker Engine API on a unix socket.

sampand --root R --exec-root E [--host unix://PATH] [--insecure-registry HOST]...
        [--add-runtime NAME=PATH]... [--default-runtime NAME] [--bridge none] [--bip CIDR]
        [--ipv6 [--fixed-cidr-v6 CIDR]] [--iptables=false] [--debug]
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

from .. import paths


def socket_path(host: str | None, exec_root: str) -> str:
    if not host:
        return paths.api_socket(exec_root)
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host.startswith("/"):
        return host
    raise SystemExit(f"sampand: only unix:// hosts are supported, not {host!r}")


def _make_engine(args: argparse.Namespace):
    from ..engine.containers import Engine
    return Engine(args.root, args.exec_root, reconcile=False, runtimes=args.add_runtime,
                  default_runtime=args.default_runtime, firewall=args.iptables,
                  default_bridge=args.bridge != "none", bridge_subnet=args.bip[0], bridge_gateway=args.bip[1],
                  ipv6=args.ipv6, bridge_subnet6=args.fixed_cidr_v6)


def _bool_option(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: expected true or false")


def _bip_option(value: str) -> tuple[str, str]:
    """--bip GATEWAY/PREFIX (dockerd's): the default bridge's address, so its subnet and gateway."""
    import ipaddress
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected an IPv4 address with a prefix, as 172.17.0.1/16") from None
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise argparse.ArgumentTypeError(f"{value!r}: the address must be a host address of its subnet")
    return str(iface.network), str(iface.ip)


def _runtime_option(value: str) -> tuple[str, dict]:
    """--add-runtime NAME=PATH, as dockerd takes it."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=PATH")
    return name, {"path": path}


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


def _hold(directory: str) -> int:
    """An exclusive lock on ``directory`` for this daemon's lifetime (the fd stays open). A
    second sampand on the same root or exec root must stop before it touches anything: its
    start-up reconcile would otherwise tear down the first one's networks and state."""
    import fcntl
    fd = os.open(os.path.join(directory, "sampand.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"sampand: another sampand is running on {directory}") from None
    return fd


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from .app import API
    path = socket_path(args.host, args.exec_root)
    os.makedirs(args.root, exist_ok=True)
    os.makedirs(args.exec_root, exist_ok=True)
    held = [_hold(args.root), _hold(args.exec_root)]  # noqa: F841 - held until the process exits
    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(None, _make_engine, args)
    await loop.run_in_executor(None, engine.reconcile)
    engine.net.warm()
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
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - exiting: what is left is reconciled at the next start
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sampand", description="The sampan Docker Engine API daemon.")
    p.add_argument("--root", default=paths.engine_root())
    p.add_argument("--exec-root", default=paths.exec_root())
    p.add_argument("-H", "--host", default=None, help="unix://PATH (default <exec-root>/sampan.sock)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]|CIDR",
                   help="a registry reached over plain HTTP or unchecked TLS (repeatable; loopback always is)")
    p.add_argument("--add-runtime", action="append", type=_runtime_option, default=[], metavar="NAME=PATH",
                   help="an OCI runtime containers can select with --runtime NAME (repeatable)")
    p.add_argument("--default-runtime", default="sampan", metavar="NAME",
                   help="the runtime of containers that select none (default: sampan, the built-in one)")
    p.add_argument("-b", "--bridge", default="", choices=["", "none"],
                   help="none: no default bridge network (containers get only lo unless they name a network)")
    p.add_argument("--bip", type=_bip_option, default=("", ""), metavar="CIDR",
                   help="the default bridge's address, as 172.17.0.1/16 (default: a subnet clear of the host's routes)")
    p.add_argument("--ipv6", action="store_true", help="the default bridge network has IPv6 too")
    p.add_argument("--fixed-cidr-v6", default="", metavar="CIDR",
                   help="the default bridge's IPv6 subnet (with --ipv6; default: a ULA /64)")
    p.add_argument("--iptables", type=_bool_option, default=True, metavar="BOOL",
                   help="false: leave the host's firewall alone (no NAT, no published ports)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    args.add_runtime = dict(args.add_runtime)
    from .. import errors
    from .image_service import registry_config
    try:
        registry_config(args.insecure_registry)
    except errors.Invalid as e:
        p.error(f"--insecure-registry: {e}")
    if args.fixed_cidr_v6 and not args.ipv6:
        p.error("--fixed-cidr-v6 needs --ipv6")
    if args.default_runtime != "sampan" and args.default_runtime not in args.add_runtime:
        p.error(f"--default-runtime {args.default_runtime}: no such runtime (add it with --add-runtime)")
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
