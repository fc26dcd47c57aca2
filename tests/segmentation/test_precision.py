"""INT8 files and the choice of precision: ``perception export --int8`` (static quantization
with calibration frames), the card's ``[int8]`` table, ``precision: fp32 | int8 | auto`` at
load, and the errors for a precision the card lacks or a file that does not match."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from perception.segmentation.card import (
    CardError,
    LatencyEntry,
    append_latency_row,
    load_card,
    set_card_value,
    unset_card_value,
)
from perception.segmentation.precision import choose_precision
from perception.segmentation.providers import CPU, TENSORRT

from .conftest import write_card

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-stage card (random weights) with its FP32 and INT8 files."""
    from perception.train.export import export_card
    from perception.train.quantize import quantize_card
    from perception.train.quantize_options import QuantizeOptions

    folder = tmp_path_factory.mktemp("int8")
    card = write_card(folder)
    export_card(card, random_init=True)
    # 7-bit weights: the same small error on any x86 CPU (with full 8-bit weights a CPU
    # without VNNI saturates: 10.5 % of the prototypes' range, against 3.5 % with VNNI)
    quantize_card(card, QuantizeOptions(calib="synth", frames=6, reduce_range=True))
    return card


def copy_of(card: Path, folder: Path) -> Path:
    for f in card.parent.iterdir():
        shutil.copy(f, folder / f.name)
    return folder / card.name


def frame() -> np.ndarray:
    from perception.synth import DriveSimulator, SynthConfig

    sim = DriveSimulator(SynthConfig(seed=4, frames=3, width=320, height=180))
    sim.next()
    return sim.next().image


