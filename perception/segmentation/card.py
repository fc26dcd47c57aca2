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
    family = "yolact"                # yolact | maskrcnn | ultralytics | solov2
    classes = ["person", "car"]      # each one of perception.bus.classes.CLASSES
    [input]      width = 640, height = 320
    [weights]    file = "yolact_fast.pt",   sha256 = "..."
    [onnx]       file = "yolact_fast.onnx", sha256 = "..."
    [int8]       file = "yolact_fast.int8.onnx", sha256 = "...", mask_ap = 0.11, ...
    [architecture] / [postprocess] / [training] / [data] / [accuracy]
    [[latency]]  device, provider, threads, precision, median_ms, p95_ms, command

``[onnx]`` is the FP32 file. ``[int8]`` (``perception export --card C --int8``) and
``[fp16]`` are the other precisions' files, each with the accuracy measured on it (the same
keys as ``[accuracy]``, as numbers) and ``max_ap_drop``, how much AP below FP32 it may be and
still be taken by ``precision: auto`` (:mod:`perception.segmentation.precision`).
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from perception.bus.classes import CLASSES

FAMILIES = ("yolact", "maskrcnn", "ultralytics", "solov2")
#: the arithmetic a model can run in; ``fp32`` is the ``[onnx]`` file, the others are
#: tables of their own (``[int8]``, ``[fp16]``)
PRECISIONS = ("fp32", "fp16", "int8")
#: ``max_ap_drop`` when a precision's table gives none (1.5 AP points)
DEFAULT_MAX_AP_DROP = 0.015


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
    precision: str = "fp32"


@dataclass(frozen=True)
class PrecisionFile:
    """Another precision's ONNX file (a ``[int8]`` or ``[fp16]`` table): the file, the
    accuracy measured on it (``ap``: the keys of ``[accuracy]`` it was measured on, e.g.
    ``mask_ap``, ``cityscapes_val_mask_ap``), the largest AP drop below FP32 that
    ``precision: auto`` accepts, the nodes kept in FP32 (patterns, for the export) and how
    it was calibrated."""

    precision: str
    file: FileRef
    ap: Mapping[str, float]
    max_ap_drop: float = DEFAULT_MAX_AP_DROP
    fp32_nodes: tuple[str, ...] = ()
    calibration: str = ""


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
    #: the precisions other than FP32 the card lists a file for, by name (``int8``, ``fp16``)
    precisions: Mapping[str, PrecisionFile] = field(default_factory=lambda: MappingProxyType({}))
    #: the YOLACT++ mask re-scoring graph (a ``[mask_iou]`` table: file, sha256), if any
    mask_iou: FileRef | None = None

    def where(self, section: str) -> str:
        """``"<card path>: [section]"``, for error messages of config validation."""
        return f"{self.path}: [{section}]"

    def fp32_ap(self) -> dict[str, float]:
        """The ``[accuracy]`` figures that are numbers (the card writes them as strings)."""
        out = {}
        for key, value in self.accuracy.items():
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
        return out


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


