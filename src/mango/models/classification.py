"""Multi-label classification from a poster and a plot (MM-IMDb): MANGO fusion and its baselines.

Pipeline (every fusion mode shares the encoders, token embeddings and head design):

- poster ``(B, 3, S, S)`` -> MobileNetV2 features ``(B, 1280, h, w)``, ``h = w = ceil(S / 32)``
  -> :class:`~mango.models.fusion.TokenEmbedding` -> ``(B, h·w, D)``;
- plot texts (a list of ``B`` strings) -> tokenised to ``T`` tokens -> MiniLM (or any local
  transformers encoder) ``(B, T, 384)`` -> TokenEmbedding -> ``(B, T, D)`` plus the padding mask;
- fusion (``model.fusion``):

  - ``mango``: :class:`~mango.models.fusion.FlowFusion` over ``[image, text]`` tokens; each
    modality's fused tokens are pooled by a masked mean (padding excluded) and the two pooled
    vectors are concatenated, ``(B, 2D)`` -> MLP -> logits;
  - ``concat``: the same without a flow (:class:`~mango.models.fusion.IdentityFusion`);
  - an attention baseline (``transformer``, ``cross_attention``; the aligned ones do not apply,
    the two modalities have different token counts) in place of the flow;
  - ``late``: one MLP per modality on its pooled tokens, the two logit vectors averaged;
  - ``image`` / ``text``: one modality only, pooled -> MLP.

``noise`` lists modalities whose encoder features are replaced by Gaussian noise of their shape
(the ``control_noise`` ablation; the encoders are frozen by default, so the noise replaces their
output rather than the poster or the plot).

Frozen encoders (the default) run without autograd, stay in eval mode and are **kept out of the
module tree**: they are not in ``state_dict()`` (checkpoints hold only the trained parts, a few
MB instead of ~100 MB) nor in ``parameters()``; ``.to()``/``.double()`` still move them. The
weights come back from their source (the offline packages, or ``image_weights`` /
``text_encoder`` paths) when the model is rebuilt. Trainable encoders are ordinary submodules
under ``encoders`` and are saved with the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.encoders.mobilenet import MobileNetV2, load_imagenet_mobilenet_v2
from mango.models.encoders.text import TextTokenEncoder
from mango.models.fusion import TOKEN_FUSIONS, TokenEmbedding, build_fusion
from mango.models.heads.mlp import PooledHeadsMixin
from mango.models.missing import check_noise, empty_absent, noise_control, presence, zero_absent
from mango.models.task_model import TaskModel, TaskOutput

FUSIONS = (*TOKEN_FUSIONS, "late", "image", "text")
#: the modalities each fusion mode uses, in token order
FUSION_MODALITIES: dict[str, tuple[str, ...]] = {
    **{name: ("image", "text") for name in (*TOKEN_FUSIONS, "late")},
    "image": ("image",),
    "text": ("text",),
}


@dataclass
class ClassificationOutput(TaskOutput):
    """Logits ``(B, num_labels)`` (or ``(B, classes)``) with the flow's bits/dim and aux loss."""

    logits: Tensor


