"""linux.seccomp in real containers: the filter is loaded as the last step before execve, so
a profile may deny what the runtime does while it sets the process up (chdir, setgroups,
setuid, capset, close_range, prctl, the start handshake's accept and recv, ...), with
process.noNewPrivileges or without (where loading needs CAP_SYS_ADMIN, which the process
must not keep). tests/runtime/test_seccomp.py covers the filters themselves."""
from __future__ import annotations

import errno

import pytest

from sampan.linux.caps import NUMBERS
from sampan.runtime import seccomp

pytestmark = pytest.mark.skipif(not seccomp.features()["enabled"], reason="libseccomp.so.2 is not installed")

# What the runtime calls between fork and execve (and what no container command here needs).
RUNTIME_CALLS = ["chdir", "fchdir", "setgroups", "setresuid", "setresgid", "setuid", "setgid", "capset", "capget",
                 "close_range", "prctl", "umask", "sethostname", "accept", "accept4", "recvfrom", "recvmsg",
                 "sendto", "sendmsg", "socketpair", "unshare", "setns", "pivot_root", "mount", "umount2"]
DENIED = errno.EXDEV  # "Invalid cross-device link": never what chdir fails with here otherwise
CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def _deny_runtime_calls(bundle, *, nnp: bool, uid: int = 0) -> None:
    bundle.linux["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": RUNTIME_CALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": DENIED}],
    }
    bundle.process["noNewPrivileges"] = nnp
    bundle.process["user"] = {"uid": uid, "gid": uid, "additionalGids": [uid + 1]}
    bundle.process["capabilities"] = {kind: list(CAPS) for kind in ("bounding", "effective", "permitted",
                                                                    "inheritable", "ambient")}


def _expect_runc_to_fail_without_nnp(runtime_version: tuple[str, tuple[int, ...]], nnp: bool) -> None:
    if runtime_version[0] == "runc" and not nnp:
        pytest.xfail("runc loads the filter before it drops privileges when noNewPrivileges is off")


def _mask(names: list[str]) -> int:
    return sum(1 << NUMBERS[name] for name in names)


# Reports the denied chdir, then the process's capability sets.
SCRIPT = "cd /tmp 2>&1 && echo entered /tmp; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status"


def _report(out: str) -> tuple[str, dict[str, int]]:
    lines = out.strip().splitlines()
    fields = dict(line.split(":\t") for line in lines[1:])
    return lines[0], {key: int(value, 16) if key.startswith("Cap") else int(value) for key, value in fields.items()}


@pytest.mark.parametrize("uid", [0, 1000])
@pytest.mark.parametrize("nnp", [True, False], ids=["noNewPrivileges", "without-noNewPrivileges"])
def test_a_profile_denying_the_runtimes_calls_still_starts(rt, bundle, runtime_version, nnp, uid):
    _expect_runc_to_fail_without_nnp(runtime_version, nnp)
    _deny_runtime_calls(bundle, nnp=nnp, uid=uid)
    r = rt.run(bundle.sh(SCRIPT))
    assert r.returncode == 0, r
    chdir_said, status = _report(r.out)
    assert "cross-device" in chdir_said, r.out  # denied inside the container, by the filter
    assert status["Seccomp"] == 2 and status["NoNewPrivs"] == int(nnp)
    # Exactly the config's capabilities: CAP_SYS_ADMIN, kept for the load, is gone with execve.
    assert status["CapBnd"] == status["CapAmb"] == status["CapInh"] == _mask(CAPS)
    assert status["CapPrm"] == status["CapEff"] == _mask(CAPS)


@pytest.mark.parametrize("nnp", [True, False], ids=["noNewPrivileges", "without-noNewPrivileges"])
def test_an_exec_under_such_a_profile_starts(rt, bundle, runtime_version, nnp):
    _expect_runc_to_fail_without_nnp(runtime_version, nnp)
    _deny_runtime_calls(bundle, nnp=nnp, uid=1000)
    cid, _ = rt.started(bundle.args("sleep", "100"))
    r = rt.exec(cid, "sh", "-c", SCRIPT)
    assert r.returncode == 0, r
    chdir_said, status = _report(r.out)
    assert "cross-device" in chdir_said, r.out
    assert status["Seccomp"] == 2 and status["CapEff"] == _mask(CAPS)


def test_without_a_profile_the_config_capabilities_are_all(rt, bundle):
    """The case where nothing is kept back: no CAP_SYS_ADMIN either."""
    bundle.process["noNewPrivileges"] = False
    r = rt.run(bundle.sh(SCRIPT))
    assert r.returncode == 0, r
    chdir_said, status = _report(r.out)
    assert chdir_said == "entered /tmp"
    assert status["Seccomp"] == 0
    assert status["CapEff"] & _mask(["CAP_SYS_ADMIN"]) == 0
