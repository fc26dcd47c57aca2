"""``perception doctor``: what a user needs when something is slow or missing, in one report
(no torch import): Python and package versions, ONNX Runtime's providers and which one each
model will use, the GPU (``nvidia-smi``) when there is one, camera devices, the model cards
and whether their files match their sha256, free shared memory and disk. With a launch file
it also checks that the file's choices can be met (cards, providers, camera source, calib
files) and says which cannot: the exit code is non-zero then.
"""

from __future__ import annotations

import glob
import importlib.metadata
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "onnxruntime",
    "onnxruntime-gpu",
    "pyzmq",
    "msgpack",
    "msgspec",
    "mcap",
    "pycocotools",
    "faster-coco-eval",
    "trackeval",
    "foxglove-sdk",
    "rosbags",
    "ray",
    "torch",
    "torchvision",
    "tensorrt-cu13",
)


@dataclass
class Report:
    """Sections of ``(label, value)`` rows, and the problems found (each one line)."""

    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, section: str, label: str, value: str) -> None:
        self.sections.setdefault(section, []).append((label, value))

    def text(self) -> str:
        lines = []
        for name, rows in self.sections.items():
            lines.append(name)
            width = max((len(k) for k, _ in rows), default=0)
            lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        lines.append("problems" if self.problems else "no problems found")
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpus() -> list[str]:
    """``name, memory`` of each NVIDIA GPU that ``nvidia-smi`` lists (empty without one)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.used,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _cards(report: Report, cards: list[Path], providers: tuple[str, ...], have: list[str]) -> None:
    from perception.segmentation.card import CardError, load_card
    from perception.segmentation.precision import choose_precision
    from perception.segmentation.providers import ProviderError, choose

    for path in cards:
        try:
            card = load_card(path)
        except (CardError, OSError, ValueError) as e:
            report.add("models", str(path), f"unreadable: {e}")
            report.problems.append(str(e))
            continue
        state = []
        files = [("onnx", card.onnx), *((p, listed.file) for p, listed in card.precisions.items())]
        for what, ref in [*files, ("weights", card.weights)]:
            if ref is None:
                continue
            try:
                ref.verify()
                state.append(f"{what} ok")
            except CardError as e:
                state.append(f"{what}: {e}")
                if what == "onnx" and card.name in ("yolact_fast", "maskrcnn_accurate"):
                    report.problems.append(str(e))
        try:
            provider = choose(providers, have)[0]
            choice = choose_precision(card, "auto", provider)
            state.append(f"runs on {provider} ({choice.precision}, {choice.reason})")
        except ProviderError as e:
            state.append("no provider")
            report.problems.append(str(e))
        except CardError as e:
            state.append(f"precision: {e}")
        report.add("models", card.name, "; ".join(state))


def _launch(report: Report, launch: str, overrides: list[str]) -> tuple[list[Path], tuple[str, ...]]:
    from perception.node.config import ConfigError
    from perception.system.launch import load_launch

    try:
        spec = load_launch(launch, overrides)
    except ConfigError as e:
        report.problems.append(str(e))
        return [], ()
    report.add("launch", "file", f"{launch} ({len(spec.nodes)} nodes: {', '.join(n.name for n in spec.nodes)})")
    cards: list[Path] = []
    providers: tuple[str, ...] = ()
    for node in spec.nodes:
        if node.type == "segmenter":
            cfg = node.config
            # the fast model's card always, and every other one the policy runs
            cards += [Path(cfg.fast)] + [Path(cfg.card_and_precision(m)[0]) for m in cfg.needed() if m != "fast"]
            providers = tuple(cfg.providers)
            report.add("launch", node.name, f"policy {cfg.policy}, providers {list(providers) or 'auto'}")
        elif node.type == "camera":
            source = str(node.config.source)
            ok = source.isdigit() and Path(f"/dev/video{source}").exists() or Path(source).exists() or "://" in source
            report.add("launch", node.name, f"source {source!r}: {'found' if ok else 'NOT FOUND'}")
            if not ok:
                report.problems.append(
                    f"{launch}: node {node.name!r}: camera source {source!r} not found "
                    f"(devices here: {', '.join(sorted(glob.glob('/dev/video*'))) or 'none'})"
                )
    return cards, providers


def diagnose(launch: str | None = None, overrides: list[str] | None = None, models_dir: str = "models") -> Report:
    report = Report()
    report.add("system", "python", f"{sys.version.split()[0]} ({sys.executable})")
    report.add("system", "platform", f"{platform.platform()}, {platform.machine()}")
    for dist in PACKAGES:
        v = _version(dist)
        if v is not None:
            report.add("packages", dist, v)
    if _version("onnxruntime") and _version("onnxruntime-gpu"):
        report.problems.append(
            "both onnxruntime and onnxruntime-gpu are installed: they install the same module; "
            "keep one (--extra cpu or --extra gpu)"
        )
    from perception.segmentation.providers import ProviderError, available

    try:
        have = available()
        report.add("onnxruntime", "providers", ", ".join(have))
    except ProviderError as e:
        have = []
        report.problems.append(str(e))
    found = gpus()
    report.add("gpu", "nvidia-smi", "; ".join(found) if found else "no NVIDIA GPU (or no nvidia-smi)")
    cams = sorted(glob.glob("/dev/video*"))
    report.add("cameras", "devices", ", ".join(cams) if cams else "none (/dev/video*)")
    cards, providers = _launch(report, launch, overrides or []) if launch else ([], ())
    if not cards:
        cards = sorted(Path(models_dir).glob("*.toml"))
    if have:
        _cards(report, cards, providers, have)
    for label, path in (("shared memory", "/dev/shm"), ("disk (here)", ".")):
        if Path(path).exists():
            u = shutil.disk_usage(path)
            report.add("storage", label, f"{u.free / 2**30:.1f} GiB free of {u.total / 2**30:.1f} GiB ({path})")
    return report
