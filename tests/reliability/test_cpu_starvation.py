"""CPU starvation: with busy processes taking every core beside the pipeline, the segmenter's
``auto`` policy falls back to the fast model, frames that cannot make their deadline are
dropped and counted (not published late), and the pipeline recovers when the hog stops."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perception.segmentation.card import load_card

from .conftest import next_external, pipeline_spec, start_pipeline
from .test_overload import _Collector

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ACCURATE = ROOT / "models" / "maskrcnn_accurate.toml"


#: a busy loop at a higher priority than the pipeline where allowed, bounded in time so that
#: it ends by itself even if the test dies
HOG = (
    "import os, time\ntry:\n    os.nice(-5)\nexcept OSError:\n    pass\n"
    "end = time.monotonic() + {seconds}\nx = 0\nwhile time.monotonic() < end:\n    x += 1\n"
)


def _usage(p, name: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    c = p.status["segmenter"].counters
    return int(c.get("usage.fast", 0)), int(c.get("usage.accurate", 0))


def test_starved_cpu_falls_back_to_fast_drops_stale_frames_and_recovers(
    small_drive: Path, fast_card: str, run_dir: str
) -> None:
    if load_card(ACCURATE).onnx is None:
        pytest.skip("needs the bundled accurate model")
    # the accurate model (about 0.1-0.2 s on a free CPU, 0.35 s with two other busy jobs on this
    # 2-core machine) fits without the hogs; with them it takes several times that and the fast
    # model has to take over
    budget_ms = 600.0
    external = next_external()
    # 15 fps drive at 0.15x: a frame every 444 ms, time for the accurate model on a busy CPU
    spec = pipeline_spec(
        small_drive,
        fast_card,
        external,
        "replay.rate=0.15",
        "replay.loop=true",
        "segmenter.policy=auto",
        f"segmenter.accurate={ACCURATE}",
        f"segmenter.budget_ms={budget_ms}",
    )
    with start_pipeline(spec, run_dir, external) as p:
        collector = _Collector(run_dir)
        p.wait_status("segmenter", lambda st: st.counters.get("usage.accurate", 0) >= 5, 90)
        calm_fast, calm_acc = _usage(p, "segmenter")
        stale_before = int(p.status["segmenter"].counters.get("stale", 0))
        # each in its own session: the kernel shares the CPU between sessions first (autogroups),
        # as between the nodes, which the supervisor starts in sessions of their own
        # as many again as there are other runnable processes already (a machine busy with other
        # jobs shares the CPU among more sessions, so three per core would no longer starve it)
        # and enough of them to slow the calm segmenter's step (mostly the accurate model) to
        # three times the budget: with a session each, the segmenter gets about cpus / (hogs + 1)
        # of the machine, so on a quiet machine with a fast CPU three per core were too few
        cpus = os.cpu_count() or 2
        calm_step_ms = max(p.status["segmenter"].step_p50_ms, 1.0)
        n_hogs = min(64, max(3 * cpus + math.ceil(os.getloadavg()[0]), math.ceil(3 * budget_ms * cpus / calm_step_ms)))
        hogs = [
            subprocess.Popen([sys.executable, "-c", HOG.format(seconds=14)], start_new_session=True)
            for _ in range(n_hogs)
        ]
        time.sleep(12)
        hog_fast, hog_acc = _usage(p, "segmenter")
        hog_status = p.status["segmenter"]
        stale_hog = int(p.status["segmenter"].counters.get("stale", 0)) - stale_before
        for h in hogs:
            h.wait(timeout=10)
        seg = p.status["segmenter"]
        p.wait_status("segmenter", lambda st: st.frames_out >= seg.frames_out + 10, 60)  # flowing again
        p.wait_status("segmenter", lambda st: st.counters.get("usage.accurate", 0) > hog_acc, 60)  # accurate back
        dets = collector.close()
    starved_fast = hog_fast - calm_fast
    starved_acc = hog_acc - calm_acc
    # while starved, the fast model took over (the accurate one's latency no longer fits)
    assert starved_fast > starved_acc, (starved_fast, starved_acc, n_hogs, calm_step_ms, hog_status)
    # nothing went out late: a frame that could not make its deadline was dropped and counted
    worst = max(d.envelope.payload.inference_ms for d in dets)
    ages = [d.envelope.payload.frame_age_ms for d in dets]
    assert max(ages) <= budget_ms + worst, (max(ages), worst)
    end = p.status["segmenter"]
    assert end.counters["published"] + end.counters["stale"] == end.frames_in
    assert stale_hog >= 0
