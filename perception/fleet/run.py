"""``perception fleet``: every drive a Ray task (:func:`perception.fleet.job.run_drive`),
results cached by content, a report that pools them.

Ray starts locally when no address is given (nothing to set up); with ``address`` (``auto``,
``ray://host:10001``) the same run goes to an existing cluster, the package itself shipped in
the job's runtime environment. The workers run this environment's ONNX Runtime build: here
they run this interpreter; on a cluster Ray installs the build where its workers lack it. A
task whose worker dies is retried by Ray (``max_retries``); since a drive's replay is
deterministic the retried result is the one an undisturbed run gives. A drive that fails on
its own (corrupt, unreadable) is a failed row and the others go on. ``OUT/cache/<key>.json``
and ``OUT/runs/<drive>.mcap`` hold each drive's result, keyed by the drive's bytes, the launch
parameters and the model files, so a re-run only does what changed.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from perception.evaluation.report import read_run, score_runs
from perception.fleet.job import Bundle, DriveResult, FleetError, cache_key, make_bundle, run_drive, runtime_build
from perception.node.config import ConfigError
from perception.system.launch import load_launch

log = logging.getLogger(__name__)

#: how many drives' figures moved most against a baseline are listed
MOVED = 10


@dataclass(frozen=True)
class FleetConfig:
    """How a fleet run is done. ``launch``/``overrides``: the pipeline (``--set
    node.key=value``); ``address``: a Ray cluster (None: start Ray here with ``num_cpus``,
    default all); ``cpus_per_drive``/``gpus_per_drive``: resources of each task (its
    segmenter gets that many threads); ``executor``: ``"ray"`` or ``"serial"`` (in this
    process, one drive after the other: the baseline of ``bench/fleet.py``)."""

    out: Path
    launch: str
    overrides: tuple[str, ...] = ()
    address: str | None = None
    num_cpus: int | None = None
    cpus_per_drive: float = 1.0
    gpus_per_drive: float = 0.0
    retries: int = 3
    executor: str = "ray"
    baseline: Path | None = None
    progress: bool = True


def expand(patterns: Sequence[str]) -> list[Path]:
    """Drive files named by paths or globs, in order, each once; :class:`FleetError` for a
    pattern that names nothing."""
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches or (not glob.has_magic(pattern) and not Path(pattern).exists()):
            raise FleetError(f"{pattern}: no such drive file (or no file matches the pattern)")
        out += [Path(m) for m in matches if Path(m) not in out]
    if not out:
        raise FleetError("no drives given")
    return out


def _names(drives: Sequence[Path]) -> list[str]:
    """Unique row names: the file name, with its folder where two drives share a name."""
    names = [d.name for d in drives]
    return [str(d) if names.count(d.name) > 1 else d.name for d in drives]


def _bundle(cfg: FleetConfig, first_drive: Path) -> Bundle:
    """The launch file's pipeline. Its replay node (if any) is not run, but the launch file
    is validated whole, so it is pointed at a drive of the run."""
    try:
        spec = load_launch(cfg.launch, [f"replay.drive={first_drive.resolve()}", *cfg.overrides])
    except ConfigError as e:
        if "no node 'replay'" not in str(e):
            raise
        spec = load_launch(cfg.launch, list(cfg.overrides))
    bundle = make_bundle(spec)
    seg = dict(bundle.params["segmenter"])
    if not seg.get("threads"):
        seg["threads"] = max(1, int(cfg.cpus_per_drive))
    return replace(bundle, params={**bundle.params, "segmenter": seg})


def run_fleet(
    drives: Sequence[Path], cfg: FleetConfig, on_result: Callable[[DriveResult], None] | None = None
) -> dict[str, Any]:
    """Replay and score ``drives``; writes ``OUT/report.json`` and returns it: the pooled
    figures under ``perception eval``'s keys, ``drives`` (each drive's own report under those
    keys, worst mask AP first; failed drives first, with their error), ``fleet`` (counts,
    wall time, frames per second) and, with a baseline, ``moved``."""
    t0 = time.monotonic()
    out = Path(cfg.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    bundle = _bundle(cfg, drives[0])
    results: dict[str, DriveResult] = {}
    todo: list[tuple[str, str, bytes]] = []
    for name, path in zip(_names(drives), drives, strict=True):
        try:
            data = path.read_bytes()
        except OSError as e:
            results[name] = DriveResult(name, "", None, f"{type(e).__name__}: {e}")
            continue
        key = cache_key(data, bundle)
        cached = _cached(out, name, key)
        if cached is not None:
            results[name] = cached
        else:
            todo.append((name, key, data))
    cached_n = len(results)
    bar = tqdm(total=len(drives), initial=cached_n, disable=not cfg.progress, desc="fleet", unit="drive")
    frames = 0

    def done(result: DriveResult) -> None:
        nonlocal frames
        results[result.name] = _store(out, result)
        frames += result.frames
        bar.update(1)
        bar.set_postfix({"fps": f"{frames / max(1e-9, time.monotonic() - t0):.1f}"}, refresh=False)
        if on_result is not None:
            on_result(result)

    build = require_runtime() if todo else ""
    if todo and cfg.executor == "serial":
        for name, key, data in todo:
            done(run_drive(name, key, data, bundle))
    elif todo:
        _run_on_ray(todo, bundle, cfg, build, done)
    bar.close()
    report = _report([results[n] for n in _names(drives)], out, cfg, time.monotonic() - t0, cached_n, frames)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _run_on_ray(
    todo: list[tuple[str, str, bytes]],
    bundle: Bundle,
    cfg: FleetConfig,
    build: str,
    done: Callable[[DriveResult], None],
) -> None:
    """The drives as Ray tasks, whose workers get this environment's ONNX Runtime ``build``."""
    import ray

    started = not ray.is_initialized()
    if started:
        start_ray(cfg.address, cfg.num_cpus)
    try:
        task_env = _cluster_runtime(build) if started and cfg.address else {}
        options: dict[str, Any] = {
            "num_cpus": cfg.cpus_per_drive,
            "num_gpus": cfg.gpus_per_drive,
            "name": "fleet_drive",
            **({"runtime_env": task_env} if task_env else {}),
        }
        task = ray.remote(max_retries=cfg.retries, retry_exceptions=False)(_ray_task).options(**options)
        bundle_ref = ray.put(bundle)
        pending = {task.remote(name, key, data, bundle_ref): (name, key) for name, key, data in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name, key = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as e:  # workers died more often than the retries allow, or no environment
                result = DriveResult(name, key, None, _task_error(e, task_env))
            done(result)
    finally:
        if started:
            ray.shutdown()


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """``ray.init`` for fleet runs: a Ray of ``num_cpus`` here, or the cluster at
    ``address``, the job's workers in :func:`worker_env` (this environment's ONNX Runtime)."""
    import ray

    _no_uv_run_hook()
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "runtime_env": worker_env(address),
    }
    if address:
        ray.init(address=address, **kwargs)
    else:  # "local": a Ray of its own, even where `ray start` left a cluster to connect to
        ray.init(address="local", num_cpus=num_cpus, **kwargs)


