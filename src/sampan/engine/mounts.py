"""The mounts a ContainerCreate body asks for (Binds, Mounts, Tmpfs), checked as dockerd checks
them; the engine resolves volumes and binds, spec.build() turns them into OCI mounts."""
from __future__ import annotations

import os

from .errors import SpecInputError


def parse_mounts(host_config: dict) -> list[dict]:
    """The mounts asked for by Binds, Mounts and Tmpfs, as
    {Type, Source, Destination, RW, Mode, Name?, TmpfsOptions?, Propagation}."""
    out: list[dict] = []
    for spec in host_config.get("Binds") or []:
        parts = spec.split(":")
        if len(parts) < 2 or len(parts) > 3 or not parts[0] or not parts[1]:
            raise SpecInputError(f"invalid volume specification: '{spec}'")
        src, dst = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else ""
        opts = set(mode.split(",")) if mode else set()
        unknown = opts - {"ro", "rw", "z", "Z", "nocopy", "private", "rprivate", "shared", "rshared",
                          "slave", "rslave"}
        if unknown:
            raise SpecInputError(f"invalid mode: {mode}")
        if not dst.startswith("/"):
            raise SpecInputError(f"invalid volume specification: '{spec}': invalid mount config for type "
                                 f"\"volume\": invalid mount path: '{dst}' mount path must be absolute")
        prop = next((o for o in opts if o.endswith(("private", "shared", "slave"))), "rprivate")
        if src.startswith("/"):
            out.append({"Type": "bind", "Source": src, "Destination": dst, "RW": "ro" not in opts,
                        "Mode": mode, "Propagation": prop, "CreateSource": True})
        else:
            out.append({"Type": "volume", "Name": src, "Source": "", "Destination": dst, "RW": "ro" not in opts,
                        "Mode": mode or "z", "Propagation": "", "NoCopy": "nocopy" in opts})
    for m in host_config.get("Mounts") or []:
        typ = (m.get("Type") or "volume").lower()
        dst = m.get("Target") or m.get("Destination") or ""
        if not dst.startswith("/"):
            raise SpecInputError(f"invalid mount config for type \"{typ}\": invalid mount path: '{dst}' "
                                 "mount path must be absolute")
        ro = bool(m.get("ReadOnly"))
        if typ == "bind":
            src = m.get("Source") or ""
            if not src.startswith("/"):
                raise SpecInputError(f"invalid mount config for type \"bind\": invalid mount path: '{src}'")
            if not os.path.exists(src):
                raise SpecInputError(f"invalid mount config for type \"bind\": bind source path does not exist: {src}")
            prop = ((m.get("BindOptions") or {}).get("Propagation")) or "rprivate"
            out.append({"Type": "bind", "Source": src, "Destination": dst, "RW": not ro, "Mode": "",
                        "Propagation": prop, "CreateSource": False})
        elif typ == "volume":
            vo = m.get("VolumeOptions") or {}
            out.append({"Type": "volume", "Name": m.get("Source") or "", "Source": "", "Destination": dst,
                        "RW": not ro, "Mode": "z", "Propagation": "", "NoCopy": bool(vo.get("NoCopy")),
                        "Labels": vo.get("Labels") or {}})
        elif typ == "tmpfs":
            if m.get("Source"):
                raise SpecInputError("invalid mount config for type \"tmpfs\": Source must not be specified")
            to = m.get("TmpfsOptions") or {}
            opts = []
            if to.get("SizeBytes"):
                opts.append(f"size={int(to['SizeBytes'])}")
            if to.get("Mode"):
                opts.append(f"mode={int(to['Mode']):o}")
            if ro:
                opts.append("ro")
            out.append({"Type": "tmpfs", "Source": "", "Destination": dst, "RW": not ro, "Mode": "",
                        "Propagation": "", "TmpfsOptions": opts})
        else:
            raise SpecInputError(f"mount type unknown: {typ}")
    for dst, options in (host_config.get("Tmpfs") or {}).items():
        opts = [o for o in (options or "").split(",") if o]
        out.append({"Type": "tmpfs", "Source": "", "Destination": dst, "RW": "ro" not in opts, "Mode": "",
                    "Propagation": "", "TmpfsOptions": opts})
    seen: set[str] = set()
    for m in out:
        d = os.path.normpath(m["Destination"])
        m["Destination"] = d
        if d in seen:
            raise SpecInputError(f"Duplicate mount point: {d}")
        seen.add(d)
    return out
