#!/usr/bin/env python3
"""`sampan build` against `DOCKER_BUILDKIT=0 docker build` (Docker's legacy builder) and
`buildah bud --layers`: a cold 10-step build, a cached rebuild of it unchanged, and a rebuild
after a one-byte change in the COPY source of step 8.

A private dockerd and a private sampand (bench/_daemons.py: own directories, network and
mount namespaces, dockerd's default bridge in its namespace, sampand's in its own) with one
busybox image; buildah on a storage root of its own (--root/--runroot in a temporary
directory, overlay, chroot isolation, RUN with --network none: its bridge would need CNI and
the host's firewall), the same image pulled from `docker save`. Every build is `-q` through
the engine's own CLI, timed from exec to exit. Each round runs, for each builder in an order
that rotates from round to round: the cold build (--no-cache), the cached rebuild, the
rebuild after the change (the source flips between two contents, so every round changes it).
Prints the median, p90, min and max of each, and the ratios sampan/docker and sampan/buildah
(goals: cold <= 1.0x docker; cached <= 0.5x docker and under 0.3 s; changed <= 0.5x docker).
Run as root:

    .venv/bin/python bench/build.py [--rounds 10] [--json]
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _daemons import DOCKER_CLI, IMAGE, stop_both  # noqa: E402
from net_common import arguments, figures_of, goal, interleaved, print_ms_table, start_networked  # noqa: E402
from net_common import timed_output  # noqa: E402

BUILDAH = shutil.which("buildah")
TAG = "bench-build:latest"
DOCKERFILE = f"""FROM {IMAGE}
ENV APP=/app
WORKDIR /app
COPY a.txt ./
RUN echo one > /one && ls / > /listing
ARG VERSION=1
LABEL bench.build=yes
COPY src/ ./src/
RUN wc -c src/* > /sizes
CMD ["sh"]
"""
SOURCE = "src/changing.txt"   # the file of step 8 that changes


def write_context(root: Path) -> None:
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "a.txt").write_text("a\n" * 1000)
    for i in range(20):
        (root / "src" / f"file{i}.txt").write_text(f"{i}\n" * 500)
    (root / SOURCE).write_text("0" * 4096)


def flip_one_byte(root: Path) -> None:
    path = root / SOURCE
    data = bytearray(path.read_bytes())
    data[0] = ord("1") if data[0] == ord("0") else ord("0")
    path.write_bytes(bytes(data))


class Buildah:
    """buildah on a storage root of its own, with the benchmark's base image."""

    def __init__(self, archive: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix="sampan-bench-buildah-")
        self.base = [BUILDAH, "--root", f"{self.tmp}/root", "--runroot", f"{self.tmp}/run",
                     "--storage-driver", "overlay"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDAH_", "CONTAINERS_"))}
        self.env["BUILDAH_ISOLATION"] = "chroot"
        subprocess.run([*self.base, "pull", "-q", f"docker-archive:{archive}"], env=self.env, check=True,
                       capture_output=True)

    def build(self, context: str, no_cache: bool) -> list[str]:
        return [*self.base, "bud", "--layers", "-q", "--network", "none", *(["--no-cache"] if no_cache else []),
                "-t", TAG, context]

    def teardown(self) -> None:
        subprocess.run([*self.base, "rmi", "-a", "-f"], env=self.env, capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    parser = arguments(__doc__, rounds=10)
    args = parser.parse_args()
    if not BUILDAH:
        raise SystemExit("buildah is needed (scripts/setup.sh installs it)")

    dockerd = sampand = buildah = None
    work = Path(tempfile.mkdtemp(prefix="sampan-bench-build-"))
    try:
        dockerd, sampand = start_networked()
        archive = str(work / "base.tar")
        dockerd.docker("save", "-o", archive, IMAGE)
        buildah = Buildah(archive)
        builders = {
            "sampan": (lambda ctx, no_cache: [args.sampan, "build", "-q", *(["--no-cache"] if no_cache else []),
                                              "-t", TAG, ctx], sampand.env),
            "docker": (lambda ctx, no_cache: [DOCKER_CLI, "build", "-q", *(["--no-cache"] if no_cache else []),
                                              "-t", TAG, ctx], dict(dockerd.env, DOCKER_BUILDKIT="0")),
            "buildah": (buildah.build, buildah.env),
        }
        contexts = {}
        for name in builders:
            contexts[name] = work / name
            write_context(contexts[name])

        def measure(name: str):
            argv_of, env = builders[name]
            context = str(contexts[name])
            built: set[str] = set()   # image IDs this builder made

            def one_round() -> tuple[float, float, float]:
                cold, cold_id = timed_output(argv_of(context, True), env)
                cached, cached_id = timed_output(argv_of(context, False), env)
                flip_one_byte(contexts[name])
                changed, changed_id = timed_output(argv_of(context, False), env)
                # -q prints the image ID: the unchanged rebuild is an image built before (the
                # cold one's; buildah may answer with an earlier build of the same content), the
                # changed one a new image (so each builder did what is timed)
                cold_id, cached_id, changed_id = cold_id.strip(), cached_id.strip(), changed_id.strip()
                built.add(cold_id)
                if cached_id not in built or changed_id == cached_id:
                    raise RuntimeError(f"{name}: image IDs cold {cold_id} cached {cached_id} changed {changed_id}")
                built.add(changed_id)
                return cold, cached, changed
            return one_round

        rounds = interleaved({name: measure(name) for name in builders}, args.rounds, warmup=1)
    finally:
        if buildah is not None:
            buildah.teardown()
        stop_both(dockerd, sampand)
        shutil.rmtree(work, ignore_errors=True)

    kinds = ("cold", "cached", "changed")
    samples = {f"{name} {kind}": [r[i] for r in rounds[name]] for name in rounds for i, kind in enumerate(kinds)}
    result: dict = {"rounds": args.rounds, **figures_of(samples)}
    for kind in kinds:
        for peer in ("docker", "buildah"):
            result[f"ratio_{kind}_vs_{peer}"] = round(result[f"sampan {kind}"]["median_ms"] /
                                                      result[f"{peer} {kind}"]["median_ms"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print_ms_table(f"build of a 10-step Dockerfile, {args.rounds} rounds (warm daemons, rotating order)",
                   {name: result[name] for name in samples})
    for kind, target in (("cold", 1.0), ("cached", 0.5), ("changed", 0.5)):
        ratio = result[f"ratio_{kind}_vs_docker"]
        extra = ""
        if kind == "cached":
            extra = f", under 0.3 s: {goal(result['sampan cached']['median_ms'] < 300)}"
        print(f"{kind}: sampan/docker {ratio:.3f}x (goal <= {target}x: {goal(ratio <= target)}{extra}), "
              f"sampan/buildah {result[f'ratio_{kind}_vs_buildah']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
