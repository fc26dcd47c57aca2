"""End-to-end latency of the fast model beside the network-only latency of YOLO11n-seg.

    uv sync --extra train --group bench      # ultralytics builds the baseline (bench only)
    uv run python bench/models.py --card models/yolact_fast.toml --threads 2

Both run in ONNX Runtime on this machine's CPU at the card's input size, interleaved
frame by frame so that load from other processes hits both alike. The fast model is
measured end to end (letterbox of a 1280x720 frame, network, Fast NMS, mask assembly in
camera pixels, RLE encoding) with its stage breakdown; the baseline is network-only
(``session.run``) with random weights built from Ultralytics' ``yolo11n-seg.yaml`` (no
download). When the card's ONNX file is not exported yet, a randomly initialised network
of the card's architecture is exported instead (needs the train extra); to measure post-
processing at a busy frame rather than at an empty one, Fast NMS then runs with score
threshold 0 and ``--detections`` instances are assembled.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from perception.segmentation.card import CardError, load_card, set_card_value, sha256_of
from perception.segmentation.runtime import YolactSegmenter, open_session


def fast_model(card_path: Path, tmp: Path, threads: int, detections: int) -> tuple[YolactSegmenter, str]:
    card = load_card(card_path)
    try:
        return YolactSegmenter(card, threads=threads), "bundled weights"
    except (CardError, OSError):
        pass
    import torch

    from perception.train.build import build_model
    from perception.train.export import export_onnx

    copy = tmp / card_path.name
    copy.write_text(card_path.read_text().replace(f'"{card.onnx.path.name}"', '"random.onnx"'))  # type: ignore[union-attr]
    torch.manual_seed(0)
    export_onnx(build_model(card), tmp / "random.onnx", card.input_width, card.input_height)
    set_card_value(copy, "onnx", "sha256", sha256_of(tmp / "random.onnx"))
    seg = YolactSegmenter(copy, threads=threads, score_threshold=0.0, max_detections=detections)
    return seg, f"random init, post-processing forced to {detections} instances"


def yolo_baseline(tmp: Path, width: int, height: int) -> Path | None:
    """YOLO11n-seg (random weights) exported to ONNX, or None without ultralytics."""
    try:
        import torch
        from ultralytics.nn.tasks import SegmentationModel
    except ImportError:
        return None
    model = SegmentationModel("yolo11n-seg.yaml", nc=80, verbose=False).eval().fuse(verbose=False)
    for m in model.modules():  # the export path of Ultralytics' heads: concatenated outputs
        if hasattr(m, "export"):
            m.export, m.format = True, "onnx"
    path = tmp / "yolo11n-seg.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, height, width),), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["output0", "output1"])
    return path


def stats(xs: list[float]) -> str:
    return f"median {np.median(xs):7.2f} ms   p95 {np.percentile(xs, 95):7.2f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", type=Path, default=Path("models/yolact_fast.toml"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--detections", type=int, default=20)
    p.add_argument("--camera", default="1280x720", help="camera frame WxH")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cam_w, cam_h = (int(v) for v in a.camera.split("x"))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (cam_h, cam_w, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        seg, how = fast_model(a.card, tmp, a.threads, a.detections)
        w, h = seg.card.input_width, seg.card.input_height
        yolo_path = yolo_baseline(tmp, w, h)
        yolo = open_session(yolo_path, a.threads, ["CPUExecutionProvider"], "yolo11n-seg") if yolo_path else None
        blob = rng.random((1, 3, h, w), dtype=np.float32)
        e2e, stages, base = [], {k: [] for k in ("preprocess", "network", "nms", "masks")}, []
        n_inst = 0
        for i in range(a.runs + 5):
            det = seg.predict(frame)
            if yolo is not None:
                t0 = time.perf_counter()
                yolo.run(None, {"images": blob})
                t1 = time.perf_counter()
            if i >= 5:  # warm-up
                e2e.append(det.inference_ms)
                for k in stages:
                    stages[k].append(seg.timings_ms[k])
                if yolo is not None:
                    base.append((t1 - t0) * 1e3)
                n_inst = len(det.instances)
    print(f"\nONNX Runtime CPU, {a.threads} intra-op threads, model input {w}x{h}, camera frame {cam_w}x{cam_h}, "
          f"{a.runs} runs each, interleaved")
    print(f"fast model {seg.name} ({seg.card.architecture.get('backbone')}; {how}; {n_inst} instances/frame)")
    print(f"  end to end        {stats(e2e)}")
    for k, v in stages.items():
        print(f"    {k:15s} {stats(v)}")
    if base:
        print(f"YOLO11n-seg network only (random weights, same input size)\n  network           {stats(base)}")
        ratio = np.median(e2e) / np.median(base)
        print(f"ratio fast end-to-end / YOLO11n-seg network-only: {ratio:.2f} (target <= 1.5)")
    else:
        print("YOLO11n-seg baseline skipped: install the bench group (uv sync --extra train --group bench)")


if __name__ == "__main__":
    main()
