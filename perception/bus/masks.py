"""Masks as RLE records and back (pycocotools does the run-length coding).

``encode_mask``: ``(H, W)`` bool/uint8 array -> :class:`~perception.bus.schema.Rle`;
``decode_mask``: the reverse, as bool. Subscribers get them from
:mod:`perception.system.client` too."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from perception.bus.schema import Rle


def decode_mask(rle: Rle) -> np.ndarray:
    """A COCO RLE as an ``(H, W)`` bool array."""
    return mask_utils.decode(rle.to_coco()).astype(bool)


def encode_mask(mask: np.ndarray) -> Rle:
    """An ``(H, W)`` bool/uint8 array as a COCO compressed RLE."""
    return Rle.from_coco(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
