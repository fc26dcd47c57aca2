"""What ``perception export --int8`` is asked for (no heavy imports: the CLI reads it for its
help text; :mod:`perception.train.quantize` does the work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: calibration frames when none are named: real streets and our synthetic drives
DEFAULT_CALIB = "yolo-seg:../shared/data/cityscapes/train,synth"
#: the operators quantized: the ones that hold the arithmetic, and the activations after
#: them, so that the quantizer folds each into its convolution (left in FP32, every ReLU6 of
#: EfficientNet-Lite cost an INT8 -> FP32 -> INT8 round trip, and INT8 ran at 0.74x FP32
#: instead of 0.35x); the rest (box decoding, NMS, RoIAlign) stays FP32
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Clip", "Relu")
#: how activation ranges are calibrated
METHODS = ("minmax", "entropy")


@dataclass(frozen=True)
class QuantizeOptions:
    """``calib``: data specs of the calibration frames (``synth`` = synthetic drives);
    ``frames``: how many, spread evenly over the specs; ``fp32_nodes``: regular expressions
    of node names kept in FP32 (``None``: the card's ``[int8] fp32_nodes``); ``method``:
    ``minmax`` or ``entropy``; ``cache``: a JSON file of the calibrated ranges, reused when it
    exists (re-quantizing with other FP32 nodes then skips the calibration); ``reduce_range``:
    7-bit weights, for x86 CPUs without VNNI (AVX2 only), whose u8 x s8 instruction
    (``vpmaddubsw``) saturates its 16-bit sums with full 8-bit weights: measured on such a CPU
    (a tiny random model), the largest output error fell from 10.5 % to 0.8 % of its range."""

    calib: str = DEFAULT_CALIB
    frames: int = 128
    fp32_nodes: tuple[str, ...] | None = None
    method: str = "minmax"
    cache: Path | None = None
    seed: int = 7
    reduce_range: bool = False
