"""Coverage-guided fuzzing (atheris, libFuzzer's engine) of every decoder that takes outside
input: envelopes of each topic, frames, RLE masks, launch files, camera files, model cards,
MCAP drives, COCO and YOLO-seg training data, ROS 2 bags and shared-memory slot references.

Each decoder runs in its own process for ``--inputs`` inputs, seeded with valid examples of
its format, instrumented so that libFuzzer steers towards new code. The contract: an input
either decodes or raises one of the project's own errors (a ``ValueError`` subclass defined
under ``perception``, which names the file or field); anything else (a ``KeyError`` from deep
inside, a NumPy ``ValueError``, a crash) is a finding, and libFuzzer stops with the input.
Prints, per decoder, the inputs tried, the coverage reached (libFuzzer's ``cov``: edges,
``ft``: features) and the crashes.

    uv run --extra cpu --extra train --group bench python bench/fuzz.py --inputs 100000 [--only envelope,rle]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("envelope", "frame", "rle", "launch", "camera", "card", "drive", "coco", "yolo", "bag", "shm")


# --------------------------------------------------------------------------- the decoders
PACKAGE = str(ROOT / "perception")


def _expected(e: BaseException) -> bool:
    """A project error (names what was wrong) rather than an accident: a ``ValueError``
    defined under ``perception``, or one raised by the project's own checks (the innermost
    frame is in ``perception/``), not one that escaped from a library."""
    if not isinstance(e, ValueError):
        return False
    if type(e).__module__.split(".")[0] == "perception":
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(PACKAGE)


def _file(data: bytes, name: str, folder: Path) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def make_target(name: str, work: Path):  # type: ignore[no-untyped-def]
    """``test(data: bytes)`` for one decoder (imports inside, so atheris instruments them)."""
    from perception.bus import codec, schema

    if name == "envelope":
        topics = [t.name for t in schema.TOPICS]

        def test(data: bytes) -> None:
            topic = topics[data[0] % len(topics)] if data else None
            codec.decode(data[1:], expected_topic=topic)
    elif name == "frame":
        from perception.bus.pubsub import frame_pixels

        def test(data: bytes) -> None:
            n = data[0] if data else 0
            env = codec.decode(data[1 : 1 + n * 4], expected_topic="frames")
            frame_pixels(env.payload, memoryview(data[1 + n * 4 :]))  # type: ignore[arg-type]
    elif name == "rle":
        from perception.bus.masks import decode_mask
        from perception.bus.schema import Rle

        def test(data: bytes) -> None:
            h, w = (data[0], data[1]) if len(data) > 1 else (0, 0)
            decode_mask(Rle(size=(h, w), counts=data[2:].decode("latin-1")))
    elif name == "launch":
        from perception.system.launch import load_launch

        def test(data: bytes) -> None:
            load_launch(_file(data, "launch.yaml", work))
    elif name == "camera":
        from perception.calibration.camera_file import load_calibration

        def test(data: bytes) -> None:
            load_calibration(_file(data, "camera.yaml", work))
    elif name == "card":
        from perception.segmentation.card import load_card

        def test(data: bytes) -> None:
            card = load_card(_file(data, "card.toml", work))
            for ref in (card.onnx, card.weights):
                if ref is not None:
                    ref.verify()
    elif name == "drive":
        from perception.drives.drive_file import DriveReader

        def test(data: bytes) -> None:
            r = DriveReader(_file(data, "drive.mcap", work))
            for _ in r.frames():
                pass
            for topic in r.topics:
                if topic != "frames":
                    list(r.messages(topic))
    elif name == "coco":
        from perception.train.coco import read_coco
        from perception.train.sources import FileSource

        def test(data: bytes) -> None:
            records = read_coco(_file(data, "instances.json", work))
            src = FileSource(records, 64, 48, 0, shuffle=False)
            for k in range(min(3, len(src))):
                src.sample(k)
    elif name == "yolo":
        from perception.train.labelled import read_yolo_seg

        def test(data: bytes) -> None:
            _file(data, "labels/a.txt", work)
            read_yolo_seg(work)
    elif name == "bag":
        from perception.outputs.ros2_bag import import_bag

        def test(data: bytes) -> None:
            bag = work / "bag"
            split = data.find(b"\0MCAP")
            (bag / "metadata.yaml").write_bytes(data[:split] if split >= 0 else data)
            (bag / "bag_0.mcap").write_bytes(data[split + 1 :] if split >= 0 else b"")
            out = work / "imported.mcap"
            out.unlink(missing_ok=True)
            import_bag(bag, "/cam/image_raw", out)
    elif name == "shm":
        import numpy as np

        from perception.bus.schema import FrameHeader, ShmSlot
        from perception.bus.shm_ring import FrameRing, ShmReader, segment_name

        ring = FrameRing(segment_name(str(work), "frames"), 2, 4096)
        ring.write(np.zeros((16, 16, 3), np.uint8))
        reader = ShmReader()

        def test(data: bytes) -> None:
            v = list(data[:12]) + [0] * (12 - len(data[:12]))
            ref = ShmSlot(
                segment=ring.name,
                slot=v[0] % 4,
                generation=v[1],
                nbytes=v[2] * 64 + v[3],
                slot_stride=v[4] * 256 + v[5],
            )
            header = FrameHeader(width=v[6] + 1, height=v[7] + 1, encoding="bgr8", stride=v[8] * 3 + v[9])
            reader.read(ref, header)
    else:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")

    def guarded(data: bytes) -> None:
        try:
            test(data)
        except Exception as e:  # the contract: decoded, or a project error
            if not _expected(e):
                raise

    return guarded


# --------------------------------------------------------------------------- seed corpus
def seeds(name: str, folder: Path) -> None:
    """Valid examples of the decoder's format, for libFuzzer to start from."""
    folder.mkdir(parents=True, exist_ok=True)
    from perception.bus import codec
    from perception.bus.pubsub import header_for
    from perception.bus.schema import Envelope, Source

    def put(k: int, data: bytes) -> None:
        (folder / f"seed{k}").write_bytes(data)

    if name in ("envelope", "frame"):
        import numpy as np

        img = np.zeros((4, 5, 3), np.uint8)
        env = codec.encode(Envelope("frames", 3, 10, Source("c", 3, 9), header_for(img)))
        put(
            0,
            bytes([0]) + env
            if name == "envelope"
            else bytes([(len(env) + 3) // 4]) + env.ljust(((len(env) + 3) // 4) * 4, b"\0") + img.tobytes(),
        )
    elif name == "rle":
        put(0, bytes([4, 4]) + b"04")
    elif name == "launch":
        put(0, (ROOT / "launch" / "replay.yaml").read_bytes())
        put(1, (ROOT / "launch" / "camera.yaml").read_bytes())
    elif name == "camera":
        for k, f in enumerate(sorted((ROOT / "calib").glob("*.yaml"))):
            put(k, f.read_bytes())
    elif name == "card":
        for k, f in enumerate(sorted((ROOT / "models").glob("*.toml"))):
            put(k, f.read_bytes())
    elif name == "drive":
        from perception.synth import SynthConfig, write_drive

        path = folder / "d.mcap"
        write_drive(SynthConfig(frames=2, width=48, height=32, seed=1), path)
        put(0, path.read_bytes())
        path.unlink()
    elif name == "coco":
        put(
            0,
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                    "annotations": [
                        {
                            "id": 1,
                            "image_id": 1,
                            "category_id": 3,
                            "iscrowd": 0,
                            "segmentation": [[1, 1, 20, 1, 20, 20]],
                        }
                    ],
                    "categories": [{"id": 3, "name": "car"}],
                }
            ).encode(),
        )
    elif name == "yolo":
        put(0, b"2 0.1 0.1 0.5 0.1 0.5 0.5\n0 0.2 0.2 0.3 0.2 0.3 0.4\n")
    elif name == "bag":
        put(0, b"rosbag2_bagfile_information:\n  version: 9\n  storage_identifier: mcap\n\0MCAP")
    elif name == "shm":
        put(0, bytes([0, 2, 12, 0, 16, 64, 15, 15, 16, 0, 0, 0]))


