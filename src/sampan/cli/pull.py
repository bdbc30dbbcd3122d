"""The one pull of the CLI (`sampan pull` and the implicit pull of `run`/`create`): POST
/images/create with the platform and the stored login as X-Registry-Auth, the daemon's
progress shown as Docker shows it. The daemon decides which registries are insecure
(sampand --insecure-registry), for every pull alike."""
from __future__ import annotations

import base64

from .. import fastjson
from .client import Client
from .command import CLIError
from .progress import JSONProgress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO


def parse_reference(name: str, default_tag: bool = True):  # -> image.reference.Reference
    """A reference as the docker CLI checks it before asking the daemon."""
    from ..image import reference
    try:
        return reference.parse(name, default_tag=default_tag)
    except ValueError as e:
        raise CLIError(str(e)) from None


def registry_auth(domain: str) -> dict:
    """The X-Registry-Auth header for ``domain`` from the credentials `sampan login` stored
    (as the docker CLI sends them: base64url of the JSON AuthConfig); empty without a login."""
    from ..image import credentials
    found = credentials.lookup(domain)
    if found is None:
        return {}
    doc = {"username": found[0], "password": found[1], "serveraddress": domain}
    return {"X-Registry-Auth": base64.urlsafe_b64encode(fastjson.dumps(doc).encode()).decode()}


def pull(client: Client, name: str, platform: str | None, out: TextIO, quiet: bool = False) -> str:
    """Pull ``name`` through the daemon, showing its progress on ``out``; returns the
    reference pulled (with the tag docker adds: latest)."""
    ref = parse_reference(name, default_tag=False)
    if not ref.tag and not ref.digest:
        if not quiet:
            print("Using default tag: latest", file=out, flush=True)
        ref = ref.with_tag("latest")
    query = {"fromImage": str(ref), "platform": platform or None}
    with JSONProgress(out, quiet=quiet) as progress:
        progress.show_all(client.json_lines("POST", "/images/create", query, headers=registry_auth(ref.domain)))
    return str(ref)
