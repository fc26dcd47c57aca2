"""The ``foxglove`` node: the pipeline live in the Foxglove app, over the Foxglove WebSocket
protocol (``foxglove-sdk``'s server): the camera image, the tracks drawn on it, the mask
layer, latency and every node's status (channels of :mod:`perception.outputs.foxglove_scene`).

It only listens: frames are kept for a moment (``frame_buffer``) until their tracks arrive,
then the image, annotations and mask layer go out together, at most ``max_rate_hz`` times a
second; nothing is encoded while no client subscribes. Like every subscriber it takes the
newest messages, so a slow client or a busy machine costs this node frames (dropped and
counted in its status), never the pipeline.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from perception.bus.pubsub import Received
from perception.bus.schema import Detections, Tracks
from perception.node.loop import Outgoing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoxgloveConfig:
    """``host``/``port``: where the WebSocket server listens (loopback by default: reach it
    from another machine through an SSH tunnel, or set ``0.0.0.0`` on a trusted network);
    ``max_rate_hz``: frames sent per second at most; ``jpeg_quality`` of the image channel;
    ``frame_buffer``: frames kept while their tracks are on the way; ``wait_for_tracks``:
    false for a pipeline without a tracker (each frame goes out as it comes, image only)."""

    host: str = "127.0.0.1"
    port: int = 8765
    max_rate_hz: float = 15.0
    jpeg_quality: int = 80
    frame_buffer: int = 30
    wait_for_tracks: bool = True

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"key 'port' must be in 0..65535, got {self.port}")
        if self.max_rate_hz <= 0 or not 1 <= self.jpeg_quality <= 100 or self.frame_buffer < 1:
            raise ValueError("max_rate_hz must be > 0, jpeg_quality in 1..100 and frame_buffer >= 1")


class FoxgloveLogic:
    inputs: tuple[str, ...] = ("frames", "detections", "tracks", "status")
    outputs: tuple[str, ...] = ()

    def __init__(self, cfg: FoxgloveConfig, start_server: bool = True) -> None:
        import foxglove

        from perception.outputs.foxglove_scene import FoxgloveView

        self.cfg = cfg
        self.view = FoxgloveView()
        self.server = (
            foxglove.start_server(name="perception", host=cfg.host, port=cfg.port, context=self.view.context)
            if start_server
            else None
        )
        if self.server is not None:
            log.info(
                "Foxglove WebSocket server on ws://%s:%d (Foxglove app: Open connection)", cfg.host, self.server.port
            )
        self.frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self.detections: OrderedDict[int, Detections] = OrderedDict()
        self.sent = self.skipped = self.unmatched = 0
        self._last_sent = 0.0

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else 0

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        return None

    def _keep(self, store: OrderedDict, seq: int, value: object) -> None:
        store[seq] = value
        while len(store) > self.cfg.frame_buffer:
            store.popitem(last=False)

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        if msg is None:
            return []
        env = msg.envelope
        if env.topic == "status":
            if self.view.status.has_sinks():
                self.view.log_status(env.payload, time.time_ns())  # type: ignore[arg-type]
            return []
        if env.source is None:
            return []
        seq = env.source.frame_seq
        if env.topic == "frames" and msg.pixels is not None:
            self._keep(self.frames, seq, np.asarray(msg.pixels))
            if not self.cfg.wait_for_tracks:
                self._send(seq, env.source.capture_ns, env.stamp_ns, None)
        elif env.topic == "detections":
            self._keep(self.detections, seq, env.payload)
        elif env.topic == "tracks":
            self._send(seq, env.source.capture_ns, env.stamp_ns, env.payload)  # type: ignore[arg-type]
        return []

    def _send(self, seq: int, capture_ns: int, stamp_ns: int, tracks: Tracks | None) -> None:
        image = self.frames.pop(seq, None)
        if image is None:
            self.unmatched += 1  # its frame was dropped on the way here, or came too early
            return
        now = time.monotonic()
        if now - self._last_sent < 1.0 / self.cfg.max_rate_hz or not any(
            c.has_sinks() for c in (self.view.image, self.view.annotations, self.view.masks, self.view.latency)
        ):
            self.skipped += 1
            return
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            self.skipped += 1
            return
        # the app's clock is the wall clock: log now; message timestamps are the capture time
        # moved onto the wall clock by how long ago it was
        wall = time.time_ns() - (time.monotonic_ns() - capture_ns)
        self.view.log_frame(
            jpeg.tobytes(),
            wall,
            time.time_ns(),
            tracks,
            self.detections.get(seq),
            seq,
            wall + (stamp_ns - capture_ns) if tracks is not None else None,
        )
        self._last_sent = now
        self.sent += 1

    def counters(self) -> dict[str, int | float | str | bool]:
        return {"sent": self.sent, "skipped": self.skipped, "unmatched": self.unmatched, "port": self.port}

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
