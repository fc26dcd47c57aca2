"""Recorded drives: the MCAP file format, the recorder node, recovery of a cut-short file,
the replay node, and import of frame folders.

Layer 4: imports layers 0-3 (never ``segmentation`` or ``tracking``, its peers)."""
