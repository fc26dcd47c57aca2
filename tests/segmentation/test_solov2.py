"""SOLOv2 (``family = "solov2"``): the torch model and its ONNX export give the same
outputs and detections, a few training steps run with finite losses whose gradients reach
the heads, ``perception train`` and ``perception export`` take the card, and a card's
errors are reported (torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.bus.masks import decode_mask

pytestmark = pytest.mark.torch

TINY = """
name = "tiny_solov2"
family = "solov2"
classes = ["person", "car", "truck"]

[input]
width = 160
height = 96

[architecture]
backbone = "mobilenet_v3_small"
fpn_channels = 32
head_channels = 32
mask_channels = 32
kernel_channels = 16
grids = [12, 8, 4]
scale_ranges = [[1.0, 32.0], [16.0, 64.0], [32.0, 512.0]]

[postprocess]
score_threshold = 0.3
top_k = 60
max_detections = 30

[training]
steps = 4
batch_size = 2
lr = 0.003
warmup_steps = 1
seed = 0
eval_every = 1000
checkpoint_every = 1000
threads = 1

[data]
source = "shapes"
eval_images = 2
max_objects = 3

[weights]
file = "tiny_solov2.pt"
sha256 = ""

[onnx]
file = "tiny_solov2.onnx"
sha256 = ""
"""

#: torch and ONNX Runtime compute in float32 with other kernels: raw outputs agree to this
SCORE_ATOL, LOGIT_ATOL = 1e-4, 2e-3


def write_card(folder: Path, text: str = TINY) -> Path:
    path = folder / "tiny_solov2.toml"
    path.write_text(text)
    return path


def spread_outputs(model, probe) -> None:  # type: ignore[no-untyped-def]
    """Make a random-init model give varied scores (the focal prior puts them all near 0.01)
    and masks that are neither empty nor full (kernels of mixed sign, logits spread around 0)."""
    import torch

    with torch.no_grad():
        model.head.cls.bias.fill_(-1.0)
        model.head.cls.weight.mul_(10.0)
        model.head.kernel.weight.mul_(100.0)
        feats = model.mask_branch.out[1].bias  # the mask feature's GroupNorm: centre it near 0
        feats.fill_(0.3)
        _, _, _, logits = _graph(model, 60)(probe[None])
        model.head.kernel.weight.div_(float(logits.std()) / 4.0)


def _graph(model, top_k: int):  # type: ignore[no-untyped-def]
    from perception.nets.solov2 import Solov2Export

    return Solov2Export(model.eval(), top_k)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A tiny random-init SOLOv2 with spread outputs, exported through its card."""
    import torch

    from perception.segmentation.card import load_card, set_card_value, sha256_of
    from perception.train.build import build_model
    from perception.train.data import ShapesSource
    from perception.train.export import export_solov2_onnx

    card = load_card(write_card(tmp_path_factory.mktemp("solov2")))
    torch.manual_seed(1)
    model = build_model(card).eval()
    spread_outputs(model, ShapesSource(card.input_width, card.input_height, seed=9).sample(0)[0])
    path = export_solov2_onnx(model, card)
    set_card_value(card.path, "onnx", "sha256", sha256_of(path))
    return load_card(card.path), model


def test_graph_outputs_match_between_torch_and_onnx(exported) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.segmentation.solov2_runtime import Solov2Segmenter
    from perception.train.data import ShapesSource

    card, model = exported
    seg = Solov2Segmenter(card, threads=1)
    img = ShapesSource(card.input_width, card.input_height, seed=5).sample(1)[0]
    got = seg.run_network(img[None].numpy())
    with torch.no_grad():
        want = [t.numpy() for t in _graph(model, 60)(img[None])]
    assert got[0].shape == (1, 60) and got[3].shape == (1, 60, 24, 40)  # top_k pairs, masks at stride 4
    np.testing.assert_allclose(got[0], want[0], atol=SCORE_ATOL)
    n = int((want[0] > 0.3).sum())  # the candidates the runtime uses
    assert n > 5
    tol = LOGIT_ATOL * float(np.abs(want[3]).max())
    for k in range(n):  # equal scores (cells of equal features) may come in either order: match by content
        twins = [
            j
            for j in range(want[0].shape[1])
            if abs(want[0][0, j] - got[0][0, k]) <= SCORE_ATOL
            and want[1][0, j] == got[1][0, k]
            and want[2][0, j] == got[2][0, k]
            and np.abs(want[3][0, j] - got[3][0, k]).max() <= tol
        ]
        assert twins, f"ONNX candidate {k} (score {got[0][0, k]:.5f}) has no torch twin"


