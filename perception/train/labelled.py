"""Labelled images from files: COCO instances JSON, YOLO-seg folders and recorded drives.

The one reader of users' data for training (NumPy, OpenCV, pycocotools and Pillow; no
torch). Each reader checks every entry and returns the usable images as
:class:`LabelledImage` records: where the pixels are, their size, and the objects with a
class of :data:`perception.bus.classes.CLASSES` (mapped by a :class:`ClassMap`) and their mask
in the file's own encoding, decoded only when a sample is drawn. A bad entry (an image file
that is missing, unreadable or of another size than the labels say, a polygon with fewer
than three points, a mask of the wrong size, a class id out of range) is skipped with its
image and counted in :class:`DataIssues`, the first few logged with file and entry; a file
that is not of its format at all, or a dataset without one usable image, raises
:class:`~perception.train.data.DataError` naming the file.

The COCO reader is :func:`perception.train.coco.read_coco`;
:class:`perception.train.sources.FileSource` is the training source over the records.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from perception.bus.classes import CLASSES, COCO80_NAMES
from perception.train.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPG", ".JPEG", ".PNG")
_READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # labels are on the stored pixels, as in COCO


class BadEntry(ValueError):
    """One entry of a dataset that cannot be used (caught, counted and skipped)."""


@dataclass
class DataIssues:
    """Entries skipped while reading one dataset: counted by problem, the first
    ``log_first`` logged with their file and entry."""

    source: str
    log_first: int = 5
    skipped: Counter[str] = field(default_factory=Counter)
    dropped_classes: Counter[str] = field(default_factory=Counter)
    first: str = ""  # the first entry skipped and why, for the error of a set with no usable image

    def skip(self, where: str, problem: str) -> None:
        self.first = self.first or f"{where}: {problem}"
        if sum(self.skipped.values()) < self.log_first:
            log.warning("%s: %s; skipped", where, problem)
        self.skipped[problem.split(":")[0]] += 1

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        if not self.skipped:
            return "no entries skipped"
        return f"{self.total} entries skipped: " + ", ".join(f"{k} ({n})" for k, n in self.skipped.most_common())

    def report(self, images: int) -> None:
        """Log once what reading this dataset kept, skipped and dropped."""
        dropped = ", ".join(f"{k} ({n})" for k, n in self.dropped_classes.most_common())
        log.info(
            "%s: %d images; %s%s",
            self.source,
            images,
            self.summary(),
            f"; classes not in the card's class map, dropped: {dropped}" if dropped else "",
        )


@dataclass(frozen=True)
class ClassMap:
    """A dataset's classes to ours: ``table`` maps a dataset class name (or its id, as a
    string) to one of :data:`CLASSES`, or to ``""`` to drop it; a name that is one of ours
    maps to itself unless the table says otherwise; anything else is dropped (and reported)."""

    table: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.table.items():
            if value and value not in CLASSES:
                raise DataError(
                    f'[data.classes] {key!r} = {value!r}: expected one of {", ".join(CLASSES)} or "" (drop)'
                )

    def lookup(self, name: str, ident: int | None = None) -> int | None:
        """Our class id of dataset class ``name`` (id ``ident``), or None to drop it."""
        for key in ((str(ident),) if ident is not None else ()) + (name,):
            if key in self.table:
                return CLASSES.index(self.table[key]) if self.table[key] else None
        return CLASSES.index(name) if name in CLASSES else None


@dataclass(frozen=True)
class LabelledObject:
    """One labelled object: ``class_id`` into :data:`CLASSES`; ``crowd`` objects (COCO
    ``iscrowd``, drive ``ignore``) are not trained on. ``encoding``: ``"polygons"`` (COCO
    pixel polygons), ``"rle"`` (a COCO RLE dict) or ``"normalised"`` (a YOLO polygon,
    coordinates in ``[0, 1]``)."""

    class_id: int
    encoding: str
    data: object
    crowd: bool = False

    def mask(self, height: int, width: int) -> np.ndarray:
        """The ``(height, width)`` uint8 0/1 mask."""
        if self.encoding == "normalised":
            m = np.zeros((height, width), np.uint8)
            pts = np.asarray(self.data, np.float64).reshape(-1, 2) * (width, height)
            cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
            return m
        if self.encoding == "polygons":
            rle = mask_utils.merge(mask_utils.frPyObjects(self.data, height, width))
        else:
            rle = self.data
            if isinstance(rle["counts"], list):  # type: ignore[index]
                rle = mask_utils.frPyObjects(rle, height, width)
        return mask_utils.decode(rle).astype(np.uint8)


@dataclass(frozen=True)
class LabelledImage:
    """An image and its objects: pixels in the file ``path`` or the encoded ``data`` (a
    drive's JPEG/PNG frame); ``where`` names it in messages and keys the split."""

    where: str
    width: int
    height: int
    objects: tuple[LabelledObject, ...]
    path: Path | None = None
    data: bytes | None = None

    def load(self) -> np.ndarray:
        """The ``(height, width, 3)`` uint8 BGR image; :class:`DataError` naming it when it
        no longer decodes to the size its labels were checked against."""
        image = (
            cv2.imread(str(self.path), _READ_FLAGS)
            if self.path is not None
            else cv2.imdecode(np.frombuffer(self.data or b"", np.uint8), _READ_FLAGS)
        )
        if image is None or image.shape[:2] != (self.height, self.width):
            raise DataError(f"{self.where}: does not decode to a {self.width}x{self.height} image any more")
        return image


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header; :class:`BadEntry` when it is
    missing or not an image."""
    if not path.is_file():
        raise BadEntry(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise BadEntry(f"not a readable image: {path}: {e}") from None


def no_images(source: str, entries: int, issues: DataIssues) -> DataError:
    """The error of a dataset without one usable labelled image (names the first entry skipped)."""
    return DataError(
        f"{source}: empty dataset: no usable labelled image among {entries} entries ({issues.summary()})"
        + (f"; the first: {issues.first}" if issues.first else "")
    )


def yolo_names(root: Path) -> tuple[str, ...]:
    """Class names of a YOLO-seg folder: the ``names`` of a ``*.yaml`` in it (a list or an
    ``{id: name}`` map), else COCO's 80 (Ultralytics' convention for COCO subsets)."""
    for file in sorted(root.glob("*.yaml")):
        try:
            doc = yaml.safe_load(file.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise DataError(f"{file}: not a YAML file: {e}") from None
        names = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(names, dict) and names and all(isinstance(k, int) and 0 <= k < 10_000 for k in names):
            return tuple(str(names.get(i, "")) for i in range(max(names) + 1))
        if isinstance(names, list):
            return tuple(str(n) for n in names)
    return COCO80_NAMES


def _yolo_row(row: list[str], names: Sequence[str]) -> tuple[int, str, list[float]]:
    try:
        cls = int(row[0])
    except ValueError:
        raise BadEntry(f"class id {row[0]!r} is not an integer") from None
    if not 0 <= cls < len(names):
        raise BadEntry(f"class id out of range: {cls}, the dataset has {len(names)} classes (0..{len(names) - 1})")
    try:
        coords = [float(v) for v in row[1:]]
    except ValueError:
        raise BadEntry("coordinates must be numbers") from None
    if len(coords) == 4:
        raise BadEntry("a box (x y w h), not a polygon: detection labels have no masks")
    if len(coords) < 6 or len(coords) % 2:
        raise BadEntry(f"polygon with fewer than three points: {len(coords)} coordinates")
    if not all(math.isfinite(v) and -0.01 <= v <= 1.01 for v in coords):
        raise BadEntry("polygon coordinates must be normalised to 0..1")
    return cls, names[cls], coords


def read_yolo_seg(root: str | Path, classes: ClassMap = ClassMap(), keep_empty: bool = False) -> list[LabelledImage]:
    """The images of a YOLO-seg folder (``images/`` and ``labels/`` with the same sub-paths,
    one ``class x1 y1 x2 y2 ...`` row per object, coordinates normalised), classes named by
    :func:`yolo_names` and mapped through ``classes``."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise DataError(f"{root}: not a YOLO-seg folder (expected images/ and labels/ in it)")
    names = yolo_names(root)
    issues = DataIssues(f"yolo-seg:{root}")
    labels = sorted((root / "labels").rglob("*.txt"))
    out = []
    for label in labels:
        rel = label.relative_to(root / "labels").with_suffix("")
        try:
            image = next((p for s in IMAGE_SUFFIXES if (p := root / "images" / rel.with_suffix(s)).is_file()), None)
            if image is None:
                raise BadEntry(f"image file not found: no image for it under {root / 'images'}")
            w, h = image_size(image)
            lines = label.read_text(errors="replace").splitlines()
        except BadEntry as e:
            issues.skip(str(label), str(e))
            continue
        objs, bad = [], False
        for n, line in enumerate(lines, 1):
            if not line.split():
                continue
            try:
                cls, name, coords = _yolo_row(line.split(), names)
            except BadEntry as e:
                issues.skip(f"{label}:{n}", f"{e}; its image is left out")
                bad = True
                continue
            ours = classes.lookup(name, cls)
            if ours is None:
                issues.dropped_classes[name] += 1
            else:
                objs.append(LabelledObject(ours, "normalised", coords))
        if not bad and (objs or keep_empty):
            out.append(LabelledImage(str(label), w, h, tuple(objs), path=image))
    if not out:
        raise no_images(f"yolo-seg:{root}", len(labels), issues)
    issues.report(len(out))
    return out


