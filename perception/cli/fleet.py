"""``perception fleet DRIVE_OR_GLOB... --out DIR``: replay and score many drives as Ray tasks
(``--extra fleet``), one report pooling them."""

from __future__ import annotations

import argparse
from pathlib import Path

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "replay.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("drives", nargs="+", help="drive files or globs (quote globs: 'drives/**/*.mcap')")
    p.add_argument("--out", required=True, help="folder for report.json, runs/ and the result cache")
    p.add_argument("--launch", default=str(LAUNCH), help="launch file of the pipeline (default: launch/replay.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.KEY=VALUE")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster: auto (the one `ray start` made here) or ray://HOST:10001; default: start Ray here",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the Ray started here (default: all)")
    p.add_argument("--cpus-per-drive", type=float, default=1.0, help="CPUs per drive task (segmenter threads)")
    p.add_argument("--gpus-per-drive", type=float, default=0.0, help="GPUs per drive task")
    p.add_argument("--retries", type=int, default=3, help="retries of a task whose worker died (default 3)")
    p.add_argument("--serial", action="store_true", help="no Ray: one drive after the other in this process")
    p.add_argument("--baseline", type=Path, default=None, help="a previous report.json: list the drives that moved")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from perception.fleet.run import FleetConfig, expand, run_fleet

    cfg = FleetConfig(
        out=Path(args.out),
        launch=args.launch,
        overrides=tuple(args.overrides),
        address=args.address,
        num_cpus=args.num_cpus,
        cpus_per_drive=args.cpus_per_drive,
        gpus_per_drive=args.gpus_per_drive,
        retries=args.retries,
        executor="serial" if args.serial else "ray",
        baseline=args.baseline,
        progress=not args.no_progress,
    )
    report = run_fleet(expand(args.drives), cfg)
    f = report["fleet"]
    masks, tracking = report.get("masks") or {}, report.get("tracking") or {}
    print(
        f"fleet: {f['drives']} drives ({f['ok']} ok, {f['failed']} failed, {f['cached']} from the cache), "
        f"{f['frames_replayed']} frames replayed in {f['wall_s']:.1f} s ({f['fps']:.1f} frames/s)"
    )
    if masks:
        print(f"pooled: mask AP {masks['ap']:.3f}" + (f", HOTA {tracking['hota']:.3f}" if tracking else ""))
    for row in report["drives"][:10]:
        if row["status"] == "failed":
            print(f"  FAILED {row['drive']}: {row['error']}")
        else:
            m, t = row.get("masks") or {}, row.get("tracking") or {}
            print(f"  {row['drive']}: mask AP {m.get('ap', float('nan')):.3f}, HOTA {t.get('hota', float('nan')):.3f}")
    for m in report.get("moved", []):
        print(f"  moved {m['drive']}: mask AP {m['mask_ap_change']:+.3f}, HOTA {m['hota_change']:+.3f}")
    print(f"wrote {Path(args.out) / 'report.json'}")
    return 1 if f["failed"] else 0
