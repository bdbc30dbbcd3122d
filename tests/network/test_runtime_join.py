"""A container run by the OCI runtime in a sandbox made by the manager: the spec's network
namespace path is the sandbox, and the container has its address and route and reaches a
neighbour on the bridge."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME = os.environ.get("SAMPAN_TEST_RUNTIME", "/usr/local/bin/sampan-runc")
IMAGES = Path(os.environ.get("SAMPAN_TEST_IMAGES", REPO / ".cache" / "images"))


def test_a_container_joins_its_sandbox(manager, tmp_path, host_watch):
    manager.create_network("join", subnet="10.72.0.0/24")
    cid, neighbour = f"sampan-net-{os.getpid()}-a", f"sampan-net-{os.getpid()}-b"
    host_watch.watch_id(cid)
    mine, theirs = manager.create_sandbox(cid), manager.create_sandbox(neighbour)
    ep = manager.connect(cid, mine, "join")
    other = manager.connect(neighbour, theirs, "join")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    subprocess.run(["cp", "-a", str(IMAGES / "busybox"), str(bundle / "rootfs")], check=True)
    subprocess.run([RUNTIME, "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", f"ip -4 addr show eth0; ip route; ping -c 1 -W 2 {other.ip}"]
    for caps in config["process"]["capabilities"].values():
        caps.append("CAP_NET_RAW")  # ping's raw socket (Docker's default set has it; the runtime's spec not)
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"] \
        + [{"type": "network", "path": mine}]
    (bundle / "config.json").write_text(json.dumps(config))
    done = subprocess.run([RUNTIME, "--root", str(tmp_path / "runtime"), "run", cid], cwd=bundle,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"inet {ep.ip}/24" in done.stdout and "default via 10.72.0.1 dev eth0" in done.stdout
    assert "1 packets received" in done.stdout
    manager.remove_sandbox(cid)
    manager.remove_sandbox(neighbour)
    manager.remove_network("join")
