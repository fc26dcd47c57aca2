"""Mask translation on run lengths, and the detection noise model."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from perception.evaluation.detection_noise import DetectionNoise, drop_frames, noisy_detections
from perception.evaluation.track_scenarios import URBAN, generate
from perception.tracking.mask_ops import counts_from_string, translate


def _check_translate(m: np.ndarray, dx: int, dy: int) -> None:
    """translate() of ``m``'s RLE equals the dense shift, and is canonical (the bytes
    pycocotools encodes)."""
    h, w = m.shape
    expected = np.zeros_like(m)
    ys, xs = np.nonzero(m)
    keep = (ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
    expected[ys[keep] + dy, xs[keep] + dx] = 1
    out = translate(mask_utils.encode(np.asfortranarray(m)), dx, dy)
    assert (mask_utils.decode(out) == expected).all()
    assert out["counts"] == mask_utils.encode(np.asfortranarray(expected))["counts"]


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    seed=st.integers(0, 10_000),
    dx=st.integers(-35, 35),
    dy=st.integers(-35, 35),
)
def test_translate_matches_a_dense_shift(h: int, w: int, seed: int, dx: int, dy: int) -> None:
    rng = np.random.default_rng(seed)
    m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
    _check_translate(m, dx, dy)


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(2, 60),
    w=st.integers(2, 60),
    seed=st.integers(0, 10_000),
    dx=st.integers(-8, 8),
    dy=st.integers(-8, 8),
)
def test_translate_of_compact_objects_matches_a_dense_shift(h: int, w: int, seed: int, dx: int, dy: int) -> None:
    """Blobs inside the image moved a few pixels (the tracker's case, which edits only the
    end runs of the string), some reaching or crossing the border."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        y1, x1 = y0 + int(rng.integers(1, h // 2 + 2)), x0 + int(rng.integers(1, w // 2 + 2))
        m[y0:y1, x0:x1] = rng.random((min(y1, h) - y0, min(x1, w) - x0)) < 0.9
    _check_translate(m, dx, dy)


def test_counts_from_string_inverts_pycocotools() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        m = (rng.random((40, 30)) < 0.3).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(m))
        counts = counts_from_string(rle["counts"])
        again = mask_utils.frPyObjects({"counts": counts.astype(np.uint32), "size": [40, 30]}, 40, 30)
        assert again["counts"] == rle["counts"] and counts.sum() == 40 * 30


def test_noise_model_rates() -> None:
    frames = [(f.stamp_ns, f.gt) for f in generate(URBAN, seed=1)[:90]]
    noise = DetectionNoise(drop_rate=0.3)
    noisy = noisy_detections(frames, noise, seed=4)
    assert noisy == noisy_detections(frames, noise, seed=4)  # reproducible
    assert 0.2 < 1 - len(noisy) / len(frames) < 0.4
    n_gt = sum(len(frames[f.index][1].instances) for f in noisy)
    n_det = sum(len(f.detections.instances) for f in noisy)
    fp = sum(
        1
        for f in noisy
        for d in f.detections.instances
        if not any(
            mask_utils.iou([d.mask.to_coco()], [g.mask.to_coco()], [0])[0][0] > 0.3
            for g in frames[f.index][1].instances
        )
    )
    assert 0.02 < fp / n_gt < 0.09
    assert 0.05 < 1 - (n_det - fp) / n_gt < 0.16


def test_dropping_frames_leaves_the_detections_of_surviving_frames_unchanged() -> None:
    frames = [(f.stamp_ns, f.gt) for f in generate(URBAN, seed=2)[:40]]
    full = noisy_detections(frames, DetectionNoise(), seed=7)
    dropped = noisy_detections(frames, DetectionNoise(drop_rate=0.3), seed=7)
    assert len(full) == len(frames) and 0 < len(dropped) < len(full)
    by_index = {f.index: f for f in full}
    assert all(f == by_index[f.index] for f in dropped)  # paired: only the dropped frames differ
    assert dropped == drop_frames(full, 0.3, seed=7)
    assert noisy_detections(frames, DetectionNoise(), seed=8) != full  # the seed still matters
