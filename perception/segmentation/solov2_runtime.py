"""SOLOv2 exported by ``perception export``, run by ONNX Runtime (torch-free).

The graph (:class:`perception.nets.solov2.Solov2Export`) ends at the ``top_k`` best
(cell, class) pairs and their mask logits at the mask feature's resolution; here, in
NumPy (:func:`select_instances`, as the official SOLOv2 inference):

1. the pairs above ``score_threshold`` (a prefix: the graph sorts them);
2. binary masks ``logit > logit(mask_threshold)``; masks whose area (counted at stride 4)
   is not above their level's stride are dropped (the official small-mask filter);
3. maskness, the mean probability inside the binary mask, multiplies the score;
4. Matrix NMS (:mod:`.matrix_nms`) decays the scores, ``max_detections`` kept.

Then each mask is pasted in camera pixels (bilinear on the logits, over the box of its
binary mask only: :func:`~perception.segmentation.postprocess.assemble_mask`) and COCO
RLE-encoded; its box is the pasted mask's bounding box (SOLOv2 predicts no boxes).

Why the kernels are applied in the graph (measured 2026-12-07 on the 2-core dev machine,
two trainings running, ONNX Runtime 1.31.1, one thread, the lite0 card's shapes: 1864
cells, 64-channel mask feature at 160x80): applying the top 100 cells' kernels and the
sigmoid took 2.9 ms (min; median 15 ms) in an ONNX graph against 41 ms (min) in NumPy
with its default BLAS threads, 7 ms with one; for 20 cells 0.8 ms against 1.3-32 ms. ONNX
Runtime's kernels are faster and take the session's thread count; the whole network
barely changed (100-140 ms either way, within the noise of the busy machine). The price is
a fixed ``top_k`` chosen at export, before maskness: the official code takes its 500 after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.bus.schema import Detections, Instance, Letterbox
from perception.node.config import build_config
from perception.segmentation.card import ModelCard
from perception.segmentation.matrix_nms import MatrixNmsParams, matrix_nms
from perception.segmentation.postprocess import assemble_mask, box_region_px, encode_region_mask
from perception.segmentation.runtime import LetterboxSegmenter

#: Output names of an exported SOLOv2 model, in order.
SOLOV2_OUTPUTS = ("scores", "labels", "strides", "mask_logits")


@dataclass(frozen=True)
class Solov2PostConfig:
    """The ``[postprocess]`` table of a ``solov2`` card (defaults: the official SOLOv2
    test settings, ``top_k`` the candidates the graph keeps, fixed at export)."""

    score_threshold: float = 0.1
    mask_threshold: float = 0.5
    top_k: int = 100
    max_detections: int = 100
    kernel: str = "gaussian"
    sigma: float = 2.0
    update_threshold: float = 0.05
    class_aware: bool = True
    pad_value: int = 114

    def validate(self) -> None:
        self.nms().validate()
        if not 0.0 <= self.score_threshold < 1.0 or not 0.0 < self.mask_threshold < 1.0 or self.top_k < 1:
            raise ValueError(
                "score_threshold must be in [0, 1), mask_threshold in (0, 1) and top_k >= 1, "
                f"got {self.score_threshold}, {self.mask_threshold}, {self.top_k}"
            )

    def nms(self) -> MatrixNmsParams:
        return MatrixNmsParams(self.kernel, self.sigma, self.update_threshold, self.max_detections, self.class_aware)


def solov2_post_config(card: ModelCard, **overrides: object) -> Solov2PostConfig:
    """The card's ``[postprocess]`` table (with ``overrides``) as a checked config."""
    return build_config(Solov2PostConfig, {**card.postprocess, **overrides}, card.where("postprocess"))


