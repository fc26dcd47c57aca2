"""What undistortion costs the preprocess node: median milliseconds per frame for the
letterbox alone (baseline) and for undistort + letterbox, measured in the same run, for
the example cameras in calib/.

    uv run python bench/undistort.py [--frames 100]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2
import numpy as np

from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Envelope, Source
from perception.camera.preprocess import PreprocessConfig, PreprocessLogic
from perception.system.inprocess import InProcessRunner, stage

CALIB = Path(__file__).resolve().parents[1] / "calib"


def median_ms(logic: PreprocessLogic, msg: Received, frames: int) -> float:
    """The median time of the preprocess step on ``msg``, stepped ``frames`` times by the in-process runner."""
    runner = InProcessRunner([stage("preprocess", logic)], fed=("frames",))
    for _ in range(frames):
        runner.feed(msg)
    return statistics.median(runner.times["preprocess"].step_ms)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    print(f"{'calibration':<22} {'frame':>9} {'letterbox ms':>13} {'+undistort ms':>14} {'ratio':>6}")
    for name in ("example_pinhole.yaml", "example_fisheye.yaml"):
        path = CALIB / name
        size = (480, 640) if "pinhole" in name else (720, 1280)
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        msg = Received(Envelope("frames", 0, 0, Source("cam0", 0, 0), header_for(image)), image)
        base = median_ms(PreprocessLogic(PreprocessConfig()), msg, args.frames)
        with_calib = median_ms(PreprocessLogic(PreprocessConfig(calib=str(path))), msg, args.frames)
        print(f"{name:<22} {size[1]:>4}x{size[0]:<4} {base:>13.2f} {with_calib:>14.2f} {with_calib / base:>6.2f}")


if __name__ == "__main__":
    main()
