"""The external publisher's work per message: relayed (its envelope decoded and checked, its
payload passed on as it came, :func:`perception.bus.codec.decode_relay`) against decoded in
full and encoded again (what the publisher did before), on the same messages, in one run.

    uv run python bench/relay.py [--frames 60] [--json out.json]

The messages are a drive's detections (the fast model through the runtime the segmenter node
loads, one thread) and the tracker's tracks of them, encoded as the nodes send them. Each is
timed two ways, the modes alternating message by message: after a 30 ms sleep (as the node
meets them: a message or three a frame, the CPU idle in between) and back to back (warm).
Medians over the messages. ``--json`` writes ``{topic: {"full"|"relay": {"idle_ms",
"warm_ms"}, "bytes"}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.bus import codec  # noqa: E402
from perception.bus.schema import Envelope  # noqa: E402
from perception.drives.drive_file import DriveReader  # noqa: E402
from perception.geometry.letterbox import letterbox  # noqa: E402
from perception.segmentation.card import load_card  # noqa: E402
from perception.segmentation.families import load_segmenter  # noqa: E402
from perception.synth import SynthConfig, write_drive  # noqa: E402
from perception.tracking.tracker import Tracker  # noqa: E402

IDLE_S = 0.03


def messages(frames: int, seed: int, card_path: Path) -> dict[str, list[bytes]]:
    """The encoded detections and tracks envelopes of a drive of ``frames`` frames."""
    drive = Path(tempfile.mkdtemp(prefix="bench-relay-")) / "drive.mcap"
    write_drive(SynthConfig(frames=frames, seed=seed, scenario="urban"), drive)
    card = load_card(card_path)
    seg = load_segmenter(card_path, 1)
    tracker = Tracker(epoch=0)
    out: dict[str, list[bytes]] = {"detections": [], "tracks": []}
    for k, f in enumerate(DriveReader(drive).frames()):
        det = seg.predict(*letterbox(f.image, card.input_width, card.input_height))
        stamp = f.source.capture_ns
        out["detections"].append(codec.encode(Envelope("detections", k, stamp, f.source, det)))
        out["tracks"].append(codec.encode(Envelope("tracks", k, stamp, f.source, tracker.update(det, stamp))))
    return out


def full(data: bytes, topic: str) -> bytes:
    return codec.encode(codec.decode(data, topic))


def relay(data: bytes, topic: str) -> bytes:
    return codec.encode(codec.decode_relay(data, topic))


def timed(fn: Callable[[bytes, str], bytes], data: bytes, topic: str, idle_s: float) -> float:
    if idle_s:
        time.sleep(idle_s)
    t0 = time.perf_counter()
    fn(data, topic)
    return (time.perf_counter() - t0) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--card", type=Path, default=ROOT / "models" / "yolact_fast.toml")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    msgs = messages(args.frames, args.seed, args.card)
    modes = {"full": full, "relay": relay}
    result: dict[str, dict] = {}
    print(
        f"{args.frames} frames, urban seed {args.seed}; median ms per message "
        f"(after a {IDLE_S * 1e3:.0f} ms sleep / back to back)"
    )
    print(f"{'topic':<12}{'bytes':>8}{'decode+encode':>22}{'relay':>18}{'ratio':>16}")
    for topic, datas in msgs.items():
        assert all(relay(d, topic) == d for d in datas)  # passed on byte for byte
        times: dict[str, dict[str, list[float]]] = {m: {"idle_ms": [], "warm_ms": []} for m in modes}
        for d in datas:  # the two modes alternate, message by message
            for name, fn in modes.items():
                times[name]["idle_ms"].append(timed(fn, d, topic, IDLE_S))
        for _ in range(3):
            for name, fn in modes.items():
                times[name]["warm_ms"] += [timed(fn, d, topic, 0.0) for d in datas]
        med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
        size = statistics.median(len(d) for d in datas)
        result[topic] = {**med, "bytes": size}
        f, r = med["full"], med["relay"]
        print(
            f"{topic:<12}{size:>8.0f}{f['idle_ms']:>12.3f} / {f['warm_ms']:.3f}{r['idle_ms']:>10.3f} / "
            f"{r['warm_ms']:.3f}{f['idle_ms'] / r['idle_ms']:>9.1f}x / {f['warm_ms'] / r['warm_ms']:.1f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
