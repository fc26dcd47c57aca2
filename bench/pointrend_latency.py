"""Latency PointRend adds to the accurate model: the card's Mask R-CNN exported without and with
a point head (several subdivision settings), run end to end by the torch-free runtime
(letterbox, graph, masks pasted and RLE-encoded in camera pixels), interleaved frame by frame
on one busy synthetic street frame (as ``bench/models.py``), median of ``--runs``.

    uv run --no-sync python bench/pointrend_latency.py --card models/maskrcnn_lite0.toml --threads 1

The card's weights go into every variant (the point head, absent from them, stays at its
initialisation: a correction near zero; its cost does not depend on its weights). The
boxes, and so the instance count, are the same in every variant; only the mask branch
differs. Writes nothing into ``models/``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ as a package, run as a script

from bench.models import card_copy  # noqa: E402
from bench.precision_table import measure, synth_frame  # noqa: E402

#: default ``--variants``: subdivision steps x points per step x point-head channels
VARIANTS = ("1x196x64", "1x392x64", "1x392x128", "1x784x128", "2x392x64")


def export_variant(card_path: Path, tmp: Path, steps: int = 0, points: int = 0, channels: int = 0) -> Path:
    """The card's model (``steps`` = 0: as the card says; else with a point head of those
    subdivision settings and width), its weights loaded, exported to ``tmp``; a card copy
    pointing at it."""
    import torch

    from perception.segmentation.card import load_card
    from perception.train.build import build_model, init_from
    from perception.train.export import export_maskrcnn_onnx

    text = card_path.read_text()
    if steps:
        settings = (
            f"point_head = true\npoint_subdivision_steps = {steps}\npoint_subdivision_points = {points}\n"
            f"point_channels = {channels}\n"
        )
        text = text.replace("[architecture]\n", "[architecture]\n" + settings, 1)
    src = tmp / f"src_{steps}_{points}_{channels}.toml"
    src.write_text(text)
    card = load_card(src)
    torch.manual_seed(0)
    model = build_model(card)
    assert card.weights is not None
    init_from(model, card, card_path.parent / card.weights.path.name)
    slug = f"v_{steps}_{points}_{channels}"
    path = export_maskrcnn_onnx(model, tmp / f"{slug}.onnx", card.input_width, card.input_height)
    return card_copy(src, tmp, slug, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--card", type=Path, default=ROOT / "models/maskrcnn_lite0.toml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--variants", nargs="+", default=VARIANTS, help="STEPSxPOINTSxCHANNELS of each point head")
    a = p.parse_args()
    from perception.segmentation.maskrcnn_runtime import MaskRCNNSegmenter

    frame = synth_frame()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = MaskRCNNSegmenter(export_variant(a.card, tmp), threads=a.threads)
        models = {("no point head (28x28)", "fp32", a.threads): base}
        for v in a.variants:
            steps, points, channels = (int(x) for x in v.split("x"))
            name = f"pointrend {v} ({28 << steps}x{28 << steps})"
            seg = MaskRCNNSegmenter(export_variant(a.card, tmp, steps, points, channels), threads=a.threads)
            models[(name, "fp32", a.threads)] = seg
        rows = measure(models, frame, a.runs)  # type: ignore[arg-type]
    first = rows[0].total_ms
    print(f"{a.card.name}, {a.threads} thread(s), {a.runs} interleaved runs, 1280x720 synthetic crowd frame")
    head = ("variant", "instances", "network", "post", "end to end", "p95", "added")
    print(f"{head[0]:32s} " + " ".join(f"{h:>9s}" for h in head[1:]))
    for r in rows:
        print(
            f"{r.model:32s} {r.instances:9d} {r.network_ms:9.1f} {r.post_ms:9.1f} {r.total_ms:9.1f} "
            f"{r.p95_ms:9.1f} {100 * (r.total_ms / first - 1):+8.1f}%"
        )


if __name__ == "__main__":
    main()
