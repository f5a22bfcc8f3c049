"""MANGO: multimodal fusion with exact normalizing flows built from invertible cross-attention."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mango-fusion")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
