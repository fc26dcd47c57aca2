"""End-to-end latency of the fast and the accurate model, each at its own input size, beside
YOLO11n-seg (network only and end to end) and torchvision's ResNet-50-FPN v2 Mask R-CNN.

    uv sync --extra train --group bench      # ultralytics builds the baseline (bench only)
    uv run python bench/models.py --card models/yolact_fast.toml \
        --accurate-card models/maskrcnn_accurate.toml --threads 2

Both run in ONNX Runtime on this machine's CPU at the card's input size, interleaved
frame by frame so that load from other processes hits both alike. The fast model is
measured end to end (letterbox of a 1280x720 frame, network, Fast NMS, mask assembly in
camera pixels, RLE encoding) with its stage breakdown; the baseline is network-only
(``session.run``) and end to end (the project's Ultralytics adapter: letterbox, network,
Fast NMS, masks, RLE) with random weights built from Ultralytics' ``yolo11n-seg.yaml`` (no
download), at the fast model's input size. When the card's ONNX file is not exported yet, a randomly initialised network
of the card's architecture is exported instead (needs the train extra); to measure post-
processing at a busy frame rather than at an empty one, Fast NMS then runs with score
threshold 0 and ``--detections`` instances are assembled.

``--precisions fp32 int8`` adds (``--table-only``: only) a table of each card's files at each
precision and each of ``--thread-counts``, beside YOLO11n-seg FP32, on a synthetic street
frame (:mod:`bench.precision_table`); ``--json`` writes it. ``--more-cards`` adds further
models to that table (a SOLOv2 card, the PointRend card), measured in the same run.

The accurate model runs through the same runtime
pipeline (letterbox, graph, masks pasted and RLE-encoded in camera pixels); since its cost
grows with the number of detections, frames are run at several instance counts (the graph's
score threshold set between the scores of the ``N``-th and ``N+1``-th detection) and the
cost per instance is fitted. torchvision's ResNet-50-FPN v2 (random weights, road classes,
torchvision's test settings, exported the same way) runs at ``--detections`` instances in the
same loop for ``--baseline-runs`` frames (it takes seconds a frame on this CPU).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from perception.segmentation.card import CardError, load_card, set_card_value, sha256_of
from perception.segmentation.maskrcnn_runtime import MaskRCNNSegmenter
from perception.segmentation.postprocess import PostprocessConfig
from perception.segmentation.runtime import YolactSegmenter, open_session
from perception.segmentation.ultralytics_adapter import UltralyticsSegmenter


def fast_model(card_path: Path, tmp: Path, threads: int, detections: int) -> tuple[YolactSegmenter, str]:
    card = load_card(card_path)
    try:
        return YolactSegmenter(card, threads=threads), "bundled weights"
    except (CardError, OSError):
        pass
    import torch

    from perception.train.build import build_model
    from perception.train.export import export_onnx

    copy = tmp / card_path.name
    copy.write_text(card_path.read_text().replace(f'"{card.onnx.path.name}"', '"random.onnx"'))  # type: ignore[union-attr]
    torch.manual_seed(0)
    export_onnx(build_model(card), tmp / "random.onnx", card.input_width, card.input_height)
    set_card_value(copy, "onnx", "sha256", sha256_of(tmp / "random.onnx"))
    seg = YolactSegmenter(copy, threads=threads, score_threshold=0.0, max_detections=detections)
    return seg, f"random init, post-processing forced to {detections} instances"


def card_copy(card_path: Path, tmp: Path, name: str, onnx_file: Path) -> Path:
    """A copy of a card in ``tmp`` named ``name``, pointing at ``onnx_file`` (sha256 filled in)."""
    card = load_card(card_path)
    text = card_path.read_text().replace(f'"{card.onnx.path.name}"', f'"{onnx_file.name}"')  # type: ignore[union-attr]
    copy = tmp / f"{name}.toml"
    copy.write_text(text.replace(f'name = "{card.name}"', f'name = "{name}"', 1))
    set_card_value(copy, "onnx", "sha256", sha256_of(onnx_file))
    return copy


def accurate_models(
    card_path: Path, tmp: Path, threads: int, with_r50: bool
) -> tuple[MaskRCNNSegmenter, str, MaskRCNNSegmenter | None]:
    """The accurate model (bundled, or a random init of its card's architecture) and
    torchvision's ResNet-50-FPN v2 (random weights, road classes) at the same input size."""
    card = load_card(card_path)
    try:
        acc, how = MaskRCNNSegmenter(card, threads=threads), "bundled weights"
    except (CardError, OSError):
        acc, how = None, "random init"
    if acc is not None and not with_r50:
        return acc, how, None
    import torch

    from perception.nets.maskrcnn import maskrcnn_resnet50_fpn_v2_coco
    from perception.train.build import build_model
    from perception.train.export import export_maskrcnn_onnx

    torch.manual_seed(0)
    if acc is None:
        path = export_maskrcnn_onnx(build_model(card), tmp / "accurate.onnx", card.input_width, card.input_height)
        acc = MaskRCNNSegmenter(card_copy(card_path, tmp, card.name, path), threads=threads)
    r50 = None
    if with_r50:  # torchvision's test-time settings (1000 proposals), not the card's
        model = maskrcnn_resnet50_fpn_v2_coco(card.input_width, card.input_height, num_classes=len(card.classes) + 1)
        path = export_maskrcnn_onnx(model, tmp / "r50.onnx", card.input_width, card.input_height)
        r50 = MaskRCNNSegmenter(card_copy(card_path, tmp, "torchvision_r50_fpn_v2", path), threads=threads)
    return acc, how, r50


def thresholds_for(seg: MaskRCNNSegmenter, frame: np.ndarray, counts: list[int]) -> dict[int, PostprocessConfig]:
    """Post-processing settings under which ``seg`` finds exactly ``n`` instances on
    ``frame``, for each ``n`` in ``counts``: the score threshold halfway between the ``n``-th
    and the ``n+1``-th score found at threshold 0 (NMS only removes a box for a better one,
    so a higher threshold keeps a prefix of that list)."""
    seg.cfg = replace(seg.cfg, score_threshold=0.0)
    scores = sorted((i.score for i in seg.predict(frame).instances), reverse=True) + [0.0]
    out = {}
    for n in counts:
        if n >= len(scores):
            raise SystemExit(f"{seg.name}: only {len(scores) - 1} detections at threshold 0, cannot time {n}")
        hi = scores[n - 1] if n else 1.0
        if hi == scores[n]:
            raise SystemExit(f"{seg.name}: tied scores at rank {n}; pick other --levels")
        out[n] = replace(seg.cfg, score_threshold=(hi + scores[n]) / 2)
    return out


def export_ultralytics(model: object, path: Path, width: int, height: int) -> Path:
    """An Ultralytics segmentation model to ONNX through its heads' own export path
    (concatenated outputs ``output0`` and prototypes ``output1``), as the project's adapter reads it."""
    import torch

    for m in model.modules():  # type: ignore[attr-defined]
        if hasattr(m, "export"):
            m.export, m.format = True, "onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, height, width),),
            str(path),
            opset_version=17,
            dynamo=False,
            input_names=["images"],
            output_names=["output0", "output1"],
        )
    return path


