"""Layer tarballs. The package's interface is what it exports here; inside it each module
has one job:

- ``compression``: what a blob's bytes are (gzip, zstd, xz, bzip2, none) and their
  uncompressed stream, for layers and for whole archives;
- ``tarread``: reading tar members safely, without tarfile;
- ``apply``: a layer onto a directory (overlay or flat, whiteouts, path-escape safety,
  hardlinks, xattrs) and ``verify``; digests computed in the same pass;
- ``tarwrite``: the one tar writer (layer diffs, container export, image save);
- ``format``: block size, whiteout names, overlayfs xattrs, LayerError.
"""
from .apply import ApplyResult, apply, verify
from .format import LayerError
from .tarwrite import DiffResult, diff, export

__all__ = ["LayerError", "ApplyResult", "DiffResult", "apply", "verify", "diff", "export"]
