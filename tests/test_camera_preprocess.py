"""Camera sources and pacing; letterbox and its inverse."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.camera.sources import CameraConfig, CameraLogic, FolderSource
from perception.geometry.letterbox import letterbox, to_camera_xyxy


def test_folder_source_reads_in_name_order_and_loops(tmp_path: Path) -> None:
    for name, value in (("b.png", 2), ("a.png", 1), ("c.jpg", 3), ("notes.txt", 0)):
        if name.endswith("txt"):
            (tmp_path / name).write_text("x")
        else:
            cv2.imwrite(str(tmp_path / name), np.full((4, 4, 3), value * 50, np.uint8))
    cam = CameraLogic(CameraConfig(source=str(tmp_path), fps=0, loop=True, start_delay_s=0))
    values = []
    for _ in range(5):
        [out] = cam.step(0, None)
        values.append(int(round(out.pixels.mean() / 50)))
    assert values == [1, 2, 3, 1, 2]
    assert cam.loops == 1 and [o.source.frame_seq for o in cam.step(0, None)] == [5]


def test_camera_stops_at_end_without_loop(image_folder: Path) -> None:
    cam = CameraLogic(CameraConfig(source=str(image_folder), fps=0, start_delay_s=0))
    n = sum(len(cam.step(0, None)) for _ in range(25))
    assert n == 20 and cam.finished and cam.next_wakeup_ns(0) is None


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "0.jpg").write_bytes(b"not a jpeg")
    src = FolderSource(str(tmp_path))
    with pytest.raises(ValueError, match=r"0\.jpg: not a readable image"):
        src.read()


def test_pacing_keeps_schedule_without_bursts(image_folder: Path) -> None:
    cam = CameraLogic(CameraConfig(source=str(image_folder), fps=10, loop=True, start_delay_s=0))
    t = 1_000_000_000
    cam.step(t, None)
    assert cam.next_wakeup_ns(t) == t + 100_000_000
    cam.step(t + 105_000_000, None)  # a little late: keep the nominal schedule
    assert cam.next_wakeup_ns(t) == t + 200_000_000
    cam.step(t + 1_000_000_000, None)  # far behind: restart from now instead of bursting
    assert cam.next_wakeup_ns(t) == t + 1_100_000_000


def test_missing_device_or_file_is_clear() -> None:
    with pytest.raises(ValueError, match="could not open video file"):
        CameraLogic(CameraConfig(source="/tmp/does-not-exist.mp4", fps=1))


def test_letterbox_round_trip() -> None:
    image = np.zeros((480, 854, 3), np.uint8)
    image[100:200, 300:500] = 255
    out, t = letterbox(image, 640, 384)
    assert out.shape == (384, 640, 3)
    ys, xs = np.nonzero(out[..., 0] > 127)
    model_box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    cam_box = to_camera_xyxy(model_box, t)[0]
    assert np.allclose(cam_box, [300, 100, 500, 200], atol=2.0)


def test_video_file_source_reads_and_rewinds(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(4):
        writer.write(np.full((48, 64, 3), 40 + i * 50, np.uint8))
    writer.release()
    cam = CameraLogic(CameraConfig(source=str(path), fps=0, loop=True, start_delay_s=0))
    means = [round(float(cam.step(0, None)[0].pixels.mean()) / 50) for _ in range(6)]
    assert means == [1, 2, 3, 4, 1, 2] and cam.loops == 1


@pytest.mark.parametrize("src", [(360, 640), (480, 640), (100, 50), (320, 640), (200, 1280)])
def test_letterbox_into_a_given_array_is_the_same_image(src: tuple[int, int]) -> None:
    image = np.random.default_rng(src[0]).integers(0, 255, (*src, 3), dtype=np.uint8)
    want, t_want = letterbox(image, 640, 320, 114)
    out = np.zeros((320, 640, 3), np.uint8)
    got, t_got = letterbox(image, 640, 320, 114, out=out)
    assert got is out and np.array_equal(got, want) and t_got == t_want
    wrong = np.zeros((320, 641, 3), np.uint8)  # not the output's shape: made as before
    assert np.array_equal(letterbox(image, 640, 320, 114, out=wrong)[0], want) and not wrong.any()


def test_preprocess_letterboxes_into_its_rings_slot_without_a_copy(run_dir: str) -> None:
    """With a ring on frames.rect the node gives the logic the next slot; the frame is made
    there and published from it: one slot taken per frame, none copied into."""
    import zmq

    from perception.bus import schema
    from perception.bus.pubsub import Received, Subscriber, header_for
    from perception.bus.schema import Envelope, Source
    from perception.camera.preprocess import PreprocessConfig, PreprocessLogic
    from perception.node.loop import NodeContext, NodeLoop
    from perception.system.node_table import NODE_TYPES

    ctx = zmq.Context()
    logic = PreprocessLogic(PreprocessConfig(width=640, height=320))
    loop = NodeLoop(
        NodeContext("preprocess", run_dir, shm_slots=4, shm_slot_bytes=1 << 20),
        logic,
        ctx,
        NODE_TYPES["preprocess"].caps,
    )
    ring = loop.pubs["frames.rect"].ring
    assert ring is not None and logic.claim is not None
    sub = Subscriber(ctx, {"frames.rect": schema.endpoint("frames.rect", run_dir)}, keep_newest=False)
    image = np.random.default_rng(3).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    want = letterbox(image, 640, 320, 114)[0]
    got = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:  # until the subscriber is connected
        before = ring.next
        loop._step(Received(Envelope("frames", 0, 0, Source("c", 0, 0), header_for(image)), image))
        assert ring.next == before + 1  # the claimed slot, committed as it is
        got = sub.poll(100)
    ref = got[0].envelope.payload.shm
    assert ref is not None and ref.slot == (ring.next - 1) % ring.slots
    assert np.array_equal(got[0].pixels, want)
    loop.close()
    sub.close()
    ctx.term()


def test_ring_slots_keep_their_padding_and_get_new_padding_for_another_size() -> None:
    """A slot padded for one frame size is only written in its image area by the next frame
    of that size; a frame of another size pads it anew. Every frame comes out exactly as a
    fresh letterbox."""
    from perception.bus.pubsub import Received, header_for
    from perception.bus.schema import Envelope, Source
    from perception.camera.preprocess import PreprocessConfig, PreprocessLogic

    logic = PreprocessLogic(PreprocessConfig(width=640, height=320))
    slots = [np.full((320, 640, 3), 7, np.uint8) for _ in range(4)]  # a ring's slots, not padded yet
    taken = []

    def claim(topic: str, shape: tuple[int, ...]) -> np.ndarray:
        taken.append(slots[len(taken) % 4])
        return taken[-1]

    logic.claim = claim
    rng = np.random.default_rng(5)
    for size in [(360, 640)] * 6 + [(480, 640)] * 5 + [(360, 640)] * 5:
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        [out] = logic.step(0, Received(Envelope("frames", 0, 0, Source("c", 0, 0), header_for(image)), image))
        assert out.pixels is taken[-1]
        assert np.array_equal(out.pixels, letterbox(image, 640, 320, 114)[0]), size
