"""Each model at each precision and thread count, end to end, beside YOLO11n-seg's FP32 ONNX in
our runtime, all interleaved frame by frame on one camera frame (``bench/models.py
--precisions``; this module holds the table so that models.py stays the two-model bench).

A row: the network's median, the post-processing's (NMS, mask assembly or pasting, RLE), the
letterbox's, the end-to-end median and p95, and the instances found. Ratios printed: INT8 /
FP32 of each model at each thread count, and the fast model's INT8 / YOLO11n-seg FP32.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from perception.segmentation.card import CardError, LatencyEntry, append_latency_row, load_card
from perception.segmentation.families import load_segmenter
from perception.segmentation.runtime import Segmenter
from perception.segmentation.ultralytics_adapter import UltralyticsSegmenter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One model at one precision and thread count (milliseconds, medians unless p95)."""

    model: str
    precision: str
    threads: int
    network_ms: float
    post_ms: float
    preprocess_ms: float
    total_ms: float
    p95_ms: float
    instances: int
    runs: int


def synth_frame(width: int = 1280, height: int = 720, seed: int = 21) -> np.ndarray:
    """A busy synthetic street frame (crowd scenario, frame 30 of its drive)."""
    from perception.synth import SynthConfig, frames

    cfg = SynthConfig(width=width, height=height, frames=40, seed=seed, scenario="crowd")
    return next(islice(frames(cfg), 29, None)).image


def load_all(
    cards: Sequence[Path], precisions: Sequence[str], threads: Sequence[int], yolo: Path | None
) -> dict[tuple[str, str, int], Segmenter]:
    """A segmenter per (model, precision, threads) the cards have files for (CPU provider),
    YOLO11n-seg's FP32 ONNX at each thread count when given."""
    out: dict[tuple[str, str, int], Segmenter] = {}
    for path in cards:
        card = load_card(path)
        for precision in precisions:
            for n in threads:
                try:
                    out[(card.name, precision, n)] = load_segmenter(card, n, ["CPUExecutionProvider"], precision)
                except CardError as e:
                    log.info("skipped %s %s: %s", card.name, precision, e)
                    break
    for n in threads if yolo is not None else ():
        out[("yolo11n-seg", "fp32", n)] = UltralyticsSegmenter(
            yolo, threads=n, providers=["CPUExecutionProvider"], name="yolo11n-seg"
        )
    return out


def measure(
    models: dict[tuple[str, str, int], Segmenter], frame: np.ndarray, runs: int, warmup: int = 3, blocks: int = 0
) -> list[Row]:
    """``runs`` frames of each model. ``blocks = 0``: interleaved (each frame goes through every
    model in turn: all share the same machine state, but each session's thread pool starts
    cold each time); ``blocks = N``: in ``N`` rounds, each model runs ``runs / N`` frames in a
    row after ``warmup`` of its own (warm thread pools, as in the node, where one model
    runs frame after frame)."""
    samples: dict[tuple[str, str, int], list[tuple[float, dict[str, float], int]]] = {k: [] for k in models}

    def run(key: tuple[str, str, int], keep: bool) -> None:
        det = models[key].predict(frame)
        if keep:
            samples[key].append((det.inference_ms, dict(getattr(models[key], "timings_ms", {})), len(det.instances)))

    if blocks <= 0:
        for i in range(runs + warmup):
            for key in models:
                run(key, i >= warmup)
    else:
        per_block = max(1, runs // blocks)
        for _ in range(blocks):
            for key in models:
                for i in range(per_block + warmup):
                    run(key, i >= warmup)
    rows = []
    for (name, precision, threads), got in samples.items():
        total = [g[0] for g in got]
        net = [g[1].get("network", np.nan) for g in got]
        pre = [g[1].get("preprocess", np.nan) for g in got]
        post = [t - n - p for t, n, p in zip(total, net, pre, strict=True)]
        rows.append(
            Row(
                name, precision, threads, _med(net), _med(post), _med(pre), _med(total),
                float(np.percentile(total, 95)), got[-1][2], len(got),
            )
        )  # fmt: skip
    return rows


def _med(xs: Sequence[float]) -> float:
    xs = [x for x in xs if np.isfinite(x)]
    return float(np.median(xs)) if xs else float("nan")


def ratios(rows: Sequence[Row], fast: str) -> dict[str, float]:
    """INT8 / FP32 end to end per model and thread count; the fast model's INT8 (and FP32)
    over YOLO11n-seg FP32."""
    by = {(r.model, r.precision, r.threads): r.total_ms for r in rows}
    out = {}
    for (model, precision, threads), ms in by.items():
        if precision != "fp32" and (model, "fp32", threads) in by:
            out[f"{model} {precision}/fp32 {threads}t"] = ms / by[(model, "fp32", threads)]
        if model == fast and ("yolo11n-seg", "fp32", threads) in by:
            out[f"{model} {precision}/yolo11n-seg fp32 {threads}t"] = ms / by[("yolo11n-seg", "fp32", threads)]
    return out


def print_table(rows: Sequence[Row], ratio: dict[str, float]) -> None:
    print(
        f"\n{'model':<20}{'prec':>6}{'thr':>4}{'network':>9}{'post':>8}{'letterbox':>10}{'total':>8}{'p95':>8}{'inst':>6}"
    )
    for r in sorted(rows, key=lambda r: (r.model, r.threads, r.precision)):
        print(
            f"{r.model:<20}{r.precision:>6}{r.threads:>4}{r.network_ms:>9.1f}{r.post_ms:>8.1f}{r.preprocess_ms:>10.1f}"
            f"{r.total_ms:>8.1f}{r.p95_ms:>8.1f}{r.instances:>6}"
        )
    print("(ms, medians; post = NMS/masks/RLE; INT8 checks: <= 0.6x FP32 for each model, fast INT8 <= 0.5x YOLO)")
    for k, v in ratio.items():
        print(f"ratio {k}: {v:.2f}")


def write_json(path: Path, rows: Sequence[Row], ratio: dict[str, float], meta: dict[str, object]) -> None:
    path.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows], "ratios": ratio}, indent=1))


def cpu_description() -> str:
    """The CPU's model name and the integer dot-product instructions INT8 speed depends on
    (e.g. ``AMD EPYC, AVX-512 VNNI``; without VNNI, ONNX Runtime's INT8 kernels gain less
    and 8-bit weights saturate: ``perception export --int8 --reduce-range``)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown CPU")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    if "avx512_vnni" in flags:
        isa = "AVX-512 VNNI"
    elif "avx_vnni" in flags:
        isa = "AVX-VNNI"
    else:
        isa = "AVX2, no VNNI" if "avx2" in flags else "no AVX2"
    return f"{name}, {isa}"


def write_rows(rows: Sequence[Row], cards: dict[str, Path], command: str) -> None:
    """Each card's rows as ``[[latency]]`` rows (end to end, CPU, with their precision), the
    CPU named (:func:`cpu_description`)."""
    import onnxruntime

    device = f"2-core x86 dev machine ({cpu_description()}), ONNX Runtime {onnxruntime.__version__}"
    for r in rows:
        if r.model in cards:
            entry = LatencyEntry(
                device, "CPUExecutionProvider", r.threads, round(r.total_ms, 1), round(r.p95_ms, 1),
                command=f"uv run --extra train --group bench python bench/models.py {command.partition(' ')[2]}",
                notes=f"network {r.network_ms:.1f} ms, post {r.post_ms:.1f} ms, {r.instances} instances "
                "(synthetic crowd frame, 1280x720)",
                precision=r.precision,
            )  # fmt: skip
            append_latency_row(cards[r.model], entry)
