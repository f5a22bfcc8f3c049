"""What an absent modality's tokens become before a fusion: the training mean or a regression.

Every fusion holds a :class:`ModalityFiller` (``fusion.filler``; in a segmentation model the
concatenation stages of ``model.fuse_stages`` hold one too). Its ``fill``, set by
:func:`mango.models.missing.filling`, says what the tokens of an absent modality ``m`` become
before the fusion sees them:

- ``zero`` (the default): the tokens of the zero-filled input, as given;
- ``mean``: :math:`\\mu_m`, the training mean of modality ``m``'s tokens, per token position
  and channel;
- ``regress``: :math:`\\hat x_m = \\mu_m + R_m(c_{\\neg m})`, with :math:`c_{\\neg m}` the
  other modalities' centred tokens :math:`x_j - \\mu_j` (0 for another absent one) and
  :math:`R_m` a small network trained with the model (``model.imputer: true``,
  :func:`attach_imputers`);
- ``impute``: left to the fusion (the flow's completion, :class:`~mango.models.fusion.FlowFusion`).

**The training mean.** In a training forward (training mode, autograd on) the filler adds the
detached tokens of every sample that has ``m`` to a pending sum. :meth:`ModalityFiller.commit`,
called once per optimizer step after the sums of every micro-batch and process are added
(:class:`mango.train.module.MangoModule`), turns it into the step's mean :math:`\\bar x_m` and
updates

.. math::

    \\mu_m \\leftarrow \\mu_m + w\\,(\\bar x_m - \\mu_m), \\qquad w = \\max(1/n_m,\\ 0.01),

with :math:`n_m` the steps so far in which a sample had ``m``: the plain mean of the first 100
steps' means, then a moving average over about the last 100 steps, so that :math:`\\mu` follows
the encoders as they train. It depends on the global batch only, not on its split over devices
and micro-batches. ``mean`` (:math:`\\mu`) and ``steps`` (:math:`n`) are buffers, saved in the
checkpoint.

**The regression.** :math:`R_m` (:class:`TokenRegressor`) is a per-token MLP over channels
followed by a linear map over token positions. It is trained on the detached tokens of the
samples that have ``m`` by

.. math::

    \\mathcal L = \\frac{1}{M} \\sum_m \\operatorname{mean}_{b:\\ m \\text{ present}}
        \\frac{\\lVert \\mu_m + R_m(c_{b,\\neg m}) - x_{b,m} \\rVert^2}{L_m D},

added to the fusion's ``aux_loss``. Inputs and target are detached and :math:`\\mu` is a buffer,
so its gradient reaches :math:`R`'s parameters only: the task path is the same with or without
an imputer (the trainer also clips :math:`R`'s gradient on its own).

Example:
    >>> filler = ModalityFiller(dim=2, tokens=[1, 1]).train()
    >>> tokens = [torch.ones(4, 1, 2), torch.zeros(4, 1, 2)]
    >>> with torch.enable_grad():
    ...     _ = filler(tokens, None)
    >>> filler.commit()
    >>> filler.fill = "mean"
    >>> absent = torch.tensor([[True, False]]).repeat(4, 1)    # the second modality is absent
    >>> filled, _ = filler.eval()([torch.ones(4, 1, 2), torch.full((4, 1, 2), 7.0)], absent)
    >>> filled[1][0].tolist(), filler.steps.tolist()
    ([[0.0, 0.0]], [1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

#: the smallest weight of a step's mean in the training mean (a window of about 100 steps)
MEAN_MOMENTUM = 0.01
#: state-dict key endings of the fillers' statistics: a checkpoint written before them loads
#: without (its ``mean`` fill is then refused)
STATISTICS = ("filler.mean", "filler.steps")


def is_statistic(key: str) -> bool:
    """Whether state-dict ``key`` is a filler's training statistic (see :data:`STATISTICS`)."""
    return key.endswith(STATISTICS)


