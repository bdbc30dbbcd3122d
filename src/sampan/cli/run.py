"""The verbs that attach a terminal to a container or an exec: `run`, `create`, `start -a`,
`attach`, `exec`. `run` is the hot path of the CLI: it imports no more than it needs to
create, attach, start and wait (no argparse, re, json or rich)."""
from __future__ import annotations

import sys
import time

from .. import errors, fastjson
from .client import APIError, Client
from .command import CLIError, daemon_error, each, report_run_failure, start_exit_code
from .createflags import create_body, env_list
from .streams import RawTerminal, stream_output, watch_resize

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def _pull(client: Client, ns: argparse.Namespace) -> None:
    from .pull import pull
    pull(client, ns.image, ns.platform, sys.stderr)


def _create(client: Client, ns: argparse.Namespace) -> str:
    body = create_body(ns)
    query = {"name": ns.name} if ns.name else {}
    if ns.platform:
        query["platform"] = ns.platform
    if ns.pull == "always":
        _pull(client, ns)
    elif ns.pull not in ("missing", "never"):
        raise CLIError(f"invalid pull option: '{ns.pull}': must be one of \"always\", \"missing\" or \"never\"")
    try:
        res = client.call("POST", "/containers/create", query, body)
    except APIError as e:
        if e.status != 404 or "image" not in e.message.lower() or ns.pull == "never":
            raise
        print(f"Unable to find image '{ns.image}' locally", file=sys.stderr)
        _pull(client, ns)
        res = client.call("POST", "/containers/create", query, body)
    for w in res.get("Warnings") or []:
        print(f"WARNING: {w}", file=sys.stderr)
    return res["Id"]


def cmd_create(client: Client, ns: argparse.Namespace) -> int:
    print(_create(client, ns))
    return 0


def cmd_run(client: Client, ns: argparse.Namespace) -> int:
    cid = _create(client, ns)
    if ns.detach:
        try:
            client.post(f"/containers/{cid}/start")
        except APIError as e:
            report_run_failure(daemon_error(e.message))
            return start_exit_code(e.message)
        print(cid)
        return 0
    # As the docker CLI does: attach and wait (both sent at once; the wait's headers come back
    # before the start, so the exit cannot be missed; with --rm until the container is
    # removed), then start, then stream.
    attaching = client.hijack_send(f"/containers/{cid}/attach",
                                   {"stream": 1, "stdin": 1 if ns.interactive else 0, "stdout": 1, "stderr": 1})
    try:
        waiting = client.send("POST", f"/containers/{cid}/wait", {"condition": "removed" if ns.rm else "next-exit"})
    except BaseException:
        attaching.close()
        raise
    try:
        sock, first = client.hijacked(attaching)
    except BaseException:
        waiting.close()
        raise
    wait = None
    try:
        wait = client.response(waiting, "POST")
    except APIError as e:
        if e.status != 404:
            sock.close()
            raise
    try:
        client.post(f"/containers/{cid}/start")
    except APIError as e:
        sock.close()
        if wait is not None:
            wait.close()
        report_run_failure(daemon_error(e.message))
        if ns.rm:
            try:
                client.delete(f"/containers/{cid}", force=1)
            except APIError:
                pass
        return start_exit_code(e.message)
    if ns.tty:
        watch_resize(client, f"/containers/{cid}/resize")
    with RawTerminal(ns.tty and ns.interactive):
        try:
            stream_output(sock, first, ns.tty, ns.interactive)
        finally:
            sock.close()
    if wait is None:
        return 0
    try:
        result = fastjson.loads(wait.read() or b"{}")
    except APIError as e:
        if e.status == 404:
            return 0
        raise
    if result.get("Error") and result["Error"].get("Message"):
        print(f"sampan: {result['Error']['Message']}", file=sys.stderr)
    return int(result.get("StatusCode", 0))


def cmd_start(client: Client, ns: argparse.Namespace) -> int:
    if not (ns.attach or ns.interactive):
        return each(ns.containers, lambda c: client.post(f"/containers/{c}/start"))
    c = ns.containers[0]
    info = client.get(f"/containers/{c}/json")
    tty = bool(info["Config"].get("Tty"))
    sock, first = client.hijack(f"/containers/{c}/attach",
                                {"stream": 1, "stdin": 1 if ns.interactive else 0, "stdout": 1, "stderr": 1})
    try:
        client.post(f"/containers/{c}/start")
    except APIError as e:
        sock.close()
        print(daemon_error(e.message), file=sys.stderr)
        return start_exit_code(e.message)
    with RawTerminal(tty and ns.interactive):
        stream_output(sock, first, tty, ns.interactive)
    sock.close()
    try:
        return int(client.post(f"/containers/{c}/wait")["StatusCode"])
    except APIError:
        return 0


def cmd_exec(client: Client, ns: argparse.Namespace) -> int:
    body: dict[str, Any] = {"Cmd": ns.command, "Tty": ns.tty, "AttachStdin": ns.interactive and not ns.detach,
                            "AttachStdout": not ns.detach, "AttachStderr": not ns.detach,
                            "Env": env_list(ns.env) or None, "Privileged": ns.privileged}
    if ns.workdir:
        body["WorkingDir"] = ns.workdir
    if ns.user:
        body["User"] = ns.user
    if not ns.command:
        raise CLIError("exec requires at least 2 arguments", 1)
    if ns.tty:
        try:
            size = os.get_terminal_size(sys.stdout.fileno())
            body["ConsoleSize"] = [size.lines, size.columns]
        except OSError:
            pass
    eid = client.post(f"/containers/{ns.container}/exec", body)["Id"]
    if ns.detach:
        client.post(f"/exec/{eid}/start", {"Detach": True, "Tty": ns.tty})
        return 0
    try:
        sock, first = client.hijack(f"/exec/{eid}/start", None, {"Detach": False, "Tty": ns.tty})
    except APIError as e:
        print(daemon_error(e.message), file=sys.stderr)
        return start_exit_code(e.message) if e.status >= 500 else errors.CLI_EXIT_FAILURE
    if ns.tty:
        watch_resize(client, f"/exec/{eid}/resize")
    with RawTerminal(ns.tty and ns.interactive):
        stream_output(sock, first, ns.tty, ns.interactive)
    sock.close()
    for _ in range(200):
        info = client.get(f"/exec/{eid}/json")
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        time.sleep(0.025)
    return 0


def cmd_attach(client: Client, ns: argparse.Namespace) -> int:
    c = ns.container
    info = client.get(f"/containers/{c}/json")
    tty = bool(info["Config"].get("Tty"))
    stdin = not ns.no_stdin and bool(info["Config"].get("OpenStdin"))
    sock, first = client.hijack(f"/containers/{c}/attach", {"stream": 1, "stdin": 1 if stdin else 0,
                                                             "stdout": 1, "stderr": 1})
    with RawTerminal(tty and stdin):
        stream_output(sock, first, tty, stdin)
    sock.close()
    try:
        return int(client.get(f"/containers/{c}/json")["State"]["ExitCode"])
    except APIError:
        return 0
