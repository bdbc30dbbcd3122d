"""The names cli/images.py still imports for login and logout; credentials live in
sampan.image.credentials, the login check in sampan.image.registry (remove this once the CLI
logs in through the API)."""
from .credentials import erase as logout
from .credentials import normalize_host
from .registry import login

__all__ = ["login", "logout", "normalize_host"]
