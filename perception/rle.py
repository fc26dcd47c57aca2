"""Validation of COCO compressed RLE strings before they reach pycocotools.

pycocotools decodes whatever it is given: a malformed ``counts`` string makes it read past
the string or return a mask of uninitialised memory, and a huge ``size`` allocates without
limit. Messages come from other processes, so every :class:`~perception.schema.Rle` is
checked on construction and decode. No library validates this format, hence this module:
it parses the string exactly as pycocotools' ``rleFrString`` does (6-bit groups from
``'0'``, 5 data bits, a continuation bit, sign extension, counts after the second delta
coded against the count two places back), vectorised with NumPy.
"""

from __future__ import annotations

import numpy as np

MAX_MASK_PIXELS = 8192 * 8192


def rle_counts(counts: str) -> np.ndarray:
    """The run lengths encoded in a compressed ``counts`` string, as int64.

    Raises ValueError when the string is not a complete, well-formed encoding.
    """
    raw = np.frombuffer(counts.encode("latin-1", errors="replace"), dtype=np.uint8).astype(np.int64)
    raw -= 48
    if raw.size == 0:
        return np.zeros(0, np.int64)
    if raw.min() < 0 or raw.max() > 63:
        raise ValueError("RLE counts hold characters outside '0'..'o'")
    more = (raw & 0x20) != 0
    if more[-1]:
        raise ValueError("RLE counts end in the middle of a value")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(raw.size) - starts[group]
    if k.max() > 11:
        raise ValueError("RLE counts hold a value longer than 12 groups")
    values = np.add.reduceat((raw & 0x1F) << (5 * k), starts)
    negative = (raw[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * (k[ends][negative] + 1))
    cnts = values.copy()
    # counts from index 3 on are deltas against the count two places back
    cnts[3::2] = values[1] + np.cumsum(values[3::2]) if values.size > 3 else cnts[3::2]
    cnts[4::2] = values[2] + np.cumsum(values[4::2]) if values.size > 4 else cnts[4::2]
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
