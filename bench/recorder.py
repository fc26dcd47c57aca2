"""Recorder cost per frame on one core, beside JPEG-encoding the same frame alone (the
baseline: the part of recording no recorder can avoid), and recovery speed of a file cut
short beside reading the complete file.

    uv run python bench/recorder.py [--frames 150] [--width 640 --height 480]

Prints medians per frame for each chunk compression (frame + detections + tracks + gt per
camera frame, through :class:`RecorderLogic.step`), the ratio to the JPEG baseline, then the
time to recover a file cut at 90 % beside the time to read every message of the complete
file with the ``mcap`` reader. Chunks are compressed on the one frame in ~20 that completes a
chunk, so the mean shows compression cost where the median does not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from mcap.reader import make_reader

from perception.bus.masks import encode_mask
from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Detections, Envelope, GroundTruth, GtInstance, Instance, Source, Track, Tracks
from perception.drives.drive_file import encode_image
from perception.drives.recorder import RecorderConfig, RecorderLogic
from perception.drives.recovery import recover_drive
from perception.system.inprocess import InProcessRunner, stage


def _scene(i: int, w: int, h: int) -> np.ndarray:
    """A smooth gradient with a moving disc and some noise (JPEG-compressible like a camera)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy + i * 8) % 256)], axis=2).astype(np.uint8)
    cv2.circle(img, (40 + (i * 7) % (w - 80), h // 2), h // 8, (30, 30, 220), -1)
    noise = np.random.default_rng(i).integers(0, 12, img.shape, dtype=np.uint8)
    return cv2.add(img, noise)


def _messages(i: int, img: np.ndarray) -> list[Received]:
    h, w = img.shape[:2]
    src = Source("cam0", i, 10**9 + i * 33_000_000)
    mask = np.zeros((h, w), bool)
    mask[h // 3 : h // 2, w // 4 : w // 2] = True
    rle = encode_mask(mask)
    det = Detections("fast", w, h, tuple(Instance(2, 0.9, (1.0, 2.0, 90.0, 80.0), rle) for _ in range(5)))
    trk = Tracks(w, h, tuple(Track(k, "confirmed", 2, 0.9, (1.0, 2.0, 90.0, 80.0), rle) for k in range(5)))
    gt = GroundTruth(w, h, tuple(GtInstance(k, 2, (1.0, 2.0, 90.0, 80.0), rle) for k in range(5)))
    return [
        Received(Envelope("frames", i, src.capture_ns, src, header_for(img)), img),
        Received(Envelope("detections", i, src.capture_ns, src, det)),
        Received(Envelope("tracks", i, src.capture_ns, src, trk)),
        Received(Envelope("gt", i, src.capture_ns, src, gt)),
    ]


def _recorder_ms(logic: RecorderLogic, msgs: list[list[Received]]) -> list[float]:
    """Per camera frame, the recorder's steps on its messages (ms, together), stepped by the
    in-process runner; the recorder is closed after the last."""
    with InProcessRunner([stage("recorder", logic)], fed=logic.inputs) as runner:
        steps = runner.times["recorder"].step_ms
        per = []
        for group in msgs:
            before = len(steps)
            for m in group:
                runner.feed(m)
            per.append(sum(steps[before:]))
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    frames = [_scene(i, args.width, args.height) for i in range(args.frames)]
    msgs = [_messages(i, img) for i, img in enumerate(frames)]
    jpeg = []
    for img in frames:
        t0 = time.perf_counter()
        encode_image(img, "jpeg", 90)
        jpeg.append((time.perf_counter() - t0) * 1e3)
    base = statistics.median(jpeg)
    print(f"one core, {args.frames} frames {args.width}x{args.height} + detections, tracks, gt (5 masks each)")
    print(f"{'what':<22}{'median ms':>10}{'mean ms':>9}{'fps':>7}{'x jpeg':>8}{'MB/frame':>10}")
    print(f"{'jpeg q90 alone':<22}{base:>10.2f}{statistics.mean(jpeg):>9.2f}{1e3 / base:>7.0f}{1.0:>8.2f}")
    with tempfile.TemporaryDirectory() as d:
        for comp in ("zstd", "lz4", "none"):
            logic = RecorderLogic(RecorderConfig(out=str(Path(d) / f"{comp}.mcap"), compression=comp))  # type: ignore[arg-type]
            per = _recorder_ms(logic, msgs)
            med = statistics.median(per)
            mb = Path(logic.files[0]).stat().st_size / 1e6 / args.frames
            print(
                f"{'recorder ' + comp:<22}{med:>10.2f}{statistics.mean(per):>9.2f}{1e3 / med:>7.0f}"
                f"{med / base:>8.2f}{mb:>10.3f}"
            )
        full = Path(d) / "zstd.mcap"
        data = full.read_bytes()
        cut = Path(d) / "cut.mcap"
        cut.write_bytes(data[: int(len(data) * 0.9)])
        t0 = time.perf_counter()
        with open(full, "rb") as f:
            n_read = sum(1 for _ in make_reader(f).iter_messages())
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = recover_drive(cut)
        t_rec = time.perf_counter() - t0
        mb = len(data) / 1e6
        print(f"read complete file: {n_read} messages, {t_read * 1e3:.0f} ms ({mb / t_read:.0f} MB/s)")
        print(
            f"recover 90% cut:    {sum(rec.counts.values())} messages, {t_rec * 1e3:.0f} ms "
            f"({mb * 0.9 / t_rec:.0f} MB/s), {t_rec / t_read:.2f}x the read"
        )


if __name__ == "__main__":
    main()
