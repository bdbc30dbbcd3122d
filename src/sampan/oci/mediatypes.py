"""Media types of the OCI image spec and Docker's image formats, defined once.

Docker's types are the ones ``docker save``, Docker Hub and older registries use; OCI's are
what the image spec and ``docker buildx --output type=oci`` write. ``TO_OCI`` maps the Docker
ones to their OCI equivalents (for OCI layouts made from Docker images).
"""
from __future__ import annotations

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDISTRIBUTABLE_LAYER_GZIP = OCI_NONDISTRIBUTABLE_LAYER + "+gzip"
OCI_NONDISTRIBUTABLE_LAYER_ZSTD = OCI_NONDISTRIBUTABLE_LAYER + "+zstd"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = DOCKER_LAYER + ".gzip"
DOCKER_LAYER_ZSTD = DOCKER_LAYER + ".zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
# What a registry client accepts for GET /v2/<name>/manifests/<reference>.
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])
# Layers a registry does not serve (their bytes come from elsewhere): never pushed.
NONDISTRIBUTABLE_LAYERS = frozenset({DOCKER_FOREIGN_LAYER, OCI_NONDISTRIBUTABLE_LAYER,
                                     OCI_NONDISTRIBUTABLE_LAYER_GZIP, OCI_NONDISTRIBUTABLE_LAYER_ZSTD})

TO_OCI = {
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER: OCI_LAYER,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER_ZSTD: OCI_LAYER_ZSTD,
    DOCKER_FOREIGN_LAYER: OCI_NONDISTRIBUTABLE_LAYER_GZIP,
}

# The OCI layer type for a compression found by sniffing a blob ("none", "gzip", ...); xz and
# bzip2 are not in the spec but are what such a layer's type would be (docker load takes them).
OCI_LAYER_BY_COMPRESSION = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD,
                            "xz": OCI_LAYER + "+xz", "bzip2": OCI_LAYER + "+bzip2"}


def layer_compression(media_type: str | None) -> str | None:
    """'gzip', 'zstd', 'none', or None when the media type does not say (then sniff)."""
    if not media_type:
        return None
    mt = media_type.lower()
    if mt.endswith("gzip"):
        return "gzip"
    if mt.endswith("zstd"):
        return "zstd"
    if mt.endswith(".tar"):
        return "none"
    return None
