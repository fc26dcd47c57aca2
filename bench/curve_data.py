"""The data of ``bench/learning_curve.py``: the validation sets every model is scored on, and
the training frames as a YOLO-seg folder for Ultralytics.

- ``--data`` is one spec as ``perception train --data`` reads it (``synth``, ``yolo-seg:DIR``,
  ``coco:FILE.json``, ``drive:FILE.mcap``; :mod:`perception.train.datasets`): our trainers
  get it as it is, Ultralytics the same images (``synth``: the first card's frame bank) in a
  folder of its own, with our six classes (``names`` = :data:`perception.bus.classes.CLASSES`)
  as our readers map them (Cityscapes' COCO-80 ids: person, bicycle, car, motorcycle, bus,
  truck; ``train`` and other classes dropped; crowd regions left out). Images are links to
  the originals (a bank or drive frame is written as a JPEG); the labels are rewritten, so
  Ultralytics keeps its label cache there and never writes into the data folder.
- ``--val`` specs: ``synth`` is the six held-out drives of :mod:`bench.heldout` (a set
  each); a file spec is one set. Scored by the code of ``perception eval --card --data``.
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from bench.heldout import held_out_drives
from perception.bus.classes import CLASSES
from perception.segmentation.card import ModelCard
from perception.train.datasets import SourceSpec, evenly_spaced, parse_specs, read_images
from perception.train.errors import DataError
from perception.train.labelled import ClassMap, LabelledImage, LabelledObject, read_drive

#: images of the val sets that Ultralytics validates on once, after its run (it wants a val
#: split; our scoring is separate)
YOLO_VAL_IMAGES = 8


@dataclass(frozen=True)
class ValSet:
    name: str
    images: tuple[LabelledImage, ...]


def absolute_specs(text: str) -> str:
    """``text`` with every file spec's path made absolute (the trainers run elsewhere)."""
    return ",".join(f"{s.kind}:{Path(s.path).resolve()}" if s.path else s.kind for s in parse_specs(text))


def training_spec(text: str) -> SourceSpec:
    """The one training spec of ``--data`` (both trainers must see the same frames, so no mix)."""
    specs = parse_specs(text)
    if len(specs) != 1 or specs[0].kind == "shapes":
        raise DataError(
            f"--data {text!r}: give one source, synth or a labelled set (yolo-seg:DIR, coco:FILE.json, "
            "drive:FILE.mcap), so that every trainer sees the same frames"
        )
    return specs[0]


def val_sets(text: str, class_map: ClassMap, folder: Path, frames: int, limit: int) -> list[ValSet]:
    """The sets of ``--val``: ``synth`` as six held-out drives of ``frames`` frames written into
    ``folder``; each set cut to ``limit`` images evenly spaced over it (0: all)."""
    out = []
    for spec in parse_specs(text):
        if spec.kind == "synth":
            parts = [(d.name, read_drive(d.path)) for d in held_out_drives(folder, frames)]
        elif spec.kind == "shapes":
            raise DataError("--val shapes: validate on synth (the held-out drives) or a labelled set")
        else:
            parts = [("/".join(Path(spec.path).parts[-2:]), read_images(spec, class_map))]
        out += [ValSet(name, tuple(ims[i] for i in evenly_spaced(len(ims), limit or len(ims)))) for name, ims in parts]
    return out


def bank_images(card: ModelCard, cache: Path) -> Iterator[LabelledImage]:
    """The frames of the card's synthetic frame bank (the one ``perception train --data synth``
    draws from), one at a time, as JPEG-coded labelled images."""
    from perception.node.config import build_config
    from perception.train.data import DataConfig
    from perception.train.frame_bank import BankConfig, FrameBank

    d = build_config(DataConfig, card.data, card.where("data"))
    if d.bank_drives < 1:
        raise DataError(f"{card.path}: --data synth needs a frame bank ([data] bank_drives > 0) to share with the peer")
    bank = FrameBank(
        BankConfig(
            seed=d.train_seed, drives=d.bank_drives, frames_per_drive=d.bank_frames_per_drive, stride=d.bank_stride
        ),
        cache,
    )
    for i in range(len(bank)):
        image, ids, labels = bank.frame(i)
        objs = tuple(
            LabelledObject(
                int(cls), "rle", mask_utils.encode(np.asfortranarray((ids == inst).astype(np.uint8))), bool(ignore)
            )
            for inst, cls, ignore in labels
        )
        jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        yield LabelledImage(f"bank frame {i}", image.shape[1], image.shape[0], objs, data=jpeg)


def polygon(obj: LabelledObject, width: int, height: int) -> np.ndarray | None:
    """The object as one polygon, coordinates normalised: a YOLO polygon as it is, a mask's
    outer contours joined by Ultralytics' own ``merge_multi_segment``; None when empty."""
    if obj.encoding == "normalised":
        return np.asarray(obj.data, np.float64).reshape(-1, 2)
    from ultralytics.data.converter import merge_multi_segment

    contours, _ = cv2.findContours(obj.mask(height, width), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = [c.reshape(-1, 2).astype(np.float64) for c in contours if len(c) >= 3]
    if not parts:
        return None
    poly = (
        np.concatenate(merge_multi_segment([p.reshape(-1).tolist() for p in parts]), 0) if len(parts) > 1 else parts[0]
    )
    return poly / [width, height]


def write_split(root: Path, split: str, images: Iterable[LabelledImage]) -> int:
    """``images/<split>/`` (links, or the coded frames) and ``labels/<split>/`` of ``images``;
    returns how many."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    n = 0
    for n, im in enumerate(images, 1):
        rows = []
        for obj in im.objects:
            poly = None if obj.crowd else polygon(obj, im.width, im.height)
            if poly is not None:
                rows.append(" ".join([str(obj.class_id)] + [f"{v:.6f}" for v in poly.reshape(-1)]))
        stem = f"{n - 1:06d}"
        if im.path is not None:
            (root / "images" / split / f"{stem}{im.path.suffix}").symlink_to(im.path.resolve())
        else:
            suffix = ".png" if (im.data or b"").startswith(b"\x89PNG") else ".jpg"
            (root / "images" / split / f"{stem}{suffix}").write_bytes(im.data or b"")
        (root / "labels" / split / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
    return n


def yolo_dataset(
    out: Path, spec: SourceSpec, card: ModelCard, class_map: ClassMap, sets: Sequence[ValSet], cache: Path
) -> Path:
    """The Ultralytics ``data.yaml`` of the training frames of ``spec`` (built once per spec
    under ``out`` for each spec and card), its val split a few images of ``sets``."""
    root = out / f"yolo-{spec.kind}-{zlib.crc32(f'{spec.path}|{card.path}'.encode()):08x}"
    yaml_path = root / "data.yaml"
    if yaml_path.is_file():
        return yaml_path
    shutil.rmtree(root, ignore_errors=True)  # an earlier, interrupted build
    train = bank_images(card, cache) if spec.kind == "synth" else read_images(spec, class_map)
    print(f"YOLO-seg folder for the peer: {write_split(root, 'train', train)} training images in {root}")
    val = [im for s in sets for im in s.images]
    write_split(root, "val", (val[i] for i in evenly_spaced(len(val), YOLO_VAL_IMAGES)))
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(CLASSES))
    yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml_path
