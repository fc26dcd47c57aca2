"""The reader of COCO instances JSON files: :func:`read_coco` checks every category, image
and annotation and returns the usable images as :class:`~perception.train.labelled.LabelledImage`
records (polygons and RLEs kept in the file's encoding); a bad entry is skipped with its
image and counted, as :mod:`perception.train.labelled` describes."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from perception.bus.rle_codec import validate_rle
from perception.train.errors import DataError
from perception.train.labelled import (
    BadEntry,
    ClassMap,
    DataIssues,
    LabelledImage,
    LabelledObject,
    image_size,
    no_images,
)


def _polygons(seg: object, width: int, height: int) -> list[list[float]]:
    """A ``segmentation`` polygon list, each checked to have three points or more inside the image."""
    if not isinstance(seg, list) or not seg:
        raise BadEntry("segmentation: expected a list of polygons or an RLE object")
    out = []
    for poly in seg:
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly):
            raise BadEntry("segmentation: a polygon must be a flat list of numbers")
        if len(poly) < 6 or len(poly) % 2:
            raise BadEntry(f"polygon with fewer than three points: {len(poly)} coordinates")
        xs, ys = poly[0::2], poly[1::2]
        if not all(math.isfinite(v) and -1 <= v <= width + 1 for v in xs) or not all(
            math.isfinite(v) and -1 <= v <= height + 1 for v in ys
        ):
            raise BadEntry(f"polygon points outside the {width}x{height} image")
        out.append([float(v) for v in poly])
    return out


def _rle(seg: dict, height: int, width: int) -> dict:
    """A ``segmentation`` RLE (runs or compressed ``counts``), checked to cover the image."""
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise BadEntry("segmentation: an RLE needs 'size' [height, width]")
    if tuple(size) != (height, width):
        raise BadEntry(f"mask of the wrong size: RLE is {size[0]}x{size[1]} (HxW), the image {height}x{width}")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
            raise BadEntry(f"mask of the wrong size: RLE runs must be non-negative and cover {height * width} pixels")
        return {"size": size, "counts": counts}
    if not isinstance(counts, str):
        raise BadEntry("segmentation: RLE 'counts' must be a string or a list of run lengths")
    try:
        validate_rle((height, width), counts)
    except ValueError as e:
        raise BadEntry(f"mask of the wrong size: {e}") from None
    return {"size": size, "counts": counts.encode()}


#: the default class map: categories named as ours keep their names, the others are dropped
OUR_NAMES = ClassMap()
#: a usable COCO image: ``(file, width, height)``
CocoImage = tuple[Path, int, int]


def _load_json(path: Path) -> dict:
    """The parsed COCO instances JSON at ``path``; :class:`DataError` when it is missing,
    not JSON or lacks the 'images', 'annotations' and 'categories' lists."""
    if not path.is_file():
        raise DataError(f"{path}: no such COCO instances JSON")
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as e:
        raise DataError(f"{path}: not a JSON file: {e}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(
            f"{path}: not a COCO instances JSON (expected an object with 'images', 'annotations' and "
            f"'categories' lists)"
        )
    return doc


def _categories(entries: list, path: Path, issues: DataIssues) -> dict[int, str]:
    """``{category id: name}`` of the well-formed 'categories' entries (others skipped)."""
    cats: dict[int, str] = {}
    for k, c in enumerate(entries):
        if isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str):
            cats[c["id"]] = c["name"]
        else:
            issues.skip(f"{path} categories[{k}]", "category needs an integer 'id' and a string 'name'")
    return cats


def _image(im: object, base: Path) -> CocoImage:
    """One 'images' entry, its file under ``base``; :class:`BadEntry` when the entry is
    malformed or the file missing, unreadable or of another size than the entry says."""
    if not (isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str)):
        raise BadEntry("image needs an integer 'id' and a string 'file_name'")
    file = base / im["file_name"]
    w, h = image_size(file)
    if (im.get("width"), im.get("height")) not in ((w, h), (None, None)):
        raise BadEntry(
            f"mask of the wrong size: image file is {w}x{h}, the JSON says {im.get('width')}x{im.get('height')}"
        )
    return file, w, h


def _images(entries: list, path: Path, base: Path, issues: DataIssues) -> tuple[dict[int, CocoImage], set[int]]:
    """The usable 'images' by id (the others skipped), and the ids of all that are listed,
    usable or not (a skipped image's annotations are not errors)."""
    images: dict[int, CocoImage] = {}
    listed: set[int] = set()
    for k, im in enumerate(entries):
        if isinstance(im, dict) and isinstance(im.get("id"), int):
            listed.add(im["id"])
        try:
            images[im["id"]] = _image(im, base)
        except BadEntry as e:
            issues.skip(f"{path} images[{k}]", str(e))
    return images, listed


@dataclass(frozen=True)
class _Index:
    """What the annotations are read against: the categories and usable images by id, the
    ids of all listed images (usable or not), the class map and the issues counted."""

    cats: Mapping[int, str]
    images: Mapping[int, CocoImage]
    listed: set[int]
    classes: ClassMap
    issues: DataIssues


def _object(a: object, index: _Index) -> tuple[int, LabelledObject] | None:
    """One 'annotations' entry as ``(image id, object)``; None for one of a listed image
    that was skipped, or of a class not ours (counted as dropped); :class:`BadEntry` when
    it is malformed."""
    if not isinstance(a, dict):
        raise BadEntry("annotation must be an object")
    image_id, cat = a.get("image_id"), a.get("category_id")
    if isinstance(image_id, int) and image_id in index.listed and image_id not in index.images:
        return None
    if not isinstance(image_id, int) or image_id not in index.images:
        raise BadEntry(f"image_id {image_id!r} is not in 'images'")
    if not isinstance(cat, int) or cat not in index.cats:
        raise BadEntry(f"class id out of range: category_id {cat!r} is not in 'categories'")
    ours = index.classes.lookup(index.cats[cat], cat)
    if ours is None:
        index.issues.dropped_classes[index.cats[cat]] += 1
        return None
    _, w, h = index.images[image_id]
    seg = a.get("segmentation")
    crowd = bool(a.get("iscrowd", 0))
    if isinstance(seg, dict):
        return image_id, LabelledObject(ours, "rle", _rle(seg, h, w), crowd)
    return image_id, LabelledObject(ours, "polygons", _polygons(seg, w, h), crowd)


def _objects(entries: list, path: Path, index: _Index) -> tuple[dict[int, list[LabelledObject]], set[int]]:
    """The objects of each usable image, and the ids of the images left out because one
    of their annotations is bad."""
    objects: dict[int, list[LabelledObject]] = {i: [] for i in index.images}
    bad_images: set[int] = set()
    for k, a in enumerate(entries):
        try:
            found = _object(a, index)
        except BadEntry as e:
            where = f"{path} annotations[{k}]" + (f" (id {a.get('id')})" if isinstance(a, dict) else "")
            index.issues.skip(where, f"{e}; its image is left out")
            if isinstance(a, dict) and isinstance(a.get("image_id"), int) and a["image_id"] in index.images:
                bad_images.add(a["image_id"])
            continue
        if found is not None:
            objects[found[0]].append(found[1])
    return objects, bad_images


def read_coco(
    json_path: str | Path,
    classes: ClassMap = OUR_NAMES,
    images_dir: str | Path | None = None,
    keep_empty: bool = False,
) -> list[LabelledImage]:
    """The images of a COCO instances JSON: image files at ``file_name`` relative to the
    JSON's folder (or to ``images_dir``), categories mapped by name or id through
    ``classes``. Images without an object of ours are left out unless ``keep_empty``."""
    path = Path(json_path)
    doc = _load_json(path)
    issues = DataIssues(f"coco:{path}")
    base = Path(images_dir) if images_dir is not None else path.parent
    cats = _categories(doc["categories"], path, issues)
    images, listed = _images(doc["images"], path, base, issues)
    index = _Index(cats, images, listed, classes, issues)
    objects, bad_images = _objects(doc["annotations"], path, index)
    out = [
        LabelledImage(f"{path}:{i}", w, h, tuple(objects[i]), path=file)
        for i, (file, w, h) in sorted(images.items())
        if i not in bad_images and (objects[i] or keep_empty)
    ]
    if not out:
        raise no_images(f"coco:{path}", len(doc["images"]), issues)
    issues.report(len(out))
    return out
