"""Docker's multiplexed stdout/stderr stream (moby's stdcopy): frames of an 8-byte header
(stream number, 3 zero bytes, big-endian payload length) and the payload, read back here."""
from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # the CLI imports this module: typing stays off its start path
    from typing import Iterable, Iterator

FRAME = struct.Struct(">BxxxL")


def demux(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Docker's multiplexed frames, arriving in chunks of any size -> (stream, payload)."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while len(buf) >= FRAME.size:
            stream, length = FRAME.unpack_from(buf)
            if len(buf) < FRAME.size + length:
                break
            yield stream, bytes(buf[FRAME.size:FRAME.size + length])
            del buf[:FRAME.size + length]
