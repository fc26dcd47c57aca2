"""Data specs and the labelled image sets they name, torch-free (``perception train
--data`` and ``perception eval --data`` read them; :mod:`perception.train.sources` turns
them into training sources).

A spec is ``KIND[:PATH][@WEIGHT]`` (see :mod:`perception.train.sources`); the file kinds
``yolo-seg:DIR``, ``coco:FILE.json`` and ``drive:FILE.mcap`` are read by
:mod:`perception.train.labelled`. :func:`labelled_frames` gives their images with ground
truth as the evaluation's :class:`~perception.evaluation.image_set.LabelledFrame` records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_utils

from perception.bus.schema import GroundTruth, GtInstance, Rle
from perception.train.coco import read_coco
from perception.train.errors import DataError
from perception.train.labelled import ClassMap, LabelledImage, read_drive, read_yolo_seg

if TYPE_CHECKING:
    from perception.evaluation.image_set import LabelledFrame

KINDS = ("synth", "shapes", "yolo-seg", "coco", "drive")
FILE_KINDS = ("yolo-seg", "coco", "drive")


@dataclass(frozen=True)
class SourceSpec:
    """One source of a run: ``kind`` (one of :data:`KINDS`), ``path`` for the file kinds,
    and its mixing ``weight``."""

    kind: str
    path: str = ""
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str, base: Path | None = None) -> SourceSpec:
        """``KIND[:PATH][@WEIGHT]``; a relative ``PATH`` is taken from ``base`` when given
        (the card's folder for specs written in a card)."""
        body, weight = text.strip(), 1.0
        if "@" in body:
            head, _, tail = body.rpartition("@")
            try:
                weight = float(tail)
            except ValueError:
                raise DataError(f"data source {text!r}: the weight after '@' must be a number, got {tail!r}") from None
            body = head
        kind, _, path = body.partition(":")
        if kind not in KINDS:
            raise DataError(f"data source {text!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if (kind in FILE_KINDS) != bool(path):
            raise DataError(
                f"data source {text!r}: "
                + (f"{kind} needs a path ({kind}:PATH)" if kind in FILE_KINDS else f"{kind} takes no path")
            )
        if not (weight > 0 and np.isfinite(weight)):
            raise DataError(f"data source {text!r}: the weight must be > 0, got {weight}")
        if path and base is not None and not Path(path).is_absolute():
            path = str(base / path)
        return cls(kind, path, weight)


def parse_specs(specs: str | Sequence[str], base: Path | None = None) -> tuple[SourceSpec, ...]:
    """Comma-separated specs (a string) or a list of them (the card's ``sources``)."""
    items = [s for s in (specs.split(",") if isinstance(specs, str) else specs) if s.strip()]
    if not items:
        raise DataError("no data source given (expected SPEC[,SPEC...], e.g. synth or yolo-seg:DIR)")
    return tuple(SourceSpec.parse(s, base) for s in items)


def read_images(spec: SourceSpec, class_map: ClassMap, images_dir: str | None = None) -> list[LabelledImage]:
    """The labelled images of a file spec (``DataError`` naming the file when it is missing,
    not of its format, or holds no usable image)."""
    if spec.kind == "coco":
        return read_coco(spec.path, class_map, images_dir)
    if spec.kind == "yolo-seg":
        return read_yolo_seg(spec.path, class_map)
    if spec.kind == "drive":
        return read_drive(spec.path)
    raise DataError(
        f"data source {spec.kind!r} is generated, not a labelled image set (expected one of "
        f"{', '.join(f'{k}:PATH' for k in FILE_KINDS)})"
    )


def evenly_spaced(total: int, count: int) -> np.ndarray:
    """Indices of ``min(count, total)`` items spread evenly over ``0..total-1`` (first and last
    included), so every part of a sorted set (each city, each sequence) is in."""
    if total <= 0 or count <= 0:
        return np.zeros(0, int)
    return np.unique(np.linspace(0, total - 1, min(total, count)).round().astype(int))


def read_set(
    specs: Sequence[SourceSpec], class_map: ClassMap, images_dir: str | None = None, limit: int = 0
) -> list[LabelledImage]:
    """The images of all ``specs`` one after the other; with ``limit`` > 0, that many of them
    evenly spaced over the whole list."""
    images = [im for spec in specs for im in read_images(spec, class_map, images_dir)]
    return [images[i] for i in evenly_spaced(len(images), limit)] if limit > 0 else images


def ground_truth(image: LabelledImage, class_ids: Collection[int] | None = None) -> GroundTruth:
    """The image's objects as :class:`GroundTruth` (``(height, width)`` RLE masks, crowd
    objects as ``ignore``); objects of a class not in ``class_ids`` (when given) and empty
    masks (a polygon that covers no pixel centre) are left out."""
    instances = []
    for obj in image.objects:
        if class_ids is not None and obj.class_id not in class_ids:
            continue
        rle = mask_utils.encode(np.asfortranarray(obj.mask(image.height, image.width)))
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        if w * h > 0:
            instances.append(
                GtInstance(len(instances) + 1, obj.class_id, (x, y, x + w, y + h), Rle.trusted(rle), ignore=obj.crowd)
            )
    return GroundTruth(image.width, image.height, tuple(instances))


def labelled_frames(
    images: Sequence[LabelledImage], class_ids: Collection[int] | None = None
) -> Iterator[LabelledFrame]:
    """Each image loaded (``(H, W, 3)`` uint8 BGR) with its ground truth, one at a time."""
    from perception.evaluation.image_set import LabelledFrame  # the scoring side, only when scoring

    for image in images:
        yield LabelledFrame(image.where, image.load(), ground_truth(image, class_ids))
