"""The images behind the image routes: the engine's image store (so in-use checks and locks
are the engine's) and the image package's transfers on it, with Docker's result shapes, its
progress messages, and its image events (pull, push, tag, untag, delete, load, import, save)."""
from __future__ import annotations

import ipaddress
import urllib.error
import urllib.parse
import urllib.request
from typing import BinaryIO, Callable

from .. import errors
from ..image import archive, reference, registry
from ..engine import filters as _filters
from ..engine.filters import Filters
from ..image.store import ImageStore
from ..timefmt import parse_rfc3339
from .backend import Credentials, Emit
from .progress import Throttle, message

# emit_event(type, action, actor id, attributes): the engine's event log.
EventSink = Callable[[str, str, str, dict[str, str]], object]
_URL_TIMEOUT = 60.0  # seconds without a byte from an import URL
LOOPBACK_CIDR = "127.0.0.0/8"  # always insecure, as with dockerd
_IMAGE_FILTERS = frozenset({"dangling", "label", "before", "since", "reference", "until"})


def _dangling_filter(values: list[str] | None) -> bool | None:
    """``dangling=true|false`` (1/0): which images; None when the filter is absent."""
    if not values:
        return None
    wanted = {v.lower() for v in values}
    if not wanted <= {"true", "1", "false", "0"}:
        raise errors.Invalid(f"invalid filter 'dangling={','.join(values)}'")
    return bool(wanted & {"true", "1"})


def _matching(familiar_refs: list[str], patterns: list[str], tagged: bool) -> list[str]:
    """The references that one of the ``reference`` filter's patterns matches."""
    return [r for r in familiar_refs
            if any(reference.familiar_match(p, reference.parse(r, default_tag=tagged)) for p in patterns)]


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class _PullMessages:
    """A pull's layer events as the messages dockerd streams for them."""

    def __init__(self, ref: reference.Reference, emit: Emit) -> None:
        self.ref, self.emit = ref, emit
        self.begun = False
        self.throttle = Throttle()

    def begin(self) -> None:
        """``latest: Pulling from library/busybox``: once the manifest is resolved."""
        if not self.begun:
            self.begun = True
            self.emit(message(f"Pulling from {self.ref.path}", self.ref.tag or self.ref.digest or "latest"))

    def __call__(self, event: str, digest: str, done: int, total: int) -> None:
        self.begin()
        layer = _short(digest)
        if event == "exists":
            self.emit(message("Already exists", layer))
        elif event == "start":
            self.emit(message("Pulling fs layer", layer))
        elif event == "progress" and self.throttle.due(layer, done, total):
            self.emit(message("Downloading", layer, done, total))
        elif event == "done":
            self.emit(message("Download complete", layer))
            self.emit(message("Pull complete", layer))


class _PushMessages:
    """A push's blob events as dockerd's messages (the config blob is not shown)."""

    def __init__(self, config_digest: str, emit: Emit) -> None:
        self.config_digest, self.emit = config_digest, emit
        self.throttle = Throttle()

    def __call__(self, event: str, digest: str, done: int, total: int) -> None:
        if digest == self.config_digest or event == "manifest":
            return
        layer = _short(digest)
        if event in ("exists", "mounted"):
            self.emit(message("Layer already exists", layer))
        elif event in ("start", "progress") and self.throttle.due(layer, done, total):
            self.emit(message("Pushing", layer, done, total))
        elif event == "done":
            self.emit(message("Pushed", layer))


