"""A few training steps on the built-in shapes lower the loss; resume continues exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.torch


def held_out_loss(card_path: Path, weights: Path | None) -> float:
    import torch

    from perception.nets.yolact_loss import yolact_loss
    from perception.node.config import build_config
    from perception.segmentation.card import load_card
    from perception.train.build import build_model, load_weights
    from perception.train.config import TrainConfig
    from perception.train.data import DataConfig
    from perception.train.sources import make_source
    from perception.train.steps import batch_at

    card = load_card(card_path)
    cfg = build_config(TrainConfig, card.training)
    torch.manual_seed(cfg.seed)  # the same initialisation as the training run
    model = build_model(card).train()
    if weights is not None:
        load_weights(model, card, weights)
    data_cfg = build_config(DataConfig, card.data)
    source = make_source(data_cfg, card.input_width, card.input_height, data_cfg.eval_seed, card.classes)
    with torch.no_grad():
        images, targets = batch_at(source, 0, 8, card.class_ids)
        return float(yolact_loss(model(images), targets, cfg.loss)["total"])


def test_a_short_run_lowers_the_held_out_loss(tiny_card: Path, tmp_path: Path) -> None:
    from perception.segmentation.card import load_card, sha256_of
    from perception.train.loop import train

    before = held_out_loss(tiny_card, None)
    result = train(tiny_card, steps=40, run_dir=str(tmp_path / "runs"), progress=False)
    weights = tiny_card.parent / "tiny.pt"
    after = held_out_loss(tiny_card, weights)
    assert after < 0.9 * before, (before, after)
    assert load_card(tiny_card).weights.sha256 == sha256_of(weights)  # type: ignore[union-attr]
    assert set(result["metrics"]) >= {"mask_ap", "mask_ap50", "mask_ap75", "per_class"}  # type: ignore[arg-type]


def test_resume_continues_where_it_stopped(make_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.train.loop import train

    card = make_card(width=64, height=64)
    text = (
        card.read_text()
        .replace("checkpoint_every = 20", "checkpoint_every = 2")
        .replace("eval_every = 1000", "eval_every = 100")
    )
    card.write_text(text)
    train(card, steps=4, run_dir=str(tmp_path / "a"), progress=False)
    straight = torch.load(card.parent / "tiny.pt", weights_only=True)["model"]
    train(card, steps=2, run_dir=str(tmp_path / "b"), progress=False)
    train(card, steps=4, run_dir=str(tmp_path / "b"), resume=True, progress=False)
    resumed = torch.load(card.parent / "tiny.pt", weights_only=True)["model"]
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, msg=k)


def test_resume_with_a_weight_average_gives_the_uninterrupted_weights(make_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.train.loop import train

    card = make_card(width=64, height=64)
    text = card.read_text().replace(
        "checkpoint_every = 20", "checkpoint_every = 2\nema_decay = 0.9\nema_ramp_steps = 2"
    )
    card.write_text(text)
    train(card, steps=4, run_dir=str(tmp_path / "a"), progress=False)
    straight = torch.load(card.parent / "tiny.pt", weights_only=True)["model"]
    train(card, steps=2, run_dir=str(tmp_path / "b"), progress=False)
    train(card, steps=4, run_dir=str(tmp_path / "b"), resume=True, progress=False)
    resumed = torch.load(card.parent / "tiny.pt", weights_only=True)["model"]
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, msg=k)
    # the saved weights are the average, not the last step's weights
    last = torch.load(tmp_path / "a" / "tiny" / "last.pt", weights_only=True)["model"]
    assert any(not torch.equal(last[k], v) for k, v in straight.items() if v.is_floating_point())


def test_continue_starts_from_the_card_weights_and_counts_both_runs(make_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.segmentation.card import CardError, set_card_value, sha256_of
    from perception.train.loop import train

    card = make_card(width=64, height=64)
    with pytest.raises(CardError, match="does not exist"):
        train(card, steps=2, run_dir=str(tmp_path / "x"), progress=False, continue_from_card=True)
    train(card, steps=3, run_dir=str(tmp_path / "a"), progress=False)
    first = torch.load(card.parent / "tiny.pt", weights_only=True)
    assert first["step"] == 3
    # on a new machine: no checkpoint, only the card's weights; a new schedule of 3 steps
    train(card, steps=3, run_dir=str(tmp_path / "fresh"), progress=False, continue_from_card=True)
    cont = torch.load(card.parent / "tiny.pt", weights_only=True)
    assert cont["step"] == 6
    # the same continuation again gives the same weights (it starts from the card's file)
    torch.save(first, card.parent / "tiny.pt")
    set_card_value(card, "weights", "sha256", sha256_of(card.parent / "tiny.pt"))
    train(card, steps=3, run_dir=str(tmp_path / "fresh2"), progress=False, continue_from_card=True)
    again = torch.load(card.parent / "tiny.pt", weights_only=True)
    for k, v in cont["model"].items():
        torch.testing.assert_close(again["model"][k], v, msg=k)
    # and it differs from 3 steps from random weights: the start was the trained file
    train(card, steps=3, run_dir=str(tmp_path / "b"), progress=False)
    scratch = torch.load(card.parent / "tiny.pt", weights_only=True)["model"]
    assert any(not torch.allclose(scratch[k], v) for k, v in cont["model"].items() if v.is_floating_point())


def test_continue_refuses_weights_that_do_not_match_the_card(make_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from perception.segmentation.card import CardError, set_card_value
    from perception.train.loop import train

    card = make_card(width=64, height=64)
    train(card, steps=1, run_dir=str(tmp_path / "a"), progress=False)
    set_card_value(card, "weights", "sha256", "0" * 64)
    with pytest.raises(CardError, match="sha256 mismatch"):
        train(card, steps=1, run_dir=str(tmp_path / "b"), progress=False, continue_from_card=True)


def test_a_cpu_budget_stops_the_run_and_snapshots_it(make_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.train.loop import train

    card = make_card(width=64, height=64)
    train(card, run_dir=str(tmp_path / "a"), progress=False, cpu_minutes=0.02, snapshot_minutes=(0.01, 0.02))
    final = torch.load(card.parent / "tiny.pt", weights_only=True)
    snaps = sorted((tmp_path / "a" / "tiny" / "snapshots").glob("cpu-*.pt"))
    assert [p.name for p in snaps] == ["cpu-0.01.pt", "cpu-0.02.pt"]
    assert 1 <= final["step"] < 20000  # stopped by the budget, not by [training] steps
    assert torch.load(snaps[1], weights_only=True)["step"] == final["step"]


@pytest.mark.parametrize("family", ["yolact", "maskrcnn"])
def test_channels_last_gives_the_losses_and_gradients_of_nchw(make_card, make_maskrcnn_card, family: str) -> None:  # type: ignore[no-untyped-def]
    """``[training] channels_last`` (the default) changes the memory layout only: the same
    weights on the same batch give the same losses and gradients as the NCHW layout (up to
    float rounding; compared after one step, because Adam turns the rounding in near-zero
    gradients into full-size steps)."""
    import torch

    from perception.segmentation.card import load_card
    from perception.train.build import build_model
    from perception.train.config import TrainConfig
    from perception.train.data import ShapesSource
    from perception.train.steps import batch_at, loss_terms

    card = load_card(make_card(width=64, height=64) if family == "yolact" else make_maskrcnn_card())
    torch.manual_seed(0)
    nchw = build_model(card).train()
    nhwc = build_model(card).train()
    nhwc.load_state_dict(nchw.state_dict())
    nhwc = nhwc.to(memory_format=torch.channels_last)
    images, targets = batch_at(ShapesSource(card.input_width, card.input_height, seed=3), 0, 2, card.class_ids)
    layouts = ((nchw, images), (nhwc, images.contiguous(memory_format=torch.channels_last)))
    terms = []
    for model, x in layouts:
        torch.manual_seed(1)  # the same proposal and RoI sampling (Mask R-CNN)
        terms.append(loss_terms(model, card, x, targets, TrainConfig()))
        terms[-1]["total"].backward()
    assert next(p for p in nhwc.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    for k in terms[0]:
        torch.testing.assert_close(terms[1][k], terms[0][k], rtol=1e-4, atol=1e-6, msg=k)
    grads = dict(nchw.named_parameters())
    for name, p in nhwc.named_parameters():
        g0 = grads[name].grad
        if g0 is None:
            assert p.grad is None, name
            continue
        scale = float(g0.abs().max())
        # (+ 1e-6: the BatchNorm biases in front of a residual sum get gradients of 1e-9 to
        # 1e-7 that are rounding noise in either layout)
        torch.testing.assert_close(p.grad, g0, rtol=1e-3, atol=1e-3 * scale + 1e-6, msg=name)
