"""MANGO fusion (``model.fusion: mango``): the modalities' joint tokens through a :class:`MangoFlow`.

The fused tokens are the flow's latent split per modality; the output also carries the flow's
negative log-likelihood of the tokens in bits per dimension, and :meth:`FlowFusion.inverse` and
:meth:`FlowFusion.impute` use the exact inverse and density.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mango.errors import ConfigError
from mango.flows import MangoFlow
from mango.flows.impute import complete
from mango.flows.partitions import validate_tokens
from mango.models.fusion.base import Fusion, FusionOutput


@dataclass(frozen=True)
class ImputationSettings:
    """How :meth:`FlowFusion.impute` completes absent tokens (chosen by measurement, docs/missing.md)."""

    steps: int = 20
    lr: float = 0.05
    start: str = "prior"  # "prior": the flow's mode f⁻¹(0); "zero": the zero-filled input's tokens


@dataclass
class ImputationRecord:
    """One imputation call: samples, seconds, and per-sample joint log-densities (nats)."""

    samples: int
    seconds: float
    log_prob: Tensor  # (n,) log p(x_o, x̂_m) after completion
    start_log_prob: Tensor  # (n,) log p(x_o, start)
    missing_dims: Tensor  # (n,) number of completed entries L_m · D per sample
    dims: int  # L · D of the whole token set


class FlowFusion(Fusion):
    """MANGO fusion: concatenate the modalities' tokens and map them through a :class:`MangoFlow`.

    .. math::

        z = f([x_1; \\dots; x_M]), \\qquad [y_1; \\dots; y_M] = z, \\qquad
        \\mathrm{bpd} = -\\frac{\\log \\mathcal{N}(z; 0, I) + \\log|\\det J_f|}{L D \\log 2}

    ``fusion(tokens)`` takes a list of ``M >= 2`` tensors ``(B, L_m, D)`` (the ``L_m`` given at
    construction, each ``>= 2``; one channel width ``D`` for all) and returns a
    :class:`FusionOutput`: the latent ``z = f([t_1, ..., t_M])`` split back per modality (the
    input shapes), and ``bits_per_dim`` ``(B,)``, the flow's negative log-likelihood of the tokens
    in bits per dimension (add ``λ ·`` its mean to the loss). ``fusion.inverse(fused)`` recovers
    the input tokens exactly.

    In training the NLL is computed on **detached** tokens by default (``detach_nll``,
    ``docs/design.md``): the encoders then learn only from the task loss, since a trainable
    encoder could shrink its features and make the density unbounded. One flow pass serves both
    terms (:meth:`MangoFlow.forward_detached_density`); the task path keeps its gradient.

    Args:
        dim: token width ``D``.
        tokens: token counts ``L_m`` (at least 2 modalities of at least 2 tokens each).
        detach_nll: compute the training NLL on detached tokens (default ``True``; ``False``
            lets the density's gradient reach the encoders).
        flow_options: keyword arguments of :class:`MangoFlow` (``blocks``, ``partitions``,
            ``attention``, ...).

    Example:
        >>> fusion = FlowFusion(dim=8, tokens=[3, 5], blocks=2)
        >>> tokens = [torch.randn(2, 3, 8), torch.randn(2, 5, 8)]
        >>> out = fusion(tokens)  # training mode: this first batch initialises the ActNorms
        >>> with torch.no_grad():  # as if trained: otherwise only the ActNorms act
        ...     _ = [p.add_(0.05 * torch.randn_like(p)) for p in fusion.parameters()]
        >>> out = fusion.eval()(tokens)
        >>> [t.shape for t in out.tokens], out.bits_per_dim.shape
        ([torch.Size([2, 3, 8]), torch.Size([2, 5, 8])], torch.Size([2]))
        >>> back = fusion.inverse(out.tokens)
        >>> all(torch.allclose(b, t, atol=1e-5) for b, t in zip(back, tokens))
        True

    References:
        | MANGO: Multimodal Attention-based Normalizing Flow Approach to Fusion Learning
        | (Truong et al., NeurIPS 2025)
        | https://arxiv.org/abs/2508.10133
    """

    name = "mango"
    has_density = True

    def __init__(
        self, dim: int, tokens: Sequence[int], detach_nll: bool = True, **flow_options: Any
    ) -> None:
        """``flow_options`` go to :class:`MangoFlow` (``blocks``, ``partitions``, ``attention``, ...)."""
        super().__init__(dim, tokens)
        try:
            validate_tokens(self.tokens)
        except ValueError:
            raise ConfigError(
                f"model.fusion: mango needs 2+ modalities of 2+ tokens each, got {list(self.tokens)}"
            ) from None
        self.detach_nll = detach_nll
        self.flow = MangoFlow(dim, self.tokens, **flow_options)
        self.fill = "zero"
        self.imputation = ImputationSettings()
        self.records: list[ImputationRecord] = []
        self.gains: list[Tensor] | None = None  # per-call likelihood gains, when recording

    def fuse(self, tokens: list[Tensor], present: Tensor | None, with_nll: bool) -> FusionOutput:
        """Fuse ``tokens``; ``present`` ``(B, M)`` marks which modalities each sample has.

        With ``fill = "impute"`` (see :func:`mango.models.missing.filling`) the tokens of absent
        modalities are replaced by the flow's most likely completion given the present ones
        (:meth:`impute`); otherwise they are used as given (the zero rule of the caller).
        """
        if present is not None and self.fill == "impute" and not bool(present.all()):
            tokens = self.impute(tokens, present)
        if self.gains is not None:
            self.gains.append(self.likelihood_gains(tokens).detach().cpu())
        x = torch.cat(list(tokens), dim=1)
        if with_nll and self.training and self.detach_nll and x.requires_grad:
            if torch.compiler.is_compiling():  # the one-pass autograd.Function does not trace
                z = self.flow(x)[0]
                z_density, logdet = self.flow(x.detach())
            else:
                z, z_density, logdet = self.flow.forward_detached_density(x)
        else:
            z, logdet = self.flow(x)
            z_density = z
        fused = list(z.split(self.tokens, dim=1))
        if not with_nll:
            return FusionOutput(fused)
        bits = self.flow.to_bits_per_dim(self.flow.latent_log_prob(z_density, logdet))
        return FusionOutput(fused, bits)

    def inverse(self, fused: Sequence[Tensor]) -> list[Tensor]:
        """The input tokens of ``fused`` (per modality), by the flow's exact inverse."""
        x, _ = self.flow.inverse(torch.cat(list(fused), dim=1))
        return list(x.split(self.tokens, dim=1))

    def likelihood_gains(self, tokens: Sequence[Tensor]) -> Tensor:
        """``(B, M)``: how much more likely the tokens get when modality ``m`` is re-imputed.

        For each modality ``m``, :func:`~mango.flows.impute.complete` runs ``imputation.steps``
        Adam steps on ``log p`` over ``m``'s tokens, the others fixed, starting from the tokens
        as given, and keeps the best iterate; the gain, in bits per dimension of ``m``, is

        .. math::

            g_m = \\frac{\\max_{k \\le K} \\log p(x_{\\neg m}, x_m^{(k)}) - \\log p(x)}
                        {L_m D \\ln 2} \\ \\ge 0, \\qquad x_m^{(0)} = x_m.

        A modality whose tokens do not fit the others (a broken input) gains the most; the
        difference of two ``m``'s log-densities is exact, ``log p(x_{¬m})`` never enters.
        """
        x = torch.cat(list(tokens), dim=1).detach()
        gains = []
        start = 0
        settings = self.imputation
        with self.flow.health_paused():
            for length in self.tokens:
                missing = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
                missing[:, start : start + length] = True
                result = complete(self.flow, x, missing, settings.steps, settings.lr)
                gain = result.log_prob - result.start_log_prob
                gains.append(gain / (length * x.shape[-1] * math.log(2)))
                start += length
        return torch.stack(gains, dim=1)

    def impute(self, tokens: Sequence[Tensor], present: Tensor) -> list[Tensor]:
        """Replace the absent modalities' tokens by the flow's most likely completion.

        Samples with every modality present are untouched. The completion holds the present
        tokens fixed and maximises ``log p`` over the absent ones by gradient ascent
        (:func:`mango.flows.impute.complete`, ``imputation.steps`` Adam steps of size
        ``imputation.lr``) from the flow's mode ``f⁻¹(0)`` (``imputation.start = "prior"``)
        or from the given tokens (``"zero"``: those of the zero-filled input). Each call adds
        an :class:`ImputationRecord` to ``records``.
        """
        x = torch.cat(list(tokens), dim=1)
        rows = (~present).any(1).nonzero().squeeze(1)
        absent = (~present[rows]).repeat_interleave(torch.tensor(self.tokens, device=x.device), 1)
        settings = self.imputation
        start = None
        if settings.start == "prior":
            mode = torch.zeros(1, *x.shape[1:], device=x.device, dtype=x.dtype)
            start = self.flow.inverse(mode)[0]
        began = time.perf_counter()
        with self.flow.health_paused():  # evaluation monitors skip the search passes
            result = complete(self.flow, x[rows], absent, settings.steps, settings.lr, start)
        seconds = time.perf_counter() - began
        self.records.append(
            ImputationRecord(
                len(rows),
                seconds,
                result.log_prob.detach().cpu(),
                result.start_log_prob.detach().cpu(),
                absent.sum(1).cpu() * x.shape[-1],
                x.shape[1] * x.shape[-1],
            )
        )
        x = x.index_copy(0, rows, result.tokens.to(x.dtype))
        return list(x.split(self.tokens, dim=1))
