#!/usr/bin/env python3
"""`sampan load` against `docker load` on the same multi-layer docker-archive.

The archive is made once (kept in .cache/bench/): a Debian minbase tree (debootstrap,
also kept) split into four layers (usr/lib, usr/share, the other usr dirs, the rest),
a layer of random binaries and a layer of a few thousand small files: six layers,
about 180 MB, uncompressed tars in the format `docker save` (20.10) writes. Each round
loads it with each CLI through its private daemon's API (bench/_daemons.py: a dockerd and a
sampand, roots on the same filesystem), interleaved (the order alternates), from the file,
beside the floor: GNU tar extracting the six layers at once into that filesystem. The image
is removed (layers and all) after every load and the page cache written back (`sync`)
before the next one. Prints the medians and the ratios sampan/docker (the goal is 0.3 or
less) and sampan/floor. Run as root:

    .venv/bin/python bench/image_load.py [--rounds 5] [--json]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
IMAGE = "bench/layers:1"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
import _daemons  # noqa: E402 - the private dockerd and sampand


def debian_tree() -> Path:
    tree = CACHE / "debian-bookworm"
    if not (tree / "etc" / "debian_version").exists():
        from sampan.image.bootstrap import debian_rootfs
        tmp = Path(tempfile.mkdtemp(prefix="debian-", dir=CACHE))
        print("debootstrap (once, ~30 s) ...", file=sys.stderr)
        debian_rootfs(str(tmp / "fs"))
        shutil.rmtree(tree, ignore_errors=True)
        os.rename(tmp / "fs", tree)
        shutil.rmtree(tmp)
    return tree


def _synthetic(directory: Path, seed: int) -> tuple[Path, Path]:
    """A tree of random binaries (40 MB) and one of 3000 small text files (~12 MB)."""
    rng = random.Random(seed)
    bins, small = directory / "bins", directory / "small"
    (bins / "opt" / "tools").mkdir(parents=True)
    for i in range(10):
        (bins / "opt" / "tools" / f"tool{i}").write_bytes(rng.randbytes(4 << 20))
    words = [rng.randbytes(6).hex() for _ in range(500)]
    for i in range(3000):
        d = small / "opt" / "app" / "node_modules" / f"pkg{i // 30}"
        d.mkdir(parents=True, exist_ok=True)
        text = " ".join(rng.choice(words) for _ in range(rng.randint(150, 550)))
        (d / f"module{i % 30}.js").write_text(f"// module {i}\nexport const s = {json.dumps(text)};\n")
    return bins, small


def _layer(out: Path, root: Path, paths: list[str]) -> None:
    subprocess.run(["tar", "--numeric-owner", "--sort=name", "-C", str(root), "-cf", str(out), *paths], check=True)


def build_archive() -> Path:
    """The docker-archive (made once): six layers as `docker save` 20.10 lays them out."""
    archive = CACHE / "image-load.tar"
    if archive.exists():
        return archive
    tree = debian_tree()
    work = Path(tempfile.mkdtemp(prefix="layers-", dir=CACHE))
    try:
        bins, small = _synthetic(work, 1)
        usr_rest = sorted(p for p in os.listdir(tree / "usr") if p not in ("lib", "share"))
        top_rest = sorted(p for p in os.listdir(tree) if p != "usr")
        specs = [(tree, ["usr/lib"]), (tree, ["usr/share"]), (tree, [f"usr/{p}" for p in usr_rest]),
                 (tree, top_rest), (bins, ["opt"]), (small, ["opt"])]
        layers = []
        for i, (root, paths) in enumerate(specs):
            path = work / f"layer{i}.tar"
            _layer(path, root, paths)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            layers.append((path, "sha256:" + h.hexdigest()))
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))],
        }).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        v1 = [hashlib.sha256(f"v1-{d}".encode()).hexdigest() for _, d in layers]
        manifest = [{"Config": config_name, "RepoTags": [IMAGE], "Layers": [f"{v}/layer.tar" for v in v1]}]
        tmp = archive.with_suffix(".tmp")
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as t:
            entries = sorted([(f"{v}/layer.tar", path) for v, (path, _) in zip(v1, layers)] +
                             [(config_name, config)], key=lambda e: e[0])
            for name, content in entries:
                if isinstance(content, bytes):
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    t.addfile(info, io.BytesIO(content))
                else:
                    t.add(str(content), arcname=name)
            for name, doc in (("manifest.json", manifest), ("repositories", {"bench/layers": {"1": v1[-1]}})):
                data = json.dumps(doc).encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        os.rename(tmp, archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return archive


def timed(argv: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - t0
    if cp.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}: {cp.stderr.decode(errors='replace').strip()[-800:]}")
    return elapsed


def quiet(argv: list[str], env: dict | None = None) -> None:
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def summary(samples: list[float]) -> dict:
    return {"n": len(samples), "median_s": round(statistics.median(samples), 3),
            "min_s": round(min(samples), 3), "max_s": round(max(samples), 3)}


def layer_tars(archive: Path, directory: Path) -> list[Path]:
    """The archive's layer tars, taken out once into `directory` (for the floor)."""
    with tarfile.open(archive) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        out = []
        for i, name in enumerate(manifest[0]["Layers"]):
            path = directory / f"layer{i}.tar"
            with t.extractfile(name) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            out.append(path)
    return out


