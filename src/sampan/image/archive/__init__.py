"""Image archives: ``load`` docker-archives and OCI image layouts (load.py, reading them
through sources.py), ``save`` them (save.py), ``import_rootfs`` a root filesystem tarball
(rootfs.py); layout.py holds what they share (paths in an OCI layout, manifests, the error).

Load reads the archive once, front to back; layer members go through in-memory pipes into
``ImageStore.import_layer`` on a thread pool, so several layers unpack at once while the
archive is still being read. Save writes what Docker 25+ writes: a docker-archive that is
also an OCI image layout.
"""
from .layout import ArchiveError, Progress, make_manifest
from .load import LoadedImage, load
from .rootfs import import_rootfs
from .save import save, save_dir

__all__ = ["ArchiveError", "Progress", "LoadedImage", "load", "save", "save_dir", "import_rootfs",
           "make_manifest"]
