"""Turn a folder of frames (and optional per-frame instance masks) into a drive, so real
video goes through the same path as synthetic drives.

Masks: one PNG per frame with the same file stem, under ``masks_dir``. A grayscale mask
holds instance ids (0 = background); a mask with only 0 and 255 (DAVIS-2016 style) holds
one object, id 1. A colour mask (palette PNG read as BGR) gets one instance per colour, in
order of first appearance. All instances get class ``class_name``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from perception.bus.classes import class_id as class_index
from perception.bus.masks import encode_mask
from perception.bus.schema import GroundTruth, GtInstance, Source
from perception.camera.sources import IMAGE_SUFFIXES
from perception.drives.drive_file import DriveMeta, DriveWriter, ImageFormat

log = logging.getLogger(__name__)


class FrameImportError(ValueError):
    """A frames or masks folder that cannot be imported."""


@dataclass(frozen=True)
class ImportResult:
    frames: int
    frames_with_masks: int
    instances: int


def _instances(mask: np.ndarray, colours: dict[tuple[int, ...], int], min_size_px: int, cls: int) -> list[GtInstance]:
    if mask.ndim == 3:
        flat = mask.reshape(-1, mask.shape[2])
        uniq = [tuple(int(v) for v in c) for c in np.unique(flat, axis=0) if any(c)]
        for c in uniq:
            colours.setdefault(c, len(colours) + 1)
        labels = np.zeros(mask.shape[:2], np.int32)
        for c in uniq:
            labels[np.all(mask == np.array(c, mask.dtype), axis=2)] = colours[c]
    else:
        values = np.unique(mask)
        labels = (mask > 127).astype(np.int32) if set(values.tolist()) <= {0, 255} else mask.astype(np.int32)
    out = []
    for iid in np.unique(labels):
        if iid == 0:
            continue
        m = labels == iid
        ys, xs = np.nonzero(m)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        out.append(
            GtInstance(
                instance_id=int(iid),
                class_id=cls,
                box_xyxy=box,
                mask=encode_mask(m),
                ignore=bool(box[3] - box[1] < min_size_px),
            )
        )
    return out


def _frame_files(frames_dir: Path, masks_dir: str | Path | None) -> list[Path]:
    """The images of ``frames_dir`` in name order; :class:`FrameImportError` when it holds
    none, or it or ``masks_dir`` does not exist."""
    if not frames_dir.is_dir():
        raise FrameImportError(f"frames folder {frames_dir} does not exist")
    files = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FrameImportError(f"{frames_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise FrameImportError(f"masks folder {masks_dir} does not exist")
    return files


def _write_frame(wr: DriveWriter, path: Path, src: Source, w: int, h: int) -> None:
    """The image file ``path`` as the drive's frame ``src``: a JPEG file as it is, any other
    as PNG; :class:`FrameImportError` when it is unreadable or not ``w`` x ``h``."""
    data = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameImportError(f"{path}: not a readable image")
    if image.shape[:2] != (h, w):
        raise FrameImportError(f"{path}: size {image.shape[1]}x{image.shape[0]} differs from the first frame {w}x{h}")
    fmt: ImageFormat = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    if fmt == "jpeg":
        wr.write_encoded_frame(data, w, h, src, fmt="jpeg")
    else:
        wr.write_frame(image, src, fmt="png")


def _read_mask(frame: Path, masks_dir: Path, w: int, h: int) -> np.ndarray | None:
    """The mask of the frame file ``frame`` (the PNG of its stem under ``masks_dir``):
    instance ids, or BGR colours; None, with a warning, when there is none."""
    mpath = masks_dir / f"{frame.stem}.png"
    if not mpath.is_file():
        log.warning("%s: no mask %s; frame has no ground truth", frame.name, mpath)
        return None
    mask = cv2.imread(str(mpath), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.shape[:2] != (h, w):
        raise FrameImportError(f"{mpath}: not a {w}x{h} mask image")
    return mask[:, :, :3] if mask.ndim == 3 and mask.shape[2] == 4 else mask


def import_frames(
    frames_dir: str | Path,
    out: str | Path,
    masks_dir: str | Path | None = None,
    fps: float = 30.0,
    class_name: str = "car",
    camera_id: str = "cam0",
    min_size_px: int = 0,
) -> ImportResult:
    """Write a drive from ``frames_dir`` (images in name order). JPEG files are stored as
    they are (no re-encoding); other formats are stored as PNG."""
    frames_dir = Path(frames_dir)
    files = _frame_files(frames_dir, masks_dir)
    cls = class_index(class_name)
    first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    if first is None:
        raise FrameImportError(f"{files[0]}: not a readable image")
    h, w = first.shape[:2]
    meta = DriveMeta(
        camera_id=camera_id,
        width=w,
        height=h,
        fps=fps,
        generator="import-frames",
        notes=f"frames={frames_dir} masks={masks_dir or ''} class={class_name}",
    )
    colours: dict[tuple[int, ...], int] = {}
    with_masks = n_inst = 0
    period_ns = int(round(1e9 / fps))
    with DriveWriter(out, meta) as wr:
        for seq, path in enumerate(files):
            src = Source(camera_id=camera_id, frame_seq=seq, capture_ns=seq * period_ns)
            _write_frame(wr, path, src, w, h)
            mask = _read_mask(path, Path(masks_dir), w, h) if masks_dir is not None else None
            if mask is None:
                continue
            insts = _instances(mask, colours, min_size_px, cls)
            wr.write_gt(src, GroundTruth(image_width=w, image_height=h, instances=tuple(insts)))
            with_masks += 1
            n_inst += len(insts)
    return ImportResult(len(files), with_masks, n_inst)
