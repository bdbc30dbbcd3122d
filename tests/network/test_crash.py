"""A daemon SIGKILLed in the middle of network setup, then restarted: restore() leaves the
namespace with exactly the links, addresses and namespace files it had before."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sampan.network.api import NoFirewall
from sampan.network.ipam import Ipam
from sampan.network.manager import Manager

from conftest import link_gone, net_state, sandboxes

# a "daemon": connects containers and removes one in three, until it is killed
_CHURN = """
import sys
from sampan.network.api import NoFirewall
from sampan.network.ipam import Ipam
from sampan.network.manager import Manager
m = Manager(Ipam.open(sys.argv[1]), sys.argv[2], NoFirewall())
n = 0
while True:
    n += 1
    cid = f"{n:064x}"
    m.connect(cid, m.create_sandbox(cid), "churn")
    if n % 3 == 0:
        m.remove_sandbox(cid)
    if n == 1:
        print("churning", flush=True)
"""


def test_sigkill_mid_setup_then_restore_leaves_nothing(manager, tmp_path):
    root, exec_root = str(tmp_path / "root"), str(tmp_path / "exec")
    net = manager.create_network("churn", subnet="10.71.0.0/16")
    before = net_state()
    for delay in (0.05, 0.13, 0.21):
        daemon = subprocess.Popen([sys.executable, "-c", _CHURN, root, exec_root], stdout=subprocess.PIPE,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert daemon.stdout.readline() == b"churning\n"
        time.sleep(delay)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        daemon.stdout.close()
        assert manager.ipam.endpoints(network_id=net.id), "the daemon made no endpoint before it was killed"
        restarted = Manager(Ipam.open(root), exec_root, NoFirewall())
        restarted.restore(live_containers=[])
        assert restarted.ipam.endpoints() == [] and sandboxes(restarted) == []
        restarted.close()
        restarted.ipam.close()
        links = [line.split("@")[0] for line in net_state()[0].splitlines()]
        assert all(link_gone(name) for name in links if name.startswith("veth"))
        assert net_state() == before
    manager.remove_network("churn")
