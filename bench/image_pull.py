#!/usr/bin/env python3
"""`sampan pull` against `docker pull` from a local registry, until the image is ready to run.

The image is the one bench/image_load.py builds (six layers, about 180 MB unpacked),
pushed once by the private dockerd to Debian's docker-registry on 127.0.0.1 (so its
layers are gzip-compressed, as docker pushes them); the registry, dockerd and sampand
(bench/_daemons.py) share one private network namespace. Each round pulls it with each
CLI through its daemon's API, interleaved (the order alternates); both unpack every layer
before they return. The image is removed (layers and all) after every pull. Beside them:
the floor, GNU tar unpacking the six gzip layers at once on the same filesystem, and
`skopeo copy` of the image to a directory (download and verify, no unpacking). Prints the
medians and the ratios sampan/docker (the goal is 0.3 or less) and sampan/floor. Run as root:

    .venv/bin/python bench/image_pull.py [--rounds 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _daemons
import image_load

REPO = image_load.REPO
sys.path.insert(0, str(REPO / "tests" / "image"))
import registry_fixtures  # noqa: E402 - the docker-registry and skopeo helpers of the tests


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if registry_fixtures.SKOPEO_BIN is None:
        raise SystemExit("skopeo is needed (scripts/setup.sh installs it)")
    image_load.CACHE.mkdir(parents=True, exist_ok=True)
    archive = image_load.build_archive()
    docker, sampan = _daemons.start_both(one_netns=True)
    netns = docker.netns
    work = Path(tempfile.mkdtemp(prefix="sampan-bench-pull-", dir=str(Path(docker.tmp).parent)))
    (work / "registry").mkdir()
    (work / "floor").mkdir()
    registry = registry_fixtures.RegistryServer(str(work / "registry"), netns=netns)
    results: dict[str, list[float]] = {"sampan": [], "docker": [], "tar": [], "skopeo": []}
    try:
        registry.start()
        name = f"{registry.host}/bench/layers:1"
        image_load.timed([_daemons.DOCKER_CLI, "load", "-q", "-i", str(archive)], docker.env)
        image_load.timed([_daemons.DOCKER_CLI, "tag", image_load.IMAGE, name], docker.env)
        image_load.timed([_daemons.DOCKER_CLI, "push", name], docker.env)
        image_load.quiet([_daemons.DOCKER_CLI, "rmi", "-f", name, image_load.IMAGE], docker.env)

        def skopeo_copy(target: Path) -> float:
            return image_load.timed(registry_fixtures.skopeo_argv("copy", "--src-tls-verify=false", f"docker://{name}",
                                                                  f"dir:{target}", tmpdir=str(work), netns=netns))

        skopeo_copy(work / "blobs")   # the gzip layers as pulled, for the floor
        manifest = json.loads((work / "blobs" / "manifest.json").read_text())
        blobs = [work / "blobs" / layer["digest"].split(":", 1)[1] for layer in manifest["layers"]]

        def sampan_pull() -> float:
            t = image_load.timed([_daemons.SAMPAN_CLI, "pull", "-q", name], sampan.env)
            image_load.quiet([_daemons.SAMPAN_CLI, "rmi", name], sampan.env)
            return t

        def docker_pull() -> float:
            t = image_load.timed([_daemons.DOCKER_CLI, "pull", "-q", name], docker.env)
            image_load.quiet([_daemons.DOCKER_CLI, "rmi", "-f", name], docker.env)
            return t

        def skopeo_reference() -> float:
            t = skopeo_copy(work / "skopeo")
            shutil.rmtree(work / "skopeo", ignore_errors=True)
            return t

        runs = {"sampan": sampan_pull, "docker": docker_pull, "tar": lambda: image_load.tar_floor(blobs, work / "floor", gzip=True),
                "skopeo": skopeo_reference}
        for name_ in runs:         # warm-up: the registry's files into the page cache
            runs[name_]()
            subprocess.run(["sync"])
        order = list(runs)
        for i in range(args.rounds):
            for name_ in (order if i % 2 == 0 else order[::-1]):
                results[name_].append(runs[name_]())
                subprocess.run(["sync"])
                print(f"round {i + 1} {name_}: {results[name_][-1]:.2f}s", file=sys.stderr)
    finally:
        registry.stop()
        _daemons.stop_both(docker, sampan)
        shutil.rmtree(work, ignore_errors=True)
    out = {name: image_load.summary(samples) for name, samples in results.items()}
    out["ratio"] = round(out["sampan"]["median_s"] / out["docker"]["median_s"], 3)
    out["ratio_to_floor"] = round(out["sampan"]["median_s"] / out["tar"]["median_s"], 3)
    out["skopeo_ratio"] = round(out["skopeo"]["median_s"] / out["docker"]["median_s"], 3)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"image: 6 layers, gzip in the registry, {args.rounds} rounds; pulls through each daemon's API")
        labels = {"sampan": "sampan pull", "docker": "docker pull", "tar": "floor: 6 x tar -xz",
                  "skopeo": "skopeo copy (no unpack)"}
        for name, label in labels.items():
            r = out[name]
            print(f"{label:24} median {r['median_s']:.2f}s (min {r['min_s']:.2f}, max {r['max_s']:.2f})")
        print(f"ratio sampan/docker: {out['ratio']:.2f}; sampan/floor: {out['ratio_to_floor']:.2f} "
              f"(skopeo/docker: {out['skopeo_ratio']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
