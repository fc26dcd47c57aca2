"""The model-choice policy on scripted latency sequences."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest

from perception.segmentation.latency_policy import LatencyEstimator, LatencyProfile, Policy, PolicyConfig

MS = 1_000_000


@dataclass(frozen=True)
class Frame:
    capture_ns: int


def _policy(**kw: object) -> Policy:
    cfg = PolicyConfig(**{"mode": "auto", "budget_ms": 100.0, "overhead_ms": 0.0, "switch_up_after": 3, **kw})
    return Policy(cfg, LatencyProfile(20.0), LatencyProfile(60.0, per_instance_ms=2.0, instances_ref=5))


def _run(p: Policy, age_ms: float, lat: dict[str, float], instances: int = 5) -> str:
    now = 10_000 * MS
    d = p.choose(now, Frame(now - int(age_ms * MS)))
    p.observe(d.model, lat[d.model], instances)
    return d.model


def test_fixed_policies() -> None:
    for mode in ("fast", "accurate"):
        p = _policy(mode=mode)
        assert {_run(p, 90, {"fast": 20, "accurate": 60}) for _ in range(5)} == {mode}


def test_fits_after_hysteresis_then_stays() -> None:
    p = _policy()
    seq = [_run(p, 10, {"fast": 20, "accurate": 60}) for _ in range(6)]
    # the first frame only measures the fast model; then 3 frames fit -> accurate
    assert seq == ["fast", "fast", "fast", "accurate", "accurate", "accurate"]
    assert p.switches == 1


def test_does_not_fit_stays_fast() -> None:
    p = _policy()
    seq = [_run(p, 50, {"fast": 20, "accurate": 60}) for _ in range(10)]  # 50 ms left < 60 ms
    assert set(seq) == {"fast"} and p.switches == 0


def test_backs_off_when_accurate_gets_slow_and_recovers() -> None:
    p = _policy(window=8)
    lat = {"fast": 20.0, "accurate": 60.0}
    seq = [_run(p, 10, lat) for _ in range(5)]
    assert seq[-1] == "accurate"
    lat["accurate"] = 120.0  # the machine got busy: accurate no longer fits
    seq = [_run(p, 10, lat) for _ in range(6)]
    assert seq[0] == "accurate" and seq[-1] == "fast"
    # the accurate estimate now says 120 ms: it stays fast while that is the estimate
    assert [_run(p, 10, lat) for _ in range(5)] == ["fast"] * 5


def test_no_flapping_near_the_edge() -> None:
    """Remaining budget jitters around the accurate model's latency: the hysteresis keeps
    the switches few instead of one per frame."""
    p = _policy(margin_ms=8.0)
    lat = {"fast": 20.0, "accurate": 60.0}
    ages = [33, 42, 35, 41, 36, 43, 34, 40] * 5  # remaining 57..67 ms vs 60 ms needed
    models = [_run(p, a, lat) for a in ages]
    assert p.switches <= 4
    changes = sum(1 for a, b in pairwise(models) if a != b)
    assert changes <= 4


def test_cost_grows_with_instances() -> None:
    p = _policy()
    lat = {"fast": 20.0, "accurate": 60.0}
    assert [_run(p, 20, lat, instances=5) for _ in range(4)][-1] == "accurate"
    # a crowded scene: 30 instances -> 60 + 2 * 25 = 110 ms predicted, cannot fit
    _run(p, 20, {"fast": 20.0, "accurate": 110.0}, instances=30)
    assert _run(p, 20, lat, instances=30) == "fast"


def test_estimator_fits_instance_slope() -> None:
    e = LatencyEstimator(LatencyProfile(50.0, per_instance_ms=1.0), window=64, quantile=0.95)
    for n in range(0, 40, 2):
        e.observe(30.0 + 3.0 * n, n)
    assert e.predict(10) == pytest.approx(60.0, abs=1.0)
    assert e.predict(50) == pytest.approx(180.0, abs=2.0)


def test_accurate_every_nth_frame() -> None:
    p = _policy(accurate_every_n=3, switch_up_after=1)
    models = [_run(p, 10, {"fast": 20, "accurate": 60}) for _ in range(9)]
    assert models.count("accurate") == 3 and models.count("fast") == 6
    assert p.switches == 1


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="policy must be"):
        PolicyConfig(mode="fastest").validate()  # type: ignore[arg-type]


def test_counters_are_plain_scalars_after_fitting() -> None:
    """The counters go into heartbeats; NumPy scalars would not encode."""
    p = _policy()
    for n in range(8):
        p.observe("accurate", 60.0 + 2 * n, n)
    assert all(type(v) in (int, float, str, bool) for v in p.counters().values())


@dataclass(frozen=True)
class SeqFrame:
    capture_ns: int
    frame_seq: int


def test_frame_period_ignores_upstream_drops() -> None:
    from perception.segmentation.latency_policy import FramePeriod

    fp = FramePeriod()
    assert fp.period_ms() is None
    for seq in (0, 1, 3, 4, 7, 8):  # frames 2, 5 and 6 dropped before the segmenter
        fp.observe(seq * 50 * MS, seq)
    assert fp.period_ms() == pytest.approx(50.0)


def _simulate(p: Policy, period_ms: float, lat: dict[str, float], frames: int = 120) -> dict[str, int]:
    """A camera at ``period_ms`` and a worker that takes the newest waiting frame (older
    waiting frames are dropped), as the segmenter does; counts deadline hits and drops."""
    t = 0.0  # worker clock, ms
    nxt = 0  # first frame not yet taken or dropped
    out = {"hit": 0, "drop": 0, "accurate": 0}
    while nxt < frames:
        t = max(t, nxt * period_ms)
        newest = max(nxt, min(frames - 1, int(t // period_ms)))
        out["drop"] += newest - nxt
        d = p.choose(int(t * MS), SeqFrame(int(newest * period_ms * MS), newest))
        t += lat[d.model]
        p.observe(d.model, lat[d.model], 5)
        out["hit"] += t - newest * period_ms <= p.cfg.budget_ms
        out["accurate"] += d.model == "accurate"
        nxt = newest + 1
    return out


def _seeded(**kw: object) -> Policy:
    """A policy whose card profiles match the simulated latencies (fast 20, accurate 100)."""
    cfg = PolicyConfig(**{"mode": "auto", "budget_ms": 250.0, "overhead_ms": 0.0, **kw})
    return Policy(cfg, LatencyProfile(20.0), LatencyProfile(100.0))


def test_auto_uses_slack_between_frames_without_dropping() -> None:
    """15 fps camera, accurate 100 ms (longer than a frame period), budget 250 ms: auto runs
    the accurate model on the frames where it costs nothing and never drops or misses."""
    lat = {"fast": 20.0, "accurate": 100.0}
    auto = _simulate(_seeded(), 1000 / 15, lat)
    assert auto["drop"] == 0 and auto["hit"] == 120
    assert auto["accurate"] >= 40
    always = _simulate(_seeded(mode="accurate"), 1000 / 15, lat)
    assert always["drop"] > 20  # what ignoring the frame period costs


def test_auto_stays_fast_when_accurate_would_drop_every_frame() -> None:
    """30 fps camera, accurate 100 ms: every accurate run would drop frames, so auto keeps
    the fast model although 100 ms fits the budget."""
    lat = {"fast": 20.0, "accurate": 100.0}
    p = _seeded()
    auto = _simulate(p, 1000 / 30, lat)
    assert auto["accurate"] == 0 and auto["drop"] == 0 and auto["hit"] == 120
    assert "drop the next frame" in p.choose(10_000 * MS, SeqFrame(10_000 * MS, 10_000)).reason


def test_unmeasured_model_is_scaled_by_the_measured_ones_slowdown() -> None:
    """The fast model runs 2x slower here than its card says; until the accurate model has
    run, its card figure is doubled too, so auto does not gamble a frame on it."""
    p = _seeded(budget_ms=150.0)  # cards: fast 20 ms, accurate 100 ms
    models = [_run(p, 10, {"fast": 40.0, "accurate": 200.0}) for _ in range(8)]
    assert models == ["fast"] * 8  # 100 ms would fit 137 ms left; 2 x 100 ms does not
    assert p.counters()["predicted_ms.accurate"] == pytest.approx(200.0)
    q = _seeded(budget_ms=150.0)  # the same machine load-free: the card is believed
    assert "accurate" in [_run(q, 10, {"fast": 20.0, "accurate": 100.0}) for _ in range(8)]


def test_a_model_given_up_under_load_is_tried_again_when_the_load_is_gone() -> None:
    p = _policy(stale_after_frames=20)
    calm = {"fast": 20.0, "accurate": 60.0}
    starved = {"fast": 60.0, "accurate": 300.0}  # a CPU hog: everything three to five times slower
    assert [_run(p, 10, calm) for _ in range(6)][-1] == "accurate"
    under_load = [_run(p, 10, starved) for _ in range(10)]
    assert under_load[-1] == "fast"  # gave the accurate model up
    back = [_run(p, 10, calm) for _ in range(100)]
    # its 300 ms samples expire after 20 frames; then it is judged by how fast the fast model
    # runs now, and once the starved runs have left the fast model's window it fits again
    assert back[-1] == "accurate" and p.expired >= 1
    assert 20 < back.index("accurate") <= 64 + 4


def test_estimates_made_ahead_change_no_decision() -> None:
    """The segmenter makes the next frame's estimates while it waits (Policy.prepare): on a
    run with switches, changing latencies and estimates that expire, every decision is the
    one a policy that makes them on the frame makes."""
    import random

    rng = random.Random(5)
    ahead, on_frame = _policy(stale_after_frames=6), _policy(stale_after_frames=6)
    now = 10_000 * MS
    for i in range(300):
        now += 66 * MS
        age = rng.uniform(5, 40)
        ahead.prepare()
        a = ahead.choose(now, SeqFrame(now - int(age * MS), i))
        b = on_frame.choose(now, SeqFrame(now - int(age * MS), i))
        assert (a.model, a.predicted_ms, a.reason) == (b.model, b.predicted_ms, b.reason)
        instances = rng.randrange(0, 40)
        ms = (rng.uniform(15, 25) if a.model == "fast" else rng.uniform(40, 120)) * (3 if i % 90 > 70 else 1)
        ahead.observe(a.model, ms, instances)
        on_frame.observe(b.model, ms, instances)
    assert ahead.counters() == on_frame.counters()
    assert ahead.switches > 2 and ahead.expired > 0


def test_estimate_follows_each_new_sample() -> None:
    e = LatencyEstimator(LatencyProfile(50.0), window=8, quantile=0.5)
    for _ in range(8):
        e.observe(30.0, 1)
    assert e.predict(1) == pytest.approx(30.0)
    for _ in range(8):
        e.observe(90.0, 1)
    assert e.predict(1) == pytest.approx(90.0)  # not the prediction made before
    e.clear()
    assert e.predict(1) == pytest.approx(50.0)  # the card's again
