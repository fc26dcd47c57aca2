"""The wire contract: the topic table and every message type, in one place (the msgpack
codec is :mod:`perception.bus.codec`).

Every message on the bus is an :class:`Envelope` encoded with msgpack (plain maps, lists,
strings and numbers; nothing that executes code on decode). Frames travel as a multipart
ZeroMQ message ``[topic, envelope, pixels]`` whose envelope payload is a :class:`FrameHeader`;
all other topics are ``[topic, envelope]``.

Per-instance field contract (detectron2 style), shared by :class:`Detections`,
:class:`Tracks` and :class:`GroundTruth`:

- ``box_xyxy``: ``(x0, y0, x1, y1)`` float pixels in the original camera image (the
  undistorted camera image when the preprocess node has a ``calib:`` file: same size,
  camera matrix from its ``projection_matrix``; see :mod:`perception.calibration.undistort`);
- ``class_id``: index into :data:`perception.bus.classes.CLASSES`;
- ``score``: float in ``[0, 1]``;
- ``mask``: COCO run-length encoding as pycocotools writes it (:class:`Rle`), or ``None``.

Encoding and validation use msgspec (typed msgpack decode with clear error paths) rather
than hand-written checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

from perception.bus.rle_codec import validate_rle

#: what msgspec raises on bytes that are not a valid message: a ``str`` field that is not
#: UTF-8 raises UnicodeDecodeError rather than msgspec.DecodeError (found by fuzzing)
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)

SCHEMA_VERSION = 1

#: Upper bounds enforced on decode, so a hostile or corrupt message cannot make a node
#: allocate without limit.
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024
MAX_INSTANCES = 4096
MAX_TEXT = 4096
MAX_RLE_COUNTS = 16 * 1024 * 1024
MAX_PIXELS_BYTES = 8192 * 8192 * 4

Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Box = tuple[float, float, float, float]


class SchemaError(ValueError):
    """A message or configuration does not follow the wire contract."""


class MalformedMessage(SchemaError):
    """Bytes that are not a valid message of the expected type."""


class WrongSchemaVersion(SchemaError):
    """A message from a different schema version."""


class UnknownTopic(SchemaError):
    """A topic name that is not in :data:`TOPICS`."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Source:
    """The camera frame a message derives from; travels end to end."""

    camera_id: Text
    frame_seq: int
    capture_ns: int


