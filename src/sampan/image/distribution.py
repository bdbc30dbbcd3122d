"""The names api/image_service.py and cli/images.py still import for pulling and pushing;
the one pull and push path is sampan.image.registry (remove this once they call it)."""
from .registry import pull as pull_image
from .registry import push as push_image

__all__ = ["pull_image", "push_image"]
