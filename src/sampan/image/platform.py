"""Platforms (os/arch/variant) and picking the right manifest from a manifest list or OCI index.

Names follow Go's GOOS/GOARCH as the image spec does; `normalize` maps the kernel's
names (x86_64, aarch64, armv7l) and variants as containerd does (arm64/v8 is plain arm64,
plain arm is arm/v7),
and `select` picks the best entry the way containerd does: the exact variant first, then
older variants the CPU can also run (an arm/v7 host runs arm/v6 and arm/v5 images).
"""
from __future__ import annotations

import os

from .. import errors

_ARCH_ALIASES = {
    "x86_64": "amd64", "x86-64": "amd64", "amd64": "amd64",
    "i386": "386", "i486": "386", "i586": "386", "i686": "386", "386": "386",
    "aarch64": "arm64", "arm64": "arm64", "armv8l": "arm64",
    "armhf": "arm", "armel": "arm", "arm": "arm",
    "armv7l": "arm", "armv7": "arm", "armv6l": "arm", "armv6": "arm", "armv5tel": "arm", "armv5l": "arm",
    "ppc64le": "ppc64le", "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64",
    "mips64": "mips64", "mips64le": "mips64le", "mips": "mips", "mipsle": "mipsle",
    "loong64": "loong64", "loongarch64": "loong64",
}
_ARCH_VARIANT_FROM_NAME = {"armv7l": "v7", "armv7": "v7", "armv6l": "v6", "armv6": "v6", "armhf": "v7",
                           "armel": "v6", "armv5tel": "v5", "armv5l": "v5", "armv8l": "v8"}
_OS_ALIASES = {"macos": "darwin", "osx": "darwin"}


class PlatformError(errors.Invalid):
    """An unknown platform, or none of a list's entries matches."""


class Platform:
    """An os/architecture[/variant] triple, normalized on construction."""

    __slots__ = ("os", "architecture", "variant", "os_version")

    def __init__(self, os: str, architecture: str, variant: str = "", os_version: str = "") -> None:
        self.os, self.architecture, self.variant = _normalize(os, architecture, variant)
        self.os_version = os_version or ""

    @classmethod
    def from_dict(cls, d: dict) -> "Platform":
        return cls(d.get("os", ""), d.get("architecture", ""), d.get("variant", "") or "",
                   d.get("os.version", "") or "")

    def to_dict(self) -> dict:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        return d

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def __repr__(self) -> str:
        return f"Platform({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Platform):
            return NotImplemented
        return (self.os, self.architecture, self.variant) == (other.os, other.architecture, other.variant)

    def __hash__(self) -> int:
        return hash((self.os, self.architecture, self.variant))

    def compatible_variants(self) -> list[str]:
        """Variants this platform can run, best first ("" stands for an entry with no variant)."""
        arch, v = self.architecture, self.variant
        if arch == "arm":
            order = ["v8", "v7", "v6", "v5"]
            out = order[order.index(v):] if v in order else [v]
            return out + [""]
        if arch == "arm64":
            return ["", "v8"] if v in ("", "v8") else [v, "", "v8"]
        if arch == "amd64":
            order = ["v4", "v3", "v2", "v1"]
            if v in order:
                return order[order.index(v):] + [""]
            return ["", "v1"]
        return [v, ""] if v else [""]

    def matches(self, other: "Platform") -> bool:
        """Whether an image built for `other` runs here (os and arch equal, variant compatible)."""
        if self.os != other.os or self.architecture != other.architecture:
            return False
        return other.variant in self.compatible_variants() or (
            self.variant == "" and self.architecture not in ("arm", "amd64", "arm64"))


def _normalize(os_name: str, arch: str, variant: str) -> tuple[str, str, str]:
    os_name = (os_name or "").strip().lower()
    os_name = _OS_ALIASES.get(os_name, os_name)
    raw = (arch or "").strip().lower()
    arch = _ARCH_ALIASES.get(raw, raw)
    variant = (variant or "").strip().lower() or _ARCH_VARIANT_FROM_NAME.get(raw, "")
    if arch == "arm64" and variant in ("8", "v8", "v8.0"):
        variant = ""        # as containerd: v8 is what arm64 means
    elif arch == "arm" and variant in ("5", "6", "7", "8"):
        variant = "v" + variant
    elif arch == "arm" and not variant:
        variant = "v7"
    elif arch == "amd64" and variant == "v1":
        variant = ""
    return os_name, arch, variant


def parse(spec: str) -> Platform:
    """Parse `os/arch[/variant]` (or just `arch`, taken as linux) as in `--platform`."""
    parts = [p for p in (spec or "").strip().split("/")]
    if not spec or any(not p for p in parts) or len(parts) > 3:
        raise PlatformError(f"invalid platform {spec!r}: expected os/arch[/variant]")
    if len(parts) == 1:
        name = parts[0].lower()
        if name in _ARCH_ALIASES:
            return Platform("linux", name)
        if name in ("linux", "windows", "darwin", "freebsd"):
            return Platform(name, host().architecture, host().variant)
        raise PlatformError(f"invalid platform {spec!r}: unknown architecture or os")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


_HOST: Platform | None = None


def host() -> Platform:
    """The platform of this machine (linux/amd64 here)."""
    global _HOST
    if _HOST is None:
        machine = os.uname().machine
        _HOST = Platform("linux", machine, _ARCH_VARIANT_FROM_NAME.get(machine.lower(), ""))
    return _HOST


def coerce(platform: "Platform | str | dict | None") -> Platform:
    if platform is None or platform == "":
        return host()
    if isinstance(platform, Platform):
        return platform
    if isinstance(platform, dict):
        return Platform.from_dict(platform)
    return parse(platform)


def select(manifests: list[dict], want: "Platform | str | None" = None) -> dict:
    """Pick the descriptor in an index's `manifests` that best fits `want` (the host by default).

    Raises PlatformError with docker's wording when nothing fits.
    """
    want = coerce(want)
    ranking = want.compatible_variants()
    best, best_rank = None, None
    for i, desc in enumerate(manifests):
        p = desc.get("platform")
        if not isinstance(p, dict):
            continue
        cand = Platform.from_dict(p)
        if not want.matches(cand):
            continue
        rank = ranking.index(cand.variant) if cand.variant in ranking else len(ranking)
        if best_rank is None or rank < best_rank:
            best, best_rank = desc, rank
    if best is None:
        raise PlatformError(f"no matching manifest for {want} in the manifest list entries")
    return best
