"""A running pipeline for the reliability tests: replay -> preprocess -> segmenter ->
tracker -> publisher (+ recorder), supervised in a background thread."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import zmq

from perception.bus import schema
from perception.bus.pubsub import Subscriber
from perception.bus.schema import Status
from perception.segmentation.card import CardError, load_card
from perception.synth import SynthConfig, write_drive
from perception.system.launch import LaunchSpec, load_launch, with_node
from perception.system.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]
_ports = itertools.count(18100)


@pytest.fixture(scope="session")
def fast_card(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled fast model's card, or (before it is trained) a random-init export of it."""
    bundled = ROOT / "models" / "yolact_fast.toml"
    try:
        card = load_card(bundled)
        if card.onnx is not None:
            card.onnx.verify()
            return str(bundled)
    except CardError:
        pass
    from perception.train.export import export_card

    d = tmp_path_factory.mktemp("card")
    shutil.copy(bundled, d / bundled.name)
    export_card(d / bundled.name, random_init=True)
    return str(d / bundled.name)


@pytest.fixture(scope="session")
def small_drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("drive") / "drive.mcap"
    write_drive(SynthConfig(frames=45, seed=5, width=640, height=360), path)
    return path


@dataclass
class Pipeline:
    """A supervised pipeline; ``status`` holds the latest heartbeat of every node."""

    sup: Supervisor
    run_dir: str
    external: str
    status: dict[str, Status] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def pid(self, node: str) -> int:
        n = next(n for n in self.sup.nodes if n.spec.name == node)
        assert n.proc is not None
        return n.proc.pid

    def rss_mb(self, node: str) -> float:
        return psutil.Process(self.pid(node)).memory_info().rss / 1e6

    def restarts(self, node: str) -> int:
        return next(n.total_restarts for n in self.sup.nodes if n.spec.name == node)

    def wait_status(self, node: str, pred, timeout_s: float = 20.0) -> Status:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = self.status.get(node)
            if st is not None and pred(st):
                return st
            time.sleep(0.1)
        raise AssertionError(f"{node}: condition not met within {timeout_s} s; last status {self.status.get(node)}")


@contextlib.contextmanager
def start_pipeline(spec: LaunchSpec, run_dir: str, external: str) -> Iterator[Pipeline]:
    sup = Supervisor(spec, run_dir, out=open(os.path.join(run_dir, "nodes.log"), "w"))
    p = Pipeline(sup, run_dir, external)
    ctx = zmq.Context()

    def loop() -> None:
        sub = Subscriber(ctx, {"status": schema.endpoint("status", run_dir)}, keep_newest=False)
        try:
            sup.start()
            while not p.stop.is_set():
                sup.tick(wait_ms=0)
                for m in sub.poll(20):
                    p.status[m.envelope.payload.node] = m.envelope.payload  # type: ignore[union-attr]
        except BaseException as e:  # surfaced by the test
            p.error = e
        finally:
            sub.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield p
    finally:
        p.stop.set()
        t.join(timeout=10)
        sup.shutdown()
        ctx.term()
        if p.error is not None:
            raise p.error


def pipeline_spec(drive: Path, card: str, external: str, *overrides: str, record: Path | None = None) -> LaunchSpec:
    spec = load_launch(
        ROOT / "launch" / "replay.yaml",
        [
            f"replay.drive={drive}",
            "replay.start_delay_s=0.5",
            f"segmenter.fast={card}",
            f"publisher.bind={external}",
            "segmenter.threads=1",
            *overrides,
        ],
    )
    if record is not None:
        spec = with_node(spec, "recorder", {"out": str(record), "chunk_s": 0.2}, "recorder")
    return spec


def next_external() -> str:
    return f"tcp://127.0.0.1:{next(_ports)}"
