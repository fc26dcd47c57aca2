"""Training data behind one small interface (torch only).

A :class:`DataSource` gives sample ``index`` of a seeded stream as ``(image, target)`` in
torchvision detection conventions:

- ``image``: ``(3, H, W)`` float32 RGB in ``[0, 1]``;
- ``target["boxes"]``: ``(G, 4)`` float32 xyxy pixels; ``target["labels"]``: ``(G,)``
  int64 indices into :data:`perception.bus.classes.CLASSES`; ``target["masks"]``:
  ``(G, H, W)`` uint8 visible masks (after occlusion).

Samples are a pure function of ``(seed, index)``, so training resumes exactly and a
held-out set is just another seed. Sources: ``shapes`` (built in: class-specific shapes
on textured backgrounds, for tests and smoke runs) and ``synth`` (the synthetic drives of
``perception.synth``, letterboxed like the preprocess node does); users' files (COCO,
YOLO-seg, drives) are read by :mod:`perception.train.labelled`, and
:mod:`perception.train.sources` picks the source a card's ``[data]`` names
(``make_source``) and mixes the sources a run names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import torch

from perception.bus.classes import CLASSES

if TYPE_CHECKING:
    from perception.train.augment import Augment

Target = dict[str, torch.Tensor]
Sample = tuple[torch.Tensor, Target]


class DataSource(Protocol):
    def sample(self, index: int) -> Sample:
        """Sample ``index`` (any non-negative int) of this source's seeded stream."""
        ...


@dataclass(frozen=True)
class DataConfig:
    """The card's ``[data]`` table."""

    source: str = "shapes"
    train_seed: int = 0
    eval_seed: int = 1001
    eval_images: int = 50
    max_objects: int = 6
    copy_paste_per_image: int = 2
    #: synth only: render this many drives once into a frame bank and draw every sample from
    #: all of it (:mod:`perception.train.frame_bank`); 0 streams consecutive frames instead
    bank_drives: int = 0
    bank_frames_per_drive: int = 6
    bank_stride: int = 8
    #: augmentation of bank samples: scale range (1 = the node's letterbox), flip probability,
    #: photometric jitter strength
    scale_min: float = 1.0
    scale_max: float = 1.0
    flip: float = 0.0
    photometric: float = 0.0
    night_weight: float = 1.0
    #: what to train on (:mod:`perception.train.sources` specs: ``"synth"``,
    #: ``"yolo-seg:DIR@0.5"``, ``"coco:FILE.json"``, ``"drive:FILE.mcap"``; paths relative
    #: to the card's folder); empty: ``source`` alone. ``--data`` overrides it.
    sources: tuple[str, ...] = ()
    #: validation sets of their own (same spec syntax; ``synth`` = the synthetic held-out
    #: drives): when given, held-out samples come from these only and the training sources
    #: are not split. ``--val`` overrides it.
    val_sources: tuple[str, ...] = ()
    #: share of each file source's images held out for validation (a stable split by name)
    val_fraction: float = 0.1
    #: a dataset's class names (or ids) to ours, ``""`` to drop one (``[data.classes]``);
    #: names that are ours map to themselves, other classes are dropped
    classes: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.source not in ("shapes", "synth"):
            raise ValueError(f"source must be 'shapes' or 'synth', got {self.source!r}")
        if not 0 <= self.val_fraction <= 0.9:
            raise ValueError(f"val_fraction must be in [0, 0.9], got {self.val_fraction}")
        if self.train_seed == self.eval_seed:
            raise ValueError("eval_seed must differ from train_seed (held-out data)")
        if self.bank_drives < 0:
            raise ValueError(f"bank_drives must be >= 0, got {self.bank_drives}")
        if self.bank_drives and (self.bank_frames_per_drive < 1 or self.bank_stride < 1):
            raise ValueError("bank_frames_per_drive and bank_stride must be >= 1")
        self.augment().validate()

    def augment(self) -> Augment:
        """The augmentation these keys describe (:class:`perception.train.augment.Augment`)."""
        from perception.train.augment import Augment

        return Augment(self.scale_min, self.scale_max, self.flip, self.photometric, self.night_weight)