@dataclass(frozen=True)
class Rle:
    """COCO compressed RLE exactly as ``pycocotools.mask.encode`` writes it.

    ``size`` is ``[height, width]``; ``counts`` is the compressed string.
    """

    size: tuple[int, int]
    counts: Annotated[str, msgspec.Meta(max_length=MAX_RLE_COUNTS)]

    def __post_init__(self) -> None:
        pending = _unchecked_rles.get()
        if pending is not None:  # checked with the rest of its message, in one pass
            pending.append(self)
        else:
            validate_rle(self.size, self.counts)  # a bad RLE must never reach pycocotools

    def to_coco(self) -> dict[str, object]:
        return {"size": [int(self.size[0]), int(self.size[1])], "counts": self.counts.encode("ascii")}

    @classmethod
    def trusted(cls, rle: dict[str, object]) -> Rle:
        """The record of an RLE that pycocotools made in this process, without the check
        on construction (which guards against other processes' input). Never for data that
        came over the wire or from a file."""
        counts = rle["counts"]
        size = rle["size"]
        out = object.__new__(cls)
        object.__setattr__(out, "size", (int(size[0]), int(size[1])))  # type: ignore[index]
        object.__setattr__(out, "counts", counts.decode("ascii") if isinstance(counts, bytes) else str(counts))
        return out

    @classmethod
    def from_coco(cls, rle: dict[str, object]) -> Rle:
        counts = rle["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        size = rle["size"]
        return cls(size=(int(size[0]), int(size[1])), counts=str(counts))  # type: ignore[index]


#: the RLEs made since :func:`rles_checked_together` began, in this thread or task (a scope
#: of one decode call, not configuration: outside it every Rle is checked as it is made)
_unchecked_rles: ContextVar[list[Rle] | None] = ContextVar("unchecked_rles", default=None)


@contextmanager
def rles_checked_together() -> Iterator[list[Rle]]:
    """Within the block, each :class:`Rle` made is collected rather than checked; the caller
    must check them all (:func:`perception.bus.rle_codec.validate_rles`) before using any.
    One pass over a message's masks costs a fraction of one check per mask."""
    pending: list[Rle] = []
    token = _unchecked_rles.set(pending)
    try:
        yield pending
    finally:
        _unchecked_rles.reset(token)


@dataclass(frozen=True)
class Letterbox:
    """Maps model-input pixels back to camera pixels: ``cam = (model - pad) / scale``."""

    scale: float
    pad_x_px: float
    pad_y_px: float
    src_width: int
    src_height: int


Encoding = Literal["bgr8", "rgb8", "mono8"]


@dataclass(frozen=True)
class ShmSlot:
    """Where a frame's pixels are when they travel in shared memory
    (:mod:`perception.bus.shm_ring`): ``slot`` of the ring ``segment`` (``slot_stride`` bytes
    apart), written as ``generation``, ``nbytes`` long. The segment's name is checked by the
    reader when it maps a segment (:data:`perception.bus.shm_ring.SEGMENT`), once per ring,
    not at every frame's decode."""

    segment: Annotated[str, msgspec.Meta(max_length=120)]
    slot: Annotated[int, msgspec.Meta(ge=0, le=255)]
    generation: Annotated[int, msgspec.Meta(ge=0)]
    nbytes: Annotated[int, msgspec.Meta(ge=0, le=MAX_PIXELS_BYTES)]
    slot_stride: Annotated[int, msgspec.Meta(ge=0)]


@dataclass(frozen=True)
class FrameHeader:
    """Header of a frame; the pixels follow as the third message part.

    The pixel buffer is ``height`` rows of ``stride`` bytes, each row holding ``width``
    pixels of ``channels`` uint8 values (``bgr8``/``rgb8``: 3, ``mono8``: 1).
    ``transform`` is set on preprocessed frames and maps them back to camera pixels.
    ``undistorted`` is true when those camera pixels are of the undistorted image (the
    preprocess node with ``calib:``; camera matrix = the calibration's ``projection_matrix``).
    """

    width: int
    height: int
    encoding: Encoding
    stride: int
    transform: Letterbox | None = None
    undistorted: bool = False
    #: set when the pixels are in shared memory instead of the message's third part
    shm: ShmSlot | None = None

    @property
    def channels(self) -> int:
        return 1 if self.encoding == "mono8" else 3


@dataclass(frozen=True)
class Instance:
    """One detected instance (see the module docstring for the field contract)."""

    class_id: int
    score: float
    box_xyxy: Box
    mask: Rle | None = None


@dataclass(frozen=True)
class Detections:
    """The segmenter's output for one frame, in camera pixels."""

    model: Text
    image_width: int
    image_height: int
    instances: Annotated[tuple[Instance, ...], msgspec.Meta(max_length=MAX_INSTANCES)] = ()
    inference_ms: float = 0.0
    queue_wait_ms: float = 0.0
    frame_age_ms: float = 0.0
    policy_reason: Text = ""


TrackState = Literal["tentative", "confirmed", "lost", "removed"]


@dataclass(frozen=True)
class Track:
    """One tracked instance. ``predicted`` is true when box and mask were coasted.

    ``ground_xy_m``: where the track's mask meets a flat ground, (x, y) metres in the
    robot frame (see :func:`perception.calibration.ground_plane.ground_position`), when the camera has
    extrinsics; ``(nan, nan)`` with ``ground_above_horizon`` true when that point is above
    the horizon.
    """

    track_id: int
    state: TrackState
    class_id: int
    score: float
    box_xyxy: Box
    mask: Rle | None = None
    velocity_px_s: tuple[float, float] = (0.0, 0.0)
    age_s: float = 0.0
    hits: int = 0
    predicted: bool = False
    ground_xy_m: tuple[float, float] | None = None
    ground_above_horizon: bool = False


@dataclass(frozen=True)
class Tracks:
    """The tracker's output for one frame. ``epoch`` changes when the tracker restarts."""

    image_width: int
    image_height: int
    tracks: Annotated[tuple[Track, ...], msgspec.Meta(max_length=MAX_INSTANCES)] = ()
    epoch: int = 0


@dataclass(frozen=True)
class GtInstance:
    """Ground truth for one instance in one frame (visible mask, after occlusion)."""

    instance_id: int
    class_id: int
    box_xyxy: Box
    mask: Rle
    occlusion: float = 0.0
    ignore: bool = False


@dataclass(frozen=True)
class GroundTruth:
    """All ground-truth instances of one frame."""

    image_width: int
    image_height: int
    instances: Annotated[tuple[GtInstance, ...], msgspec.Meta(max_length=MAX_INSTANCES)] = ()


Scalar = int | float | str | bool


@dataclass(frozen=True)
class Status:
    """Heartbeat of one node, published at 2 Hz."""

    node: Text
    pid: int
    rate_hz: float = 0.0
    step_p50_ms: float = 0.0
    step_p99_ms: float = 0.0
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    errors: int = 0
    last_error: Text = ""
    uptime_s: float = 0.0
    counters: Annotated[dict[Text, Scalar], msgspec.Meta(max_length=256)] = field(default_factory=dict)


Payload = FrameHeader | Detections | Tracks | GroundTruth | Status


@dataclass(frozen=True)
class Envelope:
    """What every message carries around its payload.

    ``stamp_ns`` is the sender's monotonic clock at send time (``time.monotonic_ns``);
    ``source.capture_ns`` is on the same clock, so ``stamp_ns - source.capture_ns`` is the
    age of the frame the message derives from.
    """

    topic: Text
    seq: int
    stamp_ns: int
    source: Source | None
    payload: Payload
    valid: bool = True
    schema_version: int = SCHEMA_VERSION


# --------------------------------------------------------------------------- topic table

Kind = Literal["frame", "message"]


@dataclass(frozen=True)
class Topic:
    """One row of the topic table.

    ``endpoint`` is written out in full; ``{run_dir}`` is replaced by the run directory.
    Which node sends a topic and which take it is the node table's
    (:mod:`perception.system.node_table`); ``status`` the supervisor republishes from what
    the nodes send to ``status_in``.
    """

    name: str
    msg_type: type
    endpoint: str
    rate_hz: float
    recorded: bool
    kind: Kind
    description: str


TOPICS: tuple[Topic, ...] = (
    Topic(
        "frames",
        FrameHeader,
        "ipc://{run_dir}/frames",
        30.0,
        True,
        "frame",
        "raw camera frames (or a replayed drive)",
    ),
    Topic(
        "frames.rect",
        FrameHeader,
        "ipc://{run_dir}/frames.rect",
        30.0,
        False,
        "frame",
        "frames resized/letterboxed (and undistorted) for the model, with the transform back",
    ),
    Topic(
        "detections",
        Detections,
        "ipc://{run_dir}/detections",
        30.0,
        True,
        "message",
        "per-frame instances: class, score, box, mask (COCO RLE)",
    ),
    Topic(
        "tracks",
        Tracks,
        "ipc://{run_dir}/tracks",
        30.0,
        True,
        "message",
        "tracked instances with stable ids, state, velocity",
    ),
    Topic(
        "gt",
        GroundTruth,
        "ipc://{run_dir}/gt",
        30.0,
        True,
        "message",
        "ground truth of a synthetic or annotated drive, when known",
    ),
    Topic(
        "status",
        Status,
        "ipc://{run_dir}/status",
        2.0,
        True,
        "message",
        "heartbeats and diagnostics of every node",
    ),
)

#: Where nodes send their heartbeats; the supervisor forwards them to ``status``.
STATUS_IN_ENDPOINT = "ipc://{run_dir}/status.in"
#: Default bind address of the external publisher.
EXTERNAL_ENDPOINT = "tcp://127.0.0.1:7780"

_BY_NAME = {t.name: t for t in TOPICS}


def topic(name: str) -> Topic:
    """Look up a topic row by name; raises :class:`UnknownTopic` naming the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(t.name for t in TOPICS)
        raise UnknownTopic(f"unknown topic {name!r}; known topics: {known}") from None


def endpoint(name: str, run_dir: str) -> str:
    """The endpoint of topic ``name`` in run directory ``run_dir``."""
    return topic(name).endpoint.format(run_dir=run_dir)
