"""The integer fields of a create body, checked as dockerd's JSON decoding checks them: a
string, a bool or a fraction where Go has an int is the client's error (400, Go's words),
never an int() of it failing later as the engine's (500)."""
from __future__ import annotations

from typing import Any

from .errors import InvalidParameter

_HOST_CONFIG_INT64 = ("Memory", "MemoryReservation", "MemorySwap", "KernelMemory", "KernelMemoryTCP", "NanoCpus",
                      "CpuShares", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpuCount",
                      "CpuPercent", "ShmSize", "PidsLimit", "MemorySwappiness")
_HOST_CONFIG_INT = {"OomScoreAdj": "int", "BlkioWeight": "uint16"}


def _json_kind(value: Any) -> str:
    """How Go's decoder names the JSON value it could not store."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _check(value: Any, field: str, go_type: str) -> None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return
    raise InvalidParameter(f"json: cannot unmarshal {_json_kind(value)} into Go struct field {field} of type {go_type}")


def check_create_body(body: dict) -> None:
    """Raises InvalidParameter for the first integer field of ``body`` that holds no integer."""
    _check(body.get("StopTimeout"), "ContainerConfigWrapper.StopTimeout", "int")
    hc = body.get("HostConfig") or {}
    if not isinstance(hc, dict):
        raise InvalidParameter(f"json: cannot unmarshal {_json_kind(hc)} into Go struct field "
                               "ContainerConfigWrapper.HostConfig of type container.HostConfig")
    for name in _HOST_CONFIG_INT64:
        _check(hc.get(name), f"HostConfig.HostConfig.{name}", "int64")
    for name, go_type in _HOST_CONFIG_INT.items():
        _check(hc.get(name), f"HostConfig.HostConfig.{name}", go_type)
    policy = hc.get("RestartPolicy") or {}
    if isinstance(policy, dict):
        _check(policy.get("MaximumRetryCount"), "RestartPolicy.HostConfig.RestartPolicy.MaximumRetryCount", "int")
    for ulimit in hc.get("Ulimits") or []:
        if isinstance(ulimit, dict):
            for name in ("Soft", "Hard"):
                _check(ulimit.get(name), f"Ulimit.HostConfig.Ulimits.{name}", "int64")
