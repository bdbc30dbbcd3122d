#!/usr/bin/env python3
"""HTTP requests per second through a published port: sampan against docker, and against the
same server reached directly at the container's address.

A private dockerd (its default bridge and userland proxy, docker-proxy, which carries
127.0.0.1's traffic) and a private sampand (its default network; the kernel's DNAT), each in
a network namespace of its own (bench/net_common.py). A measurement runs busybox httpd in a new
container published with `-p PORT:80` (a new host port each time, see FIRST_HOST_PORT), then
wrk (Debian's) in the daemon's namespace against http://127.0.0.1:PORT/ (published) or
http://CONTAINER-IP:80/ (direct) for --duration seconds, then removes the container; the four
targets once a round in an order that rotates, after one unmeasured round.
Prints the median, min and max requests per second of each target and the ratios: sampan
published / docker published (goal >= 1.5x) and sampan published / sampan direct (goal >=
0.95x). Run as root:

    .venv/bin/python bench/net_http.py [--rounds 5] [--duration 5] [--connections 8] [--json]
"""
from __future__ import annotations

import json
import os
import itertools
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _daemons import DOCKER_CLI, IMAGE, stop_both  # noqa: E402
from net_common import arguments, goal, interleaved, start_networked, timed_output  # noqa: E402
from private_daemons import in_netns  # noqa: E402

WRK = shutil.which("wrk")
BUSYBOX = shutil.which("busybox")
# Every measurement has a server container and a host port of its own: busybox httpd closes
# first, so each request leaves a TIME_WAIT socket in the server's namespace (and docker-proxy
# one on 127.0.0.1 in the daemon's) for 60 s; a few rounds' worth of those made new connects
# collide with them and the rates fall by 5-10x round after round.
FIRST_HOST_PORT = 8080
# busybox httpd in the foreground, serving one small page (a request's cost is the connection's:
# busybox httpd answers HTTP/1.0 and closes, so wrk opens a connection per request)
SERVER = ["sh", "-c", "echo hello from busybox httpd > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]


def wait_serving(netns: str, url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run([*in_netns(netns), BUSYBOX, "wget", "-q", "-O", "/dev/null", url],
                         capture_output=True, timeout=timeout).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not answering after {timeout}s")
        time.sleep(0.05)


def wrk(netns: str, url: str, seconds: int, connections: int, threads: int) -> float:
    """Requests per second wrk reached on url (from inside netns); errors raise."""
    cp = subprocess.run([*in_netns(netns), WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
                        capture_output=True, text=True, timeout=seconds + 30)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", cp.stdout, re.M)
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", cp.stdout)
    if cp.returncode != 0 or not rate or failed:
        raise RuntimeError(f"wrk {url}: exit {cp.returncode}\n{cp.stdout}{cp.stderr}")
    return float(rate.group(1))


def main() -> int:
    parser = arguments(__doc__, rounds=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per target and round (default 5)")
    parser.add_argument("--connections", type=int, default=8, help="wrk's connections (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="wrk's threads (default 1: the host has 2 cores)")
    args = parser.parse_args()
    if not (WRK and BUSYBOX):
        raise SystemExit("wrk and busybox are needed (scripts/setup.sh installs them)")

    dockerd = sampand = None
    try:
        dockerd, sampand = start_networked()
        engines = {"sampan": (args.sampan, sampand.env, sampand.netns),
                   "docker": (DOCKER_CLI, dockerd.env, dockerd.netns)}
        host_ports = itertools.count(FIRST_HOST_PORT)

        def measure(engine: str, published: bool):
            def once() -> float:
                cli, env, netns = engines[engine]
                port = next(host_ports)
                cid = timed_output([cli, "run", "-d", "-p", f"{port}:80", IMAGE, *SERVER], env)[1].strip()
                try:
                    address = json.loads(timed_output([cli, "inspect", cid], env)[1])[0]["NetworkSettings"]["IPAddress"]
                    if not address:
                        raise RuntimeError(f"{engine}: container {cid[:12]} has no address on the default bridge")
                    url = f"http://127.0.0.1:{port}/index.html" if published else f"http://{address}:80/index.html"
                    wait_serving(netns, url)
                    return wrk(netns, url, args.duration, args.connections, args.threads)
                finally:
                    timed_output([cli, "rm", "-f", cid], env)
            return once

        samples = interleaved({f"{engine} {'published' if published else 'direct'}": measure(engine, published)
                               for engine in engines for published in (True, False)}, args.rounds, warmup=1)
    finally:
        stop_both(dockerd, sampand)

    result: dict = {"rounds": args.rounds, "duration_s": args.duration, "connections": args.connections,
                    "threads": args.threads}
    for name, rates in samples.items():
        result[name] = {"median_rps": round(statistics.median(rates)), "min_rps": round(min(rates)),
                        "max_rps": round(max(rates))}
    medians = {name: result[name]["median_rps"] for name in samples}
    result["ratio_published_sampan_docker"] = round(medians["sampan published"] / medians["docker published"], 3)
    result["ratio_sampan_published_direct"] = round(medians["sampan published"] / medians["sampan direct"], 3)
    result["ratio_docker_published_direct"] = round(medians["docker published"] / medians["docker direct"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"busybox httpd, wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds "
          "(rotating order); requests/s")
    width = max(len(name) for name in samples)
    print(f"{'':{width}} {'median':>8} {'min':>8} {'max':>8}")
    for name in samples:
        r = result[name]
        print(f"{name:{width}} {r['median_rps']:8} {r['min_rps']:8} {r['max_rps']:8}")
    print(f"published, sampan/docker: {result['ratio_published_sampan_docker']:.3f}x (median); goal >= 1.5x: "
          f"{goal(result['ratio_published_sampan_docker'] >= 1.5)}")
    print(f"sampan published/direct: {result['ratio_sampan_published_direct']:.3f}x; goal >= 0.95x: "
          f"{goal(result['ratio_sampan_published_direct'] >= 0.95)} "
          f"(docker published/direct: {result['ratio_docker_published_direct']:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
