"""libnftables (Debian's libnftables1) in-process through its JSON interface.

One ``Nftables`` is one libnftables context: its netlink socket belongs to the network
namespace of the thread that made it, so a firewall made in a thread that joined a namespace
works on that namespace's ruleset from any thread afterwards. Each ``run`` is one netlink
batch, which the kernel applies as one transaction: all of its commands or none. A context is
not safe to share between threads at once; the caller serialises (firewall.py holds a lock).
"""
from __future__ import annotations

import ctypes
import json
import re
from typing import Any

from ..api import NetworkError

_LIBRARY = "libnftables.so.1"
# enum nft_ctx_output_flags (nftables/libnftables.h)
_OUTPUT_HANDLE = 1 << 3
_OUTPUT_JSON = 1 << 4


class NftablesError(NetworkError):
    """libnftables refused a command batch; the message is its first error line."""


def _load() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(_LIBRARY, use_errno=True)
    except OSError as e:
        raise NetworkError(f"nftables: cannot load {_LIBRARY} (install Debian's libnftables1): {e}") from None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_free.restype = None
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_output_set_flags.restype = None
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_int
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


_lib: ctypes.CDLL | None = None


class Nftables:
    """A libnftables context that takes and gives JSON (libnftables-json(5))."""

    def __init__(self) -> None:
        global _lib
        if _lib is None:
            _lib = _load()
        self._lib = _lib
        ctx = self._lib.nft_ctx_new(0)
        if not ctx:
            raise NetworkError("nftables: nft_ctx_new failed")
        self._ctx: int | None = ctx
        # JSON output also makes libnftables read its input as JSON; handles let a rule be
        # deleted by the handle a listing shows.
        self._lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON | _OUTPUT_HANDLE)
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply ``commands`` (the items of {"nftables": [...]}) as one transaction and return
        the items of the output (a listing's objects; empty for changes)."""
        if self._ctx is None:
            raise NetworkError("nftables: context already closed")
        buffer = json.dumps({"nftables": commands}, separators=(",", ":")).encode()
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, buffer)
        out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            # "internal:0:0-0: Error: Could not process rule: ..." -> "Could not process rule: ..."
            lines = [re.sub(r"^internal:[\d:-]+: Error: ", "", line.strip())
                     for line in err.decode(errors="replace").splitlines() if line.strip()]
            raise NftablesError(f"nftables: {lines[0] if lines else 'command failed'}")
        if not out.strip():
            return []
        return [item for item in json.loads(out)["nftables"] if "metainfo" not in item]

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
