"""COCO mask AP of a model card's ONNX model on its held-out data, beside the card's figures.

    uv run python bench/eval_yolact.py --card models/yolact_fast.toml [--images 200]

Runs the torch-free runtime (``YolactSegmenter``: ONNX Runtime, Fast NMS, masks in camera
pixels, RLE) on samples ``0..images-1`` of the card's ``[data]`` source with ``eval_seed``
(a seed training never uses) and scores them with pycocotools. Stands in for ``perception
eval`` until that command exists. Needs the train extra only to generate the samples.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from perception.client import decode_mask
from perception.config import build_config
from perception.segmentation.card import load_card
from perception.segmentation.runtime import YolactSegmenter
from perception.train.data import DataConfig, make_source
from perception.train.evaluate import evaluate_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", default="models/yolact_fast.toml")
    p.add_argument("--images", type=int, default=None, help="default: [data] eval_images")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    card = load_card(a.card)
    data = build_config(DataConfig, card.data, card.where("data"))
    seg = YolactSegmenter(card, threads=a.threads)
    source = make_source(data, card.input_width, card.input_height, data.eval_seed, card.classes)
    samples = []
    for i in range(a.images or data.eval_images):
        image, target = source.sample(i)
        bgr = np.ascontiguousarray((image.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8))
        samples.append((bgr, target["labels"].tolist(), list(target["masks"].numpy().astype(bool))))

    def predict(bgr: np.ndarray) -> tuple[list[int], list[float], list[np.ndarray]]:
        det = seg.predict(bgr)
        return ([i.class_id for i in det.instances], [i.score for i in det.instances],
                [decode_mask(i.mask) for i in det.instances])  # type: ignore[arg-type]

    r = evaluate_samples(predict, samples, card.classes)
    print(f"{card.name}: {len(samples)} held-out images ({data.source}, seed {data.eval_seed})")
    print(f"{'':12s} {'measured':>9s} {'card':>9s}")
    for key in ("mask_ap", "mask_ap50", "mask_ap75"):
        print(f"{key:12s} {r[key]:9.3f} {card.accuracy.get(key, float('nan')):9.3f}")
    card_per_class = card.accuracy.get("per_class", {})
    for name, ap in r["per_class"].items():  # type: ignore[union-attr]
        shown = "  n/a" if math.isnan(ap) else f"{ap:9.3f}"
        print(f"  AP {name:10s} {shown:>7s} {card_per_class.get(name, float('nan')):9.3f}")


if __name__ == "__main__":
    main()
