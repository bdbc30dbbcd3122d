"""The suite-wide leak check (tests/conftest.py) itself, run on small test files in a pytest
of their own: it charges a test with what is its own, cleans that up, and leaves alone what
another test process (this one, which holds a watcher lock) may own."""

import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def run_inner(tmp_path, body: str) -> subprocess.CompletedProcess:
    d = tmp_path / "inner"
    d.mkdir()
    shutil.copy(CONFTEST, d / "conftest.py")
    (d / "test_inner.py").write_text(body)
    # a base temp of its own: pytest's numbered dirs under /tmp/pytest-of-root are renamed to
    # garbage-* and removed by other pytest processes while the inner test still uses them
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "inner-tmp"), str(d)],
                          capture_output=True, text=True, cwd=d, timeout=120)


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def test_own_mount_left_fails_and_is_detached(tmp_path):
    record = tmp_path / "mount-point"
    cp = run_inner(tmp_path, f"""
import subprocess
def test_leaks(tmp_path):
    (tmp_path / "m").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "x", str(tmp_path / "m")], check=True)
    open("{record}", "w").write(str(tmp_path / "m"))
""")
    assert cp.returncode == 1 and "mount left:" in cp.stdout, cp.stdout
    assert not _mounted(record.read_text())


def test_foreign_mount_is_not_charged_nor_detached(tmp_path):
    elsewhere = Path(f"/tmp/sampan-leak-check-{secrets.token_hex(4)}")
    elsewhere.mkdir()
    try:
        cp = run_inner(tmp_path, f"""
import subprocess
def test_mounts_elsewhere():
    subprocess.run(["mount", "-t", "tmpfs", "x", "{elsewhere}"], check=True)
""")
        assert cp.returncode == 0, cp.stdout
        assert _mounted(str(elsewhere)), "another process's mount was taken away"
    finally:
        subprocess.run(["umount", "-l", str(elsewhere)], check=False)
        elsewhere.rmdir()


def test_own_link_left_fails_and_is_deleted(tmp_path):
    token = secrets.token_hex(3)
    cp = run_inner(tmp_path, f"""
import subprocess
def test_leaks_a_link(host_watch):
    host_watch.watch_id("{token}")
    subprocess.run(["ip", "link", "add", "sl{token}", "type", "bridge"], check=True)
""")
    assert cp.returncode == 1 and f"network link left: sl{token}" in cp.stdout, cp.stdout
    assert not Path(f"/sys/class/net/sl{token}").exists()


@pytest.fixture
def host_bridge():
    name = f"sp{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    yield name
    subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_a_link_the_host_had_that_is_gone_fails(tmp_path, host_bridge):
    cp = run_inner(tmp_path, f"""
import subprocess
def test_deletes_a_link():
    subprocess.run(["ip", "link", "del", "{host_bridge}"], check=True)
""")
    assert cp.returncode == 1 and f"network link gone: {host_bridge}" in cp.stdout, cp.stdout


def test_an_address_added_to_a_host_link_fails(tmp_path, host_bridge):
    cp = run_inner(tmp_path, f"""
import subprocess
def test_adds_an_address():
    subprocess.run(["ip", "addr", "add", "198.51.100.7/32", "dev", "{host_bridge}"], check=True)
""")
    assert cp.returncode == 1 and "address left: " + host_bridge in cp.stdout, cp.stdout
