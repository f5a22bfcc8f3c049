"""MANGO: multimodal fusion with exact normalizing flows built from invertible cross-attention.

The fusion module for your own models (``docs/tutorial.md``, ``docs/api.md``)::

    from mango import FlowFusion      # MANGO fusion: tokens -> fused tokens + NLL
    from mango import IdentityFusion  # the concatenation baseline with the same interface
    from mango import build_fusion    # any fusion by name, baselines sized to the flow

They are imported on first use, so ``import mango`` (and the ``mango`` command's start-up) does
not load torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("mango-fusion")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

#: public name -> the module that defines it
_PUBLIC = {
    "Fusion": "mango.models.fusion",
    "FusionOutput": "mango.models.fusion",
    "build_fusion": "mango.models.fusion",
    "FlowFusion": "mango.models.fusion",
    "IdentityFusion": "mango.models.fusion",
    "TransformerFusion": "mango.models.fusion",
    "CrossAttentionFusion": "mango.models.fusion",
    "TokenFusion": "mango.models.fusion",
    "GeminiFusion": "mango.models.fusion",
    "CMXFusion": "mango.models.fusion",
    "TokenEmbedding": "mango.models.fusion",
    "MangoFlow": "mango.flows",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mango' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
