"""The models of ``bench/learning_curve.py``: bench copies of our cards (from the pretrained
trunk, and from random init), and the scoring of a snapshot of ours or of the peer.

Random init: the card without ``[architecture] pretrained`` (so ``perception train`` starts
every tensor from its initialiser) and without the settings that hold a pretrained trunk
still (``[training] freeze_trunk``, ``freeze_trunk_bn``, ``frozen_prefixes``,
``trunk_lr_scale``): a random trunk must learn, at the heads' rate, with its BatchNorm
statistics updated. The input normalisation (``input_mean``/``input_std``) stays, so the
two runs differ in the trunk's start only and in what that start lets the recipe hold still.

Scoring: each snapshot through the torch-free runtime (ours: the card's ONNX export; the
peer: Ultralytics' own ONNX export path through the project's Ultralytics adapter), on every
image of each validation set at its own resolution, by the code of ``perception eval --card
--data`` (:mod:`perception.evaluation.image_set`): mask AP, AP50 and AP of car and person.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from bench.curve_data import ValSet
from bench.models import export_ultralytics
from perception.bus.classes import CLASSES
from perception.evaluation.offline import Predict
from perception.segmentation.card import load_card, set_card_value, sha256_of

#: the per-class figures reported beside AP and AP50
FOCUS = ("car", "person")
FIGURES = ("ap", "ap50", *FOCUS)
#: keys a random trunk does without (see the module's text)
PRETRAINED_ONLY = {
    "architecture": ("pretrained",),
    "training": ("freeze_trunk", "freeze_trunk_bn", "frozen_prefixes", "trunk_lr_scale"),
}
#: held-out images each trainer validates on once, after its budget (wall time only; the
#: curve is scored here, on the whole --val sets)
TRAINER_EVAL_IMAGES = 8


def card_copy(card_path: Path, folder: Path, weights: str) -> Path:
    """A copy of ``card_path`` in ``folder`` whose [weights] and [onnx] files live there
    (bench runs never touch the bundled weights); [training.init] keeps pointing at the
    original folder."""
    folder.mkdir(parents=True, exist_ok=True)
    text = card_path.read_text()
    init = load_card(card_path).training.get("init", {})
    if isinstance(init, dict) and init.get("weights"):
        text = text.replace(
            f'weights = "{init["weights"]}"', f'weights = "{(card_path.parent / init["weights"]).resolve()}"'
        )
    path = folder / card_path.name
    path.write_text(text)
    set_card_value(path, "weights", "file", weights)
    set_card_value(path, "onnx", "file", Path(weights).with_suffix(".onnx").name)
    return path


def edit_table(path: Path, table: str, drop: Collection[str] = (), put: dict[str, str] | None = None) -> None:
    """Remove the ``drop`` keys of ``[table]`` (values over several lines too) and set the
    ``put`` keys to raw TOML values, keeping the rest of the file as it is."""
    put = dict(put or {})
    out: list[str] = []
    current, depth = "", 0
    for line in path.read_text().splitlines(keepends=True):
        if depth > 0:  # inside a dropped value that spans lines
            depth += line.count("[") - line.count("]")
            continue
        header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header:
            current = header.group(1).strip()
            out.append(line)
            if current == table:
                out += [f"{k} = {v}\n" for k, v in put.items()]
            continue
        key = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
        if current == table and key and (key.group(1) in drop or key.group(1) in put):
            depth = line.count("[") - line.count("]")
            continue
        out.append(line)
    path.write_text("".join(out))


def trainer_card(card_path: Path, folder: Path, random_init: bool) -> Path:
    """The card a bench trainer runs: a :func:`card_copy` validating on a few images only,
    from random init when asked (:data:`PRETRAINED_ONLY` removed)."""
    path = card_copy(card_path, folder, f"{load_card(card_path).name}.pt")
    edit_table(path, "data", put={"eval_images": str(TRAINER_EVAL_IMAGES)})
    for table, keys in PRETRAINED_ONLY.items() if random_init else ():
        edit_table(path, table, drop=keys)
    return path


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def score(predict: Predict, sets: Sequence[ValSet], class_ids: Collection[int]) -> dict[str, object]:
    """``{"sets": {name: figures}, "mean": figures over the sets, "mean_ap"}``, figures being
    :data:`FIGURES` (``None`` where a set has no ground truth of that kind)."""
    from perception.evaluation.image_set import ImageSetEvaluator, evaluate_image_set
    from perception.train.datasets import labelled_frames

    per_set = {}
    for s in sets:
        m = evaluate_image_set(
            labelled_frames(s.images, class_ids), predict, ImageSetEvaluator(CLASSES, sheet_frames=0), log_every=0
        ).masks
        per_set[s.name] = {
            "ap": m.ap,
            "ap50": m.ap50,
            **{c: m.per_class[c].ap if c in m.per_class else None for c in FOCUS},
        }
    mean = {f: _mean([v[f] for v in per_set.values()]) for f in FIGURES}
    return {"sets": per_set, "mean": mean, "mean_ap": mean["ap"] or 0.0}


def score_ours(
    card: Path, snapshot: Path, work: Path, sets: Sequence[ValSet], threads: int, class_ids: Collection[int]
) -> dict[str, object]:
    """Score ``snapshot`` of ``card``'s model; its card copy and ONNX file go to ``work``."""
    from perception.segmentation.families import load_segmenter
    from perception.train.export import export_card

    tmp = card_copy(card, work, str(snapshot.resolve()))
    set_card_value(tmp, "weights", "sha256", sha256_of(snapshot))
    export_card(tmp)
    return score(load_segmenter(tmp, threads=threads).predict, sets, class_ids)


def score_peer(
    snapshot: Path,
    work: Path,
    sets: Sequence[ValSet],
    threads: int,
    width: int,
    height: int,
    class_ids: Collection[int],
) -> dict[str, object]:
    """Score a snapshot of YOLO11n-seg (input ``width x height``); its ONNX file goes to ``work``."""
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    from perception.segmentation.ultralytics_adapter import UltralyticsSegmenter

    model = SegmentationModel("yolo11n-seg.yaml", nc=len(CLASSES), verbose=False)
    model.load_state_dict(torch.load(snapshot, weights_only=True)["model"])
    model = model.eval().fuse(verbose=False)
    work.mkdir(parents=True, exist_ok=True)
    path = export_ultralytics(model, work / snapshot.with_suffix(".onnx").name, width, height)
    return score(UltralyticsSegmenter(path, threads=threads).predict, sets, class_ids)
