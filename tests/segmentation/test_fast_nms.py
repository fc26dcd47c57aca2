"""Fast NMS against greedy NMS (torchvision.ops.nms) and NumPy against torch."""

from __future__ import annotations

import numpy as np
import pytest

from perception.segmentation.fast_nms import NmsParams, fast_nms_np, pairwise_iou_np


def random_boxes(rng: np.random.Generator, n: int, size: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def greedy_keep(boxes: np.ndarray, scores: np.ndarray, thr: float) -> set[int]:
    import torch
    from torchvision.ops import nms

    return set(nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist())


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(5))
def test_fast_nms_is_greedy_nms_up_to_the_known_approximation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 300, size=60.0)
    scores = rng.uniform(0.0, 1.0, (300, 1)).astype(np.float32)
    p = NmsParams(score_threshold=0.0, iou_threshold=0.5, top_k=1000, max_detections=1000)
    fast = set(fast_nms_np(boxes, scores, p)[0].tolist())
    greedy = greedy_keep(boxes, scores[:, 0], 0.5)
    # Fast NMS keeps a subset of what greedy NMS keeps ...
    assert fast <= greedy
    # ... and drops exactly the boxes that only boxes suppressed themselves overlap:
    iou = pairwise_iou_np(boxes[None])[0]
    for j in range(len(boxes)):
        higher = np.flatnonzero(scores[:, 0] > scores[j, 0])
        overlapped_by = set(higher[iou[higher, j] > 0.5].tolist())
        assert (j in fast) == (not overlapped_by)
        if j in greedy - fast:
            assert overlapped_by and not overlapped_by & greedy
    assert len(greedy - fast) > 0  # the random boxes do exercise the difference


@pytest.mark.torch
def test_fast_nms_equals_greedy_when_no_chains() -> None:
    rng = np.random.default_rng(7)
    # pairs of boxes: each pair overlaps heavily, pairs are far apart, so no suppression chains
    base = random_boxes(rng, 30, size=20.0) + np.repeat(np.arange(30)[:, None] * 100.0, 4, 1).astype(np.float32)
    boxes = np.concatenate([base, base + 2.0]).astype(np.float32)
    scores = rng.uniform(0.1, 1.0, (60, 1)).astype(np.float32)
    p = NmsParams(score_threshold=0.0, iou_threshold=0.5, top_k=1000, max_detections=1000)
    assert set(fast_nms_np(boxes, scores, p)[0].tolist()) == greedy_keep(boxes, scores[:, 0], 0.5)


def test_class_aware_and_cross_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([[0.9, 0.0], [0.0, 0.8], [0.1, 0.7]], np.float32)
    aware = fast_nms_np(boxes, scores, NmsParams(score_threshold=0.5))
    assert sorted(zip(aware[0].tolist(), aware[1].tolist(), strict=True)) == [(0, 0), (1, 1), (2, 1)]
    cross = fast_nms_np(boxes, scores, NmsParams(score_threshold=0.5, class_aware=False))
    assert cross[0].tolist() == [0, 2] and cross[1].tolist() == [0, 1]
    np.testing.assert_allclose(cross[2], [0.9, 0.7])


def test_thresholds_and_limits() -> None:
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 200, size=2000.0)
    scores = rng.uniform(0, 1, (200, 3)).astype(np.float32)
    idx, cls, sc = fast_nms_np(boxes, scores, NmsParams(score_threshold=0.6, max_detections=25))
    assert len(idx) == 25 and (sc > 0.6).all() and (np.diff(sc) <= 0).all()
    np.testing.assert_array_equal(scores[idx, cls], sc)
    empty = fast_nms_np(boxes, scores, NmsParams(score_threshold=0.99999))
    assert all(len(a) == 0 for a in empty)
    assert all(
        len(a) == 0 for a in fast_nms_np(np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32), NmsParams())
    )


@pytest.mark.torch
@pytest.mark.parametrize("class_aware", [True, False])
def test_numpy_and_torch_versions_agree(class_aware: bool) -> None:
    import torch

    from perception.nets.fast_nms_torch import fast_nms_torch

    rng = np.random.default_rng(11)
    boxes = random_boxes(rng, 400, size=300.0)
    scores = rng.uniform(0, 1, (400, 4)).astype(np.float32)
    p = NmsParams(score_threshold=0.2, top_k=150, max_detections=80, class_aware=class_aware)
    a = fast_nms_np(boxes, scores, p)
    b = fast_nms_torch(torch.from_numpy(boxes), torch.from_numpy(scores), p)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y.numpy())