def registry_config(insecure_registries: list[str]) -> dict:
    """/info's RegistryConfig for ``--insecure-registry`` values, as dockerd's: CIDRs (and
    loopback, always) in InsecureRegistryCIDRs, hosts as IndexConfigs that are not Secure,
    docker.io the official one. A value dockerd refuses raises errors.Invalid."""
    cidrs: list[str] = []
    index: dict[str, dict] = {}
    for entry in [*insecure_registries, LOOPBACK_CIDR]:
        name = entry
        for scheme in ("http://", "https://"):
            if name.lower().startswith(scheme):
                name = name[len(scheme):]
        if "://" in name or not name:
            raise errors.Invalid(f"insecure registry {entry} should not contain '://'" if name
                                 else "insecure registry: an empty value")
        if "/" in name:
            try:
                cidr = str(ipaddress.ip_network(name, strict=False))
            except ValueError:
                raise errors.Invalid(f"insecure registry {entry} is not valid") from None
            if cidr not in cidrs:
                cidrs.append(cidr)
        else:
            index[name] = {"Name": name, "Mirrors": [], "Secure": False, "Official": False}
    index[reference.DEFAULT_DOMAIN] = {"Name": reference.DEFAULT_DOMAIN, "Mirrors": [], "Secure": True,
                                       "Official": True}
    return {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": cidrs, "IndexConfigs": index, "Mirrors": []}


class ImageService:
    def __init__(self, store: ImageStore, emit_event: EventSink, insecure_registries: list[str]) -> None:
        self.store = store
        self.emit_event = emit_event
        self.insecure_registries = insecure_registries
        self._registry_config = registry_config(insecure_registries)

    def registry_config(self) -> dict:
        """/info's RegistryConfig."""
        return self._registry_config

    def _event(self, action: str, actor: str, name: str) -> None:
        self.emit_event("image", action, actor, {"name": name})

    # ------------------------------------------------------------------ the store
    def summaries(self, all: bool = False, filters: Filters | None = None) -> list[dict]:
        """``GET /images/json``: newest first; intermediate images only with ``all``. Filters as
        dockerd's: ``reference`` (the tags and digests shown narrowed to the matching ones),
        ``before``/``since`` (an image), ``until``, ``dangling``, ``label``."""
        filters = filters or {}
        _filters.accept(filters, _IMAGE_FILTERS)
        dangling = _dangling_filter(filters.get("dangling"))
        until = _filters.time_filter(filters, "until")
        before = [self._created(name) for name in filters.get("before") or ()]
        since = [self._created(name) for name in filters.get("since") or ()]
        patterns = filters.get("reference") or []
        out = []
        for img in self.store.list():
            created = parse_rfc3339(img.created)
            if dangling is not None and img.dangling != dangling:
                continue
            if not all and img.dangling and self.store.meta.children(img.id):
                continue  # an intermediate image
            if any(created >= t for t in before) or any(created <= t for t in since) or \
                    (until is not None and created > until):
                continue
            tags, digests = img.repo_tags, img.repo_digests
            if patterns:
                tags, digests = _matching(tags, patterns, True), _matching(digests, patterns, False)
                if not tags and not digests:
                    continue
            labels = (img.config.get("config") or {}).get("Labels") or {}
            if not _filters.labels_match(labels, {"label": filters.get("label") or []}):
                continue
            out.append({"Id": img.id, "ParentId": img.parent, "RepoTags": tags, "RepoDigests": digests,
                        "Created": int(created), "Size": img.size, "SharedSize": -1, "VirtualSize": img.size,
                        "Labels": labels, "Containers": -1})
        out.sort(key=lambda d: -d["Created"])
        return out

    def _created(self, name: str) -> float:
        """The creation time of the image a ``before``/``since`` filter names (404 if none)."""
        return parse_rfc3339(self.store.resolve(name).created)

    def layers_size(self) -> int:
        """Bytes of the unpacked layers (``system df``'s LayersSize)."""
        return self.store.disk_usage()["layers"]

    def inspect(self, name: str) -> dict:
        return self.store.inspect(name)

    def history(self, name: str) -> list[dict]:
        return self.store.history(name)

    def tag(self, name: str, ref: str) -> None:
        image_id = self.store.resolve(name).id
        self.store.tag(image_id, ref)
        self._event("tag", image_id, reference.familiar(ref))

    def _removal_events(self, records: list[dict]) -> None:
        for record in records:
            if "Untagged" in record:
                self._event("untag", record["Untagged"], record["Untagged"])
            else:
                self._event("delete", record["Deleted"], record["Deleted"])

    def remove(self, name: str, force: bool = False, prune: bool = True) -> list[dict]:
        records = self.store.remove(name, force, prune)
        self._removal_events(records)
        return records

    def prune(self, dangling_only: bool = True) -> dict:
        result = self.store.prune(dangling_only)
        self._removal_events(result.get("ImagesDeleted") or [])
        return result

    # ------------------------------------------------------------------ archives
    def check_names(self, names: list[str]) -> None:
        for name in names:
            self.store.resolve(name)

    def load(self, src: BinaryIO, emit: Emit, progress: bool) -> None:
        """``docker load``: the ``stream`` lines dockerd sends for what was loaded, and with
        ``progress`` a "Loading layer" message per layer as it is read."""
        throttle = Throttle()

        def on_layer(event: str, key: str, done: int, total: int) -> None:
            if event == "done" or throttle.due(key, done, total):
                emit(message("Loading layer", key, done, total))

        for item in archive.load(self.store, src, progress=on_layer if progress else None):
            for tag, old in item.replaced:
                emit({"stream": f"The image {tag} already exists, renaming the old one with ID {old} "
                                "to empty string\n"})
            for tag in item.tags:
                emit({"stream": f"Loaded image: {tag}\n"})
                self._event("load", item.id, tag)
            if not item.tags:
                emit({"stream": f"Loaded image ID: {item.id}\n"})
                self._event("load", item.id, item.id)

    def save(self, names: list[str], out: BinaryIO) -> None:
        archive.save(self.store, names, out)
        for name in names:
            self._event("save", name, name)

    def import_rootfs(self, src: BinaryIO, ref: str | None, changes: list[str], comment: str,
                      platform: str | None, progress: archive.Progress | None = None) -> str:
        """``docker import``: a root filesystem tar becomes an image; returns its ID."""
        image_id = archive.import_rootfs(self.store, src, reference=ref, changes=changes, message=comment,
                                         platform=platform, progress=progress)
        self._event("import", image_id, reference.familiar(ref) if ref else image_id)
        return image_id

    def import_url(self, url: str, ref: str | None, changes: list[str], comment: str, platform: str | None,
                   emit: Emit) -> str:
        """``docker import URL``: the root filesystem fetched over HTTP(S) as it is imported, with
        dockerd's "Importing" progress; returns the image ID."""
        if "://" not in url:
            url = "http://" + url  # dockerd's default scheme
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise errors.Invalid(f"import from {url}: only http and https URLs can be fetched")
        try:
            resp = urllib.request.urlopen(url, timeout=_URL_TIMEOUT)
        except urllib.error.HTTPError as e:
            raise errors.Invalid(f"import from {url}: {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise errors.Unavailable(f"import from {url}: {getattr(e, 'reason', e)}") from None
        with resp:
            total = int(resp.headers.get("Content-Length") or 0)
            throttle = Throttle()

            def on_read(event: str, key: str, done: int, size: int) -> None:
                if event == "progress" and throttle.due(key, done, total):
                    emit(message("Importing", "", done, total))

            return self.import_rootfs(resp, ref, changes, comment or f"Imported from {url}", platform, on_read)

    # ------------------------------------------------------------------ registries
    def pull(self, name: str, platform: str | None, auth: Credentials | None, emit: Emit) -> None:
        """``docker pull``: ``name`` with a tag or digest, or without one every tag of the
        repository (``docker pull --all-tags``), as dockerd takes a missing tag."""
        named = reference.parse(name, default_tag=False)
        if named.tag or named.digest:
            result = self._pull_one(named, platform, auth, emit, None)
            emit(message(f"Status: Image is up to date for {result.reference}" if result.up_to_date
                         else f"Status: Downloaded newer image for {result.reference}"))
            return
        with registry.Registry(named.domain, insecure=self.insecure_registries, credentials=auth) as client:
            results = [self._pull_one(named.with_tag(tag), platform, auth, emit, client)
                       for tag in client.tags(named.path)]
        if not results:
            raise errors.NotFound(f"repository {named.familiar_name()} has no tags")
        emit(message(f"Status: Image is up to date for {named.familiar_name()}" if all(r.up_to_date for r in results)
                     else f"Status: Downloaded newer image for {named.familiar_name()}"))

    def _pull_one(self, ref: reference.Reference, platform: str | None, auth: Credentials | None, emit: Emit,
                  client: registry.Registry | None) -> registry.PullResult:
        messages = _PullMessages(ref, emit)
        result = registry.pull(self.store, str(ref), platform=platform, auth=auth, insecure=self.insecure_registries,
                               progress=messages, registry=client)
        messages.begin()
        emit(message(f"Digest: {result.digest}"))
        self._event("pull", result.reference, ref.familiar_name())
        return result

    def push_targets(self, name: str, tag: str | None) -> list[str]:
        """The references a push uploads: ``name:tag``, or every tag of the repository."""
        named = reference.parse(name, default_tag=False)
        repo, tag = named.without_tag_or_digest(), tag or named.tag
        if tag:
            targets = [str(repo.with_tag(tag))]
        else:
            targets = sorted({str(r) for img in self.store.list() for r in map(reference.parse, img.refs)
                              if "@" not in str(r) and r.repository == repo.repository})
        if not targets:
            raise errors.NotFound(f"An image does not exist locally with the tag: {repo.familiar()}")
        for target in targets:
            try:
                self.store.resolve(target)
            except LookupError:
                raise errors.NotFound("An image does not exist locally with the tag: "
                                      f"{reference.familiar(target)}") from None
        return targets

    def push(self, targets: list[str], auth: Credentials | None, emit: Emit) -> None:
        repo = reference.parse(targets[0])
        emit(message(f"The push refers to repository [{repo.familiar_name()}]"))
        for target in targets:
            ref = reference.parse(target)
            img = self.store.resolve(target)
            for layer in reversed(img.layers):
                emit(message("Preparing", _short(layer.digest)))
            result = registry.push(self.store, target, auth=auth, insecure=self.insecure_registries,
                                   progress=_PushMessages(img.id, emit))
            emit(message(f"{ref.tag}: digest: {result.digest} size: {result.size}"))
            emit({"progressDetail": {}, "aux": {"Tag": ref.tag, "Digest": result.digest, "Size": result.size}})
            self._event("push", ref.familiar(), ref.familiar_name())

    def login(self, server: str, username: str, password: str) -> dict:
        registry.check_login(server or "https://index.docker.io/v1/", username, password,
                             insecure=self.insecure_registries)
        return {"Status": "Login Succeeded", "IdentityToken": ""}
