"""The segmenter node's logic: both models warm, the policy picks one per frame.

``frames.rect`` -> ``detections``. Each output says which model ran, its inference time,
how long the frame waited before inference, how old the frame was at publish, and why the
policy chose that model. A frame that is already too old to meet its deadline with the
fastest model is dropped and counted (``stale``) instead of being processed late, except in
deterministic mode, where every frame is processed in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from perception.bus import Received
from perception.node import Outgoing
from perception.scheduling import ACCURATE, FAST, LatencyProfile, Mode, Policy, PolicyConfig
from perception.schema import Detections, FrameHeader, Letterbox

log = logging.getLogger(__name__)


class Segmenter(Protocol):
    """What the node needs of a model runtime.

    ``predict(image, transform)``: ``image`` is an ``(H, W, 3)`` uint8 BGR frame (already
    letterboxed by preprocess when ``transform`` is given, which maps it back to camera
    pixels); returns :class:`~perception.schema.Detections` in camera pixels.
    """

    name: str
    profile: LatencyProfile

    def predict(self, image: np.ndarray, transform: Letterbox | None = None) -> Detections: ...


@dataclass(frozen=True)
class SegmenterConfig:
    """``fast`` / ``accurate``: model card files; ``policy``: fast, accurate or auto;
    ``budget_ms``: capture-to-published-detections budget; ``threads``: ONNX Runtime intra-op
    threads per model (0 = its default); ``providers``: execution providers to try, in order
    (empty = TensorRT, CUDA, CPU by availability)."""

    fast: str = "models/yolact_fast.toml"
    accurate: str = "models/maskrcnn_accurate.toml"
    policy: Mode = "auto"
    budget_ms: float = 100.0
    overhead_ms: float = 3.0
    margin_ms: float = 5.0
    switch_up_after: int = 3
    accurate_every_n: int = 0
    threads: int = 0
    providers: tuple[str, ...] = ()
    score_threshold: float = 0.3

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(mode=self.policy, budget_ms=self.budget_ms, overhead_ms=self.overhead_ms,
                            margin_ms=self.margin_ms, switch_up_after=self.switch_up_after,
                            accurate_every_n=self.accurate_every_n)

    def validate(self) -> None:
        self.policy_config().validate()


class SegmenterLogic:
    inputs: tuple[str, ...] = ("frames.rect",)
    outputs: tuple[str, ...] = ("detections",)

    def __init__(self, cfg: SegmenterConfig, models: dict[str, Segmenter], deterministic: bool = False) -> None:
        missing = {FAST, ACCURATE} - set(models) if cfg.policy == "auto" else {cfg.policy} - set(models)
        if missing:
            raise ValueError(f"segmenter needs the {', '.join(sorted(missing))} model for policy {cfg.policy!r}")
        self.cfg = cfg
        self.models = models
        self.deterministic = deterministic
        fast = models.get(FAST) or models[ACCURATE]
        accurate = models.get(ACCURATE) or models[FAST]
        self.policy = Policy(cfg.policy_config(), fast.profile, accurate.profile)
        self.frames = 0
        self.stale = 0
        self.deadline_misses = 0
        self.published = 0

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        return None

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        if msg is None or msg.pixels is None or msg.envelope.source is None:
            return []
        self.frames += 1
        src = msg.envelope.source
        header: FrameHeader = msg.envelope.payload  # type: ignore[assignment]
        decision = self.policy.choose(now_ns, src)
        fastest = self.policy.estimators[FAST].predict(self.policy.last_instances)
        if not self.deterministic and decision.remaining_ms < min(fastest, decision.predicted_ms):
            self.stale += 1  # cannot make its deadline any more: drop rather than be late
            return []
        start = time.monotonic_ns()
        det = self.models[decision.model].predict(np.asarray(msg.pixels), header.transform)
        end = time.monotonic_ns()
        inference_ms = (end - start) / 1e6
        self.policy.observe(decision.model, inference_ms, len(det.instances))
        age_ms = (end - src.capture_ns) / 1e6
        if age_ms > self.cfg.budget_ms:
            self.deadline_misses += 1
        det = replace(det, model=self.models[decision.model].name, inference_ms=inference_ms,
                      queue_wait_ms=max(0.0, (start - msg.recv_ns) / 1e6) if msg.recv_ns else 0.0,
                      frame_age_ms=age_ms, policy_reason=decision.reason)
        self.published += 1
        return [Outgoing("detections", det, src)]

    def counters(self) -> dict[str, int | float | str | bool]:
        return {"frames": self.frames, "published": self.published, "stale": self.stale,
                "deadline_misses": self.deadline_misses, **self.policy.counters()}
