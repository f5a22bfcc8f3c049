"""The one interface every fusion implements: :class:`Fusion` and its :class:`FusionOutput`.

A fusion receives ``M`` modalities' tokens, each ``(B, L_m, D)`` with one width ``D``, and
returns fused tokens for every modality (the same shapes), plus what some fusions add:
``bits_per_dim`` (a density: MANGO's flow) and ``aux_loss`` (an extra training loss:
TokenFusion's sparsity term). Task models build their fusion with
:func:`mango.models.fusion.build_fusion` and never branch on its name.

Inputs may be given as a list, or as a mapping ``modality name -> tokens`` (the order of the
mapping is the token order); a ``(B, D)`` vector counts as one token ``(B, 1, D)`` and its fused
output comes back as ``(B, D)``.

Example:
    >>> import torch
    >>> from mango.models.fusion import build_fusion
    >>> fusion = build_fusion("concat", dim=4, tokens=[3, 1])
    >>> out = fusion({"audio": torch.randn(2, 3, 4), "video": torch.randn(2, 4)})
    >>> [tuple(t.shape) for t in out.tokens], out.names
    ([(2, 3, 4), (2, 4)], ('audio', 'video'))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.fusion.budget import Budget
from mango.models.fusion.filler import ModalityFiller

TokenInput = Sequence[Tensor] | Mapping[str, Tensor]


@dataclass
class FusionOutput:
    """What a fusion returns.

    Attributes:
        tokens: fused tokens per modality, in input order and input shape.
        bits_per_dim: ``(B,)`` negative log-likelihood of the joint tokens in bits per dimension
            (``None`` for fusions without a density, or when it was not asked for).
        aux_loss: a scalar the fusion adds to the training loss (``None``: nothing).
        names: the modality names when the input was a mapping, else ``None``.
    """

    tokens: list[Tensor]
    bits_per_dim: Tensor | None = None
    aux_loss: Tensor | None = None
    names: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Tensor]:
        """``name -> fused tokens`` (only for mapping inputs)."""
        if self.names is None:
            raise ValueError("the fusion was called with a list; its outputs have no names")
        return dict(zip(self.names, self.tokens, strict=True))


class Fusion(nn.Module):
    """Base class of every fusion: normalises the inputs, then calls :meth:`fuse`.

    ``fusion(tokens)`` maps ``[x_1, ..., x_M]``, :math:`x_m \\in \\mathbb{R}^{B \\times L_m
    \\times D}`, to a :class:`FusionOutput` with fused tokens :math:`y_m` of the same shapes.
    Subclasses set the class attributes and implement :meth:`fuse` on a list of ``(B, L_m, D)``
    tensors whose counts are ``self.tokens``.

    Before :meth:`fuse`, the tokens pass through ``filler`` (a
    :class:`~mango.models.fusion.filler.ModalityFiller`): it keeps the training mean of each
    modality's tokens (and, with ``model.imputer``, a regressor of each from the others), and
    fills absent modalities' tokens with them under ``filling(model, "mean" | "regress")``
    (:mod:`mango.models.missing`). Its training loss joins ``aux_loss``.

    Attributes:
        name: the ``model.fusion`` value that selects it.
        aligned: it needs position-aligned tokens (every ``L_m`` equal).
        has_density: it returns ``bits_per_dim``.
        budget: how its size was matched to the flow (``None``: not matched; set by
            :func:`~mango.models.fusion.build_fusion`).

    Args:
        dim: token width ``D``, shared by all modalities.
        tokens: token counts ``L_m``, one per modality, in input order.

    Example:
        >>> import torch
        >>> from mango.models.fusion import build_fusion
        >>> fusion = build_fusion("concat", dim=4, tokens=[3, 1])
        >>> isinstance(fusion, Fusion), fusion.tokens
        (True, (3, 1))

    References:
        | MANGO: Multimodal Attention-based Normalizing Flow Approach to Fusion Learning
        | (Truong et al., NeurIPS 2025)
        | https://arxiv.org/abs/2508.10133
    """

    name: str = ""
    aligned: bool = False
    has_density: bool = False
    budget: Budget | None = None

    def __init__(self, dim: int, tokens: Sequence[int]) -> None:
        super().__init__()
        self.dim = dim
        self.tokens = tuple(int(t) for t in tokens)
        self.filler = ModalityFiller(dim, self.tokens)
        if self.aligned and len(set(self.tokens)) > 1:
            raise ConfigError(
                f"model.fusion: {self.name} needs position-aligned modalities with equal token "
                f"counts, got {list(self.tokens)}"
            )

    def parameter_count(self) -> int:
        """Trainable and frozen parameters of the fusion (buffers and the filler's imputer
        excluded), shared ones once."""
        imputer = {id(p) for p in self.filler.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in imputer)

    def forward(
        self, tokens: TokenInput, present: Tensor | None = None, with_nll: bool = True
    ) -> FusionOutput:
        """Fuse ``tokens`` (a list or a name mapping; ``(B, D)`` vectors are one token).

        ``present`` ``(B, M)`` marks which modalities each sample has (``None``: all);
        ``with_nll=False`` skips the density where there is one.
        """
        names = tuple(tokens) if isinstance(tokens, Mapping) else None
        given = list(tokens.values()) if isinstance(tokens, Mapping) else list(tokens)
        vectors = [t.dim() == 2 for t in given]
        as_tokens = [t.unsqueeze(1) if v else t for t, v in zip(given, vectors, strict=True)]
        counts = tuple(t.shape[1] for t in as_tokens)
        if counts != self.tokens:
            raise ValueError(
                f"{type(self).__name__} was built for token counts {list(self.tokens)}, "
                f"got {list(counts)}"
            )
        as_tokens, imputer_loss = self.filler(as_tokens, present)
        out = self.fuse(as_tokens, present, with_nll)
        if imputer_loss is not None:
            out.aux_loss = imputer_loss if out.aux_loss is None else out.aux_loss + imputer_loss
        out.tokens = [t.squeeze(1) if v else t for t, v in zip(out.tokens, vectors, strict=True)]
        out.names = names
        return out

    def fuse(self, tokens: list[Tensor], present: Tensor | None, with_nll: bool) -> FusionOutput:
        """The fusion itself, on ``(B, L_m, D)`` tensors (implemented by every subclass)."""
        raise NotImplementedError
