"""The latency policy with more than two models (a ladder, fastest first), and the segmenter
that loads them (``segmenter.models`` between ``fast`` and ``accurate``).

The policy tests are pure logic: a fake clock, a camera and a worker simulated in ms, fake
latencies; no sockets, no ONNX."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from perception.node.config import ConfigError, build_config
from perception.segmentation.latency_policy import LatencyProfile, Policy, PolicyConfig
from perception.segmentation.segmenter_logic import ModelEntry, SegmenterConfig, SegmenterLogic

ROOT = Path(__file__).resolve().parents[2]
MS = 1_000_000
LADDER = ("fast", "solov2", "accurate")
LATENCY = {"fast": 20.0, "solov2": 60.0, "accurate": 120.0}  # what each model costs, ms


@dataclass(frozen=True)
class Frame:
    capture_ns: int
    frame_seq: int


def _policy(**kw: object) -> Policy:
    """Three models whose card profiles match :data:`LATENCY`."""
    cfg = PolicyConfig(**{"mode": "auto", "budget_ms": 250.0, "overhead_ms": 3.0, "models": LADDER, **kw})
    return Policy(cfg, *(LatencyProfile(LATENCY[m]) for m in LADDER))


def _drive(p: Policy, budgets: list[float], period_ms: float = 150.0, delay_ms: float = 4.0) -> list[dict]:
    """A camera at ``period_ms`` whose frames reach the segmenter ``delay_ms`` after capture,
    and a worker that takes the newest waiting frame (older ones are dropped), with the
    budget of frame ``i`` set to ``budgets[i]`` before it is taken. One row per frame run:
    the model, the frame's age when taken, the model's latency, the budget then."""
    t = 0.0  # worker clock, ms
    nxt, rows = 0, []
    while nxt < len(budgets):
        t = max(t, nxt * period_ms + delay_ms)
        newest = max(nxt, min(len(budgets) - 1, int((t - delay_ms) // period_ms)))
        p.set_budget(budgets[newest])
        d = p.choose(int(t * MS), Frame(int(newest * period_ms * MS), newest))
        age = t - newest * period_ms
        ms = LATENCY[d.model]
        rows.append({"frame": newest, "model": d.model, "age": age, "ms": ms, "budget": budgets[newest]})
        t += ms
        p.observe(d.model, ms, 5)
        nxt = newest + 1
    return rows


def test_budget_tightened_mid_drive_and_relaxed_uses_every_model_within_budget() -> None:
    """250 ms (the accurate model fits), 110 ms (only up to SOLOv2), 50 ms (only the fast
    model), 250 ms again: each model runs, every frame is published within its budget, none is
    dropped, and the counters show each model's frames."""
    budgets = [250.0] * 40 + [110.0] * 40 + [50.0] * 40 + [250.0] * 40
    p = _policy()
    rows = _drive(p, budgets)
    assert [r["frame"] for r in rows] == list(range(len(budgets)))  # none dropped
    late = [r for r in rows if r["age"] + r["ms"] > r["budget"]]
    assert not late, late[:3]
    used = {m: sum(r["model"] == m for r in rows) for m in LADDER}
    assert all(used.values()), used
    c = p.counters()
    assert {m: c[f"usage.{m}"] for m in LADDER} == used
    assert c["predicted_ms.solov2"] == pytest.approx(60.0)

    def phase(i: int) -> list[str]:
        return [r["model"] for r in rows[40 * i + 8 : 40 * (i + 1)]]  # after the climb

    assert set(phase(0)) == {"accurate"} and set(phase(1)) == {"solov2"} and set(phase(2)) == {"fast"}
    assert set(phase(3)) == {"accurate"}
    # tightened: straight down to the highest model that fits, at once, on the first frame
    assert [r["model"] for r in rows[40:42]] == ["solov2", "solov2"]
    assert [r["model"] for r in rows[80:82]] == ["fast", "fast"]


@pytest.mark.parametrize("period_ms", [100.0, 1000 / 15])
def test_a_camera_faster_than_the_accurate_model_loses_no_frame_to_it(period_ms: float) -> None:
    """The same budgets, a camera at 10 or 15 fps (the accurate model takes 120 ms): it
    runs where there is slack and the fast model on the other frames; no frame is dropped
    or late, and each model runs."""
    budgets = [250.0] * 40 + [110.0] * 40 + [50.0] * 40 + [250.0] * 40
    p = _policy()
    rows = _drive(p, budgets, period_ms)
    assert [r["frame"] for r in rows] == list(range(len(budgets)))
    assert not [r for r in rows if r["age"] + r["ms"] > r["budget"]]
    assert all(p.counters()[f"usage.{m}"] > 0 for m in LADDER)


