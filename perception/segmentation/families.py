"""The model families the segmenter runs, one row each: a card's ``family`` -> the
``"module:callable"`` that builds its segmenter from the card, the ONNX Runtime threads and
providers. Resolved with :mod:`importlib` when a card of that family is loaded, so that no
family's module imports another's, nor this table (each imports only the session helpers
of :mod:`.runtime`), and a new family is one row here."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perception.segmentation.card import CardError, ModelCard, load_card
from perception.segmentation.runtime import Segmenter

#: family -> "module:callable" (the callable may be a class's attribute: ``Class.from_card``)
FAMILIES: dict[str, str] = {
    "yolact": "perception.segmentation.runtime:YolactSegmenter",
    "maskrcnn": "perception.segmentation.maskrcnn_runtime:MaskRCNNSegmenter",
    "ultralytics": "perception.segmentation.ultralytics_adapter:UltralyticsSegmenter.from_card",
    "solov2": "perception.segmentation.solov2_runtime:Solov2Segmenter",
}


def family_factory(family: str) -> Callable[..., Segmenter]:
    """The callable :data:`FAMILIES` names for ``family`` (``KeyError`` when it has none)."""
    module, _, attr = FAMILIES[family].partition(":")
    obj: Any = importlib.import_module(module)
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def load_segmenter(
    card_path: ModelCard | str | Path,
    threads: int = 0,
    providers: Sequence[str] | None = None,
    precision: str = "fp32",
) -> Segmenter:
    """The segmenter a card (a path, or a loaded card) describes (a family of
    :data:`FAMILIES`: ``yolact``, ``maskrcnn``, ``ultralytics`` or ``solov2``), running the card's file
    for ``precision`` (``fp32``, ``fp16``, ``int8`` or ``auto``; see
    :mod:`~perception.segmentation.precision`)."""
    card = card_path if isinstance(card_path, ModelCard) else load_card(card_path)
    if card.family not in FAMILIES:
        raise CardError(f"{card.path}: family {card.family!r} has no ONNX runtime in this module")
    return family_factory(card.family)(card, threads, providers, precision)
