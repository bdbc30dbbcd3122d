"""Spec generation, seccomp profile, store, names and restart policy logic (no containers)."""
import pytest

from sampan.engine import mounts, names, restart, seccomp_profile, spec
from sampan.engine.errors import InvalidParameter

IMG = {"config": {"Env": ["PATH=/img/bin", "A=1"], "Entrypoint": ["/ep"], "Cmd": ["c1"], "WorkingDir": "/w",
                  "User": "nobody", "Labels": {"x": "1"}}}


def test_entrypoint_cmd_semantics():
    c = spec.merge_config(IMG, {}, "a" * 64)
    assert (c["Entrypoint"], c["Cmd"]) == (["/ep"], ["c1"])
    c = spec.merge_config(IMG, {"Cmd": ["c2"]}, "a" * 64)
    assert (c["Entrypoint"], c["Cmd"]) == (["/ep"], ["c2"])
    c = spec.merge_config(IMG, {"Entrypoint": ["/other"]}, "a" * 64)
    assert (c["Entrypoint"], c["Cmd"]) == (["/other"], None)      # overriding the entrypoint clears cmd
    c = spec.merge_config(IMG, {"Entrypoint": [""], "Cmd": ["ls"]}, "a" * 64)
    assert (c["Entrypoint"], c["Cmd"]) == (None, ["ls"])
    with pytest.raises(spec.SpecInputError):
        spec.merge_config({"config": {}}, {}, "a" * 64)
    c = spec.merge_config(IMG, {"Env": ["A=2", "B=3"], "Labels": {"y": "2"}}, "b" * 64)
    assert c["Env"] == ["PATH=/img/bin", "A=2", "B=3"] and c["Labels"] == {"x": "1", "y": "2"}
    assert c["Hostname"] == "b" * 12 and c["WorkingDir"] == "/w" and c["User"] == "nobody"


def test_capabilities():
    assert spec.capabilities({}) == spec.DEFAULT_CAPS
    assert spec.capabilities({"CapDrop": ["ALL"]}) == []
    assert spec.capabilities({"CapDrop": ["ALL"], "CapAdd": ["NET_ADMIN"]}) == ["CAP_NET_ADMIN"]
    caps = spec.capabilities({"CapAdd": ["SYS_ADMIN"], "CapDrop": ["chown"]})
    assert "CAP_SYS_ADMIN" in caps and "CAP_CHOWN" not in caps
    assert spec.capabilities({"Privileged": True}) == spec.host_capabilities()
    with pytest.raises(spec.SpecInputError):
        spec.capabilities({"CapAdd": ["BOGUS"]})


