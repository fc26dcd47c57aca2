"""Build the torch model a card describes and read/write its weights file (torch only).

Weights file: ``torch.save`` of ``{"model": state_dict, "name", "family", "classes",
"architecture", "step"}``; read back with ``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from perception.nets.maskrcnn import COCO_NUM_CLASSES
from perception.nets.maskrcnn_checkpoint import (
    CheckpointError,
    coco_to_road_classes,
    load_torch_file,
    read_state_dict,
)
from perception.nets.pretrained import PretrainedError, load_pretrained
from perception.nets.yolact import Yolact, YolactConfig
from perception.node.config import build_config
from perception.segmentation.card import CardError, ModelCard
from perception.segmentation.postprocess import postprocess_config


def build_model(card: ModelCard) -> nn.Module:
    """A randomly initialised model of the card's architecture and classes: a
    :class:`Yolact` or a torchvision ``MaskRCNN`` (classes + background) at the card's
    fixed input size, its test-time settings from ``[postprocess]``."""
    if card.family == "maskrcnn":
        from perception.nets.maskrcnn import InferenceSettings, MaskRCNNConfig, build_maskrcnn

        cfg = build_config(MaskRCNNConfig, card.architecture, card.where("architecture"))
        post = postprocess_config(card)
        infer = InferenceSettings(post.score_threshold, post.iou_threshold, post.max_detections)
        return build_maskrcnn(cfg, len(card.classes) + 1, card.input_width, card.input_height, infer)
    if card.family == "solov2":
        from perception.nets.solov2 import Solov2, Solov2Config

        return Solov2(build_config(Solov2Config, card.architecture, card.where("architecture")), len(card.classes))
    if card.family != "yolact":
        raise CardError(f"{card.path}: family {card.family!r} is not trained by this package")
    cfg = build_config(YolactConfig, card.architecture, card.where("architecture"))
    return Yolact(cfg, num_classes=len(card.classes))


def read_weights_file(path: Path, what: str) -> dict:
    """The dict of a perception weights file (``"model"`` holds the state_dict), read with
    ``weights_only=True``; :class:`CardError` starting with ``what`` and naming the file when
    it is missing, unreadable or of another format."""
    blob = load_torch_file(path, what, CardError)
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise CardError(f"{what} {str(path)!r} is not a perception weights file")
    return blob


def init_from(
    model: nn.Module, card: ModelCard, path: Path, rename: dict[str, str] | None = None, what: str = "--init"
) -> tuple[int, int]:
    """Copy into ``model`` every tensor of the weights file ``path`` whose name, after the
    first matching prefix of ``rename`` is replaced (``{"backbone.": "backbone.body."}``),
    and shape match the model's; the rest stays as it is. ``path`` is any weights file the
    project reads: a perception weights file (transfer from another model of the project,
    for example the fast model's trained trunk into the accurate model, the only pretraining
    on machines that cannot download weights) or a checkpoint in torchvision's published
    format (a plain ``state_dict``), whose 91-class COCO predictor rows of a ``maskrcnn``
    card are cut down to the card's classes. Returns ``(copied, model tensors)``.

    Raises :class:`CardError` naming the file when it cannot be read or nothing matches.
    """
    try:
        source = read_state_dict(path)
        if card.family == "maskrcnn":
            rows = source.get("roi_heads.box_predictor.cls_score.weight")
            if rows is not None and rows.shape[0] == COCO_NUM_CLASSES:
                source = coco_to_road_classes(source, card.classes)
    except CheckpointError as e:
        raise CardError(f"{what}: {e}") from None
    target = model.state_dict()
    copied: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        new = next((to + key[len(old) :] for old, to in (rename or {}).items() if key.startswith(old)), key)
        if new in target and tuple(target[new].shape) == tuple(value.shape):
            copied[new] = value
    if not copied:
        raise CardError(
            f"{what}: no tensor of {str(path)!r} fits the model of {card.path}"
            f"{f' (renamed with {rename})' if rename else ''}; first keys: {list(source)[:3]}"
        )
    model.load_state_dict(copied, strict=False)
    return len(copied), len(target)


def trunk(model: nn.Module, card: ModelCard) -> nn.Module:
    """The feature extractor of the model (what ``freeze_trunk`` freezes): the backbone
    of a ``yolact`` model, the backbone's body (not its FPN) of a ``maskrcnn`` one."""
    return model.backbone.body if card.family == "maskrcnn" else model.backbone  # type: ignore[return-value]


