"""Validation of COCO compressed RLE strings before they reach pycocotools.

pycocotools decodes whatever it is given: a malformed ``counts`` string makes it read past
the string or return a mask of uninitialised memory, and a huge ``size`` allocates without
limit. Messages come from other processes, so every :class:`~perception.bus.schema.Rle` is
checked on construction and decode. No library validates this format, hence this module:
it parses the string exactly as pycocotools' ``rleFrString`` does (6-bit groups from
``'0'``, 5 data bits, a continuation bit, sign extension, counts after the second delta
coded against the count two places back), vectorised with NumPy.
"""

from __future__ import annotations

import numpy as np

MAX_MASK_PIXELS = 8192 * 8192


def rle_counts(counts: str, check: bool = True) -> np.ndarray:
    """The run lengths encoded in a compressed ``counts`` string, as int64.

    Raises ValueError when the string is not a complete, well-formed encoding; ``check``
    False skips those checks, for strings pycocotools made in this process.
    """
    raw8 = np.frombuffer(counts.encode("latin-1", errors="replace"), dtype=np.uint8) - np.uint8(48)
    if raw8.size == 0:
        return np.zeros(0, np.int64)
    if check and raw8.max() > 63:  # below '0' wraps round to 208 and up
        raise ValueError("RLE counts hold characters outside '0'..'o'")
    raw = raw8.astype(np.int64)
    last = (raw & 0x20) == 0  # the last 6-bit group of a value
    if check and not last[-1]:
        raise ValueError("RLE counts end in the middle of a value")
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    groups = ends - starts + 1
    if check and groups.max() > 12:
        raise ValueError("RLE counts hold a value longer than 12 groups")
    k = np.arange(raw.size) - np.repeat(starts, groups)
    values = np.add.reduceat((raw & 0x1F) << (5 * k), starts)
    values -= ((raw[ends] & 0x10) != 0).astype(np.int64) << (5 * groups)  # sign extension
    cnts = values.copy()
    # counts from index 3 on are deltas against the count two places back
    if cnts.size > 3:
        cnts[1::2] = np.cumsum(values[1::2])
        cnts[2::2] = np.cumsum(values[2::2])
    return cnts


def validate_rle(size: tuple[int, int], counts: str) -> None:
    """Raise ValueError unless ``counts`` encodes exactly ``size[0] * size[1]`` pixels."""
    h, w = size
    if h < 0 or w < 0 or h * w > MAX_MASK_PIXELS:
        raise ValueError(f"RLE size {h}x{w} is outside 0..{MAX_MASK_PIXELS} pixels")
    cnts = rle_counts(counts)
    if cnts.size and cnts.min() < 0:
        raise ValueError("RLE counts decode to a negative run length")
    if int(cnts.sum()) != h * w:
        raise ValueError(f"RLE runs cover {int(cnts.sum())} pixels, size {h}x{w} needs {h * w}")
