"""Learning curve: mask AP on a validation set against CPU-minutes of training, for our recipe
from the pretrained trunk, the same from random init, and a peer's, trained in one run on
the same training frames for the same CPU time.

    uv run python bench/learning_curve.py [--data SPEC] [--val SPEC[,SPEC...]] [--minutes 20]
        [--points 0.25 0.5 1] [--cards models/yolact_lite0.toml ...] [--jobs 2] [--val-images N]
        [--no-random] [--no-peer] [--json curve.json] [--plot curve.png]

e.g. ``--data yolo-seg:../shared/data/cityscapes/train --val yolo-seg:../shared/data/cityscapes/val
--cards models/yolact_lite0.toml --minutes 60``. Without ``--data``/``--val``: ``synth``, the
first card's synthetic frame bank, scored on six held-out drives (urban, highway, crowd; day
and night; seeds 9100 and up, never trained on; :mod:`bench.heldout`).

- Trainers (data: :mod:`bench.curve_data`; cards and scoring: :mod:`bench.curve_models`):
  ``ours:<card>``, ``perception train --data SPEC --val SPEC`` on a copy of each card (its
  ``[training]`` recipe and augmentation), from the card's pretrained trunk when it names
  one; ``ours:<card>-random``, the same card from random init (not with ``--no-random``,
  nor for a card without a pretrained trunk); ``peer:yolo11n-seg``, Ultralytics YOLO11n-seg
  from its ``.yaml`` (random init, its default recipe: mosaic, task-aligned assignment, its
  loss balance and schedule; batches of 8, its optimizer stepping every 64 images; ``imgsz``
  the card's longer input side) on the same frames as a YOLO-seg folder of its own
  (:mod:`bench.yolo_peer`); its steps are batches.
- Budget: each trainer is one process on one thread with ``--minutes`` of its own CPU time
  (time.process_time, counted from its first batch; data loading in the same process, so
  counted), ``--jobs`` of them at once (default one per core; more only stretches the wall
  time: budgets and snapshots are CPU time, and the peer's wall-clock schedule is rescaled
  to its CPU pace); weights snapshots at the ``--points`` (fractions of the budget). Our
  trainers validate once, after the budget.
- Scoring: every snapshot through the torch-free runtime (ONNX Runtime) on each image of
  each ``--val`` set (``--val-images``: that many, evenly spaced) by the code of
  ``perception eval --card --data``.

Prints, per model and point: steps, images seen, mask AP, AP50, AP of car and person (means
over the sets, and AP per set when there are several); then the first card's run minus each
other run. ``--json`` writes all figures, ``--plot`` the curves. ``--existing CARD FOLDER``
scores the snapshots of an earlier ``perception train --cpu-minutes`` run instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.curve_data import ValSet, absolute_specs, training_spec, val_sets, yolo_dataset  # noqa: E402
from bench.curve_models import FIGURES, score_ours, score_peer, trainer_card  # noqa: E402
from perception.node.config import build_config  # noqa: E402
from perception.segmentation.card import load_card  # noqa: E402
from perception.train.config import TrainConfig  # noqa: E402
from perception.train.labelled import ClassMap  # noqa: E402

PEER = "peer:yolo11n-seg"
PEER_BATCH = 8
Results = dict[str, list[dict[str, Any]]]  # label -> one row per curve point
TITLES = {f: f.upper() if f.startswith("ap") else f for f in FIGURES}


@dataclass(frozen=True)
class Trainer:
    label: str
    cmd: list[str]
    snapshots: Path  # folder of its cpu-<minutes>.pt
    log: Path
    batch: int
    card: Path | None = None  # ours: the card its snapshots are scored with
    cwd: Path | None = None


def batch_size(card: Path) -> int:
    c = load_card(card)
    return build_config(TrainConfig, c.training, c.where("training")).batch_size


def our_trainers(a: argparse.Namespace, out: Path, points: list[float], data: str, val: str) -> list[Trainer]:
    trainers = []
    for card in a.cards:
        pretrained = bool(load_card(card).architecture.get("pretrained"))
        for stem, random_init in [(card.stem, False)] + (
            [(f"{card.stem}-random", True)] if pretrained and not a.no_random else []
        ):
            folder = out / "ours" / stem
            tmp = trainer_card(card.resolve(), folder, random_init)
            (folder / "run").mkdir(parents=True, exist_ok=True)
            link = folder / "run" / "frame_bank"  # one synthetic frame bank for all
            if not link.exists():
                (out / "frame_bank").mkdir(exist_ok=True)
                link.symlink_to(out / "frame_bank", target_is_directory=True)
            cmd = [
                sys.executable,
                "-m",
                "perception",
                "train",
                "--card",
                str(tmp),
                "--run-dir",
                str(folder / "run"),
                "--no-progress",
                "--cpu-minutes",
                str(a.minutes),
                "--snapshot-minutes",
                *map(str, points),
                "--threads",
                "1",
                "--workers",
                "0",
                "--eval-every",
                str(10**9),
                "--data",
                data,
                "--val",
                val,
            ]
            trainers.append(
                Trainer(
                    f"ours:{stem}",
                    cmd,
                    folder / "run" / load_card(tmp).name / "snapshots",
                    folder / "train.log",
                    batch_size(tmp),
                    card=tmp,
                )
            )
    return trainers


def peer_trainer(a: argparse.Namespace, out: Path, points: list[float], yaml: Path, imgsz: int) -> Trainer:
    folder = out / "peer"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "yolo_peer.py"),
        str(yaml),
        str(folder),
        "--minutes",
        str(a.minutes),
        "--snapshots",
        *map(str, points),
        "--imgsz",
        str(imgsz),
        "--batch",
        str(PEER_BATCH),
    ]
    return Trainer(PEER, cmd, folder, out / "peer.log", PEER_BATCH, cwd=folder)


def run_all(trainers: list[Trainer], jobs: int) -> list[str]:
    """Run the trainers, ``jobs`` at once; returns the labels of those that failed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, failed = list(trainers), {}, []
    t0 = time.monotonic()
    while pending or running:
        while pending and len(running) < jobs:
            t = pending.pop(0)
            print(f"[{time.monotonic() - t0:6.0f} s] start {t.label} (log {t.log})", flush=True)
            running[t.label] = subprocess.Popen(
                t.cmd, env=env, cwd=t.cwd, stdout=open(t.log, "w"), stderr=subprocess.STDOUT
            )
        time.sleep(2)
        for label, p in list(running.items()):
            if p.poll() is not None:
                del running[label]
                print(
                    f"[{time.monotonic() - t0:6.0f} s] {label} "
                    + ("done" if p.returncode == 0 else f"FAILED (exit {p.returncode})"),
                    flush=True,
                )
                if p.returncode != 0:
                    failed.append(label)
    return failed


