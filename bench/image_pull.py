#!/usr/bin/env python3
"""`sampan pull` against `docker pull` from a local registry, until the image is ready to run.

The image is the one bench/image_load.py builds (six layers, about 180 MB unpacked),
pushed once by the private dockerd to Debian's docker-registry on 127.0.0.1 (so its
layers are gzip-compressed, as docker pushes them). Each round pulls it with each tool,
interleaved (the order alternates); both unpack every layer before they return. The
image is removed (layers and all) after every pull. `skopeo copy` of the same image to
a directory (download and verify, no unpacking) is timed as a reference. Prints the
medians and the ratio sampan/docker (the goal is 0.5 or less). Run as root:

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
    image_load.CACHE.mkdir(parents=True, exist_ok=True)
    archive = image_load.build_archive()
    mod = image_load.dropin()
    daemon = mod.Dockerd(mod.IMAGES / "busybox")
    work = tempfile.mkdtemp(prefix="sampan-bench-pull-")
    os.makedirs(f"{work}/registry")
    registry = registry_fixtures.RegistryServer(f"{work}/registry")
    root = f"{work}/root"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SAMPAN_CONFIG": f"{work}/config"}
    results: dict[str, list[float]] = {"sampan": [], "docker": [], "skopeo": []}
    try:
        registry.start()
        daemon.start()
        denv = daemon.env
        name = f"{registry.host}/bench/layers:1"
        image_load.timed([mod.DOCKER_CLI, "load", "-q", "-i", str(archive)], denv)
        image_load.timed([mod.DOCKER_CLI, "tag", image_load.IMAGE, name], denv)
        image_load.timed([mod.DOCKER_CLI, "push", name], denv)
        image_load.quiet([mod.DOCKER_CLI, "rmi", "-f", name, image_load.IMAGE], denv)

        def sampan_pull() -> float:
            t = image_load.timed([*image_load.SAMPAN, "--root", root, "pull", "-q", name], env)
            image_load.quiet([*image_load.SAMPAN, "--root", root, "rmi", name], env)
            return t

        def docker_pull() -> float:
            t = image_load.timed([mod.DOCKER_CLI, "pull", "-q", name], denv)
            image_load.quiet([mod.DOCKER_CLI, "rmi", "-f", name], denv)
            return t

        def skopeo_copy() -> float:
            target = f"{work}/skopeo"
            t = image_load.timed(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                                  'mount -t tmpfs sampan-skopeo /var/lib && exec "$@"', "sh",
                                  registry_fixtures.SKOPEO_BIN, "--insecure-policy", "copy",
                                  "--src-tls-verify=false", f"docker://{name}", f"dir:{target}"])
            shutil.rmtree(target, ignore_errors=True)
            return t

        runs = {"sampan": sampan_pull, "docker": docker_pull, "skopeo": skopeo_copy}
        if registry_fixtures.SKOPEO_BIN is None:
            del runs["skopeo"], results["skopeo"]
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
        problems = daemon.teardown()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
        if problems:
            print("dockerd teardown: " + "; ".join(problems[:3]), file=sys.stderr)
    out = {name: image_load.summary(samples) for name, samples in results.items()}
    out["ratio"] = round(out["sampan"]["median_s"] / out["docker"]["median_s"], 3)
    if "skopeo" in out:
        out["skopeo_ratio"] = round(out["skopeo"]["median_s"] / out["docker"]["median_s"], 3)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"image: 6 layers, gzip in the registry, {args.rounds} rounds")
        for name in results:
            s = out[name]
            what = "copy (no unpack)" if name == "skopeo" else "pull"
            print(f"{name:7} {what}: median {s['median_s']:.2f}s (min {s['min_s']:.2f}, max {s['max_s']:.2f})")
        print(f"ratio sampan/docker: {out['ratio']:.2f}" +
              (f"   (skopeo/docker: {out['skopeo_ratio']:.2f})" if "skopeo_ratio" in out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