def tar_floor(layers: list[Path], directory: Path, gzip: bool = False) -> float:
    """GNU tar extracting every layer (gzip-compressed ones with `gzip`) at once, each into a
    directory of its own (as a store unpacks each layer into its own snapshot)."""
    dirs = [directory / f"x{i}" for i in range(len(layers))]
    for d in dirs:
        d.mkdir()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["tar", "--numeric-owner", "-C", str(d), "-xzf" if gzip else "-xf", str(layer)])
             for d, layer in zip(dirs, layers)]
    failed = [p.args for p in procs if p.wait() != 0]
    elapsed = time.perf_counter() - t0   # as the engines' times: written, not yet written back
    for d in dirs:
        shutil.rmtree(d)
    if failed:
        raise SystemExit(f"failed: {failed[0]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = build_archive()
    size = archive.stat().st_size
    docker, sampan = _daemons.start_both()
    floor_dir = Path(tempfile.mkdtemp(prefix="sampan-bench-floor-", dir=str(Path(docker.tmp).parent)))
    results: dict[str, list[float]] = {"sampan": [], "docker": [], "tar": []}
    try:
        layers = layer_tars(archive, floor_dir)

        def sampan_load() -> float:
            t = timed([_daemons.SAMPAN_CLI, "load", "-q", "-i", str(archive)], sampan.env)
            quiet([_daemons.SAMPAN_CLI, "rmi", IMAGE], sampan.env)
            return t

        def docker_load() -> float:
            t = timed([_daemons.DOCKER_CLI, "load", "-q", "-i", str(archive)], docker.env)
            quiet([_daemons.DOCKER_CLI, "rmi", "-f", IMAGE], docker.env)
            return t

        runs = {"sampan": sampan_load, "docker": docker_load, "tar": lambda: tar_floor(layers, floor_dir)}
        for name in runs:          # warm-up: the archive into the page cache, every code path
            runs[name]()
            subprocess.run(["sync"])
        order = list(runs)
        for i in range(args.rounds):
            for name in (order if i % 2 == 0 else order[::-1]):
                results[name].append(runs[name]())
                subprocess.run(["sync"])
                print(f"round {i + 1} {name}: {results[name][-1]:.2f}s", file=sys.stderr)
    finally:
        _daemons.stop_both(docker, sampan)
        shutil.rmtree(floor_dir, ignore_errors=True)
    out = {"archive_bytes": size, "layers": 6, **{name: summary(r) for name, r in results.items()}}
    out["ratio"] = round(out["sampan"]["median_s"] / out["docker"]["median_s"], 3)
    out["ratio_to_floor"] = round(out["sampan"]["median_s"] / out["tar"]["median_s"], 3)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"archive: {size / 1e6:.0f} MB, 6 layers, {args.rounds} rounds; both loads through their daemon's API")
        for name, label in (("sampan", "sampan load"), ("docker", "docker load"), ("tar", "floor: 6 x tar -x")):
            r = out[name]
            print(f"{label:18} median {r['median_s']:.2f}s (min {r['min_s']:.2f}, max {r['max_s']:.2f})")
        print(f"ratio sampan/docker: {out['ratio']:.2f}; sampan/floor: {out['ratio_to_floor']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
