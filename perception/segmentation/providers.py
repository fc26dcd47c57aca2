"""Which ONNX Runtime execution provider runs a model, and with which options (no torch).

Preference: TensorRT (FP16, an engine cache so that the first start builds the engine and
later starts load it), then CUDA, then the CPU, among what the installed ONNX Runtime offers
(``--extra cpu``: the CPU build; ``--extra gpu``: the NVIDIA build with its CUDA and cuDNN
wheels). A launch file may name the providers instead (``segmenter.providers``); then each
one named must be available, and a missing one is an error that says what to install.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PREFERENCE = (TENSORRT, CUDA, CPU)
#: TensorRT's engines are built on first use and kept here (``PERCEPTION_TRT_CACHE`` moves it)
TRT_CACHE = Path(os.environ.get("PERCEPTION_TRT_CACHE", Path.home() / ".cache" / "perception" / "tensorrt"))


class ProviderError(RuntimeError):
    """ONNX Runtime is missing, or a provider a launch file asks for is not available."""


def onnxruntime() -> Any:
    """The ``onnxruntime`` module; :class:`ProviderError` saying what to install when
    neither build is."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ProviderError(
            "ONNX Runtime is not installed: `uv sync --extra cpu` (or `pip install "
            "'perception[cpu]'`), or `--extra gpu` for the NVIDIA build"
        ) from None
    return ort


def available() -> list[str]:
    return list(onnxruntime().get_available_providers())


def choose(requested: Sequence[str] = (), have: Sequence[str] | None = None) -> list[str]:
    """The providers to open a session with, in order: ``requested`` (each must be in
    ``have``, the available ones) or, when empty, the available ones in the order TensorRT >
    CUDA > CPU. Raises :class:`ProviderError` naming a requested provider that is missing."""
    have = list(available() if have is None else have)
    if requested:
        missing = [p for p in requested if p not in have]
        if missing:
            hint = (
                "install the NVIDIA build (--extra gpu, and --extra tensorrt for TensorRT) on a machine with an "
                "NVIDIA GPU"
                if any(p in (TENSORRT, CUDA) for p in missing)
                else "check the name"
            )
            raise ProviderError(
                f"segmenter.providers asks for {', '.join(missing)}, which this ONNX Runtime does not "
                f"have (available: {', '.join(have)}); {hint}, or leave providers empty to use what "
                f"is there"
            )
        return list(requested)
    chosen = [p for p in PREFERENCE if p in have]
    return chosen or [CPU]


def with_options(providers: Sequence[str], precision: str) -> list[str | tuple[str, dict[str, Any]]]:
    """Providers with their options for ``InferenceSession``: TensorRT with its engine cache,
    its FP16 layers on for ``precision`` fp16 and its INT8 ones for int8 (a QDQ file: the
    scales are in the graph, TensorRT's explicit quantization, so no calibration table);
    CUDA with the cuDNN convolution search done once per shape."""
    out: list[str | tuple[str, dict[str, Any]]] = []
    for p in providers:
        if p == TENSORRT:
            TRT_CACHE.mkdir(parents=True, exist_ok=True)
            out.append(
                (
                    p,
                    {
                        "trt_fp16_enable": precision == "fp16",
                        "trt_int8_enable": precision == "int8",
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(TRT_CACHE),
                        "trt_timing_cache_enable": True,
                    },
                )
            )
        elif p == CUDA:
            out.append((p, {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}))
        else:
            out.append(p)
    return out


def describe(session: Any, precision: str | None = None) -> dict[str, str]:
    """Provider, device and precision of an open session (for logs and heartbeats):
    ``precision`` as the session was opened with, else the attribute that
    :func:`~perception.segmentation.runtime.open_session` sets, else FP32."""
    provider = session.get_providers()[0]
    device = onnxruntime().get_device() if provider != CPU else "CPU"
    return {"provider": provider, "device": device, "precision": precision or getattr(session, "precision", "fp32")}


def log_fallback(have: Sequence[str]) -> None:
    if CUDA not in have and TENSORRT not in have:
        log.info(
            "no GPU execution provider in this ONNX Runtime (%s): the models run on the CPU; install "
            "--extra gpu on a machine with an NVIDIA GPU for CUDA and TensorRT",
            ", ".join(have),
        )


class SessionRunner:
    """Runs a session. On a GPU provider through ONNX Runtime's I/O binding: the frame is
    copied to the device once, as an ``OrtValue``, and the outputs come back in one copy
    (the post-processing that needs them is NumPy on the host); on the CPU, plain
    ``session.run``. ``binding`` forces the bound path (tests run it on the CPU)."""

    def __init__(self, session: Any, binding: bool | None = None) -> None:
        self.session = session
        provider = session.get_providers()[0]
        self.device = "cuda" if provider in (CUDA, TENSORRT) else "cpu"
        self.binding = provider in (CUDA, TENSORRT) if binding is None else binding
        self.outputs = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        if not self.binding:
            return self.session.run(None, feeds)
        ort = onnxruntime()
        io = self.session.io_binding()
        for name, array in feeds.items():
            io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self.device, 0))
        for name in self.outputs:
            io.bind_output(name, "cpu")
        self.session.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()
