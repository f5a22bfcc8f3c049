"""Every task model declares what training reads: TaskModel's attributes and a TaskOutput."""

from __future__ import annotations

import torch

from mango.models.classification import ClassificationOutput, GenreClassifier
from mango.models.segmentation import SegmentationFusionModel, SegmentationOutput
from mango.models.task_model import TaskModel, TaskOutput
from mango.models.tensors import ModalitySpec, TensorClassifier
from mango.models.translation import TranslationModel, TranslationOutput


def test_every_task_model_is_a_task_model() -> None:
    for cls in (SegmentationFusionModel, GenreClassifier, TranslationModel, TensorClassifier):
        assert issubclass(cls, TaskModel), cls
    for cls in (SegmentationOutput, ClassificationOutput, TranslationOutput):
        assert issubclass(cls, TaskOutput), cls


def test_outputs_default_to_no_flow_terms() -> None:
    out = ClassificationOutput(torch.zeros(2, 3))
    assert out.bits_per_dim is None and out.aux_loss is None


def test_head_parameters_are_the_rest_in_order() -> None:
    torch.manual_seed(0)
    model = TranslationModel(
        ["reshading", "edge_texture"],
        32,
        dim=8,
        encoder_widths=(8, 8, 8),
        decoder_width=8,
        flow={"blocks": 1, "coupling_hidden": 8},
    )
    backbone = {id(p) for p in model.backbone_parameters()}
    assert backbone == {id(p) for p in model.encoders.parameters()}
    assert [id(p) for p in model.head_parameters()] == [
        id(p) for p in model.parameters() if id(p) not in backbone
    ]


def test_a_model_without_encoders_trains_everything_as_head() -> None:
    specs = {"a": ModalitySpec((3, 5)), "b": ModalitySpec((6,), vector_tokens=2)}
    model = TensorClassifier(specs, outputs=4, dim=8, flow={"blocks": 1})
    assert model.backbone_parameters() == []
    assert [id(p) for p in model.head_parameters()] == [id(p) for p in model.parameters()]
    out = model({"inputs": {"a": torch.randn(2, 3, 5), "b": torch.randn(2, 6)}})
    assert isinstance(out, TaskOutput) and out.bits_per_dim is not None
    assert list(model.modalities) == ["a", "b"]
