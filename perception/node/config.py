"""Validation of node parameters into frozen config dataclasses.

Each node type has a frozen dataclass of parameters; :func:`build_config` turns a plain
mapping (from a launch file, ``--set`` or JSON) into it, rejecting unknown keys and values
of the wrong type with a message naming where the value came from, the key and what was
expected. Type checking uses msgspec's converter rather than hand-written checks.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration; the message names the file/node and key."""


def build_config(cls: type[T], params: Mapping[str, Any], where: str = "") -> T:
    """Validate ``params`` into ``cls`` (a dataclass).

    Raises :class:`ConfigError` naming ``where`` (for example ``launch/camera.yaml: node
    'camera'``), the key and the expected type.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{prefix}parameters must be a mapping of key: value, got {type(params).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in params:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{prefix}unknown key {key!r}{hint}; known keys: {', '.join(fields)}")
    try:
        cfg = msgspec.convert(dict(params), cls, strict=False)
    except msgspec.ValidationError as e:
        text = str(e)
        path = text.rsplit("$.", 1)[-1].rstrip("`") if "$." in text else "?"
        key = path.split("[")[0].split(".")[0]
        raise ConfigError(f"{prefix}bad value for key {key!r}: {text.split(' - at ')[0]}") from None
    check = getattr(cfg, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ConfigError(f"{prefix}{e}") from None
    return cfg
