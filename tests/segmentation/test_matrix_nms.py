"""Matrix NMS (NumPy, vectorised) against a plain reference written pair by pair from the
SOLOv2 paper (section 4.3) and SOLO's official ``matrix_nms``, on random masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.segmentation.matrix_nms import MatrixNmsParams, mask_iou_matrix, matrix_nms, matrix_nms_decay


def reference_decay(masks: np.ndarray, labels: np.ndarray, kernel: str, sigma: float, class_aware: bool) -> list[float]:
    """Decay factors of masks sorted by descending score, one pair at a time: for each
    ``j``, the minimum over higher-scored ``i`` of the same class of ``f(iou_ij) / f(comp_i)``
    where ``comp_i`` is ``i``'s largest IoU with a mask scored above it (also of its class)."""
    n = len(masks)

    def related(i: int, j: int) -> bool:
        return not class_aware or labels[i] == labels[j]

    def iou(i: int, j: int) -> float:
        inter = float(np.logical_and(masks[i], masks[j]).sum())
        union = float(masks[i].sum()) + float(masks[j].sum()) - inter
        return inter / union if union > 0 else 0.0

    def f(x: float) -> float:
        return math.exp(-sigma * x * x) if kernel == "gaussian" else 1.0 - x

    comp = []
    for i in range(n):
        comp.append(max([iou(k, i) for k in range(i) if related(k, i)], default=0.0))
    decay = []
    for j in range(n):
        d = 1.0
        for i in range(j):
            if related(i, j):
                d = min(d, f(iou(i, j)) / max(f(comp[i]), 1e-6))
        decay.append(d)
    return decay


def random_masks(rng: np.random.Generator, n: int, size: int = 24) -> np.ndarray:
    """``n`` random rectangles and blobs, some near-copies of others (high IoU pairs)."""
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        if i > 0 and rng.random() < 0.4:  # a jittered copy of an earlier mask
            masks[i] = np.roll(masks[rng.integers(i)], tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
            masks[i] ^= rng.random((size, size)) < 0.03
        else:
            y0, x0 = rng.integers(0, size - 4, 2)
            y1, x1 = y0 + rng.integers(3, size - y0 + 1), x0 + rng.integers(3, size - x0 + 1)
            masks[i, y0:y1, x0:x1] = True
        if not masks[i].any():
            masks[i, 0, 0] = True
    return masks


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("class_aware", [True, False])
def test_decay_matches_the_pairwise_reference(seed: int, kernel: str, class_aware: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    masks, labels = random_masks(rng, n), rng.integers(0, 3, n)
    p = MatrixNmsParams(kernel=kernel, sigma=float(rng.uniform(0.5, 4.0)), class_aware=class_aware)
    got = matrix_nms_decay(mask_iou_matrix(masks), labels, p)
    want = reference_decay(masks, labels, kernel, p.sigma, class_aware)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[0] == 1.0 and np.all((got > 0) & (got <= 1.0))


@pytest.mark.parametrize("seed", [10, 11, 12])
@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matrix_nms_sorts_decays_filters_and_caps(seed: int, kernel: str) -> None:
    rng = np.random.default_rng(seed)
    n = 25
    masks, labels = random_masks(rng, n), rng.integers(0, 3, n)
    scores = rng.uniform(0.05, 1.0, n).astype(np.float32)
    p = MatrixNmsParams(kernel=kernel, update_threshold=0.2, max_detections=10)
    index, decayed = matrix_nms(masks, labels, scores, p, areas=masks.reshape(n, -1).sum(1))
    order = np.argsort(-scores, kind="stable")
    ref = scores[order] * np.array(reference_decay(masks[order], labels[order], kernel, p.sigma, True))
    want = [(int(order[k]), ref[k]) for k in np.argsort(-ref, kind="stable") if ref[k] >= 0.2][:10]
    assert [int(i) for i in index] == [w[0] for w in want]
    np.testing.assert_allclose(decayed, [w[1] for w in want], rtol=1e-5)


def test_duplicates_decay_by_the_kernel_and_other_classes_do_not() -> None:
    m = np.zeros((3, 8, 8), bool)
    m[:, 2:6, 2:6] = True  # three identical masks: IoU 1
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    index, decayed = matrix_nms(m, np.array([0, 0, 1]), scores, MatrixNmsParams(sigma=2.0, update_threshold=0.0))
    assert list(index) == [0, 2, 1]  # the other class is untouched, the copy decays
    np.testing.assert_allclose(decayed, [0.9, 0.7, 0.8 * math.exp(-2.0)], rtol=1e-6)
    linear = MatrixNmsParams(kernel="linear", update_threshold=0.05)
    index, _ = matrix_nms(m, np.array([0, 0, 1]), scores, linear)
    assert list(index) == [0, 2]  # 1 - IoU = 0: the copy is gone
    assert matrix_nms(m[:0], np.zeros(0, np.int64), scores[:0], linear)[0].shape == (0,)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="kernel"):
        MatrixNmsParams(kernel="box").validate()
    with pytest.raises(ValueError, match="sigma"):
        MatrixNmsParams(sigma=0.0).validate()