def test_resources():
    r = spec.resources({"Memory": 64 << 20, "NanoCpus": 500_000_000, "CpuShares": 512, "CpusetCpus": "0",
                        "PidsLimit": 20})
    assert r["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert r["cpu"] == {"period": 100000, "quota": 50000, "shares": 512, "cpus": "0"}
    assert r["pids"] == {"limit": 20}
    assert spec.resources({"Memory": 64 << 20, "MemorySwap": -1})["memory"]["swap"] == -1
    with pytest.raises(spec.SpecInputError):
        spec.resources({"MemorySwap": 1 << 30})
    assert spec.rlimits({"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}]}) == \
        [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]


def test_mount_parsing():
    ms = mounts.parse_mounts({"Binds": ["/tmp:/data:ro", "vol:/v"], "Tmpfs": {"/t": "size=1m"},
                            "Mounts": [{"Type": "volume", "Source": "v2", "Target": "/v2", "ReadOnly": True}]})
    assert [(m["Type"], m["Destination"], m["RW"]) for m in ms] == \
        [("bind", "/data", False), ("volume", "/v", True), ("volume", "/v2", False), ("tmpfs", "/t", True)]
    with pytest.raises(spec.SpecInputError):
        mounts.parse_mounts({"Binds": ["/a:/x", "/b:/x"]})
    with pytest.raises(spec.SpecInputError):
        mounts.parse_mounts({"Binds": ["/a:rel"]})


def test_build_defaults(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\nstaff:x:50:nobody\n")
    cid = "c" * 64
    cfg = spec.merge_config(IMG, {}, cid)
    s = spec.build(container_id=cid, config=cfg, host_config={"ShmSize": 1 << 20}, rootfs=str(tmp_path),
                   container_dir="/cdir", mounts=[], netns_path="/run/x/netns/c")
    p = s["process"]
    assert p["args"] == ["/ep", "c1"] and p["cwd"] == "/w"
    assert p["user"] == {"uid": 65534, "gid": 65534, "additionalGids": [50, 65534]}
    assert p["env"][:2] == ["PATH=/img/bin", f"HOSTNAME={cid[:12]}"]
    assert p["capabilities"]["bounding"] == spec.DEFAULT_CAPS and p["capabilities"]["effective"] == []
    assert s["hostname"] == cid[:12]
    assert s["linux"]["maskedPaths"] == spec.MASKED_PATHS and "/proc/sys" in s["linux"]["readonlyPaths"]
    shm = next(m for m in s["mounts"] if m["destination"] == "/dev/shm")
    assert f"size={1 << 20}" in shm["options"]
    dests = {m["destination"]: m for m in s["mounts"]}
    assert dests["/etc/hosts"]["source"] == "/cdir/hosts" and "ro" in dests["/sys"]["options"]
    assert s["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert s["linux"]["cgroupsPath"].endswith(cid)
    assert {"type": "network", "path": "/run/x/netns/c"} in s["linux"]["namespaces"]
    # --init, --privileged, seccomp=unconfined, host network
    s = spec.build(container_id=cid, config=cfg, host_config={"Init": True, "Privileged": True, "NetworkMode": "host"},
                   rootfs=str(tmp_path), container_dir="/cdir", mounts=[], netns_path=None)
    assert s["process"]["args"][:2] == ["/sbin/docker-init", "--"]
    assert any(m["destination"] == "/sbin/docker-init" and m["source"] == spec.TINI for m in s["mounts"])
    assert "seccomp" not in s["linux"] and s["linux"]["maskedPaths"] == [] and s["linux"]["readonlyPaths"] == []
    assert "network" not in {n["type"] for n in s["linux"]["namespaces"]}
    s = spec.build(container_id=cid, config=cfg, host_config={"SecurityOpt": ["seccomp=unconfined",
                                                                              "no-new-privileges"]},
                   rootfs=str(tmp_path), container_dir="/cdir", mounts=[], netns_path="/run/x/netns/c")
    assert "seccomp" not in s["linux"] and s["process"]["noNewPrivileges"] is True


def test_seccomp_profile_categories():
    prof = seccomp_profile.profile(spec.DEFAULT_CAPS)
    allowed = set(prof["syscalls"][0]["names"])
    for bad in ("mount", "umount2", "pivot_root", "unshare", "setns", "bpf", "perf_event_open", "keyctl",
                "add_key", "ptrace", "reboot", "init_module", "kexec_load", "swapon", "clock_settime", "acct",
                "open_by_handle_at", "userfaultfd", "iopl", "syslog", "clone", "clone3"):
        assert bad not in allowed, bad
    for good in ("read", "write", "openat", "execve", "futex", "epoll_wait", "chroot", "wait4"):
        assert good in allowed, good
    rules = {r["names"][0]: r for r in prof["syscalls"][1:]}
    assert rules["clone3"]["errnoRet"] == 38
    assert rules["clone"]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    assert {a["value"] for a in rules["personality"]["args"]} >= {0, 0xFFFFFFFF}
    admin = seccomp_profile.profile(spec.DEFAULT_CAPS + ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"])
    allowed = set(admin["syscalls"][0]["names"])
    assert {"mount", "unshare", "setns", "clone", "clone3", "ptrace"} <= allowed
    assert "kexec_load" not in allowed


def test_names_and_restart_policy():
    n = names.generate(set())
    assert "_" in n and names.valid(n)
    assert restart.parse("on-failure:3") == {"Name": "on-failure", "MaximumRetryCount": 3}
    with pytest.raises(InvalidParameter):
        restart.parse("always:3")
    pol = {"Name": "on-failure", "MaximumRetryCount": 2}
    assert restart.should_restart(pol, {"RestartCount": 1}, 1)
    assert not restart.should_restart(pol, {"RestartCount": 2}, 1)
    assert not restart.should_restart(pol, {"RestartCount": 0}, 0)
    assert not restart.should_restart({"Name": "always"}, {"ManuallyStopped": True}, 1)
    r = restart.Restarter(lambda cid: None)
    assert [r.delay_for("x", 0) for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert r.delay_for("x", 30) == 0.1
