#!/usr/bin/env python3
"""`sampan run --rm busybox true` against `docker run --rm busybox true` on each engine's
default bridge network, and what that networking adds over `--network none`.

A private dockerd (docker0 on 10.254.254.1/24, its iptables rules and userland proxy) and a
private sampand (its default network `bridge` on sampan0), each in a network namespace of its
own (bench/net_common.py), the same busybox image in both. Both daemons warm: unmeasured runs
first, then N rounds, each running the four commands (sampan and docker, bridge and none) once,
in an order that rotates from round to round. The time is the CLI's, from exec to exit.
Prints the median, p90, min and max of each, the ratio sampan/docker on the bridge (goal
<= 0.15x), and per engine what the bridge adds: the median of each round's bridge minus none
(goal <= 10 ms for sampan). Run as root:

    .venv/bin/python bench/net_run.py [--rounds 20] [--warmup 2] [--json]
"""
from __future__ import annotations

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _daemons import DOCKER_CLI, IMAGE, stop_both  # noqa: E402
from net_common import (arguments, figures_of, goal, interleaved, print_ms_table, start_networked,  # noqa: E402
                        timed_output)


def main() -> int:
    parser = arguments(__doc__, rounds=20)
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    args = parser.parse_args()

    dockerd = sampand = None
    try:
        dockerd, sampand = start_networked()
        clis = {"sampan": ([args.sampan], sampand.env), "docker": ([DOCKER_CLI], dockerd.env)}

        def measure(engine: str, network: list[str]):
            cli, env = clis[engine]
            return lambda: timed_output([*cli, "run", "--rm", *network, IMAGE, "true"], env)[0]

        networks = {"bridge": [], "none": ["--network", "none"]}
        samples = interleaved({f"{engine} {label}": measure(engine, network)
                               for engine in clis for label, network in networks.items()}, args.rounds, args.warmup)
        left = {"sampan": sampand.sampan("ps", "-aq").stdout.split(),
                "docker": dockerd.docker("ps", "-aq").stdout.split()}
        if any(left.values()):
            raise RuntimeError(f"containers left after --rm: {left}")
    finally:
        stop_both(dockerd, sampand)

    result: dict = {"rounds": args.rounds, **figures_of(samples)}
    medians = {name: result[name]["median_ms"] for name in samples}
    result["ratio_bridge_median"] = round(medians["sampan bridge"] / medians["docker bridge"], 3)
    result["ratio_none_median"] = round(medians["sampan none"] / medians["docker none"], 3)
    for engine in ("sampan", "docker"):
        added = [(b - n) * 1000 for b, n in zip(samples[f"{engine} bridge"], samples[f"{engine} none"])]
        result[f"{engine}_bridge_added_ms"] = round(statistics.median(added), 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print_ms_table(f"run --rm {IMAGE} true, {args.rounds} rounds (warm daemons, rotating order)",
                   {name: result[name] for name in samples})
    print(f"sampan/docker on the bridge: {result['ratio_bridge_median']:.3f}x (median); goal <= 0.15x: "
          f"{goal(result['ratio_bridge_median'] <= 0.15)}")
    print(f"sampan/docker with --network none: {result['ratio_none_median']:.3f}x (median)")
    print(f"the bridge adds (median of per-round bridge - none): sampan {result['sampan_bridge_added_ms']:.1f} ms, "
          f"docker {result['docker_bridge_added_ms']:.1f} ms; goal <= 10 ms for sampan: "
          f"{goal(result['sampan_bridge_added_ms'] <= 10)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