def test_torch_and_onnx_give_the_same_detections(exported) -> None:  # type: ignore[no-untyped-def]
    from perception.nets.solov2_infer import detect
    from perception.segmentation.families import load_segmenter
    from perception.segmentation.solov2_runtime import solov2_post_config
    from perception.train.data import ShapesSource

    card, model = exported
    seg = load_segmenter(card, threads=1)  # through the FAMILIES row
    post = solov2_post_config(card)
    checked = 0
    for i, (w, h) in enumerate([(160, 96), (250, 130), (150, 100)]):  # identity, pad rows, pad columns
        img, _ = ShapesSource(w, h, seed=5).sample(i)
        bgr = np.ascontiguousarray((img.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).astype(np.uint8))
        ref = detect(model, bgr, card.input_width, card.input_height, post)
        got = seg.predict(bgr)
        assert len(got.instances) == len(ref.boxes) > 0
        assert (got.image_width, got.image_height) == (w, h)
        unused = set(range(len(ref.boxes)))
        for inst in got.instances:
            same = [
                j
                for j in unused
                if inst.class_id == card.class_ids[ref.labels[j]] and abs(inst.score - float(ref.scores[j])) < 1e-4
            ]
            assert same, f"ONNX detection {inst.class_id} {inst.score:.4f} has no torch twin"
            m = decode_mask(inst.mask)  # type: ignore[arg-type]
            j = max(same, key=lambda j: mask_iou(m, ref.masks[j]))
            unused.remove(j)
            assert mask_iou(m, ref.masks[j]) > 0.98
            assert np.abs(np.array(inst.box_xyxy) - ref.boxes[j]).max() <= 1.0
            checked += int(0 < m.sum() < 0.9 * w * h)
    assert checked > 5  # masks that are neither empty nor full were compared


def test_a_few_steps_have_finite_losses_and_gradients_reaching_the_heads(tmp_path: Path) -> None:
    import torch

    from perception.node.config import build_config
    from perception.segmentation.card import load_card
    from perception.train.build import build_model
    from perception.train.config import TrainConfig
    from perception.train.data import DataConfig
    from perception.train.sources import make_source
    from perception.train.steps import batch_at, loss_terms

    card = load_card(write_card(tmp_path))
    cfg = build_config(TrainConfig, card.training)
    data_cfg = build_config(DataConfig, card.data)
    source = make_source(data_cfg, card.input_width, card.input_height, 0, card.classes)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a training run (the card's threads); two threads on a busy machine crawl
    model = build_model(card).train()
    images, targets = batch_at(source, 0, 2, card.class_ids)
    assert sum(len(t["labels"]) for t in targets) > 0
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(5):  # the same batch: the loss must come down
        opt.zero_grad()
        terms = loss_terms(model, card, images, targets, cfg)
        assert set(terms) == {"cls", "mask", "total"} and all(torch.isfinite(v) for v in terms.values())
        terms["total"].backward()
        if step == 0:
            heads = ("head.cls.weight", "head.kernel.weight", "mask_branch.out.0.weight", "fpn.inner_blocks.0.0.weight")
            for name in heads:
                grad = model.get_parameter(name).grad
                assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
        opt.step()
        losses.append(float(terms["total"].detach()))
    torch.set_num_threads(threads)
    assert losses[-1] < losses[0], losses


def test_perception_train_and_export_take_the_card(tmp_path: Path) -> None:
    from perception.segmentation.card import load_card, sha256_of
    from perception.segmentation.families import load_segmenter
    from perception.train.export import export_card
    from perception.train.loop import train

    path = write_card(tmp_path)
    result = train(path, steps=3, run_dir=str(tmp_path / "runs"), progress=False)
    assert set(result["losses"]) >= {"cls", "mask", "total"}  # type: ignore[arg-type]
    assert "mask_ap" in result["metrics"]  # type: ignore[operator]  # validation ran the torch inference
    card = load_card(path)
    assert card.weights.sha256 == sha256_of(card.weights.path)  # type: ignore[union-attr]
    export_card(path)
    det = load_segmenter(path, threads=1).predict(np.full((100, 150, 3), 90, np.uint8))
    assert det.model == "tiny_solov2" and (det.image_width, det.image_height) == (150, 100)


@pytest.mark.parametrize(
    ("section", "old", "new", "message"),
    [
        ("architecture", "grids = [12, 8, 4]", "grids = [12, 8]", "grids and scale_ranges need 3"),
        ("architecture", "kernel_channels = 16", "kernel_chanels = 16", "did you mean 'kernel_channels'"),
        ("architecture", 'backbone = "mobilenet_v3_small"', 'backbone = "resnet9"', "backbone must be one of"),
        ("architecture", "grids = [12, 8, 4]", "grids = [12, 8, 4]\nmask_stride = 2", "mask_stride must be 4 or 8"),
        ("postprocess", "top_k = 60", 'top_k = 60\nkernel = "box"', "kernel must be one of"),
        ("postprocess", "top_k = 60", "top_k = 60\niou_threshold = 0.5", "unknown key 'iou_threshold'"),
    ],
)
def test_card_errors_name_the_card_and_key(tmp_path: Path, section: str, old: str, new: str, message: str) -> None:
    from perception.segmentation.card import load_card
    from perception.segmentation.solov2_runtime import solov2_post_config
    from perception.train.build import build_model

    assert old in TINY
    card = load_card(write_card(tmp_path, TINY.replace(old, new)))
    with pytest.raises(ValueError, match=message) as err:
        build_model(card) if section == "architecture" else solov2_post_config(card)
    assert str(card.path) in str(err.value) and f"[{section}]" in str(err.value)


def test_runtime_refuses_a_card_of_another_family_or_without_its_file(tmp_path: Path) -> None:
    from perception.segmentation.card import CardError, load_card
    from perception.segmentation.solov2_runtime import Solov2Segmenter

    with pytest.raises(CardError, match="not a solov2 model"):
        Solov2Segmenter(load_card(write_card(tmp_path, TINY.replace('family = "solov2"', 'family = "yolact"'))))
    with pytest.raises(CardError, match="does not exist"):
        Solov2Segmenter(load_card(write_card(tmp_path)))  # no ONNX file exported yet