def freeze(module: nn.Module) -> int:
    """Stop ``module`` from learning: no gradients for its parameters and its BatchNorm
    statistics held (it runs in eval mode even inside a model in train mode). Returns the
    number of parameters frozen."""
    n = 0
    for p in module.parameters():
        p.requires_grad_(False)
        n += p.numel()
    module.register_forward_pre_hook(_hold_statistics)
    return n


def freeze_batchnorm(module: nn.Module) -> int:
    """Freeze every BatchNorm layer under ``module`` (statistics held, affine parameters not
    learning); returns how many layers."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        freeze(m)
    return len(layers)


def freeze_prefixes(model: nn.Module, prefixes: tuple[str, ...]) -> int:
    """Freeze the parameters (and hold the BatchNorm statistics) of the submodules named by
    ``prefixes`` (everything under each); returns the number of parameters frozen. Raises
    :class:`CardError` when a prefix names no module (a typo would silently train all)."""
    n = 0
    for prefix in prefixes:
        try:
            n += freeze(model.get_submodule(prefix))
        except AttributeError:
            raise CardError(f"[training] frozen_prefixes: {prefix!r} names no module of the model") from None
    return n


def load_pretrained_trunk(model: nn.Module, card: ModelCard) -> str:
    """Load the card's ``[architecture] pretrained`` trunk (when set) into ``model``; returns
    a line saying what was loaded ("" when the card has none). Raises :class:`CardError`."""
    name = str(card.architecture.get("pretrained", ""))
    if not name:
        return ""
    try:
        report = load_pretrained(trunk(model, card), name)  # type: ignore[arg-type]
    except PretrainedError as e:
        raise CardError(f"{card.path}: [architecture] pretrained: {e}") from None
    return f"{len(report.loaded)} trunk tensors from {name} ({report.file})"


def param_groups(model: nn.Module, card: ModelCard, trunk_lr_scale: float) -> list[dict[str, object]]:
    """The optimiser's parameter groups: the trunk's learning parameters at ``trunk_lr_scale``
    times the base rate (``lr_scale``), the rest at 1."""
    inner = {id(p) for p in trunk(model, card).parameters()}
    learn = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in learn if id(p) not in inner], "lr_scale": 1.0},
        {"params": [p for p in learn if id(p) in inner], "lr_scale": trunk_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def _hold_statistics(module: nn.Module, _inputs: object) -> None:
    module.eval()  # returns the module: a pre-hook that returned it would replace the inputs


def save_weights(model: nn.Module, card: ModelCard, path: Path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "name": card.name,
            "family": card.family,
            "classes": list(card.classes),
            "architecture": dict(card.architecture),
            "step": step,
        },
        tmp,
    )
    tmp.replace(path)


def load_weights(model: nn.Module, card: ModelCard, path: Path) -> int:
    """Load a weights file into ``model``; returns the step it was saved at.

    Raises :class:`CardError` naming the file when it is not a weights file of this card.
    """
    blob = read_weights_file(path, f"{card.path}: weights file")
    if list(blob.get("classes", [])) != list(card.classes):
        raise CardError(
            f"{card.path}: weights file {str(path)!r} has classes {blob.get('classes')}, card says {list(card.classes)}"
        )
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as e:
        raise CardError(f"{card.path}: weights file {str(path)!r} does not fit [architecture]: {e}") from None
    return int(blob.get("step", 0))