class TokenRegressor(nn.Module):
    """Tokens of one modality ``(B, L_m, D)`` from the others' centred tokens ``(B, L_o, D)``.

    .. math::

        R(c) = A\\, \\phi(c) + a, \\qquad
        \\phi(c) = W_2\\, \\mathrm{GELU}(W_1 c + b_1) + b_2 \\ \\text{(per token)},

    with :math:`A \\in \\mathbb R^{L_m \\times L_o}` mixing token positions. :math:`W_2, b_2`
    start at zero, so an untrained regressor predicts the mean; :math:`A` starts as the average
    over the sources at the same position when the sources are ``k`` aligned copies of
    ``L_m`` tokens (``L_o = k L_m``), else at PyTorch's default.

    Args:
        dim: token width ``D``.
        sources: the source token count ``L_o``.
        target: the target token count ``L_m``.
        hidden: the MLP's hidden width (default ``D``).

    Example:
        >>> regressor = TokenRegressor(dim=4, sources=6, target=3)
        >>> regressor(torch.randn(2, 6, 4)).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, dim: int, sources: int, target: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.channels = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.positions = nn.Linear(sources, target)
        nn.init.zeros_(self.channels[2].weight)
        nn.init.zeros_(self.channels[2].bias)
        if sources % target == 0:
            copies = sources // target
            with torch.no_grad():
                self.positions.weight.copy_(torch.eye(target).repeat(1, copies) / copies)
                self.positions.bias.zero_()

    def forward(self, context: Tensor) -> Tensor:
        """``(B, L_o, D)`` centred source tokens -> ``(B, L_m, D)`` offsets from the mean."""
        return self.positions(self.channels(context).transpose(1, 2)).transpose(1, 2)


class ModalityFiller(nn.Module):
    """The training mean of each modality's tokens, an optional regressor, and the fill rule.

    ``filler(tokens, present)`` returns ``(tokens, loss)``: the tokens with the absent
    modalities' filled as ``fill`` says (the list given, unchanged, for ``zero`` and
    ``impute``), and in a training forward the imputer's loss (``None`` without an imputer);
    a training forward also adds to the pending sums of the mean (see the module doc).

    Args:
        dim: token width ``D``.
        tokens: token counts ``L_m``, one per modality.
    """

    def __init__(self, dim: int, tokens: Sequence[int]) -> None:
        super().__init__()
        self.dim, self.tokens = dim, tuple(int(t) for t in tokens)
        self.register_buffer("mean", torch.zeros(sum(self.tokens), dim))
        self.register_buffer("steps", torch.zeros(len(self.tokens)))
        self.regressors: nn.ModuleList | None = None
        self.fill = "zero"
        self._pending: tuple[Tensor, Tensor] | None = None  # (sum of tokens, samples per modality)

    @property
    def has_mean(self) -> bool:
        """Whether every modality's training mean was estimated (a step saw it)."""
        return bool((self.steps > 0).all())

    @property
    def has_imputer(self) -> bool:
        """Whether the regressors of ``regress`` exist."""
        return self.regressors is not None

    def add_regressors(self, hidden: int | None = None) -> None:
        """Create :math:`R_m` for every modality (needs 2+ modalities)."""
        if len(self.tokens) < 2:
            raise ValueError("a regressor needs 2+ modalities")
        total = sum(self.tokens)
        self.regressors = nn.ModuleList(
            TokenRegressor(self.dim, total - length, length, hidden) for length in self.tokens
        ).to(self.mean.device, self.mean.dtype)

    def means(self) -> list[Tensor]:
        """:math:`\\mu_m` per modality, ``(L_m, D)`` each."""
        return list(self.mean.split(self.tokens, dim=0))

    def _context(self, tokens: Sequence[Tensor], present: Tensor | None, m: int) -> Tensor:
        """``(B, L_o, D)``: the other modalities' centred tokens, 0 where absent."""
        parts = []
        for j, (x, mu) in enumerate(zip(tokens, self.means(), strict=True)):
            if j == m:
                continue
            centred = x.detach() - mu.to(x.dtype)
            if present is not None:
                centred = centred * present[:, j].to(x.dtype).reshape(-1, 1, 1)
            parts.append(centred)
        return torch.cat(parts, dim=1)

    def predict(self, tokens: Sequence[Tensor], present: Tensor | None, m: int) -> Tensor:
        """:math:`\\mu_m + R_m(c_{\\neg m})` ``(B, L_m, D)`` (needs the regressors)."""
        assert self.regressors is not None
        context = self._context(tokens, present, m)
        return self.means()[m].to(context.dtype) + self.regressors[m](context)

    def forward(
        self, tokens: list[Tensor], present: Tensor | None
    ) -> tuple[list[Tensor], Tensor | None]:
        loss = None
        if self.training and torch.is_grad_enabled():
            self._observe(tokens, present)
            if self.regressors is not None:
                loss = self._imputer_loss(tokens, present)
        if self.fill in ("mean", "regress") and present is not None and not bool(present.all()):
            tokens = self._filled(tokens, present)
        return tokens, loss

    def _filled(self, tokens: list[Tensor], present: Tensor) -> list[Tensor]:
        if self.fill == "regress" and self.regressors is None:
            raise ValueError("fill 'regress' needs the regressors (model.imputer)")
        out = []
        for m, (x, mu) in enumerate(zip(tokens, self.means(), strict=True)):
            value = self.predict(tokens, present, m) if self.fill == "regress" else mu.expand_as(x)
            keep = present[:, m].reshape(-1, 1, 1)
            out.append(torch.where(keep, x, value.to(x.dtype)))
        return out

    @torch.no_grad()
    def _observe(self, tokens: Sequence[Tensor], present: Tensor | None) -> None:
        weights = (
            torch.ones(len(self.tokens), tokens[0].shape[0], device=self.mean.device)
            if present is None
            else present.t().to(self.mean.device)
        ).to(self.mean.dtype)
        sums = torch.cat(
            [
                torch.einsum("b,bld->ld", w, x.detach().to(self.mean.dtype))
                for w, x in zip(weights, tokens, strict=True)
            ]
        )
        counts = weights.sum(1)
        if self._pending is not None:
            sums, counts = sums + self._pending[0], counts + self._pending[1]
        self._pending = (sums, counts)

    def _imputer_loss(self, tokens: Sequence[Tensor], present: Tensor | None) -> Tensor:
        losses = []
        for m, x in enumerate(tokens):
            error = (self.predict(tokens, present, m) - x.detach()).pow(2).mean(dim=(1, 2))
            if present is None:
                losses.append(error.mean())
            else:
                have = present[:, m].to(error.dtype)
                losses.append((error * have).sum() / have.sum().clamp(min=1))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def commit(self, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """Fold the pending sums into the training mean (once per optimizer step).

        ``reduce`` sums a tensor over processes (an all-reduce) in a distributed run; every
        process then updates its mean identically. Nothing pending: nothing happens.
        """
        if self._pending is None:
            return
        sums, counts = self._pending
        self._pending = None
        if reduce is not None:
            flat = reduce(torch.cat([sums.flatten(), counts]))
            sums, counts = flat[: sums.numel()].view_as(sums), flat[sums.numel() :]
        for m, (mu, total) in enumerate(
            zip(self.means(), sums.split(self.tokens, dim=0), strict=True)
        ):
            if counts[m] > 0:
                self.steps[m] += 1
                weight = max(1.0 / float(self.steps[m]), MEAN_MOMENTUM)
                mu.add_(weight * (total / counts[m] - mu))

    def discard(self) -> None:
        """Drop the pending sums (a forward that was not a training step)."""
        self._pending = None


def fillers(model: nn.Module) -> list[ModalityFiller]:
    """Every :class:`ModalityFiller` of ``model``."""
    return [m for m in model.modules() if isinstance(m, ModalityFiller)]


def attach_imputers(model: nn.Module, seed: int | None = None) -> int:
    """Give every filler of 2+ modalities in ``model`` its regressors (``model.imputer``).

    They are initialised from their own generator (seeded by ``seed``, default
    ``torch.initial_seed()``), so the random stream of everything built or drawn afterwards is
    the one without an imputer. Returns the number of regressor parameters.
    """
    found = [f for f in fillers(model) if len(f.tokens) >= 2 and not f.has_imputer]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch.initial_seed() if seed is None else seed)
        for filler in found:
            filler.add_regressors()
    return sum(p.numel() for f in found for p in f.parameters())


def imputer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The regressors' parameters of every filler of ``model``."""
    return [p for f in fillers(model) for p in f.parameters()]
