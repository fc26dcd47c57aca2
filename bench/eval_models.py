"""COCO mask AP of several model cards' ONNX models on the same held-out frames, side by
side, with each card's recorded figure and the difference to the first card.

    uv run python bench/eval_models.py --cards models/yolact_fast.toml models/maskrcnn_accurate.toml

Every model runs in the torch-free runtime (``load_segmenter``: ONNX Runtime, masks in
camera pixels, RLE) on samples ``0..images-1`` of the first card's ``[data]`` source with
its ``eval_seed`` (a seed training never uses), at the first card's input size, and is
scored with pycocotools. The accurate model is meant to score at least 5 points of mask
AP above the fast one here. Needs the train extra only to generate the samples.
"""

from __future__ import annotations

import argparse

import numpy as np

from perception.client import decode_mask
from perception.config import build_config
from perception.segmentation.card import load_card
from perception.segmentation.runtime import Segmenter, load_segmenter
from perception.train.data import DataConfig, make_source
from perception.train.evaluate import evaluate_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cards", nargs="+", default=["models/yolact_fast.toml", "models/maskrcnn_accurate.toml"])
    p.add_argument("--images", type=int, default=None, help="default: the first card's [data] eval_images")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    first = load_card(a.cards[0])
    data = build_config(DataConfig, first.data, first.where("data"))
    source = make_source(data, first.input_width, first.input_height, data.eval_seed, first.classes)
    samples = []
    for i in range(a.images or data.eval_images):
        image, target = source.sample(i)
        bgr = np.ascontiguousarray((image.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8))
        samples.append((bgr, target["labels"].tolist(), list(target["masks"].numpy().astype(bool))))

    def scorer(seg: Segmenter):  # type: ignore[no-untyped-def]
        def predict(bgr: np.ndarray) -> tuple[list[int], list[float], list[np.ndarray]]:
            det = seg.predict(bgr)
            return ([i.class_id for i in det.instances], [i.score for i in det.instances],
                    [decode_mask(i.mask) for i in det.instances])  # type: ignore[arg-type]
        return predict

    print(f"{len(samples)} held-out images ({data.source}, seed {data.eval_seed}, {first.input_width}x{first.input_height})")
    print(f"{'model':22s} {'family':9s} {'mask AP':>8s} {'AP50':>7s} {'AP75':>7s} {'card AP':>8s} {'vs first':>9s}")
    base = None
    for path in a.cards:
        card = load_card(path)
        r = evaluate_samples(scorer(load_segmenter(path, a.threads)), samples, first.classes)
        ap = 100 * float(r["mask_ap"])  # type: ignore[arg-type]
        base = ap if base is None else base
        recorded = card.accuracy.get("mask_ap")
        shown = f"{100 * recorded:8.1f}" if isinstance(recorded, float) else f"{'-':>8s}"
        print(f"{card.name:22s} {card.family:9s} {ap:8.1f} {100 * r['mask_ap50']:7.1f} {100 * r['mask_ap75']:7.1f} "  # type: ignore[operator]
              f"{shown} {ap - base:+9.1f}")


if __name__ == "__main__":
    main()