def _task_error(e: Exception, task_env: dict[str, Any]) -> str:
    """A failed task's row error, in one line; where Ray could not build the runtime
    environment that installs the ONNX Runtime build, what to do instead."""
    import ray

    text = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    if task_env.get("pip") and isinstance(e, ray.exceptions.RuntimeEnvSetupError):
        text += (
            f" (Ray's pip environment for {task_env['pip'][0]} needs pip and virtualenv on the cluster's "
            f"nodes: install those, or {task_env['pip'][0]} itself, there)"
        )
    return text


def require_runtime() -> str:
    """The ONNX Runtime build of this environment (:func:`runtime_build`), which the drives'
    workers get too; :class:`FleetError` saying what to add when there is none."""
    build = runtime_build()
    if build is None:
        raise FleetError(
            "ONNX Runtime is not installed in this environment, and the fleet's workers run its build: "
            "add --extra cpu (or --extra gpu), as in `uv run --extra cpu --extra fleet perception fleet ...`"
        )
    return build


def worker_env(address: str | None) -> dict[str, Any]:
    """The runtime environment of the job. Here: this interpreter (``sys.executable``), so
    the workers import this environment's packages, its ONNX Runtime build among them. On a
    cluster: the package as a ``py_module`` (the cluster's Python brings the rest)."""
    if not address:
        return {"py_executable": sys.executable}
    import perception

    return {"py_modules": [str(Path(perception.__file__).parent)]}


def _cluster_runtime(build: str) -> dict[str, Any]:
    """The drive tasks' own runtime environment on a cluster: nothing when a worker there
    already has this environment's ONNX Runtime ``build``, else a ``pip`` environment that
    installs it (Ray builds it on each node before the first task)."""
    import ray

    theirs = ray.get(ray.remote(num_cpus=0)(runtime_build).remote())
    if theirs == build:
        return {}
    log.warning(
        "the cluster's workers have %s, this environment %s: Ray installs %s for the drives",
        theirs or "no ONNX Runtime",
        build,
        build,
    )
    return {"pip": [build]}


