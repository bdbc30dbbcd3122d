#!/usr/bin/env python3
"""`sampan run --rm busybox true` against `docker run --rm busybox true`, both `--network none`.

A private dockerd and a private sampand are started first (each in its own temporary
directory; see bench/_daemons.py) and the same busybox image is loaded in both (`docker
import` of .cache/images/busybox, then `docker save | sampan load`). Both daemons are warm:
one unmeasured run each, then N rounds, each running the two CLIs once, interleaved (the
order alternates per round; --pause sleeps after each run). The time is the CLI's, from
exec to exit (exit code 0 checked).
Prints the median, p90 and min per engine and the ratio sampan/docker of the medians. Run as
root:

    .venv/bin/python bench/engine_run.py [--rounds 20] [--warmup 2] [--pause S] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _daemons import DOCKER_CLI, IMAGE, SAMPAN_CLI, start_both, stop_both  # noqa: E402


def timed(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    cp = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if cp.returncode != 0 or cp.stdout:
        raise RuntimeError(f"{argv}: exit {cp.returncode}\nstdout: {cp.stdout!r}\nstderr: {cp.stderr!r}")
    return elapsed


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2), "p90_ms": round(p90, 2),
            "min_ms": round(ms[0], 2), "max_ms": round(ms[-1], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds to sleep after each run (default 0)")
    parser.add_argument("--sampan", default=SAMPAN_CLI, help=f"the sampan CLI (default {SAMPAN_CLI})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    dockerd = sampand = None
    try:
        dockerd, sampand = start_both()
        cmds = {
            "sampan": ([args.sampan, "run", "--rm", "--network", "none", IMAGE, "true"], sampand.env),
            "docker": ([DOCKER_CLI, "run", "--rm", "--network", "none", IMAGE, "true"], dockerd.env),
        }
        for _ in range(args.warmup):
            for argv, env in cmds.values():
                timed(argv, env)
        samples: dict[str, list[float]] = {k: [] for k in cmds}
        order = list(cmds)
        for i in range(args.rounds):
            for name in (order if i % 2 == 0 else order[::-1]):
                argv, env = cmds[name]
                samples[name].append(timed(argv, env))
                if args.pause:
                    time.sleep(args.pause)
        left = {"sampan": sampand.sampan("ps", "-aq").stdout.split(), "docker": dockerd.docker("ps", "-aq").stdout.split()}
        if any(left.values()):
            raise RuntimeError(f"containers left after --rm: {left}")
    finally:
        stop_both(dockerd, sampand)

    result = {name: summary(s) for name, s in samples.items()}
    result["ratio_median"] = round(result["sampan"]["median_ms"] / result["docker"]["median_ms"], 3)
    result["ratio_p90"] = round(result["sampan"]["p90_ms"] / result["docker"]["p90_ms"], 3)
    result["rounds"] = args.rounds
    result["pause_s"] = args.pause
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"run --rm --network none {IMAGE} true, {args.rounds} interleaved rounds (warm daemons"
              + (f", {args.pause:g} s pause after each run)" if args.pause else ")"))
        print(f"{'engine':8} {'median':>9} {'p90':>9} {'min':>9} {'max':>9}")
        for name in ("sampan", "docker"):
            r = result[name]
            print(f"{name:8} {r['median_ms']:7.1f}ms {r['p90_ms']:7.1f}ms {r['min_ms']:7.1f}ms {r['max_ms']:7.1f}ms")
        print(f"sampan/docker: {result['ratio_median']:.3f}x (median), {result['ratio_p90']:.3f}x (p90); "
              f"goal <= 0.15x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
