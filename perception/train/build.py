"""Build the torch model a card describes and read/write its weights file (torch only).

Weights file: ``torch.save`` of ``{"model": state_dict, "name", "family", "classes",
"architecture", "step"}``; read back with ``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

from pathlib import Path

import torch

from perception.config import build_config
from perception.segmentation.card import CardError, ModelCard
from perception.segmentation.yolact import Yolact, YolactConfig


def build_model(card: ModelCard) -> Yolact:
    """A randomly initialised model of the card's architecture and classes."""
    if card.family != "yolact":
        raise CardError(f"{card.path}: family {card.family!r} is not trained by this package yet")
    cfg = build_config(YolactConfig, card.architecture, card.where("architecture"))
    return Yolact(cfg, num_classes=len(card.classes))


def save_weights(model: Yolact, card: ModelCard, path: Path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), "name": card.name, "family": card.family,
                "classes": list(card.classes), "architecture": dict(card.architecture), "step": step}, tmp)
    tmp.replace(path)


def load_weights(model: Yolact, card: ModelCard, path: Path) -> int:
    """Load a weights file into ``model``; returns the step it was saved at.

    Raises :class:`CardError` naming the file when it is not a weights file of this card.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CardError(f"{card.path}: weights file {str(path)!r} does not exist") from None
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise CardError(f"{card.path}: weights file {str(path)!r} cannot be read: {e}") from None
    if not isinstance(blob, dict) or "model" not in blob:
        raise CardError(f"{card.path}: weights file {str(path)!r} is not a perception weights file")
    if list(blob.get("classes", [])) != list(card.classes):
        raise CardError(f"{card.path}: weights file {str(path)!r} has classes {blob.get('classes')}, "
                        f"card says {list(card.classes)}")
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as e:
        raise CardError(f"{card.path}: weights file {str(path)!r} does not fit [architecture]: {e}") from None
    return int(blob.get("step", 0))