def test_int8_outputs_match_fp32_on_a_frame(quantized: Path) -> None:
    """The INT8 network's outputs on a synthetic frame stay within 8 % of each output's
    FP32 range (boxes, coefficients, prototypes; measured: at most 3.5 %), its scores within
    0.005 (measured: 0.0003), and its file is recorded in the card."""
    import onnx

    from perception.segmentation.runtime import YolactSegmenter

    card = load_card(quantized)
    assert card.precisions["int8"].file.path.name == "tiny.int8.onnx"
    assert "6 frames of synth" in card.precisions["int8"].calibration
    assert "in 7 bits (reduce range)" in card.precisions["int8"].calibration
    fp32 = YolactSegmenter(card, threads=1, precision="fp32")
    int8 = YolactSegmenter(card, threads=1, precision="int8")
    assert fp32.session.precision == "fp32" and int8.session.precision == "int8"
    blob, _ = fp32.network_input(frame())
    for name, a, b in zip(
        ("boxes", "scores", "coefs", "protos"), fp32.run_network(blob), int8.run_network(blob), strict=True
    ):
        span = float(a.max() - a.min()) or 1.0
        err = float(np.abs(a - b).max()) / span
        print(f"{name}: INT8 - FP32 at most {err:.2%} of the FP32 range")
        if name == "scores":
            # a fresh head's scores all sit at the focal-loss prior (a range of ~0.003 here), so
            # their error is judged as what it is, probability: how far it moves the score
            # threshold (8.7 % of that range on a CPU without VNNI, 3.5 % with it)
            assert float(np.abs(a - b).max()) < 0.005, f"scores: INT8 differs from FP32 by {np.abs(a - b).max():.4f}"
        else:
            assert err < 0.08, f"{name}: INT8 differs from FP32 by {err:.1%} of its range"
    # and it is a different, integer model, not the FP32 file again
    graph = onnx.load(str(card.precisions["int8"].file.path)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 10


def test_asking_for_a_precision_the_card_lacks_fails_at_load(tmp_path: Path, quantized: Path) -> None:
    from perception.segmentation.segmenter_logic import SegmenterConfig, build_segmenter

    card = copy_of(quantized, tmp_path)
    text = card.read_text()
    card.write_text(text[: text.index("[int8]")])  # the card without its [int8] table
    with pytest.raises(CardError) as e:
        build_segmenter(SegmenterConfig(policy="fast", fast=str(card), fast_precision="int8", threads=1))
    message = str(e.value)
    assert "\n" not in message and str(card) in message and "no int8 file" in message and "--int8" in message
    with pytest.raises(CardError, match="fp16 needs the TensorRT provider"):
        build_segmenter(SegmenterConfig(policy="fast", fast=str(card), fast_precision="fp16", threads=1))


def test_int8_file_whose_sha256_does_not_match_fails_clearly(tmp_path: Path, quantized: Path) -> None:
    from perception.segmentation.families import load_segmenter

    card = copy_of(quantized, tmp_path)
    set_card_value(card, "int8", "sha256", "0" * 64)
    with pytest.raises(CardError, match=r"\[int8\] file .*tiny.int8.onnx.* sha256 mismatch"):
        load_segmenter(card, threads=1, precision="int8")
    load_segmenter(card, threads=1, precision="fp32")  # the FP32 file is still fine


def test_unknown_precision_in_a_launch_file_is_refused() -> None:
    from perception.segmentation.segmenter_logic import SegmenterConfig

    with pytest.raises(ValueError, match="segmenter.accurate_precision must be one of auto, fp32, fp16, int8"):
        SegmenterConfig(accurate_precision="int4").validate()


def with_figures(card: Path, int8_ap: float | None, fp32_ms: float | None, int8_ms: float | None) -> Path:
    """The card with an FP32 mask AP of 0.30, the INT8 AP given, and CPU latency rows."""
    set_card_value(card, "accuracy", "mask_ap", "0.30", create=True)
    if int8_ap is not None:
        set_card_value(card, "int8", "mask_ap", int8_ap)
    for precision, ms in (("fp32", fp32_ms), ("int8", int8_ms)):
        if ms is not None:
            append_latency_row(card, LatencyEntry("test", CPU, 1, ms, ms * 1.2, precision=precision))
    return card


@pytest.mark.parametrize(
    ("int8_ap", "fp32_ms", "int8_ms", "provider", "expected"),
    [
        (0.29, 40.0, 20.0, CPU, "int8"),  # within 1.5 points and faster
        (0.28, 40.0, 20.0, CPU, "fp32"),  # 2 points below: not taken
        (None, 40.0, 20.0, CPU, "fp32"),  # never measured: not taken
        (0.30, 20.0, 40.0, CPU, "fp32"),  # INT8 measured slower than FP32: the faster one
        (0.29, None, None, CPU, "fp32"),  # nothing measured on this provider: FP32 on the CPU
        (0.29, None, None, TENSORRT, "fp16"),  # and FP16 on TensorRT
    ],
)
def test_auto_takes_the_fastest_within_tolerance(
    tmp_path: Path,
    quantized: Path,
    int8_ap: float | None,
    fp32_ms: float | None,
    int8_ms: float | None,
    provider: str,
    expected: str,
) -> None:
    card = with_figures(copy_of(quantized, tmp_path), int8_ap, fp32_ms, int8_ms)
    choice = choose_precision(load_card(card), "auto", provider, threads=1)
    assert choice.precision == expected, choice.reason
    assert choice.reason.startswith("auto:")


def test_auto_compares_the_newest_rows(tmp_path: Path, quantized: Path) -> None:
    """An old FP32 row from a quieter machine does not outvote the rows measured together."""
    card = with_figures(copy_of(quantized, tmp_path), 0.295, 10.0, None)
    with_figures(card, 0.295, 40.0, 20.0)
    assert [r.median_ms for r in load_card(card).latency if r.precision == "fp32"] == [10.0, 40.0]
    assert choose_precision(load_card(card), "auto", CPU, 1).precision == "int8"


def test_max_ap_drop_is_the_cards_own(tmp_path: Path, quantized: Path) -> None:
    card = with_figures(copy_of(quantized, tmp_path), 0.27, 40.0, 20.0)
    assert choose_precision(load_card(card), "auto", CPU, 1).precision == "fp32"
    set_card_value(card, "int8", "max_ap_drop", 0.05)
    assert choose_precision(load_card(card), "auto", CPU, 1).precision == "int8"


def test_auto_in_the_node_loads_the_int8_file_and_its_latency_row(tmp_path: Path, quantized: Path) -> None:
    """The segmenter node with ``fast_precision: auto`` runs the INT8 file the card measured
    faster, says so in its counters, and seeds its latency policy with the INT8 row."""
    from perception.segmentation.segmenter_logic import SegmenterConfig, build_segmenter

    card = with_figures(copy_of(quantized, tmp_path), 0.295, 40.0, 20.0)
    logic = build_segmenter(SegmenterConfig(policy="fast", fast=str(card), threads=1, providers=(CPU,)))
    assert logic.counters()["fast_precision"] == "int8"
    assert logic.policy.estimators["fast"].seed.p95_ms == pytest.approx(24.0)
    logic = build_segmenter(SegmenterConfig(policy="fast", fast=str(card), fast_precision="fp32", threads=1))
    assert logic.counters()["fast_precision"] == "fp32"
    assert logic.policy.estimators["fast"].seed.p95_ms == pytest.approx(48.0)


def test_card_values_are_added_and_removed_in_their_table(tmp_path: Path) -> None:
    card = write_card(tmp_path)
    set_card_value(card, "int8", "file", "tiny.int8.onnx", create=True)
    set_card_value(card, "int8", "sha256", "")
    set_card_value(card, "int8", "mask_ap", 0.25)
    set_card_value(card, "int8", "fp32_nodes", ["head/cls", 'quote"d'])
    text = card.read_text()
    assert text.index('file = "tiny.int8.onnx"') < text.index("mask_ap = 0.25")  # appended in order
    assert 'fp32_nodes = ["head/cls", "quote\\"d"]' in text
    with pytest.raises(CardError, match="no \\[int9\\] table"):
        set_card_value(card, "int9", "x", 1)
    assert unset_card_value(card, "int8", "mask_ap") and not unset_card_value(card, "int8", "mask_ap")
    assert "mask_ap" not in card.read_text()
