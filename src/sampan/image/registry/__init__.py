"""Registries: ``pull`` and ``push`` between a registry and the image store, ``check_login``;
under them the distribution API client (client.py) on HTTP and TLS (http.py) with token and
basic auth (auth.py)."""
from .client import Registry
from .errors import Cancelled, ConnectionFailed, NotFound, RegistryError, Unauthorized
from .login import check_login, login
from .pull import PullResult, pull
from .push import PushResult, push, push_manifest

__all__ = ["Registry", "RegistryError", "Unauthorized", "NotFound", "ConnectionFailed", "Cancelled",
           "pull", "PullResult", "push", "PushResult", "push_manifest", "check_login", "login"]
