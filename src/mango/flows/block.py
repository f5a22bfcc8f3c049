"""The MANGO block and the full MangoFlow (a stack of blocks with a standard-normal prior)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from mango.flows.actnorm import ActNorm
from mango.flows.backprop import (
    detached_density_pass,
    invertible_backprop,
    split_invertible_backprop,
)
from mango.flows.base import FlowLayer, SequentialFlow, check_tokens, flow_dtype
from mango.flows.coupling import AffineCoupling
from mango.flows.cross_attention import InvertibleCrossAttention, ica_layers
from mango.flows.folded import FoldedNormAttention, fold_pairs
from mango.flows.partitions import PARTITIONS, validate_tokens


class NonFiniteFlowError(ValueError):
    """NaN or Inf entered or left a :class:`MangoFlow`."""


def _check_finite(x: Tensor, where: str) -> None:
    if torch.compiler.is_compiling():  # a data-dependent branch; the training NaN guard remains
        return
    if isinstance(x, Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteFlowError(
            f"{where}: {bad} NaN/Inf value(s) in the tokens (check the inputs or encoders)"
        )


class MangoBlock(SequentialFlow):
    """One MANGO block: ``ActNorm -> ICA`` for every partition variant, then an affine coupling.

    For two modalities this is ActNorm→MMCA v1, ActNorm→MMCA v2, ActNorm→IMCA v1..v4,
    ActNorm→LICA v1, ActNorm→LICA v2, AffineCoupling (the paper's 2 + 4 + 2 ICA layers). For ``M``
    modalities MMCA has ``M`` variants. ``partitions`` selects a subset for ablations; an empty
    ``partitions`` gives a coupling-only block (ActNorm→AffineCoupling, the ablation "ICA replaced
    by coupling"). Each ``ActNorm -> signed ICA`` pair is built into a
    :class:`~mango.flows.folded.FoldedNormAttention` step (``steps``), which runs it as one node.

    .. math::

        f = c \circ \mathrm{ICA}_K \circ \mathrm{AN}_K \circ \dots \circ \mathrm{ICA}_1
            \circ \mathrm{AN}_1, \qquad
        \log|\det J_f| = \sum_k \log|\det J_{\mathrm{AN}_k}| + \log|\det J_{\mathrm{ICA}_k}|
            + \log|\det J_c|.

    Args:
        dim: channels ``D`` per token.
        tokens: token counts ``(L_1, ..., L_M)`` of the modalities.
        partitions: which of ``("mmca", "imca", "lica")`` to use (every variant of each).
        attention: the ICA form (:data:`~mango.flows.ATTENTION_FORMS`).
        coupling_hidden: hidden width of the coupling's conditioner.
        swap: whether the coupling transforms the first channel half instead of the second.
        coupling: the coupling's conditioner (:class:`AffineCoupling`).
        strength_bound: ``β_max`` of the signed form.

    References:
        Truong et al., "MANGO: Multimodal Attention-based Normalizing Flow Approach to Fusion
        Learning", NeurIPS 2025 (arXiv 2508.10133).

    Example:
        >>> block = MangoBlock(dim=8, tokens=(4, 4))
        >>> [type(layer).__name__ for layer in block][:4]
        ['ActNorm', 'SignedCrossAttention', 'ActNorm', 'SignedCrossAttention']
        >>> type(block.steps[0]).__name__, len(block.steps)
        ('FoldedNormAttention', 9)
        >>> len(block)
        17
    """

    def __init__(
        self,
        dim: int,
        tokens: tuple[int, ...],
        partitions: Sequence[str] = PARTITIONS,
        attention: str = "signed",
        coupling_hidden: int = 64,
        swap: bool = False,
        coupling: str = "mlp",
        strength_bound: float = 0.5,
    ) -> None:
        unknown = [p for p in partitions if p not in PARTITIONS]
        if unknown:
            raise ValueError(f"partitions must be a subset of {PARTITIONS}, got {partitions}")
        layers: list[FlowLayer] = []
        for partition in partitions:
            for ica in ica_layers(
                dim, tokens, partition, attention=attention, strength_bound=strength_bound
            ):
                layers += [ActNorm(dim), ica]
        if not partitions:
            layers.append(ActNorm(dim))
        layers.append(AffineCoupling(dim, hidden=coupling_hidden, swap=swap, conditioner=coupling))
        super().__init__(layers)
        self.length = sum(tokens)
        self.dim = dim
        # the order the layers run in; not submodules, so the state dict is the layers'
        self.steps = fold_pairs(layers)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The layers in order; each ``ActNorm -> signed ICA`` pair that can runs as one node.

        The pairs were chosen when the block was built (:func:`~mango.flows.folded.fold_pairs`);
        a pair runs as one node when :meth:`FoldedNormAttention.applies`. The log-dets of the
        folded ActNorms, ``L Σ_d s_d``, are summed once.
        """
        logdets, folded = [], []
        for step in self.steps:
            if isinstance(step, FoldedNormAttention) and step.applies(x):
                x = step(x)
                folded.append(step.norm.log_scale)
                continue
            for layer in step.layers if isinstance(step, FoldedNormAttention) else (step,):
                x, logdet = layer(x)
                logdets.append(logdet)
        if folded:
            logdets.append((x.shape[1] * torch.stack(folded).to(x.dtype).sum()).expand(x.shape[0]))
        return x, torch.stack(logdets).sum(0)


@dataclass
class AttentionMap:
    """The attention matrix of one ICA layer for one input (see :meth:`MangoFlow.attention_maps`)."""

    block: int
    partition: str
    variant: int
    matrix: Tensor  # (B, L2, L2): A, row i of Y2 gathers X2 tokens j >= i
    probabilities: Tensor  # (B, L2, L2): the softmax part P of A = c0 I + c1 P
    x1_index: Tensor  # positions of the conditioning tokens (in the mixed order for LICA)
    x2_index: Tensor  # positions of the transformed tokens


class MangoFlow(SequentialFlow):
    """A stack of :class:`MangoBlock` mapping joint multimodal tokens to a standard-normal latent.

    .. math::

        z = f(x), \\qquad \\log p(x) = \\log \\mathcal N(z; 0, I) + \\log|\\det \\partial z/\\partial x|,

        \\text{bits/dim} = -\\log p(x) / (L D \\ln 2), \\qquad x = f^{-1}(z),\\ z \\sim \\mathcal N(0, I).

    ``tokens = (L_1, ..., L_M)``: the input concatenates the modalities' tokens in that order.
    Consecutive blocks alternate which channel half their coupling transforms. With
    ``memory_saving=True`` training stores no intermediate activations: each block's input is
    rebuilt from its output by the inverse during backward (:mod:`mango.flows.backprop`).

    Args:
        dim: channels ``D`` per token.
        tokens: token counts ``(L_1, ..., L_M)`` of the modalities.
        blocks: how many :class:`MangoBlock` (the paper's default 12).
        partitions, attention, coupling_hidden, coupling, strength_bound: as :class:`MangoBlock`.
        memory_saving: rebuild activations by the inverse instead of storing them.

    References:
        Truong et al., "MANGO: Multimodal Attention-based Normalizing Flow Approach to Fusion
        Learning", NeurIPS 2025 (arXiv 2508.10133).

    Example:
        >>> flow = MangoFlow(dim=8, tokens=(6, 4), blocks=2)
        >>> x = torch.randn(3, 10, 8)
        >>> z, logdet = flow(x)  # training mode: this first batch initialises the ActNorms
        >>> with torch.no_grad():  # as if trained: otherwise only the ActNorms act
        ...     _ = [p.add_(0.05 * torch.randn_like(p)) for p in flow.parameters()]
        >>> z, logdet = flow.eval()(x)
        >>> tuple(flow.log_prob(x).shape), tuple(flow.sample(5).shape)
        ((3,), (5, 10, 8))
        >>> torch.allclose(flow.inverse(z)[0], x, atol=1e-4)
        True
    """

    def __init__(
        self,
        dim: int,
        tokens: Sequence[int],
        blocks: int = 12,
        partitions: Sequence[str] = PARTITIONS,
        attention: str = "signed",
        coupling_hidden: int = 64,
        memory_saving: bool = False,
        coupling: str = "mlp",
        strength_bound: float = 0.5,
    ) -> None:
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        tokens = validate_tokens(tuple(tokens))
        super().__init__(
            MangoBlock(
                dim,
                tokens,
                partitions,
                attention,
                coupling_hidden,
                swap=bool(b % 2),
                coupling=coupling,
                strength_bound=strength_bound,
            )
            for b in range(blocks)
        )
        self.tokens = tokens
        self.dim = dim
        self.length = sum(tokens)
        self.memory_saving = memory_saving
        self._health_paused = False

    @property
    def health_monitored(self) -> bool:
        """Whether health monitors record this flow's forward passes (see :meth:`health_paused`)."""
        return not self._health_paused

    @contextmanager
    def health_paused(self) -> Iterator[None]:
        """Within the block, health monitors skip this flow's forward passes.

        For passes that are not evaluations on real tokens, e.g. the search passes of an
        imputation; the previous state is restored on exit.
        """
        previous, self._health_paused = self._health_paused, True
        try:
            yield
        finally:
            self._health_paused = previous

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data ``x`` (B, L, D) to ``(z, logdet)``; non-finite input is a ``ValueError``."""
        _check_finite(x, "MangoFlow input")
        z, logdet = super().forward(x)
        self._check_output(z, logdet)
        return z, logdet

    @staticmethod
    def _check_output(z: Tensor, logdet: Tensor) -> None:
        _check_finite(z, "MangoFlow output (overflow: rescale the tokens)")
        _check_finite(logdet, "MangoFlow log-determinant (overflow: rescale the tokens)")

    def forward_detached_density(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, z_density, logdet)`` from one pass (the fusion model's NLL on detached tokens, docs/design.md).

        ``z`` is ``self(x)[0]``, with gradients to ``x`` and the parameters. A loss on
        ``(z_density, logdet)`` trains the parameters only, exactly as if computed from
        ``self(x.detach())`` (:func:`~mango.flows.backprop.detached_density_pass`); with
        ``memory_saving`` both gradient streams share one rebuild of every layer.
        """
        if not self.memory_saving:
            return detached_density_pass(self, x)
        where = "MangoFlow"
        check_tokens(x, self.length, self.dim, where)
        _check_finite(x, "MangoFlow input")
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(flow_dtype(self, x, where))
            if self.training:
                with torch.no_grad():
                    self._initialize_actnorms(x)
            z, z_density, logdet = split_invertible_backprop(x, list(self.layers))
        self._check_output(z, logdet)
        return z, z_density, logdet

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map a latent ``z`` (B, L, D) back to ``(x, -logdet)``; non-finite input is a ``ValueError``."""
        _check_finite(z, "MangoFlow.inverse input")
        x, logdet = super().inverse(z)
        _check_finite(x, "MangoFlow.inverse output (overflow: the latent is far outside N(0, I))")
        return x, logdet

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        if self.memory_saving and needs_graph:
            if self.training:  # data-dependent ActNorm init must not happen inside the no-grad pass
                with torch.no_grad():
                    self._initialize_actnorms(x)
            return invertible_backprop(x, list(self.layers))
        return super()._forward(x)

    def _initialize_actnorms(self, x: Tensor) -> None:
        if all(bool(m.initialized) for m in self.modules() if isinstance(m, ActNorm)):
            return
        super()._forward(x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density ``log p(x)`` per sample, shape (B,)."""
        return self.latent_log_prob(*self(x))

    @staticmethod
    def latent_log_prob(z: Tensor, logdet: Tensor) -> Tensor:
        """``log N(z; 0, I) + logdet`` per sample: ``log p(x)`` from an already computed ``f(x)``."""
        log_normal = -0.5 * (z.pow(2) + math.log(2 * math.pi))
        return log_normal.flatten(1).sum(1) + logdet

    def to_bits_per_dim(self, log_prob: Tensor) -> Tensor:
        """Convert a log-density (nats per sample) to bits per dimension."""
        return -log_prob / (self.length * self.dim * math.log(2))

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """Negative log-likelihood in bits per dimension, shape (B,)."""
        return self.to_bits_per_dim(self.log_prob(x))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """Draw ``n`` samples ``x = f^{-1}(z)`` with ``z ~ N(0, temperature^2 I)``, shape (n, L, D)."""
        param = next(self.parameters())
        z = temperature * torch.randn(
            n, self.length, self.dim, device=param.device, dtype=param.dtype
        )
        return self.inverse(z)[0]

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> list[AttentionMap]:
        """Run ``x`` through the flow and return every ICA layer's attention matrix ``A``."""
        check_tokens(x, self.length, self.dim, "MangoFlow.attention_maps")
        maps: list[AttentionMap] = []
        for b, block in enumerate(self.layers):
            for layer in block:
                if isinstance(layer, InvertibleCrossAttention):
                    matrix, probabilities = layer.attention_matrix(x, with_probabilities=True)
                    maps.append(
                        AttentionMap(
                            b,
                            layer.partition,
                            layer.variant,
                            matrix,
                            probabilities,
                            layer.idx1,
                            layer.idx2,
                        )
                    )
                x = layer(x)[0]
        return maps
