"""Model cards: one TOML file per model under ``models/`` (read with :mod:`tomllib`).

A card names the model and its family, the input size, the class list, the weights file
(torch checkpoint, for training and export) and the ONNX file (for the runtime) with their
sha256, and records the measured accuracy and latency profile. Family-specific sections
(``architecture``, ``postprocess``, ``training``, ``data``) are kept as read-only mappings;
the code that uses one validates it into its own frozen config dataclass with
:func:`perception.node.config.build_config`, so an unknown or mistyped key is reported with the
card's path and the section.

Layout (see ``models/yolact_fast.toml``)::

    name = "yolact_fast"
    family = "yolact"                # yolact | maskrcnn | ultralytics
    classes = ["person", "car"]      # each one of perception.bus.classes.CLASSES
    [input]      width = 640, height = 320
    [weights]    file = "yolact_fast.pt",   sha256 = "..."
    [onnx]       file = "yolact_fast.onnx", sha256 = "..."
    [architecture] / [postprocess] / [training] / [data] / [accuracy]
    [[latency]]  device, provider, threads, median_ms, p95_ms, command
"""

from __future__ import annotations

import hashlib
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from perception.bus.classes import CLASSES

FAMILIES = ("yolact", "maskrcnn", "ultralytics")


class CardError(ValueError):
    """A model card that cannot be used; the message names the card file and the field."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FileRef:
    """A file the card points to (``path`` resolved against the card's folder)."""

    path: Path
    sha256: str
    section: str
    card: Path

    def verify(self) -> Path:
        """The path, after checking that it is a readable file whose sha256 matches the card.

        Raises :class:`CardError` naming the card, the section and the file.
        """
        where = f"{self.card}: [{self.section}] file {_shown(str(self.path))}"
        _check_regular_file(self.path, where)
        if not self.sha256:
            raise CardError(
                f"{self.card}: [{self.section}] has no sha256 for {_shown(self.path.name)}; "
                f"run `perception export --card {self.card}`"
            )
        try:
            actual = sha256_of(self.path)
        except OSError as e:
            raise CardError(f"{where} cannot be read: {_reason(e)}") from None
        if actual != self.sha256.lower():
            raise CardError(
                f"{where} sha256 mismatch: card says {self.sha256}, file has {actual} "
                "(wrong or corrupt file, or the card was not updated after export)"
            )
        return self.path


#: longest file reference quoted whole in an error message
SHOWN_CHARS = 120


def _shown(text: str) -> str:
    """``text`` quoted for a one-line message (escapes made visible, a long one cut short)."""
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "...")


def _reason(e: OSError | ValueError | RuntimeError) -> str:
    """What the operating system (or pathlib) said, without the path it repeats."""
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).splitlines()[0]