def _no_uv_run_hook() -> None:
    """Turn off Ray's ``uv run`` integration for this process's ``ray.init``. Under ``uv
    run`` it would start each worker with ``uv run`` and the command's own options in a copy
    of the project, an environment of the extras the command named (``uv run --extra fleet``:
    no ONNX Runtime); :func:`worker_env` gives the workers their environment instead. Ray
    reads the switch when it is first imported, so an already imported Ray gets it set too."""
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    from ray._private import ray_constants

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False


def _ray_task(name: str, key: str, drive: bytes, bundle: Bundle) -> DriveResult:
    import ray

    return run_drive(name, key, drive, bundle, ray.get_runtime_context().get_node_id())


def _cache_file(out: Path, key: str) -> Path:
    return out / "cache" / f"{key}.json"


def _run_file(out: Path, name: str) -> Path:
    return out / "runs" / (name.removesuffix(".mcap").replace("/", "_") + ".mcap")


def _cached(out: Path, name: str, key: str) -> DriveResult | None:
    file = _cache_file(out, key)
    if not file.is_file() or not _run_file(out, name).is_file():
        return None
    try:
        row = json.loads(file.read_text())
        return replace(DriveResult(**row), name=name, frames=0)
    except (ValueError, TypeError):
        return None


def _store(out: Path, result: DriveResult) -> DriveResult:
    """Write a finished drive's run file and cache entry (failed drives are not cached)."""
    if result.report is None:
        return result
    run = _run_file(out, result.name)
    run.write_bytes(result.run)
    report = {**result.report, "run": str(run.relative_to(out))}
    kept = replace(result, report=report, run=b"")
    row = asdict(replace(kept, data=None))
    del row["run"], row["data"]
    _cache_file(out, result.key).write_text(json.dumps(row))
    return kept


def _ap(report: dict[str, Any] | None) -> float:
    masks = (report or {}).get("masks") or {}
    return masks.get("ap") if masks.get("ap") is not None else -1.0


def _hota(report: dict[str, Any] | None) -> float:
    tracking = (report or {}).get("tracking") or {}
    return tracking.get("hota") if tracking.get("hota") is not None else -1.0


def _report(
    results: list[DriveResult], out: Path, cfg: FleetConfig, wall_s: float, cached: int, frames: int
) -> dict[str, Any]:
    ok = [r for r in results if r.report is not None]
    runs = {r.name: r.data if r.data is not None else read_run(out / r.report["run"]) for r in ok}  # type: ignore[index]
    pooled = score_runs(runs, "fleet", {"drives": len(results), "launch": cfg.launch}).to_dict(timeline=False)
    rows = [
        {
            "drive": r.name,
            "status": "ok" if r.report is not None else "failed",
            "error": r.error,
            "key": r.key,
            "node": r.node,
            "wall_s": round(r.wall_s, 3),
            **(r.report or {}),
        }
        for r in results
    ]
    rows.sort(key=lambda row: (row["status"] == "ok", _ap(row), _hota(row)))
    report = {
        **pooled,
        "drives": rows,
        "fleet": {
            "drives": len(results),
            "ok": len(ok),
            "failed": len(results) - len(ok),
            "cached": cached,
            "replayed": len(results) - cached,
            "frames_replayed": frames,
            "wall_s": round(wall_s, 2),
            "fps": round(frames / wall_s, 2) if wall_s > 0 else 0.0,
            "executor": cfg.executor,
            "nodes": sorted({r.node for r in ok if r.node}),
        },
    }
    if cfg.baseline is not None:
        report["moved"] = moved(report, json.loads(Path(cfg.baseline).read_text()))
    return report


def moved(report: dict[str, Any], baseline: dict[str, Any], top: int = MOVED) -> list[dict[str, Any]]:
    """The drives whose mask AP or HOTA changed most against ``baseline`` (a previous
    report.json), largest change first."""
    before = {row["drive"]: row for row in baseline.get("drives", [])}
    out = []
    for row in report["drives"]:
        old = before.get(row["drive"])
        if old is None or row["status"] != "ok" or old.get("status") != "ok":
            continue
        d_ap, d_hota = _ap(row) - _ap(old), _hota(row) - _hota(old)
        out.append(
            {
                "drive": row["drive"],
                "mask_ap": _ap(row),
                "mask_ap_change": d_ap,
                "hota": _hota(row),
                "hota_change": d_hota,
            }
        )
    out.sort(key=lambda m: -max(abs(m["mask_ap_change"]), abs(m["hota_change"])))
    return out[:top]
