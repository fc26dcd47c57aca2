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
    accurate = build_model(load_card(make_maskrcnn_card()))
    before = {k: v.clone() for k, v in accurate.state_dict().items()}
    copied, total = init_from(accurate, tmp_path / "fast.pt", RENAME)
    after = accurate.state_dict()
    src = fast.state_dict()
    trunk = [k for k in src if k.startswith("backbone.")]
    fpn = [k for k in src if k.startswith("fpn.") and not k.startswith("fpn.extra_blocks")]
    assert copied == len(trunk) + len(fpn) and copied < total
    for k in trunk:
        assert torch.equal(after["backbone.body." + k[len("backbone."):]], src[k]), k
    for k in fpn:
        assert torch.equal(after["backbone." + k], src[k]), k
    heads = [k for k in after if k.startswith(("roi_heads.", "rpn."))]
    assert heads and all(torch.equal(after[k], before[k]) for k in heads)


def test_nothing_fits_is_a_clear_error(make_maskrcnn_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.segmentation.card import CardError, load_card
    from perception.train.build import build_model, init_from

    model = build_model(load_card(make_maskrcnn_card()))
    torch.save({"model": {"other.weight": torch.zeros(3)}}, tmp_path / "foreign.pt")
    with pytest.raises(CardError, match=r"no tensor of .*foreign\.pt. fits the model"):
        init_from(model, tmp_path / "foreign.pt", RENAME)
    with pytest.raises(CardError, match="does not exist"):
        init_from(model, tmp_path / "missing.pt", RENAME)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CardError, match="cannot be read"):
        init_from(model, tmp_path / "junk.pt", RENAME)
