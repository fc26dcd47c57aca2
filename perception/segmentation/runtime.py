"""The torch-free runtime: ONNX Runtime sessions and the one-stage segmenter (the
two-stage one is in :mod:`.maskrcnn_runtime`, Ultralytics models in
:mod:`.ultralytics_adapter`; :mod:`.families` picks the one a card names).

Every segmenter follows :class:`Segmenter`: ``predict(image_bgr) -> Detections`` with boxes
and masks in the pixels of the image given. :func:`open_session` picks the execution
provider (TensorRT, then CUDA, then CPU, by availability) and logs one line naming it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from perception.bus.schema import Detections, Letterbox
from perception.geometry.letterbox import compose, letterbox, to_camera_xyxy
from perception.segmentation.card import CardError, ModelCard, load_card
from perception.segmentation.fast_nms import fast_nms_np
from perception.segmentation.mask_rescoring import MaskRescorer, proto_masks
from perception.segmentation.postprocess import make_detections, postprocess_config
from perception.segmentation.precision import choose_precision
from perception.segmentation.providers import (
    SessionRunner,
    choose,
    describe,
    log_fallback,
    onnxruntime,
    with_options,
)

log = logging.getLogger(__name__)

#: Output names of an exported one-stage model, in order.
YOLACT_OUTPUTS = ("boxes", "scores", "coefs", "protos")


class ModelFileError(RuntimeError):
    """A model file that is missing or that ONNX Runtime cannot load; names the file."""


class Segmenter(Protocol):
    """What the segmenter node calls: one frame in, its detections out.

    ``predict(image_bgr, transform=None)``: ``image_bgr`` is an ``(H, W, 3)`` uint8 frame.
    Without ``transform`` it is the camera image and boxes and masks come back in its pixels.
    With ``transform`` it is a frame the preprocess node already letterboxed, and
    ``transform`` maps it to camera pixels, where the results come back.
    """

    name: str
    card: ModelCard

    def predict(self, image_bgr: np.ndarray, transform: Letterbox | None = None) -> Detections: ...


class TwoStepSegmenter(Segmenter, Protocol):
    """A segmenter whose ``predict`` is ``predict_input(*network_input(image, transform))``:
    ``network_input`` makes the network's input from the frame (its pixels are not read
    after it), ``predict_input`` does the rest. The segmenter node reads a frame in shared
    memory in place and checks it was not overwritten right after ``network_input``, instead
    of copying it out first (:class:`~perception.segmentation.segmenter_logic.SegmenterLogic`).
    ``prepared_ms``: the time ``network_input`` took, for ``timings_ms`` and ``inference_ms``."""

    def network_input(
        self, image_bgr: np.ndarray, transform: Letterbox | None = None
    ) -> tuple[np.ndarray, Letterbox]: ...

    def predict_input(self, blob: np.ndarray, lb: Letterbox, prepared_ms: float = 0.0) -> Detections: ...


def check_bgr(image: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` is an ``(H, W, 3)`` uint8 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"predict expects an (H, W, 3) uint8 BGR image, got {got}")


def session_providers(providers: Sequence[str] | None = None) -> list[str]:
    """The providers a session opens with: ``providers`` (each must be available) or, when
    empty, the available ones by preference (logging once when no GPU provider is there)."""
    have = onnxruntime().get_available_providers()
    chosen = choose(tuple(providers or ()), have)
    if not providers:
        log_fallback(have)
    return chosen


def open_session(
    path: str | Path,
    threads: int = 0,
    providers: Sequence[str] | None = None,
    label: str = "",
    spin: bool = False,
    precision: str = "fp32",
    reason: str = "",
) -> Any:
    """An ONNX Runtime session on ``path``. ``threads``: intra-op threads (0: ORT default).
    ``providers``: the ones to use, each of which must be available (default: TensorRT >
    CUDA > CPU by availability; :mod:`.providers`). ``spin``: let idle intra-op threads
    spin-wait; off by default, since the node shares the CPU with the other nodes and its
    own NumPy post-processing, which spinning threads slow. ``precision``: what the file
    computes in (``fp16``: TensorRT's FP16 layers on; ``int8``: its INT8 ones), logged with
    ``reason`` and kept on the session as ``session.precision`` for the heartbeat.

    Raises :class:`ModelFileError` naming the file when it is missing or not a valid model,
    :class:`~perception.segmentation.providers.ProviderError` when a provider asked for is
    not there.
    """
    ort = onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    chosen = session_providers(providers)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        sess = ort.InferenceSession(str(path), opts, providers=with_options(chosen, precision))
    except Exception as e:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        raise ModelFileError(f"model file {str(path)!r} could not be loaded by ONNX Runtime: {e}") from None
    d = describe(sess, precision)
    sess.precision = d["precision"]  # type: ignore[attr-defined]  # the pybind session takes attributes
    log.info(
        "segmenter %s: ONNX Runtime %s on %s (device %s, %s%s, %s intra-op threads) from %s",
        label or path.stem,
        ort.__version__,
        d["provider"],
        d["device"],
        d["precision"],
        f" ({reason})" if reason else "",
        threads or "default",
        path.name,
    )
    return sess


def card_session(
    card: ModelCard | str | Path,
    family: str,
    threads: int = 0,
    providers: Sequence[str] | None = None,
    precision: str = "fp32",
) -> tuple[ModelCard, Any]:
    """The card (loaded if given as a path) and an ONNX Runtime session on its verified file
    for ``precision`` (``fp32``, ``fp16``, ``int8`` or ``auto``:
    :mod:`~perception.segmentation.precision`); :class:`CardError` when the card is of
    another family or lacks the file."""
    card = card if isinstance(card, ModelCard) else load_card(card)
    if card.family != family:
        raise CardError(f"{card.path}: family {card.family!r} is not a {family} model")
    chosen = session_providers(providers)
    choice = choose_precision(card, precision, chosen[0], threads)
    file = choice.file.verify()
    return card, open_session(file, threads, chosen, card.name, precision=choice.precision, reason=choice.reason)


class LetterboxSegmenter:
    """What the ONNX segmenters share: the network input made from a frame (letterboxed to the
    card's input size), the graph run on it, and :meth:`predict` as the two steps of
    :class:`TwoStepSegmenter`. A subclass's constructor calls :meth:`_open` and sets ``cfg``
    (with ``pad_value``); the subclass implements ``predict_input``."""

    card: ModelCard
    cfg: Any
    runner: SessionRunner
    input_name: str = "images"

    def _open(
        self,
        card: ModelCard | str | Path,
        family: str,
        threads: int,
        providers: Sequence[str] | None,
        precision: str,
        outputs: tuple[str, ...],
        inputs: tuple[str, ...] | None = None,
    ) -> None:
        """Open the card's verified file for ``precision`` (:func:`card_session`) and check
        the graph's output names (and input names, when given): :class:`ModelFileError`
        naming the file and what a ``family`` export has. Sets ``card``, ``session``,
        ``name``, ``input_name``, ``runner`` and an empty ``timings_ms``."""
        self.card, self.session = card_session(card, family, threads, providers, precision)
        self.name = self.card.name
        got_in = tuple(i.name for i in self.session.get_inputs())
        got_out = tuple(o.name for o in self.session.get_outputs())
        if got_out != outputs or (inputs is not None and got_in != inputs):
            want = f"outputs {outputs}" if inputs is None else f"inputs {inputs} and outputs {outputs}"
            raise ModelFileError(
                f"{self.card.onnx.path}: inputs {got_in} and outputs {got_out}, expected {want} (a {family} export)"
            )
        self.input_name = got_in[0]
        self.runner = SessionRunner(self.session)
        self.timings_ms: dict[str, float] = {}

    def run_network(self, blob: np.ndarray) -> list[np.ndarray]:
        """Raw graph outputs for a ``(1, 3, H, W)`` float32 RGB [0, 1] blob."""
        return self.runner.run({self.input_name: blob})

    def network_input(self, image_bgr: np.ndarray, transform: Letterbox | None = None) -> tuple[np.ndarray, Letterbox]:
        """The ``(1, 3, H, W)`` float32 network input for a frame and the transform to camera
        pixels (see :class:`TwoStepSegmenter`)."""
        return network_blob(image_bgr, transform, self.card.input_width, self.card.input_height, self.cfg.pad_value)

    def predict(self, image_bgr: np.ndarray, transform: Letterbox | None = None) -> Detections:
        t0 = time.perf_counter()
        blob, lb = self.network_input(image_bgr, transform)
        return self.predict_input(blob, lb, (time.perf_counter() - t0) * 1e3)

    def predict_input(self, blob: np.ndarray, lb: Letterbox, prepared_ms: float = 0.0) -> Detections:
        raise NotImplementedError


class YolactSegmenter(LetterboxSegmenter):
    """The fast one-stage model exported by ``perception export``, run by ONNX Runtime.

    Pipeline: letterbox to the card's input size, network (graph outputs ``boxes`` (1, A, 4)
    xyxy model pixels, ``scores`` (1, A, C) sigmoid, ``coefs`` (1, A, k), ``protos``
    (1, Hp, Wp, k)), Fast NMS, YOLACT++ mask re-scoring when the card has a ``[mask_iou]``
    graph (:mod:`.mask_rescoring`; its time counted in ``nms``), mask assembly in NumPy,
    boxes mapped to camera pixels.
    """

    def __init__(
        self,
        card: ModelCard | str | Path,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        precision: str = "fp32",
        **overrides: object,
    ) -> None:
        self._open(card, "yolact", threads, providers, precision, YOLACT_OUTPUTS)
        self.cfg = postprocess_config(self.card, **overrides)
        self.rescorer = self._rescorer(threads, providers)

    def _rescorer(self, threads: int, providers: Sequence[str] | None) -> MaskRescorer | None:
        """The card's ``[mask_iou]`` re-scoring graph (its sha256 checked), unless the card
        has none or ``[postprocess] mask_rescoring`` is off."""
        if self.card.mask_iou is None or not self.cfg.mask_rescoring:
            return None
        path = self.card.mask_iou.verify()
        return MaskRescorer(open_session(path, threads, providers, f"{self.card.name} mask re-scoring"))

    def predict_input(self, blob: np.ndarray, lb: Letterbox, prepared_ms: float = 0.0) -> Detections:
        """Detections from a network input of :meth:`network_input`."""
        t1 = time.perf_counter()
        boxes, scores, coefs, protos = self.run_network(blob)
        t2 = time.perf_counter()
        index, cls, score = fast_nms_np(boxes[0], scores[0], self.cfg.nms())
        stride = self.card.input_height / protos.shape[1]
        if self.rescorer is not None and len(index):
            masks = proto_masks(protos[0], coefs[0][index], boxes[0][index], stride)
            order, score = self.rescorer.rescore(masks, cls, score)
            index, cls = index[order], cls[order]
        t3 = time.perf_counter()
        det = make_detections(
            self.name,
            lb,
            to_camera_xyxy(boxes[0][index], lb),
            [self.card.class_ids[c] for c in cls],
            score,
            protos[0],
            coefs[0][index],
            stride,
            self.cfg.mask_threshold,
        )
        t4 = time.perf_counter()
        self.timings_ms = {
            "preprocess": prepared_ms,
            "network": (t2 - t1) * 1e3,
            "nms": (t3 - t2) * 1e3,
            "masks": (t4 - t3) * 1e3,
        }
        return Detections(
            det.model, det.image_width, det.image_height, det.instances, inference_ms=prepared_ms + (t4 - t1) * 1e3
        )


def model_input(
    image_bgr: np.ndarray, transform: Letterbox | None, width: int, height: int, pad_value: int
) -> tuple[np.ndarray, Letterbox]:
    """The ``(height, width, 3)`` network input for ``image_bgr`` and the transform from it to
    camera pixels. A frame already letterboxed to that size (``transform`` given) is used as
    it is; any other is letterboxed (again), the transforms composed."""
    if transform is not None and image_bgr.shape[:2] == (height, width):
        return image_bgr, transform
    img, lb = letterbox(image_bgr, width, height, pad_value)
    return img, (compose(lb, transform) if transform is not None else lb)


def network_blob(
    image_bgr: np.ndarray, transform: Letterbox | None, width: int, height: int, pad_value: int
) -> tuple[np.ndarray, Letterbox]:
    """The ``(1, 3, height, width)`` float32 RGB [0, 1] network input for a BGR frame (see
    :func:`model_input`) and the transform from it to camera pixels."""
    check_bgr(image_bgr)
    img, lb = model_input(image_bgr, transform, width, height, pad_value)
    return cv2.dnn.blobFromImage(img, 1.0 / 255.0, swapRB=True), lb
