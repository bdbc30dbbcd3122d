"""A container's user as Docker resolves it (`--user name|uid[:group|gid]`, `--group-add`)
against the container's own /etc/passwd and /etc/group."""
from __future__ import annotations

from ..runtime.userdb import read_db
from .errors import SpecInputError


def resolve_user(rootfs: str, user: str, group_add: list[str] | None = None) -> dict:
    """Docker's user resolution against the container's /etc/passwd and /etc/group."""
    name, _, group = (user or "").partition(":")
    passwd = read_db(rootfs, "/etc/passwd")
    groups = read_db(rootfs, "/etc/group")
    uid, gid, username = 0, 0, "root"
    if name:
        entry = next((p for p in passwd if len(p) >= 4 and p[0] == name), None)
        if entry is None and name.isdigit():
            entry = next((p for p in passwd if len(p) >= 4 and p[2] == name), None)
            uid, gid, username = int(name), 0, ""
        if entry is not None:
            uid, gid, username = int(entry[2]), int(entry[3]), entry[0]
        elif not name.isdigit():
            raise SpecInputError(f"unable to find user {name}: no matching entries in passwd file")
    elif passwd:
        entry = next((p for p in passwd if len(p) >= 4 and p[2] == "0"), None)
        if entry is not None:
            gid = int(entry[3])
    if group:
        g = next((e for e in groups if len(e) >= 3 and e[0] == group), None)
        if g is not None:
            gid = int(g[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise SpecInputError(f"unable to find group {group}: no matching entries in group file")
    extra: list[int] = []
    if username and not group:
        for e in groups:
            if len(e) >= 4 and username in e[3].split(",") and e[2].isdigit():
                extra.append(int(e[2]))
    for ga in group_add or []:
        g = next((e for e in groups if len(e) >= 3 and e[0] == ga), None)
        if g is not None:
            extra.append(int(g[2]))
        elif str(ga).isdigit():
            extra.append(int(ga))
        else:
            raise SpecInputError(f"Unable to find group {ga}")
    # the primary group is a supplementary one too, as dockerd has made it since
    # CVE-2022-36109 (a group's member must not shed it with setgroups)
    return {"uid": uid, "gid": gid, "additionalGids": sorted(set(extra) | {gid})}
