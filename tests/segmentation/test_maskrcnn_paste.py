"""The runtime's NumPy paste of two-stage mask probabilities into camera pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.bus.schema import Letterbox
from perception.segmentation.postprocess import paste_roi_mask, roi_mask_region_px


def disc(radius: float = 10.0, cx: float = 14.0, cy: float = 12.0) -> np.ndarray:
    """(28, 28) float32 probabilities of a soft disc (centre in mask pixel units)."""
    yy, xx = np.mgrid[0:28, 0:28] + 0.5
    return (1 / (1 + np.exp(-(radius - np.hypot(xx - cx, yy - cy)) * 1.5))).astype(np.float32)


def paste_full(prob: np.ndarray, box: np.ndarray, lb: Letterbox) -> np.ndarray:
    region = roi_mask_region_px(box, lb)
    out = np.zeros((lb.src_height, lb.src_width), bool)
    out[region[1] : region[3], region[0] : region[2]] = paste_roi_mask(prob, box, region, lb)
    return out


def test_a_full_mask_covers_the_box_shifted_by_half_a_model_pixel() -> None:
    # camera 200x100 letterboxed into 100x60 model pixels: scale 0.5, 5 rows of padding
    lb = Letterbox(scale=0.5, pad_x_px=0.0, pad_y_px=5.0, src_width=200, src_height=100)
    box = np.array([10.0, 15.0, 40.5, 35.0], np.float32)
    got = paste_full(np.ones((28, 28), np.float32), box, lb)
    # roi_align(aligned=False) puts the mask over [x0 + 0.5, x1 + 0.5) in model pixels
    x0, y0, x1, y1 = (box + 0.5 - [0, 5, 0, 5]) / 0.5
    xs, ys = np.arange(200) + 0.5, np.arange(100) + 0.5
    inside = ((ys > y0) & (ys < y1))[:, None] & ((xs > x0) & (xs < x1))[None, :]
    assert np.array_equal(got, inside)
    assert got.sum() == (81 - 21 + 1) * (60 - 21 + 1)


def test_pasting_at_camera_resolution_matches_pasting_at_model_resolution() -> None:
    prob = disc()
    box = np.array([20.3, 10.7, 70.2, 60.1], np.float32)
    model_px = paste_full(prob, box, Letterbox(1.0, 0.0, 0.0, 96, 80))
    lb2 = Letterbox(scale=0.5, pad_x_px=0.0, pad_y_px=0.0, src_width=192, src_height=160)
    camera_px = paste_full(prob, box, lb2)
    down = camera_px.reshape(80, 2, 96, 2).mean((1, 3)) >= 0.5
    assert (down & model_px).sum() / (down | model_px).sum() > 0.95
    assert camera_px.sum() == pytest.approx(4 * model_px.sum(), rel=0.05)


@pytest.mark.torch
@pytest.mark.parametrize("box", [[5.0, 5.0, 33.0, 33.0], [20.3, 10.7, 70.2, 60.1], [100.6, 40.2, 130.9, 90.0]])
def test_agrees_with_torchvisions_paste_up_to_its_rounding(box: list[float]) -> None:
    """torchvision's ``paste_masks_in_image`` rounds the box to whole pixels and resizes the
    mask to one pixel more than its size; the exact paste agrees up to that."""
    import torch
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    prob, b = disc(), np.array(box, np.float32)
    ours = paste_full(prob, b, Letterbox(1.0, 0.0, 0.0, 160, 96))
    theirs = paste_masks_in_image(torch.from_numpy(prob)[None, None], torch.from_numpy(b)[None], (96, 160))[0, 0]
    theirs = theirs.numpy() > 0.5
    assert (ours & theirs).sum() / (ours | theirs).sum() > 0.85
    (ys, xs), (yt, xt) = np.nonzero(ours), np.nonzero(theirs)
    assert abs(xs.mean() - xt.mean()) < 1.1 and abs(ys.mean() - yt.mean()) < 1.1
    if b[0] == round(b[0]):  # integer box: no rounding, the same centre
        assert abs(xs.mean() - xt.mean()) < 0.05 and abs(ys.mean() - yt.mean()) < 0.1


def exact_linear(n_out: int, start: float, step: float, n_src: int) -> np.ndarray:
    """``(n_out, n_src)`` weights of linear interpolation at ``start + step * o``, edges
    clamped: the exact separable resampling that ``resample_linear`` approximates."""
    pos = np.clip(start + step * np.arange(n_out), 0.0, n_src - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_src - 1)
    m = np.zeros((n_out, n_src))
    m[np.arange(n_out), i0] += 1.0 - (pos - i0)
    m[np.arange(n_out), i1] += pos - i0
    return m


@pytest.mark.parametrize("seed", range(4))
def test_resample_linear_matches_the_exact_separable_product(seed: int) -> None:
    """Upsampling (masks: 2-30x) with offsets, and positions past the edges: values within
    1/32 of a source pixel's change, thresholded masks equal but for a few boundary pixels."""
    from perception.segmentation.postprocess import resample_linear

    rng = np.random.default_rng(seed)
    h, w = rng.integers(2, 40, 2)
    src = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.5) * 10
    step_x, step_y = rng.uniform(0.03, 0.5, 2)
    start_x, start_y = rng.uniform(-2.0, 1.0, 2)
    out_w, out_h = int(w / step_x) + 5, int(h / step_y) + 5
    got = resample_linear(src, start_x, step_x, start_y, step_y, out_w, out_h)
    ref = exact_linear(out_h, start_y, step_y, h) @ src @ exact_linear(out_w, start_x, step_x, w).T
    assert got.shape == (out_h, out_w) and got.dtype == np.float32
    biggest_change = max(np.abs(np.diff(src, axis=0)).max(), np.abs(np.diff(src, axis=1)).max())
    assert np.abs(got - ref).max() <= biggest_change / 32 * 1.5 + 1e-5
    assert ((got > 0) != (ref > 0)).mean() < 0.005
    assert resample_linear(src, 0.0, 1.0, 0.0, 1.0, 0, 3).shape == (3, 0)
