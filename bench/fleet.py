"""Fleet evaluation: wall time of the same drives replayed and scored serially in one
process, on Ray with 1 and 2 CPUs here, and on a local multi-node Ray cluster (a head with no
CPUs and two worker nodes of 1 CPU each, started with ``ray start`` on this machine).
Prints the times side by side with the speed-up over serial, checks that every drive is done
and that every way gives the same figures, and (multi-node) which nodes did the work.

    uv run --extra fleet python bench/fleet.py [--drives 12] [--frames 120] [--json fleet.json]

Ray's start-up is timed apart from the runs (a cluster is normally up already).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from perception.fleet.run import FleetConfig, run_fleet, start_ray  # noqa: E402
from perception.synth import SynthConfig, write_drive  # noqa: E402

LAUNCH = str(ROOT / "launch" / "replay.yaml")


def figures(report: dict) -> list[tuple]:
    return [
        (
            r["drive"],
            r["status"],
            (r.get("masks") or {}).get("ap"),
            (r.get("tracking") or {}).get("hota"),
            (r.get("stats") or {}).get("frames_total"),
        )
        for r in sorted(report["drives"], key=lambda r: r["drive"])
    ]


def timed(drives: list[Path], work: Path, tag: str, **kw: object) -> tuple[float, dict]:
    cfg = FleetConfig(out=work / tag, launch=LAUNCH, overrides=("segmenter.threads=1",), progress=False, **kw)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    report = run_fleet(drives, cfg)
    return time.perf_counter() - t0, report


def ray_cmd(*args: str) -> None:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    subprocess.run([ray, *args], check=True, capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drives", type=int, default=12)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--port", type=int, default=6390, help="GCS port of the local multi-node cluster")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    drives = []
    for k in range(args.drives):
        path = work / f"drive-{k}.mcap"
        write_drive(
            SynthConfig(
                frames=args.frames,
                seed=700 + k,
                width=640,
                height=360,
                fps=10.0,
                scenario=("urban", "highway", "crowd")[k % 3],
            ),
            path,
        )
        drives.append(path)
    rows: dict[str, dict] = {}
    serial_s, serial = timed(drives, work, "serial", executor="serial")
    rows["serial (one process)"] = {"wall_s": serial_s}
    reports = {"serial": serial}
    for cpus in (1, 2):
        t0 = time.perf_counter()
        start_ray(num_cpus=cpus)
        start_s = time.perf_counter() - t0
        wall, reports[f"ray{cpus}"] = timed(drives, work, f"ray{cpus}")
        ray.shutdown()
        rows[f"Ray here, {cpus} CPU{'s' if cpus > 1 else ''}"] = {"wall_s": wall, "ray_start_s": start_s}
    address = f"127.0.0.1:{args.port}"
    try:
        t0 = time.perf_counter()
        ray_cmd("start", "--head", f"--port={args.port}", "--num-cpus=0", "--include-dashboard=false")
        for _ in range(2):
            ray_cmd("start", f"--address={address}", "--num-cpus=1")
        start_s = time.perf_counter() - t0
        wall, reports["cluster"] = timed(drives, work, "cluster", address=address)
        rows["local cluster: head + 2 nodes x 1 CPU"] = {
            "wall_s": wall,
            "ray_start_s": start_s,
            "nodes_used": len(reports["cluster"]["fleet"]["nodes"]),
        }
    finally:
        ray_cmd("stop", "--force")
    frames = sum(r["stats"]["frames_total"] for r in serial["drives"] if r["status"] == "ok")
    print(
        f"{args.drives} drives x {args.frames} frames (640x360, fast model, 1 thread per drive); {frames} frames in all"
    )
    print(f"{'run':42s} {'wall s':>8s} {'speed-up':>9s} {'frames/s':>9s} {'Ray start s':>12s}")
    for name, row in rows.items():
        row["speedup"] = serial_s / row["wall_s"]
        row["fps"] = frames / row["wall_s"]
        start = f"{row['ray_start_s']:.1f}" if "ray_start_s" in row else "-"
        print(f"{name:42s} {row['wall_s']:8.1f} {row['speedup']:8.2f}x {row['fps']:9.1f} {start:>12s}")
    same = all(figures(r) == figures(serial) for r in reports.values())
    done = all(r["fleet"]["ok"] == args.drives for r in reports.values())
    print(
        f"every drive done in every run: {done}; figures identical in every run: {same}; "
        f"multi-node work spread over {rows['local cluster: head + 2 nodes x 1 CPU']['nodes_used']} nodes"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": rows, "all_done": done, "identical": same, "drives": args.drives, "frames": frames}, indent=1
            )
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if same and done else 1


if __name__ == "__main__":
    sys.exit(main())