def read_drive(path: str | Path) -> list[LabelledImage]:
    """The frames of a recorded drive that carry ground truth (``perception synth``,
    ``perception import-frames --masks``); ``ignore`` instances become crowd objects."""
    from perception.drives.drive_file import DriveReader

    reader = DriveReader(path)
    gts = reader.ground_truth()
    if not gts:
        raise DataError(
            f"{path}: the drive has no ground truth to train on (make one with perception synth "
            f"or perception import-frames --masks)"
        )
    issues = DataIssues(f"drive:{path}")
    out = []
    for rec in reader.records():
        gt = gts.get(rec.source.frame_seq)
        if gt is None:
            continue
        where = f"{path} frame {rec.source.frame_seq}"
        try:
            if (gt.image_width, gt.image_height) != (rec.width, rec.height):
                raise BadEntry(
                    f"mask of the wrong size: ground truth is {gt.image_width}x{gt.image_height}, "
                    f"the frame {rec.width}x{rec.height}"
                )
            objs = []
            for inst in gt.instances:
                if not 0 <= inst.class_id < len(CLASSES):
                    raise BadEntry(f"class id out of range: {inst.class_id}, expected 0..{len(CLASSES) - 1}")
                # the RLE itself was checked when the drive was decoded (schema.Rle); its size is left
                if tuple(inst.mask.size) != (rec.height, rec.width):
                    raise BadEntry(
                        f"mask of the wrong size: {inst.mask.size[0]}x{inst.mask.size[1]} (HxW), the "
                        f"frame {rec.height}x{rec.width}"
                    )
                objs.append(LabelledObject(inst.class_id, "rle", inst.mask.to_coco(), inst.ignore))
        except BadEntry as e:
            issues.skip(where, str(e))
            continue
        out.append(LabelledImage(where, rec.width, rec.height, tuple(objs), data=rec.data))
    if not out:
        raise no_images(f"drive:{path}", len(gts), issues)
    issues.report(len(out))
    return out
