"""Which trunk for the light Mask R-CNN: network latency in ONNX Runtime, weights size and
training-step time, per candidate backbone, all at the card's input size in one run.

    uv run python bench/maskrcnn_backbones.py --card models/maskrcnn_accurate.toml \\
        --backbones resnet18 mobilenet_v3_large --runs 20

Each candidate is the card's architecture with only ``backbone`` changed, randomly
initialised and exported with the project's exporter. Inference runs are interleaved
candidate by candidate so load from other processes hits all alike; each is timed at 0
detections (score threshold 1) and at the graph's maximum (threshold 0, every detection
through the mask head). The training step is forward + backward of a batch of
``--train-batch`` synthetic samples on one thread (torch). Needs the train extra.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from perception.nets.maskrcnn import MaskRCNNConfig, build_maskrcnn
from perception.node.config import build_config
from perception.segmentation.card import load_card
from perception.segmentation.runtime import open_session
from perception.train.data import DataConfig
from perception.train.export import export_maskrcnn_onnx
from perception.train.sources import make_source
from perception.train.steps import batch_at


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", default="models/maskrcnn_accurate.toml")
    p.add_argument("--backbones", nargs="+", default=["resnet18", "mobilenet_v3_large"])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--train-batch", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(1)
    card = load_card(a.card)
    w, h = card.input_width, card.input_height
    n_cls = len(card.classes) + 1
    rng = np.random.default_rng(0)
    blob = rng.random((1, 3, h, w), dtype=np.float32)
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name in a.backbones:
            cfg = build_config(MaskRCNNConfig, {**card.architecture, "backbone": name})
            torch.manual_seed(0)
            model = build_maskrcnn(cfg, n_cls, w, h)
            params = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
            trunk = sum(t.numel() for t in model.backbone.body.parameters())
            path = export_maskrcnn_onnx(model, Path(tmp) / f"{name}.onnx", w, h)
            sessions[name] = open_session(path, a.threads, ["CPUExecutionProvider"], name)
            # training step time: forward + backward on synthetic samples
            data = build_config(DataConfig, card.data)
            source = make_source(data, w, h, data.train_seed, card.classes)
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)
            steps = []
            for s in range(a.train_steps + 1):
                images, targets = batch_at(source, s, a.train_batch, card.class_ids)
                t0 = time.perf_counter()
                loss = sum(model(list(images), [{**t, "labels": t["labels"] + 1} for t in targets]).values())
                opt.zero_grad()
                loss.backward()  # type: ignore[union-attr]
                opt.step()
                if s:  # first step warms up
                    steps.append(time.perf_counter() - t0)
            results[name] = {
                "params_m": params / 1e6,
                "trunk_m": trunk / 1e6,
                "weights_mb": params * 4 / 2**20,
                "train_s": float(np.median(steps)),
                "empty": [],
                "full": [],
                "n": 0,
            }
        for i in range(a.runs + 2):
            for name, sess in sessions.items():
                for key, thr in (("empty", 1.0), ("full", 0.0)):
                    t0 = time.perf_counter()
                    out = sess.run(None, {"images": blob, "score_threshold": np.asarray(thr, np.float32)})
                    dt = (time.perf_counter() - t0) * 1e3
                    if i >= 2:
                        results[name][key].append(dt)  # type: ignore[union-attr]
                        if key == "full":
                            results[name]["n"] = len(out[2])
    print(
        f"\nlight Mask R-CNN at {w}x{h} (card {a.card}, random init), ONNX Runtime CPU {a.threads} threads, "
        f"{a.runs} interleaved runs; training step: batch {a.train_batch}, 1 torch thread"
    )
    print(
        f"{'backbone':22s} {'params M':>9s} {'trunk M':>8s} {'fp32 MB':>8s} {'net ms (0 det)':>15s} "
        f"{'p95':>7s} {'net ms (N det)':>15s} {'N':>4s} {'train s/step':>13s}"
    )
    for name, r in results.items():
        e, f = r["empty"], r["full"]
        print(
            f"{name:22s} {r['params_m']:9.2f} {r['trunk_m']:8.2f} {r['weights_mb']:8.1f} {np.median(e):15.1f} "
            f"{np.percentile(e, 95):7.1f} {np.median(f):15.1f} {r['n']:4d} {r['train_s']:13.2f}"
        )


if __name__ == "__main__":
    main()
