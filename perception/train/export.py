"""``perception export --card``: the card's weights to an ONNX graph for the runtime
(torch only), at the card's fixed input size, checked with ``onnx.checker``; its sha256 is
written into the card's ``[onnx]`` table.

- ``yolact``: :class:`~perception.nets.yolact.YolactExport`;
- ``maskrcnn``: :class:`~perception.nets.maskrcnn.MaskRCNNExport` (batch 1; mask
  pasting left to the runtime);
- ``solov2``: :class:`~perception.nets.solov2.Solov2Export` (the top ``top_k`` candidates'
  mask logits; maskness, Matrix NMS and pasting left to the runtime).

Weights come from the card's ``[weights]`` file or from a (``maskrcnn``)
checkpoint in torchvision's published format (``torchvision_checkpoint``).

All use the TorchScript-based exporter (``dynamo=False``): torchvision's detection models
are written for it (``torchvision._is_tracing()`` paths) and the dynamo exporter does not
handle their data-dependent shapes (with torch 2.15, torch.export stops on a
GuardOnDataDependentSymNode in the Mask R-CNN heads).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from perception.nets.yolact import Yolact, YolactExport
from perception.segmentation.card import CardError, ModelCard, load_card, set_card_value, sha256_of
from perception.segmentation.runtime import YOLACT_OUTPUTS
from perception.train.build import build_model, load_weights

log = logging.getLogger(__name__)
OPSET = 17


def _export(
    graph: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str]
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter warns that dynamo is the new default, tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, args, str(path), opset_version=OPSET, input_names=inputs, output_names=outputs, dynamo=False
        )
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def export_onnx(model: Yolact, path: Path, width: int, height: int) -> Path:
    """Export a one-stage ``model`` for a ``(1, 3, height, width)`` float input to ``path``."""
    return _export(
        YolactExport(model.eval()), (torch.zeros(1, 3, height, width),), path, ["images"], list(YOLACT_OUTPUTS)
    )


def export_mask_iou_onnx(model: Yolact, path: Path, width: int, height: int) -> Path:
    """Export the YOLACT++ re-scoring network of ``model`` (:mod:`perception.nets.mask_iou`):
    ``masks`` ``(M, 1, height/4, width/4)`` float probabilities (``M`` dynamic) -> ``mask_iou`` ``(M, C)``."""
    from perception.segmentation.mask_rescoring import MASK_IOU_INPUT, MASK_IOU_OUTPUT

    assert model.mask_iou is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    args = (torch.zeros(2, 1, height // 4, width // 4),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.mask_iou.eval(),
            args,
            str(path),
            opset_version=OPSET,
            input_names=[MASK_IOU_INPUT],
            output_names=[MASK_IOU_OUTPUT],
            dynamic_axes={MASK_IOU_INPUT: {0: "instances"}, MASK_IOU_OUTPUT: {0: "instances"}},
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def _export_mask_iou(model: Yolact, card: ModelCard) -> None:
    """The card's ``[mask_iou]`` graph, when its architecture has the head (sha256 updated)."""
    if model.mask_iou is None:
        return
    if card.mask_iou is None:
        raise CardError(f"{card.path}: mask_iou_head = true needs a [mask_iou] table naming the output file")
    path = export_mask_iou_onnx(model, card.mask_iou.path, card.input_width, card.input_height)
    set_card_value(card.path, "mask_iou", "sha256", sha256_of(path))


def export_maskrcnn_onnx(model: nn.Module, path: Path, width: int, height: int) -> Path:
    """Export a torchvision ``MaskRCNN`` for a ``(1, 3, height, width)`` float input and a
    0-d score threshold to ``path``. Traced on a random image with threshold 0, so that
    every branch (detections, masks) is recorded."""
    from perception.nets.maskrcnn import MaskRCNNExport
    from perception.segmentation.maskrcnn_runtime import MASKRCNN_INPUTS, MASKRCNN_OUTPUTS

    graph = MaskRCNNExport(model.eval(), width, height)
    gen = torch.Generator().manual_seed(0)
    args = (torch.rand(1, 3, height, width, generator=gen), torch.tensor(0.0))
    return _export(graph, args, path, list(MASKRCNN_INPUTS), list(MASKRCNN_OUTPUTS))


def export_solov2_onnx(model: nn.Module, card: ModelCard) -> Path:
    """Export a :class:`~perception.nets.solov2.Solov2` for a ``(1, 3, H, W)`` float input at
    the card's size to its ``[onnx]`` file, its ``[postprocess] top_k`` fixed in the graph."""
    from perception.nets.solov2 import Solov2Export
    from perception.segmentation.solov2_runtime import SOLOV2_OUTPUTS, solov2_post_config

    graph = Solov2Export(model.eval(), solov2_post_config(card).top_k)  # type: ignore[arg-type]
    args = (torch.zeros(1, 3, card.input_height, card.input_width),)
    return _export(graph, args, card.onnx.path, ["images"], list(SOLOV2_OUTPUTS))  # type: ignore[union-attr]


def export_card(
    card_path: str | Path, random_init: bool = False, torchvision_checkpoint: str | Path | None = None
) -> Path:
    """Export the card's weights (or a random init, or a torchvision checkpoint for a
    ``maskrcnn`` card) to its ``[onnx]`` file; update its sha256."""
    card = load_card(card_path)
    if card.onnx is None:
        raise CardError(f"{card.path}: an [onnx] table naming the output file is needed to export")
    torch.manual_seed(0)
    model = build_model(card)
    if torchvision_checkpoint is not None:
        if card.family != "maskrcnn":
            raise CardError(f"{card.path}: a torchvision checkpoint needs a maskrcnn card, not {card.family!r}")
        from perception.nets.maskrcnn_checkpoint import load_torchvision_checkpoint

        load_torchvision_checkpoint(torchvision_checkpoint, model, card.classes)
    elif not random_init:
        if card.weights is None:
            raise CardError(f"{card.path}: no [weights] table; train first or pass --random-init")
        load_weights(model, card, card.weights.verify())
    if card.family == "maskrcnn":
        path = export_maskrcnn_onnx(model, card.onnx.path, card.input_width, card.input_height)
    elif card.family == "solov2":
        path = export_solov2_onnx(model, card)
    else:
        path = export_onnx(model, card.onnx.path, card.input_width, card.input_height)  # type: ignore[arg-type]
        _export_mask_iou(model, card)  # type: ignore[arg-type]
    digest = sha256_of(path)
    set_card_value(card.path, "onnx", "sha256", digest)
    log.info("exported %s to %s (sha256 %s)", card.name, path, digest[:12])
    return path
