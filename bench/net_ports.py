#!/usr/bin/env python3
"""Publishing a range of 1,000 ports (`-p 20000-20999:20000-20999`): `run -d` to running,
then `ps` and `inspect` of that container, sampan against docker, and the processes each
engine starts for it.

A private dockerd (its default bridge; it starts a docker-proxy per port and address family)
and a private sampand (the kernel's DNAT: one nftables element for the range), each in a
network namespace of its own (bench/net_common.py), each warmed by one `run --rm` (sampan's
supervisor starts with the first container). A round, for each engine in turn (the order
alternates; no unmeasured round: docker's takes ~2 min): `run -d -p RANGE busybox sleep`,
the container checked running with every port in NetworkSettings.Ports, the processes added
in the daemon's network namespace counted, `ps` and `inspect` timed (sampan's also from the
docker CLI), then `rm -f` (timed, not a goal). Prints the medians and the ratios
sampan/docker (goal <= 0.1x each) and the processes added (goal: none for sampan; docker's
are its proxies and the container's shim). Run as root:

    .venv/bin/python bench/net_ports.py [--rounds 3] [--json]
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _daemons import DOCKER_CLI, IMAGE, stop_both  # noqa: E402
from net_common import (arguments, figures_of, goal, interleaved, print_ms_table, start_networked,  # noqa: E402
                        timed_output)

FIRST, LAST = 20000, 20999
PORTS = LAST - FIRST + 1
STEPS = ("run", "ps", "inspect", "rm")
# sampan's ps and inspect again from the docker CLI (Go): the daemon's part without the start of
# sampan's CLI (a Python interpreter)
THROUGH_DOCKER_CLI = {"ps, docker CLI": "ps", "inspect, docker CLI": "inspect"}


def processes_in(netns: str) -> set[int]:
    """The processes whose network namespace is netns (a /proc/PID/ns/net path or a namespace file)."""
    want = os.stat(netns).st_ino
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == want:
                found.add(int(pid))
        except OSError:
            pass  # gone meanwhile
    return found


def publish_round(cli: str, env: dict, netns: str, docker_cli_too: bool) -> dict[str, float]:
    """One round's seconds per step, and the processes the published container added."""
    before = processes_in(netns)
    times: dict[str, float] = {}
    times["run"], out = timed_output([cli, "run", "-d", "-p", f"{FIRST}-{LAST}:{FIRST}-{LAST}", IMAGE,
                                      "sleep", "3600"], env)
    cid = out.strip()
    added = len(processes_in(netns) - before)
    times["ps"], _ = timed_output([cli, "ps"], env)
    times["inspect"], out = timed_output([cli, "inspect", cid], env)
    state = json.loads(out)[0]
    published = {port for port, bindings in (state["NetworkSettings"]["Ports"] or {}).items() if bindings}
    if not state["State"]["Running"] or len(published) != PORTS:
        raise RuntimeError(f"{cli}: container {cid[:12]} running={state['State']['Running']}, "
                           f"{len(published)} of {PORTS} ports published")
    if docker_cli_too:
        times["ps, docker CLI"], _ = timed_output([DOCKER_CLI, "ps"], env)
        times["inspect, docker CLI"], _ = timed_output([DOCKER_CLI, "inspect", cid], env)
    times["rm"], _ = timed_output([cli, "rm", "-f", cid], env)
    return {**times, "processes": added}


def main() -> int:
    parser = arguments(__doc__, rounds=3)
    args = parser.parse_args()

    dockerd = sampand = None
    try:
        dockerd, sampand = start_networked()
        engines = {"sampan": (args.sampan, sampand.env, sampand.netns, True),
                   "docker": (DOCKER_CLI, dockerd.env, dockerd.netns, False)}
        for cli, env, _, _ in engines.values():
            timed_output([cli, "run", "--rm", IMAGE, "true"], env)
        rounds = interleaved({engine: (lambda e=engine: publish_round(*engines[e])) for engine in engines}, args.rounds)
    finally:
        stop_both(dockerd, sampand)

    figures = figures_of({f"{engine} {step}": [r[step] for r in rs]
                          for engine, rs in rounds.items() for step in rs[0] if step != "processes"})
    result: dict = {"rounds": args.rounds, "ports": PORTS, **figures}
    compared = {step: step for step in STEPS} | THROUGH_DOCKER_CLI  # sampan's step: docker's
    for step, docker_step in compared.items():
        result[f"ratio_{step}_median"] = round(figures[f"sampan {step}"]["median_ms"]
                                               / figures[f"docker {docker_step}"]["median_ms"], 3)
    for engine, rs in rounds.items():
        result[f"{engine}_processes_added"] = max(r["processes"] for r in rs)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print_ms_table(f"-p {FIRST}-{LAST}:{FIRST}-{LAST} ({PORTS} ports), {args.rounds} rounds (alternating order)",
                   figures)
    for step, docker_step in compared.items():
        target = f"; goal <= 0.1x: {goal(result[f'ratio_{step}_median'] <= 0.1)}" if step != "rm" else ""
        print(f"sampan {step} / docker {docker_step}: {result[f'ratio_{step}_median']:.3f}x (median){target}")
    sampan_added, docker_added = result["sampan_processes_added"], result["docker_processes_added"]
    print(f"processes added in the daemon's namespace by the published container: sampan {sampan_added}, "
          f"docker {docker_added} ({docker_added / PORTS:.1f} per port); none for sampan: {goal(sampan_added == 0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