def to_sample(image_rgb: np.ndarray, masks: list[np.ndarray], labels: list[int]) -> Sample:
    """Pack an ``(H, W, 3)`` uint8 RGB image and per-instance ``(H, W)`` bool visible masks
    into a :data:`Sample`, dropping instances with fewer than 16 visible pixels."""
    h, w = image_rgb.shape[:2]
    keep = [i for i, m in enumerate(masks) if m.sum() >= 16]
    boxes = np.zeros((len(keep), 4), np.float32)
    for j, i in enumerate(keep):
        ys, xs = np.nonzero(masks[i])
        boxes[j] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    mask_arr = np.stack([masks[i] for i in keep]).astype(np.uint8) if keep else np.zeros((0, h, w), np.uint8)
    image = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float() / 255.0
    return image, {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.tensor([labels[i] for i in keep], dtype=torch.long),
        "masks": torch.from_numpy(mask_arr),
    }


class ShapesSource:
    """Built-in generator: each class is a distinct shape and colour family drawn over a
    textured background, with occlusion. Learnable in a few hundred steps; used by the
    tests and for smoke runs before the synthetic drives exist."""

    #: class -> (aspect w/h range, base BGR colour)
    LOOKS = {
        "person": ((0.3, 0.5), (40, 40, 200)),
        "bicycle": ((1.2, 1.6), (200, 200, 40)),
        "car": ((1.4, 2.2), (200, 60, 40)),
        "motorcycle": ((0.9, 1.3), (40, 200, 200)),
        "bus": ((2.2, 3.0), (40, 180, 60)),
        "truck": ((1.6, 2.4), (160, 60, 160)),
    }

    def __init__(
        self, width: int, height: int, seed: int, classes: tuple[str, ...] = CLASSES, max_objects: int = 6
    ) -> None:
        self.width, self.height, self.seed, self.max_objects = width, height, seed, max_objects
        self.classes = classes

    def sample(self, index: int) -> Sample:
        rng = np.random.default_rng((self.seed, index))
        h, w = self.height, self.width
        base = rng.integers(60, 200, 3)
        ramp = np.linspace(-40, 40, h)[:, None, None] * rng.uniform(-1, 1)
        img = np.clip(base[None, None, :] + ramp + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        masks: list[np.ndarray] = []
        labels: list[int] = []
        for _ in range(rng.integers(0, self.max_objects + 1)):
            name = self.classes[rng.integers(len(self.classes))]
            (ar_lo, ar_hi), colour = self.LOOKS[name]
            oh = rng.uniform(0.12, 0.6) * h
            ow = min(oh * rng.uniform(ar_lo, ar_hi), 0.9 * w)
            cx, cy = rng.uniform(0, w), rng.uniform(oh / 2, h)
            m = np.zeros((h, w), np.uint8)
            pts = (int(cx), int(cy)), (int(ow / 2), int(oh / 2))
            if name in ("person", "motorcycle"):
                cv2.ellipse(m, pts[0], pts[1], 0, 0, 360, 1, -1)
            elif name == "bicycle":
                r = int(oh / 2)
                cv2.circle(m, (int(cx - ow / 4), int(cy)), r, 1, max(2, r // 4))
                cv2.circle(m, (int(cx + ow / 4), int(cy)), r, 1, max(2, r // 4))
            else:
                cv2.rectangle(m, (int(cx - ow / 2), int(cy - oh / 2)), (int(cx + ow / 2), int(cy + oh / 2)), 1, -1)
                if name == "truck":
                    m[int(cy - oh / 2) : int(cy - oh / 6), int(cx + ow / 6) : int(cx + ow / 2) + 1] = 0
            col = np.clip(np.array(colour) + rng.integers(-30, 31, 3), 0, 255)
            img[m > 0] = (col * rng.uniform(0.8, 1.1, (int(m.sum()), 1))).clip(0, 255).astype(np.uint8)
            for prev in masks:
                prev &= m == 0
            masks.append(m.astype(bool))
            labels.append(CLASSES.index(name))
        return to_sample(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), masks, labels)