def yolo_baseline(tmp: Path, width: int, height: int) -> Path | None:
    """YOLO11n-seg (random weights) exported to ONNX, or None without ultralytics."""
    try:
        from ultralytics.nn.tasks import SegmentationModel
    except ImportError:
        return None
    model = SegmentationModel("yolo11n-seg.yaml", nc=80, verbose=False).eval().fuse(verbose=False)
    return export_ultralytics(model, tmp / "yolo11n-seg.onnx", width, height)


def stats(xs: list[float]) -> str:
    return f"median {np.median(xs):7.2f} ms   p95 {np.percentile(xs, 95):7.2f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", type=Path, default=Path("models/yolact_fast.toml"))
    p.add_argument("--accurate-card", type=Path, default=Path("models/maskrcnn_accurate.toml"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--detections", type=int, default=20)
    p.add_argument(
        "--levels",
        type=int,
        nargs="+",
        default=[0, 10, 20, 40],
        help="instance counts at which the accurate model is timed (cycled frame by frame)",
    )
    p.add_argument("--baseline-runs", type=int, default=5, help="frames of torchvision's R50-FPN v2 (0: skip)")
    p.add_argument("--camera", default="1280x720", help="camera frame WxH")
    p.add_argument("--precisions", nargs="*", default=[], help="the precision table: e.g. fp32 int8")
    p.add_argument(
        "--more-cards",
        type=Path,
        nargs="*",
        default=[],
        help="further cards in the precision table, timed in the same run (e.g. a SOLOv2 or PointRend card)",
    )
    p.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2], help="the table's thread counts")
    p.add_argument("--table-runs", type=int, default=30, help="frames of each model in the table")
    p.add_argument(
        "--table-blocks",
        type=int,
        default=0,
        help="time each model in N blocks of consecutive frames instead of interleaved (0)",
    )
    p.add_argument("--table-only", action="store_true", help="only the precision table")
    p.add_argument("--json", type=Path, default=None, help="write the precision table here")
    p.add_argument(
        "--write-card",
        action="store_true",
        help="add the table's rows to each card as [[latency]] rows with their precision (what auto compares)",
    )
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.precisions:
        precision_table(a)
    if not a.table_only:
        two_models(a)