@dataclass(frozen=True)
class Selected:
    """What :func:`select_instances` keeps: ``index`` (M,) rows of the graph's outputs,
    ``labels`` (M,) model classes, ``scores`` (M,) float32 after maskness and Matrix NMS."""

    index: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def select_instances(
    scores: np.ndarray, labels: np.ndarray, min_area: np.ndarray, logits: np.ndarray, cfg: Solov2PostConfig
) -> Selected:
    """Steps 1-4 of the module's pipeline on one image's graph outputs: ``scores`` (K,)
    sorted descending, ``labels`` (K,), ``min_area`` (K,) the area in mask pixels each mask
    must exceed (:func:`area_strides`), ``logits`` (K, Hm, Wm)."""
    n = int(np.count_nonzero(scores > cfg.score_threshold))
    empty = Selected(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if n == 0:
        return empty
    flat = logits[:n].reshape(n, -1)
    binary = flat > math.log(cfg.mask_threshold / (1.0 - cfg.mask_threshold))
    area = binary.sum(1)
    keep = np.flatnonzero(area > min_area[:n])
    if keep.size == 0:
        return empty
    rows, cols = np.nonzero(binary[keep])
    prob = 1.0 / (1.0 + np.exp(-flat[keep][rows, cols]))  # sigmoid only where the mask is
    maskness = np.bincount(rows, weights=prob, minlength=keep.size) / area[keep]
    rescored = (scores[keep] * maskness).astype(np.float32)
    index, decayed = matrix_nms(binary[keep], labels[keep], rescored, cfg.nms(), area[keep])
    return Selected(keep[index].astype(np.int64), labels[keep][index].astype(np.int64), decayed)


def area_strides(strides: np.ndarray, mask_hw: tuple[int, int], input_height: int) -> np.ndarray:
    """The level strides as thresholds on a mask's area in pixels of the graph's mask
    resolution: the official filter counts pixels at stride 4 (``area_4 > stride``), so at
    mask stride ``s`` the area is scaled by ``(s / 4)^2``."""
    s = input_height / mask_hw[0]
    return strides / (s / 4.0) ** 2


def mask_region(logit: np.ndarray, cut: float, stride: float, lb: Letterbox) -> tuple[int, int, int, int] | None:
    """Camera-pixel region (as :func:`box_region_px`) that holds every pixel of the pasted
    mask: a bilinear sample is above ``cut`` only if one of its four neighbours is, so the
    box of the binary mask widened by one mask pixel each side covers it. None when empty."""
    ys, xs = np.nonzero(logit > cut)
    if ys.size == 0:
        return None
    model = np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 1.5, ys.max() + 1.5]) * stride
    cam = (model - [lb.pad_x_px, lb.pad_y_px, lb.pad_x_px, lb.pad_y_px]) / lb.scale
    return box_region_px(cam + [-1.0, -1.0, 1.0, 1.0], lb.src_width, lb.src_height)


def tight_box(crop: np.ndarray, region: tuple[int, int, int, int]) -> tuple[float, float, float, float] | None:
    """The camera xyxy bounding box (pixel edges) of a pasted mask, None when it is empty."""
    rows, cols = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
    if rows.size == 0:
        return None
    x0, y0 = region[0], region[1]
    return float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1)


class Solov2Segmenter(LetterboxSegmenter):
    """Letterbox to the card's input size, the graph (outputs :data:`SOLOV2_OUTPUTS`), then
    the NumPy steps of the module docstring; boxes and masks in camera pixels."""

    def __init__(
        self,
        card: ModelCard | str | Path,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        precision: str = "fp32",
        **overrides: object,
    ) -> None:
        self._open(card, "solov2", threads, providers, precision, SOLOV2_OUTPUTS)
        self.cfg = solov2_post_config(self.card, **overrides)

    def predict_input(self, blob: np.ndarray, lb: Letterbox, prepared_ms: float = 0.0) -> Detections:
        """Detections from a network input of :meth:`network_input`."""
        t1 = time.perf_counter()
        scores, labels, strides, logits = (o[0] for o in self.run_network(blob))
        t2 = time.perf_counter()
        hw = (int(logits.shape[1]), int(logits.shape[2]))
        sel = select_instances(scores, labels, area_strides(strides, hw, self.card.input_height), logits, self.cfg)
        t3 = time.perf_counter()
        instances = self.paste(logits, sel, lb, self.card.input_height / hw[0])
        t4 = time.perf_counter()
        self.timings_ms = {
            "preprocess": prepared_ms,
            "network": (t2 - t1) * 1e3,
            "nms": (t3 - t2) * 1e3,
            "masks": (t4 - t3) * 1e3,
        }
        return Detections(
            self.name, lb.src_width, lb.src_height, tuple(instances), inference_ms=prepared_ms + (t4 - t1) * 1e3
        )

    def paste(self, logits: np.ndarray, sel: Selected, lb: Letterbox, stride: float) -> list[Instance]:
        """The selected masks in camera pixels as instances (an empty one is dropped)."""
        cut = math.log(self.cfg.mask_threshold / (1.0 - self.cfg.mask_threshold))
        one = np.ones(1, np.float32)
        out = []
        for i, label, score in zip(sel.index, sel.labels, sel.scores, strict=True):
            region = mask_region(logits[i], cut, stride, lb)
            if region is None:
                continue
            crop = assemble_mask(logits[i][:, :, None], one, region, lb, stride, self.cfg.mask_threshold)
            box = tight_box(crop, region)
            if box is None:
                continue
            rle = encode_region_mask(crop, region, lb.src_width, lb.src_height)
            out.append(Instance(class_id=self.card.class_ids[int(label)], score=float(score), box_xyxy=box, mask=rle))
        return out
