"""Which model runs on the next frame: the latency-budget policy of the segmenter.

Pure logic, no sockets and no clocks of its own: the segmenter calls
``choose(now_ns, frame)`` before each frame and ``observe(model, latency_ms, instances)``
after it. The models form a ladder, fastest first (``PolicyConfig.models``: ``fast``, any
models between, ``accurate``). Policies:

- a model's name (``fast``, ``accurate``, ...): always that model;
- ``auto``: the most accurate model whose predicted latency fits the budget left for this
  frame *and* costs the next frame nothing (:meth:`Policy._fits`), with hysteresis: it
  climbs one level at a time, only after ``switch_up_after`` consecutive frames in which
  the next level fits with ``margin_ms`` to spare, and goes down at once, to the highest
  level that still fits, when its level no longer does; a frame without slack for its
  level runs the fastest model; optionally the top model runs only every
  ``accurate_every_n``-th frame (the fastest one in between). With the two models
  ``fast`` and ``accurate``: the accurate model when it fits, the fast one otherwise.

Frame-period aware: the worker takes the newest frame, so a run that outlasts two frame
periods makes the next frame be replaced (dropped: a missed deadline in the evaluation),
and a long run delays the next frame towards its own deadline. The period is measured
from capture stamps and sequence numbers (:class:`FramePeriod`); on a camera faster than
the accurate model, ``auto`` runs it on the frames where there is slack (every other
frame, say) and the fast model on the rest, so it never lags behind the camera.

Each model's latency estimate is a :class:`LatencyEstimator` (a high quantile of its
recent latencies, seeded from its card's :class:`LatencyProfile`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Protocol

from perception.segmentation.latency_estimate import FramePeriod, LatencyEstimator, LatencyProfile

__all__ = [
    "ACCURATE",
    "AUTO",
    "FAST",
    "Decision",
    "FramePeriod",
    "HasCapture",
    "LatencyEstimator",
    "LatencyProfile",
    "Mode",
    "Policy",
    "PolicyConfig",
]

#: a policy: ``auto`` or the name of one of the models
Mode = str
FAST, ACCURATE, AUTO = "fast", "accurate", "auto"


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's settings. ``mode``: ``auto`` or a model's name; ``models``: the model
    names, fastest first (the last one is the top model of ``accurate_every_n``)."""

    mode: Mode = AUTO
    budget_ms: float = 100.0
    overhead_ms: float = 3.0
    quantile: float = 0.95
    window: int = 64
    margin_ms: float = 5.0
    switch_up_after: int = 3
    accurate_every_n: int = 0
    max_slowdown: float = 5.0
    #: a model's own latency samples expire after this many frames without a run of it, so
    #: that a model given up under load (a starved CPU) is judged again by another one's
    #: current speed, and tried again when the load is gone
    stale_after_frames: int = 64
    models: tuple[str, ...] = field(default=(FAST, ACCURATE))

    def validate(self) -> None:
        """``ValueError`` with a one-line message at the first bad setting."""
        if not self.models:
            raise ValueError("the policy needs at least one model")
        twice = sorted({m for m in self.models if self.models.count(m) > 1})
        if twice:
            raise ValueError(f"model names must differ, {', '.join(map(repr, twice))} is used twice")
        if AUTO in self.models:
            raise ValueError(f"no model may be called {AUTO!r} (that is the policy that chooses)")
        if self.mode != AUTO and self.mode not in self.models:
            raise ValueError(f"policy must be {', '.join(self.models)} or auto, got {self.mode!r}")
        if self.budget_ms <= 0:
            raise ValueError(f"budget_ms must be > 0, got {self.budget_ms}")
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")


@dataclass(frozen=True)
class Decision:
    """The model to run on a frame, its predicted latency (ms), the budget left (ms) and why."""

    model: str
    predicted_ms: float
    remaining_ms: float
    reason: str


class HasCapture(Protocol):
    """What the policy reads of a frame: its capture stamp (and, when the frame has one, its
    sequence number ``frame_seq``, which tells dropped frames from a slower camera)."""

    capture_ns: int


