"""The temporal instance tracker: association and life cycle, its Kalman box motion,
RLE mask operations, and the tracker node's logic.

Layer 4: imports layers 0-3 (never ``drives`` or ``segmentation``, its peers)."""
