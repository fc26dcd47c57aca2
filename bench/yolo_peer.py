"""The peer recipe of ``bench/learning_curve.py``: Ultralytics YOLO11n-seg trained from
scratch (from its ``.yaml``, no weights downloaded) with its default recipe on a YOLO-seg
folder, for a budget of this process's CPU time, saving the averaged weights (what
Ultralytics itself saves) at given CPU-minutes.

    uv run --extra train --group bench python bench/yolo_peer.py DATA.yaml OUT_DIR \
        --minutes 20 --snapshots 5 10 20 [--threads 1]

Snapshots go to ``OUT_DIR/cpu-<minutes>.pt`` (``{"model": state_dict, "step": batches}``)
and ``OUT_DIR/curve.json`` lists them. The snapshots and the stop are taken by CPU time, as
ours are, on a clock started when training does (``on_train_start``: model built, labels
scanned, loaders made; ``perception train``'s starts after its set-up too). Ultralytics'
``time`` argument (wall-clock hours) sets its schedule length and a stop of its own: after
every batch it is set to the wall time at which the CPU budget will be spent at the pace so
far, plus 10 %, so that a busy machine (wall time running ahead of CPU time) neither cuts
the run short nor leaves its schedule off the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="Ultralytics dataset YAML")
    ap.add_argument("out", type=Path)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--snapshots", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=640)
    a = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    pending = sorted(a.snapshots)
    saved: list[dict[str, float]] = []
    state = {"batches": 0, "t0": time.process_time()}

    def snapshot(trainer, minutes: float) -> None:  # type: ignore[no-untyped-def]
        model = trainer.ema.ema if trainer.ema is not None else trainer.model
        path = a.out / f"cpu-{minutes:g}.pt"
        torch.save({"model": {k: v.float() for k, v in model.state_dict().items()}, "step": state["batches"]}, path)
        saved.append(
            {"cpu_minutes": minutes, "steps": state["batches"], "images": state["batches"] * a.batch, "file": path.name}
        )
        (a.out / "curve.json").write_text(json.dumps(saved, indent=1))

    def on_train_start(trainer) -> None:  # type: ignore[no-untyped-def]
        state["t0"] = time.process_time()

    def on_batch_end(trainer) -> None:  # type: ignore[no-untyped-def]
        state["batches"] += 1
        spent = (time.process_time() - state["t0"]) / 60.0
        if spent > 0:
            trainer.args.time = 1.1 * (time.time() - trainer.train_time_start) / 3600.0 * a.minutes / spent
        while pending and spent >= pending[0]:
            snapshot(trainer, pending.pop(0))
        if not pending:
            trainer.stop = True  # checked by Ultralytics after each batch when `time` is set

    def on_train_end(trainer) -> None:  # type: ignore[no-untyped-def]
        while pending:  # the wall-clock schedule ended first: the final weights stand for the rest
            snapshot(trainer, pending.pop(0))

    model = YOLO("yolo11n-seg.yaml", task="segment")
    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_batch_end", on_batch_end)
    model.add_callback("on_train_end", on_train_end)
    model.train(
        data=str(a.data),
        epochs=1000,
        time=a.minutes / 60.0 * 1.1,
        imgsz=a.imgsz,
        batch=a.batch,
        workers=0,
        device="cpu",
        pretrained=False,
        amp=False,
        plots=False,
        val=False,
        project=str(a.out),
        name="ultralytics",
        exist_ok=True,
        verbose=False,
        seed=0,
        deterministic=False,
    )


if __name__ == "__main__":
    main()