class Policy:
    """Chooses one model of the ladder per frame; counts decisions and switches.

    ``Policy(cfg, *profiles)``: one card profile per name of ``cfg.models``, in that order."""

    def __init__(self, cfg: PolicyConfig, *profiles: LatencyProfile) -> None:
        cfg.validate()
        if len(profiles) != len(cfg.models):
            raise ValueError(f"the policy needs a latency profile for each of {', '.join(cfg.models)}")
        self.cfg = cfg
        self.ladder = cfg.models
        seeds = zip(self.ladder, profiles, strict=True)
        self.estimators = {m: LatencyEstimator(p, cfg.window, cfg.quantile) for m, p in seeds}
        #: the level the hysteresis is at (a frame without slack for it runs the fastest model)
        self.current = cfg.mode if cfg.mode != AUTO else self.ladder[0]
        self.period = FramePeriod(cfg.window)
        self.ages_ms: deque[float] = deque(maxlen=cfg.window)
        self.fit_streak = 0
        self.last_instances = 0
        self.frames = 0
        self.switches = 0
        self.usage = dict.fromkeys(self.ladder, 0)
        self.last_run = dict.fromkeys(self.ladder, 0)  # frame count at each model's last observed run
        self.expired = 0

    def set_budget(self, budget_ms: float) -> None:
        """Change the capture-to-output budget (ms) from the next frame on (a robot that
        speeds up tightens it); ``ValueError`` unless it is > 0."""
        cfg = replace(self.cfg, budget_ms=budget_ms)
        cfg.validate()
        self.cfg = cfg

    def choose(self, now_ns: int, frame: HasCapture) -> Decision:
        """The model for the frame captured at ``frame.capture_ns``, given the time now."""
        self.frames += 1
        self.period.observe(frame.capture_ns, getattr(frame, "frame_seq", None))
        age_ms = (now_ns - frame.capture_ns) / 1e6
        self.ages_ms.append(age_ms)
        remaining = self.cfg.budget_ms - age_ms - self.cfg.overhead_ms
        pred = {m: self._predict(m) for m in reversed(self.ladder)}  # the most accurate first
        if self.cfg.mode != AUTO:
            model = self.cfg.mode
            return self._run(model, model, pred[model], remaining, f"policy {model}")
        # The level (hysteresis) follows what fits a frame that arrives as early as frames do
        # here (the least recent age), so one late frame does not switch it; each frame then
        # runs the level's model only if it fits that frame.
        level, why = self._level(min(self.ages_ms), pred)
        return self._frame(level, why, age_ms, pred, remaining)

    def _level(self, fresh_ms: float, pred: dict[str, float]) -> tuple[int, str]:
        """The ladder level for a frame ``fresh_ms`` old, given each model's predicted ms,
        after this frame's hysteresis step; and the reason the level is not higher ("" when
        nothing is pending)."""
        level = self.ladder.index(self.current)
        if level > 0:
            held = self._fits(fresh_ms, level, pred, 0.0)  # stay while it fits at all
            if held is not None:  # down at once, to the highest level that fits
                self.fit_streak = 0
                down = next((k for k in range(level - 1, 0, -1) if self._fits(fresh_ms, k, pred, 0.0) is None), 0)
                return down, held
        if level == len(self.ladder) - 1:
            return level, ""
        # no switch up before the fastest model's runs have shown how loaded this machine is
        known = bool(self.estimators[self.ladder[0]].samples)
        up = self._fits(fresh_ms, level + 1, pred, self.cfg.margin_ms)
        self.fit_streak = self.fit_streak + 1 if known and up is None else 0
        if self.fit_streak >= self.cfg.switch_up_after:
            self.fit_streak = 0
            return level + 1, ""
        fits = f"{self.ladder[level + 1]} fits"
        return level, f"{up or fits} ({self.fit_streak}/{self.cfg.switch_up_after} frames fit with margin)"

    def _frame(self, level: int, why: str, age_ms: float, pred: dict[str, float], remaining: float) -> Decision:
        """The decision for a frame ``age_ms`` old at ladder ``level`` (``why``: the reason
        the level is not higher), given each model's predicted ms and the budget left."""
        state, fastest = self.ladder[level], self.ladder[0]
        if level == 0:
            return self._run(fastest, fastest, pred[fastest], remaining, why)
        n = self.cfg.accurate_every_n
        if level == len(self.ladder) - 1 and n > 1 and self.frames % n != 0:
            return self._run(state, fastest, pred[fastest], remaining, f"{state} fits; runs every {n}th frame")
        not_now = self._fits(age_ms, level, pred, self.cfg.margin_ms)
        if not_now:
            return self._run(state, fastest, pred[fastest], remaining, f"no slack on this frame: {not_now}")
        ms = pred[state]
        reason = f"{state} {ms:.0f} ms fits {remaining:.0f} ms left"
        return self._run(state, state, ms, remaining, f"{reason}; {why}" if why else reason)

    def _predict(self, model: str) -> float:
        """The model's estimate; until it has run a few times here, its card profile scaled
        by how much slower than *its* card another model runs on this machine now (the one
        measured most recently: they all share the CPU with the rest of the pipeline; the
        cards come from an isolated benchmark), never below the card's figure."""
        own = self.estimators[model]
        if own.samples and self.frames - self.last_run[model] > self.cfg.stale_after_frames:
            own.clear()  # measured under conditions that may be gone
            self.expired += 1
        estimate = own.predict(self.last_instances)
        measured = [m for m in self.ladder if m != model and self.estimators[m].samples]
        if own.samples or not measured:
            return estimate
        i = self.ladder.index(model)
        ref = max(measured, key=lambda m: (self.last_run[m], -abs(self.ladder.index(m) - i), -self.ladder.index(m)))
        other = self.estimators[ref]
        slowdown = other.predict(self.last_instances) / max(other.seeded(self.last_instances), 1e-3)
        return estimate * min(max(slowdown, 1.0), self.cfg.max_slowdown)

    def _fits(self, age_ms: float, level: int, pred: dict[str, float], margin_ms: float) -> str | None:
        """``None`` when running the model at ``level`` (predicted ms in ``pred``) on a frame
        ``age_ms`` old meets its deadline without costing the next frame (which must not be
        replaced by the one after it while it waits, and must still meet its own deadline
        with the fastest model); otherwise the reason it does not fit."""
        name = self.ladder[level]
        ms, fast_ms = pred[name], pred[self.ladder[0]]
        left = self.cfg.budget_ms - age_ms - self.cfg.overhead_ms
        if ms + margin_ms > left:
            return f"{name} {ms:.0f} ms > {left:.0f} ms left"
        period = self.period.period_ms()
        if period is None:
            return None
        done_ms = age_ms + ms + margin_ms  # after this frame's capture
        if done_ms > 2 * period:
            return f"{name} {ms:.0f} ms would drop the next frame ({period:.0f} ms period)"
        if done_ms + fast_ms + self.cfg.overhead_ms > period + self.cfg.budget_ms:
            return f"{name} {ms:.0f} ms would make the next frame miss its deadline"
        return None

    def _run(self, state: str, model: str, pred: float, remaining: float, reason: str) -> Decision:
        """Count and return the decision to run ``model`` with the hysteresis at ``state``."""
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
        """Plain scalars for the heartbeat: the policy, the level, switches, and per model
        its frames (``usage.<name>``) and its estimate now (``predicted_ms.<name>``)."""
        return {
            "policy": self.cfg.mode,
            "model": self.current,
            "switches": self.switches,
            **{f"usage.{m}": self.usage[m] for m in self.ladder},
            "expired_estimates": self.expired,
            **{f"predicted_ms.{m}": round(float(self._predict(m)), 2) for m in self.ladder},
            "frame_period_ms": round(self.period.period_ms() or 0.0, 2),
        }
