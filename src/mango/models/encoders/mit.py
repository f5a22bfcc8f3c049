"""Mix Transformer (MiT) encoders of SegFormer, built from ``transformers`` without downloads.

A MiT encoder has four stages. Stage ``i`` is an overlapping patch embedding (a strided
convolution: 7x7 stride 4 for the first stage, 3x3 stride 2 after it, then LayerNorm), ``depths[i]``
transformer blocks and a final LayerNorm. Each block is
``x + Attention(LN(x))`` then ``x + MixFFN(LN(x))``, where the attention is *efficient
self-attention*: keys and values come from the tokens spatially reduced by a ``sr_ratios[i]``
strided convolution, and MixFFN is ``fc1 -> 3x3 depth-wise conv -> GELU -> fc2``. The stages give
feature maps at strides 4, 8, 16 and 32 with ``hidden_sizes`` channels.

Weights come from local files only (:func:`load_mit_weights`): Hugging Face SegFormer checkpoints
(classification ``nvidia/mit-bX`` or segmentation folders) and the original NVlabs ``mit_bX.pth``.

References:
    Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
    Transformers", NeurIPS 2021 (arXiv 2105.15203).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import SegformerConfig, SegformerModel

from mango.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)


def _variant(
    hidden_sizes: list[int],
    depths: list[int],
    decoder_hidden_size: int,
    num_attention_heads: list[int] | None = None,
) -> dict[str, Any]:
    return {
        "hidden_sizes": hidden_sizes,
        "depths": depths,
        "num_attention_heads": num_attention_heads or [1, 2, 5, 8],
        "sr_ratios": [8, 4, 2, 1],
        "mlp_ratios": [4, 4, 4, 4],
        "patch_sizes": [7, 3, 3, 3],
        "strides": [4, 2, 2, 2],
        "decoder_hidden_size": decoder_hidden_size,
    }


#: ``transformers.SegformerConfig`` fields of each MiT variant (SegFormer paper, Table 6 and the
#: ``nvidia/mit-bX`` configs). ``decoder_hidden_size`` is the paper's all-MLP decoder width.
#: ``tiny`` is not a published model: a few thousand parameters for CPU smoke tests.
MIT_VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": _variant([8, 16, 32, 32], [1, 1, 1, 1], 16, num_attention_heads=[1, 1, 2, 2]),
    "b0": _variant([32, 64, 160, 256], [2, 2, 2, 2], 256),
    "b1": _variant([64, 128, 320, 512], [2, 2, 2, 2], 256),
    "b2": _variant([64, 128, 320, 512], [3, 4, 6, 3], 768),
    "b3": _variant([64, 128, 320, 512], [3, 4, 18, 3], 768),
    "b4": _variant([64, 128, 320, 512], [3, 8, 27, 3], 768),
    "b5": _variant([64, 128, 320, 512], [3, 6, 40, 3], 768),
}


class MiTEncoder(nn.Module):
    """SegFormer's Mix Transformer: ``forward(x)`` gives four maps at strides 4, 8, 16, 32.

    For ``x`` of shape ``(B, in_channels, H, W)`` the outputs have shapes
    ``(B, out_channels[i], ceil(H / s_i), ceil(W / s_i))`` with ``s = (4, 8, 16, 32)``. Sides must
    be at least 32 pixels (the first stage reduces keys and values by 8 at stride 4).

    Args:
        variant: a key of :data:`MIT_VARIANTS` (``"tiny"``, ``"b0"`` ... ``"b5"``).
        in_channels: input channels; pretrained RGB weights are adapted (see
            :func:`load_mit_weights`).
        pretrained: a local checkpoint file or Hugging Face folder, or ``None`` for random weights.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over all blocks.

    Example:
        >>> import torch
        >>> encoder = MiTEncoder("tiny", in_channels=1)
        >>> [tuple(f.shape) for f in encoder(torch.zeros(2, 1, 64, 32))]
        [(2, 8, 16, 8), (2, 16, 8, 4), (2, 32, 4, 2), (2, 32, 2, 1)]
    """

    strides = (4, 8, 16, 32)

    def __init__(
        self,
        variant: str = "b0",
        in_channels: int = 3,
        pretrained: str | None = None,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if variant not in MIT_VARIANTS:
            raise ConfigError(
                f"variant: unknown MiT variant {variant!r}; choose one of {', '.join(MIT_VARIANTS)}"
            )
        self.variant = variant
        self.in_channels = in_channels
        config = SegformerConfig(
            num_channels=in_channels,
            drop_path_rate=drop_path_rate,
            reshape_last_stage=True,
            **MIT_VARIANTS[variant],
        )
        self.model = SegformerModel(config)
        self.out_channels: list[int] = list(config.hidden_sizes)
        if pretrained:
            load_mit_weights(self, pretrained)

    def forward(self, x: Tensor) -> list[Tensor]:
        output = self.model(pixel_values=x, output_hidden_states=True)
        return list(output.hidden_states)


# --- checkpoint key mapping -------------------------------------------------------------------
# Canonical names are the Hugging Face on-disk ones (``encoder.block.0.0.attention.self.query``),
# which every ``transformers`` version reads and writes. ``transformers`` >= 5 names its modules
# differently in memory (``stages.0.blocks.0.attention.q_proj``); ``_HF_TO_V5`` maps a block's
# sub-module names between the two.

_HF_TO_V5 = {
    "layer_norm_1": "layernorm_before",
    "attention.self.query": "attention.q_proj",
    "attention.self.key": "attention.k_proj",
    "attention.self.value": "attention.v_proj",
    "attention.self.sr": "attention.sequence_reduction.sequence_reduction",
    "attention.self.layer_norm": "attention.sequence_reduction.layer_norm",
    "attention.output.dense": "attention.o_proj",
    "layer_norm_2": "layernorm_after",
    "mlp.dense1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.dense2": "mlp.fc2",
}
_V5_TO_HF = {v5: hf for hf, v5 in _HF_TO_V5.items()}

# NVlabs block sub-modules -> Hugging Face ones (``attn.kv`` is split into key and value).
_NVLABS_TO_HF = {
    "norm1": "layer_norm_1",
    "attn.q": "attention.self.query",
    "attn.sr": "attention.self.sr",
    "attn.norm": "attention.self.layer_norm",
    "attn.proj": "attention.output.dense",
    "norm2": "layer_norm_2",
    "mlp.fc1": "mlp.dense1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.fc2": "mlp.dense2",
}

# Checkpoint parts that are not the encoder (classifier and decoder heads) and are skipped.
_IGNORED_PREFIXES = ("head.", "classifier.", "decode_head.", "auxiliary_head.")
# Wrappers around the encoder's names: DataParallel, mmsegmentation, Hugging Face task models.
_WRAPPER_PREFIXES = ("module.", "backbone.", "segformer.")
_FIRST_PATCH_WEIGHT = "encoder.patch_embeddings.0.proj.weight"


def _strip_wrappers(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def _v5_to_hf(key: str) -> str:
    """``stages.i.…`` (``transformers`` >= 5 modules) -> ``encoder.…``; other keys unchanged."""
    if m := re.fullmatch(r"stages\.(\d+)\.patch_embeddings\.(.+)", key):
        return f"encoder.patch_embeddings.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)\.(\w+)", key):
        return f"encoder.block.{m[1]}.{m[2]}.{_V5_TO_HF.get(m[3], m[3])}.{m[4]}"
    if m := re.fullmatch(r"stages\.(\d+)\.layer_norm\.(\w+)", key):
        return f"encoder.layer_norm.{m[1]}.{m[2]}"
    return key


def _hf_to_v5(key: str) -> str:
    """``encoder.…`` -> ``stages.i.…`` (``transformers`` >= 5 modules); other keys unchanged."""
    if m := re.fullmatch(r"encoder\.patch_embeddings\.(\d+)\.(.+)", key):
        return f"stages.{m[1]}.patch_embeddings.{m[2]}"
    if m := re.fullmatch(r"encoder\.block\.(\d+)\.(\d+)\.(.+)\.(\w+)", key):
        return f"stages.{m[1]}.blocks.{m[2]}.{_HF_TO_V5.get(m[3], m[3])}.{m[4]}"
    if m := re.fullmatch(r"encoder\.layer_norm\.(\d+)\.(\w+)", key):
        return f"stages.{m[1]}.layer_norm.{m[2]}"
    return key


def _nvlabs_to_hf(key: str, tensor: Tensor) -> list[tuple[str, Tensor]]:
    """One NVlabs ``mit_bX.pth`` entry -> Hugging Face entries (stages count from 1 there).

    ``blockI.J.attn.kv`` stacks key and value along the output dimension: rows ``[:C]`` are the
    key projection and rows ``[C:]`` the value projection. Unknown keys are returned unchanged
    (and later reported as unexpected).
    """
    if m := re.fullmatch(r"patch_embed(\d+)\.(proj|norm)\.(\w+)", key):
        part = "proj" if m[2] == "proj" else "layer_norm"
        return [(f"encoder.patch_embeddings.{int(m[1]) - 1}.{part}.{m[3]}", tensor)]
    if m := re.fullmatch(r"block(\d+)\.(\d+)\.(.+)\.(\w+)", key):
        prefix = f"encoder.block.{int(m[1]) - 1}.{m[2]}"
        if m[3] == "attn.kv":
            key_part, value_part = tensor.chunk(2, dim=0)
            return [
                (f"{prefix}.attention.self.key.{m[4]}", key_part),
                (f"{prefix}.attention.self.value.{m[4]}", value_part),
            ]
        if m[3] in _NVLABS_TO_HF:
            return [(f"{prefix}.{_NVLABS_TO_HF[m[3]]}.{m[4]}", tensor)]
    if m := re.fullmatch(r"norm(\d+)\.(\w+)", key):
        return [(f"encoder.layer_norm.{int(m[1]) - 1}.{m[2]}", tensor)]
    return [(key, tensor)]


def _is_nvlabs(keys: list[str]) -> bool:
    return any(re.match(r"(patch_embed|block)\d", key) for key in keys)


def _read_state_dict(path: Path) -> tuple[Path, dict[str, Tensor]]:
    """The weights file and its tensors, for a file or a Hugging Face folder (safetensors first)."""
    if not path.exists():
        raise CheckpointError(f"{path}: MiT checkpoint not found")
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "pytorch_model.bin"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise CheckpointError(
                f"{path}: folder has neither model.safetensors nor pytorch_model.bin"
            )
        path = found[0]
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or foreign file: report it in one line
        raise CheckpointError(f"{path}: cannot read checkpoint ({error})") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return path, state


def _to_hf_keys(state: dict[str, Tensor]) -> dict[str, tuple[str, Tensor]]:
    """Checkpoint -> ``{hugging_face_key: (key_in_file, tensor)}`` without the ignored heads."""
    stripped = {_strip_wrappers(k): (k, v) for k, v in state.items()}
    stripped = {k: kv for k, kv in stripped.items() if not k.startswith(_IGNORED_PREFIXES)}
    nvlabs = _is_nvlabs(list(stripped))
    mapped: dict[str, tuple[str, Tensor]] = {}
    for key, (original, tensor) in stripped.items():
        entries = _nvlabs_to_hf(key, tensor) if nvlabs else [(_v5_to_hf(key), tensor)]
        for hf_key, hf_tensor in entries:
            mapped[hf_key] = (original, hf_tensor)
    return mapped


def _adapt_input_channels(weight: Tensor, in_channels: int) -> Tensor:
    """RGB patch-embedding kernel ``(C_out, 3, k, k)`` -> ``(C_out, in_channels, k, k)``.

    Every new input channel gets ``mean_rgb(W) * 3 / in_channels`` (for one channel: the sum over
    RGB). An input whose ``in_channels`` channels all equal a grey image ``g`` then gives the same
    embedding as the RGB model on ``(g, g, g)``, so activation scales stay as pretrained.
    """
    mean = weight.mean(dim=1, keepdim=True)
    return mean.expand(-1, in_channels, -1, -1) * (3.0 / in_channels)


def load_mit_weights(encoder: MiTEncoder, path: str | Path) -> None:
    """Load local SegFormer/MiT weights into ``encoder`` (in place).

    Accepted: a Hugging Face folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``), or one ``.safetensors`` / ``.bin`` / ``.pth`` file with keys
    ``[segformer.]encoder.block.0.0.attention.self.query.weight`` ... (classification and
    segmentation checkpoints alike), or the NVlabs ``mit_bX.pth`` layout (``patch_embed1.proj``,
    ``block1.0.attn.q``, ``block1.0.attn.kv`` = key and value stacked, ``norm1``; optionally under
    ``state_dict`` and ``backbone.``). Classifier and decoder heads are ignored.

    If the encoder has ``in_channels != 3`` and the checkpoint's first patch embedding has 3
    input channels, that kernel is adapted by :func:`_adapt_input_channels` (RGB mean, rescaled).

    Raises:
        CheckpointError: missing or unreadable file, or a checkpoint that does not fit the encoder
            (missing, unexpected or wrongly shaped key), in one line with the file and the first
            offending key.
    """
    path, state = _read_state_dict(Path(path))
    weights = _to_hf_keys(state)
    if _FIRST_PATCH_WEIGHT in weights:
        original, first = weights[_FIRST_PATCH_WEIGHT]
        if first.ndim == 4 and first.shape[1] == 3 and encoder.in_channels != 3:
            adapted = _adapt_input_channels(first, encoder.in_channels)
            weights[_FIRST_PATCH_WEIGHT] = (original, adapted)

    target = encoder.model.state_dict()
    in_memory_v5 = any(key.startswith("stages.") for key in target)
    to_model = _hf_to_v5 if in_memory_v5 else (lambda key: key)
    name = f"MiT-{encoder.variant}"
    loaded: dict[str, Tensor] = {}
    for hf_key, (original, tensor) in weights.items():
        model_key = to_model(hf_key)
        if model_key not in target:
            raise CheckpointError(
                f"{path}: key {original!r} (shape {tuple(tensor.shape)}) is not part of {name}"
            )
        expected = tuple(target[model_key].shape)
        if tuple(tensor.shape) != expected:
            raise CheckpointError(
                f"{path}: key {original!r} has shape {tuple(tensor.shape)} but {name} expects "
                f"{expected} (wrong variant or input channels?)"
            )
        loaded[model_key] = tensor
    missing = [key for key in target if key not in loaded]
    if missing:
        shape = tuple(target[missing[0]].shape)
        raise CheckpointError(
            f"{path}: key {_v5_to_hf(missing[0])!r} (shape {shape}) needed by {name} is missing "
            f"from the checkpoint ({len(missing)} missing in all)"
        )
    encoder.model.load_state_dict(loaded, strict=True)
    logger.info("loaded %d tensors from %s into %s", len(loaded), path, name)
