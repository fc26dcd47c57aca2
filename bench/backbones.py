"""Which backbone for the fast model: network-only ONNX Runtime latency of each candidate
trunk (cut at stride 32) on this CPU at the model's input size, side by side.

    uv run python bench/backbones.py --width 640 --height 320 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from perception.nets.backbone import BACKBONES, Backbone
from perception.segmentation.runtime import open_session


def time_onnx(path: Path, shape: tuple[int, ...], threads: int, runs: int) -> tuple[float, float]:
    """Median and p95 latency in ms of one ONNX Runtime CPU session on random input."""
    sess = open_session(path, threads, ["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 95))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--only", nargs="*", default=list(BACKBONES))
    a = p.parse_args()
    torch.set_num_threads(1)
    shape = (1, 3, a.height, a.width)
    print(f"backbone trunk latency, ONNX Runtime CPU, {a.threads} threads, input {a.width}x{a.height}")
    print(f"{'backbone':22s} {'params_M':>8s} {'median_ms':>9s} {'p95_ms':>7s}  channels")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.only:
            model = Backbone(name).eval()
            path = Path(tmp) / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.zeros(shape),), str(path), opset_version=17, dynamo=False)
            med, p95 = time_onnx(path, shape, a.threads, a.runs)
            n = sum(p.numel() for p in model.parameters()) / 1e6
            print(f"{name:22s} {n:8.2f} {med:9.1f} {p95:7.1f}  {model.out_channels}", flush=True)


if __name__ == "__main__":
    main()
