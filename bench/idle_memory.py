#!/usr/bin/env python3
"""Host memory per idle container: 50 `sleep 100000` containers under sampan and under docker.

A private dockerd and a private sampand are started (bench/_daemons.py), the same busybox
image loaded in both, and each engine runs one throw-away container first (so the supervisor
exists and is warm). Then N containers are started with `run -d --network none IMAGE sleep
100000` in each engine, and the memory of the engine's per-container processes is read from
/proc/<pid>/smaps_rollup (RSS and PSS):

  docker: the containerd-shim-runc-v2 processes (one per container), all of them;
  sampan: the supervisor's growth (its memory with the N containers minus before them);
          sampan has no per-container process besides the container's own.

Per container = that total / N. The container processes themselves (sleep) are the same in
both and not counted; the daemons' own growth (dockerd + containerd, sampand) is shown for
information. Everything is removed afterwards. Run as root:

    .venv/bin/python bench/idle_memory.py [--containers 50] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _daemons import IMAGE, start_both, stop_both  # noqa: E402

KIB = 1024


def rollup(pid: int) -> dict[str, int]:
    """Rss and Pss of a process in bytes (0 for a process that is gone)."""
    out = {"rss": 0, "pss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    out[key.lower()] = int(rest.split()[0]) * KIB
    except OSError:
        pass
    return out


def total(pids: list[int]) -> dict[str, int]:
    t = {"rss": 0, "pss": 0}
    for p in pids:
        r = rollup(p)
        t["rss"] += r["rss"]
        t["pss"] += r["pss"]
    return t


def pid_of(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def children_named(name: bytes, under: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if cmd and os.path.basename(cmd[0]) == name and any(under.encode() in c for c in cmd):
                out.append(int(p))
    return out


def settle() -> None:
    time.sleep(2.0)


def mib(n: float) -> float:
    return round(n / (1024 * 1024), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=50, help="idle containers per engine (default 50)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    n = args.containers

    dockerd = sampand = None
    result: dict = {"containers": n}
    try:
        dockerd, sampand = start_both()
        run = ["run", "-d", "--network", "none", IMAGE, "sleep", "100000"]
        # one throw-away container each: the supervisor starts, both paths are warm
        sampand.sampan("run", "--rm", "--network", "none", IMAGE, "true", check=True)
        dockerd.docker("run", "--rm", "--network", "none", IMAGE, "true")
        settle()

        sup = sampand.supervisor_pid()
        if not sup:
            raise RuntimeError("the sampan supervisor is not running")
        sampand_pid = sampand.proc.pid
        dockerd_pid = dockerd.proc.pid
        containerd = children_named(b"containerd", dockerd.tmp)
        before = {"supervisor": rollup(sup), "sampand": rollup(sampand_pid),
                  "dockerd": total([dockerd_pid] + containerd)}
        if dockerd.shim_pids():
            raise RuntimeError(f"containerd shims before the containers: {dockerd.shim_pids()}")

        t0 = time.monotonic()
        for _ in range(n):
            sampand.sampan(*run, check=True)
        t_sampan = time.monotonic() - t0
        t0 = time.monotonic()
        for _ in range(n):
            dockerd.docker(*run)
        t_docker = time.monotonic() - t0
        settle()

        running = {"sampan": len(sampand.sampan("ps", "-q").stdout.split()),
                   "docker": len(dockerd.docker("ps", "-q").stdout.split())}
        if running != {"sampan": n, "docker": n}:
            raise RuntimeError(f"not all containers are running: {running}")
        shims = dockerd.shim_pids()
        after = {"supervisor": rollup(sup), "sampand": rollup(sampand_pid),
                 "dockerd": total([dockerd_pid] + containerd), "shims": total(shims)}

        sampan_growth = {k: after["supervisor"][k] - before["supervisor"][k] for k in ("rss", "pss")}
        sampand_growth = {k: after["sampand"][k] - before["sampand"][k] for k in ("rss", "pss")}
        dockerd_growth = {k: after["dockerd"][k] - before["dockerd"][k] for k in ("rss", "pss")}
        result["sampan"] = {
            "per_container_pss_mib": mib(sampan_growth["pss"] / n),
            "per_container_rss_mib": mib(sampan_growth["rss"] / n),
            "all_processes_per_container_pss_mib": mib((sampan_growth["pss"] + sampand_growth["pss"]) / n),
            "supervisor_before_pss_mib": mib(before["supervisor"]["pss"]),
            "supervisor_after_pss_mib": mib(after["supervisor"]["pss"]),
            "sampand_growth_rss_mib": mib(sampand_growth["rss"]),
            "start_seconds": round(t_sampan, 2),
        }
        result["docker"] = {
            "per_container_pss_mib": mib(after["shims"]["pss"] / n),
            "per_container_rss_mib": mib(after["shims"]["rss"] / n),
            "shims": len(shims),
            "all_processes_per_container_pss_mib": mib((after["shims"]["pss"] + dockerd_growth["pss"]) / n),
            "dockerd_containerd_growth_rss_mib": mib(dockerd_growth["rss"]),
            "start_seconds": round(t_docker, 2),
        }
        result["ratio_pss"] = round(result["sampan"]["per_container_pss_mib"] /
                                    result["docker"]["per_container_pss_mib"], 3)
        result["ratio_rss"] = round(result["sampan"]["per_container_rss_mib"] /
                                    result["docker"]["per_container_rss_mib"], 3)
    finally:
        stop_both(dockerd, sampand)

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        s, d = result["sampan"], result["docker"]
        print(f"host memory per idle container ({n} x `sleep 100000`, --network none)")
        print(f"{'':8} {'PSS/container':>14} {'RSS/container':>14}")
        print(f"{'sampan':8} {s['per_container_pss_mib']:11.3f}MiB {s['per_container_rss_mib']:11.3f}MiB"
              f"   (supervisor growth; PSS {s['supervisor_before_pss_mib']:.1f} -> "
              f"{s['supervisor_after_pss_mib']:.1f} MiB)")
        print(f"{'docker':8} {d['per_container_pss_mib']:11.3f}MiB {d['per_container_rss_mib']:11.3f}MiB"
              f"   ({d['shims']} containerd-shim-runc-v2)")
        print(f"sampan/docker: {result['ratio_pss']:.3f}x (PSS), {result['ratio_rss']:.3f}x (RSS); "
              f"goal <= 1 MiB per container for sampan")
        print(f"with the daemons' growth (sampan: supervisor + sampand; docker: shims + dockerd + containerd), "
              f"PSS per container: sampan {s['all_processes_per_container_pss_mib']:.3f} MiB, "
              f"docker {d['all_processes_per_container_pss_mib']:.3f} MiB")
        print(f"for information: sampand grew {s['sampand_growth_rss_mib']:.2f} MiB RSS, dockerd+containerd "
              f"{d['dockerd_containerd_growth_rss_mib']:.2f} MiB; {n} starts took {s['start_seconds']}s "
              f"(sampan) and {d['start_seconds']}s (docker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
