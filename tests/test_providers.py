"""Execution providers: TensorRT > CUDA > CPU by availability, the CPU fallback said in one
log line, a provider a launch file asks for and cannot have is a clear error, the heartbeat
names provider, device and precision, and ``perception doctor`` exits non-zero when a launch
file's choices cannot be met."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest

from perception.cli import main
from perception.segmentation.providers import CPU, CUDA, TENSORRT, ProviderError, choose, with_options

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "yolact_fast.toml"


def test_preference_and_demands() -> None:
    assert choose((), [CPU, CUDA, TENSORRT]) == [TENSORRT, CUDA, CPU]
    assert choose((), [CPU]) == [CPU]
    assert choose((CUDA, CPU), [CPU, CUDA]) == [CUDA, CPU]
    with pytest.raises(
        ProviderError,
        match=r"asks for CUDAExecutionProvider, which this ONNX Runtime does not "
        r"have \(available: CPUExecutionProvider\); install the NVIDIA build",
    ):
        choose((CUDA,), [CPU])
    trt = dict(p for p in with_options([TENSORRT], "fp16") if isinstance(p, tuple))[TENSORRT]
    assert trt["trt_fp16_enable"] and trt["trt_engine_cache_enable"] and Path(trt["trt_engine_cache_path"]).is_dir()


def test_the_cpu_fallback_is_one_log_line_and_reaches_the_heartbeat(caplog: pytest.LogCaptureFixture) -> None:
    from perception.segmentation.segmenter_logic import SegmenterConfig, build_segmenter

    with caplog.at_level(logging.INFO):
        logic = build_segmenter(SegmenterConfig(policy="fast", fast=str(CARD), threads=1))
    said = [r.getMessage() for r in caplog.records]
    assert any("no GPU execution provider" in m and "models run on the CPU" in m for m in said), said
    assert any("on CPUExecutionProvider (device CPU, fp32" in m for m in said), said
    c = logic.counters()
    assert (c["fast_provider"], c["fast_device"], c["fast_precision"]) == (CPU, "CPU", "fp32")


def test_a_missing_provider_asked_for_is_an_error() -> None:
    from perception.segmentation.segmenter_logic import SegmenterConfig, build_segmenter

    with pytest.raises(ProviderError, match="segmenter.providers asks for CUDAExecutionProvider"):
        build_segmenter(SegmenterConfig(policy="fast", fast=str(CARD), providers=(CUDA,)))


def test_without_onnxruntime_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from perception.segmentation.providers import onnxruntime

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if neither extra were installed
    with pytest.raises(ProviderError, match=r"ONNX Runtime is not installed: `uv sync --extra cpu`"):
        onnxruntime()


def test_doctor_reports_and_exits_non_zero_on_unmet_launch_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from perception.synth import SynthConfig, write_drive

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "providers  " in out
    assert re.search(r"\n  yolact_fast +onnx ok; weights ok; runs on CPUExecutionProvider \(fp32, auto: ", out)
    assert "shared memory" in out and "no problems found" in out
    drive = tmp_path / "d.mcap"
    write_drive(SynthConfig(frames=2, width=64, height=48), drive)
    replay = ["--launch", str(ROOT / "launch" / "replay.yaml"), "--set", f"replay.drive={drive}"]
    assert main(["doctor", *replay]) == 0
    capsys.readouterr()
    assert main(["doctor", *replay, "--set", f"segmenter.providers=[{CUDA}]"]) == 1
    assert "asks for CUDAExecutionProvider" in capsys.readouterr().out
    assert (
        main(
            [
                "doctor",
                "--launch",
                str(ROOT / "launch" / "camera.yaml"),
                "--set",
                f"camera.source={tmp_path / 'no-such-video.mp4'}",
            ]
        )
        == 1
    )
    assert "camera source" in capsys.readouterr().out


def test_the_io_bound_path_gives_the_outputs_of_a_plain_run() -> None:
    """The GPU providers' path (I/O binding), run on the CPU: same outputs as session.run."""
    import numpy as np

    from perception.segmentation.providers import SessionRunner
    from perception.segmentation.runtime import YolactSegmenter

    seg = YolactSegmenter(CARD, threads=1)
    assert seg.runner.binding is False and seg.runner.device == "cpu"  # the CPU runs plainly
    blob = np.random.default_rng(0).random((1, 3, seg.card.input_height, seg.card.input_width), np.float32)
    plain = seg.runner.run({seg.input_name: blob})
    bound = SessionRunner(seg.session, binding=True).run({seg.input_name: blob})
    assert len(bound) == len(plain) == 4
    for a, b in zip(plain, bound, strict=True):
        np.testing.assert_array_equal(a, b)