def test_climbs_one_level_at_a_time_and_drops_past_levels_that_do_not_fit() -> None:
    p = _policy(switch_up_after=3)
    models = [r["model"] for r in _drive(p, [250.0] * 9)]
    # the first frame only measures the fast model; 3 frames fit each next level
    assert models == ["fast"] * 3 + ["solov2"] * 3 + ["accurate"] * 3
    assert p.switches == 2
    r = _drive(p, [50.0])[0]  # neither accurate nor SOLOv2 fits: down to fast in one step
    assert r["model"] == "fast" and p.current == "fast" and p.switches == 3


def test_pending_climb_and_drop_are_in_the_reasons() -> None:
    p = _policy(switch_up_after=3)
    now = 10_000 * MS
    reasons = []
    for i in range(6):
        d = p.choose(now + i * 100 * MS, Frame(now + i * 100 * MS - 4 * MS, i))
        p.observe(d.model, LATENCY[d.model], 5)
        reasons.append(d.reason)
    assert reasons[1] == "solov2 fits (1/3 frames fit with margin)"
    assert reasons[4].startswith("solov2 60 ms fits") and "accurate fits (1/3 frames fit with margin)" in reasons[4]
    p.set_budget(50.0)
    d = p.choose(now + 600 * MS, Frame(now + 596 * MS, 6))
    assert (d.model, d.reason) == ("fast", "solov2 60 ms > 43 ms left")


def test_a_policy_naming_the_middle_model_always_runs_it() -> None:
    p = _policy(mode="solov2")
    rows = _drive(p, [250.0] * 5 + [30.0] * 5 + [250.0] * 5)
    assert {r["model"] for r in rows} == {"solov2"} and p.counters()["usage.solov2"] == 15


def test_accurate_every_n_is_about_the_top_model() -> None:
    p = _policy(accurate_every_n=3, switch_up_after=1)
    models = [r["model"] for r in _drive(p, [250.0] * 30)]
    top = models[models.index("accurate") :]  # at the top level: accurate every 3rd frame, fast between
    assert set(top) == {"accurate", "fast"} and "solov2" in models
    assert all(m == ("accurate" if i % 3 == 0 else "fast") for i, m in enumerate(top))


def test_an_unmeasured_model_is_scaled_by_the_most_recently_measured_one() -> None:
    p = _policy()
    for _ in range(6):
        p.frames += 1
        p.observe("fast", 40.0, 5)  # twice its card
    assert p._predict("solov2") == pytest.approx(120.0) and p._predict("accurate") == pytest.approx(240.0)
    for _ in range(6):
        p.frames += 1
        p.observe("solov2", 60.0, 5)  # as its card: the most recent measure, so no slowdown
    assert p._predict("accurate") == pytest.approx(120.0)


# --- configuration -------------------------------------------------------------------

SOLO = {"name": "solov2", "card": "models/solov2_lite0.toml", "precision": "auto"}


def _config(**params: object) -> SegmenterConfig:
    return build_config(SegmenterConfig, params, "launch/demo.yaml: node 'segmenter'")


def test_models_between_fast_and_accurate_in_a_launch_mapping() -> None:
    cfg = _config(models=[SOLO, {"name": "lite0", "card": "models/yolact_lite0.toml"}], policy="lite0")
    assert cfg.model_names() == ("fast", "solov2", "lite0", "accurate")
    assert cfg.card_and_precision("lite0") == ("models/yolact_lite0.toml", "auto")
    assert cfg.needed() == ("lite0",) and cfg.policy_config().models == cfg.model_names()
    assert _config().model_names() == ("fast", "accurate")  # no models: today's two


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"models": [SOLO], "policy": "yolo"}, "policy must be fast, solov2, accurate or auto, got 'yolo'"),
        ({"policy": "solov2"}, "policy must be fast, accurate or auto, got 'solov2'"),
        ({"models": [SOLO, SOLO]}, "segmenter.models[1].name 'solov2' is taken (names so far: fast, accurate, solov2)"),
        ({"models": [{**SOLO, "name": "fast"}]}, "segmenter.models[0].name 'fast' is taken"),
        ({"models": [{**SOLO, "name": "auto"}]}, "segmenter.models[0].name may not be 'auto'"),
        ({"models": [{**SOLO, "name": "SOLO v2"}]}, "segmenter.models[0].name must be lowercase letters"),
        ({"models": [{**SOLO, "precision": "int4"}]}, "segmenter.models[0].precision must be one of"),
        ({"models": [{**SOLO, "card": ""}]}, "segmenter.models[0].card must be a model card file"),
        (
            {"models": [{"name": "solov2", "card": "x.toml", "precison": "fp32"}]},
            "key 'models': Object contains unknown",
        ),
        ({"models": [{"name": "solov2"}]}, "key 'models': Object missing required field `card`"),
        ({"models": "solov2"}, "key 'models': Expected `array`, got `str`"),
    ],
)
def test_bad_models_config_is_a_one_line_error_naming_the_key(params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        _config(**params)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("launch/demo.yaml: node 'segmenter': ")


def test_models_from_a_launch_file_and_a_set_override(tmp_path: Path) -> None:
    from perception.system.launch import load_launch

    launch = tmp_path / "l.yaml"
    launch.write_text(
        "nodes:\n  segmenter:\n    policy: auto\n    models:\n"
        "      - {name: solov2, card: models/solov2_lite0.toml, precision: auto}\n  tracker: {}\n"
    )
    cfg = next(n.config for n in load_launch(launch).nodes if n.type == "segmenter")
    assert cfg.model_names() == ("fast", "solov2", "accurate")
    entry = "[{name: lite0, card: models/yolact_lite0.toml, precision: fp32}]"
    spec = load_launch(launch, [f"segmenter.models={entry}", "segmenter.policy=lite0"])
    cfg = next(n.config for n in spec.nodes if n.type == "segmenter")
    assert cfg.models == (ModelEntry("lite0", "models/yolact_lite0.toml", "fp32"),) and cfg.policy == "lite0"


def test_policy_config_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="'fast' is used twice"):
        Policy(PolicyConfig(models=("fast", "fast")), LatencyProfile(1.0), LatencyProfile(1.0))
    with pytest.raises(ValueError, match="a latency profile for each of fast, solov2, accurate"):
        Policy(PolicyConfig(models=LADDER), LatencyProfile(1.0), LatencyProfile(1.0))


