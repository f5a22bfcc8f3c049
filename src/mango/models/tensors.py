"""Classification from any set of array modalities: MANGO fusion and its baselines.

Pipeline for each modality ``m`` (every fusion mode shares it, so baselines differ only by
``fusion``):

- input ``(B, L_m, C_m)`` tokens, or a vector ``(B, C_m)``;
- :class:`Standardize`: ``(x - μ_m) / σ_m`` per feature, with train-set statistics held as buffers
  (so they are saved with the checkpoint);
- vectors only, :class:`VectorTokens`: split into ``k_m`` tokens of ``⌈C_m / k_m⌉`` features
  (zero-padded);
- :class:`~mango.models.fusion.TokenEmbedding` to ``D`` channels plus position and modality
  embeddings.

Fusion (``fusion``): ``mango`` maps all modalities' tokens through a
:class:`~mango.models.fusion.FlowFusion`, an attention baseline (``transformer``, ...) through
its module, ``concat`` passes them on unchanged. The read-out (``readout``) is the same for
every fusion: ``flatten`` (the default) concatenates every fused token of every modality into one
vector, so no fusion loses what the tokens hold; ``mean`` mean-pools each modality's tokens
first (a mean of linear token embeddings keeps only the mean of the features, so use it only
after a fusion that mixes tokens). One :class:`~mango.models.heads.mlp.MLPHead` maps the vector
to logits. ``late`` gives each modality that same head on its own read-out and averages the
logits; ``single`` uses one modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.classification import ClassificationOutput
from mango.models.fusion import TOKEN_FUSIONS, TokenEmbedding, build_fusion
from mango.models.heads.mlp import PooledHeadsMixin
from mango.models.missing import check_noise, noise_control, presence, zero_absent
from mango.models.task_model import TaskModel

FUSIONS = (*TOKEN_FUSIONS, "late", "single")
READOUTS = ("flatten", "mean")


@dataclass(frozen=True)
class ModalitySpec:
    """Per-sample shape of a modality (``(L, C)`` or ``(C,)``) and, for vectors, its token count."""

    shape: tuple[int, ...]
    vector_tokens: int = 4

    @property
    def is_vector(self) -> bool:
        return len(self.shape) == 1

    @property
    def features(self) -> int:
        """``C``, the features the standardisation acts on."""
        return self.shape[-1]

    @property
    def tokens(self) -> int:
        """Tokens the modality gives the fusion."""
        return min(self.vector_tokens, self.shape[0]) if self.is_vector else self.shape[0]

    @property
    def token_width(self) -> int:
        """Features per token."""
        return -(-self.shape[0] // self.tokens) if self.is_vector else self.shape[1]


class Standardize(nn.Module):
    """``(x - mean) / std`` over the last axis, with ``mean`` and ``std`` as saved buffers.

    Example:
        >>> s = Standardize(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
        >>> s(torch.tensor([[3.0, 6.0]])).tolist()
        [[1.0, 1.0]]
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    @classmethod
    def fit(cls, values: np.ndarray, eps: float = 1e-6) -> Standardize:
        """Statistics over every axis but the last (samples and tokens); ``std >= eps``."""
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        std = np.maximum(flat.std(0), eps)
        return cls(torch.from_numpy(flat.mean(0)), torch.from_numpy(std))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class VectorTokens(nn.Module):
    """Split ``(B, C)`` into ``(B, k, ⌈C/k⌉)`` tokens, zero-padding the last one.

    Example:
        >>> VectorTokens(2)(torch.arange(1.0, 6.0)[None]).tolist()
        [[[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]]]
    """

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens

    def forward(self, x: Tensor) -> Tensor:
        width = -(-x.shape[-1] // self.tokens)
        padded = nn.functional.pad(x, (0, width * self.tokens - x.shape[-1]))
        return padded.reshape(x.shape[0], self.tokens, width)


class TensorClassifier(PooledHeadsMixin, TaskModel):
    """Array modalities -> logits, fused by MANGO or a baseline (see the module doc).

    Args:
        specs: modality name -> :class:`ModalitySpec`, for the modalities used, in token order.
        outputs: classes (multi-class) or labels (multi-label).
        fusion: one of :data:`FUSIONS` (``single`` takes exactly one modality).
        dim: token channels ``D``.
        flow: keyword arguments of :class:`~mango.models.fusion.FlowFusion` (and the budget
            of the attention baselines).
        fusion_settings: the ``fusion`` config section (the baselines' settings).
        readout: ``flatten`` or ``mean`` (see the module doc).
        head_hidden, dropout: the MLP head.
        noise: modalities replaced by standard Gaussian noise after standardisation (the
            ``control_noise`` ablation).
        statistics: modality -> fitted :class:`Standardize`; default the identity (the values
            are then expected from a checkpoint).

    ``forward(batch)`` reads ``batch["inputs"][name]`` for every modality used.

    Example:
        >>> specs = {"a": ModalitySpec((3, 5)), "b": ModalitySpec((6,), vector_tokens=2)}
        >>> model = TensorClassifier(specs, outputs=4, dim=8, flow={"blocks": 1})
        >>> out = model({"inputs": {"a": torch.randn(2, 3, 5), "b": torch.randn(2, 6)}})
        >>> out.logits.shape, out.bits_per_dim.shape
        (torch.Size([2, 4]), torch.Size([2]))
    """

    def __init__(
        self,
        specs: Mapping[str, ModalitySpec],
        outputs: int,
        fusion: str = "mango",
        dim: int = 64,
        flow: Mapping[str, Any] | None = None,
        head_hidden: int = 128,
        dropout: float = 0.1,
        statistics: Mapping[str, Standardize] | None = None,
        fusion_settings: Mapping[str, Any] | None = None,
        readout: str = "flatten",
        noise: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"model.fusion: expected one of {', '.join(FUSIONS)}, got {fusion!r}")
        if readout not in READOUTS:
            raise ConfigError(
                f"model.readout: expected one of {', '.join(READOUTS)}, got {readout!r}"
            )
        self.modalities: Sequence[str] = tuple(specs)
        if fusion == "single" and len(self.modalities) != 1:
            raise ConfigError(
                f"model.modalities: fusion 'single' takes one modality, got {list(self.modalities)}"
            )
        if fusion != "single" and len(self.modalities) < 2:
            raise ConfigError(f"model.modalities: fusion {fusion!r} needs 2+ modalities")
        if fusion == "mango":
            short = [m for m, s in specs.items() if s.tokens < 2]
            if short:
                raise ConfigError(
                    f"model.fusion: mango needs 2+ tokens per modality; {short[0]!r} has "
                    f"{specs[short[0]].tokens} (give it more tokens with data.tokens)"
                )
        self.readout = readout
        self.noise = check_noise(noise, self.modalities)
        statistics = statistics or {}
        self.standardize = nn.ModuleDict(
            {
                m: statistics[m]
                if m in statistics
                else Standardize(torch.zeros(s.features), torch.ones(s.features))
                for m, s in specs.items()
            }
        )
        self.tokenize = nn.ModuleDict(
            {m: VectorTokens(s.tokens) for m, s in specs.items() if s.is_vector}
        )
        self.embed = nn.ModuleDict(
            {m: TokenEmbedding(s.token_width, dim, s.tokens) for m, s in specs.items()}
        )
        counts = [s.tokens for s in specs.values()]
        self.fusion = build_fusion(
            fusion if fusion in TOKEN_FUSIONS else "concat",
            dim,
            counts,
            flow=flow,
            settings=fusion_settings,
        )
        widths = [dim * (count if readout == "flatten" else 1) for count in counts]
        self._build_heads(widths, head_hidden, outputs, dropout, late=fusion == "late")

    def tokens(self, inputs: Mapping[str, Tensor], present: Tensor | None = None) -> list[Tensor]:
        """Standardised, tokenised and embedded tokens ``(B, L_m, D)`` per modality.

        Absent samples (``present[b, m] = False``) get zero standardised features."""
        result = []
        for i, m in enumerate(self.modalities):
            if m not in inputs:
                raise ValueError(f"batch['inputs'] has no modality {m!r}")
            x = noise_control(self.standardize[m](inputs[m].float()), m in self.noise)
            x = zero_absent(x, None if present is None else present[:, i])
            if m in self.tokenize:
                x = self.tokenize[m](x)
            result.append(self.embed[m](x))
        return result

    def forward(self, batch: Mapping[str, Any]) -> ClassificationOutput:
        inputs = batch["inputs"]
        first = inputs[self.modalities[0]]
        present = presence(batch, self.modalities, first.shape[0], first.device)
        fused = self.fusion(self.tokens(inputs, present), present=present)
        read = [t.flatten(1) if self.readout == "flatten" else t.mean(1) for t in fused.tokens]
        logits = self._pooled_logits(read)
        return ClassificationOutput(
            logits=logits, bits_per_dim=fused.bits_per_dim, aux_loss=fused.aux_loss
        )