def precision_table(a: argparse.Namespace) -> None:
    """Both cards at each precision and thread count beside YOLO11n-seg FP32 (see the module)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ as a package, run as a script
    from bench.precision_table import cpu_description, load_all, measure, print_table, ratios, synth_frame, write_json

    cam_w, cam_h = (int(v) for v in a.camera.split("x"))
    fast = load_card(a.card)
    with tempfile.TemporaryDirectory() as tmpdir:
        yolo = yolo_baseline(Path(tmpdir), fast.input_width, fast.input_height)
        models = load_all([a.card, a.accurate_card, *a.more_cards], a.precisions, a.thread_counts, yolo)
        rows = measure(models, synth_frame(cam_w, cam_h), a.table_runs, blocks=a.table_blocks)
    ratio = ratios(rows, fast.name)
    order = f"in {a.table_blocks} blocks of consecutive frames" if a.table_blocks else "interleaved"
    print(f"\nONNX Runtime CPU ({cpu_description()}), camera frame {cam_w}x{cam_h} (synthetic crowd)")
    print(f"{a.table_runs} runs each, {order}")
    print_table(rows, ratio)
    if a.json is not None:
        import onnxruntime

        meta = {
            "onnxruntime": onnxruntime.__version__,
            "camera": a.camera,
            "runs": a.table_runs,
            "command": " ".join(sys.argv),
        }
        write_json(a.json, rows, ratio, meta)
        print(f"wrote {a.json}")
    if a.write_card:
        from bench.precision_table import write_rows

        cards = (a.card, a.accurate_card, *a.more_cards)
        write_rows(rows, {load_card(c).name: c for c in cards}, " ".join(sys.argv))


def two_models(a: argparse.Namespace) -> None:
    """The fast and the accurate model at their default precision, beside the baselines."""
    cam_w, cam_h = (int(v) for v in a.camera.split("x"))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (cam_h, cam_w, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        seg, how = fast_model(a.card, tmp, a.threads, a.detections)
        w, h = seg.card.input_width, seg.card.input_height
        acc, acc_how, r50 = accurate_models(a.accurate_card, tmp, a.threads, a.baseline_runs > 0)
        levels = thresholds_for(acc, frame, sorted(set(a.levels) | {a.detections}))
        r50_level = thresholds_for(r50, frame, [a.detections]) if r50 is not None else {}
        yolo_path = yolo_baseline(tmp, w, h)
        yolo = open_session(yolo_path, a.threads, ["CPUExecutionProvider"], "yolo11n-seg") if yolo_path else None
        yolo_e2e = UltralyticsSegmenter(yolo_path, threads=a.threads, name="yolo11n-seg") if yolo_path else None
        yolo_runs: list[float] = []
        yolo_inst = 0
        blob = rng.random((1, 3, h, w), dtype=np.float32)
        e2e, stages, base = [], {k: [] for k in ("preprocess", "network", "nms", "masks")}, []
        acc_runs: dict[int, list[tuple[float, dict[str, float]]]] = {n: [] for n in levels}
        r50_runs: list[float] = []
        n_inst = 0
        level_list = list(levels)
        for i in range(a.runs + 5):
            det = seg.predict(frame)
            if yolo is not None:
                t0 = time.perf_counter()
                yolo.run(None, {"images": blob})
                t1 = time.perf_counter()
                yolo_det = yolo_e2e.predict(frame)  # type: ignore[union-attr]
            want = level_list[i % len(level_list)]
            acc.cfg = levels[want]
            acc_det = acc.predict(frame)
            if r50 is not None and 1 <= i <= a.baseline_runs:  # frame 0 warms it up
                r50.cfg = r50_level[a.detections]
                r50_runs.append(r50.predict(frame).inference_ms)
            if i >= 5:  # warm-up
                e2e.append(det.inference_ms)
                for k in stages:
                    stages[k].append(seg.timings_ms[k])
                if yolo is not None:
                    base.append((t1 - t0) * 1e3)
                    yolo_runs.append(yolo_det.inference_ms)
                    yolo_inst = len(yolo_det.instances)
                n_inst = len(det.instances)
                acc_runs[want].append((acc_det.inference_ms, dict(acc.timings_ms)))
                assert len(acc_det.instances) == want, (len(acc_det.instances), want)
    print(
        f"\nONNX Runtime CPU, {a.threads} intra-op threads, camera frame {cam_w}x{cam_h}, "
        f"{a.runs} runs each, interleaved"
    )
    print(
        f"fast model {seg.name} ({seg.card.architecture.get('backbone')}, input {w}x{h}; {how}; "
        f"{n_inst} instances/frame)"
    )
    print(f"  end to end        {stats(e2e)}")
    for k, v in stages.items():
        print(f"    {k:15s} {stats(v)}")
    print(
        f"accurate model {acc.name} ({acc.card.architecture.get('backbone')}, input {acc.card.input_width}x"
        f"{acc.card.input_height}; {acc_how}), end to end by instances/frame"
    )
    medians = []
    for n, runs in acc_runs.items():
        lat = [r[0] for r in runs]
        parts = "  ".join(f"{k} {np.median([r[1][k] for r in runs]):.1f}" for k in ("preprocess", "masks"))
        print(f"  {n:3d} instances     {stats(lat)}   ({len(lat)} runs)")
        print(f"      network       {stats([r[1]['network'] for r in runs])}   (medians: {parts} ms)")
        medians.append((n, float(np.median(lat))))
    slope, intercept = np.polyfit([m[0] for m in medians], [m[1] for m in medians], 1)
    print(f"  fitted cost: {intercept:.1f} ms + {slope:.2f} ms per instance (least squares on the medians)")
    fast_med, acc_med = np.median(e2e), dict(medians)[a.detections]
    print(f"ratio accurate / fast end to end at {a.detections} instances: {acc_med / fast_med:.2f}")
    print(f"ratio fast / accurate end to end: {fast_med / acc_med:.2f} (target <= 0.5)")
    if r50_runs:
        print(
            f"torchvision ResNet-50-FPN v2 Mask R-CNN (random weights, road classes, same input size and runtime), "
            f"{a.detections} instances\n  end to end        {stats(r50_runs)}   ({len(r50_runs)} runs)"
        )
        print(f"ratio accurate / torchvision R50-FPN v2 end to end: {acc_med / np.median(r50_runs):.2f}")
    if base:
        print(
            f"YOLO11n-seg (random weights, input {w}x{h}; {yolo_inst} instances/frame end to end)\n"
            f"  network           {stats(base)}\n  end to end        {stats(yolo_runs)}"
        )
        print(f"ratio fast end-to-end / YOLO11n-seg network-only: {np.median(e2e) / np.median(base):.2f}")
        print(
            f"ratio fast end-to-end / YOLO11n-seg end-to-end: {np.median(e2e) / np.median(yolo_runs):.2f} "
            f"(target <= 0.7)"
        )
    else:
        print("YOLO11n-seg baseline skipped: install the bench group (uv sync --extra train --group bench)")


if __name__ == "__main__":
    main()