# --- the segmenter ---------------------------------------------------------------------


class FakeModel:
    def __init__(self, name: str) -> None:
        self.name = name

    def predict(self, image: np.ndarray, transform: object = None) -> object:
        from perception.bus.schema import Detections

        return Detections(self.name, 64, 32, ())


def _msg(seq: int) -> object:
    from perception.bus.pubsub import Received
    from perception.bus.schema import Envelope, FrameHeader, Letterbox, Source

    now = time.monotonic_ns()
    header = FrameHeader(64, 32, "bgr8", 64 * 3, Letterbox(0.5, 0.0, 0.0, 128, 64))
    env = Envelope("frames.rect", seq, now, Source("cam0", seq, now - MS), header)
    return Received(env, np.zeros((32, 64, 3), np.uint8), now)


def test_segmenter_logic_with_a_fixed_middle_model_needs_only_it() -> None:
    cfg = SegmenterConfig(policy="solov2", models=(ModelEntry("solov2", "x.toml"),))
    logic = SegmenterLogic(cfg, {"solov2": FakeModel("solo")}, {"solov2": LatencyProfile(30.0)})  # type: ignore[dict-item]
    outs = [logic.step(time.monotonic_ns(), _msg(i)) for i in range(3)]  # type: ignore[arg-type]
    assert [o[0].payload.model for o in outs] == ["solo"] * 3
    assert logic.counters()["usage.solov2"] == 3 and "policy solov2" == outs[0][0].payload.policy_reason
    with pytest.raises(ValueError, match="needs the accurate, fast model for policy 'auto'"):
        SegmenterLogic(SegmenterConfig(models=cfg.models), {"solov2": FakeModel("solo")}, {})  # type: ignore[dict-item]


CARDS = {m: ROOT / "models" / f"{m}.toml" for m in ("yolact_fast", "yolact_lite0", "maskrcnn_accurate")}


@pytest.mark.skipif(
    not all(c.exists() and c.with_suffix(".onnx").exists() for c in CARDS.values()), reason="bundled models missing"
)
def test_build_segmenter_loads_three_cards_each_with_its_profile() -> None:
    from perception.segmentation.card import load_card
    from perception.segmentation.segmenter_logic import build_segmenter, latency_profile

    cfg = SegmenterConfig(
        fast=str(CARDS["yolact_fast"]),
        models=(ModelEntry("lite0", str(CARDS["yolact_lite0"]), "fp32"),),
        accurate=str(CARDS["maskrcnn_accurate"]),
        fast_precision="fp32",
        accurate_precision="fp32",
        threads=1,
    )
    loaded: dict = {}
    logic = build_segmenter(cfg, loaded=loaded)
    assert list(logic.models) == ["fast", "lite0", "accurate"] and len(loaded) == 3
    assert [logic.models[m].name for m in logic.models] == ["yolact_fast", "yolact_lite0", "maskrcnn_accurate"]
    for m, card in zip(logic.models, CARDS.values(), strict=True):
        assert logic.policy.estimators[m].seed == latency_profile(load_card(card), "fp32", "CPUExecutionProvider")
    c = logic.counters()
    assert c["lite0_precision"] == "fp32" and c["usage.lite0"] == 0 and "predicted_ms.lite0" in c
    # a second logic with the policy on the middle model reuses the loaded one and runs it
    only = build_segmenter(SegmenterConfig(**{**cfg.__dict__, "policy": "lite0"}), loaded=loaded)
    assert only.models["lite0"] is logic.models["lite0"] and len(loaded) == 3
    out = only.step(time.monotonic_ns(), _msg(0))  # type: ignore[arg-type]
    assert out[0].payload.model == "yolact_lite0" and only.counters()["usage.lite0"] == 1
