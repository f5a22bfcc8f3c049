"""What training needs from a task's model: :class:`TaskModel` and its output :class:`TaskOutput`.

Every task model (segmentation, classification, translation, tensors) derives from
:class:`TaskModel`; :mod:`mango.train` reads only what is declared here, so a new task's model
that fills these in trains, evaluates and checkpoints like the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(kw_only=True)
class TaskOutput:
    """The fields every model output carries besides its prediction (logits, image, ...).

    ``bits_per_dim`` ``(B,)``: the flow's negative log-likelihood per dimension in bits, added
    to the task loss with weight ``loss.nll_weight`` (``None`` without a flow).
    ``aux_loss``: a scalar the fusion itself asks to add to the loss (TokenFusion's sparsity,
    already weighted; ``None`` when the fusion has none).
    """

    bits_per_dim: Tensor | None = None
    aux_loss: Tensor | None = None


class TaskModel(nn.Module):
    """A task's model: ``model(batch) -> TaskOutput`` over the inputs named in :attr:`modalities`.

    Implementers set ``modalities`` (the inputs used, in token order; missing-modality
    evaluation and modality dropout act on these names) and return the pretrained encoders'
    parameters from :meth:`backbone_parameters` (trained at ``optim.lr``); every other
    parameter is a head parameter (trained at ``optim.lr · optim.head_lr_mult``). This class
    adds no parameters or buffers, so the state-dict keys are the subclass's own.
    """

    modalities: Sequence[str]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The encoder parameters trained with the backbone learning rate (default: none)."""
        return []

    def head_parameters(self) -> list[nn.Parameter]:
        """Every parameter not in :meth:`backbone_parameters`, in ``parameters()`` order."""
        backbone = {id(p) for p in self.backbone_parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]

    def forward(self, batch: Mapping[str, Any]) -> TaskOutput:
        raise NotImplementedError
