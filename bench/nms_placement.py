"""Where Fast NMS runs: in NumPy after the graph (what the runtime does) or inside the ONNX
graph (TopK per class, IoU matrix, upper triangle, column max), measured side by side.

    uv run python bench/nms_placement.py --card models/yolact_fast.toml --threads 2

Both variants share the network (random init of the card's architecture); the table gives
network + NMS latency per frame. Mask assembly is the same in both and not included.
``busy``: score threshold 0, every anchor a candidate (the worst case); ``typical``: score
threshold at the 99.9th percentile of the scores (about as many candidates as a trained
model leaves on a road frame).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from perception.nets.fast_nms_torch import pairwise_iou_torch
from perception.nets.yolact import YolactExport
from perception.node.config import build_config
from perception.segmentation.card import load_card
from perception.segmentation.fast_nms import NmsParams, fast_nms_np
from perception.segmentation.postprocess import PostprocessConfig
from perception.segmentation.runtime import open_session
from perception.train.build import build_model


class GraphNms(nn.Module):
    """YolactExport followed by per-class Fast NMS with a fixed ``top_k`` in the graph."""

    def __init__(self, export: YolactExport, top_k: int, iou_threshold: float) -> None:
        super().__init__()
        self.export, self.top_k, self.iou_threshold = export, top_k, iou_threshold

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        boxes, scores, coefs, protos = self.export(x)
        top, idx = scores[0].t().topk(self.top_k, dim=1)  # (C, k)
        iou = pairwise_iou_torch(boxes[0][idx]).triu(diagonal=1)
        keep = (iou.max(dim=1).values <= self.iou_threshold).to(top.dtype)
        return top * keep, idx, boxes, coefs, protos


def select(top: np.ndarray, idx: np.ndarray, p: NmsParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cls, pos = np.nonzero(top > p.score_threshold)
    score = top[cls, pos]
    first = np.argsort(-score, kind="stable")[: p.max_detections]
    return idx[cls, pos][first], cls[first], score[first]


def timed(fn, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(runs + 3):
        t0 = time.perf_counter()
        fn()
        if i >= 3:
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--card", default="models/yolact_fast.toml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    torch.set_num_threads(1)
    card = load_card(a.card)
    post = build_config(PostprocessConfig, card.postprocess)
    torch.manual_seed(0)
    export = YolactExport(build_model(card).eval())
    x = torch.rand(1, 3, card.input_height, card.input_width)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain, graph = Path(tmp) / "plain.onnx", Path(tmp) / "graph.onnx"
        torch.onnx.export(export, (x,), str(plain), opset_version=17, dynamo=False)
        torch.onnx.export(
            GraphNms(export, post.top_k, post.iou_threshold), (x,), str(graph), opset_version=17, dynamo=False
        )
        s_plain = open_session(plain, a.threads, ["CPUExecutionProvider"])
        s_graph = open_session(graph, a.threads, ["CPUExecutionProvider"])
    blob = {s_plain.get_inputs()[0].name: x.numpy()}
    blob_g = {s_graph.get_inputs()[0].name: x.numpy()}
    scores = s_plain.run(None, blob)[1][0]
    print(
        f"network + Fast NMS, ONNX Runtime CPU {a.threads} threads, input {card.input_width}x{card.input_height}, "
        f"top_k {post.top_k}, {a.runs} runs"
    )
    for case, thr in (("busy", 0.0), ("typical", float(np.quantile(scores, 0.999)))):
        p = NmsParams(thr, post.iou_threshold, post.top_k, post.max_detections)

        def numpy_nms(p: NmsParams = p) -> None:  # p bound now: each case times its own
            b, s, _, _ = s_plain.run(None, blob)
            fast_nms_np(b[0], s[0], p)

        def graph_nms(p: NmsParams = p) -> None:
            top, idx, _, _, _ = s_graph.run(None, blob_g)
            select(top, idx, p)

        ta, tb = [], []
        for _ in range(2):  # alternate blocks so that load changes hit both
            ta += timed(numpy_nms, a.runs // 2)
            tb += timed(graph_nms, a.runs // 2)
        b, s, _, _ = s_plain.run(None, blob)
        alone = timed(lambda: fast_nms_np(b[0], s[0], p), a.runs)  # noqa: B023
        print(
            f"  {case:8s} NMS in NumPy: median {np.median(ta):6.2f} ms   in graph: median {np.median(tb):6.2f} ms"
            f"   (NumPy Fast NMS alone: {np.median(alone):5.2f} ms, {len(fast_nms_np(b[0], s[0], p)[0])} kept)"
        )


if __name__ == "__main__":
    main()
