"""Static INT8 quantization of a card's ONNX file (``perception export --card C --int8``).

ONNX Runtime's own quantizer (:func:`onnxruntime.quantization.quantize_static`) writes a QDQ
model: INT8 weights per output channel (symmetric), INT8 activations whose ranges come from
running the FP32 model over calibration frames, made exactly as the runtime makes its network
input (letterbox to the card's size, :func:`~perception.segmentation.runtime.network_blob`).
ONNX Runtime runs it with its integer kernels on the CPU (VNNI where the CPU has it) and
TensorRT builds an INT8 engine from it. Only the layers that carry the compute are quantized
(convolutions and matrix products, and the activations folded into them); the nodes whose
names match the card's ``[int8] fp32_nodes`` patterns stay in FP32, for layers that measure
badly in INT8 (``perception eval --precision int8`` with and without them; none of the bundled
cards needed any: their INT8 files score within 1 AP point of FP32).

The card's ``[int8]`` table records the file, its sha256, the calibration and the FP32
nodes; the AP and latency measured on it are added by whoever measures them.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from perception.segmentation.card import CardError, ModelCard, load_card, set_card_value, sha256_of, unset_card_value
from perception.segmentation.runtime import network_blob
from perception.synth import SynthConfig, frames
from perception.train.datasets import SourceSpec, parse_specs, read_set
from perception.train.errors import DataError
from perception.train.labelled import ClassMap
from perception.train.quantize_options import METHODS, QUANTIZED_OPS, QuantizeOptions

log = logging.getLogger(__name__)

CALIBRATORS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}


def synth_frames(count: int, seed: int, size: tuple[int, int] = (640, 360)) -> Iterator[np.ndarray]:
    """``count`` BGR frames of synthetic drives (one every 8 frames, a new drive and
    scenario every 5 frames taken), seeds away from the held-out evaluation's."""
    scenarios, per_drive = ("urban", "highway", "crowd"), 5
    for drive in range((count + per_drive - 1) // per_drive):
        cfg = SynthConfig(
            width=size[0],
            height=size[1],
            frames=per_drive * 8,
            seed=90_000 + seed * 1000 + drive,
            scenario=scenarios[drive % len(scenarios)],
        )
        for frame in islice(frames(cfg), 7, None, 8):
            if count == 0:
                return
            count -= 1
            yield frame.image


def calibration_frames(specs: Sequence[SourceSpec], count: int, seed: int) -> Iterator[np.ndarray]:
    """``count`` BGR frames from ``specs``, shared between them by their weights (file sets:
    evenly spaced images; ``synth``: :func:`synth_frames`)."""
    weights = np.array([s.weight for s in specs], float)
    shares = np.floor(count * weights / weights.sum()).astype(int)
    shares[: count - shares.sum()] += 1
    class_map = ClassMap({})
    for spec, n in zip(specs, shares, strict=True):
        if spec.kind == "synth":
            yield from synth_frames(int(n), seed)
        elif spec.kind in ("yolo-seg", "coco", "drive"):
            for image in read_set([spec], class_map, limit=int(n)):
                yield image.load()
        else:
            raise DataError(f"calibration source {spec.kind!r}: expected synth, yolo-seg:DIR, coco:FILE or drive:FILE")


class BlobReader(CalibrationDataReader):
    """The calibration frames as the network's feeds (``images`` and, for a two-stage
    graph, its ``score_threshold`` input)."""

    def __init__(self, card: ModelCard, frames: Iterator[np.ndarray], input_names: Sequence[str]) -> None:
        self.card, self.frames, self.input_names = card, frames, tuple(input_names)
        # only the letterbox padding and the two-stage graph's threshold input are read here:
        # any family's [postprocess] (a SOLOv2 card's has no NMS IoU) has these two keys
        self.pad_value = int(card.postprocess.get("pad_value", 114))
        self.score_threshold = float(card.postprocess.get("score_threshold", 0.3))
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self.frames, None)
        if frame is None:
            return None
        self.count += 1
        blob, _ = network_blob(frame, None, self.card.input_width, self.card.input_height, self.pad_value)
        feeds = {self.input_names[0]: blob}
        if "score_threshold" in self.input_names:
            feeds["score_threshold"] = np.asarray(self.score_threshold, np.float32)
        return feeds


def matching_nodes(model: onnx.ModelProto, patterns: Sequence[str]) -> list[str]:
    """Names of the quantizable nodes matching any of ``patterns`` (``re.search``);
    :class:`CardError` for a pattern that matches none (a stale or mistyped name)."""
    names = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    out = []
    for pattern in patterns:
        hits = [n for n in names if re.search(pattern, n)]
        if not hits:
            raise CardError(f"fp32_nodes pattern {pattern!r} matches no {'/'.join(QUANTIZED_OPS)} node of the model")
        out += [h for h in hits if h not in out]
    return out


def int8_path(card: ModelCard) -> Path:
    """The card's ``[int8]`` file, or ``<onnx stem>.int8.onnx`` beside the FP32 one."""
    if "int8" in card.precisions:
        return card.precisions["int8"].file.path
    assert card.onnx is not None
    return card.onnx.path.with_name(card.onnx.path.stem + ".int8.onnx")


def quantize_card(card_path: str | Path, options: QuantizeOptions | None = None) -> Path:
    """Quantize the card's verified FP32 ONNX to INT8 (QDQ) and record it in the card's
    ``[int8]`` table (file, sha256, calibration, FP32 nodes). Returns the INT8 file."""
    options = options or QuantizeOptions()
    card = load_card(card_path)
    if card.onnx is None:
        raise CardError(f"{card.path}: no [onnx] table; export the FP32 model first")
    if options.method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {options.method!r}")
    fp32 = card.onnx.verify()
    listed = card.precisions.get("int8")
    patterns = options.fp32_nodes if options.fp32_nodes is not None else (listed.fp32_nodes if listed else ())
    out = int8_path(card)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=card.family == "maskrcnn")
        model = onnx.load(str(prepared))
        keep = matching_nodes(model, patterns)
        reader = BlobReader(
            card, calibration_frames(parse_specs(options.calib), options.frames, options.seed), _inputs(model)
        )
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            reduce_range=options.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            calibrate_method=CALIBRATORS[options.method],
            # (no CalibMaxIntermediateOutputs: in ONNX Runtime 1.31 it drops each full batch of
            # ranges instead of merging it; MinMax keeps two scalars a tensor a frame anyway)
            calibration_cache_path=options.cache,
        )
    _record(card, out, options, patterns, reader.count, len(keep))
    return out


def _inputs(model: onnx.ModelProto) -> list[str]:
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def _record(
    card: ModelCard, out: Path, options: QuantizeOptions, patterns: Sequence[str], frames: int, kept: int
) -> None:
    digest = sha256_of(out)
    calibration = (
        f"{frames} frames of {options.calib} ({options.method}; weights per channel"
        f"{' in 7 bits (reduce range)' if options.reduce_range else ''}, activations per tensor; "
        f"{kept} nodes kept in FP32)"
    )
    set_card_value(card.path, "int8", "file", out.name, create=True)
    set_card_value(card.path, "int8", "sha256", digest)
    set_card_value(card.path, "int8", "calibration", calibration)
    set_card_value(card.path, "int8", "fp32_nodes", list(patterns))
    for key in card.precisions["int8"].ap if "int8" in card.precisions else ():
        unset_card_value(card.path, "int8", key)  # measured on the previous file
    log.info("quantized %s to %s (sha256 %s): %s", card.name, out, digest[:12], calibration)
