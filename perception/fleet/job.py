"""One drive of a fleet run: the pipeline's logic (preprocess, segmenter, tracker: the classes
the nodes run) stepped over every frame in order by the in-process runner
(:mod:`perception.system.inprocess`), as ``perception replay --deterministic`` runs them, the
outputs written to a run MCAP like ``--record`` writes, and that run scored like
``perception eval`` scores it.

What a worker needs travels with the task, not by shared paths: the drive's bytes, and a
:class:`Bundle` of the launch file's node parameters with every file they name (model cards
with their ONNX graphs, calibration files) packed in, unpacked once per worker process.

Timing: frames keep the drive's own capture timeline (the tracker's motion model sees the
drive's frame spacing, as at ``--rate 1``); each output is stamped at its capture time plus
the measured time the logic took, so the latency figures are the in-process cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from perception.bus.schema import Envelope, GroundTruth, Source
from perception.drives.drive_file import DriveMeta, DriveReader, DriveWriter
from perception.evaluation.report import RunData, score_runs, tracking_parts
from perception.node.config import build_config
from perception.node.loop import NodeContext
from perception.segmentation.card import load_card
from perception.segmentation.segmenter_logic import build_segmenter
from perception.system.inprocess import InProcessRunner, Stage, frame_message, make_stage, stage
from perception.system.launch import LaunchSpec
from perception.system.node_table import NODE_TYPES, stages

#: the chain run in process: the node table's stages (preprocess, segmenter, tracker)
STAGES: tuple[str, ...] = stages()
#: bumps when what a task computes changes (part of every cache key)
JOB_VERSION = "1"


class FleetError(ValueError):
    """A fleet run that cannot start (names the launch file, node or drive)."""


@dataclass(frozen=True)
class Bundle:
    """The launch file's parameters of each stage (``params[type]``) with file paths
    replaced by names in ``files`` (name -> bytes)."""

    params: dict[str, dict[str, Any]]
    files: dict[str, bytes] = field(default_factory=dict)

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps(self.params, sort_keys=True, default=str).encode())
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()

    def unpack(self, root: str | Path | None = None) -> dict[str, dict[str, Any]]:
        """Write the files under ``root`` (default: a folder in the temp dir named by the
        digest, shared by the tasks of a worker) and return the parameters with real paths."""
        folder = Path(root or Path(tempfile.gettempdir()) / f"perception-fleet-{self.digest()[:16]}")
        for name, data in self.files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != len(data):
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
        return {
            stage: {
                k: str(folder / v[len(_FILE) :]) if isinstance(v, str) and v.startswith(_FILE) else v
                for k, v in p.items()
            }
            for stage, p in self.params.items()
        }


_FILE = "file:"


def make_bundle(spec: LaunchSpec) -> Bundle:
    """The stages' parameters of ``spec`` and the files they name (a model card brings its
    ONNX graph along). Raises :class:`FleetError` when a stage is missing."""
    params: dict[str, dict[str, Any]] = {}
    files: dict[str, bytes] = {}
    for node in spec.nodes:
        if node.type not in STAGES:
            continue
        if node.type in params:
            raise FleetError(f"{spec.path}: more than one {node.type} node; a fleet run replays one pipeline")
        p = dict(node.params)
        for key, value in p.items():
            if not (isinstance(value, str) and value and Path(value).is_file()):
                continue
            folder = f"{node.type}.{key}"
            files[f"{folder}/{Path(value).name}"] = Path(value).read_bytes()
            if value.endswith(".toml"):
                card = load_card(value)
                if card.onnx is not None:
                    files[f"{folder}/{card.onnx.path.name}"] = card.onnx.verify().read_bytes()
            p[key] = f"{_FILE}{folder}/{Path(value).name}"
        params[node.type] = p
    missing = [s for s in STAGES if s not in params]
    if missing:
        raise FleetError(f"{spec.path}: no {', '.join(missing)} node; a fleet run needs {', '.join(STAGES)}")
    return Bundle(params, files)


def replay_logic(drive: str | Path, params: dict[str, dict[str, Any]], out: str | Path) -> RunData:
    """Every frame of ``drive`` through preprocess, segmenter and tracker (``params`` per
    stage, real paths), in order, by the in-process runner; frames, ground truth, detections
    and tracks written to the run file ``out`` (frame ``seq`` renumbered from 0 as the replay
    node does). Returns what the run file holds, for scoring without reading it back."""
    runner = InProcessRunner(_stages(params), fed=("frames",))
    reader = DriveReader(drive)
    gts = reader.ground_truth()
    meta = _run_meta(reader.meta, Path(drive).name)
    outputs: dict[str, list[Envelope]] = {"detections": [], "tracks": []}
    run_gts: dict[int, GroundTruth] = {}
    t0 = time.monotonic_ns()
    first: int | None = None
    n = 0
    with DriveWriter(out, meta) as writer, runner:
        for frame in reader.frames():
            rec = frame.record
            first = rec.source.capture_ns if first is None else first
            src = Source(meta.camera_id, n, t0 + (rec.source.capture_ns - first))
            writer.write_encoded_frame(rec.data, rec.width, rec.height, src, fmt=rec.format)
            gt = gts.get(rec.source.frame_seq)
            if gt is not None:
                writer.write_gt(src, gt)
                run_gts[n] = gt
            for sent in runner.feed(frame_message(src, frame.image, n)):
                if sent.topic in outputs:
                    outputs[sent.topic].append(sent.envelope)
                    writer.write(sent.envelope)
            n += 1
    counts = {"frames": n, "gt": len(run_gts), **{t: len(v) for t, v in outputs.items()}}
    return RunData(
        topics={t: c for t, c in sorted(counts.items()) if c},
        meta=asdict(meta),
        gts=run_gts,
        detections=outputs["detections"],
        tracks=outputs["tracks"],
        statuses=[],
        frame_seqs=list(range(n)),
    )


def _run_meta(drive: DriveMeta, name: str) -> DriveMeta:
    """The run file's metadata: the drive's camera and scenario, made by the fleet."""
    return DriveMeta(
        camera_id=drive.camera_id,
        width=drive.width,
        height=drive.height,
        fps=drive.fps,
        generator="fleet",
        scenario=drive.scenario,
        seed=drive.seed,
        notes=f"fleet replay of {name}",
    )


#: models loaded by the tasks of this worker process, reused across its drives
_MODELS: dict[tuple[str, int, tuple[str, ...], str], Any] = {}


def _stages(params: dict[str, dict[str, Any]]) -> list[Stage]:
    """The chain's stages from their parameters, in deterministic mode: the segmenter with
    the models this worker has loaded (:data:`_MODELS`), the others as their node makes them."""
    ctx = NodeContext("fleet", "", deterministic=True)
    configs = {s: build_config(NODE_TYPES[s].config_class(), params.get(s, {}), where=f"fleet: {s}") for s in STAGES}
    return [
        stage(s, build_segmenter(configs[s], deterministic=True, loaded=_MODELS))
        if s == "segmenter"
        else make_stage(s, configs[s], ctx)
        for s in STAGES
    ]


@dataclass(frozen=True)
class DriveResult:
    """One drive's outcome: ``report`` holds ``perception eval``'s report.json keys (no
    per-frame timeline) or is None with ``error`` when the drive failed; ``run`` is the run
    file's bytes."""

    name: str
    key: str
    report: dict[str, Any] | None
    error: str = ""
    run: bytes = b""
    data: RunData | None = None
    frames: int = 0
    wall_s: float = 0.0
    node: str = ""
    pid: int = 0


