"""Mask AP with faster-coco-eval beside pycocotools (the baseline) on the same run: are the
figures identical, and how much faster is it?

    uv run python bench/coco_eval.py [--frames 150] [--repeat 3]

Ground truth is a synthetic drive (640x360, the default drive size); detections are made
from it (half the masks shifted by 1-3 px, 10 % missed, random scores, 20 % false positives
taken from other frames). Prints the largest difference of any COCO figure (the 12 summary
stats and every entry of ``eval["precision"]``) and the median time of evaluate +
accumulate + summarize for each library (COCO index and result loading included), with the
ratio. ``perception.evaluation.masks`` uses faster-coco-eval because of these figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import statistics
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from perception.bus.masks import decode_mask, encode_mask
from perception.bus.schema import Detections, GroundTruth, Instance
from perception.evaluation.gt_export import coco_dataset
from perception.evaluation.masks import coco_results, run_cocoeval
from perception.synth import SynthConfig
from perception.synth.generate import generate


def make_run(frames: int, seed: int) -> tuple[dict[int, GroundTruth], dict[int, Detections]]:
    cfg = SynthConfig(frames=frames, seed=seed, width=640, height=360)
    gts = {seq: gt for seq, (_, gt) in enumerate(generate(cfg))}
    rng = np.random.default_rng(seed)
    pool = [i for gt in gts.values() for i in gt.instances if not i.ignore]
    dets = {}
    for seq, gt in gts.items():
        out = []
        for g in gt.instances:
            if g.ignore or rng.random() < 0.1:
                continue
            mask = g.mask
            if rng.random() < 0.5:
                m = decode_mask(g.mask)
                mask = encode_mask(np.roll(m, int(rng.integers(1, 4)), axis=1))
            out.append(Instance(g.class_id, float(rng.uniform(0.3, 1.0)), g.box_xyxy, mask))
        for _ in range(int(0.2 * len(out))):
            fp = pool[int(rng.integers(len(pool)))]
            out.append(Instance(int(rng.integers(6)), float(rng.uniform(0.3, 0.8)), fp.box_xyxy, fp.mask))
        dets[seq] = Detections("bench", 640, 360, tuple(out))
    return gts, dets


def baseline(dataset: dict, results: list[dict]) -> COCOeval:
    """pycocotools, as ``COCOeval``'s documentation runs it."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def timed(fn, dataset: dict, results: list[dict], repeat: int):  # type: ignore[no-untyped-def]
    """Median seconds of ``fn(dataset, results)`` on fresh copies (both libraries add fields
    to the dicts they are given; copying is not timed)."""
    times, ev = [], None
    for _ in range(repeat):
        d, r = copy.deepcopy(dataset), copy.deepcopy(results)
        t0 = time.perf_counter()
        ev = fn(d, r)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    gts, dets = make_run(args.frames, args.seed)
    dataset = coco_dataset(sorted(gts.items()))
    results = coco_results(dets)
    print(
        f"{len(gts)} frames 640x360, {len(dataset['annotations'])} gt annotations, {len(results)} detections; "
        f"one core, median of {args.repeat}"
    )
    t_base, ev_base = timed(baseline, dataset, results, args.repeat)
    t_fast, ev_fast = timed(run_cocoeval, dataset, results, args.repeat)
    print(f"pycocotools (baseline) {t_base * 1e3:8.1f} ms  AP {ev_base.stats[0]:.6f}")
    print(f"faster-coco-eval       {t_fast * 1e3:8.1f} ms  AP {ev_fast.stats[0]:.6f}  speed-up x{t_base / t_fast:.2f}")
    stats_diff = float(np.max(np.abs(np.asarray(ev_base.stats) - np.asarray(ev_fast.stats))))
    pb, pf = ev_base.eval["precision"], ev_fast.eval["precision"]
    prec_diff = float(np.max(np.abs(pb - pf))) if pb.shape == pf.shape else float("inf")
    print(
        f"largest difference: summary stats {stats_diff:.3g}, precision array {prec_diff:.3g} "
        f"(shapes {pb.shape} vs {pf.shape})"
    )


if __name__ == "__main__":
    main()
