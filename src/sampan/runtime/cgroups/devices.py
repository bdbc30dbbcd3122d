"""Device access rules: OCI linux.resources.devices -> the state cgroup v1 would reach.

The rules are replayed with the v1 devices controller's own semantics, starting from "deny
everything", into a default plus exceptions. v1 writes that state to devices.allow/deny;
v2 compiles it into an eBPF program. So one rule list means the same on every host.
"""
from __future__ import annotations

from .fs import Plan

# Access bits, valued as the kernel's BPF_DEVCG_ACC_* so a v2 program can test them directly.
MKNOD, READ, WRITE = 1, 2, 4
ALL_ACCESS = MKNOD | READ | WRITE
WILDCARD = -1  # major or minor "*"

_ACCESS_BITS = {"r": READ, "w": WRITE, "m": MKNOD}  # in the order v1 prints them

# The devices the OCI spec says every container has (/dev/null, zero, full, random, urandom,
# tty, console, ptmx) and its pseudo-terminals. Rules start from deny-all, so a runtime adds
# these to the spec's own rules, as runc does.
# What every container may use whatever its config denies, as runc: mknod of anything, the
# standard nodes, the console and ptys, and tun.
DEFAULT_DEVICE_RULES: list[dict] = [
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
] + [
    {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, None), (10, 200))
]

# A device class as the kernel keys its exception list: (type "b"/"c", major, minor).
Key = tuple[str, int, int]


class Rule:
    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type_: str, major: int, minor: int, access: int) -> None:
        self.allow, self.type, self.major, self.minor, self.access = allow, type_, major, minor, access

    @property
    def key(self) -> Key:
        return (self.type, self.major, self.minor)


class DeviceState:
    """What the v1 controller holds: a default verdict and the exceptions to it."""

    __slots__ = ("default_allow", "exceptions")

    def __init__(self, default_allow: bool = False, exceptions: dict[Key, int] | None = None) -> None:
        self.default_allow = default_allow
        self.exceptions: dict[Key, int] = dict(exceptions or {})

    def apply(self, rule: Rule) -> None:
        if rule.type == "a":
            # The kernel reads type "a" as "all devices" and resets the list, whatever the
            # rest of the rule says.
            self.default_allow = rule.allow
            self.exceptions.clear()
        elif rule.allow == self.default_allow:
            # A rule agreeing with the default narrows the exception for exactly this key.
            left = self.exceptions.get(rule.key, 0) & ~rule.access
            if left:
                self.exceptions[rule.key] = left
            else:
                self.exceptions.pop(rule.key, None)
        else:
            self.exceptions[rule.key] = self.exceptions.get(rule.key, 0) | rule.access

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DeviceState)
            and self.default_allow == other.default_allow
            and self.exceptions == other.exceptions
        )

    def __repr__(self) -> str:
        return f"DeviceState(default_allow={self.default_allow}, exceptions={self.exceptions})"


def parse_rules(rules: list) -> list[Rule]:
    if not isinstance(rules, list):
        raise ValueError(f"devices must be a list of rules, got {rules!r}")
    return [_parse_rule(r, i) for i, r in enumerate(rules)]


def effective(rules: list[Rule]) -> DeviceState:
    state = DeviceState(default_allow=False)
    for rule in rules:
        state.apply(rule)
    return state


def v1_plan(target: DeviceState, devices_list: str) -> Plan:
    """Writes taking a v1 cgroup whose devices.list reads `devices_list` to `target`,
    never passing through a state that denies something both ends allow."""
    current = parse_list(devices_list)
    if target.default_allow:
        return [("devices.allow", "a")] + [("devices.deny", line(k, a)) for k, a in target.exceptions.items()]
    if current is None:
        # Currently allow-by-default (exceptions unreadable): reset, then allow. Only a fresh
        # cgroup gets here in practice, and it has no task yet.
        return [("devices.deny", "a")] + [("devices.allow", line(k, a)) for k, a in target.exceptions.items()]
    # Both deny-by-default: grant what is missing, then take back what is extra.
    grants = [(k, a & ~current.get(k, 0)) for k, a in target.exceptions.items()]
    revokes = [(k, a & ~target.exceptions.get(k, 0)) for k, a in current.items()]
    return [("devices.allow", line(k, a)) for k, a in grants if a] + [
        ("devices.deny", line(k, a)) for k, a in revokes if a
    ]


def parse_list(text: str) -> dict[Key, int] | None:
    """devices.list -> its exceptions, or None when it is allow-by-default (the kernel then
    prints just "a *:* rwm" and hides the deny exceptions)."""
    exceptions: dict[Key, int] = {}
    for entry in text.split("\n"):
        if not entry.strip():
            continue
        type_, numbers, access = entry.split()
        if type_ == "a":
            return None
        major, minor = numbers.split(":")
        exceptions[(type_, _number(major), _number(minor))] = _access_bits(access)
    return exceptions


def line(key: Key, access: int) -> str:
    type_, major, minor = key
    return f"{type_} {_star(major)}:{_star(minor)} {''.join(c for c, b in _ACCESS_BITS.items() if access & b)}"


def _parse_rule(rule: object, index: int) -> Rule:
    if not isinstance(rule, dict) or not isinstance(rule.get("allow"), bool):
        raise ValueError(f"devices[{index}]: need a rule with a boolean 'allow', got {rule!r}")
    type_ = rule.get("type") or "a"
    if type_ not in ("a", "b", "c"):
        raise ValueError(f"devices[{index}]: type must be 'a', 'b' or 'c', got {type_!r}")
    numbers = []
    for field in ("major", "minor"):
        value = rule.get(field)
        if value is None:
            value = WILDCARD
        if isinstance(value, bool) or not isinstance(value, int) or value < WILDCARD:
            raise ValueError(f"devices[{index}]: {field} must be a number >= 0 (or -1/absent for any), got {value!r}")
        numbers.append(value)
    access = rule.get("access") or "rwm"
    if not isinstance(access, str) or not set(access) <= set(_ACCESS_BITS):
        raise ValueError(f"devices[{index}]: access must combine 'r', 'w' and 'm', got {access!r}")
    return Rule(rule["allow"], type_, numbers[0], numbers[1], _access_bits(access))


def _access_bits(access: str) -> int:
    bits = 0
    for c in access:
        bits |= _ACCESS_BITS[c]
    return bits


def _number(text: str) -> int:
    return WILDCARD if text == "*" else int(text)


def _star(number: int) -> str:
    return "*" if number == WILDCARD else str(number)
