"""Device rules: the v1-semantics replay, v1 write plans between states, and the eBPF encoding."""
from __future__ import annotations

import struct

import pytest

from sampan.runtime.cgroups.devices import (
    DEFAULT_DEVICE_RULES,
    READ,
    WRITE,
    ALL_ACCESS,
    WILDCARD,
    DeviceState,
    effective,
    parse_list,
    parse_rules,
    v1_plan,
)
from sampan.runtime.cgroups.devices_bpf import compile_program
from sampan.runtime.cgroups.ebpf import Assembler

DENY_ALL = {"allow": False, "access": "rwm"}
NULL_RW = {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}


def state_of(*rules: dict) -> DeviceState:
    return effective(parse_rules(list(rules)))


def test_empty_rule_list_denies_everything():
    assert state_of() == DeviceState(default_allow=False)


def test_docker_style_rules():
    s = state_of(DENY_ALL, *DEFAULT_DEVICE_RULES, {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"})
    assert not s.default_allow
    assert s.exceptions[("c", 1, 3)] == ALL_ACCESS
    assert s.exceptions[("c", 136, WILDCARD)] == ALL_ACCESS
    assert s.exceptions[("c", 10, 229)] == READ | WRITE
    assert s.exceptions[("c", WILDCARD, WILDCARD)] == 1  # mknod of anything


def test_type_a_resets_and_later_rules_narrow_exact_keys():
    s = state_of({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}, {"allow": True, "access": "r"})
    assert s == DeviceState(default_allow=True)
    s = state_of(
        DENY_ALL,
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"},
        {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "r"},
    )
    assert s.exceptions == {("c", 1, 3): ALL_ACCESS & ~WRITE}


def test_default_allow_collects_deny_exceptions():
    s = state_of({"allow": True}, {"allow": False, "type": "b", "major": 8, "access": "w"})
    assert s == DeviceState(default_allow=True, exceptions={("b", 8, WILDCARD): WRITE})


@pytest.mark.parametrize(
    "bad",
    [
        [{"type": "c"}],
        [{"allow": "yes"}],
        [{"allow": True, "type": "x"}],
        [{"allow": True, "access": "rwx"}],
        [{"allow": True, "major": -5}],
        [{"allow": True, "minor": "3"}],
        "not a list",
    ],
)
def test_invalid_rules(bad):
    with pytest.raises(ValueError, match="devices"):
        parse_rules(bad)


def test_parse_devices_list():
    assert parse_list("a *:* rwm\n") is None
    assert parse_list("") == {}
    assert parse_list("c 1:3 rwm\nc 136:* rw\nb *:* m\n") == {
        ("c", 1, 3): ALL_ACCESS,
        ("c", 136, WILDCARD): READ | WRITE,
        ("b", WILDCARD, WILDCARD): 1,
    }


def test_v1_plan_from_fresh_cgroup_resets_then_allows():
    plan = v1_plan(state_of(DENY_ALL, NULL_RW), "a *:* rwm\n")
    assert plan == [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm")]


def test_v1_plan_update_grants_before_revoking_and_never_resets():
    current = "c 1:3 rwm\nc 1:5 rwm\n"
    target = state_of(
        DENY_ALL,
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "r"},
    )
    assert v1_plan(target, current) == [
        ("devices.allow", "c 1:9 r"),
        ("devices.deny", "c 1:3 m"),
        ("devices.deny", "c 1:5 rwm"),
    ]
    assert v1_plan(state_of(DENY_ALL, NULL_RW), "c 1:3 rwm\n") == []


def test_v1_plan_to_default_allow():
    target = state_of({"allow": True}, {"allow": False, "type": "c", "major": 1, "minor": 1, "access": "rw"})
    assert v1_plan(target, "c 1:3 rwm\n") == [("devices.allow", "a"), ("devices.deny", "c 1:1 rw")]


def test_assembler_encoding_and_labels():
    asm = Assembler()
    asm.ldx_w(2, 1, 4)
    asm.jne(2, 7, "out")
    asm.mov(0, 1)
    asm.exit()
    asm.label("out")
    asm.mov(0, 0)
    asm.exit()
    insns = [struct.unpack("<BBhi", asm.assemble()[i : i + 8]) for i in range(0, 48, 8)]
    assert insns == [
        (0x61, 0x12, 4, 0),  # r2 = *(u32 *)(r1 + 4)
        (0x55, 0x02, 2, 7),  # if r2 != 7 goto +2
        (0xB7, 0x00, 0, 1),
        (0x95, 0x00, 0, 0),
        (0xB7, 0x00, 0, 0),
        (0x95, 0x00, 0, 0),
    ]


def test_assembler_rejects_mistakes():
    asm = Assembler()
    asm.jeq(0, 0, "nowhere")
    with pytest.raises(ValueError, match="undefined label"):
        asm.assemble()
    with pytest.raises(ValueError, match="32 bits"):
        asm.mov(0, 1 << 40)
    with pytest.raises(ValueError, match="register"):
        asm.mov(11, 0)


def test_device_program_shape():
    deny_all = compile_program(DeviceState(default_allow=False))
    # Prologue of six loads/shifts, then "r0 = 0; exit".
    assert len(deny_all) == 8 * 8
    assert deny_all[-16:] == struct.pack("=BBhi", 0xB7, 0, 0, 0) + struct.pack("=BBhi", 0x95, 0, 0, 0)
    allow_all = compile_program(DeviceState(default_allow=True))
    assert allow_all[-16:-8] == struct.pack("=BBhi", 0xB7, 0, 0, 1)
    several = compile_program(state_of(DENY_ALL, *DEFAULT_DEVICE_RULES))
    assert len(several) % 8 == 0 and len(several) > len(deny_all)
