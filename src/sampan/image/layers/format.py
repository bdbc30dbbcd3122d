"""What layer tars are made of, for the reader, the applier and the writer alike: the tar
block, the OCI whiteout names, the overlayfs xattrs, and the one error of this package."""
from __future__ import annotations

from ... import errors

BLOCK = 512                # a tar block: headers and the padding of member data

REGTYPES = (b"0", b"\0", b"7")   # regular-file type flags (7: contiguous, taken as regular)

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
# overlayfs reads these from the layer directories: never taken from, nor put into, a tar
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


class LayerError(errors.Invalid):
    """A layer cannot be applied: corrupt, truncated, wrong digest, or unsafe. One line."""


def show(name: bytes) -> str:
    """A member name as an error message shows it."""
    return repr(name.decode("utf-8", "backslashreplace"))
