"""The frame bank: rendered once and reused, samples a pure function of (seed, index),
scale 1 equals the node's letterbox, augmentation keeps masks on their pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def small_bank(tmp_path: Path, **kw):  # type: ignore[no-untyped-def]
    from perception.train.frame_bank import BankConfig, FrameBank

    cfg = BankConfig(**{"drives": 3, "frames_per_drive": 2, "stride": 3, "camera": (160, 96), **kw})
    return FrameBank(cfg, tmp_path / "bank")


def as_bgr(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    return (image.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8)


def test_bank_is_rendered_once_and_covers_every_scenario(tmp_path: Path) -> None:
    bank = small_bank(tmp_path)
    assert len(bank) == 6
    files = sorted((tmp_path / "bank" / bank.cfg.key()).glob("drive-*.npz"))
    assert len(files) == 3
    stamps = [f.stat().st_mtime_ns for f in files]
    again = small_bank(tmp_path)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not rendered again
    for i in range(len(bank)):
        a, b = bank.frame(i), again.frame(i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    # every labelled instance id is in its id map
    image, ids, labels = bank.frame(0)
    assert image.shape == (96, 160, 3) and ids.shape == (96, 160)
    assert all((ids == i).any() for i, _, _ in labels)
    # another setting is another cache
    assert small_bank(tmp_path, stride=4).cfg.key() != bank.cfg.key()


def test_samples_are_a_pure_function_of_seed_and_index(tmp_path: Path) -> None:
    import torch

    from perception.train.augment import Augment
    from perception.train.frame_bank import BankSource

    aug = Augment(0.5, 2.0, 0.5, 1.0)
    a = BankSource(small_bank(tmp_path), 128, 64, seed=3, augment=aug)
    b = BankSource(small_bank(tmp_path), 128, 64, seed=3, augment=aug)
    for i in (0, 7, 3):
        (ia, ta), (ib, tb) = a.sample(i), b.sample(i)
        torch.testing.assert_close(ia, ib)
        torch.testing.assert_close(ta["masks"], tb["masks"])
    assert not torch.equal(a.sample(0)[0], BankSource(small_bank(tmp_path), 128, 64, seed=4, augment=aug).sample(0)[0])


def test_scale_one_is_the_letterbox_the_node_applies(tmp_path: Path) -> None:
    from perception.geometry.letterbox import letterbox
    from perception.train.frame_bank import BankSource

    bank = small_bank(tmp_path)
    source = BankSource(bank, 128, 64, seed=0, shuffle=False)
    for i in range(len(bank)):
        image, target = source.sample(i)
        expected, _ = letterbox(bank.frame(i)[0], 128, 64)
        assert np.array_equal(as_bgr(image), expected)
        assert target["masks"].shape[1:] == (64, 128)


def test_zoomed_out_samples_keep_masks_inside_the_placed_frame(tmp_path: Path) -> None:
    from perception.train.augment import Augment
    from perception.train.frame_bank import BankSource

    source = BankSource(small_bank(tmp_path), 128, 64, seed=1, augment=Augment(0.5, 0.5, 1.0, 0.0))
    for i in range(4):
        image, target = source.sample(i)
        bgr = as_bgr(image)
        content = (bgr != 114).any(axis=2)
        ys, xs = np.nonzero(content)
        assert ys.max() - ys.min() < 40 and xs.max() - xs.min() < 70  # half of 64 x 128 (plus rounding)
        masks = target["masks"].numpy().astype(bool)
        if len(masks):
            union = masks.any(0)
            assert not (union & ~content).any() or (union & ~content).sum() < 0.05 * union.sum()
            boxes = target["boxes"].numpy()
            assert (boxes[:, 0] >= xs.min() - 1).all() and (boxes[:, 2] <= xs.max() + 2).all()


def test_bad_augmentation_settings_are_clear_errors() -> None:
    from perception.train.data import DataConfig

    with pytest.raises(ValueError, match="scale_min"):
        DataConfig(scale_min=2.0, scale_max=1.0).validate()
    with pytest.raises(ValueError, match="flip"):
        DataConfig(flip=1.5).validate()


def test_night_weight_draws_night_frames_more_often(tmp_path: Path) -> None:
    from perception.synth import time_of_day
    from perception.train.augment import Augment
    from perception.train.frame_bank import BankConfig, BankSource, FrameBank

    # drives 0..11 of seed 0; the test needs at least one night and one other drive among them
    cfg = BankConfig(drives=12, frames_per_drive=1, stride=1, camera=(96, 64))
    times = [time_of_day(cfg.drive_seed(d)) for d in range(cfg.drives)]
    assert "night" in times and set(times) != {"night"}
    bank = FrameBank(cfg, tmp_path / "bank")
    assert bank.times == times

    def night_share(weight: float) -> float:
        src = BankSource(bank, 96, 64, seed=0, augment=Augment(night_weight=weight))
        picks = [src.frame_index(i) for i in range(4000)]
        return float(np.mean([times[p] == "night" for p in picks]))

    base = times.count("night") / len(times)
    assert abs(night_share(1.0) - base) < 0.03
    boosted = 3 * base / (3 * base + (1 - base))
    assert abs(night_share(3.0) - boosted) < 0.03
