"""``perception fleet``: drives as Ray tasks give the figures of ``perception replay
--deterministic --record`` + ``perception eval`` drive by drive, pooled figures equal to
scoring all outputs together; results cached by content; a killed worker is retried; a
corrupt drive is a failed row; the workers run this environment's ONNX Runtime build (also
under `uv run --extra fleet`), and without one the command says at once what to add."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray")

from perception.cli import main  # noqa: E402
from perception.evaluation.report import read_run, score_runs  # noqa: E402
from perception.fleet.job import _extras_of, runtime_build  # noqa: E402
from perception.fleet.run import FleetConfig, _no_uv_run_hook, _task_error, run_fleet, worker_env  # noqa: E402
from perception.synth import SynthConfig, write_drive  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
LAUNCH = str(ROOT / "launch" / "replay.yaml")
SETTINGS = ("segmenter.threads=1",)


def _figures(report: dict) -> dict:
    """What must be identical between two ways of scoring a run."""
    m, t, s = report["masks"] or {}, report["tracking"] or {}, report["stats"]
    return {
        "ap": m.get("ap"),
        "ap50": m.get("ap50"),
        "gt": m.get("gt_instances"),
        "det": m.get("detections"),
        "hota": t.get("hota"),
        "idsw": t.get("idsw"),
        "pred_dets": t.get("pred_dets"),
        "frames": s["frames_total"],
        "with_det": s["frames_with_detections"],
        "with_trk": s["frames_with_tracks"],
        "models": s["model_usage"],
    }


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("drives")
    out = []
    for k, scenario in enumerate(["urban", "highway", "crowd"] * 2):
        path = folder / f"{scenario}-{k}.mcap"
        write_drive(SynthConfig(frames=10, seed=300 + k, width=320, height=180, fps=10.0, scenario=scenario), path)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def fleet_report(drives: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("fleet")
    return run_fleet(drives, FleetConfig(out=out, launch=LAUNCH, overrides=SETTINGS, num_cpus=2, progress=False))


def _rows(report: dict) -> dict[str, dict]:
    return {row["drive"]: row for row in report["drives"]}


def test_fleet_equals_replay_record_then_eval(drives: list[Path], fleet_report: dict, tmp_path: Path) -> None:
    runs = {}
    rows = _rows(fleet_report)
    assert fleet_report["fleet"]["ok"] == 6 and fleet_report["fleet"]["replayed"] == 6
    for drive in drives:
        run = tmp_path / f"{drive.stem}-run.mcap"
        assert (
            main(
                [
                    "replay",
                    str(drive),
                    "--deterministic",
                    "--record",
                    str(run),
                    "--run",
                    drive.stem,
                    *[a for s in SETTINGS for a in ("--set", s)],
                ]
            )
            == 0
        )
        assert main(["eval", str(run), "--out", str(tmp_path / drive.stem), "--no-plots"]) == 0
        single = json.loads((tmp_path / drive.stem / "report.json").read_text())
        assert _figures(rows[drive.name]) == _figures(single), drive.name
        runs[drive.name] = read_run(run)
    pooled = score_runs(runs, "all", {}).to_dict(timeline=False)
    assert _figures(fleet_report) == _figures(pooled)
    assert fleet_report["masks"]["images"] == sum(r["masks"]["images"] for r in rows.values())
    aps = [row["masks"]["ap"] for row in fleet_report["drives"]]
    assert aps == sorted(aps)  # worst first


def test_a_rerun_takes_every_drive_from_the_cache(drives: list[Path], tmp_path: Path) -> None:
    cfg = FleetConfig(out=tmp_path, launch=LAUNCH, overrides=SETTINGS, executor="serial", progress=False)
    first = run_fleet(drives[:2], cfg)
    again = run_fleet(drives[:2], cfg)
    assert again["fleet"]["cached"] == 2 and again["fleet"]["replayed"] == 0
    assert [_figures(r) for r in again["drives"]] == [_figures(r) for r in first["drives"]]
    changed = run_fleet(
        drives[:2],
        FleetConfig(
            out=tmp_path,
            launch=LAUNCH,
            overrides=(*SETTINGS, "tracker.min_hits=1"),
            executor="serial",
            progress=False,
            baseline=tmp_path / "report.json",
        ),
    )
    assert changed["fleet"]["replayed"] == 2  # another tracker setting: another cache key
    assert {m["drive"] for m in changed["moved"]} == {d.name for d in drives[:2]}


def test_a_killed_worker_is_retried_and_the_report_is_identical(
    drives: list[Path], fleet_report: dict, tmp_path: Path
) -> None:
    killed: list[int] = []
    stop = threading.Event()

    def kill_one() -> None:
        while not stop.is_set() and not killed:
            for p in psutil.process_iter(["cmdline"]):
                if any("fleet_drive" in part for part in (p.info["cmdline"] or [])):
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        report = run_fleet(
            drives, FleetConfig(out=tmp_path, launch=LAUNCH, overrides=SETTINGS, num_cpus=2, progress=False)
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no fleet worker was seen to kill"
    assert report["fleet"]["ok"] == 6
    assert {k: _figures(r) for k, r in _rows(report).items()} == {
        k: _figures(r) for k, r in _rows(fleet_report).items()
    }
    assert _figures(report) == _figures(fleet_report)


def test_a_corrupt_drive_is_a_failed_row_and_the_rest_complete(
    drives: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "corrupt.mcap"
    bad.write_bytes(drives[0].read_bytes()[:5000])
    code = main(
        [
            "fleet",
            str(drives[1]),
            str(bad),
            "--out",
            str(tmp_path / "out"),
            "--num-cpus",
            "2",
            "--no-progress",
            *[a for s in SETTINGS for a in ("--set", s)],
        ]
    )
    text = capsys.readouterr().out
    assert code == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = _rows(report)
    assert rows["corrupt.mcap"]["status"] == "failed" and "corrupt.mcap" in rows["corrupt.mcap"]["error"]
    assert rows[drives[1].name]["status"] == "ok" and report["drives"][0]["drive"] == "corrupt.mcap"
    assert "FAILED corrupt.mcap: " in text
    assert main(["fleet", str(tmp_path / "nothing-*.mcap"), "--out", str(tmp_path / "o2")]) == 2


def test_the_workers_get_this_environments_onnxruntime_build() -> None:
    ort = pytest.importorskip("onnxruntime")
    assert runtime_build() in (f"onnxruntime=={ort.__version__}", f"onnxruntime-gpu[cuda,cudnn]=={ort.__version__}")
    assert _extras_of("onnxruntime-gpu") == "[cuda,cudnn]" and _extras_of("onnxruntime") == ""
    assert worker_env(None) == {"py_executable": sys.executable}
    assert set(worker_env("auto")) == {"py_modules"}


def test_under_uv_run_the_workers_still_run_this_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ray's `uv run` integration would start the workers with `uv run --extra fleet`, an
    environment without ONNX Runtime (issue 40); the fleet's ray.init turns it off."""
    from ray._private import ray_constants, worker
    from ray._private.runtime_env import uv_runtime_env_hook

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        uv_runtime_env_hook,
        "_get_uv_run_cmdline",
        lambda: ["uv", "run", "--extra", "fleet", "perception", "fleet", "d.mcap"],
    )
    monkeypatch.setattr(ray_constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV", True)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "1")
    assert worker._maybe_modify_runtime_env(worker_env(None), False)["py_executable"].startswith("uv run --extra fleet")
    _no_uv_run_hook()
    assert worker._maybe_modify_runtime_env(worker_env(None), False) == {"py_executable": sys.executable}


def test_without_onnxruntime_the_command_says_at_once_what_to_add(
    drives: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("perception.fleet.run.runtime_build", lambda: None)
    assert main(["fleet", str(drives[0]), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add --extra cpu (or --extra gpu)" in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_cluster_that_cannot_install_the_build_says_what_to_install() -> None:
    import ray

    error = ray.exceptions.RuntimeEnvSetupError("Failed to set up runtime environment.")
    assert _task_error(error, {}) == "RuntimeEnvSetupError: Failed to set up runtime environment."
    text = _task_error(error, {"pip": ["onnxruntime==1.31.1"]})
    assert "\n" not in text and "install those, or onnxruntime==1.31.1 itself, there" in text
