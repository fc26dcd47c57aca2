"""Process replay (as openpilot does it): a small committed drive goes through the
preprocess, segmenter and tracker logic in deterministic mode, by the in-process runner
(:mod:`perception.system.inprocess`), and the outputs are compared with committed reference
outputs. After an intended change, rewrite the references with

    uv run pytest tests/test_process_replay.py --update-refs

Tolerances: same number of instances and tracks per frame, same classes and track ids,
boxes within 1 px, scores within 0.02, mask IoU at least 0.95.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from perception.bus.codec import to_plain
from perception.bus.schema import Detections, Tracks
from perception.camera.preprocess import PreprocessConfig
from perception.drives.drive_file import DriveReader
from perception.node.loop import NodeContext
from perception.segmentation.segmenter_logic import SegmenterConfig
from perception.synth import SynthConfig, write_drive
from perception.system.inprocess import InProcessRunner, frame_message, make_stage
from perception.tracking.tracker_config import TrackerConfig

ROOT = Path(__file__).resolve().parents[1]
DRIVE = ROOT / "tests" / "data" / "replay_drive.mcap"
REFS = ROOT / "tests" / "data" / "replay_refs.json"
CARD = ROOT / "models" / "yolact_fast.toml"
BOX_PX, SCORE, MASK_IOU = 1.0, 0.02, 0.95


def run_logs(drive: Path) -> list[dict]:
    """Per frame: the detections and tracks the pipeline's logic produces, as plain dicts."""
    ctx = NodeContext("process-replay", "", deterministic=True)
    configs = {
        "preprocess": PreprocessConfig(width=640, height=320),
        "segmenter": SegmenterConfig(policy="fast", fast=str(CARD), threads=1),
        "tracker": TrackerConfig(),
    }
    runner = InProcessRunner([make_stage(t, cfg, ctx) for t, cfg in configs.items()], fed=("frames",))
    out = []
    for f in DriveReader(drive).frames():
        sent = {s.topic: s for s in runner.feed(frame_message(f.source, f.image, f.source.frame_seq))}
        assert sorted(sent) == ["detections", "frames.rect", "tracks"], sorted(sent)
        det: Detections = sent["detections"].payload  # type: ignore[assignment]
        trk: Tracks = sent["tracks"].payload  # type: ignore[assignment]
        d = to_plain(replace(det, inference_ms=0.0, queue_wait_ms=0.0, frame_age_ms=0.0, policy_reason=""))
        t = to_plain(replace(trk, epoch=0))
        out.append({"frame_seq": f.source.frame_seq, "detections": d, "tracks": t})
    return out


def _iou(a: dict | None, b: dict | None) -> float:
    if a is None or b is None:
        return 1.0 if a is b else 0.0
    enc = [{"size": x["size"], "counts": x["counts"].encode()} for x in (a, b)]
    areas = mask_utils.area(enc)
    if areas[0] == 0 and areas[1] == 0:  # two empty masks (a detection too small to cover a pixel) agree
        return 1.0
    return float(mask_utils.iou([enc[0]], [enc[1]], [0])[0, 0])


def compare(ref: list[dict], new: list[dict]) -> list[str]:
    """Differences beyond tolerance, one line each (empty when the outputs match)."""
    problems = []
    if len(ref) != len(new):
        return [f"{len(new)} frames, references have {len(ref)}"]
    for r, n in zip(ref, new, strict=True):
        seq = r["frame_seq"]
        for kind, items, key in (("detections", "instances", "class_id"), ("tracks", "tracks", "track_id")):
            a, b = r[kind][items], n[kind][items]
            if len(a) != len(b):
                problems.append(f"frame {seq}: {len(b)} {items}, references have {len(a)}")
                continue
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                where = f"frame {seq} {items}[{i}]"
                if x[key] != y[key] or x["class_id"] != y["class_id"]:
                    problems.append(
                        f"{where}: {key} {y[key]} class {y['class_id']}, references {x[key]} class {x['class_id']}"
                    )
                if np.abs(np.subtract(x["box_xyxy"], y["box_xyxy"])).max() > BOX_PX:
                    problems.append(f"{where}: box {y['box_xyxy']} vs {x['box_xyxy']}")
                if abs(x["score"] - y["score"]) > SCORE:
                    problems.append(f"{where}: score {y['score']:.3f} vs {x['score']:.3f}")
                if _iou(x.get("mask"), y.get("mask")) < MASK_IOU:
                    problems.append(f"{where}: mask IoU {_iou(x.get('mask'), y.get('mask')):.3f} < {MASK_IOU}")
    return problems


def test_outputs_match_references(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--update-refs"):
        if not DRIVE.exists():
            write_drive(SynthConfig(frames=12, seed=4242, scenario="urban"), DRIVE)
        REFS.write_text(json.dumps(run_logs(DRIVE), indent=1))
        pytest.skip(f"references rewritten: {REFS}")
    problems = compare(json.loads(REFS.read_text()), run_logs(DRIVE))
    assert not problems, "outputs changed beyond tolerance:\n" + "\n".join(problems[:20])


def test_comparison_catches_a_changed_output() -> None:
    ref = json.loads(REFS.read_text())
    assert any(f["detections"]["instances"] for f in ref), "references hold no instances to compare"
    changed = json.loads(REFS.read_text())
    frame = next(f for f in changed if f["detections"]["instances"])
    inst = frame["detections"]["instances"][0]
    inst["box_xyxy"] = [v + 3.0 for v in inst["box_xyxy"]]
    assert any("box" in p for p in compare(ref, changed))
    inst["score"] -= 0.1
    assert any("score" in p for p in compare(ref, changed))
    frame["detections"]["instances"].pop()
    assert any("instances" in p for p in compare(ref, changed))
