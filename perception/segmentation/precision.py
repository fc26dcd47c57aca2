"""Which of a card's files a segmenter runs, and in which arithmetic (torch-free).

A launch file asks for ``fp32``, ``fp16``, ``int8`` or ``auto`` per model
(``segmenter.fast_precision`` / ``accurate_precision``):

- ``fp32``: the card's ``[onnx]`` file, in FP32 on every provider (TensorRT's FP16 off);
- ``fp16``: on TensorRT, the ``[onnx]`` file built into an FP16 engine; elsewhere the card's
  ``[fp16]`` file if it lists one (the CPU has no FP16 arithmetic worth running);
- ``int8``: the card's ``[int8]`` file (static INT8, QDQ format, made by ``perception export
  --card C --int8``): ONNX Runtime's integer kernels on the CPU, an INT8 engine on TensorRT
  (explicit quantization: the scales are in the file, so the engine needs no calibration
  cache of its own);
- ``auto``: of the precisions this provider runs whose measured AP is within the card's
  tolerance of FP32 (``max_ap_drop`` in the precision's table), the one with the lowest
  measured end-to-end latency on this provider (the card's ``[[latency]]`` rows); with none
  measured, FP16 on TensorRT and FP32 elsewhere.

A precision the card lacks is a :class:`~perception.segmentation.card.CardError` at load,
one line naming the card and what to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from perception.segmentation.card import PRECISIONS, CardError, FileRef, ModelCard, PrecisionFile
from perception.segmentation.providers import CPU, TENSORRT

#: what a launch file may ask for
REQUESTS = ("auto", *PRECISIONS)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a session computes in, the file it opens, and why (for the log)."""

    precision: str
    file: FileRef
    reason: str


def check_request(requested: str, where: str) -> None:
    """``ValueError`` naming ``where`` unless ``requested`` is one of :data:`REQUESTS`."""
    if requested not in REQUESTS:
        raise ValueError(f"{where} must be one of {', '.join(REQUESTS)}, got {requested!r}")


def _file(card: ModelCard, precision: str, provider: str) -> FileRef | None:
    """The file that runs ``precision`` on ``provider``, or ``None`` when there is none."""
    if precision == "fp32":
        return card.onnx
    listed = card.precisions.get(precision)
    if precision == "fp16":
        if provider == TENSORRT:
            return card.onnx
        return listed.file if listed is not None and provider != CPU else None
    return listed.file if listed is not None else None


def _missing(card: ModelCard, precision: str, provider: str) -> str:
    """The one line that says why ``precision`` cannot run here."""
    if precision == "fp32":
        return f"{card.path}: no [onnx] table; run `perception export --card {card.path}`"
    if precision == "fp16":
        return (
            f"{card.path}: fp16 needs the TensorRT provider (this session runs on {provider}) or, on CUDA, "
            "an [fp16] file in the card; ask for fp32, int8 or auto"
        )
    return (
        f"{card.path}: lists no {precision} file (no [{precision}] table); make one with "
        f"`perception export --card {card.path} --{precision}`, or ask for fp32 or auto"
    )


def within_tolerance(card: ModelCard, listed: PrecisionFile) -> tuple[bool, str]:
    """Whether ``listed``'s measured AP is within its ``max_ap_drop`` of the card's FP32
    figures, on every figure measured on both (none measured: not within)."""
    fp32 = card.fp32_ap()
    common = sorted(set(fp32) & set(listed.ap))
    if not common:
        return False, f"{listed.precision}: no AP measured on it"
    worst = max(common, key=lambda k: fp32[k] - listed.ap[k])
    drop = fp32[worst] - listed.ap[worst]
    ok = drop <= listed.max_ap_drop + 1e-9
    note = f"{listed.precision}: {worst} {listed.ap[worst]:.3f} vs fp32 {fp32[worst]:.3f}"
    return ok, f"{note} (max drop {listed.max_ap_drop})"


def measured_ms(card: ModelCard, precision: str, provider: str, threads: int = 0) -> float:
    """The card's end-to-end median for ``precision`` on ``provider`` (rows with ``threads``
    preferred when given; of several, the last in the card: the newest, measured in the same
    run as the other precisions' last rows); ``inf`` when it has none."""
    rows = [r for r in card.latency if r.stage == "end_to_end" and r.provider == provider and r.precision == precision]
    same = [r for r in rows if r.threads == threads]
    rows = same or rows
    return rows[-1].median_ms if rows else math.inf


def _auto(card: ModelCard, provider: str, threads: int) -> PrecisionChoice:
    default = "fp16" if provider == TENSORRT else "fp32"
    candidates, notes = [], []
    for precision in PRECISIONS:
        file = _file(card, precision, provider)
        if file is None:
            continue
        listed = card.precisions.get(precision)
        if listed is not None and file is listed.file:
            ok, note = within_tolerance(card, listed)
            notes.append(note + ("" if ok else ": not taken"))
            if not ok:
                continue
        candidates.append((measured_ms(card, precision, provider, threads), precision != default, precision, file))
    if not candidates:
        raise CardError(_missing(card, "fp32", provider))
    ms, _, precision, file = min(candidates, key=lambda c: c[:3])
    why = f"fastest measured on {provider} ({ms:.1f} ms)" if math.isfinite(ms) else f"default on {provider}"
    return PrecisionChoice(precision, file, "auto: " + "; ".join([why, *notes]))


def choose_precision(card: ModelCard, requested: str, provider: str, threads: int = 0) -> PrecisionChoice:
    """The file and arithmetic for ``requested`` (one of :data:`REQUESTS`) on ``provider``;
    :class:`CardError` (one line) when the card has no file for it."""
    check_request(requested, f"{card.path}: precision")
    if requested == "auto":
        return _auto(card, provider, threads)
    file = _file(card, requested, provider)
    if file is None:
        raise CardError(_missing(card, requested, provider))
    return PrecisionChoice(requested, file, "asked for")