def _check_regular_file(path: Path, where: str) -> None:
    """:class:`CardError` (``where`` + what is wrong) unless ``path`` is a regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CardError(f"{where} does not exist") from None
    except (OSError, ValueError) as e:
        raise CardError(f"{where} cannot be read: {_reason(e)}") from None
    if stat.S_ISDIR(mode):
        raise CardError(f"{where} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise CardError(f"{where} is not a regular file (a device, pipe or socket)")


@dataclass(frozen=True)
class LatencyEntry:
    """One measured latency profile row (end to end unless ``stage`` says otherwise)."""

    device: str
    provider: str
    threads: int
    median_ms: float
    p95_ms: float
    stage: str = "end_to_end"
    command: str = ""
    notes: str = ""
    per_instance_ms: float = 0.0


@dataclass(frozen=True)
class ModelCard:
    """A parsed model card. ``class_ids[i]`` is the index in ``CLASSES`` of model class ``i``."""

    path: Path
    name: str
    family: str
    input_width: int
    input_height: int
    classes: tuple[str, ...]
    class_ids: tuple[int, ...]
    weights: FileRef | None
    onnx: FileRef | None
    architecture: Mapping[str, Any]
    postprocess: Mapping[str, Any]
    training: Mapping[str, Any]
    data: Mapping[str, Any]
    accuracy: Mapping[str, Any]
    latency: tuple[LatencyEntry, ...]
    description: str = ""

    def where(self, section: str) -> str:
        """``"<card path>: [section]"``, for error messages of config validation."""
        return f"{self.path}: [{section}]"


def _get(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise CardError(f"{where}: missing key {key!r}")
    value = d[key]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        name = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise CardError(f"{where}: key {key!r} must be {name}, got {value!r}")
    return value


def _file_ref(doc: Mapping[str, Any], section: str, card: Path) -> FileRef | None:
    table = doc.get(section)
    if table is None:
        return None
    where = f"{card}: [{section}]"
    file = _get(table, "file", str, where)
    sha = table.get("sha256", "")
    if not isinstance(sha, str) or (sha and not re.fullmatch(r"[0-9a-fA-F]{64}", sha)):
        raise CardError(f"{where}: sha256 must be 64 hex digits or empty, got {sha!r}")
    try:
        path = (card.parent / file).resolve()
    except (OSError, ValueError, RuntimeError) as e:  # a name no file system holds, a link loop (3.11)
        raise CardError(f"{where}: file {_shown(file)} is not a usable path: {_reason(e)}") from None
    return FileRef(path=path, sha256=sha, section=section, card=card)


def load_card(path: str | Path) -> ModelCard:
    """Read and check a model card. Raises :class:`CardError` naming the file and field."""
    path = Path(path)
    _check_regular_file(path, f"model card {_shown(str(path))}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CardError(f"{path}: not a valid TOML model card: {e}") from None
    except OSError as e:
        raise CardError(f"model card {_shown(str(path))} cannot be read: {_reason(e)}") from None
    where = str(path)
    family = _get(doc, "family", str, where)
    if family not in FAMILIES:
        raise CardError(f"{where}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    size = _get(doc, "input", dict, where)
    width = _get(size, "width", int, f"{where}: [input]")
    height = _get(size, "height", int, f"{where}: [input]")
    if not (32 <= width <= 8192 and 32 <= height <= 8192 and width % 32 == 0 and height % 32 == 0):
        raise CardError(f"{where}: [input] width and height must be multiples of 32 in 32..8192, got {width}x{height}")
    classes = tuple(_get(doc, "classes", list, where))
    unknown = [c for c in classes if c not in CLASSES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise CardError(
            f"{where}: classes must be distinct names from {', '.join(CLASSES)}; got {list(classes)}"
            + (f" (unknown: {', '.join(map(str, unknown))})" if unknown else "")
        )
    latency = []
    for i, row in enumerate(doc.get("latency", [])):
        w = f"{where}: [[latency]] #{i + 1}"
        latency.append(
            LatencyEntry(
                device=_get(row, "device", str, w),
                provider=_get(row, "provider", str, w),
                threads=_get(row, "threads", int, w),
                median_ms=float(_get(row, "median_ms", (int, float), w)),
                p95_ms=float(_get(row, "p95_ms", (int, float), w)),
                stage=row.get("stage", "end_to_end"),
                command=row.get("command", ""),
                notes=row.get("notes", ""),
                per_instance_ms=float(_get(row, "per_instance_ms", (int, float), w))
                if "per_instance_ms" in row
                else 0.0,
            )
        )

    def section(name: str) -> Mapping[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise CardError(f"{where}: [{name}] must be a table")
        return MappingProxyType(value)

    return ModelCard(
        path=path,
        name=_get(doc, "name", str, where),
        family=family,
        input_width=width,
        input_height=height,
        classes=classes,
        class_ids=tuple(CLASSES.index(c) for c in classes),
        weights=_file_ref(doc, "weights", path),
        onnx=_file_ref(doc, "onnx", path),
        architecture=section("architecture"),
        postprocess=section("postprocess"),
        training=section("training"),
        data=section("data"),
        accuracy=section("accuracy"),
        latency=tuple(latency),
        description=str(doc.get("description", "")),
    )


def set_card_value(path: str | Path, section: str, key: str, value: str) -> None:
    """Set ``key = "value"`` inside ``[section]`` of a card file, keeping its comments.

    A line edit rather than a TOML writer: the standard library reads TOML but does not
    write it, and rewriting the whole file would drop the card's comments.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    current, insert_at = "", None
    for i, line in enumerate(lines):
        header = re.match(r"\s*\[\[?([^\[\]]+)\]\]?\s*(#.*)?$", line)  # [table] or [[array of tables]]
        if header:
            if current == section:
                break
            current = header.group(1).strip()
            if current == section:
                insert_at = i + 1
            continue
        if current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
            lines[i] = f'{key} = "{value}"\n'
            path.write_text("".join(lines), encoding="utf-8")
            return
    if insert_at is None:
        raise CardError(f"{path}: no [{section}] table to set {key!r} in")
    lines.insert(insert_at, f'{key} = "{value}"\n')
    path.write_text("".join(lines), encoding="utf-8")
