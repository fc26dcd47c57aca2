"""Fuzzing of every decoder that takes outside input: no crash, a typed error every time."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perception.bus import codec, schema
from perception.bus.masks import decode_mask, encode_mask
from perception.bus.pubsub import frame_pixels
from perception.bus.rle_codec import validate_rle, validate_rles
from perception.bus.schema import Envelope, FrameHeader, MalformedMessage, Rle, SchemaError
from perception.node.config import ConfigError
from perception.system.launch import load_launch

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        codec.decode(data)
    except SchemaError:
        pass


@FUZZ
@given(plain)
def test_random_msgpack_documents_give_typed_errors(doc: object) -> None:
    try:
        codec.decode(msgspec.msgpack.encode(doc))
    except SchemaError:
        pass


@FUZZ
@given(st.sampled_from([t.name for t in schema.TOPICS]), st.dictionaries(st.text(max_size=12), plain, max_size=6))
def test_envelopes_with_random_payloads(topic: str, payload: dict) -> None:
    doc = {"topic": topic, "seq": 1, "stamp_ns": 2, "source": None, "payload": payload}
    try:
        env = codec.decode(msgspec.msgpack.encode(doc))
    except SchemaError:
        return
    assert isinstance(env.payload, schema.topic(topic).msg_type)


@FUZZ
@given(
    st.integers(-5, 5000),
    st.integers(-5, 5000),
    st.sampled_from(["bgr8", "rgb8", "mono8"]),
    st.integers(-5, 20000),
    st.integers(0, 4096),
)
def test_frames_with_wrong_sizes_or_strides(w: int, h: int, enc: str, stride: int, nbytes: int) -> None:
    header = FrameHeader(width=w, height=h, encoding=enc, stride=stride)  # type: ignore[arg-type]
    try:
        view = frame_pixels(header, bytes(nbytes))
    except MalformedMessage:
        return
    assert view.shape == (h, w, header.channels)


@FUZZ
@given(
    st.integers(0, 64),
    st.integers(0, 64),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=300), max_size=40),
)
def test_random_rle_strings_are_rejected_or_decode_exactly(h: int, w: int, counts: str) -> None:
    try:
        rle = Rle(size=(h, w), counts=counts)
    except ValueError:
        return
    mask = decode_mask(rle)  # only validated RLEs reach pycocotools
    assert mask.shape == (h, w)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_valid_rles_round_trip(h: int, w: int, seed: int) -> None:
    m = np.random.default_rng(seed).random((h, w)) > 0.6
    assert np.array_equal(decode_mask(encode_mask(m)), m)


_rle_text = st.text(alphabet=st.characters(min_codepoint=40, max_codepoint=120), max_size=30)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.integers(0, 12), st.booleans(), _rle_text, st.integers(0, 2**32 - 1)),
        max_size=8,
    )
)
def test_masks_checked_together_are_accepted_exactly_when_each_is_alone(masks: list) -> None:
    items = []
    for h, w, real, counts, seed in masks:  # real masks, and random strings (mostly bad)
        if real:
            counts = encode_mask(np.random.default_rng(seed).random((h, w)) > 0.5).counts
        items.append(((h, w), counts))
    bad = []
    for i, (size, counts) in enumerate(items):
        try:
            validate_rle(size, counts)
        except ValueError:
            bad.append(i)
    if not bad:
        validate_rles(items)
        return
    with pytest.raises(ValueError, match=f"^mask {bad[0]}: "):
        validate_rles(items)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),
            st.integers(0, 40),
            st.booleans(),
            st.text(alphabet=st.characters(min_codepoint=44, max_codepoint=115), max_size=60),
            st.integers(0, 2**32 - 1),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_plain_and_the_vectorised_mask_checks_accept_the_same_masks(masks: list) -> None:
    """A message's masks are checked in plain Python up to PLAIN_PYTHON_CHARS characters and
    with NumPy above: both accept exactly the same ones (random strings, with long values
    and bad characters, and real masks, whole or cut short). The native fast path accepts
    only masks that those accept, and every whole real mask."""
    from perception.bus.rle_codec import _check_native, _check_plain, _check_vectorised

    items = []
    whole = True
    for h, w, real, counts, seed in masks:
        if real:
            counts = encode_mask(np.random.default_rng(seed).random((h, w)) > 0.5).counts
            if seed % 5 == 0:  # sometimes cut short
                counts, whole = counts[: len(counts) - seed % 3 + 1], False
        whole = whole and real
        items.append(((h, w), counts))
    outcomes = []
    for check in (_check_plain, _check_vectorised):
        try:
            check(items)
            outcomes.append(True)
        except ValueError:
            outcomes.append(False)
    assert outcomes[0] == outcomes[1], items
    native = _check_native(items)
    assert outcomes[0] or not native, items
    assert native or not whole, items


def test_both_mask_checks_on_the_edges_of_the_format() -> None:
    from perception.bus.rle_codec import _check_plain, _check_vectorised

    good = encode_mask(np.random.default_rng(1).random((30, 40)) > 0.5)
    value_of_6_groups = "P" * 5 + "0"  # 0 in six groups: long, but a value
    for check in (_check_plain, _check_vectorised):
        check([(good.size, good.counts), ((0, 0), ""), ((2, 2), "4")])  # "4": one run of 4 pixels
        check([((0, 5), value_of_6_groups)])
        for bad, why in (
            ([((1, 1), "P" * 6 + "1")], "longer than 6 groups"),
            ([((2, 2), "4P")], "middle"),
            ([((2, 2), "3")], "cover"),
            ([((1, 1), "@")], "negative"),
            ([((1, 1), "1~")], "outside"),
        ):
            with pytest.raises(ValueError, match=why):
                check(bad)


def test_the_native_mask_check_leaves_what_it_cannot_read_exactly_to_the_others() -> None:
    """Long values (beyond 30 bits), counts that go negative or past 32 bits, strings cut in
    the middle of a value and characters out of range are never accepted natively; the
    full checks then decide (and accept what is valid)."""
    from perception.bus.rle_codec import _check_native

    good = encode_mask(np.random.default_rng(1).random((30, 40)) > 0.5)
    assert _check_native([(good.size, good.counts), ((0, 0), ""), ((2, 2), "4")])
    zero_in_seven_groups = "P" * 6 + "0"
    assert not _check_native([((0, 5), zero_in_seven_groups)])
    with pytest.raises(ValueError, match="longer than 6 groups"):  # decided by the other checks
        validate_rles([((0, 5), zero_in_seven_groups)])
    # runs 0, -2, 0, then +8 against the -2: natively (32 bits) -2 is 2**32 - 2 and the last
    # run 6, the sum of the runs far from 2 x 3; the full checks see the negative run
    negative = "0N08"
    with pytest.raises(ValueError, match="negative"):
        validate_rles([((2, 3), negative)])
    for size, counts in (
        ((2, 3), negative),
        (good.size, good.counts[:-1]),
        (good.size, good.counts + "~"),
        (good.size, good.counts + "P"),
        (good.size, good.counts + "\u00e9"),
    ):
        assert not _check_native([(size, counts)]), counts


def test_a_value_pycocotools_would_read_otherwise_is_rejected() -> None:
    """Runs 0, 2**25 + 10, 0, then -2**25 - 5 against the second: 5, which covers the 1 x
    (2**25 + 15) mask exactly, but the last value is written in seven groups, past what
    pycocotools' C int shifts read exactly: it reads -5 there, and runs that cover 2**25 more
    pixels than the mask (its decode would write them past its buffer; its area shows it)."""
    from pycocotools import mask as mask_utils

    def groups(x: int, n: int) -> str:  # x in n groups, as rleFrString reads them
        return "".join(chr(((x >> 5 * k) & 0x1F | (0x20 if k < n - 1 else 0)) + 48) for k in range(n))

    runs = 2**25 + 10
    counts = groups(0, 1) + groups(runs, 6) + groups(0, 1) + groups(-(2**25) - 5, 7)
    size = (1, 2**25 + 15)
    # the foreground as this module reads it is runs + 5; as pycocotools reads it, runs + (runs - 5)
    assert int(mask_utils.area({"size": list(size), "counts": counts.encode()})) == 2 * runs - 5
    with pytest.raises(ValueError, match="longer than 6 groups"):
        validate_rles([(size, counts)])
    with pytest.raises(ValueError, match="longer than 6 groups"):
        Rle(size=size, counts=counts)


def test_a_bad_mask_among_many_in_a_message_is_named() -> None:
    good = encode_mask(np.eye(6, dtype=bool))
    det = schema.Detections("m", 6, 6, tuple(schema.Instance(0, 0.9, (0, 0, 6, 6), good) for _ in range(5)))
    doc = codec.to_plain(Envelope("detections", 0, 0, None, det))
    assert codec.decode(msgspec.msgpack.encode(doc), expected_topic="detections").payload == det
    doc["payload"]["instances"][3]["mask"]["counts"] = good.counts[:-1] + "1"
    with pytest.raises(MalformedMessage, match=r"instances\[3\]\.mask"):
        codec.decode(msgspec.msgpack.encode(doc), expected_topic="detections")


def test_rle_claiming_a_huge_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        Rle(size=(100_000, 100_000), counts="0")
    doc = codec.to_plain(Envelope("gt", 0, 0, None, schema.GroundTruth(4, 4)))
    doc["payload"]["instances"] = [
        {"instance_id": 1, "class_id": 0, "box_xyxy": [0, 0, 1, 1], "mask": {"size": [100000, 100000], "counts": "0"}}
    ]
    with pytest.raises(MalformedMessage, match="outside"):
        codec.decode(msgspec.msgpack.encode(doc))


@FUZZ
@given(st.text(max_size=300))
def test_random_launch_files(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    p = Path(tmp_path_factory.mktemp("l")) / "fuzz.yaml"
    p.write_text(text)
    try:
        load_launch(p)
    except ConfigError:
        pass


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["camera", "preprocess", "publisher", "x"]),
        st.dictionaries(
            st.sampled_from(["source", "fps", "width", "height", "topics", "bind", "loop", "y"]), plain, max_size=4
        ),
        max_size=3,
    )
)
def test_random_launch_documents(tmp_path_factory: pytest.TempPathFactory, nodes: dict) -> None:
    p = Path(tmp_path_factory.mktemp("l")) / "fuzz.yaml"
    p.write_text(__import__("yaml").safe_dump({"nodes": nodes}))
    try:
        load_launch(p)
    except ConfigError:
        pass


@FUZZ
@given(st.text(max_size=400))
def test_random_calibration_files(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    from perception.calibration.camera_file import CalibrationError, load_calibration

    p = Path(tmp_path_factory.mktemp("c")) / "cam.yaml"
    p.write_text(text)
    try:
        load_calibration(p)
    except CalibrationError:
        pass


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "image_width",
                "image_height",
                "camera_name",
                "camera_matrix",
                "distortion_model",
                "distortion_coefficients",
                "rectification_matrix",
                "projection_matrix",
                "extrinsics",
            ]
        ),
        plain,
        max_size=9,
    )
)
def test_random_calibration_documents(tmp_path_factory: pytest.TempPathFactory, doc: dict) -> None:
    from perception.calibration.camera_file import CalibrationError, load_calibration

    p = Path(tmp_path_factory.mktemp("c")) / "cam.yaml"
    p.write_text(__import__("yaml").safe_dump(doc))
    try:
        load_calibration(p)
    except CalibrationError:
        pass


@FUZZ
@given(st.text(max_size=400))
def test_random_model_cards(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    from perception.segmentation.card import CardError, load_card

    p = Path(tmp_path_factory.mktemp("m")) / "card.toml"
    p.write_text(text)
    try:
        load_card(p)
    except CardError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10_000), st.binary(min_size=1, max_size=64))
def test_corrupted_and_truncated_drive_files(tmp_path_factory: pytest.TempPathFactory, cut: int, junk: bytes) -> None:
    from perception.drives.drive_file import DriveError, DriveMeta, DriveReader, DriveWriter

    d = Path(tmp_path_factory.mktemp("d"))
    good = d / "good.mcap"
    with DriveWriter(good, DriveMeta(width=8, height=8)) as w:
        for i in range(3):
            w.write_frame(np.zeros((8, 8, 3), np.uint8), schema.Source("c", i, i))
    data = good.read_bytes()
    cut = cut % len(data)
    bad = d / "bad.mcap"
    bad.write_bytes(data[:cut] + junk + data[cut + len(junk) :])
    try:
        reader = DriveReader(bad)
        list(reader.frames())
    except DriveError:
        pass


def test_a_launch_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """Found by ``bench/fuzz.py`` (launch): invalid UTF-8 escaped as a UnicodeDecodeError."""
    bad = tmp_path / "launch.yaml"
    bad.write_bytes((Path(__file__).parents[2] / "launch" / "replay.yaml").read_bytes()[:250] + b"\xf6\n")
    with pytest.raises(ConfigError, match=r"launch.yaml: not UTF-8 text \(byte 250\)"):
        load_launch(bad)


def test_a_drive_whose_summary_counts_an_unknown_channel_is_a_drive_error() -> None:
    """Found by ``bench/fuzz.py`` (drive): a corrupt summary escaped as a KeyError."""
    from perception.drives.drive_file import DriveError, DriveReader

    path = Path(__file__).parents[1] / "data" / "fuzz" / "drive-statistics-unknown-channel.mcap"
    with pytest.raises(DriveError, match="drive-statistics-unknown-channel.mcap"):
        r = DriveReader(path)
        for _ in r.frames():
            pass


def test_a_drive_with_a_bad_frame_count_is_a_drive_error() -> None:
    """Found by ``bench/fuzz.py`` (drive): a metadata frame_count that is not JSON escaped."""
    from perception.drives.drive_file import DriveError, DriveReader

    path = Path(__file__).parents[1] / "data" / "fuzz" / "drive-bad-frame-count.mcap"
    with pytest.raises(DriveError, match="drive-bad-frame-count.mcap"):
        DriveReader(path)


def test_only_messages_without_masks_skip_the_mask_check() -> None:
    """Frame headers and status are decoded without the masks' bookkeeping; every type that
    can hold a mask, however deep, keeps it (found by walking the types, not listed)."""
    from perception.bus.codec import _WITHOUT_MASKS, _holds_masks

    assert all(_holds_masks(t) for t in (schema.Detections, schema.Tracks, schema.GroundTruth, schema.Instance))
    assert not any(_holds_masks(t) for t in (schema.FrameHeader, schema.Status, schema.Source))
    assert _WITHOUT_MASKS == {t.name for t in schema.TOPICS if t.msg_type in (schema.FrameHeader, schema.Status)}
