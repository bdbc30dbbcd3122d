"""The registry's errors, one line each and in the registry's words where it gave any, each
with the kind (sampan.errors) the API answers with."""
from __future__ import annotations

from ... import errors


class RegistryError(errors.Error):
    """A registry operation failed; str() is a one-line message like docker's. ``status`` is
    the HTTP status the registry answered (None when it answered nothing)."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Unauthorized(RegistryError, errors.Forbidden):
    """Missing or wrong credentials (401/403)."""


class NotFound(RegistryError, errors.NotFound):
    """Manifest, blob or repository unknown (404)."""


class ConnectionFailed(RegistryError, errors.Unavailable):
    """The registry could not be reached (refused, DNS, TLS, timeouts) after the retries."""


class Cancelled(RegistryError):
    """A transfer was stopped because another one in the same pull or push failed."""


def error_from_response(status: int, body: bytes, context: str) -> RegistryError:
    """Build an error from a registry's JSON error body (`{"errors": [{code, message, detail}]}`)."""
    code = message = None
    try:
        import json
        doc = json.loads(body) if body else None
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if errs and isinstance(errs, list) and isinstance(errs[0], dict):
            code = str(errs[0].get("code") or "") or None
            message = str(errs[0].get("message") or "") or None
        elif isinstance(doc, dict) and isinstance(doc.get("details") or doc.get("error"), str):
            message = doc.get("details") or doc.get("error")
    except ValueError:
        text = body[:200].decode("utf-8", "replace").strip() if body else ""
        message = text.splitlines()[0] if text else None
    cls: type[RegistryError]
    if status == 401 or code == "UNAUTHORIZED":
        cls, code = Unauthorized, code or "UNAUTHORIZED"
    elif status == 403 or code == "DENIED":
        cls, code = Unauthorized, code or "DENIED"
    elif status == 404:
        cls = NotFound
    else:
        cls = RegistryError
    if status == 404 and not code:
        code = "NOT_FOUND"
    words = code.lower().replace("_", " ") if code else f"http {status}"
    if status == 401 and (not message or message.lower() == words):
        message = "authentication required"
    if not message or message.lower() == words:
        text = f"{words}: {context}"
    else:
        text = f"{words}: {message}"
        if cls is NotFound and context:
            text += f" ({context})"
    return cls(text, code=code, status=status)


def describe_os_error(e: BaseException, netloc: str) -> str:
    """A connection failure in docker's words (``connection refused: host:port``, ...)."""
    import ssl
    if isinstance(e, ConnectionRefusedError):
        return f"connection refused: {netloc}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"tls: certificate verify failed for {netloc}: {e.verify_message or e.reason}"
    if isinstance(e, ssl.SSLError):
        return f"tls: handshake with {netloc} failed: {e.reason or e}"
    if isinstance(e, TimeoutError) or type(e).__name__ == "timeout":
        return f"timeout: {netloc}"
    import socket
    if isinstance(e, socket.gaierror):
        return f"lookup {netloc.rsplit(':', 1)[0] if netloc.count(':') == 1 else netloc}: {e.strerror or e}"
    if isinstance(e, OSError) and e.strerror:
        return f"connection failed: {netloc}: {e.strerror.lower()}"
    return f"connection failed: {netloc}: {type(e).__name__}{': ' + str(e) if str(e) else ''}"
