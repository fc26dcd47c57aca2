"""Training frames rendered once, kept, and sampled at random with scale augmentation.

Streaming frames straight from the simulator (:class:`~perception.train.synth_source.SynthSource`)
has two costs on a small CPU: every training image is rendered on the core that trains, and
a batch is a run of consecutive frames of one drive (one scenario, one time of day, nearly
the same objects), so its gradient is that of one scene. A :class:`FrameBank` renders
``drives`` drives once (scenarios cycled; ``frames_per_drive`` frames each, ``stride``
simulator frames apart so they differ) and caches them on disk; :class:`BankSource` then
draws every sample from the whole bank, so each batch mixes scenarios and times of day.

Each sample is augmented (the pure function of ``(seed, index)`` that resuming needs):
random scale ``s`` (log-uniform in ``[scale_min, scale_max]``, relative to the letterbox
that the preprocess node applies) with a random crop or pad, so the many small, distant
objects of road scenes are also seen large; horizontal flip; brightness, contrast and gamma
jitter. With ``s = 1``, no flip and no jitter the sample is the letterboxed frame the node
would see (up to the cache's JPEG coding).

Cache: ``<cache_dir>/<key>/drive-<seed>.npz``, one per drive (JPEG images, PNG instance-id
maps, a label table); the key hashes everything that determines the frames, so a changed
generator or setting renders anew and an interrupted build continues.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from perception.synth import DriveSimulator, SynthConfig, time_of_day
from perception.synth.config import GENERATOR_VERSION
from perception.train.augment import NO_AUGMENT, Augment, augment_image
from perception.train.data import Sample, to_sample

log = logging.getLogger(__name__)

SCENARIOS = ("urban", "highway", "crowd")
#: training drive seeds are ``seed * DRIVE_SEED_STRIDE + drive``; held-out drives use 9000+
DRIVE_SEED_STRIDE = 100_003


@dataclass(frozen=True)
class BankConfig:
    """What the bank holds: ``drives`` drives of seed ``seed * 100003 + d`` (``d`` from 0),
    scenario ``SCENARIOS[d % 3]``, ``frames_per_drive`` frames taken every ``stride``
    simulator frames after ``warmup`` frames, at the synthetic camera size ``camera``."""

    seed: int = 0
    drives: int = 300
    frames_per_drive: int = 6
    stride: int = 8
    warmup: int = 2
    camera: tuple[int, int] = (640, 360)
    jpeg_quality: int = 95

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "generator": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def drive_seed(self, drive: int) -> int:
        return self.seed * DRIVE_SEED_STRIDE + drive


def render_drive(cfg: BankConfig, drive: int) -> dict[str, np.ndarray]:
    """The arrays of one cached drive: ``jpeg``/``jpeg_len`` (images), ``png``/``png_len``
    (uint16 instance-id maps) and ``labels`` ``(L, 4)`` int32 rows of ``frame, instance id,
    class id, ignore``."""
    sim = DriveSimulator(
        SynthConfig(
            width=cfg.camera[0],
            height=cfg.camera[1],
            frames=0,
            seed=cfg.drive_seed(drive),
            scenario=SCENARIOS[drive % len(SCENARIOS)],
        )
    )
    jpegs, pngs, rows = [], [], []
    for _ in range(cfg.warmup):
        sim.advance()
    for k in range(cfg.frames_per_drive):
        f = sim.next()
        for _ in range(cfg.stride - 1):
            sim.advance()
        ok1, jpg = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        ok2, png = cv2.imencode(".png", f.ids.astype(np.uint16))
        if not (ok1 and ok2):
            raise RuntimeError(f"cannot encode frame {k} of bank drive {drive}")
        jpegs.append(jpg.tobytes())
        pngs.append(png.tobytes())
        rows += [(k, lb.instance_id, lb.class_id, int(lb.ignore)) for lb in f.labels]
    return {
        "jpeg": np.frombuffer(b"".join(jpegs), np.uint8),
        "jpeg_len": np.array([len(b) for b in jpegs]),
        "png": np.frombuffer(b"".join(pngs), np.uint8),
        "png_len": np.array([len(b) for b in pngs]),
        "labels": np.array(rows, np.int32).reshape(-1, 4),
    }


def _split(blob: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    ends = np.cumsum(lengths)
    return [blob[e - n : e].tobytes() for e, n in zip(ends, lengths, strict=True)]


class FrameBank:
    """The frames of :class:`BankConfig`, rendered into ``cache_dir`` on first use (kept in
    memory as encoded bytes: about 70 kB a frame). ``len(bank)`` frames; :meth:`frame`
    decodes one to ``(image BGR (H, W, 3) uint8, ids (H, W) int32, labels (L, 3) int32 rows
    of instance id, class id, ignore)``."""

    def __init__(self, cfg: BankConfig, cache_dir: str | Path) -> None:
        if cfg.drives < 1 or cfg.frames_per_drive < 1 or cfg.stride < 1:
            raise ValueError("bank drives, frames_per_drive and stride must be >= 1")
        self.cfg = cfg
        self.dir = Path(cache_dir) / cfg.key()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        self._images: list[bytes] = []
        self._ids: list[bytes] = []
        self._labels: list[np.ndarray] = []
        #: time of day of each frame's drive
        self.times: list[str] = []
        built = 0
        for d in range(cfg.drives):
            path = self.dir / f"drive-{cfg.drive_seed(d)}.npz"
            if not path.is_file():
                arrays = render_drive(cfg, d)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # two runs may build one bank at once
                np.savez(tmp, **arrays)
                tmp.replace(path)
                built += 1
            with np.load(path, allow_pickle=False) as z:
                jpegs, pngs, labels = _split(z["jpeg"], z["jpeg_len"]), _split(z["png"], z["png_len"]), z["labels"]
            self._images += jpegs
            self._ids += pngs
            self._labels += [labels[labels[:, 0] == k, 1:] for k in range(len(jpegs))]
            self.times += [time_of_day(cfg.drive_seed(d))] * len(jpegs)
        if built:
            log.info("frame bank %s: rendered %d of %d drives", self.dir, built, cfg.drives)

    def __len__(self) -> int:
        return len(self._images)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = cv2.imdecode(np.frombuffer(self._images[i], np.uint8), cv2.IMREAD_COLOR)
        ids = cv2.imdecode(np.frombuffer(self._ids[i], np.uint8), cv2.IMREAD_UNCHANGED).astype(np.int32)
        return image, ids, self._labels[i]


class BankSource:
    """A :class:`~perception.train.data.DataSource` over a :class:`FrameBank`: sample
    ``index`` is a random frame of the bank under a random augmentation, both drawn from
    ``(seed, index)``, at the model input ``width x height``; with ``shuffle=False`` it is
    frame ``index`` (held-out sets: every frame once)."""

    def __init__(
        self,
        bank: FrameBank,
        width: int,
        height: int,
        seed: int,
        augment: Augment = NO_AUGMENT,
        pad_value: int = 114,
        shuffle: bool = True,
    ) -> None:
        augment.validate()
        self.bank, self.width, self.height, self.seed, self.augment = bank, width, height, seed, augment
        self.pad_value, self.shuffle = pad_value, shuffle
        w = np.array([augment.night_weight if t == "night" else 1.0 for t in bank.times])
        self._cdf = np.cumsum(w / w.sum())

    def _frame_index(self, rng: np.random.Generator, index: int) -> int:
        if not self.shuffle:
            return index % len(self.bank)
        return min(int(np.searchsorted(self._cdf, rng.random(), side="right")), len(self.bank) - 1)

    def frame_index(self, index: int) -> int:
        """The bank frame that sample ``index`` is made from."""
        return self._frame_index(np.random.default_rng((self.seed, index)), index)

    def sample(self, index: int) -> Sample:
        """Sample ``index``: a random frame (``shuffle``, night frames weighted by
        ``night_weight``) or frame ``index % len(bank)``, augmented."""
        rng = np.random.default_rng((self.seed, index))
        image, ids, labels = self.bank.frame(self._frame_index(rng, index))
        out, (warped_ids,) = augment_image(image, [ids], (self.width, self.height), self.augment, rng, self.pad_value)
        keep = [(int(i), int(c)) for i, c, ignore in labels if not ignore]
        masks = [warped_ids == i for i, _ in keep]
        return to_sample(cv2.cvtColor(out, cv2.COLOR_BGR2RGB), masks, [c for _, c in keep])
