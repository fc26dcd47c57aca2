"""Which model runs on the next frame: the latency-budget policy of the segmenter.

Pure logic, no sockets and no clocks of its own: the segmenter calls
``choose(now_ns, frame)`` before each frame and ``observe(model, latency_ms, instances)``
after it. Policies:

- ``fast`` / ``accurate``: always that model;
- ``auto``: the accurate model when its predicted latency fits the budget left for this
  frame *and* costs the next frame nothing, the fast model otherwise, with hysteresis (it
  switches up only after ``switch_up_after`` consecutive frames that fit with ``margin_ms``
  to spare, and down at once when the accurate model no longer fits), optionally running
  the accurate model only every ``accurate_every_n``-th frame (the fast one in between).

Frame-period aware: the worker takes the newest frame, so a run that outlasts two frame
periods makes the next frame be replaced (dropped: a missed deadline in the evaluation),
and a long run delays the next frame towards its own deadline. The period is measured
from capture stamps and sequence numbers (:class:`FramePeriod`); on a camera faster than
the accurate model, ``auto`` runs it on the frames where there is slack (every other
frame, say) and the fast model on the rest, so it never lags behind the camera.

The latency estimate of each model is a high quantile (``quantile``) of its recent
latencies, seeded from the model card's profile and refreshed online; for a model whose
cost grows with the number of instances (the two-stage model's mask head runs per
instance) it is a least-squares line ``a + b * instances`` plus the quantile of residuals.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Mode = Literal["fast", "accurate", "auto"]
FAST, ACCURATE = "fast", "accurate"


@dataclass(frozen=True)
class LatencyProfile:
    """Seed of a model's latency: ``p95_ms`` at ``instances_ref`` instances, plus
    ``per_instance_ms`` for each further instance (from the model card)."""

    p95_ms: float
    per_instance_ms: float = 0.0
    instances_ref: int = 0


@dataclass(frozen=True)
class PolicyConfig:
    mode: Mode = "auto"
    budget_ms: float = 100.0
    overhead_ms: float = 3.0
    quantile: float = 0.95
    window: int = 64
    margin_ms: float = 5.0
    switch_up_after: int = 3
    accurate_every_n: int = 0
    max_slowdown: float = 5.0
    #: a model's own latency samples expire after this many frames without a run of it, so
    #: that a model given up under load (a starved CPU) is judged again by the other one's
    #: current speed, and tried again when the load is gone
    stale_after_frames: int = 64

    def validate(self) -> None:
        if self.mode not in ("fast", "accurate", "auto"):
            raise ValueError(f"policy must be fast, accurate or auto, got {self.mode!r}")
        if self.budget_ms <= 0:
            raise ValueError(f"budget_ms must be > 0, got {self.budget_ms}")
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")


@dataclass(frozen=True)
class Decision:
    model: str
    predicted_ms: float
    remaining_ms: float
    reason: str


class HasCapture(Protocol):
    """What the policy reads of a frame: its capture stamp (and, when the frame has one, its
    sequence number ``frame_seq``, which tells dropped frames from a slower camera)."""

    capture_ns: int


class FramePeriod:
    """The camera's frame period, from capture stamps: the median of
    ``(capture_ns - previous capture_ns) / (frame_seq - previous frame_seq)`` over recent
    frames (sequence gaps are frames dropped upstream, not a slower camera)."""

    def __init__(self, window: int = 64) -> None:
        self.intervals_ms: deque[float] = deque(maxlen=window)
        self.last: tuple[int, int | None] | None = None

    def observe(self, capture_ns: int, seq: int | None) -> None:
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
        #: over the window, made once per change of the samples (see :meth:`Policy.prepare`)
        self._memo: tuple[int, int, float] | None = None
        self._version = 0

    def observe(self, latency_ms: float, instances: int) -> None:
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


class Policy:
    """Chooses ``fast`` or ``accurate`` per frame; counts decisions and switches."""

    def __init__(self, cfg: PolicyConfig, fast: LatencyProfile, accurate: LatencyProfile) -> None:
        cfg.validate()
        self.cfg = cfg
        self.estimators = {
            FAST: LatencyEstimator(fast, cfg.window, cfg.quantile),
            ACCURATE: LatencyEstimator(accurate, cfg.window, cfg.quantile),
        }
        self.current = ACCURATE if cfg.mode == ACCURATE else FAST
        self.period = FramePeriod(cfg.window)
        self.ages_ms: deque[float] = deque(maxlen=cfg.window)
        self.fit_streak = 0
        self.last_instances = 0
        self.frames = 0
        self.switches = 0
        self.usage = {FAST: 0, ACCURATE: 0}
        self.last_run = {FAST: 0, ACCURATE: 0}  # frame count at each model's last observed run
        self.expired = 0

    def choose(self, now_ns: int, frame: HasCapture) -> Decision:
        """The model for the frame captured at ``frame.capture_ns``, given the time now."""
        self.frames += 1
        self.period.observe(frame.capture_ns, getattr(frame, "frame_seq", None))
        age_ms = (now_ns - frame.capture_ns) / 1e6
        self.ages_ms.append(age_ms)
        remaining = self.cfg.budget_ms - age_ms - self.cfg.overhead_ms
        acc, fast = self._predict(ACCURATE), self._predict(FAST)
        if self.cfg.mode != "auto":
            model = self.cfg.mode
            return self._run(model, model, acc if model == ACCURATE else fast, remaining, f"policy {model}")
        # The mode (hysteresis) follows whether the accurate model fits a frame that arrives
        # as early as frames do here (the least recent age), so one late frame does not
        # switch it; each frame then runs the accurate model only if it fits that frame.
        fresh_ms = min(self.ages_ms)
        if self.current == ACCURATE:
            fits = self._fits(fresh_ms, acc, fast, 0.0) is None  # stay while it fits at all
        else:
            # no switch up before the fast model's runs have shown how loaded this machine is
            known = bool(self.estimators[FAST].samples)
            self.fit_streak = (
                self.fit_streak + 1 if known and self._fits(fresh_ms, acc, fast, self.cfg.margin_ms) is None else 0
            )
            fits = self.fit_streak >= self.cfg.switch_up_after
        if not fits:
            if self.current == ACCURATE:
                self.fit_streak = 0
                why = self._fits(fresh_ms, acc, fast, 0.0) or ""
            else:
                why = (
                    f"{self._fits(fresh_ms, acc, fast, self.cfg.margin_ms) or 'accurate fits'} "
                    f"({self.fit_streak}/{self.cfg.switch_up_after} frames fit with margin)"
                )
            return self._run(FAST, FAST, fast, remaining, why)
        n = self.cfg.accurate_every_n
        if n > 1 and self.frames % n != 0:
            return self._run(ACCURATE, FAST, fast, remaining, f"accurate fits; runs every {n}th frame")
        not_now = self._fits(age_ms, acc, fast, self.cfg.margin_ms)
        if not_now:
            return self._run(ACCURATE, FAST, fast, remaining, f"no slack on this frame: {not_now}")
        return self._run(ACCURATE, ACCURATE, acc, remaining, f"accurate {acc:.0f} ms fits {remaining:.0f} ms left")

    def _predict(self, model: str) -> float:
        """The model's estimate; until it has run a few times here, its card profile scaled
        by how much slower than *its* card the other model runs on this machine now (both
        share the CPU with the rest of the pipeline; the cards come from an isolated
        benchmark), never below the card's figure."""
        own = self.estimators[model]
        if own.samples and self.frames - self.last_run[model] > self.cfg.stale_after_frames:
            own.clear()  # measured under conditions that may be gone
            self.expired += 1
        estimate = own.predict(self.last_instances)
        other = self.estimators[FAST if model == ACCURATE else ACCURATE]
        if own.samples or not other.samples:
            return estimate
        slowdown = other.predict(self.last_instances) / max(other.seeded(self.last_instances), 1e-3)
        return estimate * min(max(slowdown, 1.0), self.cfg.max_slowdown)

    def _fits(self, age_ms: float, acc_ms: float, fast_ms: float, margin_ms: float) -> str | None:
        """``None`` when running the accurate model on a frame ``age_ms`` old meets its
        deadline without costing the next frame (which must not be replaced by the one after
        it while it waits, and must still meet its own deadline with the fast model);
        otherwise the reason it does not fit."""
        left = self.cfg.budget_ms - age_ms - self.cfg.overhead_ms
        if acc_ms + margin_ms > left:
            return f"accurate {acc_ms:.0f} ms > {left:.0f} ms left"
        period = self.period.period_ms()
        if period is None:
            return None
        done_ms = age_ms + acc_ms + margin_ms  # after this frame's capture
        if done_ms > 2 * period:
            return f"accurate {acc_ms:.0f} ms would drop the next frame ({period:.0f} ms period)"
        if done_ms + fast_ms + self.cfg.overhead_ms > period + self.cfg.budget_ms:
            return f"accurate {acc_ms:.0f} ms would make the next frame miss its deadline"
        return None

    def _run(self, state: str, model: str, pred: float, remaining: float, reason: str) -> Decision:
        if state != self.current:
            self.switches += 1
            self.current = state
        self.usage[model] += 1
        return Decision(model, pred, remaining, reason)

    def prepare(self) -> None:
        """Make the next frame's latency estimates now (a fit over each model's window),
        so that :meth:`choose` finds them made instead of adding them to that frame's
        latency; the decisions are the same either way."""
        for est in self.estimators.values():
            est.predict(self.last_instances)

    def observe(self, model: str, latency_ms: float, instances: int) -> None:
        """Record what a run of ``model`` cost on a frame with ``instances`` instances."""
        self.estimators[model].observe(latency_ms, instances)
        self.last_instances = instances
        self.last_run[model] = self.frames

    def counters(self) -> dict[str, int | float | str | bool]:
        return {
            "policy": self.cfg.mode,
            "model": self.current,
            "switches": self.switches,
            "usage.fast": self.usage[FAST],
            "usage.accurate": self.usage[ACCURATE],
            "expired_estimates": self.expired,
            "predicted_ms.fast": round(float(self._predict(FAST)), 2),
            "predicted_ms.accurate": round(float(self._predict(ACCURATE)), 2),
            "frame_period_ms": round(self.period.period_ms() or 0.0, 2),
        }