def curve(
    t: Trainer,
    snaps: list[tuple[float, Path]],
    sets: list[ValSet],
    a: argparse.Namespace,
    class_ids: set[int],
    size: tuple[int, int],
    work: Path,
) -> list[dict[str, object]]:
    """One row per ``(CPU-minutes, snapshot file)`` there is: steps, images seen, scores (the
    exported models in ``work``)."""
    import torch

    rows = []
    for m, snap in snaps:
        if not snap.is_file():
            print(f"{t.label}: no snapshot at {m:g} CPU-minutes")
            continue
        steps = int(torch.load(snap, weights_only=True).get("step", 0))
        where = work / t.label.replace(":", "-") / f"cpu-{m:g}"
        scores = (
            score_ours(t.card, snap, where, sets, a.threads, class_ids)
            if t.card
            else score_peer(snap, where, sets, a.threads, *size, class_ids)
        )
        rows.append({"cpu_minutes": m, "steps": steps, "images": steps * t.batch, **scores})
        print(f"  scored {t.label} at {m:g} CPU-minutes: mask AP {rows[-1]['mean_ap']:.3f}", flush=True)
    return rows


def fmt(v: float | None, scale: float = 1.0, sign: str = "") -> str:
    return "-" if v is None else f"{v * scale:{sign}.{1 if scale > 1 else 3}f}"


def print_table(results: Results, sets: list[ValSet]) -> None:
    names = [s.name for s in sets] if len(sets) > 1 else []
    print(
        f"\n{'model':<28}{'CPU-min':>8}{'steps':>7}{'images':>8}"
        + "".join(f"{TITLES[f]:>8}" for f in FIGURES)
        + "".join(f"{n:>15}" for n in names)
    )
    for label, rows in results.items():
        for r in rows:
            print(
                f"{label:<28}{r['cpu_minutes']:>8g}{r['steps']:>7}{r['images']:>8}"
                + "".join(f"{fmt(r['mean'][f]):>8}" for f in FIGURES)
                + "".join(f"{fmt(r['sets'][n]['ap']):>15}" for n in names)
            )
    if len(sets) > 1:
        print(f"(AP, AP50, car, person: means over the {len(sets)} validation sets; then AP per set)")


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def print_differences(results: Results, sets: list[ValSet]) -> None:
    """The first run minus each other run at each point, in mask AP points."""
    ref_label, ref = next(iter(results.items()))
    names = [s.name for s in sets] if len(sets) > 1 else []
    for label, rows in list(results.items())[1:]:
        print(f"\n{ref_label} minus {label} (mask AP points):")
        other = {r["cpu_minutes"]: r for r in rows}
        for r in ref:
            if (o := other.get(r["cpu_minutes"])) is None:
                continue
            d = {f: diff(r["mean"][f], o["mean"][f]) for f in FIGURES}
            per_set = {n: diff(r["sets"][n]["ap"], o["sets"][n]["ap"]) for n in names}
            below = [k for k, v in {"AP": d["ap"], **per_set}.items() if v is not None and v < 0]
            print(
                f"  {r['cpu_minutes']:>6g} min: "
                + "  ".join(f"{TITLES[f]} {fmt(v, 100, '+')}" for f, v in d.items())
                + "".join(f"  {n} {fmt(v, 100, '+')}" for n, v in per_set.items())
                + ("   (at or above)" if not below else "   (BELOW: " + ", ".join(below) + ")")
            )


