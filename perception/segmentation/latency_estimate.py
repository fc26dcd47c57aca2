"""How long a model will take and how often frames come: the estimates the latency policy
(:mod:`perception.segmentation.latency_policy`) decides on.

- :class:`LatencyProfile`: a model's latency as its card states it (the seed);
- :class:`LatencyEstimator`: a high quantile (``quantile``) of the model's recent latencies,
  seeded from its profile and refreshed online; for a model whose cost grows with the number
  of instances (the two-stage model's mask head runs per instance) a least-squares line
  ``a + b * instances`` plus the quantile of residuals;
- :class:`FramePeriod`: the camera's frame period, from capture stamps and sequence numbers.

Pure logic: no clocks, no sockets.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyProfile:
    """Seed of a model's latency: ``p95_ms`` at ``instances_ref`` instances, plus
    ``per_instance_ms`` for each further instance (from the model card)."""

    p95_ms: float
    per_instance_ms: float = 0.0
    instances_ref: int = 0


class FramePeriod:
    """The camera's frame period, from capture stamps: the median of
    ``(capture_ns - previous capture_ns) / (frame_seq - previous frame_seq)`` over recent
    frames (sequence gaps are frames dropped upstream, not a slower camera)."""

    def __init__(self, window: int = 64) -> None:
        self.intervals_ms: deque[float] = deque(maxlen=window)
        self.last: tuple[int, int | None] | None = None

    def observe(self, capture_ns: int, seq: int | None) -> None:
        """Take a frame's capture stamp (ns) and sequence number (``None`` when it has none)."""
        if self.last is not None:
            last_ns, last_seq = self.last
            frames = seq - last_seq if seq is not None and last_seq is not None else 1
            if capture_ns > last_ns and frames > 0:
                self.intervals_ms.append((capture_ns - last_ns) / 1e6 / frames)
        self.last = (capture_ns, seq)

    def period_ms(self) -> float | None:
        """Median frame period in ms, or ``None`` before two frames with distinct stamps."""
        # statistics.median: the same value as np.median on a few dozen floats, at a tenth of
        # its cost on the CPU of a segmenter that just woke up (it runs before the inference)
        return float(statistics.median(self.intervals_ms)) if self.intervals_ms else None


class LatencyEstimator:
    """Online high-quantile latency estimate of one model, possibly growing with the
    number of instances."""

    def __init__(self, seed: LatencyProfile, window: int = 64, quantile: float = 0.95) -> None:
        self.seed = seed
        self.quantile = quantile
        self.samples: deque[tuple[float, int]] = deque(maxlen=window)
        self.scales_with_instances = seed.per_instance_ms > 0
        #: the last prediction, as (instances, samples version, ms): a prediction is a fit
        #: over the window, made once per change of the samples (see ``Policy.prepare``)
        self._memo: tuple[int, int, float] | None = None
        self._version = 0

    def observe(self, latency_ms: float, instances: int) -> None:
        """Record one run: its latency (ms) on a frame with ``instances`` instances."""
        self.samples.append((float(latency_ms), int(instances)))
        self._version += 1

    def clear(self) -> None:
        """Forget every sample (measured under conditions that may be gone)."""
        self.samples.clear()
        self._version += 1

    def seeded(self, instances: int) -> float:
        """The card's prediction for a frame with ``instances`` instances (ms)."""
        s = self.seed
        return s.p95_ms + s.per_instance_ms * max(0, instances - s.instances_ref)

    def predict(self, instances: int) -> float:
        """Predicted ``quantile`` latency in ms for a frame with ``instances`` instances."""
        memo = self._memo
        if memo is not None and memo[0] == instances and memo[1] == self._version:
            return memo[2]
        ms = self._fit(instances)
        self._memo = (instances, self._version, ms)
        return ms

    def _fit(self, instances: int) -> float:
        s = self.seed
        seeded = self.seeded(instances)
        if len(self.samples) < 4:
            return seeded if not self.samples else max(seeded, max(v for v, _ in self.samples))
        lat = np.array([v for v, _ in self.samples])
        n = np.array([k for _, k in self.samples], dtype=float)
        if self.scales_with_instances and np.ptp(n) > 0:
            b, a = np.polyfit(n, lat, 1)
            b = max(b, 0.0)
            resid = lat - (a + b * n)
            return float(a + b * instances + np.quantile(resid, self.quantile))
        if self.scales_with_instances:  # one instance count seen so far: keep the seed's slope
            base = float(np.quantile(lat, self.quantile))
            return base + s.per_instance_ms * (instances - n[0])
        return float(np.quantile(lat, self.quantile))
