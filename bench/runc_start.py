#!/usr/bin/env python3
"""Container start-to-exit time: `sampan-runc run` against `runc run` on one busybox bundle.

Each round runs `true` once with each runtime, interleaved (sampan, runc, sampan, ...),
each run with a fresh container id and its own --root, deleted afterwards. With
--default-root each runtime keeps its own default state root (runc /run/runc, sampan-runc
/run/sampan-runc) across the rounds, as on a host where it is installed; only the
containers made here are deleted. Prints the median and p90 of the wall time per runtime,
the median CPU time (user+system of the runtime and every process it reaped: less noisy
than wall time on a busy machine) and the ratios sampan/runc. Run as root:

    .venv/bin/python bench/runc_start.py [--rounds 30] [--default-root] [--sampan BIN] [--runc BIN]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_rootfs() -> Path:
    return Path(os.environ.get("SAMPAN_TEST_IMAGES", REPO / ".cache" / "images")) / "busybox"


def make_bundle(runc: str, rootfs: Path, bundle: Path) -> None:
    """runc's default spec (new pid/net/ipc/uts/mount namespaces, read-only root), running
    `true` without a terminal, on a copy of the busybox rootfs."""
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    subprocess.run([runc, "spec"], cwd=bundle, check=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    config_path.write_text(json.dumps(config, indent=2))


def run_once(binary: str, bundle: Path, state_root: Path | None, cid: str) -> tuple[float, float, str | None]:
    """Wall and CPU seconds taken by `BIN [--root R] run --bundle B ID`, and an error message
    or None. Without a state root the runtime uses its default one, which is kept."""
    root_args = ["--root", str(state_root)] if state_root else []
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary, *root_args, "run", "--bundle", str(bundle), cid],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read().decode(errors="replace").strip()[-500:]
    subprocess.run([binary, *root_args, "delete", "--force", cid],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if state_root:
        shutil.rmtree(state_root, ignore_errors=True)
    if proc.returncode != 0:
        return elapsed, 0.0, f"exit {proc.returncode}: {message}"
    return elapsed, usage.ru_utime + usage.ru_stime, None


def summary(samples: list[float], cpu: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
    return {"n": len(ms), "median_ms": statistics.median(ms), "p90_ms": p90, "min_ms": ms[0], "max_ms": ms[-1],
            "cpu_median_ms": statistics.median(c * 1000 for c in cpu)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--sampan", default=shutil.which("sampan-runc") or "/usr/local/bin/sampan-runc",
                        help="the sampan runtime binary (default: sampan-runc on PATH)")
    parser.add_argument("--runc", default=shutil.which("runc") or "/usr/sbin/runc",
                        help="the reference runtime binary (default: runc on PATH)")
    parser.add_argument("--rootfs", type=Path, default=default_rootfs(), help="busybox rootfs directory")
    parser.add_argument("--default-root", action="store_true",
                        help="run each runtime with its own default --root (/run/runc, /run/sampan-runc)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    if os.geteuid() != 0:
        parser.error("run as root")
    if not (args.rootfs / "bin" / "busybox").exists():
        parser.error(f"no busybox rootfs at {args.rootfs} (run scripts/build-images.sh)")
    runtimes = {"sampan": args.sampan, "runc": args.runc}
    for name, binary in runtimes.items():
        if not os.access(binary, os.X_OK):
            parser.error(f"--{name} {binary}: not an executable")

    samples: dict[str, list[float]] = {name: [] for name in runtimes}
    cpu: dict[str, list[float]] = {name: [] for name in runtimes}
    errors: dict[str, list[str]] = {name: [] for name in runtimes}
    with tempfile.TemporaryDirectory(prefix="sampan-bench-") as tmp:
        bundle = Path(tmp, "bundle")
        bundle.mkdir()
        make_bundle(args.runc, args.rootfs, bundle)
        for rnd in range(args.warmup + args.rounds):
            for name, binary in runtimes.items():
                cid = f"bench-{name}-{os.getpid()}-{rnd}"
                state_root = None if args.default_root else Path(tmp, f"root-{name}-{rnd}")
                elapsed, cpu_time, err = run_once(binary, bundle, state_root, cid)
                if err:
                    errors[name].append(err)
                elif rnd >= args.warmup:
                    samples[name].append(elapsed)
                    cpu[name].append(cpu_time)

    results = {name: summary(s, cpu[name]) if s else None for name, s in samples.items()}
    for name, errs in errors.items():
        if errs:
            print(f"{name} ({runtimes[name]}): {len(errs)} failed runs; first: {errs[0]}", file=sys.stderr)
    ratio = None
    if results["sampan"] and results["runc"]:
        ratio = {k: results["sampan"][k] / results["runc"][k] for k in ("median_ms", "p90_ms", "cpu_median_ms")}

    if args.json:
        print(json.dumps({"runtimes": runtimes, "rounds": args.rounds, "default_root": args.default_root,
                          "results": results,
                          "ratio_sampan_over_runc": ratio}, indent=2))
    else:
        roots = "each runtime's default --root" if args.default_root else "a fresh --root per run"
        print(f"{args.rounds} rounds, `true` in busybox, interleaved, {roots}; times are `run` start to exit")
        print(f"{'runtime':<8} {'n':>3} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'max ms':>8} {'cpu ms':>7}  binary")
        for name, r in results.items():
            if r:
                print(f"{name:<8} {r['n']:>3} {r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} "
                      f"{r['min_ms']:>8.1f} {r['max_ms']:>8.1f} {r['cpu_median_ms']:>7.1f}  {runtimes[name]}")
            else:
                print(f"{name:<8}   0 {'-':>10} {'-':>8} {'-':>8} {'-':>8} {'-':>7}  {runtimes[name]}")
        if ratio:
            print(f"sampan/runc: median x{ratio['median_ms']:.2f}, p90 x{ratio['p90_ms']:.2f}, "
                  f"cpu x{ratio['cpu_median_ms']:.2f}")
    return 0 if ratio and not any(errors.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
