"""Blob transfer of the registry client: HEAD, download into the content store with Range
resume, upload (monolithic, chunked, cross-repository mount) and running transfers in
parallel. ``Registry`` (client.py) is a ``BlobTransfer``; requests, URLs, scopes and the
transport are its.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from ..content import DigestMismatch
from .errors import Cancelled, ConnectionFailed, NotFound, RegistryError, Unauthorized, describe_os_error
from .http import READ_SIZE, Section, Transport, add_query, join_url

# progress(event, digest, done, total), called from the transfer threads but never concurrently.
Progress = Callable[[str, str, int, int], None]


class BlobTransfer:
    """The blob endpoints of /v2/<name>/blobs/. The class that has them (``Registry``) sends
    the requests: ``_request``, ``_url`` and ``_scope`` are its, and these attributes."""

    host: str
    netloc: str
    http: Transport
    chunk_size: int
    monolithic_max: int
    max_concurrent: int

    def has_blob(self, name: str, digest: str, *, for_push: bool = False) -> int | None:
        """The blob's size when the repository has it, else None."""
        try:
            r = self._request("HEAD", self._url(f"/v2/{name}/blobs/{digest}"),
                              scope=self._scope(name, "pull,push" if for_push else "pull"),
                              ok=(200,), context=f"{name}@{digest}")
        except NotFound:
            return None
        size = r.header("Content-Length")
        r.release()
        return int(size) if size and size.isdigit() else 0

    def fetch_blob(self, name: str, digest: str, store, *, size: int | None = None, progress=None,
                   cancel: threading.Event | None = None) -> str:
        """Download a blob into the content store, resuming a partial download with Range.

        Digest and size are verified by the store's writer. An exception (including one raised
        by `progress`) leaves the partial data in place for the next attempt to resume.
        """
        if store.has(digest):
            if progress:
                n = store.size(digest)
                progress("exists", digest, n, n)
            return digest
        try:
            return self._fetch_blob(name, digest, store, size, progress, cancel, resume=True)
        except DigestMismatch as e:
            if not getattr(e, "resumed_from", 0):
                raise
        # The bytes kept from an earlier attempt were bad: start over once.
        return self._fetch_blob(name, digest, store, size, progress, cancel, resume=False)

    def _fetch_blob(self, name, digest, store, size, progress, cancel, *, resume: bool) -> str:
        import http.client
        url = self._url(f"/v2/{name}/blobs/{digest}")
        w = store.writer(expected=digest, size=size, resume=resume)
        ok = False
        try:
            offset = w.offset
            total = size if size is not None else -1
            if progress:
                progress("resume" if offset else "start", digest, offset, total)
            attempt = 0
            buf = bytearray(READ_SIZE)
            view = memoryview(buf)
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"cancelled: {digest}")
                if size is not None and offset >= size:
                    break
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    r = self._request("GET", url, scope=self._scope(name), headers=headers, ok=(200, 206),
                                      context=f"{self.host}/{name}@{digest}")
                except RegistryError as e:
                    if e.status == 416 and size is not None and offset >= size:
                        break
                    raise
                skip = 0
                if offset and r.status == 200:
                    skip = offset       # the server ignored Range: drop what we already have
                if total < 0:
                    length = r.resp.length
                    if length is not None:
                        total = length + (offset if r.status == 206 else 0)
                try:
                    while True:
                        if cancel is not None and cancel.is_set():
                            raise Cancelled(f"cancelled: {digest}")
                        n = r.resp.readinto(buf)
                        if not n:
                            break
                        chunk = view[:n]
                        if skip:
                            drop = min(skip, n)
                            skip -= drop
                            chunk = chunk[drop:]
                            if not len(chunk):
                                continue
                        w.write(chunk)
                        offset += len(chunk)
                        self.http.count("downloaded", len(chunk))
                        if size is not None and offset > size:
                            raise DigestMismatch(f"blob {digest} is larger than its descriptor's {size} bytes")
                        if progress:
                            progress("progress", digest, offset, total)
                    if r.resp.length:
                        raise http.client.IncompleteRead(b"", r.resp.length)
                except (OSError, http.client.HTTPException) as e:
                    r.discard()
                    if attempt < self.http.retries:
                        self.http.sleep(attempt)
                        attempt += 1
                        continue
                    raise ConnectionFailed(f"{describe_os_error(e, self.netloc)} (downloading {digest})") from None
                except BaseException:
                    r.discard()
                    raise
                r.release()
                break
            got = w.commit()
            ok = True
        except DigestMismatch as e:
            e.resumed_from = w.offset
            raise
        finally:
            if not ok:
                _suspend(w)
        if progress:
            progress("done", digest, offset, offset)
        return got

    def _start_upload(self, name: str, digest: str, mount_from: list[str]) -> tuple[str | None, str]:
        """POST an upload; with `mount_from` repos try a cross-repository mount first.

        Returns (upload URL or None when mounted, how: 'mounted' | 'upload')."""
        for repo in mount_from:
            if repo == name:
                continue
            scope = self._scope(name, "pull,push") + self._scope(repo, "pull")
            url = add_query(self._url(f"/v2/{name}/blobs/uploads/"), mount=digest, **{"from": repo})
            r = self._request("POST", url, scope=scope, headers={"Content-Length": "0"}, body=b"",
                              ok=(201, 202), context=f"{self.host}/{name}")
            loc = r.header("Location")
            status = r.status
            r.release()
            if status == 201:
                return None, "mounted"
            if loc:
                return join_url(r.url, loc), "upload"
        r = self._request("POST", self._url(f"/v2/{name}/blobs/uploads/"), scope=self._scope(name, "pull,push"),
                          headers={"Content-Length": "0"}, body=b"", ok=(202,), context=f"{self.host}/{name}")
        loc = r.header("Location")
        r.release()
        if not loc:
            raise RegistryError(f"{self.host}: upload started without a Location header")
        return join_url(r.url, loc), "upload"

    def _upload_status(self, name: str, url: str) -> tuple[str, int]:
        """(next URL, bytes the registry holds) of an upload session."""
        r = self._request("GET", url, scope=self._scope(name, "pull,push"), ok=(204,),
                          context=f"{self.host}/{name} upload")
        rng = r.header("Range") or ""
        loc = r.header("Location")
        r.release()
        end = -1
        if "-" in rng:
            try:
                end = int(rng.rsplit("-", 1)[1])
            except ValueError:
                end = -1
        return (join_url(url, loc) if loc else url), end + 1

    def upload_blob(self, name: str, digest: str, store, *, size: int | None = None, mount_from=(),
                    progress=None, cancel: threading.Event | None = None) -> str:
        """Upload one blob from the store unless the repository has it.

        Returns 'exists', 'mounted' or 'uploaded'. Blobs up to `monolithic_max` bytes go in one
        PUT; bigger ones in PATCH chunks of `chunk_size` with Content-Range, resumed from the
        registry's upload status after a connection error.
        """
        if size is None:
            size = store.size(digest)
        if self.has_blob(name, digest, for_push=True) is not None:
            if progress:
                progress("exists", digest, size, size)
            return "exists"
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled: {digest}")
        scope = self._scope(name, "pull,push")
        sent = [0]

        def on_read(n: int) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled: {digest}")
            sent[0] += n
            self.http.count("uploaded", n)
            if progress:
                progress("progress", digest, sent[0], size)

        restarts = 0
        while True:
            url, _how = self._start_upload(name, digest, list(mount_from))
            if url is None:
                if progress:
                    progress("mounted", digest, size, size)
                return "mounted"
            if progress:
                progress("start", digest, 0, size)
            try:
                with store.open(digest) as f:
                    if size <= self.monolithic_max:
                        sent[0] = 0
                        body = Section(f, 0, size, on_read)
                        r = self._request("PUT", add_query(url, digest=digest), scope=scope, body=body,
                                          headers={"Content-Type": "application/octet-stream",
                                                   "Content-Length": str(size)},
                                          ok=(201, 204), retry=False, context=f"{self.host}/{name}@{digest}")
                    else:
                        offset, chunk_errors = 0, 0
                        while offset < size:
                            n = min(self.chunk_size, size - offset)
                            sent[0] = offset
                            body = Section(f, offset, n, on_read)
                            try:
                                r = self._request("PATCH", url, scope=scope, body=body, ok=(202, 204), retry=False,
                                                  headers={"Content-Type": "application/octet-stream",
                                                           "Content-Length": str(n),
                                                           "Content-Range": f"{offset}-{offset + n - 1}"},
                                                  context=f"{self.host}/{name}@{digest}")
                            except (ConnectionFailed, RegistryError) as e:
                                if isinstance(e, (Unauthorized, Cancelled)) or chunk_errors >= self.http.retries:
                                    raise
                                if isinstance(e, RegistryError) and not isinstance(e, ConnectionFailed) and (
                                        e.status is None or e.status < 500):
                                    raise
                                self.http.sleep(chunk_errors)
                                chunk_errors += 1
                                status_url, held = self._upload_status(name, url)
                                if held <= 1:
                                    raise   # "0-0" is ambiguous: start the upload over
                                url, offset = status_url, held
                                continue
                            loc = r.header("Location")
                            r.release()
                            if loc:
                                url = join_url(url, loc)
                            offset += n
                        r = self._request("PUT", add_query(url, digest=digest), scope=scope, body=b"",
                                          headers={"Content-Length": "0"}, ok=(201, 204),
                                          context=f"{self.host}/{name}@{digest}")
                got = r.header("Docker-Content-Digest")
                r.release()
            except (ConnectionFailed, RegistryError) as e:
                retryable = isinstance(e, ConnectionFailed) or (e.status is not None and e.status >= 500)
                if isinstance(e, Cancelled) or not retryable or restarts >= self.http.retries:
                    raise
                self.http.sleep(restarts)
                restarts += 1
                continue
            if got and got != digest:
                raise DigestMismatch(f"registry stored {digest} as {got}")
            if progress:
                progress("done", digest, size, size)
            return "uploaded"

    def parallel(self, jobs: list[Callable[[Progress | None, threading.Event], Any]],
                 progress: Progress | None) -> list[Any]:
        """Run `job(progress, cancel)` callables on up to max_concurrent threads; the first
        failure cancels the rest and is raised. Progress calls are serialized."""
        if progress is not None:
            plock = threading.Lock()
            user_progress = progress

            def progress(*a):  # noqa: F811 - serialized wrapper
                with plock:
                    user_progress(*a)
        cancel = threading.Event()
        if len(jobs) <= 1 or self.max_concurrent == 1:
            return [job(progress, cancel) for job in jobs]
        from concurrent.futures import ThreadPoolExecutor
        errors: list[BaseException] = []
        results = [None] * len(jobs)

        def run(i):
            try:
                results[i] = jobs[i](progress, cancel)
            except BaseException as e:
                if not cancel.is_set() or not isinstance(e, Cancelled):
                    errors.append(e)
                cancel.set()

        with ThreadPoolExecutor(max_workers=min(self.max_concurrent, len(jobs)),
                                thread_name_prefix="sampan-registry") as pool:
            futures = [pool.submit(run, i) for i in range(len(jobs))]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                cancel.set()      # e.g. KeyboardInterrupt: stop the workers at their next chunk
                raise
        if errors:
            first = next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
            raise first
        return results


def _suspend(writer) -> None:
    """Leave a writer's partial data for a later resume (close its file, keep the bytes)."""
    for method in ("suspend", "close", "detach"):
        fn = getattr(writer, method, None)
        if fn is not None:
            try:
                fn()
            except Exception:
                pass
            return


