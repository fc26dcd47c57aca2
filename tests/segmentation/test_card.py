"""Model cards: parsing, clear errors, sha256 checks, in-place updates."""

from __future__ import annotations

from pathlib import Path

import pytest

from perception.bus.classes import CLASSES
from perception.segmentation.card import CardError, load_card, set_card_value, sha256_of

REPO = Path(__file__).resolve().parents[2]


def test_bundled_card_parses_and_uses_known_classes() -> None:
    card = load_card(REPO / "models" / "yolact_fast.toml")
    assert card.family == "yolact"
    assert [CLASSES[i] for i in card.class_ids] == list(card.classes)
    assert card.input_width % 32 == 0 and card.input_height % 32 == 0
    assert card.onnx is not None and card.onnx.path.parent == REPO / "models"


def test_subset_classes_map_to_global_ids(tiny_card: Path) -> None:
    card = load_card(tiny_card)
    assert card.classes == ("person", "car", "truck")
    assert card.class_ids == (0, 2, 5)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('family = "yolact"', 'family = "detr"', "family must be one of"),
        ('classes = ["person", "car", "truck"]', 'classes = ["person", "cat"]', "unknown: cat"),
        ("width = 128", "width = 100", "multiples of 32"),
        ('name = "tiny"', "", "missing key 'name'"),
        ('[onnx]\nfile = "tiny.onnx"\nsha256 = ""', '[onnx]\nfile = "tiny.onnx"\nsha256 = "abc"', "64 hex digits"),
    ],
)
def test_bad_cards_name_file_and_field(tiny_card: Path, old: str, new: str, expected: str) -> None:
    text = tiny_card.read_text()
    assert old in text
    tiny_card.write_text(text.replace(old, new))
    with pytest.raises(CardError, match=expected) as err:
        load_card(tiny_card)
    assert str(tiny_card) in str(err.value)


def test_missing_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="does not exist"):
        load_card(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(CardError, match="not a valid TOML"):
        load_card(bad)


def test_sha256_mismatch_is_a_clear_error(tiny_card: Path) -> None:
    onnx = tiny_card.parent / "tiny.onnx"
    onnx.write_bytes(b"model bytes")
    set_card_value(tiny_card, "onnx", "sha256", "0" * 64)
    ref = load_card(tiny_card).onnx
    assert ref is not None
    with pytest.raises(CardError, match="sha256 mismatch") as err:
        ref.verify()
    assert "tiny.onnx" in str(err.value) and sha256_of(onnx) in str(err.value)
    set_card_value(tiny_card, "onnx", "sha256", sha256_of(onnx))
    assert load_card(tiny_card).onnx.verify() == onnx  # type: ignore[union-attr]


def test_unexported_card_says_what_to_run(tiny_card: Path) -> None:
    (tiny_card.parent / "tiny.onnx").write_bytes(b"x")
    with pytest.raises(CardError, match="perception export"):
        load_card(tiny_card).onnx.verify()  # type: ignore[union-attr]


def test_set_card_value_keeps_other_lines(tiny_card: Path) -> None:
    before = tiny_card.read_text().splitlines()
    set_card_value(tiny_card, "weights", "sha256", "f" * 64)
    after = tiny_card.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [('sha256 = ""', f'sha256 = "{"f" * 64}"')]
    assert load_card(tiny_card).weights.sha256 == "f" * 64  # type: ignore[union-attr]
    assert load_card(tiny_card).onnx.sha256 == ""  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("x" * 300 + ".onnx", "File name too long"),  # the fuzzer's finding (bench/fuzz.py, card target)
        ("sub", "is a directory, not a file"),
        ("/dev/zero", "is not a regular file"),
        ("tiny\\u0000.onnx", "null"),
        ("tiny.onnx/inside", "cannot be read: Not a directory"),
        ("nope.onnx", "does not exist"),
    ],
)
def test_a_bad_file_reference_is_one_line_naming_card_and_field(tiny_card: Path, file: str, expected: str) -> None:
    (tiny_card.parent / "sub").mkdir()
    (tiny_card.parent / "tiny.onnx").write_bytes(b"x")
    text = tiny_card.read_text()
    tiny_card.write_text(text.replace('[onnx]\nfile = "tiny.onnx"', f'[onnx]\nfile = "{file}"'))
    with pytest.raises(CardError, match=expected) as err:
        load_card(tiny_card).onnx.verify()  # type: ignore[union-attr]
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tiny_card}: [onnx]") and len(message) < 400


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_an_unreadable_file_is_a_card_error(tiny_card: Path) -> None:
    # a regular file that cannot be read, whoever runs the test (root reads a chmod 0 file)
    tiny_card.write_text(
        tiny_card.read_text().replace(
            '[onnx]\nfile = "tiny.onnx"\nsha256 = ""', f'[onnx]\nfile = "/proc/self/mem"\nsha256 = "{"0" * 64}"'
        )
    )
    with pytest.raises(CardError, match=r"\[onnx\] file '/proc/.*/mem' cannot be read: Input/output error"):
        load_card(tiny_card).onnx.verify()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("card", "expected"),
    [("folder", "is a directory"), ("/dev/zero", "not a regular file"), ("c" * 300 + ".toml", "File name too long")],
)
def test_a_bad_card_path_is_one_line(tmp_path: Path, card: str, expected: str) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(CardError, match=f"model card .* {expected}"):
        load_card(tmp_path / card)