def run_drive(name: str, key: str, drive: bytes, bundle: Bundle, node: str = "") -> DriveResult:
    """One fleet task: replay and score one drive. A drive that cannot be read or run gives
    a failed result with its error (the other drives go on)."""
    from perception.drives.drive_file import DriveError

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        drive_path, run_path = Path(tmp) / "drive.mcap", Path(tmp) / "run.mcap"
        drive_path.write_bytes(drive)
        try:
            data = replay_logic(drive_path, bundle.unpack(), run_path)
            data = replace(data, sequence_scores=tracking_parts(data))  # kept for the pooled score
            report = score_runs({Path(name).stem: data}, name, data.meta).to_dict(timeline=False)
        except (DriveError, ValueError, OSError) as e:
            text = str(e).replace(str(drive_path), name)
            return DriveResult(
                name, key, None, f"{type(e).__name__}: {text}", wall_s=time.monotonic() - t0, node=node, pid=os.getpid()
            )
        return DriveResult(
            name,
            key,
            report,
            run=run_path.read_bytes(),
            data=data,
            frames=len(data.frame_seqs),
            wall_s=time.monotonic() - t0,
            node=node,
            pid=os.getpid(),
        )


def runtime_build() -> str | None:
    """The pip requirement of the ONNX Runtime build this Python has, pinned to its version
    (``onnxruntime==1.31.1``; ``onnxruntime-gpu[cuda,cudnn]==1.23.2``, with the extras the
    package's own requirement of that build names), or None when it has none."""
    dists = sorted(set(metadata.packages_distributions().get("onnxruntime", [])))
    if not dists:
        return None
    return f"{dists[0]}{_extras_of(dists[0])}=={metadata.version(dists[0])}"


def _extras_of(dist: str) -> str:
    """``[a,b]``: the extras with which this package requires ``dist`` (``""`` if none)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        requires = metadata.requires("perception") or []
    except metadata.PackageNotFoundError:
        return ""
    for req in map(Requirement, requires):
        if canonicalize_name(req.name) == canonicalize_name(dist) and req.extras:
            return f"[{','.join(sorted(req.extras))}]"
    return ""


def cache_key(drive: bytes, bundle: Bundle) -> str:
    """Content key of a drive's result: the drive's bytes, the bundle (parameters and
    files) and the job version."""
    return hashlib.sha256(hashlib.sha256(drive).digest() + bundle.digest().encode() + JOB_VERSION.encode()).hexdigest()
