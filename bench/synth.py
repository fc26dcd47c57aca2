"""Synthetic drive generation speed on one core, beside the cost of JPEG-encoding the same
frames (the baseline: what writing a drive costs per frame anyway).

    uv run python bench/synth.py [--frames 60] [--scenario urban]

Prints, per image size, the median time per frame of generation (render + degradations +
ground truth with RLE masks), of generation without the RLE encoding (what on-the-fly
training uses), and of JPEG encoding at quality 90, with frames/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import cv2

from perception.synth import DriveSimulator, SynthConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--scenario", default="urban")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    print(f"one core, {args.frames} frames per size, scenario {args.scenario}, seed {args.seed}")
    print(
        f"{'size':>10} {'gen+gt ms':>10} {'fps':>7} {'gen ms':>8} {'fps':>7} {'jpeg ms':>8} {'fps':>7} {'gen/jpeg':>9}"
    )
    for w, h in ((640, 360), (1280, 720)):
        sim = DriveSimulator(SynthConfig(seed=args.seed, width=w, height=h, scenario=args.scenario, frames=0))
        sim.next()  # warm caches (sky, vignette, noise bank)
        gen, gen_gt, jpeg = [], [], []
        for _ in range(args.frames):
            t0 = time.perf_counter()
            f = sim.next()
            t1 = time.perf_counter()
            f.ground_truth()
            t2 = time.perf_counter()
            cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            t3 = time.perf_counter()
            gen.append(t1 - t0)
            gen_gt.append(t2 - t0)
            jpeg.append(t3 - t2)
        g, gg, j = (statistics.median(x) * 1e3 for x in (gen, gen_gt, jpeg))
        print(f"{w}x{h:<5} {gg:10.2f} {1e3 / gg:7.1f} {g:8.2f} {1e3 / g:7.1f} {j:8.2f} {1e3 / j:7.1f} {gg / j:9.2f}")


if __name__ == "__main__":
    main()
