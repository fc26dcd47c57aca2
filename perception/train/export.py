"""``perception export --card``: the card's weights to an ONNX graph for the runtime
(torch only). The graph is :class:`~perception.segmentation.yolact.YolactExport` at the
card's fixed input size; its sha256 is written into the card's ``[onnx]`` table."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from perception.segmentation.card import CardError, load_card, set_card_value, sha256_of
from perception.segmentation.runtime import YOLACT_OUTPUTS
from perception.segmentation.yolact import Yolact, YolactExport
from perception.train.build import build_model, load_weights

log = logging.getLogger(__name__)
OPSET = 17


def export_onnx(model: Yolact, path: Path, width: int, height: int) -> Path:
    """Export ``model`` for a ``(1, 3, height, width)`` float input to ``path`` and check it
    with ``onnx.checker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = YolactExport(model.eval())
    with warnings.catch_warnings():  # the TorchScript exporter warns that dynamo is the new default
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (torch.zeros(1, 3, height, width),), str(path), opset_version=OPSET,
                          input_names=["images"], output_names=list(YOLACT_OUTPUTS), dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def export_card(card_path: str | Path, random_init: bool = False) -> Path:
    """Export the card's weights (or a random init) to its ``[onnx]`` file; update its sha256."""
    card = load_card(card_path)
    if card.onnx is None:
        raise CardError(f"{card.path}: an [onnx] table naming the output file is needed to export")
    torch.manual_seed(0)
    model = build_model(card)
    if not random_init:
        if card.weights is None:
            raise CardError(f"{card.path}: no [weights] table; train first or pass --random-init")
        load_weights(model, card, card.weights.verify())
    path = export_onnx(model, card.onnx.path, card.input_width, card.input_height)
    digest = sha256_of(path)
    set_card_value(card.path, "onnx", "sha256", digest)
    log.info("exported %s to %s (sha256 %s)", card.name, path, digest[:12])
    return path
