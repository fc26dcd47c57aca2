"""Learning curve: held-out mask AP against CPU-minutes of training, for our recipe and a
peer's, trained side by side in one run on the same training frames.

    uv run --extra train --group bench python bench/learning_curve.py [--minutes 20]
        [--cards models/yolact_fast.toml ...] [--no-peer] [--json curve.json] [--plot curve.png]

- Training frames: the frame bank of the first card's ``[data]`` (``bank_drives`` synthetic
  drives of all three scenarios, rendered once). Each of our cards trains on it with its
  own recipe (``[training]``, ``[data]`` augmentation); the peer, Ultralytics YOLO11n-seg
  from its ``.yaml`` (random init, its default recipe: mosaic, task-aligned assignment,
  its loss balance and schedule), trains on the same frames exported as a YOLO-seg folder.
- Budget: each trainer is one process on one thread with ``--minutes`` of its own CPU time
  (time.process_time), all of them at once (one core each, so ``--jobs`` 2 on this 2-core
  machine); snapshots of the weights are taken at the curve's points (``--points``,
  fractions of the budget).
- Scoring: held-out ``perception synth`` drives, one per scenario (urban, highway, crowd)
  and time of day (day, night), seeds from 9100 up (training never uses 9000+), every frame
  run through the torch-free runtime (ONNX Runtime) of each model and scored by the same
  code as ``perception eval``.

Prints, per model and point: steps, images seen, mask AP per drive and their mean; then
ours minus the peer's at each point and scenario. ``--json`` writes all figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.heldout import HeldOut, held_out_drives  # noqa: E402
from perception.bus.classes import CLASSES  # noqa: E402
from perception.evaluation.offline import evaluate_segmenter  # noqa: E402
from perception.segmentation.card import load_card, set_card_value, sha256_of  # noqa: E402


def export_yolo_folder(card_path: Path, out: Path, cache: Path) -> Path:
    """The card's frame bank as a YOLO-seg dataset (``images/``, ``labels/``, ``data.yaml``):
    one polygon per instance (its parts joined by Ultralytics' own ``merge_multi_segment``)."""
    import cv2
    from ultralytics.data.converter import merge_multi_segment

    from perception.node.config import build_config
    from perception.train.data import DataConfig
    from perception.train.frame_bank import BankConfig, FrameBank

    card = load_card(card_path)
    d = build_config(DataConfig, card.data, card.where("data"))
    bank = FrameBank(BankConfig(seed=d.train_seed, drives=d.bank_drives, frames_per_drive=d.bank_frames_per_drive,
                                stride=d.bank_stride), cache)
    yaml_path = out / "data.yaml"
    if yaml_path.is_file():
        return yaml_path
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i in range(len(bank)):
        image, ids, labels = bank.frame(i)
        h, w = ids.shape
        lines = []
        for inst, cls, ignore in labels:
            if ignore:
                continue
            contours, _ = cv2.findContours((ids == inst).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            parts = [c.reshape(-1, 2).astype(np.float64) for c in contours if len(c) >= 3]
            if not parts:
                continue
            poly = np.concatenate(merge_multi_segment([p.reshape(-1).tolist() for p in parts]), 0) if len(parts) > 1 \
                else parts[0]
            poly = poly / [w, h]
            lines.append(" ".join([str(int(cls))] + [f"{v:.5f}" for v in poly.reshape(-1)]))
        split = "val" if i < 8 else "train"  # Ultralytics wants a val split; it validates once, at the end
        cv2.imwrite(str(out / "images" / split / f"{i:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (out / "labels" / split / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(CLASSES))
    yaml_path.write_text(f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml_path


def card_copy(card_path: Path, folder: Path, weights: str) -> Path:
    """A copy of ``card_path`` in ``folder`` whose [weights] and [onnx] files live there
    (bench runs never touch the bundled weights); [training.init] keeps pointing at the
    original folder."""
    folder.mkdir(parents=True, exist_ok=True)
    text = card_path.read_text()
    init = load_card(card_path).training.get("init", {})
    if isinstance(init, dict) and init.get("weights"):
        text = text.replace(f'weights = "{init["weights"]}"', f'weights = "{(card_path.parent / init["weights"]).resolve()}"')
    path = folder / card_path.name
    path.write_text(text)
    set_card_value(path, "weights", "file", weights)
    set_card_value(path, "onnx", "file", Path(weights).with_suffix(".onnx").name)
    return path


def score(predict, drives: list[HeldOut]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    out = {}
    for d in drives:
        s = evaluate_segmenter(predict, d.path)
        out[d.name] = float(s.ap or 0.0)
    return out


def score_ours(card: Path, snapshot: Path, drives: list[HeldOut], threads: int) -> dict[str, float]:
    from perception.segmentation.runtime import load_segmenter
    from perception.train.export import export_card

    tmp = card_copy(card, snapshot.parent / f"{snapshot.stem}-card", str(snapshot.resolve()))
    set_card_value(tmp, "weights", "sha256", sha256_of(snapshot))
    export_card(tmp)
    return score(load_segmenter(tmp, threads=threads).predict, drives)


def score_peer(snapshot: Path, drives: list[HeldOut], threads: int, width: int, height: int) -> dict[str, float]:
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    from perception.segmentation.ultralytics_adapter import UltralyticsSegmenter

    model = SegmentationModel("yolo11n-seg.yaml", nc=len(CLASSES), verbose=False)
    model.load_state_dict(torch.load(snapshot, weights_only=True)["model"])
    model = model.eval().fuse(verbose=False)
    for m in model.modules():  # Ultralytics' own export path of its heads: concatenated outputs
        if hasattr(m, "export"):
            m.export, m.format = True, "onnx"
    path = snapshot.with_suffix(".onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, height, width),), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["output0", "output1"])
    return score(UltralyticsSegmenter(path, threads=threads).predict, drives)


def score_existing(a: argparse.Namespace) -> None:
    """``--existing``: the curve of an earlier run from its snapshots."""
    import torch

    card, folder = (p.resolve() for p in a.existing)
    out = (a.out or Path(tempfile.mkdtemp(prefix="learning-curve-"))).resolve()
    drives = held_out_drives(out / "heldout", a.frames)
    snaps = sorted(folder.glob("cpu-*.pt"), key=lambda p: float(p.stem[4:]))
    points = ([(0.0, a.start.resolve())] if a.start else []) + [(float(p.stem[4:]), p) for p in snaps]
    rows = []
    for minutes, snap in points:
        steps = int(torch.load(snap, weights_only=True).get("step", 0))
        aps = score_ours(card, snap, drives, a.threads)
        rows.append({"cpu_minutes": a.offset_minutes + minutes, "steps": steps, "ap": aps,
                     "mean_ap": float(np.mean(list(aps.values())))})
    names = [d.name for d in drives]
    print(f"{'CPU-min':>8}{'steps':>7}" + "".join(f"{n:>15}" for n in names) + f"{'mean':>8}")
    for r in rows:
        print(f"{r['cpu_minutes']:>8g}{r['steps']:>7}" + "".join(f"{r['ap'][n]:>15.3f}" for n in names)
              + f"{r['mean_ap']:>8.3f}")
    if a.json:
        a.json.write_text(json.dumps({"card": str(card), "drives": [{"name": d.name, "seed": d.seed} for d in drives],
                                      "results": {f"ours:{card.stem}": rows}}, indent=1))
    if a.plot:
        plot({f"ours:{card.stem}": rows}, a.plot)


def plot(results: dict[str, list[dict[str, object]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in results.items():
        ax.plot([r["cpu_minutes"] for r in rows], [r["mean_ap"] for r in rows], marker="o", label=label)
    ax.set_xlabel("CPU-minutes of training (one core)")
    ax.set_ylabel("mask AP, mean of 6 held-out drives")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cards", type=Path, nargs="+", default=[ROOT / "models" / "yolact_fast.toml"],
                    help="our recipes: model cards (their [training] and [data]); the first one's bank is shared")
    ap.add_argument("--minutes", type=float, default=20.0, help="CPU-minutes of training per model")
    ap.add_argument("--points", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="curve points (fractions)")
    ap.add_argument("--no-peer", action="store_true", help="skip Ultralytics YOLO11n-seg")
    ap.add_argument("--frames", type=int, default=40, help="frames per held-out drive")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="PNG of the curves")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads when scoring")
    ap.add_argument("--existing", nargs=2, metavar=("CARD", "SNAPSHOTS"), type=Path, default=None,
                    help="train nothing: score the cpu-<minutes>.pt snapshots of an earlier run of CARD (a long "
                         "`perception train --cpu-minutes M --snapshot-minutes ...`), plus --start weights")
    ap.add_argument("--start", type=Path, default=None, help="with --existing: the weights the run started from")
    ap.add_argument("--offset-minutes", type=float, default=0.0,
                    help="with --existing: CPU-minutes the start weights had already had (added to each point)")
    a = ap.parse_args()
    if a.existing:
        score_existing(a)
        return
    out = (a.out or Path(tempfile.mkdtemp(prefix="learning-curve-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "frame_bank"
    points = [round(a.minutes * p, 3) for p in a.points]
    drives = held_out_drives(out / "heldout", a.frames)
    print(f"work folder {out}\nheld-out drives: " + ", ".join(f"{d.name} (seed {d.seed})" for d in drives))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs: dict[str, subprocess.Popen] = {}
    runs: dict[str, tuple[str, Path, Path | None]] = {}  # label -> kind, snapshot folder, card
    for card in a.cards:
        c = load_card(card)
        label = f"ours:{card.stem}"
        folder = out / "ours" / card.stem
        tmp = card_copy(card.resolve(), folder, f"{c.name}.pt")
        cmd = [sys.executable, "-m", "perception", "train", "--card", str(tmp), "--run-dir", str(folder / "run"),
               "--no-progress", "--cpu-minutes", str(a.minutes), "--snapshot-minutes", *map(str, points),
               "--threads", "1", "--workers", "0"]
        (folder / "run").mkdir(parents=True, exist_ok=True)
        # the bank is shared: link the first card's cache folder into each run folder
        link = folder / "run" / "frame_bank"
        if not link.exists():
            cache.mkdir(exist_ok=True)
            link.symlink_to(cache, target_is_directory=True)
        procs[label] = subprocess.Popen(cmd, env=env, stdout=open(folder / "train.log", "w"), stderr=subprocess.STDOUT)
        runs[label] = ("ours", folder / "run" / c.name / "snapshots", card.resolve())
    if not a.no_peer:
        yolo = export_yolo_folder(a.cards[0].resolve(), out / "yolo_data", cache)
        folder = out / "peer"
        cmd = [sys.executable, str(ROOT / "bench" / "yolo_peer.py"), str(yolo), str(folder), "--minutes", str(a.minutes),
               "--snapshots", *map(str, points)]
        folder.mkdir(parents=True, exist_ok=True)
        procs["peer:yolo11n-seg"] = subprocess.Popen(cmd, env=env, stdout=open(out / "peer.log", "w"),
                                                     stderr=subprocess.STDOUT, cwd=folder)
        runs["peer:yolo11n-seg"] = ("peer", folder, None)
    failed = [label for label, p in procs.items() if p.wait() != 0]
    for label in failed:
        print(f"{label}: training failed (see its log in {out})")
    first = load_card(a.cards[0])
    results: dict[str, list[dict[str, object]]] = {}
    for label, (kind, folder, card) in runs.items():
        if label in failed:
            continue
        rows = []
        for m in points:
            snap = folder / f"cpu-{m:g}.pt"
            if not snap.is_file():
                print(f"{label}: no snapshot at {m:g} CPU-minutes")
                continue
            import torch

            steps = int(torch.load(snap, weights_only=True).get("step", 0))
            aps = score_ours(card, snap, drives, a.threads) if kind == "ours" and card else \
                score_peer(snap, drives, a.threads, first.input_width, first.input_height)
            rows.append({"cpu_minutes": m, "steps": steps, "ap": aps, "mean_ap": float(np.mean(list(aps.values())))})
        results[label] = rows
    names = [d.name for d in drives]
    print(f"\n{'model':<28}{'CPU-min':>8}{'steps':>7}" + "".join(f"{n:>15}" for n in names) + f"{'mean':>8}")
    for label, rows in results.items():
        for r in rows:
            print(f"{label:<28}{r['cpu_minutes']:>8g}{r['steps']:>7}" + "".join(f"{r['ap'][n]:>15.3f}" for n in names)
                  + f"{r['mean_ap']:>8.3f}")
    peer = results.get("peer:yolo11n-seg")
    if peer:
        for label, rows in results.items():
            if not label.startswith("ours"):
                continue
            print(f"\n{label} minus peer (mask AP points):")
            for r, p in zip(rows, peer, strict=False):
                diffs = {n: (r["ap"][n] - p["ap"][n]) * 100 for n in names}
                verdict = "at or above everywhere" if min(diffs.values()) >= 0 else "BELOW on " + ", ".join(
                    n for n, v in diffs.items() if v < 0)
                print(f"  {r['cpu_minutes']:>6g} min: " + "  ".join(f"{n} {v:+.1f}" for n, v in diffs.items())
                      + f"   ({verdict})")
    if a.json:
        a.json.write_text(json.dumps({"minutes": a.minutes, "points": points,
                                      "drives": [{"name": d.name, "seed": d.seed, "frames": a.frames} for d in drives],
                                      "results": results}, indent=1))
    if a.plot:
        plot(results, a.plot)


if __name__ == "__main__":
    main()
