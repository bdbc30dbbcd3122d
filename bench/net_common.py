"""What the networking benchmarks (bench/net_run.py, net_http.py, net_ports.py) share: both
private daemons with their default networking, each in its own network namespace (dockerd with
docker0, its iptables rules and userland proxy; sampand with sampan0 and its nftables table),
commands timed in interleaved rounds, and the table the benches print.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Callable, TypeVar

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _daemons import SAMPAN_CLI, start_both  # noqa: E402
from engine_run import summary  # noqa: E402
from private_daemons import Dockerd, Sampand  # noqa: E402 - on sys.path through _daemons

# dockerd's bridge inside its own namespace (sampand's default network picks its own subnet there)
DOCKER_BIP = "10.254.254.1/24"


def arguments(doc: str, rounds: int) -> argparse.ArgumentParser:
    """The options every networking bench has: --rounds, --sampan, --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds, help=f"measured rounds (default {rounds})")
    parser.add_argument("--sampan", default=SAMPAN_CLI, help=f"the sampan CLI (default {SAMPAN_CLI})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser


def start_networked() -> tuple[Dockerd, Sampand]:
    """Both daemons up with their default networking, busybox:local in both."""
    return start_both(docker_bridge=DOCKER_BIP)


def timed_output(argv: list[str], env: dict) -> tuple[float, str]:
    """Seconds from exec to exit of argv, and its stdout; a non-zero exit raises."""
    t0 = time.perf_counter()
    cp = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if cp.returncode != 0:
        raise RuntimeError(f"{argv}: exit {cp.returncode}\nstdout: {cp.stdout[-2000:]!r}\nstderr: {cp.stderr!r}")
    return elapsed, cp.stdout.decode(errors="replace")


Sample = TypeVar("Sample")


def interleaved(measures: dict[str, Callable[[], Sample]], rounds: int, warmup: int = 0) -> dict[str, list[Sample]]:
    """Each measure once per round (unmeasured warm-up rounds first); the order rotates from
    round to round so that no measure always follows the same one."""
    for _ in range(warmup):
        for measure in measures.values():
            measure()
    samples: dict[str, list[Sample]] = {name: [] for name in measures}
    order = list(measures)
    for i in range(rounds):
        shift = i % len(order)
        for name in order[shift:] + order[:shift]:
            samples[name].append(measures[name]())
    return samples


def figures_of(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """The median, p90, min and max (ms) of each row of samples (seconds)."""
    return {name: summary(s) for name, s in samples.items()}


def print_ms_table(title: str, figures: dict[str, dict[str, float]]) -> None:
    """Prints figures_of's rows as bench/engine_run.py does."""
    print(title)
    width = max(len(name) for name in figures)
    print(f"{'':{width}} {'median':>9} {'p90':>9} {'min':>9} {'max':>9}")
    for name, r in figures.items():
        print(f"{name:{width}} {r['median_ms']:7.1f}ms {r['p90_ms']:7.1f}ms {r['min_ms']:7.1f}ms {r['max_ms']:7.1f}ms")


def goal(met: bool) -> str:
    return "met" if met else "NOT met"
