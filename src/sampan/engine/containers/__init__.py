"""The container engine (see engine.py); one module per part of a container's life."""
from .engine import Engine

__all__ = ["Engine"]
