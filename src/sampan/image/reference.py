"""Image references, normalised as Docker does.

``busybox`` is ``docker.io/library/busybox:latest``; ``localhost:5000/a/b`` keeps its
registry; ``name@sha256:…`` pins a digest. The grammar is distribution/reference's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .. import errors

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^(?:({_DOMAIN})/)?({_PATH})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


class InvalidReference(errors.Invalid):
    """ "invalid reference format: ...": the caller's input (400), a ValueError too."""


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """``docker.io/library/busybox``: the full name without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def name(self) -> str:
        """The repository name the registry API wants (``library/busybox``)."""
        return self.path

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def familiar_name(self) -> str:
        """``busybox``, ``user/app``, ``localhost:5000/a/b``: the name as docker shows it."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        path = self.path
        if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX):]:
            path = path[len(OFFICIAL_PREFIX):]
        return path

    def familiar(self) -> str:
        """``busybox:latest``, ``localhost:5000/a/b:tag``, ``alpine@sha256:…``."""
        out = self.familiar_name()
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def with_tag(self, tag: str | None) -> Reference:
        if tag is not None and not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid reference format: invalid tag {tag!r}")
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str | None) -> Reference:
        if digest is not None and not _DIGEST_RE.match(digest):
            raise InvalidReference(f"invalid reference format: invalid digest {digest!r}")
        return Reference(self.domain, self.path, None, digest)

    def without_tag_or_digest(self) -> Reference:
        return Reference(self.domain, self.path)


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i == -1 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(ref: str, default_tag: bool = True) -> Reference:
    """Parse and normalise ``ref``; adds ``:latest`` when it has neither tag nor digest
    (unless ``default_tag`` is false). Raises InvalidReference("invalid reference format: …")."""
    if not isinstance(ref, str) or not ref:
        raise InvalidReference("invalid reference format: repository name must have at least one component")
    if _HEX64_RE.match(ref):
        raise InvalidReference(f"invalid reference format: invalid repository name ({ref}), "
                         "cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_domain(ref)
    remote = remainder.split("@", 1)[0]
    tag_sep = remote.find(":")
    remote_name = remote[:tag_sep] if tag_sep >= 0 else remote
    if remote_name.lower() != remote_name:
        raise InvalidReference(f"invalid reference format: repository name ({remote_name}) must be lowercase")
    m = _REFERENCE_RE.match(f"{domain}/{remainder}")
    if not m:
        raise InvalidReference(f"invalid reference format: {ref!r}")
    dom, path, tag, digest = m.group(1), m.group(2), m.group(3), m.group(4)
    if dom is None:  # cannot happen: we always prefix a domain, but keep the grammar honest
        raise InvalidReference(f"invalid reference format: {ref!r}")
    if len(dom) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"invalid reference format: repository name must not be more than "
                         f"{NAME_TOTAL_LENGTH_MAX} characters")
    if digest is not None and not _DIGEST_RE.match(digest):
        raise InvalidReference(f"invalid reference format: invalid digest format {digest!r}")
    if default_tag and tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(dom, path, tag, digest)


def is_digest(value: str) -> bool:
    """True for ``sha256:<64 hex>`` (or sha512)."""
    return bool(_DIGEST_RE.match(value))


def familiar(ref: str) -> str:
    """Shortcut: parse(ref).familiar()."""
    return parse(ref).familiar()


def familiar_match(pattern: str, ref: Reference) -> bool:
    """distribution/reference's FamiliarMatch, as ``docker images --filter reference=`` uses
    it: the shell pattern (Go's path.Match: ``*`` and ``?`` never match ``/``) against the
    familiar string (``busybox:latest``), then against the familiar name (``busybox``)."""
    rx = _path_match_re(pattern)
    return bool(rx.fullmatch(ref.familiar()) or rx.fullmatch(ref.familiar_name()))


def _path_match_re(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise InvalidReference(f"syntax error in pattern: {pattern!r}")
            body = pattern[i + 1:end]
            negate = body.startswith("^")
            chars = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + chars.replace("\\", "\\\\").replace("[", "\\[") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))
