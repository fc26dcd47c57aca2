"""``[training.init]``: a model starts from another project model's weights (the fast
model's trunk and FPN into the accurate model), tensors matched by renamed name and shape."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.torch

RENAME = {"backbone.": "backbone.body.", "fpn.": "backbone.fpn."}


def test_trunk_and_fpn_transfer_heads_stay_random(tiny_card: Path, make_maskrcnn_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.segmentation.card import load_card
    from perception.train.build import build_model, init_from, save_weights

    torch.manual_seed(1)
    fast_card = load_card(tiny_card)
    fast = build_model(fast_card)
    save_weights(fast, fast_card, tmp_path / "fast.pt", step=7)
    torch.manual_seed(2)
    accurate_card = load_card(make_maskrcnn_card())
    accurate = build_model(accurate_card)
    before = {k: v.clone() for k, v in accurate.state_dict().items()}
    copied, total = init_from(accurate, accurate_card, tmp_path / "fast.pt", RENAME)
    after = accurate.state_dict()
    src = fast.state_dict()
    trunk = [k for k in src if k.startswith("backbone.")]
    fpn = [k for k in src if k.startswith("fpn.") and not k.startswith("fpn.extra_blocks")]
    assert copied == len(trunk) + len(fpn) and copied < total
    for k in trunk:
        assert torch.equal(after["backbone.body." + k[len("backbone.") :]], src[k]), k
    for k in fpn:
        assert torch.equal(after["backbone." + k], src[k]), k
    heads = [k for k in after if k.startswith(("roi_heads.", "rpn."))]
    assert heads and all(torch.equal(after[k], before[k]) for k in heads)


def test_nothing_fits_is_a_clear_error(make_maskrcnn_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.segmentation.card import CardError, load_card
    from perception.train.build import build_model, init_from

    card = load_card(make_maskrcnn_card())
    model = build_model(card)
    torch.save({"model": {"other.weight": torch.zeros(3)}}, tmp_path / "foreign.pt")
    with pytest.raises(CardError, match=r"no tensor of .*foreign\.pt. fits the model"):
        init_from(model, card, tmp_path / "foreign.pt", RENAME)
    with pytest.raises(CardError, match="does not exist"):
        init_from(model, card, tmp_path / "missing.pt", RENAME)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CardError, match="cannot be read"):
        init_from(model, card, tmp_path / "junk.pt", RENAME)


@pytest.mark.parametrize("family", ["yolact", "maskrcnn"])
def test_precise_bn_recomputes_running_statistics(family: str, tiny_card: Path, make_maskrcnn_card) -> None:  # type: ignore[no-untyped-def]
    """After precise_bn, the first BatchNorm's running mean is the mean of what it saw over
    the given batches, whatever it was before; the model's train/eval mode is kept."""
    import torch

    from perception.node.config import build_config
    from perception.segmentation.card import load_card
    from perception.train.build import build_model
    from perception.train.data import DataConfig
    from perception.train.loop import precise_bn
    from perception.train.sources import make_source

    card = load_card(tiny_card if family == "yolact" else make_maskrcnn_card())
    model = build_model(card).eval()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.fill_(5.0)
    seen: list[torch.Tensor] = []
    bn.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().mean(dim=(0, 2, 3))))
    data = build_config(DataConfig, card.data)
    source = make_source(data, card.input_width, card.input_height, data.train_seed, card.classes)
    assert precise_bn(model, card, source, 6, 2, 100, torch.device("cpu")) == 6
    assert len(seen) == 3 and not model.training
    assert torch.allclose(bn.running_mean, torch.stack(seen).mean(0), atol=1e-5)