def plot(results: Results, sets: list[ValSet], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in results.items():
        ax.plot([r["cpu_minutes"] for r in rows], [r["mean_ap"] for r in rows], marker="o", label=label)
    ax.set_xlabel("CPU-minutes of training (one core)")
    ax.set_ylabel(f"mask AP, mean of {len(sets)} validation sets" if len(sets) > 1 else f"mask AP, {sets[0].name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(a: argparse.Namespace, results: Results, sets: list[ValSet], **meta: object) -> None:
    print_table(results, sets)
    if len(results) > 1:
        print_differences(results, sets)
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "data": a.data,
                    "val": a.val,
                    **meta,
                    "val_sets": [{"name": s.name, "images": len(s.images)} for s in sets],
                    "results": results,
                },
                indent=1,
            )
        )
    if a.plot:
        plot(results, sets, a.plot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default="synth",
        metavar="SPEC",
        help="training frames, one source as perception train --data reads it (default synth)",
    )
    ap.add_argument(
        "--val",
        default="synth",
        metavar="SPEC[,SPEC...]",
        help="validation sets (synth: the six held-out drives); default synth",
    )
    ap.add_argument(
        "--cards",
        type=Path,
        nargs="+",
        default=[ROOT / "models" / "yolact_fast.toml"],
        help="our recipes: model cards (their [training] and [data]); the first one's bank is shared",
    )
    ap.add_argument("--minutes", type=float, default=20.0, help="CPU-minutes of training per model")
    ap.add_argument("--points", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="curve points (fractions)")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="trainers at once (one core each)")
    ap.add_argument("--no-random", action="store_true", help="skip our cards from random init")
    ap.add_argument("--no-peer", action="store_true", help="skip Ultralytics YOLO11n-seg")
    ap.add_argument("--frames", type=int, default=40, help="frames per held-out drive (--val synth)")
    ap.add_argument("--val-images", type=int, default=0, help="score this many images of each val set (0: all)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="PNG of the curves")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads when scoring")
    ap.add_argument(
        "--existing",
        nargs=2,
        metavar=("CARD", "SNAPSHOTS"),
        type=Path,
        default=None,
        help="train nothing: score the cpu-<minutes>.pt snapshots of an earlier run of CARD (a long "
        "`perception train --cpu-minutes M --snapshot-minutes ...`), plus --start weights",
    )
    ap.add_argument("--start", type=Path, default=None, help="with --existing: the weights the run started from")
    ap.add_argument(
        "--offset-minutes",
        type=float,
        default=0.0,
        help="with --existing: CPU-minutes the start weights had already had (added to each point)",
    )
    a = ap.parse_args()
    out = (a.out or Path(tempfile.mkdtemp(prefix="learning-curve-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    first = load_card(a.existing[0] if a.existing else a.cards[0])
    class_map, class_ids = ClassMap(first.data.get("classes", {})), set(first.class_ids)
    sets = val_sets(a.val, class_map, out / "heldout", a.frames, a.val_images)
    print(f"work folder {out}\nvalidation: " + ", ".join(f"{s.name} ({len(s.images)} images)" for s in sets))
    size = (first.input_width, first.input_height)
    if a.existing:
        card, folder = (p.resolve() for p in a.existing)
        snaps = ([(0.0, a.start.resolve())] if a.start else []) + sorted(
            (float(p.stem[4:]), p) for p in folder.glob("cpu-*.pt")
        )
        t = Trainer(f"ours:{card.stem}", [], folder, Path(), batch_size(card), card=card)
        rows = curve(t, [(a.offset_minutes + m, p) for m, p in snaps], sets, a, class_ids, size, out / "scoring")
        report(a, {t.label: rows}, sets, card=str(card))
        return
    spec = training_spec(a.data)
    points = [round(a.minutes * p, 3) for p in a.points]
    trainers = our_trainers(a, out, points, absolute_specs(a.data), absolute_specs(a.val))
    if not a.no_peer:
        yaml = yolo_dataset(out, spec, first, class_map, sets, out / "frame_bank")
        trainers.append(peer_trainer(a, out, points, yaml, max(size)))
    t0 = time.monotonic()
    failed = run_all(trainers, a.jobs)
    print(
        f"training: {time.monotonic() - t0:.0f} s wall"
        + "".join(f"\n{f}: training failed, see its log in {out}" for f in failed)
    )
    results = {
        t.label: curve(
            t, [(m, t.snapshots / f"cpu-{m:g}.pt") for m in points], sets, a, class_ids, size, out / "scoring"
        )
        for t in trainers
        if t.label not in failed
    }
    report(a, results, sets, minutes=a.minutes, points=points)


if __name__ == "__main__":
    main()