def _work(name: str) -> Path:
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    if name in ("coco", "yolo"):
        import cv2
        import numpy as np

        (work / "images").mkdir()
        (work / "labels").mkdir()
        cv2.imwrite(str(work / "a.png"), np.zeros((48, 64, 3), np.uint8))
        cv2.imwrite(str(work / "images" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    if name == "bag":
        (work / "bag").mkdir()
    return work


# --------------------------------------------------------------------------- runner
def worker(name: str, inputs: int, corpus: Path, seed: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["perception"]):
        test = make_target(name, _work(name))
    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={inputs}",
            f"-seed={seed}",
            "-print_final_stats=1",
            "-max_len=65536",
            "-rss_limit_mb=4096",
            str(corpus),
        ],
        test,
    )
    atheris.Fuzz()


def run(name: str, inputs: int, seed: int) -> dict[str, object]:
    corpus = Path(tempfile.mkdtemp(prefix=f"corpus-{name}-"))
    seeds(name, corpus)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--inputs",
            str(inputs),
            "--corpus",
            str(corpus),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        text=True,
        cwd=corpus,
    )
    wall = time.perf_counter() - t0
    log = proc.stderr
    done = [ln for ln in log.splitlines() if re.search(r"#\d+\s+(DONE|pulse|NEW|REDUCE|INITED)", ln)]
    last = done[-1] if done else ""
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov, ft = re.search(r"cov: (\d+)", last), re.search(r"ft: (\d+)", last)
    crashed = proc.returncode != 0
    finding = ""
    if crashed:
        m = re.search(r"(=== Uncaught Python exception: ===\n.*?)\n==\d+==", log, re.S)
        finding = (m.group(1) if m else log[-1500:]).strip()
    return {
        "target": name,
        "inputs": int(runs.group(1)) if runs else 0,
        "cov": int(cov.group(1)) if cov else 0,
        "ft": int(ft.group(1)) if ft else 0,
        "crashes": int(crashed),
        "seconds": round(wall, 1),
        "finding": finding,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs per decoder")
    ap.add_argument("--only", default="", help="comma-separated targets (default: all)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.inputs, args.corpus, args.seed)
        return 0
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    targets = [t for t in (args.only.split(",") if args.only else TARGETS) if t]
    rows = []
    print(f"{'decoder':<10}{'inputs':>9}{'cov':>7}{'ft':>7}{'crashes':>9}{'seconds':>9}")
    for name in targets:
        row = run(name, args.inputs, args.seed)
        rows.append(row)
        print(f"{name:<10}{row['inputs']:>9}{row['cov']:>7}{row['ft']:>7}{row['crashes']:>9}{row['seconds']:>9}")
        if row["finding"]:
            print("    finding:\n" + "\n".join("      " + ln for ln in str(row["finding"]).splitlines()[-12:]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if any(r["crashes"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