def _read_toml(path: Path) -> dict[str, Any]:
    _check_regular_file(path, f"model card {_shown(str(path))}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CardError(f"{path}: not a valid TOML model card: {e}") from None
    except OSError as e:
        raise CardError(f"model card {_shown(str(path))} cannot be read: {_reason(e)}") from None


def _input_size(doc: Mapping[str, Any], where: str) -> tuple[int, int]:
    size = _get(doc, "input", dict, where)
    width = _get(size, "width", int, f"{where}: [input]")
    height = _get(size, "height", int, f"{where}: [input]")
    if not (32 <= width <= 8192 and 32 <= height <= 8192 and width % 32 == 0 and height % 32 == 0):
        raise CardError(f"{where}: [input] width and height must be multiples of 32 in 32..8192, got {width}x{height}")
    return width, height


def _classes(doc: Mapping[str, Any], where: str) -> tuple[str, ...]:
    classes = tuple(_get(doc, "classes", list, where))
    unknown = [c for c in classes if c not in CLASSES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise CardError(
            f"{where}: classes must be distinct names from {', '.join(CLASSES)}; got {list(classes)}"
            + (f" (unknown: {', '.join(map(str, unknown))})" if unknown else "")
        )
    return classes


def _latency_row(row: Mapping[str, Any], w: str) -> LatencyEntry:
    precision = row.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise CardError(f"{w}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return LatencyEntry(
        device=_get(row, "device", str, w),
        provider=_get(row, "provider", str, w),
        threads=_get(row, "threads", int, w),
        median_ms=float(_get(row, "median_ms", (int, float), w)),
        p95_ms=float(_get(row, "p95_ms", (int, float), w)),
        stage=row.get("stage", "end_to_end"),
        command=row.get("command", ""),
        notes=row.get("notes", ""),
        per_instance_ms=float(_get(row, "per_instance_ms", (int, float), w)) if "per_instance_ms" in row else 0.0,
        precision=precision,
    )


def _precision_files(doc: Mapping[str, Any], card: Path) -> dict[str, PrecisionFile]:
    """The ``[int8]`` / ``[fp16]`` tables; their accuracy keys are the numbers in them."""
    out = {}
    for name in PRECISIONS[1:]:
        ref = _file_ref(doc, name, card)
        if ref is None:
            continue
        table, where = doc[name], f"{card}: [{name}]"
        drop = float(_get(table, "max_ap_drop", (int, float), where)) if "max_ap_drop" in table else None
        ap = {k: v for k, v in table.items() if k.endswith("ap")}
        for key, value in ap.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CardError(f"{where}: {key} must be a number (the AP measured on this file), got {value!r}")
        nodes = table.get("fp32_nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise CardError(f"{where}: fp32_nodes must be a list of node name patterns, got {nodes!r}")
        out[name] = PrecisionFile(
            name,
            ref,
            MappingProxyType({k: float(v) for k, v in ap.items()}),
            DEFAULT_MAX_AP_DROP if drop is None else drop,
            tuple(nodes),
            str(table.get("calibration", "")),
        )
    return out


def load_card(path: str | Path) -> ModelCard:
    """Read and check a model card. Raises :class:`CardError` naming the file and field."""
    path = Path(path)
    doc = _read_toml(path)
    where = str(path)
    family = _get(doc, "family", str, where)
    if family not in FAMILIES:
        raise CardError(f"{where}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    width, height = _input_size(doc, where)
    classes = _classes(doc, where)
    latency = tuple(_latency_row(row, f"{where}: [[latency]] #{i + 1}") for i, row in enumerate(doc.get("latency", [])))

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
        latency=latency,
        description=str(doc.get("description", "")),
        precisions=MappingProxyType(_precision_files(doc, path)),
        mask_iou=_file_ref(doc, "mask_iou", path),
    )


#: a ``[table]`` or ``[[array of tables]]`` header line, its name in group 1
_HEADER = re.compile(r"\s*\[\[?([^\[\]]+)\]\]?\s*(#.*)?$")


def toml_value(value: str | int | float | Sequence[str]) -> str:
    """``value`` written as TOML: a basic string (JSON's escapes are TOML's), a number, or
    an array of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"


def set_card_value(
    path: str | Path, section: str, key: str, value: str | int | float | Sequence[str], create: bool = False
) -> None:
    """Set ``key = value`` inside ``[section]`` of a card file, keeping its comments; with
    ``create``, a missing ``[section]`` is added at the end.

    A line edit rather than a TOML writer: the standard library reads TOML but does not
    write it, and rewriting the whole file would drop the card's comments.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    line = f"{key} = {toml_value(value)}\n"
    current, insert_at = "", None
    for i, text in enumerate(lines):
        header = _HEADER.match(text)
        if header:
            if current == section:
                break
            current = header.group(1).strip()
            if current == section:
                insert_at = i + 1
            continue
        if current == section and re.match(rf"\s*{re.escape(key)}\s*=", text):
            lines[i] = line
            path.write_text("".join(lines), encoding="utf-8")
            return
        if current == section and re.match(r"\s*[\w-]+\s*=", text):
            insert_at = i + 1  # after the table's last key (a new key goes at its end)
    if insert_at is None:
        if not create:
            raise CardError(f"{path}: no [{section}] table to set {key!r} in")
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += ["\n", f"[{section}]\n"]
        insert_at = len(lines)
    lines.insert(insert_at, line)
    path.write_text("".join(lines), encoding="utf-8")


def unset_card_value(path: str | Path, section: str, key: str) -> bool:
    """Remove ``key`` from ``[section]`` of a card file (a figure measured on a file that
    was replaced); whether it was there."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    current = ""
    for i, text in enumerate(lines):
        header = _HEADER.match(text)
        if header:
            current = header.group(1).strip()
        elif current == section and re.match(rf"\s*{re.escape(key)}\s*=", text):
            del lines[i]
            path.write_text("".join(lines), encoding="utf-8")
            return True
    return False


def append_latency_row(path: str | Path, row: LatencyEntry) -> None:
    """Add a ``[[latency]]`` row at the end of a card file (the newest row of its kind is
    the one :mod:`~perception.segmentation.precision` compares)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    # every field, except the optional ones left at their default (as a hand-written row would)
    kept = {f.name: getattr(row, f.name) for f in fields(row) if getattr(row, f.name) != f.default}
    lines = ["", "[[latency]]", *(f"{k} = {toml_value(v)}" for k, v in kept.items())]
    path.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
