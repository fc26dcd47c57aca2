"""The two-stage model's builders and torchvision checkpoint loading (torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def r50_coco_state():  # type: ignore[no-untyped-def]
    """A randomly initialised torchvision ResNet-50-FPN v2 Mask R-CNN's state_dict (91 classes)."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    torch.manual_seed(0)
    return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).state_dict()


def test_r50_builder_is_torchvisions_architecture(r50_coco_state) -> None:  # type: ignore[no-untyped-def]
    from perception.nets.maskrcnn import maskrcnn_resnet50_fpn_v2_coco

    model = maskrcnn_resnet50_fpn_v2_coco(width=640, height=320)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in r50_coco_state.items()}
    assert model.transform.min_size == (320,) and model.transform.max_size == 640


def test_a_coco_checkpoint_loads_with_road_classes(r50_coco_state, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.bus.classes import CLASSES, COCO_CATEGORY_IDS
    from perception.nets.maskrcnn import maskrcnn_resnet50_fpn_v2_coco
    from perception.nets.maskrcnn_checkpoint import load_torchvision_checkpoint

    path = tmp_path / "maskrcnn_resnet50_fpn_v2_coco.pth"
    torch.save(r50_coco_state, path)  # torchvision's published format: a plain state_dict
    model = load_torchvision_checkpoint(path, maskrcnn_resnet50_fpn_v2_coco(num_classes=len(CLASSES) + 1))
    got = model.state_dict()
    rows = [0, *COCO_CATEGORY_IDS]  # background, then person, bicycle, car, motorcycle, bus, truck
    cls = "roi_heads.box_predictor.cls_score"
    torch.testing.assert_close(got[f"{cls}.weight"], r50_coco_state[f"{cls}.weight"][rows])
    torch.testing.assert_close(got[f"{cls}.bias"], r50_coco_state[f"{cls}.bias"][rows])
    bbox = r50_coco_state["roi_heads.box_predictor.bbox_pred.weight"].view(91, 4, -1)
    torch.testing.assert_close(got["roi_heads.box_predictor.bbox_pred.weight"].view(7, 4, -1), bbox[rows])
    mask = "roi_heads.mask_predictor.mask_fcn_logits.weight"
    torch.testing.assert_close(got[mask], r50_coco_state[mask][rows])
    for key in ("backbone.body.layer3.2.conv2.weight", "rpn.head.conv.0.0.weight", "roi_heads.mask_head.0.0.weight"):
        torch.testing.assert_close(got[key], r50_coco_state[key])
    # the same file into a 91-class model loads unchanged
    full = load_torchvision_checkpoint(path, maskrcnn_resnet50_fpn_v2_coco())
    torch.testing.assert_close(full.state_dict()[mask], r50_coco_state[mask])


def test_a_checkpoint_of_another_architecture_names_the_keys(tmp_path: Path) -> None:
    import torch
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from perception.nets.maskrcnn import maskrcnn_resnet50_fpn_v2_coco
    from perception.nets.maskrcnn_checkpoint import CheckpointError, load_torchvision_checkpoint

    r18 = MaskRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=91)
    path = tmp_path / "r18.pth"
    torch.save(r18.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_torchvision_checkpoint(path, maskrcnn_resnet50_fpn_v2_coco(num_classes=7))
    text = str(err.value)
    assert "r18.pth" in text
    assert "missing keys: backbone.body.layer1.0.conv3.weight" in text  # ResNet-18 has no bottleneck conv3
    assert "mis-shaped keys: backbone.body.layer1.0.conv1.weight (64, 64, 3, 3) vs model (64, 64, 1, 1)" in text
    assert "unexpected keys: backbone.fpn.inner_blocks.0.0.bias" in text  # v2's FPN convolutions have no bias


def test_files_that_are_not_state_dicts(tmp_path: Path) -> None:
    import torch

    from perception.nets.maskrcnn_checkpoint import CheckpointError, read_state_dict

    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth.*cannot be read"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        read_state_dict(tmp_path / "other.pth")
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "wrapped.pth")
    assert list(read_state_dict(tmp_path / "wrapped.pth")) == ["w"]


def test_card_architecture_is_checked(make_maskrcnn_card) -> None:  # type: ignore[no-untyped-def]
    from perception.node.config import ConfigError
    from perception.segmentation.card import load_card
    from perception.train.build import build_model

    path = make_maskrcnn_card()
    path.write_text(
        path.read_text().replace(
            "anchor_sizes = [[16.0], [32.0], [64.0], [128.0]]", "anchor_sizes = [[16.0], [32.0], [64.0]]"
        )
    )
    with pytest.raises(ConfigError, match=r"tiny_maskrcnn.toml: \[architecture\]: anchor_sizes needs 4"):
        build_model(load_card(path))


def test_light_model_has_the_cards_classes_and_fixed_size(make_maskrcnn_card) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.nets.maskrcnn import raw_detections
    from perception.segmentation.card import load_card
    from perception.train.build import build_model

    card = load_card(make_maskrcnn_card(width=128, height=96))
    model = build_model(card).eval()
    assert model.roi_heads.box_predictor.cls_score.out_features == len(card.classes) + 1
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        d = raw_detections(model, torch.rand(1, 3, 96, 128))[0]
        assert d["masks"].shape[1:] == (1, 28, 28) and 0 < len(d["boxes"]) <= 30
        assert float(d["boxes"][:, 2].max()) <= 128 and float(d["boxes"][:, 3].max()) <= 96
        assert set(d["labels"].tolist()) <= {1, 2, 3}
        with pytest.raises(ValueError, match="fixed input size"):
            raw_detections(model, torch.rand(1, 3, 64, 128))


@pytest.mark.parametrize("name", ["maskrcnn_accurate", "maskrcnn_r50_coco"])
def test_bundled_two_stage_cards_are_valid(name: str) -> None:
    from perception.nets.maskrcnn import MaskRCNNConfig
    from perception.node.config import build_config
    from perception.segmentation.card import load_card
    from perception.segmentation.postprocess import postprocess_config

    card = load_card(Path(__file__).resolve().parents[2] / "models" / f"{name}.toml")
    assert card.family == "maskrcnn" and card.onnx is not None
    build_config(MaskRCNNConfig, card.architecture, card.where("architecture"))
    assert 0 < postprocess_config(card).score_threshold < 1
    rows = [r for r in card.latency if r.stage == "end_to_end"]
    assert rows and rows[0].p95_ms >= rows[0].median_ms > 0