def image_token_count(image_size: int) -> int:
    """Tokens of a MobileNetV2 feature map for an ``image_size`` square input.

    The network halves the side five times with ``k=3, p=1, s=2`` convolutions, each giving
    ``ceil(n / 2)``.

    Example:
        >>> image_token_count(224), image_token_count(64), image_token_count(100)
        (49, 4, 16)
    """
    side = image_size
    for _ in range(5):
        side = (side + 1) // 2
    return side * side


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over tokens ``(B, L, D) -> (B, D)``, counting only tokens with ``mask == 1``.

    Example:
        >>> t = torch.tensor([[[1.0], [3.0], [101.0]]])
        >>> masked_mean(t, torch.tensor([[1, 1, 0]])).tolist(), masked_mean(t, None).tolist()
        ([[2.0]], [[35.0]])
    """
    if mask is None:
        return tokens.mean(1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class GenreClassifier(PooledHeadsMixin, TaskModel):
    """Poster + plot -> multi-label logits, fused by MANGO or a baseline (see the module doc).

    Args:
        num_labels: number of genres (23 for MM-IMDb).
        image_size: poster side ``S`` (the flow is built for ``ceil(S/32)²`` image tokens).
        text_tokens: ``T``, texts are padded/truncated to this many tokens.
        fusion: one of :data:`FUSIONS`.
        dim: token channels ``D``.
        flow: keyword arguments of :class:`FlowFusion` (``blocks``, ``partitions``, ...).
        head_hidden, dropout: the MLP head.
        train_image_encoder, train_text_encoder: fine-tune the encoders (then they are saved).
        image_weights: torchvision MobileNetV2 ``.pth``; default: the offline package.
        text_encoder: a local transformers encoder folder; default: all-MiniLM-L6-v2.

    ``forward(batch)`` reads ``batch["image"]`` ``(B, 3, S, S)`` (ImageNet-normalised) and/or
    ``batch["text"]`` (a list of ``B`` strings), as the fusion mode needs.

    Raises:
        ConfigError: unknown fusion mode, or an image too small for the flow (< 2 tokens).
        CheckpointError: encoder weights missing or unreadable.
    """

    def __init__(
        self,
        num_labels: int,
        image_size: int,
        text_tokens: int,
        fusion: str = "mango",
        dim: int = 128,
        flow: Mapping[str, Any] | None = None,
        head_hidden: int = 512,
        dropout: float = 0.1,
        train_image_encoder: bool = False,
        train_text_encoder: bool = False,
        image_weights: str | None = None,
        text_encoder: str | None = None,
        fusion_settings: Mapping[str, Any] | None = None,
        noise: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"model.fusion: expected one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.modalities = FUSION_MODALITIES[fusion]
        self.noise = check_noise(noise, self.modalities)
        self.encoders = nn.ModuleDict()  # trainable encoders only (saved in the state dict)
        self._frozen: dict[str, nn.Module] = {}  # frozen encoders, outside the module tree
        lengths: dict[str, int] = {}
        widths: dict[str, int] = {}
        if "image" in self.modalities:
            image_net = load_imagenet_mobilenet_v2(image_weights).features
            self._hold("image", image_net, train_image_encoder)
            lengths["image"] = image_token_count(image_size)
            widths["image"] = MobileNetV2.out_channels
        if "text" in self.modalities:
            text_net = TextTokenEncoder(text_encoder, text_tokens, trainable=train_text_encoder)
            self._hold("text", text_net, train_text_encoder)
            lengths["text"], widths["text"] = text_tokens, text_net.dim
        if fusion == "mango" and min(lengths.values()) < 2:
            raise ConfigError(
                f"data.image_size: {image_size} gives {lengths['image']} image token(s); the flow "
                f"needs at least 2 per modality (use image_size > 32)"
            )
        self.embed = nn.ModuleDict(
            {m: TokenEmbedding(widths[m], dim, lengths[m]) for m in self.modalities}
        )
        self.fusion = build_fusion(
            fusion if fusion in TOKEN_FUSIONS else "concat",
            dim,
            [lengths[m] for m in self.modalities],
            flow=flow,
            settings=fusion_settings,
        )
        widths = [dim] * len(self.modalities)
        self._build_heads(widths, head_hidden, num_labels, dropout, late=fusion == "late")

    def _hold(self, name: str, encoder: nn.Module, trainable: bool) -> None:
        if trainable:
            self.encoders[name] = encoder
        else:
            encoder.requires_grad_(False)
            self._frozen[name] = encoder.eval()

    def encoder(self, name: str) -> nn.Module:
        """The ``image`` or ``text`` encoder, trainable or frozen."""
        return self.encoders[name] if name in self.encoders else self._frozen[name]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> GenreClassifier:
        """Move/cast the frozen encoders with the model (they are not submodules)."""
        super()._apply(fn, recurse)
        for encoder in self._frozen.values():
            encoder._apply(fn, recurse)
        return self

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of the trainable encoders (empty when both are frozen)."""
        return list(self.encoders.parameters())

    def _features(
        self, name: str, batch: Mapping[str, Any], present: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Encoder output of one modality and its token mask (``None``: all tokens are real).

        Absent samples (``present[b] = False``) get a zero poster or an empty plot."""
        encoder = self.encoder(name)
        trainable = name in self.encoders
        if name == "image":
            with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
                return encoder(zero_absent(batch["image"], present)), None
        texts = batch["text"]
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValueError(f"batch['text'] must be a list of strings, got {type(texts).__name__}")
        texts = empty_absent(texts, present)
        device = next(encoder.parameters()).device
        ids = {k: v.to(device) for k, v in encoder.tokenize(list(texts)).items()}
        hidden, mask = encoder(**ids)
        return hidden, mask

    def forward(self, batch: Mapping[str, Any]) -> ClassificationOutput:
        size = len(batch["text"]) if "text" in self.modalities else len(batch["image"])
        device = next(iter(self.embed.values())).proj.weight.device
        present = presence(batch, self.modalities, size, device)
        features = [
            self._features(m, batch, None if present is None else present[:, i])
            for i, m in enumerate(self.modalities)
        ]
        tokens = [
            self.embed[m](noise_control(f, m in self.noise))
            for m, (f, _) in zip(self.modalities, features, strict=True)
        ]
        fused = self.fusion(tokens, present=present)
        pooled = [masked_mean(t, mask) for t, (_, mask) in zip(fused.tokens, features, strict=True)]
        logits = self._pooled_logits(pooled)
        return ClassificationOutput(
            logits=logits, bits_per_dim=fused.bits_per_dim, aux_loss=fused.aux_loss
        )
