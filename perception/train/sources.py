"""What a training run learns from: the sources named by ``--data`` or the card's ``[data]``,
mixed by weight, and the held-out part each one keeps back for validation (torch only
through :mod:`perception.train.data`).

A source spec is ``KIND[:PATH][@WEIGHT]``:

- ``synth``: the synthetic drives of the card's ``[data]`` settings (frame bank, scenarios,
  times of day; copy-paste with ``--coco-root``); ``shapes``: the built-in toy shapes;
- ``yolo-seg:DIR``: a YOLO-seg folder (``images/``, ``labels/``);
- ``coco:FILE.json``: a COCO instances JSON (images at ``file_name`` relative to its folder,
  or to ``--images DIR``);
- ``drive:FILE.mcap``: a recorded drive with ground truth.

Several specs are joined with commas; sample ``i`` comes from source ``k`` with probability
``weight_k / sum(weights)`` (drawn from ``(seed, i)``, so the mix is reproducible). Held
out: the synthetic sources' own held-out drives (``eval_seed``), and ``val_fraction`` of
each file source's images (a stable split by name), scored with the same COCO code as
``perception eval``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from perception.train.augment import NO_AUGMENT, Augment, augment_image
from perception.train.data import DataConfig, DataSource, Sample, ShapesSource, to_sample
from perception.train.datasets import SourceSpec, evenly_spaced, read_images
from perception.train.errors import DataError
from perception.train.frame_bank import BankConfig, BankSource, FrameBank
from perception.train.labelled import ClassMap, LabelledImage
from perception.train.synth_source import SynthSource


def split(images: Sequence[LabelledImage], val_fraction: float) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """``(train, validation)``: an image is in the validation part when the hash of its
    ``where`` falls in the first ``val_fraction`` (stable when images are added or
    removed); at least one image of two or more goes to each side when the fraction > 0."""
    if not images or val_fraction <= 0:
        return list(images), []
    keys = [zlib.crc32(im.where.encode()) / 2**32 for im in images]
    val = {i for i, k in enumerate(keys) if k < val_fraction}
    if not val and len(images) > 1:
        val = {int(np.argmin(keys))}
    if len(val) == len(images) and len(images) > 1:
        val.discard(int(np.argmax(keys)))
    return [im for i, im in enumerate(images) if i not in val], [im for i, im in enumerate(images) if i in val]


def make_source(
    cfg: DataConfig,
    width: int,
    height: int,
    seed: int,
    classes: tuple[str, ...],
    cache_dir: str | None = None,
    held_out: bool = False,
) -> DataSource:
    """The data source a card's ``[data]`` table names, at the card's input size. With
    ``cache_dir`` and ``bank_drives > 0`` a synth source is a frame bank cached there: for
    training, random frames of ``bank_drives`` drives, augmented; ``held_out``: every frame
    of ``eval_images / 2`` drives (two frames each, all scenarios and looks) once, as the node
    sees them. Otherwise frames stream from the simulator."""
    if cfg.source == "shapes":
        return ShapesSource(width, height, seed, classes, cfg.max_objects)
    if cache_dir is not None and cfg.bank_drives > 0:
        if held_out:
            bank = FrameBank(
                BankConfig(seed=seed, drives=max(1, cfg.eval_images // 2), frames_per_drive=2, stride=cfg.bank_stride),
                cache_dir,
            )
            return BankSource(bank, width, height, seed, shuffle=False)
        bank = FrameBank(
            BankConfig(
                seed=seed, drives=cfg.bank_drives, frames_per_drive=cfg.bank_frames_per_drive, stride=cfg.bank_stride
            ),
            cache_dir,
        )
        return BankSource(bank, width, height, seed, cfg.augment())
    return SynthSource(width, height, seed)


class FileSource:
    """A :class:`~perception.train.data.DataSource` over labelled images: sample ``index``
    is a random image (drawn from ``(seed, index)``; with ``shuffle=False`` image ``index``)
    under a random augmentation, at the model input ``width x height``. Crowd objects are
    not trained on."""

    def __init__(
        self,
        images: Sequence[LabelledImage],
        width: int,
        height: int,
        seed: int,
        augment: Augment = NO_AUGMENT,
        shuffle: bool = True,
        pad_value: int = 114,
    ) -> None:
        if not images:
            raise DataError("a file source needs at least one labelled image")
        augment.validate()
        self.images, self.width, self.height, self.seed = list(images), width, height, seed
        self.augment, self.shuffle, self.pad_value = augment, shuffle, pad_value

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int) -> Sample:
        rng = np.random.default_rng((self.seed, index))
        rec = self.images[int(rng.integers(len(self.images))) if self.shuffle else index % len(self.images)]
        objs = [o for o in rec.objects if not o.crowd]
        image, masks = augment_image(
            rec.load(),
            [o.mask(rec.height, rec.width) for o in objs],
            (self.width, self.height),
            self.augment,
            rng,
            self.pad_value,
        )
        return to_sample(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), [m > 0 for m in masks], [o.class_id for o in objs])


class MixedSource:
    """Sample ``index`` of source ``k``, with ``k`` drawn from ``(seed, index)`` in
    proportion to ``weights``."""

    def __init__(self, sources: Sequence[DataSource], weights: Sequence[float], seed: int) -> None:
        if len(sources) != len(weights) or not sources:
            raise DataError("a mix needs one weight per source")
        self.sources, self.seed = list(sources), seed
        w = np.asarray(weights, np.float64)
        self._cdf = np.cumsum(w / w.sum())

    def which(self, index: int) -> int:
        """The source that sample ``index`` comes from."""
        u = np.random.default_rng((self.seed, index, 0x6D6978)).random()
        return min(int(np.searchsorted(self._cdf, u, side="right")), len(self.sources) - 1)

    def sample(self, index: int) -> Sample:
        return self.sources[self.which(index)].sample(index)


class HeldOut:
    """Held-out samples of several sources one after the other: ``counts[k]`` samples
    (``0..counts[k]-1``) of source ``k``."""

    def __init__(self, sources: Sequence[DataSource], counts: Sequence[int]) -> None:
        self.sources, self.counts = list(sources), [int(c) for c in counts]
        self._ends = np.cumsum(self.counts)

    def __len__(self) -> int:
        return int(self._ends[-1]) if self.counts else 0

    def sample(self, index: int) -> Sample:
        k = int(np.searchsorted(self._ends, index, side="right"))
        return self.sources[k].sample(index - (int(self._ends[k - 1]) if k else 0))


@dataclass(frozen=True)
class TrainingData:
    """A run's data: the mixed ``train`` source, the ``held_out`` samples (``len`` of them),
    and one line per source saying what it holds."""

    train: DataSource
    held_out: HeldOut
    summary: tuple[str, ...]


def _held_out_synth(
    cfg: DataConfig, kind: str, width: int, height: int, classes: tuple[str, ...], cache_dir: str | None
) -> DataSource:
    """The synthetic (or toy) held-out samples: drives of ``eval_seed``, never trained on."""
    return make_source(replace(cfg, source=kind), width, height, cfg.eval_seed, classes, cache_dir, held_out=True)


def _held_out_files(
    images: Sequence[LabelledImage], count: int, width: int, height: int, seed: int
) -> tuple[DataSource, int]:
    """Up to ``count`` of ``images``, evenly spaced over the (sorted) set so that every city
    or sequence of it is in, unaugmented; and how many."""
    picks = evenly_spaced(len(images), count)
    return FileSource([images[i] for i in picks], width, height, seed, shuffle=False), len(picks)


def build_training_data(
    cfg: DataConfig,
    specs: Sequence[SourceSpec],
    width: int,
    height: int,
    classes: tuple[str, ...],
    cache_dir: str | None = None,
    images_dir: str | None = None,
    val_specs: Sequence[SourceSpec] = (),
) -> TrainingData:
    """The sources of ``specs`` at the model input size, mixed, with their held-out parts
    (``cfg.eval_images`` held-out samples shared among the sources). With ``val_specs``
    (a validation set of its own, such as ``yolo-seg:cityscapes/val``) the held-out samples
    come from those instead and the training sources are used whole; a ``synth`` validation
    spec is the synthetic held-out drives (``eval_seed``)."""
    class_map = ClassMap(cfg.classes)
    train: list[DataSource] = []
    held: list[tuple[DataSource, int]] = []
    lines: list[str] = []
    own_val = bool(val_specs)
    per_source = max(1, cfg.eval_images // len(val_specs or specs))
    for spec in specs:
        if spec.kind in ("synth", "shapes"):
            train.append(make_source(replace(cfg, source=spec.kind), width, height, cfg.train_seed, classes, cache_dir))
            if not own_val:
                held.append((_held_out_synth(cfg, spec.kind, width, height, classes, cache_dir), per_source))
            lines.append(
                f"{spec.kind} (weight {spec.weight:g}): generated"
                + ("" if own_val else f"; {per_source} held-out samples")
            )
            continue
        images = read_images(spec, class_map, images_dir)
        fit, val = (images, []) if own_val else split(images, cfg.val_fraction)
        if not fit:
            raise DataError(
                f"{spec.kind}:{spec.path}: {len(images)} image(s), none left to train on after the "
                f"validation split (val_fraction {cfg.val_fraction})"
            )
        train.append(FileSource(fit, width, height, cfg.train_seed, cfg.augment()))
        if val:
            held.append(_held_out_files(val, per_source, width, height, cfg.eval_seed))
        lines.append(
            f"{spec.kind}:{spec.path} (weight {spec.weight:g}): {len(fit)} training and {len(val)} validation images"
        )
    for spec in val_specs:
        if spec.kind in ("synth", "shapes"):
            held.append((_held_out_synth(cfg, spec.kind, width, height, classes, cache_dir), per_source))
        else:
            images = read_images(spec, class_map, images_dir)
            held.append(_held_out_files(images, per_source, width, height, cfg.eval_seed))
        lines.append(f"validation {spec.kind}{':' + spec.path if spec.path else ''}: {held[-1][1]} samples")
    mixed = train[0] if len(train) == 1 else MixedSource(train, [s.weight for s in specs], cfg.train_seed)
    return TrainingData(mixed, HeldOut([h for h, _ in held], [n for _, n in held]), tuple(lines))
