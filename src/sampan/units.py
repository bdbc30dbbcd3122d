"""Sizes as Docker writes and reads them (go-units): "64m", "1.5g" in, "77.9MB", "1.2GiB" out."""
from __future__ import annotations

_BINARY = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5}
_DECIMAL_UNITS = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
_BINARY_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]


def parse_size(value: object) -> int:
    """units.RAMInBytes: 1048576, "512", "64m", "64mb", "1.5g", "10MiB" -> bytes (binary units).
    Raises ValueError("invalid size: '…'") for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size: '{value}'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size: '{value}'")
        return value
    text = str(value).strip().lower()
    digits = text
    while digits and not (digits[-1].isdigit() or digits[-1] == "."):
        digits = digits[:-1]
    unit = text[len(digits):].strip()
    if unit.endswith("ib"):
        unit = unit[:-2]
    elif unit.endswith("b") and len(unit) == 2:
        unit = unit[:-1]
    if unit not in _BINARY or not digits:
        raise ValueError(f"invalid size: '{value}'")
    try:
        number = float(digits)
    except ValueError:
        raise ValueError(f"invalid size: '{value}'") from None
    if number < 0:
        raise ValueError(f"invalid size: '{value}'")
    return int(number * _BINARY[unit])


def human_size(size: float, precision: int = 3) -> str:
    """units.HumanSizeWithPrecision: decimal units, 1.99MB, 77.9MB, 0B (image sizes)."""
    i = 0
    while size >= 1000.0 and i < len(_DECIMAL_UNITS) - 1:
        size /= 1000.0
        i += 1
    return "%.*g%s" % (precision, size, _DECIMAL_UNITS[i])


def bytes_size(size: float) -> str:
    """units.BytesSize: binary units, 1.5GiB, 64MiB, 0B (memory in stats and info)."""
    i = 0
    while size >= 1024.0 and i < len(_BINARY_UNITS) - 1:
        size /= 1024.0
        i += 1
    return "%.4g%s" % (size, _BINARY_UNITS[i])
