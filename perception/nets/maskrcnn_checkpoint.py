"""torchvision's published Mask R-CNN checkpoints, loaded from a local file (torch only).

torchvision publishes a COCO model as a plain ``state_dict`` saved with ``torch.save``
(for example ``maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth``): keys such as
``backbone.body.layer1.0.conv1.weight`` and predictor layers with 91 rows (background and
the 90 COCO category ids). :func:`coco_to_road_classes` keeps the rows of the road
classes (``perception.bus.classes.COCO_CATEGORY_IDS``) so the model's outputs use the same class
list as the fast model; :func:`load_torchvision_checkpoint` reads a file, maps it and loads
it into a model, or raises :class:`CheckpointError` naming the keys that do not fit.
Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from perception.bus.classes import CLASSES, COCO_CATEGORY_IDS
from perception.nets.maskrcnn import COCO_NUM_CLASSES

#: Predictor tensors whose first axis runs over classes, and the rows per class.
CLASS_ROWS = {
    "roi_heads.box_predictor.cls_score.weight": 1,
    "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4,
    "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
    "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded into the model; names the file and keys."""


def coco_rows(classes: Sequence[str] = CLASSES) -> list[int]:
    """Rows of a 91-class COCO predictor for background and each of ``classes`` (names
    from :data:`CLASSES`), in that order."""
    return [0] + [COCO_CATEGORY_IDS[CLASSES.index(c)] for c in classes]


def coco_to_road_classes(
    state: Mapping[str, torch.Tensor], classes: Sequence[str] = CLASSES
) -> dict[str, torch.Tensor]:
    """``state`` with its 91-class predictor rows cut down to background + ``classes``.

    Every other tensor is passed through unchanged. Raises :class:`CheckpointError` when a
    predictor tensor does not have 91 classes' rows.
    """
    rows = coco_rows(classes)
    out = dict(state)
    for key, per_class in CLASS_ROWS.items():
        if key not in state:
            continue
        t = state[key]
        if t.shape[0] != COCO_NUM_CLASSES * per_class:
            raise CheckpointError(
                f"{key} has {t.shape[0]} rows, expected {COCO_NUM_CLASSES * per_class} "
                f"({COCO_NUM_CLASSES} COCO classes x {per_class})"
            )
        index = torch.tensor([r * per_class + j for r in rows for j in range(per_class)])
        out[key] = t.index_select(0, index).clone()
    return out


def _listing(keys: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_fits(state: Mapping[str, torch.Tensor], model: nn.Module, where: str) -> None:
    """Raise :class:`CheckpointError` naming the missing, unexpected and mis-shaped keys
    of ``state`` for ``model`` (``where`` names the file)."""
    want = model.state_dict()
    # BatchNorm fills in a missing step counter and FrozenBatchNorm2d drops it: not a mismatch
    counter = ".num_batches_tracked"
    missing = [k for k in want if k not in state and not k.endswith(counter)]
    unexpected = [k for k in state if k not in want and not k.endswith(counter)]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(want[k].shape)}"
        for k in want
        if k in state and tuple(state[k].shape) != tuple(want[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [f"{where} does not fit the model's architecture"]
    if missing:
        parts.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        parts.append(f"mis-shaped keys: {_listing(shapes)}")
    raise CheckpointError("; ".join(parts))


def load_torch_file(path: Path, what: str, error: type[Exception]) -> object:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True``; ``error`` starting
    with ``what`` and naming the file when it is missing or cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except Exception as e:  # torch raises several types for corrupt or foreign files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise error(f"{what} {str(path)!r} cannot be read: {first}") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` in a checkpoint file: a plain one (torchvision's format) or one
    under a ``"model"`` or ``"state_dict"`` key. Read with ``weights_only=True``."""
    path = Path(path)
    blob = load_torch_file(path, "checkpoint file", CheckpointError)
    if isinstance(blob, dict):
        for key in ("model", "state_dict"):
            if isinstance(blob.get(key), dict):
                blob = blob[key]
                break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"checkpoint file {str(path)!r} is not a state_dict (a mapping of names to tensors)")
    return dict(blob)


def load_torchvision_checkpoint(path: str | Path, model: nn.Module, classes: Sequence[str] = CLASSES) -> nn.Module:
    """Load torchvision's published checkpoint format from ``path`` into ``model``.

    A 91-class COCO checkpoint is mapped to background + ``classes`` when ``model`` has
    ``len(classes) + 1`` classes; a checkpoint that already has the model's classes loads
    as it is. Raises :class:`CheckpointError` naming the file and the keys that do not fit.
    """
    state = read_state_dict(path)
    cls_key = "roi_heads.box_predictor.cls_score.weight"
    model_rows = model.state_dict().get(cls_key)
    if (
        cls_key in state
        and model_rows is not None
        and state[cls_key].shape[0] == COCO_NUM_CLASSES
        and model_rows.shape[0] == len(classes) + 1
    ):
        state = coco_to_road_classes(state, classes)
    check_fits(state, model, f"checkpoint file {str(path)!r}")
    model.load_state_dict(state)
    return model
